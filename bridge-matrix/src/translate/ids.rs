//! Ghost user IDs and portal aliases: how the bridge names the Matrix users that stand for
//! people on other networks, and the Matrix rooms that stand for their rooms.
//!
//! A ghost of user `alice@example.org` of adapter `xmpp`, with prefix `_bridge_` on homeserver
//! `localhost`, is `@_bridge_xmpp_alice=40example.org:localhost`; a portal of room
//! `lobby@conference.localhost` is `#_bridge_xmpp_lobby=40conference.localhost:localhost`.
//!
//! # Encoding
//!
//! The localpart is `{prefix}{adapter}_{user}`:
//!
//! * `{user}` is [`escape_localpart`]: the reversible "mapping from other character sets" of
//!   the Matrix specification's appendix (`A` → `_a`, `_` → `__`, `=` and any byte outside the
//!   user ID grammar → `=xx`).
//! * `{adapter}` uses a stricter form of the same scheme, [`escape_adapter`]: `a-z`, `0-9` and
//!   `-` are kept and every other byte, `_` included, becomes `=xx`. Adapter IDs are
//!   `[a-z0-9_-]{1,32}` (the configuration checks it), so `_` is the only character that
//!   changes (`my_xmpp` → `my=5fxmpp`), and the first `_` after the prefix always ends the
//!   adapter ID: parsing never has to guess.
//!
//! Both encodings are canonical: the inverse accepts only what the forward direction produces,
//! so a user ID names at most one `(adapter, user)` and [`Naming::ghost_of`] of
//! [`Naming::ghost_user_id`] gives back exactly its input.
//!
//! Matrix limits user IDs and aliases to 255 bytes; a long remote ID can give a longer ghost
//! ID, which the homeserver refuses (see [`MAX_ID_BYTES`]).

use bridge_core::{AdapterId, RemoteRoomId, RemoteUserId};

/// The longest user ID or room alias Matrix accepts, in bytes (sigil and server name included).
pub const MAX_ID_BYTES: usize = 255;

/// How this bridge names its Matrix ghosts and portal aliases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Naming {
    /// The start of every ghost localpart and portal alias, e.g. `_bridge_` (configured; it must
    /// match the namespaces of the appservice registration).
    pub prefix: String,
    /// The homeserver's name, e.g. `localhost` or `example.org:8448`.
    pub server_name: String,
}

impl Naming {
    /// A naming with this prefix and server name.
    pub fn new(prefix: impl Into<String>, server_name: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            server_name: server_name.into(),
        }
    }

    /// `@{prefix}{adapter}_{escape(user)}:{server_name}`, e.g. adapter `xmpp`, user
    /// `alice@example.org` → `@_bridge_xmpp_alice=40example.org:localhost`.
    pub fn ghost_user_id(&self, adapter: &AdapterId, user: &RemoteUserId) -> String {
        self.id('@', adapter.as_str(), user.as_str())
    }

    /// The adapter and native user of a ghost: `Some` exactly for the IDs
    /// [`ghost_user_id`](Self::ghost_user_id) produces, `None` for anything else (another
    /// user, a malformed or non-canonical escape).
    pub fn ghost_of(&self, user_id: &str) -> Option<(AdapterId, RemoteUserId)> {
        let (adapter, user) = self.parse('@', user_id)?;
        Some((AdapterId::new(adapter), RemoteUserId::new(user)))
    }

    /// Whether a user ID is in the ghost namespace: starts with `@{prefix}` and ends with
    /// `:{server_name}`, like the registration's regular expression. True for malformed ghost
    /// IDs too, so that nothing in the namespace is ever taken for a real Matrix user.
    pub fn is_ours(&self, user_id: &str) -> bool {
        self.local_part('@', user_id).is_some()
    }

    /// `#{prefix}{adapter}_{escape(room)}:{server_name}`, the alias of the portal room of a
    /// remote room, e.g. `#_bridge_xmpp_lobby=40conference.localhost:localhost`.
    pub fn portal_alias(&self, adapter: &AdapterId, room: &RemoteRoomId) -> String {
        self.id('#', adapter.as_str(), room.as_str())
    }

    /// The adapter and remote room of a portal alias; the inverse of
    /// [`portal_alias`](Self::portal_alias), `None` for any other alias.
    pub fn portal_of(&self, alias: &str) -> Option<(AdapterId, RemoteRoomId)> {
        let (adapter, room) = self.parse('#', alias)?;
        Some((AdapterId::new(adapter), RemoteRoomId::new(room)))
    }

    /// Whether an alias is in the portal namespace (`#{prefix}…:{server_name}`), malformed or
    /// not.
    pub fn is_our_alias(&self, alias: &str) -> bool {
        self.local_part('#', alias).is_some()
    }

    /// The regular expression of the ghost namespace for the appservice registration's
    /// `namespaces.users`: `^@{prefix}.*:{server_name}$`, the prefix and server name escaped.
    /// It matches exactly the IDs [`is_ours`](Self::is_ours) accepts (anchored at both ends:
    /// Synapse only anchors a namespace at the start).
    pub fn user_regex(&self) -> String {
        self.regex('@')
    }

    /// The regular expression of the portal alias namespace, for `namespaces.aliases`:
    /// `^#{prefix}.*:{server_name}$`, like [`user_regex`](Self::user_regex).
    pub fn alias_regex(&self) -> String {
        self.regex('#')
    }

    fn regex(&self, sigil: char) -> String {
        format!(
            "^{sigil}{}.*:{}$",
            regex_escape(&self.prefix),
            regex_escape(&self.server_name)
        )
    }

    fn id(&self, sigil: char, adapter: &str, native: &str) -> String {
        format!(
            "{sigil}{}{}_{}:{}",
            self.prefix,
            escape_adapter(adapter),
            escape_localpart(native),
            self.server_name
        )
    }

    /// What is between `{sigil}{prefix}` and `:{server_name}`, when both are there.
    fn local_part<'a>(&self, sigil: char, id: &'a str) -> Option<&'a str> {
        id.strip_prefix(sigil)?
            .strip_prefix(self.prefix.as_str())?
            .strip_suffix(self.server_name.as_str())?
            .strip_suffix(':')
    }

    fn parse(&self, sigil: char, id: &str) -> Option<(String, String)> {
        let local = self.local_part(sigil, id)?;
        let (adapter, native) = local.split_once('_')?;
        let adapter = unescape_adapter(adapter)?;
        let native = unescape_localpart(native)?;
        // Canonical forms only: the ID must be exactly the one we would build.
        (self.id(sigil, &adapter, &native) == id).then_some((adapter, native))
    }
}

/// `s` as a literal in a regular expression: the metacharacters common to the dialects of
/// homeservers (Python `re`, Go `regexp`, Rust `regex`) get a backslash, nothing else does
/// (some dialects refuse needless escapes).
pub(crate) fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Whether a byte is kept as is by [`escape_localpart`]: the user ID grammar (`a-z 0-9 . _ = -
/// / +`) minus `_` and `=` (the escape characters) and `+` (only allowed since Matrix 1.8; older
/// homeservers refuse it, so it is escaped).
fn kept(byte: u8) -> bool {
    byte.is_ascii_lowercase() || byte.is_ascii_digit() || matches!(byte, b'.' | b'-' | b'/')
}

/// Encodes any string as a Matrix localpart, reversibly (the specification's "mapping from
/// other character sets"): `a-z 0-9 . - /` are kept; `A-Z` become `_` and the lowercase
/// letter; `_` becomes `__`; every other byte of the UTF-8 encoding (`=` and `+` included)
/// becomes `=` and two lowercase hex digits. `"Alice_B@x.org"` → `"_alice___b=40x.org"`.
pub fn escape_localpart(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for byte in s.bytes() {
        if kept(byte) {
            out.push(char::from(byte));
        } else if byte.is_ascii_uppercase() {
            out.push('_');
            out.push(char::from(byte.to_ascii_lowercase()));
        } else if byte == b'_' {
            out.push_str("__");
        } else {
            push_hex(&mut out, byte);
        }
    }
    out
}

/// The inverse of [`escape_localpart`]: `None` unless `s` is exactly what it produces for some
/// string (so `escape_localpart(unescape_localpart(s)?) == s`). Refused: characters outside
/// `a-z 0-9 . - / _ =`, a `_` not followed by `_` or a lowercase letter, a `=` not followed by
/// two lowercase hex digits, an `=xx` for a byte that has a shorter form, bytes that are not
/// UTF-8.
pub fn unescape_localpart(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        match byte {
            b'_' => {
                let next = *bytes.get(i + 1)?;
                match next {
                    b'_' => out.push(b'_'),
                    b'a'..=b'z' => out.push(next.to_ascii_uppercase()),
                    _ => return None,
                }
                i += 2;
            }
            b'=' => {
                let decoded = hex_at(bytes, i + 1)?;
                if kept(decoded) || decoded.is_ascii_uppercase() || decoded == b'_' {
                    return None;
                }
                out.push(decoded);
                i += 3;
            }
            _ if kept(byte) => {
                out.push(byte);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

/// Encodes an adapter ID for the start of a ghost localpart: `a-z 0-9 -` are kept, every other
/// byte (`_` in particular) becomes `=xx`, so the result never contains `_`.
pub fn escape_adapter(adapter: &str) -> String {
    let mut out = String::with_capacity(adapter.len());
    for byte in adapter.bytes() {
        if adapter_kept(byte) {
            out.push(char::from(byte));
        } else {
            push_hex(&mut out, byte);
        }
    }
    out
}

/// The inverse of [`escape_adapter`]; `None` for an empty ID or anything it does not produce.
pub fn unescape_adapter(s: &str) -> Option<String> {
    if s.is_empty() {
        return None;
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        if byte == b'=' {
            let decoded = hex_at(bytes, i + 1).filter(|b| !adapter_kept(*b))?;
            out.push(decoded);
            i += 3;
        } else if adapter_kept(byte) {
            out.push(byte);
            i += 1;
        } else {
            return None;
        }
    }
    String::from_utf8(out).ok()
}

fn adapter_kept(byte: u8) -> bool {
    byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-'
}

fn push_hex(out: &mut String, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('=');
    out.push(char::from(HEX[usize::from(byte >> 4)]));
    out.push(char::from(HEX[usize::from(byte & 0x0f)]));
}

/// The byte written as two lowercase hex digits at `at`.
fn hex_at(bytes: &[u8], at: usize) -> Option<u8> {
    let digit = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    };
    let high = digit(*bytes.get(at)?)?;
    let low = digit(*bytes.get(at + 1)?)?;
    Some(high << 4 | low)
}

/// The localpart of a Matrix user ID (`@alice:example.org` → `alice`), when it looks like one.
pub fn localpart(user_id: &str) -> Option<&str> {
    let (local, server) = user_id.strip_prefix('@')?.split_once(':')?;
    (!local.is_empty() && !server.is_empty()).then_some(local)
}

/// Whether a string has the shape of a Matrix user ID: `@`, a non-empty localpart without `:`,
/// `:`, a non-empty server name without whitespace. Historical localparts (any printable
/// ASCII) are accepted, as the specification requires of clients.
pub fn is_user_id(s: &str) -> bool {
    localpart(s).is_some() && s.len() <= MAX_ID_BYTES && s.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naming() -> Naming {
        Naming::new("_bridge_", "localhost")
    }

    /// Strings that exercise every branch of the encoding.
    const AWKWARD: &[&str] = &[
        "",
        "alice",
        "Alice",
        "ALICE",
        "alice@example.org",
        "lobby@conference.localhost",
        "a_b",
        "_",
        "__",
        "_a",
        "=",
        "=3d",
        "a=b",
        "@",
        "@alice:example.org",
        "/",
        "a/b/c",
        "with space",
        " leading and trailing ",
        "tab\there",
        "new\nline",
        "nul\0byte",
        "emoji 👍🏽",
        "日本語",
        "é",
        "+plus+",
        "#hash",
        "%25",
        "a:b",
        "-.-",
        "ÄÖÜß",
        "z\u{7f}",
        "mixed_Case=Thing@Host/Res",
    ];

    #[test]
    fn spec_examples() {
        // The appendix's examples: `A` → `_a`, `_` → `__`, `#` → `=23`, `á` → `=c3=a1`.
        assert_eq!(escape_localpart("A"), "_a");
        assert_eq!(escape_localpart("_"), "__");
        assert_eq!(escape_localpart("#"), "=23");
        assert_eq!(escape_localpart("á"), "=c3=a1");
        assert_eq!(escape_localpart("="), "=3d");
        assert_eq!(escape_localpart("+"), "=2b");
        assert_eq!(escape_localpart("a.b-c/d"), "a.b-c/d");
        assert_eq!(escape_localpart("Alice_B@x.org"), "_alice___b=40x.org");
    }

    #[test]
    fn escape_round_trips_and_stays_in_the_grammar() {
        for s in AWKWARD {
            let escaped = escape_localpart(s);
            assert!(
                escaped
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._=-/".contains(&b)),
                "{s:?} → {escaped:?}"
            );
            assert_eq!(unescape_localpart(&escaped).as_deref(), Some(*s), "{s:?}");
        }
        // Every code point of a few ranges, between and around ASCII.
        for c in (0u32..0x300)
            .chain(0x1f600..0x1f650)
            .filter_map(char::from_u32)
        {
            let s = format!("{c}x{c}");
            assert_eq!(unescape_localpart(&escape_localpart(&s)), Some(s));
        }
    }

    #[test]
    fn unescape_refuses_what_escape_never_produces() {
        for bad in [
            "A", "a:b", "a b", "_", "_1", "_=", "=", "=4", "=4g", "=4A", "=61", "=5f", "=2e",
            "=41", "=c3", "=ff", "a+b", "@", "é",
        ] {
            assert_eq!(unescape_localpart(bad), None, "{bad:?}");
        }
        assert_eq!(unescape_localpart("").as_deref(), Some(""));
        assert_eq!(unescape_localpart("=2b").as_deref(), Some("+"));
    }

    #[test]
    fn adapter_escape() {
        assert_eq!(escape_adapter("xmpp"), "xmpp");
        assert_eq!(escape_adapter("chat-a"), "chat-a");
        assert_eq!(escape_adapter("my_xmpp"), "my=5fxmpp");
        assert_eq!(unescape_adapter("my=5fxmpp").as_deref(), Some("my_xmpp"));
        for bad in ["", "a_b", "=61", "=2d", "A", "x=5"] {
            assert_eq!(unescape_adapter(bad), None, "{bad:?}");
        }
        for s in AWKWARD.iter().filter(|s| !s.is_empty()) {
            assert_eq!(unescape_adapter(&escape_adapter(s)).as_deref(), Some(*s));
            assert!(!escape_adapter(s).contains('_'));
        }
    }

    #[test]
    fn ghost_ids() {
        let n = naming();
        let xmpp = AdapterId::new("xmpp");
        let alice = RemoteUserId::new("alice@example.org");
        let id = n.ghost_user_id(&xmpp, &alice);
        assert_eq!(id, "@_bridge_xmpp_alice=40example.org:localhost");
        assert_eq!(n.ghost_of(&id), Some((xmpp.clone(), alice)));
        assert!(n.is_ours(&id));
        assert_eq!(
            n.portal_alias(&xmpp, &RemoteRoomId::new("lobby@conference.localhost")),
            "#_bridge_xmpp_lobby=40conference.localhost:localhost"
        );
    }

    #[test]
    fn ghost_round_trips_over_awkward_names() {
        let namings = [
            naming(),
            Naming::new("_bridge_", "example.org:8448"),
            Naming::new("bridge", "localhost"),
            Naming::new("", "localhost"),
        ];
        let adapters = ["xmpp", "my_xmpp", "a-b", "_", "x_", "_x", "0"];
        for n in &namings {
            for adapter in adapters {
                let adapter = AdapterId::new(adapter);
                for user in AWKWARD {
                    let user = RemoteUserId::new(*user);
                    let id = n.ghost_user_id(&adapter, &user);
                    assert!(n.is_ours(&id), "{id}");
                    assert_eq!(
                        n.ghost_of(&id),
                        Some((adapter.clone(), user.clone())),
                        "{id}"
                    );
                    let room = RemoteRoomId::new(user.as_str());
                    let alias = n.portal_alias(&adapter, &room);
                    assert!(n.is_our_alias(&alias));
                    assert_eq!(n.portal_of(&alias), Some((adapter.clone(), room)));
                    // The sigils are not interchangeable.
                    assert_eq!(n.ghost_of(&alias), None);
                    assert_eq!(n.portal_of(&id), None);
                }
            }
        }
    }

    #[test]
    fn look_alikes() {
        let n = naming();
        // Real users, other servers, other prefixes.
        for other in [
            "@alice:localhost",
            "@_bridge_xmpp_alice:example.org",
            "@_bridge_xmpp_alice:localhost.evil",
            "@_bridge_xmpp_alice:notlocalhost",
            "@_bridgexmpp_alice:localhost",
            "@_BRIDGE_xmpp_alice:localhost",
            "_bridge_xmpp_alice:localhost",
            "#_bridge_xmpp_alice:localhost",
            "@_bridge_xmpp_alice",
            "",
            "@",
        ] {
            assert!(!n.is_ours(other), "{other}");
            assert_eq!(n.ghost_of(other), None, "{other}");
        }
        // In the namespace but not a valid ghost.
        for malformed in [
            "@_bridge_:localhost",
            "@_bridge_xmpp:localhost",
            "@_bridge__alice:localhost",
            "@_bridge_xmpp_Alice:localhost",
            "@_bridge_xmpp_a=zz:localhost",
            "@_bridge_xmpp_a=61:localhost",
            "@_bridge_xmpp_a=4:localhost",
            "@_bridge_xmpp_a_:localhost",
            "@_bridge_xmpp_a:b:localhost",
            "@_bridge_xm=70p_a:localhost",
            "@_bridge_XMPP_a:localhost",
            "@_bridge_xmpp_=ff=fe:localhost",
        ] {
            assert!(n.is_ours(malformed), "{malformed}");
            assert_eq!(n.ghost_of(malformed), None, "{malformed}");
        }
    }

    #[test]
    fn namespace_regexes() {
        assert_eq!(naming().user_regex(), "^@_bridge_.*:localhost$");
        assert_eq!(naming().alias_regex(), "^#_bridge_.*:localhost$");
        let odd = Naming::new("b.r+", "example.org:8448");
        assert_eq!(odd.user_regex(), "^@b\\.r\\+.*:example\\.org:8448$");
    }

    #[test]
    fn user_id_shapes() {
        assert_eq!(localpart("@alice:example.org"), Some("alice"));
        assert_eq!(localpart("@alice:example.org:8448"), Some("alice"));
        assert_eq!(localpart("alice:example.org"), None);
        assert_eq!(localpart("@:example.org"), None);
        assert_eq!(localpart("@alice:"), None);
        assert!(is_user_id("@Alice.Old:example.org"));
        assert!(!is_user_id("@a b:example.org"));
        assert!(!is_user_id("alice@example.org"));
        assert!(!is_user_id(&format!("@{}:x", "a".repeat(300))));
    }
}
