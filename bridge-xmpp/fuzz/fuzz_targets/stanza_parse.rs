//! Arbitrary bytes as what a server sends on a component stream after the handshake: read by
//! the component reader, every stanza parsed as a message. Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| bridge_xmpp::fuzzing::stanza_parse(data));
