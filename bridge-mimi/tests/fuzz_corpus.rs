//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`) through the code they fuzz, so
//! that CI covers them without cargo-fuzz: no input may panic, and what decodes re-encodes to
//! the same bytes.

use std::path::Path;

use bridge_mimi::content::MimiContent;

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
        }
    }
    assert!(inputs >= 14, "the corpus holds at least the 14 examples");
    assert!(decoded >= 14, "and they decode");
}
