//! The scripted XMPP humans against the Prosody that scripts/test.sh starts: two users (alice,
//! who creates each room and so owns it, and bob) in a room, and for every command the other
//! side receives what was sent, parsed. This is the proof that the test client works.

use bridge_tests::xmpp_human::{Kind, XmppHuman};
use serde_json::{Value, json};

const GC: Kind = Kind::Groupchat;

fn c2s() -> String {
    std::env::var("BRIDGE_TEST_XMPP_C2S").expect(
        "BRIDGE_TEST_XMPP_C2S is not set: run the tests through scripts/test.sh, which starts \
         Prosody (prosody_start in scripts/servers.sh)",
    )
}

/// A room name no other test (or earlier run against the same server) uses.
fn fresh_room(test: &str) -> String {
    format!("{}@conference.localhost", bridge_tests::fresh(test))
}

struct Pair {
    alice: XmppHuman,
    bob: XmppHuman,
    room: String,
    /// alice's and bob's join replies.
    alice_join: Value,
    bob_join: Value,
}

/// alice and bob online and in a fresh room; alice joined first, so she owns it.
async fn pair(test: &str) -> Pair {
    let server = c2s();
    let (alice, bob) = tokio::join!(
        XmppHuman::start("xh-alice@localhost", "alice-pw", &server),
        XmppHuman::start("xh-bob@localhost", "bob-pw", &server),
    );
    let (mut alice, mut bob) = (alice.expect("alice online"), bob.expect("bob online"));
    let room = fresh_room(test);
    let alice_join = alice.join(&room, "alice").await.expect("alice joins");
    let bob_join = bob.join(&room, "bob").await.expect("bob joins");
    Pair {
        alice,
        bob,
        room,
        alice_join,
        bob_join,
    }
}

fn id(reply: &Value) -> String {
    reply["id"]
        .as_str()
        .expect("the reply has an id")
        .to_owned()
}

#[tokio::test]
async fn join_presence_nick_configure_leave_dm_and_raw() {
    let Pair {
        mut alice,
        mut bob,
        room,
        alice_join,
        bob_join,
    } = pair("presence").await;
    assert_eq!(
        alice_join["status_codes"],
        json!([110, 201]),
        "{alice_join}"
    );
    assert_eq!(alice_join["item"]["affiliation"], "owner");
    assert_eq!(alice_join["item"]["role"], "moderator");
    assert_eq!(bob_join["status_codes"], json!([110]), "{bob_join}");
    assert_eq!(bob_join["item"]["role"], "participant");
    let bob_oid = bob_join["occupant_id"].as_str().expect("occupant-id");

    // alice sees bob arrive, with the same occupant-id (and, as a moderator, his real JID).
    let p = alice
        .wait_presence(|p| p["nick"] == "bob")
        .await
        .expect("bob's presence");
    assert_eq!(p["occupant_id"], bob_oid, "{p}");
    assert_eq!(p["type"], "available");
    assert!(
        p["item"]["jid"]
            .as_str()
            .is_some_and(|j| j.starts_with("xh-bob@localhost/")),
        "{p}"
    );

    // Nick change: unavailable with 303 and the new nick, then available under it.
    let reply = bob.nick(&room, "robert").await.expect("nick");
    assert_eq!(reply["nick"], "robert");
    let gone = alice
        .wait_presence(|p| p["nick"] == "bob" && p["type"] == "unavailable")
        .await
        .expect("old nick leaves");
    assert!(
        gone["status_codes"]
            .as_array()
            .is_some_and(|c| c.contains(&json!(303)))
    );
    assert_eq!(gone["item"]["nick"], "robert");
    let back = alice
        .wait_presence(|p| p["nick"] == "robert")
        .await
        .expect("new nick");
    assert_eq!(
        back["occupant_id"], bob_oid,
        "occupant-id survives the nick change"
    );

    // The owner makes the room non-anonymous: occupants get status 172.
    alice
        .configure(&room, json!({ "whois": "anyone" }))
        .await
        .expect("configure");
    let note = bob
        .wait_message(|m| {
            m["status_codes"]
                .as_array()
                .is_some_and(|c| c.contains(&json!(172)))
        })
        .await
        .expect("config change notice");
    assert_eq!(note["from"], room.as_str());

    // A direct message, and a raw stanza.
    alice
        .send("xh-bob@localhost", Kind::Chat, "psst")
        .await
        .expect("dm");
    let dm = bob
        .wait_message(|m| m["body"] == "psst")
        .await
        .expect("dm arrives");
    assert_eq!(dm["type"], "chat");
    assert!(
        dm["from"]
            .as_str()
            .is_some_and(|f| f.starts_with("xh-alice@localhost/"))
    );
    alice
        .raw("<message to='xh-bob@localhost' type='chat' id='raw1'><body>raw hi</body></message>")
        .await
        .expect("raw");
    let raw = bob
        .wait_message(|m| m["id"] == "raw1")
        .await
        .expect("raw arrives");
    assert_eq!(raw["body"], "raw hi");

    // Leaving: 110 on our own unavailable presence; alice sees it.
    let left = bob.leave(&room).await.expect("leave");
    assert!(
        left["status_codes"]
            .as_array()
            .is_some_and(|c| c.contains(&json!(110)))
    );
    alice
        .wait_presence(|p| p["nick"] == "robert" && p["type"] == "unavailable")
        .await
        .expect("alice sees bob leave");

    // Errors are errors, and the client lives on.
    let err = alice
        .command("no_such_command", json!({}))
        .await
        .expect_err("unknown command");
    assert!(err.to_string().contains("unknown command"), "{err}");
    alice.quit().await.expect("alice quits");
    bob.quit().await.expect("bob quits");
}

#[tokio::test]
async fn message_xhtml_correction_and_reply() {
    let Pair {
        mut alice,
        mut bob,
        room,
        alice_join,
        ..
    } = pair("message").await;

    let sent = alice
        .send_with(
            &room,
            GC,
            "hello *bob*",
            Some("m-1"),
            Some("<p>hello <b>bob</b></p>"),
        )
        .await
        .expect("send");
    assert_eq!(sent["id"], "m-1");
    let got = bob
        .wait_message(|m| m["id"] == "m-1")
        .await
        .expect("bob gets it");
    assert_eq!(got["type"], "groupchat");
    assert_eq!(got["from"], format!("{room}/alice"));
    assert_eq!(got["body"], "hello *bob*");
    assert_eq!(got["origin_id"], "m-1");
    assert_eq!(got["occupant_id"], alice_join["occupant_id"]);
    assert_eq!(got["stanza_id_by"], room.as_str());
    assert!(
        got["xhtml"]
            .as_str()
            .is_some_and(|x| x.contains("<b>bob</b>")),
        "{got}"
    );
    let stanza_id = got["stanza_id"].as_str().expect("stanza-id").to_owned();
    // The sender's echo keeps its id and carries the same stanza-id.
    let echo = alice
        .wait_message(|m| m["id"] == "m-1")
        .await
        .expect("echo");
    assert_eq!(echo["stanza_id"], stanza_id.as_str());

    // XEP-0308 correction (refers to the id attribute).
    let fix = alice
        .correct(&room, GC, "m-1", "hello **bob**")
        .await
        .expect("correct");
    let got = bob
        .wait_message(|m| m["id"] == fix["id"])
        .await
        .expect("correction");
    assert_eq!(got["replace_id"], "m-1");
    assert_eq!(got["body"], "hello **bob**");

    // XEP-0461 reply in a room: to the occupant JID, by stanza-id; quoted fallback (XEP-0428).
    let reply = bob
        .reply(
            &room,
            GC,
            "hi alice",
            &stanza_id,
            &format!("{room}/alice"),
            Some("hello **bob**"),
        )
        .await
        .expect("reply");
    let got = alice
        .wait_message(|m| m["id"] == reply["id"])
        .await
        .expect("reply arrives");
    assert_eq!(
        got["reply"],
        json!({ "to": format!("{room}/alice"), "id": stanza_id })
    );
    assert_eq!(got["body"], "> hello **bob**\nhi alice");
    assert_eq!(got["body"], reply["body"]);
    assert_eq!(
        got["fallbacks"],
        json!([{ "for": "urn:xmpp:reply:0", "body": [{ "start": 0, "end": 16 }] }])
    );
}

#[tokio::test]
async fn reactions_retraction_chat_state_and_displayed() {
    let Pair {
        mut alice,
        mut bob,
        room,
        ..
    } = pair("reactions").await;
    let sent = alice.send(&room, GC, "react to me").await.expect("send");
    let got = bob
        .wait_message(|m| m["id"] == sent["id"])
        .await
        .expect("message");
    let stanza_id = got["stanza_id"].as_str().expect("stanza-id").to_owned();

    // XEP-0444: the full set each time; an empty set removes them.
    bob.react(&room, GC, &stanza_id, &["👍", "🎉"])
        .await
        .expect("react");
    let r = alice
        .wait_message(|m| !m["reactions"].is_null())
        .await
        .expect("reactions");
    assert_eq!(
        r["reactions"],
        json!({ "id": stanza_id, "keys": ["👍", "🎉"] })
    );
    assert_eq!(r["body"], Value::Null);
    bob.react(&room, GC, &stanza_id, &[])
        .await
        .expect("unreact");
    let r = alice
        .wait_message(|m| !m["reactions"].is_null())
        .await
        .expect("reactions removed");
    assert_eq!(r["reactions"]["keys"], json!([]));

    // XEP-0085 and XEP-0333.
    alice
        .chatstate(&room, GC, "composing")
        .await
        .expect("chatstate");
    let s = bob
        .wait_message(|m| !m["chat_state"].is_null())
        .await
        .expect("chat state");
    assert_eq!(s["chat_state"], "composing");
    assert_eq!(s["from"], format!("{room}/alice"));
    bob.displayed(&room, GC, &stanza_id)
        .await
        .expect("displayed");
    let d = alice
        .wait_message(|m| !m["displayed_id"].is_null())
        .await
        .expect("displayed marker");
    assert_eq!(d["displayed_id"], stanza_id.as_str());

    // XEP-0424: retraction of one's own message (by the id the sender knows).
    let own_id = id(&sent);
    alice.retract(&room, GC, &own_id).await.expect("retract");
    let r = bob
        .wait_message(|m| !m["retract_id"].is_null())
        .await
        .expect("retraction");
    assert_eq!(r["retract_id"], own_id.as_str());
    assert_eq!(r["from"], format!("{room}/alice"));
}

#[tokio::test]
async fn subject_oob_upload_and_fetch() {
    let Pair {
        mut alice,
        mut bob,
        room,
        ..
    } = pair("upload").await;
    alice
        .subject(&room, "Today: uploads")
        .await
        .expect("subject");
    let s = bob
        .wait_message(|m| m["subject"] == "Today: uploads")
        .await
        .expect("subject arrives");
    assert_eq!(s["from"], format!("{room}/alice"));

    // 300 kB through the XEP-0363 service, announced with XEP-0066, fetched by bob.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cat.bin");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&path, &data).expect("write file");
    let up = alice
        .upload(&path, Some("application/octet-stream"))
        .await
        .expect("upload");
    assert_eq!(up["size"], 300_000);
    let url = up["url"].as_str().expect("url").to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    alice
        .oob(&room, GC, &url, Some("a cat"))
        .await
        .expect("oob");
    let m = bob
        .wait_message(|m| m["oob_urls"].as_array().is_some_and(|u| !u.is_empty()))
        .await
        .expect("oob arrives");
    assert_eq!(m["oob_urls"], json!([url]));
    assert_eq!(m["body"], url.as_str());
    let got = bob.fetch(&url).await.expect("fetch");
    assert_eq!(got["status"], 200);
    assert_eq!(got["size"], 300_000);
    assert_eq!(got["sha256"], up["sha256"]);
}

#[tokio::test]
async fn archive_and_moderation() {
    let Pair {
        mut alice,
        mut bob,
        room,
        ..
    } = pair("mam").await;
    for i in 1..=3 {
        alice
            .send(&room, GC, &format!("archived {i}"))
            .await
            .expect("send");
    }
    // bob posts after seeing alice's messages, so the archive order is known.
    bob.wait_message(|m| m["body"] == "archived 3")
        .await
        .expect("alice's messages arrive");
    let spam = bob.send(&room, GC, "buy now").await.expect("spam");
    let spam = alice
        .wait_message(|m| m["id"] == spam["id"])
        .await
        .expect("spam arrives");
    let spam_sid = spam["stanza_id"].as_str().expect("stanza-id").to_owned();

    // XEP-0313 on the room, then paging after the first archive id.
    let all = bob.mam(&room, None, None).await.expect("mam");
    assert_eq!(all["complete"], true, "{all}");
    let bodies: Vec<&Value> = all["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| &m["body"])
        .collect();
    assert_eq!(
        bodies,
        [
            &json!("archived 1"),
            &json!("archived 2"),
            &json!("archived 3"),
            &json!("buy now")
        ]
    );
    let first = all["messages"][0]["archive_id"]
        .as_str()
        .expect("archive id");
    assert_eq!(all["messages"][3]["archive_id"], spam_sid.as_str());
    let rest = bob
        .mam(&room, Some(first), Some(2))
        .await
        .expect("mam page");
    assert_eq!(rest["messages"].as_array().map(Vec::len), Some(2), "{rest}");
    assert_eq!(rest["messages"][0]["body"], "archived 2");

    // XEP-0425: a participant may not moderate; the owner (a moderator) may.
    let err = bob
        .moderate(&room, &spam_sid, "no")
        .await
        .expect_err("bob is no moderator");
    assert!(err.to_string().contains("forbidden"), "{err}");
    alice
        .moderate(&room, &spam_sid, "spam")
        .await
        .expect("moderate");
    let m = bob
        .wait_message(|m| !m["moderated"].is_null())
        .await
        .expect("moderation announced");
    assert_eq!(m["from"], room.as_str());
    assert_eq!(m["moderated"]["id"], spam_sid.as_str());
    assert_eq!(m["moderated"]["by"], format!("{room}/alice"));
    assert_eq!(m["moderated"]["reason"], "spam");
    assert_eq!(m["moderated"]["retract"], true);
    // The archive now holds a tombstone instead of the message.
    let after = bob.mam(&room, None, None).await.expect("mam again");
    let tomb = after["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .find(|m| m["archive_id"] == spam_sid.as_str())
        .expect("the moderated message is still listed");
    assert_eq!(tomb["body"], Value::Null, "{tomb}");
    assert_eq!(tomb["moderated"]["tombstone"], true, "{tomb}");
}
