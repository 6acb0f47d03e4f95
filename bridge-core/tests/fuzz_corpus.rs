//! Replays the committed fuzz corpus (`fuzz/corpus/richtext/`) through the fuzz target's check
//! (`fuzz/fuzz_targets/richtext_check.rs`), so that CI covers it without cargo-fuzz: no input
//! may panic, and the properties the check asserts hold for every input.

include!("../fuzz/fuzz_targets/richtext_check.rs");

use std::path::Path;

#[test]
fn richtext_corpus_replays() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/richtext");
    let mut inputs = 0;
    for entry in std::fs::read_dir(&dir).expect("the corpus") {
        let path = entry.expect("entry").path();
        let data = std::fs::read(&path).expect("read");
        check(&data);
        inputs += 1;
    }
    assert!(inputs >= 100, "only {inputs} inputs in {}", dir.display());
}
