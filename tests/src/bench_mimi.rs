// The `mimi` benchmark (included by src/bin/bench.rs).
//
// A hub bridge (`bridge_core::Core` over sled with the MIMI adapter as hub of one room) and
// FOLLOWERS follower bridges (each its own `Core` over sled with the MIMI adapter), all in this
// process on loopback with mutual TLS (rcgen certificates). The room's MLS group holds the
// hub's bot and sender (alice) and MEMBERS puppets of every follower. Every message alice says
// on the hub's far side goes the deployed path: the hub's core stores it and hands it to the
// MIMI adapter, which encrypts it as alice's puppet, queues a notify body for every follower in
// its durable per-follower queues and flushes; one sender per follower POSTs `/notify` (TLS-PL
// body, HTTPS, mutual TLS); each follower decrypts it with one of its puppets
// (`decrypt_once`), hands it to its core and answers 201 once the core has it on disk; the
// follower's core then delivers it to its far side, where the bench notes the time.
//
// The group is built before the cores start, through the same `MlsHost`s (over the adapters'
// namespaces of the same stores): the followers' puppets make KeyPackages, the hub's bot adds
// all of them in one commit, each follower joins its puppets from the Welcome and the full
// ratchet tree. Building it through 1,000 first messages would take 1,000 commits, each
// processed by every puppet already in (O(n²) group loads): setup, not the path measured.
//
// Phases, each in its own child process:
// - `fanout`: the setup above; `mls_us_per_msg` (alice's puppet encrypts on the hub's host, a
//   follower's host decrypts with `decrypt_once`, MLS_MESSAGES messages, store writes
//   included; `mls_cpu_us_per_msg`: the process's CPU over that loop, every thread); then the
//   throughput run (`fanout_cpu_us_per_msg`: the process's CPU, all eleven bridges, over it per
//   message) (MESSAGES messages submitted at once; `fanout_mps` =
//   messages / time until every follower delivered the last) and a paced run (a quarter of that
//   rate) for the latency submit → every follower delivered.
// - `rss`: the hub bridge alone with RSS_ROOMS hosted rooms; VmRSS, then RSS_CLIENTS far users
//   join (each becomes a puppet: its client, KeyPackages, the bot's commit adding it, its own
//   view of the group), VmRSS again; the difference per client.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_trait::async_trait;
use bridge_core::store::keys::{Key, tag};
use bridge_core::testkit::inbound;
use bridge_core::{
    Adapter, AdapterContext, AdapterError, Capabilities, Core, Delivered, DeliverySettings,
    EventKind, Link, RemoteEventId, RoomSettings, SledStore, Store,
};
use bridge_mimi::MimiAdapter;
use bridge_mimi::adapter::BOT_USER;
use bridge_mimi::codepoints::ROLE_ORDINARY_USER;
use bridge_mimi::mls::kv::StoreKv;
use bridge_mimi::mls::uri::RoomUri;
use bridge_mimi::mls::{MlsHost, Processed, RoomProfile};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use parking_lot::Mutex;
use tokio::sync::watch;

const HUB: &str = "hub.example";
const ROOM: &str = "mimi://hub.example/r/bench";
const FAR_ROOM: &str = "far-room";
/// Set in the child processes `bench mimi` spawns: the phase to run alone.
const PHASE_ENV: &str = "BRIDGE_BENCH_MIMI_PHASE";
/// The longest wait for anything.
const PATIENCE: Duration = Duration::from_secs(600);

/// Sizes, from the environment for small trial runs (`BENCH_MIMI_FOLLOWERS=2
/// BENCH_MIMI_MEMBERS=5 BENCH_MIMI_MESSAGES=100 …`).
#[derive(Debug, Clone, Copy)]
struct Config {
    followers: usize,
    members: usize,
    messages: usize,
    mls_messages: usize,
    rss_clients: usize,
    rss_rooms: usize,
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

impl Config {
    fn from_env() -> Self {
        Self {
            followers: env_usize("BENCH_MIMI_FOLLOWERS", 10).max(1),
            members: env_usize("BENCH_MIMI_MEMBERS", 100).max(1),
            messages: env_usize("BENCH_MIMI_MESSAGES", 600).max(1),
            // Below openmls' maximum forward distance (1,000 generations): the followers that
            // did not decrypt these must still skip past them.
            mls_messages: env_usize("BENCH_MIMI_MLS_MESSAGES", 300).clamp(1, 900),
            rss_clients: env_usize("BENCH_MIMI_RSS_CLIENTS", 1_000).max(1),
            rss_rooms: env_usize("BENCH_MIMI_RSS_ROOMS", 100).max(1),
        }
    }
}

/// A far side: notes when each numbered message arrived, and lets the bench submit.
#[derive(Debug)]
struct Sink {
    ctx: watch::Sender<Option<AdapterContext>>,
    arrived: Mutex<Vec<Option<Instant>>>,
    received: AtomicU64,
}

fn sink(messages: usize) -> Arc<Sink> {
    Arc::new(Sink {
        ctx: watch::Sender::new(None),
        arrived: Mutex::new(vec![None; messages]),
        received: AtomicU64::new(0),
    })
}

#[derive(Debug, Clone)]
struct SinkAdapter(Arc<Sink>);

#[async_trait]
impl Adapter for SinkAdapter {
    fn capabilities(&self) -> Capabilities {
        Capabilities::all()
    }

    async fn run(&self, ctx: AdapterContext) -> Result<(), AdapterError> {
        ctx.set_connected(true);
        let shutdown = ctx.shutdown().clone();
        self.0.ctx.send_replace(Some(ctx));
        shutdown.cancelled().await;
        Ok(())
    }

    async fn send(&self, event: bridge_core::OutboundEvent) -> Result<Delivered, AdapterError> {
        if let EventKind::Message { content, .. } = &event.kind
            && let Ok(i) = content.text.body().parse::<usize>()
        {
            let now = Instant::now();
            let mut arrived = self.0.arrived.lock();
            if let Some(slot) = arrived.get_mut(i)
                && slot.is_none()
            {
                *slot = Some(now);
                self.0.received.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(Delivered {
            native_id: Some(RemoteEventId::new(format!("sink:{}", event.id))),
            puppet: None,
        })
    }
}

async fn context_of(sink: &Sink) -> anyhow::Result<AdapterContext> {
    sink.ctx
        .subscribe()
        .wait_for(Option::is_some)
        .await?
        .clone()
        .context("far adapter not running")
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The MIMI adapter's settings for `domain` on `port`, with `peers` on loopback.
fn settings(
    dir: &Path,
    domain: &str,
    port: u16,
    peers: &[(String, u16)],
) -> anyhow::Result<bridge_mimi::settings::Settings> {
    let mut text = format!(
        "domain = \"{domain}\"\nlisten = \"127.0.0.1:{port}\"\norigin = \"https://{domain}:{port}\"\n\
         certificate = \"{dir}/{domain}.crt\"\nkey = \"{dir}/{domain}.key\"\nca = \"{dir}/ca.pem\"\n\
         timeout_secs = 30\n{cache}[peers]\n",
        dir = dir.display(),
        cache = std::env::var("BENCH_MIMI_CACHE_GROUPS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .map(|n| format!("mls_cache_groups = {n}\n"))
            .unwrap_or_default()
    );
    for (peer, port) in peers {
        text.push_str(&format!(
            "\"{peer}\" = {{ url = \"https://{peer}:{port}\", address = \"127.0.0.1:{port}\" }}\n"
        ));
    }
    let table: toml::Table = text.parse()?;
    bridge_mimi::settings::parse(&table).map_err(|issues| {
        let list: Vec<String> = issues
            .iter()
            .map(|i| format!("{}: {}", i.path, i.message))
            .collect();
        anyhow::anyhow!("bench settings: {}", list.join("; "))
    })
}

/// A bridge: a core over `store` with the MIMI adapter and a far side, one room per
/// `(far room, MIMI room)`.
async fn start(
    store: Arc<dyn Store>,
    settings: bridge_mimi::settings::Settings,
    far: Arc<Sink>,
    rooms: &[(String, String)],
) -> anyhow::Result<Core> {
    let mut builder = Core::builder(store)
        .settings(DeliverySettings {
            queue_capacity: 1024,
            ..DeliverySettings::default()
        })
        .adapter("far", Arc::new(SinkAdapter(far)))
        .adapter(
            "mimi",
            Arc::new(MimiAdapter::new("mimi".into(), settings)),
        );
    for (i, (far_room, mimi_room)) in rooms.iter().enumerate() {
        builder = builder.room(
            format!("room{i}"),
            RoomSettings::default(),
            vec![
                Link::new("far", far_room.as_str()),
                Link::new("mimi", mimi_room.as_str()),
            ],
        );
    }
    Ok(builder.start().await?)
}

/// The MLS host the MIMI adapter `mimi` of a core over `store` uses (its namespace of the
/// store), for setting up and checking groups while that core is not running.
fn mls_host(store: &Arc<dyn Store>, domain: &str) -> MlsHost {
    let namespace = Key::new(tag::ADAPTER).str("mimi").build();
    MlsHost::open(domain, Arc::new(StoreKv::new(store.clone(), &namespace)))
}

fn sled(dir: &Path) -> anyhow::Result<Arc<dyn Store>> {
    Ok(Arc::new(SledStore::open(dir)?))
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Waits until every sink received `want` messages; prints progress now and then (on stderr,
/// which the parent passes through while the phase runs; stdout is printed when it ends).
async fn all_received(sinks: &[Arc<Sink>], want: u64, what: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut report = started + Duration::from_secs(10);
    loop {
        let least = sinks
            .iter()
            .map(|s| s.received.load(Ordering::Relaxed))
            .min()
            .unwrap_or(want);
        if least >= want {
            return Ok(());
        }
        let now = Instant::now();
        anyhow::ensure!(
            now - started < PATIENCE,
            "{what}: the slowest follower has {least} of {want} messages after {PATIENCE:?}"
        );
        if now >= report {
            eprintln!(
                "  {what}: slowest follower has {least} of {want} after {:.0?}",
                now - started
            );
            report = now + Duration::from_secs(10);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn message(i: usize) -> bridge_core::InboundEvent {
    inbound(FAR_ROOM)
        .id(&format!("m{i}"))
        .from("alice")
        .text(&i.to_string())
}

/// The fan-out phase (see the top of the file).
async fn fanout_phase(cfg: Config) -> anyhow::Result<serde_json::Value> {
    let dir = tempfile::tempdir()?;
    let followers: Vec<String> = (0..cfg.followers).map(|f| format!("f{f}.example")).collect();
    let mut domains: Vec<&str> = vec![HUB];
    domains.extend(followers.iter().map(String::as_str));
    bridge_mimi::testkit::write_pki(dir.path(), &domains)
        .map_err(|e| anyhow::anyhow!("certificates: {e}"))?;
    let room = RoomUri::parse(ROOM).map_err(|e| anyhow::anyhow!("{e}"))?;

    // The group: the hub's bot creates it, alice (the hub's sender) and every follower's
    // puppets are added in one commit, the followers join from the Welcome.
    let setup = Instant::now();
    let hub_store = sled(&dir.path().join("hub"))?;
    let hub = mls_host(&hub_store, HUB);
    let bot = hub.puppet(BOT_USER);
    hub.create_room(&room, &bot, RoomProfile::Mimi)?;
    let alice = hub.puppet("alice");
    hub.ensure_client(&alice)?;
    let mut key_packages = vec![hub.take_key_package(&alice)?.context("alice's KeyPackage")?];
    let mut follower_stores = Vec::new();
    let mut follower_hosts = Vec::new();
    for domain in &followers {
        let store = sled(&dir.path().join(domain))?;
        let host = mls_host(&store, domain);
        for m in 0..cfg.members {
            let user = host.puppet(&format!("member{m}"));
            host.ensure_client(&user)?;
            key_packages.push(
                host.take_key_package(&user)?
                    .with_context(|| format!("{user}'s KeyPackage"))?,
            );
        }
        follower_stores.push(store);
        follower_hosts.push(host);
    }
    println!(
        "setup: {} KeyPackages made in {:.1?}",
        key_packages.len(),
        setup.elapsed()
    );
    let t = Instant::now();
    let output = hub.add_clients(&room, &bot, key_packages, ROLE_ORDINARY_USER)?;
    let welcome = output.welcome.context("no Welcome")?;
    println!(
        "setup: one commit adds them (epoch {}, {} participants) in {:.1?}; Welcome {} kB, ratchet tree {} kB",
        output.epoch,
        output.participants.len(),
        t.elapsed(),
        welcome.len() / 1024,
        output.ratchet_tree.len() / 1024
    );
    let t = Instant::now();
    for (domain, host) in followers.iter().zip(&follower_hosts) {
        match host.join(&welcome, Some(&output.ratchet_tree))? {
            Processed::Joined { users, .. } => {
                anyhow::ensure!(users.len() == cfg.members, "{domain}: {users:?} joined");
            }
            other => anyhow::bail!("{domain}: join gave {other:?}"),
        }
    }
    let members = hub.members(&room)?.len();
    println!(
        "setup: {} followers' puppets joined from the Welcome in {:.1?}; the group has {members} members",
        cfg.followers * cfg.members,
        t.elapsed()
    );

    // MLS cost per message in this group: encrypt on the hub, decrypt at a follower.
    let plaintext: Vec<u8> = (0..200u32).map(|i| (i * 31 % 251) as u8).collect();
    let (mut encrypt, mut decrypt) = (Duration::ZERO, Duration::ZERO);
    let cpu_before = bridge_tests::cpu_seconds(std::process::id());
    for i in 0..cfg.mls_messages {
        let t = Instant::now();
        let ciphertext = hub.encrypt(&room, &alice, &plaintext)?;
        let t2 = Instant::now();
        let got = follower_hosts[0].decrypt_once(&room, &ciphertext, &format!("bench/{i}"))?;
        decrypt += t2.elapsed();
        encrypt += t2 - t;
        anyhow::ensure!(
            matches!(&got, Processed::Application(d) if d.plaintext == plaintext),
            "decrypted {got:?}"
        );
    }
    // The process's CPU over the loop, every thread (the store's included), per message.
    let mls_cpu_us =
        (bridge_tests::cpu_seconds(std::process::id()) - cpu_before) * 1e6 / cfg.mls_messages as f64;
    let per = |d: Duration| d.as_secs_f64() * 1e6 / cfg.mls_messages as f64;
    let (encrypt_us, decrypt_us) = (per(encrypt), per(decrypt));
    println!(
        "mls: {} messages of 200 bytes in the {members}-member group: encrypt {encrypt_us:.0} us + decrypt {decrypt_us:.0} us = {:.0} us per message; CPU {mls_cpu_us:.0} us per message",
        cfg.mls_messages,
        encrypt_us + decrypt_us
    );
    hub_store.flush()?;
    for store in &follower_stores {
        store.flush()?;
    }
    drop(hub);
    drop(follower_hosts);

    // The bridges: followers first (the hub's first notify finds them listening).
    let total = 1 + cfg.messages + cfg.messages;
    let hub_port = free_port()?;
    let mut ports = Vec::new();
    let mut cores = Vec::new();
    let mut sinks = Vec::new();
    let rooms = vec![(FAR_ROOM.to_owned(), ROOM.to_owned())];
    for (domain, store) in followers.iter().zip(follower_stores) {
        let port = free_port()?;
        ports.push((domain.clone(), port));
        let settings = settings(dir.path(), domain, port, &[(HUB.to_owned(), hub_port)])?;
        let far = sink(total);
        cores.push(start(store, settings, far.clone(), &rooms).await?);
        sinks.push(far);
    }
    let hub_far = sink(total);
    let hub_core = start(
        hub_store,
        settings(dir.path(), HUB, hub_port, &ports)?,
        hub_far.clone(),
        &rooms,
    )
    .await?;
    let ctx = context_of(&hub_far).await?;
    for s in &sinks {
        context_of(s).await?;
    }
    println!("setup done in {:.1?}", setup.elapsed());

    // One message first: connections and directories.
    let submitted: Mutex<Vec<Option<Instant>>> = Mutex::new(vec![None; total]);
    ctx.enqueue(message(0))?.durable().await;
    all_received(&sinks, 1, "warm-up").await?;

    // Throughput: every message submitted at once (pipelined, durability awaited
    // concurrently); done when every follower has the last.
    let started = Instant::now();
    let cpu_before = bridge_tests::cpu_seconds(std::process::id());
    let mut pending = FuturesUnordered::new();
    for i in 1..=cfg.messages {
        pending.push(ctx.enqueue(message(i))?.durable());
    }
    while pending.next().await.is_some() {}
    let accepted = started.elapsed();
    all_received(&sinks, 1 + cfg.messages as u64, "throughput").await?;
    let took = started.elapsed();
    // Every bridge's CPU (one process) per message fanned out: steadier than the rate on a VM
    // whose neighbours take time.
    let fanout_cpu_us =
        (bridge_tests::cpu_seconds(std::process::id()) - cpu_before) * 1e6 / cfg.messages as f64;
    let fanout_mps = cfg.messages as f64 / took.as_secs_f64();
    println!(
        "fan-out: {} messages to {} followers ({} notifies) in {took:.2?} -> {fanout_mps:.0} messages/s (the hub's core had them all on disk after {accepted:.2?})",
        cfg.messages,
        cfg.followers,
        cfg.messages * cfg.followers
    );

    // Latency at a quarter of that rate.
    let paced_mps = (fanout_mps / 4.0).floor().clamp(1.0, 500.0);
    let paced = ((paced_mps * 20.0) as usize).clamp(20, cfg.messages);
    let first = 1 + cfg.messages;
    let started = Instant::now();
    let mut pending = FuturesUnordered::new();
    for k in 0..paced {
        let due = started + Duration::from_secs_f64(k as f64 / paced_mps);
        tokio::time::sleep_until(due.into()).await;
        submitted.lock()[first + k] = Some(Instant::now());
        pending.push(ctx.enqueue(message(first + k))?.durable());
        while let Some(Some(_)) = futures::FutureExt::now_or_never(pending.next()) {}
    }
    while pending.next().await.is_some() {}
    all_received(&sinks, (first + paced) as u64, "paced").await?;
    let submitted = submitted.lock().clone();
    let mut latencies: Vec<u64> = Vec::with_capacity(paced);
    for (i, sent) in submitted.iter().enumerate().skip(first).take(paced) {
        let Some(sent) = sent else { continue };
        let last = sinks
            .iter()
            .filter_map(|s| s.arrived.lock()[i])
            .max()
            .context("a paced message missing")?;
        latencies.push(last.saturating_duration_since(*sent).as_micros() as u64);
    }
    latencies.sort_unstable();
    let (p50, p99) = (percentile(&latencies, 0.50), percentile(&latencies, 0.99));
    println!(
        "paced: {paced} messages at {paced_mps} messages/s: submit on the hub -> every follower delivered: p50 {p50} us, p99 {p99} us"
    );
    hub_core.shutdown().await;
    for core in cores {
        core.shutdown().await;
    }
    let rss = bridge_tests::self_status_kb("VmHWM:");
    println!("fanout phase peak RSS: {rss} kB (all {} bridges)", 1 + cfg.followers);
    Ok(serde_json::json!({
        "group_members": members,
        "fanout_mps": fanout_mps.round(),
        "paced_mps": paced_mps,
        "paced_messages": paced,
        "p50_us": p50,
        "p99_us": p99,
        "fanout_cpu_us_per_msg": fanout_cpu_us.round(),
        "mls_us_per_msg": (encrypt_us + decrypt_us).round(),
        "mls_cpu_us_per_msg": mls_cpu_us.round(),
        "mls_encrypt_us": encrypt_us.round(),
        "mls_decrypt_us": decrypt_us.round(),
        "peak_rss_kb_fanout_phase": rss,
    }))
}

/// The RSS phase (see the top of the file).
async fn rss_phase(cfg: Config) -> anyhow::Result<serde_json::Value> {
    let dir = tempfile::tempdir()?;
    bridge_mimi::testkit::write_pki(dir.path(), &[HUB])
        .map_err(|e| anyhow::anyhow!("certificates: {e}"))?;
    let store = sled(&dir.path().join("hub"))?;
    let rooms: Vec<(String, String)> = (0..cfg.rss_rooms)
        .map(|r| (format!("far{r}"), format!("mimi://{HUB}/r/room{r}")))
        .collect();
    let far = sink(0);
    let core = start(
        store.clone(),
        settings(dir.path(), HUB, free_port()?, &[])?,
        far.clone(),
        &rooms,
    )
    .await?;
    let ctx = context_of(&far).await?;
    // The adapter creates the rooms' groups as it starts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let baseline = bridge_tests::self_status_kb("VmRSS:");
    println!(
        "rss: hub bridge with {} hosted rooms (the bot's client in each), no puppets: VmRSS {baseline} kB",
        cfg.rss_rooms
    );
    let started = Instant::now();
    let mut pending = FuturesUnordered::new();
    for k in 0..cfg.rss_clients {
        let event = inbound(&format!("far{}", k % cfg.rss_rooms))
            .id(&format!("join{k}"))
            .from(&format!("user{k}"))
            .join();
        pending.push(ctx.enqueue(event)?.durable());
    }
    while pending.next().await.is_some() {}
    let mut report = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: u64 = core
            .status()
            .iter()
            .flat_map(|room| room.links.iter().map(|(_, n)| *n))
            .sum();
        if waiting == 0 {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < PATIENCE,
            "{waiting} joins still waiting"
        );
        if Instant::now() >= report {
            eprintln!("  rss: {waiting} joins still to do after {:.0?}", started.elapsed());
            report = Instant::now() + Duration::from_secs(10);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = bridge_tests::self_status_kb("VmRSS:");
    let peak = bridge_tests::self_status_kb("VmHWM:");
    core.shutdown().await;
    // Every join made a puppet that is a member of its room.
    let host = mls_host(&store, HUB);
    let mut hosted = 0;
    for (_, room) in &rooms {
        let room = RoomUri::parse(room).map_err(|e| anyhow::anyhow!("{e}"))?;
        hosted += host.local_members_of(&room)?.len().saturating_sub(1);
    }
    anyhow::ensure!(
        hosted == cfg.rss_clients,
        "{hosted} of {} puppets are members of their rooms",
        cfg.rss_clients
    );
    let stored = stored_bytes(store.as_ref())?;
    let stored_total: usize = stored.iter().map(|(_, n)| n).sum();
    println!(
        "rss: stored {stored_total} bytes (keys and values), by kind: {}",
        stored
            .iter()
            .map(|(kind, n)| format!("{kind} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let per_client = rss.saturating_sub(baseline) as f64 / cfg.rss_clients as f64;
    println!(
        "rss: {} puppets hosted ({} per room: client, KeyPackages, the bot's commit, its view of the group) in {took:.1?}: VmRSS {rss} kB (peak {peak} kB), {per_client:.1} kB per client",
        cfg.rss_clients,
        cfg.rss_clients / cfg.rss_rooms
    );
    Ok(serde_json::json!({
        "rss_kb_per_client": (per_client * 10.0).round() / 10.0,
        "stored_bytes_per_client": stored_total / cfg.rss_clients,
        "rss_kb_no_clients": baseline,
        "rss_kb_clients": rss,
        "rss_kb_peak": peak,
    }))
}

/// What `store` holds, in bytes of keys and values, by kind: the MLS records by label
/// (`mls/c/<client>/<label>/…` → `label`, `mls/u/…` → `mls/u`), everything else by its first
/// key byte (the core's tables), largest first.
fn stored_bytes(store: &dyn Store) -> anyhow::Result<Vec<(String, usize)>> {
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    bridge_core::store::for_each_with_prefix(store, b"", |key, value| {
        let text = String::from_utf8_lossy(key);
        let kind = match text.find("mls/") {
            Some(at) => {
                let rest = &text[at + 4..];
                match rest.strip_prefix("c/") {
                    // mls/c/mimi://DOMAIN/d/USER/bridge/LABEL/KEY
                    Some(client) => client.split('/').nth(6).unwrap_or("?").to_owned(),
                    None => format!("mls/{}", rest.split('/').next().unwrap_or("?")),
                }
            }
            None => format!("core 0x{:02x}", key.first().copied().unwrap_or(0)),
        };
        *kinds.entry(kind).or_default() += key.len() + value.len();
        Ok(())
    })?;
    let mut kinds: Vec<(String, usize)> = kinds.into_iter().collect();
    kinds.sort_by_key(|kind| std::cmp::Reverse(kind.1));
    Ok(kinds)
}

pub async fn run() -> anyhow::Result<String> {
    let cfg = Config::from_env();
    if let Ok(name) = std::env::var(PHASE_ENV) {
        let out = match name.as_str() {
            "fanout" => fanout_phase(cfg).await?,
            "rss" => rss_phase(cfg).await?,
            other => anyhow::bail!("unknown mimi phase {other:?}"),
        };
        return Ok(out.to_string());
    }
    println!(
        "mimi: a hub and {} followers x {} puppets in one room, on loopback with mutual TLS, every bridge a core over sled",
        cfg.followers, cfg.members
    );
    let fanout = crate::core_bench::child_phase_in(PHASE_ENV, "fanout")?;
    let rss = crate::core_bench::child_phase_in(PHASE_ENV, "rss")?;
    Ok(serde_json::json!({
        "bench": "mimi",
        "followers": cfg.followers,
        "members_per_follower": cfg.members,
        "group_members": fanout["group_members"],
        "messages": cfg.messages,
        "fanout_mps": fanout["fanout_mps"],
        "paced_mps": fanout["paced_mps"],
        "p50_us": fanout["p50_us"],
        "p99_us": fanout["p99_us"],
        "mls_us_per_msg": fanout["mls_us_per_msg"],
        "fanout_cpu_us_per_msg": fanout["fanout_cpu_us_per_msg"],
        "mls_cpu_us_per_msg": fanout["mls_cpu_us_per_msg"],
        "mls_encrypt_us": fanout["mls_encrypt_us"],
        "mls_decrypt_us": fanout["mls_decrypt_us"],
        "mls_messages": cfg.mls_messages,
        "rss_kb_per_client": rss["rss_kb_per_client"],
        "rss_clients": cfg.rss_clients,
        "rss_rooms": cfg.rss_rooms,
        "rss_kb_no_clients": rss["rss_kb_no_clients"],
        "rss_kb_clients": rss["rss_kb_clients"],
        "peak_rss_kb_fanout_phase": fanout["peak_rss_kb_fanout_phase"],
    })
    .to_string())
}
