//! The appservice registration: the file the admin gives the homeserver, and the bridge reads
//! for its tokens. `bridge generate-registration` writes it with [`generate`].

use std::path::Path;

use rand::Rng as _;
use rand::distr::Alphanumeric;
use ruma::api::appservice::{Namespace, Namespaces, Registration, RegistrationInit};

use crate::translate::ids::{Naming, regex_escape};

/// What a registration is generated from.
#[derive(Debug, Clone)]
pub struct RegistrationParams<'a> {
    /// The appservice's ID (the adapter ID is a good one).
    pub id: &'a str,
    /// Where the homeserver pushes transactions, e.g. `http://127.0.0.1:9000`.
    pub url: &'a str,
    /// The domain of the homeserver's user IDs.
    pub server_name: &'a str,
    /// The start of every ghost's localpart and portal alias.
    pub ghost_prefix: &'a str,
}

/// A new registration with fresh random tokens: exclusive namespaces for the ghosts
/// (`^@{prefix}.*:{server}$`) and portal aliases (`^#{prefix}.*:{server}$`), written by the same
/// [`Naming`] that names the ghosts and portals, the bridge bot `{prefix}bot`, no rate limits,
/// ephemeral events (typing, receipts) pushed.
pub fn generate(params: &RegistrationParams<'_>) -> Registration {
    let naming = Naming::new(params.ghost_prefix, params.server_name);
    let mut namespaces = Namespaces::new();
    namespaces.users = vec![Namespace::new(true, naming.user_regex())];
    namespaces.aliases = vec![Namespace::new(true, naming.alias_regex())];
    let mut registration: Registration = RegistrationInit {
        id: params.id.to_owned(),
        url: Some(params.url.to_owned()),
        as_token: token(),
        hs_token: token(),
        sender_localpart: bot_localpart(params.ghost_prefix),
        namespaces,
        rate_limited: Some(false),
        protocols: None,
    }
    .into();
    registration.receive_ephemeral = true;
    registration
}

/// A new registration for the adapter section `table` (appservice mode) with ID `id`; the
/// homeserver will push to `url`, or to `http://{listen}` when `url` is None. Returns where the
/// section says the registration lives, and the YAML to write there.
pub fn for_section(
    id: &str,
    table: &toml::Table,
    url: Option<&str>,
) -> Result<(std::path::PathBuf, String), String> {
    let settings = crate::settings::parse(table, false).map_err(|issues| {
        issues
            .iter()
            .map(|i| format!("{}: {}", i.path, i.message))
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    let crate::settings::Mode::Appservice {
        registration,
        listen,
        server_name,
        ghost_prefix,
        ..
    } = &settings.mode
    else {
        return Err(format!(
            "adapter {id} is in relay mode; only mode = \"appservice\" has a registration"
        ));
    };
    let url = match (url, listen) {
        (Some(url), _) => url.to_owned(),
        (None, Some(listen)) => format!("http://{listen}"),
        (None, None) => {
            return Err(format!(
                "adapter {id} has no `listen` address: give the URL the homeserver should push to (--url)"
            ));
        }
    };
    let generated = generate(&RegistrationParams {
        id,
        url: &url,
        server_name,
        ghost_prefix,
    });
    Ok((registration.clone(), to_yaml(&generated)?))
}

/// The bridge bot's localpart for a ghost prefix: `_bridge_` → `_bridge_bot`.
pub fn bot_localpart(ghost_prefix: &str) -> String {
    format!("{ghost_prefix}bot")
}

/// The registration as YAML, with the key Synapse reads for ephemeral events before it knew
/// the stable one (MSC2409) added, and a comment saying what the file is.
pub fn to_yaml(registration: &Registration) -> Result<String, String> {
    let yaml = serde_saphyr::to_string(registration).map_err(|e| e.to_string())?;
    let legacy = if registration.receive_ephemeral {
        "de.sorunome.msc2409.push_ephemeral: true\n"
    } else {
        ""
    };
    Ok(format!(
        "# Matrix application service registration of the bridge: give this file to the\n\
         # homeserver (Synapse: app_service_config_files) and keep it secret.\n{yaml}{legacy}"
    ))
}

/// Reads a registration file.
pub fn load(path: &Path) -> Result<Registration, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the registration {}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Parses a registration.
pub fn parse(text: &str) -> Result<Registration, String> {
    let registration: Registration =
        serde_saphyr::from_str(text).map_err(|e| format!("not a valid registration: {e}"))?;
    if registration.as_token.is_empty() || registration.hs_token.is_empty() {
        return Err("as_token and hs_token must not be empty".into());
    }
    if registration.as_token == registration.hs_token {
        return Err("as_token and hs_token must differ".into());
    }
    Ok(registration)
}

/// Whether the registration's user namespace gives the appservice the ghosts it will make:
/// an exclusive user regex that starts with `@{prefix}` (after an optional `^`; the homeserver
/// matches the regex; this checks the form [`generate`] writes, so a hand-written file is
/// warned about, not refused).
pub fn covers_ghosts(registration: &Registration, ghost_prefix: &str) -> bool {
    let escaped = format!("@{}", regex_escape(ghost_prefix));
    let plain = format!("@{ghost_prefix}");
    registration.namespaces.users.iter().any(|n| {
        let regex = n.regex.strip_prefix('^').unwrap_or(&n.regex);
        n.exclusive && (regex.starts_with(&escaped) || regex.starts_with(&plain))
    })
}

/// 64 random alphanumeric characters.
fn token() -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(64)
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> RegistrationParams<'static> {
        RegistrationParams {
            id: "matrix",
            url: "http://127.0.0.1:9000",
            server_name: "example.org",
            ghost_prefix: "_bridge_",
        }
    }

    #[test]
    fn a_generated_registration_round_trips_through_yaml() {
        let generated = generate(&params());
        let yaml = to_yaml(&generated).expect("serialises");
        assert!(
            yaml.contains("de.sorunome.msc2409.push_ephemeral: true"),
            "{yaml}"
        );
        let back = parse(&yaml).expect("parses");
        assert_eq!(back.as_token, generated.as_token);
        assert_eq!(back.hs_token, generated.hs_token);
        assert_eq!(back.sender_localpart, "_bridge_bot");
        assert_eq!(
            back.namespaces.users[0].regex,
            r"^@_bridge_.*:example\.org$"
        );
        assert!(back.namespaces.users[0].exclusive);
        assert_eq!(
            back.namespaces.aliases[0].regex,
            r"^#_bridge_.*:example\.org$"
        );
        assert_eq!(back.rate_limited, Some(false));
        assert!(back.receive_ephemeral);
        assert!(covers_ghosts(&back, "_bridge_"));
        assert!(!covers_ghosts(&back, "_other_"));
        assert_ne!(generate(&params()).as_token, generated.as_token);
    }

    #[test]
    fn a_hand_written_registration_is_read() {
        let text = "id: bridge-test\nurl: \"http://127.0.0.1:25900\"\nas_token: a\nhs_token: h\n\
                    sender_localpart: _bridge_bot\nrate_limited: false\nnamespaces:\n  users:\n    \
                    - exclusive: true\n      regex: \"@_bridge_.*:localhost\"\n  aliases: []\n  rooms: []\n";
        let registration = parse(text).expect("parses");
        assert_eq!(registration.url.as_deref(), Some("http://127.0.0.1:25900"));
        assert!(covers_ghosts(&registration, "_bridge_"));
        assert!(parse("id: x\n").is_err());
        assert!(parse(&text.replace("hs_token: h", "hs_token: a")).is_err());
    }

    /// The namespaces cover every ghost and portal the bridge names, and nothing of anyone
    /// else (checked with a real regex engine; Synapse's `re.match` anchors at the start, the
    /// regexes anchor both ends themselves).
    #[test]
    fn the_namespaces_cover_every_ghost_and_portal() {
        use bridge_core::{AdapterId, RemoteRoomId, RemoteUserId};
        for (prefix, server) in [
            ("_bridge_", "example.org"),
            ("_bridge_", "localhost:8448"),
            ("x.y-", "my-server.example"),
        ] {
            let generated = generate(&RegistrationParams {
                id: "matrix",
                url: "http://127.0.0.1:9000",
                server_name: server,
                ghost_prefix: prefix,
            });
            let users = regex::Regex::new(&generated.namespaces.users[0].regex).expect("regex");
            let aliases = regex::Regex::new(&generated.namespaces.aliases[0].regex).expect("regex");
            let naming = Naming::new(prefix, server);
            for adapter in ["xmpp", "my_xmpp", "a-b_c", "x"] {
                for user in [
                    "alice@example.org",
                    "Alice_B@x.org",
                    "日本語",
                    "=+:@/",
                    "room@conference.localhost/Nick Name",
                    "",
                ] {
                    let ghost =
                        naming.ghost_user_id(&AdapterId::new(adapter), &RemoteUserId::new(user));
                    assert!(users.is_match(&ghost), "{ghost} outside {}", users.as_str());
                    let alias =
                        naming.portal_alias(&AdapterId::new(adapter), &RemoteRoomId::new(user));
                    assert!(
                        aliases.is_match(&alias),
                        "{alias} outside {}",
                        aliases.as_str()
                    );
                }
            }
            let bot = format!("@{}:{server}", generated.sender_localpart);
            assert!(users.is_match(&bot), "the bot {bot} is in the namespace");
            for other in [
                format!("@alice:{server}"),
                format!("@{prefix}x_alice:elsewhere.org"),
                format!("@{prefix}x_alice:{server}.evil.org"),
                format!("@not{prefix}x:{server}"),
                format!("#{prefix}x_lobby:{server}"),
            ] {
                assert!(!users.is_match(&other), "{other} inside {}", users.as_str());
            }
            assert!(!aliases.is_match(&format!("#lobby:{server}")));
        }
    }
}
