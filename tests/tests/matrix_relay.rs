//! The Matrix adapter in relay mode against the Synapse that scripts/test.sh starts: bob is the
//! relay bot (an ordinary account, logged in with matrix-sdk), alice a real third-party client
//! (matrix-nio, through `MatrixHuman`) in the room, and the core's in-memory adapter the far
//! side of the link.
//!
//! Each assertion checks what the other side actually received: the event matrix-nio synced,
//! or the event the memory adapter was asked to deliver.
//!
//! The tests take turns (one relay bot account, whose devices one of them counts).

use std::sync::Arc;
use std::time::Duration;

use bridge_core::testkit::{MemoryAdapter, MemoryHandle, inbound};
use bridge_core::{
    AdapterId, Attachment, Capabilities, Core, EventKind, Link, MessageContent, MsgType,
    OutboundEvent, RichText, RoomSettings, SledStore, Store,
};
use bridge_matrix::relay::{RelayAdapter, TIMELINE_LIMIT};
use bridge_tests::far::{body_of, serve_file};
use bridge_tests::matrix_human::MatrixHuman;
use bridge_tests::{fresh, test_env};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);
const MEMORY_ROOM: &str = "memory-room";
const BOT: &str = "@bob:localhost";

/// One relay test at a time: they share the bot account, and one counts its devices.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How the relay bot logs in: `password = '…'` or `access_token = '…'`.
fn relay(login: &str) -> RelayAdapter {
    let text = format!(
        "mode = 'relay'\nhomeserver = '{}'\nuser = '{BOT}'\n{login}",
        test_env("BRIDGE_TEST_SYNAPSE_URL"),
    );
    let table: toml::Table = text.parse().expect("settings parse");
    let settings = bridge_matrix::settings::parse(&table, true).expect("valid settings");
    RelayAdapter::new(AdapterId::new("matrix"), settings).expect("adapter")
}

const PASSWORD: &str = "password = 'bobpass'";

/// A core linking each Matrix room of `rooms` with its own memory room (`memory-room`,
/// `memory-room-1`, …) through `adapter`, on `store`.
async fn start_core(
    store: Arc<dyn Store>,
    adapter: &RelayAdapter,
    rooms: &[&str],
) -> (Core, MemoryHandle) {
    let memory = MemoryAdapter::new(Capabilities::all());
    let handle = memory.handle();
    let mut builder = Core::builder(store)
        .adapter("matrix", Arc::new(adapter.clone()))
        .adapter("memory", Arc::new(memory));
    for (i, room) in rooms.iter().enumerate() {
        builder = builder.room(
            format!("room-{i}"),
            RoomSettings::default(),
            vec![
                Link::new("matrix", *room),
                Link::new("memory", memory_room(i).as_str()),
            ],
        );
    }
    let core = builder.start().await.expect("core starts");
    (core, handle)
}

fn memory_room(i: usize) -> String {
    if i == 0 {
        MEMORY_ROOM.to_owned()
    } else {
        format!("{MEMORY_ROOM}-{i}")
    }
}

/// Waits until the bot is past its first sync: from then on, what alice posts is news.
async fn until_syncing(adapter: &RelayAdapter) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !adapter.is_syncing() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the relay bot did not finish its first sync within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Rig {
    _turn: tokio::sync::MutexGuard<'static, ()>,
    core: Core,
    memory: MemoryHandle,
    store: Arc<dyn Store>,
    relay: RelayAdapter,
    room: String,
    alice: MatrixHuman,
    _dir: tempfile::TempDir,
}

/// Alice creates a room and invites the bot; the core links it with the memory adapter's room;
/// returns once the bot has joined, is syncing, and a first message has crossed.
async fn rig(test: &str, login: &str) -> Rig {
    let turn = TURN.lock().await;
    bridge_tests::log_to_test_output();
    let mut alice = MatrixHuman::start("alice", "alicepass", &test_env("BRIDGE_TEST_SYNAPSE_URL"))
        .await
        .expect("alice logs in");
    let room = alice
        .create_room_with(json!({ "name": fresh(test), "invite": [BOT] }))
        .await
        .expect("room created");
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).expect("store opens"));
    let relay = relay(login);
    let (core, memory) = start_core(store.clone(), &relay, &[room.as_str()]).await;
    alice
        .wait_timeline(|e| {
            e["room_id"] == room.as_str()
                && e["type"] == "m.room.member"
                && e["state_key"] == BOT
                && e["content"]["membership"] == "join"
        })
        .await
        .expect("the relay bot joins the room");
    until_syncing(&relay).await;
    alice.send(&room, "warm-up").await.expect("sent");
    delivered(&memory, |e| body_of(e) == Some("warm-up")).await;
    Rig {
        _turn: turn,
        core,
        memory,
        store,
        relay,
        room,
        alice,
        _dir: dir,
    }
}

/// The first event delivered to the memory side that `pick` accepts, within [`WAIT`].
async fn delivered(
    memory: &MemoryHandle,
    pick: impl FnMut(&OutboundEvent) -> bool,
) -> OutboundEvent {
    bridge_tests::far::delivered(memory, WAIT, pick).await
}

/// The bodies of the messages delivered to the memory side, in order.
fn bodies(memory: &MemoryHandle) -> Vec<String> {
    memory
        .sent()
        .iter()
        .filter_map(|e| body_of(e).map(str::to_owned))
        .collect()
}

/// Nothing the bot sent came back to the memory side.
async fn assert_no_echo(memory: &MemoryHandle) {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = memory.sent();
    assert!(
        sent.iter().all(|e| e.sender.user.as_str() != BOT),
        "the bot's own event was bridged back:\n{}",
        bridge_tests::far::summary(&sent)
    );
}

/// The native ID the memory adapter's copy of a Matrix event got.
async fn memory_id(memory: &MemoryHandle, event: &OutboundEvent) -> String {
    tokio::time::sleep(Duration::from_millis(100)).await;
    memory
        .native_id_of(event.id)
        .expect("the memory copy has a native ID")
        .to_string()
}

/// An event posted on the memory side.
async fn submit(memory: &MemoryHandle, event: bridge_core::InboundEvent) {
    memory.submit(event).await.expect("submitted");
}

/// Alice takes a new display name, and waits until her member event in `room` has it (the
/// homeserver updates her rooms one after the other, after answering).
async fn set_name(alice: &mut MatrixHuman, room: &str, name: &str) {
    alice.displayname(name).await.expect("name set");
    let me = alice.user_id().to_owned();
    alice
        .wait_timeline(|e| {
            e["room_id"] == room
                && e["type"] == "m.room.member"
                && e["state_key"] == me.as_str()
                && e["content"]["displayname"] == name
        })
        .await
        .expect("the room sees the new name");
}

/// The bot's message that alice sees with this body.
async fn bot_message(alice: &mut MatrixHuman, body: &str) -> Value {
    let seen = alice
        .wait_timeline(|e| e["type"] == "m.room.message" && e["content"]["body"] == body)
        .await
        .unwrap_or_else(|e| panic!("alice never saw {body:?}: {e}"));
    assert_eq!(seen["sender"], BOT, "relayed by the bot: {seen}");
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_crosses_both_ways_named_and_formatted() {
    let mut rig = rig("relay-text", PASSWORD).await;
    set_name(&mut rig.alice, &rig.room, "Alice A.").await;
    rig.alice
        .send_html(
            &rig.room,
            "hello **bridge**",
            "hello <strong>bridge</strong>",
        )
        .await
        .expect("sent");
    let got = delivered(&rig.memory, |e| body_of(e) == Some("hello bridge")).await;
    assert_eq!(got.sender.user.as_str(), "@alice:localhost");
    assert_eq!(got.sender.display_name.as_deref(), Some("Alice A."));
    let EventKind::Message { content, .. } = &got.kind else {
        panic!("a message: {got:?}");
    };
    assert!(content.text.is_formatted(), "formatting kept: {content:?}");

    // The other way: the bot says carol's text in her name, the name bold.
    let mut msg = inbound(MEMORY_ROOM)
        .id("m1")
        .from("carol")
        .named("Carol C.")
        .text("hi alice");
    if let EventKind::Message { content, .. } = &mut msg.kind {
        content.text = RichText::from_markdown("hi *alice*");
    }
    submit(&rig.memory, msg).await;
    let seen = bot_message(&mut rig.alice, "<Carol C.> hi alice").await;
    assert_eq!(seen["content"]["format"], "org.matrix.custom.html");
    let html = seen["content"]["formatted_body"].as_str().unwrap_or("");
    assert!(
        html.contains("<strong>Carol C.</strong>") && html.contains("<em>alice</em>"),
        "{seen}"
    );
    // A name alone, unformatted text: still the bold name.
    submit(
        &rig.memory,
        inbound(MEMORY_ROOM)
            .id("m2")
            .from("dave")
            .named("Dave <D>")
            .text("plain & simple"),
    )
    .await;
    let seen = bot_message(&mut rig.alice, "<Dave <D>> plain & simple").await;
    assert_eq!(
        seen["content"]["formatted_body"],
        "&lt;<strong>Dave &lt;D&gt;</strong>&gt; plain &amp; simple"
    );
    // What the bridge itself says (an admin command's answer) comes from the relay's account
    // as a notice, and is not bridged back.
    rig.core
        .send_notice(
            &Link::new("matrix", rig.room.as_str()),
            "a word from the bridge",
        )
        .await
        .expect("notice sent");
    let notice = bot_message(&mut rig.alice, "a word from the bridge").await;
    assert_eq!(notice["content"]["msgtype"], "m.notice", "{notice}");
    assert_no_echo(&rig.memory).await;
    rig.core.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_replies_reactions_and_redactions_cross_both_ways() {
    let mut rig = rig("relay-relations", PASSWORD).await;
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
    rig.alice
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
    let EventKind::Message {
        reply_to: Some(to), ..
    } = &got.kind
    else {
        unreachable!()
    };
    assert_eq!(to.as_str(), first_id);
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
    assert_eq!(react.sender.user.as_str(), "@alice:localhost");
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
    delivered(
        &rig.memory,
        |e| matches!(&e.kind, EventKind::Redaction { target, .. } if target.as_str() == first_id),
    )
    .await;

    // memory → Matrix: everything is the bot's, about the bot's own messages.
    let carol = |id: &str| inbound(MEMORY_ROOM).id(id).from("carol").named("Carol");
    submit(&rig.memory, carol("c1").text("carol's first")).await;
    let c1 = bot_message(&mut rig.alice, "<Carol> carol's first").await;
    let c1_id = c1["event_id"].as_str().expect("event id").to_owned();
    submit(&rig.memory, carol("c2").edit("c1", "carol's second")).await;
    let edit = rig
        .alice
        .wait_timeline(|e| {
            e["content"]["m.relates_to"]["rel_type"] == "m.replace" && e["sender"] == BOT
        })
        .await
        .expect("edit seen");
    assert_eq!(edit["sender"], BOT);
    assert_eq!(edit["content"]["m.relates_to"]["event_id"], c1_id.as_str());
    assert_eq!(
        edit["content"]["m.new_content"]["body"],
        "<Carol> carol's second"
    );
    assert_eq!(edit["content"]["body"], "* <Carol> carol's second");
    submit(&rig.memory, carol("c3").reply("c1", "to myself")).await;
    let reply = bot_message(&mut rig.alice, "<Carol> to myself").await;
    assert_eq!(
        reply["content"]["m.relates_to"]["m.in_reply_to"]["event_id"],
        c1_id.as_str()
    );
    // The bot does not react for others: the reaction becomes a line of text.
    submit(
        &rig.memory,
        inbound(MEMORY_ROOM)
            .id("c4")
            .from("dave")
            .named("Dave")
            .react("c1", "🎉"),
    )
    .await;
    let reacted = rig
        .alice
        .wait_timeline(|e| {
            e["type"] == "m.room.message"
                && e["content"]["body"]
                    .as_str()
                    .is_some_and(|b| b.contains("Dave") && b.contains("reacted 🎉"))
        })
        .await
        .expect("the reaction as text");
    assert_eq!(reacted["sender"], BOT);
    submit(&rig.memory, carol("c6").redact("c1")).await;
    let redaction = rig
        .alice
        .wait_timeline(|e| e["type"] == "m.room.redaction" && e["redacts"] == c1_id.as_str())
        .await
        .expect("carol's message is redacted");
    assert_eq!(redaction["sender"], BOT);
    assert_no_echo(&rig.memory).await;
    let dead = rig.core.dead_letters().expect("dead letters");
    assert!(dead.is_empty(), "dead letters: {dead:?}");
    rig.core.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_and_read_receipts_cross_to_the_memory_side() {
    let mut rig = rig("relay-ephemeral", PASSWORD).await;
    submit(
        &rig.memory,
        inbound(MEMORY_ROOM)
            .id("t1")
            .from("carol")
            .named("Carol")
            .text("ping"),
    )
    .await;
    let ping = bot_message(&mut rig.alice, "<Carol> ping").await;
    rig.alice.typing(&rig.room, true).await.expect("typing");
    let typing = delivered(&rig.memory, |e| {
        matches!(e.kind, EventKind::Typing { active: true })
    })
    .await;
    assert_eq!(typing.sender.user.as_str(), "@alice:localhost");
    rig.alice.typing(&rig.room, false).await.expect("typing");
    delivered(&rig.memory, |e| {
        matches!(e.kind, EventKind::Typing { active: false })
    })
    .await;
    rig.alice
        .read(&rig.room, ping["event_id"].as_str().expect("id"))
        .await
        .expect("read");
    let read = delivered(&rig.memory, |e| {
        matches!(e.kind, EventKind::ReadMarker { .. })
    })
    .await;
    assert_eq!(read.sender.user.as_str(), "@alice:localhost");
    let EventKind::ReadMarker { up_to } = &read.kind else {
        unreachable!()
    };
    assert_eq!(up_to.as_str(), "t1", "read up to carol's own message");
    // The bot's own receipts and typing are never bridged.
    assert_no_echo(&rig.memory).await;
    rig.core.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_cross_both_ways_through_authenticated_media() {
    let mut rig = rig("relay-files", PASSWORD).await;
    static PICTURE: &[u8] = b"\x89PNG\r\n\x1a\n not really a picture, but bytes all the same";
    // memory → Matrix: fetched from its URL, uploaded and posted by the bot, named for carol.
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
    submit(&rig.memory, msg).await;
    let seen = rig
        .alice
        .wait_timeline(|e| e["content"]["msgtype"] == "m.image")
        .await
        .expect("alice sees the image");
    assert_eq!(seen["sender"], BOT);
    assert_eq!(seen["content"]["body"], "<Carol> picture.png");
    assert_eq!(seen["content"]["filename"], "picture.png");
    let mxc = seen["content"]["url"].as_str().expect("an mxc url");
    let fetched = rig.alice.download(mxc).await.expect("download");
    assert_eq!(fetched["size"], PICTURE.len());

    // Matrix → memory: the attachment keeps its mxc:// URI, which the relay adapter fetches
    // with the bot's token (authenticated media) for any other adapter.
    let sent = rig
        .alice
        .send_file(&rig.room, b"hello file", "notes.txt", "text/plain")
        .await
        .expect("file sent");
    let got = delivered(&rig.memory, |e| {
        matches!(&e.kind, EventKind::Message { content, .. } if !content.attachments.is_empty())
    })
    .await;
    assert_eq!(got.sender.user.as_str(), "@alice:localhost");
    let EventKind::Message { content, .. } = &got.kind else {
        unreachable!()
    };
    let attachment = &content.attachments[0];
    assert_eq!(attachment.name, "notes.txt");
    assert_eq!(attachment.url, sent["url"].as_str().expect("url"));
    let ctx = rig.memory.context().await.expect("memory is running");
    let body = ctx
        .fetch_attachment(&AdapterId::new("matrix"), attachment)
        .await
        .expect("the relay adapter fetches the room's media");
    let bytes = body.collect(1 << 20).await.expect("bytes");
    assert_eq!(&bytes[..], b"hello file");
    assert_no_echo(&rig.memory).await;
    rig.core.shutdown().await;
}

/// Logs bob in through the client API: (access token, device ID).
async fn log_in_bob() -> (String, String) {
    let answer: Value = reqwest::Client::new()
        .post(format!(
            "{}/_matrix/client/v3/login",
            test_env("BRIDGE_TEST_SYNAPSE_URL")
        ))
        .json(&json!({
            "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": "bob" },
            "password": "bobpass",
            "initial_device_display_name": "relay test",
        }))
        .send()
        .await
        .expect("login answered")
        .json()
        .await
        .expect("login JSON");
    let field = |name: &str| {
        answer[name]
            .as_str()
            .unwrap_or_else(|| panic!("no {name} in {answer}"))
            .to_owned()
    };
    (field("access_token"), field("device_id"))
}

/// Bob's devices, from the devices API.
async fn devices_of_bob(token: &str) -> Vec<String> {
    let answer: Value = reqwest::Client::new()
        .get(format!(
            "{}/_matrix/client/v3/devices",
            test_env("BRIDGE_TEST_SYNAPSE_URL")
        ))
        .bearer_auth(token)
        .send()
        .await
        .expect("devices answered")
        .json()
        .await
        .expect("devices JSON");
    let mut ids: Vec<String> = answer["devices"]
        .as_array()
        .unwrap_or_else(|| panic!("no devices in {answer}"))
        .iter()
        .filter_map(|d| d["device_id"].as_str().map(str::to_owned))
        .collect();
    ids.sort();
    ids
}

/// The core stops; alice posts `n` messages; a new core on the same store starts: they arrive
/// once each, in order, and nothing older comes again. Returns the new rig's parts.
async fn posted_while_down(rig: Rig, n: usize, tag: &str) -> Rig {
    let Rig {
        _turn,
        core,
        store,
        room,
        mut alice,
        _dir,
        ..
    } = rig;
    core.shutdown().await;
    let want: Vec<String> = (0..n).map(|i| format!("{tag} {i}")).collect();
    for body in &want {
        alice.send(&room, body).await.expect("sent");
    }
    let relay = relay(PASSWORD);
    let (core, memory) = start_core(store.clone(), &relay, &[room.as_str()]).await;
    let last = want.last().expect("messages").clone();
    delivered(&memory, |e| body_of(e) == Some(last.as_str())).await;
    // Anything replayed would have come before or with the last one; give stragglers a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        bodies(&memory),
        want,
        "exactly what was posted while the bridge was down, once, in order"
    );
    Rig {
        _turn,
        core,
        memory,
        store,
        relay,
        room,
        alice,
        _dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_from_the_saved_sync_token_on_the_same_device() {
    let (token, _) = log_in_bob().await;
    let mut rig = rig("relay-restart", PASSWORD).await;
    set_name(&mut rig.alice, &rig.room, "Alice R.").await;
    rig.alice.send(&rig.room, "named").await.expect("sent");
    let named = delivered(&rig.memory, |e| body_of(e) == Some("named")).await;
    assert_eq!(named.sender.display_name.as_deref(), Some("Alice R."));
    let (user, device) = rig.relay.logged_in_as().expect("logged in");
    assert_eq!(user, BOT);
    let devices = devices_of_bob(&token).await;
    assert!(devices.contains(&device), "{device} not in {devices:?}");
    let mut rig = posted_while_down(rig, 5, "while down").await;
    // The new process knows alice's name too (its SDK store starts empty).
    for event in rig.memory.sent() {
        assert_eq!(
            event.sender.display_name.as_deref(),
            Some("Alice R."),
            "{event:?}"
        );
    }
    assert_eq!(
        rig.relay.logged_in_as().map(|(_, d)| d),
        Some(device.clone()),
        "the stored session is reused"
    );
    assert_eq!(
        devices_of_bob(&token).await,
        devices,
        "no new device for the restart"
    );
    // The restarted bridge works both ways.
    rig.memory
        .submit(
            inbound(MEMORY_ROOM)
                .id("after")
                .from("carol")
                .named("Carol")
                .text("after the restart"),
        )
        .await
        .expect("submitted");
    bot_message(&mut rig.alice, "<Carol> after the restart").await;
    assert_no_echo(&rig.memory).await;
    rig.core.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_session_is_replaced_by_a_new_login() {
    let (token, _) = log_in_bob().await;
    let mut rig = rig("relay-relogin", PASSWORD).await;
    let (_, device) = rig.relay.logged_in_as().expect("logged in");
    // The admin of the account deletes the bridge's device: its token is refused from now on.
    let deleted = reqwest::Client::new()
        .delete(format!(
            "{}/_matrix/client/v3/devices/{device}",
            test_env("BRIDGE_TEST_SYNAPSE_URL")
        ))
        .bearer_auth(&token)
        .json(&json!({ "auth": {
            "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": "bob" },
            "password": "bobpass",
        }}))
        .send()
        .await
        .expect("answered");
    assert!(deleted.status().is_success(), "{:?}", deleted.text().await);
    rig.alice
        .send(&rig.room, "while the session is refused")
        .await
        .expect("sent");
    delivered(&rig.memory, |e| {
        body_of(e) == Some("while the session is refused")
    })
    .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let new_device = loop {
        match rig.relay.logged_in_as() {
            Some((_, d)) if d != device => break d,
            _ => {}
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the bot did not log in again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(devices_of_bob(&token).await.contains(&new_device));
    rig.alice
        .send(&rig.room, "after the new login")
        .await
        .expect("sent");
    delivered(&rig.memory, |e| body_of(e) == Some("after the new login")).await;
    submit(
        &rig.memory,
        inbound(MEMORY_ROOM)
            .id("n1")
            .from("carol")
            .named("Carol")
            .text("sent with the new session"),
    )
    .await;
    bot_message(&mut rig.alice, "<Carol> sent with the new session").await;
    let all = bodies(&rig.memory);
    assert_eq!(
        all.iter()
            .filter(|b| *b == "while the session is refused")
            .count(),
        1,
        "{all:?}"
    );
    rig.core.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_downtime_is_caught_up_past_the_sync_timeline_limit() {
    let rig = rig("relay-gap", PASSWORD).await;
    // More than one sync answer carries for a room: the homeserver cuts the timeline, and the
    // bot fetches the rest with /messages.
    let n = TIMELINE_LIMIT as usize + 25;
    let rig = posted_while_down(rig, n, "long gap").await;
    rig.core.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_from_before_the_bot_is_not_bridged() {
    let _turn = TURN.lock().await;
    bridge_tests::log_to_test_output();
    let hs = test_env("BRIDGE_TEST_SYNAPSE_URL");
    let mut alice = MatrixHuman::start("alice", "alicepass", &hs)
        .await
        .expect("alice logs in");
    // Room 0: the bot is invited before it starts (it joins, then syncs for the first time).
    // Room 1: the bot is invited once it is running (it joins on the invite).
    let invited = alice
        .create_room_with(json!({ "name": fresh("relay-history-0"), "invite": [BOT] }))
        .await
        .expect("room created");
    let later = alice
        .create_room(&fresh("relay-history-1"), &[])
        .await
        .expect("room created");
    for room in [&invited, &later] {
        for i in 0..3 {
            alice.send(room, &format!("old {i}")).await.expect("sent");
        }
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).expect("store opens"));
    let relay = relay(PASSWORD);
    let (core, memory) = start_core(store, &relay, &[invited.as_str(), later.as_str()]).await;
    until_syncing(&relay).await;
    alice.invite(&later, BOT).await.expect("invited");
    alice
        .wait_timeline(|e| {
            e["room_id"] == later.as_str()
                && e["type"] == "m.room.member"
                && e["state_key"] == BOT
                && e["content"]["membership"] == "join"
        })
        .await
        .expect("the bot joins the linked room it is invited to");
    alice.send(&invited, "new 0").await.expect("sent");
    alice.send(&later, "new 1").await.expect("sent");
    for i in 0..2 {
        let want = format!("new {i}");
        let got = delivered(&memory, |e| body_of(e) == Some(want.as_str())).await;
        assert_eq!(got.room.as_str(), memory_room(i));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let all = bodies(&memory);
    assert!(
        all.iter().all(|b| !b.starts_with("old")),
        "history was bridged: {all:?}"
    );
    core.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_token_login_uses_that_token_and_its_device() {
    let (token, device) = log_in_bob().await;
    let mut rig = rig("relay-token", &format!("access_token = '{token}'")).await;
    assert_eq!(
        rig.relay.logged_in_as(),
        Some((BOT.to_owned(), device.clone())),
        "the token's own device"
    );
    rig.alice
        .send(&rig.room, "to the token bot")
        .await
        .expect("sent");
    delivered(&rig.memory, |e| body_of(e) == Some("to the token bot")).await;
    rig.memory
        .submit(
            inbound(MEMORY_ROOM)
                .id("k1")
                .from("carol")
                .named("Carol")
                .text("from the token bot"),
        )
        .await
        .expect("submitted");
    bot_message(&mut rig.alice, "<Carol> from the token bot").await;
    assert_no_echo(&rig.memory).await;
    rig.core.shutdown().await;
    let devices = devices_of_bob(&token).await;
    assert!(
        devices.contains(&device),
        "the token's device is still there"
    );
}
