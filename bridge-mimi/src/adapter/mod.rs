//! The `type = "mimi"` adapter: the bridge as a MIMI provider (draft-ietf-mimi-protocol-06),
//! hub of the rooms whose URI names our domain and follower of the others.
//!
//! A linked native room is a room URI, `mimi://HUB/r/NAME`. When `HUB` is our domain we are the
//! room's hub: the MLS group is created at start with the bridge bot's puppet as creator, our
//! puppets are added by the bot when they first speak, and every message is fanned out to the
//! followers through one durable queue per follower provider ([`fanout`]). Otherwise we are a
//! follower: messages go to the hub with `/submitMessage`, and what the hub notifies is
//! processed (Welcome, commits, proposals) or decrypted and handed to the core.
//!
//! Guarantees: an inbound message is answered (`/notify` 201, `/submitMessage` accepted) only
//! after the core stored it durably; a notify body is processed once (the dedupe is kept in the
//! store, [`fanout::StoreDedupe`]); the fan-out queue survives a crash; a retried send reuses
//! what was stored for its neutral event ID, so it never produces a second message.

mod assets;
mod direct;
mod expiry;
pub mod fanout;
mod payload;
mod provider;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use bridge_core::{
    Adapter, AdapterContext, AdapterError, AdapterFactory, AdapterId, Attachment, AttachmentBody,
    AttachmentLimit, Capabilities, ConfigIssue, Delivered, EventKind, Mention, OutboundEvent,
    RemoteEventId, RemoteRoomId, RemoteUserId,
};
use sha2::Digest as _;
use tracing::{info, warn};

use crate::codepoints::{CAPABILITY_CAN_DELETE_OTHER_MESSAGE, ROLE_ORDINARY_USER};
use crate::content::Disposition;
use crate::content::neutral::MimiAttachment;
use crate::mls::metadata::RoomMetadata;
use crate::mls::uri::{RoomUri, UserUri};
use crate::mls::{MlsError, MlsHost, RoomProfile};
use crate::settings::{self, Settings};
use crate::transport::client::{ClientError, ClientOptions, MimiClient, Peer};
use crate::transport::server::{ServerOptions, router, serve};
use crate::transport::tls::{TlsIdentity, client_config, roots_from_pem, server_config};
use crate::wire::{
    FanoutMessage, FanoutPayload, HandshakeBundle, IdentifierUri, MlsMessage, ProposalBundle,
    Protocol, SubmitMessageRequest, SubmitResult, UpdateRequest, UpdateResult,
};

/// The native ID of the bridge's bot, the creator of the rooms we host.
pub const BOT_USER: &str = "bridge-bot";

/// Store key prefix of sends already done: neutral event ID → MIMI native ID.
const SENT: &str = "a/sent/";
/// Store key prefix of sends prepared but not yet accepted by the hub: the message ID and the
/// ciphertext.
const PENDING: &str = "a/pending/";
/// Store key prefix of our puppets: user URI → the adapter and native ID it stands for.
const PUPPET: &str = "a/puppet/";
/// Store key prefix of join requests sent to a hub: `<room>/<user>` → when (ms).
const JOINING: &str = "a/joining/";
/// How long a join request is waited for before it is sent again.
const JOIN_PATIENCE_MS: u64 = 30_000;

/// A puppet's request to join a room hosted elsewhere (`a/joining/<room>/<user>`).
#[derive(Debug, PartialEq, Eq)]
enum JoinRequest {
    /// Asked at `at` (ms), for event `by` (none in records written before events were noted).
    Pending { at: u64, by: Option<String> },
    /// The hub's Welcome answered the request of event `by`.
    Done { by: String },
}

impl JoinRequest {
    /// `<ms>`, `<ms> <event ID>` or `done <event ID>`.
    fn encode(&self) -> String {
        match self {
            Self::Pending { at, by: None } => at.to_string(),
            Self::Pending { at, by: Some(by) } => format!("{at} {by}"),
            Self::Done { by } => format!("done {by}"),
        }
    }

    /// What [`Self::encode`] wrote; `None` for anything else.
    fn decode(value: &str) -> Option<Self> {
        if let Some(by) = value.strip_prefix("done ") {
            return Some(Self::Done { by: by.to_owned() });
        }
        let (at, by) = match value.split_once(' ') {
            Some((at, by)) => (at, Some(by.to_owned())),
            None => (value, None),
        };
        Some(Self::Pending {
            at: at.parse().ok()?,
            by,
        })
    }

    /// The request stored under `key`, if any (an unreadable one counts as none).
    fn read(
        store: &bridge_core::AdapterStore,
        key: &str,
    ) -> Result<Option<Self>, bridge_core::StoreError> {
        Ok(store
            .get(key.as_bytes())?
            .and_then(|v| Self::decode(&String::from_utf8_lossy(&v))))
    }
}
/// When the core should try a send again while its puppet joins.
const JOIN_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// Builds MIMI adapters from `type = "mimi"` sections.
#[derive(Debug, Clone, Copy, Default)]
pub struct MimiFactory;

impl AdapterFactory for MimiFactory {
    fn type_name(&self) -> &'static str {
        "mimi"
    }

    fn validate(&self, settings: &toml::Table) -> Vec<ConfigIssue> {
        settings::parse(settings).err().unwrap_or_default()
    }

    fn build(&self, id: AdapterId, table: &toml::Table) -> Result<Arc<dyn Adapter>, AdapterError> {
        let settings = settings::parse(table).map_err(|issues| {
            let list: Vec<String> = issues
                .iter()
                .map(|i| format!("{}: {}", i.path, i.message))
                .collect();
            AdapterError::Permanent(format!("invalid mimi settings: {}", list.join("; ")))
        })?;
        Ok(Arc::new(MimiAdapter::new(id, settings)))
    }
}

/// The MIMI adapter (see the module documentation).
#[derive(Debug)]
pub struct MimiAdapter {
    id: AdapterId,
    settings: Settings,
    /// Set while [`Adapter::run`] runs, cleared when it returns (the running state holds the
    /// adapter context, which holds the core: keeping it would be a reference cycle).
    running: parking_lot::Mutex<Option<Arc<Running>>>,
}

/// What exists while the adapter runs.
pub(crate) struct Running {
    pub(crate) settings: Settings,
    pub(crate) ctx: AdapterContext,
    pub(crate) mls: MlsHost,
    pub(crate) client: MimiClient,
    /// For files that are plain HTTP(S) links (not on a MIMI provider).
    web: reqwest::Client,
    peers: tokio::sync::Mutex<HashMap<String, Peer>>,
    /// Sends of one adapter prepare one at a time (the core already orders them per room); the
    /// wait for durability and the network call are outside the lock.
    send_lock: tokio::sync::Mutex<()>,
    /// Held while a puppet identity is looked up and claimed ([`Running::puppet_for`]).
    claims: parking_lot::Mutex<()>,
    pub(crate) queue: fanout::Queue,
    /// Each room's followers ([`Running::followers`]) as of the group context they were read
    /// from, named by its epoch and confirmed transcript hash: the participant list changes only
    /// with a commit, and decoding the list of a 1,000-member room for every message was a
    /// tenth of the hub's CPU in the `mimi` benchmark. A few domains per linked room.
    followers: parking_lot::Mutex<HashMap<RoomUri, Followers>>,
}

/// A room's follower domains, and the epoch and confirmed transcript hash of the group
/// context they were read from.
type Followers = (u64, Vec<u8>, Vec<String>);

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("domain", &self.settings.domain)
            .finish_non_exhaustive()
    }
}

/// Why the adapter could not start or act.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MimiAdapterError {
    /// A file of the settings could not be read or used.
    #[error("{what} {path}: {message}")]
    File {
        /// Which setting.
        what: &'static str,
        /// The path.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The MLS layer failed.
    #[error(transparent)]
    Mls(#[from] MlsError),
}

/// The hex SHA-256 of an MLS message: the key of a submission the hub accepted.
pub(crate) fn digest_hex(message: &[u8]) -> String {
    let digest = sha2::Sha256::digest(message);
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}

/// A pending send as stored: the message ID, a newline, the ciphertext.
fn split_pending(pending: &[u8]) -> Result<(RemoteEventId, Vec<u8>), AdapterError> {
    let split = pending
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| AdapterError::Permanent("a pending send without its message ID".into()))?;
    Ok((
        RemoteEventId::new(String::from_utf8_lossy(&pending[..split]).into_owned()),
        pending[split + 1..].to_vec(),
    ))
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn mls_failed(e: MlsError) -> AdapterError {
    match e {
        // Both pass: the store recovers, the hub's commit comes (the outbox retries).
        MlsError::Storage(_) | MlsError::ProposalPending(_) => {
            AdapterError::transient(e.to_string())
        }
        // The room's policy decided (a banned user, a role that may not send): left out
        // there and counted as the core does with what a network cannot take, not a dead
        // letter per message for the admin to look at.
        MlsError::NotAllowed(why) => AdapterError::Unsupported(why),
        other => AdapterError::Permanent(other.to_string()),
    }
}

fn client_failed(e: ClientError) -> AdapterError {
    if e.is_retryable() {
        AdapterError::Transient {
            message: e.to_string(),
            retry_after: e.retry_after(),
        }
    } else {
        AdapterError::Permanent(e.to_string())
    }
}

fn read(what: &'static str, path: &std::path::Path) -> Result<Vec<u8>, MimiAdapterError> {
    std::fs::read(path).map_err(|e| MimiAdapterError::File {
        what,
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

impl MimiAdapter {
    /// An adapter with `settings` (no I/O until [`Adapter::run`]).
    pub fn new(id: AdapterId, settings: Settings) -> Self {
        Self {
            id,
            settings,
            running: parking_lot::Mutex::new(None),
        }
    }

    fn running(&self) -> Result<Arc<Running>, AdapterError> {
        self.running
            .lock()
            .clone()
            .ok_or_else(|| AdapterError::transient("the mimi adapter is not running"))
    }

    fn start(&self, ctx: &AdapterContext) -> Result<Arc<Running>, AdapterError> {
        let s = &self.settings;
        let tls = (|| -> Result<_, MimiAdapterError> {
            let chain = read("certificate", &s.certificate)?;
            let key = read("key", &s.key)?;
            let ca = read("ca", &s.ca)?;
            let file =
                |what, path: &std::path::Path, e: &dyn std::fmt::Display| MimiAdapterError::File {
                    what,
                    path: path.display().to_string(),
                    message: e.to_string(),
                };
            let identity = TlsIdentity::from_pem(&chain, &key)
                .map_err(|e| file("certificate", &s.certificate, &e))?;
            let roots = || roots_from_pem(&ca).map_err(|e| file("ca", &s.ca, &e));
            let server = server_config(identity.clone(), roots()?)
                .map_err(|e| file("certificate", &s.certificate, &e))?;
            let client = client_config(Some(identity), roots()?)
                .map_err(|e| file("certificate", &s.certificate, &e))?;
            Ok((server, client))
        })()
        .map_err(|e| AdapterError::Permanent(e.to_string()))?;
        let (server_tls, client_tls) = tls;
        let resolve = s
            .addresses
            .iter()
            .map(|(host, address)| (host.clone(), *address))
            .collect();
        let client = MimiClient::new(ClientOptions {
            local_domain: s.domain.clone(),
            tls: client_tls,
            timeout: s.timeout,
            resolve,
        })
        .map_err(|e| AdapterError::Permanent(e.to_string()))?;
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            // An error means another thread installed one meanwhile: fine too.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let web = reqwest::Client::builder()
            .timeout(s.timeout)
            .redirect(reqwest::redirect::Policy::limited(5))
            .build()
            .map_err(|e| AdapterError::Permanent(format!("HTTP client: {e}")))?;
        let store = ctx.store().clone();
        let running = Arc::new(Running {
            settings: s.clone(),
            ctx: ctx.clone(),
            mls: MlsHost::open(&s.domain, Arc::new(store.clone()))
                .with_group_cache(s.mls_cache_groups),
            client,
            web,
            peers: tokio::sync::Mutex::new(HashMap::new()),
            send_lock: tokio::sync::Mutex::new(()),
            claims: parking_lot::Mutex::new(()),
            queue: fanout::Queue::new(store),
            followers: parking_lot::Mutex::new(HashMap::new()),
        });
        for room in ctx.linked_rooms() {
            if let Err(e) = running.open_room(&room) {
                warn!(%room, error = %e, "MIMI room not opened");
            }
        }
        let provider: Arc<dyn crate::transport::Provider> =
            Arc::new(provider::Handler(running.clone()));
        let mut options = ServerOptions::new(&s.domain, &s.origin);
        options.dedupe = Arc::new(fanout::StoreDedupe::new(ctx.store().clone()));
        let app = router(provider, options);
        let listen = s.listen;
        let shutdown = ctx.shutdown().clone();
        let listener = (|| {
            let socket = if listen.is_ipv4() {
                tokio::net::TcpSocket::new_v4()?
            } else {
                tokio::net::TcpSocket::new_v6()?
            };
            // A restart binds again at once, whatever connections are still in TIME_WAIT.
            socket.set_reuseaddr(true)?;
            socket.bind(listen)?;
            socket.listen(1024)
        })()
        .map_err(|e| AdapterError::transient(format!("MIMI listen on {listen}: {e}")))?;
        tokio::spawn(serve(listener, server_tls, app, shutdown.cancelled_owned()));
        info!(domain = %s.domain, %listen, "MIMI provider serving");
        Ok(running)
    }
}

impl Running {
    /// The bot's puppet.
    pub(crate) fn bot(&self) -> UserUri {
        self.mls.puppet(BOT_USER)
    }

    /// Who sends `event` into `room`: its sender's puppet `puppet`, except for a moderator's
    /// deletion of someone else's message ([`OutboundEvent::moderated`]) in a room we host when
    /// the puppet's MIMI role does not allow it (no `canDeleteOtherMessage`, which receivers
    /// check): then our bot, a group admin, deletes it, as the XMPP adapter falls back to the
    /// bridge's own occupant. As a follower we have no such participant: the puppet sends it
    /// (the hub's admins may have given it the role in a commit not yet here), and receivers
    /// that find no role refuse it.
    fn deleter(
        &self,
        event: &OutboundEvent,
        room: &RoomUri,
        puppet: UserUri,
    ) -> Result<UserUri, AdapterError> {
        if !event.moderated
            || !matches!(event.kind, EventKind::Redaction { .. })
            || !self.is_hub(room)
        {
            return Ok(puppet);
        }
        let allowed = self
            .mls
            .has_capability(
                room,
                &puppet.to_string(),
                CAPABILITY_CAN_DELETE_OTHER_MESSAGE,
            )
            .map_err(mls_failed)?;
        if allowed {
            return Ok(puppet);
        }
        info!(%room, moderator = %puppet, event = %event.id,
            "a moderator's deletion sent by the bot: the moderator's MIMI role may not delete others' messages");
        Ok(self.bot())
    }

    /// Whether we are the hub of `room`.
    pub(crate) fn is_hub(&self, room: &RoomUri) -> bool {
        room.domain().eq_ignore_ascii_case(&self.settings.domain)
    }

    /// Creates the group of a room we host unless it exists.
    fn open_room(&self, room: &RemoteRoomId) -> Result<(), AdapterError> {
        let room = RoomUri::parse(room.as_str())
            .map_err(|e| AdapterError::Permanent(format!("{room} is not a MIMI room URI: {e}")))?;
        if !self.is_hub(&room) {
            return Ok(());
        }
        match self.mls.local_members_of(&room) {
            Ok(members) if !members.is_empty() => Ok(()),
            Ok(_) | Err(MlsError::UnknownRoom(_)) => {
                self.mls
                    .create_room(&room, &self.bot(), RoomProfile::Mimi)
                    .map_err(mls_failed)?;
                info!(%room, "MIMI room created (we are its hub)");
                Ok(())
            }
            Err(e) => Err(mls_failed(e)),
        }
    }

    /// The follower providers of `room`: the domains, but ours, of its present participants
    /// (not banned). Every client in the group belongs to one: the policy checks refuse a
    /// commit that takes a user off the list or bans them while keeping a client of theirs
    /// (`PolicyCheck::finish`), and the hub's own removals and bans remove the clients.
    pub(crate) fn followers(&self, room: &RoomUri) -> Result<Vec<String>, MlsError> {
        let (epoch, transcript) = self.mls.context_version(room)?;
        if let Some((e, t, domains)) = self.followers.lock().get(room)
            && *e == epoch
            && *t == transcript
        {
            return Ok(domains.clone());
        }
        let mut domains: Vec<String> = self
            .mls
            .participants(room)?
            .into_iter()
            .filter(crate::mls::Participant::present)
            .filter_map(|p| UserUri::parse(&p.user).ok())
            .map(|u| u.domain().to_ascii_lowercase())
            .filter(|d| *d != self.settings.domain)
            .collect();
        domains.sort();
        domains.dedup();
        self.followers
            .lock()
            .insert(room.clone(), (epoch, transcript, domains.clone()));
        Ok(domains)
    }

    /// The peer `domain`, its directory fetched once.
    pub(crate) async fn peer(&self, domain: &str) -> Result<Peer, ClientError> {
        let mut peers = self.peers.lock().await;
        if let Some(peer) = peers.get(domain) {
            return Ok(peer.clone());
        }
        let origin = self.settings.peer_origin(domain);
        let peer = self.client.fetch_directory(domain, &origin).await?;
        peers.insert(domain.to_owned(), peer.clone());
        Ok(peer)
    }

    /// Adds `user`'s puppet to `room` (we are the hub), the bot committing; the commit is
    /// queued for the followers.
    fn add_local(&self, room: &RoomUri, user: &UserUri) -> Result<(), AdapterError> {
        let followers = self.followers(room).map_err(mls_failed)?;
        let key_package = self.mls.single_use_key_package(user).map_err(mls_failed)?;
        let output = self
            .mls
            .add_client(room, &self.bot(), key_package, ROLE_ORDINARY_USER)
            .map_err(mls_failed)?;
        self.queue_commit(room, &followers, output.commit)
    }

    /// Queues a commit of ours for `followers` of `room` and wakes the sender.
    fn queue_commit(
        &self,
        room: &RoomUri,
        followers: &[String],
        commit: Vec<u8>,
    ) -> Result<(), AdapterError> {
        self.queue_handshake(room, followers, Vec::new(), commit)
    }

    /// Queues proposals of ours (none: nothing before the commit) and then the commit that
    /// carries them out, for `followers` of `room`, and wakes the sender.
    fn queue_handshake(
        &self,
        room: &RoomUri,
        followers: &[String],
        proposals: Vec<Vec<u8>>,
        commit: Vec<u8>,
    ) -> Result<(), AdapterError> {
        let ours = |what: &str, bytes: Vec<u8>| {
            MlsMessage::from_bytes(bytes)
                .map_err(|e| AdapterError::Permanent(format!("our {what}: {e}")))
        };
        let timestamp = now_ms();
        let mut messages = Vec::with_capacity(2);
        let mut proposals = proposals.into_iter().map(|p| ours("proposal", p));
        if let Some(first) = proposals.next() {
            messages.push(FanoutMessage {
                timestamp,
                payload: FanoutPayload::Proposal {
                    proposal: first?,
                    more_proposals: proposals.collect::<Result<_, _>>()?,
                },
            });
        }
        messages.push(FanoutMessage {
            timestamp,
            payload: FanoutPayload::Commit {
                commit: ours("commit", commit)?,
                external_proposals: Vec::new(),
            },
        });
        self.queue
            .push(room, &fanout::Queue::to_all(followers, &messages), &[])
            .map_err(AdapterError::from)?;
        self.queue.wake();
        Ok(())
    }

    /// `users`' puppets joined `room` (the hub's Welcome): each request to join is marked
    /// answered, with the event that asked ([`JoinRequest::Done`]). A retry of that event
    /// is then done even if the puppet was taken out meanwhile, and anything else asks again
    /// at once, not [`JOIN_PATIENCE_MS`] after the first request.
    pub(crate) fn joined(
        &self,
        room: &RoomUri,
        users: &[UserUri],
    ) -> Result<(), bridge_core::StoreError> {
        let store = self.ctx.store();
        for user in users {
            let key = format!("{JOINING}{room}/{user}");
            match JoinRequest::read(store, &key)? {
                Some(JoinRequest::Pending { by: Some(by), .. }) => {
                    store.put(key.as_bytes(), JoinRequest::Done { by }.encode().as_bytes())?;
                }
                Some(_) => store.delete(key.as_bytes())?,
                None => {}
            }
        }
        Ok(())
    }

    /// Asks the hub of `room` to add `user`'s puppet (a new member's Add proposal in an
    /// `/update`, docs/mimi.md "Adapter"); the Welcome comes later by `/notify`. Returns the
    /// error `send` answers meanwhile: transient, so the core tries again once joined;
    /// `Unsupported` when the room keeps the user out (banned in our copy of the list, or the
    /// hub's `notAllowed`).
    ///
    /// `asking` is the event that needs the puppet in the room; it is remembered with the
    /// request (see [`Self::joined`]).
    async fn ask_to_join(&self, room: &RoomUri, user: &UserUri, asking: &str) -> AdapterError {
        // Banned in our copy of the room: the hub would refuse, so it is not asked.
        let listed = user.to_string();
        if let Ok(list) = self.mls.participants(room)
            && list.iter().any(|p| p.user == listed && p.banned())
        {
            return AdapterError::Unsupported(format!("{user} is banned from {room}"));
        }
        let store = self.ctx.store();
        let joining_key = format!("{JOINING}{room}/{user}");
        let asked = match JoinRequest::read(store, &joining_key) {
            Ok(Some(JoinRequest::Pending { at, .. })) => Some(at),
            Ok(_) => None,
            Err(e) => return e.into(),
        };
        let waiting = AdapterError::Transient {
            message: format!("{user} is joining {room}: waiting for the hub's Welcome"),
            retry_after: Some(JOIN_RETRY),
        };
        if asked.is_some_and(|t| now_ms().saturating_sub(t) < JOIN_PATIENCE_MS) {
            return waiting;
        }
        let peer = match self.peer(room.domain()).await {
            Ok(peer) => peer,
            Err(e) => return client_failed(e),
        };
        let room_id = IdentifierUri(room.to_string());
        let mut epoch = 0;
        for _ in 0..3 {
            let proposal = match self
                .mls
                .join_proposal(room, user, epoch)
                .map_err(mls_failed)
                .and_then(|bytes| {
                    MlsMessage::from_bytes(bytes)
                        .map_err(|e| AdapterError::Permanent(format!("our proposal: {e}")))
                }) {
                Ok(proposal) => proposal,
                Err(e) => return e,
            };
            let request = UpdateRequest {
                bundle: HandshakeBundle::Proposals(ProposalBundle {
                    proposal,
                    more_proposals: Vec::new(),
                }),
            };
            let answer = match self.client.update(&peer, &room_id, &request).await {
                Ok(answer) => answer,
                Err(e) => return client_failed(e),
            };
            match answer.result {
                UpdateResult::Success { .. } => {
                    let request = JoinRequest::Pending {
                        at: now_ms(),
                        by: Some(asking.to_owned()),
                    };
                    if let Err(e) = store.put(joining_key.as_bytes(), request.encode().as_bytes()) {
                        return e.into();
                    }
                    info!(%room, %user, "asked the hub to join");
                    return waiting;
                }
                UpdateResult::WrongEpoch { current_epoch } => epoch = current_epoch,
                // The hub's policy keeps them out (a ban): as for a refusal of our own.
                UpdateResult::NotAllowed => {
                    return AdapterError::Unsupported(format!(
                        "the hub {} does not let {user} in: {}",
                        room.domain(),
                        answer.error_description
                    ));
                }
                UpdateResult::InvalidProposal { .. } => {
                    return AdapterError::Permanent(format!(
                        "the hub {} refused {user}: {}",
                        room.domain(),
                        answer.error_description
                    ));
                }
            }
        }
        AdapterError::transient(format!("{room} changed epoch while {user} asked to join"))
    }

    /// Our puppet for `user` of `adapter`, claimed for it in the store (so that a MIMI user's
    /// mention of the puppet becomes a mention of that user, [`Running::stands_for`]).
    ///
    /// The puppet is `mimi://DOMAIN/u/<native ID>` when that is free or already this user's;
    /// else `u/<adapter>:<native ID>`, then that with `#2`, `#3`…: first come, first served,
    /// and kept. So two adapters' users with the same native ID never share a MIMI identity,
    /// and no far user is ever the bridge's bot (the group admin of the rooms we host).
    fn puppet_for(
        &self,
        adapter: &AdapterId,
        user: &RemoteUserId,
    ) -> Result<UserUri, AdapterError> {
        const TRIES: u32 = 1000;
        let store = self.ctx.store();
        let _one_claim_at_a_time = self.claims.lock();
        let native = user.as_str();
        let claim = format!("{adapter}\n{user}");
        for n in 0..TRIES {
            let candidate = match n {
                0 => native.to_owned(),
                1 => format!("{adapter}:{native}"),
                n => format!("{adapter}:{native}#{n}"),
            };
            if candidate == BOT_USER {
                continue;
            }
            let uri = self.mls.puppet(&candidate);
            let key = format!("{PUPPET}{uri}");
            match store.get(key.as_bytes())? {
                None => {
                    store.put(key.as_bytes(), claim.as_bytes())?;
                    return Ok(uri);
                }
                Some(value) if value == claim.as_bytes() => return Ok(uri),
                Some(_) => {}
            }
        }
        Err(AdapterError::Permanent(format!(
            "no free MIMI identity for {user} of {adapter} after {TRIES} tries"
        )))
    }

    /// The users of `source` (of every other network when `None`) no longer reach `room`
    /// (its link, or theirs to the same neutral room, was removed): their puppets leave the
    /// group (as hub, removed by the bot; as follower, by their own leave proposals to the hub).
    /// A puppet whose leave failed for a passing reason makes it an error, after the others.
    pub(crate) async fn puppets_leave(
        &self,
        room: &RemoteRoomId,
        source: Option<&AdapterId>,
    ) -> Result<(), AdapterError> {
        let room = RoomUri::parse(room.as_str())
            .map_err(|e| AdapterError::Permanent(format!("{room} is not a MIMI room URI: {e}")))?;
        let members = match self.mls.local_members_of(&room) {
            Ok(members) => members,
            Err(MlsError::UnknownRoom(_)) => return Ok(()),
            Err(e) => return Err(mls_failed(e)),
        };
        // A passing failure (the hub away) is returned once the others are done: the core
        // asks again at the next connection.
        let mut again = None;
        for member in members {
            let stands_for = self.stands_for(&member.to_string());
            if stands_for.is_none_or(|(adapter, _)| source.is_some_and(|s| adapter != *s)) {
                continue;
            }
            if let Err(e) = self
                .membership(&room, &member, bridge_core::MembershipChange::Leave, "")
                .await
            {
                tracing::warn!(%room, user = %member, error = %e,
                    "a puppet did not leave the room its network was unlinked from");
                if matches!(e, AdapterError::Transient { .. }) {
                    again = again.or(Some(e));
                }
            }
        }
        again.map_or(Ok(()), Err)
    }

    /// The user (adapter and native ID) our puppet `uri` stands for, if it is one of ours.
    pub(crate) fn stands_for(&self, uri: &str) -> Option<(AdapterId, RemoteUserId)> {
        let value = self
            .ctx
            .store()
            .get(format!("{PUPPET}{uri}").as_bytes())
            .ok()??;
        let value = String::from_utf8(value).ok()?;
        let (adapter, user) = value.split_once('\n')?;
        Some((AdapterId::new(adapter), RemoteUserId::new(user)))
    }

    /// A far user renamed the room or changed its topic. A MIMI room's name and subject are
    /// its `room_metadata` component (draft-ietf-mimi-protocol-06 §7.6), which only a group
    /// admin may change (room policy): as hub, the bot commits the new metadata and queues the
    /// commit for the followers; as follower, `Unsupported` (the core sends its text fallback).
    /// A value already in place is not committed again, so a repeated send changes nothing.
    async fn room_metadata(
        &self,
        room: &RoomUri,
        name: Option<&str>,
        subject: Option<&str>,
    ) -> Result<(), AdapterError> {
        if !self.is_hub(room) {
            return Err(AdapterError::Unsupported(format!(
                "{room} is hosted by {}: only its group admins change its name and topic",
                room.domain()
            )));
        }
        let current = self.mls.room_metadata(room).map_err(mls_failed)?;
        let mut metadata = current
            .clone()
            .unwrap_or_else(|| RoomMetadata::new(&room.to_string(), "", ""));
        if let Some(name) = name {
            metadata.room_name = name.replace('\0', "").into_bytes().into();
        }
        if let Some(subject) = subject {
            metadata.room_subject = subject.replace('\0', "").into_bytes().into();
        }
        if current.as_ref() == Some(&metadata) {
            return Ok(());
        }
        let followers = self.followers(room).map_err(mls_failed)?;
        let output = self
            .mls
            .set_room_metadata(room, &self.bot(), &metadata)
            .map_err(mls_failed)?;
        self.queue_commit(room, &followers, output.commit)?;
        self.ctx.store().flush().await?;
        info!(%room, "room metadata changed");
        Ok(())
    }

    /// A far user's standing changed: as hub, the bot moves their puppet's participant-list
    /// entry to the room's role that shows it ([`crate::mls::RoleData::index_for`]) in
    /// one commit, queued for the followers. A puppet not in the list (it joins when its user
    /// speaks) or already in that role is left as it is. A follower may not: only the room's
    /// group admins change roles, so the event is refused as unsupported (the core leaves it
    /// out, counted).
    async fn role(
        &self,
        room: &RoomUri,
        user: &UserUri,
        role: bridge_core::Role,
    ) -> Result<(), AdapterError> {
        if !self.is_hub(room) {
            return Err(AdapterError::Unsupported(format!(
                "{room} is hosted by {}: only its group admins change roles",
                room.domain()
            )));
        }
        let (roles, _, _) = self.mls.room_policy(room).map_err(mls_failed)?;
        let Some(index) = roles.index_for(role) else {
            return Err(AdapterError::Unsupported(format!(
                "{room} has no role for a {}",
                role.name()
            )));
        };
        let target = user.to_string();
        let participants = self.mls.participants(room).map_err(mls_failed)?;
        match participants.iter().find(|p| p.user == target) {
            Some(p) if p.present() && p.role_index != index => {}
            _ => return Ok(()),
        }
        let followers = self.followers(room).map_err(mls_failed)?;
        let output = match self.mls.set_role(room, &self.bot(), user, index) {
            Ok(output) => output,
            // The room's own policy (its roles, constraints) refuses: a refusal, not a fault.
            Err(e @ (MlsError::NotAllowed(_) | MlsError::RoomState(_))) => {
                return Err(AdapterError::Unsupported(format!("{room}: {e}")));
            }
            Err(e) => return Err(mls_failed(e)),
        };
        self.queue_commit(room, &followers, output.commit)?;
        self.ctx.store().flush().await?;
        info!(%room, %user, role = role.name(), index, "participant's role changed");
        Ok(())
    }

    /// A far user joined or left: their puppet joins the room's group (as when they first
    /// speak) or leaves it. As hub, a leave is the puppet's own removal proposals, which the
    /// bot commits at once; a kick or ban is the bot's removal (clients and participant-list
    /// entry; for a ban the entry stays, with role banned); either is queued for the
    /// followers. As follower, the puppet proposes its own
    /// removal to the hub (`/update`), which commits it. Idempotent: a puppet already in (or
    /// out of) the room is left as it is.
    async fn membership(
        &self,
        room: &RoomUri,
        user: &UserUri,
        change: bridge_core::MembershipChange,
        asking: &str,
    ) -> Result<(), AdapterError> {
        use bridge_core::MembershipChange as M;
        let members = match self.mls.local_members_of(room) {
            Ok(members) => members,
            Err(MlsError::UnknownRoom(_)) => Vec::new(),
            Err(e) => return Err(mls_failed(e)),
        };
        let member = members.contains(user);
        match change {
            M::Join if member => {
                // Joined: a later join (after a leave) asks the hub again, at once.
                let joining_key = format!("{JOINING}{room}/{user}");
                self.ctx.store().delete(joining_key.as_bytes())?;
                Ok(())
            }
            M::Join if self.is_hub(room) => {
                self.mls.ensure_client(user).map_err(mls_failed)?;
                self.add_local(room, user)
            }
            // Joined once the hub's Welcome arrives: the core retries until then. A retry that
            // comes after the Welcome, once the puppet was taken out again (a kick while the
            // retry waited), is done: asking again would undo the removal.
            M::Join => {
                let key = format!("{JOINING}{room}/{user}");
                match JoinRequest::read(self.ctx.store(), &key)? {
                    Some(JoinRequest::Done { by }) if by == asking => {
                        self.ctx.store().delete(key.as_bytes())?;
                        info!(%room, %user, "joined, and taken out since: not asking again");
                        Ok(())
                    }
                    _ => Err(self.ask_to_join(room, user, asking).await),
                }
            }
            // Their own leave: the puppet proposes its removal and the bot commits it, so that
            // every member (other providers' clients too) sees the user leave, not a removal
            // by the hub.
            M::Leave if member && self.is_hub(room) => {
                let followers = self.followers(room).map_err(mls_failed)?;
                let (proposals, output) = self
                    .mls
                    .leave_and_commit(room, user, &self.bot())
                    .map_err(mls_failed)?;
                self.queue_handshake(room, &followers, proposals, output.commit)?;
                self.ctx.store().flush().await?;
                info!(%room, %user, "puppet left the room");
                Ok(())
            }
            M::Leave | M::Kick | M::Ban if member && self.is_hub(room) => {
                let followers = self.followers(room).map_err(mls_failed)?;
                let output = if change == M::Ban {
                    self.mls.ban_user(room, &self.bot(), user)
                } else {
                    self.mls.remove_user(room, &self.bot(), user)
                }
                .map_err(mls_failed)?;
                self.queue_commit(room, &followers, output.commit)?;
                self.ctx.store().flush().await?;
                info!(%room, %user, "puppet removed from the room");
                Ok(())
            }
            M::Leave | M::Kick | M::Ban if member => {
                let proposals = self
                    .mls
                    .leave(room, user)
                    .map_err(mls_failed)?
                    .into_iter()
                    .map(MlsMessage::from_bytes)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| AdapterError::Permanent(format!("our proposal: {e}")))?;
                let mut proposals = proposals.into_iter();
                let Some(first) = proposals.next() else {
                    return Ok(());
                };
                let request = UpdateRequest {
                    bundle: HandshakeBundle::Proposals(ProposalBundle {
                        proposal: first,
                        more_proposals: proposals.collect(),
                    }),
                };
                let peer = self.peer(room.domain()).await.map_err(client_failed)?;
                let answer = self
                    .client
                    .update(&peer, &IdentifierUri(room.to_string()), &request)
                    .await
                    .map_err(client_failed)?;
                match answer.result {
                    UpdateResult::Success { .. } => {
                        info!(%room, %user, "puppet left the room");
                        Ok(())
                    }
                    _ => Err(AdapterError::transient(format!(
                        "the hub {} did not take {user}'s leave: {}",
                        room.domain(),
                        answer.error_description
                    ))),
                }
            }
            _ => Ok(()),
        }
    }

    /// A moderator of another network kicked, banned or unbanned `target` in `room`.
    ///
    /// - `target` is someone of another network, shown here by a puppet: a kick or a ban takes
    ///   the puppet out as [`Self::membership`] does (as hub, the bot removes it, a ban keeping
    ///   its entry as banned; as follower, it leaves). An unban changes nothing.
    /// - `target` is a MIMI user of a room we host: the bot, a group admin, removes their
    ///   clients and participant-list entry (kick), keeps the entry as banned (ban, which the
    ///   hub's policy check then holds against their provider adding them again), or takes a
    ///   banned entry off the list (unban), in one commit fanned out to the followers. A user
    ///   not in the room is not kicked again; a ban of someone not listed is refused as
    ///   unsupported, so the core sends its text line instead.
    /// - A MIMI user of a room hosted elsewhere: only that room's hub may, so `Unsupported`
    ///   (the core's text line).
    ///
    /// MIMI has no field for the reason; it is not carried.
    async fn moderate(
        &self,
        room: &RoomUri,
        target: &bridge_core::Sender,
        action: bridge_core::ModerationAction,
    ) -> Result<(), AdapterError> {
        use bridge_core::{MembershipChange as M, ModerationAction as A};
        if target.adapter != *self.ctx.adapter_id() {
            let change = match action {
                A::Kick => M::Kick,
                A::Ban => M::Ban,
                A::Unban => return Ok(()),
            };
            let puppet = self.puppet_for(&target.adapter, &target.user)?;
            return self.membership(room, &puppet, change, "").await;
        }
        let user = UserUri::parse(target.user.as_str()).map_err(|e| {
            AdapterError::Permanent(format!("{} is not a MIMI user URI: {e}", target.user))
        })?;
        if !self.is_hub(room) {
            return Err(AdapterError::Unsupported(format!(
                "{room} is hosted by {}: only its hub removes or bans its participants",
                room.domain()
            )));
        }
        let listed = self
            .mls
            .participants(room)
            .map_err(mls_failed)?
            .into_iter()
            .find(|p| p.user == user.to_string());
        let banned = listed.as_ref().is_some_and(crate::mls::Participant::banned);
        // Read before the commit: the provider of someone removed learns it from this one.
        let followers = self.followers(room).map_err(mls_failed)?;
        let output = match action {
            A::Kick if listed.as_ref().is_some_and(|p| p.present()) => {
                self.mls.remove_user(room, &self.bot(), &user)
            }
            A::Ban if listed.is_some() && !banned => self.mls.ban_user(room, &self.bot(), &user),
            A::Unban if banned => self.mls.remove_user(room, &self.bot(), &user),
            A::Ban if listed.is_none() => {
                return Err(AdapterError::Unsupported(format!(
                    "{user} is not a participant of {room}: a MIMI ban keeps a participant's entry"
                )));
            }
            // Not in the room, already banned, or not banned: nothing to change.
            _ => return Ok(()),
        }
        .map_err(mls_failed)?;
        self.queue_commit(room, &followers, output.commit)?;
        self.ctx.store().flush().await?;
        info!(%room, %user, action = action.past(), "participant moderated by the bot");
        Ok(())
    }

    /// Encrypts and hosts the files of `event` (see [`assets`]), by position. A file that can
    /// never be fetched (gone, too large) is sent as an unencrypted link to where it was, with
    /// the reason as its description; a passing failure is returned, so the send is retried.
    async fn seal_files(&self, event: &OutboundEvent) -> Result<Vec<MimiAttachment>, AdapterError> {
        let files = match &event.kind {
            EventKind::Message { content, .. } | EventKind::Edit { new: content, .. } => {
                &content.attachments
            }
            _ => return Ok(Vec::new()),
        };
        let mut sealed = Vec::with_capacity(files.len());
        for file in files {
            let part = match self.fetch_file(&event.sender.adapter, file).await {
                Ok(bytes) => {
                    let assets::Sealed {
                        ciphertext,
                        mut part,
                    } = assets::seal(&bytes).map_err(AdapterError::from)?;
                    let id = assets::new_id(now_ms());
                    assets::host(self.ctx.store(), &id, &ciphertext)?;
                    part.url = format!("{}{}{id}", self.settings.origin, assets::ASSET_PATH);
                    part
                }
                Err(AdapterError::Permanent(why) | AdapterError::Unsupported(why)) => {
                    warn!(url = %file.url, %why, "attachment sent as a link");
                    crate::content::ExternalPart {
                        description: format!("not re-hosted: {why}"),
                        ..Default::default()
                    }
                }
                Err(e) => return Err(e),
            };
            // An empty URL (a file sent as a link) is filled with the file's own by
            // `from_neutral`.
            sealed.push(MimiAttachment {
                disposition: Disposition::ATTACHMENT,
                part,
            });
        }
        Ok(sealed)
    }

    /// The bytes of `file`, which adapter `source` received: asked of that adapter, or
    /// downloaded when it is a plain HTTP(S) link.
    async fn fetch_file(
        &self,
        source: &AdapterId,
        file: &Attachment,
    ) -> Result<bytes::Bytes, AdapterError> {
        let limit = self.settings.max_file_bytes;
        let body = match self.ctx.fetch_attachment(source, file).await {
            Ok(body) => body,
            Err(AdapterError::Unsupported(_))
                if file.url.starts_with("https://") || file.url.starts_with("http://") =>
            {
                let failed = |e: reqwest::Error| {
                    let why = format!("cannot fetch {}: {e}", file.url);
                    // Gone or refused for good (404, 403…): sent as a link; anything else
                    // (unreachable, 5xx, 429) may pass, so the send is retried.
                    match e.status() {
                        Some(s)
                            if s.is_client_error() && s.as_u16() != 408 && s.as_u16() != 429 =>
                        {
                            AdapterError::Permanent(why)
                        }
                        _ => AdapterError::transient(why),
                    }
                };
                let response = self
                    .web
                    .get(&file.url)
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status)
                    .map_err(failed)?;
                if response.content_length().is_some_and(|n| n > limit) {
                    return Err(AdapterError::Permanent(format!(
                        "{} is over the limit of {limit} bytes",
                        file.url
                    )));
                }
                let bytes = response.bytes().await.map_err(failed)?;
                AttachmentBody::from_bytes(bytes, None)
            }
            Err(e) => return Err(e),
        };
        body.collect(limit).await
    }

    /// The provider domain serving `url`: ours, a configured peer's, or the URL's host.
    fn owner_of(&self, url: &str) -> Option<String> {
        let under = |origin: &str| {
            url.strip_prefix(origin)
                .is_some_and(|rest| rest.starts_with('/'))
        };
        if under(&self.settings.origin) {
            return Some(self.settings.domain.clone());
        }
        if let Some((domain, _)) = self.settings.peers.iter().find(|(_, origin)| under(origin)) {
            return Some(domain.clone());
        }
        let host = url
            .strip_prefix("https://")?
            .split(['/', ':', '?', '#'])
            .next()?
            .to_ascii_lowercase();
        (!host.is_empty() && host.contains('.')).then_some(host)
    }

    /// The encrypted file at `url`, from a room hosted by `hub`: from our store when we host
    /// it, else from the provider that does: straight from the hub (or, when we are the hub,
    /// from the follower that hosts it), through the hub's `/proxyDownload` when a third
    /// provider hosts it (protocol-06 §5.10.2), straight from it when the hub offers no proxy.
    async fn download(&self, url: &str, hub: &str) -> Result<Vec<u8>, AdapterError> {
        let owner = self
            .owner_of(url)
            .ok_or_else(|| AdapterError::Permanent(format!("{url} is not on a MIMI provider")))?;
        // The ciphertext: the plaintext limit plus the AEAD tag.
        let limit = usize::try_from(self.settings.max_file_bytes + 16).unwrap_or(usize::MAX);
        if owner == self.settings.domain {
            let id = url.rsplit('/').next().unwrap_or_default();
            return assets::hosted(self.ctx.store(), id)?
                .ok_or_else(|| AdapterError::Permanent(format!("we host no file {url}")));
        }
        if owner != hub && hub != self.settings.domain {
            let peer = self.peer(hub).await.map_err(client_failed)?;
            match self.client.proxy_download(&peer, url).await {
                Err(ClientError::NoEndpoint(_)) => {}
                other => return other.map_err(client_failed),
            }
        }
        self.client
            .download(&owner, url, limit)
            .await
            .map_err(client_failed)
    }

    async fn send(&self, event: OutboundEvent) -> Result<Delivered, AdapterError> {
        let deleted = match &event.kind {
            EventKind::Redaction { target, .. } => Some(target.clone()),
            _ => None,
        };
        let delivered = self.send_once(event).await?;
        if let Some(message) = deleted {
            // The deletion is on its way (or was, for a retry): its files go too.
            match assets::forget_files_of(self.ctx.store(), message.as_str()) {
                Ok(0) => {}
                Ok(n) => info!(%message, files = n, "hosted files of a deleted message deleted"),
                Err(e) => {
                    warn!(%message, error = %e, "hosted files of a deleted message not deleted")
                }
            }
        }
        Ok(delivered)
    }

    async fn send_once(&self, event: OutboundEvent) -> Result<Delivered, AdapterError> {
        let one_at_a_time = self.send_lock.lock().await;
        let sent_key = format!("{SENT}{}", event.id);
        let user = self.puppet_for(&event.sender.adapter, &event.sender.user)?;
        let delivered = |id: RemoteEventId| Delivered {
            native_id: Some(id),
            puppet: Some(RemoteUserId::new(user.to_string())),
        };
        let store = self.ctx.store();
        if let Some(done) = store.get(sent_key.as_bytes())? {
            return Ok(delivered(RemoteEventId::new(
                String::from_utf8_lossy(&done).into_owned(),
            )));
        }
        let room = RoomUri::parse(event.room.as_str()).map_err(|e| {
            AdapterError::Permanent(format!("{} is not a MIMI room URI: {e}", event.room))
        })?;
        let user = self.deleter(&event, &room, user)?;
        let delivered = |id: RemoteEventId| Delivered {
            native_id: Some(id),
            puppet: Some(RemoteUserId::new(user.to_string())),
        };
        let metadata = match &event.kind {
            EventKind::RoomName { name } => Some((Some(name.as_str()), None)),
            EventKind::Topic { text } => Some((None, Some(text.as_str()))),
            _ => None,
        };
        if let Some((name, subject)) = metadata {
            self.room_metadata(&room, name, subject).await?;
            return Ok(Delivered {
                native_id: None,
                puppet: Some(RemoteUserId::new(user.to_string())),
            });
        }
        if let EventKind::Membership { change, .. } = &event.kind {
            self.membership(&room, &user, *change, &event.id.to_string())
                .await?;
            return Ok(Delivered {
                native_id: None,
                puppet: Some(RemoteUserId::new(user.to_string())),
            });
        }
        if let EventKind::Moderation { target, action, .. } = &event.kind {
            self.moderate(&room, target, *action).await?;
            return Ok(Delivered {
                native_id: None,
                puppet: Some(RemoteUserId::new(user.to_string())),
            });
        }
        if let EventKind::Role { role } = &event.kind {
            self.role(&room, &user, *role).await?;
            return Ok(Delivered {
                native_id: None,
                puppet: Some(RemoteUserId::new(user.to_string())),
            });
        }
        if matches!(event.kind, EventKind::ReadMarker { .. })
            && !self
                .mls
                .local_members_of(&room)
                .is_ok_and(|members| members.contains(&user))
        {
            // Reading does not make someone join (as a Matrix ghost's receipt): a puppet not in
            // the group has nothing to report.
            return Ok(Delivered {
                native_id: None,
                puppet: Some(RemoteUserId::new(user.to_string())),
            });
        }
        let pending_key = format!("{PENDING}{}", event.id);
        let (id, ciphertext) = match store.get(pending_key.as_bytes())? {
            Some(pending) => split_pending(&pending)?,
            None => {
                // Mentioned users of other adapters are named by their puppets.
                let mut puppets = HashMap::new();
                if let EventKind::Message { content, .. } | EventKind::Edit { new: content, .. } =
                    &event.kind
                {
                    for m in content
                        .mentions
                        .iter()
                        .filter(|m| m.adapter != *self.ctx.adapter_id())
                    {
                        let puppet = self.puppet_for(&m.adapter, &m.user)?;
                        puppets.insert((m.adapter.clone(), m.user.clone()), puppet.to_string());
                    }
                }
                let mention_uri = |m: &Mention| {
                    if m.adapter == *self.ctx.adapter_id() {
                        Some(m.user.to_string())
                    } else {
                        puppets.get(&(m.adapter.clone(), m.user.clone())).cloned()
                    }
                };
                let files = self.seal_files(&event).await?;
                let encoded = payload::encode(
                    &event.kind,
                    &user.to_string(),
                    &room.to_string(),
                    &mention_uri,
                    &files,
                )?;
                // Which of our hosted files this message carries, so that deleting it deletes
                // them (an edit's go with the message it edits: deletions name the first
                // version).
                let ours = format!("{}{}", self.settings.origin, assets::ASSET_PATH);
                let hosted: Vec<&str> = (files.iter())
                    .filter_map(|f| f.part.url.strip_prefix(ours.as_str()))
                    .collect();
                let message = match &event.kind {
                    EventKind::Edit { target, .. } => target.as_str(),
                    _ => encoded.id.as_str(),
                };
                assets::note_files_of(store, message, &hosted)?;
                let members = match self.mls.local_members_of(&room) {
                    Ok(members) => members,
                    Err(MlsError::UnknownRoom(_)) => Vec::new(),
                    Err(e) => return Err(mls_failed(e)),
                };
                if !members.contains(&user) {
                    if !self.is_hub(&room) {
                        return Err(self.ask_to_join(&room, &user, &event.id.to_string()).await);
                    }
                    self.mls.ensure_client(&user).map_err(mls_failed)?;
                    self.add_local(&room, &user)?;
                }
                let ciphertext = self
                    .mls
                    .encrypt(&room, &user, &encoded.bytes)
                    .map_err(mls_failed)?;
                (encoded.id, ciphertext)
            }
        };
        if self.is_hub(&room) {
            let message = MlsMessage::from_bytes(ciphertext)
                .map_err(|e| AdapterError::Permanent(format!("our message: {e}")))?;
            let followers = self.followers(&room).map_err(mls_failed)?;
            let fanned = FanoutMessage {
                timestamp: event.ts,
                payload: FanoutPayload::Application {
                    message,
                    frank: None,
                },
            };
            self.queue.push(
                &room,
                &fanout::Queue::to_all(&followers, &[fanned]),
                &[(sent_key.as_bytes(), id.as_str().as_bytes())],
            )?;
            // No flush here: the fan-out flushes before it sends (see `fanout`), once for
            // every entry waiting, so the core hands over the next event at once.
            drop(one_at_a_time);
            self.queue.wake();
            return Ok(delivered(id));
        }
        // Follower: keep the ciphertext so a retry submits the same bytes.
        let mut pending = id.as_str().as_bytes().to_vec();
        pending.push(b'\n');
        pending.extend_from_slice(&ciphertext);
        store.put(pending_key.as_bytes(), &pending)?;
        // As for the hub: what follows touches only this event's keys and the network.
        drop(one_at_a_time);
        store.flush().await?;
        let peer = self.peer(room.domain()).await.map_err(client_failed)?;
        let request = SubmitMessageRequest {
            protocol: Protocol::Mls10,
            app_message: MlsMessage::from_bytes(ciphertext)
                .map_err(|e| AdapterError::Permanent(format!("our message: {e}")))?,
            sending_uri: IdentifierUri(user.puppet_client().to_string()),
        };
        let room_id = IdentifierUri(room.to_string());
        let answer = self
            .client
            .submit_message(&peer, &room_id, &request)
            .await
            .map_err(client_failed)?;
        match answer.result {
            SubmitResult::Accepted { .. } => {
                store.put_all(&[(sent_key.as_bytes(), id.as_str().as_bytes())])?;
                store.delete(pending_key.as_bytes())?;
                Ok(delivered(id))
            }
            SubmitResult::NotAllowed => {
                store.delete(pending_key.as_bytes())?;
                Err(AdapterError::Permanent(format!(
                    "the hub {} refused the message (notAllowed)",
                    room.domain()
                )))
            }
            SubmitResult::EpochTooOld { current_epoch } => {
                // Encrypt again at the next try, once the hub's commits have arrived.
                store.delete(pending_key.as_bytes())?;
                Err(AdapterError::transient(format!(
                    "the hub is at epoch {current_epoch}: sent again later"
                )))
            }
        }
    }
}

#[async_trait]
impl Adapter for MimiAdapter {
    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::text_only();
        caps.formatting = true;
        caps.edits = true;
        caps.replies = true;
        caps.threads = true;
        caps.reactions = true;
        caps.redactions = true;
        caps.membership = true;
        // As message status reports (draft-mahy-mimi-message-status, `content::status`).
        caps.read_markers = true;
        // Set by the hub (room metadata); a follower sends the core's text fallback instead.
        caps.topic = true;
        caps.room_name = true;
        // Set by the hub (a participant's role); a follower refuses (group admins only).
        caps.roles = true;
        // Done by the hub's bot; a follower refuses for MIMI users (the core's text line) and
        // takes the puppets of others out.
        caps.moderation = true;
        caps.attachments = Some(AttachmentLimit {
            max_bytes: Some(self.settings.max_file_bytes),
        });
        caps
    }

    async fn run(&self, ctx: AdapterContext) -> Result<(), AdapterError> {
        let running = self.start(&ctx)?;
        *self.running.lock() = Some(running.clone());
        ctx.set_connected(true);
        tokio::spawn(prune_now_and_then(
            running.ctx.store().clone(),
            self.settings.hosted_files_max_age,
            ctx.shutdown().clone(),
        ));
        fanout::run(running, ctx.shutdown().clone()).await;
        *self.running.lock() = None;
        info!(adapter = %self.id, "MIMI adapter stopped");
        Ok(())
    }

    async fn send(&self, event: OutboundEvent) -> Result<Delivered, AdapterError> {
        self.running()?.send(event).await
    }

    async fn join(&self, room: &RemoteRoomId) -> Result<(), AdapterError> {
        self.running()?.open_room(room)
    }

    /// Unlinked: the puppets of the other networks' users leave the group. The group itself
    /// stays (hosted: for its MIMI members; followed: the hub decides).
    async fn leave(&self, room: &RemoteRoomId) -> Result<(), AdapterError> {
        self.running()?.puppets_leave(room, None).await
    }

    async fn source_unlinked(
        &self,
        room: &RemoteRoomId,
        source: &AdapterId,
    ) -> Result<(), AdapterError> {
        self.running()?.puppets_leave(room, Some(source)).await
    }

    /// A MIMI room of its own, hosted by us, with `with`'s puppet and `user` (docs/mimi.md,
    /// "Direct conversations").
    async fn open_direct(
        &self,
        user: &RemoteUserId,
        with: &bridge_core::Sender,
    ) -> Result<RemoteRoomId, AdapterError> {
        self.running()?.open_direct(user, with).await
    }

    /// A file received in a MIMI message: downloaded, checked against its hash and decrypted
    /// (docs/mimi.md, "Attachments"). `Unsupported` for a URL no message of ours carried.
    async fn fetch_attachment(
        &self,
        attachment: &Attachment,
    ) -> Result<AttachmentBody, AdapterError> {
        let running = self.running()?;
        let received = assets::recall(running.ctx.store(), &attachment.url)?;
        let Some(received) =
            received.filter(|r| r.enc_alg != 0 || running.owner_of(&attachment.url).is_some())
        else {
            // Not from a MIMI message, or a plain link: the caller fetches it as one.
            return Err(AdapterError::Unsupported(format!(
                "{} is not a file hosted by a MIMI provider",
                attachment.url
            )));
        };
        let ciphertext = running.download(&attachment.url, &received.hub).await?;
        let plaintext = assets::open(&received, &ciphertext, self.settings.max_file_bytes)?;
        let mime = (!received.content_type.is_empty()).then(|| received.content_type.clone());
        Ok(AttachmentBody::from_bytes(plaintext.into(), mime))
    }
}

/// For unit tests: the store namespace of an adapter named `mimi` in a core over memory (shut
/// the core down at the end).
#[cfg(test)]
pub(crate) async fn memory_store() -> (bridge_core::Core, bridge_core::AdapterStore) {
    let far = bridge_core::testkit::MemoryAdapter::new(Capabilities::all());
    let handle = far.handle();
    let core = bridge_core::Core::builder(Arc::new(bridge_core::MemoryStore::new()))
        .adapter("mimi", Arc::new(far))
        .start()
        .await
        .expect("core");
    let store = handle.context().await.expect("context").store().clone();
    (core, store)
}

/// Deletes expired bookkeeping ([`expiry`]), and hosted files older than `hosted_files`
/// ([`assets::expire_hosted`]), at start and every hour until shutdown.
async fn prune_now_and_then(
    store: bridge_core::AdapterStore,
    hosted_files: Option<std::time::Duration>,
    shutdown: bridge_core::adapter::CancellationToken,
) {
    loop {
        let now = now_ms();
        match expiry::prune(&store, now) {
            Ok(0) => {}
            Ok(n) => info!(deleted = n, "MIMI bookkeeping expired"),
            Err(error) => warn!(%error, "MIMI bookkeeping not expired"),
        }
        if let Some(max_age) = hosted_files {
            let cutoff = now.saturating_sub(u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX));
            match assets::expire_hosted(&store, cutoff, now) {
                Ok(0) => {}
                Ok(n) => info!(
                    deleted = n,
                    ?max_age,
                    "hosted files expired: peers get 404 for them now"
                ),
                Err(error) => warn!(%error, "hosted files not expired"),
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(expiry::EVERY) => {}
        }
    }
}

/// Serialises an openmls object (a KeyPackage) to its bytes.
pub(crate) fn to_bytes(value: &impl tls_codec::Serialize) -> Result<Vec<u8>, String> {
    value.tls_serialize_detached().map_err(|e| e.to_string())
}

#[cfg(test)]
mod join_request_tests {
    use super::JoinRequest;

    #[test]
    fn join_requests_read_back_what_was_written_and_older_records() {
        for request in [
            JoinRequest::Pending { at: 17, by: None },
            JoinRequest::Pending {
                at: 1_700_000_000_000,
                by: Some("01M8MPEVTR000E3R2RKEE9B9RR".into()),
            },
            JoinRequest::Done {
                by: "01M8MPEVTR000E3R2RKEE9B9RR".into(),
            },
        ] {
            assert_eq!(JoinRequest::decode(&request.encode()), Some(request));
        }
        // What versions before the asking event was noted wrote: the time alone.
        assert_eq!(
            JoinRequest::decode("1700000000000"),
            Some(JoinRequest::Pending {
                at: 1_700_000_000_000,
                by: None
            })
        );
        assert_eq!(JoinRequest::decode("not a time"), None);
    }
}
