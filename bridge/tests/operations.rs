//! The operations surface of the real `bridge` binary, between two line-chat servers that live
//! in this test process: health probes, Prometheus metrics, and the provisioning API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bridge_example_linechat::server::Server;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "test-token-0123456789abcdef";
const WAIT: Duration = Duration::from_secs(20);

/// A config linking room `lobby` on servers `a` and `b`, with `extra` appended to `[bridge]`
/// and `delivery` as the `[delivery]` section's body.
fn config(dir: &Path, a: &Server, b: &Server, extra: &str, delivery: &str) -> PathBuf {
    let text = format!(
        "[bridge]\ndata_dir = \"{data}\"\nlog_format = \"json\"\n{extra}\n\
         [delivery]\nbackoff_initial_ms = 10\nbackoff_max_ms = 100\n{delivery}\n\
         [[adapter]]\nid = \"a\"\ntype = \"linechat\"\nconnect = \"{a}\"\n\n\
         [[adapter]]\nid = \"b\"\ntype = \"linechat\"\nconnect = \"{b}\"\n\n\
         [[room]]\nid = \"lobby\"\nname = \"Lobby\"\n\
         [[room.link]]\nadapter = \"a\"\nremote = \"lobby\"\n\
         [[room.link]]\nadapter = \"b\"\nremote = \"lobby\"\n",
        data = dir.join("data").display(),
        a = a.addr(),
        b = b.addr(),
    );
    let path = dir.join("bridge.toml");
    std::fs::write(&path, text).expect("write the config");
    path
}

/// `http_addr = "127.0.0.1:0"` (the bridge logs the port it got) and the provisioning token.
fn with_api() -> String {
    format!("http_addr = \"127.0.0.1:0\"\nprovisioning_token = \"{TOKEN}\"\n")
}

/// A running `bridge run`, killed if the test ends early.
struct Bridge {
    child: Child,
    log: PathBuf,
    addr: SocketAddr,
}

impl Bridge {
    /// Starts the binary and waits for it to say where it serves HTTP.
    async fn start(config: &Path) -> Self {
        Self::start_with(config, None).await
    }

    /// [`Bridge::start`] with `MALLOC_ARENA_MAX` set to `arenas`, or absent.
    async fn start_with(config: &Path, arenas: Option<&str>) -> Self {
        let log = config.with_file_name(format!(
            "bridge-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        let file = std::fs::File::create(&log).expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_bridge"));
        match arenas {
            Some(n) => command.env("MALLOC_ARENA_MAX", n),
            None => command.env_remove("MALLOC_ARENA_MAX"),
        };
        let child = command
            .arg("run")
            .arg("-c")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .expect("start the bridge");
        let mut bridge = Self {
            child,
            log,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(addr) = bridge.logged_addr() {
                bridge.addr = addr;
                return bridge;
            }
            if let Ok(Some(status)) = bridge.child.try_wait() {
                panic!("the bridge exited ({status}):\n{}", bridge.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "no http_addr logged:\n{}",
                bridge.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The `http_addr` field of the JSON log line that announces the listener.
    fn logged_addr(&self) -> Option<SocketAddr> {
        self.log_text().lines().find_map(|line| {
            let line: Value = serde_json::from_str(line).ok()?;
            line["fields"]["http_addr"].as_str()?.parse().ok()
        })
    }

    /// SIGTERM: it must exit successfully within 20 s, having flushed the store (the HTTP
    /// handlers let go of the core).
    async fn stop(self) {
        let log = self.log.clone();
        assert!(self.terminate().await, "clean exit");
        let text = std::fs::read_to_string(log).unwrap_or_default();
        assert!(text.contains("the store is flushed"), "{text}");
    }

    /// SIGTERM; true when it exits successfully (within 20 s).
    async fn terminate(mut self) -> bool {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }
}

/// One HTTP/1.1 request on a fresh connection (closed by the server after the answer).
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Answer {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    let body = body.unwrap_or_default();
    if !body.is_empty() || method == "POST" {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read answer");
    let raw = String::from_utf8(raw).expect("UTF-8 answer");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a head and a body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    let head = head.to_ascii_lowercase();
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Answer { status, head, body }
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if size == 0 {
            break;
        }
        out.push_str(&tail[..size]);
        rest = &tail[size + 2..];
    }
    out
}

async fn get(addr: SocketAddr, path: &str) -> Answer {
    http(addr, "GET", path, Some(TOKEN), None).await
}

/// The value of the sample `name{labels…}` in Prometheus text, if present.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
        if metric != name {
            return None;
        }
        let all = labels
            .iter()
            .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
        all.then(|| value.parse().ok()).flatten()
    })
}

async fn wait_for<F: Future<Output = bool>>(what: &str, mut done: impl FnMut() -> F) {
    let deadline = Instant::now() + WAIT;
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn bound_then_stopped() -> Server {
    let server = Server::bind("127.0.0.1:0").await.expect("server");
    server.shutdown().await;
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_probes_and_metrics_follow_the_adapters() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Both servers are down when the bridge starts.
    let (a, b) = (bound_then_stopped().await, bound_then_stopped().await);
    let bridge = Bridge::start(&config(dir.path(), &a, &b, &with_api(), "")).await;
    let addr = bridge.addr;

    let live = http(addr, "GET", "/health/live", None, None).await;
    assert_eq!((live.status, live.json()), (200, json!({ "live": true })));
    let ready = http(addr, "GET", "/health/ready", None, None).await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert_eq!(
        ready.json(),
        json!({ "ready": false, "adapters": { "a": false, "b": false }, "not_connected": ["a", "b"] })
    );
    let metrics = http(addr, "GET", "/metrics", None, None).await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.head.contains("content-type: text/plain"),
        "{}",
        metrics.head
    );
    let text = metrics.body;
    assert_eq!(
        sample(&text, "bridge_adapter_connected", &[("adapter", "a")]),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            "bridge_adapter_reconnects_total",
            &[("adapter", "b")]
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "bridge_dead_letters_total", &[("adapter", "b")]),
        Some(0.0)
    );
    assert_eq!(sample(&text, "bridge_build_info", &[]), Some(1.0));
    assert!(
        text.contains("# HELP bridge_adapter_connected 1 while"),
        "{text}"
    );

    // One server up: still not ready, and the answer says which adapter is missing.
    a.resume().await.expect("resume a");
    wait_for("a connected", || async {
        http(addr, "GET", "/health/ready", None, None).await.json()["not_connected"] == json!(["b"])
    })
    .await;
    b.resume().await.expect("resume b");
    wait_for("ready", || async {
        http(addr, "GET", "/health/ready", None, None).await.status == 200
    })
    .await;
    let ready = http(addr, "GET", "/health/ready", None, None).await.json();
    assert_eq!(ready["not_connected"], json!([]));

    // A message crosses: counted in and out, by adapter and kind, with its latency.
    a.post("lobby", "alice", None, "hello over there");
    wait_for("the message on b", || async {
        b.from_bridge("lobby").len() == 1
    })
    .await;
    let text = http(addr, "GET", "/metrics", None, None).await.body;
    let inbound = [
        ("adapter", "a"),
        ("kind", "message"),
        ("outcome", "accepted"),
    ];
    assert_eq!(
        sample(&text, "bridge_events_in_total", &inbound),
        Some(1.0),
        "{text}"
    );
    let outbound = [("adapter", "b"), ("kind", "message")];
    assert_eq!(
        sample(&text, "bridge_events_out_total", &outbound),
        Some(1.0),
        "{text}"
    );
    assert!(
        text.contains("# TYPE bridge_delivery_latency_seconds histogram"),
        "{text}"
    );
    let all = [("adapter", "b"), ("le", "+Inf")];
    assert_eq!(
        sample(&text, "bridge_delivery_latency_seconds_bucket", &all),
        Some(1.0)
    );
    // The accepted event was made durable: at least one flush, timed in its own buckets.
    let flushes = sample(&text, "bridge_store_flushes_total", &[]).unwrap_or(0.0);
    assert!(flushes >= 1.0, "{text}");
    assert!(
        sample(&text, "bridge_store_flush_seconds_count", &[]).unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    assert!(
        text.contains("bridge_store_flush_seconds_bucket{le=\"0.0001\"}"),
        "{text}"
    );
    let link = [("adapter", "b"), ("remote", "lobby")];
    assert_eq!(
        sample(&text, "bridge_outbox_depth", &link),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "bridge_adapter_connected", &[("adapter", "b")]),
        Some(1.0)
    );

    // A lost connection comes back: one disconnect, one reconnect.
    a.disconnect("bridge");
    wait_for("a reconnect counted", || async {
        let text = http(addr, "GET", "/metrics", None, None).await.body;
        sample(
            &text,
            "bridge_adapter_reconnects_total",
            &[("adapter", "a")],
        ) == Some(1.0)
    })
    .await;
    let text = http(addr, "GET", "/metrics", None, None).await.body;
    let a_only = [("adapter", "a")];
    assert_eq!(
        sample(&text, "bridge_adapter_disconnects_total", &a_only),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "bridge_adapter_reconnects_total",
            &[("adapter", "b")]
        ),
        Some(0.0)
    );

    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_are_provisioned_over_http_and_persist() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Server::bind("127.0.0.1:0").await.expect("server a");
    let b = Server::bind("127.0.0.1:0").await.expect("server b");
    let config = config(dir.path(), &a, &b, &with_api(), "");
    let bridge = Bridge::start(&config).await;
    let addr = bridge.addr;

    // No token, a wrong one, another scheme: 401 with a challenge.
    for token in [None, Some("wrong-token-0123456789abcdef"), Some("")] {
        let answer = http(addr, "GET", "/api/v1/rooms", token, None).await;
        assert_eq!(answer.status, 401, "{token:?}: {}", answer.body);
        assert!(
            answer.head.contains("www-authenticate: bearer"),
            "{}",
            answer.head
        );
        assert!(answer.json()["error"].as_str().is_some());
    }
    let answer = http(addr, "POST", "/api/v1/rooms/side/links", None, Some("{}")).await;
    assert_eq!(answer.status, 401, "checked before the body");

    let rooms = get(addr, "/api/v1/rooms").await;
    assert_eq!(rooms.status, 200, "{}", rooms.body);
    assert_eq!(
        rooms.json(),
        json!({ "rooms": [{ "room": "lobby", "name": "Lobby", "links": [
            { "adapter": "a", "remote": "lobby", "outbox": 0, "from_config": true },
            { "adapter": "b", "remote": "lobby", "outbox": 0, "from_config": true },
        ]}]})
    );

    // Two native rooms linked at runtime make a new room; a message crosses through it.
    let add = |room: &'static str, body: Value| async move {
        let body = body.to_string();
        let path = format!("/api/v1/rooms/{room}/links");
        http(addr, "POST", &path, Some(TOKEN), Some(&body)).await
    };
    let answer = add("side", json!({ "adapter": "a", "remote": "side-a" })).await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    assert_eq!(
        answer.json(),
        json!({ "room": "side", "adapter": "a", "remote": "side-a", "created": true })
    );
    let answer = add("side", json!({ "adapter": "b", "remote": "side-b" })).await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    a.post("side-a", "alice", None, "through a provisioned link");
    wait_for("the message in side-b", || async {
        b.from_bridge("side-b").len() == 1
    })
    .await;
    assert_eq!(
        b.from_bridge("side-b")[0].text,
        "through a provisioned link"
    );

    // Linking it again to the same room changes nothing; to another room is refused.
    let answer = add("side", json!({ "adapter": "a", "remote": "side-a" })).await;
    assert_eq!(
        (answer.status, &answer.json()["created"]),
        (200, &json!(false))
    );
    let answer = add("other", json!({ "adapter": "a", "remote": "side-a" })).await;
    assert_eq!(answer.status, 409, "{}", answer.body);
    let error = answer.json()["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(error.contains("already linked to room side"), "{error}");
    let answer = add("other", json!({ "adapter": "a", "remote": "lobby" })).await;
    assert_eq!(
        answer.status, 409,
        "a config link is taken too: {}",
        answer.body
    );

    // Mistakes: unknown adapter, bad JSON, unknown field, bad room ID, empty remote.
    let answer = add("side", json!({ "adapter": "irc", "remote": "x" })).await;
    assert_eq!(answer.status, 404, "{}", answer.body);
    assert!(answer.body.contains("configured: a, b"), "{}", answer.body);
    let bad = http(
        addr,
        "POST",
        "/api/v1/rooms/side/links",
        Some(TOKEN),
        Some("{nope"),
    )
    .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    let answer = add("side", json!({ "adapter": "a", "remote": "x", "extra": 1 })).await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    let answer = add("Bad%20Room", json!({ "adapter": "a", "remote": "x" })).await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    let answer = add("side", json!({ "adapter": "a", "remote": "" })).await;
    assert_eq!(answer.status, 400, "{}", answer.body);

    // A link of the configuration file stays; a provisioned one goes, once.
    let del = |path: &'static str| http(addr, "DELETE", path, Some(TOKEN), None);
    let answer = del("/api/v1/links/a/lobby").await;
    assert_eq!(answer.status, 409, "{}", answer.body);
    assert!(
        answer.body.contains("declared in the configuration file"),
        "{}",
        answer.body
    );
    assert_eq!(del("/api/v1/links/a/side-a").await.status, 204);
    let answer = del("/api/v1/links/a/side-a").await;
    assert_eq!(answer.status, 404, "{}", answer.body);
    // A native room ID with a slash or an escaped character is the rest of the path.
    let answer = add("side", json!({ "adapter": "b", "remote": "#odd/room" })).await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    assert_eq!(del("/api/v1/links/b/%23odd/room").await.status, 204);

    let letters = get(addr, "/api/v1/dead-letters").await;
    assert_eq!(
        (letters.status, letters.json()),
        (200, json!({ "dead_letters": [] }))
    );
    let unknown = get(addr, "/api/v1/nothing").await;
    assert_eq!(unknown.status, 404);
    assert!(unknown.json()["error"].is_string());

    // The changes were persisted: after a restart, side links b only.
    bridge.stop().await;
    let bridge = Bridge::start(&config).await;
    let rooms = get(bridge.addr, "/api/v1/rooms").await.json();
    assert_eq!(
        rooms["rooms"][1],
        json!({ "room": "side", "name": null, "links": [
            { "adapter": "b", "remote": "side-b", "outbox": 0, "from_config": false },
        ]})
    );
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_counted_and_retried() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Server::bind("127.0.0.1:0").await.expect("server a");
    let b = bound_then_stopped().await;
    // One attempt: a message for the unreachable server is dead-lettered at once.
    let config = config(dir.path(), &a, &b, &with_api(), "max_attempts = 1");
    let bridge = Bridge::start(&config).await;
    let addr = bridge.addr;
    wait_for("a connected", || async {
        http(addr, "GET", "/health/ready", None, None).await.json()["not_connected"] == json!(["b"])
    })
    .await;

    a.post("lobby", "alice", None, "for later");
    wait_for("a dead letter", || async {
        get(addr, "/api/v1/dead-letters").await.json()["dead_letters"]
            .as_array()
            .is_some_and(|l| l.len() == 1)
    })
    .await;
    let letter = get(addr, "/api/v1/dead-letters").await.json()["dead_letters"][0].clone();
    assert_eq!(
        (
            &letter["adapter"],
            &letter["remote"],
            &letter["room"],
            &letter["kind"]
        ),
        (
            &json!("b"),
            &json!("lobby"),
            &json!("lobby"),
            &json!("message")
        ),
        "{letter}"
    );
    assert_eq!(letter["attempts"], json!(1));
    assert!(
        letter["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{letter}"
    );
    let text = http(addr, "GET", "/metrics", None, None).await.body;
    assert_eq!(
        sample(&text, "bridge_dead_letters_total", &[("adapter", "b")]),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "bridge_dead_letters_stored", &[]),
        Some(1.0),
        "{text}"
    );

    // Once b is back, a retry delivers it.
    b.resume().await.expect("resume b");
    wait_for("ready", || async {
        http(addr, "GET", "/health/ready", None, None).await.status == 200
    })
    .await;
    let retry = http(
        addr,
        "POST",
        "/api/v1/dead-letters/retry",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!((retry.status, retry.json()), (200, json!({ "retried": 1 })));
    wait_for("the retried message on b", || async {
        b.from_bridge("lobby").len() == 1
    })
    .await;
    assert_eq!(b.from_bridge("lobby")[0].text, "for later");
    let letters = get(addr, "/api/v1/dead-letters").await.json();
    assert_eq!(letters, json!({ "dead_letters": [] }));
    let text = http(addr, "GET", "/metrics", None, None).await.body;
    assert_eq!(sample(&text, "bridge_dead_letters_stored", &[]), Some(0.0));
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_addr_still_works_and_the_api_is_off_without_a_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Server::bind("127.0.0.1:0").await.expect("server a");
    let b = Server::bind("127.0.0.1:0").await.expect("server b");
    let config = config(dir.path(), &a, &b, "metrics_addr = \"127.0.0.1:0\"", "");
    let bridge = Bridge::start(&config).await;
    let addr = bridge.addr;
    assert_eq!(http(addr, "GET", "/metrics", None, None).await.status, 200);
    assert_eq!(
        http(addr, "GET", "/health/live", None, None).await.status,
        200
    );
    let off = get(addr, "/api/v1/rooms").await;
    assert_eq!(off.status, 404, "{}", off.body);
    assert!(off.body.contains("provisioning API is off"), "{}", off.body);
    assert!(
        bridge
            .log_text()
            .contains("metrics_addr is the former name of http_addr"),
        "a deprecation warning"
    );
    bridge.stop().await;
}

/// The value of `name` in the environment of process `pid`.
fn environment_of(pid: u32, name: &str) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
    let prefix = format!("{name}=");
    environ
        .split(|b| *b == 0)
        .map(String::from_utf8_lossy)
        .find_map(|entry| entry.strip_prefix(&prefix).map(str::to_owned))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bridge_runs_with_few_malloc_arenas_unless_told_otherwise() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Server::bind("127.0.0.1:0").await.expect("server a");
    let b = Server::bind("127.0.0.1:0").await.expect("server b");
    let config = config(dir.path(), &a, &b, &with_api(), "");
    // Started without the variable: the same process (pid) runs on with it set.
    let bridge = Bridge::start_with(&config, None).await;
    assert_eq!(
        environment_of(bridge.child.id(), "MALLOC_ARENA_MAX").as_deref(),
        Some(bridge_core::process::MALLOC_ARENA_MAX)
    );
    bridge.stop().await;
    // An admin's own value is kept.
    let bridge = Bridge::start_with(&config, Some("4")).await;
    assert_eq!(
        environment_of(bridge.child.id(), "MALLOC_ARENA_MAX").as_deref(),
        Some("4")
    );
    bridge.stop().await;
}

/// The bridge's answers in a linechat room, in order.
fn answers(server: &Server, room: &str) -> Vec<String> {
    server
        .from_bridge(room)
        .into_iter()
        .filter(|m| m.sender == bridge_example_linechat::BRIDGE_USER)
        .map(|m| m.text)
        .collect()
}

/// Posts `text` in `room` as `user` and waits for the bridge's next answer there.
async fn command(server: &Server, room: &str, user: &str, text: &str) -> String {
    let before = answers(server, room).len();
    server.post(room, user, None, text);
    wait_for(&format!("the answer to {text:?}"), || async {
        answers(server, room).len() > before
    })
    .await;
    answers(server, room)[before].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_run_commands_in_a_management_room() {
    let (a, b) = (
        Server::bind("127.0.0.1:0").await.expect("server a"),
        Server::bind("127.0.0.1:0").await.expect("server b"),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let extra = format!(
        "{}admins = [\"a:alice\"]\n[[bridge.management]]\nadapter = \"a\"\nremote = \"admin\"\n",
        with_api()
    );
    let bridge = Bridge::start(&config(dir.path(), &a, &b, &extra, "")).await;
    let addr = bridge.addr;

    let help = command(&a, "admin", "alice", "help").await;
    assert!(help.contains("link ROOM ADAPTER REMOTE"), "{help}");
    let status = command(&a, "admin", "alice", "!bridge status").await;
    assert!(status.contains("Room lobby (Lobby):"), "{status}");
    assert!(
        status.contains("a:lobby (outbox 0, from config)"),
        "{status}"
    );
    assert!(status.contains("Dead letters: 0"), "{status}");

    // A non-admin is refused, and nothing changes.
    let refused = command(&a, "admin", "mallory", "link dev b dev").await;
    assert!(refused.contains("only the bridge's admins"), "{refused}");
    assert!(bridge.log_text().contains("admin command refused"));
    let rooms = get_api(addr, "/api/v1/rooms").await;
    assert_eq!(rooms["rooms"].as_array().map(Vec::len), Some(1), "{rooms}");

    // Link, through the same operations as the API (which then shows it).
    let linked = command(&a, "admin", "alice", "link dev b dev").await;
    assert_eq!(linked, "Linked b:dev to room dev.");
    let linked = command(&a, "admin", "alice", "link dev a dev").await;
    assert_eq!(linked, "Linked a:dev to room dev.");
    let rooms = get_api(addr, "/api/v1/rooms").await;
    assert!(rooms.to_string().contains("\"room\":\"dev\""), "{rooms}");
    a.post("dev", "alice", None, "hello dev");
    wait_for("the message in the new link", || async {
        b.from_bridge("dev")
            .iter()
            .any(|m| m.text.contains("hello dev"))
    })
    .await;
    let again = command(&a, "admin", "alice", "link dev b dev").await;
    assert_eq!(again, "b:dev is already linked to room dev.");
    let taken = command(&a, "admin", "alice", "link other b dev").await;
    assert!(taken.starts_with("Cannot link:"), "{taken}");
    let itself = command(&a, "admin", "alice", "link dev a admin").await;
    assert!(itself.contains("management room"), "{itself}");

    let retried = command(&a, "admin", "alice", "retry-dead-letters").await;
    assert_eq!(retried, "Put 0 dead letters back into their outboxes.");
    let retried = command(&a, "admin", "alice", "retry-dead-letters nowhere").await;
    assert_eq!(retried, "Cannot retry: no room nowhere");

    let unlinked = command(&a, "admin", "alice", "unlink b dev").await;
    assert_eq!(unlinked, "Unlinked b:dev from room dev.");
    let declared = command(&a, "admin", "alice", "unlink b lobby").await;
    assert!(
        declared.contains("declared in the configuration file"),
        "{declared}"
    );
    let unknown = command(&a, "admin", "alice", "frobnicate").await;
    assert!(unknown.contains("\"help\""), "{unknown}");

    // Nothing said in the management room was bridged, and the bridge's own answers were
    // never taken for commands: one answer per command.
    assert!(b.from_bridge("admin").is_empty());
    assert!(b.from_bridge("lobby").is_empty());
    let posted = a
        .messages("admin")
        .iter()
        .filter(|m| m.sender != bridge_example_linechat::BRIDGE_USER)
        .count();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(answers(&a, "admin").len(), posted);
    bridge.stop().await;
}

/// `GET` of the provisioning API with the token, as JSON.
async fn get_api(addr: SocketAddr, path: &str) -> Value {
    let answer = http(addr, "GET", path, Some(TOKEN), None).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    answer.json()
}
