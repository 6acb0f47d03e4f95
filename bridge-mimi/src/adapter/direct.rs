//! Direct conversations: a one-to-one chat between a user of another network (shown in MIMI as
//! our puppet) and a MIMI user is a MIMI room of its own (protocol-06 has no other kind).
//!
//! - **Opened here** ([`Running::open_direct`], when someone on another network writes to the
//!   puppet of a MIMI user): we host the room `mimi://DOMAIN/r/dm-<hash of the pair>`, the bot
//!   creates it and adds our user's puppet, then claims the MIMI user's KeyPackages from their
//!   provider (`/keyMaterial`, signed by our puppet) and adds them in one commit; the Welcome
//!   goes to that provider by `/notify`. The core links the room to the conversation on the
//!   other network.
//! - **Opened elsewhere** ([`Running::link_if_direct`], when a Welcome brings one of our puppets
//!   into a room no link names): a room whose participants are that puppet and one user of
//!   another provider (besides the hosting bridge's bot) is a direct conversation, and the core
//!   is asked for its neutral room ([`bridge_core::AdapterContext::direct_room`]), which has the
//!   network of the user the puppet stands for open its side. Any other room no link names is
//!   not bridged (an admin links it).

use bridge_core::{AdapterError, RemoteRoomId, RemoteUserId, Sender};
use sha2::Digest as _;
use tracing::{debug, info};

use super::{BOT_USER, Running, client_failed, fanout, mls_failed, now_ms};
use crate::codepoints::ROLE_ORDINARY_USER;
use crate::mls::uri::{ClientUri, RoomUri, UserUri};
use crate::mls::{MlsError, MlsHost};
use crate::wire::{
    CipherSuite, ClientKeyMaterialResult, Credential, FanoutMessage, FanoutPayload, IdentifierUri,
    KeyMaterialRequest, KeyMaterialUserCode, MlsMessage, Protocol, RatchetTree, RatchetTreeOption,
    RequiredCapabilities, SignaturePublicKey,
};

/// The room of the direct conversation between our `puppet` and `far`, hosted by us: the same
/// whichever of them writes first, so a retried open finds the room it began.
pub(crate) fn direct_room_uri(domain: &str, puppet: &UserUri, far: &UserUri) -> RoomUri {
    let digest = sha2::Sha256::digest(format!("{puppet}\n{far}").as_bytes());
    let name: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    RoomUri::new(domain, &format!("dm-{name}"))
}

impl Running {
    /// Opens (or finds) the direct conversation between `far`, a MIMI user of another
    /// provider, and `with`, a user of another adapter (see the module documentation).
    pub(crate) async fn open_direct(
        &self,
        far: &RemoteUserId,
        with: &Sender,
    ) -> Result<RemoteRoomId, AdapterError> {
        let far = UserUri::parse(far.as_str())
            .map_err(|e| AdapterError::Permanent(format!("{far} is not a MIMI user URI: {e}")))?;
        if far.domain().eq_ignore_ascii_case(&self.settings.domain) {
            return Err(AdapterError::Permanent(format!(
                "{far} is a puppet of this bridge, not a MIMI user"
            )));
        }
        let puppet = self.puppet_for(&with.adapter, &with.user)?;
        self.mls.ensure_client(&puppet).map_err(mls_failed)?;
        let room = direct_room_uri(&self.settings.domain, &puppet, &far);
        let native = RemoteRoomId::new(room.to_string());
        self.open_room(&native)?;
        {
            let _one_at_a_time = self.send_lock.lock().await;
            let members = self.mls.local_members_of(&room).map_err(mls_failed)?;
            if !members.contains(&puppet) {
                self.add_local(&room, &puppet)?;
            }
        }
        let far_name = far.to_string();
        let participants = self.mls.participants(&room).map_err(mls_failed)?;
        if participants.iter().any(|p| p.user == far_name) {
            return Ok(native); // opened before (a retry after the link failed)
        }
        let key_packages = self.claim_key_packages(&room, &puppet, &far).await?;
        {
            let _one_at_a_time = self.send_lock.lock().await;
            let followers = self.followers(&room).map_err(mls_failed)?;
            let output = self
                .mls
                .add_clients(&room, &self.bot(), key_packages, ROLE_ORDINARY_USER)
                .map_err(mls_failed)?;
            let bad =
                |e: crate::wire::WireError| AdapterError::Permanent(format!("our commit: {e}"));
            let now = now_ms();
            let commit = FanoutMessage {
                timestamp: now,
                payload: FanoutPayload::Commit {
                    commit: MlsMessage::from_bytes(output.commit).map_err(bad)?,
                    external_proposals: Vec::new(),
                },
            };
            let mut bodies = fanout::Queue::to_all(&followers, &[commit]);
            if let Some(welcome) = output.welcome {
                bodies.push((
                    far.domain().to_ascii_lowercase(),
                    vec![FanoutMessage {
                        timestamp: now,
                        payload: FanoutPayload::Welcome {
                            welcome: MlsMessage::from_bytes(welcome).map_err(bad)?,
                            ratchet_tree: RatchetTreeOption::Full(
                                RatchetTree::from_bytes(output.ratchet_tree).map_err(bad)?,
                            ),
                        },
                    }],
                ));
            }
            self.queue
                .push(&room, &bodies, &[])
                .map_err(AdapterError::from)?;
        }
        self.ctx.store().flush().await?;
        self.queue.wake();
        info!(%room, %puppet, %far, "direct conversation opened (we host it)");
        Ok(native)
    }

    /// Claims a KeyPackage of each client of `far` from its provider for `room`, the request
    /// signed by our `puppet`; checks that each is valid and names a client of `far`.
    async fn claim_key_packages(
        &self,
        room: &RoomUri,
        puppet: &UserUri,
        far: &UserUri,
    ) -> Result<Vec<openmls::prelude::KeyPackage>, AdapterError> {
        let unsigned = |e: crate::wire::WireError| {
            AdapterError::Permanent(format!("our /keyMaterial request: {e}"))
        };
        let mut request = KeyMaterialRequest {
            protocol: Protocol::Mls10,
            requesting_user: IdentifierUri(puppet.to_string()),
            target_user: IdentifierUri(far.to_string()),
            room_id: IdentifierUri(room.to_string()),
            acceptable_ciphersuites: vec![
                CipherSuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_ED25519,
            ],
            required_capabilities: RequiredCapabilities::default(),
            requester_signature_key: SignaturePublicKey(Vec::new().into()),
            requester_credential: Credential {
                credential_type: Credential::BASIC,
                content: Vec::new().into(),
            },
            key_material_request_signature: Vec::new().into(),
        };
        // The key and credential are part of what is signed: fill them in first.
        let (public_key, identity) = self.mls.client_key(puppet).map_err(mls_failed)?;
        request.requester_signature_key = SignaturePublicKey(public_key.into());
        request.requester_credential.content = identity.into();
        let tbs = request.to_be_signed().map_err(unsigned)?;
        let signed = self
            .mls
            .sign_with_label_as(puppet, KeyMaterialRequest::SIGNATURE_LABEL, &tbs)
            .map_err(mls_failed)?;
        request.key_material_request_signature = signed.signature.into();
        let peer = self.peer(far.domain()).await.map_err(client_failed)?;
        let answer = self
            .client
            .key_material(&peer, &IdentifierUri(far.to_string()), &request)
            .await
            .map_err(client_failed)?;
        match answer.user_status {
            KeyMaterialUserCode::Success | KeyMaterialUserCode::PartialSuccess => {}
            status => {
                return Err(AdapterError::Permanent(format!(
                    "{} has no key material for {far}: {status:?}",
                    far.domain()
                )));
            }
        }
        let mut key_packages = Vec::new();
        for client in answer.clients {
            let ClientKeyMaterialResult::Success(key_package) = client.result else {
                debug!(client = %client.client_uri.0, "no KeyPackage for this client");
                continue;
            };
            let key_package = self
                .mls
                .validate_key_package(key_package.as_bytes())
                .map_err(|e| {
                    AdapterError::Permanent(format!("{} sent a bad KeyPackage: {e}", far.domain()))
                })?;
            let identity = MlsHost::key_package_identity(&key_package);
            let owner = ClientUri::parse(&identity).map(|c| c.user().clone());
            if owner.as_ref().ok() != Some(far) {
                return Err(AdapterError::Permanent(format!(
                    "{} sent a KeyPackage of {identity}, not of {far}",
                    far.domain()
                )));
            }
            key_packages.push(key_package);
        }
        if key_packages.is_empty() {
            return Err(AdapterError::transient(format!(
                "{} handed out no KeyPackage of {far}",
                far.domain()
            )));
        }
        Ok(key_packages)
    }

    /// Links `room`, not linked yet, as a direct conversation when it is one: its participants
    /// are one puppet of ours (which stands for a user of another adapter) and one user of
    /// another provider, besides the hosting bridge's bot. True when linked (now or before).
    pub(crate) async fn link_if_direct(&self, room: &RoomUri) -> Result<bool, AdapterError> {
        let native = RemoteRoomId::new(room.to_string());
        if self.ctx.is_linked(&native) {
            return Ok(true);
        }
        let ours = match self.mls.local_members_of(room) {
            Ok(ours) => ours,
            Err(MlsError::UnknownRoom(_)) => return Ok(false),
            Err(e) => return Err(mls_failed(e)),
        };
        let [puppet] = ours.as_slice() else {
            return Ok(false);
        };
        let hub_bot = UserUri::new(room.domain(), BOT_USER).to_string();
        let puppet_uri = puppet.to_string();
        let others: Vec<String> = self
            .mls
            .participants(room)
            .map_err(mls_failed)?
            .into_iter()
            .map(|p| p.user)
            .filter(|u| *u != hub_bot && *u != puppet_uri)
            .collect();
        let not_direct = || {
            debug!(%room, "a room no link names: not bridged (link it to bridge it)");
            Ok(false)
        };
        let [far] = others.as_slice() else {
            return not_direct();
        };
        let Ok(far) = UserUri::parse(far) else {
            return not_direct();
        };
        if far.domain().eq_ignore_ascii_case(&self.settings.domain) {
            return not_direct();
        }
        let Some((adapter, user)) = self.stands_for(&puppet_uri) else {
            return not_direct();
        };
        let counterpart = Sender {
            adapter,
            user,
            display_name: None,
            avatar: None,
        };
        self.ctx
            .direct_room(
                &native,
                &RemoteUserId::new(far.to_string()),
                Some(far.user()),
                &counterpart,
            )
            .await?;
        info!(%room, %far, with = %counterpart.user, "direct conversation linked (hosted by its hub)");
        Ok(true)
    }
}
