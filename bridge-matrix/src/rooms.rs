//! Linked rooms named by alias. An admin may link `#lobby:example.org` instead of its room ID;
//! the homeserver speaks in room IDs. The alias is resolved once (and again when asked) and the
//! two names are kept both ways, so events from the room reach the core under the name it was
//! linked by, and sends to the alias go to the room.

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
}

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
                .map_err(|e| AdapterError::Permanent(format!("{text} is not a room ID: {e}")));
        }
        if let Some(id) = self.by_alias.lock().get(text) {
            return Ok(id.clone());
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
        self.by_id
            .lock()
            .insert(answer.room_id.to_string(), text.to_owned());
        Ok(answer.room_id)
    }

    /// The name a room is linked by: its alias when it was linked by one, else its ID.
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
