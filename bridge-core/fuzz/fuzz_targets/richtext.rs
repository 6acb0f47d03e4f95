//! Fuzzes the rich-text parsers and renderers of bridge-core: `scripts/fuzz.sh` (or, from
//! bridge-core/, `RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz richtext`; corpus in
//! corpus/richtext). The same check replays the committed corpus in
//! `bridge-core/tests/fuzz_corpus.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

include!("richtext_check.rs");

fuzz_target!(|data: &[u8]| {
    check(data);
});
