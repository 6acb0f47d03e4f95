//! One task per connection, fed by an mpsc channel (no `Client::split()`).
//! Both actors remember the MUC joins that went out and replay them after
//! every (re)connection.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_xmpp::connect::DnsConfig;
use tokio_xmpp::xmlstream::Timeouts;
use tokio_xmpp::connect::TcpServerConnector;
use tokio_xmpp::stanzastream::{Event as StanzaStreamEvent, StanzaStream, StreamEvent};
use xmpp_parsers::jid::{BareJid, Jid};
use xmpp_parsers::minidom::Element;
use xmpp_parsers::muc::muc::Muc;
use xmpp_parsers::presence::{Presence, Type as PresenceType};
use xmpp_parsers::stanza::Stanza;

use crate::component::{ComponentConn, Incoming, Keepalive};

#[derive(Debug)]
pub enum XmppEvent {
    Online(Jid),
    Disconnected(String),
    Stanza(Stanza),
    Unparsed(Element),
}

/// Remembers MUC join presences (key: (from or "", room bare JID)).
#[derive(Default)]
struct Joins(BTreeMap<(String, BareJid), Presence>);

impl Joins {
    fn observe(&mut self, st: &Stanza) {
        let Stanza::Presence(p) = st else { return };
        let Some(to) = &p.to else { return };
        let key = (
            p.from.as_ref().map(|f| f.to_string()).unwrap_or_default(),
            to.to_bare(),
        );
        if p.type_ == PresenceType::Unavailable {
            self.0.remove(&key);
        } else if p.payloads.iter().any(|pl| Muc::try_from(pl.clone()).is_ok()) {
            self.0.insert(key, p.clone());
        }
    }
    fn replay(&self) -> impl Iterator<Item = Stanza> + '_ {
        self.0.values().cloned().map(Stanza::from)
    }
}

pub struct ComponentConfig {
    pub addr: String,
    pub domain: String,
    pub secret: String,
    pub keepalive: Keepalive,
}

/// Component actor: connects, reconnects with backoff, replays joins.
pub fn spawn_component(
    cfg: ComponentConfig,
) -> (mpsc::Sender<Stanza>, mpsc::Receiver<XmppEvent>) {
    let (out_tx, mut out_rx) = mpsc::channel::<Stanza>(256);
    let (in_tx, in_rx) = mpsc::channel::<XmppEvent>(256);
    tokio::spawn(async move {
        let mut joins = Joins::default();
        let mut backoff = Duration::from_millis(250);
        loop {
            let mut conn =
                match ComponentConn::connect(&cfg.addr, &cfg.domain, &cfg.secret, cfg.keepalive)
                    .await
                {
                    Ok(c) => c,
                    Err(e) => {
                        if in_tx.send(XmppEvent::Disconnected(e.to_string())).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                        continue;
                    }
                };
            backoff = Duration::from_millis(250);
            let _ = in_tx
                .send(XmppEvent::Online(Jid::new(&cfg.domain).expect("domain")))
                .await;
            let mut failed = None;
            for st in joins.replay().collect::<Vec<_>>() {
                if let Err(e) = conn.send(st).await {
                    failed = Some(e.to_string());
                    break;
                }
            }
            while failed.is_none() {
                tokio::select! {
                    out = out_rx.recv() => match out {
                        None => { conn.close().await; return; }
                        Some(st) => {
                            joins.observe(&st);
                            if let Err(e) = conn.send(st).await { failed = Some(e.to_string()); }
                        }
                    },
                    inc = conn.next() => match inc {
                        Ok(Incoming::Stanza(st)) => { let _ = in_tx.send(XmppEvent::Stanza(st)).await; }
                        Ok(Incoming::Unparsed(el, why)) => {
                            log::warn!("component: unparsed stanza: {why}");
                            let _ = in_tx.send(XmppEvent::Unparsed(el)).await;
                        }
                        Err(e) => failed = Some(e.to_string()),
                    },
                }
            }
            // NB: a stanza taken from out_rx whose send failed is lost here; a real
            // adapter keeps it and retries after reconnecting.
            if in_tx
                .send(XmppEvent::Disconnected(failed.unwrap_or_default()))
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(backoff).await;
        }
    });
    (out_tx, in_rx)
}

/// Client actor on tokio-xmpp's `StanzaStream` (what `Client` wraps): it
/// reconnects by itself; `send` only enqueues (no waiting for the "Sent" stage,
/// which deadlocked `Client::send_stanza` in this loop, see NOTES.md); we replay
/// joins on every `Reset` (= new session; `Resumed` would keep MUC state).
pub fn spawn_client(
    jid: &str,
    password: &str,
    addr: &str,
    timeouts: Timeouts,
) -> (mpsc::Sender<Stanza>, mpsc::Receiver<XmppEvent>) {
    let (out_tx, mut out_rx) = mpsc::channel::<Stanza>(256);
    let (in_tx, in_rx) = mpsc::channel::<XmppEvent>(256);
    let jid: Jid = jid.parse().expect("jid");
    let mut stream = StanzaStream::new_c2s(
        TcpServerConnector::from(DnsConfig::addr(addr)),
        jid,
        password.to_string(),
        timeouts,
        64,
    );
    tokio::spawn(async move {
        let mut joins = Joins::default();
        loop {
            tokio::select! {
                out = out_rx.recv() => match out {
                    None => { stream.close().await; return; }
                    Some(mut st) => {
                        joins.observe(&st);
                        ensure_id(&mut st);
                        let _token = stream.send(Box::new(st)).await; // enqueue only
                    }
                },
                ev = stream.next() => match ev {
                    None => { let _ = in_tx.send(XmppEvent::Disconnected("client ended".into())).await; return; }
                    Some(StanzaStreamEvent::Stream(StreamEvent::Reset { bound_jid, .. })) => {
                        let _ = in_tx.send(XmppEvent::Online(bound_jid)).await;
                        for mut st in joins.replay().collect::<Vec<_>>() {
                            ensure_id(&mut st);
                            let _ = stream.send(Box::new(st)).await;
                        }
                    }
                    Some(StanzaStreamEvent::Stream(StreamEvent::Resumed)) => {}
                    Some(StanzaStreamEvent::Stream(StreamEvent::Suspended)) => {
                        let _ = in_tx.send(XmppEvent::Disconnected("suspended".into())).await;
                    }
                    Some(StanzaStreamEvent::Stanza(st)) => { let _ = in_tx.send(XmppEvent::Stanza(st)).await; }
                },
            }
        }
    });
    (out_tx, in_rx)
}

fn ensure_id(st: &mut Stanza) {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let next = || format!("b{}", N.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    match st {
        Stanza::Message(m) => {
            m.id.get_or_insert_with(|| xmpp_parsers::message::Id(next()));
        }
        Stanza::Presence(p) => {
            p.id.get_or_insert_with(next);
        }
        Stanza::Iq(_) => {}
    }
}
