//! Bad input against the XMPP adapter in component mode: malformed stanzas, missing ids,
//! oversize bodies, invalid JIDs and garbage attributes, forged corrections and retractions,
//! deep nesting and a flood, all sent by a real client (slixmpp, raw XML through
//! `XmppHuman::raw`) into a MUC the bridge listens to, with the core's in-memory adapter as the
//! far side. And the other way: hostile text and names from the far side.
//!
//! After each bad input the sender posts a normal message on the same connection (so the room
//! keeps their order): it must cross, and what crossed in between is checked exactly, so that
//! nothing is lost and nothing refused slips through. Refusals are counted: by the adapter
//! (`XmppAdapter::malformed_stanzas` and `bridge_xmpp_malformed_total`) for stanzas it cannot
//! read, by the core (`bridge_events_in_total{outcome="rejected"}`) for events it will not
//! accept. The bridge's component stream must survive all of it: it joins the room once.
//!
//! Needs Prosody and the slixmpp venv, as `scripts/test.sh` provides them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bridge_core::testkit::{MemoryAdapter, MemoryHandle, inbound};
use bridge_core::{
    AdapterId, Capabilities, Core, EventKind, Link, OutboundEvent, RoomSettings, SledStore, Store,
};
use bridge_tests::xmpp_human::{Kind, XmppHuman};
use bridge_tests::{fresh, test_env};
use bridge_xmpp::XmppAdapter;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use serde_json::Value;

const GC: Kind = Kind::Groupchat;
const WAIT: Duration = Duration::from_secs(15);
const MEMORY_ROOM: &str = "memory-room";
/// The adapter's body limit in these tests.
const MAX_BODY: usize = 2048;

/// Counters of the `metrics` facade, by `name{label=value,…}` (labels sorted).
#[derive(Clone, Default)]
struct Counters(Arc<parking_lot::Mutex<HashMap<String, Arc<AtomicU64>>>>);

impl Counters {
    /// The sum of every counter named `name` whose labels include all of `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        self.0
            .lock()
            .iter()
            .filter(|(key, _)| {
                key.split_once('{').is_some_and(|(n, rest)| {
                    n == name && {
                        let have: Vec<&str> = rest.trim_end_matches('}').split(',').collect();
                        wanted.iter().all(|w| have.contains(&w.as_str()))
                    }
                })
            })
            .map(|(_, c)| c.load(Ordering::Relaxed))
            .sum()
    }
}

impl Recorder for Counters {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let mut labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        labels.sort();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        Counter::from_arc(self.0.lock().entry(name).or_default().clone())
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

/// The process-wide recorder, installed on first use (before any core starts).
fn counters() -> &'static Counters {
    static COUNTERS: OnceLock<Counters> = OnceLock::new();
    COUNTERS.get_or_init(|| {
        let counters = Counters::default();
        metrics::set_global_recorder(counters.clone()).expect("no other metrics recorder");
        counters
    })
}

fn component_settings() -> toml::Table {
    let text = format!(
        "mode = 'component'\nserver = '{}'\ndomain = 'bridge.localhost'\nsecret = 'bridgesecret'\n\
         max_body_bytes = {MAX_BODY}",
        test_env("BRIDGE_TEST_XMPP_COMPONENT")
    );
    text.parse().expect("settings parse")
}

/// Prosody serves `bridge.localhost` to one connection at a time: the tests take turns.
static COMPONENT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Rig {
    _turn: tokio::sync::MutexGuard<'static, ()>,
    core: Core,
    xmpp: XmppAdapter,
    memory: MemoryHandle,
    room: String,
    _dir: tempfile::TempDir,
}

async fn rig(test: &str) -> Rig {
    counters();
    let turn = COMPONENT.lock().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).expect("store opens"));
    let room = format!("{}@conference.localhost", fresh(test));
    let settings = bridge_xmpp::settings::parse(&component_settings(), true).expect("valid");
    let xmpp = XmppAdapter::new(AdapterId::new("xmpp"), settings);
    let memory = MemoryAdapter::new(Capabilities::all());
    let handle = memory.handle();
    let core = Core::builder(store)
        .adapter("xmpp", Arc::new(xmpp.clone()))
        .adapter("memory", Arc::new(memory))
        .room(
            "lobby",
            RoomSettings::default(),
            vec![
                Link::new("xmpp", room.as_str()),
                Link::new("memory", MEMORY_ROOM),
            ],
        )
        .start()
        .await
        .expect("core starts");
    Rig {
        _turn: turn,
        core,
        xmpp,
        memory: handle,
        room,
        _dir: dir,
    }
}

async fn human_in(room: &str, name: &str) -> XmppHuman {
    let jid = format!("{}@localhost", fresh(name));
    let mut human = XmppHuman::start(&jid, "pw", &test_env("BRIDGE_TEST_XMPP_C2S"))
        .await
        .expect("human online");
    human.join(room, name).await.expect("human joins");
    human
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

fn body(event: &OutboundEvent) -> Option<String> {
    match &event.kind {
        EventKind::Message { content, .. } => Some(content.text.body().to_owned()),
        _ => None,
    }
}

fn describe(events: &[OutboundEvent]) -> String {
    events
        .iter()
        .map(|e| format!("{} from {}: {:?}", e.kind.name(), e.sender.user, e.kind))
        .collect::<Vec<_>>()
        .join("\n  ")
}

/// Waits until the memory side got a message with body `wanted` after the first `from` events;
/// returns the events in between (typing and read markers left out) and the message.
async fn crossed_after(
    memory: &MemoryHandle,
    from: usize,
    wanted: &str,
    wait: Duration,
) -> (Vec<OutboundEvent>, OutboundEvent) {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let sent = memory.sent();
        let tail = sent.get(from..).unwrap_or_default();
        if let Some(i) = tail.iter().position(|e| body(e).as_deref() == Some(wanted)) {
            let between = tail[..i]
                .iter()
                .filter(|e| {
                    !matches!(
                        e.kind,
                        EventKind::Typing { .. } | EventKind::ReadMarker { .. }
                    )
                })
                .cloned()
                .collect();
            return (between, tail[i].clone());
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{wanted:?} did not cross within {wait:?}; since the step began:\n  {}",
            describe(tail)
        );
        memory
            .wait_sent(sent.len() + 1, Duration::from_millis(200))
            .await;
    }
}

/// One bad input: `sender` sends `xml` (raw, one or more stanzas), then a normal message on
/// the same connection. Returns what crossed to the memory side before that message.
async fn step(rig: &Rig, sender: &mut XmppHuman, label: &str, xml: &str) -> Vec<OutboundEvent> {
    let from = rig.memory.sent().len();
    sender.raw(xml).await.expect("raw XML sent");
    let alive = format!("still alive after {label}");
    sender.send(&rig.room, GC, &alive).await.expect("sent");
    crossed_after(&rig.memory, from, &alive, WAIT).await.0
}

/// Escapes text for XML attributes and text nodes.
fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

/// A groupchat message to `room` with `inner` as its children.
fn groupchat(room: &str, id: &str, inner: &str) -> String {
    format!(
        "<message xmlns='jabber:client' to='{}' type='groupchat' id='{}'>{inner}</message>",
        esc(room),
        esc(id)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_stanzas_are_refused_counted_and_never_end_the_stream() {
    let rig = rig("bad-input").await;
    let room = rig.room.clone();
    let mut alice = human_in(&room, "Alice").await;
    alice
        .next_event(|e| e["event"] == "presence" && e["nick"] == "bridge", WAIT)
        .await
        .expect("the bridge joins the room");
    let mut mallory = human_in(&room, "Mallory").await;
    let malformed = |rig: &Rig| rig.xmpp.malformed_stanzas();
    let rejected = || {
        counters().sum(
            "bridge_events_in_total",
            &[("adapter", "xmpp"), ("outcome", "rejected")],
        )
    };
    let metric = || counters().sum("bridge_xmpp_malformed_total", &[("adapter", "xmpp")]);

    // A message of Alice's that Mallory will try to correct and retract.
    let first = rig.memory.sent().len();
    let sent = alice
        .send(&room, GC, "alice's own words")
        .await
        .expect("sent");
    let alice_id = text(&sent["id"]).to_owned();
    let (_, alices) = crossed_after(&rig.memory, first, "alice's own words", WAIT).await;
    let alice_native = rig
        .memory
        .native_id_of(alices.id)
        .expect("delivered to memory");
    let reflection = mallory
        .wait_message(|m| m["body"] == "alice's own words")
        .await
        .expect("Mallory sees Alice's message");
    let alice_stanza_id = text(&reflection["stanza_id"]).to_owned();
    assert!(!alice_stanza_id.is_empty(), "the room gives stanza-ids");

    // 1. A correction without the id of what it corrects.
    let (m0, r0) = (malformed(&rig), rejected());
    let between = step(
        &rig,
        &mut mallory,
        "a correction without id",
        &groupchat(
            &room,
            "c1",
            "<body>fixed</body><replace xmlns='urn:xmpp:message-correct:0'/>",
        ),
    )
    .await;
    assert!(between.is_empty(), "crossed:\n  {}", describe(&between));
    assert_eq!(
        malformed(&rig),
        m0 + 1,
        "the correction is counted as malformed"
    );
    assert_eq!(rejected(), r0);

    // 2. A reaction without the id of what it reacts to.
    let between = step(
        &rig,
        &mut mallory,
        "a reaction without id",
        &groupchat(
            &room,
            "r1",
            "<reactions xmlns='urn:xmpp:reactions:0'><reaction>👍</reaction></reactions>\
             <store xmlns='urn:xmpp:hints'/>",
        ),
    )
    .await;
    assert!(between.is_empty(), "crossed:\n  {}", describe(&between));
    assert_eq!(malformed(&rig), m0 + 2);

    // 3. A reply to a message that never existed, by an invalid JID: the message crosses
    //    without the reply.
    let between = step(
        &rig,
        &mut mallory,
        "a reply to nothing",
        &groupchat(
            &room,
            "p1",
            "<body>replying to nothing</body>\
             <reply xmlns='urn:xmpp:reply:0' to='@@not a jid@@/' id='no-such-message'/>",
        ),
    )
    .await;
    assert_eq!(between.len(), 1, "crossed:\n  {}", describe(&between));
    assert!(
        matches!(&between[0].kind, EventKind::Message { reply_to: None, content, .. }
            if content.text.body() == "replying to nothing"),
        "{:?}",
        between[0].kind
    );

    // 4. A retraction of Alice's message by Mallory, who is neither its author nor a
    //    moderator: refused by the core, counted, and Alice's message stays.
    let r0 = rejected();
    let between = step(
        &rig,
        &mut mallory,
        "a retraction of someone else's message",
        &groupchat(
            &room,
            "x1",
            &format!(
                "<retract xmlns='urn:xmpp:message-retract:1' id='{}'/>\
                 <body>This person attempted to retract a previous message.</body>\
                 <fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:message-retract:1'/>\
                 <store xmlns='urn:xmpp:hints'/>",
                esc(&alice_stanza_id)
            ),
        ),
    )
    .await;
    assert!(between.is_empty(), "crossed:\n  {}", describe(&between));
    assert_eq!(rejected(), r0 + 1, "the retraction is counted as rejected");

    // 5. A correction of Alice's message by Mallory reusing Alice's `id` (matterbridge #1396),
    //    then pointing at its stanza-id: neither edits it.
    let between = step(
        &rig,
        &mut mallory,
        "a correction reusing someone else's id",
        &groupchat(
            &room,
            "e1",
            &format!(
                "<body>forged edit</body><replace xmlns='urn:xmpp:message-correct:0' id='{}'/>",
                esc(&alice_id)
            ),
        ),
    )
    .await;
    assert!(between.is_empty(), "crossed:\n  {}", describe(&between));
    let between = step(
        &rig,
        &mut mallory,
        "a correction of someone else's stanza-id",
        &groupchat(
            &room,
            "e2",
            &format!(
                "<body>forged edit</body><replace xmlns='urn:xmpp:message-correct:0' id='{}'/>",
                esc(&alice_stanza_id)
            ),
        ),
    )
    .await;
    assert!(between.is_empty(), "crossed:\n  {}", describe(&between));
    assert_eq!(rejected(), r0 + 3, "both forged corrections are rejected");
    assert!(
        !rig.memory.sent().iter().any(|e| matches!(&e.kind,
            EventKind::Edit { target, .. } | EventKind::Redaction { target, .. }
                if *target == alice_native)),
        "Alice's message was touched"
    );

    // 6. A body at the limit crosses; one byte more is refused.
    let m0 = malformed(&rig);
    let at_limit = "a".repeat(MAX_BODY);
    let between = step(
        &rig,
        &mut mallory,
        "bodies at and over the limit",
        &format!(
            "{}{}",
            groupchat(&room, "b1", &format!("<body>{at_limit}</body>")),
            groupchat(
                &room,
                "b2",
                &format!("<body>{}</body>", "b".repeat(MAX_BODY + 1))
            )
        ),
    )
    .await;
    assert_eq!(
        between.iter().filter_map(body).collect::<Vec<_>>(),
        [at_limit],
        "only the body at the limit crosses"
    );
    assert_eq!(malformed(&rig), m0 + 1, "the oversize body is counted");

    // 7. Two hundred unknown payloads around a body: the message crosses, once.
    let payloads: String = (0..200)
        .map(|i| format!("<thing xmlns='urn:example:junk:{i}' n='{i}'><a/><b>text</b></thing>"))
        .collect();
    let between = step(
        &rig,
        &mut mallory,
        "200 unknown payloads",
        &groupchat(
            &room,
            "u1",
            &format!("{payloads}<body>many payloads</body>"),
        ),
    )
    .await;
    assert_eq!(
        between
            .iter()
            .map(|e| body(e).unwrap_or_default())
            .collect::<Vec<_>>(),
        ["many payloads"]
    );

    // 8. Garbage in attributes: nonsense type and language, an empty id, a forged stanza-id
    //    (the room strips it and adds its own), a bad delay stamp, junk in a reply.
    let between = step(
        &rig,
        &mut mallory,
        "garbage attributes",
        &format!(
            "<message xmlns='jabber:client' to='{room}' type='groupchat' id='' xml:lang='!!'>\
             <body xml:lang='??'>garbage attributes</body>\
             <stanza-id xmlns='urn:xmpp:sid:0' by='{room}' id='forged-stanza-id'/>\
             <origin-id xmlns='urn:xmpp:sid:0'/>\
             <delay xmlns='urn:xmpp:delay' stamp='the day after tomorrow'/>\
             <reply xmlns='urn:xmpp:reply:0' id=''/>\
             <reactions xmlns='urn:xmpp:reactions:1' id=''/>\
             </message>\
             <message xmlns='jabber:client' to='{room}' type='no-such-type' id='t1'>\
             <body>wrong type</body></message>\
             <iq xmlns='jabber:client' type='nonsense' id='q1' to='bridge.localhost'/>\
             <iq xmlns='jabber:client' type='get' id='q2' to='\\\\zz@bridge.localhost/x'>\
             <query xmlns='http://jabber.org/protocol/disco#info'/></iq>\
             <message xmlns='jabber:client' to='nobody@bridge.localhost' type='chat' id='d1'>\
             <body>a direct message</body></message>"
        ),
    )
    .await;
    let garbage: Vec<&OutboundEvent> = between
        .iter()
        .filter(|e| body(e).as_deref() == Some("garbage attributes"))
        .collect();
    assert_eq!(garbage.len(), 1, "crossed:\n  {}", describe(&between));
    assert_ne!(
        rig.memory
            .native_id_of(garbage[0].id)
            .map(|n| n.as_str().to_owned()),
        Some("forged-stanza-id".to_owned()),
        "a stanza-id the sender forged became the native ID"
    );
    assert!(
        between
            .iter()
            .all(|e| body(e).as_deref() == Some("garbage attributes")),
        "crossed:\n  {}",
        describe(&between)
    );

    // 9. Nesting deeper than the adapter reads, within what Prosody passes on: refused and
    //    counted, not the end of the component stream.
    let m0 = malformed(&rig);
    let depth = 90; // the adapter reads 64 levels; Prosody archives up to about 120
    let nested = format!(
        "<deep xmlns='urn:example:deep'>{}{}</deep>",
        "<d>".repeat(depth),
        "</d>".repeat(depth)
    );
    let between = step(
        &rig,
        &mut mallory,
        "deep nesting",
        &groupchat(&room, "n1", &format!("<body>deep</body>{nested}")),
    )
    .await;
    assert!(
        between.iter().all(|e| body(e).as_deref() == Some("deep")),
        "crossed:\n  {}",
        describe(&between)
    );
    assert!(
        malformed(&rig) > m0 || between.len() == 1,
        "the deep message was neither counted nor carried; Mallory got: {:?}",
        mallory.drain()
    );

    // 10. A flood: 2,000 messages in one write, as fast as the server takes them. All cross,
    //     in order.
    let from = rig.memory.sent().len();
    let flood: String = (0..2000)
        .map(|i| {
            groupchat(
                &room,
                &format!("f{i}"),
                &format!("<body>flood {i:04}</body>"),
            )
        })
        .collect();
    mallory.raw(&flood).await.expect("flood sent");
    mallory
        .send(&room, GC, "after the flood")
        .await
        .expect("sent");
    let (between, _) = crossed_after(
        &rig.memory,
        from,
        "after the flood",
        Duration::from_secs(40),
    )
    .await;
    let bodies: Vec<String> = between.iter().filter_map(body).collect();
    let want: Vec<String> = (0..2000).map(|i| format!("flood {i:04}")).collect();
    assert_eq!(bodies.len(), want.len(), "flood messages crossed");
    assert!(bodies == want, "the flood arrived out of order");

    // Every refusal was counted by the metric too, and the bridge joined once: its component
    // stream never ended.
    assert_eq!(metric(), malformed(&rig), "metric and accessor agree");
    // (Alice saw the bridge's first join above; Mallory, who came later, saw it as present.)
    let rejoins: Vec<Value> = alice
        .drain()
        .into_iter()
        .filter(|e| {
            e["event"] == "presence"
                && e["nick"] == "bridge"
                && e["from"].as_str() == Some(&format!("{room}/bridge"))
        })
        .collect();
    assert!(
        rejoins.is_empty(),
        "the bridge joined again (its stream ended): {rejoins:?}"
    );
    let dead = rig.core.dead_letters().expect("dead letters");
    assert!(dead.is_empty(), "{dead:?}");
    rig.core.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_text_and_names_from_the_far_side_arrive_sanitised() {
    let rig = rig("bad-far-text").await;
    let mut alice = human_in(&rig.room, "Alice").await;
    alice
        .next_event(|e| e["event"] == "presence" && e["nick"] == "bridge", WAIT)
        .await
        .expect("the bridge joins the room");

    // A name of 500 characters with control characters in it.
    let name = format!("Eve\u{1}\u{7}\u{1b}[31m\u{FFFE}{}", "e".repeat(500));
    let hostile = "bell\u{7} nul\u{0} esc\u{1b}[2J del\u{7f} nonchar\u{FFFE}\u{FFFF} tab\tend";
    let post = |id: &str, body: &str| {
        inbound(MEMORY_ROOM)
            .id(id)
            .from("@eve:example.org")
            .named(&name)
            .text(body)
    };
    rig.memory
        .submit(post("h1", hostile))
        .await
        .expect("accepted");
    let got = alice
        .wait_message(|m| text(&m["body"]).starts_with("bell"))
        .await
        .expect("the hostile message arrives");
    let sanitised: String = hostile
        .chars()
        .filter(|&c| {
            matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
        })
        .collect();
    assert_eq!(text(&got["body"]), sanitised);
    let nick = text(&got["from"])
        .split_once('/')
        .map(|(_, n)| n.to_owned())
        .expect("from a puppet");
    assert!(nick.starts_with("Eve[31m"), "{nick:?}");
    assert!(
        nick.chars().count() <= 64 && !nick.chars().any(char::is_control),
        "{nick:?}"
    );

    // Very long text: over the adapter's body limit and over what Prosody takes from a
    // component in one stanza (512 KiB, more closes the stream). It arrives, cut to the limit.
    let long = format!("long {}", "x".repeat(600 * 1024));
    rig.memory
        .submit(post("h2", &long))
        .await
        .expect("accepted");
    let got = alice
        .wait_message(|m| text(&m["body"]).starts_with("long "))
        .await
        .expect("the long message arrives");
    let cut = text(&got["body"]);
    assert!(cut.len() <= MAX_BODY, "{} bytes", cut.len());
    let kept = cut.strip_suffix('…').expect("the cut is marked");
    assert!(long.starts_with(kept) && kept.len() > MAX_BODY - 8, "{cut}");

    // And the stream is alive afterwards.
    rig.memory
        .submit(post("h3", "after the hostile ones"))
        .await
        .expect("accepted");
    alice
        .wait_message(|m| m["body"] == "after the hostile ones")
        .await
        .expect("a normal message still arrives");
    let dead = rig.core.dead_letters().expect("dead letters");
    assert!(dead.is_empty(), "{dead:?}");
    rig.core.shutdown().await;
}
