//! The two architectures the VM tests run on, and what differs between them.

use std::time::Duration;

use clap::ValueEnum;

/// A guest architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum)]
pub enum Arch {
    #[value(name = "x86_64", alias = "amd64")]
    X86_64,
    #[value(name = "aarch64", alias = "arm64")]
    Aarch64,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Aarch64];

    /// The name used on the command line and in the results (Rust's).
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// Debian's name of the architecture (package names, `APT::Architecture`).
    pub fn debian(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
        }
    }

    /// The static (musl) Rust target the test binaries are built for.
    pub fn rust_target(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-linux-musl",
            Arch::Aarch64 => "aarch64-unknown-linux-musl",
        }
    }

    /// Linker and C compiler (for crates with C code: ring, through ureq's TLS) to pass to
    /// cargo, as (variable, value) pairs. Debian's glibc toolchains do: the musl targets
    /// bring their own C runtime and libc, and ring's C code needs no libc headers beyond
    /// the compiler's. Without these, cc-rs looks for `<arch>-linux-musl-gcc`.
    pub fn cross_env(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Arch::X86_64 => &[
                ("CC_x86_64_unknown_linux_musl", "gcc"),
                ("AR_x86_64_unknown_linux_musl", "ar"),
            ],
            Arch::Aarch64 => &[
                (
                    "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER",
                    "aarch64-linux-gnu-gcc",
                ),
                ("CC_aarch64_unknown_linux_musl", "aarch64-linux-gnu-gcc"),
                ("AR_aarch64_unknown_linux_musl", "aarch64-linux-gnu-ar"),
            ],
        }
    }

    /// The qemu system emulator.
    pub fn qemu(self) -> &'static str {
        match self {
            Arch::X86_64 => "qemu-system-x86_64",
            Arch::Aarch64 => "qemu-system-aarch64",
        }
    }

    /// Machine and CPU options. TCG (software emulation) always: the host's /dev/kvm is a
    /// nested device on which stock Debian kernels do not boot.
    ///
    /// On aarch64, `pauth-impdef=on` keeps pointer authentication (Debian's kernels sign
    /// their return addresses with it) but with qemu's own hash instead of the architected
    /// QARMA5, which is slow to emulate: boot and tests run about four times faster.
    pub fn qemu_machine(self) -> &'static [&'static str] {
        match self {
            Arch::X86_64 => &["-accel", "tcg", "-cpu", "max"],
            Arch::Aarch64 => &["-M", "virt", "-accel", "tcg", "-cpu", "max,pauth-impdef=on"],
        }
    }

    /// The serial console's device name in the guest.
    pub fn console(self) -> &'static str {
        match self {
            Arch::X86_64 => "ttyS0",
            Arch::Aarch64 => "ttyAMA0",
        }
    }

    /// How long one kernel may take from boot to power-off under TCG on a 2-CPU machine:
    /// about four times what a passing run takes here (docs/vm-test.md).
    pub fn default_timeout(self) -> Duration {
        match self {
            Arch::X86_64 => Duration::from_secs(15 * 60),
            Arch::Aarch64 => Duration::from_secs(20 * 60),
        }
    }
}
