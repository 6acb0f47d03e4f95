//! Catching up from the room archive (XEP-0313 on the MUC, Prosody's mod_muc_mam).
//!
//! The core calls [`Adapter::backfill`](bridge_core::Adapter::backfill) each time the adapter
//! reports itself connected: after the first start, after a reconnect, after a bridge restart.
//! We ask the room for what it archived after the last stanza-id we bridged (kept in the store,
//! written once the events it covers are durable), and translate it like live messages. The
//! core's dedup by stanza-id makes any overlap with live traffic harmless, so each message is
//! bridged exactly once.
//!
//! On the very first start there is no position: we only learn the archive's newest ID, so
//! that what is posted from then on, even while the bridge is down, is caught up later.

use bridge_core::{AdapterContext, AdapterError, InboundEvent, RemoteEventId};
use xmpp_parsers::minidom::Element;

use super::inbound::{Heard, keys};
use super::{Inner, IqFailure};
use crate::jid;
use crate::mam::{self, Fin, MamItem};
use crate::translate::{self, StanzaId};

/// Most archived messages asked for per page (Prosody caps pages at 50 by default).
const PAGE: usize = 50;

/// Which page of an archive to ask for.
#[derive(Clone, Copy)]
enum Page<'a> {
    /// The items after this archive ID (`None`: from the start).
    After(Option<&'a str>),
    /// Only the newest item.
    Newest,
}

enum PageError {
    /// The archive does not know the ID we asked to start after (expired, or the room was
    /// recreated).
    PositionGone,
    Failed(AdapterError),
}

impl From<AdapterError> for PageError {
    fn from(e: AdapterError) -> Self {
        Self::Failed(e)
    }
}

impl Inner {
    /// A `<message/>` carrying a MAM `<result/>`: hand it to the query waiting for it.
    /// Returns true when the stanza was an archive result (ours or not).
    pub(super) fn route_archive_result(&self, stanza: &Element) -> bool {
        let Some(result) = stanza.get_child("result", mam::NS_MAM) else {
            return false;
        };
        let query_id = result.attr("queryid").unwrap_or_default();
        let mut archive = self.archive.lock();
        match archive.get_mut(query_id) {
            Some((room, items)) => match mam::parse_result(stanza, room) {
                Some(item) => items.push(item),
                None => {
                    tracing::warn!(adapter = %self.id, %room, "malformed or forged archive result; ignored");
                }
            },
            None => tracing::debug!(query_id, "archive result for no running query"),
        }
        true
    }

    /// One page of `room`'s archive, with the page's `<fin/>`.
    async fn archive_page(
        &self,
        room: &str,
        page: Page<'_>,
    ) -> Result<(Vec<MamItem>, Fin), PageError> {
        let me = self
            .listener_jid()
            .ok_or_else(|| AdapterError::transient("not connected"))?;
        let query_id = self.next_id();
        let iq = match page {
            Page::After(after) => mam::query(&me, room, "", &query_id, after, PAGE),
            Page::Newest => mam::latest_query(&me, room, "", &query_id),
        };
        self.archive
            .lock()
            .insert(query_id.clone(), (room.to_owned(), Vec::new()));
        let answer = self.iq(iq).await;
        let items = self
            .archive
            .lock()
            .remove(&query_id)
            .map(|(_, items)| items);
        let answer = match answer {
            Ok(answer) => answer,
            Err(IqFailure::NotSent(e)) => return Err(PageError::Failed(e)),
            Err(IqFailure::Error { condition, .. }) if condition == "item-not-found" => {
                return Err(PageError::PositionGone);
            }
            Err(e) => {
                let why = format!("archive query refused: {e}");
                return Err(PageError::Failed(AdapterError::transient(why)));
            }
        };
        let fin = mam::parse_fin(&answer).map_err(|e| AdapterError::transient(e.to_string()))?;
        Ok((items.unwrap_or_default(), fin))
    }

    /// Learns the archive's newest ID for `room` and stores it as the position.
    async fn learn_position(&self, room: &str, ctx: &AdapterContext) -> Result<(), AdapterError> {
        let (items, _) = match self.archive_page(room, Page::Newest).await {
            Ok(page) => page,
            Err(PageError::Failed(e)) => return Err(e),
            Err(PageError::PositionGone) => (Vec::new(), Fin::default()),
        };
        // An empty archive is remembered as "": everything it gets from now on is new.
        let newest = items.last().map_or("", |i| i.archive_id.as_str());
        ctx.store()
            .put(&keys::of(keys::POSITION, &[room]), newest.as_bytes())
            .map_err(|e| AdapterError::transient(e.to_string()))
    }

    /// The core's catch-up of `room` after a (re)connect: what the archive holds after `after`
    /// (or the stored position), then the room's messages heard live since the rejoin, which
    /// were held back until now ([`Inner::catching_up`]). Both are enqueued here, in that
    /// order, under the lock the live path takes, so that nothing heard live is accepted
    /// before what the room got while we were away: the core's position (the newest native ID
    /// accepted) and ours (the newest durable live message) never pass a gap. Returns nothing
    /// for the core to enqueue. The archive is read to its end, whatever `limit` says (a
    /// partial catch-up followed by the live messages would leave a gap).
    pub(super) async fn backfill(
        &self,
        room: &str,
        after: Option<&RemoteEventId>,
        _limit: usize,
    ) -> Result<Vec<InboundEvent>, AdapterError> {
        let ctx = self.ctx()?;
        let session = self.catching_up.lock().0;
        let archived = self.archived_since(room, after, &ctx).await;
        let mut last = None;
        let mut position = None;
        {
            let mut gate = self.catching_up.lock();
            if gate.0 != session {
                // The session ended meanwhile: the next one catches up again, from where the
                // positions still are.
                return Err(AdapterError::transient(
                    "the XMPP session ended during the catch-up",
                ));
            }
            let held = gate
                .1
                .remove(&room.to_ascii_lowercase())
                .unwrap_or_default();
            let archived = match archived {
                Ok(events) => events,
                Err(e) if held.is_empty() => return Err(e),
                Err(e) => {
                    tracing::warn!(adapter = %self.id, room, error = %e,
                        "catch-up from the archive failed; what the room got meanwhile may be missing");
                    Vec::new()
                }
            };
            let mut events = archived;
            for stanza in &held {
                let Ok(parsed) = translate::parse_message(stanza, &self.limits()) else {
                    continue;
                };
                let from = parsed.from.clone().unwrap_or_default();
                let (from_room, nick) = jid::split(&from);
                let ours = nick.is_some_and(|n| {
                    self.rooms
                        .lock()
                        .is_ours(from_room, n, parsed.occupant_id.as_deref())
                });
                if let Some(p) = parsed.stanza_id_by(from_room) {
                    position = Some(p.to_owned());
                }
                events.extend(self.translate_groupchat(
                    &parsed,
                    from_room,
                    nick,
                    ours,
                    Heard::Live,
                    &ctx,
                ));
            }
            for event in events {
                match ctx.enqueue(event) {
                    Ok(pending) => last = Some(pending),
                    Err(e) => {
                        tracing::warn!(adapter = %self.id, room, error = %e, "caught-up message not accepted");
                    }
                }
            }
        }
        if let Some(pending) = last {
            // Durability is in order: the last one covers the others.
            pending.durable().await;
            if let Some(position) = position {
                self.positions.lock().insert(room.to_owned(), position);
            }
        }
        Ok(Vec::new())
    }

    /// What the archive of `room` holds after `after` (or the stored position), oldest first.
    async fn archived_since(
        &self,
        room: &str,
        after: Option<&RemoteEventId>,
        ctx: &AdapterContext,
    ) -> Result<Vec<InboundEvent>, AdapterError> {
        let ctx = ctx.clone();
        // Reaction events carry "<stanza-id>#…" IDs; the archive knows the stanza-id.
        let after = after.map(|a| a.as_str().split('#').next().unwrap_or_default().to_owned());
        let start = match after {
            Some(after) => {
                self.positions.lock().insert(room.to_owned(), after.clone());
                Some(after)
            }
            None => self.position(&ctx, room),
        };
        let Some(mut start) = start else {
            self.learn_position(room, &ctx).await?;
            return Ok(Vec::new());
        };
        let mut events = Vec::new();
        loop {
            let from = Some(start.as_str()).filter(|s| !s.is_empty());
            let (items, fin) = match self.archive_page(room, Page::After(from)).await {
                Ok(page) => page,
                Err(PageError::PositionGone) => {
                    tracing::warn!(adapter = %self.id, room, position = %start,
                        "the archive no longer has our last position: what was posted in between is lost; going on from its newest message");
                    self.learn_position(room, &ctx).await?;
                    return Ok(events);
                }
                Err(PageError::Failed(e)) => return Err(e),
            };
            for item in &items {
                events.extend(self.archived_events(room, item, &ctx));
            }
            match (
                fin.complete,
                fin.last.or(items.last().map(|i| i.archive_id.clone())),
            ) {
                (false, Some(last)) if !items.is_empty() => start = last,
                _ => break,
            }
        }
        Ok(events)
    }

    /// The `id`s and origin-ids of what `room` archived after our stored position (a few pages
    /// at most), to tell which of our unconfirmed messages arrived.
    pub(super) async fn archived_ids(
        &self,
        room: &str,
    ) -> Result<std::collections::HashSet<String>, AdapterError> {
        let ctx = self.ctx()?;
        let mut start = self.position(&ctx, room).unwrap_or_default();
        let mut ids = std::collections::HashSet::new();
        for _ in 0..20 {
            let from = Some(start.as_str()).filter(|s| !s.is_empty());
            let (items, fin) = match self.archive_page(room, Page::After(from)).await {
                Ok(page) => page,
                Err(PageError::PositionGone) => return Ok(ids),
                Err(PageError::Failed(e)) => return Err(e),
            };
            for item in &items {
                let origin = item
                    .message
                    .get_child("origin-id", translate::ns::SID)
                    .and_then(|o| o.attr("id"));
                ids.extend(origin.or(item.message.attr("id")).map(str::to_owned));
            }
            match (fin.complete, items.last()) {
                (false, Some(last)) => start = last.archive_id.clone(),
                _ => break,
            }
        }
        Ok(ids)
    }

    fn archived_events(
        &self,
        room: &str,
        item: &MamItem,
        ctx: &AdapterContext,
    ) -> Vec<InboundEvent> {
        let mut parsed = match translate::parse_message(&item.message, &self.limits()) {
            Ok(parsed) => parsed,
            Err(e) => {
                tracing::warn!(adapter = %self.id, room, id = %item.archive_id, error = %e, "archived message refused");
                return Vec::new();
            }
        };
        if parsed.msg_type != translate::MessageType::Groupchat {
            return Vec::new();
        }
        // The archive ID is the stanza-id the live message carried.
        parsed.stanza_ids.retain(|s| s.by != room);
        parsed.stanza_ids.push(StanzaId {
            id: item.archive_id.clone(),
            by: room.to_owned(),
        });
        parsed.delay_ms = parsed.delay_ms.or(item.delay_ms);
        let from = parsed.from.clone().unwrap_or_default();
        let (from_room, nick) = jid::split(&from);
        if from_room != room {
            return Vec::new();
        }
        let ours = nick.is_some_and(|n| {
            self.rooms
                .lock()
                .is_ours(room, n, parsed.occupant_id.as_deref())
        });
        self.translate_groupchat(&parsed, room, nick, ours, Heard::Archive, ctx)
    }
}
