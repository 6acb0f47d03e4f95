//! Replays the committed fuzz corpus (`fuzz/corpus/transaction/`) through what the fuzz target
//! checks ([`bridge_matrix::fuzzing`]), so that CI covers it without cargo-fuzz.

use std::path::Path;

#[test]
fn transaction_corpus_replays() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/transaction");
    let mut inputs = 0;
    for entry in std::fs::read_dir(&dir).expect("the corpus") {
        let data = std::fs::read(entry.expect("entry").path()).expect("read");
        bridge_matrix::fuzzing::transaction(&data);
        inputs += 1;
    }
    assert!(inputs > 0, "{} is empty", dir.display());
}
