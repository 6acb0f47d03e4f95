//! What a connection task reports to the adapter, the same for both modes.
//!
//! A connection task (the component one in [`crate::session`], the client one in
//! [`crate::client`]) owns its socket alone: stanzas to send arrive on a channel, what happens
//! on the stream leaves on another. It reconnects by itself, with backoff and jitter, until the
//! shutdown token is cancelled, and reports each new session as [`StreamEvent::Online`]: the
//! adapter then joins its rooms again (a new session has no MUC state).
//!
//! Stanzas are `minidom` elements in `jabber:client` in both directions, whatever the wire uses.

use tokio::sync::{mpsc, oneshot};
use xmpp_parsers::minidom::Element;

/// How many stanzas may wait in either direction before the other side is slowed down.
pub const CHANNEL_DEPTH: usize = 1024;

/// Something that happened on the stream.
#[derive(Debug)]
pub enum StreamEvent {
    /// A new session is up (first connect or reconnect). `jid` is our address on it: the
    /// component domain, or the full JID the server bound for the client.
    Online {
        /// Our address in this session.
        jid: String,
    },
    /// The session ended (read error, stream error, dead keepalive…). The task reconnects by
    /// itself; stanzas sent meanwhile are dropped, so senders should fail and retry.
    Offline {
        /// Why, for logs.
        reason: String,
    },
    /// An incoming stanza (`message`, `presence` or `iq`), in `jabber:client`.
    Stanza(Element),
    /// An incoming stanza was over a size or nesting limit and was skipped; the session goes
    /// on.
    Skipped {
        /// Which limit, for logs.
        reason: String,
    },
}

/// A stanza to send, with an optional notice for when it has been written to the connection
/// (in `jabber:client`; the component task rewrites the namespace).
#[derive(Debug)]
pub struct Outgoing {
    /// The stanza.
    pub stanza: Element,
    /// Told once the stanza is written (handed to the operating system, or to tokio-xmpp's
    /// send queue in client mode); dropped unsent when the session ends first.
    pub written: Option<oneshot::Sender<()>>,
    /// The session the stanza was made for: how many [`StreamEvent::Online`] the adapter had
    /// read when it made it (0: none yet). A connection task counts the sessions it reports
    /// the same way and drops, unsent, a stanza made for an earlier one, whatever it queued
    /// meanwhile: its context (joins, the rooms' state, the order against what the adapter
    /// sends again at a new session) was the earlier session's.
    pub session: u64,
}

impl Outgoing {
    /// [`Outgoing::session`] of a stanza for whichever session is up when it is written.
    pub const ANY_SESSION: u64 = u64::MAX;

    /// Whether the stanza was made for a session before `current` (and is to be dropped).
    pub fn is_stale(&self, current: u64) -> bool {
        self.session < current
    }
}

/// A stanza for whichever session is up when it is written, with no notice (for users of a
/// connection task that keep no session context of their own).
impl From<Element> for Outgoing {
    fn from(stanza: Element) -> Self {
        Self {
            stanza,
            written: None,
            session: Self::ANY_SESSION,
        }
    }
}

/// The adapter's ends of a connection task's channels.
#[derive(Debug)]
pub struct StreamHandle {
    /// Stanzas to send.
    pub out: mpsc::Sender<Outgoing>,
    /// What happens on the stream, in order.
    pub events: mpsc::Receiver<StreamEvent>,
}

impl StreamHandle {
    /// A pair of channels: the handle for the adapter, the ends for the connection task.
    pub fn channel() -> (Self, mpsc::Receiver<Outgoing>, mpsc::Sender<StreamEvent>) {
        let (out, out_rx) = mpsc::channel(CHANNEL_DEPTH);
        let (events_tx, events) = mpsc::channel(CHANNEL_DEPTH);
        (Self { out, events }, out_rx, events_tx)
    }
}
