//! openmls' [`StorageProvider`] over the bridge's store.
//!
//! Every value openmls stores (group state, epoch secrets, the tree, key packages with their
//! private keys, signature keys) is kept under `mls/c/<client URI>/<label>/<key as JSON>`: one
//! namespace per puppet client, because several puppets of the bridge can be members of the
//! same group (same group ID) and each has its own view of it.
//!
//! Values are written in MessagePack (`rmp-serde`, structs as maps, so as tolerant of added
//! or omitted fields as JSON), after a zero byte that tags the format. Byte vectors and byte
//! arrays (keys, signatures, secrets, the serialised group context: most of the state) are
//! written as MessagePack byte strings, one byte per byte; values written before 2026-11-27
//! have them as arrays of small integers (1.5 bytes per random byte, plus a header), which the
//! same reader takes (`rmp-serde` reads either as a sequence), so both stay readable under the
//! one tag. Stores written before
//! kept them as JSON (the format of openmls' own storage providers), where a byte vector is an
//! array of decimal numbers: a 1,000-member group's tree took ~1.6 MB and most of the time to
//! load. A value without the tag is read as JSON (no JSON text starts with a zero byte), so an
//! old store keeps working and each value moves to the binary format when next written. Keys
//! stay JSON: they must name the same records as before.
//!
//! The ratchet tree and the group context, alike for every member of a group in an epoch, are
//! stored once per group and content (`mls/s/…`, reference-counted; see `SHARED` below): a bridge
//! hosting many puppets of one room keeps one tree, not one per puppet. A member's message
//! secrets, written after every message, are stored with their serialised group contexts apart
//! in the same way (see `SPLIT_LABELS` and [`super::split`]).
//!
//! Writes of one operation (processing a commit, sending a message…) go to an [`Overlay`] that
//! [`Overlay::commit`] writes in one atomic batch: a crash never leaves half a merged commit in
//! the store, and an operation that fails leaves nothing behind. A deletion is written as an
//! empty value in that batch (no stored value is ever empty) and removed for good right after.

use std::collections::BTreeMap;
use std::sync::Arc;

use openmls_traits::storage::{CURRENT_VERSION, StorageProvider, traits};
use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::Digest as _;

use super::kv::KvStore;
use super::split::{MAX_PARTS, MIN_PART, Split};
use bridge_core::StoreError;

/// A storage operation of the MLS layer failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MlsStorageError {
    /// The bridge's store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A value could not be encoded or decoded.
    #[error("MLS state codec: {0}")]
    Codec(#[from] serde_json::Error),
    /// A value could not be encoded or decoded in the binary format.
    #[error("MLS state codec: {0}")]
    Binary(String),
}

/// The first byte of a value in the binary format.
const BINARY: u8 = 0;

/// `value` in the binary format, tagged.
fn encode(value: &impl Serialize) -> Result<Vec<u8>, MlsStorageError> {
    Ok(encode_with_parts(value, None)?.0)
}

/// `value` in the binary format, tagged, and where its byte strings of at least `min` bytes
/// are ([`super::pack`]).
fn encode_with_parts(
    value: &impl Serialize,
    #[allow(unused_mut)] // changed only by tests
    mut min: Option<usize>,
) -> Result<(Vec<u8>, Vec<super::pack::Part>), MlsStorageError> {
    #[cfg(test)]
    match tests::WRITE_OLD.with(std::cell::Cell::get) {
        Some(tests::Old::Json) => return Ok((serde_json::to_vec(value)?, Vec::new())),
        Some(tests::Old::ByteArrays) => {
            let mut out = vec![BINARY];
            let mut serializer = rmp_serde::Serializer::new(&mut out).with_struct_map();
            value
                .serialize(&mut serializer)
                .map_err(|e| MlsStorageError::Binary(e.to_string()))?;
            return Ok((out, Vec::new()));
        }
        Some(tests::Old::Whole) => min = None,
        None => {}
    }
    let packed = super::pack::encode(BINARY, value, min)
        .map_err(|e| MlsStorageError::Binary(e.to_string()))?;
    // In this crate's tests, every openmls value written is checked to be encoded exactly as
    // `rmp_serde` alone encodes it.
    #[cfg(test)]
    {
        let mut plain = vec![BINARY];
        let mut serializer = rmp_serde::Serializer::new(&mut plain)
            .with_struct_map()
            .with_bytes(rmp_serde::config::BytesMode::ForceAll);
        value
            .serialize(&mut serializer)
            .expect("rmp_serde encodes it");
        assert_eq!(packed.0, plain, "pack::encode differs from rmp_serde");
    }
    Ok(packed)
}

/// A stored value: the binary format if tagged, JSON otherwise.
fn decode<V: DeserializeOwned>(bytes: &[u8]) -> Result<V, MlsStorageError> {
    match bytes.split_first() {
        Some((&BINARY, rest)) => {
            rmp_serde::from_slice(rest).map_err(|e| MlsStorageError::Binary(e.to_string()))
        }
        _ => Ok(serde_json::from_slice(bytes)?),
    }
}

/// Writes not yet in the store: key → new value (`None`: deleted).
#[derive(Debug, Default)]
pub struct Overlay {
    writes: Mutex<BTreeMap<Vec<u8>, Option<Vec<u8>>>>,
}

impl Overlay {
    /// An empty overlay.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub(crate) fn get(&self, kv: &dyn KvStore, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(pending) = self.writes.lock().get(key) {
            return Ok(pending.clone());
        }
        Ok(kv.get(key)?.filter(|v| !v.is_empty()))
    }

    pub(crate) fn put(&self, key: Vec<u8>, value: Vec<u8>) {
        self.writes.lock().insert(key, Some(value));
    }

    pub(crate) fn delete(&self, key: Vec<u8>) {
        self.writes.lock().insert(key, None);
    }

    /// The number of keys written or deleted so far.
    pub fn len(&self) -> usize {
        self.writes.lock().len()
    }

    /// True when nothing was written.
    pub fn is_empty(&self) -> bool {
        self.writes.lock().is_empty()
    }

    /// Writes everything to `kv` in one atomic batch, then removes the deleted keys' tombstones.
    pub fn commit(&self, kv: &dyn KvStore) -> Result<(), StoreError> {
        let writes = std::mem::take(&mut *self.writes.lock());
        if writes.is_empty() {
            return Ok(());
        }
        let puts: Vec<(&[u8], &[u8])> = writes
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_deref().unwrap_or(&[])))
            .collect();
        kv.put_all(&puts)?;
        for (key, value) in &writes {
            if value.is_none() {
                kv.delete(key)?;
            }
        }
        Ok(())
    }

    /// Forgets every pending write.
    pub fn discard(&self) {
        self.writes.lock().clear();
    }
}

/// One puppet client's openmls storage: a namespace of the bridge's store seen through an
/// [`Overlay`].
#[derive(Debug, Clone)]
pub struct MlsStorage {
    kv: Arc<dyn KvStore>,
    prefix: Vec<u8>,
    overlay: Arc<Overlay>,
}

// Labels: short, stable, part of the storage format.
const JOIN_CONFIG: &str = "join_config";
const OWN_LEAF_NODES: &str = "own_leaf_nodes";
const PROPOSAL: &str = "proposal";
const PROPOSAL_REFS: &str = "proposal_refs";
const TREE: &str = "tree";
const TRANSCRIPT_HASH: &str = "interim_transcript_hash";
const CONTEXT: &str = "context";
const CONFIRMATION_TAG: &str = "confirmation_tag";
const GROUP_STATE: &str = "group_state";
const MESSAGE_SECRETS: &str = "message_secrets";
const RESUMPTION_PSKS: &str = "resumption_psks";
const OWN_LEAF_INDEX: &str = "own_leaf_index";
const EPOCH_SECRETS: &str = "epoch_secrets";
const EXPORT_TREE: &str = "application_export_tree";
const SIGNATURE_KEY: &str = "signature_key";
const ENCRYPTION_KEY: &str = "encryption_key";
const EPOCH_KEY_PAIRS: &str = "epoch_key_pairs";
const KEY_PACKAGE: &str = "key_package";
const PSK: &str = "psk";

/// Labels whose values every member of a group has alike in an epoch (the public ratchet tree
/// and the group context: the largest part of a member's state in a big group). Each distinct
/// value is stored once per group, at `mls/s/<label>/<group ID>/<first 16 bytes of its
/// SHA-256, hex>`, with its number of references at the same key followed by `#`; a member's
/// own key holds [`SHARED_REF`] and that key. Several puppets of the bridge in one group (a
/// follower hosting many users of a room) then keep one tree, not one each. Every write and
/// removal of a group's state runs under that room's lock (`MlsHost::room_transaction` or the
/// exclusive `transaction`), so the counts never race.
const SHARED: [&str; 2] = [TREE, CONTEXT];

/// Where shared values are kept (see [`SHARED`]).
const SHARED_PREFIX: &[u8] = b"mls/s/";

/// The first byte of a value that refers to a shared value (the rest is its key). Neither the
/// binary format ([`BINARY`]) nor JSON starts with it.
const SHARED_REF: u8 = 1;

/// Labels whose values are stored with their large byte strings apart ([`super::split`]):
/// a member's message secrets, written after every message it sends or decrypts, carry the
/// serialised group context of each epoch they keep (~38 kB in a 1,000-member MIMI room), the
/// same for every member. Each such byte string is a shared value like those of [`SHARED`]
/// (`mls/s/<label>/<group ID>/<hash>`, reference-counted), so a message costs a write of the
/// member's ~2 kB of secrets, not of the context again.
const SPLIT_LABELS: [&str; 1] = [MESSAGE_SECRETS];

/// The first byte of a value stored split ([`super::split::Split`]); neither [`BINARY`],
/// [`SHARED_REF`] nor JSON starts with it.
const SPLIT: u8 = 2;

/// The key of the reference count of shared value `blob`.
fn count_key(blob: &[u8]) -> Vec<u8> {
    let mut key = blob.to_vec();
    key.push(b'#');
    key
}

impl MlsStorage {
    /// The storage of the client whose keys start with `prefix`, writing into `overlay`.
    pub fn new(kv: Arc<dyn KvStore>, prefix: Vec<u8>, overlay: Arc<Overlay>) -> Self {
        Self {
            kv,
            prefix,
            overlay,
        }
    }

    fn key(&self, label: &str, key: &impl Serialize) -> Result<Vec<u8>, MlsStorageError> {
        let mut full = self.prefix.clone();
        full.extend_from_slice(label.as_bytes());
        full.push(b'/');
        serde_json::to_writer(&mut full, key)?;
        Ok(full)
    }

    fn write(
        &self,
        label: &str,
        key: &impl Serialize,
        value: &impl Serialize,
    ) -> Result<(), MlsStorageError> {
        let full = self.key(label, key)?;
        if SPLIT_LABELS.contains(&label) {
            return self.write_split(label, key, full, value);
        }
        let value = encode(value)?;
        if SHARED.contains(&label) {
            let blob = self.blob_key(label, key, &value)?;
            let old = self.references_of(&full)?;
            if old.len() == 1 && old[0] == blob {
                return Ok(()); // the same content: the reference stands
            }
            for old in &old {
                self.release(old)?;
            }
            self.acquire(&blob, &value)?;
            let mut reference = vec![SHARED_REF];
            reference.extend_from_slice(&blob);
            self.overlay.put(full, reference);
            return Ok(());
        }
        self.overlay.put(full, value);
        Ok(())
    }

    /// Writes `value` at `full` with its large byte strings as shared values (see
    /// [`SPLIT_LABELS`]). A part the previous value had too (the common case: the same epoch's
    /// context, written again after the next message) keeps its reference, found by comparing
    /// the contents rather than hashing them; the previous value's other parts are released.
    fn write_split(
        &self,
        label: &str,
        key: &impl Serialize,
        full: Vec<u8>,
        value: &impl Serialize,
    ) -> Result<(), MlsStorageError> {
        let (value, found) = encode_with_parts(value, Some(MIN_PART))?;
        let kv = self.kv.as_ref();
        let previous = self.overlay.get(kv, &full)?;
        let mut old: Vec<(usize, Vec<u8>)> = match previous.as_deref().map(<[u8]>::split_first) {
            Some(Some((&SPLIT, rest))) => Split::decode(rest)
                .map_err(|e| MlsStorageError::Binary(e.to_string()))?
                .parts
                .iter()
                .map(|&(_, len, blob)| (len, blob.to_vec()))
                .collect(),
            _ => Vec::new(),
        };
        let mut parts = Vec::with_capacity(found.len());
        // Only as many as a split value can name; the rest stay in the value.
        for (range, contents) in found.into_iter().take(MAX_PARTS) {
            let mut kept = None;
            for (i, (len, blob)) in old.iter().enumerate() {
                if *len == contents.len()
                    && self.overlay.get(kv, blob)?.as_deref() == Some(contents.as_slice())
                {
                    kept = Some(i);
                    break;
                }
            }
            let blob = match kept {
                // In order: the parts come in the same order as last time, so the next one to
                // compare is the one that matches.
                Some(i) => old.remove(i).1,
                None => {
                    let blob = self.blob_key(label, key, &contents)?;
                    self.acquire(&blob, &contents)?;
                    blob
                }
            };
            parts.push((range, blob));
        }
        for (_, blob) in &old {
            self.release(blob)?;
        }
        let stored = if parts.is_empty() {
            value
        } else {
            Split::encode(SPLIT, &value, &parts)
        };
        self.overlay.put(full, stored);
        Ok(())
    }

    /// Where the shared value of `contents` under `label` and `key` is kept:
    /// `mls/s/<label>/<key as JSON>/<first 16 bytes of its SHA-256, hex>`.
    fn blob_key(
        &self,
        label: &str,
        key: &impl Serialize,
        contents: &[u8],
    ) -> Result<Vec<u8>, MlsStorageError> {
        let mut blob = SHARED_PREFIX.to_vec();
        blob.extend_from_slice(label.as_bytes());
        blob.push(b'/');
        serde_json::to_writer(&mut blob, key)?;
        blob.push(b'/');
        let digest = sha2::Sha256::digest(contents);
        for byte in &digest[..16] {
            blob.extend_from_slice(format!("{byte:02x}").as_bytes());
        }
        Ok(blob)
    }

    /// Adds a reference to the shared value `blob`, storing `contents` there if it is the first.
    fn acquire(&self, blob: &[u8], contents: &[u8]) -> Result<(), MlsStorageError> {
        let count = self.references(blob)?;
        if count == 0 {
            self.overlay.put(blob.to_vec(), contents.to_vec());
        }
        self.overlay
            .put(count_key(blob), (count + 1).to_be_bytes().to_vec());
        Ok(())
    }

    fn read<V: DeserializeOwned>(
        &self,
        label: &str,
        key: &impl Serialize,
    ) -> Result<Option<V>, MlsStorageError> {
        let kv = self.kv.as_ref();
        match self.overlay.get(kv, &self.key(label, key)?)? {
            Some(bytes) => match bytes.split_first() {
                Some((&SHARED_REF, blob)) => Ok(Some(decode(&self.shared_value(blob)?)?)),
                Some((&SPLIT, rest)) => {
                    let split =
                        Split::decode(rest).map_err(|e| MlsStorageError::Binary(e.to_string()))?;
                    let parts = split
                        .keys()
                        .map(|blob| self.shared_value(blob))
                        .collect::<Result<Vec<_>, _>>()?;
                    let whole = split
                        .join(&parts)
                        .map_err(|e| MlsStorageError::Binary(e.to_string()))?;
                    Ok(Some(decode(&whole)?))
                }
                _ => Ok(Some(decode(&bytes)?)),
            },
            None => Ok(None),
        }
    }

    fn remove(&self, label: &str, key: &impl Serialize) -> Result<(), MlsStorageError> {
        let full = self.key(label, key)?;
        for blob in self.references_of(&full)? {
            self.release(&blob)?;
        }
        self.overlay.delete(full);
        Ok(())
    }

    /// The shared value stored at `blob`.
    fn shared_value(&self, blob: &[u8]) -> Result<Vec<u8>, MlsStorageError> {
        self.overlay.get(self.kv.as_ref(), blob)?.ok_or_else(|| {
            MlsStorageError::Binary(format!(
                "the shared value {} is missing",
                String::from_utf8_lossy(blob)
            ))
        })
    }

    /// The shared values that the value at `full` refers to: one if it is a reference, each
    /// part if it is split, none otherwise.
    fn references_of(&self, full: &[u8]) -> Result<Vec<Vec<u8>>, MlsStorageError> {
        let Some(value) = self.overlay.get(self.kv.as_ref(), full)? else {
            return Ok(Vec::new());
        };
        Ok(match value.split_first() {
            Some((&SHARED_REF, blob)) => vec![blob.to_vec()],
            Some((&SPLIT, rest)) => Split::decode(rest)
                .map_err(|e| MlsStorageError::Binary(e.to_string()))?
                .keys()
                .map(<[u8]>::to_vec)
                .collect(),
            _ => Vec::new(),
        })
    }

    /// How many references the shared value `blob` has.
    fn references(&self, blob: &[u8]) -> Result<u32, MlsStorageError> {
        Ok(self
            .overlay
            .get(self.kv.as_ref(), &count_key(blob))?
            .and_then(|c| <[u8; 4]>::try_from(c.as_slice()).ok())
            .map_or(0, u32::from_be_bytes))
    }

    /// Drops one reference to the shared value `blob`, and the value with the last one.
    fn release(&self, blob: &[u8]) -> Result<(), MlsStorageError> {
        match self.references(blob)? {
            0 | 1 => {
                self.overlay.delete(blob.to_vec());
                self.overlay.delete(count_key(blob));
            }
            n => self
                .overlay
                .put(count_key(blob), (n - 1).to_be_bytes().to_vec()),
        }
        Ok(())
    }

    /// A list value: the encodings of its items (each binary, or JSON in an old store).
    fn raw_list(
        &self,
        label: &str,
        key: &impl Serialize,
    ) -> Result<Vec<serde_bytes::ByteBuf>, MlsStorageError> {
        Ok(self
            .read::<Vec<serde_bytes::ByteBuf>>(label, key)?
            .unwrap_or_default())
    }

    fn read_list<V: DeserializeOwned>(
        &self,
        label: &str,
        key: &impl Serialize,
    ) -> Result<Vec<V>, MlsStorageError> {
        self.raw_list(label, key)?
            .iter()
            .map(|item| decode(item))
            .collect()
    }

    fn append(
        &self,
        label: &str,
        key: &impl Serialize,
        item: &impl Serialize,
    ) -> Result<(), MlsStorageError> {
        let mut list = self.raw_list(label, key)?;
        list.push(serde_bytes::ByteBuf::from(encode(item)?));
        self.write(label, key, &list)
    }

    fn remove_item(
        &self,
        label: &str,
        key: &impl Serialize,
        item: &impl Serialize,
    ) -> Result<(), MlsStorageError> {
        // The item as written now, or as an old store has it.
        let binary = encode(item)?;
        let json = serde_json::to_vec(item)?;
        let mut list = self.raw_list(label, key)?;
        list.retain(|i| **i != binary && **i != json);
        self.write(label, key, &list)
    }
}

/// The key of a group's epoch key pairs.
#[derive(Serialize)]
struct EpochKeyPairsId<'a, G, E> {
    group_id: &'a G,
    epoch: &'a E,
    leaf_index: u32,
}

type R<T> = std::result::Result<T, MlsStorageError>;

impl StorageProvider<CURRENT_VERSION> for MlsStorage {
    type Error = MlsStorageError;

    fn write_mls_join_config<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        MlsGroupJoinConfig: traits::MlsGroupJoinConfig<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        config: &MlsGroupJoinConfig,
    ) -> R<()> {
        self.write(JOIN_CONFIG, group_id, config)
    }

    fn append_own_leaf_node<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        LeafNode: traits::LeafNode<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        leaf_node: &LeafNode,
    ) -> R<()> {
        self.append(OWN_LEAF_NODES, group_id, leaf_node)
    }

    fn queue_proposal<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ProposalRef: traits::ProposalRef<CURRENT_VERSION>,
        QueuedProposal: traits::QueuedProposal<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        proposal_ref: &ProposalRef,
        proposal: &QueuedProposal,
    ) -> R<()> {
        self.write(PROPOSAL, &(group_id, proposal_ref), proposal)?;
        self.append(PROPOSAL_REFS, group_id, proposal_ref)
    }

    fn write_tree<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        TreeSync: traits::TreeSync<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        tree: &TreeSync,
    ) -> R<()> {
        self.write(TREE, group_id, tree)
    }

    fn write_interim_transcript_hash<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        InterimTranscriptHash: traits::InterimTranscriptHash<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        interim_transcript_hash: &InterimTranscriptHash,
    ) -> R<()> {
        self.write(TRANSCRIPT_HASH, group_id, interim_transcript_hash)
    }

    fn write_context<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        GroupContext: traits::GroupContext<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        group_context: &GroupContext,
    ) -> R<()> {
        self.write(CONTEXT, group_id, group_context)
    }

    fn write_confirmation_tag<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ConfirmationTag: traits::ConfirmationTag<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        confirmation_tag: &ConfirmationTag,
    ) -> R<()> {
        self.write(CONFIRMATION_TAG, group_id, confirmation_tag)
    }

    fn write_group_state<
        GroupState: traits::GroupState<CURRENT_VERSION>,
        GroupId: traits::GroupId<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        group_state: &GroupState,
    ) -> R<()> {
        self.write(GROUP_STATE, group_id, group_state)
    }

    fn write_message_secrets<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        MessageSecrets: traits::MessageSecrets<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        message_secrets: &MessageSecrets,
    ) -> R<()> {
        self.write(MESSAGE_SECRETS, group_id, message_secrets)
    }

    fn write_resumption_psk_store<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ResumptionPskStore: traits::ResumptionPskStore<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        resumption_psk_store: &ResumptionPskStore,
    ) -> R<()> {
        self.write(RESUMPTION_PSKS, group_id, resumption_psk_store)
    }

    fn write_own_leaf_index<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        LeafNodeIndex: traits::LeafNodeIndex<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        own_leaf_index: &LeafNodeIndex,
    ) -> R<()> {
        self.write(OWN_LEAF_INDEX, group_id, own_leaf_index)
    }

    fn write_group_epoch_secrets<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        GroupEpochSecrets: traits::GroupEpochSecrets<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        group_epoch_secrets: &GroupEpochSecrets,
    ) -> R<()> {
        self.write(EPOCH_SECRETS, group_id, group_epoch_secrets)
    }

    fn write_application_export_tree<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ApplicationExportTree: traits::ApplicationExportTree<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        application_export_tree: &ApplicationExportTree,
    ) -> R<()> {
        self.write(EXPORT_TREE, group_id, application_export_tree)
    }

    fn write_signature_key_pair<
        SignaturePublicKey: traits::SignaturePublicKey<CURRENT_VERSION>,
        SignatureKeyPair: traits::SignatureKeyPair<CURRENT_VERSION>,
    >(
        &self,
        public_key: &SignaturePublicKey,
        signature_key_pair: &SignatureKeyPair,
    ) -> R<()> {
        self.write(SIGNATURE_KEY, public_key, signature_key_pair)
    }

    fn write_encryption_key_pair<
        EncryptionKey: traits::EncryptionKey<CURRENT_VERSION>,
        HpkeKeyPair: traits::HpkeKeyPair<CURRENT_VERSION>,
    >(
        &self,
        public_key: &EncryptionKey,
        key_pair: &HpkeKeyPair,
    ) -> R<()> {
        self.write(ENCRYPTION_KEY, public_key, key_pair)
    }

    fn write_encryption_epoch_key_pairs<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        EpochKey: traits::EpochKey<CURRENT_VERSION>,
        HpkeKeyPair: traits::HpkeKeyPair<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        epoch: &EpochKey,
        leaf_index: u32,
        key_pairs: &[HpkeKeyPair],
    ) -> R<()> {
        let id = EpochKeyPairsId {
            group_id,
            epoch,
            leaf_index,
        };
        self.write(EPOCH_KEY_PAIRS, &id, &key_pairs)
    }

    fn write_key_package<
        HashReference: traits::HashReference<CURRENT_VERSION>,
        KeyPackage: traits::KeyPackage<CURRENT_VERSION>,
    >(
        &self,
        hash_ref: &HashReference,
        key_package: &KeyPackage,
    ) -> R<()> {
        self.write(KEY_PACKAGE, hash_ref, key_package)
    }

    fn write_psk<
        PskId: traits::PskId<CURRENT_VERSION>,
        PskBundle: traits::PskBundle<CURRENT_VERSION>,
    >(
        &self,
        psk_id: &PskId,
        psk: &PskBundle,
    ) -> R<()> {
        self.write(PSK, psk_id, psk)
    }

    fn mls_group_join_config<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        MlsGroupJoinConfig: traits::MlsGroupJoinConfig<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> R<Option<MlsGroupJoinConfig>> {
        self.read(JOIN_CONFIG, group_id)
    }

    fn own_leaf_nodes<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        LeafNode: traits::LeafNode<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> R<Vec<LeafNode>> {
        self.read_list(OWN_LEAF_NODES, group_id)
    }

    fn queued_proposal_refs<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ProposalRef: traits::ProposalRef<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> R<Vec<ProposalRef>> {
        self.read_list(PROPOSAL_REFS, group_id)
    }

    fn queued_proposals<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ProposalRef: traits::ProposalRef<CURRENT_VERSION>,
        QueuedProposal: traits::QueuedProposal<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> R<Vec<(ProposalRef, QueuedProposal)>> {
        let refs: Vec<ProposalRef> = self.read_list(PROPOSAL_REFS, group_id)?;
        let mut proposals = Vec::with_capacity(refs.len());
        for proposal_ref in refs {
            if let Some(proposal) = self.read(PROPOSAL, &(group_id, &proposal_ref))? {
                proposals.push((proposal_ref, proposal));
            }
        }
        Ok(proposals)
    }

    fn tree<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        TreeSync: traits::TreeSync<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> R<Option<TreeSync>> {
        self.read(TREE, group_id)
    }

    fn group_context<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        GroupContext: traits::GroupContext<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> R<Option<GroupContext>> {
        self.read(CONTEXT, group_id)
    }

    fn interim_transcript_hash<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        InterimTranscriptHash: traits::InterimTranscriptHash<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> R<Option<InterimTranscriptHash>> {
        self.read(TRANSCRIPT_HASH, group_id)
    }

    fn confirmation_tag<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ConfirmationTag: traits::ConfirmationTag<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> R<Option<ConfirmationTag>> {
        self.read(CONFIRMATION_TAG, group_id)
    }

    fn group_state<
        GroupState: traits::GroupState<CURRENT_VERSION>,
        GroupId: traits::GroupId<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> R<Option<GroupState>> {
        self.read(GROUP_STATE, group_id)
    }

    fn message_secrets<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        MessageSecrets: traits::MessageSecrets<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> R<Option<MessageSecrets>> {
        self.read(MESSAGE_SECRETS, group_id)
    }

    fn resumption_psk_store<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ResumptionPskStore: traits::ResumptionPskStore<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> R<Option<ResumptionPskStore>> {
        self.read(RESUMPTION_PSKS, group_id)
    }

    fn own_leaf_index<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        LeafNodeIndex: traits::LeafNodeIndex<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> R<Option<LeafNodeIndex>> {
        self.read(OWN_LEAF_INDEX, group_id)
    }

    fn group_epoch_secrets<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        GroupEpochSecrets: traits::GroupEpochSecrets<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> R<Option<GroupEpochSecrets>> {
        self.read(EPOCH_SECRETS, group_id)
    }

    fn signature_key_pair<
        SignaturePublicKey: traits::SignaturePublicKey<CURRENT_VERSION>,
        SignatureKeyPair: traits::SignatureKeyPair<CURRENT_VERSION>,
    >(
        &self,
        public_key: &SignaturePublicKey,
    ) -> R<Option<SignatureKeyPair>> {
        self.read(SIGNATURE_KEY, public_key)
    }

    fn encryption_key_pair<
        HpkeKeyPair: traits::HpkeKeyPair<CURRENT_VERSION>,
        EncryptionKey: traits::EncryptionKey<CURRENT_VERSION>,
    >(
        &self,
        public_key: &EncryptionKey,
    ) -> R<Option<HpkeKeyPair>> {
        self.read(ENCRYPTION_KEY, public_key)
    }

    fn encryption_epoch_key_pairs<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        EpochKey: traits::EpochKey<CURRENT_VERSION>,
        HpkeKeyPair: traits::HpkeKeyPair<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        epoch: &EpochKey,
        leaf_index: u32,
    ) -> R<Vec<HpkeKeyPair>> {
        let id = EpochKeyPairsId {
            group_id,
            epoch,
            leaf_index,
        };
        Ok(self.read(EPOCH_KEY_PAIRS, &id)?.unwrap_or_default())
    }

    fn key_package<
        KeyPackageRef: traits::HashReference<CURRENT_VERSION>,
        KeyPackage: traits::KeyPackage<CURRENT_VERSION>,
    >(
        &self,
        hash_ref: &KeyPackageRef,
    ) -> R<Option<KeyPackage>> {
        self.read(KEY_PACKAGE, hash_ref)
    }

    fn psk<PskBundle: traits::PskBundle<CURRENT_VERSION>, PskId: traits::PskId<CURRENT_VERSION>>(
        &self,
        psk_id: &PskId,
    ) -> R<Option<PskBundle>> {
        self.read(PSK, psk_id)
    }

    fn application_export_tree<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ApplicationExportTree: traits::ApplicationExportTree<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> R<Option<ApplicationExportTree>> {
        self.read(EXPORT_TREE, group_id)
    }

    fn remove_proposal<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ProposalRef: traits::ProposalRef<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        proposal_ref: &ProposalRef,
    ) -> R<()> {
        self.remove_item(PROPOSAL_REFS, group_id, proposal_ref)?;
        self.remove(PROPOSAL, &(group_id, proposal_ref))
    }

    fn delete_own_leaf_nodes<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> R<()> {
        self.remove(OWN_LEAF_NODES, group_id)
    }

    fn delete_group_config<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> R<()> {
        self.remove(JOIN_CONFIG, group_id)
    }

    fn delete_tree<GroupId: traits::GroupId<CURRENT_VERSION>>(&self, group_id: &GroupId) -> R<()> {
        self.remove(TREE, group_id)
    }

    fn delete_confirmation_tag<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> R<()> {
        self.remove(CONFIRMATION_TAG, group_id)
    }

    fn delete_group_state<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> R<()> {
        self.remove(GROUP_STATE, group_id)
    }

    fn delete_context<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> R<()> {
        self.remove(CONTEXT, group_id)
    }

    fn delete_interim_transcript_hash<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> R<()> {
        self.remove(TRANSCRIPT_HASH, group_id)
    }

    fn delete_message_secrets<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> R<()> {
        self.remove(MESSAGE_SECRETS, group_id)
    }

    fn delete_all_resumption_psk_secrets<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> R<()> {
        self.remove(RESUMPTION_PSKS, group_id)
    }

    fn delete_own_leaf_index<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> R<()> {
        self.remove(OWN_LEAF_INDEX, group_id)
    }

    fn delete_group_epoch_secrets<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> R<()> {
        self.remove(EPOCH_SECRETS, group_id)
    }

    fn clear_proposal_queue<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ProposalRef: traits::ProposalRef<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> R<()> {
        let refs: Vec<ProposalRef> = self.read_list(PROPOSAL_REFS, group_id)?;
        for proposal_ref in &refs {
            self.remove(PROPOSAL, &(group_id, proposal_ref))?;
        }
        self.remove(PROPOSAL_REFS, group_id)
    }

    fn delete_signature_key_pair<
        SignaturePublicKey: traits::SignaturePublicKey<CURRENT_VERSION>,
    >(
        &self,
        public_key: &SignaturePublicKey,
    ) -> R<()> {
        self.remove(SIGNATURE_KEY, public_key)
    }

    fn delete_encryption_key_pair<EncryptionKey: traits::EncryptionKey<CURRENT_VERSION>>(
        &self,
        public_key: &EncryptionKey,
    ) -> R<()> {
        self.remove(ENCRYPTION_KEY, public_key)
    }

    fn delete_encryption_epoch_key_pairs<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        EpochKey: traits::EpochKey<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        epoch: &EpochKey,
        leaf_index: u32,
    ) -> R<()> {
        let id = EpochKeyPairsId {
            group_id,
            epoch,
            leaf_index,
        };
        self.remove(EPOCH_KEY_PAIRS, &id)
    }

    fn delete_key_package<KeyPackageRef: traits::HashReference<CURRENT_VERSION>>(
        &self,
        hash_ref: &KeyPackageRef,
    ) -> R<()> {
        self.remove(KEY_PACKAGE, hash_ref)
    }

    fn delete_psk<PskKey: traits::PskId<CURRENT_VERSION>>(&self, psk_id: &PskKey) -> R<()> {
        self.remove(PSK, psk_id)
    }

    fn delete_application_export_tree<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ApplicationExportTree: traits::ApplicationExportTree<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> R<()> {
        self.remove(EXPORT_TREE, group_id)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use bridge_core::{MemoryStore, Store};

    use super::super::kv::StoreKv;
    use super::super::uri::RoomUri;
    use super::super::{MlsHost, Processed, RoomProfile};
    use crate::codepoints::ROLE_ORDINARY_USER;

    use super::*;

    /// A format of earlier stores.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) enum Old {
        /// JSON, as every store written before the binary format.
        Json,
        /// MessagePack with byte vectors as arrays of integers, before byte strings.
        ByteArrays,
        /// MessagePack with byte strings, message secrets whole (before they were split).
        Whole,
    }

    thread_local! {
        /// Makes this thread's writes those of an earlier store.
        pub(super) static WRITE_OLD: Cell<Option<Old>> = const { Cell::new(None) };
    }

    fn host(domain: &str, store: &Arc<dyn Store>) -> MlsHost {
        MlsHost::open(domain, Arc::new(StoreKv::new(store.clone(), b"m/")))
    }

    /// The first bytes of the openmls values in `store`.
    fn formats(store: &Arc<dyn Store>) -> Vec<u8> {
        store
            .scan(b"m/mls/c/", None, usize::MAX)
            .expect("scan")
            .iter()
            .filter_map(|(_, value)| value.first().copied())
            .collect()
    }

    fn text(processed: Processed) -> Vec<u8> {
        match processed {
            Processed::Application(d) => d.plaintext,
            other => panic!("expected an application message, got {other:?}"),
        }
    }

    #[test]
    fn a_store_written_as_json_is_read_and_moves_to_the_binary_format() {
        an_old_store_is_read_and_rewritten(Old::Json);
    }

    #[test]
    fn a_store_written_with_byte_arrays_is_read() {
        an_old_store_is_read_and_rewritten(Old::ByteArrays);
    }

    #[test]
    fn a_store_with_whole_message_secrets_is_read_and_split_when_next_written() {
        an_old_store_is_read_and_rewritten(Old::Whole);
    }

    fn an_old_store_is_read_and_rewritten(format: Old) {
        let hub_store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let follower_store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let room = RoomUri::new("hub.example", "lobby");

        // Before: everything written in the old format, a proposal queue included.
        WRITE_OLD.with(|old| old.set(Some(format)));
        let (alice, bob, unread) = {
            let hub = host("hub.example", &hub_store);
            let follower = host("follower.example", &follower_store);
            let alice = hub.puppet("alice@xmpp.example");
            let bob = follower.puppet("@bob:matrix.example");
            hub.create_room(&room, &alice, RoomProfile::Mimi)
                .expect("create");
            let key_package = follower.take_key_package(&bob).expect("take").expect("kp");
            let added = hub
                .add_client(&room, &alice, key_package, ROLE_ORDINARY_USER)
                .expect("add");
            follower
                .join(added.welcome.as_deref().expect("welcome"), None)
                .expect("join");
            let old = hub.encrypt(&room, &alice, b"old").expect("encrypt");
            assert_eq!(
                text(follower.decrypt(&room, &old).expect("decrypt")),
                b"old"
            );
            let unread = hub.encrypt(&room, &alice, b"unread").expect("encrypt");
            for proposal in follower.leave(&room, &bob).expect("leave") {
                assert_eq!(
                    hub.process(&room, &proposal).expect("queue"),
                    Processed::Proposal
                );
            }
            (alice, bob, unread)
        };
        WRITE_OLD.with(|old| old.set(None));
        for store in [&hub_store, &follower_store] {
            let firsts = formats(store);
            assert!(!firsts.is_empty());
            if format == Old::Json {
                assert!(!firsts.contains(&BINARY), "JSON only: {firsts:?}");
            }
            assert!(!firsts.contains(&SPLIT), "nothing split: {firsts:?}");
        }

        // After: new hosts (nothing in memory) over the same stores read the old records.
        let hub = host("hub.example", &hub_store);
        let follower = host("follower.example", &follower_store);
        assert_eq!(hub.epoch(&room).expect("epoch"), 1);
        assert_eq!(follower.participants(&room).expect("list").len(), 2);
        assert_eq!(
            text(follower.decrypt(&room, &unread).expect("decrypt")),
            b"unread"
        );
        // The queued proposals (a JSON list) are committed.
        let commit = hub.commit_pending(&room, &alice).expect("commit");
        assert_eq!(commit.participants.len(), 1);
        match follower.process(&room, &commit.commit).expect("process") {
            Processed::Commit { removed, .. } => assert_eq!(removed, vec![bob]),
            other => panic!("expected a commit, got {other:?}"),
        }
        // What was written since is binary, message secrets split; the rest stays readable.
        assert!(formats(&hub_store).contains(&BINARY));
        assert!(formats(&hub_store).contains(&SPLIT));
        let again = host("hub.example", &hub_store);
        assert_eq!(again.epoch(&room).expect("epoch"), 2);
        assert_eq!(again.members(&room).expect("members").len(), 1);
        again.encrypt(&room, &alice, b"alone").expect("encrypt");
    }

    #[test]
    fn values_round_trip_and_untagged_bytes_are_json() {
        let value = (vec![0u8, 1, 200, 255], Some("x".to_owned()), 7u64);
        let binary = encode(&value).expect("encode");
        assert_eq!(binary[0], BINARY);
        assert!(binary.len() < serde_json::to_vec(&value).expect("json").len());
        let back: (Vec<u8>, Option<String>, u64) = decode(&binary).expect("decode");
        assert_eq!(back, value);
        let old: (Vec<u8>, Option<String>, u64) =
            decode(br#"[[0,1,200,255],"x",7]"#).expect("json");
        assert_eq!(old, value);
        // Bytes as a byte string: the header and one byte each.
        assert_eq!(
            encode(&vec![200u8; 40]).expect("encode"),
            [&[BINARY, 0xc4, 40][..], &[200; 40]].concat()
        );
        // Written before byte strings (arrays of integers), read the same.
        let mut arrays = vec![BINARY];
        value
            .serialize(&mut rmp_serde::Serializer::new(&mut arrays).with_struct_map())
            .expect("encode");
        assert!(arrays.len() > binary.len());
        let back: (Vec<u8>, Option<String>, u64) = decode(&arrays).expect("decode");
        assert_eq!(back, value);
        // Garbage is an error, not a panic.
        assert!(decode::<Vec<u8>>(&[BINARY, 0xc1]).is_err());
        assert!(decode::<Vec<u8>>(b"{").is_err());
    }
}
