//! The core's adapter conformance suite (`bridge_core::testkit::conformance`) against the XMPP
//! adapter in component mode, with a slixmpp client as the human on the far side.
//!
//! The human creates the room before the bridge arrives and makes it persistent, so that its
//! archive (what the bridge catches up on after the suite's restart) outlives every occupant.
//!
//! Needs Prosody and the slixmpp venv, as `scripts/test.sh` provides them.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bridge_core::testkit::conformance::{self, FarMessage, Harness};
use bridge_core::{Adapter, AdapterId, RemoteRoomId};
use bridge_tests::xmpp_human::{Kind, XmppHuman};
use bridge_tests::{fresh, test_env};
use bridge_xmpp::XmppAdapter;
use serde_json::Value;

/// The far side: one slixmpp human in a persistent room.
struct XmppHarness {
    room: String,
    human: XmppHuman,
    /// The human's nick in the room.
    nick: String,
    /// What the human received from the bridge's puppets so far, in order.
    received: Vec<FarMessage>,
    /// Whether the human has seen the bridge's own occupant in the room yet.
    bridge_seen: bool,
}

impl XmppHarness {
    async fn new() -> Self {
        let room = format!("{}@conference.localhost", fresh("conformance"));
        let jid = format!("{}@localhost", fresh("far-alice"));
        let mut human = XmppHuman::start(&jid, "pw", &test_env("BRIDGE_TEST_XMPP_C2S"))
            .await
            .expect("human online");
        let joined = human.join(&room, "far-alice").await.expect("room created");
        let nick = joined["nick"].as_str().unwrap_or("far-alice").to_owned();
        human
            .configure(&room, serde_json::json!({ "persistentroom": "1" }))
            .await
            .expect("room made persistent");
        Self {
            room,
            human,
            nick,
            received: Vec::new(),
            bridge_seen: false,
        }
    }

    /// A message event the human got from one of the bridge's occupants, as the suite sees it.
    fn far_message(&self, event: &Value) -> Option<FarMessage> {
        if event["event"] != "message" || event["type"] != "groupchat" || !event["error"].is_null()
        {
            return None;
        }
        let (room, nick) = event["from"].as_str()?.split_once('/')?;
        if room != self.room || nick == self.nick {
            return None;
        }
        Some(FarMessage {
            native_id: event["stanza_id"].as_str()?.to_owned(),
            sender: nick.to_owned(),
            body: event["body"].as_str()?.to_owned(),
            reply_to: event["reply"]["id"].as_str().map(str::to_owned),
        })
    }
}

#[async_trait]
impl Harness for XmppHarness {
    async fn adapter(&mut self) -> Arc<dyn Adapter> {
        let text = format!(
            "mode = 'component'\nserver = '{}'\ndomain = 'bridge.localhost'\n\
             secret = 'bridgesecret'",
            test_env("BRIDGE_TEST_XMPP_COMPONENT")
        );
        let table: toml::Table = text.parse().expect("settings parse");
        let settings = bridge_xmpp::settings::parse(&table, true).expect("valid settings");
        Arc::new(XmppAdapter::new(AdapterId::new("xmpp"), settings))
    }

    fn room(&self) -> RemoteRoomId {
        RemoteRoomId::new(self.room.as_str())
    }

    async fn far_send(&mut self, _user: &str, text: &str) -> Result<(), String> {
        // The adapter connects and joins after the core has started; what is posted before the
        // bridge first joins a newly linked room is history, not bridged (see the module
        // docs of bridge-xmpp's archive catch-up). So the human waits for the bridge once,
        // before posting for the first time. (Later, e.g. while the bridge is down, it does not.)
        if !self.bridge_seen {
            self.human
                .next_event(
                    |e| e["event"] == "presence" && e["nick"] == "bridge",
                    Duration::from_secs(20),
                )
                .await
                .map_err(|e| format!("the bridge never joined the room: {e}"))?;
            self.bridge_seen = true;
        }
        self.human
            .send(&self.room, Kind::Groupchat, text)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn far_received(&mut self) -> Result<Vec<FarMessage>, String> {
        for event in self.human.drain() {
            if let Some(message) = self.far_message(&event) {
                self.received.push(message);
            }
        }
        Ok(self.received.clone())
    }

    fn far_side_buffers(&self) -> bool {
        true
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_xmpp_adapter_passes_the_conformance_suite() {
    bridge_tests::log_to_test_output();
    let mut harness = XmppHarness::new().await;
    let report = conformance::run(&mut harness).await;
    for check in &report.checks {
        match &check.outcome {
            Ok(()) => println!("ok   {}", check.name),
            Err(why) => println!("FAIL {}: {why}", check.name),
        }
    }
    assert!(report.passed(), "{report:#?}");
}
