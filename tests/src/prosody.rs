//! A Prosody of a test's own, for tests that stop and restart the server (the shared one that
//! scripts/test.sh starts must stay up for everyone else).

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

/// A Prosody process on its own ports and data directory, from the test template
/// `tests/servers/prosody.cfg.lua`. Stopped when dropped.
#[derive(Debug)]
pub struct Prosody {
    dir: tempfile::TempDir,
    config: PathBuf,
    child: Option<Child>,
    /// The c2s port.
    pub c2s: u16,
    /// The component port.
    pub component: u16,
}

impl Prosody {
    /// Starts Prosody with c2s on `c2s`, components on `component` and HTTP on `http`.
    pub fn start(c2s: u16, component: u16, http: u16) -> Result<Self> {
        Self::start_with(c2s, component, http, |text| text)
    }

    /// Like [`Prosody::start`], with the config text passed through `edit` first (e.g. global
    /// settings put in front, or a setting of the template replaced).
    pub fn start_with(
        c2s: u16,
        component: u16,
        http: u16,
        edit: impl FnOnce(String) -> String,
    ) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir_all(dir.path().join("data"))?;
        std::fs::create_dir_all(dir.path().join("certs"))?;
        let template = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("servers/prosody.cfg.lua");
        let text = std::fs::read_to_string(&template)
            .with_context(|| format!("reading {}", template.display()))?
            .replace("@DIR@", &dir.path().display().to_string())
            .replace("@C2S_PORT@", &c2s.to_string())
            .replace("@COMPONENT_PORT@", &component.to_string())
            .replace("@HTTP_PORT@", &http.to_string());
        let config = dir.path().join("prosody.cfg.lua");
        std::fs::write(&config, edit(text))?;
        let mut prosody = Self {
            dir,
            config,
            child: None,
            c2s,
            component,
        };
        prosody.launch()?;
        Ok(prosody)
    }

    fn launch(&mut self) -> Result<()> {
        // Appended to, so that the log of a restarted server keeps its first life.
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join("prosody.out"))?;
        let child = Command::new("prosody")
            .arg("--config")
            .arg(&self.config)
            .arg("-F")
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting prosody (installed by scripts/test.sh)")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        for port in [self.component, self.c2s] {
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                if Instant::now() > deadline {
                    bail!("Prosody did not listen on {port} within 20 s");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// Stops the server (SIGTERM, as an admin's restart would) and waits for it to exit.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            child.wait()?;
        }
        Ok(())
    }

    /// Stops and starts the server again on the same ports and data.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.launch()
    }

    /// Creates the account `user@localhost` with `password` (`prosodyctl register`; the
    /// server may be running).
    pub fn register(&self, user: &str, password: &str) -> Result<()> {
        let out = Command::new("prosodyctl")
            .arg("--config")
            .arg(&self.config)
            .args(["register", user, "localhost", password])
            .output()
            .context("running prosodyctl")?;
        if !out.status.success() {
            bail!(
                "prosodyctl register {user} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// The process ID of the running server.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The server's output (stdout and stderr), for a failing test's report.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("prosody.out")
    }

    /// `127.0.0.1:<c2s port>`.
    pub fn c2s_addr(&self) -> String {
        format!("127.0.0.1:{}", self.c2s)
    }

    /// `127.0.0.1:<component port>`.
    pub fn component_addr(&self) -> String {
        format!("127.0.0.1:{}", self.component)
    }
}

impl Drop for Prosody {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
