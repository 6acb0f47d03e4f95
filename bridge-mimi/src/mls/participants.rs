//! The room's participant list (draft-ietf-mimi-protocol-06 §7.5): `ParticipantListData` in the
//! GroupContext's `app_data_dictionary` under component `participant_list`, changed by a
//! `ParticipantListUpdate` carried in an AppDataUpdate proposal.
//!
//! ```text
//! struct { opaque user<V>; uint32 role_index; } UserRolePair;
//! struct { UserRolePair participants<V>; } ParticipantListData;
//! struct { uint32 user_index; uint32 role_index; } UserindexRolePair;
//! struct {
//!   UserindexRolePair changedRoleParticipants<V>;
//!   uint32 removedIndices<V>;
//!   UserRolePair addedParticipants<V>;
//! } ParticipantListUpdate;
//! ```

use std::collections::HashSet;

use tls_codec::{Serialize as _, TlsDeserialize, TlsSerialize, TlsSize, VLBytes};

/// A room-state component (participant list, room metadata) could not be decoded, or an
/// update does not apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RoomStateError {
    /// The bytes are not a valid TLS encoding of the struct.
    #[error("malformed participant list: {0}")]
    Malformed(String),
    /// An update refers to an index past the end of the list.
    #[error("participant index {0} is out of range")]
    IndexOutOfRange(u32),
    /// An update touches the same user more than once (§7.5, last paragraph).
    #[error("an update touches participant {0:?} more than once")]
    Repeated(String),
    /// An update adds a user who is already a participant.
    #[error("{0:?} is already a participant")]
    AlreadyPresent(String),
}

/// One participant: a user URI and its role index.
#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct UserRolePair {
    /// The user's URI, as bytes (`mimi://DOMAIN/u/…`).
    pub user: VLBytes,
    /// The user's role (draft-ietf-mimi-room-policy §3).
    pub role_index: u32,
}

impl UserRolePair {
    /// A pair for `user` with role `role_index`.
    pub fn new(user: &str, role_index: u32) -> Self {
        Self {
            user: user.as_bytes().to_vec().into(),
            role_index,
        }
    }

    /// The user URI as text (lossy if a peer put non-UTF-8 bytes there).
    pub fn user_str(&self) -> String {
        String::from_utf8_lossy(self.user.as_slice()).into_owned()
    }
}

/// The participant list component's data.
#[derive(Debug, Clone, Default, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct ParticipantListData {
    /// The participants, in list order (the order indexes refer to).
    pub participants: Vec<UserRolePair>,
}

/// A change to a participant's role, by index.
#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct UserIndexRolePair {
    /// Index into the current participant list.
    pub user_index: u32,
    /// The new role.
    pub role_index: u32,
}

/// The payload of an AppDataUpdate proposal for the participant list.
#[derive(Debug, Clone, Default, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct ParticipantListUpdate {
    /// Role changes, applied first.
    pub changed_role_participants: Vec<UserIndexRolePair>,
    /// Indexes (into the list before this update) of users to remove.
    pub removed_indices: Vec<u32>,
    /// Users appended at the end.
    pub added_participants: Vec<UserRolePair>,
}

impl ParticipantListData {
    /// Decodes the component's data.
    pub fn decode(bytes: &[u8]) -> Result<Self, RoomStateError> {
        decode_exact(bytes)
    }

    /// Encodes the component's data.
    pub fn encode(&self) -> Vec<u8> {
        // Serialising into a Vec fails only for vectors longer than the varint can say (2^30).
        self.tls_serialize_detached().unwrap_or_default()
    }

    /// The role of `user` in the encoded list `bytes` (the component's data), read in place
    /// without building the list: the hub asks it for every message it accepts. None when
    /// `user` is not listed; an error when the bytes are not a list.
    pub fn role_in(bytes: &[u8], user: &[u8]) -> Result<Option<u32>, RoomStateError> {
        let malformed = || RoomStateError::Malformed("participant list".into());
        let mut rest = bytes;
        let len = varint(&mut rest).ok_or_else(malformed)?;
        let (mut list, trailing) = rest.split_at_checked(len).ok_or_else(malformed)?;
        if !trailing.is_empty() {
            return Err(malformed());
        }
        let mut found = None;
        while !list.is_empty() {
            let len = varint(&mut list).ok_or_else(malformed)?;
            let (name, after) = list.split_at_checked(len).ok_or_else(malformed)?;
            let (role, after) = after.split_first_chunk::<4>().ok_or_else(malformed)?;
            if found.is_none() && name == user {
                found = Some(u32::from_be_bytes(*role));
            }
            list = after;
        }
        Ok(found)
    }

    /// The index of `user`, if a participant.
    pub fn index_of(&self, user: &str) -> Option<u32> {
        self.participants
            .iter()
            .position(|p| p.user.as_slice() == user.as_bytes())
            .and_then(|i| u32::try_from(i).ok())
    }

    /// The list after `update`, or why it does not apply. Users are compared as bytes (a URI
    /// that is not UTF-8 is still one user, and two such URIs are two).
    pub fn apply(&self, update: &ParticipantListUpdate) -> Result<Self, RoomStateError> {
        let mut touched: HashSet<&[u8]> = HashSet::new();
        let mut list = self.participants.clone();
        let user_at = |i: u32| -> Result<&UserRolePair, RoomStateError> {
            self.participants
                .get(i as usize)
                .ok_or(RoomStateError::IndexOutOfRange(i))
        };
        for change in &update.changed_role_participants {
            let user = user_at(change.user_index)?;
            if !touched.insert(user.user.as_slice()) {
                return Err(RoomStateError::Repeated(user.user_str()));
            }
            list[change.user_index as usize].role_index = change.role_index;
        }
        let mut removed: Vec<u32> = Vec::with_capacity(update.removed_indices.len());
        for &index in &update.removed_indices {
            let user = user_at(index)?;
            if !touched.insert(user.user.as_slice()) {
                return Err(RoomStateError::Repeated(user.user_str()));
            }
            removed.push(index);
        }
        removed.sort_unstable_by(|a, b| b.cmp(a));
        for index in removed {
            list.remove(index as usize);
        }
        for added in &update.added_participants {
            let user = added.user.as_slice();
            let listed = self.participants.iter().any(|p| p.user.as_slice() == user);
            if listed && !touched.contains(user) {
                return Err(RoomStateError::AlreadyPresent(added.user_str()));
            }
            if !touched.insert(user) {
                return Err(RoomStateError::Repeated(added.user_str()));
            }
            list.push(added.clone());
        }
        Ok(Self { participants: list })
    }
}

impl ParticipantListUpdate {
    /// Decodes an AppDataUpdate payload.
    pub fn decode(bytes: &[u8]) -> Result<Self, RoomStateError> {
        decode_exact(bytes)
    }

    /// Encodes the payload.
    pub fn encode(&self) -> Vec<u8> {
        self.tls_serialize_detached().unwrap_or_default()
    }

    /// An update that adds `user` with `role_index`.
    pub fn add(user: &str, role_index: u32) -> Self {
        Self {
            added_participants: vec![UserRolePair::new(user, role_index)],
            ..Self::default()
        }
    }

    /// An update that removes the participant at `index`.
    pub fn remove(index: u32) -> Self {
        Self {
            removed_indices: vec![index],
            ..Self::default()
        }
    }
}

/// Reads an MLS variable-length integer (RFC 9420 §2.1.2) off the front of `bytes`.
fn varint(bytes: &mut &[u8]) -> Option<usize> {
    let (&first, _) = bytes.split_first()?;
    let len = match first >> 6 {
        0 => 1,
        1 => 2,
        2 => 4,
        _ => return None,
    };
    let (head, rest) = bytes.split_at_checked(len)?;
    let value = head[1..]
        .iter()
        .fold(usize::from(first & 0x3f), |v, &b| (v << 8) | usize::from(b));
    *bytes = rest;
    Some(value)
}

/// Decodes `T`, refusing trailing bytes.
pub(crate) fn decode_exact<T: tls_codec::Deserialize>(bytes: &[u8]) -> Result<T, RoomStateError> {
    let mut rest = bytes;
    let value =
        T::tls_deserialize(&mut rest).map_err(|e| RoomStateError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(RoomStateError::Malformed(format!(
            "{} trailing bytes",
            rest.len()
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_follows_the_tls_presentation_language() {
        let list = ParticipantListData {
            participants: vec![UserRolePair::new("ab", 3)],
        };
        // participants<V>: length 7; user<V>: length 2, "ab"; role_index: u32 BE.
        assert_eq!(list.encode(), vec![7, 2, b'a', b'b', 0, 0, 0, 3]);
        assert_eq!(ParticipantListData::decode(&list.encode()), Ok(list));
        let update = ParticipantListUpdate::remove(1);
        assert_eq!(update.encode(), vec![0, 4, 0, 0, 0, 1, 0]);
        assert_eq!(ParticipantListUpdate::decode(&update.encode()), Ok(update));
    }

    #[test]
    fn updates_change_roles_then_remove_then_append() {
        let list = ParticipantListData {
            participants: vec![
                UserRolePair::new("a", 3),
                UserRolePair::new("b", 2),
                UserRolePair::new("c", 2),
            ],
        };
        let update = ParticipantListUpdate {
            changed_role_participants: vec![UserIndexRolePair {
                user_index: 2,
                role_index: 1,
            }],
            removed_indices: vec![0],
            added_participants: vec![UserRolePair::new("d", 2)],
        };
        let after = list.apply(&update).expect("applies");
        let users: Vec<_> = after
            .participants
            .iter()
            .map(|p| (p.user_str(), p.role_index))
            .collect();
        assert_eq!(
            users,
            vec![("b".into(), 2), ("c".into(), 1), ("d".into(), 2)]
        );
    }

    #[test]
    fn invalid_updates_and_bytes_are_refused() {
        let list = ParticipantListData {
            participants: vec![UserRolePair::new("a", 3)],
        };
        assert_eq!(
            list.apply(&ParticipantListUpdate::remove(1)),
            Err(RoomStateError::IndexOutOfRange(1))
        );
        assert!(matches!(
            list.apply(&ParticipantListUpdate::add("a", 2)),
            Err(RoomStateError::AlreadyPresent(_))
        ));
        let twice = ParticipantListUpdate {
            removed_indices: vec![0, 0],
            ..Default::default()
        };
        assert!(matches!(
            list.apply(&twice),
            Err(RoomStateError::Repeated(_))
        ));
        // Users are bytes: two URIs that differ only in invalid UTF-8 are two users, and one
        // of them cannot be added twice.
        let odd = |b: u8| UserRolePair {
            user: vec![b'x', b].into(),
            role_index: 2,
        };
        let two = ParticipantListData::default()
            .apply(&ParticipantListUpdate {
                added_participants: vec![odd(0xfe), odd(0xff)],
                ..Default::default()
            })
            .expect("two users");
        assert_eq!(two.participants.len(), 2);
        assert!(matches!(
            two.apply(&ParticipantListUpdate {
                added_participants: vec![odd(0xff)],
                ..Default::default()
            }),
            Err(RoomStateError::AlreadyPresent(_))
        ));
        // The in-place reader agrees with the decoder, and refuses what it refuses.
        let list = ParticipantListData {
            participants: vec![
                UserRolePair::new("a", 3),
                UserRolePair::new(&"b".repeat(70), 2),
            ],
        };
        let bytes = list.encode();
        assert_eq!(ParticipantListData::role_in(&bytes, b"a"), Ok(Some(3)));
        assert_eq!(
            ParticipantListData::role_in(&bytes, "b".repeat(70).as_bytes()),
            Ok(Some(2))
        );
        assert_eq!(ParticipantListData::role_in(&bytes, b"c"), Ok(None));
        for cut in 0..bytes.len() {
            assert!(
                ParticipantListData::role_in(&bytes[..cut], b"a").is_err(),
                "{cut}"
            );
        }
        for garbage in [&[0xffu8, 0xff][..], &[7, 2, b'a'], &[0, 0]] {
            assert!(
                ParticipantListData::role_in(garbage, b"a").is_err(),
                "{garbage:?}"
            );
            assert!(ParticipantListData::decode(garbage).is_err(), "{garbage:?}");
        }
    }
}
