//! Transactions from the homeserver into the core.
//!
//! Per transaction, one at a time: events from our own ghosts and bot are echoes and are
//! dropped here (they are in our exclusive namespace, so nothing else can send as them);
//! every other event is translated, given its sender's display name, and enqueued in order;
//! the transaction is answered once all of them are durable (one that changes nothing, such
//! as the echo of a message the bridge sent, at once). A malformed event is logged, counted and
//! skipped; it never fails the others.

use std::collections::{HashSet, VecDeque};
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

/// Store key prefix of direct-message rooms (`d/<room>` → the ghost in it, or the bot for a
/// direct conversation with the bridge itself).
pub(super) const DIRECT: &[u8] = b"d/";
/// Store key prefix of upgraded linked rooms (`u/<old room ID>` → the room that replaced it).
pub(super) const UPGRADED: &[u8] = b"u/";
/// Store key prefix of rooms told that their encrypted messages cannot be bridged
/// (`e/<room ID>`): told once, also across restarts.
const TOLD_ENCRYPTED: &[u8] = b"e/";
/// After this many gaps that a retry did not fill, the homeserver is taken not to number its
/// transactions consecutively and gaps are no longer looked for.
const UNFILLED_GAPS: u32 = 3;

/// Looks for transactions the homeserver skipped.
///
/// Synapse numbers an appservice's transactions 1, 2, 3… and, in a race as it leaves recovery
/// mode (the appservice was unreachable, then answered again), can store a transaction that it
/// never pushes: the recoverer is forgotten just before the service is marked up again, and an
/// event arriving in between is queued as a transaction for the recoverer that is gone. The
/// next events are pushed as usual, and the stranded one stays in its database until a later
/// push fails. Refusing the first transaction after a gap makes the homeserver fail a push now:
/// its recoverer sends the oldest transaction it holds first, the missing one, then this one
/// again; so nothing is lost and the order is kept.
///
/// A homeserver whose IDs are not consecutive integers would have every transaction refused
/// once: IDs that do not parse are never checked, and after [`UNFILLED_GAPS`] gaps that its
/// retry did not fill the check is off.
#[derive(Debug, Default)]
pub(super) struct GapCheck {
    /// The transaction refused for a gap, while waiting for its retry.
    refused: Option<String>,
    /// Gaps that the retry did not fill.
    unfilled: u32,
    /// The highest plain-number ID taken so far (kept as they are taken: looking through the
    /// recent IDs for it at every transaction was a measurable share of the bridge's CPU).
    highest: Option<u64>,
}

/// `id` as a number, when it is one written plainly (no sign, no leading zero).
fn plain_number(id: &str) -> Option<u64> {
    let plain = !id.is_empty()
        && id.bytes().all(|b| b.is_ascii_digit())
        && (id == "0" || !id.starts_with('0'));
    plain.then(|| id.parse().ok()).flatten()
}

impl GapCheck {
    /// Notes a transaction ID taken (also those remembered from an earlier run).
    pub(super) fn taken(&mut self, id: &str) {
        if let Some(n) = plain_number(id) {
            self.highest = Some(self.highest.map_or(n, |h| h.max(n)));
        }
    }

    /// The missing transaction numbers when `id` comes after a gap and is to be refused; `None`
    /// to take it.
    pub(super) fn check(&mut self, id: &str) -> Option<std::ops::RangeInclusive<u64>> {
        if self.unfilled >= UNFILLED_GAPS {
            return None;
        }
        let n = plain_number(id)?;
        let last = self.highest?;
        if n <= last.saturating_add(1) {
            return None;
        }
        if self.refused.as_deref() == Some(id) {
            // The retry came without the missing ones: they do not exist.
            self.refused = None;
            self.unfilled += 1;
            return None;
        }
        self.refused = Some(id.to_owned());
        Some(last + 1..=n - 1)
    }
}

/// The transactions taken most recently, the newest [`RECENT_TXNS`], in the order taken; looked
/// up by ID in a set (a scan of the list for every transaction was ~1.5 % of the bridge's CPU in
/// the e2e bench).
#[derive(Debug, Default)]
pub(super) struct RecentTxns {
    order: VecDeque<Arc<str>>,
    ids: HashSet<Arc<str>>,
}

impl RecentTxns {
    /// True when transaction `id` was taken.
    pub(super) fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    /// Notes transaction `id` as taken, forgetting the oldest beyond [`RECENT_TXNS`].
    pub(super) fn push(&mut self, id: String) {
        let id: Arc<str> = id.into();
        if !self.ids.insert(id.clone()) {
            return;
        }
        self.order.push_back(id);
        while self.order.len() > RECENT_TXNS {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
    }

    /// The newest `n` IDs, oldest first.
    pub(super) fn newest(&self, n: usize) -> Vec<&str> {
        self.order
            .iter()
            .skip(self.order.len().saturating_sub(n))
            .map(|id| &**id)
            .collect()
    }
}

impl FromIterator<String> for RecentTxns {
    fn from_iter<I: IntoIterator<Item = String>>(ids: I) -> Self {
        let mut recent = Self::default();
        for id in ids {
            recent.push(id);
        }
        recent
    }
}

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
        if recent.contains(&txn.id) {
            tracing::debug!(adapter = %self.id, txn = %txn.id, "transaction already taken");
            return Ok(());
        }
        if let Some(missing) = self.gaps.lock().check(&txn.id) {
            // Whatever the retry brings, read the rooms' history before the next one.
            self.catch_up_later();
            tracing::warn!(adapter = %self.id, txn = %txn.id, ?missing,
                "transactions before this one never arrived; refusing it once so that the homeserver retries from the oldest one it holds");
            return Err(TxnError(format!(
                "transactions {}..={} are missing: send them first",
                missing.start(),
                missing.end()
            )));
        }
        if self.catch_up_due() {
            // The homeserver was away: before anything newer, what it may not have pushed.
            // Should the catch-up fail, the transaction is taken all the same (refusing it
            // would hold up the whole stream); the catch-up stays due.
            if let Err(e) = self.catch_up(&ctx).await {
                tracing::warn!(adapter = %self.id, txn = %txn.id, error = %e,
                    "catch-up from the rooms' history failed; trying again later");
            }
        }
        tracing::debug!(adapter = %self.id, txn = %txn.id, events = txn.events.len(),
            ephemeral = txn.ephemeral.len(), "transaction");
        let mut pending = Vec::with_capacity(txn.events.len());
        // Whether anything in the transaction has to be on disk before it is answered. Every
        // send of the bridge comes back in a transaction of its own: an echo of our message,
        // reaction or redaction, or a ghost's join the joined set already shows, changes
        // nothing here, and a retry of it after a crash is dropped again. Such transactions are
        // answered without waiting for a flush (that was a group commit per message sent).
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
        recent.push(txn.id.clone());
        self.gaps.lock().taken(&txn.id);
        let list = recent.newest(PERSISTED_TXNS);
        let json = serde_json::to_vec(&list).unwrap_or_default();
        // Where each room's catch-up starts: its newest event here (covered by the flush below
        // when anything in the transaction counts; otherwise an echo, whose loss costs only a
        // longer read).
        let mut positions: Vec<(Vec<u8>, &str)> = Vec::new();
        for event in &txn.events {
            let (Some(room), Some(id)) = (
                event.get("room_id").and_then(Value::as_str),
                event.get("event_id").and_then(Value::as_str),
            ) else {
                continue;
            };
            let key = super::catchup::position_key(room);
            positions.retain(|(k, _)| *k != key);
            positions.push((key, id));
        }
        let mut entries: Vec<(&[u8], &[u8])> = vec![(TXNS_KEY, &json)];
        entries.extend(positions.iter().map(|(k, v)| (k.as_slice(), v.as_bytes())));
        ctx.store()
            .put_all(&entries)
            .map_err(|e| TxnError(e.to_string()))?;
        if !durable {
            // Written, not waited for: after a clean restart the gap check still sees it; a
            // crash that loses it costs one refused transaction, never an event.
            tracing::debug!(adapter = %self.id, txn = %txn.id, "transaction taken (echoes only)");
            return Ok(());
        }
        ctx.store()
            .flush()
            .await
            .map_err(|e| TxnError(e.to_string()))?;
        tracing::debug!(adapter = %self.id, txn = %txn.id, "transaction taken");
        Ok(())
    }

    /// One timeline event: `Ok(None)` when there is nothing to wait for.
    pub(super) async fn timeline(
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
        match event.get("type").and_then(Value::as_str) {
            Some("m.room.encryption") if event.get("state_key").is_some() => {
                self.encrypted(ctx, event, true).await;
                return Ok(None);
            }
            Some("m.room.encrypted") => {
                self.encrypted(ctx, event, false).await;
                return Ok(None);
            }
            Some("m.room.tombstone") if event.get("state_key") == Some(&Value::from("")) => {
                self.tombstone(ctx, event).await;
                return Ok(None);
            }
            Some("m.room.power_levels") if event.get("state_key") == Some(&Value::from("")) => {
                return self.power_levels(ctx, event).await;
            }
            _ => {}
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
            // About one of our ghosts and not a moderator's (a kick is a Moderation, below).
            return Ok(None);
        }
        if let EventKind::Moderation { action, .. } = &inbound.kind
            && let Some(member) = event.get("state_key").and_then(Value::as_str)
            && self.is_ours(member)
        {
            if member == self.bot.as_str() {
                // The bridge's bot is no user of the room's other networks.
                return Ok(None);
            }
            // A moderator removed one of our ghosts: it is out (and the moderation crosses
            // to the network of the user it stands for).
            if *action != bridge_core::ModerationAction::Unban
                && let Err(e) = self
                    .ghosts
                    .mark_left(ctx.store(), inbound.room.as_str(), member)
            {
                tracing::warn!(adapter = %self.id, error = %e, "cannot record a ghost's membership");
            }
        }
        self.remember_member(&inbound);
        if matches!(inbound.kind, EventKind::Redaction { .. }) {
            // The core lets only the author or a moderator delete a message: a moderator is
            // whoever the room's power levels allow to redact others' events.
            inbound.by_moderator = self
                .may_redact_others(&inbound.room, &inbound.sender.id)
                .await;
        }
        if inbound.sender.display_name.is_none() || inbound.sender.avatar.is_none() {
            let member = self.member(&inbound.room, &inbound.sender.id).await;
            let sender = &mut inbound.sender;
            sender.display_name = sender.display_name.take().or(member.name.map(String::from));
            sender.avatar = sender.avatar.take().or(member.avatar.map(String::from));
        }
        let to_bot = self
            .direct
            .lock()
            .get(inbound.room.as_str())
            .is_some_and(|who| *who == self.bot.as_str());
        if to_bot {
            // Written to the bridge itself: an admin command (answered with `send_notice`).
            return ctx.enqueue_to_bridge(inbound).map(Some);
        }
        self.direct_room(ctx, &inbound).await;
        // Someone joining who stands above or below a member says so after their join.
        let joined = match (&inbound.kind, &inbound.native_id) {
            (
                EventKind::Membership {
                    change: MembershipChange::Join,
                    ..
                },
                Some(id),
            ) => Some((
                inbound.room.as_str().to_owned(),
                inbound.sender.id.as_str().to_owned(),
                format!("{id}#role"),
            )),
            _ => None,
        };
        // The core knows the room by the name it was linked by (an alias, perhaps).
        inbound.room = self.rooms.linked_name(inbound.room.as_str());
        let pending = ctx.enqueue(inbound)?;
        if let Some((room, user, native_id)) = joined
            && let Some(power) = self.power(&room).await
        {
            let role = tr::role_of(&power.0, &power.1, &user);
            if role != bridge_core::Role::Member {
                return self
                    .say_role(ctx, &room, &user, role, native_id)
                    .await
                    .map(Some);
            }
        }
        Ok(Some(pending))
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

    /// Our own event coming back: a ghost's membership keeps the joined set true; power
    /// levels the bot set replace those remembered (the next change is compared with them).
    fn own_event(&self, ctx: &AdapterContext, event: &Value) {
        match event.get("type").and_then(Value::as_str) {
            Some("m.room.member") => {}
            Some("m.room.power_levels") => {
                if let (Some(room), Some(content)) = (
                    event.get("room_id").and_then(Value::as_str),
                    event.get("content"),
                ) {
                    let mut power = self.power.lock();
                    if let Some(known) = power.get_mut(room) {
                        *known = Arc::new((content.clone(), known.1.clone()));
                    }
                }
                return;
            }
            _ => return,
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
                if let Err(e) = self.remember_direct(store, room, ghost) {
                    tracing::warn!(adapter = %self.id, error = %e, "cannot remember a direct room");
                }
                tracing::info!(adapter = %self.id, %ghost, %room, "joined a direct conversation");
            }
            Err(e) => {
                tracing::warn!(adapter = %self.id, %ghost, %room, error = %e, "cannot join a direct conversation");
            }
        }
        true
    }

    /// Remembers `room` as a direct conversation with `who` (a ghost, or the bot), in the
    /// store and in memory.
    pub(super) fn remember_direct(
        &self,
        store: &bridge_core::AdapterStore,
        room: &str,
        who: &str,
    ) -> Result<(), bridge_core::StoreError> {
        store.put(&[DIRECT, room.as_bytes()].concat(), who.as_bytes())?;
        self.direct.lock().insert(room.to_owned(), who.to_owned());
        Ok(())
    }

    /// The bot was invited: it joins when the room is linked (a room linked before the bot
    /// could join it) or when the invite is to a direct conversation (where its messages are
    /// admin commands, answered by the bot), and otherwise waits for an admin to link it.
    async fn bot_invited(&self, ctx: &AdapterContext, event: &Value) {
        let Some(room) = event.get("room_id").and_then(Value::as_str) else {
            return;
        };
        let room = self.rooms.linked_name(room);
        let direct = event.pointer("/content/is_direct").and_then(Value::as_bool) == Some(true);
        if direct && !ctx.linked_rooms().contains(&room) {
            match self.join_bot(&room).await {
                Ok(()) => {
                    if let Err(e) =
                        self.remember_direct(ctx.store(), room.as_str(), self.bot.as_str())
                    {
                        tracing::warn!(adapter = %self.id, error = %e, "cannot remember a direct conversation with the bot");
                    }
                    tracing::info!(adapter = %self.id, %room, "the bot joined a direct conversation (admin commands)");
                }
                Err(e) => {
                    tracing::warn!(adapter = %self.id, %room, error = %e, "the bot cannot join a direct conversation");
                }
            }
            return;
        }
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
            // The writer would otherwise wait for an answer that cannot come: the ghost says why.
            self.notice_from(
                &inbound.room,
                &ghost,
                &format!("This message could not be delivered: {e}"),
            )
            .await;
        }
    }

    /// A linked room was upgraded (`m.room.tombstone` naming its `replacement_room`): the link
    /// follows it. Its name stays (see [`crate::rooms`]), the upgrade is remembered in the
    /// store, and the bot joins the new room (through the server of whoever upgraded it).
    async fn tombstone(&self, ctx: &AdapterContext, event: &Value) {
        let Some(old) = event.get("room_id").and_then(Value::as_str) else {
            return;
        };
        let name = self.rooms.linked_name(old);
        if !ctx.is_linked(&name) {
            tracing::debug!(adapter = %self.id, room = old, "a room the bridge does not serve was upgraded");
            return;
        }
        let new = event
            .pointer("/content/replacement_room")
            .and_then(Value::as_str)
            .map(ruma::RoomId::parse);
        let new = match new {
            Some(Ok(new)) if new.as_str() != old => new,
            _ => {
                self.malformed(ctx, "tombstone without a usable replacement_room", event);
                return;
            }
        };
        if let Err(e) = ctx.store().put(
            &[UPGRADED, old.as_bytes()].concat(),
            new.as_str().as_bytes(),
        ) {
            tracing::warn!(adapter = %self.id, error = %e, "room upgrade not stored; it is followed in this process only");
        }
        if !self.rooms.upgraded(old, new.clone()) {
            return;
        }
        tracing::info!(adapter = %self.id, link = %name, old, new = %new,
            "linked room upgraded: the link follows it to the new room");
        let via: Vec<ruma::OwnedServerName> = event
            .get("sender")
            .and_then(Value::as_str)
            .and_then(|s| ruma::UserId::parse(s).ok())
            .map(|user| vec![user.server_name().to_owned()])
            .unwrap_or_default();
        let mut request = ruma::api::client::membership::join_room_by_id_or_alias::v3::Request::new(
            new.clone().into(),
        );
        request.via = via;
        if let Err(e) = self.hs.call(request, As::Bot).await {
            tracing::warn!(adapter = %self.id, link = %name, new = %new, error = %e,
                "the bot cannot join the room that replaced a linked room (invite it there)");
        }
    }

    /// Encryption in a linked or direct room: the bridge has no end-to-end encryption, so what
    /// is said there cannot cross. Instead of dropping it silently, the room is told (once per
    /// room, remembered in the store across restarts, and again whenever encryption is turned
    /// on): by the ghost in a direct conversation with one, else by the bot. `turned_on`: an
    /// `m.room.encryption` event, not an encrypted message.
    async fn encrypted(&self, ctx: &AdapterContext, event: &Value, turned_on: bool) {
        let Some(room_id) = event.get("room_id").and_then(Value::as_str) else {
            return;
        };
        let room = self.rooms.linked_name(room_id);
        let ghost = self.direct.lock().get(room_id).cloned();
        if !ctx.is_linked(&room) && ghost.is_none() {
            tracing::debug!(adapter = %self.id, %room, "encryption in a room the bridge does not serve");
            return;
        }
        let key = [TOLD_ENCRYPTED, room_id.as_bytes()].concat();
        // Told in this process, or before a restart (the store remembers).
        let first = self.told_encrypted.lock().insert(room_id.to_owned())
            && ctx.store().get(&key).ok().flatten().is_none();
        if !first && !turned_on {
            tracing::debug!(adapter = %self.id, %room, "encrypted event not bridged");
            return;
        }
        if let Err(e) = ctx.store().put(&key, b"") {
            tracing::warn!(adapter = %self.id, error = %e, "cannot write to the store");
        }
        tracing::warn!(adapter = %self.id, %room, turned_on,
            "end-to-end encrypted room: its encrypted messages cannot be bridged; telling the room");
        let text = match &ghost {
            Some(ghost) if ghost != self.bot.as_str() => {
                "This conversation is end-to-end encrypted, and the bridge cannot read encrypted \
                 messages: they do not reach the person on the other network. Start a \
                 conversation without encryption to reach them."
            }
            Some(_) => {
                "This conversation is end-to-end encrypted, and the bridge cannot read encrypted \
                 messages: commands sent here are not seen. Start a conversation with the \
                 bridge without encryption."
            }
            None => {
                "This room is end-to-end encrypted, and the bridge cannot read encrypted \
                 messages: what is said here in encrypted messages does not reach the linked \
                 rooms on the other networks (messages from there still arrive here). \
                 Encryption cannot be turned off in a room; to bridge it, link an unencrypted \
                 room instead."
            }
        };
        let from = ghost.unwrap_or_else(|| self.bot.to_string());
        self.notice_from(&room, &from, text).await;
    }

    /// An `m.notice` in `room` from `who`: a ghost, or the bot when `who` is the bot's user ID
    /// (best effort: logged when it fails).
    async fn notice_from(&self, room: &RemoteRoomId, who: &str, text: &str) {
        let sent = async {
            let room_id = self.room_id(room).await?;
            let user = ruma::UserId::parse(who)
                .map_err(|e| bridge_core::AdapterError::Permanent(format!("ghost {who}: {e}")))?;
            let from = if who == self.bot.as_str() {
                As::Bot
            } else {
                As::Ghost(&user)
            };
            crate::calls::send_notice(&self.hs, from, &room_id, text)
                .await
                .map(|_| ())
                .map_err(bridge_core::AdapterError::from)
        };
        if let Err(e) = sent.await {
            tracing::warn!(adapter = %self.id, %room, error = %e, "notice not sent");
        }
    }

    /// The room's power levels changed: each user whose standing changed with them
    /// ([`tr::role_changes`], from the event's `prev_content`, else the levels remembered) says
    /// so as a [`EventKind::Role`] of their own (native ID: the event's, `#` and the user), and
    /// the new levels are remembered. Our bot and ghosts are left out: their levels are the
    /// bridge's doing.
    async fn power_levels(
        &self,
        ctx: &AdapterContext,
        event: &Value,
    ) -> Result<Option<Pending>, SubmitError> {
        let (Some(room), Some(event_id)) = (
            event.get("room_id").and_then(Value::as_str),
            event.get("event_id").and_then(Value::as_str),
        ) else {
            return Ok(None);
        };
        let new = event.get("content").cloned().unwrap_or(Value::Null);
        let known = self.power.lock().remove(room);
        let creators = match &known {
            Some(power) => power.1.clone(),
            None => match self.read_power(&RemoteRoomId::new(room)).await {
                Some((_, creators)) => creators,
                None => Vec::new(),
            },
        };
        let old = event
            .pointer("/unsigned/prev_content")
            .cloned()
            .or_else(|| known.map(|power| power.0.clone()));
        self.power
            .lock()
            .insert(room.to_owned(), Arc::new((new.clone(), creators.clone())));
        // Without the levels before (a room we never read), nobody's standing is known to
        // have changed.
        let Some(old) = old else {
            return Ok(None);
        };
        // A new default level or level to send moves members the event does not name: the
        // room's members are read for it. Unread (the homeserver failing), the named users
        // are still said.
        let members = if tr::defaults_moved(&old, &new) {
            self.joined_members(room).await.unwrap_or_default()
        } else {
            Vec::new()
        };
        let mut last = None;
        for (user, role) in tr::role_changes(&old, &new, &creators, &members) {
            if self.is_ours(&user) {
                continue;
            }
            last = Some(
                self.say_role(ctx, room, &user, role, format!("{event_id}#{user}"))
                    .await?,
            );
        }
        Ok(last)
    }

    /// Once per linked room, when the bot is first in it: the members who stood above or below
    /// a member before the bridge came (a power-levels event or a join says it for anyone
    /// later), each as a [`EventKind::Role`] of theirs. Remembered as said only once read
    /// whole: a failed read is tried again at the next start.
    pub(super) async fn standing_before_the_bridge(
        &self,
        ctx: &AdapterContext,
        room: &RemoteRoomId,
    ) {
        let Ok(room_id) = self.rooms.resolve(&self.hs, room).await else {
            return;
        };
        let key = [b"roles-said\0".as_slice(), room_id.as_str().as_bytes()].concat();
        if ctx.store().get(&key).ok().flatten().is_some() {
            return;
        }
        let Some(power) = self.power(room_id.as_str()).await else {
            return;
        };
        let Some(joined) = self.joined_members(room_id.as_str()).await else {
            return;
        };
        for user in joined.iter().map(String::as_str) {
            if self.is_ours(user) {
                continue;
            }
            let role = tr::role_of(&power.0, &power.1, user);
            if role == bridge_core::Role::Member {
                continue;
            }
            let id = format!("{room_id}#role#{user}");
            if let Err(e) = self.say_role(ctx, room_id.as_str(), user, role, id).await {
                tracing::warn!(adapter = %self.id, %room, error = %e, "standing not said");
                return;
            }
        }
        if let Err(e) = ctx.store().put(&key, b"") {
            tracing::warn!(adapter = %self.id, error = %e, "cannot write to the store");
        }
    }

    /// The members joined to `room` (an ID) now, as the bot reads them; `None` (logged) when
    /// the homeserver does not answer with them.
    /// The room's joined members, or why they could not be read.
    pub(super) async fn members_of(
        &self,
        room: &ruma::OwnedRoomId,
    ) -> Result<Vec<String>, bridge_core::AdapterError> {
        let request = ruma::api::client::membership::joined_members::v3::Request::new(room.clone());
        let answer = self.hs.call(request, As::Bot).await?;
        Ok(answer.joined.keys().map(|u| u.to_string()).collect())
    }

    pub(super) async fn joined_members(&self, room: &str) -> Option<Vec<String>> {
        let room_id = ruma::RoomId::parse(room).ok()?;
        match self.members_of(&room_id).await {
            Ok(members) => Some(members),
            Err(e) => {
                tracing::debug!(adapter = %self.id, room, error = %e, "members not read");
                None
            }
        }
    }

    /// Hands the core `user`'s standing in `room`, as an event of theirs.
    async fn say_role(
        &self,
        ctx: &AdapterContext,
        room: &str,
        user: &str,
        role: bridge_core::Role,
        native_id: String,
    ) -> Result<Pending, SubmitError> {
        let mut inbound = InboundEvent::new(
            room,
            Some(bridge_core::RemoteEventId::new(native_id)),
            user,
            EventKind::Role { role },
        );
        let member = self
            .member(&RemoteRoomId::new(room), &RemoteUserId::new(user))
            .await;
        inbound.sender.display_name = member.name.map(String::from);
        inbound.sender.avatar = member.avatar.map(String::from);
        tracing::debug!(adapter = %self.id, room, user, role = role.name(), "standing changed");
        inbound.room = self.rooms.linked_name(room);
        ctx.enqueue(inbound)
    }

    /// Whether `user` may redact other people's events in `room` (see
    /// [`crate::translate::inbound::may_redact_others`]). The room's power levels and creators
    /// are read once per room and forgotten when the power levels change.
    async fn may_redact_others(&self, room: &RemoteRoomId, user: &RemoteUserId) -> bool {
        let Some(power) = self.power(room.as_str()).await else {
            return false;
        };
        crate::translate::inbound::may_redact_others(&power.0, &power.1, user.as_str())
    }

    /// The room's power levels and creators: remembered, else read (and remembered).
    pub(super) async fn power(&self, room: &str) -> Option<Arc<super::Power>> {
        if let Some(power) = self.power.lock().get(room).cloned() {
            return Some(power);
        }
        let power = Arc::new(self.read_power(&RemoteRoomId::new(room)).await?);
        self.power.lock().insert(room.to_owned(), power.clone());
        Some(power)
    }

    /// The room's power levels and creators (the sender of `m.room.create` and its
    /// `additional_creators`, who have unlimited power from room version 12 on). A room
    /// without power levels gives `Null` levels; `None` when either could not be read (not
    /// remembered: the next call reads again).
    pub(super) async fn read_power(&self, room: &RemoteRoomId) -> Option<super::Power> {
        use ruma::api::client::state::get_state_event_for_key::v3::{Request, StateEventFormat};
        let room_id = ruma::RoomId::parse(room.as_str()).ok()?;
        let state = |kind: ruma::events::StateEventType| {
            let mut request = Request::new(room_id.clone(), kind, String::new());
            request.format = StateEventFormat::Event;
            request
        };
        let read = |answer: Result<_, crate::homeserver::HsError>| match answer {
            Ok(answer) => {
                let answer: ruma::api::client::state::get_state_event_for_key::v3::Response =
                    answer;
                serde_json::from_str::<Value>(answer.event_or_content.get()).ok()
            }
            Err(e) => {
                tracing::debug!(adapter = %self.id, %room, error = %e, "cannot read room state");
                None
            }
        };
        let levels = match self
            .hs
            .call(
                state(ruma::events::StateEventType::RoomPowerLevels),
                As::Bot,
            )
            .await
        {
            // No power levels in the room (M_NOT_FOUND): the defaults.
            Err(e) if e.status() == Some(404) => None,
            answer => Some(read(answer)?),
        };
        let create = read(
            self.hs
                .call(state(ruma::events::StateEventType::RoomCreate), As::Bot)
                .await,
        )?;
        let levels = levels
            .and_then(|event| event.get("content").cloned())
            .unwrap_or(Value::Null);
        Some((levels, crate::translate::inbound::creators(&create)))
    }

    /// Member events teach display names and avatars.
    fn remember_member(&self, inbound: &InboundEvent) {
        let key: super::MemberKey = (
            inbound.room.as_str().into(),
            inbound.sender.id.as_str().into(),
        );
        let mut members = self.members.lock();
        match &inbound.kind {
            EventKind::Membership {
                change: MembershipChange::Join,
                ..
            } => {
                let member = super::Member {
                    name: inbound.sender.display_name.as_deref().map(Box::from),
                    avatar: inbound.sender.avatar.as_deref().map(Box::from),
                };
                members.insert(key, member);
            }
            // A profile event carries what changed.
            EventKind::Profile {
                display_name,
                avatar,
            } => {
                let member = members.entry(key).or_default();
                if let Some(name) = display_name {
                    member.name = Some(name.as_str().into());
                }
                if let Some(avatar) = avatar {
                    member.avatar = Some(avatar.as_str().into());
                }
            }
            EventKind::Membership { .. } => {
                members.remove(&key);
            }
            _ => {}
        }
    }

    /// A Matrix user's display name and avatar in a room: from member events seen, else read
    /// from the room state once.
    async fn member(&self, room: &RemoteRoomId, user: &RemoteUserId) -> super::Member {
        let key: super::MemberKey = (room.as_str().into(), user.as_str().into());
        if let Some(member) = self.members.lock().get(&key) {
            return member.clone();
        }
        let Ok(room_id) = ruma::RoomId::parse(room.as_str()) else {
            return super::Member::default();
        };
        let content = match super::ghosts::member_state(&self.hs, &room_id, user.as_str()).await {
            Ok(content) => content,
            Err(e) => {
                tracing::debug!(adapter = %self.id, %room, %user, error = %e, "no member state");
                Value::Null
            }
        };
        let text = |field: &str| content.get(field).and_then(Value::as_str).map(Box::from);
        let member = super::Member {
            name: text("displayname"),
            avatar: text("avatar_url"),
        };
        self.members.lock().insert(key, member.clone());
        member
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
                    let room = self.rooms.linked_name(&room).to_string();
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
                    let room = self.rooms.linked_name(&room).to_string();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn taken(ids: &[&str]) -> GapCheck {
        let mut gaps = GapCheck::default();
        for id in ids {
            gaps.taken(id);
        }
        gaps
    }

    #[test]
    fn recent_transactions_forget_the_oldest_from_the_list_and_the_set_alike() {
        let mut recent: RecentTxns = (0..RECENT_TXNS + 10).map(|n| n.to_string()).collect();
        assert!(!recent.contains("9"), "the oldest are forgotten");
        assert!(recent.contains("10"));
        assert!(recent.contains(&(RECENT_TXNS + 9).to_string()));
        assert_eq!(recent.order.len(), RECENT_TXNS);
        assert_eq!(recent.ids.len(), RECENT_TXNS);
        // A transaction taken again (a retry) is not remembered twice.
        recent.push("10".into());
        assert_eq!(recent.order.len(), RECENT_TXNS);
        let newest = recent.newest(3);
        let want: Vec<String> = (RECENT_TXNS + 7..RECENT_TXNS + 10)
            .map(|n| n.to_string())
            .collect();
        assert_eq!(newest, want);
        recent.push("new".into());
        assert!(!recent.contains("10") && recent.contains("new"));
    }

    #[test]
    fn a_gap_is_refused_once_and_filled_by_the_retry() {
        let mut gaps = taken(&["7", "8"]);
        assert_eq!(gaps.check("9"), None, "the next one");
        assert_eq!(gaps.check("8"), None, "a repeat is not a gap");
        assert_eq!(gaps.check("11"), Some(9..=10));
        // The homeserver retries from the oldest it holds: 9, 10, then 11 again.
        assert_eq!(gaps.check("9"), None);
        gaps.taken("9");
        assert_eq!(gaps.check("10"), None);
        gaps.taken("10");
        assert_eq!(gaps.check("11"), None);
        assert_eq!(gaps.unfilled, 0);
    }

    #[test]
    fn a_gap_that_stays_is_accepted_on_the_retry_and_repeated_ones_end_the_check() {
        let mut gaps = taken(&["1"]);
        for round in 0..UNFILLED_GAPS {
            let next = 10 * (u64::from(round) + 1);
            let id = next.to_string();
            assert!(gaps.check(&id).is_some(), "round {round}");
            assert_eq!(gaps.check(&id), None, "taken on its retry");
            gaps.taken(&id);
        }
        assert_eq!(gaps.check("1000"), None, "no longer checked");
    }

    #[test]
    fn ids_that_are_not_plain_numbers_are_never_checked() {
        assert_eq!(taken(&["abc"]).check("xyz"), None);
        assert_eq!(taken(&["1"]).check("0005"), None);
        assert_eq!(taken(&["1"]).check("+5"), None);
        assert_eq!(taken(&["0005"]).check("7"), None, "nothing plain taken yet");
        assert_eq!(taken(&[]).check("5"), None, "nothing taken yet");
        assert_eq!(taken(&["0"]).check("2"), Some(1..=1));
    }
}
