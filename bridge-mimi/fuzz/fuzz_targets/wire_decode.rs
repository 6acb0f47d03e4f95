//! Fuzzes the decoders of the MIMI protocol bodies and of the room state carried in MLS
//! (participant list and its updates, room metadata): `cargo +nightly fuzz run wire_decode`
//! (from bridge-mimi/; corpus in corpus/wire_decode). The same check replays the committed
//! corpus in `bridge-mimi/tests/wire_corpus.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

include!("wire_decode_check.rs");

fuzz_target!(|data: &[u8]| {
    check(data);
});
