//! Secrets in adapter settings (and `bridge.provisioning_token`, a
//! [`SecretRef`]): written inline, or taken from an environment variable or
//! a file.
//!
//! ```toml
//! password = "hunter2"                       # inline
//! password = { env = "BRIDGE_XMPP_PASSWORD" } # from the environment
//! password = { file = "/run/secrets/xmpp" }   # from a file, one trailing newline removed
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::describe::{describe_toml, show};
use crate::diagnostics::Diagnostic;
use crate::source_map::join_path;

const EXPECTED: &str = "expected a secret: a string, { env = \"VAR\" } or { file = \"/path\" }";

/// Resolves a secret setting found at `path` (such as
/// `adapter[0].password`), reading a relative `{ file = "…" }` against the
/// current directory.
///
/// The error is a [`Diagnostic`] without a position, whose path is `path`
/// or, for an unset variable or an unreadable file, `path.env` or
/// `path.file`; give it to
/// [`Diagnostics::push_diagnostic`](crate::Diagnostics::push_diagnostic) to
/// have the line and column filled in.
pub fn resolve_secret(value: &toml::Value, path: &str) -> Result<String, Diagnostic> {
    resolve_secret_in(value, path, None)
}

/// Like [`resolve_secret`], but a relative `{ file = "…" }` is read from
/// `base_dir` (normally
/// [`SourceMap::base_dir`](crate::SourceMap::base_dir), the configuration
/// file's directory) when one is given.
pub fn resolve_secret_in(
    value: &toml::Value,
    path: &str,
    base_dir: Option<&Path>,
) -> Result<String, Diagnostic> {
    match source(value, path)? {
        Source::Inline(text) => Ok(text.to_owned()),
        Source::Env(name, inner_path) => from_env(name, inner_path),
        Source::File(file, inner_path) => from_file(Path::new(file), inner_path, base_dir),
    }
}

/// Checks that a secret setting found at `path` has one of the three shapes, without reading
/// the environment or any file (for validation, which does no I/O).
pub fn check_secret(value: &toml::Value, path: &str) -> Result<(), Diagnostic> {
    source(value, path).map(|_| ())
}

/// The secret setting `key` of an adapter's settings table: `Ok(None)` when absent; checked
/// for shape always, and read (environment or file) only when `resolve` is set (validation does
/// no I/O), else `Ok(Some(""))`.
pub fn secret_setting(
    table: &toml::Table,
    key: &str,
    resolve: bool,
) -> Result<Option<String>, Diagnostic> {
    let Some(value) = table.get(key) else {
        return Ok(None);
    };
    if resolve {
        resolve_secret(value, key).map(Some)
    } else {
        check_secret(value, key).map(|()| Some(String::new()))
    }
}

/// Where a secret comes from, with the path of the inner key for messages.
enum Source<'a> {
    Inline(&'a str),
    Env(&'a str, String),
    File(&'a str, String),
}

fn source<'a>(value: &'a toml::Value, path: &str) -> Result<Source<'a>, Diagnostic> {
    let table = match value {
        toml::Value::String(text) => return Ok(Source::Inline(text)),
        toml::Value::Table(table) => table,
        other => {
            return Err(Diagnostic::new(
                path,
                format!("{EXPECTED}, got {}", describe_toml(other)),
            ));
        }
    };
    let mut entries = table.iter();
    let (Some((key, inner)), None) = (entries.next(), entries.next()) else {
        return Err(Diagnostic::new(
            path,
            format!("{EXPECTED}, got {}", describe_toml(value)),
        ));
    };
    let inner_path = join_path(path, key);
    let text = match (key.as_str(), inner) {
        (_, toml::Value::String(text)) if key == "env" || key == "file" => text,
        ("env" | "file", other) => {
            return Err(Diagnostic::new(
                inner_path,
                format!("expected a string, got {}", describe_toml(other)),
            ));
        }
        _ => {
            return Err(Diagnostic::new(
                path,
                format!("{EXPECTED}, got {}", describe_toml(value)),
            ));
        }
    };
    if text.is_empty() {
        return Err(Diagnostic::new(inner_path, "must not be empty"));
    }
    Ok(if key == "env" {
        Source::Env(text, inner_path)
    } else {
        Source::File(text, inner_path)
    })
}

fn from_env(name: &str, path: String) -> Result<String, Diagnostic> {
    match std::env::var(name) {
        Ok(secret) => Ok(secret),
        Err(std::env::VarError::NotPresent) => Err(Diagnostic::new(
            path,
            format!("environment variable {} is not set", show(name)),
        )),
        Err(std::env::VarError::NotUnicode(_)) => Err(Diagnostic::new(
            path,
            format!("environment variable {} is not valid UTF-8", show(name)),
        )),
    }
}

fn from_file(file: &Path, path: String, base_dir: Option<&Path>) -> Result<String, Diagnostic> {
    let file = match base_dir {
        Some(base) => base.join(file),
        None => file.to_path_buf(),
    };
    match std::fs::read_to_string(&file) {
        Ok(mut secret) => {
            if secret.ends_with('\n') {
                secret.pop();
                if secret.ends_with('\r') {
                    secret.pop();
                }
            }
            Ok(secret)
        }
        Err(error) => Err(Diagnostic::new(
            path,
            format!(
                "cannot read secret file {}: {error}",
                show(&file.display().to_string())
            ),
        )),
    }
}

/// A secret setting of the generic sections (`bridge.provisioning_token`) as written: the value
/// inline, or where to read it when the bridge starts. Neither `Debug` nor `Serialize` shows an
/// inline value.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum SecretRef {
    /// Written in the file.
    Inline(String),
    /// Read from this environment variable.
    Env(String),
    /// Read from this file, one trailing newline removed. [`load`](crate::load) makes a
    /// relative path relative to the configuration file's directory.
    File(PathBuf),
}

impl SecretRef {
    /// The setting found at `path`, checked for shape without reading anything.
    pub fn parse(value: &toml::Value, path: &str) -> Result<Self, Diagnostic> {
        Ok(match source(value, path)? {
            Source::Inline(text) => Self::Inline(text.to_owned()),
            Source::Env(name, _) => Self::Env(name.to_owned()),
            Source::File(file, _) => Self::File(PathBuf::from(file)),
        })
    }

    /// The secret: the inline value, or the variable or file read now. `path` (the setting's
    /// path, such as `bridge.provisioning_token`) names the setting in the error.
    pub fn resolve(&self, path: &str) -> Result<String, Diagnostic> {
        match self {
            Self::Inline(text) => Ok(text.clone()),
            Self::Env(name) => from_env(name, join_path(path, "env")),
            Self::File(file) => from_file(file, join_path(path, "file"), None),
        }
    }

    /// Makes a relative `{ file = … }` relative to `base`.
    pub(crate) fn resolve_relative_to(&mut self, base: &Path) {
        if let Self::File(file) = self
            && file.is_relative()
            && !base.as_os_str().is_empty()
        {
            *file = base.join(&*file);
        }
    }
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Inline(_) => f.write_str("Inline(<redacted>)"),
            Self::Env(name) => f.debug_tuple("Env").field(name).finish(),
            Self::File(file) => f.debug_tuple("File").field(file).finish(),
        }
    }
}

/// `"<redacted>"`, `{ env = "VAR" }` or `{ file = "/path" }`.
impl Serialize for SecretRef {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Inline(_) => serializer.serialize_str("<redacted>"),
            Self::Env(name) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("env", name)?;
                map.end()
            }
            Self::File(file) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("file", file)?;
                map.end()
            }
        }
    }
}
