//! Forgetting old events: what keeps the store from growing for ever.
//!
//! Each bridged event leaves its content (`E`), its entry in its room's log (`G`), the native
//! IDs of its copies (`n`), the way back from every native ID to it (`r`) and the reactions to it
//! (`X`). They serve edits, replies, reactions and deletions of the event, recognising
//! redeliveries of it, and the outbox. With a retention set (`[bridge] keep_days`), a pass
//! every few hours deletes them for the events issued before the retention began, except where
//! something still needs them:
//!
//! - a room's events from the first one any of its links may not have handled (after its
//!   stored cursor, not its own: its worker reads on from there after a crash);
//! - events in an explicit outbox entry (`O`: dead letters put back) or a dead letter (`D`); a
//!   dead letter given up before the retention began is deleted with its event.
//!
//! An edit, reply, reaction or deletion that reaches the bridge later for a forgotten event finds
//! no copy of it: it is carried the way a relation to an event that never crossed is (the
//! degradation policy's fallback). A native ID forgotten is not recognised as a redelivery any
//! more; sources redeliver within minutes or days, far inside any retention.
//!
//! The walk: stored events by ID up to the retention (each names its room), deleting those
//! that may go with their room log entries; then the copies' IDs and reactions up to the
//! retention whose event is no longer stored (all three tables begin their keys with the event
//! ID, so the walks stop at the retention); then every native ID, by the event it names. One
//! page at a time, whatever the store's size; the set of events still named by dead letters
//! and outbox entries is the one thing held whole (a few per dead letter).
//!
//! Nothing here waits for durability: a pass cut short by a crash, or by a shutdown (checked
//! between pages), is done again by the next.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use crate::ids::{AdapterId, EventId, RemoteRoomId, RoomId};
use crate::store::keys::{Key, KeyReader, id_value, tag};
use crate::store::{Batch, StoreError};

use super::Shared;
use super::ingest::{cursor_key, is_from, room_log_key, room_log_prefix};
use crate::routing::Link;

/// Deletes per store batch (of dead letters).
const BATCH: usize = 512;
/// Keys read per scan.
const PAGE: usize = 1024;
/// How often a pass runs (the first one a minute after the start).
pub(crate) const EVERY: Duration = Duration::from_secs(6 * 3600);
/// When the first pass runs.
pub(crate) const FIRST_AFTER: Duration = Duration::from_secs(60);

/// What one pass deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Events forgotten (their content, room log entry, copies' IDs and reactions).
    pub events: u64,
    /// Native IDs forgotten (the way back to a forgotten event, or to a management message).
    pub native_ids: u64,
    /// Dead letters given up before the retention began.
    pub dead_letters: u64,
}

/// The smallest event ID issued at `at` or later.
fn first_id_at(at: SystemTime) -> EventId {
    let ms = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    EventId::from_u128(ms.min((1 << 48) - 1) << 80)
}

/// The pass's view of what must stay.
struct Keep {
    /// Events before this ID may go (the retention).
    before: EventId,
    /// Per neutral room, the first entry of its log that one of its links may not have
    /// handled (as far as the store knows): it and every later one stay.
    floors: HashMap<RoomId, EventId>,
    /// Per native room, its neutral room.
    rooms: HashMap<(AdapterId, RemoteRoomId), RoomId>,
    /// Events an outbox entry or a dead letter still names.
    named: HashSet<EventId>,
}

impl Keep {
    /// True when event `id` of `room` may be forgotten.
    fn may_go(&self, room: Option<&RoomId>, id: EventId) -> bool {
        id < self.before
            && room
                .and_then(|r| self.floors.get(r))
                .is_none_or(|first_unhandled| id < *first_unhandled)
            && !self.named.contains(&id)
    }
}

/// One pass: forgets what was issued before `before` and nothing needs (see the module docs).
pub(crate) fn pass(shared: &Shared, before: SystemTime) -> Result<PruneReport, StoreError> {
    let mut report = PruneReport::default();
    let before = first_id_at(before);
    let keep = keep(shared, before, &mut report)?;
    forget_events(shared, &keep, &mut report)?;
    forget_native_ids(shared, &keep, &mut report)?;
    Ok(report)
}

fn keep(shared: &Shared, before: EventId, report: &mut PruneReport) -> Result<Keep, StoreError> {
    let store = &*shared.store;
    let mut floors = HashMap::new();
    let mut rooms = HashMap::new();
    let links: Vec<_> = {
        let routing = shared.routing.read();
        (routing.all_links())
            .map(|(room, link)| (room.clone(), link.clone()))
            .collect()
    };
    for (room, link) in links {
        if let Some(first) = first_unhandled(store, &room, &link)? {
            let floor = floors.entry(room.clone()).or_insert(first);
            *floor = (*floor).min(first);
        }
        rooms.insert((link.adapter, link.remote), room);
    }
    // Dead letters before outbox entries: one put back meanwhile is named by the second.
    let dead = scan_all(store, &Key::new(tag::DEAD).build(), |key, value| {
        let mut reader = KeyReader::new(key, tag::DEAD)?;
        reader.str()?;
        reader.str()?;
        let id = reader.id()?;
        let at_ms = serde_json::from_slice::<serde_json::Value>(value)
            .ok()
            .and_then(|v| v.get("at_ms")?.as_u64());
        let old = at_ms.map_or(id < before, |ms| first_id_at(from_ms(ms)) < before);
        Some((key.to_vec(), id, old))
    })?;
    let mut named: HashSet<EventId> = scan_all(store, &Key::new(tag::OUTBOX).build(), |key, _| {
        let mut reader = KeyReader::new(key, tag::OUTBOX)?;
        reader.str()?;
        reader.str()?;
        reader.id()
    })?
    .into_iter()
    .collect();
    let mut given_up = Vec::new();
    for (key, id, old) in dead {
        if old {
            given_up.push(key);
        } else {
            named.insert(id);
        }
    }
    report.dead_letters = given_up.len() as u64;
    delete_all(shared, given_up)?;
    Ok(Keep {
        before,
        floors,
        rooms,
        named,
    })
}

/// The first entry of `room`'s log that `link` may not have handled yet: the first after its
/// stored cursor that did not come from the link itself (a link's own events are not for it,
/// and its cursor moves past them only when a later event is); `None` when there is none.
fn first_unhandled(
    store: &dyn crate::store::Store,
    room: &RoomId,
    link: &Link,
) -> Result<Option<EventId>, StoreError> {
    let cursor = (store.get(&cursor_key(link))?).and_then(|v| id_value(&v));
    let prefix = room_log_prefix(room).build();
    let mut after = cursor.map(|c| room_log_key(room, c));
    loop {
        let page = store.scan(&prefix, after.as_deref(), PAGE)?;
        for (key, value) in &page {
            if !is_from(value, link) {
                return Ok(KeyReader::new(key, tag::ROOM_LOG).and_then(|mut r| {
                    r.str()?;
                    r.id()
                }));
            }
        }
        if page.len() < PAGE {
            return Ok(None);
        }
        after = page.last().map(|(k, _)| k.clone());
    }
}

fn from_ms(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

/// Forgets the stored events issued before the retention that may go (by the room each names),
/// with their room log entries; then the copies' IDs and reactions of events no longer stored.
/// Both walks stop at the retention (the tables begin their keys with the event ID), and hold
/// one page at a time.
fn forget_events(shared: &Shared, keep: &Keep, report: &mut PruneReport) -> Result<(), StoreError> {
    #[derive(serde::Deserialize)]
    struct RoomOf {
        room: RoomId,
    }
    let store = &*shared.store;
    report.events = walk_before(shared, tag::EVENT, keep.before, |id, _, value, doomed| {
        let room = serde_json::from_slice::<RoomOf>(value).ok().map(|e| e.room);
        if !keep.may_go(room.as_ref(), id) {
            return Ok(false);
        }
        doomed.delete(super::ingest::event_key(id));
        if let Some(room) = room {
            doomed.delete(room_log_key(&room, id));
        }
        Ok(true)
    })?;
    for table in [tag::NEUTRAL_TO_REMOTE, tag::REACTION] {
        let mut last: Option<(EventId, bool)> = None;
        walk_before(shared, table, keep.before, |id, key, _, doomed| {
            let gone = match last {
                Some((seen, gone)) if seen == id => gone,
                _ => {
                    let gone = store.get(&super::ingest::event_key(id))?.is_none();
                    last = Some((id, gone));
                    gone
                }
            };
            if gone {
                doomed.delete(key.to_vec());
            }
            Ok(gone)
        })?;
    }
    Ok(())
}

/// Visits the entries of `table` (keys beginning with an event ID) issued before `before`, a
/// page at a time; `visit` adds what goes to the page's batch and says whether it counted.
/// Stops early when the bridge shuts down. Returns how many counted.
fn walk_before(
    shared: &Shared,
    table: u8,
    before: EventId,
    mut visit: impl FnMut(EventId, &[u8], &[u8], &mut Batch) -> Result<bool, StoreError>,
) -> Result<u64, StoreError> {
    let prefix = Key::new(table).build();
    let mut counted = 0;
    let mut after: Option<Vec<u8>> = None;
    loop {
        if shared.shutdown.is_cancelled() {
            return Ok(counted);
        }
        let page = shared.store.scan(&prefix, after.as_deref(), PAGE)?;
        let mut doomed = Batch::new();
        let mut done = page.len() < PAGE;
        for (key, value) in &page {
            let Some(id) = KeyReader::new(key, table).and_then(|mut r| r.id()) else {
                continue;
            };
            if id >= before {
                done = true;
                break;
            }
            if visit(id, key, value, &mut doomed)? {
                counted += 1;
            }
        }
        if !doomed.is_empty() {
            shared.apply(doomed)?;
        }
        if done {
            return Ok(counted);
        }
        after = page.last().map(|(k, _)| k.clone());
    }
}

/// Sweeps the native-to-neutral map: an entry naming an event that may go (of the neutral
/// room its native room is linked to, or of none) goes.
fn forget_native_ids(
    shared: &Shared,
    keep: &Keep,
    report: &mut PruneReport,
) -> Result<(), StoreError> {
    let prefix = Key::new(tag::REMOTE_TO_NEUTRAL).build();
    report.native_ids = sweep(shared, &prefix, |key, value| {
        let Some(id) = value.get(..16).and_then(id_value) else {
            return false;
        };
        let Some(native_room) = KeyReader::new(key, tag::REMOTE_TO_NEUTRAL)
            .and_then(|mut r| Some((AdapterId::new(r.str()?), RemoteRoomId::new(r.str()?))))
        else {
            return false;
        };
        keep.may_go(keep.rooms.get(&native_room), id)
    })?;
    Ok(())
}

/// Deletes every entry under `prefix` that `doomed` picks, a page at a time; returns how many.
fn sweep(
    shared: &Shared,
    prefix: &[u8],
    mut doomed: impl FnMut(&[u8], &[u8]) -> bool,
) -> Result<u64, StoreError> {
    let mut deleted = 0;
    let mut after: Option<Vec<u8>> = None;
    loop {
        if shared.shutdown.is_cancelled() {
            return Ok(deleted);
        }
        let page = shared.store.scan(prefix, after.as_deref(), PAGE)?;
        let mut batch = Batch::new();
        for (key, value) in &page {
            if doomed(key, value) {
                batch.delete(key.clone());
                deleted += 1;
            }
        }
        if !batch.is_empty() {
            shared.apply(batch)?;
        }
        if page.len() < PAGE {
            return Ok(deleted);
        }
        after = page.last().map(|(k, _)| k.clone());
    }
}

/// Every entry under `prefix`, a page at a time, mapped by `pick` (`None`: skipped).
fn scan_all<T>(
    store: &dyn crate::store::Store,
    prefix: &[u8],
    mut pick: impl FnMut(&[u8], &[u8]) -> Option<T>,
) -> Result<Vec<T>, StoreError> {
    let mut picked = Vec::new();
    crate::store::for_each_with_prefix(store, prefix, |key, value| {
        picked.extend(pick(key, value));
        Ok(())
    })?;
    Ok(picked)
}

fn delete_all(shared: &Shared, keys: Vec<Vec<u8>>) -> Result<(), StoreError> {
    for chunk in keys.chunks(BATCH) {
        let mut batch = Batch::new();
        for key in chunk {
            batch.delete(key.clone());
        }
        shared.apply(batch)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_id_of_a_moment_is_below_every_id_issued_then() {
        let at = SystemTime::now();
        let id = crate::ids::EventIdGenerator::after(None).next_id();
        assert!(first_id_at(at) <= id);
        assert!(first_id_at(at + Duration::from_millis(2)) > id);
    }
}
