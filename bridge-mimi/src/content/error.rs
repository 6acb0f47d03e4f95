//! Why a MIMI content message was refused.

/// A message that cannot be decoded or encoded: malformed or non-deterministic CBOR, a value of
/// the wrong type, or a limit of the draft exceeded. `at` is a byte offset in the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ContentError {
    /// The message is larger than [`MAX_MESSAGE_SIZE`](super::MAX_MESSAGE_SIZE).
    #[error("the message has {size} bytes, more than the limit of {max}")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The message ends inside a value.
    #[error("truncated: the message ends inside a value")]
    Truncated,
    /// Bytes follow the message.
    #[error("{0} bytes follow the end of the message")]
    TrailingBytes(usize),
    /// Not well-formed CBOR (a reserved additional-information value, a lone "break", invalid
    /// UTF-8 in a text string, an invalid simple value).
    #[error("invalid CBOR at byte {at}: {reason}")]
    Malformed {
        /// Where.
        at: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// Well-formed CBOR that breaks the deterministic encoding of RFC 8949 §4.2.1, which the
    /// draft requires (§6): a longer form than needed, an indefinite length, unsorted map keys.
    #[error("not deterministic CBOR at byte {at}: {reason}")]
    NotDeterministic {
        /// Where.
        at: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// A field of the wrong CBOR type.
    #[error("{field} at byte {at}: expected {expected}")]
    WrongType {
        /// Where.
        at: usize,
        /// The field, as the draft's CDDL names it.
        field: &'static str,
        /// What the draft allows there.
        expected: &'static str,
    },
    /// A field of the right type with a value the draft does not allow (an array of the wrong
    /// length, a number out of range).
    #[error("{field} at byte {at}: {reason}")]
    Invalid {
        /// Where.
        at: usize,
        /// The field, as the draft's CDDL names it.
        field: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// The salt is not 16 bytes long.
    #[error("the salt has {0} bytes instead of 16")]
    BadSalt(usize),
    /// A `replaces` or `inReplyTo` that is not a message ID (32 bytes, the first 0x01).
    #[error("{field} is not a message ID: {reason}")]
    BadMessageId {
        /// `replaces` or `inReplyTo`.
        field: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// Body parts nested deeper than [`MAX_PART_DEPTH`](super::MAX_PART_DEPTH) (§6).
    #[error("body parts nested more than {max} levels deep")]
    PartsTooDeep {
        /// The limit.
        max: usize,
    },
    /// An extension nested deeper than [`MAX_EXTENSION_DEPTH`](super::MAX_EXTENSION_DEPTH) (§6).
    #[error("an extension nests maps, arrays or tags more than {max} levels deep")]
    ExtensionTooDeep {
        /// The limit.
        max: usize,
    },
    /// More body parts than [`MAX_PARTS`](super::MAX_PARTS).
    #[error("more than {max} body parts")]
    TooManyParts {
        /// The limit.
        max: usize,
    },
    /// A `MultiPart` with fewer than 2 parts.
    #[error("a multipart needs at least 2 parts, this one has {0}")]
    TooFewParts(usize),
    /// A cardinality other than NullPart (0), SinglePart (1), ExternalPart (2), MultiPart (3).
    #[error("unknown cardinality {0}")]
    UnknownCardinality(u64),
    /// A `partSemantics` other than chooseOne (0), singleUnit (1), processAll (2).
    #[error("unknown part semantics {0}")]
    UnknownPartSemantics(u64),
    /// The same extension key twice.
    #[error("extension key {0} appears twice")]
    DuplicateExtension(String),
    /// An extension key that is neither an integer within ±(2^53 - 1) nor a text string of 1
    /// to 255 bytes, or a map key inside an extension that is not an integer, text or bytes.
    #[error("invalid extension key: {0}")]
    BadExtensionKey(&'static str),
    /// A `topicId` longer than [`MAX_TOPIC_ID`](super::MAX_TOPIC_ID).
    #[error("the topic ID has {len} bytes, more than {max}")]
    TopicTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The message ID needs a sender or room URI that neither the message nor the caller gave.
    #[error("no {0} to compute the message ID with")]
    MissingUri(&'static str),
    /// A sender or room URI longer than its 16-bit length prefix allows.
    #[error("the {0} is longer than 65535 bytes")]
    UriTooLong(&'static str),
}
