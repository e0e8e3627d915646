#!/bin/sh
# Checks deploy/homeserver-sensor.service offline, as root or not, installing nothing:
#   1. `systemd-analyze verify`: syntax, every key and value known to this systemd, the
#      ExecStart binary executable, dependencies resolvable. Fails on a non-zero status or
#      on any line of output about the unit (systemd-analyze reports unknown keys and
#      unparsable values as warnings and still exits 0).
#   2. `systemd-analyze security --offline`: fails if the unit's exposure rises above
#      MAX_EXPOSURE (2.5 on systemd's 0-10 scale; the unit scores 2.1 with systemd 252).
# Both run against a temporary root holding the unit, a stand-in for the binary and a copy
# of this host's system units (verify resolves sysinit.target, network.target, ...), so
# nothing needs to be installed at /usr/local/bin. Needs systemd-analyze (Debian: the
# `systemd` package), version 250 or later for the security check.
#
# Usage: deploy/verify-unit.sh [UNIT-FILE]
set -eu

here=$(cd "$(dirname "$0")" && pwd)
unit_file=${1:-$here/homeserver-sensor.service}
unit=$(basename "$unit_file")
max_exposure=25 # tenths: 2.5

if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "verify-unit: systemd-analyze not found; install it (Debian: apt-get install systemd)" >&2
    exit 1
fi
system_units=
for dir in /usr/lib/systemd/system /lib/systemd/system; do
    if [ -e "$dir/sysinit.target" ]; then
        system_units=$dir
        break
    fi
done
if [ -z "$system_units" ]; then
    echo "verify-unit: no system units (sysinit.target) under /usr/lib/systemd/system" >&2
    exit 1
fi

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT INT TERM
mkdir -p "$root/usr/local/bin" "$root/usr/bin" "$root/usr/lib/systemd" "$root/etc/systemd/system"
cp -R "$system_units" "$root/usr/lib/systemd/system"
# A stand-in for the agent: verify checks that ExecStart names an executable file.
printf '#!/bin/sh\nexit 0\n' >"$root/usr/local/bin/homeserver-sensor"
chmod 0755 "$root/usr/local/bin/homeserver-sensor"
# ExecReload= runs `kill`, found in systemd's search path: a stand-in for it too.
cp "$root/usr/local/bin/homeserver-sensor" "$root/usr/bin/kill"
cp "$unit_file" "$root/etc/systemd/system/$unit"

failed=0

echo "verify-unit: systemd-analyze verify $unit ($(systemd-analyze --version | head -n 1))"
status=0
output=$(systemd-analyze verify --root="$root" --man=no --recursive-errors=no "$unit" 2>&1) ||
    status=$?
if [ -n "$output" ]; then
    printf '%s\n' "$output"
fi
if [ "$status" -ne 0 ]; then
    echo "verify-unit: FAIL: systemd-analyze verify exited with status $status" >&2
    failed=1
fi
if printf '%s\n' "$output" | grep -F -q "$unit"; then
    echo "verify-unit: FAIL: systemd-analyze verify has warnings about $unit" >&2
    failed=1
fi

if systemd-analyze --help 2>/dev/null | grep -q -- '--offline'; then
    echo "verify-unit: systemd-analyze security --offline $unit (at most $max_exposure/100)"
    status=0
    report=$(systemd-analyze security --offline=yes --root="$root" --threshold="$max_exposure" \
        "$unit" 2>&1) || status=$?
    printf '%s\n' "$report" | tail -n 1
    if [ "$status" -ne 0 ]; then
        printf '%s\n' "$report" | grep -v '^✓' >&2 || true
        echo "verify-unit: FAIL: exposure above $max_exposure/100 (or the check failed: status $status)" >&2
        failed=1
    fi
else
    echo "verify-unit: this systemd-analyze has no --offline: security check skipped"
fi

if [ "$failed" -ne 0 ]; then
    exit 1
fi
echo "verify-unit: $unit OK"
