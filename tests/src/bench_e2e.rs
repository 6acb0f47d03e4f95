// The `e2e` benchmark (included by src/bin/bench.rs).
//
// The release `bridge` binary (next to this one) as a child process between a Prosody and a
// Synapse of the bench's own (the rig of `bridge_tests::e2e`, shared with the fault test:
// ports 27422/27447/27480 for Prosody, 27818 for Synapse with appservice pushes to 27910, the
// bridge's HTTP on 27960), `ROOMS` MUCs linked with `ROOMS` Matrix rooms
// (`BRIDGE_BENCH_E2E_ROOMS` for another count). In each room an XMPP
// user and a Matrix user talk; a second XMPP occupant (`xreader<i>`) and the Matrix admin (who
// joins every room and follows `/sync`) listen. Every message is counted where a person would
// see it, and each run measures the bridged path and the server's own delivery in the same run:
//
// - XMPP → Matrix: the XMPP users say `X2M` messages each (at most `WINDOW` unconfirmed).
//   Bridged: the admin's sync sees the ghosts' copies (`x2m_mps`); direct: the reader in the
//   MUC sees the originals (`direct_xmpp_mps`).
// - Matrix → XMPP: the Matrix users send `M2X` messages each, one after the other.
//   Bridged: the XMPP readers see the puppets' copies (`m2x_mps`); direct: the admin's sync
//   sees the originals (`direct_matrix_mps`).
// - Rates are messages / (last seen − first sent). `rate_ratio` = the slower bridged rate /
//   the slower server's direct rate.
// - Latency, paced (`PACED_TOTAL` messages per direction, spread over the rooms, both
//   directions interleaved, so that the p99 is not just the slowest one; `PACE_MPS` in all): bridged = said → seen on the other network; the added latency is bridged minus the
//   slower server's own delivery (Matrix: PUT → another user's sync), percentile by
//   percentile, so it includes the XMPP server's hop (MUC → occupant, ~2 ms p50).
// - `cpu_s_per_1000_msgs`: the bridge process's CPU (user + system) over the two throughput
//   runs, per 1,000 bridged messages; `idle_cpu_ms_per_s`: its CPU while quiet, per second
//   (part of the former at slow rates). `idle_rss_kb`: VmRSS once ready and quiet;
//   `load_rss_kb`: the highest VmRSS sampled during the throughput runs. `ready_s`: from
//   spawning the process to `/health/ready` answering 200 (a restart, with its store and
//   rooms in place; `ready_s_first` is the very first start).
// - `lost`, `duplicated`, `out_of_order`: every message of every run, counted at the end in
//   the Matrix rooms' histories and the MUCs' archives (`e2e::Rig::count`).
// - `flushes_per_1000_msgs`: the store flushes (fsyncs) the bridge made over the two
//   throughput runs (`bridge_store_flushes_total` on its `/metrics`), per 1,000 bridged
//   messages: what group commit saved, and where the CPU per message goes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bridge_tests::e2e::{Bridge, Ports, Rig, XmppUser};
use bridge_tests::matrix_rig::SequenceCount;
use serde_json::{Value, json};

const PORTS: Ports = Ports {
    c2s: 27422,
    component: 27447,
    prosody_http: 27480,
    synapse: 27818,
    appservice: 27910,
    bridge_http: 27960,
};
/// Room pairs, unless `BRIDGE_BENCH_E2E_ROOMS` says otherwise: the bridge sends one message at a
/// time per room (in order), so with few rooms the throughput runs measure the homeserver's
/// latency per send more than what it and the bridge can carry together.
const ROOMS: usize = 2;
/// Throughput: messages per room and direction.
const X2M: usize = 1000;
const M2X: usize = 300;
/// XMPP messages a sender has unconfirmed at most.
const WINDOW: usize = 50;
/// Paced latency run: messages per direction over all rooms, and the rate of all of them
/// together. 300 per direction: the p99 of 120 (the count until 2026-11-28) was their second
/// slowest.
const PACED_TOTAL: usize = 300;
const PACE_MPS: f64 = 6.0;
/// The longest any one phase may take.
const WAIT: Duration = Duration::from_secs(300);
/// How long the idle bridge's CPU is measured (`idle_cpu_ms_per_s`).
const IDLE_CPU_WINDOW: Duration = Duration::from_secs(10);

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// Samples the bridge's VmRSS every 100 ms while `on` is set; the highest value.
fn sample_rss(pid: u32, on: Arc<AtomicBool>, peak: Arc<AtomicU64>) {
    tokio::spawn(async move {
        while on.load(Ordering::Relaxed) {
            peak.fetch_max(bridge_tests::status_kb(pid, "VmRSS:"), Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

/// When each of `bodies` was first seen by `seen` (None: not yet).
fn first_seen<'a>(
    seen: impl Iterator<Item = (Instant, &'a str)>,
    wanted: &std::collections::HashMap<String, usize>,
    out: &mut [Option<Instant>],
) {
    for (at, body) in seen {
        if let Some(&i) = wanted.get(body)
            && out[i].is_none()
        {
            out[i] = Some(at);
        }
    }
}

/// What the XMPP readers and the admin's sync have seen: (when, body) of the messages from
/// the other network (`bridged`) or from the room's own sender (direct).
struct Seen<'a> {
    readers: &'a [Arc<XmppUser>],
    synced: &'a parking_lot::Mutex<Vec<bridge_tests::e2e::Synced>>,
    rig: &'a Rig,
}

impl Seen<'_> {
    /// (when, body) seen in the MUCs: from the puppets (`bridged`) or the XMPP senders.
    fn xmpp(&self, bridged: bool) -> Vec<(Instant, String)> {
        let mut out = Vec::new();
        for (reader, pair) in self.readers.iter().zip(&self.rig.rooms) {
            for (at, nick, body) in reader.received() {
                if (nick != pair.xmpp_user) == bridged {
                    out.push((at, body));
                }
            }
        }
        out
    }

    /// (when, body) seen in the Matrix rooms: from the ghosts (`bridged`) or the senders.
    fn matrix(&self, bridged: bool) -> Vec<(Instant, String)> {
        self.synced
            .lock()
            .iter()
            .filter(|s| s.sender.starts_with("@_bridge_") == bridged)
            .map(|s| (s.at, s.body.clone()))
            .collect()
    }
}

/// Waits until `done` holds (checked every 50 ms), at most `WAIT`.
async fn until(what: &str, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    while !done() {
        anyhow::ensure!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Arrival times of `bodies` (index → body) in `seen`, once all arrived.
async fn arrivals(
    what: &str,
    bodies: &[String],
    mut seen: impl FnMut() -> Vec<(Instant, String)>,
) -> anyhow::Result<Vec<Instant>> {
    let wanted: std::collections::HashMap<String, usize> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| (b.clone(), i))
        .collect();
    let mut at = vec![None; bodies.len()];
    until(what, || {
        let now = seen();
        first_seen(now.iter().map(|(t, b)| (*t, b.as_str())), &wanted, &mut at);
        at.iter().all(Option::is_some)
    })
    .await?;
    Ok(at.into_iter().flatten().collect())
}

fn rate(n: usize, from: Instant, times: &[Instant]) -> f64 {
    let last = times.iter().max().copied().unwrap_or(from);
    let secs = last.duration_since(from).as_secs_f64();
    if secs > 0.0 { n as f64 / secs } else { 0.0 }
}

pub async fn run() -> anyhow::Result<String> {
    anyhow::ensure!(
        std::env::var_os("BRIDGE_TEST_SYNAPSE_PYTHON").is_some(),
        "BRIDGE_TEST_SYNAPSE_PYTHON is not set: run this through scripts/bench.sh e2e, which installs Synapse"
    );
    let binary = std::env::current_exe()?
        .parent()
        .ok_or_else(|| anyhow::anyhow!("no directory"))?
        .join("bridge");
    anyhow::ensure!(
        binary.exists(),
        "{} is missing: scripts/bench.sh builds it",
        binary.display()
    );
    let rooms = rooms()?;
    eprintln!("e2e: starting Prosody and Synapse, creating {rooms} room pairs");
    let rig = Rig::start(PORTS, rooms, binary, "warn").await?;
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = measure(&rig) => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        _ = terminate.recv() => Err(anyhow::anyhow!("terminated")),
    }
}

/// `BRIDGE_BENCH_E2E_ROOMS`, or [`ROOMS`].
fn rooms() -> anyhow::Result<usize> {
    match std::env::var("BRIDGE_BENCH_E2E_ROOMS") {
        Ok(v) => match v.parse::<usize>() {
            Ok(n) if (1..=PACED_TOTAL).contains(&n) => Ok(n),
            _ => anyhow::bail!("BRIDGE_BENCH_E2E_ROOMS={v}: a number of rooms from 1 to {PACED_TOTAL}"),
        },
        Err(_) => Ok(ROOMS),
    }
}

async fn measure(rig: &Rig) -> anyhow::Result<String> {
    let rooms = rig.rooms.len();
    let paced = PACED_TOTAL / rooms;
    // Start to ready: the first start, then a restart with the store and rooms in place.
    let mut bridge = rig.start_bridge()?;
    rig.wait_ready(&mut bridge, WAIT).await?;
    let ready_first = bridge.started.elapsed().as_secs_f64();
    rig.wait_bot_joined().await?;
    anyhow::ensure!(bridge.terminate().await?, "the bridge did not stop cleanly");
    let mut bridge: Bridge = rig.start_bridge()?;
    rig.wait_ready(&mut bridge, WAIT).await?;
    let ready = bridge.started.elapsed().as_secs_f64();
    eprintln!("e2e: ready {ready_first:.3} s after the first start, {ready:.3} s after a restart");
    // BRIDGE_BENCH_E2E_LOG=<file>: the bridge's log until now (both starts), for a look at what
    // a start waited on (RUST_LOG sets its level).
    if let Ok(keep) = std::env::var("BRIDGE_BENCH_E2E_LOG") {
        std::fs::copy(&rig.log, &keep)?;
    }
    let pid = bridge.pid;

    let senders = rig.xmpp_users().await?;
    let readers = rig.xmpp_readers().await?;
    let admin = bridge_tests::e2e::MatrixUser::login(&rig.synapse.url(), "admin", "adminpass").await?;
    for pair in &rig.rooms {
        admin.join(&pair.matrix).await?;
    }
    let (synced, stop_sync) = admin.follow();
    let seen = Seen {
        readers: &readers,
        synced: &synced,
        rig,
    };
    // A message each way, so that puppets and ghosts exist before anything is measured.
    for (pair, user) in rig.rooms.iter().zip(&senders) {
        user.say(&format!("warm-x-{}", pair.index), "warm-up from xmpp")
            .await?;
        pair.matrix_user
            .send_text(&pair.matrix, &format!("warm-m-{}", pair.index), "warm-up from matrix")
            .await?;
    }
    until("the warm-up", || {
        seen.matrix(true).iter().filter(|(_, b)| b == "warm-up from xmpp").count() >= rooms
            && seen.xmpp(true).iter().filter(|(_, b)| b == "warm-up from matrix").count() >= rooms
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss = bridge_tests::status_kb(pid, "VmRSS:");
    eprintln!("e2e: idle VmRSS {idle_rss} kB");
    // What the bridge burns doing nothing (timers, background flushes): at the rates Synapse
    // allows here, a share of the CPU per message.
    let (idle_from, idle_cpu_from) = (Instant::now(), bridge_tests::cpu_seconds(pid));
    tokio::time::sleep(IDLE_CPU_WINDOW).await;
    let idle_cpu_ms_per_s = (bridge_tests::cpu_seconds(pid) - idle_cpu_from) * 1000.0
        / idle_from.elapsed().as_secs_f64();
    eprintln!("e2e: idle CPU {idle_cpu_ms_per_s:.2} ms per second");

    let sampling = Arc::new(AtomicBool::new(true));
    let load_rss = Arc::new(AtomicU64::new(0));
    sample_rss(pid, sampling.clone(), load_rss.clone());
    let cpu_before = bridge_tests::cpu_seconds(pid);
    let flushes_before = flushes(PORTS.bridge_http).await?;

    // XMPP → Matrix, as fast as the XMPP users can say it.
    let x2m_bodies: Vec<String> = rig
        .rooms
        .iter()
        .flat_map(|p| (0..X2M).map(|i| p.x2m_body(i)))
        .collect();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (pair, user) in rig.rooms.iter().zip(&senders) {
        let (pair, user) = (pair.clone(), user.clone());
        tasks.push(tokio::spawn(async move {
            user.say_all(X2M, |i| pair.x2m_body(i), 100_000.0, WINDOW, WAIT)
                .await
        }));
    }
    for t in tasks {
        t.await??;
    }
    let direct_x = arrivals("XMPP direct", &x2m_bodies, || seen.xmpp(false)).await?;
    let bridged_x = arrivals("XMPP → Matrix", &x2m_bodies, || seen.matrix(true)).await?;
    let direct_xmpp_mps = rate(x2m_bodies.len(), started, &direct_x);
    let x2m_mps = rate(x2m_bodies.len(), started, &bridged_x);
    eprintln!(
        "e2e: XMPP → Matrix {x2m_mps:.1} messages/s; MUC → MUC {direct_xmpp_mps:.1} messages/s ({} messages)",
        x2m_bodies.len()
    );

    // Matrix → XMPP, each Matrix user one message after the other.
    let m2x_bodies: Vec<String> = rig
        .rooms
        .iter()
        .flat_map(|p| (0..M2X).map(|i| p.m2x_body(i)))
        .collect();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for pair in &rig.rooms {
        let pair = pair.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..M2X {
                pair.matrix_user
                    .send_until_accepted(&pair.matrix, &format!("b-{}-{i}", pair.index), &pair.m2x_body(i), WAIT)
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let direct_m = arrivals("Matrix direct", &m2x_bodies, || seen.matrix(false)).await?;
    let bridged_m = arrivals("Matrix → XMPP", &m2x_bodies, || seen.xmpp(true)).await?;
    let direct_matrix_mps = rate(m2x_bodies.len(), started, &direct_m);
    let m2x_mps = rate(m2x_bodies.len(), started, &bridged_m);
    eprintln!(
        "e2e: Matrix → XMPP {m2x_mps:.1} messages/s; Matrix room → same room {direct_matrix_mps:.1} messages/s ({} messages)",
        m2x_bodies.len()
    );
    let cpu = bridge_tests::cpu_seconds(pid) - cpu_before;
    let flushes = flushes(PORTS.bridge_http).await? - flushes_before;
    sampling.store(false, Ordering::Relaxed);
    let bridged_total = x2m_bodies.len() + m2x_bodies.len();
    let cpu_per_1000 = cpu * 1000.0 / bridged_total as f64;
    let flushes_per_1000 = flushes * 1000.0 / bridged_total as f64;
    eprintln!("e2e: {flushes} store flushes over the throughput runs ({flushes_per_1000:.0} per 1,000 messages)");

    // Paced: both directions interleaved, well below every path's capacity.
    let interval = Duration::from_secs_f64(1.0 / PACE_MPS);
    let mut said_x: Vec<(String, Instant)> = Vec::new();
    let mut said_m: Vec<(String, Instant)> = Vec::new();
    let paced_start = tokio::time::Instant::now();
    let mut tick = 0u32;
    for k in 0..paced {
        for (pair, user) in rig.rooms.iter().zip(&senders) {
            tokio::time::sleep_until(paced_start + interval * tick).await;
            tick += 1;
            let body = pair.x2m_body(X2M + k);
            let at = Instant::now();
            user.say(&format!("p-{}-{k}", pair.index), &body).await?;
            said_x.push((body, at));
            tokio::time::sleep_until(paced_start + interval * tick).await;
            tick += 1;
            let body = pair.m2x_body(M2X + k);
            let at = Instant::now();
            pair.matrix_user
                .send_text(&pair.matrix, &format!("p-{}-{k}", pair.index), &body)
                .await?;
            said_m.push((body, at));
        }
    }
    let latencies = async |said: &[(String, Instant)],
                           what: &str,
                           seen: &dyn Fn() -> Vec<(Instant, String)>|
           -> anyhow::Result<Vec<f64>> {
        let bodies: Vec<String> = said.iter().map(|(b, _)| b.clone()).collect();
        let at = arrivals(what, &bodies, seen).await?;
        Ok(sorted(
            said.iter()
                .zip(at)
                .map(|((_, sent), seen)| seen.duration_since(*sent).as_secs_f64() * 1000.0)
                .collect(),
        ))
    };
    let x_direct: Vec<f64> = latencies(&said_x, "paced MUC", &|| seen.xmpp(false)).await?;
    let x_bridged = latencies(&said_x, "paced XMPP → Matrix", &|| seen.matrix(true)).await?;
    let m_direct = latencies(&said_m, "paced Matrix", &|| seen.matrix(false)).await?;
    let m_bridged = latencies(&said_m, "paced Matrix → XMPP", &|| seen.xmpp(true)).await?;
    // Against the slower server's own delivery (Matrix): what is left is the bridge plus the
    // XMPP server's hop (a few ms), an upper bound on what the bridge adds. (Subtracting both
    // servers' percentiles as well made the p99 negative: tails do not add up.)
    let added = |p: f64, bridged: &[f64]| percentile(bridged, p) - percentile(&m_direct, p);
    let (x2m_p50, x2m_p99) = (added(0.5, &x_bridged), added(0.99, &x_bridged));
    let (m2x_p50, m2x_p99) = (added(0.5, &m_bridged), added(0.99, &m_bridged));
    eprintln!(
        "e2e: paced, ms p50/p99: MUC {:.1}/{:.1}, Matrix room {:.1}/{:.1}, XMPP → Matrix {:.1}/{:.1}, Matrix → XMPP {:.1}/{:.1}",
        percentile(&x_direct, 0.5),
        percentile(&x_direct, 0.99),
        percentile(&m_direct, 0.5),
        percentile(&m_direct, 0.99),
        percentile(&x_bridged, 0.5),
        percentile(&x_bridged, 0.99),
        percentile(&m_bridged, 0.5),
        percentile(&m_bridged, 0.99),
    );
    stop_sync.cancel();

    // Everything of every run, counted where it ended up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let counts = rig.count(&senders, X2M + paced, M2X + paced).await?;
    let mut total = SequenceCount::default();
    for c in &counts {
        for s in [c.x2m, c.m2x] {
            total.delivered += s.delivered;
            total.lost += s.lost;
            total.duplicated += s.duplicated;
            total.out_of_order += s.out_of_order;
        }
    }
    eprintln!("e2e: every message of the runs: {total}");
    let stopped_cleanly = bridge.terminate().await?;
    anyhow::ensure!(stopped_cleanly, "the bridge did not stop cleanly");

    let slower_direct = direct_xmpp_mps.min(direct_matrix_mps);
    let out = json!({
        "bench": "e2e",
        "rooms": rooms,
        "x2m_mps": round(x2m_mps, 1),
        "m2x_mps": round(m2x_mps, 1),
        "direct_xmpp_mps": round(direct_xmpp_mps, 1),
        "direct_matrix_mps": round(direct_matrix_mps, 1),
        "rate_ratio": round(x2m_mps.min(m2x_mps) / slower_direct, 3),
        "p50_added_ms": round(x2m_p50.max(m2x_p50), 1),
        "p99_added_ms": round(x2m_p99.max(m2x_p99), 1),
        "x2m_p50_added_ms": round(x2m_p50, 1),
        "x2m_p99_added_ms": round(x2m_p99, 1),
        "m2x_p50_added_ms": round(m2x_p50, 1),
        "m2x_p99_added_ms": round(m2x_p99, 1),
        "paced_mps": PACE_MPS,
        "paced_per_direction": rooms * paced,
        "out_of_order": total.out_of_order,
        "lost": total.lost,
        "duplicated": total.duplicated,
        "cpu_s_per_1000_msgs": round(cpu_per_1000, 3),
        "flushes_per_1000_msgs": round(flushes_per_1000, 0),
        "idle_rss_kb": idle_rss,
        "idle_cpu_ms_per_s": round(idle_cpu_ms_per_s, 2),
        "load_rss_kb": load_rss.load(Ordering::Relaxed),
        "ready_s": round(ready, 3),
        "ready_s_first": round(ready_first, 3),
    });
    Ok(Value::to_string(&out))
}

/// The store flushes the bridge on `port` made so far (`bridge_store_flushes_total`).
async fn flushes(port: u16) -> anyhow::Result<f64> {
    use crate::matrix_bench::{metric_sum, metrics};
    Ok(metric_sum(&metrics(port).await?, "bridge_store_flushes_total", &[]))
}
