//! A scripted XMPP "human" for the end-to-end tests: a real third-party client (slixmpp, in
//! `tests/clients/xmpp_human.py`) driven through JSON lines.
//!
//! Each command is one JSON object on the script's stdin, answered by an `ok` or `error` event
//! with the same `req`; everything the client receives (`message`, `presence`, `iq_error`) is
//! an event too. Events that a wait did not ask for stay buffered for later waits, so nothing
//! is missed whatever order a test looks in. The script's stderr goes to the test's stderr.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use bridge_tests::xmpp_human::{Kind, XmppHuman};
//! let server = std::env::var("BRIDGE_TEST_XMPP_C2S")?;
//! let mut alice = XmppHuman::start("alice@localhost", "pw", &server).await?;
//! alice.join("room@conference.localhost", "alice").await?;
//! alice.send("room@conference.localhost", Kind::Groupchat, "hi").await?;
//! let echo = alice.wait_message(|m| m["body"] == "hi").await?;
//! println!("stanza-id {}", echo["stanza_id"]);
//! # Ok(()) }
//! ```

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use serde_json::{Value, json};
use tokio::process::Command;

use crate::jsonl::JsonlChild;

/// How long a command may take before its reply counts as missing.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(15);
/// The default wait of [`XmppHuman::wait_message`] and [`XmppHuman::wait_presence`].
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long starting may take: Python start-up, (registration,) login.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The `type` of a message to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One-to-one (also a MUC private message when sent to `room/nick`).
    Chat,
    /// To a MUC room.
    Groupchat,
}

impl Kind {
    /// The XMPP attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Chat => "chat",
            Kind::Groupchat => "groupchat",
        }
    }
}

/// The interpreter that runs the script: `$BRIDGE_TEST_PYTHON`, set by scripts/test.sh.
///
/// # Panics
/// When the variable is unset: tests that need the client never skip silently.
pub fn python() -> PathBuf {
    match std::env::var_os("BRIDGE_TEST_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => panic!(
            "BRIDGE_TEST_PYTHON is not set: the XMPP test client needs the venv that \
             scripts/test.sh creates (xmpp_client_install in scripts/servers.sh); run the tests \
             through scripts/test.sh, or source scripts/lib.sh and scripts/servers.sh and call \
             xmpp_client_install first"
        ),
    }
}

/// The driver script, `tests/clients/xmpp_human.py`.
pub fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients/xmpp_human.py")
}

/// One slixmpp client process logged in as a JID.
#[derive(Debug)]
pub struct XmppHuman {
    jid: String,
    /// The full JID the server bound.
    full_jid: String,
    proc: JsonlChild,
}

impl XmppHuman {
    /// Starts a client for `jid` on the c2s listener `server` (`host:port`), creating the
    /// account by in-band registration first (an existing account is fine), and waits until
    /// it is online.
    pub async fn start(jid: &str, password: &str, server: &str) -> Result<Self> {
        Self::spawn(jid, password, server, true).await
    }

    /// Like [`XmppHuman::start`], for an account that must already exist (no registration).
    pub async fn login(jid: &str, password: &str, server: &str) -> Result<Self> {
        Self::spawn(jid, password, server, false).await
    }

    async fn spawn(jid: &str, password: &str, server: &str, register: bool) -> Result<Self> {
        let mut cmd = Command::new(python());
        cmd.arg(script())
            .args(["--jid", jid, "--password", password, "--server", server]);
        if register {
            cmd.arg("--register");
        }
        let mut proc = JsonlChild::spawn(cmd, format!("xmpp_human {jid}"))?;
        let ready = proc.wait_ready(START_TIMEOUT).await?;
        Ok(Self {
            jid: jid.to_owned(),
            full_jid: ready["jid"].as_str().unwrap_or_default().to_owned(),
            proc,
        })
    }

    /// The bare JID this client logged in as.
    pub fn jid(&self) -> &str {
        &self.jid
    }

    /// The full JID (with the resource the server bound).
    pub fn full_jid(&self) -> &str {
        &self.full_jid
    }

    /// Sends command `cmd` with the fields of `args` (an object) and returns its `ok` reply;
    /// an `error` reply, or none within [`COMMAND_TIMEOUT`], is an error.
    pub async fn command(&mut self, cmd: &str, args: Value) -> Result<Value> {
        self.proc.command(cmd, args, COMMAND_TIMEOUT).await
    }

    /// Joins a MUC room; the reply has `nick`, `occupant_id`, `status_codes`, `item`
    /// (affiliation, role, jid, nick) and `subject`.
    pub async fn join(&mut self, room: &str, nick: &str) -> Result<Value> {
        self.command("join", json!({ "room": room, "nick": nick }))
            .await
    }

    /// Leaves a room; the reply has the `status_codes` of the unavailable self-presence.
    pub async fn leave(&mut self, room: &str) -> Result<Value> {
        self.command("leave", json!({ "room": room })).await
    }

    /// Changes the nick in a room; the reply has the `nick` the room assigned.
    pub async fn nick(&mut self, room: &str, nick: &str) -> Result<Value> {
        self.command("nick", json!({ "room": room, "nick": nick }))
            .await
    }

    /// Sends a message; the reply has the `id` used (also sent as XEP-0359 origin-id).
    pub async fn send(&mut self, to: &str, kind: Kind, body: &str) -> Result<Value> {
        self.command(
            "send",
            json!({ "to": to, "type": kind.as_str(), "body": body }),
        )
        .await
    }

    /// Sends a message with a chosen `id` and/or an XHTML-IM body (the inner XML of the XHTML
    /// `<body/>`, e.g. `<p>hi <b>you</b></p>`).
    pub async fn send_with(
        &mut self,
        to: &str,
        kind: Kind,
        body: &str,
        id: Option<&str>,
        xhtml: Option<&str>,
    ) -> Result<Value> {
        self.command(
            "send",
            json!({ "to": to, "type": kind.as_str(), "body": body, "id": id, "xhtml": xhtml }),
        )
        .await
    }

    /// Sends a XEP-0308 correction of message `replace_id`.
    pub async fn correct(
        &mut self,
        to: &str,
        kind: Kind,
        replace_id: &str,
        body: &str,
    ) -> Result<Value> {
        self.command(
            "correct",
            json!({ "to": to, "type": kind.as_str(), "replace_id": replace_id, "body": body }),
        )
        .await
    }

    /// Sends a XEP-0461 reply to message `reply_to_id` by `reply_to_jid`; with a quote, the body
    /// starts with it as `> quote` lines, marked as a XEP-0428 fallback. The reply has the `id`
    /// and the `body` as sent.
    pub async fn reply(
        &mut self,
        to: &str,
        kind: Kind,
        body: &str,
        reply_to_id: &str,
        reply_to_jid: &str,
        fallback_quote: Option<&str>,
    ) -> Result<Value> {
        self.command(
            "reply",
            json!({ "to": to, "type": kind.as_str(), "body": body, "reply_to_id": reply_to_id,
                    "reply_to_jid": reply_to_jid, "fallback_quote": fallback_quote }),
        )
        .await
    }

    /// Sets this user's XEP-0444 reactions to message `msg_id` (the full set; empty removes).
    pub async fn react(
        &mut self,
        to: &str,
        kind: Kind,
        msg_id: &str,
        reactions: &[&str],
    ) -> Result<Value> {
        self.command(
            "react",
            json!({ "to": to, "type": kind.as_str(), "msg_id": msg_id, "reactions": reactions }),
        )
        .await
    }

    /// Retracts one of this user's messages (XEP-0424, `urn:xmpp:message-retract:1`).
    pub async fn retract(&mut self, to: &str, kind: Kind, msg_id: &str) -> Result<Value> {
        self.command(
            "retract",
            json!({ "to": to, "type": kind.as_str(), "msg_id": msg_id }),
        )
        .await
    }

    /// Moderates (retracts) message `stanza_id` in `room` (XEP-0425 as Prosody 0.12 speaks it,
    /// `urn:xmpp:message-moderate:0`); needs the moderator role.
    pub async fn moderate(&mut self, room: &str, stanza_id: &str, reason: &str) -> Result<Value> {
        self.command(
            "moderate",
            json!({ "room": room, "stanza_id": stanza_id, "reason": reason }),
        )
        .await
    }

    /// An XEP-0045 admin request in `room` setting one item: `{"nick", "role"}` or
    /// `{"jid", "affiliation"}` (needs the standing to make that change).
    pub async fn admin(&mut self, room: &str, mut item: Value) -> Result<Value> {
        item["room"] = json!(room);
        self.command("admin", item).await
    }

    /// Sends a XEP-0085 chat state (`active`, `composing`, `paused`, `inactive`, `gone`).
    pub async fn chatstate(&mut self, to: &str, kind: Kind, state: &str) -> Result<Value> {
        self.command(
            "chatstate",
            json!({ "to": to, "type": kind.as_str(), "state": state }),
        )
        .await
    }

    /// Sends a XEP-0333 `displayed` marker for message `msg_id`.
    pub async fn displayed(&mut self, to: &str, kind: Kind, msg_id: &str) -> Result<Value> {
        self.command(
            "displayed",
            json!({ "to": to, "type": kind.as_str(), "msg_id": msg_id }),
        )
        .await
    }

    /// Sets a room's subject.
    pub async fn subject(&mut self, room: &str, subject: &str) -> Result<Value> {
        self.command("subject", json!({ "room": room, "subject": subject }))
            .await
    }

    /// Shares a URL with XEP-0066 (`jabber:x:oob`); the body is the URL too.
    pub async fn oob(
        &mut self,
        to: &str,
        kind: Kind,
        url: &str,
        desc: Option<&str>,
    ) -> Result<Value> {
        self.command(
            "oob",
            json!({ "to": to, "type": kind.as_str(), "url": url, "desc": desc }),
        )
        .await
    }

    /// Uploads a file through the server's XEP-0363 service (found by disco); the reply has the
    /// `url` to GET, the `size` and the `sha256` (hex) of what was uploaded.
    pub async fn upload(
        &mut self,
        path: &std::path::Path,
        content_type: Option<&str>,
    ) -> Result<Value> {
        self.command(
            "upload",
            json!({ "path": path, "content_type": content_type }),
        )
        .await
    }

    /// Asks `jid` (an occupant's `room/nick`, or a JID) for its vCard (XEP-0054); the reply
    /// has `fn` and `photo` (`type`, `size`, `sha1`, or null).
    pub async fn vcard(&mut self, jid: &str) -> Result<Value> {
        self.command("vcard", json!({ "jid": jid })).await
    }

    /// Sets our avatar (vCard photo, announced in each joined room's presence, XEP-0153); the
    /// reply has its `sha1`.
    pub async fn avatar(&mut self, data: &[u8], content_type: &str) -> Result<Value> {
        let data_b64 = crate::matrix_human::base64(data);
        self.command(
            "avatar",
            json!({ "data_b64": data_b64, "type": content_type }),
        )
        .await
    }

    /// HTTP GET; the reply has `status`, `size`, `sha256` (hex) and `content_type`.
    pub async fn fetch(&mut self, url: &str) -> Result<Value> {
        self.command("fetch", json!({ "url": url })).await
    }

    /// Queries a room's archive (XEP-0313), optionally after an archive id; the reply has
    /// `messages` (each parsed like a message event, plus `archive_id` and `archived_at`),
    /// `complete` and `last`.
    pub async fn mam(
        &mut self,
        room: &str,
        after: Option<&str>,
        max: Option<u32>,
    ) -> Result<Value> {
        self.command("mam", json!({ "room": room, "after": after, "max": max }))
            .await
    }

    /// Sends raw XML as is (for malformed-input tests).
    pub async fn raw(&mut self, xml: &str) -> Result<Value> {
        self.command("raw", json!({ "xml": xml })).await
    }

    /// Submits the room's configuration form with `options` changed (owner only): field vars,
    /// or their short names without `muc#roomconfig_`, e.g. `{"whois": "anyone"}`.
    pub async fn configure(&mut self, room: &str, options: Value) -> Result<Value> {
        self.command("configure", json!({ "room": room, "options": options }))
            .await
    }

    /// The next event `filter` accepts (buffered ones first); the others stay buffered.
    pub async fn next_event(
        &mut self,
        filter: impl FnMut(&Value) -> bool,
        timeout: Duration,
    ) -> Result<Value> {
        self.proc.next_event(filter, timeout).await
    }

    /// The next `message` event `filter` accepts, within [`EVENT_TIMEOUT`].
    pub async fn wait_message(&mut self, mut filter: impl FnMut(&Value) -> bool) -> Result<Value> {
        self.next_event(|e| e["event"] == "message" && filter(e), EVENT_TIMEOUT)
            .await
    }

    /// The next `presence` event `filter` accepts, within [`EVENT_TIMEOUT`].
    pub async fn wait_presence(&mut self, mut filter: impl FnMut(&Value) -> bool) -> Result<Value> {
        self.next_event(|e| e["event"] == "presence" && filter(e), EVENT_TIMEOUT)
            .await
    }

    /// Takes every event received so far (buffered and pending), e.g. to assert that something
    /// did *not* arrive, or to start a step with a clean slate.
    pub fn drain(&mut self) -> Vec<Value> {
        self.proc.drain()
    }

    /// Disconnects cleanly and waits for the script to exit.
    pub async fn quit(self) -> Result<()> {
        self.proc.quit(COMMAND_TIMEOUT).await
    }
}
