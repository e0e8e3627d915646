//! When the sensor could not see requests, over a report's range: read from the ledger's
//! coverage log (its format and what a crash does to it are in the `ledger` module's
//! documentation), so that an empty or thin report on such a period says the sensor was
//! blind rather than that the subject was idle.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{ReportError, rfc3339};
use crate::ledger::coverage::{self, Coverage, End, Heads, Period};

/// What the report knows of the sensor's sight over its range (`coverage` in `--json`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SensorCoverage {
    /// The ledger has a coverage log. `false` for a ledger written by an agent older than
    /// the log: nothing is known then of when the sensor was blind.
    pub known: bool,
    /// The periods overlapping the range when the sensor did not see every request, in
    /// order, each whole (not cut to the range).
    pub gaps: Vec<Gap>,
    /// The sensor had no request heads at all for the whole range (a range with a start):
    /// the ledger cannot hold any request of it, whoever made them.
    pub blind_throughout: bool,
    /// Lines of the coverage log that could not be read (a crash during a write), skipped.
    pub skipped_lines: u64,
}

/// A period when the sensor did not see every request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    /// `blind`: no request heads at all, no request in the ledger; `partial`: some watched
    /// processes without them, their requests not in the ledger.
    pub heads: Heads,
    pub since: String,
    /// Null: open (see `ended`).
    pub until: Option<String>,
    /// `change` (the sensor's sight changed), `stop` (the agent stopped), `restart` (the
    /// agent stopped without recording it, killed or crashed: `until` is its next start),
    /// `open` (no later record: the agent still runs so, or stopped without recording it).
    pub ended: End,
    pub why: String,
}

/// The coverage of `[since, until)` (either end open) from the log in `dir`.
pub fn read(
    dir: &Path,
    since: Option<u64>,
    until: Option<u64>,
) -> Result<SensorCoverage, ReportError> {
    let log = coverage::read(dir).map_err(|source| ReportError::ReadCoverage {
        path: dir.join(coverage::FILE),
        source,
    })?;
    let Some(log) = log else {
        return Ok(SensorCoverage::default());
    };
    let periods = coverage::periods(&log.records);
    Ok(SensorCoverage {
        known: true,
        gaps: periods
            .iter()
            .filter(|p| p.coverage != Coverage::Full && p.overlaps(since, until))
            .map(gap)
            .collect(),
        blind_throughout: blind_throughout(&periods, since, until),
        skipped_lines: log.skipped,
    })
}

fn gap(p: &Period) -> Gap {
    Gap {
        heads: p.coverage.heads(),
        since: rfc3339(p.since_ms),
        until: p.until_ms.map(rfc3339),
        ended: p.ended,
        why: p.coverage.why().to_owned(),
    }
}

/// Blind periods cover all of `[since, until)`; never for a range with no start (it
/// begins with the ledger, maybe before the log).
fn blind_throughout(periods: &[Period], since: Option<u64>, until: Option<u64>) -> bool {
    let Some(since) = since else {
        return false;
    };
    let mut blind: Vec<&Period> = periods
        .iter()
        .filter(|p| matches!(p.coverage, Coverage::Blind { .. }))
        .collect();
    blind.sort_by_key(|p| p.since_ms);
    // Covered up to here (`None`: for ever).
    let mut covered = Some(since);
    for p in blind {
        let Some(upto) = covered else {
            break;
        };
        if p.since_ms > upto {
            break;
        }
        covered = p.until_ms.map(|end| end.max(upto));
    }
    match (covered, until) {
        (None, _) => true,
        (Some(upto), Some(until)) => upto >= until,
        (Some(_), None) => false,
    }
}
