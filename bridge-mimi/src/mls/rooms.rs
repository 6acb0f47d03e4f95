//! Rooms: the MLS group of each room the bridge's puppets are members of, and the room state
//! in its GroupContext (draft-ietf-mimi-protocol-06 §3, §7).
//!
//! Record `mls/r/<room URI>` → the room's profile and the puppets of this host that are members.
//! A handshake one puppet makes (a commit, a proposal) is processed at once by the other local
//! members, so every puppet's view of the group stays current; application messages are
//! decrypted by one local member only (see [`MlsHost::decrypt`]).

use openmls::component::ComponentData;
use openmls::prelude::*;
use serde::{Deserialize, Serialize};
use tls_codec::{Deserialize as _, Serialize as _};

use super::clients::capabilities;
use super::metadata::RoomMetadata;
use super::participants::{
    ParticipantListData, ParticipantListUpdate, RoomStateError, UserIndexRolePair, UserRolePair,
};
use super::policy::{BotPolicy, LoggingPolicy, RoleData};
use super::uri::{ClientUri, RoomUri, UserUri};
use super::{CIPHERSUITE, Checked, MlsError, MlsHost, Provider, Tx, group_key, mls_err};
use crate::codepoints::*;

/// The shape of a room's group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RoomProfile {
    /// MIMI: `required_capabilities` with `app_data_dictionary` and AppDataUpdate, the
    /// participant list in the GroupContext, the hub in `external_senders`.
    Mimi,
    /// Plain RFC 9420 with the hub in `external_senders` and no room state in the group: for
    /// peers without the mls-extensions draft (mls-rs).
    Plain,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RoomRecord {
    profile: RoomProfile,
    /// User URIs of this host's puppets that are members, in joining order.
    local_members: Vec<String>,
}

/// A decryption kept by [`MlsHost::decrypt_once`]: the sender (none: our own message) and
/// the plaintext.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeptDecryption {
    sender: Option<String>,
    plaintext: Vec<u8>,
}

/// A participant of a room: a user URI and its role index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Participant {
    /// The user's URI.
    pub user: String,
    /// The role index (draft-ietf-mimi-room-policy §3).
    pub role_index: u32,
}

impl Participant {
    /// Whether the participant is in the room: listed with a role other than 0 (no role) or 1
    /// (banned), the two every role set of draft-ietf-mimi-room-policy-03 gives no clients.
    pub fn present(&self) -> bool {
        !matches!(self.role_index, ROLE_NONE | ROLE_BANNED)
    }

    /// Whether the participant is listed as banned (role 1): kept on the list, without
    /// clients, and not added again by asking.
    pub fn banned(&self) -> bool {
        self.role_index == ROLE_BANNED
    }
}

/// What a commit made by one of this host's puppets produced: everything `/update` and
/// `/notify` carry (draft-ietf-mimi-protocol-06 §5.3, §5.5).
#[derive(Debug, Clone)]
pub struct CommitOutput {
    /// The Commit, an `MLSMessage` (PublicMessage).
    pub commit: Vec<u8>,
    /// The Welcome for added clients, an `MLSMessage`.
    pub welcome: Option<Vec<u8>>,
    /// The new epoch's GroupInfo, an `MLSMessage`.
    pub group_info: Option<Vec<u8>>,
    /// The ratchet tree (`RatchetTree`, TLS-encoded), for a `RatchetTreeOption` of type full.
    pub ratchet_tree: Vec<u8>,
    /// The new epoch.
    pub epoch: u64,
    /// The participant list after the commit.
    pub participants: Vec<Participant>,
}

/// A decrypted application message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decrypted {
    /// The sender's credential identity (a client URI for MIMI peers).
    pub sender: String,
    /// The plaintext.
    pub plaintext: Vec<u8>,
}

/// What processing an incoming message did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Processed {
    /// A commit was merged: the new epoch and participant list.
    Commit {
        /// The new epoch.
        epoch: u64,
        /// The participant list after the commit.
        participants: Vec<Participant>,
        /// Local puppets the commit removed.
        removed: Vec<UserUri>,
        /// The users the commit removed (ours or not) that another member took out (a
        /// moderator, or the hub's bot standing for one), with that member's user: not their
        /// own leave. Once per user, whatever the number of their clients.
        removed_by: Vec<(UserUri, UserUri)>,
    },
    /// A proposal was queued for the next commit.
    Proposal,
    /// An application message.
    Application(Decrypted),
    /// An application message one of this host's puppets sent (it cannot be decrypted by its
    /// sender, and no other local member could).
    Own,
    /// A Welcome: these puppets joined the room.
    Joined {
        /// The room.
        room: RoomUri,
        /// The puppets that joined.
        users: Vec<UserUri>,
    },
}

fn room_key(room: &RoomUri) -> String {
    format!("mls/r/{room}")
}

pub(crate) fn group_id(room: &RoomUri) -> GroupId {
    GroupId::from_slice(room.group_uri().as_bytes())
}

/// Epochs whose message secrets a member keeps after a commit, so that application messages
/// sent just before it (in flight while the hub fanned the commit out) still decrypt.
pub const PAST_EPOCHS: usize = 3;

fn join_config() -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder()
        .wire_format_policy(MIXED_PLAINTEXT_WIRE_FORMAT_POLICY)
        .max_past_epochs(PAST_EPOCHS)
        .use_ratchet_tree_extension(true)
        .build()
}

fn to_bytes(message: &MlsMessageOut) -> Result<Vec<u8>, MlsError> {
    message
        .tls_serialize_detached()
        .map_err(|e| mls_err("encode")(&e))
}

/// The credential identity of `credential`, as text.
pub(crate) fn identity_of(credential: &Credential) -> String {
    BasicCredential::try_from(credential.clone())
        .map(|c| String::from_utf8_lossy(c.identity()).into_owned())
        .unwrap_or_default()
}

/// The user whose client `credential` names, if it names a client URI.
fn user_of(credential: &Credential) -> Option<UserUri> {
    ClientUri::parse(&identity_of(credential))
        .ok()
        .map(|c| c.user().clone())
}

/// The user whose client is at `leaf` of `group`.
fn user_of_leaf(group: &MlsGroup, leaf: LeafNodeIndex) -> Option<UserUri> {
    group.member(leaf).and_then(user_of)
}

/// The room's roles (`roles_list`), or the bridge's default set when the group has none.
fn roles_of(group: &MlsGroup) -> Result<RoleData, MlsError> {
    match component(group.extensions(), COMPONENT_ROLES_LIST) {
        Some(bytes) => Ok(RoleData::decode(bytes)?),
        None => Ok(RoleData::bridge_default()),
    }
}

/// The data of component `id` in GroupContext extensions `extensions`.
fn component(extensions: &Extensions<GroupContext>, id: u16) -> Option<&[u8]> {
    extensions
        .app_data_dictionary()
        .and_then(|ext| ext.dictionary().get(&id))
}

/// Checks proposals, in the order a commit applies them, against the capabilities of each
/// proposer's role in the room's roles_list (draft-ietf-mimi-room-policy-03 §3, §8; docs/mimi.md
/// "Who may propose what"). A proposer's role is the one they hold before the commit (a user
/// not on the participant list: role 0, no capabilities). The participant list the updates'
/// indexes refer to moves along as each update is checked, so that an index means what it will
/// mean when that update is applied (two removals in one commit shift the second
/// one's indexes); [`PolicyCheck::finish`] then checks that every user these proposals take
/// off the list or ban has no client left (§8.1.2, §8.1.3: removing or banning a participant
/// removes their clients), so that every client in the group belongs to a present participant.
struct PolicyCheck<'g> {
    group: &'g MlsGroup,
    roles: RoleData,
    /// The participant list before the commit: whose role is what.
    before: ParticipantListData,
    /// The participant list as the proposals checked so far leave it.
    list: ParticipantListData,
    /// Leaves removed by the proposals checked so far.
    removed: std::collections::HashSet<LeafNodeIndex>,
    /// Users taken off the list or banned by the proposals checked so far.
    gone: Vec<UserUri>,
    /// Users whose clients the commit adds (Add proposals, the committer of an external
    /// commit).
    added: Vec<UserUri>,
}

impl<'g> PolicyCheck<'g> {
    fn new(group: &'g MlsGroup) -> Result<Self, MlsError> {
        let list = component(group.extensions(), COMPONENT_PARTICIPANT_LIST)
            .map(ParticipantListData::decode)
            .transpose()?
            .unwrap_or_default();
        Ok(Self {
            group,
            roles: roles_of(group)?,
            before: list.clone(),
            list,
            removed: std::collections::HashSet::new(),
            gone: Vec::new(),
            added: Vec::new(),
        })
    }

    /// The role of `user` before the commit.
    fn role_of(&self, user: &[u8]) -> u32 {
        self.before
            .participants
            .iter()
            .find(|p| p.user.as_slice() == user)
            .map_or(ROLE_NONE, |p| p.role_index)
    }

    /// Whether `proposer` (whose client is at `leaf`, if a member) may make `proposal` after
    /// the proposals checked before it.
    fn check(
        &mut self,
        proposer: &UserUri,
        leaf: Option<LeafNodeIndex>,
        proposal: &Proposal,
    ) -> Result<(), MlsError> {
        let name = proposer.to_string();
        let role = self.role_of(name.as_bytes());
        let roles = &self.roles;
        let can = |capability| roles.allows(role, capability);
        let refuse = |why: String| {
            Err(MlsError::NotAllowed(format!(
                "{proposer} (role {role}) {why}"
            )))
        };
        match proposal {
            Proposal::Remove(remove) => {
                let own = user_of_leaf(self.group, remove.removed()).as_ref() == Some(proposer);
                if own && !can(CAPABILITY_CAN_REMOVE_OWN_CLIENT) {
                    return refuse("may not remove their own clients".into());
                }
                if !own && !can(CAPABILITY_CAN_REMOVE_PARTICIPANT) && !can(CAPABILITY_CAN_KICK) {
                    return refuse("may remove only their own clients".into());
                }
                self.removed.insert(remove.removed());
            }
            Proposal::Add(add) => {
                let identity = identity_of(add.key_package().leaf_node().credential());
                let user = ClientUri::parse(&identity).map(|c| c.user().clone());
                let own = user.as_ref().ok() == Some(proposer);
                if own && !can(CAPABILITY_CAN_ADD_OWN_CLIENT) {
                    return refuse("may not add clients of their own".into());
                }
                if !own && !can(CAPABILITY_CAN_ADD_PARTICIPANT) {
                    return refuse(format!("may add only clients of their own, not {identity}"));
                }
                self.added.extend(user.ok());
            }
            Proposal::AppDataUpdate(update) => {
                let AppDataUpdateOperation::Update(bytes) = update.operation() else {
                    return refuse(format!(
                        "may not remove component {:#06x}",
                        update.component_id()
                    ));
                };
                match update.component_id() {
                    COMPONENT_PARTICIPANT_LIST => {
                        let change = ParticipantListUpdate::decode(bytes.as_slice())?;
                        self.check_list_update(&name, role, &change)?;
                        self.list = self.list.apply(&change)?;
                    }
                    COMPONENT_ROOM_METADATA => {
                        let new = RoomMetadata::decode(bytes.as_slice())?;
                        let old = component(self.group.extensions(), COMPONENT_ROOM_METADATA)
                            .map(RoomMetadata::decode)
                            .transpose()?;
                        for (field, capability) in metadata_changes(old.as_ref(), &new) {
                            if !can(capability) {
                                return refuse(format!("may not change the room's {field}"));
                            }
                        }
                    }
                    COMPONENT_ROLES_LIST if can(CAPABILITY_CAN_CHANGE_ROLE_DEFINITIONS) => {}
                    other => {
                        return refuse(format!("may not change room state component {other:#06x}"));
                    }
                }
            }
            // mls-extensions' SelfRemove takes the proposer's own client out.
            Proposal::SelfRemove => {
                if !can(CAPABILITY_CAN_REMOVE_OWN_CLIENT) {
                    return refuse("may not remove their own clients".into());
                }
                self.removed.extend(leaf);
            }
            Proposal::ReInit(_) if can(CAPABILITY_CAN_SEND_MLS_REINIT_PROPOSAL) => {}
            Proposal::GroupContextExtensions(_) | Proposal::ReInit(_) => {
                return refuse("may not change the group's settings".into());
            }
            _ => {}
        }
        Ok(())
    }

    /// A participant-list update by `name` in role `role`, against the list as it stands.
    fn check_list_update(
        &mut self,
        name: &str,
        role: u32,
        change: &ParticipantListUpdate,
    ) -> Result<(), MlsError> {
        let roles = &self.roles;
        let can = |capability| roles.allows(role, capability);
        let refuse = |why: String| Err(MlsError::NotAllowed(format!("{name} (role {role}) {why}")));
        let user_at = |index: u32| {
            self.list
                .participants
                .get(index as usize)
                .ok_or(MlsError::RoomState(RoomStateError::IndexOutOfRange(index)))
        };
        for added in &change.added_participants {
            if !can(CAPABILITY_CAN_ADD_PARTICIPANT)
                || !roles.may_change(role, ROLE_NONE, added.role_index)
            {
                return refuse(format!(
                    "may not add {} as role {}",
                    added.user_str(),
                    added.role_index
                ));
            }
        }
        let mut gone = Vec::new();
        for changed in &change.changed_role_participants {
            let target = user_at(changed.user_index)?;
            let (from, to) = (target.role_index, changed.role_index);
            let needed = if to == ROLE_NONE {
                // §8.1.3: a role change targets a role; leaving the list is a removal.
                return refuse(format!(
                    "may not move {} to role 0 (a removal does that)",
                    target.user_str()
                ));
            } else if target.user.as_slice() == name.as_bytes() {
                CAPABILITY_CAN_CHANGE_OWN_ROLE
            } else if to == ROLE_BANNED {
                CAPABILITY_CAN_BAN
            } else if from == ROLE_BANNED {
                CAPABILITY_CAN_UNBAN
            } else {
                CAPABILITY_CAN_CHANGE_USER_ROLE
            };
            if !can(needed) || !roles.may_change(role, from, to) {
                return refuse(format!(
                    "may not move {} from role {from} to {to}",
                    target.user_str()
                ));
            }
            if to == ROLE_BANNED {
                gone.push(target.user_str());
            }
        }
        for &index in &change.removed_indices {
            let target = user_at(index)?;
            // §8.1.2: canKick removes clients, not the participant.
            let allowed = if target.user.as_slice() == name.as_bytes() {
                can(CAPABILITY_CAN_REMOVE_SELF)
            } else {
                can(CAPABILITY_CAN_REMOVE_PARTICIPANT)
            };
            if !allowed || !roles.may_change(role, target.role_index, ROLE_NONE) {
                return refuse(format!(
                    "may not take {} off the participant list",
                    target.user_str()
                ));
            }
            gone.push(target.user_str());
        }
        for user in gone {
            // A user URI that does not parse has no client of ours to keep: nothing to check.
            if let Ok(user) = UserUri::parse(&user) {
                self.gone.push(user);
            }
        }
        Ok(())
    }

    /// After the last proposal: every user taken off the list or banned has no client left.
    fn finish(self) -> Result<(), MlsError> {
        for user in &self.gone {
            let kept = self.group.members().any(|m| {
                !self.removed.contains(&m.index) && user_of(&m.credential).as_ref() == Some(user)
            });
            if kept {
                return Err(MlsError::NotAllowed(format!(
                    "{user} taken off the participant list or banned, with a client of theirs \
                     kept in the group"
                )));
            }
        }
        self.check_constraints()
    }

    /// The roles' participant-count constraints (room-policy §3: participants per role, and
    /// those of them with a client in the group). Only a count the commit changes is held to
    /// them, so a room that is already outside a bound (or a role list changed under it) can
    /// still make every commit that does not move that count.
    fn check_constraints(&self) -> Result<(), MlsError> {
        let name_of = |m: &Member| user_of(&m.credential).map(|u| u.to_string().into_bytes());
        let active_before: std::collections::HashSet<Vec<u8>> =
            self.group.members().filter_map(|m| name_of(&m)).collect();
        let active_after: std::collections::HashSet<Vec<u8>> = self
            .group
            .members()
            .filter(|m| !self.removed.contains(&m.index))
            .filter_map(|m| name_of(&m))
            .chain(self.added.iter().map(|u| u.to_string().into_bytes()))
            .collect();
        let count = |list: &ParticipantListData,
                     role: u32,
                     active: Option<&std::collections::HashSet<Vec<u8>>>| {
            list.participants
                .iter()
                .filter(|p| {
                    p.role_index == role && active.is_none_or(|a| a.contains(p.user.as_slice()))
                })
                .count()
        };
        for role in &self.roles.roles {
            let index = role.role_index;
            let bounds = [
                (
                    "participants",
                    count(&self.before, index, None),
                    count(&self.list, index, None),
                    role.minimum_participants_constraint,
                    role.maximum_participants_constraint,
                ),
                (
                    "participants with a client in the group",
                    count(&self.before, index, Some(&active_before)),
                    count(&self.list, index, Some(&active_after)),
                    role.minimum_active_participants_constraint,
                    role.maximum_active_participants_constraint,
                ),
            ];
            for (what, before, after, min, max) in bounds {
                if before == after {
                    continue;
                }
                let after32 = u32::try_from(after).unwrap_or(u32::MAX);
                let name = String::from_utf8_lossy(role.role_name.as_slice());
                if after32 < min {
                    return Err(MlsError::NotAllowed(format!(
                        "role {index} ({name}) would have {after} {what}, fewer than its minimum {min}"
                    )));
                }
                if let Some(max) = max.filter(|&max| after32 > max) {
                    return Err(MlsError::NotAllowed(format!(
                        "role {index} ({name}) would have {after} {what}, more than its maximum {max}"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Adds to `update` what admitting `user` with `role_index` takes, given the participant list
/// `list`: an entry if they are not listed, a role change if they are listed but not present
/// (banned, no role: a re-admission), nothing if they are present or `update` already
/// admits them.
fn admit(
    list: &[Participant],
    user: &str,
    role_index: u32,
    update: &mut ParticipantListUpdate,
) -> Result<(), MlsError> {
    let listed = list.iter().position(|p| p.user == user);
    let admitted = update
        .added_participants
        .iter()
        .any(|p| p.user.as_slice() == user.as_bytes())
        || update
            .changed_role_participants
            .iter()
            .any(|c| Some(c.user_index as usize) == listed);
    match listed {
        _ if admitted => {}
        None => update
            .added_participants
            .push(UserRolePair::new(user, role_index)),
        Some(index) if !list[index].present() => {
            update.changed_role_participants.push(UserIndexRolePair {
                user_index: u32::try_from(index)
                    .map_err(|_| MlsError::Malformed("participant index".into()))?,
                role_index,
            });
        }
        Some(_) => {}
    }
    Ok(())
}

/// The fields of room metadata that differ between `old` (none: never set) and `new`, each
/// with the capability that changing it needs (draft-ietf-mimi-room-policy-03 §8.2). The room
/// URI needs the name's.
fn metadata_changes(old: Option<&RoomMetadata>, new: &RoomMetadata) -> Vec<(&'static str, u16)> {
    let empty = RoomMetadata::new("", "", "");
    let old = old.unwrap_or(&empty);
    let mut changes = Vec::new();
    if old.room_uri != new.room_uri && !(old.room_uri.as_slice().is_empty()) {
        changes.push(("URI", CAPABILITY_CAN_CHANGE_ROOM_NAME));
    }
    if old.room_name != new.room_name {
        changes.push(("name", CAPABILITY_CAN_CHANGE_ROOM_NAME));
    }
    if old.room_descriptions != new.room_descriptions {
        changes.push(("description", CAPABILITY_CAN_CHANGE_ROOM_DESCRIPTION));
    }
    if old.room_avatar != new.room_avatar {
        changes.push(("avatar", CAPABILITY_CAN_CHANGE_ROOM_AVATAR));
    }
    if old.room_subject != new.room_subject {
        changes.push(("subject", CAPABILITY_CAN_CHANGE_ROOM_SUBJECT));
    }
    if old.room_mood != new.room_mood {
        changes.push(("mood", CAPABILITY_CAN_CHANGE_ROOM_MOOD));
    }
    changes
}

/// Whether `user` may send application messages in `group`: their role has `canSendMessage`
/// (draft-ietf-mimi-room-policy-03 §8.3, the one message capability a hub enforces). A group
/// without a participant list (a plain RFC 9420 group) lets every member send.
fn may_send(group: &MlsGroup, user: &str) -> Result<(), MlsError> {
    if role_allows(group, user, CAPABILITY_CAN_SEND_MESSAGE)? != Some(false) {
        Ok(())
    } else {
        Err(MlsError::NotAllowed(format!(
            "{user} (role {}) may not send messages in this room",
            role_index(group, user)?.unwrap_or(ROLE_NONE)
        )))
    }
}

/// `user`'s role index in `group`'s participant list (`None`: the group has no list).
fn role_index(group: &MlsGroup, user: &str) -> Result<Option<u32>, MlsError> {
    let Some(list) = component(group.extensions(), COMPONENT_PARTICIPANT_LIST) else {
        return Ok(None);
    };
    Ok(Some(
        ParticipantListData::role_in(list, user.as_bytes())?.unwrap_or(ROLE_NONE),
    ))
}

/// Whether `user`'s role in `group` has `capability` (`None`: the group has no participant
/// list, so no roles).
fn role_allows(group: &MlsGroup, user: &str, capability: u16) -> Result<Option<bool>, MlsError> {
    match role_index(group, user)? {
        Some(role) => Ok(Some(roles_of(group)?.allows(role, capability))),
        None => Ok(None),
    }
}

/// Whether the commit `staged`, by `committer` (a client of provider `domain`), may be merged
/// in `group`: the committer belongs to `domain`, and each proposal it carries is allowed to
/// whoever proposed it ([`PolicyCheck`]; the committer for its own and an external joiner's,
/// the hub's own external proposals always).
fn may_commit(
    group: &MlsGroup,
    committer: &str,
    domain: &str,
    staged: &StagedCommit,
    external: bool,
) -> Result<(), MlsError> {
    let committer = ClientUri::parse(committer)
        .map(|c| c.user().clone())
        .map_err(|_| {
            MlsError::InvalidStateChange(format!("a committer {committer} without a client URI"))
        })?;
    if !committer.domain().eq_ignore_ascii_case(domain) {
        return Err(MlsError::InvalidStateChange(format!(
            "{committer} does not belong to {domain}"
        )));
    }
    let mut check = PolicyCheck::new(group)?;
    if external {
        check.added.push(committer.clone());
    }
    // An external commit adds the committer's client: §8.1.1, a listed user whose role has
    // canAddOwnClient (a banned user, or one not listed, may not join so).
    if external
        && !check.roles.allows(
            check.role_of(committer.to_string().as_bytes()),
            CAPABILITY_CAN_ADD_OWN_CLIENT,
        )
    {
        return Err(MlsError::NotAllowed(format!(
            "{committer} may not join the room by external commit"
        )));
    }
    for queued in staged.queued_proposals() {
        let proposer = match queued.sender() {
            Sender::Member(leaf) => user_of_leaf(group, *leaf).ok_or_else(|| {
                MlsError::InvalidStateChange("a proposer without a client URI".into())
            })?,
            Sender::NewMemberCommit | Sender::NewMemberProposal => committer.clone(),
            Sender::External(_) => continue,
        };
        let leaf = match queued.sender() {
            Sender::Member(leaf) => Some(*leaf),
            _ => None,
        };
        check.check(&proposer, leaf, queued.proposal())?;
    }
    check.finish()
}

/// The participant list in `group`'s context (empty for [`RoomProfile::Plain`]).
fn participants_of(group: &MlsGroup) -> Result<Vec<Participant>, MlsError> {
    participants_in(group.extensions())
}

/// The participant list in GroupContext extensions `extensions`.
pub(crate) fn participants_in(
    extensions: &Extensions<GroupContext>,
) -> Result<Vec<Participant>, MlsError> {
    let Some(data) = extensions
        .app_data_dictionary()
        .and_then(|ext| ext.dictionary().get(&COMPONENT_PARTICIPANT_LIST))
    else {
        return Ok(Vec::new());
    };
    Ok(ParticipantListData::decode(data)?
        .participants
        .iter()
        .map(|p| Participant {
            user: p.user_str(),
            role_index: p.role_index,
        })
        .collect())
}

/// Computes the new `app_data_dictionary` entries from AppDataUpdate proposals (in commit
/// order): the participant list applies each `ParticipantListUpdate` in turn (§7.5), room
/// metadata and the policy components (roles_list, logging_policy, bot_policy) take their single
/// update's value once it decodes (§7.6; room-policy-03 §3, §6); any other component is
/// refused. Who may make each update is [`PolicyCheck`]'s question, asked where proposals come
/// from followers; here only validity.
pub(crate) fn resolve_app_data<'a>(
    updater: &mut AppDataDictionaryUpdater<'_>,
    proposals: impl Iterator<Item = &'a AppDataUpdateProposal>,
) -> Result<(), MlsError> {
    let mut list: Option<ParticipantListData> = None;
    let mut metadata_updates = 0;
    let mut replaced = std::collections::HashSet::new();
    for proposal in proposals {
        let id = proposal.component_id();
        match (id, proposal.operation()) {
            (COMPONENT_PARTICIPANT_LIST, AppDataUpdateOperation::Update(bytes)) => {
                let current = match list.take() {
                    Some(list) => list,
                    None => updater
                        .old_value(id)
                        .map(ParticipantListData::decode)
                        .transpose()?
                        .unwrap_or_default(),
                };
                let update = ParticipantListUpdate::decode(bytes.as_slice())?;
                list = Some(current.apply(&update)?);
            }
            (COMPONENT_ROOM_METADATA, AppDataUpdateOperation::Update(bytes)) => {
                metadata_updates += 1;
                if metadata_updates > 1 {
                    return Err(MlsError::InvalidStateChange(
                        "more than one room_metadata update in a commit".into(),
                    ));
                }
                RoomMetadata::decode(bytes.as_slice())?;
                updater.set(ComponentData::from_parts(
                    id,
                    bytes.as_slice().to_vec().into(),
                ));
            }
            (
                COMPONENT_ROLES_LIST | COMPONENT_LOGGING_POLICY | COMPONENT_BOT_POLICY,
                AppDataUpdateOperation::Update(bytes),
            ) => {
                if !replaced.insert(id) {
                    return Err(MlsError::InvalidStateChange(format!(
                        "more than one update of component {id:#06x} in a commit"
                    )));
                }
                match id {
                    COMPONENT_ROLES_LIST => drop(RoleData::decode(bytes.as_slice())?),
                    COMPONENT_LOGGING_POLICY => drop(LoggingPolicy::decode(bytes.as_slice())?),
                    _ => drop(BotPolicy::decode(bytes.as_slice())?),
                }
                updater.set(ComponentData::from_parts(
                    id,
                    bytes.as_slice().to_vec().into(),
                ));
            }
            (
                COMPONENT_PARTICIPANT_LIST
                | COMPONENT_ROOM_METADATA
                | COMPONENT_ROLES_LIST
                | COMPONENT_LOGGING_POLICY
                | COMPONENT_BOT_POLICY,
                AppDataUpdateOperation::Remove,
            ) => {
                return Err(MlsError::InvalidStateChange(format!(
                    "removal of component {id:#06x}"
                )));
            }
            (other, _) => {
                return Err(MlsError::InvalidStateChange(format!(
                    "unknown component {other:#06x}"
                )));
            }
        }
    }
    if list.is_some() && replaced.contains(&COMPONENT_ROLES_LIST) {
        // draft-ietf-mimi-room-policy-03 §3: "not valid if it appear[s] in the same commit as
        // any Participant List change".
        return Err(MlsError::InvalidStateChange(
            "roles_list and the participant list changed in one commit".into(),
        ));
    }
    if let Some(list) = list {
        updater.set(ComponentData::from_parts(
            COMPONENT_PARTICIPANT_LIST,
            list.encode().into(),
        ));
    }
    Ok(())
}

impl MlsHost {
    fn room_record(&self, tx: &Tx, room: &RoomUri) -> Result<RoomRecord, MlsError> {
        self.get_record(tx, &room_key(room))?
            .ok_or_else(|| MlsError::UnknownRoom(room.to_string()))
    }

    fn local_members(&self, record: &RoomRecord) -> Result<Vec<UserUri>, MlsError> {
        record
            .local_members
            .iter()
            .map(|u| {
                UserUri::parse(u).map_err(|e| MlsError::Malformed(format!("stored user: {e}")))
            })
            .collect()
    }

    /// `user`'s puppet's view of `room`'s group, from the cache or the store.
    fn load_group<'h, 't>(
        &'h self,
        tx: &'t Tx,
        room: &RoomUri,
        user: &UserUri,
    ) -> Result<(Checked<'t, MlsGroup>, Provider<'h>), MlsError> {
        let provider = self.client_provider(tx, user);
        let owner = user.puppet_client().to_string();
        let group = self
            .checkout::<MlsGroup>(tx, &owner, provider.storage(), &group_id(room))?
            .ok_or_else(|| MlsError::NotAMember {
                room: room.to_string(),
                user: user.to_string(),
            })?;
        Ok((group, provider))
    }

    /// Creates `room`'s group with `creator`'s puppet as its only member (and the creator as
    /// admin in the participant list for [`RoomProfile::Mimi`]) and this host as the hub
    /// (`external_senders`). Returns the participant list.
    pub fn create_room(
        &self,
        room: &RoomUri,
        creator: &UserUri,
        profile: RoomProfile,
    ) -> Result<Vec<Participant>, MlsError> {
        self.transaction(|tx| {
            if self
                .get_record::<RoomRecord>(tx, &room_key(room))?
                .is_some()
            {
                return Err(MlsError::RoomExists(room.to_string()));
            }
            let hub = self.hub_identity(tx)?;
            let identity = self.client_identity(tx, creator)?;
            let provider = self.client_provider(tx, creator);
            let mut extensions = vec![Extension::ExternalSenders(vec![ExternalSender::new(
                hub.credential.signature_key.clone(),
                hub.credential.credential.clone(),
            )])];
            if profile == RoomProfile::Mimi {
                extensions.push(Extension::RequiredCapabilities(
                    RequiredCapabilitiesExtension::new(
                        &[ExtensionType::AppDataDictionary],
                        &[ProposalType::AppDataUpdate],
                        &[],
                    ),
                ));
                let list = ParticipantListData::default().apply(&ParticipantListUpdate::add(
                    &creator.to_string(),
                    ROLE_GROUP_ADMIN,
                ))?;
                let mut dictionary = AppDataDictionary::new();
                dictionary.insert(COMPONENT_PARTICIPANT_LIST, list.encode());
                // The room's policy from the start: the roles the checks read, and that the
                // bridge (the creator's puppet, a group admin) reads and relays everything.
                dictionary.insert(COMPONENT_ROLES_LIST, RoleData::bridge_default().encode());
                dictionary.insert(
                    COMPONENT_LOGGING_POLICY,
                    LoggingPolicy::bridge(&creator.puppet_client().to_string()).encode(),
                );
                dictionary.insert(
                    COMPONENT_BOT_POLICY,
                    BotPolicy::bridge(ROLE_GROUP_ADMIN, "").encode(),
                );
                extensions.push(Extension::AppDataDictionary(
                    AppDataDictionaryExtension::new(dictionary),
                ));
            }
            let extensions = Extensions::from_vec(extensions)
                .map_err(|e| mls_err("group context extensions")(&e))?;
            let group = MlsGroup::builder()
                .with_group_id(group_id(room))
                .ciphersuite(CIPHERSUITE)
                .with_capabilities(capabilities())
                .with_wire_format_policy(MIXED_PLAINTEXT_WIRE_FORMAT_POLICY)
                .max_past_epochs(PAST_EPOCHS)
                .use_ratchet_tree_extension(true)
                .with_group_context_extensions(extensions)
                .build(&provider, &identity.signer, identity.credential.clone())
                .map_err(|e| mls_err("create group")(&e))?;
            tx.mark_stale(group_key::<MlsGroup>(
                &creator.puppet_client().to_string(),
                group.group_id(),
            ));
            let record = RoomRecord {
                profile,
                local_members: vec![creator.to_string()],
            };
            self.put_record(tx, &room_key(room), &record)?;
            participants_of(&group)
        })
    }

    /// `read` applied to `room`'s group as its first local member sees it.
    fn read_room<T>(
        &self,
        room: &RoomUri,
        read: impl FnOnce(&MlsGroup) -> Result<T, MlsError>,
    ) -> Result<T, MlsError> {
        self.room_transaction(room, |tx| {
            let record = self.room_record(tx, room)?;
            let user = self.first_member(room, &record)?;
            let (group, _) = self.load_group(tx, room, &user)?;
            read(&group)
        })
    }

    /// The participant list of `room` (users with roles), as the first local member sees it.
    pub fn participants(&self, room: &RoomUri) -> Result<Vec<Participant>, MlsError> {
        self.read_room(room, participants_of)
    }

    /// The credential identities of `room`'s members (clients), in leaf order.
    pub fn members(&self, room: &RoomUri) -> Result<Vec<String>, MlsError> {
        self.read_room(room, |group| {
            Ok(group
                .members()
                .map(|m| identity_of(&m.credential))
                .collect())
        })
    }

    /// The current epoch of `room`'s group.
    pub fn epoch(&self, room: &RoomUri) -> Result<u64, MlsError> {
        self.read_room(room, |group| Ok(group.epoch().as_u64()))
    }

    /// What names `room`'s group context as this host sees it: the epoch and the confirmed
    /// transcript hash. Everything in the context (the participant list among it) changes only
    /// with a commit, which changes both; two contexts with the same pair are the same.
    pub fn context_version(&self, room: &RoomUri) -> Result<(u64, Vec<u8>), MlsError> {
        self.read_room(room, |group| {
            let context = group.public_group().group_context();
            Ok((
                context.epoch().as_u64(),
                context.confirmed_transcript_hash().to_vec(),
            ))
        })
    }

    /// The current GroupInfo of `room` (an `MLSMessage`, signed by the first local member) and
    /// its ratchet tree: what `/groupInfo` serves and what a hub needs to follow the group
    /// ([`MlsHost::hub_track`]).
    pub fn group_info(&self, room: &RoomUri) -> Result<(Vec<u8>, Vec<u8>), MlsError> {
        self.room_transaction(room, |tx| {
            let record = self.room_record(tx, room)?;
            let user = self.first_member(room, &record)?;
            let identity = self.member_identity(tx, &user)?;
            let (group, provider) = self.load_group(tx, room, &user)?;
            let info = group
                .export_group_info(provider.crypto(), &identity.signer, false)
                .map_err(|e| mls_err("export GroupInfo")(&e))?;
            let tree = group
                .export_ratchet_tree()
                .tls_serialize_detached()
                .map_err(|e| mls_err("encode ratchet tree")(&e))?;
            Ok((to_bytes(&info)?, tree))
        })
    }

    /// This host's puppets in `room`.
    pub fn local_members_of(&self, room: &RoomUri) -> Result<Vec<UserUri>, MlsError> {
        self.room_transaction(room, |tx| self.local_members(&self.room_record(tx, room)?))
    }

    fn first_member(&self, room: &RoomUri, record: &RoomRecord) -> Result<UserUri, MlsError> {
        self.local_members(record)?
            .into_iter()
            .next()
            .ok_or_else(|| MlsError::UnknownRoom(room.to_string()))
    }

    /// Adds the client of `key_package` to `room`, committed by `by`'s puppet: one commit with
    /// the Add and (for [`RoomProfile::Mimi`], if the user is not yet a participant) an
    /// AppDataUpdate adding its user with `role_index`. The commit is merged at once (this host
    /// is the hub), the other local members process it, and a puppet of this host whose
    /// KeyPackage it is joins from the Welcome.
    pub fn add_client(
        &self,
        room: &RoomUri,
        by: &UserUri,
        key_package: KeyPackage,
        role_index: u32,
    ) -> Result<CommitOutput, MlsError> {
        self.add_clients(room, by, vec![key_package], role_index)
    }

    /// [`MlsHost::add_client`] for several clients in one commit: an Add for each KeyPackage
    /// and one AppDataUpdate adding every user not yet a participant (once each, in the order
    /// of `key_packages`), one Welcome for them all. Every puppet of this host among them joins.
    pub fn add_clients(
        &self,
        room: &RoomUri,
        by: &UserUri,
        key_packages: Vec<KeyPackage>,
        role_index: u32,
    ) -> Result<CommitOutput, MlsError> {
        self.transaction(|tx| {
            let record = self.room_record(tx, room)?;
            let (mut group, provider) = self.load_group(tx, room, by)?;
            let mut proposals = Vec::new();
            if record.profile == RoomProfile::Mimi {
                let list = participants_of(&group)?;
                let mut update = ParticipantListUpdate::default();
                for key_package in &key_packages {
                    let identity = identity_of(key_package.leaf_node().credential());
                    let client = ClientUri::parse(&identity)
                        .map_err(|e| MlsError::Malformed(format!("KeyPackage credential: {e}")))?;
                    admit(&list, &client.user().to_string(), role_index, &mut update)?;
                }
                if update != ParticipantListUpdate::default() {
                    proposals.push(Proposal::AppDataUpdate(Box::new(
                        AppDataUpdateProposal::update(COMPONENT_PARTICIPANT_LIST, update.encode()),
                    )));
                }
            }
            let hash_refs = key_packages
                .iter()
                .map(|k| k.hash_ref(provider.crypto()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| mls_err("KeyPackage reference")(&e))?;
            let output = self.finish_commit(tx, room, by, &mut group, &provider, |b| {
                b.propose_adds(key_packages).add_proposals(proposals)
            })?;
            // Our own puppets among them join now.
            if let Some(welcome) = &output.welcome {
                for hash_ref in &hash_refs {
                    if let Some(owner) = self.key_package_owner_in(tx, hash_ref)? {
                        self.join_as(tx, &owner, hash_ref, welcome, None)?;
                    }
                }
            }
            Ok(output)
        })
    }

    /// Removes every client of `user` from `room` and (for [`RoomProfile::Mimi`]) the user from
    /// the participant list, in one commit by `by`'s puppet.
    pub fn remove_user(
        &self,
        room: &RoomUri,
        by: &UserUri,
        user: &UserUri,
    ) -> Result<CommitOutput, MlsError> {
        self.remove_clients_of(room, by, user, None)
    }

    /// Bans `user` from `room`: every client of theirs removed and (for [`RoomProfile::Mimi`])
    /// their participant-list entry kept with role 1, banned (draft-ietf-mimi-room-policy-03
    /// Appendix A), in one commit by `by`'s puppet. A banned user added again
    /// ([`MlsHost::add_clients`]) gets the role of that addition back.
    pub fn ban_user(
        &self,
        room: &RoomUri,
        by: &UserUri,
        user: &UserUri,
    ) -> Result<CommitOutput, MlsError> {
        self.remove_clients_of(room, by, user, Some(ROLE_BANNED))
    }

    /// Removes `user`'s clients and their participant-list entry, or moves the entry to role
    /// `keep_as`.
    fn remove_clients_of(
        &self,
        room: &RoomUri,
        by: &UserUri,
        user: &UserUri,
        keep_as: Option<u32>,
    ) -> Result<CommitOutput, MlsError> {
        self.room_transaction(room, |tx| {
            let record = self.room_record(tx, room)?;
            let (mut group, provider) = self.load_group(tx, room, by)?;
            let target = user.to_string();
            let leaves: Vec<LeafNodeIndex> = group
                .members()
                .filter(|m| {
                    let identity = identity_of(&m.credential);
                    ClientUri::parse(&identity)
                        .map(|c| *c.user() == *user)
                        .unwrap_or(identity == target)
                })
                .map(|m| m.index)
                .collect();
            let mut proposals = Vec::new();
            if record.profile == RoomProfile::Mimi {
                let list = participants_of(&group)?;
                let index = list.iter().position(|p| p.user == target);
                if let Some(index) = index {
                    let at = u32::try_from(index)
                        .map_err(|_| MlsError::Malformed("participant index".into()))?;
                    let update = match keep_as {
                        None => Some(ParticipantListUpdate::remove(at)),
                        Some(role) if list[index].role_index != role => {
                            Some(ParticipantListUpdate {
                                changed_role_participants: vec![UserIndexRolePair {
                                    user_index: at,
                                    role_index: role,
                                }],
                                ..ParticipantListUpdate::default()
                            })
                        }
                        Some(_) => None,
                    };
                    proposals.extend(update.map(|update| {
                        Proposal::AppDataUpdate(Box::new(AppDataUpdateProposal::update(
                            COMPONENT_PARTICIPANT_LIST,
                            update.encode(),
                        )))
                    }));
                }
            }
            if leaves.is_empty() && proposals.is_empty() {
                return Err(MlsError::NotAMember {
                    room: room.to_string(),
                    user: target,
                });
            }
            self.finish_commit(tx, room, by, &mut group, &provider, |b| {
                b.propose_removals(leaves).add_proposals(proposals)
            })
        })
    }

    /// Replaces `room`'s metadata (name, subject…) in one commit by `by`'s puppet
    /// ([`RoomProfile::Mimi`] only).
    pub fn set_room_metadata(
        &self,
        room: &RoomUri,
        by: &UserUri,
        metadata: &RoomMetadata,
    ) -> Result<CommitOutput, MlsError> {
        self.room_transaction(room, |tx| {
            if self.room_record(tx, room)?.profile != RoomProfile::Mimi {
                return Err(MlsError::InvalidStateChange(
                    "a plain group has no room state".into(),
                ));
            }
            let (mut group, provider) = self.load_group(tx, room, by)?;
            let proposal = Proposal::AppDataUpdate(Box::new(AppDataUpdateProposal::update(
                COMPONENT_ROOM_METADATA,
                metadata.encode(),
            )));
            self.finish_commit(tx, room, by, &mut group, &provider, |b| {
                b.add_proposal(proposal)
            })
        })
    }

    /// `room`'s metadata, if set.
    pub fn room_metadata(&self, room: &RoomUri) -> Result<Option<RoomMetadata>, MlsError> {
        self.read_room(room, |group| {
            component(group.extensions(), COMPONENT_ROOM_METADATA)
                .map(|bytes| RoomMetadata::decode(bytes).map_err(MlsError::from))
                .transpose()
        })
    }

    /// Whether `user` (a user URI) may send application messages in `room`: their role in the
    /// room's roles_list has `canSendMessage` (draft-ietf-mimi-room-policy-03 §8.3). What the
    /// hub checks before it accepts a `/submitMessage`. Every member may send in a plain group.
    pub fn may_send(&self, room: &RoomUri, user: &str) -> Result<(), MlsError> {
        self.read_room(room, |group| may_send(group, user))
    }

    /// Whether `user` (a user URI) has `capability` (`CAPABILITY_*` in [`crate::codepoints`])
    /// by their role in `room`'s participant list (draft-ietf-mimi-room-policy-03). False in a
    /// plain group, which has no roles.
    pub fn has_capability(
        &self,
        room: &RoomUri,
        user: &str,
        capability: u16,
    ) -> Result<bool, MlsError> {
        self.read_room(room, |group| {
            Ok(role_allows(group, user, capability)?.unwrap_or(false))
        })
    }

    /// `room`'s policy components: its roles (the bridge's default set when the group has no
    /// roles_list), and its logging and bot policies if it has them.
    pub fn room_policy(
        &self,
        room: &RoomUri,
    ) -> Result<(RoleData, Option<LoggingPolicy>, Option<BotPolicy>), MlsError> {
        self.read_room(room, |group| {
            let extensions = group.extensions();
            let logging = component(extensions, COMPONENT_LOGGING_POLICY)
                .map(LoggingPolicy::decode)
                .transpose()?;
            let bots = component(extensions, COMPONENT_BOT_POLICY)
                .map(BotPolicy::decode)
                .transpose()?;
            Ok((roles_of(group)?, logging, bots))
        })
    }

    /// Moves `user` to role `role_index` in `room`'s participant list, in one commit by `by`'s
    /// puppet ([`RoomProfile::Mimi`] only). `by`'s role must allow the change (for the
    /// bridge's own roles: a group admin may move anyone between roles 1–4). The user keeps
    /// their clients, so a ban of a user with clients is refused ([`MlsHost::ban_user`] removes
    /// them in the same commit), and role 0 is refused ([`MlsHost::remove_user`] takes a user
    /// off the list).
    pub fn set_role(
        &self,
        room: &RoomUri,
        by: &UserUri,
        user: &UserUri,
        role_index: u32,
    ) -> Result<CommitOutput, MlsError> {
        self.room_transaction(room, |tx| {
            let (mut group, provider) = self.load_group(tx, room, by)?;
            let target = user.to_string();
            let list = participants_of(&group)?;
            let index = list
                .iter()
                .position(|p| p.user == target)
                .and_then(|i| u32::try_from(i).ok())
                .ok_or_else(|| MlsError::NotAMember {
                    room: room.to_string(),
                    user: target.clone(),
                })?;
            let update = ParticipantListUpdate {
                changed_role_participants: vec![UserIndexRolePair {
                    user_index: index,
                    role_index,
                }],
                ..ParticipantListUpdate::default()
            };
            let proposal = Proposal::AppDataUpdate(Box::new(AppDataUpdateProposal::update(
                COMPONENT_PARTICIPANT_LIST,
                update.encode(),
            )));
            let mut check = PolicyCheck::new(&group)?;
            check.check(by, None, &proposal)?;
            check.finish()?;
            self.finish_commit(tx, room, by, &mut group, &provider, |b| {
                b.add_proposal(proposal)
            })
        })
    }

    /// `user`'s puppet leaves `room`: it proposes its own removal and (for
    /// [`RoomProfile::Mimi`]) its user's removal from the participant list. Returns the
    /// proposals (PublicMessages) for the hub, which the other local members have already
    /// queued; a commit ([`MlsHost::commit_pending`]) carries them out.
    pub fn leave(&self, room: &RoomUri, user: &UserUri) -> Result<Vec<Vec<u8>>, MlsError> {
        self.room_transaction(room, |tx| self.leave_in(tx, room, user))
    }

    /// As hub, `user`'s puppet leaves `room`: its own removal proposals (as
    /// [`MlsHost::leave`]), committed at once by `by`'s puppet, in one transaction (a crash
    /// between the two would leave proposals queued that a retry proposes again). Every member
    /// then sees the user's own leave, not a removal by `by`. Returns the proposals, which the
    /// followers need before the commit, and the commit.
    pub fn leave_and_commit(
        &self,
        room: &RoomUri,
        user: &UserUri,
        by: &UserUri,
    ) -> Result<(Vec<Vec<u8>>, CommitOutput), MlsError> {
        self.room_transaction(room, |tx| {
            let proposals = self.leave_in(tx, room, user)?;
            let (mut group, provider) = self.load_group(tx, room, by)?;
            let output = self.finish_commit(tx, room, by, &mut group, &provider, |b| {
                b.consume_proposal_store(true)
            })?;
            Ok((proposals, output))
        })
    }

    fn leave_in(&self, tx: &Tx, room: &RoomUri, user: &UserUri) -> Result<Vec<Vec<u8>>, MlsError> {
        let record = self.room_record(tx, room)?;
        let identity = self.member_identity(tx, user)?;
        let (mut group, provider) = self.load_group(tx, room, user)?;
        let mut messages = Vec::new();
        if record.profile == RoomProfile::Mimi {
            let list = participants_of(&group)?;
            let target = user.to_string();
            if let Some(index) = list.iter().position(|p| p.user == target) {
                let index = u32::try_from(index)
                    .map_err(|_| MlsError::Malformed("participant index".into()))?;
                let (message, _) = group
                    .propose_app_data_update(
                        &provider,
                        &identity.signer,
                        COMPONENT_PARTICIPANT_LIST,
                        AppDataUpdateOperation::Update(
                            ParticipantListUpdate::remove(index).encode().into(),
                        ),
                    )
                    .map_err(|e| mls_err("propose participant removal")(&e))?;
                messages.push(to_bytes(&message)?);
            }
        }
        let message = group
            .leave_group(&provider, &identity.signer)
            .map_err(|e| mls_err("leave")(&e))?;
        messages.push(to_bytes(&message)?);
        for bytes in &messages {
            self.deliver_local(tx, room, &record, Some(user), None, bytes)?;
        }
        Ok(messages)
    }

    /// Commits every proposal `by`'s puppet has queued (a leave, external proposals), as the
    /// hub must before anything else (draft-ietf-mimi-protocol-06 §3.5).
    pub fn commit_pending(&self, room: &RoomUri, by: &UserUri) -> Result<CommitOutput, MlsError> {
        self.room_transaction(room, |tx| {
            let (mut group, provider) = self.load_group(tx, room, by)?;
            self.finish_commit(tx, room, by, &mut group, &provider, |b| {
                b.consume_proposal_store(true)
            })
        })
    }

    /// As hub, takes `proposals` (`MLSMessage`s) from provider `domain` and commits them by
    /// `by`'s puppet, after checking who proposes what (draft-ietf-mimi-room-policy's base
    /// rules as we apply them): every proposal must come from a member whose client belongs
    /// to `domain`; a Remove, or a participant-list update removing someone, may only concern
    /// the proposer's own user unless the proposer is a group admin; role changes and
    /// participant additions need a group admin; room metadata needs a group admin. On a
    /// refusal nothing is kept (the proposals are not queued).
    pub fn commit_proposals_from(
        &self,
        room: &RoomUri,
        by: &UserUri,
        proposals: &[&[u8]],
        domain: &str,
    ) -> Result<CommitOutput, MlsError> {
        self.room_transaction(room, |tx| {
            let record = self.room_record(tx, room)?;
            for bytes in proposals {
                match self.deliver_local(tx, room, &record, None, None, bytes)? {
                    Some(Processed::Proposal) => {}
                    _ => return Err(MlsError::Malformed("not a proposal".into())),
                }
            }
            let (mut group, provider) = self.load_group(tx, room, by)?;
            let mut check = PolicyCheck::new(&group)?;
            for queued in group.pending_proposals() {
                let Sender::Member(leaf) = queued.sender() else {
                    return Err(MlsError::InvalidStateChange(
                        "a proposal from a non-member".into(),
                    ));
                };
                let proposer = user_of_leaf(&group, *leaf).ok_or_else(|| {
                    MlsError::InvalidStateChange("a proposer without a client URI".into())
                })?;
                if !proposer.domain().eq_ignore_ascii_case(domain) {
                    return Err(MlsError::InvalidStateChange(format!(
                        "{proposer} does not belong to {domain}"
                    )));
                }
                check.check(&proposer, Some(*leaf), queued.proposal())?;
            }
            check.finish()?;
            self.finish_commit(tx, room, by, &mut group, &provider, |b| {
                b.consume_proposal_store(true)
            })
        })
    }

    /// `user`'s puppet asks to join `room`, hosted by another provider, at `epoch`: an Add
    /// proposal of one of its KeyPackages sent as a new member (RFC 9420 §12.1.8,
    /// `new_member_proposal`), an `MLSMessage` for the hub's `/update`. The puppet joins when the
    /// hub's Welcome arrives ([`MlsHost::join`]).
    pub fn join_proposal(
        &self,
        room: &RoomUri,
        user: &UserUri,
        epoch: u64,
    ) -> Result<Vec<u8>, MlsError> {
        let key_package = self
            .take_key_package(user)?
            .ok_or_else(|| MlsError::Malformed(format!("no KeyPackage for {user}")))?;
        self.transaction(|tx| {
            let identity = self.client_identity(tx, user)?;
            let message = JoinProposal::new::<super::storage::MlsStorage>(
                key_package,
                group_id(room),
                GroupEpoch::from(epoch),
                &identity.signer,
            )
            .map_err(|e| mls_err("join proposal")(&e))?;
            to_bytes(&message)
        })
    }

    /// As the hub: processes `proposal`, a new member's Add proposal (see
    /// [`MlsHost::join_proposal`]) whose user must belong to `domain`, and commits it at once by
    /// `by`'s puppet with an AppDataUpdate adding the user to the participant list (role
    /// `role_index`). Anything else, or a user of another domain, is refused and nothing is
    /// written.
    pub fn accept_join(
        &self,
        room: &RoomUri,
        by: &UserUri,
        proposal: &[u8],
        domain: &str,
        role_index: u32,
    ) -> Result<CommitOutput, MlsError> {
        self.room_transaction(room, |tx| {
            let record = self.room_record(tx, room)?;
            match self.deliver_local(tx, room, &record, None, None, proposal)? {
                Some(Processed::Proposal) => {}
                _ => return Err(MlsError::Malformed("not a proposal".into())),
            }
            let (mut group, provider) = self.load_group(tx, room, by)?;
            let list = participants_of(&group)?;
            let mut update = ParticipantListUpdate::default();
            for queued in group.pending_proposals() {
                let (Sender::NewMemberProposal, Proposal::Add(add)) =
                    (queued.sender(), queued.proposal())
                else {
                    return Err(MlsError::InvalidStateChange(
                        "only a new member's Add proposal is accepted here".into(),
                    ));
                };
                let identity = identity_of(add.key_package().leaf_node().credential());
                let client = ClientUri::parse(&identity)
                    .map_err(|e| MlsError::Malformed(format!("KeyPackage credential: {e}")))?;
                if !client.user().domain().eq_ignore_ascii_case(domain) {
                    return Err(MlsError::InvalidStateChange(format!(
                        "{client} does not belong to {domain}"
                    )));
                }
                if group
                    .members()
                    .any(|m| identity_of(&m.credential) == identity)
                {
                    return Err(MlsError::AlreadyMember {
                        room: room.to_string(),
                        client: identity,
                    });
                }
                let user = client.user().to_string();
                let listed = list.iter().position(|p| p.user == user);
                // A banned user does not come back by asking (room-policy-03 Appendix A: the
                // banned role has no clients); one listed without a role gets the new role.
                if let Some(index) = listed
                    && list[index].banned()
                {
                    return Err(MlsError::NotAllowed(format!(
                        "{user} is banned from {room}"
                    )));
                }
                admit(&list, &user, role_index, &mut update)?;
            }
            let proposals: Vec<Proposal> = if record.profile == RoomProfile::Mimi
                && update != ParticipantListUpdate::default()
            {
                vec![Proposal::AppDataUpdate(Box::new(
                    AppDataUpdateProposal::update(COMPONENT_PARTICIPANT_LIST, update.encode()),
                ))]
            } else {
                Vec::new()
            };
            self.finish_commit(tx, room, by, &mut group, &provider, |b| {
                b.consume_proposal_store(true).add_proposals(proposals)
            })
        })
    }

    /// Resolves AppDataUpdates, builds, stages and merges a commit, then has the other local
    /// members process it.
    fn finish_commit(
        &self,
        tx: &Tx,
        room: &RoomUri,
        by: &UserUri,
        group: &mut MlsGroup,
        provider: &Provider<'_>,
        configure: impl for<'g> FnOnce(
            CommitBuilder<'g, openmls::group::Initial>,
        ) -> CommitBuilder<'g, openmls::group::Initial>,
    ) -> Result<CommitOutput, MlsError> {
        let identity = self.member_identity(tx, by)?;
        let mut stage = configure(group.commit_builder())
            .load_psks(provider.storage())
            .map_err(|e| mls_err("commit")(&e))?
            .create_group_info(true);
        let mut updater = stage.app_data_dictionary_updater();
        resolve_app_data(&mut updater, stage.app_data_update_proposals())?;
        let changes = updater.changes();
        stage.with_app_data_dictionary_updates(changes);
        let bundle = stage
            .build(provider.rand(), provider.crypto(), &identity.signer, |_| {
                true
            })
            .map_err(|e| mls_err("commit")(&e))?
            .stage_commit(provider)
            .map_err(|e| mls_err("stage commit")(&e))?;
        let (commit, welcome, group_info) = bundle.into_messages();
        group
            .merge_pending_commit(provider)
            .map_err(|e| mls_err("merge commit")(&e))?;
        let commit = to_bytes(&commit)?;
        let output = CommitOutput {
            welcome: welcome.as_ref().map(to_bytes).transpose()?,
            group_info: group_info.as_ref().map(to_bytes).transpose()?,
            ratchet_tree: group
                .export_ratchet_tree()
                .tls_serialize_detached()
                .map_err(|e| mls_err("encode ratchet tree")(&e))?,
            epoch: group.epoch().as_u64(),
            participants: participants_of(group)?,
            commit,
        };
        let record = self.room_record(tx, room)?;
        self.deliver_local(tx, room, &record, Some(by), None, &output.commit)?;
        Ok(output)
    }

    /// Has every local member of `room` but `except` process a handshake message; drops the
    /// local members it removes. Returns the outcome as a remaining member sees it. `from`: the
    /// provider that relayed a commit, whose rights are checked before it is merged
    /// ([`may_commit`]).
    fn deliver_local(
        &self,
        tx: &Tx,
        room: &RoomUri,
        record: &RoomRecord,
        except: Option<&UserUri>,
        from: Option<&str>,
        bytes: &[u8],
    ) -> Result<Option<Processed>, MlsError> {
        let mut outcome = None;
        let mut removed = Vec::new();
        let mut removed_by = Vec::new();
        for user in self.local_members(record)? {
            if Some(&user) == except {
                continue;
            }
            let (result, gone) = self.process_as(tx, room, &user, from, bytes)?;
            if let Processed::Commit { removed_by: by, .. } = &result {
                removed_by.extend(by.iter().cloned());
            }
            // A member that stays reports the new epoch and list; a removed one only if no
            // member stays.
            if gone {
                removed.push(user);
                outcome.get_or_insert(result);
            } else {
                outcome = Some(result);
            }
        }
        // Every local member saw the same removals.
        let mut seen = std::collections::HashSet::new();
        removed_by.retain(|(user, _)| seen.insert(user.to_string()));
        if !removed.is_empty() {
            let mut record = self.room_record(tx, room)?;
            record
                .local_members
                .retain(|u| !removed.iter().any(|r| r.to_string() == *u));
            self.put_record(tx, &room_key(room), &record)?;
        }
        if let Some(Processed::Commit {
            removed: r,
            removed_by: by,
            ..
        }) = &mut outcome
        {
            *r = removed;
            *by = removed_by;
        }
        Ok(outcome)
    }

    /// `user`'s puppet processes one message of `room`; true when it is no longer a member.
    /// A commit relayed by provider `from` is merged only if [`may_commit`] allows it.
    fn process_as(
        &self,
        tx: &Tx,
        room: &RoomUri,
        user: &UserUri,
        from: Option<&str>,
        bytes: &[u8],
    ) -> Result<(Processed, bool), MlsError> {
        let (mut group, provider) = self.load_group(tx, room, user)?;
        let message = parse_protocol_message(bytes)?;
        if message.group_id() != group.group_id() {
            return Err(MlsError::Malformed("message for another group".into()));
        }
        let is_handshake = message.is_handshake_message();
        if is_handshake && message.epoch() != group.epoch() {
            return Err(MlsError::WrongEpoch {
                current: group.epoch().as_u64(),
                message: message.epoch().as_u64(),
            });
        }
        let processed = group
            .process_message(&provider, message)
            .map_err(|e| mls_err("process message")(&e))?;
        let sender = identity_of(processed.credential());
        let external = matches!(processed.sender(), Sender::NewMemberCommit);
        let staged = match processed.into_content() {
            ProcessedMessageContent::ApplicationMessage(app) => {
                return Ok((
                    Processed::Application(Decrypted {
                        sender,
                        plaintext: app.into_bytes(),
                    }),
                    false,
                ));
            }
            ProcessedMessageContent::OwnPrivateMessage => return Ok((Processed::Own, false)),
            ProcessedMessageContent::ProposalMessage(proposal)
            | ProcessedMessageContent::ExternalJoinProposalMessage(proposal) => {
                group
                    .store_pending_proposal(provider.storage(), *proposal)
                    .map_err(|e| mls_err("queue proposal")(&e))?;
                return Ok((Processed::Proposal, false));
            }
            ProcessedMessageContent::StagedCommitMessage(staged) => *staged,
            ProcessedMessageContent::UnresolvedAppDataCommit(unresolved) => {
                let mut updater = group.app_data_dictionary_updater();
                resolve_app_data(&mut updater, unresolved.app_data_update_proposals())?;
                let changes = updater.changes();
                group
                    .stage_app_data_commit(&provider, *unresolved, changes)
                    .map_err(|e| mls_err("stage commit")(&e))?
            }
            #[allow(unreachable_patterns)]
            _ => return Err(MlsError::Malformed("unexpected message content".into())),
        };
        if let Some(domain) = from {
            may_commit(&group, &sender, domain, &staged, external)?;
        }
        // Who removed each removed client's user: another member's user (a removal by value
        // is the committer's), or nobody when a client of theirs proposed it (a leave).
        let mut removed_by: Vec<(UserUri, UserUri)> = Vec::new();
        for q in staged.remove_proposals() {
            let Some(target) = user_of_leaf(&group, q.remove_proposal().removed()) else {
                continue;
            };
            let by = match q.sender() {
                Sender::Member(leaf) => user_of_leaf(&group, *leaf),
                _ => None,
            };
            if let Some(by) = by.filter(|by| *by != target)
                && !removed_by.iter().any(|(t, _)| *t == target)
            {
                removed_by.push((target, by));
            }
        }
        group
            .merge_staged_commit(&provider, staged)
            .map_err(|e| mls_err("merge commit")(&e))?;
        let outcome = Processed::Commit {
            epoch: group.epoch().as_u64(),
            participants: participants_of(&group)?,
            removed: Vec::new(),
            removed_by,
        };
        let gone = !group.is_active();
        if gone {
            group
                .delete(provider.storage())
                .map_err(|e| mls_err("delete group")(&e))?;
            group.discard();
        }
        Ok((outcome, gone))
    }

    /// Processes an `MLSMessage` from the network for `room`: a commit or proposal is processed
    /// by every local member (a commit for another epoch is refused with
    /// [`MlsError::WrongEpoch`]); an application message is decrypted as by
    /// [`MlsHost::decrypt`]; a Welcome makes the puppets it is for join (see
    /// [`MlsHost::join`]).
    pub fn process(&self, room: &RoomUri, bytes: &[u8]) -> Result<Processed, MlsError> {
        let message = MlsMessageIn::tls_deserialize_exact(bytes)
            .map_err(|e| MlsError::Malformed(e.to_string()))?;
        match message.extract() {
            MlsMessageBodyIn::Welcome(_) => self.join(bytes, None),
            MlsMessageBodyIn::PrivateMessage(_) => self.decrypt(room, bytes),
            MlsMessageBodyIn::PublicMessage(_) => self.room_transaction(room, |tx| {
                let record = self.room_record(tx, room)?;
                self.deliver_local(tx, room, &record, None, None, bytes)?
                    .ok_or_else(|| MlsError::UnknownRoom(room.to_string()))
            }),
            _ => Err(MlsError::Malformed(
                "not a message for a group (GroupInfo or KeyPackage)".into(),
            )),
        }
    }

    /// [`MlsHost::process`] for a handshake message that provider `domain` relayed (as hub,
    /// `/update`): a commit is merged only if its committer is a client of `domain` and every
    /// proposal in it is allowed to its proposer (the rules of
    /// [`MlsHost::commit_proposals_from`]); otherwise [`MlsError::InvalidStateChange`] and
    /// nothing changes.
    pub fn process_from(
        &self,
        room: &RoomUri,
        bytes: &[u8],
        domain: &str,
    ) -> Result<Processed, MlsError> {
        let message = MlsMessageIn::tls_deserialize_exact(bytes)
            .map_err(|e| MlsError::Malformed(e.to_string()))?;
        match message.extract() {
            MlsMessageBodyIn::PublicMessage(_) => self.room_transaction(room, |tx| {
                let record = self.room_record(tx, room)?;
                self.deliver_local(tx, room, &record, None, Some(domain), bytes)?
                    .ok_or_else(|| MlsError::UnknownRoom(room.to_string()))
            }),
            _ => self.process(room, bytes),
        }
    }

    /// Encrypts `plaintext` as `user`'s puppet: an `MLSMessage` carrying a PrivateMessage.
    /// Refused ([`MlsError::NotAllowed`]) when the user's role in the room may not send: the
    /// hub would refuse the message (as this host does as hub, [`MlsHost::may_send`]).
    pub fn encrypt(
        &self,
        room: &RoomUri,
        user: &UserUri,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, MlsError> {
        self.room_transaction(room, |tx| {
            let identity = self.member_identity(tx, user)?;
            let (mut group, provider) = self.load_group(tx, room, user)?;
            may_send(&group, &user.to_string())?;
            if group.pending_proposals().next().is_some() {
                return Err(MlsError::ProposalPending(room.to_string()));
            }
            let message = group
                .create_message(&provider, &identity.signer, plaintext)
                .map_err(|e| mls_err("encrypt")(&e))?;
            to_bytes(&message)
        })
    }

    /// Decrypts an application message of `room`. One local member decrypts (the first that
    /// did not send it); the others do not, which is safe because a member's secret tree is
    /// rebuilt at every epoch and a sender's ratchet can be skipped forward. Returns
    /// [`Processed::Application`] or [`Processed::Own`].
    pub fn decrypt(&self, room: &RoomUri, bytes: &[u8]) -> Result<Processed, MlsError> {
        self.room_transaction(room, |tx| self.decrypt_in(tx, room, bytes))
    }

    /// [`MlsHost::decrypt`], remembering the result under `key` (a key of the host's store
    /// outside `mls/`) in the same atomic write; when `key` is there already, returns what it
    /// holds without decrypting. For a message delivered again after a crash that came between
    /// this write and the caller's own: its ratchet secret is spent, it cannot be decrypted
    /// twice. The caller deletes `key` when the message is safely handled.
    pub fn decrypt_once(
        &self,
        room: &RoomUri,
        bytes: &[u8],
        key: &str,
    ) -> Result<Processed, MlsError> {
        if key.starts_with("mls/") {
            return Err(MlsError::InvalidStateChange(format!(
                "{key} is in the MLS layer's own space"
            )));
        }
        self.room_transaction(room, |tx| {
            if let Some(kept) = self.get_record::<KeptDecryption>(tx, key)? {
                return Ok(match kept.sender {
                    Some(sender) => Processed::Application(Decrypted {
                        sender,
                        plaintext: kept.plaintext,
                    }),
                    None => Processed::Own,
                });
            }
            let processed = self.decrypt_in(tx, room, bytes)?;
            let kept = match &processed {
                Processed::Application(d) => KeptDecryption {
                    sender: Some(d.sender.clone()),
                    plaintext: d.plaintext.clone(),
                },
                _ => KeptDecryption {
                    sender: None,
                    plaintext: Vec::new(),
                },
            };
            self.put_record(tx, key, &kept)?;
            Ok(processed)
        })
    }

    fn decrypt_in(&self, tx: &Tx, room: &RoomUri, bytes: &[u8]) -> Result<Processed, MlsError> {
        let record = self.room_record(tx, room)?;
        for user in self.local_members(&record)? {
            match self.process_as(tx, room, &user, None, bytes)?.0 {
                Processed::Own => continue,
                Processed::Application(decrypted) => {
                    return Ok(Processed::Application(decrypted));
                }
                _ => return Err(MlsError::Malformed("not an application message".into())),
            }
        }
        Ok(Processed::Own)
    }

    /// Joins from a Welcome (follower side): every puppet of this host the Welcome is for
    /// joins the group, with the ratchet tree from `ratchet_tree` or the GroupInfo's
    /// extension. Returns [`Processed::Joined`].
    pub fn join(&self, welcome: &[u8], ratchet_tree: Option<&[u8]>) -> Result<Processed, MlsError> {
        self.transaction(|tx| {
            let parsed = MlsMessageIn::tls_deserialize_exact(welcome)
                .map_err(|e| MlsError::Malformed(e.to_string()))?;
            let MlsMessageBodyIn::Welcome(w) = parsed.extract() else {
                return Err(MlsError::Malformed("not a Welcome".into()));
            };
            let mut joined = Vec::new();
            let mut room = None;
            for secrets in w.secrets() {
                let hash_ref = secrets.new_member();
                if let Some(owner) = self.key_package_owner_in(tx, &hash_ref)? {
                    room = Some(self.join_as(tx, &owner, &hash_ref, welcome, ratchet_tree)?);
                    joined.push(owner);
                }
            }
            match room {
                Some(room) => Ok(Processed::Joined {
                    room,
                    users: joined,
                }),
                None => Err(MlsError::NotForUs),
            }
        })
    }

    /// `user`'s puppet joins from `welcome` (an `MLSMessage`) with its KeyPackage `hash_ref`.
    fn join_as(
        &self,
        tx: &Tx,
        user: &UserUri,
        hash_ref: &KeyPackageRef,
        welcome: &[u8],
        ratchet_tree: Option<&[u8]>,
    ) -> Result<RoomUri, MlsError> {
        let parsed = MlsMessageIn::tls_deserialize_exact(welcome)
            .map_err(|e| MlsError::Malformed(e.to_string()))?;
        let MlsMessageBodyIn::Welcome(w) = parsed.extract() else {
            return Err(MlsError::Malformed("not a Welcome".into()));
        };
        let tree = ratchet_tree
            .map(RatchetTreeIn::tls_deserialize_exact)
            .transpose()
            .map_err(|e| MlsError::Malformed(format!("ratchet tree: {e}")))?;
        let provider = self.client_provider(tx, user);
        let group = StagedWelcome::new_from_welcome(&provider, &join_config(), w, tree)
            .map_err(|e| mls_err("Welcome")(&e))?
            .into_group(&provider)
            .map_err(|e| mls_err("join")(&e))?;
        tx.mark_stale(group_key::<MlsGroup>(
            &user.puppet_client().to_string(),
            group.group_id(),
        ));
        self.key_package_used(tx, user, hash_ref)?;
        let group_uri = String::from_utf8_lossy(group.group_id().as_slice()).into_owned();
        let room = RoomUri::from_group_uri(&group_uri)
            .map_err(|e| MlsError::Malformed(format!("group ID: {e}")))?;
        let profile = if group.extensions().app_data_dictionary().is_some() {
            RoomProfile::Mimi
        } else {
            RoomProfile::Plain
        };
        let mut record = self
            .get_record::<RoomRecord>(tx, &room_key(&room))?
            .unwrap_or(RoomRecord {
                profile,
                local_members: Vec::new(),
            });
        let name = user.to_string();
        if !record.local_members.contains(&name) {
            record.local_members.push(name);
        }
        self.put_record(tx, &room_key(&room), &record)?;
        Ok(room)
    }
}

pub(crate) fn parse_protocol_message(bytes: &[u8]) -> Result<ProtocolMessage, MlsError> {
    MlsMessageIn::tls_deserialize_exact(bytes)
        .map_err(|e| MlsError::Malformed(e.to_string()))?
        .try_into_protocol_message()
        .map_err(|e| MlsError::Malformed(e.to_string()))
}
