//! The `type = "matrix"` adapter in appservice mode: the homeserver pushes every event of the
//! linked rooms in transactions ([`crate::appservice`]), and the bridge sends as ghosts.
//!
//! Guarantees: a transaction is answered 200 only after every event in it is durably stored
//! (the homeserver retries until then: nothing from Matrix is lost while the bridge is down or
//! restarting); a repeated transaction ID is answered 200 without being processed again, and
//! event IDs are deduplicated by the core besides. Sends carry the neutral event ID as the
//! transaction ID, so a retried send never duplicates; the core calls `send` one at a time per
//! room, which keeps the room's DAG linear (no forks) and the order exact.

mod catchup;
mod ghosts;
mod inbound;
mod outbound;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use async_trait::async_trait;
use bridge_core::{
    Adapter, AdapterContext, AdapterError, AdapterFactory, AdapterId, AttachmentBody,
    AttachmentLimit, Backoff, Capabilities, ConfigIssue, Delivered, InboundEvent, OutboundEvent,
    RemoteEventId, RemoteRoomId, RemoteUserId,
};
use parking_lot::Mutex;
use ruma::api::appservice::Registration;
use ruma::{OwnedUserId, UserId};

use crate::homeserver::{As, Homeserver};
use crate::settings::{self, Mode, Settings};
use crate::translate::ids::Naming;

pub(crate) use ghosts::Ghosts;

/// How many recent transaction IDs are remembered (a retry comes right after its original).
const RECENT_TXNS: usize = 1024;
/// How many of them are written to the store with each transaction that changes something:
/// the homeserver retries its oldest unanswered transaction, so after a restart only the last
/// few can come again (and the core drops events it already has besides). The whole list made
/// each such transaction a ~20 kB write.
const PERSISTED_TXNS: usize = 64;
/// Store key of the recent transaction IDs.
const TXNS_KEY: &[u8] = b"txns";
/// How often the homeserver is checked while connected (a failed check makes a catch-up from
/// the rooms' history due: see [`catchup`]).
const HEALTH_INTERVAL: Duration = Duration::from_secs(10);

/// How long a ping the homeserver answers with 502 is asked again (see
/// [`Homeserver::ping_appservice`]).
const PING_PATIENCE: Duration = Duration::from_secs(30);

/// A room's power levels (content) and its creators, for moderation checks.
type Power = (serde_json::Value, Vec<String>);

/// What the bridge knows of a Matrix user in a room.
#[derive(Debug, Clone, Default)]
struct Member {
    name: Option<Box<str>>,
    /// Their avatar (`mxc://`), which this adapter can fetch for the others.
    avatar: Option<Box<str>>,
}

/// A Matrix user in a room: (room ID, user ID).
type MemberKey = (Box<str>, Box<str>);

/// Builds Matrix adapters from `type = "matrix"` sections.
#[derive(Debug, Clone, Copy, Default)]
pub struct MatrixFactory;

impl AdapterFactory for MatrixFactory {
    fn type_name(&self) -> &'static str {
        "matrix"
    }

    fn validate(&self, settings: &toml::Table) -> Vec<ConfigIssue> {
        settings::parse(settings, false).err().unwrap_or_default()
    }

    fn build(&self, id: AdapterId, table: &toml::Table) -> Result<Arc<dyn Adapter>, AdapterError> {
        let settings = settings::parse(table, true).map_err(|issues| {
            let list: Vec<String> = issues
                .iter()
                .map(|i| format!("{}: {}", i.path, i.message))
                .collect();
            AdapterError::Permanent(format!("{id}: {}", list.join("; ")))
        })?;
        match &settings.mode {
            Mode::Appservice { registration, .. } => {
                let registration = crate::registration::load(registration)
                    .map_err(|e| AdapterError::Permanent(format!("{id}: {e}")))?;
                Ok(Arc::new(AppserviceAdapter::new(
                    id,
                    settings,
                    registration,
                )?))
            }
            Mode::Relay { .. } => Ok(Arc::new(crate::relay::RelayAdapter::new(id, settings)?)),
        }
    }
}

/// The Matrix adapter as an application service: a ghost per remote user.
#[derive(Debug, Clone)]
pub struct AppserviceAdapter {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    id: AdapterId,
    settings: Settings,
    registration: Registration,
    naming: Naming,
    /// The bridge bot (the registration's `sender_localpart`).
    bot: OwnedUserId,
    hs: Homeserver,
    listen: SocketAddr,
    portals: bool,
    /// The context `run` was given; cleared when it returns.
    ctx: Mutex<Option<AdapterContext>>,
    ghosts: Ghosts,
    /// Display names of Matrix users by (room, user), from member events.
    members: Mutex<HashMap<MemberKey, Member>>,
    /// Power levels and creators by room, read when first needed.
    power: Mutex<HashMap<String, Arc<Power>>>,
    /// Who is typing in each room, as last pushed.
    typing: Mutex<HashMap<String, Vec<String>>>,
    /// The transactions taken most recently; the lock also makes transactions one at a time.
    txns: tokio::sync::Mutex<inbound::RecentTxns>,
    /// Linked rooms named by alias, and their room IDs.
    rooms: crate::rooms::RoomNames,
    /// Transactions the homeserver skipped (see [`inbound::GapCheck`]).
    gaps: Mutex<inbound::GapCheck>,
    /// Direct-message rooms: room → the ghost invited to it, or the bot (a direct
    /// conversation with the bridge itself, whose messages are admin commands).
    direct: Mutex<HashMap<String, String>>,
    /// The homeserver's upload limit, once known.
    upload_limit: Mutex<Option<u64>>,
    /// [`Homeserver::outages`] when the last catch-up from the rooms' history began
    /// ([`catchup::NEVER`] before the first): a catch-up is due while they differ.
    caught_up: AtomicU64,
    /// Sends (by transaction ID) whose last attempt may have been stored without an answer.
    unsure: Mutex<std::collections::HashSet<String>>,
    /// Rooms sent into in this process (the first send into each looks for an earlier attempt).
    checked_rooms: Mutex<std::collections::HashSet<String>>,
    /// Rooms told in this process that their encrypted messages cannot be bridged.
    told_encrypted: Mutex<std::collections::HashSet<String>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppserviceAdapter")
            .field("id", &self.id)
            .field("bot", &self.bot)
            .finish_non_exhaustive()
    }
}

impl AppserviceAdapter {
    /// An adapter with these settings and registration (no I/O until [`Adapter::run`]).
    pub fn new(
        id: AdapterId,
        settings: Settings,
        registration: Registration,
    ) -> Result<Self, AdapterError> {
        let Mode::Appservice {
            listen,
            server_name,
            ghost_prefix,
            portals,
            ghost_name,
            ..
        } = &settings.mode
        else {
            return Err(AdapterError::Permanent(format!(
                "{id}: not an appservice section"
            )));
        };
        let bad = |what: String| AdapterError::Permanent(format!("{id}: {what}"));
        let listen = match listen {
            Some(addr) => *addr,
            None => listen_of(registration.url.as_deref()).ok_or_else(|| {
                bad("no `listen` address, and the registration's url has no host:port".into())
            })?,
        };
        if !crate::registration::covers_ghosts(&registration, ghost_prefix) {
            tracing::warn!(adapter = %id, prefix = %ghost_prefix,
                "the registration's user namespace does not look like it covers the ghosts (@{ghost_prefix}…); the homeserver will refuse them");
        }
        let bot = UserId::parse(format!("@{}:{server_name}", registration.sender_localpart))
            .map_err(|e| bad(format!("the bot's user ID is invalid: {e}")))?;
        let hs = Homeserver::new(&settings.homeserver, &registration.as_token, true)
            .map_err(|e| bad(e.to_string()))?;
        let naming = Naming {
            prefix: ghost_prefix.clone(),
            server_name: server_name.clone(),
        };
        let portals = *portals;
        let ghosts = Ghosts::named(ghost_name);
        Ok(Self {
            inner: Arc::new(Inner {
                id,
                settings,
                registration,
                naming,
                bot,
                hs,
                listen,
                portals,
                ctx: Mutex::new(None),
                ghosts,
                members: Mutex::new(HashMap::new()),
                power: Mutex::new(HashMap::new()),
                typing: Mutex::new(HashMap::new()),
                txns: tokio::sync::Mutex::new(inbound::RecentTxns::default()),
                rooms: crate::rooms::RoomNames::default(),
                gaps: Mutex::new(inbound::GapCheck::default()),
                direct: Mutex::new(HashMap::new()),
                upload_limit: Mutex::new(None),
                caught_up: AtomicU64::new(catchup::NEVER),
                unsure: Mutex::new(std::collections::HashSet::new()),
                checked_rooms: Mutex::new(std::collections::HashSet::new()),
                told_encrypted: Mutex::new(std::collections::HashSet::new()),
            }),
        })
    }
}

/// `host:port` of a registration URL such as `http://127.0.0.1:9000`.
fn listen_of(url: Option<&str>) -> Option<SocketAddr> {
    let rest = url?.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    authority.parse().ok()
}

impl Inner {
    fn ctx(&self) -> Result<AdapterContext, AdapterError> {
        self.ctx
            .lock()
            .clone()
            .ok_or_else(|| AdapterError::transient("the adapter is not running"))
    }

    /// Loads the state remembered in the store.
    fn load(&self, ctx: &AdapterContext) -> Result<Ghosts, AdapterError> {
        let store = ctx.store();
        let failed = |e: bridge_core::StoreError| AdapterError::transient(e.to_string());
        if let Some(bytes) = store.get(TXNS_KEY).map_err(failed)? {
            let list: Vec<String> = serde_json::from_slice(&bytes).unwrap_or_default();
            let mut gaps = self.gaps.lock();
            for id in &list {
                gaps.taken(id);
            }
            drop(gaps);
            *self
                .txns
                .try_lock()
                .map_err(|_| AdapterError::transient("busy"))? = list.into_iter().collect();
        }
        let mut direct = self.direct.lock();
        for (key, value) in store.scan(inbound::DIRECT, usize::MAX).map_err(failed)? {
            let room = String::from_utf8_lossy(&key[inbound::DIRECT.len()..]).into_owned();
            direct.insert(room, String::from_utf8_lossy(&value).into_owned());
        }
        drop(direct);
        let upgrades = store.scan(inbound::UPGRADED, usize::MAX).map_err(failed)?;
        self.rooms
            .load_upgrades(upgrades.into_iter().filter_map(|(key, value)| {
                let old = String::from_utf8_lossy(&key[inbound::UPGRADED.len()..]).into_owned();
                let new = ruma::RoomId::parse(String::from_utf8_lossy(&value).as_ref()).ok()?;
                Some((old, new))
            }));
        Ghosts::load(store).map_err(failed)
    }

    /// Waits for the homeserver, then joins the bot to every linked room and learns the upload
    /// limit. Returns when connected or shut down.
    async fn connect(self: &Arc<Self>, ctx: &AdapterContext) {
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
        loop {
            match self.hs.ping().await {
                Ok(()) => break,
                Err(e) => {
                    let wait = backoff.next_delay();
                    tracing::warn!(adapter = %self.id, error = %e, ?wait, "homeserver unreachable; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = ctx.shutdown().cancelled() => return,
                    }
                }
            }
        }
        self.ping_from_homeserver_soon(ctx);
        for room in ctx.linked_rooms() {
            match self.join_bot(&room).await {
                Ok(()) => self.standing_before_the_bridge(ctx, &room).await,
                Err(e) => tracing::error!(adapter = %self.id, %room, error = %e,
                    "the bridge bot cannot join a linked room; invite it (and give it the power to invite)"),
            }
        }
        match self
            .hs
            .call(
                ruma::api::client::authenticated_media::get_media_config::v1::Request::new(),
                As::Bot,
            )
            .await
        {
            Ok(config) => *self.upload_limit.lock() = Some(u64::from(config.upload_size)),
            Err(e) => tracing::debug!(adapter = %self.id, error = %e, "no media config"),
        }
        // What the homeserver had not pushed when the bridge (or the homeserver) stopped.
        self.catch_up_if_due(ctx).await;
        ctx.set_connected(true);
        tracing::info!(adapter = %self.id, listen = %self.listen, bot = %self.bot, "matrix appservice connected");
    }

    /// Asks the homeserver to ping us (spec v1.7), in the background: proves that it reaches
    /// the appservice with the right token, and makes a homeserver that had given up on us
    /// after failed pushes (Synapse backs off up to 8.5 minutes) send what it queued at once.
    fn ping_from_homeserver_soon(self: &Arc<Self>, ctx: &AdapterContext) {
        let inner = self.clone();
        let shutdown = ctx.shutdown().clone();
        tokio::spawn(async move {
            tokio::select! {
                () = inner.ping_from_homeserver() => {}
                () = shutdown.cancelled() => {}
            }
        });
    }

    /// See [`Self::ping_from_homeserver_soon`].
    async fn ping_from_homeserver(&self) {
        match self
            .hs
            .ping_appservice(&self.registration.id, PING_PATIENCE)
            .await
        {
            Ok(round_trip) => tracing::info!(adapter = %self.id, ?round_trip,
                "the homeserver reaches the appservice"),
            Err(e) => tracing::warn!(adapter = %self.id, error = %e,
                "the homeserver could not ping the appservice (check the registration's url and tokens); it will retry its pushes later"),
        }
    }

    /// The bot joins a room (by ID or alias).
    async fn join_bot(&self, room: &RemoteRoomId) -> Result<(), AdapterError> {
        let room_id = self.room_id(room).await?;
        self.hs
            .call(
                ruma::api::client::membership::join_room_by_id::v3::Request::new(room_id),
                As::Bot,
            )
            .await?;
        Ok(())
    }

    /// A room ID from a linked room, resolving an alias (once).
    async fn room_id(&self, room: &RemoteRoomId) -> Result<ruma::OwnedRoomId, AdapterError> {
        self.rooms.resolve(&self.hs, room).await
    }

    /// The largest file that can cross into Matrix.
    fn file_limit(&self) -> u64 {
        let ours = self.settings.max_file_size;
        self.upload_limit.lock().map_or(ours, |hs| hs.min(ours))
    }
}

#[async_trait]
impl Adapter for AppserviceAdapter {
    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::all();
        caps.presence = false;
        caps.attachments = Some(AttachmentLimit {
            max_bytes: Some(self.inner.file_limit()),
        });
        caps
    }

    async fn run(&self, ctx: AdapterContext) -> Result<(), AdapterError> {
        let inner = &self.inner;
        let ghosts = inner.load(&ctx)?;
        // The ghosts loaded from the store replace the empty set made by `new`.
        inner.ghosts.replace(ghosts);
        #[allow(clippy::cast_precision_loss)]
        ctx.gauge("bridge_matrix_ghosts")
            .set(inner.ghosts.len() as f64);
        *inner.ctx.lock() = Some(ctx.clone());
        let handler: Arc<dyn crate::appservice::Handler> = Arc::new(inbound::Taker(inner.clone()));
        let router = crate::appservice::router(
            handler,
            inner.registration.hs_token.clone(),
            inner.settings.max_transaction_bytes,
        );
        let listener = bind(&inner.id, inner.listen, &ctx).await?;
        let shutdown = ctx.shutdown().clone();
        let server = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await
        });
        inner.connect(&ctx).await;
        let mut connected = true;
        loop {
            tokio::select! {
                () = ctx.shutdown().cancelled() => break,
                () = tokio::time::sleep(HEALTH_INTERVAL) => {}
            }
            let up = inner.hs.ping().await.is_ok();
            if up != connected {
                tracing::warn!(adapter = %inner.id, up, "homeserver reachability changed");
                if up {
                    inner.ping_from_homeserver_soon(&ctx);
                }
                ctx.set_connected(up);
                connected = up;
            }
            if up {
                // After an outage that no transaction followed yet.
                inner.catch_up_if_due(&ctx).await;
            }
        }
        match server.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(adapter = %inner.id, error = %e, "appservice server ended")
            }
            Err(e) => {
                tracing::warn!(adapter = %inner.id, error = %e, "appservice server task failed")
            }
        }
        *inner.ctx.lock() = None;
        Ok(())
    }

    async fn send(&self, event: OutboundEvent) -> Result<Delivered, AdapterError> {
        self.inner.send(event).await
    }

    /// An `m.notice` from the bot (its own events are in our namespace, so never taken back
    /// as inbound events).
    async fn send_notice(&self, room: &RemoteRoomId, text: &str) -> Result<(), AdapterError> {
        let room_id = self.inner.room_id(room).await?;
        crate::calls::send_notice(&self.inner.hs, As::Bot, &room_id, text).await?;
        Ok(())
    }

    async fn join(&self, room: &RemoteRoomId) -> Result<(), AdapterError> {
        self.inner.join_bot(room).await?;
        if let Ok(ctx) = self.inner.ctx() {
            self.inner.standing_before_the_bridge(&ctx, room).await;
        }
        Ok(())
    }

    /// Unlinked: the ghosts of the other networks' users leave the room (each on its own; one
    /// that cannot is logged), then the bot. A passing failure (the homeserver away) is
    /// returned once the others are done, so that the core asks again at the next connection.
    async fn leave(&self, room: &RemoteRoomId) -> Result<(), AdapterError> {
        let room_id = self.inner.room_id(room).await?;
        let ghosts = (self.inner.members_of(&room_id).await?.into_iter())
            .filter(|user| *user != self.inner.bot.as_str() && self.inner.is_ours(user))
            .filter_map(|user| ruma::UserId::parse(user).ok());
        let mut again = None;
        for ghost in ghosts {
            let request =
                ruma::api::client::membership::leave_room::v3::Request::new(room_id.clone());
            if let Err(e) = self.inner.hs.call(request, As::Ghost(&ghost)).await {
                tracing::warn!(adapter = %self.inner.id, %room, %ghost, error = %e,
                    "a ghost did not leave the unlinked room");
                again = again.or(passing(e.into()));
            }
        }
        self.inner
            .hs
            .call(
                ruma::api::client::membership::leave_room::v3::Request::new(room_id),
                As::Bot,
            )
            .await?;
        again.map_or(Ok(()), Err)
    }

    /// The ghosts of `source`'s users leave `room` (as the homeserver lists its members); a
    /// passing failure is returned once the others are done, as for [`Self::leave`].
    async fn source_unlinked(
        &self,
        room: &RemoteRoomId,
        source: &AdapterId,
    ) -> Result<(), AdapterError> {
        let room_id = self.inner.room_id(room).await?;
        let ghosts = (self.inner.members_of(&room_id).await?.into_iter())
            .filter(|user| {
                (self.inner.naming.ghost_of(user)).is_some_and(|(adapter, _)| adapter == *source)
            })
            .filter_map(|user| ruma::UserId::parse(user).ok());
        let mut again = None;
        for ghost in ghosts {
            let why = format!("{source} is no longer linked to this room");
            if let Err(e) = self.inner.ghost_leaves(&room_id, &ghost, Some(why)).await {
                tracing::warn!(adapter = %self.inner.id, %room, %ghost, error = %e,
                    "a ghost did not leave the room its network was unlinked from");
                again = again.or(passing(e));
            }
        }
        again.map_or(Ok(()), Err)
    }

    async fn resolve_alias(&self, alias: &str) -> Result<RemoteRoomId, AdapterError> {
        let room = self.inner.room_id(&RemoteRoomId::new(alias)).await?;
        Ok(RemoteRoomId::new(room.as_str()))
    }

    async fn open_direct(
        &self,
        user: &RemoteUserId,
        with: &bridge_core::Sender,
    ) -> Result<RemoteRoomId, AdapterError> {
        self.inner.open_direct(user, with).await
    }

    async fn fetch_attachment(
        &self,
        attachment: &bridge_core::Attachment,
    ) -> Result<AttachmentBody, AdapterError> {
        let limit = self.inner.settings.max_file_size;
        Ok(self.inner.hs.download(&attachment.url, limit).await?)
    }

    async fn backfill(
        &self,
        _room: &RemoteRoomId,
        _after: Option<&RemoteEventId>,
        _limit: usize,
    ) -> Result<Vec<InboundEvent>, AdapterError> {
        // The homeserver keeps retrying each transaction until it is answered 200, and what it
        // lost the adapter reads from the rooms' history itself, under its transaction lock so
        // that the order is kept ([`catchup`]): nothing for the core to ask.
        Err(AdapterError::Unsupported(
            "the homeserver redelivers transactions; the adapter catches up by itself".into(),
        ))
    }
}

/// Binds the appservice port, retrying while the address is in use (a previous bridge still
/// stopping).
async fn bind(
    id: &AdapterId,
    addr: SocketAddr,
    ctx: &AdapterContext,
) -> Result<tokio::net::TcpListener, AdapterError> {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => return Ok(listener),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                let wait = backoff.next_delay();
                tracing::warn!(adapter = %id, %addr, ?wait, "appservice address in use; retrying");
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = ctx.shutdown().cancelled() => {
                        return Err(AdapterError::transient("shut down before listening"));
                    }
                }
            }
            Err(e) => {
                return Err(AdapterError::Permanent(format!(
                    "{id}: cannot listen on {addr}: {e}"
                )));
            }
        }
    }
}

/// `e` when it is worth trying again later (not a refusal for good).
fn passing(e: AdapterError) -> Option<AdapterError> {
    matches!(e, AdapterError::Transient { .. } | AdapterError::Auth(_)).then_some(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listen_address_comes_from_the_registration_url() {
        assert_eq!(
            listen_of(Some("http://127.0.0.1:9000")).map(|a| a.port()),
            Some(9000)
        );
        assert_eq!(
            listen_of(Some("http://127.0.0.1:9000/path")).map(|a| a.port()),
            Some(9000)
        );
        assert_eq!(listen_of(Some("http://bridge.example.org")), None);
        assert_eq!(listen_of(None), None);
    }
}
