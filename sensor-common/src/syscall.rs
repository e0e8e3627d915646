//! Per-process syscall accounting (the opt-in syscall mechanism).

/// Key of the `SYSCALLS` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SyscallKey {
    pub tgid: u32,
    /// The architecture's syscall number.
    pub nr: u32,
}

/// Value of the `PROC_IO` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcIo {
    /// Bytes returned by read-family syscalls that were not socket receives.
    pub file_read_bytes: u64,
    /// Read-family calls that returned data from something other than a socket.
    pub file_reads: u64,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` data, valid for any bytes.
    unsafe impl aya::Pod for super::SyscallKey {}
    unsafe impl aya::Pod for super::ProcIo {}
}
