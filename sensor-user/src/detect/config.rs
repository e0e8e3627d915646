//! The `[detect]` table: every key optional, unknown keys rejected, `validate` says which
//! key is wrong and why. Windows are in seconds, sizes in bytes (an integer, or a string
//! such as `"512MiB"`, `"2 GiB"`, `"500MB"`). Each default is explained where it is
//! defined, against two yardsticks: the heaviest plausible human on a Matrix homeserver,
//! and the Tchap scrape of 2026 (one account: 643,459 messages from 876 rooms, 73,467
//! profiles, 59,386 media files, 13.5 GB).

use std::marker::PhantomData;

use serde::Deserialize;

use crate::identity::Fingerprint;

mod validate;

#[cfg(test)]
pub(super) use validate::parse_size;
pub(crate) use validate::size;

pub(super) const KIB: u64 = 1024;
pub(super) const MIB: u64 = 1024 * KIB;
pub(super) const GIB: u64 = 1024 * MIB;

/// Longest window accepted: windows are kept in memory, and a day is the longest pattern
/// worth holding per subject.
pub const MAX_WINDOW_S: u64 = 86_400;

/// Most limits (windows) per rule: each costs memory per subject and work per request.
pub const MAX_LIMITS: usize = 4;

/// A value of the `[detect]` table is wrong.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DetectConfigError {
    /// `key` is the full path under `[detect]`, e.g. `breadth.media.limits[1].window_s`.
    #[error("invalid configuration: detect.{key} = {value}: {why}")]
    Value {
        key: String,
        value: String,
        why: String,
    },
}

/// `[detect]`: the rules that turn requests into alerts.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct DetectConfig {
    /// Run the detection rules at all.
    pub enabled: bool,
    /// Seconds before a rule fires again for the same subject and window, unless the value
    /// has doubled since the last alert. See [`DetectConfig::REALERT_S`].
    pub realert_s: u64,
    /// Tokens and client addresses tracked at once. See [`DetectConfig::MAX_SUBJECTS`].
    pub max_subjects: usize,
    /// Distinct items (rooms, media, users) kept per subject and window. See
    /// [`DetectConfig::MAX_ITEMS`].
    pub max_items: usize,
    /// Users (`@bot:example.org`) whose requests count toward no volume or breadth rule:
    /// bridges, bots, backup and moderation tools. Admin and single-transfer rules still
    /// apply to them.
    pub exempt_users: Vec<String>,
    pub single_transfer: SingleTransfer,
    pub volume: Volume,
    pub breadth: Breadth,
    pub tokenless_media: Windowed<TokenlessMedia>,
    pub admin_api: AdminApi,
    pub sensor_health: SensorHealth,
}

impl DetectConfig {
    /// Ten minutes: an operator acts on an alert within minutes, and one reminder per ten
    /// minutes of an ongoing scrape keeps the alert stream readable; a scrape that speeds
    /// up still re-alerts at once, because a doubled value always fires.
    pub const REALERT_S: u64 = 600;
    /// 50,000 subjects: one per token and one per client address active within the longest
    /// window. A syncing client costs about 2 KiB (its volume slots), so this bounds the
    /// common case near 100 MiB; at the cap the least recently active sixteenth is
    /// forgotten, so an active scraper is never the one dropped.
    pub const MAX_SUBJECTS: usize = 50_000;
    /// 4,096 items per window (about 40 bytes each): far above every default distinct
    /// threshold, so a subject saturates only well past the point of alerting.
    pub const MAX_ITEMS: usize = 4_096;
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            enabled: true,
            realert_s: Self::REALERT_S,
            max_subjects: Self::MAX_SUBJECTS,
            max_items: Self::MAX_ITEMS,
            exempt_users: Vec::new(),
            single_transfer: SingleTransfer::default(),
            volume: Volume::default(),
            breadth: Breadth::default(),
            tokenless_media: Windowed::default(),
            admin_api: AdminApi::default(),
            sensor_health: SensorHealth::default(),
        }
    }
}

/// One window of a counting rule: the rule fires when `threshold` is reached within
/// `window_s` seconds.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    pub window_s: u64,
    pub threshold: u64,
}

/// One window of the volume rule: fires when `threshold_bytes` are sent within `window_s`
/// seconds.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ByteLimit {
    pub window_s: u64,
    #[serde(deserialize_with = "size")]
    pub threshold_bytes: u64,
}

/// The defaults of one windowed rule (a marker type per rule, below).
pub trait RuleDefaults {
    /// The rule's key under `[detect]`, for error messages.
    const KEY: &'static str;
    const LIMITS: &'static [Limit];
    /// Whether the rule counts distinct items (its thresholds must fit in `max_items`).
    const DISTINCT: bool;
}

/// A windowed rule: on or off, and its windows. `D` only carries the defaults.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields, bound = "")]
pub struct Windowed<D: RuleDefaults> {
    pub enabled: bool,
    pub limits: Vec<Limit>,
    #[serde(skip)]
    defaults: PhantomData<fn() -> D>,
}

impl<D: RuleDefaults> Default for Windowed<D> {
    fn default() -> Self {
        Windowed {
            enabled: true,
            limits: D::LIMITS.to_vec(),
            defaults: PhantomData,
        }
    }
}

impl<D: RuleDefaults> Windowed<D> {
    /// The rule with these limits (tests, programmatic configuration).
    pub fn with_limits(limits: &[Limit]) -> Self {
        Windowed {
            enabled: true,
            limits: limits.to_vec(),
            defaults: PhantomData,
        }
    }
}

const fn limit(window_s: u64, threshold: u64) -> Limit {
    Limit {
        window_s,
        threshold,
    }
}

/// `breadth.rooms_read`: distinct rooms whose history, members or state a token read.
/// 100 in 10 min: a heavy user opens a few dozen rooms in a session (Element reads a room's
/// history and members when it is opened); 400 in 24 h: even a moderator in hundreds of
/// rooms does not open 400 in a day, while it is under half of the Tchap scrape's 876.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoomsRead {}
impl RuleDefaults for RoomsRead {
    const DISTINCT: bool = true;
    const KEY: &'static str = "breadth.rooms_read";
    const LIMITS: &'static [Limit] = &[limit(600, 100), limit(86_400, 400)];
}

/// `breadth.rooms_joined`: distinct rooms joined. 30 in 10 min: a newcomer joining a
/// curated list of public rooms joins a dozen or two; 100 in 24 h: nobody joins a hundred
/// rooms a day by hand, while a scraper joins hundreds within minutes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoomsJoined {}
impl RuleDefaults for RoomsJoined {
    const DISTINCT: bool = true;
    const KEY: &'static str = "breadth.rooms_joined";
    const LIMITS: &'static [Limit] = &[limit(600, 30), limit(86_400, 100)];
}

/// `breadth.media`: distinct media (server, id) downloaded or thumbnailed. 1,000 in 10 min:
/// Element thumbnails every visible avatar and image, so scrolling fast through busy rooms
/// on an empty cache costs a few hundred; 3,000 in 1 h: beyond any session, and 5 % of the
/// Tchap scrape's 59,386 files. (No 24 h default: an active user's media of a whole day is
/// the costliest state to keep.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Media {}
impl RuleDefaults for Media {
    const DISTINCT: bool = true;
    const KEY: &'static str = "breadth.media";
    const LIMITS: &'static [Limit] = &[limit(600, 1_000), limit(3_600, 3_000)];
}

/// `breadth.directory`: user-directory searches (each counts) plus profile lookups
/// (distinct users). 300 in 10 min: the invite dialog searches on each keystroke, a few
/// dozen per invitation; 2,000 in 24 h: the Tchap scrape collected 73,467 profiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Directory {}
impl RuleDefaults for Directory {
    const DISTINCT: bool = true;
    const KEY: &'static str = "breadth.directory";
    const LIMITS: &'static [Limit] = &[limit(600, 300), limit(86_400, 2_000)];
}

/// `breadth.room_directory`: room-directory requests (publicRooms pages, alias lookups,
/// space hierarchy, room summaries). 100 in 10 min: browsing and searching "Explore rooms"
/// by hand is a few dozen pages; 500 in 24 h: a walk of every page of a large directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoomDirectory {}
impl RuleDefaults for RoomDirectory {
    const DISTINCT: bool = false;
    const KEY: &'static str = "breadth.room_directory";
    const LIMITS: &'static [Limit] = &[limit(600, 100), limit(86_400, 500)];
}

/// `breadth.full_syncs`: syncs with `full_state=true` or without `since` (initial syncs,
/// full snapshots). 30 in 1 h: Element does one initial sync per session; mobile clients
/// restarting their sync on each return to the foreground stay well below; a scraper
/// dumping state repeatedly does them back to back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FullSyncs {}
impl RuleDefaults for FullSyncs {
    const DISTINCT: bool = false;
    const KEY: &'static str = "breadth.full_syncs";
    const LIMITS: &'static [Limit] = &[limit(3_600, 30)];
}

/// `tokenless_media`: distinct media downloaded without a token, per client address.
/// 500 in 10 min, 2,000 in 1 h: only legacy clients, e-mail image proxies and old links
/// fetch media without a token, and an office NAT can gather many of them; a harvester
/// enumerating "every file ever shared" passes this in minutes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenlessMedia {}
impl RuleDefaults for TokenlessMedia {
    const DISTINCT: bool = true;
    const KEY: &'static str = "tokenless_media";
    const LIMITS: &'static [Limit] = &[limit(600, 500), limit(3_600, 2_000)];
}

/// `[detect.breadth]`: how widely one token reaches, per kind of data.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Breadth {
    pub rooms_read: Windowed<RoomsRead>,
    pub rooms_joined: Windowed<RoomsJoined>,
    pub media: Windowed<Media>,
    pub directory: Windowed<Directory>,
    pub room_directory: Windowed<RoomDirectory>,
    pub full_syncs: Windowed<FullSyncs>,
}

/// `[detect.single_transfer]`: one response (or, before any request head, one connection)
/// sending `threshold_bytes` or more. The kernel reports the crossing while the transfer
/// runs; the finished request is checked too.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct SingleTransfer {
    pub enabled: bool,
    #[serde(deserialize_with = "size")]
    pub threshold_bytes: u64,
}

impl SingleTransfer {
    /// 512 MiB: ten times Synapse's default `max_upload_size` (50M), so bigger than any
    /// media file a stock homeserver stores, and far above the largest /sync (an initial
    /// sync of an account in thousands of rooms is tens of MiB). Raise it with
    /// `max_upload_size`.
    pub const THRESHOLD_BYTES: u64 = 512 * MIB;
}

impl Default for SingleTransfer {
    fn default() -> Self {
        SingleTransfer {
            enabled: true,
            threshold_bytes: Self::THRESHOLD_BYTES,
        }
    }
}

/// `[detect.volume]`: bytes sent to one token and to one client address.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Volume {
    pub enabled: bool,
    pub token: Vec<ByteLimit>,
    pub address: Vec<ByteLimit>,
}

const fn bytes(window_s: u64, threshold_bytes: u64) -> ByteLimit {
    ByteLimit {
        window_s,
        threshold_bytes,
    }
}

impl Volume {
    /// Per token: 512 MiB in 1 min is ten max-size (50M) files a minute, more than anyone
    /// opens; 2 GiB in 10 min is forty, sustained; 5 GiB in 1 h means the Tchap haul
    /// (13.5 GB) would have to be spread over nearly three hours to pass unseen here (and
    /// its 59,386 files would still trip `breadth.media`).
    pub const TOKEN: [ByteLimit; 3] = [
        bytes(60, 512 * MIB),
        bytes(600, 2 * GIB),
        bytes(3_600, 5 * GIB),
    ];
    /// Per client address: twice the token limits, because an office or ministry NAT puts
    /// hundreds of users behind one address; a single scraper still trips the token rule.
    pub const ADDRESS: [ByteLimit; 3] =
        [bytes(60, GIB), bytes(600, 4 * GIB), bytes(3_600, 10 * GIB)];
}

impl Default for Volume {
    fn default() -> Self {
        Volume {
            enabled: true,
            token: Self::TOKEN.to_vec(),
            address: Self::ADDRESS.to_vec(),
        }
    }
}

/// `[detect.admin_api]`: Synapse admin API calls from an unexpected address or token.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct AdminApi {
    pub enabled: bool,
    /// Addresses and CIDR networks the admin API is expected from; any other (or an
    /// unknown one) raises `admin_api.address`. Default: loopback, where operators run
    /// their admin tools behind the proxy.
    pub allow: Vec<String>,
    /// The window over which admin calls from one address are counted (the alert reports
    /// the count; threshold 1).
    pub window_s: u64,
    /// Raise `admin_api.new_token` the first time a token calls the admin API.
    pub new_token: bool,
    /// Fingerprints (`tfp_…`) already known as admin tokens: no `new_token` alert for them,
    /// also after a restart (the first-seen set lives in memory).
    pub known_tokens: Vec<Fingerprint>,
    /// Size of the first-seen set; the oldest entries are forgotten first.
    pub max_known_tokens: usize,
}

impl AdminApi {
    pub const WINDOW_S: u64 = 600;
    /// A homeserver has a handful of admins, each with a few sessions.
    pub const MAX_KNOWN_TOKENS: usize = 1_024;
}

impl Default for AdminApi {
    fn default() -> Self {
        AdminApi {
            enabled: true,
            allow: vec!["127.0.0.0/8".into(), "::1/128".into()],
            window_s: Self::WINDOW_S,
            new_token: true,
            known_tokens: Vec::new(),
            max_known_tokens: Self::MAX_KNOWN_TOKENS,
        }
    }
}

/// `[detect.sensor_health]`: lost events, detached programs, watched processes gone.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct SensorHealth {
    pub enabled: bool,
}

impl Default for SensorHealth {
    fn default() -> Self {
        SensorHealth { enabled: true }
    }
}
