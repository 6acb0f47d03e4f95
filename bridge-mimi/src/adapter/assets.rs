//! Attachments: MIMI `ExternalPart`s (draft-ietf-mimi-content-08 §4.5) and the encrypted files
//! they point at.
//!
//! **Sending.** A file another adapter received is fetched through it (or as a plain HTTP(S)
//! link), encrypted with AES-128-GCM under a fresh key and nonce (empty AAD), and hosted by our
//! provider at `ORIGIN/assets/ID` (ID: 16 random bytes, hex). The part carries the key, the
//! nonce, the SHA-256 of the ciphertext (`contentHash`: "hash of the content at the target
//! url") and the size of the *plaintext* (what a user is shown; the draft does not say which).
//! The ciphertext is kept in the adapter's store, so it survives restarts; peers download it
//! over the same mutual-TLS HTTPS as every other MIMI call. It is deleted with its message, and
//! after `hosted_files_days` when that is set ([`expire_hosted`]).
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
/// Store key prefix of when each hosted file was hosted, in hosting order:
/// `a/hosted-at/<ms since the epoch, 12 hex digits>/<ID>` → nothing. Read to delete files older
/// than `hosted_files_days` ([`expire_hosted`]).
const HOSTED_AT: &str = "a/hosted-at/";
/// Written once every file hosted before hosting times were recorded has an entry under
/// [`HOSTED_AT`] (the time of that pass, which stands for their hosting time).
const HOSTED_AT_COMPLETE: &[u8] = b"a/hosted-at-complete";
/// Index entries read per page when expiring.
const PAGE: usize = 256;
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

/// A new ID for a file hosted at `now_ms`: the time (48 bits, as in a ULID), then 80 random
/// bits, in hex. The time is what finds the file's entry in the hosting-time index when its
/// message is deleted (IDs made before it are 128 random bits: their entry, if any, goes when
/// it expires).
pub(crate) fn new_id(now_ms: u64) -> String {
    use rand::RngCore as _;
    let mut id = [0u8; 16];
    id[..6].copy_from_slice(&now_ms.to_be_bytes()[2..]);
    rand::rng().fill_bytes(&mut id[6..]);
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// The hosting time an ID of [`new_id`] carries.
fn time_of(id: &str) -> u64 {
    id.get(..12)
        .and_then(|t| u64::from_str_radix(t, 16).ok())
        .unwrap_or(0)
}

/// The index entry of file `id` hosted at `at_ms`.
fn hosted_at_key(at_ms: u64, id: &str) -> String {
    format!("{HOSTED_AT}{:012x}/{id}", at_ms & 0xffff_ffff_ffff)
}

/// Whether `id` could be one of ours (so a request path never reaches the store unchecked).
pub(crate) fn is_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Keeps `ciphertext` as hosted file `id` (from [`new_id`], which says when it was hosted).
pub(crate) fn host(store: &AdapterStore, id: &str, ciphertext: &[u8]) -> Result<(), StoreError> {
    let file = format!("{HOSTED}{id}");
    let at = hosted_at_key(time_of(id), id);
    store.put_all(&[(file.as_bytes(), ciphertext), (at.as_bytes(), b"")])
}

/// Deletes the files hosted before `cutoff_ms`, with their index entries; returns how many
/// came of age (a file deleted with its message before it had a findable entry counts too).
/// Files hosted before hosting times were recorded (no entry where their ID's time says) are
/// given `now_ms` as theirs the first time this runs (read one at a time: each value is a
/// whole file).
pub(crate) fn expire_hosted(
    store: &AdapterStore,
    cutoff_ms: u64,
    now_ms: u64,
) -> Result<usize, StoreError> {
    if store.get(HOSTED_AT_COMPLETE)?.is_none() {
        let mut after: Option<Vec<u8>> = None;
        while let Some((key, _)) = store
            .scan_after(HOSTED.as_bytes(), after.as_deref(), 1)?
            .into_iter()
            .next()
        {
            if let Some(id) = std::str::from_utf8(&key[HOSTED.len()..])
                .ok()
                .filter(|id| is_id(id))
                && store
                    .get(hosted_at_key(time_of(id), id).as_bytes())?
                    .is_none()
            {
                store.put(hosted_at_key(now_ms, id).as_bytes(), b"")?;
            }
            after = Some(key);
        }
        store.put(HOSTED_AT_COMPLETE, now_ms.to_string().as_bytes())?;
    }
    let mut deleted = 0;
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = store.scan_after(HOSTED_AT.as_bytes(), after.as_deref(), PAGE)?;
        let full = page.len() == PAGE;
        let mut doomed: Vec<Vec<u8>> = Vec::new();
        let mut reached = false;
        for (key, _) in &page {
            let entry = std::str::from_utf8(&key[HOSTED_AT.len()..]).unwrap_or_default();
            let Some((at, id)) = entry
                .split_once('/')
                .and_then(|(at, id)| Some((u64::from_str_radix(at, 16).ok()?, id)))
            else {
                continue;
            };
            if at >= cutoff_ms {
                reached = true;
                break;
            }
            if is_id(id) {
                doomed.push(format!("{HOSTED}{id}").into_bytes());
                deleted += 1;
            }
            doomed.push(key.clone());
        }
        let keys: Vec<&[u8]> = doomed.iter().map(Vec::as_slice).collect();
        store.delete_all(&keys)?;
        match page.last() {
            Some((last, _)) if full && !reached => after = Some(last.clone()),
            _ => return Ok(deleted),
        }
    }
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
    let keys: Vec<String> = (ids.iter())
        .flat_map(|id| [format!("{HOSTED}{id}"), hosted_at_key(time_of(id), id)])
        .collect();
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
        let now = 1_800_000_000_000;
        let (first, edited, other) = (new_id(now), new_id(now), new_id(now));
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

    /// Index entries left, as (hosting time, ID).
    fn index(store: &AdapterStore) -> Vec<(u64, String)> {
        (store
            .scan(HOSTED_AT.as_bytes(), 1000)
            .expect("scan")
            .into_iter())
        .map(|(key, _)| {
            let entry = String::from_utf8(key[HOSTED_AT.len()..].to_vec()).expect("text");
            let (at, id) = entry.split_once('/').expect("time/id");
            (u64::from_str_radix(at, 16).expect("hex"), id.to_owned())
        })
        .collect()
    }

    #[tokio::test]
    async fn hosted_files_expire_by_age_those_hosted_before_times_were_kept_included() {
        let (core, store) = crate::adapter::memory_store().await;
        let now = 1_800_000_000_000u64;
        let day = 24 * 3600 * 1000;
        let (old, recent, fresh) = (
            new_id(now - 40 * day),
            new_id(now - 10 * day),
            new_id(now - day),
        );
        for id in [&old, &recent, &fresh] {
            host(&store, id, b"ciphertext").expect("hosted");
        }
        // Hosted by an earlier version: a random ID, no index entry.
        let earlier = "0123456789abcdef0123456789abcdef";
        store
            .put(format!("{HOSTED}{earlier}").as_bytes(), b"ciphertext")
            .expect("put");
        assert_eq!(index(&store).len(), 3);

        // Thirty days: only the 40-day-old file goes; the earlier one is given `now`.
        assert_eq!(
            expire_hosted(&store, now - 30 * day, now).expect("expired"),
            1
        );
        assert_eq!(hosted(&store, &old).expect("read"), None);
        for id in [recent.as_str(), fresh.as_str(), earlier] {
            assert!(hosted(&store, id).expect("read").is_some(), "{id} kept");
        }
        let left = index(&store);
        assert_eq!(left.len(), 3, "{left:?}");
        assert!(left.contains(&(now, earlier.to_owned())), "{left:?}");
        assert!(!left.iter().any(|(_, id)| *id == old), "{left:?}");

        // Deleting a message takes its file's index entry too.
        note_files_of(&store, "aa01", &[&recent]).expect("noted");
        assert_eq!(forget_files_of(&store, "aa01").expect("forgotten"), 1);
        assert!(!index(&store).iter().any(|(_, id)| *id == recent));

        // A day later than everything: the rest goes, the earlier file by the time it was given
        // (the pass that gave it one is not repeated: it would give it a new time).
        let later = now + 1;
        assert_eq!(expire_hosted(&store, later, later).expect("expired"), 2);
        for id in [fresh.as_str(), earlier] {
            assert_eq!(hosted(&store, id).expect("read"), None, "{id} expired");
        }
        assert!(index(&store).is_empty());
        assert_eq!(expire_hosted(&store, later, later).expect("expired"), 0);
        core.shutdown().await;
    }

    #[tokio::test]
    async fn expiry_pages_through_many_files_and_stops_at_the_first_young_one() {
        let (core, store) = crate::adapter::memory_store().await;
        let now = 1_800_000_000_000u64;
        store.put(HOSTED_AT_COMPLETE, b"1").expect("put");
        let ids: Vec<String> = (0..(2 * PAGE as u64 + 3))
            .map(|i| new_id(now - 1_000_000 + i))
            .collect();
        for id in &ids {
            host(&store, id, b"c").expect("hosted");
        }
        // The first PAGE + 5 are older than the cutoff.
        let cutoff = time_of(&ids[PAGE + 5]);
        assert_eq!(
            expire_hosted(&store, cutoff, now).expect("expired"),
            PAGE + 5
        );
        assert_eq!(hosted(&store, &ids[PAGE + 4]).expect("read"), None);
        assert!(hosted(&store, &ids[PAGE + 5]).expect("read").is_some());
        assert_eq!(index(&store).len(), ids.len() - PAGE - 5);
        core.shutdown().await;
    }

    #[test]
    fn ids_are_checked_before_the_store_is_asked() {
        let id = new_id(1_800_000_000_000);
        assert!(is_id(&id));
        assert_eq!(time_of(&id), 1_800_000_000_000);
        assert!(!is_id("../../etc/passwd"));
        assert!(!is_id(&id[..31]));
    }
}
