//! The `type = "matrix"` adapter in relay mode, for admins who cannot register an appservice:
//! one ordinary account (the relay bot) logs in with matrix-sdk, follows the linked rooms with
//! `/sync`, and posts everyone else's messages as `<Name> text` (bold name in the formatted
//! body).
//!
//! Guarantees: the sync token is saved only after every event of the batch it ends is durably
//! stored, so a crash or restart resumes from the last stored batch (redelivered events are
//! deduplicated by event ID). A room whose timeline the homeserver cut (`limited`: more news
//! than [`TIMELINE_LIMIT`] since the last sync, e.g. after a long downtime) has the gap fetched
//! with `/messages` back to the previous sync token, so nothing is skipped. The session (user,
//! device, access token) is kept in the store, so a restart reuses the device instead of
//! creating one per start. Sends carry the neutral event ID as transaction ID; the bot's own
//! events are never bridged.
//!
//! History is not bridged: the first sync of a new bot only finds where the stream stands, and
//! in a room the bot joins later, what the homeserver sends from before the bot's join is left
//! out.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bridge_core::{
    Adapter, AdapterContext, AdapterError, AdapterId, AttachmentBody, AttachmentLimit, Backoff,
    Capabilities, Delivered, EventKind, InboundEvent, OutboundEvent, Pending, RemoteEventId,
    RemoteRoomId, Submitted,
};
use matrix_sdk::authentication::matrix::MatrixSession;
use matrix_sdk::config::SyncSettings;
use parking_lot::Mutex;
use ruma::{OwnedRoomId, OwnedUserId};
use serde_json::Value;

use crate::homeserver::{As, Homeserver};
use crate::settings::{Mode, RelayLogin, Settings};
use crate::translate::ids::Naming;
use crate::translate::inbound::{self as tr_in, Ephemeral, InboundCtx};
use crate::translate::outbound::{self as tr_out, Action, Voice};

/// Store keys.
const SESSION_KEY: &[u8] = b"relay/session";
const SINCE_KEY: &[u8] = b"relay/since";
/// How long one `/sync` long-poll waits for news.
const SYNC_TIMEOUT: Duration = Duration::from_secs(30);
/// The most events of one room one `/sync` answer carries; more are fetched with `/messages`.
pub const TIMELINE_LIMIT: u32 = 50;
/// The most events fetched to fill one room's gap (a longer gap loses its oldest events, and
/// says so in the log).
const MAX_GAP: usize = 10_000;

/// The Matrix adapter as a relay bot.
#[derive(Debug, Clone)]
pub struct RelayAdapter {
    inner: Arc<Inner>,
}

struct Inner {
    id: AdapterId,
    settings: Settings,
    user: String,
    login: RelayLogin,
    relay_format: String,
    /// Mentions of Matrix users only (a relay has no ghosts).
    naming: Naming,
    /// The bot's session once logged in: its client-server connection and user ID.
    session: Mutex<Option<(Homeserver, OwnedUserId)>>,
    /// The device of the session, once logged in.
    device: Mutex<Option<String>>,
    /// Whether the bot is past its first sync and the last one succeeded.
    syncing: AtomicBool,
    ctx: Mutex<Option<AdapterContext>>,
    typing: Mutex<HashMap<String, Vec<String>>>,
    /// Linked rooms named by alias, and their room IDs.
    rooms: crate::rooms::RoomNames,
    /// Display names by (room, user), from the member events synced, in timeline order (the
    /// SDK's member store holds the state at the end of a batch, not at each message).
    names: Mutex<HashMap<(String, String), Option<String>>>,
    upload_limit: Mutex<Option<u64>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayAdapter")
            .field("id", &self.id)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl RelayAdapter {
    /// An adapter with these settings (no I/O until [`Adapter::run`]).
    pub fn new(id: AdapterId, settings: Settings) -> Result<Self, AdapterError> {
        let Mode::Relay {
            user,
            login,
            relay_format,
        } = &settings.mode
        else {
            return Err(AdapterError::Permanent(format!(
                "{id}: not a relay section"
            )));
        };
        let server_name = user.rsplit_once(':').map(|(_, s)| s).unwrap_or_default();
        Ok(Self {
            inner: Arc::new(Inner {
                naming: Naming {
                    // No user ID starts with this: nothing is taken for a ghost.
                    prefix: "\u{0}relay-has-no-ghosts\u{0}".into(),
                    server_name: server_name.to_owned(),
                },
                user: user.clone(),
                login: login.clone(),
                relay_format: relay_format.clone(),
                id,
                settings,
                session: Mutex::new(None),
                device: Mutex::new(None),
                syncing: AtomicBool::new(false),
                ctx: Mutex::new(None),
                typing: Mutex::new(HashMap::new()),
                rooms: crate::rooms::RoomNames::default(),
                names: Mutex::new(HashMap::new()),
                upload_limit: Mutex::new(None),
            }),
        })
    }

    /// The bot's user ID and device ID while logged in (the device is the one stored with the
    /// session, reused across restarts).
    pub fn logged_in_as(&self) -> Option<(String, String)> {
        let user = self.inner.session.lock().as_ref()?.1.to_string();
        let device = self.inner.device.lock().clone()?;
        Some((user, device))
    }

    /// True while the bot follows its rooms: its first sync is done, so what is posted in a
    /// linked room from now on is bridged (what was posted before is history), and the last
    /// sync succeeded.
    pub fn is_syncing(&self) -> bool {
        self.inner.syncing.load(Ordering::Acquire)
    }
}

/// Why a session ended.
enum Ended {
    Shutdown,
    Failed(AdapterError),
}

impl Inner {
    fn ctx(&self) -> Result<AdapterContext, AdapterError> {
        self.ctx
            .lock()
            .clone()
            .ok_or_else(|| AdapterError::transient("the adapter is not running"))
    }

    fn session(&self) -> Result<(Homeserver, OwnedUserId), AdapterError> {
        self.session
            .lock()
            .clone()
            .ok_or_else(|| AdapterError::transient("the relay bot is not logged in yet"))
    }

    /// Logs in (or restores the stored session) and returns the SDK client.
    async fn log_in(&self, ctx: &AdapterContext) -> Result<matrix_sdk::Client, AdapterError> {
        let failed = |e: matrix_sdk::Error| AdapterError::transient(e.to_string());
        let client = matrix_sdk::Client::builder()
            .homeserver_url(&self.settings.homeserver)
            .build()
            .await
            .map_err(|e| AdapterError::transient(format!("cannot reach the homeserver: {e}")))?;
        let store = ctx.store();
        let stored: Option<MatrixSession> = store
            .get(SESSION_KEY)
            .map_err(|e| AdapterError::transient(e.to_string()))?
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        let auth = client.matrix_auth();
        match (&self.login, stored) {
            (RelayLogin::Password(_), Some(session)) if session.meta.user_id == self.user => {
                client.restore_session(session).await.map_err(failed)?;
            }
            (RelayLogin::Password(password), _) => {
                auth.login_username(&self.user, password)
                    .initial_device_display_name("bridge relay")
                    .send()
                    .await
                    .map_err(|e| match e.as_client_api_error() {
                        Some(api) if api.status_code.as_u16() == 403 => {
                            AdapterError::Auth(format!("login refused for {}: {e}", self.user))
                        }
                        _ => AdapterError::transient(format!("login failed: {e}")),
                    })?;
                if let Some(session) = auth.session() {
                    let json = serde_json::to_vec(&session).unwrap_or_default();
                    store
                        .put(SESSION_KEY, &json)
                        .map_err(|e| AdapterError::transient(e.to_string()))?;
                }
            }
            (RelayLogin::AccessToken(token), _) => {
                let hs = Homeserver::new(&self.settings.homeserver, token, false)?;
                let me = hs
                    .call(
                        ruma::api::client::account::whoami::v3::Request::new(),
                        As::Bot,
                    )
                    .await?;
                let device_id = me
                    .device_id
                    .unwrap_or_else(|| ruma::OwnedDeviceId::from("BRIDGE"));
                let session = MatrixSession {
                    meta: matrix_sdk::SessionMeta {
                        user_id: me.user_id,
                        device_id,
                    },
                    tokens: matrix_sdk::SessionTokens {
                        access_token: token.clone(),
                        refresh_token: None,
                    },
                };
                client.restore_session(session).await.map_err(failed)?;
            }
        }
        let (Some(token), Some(user)) = (client.access_token(), client.user_id()) else {
            return Err(AdapterError::Auth("logged in without a session".into()));
        };
        let hs = Homeserver::new(&self.settings.homeserver, &token, false)?;
        *self.session.lock() = Some((hs, user.to_owned()));
        *self.device.lock() = client.device_id().map(|d| d.to_string());
        Ok(client)
    }

    /// One session: log in, join the linked rooms, then sync until shut down or failed.
    async fn session_loop(&self, ctx: &AdapterContext) -> Ended {
        let client = match self.log_in(ctx).await {
            Ok(client) => client,
            Err(e) => return Ended::Failed(e),
        };
        let Ok((hs, me)) = self.session() else {
            return Ended::Failed(AdapterError::transient("no session"));
        };
        for room in ctx.linked_rooms() {
            if let Err(e) = self.join(&hs, &room).await {
                tracing::error!(adapter = %self.id, %room, error = %e, "the relay bot cannot join a linked room; invite it");
            }
        }
        if let Ok(config) = hs
            .call(
                ruma::api::client::authenticated_media::get_media_config::v1::Request::new(),
                As::Bot,
            )
            .await
        {
            *self.upload_limit.lock() = Some(u64::from(config.upload_size));
        }
        let mut since = ctx
            .store()
            .get(SINCE_KEY)
            .ok()
            .flatten()
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        let mut connected = false;
        loop {
            let mut settings = SyncSettings::new().timeout(SYNC_TIMEOUT);
            if let Some(token) = &since {
                settings = settings
                    .token(token.clone())
                    .filter(sync_filter(TIMELINE_LIMIT));
            } else {
                // Where the stream stands, and the rooms' state (members' names): no history.
                settings = settings.filter(sync_filter(1));
            }
            let response = tokio::select! {
                () = ctx.shutdown().cancelled() => return Ended::Shutdown,
                r = client.sync_once(settings) => r,
            };
            let response = match response {
                Ok(response) => response,
                Err(e) => {
                    let error = match e.as_client_api_error() {
                        Some(api) if api.status_code.as_u16() == 401 => {
                            // The stored session is no longer valid (logged out, device
                            // deleted): log in afresh next time, at once when the password
                            // allows it; a refused access token waits for an admin.
                            let _ = ctx.store().delete(SESSION_KEY);
                            match self.login {
                                RelayLogin::Password(_) => AdapterError::transient(format!(
                                    "the session was refused, logging in again: {e}"
                                )),
                                RelayLogin::AccessToken(_) => AdapterError::Auth(e.to_string()),
                            }
                        }
                        _ => AdapterError::transient(e.to_string()),
                    };
                    return Ended::Failed(error);
                }
            };
            if !connected {
                ctx.set_connected(true);
                connected = true;
                tracing::info!(adapter = %self.id, user = %me, "matrix relay connected");
            }
            // The first sync of a new bot is the rooms' past: nothing to bridge from it.
            if let Some(since) = &since
                && let Err(e) = self
                    .take_batch(ctx, &client, &hs, &me, since, &response)
                    .await
            {
                return Ended::Failed(e);
            }
            for room in response.rooms.invited.keys() {
                let linked = ctx
                    .linked_rooms()
                    .iter()
                    .any(|r| r.as_str() == room.as_str());
                if linked && let Err(e) = join(&hs, &RemoteRoomId::new(room.as_str())).await {
                    tracing::warn!(adapter = %self.id, %room, error = %e, "cannot accept an invite");
                }
            }
            if let Err(e) = ctx.store().put(SINCE_KEY, response.next_batch.as_bytes()) {
                return Ended::Failed(AdapterError::transient(e.to_string()));
            }
            if let Err(e) = ctx.store().flush().await {
                return Ended::Failed(AdapterError::transient(e.to_string()));
            }
            since = Some(response.next_batch);
            self.syncing.store(true, Ordering::Release);
        }
    }

    /// Hands one sync batch to the core and waits until it is stored.
    async fn take_batch(
        &self,
        ctx: &AdapterContext,
        client: &matrix_sdk::Client,
        hs: &Homeserver,
        me: &OwnedUserId,
        since: &str,
        response: &matrix_sdk::sync::SyncResponse,
    ) -> Result<(), AdapterError> {
        let ictx = InboundCtx {
            adapter: &self.id,
            naming: &self.naming,
        };
        let mut pending: Vec<Pending> = Vec::new();
        for (room_id, update) in &response.rooms.joined {
            let room = client.get_room(room_id);
            let mut events: Vec<Value> = Vec::new();
            if update.timeline.limited
                && let Some(prev_batch) = &update.timeline.prev_batch
            {
                events = self.gap(hs, room_id, prev_batch, since).await?;
            }
            events.extend(
                update
                    .timeline
                    .events
                    .iter()
                    .filter_map(|item| serde_json::from_str::<Value>(item.raw().json().get()).ok()),
            );
            // A room the bot (re)joined in this batch: what came before the join is history.
            if let Some(join) = events.iter().rposition(|e| is_own_join(e, me.as_str())) {
                events.drain(..=join);
            }
            for event in &events {
                let sender = event
                    .get("sender")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                self.remember_name(room_id.as_str(), event);
                if sender == me.as_str() {
                    continue;
                }
                let mut inbound = match tr_in::timeline_event(event, Some(room_id.as_str()), &ictx)
                {
                    Ok(Some(inbound)) => inbound,
                    Ok(None) => continue,
                    Err(e) => {
                        ctx.counter("bridge_matrix_malformed_total").increment(1);
                        tracing::warn!(adapter = %self.id, room = %room_id, error = %e, "malformed event skipped");
                        continue;
                    }
                };
                if inbound.sender.display_name.is_none() {
                    inbound.sender.display_name = self
                        .display_name(hs, room.as_ref(), room_id, inbound.sender.id.as_str())
                        .await;
                }
                // The core knows the room by the name it was linked by (an alias, perhaps).
                inbound.room = self.rooms.linked_name(inbound.room.as_str());
                pending.push(
                    ctx.enqueue(inbound)
                        .map_err(|e| AdapterError::transient(e.to_string()))?,
                );
            }
            for raw in &update.ephemeral {
                let Ok(event) = serde_json::from_str::<Value>(raw.json().get()) else {
                    continue;
                };
                self.ephemeral(ctx, me, &event, room_id.as_str());
            }
        }
        for p in pending {
            if let Submitted::Rejected(why) = p.durable().await {
                tracing::info!(adapter = %self.id, %why, "event refused by the core");
            }
        }
        Ok(())
    }

    /// The events of a room between the sync token `since` and `prev_batch` (the start of a
    /// cut timeline), oldest first, from `/messages`.
    async fn gap(
        &self,
        hs: &Homeserver,
        room: &OwnedRoomId,
        prev_batch: &str,
        since: &str,
    ) -> Result<Vec<Value>, AdapterError> {
        use ruma::api::client::message::get_message_events::v3::Request;
        let mut newest_first = Vec::new();
        let mut from = prev_batch.to_owned();
        loop {
            let mut request = Request::new(room.clone(), ruma::api::Direction::Backward);
            request.from = Some(from.clone());
            request.to = Some(since.to_owned());
            request.limit = ruma::UInt::from(100u32);
            let answer = hs.call(request, As::Bot).await?;
            let done = answer.chunk.is_empty();
            newest_first.extend(
                answer
                    .chunk
                    .iter()
                    .filter_map(|raw| serde_json::from_str::<Value>(raw.json().get()).ok()),
            );
            match answer.end {
                Some(end) if !done && end != from && newest_first.len() < MAX_GAP => from = end,
                _ => break,
            }
        }
        if newest_first.len() >= MAX_GAP {
            tracing::warn!(adapter = %self.id, %room, max = MAX_GAP,
                "the gap since the last sync is too long: its oldest events are not bridged");
        }
        tracing::debug!(adapter = %self.id, %room, events = newest_first.len(), "gap filled");
        newest_first.reverse();
        Ok(newest_first)
    }

    /// A member's display name: from the member events synced, else the SDK's member store
    /// (the state the first sync gave), else asked once (after a restart, the SDK's store
    /// starts empty and an incremental sync only brings changes).
    async fn display_name(
        &self,
        hs: &Homeserver,
        room: Option<&matrix_sdk::Room>,
        room_id: &OwnedRoomId,
        user: &str,
    ) -> Option<String> {
        let key = (room_id.to_string(), user.to_owned());
        if let Some(name) = self.names.lock().get(&key) {
            return name.clone();
        }
        let user_id = ruma::UserId::parse(user).ok()?;
        if let Some(room) = room
            && let Ok(Some(member)) = room.get_member_no_sync(&user_id).await
        {
            return member.display_name().map(str::to_owned);
        }
        let request = ruma::api::client::state::get_state_event_for_key::v3::Request::new(
            room_id.clone(),
            ruma::events::StateEventType::RoomMember,
            user.to_owned(),
        );
        let name = match hs.call(request, As::Bot).await {
            Ok(answer) => serde_json::from_str::<Value>(answer.event_or_content.get())
                .ok()
                .and_then(|content| {
                    content
                        .get("displayname")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                }),
            Err(e) => {
                tracing::debug!(adapter = %self.id, room = %room_id, %user, error = %e, "no member state");
                None
            }
        };
        self.names.lock().insert(key, name.clone());
        name
    }

    /// Learns a member's display name from a member event (forgets it when they leave).
    fn remember_name(&self, room: &str, event: &Value) {
        if event.get("type").and_then(Value::as_str) != Some("m.room.member") {
            return;
        }
        let Some(user) = event.get("state_key").and_then(Value::as_str) else {
            return;
        };
        let key = (room.to_owned(), user.to_owned());
        if event.pointer("/content/membership").and_then(Value::as_str) == Some("join") {
            let name = event
                .pointer("/content/displayname")
                .and_then(Value::as_str)
                .map(str::to_owned);
            self.names.lock().insert(key, name);
        } else {
            self.names.lock().remove(&key);
        }
    }

    fn ephemeral(&self, ctx: &AdapterContext, me: &OwnedUserId, event: &Value, room: &str) {
        let Ok(items) = tr_in::ephemeral_event(event, Some(room)) else {
            return;
        };
        for item in items {
            match item {
                Ephemeral::Typing { room, users } => {
                    let room = self.rooms.linked_name(&room).to_string();
                    let users: Vec<String> =
                        users.into_iter().filter(|u| u != me.as_str()).collect();
                    let old = self
                        .typing
                        .lock()
                        .insert(room.clone(), users.clone())
                        .unwrap_or_default();
                    for (user, active) in tr_in::typing_changes(&old, &users) {
                        let _ = ctx.enqueue(InboundEvent::new(
                            room.as_str(),
                            None,
                            user.as_str(),
                            EventKind::Typing { active },
                        ));
                    }
                }
                Ephemeral::Read {
                    room,
                    user,
                    event_id,
                } if user != me.as_str() => {
                    let room = self.rooms.linked_name(&room).to_string();
                    let _ = ctx.enqueue(InboundEvent::new(
                        room.as_str(),
                        None,
                        user.as_str(),
                        EventKind::ReadMarker {
                            up_to: RemoteEventId::new(event_id),
                        },
                    ));
                }
                Ephemeral::Read { .. } => {}
            }
        }
    }

    async fn send(&self, event: OutboundEvent) -> Result<Delivered, AdapterError> {
        let voice = Voice::Relay {
            format: &self.relay_format,
        };
        let actions = tr_out::actions(&event, &self.naming, &voice)?;
        let (hs, me) = self.session()?;
        let room = self.rooms.resolve(&hs, &event.room).await?;
        let mut first = None;
        for (i, action) in actions.into_iter().enumerate() {
            let txn = crate::calls::txn_id(&event.id, i);
            let produced = match action {
                Action::Send {
                    event_type,
                    content,
                } => Some(
                    crate::calls::send_event(&hs, As::Bot, &room, &txn, &event_type, &content)
                        .await?,
                ),
                Action::SendFile {
                    attachment,
                    msgtype,
                    caption,
                    reply_to,
                    thread,
                } => {
                    let file = crate::calls::FileParts {
                        attachment: &attachment,
                        msgtype,
                        caption: caption.as_ref(),
                        reply_to: reply_to.as_deref(),
                        thread: thread.as_deref(),
                    };
                    let content = crate::calls::file_message(
                        &hs,
                        As::Bot,
                        &self.ctx()?,
                        &self.id,
                        &event,
                        &file,
                        &voice,
                        self.file_limit(),
                    )
                    .await?;
                    Some(
                        crate::calls::send_event(
                            &hs,
                            As::Bot,
                            &room,
                            &txn,
                            "m.room.message",
                            &content,
                        )
                        .await?,
                    )
                }
                Action::Redact { event_id, reason } => {
                    Some(crate::calls::redact(&hs, As::Bot, &room, &event_id, txn, reason).await?)
                }
                Action::State {
                    event_type,
                    state_key,
                    content,
                } => Some(
                    crate::calls::put_state(&hs, As::Bot, &room, &event_type, state_key, &content)
                        .await?,
                ),
                // The bot does not stand for anyone's typing, reading, presence, membership
                // or standing.
                Action::Typing { .. }
                | Action::Receipt { .. }
                | Action::Join
                | Action::Leave { .. }
                | Action::Profile { .. }
                | Action::Power { .. }
                | Action::Moderate { .. } => None,
            };
            if first.is_none() {
                first = produced;
            }
        }
        Ok(Delivered {
            native_id: first.map(|id| RemoteEventId::new(id.as_str())),
            puppet: Some(bridge_core::RemoteUserId::new(me.as_str())),
        })
    }

    /// Joins a linked room (by ID or alias) and learns its room ID.
    async fn join(&self, hs: &Homeserver, room: &RemoteRoomId) -> Result<(), AdapterError> {
        join(hs, room).await?;
        self.rooms.resolve(hs, room).await.map(|_| ())
    }

    fn file_limit(&self) -> u64 {
        let ours = self.settings.max_file_size;
        self.upload_limit.lock().map_or(ours, |hs| hs.min(ours))
    }
}

/// The sync filter: at most `timeline` events per room, no presence.
fn sync_filter(timeline: u32) -> ruma::api::client::sync::sync_events::v3::Filter {
    let mut filter = ruma::api::client::filter::FilterDefinition::empty();
    filter.room.timeline.limit = Some(ruma::UInt::from(timeline));
    filter.presence = ruma::api::client::filter::Filter::ignore_all();
    ruma::api::client::sync::sync_events::v3::Filter::FilterDefinition(filter)
}

/// Whether `event` is `me` joining the room (not a change of name or avatar while joined).
fn is_own_join(event: &Value, me: &str) -> bool {
    event.get("type").and_then(Value::as_str) == Some("m.room.member")
        && event.get("state_key").and_then(Value::as_str) == Some(me)
        && event.pointer("/content/membership").and_then(Value::as_str) == Some("join")
        && event
            .pointer("/unsigned/prev_content/membership")
            .and_then(Value::as_str)
            != Some("join")
}

/// Joins a room by ID or alias (`POST /join/{room}`).
async fn join(hs: &Homeserver, room: &RemoteRoomId) -> Result<(), AdapterError> {
    let target = ruma::OwnedRoomOrAliasId::try_from(room.as_str())
        .map_err(|e| AdapterError::Permanent(format!("{room} is not a room ID or alias: {e}")))?;
    hs.call(
        ruma::api::client::membership::join_room_by_id_or_alias::v3::Request::new(target),
        As::Bot,
    )
    .await?;
    Ok(())
}

#[async_trait]
impl Adapter for RelayAdapter {
    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::all();
        // The bot cannot show other people's reactions, typing, reading, membership or roles
        // as theirs: the core turns reactions into text and leaves the rest out.
        caps.reactions = false;
        caps.typing = false;
        caps.read_markers = false;
        caps.membership = false;
        caps.profile = false;
        caps.presence = false;
        caps.roles = false;
        caps.moderation = false;
        caps.custom_events = false;
        caps.attachments = Some(AttachmentLimit {
            max_bytes: Some(self.inner.file_limit()),
        });
        caps
    }

    async fn run(&self, ctx: AdapterContext) -> Result<(), AdapterError> {
        let inner = &self.inner;
        *inner.ctx.lock() = Some(ctx.clone());
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
        loop {
            match inner.session_loop(&ctx).await {
                Ended::Shutdown => break,
                Ended::Failed(e) => {
                    inner.syncing.store(false, Ordering::Release);
                    ctx.set_connected(false);
                    let wait = match &e {
                        AdapterError::Auth(_) => Duration::from_secs(60),
                        _ => backoff.next_delay(),
                    };
                    tracing::warn!(adapter = %inner.id, error = %e, ?wait, "matrix relay session ended; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = ctx.shutdown().cancelled() => break,
                    }
                }
            }
        }
        inner.syncing.store(false, Ordering::Release);
        *inner.ctx.lock() = None;
        Ok(())
    }

    async fn send(&self, event: OutboundEvent) -> Result<Delivered, AdapterError> {
        self.inner.send(event).await
    }

    async fn join(&self, room: &RemoteRoomId) -> Result<(), AdapterError> {
        let (hs, _) = self.inner.session()?;
        self.inner.join(&hs, room).await
    }

    async fn leave(&self, room: &RemoteRoomId) -> Result<(), AdapterError> {
        let (hs, _) = self.inner.session()?;
        hs.call(
            ruma::api::client::membership::leave_room::v3::Request::new(
                self.inner.rooms.resolve(&hs, room).await?,
            ),
            As::Bot,
        )
        .await?;
        Ok(())
    }

    /// An `m.notice` from the relay's own account (its own events are never taken back as
    /// inbound ones).
    async fn send_notice(&self, room: &RemoteRoomId, text: &str) -> Result<(), AdapterError> {
        let (hs, _) = self.inner.session()?;
        let room = self.inner.rooms.resolve(&hs, room).await?;
        crate::calls::send_notice(&hs, As::Bot, &room, text).await?;
        Ok(())
    }

    async fn fetch_attachment(
        &self,
        attachment: &bridge_core::Attachment,
    ) -> Result<AttachmentBody, AdapterError> {
        let (hs, _) = self.inner.session()?;
        Ok(hs
            .download(&attachment.url, self.inner.settings.max_file_size)
            .await?)
    }
}
