//! The durable store: one ordered key/value space behind the [`Store`] trait.
//!
//! The core keeps everything it must not lose here: routing links, stored events, the ID map in
//! both directions, the outbox of every link, dead letters, known puppets, and each adapter's
//! private state. Keys are built by [`keys`] and start with a format version byte, so a later
//! release can migrate old keys. [`SledStore`] is the default (one directory, no server);
//! [`MemoryStore`] serves tests.
//!
//! Durability: [`Store::apply`] makes a batch atomic and visible at once; [`Store::flush`] makes
//! every applied batch survive a crash. The core batches flushes ([`crate::durability`]) and,
//! over a durable store, combines many small batches into a few large ones
//! ([`CombiningStore`]).

mod combining;
mod journal;
pub mod keys;
mod memory;
mod sled_store;

pub use combining::{CHUNK_OPS, CombiningStore, HIGH_WATER_OPS};
pub use journal::ROTATE_BYTES;
pub use memory::MemoryStore;
pub use sled_store::SledStore;

/// A store operation failed; the event it concerned was not acknowledged.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend failed (I/O error, corruption).
    #[error("store backend: {0}")]
    Backend(String),
    /// A stored value could not be decoded.
    #[error("stored value at {key} is invalid: {message}")]
    Corrupt {
        /// The key, printed for humans.
        key: String,
        /// What was wrong.
        message: String,
    },
    /// The data was written by a newer release.
    #[error("store format version {found} is newer than this build supports ({supported})")]
    FutureFormat {
        /// Version found in the store.
        found: u8,
        /// Version this build writes.
        supported: u8,
    },
}

/// A set of writes applied atomically.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    ops: Vec<Op>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty batch with room for `ops` operations.
    pub fn with_capacity(ops: usize) -> Self {
        Self {
            ops: Vec::with_capacity(ops),
        }
    }

    /// Sets `key` to `value`.
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.ops.push((key, Some(value)));
    }

    /// Removes `key`.
    pub fn delete(&mut self, key: Vec<u8>) {
        self.ops.push((key, None));
    }

    /// Appends every operation of `other`.
    pub fn extend(&mut self, other: Batch) {
        self.ops.extend(other.ops);
    }

    /// True when the batch has no operation.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// The bytes of its keys and values.
    pub fn size(&self) -> usize {
        self.ops
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
            .sum()
    }

    /// The keys written, in order (with repeats).
    pub fn keys(&self) -> impl Iterator<Item = &[u8]> {
        self.ops.iter().map(|(k, _)| k.as_slice())
    }

    /// The operations, in order (`None`: delete).
    pub fn ops(&self) -> impl DoubleEndedIterator<Item = (&[u8], Option<&[u8]>)> + Clone {
        self.ops.iter().map(|(k, v)| (k.as_slice(), v.as_deref()))
    }

    /// What the batch does to `key` in the end: `Some(Some(value))` sets it, `Some(None)`
    /// removes it, `None`: the batch does not touch it.
    pub fn last_op(&self, key: &[u8]) -> Option<Option<&[u8]>> {
        self.ops
            .iter()
            .rev()
            .find(|(k, _)| k.as_slice() == key)
            .map(|(_, v)| v.as_deref())
    }

    /// The operations, in order (`None`: delete).
    pub fn into_ops(self) -> Vec<Op> {
        self.ops
    }
}

/// One operation of a [`Batch`]: a key and its new value (`None`: delete).
pub type Op = (Vec<u8>, Option<Vec<u8>>);

/// A key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// A fast hasher for the in-memory maps keyed by store keys (SipHash dominated their cost),
/// seeded once per process so that its output cannot be predicted from outside.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(K);
        }
        let mut word = [0u8; 8];
        let rest = chunks.remainder();
        word[..rest.len()].copy_from_slice(rest);
        self.0 =
            (self.0.rotate_left(5) ^ u64::from_le_bytes(word) ^ rest.len() as u64).wrapping_mul(K);
    }

    fn write_usize(&mut self, n: usize) {
        self.0 = (self.0.rotate_left(5) ^ n as u64).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn finish(&self) -> u64 {
        // Mix the high bits down: hashbrown uses the top 7 bits and the low bits.
        let h = self.0;
        (h ^ (h >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ (h >> 32)
    }
}

/// A hash map with [`KeyHash`]: for the core's own lookups on every event (routing, queues,
/// puppets), where SipHash was a few per cent of the in-memory bench.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, KeyHash>;

/// A hash set with [`KeyHash`] (see [`FastMap`]).
pub(crate) type FastSet<T> = std::collections::HashSet<T, KeyHash>;

/// Builds [`KeyHasher`]s with this process's seed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeyHash(u64);

impl Default for KeyHash {
    fn default() -> Self {
        static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        Self(*SEED.get_or_init(rand::random))
    }
}

impl std::hash::BuildHasher for KeyHash {
    type Hasher = KeyHasher;

    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(self.0)
    }
}

/// An ordered key/value store with atomic batches and an explicit flush.
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// The value of `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Applies every operation of `batch` atomically; visible to readers at once, durable after
    /// the next [`Store::flush`].
    fn apply(&self, batch: Batch) -> Result<(), StoreError>;

    /// Applies `batches` one after the other, all of them atomically (the combined writes of
    /// many writers, see [`CombiningStore`]). The default merges copies into one batch.
    fn apply_all(&self, batches: &[&Batch]) -> Result<(), StoreError> {
        let mut all = Batch::new();
        for batch in batches {
            all.ops.extend(batch.ops.iter().cloned());
        }
        self.apply(all)
    }

    /// Applies the writes of `batches` (the last write of each key is enough), which a
    /// write-ahead journal already holds durably, without making them atomic: a crash may keep
    /// any part of them (and of what came after them); the journal's replay of every record it
    /// still has puts each key right. For [`CombiningStore::open`]'s applier; the default
    /// applies them atomically with [`Store::apply_all`].
    fn apply_journaled(&self, batches: &[&Batch]) -> Result<(), StoreError> {
        self.apply_all(batches)
    }

    /// Up to `limit` entries whose key starts with `prefix` and is greater than `after` (when
    /// given), in key order.
    fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError>;

    /// The entry with the greatest key starting with `prefix`.
    fn last(&self, prefix: &[u8]) -> Result<Option<Entry>, StoreError>;

    /// Blocks until every applied batch is on stable storage.
    fn flush(&self) -> Result<(), StoreError>;

    /// False for stores that keep nothing across a restart: flushing them is skipped.
    fn is_durable(&self) -> bool;

    /// A directory of this store's own where the core may keep a write-ahead journal in front
    /// of it ([`CombiningStore::open`]): flushes then sync the journal, and the store itself is
    /// flushed only now and then. The store must keep through a crash or a power cut what its
    /// [`Store::flush`] covered, and stay readable; of its writes since then it may keep any
    /// part (it gets only writes the journal holds, and opening replays them all). None (the
    /// default): no journal.
    fn journal_dir(&self) -> Option<&std::path::Path> {
        None
    }
}

/// Entries read per page by [`for_each_with_prefix`] and [`delete_with_prefix`].
const PAGE: usize = 1024;

/// Visits every entry whose key starts with `prefix`, in key order, a page at a time.
pub fn for_each_with_prefix(
    store: &dyn Store,
    prefix: &[u8],
    mut visit: impl FnMut(&[u8], &[u8]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = store.scan(prefix, after.as_deref(), PAGE)?;
        for (key, value) in &page {
            visit(key, value)?;
        }
        if page.len() < PAGE {
            return Ok(());
        }
        after = page.last().map(|(k, _)| k.clone());
    }
}

/// Deletes every entry whose key starts with `prefix`, one page per batch, each batch written
/// with `apply`.
pub(crate) fn delete_with_prefix(
    store: &dyn Store,
    prefix: &[u8],
    mut apply: impl FnMut(Batch) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    loop {
        let page = store.scan(prefix, None, PAGE)?;
        if page.is_empty() {
            return Ok(());
        }
        let mut batch = Batch::new();
        for (key, _) in page {
            batch.delete(key);
        }
        apply(batch)?;
    }
}

/// Checks (and on a new or older store, writes) the format version.
pub(crate) fn check_format(store: &dyn Store) -> Result<(), StoreError> {
    let found = store
        .get(keys::FORMAT_KEY)?
        .map(|v| v.first().copied().unwrap_or(0));
    match found {
        Some(keys::FORMAT_VERSION) => Ok(()),
        // A new store, or an older format, which is valid data of this one (see `keys`).
        None | Some(1..keys::FORMAT_VERSION) => {
            let mut batch = Batch::new();
            batch.put(keys::FORMAT_KEY.to_vec(), vec![keys::FORMAT_VERSION]);
            store.apply(batch)?;
            store.flush()
        }
        Some(found) => Err(StoreError::FutureFormat {
            found,
            supported: keys::FORMAT_VERSION,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise(store: &dyn Store) {
        let mut batch = Batch::new();
        for i in 0u8..10 {
            batch.put(vec![1, 2, i], vec![i]);
        }
        batch.put(vec![1, 3, 0], vec![99]);
        store.apply(batch).expect("apply");
        assert_eq!(store.get(&[1, 2, 4]).expect("get"), Some(vec![4]));
        let page = store.scan(&[1, 2], Some(&[1, 2, 3]), 3).expect("scan");
        let keys: Vec<_> = page.iter().map(|(k, _)| k[2]).collect();
        assert_eq!(keys, vec![4, 5, 6]);
        assert_eq!(
            store.last(&[1, 2]).expect("last").map(|e| e.1),
            Some(vec![9])
        );
        let mut batch = Batch::new();
        batch.delete(vec![1, 2, 9]);
        store.apply(batch).expect("delete");
        assert_eq!(
            store.last(&[1, 2]).expect("last").map(|e| e.1),
            Some(vec![8])
        );
        assert_eq!(store.scan(&[1, 4], None, 10).expect("scan"), vec![]);
        store.flush().expect("flush");
    }

    #[test]
    fn memory_store_behaves() {
        exercise(&MemoryStore::new());
    }

    #[test]
    fn memory_store_scans_hashed_tables_in_order() {
        let store = MemoryStore::new();
        let mut batch = Batch::new();
        for i in [5u8, 1, 9, 3] {
            batch.put(vec![keys::KEY_VERSION, keys::tag::EVENT, i], vec![i]);
        }
        batch.put(vec![keys::KEY_VERSION, keys::tag::OUTBOX, 0], vec![0]);
        store.apply(batch).expect("apply");
        let event = [keys::KEY_VERSION, keys::tag::EVENT];
        let page = store.scan(&event, Some(&[1, b'E', 1]), 2).expect("scan");
        assert_eq!(page.iter().map(|e| e.1[0]).collect::<Vec<_>>(), vec![3, 5]);
        assert_eq!(
            store.last(&event).expect("last").map(|e| e.1),
            Some(vec![9])
        );
        let all = store.scan(&[keys::KEY_VERSION], None, 10).expect("scan");
        let keys: Vec<u8> = all.iter().map(|(k, _)| k[1]).collect();
        assert_eq!(keys, vec![b'E', b'E', b'E', b'E', b'O']);
    }

    #[test]
    fn memory_store_scans_room_logs_per_room_and_across_them() {
        use keys::{Key, tag};
        let store = MemoryStore::new();
        let entry = |room: &str, id: u128| {
            Key::new(tag::ROOM_LOG)
                .str(room)
                .id(crate::ids::EventId::from_u128(id))
                .build()
        };
        let mut batch = Batch::new();
        for (room, id) in [("b", 2), ("a", 3), ("a", 1), ("ab", 1), ("a", 2), ("b", 1)] {
            batch.put(entry(room, id), vec![id as u8]);
        }
        batch.put(Key::new(tag::OUTBOX).build(), vec![0]);
        store.apply(batch).expect("apply");
        let mut batch = Batch::new();
        batch.delete(entry("a", 2));
        store.apply(batch).expect("delete");
        assert_eq!(store.get(&entry("a", 3)).expect("get"), Some(vec![3]));
        assert_eq!(store.get(&entry("a", 2)).expect("get"), None);

        let room_a = Key::new(tag::ROOM_LOG).str("a").build();
        let page = store.scan(&room_a, None, 10).expect("scan");
        assert_eq!(
            page,
            vec![(entry("a", 1), vec![1]), (entry("a", 3), vec![3])]
        );
        let page = store.scan(&room_a, Some(&entry("a", 1)), 10).expect("scan");
        assert_eq!(page, vec![(entry("a", 3), vec![3])]);
        assert_eq!(
            store.last(&room_a).expect("last"),
            Some((entry("a", 3), vec![3]))
        );
        // Across rooms (a prefix shorter than a room), merged with the other tables, in order.
        let all = store.scan(&[keys::KEY_VERSION], None, 10).expect("scan");
        let mut sorted = vec![
            entry("a", 1),
            entry("a", 3),
            entry("b", 1),
            entry("b", 2),
            entry("ab", 1),
            Key::new(tag::OUTBOX).build(),
        ];
        sorted.sort();
        assert_eq!(all.into_iter().map(|e| e.0).collect::<Vec<_>>(), sorted);
        let page = store
            .scan(&Key::new(tag::ROOM_LOG).build(), Some(&entry("a", 3)), 2)
            .expect("scan");
        assert_eq!(page.len(), 2);
        assert!(
            page.iter()
                .all(|(k, _)| k.as_slice() > entry("a", 3).as_slice())
        );
    }

    #[test]
    fn memory_store_room_logs_order_any_key_like_its_bytes() {
        // Event IDs are kept as numbers, other lengths as bytes: scans must still follow the
        // bytes' order, whatever the mix. Checked against an ordered map of the same entries.
        use keys::{Key, tag};
        let room = Key::new(tag::ROOM_LOG).str("a").build();
        let id = |n: u128| n.to_be_bytes().to_vec();
        let rests: Vec<Vec<u8>> = vec![
            vec![0, 0, 0],
            id(1),
            [id(1), vec![5]].concat(),
            id(u128::MAX),
            vec![0xff; 17],
            vec![],
            id(256),
            vec![0; 15],
        ];
        let store = MemoryStore::new();
        let mut model = std::collections::BTreeMap::new();
        let mut batch = Batch::new();
        for (i, rest) in rests.iter().enumerate() {
            let key = [room.as_slice(), rest].concat();
            batch.put(key.clone(), vec![i as u8]);
            model.insert(key, vec![i as u8]);
        }
        store.apply(batch).expect("apply");
        let mut prefixes = vec![room.clone(), [room.as_slice(), &[0; 15]].concat()];
        prefixes.push([room.as_slice(), &id(1)].concat());
        for prefix in &prefixes {
            let mut afters: Vec<Option<Vec<u8>>> = vec![None];
            afters.extend(model.keys().cloned().map(Some));
            for after in afters {
                let want: Vec<Entry> = model
                    .iter()
                    .filter(|(k, _)| k.starts_with(prefix))
                    .filter(|(k, _)| after.as_ref().is_none_or(|a| *k > a))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let got = store.scan(prefix, after.as_deref(), 100).expect("scan");
                assert_eq!(got, want, "prefix {prefix:?} after {after:?}");
            }
            let last = model
                .iter()
                .rfind(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| (k.clone(), v.clone()));
            assert_eq!(store.last(prefix).expect("last"), last, "{prefix:?}");
        }
        for (key, value) in &model {
            assert_eq!(store.get(key).expect("get").as_ref(), Some(value));
        }
    }

    #[test]
    fn sled_store_behaves_and_persists() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = SledStore::open(dir.path()).expect("open");
            exercise(&store);
        }
        let store = SledStore::open(dir.path()).expect("reopen");
        assert_eq!(store.get(&[1, 2, 8]).expect("get"), Some(vec![8]));
        assert_eq!(store.get(&[1, 2, 9]).expect("get"), None);
    }

    #[test]
    fn an_older_format_is_upgraded() {
        let store = MemoryStore::new();
        let mut batch = Batch::new();
        batch.put(keys::FORMAT_KEY.to_vec(), vec![1]);
        store.apply(batch).expect("apply");
        check_format(&store).expect("upgrade");
        assert_eq!(
            store.get(keys::FORMAT_KEY).expect("get"),
            Some(vec![keys::FORMAT_VERSION])
        );
    }

    #[test]
    fn future_format_is_refused() {
        let store = MemoryStore::new();
        let mut batch = Batch::new();
        batch.put(keys::FORMAT_KEY.to_vec(), vec![keys::FORMAT_VERSION + 1]);
        store.apply(batch).expect("apply");
        assert!(matches!(
            check_format(&store),
            Err(StoreError::FutureFormat { .. })
        ));
    }
}
