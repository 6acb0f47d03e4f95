//! Arbitrary bytes through the client-mode depth guard, whole and split in two (the first byte
//! chooses where): nothing may panic, and both give the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    bridge_xmpp::fuzzing::depth_guard(rest, usize::from(split));
});
