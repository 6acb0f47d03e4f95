//! Admin commands by direct message to the bridge itself, through the real `bridge` binary
//! between the Prosody and Synapse of scripts/test.sh: a Matrix admin writes to the bridge's
//! bot in a direct room, an XMPP admin writes to the bridge's address (`bridge@DOMAIN`), and
//! each gets the answer from the bridge where they asked; someone not in `bridge.admins` is
//! told no. What is checked is what the humans' own clients (matrix-nio, slixmpp) received.

use std::time::Duration;

use bridge_tests::matrix_human::MatrixHuman;
use bridge_tests::matrix_rig::{BOT, appservice_settings, bot_joined};
use bridge_tests::xmpp_human::{Kind, XmppHuman};
use bridge_tests::{BridgeProcess, fresh, test_env};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);
const BRIDGE: &str = "bridge@bridge.localhost";

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_talk_to_the_bridge_directly_on_matrix_and_xmpp() {
    let hs = test_env("BRIDGE_TEST_SYNAPSE_URL");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut carol = MatrixHuman::start("carol", "carolpass", &hs)
        .await
        .expect("carol logs in");
    let room = carol
        .create_room_with(json!({
            "name": fresh("admin-dm"), "invite": [BOT],
            "power_level_override": { "users": { BOT: 100 } },
        }))
        .await
        .expect("room created");
    let muc = format!("{}@conference.localhost", fresh("admin-dm"));
    let xavier_jid = format!("{}@localhost", fresh("xavier"));
    let yann_jid = format!("{}@localhost", fresh("yann"));

    let as_port: u16 = test_env("BRIDGE_TEST_AS_PORT").parse().expect("a port");
    let config = dir.path().join("bridge.toml");
    // Ghosts named after their network too.
    let mut matrix_settings = appservice_settings(dir.path(), &hs, as_port);
    matrix_settings.push_str("ghost_name = \"{name} ({network})\"\n");
    std::fs::write(
        &config,
        format!(
            "[bridge]\ndata_dir = \"{data}\"\nadmins = [\"matrix:@carol:localhost\", \"xmpp:{xavier_jid}\"]\n\n\
             [[adapter]]\nid = \"xmpp\"\ntype = \"xmpp\"\nmode = \"component\"\n\
             server = \"{component}\"\ndomain = \"bridge.localhost\"\nsecret = \"bridgesecret\"\n\n\
             [[adapter]]\nid = \"matrix\"\ntype = \"matrix\"\n{matrix}\n\
             [[room]]\nid = \"lobby\"\n[[room.link]]\nadapter = \"xmpp\"\nremote = \"{muc}\"\n\
             [[room.link]]\nadapter = \"matrix\"\nremote = \"{room}\"\n",
            data = dir.path().join("data").display(),
            component = test_env("BRIDGE_TEST_XMPP_COMPONENT"),
            matrix = matrix_settings,
        ),
    )
    .expect("config written");
    let log = dir.path().join("bridge.log");
    let bridge = BridgeProcess::start(&config, &log).expect("the bridge starts");
    let tail = || std::fs::read_to_string(&log).unwrap_or_default();
    bot_joined(&mut carol, &room, WAIT)
        .await
        .unwrap_or_else(|e| panic!("the bot joins the linked room: {e}\n{}", tail()));

    // Matrix: carol, an admin, opens a direct room with the bot and asks for the status.
    let dm = carol
        .create_room_with(json!({ "invite": [BOT], "direct": true }))
        .await
        .expect("direct room created");
    bot_joined(&mut carol, &dm, WAIT)
        .await
        .unwrap_or_else(|e| panic!("the bot accepts the direct room: {e}\n{}", tail()));
    carol.send(&dm, "status").await.expect("sent");
    let answer = carol
        .next_event(
            |e| {
                e["event"] == "timeline"
                    && e["room_id"] == dm.as_str()
                    && e["sender"] == BOT
                    && e["content"]["msgtype"] == "m.notice"
            },
            WAIT,
        )
        .await
        .unwrap_or_else(|e| panic!("the bot answers: {e}\n{}", tail()));
    let body = text(&answer["content"]["body"]);
    assert!(
        body.contains("lobby") && body.contains("matrix connected"),
        "a status: {body}"
    );

    // XMPP: xavier, an admin, writes to the bridge's address.
    let mut xavier = XmppHuman::start(&xavier_jid, "pw", &test_env("BRIDGE_TEST_XMPP_C2S"))
        .await
        .expect("xavier online");
    xavier
        .send(BRIDGE, Kind::Chat, "!bridge status lobby")
        .await
        .expect("sent");
    let answer = xavier
        .next_event(
            |e| e["event"] == "message" && text(&e["from"]).starts_with(BRIDGE),
            WAIT,
        )
        .await
        .unwrap_or_else(|e| panic!("the bridge answers xavier: {e}\n{}", tail()));
    assert_eq!(answer["type"], "chat", "{answer}");
    assert!(text(&answer["body"]).contains("lobby"), "{answer}");

    // Yann is no admin: he is told so, and nothing changes.
    let mut yann = XmppHuman::start(&yann_jid, "pw", &test_env("BRIDGE_TEST_XMPP_C2S"))
        .await
        .expect("yann online");
    yann.send(BRIDGE, Kind::Chat, "unlink lobby xmpp")
        .await
        .expect("sent");
    let refused = yann
        .next_event(
            |e| e["event"] == "message" && text(&e["from"]).starts_with(BRIDGE),
            WAIT,
        )
        .await
        .unwrap_or_else(|e| panic!("the bridge answers yann: {e}\n{}", tail()));
    assert!(
        text(&refused["body"]).contains("only the bridge's admins"),
        "{refused}"
    );
    xavier
        .send(BRIDGE, Kind::Chat, "status lobby")
        .await
        .expect("sent");
    let still = xavier
        .next_event(
            |e| e["event"] == "message" && text(&e["from"]).starts_with(BRIDGE),
            WAIT,
        )
        .await
        .expect("the bridge answers again");
    assert!(
        text(&still["body"]).contains(&muc),
        "the MUC is still linked: {still}"
    );

    // Carol links a second Matrix room at runtime, xavier talks in the MUC (his ghost joins it
    // to say so), and carol unlinks it: the bot leaves it, and so does xavier's ghost.
    let second = carol
        .create_room_with(json!({
            "name": fresh("admin-second"), "invite": [BOT],
            "power_level_override": { "users": { BOT: 100 } },
        }))
        .await
        .expect("room created");
    carol
        .send(&dm, &format!("link lobby matrix {second}"))
        .await
        .expect("sent");
    bot_joined(&mut carol, &second, WAIT)
        .await
        .unwrap_or_else(|e| panic!("the bot joins the room linked at runtime: {e}\n{}", tail()));
    xavier
        .join(&muc, "Xavier")
        .await
        .expect("xavier joins the MUC");
    xavier
        .send(&muc, Kind::Groupchat, "hello, second room")
        .await
        .expect("sent");
    let said = carol
        .wait_timeline(|e| {
            e["room_id"] == second.as_str() && e["content"]["body"] == "hello, second room"
        })
        .await
        .unwrap_or_else(|e| panic!("xavier's message reaches the second room: {e}\n{}", tail()));
    let ghost = text(&said["sender"]).to_owned();
    carol
        .wait_timeline(|e| {
            e["type"] == "m.room.member"
                && e["state_key"] == ghost.as_str()
                && e["content"]["displayname"] == "Xavier (xmpp)"
        })
        .await
        .unwrap_or_else(|e| panic!("the ghost is named after `ghost_name`: {e}\n{}", tail()));
    carol
        .send(&dm, &format!("unlink matrix {second}"))
        .await
        .expect("sent");
    for who in [ghost.as_str(), BOT] {
        carol
            .wait_timeline(|e| {
                e["room_id"] == second.as_str()
                    && e["type"] == "m.room.member"
                    && e["state_key"] == who
                    && e["content"]["membership"] == "leave"
            })
            .await
            .unwrap_or_else(|e| panic!("{who} leaves the unlinked room: {e}\n{}", tail()));
    }

    let _ = xavier.quit().await;
    let _ = yann.quit().await;
    assert!(
        bridge.terminate().await.expect("stopped"),
        "a clean stop\n{}",
        tail()
    );
}
