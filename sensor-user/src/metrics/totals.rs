//! Counters whose totals are kept elsewhere (kernel maps, the kernel's program statistics,
//! the request stage) and read periodically. They are exported as real counters
//! (`ConstCounter` in a custom collector, built at each scrape from the latest totals), not
//! as gauges, and not by adding differences to a `Counter`, which would double count when a
//! source is read twice or restarts.

use std::{
    collections::BTreeMap,
    fmt,
    sync::{Mutex, PoisonError},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter},
    registry::Unit,
};

use super::MAX_SERIES_PER_FAMILY;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct ProgramTotals {
    run_ns: u64,
    runs: u64,
}

/// The latest totals, by label value.
#[derive(Debug, Default)]
pub(super) struct Totals {
    drops: Mutex<BTreeMap<String, u64>>,
    head_outcomes: Mutex<BTreeMap<String, u64>>,
    owner_scans: Mutex<BTreeMap<String, u64>>,
    programs: Mutex<BTreeMap<String, ProgramTotals>>,
}

/// Stores `value` under `key`, unless the map is full and does not have the key (the same
/// guard as the other families: see `MAX_SERIES_PER_FAMILY`).
fn store<V>(map: &mut BTreeMap<String, V>, key: &str, value: V) {
    if let Some(slot) = map.get_mut(key) {
        *slot = value;
    } else if map.len() < MAX_SERIES_PER_FAMILY {
        map.insert(key.to_owned(), value);
    } else {
        tracing::debug!(key, "metric label set full; total not exported");
    }
}

/// Stores each total under its label value.
fn store_all(map: &Mutex<BTreeMap<String, u64>>, totals: &[(String, u64)]) {
    let mut map = map.lock().unwrap_or_else(PoisonError::into_inner);
    for (key, total) in totals {
        store(&mut map, key, *total);
    }
}

impl Totals {
    pub(super) fn set_drops(&self, totals: &[(String, u64)]) {
        store_all(&self.drops, totals);
    }

    pub(super) fn set_head_outcomes(&self, totals: &[(String, u64)]) {
        store_all(&self.head_outcomes, totals);
    }

    pub(super) fn set_owner_scans(&self, totals: &[(String, u64)]) {
        store_all(&self.owner_scans, totals);
    }

    pub(super) fn set_program_stats(&self, stats: &[(String, u64, u64)]) {
        let mut map = self.programs.lock().unwrap_or_else(PoisonError::into_inner);
        for (program, run_ns, runs) in stats {
            let totals = ProgramTotals {
                run_ns: *run_ns,
                runs: *runs,
            };
            store(&mut map, program, totals);
        }
    }
}

/// Writes one counter family with one label, one sample per entry of `values`; nothing when
/// `values` is empty (as the registry does for a family without label sets).
fn encode_counters<N>(
    encoder: &mut DescriptorEncoder,
    name: &'static str,
    help: &str,
    unit: Option<&'static Unit>,
    label: &'static str,
    values: impl ExactSizeIterator<Item = (String, N)>,
) -> fmt::Result
where
    N: prometheus_client::encoding::EncodeCounterValue,
{
    if values.len() == 0 {
        return Ok(());
    }
    let mut family = encoder.encode_descriptor(name, help, unit, MetricType::Counter)?;
    for (value, total) in values {
        let labels = [(label, value.as_str())];
        ConstCounter::new(total).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

const SECONDS: Unit = Unit::Seconds;

impl Collector for Totals {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        // Copy out, so that no lock is held while writing.
        let drops = self
            .drops
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let heads = self
            .head_outcomes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let scans = self
            .owner_scans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let programs = self
            .programs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();

        encode_counters(
            &mut encoder,
            "events_dropped",
            "Events lost before they were recorded, by cause (ring buffer full, map full, \
             agent queue full, ...).",
            None,
            "cause",
            drops.into_iter(),
        )?;
        encode_counters(
            &mut encoder,
            "request_heads",
            "Request heads captured in the kernel, by parse outcome.",
            None,
            "outcome",
            heads.into_iter(),
        )?;
        encode_counters(
            &mut encoder,
            "owner_scans",
            "Scans of /proc for the process owning a connection, by where they ran \
             (event_loop: while scans are cheap; own_thread: once one took 20 ms or more).",
            None,
            "thread",
            scans.into_iter(),
        )?;
        encode_counters(
            &mut encoder,
            "bpf_program_run",
            "Time the kernel spent running each of the sensor's BPF programs (counted only \
             while kernel.bpf_stats_enabled is 1).",
            Some(&SECONDS),
            "program",
            programs
                .iter()
                .map(|(program, t)| (program.clone(), t.run_ns as f64 / 1e9)),
        )?;
        encode_counters(
            &mut encoder,
            "bpf_program_runs",
            "Runs of each of the sensor's BPF programs (counted only while \
             kernel.bpf_stats_enabled is 1).",
            None,
            "program",
            programs.into_iter().map(|(program, t)| (program, t.runs)),
        )?;
        Ok(())
    }
}
