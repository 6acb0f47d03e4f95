//! Neutral → XMPP: what `send` does for each kind of event.
//!
//! In component mode the event's author speaks through their puppet (`escaped-id@domain`),
//! which joins the room on first use with their display name as nick. In client mode the relay
//! account speaks for everyone, as `relay_format` says.
//!
//! A room message is confirmed by the room's reflection of it, which carries the stanza-id the
//! room gave it: that becomes the native ID. The stanza's `id` (and origin-id) is the neutral
//! event ID, so a reflection that reaches the listener first is recognised as ours (`echo_of`).

use std::sync::Arc;

use bridge_core::{
    AdapterContext, AdapterError, AdapterId, Attachment, Delivered, EventKind, MembershipChange,
    MessageContent, MsgType, OutboundEvent, RemoteEventId, RemoteUserId, RichText, Role,
};
use xmpp_parsers::minidom::Element;

use super::Inner;
use super::inbound::keys;
use super::state::{self, nick_candidates};
use crate::muc;
use crate::translate::{self, ChatState, Envelope, MessageType, OutReply};

/// Most room messages kept waiting for their reflection.
const MAX_UNCONFIRMED: usize = 10_000;
/// Bounces after which a room message is given up (each one a join and a send again).
const MAX_BOUNCES: u32 = 3;

/// Who asks for a delivery: the core's `send`, which goes after the room's bounced messages,
/// or the adapter sending again what it sent before (those messages themselves).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Turn {
    /// The core's next event for the room.
    Core,
    /// A bounced or unconfirmed message sent again.
    Resend,
}
/// Back-off between attempts at sending a bounced message again while they fail transiently
/// (first, most): it is tried until it goes or the adapter stops, as the core would.
const RESEND_BACKOFF: (std::time::Duration, std::time::Duration) = (
    std::time::Duration::from_millis(200),
    std::time::Duration::from_secs(5),
);

/// Who speaks for an event in a room.
pub(super) struct Speaker {
    /// The occupant's JID.
    pub(super) jid: String,
    /// Nicks to try, best first.
    pub(super) nicks: Vec<String>,
}

impl Inner {
    fn speaker(&self, event: &OutboundEvent) -> Result<Speaker, AdapterError> {
        match self.puppet_jid(&event.sender) {
            Some(jid) => Ok(Speaker {
                jid,
                nicks: nick_candidates(
                    event.sender.name(),
                    event.sender.adapter.as_str(),
                    event.sender.user.as_str(),
                ),
            }),
            None => Ok(Speaker {
                jid: self
                    .listener_jid()
                    .ok_or_else(|| AdapterError::transient("not connected"))?,
                nicks: nick_candidates(&self.settings.nick, "bridge", "bridge"),
            }),
        }
    }

    /// Our occupant `speaker` in `room`, joining first when needed: its nick and occupant-id.
    pub(super) async fn ensure_joined(
        &self,
        room: &str,
        speaker: &Speaker,
    ) -> Result<(String, Option<String>), AdapterError> {
        if let Some(found) = self.rooms.lock().our_occupant(room, &speaker.jid) {
            return Ok(found);
        }
        // A join of the same occupant may be in progress (the room's bounce resender and the
        // core's next message): wait for it, and do not join twice.
        let _turn = self.join_turn(room, &speaker.jid).await;
        if let Some(found) = self.rooms.lock().our_occupant(room, &speaker.jid) {
            return Ok(found);
        }
        let presence = self
            .join_room_now(room, &speaker.jid, &speaker.nicks)
            .await?;
        Ok((presence.nick, presence.occupant_id))
    }

    /// Delivers `event`: the core's send (`Turn::Core`), or a message sent again by the adapter
    /// itself (`Turn::Resend`: the room's bounced messages, a lost session's unconfirmed ones).
    pub(super) async fn deliver(
        &self,
        event: OutboundEvent,
        turn: Turn,
    ) -> Result<Delivered, AdapterError> {
        let ctx = self.ctx()?;
        let room = event.room.as_str().to_owned();
        let speaker = self.speaker(&event)?;
        let component = self.component_domain().is_some();
        if let Some((user, _)) = super::direct::parts(&room) {
            if !component {
                return Err(AdapterError::Unsupported(
                    "direct conversations in client mode".into(),
                ));
            }
            return self.deliver_direct(&event, user, &speaker.jid).await;
        }
        let joined = self.rooms.lock().our_occupant(&room, &speaker.jid);
        // The puppet's avatar, fetched when its URL is new: its joins carry the hash.
        let photo = if component {
            let url = match &event.kind {
                EventKind::Profile {
                    avatar: Some(avatar),
                    ..
                } => Some(avatar.as_str()),
                _ => event.sender.avatar.as_deref(),
            };
            let puppet = super::avatar::key(&speaker.jid);
            self.avatar_of(&ctx, &event.sender.adapter, &puppet, url)
                .await
        } else {
            None
        };

        // Kinds that are about the puppet's presence in the room rather than a message.
        match &event.kind {
            EventKind::Membership { change, .. } if component => {
                return match change {
                    MembershipChange::Join | MembershipChange::Invite => {
                        let (nick, occupant_id) = self.ensure_joined(&room, &speaker).await?;
                        Ok(puppet_only(&room, &nick, occupant_id.as_deref()))
                    }
                    _ => {
                        self.puppet_leaves(&room, &speaker.jid).await?;
                        Ok(Delivered::default())
                    }
                };
            }
            EventKind::Profile {
                display_name,
                avatar,
            } if component => {
                let Some((nick, _)) = joined else {
                    return Ok(Delivered::default()); // takes the new name at its next join
                };
                // No new name (an avatar change): the one the sender has.
                let name = (display_name.as_deref())
                    .or(event.sender.display_name.as_deref())
                    .unwrap_or(event.sender.user.as_str());
                let wanted = nick_candidates(
                    name,
                    event.sender.adapter.as_str(),
                    event.sender.user.as_str(),
                );
                let taken = |n: &String| {
                    self.rooms
                        .lock()
                        .nick_taken_by_other(&room, n, &speaker.jid)
                };
                let new_nick = wanted.iter().find(|n| !taken(n)).filter(|n| **n != nick);
                // A new avatar is announced in every room (the profile change comes per room).
                let new_photo = photo.as_deref().filter(|_| avatar.is_some());
                if new_nick.is_none() && new_photo.is_none() {
                    return Ok(Delivered::default());
                }
                if let Some(new) = new_nick {
                    self.rooms.lock().claim(&room, &speaker.jid, new);
                }
                // An available presence to the (new) nick: a nick change, a new avatar, or both.
                let mut presence = muc::change_nick(
                    self.stanza_from(&speaker.jid),
                    &room,
                    new_nick.unwrap_or(&nick),
                );
                if let Some(photo) = photo.as_deref() {
                    presence.append_child(super::avatar::update_element(photo));
                }
                self.send_stanza(presence).await?;
                return Ok(Delivered::default());
            }
            EventKind::Role { role } if component => {
                let nick = joined.map(|(nick, _)| nick);
                return self
                    .give_role(&ctx, &room, &speaker.jid, nick.as_deref(), *role)
                    .await;
            }
            EventKind::Moderation {
                target,
                action,
                reason,
            } if component => {
                return self
                    .moderate_user(&room, &speaker, target, *action, reason.as_deref())
                    .await;
            }
            EventKind::Typing { .. } | EventKind::ReadMarker { .. } if joined.is_none() => {
                // Not worth joining for: typing and read markers are best-effort.
                return Ok(Delivered::default());
            }
            EventKind::Membership { .. }
            | EventKind::Profile { .. }
            | EventKind::Role { .. }
            | EventKind::Moderation { .. } => {
                return Err(AdapterError::Unsupported(format!(
                    "{} in client mode",
                    event.kind.name()
                )));
            }
            EventKind::Presence { .. } | EventKind::RoomName { .. } => {
                return Err(AdapterError::Unsupported(event.kind.name().into()));
            }
            _ => {}
        }

        let (nick, occupant_id) = self.ensure_joined(&room, &speaker).await?;
        if turn == Turn::Core {
            // The room may have bounced messages since `send` looked (our occupant was removed
            // while this one waited to join, or the resender joined first and is still at
            // it): they go first.
            self.until_rebounded(&room).await;
        }
        let mut event = event;
        event.kind = self.resolve_refs(&ctx, &room, event.kind).await;
        let puppet = state::identity(&room, &nick, None, occupant_id.as_deref());
        let id = event.id.to_string();
        let env = Envelope {
            from: &speaker.jid,
            to: &room,
            msg_type: MessageType::Groupchat,
            id: &id,
        };
        let stanza = match &event.kind {
            EventKind::Message {
                content, reply_to, ..
            } => {
                let content = self.prepare(&event, content, &speaker.jid).await;
                let reply = reply_to.as_ref().map(|r| OutReply {
                    to: None,
                    id: r.as_str(),
                    quote: None,
                });
                translate::build_message(&env, &content, reply.as_ref())
            }
            EventKind::Edit { target, new } => {
                let new = self.prepare(&event, new, &speaker.jid).await;
                let original = self.original_id(&ctx, &room, target);
                translate::build_correction(&env, &original, &new)
            }
            EventKind::Reaction { target, key } | EventKind::Unreact { target, key, .. } => {
                let adding = matches!(event.kind, EventKind::Reaction { .. });
                let keys = self.update_reactions(&ctx, &room, target, &puppet, key, adding);
                translate::build_reactions(&env, target.as_str(), &keys)
            }
            EventKind::Redaction { target, reason } => {
                let original = self.original_id(&ctx, &room, target);
                let mine = ctx
                    .store()
                    .get(&keys::of(keys::BY_ID, &[&room, puppet.as_str(), &original]))
                    .ok()
                    .flatten()
                    .is_some_and(|sid| sid == target.as_str().as_bytes());
                if !mine {
                    return self
                        .moderate(&room, target, reason.as_deref(), &speaker)
                        .await;
                }
                translate::build_retraction(&env, target.as_str())
            }
            EventKind::Topic { text } => {
                let text = &truncate(text, self.settings.max_body_bytes);
                let by_puppet = self
                    .send_subject(&id, &room, text, translate::build_subject(&env, text))
                    .await;
                let listener = self.listener_jid().filter(|l| *l != speaker.jid);
                return match (by_puppet, listener) {
                    (Err(AdapterError::Permanent(why)), Some(listener))
                        if why.contains("forbidden") =>
                    {
                        // Only moderators may change the subject in most rooms: the bridge's
                        // own occupant may be one (it is when it created the room).
                        let env = Envelope {
                            from: &listener,
                            ..env
                        };
                        self.send_subject(&id, &room, text, translate::build_subject(&env, text))
                            .await?;
                        Ok(Delivered::default())
                    }
                    (outcome, _) => outcome.map(|_| Delivered {
                        native_id: None,
                        puppet: Some(puppet),
                    }),
                };
            }
            EventKind::Custom {
                event_type,
                content,
            } => translate::build_custom(&env, event_type, content),
            EventKind::Typing { active } => {
                let state = if *active {
                    ChatState::Composing
                } else {
                    ChatState::Paused
                };
                self.send_stanza(translate::build_chat_state(&env, state))
                    .await?;
                return Ok(Delivered {
                    native_id: None,
                    puppet: Some(puppet),
                });
            }
            EventKind::ReadMarker { up_to } => {
                self.send_stanza(translate::build_displayed(&env, up_to.as_str()))
                    .await?;
                return Ok(Delivered {
                    native_id: None,
                    puppet: Some(puppet),
                });
            }
            other => return Err(AdapterError::Unsupported(other.name().into())),
        };
        if matches!(event.kind, EventKind::Message { .. }) && self.archived_before(&room, &id).await
        {
            // Written by an earlier process that stopped before the core recorded it.
            tracing::info!(adapter = %self.id, room, %id,
                "already in the room's archive; not sending it again");
            return Ok(Delivered {
                native_id: Some(RemoteEventId::new(id)),
                puppet: Some(puppet),
            });
        }
        if matches!(event.kind, EventKind::Message { .. }) {
            // Room messages are pipelined: written, then confirmed when the room reflects them
            // (the run loop records the stanza-id then), so a busy room is not held to one
            // round trip per message. What the session loses before the room shows it is sent
            // again after the reconnect ([`Inner::resend_unconfirmed`]).
            {
                let mut unconfirmed = self.unconfirmed.lock();
                unconfirmed.insert(id.clone(), event.clone());
                // A room that never reflects anything must not make this grow without bound.
                while unconfirmed.len() > MAX_UNCONFIRMED {
                    unconfirmed.pop_first();
                }
            }
            if let Err(e) = self.send_written(stanza).await {
                self.unconfirmed.lock().remove(&id);
                return Err(e);
            }
            // Its event ID stands for it until the room's stanza-id is known (see `resolve_ref`).
            return Ok(Delivered {
                native_id: Some(RemoteEventId::new(id)),
                puppet: Some(puppet),
            });
        }
        let reflection = self.send_and_confirm(&id, stanza).await?;
        let native_id = reflection
            .as_ref()
            .and_then(|r| stanza_id_by(r, &room))
            .map(RemoteEventId::new);
        Ok(Delivered {
            native_id,
            puppet: Some(puppet),
        })
    }

    /// References to our own pipelined messages arrive as their event IDs (what `send`
    /// reported before the room gave them a stanza-id): wait for the reflection of one still in
    /// flight, then use the stanza-id the room gave it, which is what XMPP clients know.
    async fn resolve_refs(
        &self,
        ctx: &bridge_core::AdapterContext,
        room: &str,
        kind: EventKind<RemoteEventId>,
    ) -> EventKind<RemoteEventId> {
        let provisional: Vec<RemoteEventId> = (kind.refs().into_iter())
            .filter(|r| r.as_str().parse::<bridge_core::EventId>().is_ok())
            .cloned()
            .collect();
        if provisional.is_empty() {
            return kind;
        }
        let mut resolved = std::collections::HashMap::new();
        for r in provisional {
            self.until_unconfirmed_ends(r.as_str()).await;
            let key = keys::of(keys::SENT, &[room, r.as_str()]);
            if let Some(stanza_id) = ctx.store().get(&key).ok().flatten() {
                let stanza_id = String::from_utf8_lossy(&stanza_id).into_owned();
                resolved.insert(r, RemoteEventId::new(stanza_id));
            }
        }
        if resolved.is_empty() {
            return kind;
        }
        let fallback = kind.clone();
        kind.map_refs(|r| Some(resolved.get(r).cloned().unwrap_or_else(|| r.clone())))
            .unwrap_or(fallback)
    }

    /// Waits until our pipelined room message `id` is no longer unconfirmed (reflected,
    /// bounced, or its session ended), for at most the reflection timeout.
    async fn until_unconfirmed_ends(&self, id: &str) {
        let deadline = tokio::time::Instant::now() + self.settings.reflection_timeout;
        while self.unconfirmed.lock().contains_key(id) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// Whether our room message `id` is in `room`'s archive already. A previous process may
    /// have been killed after writing a message and before the core recorded its delivery
    /// (which it then repeats), and a room does not recognise a repeated message: so the first
    /// room message sent into each room in this process reads what the archive holds after
    /// the stored position (a few pages at most), and this and later messages are looked up in
    /// it. The position is written after the deliveries before it are recorded, so a message
    /// the core repeats is after it.
    async fn archived_before(&self, room: &str, id: &str) -> bool {
        let known = self
            .archived_at_start
            .lock()
            .get(room)
            .map(|ids| ids.contains(id));
        if let Some(known) = known {
            return known;
        }
        let ids = match self.archived_ids(room).await {
            Ok(ids) => ids,
            Err(e) => {
                // Checked again with the next message.
                tracing::warn!(adapter = %self.id, room, error = %e,
                    "cannot read the archive for messages an earlier process sent");
                return false;
            }
        };
        let found = ids.contains(id);
        self.archived_at_start.lock().insert(room.to_owned(), ids);
        found
    }

    /// After a reconnect: the room messages written in the lost session whose reflection never
    /// came are looked up in the room archive (they may have arrived), and the rest are sent
    /// again, oldest first.
    pub(super) async fn resend_unconfirmed(&self) {
        let pending: Vec<OutboundEvent> = self.unconfirmed.lock().values().cloned().collect();
        if pending.is_empty() {
            return;
        }
        let mut rooms: Vec<&str> = pending.iter().map(|e| e.room.as_str()).collect();
        rooms.sort_unstable();
        rooms.dedup();
        for room in rooms {
            match self.archived_ids(room).await {
                Ok(ids) => self.unconfirmed.lock().retain(|id, _| !ids.contains(id)),
                Err(e) => {
                    tracing::warn!(adapter = %self.id, room, error = %e, "cannot check the archive for unconfirmed messages; sending them again")
                }
            }
        }
        let again: Vec<OutboundEvent> = std::mem::take(&mut *self.unconfirmed.lock())
            .into_values()
            .collect();
        if !again.is_empty() {
            tracing::info!(adapter = %self.id, count = again.len(), "sending again what the lost session did not deliver");
        }
        for event in again {
            let id = event.id;
            if let Err(e) = self.deliver(event, Turn::Resend).await {
                tracing::warn!(adapter = %self.id, %id, error = %e, "cannot send a message again");
            }
        }
    }

    /// The room refused a pipelined message (an error bounce). When our occupant was no
    /// longer in the room (removed while we did not know), the message is queued for the
    /// room's resender, which joins again and sends the room's bounced messages in their
    /// order, while later sends to the room wait for it ([`Inner::until_rebounded`]); a message
    /// that keeps bouncing, and other refusals, are final. Called as the bounce is read, so
    /// that the resender sees it before it looks again.
    pub(super) fn refused(self: &Arc<Self>, event: OutboundEvent, bounce: &Element) {
        let (condition, text) =
            muc::error_condition(bounce).unwrap_or_else(|| ("undefined-condition".into(), None));
        if matches!(condition.as_str(), "not-acceptable" | "item-not-found")
            && let Some(occupant) = bounce.attr("to")
        {
            self.rooms.lock().left(event.room.as_str(), occupant);
            self.rebound(event, &condition);
            return;
        }
        if let Ok(ctx) = self.ctx() {
            ctx.counter("bridge_xmpp_refused_total").increment(1);
        }
        tracing::error!(adapter = %self.id, room = %event.room, event = %event.id, %condition,
            text = text.unwrap_or_default(), "the room refused a message; it is not delivered there");
    }

    /// Our occupant `occupant` was removed from `room` (its own unavailable presence came):
    /// its messages to the room that were not reflected yet were written after the room
    /// removed it (the room handles a sender's stanzas in order and reflects what it accepts
    /// before it sends the removal), so they are bounced or lost. They go to the room's
    /// resender now, before the core's next message to the room can join again and overtake
    /// them; their bounces, read later, find nothing unconfirmed and are ignored.
    pub(super) fn occupant_removed(self: &Arc<Self>, room: &str, occupant: &str) {
        let orphaned: Vec<OutboundEvent> = {
            let mut unconfirmed = self.unconfirmed.lock();
            let ids: Vec<String> = (unconfirmed.iter())
                .filter(|(_, e)| {
                    e.room.as_str() == room
                        && self.speaker(e).is_ok_and(|speaker| speaker.jid == occupant)
                })
                .map(|(id, _)| id.clone())
                .collect();
            (ids.iter())
                .filter_map(|id| unconfirmed.remove(id))
                .collect()
        };
        for event in orphaned {
            self.rebound(event, "removed from the room");
        }
    }

    /// Queues `event` for its room's resender (starting one when there is none), unless it
    /// was refused [`MAX_BOUNCES`] times already.
    fn rebound(self: &Arc<Self>, event: OutboundEvent, why: &str) {
        let room = event.room.as_str().to_owned();
        let id = event.id.to_string();
        let mut rebounds = self.rebounds.lock();
        let first = !rebounds.contains_key(&room);
        let queue = rebounds.entry(room.clone()).or_default();
        let bounced = queue.get(&id).map_or(0, |(_, n)| *n) + 1;
        if bounced > MAX_BOUNCES {
            queue.remove(&id);
            tracing::error!(adapter = %self.id, %room, event = %id, bounced,
                "the room keeps refusing the message; it is not delivered there");
        } else {
            tracing::info!(adapter = %self.id, %room, event = %id, why,
                "the room no longer had the sender; joining again and sending again");
            queue.insert(id, (event, bounced));
        }
        drop(rebounds);
        if first {
            tokio::spawn(self.clone().resend_bounced(room));
        }
    }

    /// Sends `room`'s bounced messages again, oldest first, each after the one before it was
    /// reflected or bounced again, until none is left.
    async fn resend_bounced(self: Arc<Self>, room: String) {
        loop {
            let next = {
                let mut rebounds = self.rebounds.lock();
                let next = (rebounds.get(&room))
                    .and_then(|queue| queue.first_key_value())
                    .map(|(id, e)| (id.clone(), e.clone()));
                if next.is_none() {
                    // Under the lock: a bounce from now on starts a new resender.
                    rebounds.remove(&room);
                }
                next
            };
            let Some((id, (event, bounced))) = next else {
                self.rebounded.notify_waiters();
                return;
            };
            let mut backoff = bridge_core::Backoff::new(RESEND_BACKOFF.0, RESEND_BACKOFF.1);
            let Ok(ctx) = self.ctx() else {
                return;
            };
            let sent = loop {
                match self.deliver(event.clone(), Turn::Resend).await {
                    Ok(_) => break true,
                    Err(e @ AdapterError::Transient { .. }) => {
                        tracing::debug!(adapter = %self.id, %room, %id, error = %e,
                            "cannot send a bounced message again yet");
                        tokio::select! {
                            () = tokio::time::sleep(backoff.next_delay()) => {}
                            () = ctx.shutdown().cancelled() => return,
                        }
                    }
                    Err(e) => {
                        tracing::warn!(adapter = %self.id, %room, %id, error = %e,
                            "cannot send a bounced message again; it is not delivered there");
                        break false;
                    }
                }
            };
            if sent {
                // Reflected, bounced again (then counted in the queue by `refused`), or the
                // session ended (then `resend_unconfirmed` has it).
                self.until_unconfirmed_ends(&id).await;
            }
            let mut rebounds = self.rebounds.lock();
            if let Some(queue) = rebounds.get_mut(&room)
                && queue.get(&id).is_some_and(|(_, n)| *n == bounced)
            {
                queue.remove(&id);
            }
        }
    }

    /// Waits until `room` has no bounced messages waiting to be sent again (they go first).
    pub(super) async fn until_rebounded(&self, room: &str) {
        loop {
            let sent = self.rebounded.notified();
            if !self.rebounds.lock().contains_key(room) {
                return;
            }
            sent.await;
        }
    }

    /// The content as this mode sends it: attachments re-hosted on the server's upload
    /// service, and in client mode the author's name put in front.
    async fn prepare(
        &self,
        event: &OutboundEvent,
        content: &MessageContent,
        speaker: &str,
    ) -> MessageContent {
        let mut content = content.clone();
        let mut attachments = Vec::with_capacity(content.attachments.len());
        for attachment in std::mem::take(&mut content.attachments) {
            attachments.push(
                self.rehost(attachment, &event.sender.adapter, speaker)
                    .await,
            );
        }
        content.attachments = attachments;
        if self.component_domain().is_none() {
            let name = event.sender.name();
            let text = content.text.to_styling();
            let line = if content.msgtype == MsgType::Emote {
                format!("* {name} {text}")
            } else {
                self.settings
                    .relay_format
                    .replace("{name}", name)
                    .replace("{text}", &text)
            };
            content.text = RichText::from_styling(&line);
            content.msgtype = MsgType::Text;
        }
        self.fit(&event.id.to_string(), content)
    }

    /// The content within `max_body_bytes`: servers close the stream of a component that
    /// sends a stanza over their limit (Prosody: 512 KiB), and the retry would do it again.
    /// Formatted text goes out twice (body and XHTML-IM), so over half the limit it is sent
    /// as its XEP-0393 styling only; over the whole limit it is cut, with an ellipsis.
    fn fit(&self, id: &str, mut content: MessageContent) -> MessageContent {
        let limit = self.settings.max_body_bytes;
        let formatted = content.text.is_formatted();
        let text = if formatted {
            content.text.to_styling()
        } else {
            content.text.body().to_owned()
        };
        let budget = if formatted { limit / 2 } else { limit };
        if text.len() > budget {
            let fitted = truncate(&text, limit);
            if fitted.len() < text.len() {
                tracing::warn!(adapter = %self.id, id, bytes = text.len(), limit, "message text over max_body_bytes: cut");
            }
            content.text = RichText::plain(fitted);
        }
        content
    }

    /// The `id` attribute of a message we know by stanza-id (what XEP-0308 corrections point
    /// at); the stanza-id itself when we never saw the message's `id`.
    fn original_id(
        &self,
        ctx: &bridge_core::AdapterContext,
        room: &str,
        target: &RemoteEventId,
    ) -> String {
        ctx.store()
            .get(&keys::of(keys::BY_STANZA_ID, &[room, target.as_str()]))
            .ok()
            .flatten()
            .map(|id| String::from_utf8_lossy(&id).into_owned())
            .unwrap_or_else(|| target.as_str().to_owned())
    }

    /// The puppet's whole reaction set on `target` after adding or removing `key`.
    pub(super) fn update_reactions(
        &self,
        ctx: &bridge_core::AdapterContext,
        room: &str,
        target: &RemoteEventId,
        puppet: &RemoteUserId,
        key: &str,
        adding: bool,
    ) -> Vec<String> {
        let store_key = keys::of(keys::REACTIONS, &[room, target.as_str(), puppet.as_str()]);
        let mut set = super::inbound::stored_reactions(ctx, &store_key);
        set.retain(|k| k != key);
        if adding {
            set.push(key.to_owned());
        }
        if let Err(e) = ctx
            .store()
            .put(&store_key, &serde_json::to_vec(&set).unwrap_or_default())
        {
            tracing::warn!(error = %e, "cannot store a reaction set");
        }
        set
    }

    /// Gives our occupant `puppet` in `room` the standing `role` of its user, as the bridge's
    /// own occupant (XEP-0045 admin requests): an owner or admin becomes an admin by
    /// affiliation (an owner of the room must have made the bridge one), a moderator or muted
    /// user a moderator or visitor by role (the bridge must be an admin); one who was an admin
    /// here is first made a member again. Roles last a session: the wanted one is remembered
    /// and given again at each join ([`Inner::role_after_join`]); a puppet not in the room gets
    /// it at its next join. A room that refuses refuses the event as unsupported: the core
    /// leaves it out there, counted.
    pub(super) async fn give_role(
        &self,
        ctx: &AdapterContext,
        room: &str,
        puppet: &str,
        nick: Option<&str>,
        role: Role,
    ) -> Result<Delivered, AdapterError> {
        let key = keys::of(keys::PUPPET_ROLE, &[&room.to_ascii_lowercase(), puppet]);
        let wanted = keys::of(
            keys::PUPPET_ROLE_WANTED,
            &[&room.to_ascii_lowercase(), puppet],
        );
        let store_error = |e: bridge_core::StoreError| AdapterError::transient(e.to_string());
        let before = super::inbound::stored_role(ctx.store(), &key).map_err(store_error)?;
        let requests = muc::role_requests(before, role, crate::jid::bare(puppet), nick);
        let listener = self.listener_jid();
        for item in requests {
            let iq = muc::admin_item(listener.as_deref(), room, item);
            match self.iq(iq).await {
                Ok(_) => {}
                Err(super::IqFailure::NotSent(e)) => return Err(e),
                Err(e @ super::IqFailure::Error { .. }) => {
                    // Given once the bridge's occupant has the power (`give_wanted_roles`).
                    ctx.store()
                        .put(&wanted, role.name().as_bytes())
                        .map_err(store_error)?;
                    return Err(AdapterError::Unsupported(format!(
                        "{room} refused to make {puppet} {}: {e} (the bridge's occupant must be \
                         an owner of the room to make admins, an admin to make moderators; it \
                         is given once the bridge is one)",
                        role.name()
                    )));
                }
            }
        }
        // Only now: a retry after a request that failed plans again from what was given.
        super::inbound::store_role(ctx.store(), &key, role).map_err(store_error)?;
        ctx.store().delete(&wanted).map_err(store_error)?;
        tracing::debug!(adapter = %self.id, room, puppet, role = role.name(), "standing given");
        Ok(Delivered::default())
    }

    /// The bridge's occupant is an admin or owner of `room` (its own presence says so): the
    /// standings the room refused to give our puppets before ([`Inner::give_role`]) are given
    /// now, in the background.
    pub(super) fn give_wanted_roles(self: &Arc<Self>, ctx: &AdapterContext, room: &str) {
        let prefix = keys::of(keys::PUPPET_ROLE_WANTED, &[&room.to_ascii_lowercase(), ""]);
        let wanted: Vec<(String, Role)> = match ctx.store().scan(&prefix, usize::MAX) {
            Ok(found) => found
                .into_iter()
                .filter_map(|(key, value)| {
                    let puppet = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
                    Some((puppet, Role::parse(std::str::from_utf8(&value).ok()?)?))
                })
                .collect(),
            Err(e) => {
                tracing::warn!(adapter = %self.id, error = %e, "cannot read the store");
                return;
            }
        };
        if wanted.is_empty() {
            return;
        }
        let (inner, ctx, room) = (self.clone(), ctx.clone(), room.to_owned());
        tokio::spawn(async move {
            for (puppet, role) in wanted {
                let nick = inner
                    .rooms
                    .lock()
                    .our_occupant(&room, &puppet)
                    .map(|(n, _)| n);
                match inner
                    .give_role(&ctx, &room, &puppet, nick.as_deref(), role)
                    .await
                {
                    Ok(_) => tracing::info!(adapter = %inner.id, room, puppet, role = role.name(),
                        "a standing refused before is given now"),
                    Err(e) => tracing::info!(adapter = %inner.id, room, puppet, error = %e,
                        "a standing refused before is still refused"),
                }
            }
        });
    }

    /// After our occupant `puppet` joined `room` as `nick` (with the session role `now`): the
    /// session role its user has ([`Inner::give_role`]), given again (the room forgot it when
    /// the occupant left); and voice, in a moderated room that let it in as a visitor when its
    /// user is not muted (else none of its messages would be accepted). Given by the bridge's
    /// own occupant, which needs to be a moderator there (an admin or owner of the room).
    pub(super) async fn role_after_join(
        &self,
        room: &str,
        puppet: &str,
        nick: &str,
        now: Option<&str>,
    ) {
        let Ok(ctx) = self.ctx() else { return };
        let key = keys::of(keys::PUPPET_ROLE, &[&room.to_ascii_lowercase(), puppet]);
        let session = match super::inbound::stored_role(ctx.store(), &key) {
            Ok(Role::Moderator) => "moderator",
            Ok(Role::Muted) => "visitor",
            Ok(_) if now == Some("visitor") => "participant",
            _ => return,
        };
        if now == Some(session) {
            return;
        }
        let iq = muc::admin_item(
            self.listener_jid().as_deref(),
            room,
            [("nick", nick), ("role", session)],
        );
        if let Err(e) = self.iq(iq).await {
            if session == "participant" {
                tracing::warn!(adapter = %self.id, room, puppet, error = %e,
                    "a moderated room gave a puppet no voice, and the bridge cannot give it (make the bridge an admin of the room): its messages will be refused");
            } else {
                tracing::info!(adapter = %self.id, room, puppet, error = %e, "session role not given again");
            }
        }
    }

    /// Deleting someone else's message takes a moderator (XEP-0425). We ask as the speaker,
    /// then as the bridge's own occupant (a moderator when it created the room or an owner
    /// made it one), each in the current form of the XEP and then in the older one.
    async fn moderate(
        &self,
        room: &str,
        target: &RemoteEventId,
        reason: Option<&str>,
        speaker: &Speaker,
    ) -> Result<Delivered, AdapterError> {
        let mut asking = vec![speaker.jid.clone()];
        asking.extend(self.listener_jid().filter(|l| *l != speaker.jid));
        let mut refusal = String::new();
        for moderator in &asking {
            for build in [translate::build_moderation, translate::build_moderation_v0] {
                let iq = build(moderator, room, "", target.as_str(), reason);
                match self.iq(iq).await {
                    Ok(_) => return Ok(Delivered::default()),
                    Err(super::IqFailure::NotSent(e)) => return Err(e),
                    Err(e @ super::IqFailure::Error { .. }) => refusal = e.to_string(),
                }
            }
        }
        Err(AdapterError::Permanent(format!(
            "{room} refused to retract {target}: {refusal} (deleting other people's messages \
             needs the moderator role for the bridge in that room)"
        )))
    }

    /// [`Self::send_and_confirm`] for a subject change: its broadcast comes back without our
    /// id (Prosody), so it is also recognised by room and text ([`Inner::confirm_copy`]).
    async fn send_subject(
        &self,
        id: &str,
        room: &str,
        text: &str,
        stanza: Element,
    ) -> Result<Option<Element>, AdapterError> {
        let key = format!("{}\n{text}", room.to_ascii_lowercase());
        self.waiters
            .lock()
            .subjects
            .insert(key.clone(), id.to_owned());
        let outcome = self.send_and_confirm(id, stanza).await;
        self.waiters.lock().subjects.remove(&key);
        outcome
    }

    /// Sends a room message and waits for the room's reflection of it. Without a reflection in
    /// time the message may still have gone out: it counts as sent (a retry could duplicate
    /// it), and its echo, when it comes, records its stanza-id.
    async fn send_and_confirm(
        &self,
        id: &str,
        stanza: Element,
    ) -> Result<Option<Element>, AdapterError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.waiters.lock().reflections.insert(id.to_owned(), tx);
        if let Err(e) = self.send_stanza(stanza).await {
            self.waiters.lock().reflections.remove(id);
            return Err(e);
        }
        let outcome = tokio::time::timeout(self.settings.reflection_timeout, rx).await;
        self.waiters.lock().reflections.remove(id);
        let reflection = match outcome {
            Ok(Ok(reflection)) => reflection,
            Ok(Err(_)) => {
                return Err(AdapterError::transient(
                    "disconnected before the room confirmed the message",
                ));
            }
            Err(_) => {
                tracing::warn!(adapter = %self.id, id, "no reflection from the room in time; counting the message as sent");
                return Ok(None);
            }
        };
        if reflection.attr("type") != Some("error") {
            return Ok(Some(reflection));
        }
        let (condition, text) = muc::error_condition(&reflection)
            .unwrap_or_else(|| ("undefined-condition".into(), None));
        let why = format!(
            "the room refused the message: {condition} {}",
            text.unwrap_or_default()
        );
        match condition.as_str() {
            // Not (or no longer) an occupant: join again on the retry.
            "not-acceptable" | "item-not-found" => {
                if let Some(from) = reflection.attr("to") {
                    self.rooms.lock().left(
                        crate::jid::bare(reflection.attr("from").unwrap_or_default()),
                        from,
                    );
                }
                Err(AdapterError::transient(why))
            }
            "resource-constraint"
            | "policy-violation"
            | "internal-server-error"
            | "remote-server-timeout" => Err(AdapterError::transient(why)),
            _ => Err(AdapterError::Permanent(why)),
        }
    }

    /// Re-hosts an attachment on the server's XEP-0363 upload service, so that XMPP clients can
    /// fetch it: an HTTP(S) link is downloaded directly, anything else (an `mxc://` URI) through
    /// the adapter that received it. On any failure the original URL is kept (and logged).
    async fn rehost(
        &self,
        attachment: Attachment,
        source: &AdapterId,
        speaker: &str,
    ) -> Attachment {
        let Some(service) = self.upload.lock().clone() else {
            return attachment;
        };
        match self.upload_to(&service, &attachment, source, speaker).await {
            Ok(url) => Attachment { url, ..attachment },
            Err(e) => {
                tracing::warn!(adapter = %self.id, url = %attachment.url, error = %e, "cannot re-host an attachment; sending its link");
                attachment
            }
        }
    }

    /// The bytes of `attachment`, which adapter `source` received, up to `limit`: asked of
    /// the source adapter first (its URL may need its credentials or hold ciphertext, a MIMI
    /// file); a plain link it does not serve is fetched as one.
    pub(super) async fn fetch_from_source(
        &self,
        source: &AdapterId,
        attachment: &Attachment,
        limit: u64,
    ) -> Result<crate::upload::Fetched, String> {
        let ctx = self.ctx().map_err(|e| e.to_string())?;
        match ctx.fetch_attachment(source, attachment).await {
            Ok(body) => {
                let content_type = body.mime.clone();
                Ok(crate::upload::Fetched {
                    bytes: body.collect(limit).await.map_err(|e| e.to_string())?,
                    content_type,
                    file_name: None,
                })
            }
            Err(AdapterError::Unsupported(_))
                if attachment.url.starts_with("http://")
                    || attachment.url.starts_with("https://") =>
            {
                let http = self.http.as_ref().ok_or("no HTTP client")?;
                http.fetch(&attachment.url, limit)
                    .await
                    .map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    async fn upload_to(
        &self,
        service: &crate::upload::UploadService,
        attachment: &Attachment,
        source: &AdapterId,
        speaker: &str,
    ) -> Result<String, String> {
        let http = self.http.as_ref().ok_or("no HTTP client")?;
        let limit = service.max_file_size.unwrap_or(100 * 1024 * 1024);
        let fetched = self.fetch_from_source(source, attachment, limit).await?;
        let name = if attachment.name.is_empty() {
            fetched.file_name.clone().unwrap_or_else(|| "file".into())
        } else {
            attachment.name.clone()
        };
        let mime = attachment.mime.clone().or(fetched.content_type.clone());
        let size = fetched.bytes.len() as u64;
        let request =
            crate::upload::slot_request(speaker, &service.jid, "", &name, size, mime.as_deref());
        let answer = self.iq(request).await.map_err(|e| e.to_string())?;
        let slot = crate::upload::parse_slot(&answer).map_err(|e| e.to_string())?;
        http.put(&slot, fetched.bytes, mime.as_deref())
            .await
            .map_err(|e| e.to_string())?;
        Ok(slot.get_url)
    }

    /// Finds the server's upload service (XEP-0363) once per session.
    pub(super) async fn discover_upload(&self) {
        let Some(me) = self.listener_jid() else {
            return;
        };
        let server = match (&self.settings.upload_service, self.component_domain()) {
            (Some(service), _) => {
                self.probe_upload(&me, service).await;
                return;
            }
            (None, Some(domain)) => domain
                .split_once('.')
                .map_or(domain, |(_, parent)| parent)
                .to_owned(),
            (None, None) => crate::jid::bare(&me)
                .rsplit('@')
                .next()
                .unwrap_or_default()
                .to_owned(),
        };
        let items = crate::upload::disco_items_query(&me, &server, "");
        let Ok(items) = self.iq(items).await else {
            return;
        };
        let jids: Vec<String> = items
            .children()
            .flat_map(Element::children)
            .filter_map(|item| item.attr("jid").map(str::to_owned))
            .collect();
        for jid in jids {
            if self.probe_upload(&me, &jid).await {
                return;
            }
        }
        tracing::info!(adapter = %self.id, %server, "no HTTP upload service found; attachments are sent as links");
    }

    async fn probe_upload(&self, me: &str, jid: &str) -> bool {
        let info = crate::upload::disco_info_query(me, jid, "");
        let Ok(info) = self.iq(info).await else {
            return false;
        };
        match crate::upload::parse_upload_service(&info) {
            Some(service) => {
                tracing::info!(adapter = %self.id, service = %service.jid, max = ?service.max_file_size, "HTTP upload service found");
                *self.upload.lock() = Some(service);
                true
            }
            None => false,
        }
    }
}

/// `text` cut to at most `limit` bytes (at a character boundary, ending in an ellipsis) when
/// longer.
fn truncate(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_owned();
    }
    const ELLIPSIS: char = '…';
    let mut end = limit.saturating_sub(ELLIPSIS.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut cut = text[..end].to_owned();
    cut.push(ELLIPSIS);
    cut
}

/// What a join reports: the puppet it made known.
fn puppet_only(room: &str, nick: &str, occupant_id: Option<&str>) -> Delivered {
    Delivered {
        native_id: None,
        puppet: Some(state::identity(room, nick, None, occupant_id)),
    }
}

/// The stanza-id `by` the room in a reflection.
fn stanza_id_by(reflection: &Element, room: &str) -> Option<String> {
    reflection
        .children()
        .find(|c| c.is("stanza-id", translate::ns::SID) && c.attr("by") == Some(room))
        .and_then(|c| c.attr("id"))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::truncate;

    #[test]
    fn truncate_cuts_at_a_character_boundary_within_the_limit() {
        assert_eq!(truncate("short", 10), "short");
        let cut = truncate(&"é".repeat(100), 11);
        assert!(cut.len() <= 11, "{cut}");
        assert_eq!(cut, format!("{}…", "é".repeat(4)));
        assert_eq!(truncate(&"x".repeat(5000), 2048).len(), 2048);
    }
}
