//! Appending to the coverage log (one write, then `fdatasync`), and its retention (a
//! rewrite to a temporary file renamed over the log).

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::{Coverage, Event, FILE, Record};
use crate::ledger::segment::{open_for_append, replace_file, sync_dir};

/// Records kept at most: past it, the oldest are dropped at the next prune. A few records
/// per agent start is the usual; this bounds a `why` that keeps changing (about 4 MB at
/// worst, with every `why` at its longest).
pub const MAX_RECORDS: usize = 4_096;

/// Records kept in memory while writes fail. Past it, the oldest but the first are dropped.
const MAX_UNWRITTEN: usize = 64;

/// The temporary file a prune writes (hidden; a leftover is overwritten by the next one).
const TMP: &str = ".coverage.jsonl.tmp";

/// What an append did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Appended {
    /// Records written.
    pub records: usize,
    /// The file ended in a partial line (a crash during a write), which was ended so that
    /// it stays one unreadable line.
    pub torn: bool,
}

/// The agent's side of the log.
pub struct Writer {
    dir: PathBuf,
    /// What this run noted last; `None` before its first note and after its stop.
    last: Option<Coverage>,
    /// The time of this run's latest record: a stop is never before it.
    last_at_ms: u64,
    /// Records not written yet (a write failed): written first, in order, next time.
    unwritten: Vec<Record>,
    /// The times of the records on disk, in file order; read at the first prune.
    on_disk: Option<Vec<u64>>,
}

impl Writer {
    pub fn new(dir: &Path) -> Writer {
        Writer {
            dir: dir.to_owned(),
            last: None,
            last_at_ms: 0,
            unwritten: Vec::new(),
            on_disk: None,
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// Notes what the agent sees at `now_ms`: appends a start record at a run's first note,
    /// a change record when it differs from the last note, nothing otherwise (but records a
    /// failed write left are written).
    pub fn note(&mut self, now_ms: u64, coverage: Coverage) -> io::Result<Appended> {
        let coverage = coverage.bounded();
        let event = match &self.last {
            None => Event::Start(coverage.clone()),
            Some(last) if *last == coverage => return self.write_unwritten(),
            Some(_) => Event::Change(coverage.clone()),
        };
        self.last = Some(coverage);
        self.push(now_ms, event);
        self.write_unwritten()
    }

    /// Notes a stop at `now_ms` (not before this run's last record). Nothing when no run
    /// was noted, or it was stopped already.
    pub fn stop(&mut self, now_ms: u64) -> io::Result<Appended> {
        if self.last.take().is_some() {
            self.push(now_ms, Event::Stop);
        }
        self.write_unwritten()
    }

    /// A run was noted and not stopped.
    pub fn running(&self) -> bool {
        self.last.is_some()
    }

    /// A crash, for tests: nothing more is written for this run.
    #[cfg(test)]
    pub fn crash(&mut self) {
        self.last = None;
        self.unwritten.clear();
    }

    fn push(&mut self, now_ms: u64, event: Event) {
        let at_ms = now_ms.max(self.last_at_ms);
        self.last_at_ms = at_ms;
        if self.unwritten.len() >= MAX_UNWRITTEN {
            // The first is kept: it is often this run's start.
            self.unwritten.remove(1);
        }
        self.unwritten.push(Record { at_ms, event });
    }

    /// Appends the records not written yet in one write, then `fdatasync`s. A failed write
    /// is cut back and its records kept for the next call.
    pub fn write_unwritten(&mut self) -> io::Result<Appended> {
        if self.unwritten.is_empty() {
            return Ok(Appended::default());
        }
        let mut file = open_for_append(&self.path())?;
        let len = file.metadata()?.len();
        let mut done = Appended {
            records: self.unwritten.len(),
            torn: false,
        };
        let mut out = Vec::new();
        if len > 0 {
            let mut last = [0u8; 1];
            file.read_exact_at(&mut last, len - 1)?;
            if last[0] != b'\n' {
                out.push(b'\n');
                done.torn = true;
            }
        }
        for record in &self.unwritten {
            out.extend_from_slice(record.line().as_bytes());
        }
        if let Err(e) = file.write_all(&out).and_then(|()| file.sync_data()) {
            // Cut back; if that fails too, the next append ends the partial line, which
            // readers skip.
            let _ = file.set_len(len).and_then(|()| file.sync_data());
            return Err(e);
        }
        if len == 0
            && let Err(e) = sync_dir(&self.dir)
        {
            tracing::debug!(error = %e, "cannot fsync the ledger directory");
        }
        if let Some(times) = &mut self.on_disk {
            times.extend(self.unwritten.iter().map(|r| r.at_ms));
        }
        self.unwritten.clear();
        Ok(done)
    }

    /// Drops the records whose period ended by `horizon_ms` (the record after them is not
    /// later), and the oldest past [`MAX_RECORDS`], by rewriting the log. Returns how many
    /// were dropped. Cheap when there is nothing to drop (the times are kept in memory).
    pub fn prune(&mut self, horizon_ms: u64) -> io::Result<usize> {
        let times = match &mut self.on_disk {
            Some(times) => times,
            None => {
                // Read once: an error is reported once, and the rewrite reads the file
                // again anyway.
                let times = super::read(&self.dir).map(|log| {
                    log.map(|log| log.records.iter().map(|r| r.at_ms).collect())
                        .unwrap_or_default()
                });
                match times {
                    Ok(times) => self.on_disk.insert(times),
                    Err(e) => {
                        self.on_disk = Some(Vec::new());
                        return Err(e);
                    }
                }
            }
        };
        if cut(times, horizon_ms) == 0 {
            return Ok(0);
        }
        let path = self.path();
        let bytes = fs::read(&path)?;
        let lines: Vec<&[u8]> = bytes
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        let parsed: Vec<Option<Record>> = lines.iter().map(|l| Record::parse(l)).collect();
        let times: Vec<u64> = parsed.iter().flatten().map(|r| r.at_ms).collect();
        let drop = cut(&times, horizon_ms);
        // Keep from the first record kept (and the unreadable lines after it).
        let from = parsed
            .iter()
            .enumerate()
            .filter(|(_, r)| r.is_some())
            .nth(drop)
            .map_or(lines.len(), |(i, _)| i);
        let mut out = Vec::with_capacity(bytes.len());
        for line in &lines[from..] {
            out.extend_from_slice(line);
            out.push(b'\n');
        }
        replace_file(&self.dir, &self.dir.join(TMP), &path, &out)?;
        self.on_disk = Some(parsed[from..].iter().flatten().map(|r| r.at_ms).collect());
        Ok(drop)
    }
}

/// How many records, from the first, a prune drops: those followed by a record at or before
/// `horizon_ms` (their period ended by then; the last one before the horizon stays, since
/// its period runs past it), and enough to keep [`MAX_RECORDS`].
pub(crate) fn cut(times: &[u64], horizon_ms: u64) -> usize {
    let ended = times[1.min(times.len())..]
        .iter()
        .take_while(|&&next| next <= horizon_ms)
        .count();
    ended.max(times.len().saturating_sub(MAX_RECORDS))
}
