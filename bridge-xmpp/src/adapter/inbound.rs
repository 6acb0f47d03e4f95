//! XMPP → neutral: presences and messages the listener hears, and the room archive.
//!
//! **IDs.** A room message's native ID is the stanza-id the room gave it (XEP-0359, `by` the
//! room): it is what replies, reactions, retractions and moderation point at in a MUC, and it is
//! the archive ID we resume from. Corrections point at the sender's own `id` attribute instead,
//! so for every message we also store `id` → stanza-id, keyed by the sender's identity: a
//! correction can only find a message of its own sender (matterbridge #1396 let anyone edit
//! anyone's message by reusing an id).
//!
//! **Reactions.** XEP-0444 sends a sender's whole set each time; we keep the last set per
//! (message, sender) in the adapter's store and turn the difference into reaction and unreact
//! events.

use std::sync::Arc;

use bridge_core::{
    AdapterContext, AdapterError, EventId, EventKind, InboundEvent, MembershipChange,
    MessageContent, MsgType, RemoteEventId, RemoteSender, RemoteUserId, Role,
};
use xmpp_parsers::minidom::Element;

use super::state::{self, Observed, Occupant};
use super::{Durable, Inner};
use crate::jid;
use crate::muc;
use crate::translate::{self, Content, MessageType, Parsed};

/// Keys in the adapter's store (each part separated by a NUL byte).
pub(super) mod keys {
    /// Archive position of a room: the last stanza-id bridged.
    pub const POSITION: &str = "pos";
    /// stanza-id → `id` attribute and author of a message.
    pub const BY_STANZA_ID: &str = "sid";
    /// (author, `id` attribute) → stanza-id.
    pub const BY_ID: &str = "id";
    /// The last reaction set of a sender on a message.
    pub const REACTIONS: &str = "react";
    /// A room's members as last seen (to bridge departures that happened while away).
    pub const MEMBER: &str = "member";
    /// A room's last subject (rooms repeat it to every joiner).
    pub const SUBJECT: &str = "subject";
    /// Our room message's event ID (its `id`) → the stanza-id the room gave it.
    pub const SENT: &str = "sent";
    /// The occupant-ids our own occupants have had in a room (to know our messages in its
    /// archive after a restart).
    pub const OURS: &str = "ours";
    /// A linked room its owner destroyed (its JID in lower case → JSON: `alternate`,
    /// `reason`): not joined again (a join would create it anew) until the room is linked
    /// again.
    pub const DESTROYED: &str = "destroyed";
    /// (room, nick) told that their encrypted messages cannot be bridged (told once, also
    /// across restarts).
    pub const TOLD_ENCRYPTED: &str = "told-e2e";
    /// (room, user) → the standing last said for a member of the room (none: a member).
    pub const ROLE: &str = "role";
    /// (room, our occupant's JID) → the standing its user has on their side, given to it here
    /// (none: a member); a session's role is given again at each join.
    pub const PUPPET_ROLE: &str = "puppet-role";
    /// (room in lower case, our puppet's JID) → the standing its user has that the room
    /// refused to give (the bridge's occupant lacked the power): given once it has it.
    pub const PUPPET_ROLE_WANTED: &str = "puppet-role-wanted";
    /// (room in lower case, our puppet's JID) → JSON: the nicks it may take, the nick it had
    /// first, and its occupant-id there (`super::puppets`): it should be in the room.
    pub const PUPPET: &str = "puppet";
    /// A conversation begun through a room, by its writer's address at the start
    /// (`room/nick`) → JSON: who wrote and the nick they have now (`super::direct`).
    pub const PM_WITH: &str = "pm-with";
    /// (room, nick) → the address of the conversation begun through the room that the
    /// occupant called so now is in (`super::direct`).
    pub const PM_NOW: &str = "pm-now";

    /// The key of `parts` under `kind`.
    pub fn of(kind: &str, parts: &[&str]) -> Vec<u8> {
        let mut key = kind.as_bytes().to_vec();
        for part in parts {
            key.push(0);
            key.extend_from_slice(part.as_bytes());
        }
        key
    }
}

/// Where a message was heard.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Heard {
    /// Live, by the listener.
    Live,
    /// From the room archive.
    Archive,
}

impl Inner {
    pub(super) fn handle_presence(self: &Arc<Self>, presence: &Element, ctx: &AdapterContext) {
        let to = presence.attr("to").unwrap_or_default().to_owned();
        let from = presence.attr("from").unwrap_or_default();
        if presence.attr("type") == Some("error") {
            let error = muc::error_condition(presence)
                .unwrap_or_else(|| ("undefined-condition".into(), None));
            let key = (to, jid::bare(from).to_owned());
            match self.waiters.lock().joins.remove(&key) {
                Some(waiter) => {
                    let _ = waiter.send(Err(error));
                }
                None => tracing::info!(from, condition = %error.0, "presence error from a room"),
            }
            return;
        }
        let Some(p) = muc::occupant_presence(presence) else {
            return;
        };
        if p.self_presence {
            if p.available {
                self.rooms.lock().joined(&p.room, &to, &p);
                if self.listener_jid().as_deref() == Some(to.as_str())
                    && matches!(p.affiliation.as_deref(), Some("admin" | "owner"))
                {
                    self.give_wanted_roles(ctx, &p.room);
                }
                if let Some(occupant_id) = &p.occupant_id {
                    self.put(ctx, &keys::of(keys::OURS, &[&p.room, occupant_id]), b"");
                }
                if let Some(waiter) = self
                    .waiters
                    .lock()
                    .joins
                    .remove(&(to.clone(), p.room.clone()))
                {
                    let _ = waiter.send(Ok(p.clone()));
                }
            } else {
                if p.kicked || p.banned {
                    tracing::warn!(room = %p.room, occupant = %to, reason = ?p.status, "removed from the room");
                }
                if let Some(destroyed) = &p.destroyed
                    && self.listener_jid().as_deref() == Some(to.as_str())
                {
                    self.room_destroyed(ctx, &p.room, destroyed);
                }
                // A nick change (status 303) is not a departure: the new nick follows.
                if p.new_nick.is_none() {
                    self.rooms.lock().left(&p.room, &to);
                    self.occupant_removed(&p.room, &to);
                    if self.listener_jid().as_deref() != Some(to.as_str()) {
                        self.puppet_moderated(ctx, &p, &to);
                        self.puppet_removed(&p, &to);
                    }
                }
            }
        }
        if self.listener_jid().as_deref() != Some(to.as_str()) {
            return;
        }
        // An occupant of ours from an earlier session, still in the room: ours again, not
        // someone new.
        if !p.self_presence
            && !(self.rooms.lock()).is_ours(&p.room, &p.nick, p.occupant_id.as_deref())
            && self.earlier_occupant(ctx, &p).is_some()
        {
            tracing::debug!(adapter = %self.id, room = %p.room, nick = %p.nick, "an occupant of ours from an earlier session");
            return;
        }
        let observed = self.rooms.lock().observe(&p);
        if p.self_presence && p.available {
            self.reconcile_members(&p.room, ctx);
            return;
        }
        if p.available
            && let Some(hash) = p.photo.clone()
            && !(self.rooms.lock()).is_ours(&p.room, &p.nick, p.occupant_id.as_deref())
            && let Some(user) =
                (self.rooms.lock().occupant(&p.room, &p.nick)).map(|o| o.user.clone())
        {
            self.peer_photo(ctx, &p.room, &p.nick, user, hash);
        }
        let submit = |occupant: &Occupant, nick: &str, kind| {
            let event = event(&p.room, None, occupant.user.clone(), nick, None, kind);
            self.submit(ctx, event);
        };
        match observed {
            Observed::Nothing => {}
            Observed::Joined(occupant, nick) => {
                let key = keys::of(keys::MEMBER, &[&p.room, occupant.user.as_str()]);
                let known = ctx.store().get(&key).ok().flatten();
                if known.as_deref() != Some(nick.as_bytes()) {
                    self.put(ctx, &key, nick.as_bytes());
                    if known.is_none() {
                        submit(&occupant, &nick, membership(MembershipChange::Join, None));
                    } else {
                        submit(&occupant, &nick, profile(&nick));
                    }
                }
            }
            Observed::Left(occupant, nick, change, reason) => {
                self.through_room_left(ctx, &p.room, &nick);
                let key = keys::of(keys::MEMBER, &[&p.room, occupant.user.as_str()]);
                if let Err(e) = ctx.store().delete(&key) {
                    tracing::warn!(error = %e, "cannot forget a member");
                }
                submit(&occupant, &nick, membership(change, reason));
            }
            Observed::Renamed(occupant, new_nick) => {
                self.through_room_renamed(ctx, &p.room, &p.nick, &new_nick);
                let key = keys::of(keys::MEMBER, &[&p.room, occupant.user.as_str()]);
                self.put(ctx, &key, new_nick.as_bytes());
                submit(&occupant, &new_nick, profile(&new_nick));
            }
        }
        if p.available {
            self.note_standing(ctx, &p);
        }
    }

    /// A member's standing ([`muc::standing`]) as this presence gives it: said to the core
    /// when it differs from what was last said (a member is not said at their join).
    fn note_standing(&self, ctx: &AdapterContext, p: &muc::OccupantPresence) {
        let Some(role) = muc::standing(p.affiliation.as_deref(), p.role.as_deref()) else {
            return;
        };
        let user = {
            let rooms = self.rooms.lock();
            if rooms.is_ours(&p.room, &p.nick, p.occupant_id.as_deref()) {
                return;
            }
            match rooms.occupant(&p.room, &p.nick) {
                Some(occupant) => occupant.user.clone(),
                None => return,
            }
        };
        let key = keys::of(keys::ROLE, &[&p.room, user.as_str()]);
        if stored_role(ctx.store(), &key).unwrap_or(Role::Member) == role {
            return;
        }
        if let Err(e) = store_role(ctx.store(), &key, role) {
            tracing::warn!(adapter = %self.id, error = %e, "cannot write to the store");
        }
        let kind = EventKind::Role { role };
        self.submit(ctx, event(&p.room, None, user, &p.nick, None, kind));
    }

    /// After (re)joining: members we knew who are gone now left while we were away.
    fn reconcile_members(&self, room: &str, ctx: &AdapterContext) {
        let present: Vec<String> = self
            .rooms
            .lock()
            .occupants(room)
            .into_iter()
            .map(|o| o.user.as_str().to_owned())
            .collect();
        let prefix = keys::of(keys::MEMBER, &[room, ""]);
        let known = match ctx.store().scan(&prefix, usize::MAX) {
            Ok(known) => known,
            Err(e) => {
                tracing::warn!(room, error = %e, "cannot read the known members");
                return;
            }
        };
        for (key, nick) in known {
            let user = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
            if present.contains(&user) {
                continue;
            }
            let _ = ctx.store().delete(&key);
            let nick = String::from_utf8_lossy(&nick).into_owned();
            self.through_room_left(ctx, room, &nick);
            let kind = membership(MembershipChange::Leave, None);
            self.submit(
                ctx,
                event(room, None, RemoteUserId::new(user), &nick, None, kind),
            );
        }
    }

    fn put(&self, ctx: &AdapterContext, key: &[u8], value: &[u8]) {
        if let Err(e) = ctx.store().put(key, value) {
            tracing::warn!(adapter = %self.id, error = %e, "cannot write to the store");
        }
    }

    /// A linked room was destroyed by its owner (XEP-0045 §10.9): remembered, so that no
    /// occupant of ours joins it again (which would create it anew, undoing the owner's
    /// decision), and said in the linked rooms by the room itself as a notice. An alternate
    /// venue is named, not followed: linking it is an admin's decision.
    fn room_destroyed(&self, ctx: &AdapterContext, room: &str, destroyed: &muc::Destroyed) {
        tracing::warn!(adapter = %self.id, room, alternate = ?destroyed.alternate,
            reason = ?destroyed.reason, "a linked room was destroyed; it is not joined again until linked again");
        let value = serde_json::json!({
            "alternate": destroyed.alternate,
            "reason": destroyed.reason,
        });
        self.put(ctx, &destroyed_key(room), value.to_string().as_bytes());
        let mut text = format!("The XMPP room {room} was destroyed by its owner");
        if let Some(reason) = &destroyed.reason {
            text.push_str(&format!(" ({reason})"));
        }
        text.push_str("; messages no longer reach it.");
        if let Some(alternate) = &destroyed.alternate {
            text.push_str(&format!(
                " Its owner points to {alternate} instead: an admin can link that room."
            ));
        }
        let kind = EventKind::Message {
            content: MessageContent {
                msgtype: MsgType::Notice,
                ..MessageContent::text(text)
            },
            reply_to: None,
            thread: None,
        };
        let event = event(room, None, RemoteUserId::new(room), room, None, kind);
        self.submit(ctx, event);
    }

    /// Why `room` may not be joined: its owner destroyed it (see [`Inner::room_destroyed`]).
    pub(super) fn destroyed_refusal(&self, room: &str) -> Option<AdapterError> {
        let ctx = self.ctx().ok()?;
        let stored = ctx.store().get(&destroyed_key(room)).ok().flatten()?;
        let reason = serde_json::from_slice::<serde_json::Value>(&stored)
            .ok()
            .and_then(|v| v["reason"].as_str().map(|r| format!(" ({r})")))
            .unwrap_or_default();
        Some(AdapterError::Permanent(format!(
            "the XMPP room {room} was destroyed by its owner{reason}; unlink it and link it again to resume"
        )))
    }

    /// Forgets that `room` was destroyed: it is being linked (again) by an admin.
    pub(super) fn forget_destroyed(&self, room: &str) {
        if let Ok(ctx) = self.ctx()
            && let Err(e) = ctx.store().delete(&destroyed_key(room))
        {
            tracing::warn!(adapter = %self.id, error = %e, "cannot write to the store");
        }
    }

    /// Hands an event to the core without tracking its durability (presence-derived events).
    pub(super) fn submit(&self, ctx: &AdapterContext, mut event: InboundEvent) {
        self.with_peer_avatar(ctx, &mut event.sender);
        if let Err(e) = ctx.enqueue(event) {
            tracing::warn!(adapter = %self.id, error = %e, "event not accepted");
        }
    }

    pub(super) fn handle_message(
        self: &Arc<Self>,
        stanza: &Element,
        ctx: &AdapterContext,
        durable: &mut Durable,
    ) {
        if self.route_archive_result(stanza) {
            return;
        }
        // A room's copy for one of our puppets only confirms that puppet's own send: read its
        // IDs, do not translate it (the listener's copy is the one that is bridged).
        let listener = self.listener_jid();
        if stanza.attr("type") == Some("groupchat") && stanza.attr("to") != listener.as_deref() {
            self.confirm_copy(stanza, ctx);
            return;
        }
        let parsed = match translate::parse_message(stanza, &self.limits()) {
            Ok(parsed) => parsed,
            Err(e) => {
                self.count_malformed();
                let from = stanza.attr("from").unwrap_or_default();
                tracing::warn!(adapter = %self.id, from, error = %e, "message refused");
                return;
            }
        };
        let from = parsed.from.clone().unwrap_or_default();
        let (room, nick) = jid::split(&from);
        match parsed.msg_type {
            MessageType::Error => {
                let Some(id) = parsed.id.as_ref() else {
                    return;
                };
                if let Some(waiter) = self.waiters.lock().reflections.remove(id) {
                    let _ = waiter.send(stanza.clone());
                }
                let bounced = self.unconfirmed.lock().remove(id);
                if let Some(event) = bounced {
                    self.refused(event, stanza);
                }
                return;
            }
            MessageType::Groupchat => {}
            // A one-to-one message to a puppet; or a chat to the bridge's own address (a
            // command: `chat` only, since rooms send invitations and notices to it as
            // `normal` messages).
            MessageType::Chat | MessageType::Normal
                if parsed.to.as_deref().is_some_and(|to| {
                    self.counterpart_of(to).is_some()
                        || parsed.msg_type == MessageType::Chat && self.is_bridge_address(to)
                }) =>
            {
                if let Some(direct) = self.direct.lock().as_ref() {
                    let _ = direct.send(stanza.clone());
                }
                return;
            }
            _ => {
                self.refuse_direct_message(stanza);
                return;
            }
        }
        let ours = nick.is_some_and(|n| {
            self.rooms
                .lock()
                .is_ours(room, n, parsed.occupant_id.as_deref())
        });
        if ours {
            // The listener's copy (in client mode, the only one) may be the first to come back.
            self.confirm_copy(stanza, ctx);
        }
        if let Some(held) = self
            .catching_up
            .lock()
            .1
            .get_mut(&room.to_ascii_lowercase())
        {
            // The room has not caught up from its archive yet: this comes after that.
            held.push(stanza.clone());
            return;
        }
        if let (Content::Encrypted { method }, Some(nick), false) = (&parsed.content, nick, ours) {
            self.tell_encrypted(room, nick, method);
        }
        let position = parsed.stanza_id_by(room).map(str::to_owned);
        let events = self.translate_groupchat(&parsed, room, nick, ours, Heard::Live, ctx);
        let mut last = None;
        for event in events {
            match ctx.enqueue(event) {
                Ok(pending) => last = Some(pending),
                Err(e) => {
                    tracing::warn!(adapter = %self.id, error = %e, "message not accepted");
                    return;
                }
            }
        }
        let room = room.to_owned();
        if let (Some(pending), Some(position)) = (last, position) {
            durable.push(Box::pin(async move {
                pending.durable().await;
                Some((room, position))
            }));
        }
    }

    /// An occupant sent an end-to-end encrypted message, which the bridge cannot read: rather
    /// than drop it silently, the bridge's occupant tells the room, addressing the sender (once
    /// per room and occupant, remembered in the store; sent in the background, logged if it
    /// fails).
    fn tell_encrypted(self: &Arc<Self>, room: &str, nick: &str, method: &str) {
        let room_key = room.to_ascii_lowercase();
        let first = self
            .told_encrypted
            .lock()
            .insert((room_key.clone(), nick.to_owned()));
        if !first {
            return;
        }
        if let Ok(ctx) = self.ctx() {
            let key = keys::of(keys::TOLD_ENCRYPTED, &[&room_key, nick]);
            if ctx.store().get(&key).ok().flatten().is_some() {
                // Told before a restart.
                return;
            }
            self.put(&ctx, &key, b"");
        }
        tracing::warn!(adapter = %self.id, room, nick, method,
            "end-to-end encrypted message: cannot be bridged; telling the room");
        let text = format!(
            "{nick}: your message was end-to-end encrypted ({method}), and the bridge cannot \
             read encrypted messages: it did not reach the linked rooms on other networks. \
             Messages sent without encryption do."
        );
        let (this, room) = (self.clone(), bridge_core::RemoteRoomId::new(room));
        tokio::spawn(async move {
            if let Err(e) = this.notice(&room, &text).await {
                tracing::warn!(adapter = %this.id, %room, error = %e, "notice not sent");
            }
        });
    }

    /// A one-to-one message that reaches no puppet (the bridge itself, a MUC private message,
    /// client mode): say so to the sender rather than dropping it silently.
    fn refuse_direct_message(&self, stanza: &Element) {
        let has_body = stanza.get_child("body", crate::wire::NS_CLIENT).is_some();
        if has_body && stanza.attr("type") != Some("headline") {
            let from = stanza.attr("from").unwrap_or_default();
            tracing::info!(adapter = %self.id, from, "direct message to no remote user; refused");
            self.bounce(stanza, "This address does not lead to anyone: write to a room, or to a bridged user's address.");
        }
    }

    pub(super) fn limits(&self) -> translate::Limits {
        translate::Limits {
            max_body_bytes: self.settings.max_body_bytes,
            ..translate::Limits::default()
        }
    }

    /// The neutral events of one room message (live or archived).
    pub(super) fn translate_groupchat(
        &self,
        parsed: &Parsed,
        room: &str,
        nick: Option<&str>,
        ours: bool,
        heard: Heard,
        ctx: &AdapterContext,
    ) -> Vec<InboundEvent> {
        let stanza_id = parsed.stanza_id_by(room);
        let native = stanza_id.or(parsed.id.as_deref()).map(RemoteEventId::new);
        let our_id = parsed
            .origin_id
            .as_deref()
            .or(parsed.id.as_deref())
            .and_then(|id| id.parse::<EventId>().ok());
        // In the archive (after a restart the room state is gone) our messages are known by the
        // occupant-ids our occupants had; an `id` alone could be copied by anyone. Rooms
        // without occupant-ids leave only the `id`.
        let archived_ours = heard == Heard::Archive
            && our_id.is_some()
            && parsed.occupant_id.as_deref().is_none_or(|occupant| {
                let key = keys::of(keys::OURS, &[room, occupant]);
                ctx.store().get(&key).ok().flatten().is_some()
            });
        if ours || archived_ours {
            // The reflection of something we sent: the core records its stanza-id.
            let Some(original) = our_id else {
                return Vec::new();
            };
            // Live, the first copy recorded it already (`handle_message`); from the archive,
            // this may be the first we hear of it.
            if let (Heard::Archive, Some(stanza_id), Some(id), Some(nick)) =
                (heard, stanza_id, &parsed.id, nick)
            {
                self.record_sent(
                    ctx,
                    room,
                    nick,
                    parsed.occupant_id.as_deref(),
                    id,
                    stanza_id,
                );
            }
            // Only `native_id` and `echo_of` matter to the core for an echo.
            let mut echo = event(
                room,
                native,
                RemoteUserId::new(room),
                "",
                parsed.delay_ms,
                profile(""),
            );
            echo.echo_of = Some(original);
            return vec![echo];
        }
        let occupant = nick.and_then(|n| self.rooms.lock().occupant(room, n).cloned());
        let user = match (&occupant, nick) {
            (Some(o), _) => o.user.clone(),
            (None, Some(n)) => state::identity(room, n, None, parsed.occupant_id.as_deref()),
            (None, None) => RemoteUserId::new(room),
        };
        let name = nick.unwrap_or(room);
        let ts = parsed.delay_ms;
        // What only the author may do points at the author's own `id`; never trusted from a
        // nick-only identity.
        let authored = |what: &str, id: &str| {
            if state::is_nick_identity(&user) {
                tracing::warn!(
                    room,
                    nick = name,
                    "{what} refused: the room shows no stable identity for its sender"
                );
                None
            } else {
                Some(self.resolve(ctx, room, Some(&user), id))
            }
        };
        let mut events = Vec::new();
        match &parsed.content {
            Content::None => {}
            Content::Message { content, reply, .. } => {
                let reply_to = reply.as_ref().map(|r| {
                    let author = r.to.as_deref().and_then(|to| {
                        let (_, reply_nick) = jid::split(to);
                        reply_nick.and_then(|n| {
                            self.rooms.lock().occupant(room, n).map(|o| o.user.clone())
                        })
                    });
                    self.resolve(ctx, room, author.as_ref(), &r.id)
                });
                if let (Some(stanza_id), Some(id)) = (stanza_id, &parsed.id) {
                    // Corrections by this sender will point at `id`.
                    let key = keys::of(keys::BY_ID, &[room, user.as_str(), id]);
                    self.put(ctx, &key, stanza_id.as_bytes());
                }
                let kind = EventKind::Message {
                    content: content.clone(),
                    reply_to,
                    thread: None,
                };
                events.push(event(room, native.clone(), user.clone(), name, ts, kind));
            }
            Content::Correction { replace_id, new } => {
                if let Some(target) = authored("correction", replace_id) {
                    let kind = EventKind::Edit {
                        target,
                        new: new.clone(),
                    };
                    events.push(event(room, native.clone(), user.clone(), name, ts, kind));
                }
            }
            Content::Reactions { to_id, keys } => {
                let target = self.resolve(ctx, room, None, to_id);
                let native = native.as_ref();
                events.extend(
                    self.reconcile_reactions(ctx, room, &target, &user, name, keys, native, ts),
                );
            }
            Content::Retraction { id } => {
                if let Some(target) = authored("retraction", id) {
                    let kind = EventKind::Redaction {
                        target,
                        reason: None,
                    };
                    events.push(event(room, native.clone(), user.clone(), name, ts, kind));
                }
            }
            Content::Moderation { id, by, reason } => {
                // Only the room itself may announce a moderation.
                if nick.is_none() {
                    let by_nick = by.as_deref().and_then(|b| jid::split(b).1);
                    let moderator = by_nick
                        .and_then(|n| self.rooms.lock().occupant(room, n).map(|o| o.user.clone()))
                        .unwrap_or_else(|| {
                            RemoteUserId::new(by.clone().unwrap_or_else(|| room.to_owned()))
                        });
                    let kind = EventKind::Redaction {
                        target: RemoteEventId::new(id.clone()),
                        reason: reason.clone(),
                    };
                    let name = by_nick.unwrap_or(room);
                    let mut ev = event(room, native.clone(), moderator, name, ts, kind);
                    ev.by_moderator = true;
                    events.push(ev);
                }
            }
            Content::Subject(text) => {
                let key = keys::of(keys::SUBJECT, &[room]);
                let last = ctx.store().get(&key).ok().flatten();
                // Rooms send their subject to every joiner; an empty one on the first join
                // is no news either.
                let first_and_empty = last.is_none() && text.is_empty();
                if first_and_empty {
                    self.put(ctx, &key, b"");
                } else if last.as_deref() != Some(text.as_bytes()) {
                    self.put(ctx, &key, text.as_bytes());
                    let kind = EventKind::Topic { text: text.clone() };
                    events.push(event(room, None, user.clone(), name, ts, kind));
                }
            }
            Content::Encrypted { method } => {
                // Its body is only the sender's fallback text (live, the sender is told:
                // `tell_encrypted`).
                tracing::debug!(room, nick = name, method, "encrypted message not bridged");
            }
            Content::Custom {
                event_type,
                content,
            } => {
                let kind = EventKind::Custom {
                    event_type: event_type.clone(),
                    content: content.clone(),
                };
                events.push(event(room, native.clone(), user.clone(), name, ts, kind));
            }
        }
        if heard == Heard::Live {
            if let Some(active) = parsed.typing() {
                events.push(event(
                    room,
                    None,
                    user.clone(),
                    name,
                    ts,
                    EventKind::Typing { active },
                ));
            }
            if let Some(displayed) = &parsed.displayed {
                let up_to = self.resolve(ctx, room, None, displayed);
                events.push(event(
                    room,
                    None,
                    user,
                    name,
                    ts,
                    EventKind::ReadMarker { up_to },
                ));
            }
        }
        for event in &mut events {
            self.with_peer_avatar(ctx, &mut event.sender);
        }
        events
    }

    /// A sender's whole new reaction set on `target` (XEP-0444) as the reactions added and
    /// removed since the set we stored last time.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn reconcile_reactions(
        &self,
        ctx: &AdapterContext,
        room: &str,
        target: &RemoteEventId,
        user: &RemoteUserId,
        name: &str,
        keys: &[String],
        native: Option<&RemoteEventId>,
        ts: Option<u64>,
    ) -> Vec<InboundEvent> {
        let store_key = keys::of(keys::REACTIONS, &[room, target.as_str(), user.as_str()]);
        let before = stored_reactions(ctx, &store_key);
        // Each reaction event needs a native ID of its own: the message's, with the change.
        let reaction_id = |sign: char, key: &str| {
            native.map(|n| RemoteEventId::new(format!("{}#{sign}{key}", n.as_str())))
        };
        let mut events = Vec::new();
        for key in keys.iter().filter(|k| !before.contains(k)) {
            let kind = EventKind::Reaction {
                target: target.clone(),
                key: key.clone(),
            };
            events.push(event(
                room,
                reaction_id('+', key),
                user.clone(),
                name,
                ts,
                kind,
            ));
        }
        for key in before.iter().filter(|k| !keys.contains(k)) {
            let kind = EventKind::Unreact {
                target: target.clone(),
                key: key.clone(),
                reaction: None,
            };
            events.push(event(
                room,
                reaction_id('-', key),
                user.clone(),
                name,
                ts,
                kind,
            ));
        }
        let value = serde_json::to_vec(keys).unwrap_or_default();
        self.put(ctx, &store_key, &value);
        events
    }

    /// Records the stanza-id the room gave one of our messages: for references to it (its event
    /// ID → stanza-id) and for corrections of it (`id` ⇄ stanza-id under the puppet's identity).
    fn record_sent(
        &self,
        ctx: &AdapterContext,
        room: &str,
        nick: &str,
        occupant_id: Option<&str>,
        id: &str,
        stanza_id: &str,
    ) {
        let puppet = state::identity(room, nick, None, occupant_id);
        let sent = keys::of(keys::SENT, &[room, id]);
        self.remember_with(ctx, room, stanza_id, &puppet, id, Some(&sent));
    }

    /// The first copy of one of our room messages: the reflection a send waits for, or the
    /// confirmation of a pipelined message, whose stanza-id is recorded before anyone waiting
    /// for it in `resolve_refs` looks.
    fn confirm_copy(&self, stanza: &Element, ctx: &AdapterContext) {
        let Some(id) = stanza.attr("id") else {
            // A subject change of ours, broadcast without its id (Prosody): the send waiting
            // for it is found by room and text.
            let subject = stanza.get_child("subject", crate::wire::NS_CLIENT);
            if let (Some(subject), Some(from)) = (subject, stanza.attr("from")) {
                let key = format!(
                    "{}\n{}",
                    jid::bare(from).to_ascii_lowercase(),
                    subject.text()
                );
                let mut waiters = self.waiters.lock();
                if let Some(id) = waiters.subjects.remove(&key)
                    && let Some(waiter) = waiters.reflections.remove(&id)
                {
                    let _ = waiter.send(stanza.clone());
                }
            }
            return;
        };
        if let Some(waiter) = self.waiters.lock().reflections.remove(id) {
            let _ = waiter.send(stanza.clone());
        }
        if !self.unconfirmed.lock().contains_key(id) {
            return;
        }
        let from = stanza.attr("from").unwrap_or_default();
        let (room, Some(nick)) = jid::split(from) else {
            return;
        };
        let stanza_id = stanza
            .children()
            .find(|c| c.is("stanza-id", translate::ns::SID) && c.attr("by") == Some(room))
            .and_then(|c| c.attr("id"));
        let occupant_id = stanza
            .get_child("occupant-id", translate::ns::OCCUPANT_ID)
            .and_then(|c| c.attr("id"));
        if let Some(stanza_id) = stanza_id {
            self.record_sent(ctx, room, nick, occupant_id, id, stanza_id);
        }
        self.unconfirmed.lock().remove(id);
    }

    /// Records one of our messages' `id` ⇄ stanza-id under the puppet's identity (for
    /// corrections of it, and to know it is ours), and `also` → stanza-id, in one write.
    fn remember_with(
        &self,
        ctx: &AdapterContext,
        room: &str,
        stanza_id: &str,
        author: &RemoteUserId,
        id: &str,
        also: Option<&[u8]>,
    ) {
        let by_id = keys::of(keys::BY_ID, &[room, author.as_str(), id]);
        let by_stanza_id = keys::of(keys::BY_STANZA_ID, &[room, stanza_id]);
        let mut entries: Vec<(&[u8], &[u8])> = vec![
            (&by_id, stanza_id.as_bytes()),
            (&by_stanza_id, id.as_bytes()),
        ];
        entries.extend(also.map(|key| (key, stanza_id.as_bytes())));
        if let Err(e) = ctx.store().put_all(&entries) {
            tracing::warn!(adapter = %self.id, error = %e, "cannot write to the store");
        }
    }

    /// The native ID (stanza-id) a reference points at: `id` itself, unless it is the `id`
    /// attribute of a message by `author` that we know the stanza-id of.
    fn resolve(
        &self,
        ctx: &AdapterContext,
        room: &str,
        author: Option<&RemoteUserId>,
        id: &str,
    ) -> RemoteEventId {
        let mapped = author.and_then(|author| {
            let key = keys::of(keys::BY_ID, &[room, author.as_str(), id]);
            ctx.store().get(&key).ok().flatten()
        });
        match mapped {
            Some(stanza_id) => RemoteEventId::new(String::from_utf8_lossy(&stanza_id).into_owned()),
            None => RemoteEventId::new(id),
        }
    }

    /// Writes the archive positions of rooms whose messages became durable.
    pub(super) fn flush_positions(&self, ctx: &AdapterContext) {
        let positions = std::mem::take(&mut *self.positions.lock());
        for (room, position) in positions {
            self.put(
                ctx,
                &keys::of(keys::POSITION, &[&room]),
                position.as_bytes(),
            );
        }
    }

    /// A room's stored archive position.
    pub(super) fn position(&self, ctx: &AdapterContext, room: &str) -> Option<String> {
        let stored = ctx
            .store()
            .get(&keys::of(keys::POSITION, &[room]))
            .ok()
            .flatten()?;
        Some(String::from_utf8_lossy(&stored).into_owned())
    }
}

/// The reaction set stored under `key` (empty when none or unreadable).
pub(super) fn stored_reactions(ctx: &AdapterContext, key: &[u8]) -> Vec<String> {
    ctx.store()
        .get(key)
        .ok()
        .flatten()
        .and_then(|v| serde_json::from_slice(&v).ok())
        .unwrap_or_default()
}

fn membership(change: MembershipChange, reason: Option<String>) -> EventKind<RemoteEventId> {
    EventKind::Membership { change, reason }
}

fn profile(nick: &str) -> EventKind<RemoteEventId> {
    EventKind::Profile {
        display_name: Some(nick.to_owned()),
        avatar: None,
    }
}

/// An inbound event from `user`, shown as `name`.
/// The standing stored under `key` (nothing stored, or unreadable: a member).
pub(super) fn stored_role(
    store: &bridge_core::AdapterStore,
    key: &[u8],
) -> Result<Role, bridge_core::StoreError> {
    Ok(store
        .get(key)?
        .and_then(|name| Role::parse(std::str::from_utf8(&name).ok()?))
        .unwrap_or(Role::Member))
}

/// Stores `role` under `key` (a member: nothing).
pub(super) fn store_role(
    store: &bridge_core::AdapterStore,
    key: &[u8],
    role: Role,
) -> Result<(), bridge_core::StoreError> {
    if role == Role::Member {
        store.delete(key)
    } else {
        store.put(key, role.name().as_bytes())
    }
}

/// Where a destroyed room is remembered (JIDs compare without case).
fn destroyed_key(room: &str) -> Vec<u8> {
    keys::of(keys::DESTROYED, &[&room.to_ascii_lowercase()])
}

pub(super) fn event(
    room: &str,
    native: Option<RemoteEventId>,
    user: RemoteUserId,
    name: &str,
    ts: Option<u64>,
    kind: EventKind<RemoteEventId>,
) -> InboundEvent {
    let mut event = InboundEvent::new(room, native, user, kind);
    event.sender = RemoteSender {
        id: event.sender.id,
        display_name: Some(name.to_owned()).filter(|n| !n.is_empty()),
        avatar: None,
    };
    event.ts = ts;
    event
}
