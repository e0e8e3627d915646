//! Segment files: one per UTC hour of request time, named `YYYY-MM-DDTHH.jsonl`, a header
//! line then data lines (see `line.rs`). Appends go through [`append`]; [`compact`]
//! rewrites a closed hour with one line per subject.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ::time::{Date, Month, OffsetDateTime};
use serde::Deserialize;

use super::line::Line;
use crate::identity::Fingerprint;

pub const HOUR_MS: u64 = 3_600_000;
const SUFFIX: &str = ".jsonl";
/// Format version, in every header.
pub const VERSION: u32 = 1;

/// The file name of an hour (hours since the epoch).
pub fn name(hour: u64) -> String {
    let t = OffsetDateTime::from_unix_timestamp((hour * 3600) as i64)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}{SUFFIX}",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour()
    )
}

/// The hour a segment file name stands for; `None` for any other name.
pub fn parse_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(SUFFIX)?.as_bytes();
    if stem.len() != 13 || stem[4] != b'-' || stem[7] != b'-' || stem[10] != b'T' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<u32> {
        let digits = &stem[range];
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()
    };
    let month = Month::try_from(u8::try_from(num(5..7)?).ok()?).ok()?;
    let date = Date::from_calendar_date(num(0..4)? as i32, month, num(8..10)? as u8).ok()?;
    let secs = date
        .with_hms(num(11..13)? as u8, 0, 0)
        .ok()?
        .assume_utc()
        .unix_timestamp();
    u64::try_from(secs).ok().map(|s| s / 3600)
}

/// The header line. `compacted` is padded so that the flag can be rewritten in place.
pub fn header(hour: u64, compacted: bool) -> String {
    let start = crate::time::rfc3339_ms(
        OffsetDateTime::from_unix_timestamp((hour * 3600) as i64)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH),
    );
    let flag = if compacted { "true " } else { "false" };
    format!("{{\"ledger\":{VERSION},\"hour\":\"{start}\",\"compacted\":{flag}}}\n")
}

/// Where the flag starts, from the end of the header line (`false}\n`).
const FLAG_FROM_END: u64 = 7;

#[derive(Deserialize)]
struct Header {
    #[allow(dead_code)]
    ledger: u32,
    compacted: bool,
}

fn is_header(line: &[u8]) -> bool {
    line.starts_with(b"{\"ledger\":")
}

/// The header of an open file: its length and whether it says "compacted"; `None` when
/// the file does not start with one.
fn read_header(file: &File) -> io::Result<Option<(u64, bool)>> {
    let mut buf = [0u8; 256];
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], n as u64)? {
            0 => break,
            got => n += got,
        }
    }
    let Some(end) = buf[..n].iter().position(|&b| b == b'\n') else {
        return Ok(None);
    };
    let line = &buf[..end];
    if !is_header(line) {
        return Ok(None);
    }
    Ok(serde_json::from_slice::<Header>(line)
        .ok()
        .map(|h| (end as u64 + 1, h.compacted)))
}

/// Whether the segment at `path` is compacted (has a header saying so).
pub fn is_compacted(path: &Path) -> io::Result<bool> {
    let file = open_read(path)?;
    Ok(read_header(&file)?.is_some_and(|(_, c)| c))
}

fn open_read(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
}

/// Opens a ledger file to append to, creating it (mode 0600); never through a symlink.
pub fn open_for_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
}

/// Makes a directory entry durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces `path` with `bytes` so that a crash leaves the old file or the new one: written
/// to `tmp` (mode 0600), `fsync`ed, renamed over `path`, then the directory `fsync`ed (a
/// failure of that last step is only logged: the data is already safe in the file).
pub fn replace_file(dir: &Path, tmp: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(tmp, path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(tmp);
        return Err(e);
    }
    if let Err(e) = sync_dir(dir) {
        tracing::debug!(error = %e, "cannot fsync the ledger directory");
    }
    Ok(())
}

/// What an append did.
#[derive(Debug, Default)]
pub struct Appended {
    /// Bytes added to the file.
    pub bytes: u64,
    /// The file's length afterwards.
    pub len: u64,
    /// The file was new.
    pub created: bool,
    /// The file ended in a partial line (a crash in the middle of a write), which was
    /// ended so that it stays one unreadable line instead of spoiling the next.
    pub torn: bool,
}

/// An append failed. `rolled_back`: the file was cut back to its length before the append,
/// so writing the same lines again later counts nothing twice.
#[derive(Debug)]
pub struct AppendError {
    pub source: io::Error,
    pub rolled_back: bool,
}

/// Appends `body` (whole lines) to the segment of `hour` and `fsync`s it. A new file gets
/// a header first. `check`: look at the file's end for a partial line and at its header
/// for the compacted flag (the first append to a file by this process); `compacted`: the
/// header is known to say so. A compacted file's flag is turned to `false` (in place)
/// before anything is added, so that it is compacted again.
pub fn append(
    dir: &Path,
    hour: u64,
    body: &[u8],
    check: bool,
    compacted: bool,
) -> Result<Appended, AppendError> {
    let path = dir.join(name(hour));
    let fail = |source| AppendError {
        source,
        rolled_back: true,
    };
    let mut file = open_for_append(&path).map_err(fail)?;
    let len = file.metadata().map_err(fail)?.len();
    let mut out = Vec::with_capacity(body.len() + 128);
    let mut done = Appended::default();
    if len == 0 {
        out.extend_from_slice(header(hour, false).as_bytes());
        done.created = true;
    } else {
        let mut flip = compacted;
        if check {
            let mut last = [0u8; 1];
            file.read_exact_at(&mut last, len - 1).map_err(fail)?;
            if last[0] != b'\n' {
                out.push(b'\n');
                done.torn = true;
            }
            flip |= read_header(&file).map_err(fail)?.is_some_and(|(_, c)| c);
        }
        if flip && let Some((header_len, true)) = read_header(&file).map_err(fail)? {
            // pwrite on an O_APPEND descriptor appends on Linux: use another one.
            let writer = OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
                .open(&path)
                .map_err(fail)?;
            writer
                .write_all_at(b"false", header_len - FLAG_FROM_END)
                .and_then(|()| writer.sync_data())
                .map_err(fail)?;
        }
    }
    out.extend_from_slice(body);
    if let Err(source) = file.write_all(&out).and_then(|()| file.sync_data()) {
        let rolled_back = file.set_len(len).and_then(|()| file.sync_data()).is_ok();
        return Err(AppendError {
            source,
            rolled_back,
        });
    }
    if done.created
        && let Err(e) = sync_dir(dir)
    {
        tracing::debug!(error = %e, "cannot fsync the ledger directory");
    }
    done.bytes = out.len() as u64;
    done.len = len + done.bytes;
    Ok(done)
}

/// The data lines of a segment's bytes (the header and empty lines left out).
pub fn data_lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty() && !is_header(l))
}

/// Parses a data line; `None` when it is not a valid line.
pub fn parse_line(line: &[u8]) -> Option<Line> {
    serde_json::from_slice::<Line>(line)
        .ok()
        .filter(Line::is_valid)
}

/// Reads a whole segment.
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    let mut file = open_read(path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The segments in `dir`, by hour, with their sizes.
pub fn list(dir: &Path) -> io::Result<BTreeMap<u64, (PathBuf, u64)>> {
    let mut found = BTreeMap::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let Some(hour) = entry.file_name().to_str().and_then(parse_name) else {
            continue;
        };
        let meta = entry.metadata()?;
        if meta.is_file() {
            found.insert(hour, (entry.path(), meta.len()));
        }
    }
    Ok(found)
}

/// The name of the temporary file a compaction writes (hidden, ignored by readers, removed
/// at open if a crash left it).
pub fn tmp_name(hour: u64) -> String {
    format!(".{}.tmp", name(hour))
}

/// What a compaction did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Compacted {
    pub hour: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub lines_before: u64,
    pub lines_after: u64,
    /// Unreadable lines, kept as they were (readers skip and count them).
    pub unreadable: u64,
    /// Item entries folded into `over` by the item cap.
    pub folded: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Subject {
    Token(Fingerprint),
    Address(String),
}

impl Subject {
    fn of(line: &Line) -> Option<Subject> {
        match (&line.token, &line.address) {
            (Some(t), None) => Some(Subject::Token(*t)),
            (None, Some(a)) => Some(Subject::Address(a.clone())),
            _ => None,
        }
    }
}

/// Rewrites the segment of `hour` with one line per subject (caps applied), written to a
/// temporary file, `fsync`ed and renamed over the segment: a crash leaves either the old
/// file or the new one, never a mix. Unreadable lines are kept as they are.
pub fn compact(dir: &Path, hour: u64) -> io::Result<Compacted> {
    let path = dir.join(name(hour));
    let bytes = read(&path)?;
    let mut subjects: BTreeMap<Subject, Line> = BTreeMap::new();
    let mut unreadable: Vec<&[u8]> = Vec::new();
    let mut done = Compacted {
        hour,
        bytes_before: bytes.len() as u64,
        ..Compacted::default()
    };
    for raw in data_lines(&bytes) {
        done.lines_before += 1;
        let parsed = parse_line(raw).and_then(|line| Some((Subject::of(&line)?, line)));
        let Some((key, line)) = parsed else {
            unreadable.push(raw);
            continue;
        };
        match subjects.get_mut(&key) {
            Some(into) => into.merge(line),
            None => {
                subjects.insert(key, line);
            }
        }
    }
    let mut out = header(hour, true).into_bytes();
    for (_, mut line) in subjects {
        done.folded += line.apply_caps();
        serde_json::to_writer(&mut out, &line)?;
        out.push(b'\n');
        done.lines_after += 1;
    }
    for raw in &unreadable {
        out.extend_from_slice(raw);
        out.push(b'\n');
    }
    done.unreadable = unreadable.len() as u64;
    done.lines_after += done.unreadable;
    replace_file(dir, &dir.join(tmp_name(hour)), &path, &out)?;
    done.bytes_after = out.len() as u64;
    Ok(done)
}
