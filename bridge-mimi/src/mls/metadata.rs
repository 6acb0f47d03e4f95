//! The room's metadata (draft-ietf-mimi-protocol-06 §7.6): `RoomMetaData` in the GroupContext's
//! `app_data_dictionary` under component `room_metadata`; an AppDataUpdate carries a whole new
//! value (`RoomMetaUpdate` has the same format) and replaces it.
//!
//! ```text
//! struct { opaque uri<V>; } Uri;
//! struct { opaque string<V>; } UTF8String;
//! struct { opaque media_type<V>; opaque language_tag<V>; opaque description_content<V>; }
//!   RichDescription;
//! struct { Uri room_uri; UTF8String room_name; RichDescription room_descriptions<V>;
//!   Uri room_avatar; UTF8String room_subject; UTF8String room_mood; } RoomMetaData;
//! ```
//!
//! Each `Uri` and `UTF8String` is one `opaque<V>` on the wire, so they are plain byte vectors
//! here.

use tls_codec::{Serialize as _, TlsDeserialize, TlsSerialize, TlsSize, VLBytes};

use super::participants::RoomStateError;

/// A room description in one language and media type.
#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct RichDescription {
    /// Empty: `text/plain;charset=utf-8`.
    pub media_type: VLBytes,
    /// A BCP 47 language tag, or empty.
    pub language_tag: VLBytes,
    /// The description.
    pub description_content: VLBytes,
}

/// The room_metadata component's data.
#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct RoomMetadata {
    /// The room's URI.
    pub room_uri: VLBytes,
    /// The room's name (UTF-8, no NUL).
    pub room_name: VLBytes,
    /// Descriptions.
    pub room_descriptions: Vec<RichDescription>,
    /// An https URI of the room's avatar, or empty.
    pub room_avatar: VLBytes,
    /// The subject (topic).
    pub room_subject: VLBytes,
    /// The mood.
    pub room_mood: VLBytes,
}

impl RoomMetadata {
    /// Metadata with a URI, a name and a subject (the rest empty).
    pub fn new(room_uri: &str, name: &str, subject: &str) -> Self {
        Self {
            room_uri: room_uri.as_bytes().to_vec().into(),
            room_name: name.as_bytes().to_vec().into(),
            room_descriptions: Vec::new(),
            room_avatar: Vec::new().into(),
            room_subject: subject.as_bytes().to_vec().into(),
            room_mood: Vec::new().into(),
        }
    }

    /// Decodes the component's data; text fields must be UTF-8 without NUL.
    pub fn decode(bytes: &[u8]) -> Result<Self, RoomStateError> {
        let mut rest = bytes;
        let value = <Self as tls_codec::Deserialize>::tls_deserialize(&mut rest)
            .map_err(|e| RoomStateError::Malformed(format!("room metadata: {e}")))?;
        if !rest.is_empty() {
            return Err(RoomStateError::Malformed(
                "room metadata: trailing bytes".into(),
            ));
        }
        for text in [&value.room_name, &value.room_subject, &value.room_mood] {
            match std::str::from_utf8(text.as_slice()) {
                Ok(t) if !t.contains('\0') => {}
                _ => {
                    return Err(RoomStateError::Malformed(
                        "room metadata: text is not UTF-8 without NUL".into(),
                    ));
                }
            }
        }
        Ok(value)
    }

    /// Encodes the component's data.
    pub fn encode(&self) -> Vec<u8> {
        self.tls_serialize_detached().unwrap_or_default()
    }

    /// The room name as text.
    pub fn name(&self) -> String {
        String::from_utf8_lossy(self.room_name.as_slice()).into_owned()
    }

    /// The subject as text.
    pub fn subject(&self) -> String {
        String::from_utf8_lossy(self.room_subject.as_slice()).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_and_bad_text_is_refused() {
        let metadata = RoomMetadata::new("mimi://a.example/r/x", "Lobby", "hi");
        let bytes = metadata.encode();
        // room_uri<V> = 20 bytes, then room_name<V> "Lobby".
        assert_eq!(&bytes[..1], &[20]);
        assert_eq!(&bytes[21..27], b"\x05Lobby");
        assert_eq!(RoomMetadata::decode(&bytes), Ok(metadata));
        let nul = RoomMetadata::new("u", "a\0b", "");
        assert!(RoomMetadata::decode(&nul.encode()).is_err());
        assert!(RoomMetadata::decode(&[1]).is_err());
    }
}
