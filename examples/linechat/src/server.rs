//! An in-process linechat server, for tests, demos and benchmarks.
//!
//! The server keeps one log of events (sequence numbers start at 1), remembers for every client
//! name which events it acknowledged, and deduplicates `SEND`s by transaction ID. Each connection
//! is served by one task that reads commands and writes events; a `watch` channel wakes those
//! tasks when the log grows. A new connection with a client name already connected replaces the
//! older one. [`Server::shutdown`] and [`Server::resume`] stop and restart listening on the same
//! address while keeping the log, the acknowledgements and the transaction IDs, like a server
//! restart with persistent storage.

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bridge_core::adapter::CancellationToken;
use parking_lot::Mutex;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::protocol::{Line, MAX_LINE, Post, read_line};

/// Events are copied into a connection's output buffer until it holds this much: memory per
/// client stays bounded however long the backlog.
const REFILL_BELOW: usize = 64 * 1024;

/// One event of the server's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Its sequence number: server-wide, increasing from 1; the native event ID.
    pub seq: u64,
    /// The room it was posted in.
    pub room: String,
    /// Who posted it (a human, or a puppet name given in a `SEND`).
    pub sender: String,
    /// The sequence number of the event it replies to.
    pub reply_to: Option<u64>,
    /// Its text, unescaped.
    pub text: String,
    /// The transaction ID of the `SEND` that created it; `None` for events posted by humans.
    pub txn: Option<String>,
}

/// A running linechat server. Dropping it stops it.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    listening: Mutex<Option<Listening>>,
}

/// The accept loop and the token that stops it (and with it every connection).
#[derive(Debug)]
struct Listening {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Sent to whenever the log grows.
    grew: watch::Sender<()>,
}

#[derive(Debug, Default)]
struct State {
    log: Vec<Message>,
    txns: HashMap<String, u64>,
    clients: HashMap<String, Client>,
    duplicates: u64,
}

/// What the server remembers of one client name.
#[derive(Debug, Default)]
struct Client {
    /// Every event up to this sequence number is acknowledged.
    floor: u64,
    /// Acknowledged events above `floor` (acks may come out of order).
    acked: HashSet<u64>,
    /// Cancelled to close the connection currently using this name.
    connection: CancellationToken,
}

impl Client {
    fn ack(&mut self, seq: u64) {
        if seq > self.floor && self.acked.insert(seq) {
            while self.acked.remove(&(self.floor + 1)) {
                self.floor += 1;
            }
        }
    }

    fn is_acked(&self, seq: u64) -> bool {
        seq <= self.floor || self.acked.contains(&seq)
    }
}

/// A connection that said `HELLO`.
#[derive(Debug)]
struct Session {
    name: String,
    /// The next sequence number to consider sending.
    next: u64,
    kicked: CancellationToken,
}

/// Whitespace would break the line format: replaced by `_` (and an empty name becomes `_`).
fn word(field: &str) -> String {
    let word = field.replace(char::is_whitespace, "_");
    if word.is_empty() {
        "_".to_owned()
    } else {
        word
    }
}

impl Server {
    /// Listens on `addr` (port 0 picks a free port) and serves clients in background tasks.
    pub async fn bind(addr: impl ToSocketAddrs) -> io::Result<Server> {
        let listener = TcpListener::bind(addr).await?;
        let server = Server {
            addr: listener.local_addr()?,
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                grew: watch::Sender::new(()),
            }),
            listening: Mutex::new(None),
        };
        server.listen(listener);
        Ok(server)
    }

    fn listen(&self, listener: TcpListener) {
        let stop = CancellationToken::new();
        let task = tokio::spawn(accept_loop(self.shared.clone(), listener, stop.clone()));
        *self.listening.lock() = Some(Listening { stop, task });
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A human `user` posts `text` in `room` (whitespace in `room` and `user` becomes `_`): the
    /// event is appended to the log and pushed to the connected clients. Returns its sequence
    /// number.
    pub fn post(&self, room: &str, user: &str, reply: Option<u64>, text: &str) -> u64 {
        let seq =
            self.shared
                .state
                .lock()
                .append(word(room), word(user), reply, text.to_owned(), None);
        self.shared.grew.send_replace(());
        seq
    }

    /// Every event of `room`, in order.
    pub fn messages(&self, room: &str) -> Vec<Message> {
        let state = self.shared.state.lock();
        state
            .log
            .iter()
            .filter(|m| m.room == room)
            .cloned()
            .collect()
    }

    /// The events of `room` created by a `SEND` (by a bridge), in order.
    pub fn from_bridge(&self, room: &str) -> Vec<Message> {
        let state = self.shared.state.lock();
        let sent = |m: &&Message| m.room == room && m.txn.is_some();
        state.log.iter().filter(sent).cloned().collect()
    }

    /// Every event with a sequence number above `seq`, in order, in all rooms.
    pub fn events_after(&self, seq: u64) -> Vec<Message> {
        let state = self.shared.state.lock();
        let start = usize::try_from(seq)
            .unwrap_or(usize::MAX)
            .min(state.log.len());
        state.log[start..].to_vec()
    }

    /// Changes whenever the log grows.
    pub fn subscribe(&self) -> watch::Receiver<()> {
        self.shared.grew.subscribe()
    }

    /// How many `SEND`s repeated a transaction ID already seen (and so created nothing).
    pub fn duplicate_sends(&self) -> u64 {
        self.shared.state.lock().duplicates
    }

    /// How many events of the log client `name` has not acknowledged.
    pub fn unacked(&self, name: &str) -> usize {
        let state = self.shared.state.lock();
        let acked = (state.clients.get(name)).map_or(0, |c| c.floor as usize + c.acked.len());
        state.log.len().saturating_sub(acked)
    }

    /// Closes the connection of client `name`, if it has one (it may reconnect).
    pub fn disconnect(&self, name: &str) {
        if let Some(client) = self.shared.state.lock().clients.get(name) {
            client.connection.cancel();
        }
    }

    /// Stops listening and closes every connection, keeping the log; waits until they are closed.
    pub async fn shutdown(&self) {
        let listening = self.listening.lock().take();
        if let Some(listening) = listening {
            listening.stop.cancel();
            let _ = listening.task.await;
        }
    }

    /// Restarts a server that was shut down, on the same address, with the same log,
    /// acknowledgements and transaction IDs.
    pub async fn resume(&self) -> io::Result<()> {
        self.shutdown().await;
        let listener = TcpListener::bind(self.addr).await?;
        self.listen(listener);
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(listening) = self.listening.lock().take() {
            listening.stop.cancel();
        }
    }
}

impl State {
    fn append(
        &mut self,
        room: String,
        sender: String,
        reply_to: Option<u64>,
        text: String,
        txn: Option<String>,
    ) -> u64 {
        let seq = self.log.len() as u64 + 1;
        let message = Message {
            seq,
            room,
            sender,
            reply_to,
            text,
            txn,
        };
        self.log.push(message);
        seq
    }

    /// Copies the next events `session` has not acknowledged into `out`, while it is short.
    fn write_events(&self, session: &mut Session, out: &mut Vec<u8>) {
        let Some(client) = self.clients.get(&session.name) else {
            return;
        };
        while out.len() < REFILL_BELOW
            && let Some(m) = self.log.get(session.next as usize - 1)
        {
            if !client.is_acked(m.seq) {
                let post = Post {
                    room: m.room.clone(),
                    sender: m.sender.clone(),
                    reply_to: m.reply_to,
                    text: m.text.clone(),
                };
                let _ = writeln!(out, "{}", Line::Event { seq: m.seq, post });
            }
            session.next += 1;
        }
    }
}

impl Shared {
    /// Handles one line from a client; returns the answer to write, if any.
    fn handle(&self, line: &str, session: &mut Option<Session>) -> Option<Line> {
        let err = |reason: &str| {
            Some(Line::Err {
                reason: reason.to_owned(),
            })
        };
        match (Line::parse(line), session.as_ref()) {
            (Err(malformed), _) => err(malformed.0),
            (Ok(Line::Hello { name }), None) => {
                *session = Some(self.hello(name));
                Some(Line::Welcome)
            }
            (Ok(Line::Hello { .. }), Some(_)) => err("HELLO was already said"),
            (Ok(_), None) => err("say HELLO first"),
            (Ok(Line::Ack { seq }), Some(session)) => self.ack(&session.name, seq),
            (Ok(Line::Send { txn, post }), Some(_)) => Some(self.send(txn, post)),
            (Ok(_), Some(_)) => err("only a server says that"),
        }
    }

    fn hello(&self, name: String) -> Session {
        let mut state = self.state.lock();
        let client = state.clients.entry(name.clone()).or_default();
        // A newer connection with the same name replaces the older one.
        let kicked = CancellationToken::new();
        std::mem::replace(&mut client.connection, kicked.clone()).cancel();
        let next = client.floor + 1;
        Session { name, next, kicked }
    }

    fn ack(&self, name: &str, seq: u64) -> Option<Line> {
        let mut state = self.state.lock();
        if seq == 0 || seq > state.log.len() as u64 {
            let reason = format!("there is no event {seq}");
            return Some(Line::Err { reason });
        }
        state.clients.entry(name.to_owned()).or_default().ack(seq);
        None
    }

    /// Appends a `SEND`'s event, unless its transaction ID was seen before.
    fn send(&self, txn: String, post: Post) -> Line {
        let seq = {
            let mut state = self.state.lock();
            if let Some(&seq) = state.txns.get(&txn) {
                state.duplicates += 1;
                return Line::Ok { txn, seq };
            }
            let seq = state.append(
                post.room,
                post.sender,
                post.reply_to,
                post.text,
                Some(txn.clone()),
            );
            state.txns.insert(txn.clone(), seq);
            seq
        };
        self.grew.send_replace(());
        Line::Ok { txn, seq }
    }
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, stop: CancellationToken) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let shared = shared.clone();
                    connections.spawn(async move {
                        if let Err(error) = serve(shared, stream).await {
                            tracing::debug!(%peer, %error, "linechat client connection failed");
                        }
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, "linechat server cannot accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    connections.shutdown().await;
}

/// Serves one client: the only task that touches its socket.
async fn serve(shared: Arc<Shared>, mut stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let (reader, mut writer) = stream.split();
    let mut reader = BufReader::new(reader);
    let mut grew = shared.grew.subscribe();
    let (mut line, mut out) = (Vec::new(), Vec::new());
    let mut session: Option<Session> = None;
    loop {
        if let Some(session) = &mut session
            && out.len() < REFILL_BELOW
        {
            shared.state.lock().write_events(session, &mut out);
        }
        let kicked = session
            .as_ref()
            .map(|s| s.kicked.clone())
            .unwrap_or_default();
        tokio::select! {
            () = kicked.cancelled() => return Ok(()),
            read = read_line(&mut reader, &mut line) => {
                if read? == 0 {
                    return Ok(());
                }
                if !line.ends_with(b"\n") {
                    if line.len() as u64 >= MAX_LINE {
                        return Err(io::Error::other("line too long"));
                    }
                    continue;
                }
                let answer = match std::str::from_utf8(&line) {
                    Ok(text) => shared.handle(text, &mut session),
                    Err(_) => Some(Line::Err { reason: "lines must be UTF-8".to_owned() }),
                };
                if let Some(answer) = answer {
                    let _ = writeln!(out, "{answer}");
                }
                line.clear();
            }
            changed = grew.changed() => changed.map_err(io::Error::other)?,
            written = writer.write(&out), if !out.is_empty() => {
                out.drain(..written?);
            }
        }
    }
}
