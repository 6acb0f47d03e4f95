//! The delivery engine: ingest, durable outboxes, ordered delivery per link.
//!
//! Inbound (see [`ingest`]): route → echo check → dedup → resolve references → store the event,
//! its ID-map entry and its entry in the room's log in one atomic batch → group commit →
//! acknowledge. Over a durable store the batches of many events and deliveries reach the
//! backend combined ([`crate::store::CombiningStore`]), visible at once all the same. Outbound
//! (see [`outbox`]): one worker per link sends, in acceptance order, its room's log after the
//! link's cursor (and its explicit entries), records the native ID and moves the cursor;
//! retries, dead letters and fallbacks ([`degrade`]) happen there.

mod degrade;
mod ingest;
mod outbox;
mod prune;
pub(crate) mod unlink;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::adapter::{Adapter, AdapterContext};
use crate::capabilities::{Capabilities, CarryPolicy, DegradePolicy};
use crate::durability::GroupCommit;
use crate::ids::{
    AdapterId, EventId, EventIdGenerator, RemoteEventId, RemoteRoomId, RemoteUserId, RoomId,
};
use crate::management::ManagementMessage;
use crate::routing::{Link, Room, RoomSettings, RoutingError, RoutingTable};
use crate::store::keys::{Key, KeyReader, read_pair, tag};
use crate::store::{
    Batch, CombiningStore, FastMap, FastSet, Store, StoreError, check_format, delete_with_prefix,
    for_each_with_prefix,
};

pub use outbox::DeadLetter;
use outbox::LinkQueue;
pub use prune::PruneReport;

/// Retry and queue settings of the delivery engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliverySettings {
    /// Transient failures are retried this many times, then the event is dead-lettered.
    pub max_attempts: u32,
    /// First retry delay; doubled on each attempt, with jitter.
    pub backoff_initial: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Events held in memory per link; the rest wait in the durable outbox.
    pub queue_capacity: usize,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            max_attempts: 12,
            backoff_initial: Duration::from_millis(250),
            backoff_max: Duration::from_secs(60),
            queue_capacity: 1024,
        }
    }
}

/// The core could not start or change its routing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A routing change was refused.
    #[error(transparent)]
    Routing(#[from] RoutingError),
    /// A link names an adapter that is not configured.
    #[error("link {0} names adapter {1:?}, which is not configured")]
    UnknownAdapter(Link, AdapterId),
    /// A carry policy names an adapter that is not registered.
    #[error("a carry policy names adapter {0:?}, which is not configured")]
    UnknownCarryAdapter(AdapterId),
    /// Two adapters have the same ID.
    #[error("adapter {0:?} is registered twice")]
    DuplicateAdapter(AdapterId),
    /// The native room is one of the bridge's management rooms, which are never bridged.
    #[error(
        "{0} is a management room of the bridge (where admins give commands); it cannot be \
         bridged"
    )]
    ManagementRoom(Link),
    /// A configured management room is also linked to a room (a link added at runtime).
    #[error(
        "management room {0} is also linked to room {1}: a management room cannot be bridged; \
         unlink it (`bridge links remove`) or choose another management room"
    )]
    ManagementRoomLinked(Link, RoomId),
}

pub(crate) struct AdapterSlot {
    pub(crate) adapter: Arc<dyn Adapter>,
    pub(crate) caps: Capabilities,
    /// What its links take part in at all (see [`CoreBuilder::adapter_carry`]).
    pub(crate) carry: CarryPolicy,
    connected: AtomicBool,
    /// It has been connected at least once in this process: a later connection is a reconnect.
    ever_connected: AtomicBool,
    /// `bridge_events_in_total` by (kind, outcome), registered on first use.
    inbound: RwLock<HashMap<(&'static str, &'static str), metrics::Counter>>,
}

impl AdapterSlot {
    /// Counts an inbound event (without building label strings once a pair is registered).
    pub(crate) fn count_inbound(
        &self,
        adapter: &AdapterId,
        kind: &'static str,
        outcome: &'static str,
    ) {
        if let Some(counter) = self.inbound.read().get(&(kind, outcome)) {
            counter.increment(1);
            return;
        }
        let counter = metrics::counter!("bridge_events_in_total", "adapter" => adapter.to_string(), "kind" => kind, "outcome" => outcome);
        counter.increment(1);
        self.inbound.write().insert((kind, outcome), counter);
    }
}

/// State shared by the ingest path, the link workers and the adapter contexts.
pub(crate) struct Shared {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) commit: Arc<GroupCommit>,
    ids: EventIdGenerator,
    pub(crate) routing: RwLock<RoutingTable>,
    /// Serialises acceptance: ID issue, the store batch and the queue pushes happen in one
    /// order, which is the delivery order of every link.
    pub(crate) ingest_lock: Mutex<()>,
    pub(crate) adapters: FastMap<AdapterId, AdapterSlot>,
    queues: RwLock<FastMap<Link, Arc<LinkQueue>>>,
    puppets: RwLock<FastMap<AdapterId, FastSet<RemoteUserId>>>,
    /// The newest native ID accepted from each native room in this process (for backfill).
    /// By adapter, then room: updated in place for every accepted event, without new keys.
    pub(crate) last_native: Mutex<FastMap<AdapterId, FastMap<RemoteRoomId, RemoteEventId>>>,
    pub(crate) settings: DeliverySettings,
    pub(crate) default_policy: DegradePolicy,
    pub(crate) default_carry: CarryPolicy,
    pub(crate) shutdown: CancellationToken,
    tracker: TaskTracker,
    /// Serialises the creation of direct-message rooms.
    pub(crate) direct: tokio::sync::Mutex<()>,
    /// Serialises the work removed links left ([`unlink`]).
    pub(crate) settling: tokio::sync::Mutex<()>,
    /// The management rooms (never links; see [`crate::management`]).
    pub(crate) management: HashSet<Link>,
    /// Where their text messages go.
    pub(crate) commands: Option<tokio::sync::mpsc::Sender<ManagementMessage>>,
}

impl Shared {
    /// Links a native room to `room` at runtime (persisted), starts its worker and asks the
    /// adapter to join it.
    pub(crate) async fn add_link(
        self: &Arc<Self>,
        room: &RoomId,
        link: Link,
    ) -> Result<(), CoreError> {
        let Some(slot) = self.adapters.get(&link.adapter) else {
            let adapter = link.adapter.clone();
            return Err(CoreError::UnknownAdapter(link, adapter));
        };
        if self.management.contains(&link) {
            return Err(CoreError::ManagementRoom(link));
        }
        let seq = {
            let _order = self.ingest_lock.lock();
            let mut batch = self.routing.write().add_link(room, link.clone())?;
            // The link's outbox starts after the newest event: under the ingest lock, every
            // later event is greater.
            batch.put(
                ingest::cursor_key(&link),
                self.ids.last().to_bytes().to_vec(),
            );
            self.apply(batch)?
        };
        self.commit.wait(seq).await;
        if self.queue(&link).is_none() {
            self.start_link(link.clone())?;
        }
        if let Err(e) = slot.adapter.join(&link.remote).await {
            tracing::warn!(%link, error = %e, "adapter could not join the newly linked room");
        }
        Ok(())
    }

    /// Applies a batch and numbers it for group commit.
    pub(crate) fn apply(&self, batch: Batch) -> Result<u64, StoreError> {
        self.store.apply(batch)?;
        Ok(self.commit.note_write())
    }

    pub(crate) fn linked_rooms(&self, adapter: &AdapterId) -> Vec<RemoteRoomId> {
        self.routing.read().links_of(adapter)
    }

    /// True when the adapter reported itself connected.
    pub(crate) fn is_connected(&self, adapter: &AdapterId) -> bool {
        (self.adapters.get(adapter)).is_some_and(|slot| slot.connected.load(Ordering::Acquire))
    }

    /// Records the adapter's connection state; true when it just became connected.
    pub(crate) fn set_connected(&self, adapter: &AdapterId, connected: bool) -> bool {
        let Some(slot) = self.adapters.get(adapter) else {
            return false;
        };
        let was = slot.connected.swap(connected, Ordering::AcqRel);
        metrics::gauge!("bridge_adapter_connected", "adapter" => adapter.to_string())
            .set(if connected { 1.0 } else { 0.0 });
        if was && !connected {
            metrics::counter!("bridge_adapter_disconnects_total", "adapter" => adapter.to_string())
                .increment(1);
        }
        // A connection after an earlier one (not the first of the process) is a reconnect.
        if connected && !was && slot.ever_connected.swap(true, Ordering::AcqRel) {
            metrics::counter!("bridge_adapter_reconnects_total", "adapter" => adapter.to_string())
                .increment(1);
        }
        connected && !was
    }

    pub(crate) fn add_puppet(
        &self,
        adapter: &AdapterId,
        user: &RemoteUserId,
    ) -> Result<(), StoreError> {
        if self.is_puppet(adapter, user) {
            return Ok(());
        }
        let mut batch = Batch::new();
        batch.put(puppet_key(adapter, user), Vec::new());
        self.apply(batch)?;
        self.puppets
            .write()
            .entry(adapter.clone())
            .or_default()
            .insert(user.clone());
        Ok(())
    }

    pub(crate) fn is_puppet(&self, adapter: &AdapterId, user: &RemoteUserId) -> bool {
        self.puppets
            .read()
            .get(adapter)
            .is_some_and(|set| set.contains(user))
    }

    pub(crate) fn policy_of(&self, room: &RoomId) -> DegradePolicy {
        self.routing
            .read()
            .room(room)
            .and_then(|r| r.settings.policy)
            .unwrap_or(self.default_policy)
    }

    /// Whether `event` may cross to a link of adapter `target` under the carry policies: the
    /// room's (or the default), the source adapter's and the target adapter's must all let it.
    pub(crate) fn carries(&self, event: &crate::event::Event, target: &AdapterId) -> bool {
        let adapter = |id: &AdapterId| self.adapter_carries(id, &event.kind);
        let room = self
            .routing
            .read()
            .room(&event.room)
            .and_then(|r| r.settings.carry)
            .unwrap_or(self.default_carry);
        room.carries(&event.kind) && adapter(&event.origin.adapter) && adapter(target)
    }

    /// Whether adapter `id`'s own carry policy lets events of `kind` in and out of its rooms.
    pub(crate) fn adapter_carries(&self, id: &AdapterId, kind: &crate::event::EventKind) -> bool {
        self.adapters
            .get(id)
            .is_none_or(|slot| slot.carry.carries(kind))
    }

    fn queue(&self, link: &Link) -> Option<Arc<LinkQueue>> {
        self.queues.read().get(link).cloned()
    }

    /// Starts the worker of a link whose adapter is registered.
    fn start_link(self: &Arc<Self>, link: Link) -> Result<(), StoreError> {
        if !self.adapters.contains_key(&link.adapter) {
            tracing::warn!(%link, "link names an adapter that is not configured; its outbox waits");
            return Ok(());
        }
        let queue = Arc::new(LinkQueue::new(link.clone(), self.settings.queue_capacity));
        let position = outbox::Position::load(self, &link)?;
        queue.count_stored(&*self.store, position.room(), position.cursor())?;
        self.queues.write().insert(link, queue.clone());
        let shared = self.clone();
        self.tracker
            .spawn(async move { outbox::run_worker(shared, queue, position).await });
        Ok(())
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Events asked of [`Adapter::backfill`] per room and call.
const BACKFILL_LIMIT: usize = 500;

/// Forgets old events (see [`prune`]) a minute after the start, then every few hours.
async fn prune_now_and_then(shared: Arc<Shared>, keep: Duration) {
    const TABLES: [&str; 3] = ["events", "native_ids", "dead_letters"];
    for table in TABLES {
        metrics::counter!("bridge_store_pruned_total", "table" => table).increment(0);
    }
    let mut wait = prune::FIRST_AFTER;
    loop {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shared.shutdown.cancelled() => return,
        }
        wait = prune::EVERY;
        let before = std::time::SystemTime::now() - keep;
        let pass = shared.clone();
        match tokio::task::spawn_blocking(move || prune::pass(&pass, before)).await {
            Ok(Ok(report)) => {
                let counts = [report.events, report.native_ids, report.dead_letters];
                for (table, n) in TABLES.into_iter().zip(counts) {
                    metrics::counter!("bridge_store_pruned_total", "table" => table).increment(n);
                }
                tracing::info!(
                    events = report.events,
                    native_ids = report.native_ids,
                    dead_letters = report.dead_letters,
                    "forgot the events older than the retention"
                );
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot forget old events; tried again later"),
            Err(e) => tracing::warn!(error = %e, "the prune pass stopped; tried again later"),
        }
    }
}

/// Asks a freshly connected adapter for what each of its linked rooms missed, and accepts it in
/// order like any inbound event.
pub(crate) async fn backfill(shared: &Arc<Shared>, adapter: &AdapterId) {
    let Some(slot) = shared.adapters.get(adapter) else {
        return;
    };
    for room in shared.linked_rooms(adapter) {
        let after = shared
            .last_native
            .lock()
            .get(adapter)
            .and_then(|rooms| rooms.get(&room))
            .cloned();
        let events = match slot
            .adapter
            .backfill(&room, after.as_ref(), BACKFILL_LIMIT)
            .await
        {
            Ok(events) => events,
            Err(crate::adapter::AdapterError::Unsupported(_)) => return,
            Err(e) => {
                tracing::warn!(%adapter, %room, error = %e, "backfill failed");
                continue;
            }
        };
        let mut last = None;
        for event in events {
            match shared.enqueue(adapter, event, false) {
                Ok(pending) => last = Some(pending),
                Err(e) => {
                    tracing::warn!(%adapter, %room, error = %e, "backfilled event not accepted");
                    break;
                }
            }
        }
        if let Some(pending) = last {
            // Durability is in order: the last one covers the others.
            pending.durable().await;
        }
    }
}

fn config_link_key(link: &Link) -> Vec<u8> {
    Key::new(tag::CONFIG_LINK)
        .str(link.adapter.as_str())
        .str(link.remote.as_str())
        .build()
}

/// The links the configuration declared at the previous start.
fn previously_declared(store: &dyn Store) -> Result<Vec<Link>, StoreError> {
    let mut links = Vec::new();
    for_each_with_prefix(store, &Key::new(tag::CONFIG_LINK).build(), |key, _| {
        if let Some((adapter, remote)) = read_pair(key, tag::CONFIG_LINK) {
            links.push(Link::new(adapter, remote));
        }
        Ok(())
    })?;
    Ok(links)
}

fn puppet_key(adapter: &AdapterId, user: &RemoteUserId) -> Vec<u8> {
    Key::new(tag::PUPPET)
        .str(adapter.as_str())
        .str(user.as_str())
        .build()
}

/// Assembles a [`Core`]: store, settings, adapters and configured rooms.
pub struct CoreBuilder {
    store: Arc<dyn Store>,
    settings: DeliverySettings,
    policy: DegradePolicy,
    carry: CarryPolicy,
    adapters: Vec<(AdapterId, Arc<dyn Adapter>)>,
    adapter_carry: Vec<(AdapterId, CarryPolicy)>,
    rooms: Vec<(RoomId, RoomSettings, Vec<Link>)>,
    management: HashSet<Link>,
    commands: Option<tokio::sync::mpsc::Sender<ManagementMessage>>,
    keep: Option<Duration>,
}

impl std::fmt::Debug for CoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreBuilder")
            .field("settings", &self.settings)
            .field("rooms", &self.rooms.len())
            .finish_non_exhaustive()
    }
}

impl CoreBuilder {
    /// Delivery settings (default: [`DeliverySettings::default`]).
    pub fn settings(mut self, settings: DeliverySettings) -> Self {
        self.settings = settings;
        self
    }

    /// How long bridged events are kept in the store (`None`, the default: for ever). Every
    /// few hours, what was issued before that and nothing needs any more is forgotten (see
    /// [`Core::prune`]).
    pub fn keep_events(mut self, keep: Option<Duration>) -> Self {
        self.keep = keep;
        self
    }

    /// The degradation policy of rooms without their own.
    pub fn default_policy(mut self, policy: DegradePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// What crosses in rooms without their own [`CarryPolicy`] (default: everything).
    pub fn default_carry(mut self, carry: CarryPolicy) -> Self {
        self.carry = carry;
        self
    }

    /// What the native rooms of one adapter take part in at all, in every room (default:
    /// everything): an ephemeral event it withholds neither leaves that adapter's rooms nor
    /// reaches them, whatever the room's own [`CarryPolicy`] says (both must let it cross). For
    /// a network where such events are costly (to a MIMI room each read marker is an MLS
    /// message to every member) or unwelcome. [`Core`] refuses to start if `id` is not
    /// registered with [`CoreBuilder::adapter`].
    pub fn adapter_carry(mut self, id: impl Into<AdapterId>, carry: CarryPolicy) -> Self {
        self.adapter_carry.push((id.into(), carry));
        self
    }

    /// Registers an adapter under its configured ID.
    pub fn adapter(mut self, id: impl Into<AdapterId>, adapter: Arc<dyn Adapter>) -> Self {
        self.adapters.push((id.into(), adapter));
        self
    }

    /// The management rooms, and where their text messages go (see [`crate::management`]):
    /// create the channel with [`crate::management::SINK_CAPACITY`].
    pub fn management(
        mut self,
        rooms: impl IntoIterator<Item = Link>,
        sink: tokio::sync::mpsc::Sender<ManagementMessage>,
    ) -> Self {
        self.management.extend(rooms);
        self.commands = Some(sink);
        self
    }

    /// A configured room and its links (merged with the stored routing table at start).
    pub fn room(mut self, id: impl Into<RoomId>, settings: RoomSettings, links: Vec<Link>) -> Self {
        self.rooms.push((id.into(), settings, links));
        self
    }

    /// Opens the routing table, starts the flusher, a worker per link and every adapter.
    pub async fn start(mut self) -> Result<Core, CoreError> {
        // Over a durable store, small batches are combined before they reach it, and a flush
        // syncs a journal instead of the store when the store has a place for one (opening it
        // replays what a crash made the store lose, so this comes before anything is read).
        if self.store.is_durable() {
            self.store = Arc::new(CombiningStore::open(self.store)?);
        }
        check_format(&*self.store)?;
        let mut routing = RoutingTable::load(&*self.store)?;
        let mut adapters = FastMap::default();
        for (id, adapter) in self.adapters {
            let caps = adapter.capabilities();
            let slot = AdapterSlot {
                adapter,
                caps,
                carry: CarryPolicy::default(),
                connected: AtomicBool::new(false),
                ever_connected: AtomicBool::new(false),
                inbound: RwLock::new(HashMap::new()),
            };
            if adapters.insert(id.clone(), slot).is_some() {
                return Err(CoreError::DuplicateAdapter(id));
            }
            crate::telemetry::register_adapter(&id);
        }
        for (id, carry) in self.adapter_carry {
            match adapters.get_mut(&id) {
                Some(slot) => slot.carry = carry,
                None => return Err(CoreError::UnknownCarryAdapter(id)),
            }
        }
        let mut batch = Batch::new();
        // The config is the source of truth for the links it declares: a link it declared at
        // the last start and no longer does is unlinked (with its outbox), and what that
        // leaves to do on the networks is recorded once the configured links are in place
        // (`unlink`). Runtime links stay.
        let mut removed = Vec::new();
        let declared: HashSet<Link> = self
            .rooms
            .iter()
            .flat_map(|(_, _, links)| links.iter().cloned())
            .collect();
        for link in previously_declared(&*self.store)? {
            if declared.contains(&link) {
                continue;
            }
            if let Ok((room, unlink)) = routing.remove_link(&link) {
                tracing::info!(%link, %room, "link removed from the configuration: unlinked");
                batch.extend(unlink);
                removed.push((room, link.clone()));
            }
            batch.delete(config_link_key(&link));
            batch.delete(ingest::cursor_key(&link));
            let prefix = ingest::outbox_prefix(&link).build();
            delete_with_prefix(&*self.store, &prefix, |page| self.store.apply(page))?;
        }
        for link in &declared {
            batch.put(config_link_key(link), Vec::new());
        }
        for (room, settings, links) in self.rooms {
            let mut ops = routing.put_room(&room, settings).into_ops();
            for link in links {
                if !adapters.contains_key(&link.adapter) {
                    let adapter = link.adapter.clone();
                    return Err(CoreError::UnknownAdapter(link, adapter));
                }
                ops.extend(routing.add_link(&room, link)?.into_ops());
            }
            for (k, v) in ops {
                match v {
                    Some(v) => batch.put(k, v),
                    None => batch.delete(k),
                }
            }
        }
        unlink::drop_orphans(&*self.store, |a| adapters.contains_key(a), &mut batch)?;
        for (room, link) in &removed {
            let leave = adapters.contains_key(&link.adapter);
            unlink::record(&routing, room, link, leave, &mut batch);
        }
        for link in &self.management {
            if !adapters.contains_key(&link.adapter) {
                let adapter = link.adapter.clone();
                return Err(CoreError::UnknownAdapter(link.clone(), adapter));
            }
            if let Some(room) = routing.room_of(&link.adapter, &link.remote) {
                return Err(CoreError::ManagementRoomLinked(link.clone(), room.clone()));
            }
        }
        // Every link follows its room's log from its cursor. A link without one (linked while
        // the bridge was stopped, or every link of a store of format 2 or older, whose pending
        // deliveries are explicit `O` entries) starts after the newest stored event; the
        // cursors of links that are gone are dropped.
        let floor = self
            .store
            .last(&Key::new(tag::EVENT).build())?
            .and_then(|(k, _)| KeyReader::new(&k, tag::EVENT).and_then(|mut r| r.id()));
        let linked: HashSet<Link> = routing.all_links().map(|(_, l)| l.clone()).collect();
        let mut with_cursor = HashSet::new();
        for_each_with_prefix(&*self.store, &Key::new(tag::CURSOR).build(), |key, _| {
            if let Some((adapter, remote)) = read_pair(key, tag::CURSOR) {
                let link = Link::new(adapter, remote);
                if !linked.contains(&link) {
                    batch.delete(key.to_vec());
                }
                with_cursor.insert(link);
            }
            Ok(())
        })?;
        let start = floor.unwrap_or(EventId::from_u128(0)).to_bytes();
        for link in linked.difference(&with_cursor) {
            batch.put(ingest::cursor_key(link), start.to_vec());
        }
        self.store.apply(batch)?;

        let mut puppets: FastMap<AdapterId, FastSet<RemoteUserId>> = FastMap::default();
        for_each_with_prefix(&*self.store, &Key::new(tag::PUPPET).build(), |key, _| {
            if let Some((adapter, user)) = read_pair(key, tag::PUPPET) {
                puppets
                    .entry(AdapterId::new(adapter))
                    .or_default()
                    .insert(RemoteUserId::new(user));
            }
            Ok(())
        })?;

        let commit = GroupCommit::new(self.store.clone());
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let links: Vec<Link> = routing.all_links().map(|(_, l)| l.clone()).collect();
        let shared = Arc::new(Shared {
            store: self.store,
            commit: commit.clone(),
            ids: EventIdGenerator::after(floor),
            routing: RwLock::new(routing),
            ingest_lock: Mutex::new(()),
            adapters,
            queues: RwLock::new(FastMap::default()),
            puppets: RwLock::new(puppets),
            last_native: Mutex::new(FastMap::default()),
            settings: self.settings,
            default_policy: self.policy,
            default_carry: self.carry,
            shutdown: shutdown.clone(),
            tracker: tracker.clone(),
            direct: tokio::sync::Mutex::new(()),
            settling: tokio::sync::Mutex::new(()),
            management: self.management,
            commands: self.commands,
        });
        commit.flush_now().await?;
        // Stopped in this order at shutdown: workers, then adapters, then the flusher.
        let stop_adapters = CancellationToken::new();
        let stop_flusher = CancellationToken::new();
        let flusher = tokio::spawn(commit.run(stop_flusher.clone()));
        if let Some(keep) = self.keep {
            tracker.spawn(prune_now_and_then(shared.clone(), keep));
        }
        for link in links {
            shared.start_link(link)?;
        }
        let mut adapter_tasks = Vec::new();
        for (id, slot) in &shared.adapters {
            let ctx = AdapterContext::new(id.clone(), shared.clone(), stop_adapters.child_token());
            let adapter = slot.adapter.clone();
            let id = id.clone();
            adapter_tasks.push(tokio::spawn(async move {
                if let Err(e) = adapter.run(ctx).await {
                    tracing::error!(adapter = %id, error = %e, "adapter stopped with an error");
                }
            }));
        }
        Ok(Core {
            shared,
            flusher,
            adapter_tasks,
            stop_adapters,
            stop_flusher,
        })
    }
}

/// How long an adapter's send in flight at shutdown may still take.
pub(crate) const SEND_GRACE: Duration = Duration::from_secs(5);

/// A running bridge core.
pub struct Core {
    shared: Arc<Shared>,
    flusher: tokio::task::JoinHandle<()>,
    adapter_tasks: Vec<tokio::task::JoinHandle<()>>,
    stop_adapters: CancellationToken,
    stop_flusher: CancellationToken,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core").finish_non_exhaustive()
    }
}

/// One neutral room as shown to admins.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomStatus {
    /// The room.
    pub id: RoomId,
    /// Its name.
    pub name: Option<String>,
    /// Its links, each with the number of events waiting in its outbox.
    pub links: Vec<(Link, u64)>,
}

impl Core {
    /// A builder over `store`.
    pub fn builder(store: Arc<dyn Store>) -> CoreBuilder {
        CoreBuilder {
            store,
            settings: DeliverySettings::default(),
            policy: DegradePolicy::default(),
            carry: CarryPolicy::default(),
            adapters: Vec::new(),
            adapter_carry: Vec::new(),
            rooms: Vec::new(),
            management: HashSet::new(),
            commands: None,
            keep: None,
        }
    }

    /// Links a native room to a neutral room at runtime (persisted); the adapter joins it.
    pub async fn add_link(&self, room: &RoomId, link: Link) -> Result<(), CoreError> {
        self.shared.add_link(room, link).await
    }

    /// Unlinks a native room at runtime (persisted): its worker stops, its outbox is dropped,
    /// and the adapter leaves the room. Unless the adapter has another link in the same room,
    /// the room's other adapters are told that its users no longer reach their native rooms
    /// ([`Adapter::source_unlinked`]), so that their puppets leave.
    pub async fn remove_link(&self, link: &Link) -> Result<RoomId, CoreError> {
        let (room, batch, others) = {
            let _order = self.shared.ingest_lock.lock();
            let mut routing = self.shared.routing.write();
            let (room, mut batch) = routing.remove_link(link)?;
            unlink::record(&routing, &room, link, true, &mut batch);
            let others: Vec<AdapterId> = (routing.room(&room).into_iter())
                .flat_map(|r| r.links.iter().map(|l| l.adapter.clone()))
                .collect();
            (room, batch, others)
        };
        let seq = self.shared.apply(batch)?;
        self.shared.commit.wait(seq).await;
        if let Some(queue) = self.shared.queues.write().remove(link) {
            queue.close();
            outbox::drop_outbox(&self.shared, link)?;
        }
        // The adapter leaves first, then the others' puppets of its users; an adapter that is
        // not connected does its part at its next connection.
        let mut adapters = vec![link.adapter.clone()];
        for adapter in others {
            if !adapters.contains(&adapter) {
                adapters.push(adapter);
            }
        }
        for adapter in adapters {
            if self.shared.is_connected(&adapter) {
                unlink::settle(&self.shared, &adapter).await;
            }
        }
        Ok(room)
    }

    /// Forgets the events issued before `before` that nothing needs any more: their content,
    /// room log entries, copies' native IDs and reactions, and the native IDs leading to them;
    /// also dead letters given up before then. Kept: whatever a link has not handled yet, and
    /// the events of dead letters and of outbox entries. Runs on a blocking thread. The core
    /// does this by itself every few hours when built with [`CoreBuilder::keep_events`].
    pub async fn prune(&self, before: std::time::SystemTime) -> Result<PruneReport, StoreError> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || prune::pass(&shared, before))
            .await
            .map_err(|e| StoreError::Backend(format!("the prune pass stopped: {e}")))?
    }

    /// Every room with its links and outbox depths.
    pub fn status(&self) -> Vec<RoomStatus> {
        let routing = self.shared.routing.read();
        routing
            .rooms()
            .into_iter()
            .map(|room: &Room| RoomStatus {
                id: room.id.clone(),
                name: room.settings.name.clone(),
                links: room
                    .links
                    .iter()
                    .map(|l| {
                        let depth = self.shared.queue(l).map_or(0, |q| q.depth());
                        (l.clone(), depth)
                    })
                    .collect(),
            })
            .collect()
    }

    /// True when every adapter reports itself connected.
    pub fn is_ready(&self) -> bool {
        self.shared
            .adapters
            .values()
            .all(|s| s.connected.load(Ordering::Acquire))
    }

    /// Every adapter with whether it reports itself connected, sorted by ID: what
    /// [`Core::is_ready`] sums up, for a readiness probe that says which are not.
    pub fn adapter_connections(&self) -> Vec<(AdapterId, bool)> {
        let mut adapters: Vec<(AdapterId, bool)> = self
            .shared
            .adapters
            .iter()
            .map(|(id, slot)| (id.clone(), slot.connected.load(Ordering::Acquire)))
            .collect();
        adapters.sort();
        adapters
    }

    /// The dead letters, oldest first.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        outbox::dead_letters(&self.shared)
    }

    /// Moves every dead letter back into its link's outbox; returns how many.
    pub async fn retry_dead_letters(&self) -> Result<usize, StoreError> {
        outbox::retry_dead_letters(&self.shared, |_| true).await
    }

    /// Moves the dead letters of `room`'s links back into their outboxes; returns how many.
    pub async fn retry_dead_letters_of(&self, room: &RoomId) -> Result<usize, StoreError> {
        let links: HashSet<Link> = self
            .shared
            .routing
            .read()
            .room(room)
            .map(|r| r.links.iter().cloned().collect())
            .unwrap_or_default();
        outbox::retry_dead_letters(&self.shared, |link| links.contains(link)).await
    }

    /// Sends `text` into a management room as a notice from the bridge itself
    /// ([`Adapter::send_notice`]): the answer to an admin command.
    pub async fn send_notice(
        &self,
        room: &Link,
        text: &str,
    ) -> Result<(), crate::adapter::AdapterError> {
        match self.shared.adapters.get(&room.adapter) {
            Some(slot) => slot.adapter.send_notice(&room.remote, text).await,
            None => Err(crate::adapter::AdapterError::Permanent(format!(
                "no adapter {} to answer in {}",
                room.adapter, room.remote
            ))),
        }
    }

    /// The management rooms (see [`crate::management`]).
    pub fn management_rooms(&self) -> Vec<Link> {
        let mut rooms: Vec<Link> = self.shared.management.iter().cloned().collect();
        rooms.sort_by(|a, b| (&a.adapter, &a.remote).cmp(&(&b.adapter, &b.remote)));
        rooms
    }

    /// Looks up the event stored under `id`.
    pub fn event(&self, id: EventId) -> Result<Option<crate::event::Event>, StoreError> {
        ingest::load_event(&*self.shared.store, id)
    }

    /// Stops adapters and workers, then flushes the store. In-flight sends are abandoned and
    /// resumed from the outbox at the next start (sends are idempotent).
    pub async fn shutdown(self) {
        // Workers first: they take nothing new, and a send already in flight may finish (within
        // `SEND_GRACE`), since abandoning it could make a protocol without idempotency keys (a
        // MUC) show the message twice after the restart. Their adapters are still running.
        self.shared.shutdown.cancel();
        self.shared.tracker.close();
        if tokio::time::timeout(
            SEND_GRACE + Duration::from_secs(5),
            self.shared.tracker.wait(),
        )
        .await
        .is_err()
        {
            tracing::warn!("link workers did not stop in time");
        }
        self.stop_adapters.cancel();
        for task in self.adapter_tasks {
            if tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .is_err()
            {
                tracing::warn!("an adapter did not stop within 10 s");
            }
        }
        self.stop_flusher.cancel();
        let _ = self.flusher.await;
        if let Err(e) = self.shared.commit.flush_now().await {
            tracing::error!(error = %e, "final flush failed");
        }
    }
}
