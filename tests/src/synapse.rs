//! Synapse for the Matrix tests: where the shared one is ([`shared_url`], started by
//! scripts/test.sh), and a [`Synapse`] of a test's own for tests that stop and restart the server
//! (the shared one must stay up for everyone else).
//!
//! Both come from the templates in `tests/servers/` (homeserver.yaml, appservice.yaml) and have
//! the same users: `alice`/`alicepass`, `bob`/`bobpass`, `carol`/`carolpass`, and the server
//! admin `admin`/`adminpass`; and the same application service registration (id `bridge-test`,
//! tokens [`AS_TOKEN`] and [`HS_TOKEN`], users `@_bridge_.*:localhost`, sender `_bridge_bot`).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use anyhow::{Context as _, Result, bail};

/// The application service's token (bridge to homeserver), as in `tests/servers/appservice.yaml`.
pub const AS_TOKEN: &str = "as_token_bridge_test_0123456789";
/// The homeserver's token (homeserver to bridge), as in `tests/servers/appservice.yaml`.
pub const HS_TOKEN: &str = "hs_token_bridge_test_9876543210";

/// The URL of the Synapse that scripts/test.sh started: `$BRIDGE_TEST_SYNAPSE_URL`, e.g.
/// `http://127.0.0.1:25808`. Its application service pushes to `$BRIDGE_TEST_AS_PORT`.
///
/// # Panics
/// When the variable is unset: tests that need a server never skip silently.
pub fn shared_url() -> String {
    std::env::var("BRIDGE_TEST_SYNAPSE_URL").unwrap_or_else(|_| {
        panic!(
            "BRIDGE_TEST_SYNAPSE_URL is not set: run the tests through scripts/test.sh, which \
             starts Synapse (synapse_install and synapse_start in scripts/servers.sh)"
        )
    })
}

/// The port the shared Synapse pushes application service transactions to:
/// `$BRIDGE_TEST_AS_PORT`.
///
/// # Panics
/// When the variable is unset or not a port number.
pub fn shared_as_port() -> u16 {
    let port = std::env::var("BRIDGE_TEST_AS_PORT").unwrap_or_else(|_| {
        panic!(
            "BRIDGE_TEST_AS_PORT is not set: run the tests through scripts/test.sh, which \
             starts Synapse (synapse_start in scripts/servers.sh)"
        )
    });
    port.parse()
        .unwrap_or_else(|_| panic!("BRIDGE_TEST_AS_PORT={port} is not a port number"))
}

/// The interpreter of Synapse's venv: `$BRIDGE_TEST_SYNAPSE_PYTHON`, set by scripts/test.sh.
///
/// # Panics
/// When the variable is unset: tests that need a server never skip silently.
pub fn python() -> PathBuf {
    match std::env::var_os("BRIDGE_TEST_SYNAPSE_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => panic!(
            "BRIDGE_TEST_SYNAPSE_PYTHON is not set: a test's own Synapse needs the venv that \
             scripts/test.sh creates (synapse_install in scripts/servers.sh); run the tests \
             through scripts/test.sh, or source scripts/lib.sh and scripts/servers.sh and call \
             synapse_install first"
        ),
    }
}

/// `tests/servers/`, where the templates and the setup helper are.
fn servers_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("servers")
}

/// A Synapse process on its own ports and data directory (a temporary directory, removed on
/// drop), with the test users registered. Killed when dropped.
#[derive(Debug)]
pub struct Synapse {
    dir: tempfile::TempDir,
    config: PathBuf,
    child: Option<Child>,
    /// The client listener's port (client API, admin API, media).
    pub port: u16,
    /// Where Synapse pushes application service transactions (`http://127.0.0.1:<as_port>`).
    pub as_port: u16,
}

impl Synapse {
    /// Starts Synapse listening on 127.0.0.1:`port`, its application service registration
    /// pointing at 127.0.0.1:`as_port`, and registers the test users. Takes about two seconds.
    ///
    /// # Panics
    /// When `$BRIDGE_TEST_SYNAPSE_PYTHON` is unset.
    pub fn start(port: u16, as_port: u16) -> Result<Self> {
        let python = python();
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            bail!("something already listens on 127.0.0.1:{port}: pick another port");
        }
        let dir = tempfile::tempdir()?;
        let dir_text = dir.path().display().to_string();
        let template = |name: &str| -> Result<String> {
            let path = servers_dir().join(name);
            std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
        };
        let config = dir.path().join("homeserver.yaml");
        std::fs::write(
            &config,
            template("homeserver.yaml")?
                .replace("@DIR@", &dir_text)
                .replace("@PORT@", &port.to_string()),
        )?;
        std::fs::write(
            dir.path().join("synapse.log.config"),
            template("synapse.log.config")?,
        )?;
        std::fs::write(
            dir.path().join("appservice.yaml"),
            template("appservice.yaml")?.replace("@AS_PORT@", &as_port.to_string()),
        )?;
        setup(
            &python,
            &[
                "signing-key".as_ref(),
                dir.path().join("localhost.signing.key").as_os_str(),
            ],
        )?;
        let mut synapse = Self {
            dir,
            config,
            child: None,
            port,
            as_port,
        };
        synapse.launch("register")?;
        Ok(synapse)
    }

    /// Starts the process and runs the setup helper's `step` (`register` or `wait`) against it.
    fn launch(&mut self, step: &str) -> Result<()> {
        // Appended to, so that the log of a restarted server keeps its first life.
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let child = Command::new(python())
            .args(["-m", "synapse.app.homeserver", "-c"])
            .arg(&self.config)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting Synapse")?;
        let pid = child.id().to_string();
        self.child = Some(child);
        let url = self.url();
        let ready = setup(
            &python(),
            &[
                step.as_ref(),
                url.as_ref(),
                "--pid".as_ref(),
                pid.as_ref(),
                "--timeout".as_ref(),
                "60".as_ref(),
            ],
        );
        if let Err(e) = ready {
            let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "{e:#}; the end of Synapse's log ({}):\n{}",
                self.log_path().display(),
                tail.join("\n")
            );
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

    /// Stops and starts the server again on the same ports and data (the users exist, access
    /// tokens stay valid).
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.launch("wait")
    }

    /// Whether the process runs (it was started and has not exited).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The config file (`homeserver.yaml`) in the server's directory.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The server's directory: config, database, media, log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Synapse's log (stdout and stderr, every life of the server).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("synapse.out")
    }
}

impl Drop for Synapse {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `tests/servers/synapse_setup.py` with `args`; its stderr explains a failure.
fn setup(python: &Path, args: &[&std::ffi::OsStr]) -> Result<()> {
    let script = servers_dir().join("synapse_setup.py");
    let out = Command::new(python)
        .arg(&script)
        .args(args)
        .output()
        .with_context(|| format!("running {} {}", python.display(), script.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}): {}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{AS_TOKEN, HS_TOKEN, servers_dir};

    #[test]
    fn tokens_match_the_registration_template() {
        let text = std::fs::read_to_string(servers_dir().join("appservice.yaml"))
            .expect("the template is readable");
        assert!(
            text.contains(&format!("as_token: \"{AS_TOKEN}\"")),
            "{text}"
        );
        assert!(
            text.contains(&format!("hs_token: \"{HS_TOKEN}\"")),
            "{text}"
        );
    }
}
