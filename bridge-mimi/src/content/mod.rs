//! The MIMI content format: draft-ietf-mimi-content-08, the CBOR messages that MIMI rooms carry
//! inside MLS application messages.
//!
//! * [`MimiContent`] is the message container of §4 ([`model`]): salt, `replaces`, `topicId`,
//!   `expires`, `inReplyTo`, the extensions map (sender and room URIs typed, every other
//!   extension kept as [`RawCbor`]) and the body, a tree of [`NestedPart`]s.
//! * [`MimiContent::decode`] and [`MimiContent::encode`] read and write deterministic CBOR
//!   (RFC 8949 §4.2.1, required by §6), with the limits below; decoding never panics and
//!   whatever it accepts re-encodes byte for byte.
//! * [`MessageId`] is the -08 message ID of §3.3 (with 16-bit length prefixes; -07 had none).
//! * [`neutral`] maps messages to and from the bridge's neutral model.
//! * [`status`] reads and writes message status reports (draft-mahy-mimi-message-status):
//!   read receipts.
//! * [`json`] renders a message as JSON for people (`bridge mimi inspect`).

mod cbor;
mod codec;
mod error;
mod id;
pub mod json;
pub mod model;
pub mod neutral;
pub mod status;

pub use error::ContentError;
pub use id::{MessageId, SHA256_ID, Salt};
pub use model::{
    Disposition, Expiration, ExtensionKey, Extensions, ExternalPart, MimiContent, NestedPart, Part,
    PartSemantics, RawCbor,
};

/// The largest message decoded or encoded, in bytes. The draft leaves the size to local policy;
/// MLS application messages this large are already unusual.
pub const MAX_MESSAGE_SIZE: usize = 1 << 20;

/// How deep body parts may nest, the body being level 1 (§6.3).
pub const MAX_PART_DEPTH: usize = 4;

/// How deep maps, arrays and tags may nest inside the extensions map, the map being level 1
/// (§6.3).
pub const MAX_EXTENSION_DEPTH: usize = 4;

/// The most body parts in one message (the security considerations call more suspicious).
pub const MAX_PARTS: usize = 1024;

/// The longest `topicId` in bytes (the security considerations call longer ones suspicious).
pub const MAX_TOPIC_ID: usize = 4096;
