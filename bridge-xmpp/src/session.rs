//! The component-mode connection task: one XEP-0114 stream at a time, reconnected with backoff
//! and jitter, kept alive with XEP-0199 pings.
//!
//! tokio-xmpp's `Component` neither reconnects nor reports why its stream ended, so this task
//! does both: it owns the [`ComponentConnection`] alone, writes what arrives on the outbound
//! channel, reports every stanza, and after any failure reports [`StreamEvent::Offline`],
//! waits (250 ms doubling to 30 s, with jitter) and connects again. A stream that stays silent
//! for [`KEEPALIVE_IDLE`] gets a ping to the server; no answer within [`KEEPALIVE_TIMEOUT`]
//! counts as a dead stream (a server that vanished without closing the TCP connection).

use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use xmpp_parsers::minidom::Element;

use crate::xml::Attrs;

use crate::component::{ComponentConnection, ComponentError, DEFAULT_MAX_STANZA_BYTES};
use crate::stream::{Outgoing, StreamEvent, StreamHandle};

/// How long the stream may stay silent before we ping the server.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
/// How long the server has to answer a keepalive ping.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(15);
const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const PING_ID: &str = "bridge-keepalive";

/// Where and how the component connects.
#[derive(Clone, Debug)]
pub struct ComponentSettings {
    /// The server's component port, `host:port`.
    pub server: String,
    /// The component's domain, e.g. `bridge.example.org`.
    pub domain: String,
    /// The shared secret.
    pub secret: String,
    /// Largest incoming stanza, in bytes of XML.
    pub max_stanza_bytes: usize,
    /// Silence before a keepalive ping ([`KEEPALIVE_IDLE`] by default).
    pub keepalive_idle: Duration,
    /// How long the server has to answer it ([`KEEPALIVE_TIMEOUT`] by default).
    pub keepalive_timeout: Duration,
}

impl ComponentSettings {
    /// Settings with the default limits.
    pub fn new(server: String, domain: String, secret: String) -> Self {
        Self {
            server,
            domain,
            secret,
            max_stanza_bytes: DEFAULT_MAX_STANZA_BYTES,
            keepalive_idle: KEEPALIVE_IDLE,
            keepalive_timeout: KEEPALIVE_TIMEOUT,
        }
    }
}

/// Starts the connection task; it runs until `shutdown` is cancelled.
pub fn spawn_component(settings: ComponentSettings, shutdown: CancellationToken) -> StreamHandle {
    let (handle, out_rx, events_tx) = StreamHandle::channel();
    tokio::spawn(run(settings, shutdown, out_rx, events_tx));
    handle
}

async fn run(
    settings: ComponentSettings,
    shutdown: CancellationToken,
    mut out: mpsc::Receiver<Outgoing>,
    events: mpsc::Sender<StreamEvent>,
) {
    let mut backoff = bridge_core::Backoff::new(MIN_BACKOFF, MAX_BACKOFF);
    // Sessions reported so far (see `Outgoing::session`).
    let mut sessions = 0u64;
    loop {
        let connect = async {
            let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&settings.server))
                .await
                .map_err(|_| ComponentError::Io(std::io::ErrorKind::TimedOut.into()))??;
            tcp.set_nodelay(true)?;
            let handshake = ComponentConnection::handshake_with_limit(
                tcp,
                &settings.domain,
                &settings.secret,
                settings.max_stanza_bytes,
            );
            tokio::time::timeout(CONNECT_TIMEOUT, handshake)
                .await
                .map_err(|_| ComponentError::Io(std::io::ErrorKind::TimedOut.into()))?
        };
        let outcome = tokio::select! {
            () = shutdown.cancelled() => return,
            conn = connect => conn,
        };
        let reason = match outcome {
            Ok(conn) => {
                backoff.reset();
                let online = StreamEvent::Online {
                    jid: settings.domain.clone(),
                };
                if events.send(online).await.is_err() {
                    return;
                }
                sessions += 1;
                match serve(conn, &settings, &shutdown, &mut out, &events, sessions).await {
                    Served::Shutdown | Served::AdapterGone => return,
                    Served::Lost(reason) => reason,
                }
            }
            Err(e) => {
                if matches!(e, ComponentError::HandshakeRefused { .. }) {
                    tracing::error!(server = %settings.server, domain = %settings.domain, error = %e,
                        "the server refused the component: check `domain` and `secret`");
                } else {
                    tracing::warn!(server = %settings.server, error = %e, "cannot connect the component");
                }
                e.to_string()
            }
        };
        if events.send(StreamEvent::Offline { reason }).await.is_err() {
            return;
        }
        // Stanzas queued while offline would go to a session that does not know their context.
        while out.try_recv().is_ok() {}
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

enum Served {
    Shutdown,
    AdapterGone,
    Lost(String),
}

async fn serve(
    mut conn: ComponentConnection<TcpStream>,
    settings: &ComponentSettings,
    shutdown: &CancellationToken,
    out: &mut mpsc::Receiver<Outgoing>,
    events: &mpsc::Sender<StreamEvent>,
    session: u64,
) -> Served {
    let mut last_heard = Instant::now();
    let mut ping_sent: Option<Instant> = None;
    loop {
        let deadline = match ping_sent {
            Some(sent) => sent + settings.keepalive_timeout,
            None => last_heard + settings.keepalive_idle,
        };
        tokio::select! {
            biased;
            () = shutdown.cancelled() => {
                let _ = conn.close().await;
                return Served::Shutdown;
            }
            incoming = conn.next_element() => match incoming {
                Ok(el) => {
                    last_heard = Instant::now();
                    ping_sent = None;
                    if el.name() == "iq" && el.attr("id") == Some(PING_ID) {
                        continue;
                    }
                    if events.send(StreamEvent::Stanza(el)).await.is_err() {
                        return Served::AdapterGone;
                    }
                }
                Err(ComponentError::Skipped(reason)) => {
                    last_heard = Instant::now();
                    ping_sent = None;
                    if events.send(StreamEvent::Skipped { reason }).await.is_err() {
                        return Served::AdapterGone;
                    }
                }
                Err(e) => return Served::Lost(e.to_string()),
            },
            outgoing = out.recv() => match outgoing {
                Some(stale) if stale.is_stale(session) => {
                    // Its `written` is dropped: a sender waiting for it fails and retries.
                    tracing::debug!(made_for = stale.session, session,
                        "outgoing stanza made for an earlier session dropped");
                }
                Some(Outgoing { stanza, written, .. }) => {
                    if let Err(e) = conn.send(stanza).await {
                        return Served::Lost(e.to_string());
                    }
                    if let Some(written) = written {
                        let _ = written.send(());
                    }
                }
                None => return Served::AdapterGone,
            },
            () = tokio::time::sleep_until(deadline) => {
                if ping_sent.is_some() {
                    return Served::Lost(format!(
                        "no answer to a keepalive ping within {:?}",
                        settings.keepalive_timeout
                    ));
                }
                if let Err(e) = conn.send(ping(&settings.domain)).await {
                    return Served::Lost(e.to_string());
                }
                ping_sent = Some(Instant::now());
            }
        }
    }
}

/// An XEP-0199 ping from the component to its server.
fn ping(domain: &str) -> Element {
    let server = domain.split_once('.').map_or(domain, |(_, parent)| parent);
    Element::builder("iq", crate::wire::NS_CLIENT)
        .with("type", "get")
        .with("id", PING_ID)
        .with("from", domain)
        .with("to", server)
        .append(Element::builder("ping", "urn:xmpp:ping").build())
        .build()
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;
    use tokio::sync::oneshot;

    use super::*;
    use crate::component::tests::{fake_server_handshake, read_until};

    async fn next(handle: &mut StreamHandle) -> StreamEvent {
        tokio::time::timeout(Duration::from_secs(10), handle.events.recv())
            .await
            .expect("an event in time")
            .expect("the task runs")
    }

    /// Plays the server's handshake on `conn` and waits for the task's `Online`.
    async fn handshake_online(conn: &mut tokio::net::TcpStream, handle: &mut StreamHandle) {
        fake_server_handshake(conn, "<handshake/>")
            .await
            .expect("handshake");
        assert!(matches!(next(handle).await, StreamEvent::Online { .. }));
    }

    /// A server that goes silent is detected by the keepalive ping and reconnected to; a
    /// server that answers keeps the session.
    #[tokio::test]
    async fn a_silent_server_is_detected_and_the_task_reconnects() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address").to_string();
        let mut settings = ComponentSettings::new(addr, "bridge.localhost".into(), "s".into());
        settings.keepalive_idle = Duration::from_millis(100);
        settings.keepalive_timeout = Duration::from_millis(300);
        let shutdown = CancellationToken::new();
        let mut handle = spawn_component(settings, shutdown.clone());

        // First session: the server takes the ping and never answers.
        let (mut first, _) = listener.accept().await.expect("first connection");
        handshake_online(&mut first, &mut handle).await;
        read_until(&mut first, "urn:xmpp:ping")
            .await
            .expect("a keepalive ping");
        match next(&mut handle).await {
            StreamEvent::Offline { reason } => assert!(reason.contains("keepalive"), "{reason}"),
            other => panic!("expected Offline, got {other:?}"),
        }

        // Second session: the task came back by itself, and stanzas flow.
        let (mut second, _) = listener.accept().await.expect("reconnection");
        handshake_online(&mut second, &mut handle).await;
        second
            .write_all(b"<message from='a@b' to='bridge.localhost'><body>hi</body></message>")
            .await
            .expect("write");
        match next(&mut handle).await {
            StreamEvent::Stanza(el) => assert_eq!(el.ns(), crate::wire::NS_CLIENT),
            other => panic!("expected the message, got {other:?}"),
        }
        shutdown.cancel();
        drop(first);
    }

    fn message(id: &str) -> Element {
        Element::builder("message", crate::wire::NS_CLIENT)
            .with("id", id)
            .with("to", "room@muc.localhost")
            .build()
    }

    /// What the adapter made for a session that ended is never written to the next one,
    /// though it waited in the channel through the reconnect (written there, a message could
    /// overtake the older ones the adapter sends again at a new session); its sender hears it
    /// was not written. What is made for the new session is written.
    #[tokio::test]
    async fn a_stanza_made_for_an_earlier_session_is_dropped_not_written_to_the_next() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address").to_string();
        let settings = ComponentSettings::new(addr, "bridge.localhost".into(), "s".into());
        let shutdown = CancellationToken::new();
        let mut handle = spawn_component(settings, shutdown.clone());

        let (mut first, _) = listener.accept().await.expect("first connection");
        handshake_online(&mut first, &mut handle).await;
        drop(first);
        assert!(matches!(
            next(&mut handle).await,
            StreamEvent::Offline { .. }
        ));

        // Queued while the task is in the next handshake, where it reads no stanzas: made
        // for session 1 (the one the adapter knew), so stale in session 2.
        let (mut second, _) = listener.accept().await.expect("reconnection");
        let (written, stale_written) = oneshot::channel();
        let stale = Outgoing {
            stanza: message("stale"),
            written: Some(written),
            session: 1,
        };
        handle.out.send(stale).await.expect("queued");
        handshake_online(&mut second, &mut handle).await;
        let (written, fresh_written) = oneshot::channel();
        let fresh = Outgoing {
            stanza: message("fresh"),
            written: Some(written),
            session: 2,
        };
        handle.out.send(fresh).await.expect("queued");
        let wrote = read_until(&mut second, "fresh")
            .await
            .expect("the fresh stanza");
        assert!(
            !wrote.contains("stale"),
            "the stale stanza was written: {wrote}"
        );
        assert!(
            fresh_written.await.is_ok(),
            "the fresh stanza's sender is told"
        );
        assert!(
            stale_written.await.is_err(),
            "the stale stanza's sender hears it was not written"
        );
        shutdown.cancel();
    }
}
