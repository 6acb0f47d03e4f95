// Shared by the fuzz target and the corpus replay test (included, not a module).

/// The first byte picks the body type, the rest is the body: decoding must not panic, and what
/// decodes must encode and decode back to the same value. Selectors 10 to 13 are the room state
/// carried in MLS (the participant list, its updates, an update applied to a list, the room
/// metadata), whose encoding is unique: what decodes also encodes to the very same bytes; 14 to
/// 16 the room policy components (roles_list, logging_policy, bot_policy), likewise.
/// Returns whether it decoded.
pub fn check(data: &[u8]) -> bool {
    use bridge_mimi::wire::*;

    fn round_trip<T: WireBody + PartialEq + std::fmt::Debug>(body: &[u8]) -> bool {
        let Ok(value) = T::decode(body) else {
            return false;
        };
        let encoded = value.encode().expect("a decoded body encodes");
        assert_eq!(T::decode(&encoded).expect("re-decodes"), value);
        true
    }

    let Some((selector, body)) = data.split_first() else {
        return false;
    };
    match selector % 17 {
        0 => round_trip::<KeyMaterialRequest>(body),
        1 => round_trip::<KeyMaterialResponse>(body),
        2 => round_trip::<UpdateRequest>(body),
        3 => round_trip::<UpdateRoomResponse>(body),
        4 => round_trip::<SubmitMessageRequest>(body),
        5 => round_trip::<SubmitMessageResponse>(body),
        6 => round_trip::<NotifyBody>(body),
        7 => round_trip::<GroupInfoRequest>(body),
        8 => round_trip::<GroupInfoResponse>(body),
        9 => round_trip::<GroupInfoRatchetTreeTbe>(body),
        10 => room_state::participant_list(body),
        11 => room_state::participant_update(body),
        12 => room_state::apply(body),
        13 => room_state::room_metadata(body),
        14 => room_state::roles(body),
        15 => room_state::logging(body),
        _ => room_state::bots(body),
    }
}

/// The room state components (draft-ietf-mimi-protocol §7.5, §7.6).
mod room_state {
    use bridge_mimi::mls::metadata::RoomMetadata;
    use bridge_mimi::mls::policy::{BotPolicy, LoggingPolicy, RoleData};
    use bridge_mimi::mls::participants::{
        ParticipantListData, ParticipantListUpdate, UserRolePair,
    };

    /// A participant list: it encodes to its bytes, and the empty update leaves it as it is.
    pub(super) fn participant_list(body: &[u8]) -> bool {
        let Ok(list) = ParticipantListData::decode(body) else {
            return false;
        };
        assert_eq!(
            list.encode(),
            body,
            "a participant list re-encodes differently"
        );
        assert_eq!(
            ParticipantListData::decode(&list.encode()).as_ref(),
            Ok(&list)
        );
        let unchanged = list.apply(&ParticipantListUpdate::default());
        assert_eq!(
            unchanged.as_ref(),
            Ok(&list),
            "the empty update changes the list"
        );
        true
    }

    /// An AppDataUpdate payload for the participant list: it encodes to its bytes.
    pub(super) fn participant_update(body: &[u8]) -> bool {
        let Ok(update) = ParticipantListUpdate::decode(body) else {
            return false;
        };
        assert_eq!(update.encode(), body, "an update re-encodes differently");
        assert_eq!(
            ParticipantListUpdate::decode(&update.encode()).as_ref(),
            Ok(&update)
        );
        true
    }

    /// A participant list followed by an update: applying it must not panic, and what it makes
    /// is the list with the roles changed, the removed gone and the added appended.
    pub(super) fn apply(body: &[u8]) -> bool {
        let mut rest = body;
        let Ok(list) = <ParticipantListData as tls_codec::Deserialize>::tls_deserialize(&mut rest)
        else {
            return false;
        };
        let Ok(update) = ParticipantListUpdate::decode(rest) else {
            return false;
        };
        let Ok(after) = list.apply(&update) else {
            return true;
        };
        let (before, added) = (&list.participants, &update.added_participants);
        let kept = before.len() - update.removed_indices.len();
        assert_eq!(after.participants.len(), kept + added.len());
        assert_eq!(
            &after.participants[kept..],
            added.as_slice(),
            "added, in order"
        );
        for change in &update.changed_role_participants {
            let user = &before[change.user_index as usize].user;
            assert!(
                after.participants[..kept]
                    .iter()
                    .any(|p| p.user == *user && p.role_index == change.role_index),
                "a role change is lost"
            );
        }
        // Of a list without duplicates (apply compares users as text: if they are UTF-8), the
        // removed are gone and no user appears twice.
        let unique = |list: &ParticipantListData| {
            let users: std::collections::HashSet<_> = list
                .participants
                .iter()
                .map(|p| p.user.as_slice())
                .collect();
            users.len() == list.participants.len()
        };
        let utf8 = |p: &UserRolePair| std::str::from_utf8(p.user.as_slice()).is_ok();
        if unique(&list) && before.iter().chain(added).all(utf8) {
            for &index in &update.removed_indices {
                let user = &before[index as usize].user;
                assert!(
                    !after.participants.iter().any(|p| p.user == *user),
                    "not removed"
                );
            }
            assert!(unique(&after), "a user appears twice");
        }
        assert_eq!(
            ParticipantListData::decode(&after.encode()).as_ref(),
            Ok(&after)
        );
        true
    }

    /// The room metadata: it encodes to its bytes, and its text fields are UTF-8 without NUL.
    pub(super) fn room_metadata(body: &[u8]) -> bool {
        let Ok(metadata) = RoomMetadata::decode(body) else {
            return false;
        };
        assert_eq!(
            metadata.encode(),
            body,
            "room metadata re-encodes differently"
        );
        assert_eq!(
            RoomMetadata::decode(&metadata.encode()).as_ref(),
            Ok(&metadata)
        );
        for (text, bytes) in [
            (metadata.name(), &metadata.room_name),
            (metadata.subject(), &metadata.room_subject),
        ] {
            assert_eq!(text.as_bytes(), bytes.as_slice(), "text read lossily");
            assert!(!text.contains('\0'));
        }
        true
    }

    /// A roles_list: it encodes to its bytes, and asking what a role may do never panics.
    pub(super) fn roles(body: &[u8]) -> bool {
        let Ok(roles) = RoleData::decode(body) else {
            return false;
        };
        assert_eq!(roles.encode(), body, "a roles_list re-encodes differently");
        assert_eq!(RoleData::decode(&roles.encode()).as_ref(), Ok(&roles));
        for role in &roles.roles {
            let index = role.role_index;
            for &capability in &role.role_capabilities {
                assert!(roles.allows(index, capability));
            }
            assert!(roles.may_change(index, index, index), "no change is always allowed");
            for change in &role.authorized_role_changes {
                for &to in &change.target_role_indexes {
                    assert!(roles.may_change(index, change.from_role_index, to));
                }
            }
        }
        true
    }

    /// A logging_policy: it encodes to its bytes.
    pub(super) fn logging(body: &[u8]) -> bool {
        let Ok(policy) = LoggingPolicy::decode(body) else {
            return false;
        };
        assert_eq!(policy.encode(), body, "a logging_policy re-encodes differently");
        assert_eq!(LoggingPolicy::decode(&policy.encode()).as_ref(), Ok(&policy));
        true
    }

    /// A bot_policy: it encodes to its bytes.
    pub(super) fn bots(body: &[u8]) -> bool {
        let Ok(policy) = BotPolicy::decode(body) else {
            return false;
        };
        assert_eq!(policy.encode(), body, "a bot_policy re-encodes differently");
        assert_eq!(BotPolicy::decode(&policy.encode()).as_ref(), Ok(&policy));
        true
    }
}
