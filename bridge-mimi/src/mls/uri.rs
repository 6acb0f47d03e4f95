//! MIMI URIs for the users, clients and rooms the bridge hosts (draft-ietf-mimi-protocol-06 §3,
//! Table 1; draft-mahy-mimi-identity): `mimi://DOMAIN/u/<user>`, `mimi://DOMAIN/d/<user>/bridge`
//! and `mimi://DOMAIN/r/<room>`.
//!
//! A bridged user's native ID (a JID, an MXID) becomes one path segment, percent-encoded per
//! RFC 3986 §2.1: every octet outside the unreserved set (`ALPHA DIGIT - . _ ~`) is written
//! `%XX` with upper-case hex digits, so `@`, `:`, `/` and non-ASCII text cannot split or
//! confuse the path. Parsing decodes and accepts lower-case hex too.

use std::fmt;

/// The device name of every puppet client: the one client the bridge runs per user.
pub const PUPPET_DEVICE: &str = "bridge";

/// A URI could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UriError {
    /// Not `mimi://DOMAIN/<kind>/…` with the expected kind and number of segments.
    #[error("not a MIMI {expected} URI: {uri:?}")]
    Shape {
        /// What was expected (`user`, `client`, `room`).
        expected: &'static str,
        /// The input.
        uri: String,
    },
    /// A bad percent-encoding or an encoded value that is not UTF-8.
    #[error("bad percent-encoding in {0:?}")]
    Encoding(String),
}

/// Percent-encodes `text` as one path segment (RFC 3986 §2.1, §2.3).
pub fn encode_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
    }
    out
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Decodes one percent-encoded path segment.
pub fn decode_segment(segment: &str) -> Result<String, UriError> {
    let bad = || UriError::Encoding(segment.to_owned());
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or_else(bad)?;
                let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
                i += 3;
            }
            b'/' | b'?' | b'#' => return Err(bad()),
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

/// Splits `mimi://DOMAIN/KIND/rest` into the domain and the segments after the kind.
fn split<'a>(
    uri: &'a str,
    kind: &str,
    expected: &'static str,
) -> Result<(&'a str, Vec<&'a str>), UriError> {
    let shape = || UriError::Shape {
        expected,
        uri: uri.to_owned(),
    };
    let rest = uri.strip_prefix("mimi://").ok_or_else(shape)?;
    let mut parts = rest.split('/');
    let domain = parts.next().filter(|d| !d.is_empty()).ok_or_else(shape)?;
    if parts.next() != Some(kind) {
        return Err(shape());
    }
    let segments: Vec<&str> = parts.collect();
    if segments.iter().any(|s| s.is_empty()) {
        return Err(shape());
    }
    Ok((domain, segments))
}

/// A MIMI user: `mimi://DOMAIN/u/<user>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserUri {
    domain: String,
    user: String,
}

impl UserUri {
    /// The user `user` (a native ID, not encoded) of provider `domain`.
    pub fn new(domain: &str, user: &str) -> Self {
        Self {
            domain: domain.to_owned(),
            user: user.to_owned(),
        }
    }

    /// Parses `mimi://DOMAIN/u/<user>`.
    pub fn parse(uri: &str) -> Result<Self, UriError> {
        match split(uri, "u", "user")? {
            (domain, segments) if segments.len() == 1 => {
                Ok(Self::new(domain, &decode_segment(segments[0])?))
            }
            _ => Err(UriError::Shape {
                expected: "user",
                uri: uri.to_owned(),
            }),
        }
    }

    /// The provider's domain.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The user's native ID, decoded.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// This user's puppet client.
    pub fn puppet_client(&self) -> ClientUri {
        ClientUri {
            user: self.clone(),
            device: PUPPET_DEVICE.to_owned(),
        }
    }
}

impl fmt::Display for UserUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mimi://{}/u/{}", self.domain, encode_segment(&self.user))
    }
}

/// A MIMI client of a user: `mimi://DOMAIN/d/<user>/<device>` (the bridge's puppets use the
/// device [`PUPPET_DEVICE`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientUri {
    user: UserUri,
    device: String,
}

impl ClientUri {
    /// Parses `mimi://DOMAIN/d/<user>/<device>`.
    pub fn parse(uri: &str) -> Result<Self, UriError> {
        match split(uri, "d", "client")? {
            (domain, segments) if segments.len() == 2 => Ok(Self {
                user: UserUri::new(domain, &decode_segment(segments[0])?),
                device: decode_segment(segments[1])?,
            }),
            _ => Err(UriError::Shape {
                expected: "client",
                uri: uri.to_owned(),
            }),
        }
    }

    /// The user this client belongs to.
    pub fn user(&self) -> &UserUri {
        &self.user
    }

    /// The device name.
    pub fn device(&self) -> &str {
        &self.device
    }
}

impl fmt::Display for ClientUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "mimi://{}/d/{}/{}",
            self.user.domain,
            encode_segment(&self.user.user),
            encode_segment(&self.device)
        )
    }
}

/// A MIMI room: `mimi://DOMAIN/r/<room>`. Its MLS group ID is the URI's bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomUri {
    domain: String,
    room: String,
}

impl RoomUri {
    /// The room `room` (not encoded) hosted by `domain`.
    pub fn new(domain: &str, room: &str) -> Self {
        Self {
            domain: domain.to_owned(),
            room: room.to_owned(),
        }
    }

    /// Parses `mimi://DOMAIN/r/<room>`.
    pub fn parse(uri: &str) -> Result<Self, UriError> {
        match split(uri, "r", "room")? {
            (domain, segments) if segments.len() == 1 => {
                Ok(Self::new(domain, &decode_segment(segments[0])?))
            }
            _ => Err(UriError::Shape {
                expected: "room",
                uri: uri.to_owned(),
            }),
        }
    }

    /// The hub's domain.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The room's local name, decoded.
    pub fn room(&self) -> &str {
        &self.room
    }

    /// The URI of the room's MLS group, `mimi://DOMAIN/g/<room>` (draft-ietf-mimi-protocol-06
    /// §3, Table 1, §3.1): its bytes are the MLS group ID.
    pub fn group_uri(&self) -> String {
        format!("mimi://{}/g/{}", self.domain, encode_segment(&self.room))
    }

    /// The room of the MLS group `mimi://DOMAIN/g/<room>`.
    pub fn from_group_uri(uri: &str) -> Result<Self, UriError> {
        match split(uri, "g", "group")? {
            (domain, segments) if segments.len() == 1 => {
                Ok(Self::new(domain, &decode_segment(segments[0])?))
            }
            _ => Err(UriError::Shape {
                expected: "group",
                uri: uri.to_owned(),
            }),
        }
    }
}

impl fmt::Display for RoomUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mimi://{}/r/{}", self.domain, encode_segment(&self.room))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_ids_round_trip_through_uris() {
        for native in [
            "alice@xmpp.example/phone",
            "@bob:matrix.org",
            "zoë 100%",
            "a~b-c.d_e",
        ] {
            let user = UserUri::new("bridge.example", native);
            let text = user.to_string();
            assert_eq!(text.matches('/').count(), 4, "{text}");
            assert_eq!(UserUri::parse(&text), Ok(user.clone()));
            let client = user.puppet_client();
            assert_eq!(ClientUri::parse(&client.to_string()), Ok(client.clone()));
            assert_eq!(client.user(), &user);
        }
        assert_eq!(
            UserUri::new("b.example", "@bob:m.org").to_string(),
            "mimi://b.example/u/%40bob%3Am.org"
        );
        assert_eq!(
            UserUri::new("b.example", "bob").puppet_client().to_string(),
            "mimi://b.example/d/bob/bridge"
        );
        let room = RoomUri::new("a.example", "club house");
        assert_eq!(room.to_string(), "mimi://a.example/r/club%20house");
        assert_eq!(room.group_uri(), "mimi://a.example/g/club%20house");
        assert_eq!(RoomUri::from_group_uri(&room.group_uri()), Ok(room.clone()));
        assert_eq!(RoomUri::parse(&room.to_string()), Ok(room));
    }

    #[test]
    fn malformed_uris_are_refused() {
        for bad in [
            "https://a.example/u/x",
            "mimi:///u/x",
            "mimi://a.example/r/x",
            "mimi://a.example/u/",
            "mimi://a.example/u/x/y",
            "mimi://a.example/u/%4",
            "mimi://a.example/u/%zz",
            "mimi://a.example/u/%FF",
        ] {
            assert!(UserUri::parse(bad).is_err(), "{bad}");
        }
        assert!(ClientUri::parse("mimi://a.example/d/x").is_err());
        assert_eq!(decode_segment("%2f%2F"), Ok("//".to_owned()));
    }
}
