//! The default [`Store`]: sled, one directory, no server.

use std::path::{Path, PathBuf};

use super::{Batch, Entry, Store, StoreError};

/// A [`Store`] in a sled database. Only one process may open a directory at a time.
#[derive(Debug)]
pub struct SledStore {
    db: sled::Db,
    tree: sled::Tree,
    dir: PathBuf,
    /// sled's data file, for the `fdatasync` its own flush leaves out (see [`Store::flush`]).
    data: std::fs::File,
    /// The blob files (sled's items too large for its log) synced by an earlier flush.
    synced_blobs: parking_lot::Mutex<std::collections::HashSet<std::ffi::OsString>>,
}

fn backend(e: sled::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl SledStore {
    /// Opens (or creates) the store in `dir`. Fails with a clear message when another process
    /// holds it. A store just closed in this process may still be held for a moment by sled's
    /// background thread, so a held lock is retried for up to two seconds first.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let db = loop {
            match Self::config(dir).open() {
                Ok(db) => break db,
                Err(e) if is_lock_held(&e) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) if is_lock_held(&e) => {
                    return Err(StoreError::Backend(format!(
                        "{} is in use by another process (is the bridge running?)",
                        dir.display()
                    )));
                }
                Err(other) => {
                    return Err(StoreError::Backend(format!("{}: {other}", dir.display())));
                }
            }
        };
        let tree = db.open_tree("bridge").map_err(backend)?;
        let path = dir.join("db");
        let data = std::fs::File::open(&path)
            .map_err(|e| StoreError::Backend(format!("{}: {e}", path.display())))?;
        Ok(Self {
            db,
            tree,
            dir: dir.to_path_buf(),
            data,
            synced_blobs: Default::default(),
        })
    }

    /// Syncs the blob files written since the last flush, and their directory. sled 0.34
    /// writes an item larger than about a quarter of a segment (a large page, ~128 kB) to a
    /// file of its own under `blobs/` and never syncs it; its log then points at the file, so
    /// losing it to a power cut would lose every key of that page.
    fn sync_blobs(&self) -> Result<(), StoreError> {
        let dir = self.dir.join("blobs");
        let failed = |what: &Path, e: std::io::Error| {
            StoreError::Backend(format!("cannot sync {}: {e}", what.display()))
        };
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(failed(&dir, e)),
        };
        // Only flushes take it: held across the syncs.
        let mut synced = self.synced_blobs.lock();
        let mut present = std::collections::HashSet::new();
        let mut synced_any = false;
        for entry in entries {
            let name = entry.map_err(|e| failed(&dir, e))?.file_name();
            if !synced.contains(&name) {
                let path = dir.join(&name);
                match std::fs::File::open(&path).and_then(|f| f.sync_data()) {
                    Ok(()) => synced_any = true,
                    // Collected by sled meanwhile.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(failed(&path, e)),
                }
            }
            present.insert(name);
        }
        if synced_any {
            std::fs::File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| failed(&dir, e))?;
        }
        *synced = present;
        Ok(())
    }

    fn config(dir: &Path) -> sled::Config {
        sled::Config::new()
            .path(dir)
            // A small page cache: the hot set (recent events, outbox heads, ID map) is small,
            // and the bridge must stay lean; sled only grows to this when needed, and what it
            // drops is read back from the OS page cache. 8 MB rather than 16: bench mimi's RSS
            // per hosted MLS client 22.6–24.9 → 18.9–21.1 kB, the core's durable rate within
            // the noise (docs/benchmarks.md).
            .cache_capacity(8 * 1024 * 1024)
            .mode(sled::Mode::HighThroughput)
            // The core flushes explicitly (group commit); this is only a safety net.
            .flush_every_ms(Some(1000))
    }
}

/// True when sled could not take the directory's file lock (another open database holds it).
fn is_lock_held(e: &sled::Error) -> bool {
    match e {
        // sled wraps the lock failure in an error of its own whose text names it.
        sled::Error::Io(io) => {
            io.kind() == std::io::ErrorKind::WouldBlock
                || io.to_string().contains("could not acquire lock")
        }
        _ => false,
    }
}

impl Store for SledStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tree.get(key).map_err(backend)?.map(|v| v.to_vec()))
    }

    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        self.apply_all(&[&batch])
    }

    fn apply_all(&self, batches: &[&Batch]) -> Result<(), StoreError> {
        // A sled batch keeps the last operation per key: a key set and removed within it costs
        // one removal, which sled skips when the key is absent.
        let mut sled_batch = sled::Batch::default();
        for (key, value) in batches.iter().flat_map(|b| b.ops()) {
            match value {
                Some(value) => sled_batch.insert(key, value),
                None => sled_batch.remove(key),
            }
        }
        self.tree.apply_batch(sled_batch).map_err(backend)
    }

    fn apply_journaled(&self, batches: &[&Batch]) -> Result<(), StoreError> {
        // One write per key, the last, in key order (as `apply_batch` does), each on its own:
        // no batch takes sled's global write lock, which stops every reader of the process
        // while a batch is applied (~5 µs per key). sled recovers a prefix of its log after
        // the process is killed, so a crash keeps these writes' order relative to earlier and
        // later calls. After a power cut sled promises no prefix, for batches neither: what it
        // flushed (see `flush`) it keeps, the rest is the journal's to replay.
        let mut last: std::collections::BTreeMap<&[u8], Option<&[u8]>> = Default::default();
        for (key, value) in batches.iter().flat_map(|b| b.ops()) {
            last.insert(key, value);
        }
        for (key, value) in last {
            match value {
                Some(value) => self.tree.insert(key, value).map(drop),
                None => self.tree.remove(key).map(drop),
            }
            .map_err(backend)?;
        }
        Ok(())
    }

    fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let mut out = Vec::new();
        let iter = match after {
            Some(after) if after >= prefix => self
                .tree
                .range::<&[u8], _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)),
            _ => self.tree.range::<&[u8], _>(prefix..),
        };
        for item in iter {
            let (k, v) = item.map_err(backend)?;
            if !k.starts_with(prefix) || out.len() >= limit {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    fn last(&self, prefix: &[u8]) -> Result<Option<Entry>, StoreError> {
        let item = self.tree.scan_prefix(prefix).next_back();
        Ok(item
            .transpose()
            .map_err(backend)?
            .map(|(k, v)| (k.to_vec(), v.to_vec())))
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map_err(backend)?;
        // sled 0.34's flush writes its buffers with `sync_file_range`, which neither empties
        // the drive's write cache nor records the file's new length: enough for a killed
        // process, not for a power cut (only its background flusher calls `fsync`, once a
        // second). The journal deletes its files on the strength of this flush, so it must
        // survive both.
        self.data
            .sync_data()
            .map_err(|e| StoreError::Backend(format!("{}/db: {e}", self.dir.display())))?;
        self.sync_blobs()
    }

    fn is_durable(&self) -> bool {
        true
    }

    fn journal_dir(&self) -> Option<&Path> {
        Some(&self.dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journaled_batches_leave_the_last_write_of_each_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(dir.path()).expect("open");
        let mut first = Batch::new();
        first.put(b"a".to_vec(), b"1".to_vec());
        first.put(b"b".to_vec(), b"1".to_vec());
        let mut second = Batch::new();
        second.delete(b"a".to_vec());
        second.put(b"b".to_vec(), b"2".to_vec());
        second.put(b"c".to_vec(), b"3".to_vec());
        second.delete(b"d".to_vec());
        store.apply_journaled(&[&first, &second]).expect("apply");
        assert_eq!(store.get(b"a").expect("get"), None);
        assert_eq!(store.get(b"b").expect("get"), Some(b"2".to_vec()));
        assert_eq!(store.get(b"c").expect("get"), Some(b"3".to_vec()));
        assert_eq!(store.get(b"d").expect("get"), None);
    }

    #[test]
    fn a_flush_syncs_the_blob_files_sled_writes_large_items_to() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(dir.path()).expect("open");
        let mut batch = Batch::new();
        batch.put(b"large".to_vec(), vec![7; 512 * 1024]);
        store.apply(batch).expect("apply");
        store.flush().expect("flush");
        let blobs: Vec<_> = std::fs::read_dir(dir.path().join("blobs"))
            .expect("blobs")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert!(!blobs.is_empty(), "sled wrote the item to a blob file");
        let synced = store.synced_blobs.lock();
        assert!(
            blobs.iter().all(|b| synced.contains(b)),
            "{blobs:?} {synced:?}"
        );
    }

    #[test]
    fn a_held_store_is_refused_with_a_clear_message() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _held = SledStore::open(dir.path()).expect("open");
        // sled refuses a second open of a directory in the same process as in another one.
        let err = SledStore::open(dir.path()).expect_err("second open");
        assert!(
            err.to_string().contains("in use by another process"),
            "{err}"
        );
    }
}
