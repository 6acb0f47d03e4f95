//! The XMPP adapter: [`XmppFactory`] builds an [`XmppAdapter`] from a `type = "xmpp"` section.
//!
//! One task ([`Adapter::run`]) reads everything the connection task reports, in order:
//! IQ answers go to their waiters, IQ requests are answered at once (disco, ping), MUC
//! presences update the room state, and messages become inbound events. `send` runs in the
//! core's delivery workers (one per room); it writes stanzas to the connection task and waits
//! for what the room reflects.
//!
//! **Who hears what.** In component mode every occupant of ours gets a copy of every room
//! message. Only the copy addressed to the *listener* (the bridge's own occupant, nick
//! `nick` in the settings) is bridged; the copies to puppets only confirm their own sends.
//! In client mode the relay account is both listener and sender.

mod archive;
mod avatar;
mod direct;
mod inbound;
mod iq;
mod moderation;
mod outbound;
mod puppets;
mod state;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::xml::Attrs as _;
use async_trait::async_trait;
use bridge_core::{
    Adapter, AdapterContext, AdapterError, AdapterFactory, AdapterId, AttachmentLimit,
    Capabilities, ConfigIssue, Delivered, InboundEvent, OutboundEvent, RemoteEventId, RemoteRoomId,
    RemoteUserId,
};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use xmpp_parsers::minidom::Element;

use crate::muc::{self, OccupantPresence};
use crate::session::{ComponentSettings, spawn_component};
use crate::settings::{self, Mode, Settings};
use crate::stream::{Outgoing, StreamEvent, StreamHandle};
use state::Rooms;

/// How long an IQ we send may wait for its answer.
const IQ_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a join may wait for the room's self-presence.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often archive positions are written to the store.
const POSITION_FLUSH: Duration = Duration::from_secs(1);
/// The resource of every puppet JID in component mode.
const PUPPET_RESOURCE: &str = "bridge";

/// The linked rooms that are MUCs: the linked rooms but the direct conversations, which have
/// nothing to join.
fn linked_mucs(ctx: &AdapterContext) -> Vec<RemoteRoomId> {
    let mut rooms = ctx.linked_rooms();
    rooms.retain(|room| direct::parts(room.as_str()).is_none());
    rooms
}

/// Builds [`XmppAdapter`]s from `type = "xmpp"` sections (see [`crate::settings`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct XmppFactory;

impl AdapterFactory for XmppFactory {
    fn type_name(&self) -> &'static str {
        "xmpp"
    }

    fn validate(&self, settings: &toml::Table) -> Vec<ConfigIssue> {
        settings::parse(settings, false).err().unwrap_or_default()
    }

    fn build(&self, id: AdapterId, table: &toml::Table) -> Result<Arc<dyn Adapter>, AdapterError> {
        let settings = settings::parse(table, true).map_err(|issues| {
            let list: Vec<String> = issues
                .iter()
                .map(|i| format!("{}: {}", i.path, i.message))
                .collect();
            AdapterError::Permanent(format!("{id}: {}", list.join("; ")))
        })?;
        Ok(Arc::new(XmppAdapter::new(id, settings)))
    }
}

/// The XMPP adapter, in component (puppets) or client (relay) mode.
#[derive(Debug, Clone)]
pub struct XmppAdapter {
    inner: Arc<Inner>,
}

/// What a waiter for a MUC join learns.
type JoinResult = Result<OccupantPresence, (String, Option<String>)>;

#[derive(Default)]
struct Waiters {
    /// Our IQ requests, by id.
    iqs: HashMap<String, oneshot::Sender<Element>>,
    /// Messages we sent, by id, waiting for the room's reflection (or an error).
    reflections: HashMap<String, oneshot::Sender<Element>>,
    /// Subject changes we sent, by `room\ntext`, to the id their reflection is waited for
    /// under: Prosody broadcasts a subject change without the id it was sent with.
    subjects: HashMap<String, String>,
    /// Joins in progress, by (occupant JID, room).
    joins: HashMap<(String, String), oneshot::Sender<JoinResult>>,
}

/// A room's messages bounced for an absent occupant, by event ID: each with how often it bounced.
type Bounced = std::collections::BTreeMap<String, (OutboundEvent, u32)>;

tokio::task_local! {
    /// The session in which the core's `send` running on this task was let through
    /// ([`Inner::until_resent`]): what it writes is made for that session.
    static ADMITTED: u64;
}

/// Held by the join of one occupant to one room in progress.
type JoinTurn = Arc<tokio::sync::Mutex<()>>;

struct Inner {
    id: AdapterId,
    settings: Settings,
    /// Our address in the current session (component domain or bound JID).
    me: Mutex<Option<String>>,
    out: Mutex<Option<mpsc::Sender<Outgoing>>>,
    /// Room messages written to the server whose reflection has not come back yet, by event
    /// ID (in time order): sent again if the session ends before the room shows them.
    unconfirmed: Mutex<std::collections::BTreeMap<String, OutboundEvent>>,
    /// The context `run` was given; cleared when it returns (the context refers back to the
    /// core, which holds this adapter).
    ctx: Mutex<Option<AdapterContext>>,
    rooms: Mutex<Rooms>,
    waiters: Mutex<Waiters>,
    /// Archive positions not yet written to the store, by room.
    positions: Mutex<HashMap<String, String>>,
    /// Linked rooms whose catch-up from the archive has not run yet in this session (by
    /// lower-cased bare JID), with the room messages heard live meanwhile, held back: taken
    /// before the catch-up, they would move the positions it starts from past what the room
    /// got while we were away (see [`Inner::backfill`]).
    /// The session's number comes first: a catch-up that began in an earlier session leaves
    /// this one's alone.
    catching_up: Mutex<(u64, HashMap<String, Vec<Element>>)>,
    /// The newest session whose rooms are joined and whose predecessor's unconfirmed messages
    /// were sent again ([`Inner::resend_unconfirmed`]): `send` waits for it, so that nothing
    /// newer reaches a room before those (and nothing of this session is taken for one of
    /// them).
    resent: tokio::sync::watch::Sender<u64>,
    /// Per room, the messages it bounced because our occupant was no longer in it (by event
    /// ID, with how often each bounced), sent again in order by one task per room while later
    /// sends to the room wait ([`Inner::refused`]).
    rebounds: Mutex<HashMap<String, Bounced>>,
    /// Told when a room's bounced messages are all sent again.
    rebounded: tokio::sync::Notify,
    /// Puppets' avatars as far as known in this process ([`avatar`]).
    avatars: Mutex<avatar::Known>,
    /// XMPP users' avatars as far as known in this process ([`avatar`]).
    peer_avatars: Mutex<avatar::Peers>,
    /// One join at a time per (occupant JID, room): a second would replace the first's
    /// waiter for the room's answer ([`Inner::join_turn`]).
    join_turns: Mutex<HashMap<(String, String), JoinTurn>>,
    /// Per room, the IDs of what its archive held after the stored position when this process
    /// first sent a message there (see [`Inner::archived_before`]).
    archived_at_start: Mutex<HashMap<String, std::collections::HashSet<String>>>,
    /// Archive queries in progress: query id → (room, results so far).
    archive: Mutex<HashMap<String, (String, Vec<crate::mam::MamItem>)>>,
    /// The task that takes direct messages to puppets, while running.
    direct: Mutex<Option<mpsc::UnboundedSender<Element>>>,
    /// XEP-0363 service and its size limit, once discovered.
    upload: Mutex<Option<crate::upload::UploadService>>,
    http: Option<crate::upload::Http>,
    seq: AtomicU64,
    malformed: AtomicU64,
    /// (room, occupant) told in this process that their encrypted messages cannot be bridged.
    told_encrypted: Mutex<std::collections::HashSet<(String, String)>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XmppAdapter")
            .field("id", &self.id)
            .field(
                "mode",
                &self.component_domain().map_or("client", |_| "component"),
            )
            .finish_non_exhaustive()
    }
}

impl XmppAdapter {
    /// An adapter with these settings (no I/O until [`Adapter::run`]).
    pub fn new(id: AdapterId, settings: Settings) -> Self {
        let inner = Inner {
            id,
            settings,
            me: Mutex::new(None),
            out: Mutex::new(None),
            unconfirmed: Mutex::new(std::collections::BTreeMap::new()),
            ctx: Mutex::new(None),
            rooms: Mutex::new(Rooms::default()),
            waiters: Mutex::new(Waiters::default()),
            positions: Mutex::new(HashMap::new()),
            catching_up: Mutex::new((0, HashMap::new())),
            resent: tokio::sync::watch::Sender::new(0),
            rebounds: Mutex::new(HashMap::new()),
            rebounded: tokio::sync::Notify::new(),
            avatars: Mutex::new(HashMap::new()),
            peer_avatars: Mutex::new(avatar::Peers::default()),
            join_turns: Mutex::new(HashMap::new()),
            archived_at_start: Mutex::new(HashMap::new()),
            archive: Mutex::new(HashMap::new()),
            direct: Mutex::new(None),
            upload: Mutex::new(None),
            http: crate::upload::Http::new()
                .map_err(|e| tracing::error!(error = %e, "no HTTP client: attachments are sent as links"))
                .ok(),
            seq: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
            told_encrypted: Mutex::new(std::collections::HashSet::new()),
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    /// How many stanzas were refused as malformed (each logged and skipped).
    pub fn malformed_stanzas(&self) -> u64 {
        self.inner.malformed.load(Ordering::Relaxed)
    }

    fn start_stream(&self, ctx: &AdapterContext) -> StreamHandle {
        let settings = &self.inner.settings;
        match &settings.mode {
            Mode::Component {
                server,
                domain,
                secret,
            } => {
                let mut cs = ComponentSettings::new(server.clone(), domain.clone(), secret.clone());
                cs.max_stanza_bytes = settings.max_stanza_bytes;
                spawn_component(cs, ctx.shutdown().child_token())
            }
            Mode::Client {
                jid,
                password,
                server,
                insecure_tcp,
            } => crate::client::spawn_client(
                crate::client::ClientSettings {
                    jid: jid.clone(),
                    password: password.clone(),
                    server: server.clone(),
                    insecure_tcp: *insecure_tcp,
                    resource: None,
                },
                ctx.shutdown().child_token(),
            ),
        }
    }
}

impl Inner {
    /// A groupchat message from the listener (the bridge's own occupant) in a MUC, or a chat
    /// message to a direct conversation with the bridge's own address. Its reflection is the
    /// listener's own, which carries no neutral event ID: never translated, so never a command.
    async fn notice(&self, room: &RemoteRoomId, text: &str) -> Result<(), AdapterError> {
        let listener = self
            .listener_jid()
            .ok_or_else(|| AdapterError::transient("not connected"))?;
        let id = self.next_id();
        // A direct conversation with the bridge's own address, or a MUC.
        let (kind, to) = match direct::parts(room.as_str()) {
            Some((user, _)) => ("chat", user),
            None => ("groupchat", room.as_str()),
        };
        let mut message = Element::builder("message", crate::wire::NS_CLIENT)
            .with("type", kind)
            .with("to", to)
            .with("id", &id);
        if let Some(from) = self.stanza_from(&listener) {
            message = message.with("from", from);
        }
        let message = message
            .append(Element::builder("body", crate::wire::NS_CLIENT).append(text))
            .build();
        self.send_written(message).await
    }

    fn component_domain(&self) -> Option<&str> {
        match &self.settings.mode {
            Mode::Component { domain, .. } => Some(domain),
            Mode::Client { .. } => None,
        }
    }

    fn ctx(&self) -> Result<AdapterContext, AdapterError> {
        self.ctx
            .lock()
            .clone()
            .ok_or_else(|| AdapterError::transient("the adapter is not running"))
    }

    /// The JID of the bridge's own occupant: `bridge@DOMAIN/bridge` for a component, the bound
    /// JID for a client.
    fn listener_jid(&self) -> Option<String> {
        match self.component_domain() {
            Some(domain) => Some(format!("bridge@{domain}/{PUPPET_RESOURCE}")),
            None => self.me.lock().clone(),
        }
    }

    /// `from` for stanzas we send as `jid`: needed on a component stream, implied by a client's.
    fn stanza_from<'a>(&self, jid: &'a str) -> Option<&'a str> {
        self.component_domain().map(|_| jid)
    }

    /// Counts a stanza refused as malformed or over a limit: in [`XmppAdapter::malformed_stanzas`]
    /// and in the `bridge_xmpp_malformed_total` metric, always both.
    fn count_malformed(&self) {
        self.malformed.fetch_add(1, Ordering::Relaxed);
        if let Ok(ctx) = self.ctx() {
            ctx.counter("bridge_xmpp_malformed_total").increment(1);
        }
    }

    fn next_id(&self) -> String {
        format!(
            "b{}-{:08x}",
            self.seq.fetch_add(1, Ordering::Relaxed),
            rand::random::<u32>()
        )
    }

    /// The session a stanza made now is for: the one the core's `send` in progress on this
    /// task was let through in ([`ADMITTED`]), else the current one.
    fn stanza_session(&self) -> u64 {
        ADMITTED
            .try_with(|session| *session)
            .unwrap_or_else(|_| self.catching_up.lock().0)
    }

    /// `stanza` for the connection task, made for [`Inner::stanza_session`].
    fn outgoing(&self, stanza: Element, written: Option<oneshot::Sender<()>>) -> Outgoing {
        Outgoing {
            stanza,
            written,
            session: self.stanza_session(),
        }
    }

    /// Queues a stanza for the connection task.
    async fn send_stanza(&self, stanza: Element) -> Result<(), AdapterError> {
        let out = self.out.lock().clone();
        let out = out.ok_or_else(|| AdapterError::transient("not connected to the XMPP server"))?;
        out.send(self.outgoing(stanza, None))
            .await
            .map_err(|_| AdapterError::transient("the XMPP connection is gone"))
    }

    /// Sends a stanza and waits until the connection task has written it to the server (not
    /// for any answer): once this returns, a crash of the bridge no longer loses it.
    async fn send_written(&self, stanza: Element) -> Result<(), AdapterError> {
        let out = self.out.lock().clone();
        let out = out.ok_or_else(|| AdapterError::transient("not connected to the XMPP server"))?;
        let (written, done) = oneshot::channel();
        let outgoing = self.outgoing(stanza, Some(written));
        let gone =
            || AdapterError::transient("the XMPP connection ended before the message was written");
        out.send(outgoing).await.map_err(|_| gone())?;
        match tokio::time::timeout(IQ_TIMEOUT, done).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(gone()),
            Err(_) => Err(AdapterError::transient("the XMPP connection is stuck")),
        }
    }

    /// Sends an IQ and waits for its result; an error answer becomes `Err` with its condition.
    async fn iq(&self, mut iq: Element) -> Result<Element, IqFailure> {
        let id = self.next_id();
        crate::xml::set_attr(&mut iq, "id", &id);
        let (tx, rx) = oneshot::channel();
        self.waiters.lock().iqs.insert(id.clone(), tx);
        let sent = self.send_stanza(iq).await;
        let answer = match sent {
            Ok(()) => tokio::time::timeout(IQ_TIMEOUT, rx).await,
            Err(e) => {
                self.waiters.lock().iqs.remove(&id);
                return Err(IqFailure::NotSent(e));
            }
        };
        self.waiters.lock().iqs.remove(&id);
        match answer {
            Ok(Ok(answer)) if answer.attr("type") == Some("result") => Ok(answer),
            Ok(Ok(answer)) => {
                let (condition, text) = muc::error_condition(&answer)
                    .unwrap_or_else(|| ("undefined-condition".into(), None));
                Err(IqFailure::Error { condition, text })
            }
            Ok(Err(_)) => Err(IqFailure::NotSent(AdapterError::transient(
                "disconnected before the answer",
            ))),
            Err(_) => Err(IqFailure::NotSent(AdapterError::transient(format!(
                "no answer within {IQ_TIMEOUT:?}"
            )))),
        }
    }

    /// Waits until no other join of `occupant` to `room` is in progress; holds off others
    /// while the guard lives.
    async fn join_turn(&self, room: &str, occupant: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let turn = {
            let mut turns = self.join_turns.lock();
            // Forget the turns nobody holds or waits for (joins are rare; the map stays small).
            turns.retain(|_, turn| Arc::strong_count(turn) > 1);
            let key = (occupant.to_owned(), room.to_owned());
            turns.entry(key).or_default().clone()
        };
        turn.lock_owned().await
    }

    /// Joins `room` as `occupant` with the first free nick of `nicks`, after any join of it
    /// in progress; returns the room's presence for it.
    async fn join_room(
        &self,
        room: &str,
        occupant: &str,
        nicks: &[String],
    ) -> Result<OccupantPresence, AdapterError> {
        let _turn = self.join_turn(room, occupant).await;
        self.join_room_now(room, occupant, nicks).await
    }

    /// [`Inner::join_room`] for a caller that holds the join's turn.
    async fn join_room_now(
        &self,
        room: &str,
        occupant: &str,
        nicks: &[String],
    ) -> Result<OccupantPresence, AdapterError> {
        if let Some(refusal) = self.destroyed_refusal(room) {
            return Err(refusal);
        }
        let puppet = Some(occupant) != self.listener_jid().as_deref();
        // A members-only room refuses a puppet that is no member: made one once, by the
        // bridge's own occupant, and the join tried again.
        let mut admitted = false;
        let mut next = 0;
        while let Some(nick) = nicks.get(next) {
            next += 1;
            if self.rooms.lock().nick_taken_by_other(room, nick, occupant) {
                continue;
            }
            self.rooms.lock().claim(room, occupant, nick);
            let key = (occupant.to_owned(), room.to_owned());
            let (tx, rx) = oneshot::channel();
            self.waiters.lock().joins.insert(key.clone(), tx);
            tracing::debug!(room, occupant, nick, "joining");
            let password = self.settings.room_password(room);
            let mut join = muc::join(self.stanza_from(occupant), room, nick, password);
            if let Some(photo) = self.photo_of(occupant) {
                join.append_child(avatar::update_element(&photo));
            }
            if let Err(e) = self.send_stanza(join).await {
                self.waiters.lock().joins.remove(&key);
                self.rooms.lock().unclaim(room, occupant);
                return Err(e);
            }
            let outcome = tokio::time::timeout(JOIN_TIMEOUT, rx).await;
            self.waiters.lock().joins.remove(&key);
            match outcome {
                Ok(Ok(Ok(presence))) => {
                    if presence.created {
                        // A locked new room waits for its configuration: take the defaults.
                        let form = muc::instant_room(self.stanza_from(occupant), room, "");
                        if let Err(e) = self.iq(form).await {
                            tracing::debug!(room, error = %e, "instant-room form not accepted (room not locked?)");
                        }
                    }
                    self.rooms.lock().joined(room, occupant, &presence);
                    if puppet {
                        self.remember_puppet(
                            room,
                            occupant,
                            &presence.nick,
                            nicks,
                            presence.occupant_id.as_deref(),
                        );
                        self.role_after_join(
                            room,
                            occupant,
                            &presence.nick,
                            presence.role.as_deref(),
                        )
                        .await;
                    }
                    return Ok(presence);
                }
                Ok(Ok(Err((condition, text)))) => {
                    self.rooms.lock().unclaim(room, occupant);
                    if condition == "conflict" {
                        tracing::debug!(room, nick, "nick taken; trying the next one");
                        continue;
                    }
                    if condition == "registration-required" && puppet && !admitted {
                        admitted = true;
                        self.admit(room, occupant).await?;
                        next -= 1; // the same nick again
                        continue;
                    }
                    let hint = match (condition.as_str(), password) {
                        ("not-authorized", None) => {
                            " (a password-protected room: give its password in the adapter's \
                             room_passwords)"
                        }
                        ("not-authorized", Some(_)) => {
                            " (the password in the adapter's room_passwords is not the room's)"
                        }
                        _ => "",
                    };
                    let why = format!(
                        "cannot join {room} as {nick}: {condition} {}{hint}",
                        text.unwrap_or_default()
                    );
                    return Err(match condition.as_str() {
                        "remote-server-not-found"
                        | "remote-server-timeout"
                        | "service-unavailable"
                        | "resource-constraint"
                        | "internal-server-error" => AdapterError::transient(why),
                        _ => AdapterError::Permanent(why),
                    });
                }
                Ok(Err(_)) | Err(_) => {
                    self.rooms.lock().unclaim(room, occupant);
                    return Err(AdapterError::transient(format!(
                        "no answer to joining {room} as {nick} within {JOIN_TIMEOUT:?}"
                    )));
                }
            }
        }
        Err(AdapterError::Permanent(format!(
            "every nick tried in {room} is taken: {nicks:?}"
        )))
    }

    /// Makes our puppet `occupant` a member of the members-only `room`, as the bridge's own
    /// occupant (which has to be an admin or owner there).
    async fn admit(&self, room: &str, occupant: &str) -> Result<(), AdapterError> {
        let bare = crate::jid::bare(occupant);
        let iq = muc::admin_item(
            self.listener_jid().as_deref(),
            room,
            [("jid", bare), ("affiliation", "member")],
        );
        match self.iq(iq).await {
            Ok(_) => {
                tracing::info!(adapter = %self.id, room, puppet = bare, "made a member of the members-only room");
                Ok(())
            }
            Err(IqFailure::NotSent(e)) => Err(e),
            Err(e @ IqFailure::Error { .. }) => Err(AdapterError::Permanent(format!(
                "{room} is members-only and the bridge cannot make {bare} a member: {e} (make \
                 the bridge an admin or owner of the room)"
            ))),
        }
    }

    /// Joins every linked room as the listener, then reports the adapter connected (which
    /// makes the core fetch what each room missed from its archive).
    async fn join_linked_rooms(self: Arc<Self>, ctx: AdapterContext, session: u64) {
        self.join_and_resend(&ctx).await;
        // `send` goes on, whatever the joins gave (a room that refused us fails its sends).
        self.resent.send_modify(|done| *done = (*done).max(session));
        ctx.set_connected(true);
        if self.component_domain().is_some() {
            let rooms = linked_mucs(&ctx);
            self.rejoin_puppets(ctx, rooms).await;
        }
    }

    /// The joins and the resending of [`Inner::join_linked_rooms`].
    async fn join_and_resend(&self, ctx: &AdapterContext) {
        let Some(listener) = self.listener_jid() else {
            return;
        };
        let nicks = state::nick_candidates(&self.settings.nick, "bridge", "bridge");
        let rooms = linked_mucs(ctx);
        let this = &self;
        let joins = rooms.iter().map(|room| {
            let (listener, nicks) = (&listener, &nicks);
            async move {
                if let Err(e) = this.join_room(room.as_str(), listener, nicks).await {
                    tracing::warn!(adapter = %this.id, room = %room, error = %e, "cannot join a linked room");
                }
            }
        });
        futures::future::join_all(joins).await;
        self.resend_unconfirmed().await;
    }

    /// Waits until the current session has joined its rooms and sent again what the previous
    /// one left unconfirmed (bounded: joins and archive queries time out), and returns that
    /// session. Returns at once when there is no session yet (the send then fails as not
    /// connected).
    async fn until_resent(&self) -> u64 {
        let mut done = self.resent.subscribe();
        loop {
            let session = self.catching_up.lock().0;
            if session == 0 || *done.borrow_and_update() >= session {
                return session;
            }
            if done.changed().await.is_err() {
                return session;
            }
        }
    }

    /// Routes one stanza from the connection task.
    fn handle(self: &Arc<Self>, stanza: Element, ctx: &AdapterContext, durable: &mut Durable) {
        match stanza.name() {
            "iq" => self.handle_iq(stanza),
            "presence" => self.handle_presence(&stanza, ctx),
            "message" => self.handle_message(&stanza, ctx, durable),
            other => tracing::debug!(name = other, "ignoring a non-stanza element"),
        }
    }

    fn handle_iq(self: &Arc<Self>, iq: Element) {
        match iq.attr("type") {
            Some("result" | "error") => {
                let id = iq.attr("id").unwrap_or_default().to_owned();
                match self.waiters.lock().iqs.remove(&id) {
                    Some(waiter) => {
                        let _ = waiter.send(iq);
                    }
                    None => tracing::debug!(id, "answer to an IQ nobody waits for"),
                }
            }
            Some("get" | "set") => {
                let to = iq.attr("to").unwrap_or_default();
                let answer = match self.component_domain() {
                    Some(domain) if crate::jid::bare(to) != domain && to.contains('@') => {
                        let local = to.split('@').next().unwrap_or_default();
                        let name = crate::jid::unescape_localpart(local);
                        if avatar::is_vcard_get(&iq) {
                            iq::reply(&iq, "result")
                                .append(self.vcard(&avatar::key(to), &name))
                                .build()
                        } else {
                            iq::answer(&iq, iq::Addressee::Puppet(&name))
                        }
                    }
                    _ => iq::answer(&iq, iq::Addressee::Service),
                };
                let this = self.clone();
                tokio::spawn(async move {
                    let _ = this.send_stanza(answer).await;
                });
            }
            _ => {
                self.count_malformed();
                tracing::warn!(iq = %String::from(&iq), "IQ without a valid type; ignored");
            }
        }
    }
}

/// Why an IQ of ours failed.
#[derive(Debug, thiserror::Error)]
enum IqFailure {
    #[error("{0}")]
    NotSent(AdapterError),
    #[error("{condition}{}", text.as_deref().map(|t| format!(": {t}")).unwrap_or_default())]
    Error {
        condition: String,
        text: Option<String>,
    },
}

/// Inbound events handed to the core and not yet durable, with what to record once they are.
type Durable = FuturesUnordered<futures::future::BoxFuture<'static, Option<(String, String)>>>;

#[async_trait]
impl Adapter for XmppAdapter {
    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::text_only();
        caps.formatting = true;
        caps.edits = true;
        caps.replies = true;
        caps.redactions = true;
        caps.topic = true;
        caps.custom_events = true;
        let limit = self
            .inner
            .upload
            .lock()
            .as_ref()
            .and_then(|u| u.max_file_size);
        caps.attachments = Some(AttachmentLimit { max_bytes: limit });
        if self.inner.component_domain().is_some() {
            // Puppets can carry everything that is per person.
            caps.reactions = true;
            caps.membership = true;
            caps.profile = true;
            caps.typing = true;
            caps.read_markers = true;
            caps.roles = true;
            caps.moderation = true;
        }
        caps
    }

    async fn run(&self, ctx: AdapterContext) -> Result<(), AdapterError> {
        *self.inner.ctx.lock() = Some(ctx.clone());
        if self.inner.component_domain().is_some() {
            *self.inner.direct.lock() = Some(self.inner.spawn_direct_task(ctx.clone()));
        }
        let mut handle = self.start_stream(&ctx);
        *self.inner.out.lock() = Some(handle.out.clone());
        let mut durable: Durable = FuturesUnordered::new();
        let mut flush = tokio::time::interval(POSITION_FLUSH);
        loop {
            tokio::select! {
                event = handle.events.recv() => match event {
                    Some(StreamEvent::Online { jid }) => {
                        tracing::info!(adapter = %self.inner.id, %jid, "XMPP session up");
                        // Live messages wait until each room has caught up from its archive,
                        // and sends until the rooms are joined (the session's number moves
                        // before its address is known: see `until_resent`).
                        let session = {
                            let mut gate = self.inner.catching_up.lock();
                            gate.0 += 1;
                            gate.1 = linked_mucs(&ctx)
                                .iter()
                                .map(|room| (room.as_str().to_ascii_lowercase(), Vec::new()))
                                .collect();
                            gate.0
                        };
                        *self.inner.me.lock() = Some(jid);
                        self.inner.rooms.lock().reset();
                        // What still waits for an answer was sent for an earlier session, or
                        // dropped as made for one: it fails now, not at its timeout.
                        *self.inner.waiters.lock() = Waiters::default();
                        tokio::spawn(self.inner.clone().join_linked_rooms(ctx.clone(), session));
                        let this = self.inner.clone();
                        tokio::spawn(async move { this.discover_upload().await });
                    }
                    Some(StreamEvent::Offline { reason }) => {
                        tracing::warn!(adapter = %self.inner.id, %reason, "XMPP session lost; reconnecting");
                        ctx.counter("bridge_xmpp_disconnects_total").increment(1);
                        ctx.set_connected(false);
                        self.inner.rooms.lock().reset();
                        // Dropping the waiters fails every send in flight at once.
                        *self.inner.waiters.lock() = Waiters::default();
                    }
                    Some(StreamEvent::Stanza(stanza)) => self.inner.handle(stanza, &ctx, &mut durable),
                    Some(StreamEvent::Skipped { reason }) => {
                        self.inner.count_malformed();
                        tracing::warn!(adapter = %self.inner.id, %reason, "incoming stanza skipped");
                    }
                    None => break,
                },
                Some(done) = durable.next(), if !durable.is_empty() => {
                    if let Some((room, position)) = done {
                        self.inner.positions.lock().insert(room, position);
                    }
                }
                _ = flush.tick() => self.inner.flush_positions(&ctx),
                () = ctx.shutdown().cancelled() => break,
            }
        }
        while let Some(done) = durable.next().await {
            if let Some((room, position)) = done {
                self.inner.positions.lock().insert(room, position);
            }
        }
        self.inner.flush_positions(&ctx);
        *self.inner.out.lock() = None;
        *self.inner.ctx.lock() = None;
        *self.inner.direct.lock() = None;
        ctx.set_connected(false);
        Ok(())
    }

    async fn fetch_attachment(
        &self,
        attachment: &bridge_core::Attachment,
    ) -> Result<bridge_core::AttachmentBody, AdapterError> {
        self.inner.peer_image(&attachment.url)
    }

    async fn send(&self, event: OutboundEvent) -> Result<Delivered, AdapterError> {
        let session = self.inner.until_resent().await;
        // Everything this send writes is for the session it was let through in: should a new
        // one start meanwhile, the connection task drops it and the send fails, to be retried
        // after that session's own resending (sent as it is, it could overtake the messages
        // the lost session left unconfirmed).
        ADMITTED
            .scope(session, async {
                self.inner.until_rebounded(event.room.as_str()).await;
                self.inner.deliver(event, outbound::Turn::Core).await
            })
            .await
    }

    /// A groupchat message from the listener (the bridge's own occupant), or a chat message in
    /// a direct conversation with the bridge's own address; never translated back.
    async fn send_notice(&self, room: &RemoteRoomId, text: &str) -> Result<(), AdapterError> {
        self.inner.notice(room, text).await
    }

    async fn join(&self, room: &RemoteRoomId) -> Result<(), AdapterError> {
        if direct::parts(room.as_str()).is_some() {
            return Ok(());
        }
        let listener = self
            .inner
            .listener_jid()
            .ok_or_else(|| AdapterError::transient("not connected"))?;
        let nicks = state::nick_candidates(&self.inner.settings.nick, "bridge", "bridge");
        // Linked again by an admin: a room its owner destroyed may be joined (and so made) again.
        self.inner.forget_destroyed(room.as_str());
        self.inner
            .join_room(room.as_str(), &listener, &nicks)
            .await
            .map(|_| ())
    }

    async fn leave(&self, room: &RemoteRoomId) -> Result<(), AdapterError> {
        if direct::parts(room.as_str()).is_some() {
            return Ok(());
        }
        let remembered = self.inner.remembered_in(room.as_str());
        let mut occupants = self.inner.rooms.lock().forget(room.as_str());
        // Not joined in this session (the link was left out of the configuration before a
        // start): the room may still have the occupants of an earlier one (see `puppets`), the
        // listener and the puppets remembered there. A room ignores a leave from someone who
        // is not in it.
        let listener = (self.inner.listener_jid()).map(|jid| {
            let nicks = state::nick_candidates(&self.inner.settings.nick, "bridge", "bridge");
            (jid, nicks.into_iter().next().unwrap_or_default())
        });
        for (jid, nick) in remembered.into_iter().chain(listener) {
            if !occupants.iter().any(|(j, _)| *j == jid) {
                occupants.push((jid, nick));
            }
        }
        // Each puppet is forgotten once its leave is sent: should the stream fail meanwhile,
        // the rest are still remembered when the core asks again.
        for (jid, nick) in occupants {
            let leave = muc::leave(self.inner.stanza_from(&jid), room.as_str(), &nick);
            self.inner.send_stanza(leave).await?;
            self.inner.forget_puppet(room.as_str(), &jid);
        }
        Ok(())
    }

    async fn source_unlinked(
        &self,
        room: &RemoteRoomId,
        source: &AdapterId,
    ) -> Result<(), AdapterError> {
        if direct::parts(room.as_str()).is_some() || self.inner.component_domain().is_none() {
            return Ok(());
        }
        self.inner.source_puppets_leave(room.as_str(), source).await
    }

    async fn resolve_alias(&self, alias: &str) -> Result<RemoteRoomId, AdapterError> {
        let room = alias.strip_prefix("xmpp:").unwrap_or(alias);
        let room = room.split('?').next().unwrap_or(room);
        if room.contains('@') && !room.contains('/') && crate::jid::is_plausible(room) {
            Ok(RemoteRoomId::new(room))
        } else {
            Err(AdapterError::Permanent(format!(
                "not a MUC address: {alias} (expected room@conference.example.org)"
            )))
        }
    }

    async fn backfill(
        &self,
        room: &RemoteRoomId,
        after: Option<&RemoteEventId>,
        limit: usize,
    ) -> Result<Vec<InboundEvent>, AdapterError> {
        if direct::parts(room.as_str()).is_some() {
            return Ok(Vec::new()); // no room archive for one-to-one chats
        }
        self.inner.backfill(room.as_str(), after, limit).await
    }

    async fn open_direct(
        &self,
        user: &RemoteUserId,
        with: &bridge_core::Sender,
    ) -> Result<RemoteRoomId, AdapterError> {
        let Some(domain) = self.inner.component_domain() else {
            return Err(AdapterError::Unsupported(
                "direct conversations need component mode (a relay cannot speak as others)".into(),
            ));
        };
        let user = user.as_str();
        if user.contains('?') {
            // `room?occupant-id=…`: a semi-anonymous room hides this occupant's address from
            // the bridge, so there is nobody to write to outside the room.
            return Err(AdapterError::Permanent(format!(
                "{user} is known only by its occupant ID in a room that hides real addresses \
                 from the bridge: no direct conversation (make the room non-anonymous, or the \
                 bridge a moderator there)"
            )));
        }
        if !user.contains('@') || user.contains(['/', ' ']) || !crate::jid::is_plausible(user) {
            return Err(AdapterError::Permanent(format!(
                "not an XMPP account: {user}"
            )));
        }
        let local = crate::jid::escape_localpart(&format!("{}.{}", with.adapter, with.user));
        Ok(RemoteRoomId::new(direct::room_of(
            user,
            &format!("{local}@{domain}"),
        )))
    }
}

#[cfg(test)]
mod tests {
    use bridge_core::{Adapter, AdapterError, AdapterId, RemoteUserId, Sender};

    use super::XmppAdapter;

    fn component() -> XmppAdapter {
        let table: toml::Table = "mode = 'component'\nserver = '127.0.0.1:5347'\n\
                                  domain = 'bridge.example'\nsecret = 's'"
            .parse()
            .expect("TOML");
        XmppAdapter::new(
            AdapterId::new("xmpp"),
            crate::settings::parse(&table, true).expect("valid settings"),
        )
    }

    fn carol() -> Sender {
        Sender {
            adapter: AdapterId::new("matrix"),
            user: RemoteUserId::new("@carol:example.org"),
            display_name: None,
            avatar: None,
        }
    }

    #[test]
    fn the_bridge_has_an_address_of_its_own() {
        let adapter = component();
        let inner = &adapter.inner;
        assert!(inner.is_bridge_address("bridge@bridge.example"));
        assert!(inner.is_bridge_address("bridge@bridge.example/bridge"));
        assert!(inner.is_bridge_address("Bridge.Example"));
        assert!(!inner.is_bridge_address("matrix.\\40carol@bridge.example"));
        assert!(!inner.is_bridge_address("bridge@example.org"));
    }

    #[tokio::test]
    async fn a_direct_conversation_needs_an_address_to_write_to() {
        let adapter = component();
        let room = adapter
            .open_direct(&RemoteUserId::new("xavier@example.org"), &carol())
            .await
            .expect("a real address");
        assert_eq!(
            room.as_str(),
            "xavier@example.org matrix.\\40carol\\3aexample.org@bridge.example"
        );
        // An occupant of a semi-anonymous room is known only by its occupant ID there.
        let hidden = RemoteUserId::new("lobby@conference.example.org?occupant-id=abc");
        match adapter.open_direct(&hidden, &carol()).await {
            Err(AdapterError::Permanent(why)) => assert!(why.contains("occupant ID"), "{why}"),
            other => panic!("{other:?}"),
        }
        // So is an occupant of a room that gives neither: by its nick, which anyone may take.
        let by_nick = RemoteUserId::new("lobby@conference.example.org/Xavier");
        assert!(matches!(
            adapter.open_direct(&by_nick, &carol()).await,
            Err(AdapterError::Permanent(_))
        ));
    }

    #[tokio::test]
    async fn one_join_at_a_time_per_occupant_and_room() {
        let adapter = component();
        let inner = &adapter.inner;
        let first = inner
            .join_turn("lobby@muc.example", "a@bridge.example/bridge")
            .await;
        let mut second =
            std::pin::pin!(inner.join_turn("lobby@muc.example", "a@bridge.example/bridge"));
        assert!(futures::poll!(second.as_mut()).is_pending());
        // Another occupant, or the same one in another room, does not wait.
        let other = inner
            .join_turn("lobby@muc.example", "b@bridge.example/bridge")
            .await;
        let elsewhere = inner
            .join_turn("hall@muc.example", "a@bridge.example/bridge")
            .await;
        drop((other, elsewhere));
        drop(first);
        drop(second.await);
        // Turns nobody holds are forgotten.
        drop(
            inner
                .join_turn("x@muc.example", "a@bridge.example/bridge")
                .await,
        );
        assert_eq!(inner.join_turns.lock().len(), 1);
    }
}
