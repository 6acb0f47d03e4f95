//! A scripted Matrix "human" for the end-to-end tests: a real third-party client (matrix-nio, in
//! `tests/clients/matrix_human.py`) driven through JSON lines, like [`crate::xmpp_human`].
//!
//! Each command is one JSON object on the script's stdin, answered by an `ok` or `error` event
//! with the same `req`. The script long-polls `/sync` all the time and reports what it sees as
//! events, buffered until a wait asks for them:
//!
//! - `{"event": "timeline", "room_id", "event_id", "sender", "type", "content", "state_key",
//!   "redacts", "origin_server_ts", "unsigned"}`: every room event (state and messages, ours
//!   too), fields as the server sent them (`state_key` and `redacts` null when absent;
//!   `redacts` also found in the content, as room version 11 and later put it);
//! - `{"event": "ephemeral", "room_id", "type": "m.typing" | "m.receipt", "content"}`;
//! - `{"event": "invite", "room_id", "sender", "name"}` (then `{"event": "autojoined",
//!   "room_id"}` when autojoin is on), `{"event": "left", "room_id"}`;
//! - `{"event": "sync_error", "message"}` once when syncing starts failing (the server went
//!   away), `{"event": "sync_resumed"}` when it works again.
//!
//! The first sync after login only finds where the stream stands: events from before the client
//! started are not reported (use [`MatrixHuman::messages`] for history); pending invites are.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use bridge_tests::matrix_human::MatrixHuman;
//! let hs = bridge_tests::synapse::shared_url();
//! let mut alice = MatrixHuman::start("alice", "alicepass", &hs).await?;
//! let room = alice.create_room("demo", &["@bob:localhost"]).await?;
//! let id = alice.send(&room, "hi").await?;
//! let echo = alice.wait_timeline(|e| e["event_id"] == id.as_str()).await?;
//! println!("sent at {}", echo["origin_server_ts"]);
//! # Ok(()) }
//! ```

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use serde_json::{Value, json};
use tokio::process::Command;

use crate::jsonl::JsonlChild;

/// How long a command may take before its reply counts as missing.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(15);
/// The default wait of [`MatrixHuman::wait_timeline`] and the other `wait_*` methods.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long starting may take: Python start-up, login, first sync.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The interpreter that runs the script: `$BRIDGE_TEST_PYTHON` (the test clients' venv, with
/// matrix-nio), set by scripts/test.sh.
///
/// # Panics
/// When the variable is unset: tests that need the client never skip silently.
pub fn python() -> PathBuf {
    match std::env::var_os("BRIDGE_TEST_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => panic!(
            "BRIDGE_TEST_PYTHON is not set: the Matrix test client needs the venv that \
             scripts/test.sh creates (test_clients_install in scripts/servers.sh); run the tests \
             through scripts/test.sh, or source scripts/lib.sh and scripts/servers.sh and call \
             test_clients_install first"
        ),
    }
}

/// The driver script, `tests/clients/matrix_human.py`.
pub fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients/matrix_human.py")
}

/// Which end [`MatrixHuman::messages`] pages from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Backwards from the newest event: newest first.
    Back,
    /// Forwards from the room's creation: oldest first.
    Forward,
}

/// One matrix-nio client process logged in as a user.
#[derive(Debug)]
pub struct MatrixHuman {
    user_id: String,
    device_id: String,
    proc: JsonlChild,
}

impl MatrixHuman {
    /// Logs in as `user` (a localpart such as `alice`, or a full user ID) on `homeserver`
    /// (e.g. `http://127.0.0.1:25808`) and waits for the first sync. Invites are reported but
    /// not accepted (see [`MatrixHuman::start_autojoin`]).
    pub async fn start(user: &str, password: &str, homeserver: &str) -> Result<Self> {
        Self::spawn(user, password, homeserver, false).await
    }

    /// Like [`MatrixHuman::start`], joining every room it is invited to (an `autojoined` event
    /// follows each `invite`).
    pub async fn start_autojoin(user: &str, password: &str, homeserver: &str) -> Result<Self> {
        Self::spawn(user, password, homeserver, true).await
    }

    async fn spawn(user: &str, password: &str, homeserver: &str, autojoin: bool) -> Result<Self> {
        let mut cmd = Command::new(python());
        cmd.arg(script()).args([
            "--user",
            user,
            "--password",
            password,
            "--homeserver",
            homeserver,
        ]);
        if autojoin {
            cmd.arg("--autojoin");
        }
        let mut proc = JsonlChild::spawn(cmd, format!("matrix_human {user}"))?;
        let ready = proc.wait_ready(START_TIMEOUT).await?;
        Ok(Self {
            user_id: str_field(&ready, "user_id")?,
            device_id: str_field(&ready, "device_id")?,
            proc,
        })
    }

    /// The full user ID, e.g. `@alice:localhost`.
    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    /// The device ID of this login.
    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    /// Sends command `cmd` with the fields of `args` (an object) and returns its `ok` reply;
    /// an `error` reply (an exception, or the server's error: errcode, message, HTTP status),
    /// or none within [`COMMAND_TIMEOUT`], is an error.
    pub async fn command(&mut self, cmd: &str, args: Value) -> Result<Value> {
        self.proc.command(cmd, args, COMMAND_TIMEOUT).await
    }

    /// Sends a command whose reply has an `event_id`, and returns it.
    async fn event_command(&mut self, cmd: &str, args: Value) -> Result<String> {
        let reply = self.command(cmd, args).await?;
        str_field(&reply, "event_id")
    }

    /// Creates a private room (invite only) named `name`, inviting `invite` (user IDs); returns
    /// the room ID.
    pub async fn create_room(&mut self, name: &str, invite: &[&str]) -> Result<String> {
        self.create_room_with(json!({ "name": name, "invite": invite }))
            .await
    }

    /// Creates a room with any of the options `name`, `topic`, `alias_localpart` (the room
    /// gets `#<it>:localhost`), `invite` (user IDs), `public` (bool: the public_chat preset,
    /// listed in the directory; else private_chat), `direct` (bool), `room_version`,
    /// `initial_state` (a list of state events) and `power_level_override` (merged into the
    /// power levels); returns the room ID.
    pub async fn create_room_with(&mut self, options: Value) -> Result<String> {
        let reply = self.command("create_room", options).await?;
        str_field(&reply, "room_id")
    }

    /// Joins a room by ID or alias; returns the room ID.
    pub async fn join(&mut self, room: &str) -> Result<String> {
        let reply = self.command("join", json!({ "room": room })).await?;
        str_field(&reply, "room_id")
    }

    /// Leaves a room (ID or alias).
    pub async fn leave(&mut self, room: &str) -> Result<()> {
        self.command("leave", json!({ "room": room })).await?;
        Ok(())
    }

    /// Invites `user` (a user ID) to a room.
    pub async fn invite(&mut self, room: &str, user: &str) -> Result<()> {
        self.command("invite", json!({ "room": room, "user": user }))
            .await?;
        Ok(())
    }

    /// Kicks `user` (a user ID) from a room, giving `reason`.
    pub async fn kick(&mut self, room: &str, user: &str, reason: &str) -> Result<()> {
        self.command(
            "kick",
            json!({ "room": room, "user": user, "reason": reason }),
        )
        .await?;
        Ok(())
    }

    /// Lifts the ban of `user` (a user ID) from a room.
    pub async fn unban(&mut self, room: &str, user: &str) -> Result<()> {
        self.command("unban", json!({ "room": room, "user": user }))
            .await?;
        Ok(())
    }

    /// Bans `user` (a user ID) from a room.
    pub async fn ban(&mut self, room: &str, user: &str) -> Result<()> {
        self.command("ban", json!({ "room": room, "user": user }))
            .await?;
        Ok(())
    }

    /// Sends a plain `m.text` message; returns its event ID.
    pub async fn send(&mut self, room: &str, body: &str) -> Result<String> {
        self.event_command("send", json!({ "room": room, "body": body }))
            .await
    }

    /// Sends an `m.text` message with an HTML body (`org.matrix.custom.html`); returns its
    /// event ID.
    pub async fn send_html(&mut self, room: &str, body: &str, html: &str) -> Result<String> {
        self.event_command(
            "send",
            json!({ "room": room, "body": body, "formatted_body": html }),
        )
        .await
    }

    /// Sends an `m.room.message` of `msgtype` (e.g. `m.emote`, `m.notice`), with an optional
    /// HTML body and `extra` content fields (an object, or null) merged in last; returns its
    /// event ID.
    pub async fn send_with(
        &mut self,
        room: &str,
        msgtype: &str,
        body: &str,
        html: Option<&str>,
        extra: Value,
    ) -> Result<String> {
        self.event_command(
            "send",
            json!({ "room": room, "msgtype": msgtype, "body": body, "formatted_body": html,
                    "extra": extra }),
        )
        .await
    }

    /// Edits event `event_id`: `m.relates_to` `m.replace`, the new text in `m.new_content`,
    /// `"* " + body` as the fallback body; returns the edit's event ID.
    pub async fn edit(&mut self, room: &str, event_id: &str, body: &str) -> Result<String> {
        self.event_command(
            "edit",
            json!({ "room": room, "event_id": event_id, "body": body }),
        )
        .await
    }

    /// Like [`MatrixHuman::edit`], with an HTML body too (`"* " + html` as its fallback).
    pub async fn edit_html(
        &mut self,
        room: &str,
        event_id: &str,
        body: &str,
        html: &str,
    ) -> Result<String> {
        self.event_command(
            "edit",
            json!({ "room": room, "event_id": event_id, "body": body, "formatted_body": html }),
        )
        .await
    }

    /// Replies to event `event_id` (`m.relates_to` `m.in_reply_to`) with the classic reply
    /// fallback, which a bridge must strip: the original quoted as `> <@sender> line` lines and
    /// an empty line before `body`, and an `<mx-reply>` block before the HTML. The reply has
    /// `event_id`, and `body` and `formatted_body` as sent.
    pub async fn reply(&mut self, room: &str, event_id: &str, body: &str) -> Result<Value> {
        self.command(
            "reply",
            json!({ "room": room, "event_id": event_id, "body": body }),
        )
        .await
    }

    /// Replies to event `event_id` without any fallback (as clients do since Matrix 1.13),
    /// with an optional HTML body; the reply is as for [`MatrixHuman::reply`].
    pub async fn reply_without_fallback(
        &mut self,
        room: &str,
        event_id: &str,
        body: &str,
        html: Option<&str>,
    ) -> Result<Value> {
        self.command(
            "reply",
            json!({ "room": room, "event_id": event_id, "body": body, "formatted_body": html,
                    "fallback": false }),
        )
        .await
    }

    /// Reacts to event `event_id` with `key` (an `m.reaction`, `m.annotation`); returns the
    /// reaction's event ID (redact it to take the reaction back).
    pub async fn react(&mut self, room: &str, event_id: &str, key: &str) -> Result<String> {
        self.event_command(
            "react",
            json!({ "room": room, "event_id": event_id, "key": key }),
        )
        .await
    }

    /// Redacts event `event_id`, with an optional reason; returns the redaction's event ID.
    pub async fn redact(
        &mut self,
        room: &str,
        event_id: &str,
        reason: Option<&str>,
    ) -> Result<String> {
        self.event_command(
            "redact",
            json!({ "room": room, "event_id": event_id, "reason": reason }),
        )
        .await
    }

    /// Uploads `data` to the media repository and sends it as a file message: `body` and
    /// `filename` are `name`, `info` has `mimetype` and `size`, the msgtype follows the
    /// mimetype (`m.image`, `m.video`, `m.audio`, else `m.file`). The reply has `event_id`,
    /// `url` (the `mxc://` URL), `size` and `sha256` (hex).
    pub async fn send_file(
        &mut self,
        room: &str,
        data: &[u8],
        name: &str,
        mimetype: &str,
    ) -> Result<Value> {
        self.send_file_with(
            room,
            json!({ "data_b64": base64(data), "name": name, "mimetype": mimetype }),
        )
        .await
    }

    /// Like [`MatrixHuman::send_file`] with the options as JSON: `data_b64` or `path`, `name`,
    /// `mimetype`, `msgtype`, `body`, `info` (merged into the content's info, e.g. `w`, `h`)
    /// and `extra` (merged into the content).
    pub async fn send_file_with(&mut self, room: &str, mut options: Value) -> Result<Value> {
        options["room"] = room.into();
        self.command("send_file", options).await
    }

    /// Downloads an `mxc://` URL through the authenticated media API
    /// (`GET /_matrix/client/v1/media/download/{server}/{id}`, access token in the
    /// Authorization header). The reply has `size`, `sha256` (hex), `content_type` and
    /// `content_disposition`; a status other than 200 is an error.
    pub async fn download(&mut self, mxc: &str) -> Result<Value> {
        self.command("download", json!({ "mxc": mxc })).await
    }

    /// Like [`MatrixHuman::download`] without the access token (Synapse answers 401 to that
    /// with authenticated media, so this is an error).
    pub async fn download_unauthenticated(&mut self, mxc: &str) -> Result<Value> {
        self.command("download", json!({ "mxc": mxc, "authenticated": false }))
            .await
    }

    /// Starts (for 30 s) or stops typing in a room.
    pub async fn typing(&mut self, room: &str, active: bool) -> Result<()> {
        self.command("typing", json!({ "room": room, "active": active }))
            .await?;
        Ok(())
    }

    /// Sends an unthreaded `m.read` receipt for event `event_id`.
    pub async fn read(&mut self, room: &str, event_id: &str) -> Result<()> {
        self.command("read", json!({ "room": room, "event_id": event_id }))
            .await?;
        Ok(())
    }

    /// Sets this user's display name (the server updates the member event in every joined
    /// room).
    pub async fn displayname(&mut self, name: &str) -> Result<()> {
        self.command("displayname", json!({ "name": name })).await?;
        Ok(())
    }

    /// Uploads `data` and makes it our avatar; the reply has its mxc:// `url` and `sha256`.
    pub async fn avatar(&mut self, data: &[u8], mimetype: &str) -> Result<Value> {
        self.command(
            "avatar",
            json!({ "data_b64": base64(data), "mimetype": mimetype }),
        )
        .await
    }

    /// Sets a room's topic (`m.room.topic`); returns the state event's ID.
    pub async fn topic(&mut self, room: &str, text: &str) -> Result<String> {
        self.event_command("topic", json!({ "room": room, "text": text }))
            .await
    }

    /// Sets a room's name (`m.room.name`); returns the state event's ID.
    pub async fn room_name(&mut self, room: &str, name: &str) -> Result<String> {
        self.event_command("room_name", json!({ "room": room, "name": name }))
            .await
    }

    /// Sends a room event of any type with `content` as is; returns its event ID.
    pub async fn send_raw(&mut self, room: &str, kind: &str, content: Value) -> Result<String> {
        self.event_command(
            "send_raw",
            json!({ "room": room, "type": kind, "content": content }),
        )
        .await
    }

    /// Sets a state event of any type; returns its event ID.
    pub async fn send_state(
        &mut self,
        room: &str,
        kind: &str,
        state_key: &str,
        content: Value,
    ) -> Result<String> {
        self.event_command(
            "send_raw",
            json!({ "room": room, "type": kind, "state_key": state_key, "content": content }),
        )
        .await
    }

    /// Up to `limit` events of the room's history from `/messages`, raw, in the server's
    /// order: [`Dir::Back`] gives the newest first, [`Dir::Forward`] the oldest first.
    pub async fn messages(&mut self, room: &str, limit: u32, dir: Dir) -> Result<Vec<Value>> {
        let dir = match dir {
            Dir::Back => "b",
            Dir::Forward => "f",
        };
        let mut reply = self
            .command(
                "messages",
                json!({ "room": room, "limit": limit, "dir": dir }),
            )
            .await?;
        match reply["events"].take() {
            Value::Array(events) => Ok(events),
            other => anyhow::bail!("messages: no event list in the reply: {other}"),
        }
    }

    /// The content of state event (`kind`, `state_key`); an error if there is none.
    pub async fn state(&mut self, room: &str, kind: &str, state_key: &str) -> Result<Value> {
        let mut reply = self
            .command(
                "state",
                json!({ "room": room, "type": kind, "state_key": state_key }),
            )
            .await?;
        Ok(reply["content"].take())
    }

    /// Upgrades `room` to room version `new_version`; returns the replacement room's ID.
    pub async fn upgrade(&mut self, room: &str, new_version: &str) -> Result<String> {
        let reply = self
            .command(
                "upgrade",
                json!({ "room": room, "new_version": new_version }),
            )
            .await?;
        reply["replacement_room"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("upgrade: no replacement_room in {reply}"))
    }

    /// The number of forward extremities of a room, from Synapse's admin API
    /// (`GET /_synapse/admin/v1/rooms/{room}/forward_extremities`): only for the admin user.
    pub async fn forward_extremities(&mut self, room: &str) -> Result<u64> {
        let reply = self
            .command("forward_extremities", json!({ "room": room }))
            .await?;
        reply["count"]
            .as_u64()
            .with_context(|| format!("forward_extremities: no count in {reply}"))
    }

    /// The joined members: `user_ids` (sorted) and `members` (each `user_id`, `display_name`,
    /// `avatar_url`).
    pub async fn members(&mut self, room: &str) -> Result<Value> {
        self.command("members", json!({ "room": room })).await
    }

    /// Turns joining rooms on invite on or off.
    pub async fn set_autojoin(&mut self, on: bool) -> Result<()> {
        self.command("set_autojoin", json!({ "on": on })).await?;
        Ok(())
    }

    /// The next event `filter` accepts (buffered ones first); the others stay buffered.
    pub async fn next_event(
        &mut self,
        filter: impl FnMut(&Value) -> bool,
        timeout: Duration,
    ) -> Result<Value> {
        self.proc.next_event(filter, timeout).await
    }

    /// The next `timeline` event `filter` accepts, within [`EVENT_TIMEOUT`].
    pub async fn wait_timeline(&mut self, mut filter: impl FnMut(&Value) -> bool) -> Result<Value> {
        self.next_event(|e| e["event"] == "timeline" && filter(e), EVENT_TIMEOUT)
            .await
    }

    /// The next `ephemeral` event (typing, receipt) `filter` accepts, within [`EVENT_TIMEOUT`].
    pub async fn wait_ephemeral(
        &mut self,
        mut filter: impl FnMut(&Value) -> bool,
    ) -> Result<Value> {
        self.next_event(|e| e["event"] == "ephemeral" && filter(e), EVENT_TIMEOUT)
            .await
    }

    /// The next `invite` event `filter` accepts, within [`EVENT_TIMEOUT`].
    pub async fn wait_invite(&mut self, mut filter: impl FnMut(&Value) -> bool) -> Result<Value> {
        self.next_event(|e| e["event"] == "invite" && filter(e), EVENT_TIMEOUT)
            .await
    }

    /// Takes every event received so far (buffered and pending), e.g. to assert that something
    /// did *not* arrive, or to start a step with a clean slate.
    pub fn drain(&mut self) -> Vec<Value> {
        self.proc.drain()
    }

    /// Closes the client (without logging out) and waits for the script to exit.
    pub async fn quit(self) -> Result<()> {
        self.proc.quit(COMMAND_TIMEOUT).await
    }
}

/// A string field of a reply.
fn str_field(reply: &Value, name: &str) -> Result<String> {
    reply[name]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no {name} in {reply}"))
}

/// Standard base64 with padding, for binary data in a JSON command.
pub(crate) fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::base64;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), expected);
        }
        assert_eq!(base64(&[0xff, 0xfe, 0xfd]), "//79");
    }
}
