//! Syscall numbers of the architecture the agent was built for. The kernel object is the
//! same on every architecture, so the agent tells it which numbers are reads and names
//! the numbers it counts (the `syscalls` crate's tables).

use syscalls::Sysno;

/// The read-family syscalls whose bytes count as "read from files" when no socket receive
/// happened inside the call.
pub fn read_family() -> Vec<u32> {
    [
        Sysno::read,
        Sysno::pread64,
        Sysno::readv,
        Sysno::preadv,
        Sysno::preadv2,
    ]
    .iter()
    .map(|s| s.id() as u32)
    .collect()
}

/// The syscall's name, or `syscall_<nr>` when this architecture has none by that number.
pub fn name(nr: u32) -> String {
    Sysno::new(nr as usize)
        .map(|s| s.name().to_string())
        .unwrap_or_else(|| format!("syscall_{nr}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_known_numbers() {
        assert_eq!(name(Sysno::sendto.id() as u32), "sendto");
        assert_eq!(name(Sysno::openat.id() as u32), "openat");
        assert_eq!(name(100_000), "syscall_100000");
    }

    #[test]
    fn read_family_matches_the_architecture() {
        let nrs = read_family();
        #[cfg(target_arch = "x86_64")]
        assert_eq!(nrs, vec![0, 17, 19, 295, 327]);
        #[cfg(target_arch = "aarch64")]
        assert_eq!(nrs, vec![63, 67, 65, 69, 286]);
        assert_eq!(nrs.len(), 5);
    }
}
