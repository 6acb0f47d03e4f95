//! The three-way suite: one neutral room linking an XMPP MUC (the shared Prosody of
//! scripts/test.sh), a Matrix room (the shared Synapse) and a MIMI room hosted by a second
//! bridge instance. Every feature is tried from every network, and what the human on each far
//! side received is what is checked:
//!
//! - **XMPP**: xavier, a slixmpp client in the MUC (`tests/clients/xmpp_human.py`);
//! - **Matrix**: carol, a matrix-nio client in the room (`tests/clients/matrix_human.py`);
//! - **MIMI**: dana, a user of the provider `hub.example`. That provider is a second bridge
//!   (its own core, store and MIMI adapter, hosting the MIMI room) whose local network is the
//!   core's in-memory adapter: what dana "sees" is what her provider decrypted from the MLS
//!   group and decoded from MIMI content. The first bridge (XMPP + Matrix) is the provider
//!   `follower.example`; between the two providers everything is HTTPS with mutual TLS and
//!   every message is an MLS application message in the room's group.
//!
//! The run writes `docs/features.md`: the matrix of features × directions with the outcome of
//! each check, or why a direction is not carried (a capability the target network's adapter
//! does not declare). The test fails if any check failed.

use std::fmt::Write as _;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use bridge_core::testkit::{MemoryAdapter, MemoryHandle, inbound};
use bridge_core::{
    Adapter, AdapterId, Attachment, Capabilities, Core, EventKind, InboundEvent, Link,
    MembershipChange, ModerationAction, OutboundEvent, Role, RoomSettings, SledStore, Store,
    Submitted,
};
use bridge_mimi::MimiAdapter;
use bridge_tests::far::{body_of, serve_file};
use bridge_tests::matrix_human::MatrixHuman;
use bridge_tests::matrix_rig::{BOT, appservice_adapter, bot_joined};
use bridge_tests::xmpp_human::{Kind, XmppHuman};
use bridge_tests::{fresh, test_env};
use bridge_xmpp::XmppAdapter;
use serde_json::{Value, json};
use sha2::Digest as _;

const GC: Kind = Kind::Groupchat;
/// How long a check waits for its event on the far side.
const WAIT: Duration = Duration::from_secs(30);
/// The Matrix human's display name: her puppet's nick in the MUC.
const CAROL_NAME: &str = "Carol Matrix";
/// The MIMI room, hosted by the second bridge.
const MIMI_ROOM: &str = "mimi://hub.example/r/lobby";
/// The MIMI side's room on the second bridge's local (in-memory) network.
const DANA_ROOM: &str = "far-room";

/// The three networks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Net {
    Xmpp,
    Matrix,
    Mimi,
}

impl Net {
    fn name(self) -> &'static str {
        match self {
            Net::Xmpp => "XMPP",
            Net::Matrix => "Matrix",
            Net::Mimi => "MIMI",
        }
    }
}

/// The directions, in the order of the table's columns.
const DIRECTIONS: [(Net, Net); 6] = [
    (Net::Xmpp, Net::Matrix),
    (Net::Xmpp, Net::Mimi),
    (Net::Matrix, Net::Xmpp),
    (Net::Matrix, Net::Mimi),
    (Net::Mimi, Net::Xmpp),
    (Net::Mimi, Net::Matrix),
];

/// The feature row of roles.
const ROLE: &str = "role";
/// The feature row of threads.
const THREAD: &str = "thread";
/// The feature row of polls.
const POLL: &str = "poll";

/// The features, in the order of the table's rows.
const FEATURES: [&str; 22] = [
    "text",
    "formatting",
    "edit",
    "reply",
    THREAD,
    POLL,
    "reaction",
    "reaction removal",
    "redaction / retraction",
    "attachment",
    "typing",
    "read marker",
    "join",
    "leave",
    "nick / display name",
    "avatar",
    "topic",
    "role",
    "kick",
    "ban",
    "direct message",
    "no echo, no duplicate",
];

#[derive(Debug, Clone)]
enum Outcome {
    Pass,
    Fail(String),
    NotCarried(String),
}

/// The outcome of every check, for docs/features.md.
#[derive(Default)]
struct Table {
    rows: Vec<(&'static str, Net, Net, Outcome)>,
}

impl Table {
    /// Runs `check` (bounded by [`WAIT`]) and records its outcome; returns its value if it
    /// passed.
    async fn check<T>(
        &mut self,
        feature: &'static str,
        from: Net,
        to: Net,
        check: impl Future<Output = Result<T>>,
    ) -> Option<T> {
        let outcome = tokio::time::timeout(WAIT, check)
            .await
            .map_err(|_| anyhow!("nothing within {WAIT:?}"))
            .and_then(|r| r);
        match outcome {
            Ok(value) => {
                eprintln!("three_way: {feature}, {} → {}: ok", from.name(), to.name());
                self.rows.push((feature, from, to, Outcome::Pass));
                Some(value)
            }
            Err(e) => {
                eprintln!(
                    "three_way: {feature}, {} → {}: FAILED: {e:#}",
                    from.name(),
                    to.name()
                );
                self.rows
                    .push((feature, from, to, Outcome::Fail(format!("{e:#}"))));
                None
            }
        }
    }

    /// Records that `feature` cannot cross from `from` to `to`, and why.
    fn not_carried(&mut self, feature: &'static str, from: Net, to: Net, why: &str) {
        self.rows
            .push((feature, from, to, Outcome::NotCarried(why.to_owned())));
    }

    /// Records a check that could not run because an earlier one it builds on failed.
    fn skipped(&mut self, feature: &'static str, from: Net, to: Net, needs: &str) {
        self.rows.push((
            feature,
            from,
            to,
            Outcome::Fail(format!("not tried: {needs} failed")),
        ));
    }

    fn failures(&self) -> Vec<String> {
        self.rows
            .iter()
            .filter_map(|(f, from, to, o)| match o {
                Outcome::Fail(e) => Some(format!("{f}, {} → {}: {e}", from.name(), to.name())),
                _ => None,
            })
            .collect()
    }

    /// The Markdown of docs/features.md.
    fn markdown(&self, seconds: u64) -> String {
        let mut md = String::from(
            "# Features × directions\n\n\
             Generated by `tests/tests/three_way.rs` (run by `scripts/test.sh`); do not edit by \
             hand.\nOne neutral room links an XMPP MUC on Prosody, a Matrix room on Synapse and \
             a MIMI room hosted by a second bridge instance (provider `hub.example`, over HTTPS \
             with mutual TLS and MLS). Each cell is what the human on the target side received: \
             a slixmpp client in the MUC, a matrix-nio client in the room, and the MIMI user's \
             view at her provider after MLS decryption and MIMI content decoding.\n\n\
             ✅ passed · ❌ failed · — not carried (the reason is below the table)\n\n",
        );
        md.push_str("| feature |");
        for (from, to) in DIRECTIONS {
            let _ = write!(md, " {} → {} |", from.name(), to.name());
        }
        md.push_str("\n|---|");
        for _ in DIRECTIONS {
            md.push_str(":-:|");
        }
        md.push('\n');
        let mut notes: Vec<String> = Vec::new();
        for feature in FEATURES {
            let _ = write!(md, "| {feature} |");
            for (from, to) in DIRECTIONS {
                let cell = match self.outcome(feature, from, to) {
                    Some(Outcome::Pass) => "✅".to_owned(),
                    Some(Outcome::Fail(e)) => {
                        notes.push(format!(
                            "- ❌ {feature}, {} → {}: {e}",
                            from.name(),
                            to.name()
                        ));
                        "❌".to_owned()
                    }
                    Some(Outcome::NotCarried(why)) => {
                        let note = format!("- — {feature}: {why}");
                        if !notes.contains(&note) {
                            notes.push(note);
                        }
                        "—".to_owned()
                    }
                    None => "?".to_owned(),
                };
                let _ = write!(md, " {cell} |");
            }
            md.push('\n');
        }
        let passed = self
            .rows
            .iter()
            .filter(|r| matches!(r.3, Outcome::Pass))
            .count();
        let failed = self.failures().len();
        let _ = write!(
            md,
            "\n{passed} checks passed, {failed} failed, in {seconds} s.\n"
        );
        if !notes.is_empty() {
            md.push_str("\n## Notes\n\n");
            for note in notes {
                md.push_str(&note);
                md.push('\n');
            }
        }
        md
    }

    fn outcome(&self, feature: &str, from: Net, to: Net) -> Option<Outcome> {
        self.rows
            .iter()
            .find(|(f, a, b, _)| *f == feature && *a == from && *b == to)
            .map(|r| r.3.clone())
    }
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

/// The second bridge: the MIMI provider `hub.example` hosting the room, with dana's network.
struct Hub {
    core: Core,
    dana: MemoryHandle,
}

impl Hub {
    /// Dana's side submits `event` (she is "dana" unless the builder said otherwise).
    async fn submit(&self, event: InboundEvent) -> Result<()> {
        match self.dana.submit(event).await {
            Ok(Submitted::Accepted(_)) => Ok(()),
            other => bail!("the hub's core did not accept it: {other:?}"),
        }
    }

    /// Dana's side opens the direct conversation `native` (its in-memory name) with `with`, a
    /// MIMI user of the other provider, as her network's adapter does when she writes to that
    /// user's puppet.
    async fn open_direct(&self, native: &str, with: &str) -> Result<()> {
        let ctx = self
            .dana
            .context()
            .await
            .context("dana's adapter is not running")?;
        let counterpart = bridge_core::Sender {
            adapter: AdapterId::new("mimi"),
            user: bridge_core::RemoteUserId::new(with),
            display_name: None,
            avatar: None,
        };
        ctx.direct_room(
            &bridge_core::RemoteRoomId::new(native),
            &bridge_core::RemoteUserId::new("dana"),
            Some("Dana"),
            &counterpart,
        )
        .await
        .map_err(|e| anyhow!("the direct conversation does not open: {e}"))?;
        Ok(())
    }

    /// Dana writes `text` (native ID `id`) in the direct conversation `native` with `with`,
    /// opening it first ([`Hub::open_direct`]).
    async fn write_directly(&self, native: &str, with: &str, id: &str, text: &str) -> Result<()> {
        self.open_direct(native, with).await?;
        self.submit(inbound(native).id(id).from("dana").named("Dana").text(text))
            .await
    }

    /// Waits until dana's side got a message `body` in its room `native`.
    async fn got_in(&self, native: &str, body: &str) -> Result<()> {
        self.wait(|e| e.room.as_str() == native && body_of(e) == Some(body))
            .await
            .map(drop)
    }

    /// Waits until dana's side got an event `accept` takes; returns it.
    async fn wait(&self, mut accept: impl FnMut(&OutboundEvent) -> bool) -> Result<OutboundEvent> {
        loop {
            if let Some(e) = self.dana.sent().into_iter().find(|e| accept(e)) {
                return Ok(e);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Dana's native ID of `event` (an event her side received), once the hub's core recorded
    /// it (it does just after her side saw the event).
    async fn native(&self, event: &OutboundEvent) -> Result<String> {
        for _ in 0..250 {
            if self.dana.native_id_of(event.id).is_some() && self.outboxes_empty() {
                return Ok(self
                    .dana
                    .native_id_of(event.id)
                    .expect("just seen")
                    .to_string());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bail!("the hub never recorded where {} went", event.id)
    }

    /// Waits until dana's side got a `kind` ("edit", "reaction", "unreact", "redaction",
    /// "reply") whose new body or key is `what` (any, when empty) and that points at `target`.
    async fn points_at(&self, kind: &str, what: &str, target: &str) -> Result<()> {
        self.wait(|e| {
            relation(e)
                .is_some_and(|(k, t, w)| k == kind && t == target && (what.is_empty() || w == what))
        })
        .await?;
        Ok(())
    }

    /// Waits until dana's side saw someone whose MIMI URI holds `user` join or leave.
    async fn membership(&self, change: MembershipChange, user: &str) -> Result<()> {
        self.wait(|e| {
            matches!(&e.kind, EventKind::Membership { change: c, .. } if *c == change)
                && e.sender.user.as_str().contains(user)
        })
        .await?;
        Ok(())
    }

    /// How many times dana's side saw someone whose MIMI URI holds `user` join.
    fn joins_of(&self, user: &str) -> usize {
        self.dana
            .sent()
            .iter()
            .filter(|e| {
                matches!(
                    e.kind,
                    EventKind::Membership {
                        change: MembershipChange::Join,
                        ..
                    }
                ) && e.sender.user.as_str().contains(user)
            })
            .count()
    }

    /// The MIMI user (URI) whose `nth` join (from 1) dana's side saw, of someone whose URI
    /// holds `user`: once it came.
    async fn joined_as(&self, user: &str, nth: usize) -> Result<String> {
        while self.joins_of(user) < nth {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let joined = self
            .wait(|e| {
                matches!(
                    e.kind,
                    EventKind::Membership {
                        change: MembershipChange::Join,
                        ..
                    }
                ) && e.sender.user.as_str().contains(user)
            })
            .await?;
        Ok(joined.sender.user.to_string())
    }

    /// Dana, a moderator of her network, does `action` to the MIMI user `target` (native ID
    /// `id`), as her network's adapter reports a moderator's kick, ban or unban.
    async fn moderate(&self, id: &str, target: &str, action: ModerationAction) -> Result<()> {
        let target = bridge_core::Sender {
            adapter: AdapterId::new("mimi"),
            user: bridge_core::RemoteUserId::new(target),
            display_name: None,
            avatar: None,
        };
        self.submit(
            inbound(DANA_ROOM)
                .id(id)
                .from("dana")
                .named("Dana")
                .moderator()
                .kind(EventKind::Moderation {
                    target,
                    action,
                    reason: Some("off topic".into()),
                }),
        )
        .await
    }

    /// Waits until dana's side saw `user` (a part of their ID) go `times` times in all: left,
    /// kicked or banned.
    async fn departed(&self, user: &str, times: usize) -> Result<()> {
        let gone = |e: &OutboundEvent| {
            matches!(
                e.kind,
                EventKind::Membership {
                    change: MembershipChange::Leave
                        | MembershipChange::Kick
                        | MembershipChange::Ban,
                    ..
                }
            ) && e.sender.user.as_str().contains(user)
        };
        while self.dana.sent().iter().filter(|e| gone(e)).count() < times {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    fn outboxes_empty(&self) -> bool {
        self.core
            .status()
            .iter()
            .flat_map(|room| room.links.iter().map(|(_, n)| *n))
            .sum::<u64>()
            == 0
    }

    /// Waits until dana's side got a message with `words` in bold (formatting kept).
    async fn bold(&self, words: &str) -> Result<()> {
        let e = self
            .wait(|e| body_of(e).is_some_and(|b| b.contains("bold") && b.contains(words)))
            .await?;
        let html = match &e.kind {
            EventKind::Message { content, .. } => content.text.to_html(),
            _ => String::new(),
        };
        ensure!(html.contains("<strong>bold</strong>"), "not bold: {html}");
        Ok(())
    }

    /// Waits until dana's side got the file `name`; its bytes, as her provider decrypts them.
    async fn file(&self, name: &str) -> Result<Vec<u8>> {
        let e = self
            .wait(|e| {
                matches!(&e.kind, EventKind::Message { content, .. }
                    if content.attachments.iter().any(|a| a.name == name))
            })
            .await?;
        let EventKind::Message { content, .. } = &e.kind else {
            bail!("not a message: {e:?}");
        };
        self.fetch(&content.attachments[0]).await
    }

    /// The bytes of `file`, which dana's side received, as her provider decrypts them.
    async fn fetch(&self, file: &Attachment) -> Result<Vec<u8>> {
        let ctx = self
            .dana
            .context()
            .await
            .context("the hub's far side runs")?;
        let body = ctx
            .fetch_attachment(&AdapterId::new("mimi"), file)
            .await
            .map_err(|e| anyhow!("the hub's MIMI adapter fetches the file: {e}"))?;
        Ok(body
            .collect(1 << 24)
            .await
            .map_err(|e| anyhow!("reading the file: {e}"))?
            .to_vec())
    }
}

/// What an event dana's side got points at: (kind, target, new body or key).
fn relation(e: &OutboundEvent) -> Option<(&'static str, &str, &str)> {
    match &e.kind {
        EventKind::Edit { target, new } => Some(("edit", target.as_str(), new.text.body())),
        EventKind::Reaction { target, key } => Some(("reaction", target.as_str(), key)),
        EventKind::Unreact { target, key, .. } => Some(("unreact", target.as_str(), key)),
        EventKind::Redaction { target, .. } => Some(("redaction", target.as_str(), "")),
        EventKind::Message {
            reply_to: Some(target),
            content,
            ..
        } => Some(("reply", target.as_str(), content.text.body())),
        _ => None,
    }
}

fn message_with<'a>(body: &'a str) -> impl FnMut(&OutboundEvent) -> bool + 'a {
    move |e| body_of(e) == Some(body)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port()
}

fn mimi_settings(
    dir: &Path,
    domain: &str,
    port: u16,
    peer: &str,
    peer_port: u16,
) -> bridge_mimi::settings::Settings {
    bridge_mimi::testkit::loopback_settings(dir, domain, port, peer, peer_port)
        .expect("valid MIMI settings")
}

fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", sha2::Sha256::digest(bytes))
}

fn features_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/features.md")
}

/// Waits until `human`'s room timeline shows `user` at power level `level`.
async fn level_of(human: &mut MatrixHuman, user: &str, level: i64) -> Result<()> {
    human
        .wait_timeline(|e| {
            e["type"] == "m.room.power_levels" && e["content"]["users"][user] == level
        })
        .await?;
    Ok(())
}

/// Waits until `human` sees the occupant `nick` in a MUC with the session role `role`.
async fn role_in_muc(human: &mut XmppHuman, nick: &str, role: &str) -> Result<()> {
    human
        .wait_presence(|p| {
            p["nick"] == nick && p["type"] == "available" && p["item"]["role"] == role
        })
        .await?;
    Ok(())
}

/// A new XMPP user `<name>-…@localhost` online and in `muc` as `nick`, with the local part of
/// their address (what their MIMI user's URI holds).
async fn newcomer(name: &str, nick: &str, muc: &str) -> (XmppHuman, String) {
    let jid = format!("{}@localhost", fresh(name));
    let mut human = XmppHuman::start(&jid, "pw", &test_env("BRIDGE_TEST_XMPP_C2S"))
        .await
        .unwrap_or_else(|e| panic!("{name} is not online: {e:#}"));
    human
        .join(muc, nick)
        .await
        .unwrap_or_else(|e| panic!("{name} does not join: {e:#}"));
    let local = jid.split('@').next().unwrap_or_default().to_owned();
    (human, local)
}

/// Waits until `human`'s own occupant is taken out of the MUC with status `code` (307 kicked,
/// 301 banned); returns that presence.
async fn taken_out(human: &mut XmppHuman, code: u16) -> Result<Value> {
    human
        .wait_presence(|p| {
            p["type"] == "unavailable"
                && p["status_codes"]
                    .as_array()
                    .is_some_and(|c| c.contains(&json!(code)) && c.contains(&json!(110)))
        })
        .await
}

/// Waits until `human` sees `user` leave `room` by someone else's doing (a kick).
async fn kicked_from(human: &mut MatrixHuman, room: &str, user: &str) -> Result<()> {
    human
        .wait_timeline(|e| {
            e["room_id"] == room
                && e["type"] == "m.room.member"
                && e["state_key"] == user
                && e["content"]["membership"] == "leave"
                && e["sender"] != user
        })
        .await?;
    Ok(())
}

/// What a MIMI adapter's declared capabilities say a feature needs, and why MIMI has none.
fn mimi_lacks(caps: &Capabilities, feature: &str) -> Option<&'static str> {
    match feature {
        "typing" if !caps.typing => Some(
            "MIMI content (draft-ietf-mimi-content-08) has no typing notifications; the MIMI \
             adapter declares no `typing` capability, so the core does not send them there.",
        ),
        "read marker" if !caps.read_markers => Some(
            "MIMI content has no read receipts; the MIMI adapter carries them as message status \
             reports (draft-mahy-mimi-message-status-01), but this build declares no \
             `read_markers` capability.",
        ),
        "nick / display name" if !caps.profile => Some(
            "a MIMI participant is a user URI in the room's participant list; MIMI has no \
             display names, so the MIMI adapter declares no `profile` capability.",
        ),
        "role" if !caps.roles => Some(
            "a MIMI participant's role is part of the room's policy; the MIMI adapter carries \
             roles as participant-list role changes, but this build declares no `roles` \
             capability.",
        ),
        "avatar" if !caps.profile => Some(
            "a MIMI room's participant list holds only user URIs, and the MIMI adapter neither \
             reads nor writes the content format's `profile` and `icon` parts; it declares no \
             `profile` capability.",
        ),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_feature_crosses_between_xmpp_matrix_and_mimi() {
    bridge_tests::log_to_test_output();
    let started = std::time::Instant::now();
    let mut table = Table::default();
    let hs = test_env("BRIDGE_TEST_SYNAPSE_URL");
    let dir = tempfile::tempdir().expect("temp dir");

    // ---- Matrix: carol's fresh room, the bridge bot invited with power.
    let mut carol = MatrixHuman::start("carol", "carolpass", &hs)
        .await
        .expect("carol logs in");
    carol.displayname(CAROL_NAME).await.expect("name set");
    let room = carol
        .create_room_with(json!({
            "name": fresh("three-way"), "public": true, "invite": [BOT],
            "power_level_override": { "users": { BOT: 100 } },
        }))
        .await
        .expect("room created");
    let muc = format!("{}@conference.localhost", fresh("three-way"));

    // ---- The second bridge: the MIMI provider hub.example, hosting the MIMI room.
    bridge_mimi::testkit::write_pki(dir.path(), &["hub.example", "follower.example"])
        .expect("certificates");
    let (hub_port, follower_port) = (free_port(), free_port());
    let hub_store: Arc<dyn Store> =
        Arc::new(SledStore::open(&dir.path().join("hub-store")).expect("store"));
    let dana_side = MemoryAdapter::new(Capabilities::all());
    let dana = dana_side.handle();
    let hub_mimi = MimiAdapter::new(
        "mimi".into(),
        mimi_settings(
            dir.path(),
            "hub.example",
            hub_port,
            "follower.example",
            follower_port,
        ),
    );
    let hub_core = Core::builder(hub_store)
        .adapter("far", Arc::new(dana_side))
        .adapter("mimi", Arc::new(hub_mimi))
        .room(
            "lobby",
            RoomSettings::default(),
            vec![Link::new("far", DANA_ROOM), Link::new("mimi", MIMI_ROOM)],
        )
        .start()
        .await
        .expect("the hub's core starts");
    dana.context().await;
    let hub = Hub {
        core: hub_core,
        dana,
    };

    // ---- XMPP: xavier's MUC. He creates it (its owner) and sets it up as a bridged room
    // wants: occupants may change the subject (the bridge's puppets are occupants) and real
    // addresses are shown (so that direct messages can reach occupants).
    let jid = format!("{}@localhost", fresh("xavier"));
    let mut xavier = XmppHuman::start(&jid, "pw", &test_env("BRIDGE_TEST_XMPP_C2S"))
        .await
        .expect("xavier online");
    xavier.join(&muc, "Xavier").await.expect("xavier joins");
    xavier
        .configure(&muc, json!({ "changesubject": "1", "whois": "anyone" }))
        .await
        .expect("room configured");

    // ---- The bridge under test: XMPP (component), Matrix (appservice), MIMI (follower).
    let store: Arc<dyn Store> =
        Arc::new(SledStore::open(&dir.path().join("bridge-store")).expect("store"));
    let as_port: u16 = test_env("BRIDGE_TEST_AS_PORT").parse().expect("a port");
    let matrix = appservice_adapter(dir.path(), &hs, as_port);
    let xmpp_settings: toml::Table = format!(
        "mode = 'component'\nserver = '{}'\ndomain = 'bridge.localhost'\nsecret = 'bridgesecret'",
        test_env("BRIDGE_TEST_XMPP_COMPONENT")
    )
    .parse()
    .expect("settings parse");
    let xmpp = XmppAdapter::new(
        AdapterId::new("xmpp"),
        bridge_xmpp::settings::parse(&xmpp_settings, true).expect("valid settings"),
    );
    let mimi = MimiAdapter::new(
        "mimi".into(),
        mimi_settings(
            dir.path(),
            "follower.example",
            follower_port,
            "hub.example",
            hub_port,
        ),
    );
    let mimi_caps = mimi.capabilities();
    let core = Core::builder(store)
        .adapter("matrix", Arc::new(matrix))
        .adapter("xmpp", Arc::new(xmpp))
        .adapter("mimi", Arc::new(mimi))
        .room(
            "lobby",
            RoomSettings::default(),
            vec![
                Link::new("matrix", room.as_str()),
                Link::new("xmpp", muc.as_str()),
                Link::new("mimi", MIMI_ROOM),
            ],
        )
        .start()
        .await
        .expect("the bridge's core starts");
    bot_joined(&mut carol, &room, WAIT)
        .await
        .expect("the bridge bot joins the Matrix room");

    // ---- XMPP: the bridge joins xavier's MUC.
    xavier
        .next_event(|e| e["event"] == "presence" && e["nick"] == "bridge", WAIT)
        .await
        .expect("the bridge is in the MUC");

    // ---- Warm-up: Synapse backs off pushing to an appservice that was down a moment ago (the
    // previous test binary's), and the bridge's MIMI side joins the hub's room when its first
    // user speaks there. A message each way proves every path before the checks start.
    carol
        .send(&room, "warm-up from matrix")
        .await
        .expect("sent");
    xavier
        .next_event(
            |e| e["event"] == "message" && e["body"] == "warm-up from matrix",
            Duration::from_secs(60),
        )
        .await
        .expect("the warm-up reaches XMPP");
    xavier
        .send(&muc, GC, "warm-up from xmpp")
        .await
        .expect("sent");
    carol
        .next_event(
            |e| e["event"] == "timeline" && e["content"]["body"] == "warm-up from xmpp",
            Duration::from_secs(60),
        )
        .await
        .expect("the warm-up reaches Matrix");
    tokio::time::timeout(
        Duration::from_secs(60),
        hub.wait(message_with("warm-up from xmpp")),
    )
    .await
    .expect("the warm-up reaches MIMI")
    .expect("waited");
    hub.submit(
        inbound(DANA_ROOM)
            .id("d-warm")
            .from("dana")
            .named("Dana")
            .text("warm-up from mimi"),
    )
    .await
    .expect("dana speaks");
    xavier
        .next_event(
            |e| e["event"] == "message" && e["body"] == "warm-up from mimi",
            Duration::from_secs(60),
        )
        .await
        .expect("the MIMI warm-up reaches XMPP");
    let dana_warm = carol
        .next_event(
            |e| e["event"] == "timeline" && e["content"]["body"] == "warm-up from mimi",
            Duration::from_secs(60),
        )
        .await
        .expect("the MIMI warm-up reaches Matrix");
    let dana_ghost = text(&dana_warm["sender"]).to_owned();
    let carol_in_muc = format!("{muc}/{CAROL_NAME}");

    // ================================================================ text
    xavier
        .send(&muc, GC, "hello from xmpp")
        .await
        .expect("sent");
    let x_hello = xavier
        .wait_message(|m| m["body"] == "hello from xmpp")
        .await
        .expect("the MUC reflects it");
    let x_hello_stanza = text(&x_hello["stanza_id"]).to_owned();
    let x_hello_id = text(&x_hello["id"]).to_owned();
    let x_hello_mx = table
        .check("text", Net::Xmpp, Net::Matrix, async {
            let e = carol
                .wait_timeline(|e| e["content"]["body"] == "hello from xmpp")
                .await?;
            ensure!(
                text(&e["sender"]).starts_with("@_bridge_xmpp_"),
                "not from xavier's ghost: {e}"
            );
            Ok((
                text(&e["event_id"]).to_owned(),
                text(&e["sender"]).to_owned(),
            ))
        })
        .await;
    let (x_hello_mx, ghost) = x_hello_mx.unzip();
    let x_hello_mi = table
        .check("text", Net::Xmpp, Net::Mimi, async {
            let e = hub.wait(message_with("hello from xmpp")).await?;
            ensure!(
                e.sender
                    .user
                    .as_str()
                    .starts_with("mimi://follower.example/u/"),
                "not from xavier's MIMI identity: {:?}",
                e.sender
            );
            hub.native(&e).await
        })
        .await;

    let m_hello_mx = carol.send(&room, "hello from matrix").await.expect("sent");
    let m_hello_x = table
        .check("text", Net::Matrix, Net::Xmpp, async {
            let m = xavier
                .wait_message(|m| m["body"] == "hello from matrix")
                .await?;
            ensure!(
                text(&m["from"]) == carol_in_muc,
                "not from carol's puppet: {m}"
            );
            Ok((text(&m["stanza_id"]).to_owned(), text(&m["id"]).to_owned()))
        })
        .await;
    let m_hello_mi = table
        .check("text", Net::Matrix, Net::Mimi, async {
            let e = hub.wait(message_with("hello from matrix")).await?;
            hub.native(&e).await
        })
        .await;

    hub.submit(
        inbound(DANA_ROOM)
            .id("d-hello")
            .from("dana")
            .named("Dana")
            .text("hello from mimi"),
    )
    .await
    .expect("dana speaks");
    let i_hello_x = table
        .check("text", Net::Mimi, Net::Xmpp, async {
            let m = xavier
                .wait_message(|m| m["body"] == "hello from mimi")
                .await?;
            Ok((
                text(&m["stanza_id"]).to_owned(),
                text(&m["id"]).to_owned(),
                text(&m["from"]).to_owned(),
            ))
        })
        .await;
    let i_hello_mx = table
        .check("text", Net::Mimi, Net::Matrix, async {
            let e = carol
                .wait_timeline(|e| e["content"]["body"] == "hello from mimi")
                .await?;
            ensure!(
                e["sender"] == dana_ghost.as_str(),
                "not from dana's ghost: {e}"
            );
            Ok(text(&e["event_id"]).to_owned())
        })
        .await;

    // ================================================================ formatting
    xavier
        .send(&muc, GC, "*bold* from xmpp")
        .await
        .expect("sent");
    table
        .check("formatting", Net::Xmpp, Net::Matrix, async {
            let e = carol
                .wait_timeline(|e| {
                    text(&e["content"]["body"]).contains("from xmpp")
                        && text(&e["content"]["body"]).contains("bold")
                })
                .await?;
            let html = text(&e["content"]["formatted_body"]);
            ensure!(html.contains("<strong>bold</strong>"), "not bold: {e}");
            Ok(())
        })
        .await;
    table
        .check("formatting", Net::Xmpp, Net::Mimi, hub.bold("from xmpp"))
        .await;
    carol
        .send_html(
            &room,
            "bold from matrix",
            "<strong>bold</strong> from matrix",
        )
        .await
        .expect("sent");
    table
        .check("formatting", Net::Matrix, Net::Xmpp, async {
            let m = xavier
                .wait_message(|m| {
                    text(&m["body"]).contains("from matrix") && text(&m["body"]).contains("bold")
                })
                .await?;
            ensure!(text(&m["body"]) == "*bold* from matrix", "not styled: {m}");
            Ok(())
        })
        .await;
    table
        .check(
            "formatting",
            Net::Matrix,
            Net::Mimi,
            hub.bold("from matrix"),
        )
        .await;
    hub.submit(
        inbound(DANA_ROOM)
            .id("d-bold")
            .from("dana")
            .named("Dana")
            .markdown("**bold** from mimi"),
    )
    .await
    .expect("dana speaks");
    table
        .check("formatting", Net::Mimi, Net::Xmpp, async {
            let m = xavier
                .wait_message(|m| {
                    text(&m["body"]).contains("from mimi") && text(&m["body"]).contains("bold")
                })
                .await?;
            ensure!(text(&m["body"]) == "*bold* from mimi", "not styled: {m}");
            Ok(())
        })
        .await;
    table
        .check("formatting", Net::Mimi, Net::Matrix, async {
            let e = carol
                .wait_timeline(|e| {
                    text(&e["content"]["body"]).contains("from mimi")
                        && text(&e["content"]["body"]).contains("bold")
                })
                .await?;
            let html = text(&e["content"]["formatted_body"]);
            ensure!(html.contains("<strong>bold</strong>"), "not bold: {e}");
            Ok(())
        })
        .await;

    // ================================================================ edit
    xavier
        .correct(&muc, GC, &x_hello_id, "hello from xmpp, corrected")
        .await
        .expect("corrected");
    match &x_hello_mx {
        Some(target) => {
            table
                .check("edit", Net::Xmpp, Net::Matrix, async {
                    let e = carol
                        .wait_timeline(|e| {
                            e["content"]["m.new_content"]["body"] == "hello from xmpp, corrected"
                        })
                        .await?;
                    ensure!(
                        e["content"]["m.relates_to"]["rel_type"] == "m.replace",
                        "{e}"
                    );
                    ensure!(
                        e["content"]["m.relates_to"]["event_id"] == target.as_str(),
                        "wrong target: {e}"
                    );
                    Ok(())
                })
                .await;
        }
        None => table.skipped("edit", Net::Xmpp, Net::Matrix, "text XMPP → Matrix"),
    }
    match &x_hello_mi {
        Some(target) => {
            table
                .check(
                    "edit",
                    Net::Xmpp,
                    Net::Mimi,
                    hub.points_at("edit", "hello from xmpp, corrected", target),
                )
                .await;
        }
        None => table.skipped("edit", Net::Xmpp, Net::Mimi, "text XMPP → MIMI"),
    }
    carol
        .edit(&room, &m_hello_mx, "hello from matrix, edited")
        .await
        .expect("edited");
    match &m_hello_x {
        Some((_, id)) => {
            table
                .check("edit", Net::Matrix, Net::Xmpp, async {
                    let m = xavier
                        .wait_message(|m| m["body"] == "hello from matrix, edited")
                        .await?;
                    ensure!(
                        text(&m["replace_id"]) == id,
                        "corrects the wrong message: {m}"
                    );
                    ensure!(text(&m["from"]) == carol_in_muc, "{m}");
                    Ok(())
                })
                .await;
        }
        None => table.skipped("edit", Net::Matrix, Net::Xmpp, "text Matrix → XMPP"),
    }
    match &m_hello_mi {
        Some(target) => {
            table
                .check(
                    "edit",
                    Net::Matrix,
                    Net::Mimi,
                    hub.points_at("edit", "hello from matrix, edited", target),
                )
                .await;
        }
        None => table.skipped("edit", Net::Matrix, Net::Mimi, "text Matrix → MIMI"),
    }
    hub.submit(
        inbound(DANA_ROOM)
            .id("d-edit")
            .from("dana")
            .named("Dana")
            .edit("d-hello", "hello from mimi, edited"),
    )
    .await
    .expect("dana edits");
    match &i_hello_x {
        Some((_, id, _)) => {
            table
                .check("edit", Net::Mimi, Net::Xmpp, async {
                    let m = xavier
                        .wait_message(|m| m["body"] == "hello from mimi, edited")
                        .await?;
                    ensure!(
                        text(&m["replace_id"]) == id,
                        "corrects the wrong message: {m}"
                    );
                    Ok(())
                })
                .await;
        }
        None => table.skipped("edit", Net::Mimi, Net::Xmpp, "text MIMI → XMPP"),
    }
    match &i_hello_mx {
        Some(target) => {
            table
                .check("edit", Net::Mimi, Net::Matrix, async {
                    let e = carol
                        .wait_timeline(|e| {
                            e["content"]["m.new_content"]["body"] == "hello from mimi, edited"
                        })
                        .await?;
                    ensure!(
                        e["content"]["m.relates_to"]["event_id"] == target.as_str(),
                        "wrong target: {e}"
                    );
                    ensure!(e["sender"] == dana_ghost.as_str(), "{e}");
                    Ok(())
                })
                .await;
        }
        None => table.skipped("edit", Net::Mimi, Net::Matrix, "text MIMI → Matrix"),
    }

    // ================================================================ reply
    // Xavier answers carol; carol answers dana; dana answers xavier.
    match &m_hello_x {
        Some((stanza, _)) => {
            xavier
                .reply(
                    &muc,
                    GC,
                    "xavier answers",
                    stanza,
                    &carol_in_muc,
                    Some("hello from matrix"),
                )
                .await
                .expect("replied");
            table
                .check("reply", Net::Xmpp, Net::Matrix, async {
                    let e = carol
                        .wait_timeline(|e| text(&e["content"]["body"]).ends_with("xavier answers"))
                        .await?;
                    ensure!(
                        e["content"]["m.relates_to"]["m.in_reply_to"]["event_id"]
                            == m_hello_mx.as_str(),
                        "not a reply to carol's message: {e}"
                    );
                    ensure!(
                        !text(&e["content"]["body"]).contains("> "),
                        "the fallback quote was carried: {e}"
                    );
                    Ok(())
                })
                .await;
            match &m_hello_mi {
                Some(target) => {
                    table
                        .check(
                            "reply",
                            Net::Xmpp,
                            Net::Mimi,
                            hub.points_at("reply", "xavier answers", target),
                        )
                        .await;
                }
                None => table.skipped("reply", Net::Xmpp, Net::Mimi, "text Matrix → MIMI"),
            }
        }
        None => {
            table.skipped("reply", Net::Xmpp, Net::Matrix, "text Matrix → XMPP");
            table.skipped("reply", Net::Xmpp, Net::Mimi, "text Matrix → XMPP");
        }
    }
    match &i_hello_mx {
        Some(target) => {
            carol
                .reply(&room, target, "carol answers")
                .await
                .expect("replied");
            table
                .check("reply", Net::Matrix, Net::Xmpp, async {
                    let m = xavier
                        .wait_message(|m| text(&m["body"]).ends_with("carol answers"))
                        .await?;
                    let to = text(&m["reply"]["id"]);
                    let (stanza, id, _) = i_hello_x
                        .as_ref()
                        .context("dana's message never reached XMPP")?;
                    ensure!(
                        to == stanza || to == id,
                        "not a reply to dana's message: {m}"
                    );
                    Ok(())
                })
                .await;
            table
                .check(
                    "reply",
                    Net::Matrix,
                    Net::Mimi,
                    hub.points_at("reply", "carol answers", "d-hello"),
                )
                .await;
        }
        None => {
            table.skipped("reply", Net::Matrix, Net::Xmpp, "text MIMI → Matrix");
            table.skipped("reply", Net::Matrix, Net::Mimi, "text MIMI → Matrix");
        }
    }
    match &x_hello_mi {
        Some(target) => {
            hub.submit(
                inbound(DANA_ROOM)
                    .id("d-reply")
                    .from("dana")
                    .named("Dana")
                    .reply(target, "dana answers"),
            )
            .await
            .expect("dana replies");
            table
                .check("reply", Net::Mimi, Net::Xmpp, async {
                    let m = xavier
                        .wait_message(|m| text(&m["body"]).ends_with("dana answers"))
                        .await?;
                    let to = text(&m["reply"]["id"]);
                    ensure!(
                        to == x_hello_stanza || to == x_hello_id,
                        "not a reply to xavier's message: {m}"
                    );
                    Ok(())
                })
                .await;
            table
                .check("reply", Net::Mimi, Net::Matrix, async {
                    let e = carol
                        .wait_timeline(|e| text(&e["content"]["body"]).ends_with("dana answers"))
                        .await?;
                    let target = x_hello_mx
                        .as_deref()
                        .context("xavier's message never reached Matrix")?;
                    ensure!(
                        e["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == target,
                        "not a reply to xavier's message: {e}"
                    );
                    Ok(())
                })
                .await;
        }
        None => {
            table.skipped("reply", Net::Mimi, Net::Xmpp, "text XMPP → MIMI");
            table.skipped("reply", Net::Mimi, Net::Matrix, "text XMPP → MIMI");
        }
    }

    // ================================================================ thread
    // Carol answers her own message in a thread: XMPP (no threads) gets a reply to the root,
    // MIMI the thread. Xavier answers that message: Matrix and MIMI get his answer in the
    // thread. Dana starts a thread on her message: XMPP gets a reply, Matrix the thread.
    let m_thread_mx = carol
        .send_raw(
            &room,
            "m.room.message",
            json!({
                "msgtype": "m.text",
                "body": "carol in a thread",
                "m.relates_to": {
                    "rel_type": "m.thread",
                    "event_id": m_hello_mx,
                    "is_falling_back": true,
                    "m.in_reply_to": { "event_id": m_hello_mx },
                },
            }),
        )
        .await
        .expect("carol writes in a thread");
    let m_thread_x = table
        .check(THREAD, Net::Matrix, Net::Xmpp, async {
            let m = xavier
                .wait_message(|m| m["body"] == "carol in a thread")
                .await?;
            let (stanza, id) = m_hello_x
                .as_ref()
                .context("carol's message never reached XMPP")?;
            let to = text(&m["reply"]["id"]);
            ensure!(
                to == stanza || to == id,
                "not a reply to the thread's root: {m}"
            );
            Ok(text(&m["stanza_id"]).to_owned())
        })
        .await;
    let m_thread_mi = table
        .check(THREAD, Net::Matrix, Net::Mimi, async {
            let e = hub.wait(message_with("carol in a thread")).await?;
            let root = m_hello_mi
                .as_deref()
                .context("carol's message never reached MIMI")?;
            ensure!(
                matches!(&e.kind, EventKind::Message { thread: Some(t), .. } if t.as_str() == root),
                "not in the thread of carol's message: {:?}",
                e.kind
            );
            hub.native(&e).await
        })
        .await;
    match &m_thread_x {
        Some(stanza) => {
            xavier
                .reply(
                    &muc,
                    GC,
                    "xavier in the thread",
                    stanza,
                    &carol_in_muc,
                    Some("carol in a thread"),
                )
                .await
                .expect("xavier answers in the thread");
            table
                .check(THREAD, Net::Xmpp, Net::Matrix, async {
                    let e = carol
                        .wait_timeline(|e| {
                            text(&e["content"]["body"]).ends_with("xavier in the thread")
                        })
                        .await?;
                    let relation = &e["content"]["m.relates_to"];
                    ensure!(
                        relation["rel_type"] == "m.thread"
                            && relation["event_id"] == m_hello_mx.as_str()
                            && relation["m.in_reply_to"]["event_id"] == m_thread_mx.as_str(),
                        "not an answer to carol's message in its thread: {e}"
                    );
                    Ok(())
                })
                .await;
            match (&m_thread_mi, &m_hello_mi) {
                (Some(target), Some(root)) => {
                    table
                        .check(THREAD, Net::Xmpp, Net::Mimi, async {
                            let e = hub.wait(message_with("xavier in the thread")).await?;
                            ensure!(
                                matches!(&e.kind, EventKind::Message {
                                    reply_to: Some(r), thread: Some(t), ..
                                } if r.as_str() == target && t.as_str() == root),
                                "not an answer to carol's message in its thread: {:?}",
                                e.kind
                            );
                            Ok(())
                        })
                        .await;
                }
                _ => table.skipped(THREAD, Net::Xmpp, Net::Mimi, "thread Matrix → MIMI"),
            }
        }
        None => {
            table.skipped(THREAD, Net::Xmpp, Net::Matrix, "thread Matrix → XMPP");
            table.skipped(THREAD, Net::Xmpp, Net::Mimi, "thread Matrix → XMPP");
        }
    }
    hub.submit(
        inbound(DANA_ROOM)
            .id("d-thread")
            .from("dana")
            .named("Dana")
            .in_thread("d-hello", "dana in a thread"),
    )
    .await
    .expect("dana writes in a thread");
    table
        .check(THREAD, Net::Mimi, Net::Xmpp, async {
            let m = xavier
                .wait_message(|m| m["body"] == "dana in a thread")
                .await?;
            let (stanza, id, _) = i_hello_x
                .as_ref()
                .context("dana's message never reached XMPP")?;
            let to = text(&m["reply"]["id"]);
            ensure!(
                to == stanza || to == id,
                "not a reply to the thread's root: {m}"
            );
            Ok(())
        })
        .await;
    table
        .check(THREAD, Net::Mimi, Net::Matrix, async {
            let e = carol
                .wait_timeline(|e| e["content"]["body"] == "dana in a thread")
                .await?;
            let root = i_hello_mx
                .as_deref()
                .context("dana's message never reached Matrix")?;
            let relation = &e["content"]["m.relates_to"];
            ensure!(
                relation["rel_type"] == "m.thread" && relation["event_id"] == root,
                "not in the thread of dana's message: {e}"
            );
            Ok(())
        })
        .await;

    // ================================================================ poll
    // Carol asks a poll (as Element sends one) and ends it: the networks without polls get its
    // question and answers as text, then its outcome as an answer to it.
    let poll_mx = carol
        .send_raw(
            &room,
            "org.matrix.msc3381.poll.start",
            json!({
                "org.matrix.msc3381.poll.start": {
                    "question": { "org.matrix.msc1767.text": "Tea or coffee?" },
                    "kind": "org.matrix.msc3381.poll.disclosed",
                    "max_selections": 1,
                    "answers": [
                        { "id": "tea", "org.matrix.msc1767.text": "Tea" },
                        { "id": "coffee", "org.matrix.msc1767.text": "Coffee" },
                    ],
                },
                "org.matrix.msc1767.text": "Tea or coffee?\n1. Tea\n2. Coffee",
            }),
        )
        .await
        .expect("carol asks a poll");
    carol
        .send_raw(
            &room,
            "org.matrix.msc3381.poll.response",
            json!({
                "m.relates_to": { "rel_type": "m.reference", "event_id": poll_mx },
                "org.matrix.msc3381.poll.response": { "answers": ["tea"] },
            }),
        )
        .await
        .expect("carol votes");
    carol
        .send_raw(
            &room,
            "org.matrix.msc3381.poll.end",
            json!({
                "m.relates_to": { "rel_type": "m.reference", "event_id": poll_mx },
                "org.matrix.msc3381.poll.end": {},
                "org.matrix.msc1767.text": "The poll has closed. Top answer: Tea",
            }),
        )
        .await
        .expect("carol ends the poll");
    let poll_text = "Poll: Tea or coffee?\n1. Tea\n2. Coffee";
    table
        .check(POLL, Net::Matrix, Net::Xmpp, async {
            let asked = xavier.wait_message(|m| m["body"] == poll_text).await?;
            let ended = xavier
                .wait_message(|m| text(&m["body"]).ends_with("Top answer: Tea"))
                .await?;
            let to = text(&ended["reply"]["id"]);
            ensure!(
                to == text(&asked["stanza_id"]) || to == text(&asked["id"]),
                "the outcome does not answer the poll: {ended}"
            );
            Ok(())
        })
        .await;
    table
        .check(POLL, Net::Matrix, Net::Mimi, async {
            let asked = hub.wait(message_with(poll_text)).await?;
            let asked = hub.native(&asked).await?;
            hub.points_at("reply", "The poll has closed. Top answer: Tea", &asked)
                .await
        })
        .await;
    for (from, to) in [
        (Net::Xmpp, Net::Matrix),
        (Net::Xmpp, Net::Mimi),
        (Net::Mimi, Net::Xmpp),
        (Net::Mimi, Net::Matrix),
    ] {
        table.not_carried(
            POLL,
            from,
            to,
            "XMPP has no polls in common use and MIMI content (draft-ietf-mimi-content) none \
             at all: a poll starts only on Matrix, and crosses as text (its votes do not \
             cross; its end does, as an answer to it).",
        );
    }

    // ================================================================ typing, read marker
    xavier
        .chatstate(&muc, GC, "composing")
        .await
        .expect("typing");
    let typing_ghost = ghost.clone().unwrap_or_default();
    table
        .check("typing", Net::Xmpp, Net::Matrix, async {
            carol
                .wait_ephemeral(|e| {
                    e["type"] == "m.typing"
                        && e["room_id"] == room.as_str()
                        && e["content"]["user_ids"]
                            .as_array()
                            .is_some_and(|u| u.iter().any(|u| u == typing_ghost.as_str()))
                })
                .await?;
            Ok(())
        })
        .await;
    carol.typing(&room, true).await.expect("typing");
    table
        .check("typing", Net::Matrix, Net::Xmpp, async {
            xavier
                .wait_message(|m| {
                    m["chat_state"] == "composing" && text(&m["from"]) == carol_in_muc
                })
                .await?;
            Ok(())
        })
        .await;
    carol.typing(&room, false).await.expect("stopped typing");
    match &m_hello_x {
        Some((stanza, _)) => {
            xavier.displayed(&muc, GC, stanza).await.expect("marked");
            table
                .check("read marker", Net::Xmpp, Net::Matrix, async {
                    carol
                        .wait_ephemeral(|e| {
                            e["type"] == "m.receipt"
                                && e["content"][m_hello_mx.as_str()]["m.read"]
                                    [typing_ghost.as_str()]
                                .is_object()
                        })
                        .await?;
                    Ok(())
                })
                .await;
        }
        None => table.skipped("read marker", Net::Xmpp, Net::Matrix, "text Matrix → XMPP"),
    }
    match &x_hello_mx {
        Some(target) => {
            carol.read(&room, target).await.expect("read");
            table
                .check("read marker", Net::Matrix, Net::Xmpp, async {
                    xavier
                        .wait_message(|m| {
                            (m["displayed_id"] == x_hello_stanza.as_str()
                                || m["displayed_id"] == x_hello_id.as_str())
                                && text(&m["from"]) == carol_in_muc
                        })
                        .await?;
                    Ok(())
                })
                .await;
        }
        None => table.skipped("read marker", Net::Matrix, Net::Xmpp, "text XMPP → Matrix"),
    }
    // Read markers to and from MIMI travel as message status reports
    // (draft-mahy-mimi-message-status): dana's side gets "read up to" her copy of the message.
    let read_up_to = |target: String| {
        move |e: &OutboundEvent| {
            matches!(&e.kind, EventKind::ReadMarker { up_to } if up_to.as_str() == target)
                && e.sender
                    .user
                    .as_str()
                    .starts_with("mimi://follower.example/u/")
        }
    };
    if mimi_lacks(&mimi_caps, "read marker").is_none() {
        // Xavier's marker on carol's message (sent above) reaches MIMI too.
        match (&m_hello_x, &m_hello_mi) {
            (Some(_), Some(target)) => {
                table
                    .check("read marker", Net::Xmpp, Net::Mimi, async {
                        hub.wait(read_up_to(target.clone())).await.map(drop)
                    })
                    .await;
            }
            _ => table.skipped("read marker", Net::Xmpp, Net::Mimi, "text Matrix → MIMI"),
        }
        match (&x_hello_mx, &x_hello_mi) {
            (Some(_), Some(target)) => {
                table
                    .check("read marker", Net::Matrix, Net::Mimi, async {
                        hub.wait(read_up_to(target.clone())).await.map(drop)
                    })
                    .await;
            }
            _ => table.skipped("read marker", Net::Matrix, Net::Mimi, "text XMPP → MIMI"),
        }
        // Dana has read xavier's message.
        match (&x_hello_mi, &x_hello_mx, &i_hello_x) {
            (Some(target), Some(x_hello_mx), Some((_, _, dana_in_muc))) => {
                hub.submit(inbound(DANA_ROOM).id("d-read").from("dana").kind(
                    EventKind::ReadMarker {
                        up_to: bridge_core::RemoteEventId::new(target.clone()),
                    },
                ))
                .await
                .expect("dana reads");
                table
                    .check("read marker", Net::Mimi, Net::Xmpp, async {
                        xavier
                            .wait_message(|m| {
                                (m["displayed_id"] == x_hello_stanza.as_str()
                                    || m["displayed_id"] == x_hello_id.as_str())
                                    && text(&m["from"]) == dana_in_muc.as_str()
                            })
                            .await?;
                        Ok(())
                    })
                    .await;
                table
                    .check("read marker", Net::Mimi, Net::Matrix, async {
                        carol
                            .wait_ephemeral(|e| {
                                e["type"] == "m.receipt"
                                    && e["content"][x_hello_mx.as_str()]["m.read"]
                                        [dana_ghost.as_str()]
                                    .is_object()
                            })
                            .await?;
                        Ok(())
                    })
                    .await;
            }
            _ => {
                table.skipped("read marker", Net::Mimi, Net::Xmpp, "text XMPP → MIMI");
                table.skipped("read marker", Net::Mimi, Net::Matrix, "text XMPP → MIMI");
            }
        }
    }
    for feature in ["typing", "read marker"] {
        let Some(why) = mimi_lacks(&mimi_caps, feature) else {
            continue;
        };
        for (from, to) in [
            (Net::Xmpp, Net::Mimi),
            (Net::Matrix, Net::Mimi),
            (Net::Mimi, Net::Xmpp),
            (Net::Mimi, Net::Matrix),
        ] {
            table.not_carried(feature, from, to, why);
        }
    }

    // ================================================================ reaction and its removal
    // Xavier reacts to carol's message, carol to dana's, dana to xavier's.
    let mut x_reaction_mx = None;
    match &m_hello_x {
        Some((stanza, _)) => {
            xavier
                .react(&muc, GC, stanza, &["👍"])
                .await
                .expect("reacted");
            x_reaction_mx = table
                .check("reaction", Net::Xmpp, Net::Matrix, async {
                    let e = carol
                        .wait_timeline(|e| {
                            e["type"] == "m.reaction" && e["content"]["m.relates_to"]["key"] == "👍"
                        })
                        .await?;
                    ensure!(
                        e["content"]["m.relates_to"]["event_id"] == m_hello_mx.as_str(),
                        "{e}"
                    );
                    Ok(text(&e["event_id"]).to_owned())
                })
                .await;
            let target = m_hello_mi.clone().unwrap_or_default();
            table
                .check(
                    "reaction",
                    Net::Xmpp,
                    Net::Mimi,
                    hub.points_at("reaction", "👍", &target),
                )
                .await;
        }
        None => {
            table.skipped("reaction", Net::Xmpp, Net::Matrix, "text Matrix → XMPP");
            table.skipped("reaction", Net::Xmpp, Net::Mimi, "text Matrix → XMPP");
        }
    }
    let mut m_reaction = None;
    match &i_hello_mx {
        Some(target) => {
            m_reaction = Some(carol.react(&room, target, "🎉").await.expect("reacted"));
            table
                .check("reaction", Net::Matrix, Net::Xmpp, async {
                    let m = xavier
                        .wait_message(|m| {
                            !m["reactions"].is_null() && text(&m["from"]) == carol_in_muc
                        })
                        .await?;
                    ensure!(m["reactions"]["keys"] == json!(["🎉"]), "{m}");
                    let (stanza, id, _) = i_hello_x
                        .as_ref()
                        .context("dana's message never reached XMPP")?;
                    let about = text(&m["reactions"]["id"]);
                    ensure!(
                        about == stanza || about == id,
                        "not a reaction to dana's message: {m}"
                    );
                    Ok(())
                })
                .await;
            table
                .check(
                    "reaction",
                    Net::Matrix,
                    Net::Mimi,
                    hub.points_at("reaction", "🎉", "d-hello"),
                )
                .await;
        }
        None => {
            table.skipped("reaction", Net::Matrix, Net::Xmpp, "text MIMI → Matrix");
            table.skipped("reaction", Net::Matrix, Net::Mimi, "text MIMI → Matrix");
        }
    }
    let mut i_reaction_mx = None;
    match &x_hello_mi {
        Some(target) => {
            hub.submit(
                inbound(DANA_ROOM)
                    .id("d-react")
                    .from("dana")
                    .named("Dana")
                    .react(target, "❤"),
            )
            .await
            .expect("dana reacts");
            let dana_in_muc = i_hello_x
                .as_ref()
                .map(|(_, _, from)| from.clone())
                .unwrap_or_default();
            table
                .check("reaction", Net::Mimi, Net::Xmpp, async {
                    let m = xavier
                        .wait_message(|m| m["reactions"]["keys"] == json!(["❤"]))
                        .await?;
                    ensure!(
                        text(&m["from"]) == dana_in_muc,
                        "not from dana's puppet: {m}"
                    );
                    let about = text(&m["reactions"]["id"]);
                    ensure!(
                        about == x_hello_stanza || about == x_hello_id,
                        "not a reaction to xavier's message: {m}"
                    );
                    Ok(())
                })
                .await;
            i_reaction_mx = table
                .check("reaction", Net::Mimi, Net::Matrix, async {
                    let e = carol
                        .wait_timeline(|e| {
                            e["type"] == "m.reaction" && e["content"]["m.relates_to"]["key"] == "❤"
                        })
                        .await?;
                    ensure!(e["sender"] == dana_ghost.as_str(), "{e}");
                    let target = x_hello_mx
                        .as_deref()
                        .context("xavier's message never reached Matrix")?;
                    ensure!(e["content"]["m.relates_to"]["event_id"] == target, "{e}");
                    Ok(text(&e["event_id"]).to_owned())
                })
                .await;
        }
        None => {
            table.skipped("reaction", Net::Mimi, Net::Xmpp, "text XMPP → MIMI");
            table.skipped("reaction", Net::Mimi, Net::Matrix, "text XMPP → MIMI");
        }
    }
    // Each takes the reaction back.
    const REMOVAL: &str = "reaction removal";
    match (&m_hello_x, &x_reaction_mx) {
        (Some((stanza, _)), Some(reaction)) => {
            xavier
                .react(&muc, GC, stanza, &[])
                .await
                .expect("unreacted");
            table
                .check(REMOVAL, Net::Xmpp, Net::Matrix, async {
                    carol
                        .wait_timeline(|e| {
                            e["type"] == "m.room.redaction" && e["redacts"] == reaction.as_str()
                        })
                        .await?;
                    Ok(())
                })
                .await;
            let target = m_hello_mi.clone().unwrap_or_default();
            table
                .check(
                    REMOVAL,
                    Net::Xmpp,
                    Net::Mimi,
                    hub.points_at("unreact", "👍", &target),
                )
                .await;
        }
        _ => {
            table.skipped(REMOVAL, Net::Xmpp, Net::Matrix, "reaction XMPP → Matrix");
            table.skipped(REMOVAL, Net::Xmpp, Net::Mimi, "reaction XMPP → Matrix");
        }
    }
    match &m_reaction {
        Some(reaction) => {
            carol.redact(&room, reaction, None).await.expect("redacted");
            table
                .check(REMOVAL, Net::Matrix, Net::Xmpp, async {
                    let m = xavier
                        .wait_message(|m| {
                            m["reactions"]["keys"] == json!([]) && text(&m["from"]) == carol_in_muc
                        })
                        .await?;
                    let (stanza, id, _) = i_hello_x
                        .as_ref()
                        .context("dana's message never reached XMPP")?;
                    let about = text(&m["reactions"]["id"]);
                    ensure!(about == stanza || about == id, "{m}");
                    Ok(())
                })
                .await;
            table
                .check(
                    REMOVAL,
                    Net::Matrix,
                    Net::Mimi,
                    hub.points_at("unreact", "🎉", "d-hello"),
                )
                .await;
        }
        None => {
            table.skipped(REMOVAL, Net::Matrix, Net::Xmpp, "text MIMI → Matrix");
            table.skipped(REMOVAL, Net::Matrix, Net::Mimi, "text MIMI → Matrix");
        }
    }
    match &x_hello_mi {
        Some(target) => {
            hub.submit(
                inbound(DANA_ROOM)
                    .id("d-unreact")
                    .from("dana")
                    .named("Dana")
                    .unreact(target, "❤"),
            )
            .await
            .expect("dana takes her reaction back");
            let dana_in_muc = i_hello_x
                .as_ref()
                .map(|(_, _, from)| from.clone())
                .unwrap_or_default();
            table
                .check(REMOVAL, Net::Mimi, Net::Xmpp, async {
                    let m = xavier
                        .wait_message(|m| {
                            m["reactions"]["keys"] == json!([]) && text(&m["from"]) == dana_in_muc
                        })
                        .await?;
                    let about = text(&m["reactions"]["id"]);
                    ensure!(about == x_hello_stanza || about == x_hello_id, "{m}");
                    Ok(())
                })
                .await;
            match &i_reaction_mx {
                Some(reaction) => {
                    table
                        .check(REMOVAL, Net::Mimi, Net::Matrix, async {
                            carol
                                .wait_timeline(|e| {
                                    e["type"] == "m.room.redaction"
                                        && e["redacts"] == reaction.as_str()
                                })
                                .await?;
                            Ok(())
                        })
                        .await;
                }
                None => table.skipped(REMOVAL, Net::Mimi, Net::Matrix, "reaction MIMI → Matrix"),
            }
        }
        None => {
            table.skipped(REMOVAL, Net::Mimi, Net::Xmpp, "text XMPP → MIMI");
            table.skipped(REMOVAL, Net::Mimi, Net::Matrix, "text XMPP → MIMI");
        }
    }

    // ================================================================ attachment
    let files = tempfile::tempdir().expect("temp dir");
    let notes: Vec<u8> = (0..50_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let notes_path = files.path().join("notes.txt");
    std::fs::write(&notes_path, &notes).expect("file written");
    let uploaded = xavier
        .upload(&notes_path, Some("text/plain"))
        .await
        .expect("uploaded");
    xavier
        .oob(&muc, GC, text(&uploaded["url"]), None)
        .await
        .expect("shared");
    table
        .check("attachment", Net::Xmpp, Net::Matrix, async {
            let e = carol
                .wait_timeline(|e| {
                    text(&e["content"]["url"]).starts_with("mxc://")
                        && e["content"]["body"] == "notes.txt"
                })
                .await?;
            let got = carol.download(text(&e["content"]["url"])).await?;
            ensure!(
                got["sha256"] == json!(sha256_hex(&notes)),
                "other bytes: {got}"
            );
            Ok(())
        })
        .await;
    table
        .check("attachment", Net::Xmpp, Net::Mimi, async {
            let got = hub.file("notes.txt").await?;
            ensure!(
                got == notes,
                "other bytes ({} of {})",
                got.len(),
                notes.len()
            );
            Ok(())
        })
        .await;
    let picture: Vec<u8> = (0..120_000u32).map(|i| (i % 251) as u8).collect();
    carol
        .send_file(&room, &picture, "picture.png", "image/png")
        .await
        .expect("file sent");
    table
        .check("attachment", Net::Matrix, Net::Xmpp, async {
            let m = xavier
                .wait_message(|m| {
                    m["oob_urls"].as_array().is_some_and(|u| !u.is_empty())
                        && text(&m["from"]) == carol_in_muc
                })
                .await?;
            let got = xavier.fetch(text(&m["oob_urls"][0])).await?;
            ensure!(
                got["sha256"] == json!(sha256_hex(&picture)),
                "other bytes: {got}"
            );
            Ok(())
        })
        .await;
    table
        .check("attachment", Net::Matrix, Net::Mimi, async {
            let got = hub.file("picture.png").await?;
            ensure!(
                got == picture,
                "other bytes ({} of {})",
                got.len(),
                picture.len()
            );
            Ok(())
        })
        .await;
    let diagram: Vec<u8> = (0..80_000u32).map(|i| (i * 13 % 241) as u8).collect();
    let link = serve_file(Vec::leak(diagram.clone())).await;
    let mut with_file = inbound(DANA_ROOM)
        .id("d-file")
        .from("dana")
        .named("Dana")
        .text("a diagram");
    if let EventKind::Message { content, .. } = &mut with_file.kind {
        content.attachments.push(Attachment {
            name: "diagram.png".into(),
            url: link,
            mime: Some("image/png".into()),
            size: None,
            width: None,
            height: None,
        });
    }
    hub.submit(with_file).await.expect("dana shares a file");
    let dana_in_muc = i_hello_x
        .as_ref()
        .map(|(_, _, from)| from.clone())
        .unwrap_or_default();
    table
        .check("attachment", Net::Mimi, Net::Xmpp, async {
            let m = xavier
                .wait_message(|m| {
                    m["oob_urls"].as_array().is_some_and(|u| !u.is_empty())
                        && text(&m["from"]) == dana_in_muc
                })
                .await?;
            let got = xavier.fetch(text(&m["oob_urls"][0])).await?;
            ensure!(
                got["sha256"] == json!(sha256_hex(&diagram)),
                "other bytes: {got}"
            );
            Ok(())
        })
        .await;
    table
        .check("attachment", Net::Mimi, Net::Matrix, async {
            let e = carol
                .wait_timeline(|e| {
                    text(&e["content"]["url"]).starts_with("mxc://")
                        && e["sender"] == dana_ghost.as_str()
                })
                .await?;
            let got = carol.download(text(&e["content"]["url"])).await?;
            ensure!(
                got["sha256"] == json!(sha256_hex(&diagram)),
                "other bytes: {got}"
            );
            Ok(())
        })
        .await;

    // ================================================================ redaction / retraction
    const DELETE: &str = "redaction / retraction";
    xavier
        .retract(&muc, GC, &x_hello_stanza)
        .await
        .expect("retracted");
    match &x_hello_mx {
        Some(target) => {
            table
                .check(DELETE, Net::Xmpp, Net::Matrix, async {
                    carol
                        .wait_timeline(|e| {
                            e["type"] == "m.room.redaction" && e["redacts"] == target.as_str()
                        })
                        .await?;
                    Ok(())
                })
                .await;
        }
        None => table.skipped(DELETE, Net::Xmpp, Net::Matrix, "text XMPP → Matrix"),
    }
    match &x_hello_mi {
        Some(target) => {
            table
                .check(
                    DELETE,
                    Net::Xmpp,
                    Net::Mimi,
                    hub.points_at("redaction", "", target),
                )
                .await;
        }
        None => table.skipped(DELETE, Net::Xmpp, Net::Mimi, "text XMPP → MIMI"),
    }
    carol
        .redact(&room, &m_hello_mx, Some("never mind"))
        .await
        .expect("redacted");
    match &m_hello_x {
        Some((stanza, _)) => {
            table
                .check(DELETE, Net::Matrix, Net::Xmpp, async {
                    xavier
                        .wait_message(|m| m["retract_id"] == stanza.as_str())
                        .await?;
                    Ok(())
                })
                .await;
        }
        None => table.skipped(DELETE, Net::Matrix, Net::Xmpp, "text Matrix → XMPP"),
    }
    match &m_hello_mi {
        Some(target) => {
            table
                .check(
                    DELETE,
                    Net::Matrix,
                    Net::Mimi,
                    hub.points_at("redaction", "", target),
                )
                .await;
        }
        None => table.skipped(DELETE, Net::Matrix, Net::Mimi, "text Matrix → MIMI"),
    }
    hub.submit(
        inbound(DANA_ROOM)
            .id("d-delete")
            .from("dana")
            .named("Dana")
            .redact("d-hello"),
    )
    .await
    .expect("dana deletes her message");
    match &i_hello_x {
        Some((stanza, _, _)) => {
            table
                .check(DELETE, Net::Mimi, Net::Xmpp, async {
                    xavier
                        .wait_message(|m| m["retract_id"] == stanza.as_str())
                        .await?;
                    Ok(())
                })
                .await;
        }
        None => table.skipped(DELETE, Net::Mimi, Net::Xmpp, "text MIMI → XMPP"),
    }
    match &i_hello_mx {
        Some(target) => {
            table
                .check(DELETE, Net::Mimi, Net::Matrix, async {
                    carol
                        .wait_timeline(|e| {
                            e["type"] == "m.room.redaction" && e["redacts"] == target.as_str()
                        })
                        .await?;
                    Ok(())
                })
                .await;
        }
        None => table.skipped(DELETE, Net::Mimi, Net::Matrix, "text MIMI → Matrix"),
    }

    // ================================================================ topic
    xavier
        .subject(&muc, "topic from xmpp")
        .await
        .expect("subject set");
    table
        .check("topic", Net::Xmpp, Net::Matrix, async {
            carol
                .wait_timeline(|e| {
                    e["type"] == "m.room.topic" && e["content"]["topic"] == "topic from xmpp"
                })
                .await?;
            Ok(())
        })
        .await;
    carol
        .topic(&room, "topic from matrix")
        .await
        .expect("topic set");
    table
        .check("topic", Net::Matrix, Net::Xmpp, async {
            xavier
                .wait_message(|m| m["subject"] == "topic from matrix")
                .await?;
            Ok(())
        })
        .await;
    // The MIMI room's topic is its metadata, which the hub's group admin (its bot) commits for
    // dana; the bridge's side (a follower) learns it from the commit.
    hub.submit(
        inbound(DANA_ROOM)
            .id("d-topic")
            .from("dana")
            .named("Dana")
            .topic("topic from mimi"),
    )
    .await
    .expect("dana sets the topic");
    table
        .check("topic", Net::Mimi, Net::Xmpp, async {
            xavier
                .wait_message(|m| m["subject"] == "topic from mimi")
                .await?;
            Ok(())
        })
        .await;
    table
        .check("topic", Net::Mimi, Net::Matrix, async {
            carol
                .wait_timeline(|e| {
                    e["type"] == "m.room.topic" && e["content"]["topic"] == "topic from mimi"
                })
                .await?;
            Ok(())
        })
        .await;
    // A follower's participants may not change it (room policy: group admins only).
    for from in [Net::Xmpp, Net::Matrix] {
        table.not_carried(
            "topic",
            from,
            Net::Mimi,
            "a MIMI room's name and topic are its metadata (protocol-06 §7.6), which only the \
             room's group admins change; the MIMI room here is hosted by the other provider, so \
             the bridge (a follower) does not change it, and the core drops the change for \
             MIMI (docs/mimi.md, Room name and topic).",
        );
    }

    // ================================================================ joins and leaves
    let yann_jid = format!("{}@localhost", fresh("yann"));
    let mut yann = XmppHuman::start(&yann_jid, "pw", &test_env("BRIDGE_TEST_XMPP_C2S"))
        .await
        .expect("yann online");
    yann.join(&muc, "Yann").await.expect("yann joins");
    let yann_ghost = table
        .check("join", Net::Xmpp, Net::Matrix, async {
            let e = carol
                .wait_timeline(|e| {
                    e["type"] == "m.room.member"
                        && e["content"]["membership"] == "join"
                        && e["content"]["displayname"] == "Yann"
                })
                .await?;
            Ok(text(&e["state_key"]).to_owned())
        })
        .await;
    table
        .check("join", Net::Xmpp, Net::Mimi, async {
            let e = hub
                .wait(|e| {
                    matches!(
                        e.kind,
                        EventKind::Membership {
                            change: MembershipChange::Join,
                            ..
                        }
                    ) && e.sender.user.as_str().contains("yann")
                })
                .await?;
            ensure!(e.room.as_str() == DANA_ROOM, "{e:?}");
            Ok(())
        })
        .await;
    let mut bob = MatrixHuman::start("bob", "bobpass", &hs)
        .await
        .expect("bob logs in");
    bob.displayname("Bob Matrix").await.expect("name set");
    bob.join(&room).await.expect("bob joins");
    table
        .check("join", Net::Matrix, Net::Xmpp, async {
            xavier
                .wait_presence(|p| p["nick"] == "Bob Matrix" && p["type"] == "available")
                .await?;
            Ok(())
        })
        .await;
    table
        .check(
            "join",
            Net::Matrix,
            Net::Mimi,
            hub.membership(MembershipChange::Join, "bob"),
        )
        .await;
    hub.submit(
        inbound(DANA_ROOM)
            .id("e-join")
            .from("erin")
            .named("Erin")
            .join(),
    )
    .await
    .expect("erin joins");
    let erin_nick = table
        .check("join", Net::Mimi, Net::Xmpp, async {
            let p = xavier
                .wait_presence(|p| {
                    p["type"] == "available" && text(&p["nick"]).to_lowercase().contains("erin")
                })
                .await?;
            Ok(text(&p["nick"]).to_owned())
        })
        .await;
    let erin_ghost = table
        .check("join", Net::Mimi, Net::Matrix, async {
            let e = carol
                .wait_timeline(|e| {
                    e["type"] == "m.room.member"
                        && e["content"]["membership"] == "join"
                        && text(&e["state_key"]).contains("erin")
                })
                .await?;
            Ok(text(&e["state_key"]).to_owned())
        })
        .await;

    // ================================================================ roles
    // Xavier (the MUC's owner) makes yann a moderator: yann's ghost gets level 50.
    xavier
        .admin(&muc, json!({ "nick": "Yann", "role": "moderator" }))
        .await
        .expect("xavier makes yann a moderator");
    match &yann_ghost {
        Some(g) => {
            table
                .check(ROLE, Net::Xmpp, Net::Matrix, level_of(&mut carol, g, 50))
                .await;
        }
        None => table.skipped(ROLE, Net::Xmpp, Net::Matrix, "join XMPP → Matrix"),
    }
    // Carol (the room's admin) makes bob a moderator: bob's occupant gets the moderator role,
    // which the bridge's occupant may give once xavier made it an owner of the MUC (an owner
    // may also make admins, below).
    xavier
        .admin(
            &muc,
            json!({ "jid": "bridge@bridge.localhost", "affiliation": "owner" }),
        )
        .await
        .expect("xavier makes the bridge an owner");
    // Carol makes the room announcements-only (sending needs 10): bob, not named in the
    // levels, is muted by the new default, and his occupant loses its voice.
    let mut levels = carol
        .state(&room, "m.room.power_levels", "")
        .await
        .expect("power levels read");
    let events_default = match &levels["events_default"] {
        Value::Null => json!(0),
        level => level.clone(),
    };
    levels["events_default"] = json!(10);
    carol
        .send_state(&room, "m.room.power_levels", "", levels.clone())
        .await
        .expect("carol makes the room announcements-only");
    table
        .check(
            ROLE,
            Net::Matrix,
            Net::Xmpp,
            role_in_muc(&mut xavier, "Bob Matrix", "visitor"),
        )
        .await;
    // Everyone may speak again, and bob is a moderator.
    levels["events_default"] = events_default;
    levels["users"][bob.user_id()] = json!(50);
    carol
        .send_state(&room, "m.room.power_levels", "", levels)
        .await
        .expect("carol makes bob a moderator");
    table
        .check(
            ROLE,
            Net::Matrix,
            Net::Xmpp,
            role_in_muc(&mut xavier, "Bob Matrix", "moderator"),
        )
        .await;
    // Dana is made an admin on the hub's side: a group admin of the MIMI room (committed by
    // the hub's bot), an admin on the other networks, where the bridge is an owner of the MUC
    // and its bot of level 100.
    hub.submit(
        inbound(DANA_ROOM)
            .id("d-role")
            .from("dana")
            .named("Dana")
            .role(Role::Admin),
    )
    .await
    .expect("dana is made an admin");
    if dana_in_muc.is_empty() {
        table.skipped(ROLE, Net::Mimi, Net::Xmpp, "text MIMI → XMPP");
    } else {
        table
            .check(ROLE, Net::Mimi, Net::Xmpp, async {
                xavier
                    .wait_presence(|p| {
                        p["from"] == dana_in_muc.as_str()
                            && p["type"] == "available"
                            && p["item"]["affiliation"] == "admin"
                    })
                    .await?;
                Ok(())
            })
            .await;
    }
    table
        .check(
            ROLE,
            Net::Mimi,
            Net::Matrix,
            level_of(&mut carol, &dana_ghost, 99),
        )
        .await;
    match mimi_lacks(&mimi_caps, ROLE) {
        Some(why) => {
            for (from, to) in [(Net::Xmpp, Net::Mimi), (Net::Matrix, Net::Mimi)] {
                table.not_carried(ROLE, from, to, why);
            }
        }
        None => {
            for from in [Net::Xmpp, Net::Matrix] {
                table.not_carried(
                    ROLE,
                    from,
                    Net::Mimi,
                    "a MIMI participant's role is changed by the room's group admins \
                     (draft-ietf-mimi-room-policy); the MIMI room here is hosted by the other \
                     provider, so the bridge (a follower) does not change it, and the core \
                     drops the change for MIMI (docs/mimi.md, Roles).",
                );
            }
        }
    }

    yann.leave(&muc).await.expect("yann leaves");
    match &yann_ghost {
        Some(g) => {
            table
                .check("leave", Net::Xmpp, Net::Matrix, async {
                    carol
                        .wait_timeline(|e| {
                            e["type"] == "m.room.member"
                                && e["state_key"] == g.as_str()
                                && e["content"]["membership"] == "leave"
                        })
                        .await?;
                    Ok(())
                })
                .await;
        }
        None => table.skipped("leave", Net::Xmpp, Net::Matrix, "join XMPP → Matrix"),
    }
    table
        .check(
            "leave",
            Net::Xmpp,
            Net::Mimi,
            hub.membership(MembershipChange::Leave, "yann"),
        )
        .await;
    let _ = yann.quit().await;
    bob.leave(&room).await.expect("bob leaves");
    table
        .check("leave", Net::Matrix, Net::Xmpp, async {
            xavier
                .wait_presence(|p| p["nick"] == "Bob Matrix" && p["type"] == "unavailable")
                .await?;
            Ok(())
        })
        .await;
    table
        .check(
            "leave",
            Net::Matrix,
            Net::Mimi,
            hub.membership(MembershipChange::Leave, "bob"),
        )
        .await;
    let _ = bob.quit().await;
    hub.submit(
        inbound(DANA_ROOM)
            .id("e-leave")
            .from("erin")
            .named("Erin")
            .leave(),
    )
    .await
    .expect("erin leaves");
    match &erin_nick {
        Some(nick) => {
            table
                .check("leave", Net::Mimi, Net::Xmpp, async {
                    xavier
                        .wait_presence(|p| p["type"] == "unavailable" && p["nick"] == nick.as_str())
                        .await?;
                    Ok(())
                })
                .await;
        }
        None => table.skipped("leave", Net::Mimi, Net::Xmpp, "join MIMI → XMPP"),
    }
    match &erin_ghost {
        Some(g) => {
            table
                .check("leave", Net::Mimi, Net::Matrix, async {
                    carol
                        .wait_timeline(|e| {
                            e["type"] == "m.room.member"
                                && e["state_key"] == g.as_str()
                                && e["content"]["membership"] == "leave"
                        })
                        .await?;
                    Ok(())
                })
                .await;
        }
        None => table.skipped("leave", Net::Mimi, Net::Matrix, "join MIMI → Matrix"),
    }

    // ================================================================ kick
    // A kick crosses as the moderator's. Xavier (the MUC's owner) kicks bob's occupant: bob
    // is kicked from the Matrix room, and his puppet leaves the MIMI room. Carol (the Matrix
    // room's creator) kicks zoe's ghost: zoe is kicked from the MUC.
    const KICK: &str = "kick";
    let _ = xavier.drain();
    let mut bob = MatrixHuman::start("bob", "bobpass", &hs)
        .await
        .expect("bob logs in again");
    bob.join(&room).await.expect("bob joins again");
    let bob_back = xavier
        .wait_presence(|p| p["nick"] == "Bob Matrix" && p["type"] == "available")
        .await;
    match bob_back {
        Ok(_) => {
            xavier
                .admin(&muc, json!({ "nick": "Bob Matrix", "role": "none" }))
                .await
                .expect("xavier kicks bob's occupant");
            let bob_id = bob.user_id().to_owned();
            table
                .check(
                    KICK,
                    Net::Xmpp,
                    Net::Matrix,
                    kicked_from(&mut carol, &room, &bob_id),
                )
                .await;
            table
                .check(
                    KICK,
                    Net::Xmpp,
                    Net::Mimi,
                    // Bob left once before (the leave row), and is gone again.
                    hub.departed("bob", 2),
                )
                .await;
        }
        Err(e) => {
            for to in [Net::Matrix, Net::Mimi] {
                table.skipped(KICK, Net::Xmpp, to, &format!("bob's occupant back: {e}"));
            }
        }
    }
    let _ = bob.quit().await;
    let (mut zoe, _) = newcomer("zoe", "Zoe", &muc).await;
    let zoe_ghost = carol
        .wait_timeline(|e| {
            e["type"] == "m.room.member"
                && e["content"]["membership"] == "join"
                && e["content"]["displayname"] == "Zoe"
        })
        .await
        .map(|e| text(&e["state_key"]).to_owned());
    match zoe_ghost {
        Ok(g) => {
            carol
                .kick(&room, &g, "off topic")
                .await
                .expect("carol kicks zoe's ghost");
            table
                .check(KICK, Net::Matrix, Net::Xmpp, async {
                    let p = taken_out(&mut zoe, 307).await?;
                    ensure!(p["nick"] == "Zoe", "{p}");
                    Ok(())
                })
                .await;
        }
        Err(e) => table.skipped(KICK, Net::Matrix, Net::Xmpp, &format!("zoe's ghost: {e}")),
    }
    table
        .check(KICK, Net::Matrix, Net::Mimi, hub.departed("zoe", 1))
        .await;
    let _ = zoe.quit().await;
    // Dana, a moderator of her network, kicks the MIMI user of yan (of the MUC) and then bob's
    // (back in the Matrix room): the hub's bot takes each out of the MIMI room, and the
    // bridge here, seeing its puppet taken out by another member, kicks the user where they
    // are.
    let (mut yan, yan_id) = newcomer("yan", "Yan", &muc).await;
    table
        .check(KICK, Net::Mimi, Net::Xmpp, async {
            let mimi_user = hub.joined_as(&yan_id, 1).await?;
            hub.moderate("dana-kicks-yan", &mimi_user, ModerationAction::Kick)
                .await?;
            let p = taken_out(&mut yan, 307).await?;
            ensure!(p["nick"] == "Yan", "{p}");
            Ok(())
        })
        .await;
    let _ = yan.quit().await;
    let bob_joins = hub.joins_of("bob");
    let mut bob = MatrixHuman::start("bob", "bobpass", &hs)
        .await
        .expect("bob logs in again");
    bob.join(&room).await.expect("bob joins again");
    let bob_id = bob.user_id().to_owned();
    table
        .check(KICK, Net::Mimi, Net::Matrix, async {
            let mimi_user = hub.joined_as("bob", bob_joins + 1).await?;
            hub.moderate("dana-kicks-bob", &mimi_user, ModerationAction::Kick)
                .await?;
            kicked_from(&mut carol, &room, &bob_id).await
        })
        .await;

    // ================================================================ ban
    // A ban crosses the same way, by address. Xavier bans alice's occupant (its JID made an
    // outcast): alice is banned from the Matrix room and her puppet leaves the MIMI room.
    // Carol bans wes's ghost: wes is banned from the MUC; she lifts the ban, and wes may
    // join again.
    const BAN: &str = "ban";
    let _ = xavier.drain();
    let mut alice = MatrixHuman::start("alice", "alicepass", &hs)
        .await
        .expect("alice logs in");
    alice.displayname("Alice Matrix").await.expect("name set");
    alice.join(&room).await.expect("alice joins");
    let alice_occupant = xavier
        .wait_presence(|p| p["nick"] == "Alice Matrix" && p["type"] == "available")
        .await;
    match alice_occupant {
        Ok(p) => {
            let puppet = text(&p["item"]["jid"])
                .split('/')
                .next()
                .unwrap_or_default()
                .to_owned();
            xavier
                .admin(&muc, json!({ "jid": puppet, "affiliation": "outcast" }))
                .await
                .expect("xavier bans alice's occupant");
            let alice_id = alice.user_id().to_owned();
            table
                .check(BAN, Net::Xmpp, Net::Matrix, async {
                    carol
                        .wait_timeline(|e| {
                            e["type"] == "m.room.member"
                                && e["state_key"] == alice_id.as_str()
                                && e["content"]["membership"] == "ban"
                        })
                        .await?;
                    Ok(())
                })
                .await;
            table
                .check(BAN, Net::Xmpp, Net::Mimi, hub.departed("alice", 1))
                .await;
        }
        Err(e) => {
            for to in [Net::Matrix, Net::Mimi] {
                table.skipped(BAN, Net::Xmpp, to, &format!("alice's occupant: {e}"));
            }
        }
    }
    let _ = alice.quit().await;
    let (mut wes, _) = newcomer("wes", "Wes", &muc).await;
    let wes_ghost = carol
        .wait_timeline(|e| {
            e["type"] == "m.room.member"
                && e["content"]["membership"] == "join"
                && e["content"]["displayname"] == "Wes"
        })
        .await
        .map(|e| text(&e["state_key"]).to_owned());
    match wes_ghost {
        Ok(g) => {
            carol.ban(&room, &g).await.expect("carol bans wes's ghost");
            table
                .check(BAN, Net::Matrix, Net::Xmpp, async {
                    taken_out(&mut wes, 301).await?;
                    ensure!(
                        wes.join(&muc, "Wes").await.is_err(),
                        "wes could join the MUC he is banned from"
                    );
                    Ok(())
                })
                .await;
            table
                .check(BAN, Net::Matrix, Net::Mimi, hub.departed("wes", 1))
                .await;
            carol.unban(&room, &g).await.expect("carol lifts the ban");
            table
                .check(BAN, Net::Matrix, Net::Xmpp, async {
                    // The affiliation is lifted a moment after the unban reaches the bridge.
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
                    loop {
                        match wes.join(&muc, "Wes").await {
                            Ok(_) => return Ok(()),
                            Err(e) if tokio::time::Instant::now() > deadline => {
                                return Err(e.context("wes still banned after the unban"));
                            }
                            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                        }
                    }
                })
                .await;
        }
        Err(e) => table.skipped(BAN, Net::Matrix, Net::Xmpp, &format!("wes's ghost: {e}")),
    }
    let _ = wes.quit().await;
    // Dana bans the MIMI user of vic (of the MUC) and bob's (back again): each is banned
    // where they are, vic unable to join the MUC again.
    let (mut vic, vic_id) = newcomer("vic", "Vic", &muc).await;
    table
        .check(BAN, Net::Mimi, Net::Xmpp, async {
            let mimi_user = hub.joined_as(&vic_id, 1).await?;
            hub.moderate("dana-bans-vic", &mimi_user, ModerationAction::Ban)
                .await?;
            taken_out(&mut vic, 301).await?;
            ensure!(
                vic.join(&muc, "Vic").await.is_err(),
                "vic could join the MUC he is banned from"
            );
            Ok(())
        })
        .await;
    let _ = vic.quit().await;
    let bob_joins = hub.joins_of("bob");
    bob.join(&room).await.expect("bob joins once more");
    table
        .check(BAN, Net::Mimi, Net::Matrix, async {
            let mimi_user = hub.joined_as("bob", bob_joins + 1).await?;
            hub.moderate("dana-bans-bob", &mimi_user, ModerationAction::Ban)
                .await?;
            carol
                .wait_timeline(|e| {
                    e["type"] == "m.room.member"
                        && e["state_key"] == bob_id.as_str()
                        && e["content"]["membership"] == "ban"
                })
                .await?;
            Ok(())
        })
        .await;
    let _ = bob.quit().await;

    // ================================================================ nick / display name
    const NICK: &str = "nick / display name";
    xavier
        .nick(&muc, "Xavier Renamed")
        .await
        .expect("nick changed");
    let renamed_ghost = ghost.clone().unwrap_or_default();
    table
        .check(NICK, Net::Xmpp, Net::Matrix, async {
            carol
                .wait_timeline(|e| {
                    e["type"] == "m.room.member"
                        && e["state_key"] == renamed_ghost.as_str()
                        && e["content"]["displayname"] == "Xavier Renamed"
                })
                .await?;
            Ok(())
        })
        .await;
    carol.displayname("Carol Renamed").await.expect("renamed");
    table
        .check(NICK, Net::Matrix, Net::Xmpp, async {
            xavier
                .wait_presence(|p| p["nick"] == "Carol Renamed" && p["type"] == "available")
                .await?;
            Ok(())
        })
        .await;
    carol.displayname(CAROL_NAME).await.expect("name restored");

    {
        let feature = NICK;
        let why = mimi_lacks(&mimi_caps, feature).expect("MIMI has no display names");
        for (from, to) in [
            (Net::Xmpp, Net::Mimi),
            (Net::Matrix, Net::Mimi),
            (Net::Mimi, Net::Xmpp),
            (Net::Mimi, Net::Matrix),
        ] {
            table.not_carried(feature, from, to, why);
        }
    }

    // ================================================================ avatar
    // Xavier publishes a vCard photo (announced in his MUC presence, XEP-0153); carol sets a
    // Matrix avatar. Each must reach the other side byte for byte.
    const AVATAR: &str = "avatar";
    let picture =
        |seed: u32| -> Vec<u8> { (0..4_000u32).map(|i| (i * seed % 251) as u8).collect() };
    let xaviers = picture(7);
    xavier
        .avatar(&xaviers, "image/png")
        .await
        .expect("xavier's avatar set");
    let avatar_ghost = ghost.clone().unwrap_or_default();
    table
        .check(AVATAR, Net::Xmpp, Net::Matrix, async {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            let url = loop {
                let members = carol.members(&room).await?;
                let url = (members["members"].as_array())
                    .and_then(|m| m.iter().find(|m| m["user_id"] == avatar_ghost.as_str()))
                    .and_then(|m| m["avatar_url"].as_str().map(str::to_owned))
                    .filter(|u| !u.is_empty());
                if let Some(url) = url {
                    break url;
                }
                ensure!(
                    tokio::time::Instant::now() < deadline,
                    "no avatar on xavier's ghost: {members}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            let downloaded = carol.download(&url).await?;
            ensure!(
                downloaded["sha256"] == sha256_hex(&xaviers).as_str(),
                "not xavier's picture: {downloaded}"
            );
            Ok(())
        })
        .await;
    let carols = picture(13);
    carol
        .avatar(&carols, "image/png")
        .await
        .expect("carol's avatar set");
    let carols_sha1 = {
        use sha1::Digest as _;
        format!("{:x}", sha1::Sha1::digest(&carols))
    };
    table
        .check(AVATAR, Net::Matrix, Net::Xmpp, async {
            xavier
                .wait_presence(|p| p["nick"] == CAROL_NAME && p["photo"] == carols_sha1.as_str())
                .await?;
            let card = xavier.vcard(&format!("{muc}/{CAROL_NAME}")).await?;
            ensure!(
                card["photo"]["sha1"] == carols_sha1.as_str(),
                "not carol's picture: {card}"
            );
            Ok(())
        })
        .await;
    if let Some(why) = mimi_lacks(&mimi_caps, AVATAR) {
        for (from, to) in [
            (Net::Xmpp, Net::Mimi),
            (Net::Matrix, Net::Mimi),
            (Net::Mimi, Net::Xmpp),
            (Net::Mimi, Net::Matrix),
        ] {
            table.not_carried(AVATAR, from, to, why);
        }
    }

    // ================================================================ direct message
    // Carol writes to xavier's ghost; xavier answers carol's puppet address.
    match &ghost {
        Some(xavier_ghost) => {
            let dm = carol
                .create_room_with(json!({ "invite": [xavier_ghost], "direct": true }))
                .await
                .expect("direct room created");
            let joined = carol
                .wait_timeline(|e| {
                    e["room_id"] == dm.as_str()
                        && e["type"] == "m.room.member"
                        && e["state_key"] == xavier_ghost.as_str()
                        && e["content"]["membership"] == "join"
                })
                .await;
            carol.send(&dm, "psst, xavier").await.expect("sent");
            let puppet = table
                .check("direct message", Net::Matrix, Net::Xmpp, async {
                    joined.context("xavier's ghost never accepted the invite")?;
                    let m = xavier.wait_message(|m| m["body"] == "psst, xavier").await?;
                    ensure!(m["type"] == "chat", "not a direct message: {m}");
                    Ok(bridge_xmpp::jid::bare(text(&m["from"])).to_owned())
                })
                .await;
            match puppet {
                Some(puppet) => {
                    xavier
                        .send(&puppet, Kind::Chat, "psst back, carol")
                        .await
                        .expect("sent");
                    table
                        .check("direct message", Net::Xmpp, Net::Matrix, async {
                            let e = carol
                                .wait_timeline(|e| e["content"]["body"] == "psst back, carol")
                                .await?;
                            ensure!(e["room_id"] == dm.as_str(), "not in the direct room: {e}");
                            ensure!(e["sender"] == xavier_ghost.as_str(), "{e}");
                            Ok(())
                        })
                        .await;
                }
                None => table.skipped(
                    "direct message",
                    Net::Xmpp,
                    Net::Matrix,
                    "direct message Matrix → XMPP",
                ),
            }
        }
        None => {
            table.skipped(
                "direct message",
                Net::Matrix,
                Net::Xmpp,
                "text XMPP → Matrix",
            );
            table.skipped(
                "direct message",
                Net::Xmpp,
                Net::Matrix,
                "text XMPP → Matrix",
            );
        }
    }
    // Dana writes to xavier's and to carol's puppet on her network (a MIMI room of its own
    // each, hosted by her provider); each answers in the conversation that opened.
    let mimi_user_of = |body: &str| {
        hub.dana
            .sent()
            .into_iter()
            .find(|e| body_of(e) == Some(body))
            .map(|e| e.sender.user.to_string())
    };
    match mimi_user_of("hello from xmpp") {
        Some(xavier_uri) => {
            let native = format!("dm:dana:mimi:{xavier_uri}");
            let puppet = table
                .check("direct message", Net::Mimi, Net::Xmpp, async {
                    hub.write_directly(&native, &xavier_uri, "d-dm-x", "psst, xavier")
                        .await?;
                    let m = xavier.wait_message(|m| m["body"] == "psst, xavier").await?;
                    ensure!(m["type"] == "chat", "not a direct message: {m}");
                    Ok(bridge_xmpp::jid::bare(text(&m["from"])).to_owned())
                })
                .await;
            match puppet {
                Some(puppet) => {
                    xavier
                        .send(&puppet, Kind::Chat, "psst back, dana")
                        .await
                        .expect("sent");
                    table
                        .check("direct message", Net::Xmpp, Net::Mimi, async {
                            hub.got_in(&native, "psst back, dana").await
                        })
                        .await;
                }
                None => table.skipped(
                    "direct message",
                    Net::Xmpp,
                    Net::Mimi,
                    "direct message MIMI → XMPP",
                ),
            }
        }
        None => {
            for (from, to) in [(Net::Mimi, Net::Xmpp), (Net::Xmpp, Net::Mimi)] {
                table.skipped("direct message", from, to, "text XMPP → MIMI");
            }
        }
    }
    match mimi_user_of("hello from matrix") {
        Some(carol_uri) => {
            let native = format!("dm:dana:mimi:{carol_uri}");
            let dm = table
                .check("direct message", Net::Mimi, Net::Matrix, async {
                    hub.write_directly(&native, &carol_uri, "d-dm-m", "psst, carol")
                        .await?;
                    let invite = carol
                        .wait_invite(|e| e["sender"] == dana_ghost.as_str())
                        .await?;
                    let dm = text(&invite["room_id"]).to_owned();
                    carol.join(&dm).await?;
                    carol
                        .wait_timeline(|e| {
                            e["room_id"] == dm.as_str() && e["content"]["body"] == "psst, carol"
                        })
                        .await?;
                    Ok(dm)
                })
                .await;
            match dm {
                Some(dm) => {
                    carol
                        .send(&dm, "psst back from matrix")
                        .await
                        .expect("sent");
                    table
                        .check("direct message", Net::Matrix, Net::Mimi, async {
                            hub.got_in(&native, "psst back from matrix").await
                        })
                        .await;
                }
                None => table.skipped(
                    "direct message",
                    Net::Matrix,
                    Net::Mimi,
                    "direct message MIMI → Matrix",
                ),
            }
        }
        None => {
            for (from, to) in [(Net::Mimi, Net::Matrix), (Net::Matrix, Net::Mimi)] {
                table.skipped("direct message", from, to, "text Matrix → MIMI");
            }
        }
    }

    // ================================================================ no echo, no duplicate
    // Everything has settled. Each side's whole record (the Matrix room's history, the MUC's
    // archive, everything dana's side got): for a direction from → to, no message from `from`
    // arrived twice at `to`, and nothing said on `to` came back to it as if from `from`.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let at_matrix = matrix_record(&mut carol, &room, &dana_ghost).await;
    let at_xmpp = xmpp_record(&mut xavier, &muc, &dana_in_muc).await;
    let at_mimi: Result<Vec<(Option<Net>, String)>> = Ok(hub
        .dana
        .sent()
        .iter()
        .filter(|e| e.room.as_str() == DANA_ROOM)
        .filter_map(|e| {
            let origin = mimi_origin(e.sender.user.as_str());
            body_of(e).map(|b| (origin, b.to_owned()))
        })
        .collect());
    for (from, to) in DIRECTIONS {
        let record = match to {
            Net::Matrix => &at_matrix,
            Net::Xmpp => &at_xmpp,
            Net::Mimi => &at_mimi,
        };
        let outcome = match record {
            Err(e) => Outcome::Fail(format!("reading the record at {}: {e:#}", to.name())),
            Ok(record) => echoes_and_duplicates(record, from, to),
        };
        table
            .rows
            .push(("no echo, no duplicate", from, to, outcome));
    }
    let dead = core.dead_letters().expect("dead letters");
    let hub_dead = hub.core.dead_letters().expect("dead letters");

    let md = table.markdown(started.elapsed().as_secs());
    std::fs::write(features_path(), &md).expect("docs/features.md written");
    eprintln!("{md}");
    core.shutdown().await;
    hub.core.shutdown().await;
    let _ = xavier.quit().await;
    let failures = table.failures();
    assert!(
        failures.is_empty(),
        "{} checks failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(dead.is_empty(), "the bridge gave up on: {dead:?}");
    assert!(hub_dead.is_empty(), "the hub gave up on: {hub_dead:?}");
}

/// The words each network's human says carry this marker ("hello from xmpp").
fn marker(net: Net) -> &'static str {
    match net {
        Net::Xmpp => "from xmpp",
        Net::Matrix => "from matrix",
        Net::Mimi => "from mimi",
    }
}

/// For `from → to`: the messages of `record` (the messages `to`'s side holds, by the network
/// they came from) that came from `from` twice, or that were said on `to` and came back.
fn echoes_and_duplicates(record: &[(Option<Net>, String)], from: Net, to: Net) -> Outcome {
    let mut seen = std::collections::HashSet::new();
    let mut problems = Vec::new();
    for (origin, body) in record {
        if *origin != Some(from) {
            continue;
        }
        if !seen.insert(body) {
            problems.push(format!("twice: {body:?}"));
        }
        if body.contains(marker(to)) {
            problems.push(format!("echo of {}'s own words: {body:?}", to.name()));
        }
    }
    if seen.is_empty() {
        Outcome::Fail(format!("nothing from {} in the record", from.name()))
    } else if problems.is_empty() {
        Outcome::Pass
    } else {
        Outcome::Fail(problems.join("; "))
    }
}

/// Which network a MIMI participant of the follower provider speaks for, or the hub's own
/// users (MIMI).
fn mimi_origin(user: &str) -> Option<Net> {
    if !user.starts_with("mimi://follower.example/") {
        return Some(Net::Mimi);
    }
    // Matrix user IDs start with "@" (percent-encoded in the URI); XMPP addresses do not.
    if user.starts_with("mimi://follower.example/u/%40") {
        Some(Net::Matrix)
    } else {
        Some(Net::Xmpp)
    }
}

/// The messages (not edits) of the Matrix room's history, by the network of their sender.
async fn matrix_record(
    carol: &mut MatrixHuman,
    room: &str,
    dana_ghost: &str,
) -> Result<Vec<(Option<Net>, String)>> {
    let me = carol.user_id().to_owned();
    let events = carol
        .messages(room, 500, bridge_tests::matrix_human::Dir::Forward)
        .await?;
    Ok(events
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .filter(|e| e["content"]["m.relates_to"]["rel_type"] != "m.replace")
        .filter(|e| !text(&e["content"]["body"]).is_empty())
        .map(|e| {
            let sender = text(&e["sender"]);
            let origin = if sender == me {
                Some(Net::Matrix)
            } else if sender == dana_ghost || sender.starts_with("@_bridge_mimi_") {
                Some(Net::Mimi)
            } else if sender.starts_with("@_bridge_xmpp_") {
                Some(Net::Xmpp)
            } else {
                None
            };
            (origin, text(&e["content"]["body"]).to_owned())
        })
        .collect())
}

/// The messages (not corrections) of the MUC's archive, by the network of their sender.
async fn xmpp_record(
    xavier: &mut XmppHuman,
    muc: &str,
    dana_in_muc: &str,
) -> Result<Vec<(Option<Net>, String)>> {
    let mut record = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = xavier.mam(muc, after.as_deref(), Some(50)).await?;
        let messages = page["messages"].as_array().cloned().unwrap_or_default();
        for m in &messages {
            let body = text(&m["body"]);
            if body.is_empty() || !m["replace_id"].is_null() {
                continue;
            }
            let from = text(&m["from"]);
            let nick = from.split_once('/').map_or("", |(_, n)| n);
            let origin = match nick {
                "Xavier" | "Xavier Renamed" => Some(Net::Xmpp),
                CAROL_NAME | "Carol Renamed" => Some(Net::Matrix),
                _ if from == dana_in_muc => Some(Net::Mimi),
                _ => None,
            };
            record.push((origin, body.to_owned()));
        }
        if page["complete"] == true || messages.is_empty() {
            return Ok(record);
        }
        after = page["last"].as_str().map(str::to_owned);
    }
}
