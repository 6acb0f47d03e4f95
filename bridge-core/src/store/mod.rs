//! The durable store: one ordered key/value space behind the [`Store`] trait.
//!
//! The core keeps everything it must not lose here: routing links, stored events, the ID map in
//! both directions, the outbox of every link, dead letters, known puppets, and each adapter's
//! private state. Keys are built by [`keys`] and start with a format version byte, so a later
//! release can migrate old keys. [`SledStore`] is the default (one directory, no server);
//! [`MemoryStore`] serves tests.
//!
//! Durability: [`Store::apply`] makes a batch atomic and visible at once; [`Store::flush`] makes
//! every applied batch survive a crash. The core batches flushes ([`crate::durability`]).

pub mod keys;
mod memory;
mod sled_store;

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
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to `value`.
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.ops.push((key, Some(value)));
    }

    /// Removes `key`.
    pub fn delete(&mut self, key: Vec<u8>) {
        self.ops.push((key, None));
    }

    /// True when the batch has no operation.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The operations, in order (`None`: delete).
    pub fn into_ops(self) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        self.ops
    }
}

/// A key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// An ordered key/value store with atomic batches and an explicit flush.
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// The value of `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Applies every operation of `batch` atomically; visible to readers at once, durable after
    /// the next [`Store::flush`].
    fn apply(&self, batch: Batch) -> Result<(), StoreError>;

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
}

/// Checks (and on a new store, writes) the format version.
pub(crate) fn check_format(store: &dyn Store) -> Result<(), StoreError> {
    match store.get(keys::FORMAT_KEY)? {
        Some(v) if v.first() == Some(&keys::FORMAT_VERSION) => Ok(()),
        Some(v) => Err(StoreError::FutureFormat {
            found: v.first().copied().unwrap_or(0),
            supported: keys::FORMAT_VERSION,
        }),
        None => {
            let mut batch = Batch::new();
            batch.put(keys::FORMAT_KEY.to_vec(), vec![keys::FORMAT_VERSION]);
            store.apply(batch)?;
            store.flush()
        }
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
