//! Benchmarks of the bridge: `bench NAME` prints its figures and, as its last line, one JSON
//! object. Run through `scripts/bench.sh NAME` (release build).
//!
//! - `core`: 200,000 events through 1,000 neutral rooms with 3 links each (every event fans out
//!   to 2 targets), once over the in-memory store and once over sled with durable
//!   acknowledgements; then a paced run for the latency the core adds.
//! - `xmpp`: MUC → bridge → second MUC against a Prosody of its own: sustained messages/s and
//!   added latency compared with a trivial relay on the same server, and the bridge's RSS with
//!   1,000 puppets across 100 MUCs.
//! - `matrix`: far side → core → ghost send into a Synapse of its own, against one client
//!   sending straight to Synapse (rate and added latency), the inbound path (appservice
//!   transaction → core), and the `bridge` binary's RSS with 10,000 ghosts.
//! - `mimi`: a hub bridge fanning messages out to 10 follower bridges (100 puppets each in one
//!   1,000-member MLS group) over HTTPS with mutual TLS on loopback: messages/s, latency, the
//!   MLS cost per message, and RSS per hosted MLS client.
//! - `e2e`: the `bridge` binary between a Prosody and a Synapse of its own: XMPP → Matrix and
//!   Matrix → XMPP rates and added latency against each server's own delivery in the same run,
//!   CPU per message, RSS idle and under load, time from start to ready.
//!
//! Like `bridge run`, the bench restarts itself with `MALLOC_ARENA_MAX=2` unless the variable
//! is set (`MALLOC_ARENA_MAX=16 bench …` measures glibc's default on two cores, 8 per core).

use std::process::ExitCode;

mod core_bench {
    include!("../bench_core.rs");
}

mod xmpp_bench {
    include!("../bench_xmpp.rs");
}

mod matrix_bench {
    include!("../bench_matrix.rs");
}

mod mimi_bench {
    include!("../bench_mimi.rs");
}

mod e2e_bench {
    include!("../bench_e2e.rs");
}

fn main() -> ExitCode {
    // The bridges measured in this process run with the allocator setting `bridge run` uses
    // (`MALLOC_ARENA_MAX`; an explicit value in the environment is kept, to compare).
    if let Err(e) = bridge_core::process::exec_with_malloc_arena_limit() {
        eprintln!("could not restart with MALLOC_ARENA_MAX set ({e}); going on without");
    }
    let name = std::env::args().nth(1).unwrap_or_default();
    if std::env::var_os("RUST_LOG").is_some() {
        // Logs of the bridge under test, on stderr, only when asked for.
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    // BRIDGE_BENCH_WORKER_THREADS: the runtime of the bridges measured in this process, as
    // `bridge.worker_threads` sets it for `bridge run` (1: one thread, the bridge's default;
    // 0: one worker per core). The core bench measures the default; the others, whose bridges
    // share this process with the bench's own clients and servers, take a worker per core.
    let default_threads = if name == "core" { 1 } else { 0 };
    let threads = std::env::var("BRIDGE_BENCH_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(default_threads);
    let runtime = match bridge_core::process::runtime(threads) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match name.as_str() {
        "core" => runtime.block_on(core_bench::run()),
        "xmpp" => runtime.block_on(xmpp_bench::run()),
        "matrix" => runtime.block_on(matrix_bench::run()),
        "mimi" => runtime.block_on(mimi_bench::run()),
        "e2e" => runtime.block_on(e2e_bench::run()),
        other => Err(anyhow::anyhow!(
            "unknown benchmark {other:?}; available: core, xmpp, matrix, mimi, e2e"
        )),
    };
    match result {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("benchmark failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}
