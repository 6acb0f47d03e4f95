//! The `type = "matrix"` adapter in relay mode, for admins who cannot register an appservice:
//! one ordinary account (the relay bot) logs in with matrix-sdk, follows the linked rooms with
//! `/sync`, and posts everyone else's messages as `<Name> text` (bold name in the formatted
//! body).
//!
//! Guarantees: the sync token is saved only after every event of the batch it ends is durably
//! stored, so a crash or restart resumes from the last stored batch (redelivered events are
//! deduplicated by event ID). The session (user, device, access token) is kept in the store, so
//! a restart reuses the device instead of creating one per start. Sends carry the neutral event
//! ID as transaction ID; the bot's own events are never bridged.

use std::collections::HashMap;
use std::sync::Arc;
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
use ruma::{OwnedRoomId, OwnedTransactionId, OwnedUserId};
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
    ctx: Mutex<Option<AdapterContext>>,
    typing: Mutex<HashMap<String, Vec<String>>>,
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
                ctx: Mutex::new(None),
                typing: Mutex::new(HashMap::new()),
                upload_limit: Mutex::new(None),
            }),
        })
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
            if let Err(e) = join(&hs, &room).await {
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
                settings = settings.token(token.clone());
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
                            // The stored session is no longer valid: log in afresh next time.
                            let _ = ctx.store().delete(SESSION_KEY);
                            AdapterError::Auth(e.to_string())
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
            if since.is_some()
                && let Err(e) = self.take_batch(ctx, &client, &me, &response).await
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
        }
    }

    /// Hands one sync batch to the core and waits until it is stored.
    async fn take_batch(
        &self,
        ctx: &AdapterContext,
        client: &matrix_sdk::Client,
        me: &OwnedUserId,
        response: &matrix_sdk::sync::SyncResponse,
    ) -> Result<(), AdapterError> {
        let ictx = InboundCtx {
            adapter: &self.id,
            naming: &self.naming,
        };
        let mut pending: Vec<Pending> = Vec::new();
        for (room_id, update) in &response.rooms.joined {
            let room = client.get_room(room_id);
            for item in &update.timeline.events {
                let Ok(event) = serde_json::from_str::<Value>(item.raw().json().get()) else {
                    continue;
                };
                let sender = event
                    .get("sender")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if sender == me.as_str() {
                    continue;
                }
                let mut inbound = match tr_in::timeline_event(&event, Some(room_id.as_str()), &ictx)
                {
                    Ok(Some(inbound)) => inbound,
                    Ok(None) => continue,
                    Err(e) => {
                        ctx.counter("bridge_matrix_malformed_total").increment(1);
                        tracing::warn!(adapter = %self.id, room = %room_id, error = %e, "malformed event skipped");
                        continue;
                    }
                };
                if inbound.sender.display_name.is_none()
                    && let Some(room) = &room
                    && let Ok(user) = ruma::UserId::parse(inbound.sender.id.as_str())
                    && let Ok(Some(member)) = room.get_member_no_sync(&user).await
                {
                    inbound.sender.display_name = member.display_name().map(str::to_owned);
                }
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

    fn ephemeral(&self, ctx: &AdapterContext, me: &OwnedUserId, event: &Value, room: &str) {
        let Ok(items) = tr_in::ephemeral_event(event, Some(room)) else {
            return;
        };
        for item in items {
            match item {
                Ephemeral::Typing { room, users } => {
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
        let room = room_id(&event.room)?;
        let mut first = None;
        for (i, action) in actions.into_iter().enumerate() {
            let txn: OwnedTransactionId = if i == 0 {
                event.id.to_string().into()
            } else {
                format!("{}.{i}", event.id).into()
            };
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
                    let limit = self.file_limit();
                    let mxc = crate::calls::rehost(
                        &hs,
                        As::Bot,
                        &self.ctx()?,
                        &self.id,
                        &event.sender.adapter,
                        &attachment,
                        limit,
                    )
                    .await?;
                    let content = tr_out::file_content(
                        msgtype,
                        &attachment,
                        &mxc,
                        caption.as_ref(),
                        reply_to.as_deref(),
                        thread.as_deref(),
                        &voice,
                        &event.sender,
                    );
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
                // The bot does not stand for anyone's typing, reading, presence or membership.
                Action::Typing { .. }
                | Action::Receipt { .. }
                | Action::Join
                | Action::Leave { .. }
                | Action::Profile { .. } => None,
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

    fn file_limit(&self) -> u64 {
        let ours = self.settings.max_file_size;
        self.upload_limit.lock().map_or(ours, |hs| hs.min(ours))
    }
}

fn room_id(room: &RemoteRoomId) -> Result<OwnedRoomId, AdapterError> {
    ruma::RoomId::parse(room.as_str())
        .map_err(|e| AdapterError::Permanent(format!("{room} is not a room ID: {e}")))
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
        // The bot cannot show other people's reactions, typing, reading or membership as
        // theirs: the core turns reactions into text and leaves the rest out.
        caps.reactions = false;
        caps.typing = false;
        caps.read_markers = false;
        caps.membership = false;
        caps.profile = false;
        caps.presence = false;
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
        *inner.ctx.lock() = None;
        Ok(())
    }

    async fn send(&self, event: OutboundEvent) -> Result<Delivered, AdapterError> {
        self.inner.send(event).await
    }

    async fn join(&self, room: &RemoteRoomId) -> Result<(), AdapterError> {
        let (hs, _) = self.inner.session()?;
        join(&hs, room).await
    }

    async fn leave(&self, room: &RemoteRoomId) -> Result<(), AdapterError> {
        let (hs, _) = self.inner.session()?;
        hs.call(
            ruma::api::client::membership::leave_room::v3::Request::new(room_id(room)?),
            As::Bot,
        )
        .await?;
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
