//! The routing table: neutral rooms and the native rooms they link.
//!
//! A native room `(adapter, remote room)` belongs to at most one neutral room. Links come from
//! the config and from runtime changes (CLI, admin commands); both are persisted in the store,
//! so a restart routes exactly as before.

use crate::store::FastMap;

use serde::{Deserialize, Serialize};

use crate::capabilities::{CarryPolicy, DegradePolicy};
use crate::ids::{AdapterId, RemoteRoomId, RoomId};
use crate::store::keys::{Key, KeyReader, read_pair, tag};
use crate::store::{Batch, Store, StoreError, for_each_with_prefix};

/// One native room of a neutral room.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Link {
    /// The adapter that owns the native room.
    pub adapter: AdapterId,
    /// The native room.
    pub remote: RemoteRoomId,
}

impl Link {
    /// A link of `adapter` to `remote`.
    pub fn new(adapter: impl Into<AdapterId>, remote: impl Into<RemoteRoomId>) -> Self {
        Self {
            adapter: adapter.into(),
            remote: remote.into(),
        }
    }

    pub(crate) fn key(&self) -> Vec<u8> {
        Key::new(tag::LINK)
            .str(self.adapter.as_str())
            .str(self.remote.as_str())
            .build()
    }
}

impl std::fmt::Display for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.adapter, self.remote)
    }
}

/// A neutral room's settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomSettings {
    /// A human name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// This room's degradation policy, when it differs from the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<DegradePolicy>,
    /// What crosses in this room at all, when it differs from the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carry: Option<CarryPolicy>,
}

/// A neutral room with its links.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Room {
    /// Its ID.
    pub id: RoomId,
    /// Its settings.
    pub settings: RoomSettings,
    /// Its native rooms, in the order they were linked.
    pub links: Vec<Link>,
}

/// A routing change was refused.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RoutingError {
    /// The native room already belongs to a neutral room.
    #[error(
        "{link} is already linked to room {room}; a native room belongs to at most one room (unlink it first)"
    )]
    AlreadyLinked {
        /// The native room.
        link: Link,
        /// The room it belongs to.
        room: RoomId,
    },
    /// The native room is not linked.
    #[error("{0} is not linked to any room")]
    NotLinked(Link),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Neutral rooms and their links, both ways.
#[derive(Debug, Default, Clone)]
pub struct RoutingTable {
    rooms: FastMap<RoomId, Room>,
    by_native: FastMap<AdapterId, FastMap<RemoteRoomId, RoomId>>,
}

impl RoutingTable {
    /// Loads every stored room and link.
    pub fn load(store: &dyn Store) -> Result<Self, StoreError> {
        let mut table = Self::default();
        for_each_with_prefix(store, &Key::new(tag::ROOM).build(), |key, value| {
            let Some(id) = KeyReader::new(key, tag::ROOM).and_then(|mut r| r.str()) else {
                return Ok(());
            };
            let settings = serde_json::from_slice(value).map_err(|e| StoreError::Corrupt {
                key: format!("room {id}"),
                message: e.to_string(),
            })?;
            table.upsert_room(RoomId::new(id), settings);
            Ok(())
        })?;
        for_each_with_prefix(store, &Key::new(tag::LINK).build(), |key, value| {
            let Some((adapter, remote)) = read_pair(key, tag::LINK) else {
                return Ok(());
            };
            let room = RoomId::new(String::from_utf8_lossy(value).into_owned());
            table.upsert_room(room.clone(), RoomSettings::default());
            table
                .insert_link(&room, Link::new(adapter, remote))
                .map_err(|e| StoreError::Corrupt {
                    key: "links".into(),
                    message: e.to_string(),
                })
        })?;
        Ok(table)
    }

    fn upsert_room(&mut self, id: RoomId, settings: RoomSettings) {
        self.rooms
            .entry(id.clone())
            .and_modify(|r| {
                if settings != RoomSettings::default() {
                    r.settings = settings.clone();
                }
            })
            .or_insert_with(|| Room {
                id,
                settings,
                links: Vec::new(),
            });
    }

    fn insert_link(&mut self, room: &RoomId, link: Link) -> Result<(), RoutingError> {
        if let Some(existing) = self.room_of(&link.adapter, &link.remote) {
            if existing == room {
                return Ok(());
            }
            return Err(RoutingError::AlreadyLinked {
                link,
                room: existing.clone(),
            });
        }
        self.by_native
            .entry(link.adapter.clone())
            .or_default()
            .insert(link.remote.clone(), room.clone());
        if let Some(r) = self.rooms.get_mut(room) {
            r.links.push(link);
        }
        Ok(())
    }

    /// Creates or updates a room and persists it; returns the batch to apply.
    pub fn put_room(&mut self, id: &RoomId, settings: RoomSettings) -> Batch {
        let mut batch = Batch::new();
        batch.put(
            Key::new(tag::ROOM).str(id.as_str()).build(),
            serde_json::to_vec(&settings).unwrap_or_default(),
        );
        self.upsert_room(id.clone(), settings.clone());
        if let Some(room) = self.rooms.get_mut(id) {
            room.settings = settings;
        }
        batch
    }

    /// Links a native room to `room` (created if new); returns the batch to apply. Refused when
    /// the native room belongs to another room.
    pub fn add_link(&mut self, room: &RoomId, link: Link) -> Result<Batch, RoutingError> {
        if let Some(existing) = self.room_of(&link.adapter, &link.remote)
            && existing != room
        {
            return Err(RoutingError::AlreadyLinked {
                room: existing.clone(),
                link,
            });
        }
        let mut batch = Batch::new();
        if !self.rooms.contains_key(room) {
            batch = self.put_room(room, RoomSettings::default());
        }
        batch.put(link.key(), room.as_str().as_bytes().to_vec());
        self.insert_link(room, link)?;
        Ok(batch)
    }

    /// Unlinks a native room; returns its former room and the batch to apply.
    pub fn remove_link(&mut self, link: &Link) -> Result<(RoomId, Batch), RoutingError> {
        let room = self
            .by_native
            .get_mut(&link.adapter)
            .and_then(|m| m.remove(&link.remote))
            .ok_or_else(|| RoutingError::NotLinked(link.clone()))?;
        if let Some(r) = self.rooms.get_mut(&room) {
            r.links.retain(|l| l != link);
        }
        let mut batch = Batch::new();
        batch.delete(link.key());
        Ok((room, batch))
    }

    /// The neutral room a native room belongs to.
    pub fn room_of(&self, adapter: &AdapterId, remote: &RemoteRoomId) -> Option<&RoomId> {
        self.by_native.get(adapter)?.get(remote)
    }

    /// True when `source` has a link in the neutral room that `adapter`'s native room `remote`
    /// is linked to: `source`'s users reach that native room.
    pub fn reaches(&self, adapter: &AdapterId, remote: &RemoteRoomId, source: &AdapterId) -> bool {
        (self.room_of(adapter, remote))
            .and_then(|id| self.room(id))
            .is_some_and(|r| r.links.iter().any(|l| l.adapter == *source))
    }

    /// A neutral room.
    pub fn room(&self, id: &RoomId) -> Option<&Room> {
        self.rooms.get(id)
    }

    /// Every room, sorted by ID.
    pub fn rooms(&self) -> Vec<&Room> {
        let mut rooms: Vec<_> = self.rooms.values().collect();
        rooms.sort_by(|a, b| a.id.cmp(&b.id));
        rooms
    }

    /// The native rooms linked for one adapter.
    pub fn links_of(&self, adapter: &AdapterId) -> Vec<RemoteRoomId> {
        let mut rooms: Vec<_> = self
            .by_native
            .get(adapter)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        rooms.sort();
        rooms
    }

    /// Every link of every room.
    pub fn all_links(&self) -> impl Iterator<Item = (&RoomId, &Link)> {
        self.rooms
            .values()
            .flat_map(|r| r.links.iter().map(move |l| (&r.id, l)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[test]
    fn a_native_room_belongs_to_one_room_and_links_persist() {
        let store = MemoryStore::new();
        let mut table = RoutingTable::default();
        let lobby = RoomId::new("lobby");
        let muc = Link::new("xmpp", "lobby@conference.example.org");
        store
            .apply(table.add_link(&lobby, muc.clone()).expect("link"))
            .expect("apply");
        store
            .apply(
                table
                    .add_link(&lobby, Link::new("matrix", "!a:x"))
                    .expect("link"),
            )
            .expect("apply");
        // Linking it again to the same room is a no-op; to another room is refused.
        assert!(table.add_link(&lobby, muc.clone()).is_ok());
        let err = table
            .add_link(&RoomId::new("other"), muc.clone())
            .expect_err("second room");
        assert!(err.to_string().contains("already linked to room lobby"));

        let loaded = RoutingTable::load(&store).expect("load");
        assert_eq!(loaded.room_of(&muc.adapter, &muc.remote), Some(&lobby));
        assert_eq!(loaded.room(&lobby).map(|r| r.links.len()), Some(2));

        let (room, batch) = table.remove_link(&muc).expect("unlink");
        assert_eq!(room, lobby);
        store.apply(batch).expect("apply");
        let loaded = RoutingTable::load(&store).expect("load");
        assert_eq!(loaded.room_of(&muc.adapter, &muc.remote), None);
        assert!(matches!(
            table.remove_link(&muc),
            Err(RoutingError::NotLinked(_))
        ));
    }
}
