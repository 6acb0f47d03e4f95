//! What a removed link leaves to do on the networks, kept until it is done.
//!
//! Removing a link (at runtime, or by leaving it out of the configuration before a start) owes
//! two kinds of work: the removed link's adapter leaves its native room (with its puppets), and,
//! unless that adapter keeps another link in the neutral room, each remaining link's adapter
//! makes the puppets of the removed adapter's users leave its native room
//! ([`Adapter::source_unlinked`](crate::adapter::Adapter::source_unlinked)). Each piece is
//! recorded in the store in the batch that removes the link, done when its adapter is connected
//! (at once at runtime, at the adapter's next connection otherwise: at a start the adapters are
//! not connected yet when the configuration's links are applied), and deleted once done. A piece
//! that failed for a passing reason is tried again at the adapter's next connection; one that
//! the network refuses for good, or that a new link made moot, is dropped.

use crate::adapter::AdapterError;
use crate::ids::{AdapterId, RemoteRoomId, RoomId};
use crate::routing::{Link, RoutingTable};
use crate::store::keys::{Key, KeyReader, tag};
use crate::store::{Batch, for_each_with_prefix};

use super::Shared;

/// A piece of work a removed link left.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Owed {
    /// The adapter leaves its native room, whose link was removed.
    Leave,
    /// The adapter's puppets of this adapter's users leave its native room.
    SourceUnlinked(AdapterId),
}

fn key(adapter: &AdapterId, room: &RemoteRoomId, owed: &Owed) -> Vec<u8> {
    let source = match owed {
        Owed::Leave => "",
        Owed::SourceUnlinked(source) => source.as_str(),
    };
    Key::new(tag::UNLINK_OWED)
        .str(adapter.as_str())
        .str(room.as_str())
        .str(source)
        .build()
}

fn read(key: &[u8]) -> Option<(RemoteRoomId, Owed)> {
    let mut reader = KeyReader::new(key, tag::UNLINK_OWED)?;
    let _adapter = reader.str()?;
    let room = RemoteRoomId::new(reader.str()?);
    let owed = match reader.str()? {
        "" => Owed::Leave,
        source => Owed::SourceUnlinked(AdapterId::new(source)),
    };
    Some((room, owed))
}

/// Records, in `batch`, the work owed for `removed`, a link of `room` already gone from
/// `routing` (so `room` keeps the links `routing` now gives it). `leave` is false when the
/// removed link's adapter is gone from the configuration (nobody to leave).
pub(crate) fn record(
    routing: &RoutingTable,
    room: &RoomId,
    removed: &Link,
    leave: bool,
    batch: &mut Batch,
) {
    if leave {
        batch.put(
            key(&removed.adapter, &removed.remote, &Owed::Leave),
            Vec::new(),
        );
    }
    let Some(room) = routing.room(room) else {
        return;
    };
    if room.links.iter().any(|l| l.adapter == removed.adapter) {
        return;
    }
    let owed = Owed::SourceUnlinked(removed.adapter.clone());
    for other in &room.links {
        batch.put(key(&other.adapter, &other.remote, &owed), Vec::new());
    }
}

/// Deletes what is owed to adapters that are not configured any more (nobody to do it).
pub(crate) fn drop_orphans(
    store: &dyn crate::store::Store,
    known: impl Fn(&AdapterId) -> bool,
    batch: &mut Batch,
) -> Result<(), crate::store::StoreError> {
    for_each_with_prefix(store, &Key::new(tag::UNLINK_OWED).build(), |key, _| {
        let adapter = KeyReader::new(key, tag::UNLINK_OWED).and_then(|mut r| r.str());
        if adapter.is_none_or(|a| !known(&AdapterId::new(a))) {
            batch.delete(key.to_vec());
        }
        Ok(())
    })
}

/// Does the work owed to `adapter`'s native rooms; what is done (or moot) is deleted, what
/// failed for a passing reason stays for the adapter's next connection.
pub(crate) async fn settle(shared: &Shared, adapter: &AdapterId) {
    let Some(slot) = shared.adapters.get(adapter) else {
        return;
    };
    // One settle at a time (a connection and a runtime unlink may ask at once).
    let _turn = shared.settling.lock().await;
    let prefix = Key::new(tag::UNLINK_OWED).str(adapter.as_str()).build();
    let mut due = Vec::new();
    let scanned = for_each_with_prefix(&*shared.store, &prefix, |key, _| {
        due.push(key.to_vec());
        Ok(())
    });
    if let Err(e) = scanned {
        tracing::warn!(%adapter, error = %e, "cannot read what removed links left to do");
        return;
    }
    for key in due {
        let Some((room, owed)) = read(&key) else {
            forget(shared, key);
            continue;
        };
        if moot(shared, adapter, &room, &owed) {
            forget(shared, key);
            continue;
        }
        let done = match &owed {
            Owed::Leave => slot.adapter.leave(&room).await,
            Owed::SourceUnlinked(source) => slot.adapter.source_unlinked(&room, source).await,
        };
        match done {
            Ok(()) => {
                tracing::info!(%adapter, %room, ?owed, "done what a removed link left to do");
                forget(shared, key);
            }
            Err(e @ (AdapterError::Permanent(_) | AdapterError::Unsupported(_))) => {
                tracing::warn!(%adapter, %room, ?owed, error = %e,
                    "cannot do what a removed link left to do; given up");
                forget(shared, key);
            }
            Err(e) => {
                tracing::warn!(%adapter, %room, ?owed, error = %e,
                    "cannot do what a removed link left to do yet; tried at the next connection");
            }
        }
    }
}

/// True when a link added since makes the work pointless: the room is linked again (so the
/// adapter stays), or the source has a link in the room's neutral room again (so its users
/// reach it).
fn moot(shared: &Shared, adapter: &AdapterId, room: &RemoteRoomId, owed: &Owed) -> bool {
    let routing = shared.routing.read();
    let neutral = routing.room_of(adapter, room);
    match owed {
        // Linked again, or made a management room (whose adapter stays in it).
        Owed::Leave => {
            neutral.is_some()
                || (shared.management).contains(&Link::new(adapter.clone(), room.clone()))
        }
        Owed::SourceUnlinked(source) => neutral.is_none() || routing.reaches(adapter, room, source),
    }
}

fn forget(shared: &Shared, key: Vec<u8>) {
    let mut batch = Batch::new();
    batch.delete(key);
    if let Err(e) = shared.apply(batch) {
        tracing::warn!(error = %e, "cannot write to the store");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_read_back() {
        let adapter = AdapterId::new("xmpp");
        let room = RemoteRoomId::new("r@muc.example");
        for owed in [Owed::Leave, Owed::SourceUnlinked(AdapterId::new("matrix"))] {
            let k = key(&adapter, &room, &owed);
            assert_eq!(read(&k), Some((room.clone(), owed)));
        }
    }
}
