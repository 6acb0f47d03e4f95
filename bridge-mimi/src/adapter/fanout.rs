//! The hub's fan-out (protocol-06 §5.5): one durable queue per follower provider, in the
//! adapter's store, sent in order with `/notify`; and the follower's persistent notify dedupe.
//!
//! Keys: `q/<domain>/<20-digit sequence>` → the room URI, a newline, the notify body;
//! `q-seq` → the last sequence number; `qd/<domain>` → a follower that has a queue;
//! `n/<hex digest>` → a processed notify body.
//! An entry is removed only after the follower answered 201, so after a crash (even `kill -9`)
//! it is sent again; the follower recognises the byte-identical body and answers 201 without
//! processing it twice. An entry is sent only once it is durable (the sender flushes before a
//! new batch: one flush covers every entry waiting, of every room), so no follower ever sees
//! a message a crash could take back; the adapter's `send` therefore returns without a flush
//! of its own (its entry, the MLS state and the sent marker reach the disk before anything the
//! core writes after `send` returned, so a crash loses either the whole send or nothing).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bridge_core::adapter::CancellationToken;
use bridge_core::{AdapterStore, StoreError};
use tracing::{debug, warn};

use super::Running;
use crate::mls::uri::RoomUri;
use crate::transport::client::RetryPolicy;
use crate::transport::{NotifyDedupe, NotifyDigest};
use crate::wire::{FanoutMessage, IdentifierUri, NotifyBody, WireBody};

const QUEUE: &[u8] = b"q/";
const SEQ: &[u8] = b"q-seq";
const DOMAINS: &[u8] = b"qd/";
const DEDUPE: &str = "n/";

/// The fan-out queues of one hub.
#[derive(Debug)]
pub struct Queue {
    store: AdapterStore,
    wake: tokio::sync::Notify,
    seq: parking_lot::Mutex<()>,
}

impl Queue {
    /// The queues kept in `store`.
    pub fn new(store: AdapterStore) -> Self {
        Self {
            store,
            wake: tokio::sync::Notify::new(),
            seq: parking_lot::Mutex::new(()),
        }
    }

    /// Queues, for each `(domain, messages)` of `bodies`, one notify body about `room`, writing
    /// `extra` in the same atomic batch. Visible at once, durable after the store's flush.
    pub fn push(
        &self,
        room: &RoomUri,
        bodies: &[(String, Vec<FanoutMessage>)],
        extra: &[(&[u8], &[u8])],
    ) -> Result<(), StoreError> {
        let _one_at_a_time = self.seq.lock();
        let mut seq = match self.store.get(SEQ)? {
            Some(bytes) => String::from_utf8_lossy(&bytes).parse::<u64>().unwrap_or(0),
            None => 0,
        };
        let mut entries = Vec::new();
        // Bodies are usually the same for every follower: each distinct one is encoded once.
        let mut encoded: Vec<(&[FanoutMessage], Vec<u8>)> = Vec::new();
        for (domain, messages) in bodies.iter().filter(|(_, m)| !m.is_empty()) {
            let body = match encoded.iter().find(|(m, _)| *m == messages.as_slice()) {
                Some((_, body)) => body.clone(),
                None => {
                    let body = NotifyBody {
                        messages: messages.clone(),
                    }
                    .encode()
                    .map_err(|e| StoreError::Backend(format!("notify body: {e}")))?;
                    encoded.push((messages, body.clone()));
                    body
                }
            };
            let mut value = room.to_string().into_bytes();
            value.push(b'\n');
            value.extend_from_slice(&body);
            seq += 1;
            entries.push((format!("q/{domain}/{seq:020}").into_bytes(), value));
            entries.push((format!("qd/{domain}").into_bytes(), Vec::new()));
        }
        let seq_text = seq.to_string().into_bytes();
        let mut puts: Vec<(&[u8], &[u8])> = entries.iter().map(|(k, v)| (&k[..], &v[..])).collect();
        puts.push((SEQ, &seq_text));
        puts.extend_from_slice(extra);
        self.store.put_all(&puts)
    }

    /// The same messages for every one of `domains`.
    pub fn to_all(
        domains: &[String],
        messages: &[FanoutMessage],
    ) -> Vec<(String, Vec<FanoutMessage>)> {
        domains
            .iter()
            .map(|d| (d.clone(), messages.to_vec()))
            .collect()
    }

    /// Wakes the sender after a push.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The follower providers that have (or had) a queue.
    fn domains(&self) -> Result<Vec<String>, StoreError> {
        Ok(self
            .store
            .scan(DOMAINS, usize::MAX)?
            .into_iter()
            .map(|(key, _)| String::from_utf8_lossy(&key[DOMAINS.len()..]).into_owned())
            .collect())
    }

    /// How many entries wait (all followers).
    pub fn len(&self) -> Result<usize, StoreError> {
        Ok(self.store.scan(QUEUE, usize::MAX)?.len())
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.store.scan(QUEUE, 1)?.is_empty())
    }
}

/// Sends every follower's queue in order until `shutdown`: one task per follower, so one that
/// is slow or down does not hold up the others (each retries after a pause).
pub(crate) async fn run(running: Arc<Running>, shutdown: CancellationToken) {
    let mut tasks: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    loop {
        match running.queue.domains() {
            Ok(domains) => {
                for domain in domains {
                    if tasks.get(&domain).is_none_or(|t| t.is_finished()) {
                        let task =
                            tokio::spawn(drain(running.clone(), domain.clone(), shutdown.clone()));
                        tasks.insert(domain, task);
                    }
                }
            }
            Err(error) => warn!(%error, "MIMI fan-out queue unreadable"),
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = running.queue.wake.notified() => {}
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
    for task in tasks.into_values() {
        task.abort();
        let _ = task.await;
    }
}

/// The most queue entries sent in one notify body.
const BATCH_ENTRIES: usize = 256;
/// The largest notify body a batch grows to (an entry larger than this is sent alone).
const BATCH_BYTES: usize = 1 << 20;

/// Queue entries sent together: one notify body.
struct Batch {
    /// Their keys, to remove after the 201.
    keys: Vec<Vec<u8>>,
    room: IdentifierUri,
    /// The concatenated bodies of the entries (a notify body is one or more `FanoutMessage`s,
    /// protocol-06 §5.5: "The hub can include multiple concatenated `FanoutMessage` objects
    /// relevant to the same room").
    body: Vec<u8>,
}

/// The next batch of `prefix`'s queue: its first entry and those right after it about the
/// same room, up to [`BATCH_ENTRIES`] and [`BATCH_BYTES`]. Order is kept: a batch is a run of
/// consecutive entries, and its messages go in queue order.
fn next_batch(store: &AdapterStore, prefix: &[u8]) -> Result<Option<Batch>, String> {
    let entries = store
        .scan(prefix, BATCH_ENTRIES)
        .map_err(|e| e.to_string())?;
    let mut batch: Option<Batch> = None;
    for (key, value) in entries {
        let split = value
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("queue entry without a room")?;
        let (room, body) = (&value[..split], &value[split + 1..]);
        match &mut batch {
            None => {
                batch = Some(Batch {
                    keys: vec![key],
                    room: IdentifierUri(String::from_utf8_lossy(room).into_owned()),
                    body: body.to_vec(),
                });
            }
            Some(b) => {
                if b.room.as_str().as_bytes() != room || b.body.len() + body.len() > BATCH_BYTES {
                    break;
                }
                b.keys.push(key);
                b.body.extend_from_slice(body);
            }
        }
    }
    Ok(batch)
}

/// Sends `domain`'s queue in order until it is empty or `shutdown`: the waiting entries of one
/// room go in one notify body (so a backlog costs the follower one request and one flush per
/// batch, not per message), one body at a time (so the follower processes them in order).
async fn drain(running: Arc<Running>, domain: String, shutdown: CancellationToken) {
    let policy = RetryPolicy {
        attempts: 3,
        ..RetryPolicy::default()
    };
    let prefix = format!("q/{domain}/").into_bytes();
    // Kept until the follower accepted it: a retry sends the same bytes, which the follower
    // recognises (a batch formed anew after a restart may differ; the follower then meets
    // messages it already processed, which its MLS state and its core's ID map refuse).
    let mut batch: Option<Batch> = None;
    // Failed sends of the batch at the head, in a row.
    let mut failures = 0u32;
    loop {
        if batch.is_none() {
            match next_batch(&running.queue.store, &prefix) {
                Ok(Some(next)) => {
                    // Nothing leaves before it is on disk (see the module docs).
                    if let Err(error) = running.queue.store.flush().await {
                        warn!(%error, "MIMI fan-out queue not flushed");
                        return;
                    }
                    batch = Some(next);
                }
                Ok(None) => return,
                Err(error) => {
                    warn!(%error, "MIMI fan-out queue unreadable");
                    return;
                }
            }
        }
        let Some(current) = &batch else { return };
        match send_batch(&running, &domain, current, &policy).await {
            Ok(()) => {
                for key in &current.keys {
                    if let Err(error) = running.queue.store.delete(key) {
                        warn!(%error, "MIMI fan-out entry not removed");
                    }
                }
                batch = None;
                failures = 0;
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                let delay = retry_delay(failures);
                warn!(peer = %domain, %error, failures, retry_in = ?delay, "MIMI notify failed; will retry");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
        if shutdown.is_cancelled() {
            return;
        }
    }
}

/// The longest wait between two tries of a batch a follower keeps refusing.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

/// The wait after the `failures`-th failed try in a row of the same batch (each try already
/// retried a few times quickly, [`RetryPolicy`]): 1 s, doubling to [`MAX_RETRY_DELAY`]. A
/// follower down for hours is then asked once a minute, not once a second, and its queue
/// waits in the store.
fn retry_delay(failures: u32) -> Duration {
    let doubled = Duration::from_secs(1).saturating_mul(1 << failures.saturating_sub(1).min(16));
    doubled.min(MAX_RETRY_DELAY)
}

async fn send_batch(
    running: &Running,
    domain: &str,
    batch: &Batch,
    policy: &RetryPolicy,
) -> Result<(), String> {
    let peer = running.peer(domain).await.map_err(|e| e.to_string())?;
    running
        .client
        .notify_encoded_with_retry(&peer, &batch.room, batch.body.clone(), policy)
        .await
        .map_err(|e| e.to_string())?;
    debug!(peer = %domain, room = %batch.room, entries = batch.keys.len(), "MIMI notify delivered");
    Ok(())
}

/// The notify dedupe kept in the adapter's store: a retry of a body processed before a restart
/// is still recognised. Each entry holds when it was recorded; the adapter deletes it
/// after a week.
#[derive(Debug, Clone)]
pub struct StoreDedupe {
    store: AdapterStore,
}

impl StoreDedupe {
    /// The dedupe over `store`.
    pub fn new(store: AdapterStore) -> Self {
        Self { store }
    }

    fn key(digest: &NotifyDigest) -> Vec<u8> {
        let mut key = DEDUPE.to_owned();
        for byte in digest {
            key.push_str(&format!("{byte:02x}"));
        }
        key.into_bytes()
    }
}

#[async_trait]
impl NotifyDedupe for StoreDedupe {
    async fn seen(&self, digest: &NotifyDigest) -> bool {
        matches!(self.store.get(&Self::key(digest)), Ok(Some(_)))
    }

    async fn record(&self, digest: NotifyDigest) {
        let now = super::now_ms().to_string();
        if let Err(error) = self.store.put(&Self::key(&digest), now.as_bytes()) {
            warn!(%error, "MIMI notify dedupe not recorded");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_batch_is_tried_again_less_and_less_often_up_to_a_minute() {
        let delays: Vec<u64> = (1..=9).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(retry_delay(0), Duration::from_secs(1));
        assert_eq!(retry_delay(u32::MAX), MAX_RETRY_DELAY);
    }
}
