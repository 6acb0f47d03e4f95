//! One worker per link delivers that link's outbox in acceptance order (I4), with retries,
//! dead letters, and a bounded in-memory window so that a slow or dead adapter holds at most
//! `queue_capacity` events in memory and never blocks anyone else (I5).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::Shared;
use super::degrade::{Prepared, prepare};
use super::ingest::{Provenance, load_event, map_ids, outbox_key, outbox_prefix};
use crate::adapter::{AdapterError, Delivered};
use crate::event::Event;
use crate::ids::EventId;
use crate::routing::Link;
use crate::store::keys::{Key, KeyReader, tag};
use crate::store::{Batch, Store, StoreError, delete_with_prefix, for_each_with_prefix};

/// An accepted event waiting for one link.
pub(crate) struct QueueItem {
    pub(crate) event: Arc<Event>,
    /// The group-commit number to wait for before sending (0: nothing to wait for).
    pub(crate) seq: u64,
}

struct Window {
    items: VecDeque<QueueItem>,
    /// Entries exist in the store that are not in `items`: reload when `items` runs dry.
    overflow: bool,
    /// Pushes refused since the last reload started (to know whether a reload saw them).
    missed: u64,
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

    /// Counts the entries left in the store by an earlier run.
    pub(crate) fn count_stored(&self, store: &dyn Store) -> Result<(), StoreError> {
        let prefix = outbox_prefix(&self.link).build();
        let mut count = 0u64;
        for_each_with_prefix(store, &prefix, |_, _| {
            count += 1;
            Ok(())
        })?;
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
        {
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
            } else {
                w.items.push_back(item);
            }
        }
        self.notify.notify_one();
    }

    /// Makes the worker forget its window and reread the whole outbox (after dead letters were
    /// put back into it).
    pub(crate) fn rewind(&self) {
        {
            let mut w = self.window.lock();
            w.items.clear();
            w.overflow = true;
            w.missed += 1;
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

/// Waits for the next item of `queue`, reloading from the store when the window overflowed.
async fn next_item(
    shared: &Shared,
    queue: &LinkQueue,
    cursor: &mut Option<EventId>,
) -> Result<Option<QueueItem>, StoreError> {
    loop {
        if queue.closed.load(Ordering::Acquire) || shared.shutdown.is_cancelled() {
            return Ok(None);
        }
        if queue.rewind.swap(false, Ordering::AcqRel) {
            *cursor = None;
            queue.count_stored(&*shared.store)?;
        }
        let reload_from = {
            let mut w = queue.window.lock();
            if let Some(item) = w.items.pop_front() {
                return Ok(Some(item));
            }
            w.overflow.then_some(w.missed)
        };
        let Some(missed_before) = reload_from else {
            tokio::select! {
                () = queue.notify.notified() => {}
                () = shared.shutdown.cancelled() => return Ok(None),
            }
            continue;
        };
        let prefix = outbox_prefix(&queue.link).build();
        let after = cursor.map(|id| outbox_key(&queue.link, id));
        let page = shared
            .store
            .scan(&prefix, after.as_deref(), queue.capacity)?;
        // Every entry the scan saw was applied under the ingest lock before its number was
        // taken, so the number read under that lock covers them all.
        let seq = {
            let _order = shared.ingest_lock.lock();
            shared.commit.written()
        };
        let mut items = VecDeque::with_capacity(page.len());
        let mut batch = Batch::new();
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
                }),
                None => {
                    tracing::error!(link = %queue.link, event = %id, "outbox entry without its event; dropped");
                    batch.delete(key.clone());
                    queue.done_one();
                }
            }
        }
        if !batch.is_empty() {
            shared.apply(batch)?;
        }
        let mut w = queue.window.lock();
        if page.len() < queue.capacity && w.missed == missed_before {
            w.overflow = false;
        }
        // Nothing was pushed while `overflow` was set, so the window is empty here.
        items.extend(w.items.drain(..));
        w.items = items;
    }
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
pub(crate) async fn run_worker(shared: Arc<Shared>, queue: Arc<LinkQueue>) {
    let Some(slot) = shared.adapters.get(&queue.link.adapter) else {
        return;
    };
    let adapter = slot.adapter.clone();
    let caps = slot.caps.clone();
    let mut metrics = LinkMetrics::new(&queue.link);
    let mut cursor: Option<EventId> = None;
    loop {
        let item = match next_item(&shared, &queue, &mut cursor).await {
            Ok(Some(item)) => item,
            Ok(None) => return,
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
            if cursor.is_some_and(|c| event.id <= c) {
                continue;
            }
            shared.commit.wait(item.seq).await;
        }
        let policy = shared.policy_of(&event.room);
        let span = tracing::debug_span!("deliver", link = %queue.link, event = %event.id, kind = event.kind.name());
        let _enter = span.enter();
        let outcome = deliver(
            &shared,
            &queue,
            &mut metrics,
            &*adapter,
            &caps,
            &policy,
            &event,
        )
        .await;
        drop(_enter);
        if ephemeral {
            continue;
        }
        let result = match outcome {
            Outcome::Delivered(delivered) => finish(&shared, &queue.link, &event, &delivered),
            Outcome::Skipped => finish(&shared, &queue.link, &event, &Delivered::default()),
            Outcome::Dead { error, attempts } => {
                bury(&shared, &queue.link, event.id, error, attempts)
            }
            Outcome::Stopped => return,
        };
        match result {
            Ok(()) => {
                queue.done_one();
                queue.report_depth();
                cursor = Some(event.id);
            }
            Err(e) => {
                // The entry stays in the store and is retried after a restart.
                tracing::error!(link = %queue.link, error = %e, "cannot record a delivery");
                cursor = Some(event.id);
            }
        }
    }
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
                retry_after.unwrap_or_else(|| backoff(shared, attempts))
            }
        };
        metrics::counter!("bridge_retries_total", &metrics.labels(kind)).increment(1);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shared.shutdown.cancelled() => return Outcome::Stopped,
        }
    }
}

/// Records a delivery: the ID map and puppet, and removes the outbox entry.
fn finish(
    shared: &Shared,
    link: &Link,
    event: &Event,
    delivered: &Delivered,
) -> Result<(), StoreError> {
    let mut batch = Batch::with_capacity(3);
    batch.delete(outbox_key(link, event.id));
    if let Some(native) = &delivered.native_id {
        map_ids(
            &mut batch,
            event.id,
            &link.adapter,
            &link.remote,
            native,
            Provenance::Produced,
        );
    }
    shared.apply(batch)?;
    if let Some(puppet) = &delivered.puppet {
        shared.add_puppet(&link.adapter, puppet)?;
    }
    Ok(())
}

fn bury(
    shared: &Shared,
    link: &Link,
    id: EventId,
    error: String,
    attempts: u32,
) -> Result<(), StoreError> {
    tracing::warn!(%link, event = %id, %error, attempts, "dead letter");
    metrics::counter!("bridge_dead_letters_total", "adapter" => link.adapter.to_string())
        .increment(1);
    let value = DeadValue {
        error,
        attempts,
        at_ms: super::now_ms(),
    };
    let mut batch = Batch::new();
    batch.delete(outbox_key(link, id));
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

/// Deletes a removed link's outbox.
pub(crate) fn drop_outbox(shared: &Shared, link: &Link) -> Result<(), StoreError> {
    let prefix = outbox_prefix(link).build();
    delete_with_prefix(&*shared.store, &prefix, |page| {
        shared.apply(page).map(|_| ())
    })
}
