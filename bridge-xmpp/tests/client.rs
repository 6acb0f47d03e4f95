//! The client (c2s) connection against a real Prosody.
//!
//! Most tests use the Prosody `scripts/test.sh` starts (`BRIDGE_TEST_XMPP_C2S`,
//! `BRIDGE_TEST_PROSODY_CONFIG`). The restart test starts and restarts its own Prosody on
//! ports 27222/27347/27280, the TLS test one with STARTTLS on 27232/27357/27290, both from the
//! same config template (`tests/servers/prosody.cfg.lua`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bridge_xmpp::client::{ClientSettings, spawn_client};
use bridge_xmpp::stream::{StreamEvent, StreamHandle};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use xmpp_parsers::minidom::Element;

const WAIT: Duration = Duration::from_secs(10);
const NS_MUC_USER: &str = "http://jabber.org/protocol/muc#user";

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests through scripts/test.sh, which starts Prosody")
    })
}

/// Logs for the test output (`RUST_LOG` overrides), captured per test by libtest.
fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "bridge_xmpp=debug,tokio_xmpp=info".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Creates (or resets) an account with `prosodyctl`.
fn register(config: &Path, user: &str, password: &str) {
    let output = Command::new("prosodyctl")
        .arg("--config")
        .arg(config)
        .args(["register", user, "localhost", password])
        .output()
        .unwrap_or_else(|e| panic!("running prosodyctl (is Prosody installed?): {e}"));
    assert!(
        output.status.success(),
        "prosodyctl register {user} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn settings(user: &str, password: &str, server: &str) -> ClientSettings {
    ClientSettings {
        jid: format!("{user}@localhost"),
        password: password.to_owned(),
        server: Some(server.to_owned()),
        insecure_tcp: true,
        resource: Some("bridge-test".to_owned()),
    }
}

fn xml(text: &str) -> Element {
    text.parse()
        .unwrap_or_else(|e| panic!("test XML {text}: {e}"))
}

/// The next event, or a panic after `wait`.
async fn next_event(handle: &mut StreamHandle, wait: Duration, what: &str) -> StreamEvent {
    tokio::time::timeout(wait, handle.events.recv())
        .await
        .unwrap_or_else(|_| panic!("no event within {wait:?} while waiting for {what}"))
        .unwrap_or_else(|| panic!("the task ended while waiting for {what}"))
}

/// Waits for `Online`, skipping `Offline`s (failed attempts) and stanzas; returns the JID.
async fn online(handle: &mut StreamHandle, wait: Duration) -> String {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match next_event(handle, left, "Online").await {
            StreamEvent::Online { jid } => return jid,
            StreamEvent::Offline { reason } => eprintln!("offline while waiting: {reason}"),
            StreamEvent::Stanza(_) | StreamEvent::Skipped { .. } => {}
        }
    }
}

/// Waits for a stanza matching `wanted`; panics on `Offline` or `Online`.
async fn stanza(
    handle: &mut StreamHandle,
    what: &str,
    mut wanted: impl FnMut(&Element) -> bool,
) -> Element {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match next_event(handle, left, what).await {
            StreamEvent::Stanza(el) if wanted(&el) => return el,
            StreamEvent::Stanza(_) => {}
            other => panic!("{other:?} while waiting for {what}"),
        }
    }
}

/// Joins `room` as `nick` and waits for the self-presence (status 110).
async fn join_room(handle: &mut StreamHandle, room: &str, nick: &str) {
    handle
        .out
        .send(
            xml(&format!(
                "<presence xmlns='jabber:client' to='{room}/{nick}'>\
             <x xmlns='http://jabber.org/protocol/muc'><history maxstanzas='0'/></x></presence>"
            ))
            .into(),
        )
        .await
        .expect("join sent");
    stanza(handle, &format!("the self-presence in {room}"), |e| {
        e.name() == "presence"
            && e.attr("from") == Some(&format!("{room}/{nick}"))
            && e.children().any(|x| {
                x.is("x", NS_MUC_USER)
                    && x.children()
                        .any(|s| s.name() == "status" && s.attr("code") == Some("110"))
            })
    })
    .await;
}

/// Sends a groupchat message and waits for its reflection; returns it.
async fn say(handle: &mut StreamHandle, room: &str, id: &str, body: &str) -> Element {
    handle
        .out
        .send(
            xml(&format!(
                "<message xmlns='jabber:client' type='groupchat' id='{id}' to='{room}'>\
             <body>{body}</body></message>"
            ))
            .into(),
        )
        .await
        .expect("message sent");
    stanza(handle, "the reflected message", |e| {
        e.name() == "message"
            && e.attr("type") == Some("groupchat")
            && e.get_child("body", "jabber:client").map(Element::text) == Some(body.to_owned())
    })
    .await
}

/// Cancels the task and checks that it ends (its event channel closes) soon.
async fn shut_down(mut handle: StreamHandle, shutdown: CancellationToken) {
    shutdown.cancel();
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while handle.events.recv().await.is_some() {}
    })
    .await;
    assert!(
        ended.is_ok(),
        "the task did not end within 5 s of the cancel"
    );
    assert!(handle.out.is_closed(), "the task dropped its receiver");
}

#[tokio::test]
async fn logs_in_joins_a_muc_and_gets_its_message_reflected_with_a_stanza_id() {
    init_logging();
    let config = PathBuf::from(env("BRIDGE_TEST_PROSODY_CONFIG"));
    register(&config, "clientone", "onepass");
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let mut handle = spawn_client(
        settings("clientone", "onepass", &env("BRIDGE_TEST_XMPP_C2S")),
        shutdown.clone(),
    );
    let jid = online(&mut handle, WAIT).await;
    eprintln!("online as {jid} after {:?}", started.elapsed());
    assert_eq!(jid, "clientone@localhost/bridge-test");

    let room = "clienttest@conference.localhost";
    join_room(&mut handle, room, "ClientOne").await;
    let reflected = say(&mut handle, room, "c1", "hello from the client").await;
    // It keeps our id and carries the room's stanza-id (XEP-0359).
    assert_eq!(reflected.attr("id"), Some("c1"));
    assert_eq!(reflected.attr("from"), Some(&*format!("{room}/ClientOne")));
    assert!(
        reflected
            .children()
            .any(|c| c.is("stanza-id", "urn:xmpp:sid:0") && c.attr("by") == Some(room)),
        "no stanza-id in {reflected:?}"
    );
    eprintln!("joined and reflected after {:?}", started.elapsed());

    // Something that is not a stanza is skipped; the session stays up.
    handle
        .out
        .send(xml("<nonsense xmlns='jabber:client'/>").into())
        .await
        .expect("sent");
    say(&mut handle, room, "c2", "still here").await;

    shut_down(handle, shutdown).await;
}

#[tokio::test]
async fn a_wrong_password_is_reported_and_retried_with_backoff() {
    init_logging();
    let config = PathBuf::from(env("BRIDGE_TEST_PROSODY_CONFIG"));
    register(&config, "clientwrongpw", "rightpass");
    let shutdown = CancellationToken::new();
    let mut handle = spawn_client(
        settings("clientwrongpw", "wrongpass", &env("BRIDGE_TEST_XMPP_C2S")),
        shutdown.clone(),
    );
    // Stanzas sent without a session are dropped; nothing breaks.
    handle
        .out
        .send(
            xml(
                "<message xmlns='jabber:client' to='someone@localhost'><body>lost</body></message>",
            )
            .into(),
        )
        .await
        .expect("sent");
    // Watch for 4.5 s: attempts at about 0, 1, 3 s (backoff 1 s, 2 s, ±20 %).
    let started = Instant::now();
    let until = started + Duration::from_millis(4500);
    let mut failures = Vec::new();
    while let Ok(event) = tokio::time::timeout_at(until, handle.events.recv()).await {
        match event.expect("the task keeps running") {
            StreamEvent::Offline { reason } => {
                eprintln!("{:?}: offline: {reason}", started.elapsed());
                assert!(reason.contains("authentication"), "{reason}");
                failures.push(Instant::now());
            }
            other => panic!("unexpected {other:?} with a wrong password"),
        }
    }
    assert!(
        (2..=4).contains(&failures.len()),
        "expected 2 to 4 failed attempts in 4.5 s, got {}",
        failures.len()
    );
    let gaps: Vec<Duration> = failures.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps[0] >= Duration::from_millis(750), "gaps {gaps:?}");
    if let Some(second) = gaps.get(1) {
        assert!(*second >= Duration::from_millis(1500), "gaps {gaps:?}");
    }
    shut_down(handle, shutdown).await;
}

// ---- restart test: a Prosody of our own ----

const RESTART_C2S: u16 = 27222;
const TLS_C2S: u16 = 27232;

/// A Prosody process of a test; killed when dropped.
struct OwnProsody {
    dir: tempfile::TempDir,
    config: PathBuf,
    c2s: u16,
    child: Option<Child>,
}

impl OwnProsody {
    /// A config from the template, c2s on `c2s`, the component port at `c2s + 125` and HTTP at
    /// `c2s + 58` (27222 → 27347, 27280). With `tls`, mod_tls offers STARTTLS with a fresh
    /// self-signed certificate for `localhost`.
    fn new(c2s: u16, tls: bool) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        for sub in ["data", "certs"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
        }
        let template =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/servers/prosody.cfg.lua");
        let text = std::fs::read_to_string(&template)
            .unwrap_or_else(|e| panic!("{}: {e}", template.display()))
            .replace("@DIR@", &dir.path().display().to_string())
            .replace("@C2S_PORT@", &c2s.to_string())
            .replace("@COMPONENT_PORT@", &(c2s + 125).to_string())
            .replace("@HTTP_PORT@", &(c2s + 58).to_string());
        let text = if tls {
            let certs = dir.path().join("certs");
            let status = Command::new("openssl")
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                ])
                .args([
                    "-subj",
                    "/CN=localhost",
                    "-addext",
                    "subjectAltName=DNS:localhost",
                ])
                .arg("-keyout")
                .arg(certs.join("localhost.key"))
                .arg("-out")
                .arg(certs.join("localhost.crt"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap_or_else(|e| panic!("running openssl (is it installed?): {e}"));
            assert!(status.success(), "openssl req failed");
            text.replace("\"roster\";", "\"tls\"; \"roster\";")
        } else {
            text
        };
        let config = dir.path().join("prosody.cfg.lua");
        std::fs::write(&config, text).expect("write config");
        Self {
            dir,
            config,
            c2s,
            child: None,
        }
    }

    async fn start(&mut self) {
        let port = self.c2s;
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "something already listens on port {port}"
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("prosody.out"))
            .expect("log file");
        let child = Command::new("prosody")
            .arg("--config")
            .arg(&self.config)
            .arg("-F")
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting prosody (is it installed?): {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "Prosody did not listen on {port}: {}",
                std::fs::read_to_string(self.dir.path().join("prosody.out")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, as an init system would, and wait for the exit.
    async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let status = Command::new("kill")
            .arg(child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill failed");
        let deadline = Instant::now() + WAIT;
        while child.try_wait().expect("wait").is_none() {
            assert!(Instant::now() < deadline, "Prosody did not stop");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for OwnProsody {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test]
async fn a_server_restart_means_offline_then_online_and_rooms_can_be_rejoined() {
    init_logging();
    let mut prosody = OwnProsody::new(RESTART_C2S, false);
    register(&prosody.config, "clientrestart", "restartpass");
    prosody.start().await;

    let shutdown = CancellationToken::new();
    let mut handle = spawn_client(
        settings(
            "clientrestart",
            "restartpass",
            &format!("127.0.0.1:{RESTART_C2S}"),
        ),
        shutdown.clone(),
    );
    let jid = online(&mut handle, WAIT).await;
    assert_eq!(jid, "clientrestart@localhost/bridge-test");
    let room = "restarttest@conference.localhost";
    join_room(&mut handle, room, "Restarter").await;
    say(&mut handle, room, "r1", "before the restart").await;

    let restart = Instant::now();
    prosody.stop().await;
    eprintln!("Prosody stopped in {:?}", restart.elapsed());
    // The session ends: Offline (room presences from the shutdown may come first).
    loop {
        match next_event(&mut handle, WAIT, "Offline after the server stopped").await {
            StreamEvent::Offline { reason } => {
                eprintln!("{:?}: offline: {reason}", restart.elapsed());
                break;
            }
            StreamEvent::Stanza(_) | StreamEvent::Skipped { .. } => {}
            StreamEvent::Online { jid } => panic!("online as {jid} while the server is down"),
        }
    }
    prosody.start().await;
    eprintln!("Prosody listening again after {:?}", restart.elapsed());
    let jid = online(&mut handle, Duration::from_secs(5)).await;
    eprintln!("{:?}: online again as {jid}", restart.elapsed());
    assert_eq!(jid, "clientrestart@localhost/bridge-test");
    assert!(
        restart.elapsed() < Duration::from_secs(8),
        "took {:?}",
        restart.elapsed()
    );

    // The new server has no room state: rejoin, and messages flow again.
    join_room(&mut handle, room, "Restarter").await;
    say(&mut handle, room, "r2", "after the restart").await;
    eprintln!("{:?}: rejoined and reflected", restart.elapsed());

    shut_down(handle, shutdown).await;
    prosody.stop().await;
}

/// Waits `wait` and returns the `Offline` reasons; panics on anything else.
async fn only_offline(handle: &mut StreamHandle, wait: Duration) -> Vec<String> {
    let until = Instant::now() + wait;
    let mut reasons = Vec::new();
    while let Ok(event) = tokio::time::timeout_at(until, handle.events.recv()).await {
        match event.expect("the task keeps running") {
            StreamEvent::Offline { reason } => {
                eprintln!("offline: {reason}");
                reasons.push(reason);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    reasons
}

#[tokio::test]
async fn without_insecure_tcp_a_server_without_starttls_is_refused() {
    init_logging();
    let config = PathBuf::from(env("BRIDGE_TEST_PROSODY_CONFIG"));
    register(&config, "clientnotls", "notlspass");
    let shutdown = CancellationToken::new();
    let mut s = settings("clientnotls", "notlspass", &env("BRIDGE_TEST_XMPP_C2S"));
    s.insecure_tcp = false;
    let mut handle = spawn_client(s, shutdown.clone());
    let reasons = only_offline(&mut handle, Duration::from_millis(1500)).await;
    assert!(!reasons.is_empty(), "no Offline");
    assert!(
        reasons.iter().all(|r| r.contains("STARTTLS")),
        "{reasons:?}"
    );
    shut_down(handle, shutdown).await;
}

#[tokio::test]
async fn starttls_runs_and_an_untrusted_certificate_is_refused() {
    init_logging();
    let mut prosody = OwnProsody::new(TLS_C2S, true);
    register(&prosody.config, "clienttls", "tlspass");
    prosody.start().await;
    let shutdown = CancellationToken::new();
    let mut s = settings("clienttls", "tlspass", &format!("127.0.0.1:{TLS_C2S}"));
    s.insecure_tcp = false;
    let mut handle = spawn_client(s, shutdown.clone());
    // The TLS handshake (rustls on ring) gets as far as checking Prosody's self-signed
    // certificate, which no root vouches for (webpki says `CaUsedAsEndEntity`: openssl's
    // self-signed certificates are CAs).
    let reasons = only_offline(&mut handle, Duration::from_millis(1500)).await;
    assert!(!reasons.is_empty(), "no Offline");
    assert!(
        reasons
            .iter()
            .all(|r| r.contains("invalid peer certificate")),
        "{reasons:?}"
    );
    shut_down(handle, shutdown).await;
    prosody.stop().await;
}
