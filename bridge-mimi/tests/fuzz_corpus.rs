//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`) through the code they fuzz, so
//! that CI covers them without cargo-fuzz: no input may panic, what decodes re-encodes to the
//! same bytes, and mapping it to the neutral model and back does not panic.

use std::path::Path;

use bridge_core::{AdapterId, Mention};
use bridge_mimi::content::neutral::{self, InboundCtx, OutboundCtx};
use bridge_mimi::content::{MimiContent, Salt, json};

#[test]
fn content_decode_corpus_replays() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/content_decode");
    let mut inputs = 0;
    let mut decoded = 0;
    for entry in std::fs::read_dir(&dir).expect("the corpus") {
        let path = entry.expect("entry").path();
        let data = std::fs::read(&path).expect("read");
        inputs += 1;
        if let Ok(content) = MimiContent::decode(&data) {
            decoded += 1;
            let encoded = content.encode().expect("a decoded message encodes");
            assert_eq!(encoded, data, "{} re-encodes differently", path.display());
            assert_eq!(MimiContent::decode(&encoded).as_ref(), Ok(&content));
            let _ = json::to_json(&content);
            let adapter = AdapterId::new("mimi");
            let inbound = neutral::to_neutral(&content, &InboundCtx { adapter: &adapter });
            if let Ok(Some(neutral)) = inbound {
                let mention_uri = |m: &Mention| Some(m.user.as_str().to_owned());
                let ctx = OutboundCtx {
                    sender_uri: "mimi://a.example/u/a",
                    room_uri: "mimi://a.example/r/r",
                    salt: Salt([0; 16]),
                    mention_uri: &mention_uri,
                    attachments: &neutral.attachments,
                };
                if let Ok(back) = neutral::from_neutral(&neutral.kind, &ctx) {
                    let _ = back.encode();
                }
            }
        }
    }
    assert!(inputs >= 14, "the corpus holds at least the 14 examples");
    assert!(decoded >= 14, "and they decode");
}
