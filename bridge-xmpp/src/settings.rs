//! The `type = "xmpp"` adapter section, checked without I/O.
//!
//! ```toml
//! [[adapter]]
//! id = "xmpp"
//! type = "xmpp"
//! mode = "component"                    # puppets: every remote user is its own occupant
//! server = "127.0.0.1:5347"             # the server's component port
//! domain = "bridge.example.org"         # the component's domain
//! secret = { env = "BRIDGE_XMPP_SECRET" }
//! nick = "bridge"                       # the bridge's own occupant in each room
//!
//! [[adapter]]
//! id = "xmpp-relay"
//! type = "xmpp"
//! mode = "client"                       # relay: one account speaks for everyone
//! jid = "relay@example.org"
//! password = { file = "/run/secrets/xmpp" }
//! # server = "xmpp.example.org:5222"    # default: the JID's domain, port 5222
//! # insecure_tcp = false                # true only for a server on loopback
//! relay_format = "<{name}> {text}"
//!
//! # Either mode: passwords of password-protected rooms, by room JID.
//! [adapter.room_passwords]
//! "private@conference.example.org" = { env = "BRIDGE_PRIVATE_ROOM_PASSWORD" }
//! ```

use std::collections::HashMap;
use std::time::Duration;

use bridge_core::ConfigIssue;

use crate::jid;

/// How the adapter connects.
#[derive(Clone, Debug)]
pub enum Mode {
    /// XEP-0114 external component with puppets.
    Component {
        /// The server's component port, `host:port`.
        server: String,
        /// The component domain.
        domain: String,
        /// The shared secret.
        secret: String,
    },
    /// An ordinary account relaying for everyone.
    Client {
        /// The account.
        jid: String,
        /// Its password.
        password: String,
        /// `host:port` to connect to instead of the JID's domain.
        server: Option<String>,
        /// Plain TCP without TLS (loopback tests only).
        insecure_tcp: bool,
    },
}

/// Everything the adapter needs to run.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Component or client.
    pub mode: Mode,
    /// The nick of the bridge's own occupant (the listener in component mode, the relay in
    /// client mode).
    pub nick: String,
    /// Client mode: how a relayed message reads; `{name}` and `{text}` are replaced.
    pub relay_format: String,
    /// Largest message body, in bytes: longer ones from XMPP are refused (logged, counted), longer
    /// ones to XMPP are cut (servers close a stream over their stanza limit).
    pub max_body_bytes: usize,
    /// Largest incoming stanza, in bytes of XML (component mode).
    pub max_stanza_bytes: usize,
    /// The XEP-0363 upload service; discovered on the server's domain when not set.
    pub upload_service: Option<String>,
    /// How long a send waits for the room's reflection of a message.
    pub reflection_timeout: Duration,
    /// Passwords of password-protected rooms (XEP-0045 §7.2.5), by bare room JID in lower
    /// case: given in every join of the bridge's occupants there.
    pub room_passwords: HashMap<String, String>,
}

impl Settings {
    /// The password to join `room` with, when one is configured.
    pub fn room_password(&self, room: &str) -> Option<&str> {
        self.room_passwords
            .get(&room.to_ascii_lowercase())
            .map(String::as_str)
    }
}

const KEYS: &[&str] = &[
    "mode",
    "server",
    "domain",
    "secret",
    "jid",
    "password",
    "insecure_tcp",
    "nick",
    "relay_format",
    "max_body_bytes",
    "max_stanza_bytes",
    "upload_service",
    "room_passwords",
];

/// Reads the settings, reporting every problem at once. Secrets given as `{ env = … }` or
/// `{ file = … }` are resolved only when `resolve_secrets` is set (validation does no I/O).
pub fn parse(table: &toml::Table, resolve_secrets: bool) -> Result<Settings, Vec<ConfigIssue>> {
    let mut issues = bridge_core::unknown_settings(table, KEYS, "xmpp");
    let mut text = |key: &str, required: bool| -> Option<String> {
        bridge_core::text_setting(table, key, required, &mut issues)
    };
    let mode = text("mode", true);
    let nick = text("nick", false).unwrap_or_else(|| "bridge".into());
    let relay_format = text("relay_format", false).unwrap_or_else(|| "<{name}> {text}".into());
    let upload_service = text("upload_service", false);
    let mode = match mode.as_deref() {
        Some("component") => {
            let server = text("server", true);
            let domain = text("domain", true);
            for (key, present) in [
                ("jid", table.contains_key("jid")),
                ("password", table.contains_key("password")),
            ] {
                if present {
                    issues.push(ConfigIssue::new(
                        key,
                        "only for mode = \"client\"; a component authenticates with `secret`",
                    ));
                }
            }
            let secret = secret(table, "secret", resolve_secrets, &mut issues);
            if let Some(server) = &server {
                check_host_port(server, "server", &mut issues);
            }
            if let Some(domain) = &domain
                && (domain.contains(['@', '/']) || !jid::is_plausible(domain))
            {
                issues.push(ConfigIssue::new(
                    "domain",
                    "expected a domain such as \"bridge.example.org\" (no @ or /)",
                ));
            }
            match (server, domain, secret) {
                (Some(server), Some(domain), Some(secret)) => Some(Mode::Component {
                    server,
                    domain,
                    secret,
                }),
                _ => None,
            }
        }
        Some("client") => {
            let account = text("jid", true);
            let server = text("server", false);
            if table.contains_key("secret") || table.contains_key("domain") {
                issues.push(ConfigIssue::new(
                    "secret",
                    "`secret` and `domain` are only for mode = \"component\"",
                ));
            }
            let password = secret(table, "password", resolve_secrets, &mut issues);
            let insecure_tcp = match table.get("insecure_tcp") {
                None => false,
                Some(toml::Value::Boolean(b)) => *b,
                Some(_) => {
                    issues.push(ConfigIssue::new("insecure_tcp", "expected true or false"));
                    false
                }
            };
            if let Some(server) = &server {
                check_host_port(server, "server", &mut issues);
            }
            if let Some(account) = &account
                && (!account.contains('@') || !jid::is_plausible(account))
            {
                issues.push(ConfigIssue::new(
                    "jid",
                    "expected an account such as \"relay@example.org\"",
                ));
            }
            match (account, password) {
                (Some(jid), Some(password)) => Some(Mode::Client {
                    jid,
                    password,
                    server,
                    insecure_tcp,
                }),
                _ => None,
            }
        }
        Some(other) => {
            issues.push(ConfigIssue::new(
                "mode",
                format!("expected \"component\" or \"client\", got \"{other}\""),
            ));
            None
        }
        None => None,
    };
    if nick.chars().any(char::is_control) || nick.len() > 256 {
        issues.push(ConfigIssue::new(
            "nick",
            "expected a nick of at most 256 bytes",
        ));
    }
    if !relay_format.contains("{text}") {
        issues.push(ConfigIssue::new(
            "relay_format",
            "must contain {text} (and usually {name}), e.g. \"<{name}> {text}\"",
        ));
    }
    let max_body_bytes = size(table, "max_body_bytes", 256 * 1024, &mut issues);
    let max_stanza_bytes = size(table, "max_stanza_bytes", 1024 * 1024, &mut issues);
    let room_passwords = room_passwords(table, resolve_secrets, &mut issues);
    match mode {
        Some(mode) if issues.is_empty() => Ok(Settings {
            mode,
            nick,
            relay_format,
            max_body_bytes,
            max_stanza_bytes,
            upload_service,
            reflection_timeout: Duration::from_secs(10),
            room_passwords,
        }),
        _ => Err(issues),
    }
}

/// `room_passwords`: a table of bare room JIDs to secrets (inline, `{ env = … }` or
/// `{ file = … }`).
fn room_passwords(
    table: &toml::Table,
    resolve: bool,
    issues: &mut Vec<ConfigIssue>,
) -> HashMap<String, String> {
    let mut passwords = HashMap::new();
    let rooms = match table.get("room_passwords") {
        None => return passwords,
        Some(toml::Value::Table(rooms)) => rooms,
        Some(_) => {
            issues.push(ConfigIssue::new(
                "room_passwords",
                "expected a table of room JIDs to passwords, e.g. \
                 { \"private@conference.example.org\" = { env = \"VAR\" } }",
            ));
            return passwords;
        }
    };
    for room in rooms.keys() {
        let path = format!("room_passwords.\"{room}\"");
        if !room.contains('@') || room.contains('/') || !jid::is_plausible(room) {
            issues.push(ConfigIssue::new(
                &path,
                "expected a room's bare JID such as \"room@conference.example.org\"",
            ));
            continue;
        }
        match bridge_config::secret_setting(rooms, room, resolve) {
            Ok(Some(password)) => {
                passwords.insert(room.to_ascii_lowercase(), password);
            }
            Ok(None) => {}
            Err(diagnostic) => issues.push(ConfigIssue::new(&path, diagnostic.to_string())),
        }
    }
    passwords
}

fn check_host_port(value: &str, key: &str, issues: &mut Vec<ConfigIssue>) {
    let ok = value
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if !ok {
        issues.push(ConfigIssue::new(
            key,
            format!("expected host:port such as \"127.0.0.1:5347\", got \"{value}\""),
        ));
    }
}

fn size(table: &toml::Table, key: &str, default: usize, issues: &mut Vec<ConfigIssue>) -> usize {
    match table.get(key) {
        None => default,
        Some(toml::Value::Integer(n)) if (1024..=64 * 1024 * 1024).contains(n) => {
            usize::try_from(*n).unwrap_or(default)
        }
        Some(_) => {
            issues.push(ConfigIssue::new(
                key,
                "expected a number of bytes from 1024 to 67108864",
            ));
            default
        }
    }
}

/// A required secret setting: inline, `{ env = "VAR" }` or `{ file = "/path" }`.
fn secret(
    table: &toml::Table,
    key: &str,
    resolve: bool,
    issues: &mut Vec<ConfigIssue>,
) -> Option<String> {
    match bridge_config::secret_setting(table, key, resolve) {
        Ok(Some(secret)) => Some(secret),
        Ok(None) => {
            issues.push(ConfigIssue::new(
                key,
                "required (a string, { env = \"VAR\" } or { file = \"/path\" })",
            ));
            None
        }
        Err(diagnostic) => {
            issues.push(ConfigIssue::new(key, diagnostic.to_string()));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        text.parse().expect("test TOML parses")
    }

    #[test]
    fn a_component_section_parses() {
        let s = parse(
            &table(
                "mode = 'component'\nserver = '127.0.0.1:5347'\ndomain = 'bridge.localhost'\nsecret = 's'",
            ),
            true,
        )
        .expect("valid");
        assert!(matches!(s.mode, Mode::Component { ref secret, .. } if secret == "s"));
        assert_eq!(s.nick, "bridge");
    }

    #[test]
    fn room_passwords_are_read_by_room_and_checked() {
        const BASE: &str =
            "mode = 'component'\nserver = '127.0.0.1:5347'\ndomain = 'b.localhost'\nsecret = 's'\n";
        let s = parse(
            &table(&format!(
                "{BASE}[room_passwords]\n'Private@Conference.localhost' = 'pw'\n"
            )),
            true,
        )
        .expect("valid");
        assert_eq!(s.room_password("private@conference.localhost"), Some("pw"));
        assert_eq!(s.room_password("PRIVATE@conference.localhost"), Some("pw"));
        assert_eq!(s.room_password("open@conference.localhost"), None);
        let issues = parse(
            &table(&format!(
                "{BASE}[room_passwords]\n'not a room' = 'pw'\n'r@c.localhost' = 3\n"
            )),
            false,
        )
        .err()
        .unwrap_or_default();
        let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "room_passwords.\"not a room\"",
                "room_passwords.\"r@c.localhost\""
            ],
            "{issues:?}"
        );
        let issues = parse(&table(&format!("{BASE}room_passwords = 'pw'")), false)
            .err()
            .unwrap_or_default();
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(issues[0].path, "room_passwords");
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let issues = parse(
            &table("mode = 'component'\nserver = 'nope'\ndomain = 'a@b'\ncolour = 1\njid = 'x@y'"),
            false,
        )
        .err()
        .unwrap_or_default();
        let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
        for key in ["colour", "server", "domain", "secret", "jid"] {
            assert!(paths.contains(&key), "{key} missing from {paths:?}");
        }
        let issues = parse(&table("mode = 'relay'"), false)
            .err()
            .unwrap_or_default();
        assert_eq!(issues.len(), 1);
        assert!(issues[0].message.contains("\"component\" or \"client\""));
    }

    #[test]
    fn a_client_section_parses_and_checks_its_format() {
        let ok = parse(
            &table(
                "mode = 'client'\njid = 'relay@localhost'\npassword = 'pw'\ninsecure_tcp = true",
            ),
            true,
        )
        .expect("valid");
        assert!(matches!(
            ok.mode,
            Mode::Client {
                insecure_tcp: true,
                ..
            }
        ));
        let bad = parse(
            &table(
                "mode = 'client'\njid = 'relay'\npassword = {env = ''}\nrelay_format = '{name}'",
            ),
            false,
        )
        .err()
        .unwrap_or_default();
        let mut paths: Vec<&str> = bad.iter().map(|i| i.path.as_str()).collect();
        paths.sort_unstable();
        assert_eq!(paths, ["jid", "password", "relay_format"], "{bad:?}");
    }
}
