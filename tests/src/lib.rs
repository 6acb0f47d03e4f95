//! Helpers shared by the end-to-end tests and benchmarks: finding the `bridge` binary, writing
//! configs, running the bridge as a child process, scripted XMPP and Matrix users ([`xmpp_human`],
//! [`matrix_human`]) and test servers of a test's own ([`prosody`], [`synapse`]).

pub mod e2e;
pub mod far;
pub mod jsonl;
pub mod matrix_human;
pub mod matrix_rig;
pub mod prosody;
pub mod synapse;
pub mod xmpp_human;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::{Child, Command};

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
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let child = Command::new(bridge_binary())
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
