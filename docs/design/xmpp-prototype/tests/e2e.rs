//! Both modes against a real Prosody started by the test itself (fresh data dir,
//! non-default ports). Skips (passes with a message) if `prosody` is not installed.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Prosody {
    child: Child,
    dir: PathBuf,
    ports: (u16, u16),
}

impl Prosody {
    fn cfg(&self) -> PathBuf {
        self.dir.join("prosody.cfg.lua")
    }
    fn wait_listening(&self) {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if TcpStream::connect(("127.0.0.1", self.ports.0)).is_ok()
                && TcpStream::connect(("127.0.0.1", self.ports.1)).is_ok()
            {
                eprintln!("prosody listening after {:?}", t.elapsed());
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("prosody did not start");
    }
    /// Stop (SIGTERM, wait) and start again on the same ports and data.
    fn restart(&mut self) {
        let t = Instant::now();
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
        eprintln!("prosody stopped after {:?}", t.elapsed());
        self.child = Command::new("prosody").args(["--config", self.cfg().to_str().unwrap(), "-F"]).spawn().unwrap();
        self.wait_listening();
    }
}

impl Drop for Prosody {
    fn drop(&mut self) {
        // SIGTERM by pid (Prosody takes ~1 s to stop); then reap.
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_prosody(c2s: u16, comp: u16) -> Option<Prosody> {
    if Command::new("prosody").arg("--help").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
        return None;
    }
    let dir = std::env::temp_dir().join(format!("prosody-e2e-{}-{c2s}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::create_dir_all(dir.join("certs")).unwrap();
    let d = dir.display();
    let cfg = format!(
        r#"data_path = "{d}/data"
pidfile = "{d}/prosody.pid"
plugin_paths = {{}}
run_as_root = true
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {c2s} }}
c2s_direct_tls_ports = {{}}
s2s_ports = {{}}
component_interfaces = {{ "127.0.0.1" }}
component_ports = {{ {comp} }}
http_ports = {{}}
https_ports = {{}}
modules_enabled = {{ "roster"; "saslauth"; "disco"; "ping"; "presence"; "message"; "iq" }}
modules_disabled = {{ "s2s"; "offline" }}
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_hashed"
storage = "internal"
certificates = "{d}/certs"
log = {{ {{ levels = {{ min = "warn" }}, to = "console" }} }}
VirtualHost "localhost"
Component "conference.localhost" "muc"
  restrict_room_creation = false
  muc_room_locking = false
  modules_enabled = {{ "muc_mam" }}
Component "lockedconf.localhost" "muc"
  restrict_room_creation = false
Component "bridge.localhost"
  component_secret = "bridgesecret"
"#
    );
    let cfg_path = dir.join("prosody.cfg.lua");
    std::fs::write(&cfg_path, cfg).unwrap();
    let st = Command::new("prosodyctl")
        .args(["--config", cfg_path.to_str().unwrap(), "register", "bob", "localhost", "bobpass"])
        .status()
        .unwrap();
    assert!(st.success(), "prosodyctl register failed");
    let child = Command::new("prosody")
        .args(["--config", cfg_path.to_str().unwrap(), "-F"])
        .spawn()
        .unwrap();
    let p = Prosody { child, dir, ports: (c2s, comp) };
    p.wait_listening();
    Some(p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn component_and_client_in_one_build() {
    let _ = env_logger::builder().is_test(true).try_init();
    let Some(_prosody) = start_prosody(15222, 15347) else {
        eprintln!("SKIP: prosody not installed");
        return;
    };
    let ep = xmpp_proto::scenario::Endpoints {
        c2s: "127.0.0.1:15222".into(),
        component: "127.0.0.1:15347".into(),
        ..Default::default()
    };
    let lines = xmpp_proto::scenario::run(&ep, "lobby@conference.localhost", Some("locked1@lockedconf.localhost"))
        .await
        .expect("scenario");
    for l in lines {
        eprintln!("{l}");
    }
}

use tokio::sync::mpsc;
use xmpp_parsers::jid::{BareJid, FullJid};
use xmpp_parsers::message::MessageType;
use xmpp_parsers::stanza::Stanza;
use xmpp_proto::actors::{ComponentConfig, XmppEvent, spawn_client, spawn_component};
use xmpp_proto::muc;

async fn until(rx: &mut mpsc::Receiver<XmppEvent>, what: &str, f: impl Fn(&XmppEvent) -> bool) {
    tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let ev = rx.recv().await.expect("actor alive");
            if f(&ev) {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timeout: {what}"));
}

fn is_self_presence(ev: &XmppEvent) -> bool {
    matches!(ev, XmppEvent::Stanza(Stanza::Presence(p)) if muc::presence_info(p).self_presence)
}
fn is_body(ev: &XmppEvent, body: &str) -> bool {
    matches!(ev, XmppEvent::Stanza(Stanza::Message(m)) if m.type_ == MessageType::Groupchat && m.bodies.values().any(|b| b == body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_modes_survive_a_server_restart() {
    let _ = env_logger::builder().is_test(true).try_init();
    let Some(mut prosody) = start_prosody(25222, 25347) else {
        eprintln!("SKIP: prosody not installed");
        return;
    };
    let room: BareJid = "lobby@conference.localhost".parse().unwrap();
    let puppet: FullJid = "alice@bridge.localhost/x".parse().unwrap();
    let (ctx, mut crx) = spawn_component(ComponentConfig {
        addr: "127.0.0.1:25347".into(),
        domain: "bridge.localhost".into(),
        secret: "bridgesecret".into(),
        keepalive: Default::default(),
    });
    let (btx, mut brx) = spawn_client("bob@localhost/r", "bobpass", "127.0.0.1:25222", Default::default());
    until(&mut crx, "component online", |e| matches!(e, XmppEvent::Online(_))).await;
    until(&mut brx, "client online", |e| matches!(e, XmppEvent::Online(_))).await;
    ctx.send(muc::join(Some(puppet.clone()), &room, "alice").into()).await.unwrap();
    btx.send(muc::join(None, &room, "bob").into()).await.unwrap();
    until(&mut crx, "puppet joined", is_self_presence).await;
    until(&mut brx, "bob joined", is_self_presence).await;

    let t = Instant::now();
    prosody.restart();
    until(&mut crx, "component noticed", |e| matches!(e, XmppEvent::Disconnected(_))).await;
    until(&mut crx, "component back", |e| matches!(e, XmppEvent::Online(_))).await;
    until(&mut crx, "puppet re-joined", is_self_presence).await;
    eprintln!("component re-joined {:?} after restart began", t.elapsed());
    until(&mut brx, "client back", |e| matches!(e, XmppEvent::Online(_))).await;
    until(&mut brx, "bob re-joined", is_self_presence).await;
    eprintln!("client re-joined {:?} after restart began", t.elapsed());

    ctx.send(muc::groupchat(Some(puppet.clone()), &room, "after restart (puppet)", "r1").into()).await.unwrap();
    until(&mut brx, "bob sees puppet", |e| is_body(e, "after restart (puppet)")).await;
    btx.send(muc::groupchat(None, &room, "after restart (bob)", "r2").into()).await.unwrap();
    until(&mut crx, "puppet sees bob", |e| is_body(e, "after restart (bob)")).await;
    eprintln!("messages flow again {:?} after restart began", t.elapsed());
}
