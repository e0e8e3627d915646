//! A real homeserver: the seeded Synapse of the end-to-end tests behind nginx (Synapse's
//! documented proxy configuration: every request reaches Synapse on a new connection),
//! serving a 64 KiB media file and a room's `/messages`, requests per second under `wrk`
//! with no sensor and with the sensor's defaults, interleaved.

use std::collections::BTreeMap;

use homeserver_sensor_tests::{Cgroup, Homeserver, HomeserverOptions};
use serde_json::{Value, json};

use crate::{Opts, modes::Mode, stats::Spread, tools};

const MODES: [Mode; 2] = [Mode::NoSensor, Mode::Default];

pub struct Endpoint {
    pub name: String,
    path: String,
    pub samples: BTreeMap<Mode, Vec<f64>>,
}

pub struct Synapse {
    pub endpoints: Vec<Endpoint>,
}

impl Endpoint {
    /// Requests per second with the sensor, relative to without, in percent.
    pub fn speed(&self) -> f64 {
        Spread::of(&self.samples[&Mode::Default]).median
            / Spread::of(&self.samples[&Mode::NoSensor]).median
            * 100.0
    }
}

pub fn run(opts: &Opts) -> Option<Synapse> {
    if !opts.selects("synapse", "Synapse behind nginx") {
        return None;
    }
    tools::ensure_installed("wrk", "wrk");
    eprintln!("bench: Synapse behind nginx (starting the seeded homeserver)...");
    let cgroup = Cgroup::new("bench-synapse");
    let hs = Homeserver::start(HomeserverOptions {
        cgroup: Some(&cgroup),
    });
    let alice = hs.seed.user("alice");
    let media = hs.seed.media("notes.bin");
    let room = hs.seed.room("offtopic");
    let room_id = room.room_id.replace('!', "%21").replace(':', "%3A");
    let mut endpoints = vec![
        Endpoint {
            name: format!(
                "Synapse media download, {} KiB (authenticated)",
                media.size / 1024
            ),
            path: media.download_path(),
            samples: BTreeMap::new(),
        },
        Endpoint {
            name: "Synapse /messages, 20 events".to_string(),
            path: format!("/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=20"),
            samples: BTreeMap::new(),
        },
    ];
    let auth = format!("Authorization: Bearer {}", alice.access_token);
    let secs = if opts.quick { 1 } else { 5 };
    let wrk = |path: &str, secs| {
        let url = format!("http://{}{path}", hs.nginx_addr);
        tools::wrk(&url, 4, secs, &[&auth]).requests_per_s
    };
    // Synapse's caches warm up on the first requests.
    for e in &endpoints {
        wrk(&e.path, if opts.quick { 1 } else { 3 });
    }
    for round in 0..opts.rounds {
        eprintln!("bench: Synapse, round {}/{}", round + 1, opts.rounds);
        let mut order = MODES;
        order.rotate_left(round % MODES.len());
        for mode in order {
            let _running = mode.start(&cgroup);
            for e in endpoints.iter_mut() {
                let rate = wrk(&e.path, secs);
                e.samples.entry(mode).or_default().push(rate);
            }
        }
    }
    Some(Synapse { endpoints })
}

impl Synapse {
    pub fn print(&self) {
        println!(
            "A real homeserver: Synapse behind nginx, wrk (1 thread, 4 connections), requests/s:"
        );
        for e in &self.endpoints {
            let none = Spread::of(&e.samples[&Mode::NoSensor]);
            let with = Spread::of(&e.samples[&Mode::Default]);
            println!(
                "  {:<48} no sensor {:>24}   sensor {:>24}   {:.1}%",
                e.name,
                none.show(1),
                with.show(1),
                e.speed()
            );
        }
    }

    pub fn json(&self) -> Value {
        let v: Vec<Value> = self
            .endpoints
            .iter()
            .map(|e| {
                json!({
                    "workload": e.name, "unit": "requests/s", "path": e.path,
                    "baseline": Spread::of(&e.samples[&Mode::NoSensor]).json(),
                    "sensor": Spread::of(&e.samples[&Mode::Default]).json(),
                    "speed_vs_no_sensor_percent": e.speed(),
                })
            })
            .collect();
        json!(v)
    }
}
