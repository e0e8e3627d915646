//! The guest's whole filesystem: a gzip'd cpio archive in the kernel's `newc` format
//! (Documentation/driver-api/early-userspace/buffer-format.rst), loaded as the initramfs.
//!
//! Written here rather than with cpio(1): no host package is needed, the device node
//! `/dev/console` goes in without root, and the archive's owners, times and inode numbers
//! are fixed, so the same inputs give the same image.

use std::{
    fs::{self, File},
    io::{self, BufWriter, Write},
    path::Path,
};

use anyhow::{Context, Result};
use flate2::{Compression, write::GzEncoder};

use super::{binaries::Binaries, selection::Selection};

/// The guest's `/init` (a busybox shell script).
const INIT: &str = include_str!("../../vm/init");

/// What `/init` reads from `/t` besides the executables.
pub struct Settings<'a> {
    pub selection: &'a Selection,
    /// Seconds one test may take before `/init` kills it.
    pub test_timeout: u64,
}

/// Writes the initramfs for one architecture to `path`; returns its size in bytes.
pub fn write(path: &Path, busybox: &Path, bins: &Binaries, settings: &Settings) -> Result<u64> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut cpio = Cpio::new(GzEncoder::new(BufWriter::new(file), Compression::fast()));
    for dir in [
        "bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "run", "root", "etc",
        "var", "t",
    ] {
        cpio.dir(dir, 0o755)?;
    }
    cpio.dir("tmp", 0o1777)?;
    // The kernel opens it for init's stdin, stdout and stderr before /dev is mounted.
    cpio.char_device("dev/console", 0o600, 5, 1)?;
    cpio.file("init", 0o755, INIT.as_bytes())?;
    cpio.copy("bin/busybox", 0o755, busybox)?;
    let mut tests = String::new();
    for (name, exe) in &bins.tests {
        cpio.copy(&format!("t/{name}"), 0o755, exe)?;
        tests.push_str(name);
        tests.push('\n');
    }
    for (name, exe) in &bins.siblings {
        cpio.copy(&format!("t/{name}"), 0o755, exe)?;
    }
    cpio.file("t/tests", 0o644, tests.as_bytes())?;
    cpio.file(
        "t/exclude",
        0o644,
        settings.selection.exclude_file().as_bytes(),
    )?;
    cpio.file(
        "t/only",
        0o644,
        settings.selection.only.as_deref().unwrap_or("").as_bytes(),
    )?;
    cpio.file(
        "t/settings",
        0o644,
        format!("test_timeout={}\n", settings.test_timeout).as_bytes(),
    )?;
    let gz = cpio.finish()?;
    gz.finish()?.flush()?;
    Ok(fs::metadata(path)?.len())
}

/// A writer of `newc` cpio archives.
pub struct Cpio<W: Write> {
    out: W,
    next_ino: u32,
    /// Bytes written so far, for the 4-byte alignment of names and data.
    offset: u64,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFCHR: u32 = 0o020000;

impl<W: Write> Cpio<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
            next_ino: 1,
            offset: 0,
        }
    }

    pub fn dir(&mut self, path: &str, perm: u32) -> io::Result<()> {
        self.header(path, S_IFDIR | perm, 2, 0, (0, 0))?;
        Ok(())
    }

    pub fn char_device(&mut self, path: &str, perm: u32, major: u32, minor: u32) -> io::Result<()> {
        self.header(path, S_IFCHR | perm, 1, 0, (major, minor))
    }

    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        self.header(path, S_IFREG | perm, 1, data.len() as u64, (0, 0))?;
        self.write(data)?;
        self.pad()
    }

    /// A regular file with the content of `src` on the host.
    pub fn copy(&mut self, path: &str, perm: u32, src: &Path) -> Result<()> {
        let mut file = File::open(src).with_context(|| format!("cannot open {}", src.display()))?;
        let len = file.metadata()?.len();
        self.header(path, S_IFREG | perm, 1, len, (0, 0))?;
        let copied = io::copy(&mut file, &mut self.out)?;
        anyhow::ensure!(
            copied == len,
            "{} changed while being packed",
            src.display()
        );
        self.offset += copied;
        self.pad()?;
        Ok(())
    }

    /// Writes the trailer and returns the underlying writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.next_ino = 0;
        self.header("TRAILER!!!", 0, 1, 0, (0, 0))?;
        Ok(self.out)
    }

    /// One `newc` header: magic `070701`, thirteen 8-digit hex fields, the NUL-terminated
    /// name, padding to 4 bytes. Owner root, time 0.
    fn header(
        &mut self,
        name: &str,
        mode: u32,
        nlink: u32,
        size: u64,
        rdev: (u32, u32),
    ) -> io::Result<()> {
        let size = u32::try_from(size)
            .map_err(|_| io::Error::other(format!("{name} is larger than cpio allows")))?;
        let ino = self.next_ino;
        self.next_ino += 1;
        let name_size = name.len() as u32 + 1;
        let fields = [
            ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev.0, rdev.1, name_size, 0,
        ];
        let mut header = String::from("070701");
        for field in fields {
            header.push_str(&format!("{field:08X}"));
        }
        self.write(header.as_bytes())?;
        self.write(name.as_bytes())?;
        self.write(&[0])?;
        self.pad()
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let pad = (4 - self.offset % 4) % 4;
        self.write(&[0u8; 3][..pad as usize])
    }
}

#[cfg(test)]
mod tests {
    use super::Cpio;

    #[test]
    fn newc_layout() {
        let mut cpio = Cpio::new(Vec::new());
        cpio.dir("t", 0o755).unwrap();
        cpio.file("t/a", 0o644, b"hello").unwrap();
        let out = cpio.finish().unwrap();
        // Header (110 bytes) + "t\0" = 112: aligned.
        assert_eq!(&out[..6], b"070701");
        assert_eq!(&out[6..14], b"00000001"); // inode
        assert_eq!(&out[14..22], b"000041ED"); // directory, 0755
        assert_eq!(&out[110..112], b"t\0");
        // Second header at 112; name "t/a\0" ends at 226, padded to 228; data 5 bytes,
        // padded to 236; then the trailer.
        assert_eq!(&out[112..118], b"070701");
        assert_eq!(&out[112 + 54..112 + 62], b"00000005"); // file size
        assert_eq!(&out[222..226], b"t/a\0");
        assert_eq!(&out[228..233], b"hello");
        assert_eq!(&out[233..236], b"\0\0\0");
        assert_eq!(&out[236..242], b"070701");
        assert_eq!(&out[236 + 110..236 + 121], b"TRAILER!!!\0");
        assert_eq!(out.len() % 4, 0);
    }
}
