//! Reading a configuration text with every error in it, not only the first.
//!
//! serde stops at the first key it cannot take (an unknown key, a value of the wrong type),
//! so the text is read again with that entry blanked out, as many times as it takes: the
//! entry's bytes become spaces, its newlines stay, so the byte offsets and line numbers of
//! everything else are those of the file. A syntax error (not TOML at all) stops there: what
//! follows it cannot be read reliably. Once the text reads, the values are checked
//! ([`Config::problems`]); a check about a key that was blanked is left out (it would only
//! repeat that error).

use std::{ops::Range, path::Path};

use super::{Config, ConfigError};

/// At most this many errors from one file: a file that is not a configuration at all would
/// otherwise give one per line.
const MAX_ERRORS: usize = 20;

/// The configuration, or every error of the text, in the order of the file.
pub(super) fn parse(text: &str, path: &Path) -> Result<Config, Vec<ConfigError>> {
    let mut readable = text.to_owned();
    let mut errors = Vec::new();
    let mut blanked: Vec<String> = Vec::new();
    let config = loop {
        let e = match toml::from_str::<Config>(&readable) {
            Ok(config) => break Some(config),
            Err(e) => e,
        };
        let span = e.span();
        let entry = span.as_ref().and_then(|s| entry_at(&readable, s.start));
        errors.push(ConfigError::Parse {
            path: path.to_owned(),
            line: span.map(|s| line_at(text, s.start)),
            key: entry.as_ref().map(|e| e.key.clone()),
            message: one_line(e.message()),
        });
        match entry {
            Some(entry) if errors.len() < MAX_ERRORS && blank(&mut readable, &entry.regions) => {
                blanked.push(entry.key);
            }
            _ => break None,
        }
    };
    let Some(config) = config else {
        return Err(errors);
    };
    for p in config.problems() {
        // Checks of a blanked key (or of a table holding one) only see its default.
        if blanked
            .iter()
            .any(|b| within(b, &p.key) || within(&p.key, b))
        {
            continue;
        }
        errors.push(ConfigError::Value {
            path: path.to_owned(),
            line: line_of(text, &p.key),
            key: p.key,
            value: p.value,
            why: p.why,
        });
    }
    if errors.is_empty() {
        return Ok(config);
    }
    // In the order of the file; errors without a line last.
    errors.sort_by_key(|e| match e {
        ConfigError::Parse { line, .. } | ConfigError::Value { line, .. } => {
            line.unwrap_or(usize::MAX)
        }
        _ => usize::MAX,
    });
    Err(errors)
}

/// toml's message on one line (a syntax error's says what was expected on a second line).
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The line (from 1) of a byte offset.
fn line_at(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    text.as_bytes()[..offset]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// An entry of the file: its dotted key, and the byte ranges that hold it.
struct Entry {
    key: String,
    regions: Vec<Range<usize>>,
}

/// The entry that holds byte `offset`: a `key = value` line (the whole line, for a value
/// inside an array or an inline table), or a table under its `[header]` (the header, its
/// entries and its subtables).
fn entry_at(text: &str, offset: usize) -> Option<Entry> {
    let doc = toml_edit::ImDocument::parse(text).ok()?;
    find(text, doc.as_table(), "", offset)
}

fn find(text: &str, table: &toml_edit::Table, path: &str, offset: usize) -> Option<Entry> {
    for (name, item) in table.iter() {
        let key = join(path, name);
        match item {
            toml_edit::Item::Value(value) => {
                let Some(region) = key_value_region(text, table, name, value) else {
                    continue;
                };
                if region.contains(&offset) {
                    return Some(Entry {
                        key,
                        regions: vec![region],
                    });
                }
            }
            toml_edit::Item::Table(sub) => {
                if let Some(found) = find_in_table(text, sub, key, offset) {
                    return Some(found);
                }
            }
            toml_edit::Item::ArrayOfTables(array) => {
                for (i, sub) in array.iter().enumerate() {
                    if let Some(found) = find_in_table(text, sub, format!("{key}[{i}]"), offset) {
                        return Some(found);
                    }
                }
            }
            toml_edit::Item::None => {}
        }
    }
    None
}

/// What of a table holds `offset`: one of its entries, else the table itself (its header:
/// an unknown table, or one that misses a key).
fn find_in_table(
    text: &str,
    table: &toml_edit::Table,
    key: String,
    offset: usize,
) -> Option<Entry> {
    if let Some(found) = find(text, table, &key, offset) {
        return Some(found);
    }
    if table.is_dotted() || !table.span().is_some_and(|s| s.contains(&offset)) {
        return None;
    }
    let mut regions = Vec::new();
    table_regions(table, &mut regions);
    Some(Entry { key, regions })
}

/// Every range of a table: its header and body (its span), and its subtables'.
fn table_regions(table: &toml_edit::Table, out: &mut Vec<Range<usize>>) {
    if !table.is_dotted() {
        out.extend(table.span());
    }
    for (_, item) in table.iter() {
        match item {
            toml_edit::Item::Table(sub) => table_regions(sub, out),
            toml_edit::Item::ArrayOfTables(array) => {
                for sub in array.iter() {
                    table_regions(sub, out);
                }
            }
            toml_edit::Item::Value(_) | toml_edit::Item::None => {}
        }
    }
}

/// From the start of the line that holds the key (so that a dotted key's first parts are
/// in) to the end of the value.
fn key_value_region(
    text: &str,
    table: &toml_edit::Table,
    name: &str,
    value: &toml_edit::Value,
) -> Option<Range<usize>> {
    let key_start = table.key(name)?.span()?.start;
    let end = value.span()?.end;
    let line_start = text[..key_start].rfind('\n').map_or(0, |i| i + 1);
    Some(line_start..end)
}

/// Turns every byte of `regions` but newlines into a space; false if nothing changed (the
/// same error would come again).
fn blank(text: &mut String, regions: &[Range<usize>]) -> bool {
    let mut bytes = std::mem::take(text).into_bytes();
    let mut changed = false;
    let len = bytes.len();
    for r in regions {
        let end = r.end.min(len);
        for b in &mut bytes[r.start.min(end)..end] {
            if !matches!(*b, b'\n' | b'\r' | b' ') {
                *b = b' ';
                changed = true;
            }
        }
    }
    // Only whole UTF-8 sequences were replaced (every byte of a region), by ASCII.
    *text = String::from_utf8(bytes).unwrap_or_default();
    changed
}

/// `inner` is `outer` or a key under it (`a.b` is under `a`, `a[0].b` under `a`).
fn within(outer: &str, inner: &str) -> bool {
    inner
        .strip_prefix(outer)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

/// The line (from 1) where `text` sets `key`, a dotted path with `[n]` for array elements
/// (`detect.volume.token[1].bytes`); the nearest enclosing key found when the exact one is
/// not in the file (a default that conflicts with a value that is).
pub(super) fn line_of(text: &str, key: &str) -> Option<usize> {
    let doc = toml_edit::ImDocument::parse(text).ok()?;
    let mut item: &toml_edit::Item = doc.as_item();
    let mut span = None;
    for part in key.split('.') {
        let (name, index) = match part.split_once('[') {
            Some((name, rest)) => (name, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        let Some(next) = item.get(name) else {
            break;
        };
        item = next;
        span = item_span(item).or(span);
        if let Some(i) = index {
            let Some(next) = item.get(i) else {
                break;
            };
            item = next;
            span = item_span(item).or(span);
        }
    }
    Some(line_at(text, span?.start))
}

/// Where an item is written: a value's own span, or a table's header.
fn item_span(item: &toml_edit::Item) -> Option<Range<usize>> {
    match item {
        toml_edit::Item::Value(v) => v.span(),
        toml_edit::Item::Table(t) => t.span(),
        toml_edit::Item::ArrayOfTables(a) => a.span(),
        toml_edit::Item::None => None,
    }
}
