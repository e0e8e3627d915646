//! Kernel programs of homeserver-sensor. Each hook family has its own file; this file only
//! declares them. Build with `cargo xtask build-ebpf`.
#![no_std]
#![no_main]

mod conn;
mod head;
mod maps;
mod skb;
mod sock;
mod sockops;
mod syscalls;
mod transfer;

/// The verifier rejects any program that could reach a panic, so this is never called.
#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
