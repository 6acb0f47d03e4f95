//! Direct messages (component mode): an XMPP user writes to a puppet's JID, and the remote user
//! the puppet stands for gets it in a one-to-one conversation on their network, and back.
//!
//! The native room of such a conversation is `"<user's bare JID> <puppet's bare JID>"` (a space
//! cannot occur in a bare JID, so it never looks like a MUC). A private message through a room
//! (to the puppet's occupant, `room/nick`) comes from the writer's occupant address instead,
//! which is then the user (`"room/nick <puppet's bare JID>"`): the answers are sent to it as
//! private messages from the puppet's occupant, which the room passes on. The first message asks the core
//! for the conversation's neutral room ([`AdapterContext::direct_room`]), which has the other
//! network open its side. Messages are `type='chat'`; their native ID is their `id` attribute,
//! which is also what XEP-0308 corrections, XEP-0444 reactions and XEP-0424 retractions point at
//! in one-to-one chats.
//!
//! Direct messages are handled by one task of their own, in order, so that opening a
//! conversation on the other network (which may take a while) never holds up the rooms.
//!
//! A conversation begun through a room keeps its first address as its name, and follows the
//! person who wrote ([`ThroughRoom`]): answers go to their nick now (after a nick change, to the
//! new one), what they write from a new nick stays in the same conversation, and once they
//! leave the room nothing goes to whoever takes the nick after them.

use std::sync::Arc;

use bridge_core::{
    AdapterContext, AdapterError, Delivered, EventKind, InboundEvent, OutboundEvent, RemoteEventId,
    RemoteRoomId, RemoteUserId, Sender,
};
use tokio::sync::mpsc;
use xmpp_parsers::minidom::Element;

use super::Inner;
use super::inbound::keys;
use super::state;
use crate::jid;
use crate::translate::{self, ChatState, Content, Envelope, MessageType, OutReply, Parsed};

/// The native room of the conversation between `user` and `puppet` (both bare JIDs).
pub(super) fn room_of(user: &str, puppet: &str) -> String {
    format!("{user} {puppet}")
}

/// `(user, puppet)` of a direct conversation's native room; `None` for a MUC.
pub(super) fn parts(room: &str) -> Option<(&str, &str)> {
    room.split_once(' ')
}

/// Whom a conversation begun through a room is with, stored under its first address
/// (`room/nick`, the user part of its native room).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct ThroughRoom {
    /// Their identity in the room ([`state::identity`]).
    who: String,
    /// Their nick now; `None` once they left the room.
    nick: Option<String>,
}

impl ThroughRoom {
    fn read(ctx: &AdapterContext, address: &str) -> Option<Self> {
        let bytes = ctx
            .store()
            .get(&keys::of(keys::PM_WITH, &[address]))
            .ok()??;
        serde_json::from_slice(&bytes).ok()
    }

    fn write(&self, ctx: &AdapterContext, address: &str) {
        let key = keys::of(keys::PM_WITH, &[address]);
        let value = serde_json::to_vec(self).unwrap_or_default();
        if let Err(e) = ctx.store().put(&key, &value) {
            tracing::warn!(%address, error = %e, "cannot record a conversation through a room");
        }
    }
}

impl Inner {
    /// The remote user a puppet JID (`escaped-adapter.user@domain`) stands for.
    pub(super) fn counterpart_of(&self, puppet: &str) -> Option<Sender> {
        let domain = self.component_domain()?;
        let (local, puppet_domain) = jid::bare(puppet).split_once('@')?;
        if puppet_domain != domain || local == "bridge" {
            return None;
        }
        let id = jid::unescape_localpart(local);
        let (adapter, user) = id.split_once('.')?;
        Some(Sender {
            adapter: bridge_core::AdapterId::new(adapter),
            user: RemoteUserId::new(user),
            display_name: None,
            avatar: None,
        })
    }

    /// True for the bridge's own address (`bridge@DOMAIN`, or the component's bare domain):
    /// what is written there is for the bridge itself (admin commands).
    pub(super) fn is_bridge_address(&self, to: &str) -> bool {
        let Some(domain) = self.component_domain() else {
            return false;
        };
        let to = jid::bare(to);
        to.eq_ignore_ascii_case(domain)
            || to
                .split_once('@')
                .is_some_and(|(local, d)| local == "bridge" && d.eq_ignore_ascii_case(domain))
    }

    /// The task that takes direct messages to puppets, in order.
    pub(super) fn spawn_direct_task(
        self: &Arc<Self>,
        ctx: AdapterContext,
    ) -> mpsc::UnboundedSender<Element> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Element>();
        let this = self.clone();
        tokio::spawn(async move {
            while let Some(stanza) = rx.recv().await {
                this.direct_message(&stanza, &ctx).await;
            }
        });
        tx
    }

    async fn direct_message(&self, stanza: &Element, ctx: &AdapterContext) {
        let parsed = match translate::parse_message(stanza, &self.limits()) {
            Ok(parsed) => parsed,
            Err(e) => {
                self.count_malformed();
                tracing::warn!(adapter = %self.id, error = %e, "direct message refused");
                return;
            }
        };
        let (Some(from), Some(to)) = (parsed.from.as_deref(), parsed.to.as_deref()) else {
            return;
        };
        if let Content::Encrypted { method } = &parsed.content {
            // Its body is only the sender's fallback: tell the sender instead of passing it on.
            tracing::info!(adapter = %self.id, %from, method, "encrypted direct message refused");
            self.bounce(
                stanza,
                &format!(
                    "This message was end-to-end encrypted ({method}), and the bridge cannot \
                     read encrypted messages. Send it without encryption."
                ),
            );
            return;
        }
        if self.is_bridge_address(to) {
            self.to_bridge(&parsed, from, ctx).await;
            return;
        }
        let Some(counterpart) = self.counterpart_of(to) else {
            return;
        };
        // A private message through a room (XEP-0045 §7.5) comes from the occupant's address
        // in the room, `room/nick`, whatever account is behind it (the room may not show it):
        // that address is the user, and the answers go back through the room to it.
        let (user, name) = match self.room_occupant(from, ctx) {
            Some(nick) => (self.through_room(ctx, from, nick), Some(nick)),
            None => (jid::bare(from).to_owned(), None),
        };
        let room = RemoteRoomId::new(room_of(&user, jid::bare(to)));
        let sender = RemoteUserId::new(user);
        let mut events = self.translate_direct(&parsed, &room, &sender, ctx);
        if events.is_empty() {
            return;
        }
        for event in &mut events {
            event.sender.display_name = name.map(str::to_owned);
        }
        if let Err(e) = ctx.direct_room(&room, &sender, name, &counterpart).await {
            tracing::warn!(adapter = %self.id, %room, error = %e, "cannot open the direct conversation");
            self.bounce(stanza, &format!("This message could not be delivered: {e}"));
            return;
        }
        for event in events {
            if let Err(e) = ctx.submit(event).await {
                tracing::warn!(adapter = %self.id, error = %e, "direct message not accepted");
            }
        }
    }

    /// The address of the conversation that a private message from `from` (`room/nick`)
    /// belongs to: the one its writer began, under another nick too, or one of its own
    /// (recorded with who wrote). A room whose occupant is not known (linked, not joined yet)
    /// gives `from` itself, unrecorded.
    fn through_room(&self, ctx: &AdapterContext, from: &str, nick: &str) -> String {
        let (room, _) = jid::split(from);
        let Some(who) = (self.rooms.lock().occupant(room, nick)).map(|o| o.user.to_string()) else {
            return from.to_owned();
        };
        let now = keys::of(keys::PM_NOW, &[room, nick]);
        if let Ok(Some(address)) = ctx.store().get(&now) {
            let address = String::from_utf8_lossy(&address).into_owned();
            if ThroughRoom::read(ctx, &address).is_some_and(|r| r.who == who) {
                return address;
            }
        }
        let record = ThroughRoom {
            who,
            nick: Some(nick.to_owned()),
        };
        record.write(ctx, from);
        if let Err(e) = ctx.store().put(&now, from.as_bytes()) {
            tracing::warn!(adapter = %self.id, error = %e, "cannot write to the store");
        }
        from.to_owned()
    }

    /// An occupant of `room` changed their nick from `old` to `new`: a conversation they
    /// began through the room follows them.
    pub(super) fn through_room_renamed(
        &self,
        ctx: &AdapterContext,
        room: &str,
        old: &str,
        new: &str,
    ) {
        self.through_room_moved(ctx, room, old, Some(new));
    }

    /// The occupant called `nick` left `room` (or was removed): a conversation they began
    /// through it reaches no one there now, whoever takes the nick next.
    pub(super) fn through_room_left(&self, ctx: &AdapterContext, room: &str, nick: &str) {
        self.through_room_moved(ctx, room, nick, None);
    }

    /// The occupant called `was` in `room` is called `now` (`None`: gone): the conversation
    /// they began through the room, if any, records it.
    fn through_room_moved(&self, ctx: &AdapterContext, room: &str, was: &str, now: Option<&str>) {
        let store = ctx.store();
        let was = keys::of(keys::PM_NOW, &[room, was]);
        let Ok(Some(address)) = store.get(&was) else {
            return;
        };
        let address = String::from_utf8_lossy(&address).into_owned();
        let _ = store.delete(&was);
        if let Some(mut record) = ThroughRoom::read(ctx, &address) {
            record.nick = now.map(str::to_owned);
            record.write(ctx, &address);
        }
        if let Some(now) = now
            && let Err(e) = store.put(&keys::of(keys::PM_NOW, &[room, now]), address.as_bytes())
        {
            tracing::warn!(adapter = %self.id, error = %e, "cannot write to the store");
        }
    }

    /// Where an answer in the conversation begun through a room as `address` goes now: the
    /// writer's current address in the room. Their identity finds them under any nick when
    /// the room shows it (a real JID, an occupant-id); a room that shows only nicks is
    /// followed through the nick changes and departures the bridge saw. `Unsupported` when
    /// they are not in the room (the core leaves the answer out, counted: no one else with
    /// their old nick gets it); transient while the bridge itself is not in the room. A
    /// conversation recorded before these records existed goes to `address` as it did.
    fn through_room_to(&self, ctx: &AdapterContext, address: &str) -> Result<String, AdapterError> {
        let Some(record) = ThroughRoom::read(ctx, address) else {
            return Ok(address.to_owned());
        };
        let (room, _) = jid::split(address);
        let rooms = self.rooms.lock();
        let listening = self
            .listener_jid()
            .is_some_and(|l| rooms.our_occupant(room, &l).is_some());
        if !listening {
            return Err(AdapterError::transient(format!(
                "not in {room} now: the private conversation through it waits"
            )));
        }
        let who = RemoteUserId::new(record.who);
        let nick = if state::is_nick_identity(&who) {
            record.nick.filter(|n| rooms.occupant(room, n).is_some())
        } else {
            rooms.nick_of(room, &who)
        };
        match nick {
            Some(nick) => Ok(format!("{room}/{nick}")),
            None => Err(AdapterError::Unsupported(format!(
                "{address} is not in {room} now: the private conversation through the room \
                 reaches no one"
            ))),
        }
    }

    /// The nick of `from` when it is a room occupant's address (`room/nick` of a room the
    /// bridge is in or links): a private message through the room.
    fn room_occupant<'a>(&self, from: &'a str, ctx: &AdapterContext) -> Option<&'a str> {
        let (room, Some(nick)) = jid::split(from) else {
            return None;
        };
        let known = self.rooms.lock().occupant(room, nick).is_some()
            || ctx.is_linked(&RemoteRoomId::new(room))
            || ctx.is_linked(&RemoteRoomId::new(room.to_ascii_lowercase()));
        known.then_some(nick)
    }

    /// A message to the bridge's own address: an admin command, answered by
    /// [`bridge_core::Adapter::send_notice`] in the conversation `"<user> bridge@DOMAIN"`.
    async fn to_bridge(&self, parsed: &Parsed, from: &str, ctx: &AdapterContext) {
        if !matches!(parsed.content, Content::Message { .. }) {
            return; // chat states, receipts, corrections: nothing to answer
        }
        let Some(domain) = self.component_domain() else {
            return;
        };
        // A private message from a room's occupant (`room/nick`) is not from an account we
        // can answer or check: only accounts give commands.
        if let (bare, Some(nick)) = jid::split(from)
            && self.rooms.lock().occupant(bare, nick).is_some()
        {
            tracing::info!(adapter = %self.id, %from, "a room occupant's private message to the bridge: ignored");
            return;
        }
        let user = RemoteUserId::new(jid::bare(from));
        let room = RemoteRoomId::new(room_of(user.as_str(), &format!("bridge@{domain}")));
        // The message itself (translated as in any direct conversation), not its chat state.
        let message = self
            .translate_direct(parsed, &room, &user, ctx)
            .into_iter()
            .find(|e| matches!(e.kind, EventKind::Message { .. }));
        if let Some(event) = message
            && let Err(e) = ctx.submit_to_bridge(event).await
        {
            tracing::warn!(adapter = %self.id, error = %e, "command to the bridge not accepted");
        }
    }

    fn translate_direct(
        &self,
        parsed: &Parsed,
        room: &RemoteRoomId,
        user: &RemoteUserId,
        ctx: &AdapterContext,
    ) -> Vec<InboundEvent> {
        let native = parsed
            .origin_id
            .as_deref()
            .or(parsed.id.as_deref())
            .map(RemoteEventId::new);
        let event = |kind| {
            let mut event = InboundEvent::new(room.clone(), native.clone(), user.clone(), kind);
            event.ts = parsed.delay_ms;
            event
        };
        let rid = |id: &str| RemoteEventId::new(id);
        let mut events = Vec::new();
        match &parsed.content {
            Content::Message { content, reply, .. } => events.push(event(EventKind::Message {
                content: content.clone(),
                reply_to: reply.as_ref().map(|r| rid(&r.id)),
                thread: None,
            })),
            Content::Correction { replace_id, new } => events.push(event(EventKind::Edit {
                target: rid(replace_id),
                new: new.clone(),
            })),
            Content::Reactions { to_id, keys } => {
                let name = user.as_str();
                events.extend(self.reconcile_reactions(
                    ctx,
                    room.as_str(),
                    &rid(to_id),
                    user,
                    name,
                    keys,
                    native.as_ref(),
                    parsed.delay_ms,
                ));
            }
            Content::Retraction { id } => events.push(event(EventKind::Redaction {
                target: rid(id),
                reason: None,
            })),
            _ => {}
        }
        let mut ephemeral = |kind| {
            let mut e = InboundEvent::new(room.clone(), None, user.clone(), kind);
            e.ts = parsed.delay_ms;
            events.push(e);
        };
        if let Some(active) = parsed.typing() {
            ephemeral(EventKind::Typing { active });
        }
        if let Some(displayed) = &parsed.displayed {
            ephemeral(EventKind::ReadMarker {
                up_to: rid(displayed),
            });
        }
        events
    }

    /// Answers a message we cannot carry with an error, so that its sender knows.
    pub(super) fn bounce(&self, stanza: &Element, text: &str) {
        use crate::xml::Attrs;
        let (Some(from), Some(to)) = (stanza.attr("from"), stanza.attr("to")) else {
            return;
        };
        let mut error = Element::builder("message", crate::wire::NS_CLIENT)
            .with("type", "error")
            .with("from", to)
            .with("to", from);
        if let Some(id) = stanza.attr("id") {
            error = error.with("id", id);
        }
        let error = error
            .append(
                Element::builder("error", crate::wire::NS_CLIENT)
                    .with("type", "cancel")
                    .append(Element::builder(
                        "service-unavailable",
                        crate::muc::NS_STANZAS,
                    ))
                    .append(Element::builder("text", crate::muc::NS_STANZAS).append(text)),
            )
            .build();
        if let Some(out) = self.out.lock().clone() {
            let _ = out.try_send(self.outgoing(error, None));
        }
    }

    /// Delivers into a direct conversation: a `chat` message from the author's puppet to the
    /// XMPP user.
    pub(super) async fn deliver_direct(
        &self,
        event: &OutboundEvent,
        user: &str,
        speaker: &str,
    ) -> Result<Delivered, AdapterError> {
        let ctx = self.ctx()?;
        let id = event.id.to_string();
        let through_room = user.contains('/');
        let to = if through_room {
            self.through_room_to(&ctx, user)?
        } else {
            user.to_owned()
        };
        let env = Envelope {
            from: speaker,
            to: &to,
            msg_type: MessageType::Chat,
            id: &id,
        };
        let stanza = match &event.kind {
            EventKind::Message {
                content, reply_to, ..
            } => {
                let reply = reply_to.as_ref().map(|r| OutReply {
                    to: None,
                    id: r.as_str(),
                    quote: None,
                });
                translate::build_message(&env, content, reply.as_ref())
            }
            EventKind::Edit { target, new } => {
                translate::build_correction(&env, target.as_str(), new)
            }
            EventKind::Reaction { target, key } | EventKind::Unreact { target, key, .. } => {
                let adding = matches!(event.kind, EventKind::Reaction { .. });
                let puppet = RemoteUserId::new(jid::bare(speaker));
                let keys =
                    self.update_reactions(&ctx, event.room.as_str(), target, &puppet, key, adding);
                translate::build_reactions(&env, target.as_str(), &keys)
            }
            EventKind::Redaction { target, .. } => {
                translate::build_retraction(&env, target.as_str())
            }
            EventKind::Typing { active } => {
                let state = if *active {
                    ChatState::Composing
                } else {
                    ChatState::Paused
                };
                translate::build_chat_state(&env, state)
            }
            EventKind::ReadMarker { up_to } => translate::build_displayed(&env, up_to.as_str()),
            other => {
                return Err(AdapterError::Unsupported(format!(
                    "{} in a direct conversation",
                    other.name()
                )));
            }
        };
        // Through a room (to an occupant's `room/nick`): marked as a private message in it.
        let mut stanza = stanza;
        if through_room {
            stanza.append_child(Element::builder("x", crate::muc::NS_MUC_USER).build());
        }
        self.send_stanza(stanza).await?;
        let native_id = (!event.kind.is_ephemeral()).then(|| RemoteEventId::new(id));
        Ok(Delivered {
            native_id,
            puppet: None,
        })
    }
}
