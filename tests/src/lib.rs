//! Helpers shared by the end-to-end tests and benchmarks: finding the `bridge` binary, writing
//! configs, running the bridge as a child process, scripted XMPP and Matrix users ([`xmpp_human`],
//! [`matrix_human`]) and test servers of a test's own ([`prosody`], [`synapse`]).

pub mod e2e;
pub mod far;
pub mod jsonl;
pub mod linechat;
pub mod matrix_human;
pub mod matrix_rig;
pub mod prosody;
pub mod synapse;
pub mod xmpp_human;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::{Child, Command};

/// Sends this test's logs (the bridge under test, in this process) to the test output,
/// filtered by `RUST_LOG` (warnings and errors when it is not set, so that a failing test in CI
/// shows what the bridge complained of); a second call in the same process does nothing.
pub fn log_to_test_output() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// A field of this process's `/proc/self/status` in kB (`"VmRSS:"`, `"VmHWM:"`); 0 when it
/// cannot be read. Shared by the benchmarks' RSS figures.
pub fn self_status_kb(field: &str) -> u64 {
    proc_status_kb("self", field)
}

/// A field of `/proc/<pid>/status` in kB, for another process (`pid` a number, or `"self"`);
/// 0 when it cannot be read.
pub fn status_kb(pid: u32, field: &str) -> u64 {
    proc_status_kb(&pid.to_string(), field)
}

/// CPU time (user + system) process `pid` has used so far, in seconds (0 when unreadable).
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // "pid (comm) state ppid ...": utime and stime are fields 14 and 15, counted from 1; the
    // rest after ")" starts at field 3, so they are at indexes 11 and 12.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12)) as f64 / 100.0
}

fn proc_status_kb(pid: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The `bridge` binary built next to this test (`cargo test --workspace` builds it).
pub fn bridge_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    // target/<profile>/deps/<test>-<hash> -> target/<profile>/bridge
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps");
    let bin = profile_dir.join("bridge");
    assert!(
        bin.exists(),
        "{} is missing: build it first (`cargo build --workspace`; scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// A `bridge` child process.
#[derive(Debug)]
pub struct BridgeProcess {
    child: Child,
}

impl BridgeProcess {
    /// Starts `bridge run -c config`, logging to `log`.
    pub fn start(config: &Path, log: &Path) -> std::io::Result<Self> {
        Self::start_binary(&bridge_binary(), config, log)
    }

    /// Starts `binary run -c config` (a release build, say), appending its output to `log`.
    pub fn start_binary(binary: &Path, config: &Path, log: &Path) -> std::io::Result<Self> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let child = Command::new(binary)
            .arg("run")
            .arg("-c")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        Ok(Self { child })
    }

    /// SIGKILL: no chance to flush or say goodbye.
    pub async fn kill9(mut self) -> std::io::Result<()> {
        self.child.start_kill()?;
        self.child.wait().await.map(|_| ())
    }

    /// SIGTERM, then waits for a clean exit; returns whether it exited successfully.
    pub async fn terminate(mut self) -> std::io::Result<bool> {
        if let Some(pid) = self.child.id() {
            let status = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status()?;
            if !status.success() {
                return Ok(false);
            }
        }
        Ok(self.child.wait().await?.success())
    }

    /// The process ID.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

/// The value of an environment variable that `scripts/test.sh` sets for the tests (where it
/// started a server, the test client's interpreter…).
///
/// # Panics
/// When it is unset: tests that need a server never skip silently.
pub fn test_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests through scripts/test.sh, which starts the servers")
    })
}

/// `name` made unique to this process and moment, for rooms and accounts that no other test (or
/// earlier run against the same server) uses.
pub fn fresh(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{name}-{}-{nanos}", std::process::id())
}

/// Waits until `done` holds, checking every 20 ms; panics naming `what` after `timeout`.
pub async fn wait_for(what: &str, timeout: std::time::Duration, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
