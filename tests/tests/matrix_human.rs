//! The scripted Matrix humans against the Synapse that scripts/test.sh starts: alice (who creates
//! each room), bob, carol and the admin, and for every command the other side receives what was
//! sent, as raw events. Plus a Synapse of a test's own, restarted mid-conversation, and the
//! application service registration seen from a fake bridge. This is the proof that the test
//! infrastructure works.

use bridge_tests::matrix_human::{Dir, MatrixHuman};
use bridge_tests::synapse::{self, AS_TOKEN, HS_TOKEN, Synapse};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const ALICE: &str = "@alice:localhost";
const BOB: &str = "@bob:localhost";

/// Logs `user` in on `homeserver` (the test users' password is `<user>pass`).
async fn login(user: &str, homeserver: &str) -> MatrixHuman {
    MatrixHuman::start(user, &format!("{user}pass"), homeserver)
        .await
        .unwrap_or_else(|e| panic!("{user} logs in: {e:#}"))
}

struct Pair {
    owner: MatrixHuman,
    guest: MatrixHuman,
    room: String,
}

/// `owner` and `guest` logged in on the shared Synapse and joined to a fresh private room that
/// `owner` created (named after the test) and invited `guest` to; each has seen the other's
/// membership, so what follows is news to both.
async fn pair_of(owner: &str, guest: &str, test: &str) -> Pair {
    let hs = synapse::shared_url();
    let (mut owner, mut guest) = tokio::join!(login(owner, &hs), login(guest, &hs));
    let guest_id = guest.user_id().to_owned();
    let room = owner
        .create_room(&bridge_tests::fresh(test), &[&guest_id])
        .await
        .expect("create room");
    let invite = guest
        .wait_invite(|e| e["room_id"] == room.as_str())
        .await
        .expect("the invite arrives");
    assert_eq!(invite["sender"], owner.user_id(), "{invite}");
    assert_eq!(guest.join(&room).await.expect("join"), room);
    for human in [&mut owner, &mut guest] {
        human
            .wait_timeline(|e| {
                e["room_id"] == room.as_str()
                    && e["type"] == "m.room.member"
                    && e["state_key"] == guest_id.as_str()
                    && e["content"]["membership"] == "join"
            })
            .await
            .expect("the join is seen");
    }
    Pair { owner, guest, room }
}

/// alice and bob in a fresh room of alice's.
async fn pair(test: &str) -> Pair {
    pair_of("alice", "bob", test).await
}

/// The timeline event with ID `id` in `room`, as `human` receives it.
async fn seen(human: &mut MatrixHuman, room: &str, id: &str) -> Value {
    human
        .wait_timeline(|e| e["room_id"] == room && e["event_id"] == id)
        .await
        .unwrap_or_else(|e| panic!("{} sees {id}: {e:#}", human.user_id()))
}

#[tokio::test]
async fn invite_join_members_and_text_messages() {
    let Pair {
        owner: mut alice,
        guest: mut bob,
        room,
    } = pair("text").await;
    let members = bob.members(&room).await.expect("members");
    assert_eq!(members["user_ids"], json!([ALICE, BOB]), "{members}");

    let plain = alice.send(&room, "hello bob").await.expect("send");
    let html = alice
        .send_html(&room, "hello *bob*", "hello <em>bob</em>")
        .await
        .expect("send html");
    let notice = alice
        .send_with(
            &room,
            "m.notice",
            "a notice",
            None,
            json!({ "org.example.extra": 7 }),
        )
        .await
        .expect("send notice");

    let e = seen(&mut bob, &room, &plain).await;
    assert_eq!(e["sender"], ALICE, "{e}");
    assert_eq!(e["type"], "m.room.message");
    assert_eq!(
        e["content"],
        json!({ "msgtype": "m.text", "body": "hello bob" })
    );
    assert!(e["state_key"].is_null() && e["redacts"].is_null(), "{e}");
    assert!(e["origin_server_ts"].as_u64().is_some_and(|t| t > 0), "{e}");
    let e = seen(&mut bob, &room, &html).await;
    assert_eq!(
        e["content"],
        json!({ "msgtype": "m.text", "body": "hello *bob*",
                "format": "org.matrix.custom.html", "formatted_body": "hello <em>bob</em>" })
    );
    let e = seen(&mut bob, &room, &notice).await;
    assert_eq!(e["content"]["msgtype"], "m.notice");
    assert_eq!(e["content"]["org.example.extra"], 7);

    // The sender sees its own events too, marked with the transaction ID it used.
    let own = seen(&mut alice, &room, &plain).await;
    assert!(own["unsigned"]["transaction_id"].is_string(), "{own}");

    // bob leaves: alice sees it, bob gets a `left` event.
    bob.leave(&room).await.expect("leave");
    alice
        .wait_timeline(|e| e["state_key"] == BOB && e["content"]["membership"] == "leave")
        .await
        .expect("alice sees bob leave");
    bob.next_event(
        |e| e["event"] == "left" && e["room_id"] == room.as_str(),
        bridge_tests::matrix_human::EVENT_TIMEOUT,
    )
    .await
    .expect("bob's left event");
    alice.quit().await.expect("alice quits");
    bob.quit().await.expect("bob quits");
}

#[tokio::test]
async fn autojoin_on_invite() {
    let hs = synapse::shared_url();
    let (mut alice, bob) = tokio::join!(
        login("alice", &hs),
        MatrixHuman::start_autojoin("bob", "bobpass", &hs)
    );
    let mut bob = bob.expect("bob logs in");
    let room = alice
        .create_room(&bridge_tests::fresh("autojoin"), &[BOB])
        .await
        .expect("create room");
    let invite = bob
        .wait_invite(|e| e["room_id"] == room.as_str())
        .await
        .expect("invite");
    assert_eq!(invite["sender"], ALICE);
    assert!(
        invite["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("autojoin-")),
        "{invite}"
    );
    bob.next_event(
        |e| e["event"] == "autojoined" && e["room_id"] == room.as_str(),
        bridge_tests::matrix_human::EVENT_TIMEOUT,
    )
    .await
    .expect("bob joins by himself");
    alice
        .wait_timeline(|e| e["state_key"] == BOB && e["content"]["membership"] == "join")
        .await
        .expect("alice sees bob join");

    // Off again: the next invite is only reported.
    bob.set_autojoin(false).await.expect("autojoin off");
    let second = alice
        .create_room(&bridge_tests::fresh("no-autojoin"), &[BOB])
        .await
        .expect("create room");
    bob.wait_invite(|e| e["room_id"] == second.as_str())
        .await
        .expect("invite");
    assert!(
        bob.next_event(
            |e| e["event"] == "autojoined" && e["room_id"] == second.as_str(),
            std::time::Duration::from_secs(1),
        )
        .await
        .is_err(),
        "bob did not join"
    );
    let members = alice.members(&second).await.expect("members");
    assert_eq!(members["user_ids"], json!([ALICE]), "{members}");
}

#[tokio::test]
async fn edit_reply_react_redact() {
    let Pair {
        owner: mut alice,
        guest: mut bob,
        room,
    } = pair("relations").await;
    let original = alice
        .send(&room, "the original\nin two lines")
        .await
        .expect("send");

    let edit = alice
        .edit_html(&room, &original, "the edit", "the <b>edit</b>")
        .await
        .expect("edit");
    let e = seen(&mut bob, &room, &edit).await;
    let c = &e["content"];
    assert_eq!(
        c["m.relates_to"],
        json!({ "rel_type": "m.replace", "event_id": original })
    );
    assert_eq!(c["body"], "* the edit");
    assert_eq!(c["formatted_body"], "* the <b>edit</b>");
    assert_eq!(
        c["m.new_content"],
        json!({ "msgtype": "m.text", "body": "the edit",
                "format": "org.matrix.custom.html", "formatted_body": "the <b>edit</b>" })
    );

    // bob replies with the classic fallback that a bridge must strip.
    let reply = bob
        .reply(&room, &original, "my reply")
        .await
        .expect("reply");
    assert_eq!(
        reply["body"],
        "> <@alice:localhost> the original\n> in two lines\n\nmy reply"
    );
    let e = seen(&mut alice, &room, reply["event_id"].as_str().expect("id")).await;
    let c = &e["content"];
    assert_eq!(c["m.relates_to"]["m.in_reply_to"]["event_id"], original);
    assert_eq!(c["body"], reply["body"]);
    assert_eq!(c["format"], "org.matrix.custom.html");
    let html = c["formatted_body"].as_str().expect("formatted_body");
    assert!(
        html.starts_with("<mx-reply><blockquote>") && html.ends_with("</mx-reply>my reply"),
        "{html}"
    );
    assert!(
        html.contains("the original<br>in two lines") && html.contains(ALICE),
        "{html}"
    );

    // A reply to the reply quotes only the reply's own text; one without fallback is bare.
    let nested = alice
        .reply(&room, reply["event_id"].as_str().expect("id"), "nested")
        .await
        .expect("nested reply");
    assert_eq!(nested["body"], "> <@bob:localhost> my reply\n\nnested");
    let bare = alice
        .reply_without_fallback(&room, &original, "bare", None)
        .await
        .expect("bare reply");
    let e = seen(&mut bob, &room, bare["event_id"].as_str().expect("id")).await;
    assert_eq!(e["content"]["body"], "bare");
    assert!(e["content"]["formatted_body"].is_null(), "{e}");
    assert_eq!(
        e["content"]["m.relates_to"]["m.in_reply_to"]["event_id"],
        original
    );

    let reaction = alice.react(&room, &original, "👍").await.expect("react");
    let e = seen(&mut bob, &room, &reaction).await;
    assert_eq!(e["type"], "m.reaction");
    assert_eq!(
        e["content"]["m.relates_to"],
        json!({ "rel_type": "m.annotation", "event_id": original, "key": "👍" })
    );

    let redaction = alice
        .redact(&room, &original, Some("oops"))
        .await
        .expect("redact");
    let e = seen(&mut bob, &room, &redaction).await;
    assert_eq!(e["type"], "m.room.redaction");
    assert_eq!(e["redacts"], original, "{e}");
    assert_eq!(e["content"]["reason"], "oops");

    // The history keeps the redacted event, emptied.
    let history = bob.messages(&room, 20, Dir::Back).await.expect("messages");
    let gone = history
        .iter()
        .find(|e| e["event_id"] == original.as_str())
        .expect("the redacted event is in the history");
    assert_eq!(gone["content"], json!({}), "{gone}");
    assert_eq!(
        gone["unsigned"]["redacted_because"]["event_id"],
        redaction.as_str()
    );
}

/// A 1x1 RGB PNG.
const PNG: [u8; 69] = [
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x02, 0x00, 0x00, 0x00, 0x90, 0x77, 0x53,
    0xde, 0x00, 0x00, 0x00, 0x0c, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0xf8, 0xcf, 0xc0, 0x00,
    0x00, 0x03, 0x01, 0x01, 0x00, 0xc9, 0xfe, 0x92, 0xef, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e,
    0x44, 0xae, 0x42, 0x60, 0x82,
];

#[tokio::test]
async fn files_upload_send_and_download() {
    let Pair {
        owner: mut alice,
        guest: mut bob,
        room,
    } = pair("files").await;
    // 300 kB that compress badly (a linear congruential generator's high bytes).
    let mut x: u32 = 12345;
    let data: Vec<u8> = (0..300_000)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (x >> 24) as u8
        })
        .collect();
    let sent = alice
        .send_file(&room, &data, "blob.bin", "application/octet-stream")
        .await
        .expect("send_file");
    let url = sent["url"].as_str().expect("url").to_owned();
    assert!(url.starts_with("mxc://localhost/"), "{sent}");
    assert_eq!(sent["size"], 300_000);

    let e = seen(&mut bob, &room, sent["event_id"].as_str().expect("id")).await;
    let c = &e["content"];
    assert_eq!(c["msgtype"], "m.file");
    assert_eq!(c["url"], url.as_str());
    assert_eq!(c["body"], "blob.bin");
    assert_eq!(c["filename"], "blob.bin");
    assert_eq!(
        c["info"],
        json!({ "mimetype": "application/octet-stream", "size": 300_000 })
    );

    let got = bob.download(&url).await.expect("download");
    assert_eq!(got["size"], 300_000, "{got}");
    assert_eq!(got["sha256"], sent["sha256"], "the bytes come back as sent");
    assert_eq!(got["content_type"], "application/octet-stream");
    // Authenticated media: without the access token, Synapse refuses.
    let refused = bob
        .download_unauthenticated(&url)
        .await
        .expect_err("no token, no media");
    assert!(format!("{refused:#}").contains("401"), "{refused:#}");

    // The msgtype follows the mimetype.
    let image = alice
        .send_file(&room, &PNG, "dot.png", "image/png")
        .await
        .expect("send image");
    let e = seen(&mut bob, &room, image["event_id"].as_str().expect("id")).await;
    assert_eq!(e["content"]["msgtype"], "m.image");
    let got = bob
        .download(image["url"].as_str().expect("url"))
        .await
        .expect("download image");
    assert_eq!(got["sha256"], image["sha256"]);
    assert_eq!(got["content_type"], "image/png");
}

#[tokio::test]
async fn typing_and_read_receipts_are_ephemeral_events() {
    let Pair {
        owner: mut alice,
        guest: mut bob,
        room,
    } = pair("ephemeral").await;
    alice.typing(&room, true).await.expect("typing");
    let typing = bob
        .wait_ephemeral(|e| {
            e["room_id"] == room.as_str()
                && e["type"] == "m.typing"
                && e["content"]["user_ids"] == json!([ALICE])
        })
        .await
        .expect("bob sees alice typing");
    assert_eq!(typing["content"], json!({ "user_ids": [ALICE] }));
    alice.typing(&room, false).await.expect("stop typing");
    bob.wait_ephemeral(|e| {
        e["room_id"] == room.as_str()
            && e["type"] == "m.typing"
            && e["content"]["user_ids"] == json!([])
    })
    .await
    .expect("bob sees alice stop typing");

    let id = bob.send(&room, "read me").await.expect("send");
    seen(&mut alice, &room, &id).await;
    alice.read(&room, &id).await.expect("read receipt");
    let receipt = bob
        .wait_ephemeral(|e| {
            e["room_id"] == room.as_str()
                && e["type"] == "m.receipt"
                && e["content"][&id]["m.read"][ALICE].is_object()
        })
        .await
        .expect("bob sees alice's receipt");
    assert!(
        receipt["content"][&id]["m.read"][ALICE]["ts"].is_u64(),
        "{receipt}"
    );
}

#[tokio::test]
async fn displayname_topic_name_state_and_custom_events() {
    // carol here only: a display name is global, it changes her member event in every room.
    let Pair {
        owner: mut carol,
        guest: mut bob,
        room,
    } = pair_of("carol", "bob", "profile").await;
    let name = bridge_tests::fresh("Carol");
    carol.displayname(&name).await.expect("displayname");
    let e = bob
        .wait_timeline(|e| {
            e["room_id"] == room.as_str()
                && e["type"] == "m.room.member"
                && e["state_key"] == "@carol:localhost"
                && e["content"]["displayname"] == name.as_str()
        })
        .await
        .expect("bob sees the new display name");
    assert_eq!(e["content"]["membership"], "join");
    let members = bob.members(&room).await.expect("members");
    let carol_member = members["members"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["user_id"] == "@carol:localhost"))
        .expect("carol is a member");
    assert_eq!(carol_member["display_name"], name.as_str());

    let topic = carol.topic(&room, "the new topic").await.expect("topic");
    let e = seen(&mut bob, &room, &topic).await;
    assert_eq!(e["type"], "m.room.topic");
    assert_eq!(e["state_key"], "");
    assert_eq!(e["content"]["topic"], "the new topic");
    let renamed = carol
        .room_name(&room, "the new name")
        .await
        .expect("room name");
    let e = seen(&mut bob, &room, &renamed).await;
    assert_eq!(e["type"], "m.room.name");
    assert_eq!(e["content"], json!({ "name": "the new name" }));
    assert_eq!(
        bob.state(&room, "m.room.name", "").await.expect("state"),
        json!({ "name": "the new name" })
    );
    assert_eq!(
        bob.state(&room, "m.room.topic", "").await.expect("state")["topic"],
        "the new topic"
    );
    let missing = bob
        .state(&room, "org.example.nothing", "")
        .await
        .expect_err("no such state");
    assert!(
        format!("{missing:#}").contains("M_NOT_FOUND"),
        "{missing:#}"
    );

    let custom = carol
        .send_raw(&room, "org.example.custom", json!({ "x": [1, 2] }))
        .await
        .expect("send_raw");
    let e = seen(&mut bob, &room, &custom).await;
    assert_eq!(e["type"], "org.example.custom");
    assert_eq!(e["content"], json!({ "x": [1, 2] }));
    let state = carol
        .send_state(&room, "org.example.state", "k", json!({ "v": true }))
        .await
        .expect("send_state");
    let e = seen(&mut bob, &room, &state).await;
    assert_eq!(e["state_key"], "k");
    assert_eq!(
        bob.state(&room, "org.example.state", "k")
            .await
            .expect("state"),
        json!({ "v": true })
    );
}

#[tokio::test]
async fn messages_come_in_order() {
    let Pair {
        owner: mut alice,
        guest: mut bob,
        room,
    } = pair("order").await;
    let mut ids = Vec::new();
    for i in 1..=5 {
        ids.push(alice.send(&room, &format!("m{i}")).await.expect("send"));
    }
    // The sync stream delivers them in order too.
    for id in &ids {
        let e = bob
            .wait_timeline(|e| e["room_id"] == room.as_str() && e["type"] == "m.room.message")
            .await
            .expect("next message");
        assert_eq!(e["event_id"], id.as_str());
    }

    let bodies = |events: &[Value]| -> Vec<String> {
        events
            .iter()
            .filter(|e| e["type"] == "m.room.message")
            .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
            .collect()
    };
    let newest = bob.messages(&room, 5, Dir::Back).await.expect("messages");
    assert_eq!(bodies(&newest), ["m5", "m4", "m3", "m2", "m1"]);
    let all = bob
        .messages(&room, 100, Dir::Forward)
        .await
        .expect("messages");
    assert_eq!(all[0]["type"], "m.room.create", "oldest first");
    assert_eq!(bodies(&all), ["m1", "m2", "m3", "m4", "m5"]);
}

#[tokio::test]
async fn forward_extremities_through_the_admin_api() {
    let hs = synapse::shared_url();
    let mut admin = login("admin", &hs).await;
    let room = admin
        .create_room(&bridge_tests::fresh("extremities"), &[ALICE])
        .await
        .expect("create room");
    let id = admin.send(&room, "one").await.expect("send");
    seen(&mut admin, &room, &id).await;
    let count = admin
        .forward_extremities(&room)
        .await
        .expect("forward_extremities");
    assert_eq!(count, 1, "a linear room has one forward extremity");

    let mut alice = login("alice", &hs).await;
    alice.join(&room).await.expect("alice joins");
    let refused = alice
        .forward_extremities(&room)
        .await
        .expect_err("alice is no admin");
    assert!(format!("{refused:#}").contains("403"), "{refused:#}");
}

/// A port nothing listens on now (the OS's pick for an ephemeral bind).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Starts a Synapse of the test's own on a free port, off the runtime's thread (it takes a
/// couple of seconds). The tests of this file run in parallel: a port free when picked may be
/// taken by another test's server before this one listens, so a taken port means another try.
async fn own_synapse(as_port: u16) -> Synapse {
    let mut tries = 0;
    loop {
        let port = free_port();
        let started = tokio::task::spawn_blocking(move || Synapse::start(port, as_port))
            .await
            .expect("the start task");
        match started {
            Ok(server) => return server,
            Err(e) if tries < 4 && format!("{e:#}").contains("already listens") => tries += 1,
            Err(e) => panic!("own Synapse on {port}: {e:#}"),
        }
    }
}

#[tokio::test]
async fn own_synapse_survives_a_restart() {
    let mut server = own_synapse(free_port()).await;
    let hs = server.url();
    let mut alice = login("alice", &hs).await;
    let room = alice
        .create_room("before the restart", &[])
        .await
        .expect("create room");
    let before = alice.send(&room, "before").await.expect("send");
    seen(&mut alice, &room, &before).await;

    server = tokio::task::spawn_blocking(move || {
        server.restart().expect("restart");
        server
    })
    .await
    .expect("the restart task");
    assert!(server.is_running());

    // alice's client noticed and carries on with the same login.
    alice
        .next_event(
            |e| e["event"] == "sync_resumed",
            std::time::Duration::from_secs(30),
        )
        .await
        .expect("alice's sync resumes");
    // A client that logs in after the restart: the users and the room are still there.
    let mut bob = login("bob", &hs).await;
    alice.invite(&room, BOB).await.expect("invite");
    bob.wait_invite(|e| e["room_id"] == room.as_str())
        .await
        .expect("invite");
    bob.join(&room).await.expect("join");
    let after = alice.send(&room, "after").await.expect("send");
    seen(&mut bob, &room, &after).await;
    let history = bob.messages(&room, 10, Dir::Back).await.expect("messages");
    assert!(
        history.iter().any(|e| e["event_id"] == before.as_str()),
        "the history from before the restart: {history:?}"
    );

    alice.quit().await.expect("alice quits");
    bob.quit().await.expect("bob quits");
    server.stop().expect("stop");
    assert!(!server.is_running());
}

/// One request to Synapse's client API (HTTP/1.0, so the answer ends with the connection);
/// the status and the JSON body.
async fn http(port: u16, method: &str, path: &str, token: &str, body: &Value) -> (u16, Value) {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let body = body.to_string();
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("request");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("answer");
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer.split_once("\r\n\r\n").expect("a header");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// A fake bridge's application service endpoint: answers every request 200 `{}` (with a
/// Content-Length, or Synapse retries) and passes on each request's path, Authorization
/// header and JSON body.
async fn fake_bridge(listener: TcpListener, seen: mpsc::UnboundedSender<(String, String, Value)>) {
    while let Ok((stream, _)) = listener.accept().await {
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut stream = BufReader::new(stream);
            loop {
                let mut line = String::new();
                if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                let path = line.split(' ').nth(1).unwrap_or_default().to_owned();
                let (mut length, mut auth) = (0, String::new());
                loop {
                    let mut header = String::new();
                    if stream.read_line(&mut header).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let header = header.trim_end();
                    if header.is_empty() {
                        break;
                    }
                    let (name, value) = header.split_once(':').unwrap_or((header, ""));
                    match name.to_ascii_lowercase().as_str() {
                        "content-length" => length = value.trim().parse().unwrap_or(0),
                        "authorization" => auth = value.trim().to_owned(),
                        _ => {}
                    }
                }
                let mut body = vec![0; length];
                if stream.read_exact(&mut body).await.is_err() {
                    return;
                }
                let answer = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                              Content-Length: 2\r\n\r\n{}";
                if stream.get_mut().write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
                let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let _ = seen.send((path, auth, json));
            }
        });
    }
}

#[tokio::test]
async fn appservice_registration_gets_events_and_ephemeral_events() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let as_port = listener.local_addr().expect("address").port();
    let (tx, mut pushed) = mpsc::unbounded_channel();
    tokio::spawn(fake_bridge(listener, tx));
    let server = own_synapse(as_port).await;

    // The registration's namespace: the bridge may create its users, and only those.
    let register = |name: &str| json!({ "type": "m.login.application_service", "username": name });
    let (status, answer) = http(
        server.port,
        "POST",
        "/_matrix/client/v3/register",
        AS_TOKEN,
        &register("_bridge_probe"),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["user_id"], "@_bridge_probe:localhost");
    let (status, answer) = http(
        server.port,
        "POST",
        "/_matrix/client/v3/register",
        AS_TOKEN,
        &register("not_bridge"),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["errcode"], "M_EXCLUSIVE");

    // The bridge's bot joins alice's room: from then on the room's events go to the bridge.
    let mut alice = login("alice", &server.url()).await;
    let room = alice
        .create_room("with the bridge", &["@_bridge_bot:localhost"])
        .await
        .expect("create room");
    let room_path: String = room
        .bytes()
        .map(|b| match b {
            b'!' => "%21".to_owned(),
            b':' => "%3A".to_owned(),
            _ => char::from(b).to_string(),
        })
        .collect();
    let (status, answer) = http(
        server.port,
        "POST",
        &format!("/_matrix/client/v3/join/{room_path}"),
        AS_TOKEN,
        &json!({}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");

    let id = alice.send(&room, "to the bridge").await.expect("send");
    alice.typing(&room, true).await.expect("typing");
    seen(&mut alice, &room, &id).await;
    alice.read(&room, &id).await.expect("read");

    // Transactions carry the message, then the typing notification and the receipt, under the
    // stable key and (as the registration also sets the unstable flag) the MSC2409 one.
    let (mut message, mut typing, mut receipt) = (false, false, false);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while !(message && typing && receipt) {
        let (path, auth, txn) = tokio::time::timeout_at(deadline, pushed.recv())
            .await
            .unwrap_or_else(|_| {
                panic!("no transaction with all of message {message}, typing {typing}, receipt {receipt}")
            })
            .expect("the fake bridge runs");
        if !path.starts_with("/_matrix/app/v1/transactions/") {
            continue;
        }
        assert_eq!(auth, format!("Bearer {HS_TOKEN}"));
        let events = txn["events"].as_array().cloned().unwrap_or_default();
        message |= events.iter().any(|e| e["event_id"] == id.as_str());
        let ephemeral = txn["ephemeral"].as_array().cloned().unwrap_or_default();
        assert_eq!(
            txn["ephemeral"], txn["de.sorunome.msc2409.ephemeral"],
            "both keys carry the same events"
        );
        typing |= ephemeral.iter().any(|e| {
            e["type"] == "m.typing"
                && e["room_id"] == room.as_str()
                && e["content"]["user_ids"] == json!([ALICE])
        });
        receipt |= ephemeral
            .iter()
            .any(|e| e["type"] == "m.receipt" && e["content"][&id]["m.read"][ALICE].is_object());
    }
}
