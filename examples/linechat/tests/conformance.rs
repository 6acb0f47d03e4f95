//! The core's adapter conformance suite, run against a real linechat server on localhost.

use std::sync::Arc;

use async_trait::async_trait;
use bridge_core::testkit::conformance::{self, FarMessage, Harness};
use bridge_core::{Adapter, AdapterFactory, AdapterId, RemoteRoomId};
use bridge_example_linechat::LinechatFactory;
use bridge_example_linechat::server::Server;

const ROOM: &str = "lobby";

struct Linechat {
    server: Server,
}

#[async_trait]
impl Harness for Linechat {
    async fn adapter(&mut self) -> Arc<dyn Adapter> {
        let mut settings = toml::Table::new();
        settings.insert("connect".into(), self.server.addr().to_string().into());
        LinechatFactory
            .build(AdapterId::new("under-test"), &settings)
            .expect("valid settings")
    }

    fn room(&self) -> RemoteRoomId {
        RemoteRoomId::new(ROOM)
    }

    async fn far_send(&mut self, user: &str, text: &str) -> Result<(), String> {
        self.server.post(ROOM, user, None, text);
        Ok(())
    }

    async fn far_received(&mut self) -> Result<Vec<FarMessage>, String> {
        let from_bridge = self.server.from_bridge(ROOM).into_iter();
        Ok(from_bridge
            .map(|m| FarMessage {
                native_id: m.seq.to_string(),
                sender: m.sender,
                body: m.text,
                reply_to: m.reply_to.map(|r| r.to_string()),
            })
            .collect())
    }

    fn far_side_buffers(&self) -> bool {
        true
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn linechat_passes_the_conformance_suite() {
    let server = Server::bind("127.0.0.1:0").await.expect("server binds");
    let mut harness = Linechat { server };
    let report = conformance::run(&mut harness).await;
    println!("{report}");
    assert!(report.passed(), "{report}");

    // Nothing the bridge sent was created twice on the far side, and every message the far
    // side's humans posted was bridged to the memory side.
    let server = &harness.server;
    let sent = server.from_bridge(ROOM);
    let mut txns: Vec<_> = sent.iter().filter_map(|m| m.txn.clone()).collect();
    txns.sort();
    txns.dedup();
    assert_eq!(txns.len(), sent.len(), "one event per transaction");
    // Every puppet is named after the original sender's adapter and user.
    assert!(
        sent.iter().all(|m| m.sender.starts_with("memory.")),
        "{sent:?}"
    );
}
