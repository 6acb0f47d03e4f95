//! The linechat adapter against its server, a misbehaving fake server, and bad settings.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bridge_core::testkit::{MemoryAdapter, MemoryHandle, inbound};
use bridge_core::{
    Adapter, AdapterError, AdapterFactory, AdapterId, Capabilities, Core, DeliverySettings,
    EventId, EventKind, Link, MemoryStore, MessageContent, MsgType, OutboundEvent, RemoteEventId,
    RoomId, RoomSettings, Sender, Submitted,
};
use bridge_example_linechat::server::Server;
use bridge_example_linechat::{LinechatAdapter, LinechatFactory};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::net::tcp::OwnedWriteHalf;

const WAIT: Duration = Duration::from_secs(20);

/// A core linking linechat room `lobby` with memory room `mem-room`.
async fn bridge(adapter: Arc<dyn Adapter>) -> (Core, MemoryHandle) {
    let memory = MemoryAdapter::new(Capabilities::all());
    let handle = memory.handle();
    let settings = DeliverySettings {
        max_attempts: 1000,
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(200),
        queue_capacity: 1024,
    };
    let core = Core::builder(Arc::new(MemoryStore::new()))
        .settings(settings)
        .adapter("chat", adapter)
        .adapter("mem", Arc::new(memory))
        .room(
            "lobby",
            RoomSettings::default(),
            vec![Link::new("chat", "lobby"), Link::new("mem", "mem-room")],
        )
        .start()
        .await
        .expect("core starts");
    handle.context().await;
    (core, handle)
}

fn bodies(memory: &MemoryHandle) -> Vec<String> {
    let sent = memory.sent().into_iter();
    sent.filter_map(|e| match e.kind {
        EventKind::Message { content, .. } => Some(content.text.body().to_owned()),
        _ => None,
    })
    .collect()
}

/// Polls `check` until it holds or [`WAIT`] passes.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn outbound(id: u128, room: &str, kind: EventKind<RemoteEventId>) -> OutboundEvent {
    OutboundEvent {
        id: EventId::from_u128(id),
        neutral_room: RoomId::new("lobby"),
        room: room.into(),
        sender: Sender {
            adapter: AdapterId::new("mem"),
            user: "bob smith".into(),
            display_name: None,
            avatar: None,
        },
        ts: 0,
        kind,
        degraded: false,
        moderated: false,
    }
}

fn text(body: &str) -> EventKind<RemoteEventId> {
    EventKind::Message {
        content: MessageContent::text(body),
        reply_to: None,
        thread: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_restarts_and_dropped_connections_lose_and_duplicate_nothing() {
    let server = Arc::new(Server::bind("127.0.0.1:0").await.expect("binds"));
    let adapter = LinechatAdapter::new(server.addr(), "bridge");
    let adapter = Arc::new(adapter);
    let (core, memory) = bridge(adapter.clone()).await;

    const N: usize = 2000;
    let far: Vec<String> = (0..N).map(|i| format!("far {i}")).collect();
    let near: Vec<String> = (0..N).map(|i| format!("near {i}")).collect();
    // Humans post on the far side while the memory side talks, in both directions at once.
    let poster = {
        let (server, far) = (server.clone(), far.clone());
        tokio::spawn(async move {
            for (i, body) in far.iter().enumerate() {
                server.post("lobby", "alice", None, body);
                if i % 20 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        })
    };
    let talker = {
        let (memory, near) = (memory.clone(), near.clone());
        tokio::spawn(async move {
            for (i, body) in near.iter().enumerate() {
                let event = inbound("mem-room").id(&format!("n{i}")).from("bob");
                let submitted = memory.submit(event.text(body)).await;
                assert!(matches!(submitted, Ok(Submitted::Accepted(_))));
            }
        })
    };
    // Meanwhile the server goes down twice (restarting with its log) and kicks the bridge once.
    for round in 0..6 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if round % 2 == 1 {
            server.disconnect("bridge");
        } else {
            server.shutdown().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            server.resume().await.expect("rebinds the same port");
        }
    }
    poster.await.expect("poster");
    talker.await.expect("talker");

    // Far → memory: each message exactly once, in order.
    eventually("far messages reach the memory side", || {
        bodies(&memory)
            .iter()
            .filter(|b| b.starts_with("far"))
            .count()
            >= N
    })
    .await;
    // Memory → far: each message created exactly once, in order, whatever the retries.
    eventually("memory messages reach the far side", || {
        server.from_bridge("lobby").len() >= N
    })
    .await;
    eventually("everything acknowledged", || server.unacked("bridge") == 0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let got: Vec<String> = bodies(&memory);
    assert_eq!(
        got, far,
        "far messages exactly once, in order, and no echoes"
    );
    let sent: Vec<String> = server
        .from_bridge("lobby")
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(sent, near, "memory messages exactly once, in order");
    assert!(
        server
            .from_bridge("lobby")
            .iter()
            .all(|m| m.sender == "mem.bob")
    );
    assert_eq!(adapter.malformed_lines(), 0);
    println!(
        "duplicate sends absorbed by txn: {}",
        server.duplicate_sends()
    );
    core.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retries_reuse_the_txn_and_redeliveries_and_echoes_are_not_bridged() {
    let (listener, addr) = fake_server().await;
    let (core, memory) = bridge(Arc::new(LinechatAdapter::new(addr, "bridge"))).await;
    // A human's event, acknowledged once durable.
    let (mut lines, mut writer) = accept_client(&listener).await;
    writer
        .write_all(b"EVENT 1 lobby alice - hello\n")
        .await
        .expect("writes");
    assert_eq!(next_line(&mut lines).await, "ACK 1");
    // The memory side says something; the server takes the SEND but never answers.
    let event = inbound("mem-room").id("n0").from("bob").text("near 0");
    memory.submit(event).await.expect("submitted");
    let first = next_line(&mut lines).await;
    assert!(
        first.starts_with("SEND ") && first.ends_with(" lobby mem.bob - near 0"),
        "{first}"
    );
    drop((lines, writer));

    // After the reconnect, the core retries with the same transaction ID, and the server sends
    // again what it thinks unacknowledged: the human's event and the echo of our SEND.
    let (mut lines, mut writer) = accept_client(&listener).await;
    assert_eq!(
        next_line(&mut lines).await,
        first,
        "a retry repeats the txn"
    );
    let txn = first.split(' ').nth(1).expect("a txn");
    let replay =
        format!("OK {txn} 2\nEVENT 1 lobby alice - hello\nEVENT 2 lobby mem.bob - near 0\n");
    writer.write_all(replay.as_bytes()).await.expect("writes");
    let mut acks = vec![next_line(&mut lines).await, next_line(&mut lines).await];
    acks.sort();
    assert_eq!(
        acks,
        ["ACK 1", "ACK 2"],
        "duplicates and echoes are acknowledged too"
    );

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(bodies(&memory), ["hello"], "once, and no echo");
    core.shutdown().await;
}

type Lines = tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>;

/// The next line the adapter wrote to a fake server.
async fn next_line(lines: &mut Lines) -> String {
    let line = tokio::time::timeout(WAIT, lines.next_line()).await;
    line.expect("a line in time")
        .expect("reads")
        .expect("not closed")
}

/// A fake server that says whatever the test wants.
async fn fake_server() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("addr");
    (listener, addr)
}

/// Accepts the adapter's connection on the fake server, checks its `HELLO` and welcomes it.
async fn accept_client(listener: &TcpListener) -> (Lines, OwnedWriteHalf) {
    let (stream, _) = tokio::time::timeout(WAIT, listener.accept())
        .await
        .expect("the adapter connects")
        .expect("accept");
    let (reader, mut writer) = stream.into_split();
    let mut lines = BufReader::new(reader).lines();
    let hello = lines.next_line().await.expect("reads");
    assert_eq!(hello.as_deref(), Some("HELLO bridge"));
    writer.write_all(b"WELCOME\n").await.expect("writes");
    (lines, writer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_lines_from_the_server_are_counted_and_skipped() {
    let (listener, addr) = fake_server().await;
    let adapter = Arc::new(LinechatAdapter::new(addr, "bridge"));
    let (core, memory) = bridge(adapter.clone()).await;
    let (mut lines, mut writer) = accept_client(&listener).await;

    let garbage: &[&[u8]] = &[
        b"GARBAGE\n",
        b"EVENT x lobby alice - not a number\n",
        b"EVENT 1 lobby\n",
        b"\xff\xfe not UTF-8\n",
        b"EVENT 2 lob by alice - the sender is not a word\n",
        b"OK\n",
        b"EVENT 3 lobby alice 9x bad reply\n",
        b"\n",
    ];
    for line in garbage {
        writer.write_all(line).await.expect("writes");
    }
    writer
        .write_all(b"ERR the server may complain\n")
        .await
        .expect("writes");
    writer
        .write_all(
            b"EVENT 4 lobby alice - first\\nsecond \\\\ back\nEVENT 5 lobby bob 4 /me waves\n",
        )
        .await
        .expect("writes");

    // The good events still come through, unescaped, with their reply and emote.
    let sent = memory.wait_sent(2, WAIT).await;
    assert_eq!(sent.len(), 2);
    let EventKind::Message { content, .. } = &sent[0].kind else {
        panic!("not a message: {sent:?}");
    };
    assert_eq!(content.text.body(), "first\nsecond \\ back");
    let EventKind::Message {
        content, reply_to, ..
    } = &sent[1].kind
    else {
        panic!("not a message: {sent:?}");
    };
    assert_eq!(
        (content.text.body(), content.msgtype),
        ("waves", MsgType::Emote)
    );
    assert_eq!(
        reply_to,
        &memory.native_id_of(sent[0].id),
        "the reply is mapped"
    );
    assert_eq!(adapter.malformed_lines(), garbage.len() as u64);

    // Both are acknowledged (in any order) once durable.
    let mut acks = Vec::new();
    while acks.len() < 2 {
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("acks");
        acks.push(line.expect("reads").expect("a line"));
    }
    acks.sort();
    assert_eq!(acks, ["ACK 4", "ACK 5"]);
    core.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sends_fail_fast_when_the_connection_drops_and_when_disconnected() {
    let (listener, addr) = fake_server().await;
    let adapter = Arc::new(LinechatAdapter::new(addr, "bridge"));
    // Before `run`, nothing can be sent.
    let early = adapter.send(outbound(1, "lobby", text("hi"))).await;
    assert!(
        matches!(early, Err(AdapterError::Transient { .. })),
        "{early:?}"
    );
    // Kinds other than messages are for the core to degrade.
    let reaction = EventKind::Reaction {
        target: RemoteEventId::new("1"),
        key: "👍".into(),
    };
    let refused = adapter.send(outbound(2, "lobby", reaction)).await;
    assert!(
        matches!(refused, Err(AdapterError::Unsupported(_))),
        "{refused:?}"
    );
    let bad_room = adapter.send(outbound(3, "two words", text("hi"))).await;
    assert!(
        matches!(bad_room, Err(AdapterError::Permanent(_))),
        "{bad_room:?}"
    );

    let (core, _memory) = bridge(adapter.clone()).await;
    let (mut lines, mut writer) = accept_client(&listener).await;

    // A reply, an emote: the SEND line carries the reply seq, the puppet and the escaped text.
    let id = EventId::from_u128(0x0123_4567_89ab_cdef);
    let reply = EventKind::Message {
        content: MessageContent {
            msgtype: MsgType::Emote,
            ..MessageContent::text("waves\nback")
        },
        reply_to: Some(RemoteEventId::new("7")),
        thread: None,
    };
    let adapter2 = adapter.clone();
    let sending = tokio::spawn(async move {
        adapter2
            .send(outbound(0x0123_4567_89ab_cdef, "lobby", reply))
            .await
    });
    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("a SEND");
    let want = format!("SEND {id} lobby mem.bob_smith 7 /me waves\\nback");
    assert_eq!(line.expect("reads").as_deref(), Some(want.as_str()));
    writer
        .write_all(format!("OK {id} 42\n").as_bytes())
        .await
        .expect("writes");
    let delivered = sending.await.expect("joins").expect("delivered");
    assert_eq!(delivered.native_id, Some(RemoteEventId::new("42")));
    assert_eq!(
        delivered.puppet.as_ref().map(|p| p.as_str()),
        Some("mem.bob_smith")
    );

    // The next send is pending when the connection drops: it fails at once, not after 10 s.
    let adapter2 = adapter.clone();
    let sending =
        tokio::spawn(async move { adapter2.send(outbound(9, "lobby", text("lost"))).await });
    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("a SEND");
    assert!(line.expect("reads").is_some_and(|l| l.starts_with("SEND ")));
    let started = tokio::time::Instant::now();
    drop((lines, writer));
    let failed = sending.await.expect("joins");
    assert!(
        matches!(failed, Err(AdapterError::Transient { .. })),
        "{failed:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // And it reconnects by itself.
    let again = tokio::time::timeout(WAIT, listener.accept()).await;
    assert!(matches!(again, Ok(Ok(_))), "the adapter reconnects");
    core.shutdown().await;
}

fn settings(toml: &str) -> toml::Table {
    toml.parse().expect("valid TOML")
}

fn paths(toml: &str) -> Vec<String> {
    let issues = LinechatFactory.validate(&settings(toml));
    let mut paths: Vec<String> = issues.into_iter().map(|i| i.path).collect();
    paths.sort();
    paths
}

#[test]
fn factory_validates_every_setting_without_io() {
    let factory = LinechatFactory;
    assert_eq!(factory.type_name(), "linechat");
    assert!(paths("connect = \"127.0.0.1:7070\"").is_empty());
    assert!(paths("connect = \"[::1]:7070\"\nname = \"bridge-b_2\"").is_empty());
    assert_eq!(paths(""), ["connect"]);
    assert_eq!(paths("connect = \"nowhere\""), ["connect"]);
    assert_eq!(
        paths("connect = \"example.org:7070\""),
        ["connect"],
        "no DNS lookups"
    );
    assert_eq!(paths("connect = 7070"), ["connect"]);
    assert_eq!(paths("connect = \"127.0.0.1:1\"\nname = \"\""), ["name"]);
    let long = "x".repeat(33);
    assert_eq!(
        paths(&format!("connect = \"127.0.0.1:1\"\nname = \"{long}\"")),
        ["name"]
    );
    assert!(
        paths(&format!(
            "connect = \"127.0.0.1:1\"\nname = \"{}\"",
            "x".repeat(32)
        ))
        .is_empty()
    );
    assert_eq!(paths("connect = \"127.0.0.1:1\"\nname = 3"), ["name"]);
    assert_eq!(
        paths("conect = \"127.0.0.1:1\"\nname = \"Bad Name\"\npassword = \"x\""),
        ["conect", "connect", "name", "password"],
        "every problem is reported"
    );
    let issues = factory.validate(&settings("conect = 1"));
    assert!(issues.iter().all(|i| !i.message.is_empty()));

    let id = AdapterId::new("chat-a");
    assert!(
        factory
            .build(id.clone(), &settings("connect = \"127.0.0.1:7070\""))
            .is_ok()
    );
    let bad = factory.build(id, &settings("name = \"x\""));
    assert!(matches!(bad, Err(AdapterError::Permanent(_))));
}

#[test]
fn capabilities_are_plain_text_and_replies() {
    let adapter = LinechatAdapter::new(SocketAddr::from(([127, 0, 0, 1], 1)), "bridge");
    let caps = adapter.capabilities();
    let mut want = Capabilities::text_only();
    want.replies = true;
    assert_eq!(caps, want);
}

#[test]
fn the_showcase_stays_small() {
    let lines = include_str!("../src/lib.rs").lines().count();
    assert!(
        lines < 300,
        "src/lib.rs has {lines} lines; keep it under 300"
    );
}
