//! An in-memory [`Store`] for tests: same semantics, nothing survives the process.
//!
//! Most of what the core writes (events, the ID map, the reaction index) it only ever reads
//! back by key, and those tables grow with every event. They live in a hash map (constant-time
//! writes and reads, however large the store); everything else (outboxes, dead letters, links,
//! puppets, adapter state), which the core scans in key order, lives in an ordered map. A scan
//! or [`Store::last`] that reaches into a hashed table is still correct, but linear in that
//! table's size (the core does that once, at start: the last event ID). The hashed tables are
//! split in [`SHARDS`] (a single table's doublings faulted in fresh memory each time). Room logs
//! (`G`) grow with every event too and are scanned per room: each room's entries have an ordered
//! map of their own keyed by the event ID as a number ([`LogKey`]), where one map over every room
//! compared long common prefixes on each insert, and byte keys cost a cache miss per comparison.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, BuildHasherDefault};
use std::ops::Bound;

use parking_lot::RwLock;

use super::keys::{KEY_VERSION, tag};
use super::{Batch, Entry, KeyHash, Store, StoreError};

/// Tables read only by key.
const HASHED: [u8; 4] = [
    tag::EVENT,
    tag::REMOTE_TO_NEUTRAL,
    tag::NEUTRAL_TO_REMOTE,
    tag::REACTION,
];

fn is_hashed(key: &[u8]) -> bool {
    matches!(key, [KEY_VERSION, t, ..] if HASHED.contains(t))
}

/// True when keys starting with `prefix` may live in the hash map.
fn reaches_hashed(prefix: &[u8]) -> bool {
    match prefix {
        [] | [KEY_VERSION] => true,
        _ => is_hashed(prefix),
    }
}

/// Keys of the room logs that start with a whole room component: (the key up to and including
/// the room, the rest).
fn split_log(key: &[u8]) -> Option<(&[u8], &[u8])> {
    match key {
        [KEY_VERSION, t, len @ ..] if *t == tag::ROOM_LOG && len.len() >= 4 => {
            let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
            let end = 6usize.checked_add(len)?;
            (key.len() >= end).then(|| key.split_at(end))
        }
        _ => None,
    }
}

/// True when keys starting with `prefix` may be room-log entries.
fn reaches_log(prefix: &[u8]) -> bool {
    match prefix {
        [] | [KEY_VERSION] => true,
        [KEY_VERSION, t, ..] => *t == tag::ROOM_LOG,
        _ => false,
    }
}

/// The part of a room-log key after the room: the event ID (all the core writes), kept as a
/// number so that the per-room ordered maps compare in registers. Comparing heap-allocated
/// keys cost a likely cache miss per comparison, ~17 per insert: 9 % of `bench core`'s
/// in-memory time was `memcmp`. Any other length is kept as bytes; the order is the bytes'
/// order either way (a 16-byte big-endian number orders like its bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
enum LogKey {
    Id(u128),
    Other(Box<[u8]>),
}

impl LogKey {
    fn new(rest: &[u8]) -> Self {
        match <[u8; 16]>::try_from(rest) {
            Ok(id) => Self::Id(u128::from_be_bytes(id)),
            Err(_) => Self::Other(rest.into()),
        }
    }

    fn with_bytes<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        match self {
            Self::Id(id) => f(&id.to_be_bytes()),
            Self::Other(bytes) => f(bytes),
        }
    }

    /// The whole key: `room` followed by this.
    fn key(&self, room: &[u8]) -> Vec<u8> {
        self.with_bytes(|rest| [room, rest].concat())
    }
}

impl Ord for LogKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        match (self, other) {
            (Self::Id(a), Self::Id(b)) => a.cmp(b),
            _ => self.with_bytes(|a| other.with_bytes(|b| a.cmp(b))),
        }
    }
}

impl PartialOrd for LogKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// A key with its hash computed once: growing the table then rehashes without reading keys.
/// Boxed slices rather than vectors (here and for the values): 16 bytes a slot each instead of
/// 24, and these tables hold every event's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hashed {
    hash: u64,
    key: Box<[u8]>,
}

impl std::hash::Hash for Hashed {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// Passes a [`Hashed`] key's hash through.
#[derive(Debug, Default, Clone, Copy)]
struct PassThrough(u64);

impl std::hash::Hasher for PassThrough {
    fn write(&mut self, bytes: &[u8]) {
        // Not used by `Hashed`; a plain fold keeps it correct for anything else.
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The tables read only by key are split into this many hash tables, by bits of the key's hash
/// that neither picks a table's slot (the low bits) nor its tag (the top 7). One table of every
/// event's keys (1.2 million in `bench core`) doubled by allocating fresh memory each time and
/// copying into it: 15 % of that bench's in-memory time went to faulting those pages in. Tables
/// of 1/64 the size grow one at a time, and the allocator reuses what the others freed.
const SHARDS: usize = 64;

type HashedTable = HashMap<Hashed, Box<[u8]>, BuildHasherDefault<PassThrough>>;

fn shard_of(hash: u64) -> usize {
    (hash >> 32) as usize & (SHARDS - 1)
}

#[derive(Debug)]
struct Maps {
    ordered: BTreeMap<Vec<u8>, Vec<u8>>,
    hashed: Vec<HashedTable>,
    hasher: KeyHash,
    /// Room-log entries: per room (the key up to the room), by the rest of the key.
    logs: HashMap<Vec<u8>, BTreeMap<LogKey, Box<[u8]>>, KeyHash>,
}

impl Default for Maps {
    fn default() -> Self {
        Self {
            ordered: BTreeMap::new(),
            hashed: (0..SHARDS).map(|_| HashedTable::default()).collect(),
            hasher: KeyHash::default(),
            logs: HashMap::default(),
        }
    }
}

impl Maps {
    fn hashed(&self, key: Box<[u8]>) -> Hashed {
        Hashed {
            hash: self.hasher.hash_one(&key),
            key,
        }
    }

    /// Every entry of the hashed tables, in no order.
    fn all_hashed(&self) -> impl Iterator<Item = (&Hashed, &Box<[u8]>)> {
        self.hashed.iter().flat_map(|table| table.iter())
    }

    fn get(&self, key: &[u8]) -> Option<&[u8]> {
        if let Some((room, rest)) = split_log(key) {
            self.logs
                .get(room)
                .and_then(|log| log.get(&LogKey::new(rest)))
                .map(AsRef::as_ref)
        } else if is_hashed(key) {
            // A lookup needs an owned key; events are read far less often than written.
            let key = self.hashed(key.into());
            self.hashed[shard_of(key.hash)].get(&key).map(AsRef::as_ref)
        } else {
            self.ordered.get(key).map(Vec::as_slice)
        }
    }

    fn set(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        if let Some((room, rest)) = split_log(&key) {
            match value {
                Some(v) => {
                    let (rest, v) = (LogKey::new(rest), v.into_boxed_slice());
                    match self.logs.get_mut(room) {
                        Some(log) => {
                            log.insert(rest, v);
                        }
                        None => {
                            self.logs.insert(room.to_vec(), BTreeMap::from([(rest, v)]));
                        }
                    }
                }
                None => {
                    if let Some(log) = self.logs.get_mut(room) {
                        log.remove(&LogKey::new(rest));
                        if log.is_empty() {
                            self.logs.remove(room);
                        }
                    }
                }
            }
            return;
        }
        match (value, is_hashed(&key)) {
            (Some(v), true) => {
                let key = self.hashed(key.into_boxed_slice());
                self.hashed[shard_of(key.hash)].insert(key, v.into_boxed_slice());
            }
            (Some(v), false) => {
                self.ordered.insert(key, v);
            }
            (None, true) => {
                let key = self.hashed(key.into_boxed_slice());
                self.hashed[shard_of(key.hash)].remove(&key);
            }
            (None, false) => {
                self.ordered.remove(&key);
            }
        }
    }

    /// Up to `limit` room-log entries under `prefix` after `after`, sorted: from one room's map
    /// when `prefix` names a whole room, else from every room's (the slow path).
    fn log_range(&self, prefix: &[u8], after: Option<&[u8]>, limit: usize) -> Vec<Entry> {
        let after = after.filter(|a| *a >= prefix);
        if let Some((room, rest_prefix)) = split_log(prefix) {
            let Some(log) = self.logs.get(room) else {
                return Vec::new();
            };
            let start = match after {
                Some(a) if a.starts_with(room) => Bound::Excluded(LogKey::new(&a[room.len()..])),
                // After `prefix` yet outside the room: past every key of the room.
                Some(_) => return Vec::new(),
                None => Bound::Included(LogKey::new(rest_prefix)),
            };
            return log
                .range((start, Bound::Unbounded))
                .take_while(|(rest, _)| rest.with_bytes(|rest| rest.starts_with(rest_prefix)))
                .take(limit)
                .map(|(rest, v)| (rest.key(room), v.to_vec()))
                .collect();
        }
        let mut out: Vec<Entry> = self
            .logs
            .iter()
            .flat_map(|(room, log)| log.iter().map(move |(rest, v)| (rest.key(room), v)))
            .filter(|(k, _)| k.starts_with(prefix) && after.is_none_or(|a| k.as_slice() > a))
            .map(|(k, v)| (k, v.to_vec()))
            .collect();
        out.sort_unstable();
        out.truncate(limit);
        out
    }

    /// Hashed entries under `prefix` after `after`, sorted (the slow path of scans).
    fn hashed_range(&self, prefix: &[u8], after: Option<&[u8]>) -> Vec<Entry> {
        let mut out: Vec<Entry> = self
            .all_hashed()
            .filter(|(k, _)| k.key.starts_with(prefix) && after.is_none_or(|a| &*k.key > a))
            .map(|(k, v)| (k.key.to_vec(), v.to_vec()))
            .collect();
        out.sort_unstable();
        out
    }
}

/// A [`Store`] kept in memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    maps: RwLock<Maps>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Store for MemoryStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.maps.read().get(key).map(<[u8]>::to_vec))
    }

    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        let mut maps = self.maps.write();
        for (key, value) in batch.into_ops() {
            maps.set(key, value);
        }
        Ok(())
    }

    fn apply_all(&self, batches: &[&Batch]) -> Result<(), StoreError> {
        let mut maps = self.maps.write();
        for (key, value) in batches.iter().flat_map(|b| b.ops()) {
            maps.set(key.to_vec(), value.map(<[u8]>::to_vec));
        }
        Ok(())
    }

    fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let maps = self.maps.read();
        let start = match after {
            Some(after) if after >= prefix => Bound::Excluded(after.to_vec()),
            _ => Bound::Included(prefix.to_vec()),
        };
        let ordered = maps
            .ordered
            .range((start, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()));
        let (hashed, log) = (reaches_hashed(prefix), reaches_log(prefix));
        if !hashed && !log {
            return Ok(ordered.collect());
        }
        let mut all: Vec<Entry> = ordered.collect();
        if hashed {
            all.extend(maps.hashed_range(prefix, after));
        }
        if log {
            all.extend(maps.log_range(prefix, after, limit));
        }
        all.sort_unstable();
        all.truncate(limit);
        Ok(all)
    }

    fn last(&self, prefix: &[u8]) -> Result<Option<Entry>, StoreError> {
        let maps = self.maps.read();
        let ordered = maps
            .ordered
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .last()
            .map(|(k, v)| (k.clone(), v.clone()));
        let ordered = if reaches_log(prefix) {
            let log = maps.log_range(prefix, None, usize::MAX).pop();
            ordered.max(log)
        } else {
            ordered
        };
        if !reaches_hashed(prefix) {
            return Ok(ordered);
        }
        let hashed = maps
            .all_hashed()
            .filter(|(k, _)| k.key.starts_with(prefix))
            .max_by(|a, b| a.0.key.cmp(&b.0.key))
            .map(|(k, v)| (k.key.to_vec(), v.to_vec()));
        Ok(ordered.max(hashed))
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn is_durable(&self) -> bool {
        false
    }
}
