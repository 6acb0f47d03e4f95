//! XMPP ⇄ Matrix through both real servers: the core in this process with the XMPP adapter in
//! component mode (the shared Prosody of scripts/test.sh) and the Matrix appservice adapter (the
//! shared Synapse), linking a MUC and a Matrix room; a slixmpp human (xavier) in the MUC and a
//! matrix-nio human (carol) in the Matrix room. Nothing of the core's testkit is in the path:
//! what each human's own client received is what is asserted.
//!
//! Prosody serves the component domain to one connection at a time and Synapse pushes to one
//! appservice port, so the tests of this file take turns (cargo runs test binaries one after
//! another, so other binaries do not collide with them).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bridge_core::{AdapterId, Core, Link, RoomSettings, SledStore, Store};
use bridge_tests::matrix_human::MatrixHuman;
use bridge_tests::matrix_rig::{
    BOT, appservice_adapter, bodies_with, bot_joined, count_sequence, history,
};
use bridge_tests::xmpp_human::{Kind, XmppHuman};
use bridge_tests::{fresh, test_env};
use bridge_xmpp::XmppAdapter;
use serde_json::{Value, json};

const GC: Kind = Kind::Groupchat;
const WAIT: Duration = Duration::from_secs(20);
/// The Matrix human's display name: her puppet's nick in the MUC. She is the test user carol:
/// alice's name is set by the matrix_adapter tests, which use the same server.
const CAROL_NAME: &str = "Carol Matrix";

static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Rig {
    _turn: tokio::sync::MutexGuard<'static, ()>,
    core: Core,
    /// The MUC's bare address.
    muc: String,
    /// The Matrix room's ID.
    room: String,
    carol: MatrixHuman,
    xavier: XmppHuman,
    _dir: tempfile::TempDir,
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

/// The core linking a fresh MUC with carol's fresh Matrix room; xavier is in the MUC; both
/// directions have carried a message before the rig is handed over.
async fn rig(test: &str) -> Rig {
    let turn = TURN.lock().await;
    bridge_tests::log_to_test_output();
    let hs = test_env("BRIDGE_TEST_SYNAPSE_URL");
    let mut carol = MatrixHuman::start("carol", "carolpass", &hs)
        .await
        .expect("carol logs in");
    carol.displayname(CAROL_NAME).await.expect("name set");
    let room = carol
        .create_room_with(json!({
            "name": fresh(test), "public": true, "invite": [BOT],
            "power_level_override": { "users": { BOT: 100 } },
        }))
        .await
        .expect("room created");
    let muc = format!("{}@conference.localhost", fresh(test));

    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).expect("store opens"));
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
    let core = Core::builder(store)
        .adapter("matrix", Arc::new(matrix))
        .adapter("xmpp", Arc::new(xmpp))
        .room(
            "lobby",
            RoomSettings::default(),
            vec![
                Link::new("matrix", room.as_str()),
                Link::new("xmpp", muc.as_str()),
            ],
        )
        .start()
        .await
        .expect("core starts");
    bot_joined(&mut carol, &room, WAIT)
        .await
        .expect("the bridge bot joins the Matrix room");

    let jid = format!("{}@localhost", fresh("xavier"));
    let mut xavier = XmppHuman::start(&jid, "pw", &test_env("BRIDGE_TEST_XMPP_C2S"))
        .await
        .expect("xavier online");
    // The bridge is in the MUC already (it created it): its presence comes with the join.
    xavier.join(&muc, "Xavier").await.expect("xavier joins");
    xavier
        .next_event(|e| e["event"] == "presence" && e["nick"] == "bridge", WAIT)
        .await
        .expect("the bridge is in the MUC");

    // Synapse backs off pushing to an appservice that was down (another test's bridge stopped
    // a moment ago): a message each way proves both paths before the test starts.
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
    Rig {
        _turn: turn,
        core,
        muc,
        room,
        carol,
        xavier,
        _dir: dir,
    }
}

/// The ghost of an XMPP user, as the Matrix adapter names it.
fn is_xmpp_ghost(user_id: &Value) -> bool {
    text(user_id).starts_with("@_bridge_xmpp_") && text(user_id).ends_with(":localhost")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xmpp_and_matrix_humans_talk_through_both_servers() {
    let Rig {
        _turn,
        core,
        muc,
        room,
        mut carol,
        mut xavier,
        _dir,
    } = rig("xm-features").await;

    // Text, XMPP → Matrix: xavier's ghost, named after his nick.
    let hello = xavier
        .send(&muc, GC, "hello from xmpp")
        .await
        .expect("sent");
    let hello_xmpp_id = text(&hello["id"]).to_owned();
    let seen = carol
        .wait_timeline(|e| e["content"]["body"] == "hello from xmpp")
        .await
        .expect("carol sees xavier's message");
    let ghost = text(&seen["sender"]).to_owned();
    assert!(is_xmpp_ghost(&seen["sender"]), "sent by a ghost: {ghost}");
    let hello_matrix_id = text(&seen["event_id"]).to_owned();
    let members = carol.members(&room).await.expect("members");
    let ghost_name = members["members"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["user_id"] == ghost.as_str()))
        .map(|m| text(&m["display_name"]).to_owned());
    assert_eq!(ghost_name.as_deref(), Some("Xavier"), "{members}");
    let hello_reflection = xavier
        .wait_message(|m| m["body"] == "hello from xmpp")
        .await
        .expect("the MUC reflects it");
    let hello_stanza_id = text(&hello_reflection["stanza_id"]).to_owned();

    // Text, Matrix → XMPP: carol's puppet, under her display name.
    let hi_matrix_id = carol.send(&room, "hello from matrix").await.expect("sent");
    let hi = xavier
        .wait_message(|m| m["body"] == "hello from matrix")
        .await
        .expect("xavier sees carol's message");
    assert_eq!(text(&hi["from"]), format!("{muc}/{CAROL_NAME}"));
    let hi_id = text(&hi["id"]).to_owned();
    let hi_stanza_id = text(&hi["stanza_id"]).to_owned();
    assert!(!hi_stanza_id.is_empty(), "{hi}");

    // An edit each way.
    xavier
        .correct(&muc, GC, &hello_xmpp_id, "hello from xmpp, corrected")
        .await
        .expect("corrected");
    let edit = carol
        .wait_timeline(|e| e["content"]["m.relates_to"]["rel_type"] == "m.replace")
        .await
        .expect("carol sees the edit");
    assert_eq!(edit["sender"], ghost.as_str());
    assert_eq!(
        edit["content"]["m.relates_to"]["event_id"],
        hello_matrix_id.as_str()
    );
    assert_eq!(
        edit["content"]["m.new_content"]["body"],
        "hello from xmpp, corrected"
    );
    carol
        .edit(&room, &hi_matrix_id, "hello from matrix, edited")
        .await
        .expect("edited");
    let correction = xavier
        .wait_message(|m| m["body"] == "hello from matrix, edited")
        .await
        .expect("xavier sees the correction");
    assert_eq!(text(&correction["replace_id"]), hi_id);
    assert_eq!(text(&correction["from"]), format!("{muc}/{CAROL_NAME}"));

    // A reply each way.
    xavier
        .reply(
            &muc,
            GC,
            "xavier answers",
            &hi_stanza_id,
            &format!("{muc}/{CAROL_NAME}"),
            Some("hello from matrix"),
        )
        .await
        .expect("replied");
    let reply = carol
        .wait_timeline(|e| {
            text(&e["content"]["body"]).ends_with("xavier answers") && e["sender"] == ghost.as_str()
        })
        .await
        .expect("carol sees the reply");
    assert_eq!(
        reply["content"]["m.relates_to"]["m.in_reply_to"]["event_id"],
        hi_matrix_id.as_str(),
        "{reply}"
    );
    assert!(
        !text(&reply["content"]["body"]).contains("> "),
        "the XMPP fallback quote is not carried as text: {reply}"
    );
    carol
        .reply(&room, &hello_matrix_id, "carol answers")
        .await
        .expect("replied");
    let answer = xavier
        .wait_message(|m| text(&m["body"]).contains("carol answers"))
        .await
        .expect("xavier sees carol's reply");
    let to = text(&answer["reply"]["id"]);
    assert!(
        to == hello_stanza_id || to == hello_xmpp_id,
        "the reply points at xavier's message ({hello_stanza_id} / {hello_xmpp_id}): {answer}"
    );

    // A reaction each way.
    xavier
        .react(&muc, GC, &hi_stanza_id, &["👍"])
        .await
        .expect("reacted");
    let reaction = carol
        .wait_timeline(|e| e["type"] == "m.reaction")
        .await
        .expect("carol sees the reaction");
    assert_eq!(reaction["sender"], ghost.as_str());
    assert_eq!(reaction["content"]["m.relates_to"]["key"], "👍");
    assert_eq!(
        reaction["content"]["m.relates_to"]["event_id"],
        hi_matrix_id.as_str()
    );
    let reaction_id = text(&reaction["event_id"]).to_owned();
    carol
        .react(&room, &hello_matrix_id, "🎉")
        .await
        .expect("reacted");
    let reactions = xavier
        .wait_message(|m| {
            !m["reactions"].is_null() && text(&m["from"]) == format!("{muc}/{CAROL_NAME}")
        })
        .await
        .expect("xavier sees carol's reaction");
    assert_eq!(reactions["reactions"]["keys"], json!(["🎉"]));
    let about = text(&reactions["reactions"]["id"]);
    assert!(
        about == hello_stanza_id || about == hello_xmpp_id,
        "the reaction is to xavier's message: {reactions}"
    );
    assert_eq!(text(&reactions["from"]), format!("{muc}/{CAROL_NAME}"));
    // Xavier takes his reaction back: the Matrix reaction is redacted.
    xavier
        .react(&muc, GC, &hi_stanza_id, &[])
        .await
        .expect("unreacted");
    carol
        .wait_timeline(|e| e["type"] == "m.room.redaction" && e["redacts"] == reaction_id.as_str())
        .await
        .expect("the reaction is redacted on Matrix");

    // A retraction / redaction each way.
    xavier
        .retract(&muc, GC, &hello_stanza_id)
        .await
        .expect("retracted");
    let redaction = carol
        .wait_timeline(|e| {
            e["type"] == "m.room.redaction" && e["redacts"] == hello_matrix_id.as_str()
        })
        .await
        .expect("carol sees xavier's message deleted");
    assert_eq!(redaction["sender"], ghost.as_str());
    carol
        .redact(&room, &hi_matrix_id, Some("never mind"))
        .await
        .expect("redacted");
    let retraction = xavier
        .wait_message(|m| {
            !m["retract_id"].is_null() && text(&m["from"]) == format!("{muc}/{CAROL_NAME}")
        })
        .await
        .expect("xavier sees carol's message retracted");
    assert_eq!(
        text(&retraction["retract_id"]),
        hi_stanza_id,
        "{retraction}"
    );

    // A file, XMPP → Matrix: uploaded to Prosody (XEP-0363), shared by OOB, re-hosted in
    // Synapse's media repository.
    let files = tempfile::tempdir().expect("temp dir");
    let path = files.path().join("notes.txt");
    let notes: Vec<u8> = (0..50_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    std::fs::write(&path, &notes).expect("file written");
    let uploaded = xavier
        .upload(&path, Some("text/plain"))
        .await
        .expect("uploaded");
    xavier
        .oob(&muc, GC, text(&uploaded["url"]), None)
        .await
        .expect("shared");
    let file = carol
        .wait_timeline(|e| text(&e["content"]["url"]).starts_with("mxc://"))
        .await
        .expect("carol sees the file");
    assert_eq!(file["sender"], ghost.as_str());
    assert_eq!(file["content"]["body"], "notes.txt", "{file}");
    let fetched = carol
        .download(text(&file["content"]["url"]))
        .await
        .expect("carol downloads it from Synapse");
    assert_eq!(fetched["size"], json!(notes.len()));
    assert_eq!(fetched["sha256"], uploaded["sha256"], "the same bytes");

    // A file, Matrix → XMPP: fetched from Synapse's authenticated media, uploaded to Prosody.
    let picture: Vec<u8> = (0..120_000u32).map(|i| (i % 251) as u8).collect();
    let sent = carol
        .send_file(&room, &picture, "picture.png", "image/png")
        .await
        .expect("file sent");
    let shared = xavier
        .wait_message(|m| {
            m["oob_urls"].as_array().is_some_and(|u| !u.is_empty())
                && text(&m["from"]) == format!("{muc}/{CAROL_NAME}")
        })
        .await
        .expect("xavier gets the file as an OOB link");
    assert_eq!(text(&shared["from"]), format!("{muc}/{CAROL_NAME}"));
    let url = text(&shared["oob_urls"][0]).to_owned();
    assert!(
        url.contains("/file_share/"),
        "re-hosted on Prosody's upload service: {url}"
    );
    let rehosted = xavier.fetch(&url).await.expect("xavier fetches it");
    assert_eq!(rehosted["size"], json!(picture.len()));
    assert_eq!(rehosted["sha256"], sent["sha256"], "the same bytes");

    // Typing, XMPP → Matrix and Matrix → XMPP.
    xavier
        .chatstate(&muc, GC, "composing")
        .await
        .expect("typing");
    carol
        .wait_ephemeral(|e| {
            e["type"] == "m.typing"
                && e["room_id"] == room.as_str()
                && e["content"]["user_ids"]
                    .as_array()
                    .is_some_and(|u| u.iter().any(|u| u == ghost.as_str()))
        })
        .await
        .expect("carol sees xavier typing");
    carol.typing(&room, true).await.expect("typing");
    xavier
        .wait_message(|m| {
            m["chat_state"] == "composing" && text(&m["from"]) == format!("{muc}/{CAROL_NAME}")
        })
        .await
        .expect("xavier sees carol typing");

    // Nothing came back to where it was said: no echo of carol's words from a ghost, none of
    // xavier's from carol's puppet.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let echoes: Vec<Value> = carol
        .drain()
        .into_iter()
        .filter(|e| {
            e["event"] == "timeline"
                && e["room_id"] == room.as_str()
                && is_xmpp_ghost(&e["sender"])
                && text(&e["content"]["body"]).contains("from matrix")
        })
        .collect();
    assert!(echoes.is_empty(), "echoed into Matrix: {echoes:?}");
    let echoes: Vec<Value> = xavier
        .drain()
        .into_iter()
        .filter(|e| {
            e["event"] == "message"
                && text(&e["from"]) == format!("{muc}/{CAROL_NAME}")
                && text(&e["body"]).contains("from xmpp")
        })
        .collect();
    assert!(echoes.is_empty(), "echoed into XMPP: {echoes:?}");
    assert!(
        core.dead_letters().expect("dead letters").is_empty(),
        "nothing was given up on: {:?}",
        core.dead_letters()
    );
    core.shutdown().await;
    let _ = xavier.quit().await;
}

/// The acceptance test: 5,000 messages posted to the MUC as fast as one client can
/// reach the Matrix room once each, in order, without forking the room's DAG.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5000_message_xmpp_burst_arrives_once_in_order_with_a_linear_dag() {
    const N: usize = 5000;
    const PREFIX: &str = "burst ";
    let Rig {
        _turn,
        core,
        muc,
        room,
        mut carol,
        mut xavier,
        _dir,
    } = rig("xm-burst").await;
    let started = Instant::now();
    for i in 0..N {
        xavier
            .send(&muc, GC, &format!("{PREFIX}{i}"))
            .await
            .expect("sent");
    }
    let posted = started.elapsed();
    // Until every message is in the room, or nothing more arrives for a long while (a hung or
    // losing bridge): the counts below tell which. Progress is followed in carol's sync
    // stream, which costs Synapse nothing; a sync that skipped events (a gappy one) is made up
    // for by reading the history when the stream goes quiet.
    let mut synced = 0;
    let mut in_history = 0;
    let mut progress = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let new = carol
            .drain()
            .iter()
            .filter(|e| {
                e["event"] == "timeline"
                    && e["room_id"] == room.as_str()
                    && text(&e["content"]["body"]).starts_with(PREFIX)
            })
            .count();
        if new > 0 {
            synced += new;
            progress = Instant::now();
        }
        if synced >= N {
            break;
        }
        if progress.elapsed() > Duration::from_secs(15) {
            let events = history(&mut carol, &room).await.expect("history");
            let now = bodies_with(&events, PREFIX).len();
            if now >= N || (now == in_history && progress.elapsed() > Duration::from_secs(120)) {
                break;
            }
            if now > in_history {
                in_history = now;
                progress = Instant::now();
            }
        }
    }
    let arrived = started.elapsed();
    // A late duplicate would show now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let events = history(&mut carol, &room).await.expect("history");
    let bodies = bodies_with(&events, PREFIX);
    let count = count_sequence(&bodies, PREFIX, N);
    let mut admin = MatrixHuman::start("admin", "adminpass", &test_env("BRIDGE_TEST_SYNAPSE_URL"))
        .await
        .expect("admin logs in");
    let extremities = admin
        .forward_extremities(&room)
        .await
        .expect("forward extremities");
    let senders: std::collections::BTreeSet<&str> = events
        .iter()
        .filter(|e| text(&e["content"]["body"]).starts_with(PREFIX))
        .filter_map(|e| e["sender"].as_str())
        .collect();
    println!(
        "XMPP burst of {N}: posted in {:.1} s, all in the Matrix room after {:.1} s \
         ({:.0} msg/s end to end): {count}; forward extremities {extremities}",
        posted.as_secs_f64(),
        arrived.as_secs_f64(),
        N as f64 / arrived.as_secs_f64(),
    );
    assert_eq!(count.lost, 0, "lost");
    assert_eq!(count.duplicated, 0, "duplicated");
    assert_eq!(count.out_of_order, 0, "out of order");
    assert!(
        extremities <= 2,
        "{extremities} forward extremities: the DAG forked"
    );
    assert_eq!(senders.len(), 1, "all from xavier's ghost: {senders:?}");
    assert!(core.dead_letters().expect("dead letters").is_empty());
    let _ = admin.quit().await;
    core.shutdown().await;
    let _ = xavier.quit().await;
}

/// Avatars cross both ways through both servers and real clients: xavier's (a vCard photo
/// announced in his MUC presence, XEP-0153) becomes his ghost's Matrix avatar, the same bytes;
/// carol's Matrix avatar becomes her puppet's (its presence's hash and its vCard's photo).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avatars_cross_between_xmpp_and_matrix() {
    let Rig {
        _turn,
        core,
        muc,
        room,
        mut carol,
        mut xavier,
        _dir,
    } = rig("xm-avatars").await;
    let picture =
        |seed: u32| -> Vec<u8> { (0..4_000u32).map(|i| (i * seed % 251) as u8).collect() };
    let sha256 = |bytes: &[u8]| {
        use sha2::Digest as _;
        format!("{:x}", sha2::Sha256::digest(bytes))
    };
    let sha1 = |bytes: &[u8]| {
        use sha1::Digest as _;
        format!("{:x}", sha1::Sha1::digest(bytes))
    };

    // XMPP → Matrix.
    let xaviers = picture(7);
    let set = xavier
        .avatar(&xaviers, "image/png")
        .await
        .expect("avatar set");
    assert_eq!(text(&set["sha1"]), sha1(&xaviers));
    let deadline = Instant::now() + Duration::from_secs(30);
    let avatar_url = loop {
        let members = carol.members(&room).await.expect("members");
        let url = members["members"].as_array().and_then(|m| {
            m.iter()
                .find(|m| is_xmpp_ghost(&m["user_id"]) && m["display_name"] == "Xavier")
                .and_then(|m| m["avatar_url"].as_str().map(str::to_owned))
        });
        if let Some(url) = url.filter(|u| !u.is_empty()) {
            break url;
        }
        assert!(
            Instant::now() < deadline,
            "no avatar on xavier's ghost: {members}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let downloaded = carol
        .download(&avatar_url)
        .await
        .expect("the avatar downloads");
    assert_eq!(
        text(&downloaded["sha256"]),
        sha256(&xaviers),
        "{downloaded}"
    );

    // Matrix → XMPP.
    let carols = picture(13);
    carol
        .avatar(&carols, "image/png")
        .await
        .expect("avatar set");
    let hash = sha1(&carols);
    xavier
        .next_event(
            |e| e["event"] == "presence" && e["nick"] == CAROL_NAME && e["photo"] == hash.as_str(),
            Duration::from_secs(30),
        )
        .await
        .expect("carol's puppet announces her avatar");
    let card = xavier
        .vcard(&format!("{muc}/{CAROL_NAME}"))
        .await
        .expect("the puppet's vCard");
    assert_eq!(card["photo"]["sha1"], hash.as_str(), "{card}");
    core.shutdown().await;
}
