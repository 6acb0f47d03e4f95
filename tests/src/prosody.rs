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
        std::fs::write(&config, text)?;
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
        let log = std::fs::File::create(self.dir.path().join("prosody.out"))?;
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
