//! Linked rooms named by alias, and upgraded rooms. An admin may link `#lobby:example.org`
//! instead of its room ID; the homeserver speaks in room IDs. The alias is resolved once (and
//! again when asked) and the two names are kept both ways, so events from the room reach the
//! core under the name it was linked by, and sends to the alias go to the room.
//!
//! A room upgrade (`m.room.tombstone`) replaces a room by a new one: the link keeps its name,
//! and the name now resolves to the newest room of the chain, whose events reach the core under
//! that name (so the configuration, the ID map and the outbox stay as they are).

use std::collections::HashMap;

use bridge_core::{AdapterError, RemoteRoomId};
use parking_lot::Mutex;
use ruma::{OwnedRoomId, RoomAliasId, RoomId};

use crate::homeserver::{As, Homeserver};

/// The aliases of linked rooms and the room IDs they resolved to.
#[derive(Debug, Default)]
pub(crate) struct RoomNames {
    by_alias: Mutex<HashMap<String, OwnedRoomId>>,
    by_id: Mutex<HashMap<String, String>>,
    /// Upgraded rooms: old room ID → the room that replaced it.
    replaced: Mutex<HashMap<String, OwnedRoomId>>,
}

/// The most upgrades followed from one room (a cycle in stored data ends there).
const MAX_UPGRADES: usize = 16;

impl RoomNames {
    /// The room ID of a linked room: itself, or its alias resolved (cached).
    pub(crate) async fn resolve(
        &self,
        hs: &Homeserver,
        room: &RemoteRoomId,
    ) -> Result<OwnedRoomId, AdapterError> {
        let text = room.as_str();
        if !text.starts_with('#') {
            return RoomId::parse(text)
                .map(|id| self.newest(id))
                .map_err(|e| AdapterError::Permanent(format!("{text} is not a room ID: {e}")));
        }
        if let Some(id) = self.by_alias.lock().get(text) {
            return Ok(self.newest(id.clone()));
        }
        let alias = RoomAliasId::parse(text)
            .map_err(|e| AdapterError::Permanent(format!("{text} is not an alias: {e}")))?;
        let answer = hs
            .call(
                ruma::api::client::alias::get_alias::v3::Request::new(alias),
                As::Bot,
            )
            .await?;
        self.by_alias
            .lock()
            .insert(text.to_owned(), answer.room_id.clone());
        self.name_chain(answer.room_id.as_str(), text);
        Ok(self.newest(answer.room_id))
    }

    /// Knows `start` and every room that replaced it by the linked name `name`.
    fn name_chain(&self, start: &str, name: &str) {
        let replaced = self.replaced.lock();
        let mut by_id = self.by_id.lock();
        let mut id = start.to_owned();
        for _ in 0..=MAX_UPGRADES {
            by_id.insert(id.clone(), name.to_owned());
            match replaced.get(&id) {
                Some(next) => id = next.to_string(),
                None => break,
            }
        }
    }

    /// Upgrades remembered from an earlier run (old room ID → new room ID), in any order.
    pub(crate) fn load_upgrades(&self, pairs: impl IntoIterator<Item = (String, OwnedRoomId)>) {
        self.replaced.lock().extend(pairs);
        // Each chain is known by the name of its first room (until an alias resolves to it).
        let starts: Vec<String> = {
            let replaced = self.replaced.lock();
            let targets: std::collections::HashSet<&str> =
                replaced.values().map(|id| id.as_str()).collect();
            replaced
                .keys()
                .filter(|old| !targets.contains(old.as_str()))
                .cloned()
                .collect()
        };
        for start in starts {
            let name = self.linked_name(&start);
            self.name_chain(&start, name.as_str());
        }
    }

    /// `id`, or the room that replaced it by upgrades, followed to the newest.
    fn newest(&self, mut id: OwnedRoomId) -> OwnedRoomId {
        let replaced = self.replaced.lock();
        for _ in 0..MAX_UPGRADES {
            match replaced.get(id.as_str()) {
                Some(next) => id = next.clone(),
                None => break,
            }
        }
        id
    }

    /// `old` was upgraded to `new`: `new` is known by `old`'s linked name, and that name
    /// resolves to `new` from now on. False when `old` already was (a repeated tombstone).
    pub(crate) fn upgraded(&self, old: &str, new: OwnedRoomId) -> bool {
        let name = self.linked_name(old);
        let mut replaced = self.replaced.lock();
        if replaced.get(old) == Some(&new) {
            return false;
        }
        self.by_id
            .lock()
            .insert(new.to_string(), name.as_str().to_owned());
        replaced.insert(old.to_owned(), new);
        true
    }

    /// The name a room is linked by: its alias when it was linked by one, else its ID (for a
    /// room that replaced a linked room by upgrades, the first room's name).
    pub(crate) fn linked_name(&self, room_id: &str) -> RemoteRoomId {
        match self.by_id.lock().get(room_id) {
            Some(alias) => RemoteRoomId::new(alias.as_str()),
            None => RemoteRoomId::new(room_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn upgrades_resolve_to_the_newest_room_under_the_linked_name() {
        let hs = Homeserver::new("http://127.0.0.1:9", "t", true).expect("client");
        let id = |s: &str| RoomId::parse(s).expect("room ID");
        let hs = &hs;
        let check = |names: RoomNames| async move {
            let newest = names
                .resolve(hs, &RemoteRoomId::new("!a:x"))
                .await
                .expect("resolved");
            assert_eq!(newest.as_str(), "!c:x");
            assert_eq!(names.linked_name("!b:x").as_str(), "!a:x");
            assert_eq!(names.linked_name("!c:x").as_str(), "!a:x");
        };
        let names = RoomNames::default();
        assert!(names.upgraded("!a:x", id("!b:x")));
        assert!(!names.upgraded("!a:x", id("!b:x")), "a repeated tombstone");
        assert!(names.upgraded("!b:x", id("!c:x")));
        check(names).await;
        // After a restart, from the store, in any order.
        let again = RoomNames::default();
        again.load_upgrades([("!b:x".into(), id("!c:x")), ("!a:x".into(), id("!b:x"))]);
        check(again).await;
        // A cycle in stored data does not hang the lookups.
        let cycle = RoomNames::default();
        cycle.load_upgrades([("!p:x".into(), id("!q:x")), ("!q:x".into(), id("!p:x"))]);
        assert!(cycle.resolve(hs, &RemoteRoomId::new("!p:x")).await.is_ok());
    }

    #[tokio::test]
    async fn room_ids_need_no_lookup_and_names_map_back() {
        let names = RoomNames::default();
        // An unreachable homeserver: a room ID must not need it.
        let hs = Homeserver::new("http://127.0.0.1:9", "t", true).expect("client");
        let id = names
            .resolve(&hs, &RemoteRoomId::new("!abc:example.org"))
            .await
            .expect("a room ID is its own");
        assert_eq!(id.as_str(), "!abc:example.org");
        assert!(
            names
                .resolve(&hs, &RemoteRoomId::new("lobby"))
                .await
                .is_err()
        );
        names
            .by_id
            .lock()
            .insert("!abc:example.org".into(), "#lobby:example.org".into());
        assert_eq!(
            names.linked_name("!abc:example.org").as_str(),
            "#lobby:example.org"
        );
        assert_eq!(names.linked_name("!other:x").as_str(), "!other:x");
    }
}
