//! Finding a request head's end (`\r\n\r\n`) eight bytes at a time, for the kernel's head
//! capture (`sensor-ebpf/src/head.rs`). Plain arithmetic on `u64`s, no loop and no branch
//! per byte: the capture runs for every request packet, and the byte-wise search it
//! replaces was most of its cost. It lives here, not in `sensor-ebpf`, so that it is tested
//! on the host against a plain search (see the tests at the end).
//!
//! Bytes are numbered as a little-endian load lays them out: byte `k` of a word is bits
//! `8k..8k+8`. A byte's "mark" is its top bit, `8k + 7`.

const ONES7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
const CR8: u64 = 0x0d0d_0d0d_0d0d_0d0d;
const LF8: u64 = 0x0a0a_0a0a_0a0a_0a0a;

/// The mark of every zero byte of `x`, exactly (no false positive above a zero byte, unlike
/// the shorter `(x - 0x01..) & !x & 0x80..`): `(b & 0x7f) + 0x7f` sets the top bit of each
/// byte whose low seven bits are not all zero, without a carry into the next byte.
#[inline(always)]
pub const fn zero_bytes(x: u64) -> u64 {
    !(((x & ONES7).wrapping_add(ONES7)) | x | ONES7)
}

/// The scan's memory of the bytes before the current word: the marks of its `\r` and `\n`
/// bytes (only the top three bytes matter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadEndScan {
    cr: u64,
    lf: u64,
}

impl HeadEndScan {
    /// A scan that continues a head whose last four bytes so far are `window`, big-endian
    /// (its last byte in the low bits; 0 at the start of a head, which holds neither `\r`
    /// nor `\n`).
    #[inline(always)]
    pub const fn after(window: u32) -> Self {
        // The window's bytes as the top four bytes of a word, its last byte at byte 7.
        let before = (window.swap_bytes() as u64) << 32;
        HeadEndScan {
            cr: zero_bytes(before ^ CR8) & !0xffff_ffff,
            lf: zero_bytes(before ^ LF8) & !0xffff_ffff,
        }
    }

    /// Takes the next eight bytes (`word`, a little-endian load) and returns the marks of
    /// the bytes that end a `\r\n\r\n`, 0 when none does. Its lowest mark is the first end.
    #[inline(always)]
    pub fn step(&mut self, word: u64) -> u64 {
        let cr = zero_bytes(word ^ CR8);
        let lf = zero_bytes(word ^ LF8);
        // Byte k ends `\r\n\r\n` when k is `\n`, k-1 `\r`, k-2 `\n` and k-3 `\r`; the
        // shifts bring the marks of bytes k-1, k-2, k-3 (this word's or the previous one's)
        // to byte k.
        let cr1 = (cr << 8) | (self.cr >> 56);
        let lf2 = (lf << 16) | (self.lf >> 48);
        let cr3 = (cr << 24) | (self.cr >> 40);
        self.cr = cr;
        self.lf = lf;
        lf & cr1 & lf2 & cr3
    }
}

/// The index (0..8) of the byte of the lowest mark in `marks`, which must not be 0.
///
/// Without a branch (BPF has no count-trailing-zeros, and a loop over the bytes gave the
/// kernel's verifier a path per byte to walk): the lowest mark alone, shifted down to bit
/// `8k`, is `256^k`; multiplying by `0x0001020304050607` moves that constant's byte `7 - k`,
/// which holds `k`, to the top byte.
#[inline(always)]
pub const fn first_marked(marks: u64) -> usize {
    let low = marks & marks.wrapping_neg();
    ((low >> 7).wrapping_mul(0x0001_0203_0405_0607) >> 56) as usize
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    /// The first end found by the plain search over the whole head: the position just
    /// after the first `\r\n\r\n`.
    fn plain(head: &[u8]) -> Option<usize> {
        head.windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|p| p + 4)
    }

    /// The same with the scan, fed chunk by chunk as the capture does: each chunk scanned
    /// in words (its last word padded with `pad`, which must not matter), the window
    /// carried between chunks.
    fn scanned(head: &[u8], chunks: &[usize], pad: u8) -> Option<usize> {
        let mut at = 0usize;
        let mut window = 0u32;
        for &len in chunks.iter().chain(core::iter::once(&usize::MAX)) {
            let chunk = &head[at..head.len().min(at.saturating_add(len))];
            if chunk.is_empty() {
                break;
            }
            let mut scan = HeadEndScan::after(window);
            for (w, word) in chunk.chunks(8).enumerate() {
                let mut bytes = [pad; 8];
                bytes[..word.len()].copy_from_slice(word);
                let marks = scan.step(u64::from_le_bytes(bytes));
                if marks != 0 {
                    let end = 8 * w + first_marked(marks) + 1;
                    if end <= chunk.len() {
                        return Some(at + end);
                    }
                    break;
                }
            }
            for &b in chunk {
                window = (window << 8) | u32::from(b);
            }
            at += chunk.len();
        }
        None
    }

    /// A small deterministic generator (xorshift), so failures reproduce.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn zero_bytes_marks_exactly_the_zero_bytes() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            // Bytes drawn mostly from {0, 1, 0x80, 0xff} to hit the borrow cases.
            let bytes: [u8; 8] = core::array::from_fn(|_| [0, 1, 0x80, 0xff, 0x7f][rng.below(5)]);
            let x = u64::from_le_bytes(bytes);
            let want = (0..8)
                .filter(|&k| bytes[k] == 0)
                .fold(0u64, |m, k| m | 1 << (8 * k + 7));
            assert_eq!(zero_bytes(x), want, "{bytes:?}");
        }
    }

    #[test]
    fn first_marked_is_the_lowest_byte() {
        // Every non-empty set of marks.
        for set in 1u32..256 {
            let marks = (0..8)
                .filter(|k| set >> k & 1 == 1)
                .fold(0u64, |m, k| m | 1 << (8 * k + 7));
            assert_eq!(
                first_marked(marks),
                set.trailing_zeros() as usize,
                "{marks:#x}"
            );
        }
    }

    #[test]
    fn real_heads_end_where_the_plain_search_says() {
        let get = b"GET /_matrix/client/v3/sync HTTP/1.1\r\nHost: x\r\n\r\n".as_slice();
        let post = b"POST /upload HTTP/1.1\r\nContent-Length: 8\r\n\r\nbody\r\n\r\n".as_slice();
        for head in [get, post] {
            let want = plain(head);
            assert!(want.is_some());
            assert_eq!(scanned(head, &[], 0), want);
            // Split at every place, including inside the end.
            for cut in 1..head.len() {
                assert_eq!(scanned(head, &[cut], 0), want, "cut at {cut}");
            }
        }
        // No end yet: none found, whatever the padding of the last word.
        let partial = b"GET / HTTP/1.1\r\nHost: x\r\n\r";
        for pad in [0, b'\r', b'\n'] {
            assert_eq!(scanned(partial, &[], pad), None);
            assert_eq!(scanned(b"\n\r\n", &[1], pad), None);
        }
    }

    #[test]
    fn random_heads_and_chunks_agree_with_the_plain_search() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for _ in 0..50_000 {
            let len = rng.below(40);
            // Mostly CR and LF, so ends, near-ends and split ends are common.
            let head: Vec<u8> = (0..len)
                .map(|_| [b'\r', b'\n', b'\r', b'\n', b'a', 0][rng.below(6)])
                .collect();
            let chunks: Vec<usize> = (0..rng.below(4)).map(|_| 1 + rng.below(12)).collect();
            let pad = [0, b'\r', b'\n'][rng.below(3)];
            assert_eq!(
                scanned(&head, &chunks, pad),
                plain(&head),
                "{head:?} in chunks {chunks:?}, padding {pad}"
            );
        }
    }
}
