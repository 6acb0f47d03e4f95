//! The hub's view of groups in which it has no member (openmls `PublicGroup`): it follows a
//! room from its GroupInfo and ratchet tree, verifies every handshake message (signatures,
//! membership tags, proposal and commit validity, the participant-list rules of §7.5) and keeps
//! the room state current, without any key to read application messages.
//!
//! State lives in the hub's namespace (`mls/c/mimi://DOMAIN/…`, keyed by group ID) plus the
//! record `mls/h/<room URI>`.

use openmls::prelude::*;
use tls_codec::Deserialize as _;

use super::rooms::{
    group_id, identity_of, parse_protocol_message, participants_in, resolve_app_data,
};
use super::uri::RoomUri;
use super::{Checked, MlsError, MlsHost, Participant, Processed, Tx, group_key, mls_err};

fn hub_room_key(room: &RoomUri) -> String {
    format!("mls/h/{room}")
}

impl MlsHost {
    /// The `KeyPackageRef` (RFC 9420 §5.2) of a KeyPackage (TLS-encoded, not in an
    /// `MLSMessage`), after checking it (signature, lifetime, cipher suite): how the hub that
    /// relayed it (`/keyMaterial`) recognises the Welcome for it later.
    pub fn key_package_ref(&self, key_package: &[u8]) -> Result<Vec<u8>, MlsError> {
        let parsed = KeyPackageIn::tls_deserialize_exact(key_package)
            .map_err(|e| MlsError::Malformed(format!("KeyPackage: {e}")))?;
        let valid = parsed
            .validate(&self.crypto, ProtocolVersion::Mls10)
            .map_err(|e| MlsError::Malformed(format!("KeyPackage: {e}")))?;
        Ok(valid
            .hash_ref(&self.crypto)
            .map_err(|e| mls_err("KeyPackage reference")(&e))?
            .as_slice()
            .to_vec())
    }

    /// The `KeyPackageRef`s a Welcome (an `MLSMessage`) is encrypted to: who it is for.
    pub fn welcome_recipients(welcome: &[u8]) -> Result<Vec<Vec<u8>>, MlsError> {
        let parsed = MlsMessageIn::tls_deserialize_exact(welcome)
            .map_err(|e| MlsError::Malformed(e.to_string()))?;
        let MlsMessageBodyIn::Welcome(welcome) = parsed.extract() else {
            return Err(MlsError::Malformed("not a Welcome".into()));
        };
        Ok(welcome
            .secrets()
            .iter()
            .map(|s| s.new_member().as_slice().to_vec())
            .collect())
    }

    fn load_public<'t>(
        &self,
        tx: &'t Tx,
        room: &RoomUri,
    ) -> Result<Checked<'t, PublicGroup>, MlsError> {
        if self.get_record::<bool>(tx, &hub_room_key(room))?.is_none() {
            return Err(MlsError::UnknownRoom(room.to_string()));
        }
        let hub = self.hub_uri();
        let provider = self.provider(tx, &hub);
        self.checkout::<PublicGroup>(tx, &hub, provider.storage(), &group_id(room))?
            .ok_or_else(|| MlsError::UnknownRoom(room.to_string()))
    }

    /// Starts following `room` as its hub from a GroupInfo (`MLSMessage`) and ratchet tree
    /// (`RatchetTree`, TLS-encoded), both verified (the GroupInfo's signature against the tree,
    /// the tree's hashes and leaves). Returns the participant list.
    pub fn hub_track(
        &self,
        room: &RoomUri,
        group_info: &[u8],
        ratchet_tree: &[u8],
    ) -> Result<Vec<Participant>, MlsError> {
        self.room_transaction(room, |tx| {
            let message = MlsMessageIn::tls_deserialize_exact(group_info)
                .map_err(|e| MlsError::Malformed(e.to_string()))?;
            let MlsMessageBodyIn::GroupInfo(info) = message.extract() else {
                return Err(MlsError::Malformed("not a GroupInfo".into()));
            };
            if info.group_id() != &group_id(room) {
                return Err(MlsError::Malformed(format!(
                    "the GroupInfo is not for {room}"
                )));
            }
            let tree = RatchetTreeIn::tls_deserialize_exact(ratchet_tree)
                .map_err(|e| MlsError::Malformed(format!("ratchet tree: {e}")))?;
            let provider = self.provider(tx, &self.hub_uri());
            let (group, _) = PublicGroup::from_external(
                &self.crypto,
                provider.storage(),
                tree,
                info,
                ProposalStore::new(),
            )
            .map_err(|e| mls_err("follow group")(&e))?;
            tx.mark_stale(group_key::<PublicGroup>(&self.hub_uri(), &group_id(room)));
            self.put_record(tx, &hub_room_key(room), &true)?;
            participants_in(group.group_context().extensions())
        })
    }

    /// Verifies and applies a handshake message (`MLSMessage` with a PublicMessage) to the
    /// hub's view of `room`: a proposal is queued, a commit merged. A message for another epoch
    /// is refused with [`MlsError::WrongEpoch`]; an invalid one changes nothing.
    pub fn hub_process(&self, room: &RoomUri, bytes: &[u8]) -> Result<Processed, MlsError> {
        self.room_transaction(room, |tx| {
            let mut group = self.load_public(tx, room)?;
            let provider = self.provider(tx, &self.hub_uri());
            let message = parse_protocol_message(bytes)?;
            if !message.is_handshake_message() || message.wire_format() != WireFormat::PublicMessage
            {
                return Err(MlsError::Malformed(
                    "the hub only reads PublicMessage handshakes".into(),
                ));
            }
            let current = group.group_context().epoch();
            if message.epoch() != current {
                return Err(MlsError::WrongEpoch {
                    current: current.as_u64(),
                    message: message.epoch().as_u64(),
                });
            }
            let processed = group
                .process_message(&self.crypto, message)
                .map_err(|e| mls_err("verify message")(&e))?;
            let staged = match processed.into_content() {
                ProcessedMessageContent::ProposalMessage(proposal)
                | ProcessedMessageContent::ExternalJoinProposalMessage(proposal) => {
                    group
                        .add_proposal(provider.storage(), *proposal)
                        .map_err(|e| mls_err("queue proposal")(&e))?;
                    return Ok(Processed::Proposal);
                }
                ProcessedMessageContent::StagedCommitMessage(staged) => *staged,
                ProcessedMessageContent::UnresolvedAppDataCommit(unresolved) => {
                    let mut updater = group.app_data_dictionary_updater();
                    resolve_app_data(&mut updater, unresolved.app_data_update_proposals())?;
                    let changes = updater.changes();
                    group
                        .stage_app_data_commit(&self.crypto, *unresolved, changes)
                        .map_err(|e| mls_err("stage commit")(&e))?
                }
                _ => return Err(MlsError::Malformed("not a handshake message".into())),
            };
            group
                .merge_commit(provider.storage(), staged)
                .map_err(|e| mls_err("merge commit")(&e))?;
            Ok(Processed::Commit {
                epoch: group.group_context().epoch().as_u64(),
                participants: participants_in(group.group_context().extensions())?,
                removed: Vec::new(),
                removed_by: Vec::new(),
            })
        })
    }

    /// The participant list of a room the hub follows with [`MlsHost::hub_track`].
    pub fn hub_participants(&self, room: &RoomUri) -> Result<Vec<Participant>, MlsError> {
        self.room_transaction(room, |tx| {
            let group = self.load_public(tx, room)?;
            participants_in(group.group_context().extensions())
        })
    }

    /// The clients (credential identities) of a room the hub follows.
    pub fn hub_members(&self, room: &RoomUri) -> Result<Vec<String>, MlsError> {
        self.room_transaction(room, |tx| {
            let group = self.load_public(tx, room)?;
            Ok(group
                .members()
                .map(|m| identity_of(&m.credential))
                .collect())
        })
    }
}
