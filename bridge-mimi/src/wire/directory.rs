//! The endpoint directory (protocol-06 §5.1): `GET /.well-known/mimi-protocol-directory` returns
//! JSON mapping each endpoint to an URL template.
//!
//! Templates are RFC 6570 level 1: `{var}` is replaced by the value with every character outside
//! the unreserved set percent-encoded, so a room `mimi://a.example/r/clubhouse` becomes one path
//! segment `mimi%3A%2F%2Fa.example%2Fr%2Fclubhouse`. Our own server publishes the paths of the
//! §5 headings at the root of its origin ([`Directory::for_origin`]).

use serde::{Deserialize, Serialize};

use super::common::IdentifierUri;

/// The path of the directory (protocol-06 §5.1; not registered with IANA).
pub const WELL_KNOWN_PATH: &str = "/.well-known/mimi-protocol-directory";

/// Why a peer's directory is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DirectoryError {
    /// Not the JSON object we expect (a required endpoint missing, a value not a string...).
    #[error("invalid directory JSON: {0}")]
    Json(String),
    /// A template is not an `https:` URL.
    #[error("the {endpoint} template is not an https URL: {template}")]
    NotHttps {
        /// The endpoint (`keyMaterial`, `notify`, ...).
        endpoint: &'static str,
        /// The template.
        template: String,
    },
    /// A template lacks the variable its endpoint needs.
    #[error("the {endpoint} template has no {{{variable}}}: {template}")]
    MissingVariable {
        /// The endpoint.
        endpoint: &'static str,
        /// The variable (`roomId`, `targetUser`, `downloadUrl`).
        variable: &'static str,
        /// The template.
        template: String,
    },
}

/// A provider's endpoint directory (protocol-06 §5.1). The endpoints we do not implement yet
/// (consent, identifier query, abuse reports) are kept when a peer publishes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Directory {
    /// `keyMaterial`, with `{targetUser}`.
    pub key_material: String,
    /// `update`, with `{roomId}`.
    pub update: String,
    /// `notify`, with `{roomId}`.
    pub notify: String,
    /// `submitMessage`, with `{roomId}`.
    pub submit_message: String,
    /// `groupInfo`, with `{roomId}`.
    pub group_info: String,
    /// `proxyDownload`, with `{downloadUrl}` (a hub must offer it; a follower may not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_download: Option<String>,
    /// `requestConsent`, not used yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_consent: Option<String>,
    /// `updateConsent`, not used yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_consent: Option<String>,
    /// `identifierQuery`, not used yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identifier_query: Option<String>,
    /// `reportAbuse`, not used yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_abuse: Option<String>,
}

/// The paths our server serves, relative to its origin.
pub mod paths {
    /// `POST`, §5.2.
    pub const KEY_MATERIAL: &str = "/keyMaterial/{targetUser}";
    /// `POST`, §5.3.
    pub const UPDATE: &str = "/update/{roomId}";
    /// `POST`, §5.5.
    pub const NOTIFY: &str = "/notify/{roomId}";
    /// `POST`, §5.4 (not `/submit`, as §3.4 writes it).
    pub const SUBMIT_MESSAGE: &str = "/submitMessage/{roomId}";
    /// `POST`, §5.6.
    pub const GROUP_INFO: &str = "/groupInfo/{roomId}";
    /// `GET`, §5.10.2.
    pub const PROXY_DOWNLOAD: &str = "/proxyDownload/{downloadUrl}";
}

impl Directory {
    /// Our directory for a server reachable at `origin` (`https://mimi.example.com`, no trailing
    /// slash): the §5 paths at its root.
    pub fn for_origin(origin: &str) -> Self {
        let origin = origin.trim_end_matches('/');
        let url = |path: &str| format!("{origin}{path}");
        Self {
            key_material: url(paths::KEY_MATERIAL),
            update: url(paths::UPDATE),
            notify: url(paths::NOTIFY),
            submit_message: url(paths::SUBMIT_MESSAGE),
            group_info: url(paths::GROUP_INFO),
            proxy_download: Some(url(paths::PROXY_DOWNLOAD)),
            request_consent: None,
            update_consent: None,
            identifier_query: None,
            report_abuse: None,
        }
    }

    /// Parses and checks a peer's directory: every template we use must be an `https:` URL with
    /// its variable.
    pub fn parse(json: &[u8]) -> Result<Self, DirectoryError> {
        let directory: Directory = serde_json::from_slice(json)
            .map_err(|error| DirectoryError::Json(error.to_string()))?;
        directory.check()?;
        Ok(directory)
    }

    /// Checks the templates we use.
    pub fn check(&self) -> Result<(), DirectoryError> {
        let mut templates = vec![
            ("keyMaterial", "targetUser", &self.key_material),
            ("update", "roomId", &self.update),
            ("notify", "roomId", &self.notify),
            ("submitMessage", "roomId", &self.submit_message),
            ("groupInfo", "roomId", &self.group_info),
        ];
        if let Some(template) = &self.proxy_download {
            templates.push(("proxyDownload", "downloadUrl", template));
        }
        for (endpoint, variable, template) in templates {
            if !template.starts_with("https://") {
                return Err(DirectoryError::NotHttps {
                    endpoint,
                    template: template.clone(),
                });
            }
            if !template.contains(&format!("{{{variable}}}")) {
                return Err(DirectoryError::MissingVariable {
                    endpoint,
                    variable,
                    template: template.clone(),
                });
            }
        }
        Ok(())
    }

    /// The keyMaterial URL for `target_user`.
    pub fn key_material_url(&self, target_user: &IdentifierUri) -> String {
        expand(&self.key_material, "targetUser", target_user.as_str())
    }

    /// The update URL for `room`.
    pub fn update_url(&self, room: &IdentifierUri) -> String {
        expand(&self.update, "roomId", room.as_str())
    }

    /// The notify URL for `room`.
    pub fn notify_url(&self, room: &IdentifierUri) -> String {
        expand(&self.notify, "roomId", room.as_str())
    }

    /// The submitMessage URL for `room`.
    pub fn submit_message_url(&self, room: &IdentifierUri) -> String {
        expand(&self.submit_message, "roomId", room.as_str())
    }

    /// The groupInfo URL for `room`.
    pub fn group_info_url(&self, room: &IdentifierUri) -> String {
        expand(&self.group_info, "roomId", room.as_str())
    }

    /// The proxyDownload URL for `download_url`, if the peer offers the endpoint.
    pub fn proxy_download_url(&self, download_url: &str) -> Option<String> {
        self.proxy_download
            .as_ref()
            .map(|template| expand(template, "downloadUrl", download_url))
    }
}

/// RFC 6570 simple string expansion of `{variable}` in `template`.
pub fn expand(template: &str, variable: &str, value: &str) -> String {
    template.replace(&format!("{{{variable}}}"), &percent_encode(value))
}

/// Percent-encodes every byte outside RFC 3986's unreserved set.
pub fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ours_round_trips_and_expands_a_room_into_one_segment() {
        let ours = Directory::for_origin("https://mimi.a.example:8443/");
        let json = serde_json::to_vec(&ours).expect("serialise");
        let parsed = Directory::parse(&json).expect("parse");
        assert_eq!(parsed, ours);
        let room = IdentifierUri::from("mimi://a.example/r/club house");
        assert_eq!(
            parsed.notify_url(&room),
            "https://mimi.a.example:8443/notify/mimi%3A%2F%2Fa.example%2Fr%2Fclub%20house"
        );
        assert_eq!(
            parsed.key_material_url(&IdentifierUri::from("mimi://b.example/u/bob")),
            "https://mimi.a.example:8443/keyMaterial/mimi%3A%2F%2Fb.example%2Fu%2Fbob"
        );
    }

    #[test]
    fn parses_the_drafts_example_and_refuses_bad_templates() {
        // protocol-06 §5.1, with its missing colon after "proxyDownload" put back.
        let draft = br#"{
          "keyMaterial": "https://mimi.example.com/v1/keyMaterial/{targetUser}",
          "update": "https://mimi.example.com/v1/update{roomId}",
          "notify": "https://mimi.example.com/v1/notify/{roomId}",
          "submitMessage": "https://mimi.example.com/v1/submitMessage/{roomId}",
          "groupInfo": "https://mimi.example.com/v1/groupInfo/{roomId}",
          "requestConsent": "https://mimi.example.com/v1/requestConsent/{targetUser}",
          "updateConsent": "https://mimi.example.com/v1/updateConsent/{requesterUser}",
          "identifierQuery": "https://mimi.example.com/v1/identifierQuery/{domain}",
          "reportAbuse": "https://mimi.example.com/v1/reportAbuse/{roomId}",
          "proxyDownload": "https://mimi.example.com/v1/proxyDownload/{downloadUrl}"
        }"#;
        let directory = Directory::parse(draft).expect("the draft's example");
        assert_eq!(
            directory.update_url(&IdentifierUri::from("mimi://a.example/r/x")),
            "https://mimi.example.com/v1/updatemimi%3A%2F%2Fa.example%2Fr%2Fx"
        );
        let no_var = String::from_utf8_lossy(draft).replace("notify/{roomId}", "notify/");
        assert!(matches!(
            Directory::parse(no_var.as_bytes()),
            Err(DirectoryError::MissingVariable {
                endpoint: "notify",
                ..
            })
        ));
        let http = String::from_utf8_lossy(draft)
            .replace("https://mimi.example.com/v1/groupInfo", "http://x");
        assert!(matches!(
            Directory::parse(http.as_bytes()),
            Err(DirectoryError::NotHttps { .. })
        ));
        assert!(matches!(
            Directory::parse(br#"{"keyMaterial": "https://x/{targetUser}"}"#),
            Err(DirectoryError::Json(_))
        ));
    }
}
