//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`) through what the fuzz targets
//! check ([`bridge_xmpp::fuzzing`]), so that CI covers them without cargo-fuzz.

use std::path::Path;

/// Every file of target `target`'s corpus.
fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let inputs: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .expect("the corpus")
        .map(|entry| std::fs::read(entry.expect("entry").path()).expect("read"))
        .collect();
    assert!(!inputs.is_empty(), "{} is empty", dir.display());
    inputs
}

#[test]
fn stanza_parse_corpus_replays() {
    for input in corpus("stanza_parse") {
        bridge_xmpp::fuzzing::stanza_parse(&input);
    }
}

#[test]
fn depth_guard_corpus_replays() {
    for input in corpus("depth_guard") {
        if let Some((&split, rest)) = input.split_first() {
            bridge_xmpp::fuzzing::depth_guard(rest, usize::from(split));
        }
    }
}
