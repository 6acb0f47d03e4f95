//! Pure translation between Matrix events (JSON as the homeserver sends and takes it) and the
//! neutral event model: no I/O, no state.
//!
//! * [`ids`]: the names of ghosts (`@_bridge_xmpp_alice=40example.org:localhost`) and portal
//!   aliases, and the specification's reversible localpart escaping.
//! * [`inbound`]: a timeline event ([`inbound::timeline_event`]) or an ephemeral event
//!   ([`inbound::ephemeral_event`]) → neutral.
//! * [`outbound`]: a neutral [`OutboundEvent`](bridge_core::OutboundEvent) → the
//!   [`Action`](outbound::Action)s to perform on the homeserver ([`outbound::actions`]).
//!
//! Events are read as [`serde_json::Value`] with small accessors rather than through ruma's
//! typed events: a strict typed parse rejects a whole event for one odd field, while here a
//! field that does not matter is ignored when malformed, and one that does makes
//! [`TranslateError::Malformed`] for that event only. Nothing panics on any input.
//!
//! # Specification
//!
//! Matrix Client-Server API v1.16: `m.room.message` (msgtypes, `org.matrix.custom.html`, media
//! `info` and `filename` captions), rich replies (`m.in_reply_to`; reply fallbacks are read
//! and cut, never written: they are deprecated since v1.13), `m.replace` edits with
//! `m.new_content`, `m.thread` with `is_falling_back`, `m.annotation` reactions,
//! `m.room.redaction` (`redacts` at top level before room version 11, in the content since),
//! `m.mentions`, `m.room.member` with `unsigned.prev_content`, `m.typing` and `m.receipt`
//! (as pushed to application services, with `room_id`), and the appendix's "mapping from
//! other character sets" for ghost localparts.

pub mod ids;
pub mod inbound;
pub mod outbound;

/// The `format` of HTML formatted bodies.
pub const HTML_FORMAT: &str = "org.matrix.custom.html";

/// Why an event could not be translated. The caller logs it and skips that event only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    /// A field the translation needs is missing or has the wrong type.
    #[error("malformed event: {0}")]
    Malformed(String),
}

/// A [`TranslateError::Malformed`].
fn malformed(why: impl Into<String>) -> TranslateError {
    TranslateError::Malformed(why.into())
}
