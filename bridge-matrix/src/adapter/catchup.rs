//! Catching up from the rooms' history after the homeserver may have lost pushes.
//!
//! A homeserver pushes an appservice its events in transactions and retries each one until it
//! is answered, but Synapse queues events for a push in memory after it has moved its stored
//! position past them: if it stops at that moment (a restart), those events are never pushed.
//! They are in the rooms' history all the same. So the adapter remembers, per room, the newest
//! event it took (`p/<room ID>` in its store, written with each transaction), and reads the
//! history after it (`/context` for a token after that event, then `/messages` forwards, as
//! the bot) whenever pushes may have been lost:
//!
//! * at every start (the homeserver may have restarted while the bridge was down), and
//! * after the homeserver was seen unreachable or unavailable by any request of the bridge
//!   (its sends, the health check every [`super::HEALTH_INTERVAL`]: see
//!   [`crate::homeserver::Homeserver::outages`]) or skipped a transaction number, before the
//!   next transaction is taken.
//!
//! The catch-up holds the transaction lock, so the events it finds are enqueued before any
//! newer transaction: the room's order is kept. Events it finds go through the same path as
//! pushed ones ([`Inner::timeline`]); the core's dedup by event ID drops what was already taken,
//! and our own ghosts' events are echoes as usual. Each catch-up reads at most [`MAX_PAGES`]
//! pages of [`PAGE`] events per room (a homeserver's push queue is far shorter; a longer gap
//! is logged). A room the bot cannot read (left, or the position's event is gone) is skipped
//! with a warning; a homeserver that fails the catch-up leaves it due, and it is tried again
//! with the next transaction or health check.

use std::sync::atomic::Ordering;

use bridge_core::{AdapterContext, AdapterError, RemoteRoomId, SubmitError, Submitted};
use ruma::OwnedEventId;
use ruma::api::client::context::get_context;
use ruma::api::client::message::get_message_events;
use serde_json::Value;

use super::Inner;
use crate::homeserver::As;

/// Store key prefix of the newest event taken from each room (`p/<room ID>` → event ID).
pub(super) const POSITION: &[u8] = b"p/";
/// Events asked for per `/messages` page.
const PAGE: u32 = 100;
/// Pages read per room and catch-up at most.
const MAX_PAGES: usize = 50;
/// [`Inner::caught_up`] before the first catch-up.
pub(super) const NEVER: u64 = u64::MAX;

/// The store key of `room`'s position.
pub(super) fn position_key(room: &str) -> Vec<u8> {
    [POSITION, room.as_bytes()].concat()
}

impl Inner {
    /// Whether pushes may have been lost since the last complete catch-up.
    pub(super) fn catch_up_due(&self) -> bool {
        self.caught_up.load(Ordering::Relaxed) != self.hs.outages()
    }

    /// Makes a catch-up due (a transaction number was skipped).
    pub(super) fn catch_up_later(&self) {
        self.caught_up.store(NEVER, Ordering::Relaxed);
    }

    /// Catches up every linked room when due, taking the transaction lock (so that no
    /// transaction is taken meanwhile).
    pub(super) async fn catch_up_if_due(&self, ctx: &AdapterContext) {
        if !self.catch_up_due() {
            return;
        }
        let _txns = self.txns.lock().await;
        if self.catch_up_due()
            && let Err(e) = self.catch_up(ctx).await
        {
            tracing::warn!(adapter = %self.id, error = %e,
                "catch-up from the rooms' history failed; trying again later");
        }
    }

    /// Catches up every linked room. The caller holds the transaction lock.
    pub(super) async fn catch_up(&self, ctx: &AdapterContext) -> Result<(), AdapterError> {
        let outages = self.hs.outages();
        let mut found = 0;
        for room in ctx.linked_rooms() {
            found += self.catch_up_room(ctx, &room).await?;
        }
        // An outage during the catch-up leaves another one due.
        self.caught_up.store(outages, Ordering::Relaxed);
        if found > 0 {
            // At start, mostly what the homeserver was going to push again; after an outage,
            // also what it lost.
            tracing::info!(adapter = %self.id, found,
                "caught up from the rooms' history: events not pushed (yet)");
        } else {
            tracing::debug!(adapter = %self.id, "caught up: nothing was missing");
        }
        Ok(())
    }

    /// Reads `room`'s history after its position; returns how many events were new.
    async fn catch_up_room(
        &self,
        ctx: &AdapterContext,
        room: &RemoteRoomId,
    ) -> Result<usize, AdapterError> {
        let skip = |what: &str, e: &dyn std::fmt::Display| {
            tracing::warn!(adapter = %self.id, %room, error = %e, "{what}; not caught up");
        };
        let room_id = match self.room_id(room).await {
            Ok(id) => id,
            Err(e @ AdapterError::Transient { .. }) => return Err(e),
            Err(e) => {
                skip("unknown room", &e);
                return Ok(0);
            }
        };
        let key = position_key(room_id.as_str());
        let store = ctx.store();
        let stored = store
            .get(&key)
            .map_err(|e| AdapterError::transient(e.to_string()))?;
        // Nothing was ever taken from the room: there is no gap to fill.
        let Some(position) = stored else {
            return Ok(0);
        };
        let Ok(position) = OwnedEventId::try_from(String::from_utf8_lossy(&position).as_ref())
        else {
            skip("bad stored position", &"not an event ID");
            return Ok(0);
        };
        let mut request = get_context::v3::Request::new(room_id.clone(), position.clone());
        request.limit = 0u32.into();
        let mut from = match self.hs.call(request, As::Bot).await {
            Ok(answer) => answer.end,
            Err(e) => match AdapterError::from(e) {
                AdapterError::Permanent(e) => {
                    skip("cannot find the last event taken", &e);
                    return Ok(0);
                }
                e => return Err(e),
            },
        };
        let mut pending = Vec::new();
        let mut newest = None;
        for page in 0..MAX_PAGES {
            let Some(token) = from.take() else { break };
            let mut request = get_message_events::v3::Request::forward(room_id.clone()).from(token);
            request.limit = PAGE.into();
            let answer = self.hs.call(request, As::Bot).await?;
            if answer.chunk.is_empty() {
                break;
            }
            for raw in &answer.chunk {
                let Ok(mut event) = serde_json::from_str::<Value>(raw.json().get()) else {
                    continue;
                };
                let Some(fields) = event.as_object_mut() else {
                    continue;
                };
                // The homeserver's history carries the room ID; transactions always do.
                fields
                    .entry("room_id")
                    .or_insert_with(|| room_id.as_str().into());
                if let Some(id) = fields.get("event_id").and_then(Value::as_str) {
                    newest = Some(id.to_owned());
                }
                match self.timeline(ctx, &event).await {
                    Ok(Some(p)) => pending.push(p),
                    Ok(None) => {}
                    Err(SubmitError::ShuttingDown) => {
                        return Err(AdapterError::transient("the bridge is shutting down"));
                    }
                    Err(e) => return Err(AdapterError::transient(e.to_string())),
                }
            }
            from = answer.end;
            if page + 1 == MAX_PAGES && from.is_some() {
                tracing::warn!(adapter = %self.id, %room, events = MAX_PAGES * PAGE as usize,
                    "catch-up stopped after its page limit; older missed events may remain missing");
            }
        }
        let mut found = 0;
        for p in pending {
            if let Submitted::Accepted(_) = p.durable().await {
                found += 1;
            }
        }
        if let Some(newest) = newest {
            store
                .put(&key, newest.as_bytes())
                .map_err(|e| AdapterError::transient(e.to_string()))?;
        }
        if found > 0 {
            tracing::debug!(adapter = %self.id, %room, found, "events taken from the room's history");
        }
        Ok(found)
    }
}
