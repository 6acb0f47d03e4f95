//! Acceptance of inbound events (invariants I1 no loss, I2 no duplicates, I3 no loops, I4 order).

use std::sync::Arc;

use super::outbox::QueueItem;
use super::{Shared, now_ms};
use crate::adapter::{Pending, SubmitError, Submitted};
use crate::event::{Event, EventKind, InboundEvent, MsgType, Origin, Sender};
use crate::ids::{AdapterId, EventId, RemoteEventId, RemoteRoomId, RoomId};
use crate::management::ManagementMessage;
use crate::routing::Link;
use crate::store::keys::{Key, id_value, tag};
use crate::store::{Batch, Store, StoreError};

/// How an ID-map entry came to be: the first byte after the 16-byte event ID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Provenance {
    /// The native event was posted by a native user and accepted from this adapter.
    Inbound = 0,
    /// The bridge produced the native event (a delivery, or a recognised reflection of one).
    Produced = 1,
}

pub(crate) fn r2n_key(adapter: &AdapterId, room: &RemoteRoomId, native: &RemoteEventId) -> Vec<u8> {
    Key::new(tag::REMOTE_TO_NEUTRAL)
        .str(adapter.as_str())
        .str(room.as_str())
        .str(native.as_str())
        .build()
}

pub(crate) fn n2r_key(id: EventId, adapter: &AdapterId, room: &RemoteRoomId) -> Vec<u8> {
    Key::new(tag::NEUTRAL_TO_REMOTE)
        .id(id)
        .str(adapter.as_str())
        .str(room.as_str())
        .build()
}

pub(crate) fn event_key(id: EventId) -> Vec<u8> {
    Key::new(tag::EVENT).id(id).build()
}

pub(crate) fn outbox_key(link: &Link, id: EventId) -> Vec<u8> {
    outbox_prefix(link).id(id).build()
}

/// A room's log entry of event `id`.
pub(crate) fn room_log_key(room: &RoomId, id: EventId) -> Vec<u8> {
    room_log_prefix(room).id(id).build()
}

pub(crate) fn room_log_prefix(room: &RoomId) -> Key {
    Key::new(tag::ROOM_LOG).str(room.as_str())
}

/// The value of a room's log entry: the link the event came from.
pub(crate) fn origin_value(adapter: &AdapterId, remote: &RemoteRoomId) -> Vec<u8> {
    // A key's components without its tag: two length-prefixed strings.
    Key::new(0)
        .str(adapter.as_str())
        .str(remote.as_str())
        .build()
        .split_off(2)
}

/// True when a room's log entry (its value) came from `link`.
pub(crate) fn is_from(value: &[u8], link: &Link) -> bool {
    value == origin_value(&link.adapter, &link.remote).as_slice()
}

/// A link's cursor in its room's log.
pub(crate) fn cursor_key(link: &Link) -> Vec<u8> {
    Key::new(tag::CURSOR)
        .str(link.adapter.as_str())
        .str(link.remote.as_str())
        .build()
}

pub(crate) fn outbox_prefix(link: &Link) -> Key {
    Key::new(tag::OUTBOX)
        .str(link.adapter.as_str())
        .str(link.remote.as_str())
}

fn reaction_key(target: EventId, sender: &Sender, key: &str) -> Vec<u8> {
    Key::new(tag::REACTION)
        .id(target)
        .str(sender.adapter.as_str())
        .str(sender.user.as_str())
        .str(key)
        .build()
}

/// Records the remote → neutral direction of an ID-map entry in `batch`: all an inbound event
/// needs, since its own native ID is kept in the event ([`Origin::event`], see
/// [`lookup_neutral`]).
pub(crate) fn map_remote(
    batch: &mut Batch,
    id: EventId,
    adapter: &AdapterId,
    room: &RemoteRoomId,
    native: &RemoteEventId,
    provenance: Provenance,
) {
    let mut value = Vec::with_capacity(17);
    value.extend_from_slice(&id.to_bytes());
    value.push(provenance as u8);
    batch.put(r2n_key(adapter, room, native), value);
}

/// Records both directions of an ID-map entry in `batch` (for a copy the bridge produced).
pub(crate) fn map_ids(
    batch: &mut Batch,
    id: EventId,
    adapter: &AdapterId,
    room: &RemoteRoomId,
    native: &RemoteEventId,
    provenance: Provenance,
) {
    map_remote(batch, id, adapter, room, native, provenance);
    batch.put(
        n2r_key(id, adapter, room),
        native.as_str().as_bytes().to_vec(),
    );
}

/// The neutral ID (and provenance) of a native event.
pub(crate) fn lookup_native(
    store: &dyn Store,
    adapter: &AdapterId,
    room: &RemoteRoomId,
    native: &RemoteEventId,
) -> Result<Option<(EventId, Provenance)>, StoreError> {
    Ok(store.get(&r2n_key(adapter, room, native))?.and_then(|v| {
        let id = id_value(v.get(..16)?)?;
        let provenance = match v.get(16) {
            Some(1) => Provenance::Produced,
            _ => Provenance::Inbound,
        };
        Some((id, provenance))
    }))
}

/// The native ID of a neutral event in one native room: a copy the bridge delivered there (the
/// `n` map), or the native event it was accepted from (its origin, kept in the event itself).
pub(crate) fn lookup_neutral(
    store: &dyn Store,
    id: EventId,
    link: &Link,
) -> Result<Option<RemoteEventId>, StoreError> {
    if let Some(v) = store.get(&n2r_key(id, &link.adapter, &link.remote))? {
        return Ok(Some(RemoteEventId::new(
            String::from_utf8_lossy(&v).into_owned(),
        )));
    }
    Ok(load_event(store, id)?.and_then(|event| {
        let origin = event.origin;
        (origin.adapter == link.adapter && origin.room == link.remote)
            .then_some(origin.event)
            .flatten()
    }))
}

/// Loads a stored event.
pub(crate) fn load_event(store: &dyn Store, id: EventId) -> Result<Option<Event>, StoreError> {
    store
        .get(&event_key(id))?
        .map(|bytes| {
            serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                key: format!("event {id}"),
                message: e.to_string(),
            })
        })
        .transpose()
}

/// Encodes an event for the store: through a reused buffer, then copied out at its exact size
/// (no growing reallocations, no spare capacity kept in memory stores).
fn encode_event(event: &Event) -> Result<Vec<u8>, StoreError> {
    thread_local! {
        static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUFFER.with_borrow_mut(|buffer| {
        buffer.clear();
        serde_json::to_writer(&mut *buffer, event).map_err(|e| StoreError::Corrupt {
            key: format!("event {}", event.id),
            message: e.to_string(),
        })?;
        let json = buffer.to_vec();
        if buffer.capacity() > 64 * 1024 {
            // A huge event does not pin its buffer for good.
            *buffer = Vec::new();
        }
        Ok(json)
    })
}

/// What the locked part of ingest decided.
enum Decision {
    Done(Submitted),
    Accepted {
        id: EventId,
        seq: u64,
    },
    /// A management message: durable once `seq` is (its native ID, for dedup).
    Management {
        seq: u64,
    },
}

impl Shared {
    /// Accepts an inbound event in order, without waiting for durability.
    pub(crate) fn enqueue(
        self: &Arc<Self>,
        adapter: &AdapterId,
        event: InboundEvent,
        to_bridge: bool,
    ) -> Result<Pending, SubmitError> {
        let kind = event.kind.name();
        let span = tracing::debug_span!("ingest", %adapter, room = %event.room, native_id = ?event.native_id, kind, to_bridge);
        let _enter = span.enter();
        let decision = self.decide(adapter, event, to_bridge)?;
        let (submitted, seq) = match decision {
            Decision::Done(s) => (s, 0),
            Decision::Management { seq } => (Submitted::Management, seq),
            Decision::Accepted { id, seq } => (Submitted::Accepted(id), seq),
        };
        let outcome = match &submitted {
            Submitted::Accepted(_) => "accepted",
            Submitted::Duplicate(_) => "duplicate",
            Submitted::Echo => "echo",
            Submitted::Unrouted => "unrouted",
            Submitted::Management => "management",
            Submitted::Rejected(reason) => {
                tracing::info!(%reason, "inbound event rejected");
                "rejected"
            }
        };
        if let Some(slot) = self.adapters.get(adapter) {
            slot.count_inbound(adapter, kind, outcome);
        }
        tracing::trace!(outcome, ?submitted, "ingested");
        Ok(Pending {
            shared: self.clone(),
            submitted,
            seq,
        })
    }

    /// `to_bridge`: the event was addressed to the bridge itself (a direct conversation with
    /// it), handled like one in a management room.
    fn decide(
        &self,
        adapter: &AdapterId,
        ev: InboundEvent,
        to_bridge: bool,
    ) -> Result<Decision, StoreError> {
        let store = &*self.store;
        let _order = self.ingest_lock.lock();
        if to_bridge
            || !self.management.is_empty()
                && self
                    .management
                    .contains(&Link::new(adapter.clone(), ev.room.clone()))
        {
            return self.management_message(adapter, ev);
        }
        let routing = self.routing.read();
        let Some(room_id) = routing.room_of(adapter, &ev.room) else {
            return Ok(Decision::Done(Submitted::Unrouted));
        };

        // I3: the reflection of something we sent, or anything a puppet of ours says.
        if let Some(original) = ev.echo_of {
            if let Some(native) = &ev.native_id {
                let mut batch = Batch::new();
                map_ids(
                    &mut batch,
                    original,
                    adapter,
                    &ev.room,
                    native,
                    Provenance::Produced,
                );
                self.apply(batch)?;
            }
            return Ok(Decision::Done(Submitted::Echo));
        }
        if self.is_puppet(adapter, &ev.sender.id) {
            return Ok(Decision::Done(Submitted::Echo));
        }
        // I2: a native ID seen before is a redelivery (or, if we produced it, an echo).
        if let Some(native) = &ev.native_id
            && let Some((id, provenance)) = lookup_native(store, adapter, &ev.room, native)?
        {
            return Ok(Decision::Done(match provenance {
                Provenance::Inbound => Submitted::Duplicate(id),
                Provenance::Produced => Submitted::Echo,
            }));
        }

        let sender = Sender {
            adapter: adapter.clone(),
            user: ev.sender.id.clone(),
            display_name: ev.sender.display_name.clone(),
            avatar: ev.sender.avatar.clone(),
        };
        // Resolve references through the ID map; a failed lookup is remembered as an error.
        let mut lookup_error = None;
        let kind =
            ev.kind.map_refs(
                |native| match lookup_native(store, adapter, &ev.room, native) {
                    Ok(found) => found.map(|(id, _)| id),
                    Err(e) => {
                        lookup_error = Some(e);
                        None
                    }
                },
            );
        if let Some(e) = lookup_error {
            return Err(e);
        }
        let kind = match kind {
            Ok(kind) => kind,
            Err(unresolved) => {
                return Ok(Decision::Done(Submitted::Rejected(unresolved.to_string())));
            }
        };
        let kind = match self.authorize(kind, &sender, ev.by_moderator)? {
            Ok(kind) => kind,
            Err(reason) => return Ok(Decision::Done(Submitted::Rejected(reason))),
        };

        let id = self.ids.next_id();
        let event = Arc::new(Event {
            id,
            room: room_id.clone(),
            sender,
            origin: Origin {
                adapter: adapter.clone(),
                room: ev.room.clone(),
                event: ev.native_id.clone(),
            },
            ts: ev.ts.unwrap_or_else(now_ms),
            kind,
        });
        let ephemeral = event.kind.is_ephemeral();
        // Routing changes take the ingest lock too, so the links stay put until we return.
        let targets = || {
            routing
                .room(&event.room)
                .into_iter()
                .flat_map(|r| r.links.iter())
                .filter(|l| !(l.adapter == *adapter && l.remote == ev.room))
        };

        let seq = if ephemeral {
            0
        } else {
            let mut batch = Batch::with_capacity(4);
            let json = encode_event(&event)?;
            batch.put(event_key(id), json);
            if let Some(native) = &ev.native_id {
                map_remote(
                    &mut batch,
                    id,
                    adapter,
                    &ev.room,
                    native,
                    Provenance::Inbound,
                );
            }
            match &event.kind {
                EventKind::Reaction { target, key } => {
                    batch.put(
                        reaction_key(*target, &event.sender, key),
                        id.to_bytes().to_vec(),
                    );
                }
                EventKind::Unreact { target, key, .. } => {
                    batch.delete(reaction_key(*target, &event.sender, key));
                }
                _ => {}
            }
            // The targets' outbox: one entry in the room's log (each target link reads it
            // after its cursor), none when no other link would read it.
            if targets().next().is_some() {
                batch.put(
                    room_log_key(&event.room, id),
                    origin_value(adapter, &ev.room),
                );
            }
            self.apply(batch)?
        };
        if let Some(native) = &ev.native_id {
            // Where backfill resumes after a reconnect.
            let mut last = self.last_native.lock();
            match last
                .get_mut(adapter)
                .and_then(|rooms| rooms.get_mut(&ev.room))
            {
                Some(slot) => *slot = native.clone(),
                None => {
                    last.entry(adapter.clone())
                        .or_default()
                        .insert(ev.room.clone(), native.clone());
                }
            }
        }
        // Only ephemeral kinds are ever withheld (nothing was stored for them), so the
        // policies are looked up for those alone: the room's (or the default), the source
        // adapter's and each target adapter's must all let the event cross.
        let carried = !ephemeral
            || (routing
                .room(&event.room)
                .and_then(|r| r.settings.carry)
                .unwrap_or(self.default_carry)
                .carries(&event.kind)
                && self.adapter_carries(adapter, &event.kind));
        let takes = |link: &Link| !ephemeral || self.adapter_carries(&link.adapter, &event.kind);
        let mut withheld = 0u64;
        {
            let queues = self.queues.read();
            for link in targets() {
                if !(carried && takes(link)) {
                    withheld += 1;
                } else if let Some(queue) = queues.get(link) {
                    queue.push(QueueItem {
                        event: event.clone(),
                        seq,
                        explicit: false,
                    });
                }
            }
        }
        if withheld > 0 {
            metrics::counter!("bridge_events_withheld_total", "adapter" => adapter.to_string(), "kind" => event.kind.name())
                .increment(withheld);
        }
        Ok(Decision::Accepted { id, seq })
    }

    /// An event in a management room or addressed to the bridge (under the ingest lock): never
    /// bridged; a text message from someone other than the bridge goes to the command sink
    /// once. Its native ID is recorded like an accepted event's, so a redelivery (or the
    /// room's history on a rejoin) is a duplicate, not a second command.
    fn management_message(
        &self,
        adapter: &AdapterId,
        ev: InboundEvent,
    ) -> Result<Decision, StoreError> {
        if ev.echo_of.is_some() || self.is_puppet(adapter, &ev.sender.id) {
            return Ok(Decision::Done(Submitted::Echo));
        }
        let EventKind::Message { content, .. } = &ev.kind else {
            return Ok(Decision::Done(Submitted::Management));
        };
        // Notices are what bots (this bridge's answers included) send: never commands.
        if content.msgtype != MsgType::Text {
            return Ok(Decision::Done(Submitted::Management));
        }
        let mut seq = 0;
        if let Some(native) = &ev.native_id {
            if let Some((id, provenance)) = lookup_native(&*self.store, adapter, &ev.room, native)?
            {
                return Ok(Decision::Done(match provenance {
                    Provenance::Inbound => Submitted::Duplicate(id),
                    Provenance::Produced => Submitted::Echo,
                }));
            }
            let mut batch = Batch::new();
            let id = self.ids.next_id();
            map_remote(
                &mut batch,
                id,
                adapter,
                &ev.room,
                native,
                Provenance::Inbound,
            );
            seq = self.apply(batch)?;
        }
        let message = ManagementMessage {
            room: Link::new(adapter.clone(), ev.room.clone()),
            sender: Sender {
                adapter: adapter.clone(),
                user: ev.sender.id.clone(),
                display_name: ev.sender.display_name.clone(),
                avatar: ev.sender.avatar.clone(),
            },
            native_id: ev.native_id.clone(),
            text: content.text.body().to_owned(),
        };
        match &self.commands {
            Some(sink) => {
                if let Err(e) = sink.try_send(message) {
                    tracing::warn!(%adapter, room = %ev.room, error = %e,
                        "management message dropped: the admin commands are not keeping up");
                }
            }
            None => {
                tracing::warn!(%adapter, room = %ev.room, "management message without a command reader")
            }
        }
        Ok(Decision::Management { seq })
    }

    /// Edits only by the original sender; deletions by the sender or a moderator; the deletion
    /// of a reaction becomes an unreact; an unreact finds its reaction event.
    fn authorize(
        &self,
        kind: EventKind,
        sender: &Sender,
        by_moderator: bool,
    ) -> Result<Result<EventKind, String>, StoreError> {
        let store = &*self.store;
        let same_author = |target: &Event| {
            target.sender.adapter == sender.adapter && target.sender.user == sender.user
        };
        Ok(match kind {
            EventKind::Edit { target, new } => match load_event(store, target)? {
                Some(original) if !same_author(&original) => Err(format!(
                    "{} may not edit a message by {}",
                    sender.user, original.sender.user
                )),
                // An edit of an edit replaces the first version.
                Some(Event {
                    kind: EventKind::Edit { target: first, .. },
                    ..
                }) => Ok(EventKind::Edit { target: first, new }),
                _ => Ok(EventKind::Edit { target, new }),
            },
            EventKind::Redaction { target, reason } => match load_event(store, target)? {
                Some(Event {
                    kind:
                        EventKind::Reaction {
                            target: message,
                            key,
                        },
                    sender: reactor,
                    ..
                }) if reactor.adapter == sender.adapter && reactor.user == sender.user => {
                    Ok(EventKind::Unreact {
                        target: message,
                        key,
                        reaction: Some(target),
                    })
                }
                Some(original) if !same_author(&original) && !by_moderator => Err(format!(
                    "{} may not delete a message by {}",
                    sender.user, original.sender.user
                )),
                _ => Ok(EventKind::Redaction { target, reason }),
            },
            // An unreact that names its reaction (MIMI's unlike does, without the key): the
            // reaction must be the sender's; its key and message are taken from it.
            EventKind::Unreact {
                target,
                key,
                reaction: Some(reaction),
            } => match load_event(store, reaction)? {
                Some(Event {
                    kind:
                        EventKind::Reaction {
                            target: message,
                            key: original,
                        },
                    sender: reactor,
                    ..
                }) if reactor.adapter == sender.adapter && reactor.user == sender.user => {
                    Ok(EventKind::Unreact {
                        target: message,
                        key: original,
                        reaction: Some(reaction),
                    })
                }
                Some(_) => Err(format!(
                    "{} may only take back a reaction of their own",
                    sender.user
                )),
                None => Ok(EventKind::Unreact {
                    target,
                    key,
                    reaction: Some(reaction),
                }),
            },
            EventKind::Unreact {
                target,
                key,
                reaction: None,
            } => {
                let reaction = store
                    .get(&reaction_key(target, sender, &key))?
                    .and_then(|v| id_value(&v));
                match reaction {
                    Some(reaction) => Ok(EventKind::Unreact {
                        target,
                        key,
                        reaction: Some(reaction),
                    }),
                    None => Err(format!("{} had not reacted {key}", sender.user)),
                }
            }
            other => Ok(other),
        })
    }
}
