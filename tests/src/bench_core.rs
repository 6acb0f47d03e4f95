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
    while rig.targets.iter().any(|t| t.delivered.load(Ordering::Relaxed) < want) {
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
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

pub async fn run() -> anyhow::Result<String> {
    println!("core: {EVENTS} events, {ROOMS} rooms x 3 links (2 targets per event)");

    let rig_mem = rig(Arc::new(MemoryStore::new()), EVENTS).await?;
    let took = drive(&rig_mem, EVENTS, None).await?;
    let in_memory_eps = EVENTS as f64 / took.as_secs_f64();
    println!("in-memory store: {took:.2?} -> {in_memory_eps:.0} events/s");
    rig_mem.core.shutdown().await;

    let dir = tempfile::tempdir()?;
    let sled: Arc<dyn Store> = Arc::new(SledStore::open(dir.path())?);
    let rig_sled = rig(sled, EVENTS).await?;
    let took = drive(&rig_sled, EVENTS, None).await?;
    let durable_eps = EVENTS as f64 / took.as_secs_f64();
    println!("sled, durable acks: {took:.2?} -> {durable_eps:.0} events/s");
    rig_sled.core.shutdown().await;

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

    let rss = peak_rss_kb();
    println!("peak RSS: {rss} kB");
    Ok(serde_json::json!({
        "bench": "core",
        "events": EVENTS,
        "rooms": ROOMS,
        "links_per_room": 3,
        "in_memory_eps": in_memory_eps.round(),
        "durable_eps": durable_eps.round(),
        "p50_us": p50,
        "p99_us": p99,
        "peak_rss_kb": rss,
    })
    .to_string())
}
