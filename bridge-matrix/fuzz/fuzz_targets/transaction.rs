//! Arbitrary bytes as an appservice transaction body: parsed, every event translated as a
//! timeline and as an ephemeral event. Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| bridge_matrix::fuzzing::transaction(data));
