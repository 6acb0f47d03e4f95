//! The typed configuration produced by [`parse`](crate::parse) and
//! [`load`](crate::load).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A whole, validated bridge configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    /// The `[bridge]` section: process-wide settings.
    pub bridge: BridgeSection,
    /// The `[delivery]` section: retries, queues and degradation defaults.
    pub delivery: Delivery,
    /// The `[[adapter]]` sections, in file order.
    pub adapters: Vec<AdapterSection>,
    /// The `[[room]]` sections, in file order.
    pub rooms: Vec<RoomSection>,
}

impl Config {
    /// The adapter section with this id.
    pub fn adapter(&self, id: &str) -> Option<&AdapterSection> {
        self.adapters.iter().find(|adapter| adapter.id == id)
    }

    /// The room section with this id.
    pub fn room(&self, id: &str) -> Option<&RoomSection> {
        self.rooms.iter().find(|room| room.id == id)
    }

    /// The degradation policy in force for a room: its own
    /// `[room.degrade]` if it has one, else `[delivery.degrade]`.
    pub fn degrade_for<'a>(&'a self, room: &'a RoomSection) -> &'a Degrade {
        room.degrade.as_ref().unwrap_or(&self.delivery.degrade)
    }

    /// What crosses in a room at all: its own `[room.carry]` if it has one,
    /// else `[delivery.carry]`.
    pub fn carry_for<'a>(&'a self, room: &'a RoomSection) -> &'a Carry {
        room.carry.as_ref().unwrap_or(&self.delivery.carry)
    }

    /// Makes a relative `bridge.data_dir` relative to `base` (the directory
    /// of the configuration file); [`load`](crate::load) does this.
    pub fn resolve_relative_to(&mut self, base: &Path) {
        if self.bridge.data_dir.is_relative() && !base.as_os_str().is_empty() {
            self.bridge.data_dir = base.join(&self.bridge.data_dir);
        }
        if let Some(token) = &mut self.bridge.provisioning_token {
            token.resolve_relative_to(base);
        }
    }
}

/// The `[bridge]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BridgeSection {
    /// Directory of the durable store (required). When read with
    /// [`load`](crate::load), a relative path has already been resolved
    /// against the configuration file's directory.
    pub data_dir: PathBuf,
    /// Format of log lines; `human` by default.
    pub log_format: LogFormat,
    /// A `tracing` `EnvFilter` directive string; `info` by default.
    pub log_level: String,
    /// Where to serve HTTP, if anywhere: `/metrics` (Prometheus), `/health/live`,
    /// `/health/ready` and, with a [`provisioning_token`](Self::provisioning_token), the
    /// provisioning API under `/api/v1`. Set by `http_addr`, or by its former name
    /// `metrics_addr`.
    pub http_addr: Option<SocketAddr>,
    /// The deprecated `metrics_addr` key as written (the former name of `http_addr`, which then
    /// holds the same address); kept so that the binary can warn about it.
    pub metrics_addr: Option<SocketAddr>,
    /// The bearer token of the provisioning API; the API is off without one.
    pub provisioning_token: Option<crate::SecretRef>,
    /// Who may run admin commands (`bridge.admins`): native users, each on one adapter.
    pub admins: Vec<AdminSection>,
    /// The management rooms (`[[bridge.management]]`): native rooms where every message is an
    /// admin command to the bridge, never bridged.
    pub management: Vec<ManagementSection>,
    /// Threads running the bridge's tasks (`bridge.worker_threads`): 1 (the default) runs them
    /// all on one thread, which costs the least CPU per message; more lets CPU-heavy work (MLS
    /// for a large MIMI room, thousands of messages a second) use more cores; 0 means one per
    /// core. The store's own threads and blocking work come on top.
    pub worker_threads: u16,
    /// Days a bridged event is kept in the store (`bridge.keep_days`): its content and the
    /// native IDs of its copies, which edits, replies, reactions and deletions of it need.
    /// Older ones that nothing still needs are forgotten every few hours. 0 keeps them for ever.
    pub keep_days: u32,
}

/// One entry of `bridge.admins`, written `"ADAPTER:USER"` (`"matrix:@alice:example.org"`,
/// `"xmpp:alice@example.org"`): a native user of one configured adapter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct AdminSection {
    /// Id of a configured adapter.
    pub adapter: String,
    /// The user's native ID on that adapter, as the adapter reports senders (a Matrix user ID,
    /// a bare JID).
    pub user: String,
}

/// One `[[bridge.management]]`: a native room on one adapter where admins talk to the bridge.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ManagementSection {
    /// Id of a configured adapter.
    pub adapter: String,
    /// The native room ID on that adapter (a Matrix room ID, a MUC address).
    pub remote: String,
    /// Path of the section, such as `bridge.management[0]`.
    pub path: String,
}

impl BridgeSection {
    /// Default of `log_level`.
    pub const DEFAULT_LOG_LEVEL: &'static str = "info";
    /// The shortest accepted `provisioning_token`, in bytes.
    pub const MIN_TOKEN_LEN: usize = 16;
    /// Default of `worker_threads`.
    pub const DEFAULT_WORKER_THREADS: u16 = 1;
    /// Default of `keep_days`: a year.
    pub const DEFAULT_KEEP_DAYS: u32 = 365;
    /// The most `keep_days` accepted (a hundred years).
    pub const MAX_KEEP_DAYS: u32 = 36_500;
    /// The most `worker_threads` accepted.
    pub const MAX_WORKER_THREADS: u16 = 256;
}

/// Format of log lines (`bridge.log_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Readable text lines (the default).
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// The `[delivery]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delivery {
    /// How many times a transient failure is retried before the message is
    /// dead-lettered (1 to 10 000; default 12).
    pub max_attempts: u32,
    /// First retry delay in milliseconds (1 to 86 400 000; default 250).
    pub backoff_initial_ms: u64,
    /// Largest retry delay in milliseconds (at least `backoff_initial_ms`,
    /// at most 86 400 000; default 60 000).
    pub backoff_max_ms: u64,
    /// Messages held in memory per link (1 to 1 048 576; default 1024); the
    /// rest wait in the durable outbox.
    pub queue_capacity: usize,
    /// What to do with what a target adapter cannot carry, unless a room
    /// overrides it (`[delivery.degrade]`).
    pub degrade: Degrade,
    /// What crosses between the networks at all, unless a room overrides it
    /// (`[delivery.carry]`).
    pub carry: Carry,
}

impl Delivery {
    /// Default of `max_attempts`.
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 12;
    /// Default of `backoff_initial_ms`.
    pub const DEFAULT_BACKOFF_INITIAL_MS: u64 = 250;
    /// Default of `backoff_max_ms`.
    pub const DEFAULT_BACKOFF_MAX_MS: u64 = 60_000;
    /// Default of `queue_capacity`.
    pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;
    /// Largest accepted `max_attempts`.
    pub const MAX_ATTEMPTS_LIMIT: u32 = 10_000;
    /// Largest accepted backoff delay, in milliseconds (one day).
    pub const BACKOFF_LIMIT_MS: u64 = 86_400_000;
    /// Largest accepted `queue_capacity`.
    pub const QUEUE_CAPACITY_LIMIT: usize = 1 << 20;

    /// `backoff_initial_ms` as a duration.
    pub fn backoff_initial(&self) -> Duration {
        Duration::from_millis(self.backoff_initial_ms)
    }

    /// `backoff_max_ms` as a duration.
    pub fn backoff_max(&self) -> Duration {
        Duration::from_millis(self.backoff_max_ms)
    }
}

impl Default for Delivery {
    fn default() -> Self {
        Self {
            max_attempts: Self::DEFAULT_MAX_ATTEMPTS,
            backoff_initial_ms: Self::DEFAULT_BACKOFF_INITIAL_MS,
            backoff_max_ms: Self::DEFAULT_BACKOFF_MAX_MS,
            queue_capacity: Self::DEFAULT_QUEUE_CAPACITY,
            degrade: Degrade::default(),
            carry: Carry::default(),
        }
    }
}

/// What crosses between the native rooms of a room at all, whatever the
/// targets could carry (`[delivery.carry]`, `[room.carry]` and, for every
/// room of one adapter, `[adapter.carry]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Carry {
    /// Typing notifications (default `true`; `false` keeps them in the
    /// network where they happen).
    pub typing: bool,
    /// Read markers (default `true`; `false` keeps them in the network
    /// where they happen).
    pub read_markers: bool,
    /// Roles (default `true`; `false` keeps who moderates or administers
    /// a room to its own network).
    pub roles: bool,
    /// Moderation (default `true`; `false` keeps kicks and bans to the
    /// network where they happen).
    pub moderation: bool,
}

impl Default for Carry {
    fn default() -> Self {
        Self {
            typing: true,
            read_markers: true,
            roles: true,
            moderation: true,
        }
    }
}

/// What to do with each kind of event that a target adapter cannot carry
/// natively (`[delivery.degrade]` and `[room.degrade]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Degrade {
    /// A reply: quote the original (`fallback`, default) or send the
    /// message without the reply (`drop`).
    pub reply: Fallback,
    /// An edit: send a "* corrected text" message (`fallback`, default) or
    /// ignore the edit (`drop`).
    pub edit: Fallback,
    /// A reaction: send a short text line (`fallback`, default) or ignore it
    /// (`drop`).
    pub reaction: Fallback,
    /// A deletion: send a notice that the message was deleted (`fallback`)
    /// or ignore it (`drop`, default).
    pub redaction: Fallback,
    /// A kick or ban where the target network cannot do it: send a notice
    /// saying who kicked or banned whom (`fallback`, default) or ignore it
    /// (`drop`).
    pub moderation: Fallback,
    /// An event of a custom type: ignore and count it (`drop`, default) or
    /// send a short notice naming the type (`notice`).
    pub custom: CustomPolicy,
}

impl Default for Degrade {
    fn default() -> Self {
        Self {
            reply: Fallback::Fallback,
            edit: Fallback::Fallback,
            reaction: Fallback::Fallback,
            redaction: Fallback::Drop,
            moderation: Fallback::Fallback,
            custom: CustomPolicy::Drop,
        }
    }
}

/// Policy for a feature the target cannot carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fallback {
    /// Carry it as plain text instead.
    Fallback,
    /// Leave it out.
    Drop,
}

/// Policy for events of a custom type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CustomPolicy {
    /// Leave it out, counting it in the metrics (the default).
    #[default]
    Drop,
    /// Send a short notice naming the event type.
    Notice,
}

/// One `[[adapter]]` section: a connection to one chat network.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AdapterSection {
    /// Unique id, `[a-z0-9_-]{1,32}`, named by `room.link.adapter`.
    pub id: String,
    /// The adapter type (the `type` key), such as `linechat`.
    pub type_name: String,
    /// Path of the section, such as `adapter[0]`, to prefix the paths of
    /// problems found in `settings`.
    pub path: String,
    /// What this adapter's native rooms take part in at all (`[adapter.carry]`;
    /// keys left out carry). An event crosses only if the room's policy
    /// ([`Config::carry_for`]), the source adapter's and the target adapter's
    /// all let it.
    pub carry: Option<Carry>,
    /// Every key of the section except `id`, `type` and `carry`, for the
    /// adapter type to check and use.
    pub settings: toml::Table,
}

impl AdapterSection {
    /// The full path of one of its settings: `adapter[0].connect`.
    pub fn key_path(&self, key: &str) -> String {
        crate::join_path(&self.path, key)
    }
}

/// One `[[room]]` section: a set of linked native rooms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoomSection {
    /// Unique id, `[a-z0-9_.-]{1,64}`.
    pub id: String,
    /// Optional display name.
    pub name: Option<String>,
    /// This room's own degradation policy; keys it leaves out take the
    /// value of `[delivery.degrade]`. See [`Config::degrade_for`].
    pub degrade: Option<Degrade>,
    /// This room's own carry policy; keys it leaves out take the value of
    /// `[delivery.carry]`. See [`Config::carry_for`].
    pub carry: Option<Carry>,
    /// The native rooms bridged together, in file order.
    pub links: Vec<LinkSection>,
    /// Path of the section, such as `room[0]`.
    pub path: String,
}

/// One `[[room.link]]`: a native room on one adapter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct LinkSection {
    /// Id of a configured adapter.
    pub adapter: String,
    /// The native room id on that adapter (a MUC address, a Matrix room id…).
    pub remote: String,
    /// Path of the link, such as `room[0].link[1]`.
    pub path: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let delivery = Delivery::default();
        assert_eq!(delivery.max_attempts, 12);
        assert_eq!(delivery.backoff_initial(), Duration::from_millis(250));
        assert_eq!(delivery.backoff_max(), Duration::from_secs(60));
        assert_eq!(delivery.queue_capacity, 1024);
        let degrade = Degrade::default();
        assert_eq!(degrade.reply, Fallback::Fallback);
        assert_eq!(degrade.edit, Fallback::Fallback);
        assert_eq!(degrade.reaction, Fallback::Fallback);
        assert_eq!(degrade.redaction, Fallback::Drop);
        assert_eq!(degrade.custom, CustomPolicy::Drop);
        assert_eq!(LogFormat::default(), LogFormat::Human);
    }

    #[test]
    fn serde_names_are_lowercase() {
        let degrade: Degrade = toml::from_str("custom = \"notice\"\nreply = \"drop\"")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(degrade.custom, CustomPolicy::Notice);
        assert_eq!(degrade.reply, Fallback::Drop);
        assert_eq!(degrade.edit, Fallback::Fallback);
        let text = toml::to_string(&Degrade::default()).unwrap_or_else(|e| panic!("{e}"));
        assert!(text.contains("redaction = \"drop\""), "{text}");
        assert!(text.contains("reply = \"fallback\""), "{text}");
    }
}
