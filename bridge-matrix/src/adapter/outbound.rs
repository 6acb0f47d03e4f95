//! The core's events into Matrix, as ghosts.
//!
//! Each event becomes a short list of homeserver calls ([`crate::translate::outbound::actions`]),
//! made in order as the author's ghost (registered, named and joined first when needed). Every
//! send and redaction carries a transaction ID made from the neutral event ID (and the action's
//! position), so a retry after a crash or a timeout is recognised by the homeserver and never
//! duplicates; a message also carries it in its content, so that a send whose answer was lost
//! while the homeserver restarted (which forgets appservice transaction IDs) is found in the
//! room instead of being sent twice.

use bridge_core::{
    AdapterError, Delivered, ModerationAction, OutboundEvent, RemoteEventId, RemoteRoomId,
    RemoteUserId, Sender,
};
use ruma::api::client::message::get_message_events;
use ruma::api::client::{receipt::create_receipt, room::create_room, typing::create_typing_event};
use ruma::events::receipt::ReceiptThread;
use ruma::{OwnedEventId, OwnedRoomId, OwnedTransactionId, UserId};

use super::Inner;
use super::ghosts::{GhostProfile, user_id};
use crate::homeserver::{As, HsError};
use crate::translate::outbound::{self as tr, Action, Voice};

/// The profile a ghost shows for a sender.
fn profile_of(sender: &Sender) -> GhostProfile<'_> {
    GhostProfile {
        name: sender.display_name.as_deref(),
        avatar: sender.avatar.as_deref(),
        source: &sender.adapter,
    }
}

/// The content key of a ghost's message that carries its transaction ID (see
/// [`Inner::send_event`]).
pub(crate) const TXN_FIELD: &str = "net.bridge.txn_id";
/// How many of a ghost's latest events in a room are read to find an earlier attempt of a send.
const LOOK_BACK: u32 = 20;
/// Most sends remembered as possibly stored (a homeserver down for long fails many).
const MAX_UNSURE: usize = 10_000;

/// How long a ghost shows as typing unless told otherwise.
const TYPING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl Inner {
    /// Delivers one event (see the module docs).
    pub(super) async fn send(&self, event: OutboundEvent) -> Result<Delivered, AdapterError> {
        let actions = tr::actions(&event, &self.naming, &Voice::Ghost)?;
        if actions.is_empty() {
            return Ok(Delivered::default());
        }
        let ghost = user_id(
            &self
                .naming
                .ghost_user_id(&event.sender.adapter, &event.sender.user),
        )?;
        let room = self.room_id(&event.room).await?;
        let ctx = self.ctx()?;
        self.ghosts
            .ensure(
                &self.hs,
                &ctx,
                &self.id,
                &ghost,
                Some(&room),
                profile_of(&event.sender),
            )
            .await?;
        let mut first: Option<OwnedEventId> = None;
        for (i, action) in actions.into_iter().enumerate() {
            let txn = crate::calls::txn_id(&event.id, i);
            let produced = self.act(&event, &room, &ghost, txn, action).await?;
            if first.is_none() {
                first = produced;
            }
        }
        Ok(Delivered {
            native_id: first.map(|id| RemoteEventId::new(id.as_str())),
            puppet: Some(RemoteUserId::new(ghost.as_str())),
        })
    }

    /// One homeserver call as the ghost; the event ID it produced, if any.
    async fn act(
        &self,
        event: &OutboundEvent,
        room: &OwnedRoomId,
        ghost: &UserId,
        txn: OwnedTransactionId,
        action: Action,
    ) -> Result<Option<OwnedEventId>, AdapterError> {
        let store = self.ctx()?.store().clone();
        let joined = || self.ghosts.join(&self.hs, &store, room, ghost);
        match action {
            Action::Send {
                event_type,
                content,
            } => {
                joined().await?;
                let id = self
                    .send_event(room, ghost, &txn, &event_type, &content)
                    .await?;
                tracing::debug!(adapter = %self.id, %room, %txn, event_id = %id, "sent");
                Ok(Some(id))
            }
            Action::SendFile {
                attachment,
                msgtype,
                caption,
                reply_to,
                thread,
            } => {
                joined().await?;
                let file = crate::calls::FileParts {
                    attachment: &attachment,
                    msgtype,
                    caption: caption.as_ref(),
                    reply_to: reply_to.as_deref(),
                    thread: thread.as_deref(),
                };
                let content = crate::calls::file_message(
                    &self.hs,
                    As::Ghost(ghost),
                    &self.ctx()?,
                    &self.id,
                    event,
                    &file,
                    &Voice::Ghost,
                    self.file_limit(),
                )
                .await?;
                let id = self
                    .send_event(room, ghost, &txn, "m.room.message", &content)
                    .await?;
                Ok(Some(id))
            }
            Action::Redact { event_id, reason } => {
                let id =
                    crate::calls::redact(&self.hs, As::Ghost(ghost), room, &event_id, txn, reason)
                        .await?;
                Ok(Some(id))
            }
            Action::State {
                event_type,
                state_key,
                content,
            } => {
                joined().await?;
                let id = crate::calls::put_state(
                    &self.hs,
                    As::Ghost(ghost),
                    room,
                    &event_type,
                    state_key,
                    &content,
                )
                .await?;
                Ok(Some(id))
            }
            Action::Typing { active } => {
                if !self.ghosts.is_joined(room.as_str(), ghost.as_str()) {
                    return Ok(None);
                }
                let state = if active {
                    create_typing_event::v3::Typing::Yes(create_typing_event::v3::TypingInfo::new(
                        TYPING_TIMEOUT,
                    ))
                } else {
                    create_typing_event::v3::Typing::No
                };
                let request =
                    create_typing_event::v3::Request::new(ghost.to_owned(), room.clone(), state);
                self.hs.call(request, As::Ghost(ghost)).await?;
                Ok(None)
            }
            Action::Receipt { event_id } => {
                if !self.ghosts.is_joined(room.as_str(), ghost.as_str()) {
                    return Ok(None);
                }
                let target = OwnedEventId::try_from(event_id.as_str()).map_err(|e| {
                    AdapterError::Permanent(format!("{event_id} is not an event ID: {e}"))
                })?;
                let request = create_receipt::v3::Request::new(
                    room.clone(),
                    create_receipt::v3::ReceiptType::Read,
                    target,
                );
                let mut request = request;
                request.thread = ReceiptThread::Unthreaded;
                self.hs.call(request, As::Ghost(ghost)).await?;
                Ok(None)
            }
            Action::Join => {
                joined().await?;
                Ok(None)
            }
            Action::Leave { reason } => {
                if self.ghosts.is_joined(room.as_str(), ghost.as_str()) {
                    self.ghost_leaves(room, ghost, reason).await?;
                }
                Ok(None)
            }
            Action::Power { role } => self.set_role(room, ghost, role).await,
            Action::Moderate {
                user,
                action,
                reason,
            } => {
                joined().await?;
                self.moderate(room, ghost, &user, action, reason).await?;
                Ok(None)
            }
            Action::Profile {
                display_name,
                avatar,
            } => {
                let ctx = self.ctx()?;
                let profile = GhostProfile {
                    name: display_name.as_deref(),
                    avatar: avatar.as_deref(),
                    source: &event.sender.adapter,
                };
                self.ghosts
                    .ensure(&self.hs, &ctx, &self.id, ghost, Some(room), profile)
                    .await?;
                Ok(None)
            }
        }
    }

    /// `PUT /rooms/{room}/send/{type}/{txn}` as the ghost; a ghost that is no longer in the
    /// room (kicked, or the joined set was wrong) joins again and sends once more.
    ///
    /// The content carries the transaction ID under [`TXN_FIELD`]. A homeserver recognises a
    /// repeated transaction ID only while it remembers it: Synapse keeps an appservice's
    /// transaction IDs in memory, so a send whose answer was lost as it restarted (the event
    /// stored, the connection closed) would be stored again when repeated. So when the last
    /// attempt of this send got no answer (or a 5xx), and for the first send into each room
    /// in this process (the previous one may have been killed mid-send), the ghost's latest
    /// events in the room are read first, and an event carrying this transaction ID is taken as
    /// the delivery.
    async fn send_event(
        &self,
        room: &OwnedRoomId,
        ghost: &UserId,
        txn: &OwnedTransactionId,
        event_type: &str,
        content: &serde_json::Value,
    ) -> Result<OwnedEventId, AdapterError> {
        let unsure = self.unsure.lock().contains(txn.as_str())
            || self.checked_rooms.lock().insert(room.to_string());
        let earlier = if unsure {
            match self.sent_before(room, ghost, txn).await {
                Ok(found) => found,
                Err(e @ (AdapterError::Transient { .. } | AdapterError::Auth(_))) => {
                    return Err(e);
                }
                Err(e) => {
                    // The history cannot be read here: send (the homeserver's own dedup is
                    // still there while it runs).
                    tracing::warn!(adapter = %self.id, %room, %txn, error = %e,
                        "cannot look for an earlier attempt of this send");
                    None
                }
            }
        } else {
            None
        };
        if let Some(id) = earlier {
            tracing::info!(adapter = %self.id, %room, %txn, event_id = %id,
                "an earlier attempt of this send was stored; not sending it again");
            self.unsure.lock().remove(txn.as_str());
            return Ok(id);
        }
        let mut content = content.clone();
        if let Some(fields) = content.as_object_mut() {
            fields.insert(TXN_FIELD.into(), txn.as_str().into());
        }
        let content = &content;
        let send =
            || crate::calls::send_event(&self.hs, As::Ghost(ghost), room, txn, event_type, content);
        let outcome = match send().await {
            Err(e) if e.status() == Some(403) => {
                tracing::info!(adapter = %self.id, %room, %ghost, error = %e, "send refused; joining again");
                let store = self.ctx()?.store().clone();
                self.ghosts
                    .mark_left(&store, room.as_str(), ghost.as_str())
                    .map_err(|e| AdapterError::transient(e.to_string()))?;
                self.ghosts.join(&self.hs, &store, room, ghost).await?;
                send().await
            }
            other => other,
        };
        match outcome {
            Ok(id) => {
                self.unsure.lock().remove(txn.as_str());
                Ok(id)
            }
            Err(e) => {
                // No answer, or the homeserver failed midway: the event may be stored.
                if matches!(e, HsError::Network(_)) || e.status().is_some_and(|s| s >= 500) {
                    let mut unsure = self.unsure.lock();
                    if unsure.len() < MAX_UNSURE {
                        unsure.insert(txn.to_string());
                    }
                }
                Err(e.into())
            }
        }
    }

    /// The event the ghost already sent into `room` with transaction ID `txn`, among its
    /// latest [`LOOK_BACK`] events there (sends into a room are one at a time, so an earlier
    /// attempt is among the newest).
    /// `ghost` leaves `room` (one not in it after all is left already), and is recorded out.
    pub(super) async fn ghost_leaves(
        &self,
        room: &OwnedRoomId,
        ghost: &UserId,
        reason: Option<String>,
    ) -> Result<(), AdapterError> {
        let mut request = ruma::api::client::membership::leave_room::v3::Request::new(room.clone());
        request.reason = reason;
        match self.hs.call(request, As::Ghost(ghost)).await {
            Ok(_) => {}
            // Not in the room after all.
            Err(e) if e.status() == Some(403) => {}
            Err(e) => return Err(e.into()),
        }
        let store = self.ctx()?.store().clone();
        self.ghosts
            .mark_left(&store, room.as_str(), ghost.as_str())
            .map_err(|e| AdapterError::transient(e.to_string()))
    }

    /// Kicks, bans or unbans `user` in `room` as `ghost` (the moderator's), else as the bot:
    /// the moderator's own network let them, so the bridge does it for them where their ghost
    /// has too little power. Refused by both, the event is unsupported here (left out,
    /// counted); a kick of someone no longer in the room is done already.
    async fn moderate(
        &self,
        room: &OwnedRoomId,
        ghost: &UserId,
        user: &str,
        action: ModerationAction,
        reason: Option<String>,
    ) -> Result<(), AdapterError> {
        use ruma::api::client::membership::{ban_user, kick_user, unban_user};
        let target = user_id(user)?;
        if action == ModerationAction::Kick {
            let membership = super::ghosts::membership_of(&self.hs, room, user).await?;
            if !matches!(membership.as_deref(), Some("join" | "invite" | "knock")) {
                return Ok(());
            }
        }
        let mut refusals = Vec::new();
        for who in [As::Ghost(ghost), As::Bot] {
            let (in_room, target, reason) = (room.clone(), target.clone(), reason.clone());
            let outcome = match action {
                ModerationAction::Kick => {
                    let mut request = kick_user::v3::Request::new(in_room, target);
                    request.reason = reason;
                    self.hs.call(request, who).await.map(drop)
                }
                ModerationAction::Ban => {
                    let mut request = ban_user::v3::Request::new(in_room, target);
                    request.reason = reason;
                    self.hs.call(request, who).await.map(drop)
                }
                ModerationAction::Unban => {
                    let mut request = unban_user::v3::Request::new(in_room, target);
                    request.reason = reason;
                    self.hs.call(request, who).await.map(drop)
                }
            };
            match outcome {
                Ok(()) => {
                    if action != ModerationAction::Unban && self.naming.is_ours(user) {
                        let store = self.ctx()?.store().clone();
                        self.ghosts
                            .mark_left(&store, room.as_str(), user)
                            .map_err(|e| AdapterError::transient(e.to_string()))?;
                    }
                    tracing::info!(adapter = %self.id, %room, %user, action = action.past(), "moderation done");
                    return Ok(());
                }
                Err(e) if e.status() == Some(403) => refusals.push(e.to_string()),
                Err(e) => return Err(e.into()),
            }
        }
        // One of our ghosts the room would not remove leaves by itself: the user it stands for
        // is gone from the room on their side.
        if action != ModerationAction::Unban && self.naming.is_ours(user) {
            return self.ghost_leaves(room, &target, reason).await;
        }
        Err(AdapterError::Unsupported(format!(
            "{room}: neither {ghost} nor the bot may have {user} {}: {}",
            action.past(),
            refusals.join("; ")
        )))
    }

    /// Sets `ghost`'s power level in `room` to what shows `role`, as the bot, from the power
    /// levels as the homeserver has them now. A room where the bot may not (too low a level)
    /// refuses the event as unsupported: the core leaves it out there, counted.
    async fn set_role(
        &self,
        room: &OwnedRoomId,
        ghost: &UserId,
        role: bridge_core::Role,
    ) -> Result<Option<OwnedEventId>, AdapterError> {
        let Some((levels, creators)) = self.read_power(&RemoteRoomId::new(room.as_str())).await
        else {
            return Err(AdapterError::transient(format!(
                "cannot read the power levels of {room}"
            )));
        };
        let content =
            match tr::with_role(&levels, &creators, self.bot.as_str(), ghost.as_str(), role) {
                Ok(Some(content)) => content,
                Ok(None) => return Ok(None),
                Err(why) => return Err(AdapterError::Unsupported(why)),
            };
        let request = ruma::api::client::state::send_state_event::v3::Request::new_raw(
            room.clone(),
            ruma::events::StateEventType::RoomPowerLevels,
            String::new(),
            crate::calls::raw(&content)?,
        );
        let id = match self.hs.call(request, As::Bot).await {
            Ok(answer) => answer.event_id,
            // The homeserver judged the bot's power otherwise (a rule the check above does
            // not know): a refusal, like the check's.
            Err(e) if e.status() == Some(403) => {
                return Err(AdapterError::Unsupported(format!(
                    "{room} refused the bot's power levels: {e}"
                )));
            }
            Err(e) => return Err(e.into()),
        };
        // The levels remembered follow when the echo comes back (`own_event`), so that a
        // change someone made meanwhile is not overwritten with these.
        tracing::debug!(adapter = %self.id, %room, %ghost, role = role.name(), "power level set");
        Ok(Some(id))
    }

    async fn sent_before(
        &self,
        room: &OwnedRoomId,
        ghost: &UserId,
        txn: &OwnedTransactionId,
    ) -> Result<Option<OwnedEventId>, AdapterError> {
        let mut request = get_message_events::v3::Request::backward(room.clone());
        request.limit = LOOK_BACK.into();
        request.filter.senders = Some(vec![ghost.to_owned()]);
        // As the ghost, which is in the room (the bot is not in a direct conversation).
        let answer = self.hs.call(request, As::Ghost(ghost)).await?;
        for raw in &answer.chunk {
            let Ok(event) = serde_json::from_str::<serde_json::Value>(raw.json().get()) else {
                continue;
            };
            if event["content"][TXN_FIELD].as_str() == Some(txn.as_str())
                && let Some(id) = event["event_id"].as_str()
                && let Ok(id) = OwnedEventId::try_from(id)
            {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    /// Opens a direct conversation: the ghost of `with` creates a private room and invites
    /// `user`; the room is remembered as direct.
    pub(super) async fn open_direct(
        &self,
        user: &RemoteUserId,
        with: &Sender,
    ) -> Result<RemoteRoomId, AdapterError> {
        let ctx = self.ctx()?;
        let invitee = user_id(user.as_str())?;
        let ghost = user_id(&self.naming.ghost_user_id(&with.adapter, &with.user))?;
        self.ghosts
            .ensure(&self.hs, &ctx, &self.id, &ghost, None, profile_of(with))
            .await?;
        let mut request = create_room::v3::Request::new();
        request.invite = vec![invitee];
        request.is_direct = true;
        request.preset = Some(create_room::v3::RoomPreset::TrustedPrivateChat);
        let answer = self.hs.call(request, As::Ghost(&ghost)).await?;
        let room = answer.room_id.to_string();
        self.ghosts
            .mark_joined(ctx.store(), &room, ghost.as_str())
            .map_err(|e| AdapterError::transient(e.to_string()))?;
        self.remember_direct(ctx.store(), &room, ghost.as_str())
            .map_err(|e| AdapterError::transient(e.to_string()))?;
        tracing::info!(adapter = %self.id, %room, %ghost, %user, "direct conversation opened");
        Ok(RemoteRoomId::new(room))
    }

    /// Opens a portal: a public room with the asked alias, made by the bot, linked to the
    /// other adapter's room the alias names.
    pub(super) async fn open_portal(&self, alias: &str) -> Result<(), AdapterError> {
        let Some((adapter, far_room)) = self.naming.portal_of(alias) else {
            return Err(AdapterError::Permanent(format!(
                "{alias} does not name a room of another network"
            )));
        };
        let ctx = self.ctx()?;
        let localpart = alias
            .strip_prefix('#')
            .and_then(|rest| rest.rsplit_once(':'))
            .map(|(local, _)| local.to_owned())
            .ok_or_else(|| AdapterError::Permanent(format!("{alias} is not an alias")))?;
        let mut request = create_room::v3::Request::new();
        request.room_alias_name = Some(localpart);
        request.name = Some(far_room.to_string());
        request.preset = Some(create_room::v3::RoomPreset::PublicChat);
        let answer = self.hs.call(request, As::Bot).await?;
        let room = RemoteRoomId::new(answer.room_id.as_str());
        ctx.link_portal(&room, bridge_core::Link::new(adapter, far_room))
            .await?;
        Ok(())
    }
}
