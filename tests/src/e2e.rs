//! The end-to-end rig shared by the fault test (`tests/faults_e2e.rs`) and `bench e2e`: a
//! Prosody and a Synapse of the rig's own, the real `bridge` binary as a child process linking
//! `n` MUCs with `n` Matrix rooms (XMPP adapter in component mode, Matrix adapter in appservice
//! mode), and on each side the people who talk and read there:
//!
//! - [`XmppUser`]: an ordinary XMPP account on c2s (the bridge's own client connection code,
//!   `bridge_xmpp::client`, which reconnects by itself), an occupant of its MUC. It sends a
//!   numbered sequence as a careful client does: each message is confirmed by the room's
//!   reflection; after its session ended with messages unconfirmed, it looks in the room's
//!   archive (XEP-0313) for which of them the room took and sends only the others again, in
//!   order. It reads the whole archive back for the counts.
//! - [`MatrixUser`]: an ordinary Matrix account (plain client-server API with reqwest). It
//!   sends with a transaction ID per message and repeats a failed send with the same ID until
//!   the homeserver accepts it; it reads the room's history back through `/messages`.
//!
//! Message bodies are `"<dir> r<room> <i>"` with `dir` `x2m` (said in the MUC) or `m2x` (said
//! in the Matrix room); [`Rig::count`] counts, per room and direction, what the receiving side's
//! history holds from the other network (the bridge's ghost in Matrix, its puppet in the MUC).

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use bridge_xmpp::client::{ClientSettings, spawn_client};
use bridge_xmpp::mam::{self, MamItem};
use bridge_xmpp::muc;
use bridge_xmpp::stream::{Outgoing, StreamEvent};
use bridge_xmpp::wire::NS_CLIENT;
use bridge_xmpp::xml::Attrs as _;
use parking_lot::Mutex;
use serde_json::{Value, json};

use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use xmpp_parsers::minidom::Element;

use crate::matrix_rig::{BOT, SequenceCount, count_sequence};
use crate::prosody::Prosody;
use crate::synapse::Synapse;

/// The MUC service of the test Prosody.
pub const MUC_DOMAIN: &str = "conference.localhost";
/// The password of every XMPP account the rig creates.
const XMPP_PASSWORD: &str = "e2e-password";
/// The Matrix test users (tests/servers/synapse_setup.py), one per room in turn.
const MATRIX_USERS: [(&str, &str); 3] = [
    ("alice", "alicepass"),
    ("bob", "bobpass"),
    ("carol", "carolpass"),
];
/// How long one wait of the rig (a server's start, a join, a query) may take.
const WAIT: Duration = Duration::from_secs(60);
/// How long an XMPP query may take before it counts as lost (the server went away).
const IQ_TIMEOUT: Duration = Duration::from_secs(10);
/// The newest archived messages an XMPP sender looks through after its session ended, for
/// the messages it had not seen confirmed.
const RECHECK_DEPTH: usize = 500;
/// The largest archive page the rig's Prosody serves (`max_archive_query_results`).
const MAM_PAGE: usize = 1000;

/// Global settings put in front of the test Prosody's config (globals must come before the
/// first `VirtualHost`):
///
/// - `nagle = false`: otherwise a stanza written right after another waits for the ACK of the
///   first (up to 40 ms); docs/operations.md tells deployments to set it too.
/// - the internal storage caps a room archive at 10,000 messages by default and rewrites the
///   whole file per message past that;
/// - archive pages of up to [`MAM_PAGE`] messages (50 by default), for reading the rooms back.
const PROSODY_GLOBALS: &str = "-- added by bridge_tests::e2e\n\
    network_settings = { nagle = false }\n\
    storage_archive_item_limit = 1000000\n\
    max_archive_query_results = 1000\n";

/// The ports a rig uses.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    /// Prosody's c2s listener.
    pub c2s: u16,
    /// Prosody's component listener.
    pub component: u16,
    /// Prosody's HTTP listener (file upload).
    pub prosody_http: u16,
    /// Synapse's client listener.
    pub synapse: u16,
    /// Where Synapse pushes application service transactions (the bridge listens).
    pub appservice: u16,
    /// The bridge's HTTP listener (`/health/ready`, `/metrics`).
    pub bridge_http: u16,
}

impl Ports {
    /// Fails naming the first port something already listens on.
    pub fn check_free(&self) -> Result<()> {
        for port in [
            self.c2s,
            self.component,
            self.prosody_http,
            self.synapse,
            self.appservice,
            self.bridge_http,
        ] {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                bail!("something already listens on 127.0.0.1:{port}, which the rig needs");
            }
        }
        Ok(())
    }
}

/// One linked pair: a MUC and a Matrix room, and the person who talks in each.
#[derive(Debug, Clone)]
pub struct RoomPair {
    /// 0, 1, …
    pub index: usize,
    /// The MUC's bare JID.
    pub muc: String,
    /// The Matrix room's ID.
    pub matrix: String,
    /// The XMPP account's local part (it is also its nick in the MUC).
    pub xmpp_user: String,
    /// The Matrix user who created the room and talks in it.
    pub matrix_user: MatrixUser,
}

impl RoomPair {
    /// The body of message `i` said in the MUC.
    pub fn x2m_body(&self, i: usize) -> String {
        format!("{}{i}", self.x2m_prefix())
    }

    /// What every message said in this room's MUC starts with.
    pub fn x2m_prefix(&self) -> String {
        format!("x2m r{} ", self.index)
    }

    /// The body of message `i` said in the Matrix room.
    pub fn m2x_body(&self, i: usize) -> String {
        format!("{}{i}", self.m2x_prefix())
    }

    /// What every message said in this room's Matrix room starts with.
    pub fn m2x_prefix(&self) -> String {
        format!("m2x r{} ", self.index)
    }
}

/// The servers, the bridge's configuration and the linked rooms.
#[derive(Debug)]
pub struct Rig {
    /// The rig's Prosody.
    pub prosody: Prosody,
    /// The rig's Synapse.
    pub synapse: Synapse,
    /// The linked rooms.
    pub rooms: Vec<RoomPair>,
    /// The bridge's config file.
    pub config: PathBuf,
    /// The bridge's log (every life of it).
    pub log: PathBuf,
    /// The `bridge` binary.
    pub binary: PathBuf,
    /// The ports in use.
    pub ports: Ports,
    _dir: tempfile::TempDir,
}

impl Rig {
    /// Starts Prosody and Synapse on `ports`, creates `rooms` Matrix rooms (their creators
    /// invite the bridge bot and make it a moderator), the XMPP accounts, and writes the
    /// bridge's config (`log_level` for its log). The bridge is not started.
    pub async fn start(
        ports: Ports,
        rooms: usize,
        binary: PathBuf,
        log_level: &str,
    ) -> Result<Self> {
        ports.check_free()?;
        // The Matrix adapter's client installs the rustls provider reqwest needs.
        let _ = bridge_matrix::homeserver::Homeserver::new("http://127.0.0.1", "-", false);
        let prosody = tokio::task::spawn_blocking(move || {
            Prosody::start_with(ports.c2s, ports.component, ports.prosody_http, |text| {
                // Rooms survive a restart of the server (as docs/operations.md recommends).
                let text = text.replace(
                    "muc_room_default_persistent = false",
                    "muc_room_default_persistent = true",
                );
                format!("{PROSODY_GLOBALS}{text}")
            })
        })
        .await??;
        let synapse =
            tokio::task::spawn_blocking(move || Synapse::start(ports.synapse, ports.appservice))
                .await??;
        let dir = tempfile::tempdir()?;
        let mut pairs = Vec::new();
        let mut users: HashMap<&str, MatrixUser> = HashMap::new();
        for index in 0..rooms {
            let (name, password) = MATRIX_USERS[index % MATRIX_USERS.len()];
            if !users.contains_key(name) {
                users.insert(
                    name,
                    MatrixUser::login(&synapse.url(), name, password).await?,
                );
            }
            let user = users[name].clone();
            let matrix = user
                .create_bridged_room(&format!("e2e room {index}"))
                .await?;
            let xmpp_user = format!("xuser{index}");
            prosody.register(&xmpp_user, XMPP_PASSWORD)?;
            prosody.register(&format!("xreader{index}"), XMPP_PASSWORD)?;
            pairs.push(RoomPair {
                index,
                muc: format!("e2e-room{index}@{MUC_DOMAIN}"),
                matrix,
                xmpp_user,
                matrix_user: user,
            });
        }
        let config = dir.path().join("bridge.toml");
        let mut toml = format!(
            "[bridge]\ndata_dir = \"{data}\"\nlog_level = \"{log_level}\"\n\
             http_addr = \"127.0.0.1:{http}\"\nworker_threads = {threads}\n\n\
             # Retries: an outage of a server here lasts seconds, not minutes.\n\
             [delivery]\nmax_attempts = 10000\nbackoff_max_ms = 2000\n\n\
             [[adapter]]\nid = \"xmpp\"\ntype = \"xmpp\"\nmode = \"component\"\n\
             server = \"127.0.0.1:{component}\"\ndomain = \"bridge.localhost\"\n\
             secret = \"bridgesecret\"\n\n\
             [[adapter]]\nid = \"matrix\"\ntype = \"matrix\"\n{matrix}\n",
            data = dir.path().join("data").display(),
            http = ports.bridge_http,
            // BRIDGE_TEST_WORKER_THREADS: another runtime than the default (1), to compare.
            threads = std::env::var("BRIDGE_TEST_WORKER_THREADS")
                .ok()
                .and_then(|v| v.parse::<u16>().ok())
                .unwrap_or(1),
            component = ports.component,
            matrix = crate::matrix_rig::appservice_settings(
                dir.path(),
                &synapse.url(),
                ports.appservice
            ),
        );
        for pair in &pairs {
            toml.push_str(&format!(
                "\n[[room]]\nid = \"room{i}\"\n[[room.link]]\nadapter = \"xmpp\"\nremote = \"{muc}\"\n\
                 [[room.link]]\nadapter = \"matrix\"\nremote = \"{matrix}\"\n",
                i = pair.index,
                muc = pair.muc,
                matrix = pair.matrix,
            ));
        }
        std::fs::write(&config, toml)?;
        Ok(Self {
            prosody,
            synapse,
            rooms: pairs,
            log: dir.path().join("bridge.log"),
            config,
            binary,
            ports,
            _dir: dir,
        })
    }

    /// Starts the bridge (it is not ready yet: see [`Rig::wait_ready`]).
    pub fn start_bridge(&self) -> Result<Bridge> {
        Bridge::start(&self.binary, &self.config, &self.log)
    }

    /// Waits until the bridge's `/health/ready` answers 200 (every adapter connected).
    pub async fn wait_ready(&self, bridge: &mut Bridge, limit: Duration) -> Result<()> {
        let url = format!("http://127.0.0.1:{}/health/ready", self.ports.bridge_http);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = bridge.process.child.try_wait()? {
                bail!(
                    "the bridge exited ({status}); its log:\n{}",
                    tail(&self.log, 30)
                );
            }
            if let Ok(r) = http.get(&url).send().await
                && r.status() == reqwest::StatusCode::OK
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the bridge was not ready within {limit:?}; its log:\n{}",
                    tail(&self.log, 30)
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until the bridge bot has joined every Matrix room.
    pub async fn wait_bot_joined(&self) -> Result<()> {
        let deadline = Instant::now() + WAIT;
        for pair in &self.rooms {
            while !pair.matrix_user.joined(&pair.matrix, BOT).await? {
                if Instant::now() > deadline {
                    bail!("the bridge bot did not join {}", pair.matrix);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(())
    }

    /// Connects the XMPP user of every room and joins them to their MUCs.
    pub async fn xmpp_users(&self) -> Result<Vec<Arc<XmppUser>>> {
        self.xmpp_occupants(|pair| pair.xmpp_user.clone()).await
    }

    /// Connects a second XMPP account in every room (`xreader<i>`), one that only listens.
    pub async fn xmpp_readers(&self) -> Result<Vec<Arc<XmppUser>>> {
        self.xmpp_occupants(|pair| format!("xreader{}", pair.index))
            .await
    }

    async fn xmpp_occupants(
        &self,
        name: impl Fn(&RoomPair) -> String,
    ) -> Result<Vec<Arc<XmppUser>>> {
        let mut users = Vec::new();
        for pair in &self.rooms {
            let name = name(pair);
            let user = XmppUser::connect(
                &format!("{name}@localhost"),
                XMPP_PASSWORD,
                &format!("127.0.0.1:{}", self.ports.c2s),
                &pair.muc,
                &name,
            );
            user.wait_joined(WAIT).await?;
            users.push(Arc::new(user));
        }
        Ok(users)
    }

    /// Counts, per room, what crossed: XMPP → Matrix in the Matrix room's history (from the
    /// bridge's ghosts), Matrix → XMPP in the MUC's archive (from the bridge's puppets), each
    /// against `sent` messages per room and direction; and the sources (what each sender's own
    /// server holds of its own messages, which must be whole for the counts to mean anything).
    pub async fn count(
        &self,
        xmpp: &[Arc<XmppUser>],
        x2m_sent: usize,
        m2x_sent: usize,
    ) -> Result<Vec<RoomCount>> {
        let mut out = Vec::new();
        for (pair, user) in self.rooms.iter().zip(xmpp) {
            let history = pair.matrix_user.history(&pair.matrix).await?;
            let ghost_bodies: Vec<&str> = history
                .iter()
                .filter(|(sender, _)| sender.starts_with("@_bridge_"))
                .map(|(_, body)| body.as_str())
                .collect();
            let own_bodies: Vec<&str> = history
                .iter()
                .filter(|(sender, _)| *sender == pair.matrix_user.user_id)
                .map(|(_, body)| body.as_str())
                .collect();
            let archive = user.archive().await?;
            let puppet_bodies: Vec<&str> = archive
                .iter()
                .filter(|(nick, _)| *nick != pair.xmpp_user)
                .map(|(_, body)| body.as_str())
                .collect();
            let xmpp_own: Vec<&str> = archive
                .iter()
                .filter(|(nick, _)| *nick == pair.xmpp_user)
                .map(|(_, body)| body.as_str())
                .collect();
            out.push(RoomCount {
                x2m: count_sequence(&ghost_bodies, &pair.x2m_prefix(), x2m_sent),
                m2x: count_sequence(&puppet_bodies, &pair.m2x_prefix(), m2x_sent),
                x2m_source: count_sequence(&xmpp_own, &pair.x2m_prefix(), x2m_sent),
                m2x_source: count_sequence(&own_bodies, &pair.m2x_prefix(), m2x_sent),
                x2m_missing: missing(&ghost_bodies, &pair.x2m_prefix(), x2m_sent),
                m2x_missing: missing(&puppet_bodies, &pair.m2x_prefix(), m2x_sent),
                disorder: disorder(&ghost_bodies, &pair.x2m_prefix())
                    .into_iter()
                    .chain(disorder(&puppet_bodies, &pair.m2x_prefix()))
                    .collect(),
                echoes: ghost_bodies
                    .iter()
                    .filter(|b| b.starts_with(&pair.m2x_prefix()))
                    .count()
                    + puppet_bodies
                        .iter()
                        .filter(|b| b.starts_with(&pair.x2m_prefix()))
                        .count(),
            });
        }
        Ok(out)
    }
}

/// What [`Rig::count`] found in one room.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomCount {
    /// Said in the MUC, found in the Matrix room from a ghost.
    pub x2m: SequenceCount,
    /// Said in the Matrix room, found in the MUC's archive from a puppet.
    pub m2x: SequenceCount,
    /// The XMPP sender's own messages in the MUC's archive.
    pub x2m_source: SequenceCount,
    /// The Matrix sender's own messages in the Matrix room.
    pub m2x_source: SequenceCount,
    /// Messages that came back to the network they were said in, from the bridge.
    pub echoes: usize,
    /// The numbers of the messages said in the MUC that are not in the Matrix room.
    pub x2m_missing: Vec<usize>,
    /// The numbers of the messages said in the Matrix room that are not in the MUC.
    pub m2x_missing: Vec<usize>,
    /// Where the order broke: the numbers around each place a number was not above the one
    /// before (XMPP → Matrix, then Matrix → XMPP).
    pub disorder: Vec<String>,
}

/// The numbers around each place in `bodies` where a number of the sequence `"<prefix><i>"`
/// is not above the one before.
pub fn disorder(bodies: &[&str], prefix: &str) -> Vec<String> {
    let numbers: Vec<usize> = bodies
        .iter()
        .filter_map(|b| b.strip_prefix(prefix)?.parse().ok())
        .collect();
    numbers
        .windows(2)
        .enumerate()
        .filter(|(_, w)| w[1] <= w[0])
        .map(|(at, _)| {
            let from = at.saturating_sub(3);
            let to = (at + 5).min(numbers.len());
            format!("{prefix}…: {:?}", &numbers[from..to])
        })
        .collect()
}

/// The numbers in 0..n of the sequence `"<prefix><i>"` that `bodies` lacks.
pub fn missing(bodies: &[&str], prefix: &str, n: usize) -> Vec<usize> {
    let seen: HashSet<usize> = bodies
        .iter()
        .filter_map(|b| b.strip_prefix(prefix)?.parse().ok())
        .collect();
    (0..n).filter(|i| !seen.contains(i)).collect()
}

/// The last `n` lines of a log file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A `bridge run` child process, killed when dropped, with its PID and start time.
#[derive(Debug)]
pub struct Bridge {
    process: crate::BridgeProcess,
    /// Its process ID.
    pub pid: u32,
    /// When it was spawned.
    pub started: Instant,
}

impl Bridge {
    /// Starts `binary run -c config`, appending its output to `log`.
    pub fn start(binary: &Path, config: &Path, log: &Path) -> Result<Self> {
        let started = Instant::now();
        let process = crate::BridgeProcess::start_binary(binary, config, log)
            .with_context(|| format!("starting {}", binary.display()))?;
        let pid = process.pid().context("the bridge exited at once")?;
        Ok(Self {
            process,
            pid,
            started,
        })
    }

    /// SIGKILL: no chance to flush or say goodbye.
    pub async fn kill9(self) -> Result<()> {
        Ok(self.process.kill9().await?)
    }

    /// SIGTERM, then waits (at most 30 s) for the exit; whether it exited successfully.
    pub async fn terminate(mut self) -> Result<bool> {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status();
        let child = &mut self.process.child;
        match tokio::time::timeout(Duration::from_secs(30), child.wait()).await {
            Ok(status) => Ok(status?.success()),
            Err(_) => {
                child.start_kill()?;
                child.wait().await?;
                Ok(false)
            }
        }
    }
}

/// An ordinary Matrix account on the client-server API.
#[derive(Debug, Clone)]
pub struct MatrixUser {
    http: reqwest::Client,
    base: String,
    token: String,
    /// `@name:localhost`.
    pub user_id: String,
}

impl MatrixUser {
    /// Logs in with a password.
    pub async fn login(base: &str, user: &str, password: &str) -> Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build()?;
        let mut this = Self {
            http,
            base: base.to_owned(),
            token: String::new(),
            user_id: String::new(),
        };
        let answer = this
            .call(
                reqwest::Method::POST,
                &["login"],
                &[],
                Some(&json!({
                    "type": "m.login.password",
                    "identifier": { "type": "m.id.user", "user": user },
                    "password": password,
                })),
            )
            .await?;
        this.token = answer["access_token"]
            .as_str()
            .with_context(|| format!("login answered {answer}"))?
            .to_owned();
        this.user_id = answer["user_id"].as_str().unwrap_or_default().to_owned();
        Ok(this)
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &[&str],
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Value> {
        let mut url = reqwest::Url::parse(&self.base)?;
        url.path_segments_mut()
            .map_err(|()| anyhow::anyhow!("bad base URL"))?
            .extend(["_matrix", "client", "v3"])
            .extend(path);
        for (k, v) in query {
            url.query_pairs_mut().append_pair(k, v);
        }
        let mut request = self.http.request(method, url);
        if !self.token.is_empty() {
            request = request.bearer_auth(&self.token);
        }
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(serde_json::to_vec(body)?);
        }
        let response = request.send().await?;
        let status = response.status();
        let bytes = response.bytes().await?;
        if !status.is_success() {
            bail!(
                "{}: {status} {}",
                path.join("/"),
                String::from_utf8_lossy(&bytes)
            );
        }
        Ok(serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// A public room with the bridge bot invited and made a moderator; its ID.
    pub async fn create_bridged_room(&self, name: &str) -> Result<String> {
        let answer = self
            .call(
                reqwest::Method::POST,
                &["createRoom"],
                &[],
                Some(&json!({
                    "preset": "public_chat", "name": name, "invite": [BOT],
                    "power_level_content_override": { "users": { BOT: 100 } },
                })),
            )
            .await?;
        answer["room_id"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("createRoom answered {answer}"))
    }

    /// Joins a public room.
    pub async fn join(&self, room: &str) -> Result<()> {
        self.call(
            reqwest::Method::POST,
            &["join", room],
            &[],
            Some(&json!({})),
        )
        .await
        .map(|_| ())
    }

    /// Follows `/sync` from now on in a task: every text message of every joined room, with
    /// when it was received (room, sender, body), until the returned token is cancelled.
    pub fn follow(&self) -> (Arc<Mutex<Vec<Synced>>>, CancellationToken) {
        let seen: Arc<Mutex<Vec<Synced>>> = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let (this, out, token) = (self.clone(), seen.clone(), stop.clone());
        tokio::spawn(async move {
            let mut since: Option<String> = None;
            loop {
                let mut query = vec![("timeout", "30000".to_owned())];
                if let Some(since) = &since {
                    query.push(("since", since.clone()));
                } else {
                    query.push(("filter", r#"{"room":{"timeline":{"limit":1}}}"#.to_owned()));
                }
                let query: Vec<(&str, &str)> =
                    query.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let reply = tokio::select! {
                    () = token.cancelled() => return,
                    r = this.call(reqwest::Method::GET, &["sync"], &query, None) => r,
                };
                let Ok(reply) = reply else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                };
                let at = Instant::now();
                if since.is_some()
                    && let Some(rooms) = reply["rooms"]["join"].as_object()
                {
                    let mut out = out.lock();
                    for (room, data) in rooms {
                        for e in data["timeline"]["events"]
                            .as_array()
                            .map(Vec::as_slice)
                            .unwrap_or_default()
                        {
                            if e["type"] == "m.room.message"
                                && let (Some(sender), Some(body)) =
                                    (e["sender"].as_str(), e["content"]["body"].as_str())
                            {
                                out.push(Synced {
                                    at,
                                    room: room.clone(),
                                    sender: sender.to_owned(),
                                    body: body.to_owned(),
                                });
                            }
                        }
                    }
                }
                since = reply["next_batch"].as_str().map(str::to_owned);
            }
        });
        (seen, stop)
    }

    /// Whether `user` is joined to `room`.
    pub async fn joined(&self, room: &str, user: &str) -> Result<bool> {
        let answer = self
            .call(
                reqwest::Method::GET,
                &["rooms", room, "joined_members"],
                &[],
                None,
            )
            .await?;
        Ok(answer["joined"].get(user).is_some())
    }

    /// Sends a text message with transaction ID `txn`, once.
    pub async fn send_text(&self, room: &str, txn: &str, body: &str) -> Result<String> {
        let answer = self
            .call(
                reqwest::Method::PUT,
                &["rooms", room, "send", "m.room.message", txn],
                &[],
                Some(&json!({ "msgtype": "m.text", "body": body })),
            )
            .await?;
        Ok(answer["event_id"].as_str().unwrap_or_default().to_owned())
    }

    /// Sends as a client does that must not lose a message: the same transaction ID again
    /// after any failure (the homeserver down, restarting, a lost answer), until accepted or
    /// `limit` passed. Returns how many attempts failed.
    pub async fn send_until_accepted(
        &self,
        room: &str,
        txn: &str,
        body: &str,
        limit: Duration,
    ) -> Result<u32> {
        let deadline = Instant::now() + limit;
        let mut failures = 0;
        loop {
            match self.send_text(room, txn, body).await {
                Ok(_) => return Ok(failures),
                Err(e) => {
                    failures += 1;
                    if Instant::now() > deadline {
                        return Err(e.context(format!("{txn} not accepted within {limit:?}")));
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
    }

    /// Every text message of the room's history, oldest first: (sender, body).
    pub async fn history(&self, room: &str) -> Result<Vec<(String, String)>> {
        let mut from: Option<String> = None;
        let mut all = Vec::new();
        // Each body's event, to show both copies of a body that comes twice (which events they
        // are tells a repeated send from a repeated read).
        let mut bodies = std::collections::HashMap::new();
        loop {
            let mut query = vec![("dir", "b"), ("limit", "1000")];
            if let Some(from) = &from {
                query.push(("from", from.as_str()));
            }
            let reply = self
                .call(
                    reqwest::Method::GET,
                    &["rooms", room, "messages"],
                    &query,
                    None,
                )
                .await?;
            let events = reply["chunk"].as_array().cloned().unwrap_or_default();
            for e in &events {
                if e["type"] == "m.room.message"
                    && let (Some(sender), Some(body)) =
                        (e["sender"].as_str(), e["content"]["body"].as_str())
                {
                    let brief = |e: &Value| {
                        json!({
                            "event_id": e["event_id"], "sender": e["sender"],
                            "ts": e["origin_server_ts"], "unsigned": e["unsigned"],
                        })
                    };
                    if let Some(other) = bodies.insert(body.to_owned(), brief(e)) {
                        println!(
                            "history of {room}: {body:?} twice: {} and {other}",
                            brief(e)
                        );
                    }
                    all.push((sender.to_owned(), body.to_owned()));
                }
            }
            match reply["end"].as_str() {
                Some(end) if !events.is_empty() => from = Some(end.to_owned()),
                _ => break,
            }
        }
        all.reverse();
        Ok(all)
    }

    /// The text messages among the newest `limit` events of the room, oldest first.
    pub async fn recent(&self, room: &str, limit: u32) -> Result<Vec<(String, String)>> {
        let limit = limit.to_string();
        let reply = self
            .call(
                reqwest::Method::GET,
                &["rooms", room, "messages"],
                &[("dir", "b"), ("limit", &limit)],
                None,
            )
            .await?;
        let mut out: Vec<(String, String)> = reply["chunk"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter(|e| e["type"] == "m.room.message")
            .filter_map(|e| {
                Some((
                    e["sender"].as_str()?.to_owned(),
                    e["content"]["body"].as_str()?.to_owned(),
                ))
            })
            .collect();
        out.reverse();
        Ok(out)
    }
}

/// A message a [`MatrixUser::follow`] saw.
#[derive(Debug, Clone)]
pub struct Synced {
    /// When the sync answer carrying it came.
    pub at: Instant,
    /// The room's ID.
    pub room: String,
    /// Its sender.
    pub sender: String,
    /// Its body.
    pub body: String,
}

/// What the connection task of an [`XmppUser`] has seen.
#[derive(Debug, Default)]
struct XmppState {
    /// Our full JID in the current session.
    full_jid: String,
    /// Sessions so far (1 after the first login).
    session: u64,
    /// In the MUC in the current session.
    joined: bool,
    /// The `id`s of our own messages the room reflected.
    reflected: HashSet<String>,
    /// Other occupants' messages received live, in order: when, nick, body.
    received: Vec<(Instant, String, String)>,
    /// IQ answers awaited, by id.
    iqs: HashMap<String, oneshot::Sender<Element>>,
    /// Archive results, by query id.
    mam: HashMap<String, Vec<MamItem>>,
}

/// An XMPP account on c2s, an occupant of one MUC (see the module documentation).
#[derive(Debug)]
pub struct XmppUser {
    /// The bare JID.
    pub jid: String,
    /// The MUC's bare JID.
    pub room: String,
    /// Our nick there.
    pub nick: String,
    out: mpsc::Sender<Outgoing>,
    state: Arc<Mutex<XmppState>>,
    changed: Arc<Notify>,
    shutdown: CancellationToken,
    next_id: std::sync::atomic::AtomicU64,
}

impl Drop for XmppUser {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl XmppUser {
    /// Starts the connection (it reconnects by itself) and joins `room` as `nick` in every
    /// session.
    pub fn connect(jid: &str, password: &str, server: &str, room: &str, nick: &str) -> Self {
        let shutdown = CancellationToken::new();
        let mut handle = spawn_client(
            ClientSettings {
                jid: jid.to_owned(),
                password: password.to_owned(),
                server: Some(server.to_owned()),
                insecure_tcp: true,
                resource: Some("e2e".to_owned()),
            },
            shutdown.clone(),
        );
        let state = Arc::new(Mutex::new(XmppState::default()));
        let changed = Arc::new(Notify::new());
        let out = handle.out.clone();
        let (task_state, task_changed) = (state.clone(), changed.clone());
        let (room_owned, nick_owned) = (room.to_owned(), nick.to_owned());
        tokio::spawn(async move {
            while let Some(event) = handle.events.recv().await {
                match event {
                    StreamEvent::Online { jid } => {
                        {
                            let mut st = task_state.lock();
                            st.full_jid = jid;
                            st.session += 1;
                            st.joined = false;
                        }
                        let join = muc::join(None, &room_owned, &nick_owned, None);
                        let _ = handle.out.send(join.into()).await;
                    }
                    StreamEvent::Offline { .. } => {
                        let mut st = task_state.lock();
                        st.joined = false;
                        st.iqs.clear();
                    }
                    StreamEvent::Stanza(el) => {
                        handle_stanza(&task_state, &room_owned, &nick_owned, &el);
                    }
                    StreamEvent::Skipped { .. } => {}
                }
                task_changed.notify_waiters();
            }
        });
        Self {
            jid: jid.to_owned(),
            room: room.to_owned(),
            nick: nick.to_owned(),
            out,
            state,
            changed,
            shutdown,
            next_id: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Waits until `done` holds for the state, or `limit` passes (false then).
    async fn until(&self, limit: Duration, mut done: impl FnMut(&XmppState) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if done(&self.state.lock()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return done(&self.state.lock());
            }
        }
    }

    /// Waits until we are in the MUC; returns the session's number.
    pub async fn wait_joined(&self, limit: Duration) -> Result<u64> {
        if !self.until(limit, |st| st.joined).await {
            bail!(
                "{} did not get into {} within {limit:?}",
                self.jid,
                self.room
            );
        }
        Ok(self.state.lock().session)
    }

    /// Other occupants' messages received live so far: when, nick, body.
    pub fn received(&self) -> Vec<(Instant, String, String)> {
        self.state.lock().received.clone()
    }

    /// Says `body` once, with `id`, without waiting for anything.
    pub async fn say(&self, id: &str, body: &str) -> Result<()> {
        self.send_message(id, body).await
    }

    fn new_id(&self, what: &str) -> String {
        let n = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{what}-{n}")
    }

    /// Sends a groupchat message with `id` (also as XEP-0359 origin-id).
    async fn send_message(&self, id: &str, body: &str) -> Result<()> {
        let el = Element::builder("message", NS_CLIENT)
            .with("to", &self.room)
            .with("type", "groupchat")
            .with("id", id)
            .append(
                Element::builder("body", NS_CLIENT)
                    .append(body.to_owned())
                    .build(),
            )
            .append(
                Element::builder("origin-id", "urn:xmpp:sid:0")
                    .with("id", id)
                    .build(),
            )
            .build();
        self.out
            .send(el.into())
            .await
            .map_err(|_| anyhow::anyhow!("{}: the connection task ended", self.jid))
    }

    /// Sends an IQ and waits for its answer.
    async fn iq(&self, mut el: Element) -> Result<Element> {
        let id = self.new_id("iq");
        bridge_xmpp::xml::set_attr(&mut el, "id", &id);
        let (tx, rx) = oneshot::channel();
        self.state.lock().iqs.insert(id.clone(), tx);
        self.out
            .send(el.into())
            .await
            .map_err(|_| anyhow::anyhow!("{}: the connection task ended", self.jid))?;
        match tokio::time::timeout(IQ_TIMEOUT, rx).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => bail!("{}: the session ended before the answer", self.jid),
            Err(_) => {
                self.state.lock().iqs.remove(&id);
                bail!("{}: no answer within {IQ_TIMEOUT:?}", self.jid)
            }
        }
    }

    /// One archive query: `set` is the RSM element; returns the results and the `<fin/>`.
    async fn mam_query(&self, set: Element) -> Result<(Vec<MamItem>, mam::Fin)> {
        let query_id = self.new_id("q");
        let query = Element::builder("query", "urn:xmpp:mam:2")
            .with("queryid", &query_id)
            .append(set)
            .build();
        let iq = Element::builder("iq", NS_CLIENT)
            .with("type", "set")
            .with("to", &self.room)
            .append(query)
            .build();
        let answer = self.iq(iq).await?;
        let fin = mam::parse_fin(&answer).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let items = self.state.lock().mam.remove(&query_id).unwrap_or_default();
        Ok((items, fin))
    }

    /// The whole archive of the room, oldest first: (nick, body) of each message with a body.
    pub async fn archive(&self) -> Result<Vec<(String, String)>> {
        let mut after: Option<String> = None;
        let mut out = Vec::new();
        loop {
            let mut set = Element::builder("set", "http://jabber.org/protocol/rsm").append(
                Element::builder("max", "http://jabber.org/protocol/rsm")
                    .append(MAM_PAGE.to_string())
                    .build(),
            );
            if let Some(after) = &after {
                set = set.append(
                    Element::builder("after", "http://jabber.org/protocol/rsm")
                        .append(after.clone())
                        .build(),
                );
            }
            let (items, fin) = self.mam_query(set.build()).await?;
            for item in &items {
                let nick = item
                    .message
                    .attr("from")
                    .and_then(|f| f.split_once('/'))
                    .map(|(_, n)| n.to_owned())
                    .unwrap_or_default();
                if let Some(body) = item.message.get_child("body", NS_CLIENT) {
                    out.push((nick, body.text()));
                }
            }
            if fin.complete || items.is_empty() {
                break;
            }
            after = fin
                .last
                .or_else(|| items.last().map(|i| i.archive_id.clone()));
        }
        Ok(out)
    }

    /// The `id`s (and origin-ids) of our own messages among the newest `depth` archived ones.
    async fn archived_own_ids(&self, depth: usize) -> Result<HashSet<String>> {
        let set = Element::builder("set", "http://jabber.org/protocol/rsm")
            .append(
                Element::builder("max", "http://jabber.org/protocol/rsm")
                    .append(depth.to_string())
                    .build(),
            )
            .append(Element::builder("before", "http://jabber.org/protocol/rsm").build())
            .build();
        let (items, _) = self.mam_query(set).await?;
        let mut ids = HashSet::new();
        for item in items {
            let from_us = item
                .message
                .attr("from")
                .and_then(|f| f.split_once('/'))
                .is_some_and(|(_, n)| n == self.nick);
            if !from_us {
                continue;
            }
            if let Some(id) = item.message.attr("id") {
                ids.insert(id.to_owned());
            }
            if let Some(origin) = item.message.get_child("origin-id", "urn:xmpp:sid:0")
                && let Some(id) = origin.attr("id")
            {
                ids.insert(id.to_owned());
            }
        }
        Ok(ids)
    }

    /// Says `body(i)` for i in 0..n, at most `rate` messages/s (and at most `window`
    /// unconfirmed), as a careful client does (see the module documentation); returns how many
    /// messages were sent again after a session ended. Gives up after `limit` without progress.
    pub async fn say_all(
        &self,
        n: usize,
        body: impl Fn(usize) -> String,
        rate: f64,
        window: usize,
        limit: Duration,
    ) -> Result<usize> {
        let tag = self.new_id("say");
        let id_of = |i: usize| format!("{tag}-{i}");
        let started = tokio::time::Instant::now();
        let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
        let mut next = 0;
        let mut unconfirmed: VecDeque<usize> = VecDeque::new();
        let mut session = self.wait_joined(limit).await?;
        let mut resent = 0;
        let mut progress = Instant::now();
        while next < n || !unconfirmed.is_empty() {
            if progress.elapsed() > limit {
                bail!(
                    "{}: stuck at {next} of {n} sent, {} unconfirmed",
                    self.jid,
                    unconfirmed.len()
                );
            }
            let now_session = {
                let st = self.state.lock();
                if st.joined { Some(st.session) } else { None }
            };
            let Some(now_session) = now_session else {
                self.wait_joined(limit).await?;
                continue;
            };
            if now_session != session {
                // A new session: which of the unconfirmed messages did the room take?
                if !unconfirmed.is_empty() {
                    let archived = match self.archived_own_ids(RECHECK_DEPTH).await {
                        Ok(ids) => ids,
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            continue;
                        }
                    };
                    unconfirmed.retain(|&i| !archived.contains(&id_of(i)));
                    for &i in &unconfirmed {
                        self.send_message(&id_of(i), &body(i)).await?;
                        resent += 1;
                    }
                }
                session = now_session;
                progress = Instant::now();
                continue;
            }
            {
                let st = self.state.lock();
                while let Some(&i) = unconfirmed.front() {
                    if !st.reflected.contains(&id_of(i)) {
                        break;
                    }
                    unconfirmed.pop_front();
                    progress = Instant::now();
                }
            }
            let due = started + interval * u32::try_from(next).unwrap_or(u32::MAX);
            if next < n && unconfirmed.len() < window && tokio::time::Instant::now() >= due {
                self.send_message(&id_of(next), &body(next)).await?;
                unconfirmed.push_back(next);
                next += 1;
                continue;
            }
            let notified = self.changed.notified();
            let wake = if next < n && unconfirmed.len() < window {
                due
            } else {
                tokio::time::Instant::now() + Duration::from_millis(500)
            };
            let _ = tokio::time::timeout_at(wake, notified).await;
        }
        Ok(resent)
    }
}

/// One incoming stanza of an [`XmppUser`]'s connection.
fn handle_stanza(state: &Mutex<XmppState>, room: &str, nick: &str, el: &Element) {
    let mut st = state.lock();
    match el.name() {
        "presence" => {
            if let Some(p) = muc::occupant_presence(el)
                && p.room.eq_ignore_ascii_case(room)
                && p.self_presence
            {
                st.joined = p.available;
            }
        }
        "message" => {
            if let Some(item) = mam::parse_result(el, room) {
                st.mam.entry(item.query_id.clone()).or_default().push(item);
                return;
            }
            if el.attr("type") != Some("groupchat") {
                return;
            }
            let Some((from_room, from_nick)) = el.attr("from").and_then(|f| f.split_once('/'))
            else {
                return;
            };
            if !from_room.eq_ignore_ascii_case(room) {
                return;
            }
            if from_nick == nick {
                if let Some(id) = el.attr("id") {
                    st.reflected.insert(id.to_owned());
                }
            } else if let Some(body) = el.get_child("body", NS_CLIENT) {
                st.received
                    .push((Instant::now(), from_nick.to_owned(), body.text()));
            }
        }
        "iq" if matches!(el.attr("type"), Some("result" | "error")) => {
            if let Some(tx) = el.attr("id").and_then(|id| st.iqs.remove(id)) {
                let _ = tx.send(el.clone());
            }
        }
        _ => {}
    }
}
