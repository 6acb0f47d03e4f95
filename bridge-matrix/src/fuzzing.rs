//! What the fuzz target (`bridge-matrix/fuzz`, run by `scripts/fuzz.sh`) checks, shared with the
//! test that replays its committed corpus (`tests/fuzz_corpus.rs`). Not part of the API.

use bridge_core::AdapterId;

use crate::appservice::parse_transaction;
use crate::translate::ids::Naming;
use crate::translate::inbound::{InboundCtx, ephemeral_event, timeline_event};

/// `data` as the body of an appservice transaction: parsed, then every event translated, as
/// timeline and as ephemeral events, with and without a room given. Nothing may panic.
pub fn transaction(data: &[u8]) {
    let Ok(txn) = parse_transaction("1", data) else {
        return;
    };
    let adapter = AdapterId::new("matrix");
    let naming = Naming::new("_bridge_", "example.org");
    let ctx = InboundCtx {
        adapter: &adapter,
        naming: &naming,
    };
    for event in txn.events.iter().chain(&txn.ephemeral) {
        for room in [None, Some("!room:example.org")] {
            let _ = timeline_event(event, room, &ctx);
            let _ = ephemeral_event(event, room);
        }
    }
}
