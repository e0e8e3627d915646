//! Alerts POSTed as JSON to a webhook (`[output.webhook]`).
//!
//! Each alert at or above `min_severity` is one `POST` with `Content-Type:
//! application/json`: the alert record exactly as written to the JSON lines
//! (`kind: "alert"`, see docs/events.md), plus `text`, one line for a human
//! (`homeserver-sensor [critical] ...`). Matrix hookshot's generic webhooks post `text` into
//! a room as it is, which is how the README forwards alerts into an admin room.
//!
//! Sending happens on a thread of its own, so a slow or dead endpoint never holds up the
//! event loop. Nothing is lost silently: an alert that finds the queue full
//! (`webhook_queue_full`) or that still fails after [`ATTEMPTS`] attempts
//! (`webhook_failed`) is counted in the `sensor` record's drops, the Prometheus drop
//! counters and so in the `sensor_health` rule. The JSON lines keep every alert either way.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc::{Receiver, SyncSender, TrySendError},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::{config, detect::AlertRecord, output::Record};

/// Alerts waiting to be sent at most; more are counted as `webhook_queue_full`.
pub const QUEUE: usize = 256;
/// Attempts per alert, with [`BACKOFF`] doubling between them.
pub const ATTEMPTS: u32 = 3;
const BACKOFF: Duration = Duration::from_millis(500);

/// Alerts sent and lost, shared by every webhook of a run (a reload replaces the webhook,
/// not the totals).
#[derive(Debug, Default)]
pub struct Counters {
    pub sent: AtomicU64,
    pub failed: AtomicU64,
    pub queue_full: AtomicU64,
}

/// A URL the webhook can send to, or why not.
pub fn check_url(url: &str) -> Result<(), String> {
    let uri: ureq::http::Uri = url.parse().map_err(|e| format!("not a URL ({e})"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err("must start with http:// or https://".into()),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    Ok(())
}

/// The URL of `config`: `url`, or the content of `url_file` (a bare name is looked up in
/// systemd's `$CREDENTIALS_DIRECTORY`); checked. The error is a sentence that never
/// contains the URL (it may hold a secret).
pub fn resolve_url(config: &config::Webhook) -> Result<String, String> {
    let file = match (&config.url, &config.url_file) {
        (Some(url), _) => return check_url(url).map(|()| url.clone()),
        (None, Some(file)) => file,
        (None, None) => return Err("output.webhook needs `url` or `url_file`".into()),
    };
    let path = if file.is_absolute() {
        file.clone()
    } else {
        match std::env::var_os("CREDENTIALS_DIRECTORY") {
            Some(dir) => std::path::Path::new(&dir).join(file),
            None => {
                return Err(format!(
                    "output.webhook.url_file = {file:?} is a bare name, which is read from \
                     systemd's credentials ($CREDENTIALS_DIRECTORY), but there are none: add \
                     LoadCredential={}:/etc/homeserver-sensor/{} to the unit, or give an \
                     absolute path",
                    file.display(),
                    file.display()
                ));
            }
        }
    };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "output.webhook.url_file: cannot read {}: {e}",
            path.display()
        )
    })?;
    let url = text.trim().to_owned();
    check_url(&url)
        .map_err(|why| format!("output.webhook.url_file {}: the URL {why}", path.display()))?;
    Ok(url)
}

/// The body POSTed for one alert.
pub fn body(alert: &AlertRecord) -> Vec<u8> {
    let mut value =
        serde_json::to_value(Record::Alert(alert.clone())).expect("an alert record serializes");
    let severity = serde_json::to_value(alert.severity).expect("a severity serializes");
    let text = format!(
        "homeserver-sensor [{}] {}",
        severity.as_str().unwrap_or("?"),
        alert.summary
    );
    if let Some(object) = value.as_object_mut() {
        object.insert("text".into(), text.into());
    }
    serde_json::to_vec(&value).expect("JSON serializes")
}

/// The sender thread of one `[output.webhook]` configuration.
pub struct Webhook {
    config: config::Webhook,
    tx: Option<SyncSender<Vec<u8>>>,
    counters: Arc<Counters>,
    /// Milliseconds since `epoch` after which queued alerts are given up (stop).
    give_up_after: Arc<AtomicU64>,
    epoch: Instant,
    thread: Option<JoinHandle<()>>,
}

impl Webhook {
    /// Starts the sender thread, posting to `url` (see [`resolve_url`]).
    pub fn start(
        config: &config::Webhook,
        url: String,
        counters: Arc<Counters>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let give_up_after = Arc::new(AtomicU64::new(u64::MAX));
        let epoch = Instant::now();
        let sender = Sender {
            url,
            agent: agent(Duration::from_millis(config.timeout_ms)),
            counters: counters.clone(),
            give_up_after: give_up_after.clone(),
            epoch,
        };
        let thread = std::thread::Builder::new()
            .name("webhook".into())
            .spawn(move || sender.run(rx))?;
        Ok(Self {
            config: config.clone(),
            tx: Some(tx),
            counters,
            give_up_after,
            epoch,
            thread: Some(thread),
        })
    }

    /// The configuration it sends with.
    pub fn config(&self) -> &config::Webhook {
        &self.config
    }

    /// Queues `alert` if it is severe enough; never blocks.
    pub fn send(&self, alert: &AlertRecord) {
        if alert.severity < self.config.min_severity {
            return;
        }
        let Some(tx) = &self.tx else { return };
        match tx.try_send(body(alert)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counters.queue_full.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Sends what is queued, giving up (and counting as failed) what is still unsent after
    /// `grace`, then ends the thread.
    pub fn stop(mut self, grace: Duration) {
        self.close(Some(grace));
    }

    fn close(&mut self, grace: Option<Duration>) {
        self.tx = None;
        if let Some(grace) = grace {
            let deadline = self.epoch.elapsed() + grace;
            self.give_up_after
                .store(deadline.as_millis() as u64, Ordering::Relaxed);
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

impl Drop for Webhook {
    /// Replaced (reload): the thread finishes the queue in the background.
    fn drop(&mut self) {
        self.close(None);
    }
}

fn agent(timeout: Duration) -> ureq::Agent {
    let tls = ureq::tls::TlsConfig::builder()
        // The system's trust store (/etc/ssl/certs), so an internal CA works.
        .root_certs(ureq::tls::RootCerts::PlatformVerifier)
        .build();
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(true)
        .max_redirects(0)
        .user_agent(concat!("homeserver-sensor/", env!("CARGO_PKG_VERSION")))
        .tls_config(tls)
        .build()
        .into()
}

struct Sender {
    url: String,
    agent: ureq::Agent,
    counters: Arc<Counters>,
    give_up_after: Arc<AtomicU64>,
    epoch: Instant,
}

impl Sender {
    fn run(self, rx: Receiver<Vec<u8>>) {
        for body in rx {
            if self.send(&body) {
                self.counters.sent.fetch_add(1, Ordering::Relaxed);
            } else {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn giving_up(&self) -> bool {
        self.epoch.elapsed().as_millis() as u64 > self.give_up_after.load(Ordering::Relaxed)
    }

    /// True once the endpoint answered 2xx.
    fn send(&self, body: &[u8]) -> bool {
        let mut backoff = BACKOFF;
        for attempt in 1..=ATTEMPTS {
            if self.giving_up() {
                return false;
            }
            let result = self
                .agent
                .post(&self.url)
                .header("Content-Type", "application/json")
                .send(body);
            match result {
                Ok(_) => return true,
                Err(e) => {
                    tracing::warn!("webhook: attempt {attempt} of {ATTEMPTS} failed: {e}");
                }
            }
            if attempt < ATTEMPTS {
                std::thread::sleep(backoff);
                backoff *= 2;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests;
