//! The plumbing of the scripted test clients ([`crate::xmpp_human`], [`crate::matrix_human`]):
//! a child process driven by JSON lines.
//!
//! Each command is one JSON object on the child's stdin, `{"cmd": ..., "req": N, ...}`, answered
//! by an `{"event": "ok" | "error", "req": N, ...}` line on its stdout; every other line is an
//! event (`{"event": ..., ...}`) of the client's own. Events that a wait did not ask for stay
//! buffered for later waits, so nothing is missed whatever order a test looks in. The child's
//! stderr goes to the test's stderr.

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

/// A child process that takes commands and reports events as JSON lines.
#[derive(Debug)]
pub struct JsonlChild {
    /// How errors name the client, e.g. `xmpp_human alice@localhost`.
    label: String,
    child: Child,
    stdin: ChildStdin,
    events: mpsc::UnboundedReceiver<Value>,
    buffer: VecDeque<Value>,
    next_req: u64,
}

impl JsonlChild {
    /// Spawns `cmd` with piped stdin and stdout (stderr inherited; killed on drop). `label`
    /// names the client in errors.
    pub fn spawn(mut cmd: Command, label: String) -> Result<Self> {
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("{label}: starting {cmd:?}"))?;
        let stdin = child.stdin.take().context("child stdin")?;
        let stdout = child.stdout.take().context("child stdout")?;

        // One task turns stdout lines into events; the channel closes when the child exits.
        let (tx, events) = mpsc::unbounded_channel();
        let who = label.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let event = serde_json::from_str(&line).unwrap_or_else(|e| {
                    eprintln!("{who}: not JSON ({e}): {line}");
                    json!({ "event": "bad_line", "line": line })
                });
                if tx.send(event).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            label,
            child,
            stdin,
            events,
            buffer: VecDeque::new(),
            next_req: 1,
        })
    }

    /// How errors name the client.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Waits for the start-up event: `ready`, or an `error` without `req` (a failed login),
    /// which becomes the error.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<Value> {
        let first = self
            .next_event(
                |e| e["event"] == "ready" || (e["event"] == "error" && e["req"].is_null()),
                timeout,
            )
            .await?;
        if first["event"] == "error" {
            bail!("{}: {}", self.label, first["message"]);
        }
        Ok(first)
    }

    /// Sends command `cmd` with the fields of `args` (an object, or null) and returns its `ok`
    /// reply; an `error` reply, or none within `timeout`, is an error.
    pub async fn command(&mut self, cmd: &str, args: Value, timeout: Duration) -> Result<Value> {
        let req = self.next_req;
        self.next_req += 1;
        let mut line = match args {
            Value::Object(map) => map,
            Value::Null => serde_json::Map::new(),
            other => bail!("command arguments must be an object, not {other}"),
        };
        line.insert("cmd".into(), cmd.into());
        line.insert("req".into(), req.into());
        let mut text = Value::Object(line).to_string();
        text.push('\n');
        self.stdin
            .write_all(text.as_bytes())
            .await
            .with_context(|| format!("{}: writing {cmd}", self.label))?;
        self.stdin.flush().await?;
        let reply = self
            .next_event(
                |e| e["req"] == req && (e["event"] == "ok" || e["event"] == "error"),
                timeout,
            )
            .await
            .with_context(|| format!("{}: command {cmd}", self.label))?;
        if reply["event"] == "error" {
            bail!("{}: {cmd} failed: {}", self.label, reply["message"]);
        }
        Ok(reply)
    }

    /// The next event `filter` accepts (buffered ones first); the others stay buffered.
    pub async fn next_event(
        &mut self,
        mut filter: impl FnMut(&Value) -> bool,
        timeout: Duration,
    ) -> Result<Value> {
        if let Some(i) = self.buffer.iter().position(&mut filter) {
            return Ok(self.buffer.remove(i).expect("position is in range"));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Err(_) => bail!(
                    "{}: no matching event within {timeout:?}; unmatched: {}",
                    self.label,
                    self.describe_buffer()
                ),
                Ok(None) => {
                    let status = self.child.try_wait().ok().flatten();
                    bail!(
                        "{} exited ({status:?}) before a matching event; unmatched: {}",
                        self.label,
                        self.describe_buffer()
                    )
                }
                Ok(Some(event)) if filter(&event) => return Ok(event),
                Ok(Some(event)) => self.buffer.push_back(event),
            }
        }
    }

    /// Takes every event received so far (buffered and pending).
    pub fn drain(&mut self) -> Vec<Value> {
        while let Ok(event) = self.events.try_recv() {
            self.buffer.push_back(event);
        }
        self.buffer.drain(..).collect()
    }

    /// Sends `quit`, closes stdin and waits (at most `timeout`) for a successful exit.
    pub async fn quit(mut self, timeout: Duration) -> Result<()> {
        self.command("quit", Value::Null, timeout).await?;
        drop(self.stdin);
        let status = tokio::time::timeout(timeout, self.child.wait())
            .await
            .map_err(|_| anyhow!("{} did not exit after quit", self.label))??;
        anyhow::ensure!(status.success(), "{} exited with {status}", self.label);
        Ok(())
    }

    fn describe_buffer(&self) -> String {
        if self.buffer.is_empty() {
            return "none".into();
        }
        self.buffer
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n  ")
    }
}
