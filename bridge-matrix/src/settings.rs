//! The `type = "matrix"` adapter section, checked without I/O.
//!
//! ```toml
//! [[adapter]]
//! id = "matrix"
//! type = "matrix"
//! mode = "appservice"                      # ghosts: every remote user is a Matrix user of its own
//! homeserver = "https://matrix.example.org"  # the client-server API
//! server_name = "example.org"              # the domain of the homeserver's user IDs
//! registration = "/etc/bridge/matrix-registration.yaml"   # `bridge generate-registration` writes it
//! # listen = "127.0.0.1:9000"              # default: the host and port of the registration's url
//! # ghost_prefix = "_bridge_"              # ghosts are @_bridge_<adapter>_<user>:example.org
//! # portals = false                        # true: #_bridge_<adapter>_<room>:example.org opens a portal
//! # ghost_name = "{name}"                  # a ghost's display name: "{name} ({network})", say
//!
//! [[adapter]]
//! id = "matrix-relay"
//! type = "matrix"
//! mode = "relay"                           # one bot account speaks for everyone
//! homeserver = "https://matrix.example.org"
//! user = "@relay:example.org"
//! password = { env = "BRIDGE_MATRIX_PASSWORD" }   # or access_token = …
//! relay_format = "<{name}> {text}"
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use bridge_core::ConfigIssue;

/// How the adapter talks to Matrix.
#[derive(Clone, Debug)]
pub enum Mode {
    /// An application service with a ghost per remote user.
    Appservice {
        /// The registration file (tokens, namespaces, the URL the homeserver pushes to).
        registration: PathBuf,
        /// Where to serve the appservice API; default: from the registration's `url`.
        listen: Option<SocketAddr>,
        /// The domain of the homeserver's user IDs.
        server_name: String,
        /// The start of every ghost's localpart and portal alias.
        ghost_prefix: String,
        /// Whether a Matrix user may open a portal room by joining an alias in our namespace.
        portals: bool,
        /// A ghost's display name: `{name}` is the remote user's name, `{network}` the ID of
        /// the adapter they come from.
        ghost_name: String,
    },
    /// One account relaying for everyone.
    Relay {
        /// The account, `@user:server`.
        user: String,
        /// How it logs in.
        login: RelayLogin,
        /// How a relayed message reads; `{name}` and `{text}` are replaced.
        relay_format: String,
    },
}

/// How the relay bot logs in.
#[derive(Clone, Debug)]
pub enum RelayLogin {
    /// With a password (a new device each start).
    Password(String),
    /// With an access token.
    AccessToken(String),
}

/// Everything the adapter needs to run.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Appservice or relay.
    pub mode: Mode,
    /// The client-server API base URL.
    pub homeserver: String,
    /// The largest file bridged in either direction, in bytes (the homeserver's own upload
    /// limit applies too).
    pub max_file_size: u64,
    /// The largest appservice transaction accepted, in bytes of JSON.
    pub max_transaction_bytes: usize,
}

const KEYS: &[&str] = &[
    "mode",
    "homeserver",
    "server_name",
    "registration",
    "listen",
    "ghost_prefix",
    "portals",
    "ghost_name",
    "user",
    "password",
    "access_token",
    "relay_format",
    "max_file_size",
    "max_transaction_bytes",
];

/// Reads the settings, reporting every problem at once. Secrets given as `{ env = … }` or
/// `{ file = … }` are resolved only when `resolve_secrets` is set (validation does no I/O).
pub fn parse(table: &toml::Table, resolve_secrets: bool) -> Result<Settings, Vec<ConfigIssue>> {
    let mut issues = bridge_core::unknown_settings(table, KEYS, "matrix");
    let mut text = |key: &str, required: bool| -> Option<String> {
        bridge_core::text_setting(table, key, required, &mut issues)
    };
    let mode = text("mode", true);
    let homeserver = text("homeserver", true);
    let mode = match mode.as_deref() {
        Some("appservice") => {
            let server_name = text("server_name", true);
            let registration = text("registration", true);
            let listen = text("listen", false);
            let ghost_prefix = text("ghost_prefix", false).unwrap_or_else(|| "_bridge_".into());
            let ghost_name = text("ghost_name", false).unwrap_or_else(|| "{name}".into());
            for key in ["user", "password", "access_token", "relay_format"] {
                if table.contains_key(key) {
                    issues.push(ConfigIssue::new(
                        key,
                        "only for mode = \"relay\"; an appservice authenticates with its registration",
                    ));
                }
            }
            let listen = listen.and_then(|l| match l.parse::<SocketAddr>() {
                Ok(addr) => Some(addr),
                Err(_) => {
                    issues.push(ConfigIssue::new(
                        "listen",
                        format!("expected an address such as \"127.0.0.1:9000\", got \"{l}\""),
                    ));
                    None
                }
            });
            if !ghost_prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._=-/".contains(c))
            {
                issues.push(ConfigIssue::new(
                    "ghost_prefix",
                    "expected lowercase letters, digits and . _ = - / (a user ID localpart)",
                ));
            }
            if let Some(name) = &server_name
                && (name.contains(['@', '/', ' ']) || name.starts_with(':'))
            {
                issues.push(ConfigIssue::new(
                    "server_name",
                    "expected the homeserver's domain, such as \"example.org\"",
                ));
            }
            let portals = boolean(table, "portals", &mut issues);
            if let Some(problem) = name_template_problem(&ghost_name) {
                issues.push(ConfigIssue::new("ghost_name", problem));
            }
            match (server_name, registration) {
                (Some(server_name), Some(registration)) => Some(Mode::Appservice {
                    registration: PathBuf::from(registration),
                    listen,
                    server_name,
                    ghost_prefix,
                    portals,
                    ghost_name,
                }),
                _ => None,
            }
        }
        Some("relay") => {
            let user = text("user", true);
            let relay_format =
                text("relay_format", false).unwrap_or_else(|| "<{name}> {text}".into());
            for key in [
                "registration",
                "server_name",
                "listen",
                "ghost_prefix",
                "portals",
                "ghost_name",
            ] {
                if table.contains_key(key) {
                    issues.push(ConfigIssue::new(key, "only for mode = \"appservice\""));
                }
            }
            if let Some(user) = &user
                && !(user.starts_with('@') && user.contains(':'))
            {
                issues.push(ConfigIssue::new(
                    "user",
                    "expected a user ID such as \"@relay:example.org\"",
                ));
            }
            if !relay_format.contains("{text}") {
                issues.push(ConfigIssue::new(
                    "relay_format",
                    "must contain {text} (and usually {name}), e.g. \"<{name}> {text}\"",
                ));
            }
            let login = match (table.get("password"), table.get("access_token")) {
                (Some(_), Some(_)) => {
                    issues.push(ConfigIssue::new(
                        "access_token",
                        "give either password or access_token, not both",
                    ));
                    None
                }
                (Some(_), None) => secret(table, "password", resolve_secrets, &mut issues)
                    .map(RelayLogin::Password),
                (None, Some(_)) => secret(table, "access_token", resolve_secrets, &mut issues)
                    .map(RelayLogin::AccessToken),
                (None, None) => {
                    issues.push(ConfigIssue::new(
                        "password",
                        "required: password or access_token (a string, { env = \"VAR\" } or { file = \"/path\" })",
                    ));
                    None
                }
            };
            match (user, login) {
                (Some(user), Some(login)) => Some(Mode::Relay {
                    user,
                    login,
                    relay_format,
                }),
                _ => None,
            }
        }
        Some(other) => {
            issues.push(ConfigIssue::new(
                "mode",
                format!("expected \"appservice\" or \"relay\", got \"{other}\""),
            ));
            None
        }
        None => None,
    };
    if let Some(url) = &homeserver
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        issues.push(ConfigIssue::new(
            "homeserver",
            "expected the client-server API's URL, such as \"https://matrix.example.org\"",
        ));
    }
    let max_file_size = size(
        table,
        "max_file_size",
        50 * 1024 * 1024,
        1024..=4 * 1024 * 1024 * 1024,
        &mut issues,
    );
    let max_transaction_bytes = size(
        table,
        "max_transaction_bytes",
        32 * 1024 * 1024,
        64 * 1024..=1024 * 1024 * 1024,
        &mut issues,
    );
    match (mode, homeserver) {
        (Some(mode), Some(homeserver)) if issues.is_empty() => Ok(Settings {
            mode,
            homeserver,
            max_file_size,
            max_transaction_bytes: usize::try_from(max_transaction_bytes).unwrap_or(usize::MAX),
        }),
        _ => Err(issues),
    }
}

fn boolean(table: &toml::Table, key: &str, issues: &mut Vec<ConfigIssue>) -> bool {
    match table.get(key) {
        None => false,
        Some(toml::Value::Boolean(b)) => *b,
        Some(_) => {
            issues.push(ConfigIssue::new(key, "expected true or false"));
            false
        }
    }
}

fn size(
    table: &toml::Table,
    key: &str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
    issues: &mut Vec<ConfigIssue>,
) -> u64 {
    match table.get(key) {
        None => default,
        Some(toml::Value::Integer(n)) if u64::try_from(*n).is_ok_and(|n| range.contains(&n)) => {
            u64::try_from(*n).unwrap_or(default)
        }
        Some(_) => {
            issues.push(ConfigIssue::new(
                key,
                format!(
                    "expected a number of bytes from {} to {}",
                    range.start(),
                    range.end()
                ),
            ));
            default
        }
    }
}

/// An optional secret setting (see [`bridge_config::secret_setting`]).
fn secret(
    table: &toml::Table,
    key: &str,
    resolve: bool,
    issues: &mut Vec<ConfigIssue>,
) -> Option<String> {
    bridge_config::secret_setting(table, key, resolve).unwrap_or_else(|diagnostic| {
        issues.push(ConfigIssue::new(key, diagnostic.to_string()));
        None
    })
}

/// What is wrong with a `ghost_name` template, if anything: it must show the name, and knows
/// no placeholder besides `{name}` and `{network}`.
fn name_template_problem(template: &str) -> Option<String> {
    if !template.contains("{name}") {
        return Some(format!(
            "must contain {{name}}, e.g. \"{{name}} ({{network}})\"; got \"{template}\""
        ));
    }
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let after = &rest[start..];
        let end = after.find('}').map_or(after.len(), |i| i + 1);
        let placeholder = &after[..end];
        if !matches!(placeholder, "{name}" | "{network}") {
            return Some(format!(
                "unknown placeholder {placeholder} (known: {{name}}, {{network}})"
            ));
        }
        rest = &after[end..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        text.parse().expect("test TOML parses")
    }

    #[test]
    fn an_appservice_section_parses() {
        let settings = parse(
            &table(
                r#"mode = "appservice"
                   homeserver = "http://127.0.0.1:8008"
                   server_name = "localhost"
                   registration = "reg.yaml"
                   listen = "127.0.0.1:9000""#,
            ),
            false,
        )
        .expect("valid");
        let Mode::Appservice {
            ghost_prefix,
            listen,
            portals,
            ..
        } = settings.mode
        else {
            panic!("appservice mode expected");
        };
        assert_eq!(ghost_prefix, "_bridge_");
        assert_eq!(listen.map(|a| a.port()), Some(9000));
        assert!(!portals);
    }

    #[test]
    fn a_ghost_name_template_shows_the_name_and_knows_its_placeholders() {
        assert_eq!(name_template_problem("{name}"), None);
        assert_eq!(name_template_problem("{name} ({network})"), None);
        assert!(name_template_problem("{network}").is_some_and(|p| p.contains("{name}")));
        assert!(name_template_problem("{name} {nick}").is_some_and(|p| p.contains("{nick}")));
        assert!(name_template_problem("{name} {oops").is_some_and(|p| p.contains("{oops")));
        let section = |extra: &str| {
            table(&format!(
                "mode = \"appservice\"\nhomeserver = \"http://h\"\nserver_name = \"x\"\n\
                 registration = \"r.yaml\"\n{extra}"
            ))
        };
        let ok = parse(&section("ghost_name = \"{name} [{network}]\""), false).expect("valid");
        assert!(
            matches!(ok.mode, Mode::Appservice { ghost_name, .. } if ghost_name == "{name} [{network}]")
        );
        let issues = parse(&section("ghost_name = \"Bob\""), false).expect_err("no {name}");
        assert_eq!(issues[0].path, "ghost_name");
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let issues = parse(
            &table(
                r#"mode = "appservice"
                   homeserver = "matrix.example.org"
                   listen = "nowhere"
                   ghost_prefix = "Bad Prefix"
                   password = "x"
                   colour = "red""#,
            ),
            false,
        )
        .expect_err("invalid");
        let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
        for key in [
            "colour",
            "server_name",
            "registration",
            "listen",
            "ghost_prefix",
            "password",
            "homeserver",
        ] {
            assert!(paths.contains(&key), "{key} not reported: {issues:?}");
        }
    }

    #[test]
    fn a_relay_section_needs_one_way_to_log_in() {
        let ok = parse(
            &table(
                r#"mode = "relay"
                   homeserver = "https://matrix.example.org"
                   user = "@relay:example.org"
                   access_token = { env = "TOKEN" }"#,
            ),
            false,
        )
        .expect("valid");
        assert!(matches!(
            ok.mode,
            Mode::Relay {
                login: RelayLogin::AccessToken(_),
                ..
            }
        ));
        let both = parse(
            &table(
                r#"mode = "relay"
                   homeserver = "https://matrix.example.org"
                   user = "relay"
                   password = "a"
                   access_token = "b""#,
            ),
            false,
        )
        .expect_err("invalid");
        let paths: Vec<&str> = both.iter().map(|i| i.path.as_str()).collect();
        assert!(paths.contains(&"user") && paths.contains(&"access_token"));
    }
}
