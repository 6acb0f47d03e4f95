//! Pure translation between XMPP `<message/>` stanzas and the neutral event model: no I/O, no
//! state.
//!
//! Stanzas are [`Element`](xmpp_parsers::minidom::Element)s in `jabber:client` (see
//! [`crate::wire`] for the component namespace). Elements are walked directly rather than through
//! xmpp-parsers' typed structs: most of the XEPs below have no type there, and a strict typed
//! parse would reject a whole stanza for one odd attribute.
//!
//! * Inbound, [`parse_message`] reads a stanza into a [`Parsed`]: its addressing and IDs, one
//!   main [`Content`], and the independent chat state and displayed marker.
//! * Outbound, the `build_*` functions ([`build_message`], [`build_correction`],
//!   [`build_reactions`], [`build_retraction`], [`build_moderation`], [`build_chat_state`],
//!   [`build_displayed`], [`build_subject`], [`build_custom`]) produce stanzas from neutral
//!   content. Every build parses back to the same neutral content, up to what XMPP cannot say
//!   (a notice comes back as text; formatting comes back as the same tree).
//!
//! # Protocols
//!
//! | XEP | namespace | use |
//! |---|---|---|
//! | [0066] Out of Band Data | `jabber:x:oob` | attachments, one `<x><url/></x>` each |
//! | [0071] XHTML-IM | `http://jabber.org/protocol/xhtml-im` | formatted text, in and out |
//! | [0085] Chat States | `http://jabber.org/protocol/chatstates` | typing |
//! | [0203] Delayed Delivery | `urn:xmpp:delay` | original timestamps |
//! | [0308] Last Message Correction 1.2 | `urn:xmpp:message-correct:0` | edits |
//! | [0333] Chat Markers 1.0 | `urn:xmpp:chat-markers:0` | `<displayed/>` read markers |
//! | [0334] Message Processing Hints | `urn:xmpp:hints` | `store`/`no-store` out, ignored in |
//! | [0335] JSON Containers | `urn:xmpp:json:0` | custom events between bridges |
//! | [0359] Unique and Stable Stanza IDs | `urn:xmpp:sid:0` | origin-id, stanza-id |
//! | [0393] Message Styling | (in the body) | formatted text without XHTML-IM |
//! | [0421] Occupant Identifiers | `urn:xmpp:occupant-id:0` | stable MUC sender |
//! | [0424] Message Retraction 0.4 | `urn:xmpp:message-retract:1` (and `:0` in) | deletions |
//! | [0425] Moderated Message Retraction 0.3 | `urn:xmpp:message-moderate:1` (and `:0` in) | moderation |
//! | [0428] Fallback Indication | `urn:xmpp:fallback:0` | reply quotes, retraction text |
//! | [0444] Message Reactions | `urn:xmpp:reactions:0` | reactions, the sender's full set |
//! | [0461] Message Replies | `urn:xmpp:reply:0` | replies |
//!
//! Fallback ranges count Unicode code points, per [XEP-0426](https://xmpp.org/extensions/xep-0426.html).
//!
//! [0066]: https://xmpp.org/extensions/xep-0066.html
//! [0071]: https://xmpp.org/extensions/xep-0071.html
//! [0085]: https://xmpp.org/extensions/xep-0085.html
//! [0203]: https://xmpp.org/extensions/xep-0203.html
//! [0308]: https://xmpp.org/extensions/xep-0308.html
//! [0333]: https://xmpp.org/extensions/xep-0333.html
//! [0334]: https://xmpp.org/extensions/xep-0334.html
//! [0335]: https://xmpp.org/extensions/xep-0335.html
//! [0359]: https://xmpp.org/extensions/xep-0359.html
//! [0393]: https://xmpp.org/extensions/xep-0393.html
//! [0421]: https://xmpp.org/extensions/xep-0421.html
//! [0424]: https://xmpp.org/extensions/xep-0424.html
//! [0425]: https://xmpp.org/extensions/xep-0425.html
//! [0428]: https://xmpp.org/extensions/xep-0428.html
//! [0444]: https://xmpp.org/extensions/xep-0444.html
//! [0461]: https://xmpp.org/extensions/xep-0461.html

mod inbound;
mod outbound;

pub use inbound::parse_message;
pub use outbound::{
    Envelope, OutReply, RETRACTION_FALLBACK, build_chat_state, build_correction, build_custom,
    build_displayed, build_message, build_moderation, build_moderation_v0, build_reactions,
    build_retraction, build_subject,
};

use bridge_core::MessageContent;

/// Namespaces of the stanzas and payloads this module reads or writes.
pub mod ns {
    /// Client stanzas (RFC 6120).
    pub const CLIENT: &str = "jabber:client";
    /// XEP-0359 origin-id and stanza-id.
    pub const SID: &str = "urn:xmpp:sid:0";
    /// XEP-0421 occupant-id.
    pub const OCCUPANT_ID: &str = "urn:xmpp:occupant-id:0";
    /// XEP-0203 delayed delivery.
    pub const DELAY: &str = "urn:xmpp:delay";
    /// XEP-0085 chat states.
    pub const CHATSTATES: &str = "http://jabber.org/protocol/chatstates";
    /// XEP-0333 chat markers.
    pub const MARKERS: &str = "urn:xmpp:chat-markers:0";
    /// XEP-0334 message processing hints.
    pub const HINTS: &str = "urn:xmpp:hints";
    /// XEP-0066 out of band data (in a message).
    pub const OOB: &str = "jabber:x:oob";
    /// XEP-0071 XHTML-IM wrapper.
    pub const XHTML_IM: &str = "http://jabber.org/protocol/xhtml-im";
    /// XHTML, the namespace of the XEP-0071 `<body/>` and its content.
    pub const XHTML: &str = "http://www.w3.org/1999/xhtml";
    /// XEP-0308 last message correction.
    pub const CORRECT: &str = "urn:xmpp:message-correct:0";
    /// XEP-0444 reactions.
    pub const REACTIONS: &str = "urn:xmpp:reactions:0";
    /// XEP-0461 replies.
    pub const REPLY: &str = "urn:xmpp:reply:0";
    /// XEP-0428 fallback indication.
    pub const FALLBACK: &str = "urn:xmpp:fallback:0";
    /// XEP-0424 message retraction (current).
    pub const RETRACT: &str = "urn:xmpp:message-retract:1";
    /// XEP-0424 message retraction before 0.4 (inside a XEP-0422 `<apply-to/>`).
    pub const RETRACT_0: &str = "urn:xmpp:message-retract:0";
    /// XEP-0425 moderated retraction (current).
    pub const MODERATE: &str = "urn:xmpp:message-moderate:1";
    /// XEP-0425 moderated retraction before 0.3 (inside a XEP-0422 `<apply-to/>`).
    pub const MODERATE_0: &str = "urn:xmpp:message-moderate:0";
    /// XEP-0422 message fastening, the wrapper of the older retraction forms.
    pub const FASTEN: &str = "urn:xmpp:fasten:0";
    /// XEP-0335 JSON containers.
    pub const JSON: &str = "urn:xmpp:json:0";
    /// XEP-0393 message styling (the `<unstyled/>` hint).
    pub const STYLING: &str = "urn:xmpp:styling:0";
    /// XEP-0380 explicit message encryption.
    pub const EME: &str = "urn:xmpp:eme:0";
}

/// End-to-end encryption payloads, by namespace and element, with the method's name: OMEMO
/// (XEP-0384: the `eu.siacs.conversations.axolotl` form most clients send, and the namespaced
/// versions), OpenPGP for XMPP (XEP-0373) and legacy OpenPGP (XEP-0027).
pub const ENCRYPTED: &[(&str, &str, &str)] = &[
    ("eu.siacs.conversations.axolotl", "encrypted", "OMEMO"),
    ("urn:xmpp:omemo:1", "encrypted", "OMEMO"),
    ("urn:xmpp:omemo:2", "encrypted", "OMEMO"),
    ("urn:xmpp:openpgp:0", "openpgp", "OpenPGP for XMPP"),
    ("jabber:x:encrypted", "x", "legacy OpenPGP"),
];

/// Namespaces of payloads that never make a message worth bridging on their own: IDs, hints,
/// receipts and markers, envelopes, and the parts of the kinds handled explicitly. A message
/// whose only payloads are in these is [`Content::None`]; any other payload makes it
/// [`Content::Custom`].
const KNOWN: &[&str] = &[
    ns::SID,
    ns::OCCUPANT_ID,
    ns::DELAY,
    "jabber:x:delay",
    ns::CHATSTATES,
    ns::MARKERS,
    ns::HINTS,
    "urn:xmpp:receipts",
    ns::OOB,
    ns::XHTML_IM,
    ns::CORRECT,
    ns::REACTIONS,
    ns::REPLY,
    ns::FALLBACK,
    ns::RETRACT,
    ns::RETRACT_0,
    ns::MODERATE,
    ns::MODERATE_0,
    ns::STYLING,
    "urn:xmpp:reference:0",
    "urn:xmpp:sfs:0",
    "urn:xmpp:spoiler:0",
    "urn:xmpp:eme:0",
    "http://jabber.org/protocol/muc#user",
    "http://jabber.org/protocol/nick",
    "http://jabber.org/protocol/address",
    "jabber:x:event",
    "urn:xmpp:carbons:2",
    "urn:xmpp:forward:0",
    "urn:xmpp:mam:2",
];

/// Most attachments read from one message; more is [`ParseError::TooLarge`].
pub const MAX_ATTACHMENTS: usize = 16;
/// Most distinct reactions read from one `<reactions/>`; more is [`ParseError::TooLarge`].
pub const MAX_REACTIONS: usize = 64;
/// Longest single reaction kept, in bytes; longer ones are dropped.
pub const MAX_REACTION_BYTES: usize = 128;

/// Size limits of [`parse_message`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest body, subject or attachment URL, in bytes of UTF-8.
    pub max_body_bytes: usize,
    /// Largest serialised XHTML-IM body, custom payload or JSON container, in bytes. An XHTML-IM
    /// body over it is ignored (the plain body is used); a custom payload over it is
    /// [`ParseError::TooLarge`].
    pub max_markup_bytes: usize,
}

impl Default for Limits {
    /// 64 KiB of body, 256 KiB of markup.
    fn default() -> Self {
        Limits {
            max_body_bytes: 64 * 1024,
            max_markup_bytes: 256 * 1024,
        }
    }
}

/// The `type` of a message (RFC 6121 §5.2.2). A missing or unknown type is `Normal`, as the RFC
/// requires.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// One-to-one chat.
    Chat,
    /// A multi-user chat message.
    Groupchat,
    /// An alert, not meant to be answered.
    Headline,
    /// A standalone message (the default).
    #[default]
    Normal,
    /// An error bounced back about a message we sent.
    Error,
}

impl MessageType {
    /// Reads the `type` attribute.
    pub fn from_attr(value: Option<&str>) -> Self {
        match value {
            Some("chat") => Self::Chat,
            Some("groupchat") => Self::Groupchat,
            Some("headline") => Self::Headline,
            Some("error") => Self::Error,
            _ => Self::Normal,
        }
    }

    /// The value of the `type` attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Groupchat => "groupchat",
            Self::Headline => "headline",
            Self::Normal => "normal",
            Self::Error => "error",
        }
    }
}

/// A XEP-0085 chat state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChatState {
    /// Paying attention to the conversation.
    Active,
    /// Typing.
    Composing,
    /// Was typing, stopped for a moment.
    Paused,
    /// Not paying attention.
    Inactive,
    /// Left the conversation.
    Gone,
}

impl ChatState {
    /// The state named by an element of the chat states namespace.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "active" => Self::Active,
            "composing" => Self::Composing,
            "paused" => Self::Paused,
            "inactive" => Self::Inactive,
            "gone" => Self::Gone,
            _ => return None,
        })
    }

    /// The element name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Composing => "composing",
            Self::Paused => "paused",
            Self::Inactive => "inactive",
            Self::Gone => "gone",
        }
    }

    /// Whether the user is typing (only while composing).
    pub fn is_typing(self) -> bool {
        self == Self::Composing
    }
}

/// A XEP-0359 `<stanza-id/>`: the ID an archive or room (`by`) gave the stanza.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StanzaId {
    /// The ID.
    pub id: String,
    /// The JID of the entity that assigned it (the room's bare JID in a MUC).
    pub by: String,
}

/// A XEP-0461 reply reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The author of the message replied to (a full JID in a MUC), when given.
    pub to: Option<String>,
    /// The ID of the message replied to: its stanza-id in a MUC, else its origin-id or `id`.
    pub id: String,
}

/// The main content of a message.
#[derive(Clone, Debug, PartialEq)]
pub enum Content {
    /// Nothing to bridge: receipts, hints, chat states or markers only, an error bounce, a
    /// retraction tombstone.
    None,
    /// A message (body and/or attachments).
    Message {
        /// What it says, fallbacks removed.
        content: MessageContent,
        /// The message it answers (XEP-0461).
        reply: Option<Reply>,
        /// The `<thread/>` it belongs to.
        thread: Option<String>,
    },
    /// A XEP-0308 correction of an earlier message.
    Correction {
        /// The `id` of the message replaced.
        replace_id: String,
        /// The new content.
        new: MessageContent,
    },
    /// The sender's complete, current set of XEP-0444 reactions to a message (empty: all
    /// removed).
    Reactions {
        /// The message reacted to.
        to_id: String,
        /// The reactions, deduplicated, in the order given.
        keys: Vec<String>,
    },
    /// The sender retracts one of their messages (XEP-0424).
    Retraction {
        /// The message retracted.
        id: String,
    },
    /// A room retracts a message on a moderator's behalf (XEP-0425).
    Moderation {
        /// The stanza-id (assigned by the room) of the message retracted.
        id: String,
        /// The moderator, when the room says.
        by: Option<String>,
        /// Why, when given.
        reason: Option<String>,
    },
    /// A MUC subject (topic); empty when the topic was cleared.
    Subject(String),
    /// An end-to-end encrypted message (or correction), which the bridge cannot read: its
    /// `<body>` is only the sender's "your client does not support this" fallback.
    Encrypted {
        /// The method, for people: "OMEMO", "OpenPGP for XMPP", "legacy OpenPGP", or the XEP-0380
        /// `name` (else `namespace`) the message gives.
        method: String,
    },
    /// A payload this module does not understand, carried as `xmpp:{namespace}#{name}` with
    /// `{"xml": "<serialised element/>"}`, or the type and content of a XEP-0335 container
    /// written by [`build_custom`].
    Custom {
        /// The event type.
        event_type: String,
        /// The payload.
        content: serde_json::Value,
    },
}

/// A message stanza, read.
#[derive(Clone, Debug, PartialEq)]
pub struct Parsed {
    /// The `id` attribute.
    pub id: Option<String>,
    /// The `from` attribute.
    pub from: Option<String>,
    /// The `to` attribute.
    pub to: Option<String>,
    /// The `type` attribute.
    pub msg_type: MessageType,
    /// The XEP-0359 origin-id the sender chose.
    pub origin_id: Option<String>,
    /// Every XEP-0359 stanza-id, with the entity that assigned it. Only the one `by` the room
    /// (or the own server, for chats) is trustworthy, see [`Parsed::stanza_id_by`].
    pub stanza_ids: Vec<StanzaId>,
    /// The XEP-0421 occupant-id (set by the room).
    pub occupant_id: Option<String>,
    /// The XEP-0203 delay stamp, in ms since the Unix epoch.
    pub delay_ms: Option<u64>,
    /// What the message carries.
    pub content: Content,
    /// The XEP-0085 chat state, independent of the content.
    pub chat_state: Option<ChatState>,
    /// The `id` of a XEP-0333 `<displayed/>` marker.
    pub displayed: Option<String>,
}

impl Parsed {
    /// Whether the sender is typing, when the message carries a chat state.
    pub fn typing(&self) -> Option<bool> {
        self.chat_state.map(ChatState::is_typing)
    }

    /// The stanza-id assigned by `by` (e.g. the room's bare JID).
    pub fn stanza_id_by(&self, by: &str) -> Option<&str> {
        self.stanza_ids
            .iter()
            .find(|s| s.by == by)
            .map(|s| s.id.as_str())
    }
}

/// Why a stanza could not be read. The caller logs it and skips the stanza.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The element is not a `<message/>` in `jabber:client`.
    #[error("not a jabber:client message")]
    NotAMessage,
    /// A payload this module handles lacks a required attribute.
    #[error("<{element}/> without '{attribute}'")]
    MissingAttribute {
        /// The element.
        element: &'static str,
        /// The attribute.
        attribute: &'static str,
    },
    /// A part of the message is over its limit.
    #[error("{what} over the limit of {limit}")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// The limit it exceeded.
        limit: usize,
    },
}

#[cfg(test)]
mod tests;
