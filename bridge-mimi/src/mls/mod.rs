//! The MLS layer (RFC 9420): the bridge's puppet clients, their KeyPackages, and the rooms'
//! MLS groups with MIMI's room state (draft-ietf-mimi-protocol-06 §4.2, §7).
//!
//! One [`MlsHost`] holds everything for one provider domain: a puppet client per bridged user
//! (identity `mimi://DOMAIN/u/<user>`, client `mimi://DOMAIN/d/<user>/bridge`, a
//! BasicCredential with the client URI, an Ed25519 signature key), the hub's own signing key
//! (the group's `external_senders`), and the groups. All of it lives in the bridge's store
//! ([`kv::KvStore`]); nothing is global, so several hosts can run side by side in a benchmark.
//!
//! End-to-end encryption ends at the bridge: it holds its puppets' private keys, decrypts what
//! MIMI users send and encrypts what XMPP and Matrix users say.
//!
//! Every operation writes its changes in one atomic batch ([`storage::Overlay`]): a crash
//! between two operations loses nothing, a crash inside one loses all of it, and an operation
//! that fails (a malformed or stale message) changes nothing. The batch is visible at once and
//! durable after the store's flush: over an [`bridge_core::AdapterStore`], await its `flush()`
//! before acknowledging what the operation answered (a `/notify`, an `/update`).
//!
//! Operations on one room run one at a time, so two of them never load the same group state
//! and both write a successor; operations on different rooms run in parallel. Operations that
//! touch more than one room's state (creating a room, joining from a Welcome, adding clients,
//! KeyPackages) run alone.
//!
//! The groups used last stay in memory between operations (a bounded LRU; capacity
//! [`MlsHost::with_group_cache`], default [`DEFAULT_GROUP_CACHE`]): sending or reading a
//! message then costs its cryptography and its write, not a reload of the whole group. The
//! store remains the truth: every change is written through, and a failed operation drops the
//! groups it used from memory.

mod cache;
mod clients;
mod hub;
pub mod kv;
mod labels;
pub mod metadata;
mod pack;
pub mod participants;
pub mod policy;
mod rooms;
pub mod split;
pub mod storage;
pub mod uri;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use openmls::prelude::*;
use openmls_rust_crypto::RustCrypto;
use parking_lot::{Mutex, RwLock};

use crate::codepoints;
use kv::KvStore;
use participants::RoomStateError;
use storage::{MlsStorage, MlsStorageError, Overlay};

use cache::{CachedGroup, GroupCache, GroupKey};

pub use cache::DEFAULT_GROUP_CACHE;
pub use clients::KeyPackageSettings;
pub use labels::{LabeledSignature, labeled};
pub use rooms::{CommitOutput, Decrypted, PAST_EPOCHS, Participant, Processed, RoomProfile};

/// An MLS operation failed. Nothing was written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MlsError {
    /// The store failed, or stored state could not be decoded.
    #[error(transparent)]
    Storage(#[from] MlsStorageError),
    /// The input is not the MLS structure expected (bad bytes, wrong message type).
    #[error("malformed MLS input: {0}")]
    Malformed(String),
    /// A handshake message for another epoch than the group's.
    #[error("message for epoch {message} but the group is at epoch {current}")]
    WrongEpoch {
        /// The group's epoch.
        current: u64,
        /// The message's epoch.
        message: u64,
    },
    /// The room is not known (no local puppet is a member).
    #[error("no local member in room {0}")]
    UnknownRoom(String),
    /// The user's puppet is not a member of the room.
    #[error("{user} is not a member of {room}")]
    NotAMember {
        /// The room.
        room: String,
        /// The user.
        user: String,
    },
    /// A room with this URI exists already.
    #[error("room {0} exists already")]
    RoomExists(String),
    /// A client asked to join a room it is already a member of (its first request was
    /// committed; its Welcome is on the way).
    #[error("{client} is already a member of {room}")]
    AlreadyMember {
        /// The room.
        room: String,
        /// The client.
        client: String,
    },
    /// A Welcome for none of our KeyPackages.
    #[error("the Welcome is for none of this bridge's KeyPackages")]
    NotForUs,
    /// A participant-list update does not apply, or the component's data is invalid.
    #[error(transparent)]
    RoomState(#[from] RoomStateError),
    /// The room's policy does not let the actor do this (their role lacks the capability).
    #[error("not allowed by the room's policy: {0}")]
    NotAllowed(String),
    /// An AppDataUpdate for a component this bridge does not know, or an operation it refuses.
    #[error("invalid room state change: {0}")]
    InvalidStateChange(String),
    /// The sending member's group holds proposals of this epoch not committed yet (a
    /// member's own Remove proposal, say): openmls creates no application message until the
    /// hub's commit of them arrives, so this passes.
    #[error("{0}: a proposal awaits the hub's commit")]
    ProposalPending(String),
    /// openmls refused the operation (invalid signature, membership tag, proposal, …).
    #[error("MLS {op}: {message}")]
    Mls {
        /// What was being done.
        op: &'static str,
        /// openmls' error, printed.
        message: String,
    },
}

impl From<bridge_core::StoreError> for MlsError {
    fn from(e: bridge_core::StoreError) -> Self {
        Self::Storage(e.into())
    }
}

impl From<serde_json::Error> for MlsError {
    fn from(e: serde_json::Error) -> Self {
        Self::Storage(e.into())
    }
}

/// Wraps an openmls error with what was being done.
fn mls_err(op: &'static str) -> impl FnOnce(&dyn std::fmt::Display) -> MlsError {
    move |e| MlsError::Mls {
        op,
        message: e.to_string(),
    }
}

/// The ciphersuite of every group and KeyPackage ([`codepoints`]: 0x0001).
pub const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

const _: () = assert!(
    CIPHERSUITE as u16 == codepoints::CIPHERSUITE_MLS_128_DHKEMX25519_AES128GCM_SHA256_ED25519
);

/// An openmls provider for one client: the shared crypto and that client's storage.
#[derive(Debug)]
pub(crate) struct Provider<'a> {
    crypto: &'a RustCrypto,
    storage: MlsStorage,
}

impl OpenMlsProvider for Provider<'_> {
    type CryptoProvider = RustCrypto;
    type RandProvider = RustCrypto;
    type StorageProvider = MlsStorage;

    fn storage(&self) -> &MlsStorage {
        &self.storage
    }

    fn crypto(&self) -> &RustCrypto {
        self.crypto
    }

    fn rand(&self) -> &RustCrypto {
        self.crypto
    }
}

/// The bridge's MLS state for one provider domain (see the module documentation).
pub struct MlsHost {
    domain: String,
    kv: Arc<dyn KvStore>,
    crypto: RustCrypto,
    key_packages: KeyPackageSettings,
    /// Held shared by an operation confined to one room (with that room's lock), exclusively
    /// by one that is not.
    op_lock: RwLock<()>,
    /// Room locks: a room's URI hashes to one of these. Two operations on the same group must
    /// not load the same state and both write their successor; two rooms that share a lock
    /// only wait for each other.
    room_locks: Box<[Mutex<()>]>,
    /// Groups kept between operations.
    cache: GroupCache,
}

/// How many locks the rooms of a host share.
const ROOM_LOCKS: usize = 64;

impl std::fmt::Debug for MlsHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MlsHost")
            .field("domain", &self.domain)
            .field("key_packages", &self.key_packages)
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

/// One operation's pending writes, and the groups it checked out of the cache.
pub(crate) struct Tx {
    overlay: Arc<Overlay>,
    /// Groups to put back in the cache if the operation's writes reach the store.
    returned: Mutex<Vec<(GroupKey, CachedGroup)>>,
    /// Groups whose stored state the operation replaced without checking them out (a join,
    /// a new group): whatever the cache holds for them is dropped.
    stale: Mutex<Vec<GroupKey>>,
}

impl std::fmt::Debug for Tx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tx")
            .field("overlay", &self.overlay)
            .finish_non_exhaustive()
    }
}

impl Tx {
    fn new() -> Self {
        Self {
            overlay: Overlay::new(),
            returned: Mutex::new(Vec::new()),
            stale: Mutex::new(Vec::new()),
        }
    }

    /// The cache's copy of `key`, if any, must not be used after this operation.
    pub(crate) fn mark_stale(&self, key: GroupKey) {
        self.returned.lock().retain(|(k, _)| *k != key);
        self.stale.lock().push(key);
    }
}

/// A group an operation checked out: back in the cache when the operation's writes are in the
/// store, dropped otherwise.
pub(crate) struct Checked<'t, G: Cacheable> {
    tx: &'t Tx,
    key: GroupKey,
    group: Option<Box<G>>,
}

impl<G: Cacheable> Checked<'_, G> {
    /// The group was deleted: nothing goes back to the cache.
    pub(crate) fn discard(mut self) {
        self.group = None;
        self.tx.mark_stale(self.key.clone());
    }
}

impl<G: Cacheable> std::ops::Deref for Checked<'_, G> {
    type Target = G;

    fn deref(&self) -> &G {
        // Some until dropped or discarded, both of which consume the guard.
        self.group.as_deref().unwrap_or_else(|| unreachable!())
    }
}

impl<G: Cacheable> std::ops::DerefMut for Checked<'_, G> {
    fn deref_mut(&mut self) -> &mut G {
        self.group.as_deref_mut().unwrap_or_else(|| unreachable!())
    }
}

impl<G: Cacheable> Drop for Checked<'_, G> {
    fn drop(&mut self) {
        if let Some(group) = self.group.take() {
            self.tx
                .returned
                .lock()
                .push((self.key.clone(), G::into_cached(group)));
        }
    }
}

/// A kind of group the cache keeps.
pub(crate) trait Cacheable: Sized {
    /// Whether this is the hub's public view.
    const PUBLIC: bool;
    /// Wraps the group for the cache.
    fn into_cached(group: Box<Self>) -> CachedGroup;
    /// The group, if `cached` is of this kind.
    fn from_cached(cached: CachedGroup) -> Option<Box<Self>>;
    /// Loads the group from the store.
    fn load(storage: &MlsStorage, group_id: &GroupId) -> Result<Option<Self>, MlsError>;
}

impl Cacheable for MlsGroup {
    const PUBLIC: bool = false;

    fn into_cached(group: Box<Self>) -> CachedGroup {
        CachedGroup::Member(group)
    }

    fn from_cached(cached: CachedGroup) -> Option<Box<Self>> {
        match cached {
            CachedGroup::Member(group) => Some(group),
            CachedGroup::Public(_) => None,
        }
    }

    fn load(storage: &MlsStorage, group_id: &GroupId) -> Result<Option<Self>, MlsError> {
        Ok(MlsGroup::load(storage, group_id)?)
    }
}

impl Cacheable for PublicGroup {
    const PUBLIC: bool = true;

    fn into_cached(group: Box<Self>) -> CachedGroup {
        CachedGroup::Public(group)
    }

    fn from_cached(cached: CachedGroup) -> Option<Box<Self>> {
        match cached {
            CachedGroup::Public(group) => Some(group),
            CachedGroup::Member(_) => None,
        }
    }

    fn load(storage: &MlsStorage, group_id: &GroupId) -> Result<Option<Self>, MlsError> {
        Ok(PublicGroup::load(storage, group_id)?)
    }
}

/// The cache key of `owner`'s view of group `group_id`.
pub(crate) fn group_key<G: Cacheable>(owner: &str, group_id: &GroupId) -> GroupKey {
    GroupKey {
        owner: owner.to_owned(),
        group: group_id.as_slice().to_vec(),
        public: G::PUBLIC,
    }
}

impl MlsHost {
    /// The host of provider `domain` over `kv`; reopening over the same store restores every
    /// client, KeyPackage and group.
    pub fn open(domain: &str, kv: Arc<dyn KvStore>) -> Self {
        Self {
            domain: domain.to_owned(),
            kv,
            crypto: RustCrypto::default(),
            key_packages: KeyPackageSettings::default(),
            op_lock: RwLock::new(()),
            room_locks: (0..ROOM_LOCKS).map(|_| Mutex::new(())).collect(),
            cache: GroupCache::new(DEFAULT_GROUP_CACHE),
        }
    }

    /// Keeps at most `groups` groups in memory between operations (0: reload every group
    /// from the store for every operation). Each is one puppet's view of one room (or the
    /// hub's view of a room it follows): in a group of n members its size grows with n, a few
    /// hundred bytes per member.
    pub fn with_group_cache(mut self, groups: usize) -> Self {
        self.cache = GroupCache::new(groups);
        self
    }

    /// How many groups are in memory now, and how many at most.
    pub fn cached_groups(&self) -> (usize, usize) {
        (self.cache.len(), self.cache.capacity())
    }

    /// Replaces the KeyPackage batch size, low-water mark and lifetime.
    pub fn with_key_package_settings(mut self, settings: KeyPackageSettings) -> Self {
        self.key_packages = settings;
        self
    }

    /// The provider domain.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Runs `op`, which may touch any state of the host, alone.
    fn transaction<T>(&self, op: impl FnOnce(&Tx) -> Result<T, MlsError>) -> Result<T, MlsError> {
        let _alone = self.op_lock.write();
        self.run(op)
    }

    /// Runs `op`, which touches only `room`'s state (its groups, its records, keys of its
    /// own), after every other operation on the room and beside operations on other rooms.
    fn room_transaction<T>(
        &self,
        room: &impl std::fmt::Display,
        op: impl FnOnce(&Tx) -> Result<T, MlsError>,
    ) -> Result<T, MlsError> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        room.to_string().hash(&mut hasher);
        let stripe = (hasher.finish() % self.room_locks.len() as u64) as usize;
        let _shared = self.op_lock.read();
        let _room = self.room_locks[stripe].lock();
        self.run(op)
    }

    /// Runs `op` with a fresh overlay and commits its writes if it succeeds; then puts the
    /// groups it used back in the cache, or drops them if it failed.
    fn run<T>(&self, op: impl FnOnce(&Tx) -> Result<T, MlsError>) -> Result<T, MlsError> {
        let tx = Tx::new();
        let result = op(&tx).and_then(|value| {
            tx.overlay.commit(self.kv.as_ref())?;
            Ok(value)
        });
        let returned = std::mem::take(&mut *tx.returned.lock());
        let stale = std::mem::take(&mut *tx.stale.lock());
        for key in &stale {
            self.cache.remove(key);
        }
        if result.is_ok() {
            // A group checked out twice in one operation: neither copy is trusted.
            let mut uses: HashMap<&GroupKey, usize> = HashMap::new();
            for (key, _) in &returned {
                *uses.entry(key).or_default() += 1;
            }
            let once: Vec<bool> = returned
                .iter()
                .map(|(key, _)| uses[key] == 1 && !stale.contains(key))
                .collect();
            for ((key, group), once) in returned.into_iter().zip(once) {
                if once {
                    self.cache.put(key, group);
                }
            }
        }
        result
    }

    /// `owner`'s view of group `group_id`: from the cache, or loaded from the store.
    pub(crate) fn checkout<'t, G: Cacheable>(
        &self,
        tx: &'t Tx,
        owner: &str,
        storage: &MlsStorage,
        group_id: &GroupId,
    ) -> Result<Option<Checked<'t, G>>, MlsError> {
        let key = group_key::<G>(owner, group_id);
        // Used earlier in this operation: that copy has its changes.
        let earlier = {
            let mut returned = tx.returned.lock();
            returned
                .iter()
                .rposition(|(k, _)| *k == key)
                .map(|at| returned.remove(at).1)
        };
        let group = match earlier
            .or_else(|| self.cache.take(&key))
            .and_then(G::from_cached)
        {
            Some(group) => group,
            None => match G::load(storage, group_id)? {
                Some(group) => Box::new(group),
                None => return Ok(None),
            },
        };
        Ok(Some(Checked {
            tx,
            key,
            group: Some(group),
        }))
    }

    /// The openmls provider of the client whose storage namespace is `owner`.
    fn provider(&self, tx: &Tx, owner: &str) -> Provider<'_> {
        let mut prefix = b"mls/c/".to_vec();
        prefix.extend_from_slice(owner.as_bytes());
        prefix.push(b'/');
        Provider {
            crypto: &self.crypto,
            storage: MlsStorage::new(self.kv.clone(), prefix, tx.overlay.clone()),
        }
    }

    /// Reads one of the host's own records (JSON).
    fn get_record<T: serde::de::DeserializeOwned>(
        &self,
        tx: &Tx,
        key: &str,
    ) -> Result<Option<T>, MlsError> {
        match tx.overlay.get(self.kv.as_ref(), key.as_bytes())? {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Writes one of the host's own records.
    fn put_record(
        &self,
        tx: &Tx,
        key: &str,
        value: &impl serde::Serialize,
    ) -> Result<(), MlsError> {
        tx.overlay
            .put(key.as_bytes().to_vec(), serde_json::to_vec(value)?);
        Ok(())
    }

    fn delete_record(&self, tx: &Tx, key: &str) {
        tx.overlay.delete(key.as_bytes().to_vec());
    }
}
