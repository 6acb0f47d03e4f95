//! Every provisional code point the MIMI adapter uses, in one flat table.
//!
//! None of these is registered with IANA yet: each is the value a draft *suggests*, and a later
//! revision may change it. Each constant names the document, its revision and the section it
//! comes from; change them here and nowhere else.

// --- RFC 9420 (MLS), registered values -----------------------------------------------------

/// Ciphersuite `MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519` (RFC 9420 §17.1), the one MLS
/// makes mandatory to implement; every MIMI group the bridge creates uses it.
pub const CIPHERSUITE_MLS_128_DHKEMX25519_AES128GCM_SHA256_ED25519: u16 = 0x0001;

/// Credential type `basic` (RFC 9420 §17.5). draft-ietf-mimi-protocol-06 §4.2 leaves the MIMI
/// credential type a TODO; the bridge's puppets carry their client URI in a BasicCredential.
pub const CREDENTIAL_TYPE_BASIC: u16 = 0x0001;

/// Extension `external_senders` (RFC 9420 §17.3, §12.1.8.1): the hub's key, required in every
/// MIMI group by draft-ietf-mimi-protocol-06 §7.4.
pub const EXTENSION_EXTERNAL_SENDERS: u16 = 0x0005;

/// Extension `required_capabilities` (RFC 9420 §17.3, §11.1).
pub const EXTENSION_REQUIRED_CAPABILITIES: u16 = 0x0003;

// --- draft-ietf-mls-extensions-09, suggested values (§8 IANA Considerations) ---------------

/// Extension `app_data_dictionary` (draft-ietf-mls-extensions-09 §8, "app_data_dictionary MLS
/// Extension"; semantics §4.6 and "Updating Application Data in the GroupContext"). openmls
/// 0.9.2 uses the same value.
pub const EXTENSION_APP_DATA_DICTIONARY: u16 = 0x0006;

/// Proposal type `AppDataUpdate` (draft-ietf-mls-extensions-09 §8, "AppDataUpdate Proposal").
/// openmls 0.9.2 uses the same value.
pub const PROPOSAL_APP_DATA_UPDATE: u16 = 0x0008;

/// Proposal type `SelfRemove` (draft-ietf-mls-extensions-09 §8, "SelfRemove Proposal").
/// openmls 0.9.2 uses it; mls-rs 0.57 uses the private value 0xF003 instead, so the two do not
/// interoperate on it.
pub const PROPOSAL_SELF_REMOVE: u16 = 0x000a;

/// Component `app_components` (draft-ietf-mls-extensions-09 §8, "MLS Component Types").
pub const COMPONENT_APP_COMPONENTS: u16 = 0x0001;

/// Component `safe_aad` (draft-ietf-mls-extensions-09 §8, "MLS Component Types").
pub const COMPONENT_SAFE_AAD: u16 = 0x0002;

// --- draft-ietf-mimi-protocol-06, suggested values (§10 IANA Considerations) ---------------

/// Component `frank_aad`, carried as Safe AAD (draft-ietf-mimi-protocol-06 §10.1, §5.4.1).
pub const COMPONENT_FRANK_AAD: u16 = 0x0020;

/// Component `franking_signature_key` (draft-ietf-mimi-protocol-06 §10.2; "franking_agent" in
/// §5.4.1).
pub const COMPONENT_FRANKING_SIGNATURE_KEY: u16 = 0x0021;

/// Component `participant_list`: `ParticipantListData` in the GroupContext, changed by
/// `ParticipantListUpdate` in AppDataUpdate proposals (draft-ietf-mimi-protocol-06 §10.3,
/// §7.5).
pub const COMPONENT_PARTICIPANT_LIST: u16 = 0x0022;

/// Component `room_metadata`: `RoomMetaData` (draft-ietf-mimi-protocol-06 §10.4, §7.6).
pub const COMPONENT_ROOM_METADATA: u16 = 0x0023;

// --- draft-ietf-mimi-room-policy-03, suggested values (§10.1) ------------------------------

/// Component `mls_operational_policy` (draft-ietf-mimi-room-policy-03 §10.1.1, §7).
pub const COMPONENT_MLS_OPERATIONAL_POLICY: u16 = 0x0024;

/// Component `roles_list`: `RoleData` (draft-ietf-mimi-room-policy-03 §10.1.2, §3).
pub const COMPONENT_ROLES_LIST: u16 = 0x0025;

/// Component `preauth_list`: `PreAuthData` (draft-ietf-mimi-room-policy-03 §10.1.3, §4).
pub const COMPONENT_PREAUTH_LIST: u16 = 0x0026;

/// Component `base_room_policy` (draft-ietf-mimi-room-policy-03 §10.1.4, §5).
pub const COMPONENT_BASE_ROOM_POLICY: u16 = 0x0027;

/// Component `asset_policy` (draft-ietf-mimi-room-policy-03 §10.1.9, §6.4).
pub const COMPONENT_ASSET_POLICY: u16 = 0x002C;

/// Component `logging_policy` (draft-ietf-mimi-room-policy-03 §10.1.10, §6.5): where a room
/// hosted by the bridge should say that end-to-end encryption ends at the bridge.
pub const COMPONENT_LOGGING_POLICY: u16 = 0x002D;

/// Component `bot_policy` (draft-ietf-mimi-room-policy-03 §10.1.12, §6.7).
pub const COMPONENT_BOT_POLICY: u16 = 0x002F;

// --- Role indexes and capabilities (draft-ietf-mimi-room-policy-03) ------------------------

/// Role index 0: "no role", a user not (or no longer) in the participant list
/// (draft-ietf-mimi-room-policy-03 §3).
pub const ROLE_NONE: u32 = 0;

/// Role index 1: "banned" in every example role set (draft-ietf-mimi-room-policy-03
/// Appendix A); the bridge's roles keep it (`mls::policy::RoleData::bridge_default`).
pub const ROLE_BANNED: u32 = 1;

/// Role index of an ordinary participant in the example role sets
/// (draft-ietf-mimi-room-policy-03 Appendix A.2 `ordinary_user`); the role the bridge gives the
/// users it adds.
pub const ROLE_ORDINARY_USER: u32 = 2;

/// Role index of an administrator in the example role sets (draft-ietf-mimi-room-policy-03
/// Appendix A.2 `group_admin`); the role of a room's creator.
pub const ROLE_GROUP_ADMIN: u32 = 3;

/// Role index of a participant who reads but may not send: the bridge's own addition to the
/// strictly administered set of Appendix A.2 (index and name ours; like A.3's `attendee`).
pub const ROLE_VISITOR: u32 = 4;

// Capabilities (draft-ietf-mimi-room-policy-03 §10.2 "MIMI Role Capabilities", §8). Only those
// the bridge's role set grants or its checks read are named here.

/// `canAddParticipant` (§8.1.1): add another user to the participant list, and their clients.
pub const CAPABILITY_CAN_ADD_PARTICIPANT: u16 = 0x0000;
/// `canRemoveParticipant` (§8.1.2): take another user off the list, with their clients.
pub const CAPABILITY_CAN_REMOVE_PARTICIPANT: u16 = 0x0001;
/// `canAddOwnClient` (§8.1.1): add a client of one's own user.
pub const CAPABILITY_CAN_ADD_OWN_CLIENT: u16 = 0x0002;
/// `canRemoveOwnClient` (§8.1.2): remove a client of one's own user.
pub const CAPABILITY_CAN_REMOVE_OWN_CLIENT: u16 = 0x0003;
/// `canJoinIfPreauthorized` (§8.1.1).
pub const CAPABILITY_CAN_JOIN_IF_PREAUTHORIZED: u16 = 0x0005;
/// `canRemoveSelf` (§8.1.2): leave (take oneself off the list).
pub const CAPABILITY_CAN_REMOVE_SELF: u16 = 0x0006;
/// `canBan` (§8.1.3): move a participant to the banned role.
pub const CAPABILITY_CAN_BAN: u16 = 0x000a;
/// `canUnBan` (§8.1.3): move a participant out of the banned role.
pub const CAPABILITY_CAN_UNBAN: u16 = 0x000b;
/// `canKick` (§8.1.2): remove another participant's clients (and entry).
pub const CAPABILITY_CAN_KICK: u16 = 0x000c;
/// `canChangeUserRole` (§8.1.3): change another participant's role.
pub const CAPABILITY_CAN_CHANGE_USER_ROLE: u16 = 0x000f;
/// `canChangeOwnRole` (§8.1.3): change one's own role.
pub const CAPABILITY_CAN_CHANGE_OWN_ROLE: u16 = 0x0010;
/// `canSendMessage` (§8.3): the one message capability a hub can enforce.
pub const CAPABILITY_CAN_SEND_MESSAGE: u16 = 0x0100;
/// `canReceiveMessage` (§8.3).
pub const CAPABILITY_CAN_RECEIVE_MESSAGE: u16 = 0x0101;
/// `canCopyMessage` (§8.3).
pub const CAPABILITY_CAN_COPY_MESSAGE: u16 = 0x0102;
/// `canReportAbuse` (§8.3).
pub const CAPABILITY_CAN_REPORT_ABUSE: u16 = 0x0103;
/// `canReplyToMessage` (§8.3).
pub const CAPABILITY_CAN_REPLY_TO_MESSAGE: u16 = 0x0104;
/// `canReactToMessage` (§8.3).
pub const CAPABILITY_CAN_REACT_TO_MESSAGE: u16 = 0x0105;
/// `canDeleteOwnReaction` (§8.3).
pub const CAPABILITY_CAN_DELETE_OWN_REACTION: u16 = 0x0107;
/// `canDeleteOtherReaction` (§8.3).
pub const CAPABILITY_CAN_DELETE_OTHER_REACTION: u16 = 0x0108;
/// `canEditOwnMessage` (§8.3).
pub const CAPABILITY_CAN_EDIT_OWN_MESSAGE: u16 = 0x0109;
/// `canDeleteOwnMessage` (§8.3).
pub const CAPABILITY_CAN_DELETE_OWN_MESSAGE: u16 = 0x010a;
/// `canDeleteOtherMessage` (§8.3).
pub const CAPABILITY_CAN_DELETE_OTHER_MESSAGE: u16 = 0x010b;
/// `canStartTopic` (§8.3).
pub const CAPABILITY_CAN_START_TOPIC: u16 = 0x010c;
/// `canReplyInTopic` (§8.3).
pub const CAPABILITY_CAN_REPLY_IN_TOPIC: u16 = 0x010d;
/// `canEditOwnTopic` (§8.3).
pub const CAPABILITY_CAN_EDIT_OWN_TOPIC: u16 = 0x010e;
/// `canEditOtherTopic` (§8.3).
pub const CAPABILITY_CAN_EDIT_OTHER_TOPIC: u16 = 0x010f;
/// `canUploadImage` … `canDownloadAttachment` (§8.4), 0x0200–0x0207.
pub const CAPABILITIES_ASSETS: std::ops::RangeInclusive<u16> = 0x0200..=0x0207;
/// `canSendLink` … `canCopyLink` (§8.3, numbered with the assets), 0x0208–0x020b.
pub const CAPABILITIES_LINKS: std::ops::RangeInclusive<u16> = 0x0208..=0x020b;
/// `canChangeRoomName` (§8.2).
pub const CAPABILITY_CAN_CHANGE_ROOM_NAME: u16 = 0x0300;
/// `canChangeRoomDescription` (§8.2).
pub const CAPABILITY_CAN_CHANGE_ROOM_DESCRIPTION: u16 = 0x0301;
/// `canChangeRoomAvatar` (§8.2).
pub const CAPABILITY_CAN_CHANGE_ROOM_AVATAR: u16 = 0x0302;
/// `canChangeRoomSubject` (§8.2).
pub const CAPABILITY_CAN_CHANGE_ROOM_SUBJECT: u16 = 0x0303;
/// `canChangeRoomMood` (§8.2).
pub const CAPABILITY_CAN_CHANGE_ROOM_MOOD: u16 = 0x0304;
/// `canChangeOwnName` … `canChangeOwnAvatar` (§8.7, reserved), 0x0380–0x0383.
pub const CAPABILITIES_OWN_PROFILE: std::ops::RangeInclusive<u16> = 0x0380..=0x0383;
/// `canChangeRoleDefinitions` (§8.6): replace the roles_list component.
pub const CAPABILITY_CAN_CHANGE_ROLE_DEFINITIONS: u16 = 0x0503;
/// `canSendMLSReinitProposal` (§8.6).
pub const CAPABILITY_CAN_SEND_MLS_REINIT_PROPOSAL: u16 = 0x0601;
