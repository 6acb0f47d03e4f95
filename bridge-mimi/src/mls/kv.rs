//! The key/value space the MLS layer keeps its state in.
//!
//! [`KvStore`] is the small part of a store the MLS layer needs. The adapter uses its
//! [`AdapterStore`] (the per-adapter namespace of the bridge's store); tests and benchmarks use
//! [`StoreKv`] over any [`bridge_core::Store`] (a [`bridge_core::MemoryStore`], or a
//! [`bridge_core::SledStore`] to survive a reopen).

use std::sync::Arc;

use bridge_core::store::{Batch, Entry};
use bridge_core::{AdapterStore, Store, StoreError};

/// Get, atomic put/delete and prefix scan over byte keys.
pub trait KvStore: Send + Sync + std::fmt::Debug {
    /// The value of `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Sets every `(key, value)` of `puts` in one atomic write.
    fn put_all(&self, puts: &[(&[u8], &[u8])]) -> Result<(), StoreError>;

    /// Removes `key`.
    fn delete(&self, key: &[u8]) -> Result<(), StoreError>;

    /// Up to `limit` entries whose key starts with `prefix`, in key order.
    fn scan(&self, prefix: &[u8], limit: usize) -> Result<Vec<Entry>, StoreError>;
}

impl KvStore for AdapterStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        AdapterStore::get(self, key)
    }

    fn put_all(&self, puts: &[(&[u8], &[u8])]) -> Result<(), StoreError> {
        AdapterStore::put_all(self, puts)
    }

    fn delete(&self, key: &[u8]) -> Result<(), StoreError> {
        AdapterStore::delete(self, key)
    }

    fn scan(&self, prefix: &[u8], limit: usize) -> Result<Vec<Entry>, StoreError> {
        AdapterStore::scan(self, prefix, limit)
    }
}

/// A [`KvStore`] over a whole [`Store`], every key under `namespace`.
#[derive(Debug, Clone)]
pub struct StoreKv {
    store: Arc<dyn Store>,
    namespace: Vec<u8>,
}

impl StoreKv {
    /// Keys of this view live under `namespace` in `store`.
    pub fn new(store: Arc<dyn Store>, namespace: &[u8]) -> Self {
        Self {
            store,
            namespace: namespace.to_vec(),
        }
    }

    fn key(&self, key: &[u8]) -> Vec<u8> {
        let mut full = Vec::with_capacity(self.namespace.len() + key.len());
        full.extend_from_slice(&self.namespace);
        full.extend_from_slice(key);
        full
    }
}

impl KvStore for StoreKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.store.get(&self.key(key))
    }

    fn put_all(&self, puts: &[(&[u8], &[u8])]) -> Result<(), StoreError> {
        let mut batch = Batch::with_capacity(puts.len());
        for (key, value) in puts {
            batch.put(self.key(key), value.to_vec());
        }
        self.store.apply(batch)
    }

    fn delete(&self, key: &[u8]) -> Result<(), StoreError> {
        let mut batch = Batch::new();
        batch.delete(self.key(key));
        self.store.apply(batch)
    }

    fn scan(&self, prefix: &[u8], limit: usize) -> Result<Vec<Entry>, StoreError> {
        let n = self.namespace.len();
        Ok(self
            .store
            .scan(&self.key(prefix), None, limit)?
            .into_iter()
            .map(|(k, v)| (k[n..].to_vec(), v))
            .collect())
    }
}
