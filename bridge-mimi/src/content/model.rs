//! The typed message container of draft-ietf-mimi-content-08 §4.

use std::collections::BTreeMap;
use std::fmt;

use super::cbor::{Reader, Writer};
use super::id::{MessageId, Salt, hex};
use super::{ContentError, MAX_EXTENSION_DEPTH};

/// One MIMI content message (§4.1, `mimiContent`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MimiContent {
    /// The per-message random salt.
    pub salt: Salt,
    /// The message this one edits, deletes or (for a reaction) takes back: the ID of its first
    /// version.
    pub replaces: Option<MessageId>,
    /// The topic (thread) this message belongs to; empty for none. Opaque bytes, often the
    /// message ID of the topic's first message.
    pub topic_id: Vec<u8>,
    /// When the message should be deleted, if ever.
    pub expires: Option<Expiration>,
    /// The message this one answers or reacts to.
    pub in_reply_to: Option<MessageId>,
    /// The `mimiExtensions` map.
    pub extensions: Extensions,
    /// The body.
    pub body: NestedPart,
}

/// When a message expires (§4.1, `Expiration`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Expiration {
    /// `true`: `time` is seconds after the receiver reads the message; `false`: seconds since
    /// the Unix epoch.
    pub relative: bool,
    /// Seconds, relative or absolute.
    pub time: u32,
}

/// The `mimiExtensions` map (§4.3): the sender and room URIs, and every other extension kept
/// as it came, so that a message re-encodes byte for byte.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extensions {
    /// Key 1, `senderUri`: the sender's user URI.
    pub sender_uri: Option<String>,
    /// Key 2, `roomUri`: the room's URI.
    pub room_uri: Option<String>,
    /// Every other extension. Keys 1 and 2 must not be here (encoding refuses them).
    pub other: BTreeMap<ExtensionKey, RawCbor>,
}

/// The key of an extension: an integer within ±(2^53 - 1) (positive ones registered with IANA,
/// negative ones private) or a private text key of 1 to 255 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ExtensionKey {
    /// An integer key.
    Int(i64),
    /// A text key.
    Text(String),
}

/// The largest magnitude of an integer extension key (2^53 - 1, exact as a double).
pub const MAX_INT_KEY: i64 = (1 << 53) - 1;

impl ExtensionKey {
    /// Key 1, the sender URI.
    pub const SENDER_URI: ExtensionKey = ExtensionKey::Int(1);
    /// Key 2, the room URI.
    pub const ROOM_URI: ExtensionKey = ExtensionKey::Int(2);

    /// Checks the key against the draft's data model (§6.2).
    pub fn validate(&self) -> Result<(), ContentError> {
        match self {
            ExtensionKey::Int(n) if n.unsigned_abs() > MAX_INT_KEY as u64 => Err(
                ContentError::BadExtensionKey("an integer key beyond ±(2^53 - 1)"),
            ),
            ExtensionKey::Text(t) if t.is_empty() || t.len() > 255 => Err(
                ContentError::BadExtensionKey("a text key not between 1 and 255 bytes"),
            ),
            _ => Ok(()),
        }
    }

    /// The key's CBOR encoding, by which the map is sorted.
    pub(crate) fn encoded(&self) -> Vec<u8> {
        let mut w = Writer::default();
        match self {
            ExtensionKey::Int(n) => w.int(*n),
            ExtensionKey::Text(t) => w.text(t),
        }
        w.out
    }
}

impl fmt::Display for ExtensionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExtensionKey::Int(n) => write!(f, "{n}"),
            ExtensionKey::Text(t) => write!(f, "{t:?}"),
        }
    }
}

/// One CBOR data item kept in its encoded form: the value of an extension this crate does not
/// interpret. Always well-formed, deterministic and no deeper than the draft allows.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RawCbor(Vec<u8>);

impl RawCbor {
    /// Checks that `bytes` are exactly one data item that may be an extension's value
    /// (deterministic, nested no deeper than [`MAX_EXTENSION_DEPTH`] counting the extensions
    /// map, map keys integers, text or bytes).
    pub fn new(bytes: Vec<u8>) -> Result<Self, ContentError> {
        let mut r = Reader::new(&bytes);
        r.skip_value(2, MAX_EXTENSION_DEPTH)?;
        if r.remaining() > 0 {
            return Err(ContentError::TrailingBytes(r.remaining()));
        }
        Ok(RawCbor(bytes))
    }

    /// A text string value.
    pub fn text(text: &str) -> Self {
        let mut w = Writer::default();
        w.text(text);
        RawCbor(w.out)
    }

    /// An unsigned integer value.
    pub fn uint(value: u64) -> Self {
        let mut w = Writer::default();
        w.uint(value);
        RawCbor(w.out)
    }

    /// Reads a value the caller has already checked with [`Reader::skip_value`].
    pub(crate) fn from_checked(bytes: &[u8]) -> Self {
        RawCbor(bytes.to_vec())
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for RawCbor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RawCbor({})", hex(&self.0))
    }
}

/// A body part (§4.4, `NestedPart`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NestedPart {
    /// What the part is for.
    pub disposition: Disposition,
    /// An empty string or a comma-separated list of RFC 5646 language tags.
    pub language: String,
    /// The part's content.
    pub part: Part,
}

impl NestedPart {
    /// A part with no language.
    pub fn new(disposition: Disposition, part: Part) -> Self {
        NestedPart {
            disposition,
            language: String::new(),
            part,
        }
    }

    /// This part and every part inside it, depth first: the draft's implied part index is the
    /// position in this list (§4.4).
    pub fn parts(&self) -> Vec<&NestedPart> {
        let mut out = Vec::new();
        let mut stack = vec![self];
        while let Some(part) = stack.pop() {
            out.push(part);
            if let Part::Multi { parts, .. } = &part.part {
                stack.extend(parts.iter().rev());
            }
        }
        out
    }
}

/// A disposition (§4.4): a number from the draft's registry, unknown ones kept (receivers treat
/// them as [`RENDER`](Self::RENDER)).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Disposition(pub u8);

impl Disposition {
    /// 0: unspecified.
    pub const UNSPECIFIED: Disposition = Disposition(0);
    /// 1: render according to local policy.
    pub const RENDER: Disposition = Disposition(1);
    /// 2: a reaction to another message.
    pub const REACTION: Disposition = Disposition(2);
    /// 3: profile information.
    pub const PROFILE: Disposition = Disposition(3);
    /// 4: render inline.
    pub const INLINE: Disposition = Disposition(4);
    /// 5: an icon.
    pub const ICON: Disposition = Disposition(5);
    /// 6: an attachment to download.
    pub const ATTACHMENT: Disposition = Disposition(6);
    /// 7: a multimedia session or a URI to join one.
    pub const SESSION: Disposition = Disposition(7);
    /// 8: a sender-made preview.
    pub const PREVIEW: Disposition = Disposition(8);

    /// The draft's name for it, `None` for a value it does not define.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "unspecified",
            1 => "render",
            2 => "reaction",
            3 => "profile",
            4 => "inline",
            5 => "icon",
            6 => "attachment",
            7 => "session",
            8 => "preview",
            _ => return None,
        })
    }
}

impl fmt::Debug for Disposition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "Disposition::{name}"),
            None => write!(f, "Disposition({})", self.0),
        }
    }
}

/// The cardinality and content of a part (§4.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// 0: no content (a deletion or an unlike).
    Null,
    /// 1: inline content.
    Single {
        /// Its media type with parameters, e.g. `text/markdown;variant=GFM-MIMI`.
        content_type: String,
        /// The bytes.
        content: Vec<u8>,
    },
    /// 2: content behind a URL.
    External(ExternalPart),
    /// 3: several parts.
    Multi {
        /// How they relate.
        semantics: PartSemantics,
        /// At least two parts.
        parts: Vec<NestedPart>,
    },
}

/// How the parts of a [`Part::Multi`] relate (§4.4, `partSemantics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PartSemantics {
    /// 0: the receiver picks one (like `multipart/alternative`).
    ChooseOne,
    /// 1: all together or none (like `multipart/related`).
    SingleUnit,
    /// 2: each as far as possible (like `multipart/mixed`).
    ProcessAll,
}

impl PartSemantics {
    /// The number on the wire.
    pub fn code(self) -> u64 {
        match self {
            PartSemantics::ChooseOne => 0,
            PartSemantics::SingleUnit => 1,
            PartSemantics::ProcessAll => 2,
        }
    }

    /// From the number on the wire.
    pub fn from_code(code: u64) -> Result<Self, ContentError> {
        match code {
            0 => Ok(PartSemantics::ChooseOne),
            1 => Ok(PartSemantics::SingleUnit),
            2 => Ok(PartSemantics::ProcessAll),
            _ => Err(ContentError::UnknownPartSemantics(code)),
        }
    }
}

/// Content behind a URL, usually encrypted (§4.5).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExternalPart {
    /// Its media type, or empty (a service URL).
    pub content_type: String,
    /// Where to fetch it.
    pub url: String,
    /// When the URL stops working, seconds since the Unix epoch; 0: never.
    pub expires: u32,
    /// Its size in bytes; 0: not given.
    pub size: u64,
    /// The IANA AEAD algorithm it is encrypted with ([`AES_128_GCM`](Self::AES_128_GCM), the
    /// one every client must implement); 0: not encrypted.
    pub enc_alg: u16,
    /// The AEAD key.
    pub key: Vec<u8>,
    /// The AEAD nonce.
    pub nonce: Vec<u8>,
    /// The AEAD additional authenticated data (empty by default).
    pub aad: Vec<u8>,
    /// The IANA Named Information hash algorithm of `content_hash` (1: SHA-256); 0: none.
    pub hash_alg: u8,
    /// The hash of the bytes at `url`.
    pub content_hash: Vec<u8>,
    /// A description, or empty.
    pub description: String,
    /// A suggested file name, or empty.
    pub filename: String,
}

impl ExternalPart {
    /// AEAD algorithm 1 (RFC 5116): AES-128-GCM.
    pub const AES_128_GCM: u16 = 1;
}
