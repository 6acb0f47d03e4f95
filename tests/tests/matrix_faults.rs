//! The Matrix appservice adapter when things break: the homeserver restarts mid-conversation,
//! the bridge is away while people talk, and the `bridge` process is SIGKILLed in the middle of
//! a stream. Each test has a Synapse of its own (tests/src/synapse.rs) on free ports in
//! 28000–28999, so it can stop it without disturbing the shared one.
//!
//! What is asserted is what the far side really has: the Matrix room's history read back
//! through `/messages`, or what the memory adapter / the line-chat server was given.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bridge_core::testkit::{MemoryAdapter, MemoryHandle, inbound};
use bridge_core::{Capabilities, Core, Link, RoomSettings, SledStore, Store, Submitted};
use bridge_example_linechat::server::Server;
use bridge_tests::BridgeProcess;
use bridge_tests::far::body_of;
use bridge_tests::matrix_human::MatrixHuman;
use bridge_tests::matrix_rig::{
    BOT, appservice_adapter, appservice_settings, bodies_with, count_sequence, free_port, history,
};
use bridge_tests::synapse::Synapse;
use serde_json::json;

const MEMORY_ROOM: &str = "memory-room";

/// Two Synapses at once are too much for a two-core machine: the tests of this file take
/// turns.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Starts a Synapse of the test's own on free ports (off the async threads: it takes seconds).
async fn own_synapse(from: u16) -> Synapse {
    let port = free_port(from);
    let as_port = free_port(port + 1);
    tokio::task::spawn_blocking(move || Synapse::start(port, as_port))
        .await
        .expect("join")
        .expect("Synapse starts")
}

/// Alice's public room with the bridge bot invited and made a moderator.
async fn bridged_room(alice: &mut MatrixHuman, name: &str) -> String {
    alice
        .create_room_with(json!({
            "name": bridge_tests::fresh(name), "public": true, "invite": [BOT],
            "power_level_override": { "users": { BOT: 100 } },
        }))
        .await
        .expect("room created")
}

/// A core linking `room` with the memory adapter's room, over `store`.
async fn start_core(
    store: Arc<dyn Store>,
    dir: &std::path::Path,
    synapse: &Synapse,
    room: &str,
) -> (Core, MemoryHandle) {
    let matrix = appservice_adapter(dir, &synapse.url(), synapse.as_port);
    let memory = MemoryAdapter::new(Capabilities::all());
    let handle = memory.handle();
    let core = Core::builder(store)
        .adapter("matrix", Arc::new(matrix))
        .adapter("memory", Arc::new(memory))
        .room(
            "lobby",
            RoomSettings::default(),
            vec![Link::new("matrix", room), Link::new("memory", MEMORY_ROOM)],
        )
        .start()
        .await
        .expect("core starts");
    (core, handle)
}

/// The bodies the memory side was given, in order.
fn memory_bodies(memory: &MemoryHandle) -> Vec<String> {
    memory
        .sent()
        .iter()
        .filter_map(|e| body_of(e).map(str::to_owned))
        .collect()
}

/// Waits (at most `limit`, for a hung run) until `done` holds for the memory side's bodies.
async fn memory_until(memory: &MemoryHandle, limit: Duration, done: impl Fn(&[String]) -> bool) {
    let deadline = Instant::now() + limit;
    loop {
        let bodies = memory_bodies(memory);
        if done(&bodies) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the memory side never got there; it has {} messages: {:?}",
            bodies.len(),
            bodies.iter().rev().take(5).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (at most `limit`) until the room's history has `n` messages starting with `prefix`.
async fn history_until(
    reader: &mut MatrixHuman,
    room: &str,
    prefix: &str,
    n: usize,
    limit: Duration,
) {
    let deadline = Instant::now() + limit;
    loop {
        let events = history(reader, room).await.expect("history");
        let have = bodies_with(&events, prefix).len();
        if have >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the room has {have} of {n} messages \"{prefix}…\""
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synapse_restart_and_a_bridge_restart_lose_and_duplicate_nothing() {
    const DOWN: usize = 50;
    const AWAY: usize = 20;
    let _turn = TURN.lock().await;
    bridge_tests::log_to_test_output();
    let mut synapse = own_synapse(28100).await;
    let mut alice = MatrixHuman::start("alice", "alicepass", &synapse.url())
        .await
        .expect("alice logs in");
    let room = bridged_room(&mut alice, "restart").await;
    let dir = tempfile::tempdir().expect("temp dir");
    // One store for both lives of the bridge.
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).expect("store opens"));
    let (core, memory) = start_core(store.clone(), dir.path(), &synapse, &room).await;
    alice
        .wait_timeline(|e| {
            e["type"] == "m.room.member"
                && e["state_key"] == BOT
                && e["content"]["membership"] == "join"
        })
        .await
        .expect("the bridge bot joins");
    // Messages cross both ways before anything breaks.
    alice.send(&room, "before").await.expect("sent");
    memory_until(&memory, Duration::from_secs(30), |b| {
        b.iter().any(|b| b == "before")
    })
    .await;
    memory
        .submit(
            inbound(MEMORY_ROOM)
                .id("hello")
                .from("carol")
                .named("Carol")
                .text("hello from memory"),
        )
        .await
        .expect("submitted");
    alice
        .wait_timeline(|e| e["content"]["body"] == "hello from memory")
        .await
        .expect("alice sees carol");

    // Synapse goes away; the far side keeps talking.
    synapse = tokio::task::spawn_blocking(move || synapse.stop().map(|()| synapse))
        .await
        .expect("join")
        .expect("Synapse stops");
    let stopped = Instant::now();
    for i in 0..DOWN {
        memory
            .submit(
                inbound(MEMORY_ROOM)
                    .id(&format!("down{i}"))
                    .from("carol")
                    .named("Carol")
                    .text(&format!("while synapse is down {i}")),
            )
            .await
            .expect("submitted");
    }
    // Let the bridge fail against the dead server a few times before it comes back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    synapse = tokio::task::spawn_blocking(move || synapse.restart().map(|()| synapse))
        .await
        .expect("join")
        .expect("Synapse restarts");
    println!(
        "synapse was down for {:.1} s",
        stopped.elapsed().as_secs_f64()
    );
    let restarted = Instant::now();
    history_until(
        &mut alice,
        &room,
        "while synapse is down ",
        DOWN,
        Duration::from_secs(180),
    )
    .await;
    println!(
        "the {DOWN} queued messages reached the room {:.1} s after the restart",
        restarted.elapsed().as_secs_f64()
    );
    // Matrix → memory works again: Synapse's pushes reach the bridge.
    alice.send(&room, "after the restart").await.expect("sent");
    memory_until(&memory, Duration::from_secs(120), |b| {
        b.iter().any(|b| b == "after the restart")
    })
    .await;
    // Anything late would be a duplicate: read the history again once more arrived.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let events = history(&mut alice, &room).await.expect("history");
    let bodies = bodies_with(&events, "while synapse is down ");
    let down = count_sequence(&bodies, "while synapse is down ", DOWN);
    println!("memory → Matrix across the Synapse restart ({DOWN} sent): {down}");
    let ghost_copies = bodies_with(&events, "hello from memory").len();
    assert_eq!(ghost_copies, 1, "a message from before was sent again");
    assert_eq!(down.lost, 0, "lost: {bodies:?}");
    assert_eq!(down.duplicated, 0, "duplicated: {bodies:?}");
    assert_eq!(down.out_of_order, 0, "out of order: {bodies:?}");
    let senders: Vec<&str> = events
        .iter()
        .filter(|e| {
            e["content"]["body"]
                .as_str()
                .is_some_and(|b| b.starts_with("while synapse is down "))
        })
        .filter_map(|e| e["sender"].as_str())
        .collect();
    assert!(
        senders
            .iter()
            .all(|s| *s == "@_bridge_memory_carol:localhost"),
        "each sent as carol's ghost: {senders:?}"
    );
    let before = memory_bodies(&memory);
    assert_eq!(
        before.iter().filter(|b| *b == "after the restart").count(),
        1
    );
    assert!(
        core.dead_letters().expect("dead letters").is_empty(),
        "nothing was given up on"
    );

    // The bridge stops; alice talks while it is away; Synapse keeps what it could not push.
    core.shutdown().await;
    drop(memory); // it holds the core's context, and so the store
    for i in 0..AWAY {
        alice
            .send(&room, &format!("while the bridge is away {i}"))
            .await
            .expect("sent");
    }
    let (core, memory) = start_core(store.clone(), dir.path(), &synapse, &room).await;
    let back = Instant::now();
    memory_until(&memory, Duration::from_secs(120), |b| {
        b.iter()
            .any(|b| b == &format!("while the bridge is away {}", AWAY - 1))
    })
    .await;
    println!(
        "the {AWAY} messages from while the bridge was away arrived {:.1} s after it started",
        back.elapsed().as_secs_f64()
    );
    // And the bridge works both ways again.
    memory
        .submit(
            inbound(MEMORY_ROOM)
                .id("again")
                .from("carol")
                .named("Carol")
                .text("carol again"),
        )
        .await
        .expect("submitted");
    alice
        .next_event(
            |e| e["event"] == "timeline" && e["content"]["body"] == "carol again",
            Duration::from_secs(60),
        )
        .await
        .expect("alice sees carol again");
    alice.send(&room, "last").await.expect("sent");
    memory_until(&memory, Duration::from_secs(60), |b| {
        b.iter().any(|b| b == "last")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = memory_bodies(&memory);
    let away = count_sequence(&after, "while the bridge is away ", AWAY);
    println!("Matrix → memory across the bridge's restart ({AWAY} sent): {away}");
    assert_eq!(away.lost, 0, "{after:?}");
    assert_eq!(away.duplicated, 0, "{after:?}");
    assert_eq!(away.out_of_order, 0, "{after:?}");
    // Nothing the first life of the bridge had delivered came again.
    let again: Vec<&String> = after
        .iter()
        .filter(|b| ["before", "after the restart"].contains(&b.as_str()))
        .collect();
    assert!(again.is_empty(), "delivered again: {again:?}");
    assert_eq!(
        after,
        (0..AWAY)
            .map(|i| format!("while the bridge is away {i}"))
            .chain(["last".to_owned()])
            .collect::<Vec<_>>(),
        "exactly what alice said, nothing else (no echoes)"
    );
    let events = history(&mut alice, &room).await.expect("history");
    assert_eq!(
        bodies_with(&events, "carol again").len(),
        1,
        "carol's message once"
    );
    assert!(core.dead_letters().expect("dead letters").is_empty());
    core.shutdown().await;
}

/// Answers the homeserver's pushes with 200 and keeps them (the appservice API of
/// bridge-matrix, with a handler that bridges nothing): what a homeserver that lost its queue
/// leaves the bridge with.
struct Swallow(parking_lot::Mutex<Vec<String>>);

#[async_trait::async_trait]
impl bridge_matrix::appservice::Handler for Swallow {
    async fn transaction(
        &self,
        txn: bridge_matrix::appservice::Transaction,
    ) -> Result<(), bridge_matrix::appservice::TxnError> {
        let mut bodies = self.0.lock();
        for event in &txn.events {
            if let Some(body) = event["content"]["body"].as_str() {
                bodies.push(body.to_owned());
            }
        }
        Ok(())
    }

    async fn user_exists(&self, _user_id: &str) -> bool {
        true
    }

    async fn alias_exists(&self, _alias: &str) -> bool {
        false
    }
}

/// Synapse moves its appservice stream position past events before it has pushed them, so
/// events it held for a push when it stopped are never pushed. Here the pushes of a few
/// messages are answered by something else while the bridge is stopped (the homeserver takes
/// them as delivered): the bridge finds them in the room's history when it starts, before the
/// next message, and bridges each once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_the_homeserver_never_pushed_are_caught_up_from_the_history() {
    const LOST: usize = 5;
    let _turn = TURN.lock().await;
    bridge_tests::log_to_test_output();
    let synapse = own_synapse(28300).await;
    let mut alice = MatrixHuman::start("alice", "alicepass", &synapse.url())
        .await
        .expect("alice logs in");
    let room = bridged_room(&mut alice, "catch-up").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).expect("store opens"));
    let (core, memory) = start_core(store.clone(), dir.path(), &synapse, &room).await;
    alice
        .wait_timeline(|e| {
            e["type"] == "m.room.member"
                && e["state_key"] == BOT
                && e["content"]["membership"] == "join"
        })
        .await
        .expect("the bridge bot joins");
    alice.send(&room, "before").await.expect("sent");
    memory_until(&memory, Duration::from_secs(30), |b| {
        b.iter().any(|b| b == "before")
    })
    .await;
    core.shutdown().await;
    drop(memory);

    // The pushes of what alice says now go elsewhere, and are answered 200.
    let swallow = Arc::new(Swallow(parking_lot::Mutex::new(Vec::new())));
    let router = bridge_matrix::appservice::router(
        swallow.clone(),
        bridge_tests::synapse::HS_TOKEN.to_owned(),
        1 << 20,
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", synapse.as_port))
        .await
        .expect("the appservice port is free");
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn({
        let stop = stop.clone();
        async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        }
    });
    for i in 0..LOST {
        alice
            .send(&room, &format!("never pushed {i}"))
            .await
            .expect("sent");
    }
    let last = format!("never pushed {}", LOST - 1);
    let swallowed = until(Duration::from_secs(60), async || {
        swallow.0.lock().contains(&last)
    })
    .await;
    assert!(swallowed, "the homeserver pushed alice's messages");
    stop.cancel();
    server.await.expect("join").expect("served");

    let (core, memory) = start_core(store.clone(), dir.path(), &synapse, &room).await;
    alice.send(&room, "after").await.expect("sent");
    memory_until(&memory, Duration::from_secs(60), |b| {
        b.iter().any(|b| b == "after")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let bodies = memory_bodies(&memory);
    assert_eq!(
        bodies,
        (0..LOST)
            .map(|i| format!("never pushed {i}"))
            .chain(["after".to_owned()])
            .collect::<Vec<_>>(),
        "each missed message once, in order, before the next one"
    );
    assert!(core.dead_letters().expect("dead letters").is_empty());
    core.shutdown().await;
}

/// A TCP proxy in front of the homeserver that the test can shut (connections refused, those
/// open cut) and open again.
async fn proxy(target: u16) -> (u16, tokio::sync::watch::Sender<bool>) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("proxy listens");
    let port = listener.local_addr().expect("proxy address").port();
    let (open, _) = tokio::sync::watch::channel(true);
    let watch = open.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let mut state = watch.subscribe();
            if !*state.borrow_and_update() {
                continue; // dropped: the connection is closed at once
            }
            tokio::spawn(async move {
                let Ok(mut server) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                else {
                    return;
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    _ = state.wait_for(|open| !*open) => {}
                }
            });
        }
    });
    (port, open)
}

/// A send that may have been stored without an answer (the connection lost, a homeserver
/// restarting: Synapse then forgets the transaction ID) is looked for in the room before it is
/// sent again. Here the bridge's send fails while the homeserver is cut off, and the event it
/// was sending is put in the room meanwhile, as a homeserver that stored it would have: when the
/// homeserver is back, the bridge finds it and does not send the message a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_stored_without_an_answer_is_not_sent_twice() {
    let _turn = TURN.lock().await;
    bridge_tests::log_to_test_output();
    let synapse = own_synapse(28400).await;
    let mut alice = MatrixHuman::start("alice", "alicepass", &synapse.url())
        .await
        .expect("alice logs in");
    let room = bridged_room(&mut alice, "lost-answer").await;
    let (proxy_port, open) = proxy(synapse.port).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).expect("store opens"));
    let matrix = appservice_adapter(
        dir.path(),
        &format!("http://127.0.0.1:{proxy_port}"),
        synapse.as_port,
    );
    let memory = MemoryAdapter::new(Capabilities::all());
    let handle = memory.handle();
    let core = Core::builder(store)
        .adapter("matrix", Arc::new(matrix))
        .adapter("memory", Arc::new(memory))
        .room(
            "lobby",
            RoomSettings::default(),
            vec![
                Link::new("matrix", room.as_str()),
                Link::new("memory", MEMORY_ROOM),
            ],
        )
        .start()
        .await
        .expect("core starts");
    let say = |id: &str, text: &str| {
        inbound(MEMORY_ROOM)
            .id(id)
            .from("carol")
            .named("Carol")
            .text(text)
    };
    // Carol's ghost exists and is in the room.
    handle
        .submit(say("first", "first"))
        .await
        .expect("submitted");
    alice
        .wait_timeline(|e| e["content"]["body"] == "first")
        .await
        .expect("alice sees carol");

    open.send_replace(false);
    let Submitted::Accepted(id) = handle
        .submit(say("once", "only once"))
        .await
        .expect("submitted")
    else {
        panic!("the message is accepted");
    };
    // Let the bridge's send fail at least once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    // What a homeserver that stored the send before losing its answer has.
    let ghost = "@_bridge_memory_carol:localhost";
    let url = format!(
        "{}/_matrix/client/v3/rooms/{}/send/m.room.message/stored-elsewhere?user_id={}",
        synapse.url(),
        room.replace('!', "%21").replace(':', "%3A"),
        ghost.replace('@', "%40").replace(':', "%3A"),
    );
    let answer = reqwest::Client::new()
        .put(url)
        .bearer_auth(bridge_tests::synapse::AS_TOKEN)
        .json(&json!({ "msgtype": "m.text", "body": "only once", "net.bridge.txn_id": id.to_string() }))
        .send()
        .await
        .expect("the homeserver answers");
    assert!(answer.status().is_success(), "{}", answer.status());
    open.send_replace(true);

    handle
        .submit(say("after", "after"))
        .await
        .expect("submitted");
    alice
        .next_event(
            |e| e["event"] == "timeline" && e["content"]["body"] == "after",
            Duration::from_secs(120),
        )
        .await
        .expect("alice sees the next message");
    let events = history(&mut alice, &room).await.expect("history");
    assert_eq!(
        bodies_with(&events, "only once").len(),
        1,
        "the message is in the room once"
    );
    assert!(core.dead_letters().expect("dead letters").is_empty());
    core.shutdown().await;
}

/// `bridge.toml` for the binary: the Matrix adapter and a line-chat server, linked in one
/// room.
fn bridge_config(dir: &std::path::Path, synapse: &Synapse, chat: &Server, room: &str) -> String {
    let config = format!(
        "[bridge]\ndata_dir = \"{}\"\nlog_level = \"info,bridge_matrix=debug\"\n\n\
         [[adapter]]\nid = \"matrix\"\ntype = \"matrix\"\n{}\n\
         [[adapter]]\nid = \"chat\"\ntype = \"linechat\"\nconnect = \"{}\"\n\n\
         [[room]]\nid = \"lobby\"\n\
         [[room.link]]\nadapter = \"matrix\"\nremote = \"{room}\"\n\
         [[room.link]]\nadapter = \"chat\"\nremote = \"lobby\"\n",
        dir.join("data").display(),
        appservice_settings(dir, &synapse.url(), synapse.as_port),
        chat.addr(),
    );
    let path = dir.join("bridge.toml");
    std::fs::write(&path, &config).expect("config written");
    path.display().to_string()
}

/// Polls until `done`, at most `limit` (for a hung run); returns whether it got there.
async fn until(limit: Duration, mut done: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !done().await {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    true
}

/// The last `n` lines of a log file.
fn tail(path: &std::path::Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_streams_both_ways_loses_and_duplicates_nothing() {
    const TO_MATRIX: usize = 1000;
    const TO_CHAT: usize = 200;
    let _turn = TURN.lock().await;
    let synapse = own_synapse(28200).await;
    let mut alice = MatrixHuman::start("alice", "alicepass", &synapse.url())
        .await
        .expect("alice logs in");
    let mut bob = MatrixHuman::start("bob", "bobpass", &synapse.url())
        .await
        .expect("bob logs in");
    let room = bridged_room(&mut alice, "sigkill").await;
    bob.join(&room).await.expect("bob joins");
    let chat = Server::bind("127.0.0.1:0").await.expect("line-chat server");
    let dir = tempfile::tempdir().expect("temp dir");
    let config = bridge_config(dir.path(), &synapse, &chat, &room);
    let config = std::path::Path::new(&config);
    let log = dir.path().join("bridge.log");

    let started = Instant::now();
    let mut bridge = BridgeProcess::start(config, &log).expect("bridge starts");
    alice
        .next_event(
            |e| {
                e["event"] == "timeline"
                    && e["type"] == "m.room.member"
                    && e["state_key"] == BOT
                    && e["content"]["membership"] == "join"
            },
            Duration::from_secs(60),
        )
        .await
        .expect("the bridge bot joins");
    // Everything from the line-chat side is posted at once: the server holds what the bridge
    // has not acknowledged, so all of it is in flight.
    for i in 0..TO_MATRIX {
        chat.post("lobby", "carol", None, &format!("from chat {i}"));
    }
    // Bob talks from Matrix in bursts, each running through a kill: paced sends from a task.
    let bob_says = |mut bob: MatrixHuman, range: std::ops::Range<usize>| {
        let room = room.clone();
        tokio::spawn(async move {
            for i in range {
                bob.send(&room, &format!("from matrix {i}"))
                    .await
                    .expect("bob sends");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            bob
        })
    };
    let chat_count = |chat: &Server| {
        let texts: Vec<String> = chat
            .from_bridge("lobby")
            .into_iter()
            .map(|m| m.text)
            .collect();
        count_sequence(&texts, "from matrix ", TO_CHAT)
    };
    const BURST: usize = TO_CHAT * 2 / 5;
    let mut kills = 0;
    // What alice's client has synced so far (only to pick the moments to kill: the counts come
    // from the room's history).
    let mut synced = 0;
    for threshold in [TO_MATRIX / 4, TO_MATRIX / 2 + TO_MATRIX / 5] {
        let got_there = until(Duration::from_secs(180), async || {
            synced += alice
                .drain()
                .iter()
                .filter(|e| {
                    e["event"] == "timeline"
                        && e["content"]["body"]
                            .as_str()
                            .is_some_and(|b| b.starts_with("from chat "))
                })
                .count();
            synced >= threshold
        })
        .await;
        assert!(
            got_there,
            "only {synced} of {TO_MATRIX} messages reached the Matrix room; the bridge's log:\n{}",
            tail(&log, 40)
        );
        // Bob's burst is flowing through the bridge when it dies, and goes on while no bridge
        // runs.
        let first = kills * BURST;
        let talking = bob_says(bob, first..first + BURST);
        let got_there = until(Duration::from_secs(120), async || {
            chat_count(&chat).delivered >= first + BURST / 4
        })
        .await;
        assert!(
            got_there,
            "bob's burst does not reach line-chat ({:?}); the bridge's log:\n{}",
            chat_count(&chat),
            tail(&log, 40)
        );
        bridge.kill9().await.expect("SIGKILL");
        kills += 1;
        let events = history(&mut alice, &room).await.expect("history");
        println!(
            "SIGKILL {kills}: {} of {TO_MATRIX} in the Matrix room, {} of {TO_CHAT} on the \
             line-chat side",
            bodies_with(&events, "from chat ").len(),
            chat_count(&chat).delivered
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        bridge = BridgeProcess::start(config, &log).expect("bridge restarts");
        bob = talking.await.expect("bob's task");
    }
    let bob = bob_says(bob, kills * BURST..TO_CHAT)
        .await
        .expect("bob's task");
    // Until everything arrived both ways (or nothing more does, for a long while: the counts
    // below tell what is missing).
    let mut last = (0, 0);
    let mut progress = Instant::now();
    loop {
        let events = history(&mut alice, &room).await.expect("history");
        let now = (
            bodies_with(&events, "from chat ").len(),
            chat_count(&chat).delivered,
        );
        if now.0 >= TO_MATRIX && now.1 >= TO_CHAT {
            break;
        }
        if now != last {
            last = now;
            progress = Instant::now();
        } else if progress.elapsed() > Duration::from_secs(120) {
            println!(
                "stuck at {now:?}; the bridge's log:\n{}\nSynapse's log:\n{}",
                tail(&log, 60),
                tail(&synapse.log_path(), 60)
            );
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let elapsed = started.elapsed();
    // Anything that would be a late duplicate has time to arrive, then a clean stop.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(bridge.terminate().await.expect("SIGTERM"), "clean exit");
    let events = history(&mut alice, &room).await.expect("history");
    let to_matrix = bodies_with(&events, "from chat ");
    let matrix = count_sequence(&to_matrix, "from chat ", TO_MATRIX);
    let chat_texts: Vec<String> = chat
        .from_bridge("lobby")
        .into_iter()
        .map(|m| m.text)
        .collect();
    let to_chat = count_sequence(&chat_texts, "from matrix ", TO_CHAT);
    // Transactions the bridge refused for a gap in Synapse's numbering (a transaction Synapse
    // stranded as it left recovery mode; see bridge-matrix's GapCheck).
    let gaps = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .matches("never arrived")
        .count();
    println!(
        "{kills} SIGKILLs in {:.1} s: line-chat → Matrix ({TO_MATRIX} sent): {matrix}; \
         Matrix → line-chat ({TO_CHAT} sent): {to_chat}; resends answered idempotently by the \
         line-chat server: {}; transactions refused for a gap: {gaps}",
        elapsed.as_secs_f64(),
        chat.duplicate_sends()
    );
    assert_eq!(matrix.lost, 0);
    assert_eq!(matrix.duplicated, 0, "{to_matrix:?}");
    assert_eq!(matrix.out_of_order, 0, "{to_matrix:?}");
    assert_eq!(to_chat.lost, 0);
    assert_eq!(to_chat.duplicated, 0, "{chat_texts:?}");
    assert_eq!(to_chat.out_of_order, 0, "{chat_texts:?}");
    // Each from the right ghost, and nothing echoed back to where it came from.
    let senders: std::collections::BTreeSet<&str> = events
        .iter()
        .filter(|e| {
            e["content"]["body"]
                .as_str()
                .is_some_and(|b| b.starts_with("from chat "))
        })
        .filter_map(|e| e["sender"].as_str())
        .collect();
    assert_eq!(
        senders.into_iter().collect::<Vec<_>>(),
        ["@_bridge_chat_carol:localhost"]
    );
    assert!(
        chat_texts.iter().all(|t| t.starts_with("from matrix ")),
        "only bob's messages cross to line-chat: {:?}",
        chat_texts
            .iter()
            .filter(|t| !t.starts_with("from matrix "))
            .take(5)
            .collect::<Vec<_>>()
    );
    assert_eq!(chat.unacked("bridge"), 0, "everything acknowledged");
    let _ = bob.quit().await;
}
