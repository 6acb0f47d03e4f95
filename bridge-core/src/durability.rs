//! Group commit: many writers, one flush.
//!
//! Every batch applied to the store is numbered ([`GroupCommit::note_write`]). A single flusher
//! task flushes the store and then publishes the highest number the flush covered. A writer that
//! must not acknowledge before its data is durable waits for its number
//! ([`GroupCommit::wait`]); a flush wakes exactly the waiters it covered. Under load one flush
//! covers hundreds of writes, so durable acknowledgement costs a fraction of an fsync per event.
//!
//! The flusher flushes at once only when someone waits. Writes nobody waits for (an outbox
//! entry removed after a delivery, the ID-map entries of the copy, an adapter's bookkeeping)
//! are flushed by the next flush someone waits for, and at the latest [`LINGER`] after they
//! were written (the backend's own background flush may come sooner). A crash in that window
//! loses only such writes, which are redone idempotently: an outbox entry still there is
//! delivered again under the same event ID, and the adapters recognise the repeat. Flushing
//! every such write at once cost a flush (an fsync and a handful of thread wake-ups) per batch,
//! several per bridged message when messages come one at a time.
//!
//! Over a durable store the core wraps the store in a [`crate::store::CombiningStore`], whose
//! flush first applies the writes it combined.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// The group-commit coordinator of one store.
#[derive(Debug)]
pub struct GroupCommit {
    store: Arc<dyn Store>,
    durable_store: bool,
    written: AtomicU64,
    /// The highest number known durable (only raised, under `waiters`' lock).
    durable: AtomicU64,
    /// Writers waiting, by the number they wait for: a flush wakes only those it covered (not
    /// every waiter at every flush).
    waiters: Mutex<BTreeMap<u64, Vec<oneshot::Sender<()>>>>,
    /// Notified when a writer starts waiting.
    waiter_came: Notify,
    /// Notified on every write.
    written_to: Notify,
}

/// The longest a write nobody waits for stays unflushed (by the flusher; see the module docs).
pub const LINGER: Duration = Duration::from_secs(1);

impl GroupCommit {
    /// A coordinator for `store`. Call [`GroupCommit::run`] in a task.
    pub fn new(store: Arc<dyn Store>) -> Arc<Self> {
        Arc::new(Self {
            durable_store: store.is_durable(),
            store,
            written: AtomicU64::new(0),
            durable: AtomicU64::new(0),
            waiters: Mutex::new(BTreeMap::new()),
            waiter_came: Notify::new(),
            written_to: Notify::new(),
        })
    }

    /// Numbers a batch just applied to the store; wait for this number to know it is durable.
    pub fn note_write(&self) -> u64 {
        let seq = self.written.fetch_add(1, Ordering::AcqRel) + 1;
        if self.durable_store {
            self.written_to.notify_one();
        }
        seq
    }

    /// The number of the latest write.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    /// The highest write number known to be on stable storage.
    pub fn durable(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    /// Waits until write `seq` is on stable storage (at once for a non-durable store).
    pub async fn wait(&self, seq: u64) {
        if !self.durable_store || self.durable() >= seq {
            return;
        }
        let rx = {
            let mut waiters = self.waiters.lock();
            // Checked again under the lock that `publish` raises `durable` under.
            if self.durable() >= seq {
                return;
            }
            let (tx, rx) = oneshot::channel();
            waiters.entry(seq).or_default().push(tx);
            rx
        };
        self.waiter_came.notify_one();
        // The sender is dropped only after being used, or with `self`.
        let _ = rx.await;
    }

    /// Records that every write up to `target` is durable and wakes their waiters.
    fn publish(&self, target: u64) {
        let ready = {
            let mut waiters = self.waiters.lock();
            if target <= self.durable() {
                return;
            }
            self.durable.store(target, Ordering::Release);
            let later = waiters.split_off(&(target + 1));
            std::mem::replace(&mut *waiters, later)
        };
        for tx in ready.into_values().flatten() {
            let _ = tx.send(());
        }
    }

    /// Flushes once now, covering every write noted so far.
    pub async fn flush_now(&self) -> Result<(), crate::store::StoreError> {
        let target = self.written();
        let store = self.store.clone();
        let started = std::time::Instant::now();
        tokio::task::spawn_blocking(move || store.flush())
            .await
            .map_err(|e| crate::store::StoreError::Backend(format!("flush task: {e}")))??;
        metrics::counter!("bridge_store_flushes_total").increment(1);
        metrics::histogram!("bridge_store_flush_seconds").record(started.elapsed());
        self.publish(target);
        Ok(())
    }

    /// The flusher: runs until `shutdown`, then flushes a last time.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        if !self.durable_store {
            shutdown.cancelled().await;
            return;
        }
        // When the oldest write nobody waits for must be flushed at the latest.
        let mut linger_until: Option<tokio::time::Instant> = None;
        loop {
            let waited_for = !self.waiters.lock().is_empty();
            if !waited_for {
                if self.written() <= self.durable() {
                    linger_until = None;
                    tokio::select! {
                        () = self.waiter_came.notified() => {}
                        () = self.written_to.notified() => {}
                        () = shutdown.cancelled() => break,
                    }
                    continue;
                }
                let deadline =
                    *linger_until.get_or_insert_with(|| tokio::time::Instant::now() + LINGER);
                tokio::select! {
                    () = self.waiter_came.notified() => continue,
                    () = tokio::time::sleep_until(deadline) => {}
                    () = shutdown.cancelled() => break,
                }
            }
            linger_until = None;
            if let Err(e) = self.flush_now().await {
                metrics::counter!("bridge_store_flush_errors_total").increment(1);
                tracing::error!(error = %e, "store flush failed; acknowledgements wait");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        if let Err(e) = self.flush_now().await {
            tracing::error!(error = %e, "final store flush failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Batch, SledStore};

    #[tokio::test]
    async fn writers_are_released_after_a_flush() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).expect("open"));
        let commit = GroupCommit::new(store.clone());
        let shutdown = CancellationToken::new();
        let flusher = tokio::spawn(commit.clone().run(shutdown.clone()));
        let mut waiters = Vec::new();
        for i in 0u32..200 {
            let mut batch = Batch::new();
            batch.put(i.to_be_bytes().to_vec(), vec![1]);
            store.apply(batch).expect("apply");
            let seq = commit.note_write();
            let commit = commit.clone();
            waiters.push(tokio::spawn(async move { commit.wait(seq).await }));
        }
        for w in waiters {
            w.await.expect("waiter");
        }
        assert!(commit.durable() >= 200);
        shutdown.cancel();
        flusher.await.expect("flusher");
    }

    #[tokio::test]
    async fn a_write_nobody_waits_for_is_flushed_within_the_linger() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).expect("open"));
        let commit = GroupCommit::new(store.clone());
        let shutdown = CancellationToken::new();
        let flusher = tokio::spawn(commit.clone().run(shutdown.clone()));
        let mut batch = Batch::new();
        batch.put(b"k".to_vec(), vec![1]);
        store.apply(batch).expect("apply");
        let seq = commit.note_write();
        // Nobody waits: the flusher comes back for it after LINGER (here at most 10 × LINGER).
        let mut polls = 0;
        while commit.durable() < seq {
            polls += 1;
            assert!(polls < 100, "the write was never flushed");
            tokio::time::sleep(LINGER / 10).await;
        }
        // A waiter arriving later is released at once.
        commit.wait(seq).await;
        shutdown.cancel();
        flusher.await.expect("flusher");
    }
}
