//! Decodes arbitrary bytes as MIMI content. Whatever decodes must re-encode to the same bytes
//! (the decoder accepts only deterministic CBOR) and decode again to the same message; mapping
//! it to the neutral model and back, and rendering it as JSON, must not panic.
#![no_main]

use bridge_core::AdapterId;
use bridge_mimi::content::neutral::{self, InboundCtx, OutboundCtx};
use bridge_mimi::content::{MimiContent, Salt, json};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(content) = MimiContent::decode(data) else {
        return;
    };
    let encoded = content.encode().expect("a decoded message encodes");
    assert_eq!(encoded, data, "re-encoding changed the bytes");
    let again = MimiContent::decode(&encoded).expect("an encoded message decodes");
    assert_eq!(again, content, "decoding the re-encoding changed the message");
    let _ = content.message_id(data);
    let _ = json::to_json(&content);
    let adapter = AdapterId::new("mimi");
    if let Ok(Some(neutral)) = neutral::to_neutral(&content, &InboundCtx { adapter: &adapter }) {
        let mention_uri = |m: &bridge_core::Mention| Some(m.user.as_str().to_owned());
        let ctx = OutboundCtx {
            sender_uri: "mimi://a.example/u/a",
            room_uri: "mimi://a.example/r/r",
            salt: Salt([0; 16]),
            mention_uri: &mention_uri,
            attachments: &neutral.attachments,
        };
        if let Ok(back) = neutral::from_neutral(&neutral.kind, &ctx) {
            // What the mapping builds may break a limit only if the input was near one.
            let _ = back.encode();
        }
    }
});
