//! Identifiers of the neutral model.
//!
//! Neutral identifiers ([`RoomId`], [`EventId`], [`AdapterId`]) are issued by the bridge. Remote
//! identifiers ([`RemoteRoomId`], [`RemoteUserId`], [`RemoteEventId`]) are opaque strings that only
//! the adapter that produced them parses: a MUC JID, a Matrix room ID, a MIMI URI.

use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps a string as this identifier.
            pub fn new(id: impl Into<String>) -> Self {
                Self(id.into())
            }

            /// The identifier as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(id: &str) -> Self {
                Self(id.to_owned())
            }
        }

        impl From<String> for $name {
            fn from(id: String) -> Self {
                Self(id)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_id!(
    /// A neutral room: a routing tag that links native rooms on several adapters.
    RoomId
);
string_id!(
    /// The configured identifier of one adapter instance (`id` in its `[[adapter]]` section).
    AdapterId
);
string_id!(
    /// A native room, opaque to everything but its adapter (a MUC JID, `!room:server`, a MIMI URI).
    RemoteRoomId
);
string_id!(
    /// A native user, opaque to everything but its adapter.
    RemoteUserId
);
string_id!(
    /// A native event or message ID, opaque to everything but its adapter.
    RemoteEventId
);

/// A neutral event ID, issued by the core: 128 bits, time-ordered, printed as a ULID.
///
/// The upper 48 bits are milliseconds since the Unix epoch; IDs issued by one [`EventIdGenerator`]
/// are strictly increasing, even when the clock stalls or steps back, so their order is the order in
/// which the core accepted the events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(u128);

impl EventId {
    /// The ID with this numeric value.
    pub const fn from_u128(value: u128) -> Self {
        Self(value)
    }

    /// The numeric value.
    pub const fn as_u128(self) -> u128 {
        self.0
    }

    /// Milliseconds since the Unix epoch at which the ID was issued.
    pub const fn timestamp_ms(self) -> u64 {
        (self.0 >> 80) as u64
    }

    /// Big-endian bytes: their byte order is the ID order, which store keys rely on.
    pub const fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    /// The ID from [`EventId::to_bytes`] output.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(u128::from_be_bytes(bytes))
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&ulid::Ulid(self.0), f)
    }
}

/// The text was not a valid ULID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid event ID (expected a 26-character ULID): {0:?}")]
pub struct InvalidEventId(String);

impl FromStr for EventId {
    type Err = InvalidEventId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ulid::Ulid::from_string(s)
            .map(|u| Self(u.0))
            .map_err(|_| InvalidEventId(s.to_owned()))
    }
}

impl Serialize for EventId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EventId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Issues strictly increasing [`EventId`]s.
#[derive(Debug, Default)]
pub struct EventIdGenerator {
    last: Mutex<u128>,
}

impl EventIdGenerator {
    /// A generator whose IDs will all be greater than `floor` (the greatest ID already stored).
    pub fn after(floor: Option<EventId>) -> Self {
        Self {
            last: Mutex::new(floor.map_or(0, EventId::as_u128)),
        }
    }

    /// The next ID.
    pub fn next_id(&self) -> EventId {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
            & ((1 << 48) - 1);
        // The low 80 bits start at a random point within the millisecond so IDs issued by
        // different processes rarely collide; a 64-bit random part leaves 2^64 increments.
        let candidate = (now_ms << 80) | u128::from(rand::random::<u64>());
        let mut last = self.last.lock();
        let id = if candidate > *last {
            candidate
        } else {
            *last + 1
        };
        *last = id;
        EventId(id)
    }

    /// The greatest ID issued (or the floor it started after): every later ID is greater.
    pub fn last(&self) -> EventId {
        EventId(*self.last.lock())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_increase_and_round_trip() {
        let generator = EventIdGenerator::after(None);
        let mut previous = generator.next_id();
        for _ in 0..10_000 {
            let id = generator.next_id();
            assert!(id > previous);
            assert_eq!(id.to_string().parse::<EventId>(), Ok(id));
            assert_eq!(EventId::from_bytes(id.to_bytes()), id);
            assert!(id.to_bytes() > previous.to_bytes());
            previous = id;
        }
    }

    #[test]
    fn generator_respects_floor_from_the_future() {
        let future = EventId::from_u128(u128::MAX - 10);
        let generator = EventIdGenerator::after(Some(future));
        assert!(generator.next_id() > future);
    }

    #[test]
    fn bad_event_id_is_an_error() {
        assert!("not-a-ulid".parse::<EventId>().is_err());
        let json = serde_json::to_string(&EventId::from_u128(42)).unwrap_or_default();
        assert_eq!(
            serde_json::from_str::<EventId>(&json).ok(),
            Some(EventId::from_u128(42))
        );
    }
}
