//! The room's policy (draft-ietf-mimi-room-policy-03): roles and their capabilities
//! (`roles_list`, §3, §8), and what the room tells its members about the bridge
//! (`logging_policy` §6.5, `bot_policy` §6.7). Each is a component in the GroupContext's
//! `app_data_dictionary`, TLS-encoded:
//!
//! ```text
//! uint16 CapabilityType;
//! struct { uint32 from_role_index; uint32 target_role_indexes<V>; } SingleSourceRoleChangeTargets;
//! struct {
//!   uint32 role_index; opaque role_name<V>; opaque role_description<V>;
//!   CapabilityType role_capabilities<V>;
//!   uint32 minimum_participants_constraint; optional uint32 maximum_participants_constraint;
//!   uint32 minimum_active_participants_constraint;
//!   optional uint32 maximum_active_participants_constraint;
//!   SingleSourceRoleChangeTargets authorized_role_changes<V>;
//! } Role;
//! struct { Role roles<V>; } RoleData;
//!
//! enum { optional(0), required(1), forbidden(2) } Optionality;
//! struct { opaque uri<V>; } Uri;
//! struct {
//!   Optionality logging;
//!   select (logging) {
//!     case mandatory: case optional:
//!       Uri logging_clients<V>; Uri machine_readable_policy; Uri human_readable_policy;
//!     case forbidden: struct {};
//!   }
//! } LoggingPolicy;
//! struct {
//!   opaque name<V>; opaque description<V>; Uri homepage; bool local_client_bot;
//!   uint32 bot_role_index; bool can_target_message_in_group; bool per_user_content;
//! } Bot;
//! struct { Bot allowed_bots<V>; } BotPolicy;
//! ```
//!
//! The rooms the bridge hosts carry all three from their creation: the role set of
//! [`RoleData::bridge_default`], and a logging and a bot policy saying that the bridge reads
//! and relays every message ([`LoggingPolicy::bridge`], [`BotPolicy::bridge`]; docs/mimi.md
//! "End-to-end encryption ends at the bridge"). A room without `roles_list` (one created
//! before the bridge wrote it, or by a hub that does not) is judged by the same default set.

use std::collections::HashSet;
use std::fmt::Write as _;

use tls_codec::{Serialize as _, TlsDeserialize, TlsSerialize, TlsSize, VLBytes};

use super::participants::{RoomStateError, decode_exact};
use crate::codepoints::*;

/// A TLS `bool` (draft-ietf-mimi-room-policy-03 Appendix B: `enum { false(0), true(1) }`): one
/// byte, any other value refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TlsBool(pub bool);

impl tls_codec::Size for TlsBool {
    fn tls_serialized_len(&self) -> usize {
        1
    }
}

impl tls_codec::Serialize for TlsBool {
    fn tls_serialize<W: std::io::Write>(&self, writer: &mut W) -> Result<usize, tls_codec::Error> {
        u8::from(self.0).tls_serialize(writer)
    }
}

impl tls_codec::Deserialize for TlsBool {
    fn tls_deserialize<R: std::io::Read>(bytes: &mut R) -> Result<Self, tls_codec::Error> {
        match u8::tls_deserialize(bytes)? {
            0 => Ok(Self(false)),
            1 => Ok(Self(true)),
            other => Err(tls_codec::Error::DecodingError(format!(
                "{other} is not a bool"
            ))),
        }
    }
}

/// The roles a participant in one role may move participants between
/// (`authorized_role_changes`).
#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct SingleSourceRoleChangeTargets {
    /// The role moved from.
    pub from_role_index: u32,
    /// The roles it may be moved to.
    pub target_role_indexes: Vec<u32>,
}

/// One role: its capabilities and constraints.
#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct Role {
    /// The index participants refer to (not necessarily contiguous).
    pub role_index: u32,
    /// A human-readable name.
    pub role_name: VLBytes,
    /// A human-readable description, possibly empty.
    pub role_description: VLBytes,
    /// The capabilities (`CAPABILITY_*` in [`crate::codepoints`]).
    pub role_capabilities: Vec<u16>,
    /// The fewest participants the role must have.
    pub minimum_participants_constraint: u32,
    /// The most participants it may have, if limited.
    pub maximum_participants_constraint: Option<u32>,
    /// The fewest participants with clients in the group.
    pub minimum_active_participants_constraint: u32,
    /// The most participants with clients in the group, if limited (0: none may have clients).
    pub maximum_active_participants_constraint: Option<u32>,
    /// Which role changes a holder of this role may make.
    pub authorized_role_changes: Vec<SingleSourceRoleChangeTargets>,
}

impl Role {
    /// Whether the role has `capability`.
    pub fn has(&self, capability: u16) -> bool {
        self.role_capabilities.contains(&capability)
    }

    /// The role's name as text (lossy).
    pub fn name(&self) -> String {
        String::from_utf8_lossy(self.role_name.as_slice()).into_owned()
    }
}

/// The roles_list component's data (and the payload of its AppDataUpdate, which replaces it).
#[derive(Debug, Clone, Default, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct RoleData {
    /// The roles.
    pub roles: Vec<Role>,
}

impl RoleData {
    /// Decodes the component's data: every role index once.
    pub fn decode(bytes: &[u8]) -> Result<Self, RoomStateError> {
        let data: Self = decode_exact(bytes)?;
        let mut seen = HashSet::new();
        for role in &data.roles {
            if !seen.insert(role.role_index) {
                return Err(RoomStateError::Malformed(format!(
                    "role {} defined twice",
                    role.role_index
                )));
            }
        }
        Ok(data)
    }

    /// Encodes the component's data.
    pub fn encode(&self) -> Vec<u8> {
        // Serialising into a Vec fails only for vectors longer than the varint can say (2^30).
        self.tls_serialize_detached().unwrap_or_default()
    }

    /// The role with index `index`.
    pub fn role(&self, index: u32) -> Option<&Role> {
        self.roles.iter().find(|r| r.role_index == index)
    }

    /// Whether a participant in role `index` has `capability` (an undefined role has none).
    pub fn allows(&self, index: u32, capability: u16) -> bool {
        self.role(index).is_some_and(|r| r.has(capability))
    }

    /// The neutral standing of a participant in role `index`, from what the role allows: may
    /// change other users' roles, an admin; may delete others' messages or remove
    /// participants, a moderator; may receive but not send, muted; else a member. `None` for
    /// roles 0 (no role) and 1 (banned), undefined roles and roles that may not even receive:
    /// nobody in the room.
    pub fn standing(&self, index: u32) -> Option<bridge_core::Role> {
        use bridge_core::Role as R;
        if matches!(index, ROLE_NONE | ROLE_BANNED) {
            return None;
        }
        let role = self.role(index)?;
        Some(if !role.has(CAPABILITY_CAN_RECEIVE_MESSAGE) {
            return None;
        } else if role.has(CAPABILITY_CAN_CHANGE_USER_ROLE) {
            R::Admin
        } else if role.has(CAPABILITY_CAN_DELETE_OTHER_MESSAGE)
            || role.has(CAPABILITY_CAN_KICK)
            || role.has(CAPABILITY_CAN_REMOVE_PARTICIPANT)
        {
            R::Moderator
        } else if !role.has(CAPABILITY_CAN_SEND_MESSAGE) {
            R::Muted
        } else {
            R::Member
        })
    }

    /// The role that shows `wanted` ([`RoleData::standing`]) without giving more: one of that
    /// standing, else the highest below it (MIMI's example roles have no moderator, so a
    /// moderator stays an ordinary user: a group admin could change roles and the room, and
    /// other providers would read an admin); the lowest index among equals. `None` when the
    /// room has no role at or below it (a muted user in a room without a role that only
    /// reads).
    pub fn index_for(&self, wanted: bridge_core::Role) -> Option<u32> {
        self.roles
            .iter()
            .filter_map(|r| Some((r.role_index, self.standing(r.role_index)?)))
            .filter(|&(_, standing)| standing <= wanted)
            .max_by_key(|&(index, standing)| (standing, std::cmp::Reverse(index)))
            .map(|(index, _)| index)
    }

    /// Whether a participant in role `actor` may move a participant from role `from` to `to`
    /// (its role's `authorized_role_changes`; a move to the same role is no change).
    pub fn may_change(&self, actor: u32, from: u32, to: u32) -> bool {
        from == to
            || self.role(actor).is_some_and(|r| {
                r.authorized_role_changes
                    .iter()
                    .any(|c| c.from_role_index == from && c.target_role_indexes.contains(&to))
            })
    }

    /// The role set of the rooms the bridge hosts: the "strictly administered room" of
    /// draft-ietf-mimi-room-policy-03 Appendix A.2 without the roles a bridge has no use for
    /// (super_admin, policy_enforcer) and with a read-only `visitor`:
    ///
    /// - 0 `no_role`, 1 `banned`: no capabilities, no clients;
    /// - 2 `ordinary_user`: send, react, edit and delete their own messages, upload and
    ///   download, add and remove their own clients, leave; may only leave (2 → 0);
    /// - 3 `group_admin`: all that, and add, remove, kick, ban and unban participants, change
    ///   their roles (between any of 0–4), change the room's name, description, avatar,
    ///   subject and mood, delete others' messages and reactions; at least one;
    /// - 4 `visitor` (the bridge's own): receive and download only; may only leave.
    pub fn bridge_default() -> Self {
        let mut ordinary = vec![
            CAPABILITY_CAN_ADD_OWN_CLIENT,
            CAPABILITY_CAN_JOIN_IF_PREAUTHORIZED,
            CAPABILITY_CAN_REMOVE_OWN_CLIENT,
            CAPABILITY_CAN_REMOVE_SELF,
            CAPABILITY_CAN_SEND_MESSAGE,
            CAPABILITY_CAN_RECEIVE_MESSAGE,
            CAPABILITY_CAN_COPY_MESSAGE,
            CAPABILITY_CAN_REPORT_ABUSE,
            CAPABILITY_CAN_REPLY_TO_MESSAGE,
            CAPABILITY_CAN_REACT_TO_MESSAGE,
            CAPABILITY_CAN_DELETE_OWN_REACTION,
            CAPABILITY_CAN_EDIT_OWN_MESSAGE,
            CAPABILITY_CAN_DELETE_OWN_MESSAGE,
            CAPABILITY_CAN_START_TOPIC,
            CAPABILITY_CAN_REPLY_IN_TOPIC,
        ];
        ordinary.extend(CAPABILITIES_ASSETS);
        ordinary.extend(CAPABILITIES_LINKS);
        ordinary.extend(CAPABILITIES_OWN_PROFILE);
        let mut admin = ordinary.clone();
        admin.extend([
            CAPABILITY_CAN_ADD_PARTICIPANT,
            CAPABILITY_CAN_REMOVE_PARTICIPANT,
            CAPABILITY_CAN_BAN,
            CAPABILITY_CAN_UNBAN,
            CAPABILITY_CAN_KICK,
            CAPABILITY_CAN_CHANGE_USER_ROLE,
            CAPABILITY_CAN_DELETE_OTHER_REACTION,
            CAPABILITY_CAN_DELETE_OTHER_MESSAGE,
            CAPABILITY_CAN_EDIT_OWN_TOPIC,
            CAPABILITY_CAN_EDIT_OTHER_TOPIC,
            CAPABILITY_CAN_CHANGE_ROOM_NAME,
            CAPABILITY_CAN_CHANGE_ROOM_DESCRIPTION,
            CAPABILITY_CAN_CHANGE_ROOM_AVATAR,
            CAPABILITY_CAN_CHANGE_ROOM_SUBJECT,
            CAPABILITY_CAN_CHANGE_ROOM_MOOD,
        ]);
        let mut visitor = vec![
            CAPABILITY_CAN_ADD_OWN_CLIENT,
            CAPABILITY_CAN_REMOVE_OWN_CLIENT,
            CAPABILITY_CAN_REMOVE_SELF,
            CAPABILITY_CAN_RECEIVE_MESSAGE,
        ];
        visitor.extend(0x0204..=0x0207); // canDownload{Image,Audio,Video,Attachment}
        let all = [
            ROLE_NONE,
            ROLE_BANNED,
            ROLE_ORDINARY_USER,
            ROLE_GROUP_ADMIN,
            ROLE_VISITOR,
        ];
        let admin_changes = all
            .iter()
            .map(|&from| SingleSourceRoleChangeTargets {
                from_role_index: from,
                target_role_indexes: all.iter().copied().filter(|&to| to != from).collect(),
            })
            .collect();
        let leave_only = |from| {
            vec![SingleSourceRoleChangeTargets {
                from_role_index: from,
                target_role_indexes: vec![ROLE_NONE],
            }]
        };
        let role = |index, name: &str, description: &str, capabilities, max_active, changes| Role {
            role_index: index,
            role_name: name.as_bytes().to_vec().into(),
            role_description: description.as_bytes().to_vec().into(),
            role_capabilities: capabilities,
            minimum_participants_constraint: u32::from(index == ROLE_GROUP_ADMIN),
            maximum_participants_constraint: None,
            minimum_active_participants_constraint: 0,
            maximum_active_participants_constraint: max_active,
            authorized_role_changes: changes,
        };
        Self {
            roles: vec![
                role(ROLE_NONE, "no_role", "", Vec::new(), Some(0), Vec::new()),
                role(ROLE_BANNED, "banned", "", Vec::new(), Some(0), Vec::new()),
                role(
                    ROLE_ORDINARY_USER,
                    "ordinary_user",
                    "",
                    ordinary,
                    None,
                    leave_only(ROLE_ORDINARY_USER),
                ),
                role(
                    ROLE_GROUP_ADMIN,
                    "group_admin",
                    "",
                    admin,
                    None,
                    admin_changes,
                ),
                role(
                    ROLE_VISITOR,
                    "visitor",
                    "may read, not send",
                    visitor,
                    None,
                    leave_only(ROLE_VISITOR),
                ),
            ],
        }
    }
}

/// The details of a logging policy that is not `forbidden`.
#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct LoggingDetails {
    /// The clients that log (client URIs).
    pub logging_clients: Vec<VLBytes>,
    /// A URI of a machine-readable policy, or empty.
    pub machine_readable_policy: VLBytes,
    /// A URI of a human-readable policy, or empty.
    pub human_readable_policy: VLBytes,
}

/// The logging_policy component's data.
#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
#[repr(u8)]
pub enum LoggingPolicy {
    /// Logging is optional; active when a logging client is named.
    Optional(LoggingDetails),
    /// Logging is required (the draft's `select` calls it `mandatory`); at least one client.
    Required(LoggingDetails),
    /// No client may log.
    Forbidden,
}

/// What the rooms the bridge hosts say of it, in their logging and bot policies.
pub const BRIDGE_STATEMENT: &str = "This room is bridged to other chat networks. The bridge \
decrypts every message to relay it and encrypts what it relays: end-to-end encryption ends at \
the bridge, and the bridge and the linked rooms keep what is said.";

/// A `data:` URI carrying [`BRIDGE_STATEMENT`] (RFC 2397), so that the statement travels with
/// the room instead of pointing at a page that may not exist.
pub fn bridge_statement_uri() -> String {
    let mut uri = String::from("data:text/plain;charset=utf-8,");
    for byte in BRIDGE_STATEMENT.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b',' => {
                uri.push(char::from(byte));
            }
            other => {
                let _ = write!(uri, "%{other:02X}");
            }
        }
    }
    uri
}

impl LoggingPolicy {
    /// Decodes the component's data; a required policy names at least one client.
    pub fn decode(bytes: &[u8]) -> Result<Self, RoomStateError> {
        let policy: Self = decode_exact(bytes)?;
        if let Self::Required(details) = &policy
            && details.logging_clients.is_empty()
        {
            return Err(RoomStateError::Malformed(
                "logging required without a logging client".into(),
            ));
        }
        Ok(policy)
    }

    /// Encodes the component's data.
    pub fn encode(&self) -> Vec<u8> {
        self.tls_serialize_detached().unwrap_or_default()
    }

    /// A room hosted by the bridge: logging required, by the bridge's own client `bot_client`
    /// (it decrypts everything and the linked rooms keep it), the statement as the human-readable
    /// policy.
    pub fn bridge(bot_client: &str) -> Self {
        Self::Required(LoggingDetails {
            logging_clients: vec![bot_client.as_bytes().to_vec().into()],
            machine_readable_policy: Vec::new().into(),
            human_readable_policy: bridge_statement_uri().into_bytes().into(),
        })
    }
}

/// One bot a room allows.
#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct Bot {
    /// Its name.
    pub name: VLBytes,
    /// What it does.
    pub description: VLBytes,
    /// A URI of its home page, or empty.
    pub homepage: VLBytes,
    /// True for a bot that acts only through a user's own client (not a participant).
    pub local_client_bot: TlsBool,
    /// The role it participates in (0: not a participant).
    pub bot_role_index: u32,
    /// Whether it may send MLS targeted messages or use other channels to single users out.
    pub can_target_message_in_group: TlsBool,
    /// Whether it may send different content to different members.
    pub per_user_content: TlsBool,
}

/// The bot_policy component's data.
#[derive(Debug, Clone, Default, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct BotPolicy {
    /// The bots the room allows.
    pub allowed_bots: Vec<Bot>,
}

impl BotPolicy {
    /// Decodes the component's data.
    pub fn decode(bytes: &[u8]) -> Result<Self, RoomStateError> {
        decode_exact(bytes)
    }

    /// Encodes the component's data.
    pub fn encode(&self) -> Vec<u8> {
        self.tls_serialize_detached().unwrap_or_default()
    }

    /// A room hosted by the bridge: the bridge is its one bot, a participant in role `role`,
    /// described by [`BRIDGE_STATEMENT`]; `homepage` may be empty.
    pub fn bridge(role: u32, homepage: &str) -> Self {
        Self {
            allowed_bots: vec![Bot {
                name: b"bridge".to_vec().into(),
                description: BRIDGE_STATEMENT.as_bytes().to_vec().into(),
                homepage: homepage.as_bytes().to_vec().into(),
                local_client_bot: TlsBool(false),
                bot_role_index: role,
                can_target_message_in_group: TlsBool(false),
                per_user_content: TlsBool(false),
            }],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_role_encodes_as_the_presentation_language_says() {
        let data = RoleData {
            roles: vec![Role {
                role_index: 2,
                role_name: b"u".to_vec().into(),
                role_description: Vec::new().into(),
                role_capabilities: vec![0x0100],
                minimum_participants_constraint: 0,
                maximum_participants_constraint: None,
                minimum_active_participants_constraint: 1,
                maximum_active_participants_constraint: Some(5),
                authorized_role_changes: vec![SingleSourceRoleChangeTargets {
                    from_role_index: 2,
                    target_role_indexes: vec![0],
                }],
            }],
        };
        #[rustfmt::skip]
        let role: Vec<u8> = vec![
            0, 0, 0, 2,             // role_index
            1, b'u',                // role_name<V>
            0,                      // role_description<V>
            2, 0x01, 0x00,          // role_capabilities<V>: one uint16
            0, 0, 0, 0,             // minimum_participants_constraint
            0,                      // maximum_participants_constraint: absent
            0, 0, 0, 1,             // minimum_active_participants_constraint
            1, 0, 0, 0, 5,          // maximum_active_participants_constraint: present, 5
            9, 0, 0, 0, 2, 4, 0, 0, 0, 0, // authorized_role_changes<V>: (2, [0])
        ];
        let mut expected = vec![u8::try_from(role.len()).expect("short")];
        expected.extend(role);
        assert_eq!(data.encode(), expected);
        assert_eq!(RoleData::decode(&expected), Ok(data));
    }

    #[test]
    fn the_bridge_roles_round_trip_and_say_who_may_do_what() {
        let roles = RoleData::bridge_default();
        assert_eq!(RoleData::decode(&roles.encode()), Ok(roles.clone()));
        assert!(roles.allows(ROLE_ORDINARY_USER, CAPABILITY_CAN_SEND_MESSAGE));
        assert!(roles.allows(ROLE_GROUP_ADMIN, CAPABILITY_CAN_SEND_MESSAGE));
        assert!(!roles.allows(ROLE_VISITOR, CAPABILITY_CAN_SEND_MESSAGE));
        assert!(roles.allows(ROLE_VISITOR, CAPABILITY_CAN_RECEIVE_MESSAGE));
        assert!(!roles.allows(ROLE_BANNED, CAPABILITY_CAN_SEND_MESSAGE));
        assert!(!roles.allows(ROLE_NONE, CAPABILITY_CAN_SEND_MESSAGE));
        // Standing both ways: a moderator stays an ordinary user (the set has no moderator).
        use bridge_core::Role as R;
        assert_eq!(roles.standing(ROLE_ORDINARY_USER), Some(R::Member));
        assert_eq!(roles.standing(ROLE_GROUP_ADMIN), Some(R::Admin));
        assert_eq!(roles.standing(ROLE_VISITOR), Some(R::Muted));
        assert_eq!(roles.standing(ROLE_BANNED), None);
        assert_eq!(roles.standing(ROLE_NONE), None);
        assert_eq!(roles.standing(99), None);
        assert_eq!(roles.index_for(R::Member), Some(ROLE_ORDINARY_USER));
        assert_eq!(roles.index_for(R::Muted), Some(ROLE_VISITOR));
        assert_eq!(roles.index_for(R::Moderator), Some(ROLE_ORDINARY_USER));
        assert_eq!(roles.index_for(R::Admin), Some(ROLE_GROUP_ADMIN));
        assert_eq!(roles.index_for(R::Owner), Some(ROLE_GROUP_ADMIN));
        assert_eq!(RoleData::default().index_for(R::Member), None);
        assert!(!roles.allows(99, CAPABILITY_CAN_SEND_MESSAGE));
        assert!(!roles.allows(ROLE_ORDINARY_USER, CAPABILITY_CAN_ADD_PARTICIPANT));
        assert!(roles.allows(ROLE_GROUP_ADMIN, CAPABILITY_CAN_ADD_PARTICIPANT));
        assert!(roles.may_change(ROLE_ORDINARY_USER, ROLE_ORDINARY_USER, ROLE_NONE));
        assert!(!roles.may_change(ROLE_ORDINARY_USER, ROLE_ORDINARY_USER, ROLE_GROUP_ADMIN));
        assert!(roles.may_change(ROLE_GROUP_ADMIN, ROLE_ORDINARY_USER, ROLE_VISITOR));
        assert!(roles.may_change(ROLE_GROUP_ADMIN, ROLE_NONE, ROLE_ORDINARY_USER));
        assert!(!roles.may_change(ROLE_VISITOR, ROLE_VISITOR, ROLE_ORDINARY_USER));
        assert_eq!(
            roles
                .role(ROLE_GROUP_ADMIN)
                .map(|r| r.minimum_participants_constraint),
            Some(1)
        );
    }

    #[test]
    fn the_bridge_policies_round_trip_and_carry_the_statement() {
        let logging = LoggingPolicy::bridge("mimi://hub.example/d/bridge-bot/bridge");
        assert_eq!(
            LoggingPolicy::decode(&logging.encode()),
            Ok(logging.clone())
        );
        assert_eq!(logging.encode()[0], 1, "required(1)");
        let LoggingPolicy::Required(details) = &logging else {
            panic!("{logging:?}")
        };
        let uri =
            String::from_utf8(details.human_readable_policy.as_slice().to_vec()).expect("utf-8");
        assert!(
            uri.starts_with("data:text/plain;charset=utf-8,This%20room"),
            "{uri}"
        );
        assert!(uri.is_ascii() && !uri.contains(' '), "{uri}");
        assert_eq!(LoggingPolicy::decode(&[2]), Ok(LoggingPolicy::Forbidden));
        let bots = BotPolicy::bridge(ROLE_GROUP_ADMIN, "https://hub.example/");
        assert_eq!(BotPolicy::decode(&bots.encode()), Ok(bots.clone()));
        assert!(
            String::from_utf8_lossy(bots.allowed_bots[0].description.as_slice())
                .contains("end-to-end encryption ends at the bridge")
        );
    }

    #[test]
    fn malformed_policies_are_refused() {
        // A required logging policy without clients, an unknown Optionality, a bool of 2, a
        // role defined twice, trailing bytes, truncation.
        assert!(LoggingPolicy::decode(&[1, 0, 0, 0]).is_err());
        assert!(LoggingPolicy::decode(&[3]).is_err());
        let mut bots = BotPolicy::bridge(3, "").encode();
        let flag = bots.len() - 7; // local_client_bot, before bot_role_index and two bools
        bots[flag] = 2;
        assert!(BotPolicy::decode(&bots).is_err());
        let mut twice = RoleData::bridge_default();
        twice.roles.push(twice.roles[0].clone());
        assert!(RoleData::decode(&twice.encode()).is_err());
        let mut trailing = RoleData::bridge_default().encode();
        trailing.push(0);
        assert!(RoleData::decode(&trailing).is_err());
        let full = RoleData::bridge_default().encode();
        assert!(RoleData::decode(&full[..full.len() - 1]).is_err());
    }
}
