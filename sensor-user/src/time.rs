//! Clocks: kernel timestamps are CLOCK_MONOTONIC nanoseconds (`bpf_ktime_get_ns`); records
//! carry RFC 3339 UTC wall-clock times with milliseconds.

use ::time::{OffsetDateTime, format_description::FormatItem, macros::format_description};

const RFC3339_MS: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// Formats a wall-clock time as `2026-11-22T06:03:41.123Z`.
pub fn rfc3339_ms(t: OffsetDateTime) -> String {
    t.to_offset(::time::UtcOffset::UTC)
        .format(RFC3339_MS)
        .unwrap_or_else(|_| String::from("1970-01-01T00:00:00.000Z"))
}

/// The current time as `rfc3339_ms`.
pub fn now_rfc3339() -> String {
    rfc3339_ms(OffsetDateTime::now_utc())
}

/// Nanoseconds of CLOCK_MONOTONIC, the clock of `bpf_ktime_get_ns()`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Converts kernel monotonic timestamps to wall-clock times, with the offset between the
/// two clocks taken once at start (so records of one run are mutually consistent).
#[derive(Clone, Copy, Debug)]
pub struct KernelClock {
    /// Wall-clock nanoseconds since the epoch minus monotonic nanoseconds.
    offset_ns: i128,
}

impl KernelClock {
    pub fn new() -> Self {
        let wall = OffsetDateTime::now_utc().unix_timestamp_nanos();
        Self {
            offset_ns: wall - i128::from(monotonic_ns()),
        }
    }

    /// The wall-clock time of a kernel timestamp.
    pub fn wall(&self, ktime_ns: u64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(self.offset_ns + i128::from(ktime_ns))
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    pub fn rfc3339(&self, ktime_ns: u64) -> String {
        rfc3339_ms(self.wall(ktime_ns))
    }
}

impl Default for KernelClock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_with_milliseconds() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_795_000_000_123_456_789).unwrap();
        assert_eq!(rfc3339_ms(t), "2026-11-18T11:06:40.123Z");
    }

    #[test]
    fn kernel_clock_maps_now_to_now() {
        let clock = KernelClock::new();
        let wall = clock.wall(monotonic_ns());
        let diff = (OffsetDateTime::now_utc() - wall)
            .whole_milliseconds()
            .abs();
        assert!(diff < 1000, "kernel clock off by {diff} ms");
    }
}
