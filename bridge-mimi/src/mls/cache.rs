//! Groups kept in memory between operations.
//!
//! openmls' `MlsGroup::load` rebuilds a group from the store: the whole ratchet tree, every
//! leaf's credential and keys. In a 1,000-member group that is most of the cost of sending or
//! reading a message, so the host keeps the groups it used last (a puppet's view of a room, or
//! the hub's public view of a followed room) in a bounded cache, least recently used first out.
//!
//! The store stays the truth: every operation still writes all its changes to the store in its
//! one atomic batch (write-through), so a crash loses nothing the cache held. An operation
//! *checks out* the groups it uses (taking them out of the cache) and they go back only when
//! its batch is in the store; an operation that fails drops them, and the next one reloads
//! from the store, which the failure did not touch. Checked-out groups are invisible to any
//! other operation, and operations on one room are serialised anyway (see
//! [`super::MlsHost`]).

use std::collections::HashMap;

use openmls::prelude::{MlsGroup, PublicGroup};
use parking_lot::Mutex;

/// The default number of groups a host keeps in memory.
pub const DEFAULT_GROUP_CACHE: usize = 64;

/// Which group, seen by whom.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct GroupKey {
    /// The storage namespace (client URI, or the hub's URI for a public view).
    pub(crate) owner: String,
    /// The MLS group ID.
    pub(crate) group: Vec<u8>,
    /// The hub's public view (`PublicGroup`) rather than a member's (`MlsGroup`).
    pub(crate) public: bool,
}

/// A group kept between operations.
pub(crate) enum CachedGroup {
    /// A member's view.
    Member(Box<MlsGroup>),
    /// The hub's view of a group it follows without being a member.
    Public(Box<PublicGroup>),
}

struct Slot {
    group: CachedGroup,
    last_used: u64,
}

#[derive(Default)]
struct Inner {
    slots: HashMap<GroupKey, Slot>,
    clock: u64,
}

/// A bounded map of groups, the least recently used evicted first.
pub(crate) struct GroupCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for GroupCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCache")
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .finish()
    }
}

impl GroupCache {
    /// A cache of at most `capacity` groups (0: none kept).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Takes `key`'s group out of the cache.
    pub(crate) fn take(&self, key: &GroupKey) -> Option<CachedGroup> {
        self.inner.lock().slots.remove(key).map(|slot| slot.group)
    }

    /// Keeps `group` under `key`, evicting the least recently used group when full.
    pub(crate) fn put(&self, key: GroupKey, group: CachedGroup) {
        if self.capacity == 0 {
            return;
        }
        let mut inner = self.inner.lock();
        inner.clock += 1;
        let last_used = inner.clock;
        inner.slots.remove(&key);
        while inner.slots.len() >= self.capacity {
            // A linear scan: eviction only happens when the cache is full, and a full cache
            // holds at most `capacity` entries.
            let Some(oldest) = inner
                .slots
                .iter()
                .min_by_key(|(_, slot)| slot.last_used)
                .map(|(key, _)| key.clone())
            else {
                break;
            };
            inner.slots.remove(&oldest);
        }
        inner.slots.insert(key, Slot { group, last_used });
    }

    /// Forgets `key`'s group.
    pub(crate) fn remove(&self, key: &GroupKey) {
        self.inner.lock().slots.remove(key);
    }

    /// The number of groups held.
    pub(crate) fn len(&self) -> usize {
        self.inner.lock().slots.len()
    }

    /// The most groups held.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openmls::prelude::*;
    use openmls_basic_credential::SignatureKeyPair;
    use openmls_rust_crypto::OpenMlsRustCrypto;

    fn group() -> CachedGroup {
        let provider = OpenMlsRustCrypto::default();
        let suite = super::super::CIPHERSUITE;
        let signer = SignatureKeyPair::new(suite.signature_algorithm()).expect("keys");
        let credential = CredentialWithKey {
            credential: BasicCredential::new(b"mimi://a.example/d/x/bridge".to_vec()).into(),
            signature_key: signer.public().into(),
        };
        let group = MlsGroup::builder()
            .ciphersuite(suite)
            .build(&provider, &signer, credential)
            .expect("group");
        CachedGroup::Member(Box::new(group))
    }

    fn key(n: u8) -> GroupKey {
        GroupKey {
            owner: "o".into(),
            group: vec![n],
            public: false,
        }
    }

    #[test]
    fn the_least_recently_used_group_goes_first() {
        let cache = GroupCache::new(2);
        cache.put(key(1), group());
        cache.put(key(2), group());
        // 1 is used again (taken and put back): 2 is now the oldest.
        let one = cache.take(&key(1)).expect("cached");
        cache.put(key(1), one);
        cache.put(key(3), group());
        assert_eq!(cache.len(), 2);
        assert!(cache.take(&key(2)).is_none());
        assert!(cache.take(&key(1)).is_some());
        assert!(cache.take(&key(3)).is_some());
        assert!(cache.take(&key(3)).is_none(), "taking removes");
    }

    #[test]
    fn a_zero_capacity_keeps_nothing() {
        let cache = GroupCache::new(0);
        cache.put(key(1), group());
        assert_eq!(cache.len(), 0);
        assert!(cache.take(&key(1)).is_none());
    }
}
