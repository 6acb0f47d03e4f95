//! The operations an admin runs on a running bridge, shared by the provisioning API
//! ([`crate::ops`]) and the admin commands in management rooms ([`crate::admin`]): each checks
//! its input, goes through the core (which persists every change before answering) and says
//! what went wrong in words both can show.

use std::collections::HashMap;
use std::sync::Arc;

use bridge_config::{Config, ROOM_ID_MAX_LEN, ROOM_ID_PUNCTUATION, check_identifier};
use bridge_core::{AdapterId, Core, CoreError, Link, RoomId, RoutingError};

/// The longest native room ID accepted, in bytes.
const MAX_REMOTE_LEN: usize = 1024;

/// Why an operation was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManageError {
    /// The request itself is wrong (a bad room ID, a bad native room ID).
    BadRequest(String),
    /// No such adapter, room or link.
    NotFound(String),
    /// It conflicts with the current state (linked elsewhere, declared in the file, a
    /// management room).
    Conflict(String),
    /// The store or the core failed.
    Internal(String),
}

impl ManageError {
    /// What to tell the admin.
    pub fn message(&self) -> &str {
        match self {
            Self::BadRequest(m) | Self::NotFound(m) | Self::Conflict(m) | Self::Internal(m) => m,
        }
    }

    fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "admin operation failed");
        Self::Internal(error.to_string())
    }
}

impl std::fmt::Display for ManageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

/// A link of a room, as shown to admins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// The native room.
    pub link: Link,
    /// Events waiting in its outbox.
    pub outbox: u64,
    /// Declared in the configuration file (not removed at runtime).
    pub from_config: bool,
}

/// A room, as shown to admins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomInfo {
    /// The neutral room.
    pub room: RoomId,
    /// Its name.
    pub name: Option<String>,
    /// Its links.
    pub links: Vec<LinkInfo>,
}

/// A dead letter, with the room and kind of its event when the event is still stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterInfo {
    /// The dead letter.
    pub letter: bridge_core::DeadLetter,
    /// The neutral room of the event (unknown if the event is gone).
    pub room: Option<RoomId>,
    /// The kind of the event.
    pub kind: Option<&'static str>,
}

/// The shared operations over a running core.
#[derive(Debug)]
pub struct Manager {
    core: Arc<Core>,
    /// The links declared in the configuration file, with their rooms: not removed at runtime
    /// (the file would bring them back at the next start).
    declared: HashMap<Link, RoomId>,
}

impl Manager {
    /// The operations on `core`, which was started from `config`.
    pub fn new(core: Arc<Core>, config: &Config) -> Self {
        let declared = config
            .rooms
            .iter()
            .flat_map(|room| {
                room.links.iter().map(|l| {
                    let link = Link::new(l.adapter.as_str(), l.remote.as_str());
                    (link, RoomId::new(room.id.as_str()))
                })
            })
            .collect();
        Self { core, declared }
    }

    /// The core.
    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// Every room with its links.
    pub fn rooms(&self) -> Vec<RoomInfo> {
        self.core
            .status()
            .into_iter()
            .map(|room| RoomInfo {
                links: room
                    .links
                    .iter()
                    .map(|(link, depth)| LinkInfo {
                        link: link.clone(),
                        outbox: *depth,
                        from_config: self.declared.contains_key(link),
                    })
                    .collect(),
                room: room.id,
                name: room.name,
            })
            .collect()
    }

    /// The room a native room is linked to now.
    pub fn room_of(&self, link: &Link) -> Option<RoomId> {
        self.core
            .status()
            .into_iter()
            .find(|room| room.links.iter().any(|(l, _)| l == link))
            .map(|room| room.id)
    }

    /// Links the native room `remote` of `adapter` to `room` (created if new). `Ok(true)` when
    /// linked now, `Ok(false)` when it already was, in this room.
    pub async fn link(
        &self,
        room: &str,
        adapter: &str,
        remote: &str,
    ) -> Result<(RoomId, Link, bool), ManageError> {
        check_identifier(room, ROOM_ID_MAX_LEN, ROOM_ID_PUNCTUATION)
            .map_err(|message| ManageError::BadRequest(format!("room ID: {message}")))?;
        if remote.is_empty()
            || remote.len() > MAX_REMOTE_LEN
            || remote.chars().any(char::is_control)
        {
            return Err(ManageError::BadRequest(format!(
                "remote: expected a native room ID of 1 to {MAX_REMOTE_LEN} bytes without \
                 control characters"
            )));
        }
        let room = RoomId::new(room);
        let link = Link::new(adapter, remote);
        if self.room_of(&link).as_ref() == Some(&room) {
            return Ok((room, link, false));
        }
        match self.core.add_link(&room, link.clone()).await {
            Ok(()) => Ok((room, link, true)),
            Err(CoreError::UnknownAdapter(_, adapter)) => Err(self.unknown_adapter(&adapter)),
            Err(CoreError::Routing(e @ RoutingError::AlreadyLinked { .. })) => {
                Err(ManageError::Conflict(e.to_string()))
            }
            Err(e @ CoreError::ManagementRoom(_)) => Err(ManageError::Conflict(e.to_string())),
            Err(e) => Err(ManageError::internal(e)),
        }
    }

    /// Unlinks a native room; returns the room it was linked to.
    pub async fn unlink(&self, adapter: &str, remote: &str) -> Result<RoomId, ManageError> {
        let link = Link::new(adapter, remote);
        if let Some(room) = self.declared.get(&link) {
            return Err(ManageError::Conflict(format!(
                "{link} is declared in the configuration file (room {room}): remove it there and \
                 restart the bridge, or the next start would link it again"
            )));
        }
        match self.core.remove_link(&link).await {
            Ok(room) => Ok(room),
            Err(CoreError::Routing(e @ RoutingError::NotLinked(_))) => {
                Err(ManageError::NotFound(e.to_string()))
            }
            Err(e) => Err(ManageError::internal(e)),
        }
    }

    /// The dead letters, oldest first.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetterInfo>, ManageError> {
        let letters = self.core.dead_letters().map_err(ManageError::internal)?;
        Ok(letters
            .into_iter()
            .map(|letter| {
                let event = self.core.event(letter.event).ok().flatten();
                DeadLetterInfo {
                    room: event.as_ref().map(|e| e.room.clone()),
                    kind: event.as_ref().map(|e| e.kind.name()),
                    letter,
                }
            })
            .collect())
    }

    /// Puts the dead letters (of `room`'s links only, when given) back into their outboxes;
    /// returns how many.
    pub async fn retry_dead_letters(&self, room: Option<&str>) -> Result<usize, ManageError> {
        let retried = match room {
            None => self.core.retry_dead_letters().await,
            Some(room) => {
                let room = RoomId::new(room);
                if !self.core.status().iter().any(|r| r.id == room) {
                    return Err(ManageError::NotFound(format!("no room {room}")));
                }
                self.core.retry_dead_letters_of(&room).await
            }
        };
        retried.map_err(ManageError::internal)
    }

    fn unknown_adapter(&self, adapter: &AdapterId) -> ManageError {
        let known: Vec<String> = self
            .core
            .adapter_connections()
            .into_iter()
            .map(|(id, _)| id.to_string())
            .collect();
        ManageError::NotFound(format!(
            "no adapter {:?} in the configuration; configured: {}",
            adapter.as_str(),
            known.join(", ")
        ))
    }
}
