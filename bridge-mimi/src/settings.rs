//! The `type = "mimi"` adapter section, checked without I/O.
//!
//! ```toml
//! [[adapter]]
//! id = "mimi"
//! type = "mimi"
//! domain = "bridge.example"            # our MIMI provider domain (certificates name it)
//! listen = "0.0.0.0:8443"              # where the HTTPS server listens
//! certificate = "/etc/bridge/mimi.crt" # PEM chain naming `domain`, server and client alike
//! key = "/etc/bridge/mimi.key"         # its PEM private key
//! ca = "/etc/bridge/mimi-ca.pem"       # PEM bundle that peers' certificates chain to
//! # origin = "https://bridge.example:8443"   # what our directory points at; default https://DOMAIN
//! # timeout_secs = 30                  # one request to a peer
//! # max_file_mb = 25                   # largest attachment sent or received (1 to 100 MiB)
//! # mls_cache_groups = 64              # MLS groups kept in memory between messages (0 to 100000)
//! # hosted_files_days = 30             # delete files we host for peers after this many days
//! #                                    # (1 to 36500; default: kept until their message is deleted)
//! [adapter.peers]                      # optional: where a peer provider is served
//! "hub.example" = "https://mimi.hub.example:8443"   # default: https://DOMAIN
//! # or, to connect to a fixed address instead of resolving the URL's host:
//! # "hub.example" = { url = "https://hub.example:8443", address = "192.0.2.7:8443" }
//! ```
//!
//! Paths are taken as written: a relative path is relative to the bridge's working directory,
//! as the Matrix adapter's `registration` (adapter sections are not told where the
//! configuration file is).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bridge_core::ConfigIssue;

/// Everything the adapter needs to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Our provider domain, lower-cased.
    pub domain: String,
    /// Where the HTTPS server listens.
    pub listen: SocketAddr,
    /// Our certificate chain (PEM).
    pub certificate: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The CA bundle peers are verified against (PEM).
    pub ca: PathBuf,
    /// The origin our directory points at.
    pub origin: String,
    /// Base URLs of peer providers, by domain (lower-cased); others are `https://DOMAIN`.
    pub peers: BTreeMap<String, String>,
    /// Fixed addresses for the hosts of peers' URLs, by host.
    pub addresses: BTreeMap<String, SocketAddr>,
    /// How long one request to a peer may take.
    pub timeout: Duration,
    /// The largest attachment we encrypt and host, or download and decrypt, in bytes.
    pub max_file_bytes: u64,
    /// How many MLS groups (one puppet's view of one room) stay in memory between operations.
    pub mls_cache_groups: usize,
    /// How long a file we host for peers is served; `None`: until its message is deleted.
    pub hosted_files_max_age: Option<Duration>,
}

impl Settings {
    /// The base URL of peer provider `domain`.
    pub fn peer_origin(&self, domain: &str) -> String {
        self.peers
            .get(&domain.to_ascii_lowercase())
            .cloned()
            .unwrap_or_else(|| format!("https://{domain}"))
    }
}

/// The default of `max_file_mb`.
const DEFAULT_MAX_FILE_MB: u64 = 25;
/// The largest `hosted_files_days`: a hundred years.
const MAX_HOSTED_FILES_DAYS: i64 = 36_500;

const KEYS: &[&str] = &[
    "domain",
    "listen",
    "certificate",
    "key",
    "ca",
    "origin",
    "peers",
    "timeout_secs",
    "max_file_mb",
    "mls_cache_groups",
    "hosted_files_days",
];

/// Whether `domain` is a plausible DNS name (letters, digits, `-`, dots between labels).
fn is_domain(domain: &str) -> bool {
    !domain.is_empty()
        && domain.len() <= 253
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn is_origin(url: &str) -> bool {
    url.strip_prefix("https://")
        .is_some_and(|rest| !rest.is_empty() && !rest.contains(['?', '#', ' ']))
}

/// Reads the settings, reporting every problem at once, each with its path.
pub fn parse(table: &toml::Table) -> Result<Settings, Vec<ConfigIssue>> {
    let mut issues = bridge_core::unknown_settings(table, KEYS, "mimi");
    let mut text = |key: &str, required: bool| -> Option<String> {
        bridge_core::text_setting(table, key, required, &mut issues)
    };
    let domain = text("domain", true).map(|d| d.to_ascii_lowercase());
    let listen = text("listen", true);
    let certificate = text("certificate", true).map(PathBuf::from);
    let key = text("key", true).map(PathBuf::from);
    let ca = text("ca", true).map(PathBuf::from);
    let origin = text("origin", false);
    if let Some(d) = &domain
        && !is_domain(d)
    {
        issues.push(ConfigIssue::new(
            "domain",
            format!("expected a DNS name such as \"bridge.example\", got \"{d}\""),
        ));
    }
    let listen = listen.and_then(|l| match l.parse::<SocketAddr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            issues.push(ConfigIssue::new(
                "listen",
                format!("expected an address such as \"0.0.0.0:8443\", got \"{l}\""),
            ));
            None
        }
    });
    if let Some(o) = &origin
        && !is_origin(o)
    {
        issues.push(ConfigIssue::new(
            "origin",
            "expected an https URL such as \"https://bridge.example:8443\"",
        ));
    }
    let mut peers = BTreeMap::new();
    let mut addresses = BTreeMap::new();
    match table.get("peers") {
        None => {}
        Some(toml::Value::Table(entries)) => {
            for (peer, url) in entries {
                let path = format!("peers.\"{peer}\"");
                if !is_domain(&peer.to_ascii_lowercase()) {
                    issues.push(ConfigIssue::new(&path, "the key must be a provider domain"));
                }
                let (url, address) = match url {
                    toml::Value::Table(t) => (t.get("url"), t.get("address")),
                    other => (Some(other), None),
                };
                match url {
                    Some(toml::Value::String(url)) if is_origin(url) => {
                        peers.insert(peer.to_ascii_lowercase(), url.trim_end_matches('/').into());
                        if let Some(address) = address {
                            match address.as_str().map(str::parse::<SocketAddr>) {
                                Some(Ok(address)) => {
                                    let host = url["https://".len()..]
                                        .split(['/', ':'])
                                        .next()
                                        .unwrap_or_default()
                                        .to_ascii_lowercase();
                                    addresses.insert(host, address);
                                }
                                _ => issues.push(ConfigIssue::new(
                                    format!("{path}.address"),
                                    "expected an address such as \"192.0.2.7:8443\"",
                                )),
                            }
                        }
                    }
                    _ => issues.push(ConfigIssue::new(
                        &path,
                        "expected an https URL such as \"https://mimi.hub.example:8443\" \
                         (or { url = …, address = … })",
                    )),
                }
            }
        }
        Some(_) => issues.push(ConfigIssue::new(
            "peers",
            "expected a table of domain = \"https://…\"",
        )),
    }
    let timeout = match table.get("timeout_secs") {
        None => Duration::from_secs(30),
        Some(toml::Value::Integer(n)) if (1..=600).contains(n) => {
            Duration::from_secs(n.unsigned_abs())
        }
        Some(_) => {
            issues.push(ConfigIssue::new(
                "timeout_secs",
                "expected a whole number of seconds from 1 to 600",
            ));
            Duration::from_secs(30)
        }
    };
    let max_file_bytes = match table.get("max_file_mb") {
        None => DEFAULT_MAX_FILE_MB << 20,
        Some(toml::Value::Integer(n)) if (1..=100).contains(n) => n.unsigned_abs() << 20,
        Some(_) => {
            issues.push(ConfigIssue::new(
                "max_file_mb",
                "expected a whole number of MiB from 1 to 100",
            ));
            DEFAULT_MAX_FILE_MB << 20
        }
    };
    let mls_cache_groups = match table.get("mls_cache_groups") {
        None => crate::mls::DEFAULT_GROUP_CACHE,
        Some(toml::Value::Integer(n)) if (0..=100_000).contains(n) => {
            usize::try_from(*n).unwrap_or(crate::mls::DEFAULT_GROUP_CACHE)
        }
        Some(_) => {
            issues.push(ConfigIssue::new(
                "mls_cache_groups",
                "expected a whole number of groups from 0 to 100000",
            ));
            crate::mls::DEFAULT_GROUP_CACHE
        }
    };
    let hosted_files_max_age = match table.get("hosted_files_days") {
        None => None,
        Some(toml::Value::Integer(n)) if (1..=MAX_HOSTED_FILES_DAYS).contains(n) => {
            Some(Duration::from_secs(n.unsigned_abs() * 24 * 3600))
        }
        Some(_) => {
            issues.push(ConfigIssue::new(
                "hosted_files_days",
                format!("expected a whole number of days from 1 to {MAX_HOSTED_FILES_DAYS} (leave it out to keep files until their message is deleted)"),
            ));
            None
        }
    };
    match (domain, listen, certificate, key, ca) {
        (Some(domain), Some(listen), Some(certificate), Some(key), Some(ca))
            if issues.is_empty() =>
        {
            let origin = origin
                .map(|o| o.trim_end_matches('/').to_owned())
                .unwrap_or_else(|| format!("https://{domain}"));
            Ok(Settings {
                domain,
                listen,
                certificate,
                key,
                ca,
                origin,
                peers,
                addresses,
                timeout,
                max_file_bytes,
                mls_cache_groups,
                hosted_files_max_age,
            })
        }
        _ => Err(issues),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        text.parse().expect("valid TOML")
    }

    #[test]
    fn a_full_section_parses() {
        let settings = parse(&table(
            r#"
            domain = "Bridge.Example"
            listen = "127.0.0.1:8443"
            certificate = "c.pem"
            key = "k.pem"
            ca = "ca.pem"
            [peers]
            "hub.example" = "https://127.0.0.1:9443/"
            "c.example" = { url = "https://C.example:1", address = "127.0.0.1:1" }
            "#,
        ))
        .expect("valid");
        assert_eq!(settings.domain, "bridge.example");
        assert_eq!(settings.origin, "https://bridge.example");
        assert_eq!(
            settings.peer_origin("HUB.example"),
            "https://127.0.0.1:9443"
        );
        assert_eq!(settings.peer_origin("b.example"), "https://b.example");
        assert_eq!(settings.timeout, Duration::from_secs(30));
        assert_eq!(settings.hosted_files_max_age, None, "kept by default");
        let mut days = table(
            "domain = \"b.example\"\nlisten = \"127.0.0.1:1\"\ncertificate = \"c\"\nkey = \"k\"\nca = \"a\"\nhosted_files_days = 30",
        );
        assert_eq!(
            parse(&days).expect("valid").hosted_files_max_age,
            Some(Duration::from_secs(30 * 24 * 3600))
        );
        days.insert("hosted_files_days".into(), "30d".into());
        assert!(parse(&days).is_err(), "days are a whole number");
        assert_eq!(
            settings.addresses.get("c.example"),
            Some(&"127.0.0.1:1".parse().expect("address"))
        );
    }

    #[test]
    fn the_example_section_parses() {
        let example: toml::Table = include_str!("../../examples/mimi.toml")
            .parse()
            .expect("TOML");
        let adapters = example
            .get("adapter")
            .and_then(|a| a.as_array())
            .expect("adapters");
        let mut section = adapters[0].as_table().expect("table").clone();
        assert_eq!(
            section
                .remove("type")
                .and_then(|t| t.as_str().map(str::to_owned))
                .as_deref(),
            Some("mimi")
        );
        section.remove("id");
        let settings = parse(&section).expect("valid");
        assert_eq!(
            settings.peer_origin("hub.example"),
            "https://mimi.hub.example:8443"
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let issues = parse(&table(
            r#"
            domain = "not a domain"
            listen = "nowhere"
            certificate = 3
            origin = "http://x"
            timeout_secs = 0
            hosted_files_days = 0
            colour = "blue"
            [peers]
            "hub.example" = "ftp://x"
            "#,
        ))
        .expect_err("invalid");
        let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
        for path in [
            "colour",
            "domain",
            "listen",
            "certificate",
            "key",
            "ca",
            "origin",
            "timeout_secs",
            "hosted_files_days",
            "peers.\"hub.example\"",
        ] {
            assert!(paths.contains(&path), "{path} missing from {paths:?}");
        }
    }
}
