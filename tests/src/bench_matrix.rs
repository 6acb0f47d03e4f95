// The `matrix` benchmark (included by src/bin/bench.rs).
//
// Against a Synapse of its own (tests/src/synapse.rs: a fresh directory, the client API on
// 127.0.0.1:26808, application service pushes to 127.0.0.1:26900, both moved by
// `BRIDGE_BENCH_MATRIX_PORT_BASE`; rate limits lifted, stopped at the end), with the
// interpreter of scripts/servers.sh's `synapse_install` ($BRIDGE_TEST_SYNAPSE_PYTHON, which
// scripts/bench.sh sets).
//
// Send path (far side → core → ghost → Synapse), in-process: `bridge_core::Core` over sled with
// the Matrix adapter in appservice mode and a far-side adapter of the bench's own, one neutral
// room linking a Matrix room with a far room. The Matrix adapter is wrapped so that the bench
// sees when each `send` is called and when it returns (Synapse answered the PUT: accepted).
// Every client of Synapse in this phase (the adapter and the bench's own) goes through a
// transparent TCP relay of the bench (127.0.0.1:26809) that notes when each send request
// reached it and when its answer left it: the time Synapse spent on each message.
//
// Throughput paths, interleaved in slices of `SLICE` (`CYCLES` cycles, the order rotating), so
// that the machine's background load hits them alike; rate = messages / time over all slices.
// Every path sends one message at a time (the next after the previous returned), as the bridge
// does per room:
//
// - **direct**: alice (a user's access token, reqwest with the adapter's client settings) PUTs
//   `m.room.message` into the bridged room: what Synapse accepts from one client there. The
//   bridge takes each of them from its transaction and hands it to the far side: that is the
//   inbound figure (appservice transaction → core → far adapter's `send`).
// - **plain**: the same client into a room the bridge is not in (Synapse pushes nothing to the
//   appservice: its cheapest send).
// - **ghost**: the same client with the appservice token as one of the ghosts (`?user_id=`)
//   into the bridged room: exactly the Synapse work of a bridged send, without the bridge.
// - **bridged**: events enqueued on the far side (at most `WINDOW` waiting, so the link's queue
//   never runs dry), from `SENDERS` users whose ghosts were registered, named and joined during
//   the warm-up; counted when the adapter's `send` returned.
//
// Latency, paced well below every path's capacity, ghost / bridged / direct in turn:
// `p50_us`/`p99_us` are the latency the bridge adds on the send path, per message: (far-side
// enqueue → the adapter's send returned) minus the time Synapse took for that message's PUT as
// the relay saw it. Also reported: the same by subtraction of percentiles (bridged minus the
// ghost's PUT, which swings with Synapse's own latency), and inbound (alice's PUT returned →
// the far side's send called: all of it the homeserver's push and the bridge).
//
// RSS: the `bridge` binary (next to this one) with the Matrix adapter and a linechat adapter
// (its server in this process), `RSS_ROOMS` Matrix rooms each linked to a linechat room;
// `RSS_GHOSTS` distinct linechat users post once each (at most `RSS_IN_FLIGHT` posted and not
// yet in Matrix: a steady flow, not one backlog), so the adapter registers, joins and sends as
// that many ghosts; VmRSS of the bridge process once every message is in Matrix, and again
// after a restart (the ghosts loaded from the store).

use std::collections::{BTreeMap, HashMap};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bridge_core::testkit::inbound;
use bridge_core::{
    Adapter, AdapterContext, AdapterError, AdapterId, Attachment, AttachmentBody, Capabilities,
    Core, Delivered, EventKind, InboundEvent, Link, OutboundEvent, RemoteEventId, RemoteRoomId,
    RemoteUserId, RoomSettings, Sender, SledStore, Store,
};
use bridge_matrix::AppserviceAdapter;
use bridge_tests::synapse::{AS_TOKEN, Synapse};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, watch};

/// Overrides the base of the ports below (26800): Synapse on base+8, the relay on base+9, the
/// appservice on base+100, the bridge's metrics on base+150 (runs alongside other benches).
const PORT_BASE_ENV: &str = "BRIDGE_BENCH_MATRIX_PORT_BASE";

fn port(offset: u16) -> u16 {
    let base = std::env::var(PORT_BASE_ENV)
        .ok()
        .and_then(|v| v.parse::<u16>().ok())
        .unwrap_or(26800);
    base.saturating_add(offset)
}

fn synapse_port() -> u16 {
    port(8)
}

fn relay_port() -> u16 {
    port(9)
}

fn as_port() -> u16 {
    port(100)
}

fn metrics_port() -> u16 {
    port(150)
}

/// Throughput: one slice of one path, and how many times every path runs a slice.
const SLICE: Duration = Duration::from_secs(2);
const CYCLES: usize = 8;
/// Bridged run: events enqueued on the far side and not yet accepted by Synapse, at most.
const WINDOW: usize = 16;
/// Far-side users (ghosts) the bridged messages come from, in turn.
const SENDERS: usize = 8;
/// Paced latency run: messages per path; the rate (all paths together) is a third of the
/// slowest path's, at most `MAX_PACE_RATE`.
const PACED: usize = 150;
const MAX_PACE_RATE: f64 = 30.0;
/// The most messages one probe records.
const PROBE_CAPACITY: usize = 20_000;
/// How long any single wait may take before the bench gives up.
const WAIT: Duration = Duration::from_secs(120);

/// RSS phase: rooms, distinct remote users (one ghost each), messages in flight.
const RSS_ROOMS: usize = 100;
const RSS_GHOSTS: usize = 10_000;
const RSS_IN_FLIGHT: usize = 200;
/// Overrides `RSS_GHOSTS` (development runs).
const RSS_GHOSTS_ENV: &str = "BRIDGE_BENCH_MATRIX_GHOSTS";
/// Overrides the number of distinct users in the RSS phase (development runs).
const RSS_USERS_ENV: &str = "BRIDGE_BENCH_MATRIX_USERS";
/// `send` or `rss`: run only that phase (development runs).
const ONLY_ENV: &str = "BRIDGE_BENCH_MATRIX_ONLY";
/// A command to run the bridge binary under in the RSS phase (development runs).
const WRAP_ENV: &str = "BRIDGE_BENCH_MATRIX_WRAP";
/// How long the RSS phase may take to bridge all of them.
const RSS_WAIT: Duration = Duration::from_secs(3600);

/// Nanoseconds since the probe's origin; 0 means "not yet".
fn ns_since(origin: Instant) -> u64 {
    u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX).max(1)
}

/// The timestamps of one measured run, by message index (the body is "`<tag> <index>`").
#[derive(Debug)]
struct Probe {
    tag: String,
    origin: Instant,
    /// Enqueued on the far side, or the PUT started.
    start: Vec<AtomicU64>,
    /// Bridged: the adapter's `send` was called.
    called: Vec<AtomicU64>,
    /// Synapse accepted it: the adapter's `send` returned, or the PUT's answer.
    accepted: Vec<AtomicU64>,
    /// Inbound: the far side's `send` was called.
    arrived: Vec<AtomicU64>,
    n_accepted: AtomicUsize,
    n_arrived: AtomicUsize,
    changed: Notify,
    /// The transaction ID of each message's PUT (what the relay knows it by) → its index.
    txns: Mutex<HashMap<String, usize>>,
}

/// The probes the adapters record into.
type Current = Arc<Mutex<Vec<Arc<Probe>>>>;

impl Probe {
    fn new(tag: &str, capacity: usize) -> Arc<Self> {
        let zeros = || (0..capacity).map(|_| AtomicU64::new(0)).collect();
        Arc::new(Self {
            tag: tag.to_owned(),
            origin: Instant::now(),
            start: zeros(),
            called: zeros(),
            accepted: zeros(),
            arrived: zeros(),
            n_accepted: AtomicUsize::new(0),
            n_arrived: AtomicUsize::new(0),
            changed: Notify::new(),
            txns: Mutex::new(HashMap::new()),
        })
    }

    fn now(&self) -> u64 {
        ns_since(self.origin)
    }

    fn body(&self, i: usize) -> String {
        format!("{} {i}", self.tag)
    }

    /// The index of a message of this probe.
    fn index_of(&self, body: &str) -> Option<usize> {
        let i: usize = body
            .strip_prefix(self.tag.as_str())?
            .strip_prefix(' ')?
            .parse()
            .ok()?;
        (i < self.start.len()).then_some(i)
    }

    fn mark(&self, slot: &[AtomicU64], counter: Option<&AtomicUsize>, i: usize) {
        if slot[i]
            .compare_exchange(0, self.now(), Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
            && let Some(counter) = counter
        {
            counter.fetch_add(1, Ordering::AcqRel);
            self.changed.notify_waiters();
        }
    }

    async fn wait(
        &self,
        what: &str,
        counter: &AtomicUsize,
        n: usize,
        deadline: tokio::time::Instant,
    ) -> anyhow::Result<()> {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let have = counter.load(Ordering::Acquire);
            if have >= n {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                anyhow::bail!("{}: only {have} of {n} {what} in time", self.tag);
            }
        }
    }

    /// `to - from` in µs for every index in `0..n` where both are set, sorted.
    fn spans(&self, from: &[AtomicU64], to: &[AtomicU64], n: usize) -> Vec<u32> {
        let mut out: Vec<u32> = (0..n)
            .filter_map(|i| {
                let (a, b) = (
                    from[i].load(Ordering::Acquire),
                    to[i].load(Ordering::Acquire),
                );
                (a > 0 && b >= a).then(|| u32::try_from((b - a) / 1_000).unwrap_or(u32::MAX))
            })
            .collect();
        out.sort_unstable();
        out
    }

    /// Seconds from the first start to the last of `to`, over `0..n`.
    fn secs(&self, to: &[AtomicU64], n: usize) -> f64 {
        let first = self.start[0].load(Ordering::Acquire);
        let last = to[..n]
            .iter()
            .map(|t| t.load(Ordering::Acquire))
            .max()
            .unwrap_or(0);
        if n == 0 || last <= first {
            return 0.0;
        }
        (last - first) as f64 / 1e9
    }
}

fn body_of(event: &OutboundEvent) -> Option<&str> {
    match &event.kind {
        EventKind::Message { content, .. } => Some(content.text.body()),
        _ => None,
    }
}

/// The Matrix adapter, with the bench watching its `send`.
#[derive(Debug, Clone)]
struct Timed {
    inner: AppserviceAdapter,
    current: Current,
}

#[async_trait]
impl Adapter for Timed {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn run(&self, ctx: AdapterContext) -> Result<(), AdapterError> {
        self.inner.run(ctx).await
    }

    async fn send(&self, event: OutboundEvent) -> Result<Delivered, AdapterError> {
        let seen = body_of(&event).and_then(|body| {
            let probes = self.current.lock();
            let (p, i) = probes
                .iter()
                .find_map(|p| Some((p.clone(), p.index_of(body)?)))?;
            p.mark(&p.called, None, i);
            // The adapter's transaction ID for the PUT is the neutral event ID.
            p.txns.lock().insert(event.id.to_string(), i);
            Some((p, i))
        });
        let result = self.inner.send(event).await;
        if let (Some((p, i)), Ok(_)) = (seen, &result) {
            p.mark(&p.accepted, Some(&p.n_accepted), i);
        }
        result
    }

    async fn join(&self, room: &RemoteRoomId) -> Result<(), AdapterError> {
        self.inner.join(room).await
    }

    async fn leave(&self, room: &RemoteRoomId) -> Result<(), AdapterError> {
        self.inner.leave(room).await
    }

    async fn resolve_alias(&self, alias: &str) -> Result<RemoteRoomId, AdapterError> {
        self.inner.resolve_alias(alias).await
    }

    async fn open_direct(
        &self,
        user: &RemoteUserId,
        with: &Sender,
    ) -> Result<RemoteRoomId, AdapterError> {
        self.inner.open_direct(user, with).await
    }

    async fn fetch_attachment(
        &self,
        attachment: &Attachment,
    ) -> Result<AttachmentBody, AdapterError> {
        self.inner.fetch_attachment(attachment).await
    }

    async fn backfill(
        &self,
        room: &RemoteRoomId,
        after: Option<&RemoteEventId>,
        limit: usize,
    ) -> Result<Vec<InboundEvent>, AdapterError> {
        self.inner.backfill(room, after, limit).await
    }
}

/// The far side of the link: enqueues what the bench gives it, records what arrives.
#[derive(Debug, Clone)]
struct Far {
    ctx: Arc<watch::Sender<Option<AdapterContext>>>,
    current: Current,
}

#[async_trait]
impl Adapter for Far {
    fn capabilities(&self) -> Capabilities {
        Capabilities::all()
    }

    async fn run(&self, ctx: AdapterContext) -> Result<(), AdapterError> {
        ctx.set_connected(true);
        let shutdown = ctx.shutdown().clone();
        self.ctx.send_replace(Some(ctx));
        shutdown.cancelled().await;
        self.ctx.send_replace(None);
        Ok(())
    }

    async fn send(&self, event: OutboundEvent) -> Result<Delivered, AdapterError> {
        let seen = body_of(&event).and_then(|body| {
            let probes = self.current.lock();
            probes
                .iter()
                .find_map(|p| Some((p.clone(), p.index_of(body)?)))
        });
        if let Some((p, i)) = seen {
            p.mark(&p.arrived, Some(&p.n_arrived), i);
        }
        Ok(Delivered {
            native_id: Some(RemoteEventId::new(format!("far-{}", event.id))),
            puppet: None,
        })
    }
}

/// A transparent TCP relay in front of Synapse that every client of the send-path phase uses
/// (the adapter, and the bench's own clients alike). For each `PUT …/send/<type>/<txn>` it notes
/// when the request's first bytes reached it and when the last bytes of the answer left it:
/// the time Synapse took for that message, as a client next to it would see it.
#[derive(Debug, Default)]
struct Relay {
    sends: Mutex<HashMap<String, (Instant, Instant)>>,
    /// Connections opened through it (HTTP keep-alive keeps this low).
    connections: AtomicUsize,
}

/// The transaction ID of a send request, from its request line.
fn send_txn(request: &[u8]) -> Option<String> {
    let line = request.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let path = line.split(' ').nth(1)?;
    let path = path.split('?').next()?;
    let rest = &path[path.find("/send/")? + "/send/".len()..];
    let txn = rest.split('/').nth(1)?;
    Some(txn.to_owned())
}

impl Relay {
    async fn start(listen: u16, upstream: u16) -> anyhow::Result<Arc<Self>> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", listen)).await?;
        let relay = Arc::new(Self::default());
        let accepting = relay.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let relay = accepting.clone();
                tokio::spawn(async move {
                    let _ = relay.serve(client, upstream).await;
                });
            }
        });
        Ok(relay)
    }

    async fn serve(
        self: Arc<Self>,
        client: tokio::net::TcpStream,
        upstream: u16,
    ) -> std::io::Result<()> {
        self.connections.fetch_add(1, Ordering::Relaxed);
        let server = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await?;
        client.set_nodelay(true)?;
        server.set_nodelay(true)?;
        let (mut client_read, mut client_write) = client.into_split();
        let (mut server_read, mut server_write) = server.into_split();
        // HTTP/1.1 without pipelining: a request starts with the first bytes from the client
        // after an answer began. (The send being answered, whether its answer began.)
        let state: Arc<Mutex<(Option<String>, bool)>> = Arc::new(Mutex::new((None, true)));
        let up_state = state.clone();
        let up_relay = self.clone();
        let up = async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = client_read.read(&mut buf).await?;
                if n == 0 {
                    return server_write.shutdown().await;
                }
                {
                    let mut state = up_state.lock();
                    if state.1 {
                        state.1 = false;
                        state.0 = send_txn(&buf[..n]);
                        if let Some(txn) = &state.0 {
                            let now = Instant::now();
                            up_relay.sends.lock().insert(txn.clone(), (now, now));
                        }
                    }
                }
                server_write.write_all(&buf[..n]).await?;
            }
        };
        let down = async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = server_read.read(&mut buf).await?;
                if n == 0 {
                    return client_write.shutdown().await;
                }
                client_write.write_all(&buf[..n]).await?;
                let now = Instant::now();
                let mut state = state.lock();
                state.1 = true;
                if let Some(txn) = &state.0
                    && let Some(times) = self.sends.lock().get_mut(txn)
                {
                    times.1 = now;
                }
            }
        };
        tokio::try_join!(up, down).map(|_| ())
    }

    /// Synapse's time for the send with this transaction ID, in µs.
    fn synapse_us(&self, txn: &str) -> Option<u64> {
        let (first, last) = *self.sends.lock().get(txn)?;
        (last > first).then(|| u64::try_from((last - first).as_micros()).unwrap_or(u64::MAX))
    }
}

/// A plain Matrix client: reqwest with the settings of the adapter's own client
/// (`bridge_matrix::homeserver::Homeserver`).
#[derive(Debug, Clone)]
struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
    /// Identity assertion (`?user_id=`) with the appservice token.
    as_user: Option<String>,
}

impl Client {
    fn new(base: &str, token: &str, as_user: Option<&str>) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()?;
        Ok(Self {
            http,
            base: base.to_owned(),
            token: token.to_owned(),
            as_user: as_user.map(str::to_owned),
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &[&str],
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let mut url = reqwest::Url::parse(&self.base)?;
        url.path_segments_mut()
            .map_err(|()| anyhow::anyhow!("bad base URL"))?
            .extend(["_matrix", "client", "v3"])
            .extend(path);
        if let Some(user) = &self.as_user {
            url.query_pairs_mut().append_pair("user_id", user);
        }
        let mut request = self
            .http
            .request(method, url)
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(30));
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(serde_json::to_vec(body)?);
        }
        let response = request.send().await?;
        let status = response.status();
        let bytes = response.bytes().await?;
        anyhow::ensure!(
            status.is_success(),
            "{} {}: {status} {}",
            path.join("/"),
            self.as_user.as_deref().unwrap_or(""),
            String::from_utf8_lossy(&bytes)
        );
        Ok(serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    async fn send_text(&self, room: &str, txn: &str, body: &str) -> anyhow::Result<()> {
        let content = json!({ "msgtype": "m.text", "body": body });
        self.call(
            reqwest::Method::PUT,
            &["rooms", room, "send", "m.room.message", txn],
            Some(&content),
        )
        .await
        .map(|_| ())
    }

    /// A public room (`extra` is merged into the createRoom body); its ID.
    async fn create_room(&self, name: &str, extra: Value) -> anyhow::Result<String> {
        let mut body = json!({ "preset": "public_chat", "name": name });
        if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
            body.extend(extra);
        }
        let answer = self
            .call(reqwest::Method::POST, &["createRoom"], Some(&body))
            .await?;
        answer["room_id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("createRoom answered {answer}"))
    }

    async fn joined_members(&self, room: &str) -> anyhow::Result<usize> {
        let answer = self
            .call(reqwest::Method::GET, &["rooms", room, "joined_members"], None)
            .await?;
        Ok(answer["joined"].as_object().map_or(0, serde_json::Map::len))
    }
}

async fn login(base: &str, user: &str, password: &str) -> anyhow::Result<String> {
    let anonymous = Client::new(base, "", None)?;
    let answer = anonymous
        .call(
            reqwest::Method::POST,
            &["login"],
            Some(&json!({
                "type": "m.login.password",
                "identifier": { "type": "m.id.user", "user": user },
                "password": password,
            })),
        )
        .await?;
    answer["access_token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("login answered {answer}"))
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// CPU used by Synapse and by this process between two points.
#[derive(Debug, Clone, Copy)]
struct Cpu {
    synapse: f64,
    bench: f64,
    /// Bytes this process has caused to be written to the disk (its store).
    bench_written: u64,
}

fn cpu_now(synapse_pid: u32) -> Cpu {
    let written = std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|l| l.strip_prefix("write_bytes: "))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0);
    Cpu {
        synapse: bridge_tests::cpu_seconds(synapse_pid),
        bench: bridge_tests::cpu_seconds(std::process::id()),
        bench_written: written,
    }
}

/// Synapse's process: the one whose command line names its config file.
fn synapse_pid(synapse: &Synapse) -> anyhow::Result<u32> {
    let config = synapse.config_path().to_string_lossy().into_owned();
    for entry in std::fs::read_dir("/proc")? {
        let entry = entry?;
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.contains("synapse.app.homeserver") && cmdline.contains(config.as_str()) {
            return Ok(pid);
        }
    }
    anyhow::bail!("Synapse's process (config {config}) not found")
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

/// The registration Synapse was given (tests/servers/appservice.yaml), written out for the
/// bridge.
fn registration_file(dir: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    let template = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("servers/appservice.yaml");
    let text = std::fs::read_to_string(template)?.replace("@AS_PORT@", &as_port().to_string());
    let path = dir.join("registration.yaml");
    std::fs::write(&path, text)?;
    Ok(path)
}

fn matrix_adapter(dir: &std::path::Path, base: &str) -> anyhow::Result<AppserviceAdapter> {
    let registration = registration_file(dir)?;
    let text = format!(
        "mode = 'appservice'\nhomeserver = '{base}'\nserver_name = 'localhost'\n\
         registration = '{}'\nlisten = '127.0.0.1:{}'",
        registration.display(),
        as_port()
    );
    let table: toml::Table = text.parse()?;
    let settings = bridge_matrix::settings::parse(&table, true).map_err(|issues| {
        let list: Vec<String> = issues
            .iter()
            .map(|i| format!("{}: {}", i.path, i.message))
            .collect();
        anyhow::anyhow!("matrix settings: {}", list.join("; "))
    })?;
    let registration = bridge_matrix::registration::load(&registration)
        .map_err(|e| anyhow::anyhow!("registration: {e}"))?;
    AppserviceAdapter::new(AdapterId::new("matrix"), settings, registration)
        .map_err(|e| anyhow::anyhow!("adapter: {e}"))
}

const FAR_ROOM: &str = "far-room";

/// The far-side user of bridged message `i`, and the ghost standing for it.
fn sender_of(i: usize) -> (String, String) {
    let k = i % SENDERS;
    (format!("user{k}"), format!("User {k}"))
}

fn ghost_of_sender(k: usize) -> String {
    format!("@_bridge_far_user{k}:localhost")
}

/// Everything the send-path phase uses.
struct Rig {
    core: Core,
    far: watch::Receiver<Option<AdapterContext>>,
    current: Current,
    relay: Arc<Relay>,
    alice: Client,
    ghost: Client,
    bridged_room: String,
    plain_room: String,
    synapse_pid: u32,
    _store: tempfile::TempDir,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Path {
    /// Alice into the bridged room; the far side counts what arrives (the inbound path).
    Direct,
    /// Alice into a room without the bridge.
    Plain,
    /// The appservice token as a ghost, into the bridged room.
    Ghost,
    Bridged,
}

impl Path {
    const ALL: [Path; 4] = [Path::Direct, Path::Plain, Path::Ghost, Path::Bridged];

    fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Plain => "plain",
            Self::Ghost => "ghost",
            Self::Bridged => "bridged",
        }
    }
}

/// What the slices of one path add up to.
#[derive(Debug, Default, Clone)]
struct Totals {
    messages: usize,
    secs: f64,
    /// Direct: from the first PUT to the last message's arrival on the far side.
    secs_arrived: f64,
    synapse_cpu: f64,
    bench_cpu: f64,
    bench_written: u64,
    /// Inbound: the longest time the last message of a slice took to reach the far side after
    /// its PUT returned, in ms.
    max_lag_ms: f64,
}

impl Totals {
    fn mps(&self) -> f64 {
        if self.secs > 0.0 {
            self.messages as f64 / self.secs
        } else {
            0.0
        }
    }

    fn arrived_mps(&self) -> f64 {
        if self.secs_arrived > 0.0 {
            self.messages as f64 / self.secs_arrived
        } else {
            0.0
        }
    }

    fn kb_per_msg(&self) -> f64 {
        if self.messages == 0 {
            0.0
        } else {
            self.bench_written as f64 / 1024.0 / self.messages as f64
        }
    }

    fn cpu_ms_per_msg(&self, cpu: f64) -> f64 {
        if self.messages == 0 {
            0.0
        } else {
            cpu * 1000.0 / self.messages as f64
        }
    }
}

impl Rig {
    async fn far_ctx(&self) -> anyhow::Result<AdapterContext> {
        let mut rx = self.far.clone();
        let ctx = tokio::time::timeout(WAIT, rx.wait_for(Option::is_some))
            .await
            .map_err(|_| anyhow::anyhow!("the far adapter did not start"))?
            .map_err(|_| anyhow::anyhow!("the far adapter stopped"))?
            .clone();
        ctx.ok_or_else(|| anyhow::anyhow!("the far adapter stopped"))
    }

    /// The client and room of a path that PUTs itself.
    fn client_of(&self, path: Path) -> (&Client, &str) {
        match path {
            Path::Plain => (&self.alice, &self.plain_room),
            Path::Ghost => (&self.ghost, &self.bridged_room),
            _ => (&self.alice, &self.bridged_room),
        }
    }

    /// One PUT of message `i` of `probe` on a path that PUTs itself.
    async fn put(&self, path: Path, probe: &Probe, i: usize) -> anyhow::Result<()> {
        let (client, room) = self.client_of(path);
        let txn = format!("{}-{i}", probe.tag);
        probe.txns.lock().insert(txn.clone(), i);
        probe.start[i].store(probe.now(), Ordering::Release);
        client.send_text(room, &txn, &probe.body(i)).await?;
        probe.mark(&probe.accepted, Some(&probe.n_accepted), i);
        Ok(())
    }

    /// Enqueues bridged message `i` of `probe` on the far side.
    fn enqueue(
        &self,
        ctx: &AdapterContext,
        probe: &Probe,
        i: usize,
    ) -> anyhow::Result<bridge_core::Pending> {
        let (user, name) = sender_of(i);
        let event = inbound(FAR_ROOM)
            .id(&format!("{}-{i}", probe.tag))
            .from(&user)
            .named(&name)
            .text(&probe.body(i));
        probe.start[i].store(probe.now(), Ordering::Release);
        Ok(ctx.enqueue(event)?)
    }

    /// Runs `path` for `count` messages, or for `span` when given; returns the probe and how
    /// many messages it holds, once all of them were accepted (inbound: arrived).
    async fn drive(
        &self,
        path: Path,
        tag: &str,
        count: usize,
        span: Option<Duration>,
    ) -> anyhow::Result<(Arc<Probe>, usize)> {
        let probe = Probe::new(tag, count);
        self.current.lock().push(probe.clone());
        let started = tokio::time::Instant::now();
        let deadline = started + WAIT;
        let more = |i: usize| i < count && span.is_none_or(|span| started.elapsed() < span);
        let mut n = 0;
        if path == Path::Bridged {
            let ctx = self.far_ctx().await?;
            let mut durable = FuturesUnordered::new();
            while more(n) {
                if n >= WINDOW {
                    probe
                        .wait("accepted", &probe.n_accepted, n + 1 - WINDOW, deadline)
                        .await?;
                }
                // Durability is awaited alongside, as a real adapter would.
                durable.push(self.enqueue(&ctx, &probe, n)?.durable());
                n += 1;
                while futures::FutureExt::now_or_never(durable.next())
                    .flatten()
                    .is_some()
                {}
            }
            while durable.next().await.is_some() {}
            probe.wait("accepted", &probe.n_accepted, n, deadline).await?;
        } else {
            while more(n) {
                self.put(path, &probe, n).await?;
                n += 1;
            }
            if path == Path::Direct {
                probe.wait("arrived", &probe.n_arrived, n, deadline).await?;
            }
        }
        self.current.lock().retain(|p| !Arc::ptr_eq(p, &probe));
        Ok((probe, n))
    }

    /// One slice of `path` (see the top of this file), added to `totals`.
    async fn slice(&self, path: Path, tag: &str, totals: &mut Totals) -> anyhow::Result<()> {
        let before = cpu_now(self.synapse_pid);
        let (probe, n) = self.drive(path, tag, PROBE_CAPACITY, Some(SLICE)).await?;
        let after = cpu_now(self.synapse_pid);
        totals.messages += n;
        totals.synapse_cpu += after.synapse - before.synapse;
        totals.bench_cpu += after.bench - before.bench;
        totals.bench_written += after.bench_written.saturating_sub(before.bench_written);
        totals.secs += probe.secs(&probe.accepted, n);
        if path == Path::Direct {
            let arrived = probe.secs(&probe.arrived, n);
            totals.secs_arrived += arrived;
            let lag = arrived.max(probe.secs(&probe.accepted, n)) - probe.secs(&probe.accepted, n);
            totals.max_lag_ms = totals.max_lag_ms.max(lag * 1000.0);
        }
        Ok(())
    }

    /// The paced run: ghost PUT, bridged message, inbound PUT in turn, `rate` messages/s in
    /// all, `PACED` of each.
    async fn paced(&self, rate: f64) -> anyhow::Result<Paced> {
        let ghost = Probe::new("p-ghost", PACED);
        let bridged = Probe::new("p-bridged", PACED);
        let inbound = Probe::new("p-inbound", PACED);
        self.current
            .lock()
            .extend([bridged.clone(), inbound.clone()]);
        let ctx = self.far_ctx().await?;
        let pace = Duration::from_secs_f64(1.0 / rate);
        let started = tokio::time::Instant::now();
        let mut durable = FuturesUnordered::new();
        for t in 0..3 * PACED {
            tokio::time::sleep_until(started + pace * t as u32).await;
            let i = t / 3;
            match t % 3 {
                0 => self.put(Path::Ghost, &ghost, i).await?,
                1 => durable.push(self.enqueue(&ctx, &bridged, i)?.durable()),
                _ => self.put(Path::Direct, &inbound, i).await?,
            }
            while futures::FutureExt::now_or_never(durable.next())
                .flatten()
                .is_some()
            {}
        }
        while durable.next().await.is_some() {}
        let deadline = tokio::time::Instant::now() + WAIT;
        bridged
            .wait("accepted", &bridged.n_accepted, PACED, deadline)
            .await?;
        inbound
            .wait("arrived", &inbound.n_arrived, PACED, deadline)
            .await?;
        self.current.lock().clear();

        // Per message: the whole time, and the part Synapse took (as the relay saw it).
        let in_synapse = |probe: &Probe| -> Vec<Option<u64>> {
            let txns = probe.txns.lock();
            let mut by_index = vec![None; PACED];
            for (txn, &i) in txns.iter() {
                by_index[i] = self.relay.synapse_us(txn);
            }
            by_index
        };
        let total_us = |probe: &Probe, i: usize| {
            let (a, b) = (
                probe.start[i].load(Ordering::Acquire),
                probe.accepted[i].load(Ordering::Acquire),
            );
            (b - a) / 1_000
        };
        let (ghost_synapse, bridged_synapse) = (in_synapse(&ghost), in_synapse(&bridged));
        let mut added = Vec::new();
        let mut ghost_added = Vec::new();
        for i in 0..PACED {
            if let Some(s) = bridged_synapse[i] {
                added.push(total_us(&bridged, i).saturating_sub(s));
            }
            if let Some(s) = ghost_synapse[i] {
                ghost_added.push(total_us(&ghost, i).saturating_sub(s));
            }
        }
        anyhow::ensure!(
            added.len() == PACED && ghost_added.len() == PACED,
            "the relay saw {} of {PACED} bridged and {} of {PACED} ghost sends",
            added.len(),
            ghost_added.len()
        );
        let sorted = |v: Vec<u64>| -> Vec<u32> {
            let mut v: Vec<u32> = v
                .into_iter()
                .map(|x| u32::try_from(x).unwrap_or(u32::MAX))
                .collect();
            v.sort_unstable();
            v
        };
        let synapse_only = |v: Vec<Option<u64>>| sorted(v.into_iter().flatten().collect());
        Ok(Paced {
            rate,
            added: sorted(added),
            ghost_added: sorted(ghost_added),
            bridged: bridged.spans(&bridged.start, &bridged.accepted, PACED),
            bridged_core: bridged.spans(&bridged.start, &bridged.called, PACED),
            bridged_synapse: synapse_only(bridged_synapse),
            ghost: ghost.spans(&ghost.start, &ghost.accepted, PACED),
            ghost_synapse: synapse_only(ghost_synapse),
            inbound: inbound.spans(&inbound.accepted, &inbound.arrived, PACED),
        })
    }
}

/// What the paced run measured, µs, each sorted.
#[derive(Debug)]
struct Paced {
    rate: f64,
    /// Bridged: enqueue → send returned, minus Synapse's time for that PUT.
    added: Vec<u32>,
    /// Ghost: PUT → answer, minus Synapse's time (the plain client's and the relay's own).
    ghost_added: Vec<u32>,
    bridged: Vec<u32>,
    /// Bridged: enqueue → the adapter's send called.
    bridged_core: Vec<u32>,
    bridged_synapse: Vec<u32>,
    ghost: Vec<u32>,
    ghost_synapse: Vec<u32>,
    /// Alice's PUT returned → the far side's send called.
    inbound: Vec<u32>,
}

async fn wait_ready(core: &Core) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    while !core.is_ready() {
        anyhow::ensure!(Instant::now() < deadline, "the bridge did not connect");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn rig(synapse: &Synapse) -> anyhow::Result<Rig> {
    let relay = Relay::start(relay_port(), synapse.port).await?;
    let base = format!("http://127.0.0.1:{}", relay_port());
    let alice = Client::new(&base, &login(&base, "alice", "alicepass").await?, None)?;
    let bridged_room = alice.create_room("bench-bridged", json!({})).await?;
    let plain_room = alice.create_room("bench-plain", json!({})).await?;
    let store_dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(SledStore::open(store_dir.path())?);
    let current: Current = Arc::new(Mutex::new(Vec::new()));
    let matrix = Timed {
        inner: matrix_adapter(store_dir.path(), &base)?,
        current: current.clone(),
    };
    let (far_tx, far_rx) = watch::channel(None);
    let far = Far {
        ctx: Arc::new(far_tx),
        current: current.clone(),
    };
    let core = Core::builder(store)
        .adapter("matrix", Arc::new(matrix))
        .adapter("far", Arc::new(far))
        .room(
            "bench",
            RoomSettings::default(),
            vec![
                Link::new("matrix", bridged_room.as_str()),
                Link::new("far", FAR_ROOM),
            ],
        )
        .start()
        .await?;
    wait_ready(&core).await?;
    let ghost = Client::new(&base, AS_TOKEN, Some(&ghost_of_sender(0)))?;
    Ok(Rig {
        core,
        far: far_rx,
        current,
        relay,
        alice,
        ghost,
        bridged_room,
        plain_room,
        synapse_pid: synapse_pid(synapse)?,
        _store: store_dir,
    })
}

/// The ghosts of the bridged run are registered, named and joined; the bot is in the room;
/// every path has run a little.
async fn warm_up(rig: &Rig) -> anyhow::Result<()> {
    let started = Instant::now();
    rig.drive(Path::Bridged, "warm-b", SENDERS * 3, None).await?;
    eprintln!(
        "warm-up: {SENDERS} ghosts registered, named and joined in {:.1?}",
        started.elapsed()
    );
    let members = rig.alice.joined_members(&rig.bridged_room).await?;
    anyhow::ensure!(
        members >= SENDERS + 2,
        "{members} members in the bridged room: the ghosts did not join"
    );
    for path in Path::ALL {
        let (probe, n) = rig
            .drive(path, &format!("warm-{}", path.name()), 20, None)
            .await?;
        eprintln!(
            "warm-up {:>8}: {n} messages, {:.0} messages/s",
            path.name(),
            n as f64 / probe.secs(&probe.accepted, n)
        );
    }
    Ok(())
}

fn ms(us: u32) -> f64 {
    f64::from(us) / 1000.0
}

/// "p50 x ms, p99 y ms" of sorted µs.
fn p50_p99(sorted: &[u32]) -> String {
    format!(
        "p50 {:.2} ms, p99 {:.2} ms",
        ms(percentile(sorted, 0.5)),
        ms(percentile(sorted, 0.99))
    )
}

async fn measure(synapse: &Synapse) -> anyhow::Result<serde_json::Map<String, Value>> {
    let rig = rig(synapse).await?;
    warm_up(&rig).await?;
    let mut totals: BTreeMap<Path, Totals> = BTreeMap::new();
    let mut ratios = Vec::new();
    eprintln!(
        "throughput: {CYCLES} cycles of a {SLICE:?} slice per path, the order rotating each cycle"
    );
    for cycle in 0..CYCLES {
        let mut this_cycle: BTreeMap<Path, Totals> = BTreeMap::new();
        for k in 0..Path::ALL.len() {
            let path = Path::ALL[(cycle + k) % Path::ALL.len()];
            let tag = format!("c{cycle}-{}", path.name());
            rig.slice(path, &tag, this_cycle.entry(path).or_default())
                .await?;
        }
        let line: Vec<String> = this_cycle
            .iter()
            .map(|(path, t)| format!("{} {:.1}", path.name(), t.mps()))
            .collect();
        let ratio = this_cycle[&Path::Bridged].mps() / this_cycle[&Path::Direct].mps();
        eprintln!(
            "cycle {}: messages/s {}; bridged/direct {ratio:.3}",
            cycle + 1,
            line.join(", ")
        );
        ratios.push(ratio);
        for (path, t) in this_cycle {
            let total = totals.entry(path).or_default();
            total.messages += t.messages;
            total.secs += t.secs;
            total.secs_arrived += t.secs_arrived;
            total.synapse_cpu += t.synapse_cpu;
            total.bench_cpu += t.bench_cpu;
            total.bench_written += t.bench_written;
            total.max_lag_ms = total.max_lag_ms.max(t.max_lag_ms);
        }
    }
    for (path, t) in &totals {
        eprintln!(
            "{:>8}: {:>5} messages in {:.1} s: {:>6.1} messages/s; per message: CPU of Synapse {:.2} ms, of the bench process {:.2} ms; the bench process's disk writes {:.1} kB{}",
            path.name(),
            t.messages,
            t.secs,
            t.mps(),
            t.cpu_ms_per_msg(t.synapse_cpu),
            t.cpu_ms_per_msg(t.bench_cpu),
            t.kb_per_msg(),
            if *path == Path::Direct {
                format!(
                    "; inbound: {:.1} messages/s reached the far side, the last of a slice at most {:.0} ms after its PUT returned",
                    t.arrived_mps(),
                    t.max_lag_ms
                )
            } else {
                String::new()
            }
        );
    }

    let slowest = totals.values().map(Totals::mps).fold(f64::INFINITY, f64::min);
    let rate = (slowest / 3.0).clamp(1.0, MAX_PACE_RATE);
    let paced = rig.paced(rate).await?;
    eprintln!(
        "paced, {rate:.1} messages/s in all, {PACED} per path (ghost, bridged, inbound in turn):"
    );
    eprintln!(
        "  bridged enqueue → accepted: {} (enqueue → send called {}; Synapse's part {})",
        p50_p99(&paced.bridged),
        p50_p99(&paced.bridged_core),
        p50_p99(&paced.bridged_synapse)
    );
    eprintln!(
        "  bridged minus Synapse's part, per message: {}",
        p50_p99(&paced.added)
    );
    eprintln!(
        "  ghost PUT → answer: {} (Synapse's part {}; the plain client's and the relay's own {})",
        p50_p99(&paced.ghost),
        p50_p99(&paced.ghost_synapse),
        p50_p99(&paced.ghost_added)
    );
    eprintln!(
        "  inbound, alice's PUT returned → far side: {}",
        p50_p99(&paced.inbound)
    );
    eprintln!(
        "the relay saw {} sends on {} connections (HTTP keep-alive)",
        rig.relay.sends.lock().len(),
        rig.relay.connections.load(Ordering::Relaxed)
    );
    let dead = rig.core.dead_letters()?.len();
    anyhow::ensure!(dead == 0, "{dead} deliveries failed (dead letters)");
    let Rig { core, .. } = rig;
    core.shutdown().await;

    let (direct, plain, ghost, bridged) = (
        &totals[&Path::Direct],
        &totals[&Path::Plain],
        &totals[&Path::Ghost],
        &totals[&Path::Bridged],
    );
    let ratio = bridged.mps() / direct.mps();
    let mut sorted_ratios = ratios.clone();
    sorted_ratios.sort_by(f64::total_cmp);
    let median_ratio = sorted_ratios[sorted_ratios.len() / 2];
    let p = |v: &[u32], q: f64| i64::from(percentile(v, q));
    eprintln!(
        "send path: bridged {:.1} / direct {:.1} messages/s = {ratio:.3} (goal >= 0.90; median of the cycles {median_ratio:.3}); against a room without the bridge ({:.1}/s) {:.3}, against the ghost's own PUTs ({:.1}/s) {:.3}",
        bridged.mps(),
        direct.mps(),
        plain.mps(),
        bridged.mps() / plain.mps(),
        ghost.mps(),
        bridged.mps() / ghost.mps()
    );
    eprintln!(
        "added latency on the send path (paced, per message): p50 {} us, p99 {} us (goal p99 <= 5000 us)",
        p(&paced.added, 0.5),
        p(&paced.added, 0.99)
    );
    let round3 = |x: f64| (x * 1000.0).round() / 1000.0;
    let round1 = |x: f64| (x * 10.0).round() / 10.0;
    let mut out = serde_json::Map::new();
    let mut put = |k: &str, v: Value| {
        out.insert(k.to_owned(), v);
    };
    put("bridged_mps", json!(round1(bridged.mps())));
    put("direct_mps", json!(round1(direct.mps())));
    put("rate_ratio", json!(round3(ratio)));
    put("rate_ratio_cycle_median", json!(round3(median_ratio)));
    put("direct_plain_mps", json!(round1(plain.mps())));
    put("rate_ratio_vs_plain", json!(round3(bridged.mps() / plain.mps())));
    put("direct_ghost_mps", json!(round1(ghost.mps())));
    put("rate_ratio_vs_ghost", json!(round3(bridged.mps() / ghost.mps())));
    put("inbound_mps", json!(round1(direct.arrived_mps())));
    put("inbound_max_lag_ms", json!(round1(direct.max_lag_ms)));
    put("p50_us", json!(p(&paced.added, 0.5)));
    put("p99_us", json!(p(&paced.added, 0.99)));
    put(
        "latency_note",
        json!("p50_us/p99_us: added latency on the send path, paced, per message: far-side enqueue → the adapter's send returned, minus Synapse's time for that PUT"),
    );
    put("paced_mps", json!(round1(paced.rate)));
    put(
        "p99_us_by_subtraction",
        json!(p(&paced.bridged, 0.99) - p(&paced.ghost, 0.99)),
    );
    put("bridged_p50_us", json!(p(&paced.bridged, 0.5)));
    put("bridged_p99_us", json!(p(&paced.bridged, 0.99)));
    put("bridged_core_p99_us", json!(p(&paced.bridged_core, 0.99)));
    put("ghost_p50_us", json!(p(&paced.ghost, 0.5)));
    put("ghost_p99_us", json!(p(&paced.ghost, 0.99)));
    put("ghost_added_p99_us", json!(p(&paced.ghost_added, 0.99)));
    put("inbound_p50_us", json!(p(&paced.inbound, 0.5)));
    put("inbound_p99_us", json!(p(&paced.inbound, 0.99)));
    for (path, t) in &totals {
        put(
            &format!("synapse_cpu_ms_per_msg_{}", path.name()),
            json!(round3(t.cpu_ms_per_msg(t.synapse_cpu))),
        );
        put(
            &format!("bench_cpu_ms_per_msg_{}", path.name()),
            json!(round3(t.cpu_ms_per_msg(t.bench_cpu))),
        );
        put(
            &format!("bench_write_kb_per_msg_{}", path.name()),
            json!(round1(t.kb_per_msg())),
        );
    }
    Ok(out)
}

/// The `bridge` binary, next to this one (scripts/bench.sh builds both).
fn bridge_binary() -> anyhow::Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .ok_or_else(|| anyhow::anyhow!("no directory"))?
        .join("bridge");
    anyhow::ensure!(
        bin.exists(),
        "{} is missing: build it (`cargo build --release --workspace --bin bench --bin bridge`; scripts/bench.sh does)",
        bin.display()
    );
    Ok(bin)
}

/// A `bridge run` child process, killed when dropped.
struct Bridge {
    child: tokio::process::Child,
    pid: u32,
}

impl Bridge {
    fn start(config: &std::path::Path, log: &std::path::Path) -> anyhow::Result<Self> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        // A profiler to run the bridge under, e.g. "valgrind --tool=massif" (development runs;
        // the RSS figures are then the profiler's).
        let wrap = std::env::var(WRAP_ENV).unwrap_or_default();
        let mut words = wrap.split_whitespace();
        let mut command = match words.next() {
            Some(program) => {
                let mut command = tokio::process::Command::new(program);
                command.args(words).arg(bridge_binary()?);
                command
            }
            None => tokio::process::Command::new(bridge_binary()?),
        };
        let child = command
            .arg("run")
            .arg("-c")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow::anyhow!("the bridge exited at once"))?;
        Ok(Self { child, pid })
    }

    /// SIGTERM, then waits for the exit.
    async fn stop(mut self) -> anyhow::Result<()> {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status();
        match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(status) => {
                status?;
            }
            Err(_) => {
                self.child.start_kill()?;
                self.child.wait().await?;
            }
        }
        Ok(())
    }
}

/// The Prometheus metrics of the bridge whose HTTP listener is on `port`, as (name with
/// labels → value).
pub(crate) async fn metrics(port: u16) -> anyhow::Result<Vec<(String, f64)>> {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await?
        .error_for_status()?
        .text()
        .await?;
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect())
}

/// The sum of the series of `name` whose labels contain every one of `labels`.
pub(crate) fn metric_sum(all: &[(String, f64)], name: &str, labels: &[&str]) -> f64 {
    all.iter()
        .filter(|(series, _)| {
            series
                .strip_prefix(name)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('{'))
                && labels.iter().all(|l| series.contains(l))
        })
        .map(|(_, v)| v)
        .sum()
}

async fn wait_connected(bridge: &mut Bridge) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = bridge.child.try_wait()? {
            anyhow::bail!("the bridge exited: {status}");
        }
        if let Ok(all) = metrics(metrics_port()).await {
            let up = |a: &str| {
                metric_sum(
                    &all,
                    "bridge_adapter_connected",
                    &[&format!("adapter=\"{a}\"")],
                ) >= 1.0
            };
            if up("matrix") && up("chat") {
                return Ok(());
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "the bridge did not connect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The RSS phase (see the top of this file).
async fn rss_phase(synapse: &Synapse) -> anyhow::Result<serde_json::Map<String, Value>> {
    let ghosts: usize = match std::env::var(RSS_GHOSTS_ENV) {
        Ok(v) => v.parse()?,
        Err(_) => RSS_GHOSTS,
    };
    // As many messages, from this many distinct users (development runs: how much of the RSS
    // is the ghosts, how much the messages).
    let users: usize = match std::env::var(RSS_USERS_ENV) {
        Ok(v) => v.parse::<usize>()?.clamp(1, ghosts),
        Err(_) => ghosts,
    };
    let metrics_at = metrics_port();
    anyhow::ensure!(!port_open(metrics_at), "127.0.0.1:{metrics_at} is taken");
    let base = synapse.url();
    let alice = Client::new(&base, &login(&base, "alice", "alicepass").await?, None)?;
    let mut rooms = Vec::new();
    for r in 0..RSS_ROOMS {
        rooms.push(alice.create_room(&format!("rss-{r}"), json!({})).await?);
    }
    let linechat = bridge_example_linechat::server::Server::bind("127.0.0.1:0").await?;
    let dir = tempfile::tempdir()?;
    let registration = registration_file(dir.path())?;
    let mut config = format!(
        "[bridge]\ndata_dir = \"{data}\"\nlog_level = \"warn\"\nmetrics_addr = \"127.0.0.1:{metrics_at}\"\n\n\
         [[adapter]]\nid = \"matrix\"\ntype = \"matrix\"\nmode = \"appservice\"\n\
         homeserver = \"{base}\"\nserver_name = \"localhost\"\nregistration = \"{reg}\"\n\
         listen = \"127.0.0.1:{as_port}\"\n\n\
         [[adapter]]\nid = \"chat\"\ntype = \"linechat\"\nconnect = \"{chat}\"\n",
        data = dir.path().join("data").display(),
        reg = registration.display(),
        as_port = as_port(),
        chat = linechat.addr(),
    );
    for (r, room) in rooms.iter().enumerate() {
        config.push_str(&format!(
            "\n[[room]]\nid = \"r{r}\"\n[[room.link]]\nadapter = \"matrix\"\nremote = \"{room}\"\n\
             [[room.link]]\nadapter = \"chat\"\nremote = \"lc{r}\"\n"
        ));
    }
    let config_path = dir.path().join("bridge.toml");
    std::fs::write(&config_path, config)?;
    let log = dir.path().join("bridge.log");

    let mut bridge = Bridge::start(&config_path, &log)?;
    wait_connected(&mut bridge).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline = bridge_tests::status_kb(bridge.pid, "VmRSS:");
    eprintln!(
        "rss: the bridge binary in {RSS_ROOMS} Matrix rooms, no ghosts yet: VmRSS {baseline} kB"
    );
    let started = Instant::now();
    let cpu_before = (bridge_tests::cpu_seconds(bridge.pid), bridge_tests::cpu_seconds(synapse_pid(synapse)?));
    let deadline = Instant::now() + RSS_WAIT;
    let mut last_report = Instant::now();
    let mut posted = 0;
    loop {
        if let Some(status) = bridge.child.try_wait()? {
            anyhow::bail!("the bridge exited: {status}; its log: {}", log.display());
        }
        let all = metrics(metrics_port()).await.unwrap_or_default();
        let out = metric_sum(
            &all,
            "bridge_events_out_total",
            &["adapter=\"matrix\"", "kind=\"message\""],
        ) as usize;
        let dead = metric_sum(&all, "bridge_dead_letters_total", &[]);
        anyhow::ensure!(dead == 0.0, "{dead} dead letters; see {}", log.display());
        if out >= ghosts {
            break;
        }
        // A steady flow: new users keep coming as the earlier ones get through.
        while posted < ghosts && posted < out + RSS_IN_FLIGHT {
            linechat.post(
                &format!("lc{}", posted % RSS_ROOMS),
                &format!("u{}", posted % users),
                None,
                &format!("hello from u{posted}"),
            );
            posted += 1;
        }
        if last_report.elapsed() > Duration::from_secs(30) {
            last_report = Instant::now();
            eprintln!(
                "rss: {out} of {ghosts} ghosts have spoken after {:.0?} ({:.1}/s); VmRSS {} kB",
                started.elapsed(),
                out as f64 / started.elapsed().as_secs_f64(),
                bridge_tests::status_kb(bridge.pid, "VmRSS:")
            );
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {out} of {ghosts} messages bridged within {RSS_WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let took = started.elapsed();
    let cpu_after = (bridge_tests::cpu_seconds(bridge.pid), bridge_tests::cpu_seconds(synapse_pid(synapse)?));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = bridge_tests::status_kb(bridge.pid, "VmRSS:");
    let peak = bridge_tests::status_kb(bridge.pid, "VmHWM:");
    let mut members = 0;
    for room in &rooms {
        members += alice.joined_members(room).await?;
    }
    eprintln!(
        "rss: {ghosts} ghosts registered, joined and spoke in {RSS_ROOMS} rooms in {took:.0?} ({:.1} ghosts/s; CPU: bridge {:.0} s, Synapse {:.0} s); {members} members in the rooms; VmRSS {rss} kB (peak {peak} kB), {:.2} kB per ghost above the baseline",
        ghosts as f64 / took.as_secs_f64(),
        cpu_after.0 - cpu_before.0,
        cpu_after.1 - cpu_before.1,
        rss.saturating_sub(baseline) as f64 / ghosts as f64
    );
    bridge.stop().await?;

    // Restarted: the ghosts come from the store.
    let mut bridge = Bridge::start(&config_path, &log)?;
    wait_connected(&mut bridge).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let restarted = bridge_tests::status_kb(bridge.pid, "VmRSS:");
    let restarted_peak = bridge_tests::status_kb(bridge.pid, "VmHWM:");
    eprintln!(
        "rss: restarted with {ghosts} ghosts in the store: VmRSS {restarted} kB (peak {restarted_peak} kB)"
    );
    bridge.stop().await?;

    let mut out = serde_json::Map::new();
    let key = match (ghosts, users) {
        (RSS_GHOSTS, RSS_GHOSTS) => "rss_kb_10000_ghosts".to_owned(),
        (g, u) if g == u => format!("rss_kb_{g}_ghosts"),
        (g, u) => format!("rss_kb_{u}_ghosts_{g}_messages"),
    };
    out.insert(key, json!(rss));
    out.insert("rss_kb_peak".into(), json!(peak));
    out.insert("rss_kb_no_ghosts".into(), json!(baseline));
    out.insert("rss_kb_restarted".into(), json!(restarted));
    out.insert(
        "rss_seconds_to_make_ghosts".into(),
        json!((took.as_secs_f64() * 10.0).round() / 10.0),
    );
    Ok(out)
}

pub async fn run() -> anyhow::Result<String> {
    // The adapter's client installs the rustls provider that reqwest needs.
    let _ = bridge_matrix::homeserver::Homeserver::new("http://127.0.0.1", "-", false);
    anyhow::ensure!(
        std::env::var_os("BRIDGE_TEST_SYNAPSE_PYTHON").is_some(),
        "BRIDGE_TEST_SYNAPSE_PYTHON is not set: run this through scripts/bench.sh matrix, which installs Synapse"
    );
    for port in [synapse_port(), relay_port(), as_port(), metrics_port()] {
        anyhow::ensure!(
            !port_open(port),
            "something already listens on 127.0.0.1:{port}; the bench needs it"
        );
    }
    eprintln!(
        "matrix: starting Synapse on 127.0.0.1:{} (appservice on :{})",
        synapse_port(),
        as_port()
    );
    let started = Instant::now();
    let synapse = tokio::task::block_in_place(|| Synapse::start(synapse_port(), as_port()))?;
    eprintln!(
        "Synapse up in {:.1?}; data in {}",
        started.elapsed(),
        synapse.dir().display()
    );
    // Interrupted, the bench still stops its Synapse and bridge (they are dropped).
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let result = tokio::select! {
        result = phases(&synapse) => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        _ = terminate.recv() => Err(anyhow::anyhow!("terminated")),
    };
    drop(synapse);
    result
}

async fn phases(synapse: &Synapse) -> anyhow::Result<String> {
    let mut json = serde_json::Map::new();
    json.insert("bench".into(), json!("matrix"));
    let only = std::env::var(ONLY_ENV).unwrap_or_default();
    if only != "rss" {
        json.extend(measure(synapse).await?);
    }
    if only != "send" {
        json.extend(rss_phase(synapse).await?);
    }
    Ok(Value::Object(json).to_string())
}
