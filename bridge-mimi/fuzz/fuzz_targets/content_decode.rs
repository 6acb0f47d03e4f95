//! Decodes arbitrary bytes as MIMI content. Whatever decodes must re-encode to the same bytes
//! (the decoder accepts only deterministic CBOR) and decode again to the same message.
#![no_main]

use bridge_mimi::content::MimiContent;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(content) = MimiContent::decode(data) {
        let encoded = content.encode().expect("a decoded message encodes");
        assert_eq!(encoded, data, "re-encoding changed the bytes");
        let again = MimiContent::decode(&encoded).expect("an encoded message decodes");
        assert_eq!(again, content, "decoding the re-encoding changed the message");
    }
});
