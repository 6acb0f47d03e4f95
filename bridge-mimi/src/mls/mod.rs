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
//! before acknowledging what the operation answered (a `/notify`, an `/update`). Operations
//! of one host run one at a time (an internal lock), so two of them never load the same group
//! state and both write a successor.

mod clients;
mod hub;
pub mod kv;
mod labels;
pub mod metadata;
pub mod participants;
mod rooms;
pub mod storage;
pub mod uri;

use std::sync::Arc;

use openmls::prelude::*;
use openmls_rust_crypto::RustCrypto;
use parking_lot::Mutex;

use crate::codepoints;
use kv::KvStore;
use participants::RoomStateError;
use storage::{MlsStorage, MlsStorageError, Overlay};

pub use clients::KeyPackageSettings;
pub use labels::{HubSignature, labeled};
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
    /// An AppDataUpdate for a component this bridge does not know, or an operation it refuses.
    #[error("invalid room state change: {0}")]
    InvalidStateChange(String),
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
    /// Held for the length of one operation: two operations on the same group must not load
    /// the same state and both write their successor.
    op_lock: Mutex<()>,
}

impl std::fmt::Debug for MlsHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MlsHost")
            .field("domain", &self.domain)
            .field("key_packages", &self.key_packages)
            .finish_non_exhaustive()
    }
}

/// One operation's pending writes.
#[derive(Debug)]
pub(crate) struct Tx {
    overlay: Arc<Overlay>,
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
            op_lock: Mutex::new(()),
        }
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

    /// Runs `op` with a fresh overlay and commits its writes if it succeeds.
    fn transaction<T>(&self, op: impl FnOnce(&Tx) -> Result<T, MlsError>) -> Result<T, MlsError> {
        let _serialised = self.op_lock.lock();
        let tx = Tx {
            overlay: Overlay::new(),
        };
        let value = op(&tx)?;
        tx.overlay.commit(self.kv.as_ref())?;
        Ok(value)
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
