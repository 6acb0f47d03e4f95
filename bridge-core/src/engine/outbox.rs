//! One worker per link delivers that link's outbox in acceptance order (I4), with retries,
//! dead letters, and a bounded in-memory window so that a slow or dead adapter holds at most
//! `queue_capacity` events in memory and never blocks anyone else (I5).
//!
//! A link's outbox is its room's log (`G`) after the link's cursor (`K`), less the events that
//! came from the link itself, plus its explicit entries (`O`: dead letters put back, and what a
//! store of format 2 or older left), which are read first (see [`crate::store::keys`]).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::Shared;
use super::degrade::{Prepared, prepare};
use super::ingest::{
    Provenance, cursor_key, is_from, load_event, map_ids, n2r_key, outbox_key, outbox_prefix,
    room_log_key, room_log_prefix,
};
use crate::adapter::{AdapterError, Delivered};
use crate::capabilities::CarryPolicy;
use crate::event::Event;
use crate::ids::{EventId, RoomId};
use crate::routing::Link;
use crate::store::keys::{CURSOR_EVERY, Key, KeyReader, id_value, tag};
use crate::store::{Batch, Store, StoreError, delete_with_prefix, for_each_with_prefix};

/// An accepted event waiting for one link.
pub(crate) struct QueueItem {
    pub(crate) event: Arc<Event>,
    /// The group-commit number to wait for before sending (0: nothing to wait for).
    pub(crate) seq: u64,
    /// An explicit entry (`O`), removed once handled, outside the room log and its cursor.
    pub(crate) explicit: bool,
}

struct Window {
    items: VecDeque<QueueItem>,
    /// Entries exist in the store that are not in `items`: reload when `items` runs dry.
    overflow: bool,
    /// Pushes refused since the last reload started (to know whether a reload saw them).
    missed: u64,
    /// Explicit entries (`O`) may wait in the store: read them before the log.
    explicit: bool,
}

/// The in-memory window of one link's outbox.
pub(crate) struct LinkQueue {
    pub(crate) link: Link,
    window: Mutex<Window>,
    notify: Notify,
    capacity: usize,
    depth: AtomicU64,
    closed: AtomicBool,
    rewind: AtomicBool,
    depth_gauge: metrics::Gauge,
}

impl LinkQueue {
    pub(crate) fn new(link: Link, capacity: usize) -> Self {
        Self {
            window: Mutex::new(Window {
                items: VecDeque::new(),
                // Whatever a previous run left in the outbox is loaded first.
                overflow: true,
                missed: 0,
                explicit: true,
            }),
            notify: Notify::new(),
            capacity: capacity.max(1),
            depth: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            rewind: AtomicBool::new(false),
            depth_gauge: metrics::gauge!("bridge_outbox_depth", "adapter" => link.adapter.to_string(), "remote" => link.remote.to_string()),
            link,
        }
    }

    /// Counts the entries waiting in the store: explicit ones, and the entries of `room`'s log
    /// after `after` that did not come from this link (some of which an earlier run may have
    /// delivered after it last stored its cursor: they are uncounted when found).
    pub(crate) fn count_stored(
        &self,
        store: &dyn Store,
        room: Option<&RoomId>,
        after: EventId,
    ) -> Result<(), StoreError> {
        let prefix = outbox_prefix(&self.link).build();
        let mut count = 0u64;
        for_each_with_prefix(store, &prefix, |_, _| {
            count += 1;
            Ok(())
        })?;
        if let Some(room) = room {
            let prefix = room_log_prefix(room).build();
            let mut from = Some(room_log_key(room, after));
            loop {
                let page = store.scan(&prefix, from.as_deref(), 1024)?;
                count += page
                    .iter()
                    .filter(|(_, origin)| !is_from(origin, &self.link))
                    .count() as u64;
                if page.len() < 1024 {
                    break;
                }
                from = page.last().map(|(k, _)| k.clone());
            }
        }
        self.depth.store(count, Ordering::Release);
        self.report_depth();
        Ok(())
    }

    fn report_depth(&self) {
        // A removed link's outbox is gone: its gauge reads 0 rather than its last depth.
        let depth = if self.closed.load(Ordering::Acquire) {
            0
        } else {
            self.depth.load(Ordering::Acquire)
        };
        self.depth_gauge.set(depth as f64);
    }

    /// Events waiting for this link (in memory and in the store).
    pub(crate) fn depth(&self) -> u64 {
        self.depth.load(Ordering::Acquire)
    }

    /// Called by ingest, in acceptance order.
    pub(crate) fn push(&self, item: QueueItem) {
        let ephemeral = item.seq == 0 && item.event.kind.is_ephemeral();
        // The worker waits only on an empty window that did not overflow: a push into a
        // window that holds items (or a refused one) needs no wake-up.
        let wake = {
            let mut w = self.window.lock();
            if !ephemeral {
                self.depth.fetch_add(1, Ordering::AcqRel);
            }
            if w.overflow || w.items.len() >= self.capacity {
                if ephemeral {
                    metrics::counter!("bridge_ephemeral_dropped_total", "adapter" => self.link.adapter.to_string())
                        .increment(1);
                } else {
                    w.overflow = true;
                    w.missed += 1;
                }
                false
            } else {
                w.items.push_back(item);
                w.items.len() == 1
            }
        };
        if wake {
            self.notify.notify_one();
        }
    }

    /// Makes the worker forget its window and reread the whole outbox (after dead letters were
    /// put back into it).
    pub(crate) fn rewind(&self) {
        {
            let mut w = self.window.lock();
            w.items.clear();
            w.overflow = true;
            w.missed += 1;
            w.explicit = true;
        }
        self.rewind.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.report_depth();
        self.notify.notify_one();
    }

    fn done_one(&self) {
        self.depth.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An event that could not be delivered to one link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The link it was meant for.
    pub link: Link,
    /// The event.
    pub event: EventId,
    /// The last error.
    pub error: String,
    /// How many sends were tried.
    pub attempts: u32,
    /// When it was given up (ms since the Unix epoch).
    pub at_ms: u64,
}

#[derive(Serialize, Deserialize)]
struct DeadValue {
    error: String,
    attempts: u32,
    at_ms: u64,
}

fn dead_key(link: &Link, id: EventId) -> Vec<u8> {
    Key::new(tag::DEAD)
        .str(link.adapter.as_str())
        .str(link.remote.as_str())
        .id(id)
        .build()
}

/// Where a link's worker is in its room's log.
pub(crate) struct Position {
    /// The room whose log the link reads (`None`: the link is not routed any more).
    room: Option<RoomId>,
    /// Every log entry up to this one is handled (delivered, skipped, dead-lettered, or not
    /// for this link).
    handled: EventId,
    /// The newest log entry read back from the store: those up to it are handled or in the
    /// window.
    read: EventId,
    /// The cursor as stored.
    saved: EventId,
    /// Log entries handled since the cursor was stored.
    unsaved: u32,
    /// Log entries up to this one may have been delivered by an earlier run after it stored
    /// its cursor (the newest event when the worker started).
    recovered: EventId,
    /// The last explicit entry read in this pass over them.
    explicit_after: Option<Vec<u8>>,
    /// A delivery could not be recorded: the cursor is not stored again in this run, so that
    /// the next one delivers that entry again.
    frozen: bool,
}

impl Position {
    /// The position of `link`'s worker as stored.
    pub(crate) fn load(shared: &Shared, link: &Link) -> Result<Self, StoreError> {
        let stored = shared
            .store
            .get(&cursor_key(link))?
            .and_then(|v| id_value(&v));
        let recovered = shared.ids.last();
        let cursor = match stored {
            Some(cursor) => cursor,
            None => {
                // Every path that links a room stores a cursor with it; should one be missing,
                // the link starts at the newest event rather than at the room's whole history.
                tracing::warn!(%link, "link without a cursor in its room's log; starting at the newest event");
                let _order = shared.ingest_lock.lock();
                let newest = shared.ids.last();
                let mut batch = Batch::new();
                batch.put(cursor_key(link), newest.to_bytes().to_vec());
                shared.apply(batch)?;
                newest
            }
        };
        let room = shared
            .routing
            .read()
            .room_of(&link.adapter, &link.remote)
            .cloned();
        Ok(Self {
            room,
            handled: cursor,
            read: cursor,
            saved: cursor,
            unsaved: 0,
            recovered,
            explicit_after: None,
            frozen: false,
        })
    }

    pub(crate) fn room(&self) -> Option<&RoomId> {
        self.room.as_ref()
    }

    pub(crate) fn cursor(&self) -> EventId {
        self.saved
    }

    /// Records that log entry `id` is handled; true when the cursor should be stored now
    /// (`eager`, or after [`CURSOR_EVERY`] entries).
    fn handle(&mut self, id: EventId, eager: bool) -> bool {
        self.handled = id;
        self.unsaved += 1;
        if !self.frozen && (eager || self.unsaved >= CURSOR_EVERY) {
            self.saved = id;
            self.unsaved = 0;
            true
        } else {
            false
        }
    }
}

/// Waits for the next item of `queue`, reloading from the store when the window overflowed.
async fn next_item(
    shared: &Shared,
    queue: &LinkQueue,
    pos: &mut Position,
) -> Result<Option<QueueItem>, StoreError> {
    loop {
        if queue.closed.load(Ordering::Acquire) || shared.shutdown.is_cancelled() {
            return Ok(None);
        }
        if queue.rewind.swap(false, Ordering::AcqRel) {
            // The window was dropped: read the explicit entries again, and the log after what
            // is handled.
            pos.read = pos.handled;
            pos.explicit_after = None;
            queue.window.lock().explicit = true;
            queue.count_stored(&*shared.store, pos.room.as_ref(), pos.handled)?;
        }
        let (reload_from, explicit) = {
            let mut w = queue.window.lock();
            if let Some(item) = w.items.pop_front() {
                return Ok(Some(item));
            }
            if !w.overflow {
                // Everything read back is handled by now (the log entries that were not for
                // this link included).
                pos.handled = pos.handled.max(pos.read);
            }
            (w.overflow.then_some(w.missed), w.explicit)
        };
        let Some(missed_before) = reload_from else {
            tokio::select! {
                () = queue.notify.notified() => {}
                () = shared.shutdown.cancelled() => return Ok(None),
            }
            continue;
        };
        let mut items = VecDeque::new();
        let mut batch = Batch::new();
        let full;
        if explicit {
            let prefix = outbox_prefix(&queue.link).build();
            let page = shared
                .store
                .scan(&prefix, pos.explicit_after.as_deref(), queue.capacity)?;
            let seq = written_under_ingest_lock(shared);
            for (key, _) in &page {
                let Some(id) = KeyReader::new(key, tag::OUTBOX).and_then(|mut r| {
                    r.str()?;
                    r.str()?;
                    r.id()
                }) else {
                    continue;
                };
                match load_event(&*shared.store, id)? {
                    Some(event) => items.push_back(QueueItem {
                        event: Arc::new(event),
                        seq,
                        explicit: true,
                    }),
                    None => {
                        tracing::error!(link = %queue.link, event = %id, "outbox entry without its event; dropped");
                        batch.delete(key.clone());
                        queue.done_one();
                    }
                }
            }
            pos.explicit_after = page
                .last()
                .map(|(k, _)| k.clone())
                .or(pos.explicit_after.take());
            full = page.len() >= queue.capacity;
            if !full {
                // A rewind meanwhile sets it again (and resets where explicit entries are read).
                queue.window.lock().explicit = false;
            }
            // The log is read after the explicit entries: `overflow` stays set.
        } else if let Some(room) = &pos.room {
            let prefix = room_log_prefix(room).build();
            let after = room_log_key(room, pos.read.max(pos.handled));
            let page = shared.store.scan(&prefix, Some(&after), queue.capacity)?;
            let seq = written_under_ingest_lock(shared);
            for (key, origin) in &page {
                let Some(id) = KeyReader::new(key, tag::ROOM_LOG).and_then(|mut r| {
                    r.str()?;
                    r.id()
                }) else {
                    continue;
                };
                pos.read = id;
                if is_from(origin, &queue.link) {
                    continue;
                }
                if id <= pos.recovered
                    && shared
                        .store
                        .get(&n2r_key(id, &queue.link.adapter, &queue.link.remote))?
                        .is_some()
                {
                    // Delivered by an earlier run after it last stored the cursor.
                    queue.done_one();
                    continue;
                }
                match load_event(&*shared.store, id)? {
                    Some(event) => items.push_back(QueueItem {
                        event: Arc::new(event),
                        seq,
                        explicit: false,
                    }),
                    None => {
                        tracing::error!(link = %queue.link, event = %id, "room log entry without its event; skipped");
                        queue.done_one();
                    }
                }
            }
            full = page.len() >= queue.capacity;
        } else {
            full = false;
        }
        if !batch.is_empty() {
            shared.apply(batch)?;
        }
        let mut w = queue.window.lock();
        if !explicit && !full && w.missed == missed_before {
            w.overflow = false;
        }
        // Nothing was pushed while `overflow` was set, so the window is empty here.
        items.extend(w.items.drain(..));
        w.items = items;
    }
}

/// The group-commit number covering every write made so far under the ingest lock: a page
/// just read saw only writes applied under that lock before it is taken.
fn written_under_ingest_lock(shared: &Shared) -> u64 {
    let _order = shared.ingest_lock.lock();
    shared.commit.written()
}

/// The longest wait a far side's "retry after" is honoured for (or the longest backoff, if that
/// is longer): a peer or server that asks for more (by mistake, or to stall a link for years
/// with `Retry-After: 18446744073709551615`) is asked again after this.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// How long to wait after a transient failure: what the far side asked for, within bounds, or
/// the backoff for `attempt`.
fn retry_delay(shared: &Shared, asked: Option<Duration>, attempt: u32) -> Duration {
    match asked {
        Some(asked) => honoured(asked, shared.settings.backoff_max),
        None => backoff(shared, attempt),
    }
}

/// The part of a far side's "retry after" `asked` that is honoured.
fn honoured(asked: Duration, backoff_max: Duration) -> Duration {
    asked.min(MAX_RETRY_AFTER.max(backoff_max))
}

/// Delay before retry `attempt` (1-based): exponential with "equal jitter".
fn backoff(shared: &Shared, attempt: u32) -> Duration {
    let base = shared.settings.backoff_initial.as_millis() as u64;
    let max = shared.settings.backoff_max.as_millis() as u64;
    let exp = base
        .saturating_mul(1u64 << attempt.saturating_sub(1).min(30))
        .min(max)
        .max(1);
    let half = exp / 2;
    Duration::from_millis(half + rand::random_range(0..=exp - half))
}

/// The per-delivery metrics of one link, registered once per event kind (not per event).
struct LinkMetrics {
    adapter: String,
    by_kind: HashMap<&'static str, KindMetrics>,
    latency: metrics::Histogram,
}

struct KindMetrics {
    out: metrics::Counter,
    send_seconds: metrics::Histogram,
}

impl LinkMetrics {
    fn new(link: &Link) -> Self {
        let adapter = link.adapter.to_string();
        Self {
            latency: metrics::histogram!("bridge_delivery_latency_seconds", "adapter" => adapter.clone()),
            adapter,
            by_kind: HashMap::new(),
        }
    }

    fn labels(&self, kind: &'static str) -> [(&'static str, String); 2] {
        [("adapter", self.adapter.clone()), ("kind", kind.to_owned())]
    }

    fn kind(&mut self, kind: &'static str) -> &KindMetrics {
        if !self.by_kind.contains_key(kind) {
            let labels = self.labels(kind);
            let metrics = KindMetrics {
                out: metrics::counter!("bridge_events_out_total", &labels),
                send_seconds: metrics::histogram!("bridge_send_seconds", &labels),
            };
            self.by_kind.insert(kind, metrics);
        }
        &self.by_kind[kind]
    }
}

/// The worker of one link: runs until shutdown or until the link is removed.
pub(crate) async fn run_worker(shared: Arc<Shared>, queue: Arc<LinkQueue>, mut pos: Position) {
    let Some(slot) = shared.adapters.get(&queue.link.adapter) else {
        return;
    };
    let adapter = slot.adapter.clone();
    let caps = slot.caps.clone();
    let mut metrics = LinkMetrics::new(&queue.link);
    loop {
        let item = match next_item(&shared, &queue, &mut pos).await {
            Ok(Some(item)) => item,
            Ok(None) => break,
            Err(e) => {
                tracing::error!(link = %queue.link, error = %e, "cannot read the outbox; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let event = item.event;
        let ephemeral = event.kind.is_ephemeral();
        if !ephemeral {
            // A reload may overlap with items pushed meanwhile: skip what is already handled.
            if !item.explicit && event.id <= pos.handled {
                continue;
            }
            shared.commit.wait(item.seq).await;
        }
        let policy = shared.policy_of(&event.room);
        let span = tracing::debug_span!("deliver", link = %queue.link, event = %event.id, kind = event.kind.name());
        let _enter = span.enter();
        // Ephemeral kinds were held back at ingest already (they are not stored); a stored
        // kind the carry policies govern (a role) is held back here, where a reload of the
        // room's log finds it too.
        let outcome = if !ephemeral
            && CarryPolicy::governs(&event.kind)
            && !shared.carries(&event, &queue.link.adapter)
        {
            metrics::counter!("bridge_events_withheld_total", "adapter" => event.origin.adapter.to_string(), "kind" => event.kind.name())
                .increment(1);
            Outcome::Skipped
        } else {
            deliver(
                &shared,
                &queue,
                &mut metrics,
                &*adapter,
                &caps,
                &policy,
                &event,
            )
            .await
        };
        drop(_enter);
        if ephemeral {
            continue;
        }
        let entry = Entry {
            link: &queue.link,
            id: event.id,
            explicit: item.explicit,
        };
        let result = match outcome {
            Outcome::Delivered(delivered) => finish(&shared, &entry, &mut pos, &delivered),
            Outcome::Skipped => finish(&shared, &entry, &mut pos, &Delivered::default()),
            Outcome::Dead { error, attempts } => bury(&shared, &entry, &mut pos, error, attempts),
            Outcome::Stopped => break,
        };
        match result {
            Ok(()) => {
                queue.done_one();
                queue.report_depth();
            }
            Err(e) => {
                // The entry stays in the store and is retried after a restart: the cursor is
                // not stored again in this run.
                tracing::error!(link = %queue.link, error = %e, "cannot record a delivery");
                pos.frozen = true;
            }
        }
    }
    // At shutdown, where the link is (a removed link's cursor is gone with its outbox).
    if !queue.closed.load(Ordering::Acquire) && !pos.frozen && pos.handled > pos.saved {
        let mut batch = Batch::new();
        batch.put(cursor_key(&queue.link), pos.handled.to_bytes().to_vec());
        if let Err(e) = shared.apply(batch) {
            tracing::warn!(link = %queue.link, error = %e, "cannot store the link's cursor");
        }
    }
}

/// An entry of a link's outbox being handled.
struct Entry<'a> {
    link: &'a Link,
    id: EventId,
    /// An `O` entry (else the room log's).
    explicit: bool,
}

enum Outcome {
    Delivered(Delivered),
    Skipped,
    Dead { error: String, attempts: u32 },
    Stopped,
}

async fn deliver(
    shared: &Shared,
    queue: &LinkQueue,
    metrics: &mut LinkMetrics,
    adapter: &dyn crate::adapter::Adapter,
    caps: &crate::capabilities::Capabilities,
    policy: &crate::capabilities::DegradePolicy,
    event: &Event,
) -> Outcome {
    let link = &queue.link;
    let kind = event.kind.name();
    let mut force_text = false;
    let mut attempts = 0u32;
    loop {
        let outbound = match prepare(shared, link, caps, policy, event, force_text) {
            Ok(Prepared::Send(out)) => out,
            Ok(Prepared::Skip(reason)) => {
                metrics::counter!("bridge_events_skipped_total", &metrics.labels(kind))
                    .increment(1);
                tracing::debug!(reason, "not delivered to this link");
                return Outcome::Skipped;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot prepare the event; retrying");
                attempts += 1;
                tokio::time::sleep(backoff(shared, attempts)).await;
                continue;
            }
        };
        attempts += 1;
        let started = std::time::Instant::now();
        let result = tokio::select! {
            r = adapter.send(*outbound) => r,
            // At shutdown a send in flight may still finish (see `Core::shutdown`).
            () = async {
                shared.shutdown.cancelled().await;
                tokio::time::sleep(super::SEND_GRACE).await;
            } => return Outcome::Stopped,
        };
        let by_kind = metrics.kind(kind);
        by_kind.send_seconds.record(started.elapsed());
        let delay = match result {
            Ok(delivered) => {
                by_kind.out.increment(1);
                let age_ms = super::now_ms().saturating_sub(event.id.timestamp_ms());
                metrics.latency.record(age_ms as f64 / 1000.0);
                return Outcome::Delivered(delivered);
            }
            Err(AdapterError::Unsupported(why)) if !force_text => {
                tracing::info!(%why, "adapter refused the event; sending a text fallback");
                force_text = true;
                continue;
            }
            Err(AdapterError::Unsupported(why)) => {
                metrics::counter!("bridge_events_skipped_total", &metrics.labels(kind))
                    .increment(1);
                tracing::info!(%why, "adapter refused even the text fallback; dropped");
                return Outcome::Skipped;
            }
            Err(AdapterError::Permanent(why)) => {
                return Outcome::Dead {
                    error: why,
                    attempts,
                };
            }
            Err(AdapterError::Auth(why)) => {
                // Credentials are an adapter-wide problem: keep the event, wait long.
                tracing::error!(%why, "adapter authentication failed; will retry");
                shared.settings.backoff_max
            }
            Err(AdapterError::Transient {
                message,
                retry_after,
            }) => {
                if attempts >= shared.settings.max_attempts {
                    return Outcome::Dead {
                        error: message,
                        attempts,
                    };
                }
                tracing::debug!(%message, attempts, "transient failure; will retry");
                retry_delay(shared, retry_after, attempts)
            }
        };
        metrics::counter!("bridge_retries_total", &metrics.labels(kind)).increment(1);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shared.shutdown.cancelled() => return Outcome::Stopped,
        }
    }
}

/// Records a delivery: the ID map and puppet, and removes the entry from the outbox (an
/// explicit entry is deleted; the link's cursor moves past a log entry, stored now and then).
fn finish(
    shared: &Shared,
    entry: &Entry<'_>,
    pos: &mut Position,
    delivered: &Delivered,
) -> Result<(), StoreError> {
    let link = entry.link;
    let mut batch = Batch::with_capacity(3);
    if let Some(native) = &delivered.native_id {
        map_ids(
            &mut batch,
            entry.id,
            &link.adapter,
            &link.remote,
            native,
            Provenance::Produced,
        );
    }
    if entry.explicit {
        batch.delete(outbox_key(link, entry.id));
    } else if pos.handle(entry.id, delivered.native_id.is_none()) {
        // Without a native ID recorded, nothing else shows after a crash that it was handled.
        batch.put(cursor_key(link), entry.id.to_bytes().to_vec());
    }
    if !batch.is_empty() {
        shared.apply(batch)?;
    }
    if let Some(puppet) = &delivered.puppet {
        shared.add_puppet(&link.adapter, puppet)?;
    }
    Ok(())
}

fn bury(
    shared: &Shared,
    entry: &Entry<'_>,
    pos: &mut Position,
    error: String,
    attempts: u32,
) -> Result<(), StoreError> {
    let (link, id) = (entry.link, entry.id);
    tracing::warn!(%link, event = %id, %error, attempts, "dead letter");
    metrics::counter!("bridge_dead_letters_total", "adapter" => link.adapter.to_string())
        .increment(1);
    let value = DeadValue {
        error,
        attempts,
        at_ms: super::now_ms(),
    };
    let mut batch = Batch::new();
    if entry.explicit {
        batch.delete(outbox_key(link, id));
    } else if pos.handle(id, true) {
        batch.put(cursor_key(link), id.to_bytes().to_vec());
    }
    batch.put(
        dead_key(link, id),
        serde_json::to_vec(&value).unwrap_or_default(),
    );
    shared.apply(batch).map(|_| ())
}

/// Every dead letter, oldest first per link.
pub(crate) fn dead_letters(shared: &Shared) -> Result<Vec<DeadLetter>, StoreError> {
    let mut out = Vec::new();
    for_each_with_prefix(
        &*shared.store,
        &Key::new(tag::DEAD).build(),
        |key, value| {
            let mut r = KeyReader::new(key, tag::DEAD);
            let (Some(adapter), Some(remote), Some(id)) = (
                r.as_mut().and_then(KeyReader::str),
                r.as_mut().and_then(KeyReader::str),
                r.as_mut().and_then(KeyReader::id),
            ) else {
                return Ok(());
            };
            if let Ok(v) = serde_json::from_slice::<DeadValue>(value) {
                out.push(DeadLetter {
                    link: Link::new(adapter, remote),
                    event: id,
                    error: v.error,
                    attempts: v.attempts,
                    at_ms: v.at_ms,
                });
            }
            Ok(())
        },
    )?;
    Ok(out)
}

/// Moves dead letters back to their outboxes. Their order relative to newer events of the link
/// is their original acceptance order only if the link's worker has not passed them yet, so they
/// are delivered as soon as the worker reloads (after its current window).
pub(crate) async fn retry_dead_letters(
    shared: &Shared,
    only: impl Fn(&Link) -> bool,
) -> Result<usize, StoreError> {
    let mut letters = dead_letters(shared)?;
    letters.retain(|letter| only(&letter.link));
    let mut batch = Batch::new();
    for letter in &letters {
        batch.delete(dead_key(&letter.link, letter.event));
        if load_event(&*shared.store, letter.event)?.is_some() {
            batch.put(outbox_key(&letter.link, letter.event), Vec::new());
        }
    }
    let seq = shared.apply(batch)?;
    shared.commit.wait(seq).await;
    // The affected workers reread their outbox from the beginning.
    let count = letters.len();
    let mut links: Vec<Link> = letters.into_iter().map(|l| l.link).collect();
    links.sort();
    links.dedup();
    for link in links {
        if let Some(queue) = shared.queue(&link) {
            queue.rewind();
        }
    }
    Ok(count)
}

/// Deletes a removed link's outbox: its explicit entries and its cursor (its room's log stays).
pub(crate) fn drop_outbox(shared: &Shared, link: &Link) -> Result<(), StoreError> {
    let prefix = outbox_prefix(link).build();
    delete_with_prefix(&*shared.store, &prefix, |page| {
        shared.apply(page).map(|_| ())
    })?;
    let mut batch = Batch::new();
    batch.delete(cursor_key(link));
    shared.apply(batch).map(|_| ())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{MAX_RETRY_AFTER, honoured};

    #[test]
    fn a_far_side_may_not_stall_a_link_for_longer_than_an_hour() {
        let minute = Duration::from_secs(60);
        assert_eq!(
            honoured(Duration::from_secs(5), minute),
            Duration::from_secs(5)
        );
        assert_eq!(honoured(Duration::MAX, minute), MAX_RETRY_AFTER);
        assert_eq!(
            honoured(Duration::from_secs(u64::MAX / 1000), minute),
            MAX_RETRY_AFTER
        );
        // An admin's longer backoff is a longer ceiling.
        let day = Duration::from_secs(86_400);
        assert_eq!(honoured(Duration::MAX, day), day);
    }
}
