//! Client mode: the bridge logs in to an XMPP server as an ordinary account (c2s).
//!
//! [`spawn_client`] starts one task that owns a tokio-xmpp
//! [`StanzaStream`] and reports through the channels of a [`StreamHandle`], like the component
//! connection does (see [`crate::stream`]).
//!
//! # How the task behaves
//!
//! * **Sending.** Stanzas from [`StreamHandle::out`] are parsed into xmpp-parsers'
//!   [`Stanza`] and only *enqueued* on the stream ([`StanzaStream::send`]); the task never waits
//!   for a stanza to be written (awaiting that in the task that also reads the stream deadlocked
//!   tokio-xmpp's `Client`, see `docs/design/xmpp.md`). An element that is not a valid stanza is
//!   logged and skipped. While there is no session (before the first [`StreamEvent::Online`],
//!   and from an [`StreamEvent::Offline`] to the next `Online`), stanzas are **dropped** (and
//!   logged), as the component connection does: the adapter re-sends what matters after
//!   `Online`, and nothing stale reaches the new session.
//! * **Receiving.** Every incoming stanza is passed on as [`StreamEvent::Stanza`].
//! * **Sessions.** tokio-xmpp's `StreamEvent::Reset` (a new session, resource bound) becomes
//!   [`StreamEvent::Online`] with the bound full JID; `Suspended` (connection lost) becomes
//!   [`StreamEvent::Offline`].
//! * **Stream resumption** ([XEP-0198](https://xmpp.org/extensions/xep-0198.html)): a
//!   `Resumed` stream also becomes [`StreamEvent::Online`] (with the same JID). The stream
//!   interface has no third state, and after an `Offline` the adapter must learn that the
//!   session is usable again; the price is that it rejoins its rooms although the resumed
//!   session kept them, which is harmless (a join presence for a room one is in is a presence
//!   update; joins ask for no history).
//! * **Reconnecting.** tokio-xmpp's stream asks for a new connection whenever it loses one; our
//!   connector (not tokio-xmpp's, which only logs failures) logs in and, when that fails,
//!   reports [`StreamEvent::Offline`] with the reason (a wrong password reads "authentication
//!   failed …") and retries with exponential backoff and jitter: 1 s, 2 s, 4 s … up to 60 s,
//!   and never more than one attempt per second. So `Offline` can come several times in a row,
//!   once per failed attempt.
//! * **Shutdown.** When the shutdown token is cancelled (or the adapter drops both ends of the
//!   handle) the stream is closed (`</stream:stream>`, at most [`CLOSE_TIMEOUT`]) and the task
//!   ends; pending reconnect attempts stop.
//! * **Liveness.** tokio-xmpp's [`Timeouts::tight`]: after 60 s of silence the stream sends
//!   a ping (or an XEP-0198 `<r/>`); without an answer within 15 s more the connection is
//!   considered dead and replaced.
//! * **Robustness.** Invalid settings (a JID without a local part, a bad `server`) are reported
//!   as one `Offline` and end the task: retrying cannot help. Should tokio-xmpp's own worker
//!   task die (a bug there), the task reports `Offline` and starts a new stream with backoff.
//!
//! # TLS
//!
//! Unless [`ClientSettings::insecure_tcp`] is set, the connection is upgraded with STARTTLS,
//! and a server that does not offer it is refused (no plaintext fallback). Certificates are
//! checked by rustls against the system's root certificates, for the JID's domain. rustls
//! runs on the `ring` provider; if no process-wide rustls provider is installed yet, the first
//! TLS connection installs `ring` as the default, so that a build in which another crate also
//! enables rustls' `aws-lc-rs` does not panic for want of a chosen provider.

use std::borrow::Cow;
use std::fmt;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use sasl::common::ChannelBinding;
use sasl::common::Credentials;
use tokio::io::{AsyncWriteExt, BufStream};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_xmpp::connect::starttls::starttls;
use tokio_xmpp::connect::tls_common::TlsStream;
use tokio_xmpp::connect::{DnsConfig, ServerConnector};
use tokio_xmpp::stanzastream::{Connection, Event, StanzaStream, StreamEvent as XmppStreamEvent};
use tokio_xmpp::xmlstream::{
    FallibleStreamElement, PendingFeaturesRecv, StreamHeader, Timeouts, initiate_stream,
};
use xmpp_parsers::jid::Jid;
use xmpp_parsers::minidom::Element;
use xmpp_parsers::ns;
use xmpp_parsers::stanza::Stanza;

use crate::depth_guard::DepthGuard;
use crate::stream::{StreamEvent, StreamHandle};

/// How long a clean close of the stream may take at shutdown before the task gives up on it.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// Stanzas tokio-xmpp's stream queues in either direction.
const QUEUE_DEPTH: usize = 128;
/// The first retry delay after a failed login.
const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// The longest retry delay.
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// At most one connection attempt per this interval, even right after a session ended (so
/// a server that accepts the login and drops us at once does not cause a hot loop).
const MIN_ATTEMPT_INTERVAL: Duration = Duration::from_secs(1);

/// How to log in.
#[derive(Clone)]
pub struct ClientSettings {
    /// The account, as a bare JID (`bridge@example.org`: the server picks the resource) or a
    /// full JID (`bridge@example.org/bridge`: that resource is requested). It must have a
    /// local part.
    pub jid: String,
    /// The account's password.
    pub password: String,
    /// `host:port` to connect to (a host name, an IPv4 address or a bracketed IPv6 address),
    /// instead of looking up the JID domain's `_xmpp-client._tcp` SRV record (falling back to
    /// the domain on port 5222). TLS is still checked against the JID's domain.
    pub server: Option<String>,
    /// Plain TCP without TLS, and PLAIN passwords in the clear if the server offers nothing
    /// better. **Only for loopback tests.** When `false`, the connection must be upgraded with
    /// STARTTLS: a server that does not offer it is refused.
    pub insecure_tcp: bool,
    /// The resource to ask the server to bind. Overrides a resource in [`Self::jid`];
    /// `None` keeps the JID's (or lets the server choose). The server may bind another one:
    /// [`StreamEvent::Online`] reports the JID actually bound.
    pub resource: Option<String>,
}

impl fmt::Debug for ClientSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientSettings")
            .field("jid", &self.jid)
            .field("password", &"<redacted>")
            .field("server", &self.server)
            .field("insecure_tcp", &self.insecure_tcp)
            .field("resource", &self.resource)
            .finish()
    }
}

/// Starts the client connection task and returns the adapter's ends of its channels.
///
/// The task logs in as [`ClientSettings::jid`], reports each session as
/// [`StreamEvent::Online`], each lost connection or failed login as [`StreamEvent::Offline`],
/// every incoming stanza as [`StreamEvent::Stanza`], and reconnects by itself until
/// `shutdown` is cancelled. See the [module documentation](self) for the details.
///
/// # Panics
///
/// Must be called from within a Tokio runtime (the task is spawned with [`tokio::spawn`]).
/// The task itself does not panic.
pub fn spawn_client(settings: ClientSettings, shutdown: CancellationToken) -> StreamHandle {
    let (handle, out_rx, events_tx) = StreamHandle::channel();
    tokio::spawn(run(settings, shutdown, out_rx, events_tx));
    handle
}

/// Where and how to connect, checked from [`ClientSettings`].
#[derive(Clone)]
struct Target {
    jid: Jid,
    password: String,
    dns: DnsConfig,
    insecure_tcp: bool,
}

impl Target {
    fn new(settings: &ClientSettings) -> Result<Self, String> {
        let jid = Jid::new(&settings.jid)
            .map_err(|e| format!("invalid client JID {:?}: {e}", settings.jid))?;
        if jid.node().is_none() {
            return Err(format!(
                "the client JID {jid} has no local part (an account is user@domain)"
            ));
        }
        let jid = match &settings.resource {
            Some(resource) => Jid::from(
                jid.to_bare()
                    .with_resource_str(resource)
                    .map_err(|e| format!("invalid resource {resource:?}: {e}"))?,
            ),
            None => jid,
        };
        let dns = match &settings.server {
            None => DnsConfig::srv_default_client(jid.domain().as_str()),
            Some(server) => parse_server(server)?,
        };
        Ok(Self {
            jid,
            password: settings.password.clone(),
            dns,
            insecure_tcp: settings.insecure_tcp,
        })
    }
}

/// `host:port` → how tokio-xmpp finds the server.
fn parse_server(server: &str) -> Result<DnsConfig, String> {
    if server.parse::<SocketAddr>().is_ok() {
        return Ok(DnsConfig::addr(server));
    }
    let bad = || format!("invalid server {server:?}: expected host:port");
    let (host, port) = server.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || host.contains(':') {
        return Err(bad());
    }
    Ok(DnsConfig::no_srv(host, port))
}

/// Connection attempts' pacing, shared by all reconnects of one task.
#[derive(Debug, Default)]
struct Pacer {
    /// Failed attempts since the last successful login.
    failures: u32,
    last_attempt: Option<Instant>,
}

impl Pacer {
    /// How long to wait before the first attempt of a reconnect.
    fn first_delay(&self) -> Duration {
        self.last_attempt.map_or(Duration::ZERO, |at| {
            MIN_ATTEMPT_INTERVAL.saturating_sub(at.elapsed())
        })
    }

    /// Records a failed attempt; returns how long to wait before the next one.
    fn failed(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let exp = self.failures.saturating_sub(1).min(16);
        let delay = BACKOFF_BASE.saturating_mul(1 << exp).min(BACKOFF_MAX);
        jitter(delay).max(MIN_ATTEMPT_INTERVAL)
    }
}

/// `delay` ± 20 %, randomly.
fn jitter(delay: Duration) -> Duration {
    delay.mul_f64(rand::random_range(0.8..1.2))
}

fn lock(pacer: &Mutex<Pacer>) -> std::sync::MutexGuard<'_, Pacer> {
    // A poisoned lock only means a panic elsewhere while holding it; the counters are fine.
    pacer
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What the connector tells the task.
type Reports = mpsc::UnboundedSender<String>;

/// The function tokio-xmpp's stream calls whenever it needs a new connection: it spawns a task
/// that logs in (with backoff) and hands the connection over through `slot`.
fn connector(
    target: Target,
    pacer: Arc<Mutex<Pacer>>,
    reports: Reports,
    stop: CancellationToken,
) -> Box<dyn FnMut(Option<String>, oneshot::Sender<Connection>) + Send + 'static> {
    Box::new(move |_preferred_location, slot| {
        tokio::spawn(connect_loop(
            target.clone(),
            pacer.clone(),
            reports.clone(),
            stop.clone(),
            slot,
        ));
    })
}

async fn connect_loop(
    target: Target,
    pacer: Arc<Mutex<Pacer>>,
    reports: Reports,
    stop: CancellationToken,
    mut slot: oneshot::Sender<Connection>,
) {
    let mut delay = lock(&pacer).first_delay();
    loop {
        tokio::select! {
            () = stop.cancelled() => return stand_in(slot, target.jid).await,
            () = slot.closed() => return,
            () = tokio::time::sleep(delay) => {}
        }
        lock(&pacer).last_attempt = Some(Instant::now());
        tracing::debug!(jid = %target.jid, server = %target.dns, "connecting");
        let attempt = async {
            if target.insecure_tcp {
                login(GuardedTcp(target.dns.clone()), &target).await
            } else {
                install_crypto_provider();
                login(GuardedStartTls(target.dns.clone()), &target).await
            }
        };
        let result = tokio::select! {
            () = stop.cancelled() => return stand_in(slot, target.jid).await,
            () = slot.closed() => return,
            result = attempt => result,
        };
        match result {
            Ok(connection) => {
                lock(&pacer).failures = 0;
                tracing::debug!(jid = %target.jid, "logged in");
                // If the stream is gone meanwhile, the connection is simply dropped.
                let _ = slot.send(connection);
                return;
            }
            Err(failure) => {
                delay = lock(&pacer).failed();
                let reason = format!("{failure}; retrying in {:.1} s", delay.as_secs_f64());
                if failure.is_auth() {
                    tracing::error!(jid = %target.jid, server = %target.dns, "{reason}");
                } else {
                    tracing::warn!(jid = %target.jid, server = %target.dns, "{reason}");
                }
                let _ = reports.send(reason);
            }
        }
    }
}

/// The stream header a client sends to `jid`'s server.
fn header_to(jid: &Jid) -> StreamHeader<'_> {
    StreamHeader {
        to: Some(Cow::Borrowed(jid.domain().as_str())),
        from: None,
        id: None,
    }
}

/// tokio-xmpp's plain-TCP connector, with what the server sends read through a [`DepthGuard`]:
/// tokio-xmpp builds stanzas by recursion, and a stanza nested thousands of levels deep would
/// overflow the stack (see [`crate::depth_guard`]).
#[derive(Debug, Clone)]
struct GuardedTcp(DnsConfig);

impl ServerConnector for GuardedTcp {
    type Stream = BufStream<DepthGuard<tokio::net::TcpStream>>;

    async fn connect(
        &self,
        jid: &Jid,
        ns: &'static str,
        timeouts: Timeouts,
    ) -> Result<(PendingFeaturesRecv<Self::Stream>, ChannelBinding), tokio_xmpp::Error> {
        let tcp = BufStream::new(DepthGuard::new(self.0.resolve().await?));
        let pending = initiate_stream(tcp, ns, header_to(jid), timeouts).await?;
        Ok((pending, ChannelBinding::None))
    }
}

/// tokio-xmpp's STARTTLS connector, with what the server sends once TLS is up read through a
/// [`DepthGuard`] (as [`GuardedTcp`]; before TLS only the server's features and its go-ahead
/// are read).
#[derive(Debug, Clone)]
struct GuardedStartTls(DnsConfig);

impl ServerConnector for GuardedStartTls {
    type Stream = BufStream<DepthGuard<TlsStream<tokio::net::TcpStream>>>;

    async fn connect(
        &self,
        jid: &Jid,
        ns: &'static str,
        timeouts: Timeouts,
    ) -> Result<(PendingFeaturesRecv<Self::Stream>, ChannelBinding), tokio_xmpp::Error> {
        let tcp = BufStream::new(self.0.resolve().await?);
        let plain = initiate_stream(tcp, ns, header_to(jid), timeouts).await?;
        let (features, plain) = plain.recv_features().await?;
        if !features.can_starttls() {
            return Err(tokio_xmpp::Error::Protocol(
                tokio_xmpp::error::ProtocolError::NoTls,
            ));
        }
        let (tls, binding) = starttls(plain, jid.domain().as_str()).await?;
        let guarded = BufStream::new(DepthGuard::new(tls));
        let pending = initiate_stream(guarded, ns, header_to(jid), timeouts).await?;
        Ok((pending, binding))
    }
}

/// Why a login attempt failed.
#[derive(Debug)]
enum LoginFailure {
    Auth(tokio_xmpp::Error),
    Other(String),
}

impl LoginFailure {
    fn is_auth(&self) -> bool {
        matches!(self, Self::Auth(_))
    }
}

impl fmt::Display for LoginFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auth(e) => write!(f, "authentication failed (wrong password?): {e}"),
            Self::Other(e) => write!(f, "login failed: {e}"),
        }
    }
}

impl From<tokio_xmpp::Error> for LoginFailure {
    fn from(e: tokio_xmpp::Error) -> Self {
        match e {
            tokio_xmpp::Error::Auth(_) => Self::Auth(e),
            tokio_xmpp::Error::Protocol(tokio_xmpp::error::ProtocolError::NoTls) => {
                Self::Other("the server does not offer STARTTLS, and TLS is required".to_owned())
            }
            e => Self::Other(e.to_string()),
        }
    }
}

impl From<std::io::Error> for LoginFailure {
    fn from(e: std::io::Error) -> Self {
        Self::Other(format!("I/O error: {e}"))
    }
}

impl From<tokio_xmpp::xmlstream::RecvFeaturesError> for LoginFailure {
    fn from(e: tokio_xmpp::xmlstream::RecvFeaturesError) -> Self {
        tokio_xmpp::Error::from(e).into()
    }
}

/// One login: connect (STARTTLS or plain), authenticate, restart the stream. Resource binding
/// is left to the stanza stream. This is tokio-xmpp's `client_auth`, which is not public, with
/// errors returned instead of only logged.
async fn login<C: ServerConnector>(server: C, target: &Target) -> Result<Connection, LoginFailure> {
    let jid = &target.jid;
    let username = jid
        .node()
        .ok_or_else(|| LoginFailure::Other("the JID has no local part".to_owned()))?;
    let (pending, channel_binding) = server
        .connect(jid, ns::JABBER_CLIENT, Timeouts::tight())
        .await?;
    let (features, stream) = pending.recv_features::<FallibleStreamElement>().await?;
    let credentials = Credentials::default()
        .with_username(username.as_str())
        .with_password(target.password.clone())
        .with_channel_binding(channel_binding);
    let stream = tokio_xmpp::client_login(stream, features.sasl_mechanisms, credentials)
        .await
        .map_err(|e| match e {
            e @ tokio_xmpp::Error::Auth(_) => LoginFailure::Auth(e),
            e => LoginFailure::from(e),
        })?;
    let pending = stream.send_header(header_to(jid)).await?;
    let (features, stream) = pending.recv_features::<FallibleStreamElement>().await?;
    if !features.can_bind() {
        // tokio-xmpp's stream would panic on such a connection.
        return Err(LoginFailure::Other(
            "the server offers no resource binding after authentication".to_owned(),
        ));
    }
    Ok(Connection {
        stream: stream.box_stream(),
        features,
        identity: jid.clone(),
    })
}

/// Makes `ring` rustls' process-wide provider unless one is installed already.
fn install_crypto_provider() {
    use tokio_xmpp::rustls::crypto::{CryptoProvider, ring};
    if CryptoProvider::get_default().is_none() {
        // Losing a race with another installer is fine: some provider is installed.
        let _ = ring::default_provider().install_default();
    }
}

/// What a stand-in "server" says: a stream header and features offering only binding.
const STAND_IN_SERVER: &[u8] = b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' version='1.0' id='stand-in'>\
    <stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>";

/// Ends a reconnect at shutdown without upsetting tokio-xmpp: its stream worker treats a
/// dropped `slot` as fatal and panics, so we hand it an in-memory stream that closes right
/// away; the worker then sees that we are gone and stops.
async fn stand_in(slot: oneshot::Sender<Connection>, identity: Jid) {
    if slot.is_closed() {
        return;
    }
    let (ours, mut theirs) = tokio::io::duplex(4096);
    let connection = async {
        theirs.write_all(STAND_IN_SERVER).await?;
        let pending = initiate_stream(
            BufStream::new(ours),
            ns::JABBER_CLIENT,
            StreamHeader::default(),
            Timeouts::tight(),
        )
        .await?;
        let (features, stream) = pending
            .recv_features::<FallibleStreamElement>()
            .await
            .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        Ok::<_, std::io::Error>(Connection {
            stream: stream.box_stream(),
            features,
            identity,
        })
    };
    match tokio::time::timeout(Duration::from_secs(1), connection).await {
        Ok(Ok(connection)) => {
            drop(theirs);
            let _ = slot.send(connection);
        }
        Ok(Err(e)) => tracing::debug!("no stand-in connection for the shutdown: {e}"),
        Err(_) => tracing::debug!("no stand-in connection for the shutdown: timed out"),
    }
}

/// Why one stream's loop ended.
enum End {
    /// Shutdown (or the adapter is gone): close and end the task.
    Stop,
    /// tokio-xmpp's worker is gone: start a new stream.
    WorkerGone,
}

/// `<name id=… to=…>`, to identify an outgoing element in logs without its content.
fn describe(element: &Element) -> String {
    let mut text = format!("<{}", element.name());
    for attr in ["type", "id", "to"] {
        if let Some(value) = element.attr(attr) {
            text.push_str(&format!(" {attr}='{value}'"));
        }
    }
    text.push('>');
    text
}

/// Sends `event` to the adapter; `false` if it is gone or we are stopping.
async fn emit(
    events: &mpsc::Sender<StreamEvent>,
    event: StreamEvent,
    stop: &CancellationToken,
) -> bool {
    tokio::select! {
        () = stop.cancelled() => false,
        sent = events.send(event) => sent.is_ok(),
    }
}

async fn run(
    settings: ClientSettings,
    shutdown: CancellationToken,
    mut out: mpsc::Receiver<crate::stream::Outgoing>,
    events: mpsc::Sender<StreamEvent>,
) {
    // Cancelled when this task ends for any reason, which stops pending reconnects.
    let stop = shutdown.child_token();
    let _stop_on_exit = stop.clone().drop_guard();

    let target = match Target::new(&settings) {
        Ok(target) => target,
        Err(reason) => {
            tracing::error!("client connection not started: {reason}");
            emit(&events, StreamEvent::Offline { reason }, &stop).await;
            return;
        }
    };
    let pacer = Arc::new(Mutex::new(Pacer::default()));
    let (reports_tx, mut reports) = mpsc::unbounded_channel();

    // Sessions reported so far (see `Outgoing::session`).
    let mut sessions = 0u64;
    loop {
        let mut stream = StanzaStream::new(
            connector(
                target.clone(),
                pacer.clone(),
                reports_tx.clone(),
                stop.clone(),
            ),
            QUEUE_DEPTH,
        );
        // The bound JID while a session is up.
        let mut online: Option<Jid> = None;
        let mut last_bound: Option<Jid> = None;
        let end = loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => break End::Stop,
                Some(reason) = reports.recv() => {
                    if online.is_some() {
                        // A late report of an attempt that lost the race; we are online.
                        tracing::debug!("ignoring a stale failure report: {reason}");
                        continue;
                    }
                    if !emit(&events, StreamEvent::Offline { reason }, &stop).await {
                        break End::Stop;
                    }
                }
                event = stream.next() => {
                    let Some(event) = event else { break End::WorkerGone };
                    let event = match event {
                        Event::Stream(XmppStreamEvent::Reset { bound_jid, .. }) => {
                            tracing::info!(jid = %bound_jid, "client session online");
                            online = Some(bound_jid.clone());
                            last_bound = Some(bound_jid.clone());
                            StreamEvent::Online { jid: bound_jid.to_string() }
                        }
                        Event::Stream(XmppStreamEvent::Resumed) => {
                            let jid = last_bound.clone().unwrap_or_else(|| target.jid.clone());
                            tracing::info!(jid = %jid, "client session resumed (XEP-0198)");
                            online = Some(jid.clone());
                            StreamEvent::Online { jid: jid.to_string() }
                        }
                        Event::Stream(XmppStreamEvent::Suspended) => {
                            let reason = if online.take().is_some() {
                                "connection to the server lost; reconnecting"
                            } else {
                                "the connection failed while setting up the session; reconnecting"
                            };
                            tracing::warn!(jid = %target.jid, "{reason}");
                            StreamEvent::Offline { reason: reason.to_owned() }
                        }
                        Event::Stanza(stanza) => StreamEvent::Stanza(Element::from(stanza)),
                    };
                    let online_now = matches!(event, StreamEvent::Online { .. });
                    if !emit(&events, event, &stop).await {
                        break End::Stop;
                    }
                    if online_now {
                        sessions += 1;
                    }
                }
                element = out.recv() => {
                    let Some(outgoing) = element else {
                        break End::Stop;
                    };
                    if outgoing.is_stale(sessions) {
                        // Its `written` is dropped: a sender waiting for it fails and retries.
                        tracing::debug!(made_for = outgoing.session, session = sessions,
                            "outgoing {} made for an earlier session dropped", describe(&outgoing.stanza));
                        continue;
                    }
                    let crate::stream::Outgoing { stanza: mut element, written, .. } = outgoing;
                    // minidom panics on characters XML cannot carry; text from other networks
                    // may hold them.
                    crate::xml::sanitize(&mut element);
                    if online.is_none() {
                        tracing::debug!("no client session: outgoing {} dropped", describe(&element));
                        continue;
                    }
                    let described = describe(&element);
                    let stanza = match Stanza::try_from(element) {
                        Ok(stanza) => stanza,
                        Err(e) => {
                            tracing::warn!("outgoing {described} is not a valid stanza, skipped: {e}");
                            continue;
                        }
                    };
                    // Enqueue only. `send` panics if tokio-xmpp's worker has died: contain it.
                    let sent = tokio::select! {
                        () = stop.cancelled() => break End::Stop,
                        sent = AssertUnwindSafe(stream.send(Box::new(stanza))).catch_unwind() => sent,
                    };
                    if sent.is_err() {
                        break End::WorkerGone;
                    }
                    // In tokio-xmpp's send queue: written in order on this session, or replayed
                    // on the next one.
                    if let Some(written) = written {
                        let _ = written.send(());
                    }
                }
            }
        };
        match end {
            End::Stop => {
                // Stops a reconnect in progress, which `close` would otherwise wait for.
                stop.cancel();
                if tokio::time::timeout(CLOSE_TIMEOUT, stream.close())
                    .await
                    .is_err()
                {
                    tracing::debug!("client stream not closed within {CLOSE_TIMEOUT:?}");
                }
                tracing::debug!(jid = %target.jid, "client connection task ended");
                return;
            }
            End::WorkerGone => {
                drop(stream);
                let delay = lock(&pacer).failed();
                let reason = format!(
                    "tokio-xmpp's stream worker stopped unexpectedly; new stream in {:.1} s",
                    delay.as_secs_f64()
                );
                tracing::error!(jid = %target.jid, "{reason}");
                if !emit(&events, StreamEvent::Offline { reason }, &stop).await {
                    return;
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(jid: &str) -> ClientSettings {
        ClientSettings {
            jid: jid.to_owned(),
            password: "secret".to_owned(),
            server: None,
            insecure_tcp: false,
            resource: None,
        }
    }

    #[test]
    fn the_password_is_not_in_debug_output() {
        let text = format!("{:?}", settings("a@b"));
        assert!(!text.contains("secret"), "{text}");
    }

    #[test]
    fn a_resource_setting_replaces_the_jids_resource() {
        let mut s = settings("a@example.org/old");
        s.resource = Some("new".to_owned());
        let target = Target::new(&s).expect("valid settings");
        assert_eq!(target.jid.to_string(), "a@example.org/new");
    }

    #[test]
    fn invalid_settings_are_refused() {
        assert!(Target::new(&settings("example.org")).is_err());
        assert!(Target::new(&settings("@@")).is_err());
        for server in ["nohost", "host:notaport", ":5222", "::1:5222"] {
            let mut s = settings("a@example.org");
            s.server = Some(server.to_owned());
            assert!(Target::new(&s).is_err(), "{server}");
        }
    }

    #[test]
    fn server_addresses_parse() {
        for (server, shown) in [
            ("127.0.0.1:5222", "127.0.0.1:5222"),
            ("[::1]:5222", "[::1]:5222"),
            ("xmpp.example.org:5223", "xmpp.example.org:5223"),
        ] {
            let dns = parse_server(server).expect("valid");
            assert_eq!(dns.to_string(), shown);
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let mut pacer = Pacer::default();
        let delays: Vec<Duration> = (0..12).map(|_| pacer.failed()).collect();
        assert!(delays[0] >= Duration::from_millis(800) && delays[0] < Duration::from_millis(1200));
        assert!(delays[1] >= Duration::from_millis(1600));
        assert!(delays[2] >= Duration::from_millis(3200));
        assert!(delays.iter().all(|d| *d <= BACKOFF_MAX.mul_f64(1.2)));
        assert!(delays[11] >= BACKOFF_MAX.mul_f64(0.8));
    }

    #[tokio::test]
    async fn invalid_settings_end_the_task_with_one_offline() {
        let mut handle = spawn_client(settings("no-local-part"), CancellationToken::new());
        match handle.events.recv().await {
            Some(StreamEvent::Offline { reason }) => {
                assert!(reason.contains("local part"), "{reason}")
            }
            other => panic!("expected Offline, got {other:?}"),
        }
        assert!(handle.events.recv().await.is_none(), "the task ended");
    }

    #[tokio::test]
    async fn the_stand_in_connection_is_accepted() {
        let (slot, rx) = oneshot::channel();
        stand_in(slot, Jid::new("a@example.org").expect("jid")).await;
        let connection = rx.await.expect("a connection");
        assert!(connection.features.can_bind());
    }
}
