//! Attachments: MIMI `ExternalPart`s (draft-ietf-mimi-content-08 §4.5) and the encrypted files
//! they point at.
//!
//! **Sending.** A file another adapter received is fetched through it (or as a plain HTTP(S)
//! link), encrypted with AES-128-GCM under a fresh key and nonce (empty AAD), and hosted by our
//! provider at `ORIGIN/assets/ID` (ID: 16 random bytes, hex). The part carries the key, the
//! nonce, the SHA-256 of the ciphertext (`contentHash`: "hash of the content at the target
//! url") and the size of the *plaintext* (what a user is shown; the draft does not say which).
//! The ciphertext is kept in the adapter's store, so it survives restarts; peers download it
//! over the same mutual-TLS HTTPS as every other MIMI call.
//!
//! **Receiving.** The decryption details of each received part are stored under its URL before
//! the message is handed to the core; when another adapter re-hosts the file
//! ([`bridge_core::Adapter::fetch_attachment`]), we download the ciphertext (from our own store,
//! from the hub, or through the hub's `/proxyDownload` when a third provider hosts it, as
//! protocol-06 §5.10.2 recommends), check its hash and decrypt it.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes128Gcm, Nonce};
use bridge_core::{AdapterError, AdapterStore, StoreError};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::content::ExternalPart;

/// Store key prefix of files we host: ID → ciphertext.
const HOSTED: &str = "a/asset/";
/// Store key prefix of which hosted files a message of ours carries: the message's ID (its first
/// version's, for the files of its edits too) → the file IDs, one per line. Deleting the
/// message deletes them ([`forget_files_of`]).
const HOSTED_FOR: &str = "a/hosted-for/";
/// Store key prefix of the decryption details of received parts: SHA-256 of the URL (hex) →
/// [`Received`] as JSON.
const RECEIVED: &str = "a/attachment/";
/// Where our provider serves hosted files, under its origin.
pub(crate) const ASSET_PATH: &str = "/assets/";
/// IANA Named Information hash algorithm 1.
const SHA_256: u8 = 1;
/// The key and nonce lengths of AES-128-GCM.
const KEY_LEN: usize = 16;
const NONCE_LEN: usize = 12;

/// Why an attachment could not be encrypted, decrypted or found.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AssetError {
    /// The part uses an algorithm we do not implement.
    #[error("unsupported {what} {value}")]
    Unsupported {
        /// Which field.
        what: &'static str,
        /// Its value.
        value: u16,
    },
    /// The downloaded bytes are not what the message promised.
    #[error("{0}")]
    Corrupt(String),
    /// More bytes than allowed.
    #[error("{size} bytes is over the limit of {limit}")]
    TooLarge {
        /// The size found.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<AssetError> for AdapterError {
    fn from(e: AssetError) -> Self {
        match e {
            AssetError::Store(e) => e.into(),
            other => AdapterError::Permanent(other.to_string()),
        }
    }
}

/// A file encrypted for sending: the ciphertext and the part describing it (URL still empty).
pub(crate) struct Sealed {
    pub(crate) ciphertext: Vec<u8>,
    pub(crate) part: ExternalPart,
}

/// Encrypts `plaintext` under a fresh key and nonce.
pub(crate) fn seal(plaintext: &[u8]) -> Result<Sealed, AssetError> {
    use rand::RngCore as _;
    let mut key = [0u8; KEY_LEN];
    let mut nonce = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut key);
    rand::rng().fill_bytes(&mut nonce);
    let cipher = Aes128Gcm::new(&key.into());
    let ciphertext = cipher
        .encrypt(Nonce::from_slice(&nonce), plaintext)
        .map_err(|_| AssetError::TooLarge {
            size: plaintext.len() as u64,
            limit: 1 << 36, // AES-GCM's own limit per key and nonce
        })?;
    let part = ExternalPart {
        size: plaintext.len() as u64,
        enc_alg: ExternalPart::AES_128_GCM,
        key: key.to_vec(),
        nonce: nonce.to_vec(),
        hash_alg: SHA_256,
        content_hash: sha2::Sha256::digest(&ciphertext).to_vec(),
        ..ExternalPart::default()
    };
    Ok(Sealed { ciphertext, part })
}

/// Checks `downloaded` against `part` (hash, size) and decrypts it; a part with `encAlg` 0 is
/// the file itself.
pub(crate) fn open(part: &Received, downloaded: &[u8], limit: u64) -> Result<Vec<u8>, AssetError> {
    match part.hash_alg {
        0 => {}
        SHA_256 => {
            if sha2::Sha256::digest(downloaded).as_slice() != part.content_hash.as_slice() {
                return Err(AssetError::Corrupt(
                    "the downloaded file does not match its contentHash".into(),
                ));
            }
        }
        other => {
            return Err(AssetError::Unsupported {
                what: "hashAlg",
                value: other.into(),
            });
        }
    }
    let plaintext = match part.enc_alg {
        0 => downloaded.to_vec(),
        ExternalPart::AES_128_GCM => {
            if part.key.len() != KEY_LEN || part.nonce.len() != NONCE_LEN {
                return Err(AssetError::Corrupt(format!(
                    "an AES-128-GCM key of {} bytes and nonce of {} bytes",
                    part.key.len(),
                    part.nonce.len()
                )));
            }
            let cipher = Aes128Gcm::new_from_slice(&part.key)
                .map_err(|_| AssetError::Corrupt("a bad AES-128-GCM key".into()))?;
            let payload = Payload {
                msg: downloaded,
                aad: &part.aad,
            };
            cipher
                .decrypt(Nonce::from_slice(&part.nonce), payload)
                .map_err(|_| AssetError::Corrupt("the file does not decrypt with its key".into()))?
        }
        other => {
            return Err(AssetError::Unsupported {
                what: "encAlg",
                value: other,
            });
        }
    };
    let size = plaintext.len() as u64;
    if size > limit {
        return Err(AssetError::TooLarge { size, limit });
    }
    if part.size != 0 && part.size != size && part.size != downloaded.len() as u64 {
        return Err(AssetError::Corrupt(format!(
            "{size} bytes where the message announced {}",
            part.size
        )));
    }
    Ok(plaintext)
}

/// A new ID for a hosted file.
pub(crate) fn new_id() -> String {
    use rand::RngCore as _;
    let mut id = [0u8; 16];
    rand::rng().fill_bytes(&mut id);
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `id` could be one of ours (so a request path never reaches the store unchecked).
pub(crate) fn is_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Keeps `ciphertext` as hosted file `id`.
pub(crate) fn host(store: &AdapterStore, id: &str, ciphertext: &[u8]) -> Result<(), StoreError> {
    store.put(format!("{HOSTED}{id}").as_bytes(), ciphertext)
}

/// Hosted file `id`, if we have it.
pub(crate) fn hosted(store: &AdapterStore, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
    if !is_id(id) {
        return Ok(None);
    }
    store.get(format!("{HOSTED}{id}").as_bytes())
}

/// Notes that our message `message` (hex ID; its first version's for an edit) carries hosted
/// files `ids`, added to those noted before (an edit's files join the original's).
pub(crate) fn note_files_of(
    store: &AdapterStore,
    message: &str,
    ids: &[&str],
) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    let key = format!("{HOSTED_FOR}{message}");
    let mut list = store.get(key.as_bytes())?.unwrap_or_default();
    for id in ids {
        if !list.is_empty() {
            list.push(b'\n');
        }
        list.extend_from_slice(id.as_bytes());
    }
    store.put(key.as_bytes(), &list)
}

/// Deletes the hosted files our message `message` carried (every version's): once a message
/// is deleted, peers can no longer download its files from us. Returns how many were deleted.
pub(crate) fn forget_files_of(store: &AdapterStore, message: &str) -> Result<usize, StoreError> {
    let key = format!("{HOSTED_FOR}{message}");
    let Some(list) = store.get(key.as_bytes())? else {
        return Ok(0);
    };
    let ids: Vec<&str> = std::str::from_utf8(&list)
        .unwrap_or_default()
        .lines()
        .filter(|id| is_id(id))
        .collect();
    let keys: Vec<String> = ids.iter().map(|id| format!("{HOSTED}{id}")).collect();
    let mut batch: Vec<&[u8]> = keys.iter().map(String::as_bytes).collect();
    batch.push(key.as_bytes());
    store.delete_all(&batch)?;
    Ok(ids.len())
}

/// What is needed to download and decrypt a received part later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Received {
    /// The hub of the room it came in: where to ask for `/proxyDownload`.
    pub(crate) hub: String,
    pub(crate) content_type: String,
    pub(crate) size: u64,
    pub(crate) enc_alg: u16,
    pub(crate) key: Vec<u8>,
    pub(crate) nonce: Vec<u8>,
    pub(crate) aad: Vec<u8>,
    pub(crate) hash_alg: u8,
    pub(crate) content_hash: Vec<u8>,
}

impl Received {
    /// The details of `part`, received in a room hosted by `hub`.
    pub(crate) fn of(part: &ExternalPart, hub: &str) -> Self {
        Self {
            hub: hub.to_ascii_lowercase(),
            content_type: part.content_type.clone(),
            size: part.size,
            enc_alg: part.enc_alg,
            key: part.key.clone(),
            nonce: part.nonce.clone(),
            aad: part.aad.clone(),
            hash_alg: part.hash_alg,
            content_hash: part.content_hash.clone(),
        }
    }
}

fn received_key(url: &str) -> Vec<u8> {
    let digest = sha2::Sha256::digest(url.as_bytes());
    let mut key = RECEIVED.as_bytes().to_vec();
    key.extend(digest.iter().flat_map(|b| format!("{b:02x}").into_bytes()));
    key
}

/// Remembers how to open the part at `url` (the core's durable acknowledgement of the message
/// that carries it covers this write: it is applied first).
pub(crate) fn remember(store: &AdapterStore, url: &str, part: &Received) -> Result<(), StoreError> {
    let json = serde_json::to_vec(part).unwrap_or_default();
    store.put(&received_key(url), &json)
}

/// How to open the part at `url`, if one was received.
pub(crate) fn recall(store: &AdapterStore, url: &str) -> Result<Option<Received>, StoreError> {
    Ok(store
        .get(&received_key(url))?
        .and_then(|json| serde_json::from_slice(&json).ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_file_opens_with_its_part_and_not_when_tampered_with() {
        let file = b"a picture of a cat".repeat(100);
        let sealed = seal(&file).expect("sealed");
        assert_eq!(sealed.part.size, file.len() as u64);
        assert_eq!(sealed.ciphertext.len(), file.len() + 16, "GCM adds its tag");
        let received = Received::of(&sealed.part, "hub.example");
        assert_eq!(
            open(&received, &sealed.ciphertext, 1 << 20).expect("opens"),
            file
        );

        let mut tampered = sealed.ciphertext.clone();
        tampered[3] ^= 1;
        assert!(matches!(
            open(&received, &tampered, 1 << 20),
            Err(AssetError::Corrupt(_))
        ));
        // Hash not checked (hashAlg 0): the AEAD tag still catches it.
        let unhashed = Received {
            hash_alg: 0,
            ..received.clone()
        };
        assert!(matches!(
            open(&unhashed, &tampered, 1 << 20),
            Err(AssetError::Corrupt(_))
        ));
        assert!(matches!(
            open(&received, &sealed.ciphertext, 10),
            Err(AssetError::TooLarge { .. })
        ));
        let other_alg = Received {
            enc_alg: 2,
            ..received
        };
        assert!(matches!(
            open(&other_alg, &sealed.ciphertext, 1 << 20),
            Err(AssetError::Unsupported { .. })
        ));
    }

    #[test]
    fn an_unencrypted_part_is_the_file_itself() {
        let part = Received {
            hub: "hub.example".into(),
            content_type: "text/plain".into(),
            size: 5,
            enc_alg: 0,
            key: Vec::new(),
            nonce: Vec::new(),
            aad: Vec::new(),
            hash_alg: 0,
            content_hash: Vec::new(),
        };
        assert_eq!(open(&part, b"hello", 100).expect("opens"), b"hello");
        assert!(matches!(
            open(&part, b"hello!", 100),
            Err(AssetError::Corrupt(_))
        ));
    }

    #[tokio::test]
    async fn deleting_a_message_deletes_the_files_of_every_version_and_no_others() {
        let (core, store) = crate::adapter::memory_store().await;
        let (first, edited, other) = (new_id(), new_id(), new_id());
        for id in [&first, &edited, &other] {
            host(&store, id, b"ciphertext").expect("hosted");
        }
        note_files_of(&store, "aa01", &[&first]).expect("noted");
        // The edit's file is noted under the message it edits.
        note_files_of(&store, "aa01", &[&edited]).expect("noted");
        note_files_of(&store, "bb02", &[&other]).expect("noted");
        assert_eq!(forget_files_of(&store, "aa01").expect("forgotten"), 2);
        assert_eq!(hosted(&store, &first).expect("read"), None);
        assert_eq!(hosted(&store, &edited).expect("read"), None);
        assert!(hosted(&store, &other).expect("read").is_some());
        // Again (a retried deletion), or a message without files: nothing to do.
        assert_eq!(forget_files_of(&store, "aa01").expect("forgotten"), 0);
        assert_eq!(forget_files_of(&store, "cc03").expect("forgotten"), 0);
        core.shutdown().await;
    }

    #[test]
    fn ids_are_checked_before_the_store_is_asked() {
        let id = new_id();
        assert!(is_id(&id));
        assert!(!is_id("../../etc/passwd"));
        assert!(!is_id(&id[..31]));
    }
}
