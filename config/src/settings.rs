//! Checked reads of an adapter's type-specific settings.
//!
//! An adapter factory receives its [`AdapterSection`] and the file's
//! [`Diagnostics`], reads each of its keys through a [`SettingsReader`]
//! (which reports wrong types, missing keys and bad values with the right
//! path and line) and finally calls [`SettingsReader::finish`], which
//! reports the keys that were never read as unknown:
//!
//! ```
//! let mut loaded = bridge_config::Loaded::parse(
//!     "[bridge]\ndata_dir = \"/tmp/x\"\n\n[[adapter]]\nid = \"a\"\ntype = \"linechat\"\nconect = \"127.0.0.1:7070\"\n",
//!     "bridge.toml",
//! );
//! if let Some(config) = &loaded.config {
//!     for section in &config.adapters {
//!         let mut reader = section.reader(&mut loaded.diagnostics);
//!         let _connect = reader.required_socket_addr("connect");
//!         let _name = reader.optional_identifier("name", 32, "_-");
//!         reader.finish();
//!     }
//! }
//! let errors = loaded.finish().unwrap_err().to_string();
//! assert_eq!(errors, "bridge.toml:4:1: adapter[0].connect: missing required key \"connect\"\n\
//!                     bridge.toml:7:1: adapter[0].conect: unknown key \"conect\" (did you mean \"connect\"?)\n\
//!                     2 errors");
//! ```

use std::net::SocketAddr;
use std::ops::RangeInclusive;

use crate::describe::{describe_toml, show};
use crate::diagnostics::Diagnostics;
use crate::identifier::check_identifier;
use crate::model::AdapterSection;
use crate::secret::resolve_secret_in;
use crate::suggest::did_you_mean;

impl AdapterSection {
    /// A reader of this section's settings reporting into `diagnostics`.
    pub fn reader<'a>(&'a self, diagnostics: &'a mut Diagnostics) -> SettingsReader<'a> {
        SettingsReader::new(self, diagnostics)
    }
}

/// Reads an adapter's settings, reporting every problem with its path.
///
/// Each method returns `None` both when an optional key is absent and when
/// the key's value was wrong (which it has then reported).
#[derive(Debug)]
pub struct SettingsReader<'a> {
    section: &'a AdapterSection,
    diagnostics: &'a mut Diagnostics,
    known: Vec<String>,
}

impl<'a> SettingsReader<'a> {
    /// A reader of `section`'s settings reporting into `diagnostics`.
    pub fn new(section: &'a AdapterSection, diagnostics: &'a mut Diagnostics) -> Self {
        Self {
            section,
            diagnostics,
            known: Vec::new(),
        }
    }

    /// The section being read.
    pub fn section(&self) -> &'a AdapterSection {
        self.section
    }

    /// Full path of a setting, such as `adapter[0].connect`.
    pub fn path(&self, key: &str) -> String {
        self.section.key_path(key)
    }

    /// Reports a problem with a setting (or, with a dotted or indexed
    /// `key` such as `tls.ca_file` or `hosts[1]`, with a part of one).
    pub fn push(&mut self, key: &str, message: impl Into<String>) {
        let path = self.path(key);
        self.diagnostics.push(path, message);
    }

    /// The raw value of a setting, marking the key as known.
    pub fn value(&mut self, key: &str) -> Option<&'a toml::Value> {
        if !self.known.iter().any(|known| known == key) {
            self.known.push(key.to_owned());
        }
        self.section.settings.get(key)
    }

    fn get(&mut self, key: &str, required: bool) -> Option<&'a toml::Value> {
        let value = self.value(key);
        if value.is_none() && required {
            self.push(key, format!("missing required key {key:?}"));
        }
        value
    }

    fn string(&mut self, key: &str, required: bool) -> Option<&'a str> {
        match self.get(key, required)? {
            toml::Value::String(text) => Some(text),
            other => {
                let message = format!("expected a string, got {}", describe_toml(other));
                self.push(key, message);
                None
            }
        }
    }

    /// A string setting that must be present.
    pub fn required_string(&mut self, key: &str) -> Option<String> {
        self.string(key, true).map(str::to_owned)
    }

    /// A string setting that may be absent.
    pub fn optional_string(&mut self, key: &str) -> Option<String> {
        self.string(key, false).map(str::to_owned)
    }

    fn identifier(
        &mut self,
        key: &str,
        required: bool,
        max_len: usize,
        punctuation: &str,
    ) -> Option<String> {
        let text = self.string(key, required)?;
        match check_identifier(text, max_len, punctuation) {
            Ok(()) => Some(text.to_owned()),
            Err(message) => {
                self.push(key, message);
                None
            }
        }
    }

    /// A required id-like setting: 1 to `max_len` characters from `a-z`,
    /// `0-9` and `punctuation` (see [`check_identifier`]).
    pub fn required_identifier(
        &mut self,
        key: &str,
        max_len: usize,
        punctuation: &str,
    ) -> Option<String> {
        self.identifier(key, true, max_len, punctuation)
    }

    /// An optional id-like setting (see [`SettingsReader::required_identifier`]).
    pub fn optional_identifier(
        &mut self,
        key: &str,
        max_len: usize,
        punctuation: &str,
    ) -> Option<String> {
        self.identifier(key, false, max_len, punctuation)
    }

    fn socket_addr(&mut self, key: &str, required: bool) -> Option<SocketAddr> {
        let text = self.string(key, required)?;
        match text.parse() {
            Ok(address) => Some(address),
            Err(_) => {
                let message = format!(
                    "expected a socket address like \"127.0.0.1:7000\", got {}",
                    show(text)
                );
                self.push(key, message);
                None
            }
        }
    }

    /// A required `IP:port` setting, such as `"127.0.0.1:7070"` or
    /// `"[::1]:7070"`.
    pub fn required_socket_addr(&mut self, key: &str) -> Option<SocketAddr> {
        self.socket_addr(key, true)
    }

    /// An optional `IP:port` setting.
    pub fn optional_socket_addr(&mut self, key: &str) -> Option<SocketAddr> {
        self.socket_addr(key, false)
    }

    /// An optional integer setting within `range`.
    pub fn optional_integer(&mut self, key: &str, range: RangeInclusive<i64>) -> Option<i64> {
        let message = match self.get(key, false)? {
            toml::Value::Integer(number) if range.contains(number) => return Some(*number),
            toml::Value::Integer(number) => format!(
                "expected an integer from {} to {}, got {number}",
                range.start(),
                range.end()
            ),
            other => format!("expected an integer, got {}", describe_toml(other)),
        };
        self.push(key, message);
        None
    }

    /// An optional boolean setting.
    pub fn optional_bool(&mut self, key: &str) -> Option<bool> {
        match self.get(key, false)? {
            toml::Value::Boolean(flag) => Some(*flag),
            other => {
                let message = format!("expected a boolean, got {}", describe_toml(other));
                self.push(key, message);
                None
            }
        }
    }

    fn secret(&mut self, key: &str, required: bool) -> Option<String> {
        let value = self.get(key, required)?;
        let path = self.path(key);
        let base_dir = self
            .diagnostics
            .source_map()
            .base_dir()
            .map(|dir| dir.to_path_buf());
        match resolve_secret_in(value, &path, base_dir.as_deref()) {
            Ok(secret) => Some(secret),
            Err(diagnostic) => {
                self.diagnostics.push_diagnostic(diagnostic);
                None
            }
        }
    }

    /// A required secret (see [`resolve_secret`](crate::resolve_secret)); a
    /// relative `{ file = "…" }` is read from the configuration file's
    /// directory.
    pub fn required_secret(&mut self, key: &str) -> Option<String> {
        self.secret(key, true)
    }

    /// An optional secret (see [`SettingsReader::required_secret`]).
    pub fn optional_secret(&mut self, key: &str) -> Option<String> {
        self.secret(key, false)
    }

    /// Reports every setting that no method of this reader has read as an
    /// unknown key, suggesting the closest known one.
    pub fn finish(self) {
        for key in self.section.settings.keys() {
            if self.known.iter().any(|known| known == key) {
                continue;
            }
            let path = self
                .section
                .key_path(&crate::source_map::child_path("", key));
            let message = match did_you_mean(key, self.known.iter().map(String::as_str)) {
                Some(candidate) => format!("unknown key {key:?} (did you mean {candidate:?}?)"),
                None if self.known.is_empty() => {
                    format!(
                        "unknown key {key:?}; adapter type {:?} takes no settings",
                        self.section.type_name
                    )
                }
                None => format!(
                    "unknown key {key:?}; expected one of: {}",
                    self.known.join(", ")
                ),
            };
            self.diagnostics.push_at_key(path, message);
        }
    }
}
