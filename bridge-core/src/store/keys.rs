//! Key layout of the store.
//!
//! Every key is `[KEY_VERSION, tag, components…]`. A string component is its length as a
//! big-endian `u32` followed by its bytes (so no separator can be forged by an ID); an
//! [`EventId`] is its 16 big-endian bytes, so keys of one prefix sort in event order.
//!
//! | tag | key | value |
//! |---|---|---|
//! | `L` | adapter, remote room | neutral room ID |
//! | `R` | room | room metadata (JSON) |
//! | `E` | event ID | the event (JSON) |
//! | `r` | adapter, remote room, native ID | event ID (16 bytes), then 0 (accepted from there) or 1 (produced by the bridge) |
//! | `n` | event ID, adapter, remote room | native ID of a copy the bridge produced (format 1 also wrote it for the native event an event was accepted from; format 2 reads that from the event's `origin`) |
//! | `G` | room, event ID | the room's log: the origin link of the event (adapter, remote room, as two length-prefixed strings); not written when the room has no other link |
//! | `K` | adapter, remote room | the link's cursor in its room's log: the event ID (16 bytes) up to which it is handled |
//! | `O` | adapter, remote room, event ID | empty: an entry to deliver outside the log (a dead letter put back; the whole outbox in formats 1 and 2) |
//! | `D` | adapter, remote room, event ID | dead letter (JSON) |
//! | `P` | adapter, remote user | empty: a puppet the bridge controls |
//! | `X` | target event ID, adapter, user, key | reaction event ID |
//! | `A` | adapter, adapter-chosen key | adapter-private value |
//! | `C` | adapter, remote room | empty: a link declared by the configuration at the last start |
//!
//! A link's outbox is its room's log after its cursor, less the events that came from the link
//! itself, plus its `O` entries. Per accepted event with two targets this writes 3 keys at ingest
//! (`E`, `r`, one `G`) and 2 per delivery (`r` and `n` of the copy); a link's cursor is written
//! every [`CURSOR_EVERY`] deliveries (and at once after a delivery that recorded no native ID, a
//! dead letter, or at shutdown): after a crash the log entries after the stored cursor whose copy
//! is recorded in `n` are recognised as delivered.
//!
//! Format versions (the value under [`FORMAT_KEY`]): 1, the first layout; 2, `n` entries only
//! for produced copies; 3, the room log and link cursors (before it, one `O` entry per event and
//! target link). A version-1 store is valid version-2 data (its extra `n` entries are still
//! read); a version-1 or 2 store is valid version-3 data too: its `O` entries are delivered
//! first, and every link without a cursor gets one at the newest stored event at start (nothing
//! older is in the log). Such a store is upgraded in place by writing 3; a build refuses a store
//! of a newer version.

use crate::ids::EventId;

/// The store format this build writes. Bump it (and migrate in `check_format`) when
/// what is stored changes in a way an older build would misread.
pub const FORMAT_VERSION: u8 = 3;

/// A link's cursor is stored after this many deliveries recorded in `n` (see the module docs).
pub const CURSOR_EVERY: u32 = 64;

/// The first byte of every key: the version of the key encoding itself. Changing it means
/// rewriting every key.
pub const KEY_VERSION: u8 = 1;

/// Where the store's format version is kept.
pub const FORMAT_KEY: &[u8] = &[0, b'v'];

/// A key under construction.
#[derive(Debug, Clone)]
pub struct Key(Vec<u8>);

impl Key {
    /// A key of the given table tag.
    pub fn new(tag: u8) -> Self {
        let mut bytes = Vec::with_capacity(48);
        bytes.push(KEY_VERSION);
        bytes.push(tag);
        Self(bytes)
    }

    /// Appends a length-prefixed string.
    pub fn str(mut self, s: &str) -> Self {
        let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(&s.as_bytes()[..len as usize]);
        self
    }

    /// Appends an event ID.
    pub fn id(mut self, id: EventId) -> Self {
        self.0.extend_from_slice(&id.to_bytes());
        self
    }

    /// Appends raw bytes (only as the last component).
    pub fn raw(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }

    /// The finished key.
    pub fn build(self) -> Vec<u8> {
        self.0
    }
}

/// Table tags.
pub mod tag {
    /// Links: (adapter, remote room) → room.
    pub const LINK: u8 = b'L';
    /// Room metadata.
    pub const ROOM: u8 = b'R';
    /// Stored events.
    pub const EVENT: u8 = b'E';
    /// ID map, remote → neutral.
    pub const REMOTE_TO_NEUTRAL: u8 = b'r';
    /// ID map, neutral → remote.
    pub const NEUTRAL_TO_REMOTE: u8 = b'n';
    /// Outbox entries outside the room log.
    pub const OUTBOX: u8 = b'O';
    /// Room logs: every stored event of a room, in acceptance order.
    pub const ROOM_LOG: u8 = b'G';
    /// Link cursors in their room's log.
    pub const CURSOR: u8 = b'K';
    /// Dead letters.
    pub const DEAD: u8 = b'D';
    /// Puppets.
    pub const PUPPET: u8 = b'P';
    /// Reaction index.
    pub const REACTION: u8 = b'X';
    /// Adapter-private state.
    pub const ADAPTER: u8 = b'A';
    /// Links declared by the configuration (as opposed to added at runtime).
    pub const CONFIG_LINK: u8 = b'C';
    /// What a removed link left to do: (adapter, native room, source adapter or "").
    pub const UNLINK_OWED: u8 = b'U';
}

/// A cursor over the components of a key, for reading keys back.
#[derive(Debug)]
pub struct KeyReader<'a> {
    rest: &'a [u8],
}

impl<'a> KeyReader<'a> {
    /// Reads a key of table `tag`; `None` when it is not one.
    pub fn new(key: &'a [u8], tag: u8) -> Option<Self> {
        match key {
            [KEY_VERSION, t, rest @ ..] if *t == tag => Some(Self { rest }),
            _ => None,
        }
    }

    /// The next string component.
    pub fn str(&mut self) -> Option<&'a str> {
        let (len, rest) = self.rest.split_first_chunk::<4>()?;
        let len = u32::from_be_bytes(*len) as usize;
        if rest.len() < len {
            return None;
        }
        let (s, rest) = rest.split_at(len);
        self.rest = rest;
        std::str::from_utf8(s).ok()
    }

    /// The next event ID component.
    pub fn id(&mut self) -> Option<EventId> {
        let (bytes, rest) = self.rest.split_first_chunk::<16>()?;
        self.rest = rest;
        Some(EventId::from_bytes(*bytes))
    }

    /// Whatever is left.
    pub fn rest(&self) -> &'a [u8] {
        self.rest
    }
}

/// The two string components of a key of table `tag` (links, puppets, config links).
pub fn read_pair(key: &[u8], tag: u8) -> Option<(&str, &str)> {
    let mut reader = KeyReader::new(key, tag)?;
    Some((reader.str()?, reader.str()?))
}

/// Decodes a 16-byte event ID value.
pub fn id_value(value: &[u8]) -> Option<EventId> {
    <[u8; 16]>::try_from(value).ok().map(EventId::from_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_cannot_be_forged() {
        let a = Key::new(tag::LINK).str("a\0b").str("c").build();
        let b = Key::new(tag::LINK).str("a").str("\0bc").build();
        assert_ne!(a, b);
        let mut reader = KeyReader::new(&a, tag::LINK).expect("tag");
        assert_eq!(reader.str(), Some("a\0b"));
        assert_eq!(reader.str(), Some("c"));
        assert_eq!(reader.rest(), b"");
    }

    #[test]
    fn id_keys_sort_in_event_order() {
        let k1 = Key::new(tag::OUTBOX)
            .str("x")
            .id(EventId::from_u128(1))
            .build();
        let k2 = Key::new(tag::OUTBOX)
            .str("x")
            .id(EventId::from_u128(256))
            .build();
        assert!(k1 < k2);
    }
}
