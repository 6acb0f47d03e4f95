//! The adapter conformance suite.
//!
//! A plugin author implements [`Harness`] for their adapter: how to build it, which native room
//! to link, how a human on the far side posts, and what the far side received from the bridge.
//! [`run`] then links that room with a [`MemoryAdapter`] in one neutral room, over a durable
//! store, and checks: order both ways, echo suppression, dedup, relation mapping (replies),
//! capability refusal (fallbacks), clean shutdown, and a restart without loss or duplicates.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{MemoryAdapter, MemoryHandle, inbound};
use crate::adapter::{Adapter, Submitted};
use crate::capabilities::Capabilities;
use crate::engine::Core;
use crate::event::EventKind;
use crate::ids::RemoteRoomId;
use crate::routing::{Link, RoomSettings};
use crate::store::{SledStore, Store};

/// A message as the human client on the far side received it from the bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FarMessage {
    /// Its native ID on the far side.
    pub native_id: String,
    /// Who the far side saw as its sender (a puppet's ID or name).
    pub sender: String,
    /// Its text.
    pub body: String,
    /// The native ID of the message it replies to, if the far side shows it as a reply.
    pub reply_to: Option<String>,
}

/// What the suite needs to drive an adapter and look at its far side.
#[async_trait]
pub trait Harness: Send {
    /// A fresh adapter instance connected to the far side (called again after each restart).
    async fn adapter(&mut self) -> Arc<dyn Adapter>;

    /// The native room the suite links.
    fn room(&self) -> RemoteRoomId;

    /// A human `user` on the far side posts `text` in the room.
    async fn far_send(&mut self, user: &str, text: &str) -> Result<(), String>;

    /// Every message the far side received from the bridge so far, in order.
    async fn far_received(&mut self) -> Result<Vec<FarMessage>, String>;

    /// True when the far side keeps what humans post while the bridge is down and delivers it
    /// after a restart (as Matrix does, and XMPP through its archive).
    fn far_side_buffers(&self) -> bool {
        false
    }
}

/// The outcome of one check.
#[derive(Debug, Clone)]
pub struct CheckResult {
    /// The check's name.
    pub name: &'static str,
    /// `Ok` or what went wrong.
    pub outcome: Result<(), String>,
}

/// Every check's outcome.
#[derive(Debug, Clone)]
pub struct Report {
    /// In the order run.
    pub checks: Vec<CheckResult>,
}

impl Report {
    /// True when every check passed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.outcome.is_ok())
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for c in &self.checks {
            match &c.outcome {
                Ok(()) => writeln!(f, "ok   {}", c.name)?,
                Err(e) => writeln!(f, "FAIL {}: {e}", c.name)?,
            }
        }
        Ok(())
    }
}

const UNDER_TEST: &str = "under-test";
const MEMORY: &str = "memory";
const MEMORY_ROOM: &str = "memory-room";
const WAIT: Duration = Duration::from_secs(20);

struct Rig {
    core: Core,
    memory: MemoryHandle,
    caps: Capabilities,
}

async fn start(harness: &mut dyn Harness, store: Arc<dyn Store>) -> Result<Rig, String> {
    let adapter = harness.adapter().await;
    let caps = adapter.capabilities();
    let memory = MemoryAdapter::new(Capabilities::all());
    let handle = memory.handle();
    let core = Core::builder(store)
        .adapter(UNDER_TEST, adapter)
        .adapter(MEMORY, Arc::new(memory))
        .room(
            "conformance",
            RoomSettings::default(),
            vec![
                Link::new(UNDER_TEST, harness.room()),
                Link::new(MEMORY, MEMORY_ROOM),
            ],
        )
        .start()
        .await
        .map_err(|e| format!("core did not start: {e}"))?;
    handle.context().await;
    Ok(Rig {
        core,
        memory: handle,
        caps,
    })
}

/// Waits until the far side has received messages with all of `bodies`, in that order, as the
/// last messages it saw; fails on a duplicate or a reordering.
async fn wait_far(harness: &mut dyn Harness, bodies: &[String]) -> Result<Vec<FarMessage>, String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got = harness.far_received().await?;
        let ours: Vec<&FarMessage> = got.iter().filter(|m| bodies.contains(&m.body)).collect();
        if ours.len() > bodies.len() {
            return Err(format!(
                "{} copies of {} messages arrived",
                ours.len(),
                bodies.len()
            ));
        }
        if ours.len() == bodies.len() {
            let order: Vec<&String> = ours.iter().map(|m| &m.body).collect();
            if order.iter().zip(bodies).any(|(a, b)| *a != b) {
                return Err(format!("out of order: {order:?}"));
            }
            return Ok(ours.into_iter().cloned().collect());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "{} of {} messages arrived",
                ours.len(),
                bodies.len()
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn bodies(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix} {i}")).collect()
}

fn texts_sent(memory: &MemoryHandle) -> Vec<String> {
    memory
        .sent()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Message { content, .. } => Some(content.text.body().to_owned()),
            _ => None,
        })
        .collect()
}

async fn check_inbound_order(h: &mut dyn Harness, rig: &Rig) -> Result<(), String> {
    let want = bodies("from far side", 20);
    for body in &want {
        h.far_send("far-alice", body).await?;
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got: Vec<String> = texts_sent(&rig.memory)
            .into_iter()
            .filter(|b| want.contains(b))
            .collect();
        if got == want {
            return Ok(());
        }
        if got.len() >= want.len() || tokio::time::Instant::now() >= deadline {
            return Err(format!("memory side got {got:?}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn check_outbound_order(h: &mut dyn Harness, rig: &Rig) -> Result<(), String> {
    let want = bodies("to far side", 20);
    for (i, body) in want.iter().enumerate() {
        let ev = inbound(MEMORY_ROOM)
            .id(&format!("out-{i}"))
            .from("mem-bob")
            .named("Bob")
            .text(body);
        rig.memory.submit(ev).await.map_err(|e| e.to_string())?;
    }
    wait_far(h, &want).await.map(|_| ())
}

async fn check_no_echoes(h: &mut dyn Harness, rig: &Rig) -> Result<(), String> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let far = h.far_received().await?;
    if let Some(echo) = far.iter().find(|m| m.body.starts_with("from far side")) {
        return Err(format!("the far side got its own message back: {echo:?}"));
    }
    if let Some(echo) = texts_sent(&rig.memory)
        .iter()
        .find(|b| b.starts_with("to far side"))
    {
        return Err(format!("the memory side got its own message back: {echo}"));
    }
    Ok(())
}

async fn check_dedup(h: &mut dyn Harness, rig: &Rig) -> Result<(), String> {
    let ev = inbound(MEMORY_ROOM)
        .id("dup-1")
        .from("mem-bob")
        .text("said once");
    let first = rig
        .memory
        .submit(ev.clone())
        .await
        .map_err(|e| e.to_string())?;
    let second = rig.memory.submit(ev).await.map_err(|e| e.to_string())?;
    match (first, second) {
        (Submitted::Accepted(a), Submitted::Duplicate(b)) if a == b => {}
        other => return Err(format!("expected accepted then duplicate, got {other:?}")),
    }
    wait_far(h, &["said once".to_owned()]).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    wait_far(h, &["said once".to_owned()]).await.map(|_| ())
}

async fn check_replies(h: &mut dyn Harness, rig: &Rig) -> Result<(), String> {
    let submit = |ev| rig.memory.submit(ev);
    submit(
        inbound(MEMORY_ROOM)
            .id("q-1")
            .from("mem-bob")
            .named("Bob")
            .text("the question"),
    )
    .await
    .map_err(|e| e.to_string())?;
    submit(
        inbound(MEMORY_ROOM)
            .id("a-1")
            .from("mem-carol")
            .reply("q-1", "the answer"),
    )
    .await
    .map_err(|e| e.to_string())?;
    if rig.caps.replies {
        let got = wait_far(h, &["the question".to_owned(), "the answer".to_owned()]).await?;
        if got[1].reply_to.as_deref() != Some(got[0].native_id.as_str()) {
            return Err(format!(
                "the reply points at {:?}, not at {:?}",
                got[1].reply_to, got[0].native_id
            ));
        }
        Ok(())
    } else {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let far = h.far_received().await?;
            if far
                .iter()
                .any(|m| m.body.contains("the question") && m.body.contains("the answer"))
            {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err("no quoted fallback of the reply arrived".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn check_capability_refusal(h: &mut dyn Harness, rig: &Rig) -> Result<(), String> {
    let custom = inbound(MEMORY_ROOM)
        .id("custom-1")
        .from("mem-bob")
        .custom("org.example.poll", serde_json::json!({"q": "tea?"}));
    rig.memory.submit(custom).await.map_err(|e| e.to_string())?;
    let reaction = inbound(MEMORY_ROOM)
        .id("r-1")
        .from("mem-bob")
        .react("q-1", "👍");
    rig.memory
        .submit(reaction)
        .await
        .map_err(|e| e.to_string())?;
    rig.memory
        .submit(
            inbound(MEMORY_ROOM)
                .id("marker")
                .from("mem-bob")
                .text("after the refusals"),
        )
        .await
        .map_err(|e| e.to_string())?;
    wait_far(h, &["after the refusals".to_owned()]).await?;
    let far = h.far_received().await?;
    if !rig.caps.custom_events && far.iter().any(|m| m.body.contains("org.example.poll")) {
        return Err("a custom event reached an adapter that cannot carry it".into());
    }
    if !rig.caps.reactions && !far.iter().any(|m| m.body.contains("reacted 👍")) {
        return Err("the reaction's text fallback did not arrive".into());
    }
    let dead = rig.core.dead_letters().map_err(|e| e.to_string())?;
    if !dead.is_empty() {
        return Err(format!("dead letters: {dead:?}"));
    }
    Ok(())
}

async fn check_restart(
    h: &mut dyn Harness,
    rig: Rig,
    store: Arc<dyn Store>,
) -> Result<Rig, String> {
    let want = bodies("across a restart", 30);
    for (i, body) in want.iter().enumerate() {
        let ev = inbound(MEMORY_ROOM)
            .id(&format!("restart-{i}"))
            .from("mem-bob")
            .text(body);
        rig.memory.submit(ev).await.map_err(|e| e.to_string())?;
    }
    tokio::time::timeout(Duration::from_secs(15), rig.core.shutdown())
        .await
        .map_err(|_| "the core did not shut down within 15 s (clean shutdown)".to_owned())?;
    if h.far_side_buffers() {
        h.far_send("far-alice", "while the bridge was down").await?;
    }
    let rig = start(h, store).await?;
    wait_far(h, &want).await?;
    if h.far_side_buffers() {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !texts_sent(&rig.memory)
            .iter()
            .any(|b| b == "while the bridge was down")
        {
            if tokio::time::Instant::now() >= deadline {
                return Err("a message posted while the bridge was down never arrived".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(rig)
}

/// Runs every check against the adapter `harness` builds, over a sled store in a temporary
/// directory.
pub async fn run(harness: &mut dyn Harness) -> Report {
    let mut checks = Vec::new();
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => {
            checks.push(CheckResult {
                name: "setup",
                outcome: Err(e.to_string()),
            });
            return Report { checks };
        }
    };
    let open = || SledStore::open(dir.path()).map(|s| Arc::new(s) as Arc<dyn Store>);
    let store = match open() {
        Ok(s) => s,
        Err(e) => {
            checks.push(CheckResult {
                name: "setup",
                outcome: Err(e.to_string()),
            });
            return Report { checks };
        }
    };
    let rig = match start(harness, store.clone()).await {
        Ok(rig) => rig,
        Err(e) => {
            checks.push(CheckResult {
                name: "start",
                outcome: Err(e),
            });
            return Report { checks };
        }
    };
    macro_rules! check {
        ($name:literal, $e:expr) => {
            checks.push(CheckResult {
                name: $name,
                outcome: $e.await,
            });
        };
    }
    check!("inbound order", check_inbound_order(harness, &rig));
    check!("outbound order", check_outbound_order(harness, &rig));
    check!("echo suppression", check_no_echoes(harness, &rig));
    check!("dedup", check_dedup(harness, &rig));
    check!("relation mapping", check_replies(harness, &rig));
    check!(
        "capability refusal",
        check_capability_refusal(harness, &rig)
    );
    match check_restart(harness, rig, store).await {
        Ok(rig) => {
            checks.push(CheckResult {
                name: "clean shutdown and restart without loss",
                outcome: Ok(()),
            });
            rig.core.shutdown().await;
        }
        Err(e) => checks.push(CheckResult {
            name: "clean shutdown and restart without loss",
            outcome: Err(e),
        }),
    }
    Report { checks }
}
