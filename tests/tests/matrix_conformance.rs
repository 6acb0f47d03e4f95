//! The core's adapter conformance suite (`bridge_core::testkit::conformance`) against the Matrix
//! adapter, in appservice mode (ghosts) and in relay mode (bob as the bot), with a matrix-nio
//! client (alice, through `MatrixHuman`) as the human on the far side.
//!
//! What the far side received is what alice synced from the bridge: the ghosts' messages, or
//! the relay bot's with the `<Name> ` it puts before the text taken off (the name is the
//! sender alice sees).
//!
//! Needs Synapse and the matrix-nio venv, as `scripts/test.sh` provides them.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bridge_core::testkit::conformance::{self, FarMessage, Harness};
use bridge_core::{Adapter, AdapterId, RemoteRoomId};
use bridge_matrix::AppserviceAdapter;
use bridge_matrix::relay::RelayAdapter;
use bridge_tests::matrix_human::MatrixHuman;
use bridge_tests::{fresh, test_env};
use serde_json::{Value, json};

const APPSERVICE_BOT: &str = "@_bridge_bot:localhost";
const RELAY_BOT: &str = "@bob:localhost";
/// The ID the suite gives the adapter under test.
const UNDER_TEST: &str = "under-test";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Appservice,
    Relay,
}

/// The far side: alice in a room the bridge's bot is invited to.
struct MatrixHarness {
    mode: Mode,
    room: String,
    alice: MatrixHuman,
    /// What alice received from the bridge so far, in order.
    received: Vec<FarMessage>,
    /// Whether alice has seen the bot join the room.
    bot_joined: bool,
    /// Whether alice has posted yet.
    posted: bool,
    /// The relay adapter last built (relay mode).
    relay: Option<RelayAdapter>,
    dir: tempfile::TempDir,
}

impl MatrixHarness {
    async fn new(mode: Mode) -> Self {
        let mut alice =
            MatrixHuman::start("alice", "alicepass", &test_env("BRIDGE_TEST_SYNAPSE_URL"))
                .await
                .expect("alice logs in");
        let room = alice
            .create_room_with(json!({
                "name": fresh("conformance"),
                "invite": [Self::bot_of(mode)],
            }))
            .await
            .expect("room created");
        Self {
            mode,
            room,
            alice,
            received: Vec::new(),
            bot_joined: false,
            posted: false,
            relay: None,
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn bot_of(mode: Mode) -> &'static str {
        match mode {
            Mode::Appservice => APPSERVICE_BOT,
            Mode::Relay => RELAY_BOT,
        }
    }

    fn bot(&self) -> &'static str {
        Self::bot_of(self.mode)
    }

    fn is_bot_join(&self, event: &Value) -> bool {
        event["event"] == "timeline"
            && event["room_id"] == self.room.as_str()
            && event["type"] == "m.room.member"
            && event["state_key"] == self.bot()
            && event["content"]["membership"] == "join"
    }

    /// A message alice got from the bridge, as the suite sees it.
    fn far_message(&self, event: &Value) -> Option<FarMessage> {
        if event["event"] != "timeline"
            || event["room_id"] != self.room.as_str()
            || event["type"] != "m.room.message"
            || event["content"]["m.relates_to"]["rel_type"] == "m.replace"
        {
            return None;
        }
        let sender = event["sender"].as_str()?;
        let body = event["content"]["body"].as_str()?;
        let (sender, body) = match self.mode {
            Mode::Appservice if sender.starts_with("@_bridge_") => (sender, body),
            Mode::Relay if sender == RELAY_BOT => relayed(body).unwrap_or((sender, body)),
            _ => return None,
        };
        Some(FarMessage {
            native_id: event["event_id"].as_str()?.to_owned(),
            sender: sender.to_owned(),
            body: body.to_owned(),
            reply_to: event["content"]["m.relates_to"]["m.in_reply_to"]["event_id"]
                .as_str()
                .map(str::to_owned),
        })
    }

    /// The registration Synapse was given (tests/servers/appservice.yaml), for the bridge.
    fn registration_file(&self) -> std::path::PathBuf {
        let template =
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("servers/appservice.yaml");
        let text = std::fs::read_to_string(template)
            .expect("registration template")
            .replace("@AS_PORT@", &test_env("BRIDGE_TEST_AS_PORT"));
        let path = self.dir.path().join("registration.yaml");
        std::fs::write(&path, text).expect("registration written");
        path
    }
}

/// `<name> text`, the relay format, as (name, text).
fn relayed(body: &str) -> Option<(&str, &str)> {
    let rest = body.strip_prefix('<')?;
    let (name, text) = rest.split_once("> ")?;
    Some((name, text))
}

#[async_trait]
impl Harness for MatrixHarness {
    async fn adapter(&mut self) -> Arc<dyn Adapter> {
        let hs = test_env("BRIDGE_TEST_SYNAPSE_URL");
        match self.mode {
            Mode::Appservice => {
                let registration = self.registration_file();
                let text = format!(
                    "mode = 'appservice'\nhomeserver = '{hs}'\nserver_name = 'localhost'\n\
                     registration = '{}'\nlisten = '127.0.0.1:{}'",
                    registration.display(),
                    test_env("BRIDGE_TEST_AS_PORT"),
                );
                let table: toml::Table = text.parse().expect("settings parse");
                let settings = bridge_matrix::settings::parse(&table, true).expect("valid");
                let registration =
                    bridge_matrix::registration::load(&registration).expect("registration");
                Arc::new(
                    AppserviceAdapter::new(AdapterId::new(UNDER_TEST), settings, registration)
                        .expect("adapter"),
                )
            }
            Mode::Relay => {
                let text = format!(
                    "mode = 'relay'\nhomeserver = '{hs}'\nuser = '{RELAY_BOT}'\npassword = 'bobpass'"
                );
                let table: toml::Table = text.parse().expect("settings parse");
                let settings = bridge_matrix::settings::parse(&table, true).expect("valid");
                let relay =
                    RelayAdapter::new(AdapterId::new(UNDER_TEST), settings).expect("adapter");
                self.relay = Some(relay.clone());
                Arc::new(relay)
            }
        }
    }

    fn room(&self) -> RemoteRoomId {
        RemoteRoomId::new(self.room.as_str())
    }

    async fn far_send(&mut self, _user: &str, text: &str) -> Result<(), String> {
        // What is posted before the bridge follows the room is history, not bridged: before
        // posting for the first time, alice waits for the bot to join (and the relay bot to be
        // past its first sync). Later (e.g. while the bridge is down) she does not.
        if !self.posted {
            if !self.bot_joined {
                let room = self.room.clone();
                let bot = self.bot();
                self.alice
                    .next_event(
                        |e| {
                            e["event"] == "timeline"
                                && e["room_id"] == room.as_str()
                                && e["type"] == "m.room.member"
                                && e["state_key"] == bot
                                && e["content"]["membership"] == "join"
                        },
                        Duration::from_secs(20),
                    )
                    .await
                    .map_err(|e| format!("the bot never joined the room: {e}"))?;
                self.bot_joined = true;
            }
            if let Some(relay) = &self.relay {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
                while !relay.is_syncing() {
                    if tokio::time::Instant::now() >= deadline {
                        return Err("the relay bot never finished its first sync".into());
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            self.posted = true;
        }
        self.alice
            .send(&self.room, text)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn far_received(&mut self) -> Result<Vec<FarMessage>, String> {
        for event in self.alice.drain() {
            if self.is_bot_join(&event) {
                self.bot_joined = true;
            }
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

async fn passes(mode: Mode) {
    bridge_tests::log_to_test_output();
    let mut harness = MatrixHarness::new(mode).await;
    let report = conformance::run(&mut harness).await;
    for check in &report.checks {
        match &check.outcome {
            Ok(()) => println!("ok   {:?} {}", mode, check.name),
            Err(why) => println!("FAIL {:?} {}: {why}", mode, check.name),
        }
    }
    assert!(report.passed(), "{mode:?}:\n{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_matrix_appservice_adapter_passes_the_conformance_suite() {
    passes(Mode::Appservice).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_matrix_relay_adapter_passes_the_conformance_suite() {
    passes(Mode::Relay).await;
}
