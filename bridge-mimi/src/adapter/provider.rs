//! The adapter's answers to peers: hub endpoints (`/submitMessage`, `/update`, `/keyMaterial`,
//! `/groupInfo`) and the follower's `/notify`.

use std::sync::Arc;

use async_trait::async_trait;
use bridge_core::{InboundEvent, Pending, Submitted};
use tracing::{debug, info, warn};

use super::{Running, assets, digest_hex, now_ms, payload, to_bytes};
use crate::codepoints::{CAPABILITY_CAN_DELETE_OTHER_MESSAGE, ROLE_ORDINARY_USER};
use crate::mls::uri::{ClientUri, RoomUri, UserUri};
use crate::mls::{MlsError, Processed};
use crate::transport::{DownloadedAsset, PeerDomain, Provider, ProviderError};
use crate::wire::{
    CipherSuite, Credential, ExternalSender, GroupInfo, GroupInfoRatchetTreeTbe, GroupInfoResult,
    HpkeCiphertext, SignaturePublicKey,
};
use crate::wire::{
    ClientKeyMaterial, ClientKeyMaterialResult, FanoutMessage, FanoutPayload, GroupInfoRequest,
    GroupInfoResponse, HandshakeBundle, IdentifierUri, KeyMaterialRequest, KeyMaterialResponse,
    KeyMaterialUserCode, KeyPackage, MlsMessage, NotifyBody, Protocol, RatchetTree,
    RatchetTreeOption, SubmitMessageRequest, SubmitMessageResponse, SubmitResult, UpdateRequest,
    UpdateResult, UpdateRoomResponse,
};

/// The [`Provider`] of a running adapter.
pub(crate) struct Handler(pub(crate) Arc<Running>);

fn internal(e: impl std::fmt::Display) -> ProviderError {
    ProviderError::Unavailable {
        reason: e.to_string(),
        retry_after: Some(std::time::Duration::from_secs(1)),
    }
}

fn room_of(uri: &IdentifierUri) -> Result<RoomUri, ProviderError> {
    RoomUri::parse(uri.as_str())
        .map_err(|e| ProviderError::BadRequest(format!("{uri} is not a room URI: {e}")))
}

impl Handler {
    /// A room we host, known to the MLS layer.
    fn hosted(&self, room: &IdentifierUri) -> Result<RoomUri, ProviderError> {
        let room = room_of(room)?;
        if !self.0.is_hub(&room) {
            return Err(ProviderError::NotFound(format!(
                "we are not the hub of {room}"
            )));
        }
        match self.0.mls.local_members_of(&room) {
            Ok(members) if !members.is_empty() => Ok(room),
            Ok(_) | Err(MlsError::UnknownRoom(_)) => {
                Err(ProviderError::NotFound(format!("no room {room}")))
            }
            Err(e) => Err(internal(e)),
        }
    }

    /// Whether `peer` has a participant in `room`.
    fn has_participant(&self, room: &RoomUri, peer: &PeerDomain) -> Result<bool, ProviderError> {
        Ok(self
            .0
            .followers(room)
            .map_err(internal)?
            .iter()
            .any(|d| d == peer.as_str()))
    }

    /// As hub, relays a claim for the KeyPackages of `user`, of another provider, for a room
    /// we host in which `peer` has a participant (§5.2: the hub proxies, so the requester need
    /// not reach the target); each KeyPackage handed out is checked and its reference recorded
    /// with the target's domain, so the Welcome of the commit that adds it goes there.
    async fn relay_key_material(
        &self,
        peer: &PeerDomain,
        user: &UserUri,
        request: KeyMaterialRequest,
    ) -> Result<KeyMaterialResponse, ProviderError> {
        let room = room_of(&request.room_id)?;
        let room = self.hosted(&IdentifierUri(room.to_string()))?;
        if !self.has_participant(&room, peer)? {
            return Err(ProviderError::Forbidden(format!(
                "{peer} has no participant in {room}: no KeyPackages relayed for it"
            )));
        }
        let target = self
            .0
            .peer(user.domain())
            .await
            .map_err(|e| ProviderError::Unavailable {
                reason: format!("{}: {e}", user.domain()),
                retry_after: e.retry_after(),
            })?;
        let uri = IdentifierUri(user.to_string());
        let response = self
            .0
            .client
            .key_material(&target, &uri, &request)
            .await
            .map_err(|e| ProviderError::Unavailable {
                reason: format!("{}: {e}", user.domain()),
                retry_after: e.retry_after(),
            })?;
        // The owner, and when it was relayed (so the record can expire: `expiry`).
        let owner = format!(
            "{}\n{}",
            user.domain().to_ascii_lowercase(),
            crate::adapter::now_ms()
        );
        let mut records = Vec::new();
        for client in &response.clients {
            if let ClientKeyMaterialResult::Success(key_package) = &client.result {
                let reference =
                    self.0
                        .mls
                        .key_package_ref(key_package.as_bytes())
                        .map_err(|e| ProviderError::Unavailable {
                            reason: format!("{} sent a bad KeyPackage: {e}", user.domain()),
                            retry_after: None,
                        })?;
                records.push(format!("{KEY_PACKAGE_OWNER}{}", digest_hex_of(&reference)));
            }
        }
        let entries: Vec<(&[u8], &[u8])> = records
            .iter()
            .map(|k| (k.as_bytes(), owner.as_bytes()))
            .collect();
        self.0.ctx.store().put_all(&entries).map_err(internal)?;
        self.0.ctx.store().flush().await.map_err(internal)?;
        debug!(%room, %user, relayed = records.len(), "KeyPackages relayed");
        Ok(response)
    }

    /// The providers a Welcome (an `MLSMessage`) must go to: those whose KeyPackages we
    /// relayed for its new members. Recipients we do not know are logged and skipped.
    fn welcome_destinations(&self, welcome: &[u8]) -> Result<Vec<String>, ProviderError> {
        let references = crate::mls::MlsHost::welcome_recipients(welcome)
            .map_err(|e| ProviderError::BadRequest(format!("Welcome: {e}")))?;
        let mut domains = Vec::new();
        for reference in references {
            let key = format!("{KEY_PACKAGE_OWNER}{}", digest_hex_of(&reference));
            match self.0.ctx.store().get(key.as_bytes()).map_err(internal)? {
                Some(owner) => domains.push(relayed_owner(&owner)),
                None => warn!("a Welcome for a KeyPackage we did not relay: not forwarded"),
            }
        }
        domains.sort();
        domains.dedup();
        Ok(domains)
    }

    /// Hands the core the room's new name and topic when a commit changed its metadata. The
    /// hub's bot commits such changes (only group admins may), so it is their author here,
    /// named by the hub's domain. Native IDs name the epoch, like memberships'.
    fn metadata_changes(
        &self,
        room: &RoomUri,
        before: Option<&crate::mls::metadata::RoomMetadata>,
        after: Option<&crate::mls::metadata::RoomMetadata>,
        epoch: u64,
    ) -> Result<Vec<Pending>, ProviderError> {
        use bridge_core::EventKind;
        let Some(after) = after else {
            return Ok(Vec::new());
        };
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        let mut changes = Vec::new();
        // No metadata before reads as an empty name and subject.
        let empty: &[u8] = &[];
        if before.map_or(empty, |b| b.room_name.as_slice()) != after.room_name.as_slice() {
            let name = text(after.room_name.as_slice());
            changes.push(("name", EventKind::RoomName { name }));
        }
        if before.map_or(empty, |b| b.room_subject.as_slice()) != after.room_subject.as_slice() {
            let subject = text(after.room_subject.as_slice());
            changes.push(("topic", EventKind::Topic { text: subject }));
        }
        let admin = UserUri::new(room.domain(), crate::adapter::BOT_USER);
        let mut pending = Vec::new();
        for (what, kind) in changes {
            let id = format!("{what}/{epoch}/{room}");
            let mut event = InboundEvent::new(
                room.to_string(),
                Some(bridge_core::RemoteEventId::new(id)),
                admin.to_string(),
                kind,
            );
            event.sender.display_name = Some(room.domain().to_owned());
            pending.push(self.0.ctx.enqueue(event).map_err(internal)?);
        }
        Ok(pending)
    }

    /// Hands the core a join or leave for each user of another provider that a commit added
    /// to or removed from `room`'s participant list (`before` → `after`): a ban when the list
    /// keeps them as banned, a kick when another member took them out (`removed_by`), a leave
    /// when they proposed it themselves; and a role for each
    /// one whose standing changed with their role (or who joined standing above or below a
    /// member; [`crate::mls::RoleData::standing`]); not waited for: the answer that follows
    /// flushes the store. Native IDs name the epoch, so a replayed commit is recognised.
    fn memberships(
        &self,
        room: &RoomUri,
        before: &[crate::mls::Participant],
        after: &[crate::mls::Participant],
        removed_by: &[(UserUri, UserUri)],
        epoch: u64,
    ) -> Result<Vec<Pending>, ProviderError> {
        use bridge_core::{EventKind, MembershipChange};
        // Present: listed with a role that may have clients; a ban keeps the entry, as role 1.
        let present = |list: &[crate::mls::Participant], user: &str| {
            list.iter().any(|p| p.user == user && p.present())
        };
        let banned = |user: &str| after.iter().any(|p| p.user == user && p.banned());
        let joined = after
            .iter()
            .filter(|p| p.present() && !present(before, &p.user))
            .map(|p| (p, MembershipChange::Join));
        let left = before
            .iter()
            .filter(|p| p.present() && !present(after, &p.user))
            .map(|p| {
                let taken_out = removed_by.iter().any(|(u, _)| u.to_string() == p.user);
                let change = if banned(&p.user) {
                    MembershipChange::Ban
                } else if taken_out {
                    MembershipChange::Kick
                } else {
                    MembershipChange::Leave
                };
                (p, change)
            });
        // Standing after the commit, against before it (a newcomer against a member's).
        let role_of = |list: &[crate::mls::Participant], user: &str| {
            list.iter()
                .find(|p| p.user == user && p.present())
                .map(|p| p.role_index)
        };
        let moved: Vec<&crate::mls::Participant> = after
            .iter()
            .filter(|p| p.present() && role_of(before, &p.user) != Some(p.role_index))
            .collect();
        let mut roles = Vec::new();
        if !moved.is_empty()
            && let Ok((defined, _, _)) = self.0.mls.room_policy(room)
        {
            for p in moved {
                let Some(now) = defined.standing(p.role_index) else {
                    continue;
                };
                let was = match role_of(before, &p.user) {
                    Some(index) => defined.standing(index),
                    None => Some(bridge_core::Role::Member),
                };
                if was != Some(now) {
                    roles.push((p, now));
                }
            }
        }
        let mut pending = Vec::new();
        debug!(%room, ?before, ?after, epoch, "participant list changed");
        for (participant, change) in joined.chain(left) {
            let Ok(user) = UserUri::parse(&participant.user) else {
                continue;
            };
            if user.domain().eq_ignore_ascii_case(&self.0.settings.domain) {
                continue; // our own puppets: the core knows
            }
            let verb = match change {
                MembershipChange::Join => "join",
                MembershipChange::Ban => "ban",
                MembershipChange::Kick => "kick",
                _ => "leave",
            };
            let id = format!("{verb}/{epoch}/{user}");
            let mut event = InboundEvent::new(
                room.to_string(),
                Some(bridge_core::RemoteEventId::new(id)),
                user.to_string(),
                EventKind::Membership {
                    change,
                    reason: None,
                },
            );
            event.sender.display_name = Some(display_name(&user));
            pending.push(self.0.ctx.enqueue(event).map_err(internal)?);
        }
        for (participant, role) in roles {
            let Ok(user) = UserUri::parse(&participant.user) else {
                continue;
            };
            if user.domain().eq_ignore_ascii_case(&self.0.settings.domain) {
                continue; // our own puppets: their standing is the bridge's doing
            }
            let mut event = InboundEvent::new(
                room.to_string(),
                Some(bridge_core::RemoteEventId::new(format!(
                    "role/{epoch}/{user}"
                ))),
                user.to_string(),
                EventKind::Role { role },
            );
            event.sender.display_name = Some(display_name(&user));
            pending.push(self.0.ctx.enqueue(event).map_err(internal)?);
        }
        Ok(pending)
    }

    /// Our puppets that another member took out of `room` (`removed_by`: puppet, remover),
    /// handed to the core as that member's [`EventKind::Moderation`] of the user each puppet
    /// stands for: a ban when the list after the commit (`after`) keeps the puppet as banned, a
    /// kick otherwise. The user's own network then does the same to them, as it does for a
    /// moderator of any network. (A puppet's own leave is no one's moderation, and
    /// [`Self::memberships`] leaves our puppets to the core, which made them.)
    ///
    /// [`EventKind::Moderation`]: bridge_core::EventKind::Moderation
    fn removals(
        &self,
        room: &RoomUri,
        removed_by: &[(UserUri, UserUri)],
        after: &[crate::mls::Participant],
        epoch: u64,
    ) -> Result<Vec<Pending>, ProviderError> {
        use bridge_core::{EventKind, ModerationAction};
        let mut pending = Vec::new();
        for (puppet, by) in removed_by {
            if !puppet
                .domain()
                .eq_ignore_ascii_case(&self.0.settings.domain)
            {
                continue; // another provider's user: a kick in `memberships`
            }
            let Some((adapter, user)) = self.0.stands_for(&puppet.to_string()) else {
                warn!(%room, %puppet, "a puppet we do not know of was removed");
                continue;
            };
            let puppet_uri = puppet.to_string();
            let banned = after.iter().any(|p| p.user == puppet_uri && p.banned());
            let (verb, action) = if banned {
                ("banned", ModerationAction::Ban)
            } else {
                ("kicked", ModerationAction::Kick)
            };
            info!(%room, %puppet, %by, action = verb, "a puppet of ours was taken out of the room");
            let mut event = InboundEvent::new(
                room.to_string(),
                Some(bridge_core::RemoteEventId::new(format!(
                    "{verb}/{epoch}/{puppet}"
                ))),
                by.to_string(),
                EventKind::Moderation {
                    target: bridge_core::Sender {
                        adapter,
                        user,
                        display_name: None,
                        avatar: None,
                    },
                    action,
                    reason: None,
                },
            );
            event.sender.display_name = Some(display_name(by));
            pending.push(self.0.ctx.enqueue(event).map_err(internal)?);
        }
        Ok(pending)
    }

    /// Hands a decrypted message to the core (not waiting for durability), unless it is the
    /// echo of one of our puppets or cannot be shown (logged: retrying would not help).
    fn enqueue(
        &self,
        room: &RoomUri,
        sender: &str,
        plaintext: &[u8],
        ts: Option<u64>,
    ) -> Result<Option<Pending>, ProviderError> {
        let user = ClientUri::parse(sender)
            .map(|c| c.user().clone())
            .or_else(|_| UserUri::parse(sender))
            .map_err(|e| ProviderError::BadRequest(format!("sender {sender}: {e}")))?;
        if user.domain().eq_ignore_ascii_case(&self.0.settings.domain) {
            return Ok(None); // our own puppet's message coming back
        }
        let decoded = payload::decode(
            plaintext,
            &user.to_string(),
            &room.to_string(),
            self.0.ctx.adapter_id(),
        );
        let decoded = match decoded {
            Ok(Some(decoded)) => decoded,
            Ok(None) => return Ok(None),
            Err(error) => {
                warn!(%room, %user, %error, "MIMI message not bridged");
                return Ok(None);
            }
        };
        // How to open its files later: written before the event, so the flush that makes the
        // event durable covers it.
        for file in &decoded.attachments {
            let received = assets::Received::of(&file.part, room.domain());
            assets::remember(self.0.ctx.store(), &file.part.url, &received).map_err(internal)?;
        }
        let mut kind = decoded.kind;
        // A mention of one of our puppets is a mention of the user it stands for.
        if let bridge_core::EventKind::Message { content, .. }
        | bridge_core::EventKind::Edit { new: content, .. } = &mut kind
        {
            for mention in &mut content.mentions {
                if let Some((adapter, user)) = self.0.stands_for(mention.user.as_str()) {
                    mention.adapter = adapter;
                    mention.user = user;
                }
            }
        }
        // The core lets only a message's author or a moderator delete it. In MIMI a moderator
        // is a participant whose role has canDeleteOtherMessage (draft-ietf-mimi-room-policy-03;
        // the bridge's own roles give it to moderators and group admins).
        let deleted = match &kind {
            bridge_core::EventKind::Redaction { target, .. } => Some(target.clone()),
            _ => None,
        };
        let by_moderator = match &deleted {
            Some(_) => self
                .0
                .mls
                .has_capability(room, &user.to_string(), CAPABILITY_CAN_DELETE_OTHER_MESSAGE)
                .map_err(internal)?,
            None => false,
        };
        let mut event =
            InboundEvent::new(room.to_string(), Some(decoded.id), user.to_string(), kind);
        event.ts = ts;
        event.sender.display_name = Some(display_name(&user));
        event.by_moderator = by_moderator;
        let pending = self.0.ctx.enqueue(event).map_err(internal)?;
        // A moderator deleting one of our puppets' messages (the only messages whose files we
        // host; their author is never this sender, who is on another provider): its files go
        // too, in the writes the event's flush covers.
        if let Some(message) = deleted.filter(|_| by_moderator) {
            match assets::forget_files_of(self.0.ctx.store(), message.as_str()) {
                Ok(0) => {}
                Ok(n) => {
                    info!(%message, files = n, "hosted files of a message deleted on MIMI deleted")
                }
                Err(e) => {
                    warn!(%message, error = %e, "hosted files of a deleted message not deleted")
                }
            }
        }
        Ok(Some(pending))
    }
}

/// What other networks show as a MIMI user's name. MIMI has no display names (a participant is
/// its URI): the user part of the URI, decoded (`dana` for `mimi://hub.example/u/dana`), which
/// reads better than the URI in a nick or a Matrix ghost's name.
fn display_name(user: &UserUri) -> String {
    user.user().to_owned()
}

impl Handler {
    /// [`Running::link_if_direct`], its failure answered so that the hub notifies again.
    async fn link_if_direct(&self, room: &RoomUri) -> Result<(), ProviderError> {
        self.0
            .link_if_direct(room)
            .await
            .map(drop)
            .map_err(|e| ProviderError::Unavailable {
                reason: format!("{room}: the direct conversation is not linked yet: {e}"),
                retry_after: None,
            })
    }

    /// A follower's puppet asks to join (a new member's Add proposal): committed at once by
    /// the bot; the proposal and commit go to the followers, the Welcome to the asking one.
    async fn join(
        &self,
        room: &RoomUri,
        peer: &PeerDomain,
        proposal: &MlsMessage,
    ) -> Result<UpdateRoomResponse, ProviderError> {
        let followers = self.0.followers(room).map_err(internal)?;
        let before = self.0.mls.participants(room).map_err(internal)?;
        let output = match self.0.mls.accept_join(
            room,
            &self.0.bot(),
            proposal.as_bytes(),
            peer.as_str(),
            ROLE_ORDINARY_USER,
        ) {
            Ok(output) => output,
            // A repeated request (the answer to the first was lost): the first was committed
            // and its Welcome is queued for the peer, so this one succeeds without a second
            // client in the group.
            Err(MlsError::AlreadyMember { client, .. }) => {
                debug!(%room, %client, "join asked again: already a member");
                return Ok(UpdateRoomResponse {
                    error_description: String::new(),
                    result: UpdateResult::Success {
                        accepted_timestamp: now_ms(),
                    },
                });
            }
            Err(e) => return update_refusal(e),
        };
        let joins = self.memberships(room, &before, &output.participants, &[], output.epoch)?;
        let accepted_timestamp = now_ms();
        let bad = |e: crate::wire::WireError| ProviderError::Internal(e.to_string());
        let handshake = vec![
            FanoutMessage {
                timestamp: accepted_timestamp,
                payload: FanoutPayload::Proposal {
                    proposal: proposal.clone(),
                    more_proposals: Vec::new(),
                },
            },
            FanoutMessage {
                timestamp: accepted_timestamp,
                payload: FanoutPayload::Commit {
                    commit: MlsMessage::from_bytes(output.commit).map_err(bad)?,
                    external_proposals: Vec::new(),
                },
            },
        ];
        let welcome = match output.welcome {
            Some(welcome) => Some(FanoutMessage {
                timestamp: accepted_timestamp,
                payload: FanoutPayload::Welcome {
                    welcome: MlsMessage::from_bytes(welcome).map_err(bad)?,
                    ratchet_tree: RatchetTreeOption::Full(
                        RatchetTree::from_bytes(output.ratchet_tree).map_err(bad)?,
                    ),
                },
            }),
            None => None,
        };
        let mut bodies = super::fanout::Queue::to_all(&followers, &handshake);
        if !followers.iter().any(|d| d == peer.as_str()) {
            bodies.push((peer.as_str().to_owned(), Vec::new()));
        }
        for (domain, messages) in &mut bodies {
            if domain == peer.as_str() {
                messages.extend(welcome.clone());
            }
        }
        self.0.queue.push(room, &bodies, &[]).map_err(internal)?;
        for p in joins {
            durable(Some(p)).await;
        }
        self.0.ctx.store().flush().await.map_err(internal)?;
        self.0.queue.wake();
        Ok(UpdateRoomResponse {
            error_description: String::new(),
            result: UpdateResult::Success { accepted_timestamp },
        })
    }
}

/// Store key prefix of KeyPackages the hub relayed: hex `KeyPackageRef` → the provider domain
/// that owns it, a newline and when it was relayed (ms since the epoch; expired a week later,
/// see `expiry`).
const KEY_PACKAGE_OWNER: &str = "a/kpref/";

/// The provider domain of a relayed KeyPackage record ([`KEY_PACKAGE_OWNER`]); records written
/// before they carried a time hold the domain alone.
fn relayed_owner(record: &[u8]) -> String {
    let record = String::from_utf8_lossy(record);
    record.split('\n').next().unwrap_or_default().to_owned()
}

/// Lower-case hex of `bytes`.
fn digest_hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Store key prefix of decryptions kept until the message is safely handled
/// ([`crate::mls::MlsHost::decrypt_once`]): hex SHA-256 of the MLS message.
const DECRYPTED: &str = "a/decrypted/";

/// Deletes kept decryptions once what they produced is on disk.
fn forget(store: &bridge_core::AdapterStore, keys: &[String]) {
    for key in keys {
        if let Err(error) = store.delete(key.as_bytes()) {
            warn!(%error, "MIMI kept decryption not removed");
        }
    }
}

async fn durable(pending: Option<Pending>) {
    if let Some(pending) = pending
        && let Submitted::Rejected(reason) = pending.durable().await
    {
        warn!(%reason, "MIMI message refused by the core");
    }
}

#[async_trait]
impl Provider for Handler {
    async fn key_material(
        &self,
        peer: &PeerDomain,
        target_user: IdentifierUri,
        request: KeyMaterialRequest,
    ) -> Result<KeyMaterialResponse, ProviderError> {
        let unknown = |status| KeyMaterialResponse {
            protocol: Protocol::Mls10,
            user_status: status,
            user_uri: target_user.clone(),
            clients: Vec::new(),
        };
        let Ok(user) = UserUri::parse(target_user.as_str()) else {
            return Ok(unknown(KeyMaterialUserCode::UserUnknown));
        };
        if !user.domain().eq_ignore_ascii_case(&self.0.settings.domain) {
            return self.relay_key_material(peer, &user, request).await;
        }
        // Only puppets that exist (someone bridged spoke through them) have key material.
        if self.0.mls.unused_key_packages(&user).map_err(internal)? == 0
            && self
                .0
                .ctx
                .store()
                .get(format!("mls/u/{user}").as_bytes())
                .map_err(internal)?
                .is_none()
        {
            return Ok(unknown(KeyMaterialUserCode::UserUnknown));
        }
        let client = IdentifierUri(user.puppet_client().to_string());
        let result = match self.0.mls.take_key_package(&user).map_err(internal)? {
            Some(kp) => ClientKeyMaterialResult::Success(
                KeyPackage::from_bytes(to_bytes(&kp).map_err(internal)?).map_err(internal)?,
            ),
            None => ClientKeyMaterialResult::KeyMaterialExhausted,
        };
        self.0.ctx.store().flush().await.map_err(internal)?;
        let status = if matches!(result, ClientKeyMaterialResult::Success(_)) {
            KeyMaterialUserCode::Success
        } else {
            KeyMaterialUserCode::NoCompatibleMaterial
        };
        Ok(KeyMaterialResponse {
            protocol: Protocol::Mls10,
            user_status: status,
            user_uri: target_user,
            clients: vec![ClientKeyMaterial {
                client_uri: client,
                result,
            }],
        })
    }

    async fn update(
        &self,
        peer: &PeerDomain,
        room: IdentifierUri,
        request: UpdateRequest,
    ) -> Result<UpdateRoomResponse, ProviderError> {
        let room = self.hosted(&room)?;
        if let HandshakeBundle::Proposals(bundle) = &request.bundle
            && bundle.more_proposals.is_empty()
        {
            return self.join(&room, peer, &bundle.proposal).await;
        }
        if !self.has_participant(&room, peer)? {
            return Ok(UpdateRoomResponse {
                error_description: format!("{peer} has no participant in {room}"),
                result: UpdateResult::NotAllowed,
            });
        }
        let followers = self.0.followers(&room).map_err(internal)?;
        let mut welcome = None;
        let (messages, payload) = match request.bundle {
            HandshakeBundle::Commit(bundle) => {
                if let Some(w) = &bundle.welcome {
                    welcome = Some((w.clone(), bundle.ratchet_tree.clone()));
                }
                (
                    vec![bundle.commit.clone()],
                    FanoutPayload::Commit {
                        commit: bundle.commit,
                        external_proposals: Vec::new(),
                    },
                )
            }
            HandshakeBundle::Proposals(bundle) => {
                let mut all = vec![bundle.proposal.clone()];
                all.extend(bundle.more_proposals.iter().cloned());
                (
                    all,
                    FanoutPayload::Proposal {
                        proposal: bundle.proposal,
                        more_proposals: bundle.more_proposals,
                    },
                )
            }
        };
        let before = self.0.mls.participants(&room).map_err(internal)?;
        let mut committed = None;
        // Proposals: checked against the room policy and committed at once by the bot (the hub
        // commits pending proposals before anything else, §3.5); nothing is kept if refused.
        let proposed = if matches!(payload, FanoutPayload::Proposal { .. }) {
            let bytes: Vec<&[u8]> = messages.iter().map(MlsMessage::as_bytes).collect();
            match self
                .0
                .mls
                .commit_proposals_from(&room, &self.0.bot(), &bytes, peer.as_str())
            {
                Ok(output) => Some(output),
                Err(e) => return update_refusal(e),
            }
        } else {
            None
        };
        for message in messages.iter().filter(|_| proposed.is_none()) {
            match self
                .0
                .mls
                .process_from(&room, message.as_bytes(), peer.as_str())
            {
                Ok(Processed::Commit {
                    epoch,
                    participants,
                    removed_by,
                    ..
                }) => committed = Some((epoch, participants, removed_by)),
                Ok(_) => {}
                Err(e) => return update_refusal(e),
            }
        }
        // A follower's commit that adds clients: its Welcome goes to the providers whose
        // KeyPackages we relayed, with the full tree (ours, after the commit, unless the
        // bundle carries it).
        let mut welcomed = Vec::new();
        if let Some((welcome, tree)) = welcome {
            // The bundle's Welcome is bare; the notify carries an MLSMessage (version 1,
            // wire format 3 = mls_welcome).
            let mut message = vec![0, 1, 0, 3];
            message.extend_from_slice(welcome.as_bytes());
            let destinations = self.welcome_destinations(&message)?;
            let tree = match tree {
                RatchetTreeOption::Full(tree) => RatchetTreeOption::Full(tree),
                _ => {
                    let (_, tree) = self.0.mls.group_info(&room).map_err(internal)?;
                    RatchetTreeOption::Full(
                        RatchetTree::from_bytes(tree)
                            .map_err(|e| ProviderError::Internal(e.to_string()))?,
                    )
                }
            };
            let welcome = FanoutMessage {
                timestamp: now_ms(),
                payload: FanoutPayload::Welcome {
                    welcome: MlsMessage::from_bytes(message)
                        .map_err(|e| ProviderError::BadRequest(format!("Welcome: {e}")))?,
                    ratchet_tree: tree,
                },
            };
            welcomed = destinations
                .into_iter()
                .map(|domain| (domain, welcome.clone()))
                .collect();
        }
        let accepted_timestamp = now_ms();
        let fanned = FanoutMessage {
            timestamp: accepted_timestamp,
            payload,
        };
        let mut bodies = super::fanout::Queue::to_all(&followers, &[fanned]);
        let mut joins_and_leaves = Vec::new();
        if let Some(output) = proposed {
            // A follower's puppet leaving proposed its removal, the bot committed it. The
            // proposer already holds its proposals; everyone gets the commit.
            let commit = FanoutMessage {
                timestamp: accepted_timestamp,
                payload: FanoutPayload::Commit {
                    commit: MlsMessage::from_bytes(output.commit)
                        .map_err(|e| ProviderError::Internal(e.to_string()))?,
                    external_proposals: Vec::new(),
                },
            };
            for (domain, messages) in &mut bodies {
                if domain == peer.as_str() {
                    messages.clear();
                }
                messages.push(commit.clone());
            }
            // The proposals were the follower's own: leaves, not removals by anyone else.
            joins_and_leaves =
                self.memberships(&room, &before, &output.participants, &[], output.epoch)?;
        } else if let Some((epoch, participants, removed_by)) = &committed {
            joins_and_leaves =
                self.memberships(&room, &before, participants, removed_by, *epoch)?;
            joins_and_leaves.extend(self.removals(&room, removed_by, participants, *epoch)?);
        }
        for (domain, welcome) in welcomed {
            match bodies.iter_mut().find(|(d, _)| *d == domain) {
                Some((_, messages)) => messages.push(welcome),
                None => bodies.push((domain, vec![welcome])),
            }
        }
        self.0.queue.push(&room, &bodies, &[]).map_err(internal)?;
        for p in joins_and_leaves {
            durable(Some(p)).await;
        }
        self.0.ctx.store().flush().await.map_err(internal)?;
        self.0.queue.wake();
        Ok(UpdateRoomResponse {
            error_description: String::new(),
            result: UpdateResult::Success { accepted_timestamp },
        })
    }

    async fn submit_message(
        &self,
        peer: &PeerDomain,
        room: IdentifierUri,
        request: SubmitMessageRequest,
    ) -> Result<SubmitMessageResponse, ProviderError> {
        let room = self.hosted(&room)?;
        let answer = |result| SubmitMessageResponse {
            protocol: Protocol::Mls10,
            result,
        };
        if request.sending_uri.domain().as_deref() != Some(peer.as_str())
            || !self.has_participant(&room, peer)?
        {
            return Ok(answer(SubmitResult::NotAllowed));
        }
        let bytes = request.app_message.as_bytes();
        let seen_key = format!("a/submitted/{}", digest_hex(bytes));
        let store = self.0.ctx.store();
        if let Some(ts) = store.get(seen_key.as_bytes()).map_err(internal)? {
            let accepted_timestamp = String::from_utf8_lossy(&ts).parse().unwrap_or(0);
            return Ok(answer(SubmitResult::Accepted {
                accepted_timestamp,
                frank: None,
            }));
        }
        let kept_key = format!("{DECRYPTED}{}", digest_hex(bytes));
        let decrypted = match self.0.mls.decrypt_once(&room, bytes, &kept_key) {
            Ok(Processed::Application(decrypted)) => decrypted,
            Ok(_) => return Ok(answer(SubmitResult::NotAllowed)),
            Err(MlsError::Storage(e)) => return Err(internal(e)),
            Err(e) => {
                debug!(%room, error = %e, "MIMI submitted message not decrypted");
                let current_epoch = self.0.mls.epoch(&room).map_err(internal)?;
                return Ok(answer(SubmitResult::EpochTooOld { current_epoch }));
            }
        };
        // A refusal keeps the decryption (`kept_key`), so that a retry of the same message is
        // refused again rather than failing to decrypt a second time.
        let sender = match ClientUri::parse(&decrypted.sender) {
            Ok(client) if client.user().domain().eq_ignore_ascii_case(peer.as_str()) => {
                client.user().to_string()
            }
            _ => return Ok(answer(SubmitResult::NotAllowed)),
        };
        // The one message capability a hub enforces (draft-ietf-mimi-room-policy-03 §8.3).
        match self.0.mls.may_send(&room, &sender) {
            Ok(()) => {}
            Err(MlsError::Storage(e)) => return Err(internal(e)),
            Err(e) => {
                info!(%room, %peer, error = %e, "MIMI submitted message refused");
                return Ok(answer(SubmitResult::NotAllowed));
            }
        }
        let accepted_timestamp = now_ms();
        let pending = self.enqueue(
            &room,
            &decrypted.sender,
            &decrypted.plaintext,
            Some(accepted_timestamp),
        )?;
        let followers = self.0.followers(&room).map_err(internal)?;
        let fanned = FanoutMessage {
            timestamp: accepted_timestamp,
            payload: FanoutPayload::Application {
                message: request.app_message.clone(),
                frank: None,
            },
        };
        let ts = accepted_timestamp.to_string();
        self.0
            .queue
            .push(
                &room,
                &super::fanout::Queue::to_all(&followers, &[fanned]),
                &[(seen_key.as_bytes(), ts.as_bytes())],
            )
            .map_err(internal)?;
        // Covers the event the core took and the queue entries (see `notify`).
        store.flush().await.map_err(internal)?;
        durable(pending).await;
        self.0.queue.wake();
        forget(store, &[kept_key]);
        Ok(answer(SubmitResult::Accepted {
            accepted_timestamp,
            frank: None,
        }))
    }

    async fn notify(
        &self,
        _peer: &PeerDomain,
        room: IdentifierUri,
        body: NotifyBody,
    ) -> Result<(), ProviderError> {
        let room = room_of(&room)?;
        let mut pending = Vec::new();
        let mut kept = Vec::new();
        // Whether this notify made sure the core has `room` (linked, or linked here as a direct
        // conversation): what is decrypted in a room it lacks would be dropped.
        let mut looked = false;
        for message in body.messages {
            if matches!(message.payload, FanoutPayload::Application { .. }) && !looked {
                self.link_if_direct(&room).await?;
                looked = true;
            }
            let outcome = match &message.payload {
                FanoutPayload::Application { message: m, .. } => {
                    let key = format!("{DECRYPTED}{}", digest_hex(m.as_bytes()));
                    let decrypted = self.0.mls.decrypt_once(&room, m.as_bytes(), &key);
                    kept.push(key);
                    match decrypted {
                        Ok(Processed::Application(d)) => {
                            pending.push(self.enqueue(
                                &room,
                                &d.sender,
                                &d.plaintext,
                                Some(message.timestamp),
                            )?);
                            Ok(())
                        }
                        Ok(_) => Ok(()),
                        Err(e) => Err(e),
                    }
                }
                FanoutPayload::Welcome {
                    welcome,
                    ratchet_tree,
                } => {
                    let tree = match ratchet_tree {
                        RatchetTreeOption::Full(tree) => Some(tree.as_bytes()),
                        _ => None,
                    };
                    match self.0.mls.join(welcome.as_bytes(), tree) {
                        Ok(joined) => {
                            if let Processed::Joined { room, users } = &joined {
                                self.0.joined(room, users).map_err(internal)?;
                            }
                            self.link_if_direct(&room).await?;
                            looked = true;
                            Ok(())
                        }
                        Err(MlsError::NotForUs) => {
                            // A replayed Welcome (NotForUs: already used) may follow a
                            // link that failed: look again.
                            self.link_if_direct(&room).await?;
                            looked = true;
                            Ok(())
                        }
                        Err(e) => Err(e),
                    }
                }
                FanoutPayload::Commit { commit, .. } => {
                    let before = self.0.mls.participants(&room).unwrap_or_default();
                    let metadata_before = self.0.mls.room_metadata(&room).ok().flatten();
                    match self.0.mls.process(&room, commit.as_bytes()) {
                        Ok(Processed::Commit {
                            epoch,
                            participants,
                            removed_by,
                            ..
                        }) if !before.is_empty() => {
                            pending.extend(
                                self.memberships(
                                    &room,
                                    &before,
                                    &participants,
                                    &removed_by,
                                    epoch,
                                )?
                                .into_iter()
                                .chain(self.removals(&room, &removed_by, &participants, epoch)?)
                                .map(Some),
                            );
                            let metadata_after = self.0.mls.room_metadata(&room).ok().flatten();
                            pending.extend(
                                self.metadata_changes(
                                    &room,
                                    metadata_before.as_ref(),
                                    metadata_after.as_ref(),
                                    epoch,
                                )?
                                .into_iter()
                                .map(Some),
                            );
                            Ok(())
                        }
                        other => other.map(|_| ()),
                    }
                }
                FanoutPayload::Proposal {
                    proposal,
                    more_proposals,
                } => std::iter::once(proposal)
                    .chain(more_proposals)
                    .try_for_each(|p| self.0.mls.process(&room, p.as_bytes()).map(|_| ())),
            };
            match outcome {
                Ok(()) => {}
                Err(MlsError::Storage(e)) => return Err(internal(e)),
                // Not for us, replayed or undecryptable: retrying would not help.
                Err(e) => warn!(%room, error = %e, "MIMI notified message skipped"),
            }
        }
        // One wait covers everything written above: the events the core took (each batch
        // numbered as it was applied), the MLS state and the kept decryptions. Waiting for the
        // events first and flushing after would wait a second time for whatever the core wrote
        // meanwhile.
        self.0.ctx.store().flush().await.map_err(internal)?;
        for p in pending {
            durable(p).await;
        }
        forget(self.0.ctx.store(), &kept);
        Ok(())
    }

    async fn asset(
        &self,
        _peer: &PeerDomain,
        id: String,
    ) -> Result<DownloadedAsset, ProviderError> {
        match assets::hosted(self.0.ctx.store(), &id).map_err(internal)? {
            Some(body) => Ok(DownloadedAsset {
                content_type: None,
                body,
            }),
            None => Err(ProviderError::NotFound(format!("no asset {id}"))),
        }
    }

    /// As hub: fetches `download_url` for `peer`, only from a provider with a participant in
    /// a room we host (or from ourselves), so we are not an open proxy (§5.10.2).
    async fn proxy_download(
        &self,
        peer: &PeerDomain,
        download_url: String,
    ) -> Result<DownloadedAsset, ProviderError> {
        let owner = self.0.owner_of(&download_url).ok_or_else(|| {
            ProviderError::BadRequest(format!("{download_url} is not a provider's URL"))
        })?;
        let known = owner == self.0.settings.domain
            || self.0.ctx.linked_rooms().iter().any(|room| {
                RoomUri::parse(room.as_str()).is_ok_and(|room| {
                    self.0.is_hub(&room)
                        && self.0.followers(&room).is_ok_and(|f| f.contains(&owner))
                })
            });
        if !known {
            return Err(ProviderError::Forbidden(format!(
                "{owner} is not a provider of our rooms"
            )));
        }
        debug!(peer = %peer.as_str(), url = %download_url, "proxyDownload");
        let body = self
            .0
            .download(&download_url, &self.0.settings.domain)
            .await
            .map_err(|e| ProviderError::Unavailable {
                reason: e.to_string(),
                retry_after: None,
            })?;
        Ok(DownloadedAsset {
            content_type: None,
            body,
        })
    }

    /// As hub (§5.6): the room's GroupInfo and full ratchet tree, encrypted to the requester's
    /// key and signed by the hub, for a client of the calling provider whose user is a
    /// participant (a new client of an existing user joining by external commit). The request's
    /// signature is checked first; other requesters get `notAuthorized` (joining codes and open
    /// rooms are not supported).
    async fn group_info(
        &self,
        peer: &PeerDomain,
        room: IdentifierUri,
        request: GroupInfoRequest,
    ) -> Result<GroupInfoResponse, ProviderError> {
        let answer = |result| GroupInfoResponse {
            protocol: Protocol::Mls10,
            room_id: room.clone(),
            result,
        };
        let hosted = match self.hosted(&room) {
            Ok(hosted) => hosted,
            Err(ProviderError::NotFound(_)) => return Ok(answer(GroupInfoResult::NoSuchRoom)),
            Err(e) => return Err(e),
        };
        if request.cipher_suite != CipherSuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_ED25519 {
            return Err(ProviderError::BadRequest(format!(
                "cipher suite {:#06x}: we speak 0x0001 only",
                request.cipher_suite.0
            )));
        }
        let bad = |e: &dyn std::fmt::Display| ProviderError::BadRequest(e.to_string());
        let tbs = request.to_be_signed().map_err(|e| bad(&e))?;
        self.0
            .mls
            .verify_with_label(
                request.requesting_signature_key.0.as_slice(),
                GroupInfoRequest::SIGNATURE_LABEL,
                &tbs,
                request.signature.as_slice(),
            )
            .map_err(|e| bad(&e))?;
        let credential = &request.requesting_credential;
        let user = (credential.credential_type == Credential::BASIC)
            .then(|| String::from_utf8(credential.content.as_slice().to_vec()).ok())
            .flatten()
            .and_then(|identity| ClientUri::parse(&identity).ok())
            .map(|client| client.user().clone());
        let participant = match &user {
            Some(user) if user.domain().eq_ignore_ascii_case(peer.as_str()) => self
                .0
                .mls
                .participants(&hosted)
                .map_err(internal)?
                .iter()
                .any(|p| p.user == user.to_string() && p.present()),
            _ => false,
        };
        if !participant {
            debug!(%room, peer = %peer.as_str(), "groupInfo refused: not a participant's client");
            return Ok(answer(GroupInfoResult::NotAuthorized));
        }
        let (info, tree) = self.0.mls.group_info(&hosted).map_err(internal)?;
        // An MLSMessage: version (2 bytes), wire format (2 bytes, 4 = GroupInfo), GroupInfo.
        let info = match info.get(..4) {
            Some([0, 1, 0, 4]) => info[4..].to_vec(),
            _ => return Err(ProviderError::Internal("our GroupInfo message".into())),
        };
        let wire = |e: crate::wire::WireError| ProviderError::Internal(e.to_string());
        let tbe = GroupInfoRatchetTreeTbe {
            group_info: GroupInfo::from_bytes(info).map_err(wire)?,
            ratchet_tree: RatchetTreeOption::Full(RatchetTree::from_bytes(tree).map_err(wire)?),
            pending_proposals: Vec::new(),
        };
        let plaintext = to_bytes(&tbe).map_err(ProviderError::Internal)?;
        let (kem_output, ciphertext) = self
            .0
            .mls
            .encrypt_with_label(
                request.group_info_public_key.0.as_slice(),
                GroupInfoRatchetTreeTbe::ENCRYPTION_LABEL,
                room.as_str().as_bytes(),
                &plaintext,
            )
            .map_err(|e| bad(&e))?;
        let (public_key, identity) = self.0.mls.hub_sender().map_err(internal)?;
        let mut response = answer(GroupInfoResult::Success {
            cipher_suite: request.cipher_suite,
            hub_sender: ExternalSender {
                signature_key: SignaturePublicKey(public_key.into()),
                credential: Credential {
                    credential_type: Credential::BASIC,
                    content: identity.into(),
                },
            },
            encrypted_groupinfo_and_tree: HpkeCiphertext {
                kem_output: kem_output.into(),
                ciphertext: ciphertext.into(),
            },
            signature: Vec::new().into(),
        });
        let tbs = response
            .to_be_signed()
            .map_err(wire)?
            .ok_or_else(|| ProviderError::Internal("an unsigned success".into()))?;
        let signed = self
            .0
            .mls
            .hub_sign_with_label(GroupInfoResponse::SIGNATURE_LABEL, &tbs)
            .map_err(internal)?;
        if let GroupInfoResult::Success { signature, .. } = &mut response.result {
            *signature = signed.signature.into();
        }
        Ok(response)
    }
}

/// The answer to an update the MLS layer refused: `wrongEpoch` with the room's epoch, a storage
/// failure as our own error, anything else `notAllowed` with the reason.
fn update_refusal(e: MlsError) -> Result<UpdateRoomResponse, ProviderError> {
    match e {
        MlsError::WrongEpoch { current, .. } => Ok(UpdateRoomResponse {
            error_description: format!("the room is at epoch {current}"),
            result: UpdateResult::WrongEpoch {
                current_epoch: current,
            },
        }),
        MlsError::Storage(e) => Err(internal(e)),
        e => Ok(UpdateRoomResponse {
            error_description: e.to_string(),
            result: UpdateResult::NotAllowed,
        }),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_relayed_key_package_record_names_its_owner_with_or_without_a_time() {
        assert_eq!(
            super::relayed_owner(b"follower.example\n1800000000000"),
            "follower.example"
        );
        assert_eq!(
            super::relayed_owner(b"follower.example"),
            "follower.example"
        );
    }
}
