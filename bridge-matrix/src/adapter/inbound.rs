//! Transactions from the homeserver into the core.
//!
//! Per transaction, one at a time: events from our own ghosts and bot are echoes and are
//! dropped here (they are in our exclusive namespace, so nothing else can send as them);
//! every other event is translated, given its sender's display name, and enqueued in order;
//! the transaction is answered once all of them are durable (one that changes nothing, such
//! as the echo of a message the bridge sent, at once). A malformed event is logged, counted and
//! skipped; it never fails the others.

use std::sync::Arc;

use async_trait::async_trait;
use bridge_core::{
    AdapterContext, EventKind, InboundEvent, MembershipChange, Pending, RemoteRoomId, RemoteUserId,
    Sender, SubmitError, Submitted,
};
use serde_json::Value;

use super::{Inner, PERSISTED_TXNS, RECENT_TXNS, TXNS_KEY};
use crate::appservice::{Handler, Transaction, TxnError};
use crate::homeserver::As;
use crate::translate::inbound::{self as tr, Ephemeral, InboundCtx};

/// Store key prefix of direct-message rooms (`d/<room>` → the ghost in it).
pub(super) const DIRECT: &[u8] = b"d/";

/// The adapter as the appservice server's [`Handler`].
pub(super) struct Taker(pub(super) Arc<Inner>);

#[async_trait]
impl Handler for Taker {
    async fn transaction(&self, txn: Transaction) -> Result<(), TxnError> {
        self.0.take(txn).await
    }

    async fn user_exists(&self, user_id: &str) -> bool {
        self.0.user_query(user_id).await
    }

    async fn alias_exists(&self, alias: &str) -> bool {
        self.0.alias_query(alias).await
    }
}

impl Inner {
    /// Takes one transaction (see the module docs).
    async fn take(&self, txn: Transaction) -> Result<(), TxnError> {
        let ctx = self.ctx().map_err(|e| TxnError(e.to_string()))?;
        let mut recent = self.txns.lock().await;
        if recent.iter().any(|id| *id == txn.id) {
            tracing::debug!(adapter = %self.id, txn = %txn.id, "transaction already taken");
            return Ok(());
        }
        tracing::debug!(adapter = %self.id, txn = %txn.id, events = txn.events.len(),
            ephemeral = txn.ephemeral.len(), "transaction");
        let mut pending = Vec::with_capacity(txn.events.len());
        // Whether anything in the transaction has to be on disk before it is answered. Every
        // send of the bridge comes back in a transaction of its own: an echo of our message,
        // reaction or redaction, or a ghost's join the joined set already shows, changes
        // nothing here, and a retry of it after a crash is dropped again. Such transactions are
        // answered without writing the list of recent transactions and waiting for a flush
        // (that was a store write and a group commit per message sent).
        let mut durable = false;
        for event in &txn.events {
            durable |= !self.changes_nothing(event);
            match self.timeline(&ctx, event).await {
                Ok(Some(p)) => pending.push(p),
                Ok(None) => {}
                Err(SubmitError::ShuttingDown) => {
                    return Err(TxnError("the bridge is shutting down".into()));
                }
                Err(e) => return Err(TxnError(e.to_string())),
            }
        }
        for event in &txn.ephemeral {
            self.ephemeral(&ctx, event);
        }
        for p in pending {
            match p.durable().await {
                Submitted::Rejected(why) => {
                    tracing::info!(adapter = %self.id, txn = %txn.id, %why, "event refused by the core");
                }
                other => tracing::trace!(adapter = %self.id, ?other, "event taken"),
            }
        }
        recent.push_back(txn.id.clone());
        while recent.len() > RECENT_TXNS {
            recent.pop_front();
        }
        if !durable {
            tracing::debug!(adapter = %self.id, txn = %txn.id, "transaction taken (echoes only)");
            return Ok(());
        }
        let list: Vec<&String> = recent
            .iter()
            .skip(recent.len().saturating_sub(PERSISTED_TXNS))
            .collect();
        let json = serde_json::to_vec(&list).unwrap_or_default();
        ctx.store()
            .put(TXNS_KEY, &json)
            .map_err(|e| TxnError(e.to_string()))?;
        ctx.store()
            .flush()
            .await
            .map_err(|e| TxnError(e.to_string()))?;
        tracing::debug!(adapter = %self.id, txn = %txn.id, "transaction taken");
        Ok(())
    }

    /// One timeline event: `Ok(None)` when there is nothing to wait for.
    async fn timeline(
        &self,
        ctx: &AdapterContext,
        event: &Value,
    ) -> Result<Option<Pending>, SubmitError> {
        let sender = event
            .get("sender")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if self.is_ours(sender) {
            self.own_event(ctx, event);
            return Ok(None);
        }
        if self.invites_a_ghost(ctx, event).await {
            return Ok(None);
        }
        let ictx = InboundCtx {
            adapter: &self.id,
            naming: &self.naming,
        };
        let mut inbound = match tr::timeline_event(event, None, &ictx) {
            Ok(Some(inbound)) => inbound,
            Ok(None) => return Ok(None),
            Err(e) => {
                self.malformed(ctx, &e.to_string(), event);
                return Ok(None);
            }
        };
        if self.is_ours(inbound.sender.id.as_str()) {
            // A membership event about one of our ghosts, made by someone else (a kick).
            self.ghost_membership(ctx, &inbound);
            return Ok(None);
        }
        self.remember_member(&inbound);
        if inbound.sender.display_name.is_none() {
            inbound.sender.display_name =
                self.display_name(&inbound.room, &inbound.sender.id).await;
        }
        self.direct_room(ctx, &inbound).await;
        ctx.enqueue(inbound).map(Some)
    }

    /// Our own event coming back that changes nothing here: a message, reaction or redaction
    /// of ours, or a membership change of ours that the joined set already shows.
    fn changes_nothing(&self, event: &Value) -> bool {
        let sender = event.get("sender").and_then(Value::as_str);
        if !sender.is_some_and(|s| self.is_ours(s)) {
            return false;
        }
        if event.get("type").and_then(Value::as_str) != Some("m.room.member") {
            return true;
        }
        match own_membership(event) {
            Some((room, user, "join")) => self.ghosts.is_joined(room, user),
            Some((room, user, "leave" | "ban")) => !self.ghosts.is_joined(room, user),
            Some(_) => true,
            None => false,
        }
    }

    /// True for our bot and ghosts.
    pub(super) fn is_ours(&self, user: &str) -> bool {
        user == self.bot.as_str() || self.naming.is_ours(user)
    }

    /// Our own event coming back: a ghost's membership keeps the joined set true.
    fn own_event(&self, ctx: &AdapterContext, event: &Value) {
        if event.get("type").and_then(Value::as_str) != Some("m.room.member") {
            return;
        }
        let Some((room, user, membership)) = own_membership(event) else {
            return;
        };
        // The adapter marks a ghost joined as soon as its join returns, usually before the
        // echo arrives: write only what changes.
        let joined = self.ghosts.is_joined(room, user);
        let result = match membership {
            "join" if !joined => self.ghosts.mark_joined(ctx.store(), room, user),
            "leave" | "ban" if joined => self.ghosts.mark_left(ctx.store(), room, user),
            _ => Ok(()),
        };
        if let Err(e) = result {
            tracing::warn!(adapter = %self.id, error = %e, "cannot record a ghost's membership");
        }
    }

    /// A ghost was kicked or banned by someone: it is no longer in the room.
    fn ghost_membership(&self, ctx: &AdapterContext, inbound: &InboundEvent) {
        if let EventKind::Membership {
            change: MembershipChange::Kick | MembershipChange::Ban | MembershipChange::Leave,
            ..
        } = inbound.kind
            && let Err(e) = self.ghosts.mark_left(
                ctx.store(),
                inbound.room.as_str(),
                inbound.sender.id.as_str(),
            )
        {
            tracing::warn!(adapter = %self.id, error = %e, "cannot record a ghost's membership");
        }
    }

    /// A Matrix user invited one of our ghosts: a direct conversation with the remote user it
    /// stands for. The ghost joins; the room is remembered as direct.
    async fn invites_a_ghost(&self, ctx: &AdapterContext, event: &Value) -> bool {
        if event.get("type").and_then(Value::as_str) != Some("m.room.member")
            || event.pointer("/content/membership").and_then(Value::as_str) != Some("invite")
        {
            return false;
        }
        let Some(ghost) = event.get("state_key").and_then(Value::as_str) else {
            return false;
        };
        if ghost == self.bot.as_str() {
            self.bot_invited(ctx, event).await;
            return true;
        }
        if !self.naming.is_ours(ghost) {
            return false;
        }
        let Some(room) = event.get("room_id").and_then(Value::as_str) else {
            return true;
        };
        if self.naming.ghost_of(ghost).is_none() {
            tracing::info!(adapter = %self.id, %ghost, %room, "invite to a user we do not stand for");
            return true;
        }
        let (Ok(user), Ok(room_id)) = (ruma::UserId::parse(ghost), ruma::RoomId::parse(room))
        else {
            return true;
        };
        let store = ctx.store();
        let joined = async {
            super::ghosts::register(&self.hs, &user).await?;
            self.hs
                .call(
                    ruma::api::client::membership::join_room_by_id::v3::Request::new(
                        room_id.clone(),
                    ),
                    As::Ghost(&user),
                )
                .await?;
            self.ghosts
                .mark_joined(store, room, ghost)
                .map_err(|e| bridge_core::AdapterError::transient(e.to_string()))
        };
        match joined.await {
            Ok(()) => {
                let mut key = DIRECT.to_vec();
                key.extend_from_slice(room.as_bytes());
                if let Err(e) = store.put(&key, ghost.as_bytes()) {
                    tracing::warn!(adapter = %self.id, error = %e, "cannot remember a direct room");
                }
                self.direct.lock().insert(room.to_owned(), ghost.to_owned());
                tracing::info!(adapter = %self.id, %ghost, %room, "joined a direct conversation");
            }
            Err(e) => {
                tracing::warn!(adapter = %self.id, %ghost, %room, error = %e, "cannot join a direct conversation");
            }
        }
        true
    }

    /// The bot was invited: it joins when the room is linked (a room linked before the bot
    /// could join it), and otherwise waits for an admin to link it.
    async fn bot_invited(&self, ctx: &AdapterContext, event: &Value) {
        let Some(room) = event.get("room_id").and_then(Value::as_str) else {
            return;
        };
        let room = RemoteRoomId::new(room);
        if !ctx.linked_rooms().contains(&room) {
            tracing::info!(adapter = %self.id, %room, "the bot was invited to a room that is not linked");
            return;
        }
        if let Err(e) = self.join_bot(&room).await {
            tracing::warn!(adapter = %self.id, %room, error = %e, "the bot cannot join a linked room it was invited to");
        }
    }

    /// A message in a direct room not linked yet: link it to the remote user's side first.
    async fn direct_room(&self, ctx: &AdapterContext, inbound: &InboundEvent) {
        let Some(ghost) = self.direct.lock().get(inbound.room.as_str()).cloned() else {
            return;
        };
        if !matches!(inbound.kind, EventKind::Message { .. }) {
            return;
        }
        let Some((adapter, user)) = self.naming.ghost_of(&ghost) else {
            return;
        };
        let counterpart = Sender {
            adapter,
            user,
            display_name: None,
            avatar: None,
        };
        if let Err(e) = ctx
            .direct_room(
                &inbound.room,
                &inbound.sender.id,
                inbound.sender.display_name.as_deref(),
                &counterpart,
            )
            .await
        {
            tracing::warn!(adapter = %self.id, room = %inbound.room, error = %e,
                "cannot open the other side of a direct conversation");
        }
    }

    /// Member events teach display names.
    fn remember_member(&self, inbound: &InboundEvent) {
        let name = match &inbound.kind {
            EventKind::Membership {
                change: MembershipChange::Join,
                ..
            } => inbound.sender.display_name.clone(),
            EventKind::Profile { display_name, .. } => display_name.clone(),
            EventKind::Membership { .. } => {
                self.members.lock().remove(&(
                    inbound.room.as_str().into(),
                    inbound.sender.id.as_str().into(),
                ));
                return;
            }
            _ => return,
        };
        self.members.lock().insert(
            (
                inbound.room.as_str().into(),
                inbound.sender.id.as_str().into(),
            ),
            name.map(String::into_boxed_str),
        );
    }

    /// A Matrix user's display name in a room: from member events seen, else asked once.
    async fn display_name(&self, room: &RemoteRoomId, user: &RemoteUserId) -> Option<String> {
        let key: super::MemberKey = (room.as_str().into(), user.as_str().into());
        if let Some(name) = self.members.lock().get(&key) {
            return name.as_deref().map(str::to_owned);
        }
        let room_id = ruma::RoomId::parse(room.as_str()).ok()?;
        let request = ruma::api::client::state::get_state_event_for_key::v3::Request::new(
            room_id,
            ruma::events::StateEventType::RoomMember,
            user.as_str().to_owned(),
        );
        let name = match self.hs.call(request, As::Bot).await {
            Ok(answer) => serde_json::from_str::<Value>(answer.event_or_content.get())
                .ok()
                .and_then(|content| {
                    content
                        .get("displayname")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                }),
            Err(e) => {
                tracing::debug!(adapter = %self.id, %room, %user, error = %e, "no member state");
                None
            }
        };
        self.members
            .lock()
            .insert(key, name.clone().map(String::into_boxed_str));
        name
    }

    /// Typing and read receipts: best effort, not waited for.
    fn ephemeral(&self, ctx: &AdapterContext, event: &Value) {
        let items = match tr::ephemeral_event(event, None) {
            Ok(items) => items,
            Err(e) => {
                self.malformed(ctx, &e.to_string(), event);
                return;
            }
        };
        for item in items {
            let inbound = match item {
                Ephemeral::Typing { room, users } => {
                    let users: Vec<String> =
                        users.into_iter().filter(|u| !self.is_ours(u)).collect();
                    let old = self
                        .typing
                        .lock()
                        .insert(room.clone(), users.clone())
                        .unwrap_or_default();
                    for (user, active) in tr::typing_changes(&old, &users) {
                        let event = InboundEvent::new(
                            room.as_str(),
                            None,
                            user.as_str(),
                            EventKind::Typing { active },
                        );
                        let _ = ctx.enqueue(event);
                    }
                    continue;
                }
                Ephemeral::Read {
                    room,
                    user,
                    event_id,
                } => {
                    if self.is_ours(&user) {
                        continue;
                    }
                    InboundEvent::new(
                        room.as_str(),
                        None,
                        user.as_str(),
                        EventKind::ReadMarker {
                            up_to: bridge_core::RemoteEventId::new(event_id),
                        },
                    )
                }
            };
            let _ = ctx.enqueue(inbound);
        }
    }

    fn malformed(&self, ctx: &AdapterContext, why: &str, event: &Value) {
        ctx.counter("bridge_matrix_malformed_total").increment(1);
        let id = event.get("event_id").and_then(Value::as_str).unwrap_or("?");
        tracing::warn!(adapter = %self.id, event = %id, %why, "malformed event skipped");
    }

    /// The homeserver asks whether a user in our namespace exists: a ghost we can stand for
    /// does (registered now, so the homeserver can invite it).
    async fn user_query(&self, user_id: &str) -> bool {
        if self.naming.ghost_of(user_id).is_none() {
            return false;
        }
        let Ok(user) = ruma::UserId::parse(user_id) else {
            return false;
        };
        match super::ghosts::register(&self.hs, &user).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(adapter = %self.id, %user_id, error = %e, "cannot register a queried ghost");
                false
            }
        }
    }

    /// The homeserver asks whether an alias in our namespace exists: a portal, when allowed.
    async fn alias_query(&self, alias: &str) -> bool {
        if !self.portals {
            tracing::info!(adapter = %self.id, %alias, "portal asked for, but portals are off");
            return false;
        }
        match self.open_portal(alias).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(adapter = %self.id, %alias, error = %e, "cannot open a portal");
                false
            }
        }
    }
}

/// (room, user, membership) of a member event.
fn own_membership(event: &Value) -> Option<(&str, &str, &str)> {
    Some((
        event.get("room_id").and_then(Value::as_str)?,
        event.get("state_key").and_then(Value::as_str)?,
        event
            .pointer("/content/membership")
            .and_then(Value::as_str)?,
    ))
}
