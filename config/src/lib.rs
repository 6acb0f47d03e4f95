//! The bridge's configuration: one TOML file, checked as a whole.
//!
//! # Schema
//!
//! ```toml
//! [bridge]
//! data_dir = "/var/lib/bridge"      # required: directory of the durable store;
//!                                   # a relative path is relative to this file
//! log_format = "human"              # "human" (default) | "json"
//! log_level = "info"                # default "info"; a tracing EnvFilter directive string
//! http_addr = "127.0.0.1:9184"      # optional IP:port serving /metrics, /health/live,
//!                                   # /health/ready and the provisioning API (/api/v1);
//!                                   # `metrics_addr` is its former name, still accepted
//! provisioning_token = { env = "BRIDGE_TOKEN" }  # optional secret (inline, env or file, at
//!                                   # least 16 bytes): turns the provisioning API on
//! worker_threads = 1                # 0..=256: threads running the bridge's tasks; 1 (default)
//!                                   # costs the least CPU, 0 = one per core
//! keep_days = 365                   # 0..=36500: days bridged events are kept for edits,
//!                                   # replies, reactions and deletions; 0 = for ever
//!
//! [delivery]                        # optional; every key has a default
//! max_attempts = 12                 # 1..=10000: tries of a transient failure before dead-lettering
//! backoff_initial_ms = 250          # 1..=86400000: first retry delay
//! backoff_max_ms = 60000            # backoff_initial_ms..=86400000: largest retry delay
//! queue_capacity = 1024             # 1..=1048576: in-memory window per link
//!
//! [delivery.degrade]                # what a target adapter cannot carry natively
//! reply = "fallback"                # "fallback" (quoted text) | "drop"
//! edit = "fallback"                 # "fallback" ("* corrected text") | "drop"
//! reaction = "fallback"             # "fallback" (short text line) | "drop"
//! redaction = "drop"                # "fallback" (a deletion notice) | "drop"
//! custom = "drop"                   # "drop" (counted) | "notice" (names the event type)
//!
//! [delivery.carry]                  # what crosses between the networks at all
//! typing = true                     # false: typing notifications stay where they happen
//! read_markers = true               # false: read markers stay where they happen
//! roles = true                      # false: moderators' and admins' standing stays too
//!
//! [[adapter]]
//! id = "xmpp"                       # required, unique, [a-z0-9_-]{1,32}
//! type = "linechat"                 # required; every other key belongs to the type
//! [adapter.carry]                   # optional, same keys as [delivery.carry]: what this
//!                                   # adapter's rooms send and receive at all (keys left
//!                                   # out: true); the room's policy applies as well
//!
//! [[room]]
//! id = "lobby"                      # required, unique, [a-z0-9_.-]{1,64}
//! name = "Lobby"                    # optional
//! [room.degrade]                    # optional; keys left out follow [delivery.degrade]
//! [room.carry]                      # optional; keys left out follow [delivery.carry]
//! [[room.link]]
//! adapter = "xmpp"                  # the id of an [[adapter]]
//! remote = "lobby@conference.example.org"  # native room id; each (adapter, remote) once per file
//! ```
//!
//! Secrets in adapter settings may be written inline, as `{ env = "VAR" }`
//! or as `{ file = "/path" }`; see [`resolve_secret`]. `provisioning_token`
//! takes the same forms and is kept as a [`SecretRef`], read when the
//! bridge starts.
//!
//! # Checking
//!
//! Problems are reported all at once, never just the first: the file is
//! parsed with `toml_edit`, which keeps the position of every key and
//! value, and then walked key by key. Each problem becomes a [`Diagnostic`]
//! naming a path such as `room[0].link[2].adapter` and its line and column.
//!
//! The generic sections are checked here; an adapter's own settings are
//! checked by its type, which the binary knows. The binary therefore reads
//! the file with [`Loaded::read`], lets every adapter type check its
//! [`AdapterSection`] (for instance through a [`SettingsReader`]) into the
//! same [`Diagnostics`], and calls [`Loaded::finish`]:
//!
//! ```no_run
//! # use std::path::Path;
//! let mut loaded = bridge_config::Loaded::read(Path::new("/etc/bridge/bridge.toml"));
//! if let Some(config) = &loaded.config {
//!     for section in &config.adapters {
//!         let mut scope = loaded.diagnostics.scope(section.path.clone());
//!         if section.type_name != "linechat" {
//!             scope.push("type", format!("unknown adapter type {:?}", section.type_name));
//!         }
//!     }
//! }
//! match loaded.finish() {
//!     Ok(config) => { /* run the bridge */ }
//!     Err(diagnostics) => {
//!         eprintln!("{diagnostics}");
//!         std::process::exit(2);
//!     }
//! }
//! ```
//!
//! [`parse`] and [`load`] do the same without the adapter step.

#![warn(missing_docs)]

mod describe;
mod diagnostics;
mod identifier;
mod model;
mod secret;
mod settings;
mod source_map;
mod suggest;
mod validate;

use std::path::Path;

pub use diagnostics::{Diagnostic, Diagnostics, Scope};
pub use identifier::{
    ADAPTER_ID_MAX_LEN, ADAPTER_ID_PUNCTUATION, ROOM_ID_MAX_LEN, ROOM_ID_PUNCTUATION,
    check_identifier,
};
pub use model::{
    AdapterSection, AdminSection, BridgeSection, Carry, Config, CustomPolicy, Degrade, Delivery,
    Fallback, LinkSection, LogFormat, ManagementSection, RoomSection,
};
pub use secret::{SecretRef, check_secret, resolve_secret, resolve_secret_in, secret_setting};
pub use settings::SettingsReader;
pub use source_map::{Position, SourceMap, join_path};
pub use suggest::did_you_mean;

/// A configuration file as read so far: the configuration built from it and
/// the problems found in it, to which more can be added before
/// [`Loaded::finish`].
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The configuration, built as well as the problems allow: `None` only
    /// when the file could not be read or is not valid TOML. Sections
    /// lacking their ids are left out and wrong values replaced by
    /// defaults, so it is only meant for further checks until
    /// [`Loaded::finish`] accepts it.
    pub config: Option<Config>,
    /// Every problem found so far, positioned with the file's source map.
    pub diagnostics: Diagnostics,
}

impl Loaded {
    /// Parses and checks `source`; `file_name` is only used in messages.
    /// A relative `data_dir` is left as written.
    pub fn parse(source: &str, file_name: &str) -> Self {
        Self::parse_in(source, file_name, None)
    }

    /// Reads, parses and checks the file at `path`; a relative `data_dir`
    /// and relative secret files are taken relative to the file's
    /// directory.
    pub fn read(path: &Path) -> Self {
        let file_name = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(source) => {
                let base_dir = path.parent().filter(|dir| !dir.as_os_str().is_empty());
                Self::parse_in(&source, &file_name, base_dir)
            }
            Err(error) => {
                let mut diagnostics = Diagnostics::new(SourceMap::empty(file_name));
                diagnostics.push("", format!("cannot read the configuration file: {error}"));
                Self {
                    config: None,
                    diagnostics,
                }
            }
        }
    }

    fn parse_in(source: &str, file_name: &str, base_dir: Option<&Path>) -> Self {
        let document = match toml_edit::Document::parse(source) {
            Ok(document) => document,
            Err(error) => {
                let position = error
                    .span()
                    .map(|span| source_map::position_in(source, span.start));
                let message = syntax_message(source, error.message(), error.span());
                let mut diagnostics = Diagnostics::new(SourceMap::empty(file_name));
                diagnostics.push_diagnostic(Diagnostic {
                    path: String::new(),
                    line: position.map(|p| p.line),
                    column: position.map(|p| p.column),
                    message: format!("invalid TOML: {message}"),
                });
                return Self {
                    config: None,
                    diagnostics,
                };
            }
        };
        let map = SourceMap::build(
            file_name,
            base_dir.map(Path::to_path_buf),
            source,
            document.as_table(),
        );
        let mut diagnostics = Diagnostics::new(map);
        let mut config = validate::config(&mut diagnostics, document.as_table());
        if let Some(base) = base_dir {
            config.resolve_relative_to(base);
        }
        Self {
            config: Some(config),
            diagnostics,
        }
    }

    /// The file's source map, to locate paths.
    pub fn source_map(&self) -> &SourceMap {
        self.diagnostics.source_map()
    }

    /// The configuration when no problem was found, else every problem.
    pub fn finish(self) -> Result<Config, Diagnostics> {
        match self.config {
            Some(config) => self.diagnostics.into_result(config),
            None => Err(self.diagnostics),
        }
    }
}

/// The message of a TOML syntax error, on one line, naming a duplicate key
/// and hinting at quotes around a bare word.
fn syntax_message(source: &str, message: &str, span: Option<std::ops::Range<usize>>) -> String {
    let mut text = message.trim().replace('\n', " ");
    let Some(span) = span else {
        return text;
    };
    let spanned = source.get(span.clone()).unwrap_or_default();
    if text == "duplicate key" && !spanned.is_empty() && !spanned.contains('\n') {
        text = format!("duplicate key {}", describe::show(spanned.trim()));
    }
    let line_start = source
        .get(..span.start)
        .and_then(|before| before.rfind('\n'))
        .map_or(0, |index| index + 1);
    let line = source.get(line_start..).unwrap_or_default();
    let line = line.split('\n').next().unwrap_or_default();
    let value = line.split_once('=').map(|(_, value)| value);
    let value = value.map(|value| value.split('#').next().unwrap_or_default().trim());
    if let Some(word) = value
        && !word.is_empty()
        && !matches!(word, "true" | "false" | "inf" | "nan")
        && word.starts_with(|c: char| c.is_ascii_alphabetic())
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.:/@".contains(c))
    {
        text.push_str(&format!(" (strings must be quoted: \"{word}\")"));
    }
    text
}

/// Parses and checks a configuration; `file_name` is only used in messages
/// and a relative `data_dir` is left as written.
pub fn parse(source: &str, file_name: &str) -> Result<Config, Diagnostics> {
    Loaded::parse(source, file_name).finish()
}

/// Reads, parses and checks the configuration file at `path`, resolving a
/// relative `data_dir` against the file's directory. The source map lets
/// the caller report problems found later with lines and columns
/// (`Diagnostics::new(map)`).
pub fn load(path: &Path) -> Result<(Config, SourceMap), Diagnostics> {
    let loaded = Loaded::read(path);
    let map = loaded.source_map().clone();
    loaded.finish().map(|config| (config, map))
}
