//! The adapter API: what a plugin author implements to add a protocol.
//!
//! An adapter is built by its [`AdapterFactory`] from its `[[adapter]]` section of the TOML
//! config ([`AdapterFactory::validate`] first, without I/O), then [`Adapter::run`] is spawned with
//! an [`AdapterContext`]. The adapter translates its protocol's events into [`InboundEvent`]s and
//! hands them to [`AdapterContext::submit`]; it acknowledges them to its source only after
//! `submit` returns `Ok` (the event is then durably stored). The core calls [`Adapter::send`] for
//! every event to deliver into one of its rooms, one at a time per room, in order.
//!
//! The core does everything else: routing, ID mapping, dedup, echo suppression, ordering,
//! retries, dead letters and fallbacks for what [`Capabilities`] say the adapter cannot carry.
//!
//! # The echo race
//!
//! The core recognises the bridge's own messages coming back (echoes) by the native ID and the
//! puppet that [`Adapter::send`] reports in [`Delivered`]; it records both only *after* `send`
//! returns. A protocol that reflects a message to its sender before the send call completes
//! (an XMPP MUC reflects the groupchat message, a Matrix sync may return the event before the
//! `/send` response) can therefore hand the core the echo before the core knows it is one, and
//! the message would be bridged back (a loop). An adapter whose protocol can do that must, in
//! `send`, before sending:
//!
//! - register the native user it sends as with [`AdapterContext::add_puppet`] when that user is
//!   new (and, the first time, await [`AdapterStore::flush`] via `ctx.store().flush()` so the
//!   puppet survives a crash), since events from a puppet are always echoes; or
//! - when the protocol carries an ID of the sender's choosing back in the reflection (XMPP
//!   `origin-id`, a Matrix transaction ID), put the neutral [`OutboundEvent::id`] there and set
//!   [`InboundEvent::echo_of`] on the reflection it receives: the core then records the native
//!   ID and drops the echo.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::capabilities::Capabilities;
use crate::engine::Shared;

use crate::event::{Attachment, InboundEvent, OutboundEvent};
use crate::ids::{AdapterId, EventId, RemoteEventId, RemoteRoomId, RemoteUserId};
use crate::store::Batch;
use crate::store::keys::{Key, tag};
use crate::store::{Entry, StoreError};

pub use tokio_util::sync::CancellationToken;

/// Why a send (or another adapter call) failed; the core decides what to do from the variant.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum AdapterError {
    /// Worth retrying (network error, server restarting, rate limited): the core retries with
    /// exponential backoff and jitter, then dead-letters after `max_attempts`.
    #[error("transient failure: {message}")]
    Transient {
        /// What went wrong.
        message: String,
        /// How long the far side asked us to wait (e.g. Matrix `retry_after_ms`).
        retry_after: Option<Duration>,
    },
    /// Will never succeed (the room is gone, the content is refused): dead-lettered at once.
    #[error("permanent failure: {0}")]
    Permanent(String),
    /// The adapter cannot carry this event: the core degrades it to plain text once, else drops
    /// it (counted).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// Credentials were refused: the core keeps the event and retries at the longest backoff.
    #[error("authentication failed: {0}")]
    Auth(String),
}

impl AdapterError {
    /// A transient error without a retry hint.
    pub fn transient(message: impl Into<String>) -> Self {
        Self::Transient {
            message: message.into(),
            retry_after: None,
        }
    }
}

impl From<StoreError> for AdapterError {
    /// A store failure is worth retrying: the disk may recover, the event is not lost.
    fn from(e: StoreError) -> Self {
        Self::transient(format!("store: {e}"))
    }
}

/// What a successful [`Adapter::send`] produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivered {
    /// The native ID of the delivered event, recorded in the ID map so that later edits,
    /// replies, reactions and deletions can point at it, and so its echo is recognised.
    pub native_id: Option<RemoteEventId>,
    /// The native user it was sent as (the puppet or relay bot). Events from this user are
    /// never bridged again (no loops).
    pub puppet: Option<RemoteUserId>,
}

/// A problem with an adapter's settings, found by [`AdapterFactory::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Dotted path inside the adapter's section, e.g. `connect` or `rooms[2].alias`.
    pub path: String,
    /// What is wrong, and what would be right.
    pub message: String,
}

impl ConfigIssue {
    /// An issue at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// The issues of the keys of an adapter's `settings` that are not among `known`, for an adapter
/// of type `adapter_type`: each names the key and lists the known ones. Adapters start their
/// [`AdapterFactory::validate`] with it.
pub fn unknown_settings(
    settings: &toml::Table,
    known: &[&str],
    adapter_type: &str,
) -> Vec<ConfigIssue> {
    settings
        .keys()
        .filter(|k| !known.contains(&k.as_str()))
        .map(|key| {
            ConfigIssue::new(
                key.as_str(),
                format!(
                    "unknown setting; the {adapter_type} adapter takes {}",
                    known.join(", ")
                ),
            )
        })
        .collect()
}

/// The non-empty string setting `key` of `settings`; a missing `required` one, or one that is
/// not a non-empty string, is recorded in `issues` (and gives `None`).
pub fn text_setting(
    settings: &toml::Table,
    key: &str,
    required: bool,
    issues: &mut Vec<ConfigIssue>,
) -> Option<String> {
    match settings.get(key) {
        Some(toml::Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
        Some(_) => {
            issues.push(ConfigIssue::new(key, "expected a non-empty string"));
            None
        }
        None if required => {
            issues.push(ConfigIssue::new(key, "required"));
            None
        }
        None => None,
    }
}

/// Builds adapters of one type from their config sections.
pub trait AdapterFactory: Send + Sync {
    /// The `type` string of the `[[adapter]]` sections this factory builds.
    fn type_name(&self) -> &'static str;

    /// Checks the type-specific settings without any I/O; reports every problem.
    fn validate(&self, settings: &toml::Table) -> Vec<ConfigIssue>;

    /// Builds the adapter (no I/O yet: connections are made in [`Adapter::run`]).
    fn build(
        &self,
        id: AdapterId,
        settings: &toml::Table,
    ) -> Result<Arc<dyn Adapter>, AdapterError>;
}

/// A protocol adapter.
#[async_trait]
pub trait Adapter: Send + Sync + std::fmt::Debug + 'static {
    /// What this adapter can carry (read once at start).
    fn capabilities(&self) -> Capabilities;

    /// Connects and runs until `ctx.shutdown()` is cancelled, then returns after a clean
    /// disconnect. Reconnects by itself after network errors. Joins `ctx.linked_rooms()` once
    /// connected (and again after every reconnect).
    async fn run(&self, ctx: AdapterContext) -> Result<(), AdapterError>;

    /// Delivers one event into one of its native rooms. Called one at a time per room, in order,
    /// possibly again for the same `event.id` after a crash or retry: use the ID as the
    /// protocol's idempotency key where it has one.
    ///
    /// The returned [`Delivered::native_id`] and [`Delivered::puppet`] are recorded only after
    /// this returns. If the protocol may echo the message back to the bridge before that, call
    /// [`AdapterContext::add_puppet`] for a new puppet (awaiting `ctx.store().flush()` the first
    /// time) *before* sending as it, or carry `event.id` in the message and set
    /// [`InboundEvent::echo_of`] on its reflection (see "The echo race" in the module docs).
    async fn send(&self, event: OutboundEvent) -> Result<Delivered, AdapterError>;

    /// A link to `room` was added while running: join it.
    async fn join(&self, room: &RemoteRoomId) -> Result<(), AdapterError> {
        let _ = room;
        Ok(())
    }

    /// The link to `room` was removed: leave it (with the puppets). Called when the adapter is
    /// connected, like [`Adapter::source_unlinked`]: at runtime at once, for a link left out of
    /// the configuration after a start, so possibly for a room not joined in this process.
    async fn leave(&self, room: &RemoteRoomId) -> Result<(), AdapterError> {
        let _ = room;
        Ok(())
    }

    /// `source`'s users no longer reach `room` (one of this adapter's native rooms): the link
    /// of `source` to the same neutral room was removed, and `source` has no other link there.
    /// Their puppets or ghosts in `room` should leave. Called when the adapter is connected
    /// (at its next connection when the link was removed while it was not, or left out of the
    /// configuration); a transient error has it called again at the next connection, a
    /// permanent one gives up. The default does nothing.
    async fn source_unlinked(
        &self,
        room: &RemoteRoomId,
        source: &AdapterId,
    ) -> Result<(), AdapterError> {
        let _ = (room, source);
        Ok(())
    }

    /// Sends `text` into `room` as a notice from the bridge itself (its bot or own account,
    /// never a puppet): the answer to an admin command in a management room (see
    /// [`crate::management`]). The bridge's own messages must not come back to the core as
    /// commands: drop them, or report them as sent by a puppet. The default: `Unsupported`.
    async fn send_notice(&self, room: &RemoteRoomId, text: &str) -> Result<(), AdapterError> {
        let _ = text;
        Err(AdapterError::Unsupported(format!(
            "this adapter cannot answer admin commands (in {room})"
        )))
    }

    /// Resolves a human alias (`#lobby:example.org`, a MUC address) to a native room.
    async fn resolve_alias(&self, alias: &str) -> Result<RemoteRoomId, AdapterError> {
        Err(AdapterError::Unsupported(format!(
            "this adapter cannot resolve aliases ({alias})"
        )))
    }

    /// Opens (or finds) a one-to-one conversation between `user`, a native user of this
    /// adapter, and `with`, a user of another adapter whom this adapter shows through a puppet;
    /// returns the native room. Called by the core when `with` wrote to `user` directly (see
    /// [`AdapterContext::direct_room`]). The default: `Unsupported`.
    async fn open_direct(
        &self,
        user: &RemoteUserId,
        with: &crate::event::Sender,
    ) -> Result<RemoteRoomId, AdapterError> {
        let _ = with;
        Err(AdapterError::Unsupported(format!(
            "this adapter cannot open direct conversations (with {user})"
        )))
    }

    /// Fetches what was posted in `room` after `after` (history the bridge missed), oldest first,
    /// at most `limit` events. The core calls it for every linked room each time the adapter
    /// reports itself connected ([`AdapterContext::set_connected`]`(true)` after being
    /// disconnected or at start), with `after` = the newest native ID accepted from that room in
    /// this process, or `None` after a restart (then start from the adapter's own stored
    /// position, e.g. the last archive ID it saved). The core submits what it returns like any
    /// inbound event, in order; dedup makes overlaps harmless. Return `Unsupported` (the
    /// default) when the protocol has no history to fetch.
    async fn backfill(
        &self,
        room: &RemoteRoomId,
        after: Option<&RemoteEventId>,
        limit: usize,
    ) -> Result<Vec<InboundEvent>, AdapterError> {
        let _ = (room, after, limit);
        Err(AdapterError::Unsupported("no backfill".into()))
    }

    /// Streams the bytes of an attachment that this adapter received (its [`Attachment::url`]
    /// is in this adapter's own scheme: an `mxc://` URI needing the homeserver's credentials,
    /// say). Another adapter asks for it through [`AdapterContext::fetch_attachment`] to
    /// re-host the file on its own protocol. The default: `Unsupported` (the URL is then
    /// fetched as a plain HTTP(S) link where it is one).
    async fn fetch_attachment(
        &self,
        attachment: &Attachment,
    ) -> Result<AttachmentBody, AdapterError> {
        Err(AdapterError::Unsupported(format!(
            "this adapter cannot fetch {}",
            attachment.url
        )))
    }
}

/// The bytes of an attachment, as a stream of chunks (see [`Adapter::fetch_attachment`]).
pub struct AttachmentBody {
    /// The length in bytes, when the source says.
    pub length: Option<u64>,
    /// The MIME type, when the source says.
    pub mime: Option<String>,
    /// The bytes, in order. An `Err` ends the transfer.
    pub chunks: futures::stream::BoxStream<'static, Result<bytes::Bytes, AdapterError>>,
}

impl std::fmt::Debug for AttachmentBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttachmentBody")
            .field("length", &self.length)
            .field("mime", &self.mime)
            .finish_non_exhaustive()
    }
}

impl AttachmentBody {
    /// A body of bytes already in memory.
    pub fn from_bytes(bytes: bytes::Bytes, mime: Option<String>) -> Self {
        Self {
            length: Some(bytes.len() as u64),
            mime,
            chunks: Box::pin(futures::stream::once(async move { Ok(bytes) })),
        }
    }

    /// Reads the whole body, refusing (`Permanent`) one longer than `limit` bytes, whether the
    /// announced length or the bytes that actually arrive say so.
    pub async fn collect(mut self, limit: u64) -> Result<bytes::Bytes, AdapterError> {
        use futures::StreamExt as _;
        let too_big = |n: u64| {
            AdapterError::Permanent(format!("the file is {n} bytes, over the limit of {limit}"))
        };
        if let Some(length) = self.length.filter(|&n| n > limit) {
            return Err(too_big(length));
        }
        let mut out = bytes::BytesMut::new();
        while let Some(chunk) = self.chunks.next().await {
            let chunk = chunk?;
            let total = (out.len() + chunk.len()) as u64;
            if total > limit {
                return Err(too_big(total));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out.freeze())
    }
}

/// How the core took an inbound event. Every variant may be acknowledged to the source.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Submitted {
    /// Stored durably and queued for every other link of the room.
    Accepted(EventId),
    /// Already accepted earlier under this native ID (a redelivery).
    Duplicate(EventId),
    /// The bridge's own event coming back (sent by a puppet, or carrying an ID we produced).
    Echo,
    /// The native room is not linked to any neutral room.
    Unrouted,
    /// Refused (counted and logged): e.g. an edit of someone else's message, or a reference to
    /// an event the bridge never saw.
    Rejected(String),
    /// Posted in a management room: not bridged; a text message went to the admin commands
    /// (see [`crate::management`]).
    Management,
}

/// An inbound event the core has ordered; [`Pending::durable`] waits until it is stored.
#[must_use = "acknowledge the event only after `durable()` returns"]
pub struct Pending {
    pub(crate) shared: Arc<Shared>,
    pub(crate) submitted: Submitted,
    pub(crate) seq: u64,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("submitted", &self.submitted)
            .finish_non_exhaustive()
    }
}

impl Pending {
    /// Waits until the event is on stable storage; then it may be acknowledged to its source.
    pub async fn durable(self) -> Submitted {
        self.shared.commit.wait(self.seq).await;
        self.submitted
    }
}

/// The event was not stored: do not acknowledge it; the source should deliver it again.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The bridge is shutting down.
    #[error("the bridge is shutting down")]
    ShuttingDown,
}

/// What the core gives a running adapter.
#[derive(Clone)]
pub struct AdapterContext {
    pub(crate) adapter: AdapterId,
    pub(crate) shared: Arc<Shared>,
    pub(crate) shutdown: CancellationToken,
    store: AdapterStore,
}

impl std::fmt::Debug for AdapterContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdapterContext")
            .field("adapter", &self.adapter)
            .finish_non_exhaustive()
    }
}

impl AdapterContext {
    pub(crate) fn new(
        adapter: AdapterId,
        shared: Arc<Shared>,
        shutdown: CancellationToken,
    ) -> Self {
        let store = AdapterStore {
            adapter: adapter.clone(),
            shared: shared.clone(),
        };
        Self {
            adapter,
            shared,
            shutdown,
            store,
        }
    }

    /// This adapter's configured ID.
    pub fn adapter_id(&self) -> &AdapterId {
        &self.adapter
    }

    /// Hands an inbound event to the core. Returns once it is durably stored (or recognised as a
    /// duplicate, echo, unrouted or rejected): only then acknowledge it to its source.
    pub async fn submit(&self, event: InboundEvent) -> Result<Submitted, SubmitError> {
        Ok(self.enqueue(event)?.durable().await)
    }

    /// Hands an inbound event to the core and returns at once, without waiting for the store:
    /// events enqueued one after another are accepted in that order, while their durability is
    /// awaited concurrently ([`Pending::durable`]) — the way to pipeline a stream without
    /// reordering it. Acknowledge the event to its source only after `durable()` returns.
    pub fn enqueue(&self, event: InboundEvent) -> Result<Pending, SubmitError> {
        self.enqueue_as(event, false)
    }

    fn enqueue_as(&self, event: InboundEvent, to_bridge: bool) -> Result<Pending, SubmitError> {
        if self.shutdown.is_cancelled() {
            return Err(SubmitError::ShuttingDown);
        }
        self.shared.enqueue(&self.adapter, event, to_bridge)
    }

    /// Hands the core an event addressed to the bridge itself rather than to a room: a
    /// message in a direct conversation with the bridge's own account (its Matrix bot, its
    /// XMPP address). It is handled like one posted in a management room (see
    /// [`crate::management`]): never bridged; a text message goes to the admin commands once,
    /// and the answer comes back through [`Adapter::send_notice`] with `event.room`, so that
    /// room must be one the adapter can answer in. Returns once it is durable, like
    /// [`Self::submit`].
    pub async fn submit_to_bridge(&self, event: InboundEvent) -> Result<Submitted, SubmitError> {
        Ok(self.enqueue_to_bridge(event)?.durable().await)
    }

    /// [`Self::submit_to_bridge`] without waiting for durability (see [`Self::enqueue`]).
    pub fn enqueue_to_bridge(&self, event: InboundEvent) -> Result<Pending, SubmitError> {
        self.enqueue_as(event, true)
    }

    /// The native rooms currently linked for this adapter, and its management rooms (see
    /// [`crate::management`]): join them when connected.
    pub fn linked_rooms(&self) -> Vec<RemoteRoomId> {
        let mut rooms = self.shared.linked_rooms(&self.adapter);
        rooms.extend(
            self.shared
                .management
                .iter()
                .filter(|link| link.adapter == self.adapter)
                .map(|link| link.remote.clone()),
        );
        rooms
    }

    /// True when `source`'s users reach `room`, a native room of this adapter: `source` has a
    /// link in the neutral room `room` is linked to. A puppet of a user of a `source` that
    /// does not (its link was removed) has no business in `room`.
    pub fn reaches(&self, room: &RemoteRoomId, source: &AdapterId) -> bool {
        (self.shared.routing.read()).reaches(&self.adapter, room, source)
    }

    /// True when `room`, a native room of this adapter, is linked to a neutral room (by the
    /// configuration, at runtime, or as a direct conversation).
    pub fn is_linked(&self, room: &RemoteRoomId) -> bool {
        self.shared
            .routing
            .read()
            .room_of(&self.adapter, room)
            .is_some()
    }

    /// True when `room` is one of this adapter's management rooms (see [`crate::management`]).
    pub fn is_management_room(&self, room: &RemoteRoomId) -> bool {
        self.shared.management.contains(&crate::routing::Link::new(
            self.adapter.clone(),
            room.clone(),
        ))
    }

    /// Cancelled when the bridge shuts down.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Reports whether the adapter is connected (drives readiness and a metric). On each change
    /// to connected, the core asks [`Adapter::backfill`] for what every linked room missed,
    /// then has the adapter do what removed links left to do in its rooms ([`Adapter::leave`],
    /// [`Adapter::source_unlinked`]; for a link removed while it was not connected, or left out
    /// of the configuration).
    pub fn set_connected(&self, connected: bool) {
        if self.shared.set_connected(&self.adapter, connected) {
            let shared = self.shared.clone();
            let adapter = self.adapter.clone();
            let shutdown = self.shutdown.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = async {
                        crate::engine::backfill(&shared, &adapter).await;
                        crate::engine::unlink::settle(&shared, &adapter).await;
                    } => {}
                    () = shutdown.cancelled() => {}
                }
            });
        }
    }

    /// The neutral room of a direct (one-to-one) conversation: `local_user`, a native user of
    /// this adapter, wrote in `native_room` to this adapter's puppet of `counterpart`, a user of
    /// another adapter. The first time, the core asks the counterpart's adapter to open the
    /// conversation on its side ([`Adapter::open_direct`]) and links both native rooms in a new
    /// neutral room (persisted); afterwards it returns that room. Then submit the message in
    /// `native_room` as usual.
    pub async fn direct_room(
        &self,
        native_room: &RemoteRoomId,
        local_user: &RemoteUserId,
        local_name: Option<&str>,
        counterpart: &crate::event::Sender,
    ) -> Result<crate::ids::RoomId, AdapterError> {
        let shared = &self.shared;
        let known = |shared: &Shared| {
            shared
                .routing
                .read()
                .room_of(&self.adapter, native_room)
                .cloned()
        };
        if let Some(room) = known(shared) {
            return Ok(room);
        }
        let _one_at_a_time = shared.direct.lock().await;
        if let Some(room) = known(shared) {
            return Ok(room);
        }
        let Some(slot) = shared.adapters.get(&counterpart.adapter) else {
            return Err(AdapterError::Permanent(format!(
                "no adapter {} for a direct conversation with {}",
                counterpart.adapter, counterpart.user
            )));
        };
        let me = crate::event::Sender {
            adapter: self.adapter.clone(),
            user: local_user.clone(),
            display_name: local_name.map(str::to_owned),
            avatar: None,
        };
        let far_room = slot.adapter.open_direct(&counterpart.user, &me).await?;
        let room = direct_room_id(&me, counterpart);
        let failed = |e: crate::engine::CoreError| AdapterError::transient(e.to_string());
        shared
            .add_link(
                &room,
                crate::routing::Link::new(self.adapter.clone(), native_room.clone()),
            )
            .await
            .map_err(failed)?;
        shared
            .add_link(
                &room,
                crate::routing::Link::new(counterpart.adapter.clone(), far_room),
            )
            .await
            .map_err(failed)?;
        tracing::info!(%room, a = %me.user, b = %counterpart.user, "direct conversation linked");
        Ok(room)
    }

    /// The bytes of `attachment`, which adapter `source` received (the `sender.adapter` of an
    /// [`OutboundEvent`]): asks that adapter ([`Adapter::fetch_attachment`]), so a file behind
    /// one protocol's authentication can be re-hosted on another.
    pub async fn fetch_attachment(
        &self,
        source: &AdapterId,
        attachment: &Attachment,
    ) -> Result<AttachmentBody, AdapterError> {
        match self.shared.adapters.get(source) {
            Some(slot) => slot.adapter.fetch_attachment(attachment).await,
            None => Err(AdapterError::Permanent(format!(
                "no adapter {source} to fetch {} from",
                attachment.url
            ))),
        }
    }

    /// Links `native_room`, a room of this adapter made on demand (a Matrix portal room
    /// opened by joining an alias), with `far`, a native room of another adapter: when `far`
    /// already belongs to a neutral room, `native_room` joins that room; otherwise a new
    /// neutral room (`portal-` and a hash of `far`) links both, and `far`'s adapter is asked to
    /// join it. Persisted; returns the neutral room.
    pub async fn link_portal(
        &self,
        native_room: &RemoteRoomId,
        far: crate::routing::Link,
    ) -> Result<crate::ids::RoomId, AdapterError> {
        let shared = &self.shared;
        if !shared.adapters.contains_key(&far.adapter) || far.adapter == self.adapter {
            return Err(AdapterError::Permanent(format!(
                "no other adapter {} to open a portal to",
                far.adapter
            )));
        }
        let _one_at_a_time = shared.direct.lock().await;
        let existing = shared
            .routing
            .read()
            .room_of(&far.adapter, &far.remote)
            .cloned();
        let failed = |e: crate::engine::CoreError| AdapterError::transient(e.to_string());
        let room = match existing {
            Some(room) => room,
            None => {
                let room = crate::ids::RoomId::new(format!(
                    "portal-{:016x}",
                    fnv1a(
                        0xcbf2_9ce4_8422_2325,
                        &format!("{}\0{}", far.adapter, far.remote)
                    )
                ));
                shared.add_link(&room, far.clone()).await.map_err(failed)?;
                room
            }
        };
        shared
            .add_link(
                &room,
                crate::routing::Link::new(self.adapter.clone(), native_room.clone()),
            )
            .await
            .map_err(failed)?;
        tracing::info!(%room, native = %native_room, far = %far, "portal linked");
        Ok(room)
    }

    /// Records a native user as one of the bridge's puppets: its events are never bridged.
    pub fn add_puppet(&self, user: &RemoteUserId) -> Result<(), StoreError> {
        self.shared.add_puppet(&self.adapter, user)
    }

    /// True when `user` is one of this adapter's puppets.
    pub fn is_puppet(&self, user: &RemoteUserId) -> bool {
        self.shared.is_puppet(&self.adapter, user)
    }

    /// A counter `name` labelled with this adapter's ID (exported at `/metrics` when the
    /// bridge serves metrics). Register it once and keep the handle.
    pub fn counter(&self, name: &'static str) -> metrics::Counter {
        metrics::counter!(name, "adapter" => self.adapter.to_string())
    }

    /// A gauge `name` labelled with this adapter's ID.
    pub fn gauge(&self, name: &'static str) -> metrics::Gauge {
        metrics::gauge!(name, "adapter" => self.adapter.to_string())
    }

    /// A histogram `name` labelled with this adapter's ID.
    pub fn histogram(&self, name: &'static str) -> metrics::Histogram {
        metrics::histogram!(name, "adapter" => self.adapter.to_string())
    }

    /// This adapter's private key/value space in the store.
    pub fn store(&self) -> &AdapterStore {
        &self.store
    }
}

/// The neutral ID of the direct conversation between two users: the same whichever writes
/// first (`dm-` and 32 hex digits of two FNV-1a hashes of the sorted pair).
fn direct_room_id(a: &crate::event::Sender, b: &crate::event::Sender) -> crate::ids::RoomId {
    let key = |s: &crate::event::Sender| format!("{}\0{}", s.adapter, s.user);
    let (mut first, mut second) = (key(a), key(b));
    if first > second {
        std::mem::swap(&mut first, &mut second);
    }
    let pair = format!("{first}\u{1}{second}");
    crate::ids::RoomId::new(format!(
        "dm-{:016x}{:016x}",
        fnv1a(0xcbf2_9ce4_8422_2325, &pair),
        fnv1a(0x8422_2325_cbf2_9ce4, &pair)
    ))
}

/// FNV-1a of `text` from `seed`: stable across builds and platforms, for IDs derived from names.
fn fnv1a(seed: u64, text: &str) -> u64 {
    text.bytes().fold(seed, |h, byte| {
        (h ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// An adapter's private namespace in the core's store (sync tokens, last archive IDs, keys…).
#[derive(Clone)]
pub struct AdapterStore {
    adapter: AdapterId,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for AdapterStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdapterStore")
            .field("adapter", &self.adapter)
            .finish_non_exhaustive()
    }
}

impl AdapterStore {
    fn key(&self, key: &[u8]) -> Vec<u8> {
        self.prefix().raw(key).build()
    }

    fn prefix(&self) -> Key {
        Key::new(tag::ADAPTER).str(self.adapter.as_str())
    }

    /// The value of `key`.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.shared.store.get(&self.key(key))
    }

    /// Sets `key`; visible at once, durable after [`AdapterStore::flush`].
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let mut batch = Batch::new();
        batch.put(self.key(key), value.to_vec());
        self.shared.apply(batch).map(|_| ())
    }

    /// Sets several keys in one atomic write.
    pub fn put_all(&self, entries: &[(&[u8], &[u8])]) -> Result<(), StoreError> {
        let mut batch = Batch::new();
        for (key, value) in entries {
            batch.put(self.key(key), value.to_vec());
        }
        self.shared.apply(batch).map(|_| ())
    }

    /// Removes `key`.
    pub fn delete(&self, key: &[u8]) -> Result<(), StoreError> {
        let mut batch = Batch::new();
        batch.delete(self.key(key));
        self.shared.apply(batch).map(|_| ())
    }

    /// Removes several keys in one atomic write.
    pub fn delete_all(&self, keys: &[&[u8]]) -> Result<(), StoreError> {
        let mut batch = Batch::new();
        for key in keys {
            batch.delete(self.key(key));
        }
        self.shared.apply(batch).map(|_| ())
    }

    /// Up to `limit` entries whose key starts with `prefix`, in key order (keys without the
    /// namespace).
    pub fn scan(&self, prefix: &[u8], limit: usize) -> Result<Vec<Entry>, StoreError> {
        self.scan_after(prefix, None, limit)
    }

    /// Like [`AdapterStore::scan`], from the first key after `after` (a key as `scan` returns
    /// it): pages through a long prefix.
    pub fn scan_after(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let ns = self.prefix().build();
        let full = self.prefix().raw(prefix).build();
        let after = after.map(|k| self.key(k));
        Ok(self
            .shared
            .store
            .scan(&full, after.as_deref(), limit)?
            .into_iter()
            .map(|(k, v)| (k[ns.len()..].to_vec(), v))
            .collect())
    }

    /// Waits until everything written so far is on stable storage (group commit).
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.shared.commit.wait(self.shared.commit.written()).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunked(parts: &[&'static [u8]], length: Option<u64>) -> AttachmentBody {
        let chunks: Vec<Result<bytes::Bytes, AdapterError>> = parts
            .iter()
            .map(|p| Ok(bytes::Bytes::from_static(p)))
            .collect();
        AttachmentBody {
            length,
            mime: None,
            chunks: Box::pin(futures::stream::iter(chunks)),
        }
    }

    #[tokio::test]
    async fn collect_enforces_the_limit_on_what_arrives() {
        let whole = chunked(&[b"abc", b"def"], None).collect(6).await;
        assert_eq!(whole.ok().as_deref(), Some(&b"abcdef"[..]));
        // The source lied about the length (or gave none): the bytes still count.
        let over = chunked(&[b"abc", b"def"], Some(3)).collect(5).await;
        assert!(matches!(over, Err(AdapterError::Permanent(_))));
        // An announced length over the limit is refused before reading anything.
        let announced = chunked(&[], Some(10)).collect(5).await;
        assert!(matches!(announced, Err(AdapterError::Permanent(_))));
    }
}
