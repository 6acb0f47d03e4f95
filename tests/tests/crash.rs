//! The bridge binary is SIGKILLed while 10,000 events are in flight between two line-chat
//! servers (which live in this test process), restarted, and the receiving sides count
//! 0 lost, 0 duplicated, order kept per room.

use std::time::Duration;

use bridge_example_linechat::server::Server;
use bridge_tests::{BridgeProcess, wait_for};

const ROOMS: usize = 10;
const A_TO_B: usize = 8_000;
const B_TO_A: usize = 2_000;

fn config(dir: &std::path::Path, a: &Server, b: &Server) -> std::path::PathBuf {
    let mut toml = format!(
        "[bridge]\ndata_dir = \"{}\"\nlog_level = \"warn\"\n\n\
         [[adapter]]\nid = \"a\"\ntype = \"linechat\"\nconnect = \"{}\"\n\n\
         [[adapter]]\nid = \"b\"\ntype = \"linechat\"\nconnect = \"{}\"\n",
        dir.join("data").display(),
        a.addr(),
        b.addr()
    );
    for r in 0..ROOMS {
        toml.push_str(&format!(
            "\n[[room]]\nid = \"room{r}\"\n[[room.link]]\nadapter = \"a\"\nremote = \"a{r}\"\n\
             [[room.link]]\nadapter = \"b\"\nremote = \"b{r}\"\n"
        ));
    }
    let path = dir.join("bridge.toml");
    std::fs::write(&path, toml).expect("write config");
    path
}

/// (delivered, duplicated, out of order) over the rooms of one side.
fn count(server: &Server, prefix: &str, per_room: usize) -> (usize, usize, usize) {
    let side = if prefix == "b" { "from a" } else { "from b" };
    let c = bridge_tests::linechat::count(server, prefix, ROOMS, side, per_room);
    (c.delivered, c.duplicated, c.out_of_order)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_10000_events_in_flight_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Server::bind("127.0.0.1:0").await.expect("server a");
    let b = Server::bind("127.0.0.1:0").await.expect("server b");
    let cfg = config(dir.path(), &a, &b);
    let log = dir.path().join("bridge.log");

    // Humans on both sides post everything up front: all of it is in flight once the bridge
    // connects (the servers hold what the bridge has not acknowledged).
    for i in 0..A_TO_B {
        a.post(
            &format!("a{}", i % ROOMS),
            "alice",
            None,
            &format!("from a {}", i / ROOMS),
        );
    }
    for i in 0..B_TO_A {
        b.post(
            &format!("b{}", i % ROOMS),
            "bob",
            None,
            &format!("from b {}", i / ROOMS),
        );
    }

    let mut kills = 0;
    let mut bridge = BridgeProcess::start(&cfg, &log).expect("start bridge");
    // Kill it twice in the middle of the stream, at different points.
    for threshold in [A_TO_B / 5, A_TO_B / 2] {
        wait_for("some deliveries", Duration::from_secs(60), || {
            count(&b, "b", A_TO_B / ROOMS).0 >= threshold
        })
        .await;
        bridge.kill9().await.expect("SIGKILL");
        kills += 1;
        bridge = BridgeProcess::start(&cfg, &log).expect("restart bridge");
    }
    wait_for("every event", Duration::from_secs(120), || {
        count(&b, "b", A_TO_B / ROOMS).0 >= A_TO_B && count(&a, "a", B_TO_A / ROOMS).0 >= B_TO_A
    })
    .await;
    // Let anything that would be a late duplicate arrive, then stop cleanly.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        bridge.terminate().await.expect("SIGTERM"),
        "clean exit on SIGTERM"
    );

    let (to_b, dup_b, disorder_b) = count(&b, "b", A_TO_B / ROOMS);
    let (to_a, dup_a, disorder_a) = count(&a, "a", B_TO_A / ROOMS);
    let lost = (A_TO_B - to_b) + (B_TO_A - to_a);
    println!(
        "crash test: {} events, {kills} SIGKILLs: lost {lost}, duplicated {}, out of order {}; \
         resends answered idempotently by the servers: {}",
        A_TO_B + B_TO_A,
        dup_a + dup_b,
        disorder_a + disorder_b,
        a.duplicate_sends() + b.duplicate_sends()
    );
    assert_eq!(lost, 0);
    assert_eq!(dup_a + dup_b, 0);
    assert_eq!(disorder_a + disorder_b, 0);
    // Nothing a human posted is left unacknowledged.
    assert_eq!(a.unacked("bridge"), 0);
    assert_eq!(b.unacked("bridge"), 0);
}
