// The `core` benchmark (included by src/bin/bench.rs).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bridge_core::{
    Adapter, AdapterContext, AdapterError, Capabilities, Core, Delivered, DeliverySettings,
    EventKind, InboundEvent, Link, MemoryStore, RemoteEventId, RoomSettings, SledStore, Store,
};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use parking_lot::Mutex;
use tokio::sync::watch;

const ROOMS: usize = 1_000;
const EVENTS: usize = 200_000;
const IN_FLIGHT: usize = 4_096;

/// Records when each event index reached a target.
#[derive(Debug)]
struct Sink {
    delivered: AtomicU64,
    started: Mutex<Vec<Option<Instant>>>,
    latencies_us: Mutex<Vec<u32>>,
    ctx: watch::Sender<Option<AdapterContext>>,
}

#[derive(Debug, Clone)]
struct BenchAdapter(Arc<Sink>);

#[async_trait]
impl Adapter for BenchAdapter {
    fn capabilities(&self) -> Capabilities {
        Capabilities::all()
    }

    async fn run(&self, ctx: AdapterContext) -> Result<(), AdapterError> {
        ctx.set_connected(true);
        let shutdown = ctx.shutdown().clone();
        self.0.ctx.send_replace(Some(ctx));
        shutdown.cancelled().await;
        // The context holds the core: let it go (and the store with it) once stopped.
        self.0.ctx.send_replace(None);
        Ok(())
    }

    async fn send(&self, event: bridge_core::OutboundEvent) -> Result<Delivered, AdapterError> {
        if let EventKind::Message { content, .. } = &event.kind
            && let Ok(i) = content.text.body().parse::<usize>()
        {
            let started = self.0.started.lock().get(i).copied().flatten();
            if let Some(t) = started {
                let us = t.elapsed().as_micros().min(u32::MAX as u128) as u32;
                self.0.latencies_us.lock().push(us);
            }
        }
        self.0.delivered.fetch_add(1, Ordering::Relaxed);
        Ok(Delivered {
            native_id: Some(RemoteEventId::new(format!("{}:{}", event.room, event.id))),
            puppet: None,
        })
    }
}

fn sink(events: usize) -> Arc<Sink> {
    Arc::new(Sink {
        delivered: AtomicU64::new(0),
        started: Mutex::new(vec![None; events]),
        latencies_us: Mutex::new(Vec::new()),
        ctx: watch::Sender::new(None),
    })
}

struct Rig {
    core: Core,
    source: Arc<Sink>,
    targets: [Arc<Sink>; 2],
}

async fn rig(store: Arc<dyn Store>, events: usize) -> anyhow::Result<Rig> {
    let (a, b, c) = (sink(events), sink(events), sink(events));
    let mut builder = Core::builder(store)
        .settings(DeliverySettings {
            queue_capacity: 256,
            ..DeliverySettings::default()
        })
        .adapter("a", Arc::new(BenchAdapter(a.clone())))
        .adapter("b", Arc::new(BenchAdapter(b.clone())))
        .adapter("c", Arc::new(BenchAdapter(c.clone())));
    for r in 0..ROOMS {
        builder = builder.room(
            format!("room{r}"),
            RoomSettings::default(),
            vec![
                Link::new("a", format!("a{r}")),
                Link::new("b", format!("b{r}")),
                Link::new("c", format!("c{r}")),
            ],
        );
    }
    let core = builder.start().await?;
    Ok(Rig {
        core,
        source: a,
        targets: [b, c],
    })
}

fn event(i: usize) -> InboundEvent {
    bridge_core::testkit::inbound(&format!("a{}", i % ROOMS))
        .id(&format!("n{i}"))
        .from(&format!("user{}", i % 97))
        .text(&i.to_string())
}

/// Submits `events` events like a pipelined adapter (in order, durability awaited
/// concurrently), optionally paced, and waits until both targets got every one.
async fn drive(rig: &Rig, events: usize, pace: Option<Duration>) -> anyhow::Result<Duration> {
    let ctx = rig
        .source
        .ctx
        .subscribe()
        .wait_for(Option::is_some)
        .await?
        .clone()
        .ok_or_else(|| anyhow::anyhow!("adapter not running"))?;
    let started = Instant::now();
    let mut pending = FuturesUnordered::new();
    for i in 0..events {
        if let Some(pace) = pace {
            let due = started + pace * i as u32;
            tokio::time::sleep_until(due.into()).await;
        }
        let now = Instant::now();
        for t in &rig.targets {
            t.started.lock()[i] = Some(now);
        }
        pending.push(ctx.enqueue(event(i))?.durable());
        while pending.len() >= IN_FLIGHT {
            pending.next().await;
        }
    }
    while pending.next().await.is_some() {}
    let want = events as u64;
    let deadline = Instant::now() + Duration::from_secs(300);
    while rig
        .targets
        .iter()
        .any(|t| t.delivered.load(Ordering::Relaxed) < want)
    {
        anyhow::ensure!(Instant::now() < deadline, "deliveries did not finish");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(started.elapsed())
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn latencies(rig: &Rig) -> Vec<u32> {
    let mut all: Vec<u32> = rig
        .targets
        .iter()
        .flat_map(|t| t.latencies_us.lock().clone())
        .collect();
    all.sort_unstable();
    all
}

fn peak_rss_kb() -> u64 {
    bridge_tests::self_status_kb("VmHWM:")
}

/// Set in the child processes `bench core` spawns: the phase to run alone.
const PHASE_ENV: &str = "BRIDGE_BENCH_CORE_PHASE";

/// Runs one phase in this process; returns its figures as JSON (with this process's peak RSS).
async fn phase(name: &str) -> anyhow::Result<serde_json::Value> {
    let mut out = match name {
        "memory" => {
            let rig_mem = rig(Arc::new(MemoryStore::new()), EVENTS).await?;
            let took = drive(&rig_mem, EVENTS, None).await?;
            let eps = EVENTS as f64 / took.as_secs_f64();
            println!("in-memory store: {took:.2?} -> {eps:.0} events/s");
            rig_mem.core.shutdown().await;
            serde_json::json!({ "in_memory_eps": eps.round() })
        }
        "durable" => {
            let dir = tempfile::tempdir()?;
            let sled: Arc<dyn Store> = Arc::new(SledStore::open(dir.path())?);
            let rig_sled = rig(sled, EVENTS).await?;
            let took = drive(&rig_sled, EVENTS, None).await?;
            let eps = EVENTS as f64 / took.as_secs_f64();
            println!("sled, durable acks: {took:.2?} -> {eps:.0} events/s");
            rig_sled.core.shutdown().await;
            serde_json::json!({ "durable_eps": eps.round() })
        }
        "paced" => {
            // Added latency: enqueue -> target send(), at a steady 2,000 events/s over sled.
            const PACED: usize = 10_000;
            let dir = tempfile::tempdir()?;
            let sled: Arc<dyn Store> = Arc::new(SledStore::open(dir.path())?);
            let rig_paced = rig(sled, PACED).await?;
            drive(&rig_paced, PACED, Some(Duration::from_micros(500))).await?;
            let lat = latencies(&rig_paced);
            let (p50, p99) = (percentile(&lat, 0.50), percentile(&lat, 0.99));
            println!(
                "paced 2,000 events/s over sled: {} deliveries, added latency p50 {p50} us, p99 {p99} us",
                lat.len()
            );
            rig_paced.core.shutdown().await;
            serde_json::json!({ "p50_us": p50, "p99_us": p99 })
        }
        "flush" => flush_costs()?,
        "prune" => prune_costs().await?,
        other => anyhow::bail!("unknown core phase {other:?}"),
    };
    let rss = peak_rss_kb();
    println!("{name} phase peak RSS: {rss} kB");
    out["peak_rss_kb"] = rss.into();
    Ok(out)
}

/// What forgetting old events costs (`[bridge] keep_days`): `EVENTS` events stored over sled
/// and delivered, the bridge started again over them, then two passes: one with nothing old
/// enough to forget (what every pass costs a store of this size: reading the room logs' heads
/// and every native ID), and one that forgets them all.
async fn prune_costs() -> anyhow::Result<serde_json::Value> {
    let dir = tempfile::tempdir()?;
    let before_any = std::time::SystemTime::now() - Duration::from_secs(1);
    let sled: Arc<dyn Store> = Arc::new(SledStore::open(dir.path())?);
    let filled = rig(sled, EVENTS).await?;
    drive(&filled, EVENTS, None).await?;
    filled.core.shutdown().await;
    drop((filled.source, filled.targets));
    let sled: Arc<dyn Store> = Arc::new(SledStore::open(dir.path())?);
    let rig = rig(sled, EVENTS).await?;
    let started = Instant::now();
    let idle = rig.core.prune(before_any).await?;
    let idle_s = started.elapsed().as_secs_f64();
    anyhow::ensure!(idle.events == 0, "the first pass forgot {idle:?}");
    let started = Instant::now();
    let all = rig.core.prune(std::time::SystemTime::now()).await?;
    let all_s = started.elapsed().as_secs_f64();
    println!(
        "prune over {EVENTS} events: a pass with nothing to forget {idle_s:.2} s; forgetting \
         them all {all_s:.2} s ({} events, {} native IDs)",
        all.events, all.native_ids
    );
    rig.core.shutdown().await;
    Ok(serde_json::json!({
        "prune_idle_s": (idle_s * 100.0).round() / 100.0,
        "prune_all_s": (all_s * 100.0).round() / 100.0,
        "pruned_events": all.events,
    }))
}

/// What one durable acknowledgement costs when events come one at a time, as chat messages
/// do: `CYCLES` times a small batch (an event's worth: one ~300-byte value and four small ones)
/// applied and flushed through the store the core uses (sled behind the combining store), one
/// every 2 ms; and, as the floor under any store, the same number of 700-byte appends to a
/// plain file, each followed by `fdatasync`. Both as this process's CPU (user + system, every
/// thread) per cycle.
fn flush_costs() -> anyhow::Result<serde_json::Value> {
    use std::io::Write as _;
    const CYCLES: u64 = 3_000;
    const GAP: Duration = Duration::from_millis(2);
    let dir = tempfile::tempdir()?;
    let store = bridge_core::store::CombiningStore::open(Arc::new(SledStore::open(dir.path())?))?;
    let cycle = |i: u64| -> anyhow::Result<()> {
        let mut batch = bridge_core::store::Batch::new();
        for k in 0..5u64 {
            // Keys spread like the core's (one sequential, the others under room prefixes).
            let key = [&(k * 7919 % 1000).to_be_bytes()[..], &i.to_be_bytes()[..]].concat();
            batch.put(key, vec![1; if k == 0 { 300 } else { 17 }]);
        }
        store.apply(batch)?;
        store.flush()?;
        Ok(())
    };
    for i in 0..200 {
        cycle(i)?;
    }
    let pid = std::process::id();
    let cpu = || bridge_tests::cpu_seconds(pid);
    let before = cpu();
    for i in 200..200 + CYCLES {
        cycle(i)?;
        std::thread::sleep(GAP);
    }
    let store_us = (cpu() - before) * 1e6 / CYCLES as f64;
    drop(store);
    let mut file = std::fs::File::create(dir.path().join("floor"))?;
    let record = [1u8; 700];
    let before = cpu();
    for _ in 0..CYCLES {
        file.write_all(&record)?;
        file.sync_data()?;
        std::thread::sleep(GAP);
    }
    let floor_us = (cpu() - before) * 1e6 / CYCLES as f64;
    println!(
        "one event at a time: apply + flush through sled {store_us:.0} us of CPU per event; a 700-byte append + fdatasync {floor_us:.0} us"
    );
    Ok(serde_json::json!({
        "flush_cpu_us": store_us.round(),
        "fdatasync_cpu_us": floor_us.round(),
    }))
}

/// Runs `name` in a child process (this binary, same arguments, [`PHASE_ENV`] set), so that
/// every phase's peak RSS is its own; returns the child's JSON line.
fn child_phase(name: &str) -> anyhow::Result<serde_json::Value> {
    child_phase_in(PHASE_ENV, name)
}

/// Runs phase `name` of a benchmark in a child process: this binary with the same arguments
/// and `env` set to `name`. The child's stdout is printed but for its last line, its JSON
/// figures, which are returned; its stderr is passed through.
pub(crate) fn child_phase_in(env: &str, name: &str) -> anyhow::Result<serde_json::Value> {
    let exe = std::env::current_exe()?;
    let output = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(env, name)
        .stderr(std::process::Stdio::inherit())
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut lines: Vec<&str> = stdout.lines().collect();
    let json = lines.pop().unwrap_or_default();
    for line in lines {
        println!("{line}");
    }
    anyhow::ensure!(output.status.success(), "phase {name} failed: {json}");
    Ok(serde_json::from_str(json)?)
}

pub async fn run() -> anyhow::Result<String> {
    if let Ok(name) = std::env::var(PHASE_ENV) {
        return Ok(phase(&name).await?.to_string());
    }
    println!("core: {EVENTS} events, {ROOMS} rooms x 3 links (2 targets per event)");
    println!("each phase runs in its own process; peak_rss_kb is the durable (sled) phase's");
    let memory = child_phase("memory")?;
    let durable = child_phase("durable")?;
    let paced = child_phase("paced")?;
    let flush = child_phase("flush")?;
    let prune = child_phase("prune")?;
    // What `bin/bench.rs` built the runtime with (1 unless BRIDGE_BENCH_WORKER_THREADS says).
    let worker_threads = tokio::runtime::Handle::current().metrics().num_workers();
    let flavor = match tokio::runtime::Handle::current().runtime_flavor() {
        tokio::runtime::RuntimeFlavor::CurrentThread => "current_thread",
        _ => "multi_thread",
    };
    println!("runtime: {flavor}, {worker_threads} worker(s)");
    Ok(serde_json::json!({
        "bench": "core",
        "events": EVENTS,
        "rooms": ROOMS,
        "links_per_room": 3,
        "runtime": flavor,
        "worker_threads": worker_threads,
        "in_memory_eps": memory["in_memory_eps"],
        "durable_eps": durable["durable_eps"],
        "p50_us": paced["p50_us"],
        "p99_us": paced["p99_us"],
        "flush_cpu_us": flush["flush_cpu_us"],
        "fdatasync_cpu_us": flush["fdatasync_cpu_us"],
        "prune_idle_s": prune["prune_idle_s"],
        "prune_all_s": prune["prune_all_s"],
        "pruned_events": prune["pruned_events"],
        "peak_rss_kb": durable["peak_rss_kb"],
        "peak_rss_kb_memory_phase": memory["peak_rss_kb"],
        "peak_rss_kb_paced_phase": paced["peak_rss_kb"],
    })
    .to_string())
}
