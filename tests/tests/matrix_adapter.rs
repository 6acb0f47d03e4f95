//! The Matrix adapter in appservice mode against the Synapse that scripts/test.sh starts, with a
//! real third-party client (matrix-nio, through `MatrixHuman`) as the human in the room and the
//! core's in-memory adapter as the far side of the link.
//!
//! Each assertion checks what the other side actually received: the event matrix-nio synced,
//! or the event the memory adapter was asked to deliver.

use std::sync::Arc;
use std::time::Duration;

use bridge_core::testkit::{MemoryAdapter, MemoryHandle, inbound};
use bridge_core::{
    AdapterId, Attachment, Capabilities, Core, EventKind, Link, MessageContent, MsgType,
    OutboundEvent, RichText, RoomSettings, SledStore, Store,
};
use bridge_matrix::AppserviceAdapter;
use bridge_tests::far::{body_of, serve_file};
use bridge_tests::matrix_human::MatrixHuman;
use bridge_tests::{fresh, test_env};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(15);
const MEMORY_ROOM: &str = "memory-room";
const BOT: &str = "@_bridge_bot:localhost";

/// Synapse pushes to one appservice URL: the tests of this file take turns.
static APPSERVICE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The registration Synapse was given (tests/servers/appservice.yaml), written for the bridge.
fn registration_file(dir: &std::path::Path) -> std::path::PathBuf {
    let template =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("servers/appservice.yaml");
    let text = std::fs::read_to_string(template)
        .expect("registration template")
        .replace("@AS_PORT@", &test_env("BRIDGE_TEST_AS_PORT"));
    let path = dir.join("registration.yaml");
    std::fs::write(&path, text).expect("registration written");
    path
}

fn adapter(dir: &std::path::Path) -> AppserviceAdapter {
    let text = format!(
        "mode = 'appservice'\nhomeserver = '{}'\nserver_name = 'localhost'\n\
         registration = '{}'\nlisten = '127.0.0.1:{}'\nportals = true",
        test_env("BRIDGE_TEST_SYNAPSE_URL"),
        registration_file(dir).display(),
        test_env("BRIDGE_TEST_AS_PORT"),
    );
    let table: toml::Table = text.parse().expect("settings parse");
    let settings = bridge_matrix::settings::parse(&table, true).expect("valid settings");
    let registration =
        bridge_matrix::registration::load(&registration_file(dir)).expect("registration loads");
    AppserviceAdapter::new(AdapterId::new("matrix"), settings, registration).expect("adapter")
}

struct Rig {
    _turn: tokio::sync::MutexGuard<'static, ()>,
    core: Core,
    memory: MemoryHandle,
    room: String,
    alice: MatrixHuman,
    _dir: tempfile::TempDir,
}

/// Alice creates a public room with the bridge bot invited; the core links it with the memory
/// adapter's room; returns once the bot has joined.
async fn rig(test: &str) -> Rig {
    rig_linked(test, false).await
}

/// Like [`rig`], the room linked by its alias (`#<test>-…:localhost`) when `by_alias`.
async fn rig_linked(test: &str, by_alias: bool) -> Rig {
    let turn = APPSERVICE.lock().await;
    bridge_tests::log_to_test_output();
    let hs = test_env("BRIDGE_TEST_SYNAPSE_URL");
    let mut alice = MatrixHuman::start("alice", "alicepass", &hs)
        .await
        .expect("alice logs in");
    let name = fresh(test);
    let room = alice
        .create_room_with(json!({
            "name": name, "public": true, "invite": [BOT], "alias_localpart": name,
            // The bridge bot moderates: topics and deletions by people of the far side.
            "power_level_override": { "users": { BOT: 100 } },
        }))
        .await
        .expect("room created");
    let dir = tempfile::tempdir().expect("temp dir");
    let linked = if by_alias {
        format!("#{name}:localhost")
    } else {
        room.clone()
    };
    let (core, handle) = start_core(dir.path(), &linked).await;
    joined(&mut alice, &room, BOT, "the bridge bot joins the room").await;
    // Synapse may still be retrying pushes that failed while no bridge listened (it backs off
    // for seconds): typing and receipts are not queued during that time, so wait until a
    // message crosses.
    alice.send(&room, "warm-up").await.expect("sent");
    delivered(&handle, |e| body_of(e) == Some("warm-up")).await;
    Rig {
        _turn: turn,
        core,
        memory: handle,
        room,
        alice,
        _dir: dir,
    }
}

/// A core over the store in `dir` linking `linked` (a room ID or alias) with the memory
/// adapter's room.
async fn start_core(dir: &std::path::Path, linked: &str) -> (Core, MemoryHandle) {
    let links = vec![
        Link::new("matrix", linked),
        Link::new("memory", MEMORY_ROOM),
    ];
    start_core_linking(dir, links).await
}

/// A core over the store in `dir` whose configured room has `links`.
async fn start_core_linking(dir: &std::path::Path, links: Vec<Link>) -> (Core, MemoryHandle) {
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir).expect("store opens"));
    let matrix = adapter(dir);
    let memory = MemoryAdapter::new(Capabilities::all());
    let handle = memory.handle();
    let core = Core::builder(store)
        .adapter("matrix", Arc::new(matrix))
        .adapter("memory", Arc::new(memory))
        .room("lobby", RoomSettings::default(), links)
        .start()
        .await
        .expect("core starts");
    (core, handle)
}

/// The first event delivered to the memory side that `pick` accepts, within [`WAIT`].
async fn delivered(
    memory: &MemoryHandle,
    pick: impl FnMut(&OutboundEvent) -> bool,
) -> OutboundEvent {
    bridge_tests::far::delivered(memory, WAIT, pick).await
}

/// Waits until `user` joined `room`, as `human` sees it.
async fn joined(human: &mut MatrixHuman, room: &str, user: &str, what: &str) {
    human
        .wait_timeline(|e| {
            e["room_id"] == room
                && e["type"] == "m.room.member"
                && e["state_key"] == user
                && e["content"]["membership"] == "join"
        })
        .await
        .expect(what);
}

/// Carol says `text` in `far_room` of the memory side; it must reach Alice in `room`, from
/// Carol's ghost.
async fn carol_answers(rig: &mut Rig, far_room: &str, text: &str, room: &str) {
    rig.memory
        .submit(
            inbound(far_room)
                .id(&fresh("answer"))
                .from("carol")
                .named("Carol")
                .text(text),
        )
        .await
        .expect("submitted");
    let answer = rig
        .alice
        .wait_timeline(|e| e["room_id"] == room && e["content"]["body"] == text)
        .await
        .expect("the answer arrives in the room");
    assert_eq!(answer["sender"], ghost("carol").as_str());
}

/// `human` turns end-to-end encryption on in `room` (what clients do: `m.room.encryption`).
async fn encryption_on(human: &mut MatrixHuman, room: &str) {
    human
        .send_state(
            room,
            "m.room.encryption",
            "",
            json!({ "algorithm": "m.megolm.v1.aes-sha2" }),
        )
        .await
        .expect("encryption on");
}

/// `human` opens a direct conversation with `ghost`; returns its room ID once the ghost joined.
async fn direct_with(human: &mut MatrixHuman, ghost: &str) -> String {
    let dm = human
        .create_room_with(json!({ "invite": [ghost], "direct": true }))
        .await
        .expect("direct room created");
    joined(human, &dm, ghost, "the ghost accepts the invite").await;
    dm
}

/// The ghost of a memory-side user.
fn ghost(user: &str) -> String {
    format!("@_bridge_memory_{user}:localhost")
}

/// The native ID the memory adapter's copy of a Matrix event got (the memory adapter names
/// its copies after the neutral event).
async fn memory_id(memory: &MemoryHandle, event: &OutboundEvent) -> String {
    tokio::time::sleep(Duration::from_millis(100)).await;
    memory
        .native_id_of(event.id)
        .expect("the memory copy has a native ID")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_crosses_both_ways_with_names_and_formatting() {
    let mut rig = rig("text").await;
    rig.alice.displayname("Alice A.").await.expect("name set");
    // The homeserver updates her member event in each room after answering: the name holds in
    // the room from that event on.
    let room = rig.room.clone();
    rig.alice
        .wait_timeline(|e| {
            e["room_id"] == room.as_str()
                && e["type"] == "m.room.member"
                && e["content"]["displayname"] == "Alice A."
        })
        .await
        .expect("the room sees the new name");
    rig.alice
        .send_html(
            &rig.room,
            "hello **bridge**",
            "hello <strong>bridge</strong>",
        )
        .await
        .expect("sent");
    let got = delivered(&rig.memory, |e| body_of(e) == Some("hello bridge")).await;
    assert_eq!(body_of(&got), Some("hello bridge"));
    assert_eq!(got.sender.user.as_str(), "@alice:localhost");
    assert_eq!(got.sender.display_name.as_deref(), Some("Alice A."));
    let EventKind::Message { content, .. } = &got.kind else {
        panic!("a message: {got:?}");
    };
    assert!(content.text.is_formatted(), "formatting kept: {content:?}");

    // The other way: carol on the memory side appears as her own ghost, with her name.
    let mut msg = inbound(MEMORY_ROOM)
        .id("m1")
        .from("carol")
        .named("Carol C.")
        .text("hi alice");
    if let EventKind::Message { content, .. } = &mut msg.kind {
        content.text = RichText::from_markdown("hi *alice*");
    }
    rig.memory.submit(msg).await.expect("submitted");
    let seen = rig
        .alice
        .wait_timeline(|e| e["type"] == "m.room.message" && e["sender"] == ghost("carol").as_str())
        .await
        .expect("alice sees carol's ghost");
    assert_eq!(seen["content"]["body"], "hi alice");
    assert_eq!(seen["content"]["format"], "org.matrix.custom.html");
    assert!(
        seen["content"]["formatted_body"]
            .as_str()
            .is_some_and(|h| h.contains("<em>alice</em>")),
        "{seen}"
    );
    let members = rig.alice.members(&rig.room).await.expect("members");
    assert!(
        members.to_string().contains("Carol C."),
        "the ghost is named after carol: {members}"
    );
    // Nothing of the ghost's came back to the memory side (no echo).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        rig.memory
            .sent()
            .iter()
            .all(|e| !e.sender.user.as_str().starts_with("@_bridge_")),
        "an echo was bridged: {:?}",
        rig.memory.sent()
    );
    rig.core.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_replies_reactions_and_redactions_cross_both_ways() {
    let mut rig = rig("relations").await;
    // Matrix → memory.
    let original = rig
        .alice
        .send(&rig.room, "first version")
        .await
        .expect("sent");
    let first = delivered(&rig.memory, |e| body_of(e) == Some("first version")).await;
    rig.alice
        .edit(&rig.room, &original, "second version")
        .await
        .expect("edit");
    let edit = delivered(
        &rig.memory,
        |e| matches!(&e.kind, EventKind::Edit { new, .. } if new.text.body() == "second version"),
    )
    .await;
    let first_id = memory_id(&rig.memory, &first).await;
    let EventKind::Edit { target, .. } = &edit.kind else {
        unreachable!()
    };
    assert_eq!(target.as_str(), first_id);
    let reply = rig
        .alice
        .reply(&rig.room, &original, "an answer")
        .await
        .expect("reply");
    let got = delivered(&rig.memory, |e| {
        matches!(
            &e.kind,
            EventKind::Message {
                reply_to: Some(_),
                ..
            }
        )
    })
    .await;
    assert_eq!(
        body_of(&got),
        Some("an answer"),
        "the reply fallback is cut"
    );
    let _ = reply;
    let reaction = rig
        .alice
        .react(&rig.room, &original, "👍")
        .await
        .expect("react");
    let react = delivered(
        &rig.memory,
        |e| matches!(&e.kind, EventKind::Reaction { key, .. } if key == "👍"),
    )
    .await;
    assert!(
        matches!(&react.kind, EventKind::Reaction { target, .. } if target.as_str() == first_id)
    );
    rig.alice
        .redact(&rig.room, &reaction, None)
        .await
        .expect("unreact");
    delivered(
        &rig.memory,
        |e| matches!(&e.kind, EventKind::Unreact { key, .. } if key == "👍"),
    )
    .await;
    rig.alice
        .redact(&rig.room, &original, Some("oops"))
        .await
        .expect("redact");
    delivered(&rig.memory, |e| {
        matches!(&e.kind, EventKind::Redaction { .. })
    })
    .await;

    // memory → Matrix.
    rig.memory
        .submit(
            inbound(MEMORY_ROOM)
                .id("c1")
                .from("carol")
                .named("Carol")
                .text("carol's first"),
        )
        .await
        .expect("submitted");
    let c1 = rig
        .alice
        .wait_timeline(|e| e["content"]["body"] == "carol's first")
        .await
        .expect("seen");
    let c1_id = c1["event_id"].as_str().expect("event id").to_owned();
    rig.memory
        .submit(
            inbound(MEMORY_ROOM)
                .id("c2")
                .from("carol")
                .named("Carol")
                .edit("c1", "carol's second"),
        )
        .await
        .expect("submitted");
    let edit = rig
        .alice
        .wait_timeline(|e| {
            e["content"]["m.relates_to"]["rel_type"] == "m.replace"
                && e["sender"] == ghost("carol").as_str()
        })
        .await
        .expect("edit seen");
    assert_eq!(edit["content"]["m.relates_to"]["event_id"], c1_id.as_str());
    assert_eq!(edit["content"]["m.new_content"]["body"], "carol's second");
    assert_eq!(edit["sender"], ghost("carol").as_str());
    rig.memory
        .submit(
            inbound(MEMORY_ROOM)
                .id("c3")
                .from("carol")
                .named("Carol")
                .reply("c1", "to myself"),
        )
        .await
        .expect("submitted");
    let reply = rig
        .alice
        .wait_timeline(|e| e["content"]["body"] == "to myself")
        .await
        .expect("reply seen");
    assert_eq!(
        reply["content"]["m.relates_to"]["m.in_reply_to"]["event_id"],
        c1_id.as_str()
    );
    rig.memory
        .submit(
            inbound(MEMORY_ROOM)
                .id("c4")
                .from("dave")
                .named("Dave")
                .react("c1", "🎉"),
        )
        .await
        .expect("submitted");
    let reaction = rig
        .alice
        .wait_timeline(|e| e["type"] == "m.reaction" && e["sender"] == ghost("dave").as_str())
        .await
        .expect("reaction seen");
    assert_eq!(reaction["content"]["m.relates_to"]["key"], "🎉");
    assert_eq!(
        reaction["content"]["m.relates_to"]["event_id"],
        c1_id.as_str()
    );
    assert_eq!(reaction["sender"], ghost("dave").as_str());
    rig.memory
        .submit(
            inbound(MEMORY_ROOM)
                .id("c5")
                .from("dave")
                .named("Dave")
                .unreact("c1", "🎉"),
        )
        .await
        .expect("submitted");
    let reaction_id = reaction["event_id"].as_str().expect("id").to_owned();
    rig.alice
        .wait_timeline(|e| e["type"] == "m.room.redaction" && e["redacts"] == reaction_id.as_str())
        .await
        .expect("the reaction is redacted");
    rig.memory
        .submit(
            inbound(MEMORY_ROOM)
                .id("c6")
                .from("carol")
                .named("Carol")
                .redact("c1"),
        )
        .await
        .expect("submitted");
    rig.alice
        .wait_timeline(|e| e["type"] == "m.room.redaction" && e["redacts"] == c1_id.as_str())
        .await
        .expect("carol's message is redacted");
    rig.core.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_receipts_topic_and_names_cross() {
    let mut rig = rig("ephemeral").await;
    // A message first, so that carol's ghost is in the room and there is something to read.
    rig.memory
        .submit(
            inbound(MEMORY_ROOM)
                .id("t1")
                .from("carol")
                .named("Carol")
                .text("ping"),
        )
        .await
        .expect("submitted");
    let ping = rig
        .alice
        .wait_timeline(|e| e["content"]["body"] == "ping")
        .await
        .expect("seen");
    rig.memory
        .submit(inbound(MEMORY_ROOM).from("carol").typing(true))
        .await
        .expect("submitted");
    rig.alice
        .wait_ephemeral(|e| {
            e["type"] == "m.typing"
                && e["content"]["user_ids"]
                    .as_array()
                    .is_some_and(|u| u.iter().any(|u| u == ghost("carol").as_str()))
        })
        .await
        .expect("alice sees carol typing");
    // Matrix → memory: alice types and reads.
    rig.alice.typing(&rig.room, true).await.expect("typing");
    delivered(&rig.memory, |e| {
        matches!(e.kind, EventKind::Typing { active: true })
    })
    .await;
    rig.alice
        .read(&rig.room, ping["event_id"].as_str().expect("id"))
        .await
        .expect("read");
    delivered(&rig.memory, |e| {
        matches!(e.kind, EventKind::ReadMarker { .. })
    })
    .await;
    rig.alice
        .topic(&rig.room, "new topic")
        .await
        .expect("topic");
    delivered(
        &rig.memory,
        |e| matches!(&e.kind, EventKind::Topic { text } if text == "new topic"),
    )
    .await;
    rig.alice
        .room_name(&rig.room, "new name")
        .await
        .expect("name");
    delivered(
        &rig.memory,
        |e| matches!(&e.kind, EventKind::RoomName { name } if name == "new name"),
    )
    .await;
    // memory → Matrix: a topic set by carol.
    rig.memory
        .submit(
            inbound(MEMORY_ROOM)
                .id("t2")
                .from("carol")
                .named("Carol")
                .topic("carol's topic"),
        )
        .await
        .expect("submitted");
    rig.alice
        .wait_timeline(|e| e["type"] == "m.room.topic" && e["content"]["topic"] == "carol's topic")
        .await
        .expect("topic set");
    rig.core.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_cross_both_ways_through_authenticated_media() {
    let mut rig = rig("files").await;
    static PICTURE: &[u8] = b"\x89PNG\r\n\x1a\n not really a picture, but bytes all the same";
    // memory → Matrix: the file is fetched from its URL and uploaded as carol's ghost.
    let url = serve_file(PICTURE).await;
    let mut msg = inbound(MEMORY_ROOM)
        .id("f1")
        .from("carol")
        .named("Carol")
        .text("");
    if let EventKind::Message { content, .. } = &mut msg.kind {
        *content = MessageContent {
            msgtype: MsgType::Text,
            text: RichText::plain(""),
            attachments: vec![Attachment {
                name: "picture.png".into(),
                url,
                mime: Some("image/png".into()),
                size: Some(PICTURE.len() as u64),
                ..Attachment::default()
            }],
            mentions: Vec::new(),
        };
    }
    rig.memory.submit(msg).await.expect("submitted");
    let seen = rig
        .alice
        .wait_timeline(|e| e["content"]["msgtype"] == "m.image")
        .await
        .expect("alice sees the image");
    let mxc = seen["content"]["url"]
        .as_str()
        .expect("an mxc url")
        .to_owned();
    let fetched = rig.alice.download(&mxc).await.expect("download");
    assert_eq!(fetched["size"], PICTURE.len());

    // Matrix → memory: the attachment keeps its mxc:// URI, which the adapter can fetch with
    // its credentials for any other adapter.
    let sent = rig
        .alice
        .send_file(&rig.room, b"hello file", "notes.txt", "text/plain")
        .await
        .expect("file sent");
    let got = delivered(&rig.memory, |e| {
        matches!(&e.kind, EventKind::Message { content, .. } if !content.attachments.is_empty())
    })
    .await;
    let EventKind::Message { content, .. } = &got.kind else {
        unreachable!()
    };
    let attachment = &content.attachments[0];
    assert_eq!(attachment.name, "notes.txt");
    assert_eq!(attachment.url, sent["url"].as_str().expect("url"));
    // A far-side user's avatar becomes the ghost's, re-hosted in the media repository.
    let mut with_avatar = inbound(MEMORY_ROOM)
        .id("f2")
        .from("frank")
        .named("Frank")
        .text("look at me");
    with_avatar.sender.avatar = Some(serve_file(PICTURE).await);
    rig.memory.submit(with_avatar).await.expect("submitted");
    rig.alice
        .wait_timeline(|e| e["content"]["body"] == "look at me")
        .await
        .expect("seen");
    let members = rig.alice.members(&rig.room).await.expect("members");
    let frank = members["members"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["user_id"] == ghost("frank").as_str()))
        .cloned()
        .unwrap_or_default();
    let avatar = frank["avatar_url"].as_str().unwrap_or_default().to_owned();
    assert!(
        avatar.starts_with("mxc://"),
        "frank's ghost has an avatar: {frank}"
    );
    let fetched = rig.alice.download(&avatar).await.expect("download");
    assert_eq!(fetched["size"], PICTURE.len());
    let ctx = rig.memory.context().await.expect("memory is running");
    let body = ctx
        .fetch_attachment(&AdapterId::new("matrix"), attachment)
        .await
        .expect("the matrix adapter fetches its own media");
    let bytes = body.collect(1 << 20).await.expect("bytes");
    assert_eq!(&bytes[..], b"hello file");
    rig.core.shutdown().await;
}

/// The appservice endpoint as an attacker or a broken homeserver sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_spec_errors_and_lose_nothing() {
    let rig = rig("bad-input").await;
    let base = format!("http://127.0.0.1:{}", test_env("BRIDGE_TEST_AS_PORT"));
    let hs_token = test_env("BRIDGE_TEST_HS_TOKEN");
    // Every request on a connection of its own: the server closes the connection it answers
    // 413 on without reading the rest of the body, and a pooled connection that the server has
    // closed fails the next request with a broken pipe before it reaches the bridge (seen in CI).
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("http client");
    let put = |txn: &str, token: Option<&str>, body: Vec<u8>| {
        let mut request = http
            .put(format!("{base}/_matrix/app/v1/transactions/{txn}"))
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let answer = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        (
            status,
            body["errcode"].as_str().unwrap_or_default().to_owned(),
        )
    };
    let ok_body = |events: Value| serde_json::to_vec(&json!({ "events": events })).expect("json");
    let none = put(&fresh("t"), None, ok_body(json!([])))
        .await
        .expect("answer");
    assert_eq!(answer(none).await, (401, "M_UNAUTHORIZED".into()));
    let wrong = put(&fresh("t"), Some("nope"), ok_body(json!([])))
        .await
        .expect("answer");
    assert_eq!(answer(wrong).await, (403, "M_FORBIDDEN".into()));
    let garbage = put(&fresh("t"), Some(&hs_token), b"{not json".to_vec())
        .await
        .expect("answer");
    assert_eq!(answer(garbage).await, (400, "M_NOT_JSON".into()));
    // The server may answer 413 and close while the 40 MB are still being written (HTTP
    // allows it); the client then sees a broken pipe instead of the answer. Try until the
    // answer is read: it must be 413.
    let huge = vec![b' '; 40 * 1024 * 1024];
    let mut attempts = 0;
    let big = loop {
        attempts += 1;
        match put(&fresh("t"), Some(&hs_token), huge.clone()).await {
            Ok(big) => break big,
            Err(e) if attempts < 5 && e.is_request() => {
                eprintln!(
                    "40 MB body: the connection closed before the answer was read ({e}); again"
                );
            }
            Err(e) => panic!("no answer to a 40 MB body: {e}"),
        }
    };
    assert_eq!(answer(big).await.0, 413);
    // One malformed event among good ones: the good ones are bridged, in order, once.
    let event = |n: u32| {
        json!({
            "type": "m.room.message", "event_id": format!("$fake{n}-{}", fresh("e")),
            "room_id": rig.room, "sender": "@mallory:localhost", "origin_server_ts": 1,
            "content": { "msgtype": "m.text", "body": format!("pushed {n}") }
        })
    };
    let events = json!([event(1), { "type": "m.room.message", "content": 7 }, "not even an object", event(2)]);
    let txn = fresh("txn");
    let first = put(&txn, Some(&hs_token), ok_body(events.clone()))
        .await
        .expect("answer");
    assert_eq!(first.status().as_u16(), 200);
    let again = put(&txn, Some(&hs_token), ok_body(events))
        .await
        .expect("answer");
    assert_eq!(
        again.status().as_u16(),
        200,
        "a retried transaction is answered 200"
    );
    delivered(&rig.memory, |e| body_of(e) == Some("pushed 2")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let bodies: Vec<String> = rig
        .memory
        .sent()
        .iter()
        .filter_map(|e| body_of(e).map(str::to_owned))
        .filter(|b| b.starts_with("pushed"))
        .collect();
    assert_eq!(bodies, ["pushed 1", "pushed 2"], "each once, in order");
    rig.core.shutdown().await;
}

/// A burst from the far side arrives in order, once, without forking the room's DAG.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_keeps_order_and_the_dag_linear() {
    const N: usize = 1000;
    let mut rig = rig("burst").await;
    for i in 0..N {
        let msg = inbound(MEMORY_ROOM)
            .id(&format!("b{i}"))
            .from("carol")
            .named("Carol")
            .text(&format!("burst {i}"));
        rig.memory.submit(msg).await.expect("submitted");
    }
    let last = format!("burst {}", N - 1);
    rig.alice
        .next_event(
            |e| e["event"] == "timeline" && e["content"]["body"] == last.as_str(),
            Duration::from_secs(120),
        )
        .await
        .expect("the last message arrives");
    let history = rig
        .alice
        .messages(
            &rig.room,
            N as u32 + 50,
            bridge_tests::matrix_human::Dir::Back,
        )
        .await
        .expect("history");
    let mut bodies: Vec<String> = history
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .filter(|b| b.starts_with("burst "))
        .map(str::to_owned)
        .collect();
    bodies.reverse();
    let expected: Vec<String> = (0..N).map(|i| format!("burst {i}")).collect();
    assert_eq!(bodies.len(), N, "each message once");
    assert_eq!(bodies, expected, "in order");
    let mut admin = MatrixHuman::start("admin", "adminpass", &test_env("BRIDGE_TEST_SYNAPSE_URL"))
        .await
        .expect("admin logs in");
    let extremities = admin
        .forward_extremities(&rig.room)
        .await
        .expect("extremities");
    assert!(
        extremities <= 2,
        "{extremities} forward extremities: the DAG forked"
    );
    rig.core.shutdown().await;
}

/// A Matrix user writes to a ghost directly: the conversation is linked to the far side's
/// direct room, and the answer comes back from the ghost in the same Matrix room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_messages_to_a_ghost_reach_the_far_user_and_back() {
    let mut rig = rig("direct").await;
    let carol = ghost("carol");
    let dm = direct_with(&mut rig.alice, &carol).await;
    rig.alice.send(&dm, "just between us").await.expect("sent");
    let got = delivered(&rig.memory, |e| body_of(e) == Some("just between us")).await;
    assert!(
        got.room
            .as_str()
            .starts_with("dm:carol:matrix:@alice:localhost"),
        "delivered in the far side's direct room: {}",
        got.room
    );
    let far_room = got.room.to_string();
    carol_answers(&mut rig, &far_room, "sure, alice", &dm).await;
    rig.core.shutdown().await;
}

/// Joining an alias in the bridge's namespace opens a portal to the far side's room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alias_in_the_namespace_opens_a_portal() {
    let mut rig = rig("portal").await;
    let far = fresh("lobby");
    let alias = format!("#_bridge_memory_{far}:localhost");
    let room = rig
        .alice
        .join(&alias)
        .await
        .expect("the portal opens and alice joins");
    rig.alice
        .send(&room, "through the portal")
        .await
        .expect("sent");
    let got = delivered(&rig.memory, |e| body_of(e) == Some("through the portal")).await;
    assert_eq!(
        got.room.as_str(),
        far,
        "linked to the far room the alias names"
    );
    rig.memory
        .submit(
            inbound(&far)
                .id("p1")
                .from("dave")
                .named("Dave")
                .text("welcome"),
        )
        .await
        .expect("submitted");
    rig.alice
        .wait_timeline(|e| e["room_id"] == room.as_str() && e["content"]["body"] == "welcome")
        .await
        .expect("the far side answers in the portal");
    rig.core.shutdown().await;
}

/// A far-side user writes to a Matrix user directly: their ghost opens a direct room and
/// invites the Matrix user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_far_user_can_open_a_direct_conversation() {
    let mut rig = rig("direct-out").await;
    let ctx = rig.memory.context().await.expect("memory is running");
    let far_room = bridge_core::RemoteRoomId::new(fresh("dm-from-erin"));
    let alice = bridge_core::Sender {
        adapter: AdapterId::new("matrix"),
        user: bridge_core::RemoteUserId::new("@alice:localhost"),
        display_name: None,
        avatar: None,
    };
    ctx.direct_room(
        &far_room,
        &bridge_core::RemoteUserId::new("erin"),
        Some("Erin"),
        &alice,
    )
    .await
    .expect("the direct conversation opens");
    let invite = rig
        .alice
        .wait_invite(|e| e["sender"] == ghost("erin").as_str())
        .await
        .expect("alice is invited by erin's ghost");
    let room = invite["room_id"].as_str().expect("room").to_owned();
    rig.alice.join(&room).await.expect("alice joins");
    rig.memory
        .submit(
            inbound(far_room.as_str())
                .id("e1")
                .from("erin")
                .named("Erin")
                .text("hello alice"),
        )
        .await
        .expect("submitted");
    rig.alice
        .wait_timeline(|e| e["room_id"] == room.as_str() && e["content"]["body"] == "hello alice")
        .await
        .expect("erin's message arrives");
    rig.core.shutdown().await;
}

/// A room linked by its alias works like one linked by its ID, both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_linked_by_alias_works_both_ways() {
    let mut rig = rig_linked("by-alias", true).await;
    // The warm-up message of the rig already crossed Matrix → memory under the alias.
    let warm = delivered(&rig.memory, |e| body_of(e) == Some("warm-up")).await;
    assert!(warm.room.as_str() == MEMORY_ROOM);
    rig.memory
        .submit(
            inbound(MEMORY_ROOM)
                .id("a1")
                .from("carol")
                .named("Carol")
                .text("to the alias"),
        )
        .await
        .expect("submitted");
    rig.alice
        .wait_timeline(|e| {
            e["room_id"] == rig.room.as_str() && e["content"]["body"] == "to the alias"
        })
        .await
        .expect("delivered into the room the alias names");
    rig.core.shutdown().await;
}

/// Joins, leaves and name changes cross both ways; custom event types are carried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_profiles_and_custom_events_cross() {
    let mut rig = rig("members").await;
    // Matrix → memory: bob joins, changes his name, leaves.
    let mut bob = MatrixHuman::start("bob", "bobpass", &test_env("BRIDGE_TEST_SYNAPSE_URL"))
        .await
        .expect("bob logs in");
    bob.join(&rig.room).await.expect("bob joins");
    delivered(&rig.memory, |e| {
        e.sender.user.as_str() == "@bob:localhost"
            && matches!(
                e.kind,
                EventKind::Membership {
                    change: bridge_core::MembershipChange::Join,
                    ..
                }
            )
    })
    .await;
    let name = fresh("Bob");
    bob.displayname(&name).await.expect("renamed");
    delivered(
        &rig.memory,
        |e| matches!(&e.kind, EventKind::Profile { display_name: Some(n), .. } if *n == name),
    )
    .await;
    bob.leave(&rig.room).await.expect("bob leaves");
    delivered(&rig.memory, |e| {
        e.sender.user.as_str() == "@bob:localhost"
            && matches!(
                e.kind,
                EventKind::Membership {
                    change: bridge_core::MembershipChange::Leave,
                    ..
                }
            )
    })
    .await;
    // A custom event type, both ways.
    rig.alice
        .send_raw(&rig.room, "org.example.poll", json!({ "question": "tea?" }))
        .await
        .expect("sent");
    delivered(&rig.memory, |e| {
        matches!(&e.kind, EventKind::Custom { event_type, content }
            if event_type == "org.example.poll" && content["question"] == "tea?")
    })
    .await;
    rig.memory
        .submit(
            inbound(MEMORY_ROOM)
                .id("x1")
                .from("carol")
                .named("Carol")
                .custom("org.example.vote", json!({ "answer": "yes" })),
        )
        .await
        .expect("submitted");
    let vote = rig
        .alice
        .wait_timeline(|e| e["type"] == "org.example.vote")
        .await
        .expect("the custom event arrives");
    assert_eq!(vote["content"]["answer"], "yes");
    assert_eq!(vote["sender"], ghost("carol").as_str());
    // memory → Matrix: dave joins (his ghost joins), then leaves.
    rig.memory
        .submit(
            inbound(MEMORY_ROOM)
                .id("x2")
                .from("dave")
                .named("Dave")
                .join(),
        )
        .await
        .expect("submitted");
    rig.alice
        .wait_timeline(|e| {
            e["type"] == "m.room.member"
                && e["state_key"] == ghost("dave").as_str()
                && e["content"]["membership"] == "join"
        })
        .await
        .expect("dave's ghost joins");
    let mut leave = inbound(MEMORY_ROOM)
        .id("x3")
        .from("dave")
        .named("Dave")
        .join();
    leave.kind = EventKind::Membership {
        change: bridge_core::MembershipChange::Leave,
        reason: None,
    };
    rig.memory.submit(leave).await.expect("submitted");
    rig.alice
        .wait_timeline(|e| {
            e["type"] == "m.room.member"
                && e["state_key"] == ghost("dave").as_str()
                && e["content"]["membership"] == "leave"
        })
        .await
        .expect("dave's ghost leaves");
    rig.core.shutdown().await;
}

/// A file over the homeserver's upload limit (10 MiB in the test config) cannot cross: the room
/// gets a notice with its name and link instead of nothing, and the text of its message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_file_leaves_a_notice() {
    let mut rig = rig("oversize").await;
    let big: &'static [u8] = Box::leak(vec![7u8; 11 * 1024 * 1024].into_boxed_slice());
    let url = serve_file(big).await;
    let mut msg = inbound(MEMORY_ROOM)
        .id("big1")
        .from("carol")
        .named("Carol")
        .text("the recording");
    if let EventKind::Message { content, .. } = &mut msg.kind {
        // No size announced: the adapter finds out while reading.
        content.attachments = vec![Attachment {
            name: "recording.bin".into(),
            url: url.clone(),
            ..Attachment::default()
        }];
    }
    rig.memory.submit(msg).await.expect("submitted");
    rig.alice
        .wait_timeline(|e| e["content"]["body"] == "the recording")
        .await
        .expect("the text arrives");
    let notice = rig
        .alice
        .wait_timeline(|e| e["content"]["msgtype"] == "m.notice")
        .await
        .expect("a notice stands for the file");
    let body = notice["content"]["body"].as_str().unwrap_or_default();
    assert!(
        body.contains("recording.bin") && body.contains(&url),
        "{body}"
    );
    rig.core.shutdown().await;
}

/// Encryption turned on in a linked room: the bridge cannot read encrypted messages, so it says
/// so in the room (once), drops what it cannot read, and still bridges what is sent in clear.
/// What an encrypting client sends: ciphertext the bridge has no keys for.
async fn send_encrypted(human: &mut MatrixHuman, room: &str, ciphertext: &str) {
    human
        .send_raw(
            room,
            "m.room.encrypted",
            json!({
                "algorithm": "m.megolm.v1.aes-sha2", "ciphertext": ciphertext,
                "sender_key": "c3VwZXJzZWNyZXQ", "session_id": "c2Vzc2lvbg",
                "device_id": "ALICEDEVICE",
            }),
        )
        .await
        .expect("encrypted event sent");
}

/// The notices the bot wrote in `room`, from its history.
async fn bot_notices(human: &mut MatrixHuman, room: &str) -> usize {
    bridge_tests::matrix_rig::history(human, room)
        .await
        .expect("history")
        .into_iter()
        .filter(|e| e["content"]["msgtype"] == "m.notice" && e["sender"] == BOT)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_room_is_told_that_its_encrypted_messages_cannot_cross() {
    let mut rig = rig("encrypted").await;
    let room = rig.room.clone();
    encryption_on(&mut rig.alice, &room).await;
    let notice = rig
        .alice
        .wait_timeline(|e| e["content"]["msgtype"] == "m.notice" && e["sender"] == BOT)
        .await
        .expect("the bot says what encryption means for the bridge");
    let text = notice["content"]["body"].as_str().unwrap_or_default();
    assert!(
        text.contains("end-to-end encrypted") && text.contains("cannot read"),
        "{text}"
    );
    send_encrypted(&mut rig.alice, &room, "AwgAEnACgAkLmt6qF84IK").await;
    rig.alice.send(&room, "in clear").await.expect("sent");
    delivered(&rig.memory, |e| body_of(e) == Some("in clear")).await;
    let crossed: Vec<String> = rig
        .memory
        .sent()
        .iter()
        .map(|e| format!("{:?}", e.kind))
        .filter(|k| k.contains("ciphertext") || k.contains("m.room.encrypted"))
        .collect();
    assert!(crossed.is_empty(), "{crossed:?}");
    // Told once: the encrypted message after the announcement adds no second notice.
    assert_eq!(bot_notices(&mut rig.alice, &room).await, 1);

    // Nor after a restart: the store remembers that the room was told.
    rig.core.shutdown().await;
    let (core, memory) = start_core(rig._dir.path(), &room).await;
    rig.core = core;
    rig.memory = memory;
    send_encrypted(&mut rig.alice, &room, "AwgAEnACgAkLmt6qF84IL").await;
    rig.alice.send(&room, "in clear again").await.expect("sent");
    delivered(&rig.memory, |e| body_of(e) == Some("in clear again")).await;
    assert_eq!(
        bot_notices(&mut rig.alice, &room).await,
        1,
        "told again after the restart"
    );

    // A direct conversation with a ghost that turns encryption on: the ghost says it.
    let carol = ghost("carol");
    let dm = direct_with(&mut rig.alice, &carol).await;
    encryption_on(&mut rig.alice, &dm).await;
    let notice = rig
        .alice
        .wait_timeline(|e| e["room_id"] == dm.as_str() && e["content"]["msgtype"] == "m.notice")
        .await
        .expect("the ghost says what encryption means for the conversation");
    assert_eq!(notice["sender"], carol.as_str());
    let text = notice["content"]["body"].as_str().unwrap_or_default();
    assert!(text.contains("other network"), "{text}");
    rig.core.shutdown().await;
}

/// A linked room upgraded to a new room version (a tombstone naming its replacement): the link
/// follows, both ways, without a change to the configuration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgraded_room_stays_bridged_through_its_replacement() {
    let mut rig = rig("upgrade").await;
    let old = rig.room.clone();
    let new = rig.alice.upgrade(&old, "11").await.expect("upgraded");
    assert_ne!(new, old);
    joined(
        &mut rig.alice,
        &new,
        BOT,
        "the bridge bot follows the room to its replacement",
    )
    .await;
    rig.alice
        .send(&new, "after the upgrade")
        .await
        .expect("sent");
    let got = delivered(&rig.memory, |e| body_of(e) == Some("after the upgrade")).await;
    assert_eq!(got.room.as_str(), MEMORY_ROOM);
    carol_answers(&mut rig, MEMORY_ROOM, "heard you", &new).await;
    rig.core.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_banned_ghost_stays_out_and_nothing_is_dead_lettered() {
    // A moderator bans a far-side user's ghost: what that user says no longer reaches the
    // room (the bridge does not invite the ghost back), nothing piles up as dead letters, and
    // everyone else still gets through.
    let mut rig = rig("ma-ban").await;
    let room = rig.room.clone();
    carol_answers(&mut rig, MEMORY_ROOM, "before the ban", &room).await;
    let carol = ghost("carol");
    rig.alice
        .ban(&room, &carol)
        .await
        .expect("alice bans carol");
    rig.alice
        .wait_timeline(|e| {
            e["type"] == "m.room.member"
                && e["state_key"] == carol.as_str()
                && e["content"]["membership"] == "ban"
        })
        .await
        .expect("the ban is in the room");
    for (who, text) in [("carol", "after the ban"), ("dave", "dave is still heard")] {
        rig.memory
            .submit(
                inbound(MEMORY_ROOM)
                    .id(&fresh("ban"))
                    .from(who)
                    .named(who)
                    .text(text),
            )
            .await
            .expect("submitted");
    }
    // The room's messages are delivered in order: dave's comes after carol's was dealt with.
    let next = rig
        .alice
        .wait_timeline(|e| {
            e["room_id"] == room.as_str()
                && (e["content"]["body"] == "after the ban"
                    || e["content"]["body"] == "dave is still heard")
        })
        .await
        .expect("dave's message arrives");
    assert_eq!(next["content"]["body"], "dave is still heard", "{next}");
    assert!(
        rig.core.dead_letters().expect("dead letters").is_empty(),
        "a ban is a moderator's decision, not a failure"
    );
    rig.core.shutdown().await;
}

/// The display name of `user`'s profile on the test homeserver.
async fn profile_name(user: &str) -> Value {
    let profile: Value = reqwest::get(format!(
        "{}/_matrix/client/v3/profile/{user}/displayname",
        test_env("BRIDGE_TEST_SYNAPSE_URL"),
    ))
    .await
    .expect("profile read")
    .json()
    .await
    .expect("profile JSON");
    profile["displayname"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_user_renamed_in_their_only_room_is_renamed_on_their_profile() {
    // A user of this test alone: a rename of a ghost that other tests' rooms share would have
    // the homeserver rename it in all of them.
    let mut rig = rig("renamed-one-room").await;
    let room = rig.room.clone();
    let dora = fresh("dora");
    for (name, text) in [("Dora", "hello as Dora"), ("Dorothy", "hello as Dorothy")] {
        rig.memory
            .submit(
                inbound(MEMORY_ROOM)
                    .id(&fresh("said"))
                    .from(&dora)
                    .named(name)
                    .text(text),
            )
            .await
            .expect("submitted");
        rig.alice
            .wait_timeline(|e| e["room_id"] == room.as_str() && e["content"]["body"] == text)
            .await
            .expect("the message arrives");
    }
    let member = (rig.alice.state(&room, "m.room.member", &ghost(&dora)))
        .await
        .expect("the ghost's member event");
    assert_eq!(member["displayname"], "Dorothy");
    assert_eq!(profile_name(&ghost(&dora)).await, "Dorothy");
    rig.core.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_user_called_otherwise_in_another_room_is_renamed_there_only() {
    // An XMPP user has a nick per room. Carol is "Carol" in the first room and "Carol B" in a
    // second one: her ghost's profile keeps its first name, and only the second room's member
    // event shows the other (a profile change would rename her in every room, each time she
    // spoke in the other).
    let mut rig = rig("per-room-names").await;
    let first = rig.room.clone();
    carol_answers(&mut rig, MEMORY_ROOM, "hello in the first room", &first).await;
    let second = rig
        .alice
        .create_room_with(json!({
            "name": fresh("per-room-names-2"), "public": true, "invite": [BOT],
            "power_level_override": { "users": { BOT: 100 } },
        }))
        .await
        .expect("second room created");
    let lobby2 = bridge_core::RoomId::new("lobby2");
    for link in [
        Link::new("matrix", second.as_str()),
        Link::new("memory", "memory-room-2"),
    ] {
        rig.core.add_link(&lobby2, link).await.expect("linked");
    }
    joined(
        &mut rig.alice,
        &second,
        BOT,
        "the bridge bot joins the second room",
    )
    .await;
    let said = |id: &str, room: &str, name: &str, text: &str| {
        inbound(room).id(id).from("carol").named(name).text(text)
    };
    rig.memory
        .submit(said(
            "b1",
            "memory-room-2",
            "Carol B",
            "hello in the second room",
        ))
        .await
        .expect("submitted");
    rig.alice
        .wait_timeline(|e| {
            e["room_id"] == second.as_str() && e["content"]["body"] == "hello in the second room"
        })
        .await
        .expect("carol's message reaches the second room");
    // Back in the first room, as "Carol" again, then once more in the second.
    rig.memory
        .submit(said("a2", MEMORY_ROOM, "Carol", "again in the first"))
        .await
        .expect("submitted");
    rig.memory
        .submit(said(
            "b2",
            "memory-room-2",
            "Carol B",
            "again in the second",
        ))
        .await
        .expect("submitted");
    rig.alice
        .wait_timeline(|e| {
            e["room_id"] == second.as_str() && e["content"]["body"] == "again in the second"
        })
        .await
        .expect("both arrive");
    let name_in = async |alice: &mut MatrixHuman, room: &str| -> Value {
        let member = alice
            .state(room, "m.room.member", &ghost("carol"))
            .await
            .expect("the ghost's member event");
        member["displayname"].clone()
    };
    assert_eq!(name_in(&mut rig.alice, &first).await, "Carol");
    assert_eq!(name_in(&mut rig.alice, &second).await, "Carol B");
    assert_eq!(profile_name(ghost("carol").as_str()).await, "Carol");
    // The first room saw no rename of the ghost.
    let renames: Vec<Value> = rig
        .alice
        .drain()
        .into_iter()
        .filter(|e| {
            e["room_id"] == rig.room.as_str()
                && e["type"] == "m.room.member"
                && e["state_key"] == ghost("carol").as_str()
                && e["content"]["displayname"] != "Carol"
        })
        .collect();
    assert!(
        renames.is_empty(),
        "the first room saw the ghost renamed: {renames:?}"
    );
    rig.core.shutdown().await;
}

/// Carol's ghost leaves `room` (she no longer reaches it), and the bot stays.
async fn carols_ghost_left_and_the_bot_stayed(rig: &mut Rig, room: &str) {
    rig.alice
        .wait_timeline(|e| {
            e["room_id"] == room
                && e["type"] == "m.room.member"
                && e["state_key"] == ghost("carol").as_str()
                && e["content"]["membership"] == "leave"
        })
        .await
        .expect("carol's ghost leaves: carol no longer reaches the room");
    let bot = (rig.alice.state(room, "m.room.member", BOT))
        .await
        .expect("the bot's member event");
    assert_eq!(
        bot["membership"], "join",
        "the bot stays in the linked room"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_far_side_left_out_of_the_configuration_takes_its_users_ghosts_out_at_the_start() {
    let mut rig = rig("unlinked-by-config").await;
    let room = rig.room.clone();
    carol_answers(&mut rig, MEMORY_ROOM, "before the unlink", &room).await;
    // The admin takes the far side's link out of the configuration and restarts the bridge.
    rig.core.shutdown().await;
    let links = vec![Link::new("matrix", room.as_str())];
    let (core, memory) = start_core_linking(rig._dir.path(), links).await;
    rig.core = core;
    rig.memory = memory;
    carols_ghost_left_and_the_bot_stayed(&mut rig, &room).await;
    rig.core.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_far_side_is_unlinked_its_users_ghosts_leave_and_the_bot_stays() {
    let mut rig = rig("unlinked-far-side").await;
    let room = rig.room.clone();
    carol_answers(&mut rig, MEMORY_ROOM, "before the unlink", &room).await;
    rig.core
        .remove_link(&Link::new("memory", MEMORY_ROOM))
        .await
        .expect("the far side unlinked");
    carols_ghost_left_and_the_bot_stayed(&mut rig, &room).await;
    rig.core.shutdown().await;
}
