//! Write combining in front of a durable store.
//!
//! A durable backend (sled) pays per applied batch and per key: applying every small batch as
//! it comes costs far more than applying a few hundred of them as one. [`CombiningStore`] takes
//! each [`Store::apply`] into a pending queue at once (a few allocations, no I/O) and applies
//! the queue to the backend in combined batches of at most [`CHUNK_OPS`] operations:
//!
//! - an applier thread applies a chunk whenever [`APPLY_AT_OPS`] operations are pending (with
//!   a journal: durable in it, below), so under load the backend's work overlaps with the
//!   writers' and with the flushes;
//! - [`Store::flush`] (called by the group-commit flusher, [`crate::durability`]) applies what
//!   is still pending, then flushes the backend once (without a journal, below);
//! - what stays pending below [`APPLY_AT_OPS`] is applied by the next such flush, and at the
//!   latest [`LINGER`] after the oldest of it was written. When messages come one at a time
//!   this makes one backend batch per flush instead of one per small write: sled 0.34 writes
//!   out its IO buffer before and after every batch (two writes, a `sync_file_range` and its IO
//!   threads woken each time), which cost more CPU per bridged message than everything else
//!   the bridge does;
//! - opened with [`CombiningStore::open`] over a backend that offers a journal directory
//!   ([`Store::journal_dir`], sled does), a flush does not touch the backend at all: it appends
//!   the batches taken since the last one to a write-ahead journal and syncs that, and the
//!   backend gets them in chunks, flushed only when a journal file is retired
//!   ([`super::journal`]; when a file is full, the applier applies what is pending, flushes
//!   the backend once and deletes the file). This takes sled's apply and flush off
//!   the path of every acknowledgement. The backend gets only batches already durable in the
//!   journal (a flush wakes the applier), which it applies with [`Store::apply_journaled`]
//!   (not atomic: sled's batches stop every reader); when [`DEFER_OPS`] (or [`DEFER_BYTES`])
//!   are pending or the oldest has waited [`LINGER`] and nobody flushed, the applier flushes
//!   the journal itself first. So whatever part of its writes since its last flush the
//!   backend keeps through a crash or a power cut, replaying the journal's files puts every
//!   key right;
//! - a writer that finds more than [`HIGH_WATER_OPS`] operations pending applies a chunk itself
//!   (back-pressure: the queue, and so memory, stays bounded however fast events arrive);
//! - [`Store::scan`] reads the backend overlaid with the pending writes in its range (nothing
//!   applied for it); [`Store::last`] applies the queue first. Both see every earlier write.
//!
//! Semantics are those of the [`Store`] trait: a batch is visible to [`Store::get`] and
//! [`Store::scan`] as soon as `apply` returns (`get` finds it through an overlay mapping each
//! pending key to the newest pending batch writing it, `scan` by walking the pending queue),
//! batches take effect in the order they were applied, each original
//! batch reaches the backend atomically or (with a journal) only once the journal holds it
//! durably, so that replay can complete it after a crash, and `flush` returns only once
//! everything applied before it is on stable storage (in the journal or in the backend). A
//! crash loses only writes that no flush covered, exactly as with the backend alone; with a
//! journal, opening the store again replays what the backend lost.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::journal::{self, Flushed, Journal};
use super::{Batch, Entry, KeyHash, Store, StoreError};

/// The most operations applied to the backend as one combined batch (about 25 events' worth
/// of ingest and delivery writes). Larger chunks make sled slower and hungrier for memory: with
/// 1,024 the XMPP bench's 1,000-puppet burst left the process ~9 MB larger (sled's node copies
/// of a big batch, freed later but kept by the allocator) and the core's durable rate was no
/// higher (docs/benchmarks.md, "Combined chunks of 256 operations").
pub const CHUNK_OPS: usize = 256;

/// Pending operations (with a journal: durable in it) at which the applier starts a chunk. A
/// chunk still takes up to [`CHUNK_OPS`]: under load, operations pile up while one chunk is
/// applied and the next is larger by itself, while at a steady moderate rate the chunks stay
/// short. Short mattered when every chunk was a sled batch: sled 0.34 stops every read while it
/// applies one (~5 µs per key, so ~1.3 ms for 256 operations), and waiting for full chunks had
/// raised `bench core`'s paced p99 from ~0.7 to ~2.1 ms (docs/benchmarks.md).
pub const APPLY_AT_OPS: usize = 32;

/// With a journal, pending operations at which the applier stops waiting for a flush to make
/// them durable in the journal: it flushes the journal itself and applies them (see
/// [`Combiner::apply_chunk`]).
pub const DEFER_OPS: usize = 16 * CHUNK_OPS;

/// With a journal, the bytes of pending keys and values at which the applier stops waiting,
/// as at [`DEFER_OPS`]: writes nobody waits for (an MLS client's state, kilobytes a write) kept
/// the queue growing for up to [`LINGER`], and `bench mimi`'s RSS per hosted client with it
/// (~14 → ~19 kB, goal ≤ 20, once scans stopped applying the queue; 1 MB here left ~16).
pub const DEFER_BYTES: usize = 256 * 1024;

/// Pending operations beyond which a writer applies a chunk itself.
pub const HIGH_WATER_OPS: usize = 32 * 1024;

/// The longest a write stays pending when the applier has no chunk ready (fewer than
/// [`APPLY_AT_OPS`] operations pending; with a journal, fewer journaled and fewer than
/// [`DEFER_OPS`] pending) and nothing else applies it (the same as the group-commit flusher's
/// [`crate::durability::LINGER`]).
pub const LINGER: Duration = crate::durability::LINGER;

#[derive(Default)]
struct Pending {
    /// Batches not yet applied to the backend, oldest first, with increasing numbers, and when
    /// each was written.
    queue: VecDeque<(u64, Arc<Batch>, Instant)>,
    /// Operations in `queue`, and the bytes of their keys and values.
    ops: usize,
    bytes: usize,
    /// Each pending key and the number of the newest pending batch that writes it.
    overlay: HashMap<Vec<u8>, u64, KeyHash>,
    /// The number of the next batch.
    next: u64,
    /// A full journal file (and the older ones) for the applier to retire.
    retire: Option<u64>,
}

/// What the applier does next.
enum Next {
    /// Retire the journal files up to this generation.
    Retire(u64),
    /// Apply a chunk of the batches numbered below this.
    Apply(u64),
}

/// The state shared with the applier thread.
struct Combiner {
    backend: Arc<dyn Store>,
    pending: Mutex<Pending>,
    /// Signalled when the queue stops being empty, when it reaches [`APPLY_AT_OPS`] (with a
    /// journal: [`DEFER_OPS`], and after each journal flush), and at drop.
    work: Condvar,
    stop: AtomicBool,
    /// Serialises applies to the backend, so that chunks reach it in order; held by a scan
    /// while it reads the backend and the queue, so that it sees a chunk in one or the other.
    applying: Mutex<()>,
    /// The write-ahead journal, when the backend has a place for it.
    journal: Option<Journal>,
    /// Set once the backend was flushed after the journal broke (see
    /// [`Combiner::apply_chunk`]).
    flushed_at_break: AtomicBool,
    /// The newest full journal file whose retirement was asked of the applier, and the newest
    /// retired: while the first is ahead, a writer's flush that fills another file retires
    /// them itself (back-pressure: at most one full file waits, whatever the applier's pace).
    retire_asked: AtomicU64,
    retired: AtomicU64,
}

/// A [`Store`] that combines small batches before they reach a durable backend.
pub struct CombiningStore {
    inner: Arc<Combiner>,
    applier: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for CombiningStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CombiningStore")
            .field("backend", &self.inner.backend)
            .field("pending_ops", &self.inner.pending.lock().ops)
            .finish()
    }
}

impl CombiningStore {
    /// Combines writes in front of `backend`, without a journal: every flush applies what is
    /// pending and flushes the backend. Starts the applier thread.
    pub fn new(backend: Arc<dyn Store>) -> Self {
        Self::start(backend, None, 0)
    }

    /// Combines writes in front of `backend`, with the write-ahead journal in the backend's
    /// [`Store::journal_dir`] when it has one (first replaying into the backend what a crash
    /// made it lose). Fails when the journal cannot be read or started.
    pub fn open(backend: Arc<dyn Store>) -> Result<Self, StoreError> {
        let Some(dir) = backend.journal_dir().map(std::path::Path::to_path_buf) else {
            return Ok(Self::new(backend));
        };
        let (journal, last) = journal::open(&*backend, &dir)?;
        Ok(Self::start(backend, Some(journal), last + 1))
    }

    fn start(backend: Arc<dyn Store>, journal: Option<Journal>, next: u64) -> Self {
        let inner = Arc::new(Combiner {
            backend,
            pending: Mutex::new(Pending {
                next,
                ..Pending::default()
            }),
            work: Condvar::new(),
            stop: AtomicBool::new(false),
            applying: Mutex::new(()),
            journal,
            flushed_at_break: AtomicBool::new(false),
            retire_asked: AtomicU64::new(0),
            retired: AtomicU64::new(0),
        });
        let worker = inner.clone();
        let applier = std::thread::Builder::new()
            .name("store-apply".into())
            .spawn(move || worker.run_applier())
            .map_err(|e| tracing::warn!(error = %e, "no applier thread; flushes apply instead"))
            .ok();
        Self { inner, applier }
    }
}

impl Drop for CombiningStore {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::Release);
        {
            let _pending = self.inner.pending.lock();
            self.inner.work.notify_all();
        }
        if let Some(applier) = self.applier.take() {
            let _ = applier.join();
        }
        // What is still pending reaches the backend (durable at its next flush, as ever).
        if let Err(e) = self.inner.apply_pending() {
            tracing::error!(error = %e, "writes pending at close were not applied");
            return;
        }
        // A clean close leaves no journal to replay.
        if let Some(journal) = &self.inner.journal {
            match self.inner.backend.flush() {
                Ok(()) => journal.close(),
                Err(e) => {
                    tracing::error!(error = %e, "store not flushed at close; its journal stays")
                }
            }
        }
    }
}

impl Combiner {
    /// Applies a chunk whenever [`APPLY_AT_OPS`] operations are ready, or when the oldest
    /// pending write has waited [`LINGER`]; sleeps otherwise. With a journal, ready means
    /// durable in the journal until [`DEFER_OPS`] operations are pending (then the chunk's
    /// batches are journaled first, see [`Combiner::apply_chunk`]).
    fn run_applier(&self) {
        loop {
            let next = {
                let mut pending = self.pending.lock();
                loop {
                    if self.stop.load(Ordering::Acquire) {
                        return;
                    }
                    if let Some(generation) = pending.retire.take() {
                        break Next::Retire(generation);
                    }
                    if let Some(through) = self.ready(&pending) {
                        break Next::Apply(through);
                    }
                    // The oldest pending batch's age (not the queue's: under steady load it
                    // may never be empty, and everything in it would seem overdue).
                    match pending.queue.front().map(|&(_, _, written)| written) {
                        None => {
                            self.work.wait(&mut pending);
                        }
                        Some(written) => {
                            let due = written + LINGER;
                            if Instant::now() >= due {
                                break Next::Apply(u64::MAX);
                            }
                            self.work.wait_until(&mut pending, due);
                        }
                    }
                }
            };
            match next {
                Next::Retire(generation) => self.retire(generation),
                Next::Apply(through) => {
                    if let Err(e) = self.apply_chunk(through) {
                        // The chunk stays pending; the next flush retries it and reports the
                        // error.
                        tracing::error!(error = %e, "cannot apply writes to the store");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        }
    }

    /// Whether the applier should apply a chunk now, and of the batches numbered below what.
    fn ready(&self, pending: &Pending) -> Option<u64> {
        let Some(journal) = &self.journal else {
            return (pending.ops >= APPLY_AT_OPS).then_some(u64::MAX);
        };
        if pending.ops >= DEFER_OPS || pending.bytes >= DEFER_BYTES {
            return Some(u64::MAX);
        }
        let journaled = journal.durable_through();
        let mut ops = 0;
        for (n, batch, _) in &pending.queue {
            if *n > journaled {
                break;
            }
            ops += batch.len();
            if ops >= APPLY_AT_OPS {
                return Some(journaled + 1);
            }
        }
        None
    }

    /// Hands the backend the records of the journal files up to `generation` (everything
    /// pending applied, the backend flushed), then deletes those files.
    fn retire(&self, generation: u64) {
        let Some(journal) = &self.journal else {
            return;
        };
        match self.write_through() {
            Ok(()) => {
                journal.retire(generation);
                self.retired.fetch_max(generation, Ordering::AcqRel);
                // A request the applier has not taken yet is done too.
                let mut pending = self.pending.lock();
                if pending.retire.is_some_and(|g| g <= generation) {
                    pending.retire = None;
                }
            }
            // Harmless but for the disk it takes: the next full file retires this one too.
            Err(e) => tracing::error!(error = %e, "a full journal file was not retired"),
        }
    }

    /// Whether a full journal file's retirement is asked and not done yet.
    fn retirement_behind(&self) -> bool {
        self.retire_asked.load(Ordering::Acquire) > self.retired.load(Ordering::Acquire)
    }

    /// Applies everything pending and flushes the backend: durable without the journal.
    fn write_through(&self) -> Result<(), StoreError> {
        self.apply_pending()?;
        self.backend.flush()
    }

    /// Applies to the backend, chunk by chunk, every batch pending when called.
    fn apply_pending(&self) -> Result<(), StoreError> {
        let through = self.pending.lock().next;
        while self.apply_chunk(through)? {}
        Ok(())
    }

    /// Makes the batches up to `seq` durable in the journal, off any writer's flush (a full
    /// file is left for the applier to retire, as [`Store::flush`] does).
    fn journal_flush(&self, journal: &Journal, seq: u64) {
        if let Flushed::Rotated(generation) = journal.flush_through(seq) {
            self.request_retire(generation);
        }
    }

    /// Asks the applier to retire the journal files up to `generation` (the later request
    /// covers the earlier).
    fn request_retire(&self, generation: u64) {
        self.retire_asked.fetch_max(generation, Ordering::AcqRel);
        let mut pending = self.pending.lock();
        pending.retire = Some(pending.retire.map_or(generation, |g| g.max(generation)));
        self.work.notify_one();
    }

    /// Applies one chunk of the pending batches numbered below `through`; false when there was
    /// none.
    fn apply_chunk(&self, through: u64) -> Result<bool, StoreError> {
        let _order = self.applying.lock();
        // Readers keep finding the chunk in the queue until it is in the backend.
        let chunk: Vec<(u64, Arc<Batch>)> = {
            let pending = self.pending.lock();
            let mut ops = 0;
            pending
                .queue
                .iter()
                .take_while(|(n, b, _)| {
                    let take = *n < through && (ops == 0 || ops + b.len() <= CHUNK_OPS);
                    ops += b.len();
                    take
                })
                .map(|(n, b, _)| (*n, b.clone()))
                .collect()
        };
        let Some(&(last, _)) = chunk.last() else {
            return Ok(false);
        };
        let mut batches: Vec<&Batch> = chunk.iter().map(|(_, b)| &**b).collect();
        match &self.journal {
            None => self.backend.apply_all(&batches)?,
            Some(journal) => {
                // The backend records which batches it holds, after them (below).
                let mut mark = Batch::new();
                mark.put(journal::SEQ_KEY.to_vec(), last.to_be_bytes().to_vec());
                // Nothing reaches the backend before the journal holds it durably: after a
                // power cut the backend may keep any part of what it was given since its last
                // flush (its mark included), and opening replays every record the journal
                // still has over it, which puts right whatever it kept or lost. So batches
                // nobody flushed yet are journaled now (one `fdatasync` for everything pushed
                // so far; the applier's at most once per `DEFER_OPS`, `DEFER_BYTES` or
                // `LINGER`, besides `last`, back-pressure, retirement and close).
                if last > journal.durable_through() {
                    self.journal_flush(journal, last);
                }
                if last <= journal.durable_through() {
                    // Not atomic: a crash amid them leaves the journal to complete them.
                    self.backend.apply_journaled(&batches)?;
                    self.backend.apply_journaled(&[&mark])?;
                } else {
                    // The journal broke: as without one, each chunk atomically, with a mark
                    // above what the journal holds, so that opening trusts the backend. First
                    // the backend is flushed, once: a power cut must not keep that mark and
                    // lose a journaled write it got key by key (nothing would replay it).
                    if !self.flushed_at_break.load(Ordering::Acquire) {
                        self.backend.flush()?;
                        self.flushed_at_break.store(true, Ordering::Release);
                    }
                    batches.push(&mark);
                    self.backend.apply_all(&batches)?;
                }
            }
        }
        let mut pending = self.pending.lock();
        let Pending {
            queue,
            ops,
            bytes,
            overlay,
            ..
        } = &mut *pending;
        for (_, batch, _) in queue.drain(..chunk.len()) {
            for key in batch.keys() {
                if overlay.get(key).is_some_and(|&n| n <= last) {
                    overlay.remove(key);
                }
            }
            *ops -= batch.len();
            *bytes -= batch.size();
        }
        Ok(true)
    }
}

/// Appends to `out`, up to `limit` entries in all, the entries of `page` (the backend's, in
/// key order) with the writes of `pending` over them, taking from `pending` only keys up to
/// `page_end` (all of them when `None`: the backend has nothing further): a value replaces or
/// adds an entry, `None` removes one.
fn overlay_page(
    out: &mut Vec<Entry>,
    page: Vec<Entry>,
    pending: &mut std::iter::Peekable<
        std::collections::btree_map::IntoIter<Vec<u8>, Option<Vec<u8>>>,
    >,
    page_end: Option<&[u8]>,
    limit: usize,
) {
    let mut page = page.into_iter().peekable();
    while out.len() < limit {
        let next_pending = pending
            .peek()
            .filter(|(key, _)| page_end.is_none_or(|end| key.as_slice() <= end));
        let order = match (page.peek(), next_pending) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some((a, _)), Some((b, _))) => a.cmp(b),
        };
        if order.is_lt() {
            out.extend(page.next());
            continue;
        }
        if order.is_eq() {
            // Replaced or removed by the pending write.
            page.next();
        }
        if let Some((key, Some(value))) = pending.next() {
            out.push((key, value));
        }
    }
}

impl Store for CombiningStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        {
            let pending = self.inner.pending.lock();
            if let Some(&n) = pending.overlay.get(key) {
                let i = pending.queue.partition_point(|(m, _, _)| *m < n);
                if let Some((_, batch, _)) = pending.queue.get(i)
                    && let Some(value) = batch.last_op(key)
                {
                    return Ok(value.map(<[u8]>::to_vec));
                }
            }
        }
        // Not pending: every write of `key` has reached the backend (the overlay entry goes
        // only after its batch is applied there).
        self.inner.backend.get(key)
    }

    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let (backlog, write_out) = {
            let mut pending = self.inner.pending.lock();
            let n = pending.next;
            pending.next += 1;
            let write_out = self
                .inner
                .journal
                .as_ref()
                .is_some_and(|j| j.push(n, batch.ops()));
            for key in batch.keys() {
                match pending.overlay.get_mut(key) {
                    Some(m) => *m = n,
                    None => {
                        pending.overlay.insert(key.to_vec(), n);
                    }
                }
            }
            let before = (pending.ops, pending.bytes);
            pending.ops += batch.len();
            pending.bytes += batch.size();
            pending
                .queue
                .push_back((n, Arc::new(batch), Instant::now()));
            if pending.queue.len() == 1 {
                self.inner.work.notify_one();
            } else {
                let (wake_ops, wake_bytes) = if self.inner.journal.is_some() {
                    (DEFER_OPS, DEFER_BYTES)
                } else {
                    (APPLY_AT_OPS, usize::MAX)
                };
                if (before.0 < wake_ops && pending.ops >= wake_ops)
                    || (before.1 < wake_bytes && pending.bytes >= wake_bytes)
                {
                    self.inner.work.notify_one();
                }
            }
            (pending.ops, write_out)
        };
        if write_out && let Some(journal) = &self.inner.journal {
            journal.write_out();
        }
        if backlog > HIGH_WATER_OPS {
            self.inner.apply_chunk(u64::MAX)?;
        }
        Ok(())
    }

    fn apply_all(&self, batches: &[&Batch]) -> Result<(), StoreError> {
        // Each batch in turn; the backend sees them combined at the next chunk.
        for batch in batches {
            self.apply((*batch).clone())?;
        }
        Ok(())
    }

    fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        // The backend as it is, overlaid with the pending writes in range; nothing is applied
        // for the reading. Everything that writes the backend holds `applying`, so the two
        // agree: a chunk is in the backend and out of the queue, or still in the queue.
        let _order = self.inner.applying.lock();
        // The newest pending write of each key in range: the queue walked newest first, so
        // that a value a later write replaced is never copied.
        let pending: BTreeMap<Vec<u8>, Option<Vec<u8>>> = {
            let pending = self.inner.pending.lock();
            let mut writes = BTreeMap::new();
            for (_, batch, _) in pending.queue.iter().rev() {
                for (key, value) in batch.ops().rev() {
                    if key.starts_with(prefix)
                        && after.is_none_or(|a| key > a)
                        && !writes.contains_key(key)
                    {
                        writes.insert(key.to_vec(), value.map(<[u8]>::to_vec));
                    }
                }
            }
            writes
        };
        if pending.is_empty() {
            return self.inner.backend.scan(prefix, after, limit);
        }
        // Page by page: a pending removal can leave a page short, then the next is read.
        let mut out = Vec::new();
        let mut pending = pending.into_iter().peekable();
        let mut from = after.map(<[u8]>::to_vec);
        while out.len() < limit {
            let want = limit - out.len();
            let page = self.inner.backend.scan(prefix, from.as_deref(), want)?;
            let end = (page.len() >= want)
                .then(|| page.last().map(|(key, _)| key.clone()))
                .flatten();
            overlay_page(&mut out, page, &mut pending, end.as_deref(), limit);
            match end {
                Some(end) => from = Some(end),
                None => break,
            }
        }
        Ok(out)
    }

    fn last(&self, prefix: &[u8]) -> Result<Option<Entry>, StoreError> {
        self.inner.apply_pending()?;
        self.inner.backend.last(prefix)
    }

    fn flush(&self) -> Result<(), StoreError> {
        if let Some(journal) = &self.inner.journal {
            match journal.flush() {
                Flushed::Done => {
                    // What was pending is journaled now: the applier may take it.
                    if self.inner.pending.lock().ops >= APPLY_AT_OPS {
                        self.inner.work.notify_one();
                    }
                    return Ok(());
                }
                Flushed::Rotated(generation) => {
                    // Durable already; the backend takes over the full file's records, off
                    // this acknowledgement's path when there is an applier thread and it is
                    // not still at the previous full file (then this flush waits for both).
                    if self.applier.is_some() && !self.inner.retirement_behind() {
                        self.inner.request_retire(generation);
                    } else {
                        self.inner.retire(generation);
                    }
                    return Ok(());
                }
                Flushed::Unavailable => {}
            }
        }
        self.inner.write_through()
    }

    fn is_durable(&self) -> bool {
        self.inner.backend.is_durable()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MemoryStore, SledStore};

    fn put(store: &dyn Store, key: u8, value: Option<u8>) {
        let mut batch = Batch::new();
        match value {
            Some(v) => batch.put(vec![7, key], vec![v]),
            None => batch.delete(vec![7, key]),
        }
        store.apply(batch).expect("apply");
    }

    #[test]
    fn pending_writes_are_visible_in_order() {
        let backend = Arc::new(MemoryStore::new());
        let store = CombiningStore::new(backend.clone());
        put(&store, 1, Some(1));
        put(&store, 1, Some(2));
        put(&store, 2, Some(3));
        put(&store, 2, None);
        assert_eq!(store.get(&[7, 1]).expect("get"), Some(vec![2]));
        assert_eq!(store.get(&[7, 2]).expect("get"), None);
        let page = store.scan(&[7], None, 10).expect("scan");
        assert_eq!(page, vec![(vec![7, 1], vec![2])]);
        // `last` applies the queue first.
        let last = store.last(&[7]).expect("last");
        assert_eq!(last, Some((vec![7, 1], vec![2])));
        assert_eq!(backend.get(&[7, 1]).expect("get"), Some(vec![2]));
        assert!(store.inner.pending.lock().overlay.is_empty());
        put(&store, 3, Some(4));
        drop(store);
        assert_eq!(
            backend.get(&[7, 3]).expect("get"),
            Some(vec![4]),
            "applied at drop"
        );
    }

    #[test]
    fn chunks_are_bounded_and_everything_persists() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let backend: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).expect("open"));
            let store = CombiningStore::new(backend);
            for i in 0..(HIGH_WATER_OPS as u32 + 5000) {
                let mut batch = Batch::new();
                batch.put(i.to_be_bytes().to_vec(), vec![1]);
                store.apply(batch).expect("apply");
                assert!(store.inner.pending.lock().ops <= HIGH_WATER_OPS);
            }
            let mut batch = Batch::new();
            batch.delete(0u32.to_be_bytes().to_vec());
            store.apply(batch).expect("apply");
            assert_eq!(store.get(&0u32.to_be_bytes()).expect("get"), None);
            store.flush().expect("flush");
        }
        let store = SledStore::open(dir.path()).expect("reopen");
        assert_eq!(store.get(&0u32.to_be_bytes()).expect("get"), None);
        assert_eq!(store.get(&1u32.to_be_bytes()).expect("get"), Some(vec![1]));
        let last = (HIGH_WATER_OPS as u32 + 4999).to_be_bytes();
        assert_eq!(store.get(&last).expect("get"), Some(vec![1]));
    }

    #[test]
    fn a_lone_write_reaches_the_backend_without_a_flush() {
        let backend = Arc::new(MemoryStore::new());
        let store = CombiningStore::new(backend.clone());
        put(&store, 9, Some(1));
        assert_eq!(
            store.get(&[7, 9]).expect("get"),
            Some(vec![1]),
            "visible at once"
        );
        // Fewer than APPLY_AT_OPS operations and no flush: the applier takes them after LINGER.
        let mut polls = 0;
        while backend.get(&[7, 9]).expect("get").is_none() {
            polls += 1;
            assert!(polls < 100, "the write never reached the backend");
            std::thread::sleep(LINGER / 10);
        }
        assert!(store.inner.pending.lock().queue.is_empty());
    }

    /// A backend that offers a journal directory and keeps only what the test gives it: a
    /// crash is a new one made from what survived (its state at some flush, the journal files).
    #[derive(Debug)]
    struct Backend {
        kept: MemoryStore,
        dir: std::path::PathBuf,
        /// Calls of `apply_journaled`, and of the atomic `apply` / `apply_all`.
        journaled: std::sync::atomic::AtomicUsize,
        atomic: std::sync::atomic::AtomicUsize,
        /// Every call that writes or flushes, in order.
        log: Mutex<Vec<&'static str>>,
    }

    impl Backend {
        fn new(dir: &std::path::Path, entries: Vec<Entry>) -> Arc<Self> {
            let kept = MemoryStore::new();
            let mut batch = Batch::new();
            for (key, value) in entries {
                batch.put(key, value);
            }
            kept.apply(batch).expect("apply");
            Arc::new(Self {
                kept,
                dir: dir.to_path_buf(),
                journaled: Default::default(),
                atomic: Default::default(),
                log: Default::default(),
            })
        }

        fn calls(&self) -> (usize, usize) {
            (
                self.journaled.load(Ordering::SeqCst),
                self.atomic.load(Ordering::SeqCst),
            )
        }

        fn entries(&self) -> Vec<Entry> {
            self.kept.scan(&[], None, usize::MAX).expect("scan")
        }
    }

    impl Store for Backend {
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            self.kept.get(key)
        }
        fn apply(&self, batch: Batch) -> Result<(), StoreError> {
            self.atomic.fetch_add(1, Ordering::SeqCst);
            self.log.lock().push("atomic");
            self.kept.apply(batch)
        }
        fn apply_all(&self, batches: &[&Batch]) -> Result<(), StoreError> {
            self.atomic.fetch_add(1, Ordering::SeqCst);
            self.log.lock().push("atomic");
            self.kept.apply_all(batches)
        }
        fn apply_journaled(&self, batches: &[&Batch]) -> Result<(), StoreError> {
            self.journaled.fetch_add(1, Ordering::SeqCst);
            self.log.lock().push("journaled");
            self.kept.apply_all(batches)
        }
        fn scan(&self, p: &[u8], a: Option<&[u8]>, l: usize) -> Result<Vec<Entry>, StoreError> {
            self.kept.scan(p, a, l)
        }
        fn last(&self, prefix: &[u8]) -> Result<Option<Entry>, StoreError> {
            self.kept.last(prefix)
        }
        fn flush(&self) -> Result<(), StoreError> {
            self.log.lock().push("flush");
            Ok(())
        }
        fn is_durable(&self) -> bool {
            true
        }
        fn journal_dir(&self) -> Option<&std::path::Path> {
            Some(&self.dir)
        }
    }

    /// Copies the journal files of `from` into a new directory: the disk as a crash left it.
    fn journal_copy(from: &std::path::Path) -> tempfile::TempDir {
        let to = tempfile::tempdir().expect("tempdir");
        for (_, path) in journal::files(from).expect("files") {
            std::fs::copy(&path, to.path().join(path.file_name().expect("name"))).expect("copy");
        }
        to
    }

    fn value(store: &dyn Store, key: u8) -> Option<u8> {
        store.get(&[7, key]).expect("get").map(|v| v[0])
    }

    #[test]
    fn a_flush_is_durable_in_the_journal_and_replayed_into_a_backend_that_lost_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = CombiningStore::open(Backend::new(dir.path(), vec![])).expect("open");
        put(&store, 1, Some(1));
        put(&store, 2, Some(2));
        put(&store, 1, Some(3));
        put(&store, 2, None);
        store.flush().expect("flush");
        // A crash now: the backend never flushed, so it kept nothing; the journal is on disk.
        let crashed = journal_copy(dir.path());
        // A write after the flush was never acknowledged: it may be lost, and is here.
        put(&store, 4, Some(4));
        drop(store);

        let backend = Backend::new(crashed.path(), vec![]);
        let store = CombiningStore::open(backend.clone()).expect("reopen");
        assert_eq!(value(&store, 1), Some(3));
        assert_eq!(value(&store, 2), None);
        assert_eq!(value(&store, 4), None);
        // Replayed into the backend itself, which says how far it got; one new empty file.
        assert_eq!(backend.get(&[7, 1]).expect("get"), Some(vec![3]));
        assert_eq!(
            backend.get(journal::SEQ_KEY).expect("get"),
            Some(4u64.to_be_bytes().to_vec())
        );
        let files = journal::files(crashed.path()).expect("files");
        assert_eq!(files.len(), 1);
        assert_eq!(std::fs::metadata(&files[0].1).expect("meta").len(), 0);
        // Numbering goes on from there.
        put(&store, 5, Some(5));
        store.flush().expect("flush");
        let (plan, _) =
            journal::replay_plan(&journal::files(crashed.path()).expect("files"), 4).expect("plan");
        assert_eq!(plan.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![5]);
    }

    fn seq(backend: &Backend) -> Option<u64> {
        let bytes = backend.get(journal::SEQ_KEY).expect("get")?;
        Some(u64::from_be_bytes(bytes.try_into().expect("8 bytes")))
    }

    /// Waits (up to ~5 s) for `done`.
    fn eventually(what: &str, mut done: impl FnMut() -> bool) {
        let mut polls = 0;
        while !done() {
            polls += 1;
            assert!(polls < 500, "never: {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn the_backend_gets_only_journaled_batches_key_by_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = Backend::new(dir.path(), vec![]);
        let store = CombiningStore::open(backend.clone()).expect("open");
        let wide = |first: u32, ops: usize| {
            let mut batch = Batch::new();
            for i in 0..ops as u32 {
                batch.put((first + i).to_be_bytes().to_vec(), vec![1]);
            }
            batch
        };
        // Enough to apply, but not in the journal yet: the applier waits for a flush (or
        // LINGER, a second: far longer than this test takes to look).
        store.apply(wide(0, APPLY_AT_OPS)).expect("apply");
        assert_eq!(store.inner.ready(&store.inner.pending.lock()), None);
        store.flush().expect("flush");
        eventually("the flushed batch applied", || seq(&backend) == Some(1));
        assert_eq!(
            backend.calls(),
            (2, 0),
            "the batch, then the mark, each on its own"
        );
        assert!(backend.get(&0u32.to_be_bytes()).expect("get").is_some());

        // Not flushed and read through a scan: seen, and nothing applied for it.
        store.apply(wide(1000, 1)).expect("apply");
        let page = store.scan(&1000u32.to_be_bytes(), None, 1).expect("scan");
        assert_eq!(page, vec![(1000u32.to_be_bytes().to_vec(), vec![1])]);
        assert_eq!(backend.calls(), (2, 0));
        assert_eq!(backend.get(&1000u32.to_be_bytes()).expect("get"), None);

        // Nobody flushes, but DEFER_OPS pile up: the applier stops waiting, flushes the journal
        // itself and applies the pile from it, key by key like the rest.
        for n in 0..DEFER_OPS / CHUNK_OPS {
            store
                .apply(wide(10_000 + (n * CHUNK_OPS) as u32, CHUNK_OPS))
                .expect("apply");
        }
        let last = 2 + (DEFER_OPS / CHUNK_OPS) as u64;
        eventually("the pile applied", || store.inner.pending.lock().ops == 0);
        assert_eq!(
            backend.calls().1,
            0,
            "no batch reached the backend unjournaled"
        );
        assert_eq!(seq(&backend), Some(last));
        let journal = store.inner.journal.as_ref().expect("journal");
        assert_eq!(journal.durable_through(), last);

        // Few operations but large values (an MLS client's state) stop the waiting too, at
        // DEFER_BYTES: the queue is bounded in bytes as well.
        let mut big = Batch::new();
        big.put(vec![1], vec![0; DEFER_BYTES - 2]);
        let size = big.size();
        let waiting = Pending {
            queue: VecDeque::from([(last + 1, Arc::new(big), Instant::now())]),
            ops: 1,
            bytes: size,
            ..Pending::default()
        };
        assert_eq!(store.inner.ready(&waiting), None);
        let full = Pending {
            bytes: size + 1,
            ..waiting
        };
        assert_eq!(store.inner.ready(&full), Some(u64::MAX));
    }

    #[test]
    fn a_scan_sees_the_backend_overlaid_with_what_is_pending() {
        // Against a model, with writes pending and applied in every mix, pages of every size.
        let backend = Arc::new(MemoryStore::new());
        let store = CombiningStore::new(backend.clone());
        let mut model = std::collections::BTreeMap::new();
        let mut apply = |writes: &[(u8, Option<u8>)]| {
            let mut batch = Batch::new();
            for &(k, v) in writes {
                match v {
                    Some(v) => {
                        batch.put(vec![7, k], vec![v]);
                        model.insert(vec![7, k], vec![v]);
                    }
                    None => {
                        batch.delete(vec![7, k]);
                        model.remove(&vec![7, k]);
                    }
                }
            }
            store.apply(batch).expect("apply");
            model.clone()
        };
        apply(&[
            (1, Some(1)),
            (3, Some(3)),
            (5, Some(5)),
            (7, Some(7)),
            (9, Some(9)),
        ]);
        store.inner.apply_pending().expect("apply");
        let model = apply(&[
            (3, None),
            (4, Some(4)),
            (9, Some(90)),
            (2, Some(2)),
            (2, None),
        ]);
        assert!(
            !store.inner.pending.lock().queue.is_empty(),
            "still pending"
        );
        let mut afters: Vec<Option<Vec<u8>>> = vec![None, Some(vec![7]), Some(vec![8])];
        afters.extend((0..11).map(|k| Some(vec![7, k])));
        for after in &afters {
            for limit in [0, 1, 2, 3, 5, usize::MAX] {
                let want: Vec<Entry> = model
                    .iter()
                    .filter(|(k, _)| after.as_ref().is_none_or(|a| *k > a))
                    .take(limit)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let got = store.scan(&[7], after.as_deref(), limit).expect("scan");
                assert_eq!(got, want, "after {after:?} limit {limit}");
            }
        }
        assert_eq!(store.scan(&[8], None, 10).expect("scan"), vec![]);
        assert_eq!(backend.get(&[7, 4]).expect("get"), None, "nothing applied");

        // Pending removals hiding whole pages of stored entries: the next page is read.
        let mut batch = Batch::new();
        for k in 0..40u8 {
            batch.put(vec![6, k], vec![k]);
        }
        store.apply(batch).expect("apply");
        store.inner.apply_pending().expect("apply");
        let mut batch = Batch::new();
        for k in (0..30u8).filter(|k| k % 10 != 5) {
            batch.delete(vec![6, k]);
        }
        store.apply(batch).expect("apply");
        let keys = |page: Vec<Entry>| page.into_iter().map(|(k, _)| k[1]).collect::<Vec<_>>();
        assert_eq!(
            keys(store.scan(&[6], None, 4).expect("scan")),
            [5, 15, 25, 30]
        );
        assert_eq!(
            keys(store.scan(&[6], Some(&[6, 5]), 2).expect("scan")),
            [15, 25]
        );
        assert_eq!(store.scan(&[6], None, usize::MAX).expect("scan").len(), 13);
    }

    /// A store over a [`Backend`] in `dir` holding keys 0..10 (value = key), written one batch
    /// each, flushed and applied: the backend says it holds batches 1..=10.
    fn ten_applied(dir: &std::path::Path) -> (Arc<Backend>, CombiningStore) {
        let backend = Backend::new(dir, vec![]);
        let store = CombiningStore::open(backend.clone()).expect("open");
        for k in 0..10 {
            put(&store, k, Some(k));
        }
        store.flush().expect("flush");
        store.inner.apply_pending().expect("apply");
        assert_eq!(seq(&backend), Some(10));
        (backend, store)
    }

    #[test]
    fn a_backend_that_kept_any_part_is_put_right() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (backend, store) = ten_applied(dir.path());
        let kept = backend.entries();
        for k in 0..10 {
            put(&store, k, Some(100 + k));
        }
        put(&store, 3, None);
        store.flush().expect("flush");
        // The crash keeps the backend as it was at the scan, and the journal; and, as a
        // journaled chunk is applied without a batch, any part of what came after the mark.
        let crashed = journal_copy(dir.path());
        drop(store);
        let mut kept = kept;
        kept.extend([5u8, 6].map(|k| (vec![7, k], vec![100 + k])));

        let store = CombiningStore::open(Backend::new(crashed.path(), kept)).expect("reopen");
        for k in 0..10 {
            let want = (k != 3).then_some(100 + k);
            assert_eq!(value(&store, k), want, "key {k}");
        }
    }

    #[test]
    fn once_the_journal_breaks_the_backend_is_flushed_before_a_mark_above_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = Backend::new(dir.path(), vec![]);
        let store = CombiningStore::open(backend.clone()).expect("open");
        backend.log.lock().clear();
        put(&store, 1, Some(1));
        store.flush().expect("flush");
        store.inner.apply_pending().expect("apply");
        assert_eq!(*backend.log.lock(), ["journaled", "journaled"]);
        store
            .inner
            .journal
            .as_ref()
            .expect("journal")
            .break_for_test();
        // The key-by-key write above is made durable before a chunk whose mark goes above
        // every journal record (opening would trust that mark and replay nothing), once.
        put(&store, 2, Some(2));
        store.inner.apply_pending().expect("apply");
        put(&store, 3, Some(3));
        store.inner.apply_pending().expect("apply");
        assert_eq!(
            backend.log.lock()[2..],
            ["flush", "atomic", "atomic"],
            "{:?}",
            backend.log.lock()
        );
        assert_eq!(seq(&backend), Some(3));
    }

    #[test]
    fn a_power_cut_that_kept_the_mark_and_lost_an_earlier_write_is_put_right() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (backend, store) = ten_applied(dir.path());
        let mut kept = backend.entries();
        for k in 0..5 {
            put(&store, k, Some(100 + k));
        }
        store.flush().expect("flush");
        let crashed = journal_copy(dir.path());
        drop(store);
        // The disk's cache kept the backend's mark and lost an earlier write (key 7, written
        // once, below the mark): sled recovers what survived of its log, not a prefix.
        kept.retain(|(key, _)| key != &[7, 7]);

        let store = CombiningStore::open(Backend::new(crashed.path(), kept)).expect("reopen");
        for k in 0..10 {
            let want = if k < 5 { 100 + k } else { k };
            assert_eq!(value(&store, k), Some(want), "key {k}");
        }
    }

    #[test]
    fn journal_files_are_retired_as_they_fill_and_at_close() {
        let dir = tempfile::tempdir().expect("tempdir");
        let generations = |dir: &std::path::Path| {
            journal::files(dir)
                .expect("files")
                .into_iter()
                .map(|(g, _)| g)
                .collect::<Vec<_>>()
        };
        {
            let backend: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).expect("open"));
            let store = CombiningStore::open(backend).expect("open");
            // ~12 MB through the journal, flushed every 20 writes: three files' worth.
            for i in 0..12_000u32 {
                let mut batch = Batch::new();
                batch.put(i.to_be_bytes().to_vec(), vec![i as u8; 1000]);
                store.apply(batch).expect("apply");
                if i % 20 == 19 {
                    store.flush().expect("flush");
                    // The full file and its successor, until the applier retires the first.
                    assert!(generations(dir.path()).len() <= 2, "after write {i}");
                }
            }
            let mut polls = 0;
            while generations(dir.path()).len() > 1 {
                polls += 1;
                assert!(polls < 100, "never retired: {:?}", generations(dir.path()));
                std::thread::sleep(Duration::from_millis(50));
            }
            assert!(
                generations(dir.path())[0] >= 3,
                "{:?}",
                generations(dir.path())
            );
        }
        assert_eq!(generations(dir.path()), Vec::<u64>::new(), "a clean close");
        let store = SledStore::open(dir.path()).expect("reopen");
        for i in [0u32, 5_000, 11_999] {
            assert_eq!(
                store.get(&i.to_be_bytes()).expect("get"),
                Some(vec![i as u8; 1000])
            );
        }
    }

    /// With the environment variable set, this test is the child of the one below: it writes,
    /// flushes after each write, says how far it got and dies without closing anything.
    const CRASH_DIR: &str = "BRIDGE_TEST_JOURNAL_CRASH_DIR";

    #[test]
    fn acknowledged_writes_survive_the_process_being_killed() {
        const WRITES: u32 = 300;
        if let Some(dir) = std::env::var_os(CRASH_DIR) {
            let backend: Arc<dyn Store> =
                Arc::new(SledStore::open(std::path::Path::new(&dir)).expect("open"));
            let store = CombiningStore::open(backend).expect("open");
            for i in 0..WRITES {
                let mut batch = Batch::new();
                batch.put(i.to_be_bytes().to_vec(), vec![i as u8; 100]);
                batch.put([&[9][..], &i.to_be_bytes()].concat(), vec![1]);
                store.apply(batch).expect("apply");
                store.flush().expect("flush");
            }
            println!("acknowledged {WRITES}");
            std::process::abort();
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let child = std::process::Command::new(std::env::current_exe().expect("exe"))
            .args([
                "--exact",
                "store::combining::tests::acknowledged_writes_survive_the_process_being_killed",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CRASH_DIR, dir.path())
            .output()
            .expect("child runs");
        let out = String::from_utf8_lossy(&child.stdout);
        assert!(out.contains("acknowledged 300"), "{out}");
        assert!(!child.status.success(), "the child was to die");

        // What sled alone kept (its own flush runs once a second): usually nothing.
        let sled_alone = {
            let sled = SledStore::open(dir.path()).expect("open");
            (0..WRITES)
                .filter(|i| sled.get(&i.to_be_bytes()).expect("get").is_some())
                .count()
        };
        let backend: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).expect("reopen"));
        let store = CombiningStore::open(backend).expect("reopen");
        for i in 0..WRITES {
            assert_eq!(
                store.get(&i.to_be_bytes()).expect("get"),
                Some(vec![i as u8; 100]),
                "write {i} (sled alone had kept {sled_alone} of {WRITES})"
            );
            assert_eq!(
                store
                    .get(&[&[9][..], &i.to_be_bytes()].concat())
                    .expect("get"),
                Some(vec![1])
            );
        }
        eprintln!("sled alone had kept {sled_alone} of {WRITES} writes; the journal the rest");
    }
}
