//! `linechat`: a complete adapter in one small file — the example to start from when writing a
//! plugin for the bridge.
//!
//! The protocol ([`protocol`]) is line-based TCP: the client says `HELLO <name>`; the server
//! answers `WELCOME` and sends every `EVENT` this name has not acknowledged (`ACK`), then new
//! ones as they happen; the client posts with `SEND`, which the server confirms with `OK`.
//!
//! It shows settings checked without I/O, one task owning the socket and reconnecting with
//! backoff, inbound events enqueued in read order and acknowledged once durable, idempotent
//! sends, and echoes recognised by their puppet. [`server`] is a server for tests and demos.

pub mod notice;
pub mod protocol;
pub mod server;

pub use notice::BRIDGE_USER;

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bridge_core::{
    Adapter, AdapterContext, AdapterError, AdapterFactory, AdapterId, Backoff, Capabilities,
    ConfigIssue, Delivered, EventKind, InboundEvent, MessageContent, MsgType, OutboundEvent,
    RemoteEventId, RemoteRoomId, RemoteUserId, Sender,
};
use futures::stream::{FuturesUnordered, StreamExt};
use parking_lot::Mutex;
use protocol::{Line, Post, is_word, read_line};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Inbound events handed to the core but not yet acknowledged, per connection.
const MAX_IN_FLIGHT: usize = 1024;

const CONNECT_HELP: &str = "required: the server's IP address and port, e.g. \"127.0.0.1:7070\"";
const UNKNOWN_HELP: &str = "unknown setting: linechat takes `connect` and `name`";
const NAME_HELP: &str = "expected 1 to 32 of a-z, 0-9, `_` and `-`";

/// Builds [`LinechatAdapter`]s from `type = "linechat"` sections. Settings: `connect` (required,
/// e.g. `"127.0.0.1:7070"`) and `name` (the client name, default `bridge`, `[a-z0-9_-]{1,32}`).
#[derive(Debug, Clone, Copy, Default)]
pub struct LinechatFactory;

impl AdapterFactory for LinechatFactory {
    fn type_name(&self) -> &'static str {
        "linechat"
    }

    fn validate(&self, settings: &toml::Table) -> Vec<ConfigIssue> {
        parse_settings(settings).err().unwrap_or_default()
    }

    fn build(&self, id: AdapterId, table: &toml::Table) -> Result<Arc<dyn Adapter>, AdapterError> {
        let settings = parse_settings(table);
        let (addr, name) = settings.map_err(|e| AdapterError::Permanent(format!("{id}: {e:?}")))?;
        Ok(Arc::new(LinechatAdapter::new(addr, name)))
    }
}

/// Reads the settings, reporting every problem rather than the first.
fn parse_settings(settings: &toml::Table) -> Result<(SocketAddr, String), Vec<ConfigIssue>> {
    let text = |key: &str| settings.get(key).map(toml::Value::as_str);
    let connect: Option<SocketAddr> = text("connect").flatten().and_then(|a| a.parse().ok());
    let name = text("name").map_or(Some("bridge"), |n| n.filter(|n| is_client_name(n)));
    let unknown = (settings.keys()).filter(|k| !["connect", "name"].contains(&k.as_str()));
    let mut issues: Vec<_> = unknown.map(|k| ConfigIssue::new(k, UNKNOWN_HELP)).collect();
    if connect.is_none() {
        issues.push(ConfigIssue::new("connect", CONNECT_HELP));
    }
    if name.is_none() {
        issues.push(ConfigIssue::new("name", NAME_HELP));
    }
    match (connect, name) {
        (Some(addr), Some(name)) if issues.is_empty() => Ok((addr, name.to_owned())),
        _ => Err(issues),
    }
}

fn is_client_name(name: &str) -> bool {
    let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-';
    (1..=32).contains(&name.len()) && name.bytes().all(allowed)
}

/// The neutral form of an `EVENT`.
fn inbound(seq: u64, post: Post) -> InboundEvent {
    // A text starting with "/me " is an action, as in most line-based chats.
    let action = post.text.strip_prefix("/me ");
    let mut content = MessageContent::text(action.unwrap_or(&post.text));
    if action.is_some() {
        content.msgtype = MsgType::Emote;
    }
    let reply_to = post.reply_to.map(|r| RemoteEventId::new(r.to_string()));
    let kind = EventKind::Message {
        content,
        reply_to,
        thread: None,
    };
    let native_id = Some(RemoteEventId::new(seq.to_string()));
    InboundEvent::new(post.room, native_id, post.sender, kind)
}

/// The `SEND` of a neutral message, posted by `puppet`.
fn outbound(event: &OutboundEvent, puppet: &RemoteUserId) -> Result<Post, AdapterError> {
    let (content, reply_to) = match &event.kind {
        EventKind::Message {
            content, reply_to, ..
        } => (content, reply_to),
        other => return Err(AdapterError::Unsupported(other.name().into())),
    };
    let room = event.room.to_string();
    if !is_word(&room) {
        return Err(AdapterError::Permanent(format!("bad room {room}")));
    }
    let emote = content.msgtype == MsgType::Emote;
    let me = if emote { "/me " } else { "" };
    Ok(Post {
        room,
        sender: puppet.to_string(),
        reply_to: reply_to.as_ref().and_then(|r| r.as_str().parse().ok()),
        text: format!("{me}{}", content.text.body()),
    })
}

/// A `SEND` for the connection task: txn, post and the waiter of its `OK`.
type Outgoing = (String, Post, oneshot::Sender<u64>);

/// An adapter to one linechat server. There is nothing to join: the server sends the events of
/// every room, and the core ignores (as `Unrouted`) those of rooms that are not linked.
#[derive(Debug)]
pub struct LinechatAdapter {
    addr: SocketAddr,
    name: String,
    /// The live connection's queue of `SEND`s; `None` while disconnected.
    out: Mutex<Option<mpsc::UnboundedSender<Outgoing>>>,
    /// The context `run` was given, for `send` to register puppets with.
    ctx: Mutex<Option<AdapterContext>>,
    malformed: AtomicU64,
}

impl LinechatAdapter {
    /// An adapter that will connect to `addr` as client `name`.
    pub fn new(addr: SocketAddr, name: impl Into<String>) -> Self {
        let (name, (out, ctx, malformed)) = (name.into(), Default::default());
        Self {
            addr,
            name,
            out,
            ctx,
            malformed,
        }
    }

    /// How many malformed lines the server sent (each logged and skipped).
    pub fn malformed_lines(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
    }

    /// The linechat user a bridged sender posts as: `<adapter>.<user>`, whitespace made `_`.
    pub fn puppet_of(sender: &Sender) -> RemoteUserId {
        let name = format!("{}.{}", sender.adapter, sender.user);
        RemoteUserId::new(name.replace(char::is_whitespace, "_"))
    }

    /// One connection, until it fails. The only task that touches the socket: it reads lines,
    /// writes what `send` and the acknowledgements queue, and hands each `OK` to its waiter.
    async fn connection(&self, ctx: &AdapterContext, backoff: &mut Backoff) -> io::Result<()> {
        let connect = tokio::time::timeout(MAX_BACKOFF, TcpStream::connect(self.addr));
        let mut stream = connect.await.map_err(|_| io::ErrorKind::TimedOut)??;
        stream.set_nodelay(true)?;
        let (reader, mut writer) = stream.split();
        let mut reader = BufReader::new(reader);
        let (tx, mut rx) = mpsc::unbounded_channel();
        *self.out.lock() = Some(tx);
        // Dropped with this function, which makes every waiting `send` fail at once.
        let mut waiting: HashMap<String, oneshot::Sender<u64>> = HashMap::new();
        let mut in_flight = FuturesUnordered::new();
        let (mut line, mut out, name) = (Vec::new(), Vec::new(), self.name.clone());
        let _ = writeln!(out, "{}", Line::Hello { name });
        loop {
            tokio::select! {
                read = read_line(&mut reader, &mut line), if in_flight.len() < MAX_IN_FLIGHT => {
                    // A line is complete unless the stream ended or it exceeds MAX_LINE.
                    if read? == 0 || !line.ends_with(b"\n") {
                        return Err(io::Error::other("connection closed or line too long"));
                    }
                    match std::str::from_utf8(&line).map(Line::parse) {
                        Ok(Ok(Line::Welcome)) => {
                            ctx.set_connected(true);
                            backoff.reset();
                        }
                        Ok(Ok(Line::Event { seq, post })) => {
                            // Enqueued in read order, which fixes the order of acceptance, then
                            // acknowledged once durable. On error, reconnect: the server resends.
                            let event = inbound(seq, post);
                            let pending = ctx.enqueue(event).map_err(io::Error::other)?;
                            in_flight.push(async move { (seq, pending.durable().await) });
                        }
                        Ok(Ok(Line::Ok { txn, seq })) => {
                            if let Some(waiter) = waiting.remove(&txn) {
                                let _ = waiter.send(seq); // gone if `send` timed out meanwhile
                            }
                        }
                        Ok(Ok(Line::Err { reason })) => tracing::warn!(%reason, "line refused"),
                        _ => {
                            self.malformed.fetch_add(1, Ordering::Relaxed);
                            let line = String::from_utf8_lossy(&line);
                            tracing::warn!(%line, "malformed line from linechat server; skipped");
                        }
                    }
                    line.clear();
                }
                // Any outcome (accepted, duplicate, echo, unrouted…) is acknowledged.
                Some((seq, _)) = in_flight.next(), if !in_flight.is_empty() => {
                    let _ = writeln!(out, "{}", Line::Ack { seq });
                }
                Some((txn, post, waiter)) = rx.recv() => {
                    waiting.insert(txn.clone(), waiter);
                    let _ = writeln!(out, "{}", Line::Send { txn, post });
                }
                // Written in whatever chunks the socket takes, so reading never waits on writing.
                written = writer.write(&out), if !out.is_empty() => {
                    out.drain(..written?);
                }
            }
        }
    }

    /// Makes `puppet` known as ours before its message can come back as an `EVENT`: the core
    /// records [`Delivered::puppet`] only after `send` returns, which can be too late.
    pub(crate) async fn register_puppet(&self, puppet: &RemoteUserId) -> Result<(), AdapterError> {
        let ctx = self.ctx.lock().clone();
        let ctx = ctx.ok_or_else(|| AdapterError::transient("the adapter is not running"))?;
        if !ctx.is_puppet(puppet) {
            let failed = |e: bridge_core::StoreError| AdapterError::transient(e.to_string());
            ctx.add_puppet(puppet).map_err(failed)?;
            ctx.store().flush().await.map_err(failed)?;
        }
        Ok(())
    }
}

#[async_trait]
impl Adapter for LinechatAdapter {
    fn capabilities(&self) -> Capabilities {
        // Plain text and replies: the core turns edits, reactions… into text for us.
        let mut caps = Capabilities::text_only();
        caps.replies = true;
        caps
    }

    async fn run(&self, ctx: AdapterContext) -> Result<(), AdapterError> {
        *self.ctx.lock() = Some(ctx.clone());
        let mut backoff = Backoff::new(MIN_BACKOFF, MAX_BACKOFF);
        loop {
            let result = tokio::select! {
                result = self.connection(&ctx, &mut backoff) => result,
                () = ctx.shutdown().cancelled() => Ok(()),
            };
            *self.out.lock() = None;
            ctx.set_connected(false);
            if let Err(error) = result {
                tracing::warn!(addr = %self.addr, %error, "linechat connection lost; reconnecting");
            }
            // Exponential backoff with jitter, so that clients do not all come back at once.
            tokio::select! {
                () = tokio::time::sleep(backoff.next_delay()) => {}
                () = ctx.shutdown().cancelled() => return Ok(()),
            }
        }
    }

    async fn send(&self, event: OutboundEvent) -> Result<Delivered, AdapterError> {
        let puppet = Self::puppet_of(&event.sender);
        let post = outbound(&event, &puppet)?;
        self.register_puppet(&puppet).await?;
        // The neutral event ID is the transaction ID: a retried send creates nothing new.
        let seq = notice::post(self, event.id.to_string(), post).await?;
        let (native_id, puppet) = (Some(RemoteEventId::new(seq.to_string())), Some(puppet));
        Ok(Delivered { native_id, puppet })
    }

    /// Posts as [`BRIDGE_USER`] ([`notice`]).
    async fn send_notice(&self, room: &RemoteRoomId, text: &str) -> Result<(), AdapterError> {
        notice::send(self, room, text).await
    }
}
