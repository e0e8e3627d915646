//! The text report: a header with the totals, then one table per section, biggest first.

use std::io::{self, Write};

use super::coverage::Gap;
use super::query::{Entry, Report};
use crate::ledger::coverage::{End, Heads};

/// Writes `report` as text, listing at most `top` entries per section (0: all).
pub fn text(report: &Report, top: usize, out: &mut dyn Write) -> io::Result<()> {
    let who = match report.subject.kind.as_str() {
        "user" => "user",
        "token" => "token",
        _ => "client address",
    };
    let range = match (&report.since, &report.until) {
        (None, None) => "the whole ledger".to_owned(),
        (Some(s), None) => format!("from {s}"),
        (None, Some(u)) => format!("until {u}"),
        (Some(s), Some(u)) => format!("from {s} until {u}"),
    };
    writeln!(out, "Ledger report for {who} {}", report.subject.id)?;
    writeln!(out, "Range:     {range}")?;
    if !report.found {
        let segments = report.segments_read;
        let coverage = &report.coverage;
        if coverage.blind_throughout {
            writeln!(
                out,
                "No requests of this {who} in the ledger for that range, but the sensor ran \
                 without request heads for all of it: it saw no requests at all, so the ledger \
                 cannot say whether this {who} made any ({segments} hour segments read)."
            )?;
        } else if !coverage.gaps.is_empty() {
            writeln!(
                out,
                "No requests of this {who} in the ledger for that range, but the sensor could \
                 not see every request for some of that time (below): requests of those \
                 periods are not in the ledger ({segments} hour segments read)."
            )?;
        } else {
            writeln!(
                out,
                "No requests of this {who} in the ledger for that range ({segments} hour \
                 segments read)."
            )?;
        }
        gaps(report, out)?;
        return notes(report, out);
    }
    if let (Some(first), Some(last)) = (&report.first_seen, &report.last_seen) {
        writeln!(out, "Seen:      {first} to {last}")?;
    }
    writeln!(
        out,
        "Totals:    {} requests, {} bytes in, {} bytes out ({})",
        thousands(report.requests),
        thousands(report.bytes_in),
        thousands(report.bytes_out),
        human_bytes(report.bytes_out)
    )?;
    gaps(report, out)?;
    let sections: [(&str, &[Entry]); 10] = [
        ("Users", &report.users),
        ("Tokens", &report.tokens),
        ("Client addresses", &report.addresses),
        ("Endpoints", &report.endpoints),
        ("Rooms read (history, members, state)", &report.rooms_read),
        ("Rooms joined", &report.rooms_joined),
        ("Other room requests", &report.rooms_other),
        ("Media requested", &report.media),
        ("Other media requests", &report.media_other),
        ("Users looked up", &report.users_looked_up),
    ];
    for (title, entries) in sections {
        section(title, entries, top, out)?;
    }
    let nl = &report.not_listed;
    if nl.items > 0 {
        writeln!(
            out,
            "\n{} more items not listed (the ledger lists {} per subject and hour): {} \
             requests, {} bytes out.",
            thousands(nl.items),
            thousands(crate::ledger::ITEM_CAP as u64),
            thousands(nl.requests),
            thousands(nl.bytes_out)
        )?;
    }
    if nl.peer_requests + nl.user_requests > 0 {
        writeln!(
            out,
            "{} requests came from tokens or addresses not listed, {} from users not listed \
             (the ledger lists {} per subject and hour).",
            thousands(nl.peer_requests),
            thousands(nl.user_requests),
            crate::ledger::PEER_CAP
        )?;
    }
    notes(report, out)
}

/// One sentence per period of the range when the sensor did not see every request.
fn gaps(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    let gaps = &report.coverage.gaps;
    if gaps.is_empty() {
        return Ok(());
    }
    writeln!(out)?;
    for gap in gaps {
        writeln!(out, "{}", gap_sentence(gap))?;
    }
    Ok(())
}

/// "The sensor ran without request heads from T1 to T2 (why): requests of that time are
/// not in the ledger."
pub(super) fn gap_sentence(gap: &Gap) -> String {
    let (without, whose) = match gap.heads {
        Heads::Partial => (
            "without request heads for some watched processes",
            "their requests",
        ),
        Heads::Blind | Heads::Full => ("without request heads", "requests"),
    };
    let (to, after) = match (&gap.until, gap.ended) {
        (Some(until), End::Restart) => (
            format!("to {until}"),
            format!(
                " {until} is the agent's next start: it stopped before, without recording when \
                 (killed or crashed)."
            ),
        ),
        (Some(until), _) => (format!("to {until}"), String::new()),
        (None, _) => (
            "on".to_owned(),
            " That is the last record: the agent still runs so, or stopped without recording \
             it."
            .to_owned(),
        ),
    };
    let why = if gap.why.is_empty() {
        String::new()
    } else {
        format!(" ({})", gap.why)
    };
    format!(
        "The sensor ran {without} from {} {to}{why}: {whose} of that time are not in the \
         ledger.{after}",
        gap.since
    )
}

fn notes(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    if report.straddling > 0 {
        writeln!(
            out,
            "\nNote: {} entries have requests on both sides of an edge of the range within \
             one hour and are counted whole (the ledger counts by the hour; a range on whole \
             hours is exact).",
            thousands(report.straddling)
        )?;
    }
    if report.skipped_lines > 0 {
        writeln!(
            out,
            "\nNote: {} ledger lines could not be read (damaged, or being written) and were \
             skipped.",
            thousands(report.skipped_lines)
        )?;
    }
    if report.coverage.skipped_lines > 0 {
        writeln!(
            out,
            "\nNote: {} lines of the ledger's coverage log could not be read (damaged, or \
             being written) and were skipped.",
            thousands(report.coverage.skipped_lines)
        )?;
    }
    Ok(())
}

fn section(title: &str, entries: &[Entry], top: usize, out: &mut dyn Write) -> io::Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let shown = if top == 0 {
        entries.len()
    } else {
        top.min(entries.len())
    };
    let label = |e: &Entry| e.id.clone().unwrap_or_else(|| "(none)".to_owned());
    let width = entries[..shown]
        .iter()
        .map(|e| label(e).chars().count())
        .max()
        .unwrap_or(0)
        .clamp(10, 72);
    writeln!(out, "\n{title} ({})", thousands(entries.len() as u64))?;
    writeln!(
        out,
        "  {:<width$}  {:>10}  {:>14}  {:>16}  first and last request",
        "", "requests", "bytes in", "bytes out"
    )?;
    for e in &entries[..shown] {
        writeln!(
            out,
            "  {:<width$}  {:>10}  {:>14}  {:>16}  {} to {}",
            label(e),
            thousands(e.requests),
            thousands(e.bytes_in),
            thousands(e.bytes_out),
            e.first_seen,
            e.last_seen
        )?;
    }
    if shown < entries.len() {
        writeln!(
            out,
            "  ... and {} more (--top 0 or --json lists them all)",
            thousands((entries.len() - shown) as u64)
        )?;
    }
    Ok(())
}

/// `1234567` as `1,234,567`.
pub(super) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes in binary units, one decimal: `12.6 GiB`.
pub(super) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
