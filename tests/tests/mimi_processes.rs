//! Two `bridge` processes as two MIMI providers on loopback, over mutual TLS: `hub.example`
//! hosts two MIMI rooms, each linked with a room of line-chat server A; `follower.example` links
//! the same MIMI rooms with rooms of line-chat server B. Messages flow both ways while each
//! process is SIGKILLed and restarted; every message arrives once, in order.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bridge_example_linechat::server::Server;
use bridge_tests::linechat::{Counts, count};
use bridge_tests::{BridgeProcess, wait_for};

const ROOMS: usize = 2;
/// Messages each way, spread over the rooms.
const EACH_WAY: usize = 600;
const PER_ROOM: usize = EACH_WAY / ROOMS;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port()
}

struct Provider<'a> {
    name: &'a str,
    domain: &'a str,
    port: u16,
    peer: &'a str,
    peer_port: u16,
    linechat: &'a Server,
    room_prefix: &'a str,
}

fn config(dir: &Path, p: &Provider<'_>) -> PathBuf {
    let pki = dir.display();
    let mut toml = format!(
        r#"[bridge]
data_dir = "{data}"
log_level = "info,bridge_mimi=debug"

[[adapter]]
id = "chat"
type = "linechat"
connect = "{chat}"

[[adapter]]
id = "mimi"
type = "mimi"
domain = "{domain}"
listen = "127.0.0.1:{port}"
origin = "https://{domain}:{port}"
certificate = "{pki}/{domain}.crt"
key = "{pki}/{domain}.key"
ca = "{pki}/ca.pem"
timeout_secs = 5
[adapter.peers]
"{peer}" = {{ url = "https://{peer}:{peer_port}", address = "127.0.0.1:{peer_port}" }}
"#,
        data = dir.join(format!("{}-data", p.name)).display(),
        chat = p.linechat.addr(),
        domain = p.domain,
        port = p.port,
        peer = p.peer,
        peer_port = p.peer_port,
    );
    for r in 0..ROOMS {
        toml.push_str(&format!(
            "\n[[room]]\nid = \"room{r}\"\n[[room.link]]\nadapter = \"chat\"\nremote = \"{}{r}\"\n\
             [[room.link]]\nadapter = \"mimi\"\nremote = \"mimi://hub.example/r/room{r}\"\n",
            p.room_prefix
        ));
    }
    let path = dir.join(format!("{}.toml", p.name));
    std::fs::write(&path, toml).expect("write config");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_provider_processes_survive_sigkill_without_loss_or_duplicates() {
    let dir = tempfile::tempdir().expect("tempdir");
    bridge_mimi::testkit::write_pki(dir.path(), &["hub.example", "follower.example"])
        .expect("certificates");
    let a = Server::bind("127.0.0.1:0").await.expect("server a");
    let b = Server::bind("127.0.0.1:0").await.expect("server b");
    let (hub_port, follower_port) = (free_port(), free_port());
    let hub_cfg = config(
        dir.path(),
        &Provider {
            name: "hub",
            domain: "hub.example",
            port: hub_port,
            peer: "follower.example",
            peer_port: follower_port,
            linechat: &a,
            room_prefix: "a",
        },
    );
    let follower_cfg = config(
        dir.path(),
        &Provider {
            name: "follower",
            domain: "follower.example",
            port: follower_port,
            peer: "hub.example",
            peer_port: hub_port,
            linechat: &b,
            room_prefix: "b",
        },
    );
    let hub_log = dir.path().join("hub.log");
    let follower_log = dir.path().join("follower.log");
    let mut hub = BridgeProcess::start(&hub_cfg, &hub_log).expect("start hub");
    let mut follower = BridgeProcess::start(&follower_cfg, &follower_log).expect("start follower");

    // The follower's user speaks first in each room, so that its provider is in the rooms
    // (a MIMI room reaches only the providers of its participants).
    for r in 0..ROOMS {
        b.post(&format!("b{r}"), "bob", None, &format!("hello {r}"));
    }
    let logs = || {
        format!(
            "hub log:\n{}\nfollower log:\n{}",
            std::fs::read_to_string(&hub_log).unwrap_or_default(),
            std::fs::read_to_string(&follower_log).unwrap_or_default()
        )
    };
    let greeted = |r: usize| {
        a.from_bridge(&format!("a{r}"))
            .iter()
            .any(|m| m.text == format!("hello {r}"))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(0..ROOMS).all(greeted) {
        assert!(
            Instant::now() < deadline,
            "the follower never joined:\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Then everything at once, both ways: all of it in flight when the processes die.
    for i in 0..EACH_WAY {
        let r = i % ROOMS;
        a.post(
            &format!("a{r}"),
            "alice",
            None,
            &format!("from a {}", i / ROOMS),
        );
        b.post(
            &format!("b{r}"),
            "bob",
            None,
            &format!("from b {}", i / ROOMS),
        );
    }
    let at_b = || count(&b, "b", ROOMS, "from a", PER_ROOM);
    let at_a = || count(&a, "a", ROOMS, "from b", PER_ROOM);
    let started = Instant::now();
    let mut kills = 0;
    // Kill the follower, then the hub, each while messages are crossing.
    wait_for("some deliveries", Duration::from_secs(120), || {
        at_b().delivered + at_a().delivered >= EACH_WAY / 4
    })
    .await;
    follower.kill9().await.expect("SIGKILL follower");
    kills += 1;
    follower = BridgeProcess::start(&follower_cfg, &follower_log).expect("restart follower");
    wait_for("more deliveries", Duration::from_secs(120), || {
        at_b().delivered + at_a().delivered >= EACH_WAY
    })
    .await;
    hub.kill9().await.expect("SIGKILL hub");
    kills += 1;
    hub = BridgeProcess::start(&hub_cfg, &hub_log).expect("restart hub");

    let deadline = Instant::now() + Duration::from_secs(180);
    while at_b().delivered < EACH_WAY || at_a().delivered < EACH_WAY {
        assert!(
            Instant::now() < deadline,
            "stuck at {:?} / {:?}:\n{}",
            at_b(),
            at_a(),
            logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = started.elapsed();
    // Let anything that would be a late duplicate arrive, then stop cleanly.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(hub.terminate().await.expect("SIGTERM"), "hub exits cleanly");
    assert!(
        follower.terminate().await.expect("SIGTERM"),
        "follower exits cleanly"
    );
    let (to_b, to_a): (Counts, Counts) = (at_b(), at_a());
    let lost = 2 * EACH_WAY - to_b.delivered - to_a.delivered;
    println!(
        "mimi processes: {} messages in {:.1} s, {kills} SIGKILLs: lost {lost}, duplicated {}, \
         out of order {}",
        2 * EACH_WAY,
        took.as_secs_f64(),
        to_a.duplicated + to_b.duplicated,
        to_a.out_of_order + to_b.out_of_order
    );
    assert_eq!(lost, 0);
    assert_eq!(to_a.duplicated + to_b.duplicated, 0, "{}", logs());
    assert_eq!(to_a.out_of_order + to_b.out_of_order, 0, "{}", logs());
    assert_eq!(a.unacked("bridge"), 0);
    assert_eq!(b.unacked("bridge"), 0);
}
