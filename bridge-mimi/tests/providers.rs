//! Two bridges, each a MIMI provider with an in-memory far side, in one process over mutual
//! TLS on loopback: `hub.example` hosts the room, `follower.example` joins it when its user
//! first speaks. Messages go both ways; the follower stops, a message for it waits in the hub's
//! queue, the follower restarts (same store), gets it, and messages go both ways again: nothing
//! lost, nothing duplicated.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bridge_core::testkit::{MemoryAdapter, MemoryHandle, inbound};
use bridge_core::{
    Capabilities, Core, DeliverySettings, EventKind, Link, RemoteEventId, RoomSettings, SledStore,
    Store, Submitted,
};
use bridge_mimi::{MimiAdapter, settings};

const ROOM: &str = "mimi://hub.example/r/lobby";
const WAIT: Duration = Duration::from_secs(60);

/// Writes a CA and a certificate for each domain (server and client use) under `dir`.
fn pki(dir: &Path, domains: &[&str]) {
    bridge_mimi::testkit::write_pki(dir, domains).expect("certificates");
}

/// A free loopback port below Linux's ephemeral range (32768 up), so that no outgoing
/// connection takes it between this check and the provider's bind (a port the kernel handed
/// out for `bind(0)` and let go could be, and was: "Address already in use"). Each call looks
/// from its own place in 21000–27999 (by process and call), so parallel tests do not race
/// for the same one.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    const FIRST: u16 = 21_000;
    const SPAN: u16 = 7_000;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let start = (std::process::id() % u32::from(SPAN)) as u16;
    loop {
        let step = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = FIRST + (start.wrapping_add(step.wrapping_mul(7))) % SPAN;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn section(dir: &Path, domain: &str, port: u16, peer: &str, peer_port: u16) -> settings::Settings {
    bridge_mimi::testkit::loopback_settings(dir, domain, port, peer, peer_port)
        .expect("valid settings")
}

struct Side {
    core: Core,
    far: MemoryHandle,
}

async fn start(store: Arc<dyn Store>, settings: settings::Settings) -> Side {
    start_with(store, settings, &[]).await.0
}

/// A side whose room also links a far adapter named like each of `others` (room
/// `<name>-room`), returned with their handles.
async fn start_with(
    store: Arc<dyn Store>,
    settings: settings::Settings,
    others: &[&str],
) -> (Side, Vec<MemoryHandle>) {
    let far = MemoryAdapter::new(Capabilities::all());
    let handle = far.handle();
    let mimi = MimiAdapter::new("mimi".into(), settings);
    let mut links = vec![Link::new("far", "far-room"), Link::new("mimi", ROOM)];
    let mut builder = Core::builder(store);
    let mut handles = Vec::new();
    for name in others {
        let other = MemoryAdapter::new(Capabilities::all());
        handles.push(other.handle());
        builder = builder.adapter(*name, Arc::new(other));
        links.push(Link::new(*name, format!("{name}-room").as_str()));
    }
    let core = builder
        .settings(DeliverySettings {
            max_attempts: 60,
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_millis(500),
            queue_capacity: 1024,
        })
        .adapter("far", Arc::new(far))
        .adapter("mimi", Arc::new(mimi))
        .room("lobby", RoomSettings::default(), links)
        .start()
        .await
        .expect("core starts");
    handle.context().await;
    for other in &handles {
        other.context().await;
    }
    (Side { core, far: handle }, handles)
}

fn body(kind: &EventKind<RemoteEventId>) -> String {
    match kind {
        EventKind::Message { content, .. } => content.text.body().to_owned(),
        other => format!("<{}>", other.name()),
    }
}

async fn say(side: &Side, id: &str, user: &str, text: &str) {
    let submitted = side
        .far
        .submit(inbound("far-room").id(id).from(user).text(text))
        .await
        .expect("submitted");
    assert!(matches!(submitted, Submitted::Accepted(_)), "{submitted:?}");
}

/// The messages (not joins and leaves) `side`'s far adapter got.
fn messages(side: &Side) -> Vec<bridge_core::OutboundEvent> {
    side.far
        .sent()
        .into_iter()
        .filter(|e| !matches!(e.kind, EventKind::Membership { .. }))
        .collect()
}

/// The joins and leaves `side`'s far adapter got: (user, change).
fn memberships(side: &Side) -> Vec<(String, bridge_core::MembershipChange)> {
    side.far
        .sent()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Membership { change, .. } => Some((e.sender.user.to_string(), change)),
            _ => None,
        })
        .collect()
}

/// Waits until `side`'s far adapter got `n` messages in all; returns their bodies and senders.
async fn received(side: &Side, n: usize) -> Vec<(String, String)> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got = messages(side);
        if got.len() >= n {
            return got
                .iter()
                .map(|e| (e.sender.user.to_string(), body(&e.kind)))
                .collect();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {n} messages: {:?}",
            got.len(),
            side.far.sent()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every outbox of `side` is empty: each delivery is acknowledged and its native
/// ID is in the core's ID map (the far adapter records a send before the core does).
async fn settled(side: &Side) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let waiting: u64 = side
            .core
            .status()
            .iter()
            .flat_map(|room| room.links.iter().map(|(_, n)| n))
            .sum();
        if waiting == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{waiting} events still in the outboxes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A hub and a follower over sled stores in `dir` (`hub-store`, `follower-store`), and the
/// follower's settings for a restart.
async fn sled_pair(dir: &Path) -> (Side, Side, settings::Settings) {
    pki(dir, &["hub.example", "follower.example"]);
    let (hub_port, follower_port) = (free_port(), free_port());
    let hub_settings = section(
        dir,
        "hub.example",
        hub_port,
        "follower.example",
        follower_port,
    );
    let follower_settings = section(
        dir,
        "follower.example",
        follower_port,
        "hub.example",
        hub_port,
    );
    let hub_store: Arc<dyn Store> =
        Arc::new(SledStore::open(&dir.join("hub-store")).expect("store"));
    let hub = start(hub_store, hub_settings).await;
    let follower_store: Arc<dyn Store> =
        Arc::new(SledStore::open(&dir.join("follower-store")).expect("store"));
    let follower = start(follower_store, follower_settings.clone()).await;
    (hub, follower, follower_settings)
}

/// Opens the sled store in `dir` again, once the last task of the bridge that had it open
/// has ended.
async fn reopen(dir: &Path) -> Arc<dyn Store> {
    let mut tries = 0;
    loop {
        match SledStore::open(dir) {
            Ok(store) => return Arc::new(store),
            Err(_) if tries < 100 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("reopen: {e}"),
        }
    }
}

/// The adapter's debug logs in the test's output (once per test binary; later calls keep it).
fn logs_to_test_output() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("info,bridge_mimi=debug")
        .with_test_writer()
        .try_init();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_providers_exchange_messages_across_a_follower_restart() {
    logs_to_test_output();
    let dir = tempfile::tempdir().expect("tempdir");
    let (hub, follower, follower_settings) = sled_pair(dir.path()).await;
    let follower_dir = dir.path().join("follower-store");

    // The follower's user speaks first: its puppet joins the hub's room, then the message goes.
    say(&follower, "f1", "bob", "hello from the follower").await;
    let at_hub = received(&hub, 1).await;
    assert_eq!(
        at_hub,
        vec![(
            "mimi://follower.example/u/bob".to_owned(),
            "hello from the follower".to_owned()
        )]
    );
    // The hub's user answers: fanned out to the follower.
    say(&hub, "h1", "alice", "hello from the hub").await;
    let at_follower = received(&follower, 1).await;
    assert_eq!(
        at_follower,
        vec![(
            "mimi://hub.example/u/alice".to_owned(),
            "hello from the hub".to_owned()
        )]
    );

    // Restart the follower over the same store.
    let Side { core, far } = follower;
    core.shutdown().await;
    drop(far);
    // While the follower is down, the hub's user speaks: the notify waits in the hub's queue.
    say(&hub, "h2", "alice", "welcome back").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The store is free once the last task of the old adapter has ended.
    let follower_store = reopen(&follower_dir).await;
    let follower = start(follower_store, follower_settings).await;
    say(&follower, "f2", "bob", "back after a restart").await;
    let at_hub = received(&hub, 2).await;
    let at_follower = received(&follower, 1).await;
    assert_eq!(at_hub[1].1, "back after a restart");
    assert_eq!(at_follower[0].1, "welcome back");
    // A reply across providers points at the right message on the other side: references
    // travel as MIMI message IDs.
    settled(&follower).await;
    let welcome = messages(&follower)[0].id;
    let target = follower.far.native_id_of(welcome).expect("delivered");
    let reply = inbound("far-room")
        .id("f3")
        .from("bob")
        .reply(target.as_str(), "thanks");
    follower.far.submit(reply).await.expect("submitted");
    received(&hub, 3).await;
    let replies = messages(&hub);
    match &replies[2].kind {
        EventKind::Message {
            content,
            reply_to: Some(to),
            ..
        } => {
            assert_eq!(content.text.body(), "thanks");
            assert_eq!(
                to.as_str(),
                "h2",
                "the reply points at the hub's own message"
            );
        }
        other => panic!("not a reply: {other:?}"),
    }
    // A second user of the follower joins a room its provider is already in (the follower
    // processes the proposal and commit for bob's puppet, then carol's Welcome), and is heard.
    say(&follower, "f4", "carol", "me too").await;
    let at_hub = received(&hub, 4).await;
    assert_eq!(
        at_hub[3],
        (
            "mimi://follower.example/u/carol".to_owned(),
            "me too".to_owned()
        )
    );
    say(&hub, "h3", "alice", "hi carol").await;
    let at_follower = received(&follower, 2).await;
    assert_eq!(at_follower[1].1, "hi carol");
    // Nothing more arrives: no duplicates, no echoes.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(messages(&hub).len(), 4, "{:?}", hub.far.sent());
    assert_eq!(messages(&follower).len(), 2, "{:?}", follower.far.sent());
    // Joins cross too: the hub's side saw bob's and carol's puppets join. (The follower's side
    // saw alice join before its restart, on the far adapter it had then.)
    use bridge_core::MembershipChange::{Join, Leave};
    assert_eq!(
        memberships(&hub),
        vec![
            ("mimi://follower.example/u/bob".to_owned(), Join),
            ("mimi://follower.example/u/carol".to_owned(), Join),
        ]
    );
    assert_eq!(memberships(&follower), vec![]);
    // Carol leaves on the follower's side: her puppet proposes its removal, the hub commits
    // it; the hub's side sees her leave. Alice leaves on the hub's side: the follower's side
    // sees it.
    follower
        .far
        .submit(inbound("far-room").id("f5").from("carol").leave())
        .await
        .expect("submitted");
    hub.far
        .submit(inbound("far-room").id("h4").from("alice").leave())
        .await
        .expect("submitted");
    let deadline = tokio::time::Instant::now() + WAIT;
    while memberships(&hub).len() < 3 || memberships(&follower).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "hub {:?}, follower {:?}",
            memberships(&hub),
            memberships(&follower)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        memberships(&hub)[2],
        ("mimi://follower.example/u/carol".to_owned(), Leave)
    );
    assert_eq!(
        memberships(&follower),
        vec![("mimi://hub.example/u/alice".to_owned(), Leave)]
    );
    // Bob, still in, is heard on the hub's side; alice, back, joins again and is heard.
    say(&follower, "f6", "bob", "still here").await;
    assert_eq!(received(&hub, 5).await[4].1, "still here");
    say(&hub, "h5", "alice", "back again").await;
    assert_eq!(received(&follower, 3).await[2].1, "back again");
    // Her own network kicks her: the hub's bot takes her out, and the follower's side sees a
    // kick (the commit's removal is the bot's, not her own), then her return.
    alice_removed(&hub, &follower, "h5k", bridge_core::MembershipChange::Kick).await;
    say(&hub, "h5b", "alice", "kicked but back").await;
    assert_eq!(received(&follower, 4).await[3].1, "kicked but back");
    // Alice is banned on the hub's side: her entry stays in the participant list, as banned
    // (role 1), and the follower's side sees a ban, not a leave.
    alice_removed(&hub, &follower, "h6", bridge_core::MembershipChange::Ban).await;
    assert_eq!(
        memberships(&follower),
        vec![
            ("mimi://hub.example/u/alice".to_owned(), Leave),
            ("mimi://hub.example/u/alice".to_owned(), Join),
            (
                "mimi://hub.example/u/alice".to_owned(),
                bridge_core::MembershipChange::Kick
            ),
            ("mimi://hub.example/u/alice".to_owned(), Join),
            (
                "mimi://hub.example/u/alice".to_owned(),
                bridge_core::MembershipChange::Ban
            ),
        ]
    );
    follower.core.shutdown().await;
    hub.core.shutdown().await;
}

/// Alice's own network (the hub's far side) removes her from the room (`change`, event `id`):
/// waits until the follower's far side sees that change last.
async fn alice_removed(
    hub: &Side,
    follower: &Side,
    id: &str,
    change: bridge_core::MembershipChange,
) {
    let removal = bridge_core::EventKind::Membership {
        change,
        reason: None,
    };
    hub.far
        .submit(inbound("far-room").id(id).from("alice").kind(removal))
        .await
        .expect("submitted");
    let deadline = tokio::time::Instant::now() + WAIT;
    while memberships(follower).last().map(|m| m.1) != Some(change) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "follower {:?}",
            memberships(follower)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A backlog for a follower that is down goes out, once it is back, as notify bodies of many
/// messages each (the hub's queue batches consecutive entries of a room): every message
/// arrives once, in the order the hub's user said them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_reaches_a_restarted_follower_in_order_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (hub, follower, follower_settings) = sled_pair(dir.path()).await;
    let follower_dir = dir.path().join("follower-store");
    // The follower's user speaks first (its puppet joins), the hub's user answers.
    say(&follower, "f1", "bob", "hello").await;
    received(&hub, 1).await;
    say(&hub, "h0", "alice", "0").await;
    received(&follower, 1).await;
    settled(&follower).await;

    let Side { core, far } = follower;
    core.shutdown().await;
    drop(far);
    // While the follower is down, the hub's user says 40 messages: the hub's adapter takes
    // each (its outbox empties) and queues them for the follower.
    for i in 1..=40 {
        say(&hub, &format!("h{i}"), "alice", &i.to_string()).await;
    }
    settled(&hub).await;
    let follower_store = reopen(&follower_dir).await;
    let follower = start(follower_store, follower_settings).await;
    let got = received(&follower, 40).await;
    settled(&follower).await;
    let expected: Vec<(String, String)> = (1..=40)
        .map(|i| ("mimi://hub.example/u/alice".to_owned(), i.to_string()))
        .collect();
    assert_eq!(got, expected);
    // Nothing came twice: the restarted far side has exactly the backlog.
    assert_eq!(messages(&follower).len(), 40, "{:?}", follower.far.sent());
    follower.core.shutdown().await;
    hub.core.shutdown().await;
}

/// A hub and a follower over in-memory stores, in `dir`; with their ports.
async fn pair_in_memory(dir: &Path) -> (Side, Side, u16, u16) {
    pki(dir, &["hub.example", "follower.example"]);
    let (hub_port, follower_port) = (free_port(), free_port());
    let hub_settings = section(
        dir,
        "hub.example",
        hub_port,
        "follower.example",
        follower_port,
    );
    let follower_settings = section(
        dir,
        "follower.example",
        follower_port,
        "hub.example",
        hub_port,
    );
    let hub = start(Arc::new(bridge_core::MemoryStore::new()), hub_settings).await;
    let follower = start(Arc::new(bridge_core::MemoryStore::new()), follower_settings).await;
    wait_serving(&[hub_port, follower_port]).await;
    (hub, follower, hub_port, follower_port)
}

/// Waits until something listens on each of `ports` (providers serve once their adapters have
/// started).
async fn wait_serving(ports: &[u16]) {
    for &port in ports {
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(tokio::time::Instant::now() < deadline, "nothing on {port}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A MIMI client speaking for `follower.example` (its certificate), to the hub on `hub_port`.
fn follower_client(dir: &Path, hub_port: u16) -> bridge_mimi::transport::MimiClient {
    let read = |name: &str| std::fs::read(dir.join(name)).expect("read");
    let identity = bridge_mimi::transport::TlsIdentity::from_pem(
        &read("follower.example.crt"),
        &read("follower.example.key"),
    )
    .expect("identity");
    let roots = bridge_mimi::transport::tls::roots_from_pem(&read("ca.pem")).expect("roots");
    bridge_mimi::transport::MimiClient::new(bridge_mimi::transport::ClientOptions {
        local_domain: "follower.example".into(),
        tls: bridge_mimi::transport::tls::client_config(Some(identity), roots).expect("tls"),
        timeout: Duration::from_secs(5),
        resolve: vec![(
            "hub.example".into(),
            format!("127.0.0.1:{hub_port}").parse().expect("addr"),
        )],
    })
    .expect("client")
}

/// Serves `body` over plain HTTP on loopback, as any web link a far user might share; returns
/// its URL.
async fn serve_file(body: Vec<u8>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let app = axum::Router::new().route(
        "/cat.png",
        axum::routing::get(move || {
            let body = body.clone();
            async move { ([("content-type", "image/png")], body) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://127.0.0.1:{port}/cat.png")
}

/// A far message carrying one file.
fn with_file(id: &str, user: &str, text: &str, url: &str) -> bridge_core::InboundEvent {
    let mut event = inbound("far-room").id(id).from(user).text(text);
    if let EventKind::Message { content, .. } = &mut event.kind {
        content.attachments.push(bridge_core::Attachment {
            name: "cat.png".into(),
            url: url.to_owned(),
            mime: Some("image/png".into()),
            size: None,
            width: None,
            height: None,
        });
    }
    event
}

/// The file of the newest message `side`'s far adapter got.
fn last_file(side: &Side) -> bridge_core::Attachment {
    match side.far.sent().last().map(|e| e.kind.clone()) {
        Some(EventKind::Message { content, .. }) => {
            content.attachments.first().cloned().expect("a file")
        }
        other => panic!("not a message: {other:?}"),
    }
}

/// The bytes of `file`, which the MIMI adapter of `side` received, as another adapter asks for
/// them to re-host the file.
async fn fetch(side: &Side, file: &bridge_core::Attachment) -> Vec<u8> {
    let ctx = side.far.context().await.expect("running");
    let body = ctx
        .fetch_attachment(&"mimi".into(), file)
        .await
        .expect("the MIMI adapter fetches it");
    assert_eq!(body.mime.as_deref(), Some("image/png"));
    body.collect(1 << 24).await.expect("read").to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_cross_encrypted_both_ways_and_the_hub_proxies_only_its_peers() {
    logs_to_test_output();
    let dir = tempfile::tempdir().expect("tempdir");
    let (hub, follower, hub_port, follower_port) = pair_in_memory(dir.path()).await;
    let picture: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let link = serve_file(picture.clone()).await;

    // Follower → hub: the follower encrypts and hosts the file; the hub downloads it from the
    // follower and decrypts it.
    follower
        .far
        .submit(with_file("f1", "bob", "a cat", &link))
        .await
        .expect("submitted");
    received(&hub, 1).await;
    let file = last_file(&hub);
    assert!(
        file.url
            .starts_with(&format!("https://follower.example:{follower_port}/assets/")),
        "hosted by the sender's provider: {}",
        file.url
    );
    assert_eq!(file.name, "cat.png");
    assert_eq!(file.size, Some(picture.len() as u64));
    assert_eq!(fetch(&hub, &file).await, picture);
    let followers_file = file;

    // Hub → follower.
    hub.far
        .submit(with_file("h1", "alice", "another cat", &link))
        .await
        .expect("submitted");
    received(&follower, 1).await;
    let file = last_file(&follower);
    assert!(
        file.url
            .starts_with(&format!("https://hub.example:{hub_port}/assets/")),
        "{}",
        file.url
    );
    assert_eq!(fetch(&follower, &file).await, picture);

    // What is hosted is ciphertext, served only to authenticated peers; the hub's proxy
    // serves its peers' files and refuses other hosts (it is not an open proxy).
    let client = follower_client(dir.path(), hub_port);
    let direct = client
        .download("hub.example", &file.url, 1 << 24)
        .await
        .expect("direct download");
    assert_eq!(
        direct.len(),
        picture.len() + 16,
        "AES-GCM ciphertext and tag"
    );
    assert_ne!(&direct[..64], &picture[..64]);
    let peer = client
        .fetch_directory("hub.example", &format!("https://hub.example:{hub_port}"))
        .await
        .expect("directory");
    let proxied = client
        .proxy_download(&peer, &file.url)
        .await
        .expect("proxied");
    assert_eq!(proxied, direct);
    let refused = client
        .proxy_download(&peer, "https://elsewhere.example/assets/0123")
        .await
        .expect_err("not a peer of the hub");
    assert!(refused.to_string().contains("403"), "{refused}");
    let missing = client
        .download(
            "hub.example",
            &format!("https://hub.example:{hub_port}/assets/{}", "0".repeat(32)),
            1 << 24,
        )
        .await
        .expect_err("no such file");
    assert!(missing.to_string().contains("404"), "{missing}");

    // Deleting the message deletes the file its sender's provider hosts for it.
    hub.far
        .submit(inbound("far-room").id("h2").from("alice").redact("h1"))
        .await
        .expect("submitted");
    received(&follower, 2).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match client.download("hub.example", &file.url, 1 << 24).await {
            Err(e) if e.to_string().contains("404") => break,
            other => assert!(
                tokio::time::Instant::now() < deadline,
                "still served after its message was deleted: {:?}",
                other.map(|b| b.len())
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The follower's file of the other message is still there.
    assert_eq!(fetch(&hub, &followers_file).await, picture);

    // A link that is gone (404) crosses as a plain link, not re-hosted.
    let gone = link.replace("cat.png", "gone.png");
    follower
        .far
        .submit(with_file("f2", "bob", "gone", &gone))
        .await
        .expect("submitted");
    received(&hub, 2).await;
    let file = last_file(&hub);
    assert_eq!(file.url, gone);
    // Another adapter re-hosting it is told to fetch it as the link it is.
    let ctx = hub.far.context().await.expect("running");
    assert!(matches!(
        ctx.fetch_attachment(&"mimi".into(), &file).await,
        Err(bridge_core::AdapterError::Unsupported(_))
    ));
    follower.core.shutdown().await;
    hub.core.shutdown().await;
}

/// A `/groupInfo` request for a new client `client` (a client URI), signed with its key.
fn group_info_request(
    client: &str,
    signer: &openmls_basic_credential::SignatureKeyPair,
    hpke_public: &[u8],
) -> bridge_mimi::wire::GroupInfoRequest {
    use bridge_mimi::wire::{
        CipherSuite, Credential, GroupInfoRequest, HpkePublicKey, Protocol, SignaturePublicKey,
    };
    use openmls_traits::signatures::Signer as _;
    let mut request = GroupInfoRequest {
        protocol: Protocol::Mls10,
        cipher_suite: CipherSuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_ED25519,
        requesting_signature_key: SignaturePublicKey(signer.to_public_vec().into()),
        requesting_credential: Credential {
            credential_type: Credential::BASIC,
            content: client.as_bytes().to_vec().into(),
        },
        group_info_public_key: HpkePublicKey(hpke_public.to_vec().into()),
        joining_code: Vec::new().into(),
        signature: Vec::new().into(),
    };
    let tbs = request.to_be_signed().expect("TBS");
    let content =
        bridge_mimi::mls::labeled(GroupInfoRequest::SIGNATURE_LABEL, &tbs).expect("label");
    request.signature = signer.sign(&content).expect("sign").into();
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_serves_group_info_encrypted_and_signed_to_participants_only() {
    use bridge_mimi::wire::{
        GroupInfoRatchetTreeTbe, GroupInfoResponse, GroupInfoResult, IdentifierUri,
        RatchetTreeOption,
    };
    use openmls_traits::crypto::OpenMlsCrypto as _;
    use tls_codec::Deserialize as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let (hub, follower, hub_port, _) = pair_in_memory(dir.path()).await;
    // Bob (a follower user) becomes a participant.
    say(&follower, "f1", "bob", "hello").await;
    received(&hub, 1).await;

    let client = follower_client(dir.path(), hub_port);
    let peer = client
        .fetch_directory("hub.example", &format!("https://hub.example:{hub_port}"))
        .await
        .expect("directory");
    let crypto = openmls_rust_crypto::RustCrypto::default();
    let suite = openmls::prelude::Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;
    let signer = openmls_basic_credential::SignatureKeyPair::new(suite.signature_algorithm())
        .expect("signature key");
    let hpke = crypto
        .derive_hpke_keypair(suite.hpke_config(), &[9; 32])
        .expect("HPKE key");
    let room = IdentifierUri(ROOM.to_owned());
    let host = bridge_mimi::mls::MlsHost::open(
        "reader.example",
        Arc::new(bridge_mimi::mls::kv::StoreKv::new(
            Arc::new(bridge_core::MemoryStore::new()),
            b"m/",
        )),
    );

    // A second client of bob: the GroupInfo and the full tree, for the room, signed by the hub.
    let request = group_info_request(
        "mimi://follower.example/d/bob/tablet",
        &signer,
        &hpke.public,
    );
    let response: GroupInfoResponse = client
        .group_info(&peer, &room, &request)
        .await
        .expect("answered");
    let tbs = response.to_be_signed().expect("TBS").expect("a success");
    let GroupInfoResult::Success {
        hub_sender,
        encrypted_groupinfo_and_tree,
        signature,
        ..
    } = response.result
    else {
        panic!("not a success: {:?}", response.result);
    };
    assert_eq!(
        hub_sender.credential.content.as_slice(),
        b"mimi://hub.example"
    );
    host.verify_with_label(
        hub_sender.signature_key.0.as_slice(),
        GroupInfoResponse::SIGNATURE_LABEL,
        &tbs,
        signature.as_slice(),
    )
    .expect("signed by the hub");
    let plaintext = host
        .decrypt_with_label(
            &hpke.private,
            GroupInfoRatchetTreeTbe::ENCRYPTION_LABEL,
            ROOM.as_bytes(),
            encrypted_groupinfo_and_tree.kem_output.as_slice(),
            encrypted_groupinfo_and_tree.ciphertext.as_slice(),
        )
        .expect("encrypted to our key");
    let tbe = GroupInfoRatchetTreeTbe::tls_deserialize_exact(plaintext.as_slice()).expect("TBE");
    let info = tbe.group_info.parse().expect("a GroupInfo");
    assert_eq!(info.group_id().as_slice(), b"mimi://hub.example/g/lobby");
    assert!(matches!(tbe.ratchet_tree, RatchetTreeOption::Full(_)));

    // Someone who is not a participant, a client of another provider's user, an unknown room:
    // refused; a forged signature: 400.
    for (who, room) in [
        ("mimi://follower.example/d/mallory/phone", ROOM),
        ("mimi://hub.example/d/alice/phone", ROOM),
        (
            "mimi://follower.example/d/bob/tablet",
            "mimi://hub.example/r/nowhere",
        ),
    ] {
        let request = group_info_request(who, &signer, &hpke.public);
        let response = client
            .group_info(&peer, &IdentifierUri(room.to_owned()), &request)
            .await
            .expect("answered");
        assert!(
            matches!(
                response.result,
                GroupInfoResult::NotAuthorized | GroupInfoResult::NoSuchRoom
            ),
            "{who} in {room}: {:?}",
            response.result
        );
    }
    let mut forged = group_info_request(
        "mimi://follower.example/d/bob/tablet",
        &signer,
        &hpke.public,
    );
    forged.joining_code = b"changed after signing".to_vec().into();
    let refused = client
        .group_info(&peer, &room, &forged)
        .await
        .expect_err("bad signature");
    assert!(refused.to_string().contains("400"), "{refused}");
    follower.core.shutdown().await;
    hub.core.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_relays_key_material_for_its_rooms_only() {
    use bridge_mimi::wire::{
        CipherSuite, ClientKeyMaterialResult, Credential, IdentifierUri, KeyMaterialRequest,
        KeyMaterialUserCode, Protocol, RequiredCapabilities, SignaturePublicKey,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (hub, follower, hub_port, _) = pair_in_memory(dir.path()).await;
    let client = follower_client(dir.path(), hub_port);
    let peer = client
        .fetch_directory("hub.example", &format!("https://hub.example:{hub_port}"))
        .await
        .expect("directory");
    let claim = |target: &str, room: &str| KeyMaterialRequest {
        protocol: Protocol::Mls10,
        requesting_user: IdentifierUri("mimi://follower.example/u/bob".into()),
        target_user: IdentifierUri(target.into()),
        room_id: IdentifierUri(room.into()),
        acceptable_ciphersuites: vec![CipherSuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_ED25519],
        required_capabilities: RequiredCapabilities::default(),
        requester_signature_key: SignaturePublicKey(vec![1; 32].into()),
        requester_credential: Credential {
            credential_type: Credential::BASIC,
            content: b"mimi://follower.example/d/bob/bob".to_vec().into(),
        },
        key_material_request_signature: vec![2; 64].into(),
    };
    let bob = "mimi://follower.example/u/bob";
    // While the follower has no participant in the room, nothing is relayed for it.
    let refused = client
        .key_material(&peer, &IdentifierUri(bob.into()), &claim(bob, ROOM))
        .await
        .expect_err("no participant yet");
    assert!(refused.to_string().contains("403"), "{refused}");
    say(&follower, "f1", "bob", "hello").await;
    received(&hub, 1).await;
    // A user of another provider (here the follower's own bob, through the hub): relayed to
    // that provider, its KeyPackage checked on the way.
    let answer = client
        .key_material(&peer, &IdentifierUri(bob.into()), &claim(bob, ROOM))
        .await
        .expect("relayed");
    assert_eq!(answer.user_status, KeyMaterialUserCode::Success);
    assert!(matches!(
        answer.clients.first().map(|c| &c.result),
        Some(ClientKeyMaterialResult::Success(_))
    ));
    // Not for a room the hub hosts, or the hub's own user: not relayed.
    let elsewhere = client
        .key_material(
            &peer,
            &IdentifierUri(bob.into()),
            &claim(bob, "mimi://hub.example/r/nowhere"),
        )
        .await
        .expect_err("no such room");
    assert!(elsewhere.to_string().contains("404"), "{elsewhere}");
    follower.core.shutdown().await;
    hub.core.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_reactions_and_deletions_cross_both_ways() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (hub, follower, _, _) = pair_in_memory(dir.path()).await;
    let submit = |side: &Side, event: bridge_core::InboundEvent| {
        let far = side.far.clone();
        async move {
            let submitted = far.submit(event).await.expect("submitted");
            assert!(matches!(submitted, Submitted::Accepted(_)), "{submitted:?}");
        }
    };
    // Bob (follower) writes, then corrects himself: the hub's side gets the edit of its copy.
    say(&follower, "f1", "bob", "helo").await;
    received(&hub, 1).await;
    settled(&hub).await;
    let copy_at_hub = hub
        .far
        .native_id_of(messages(&hub)[0].id)
        .expect("delivered");
    submit(
        &follower,
        inbound("far-room").id("f2").from("bob").edit("f1", "hello"),
    )
    .await;
    received(&hub, 2).await;
    match &messages(&hub)[1].kind {
        EventKind::Edit { target, new } => {
            assert_eq!(target, &copy_at_hub);
            assert_eq!(new.text.body(), "hello");
        }
        other => panic!("not an edit: {other:?}"),
    }
    // Alice (hub) reacts to it and takes the reaction back: the follower's side sees both,
    // pointing at bob's own message.
    submit(
        &hub,
        inbound("far-room")
            .id("h1")
            .from("alice")
            .react(copy_at_hub.as_str(), "👍"),
    )
    .await;
    received(&follower, 1).await;
    match &messages(&follower)[0].kind {
        EventKind::Reaction { target, key } => {
            assert_eq!(target.as_str(), "f1");
            assert_eq!(key, "👍");
        }
        other => panic!("not a reaction: {other:?}"),
    }
    submit(
        &hub,
        inbound("far-room")
            .id("h2")
            .from("alice")
            .unreact(copy_at_hub.as_str(), "👍"),
    )
    .await;
    received(&follower, 2).await;
    match &messages(&follower)[1].kind {
        EventKind::Unreact { target, key, .. } => {
            assert_eq!(target.as_str(), "f1");
            assert_eq!(key, "👍");
        }
        other => panic!("not an unreact: {other:?}"),
    }
    // Alice writes and deletes her message; bob deletes his: each side sees the other's
    // deletion of its copy.
    say(&hub, "h3", "alice", "oops").await;
    received(&follower, 3).await;
    settled(&follower).await;
    let alice_copy = follower
        .far
        .native_id_of(messages(&follower)[2].id)
        .expect("delivered");
    submit(
        &hub,
        inbound("far-room").id("h4").from("alice").redact("h3"),
    )
    .await;
    received(&follower, 4).await;
    match &messages(&follower)[3].kind {
        EventKind::Redaction { target, .. } => assert_eq!(target, &alice_copy),
        other => panic!("not a deletion: {other:?}"),
    }
    submit(
        &follower,
        inbound("far-room").id("f3").from("bob").redact("f1"),
    )
    .await;
    received(&hub, 3).await;
    match &messages(&hub)[2].kind {
        EventKind::Redaction { target, .. } => assert_eq!(target, &copy_at_hub),
        other => panic!("not a deletion: {other:?}"),
    }
    // Alice mentions bob as her side knows him (a MIMI user): on bob's side the mention is of
    // bob himself, the far user the follower's puppet stands for.
    let mut mention = inbound("far-room").id("h5").from("alice").text("hi bob");
    if let EventKind::Message { content, .. } = &mut mention.kind {
        content.text = bridge_core::RichText::from_nodes(vec![
            bridge_core::richtext::Node::text("hi "),
            bridge_core::richtext::Node::Mention {
                id: "mimi://follower.example/u/bob".into(),
                text: "bob".into(),
            },
        ]);
        content.mentions.push(bridge_core::Mention {
            adapter: "mimi".into(),
            user: "mimi://follower.example/u/bob".into(),
            display: "bob".into(),
        });
    }
    submit(&hub, mention).await;
    received(&follower, 5).await;
    match &messages(&follower)[4].kind {
        EventKind::Message { content, .. } => {
            let m = content
                .mentions
                .first()
                .unwrap_or_else(|| panic!("no mention: {content:?}"));
            assert_eq!((m.adapter.as_str(), m.user.as_str()), ("far", "bob"));
        }
        other => panic!("not a message: {other:?}"),
    }
    // Nothing else crossed.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(messages(&hub).len(), 3, "{:?}", messages(&hub));
    assert_eq!(messages(&follower).len(), 5, "{:?}", messages(&follower));
    follower.core.shutdown().await;
    hub.core.shutdown().await;
}

/// The room's name and topic are its metadata: set by the hub (its bot commits them for its
/// far user), learned by the follower from the commit; a follower's side cannot change them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_sets_the_rooms_name_and_topic_and_followers_learn_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (hub, follower, _, _) = pair_in_memory(dir.path()).await;
    // The follower joins (its user speaks), so that commits reach it.
    say(&follower, "f1", "bob", "hello").await;
    received(&hub, 1).await;
    hub.far
        .submit(
            inbound("far-room")
                .id("h1")
                .from("alice")
                .topic("Lunch at noon"),
        )
        .await
        .expect("submitted");
    hub.far
        .submit(
            inbound("far-room")
                .id("h2")
                .from("alice")
                .kind(EventKind::RoomName {
                    name: "Canteen".into(),
                }),
        )
        .await
        .expect("submitted");
    let metadata = |side: &Side| {
        side.far
            .sent()
            .into_iter()
            .filter(|e| matches!(e.kind, EventKind::Topic { .. } | EventKind::RoomName { .. }))
            .map(|e| (e.kind.clone(), e.sender.user.to_string()))
            .collect::<Vec<_>>()
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while metadata(&follower).len() < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let topic = metadata(&follower);
    assert_eq!(
        topic,
        vec![
            (
                EventKind::Topic {
                    text: "Lunch at noon".into()
                },
                "mimi://hub.example/u/bridge-bot".to_owned()
            ),
            (
                EventKind::RoomName {
                    name: "Canteen".into()
                },
                "mimi://hub.example/u/bridge-bot".to_owned()
            ),
        ]
    );
    // The same topic again changes nothing: no commit, nothing new at the follower.
    hub.far
        .submit(
            inbound("far-room")
                .id("h3")
                .from("alice")
                .topic("Lunch at noon"),
        )
        .await
        .expect("submitted");
    // A follower's user changing the topic: not the hub's (policy), and nothing is stuck.
    follower
        .far
        .submit(inbound("far-room").id("f2").from("bob").topic("mine now"))
        .await
        .expect("submitted");
    settled(&hub).await;
    settled(&follower).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(metadata(&follower).len(), 2, "{:?}", follower.far.sent());
    assert_eq!(metadata(&hub), vec![], "{:?}", hub.far.sent());
    assert!(
        follower
            .core
            .dead_letters()
            .expect("dead letters")
            .is_empty()
    );
    follower.core.shutdown().await;
    hub.core.shutdown().await;
}

/// The first message `side`'s far adapter got in `room` from someone whose ID holds `from`:
/// its body.
async fn received_in(side: &Side, room: &str, from: &str) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(event) = messages(side)
            .into_iter()
            .find(|e| e.room.as_str() == room && e.sender.user.as_str().contains(from))
        {
            return body(&event.kind);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing from {from} in {room}: {:?}",
            side.far.sent()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `side`'s far adapter got a message whose body `accept` takes; panics saying
/// `what` was missing, with everything it got, after [`WAIT`].
async fn heard(side: &Side, what: &str, accept: impl Fn(&str) -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !messages(side).iter().any(|e| accept(&body(&e.kind))) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {:?}",
            side.far.sent()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `user` of `side`'s far network writes to the puppet of the MIMI user `to` (a user of the
/// other provider): the conversation is opened through the core as an adapter does for a
/// direct message, then the message is submitted in it.
async fn write_directly(side: &Side, user: &str, to: &str, id: &str, text: &str) -> String {
    let ctx = side.far.context().await.expect("running");
    // The memory adapter's own name for it, as its `open_direct` would give.
    let native = format!("dm:{user}:mimi:{to}");
    let counterpart = bridge_core::Sender {
        adapter: "mimi".into(),
        user: bridge_core::RemoteUserId::new(to),
        display_name: None,
        avatar: None,
    };
    ctx.direct_room(
        &bridge_core::RemoteRoomId::new(native.clone()),
        &bridge_core::RemoteUserId::new(user),
        None,
        &counterpart,
    )
    .await
    .expect("the direct conversation opens");
    let submitted = side
        .far
        .submit(inbound(&native).id(id).from(user).text(text))
        .await
        .expect("submitted");
    assert!(matches!(submitted, Submitted::Accepted(_)), "{submitted:?}");
    native
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_conversations_open_from_either_provider_and_carry_messages_both_ways() {
    logs_to_test_output();
    let dir = tempfile::tempdir().expect("tempdir");
    let (hub, follower, _, _) = pair_in_memory(dir.path()).await;
    // Both users have spoken in the shared room, so each provider has a puppet (with key
    // material) for its own user.
    say(&follower, "f1", "bob", "hello").await;
    received(&hub, 1).await;
    say(&hub, "h1", "alice", "hi all").await;
    received(&follower, 1).await;
    let alice = "mimi://hub.example/u/alice";
    let bob = "mimi://follower.example/u/bob";

    // Bob writes to alice's puppet: his provider hosts a new MIMI room for the two of them,
    // claims alice's KeyPackage from hers, and her provider links the room it was welcomed
    // into as a direct conversation with alice.
    let bobs_side = write_directly(&follower, "bob", alice, "d1", "psst, alice").await;
    let alices_side = format!("dm:alice:mimi:{bob}");
    assert_eq!(received_in(&hub, &alices_side, "bob").await, "psst, alice");
    // Her answer takes the way back (she is a follower of that room: /submitMessage).
    let answered = hub
        .far
        .submit(
            inbound(&alices_side)
                .id("d2")
                .from("alice")
                .text("hi bob, in private"),
        )
        .await
        .expect("submitted");
    assert!(matches!(answered, Submitted::Accepted(_)), "{answered:?}");
    assert_eq!(
        received_in(&follower, &bobs_side, "alice").await,
        "hi bob, in private"
    );

    // Alice opens one with carol, a user of the follower who has never spoken: her provider
    // has no puppet for carol, so nothing can be claimed and the open fails with a clear
    // error; nothing is linked.
    let ctx = hub.far.context().await.expect("running");
    let refused = ctx
        .direct_room(
            &bridge_core::RemoteRoomId::new("direct alice carol"),
            &bridge_core::RemoteUserId::new("alice"),
            None,
            &bridge_core::Sender {
                adapter: "mimi".into(),
                user: bridge_core::RemoteUserId::new("mimi://follower.example/u/carol"),
                display_name: None,
                avatar: None,
            },
        )
        .await
        .expect_err("carol is unknown there");
    assert!(refused.to_string().contains("UserUnknown"), "{refused}");

    // And the other way round: alice writes to dave's puppet (dave has spoken in the shared
    // room); her provider hosts that room, and dave's links it.
    say(&follower, "f2", "dave", "dave here").await;
    received(&hub, 2).await;
    let dave = "mimi://follower.example/u/dave";
    write_directly(&hub, "alice", dave, "d3", "a room of mine").await;
    let daves_side = format!("dm:dave:mimi:{alice}");
    assert_eq!(
        received_in(&follower, &daves_side, "alice").await,
        "a room of mine"
    );
    settled(&hub).await;
    settled(&follower).await;
    // The shared room saw none of it; each conversation, only its own messages.
    let in_room = |side: &Side, room: &str| {
        messages(side)
            .iter()
            .filter(|e| e.room.as_str() == room)
            .map(|e| body(&e.kind))
            .collect::<Vec<_>>()
    };
    assert_eq!(in_room(&hub, "far-room"), ["hello", "dave here"]);
    assert_eq!(in_room(&follower, "far-room"), ["hi all"]);
    assert_eq!(in_room(&hub, &alices_side), ["psst, alice"]);
    assert_eq!(in_room(&follower, &bobs_side), ["hi bob, in private"]);
    assert_eq!(in_room(&follower, &daves_side), ["a room of mine"]);
}

/// Two adapters' users with the same native ID are two MIMI users, and a far user named like
/// the bridge's bot is not the bot (the group admin of the rooms the bridge hosts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn far_users_with_the_same_name_on_two_adapters_are_two_mimi_users() {
    logs_to_test_output();
    let dir = tempfile::tempdir().expect("tempdir");
    pki(dir.path(), &["hub.example", "follower.example"]);
    let (hub_port, follower_port) = (free_port(), free_port());
    let hub_settings = section(
        dir.path(),
        "hub.example",
        hub_port,
        "follower.example",
        follower_port,
    );
    let follower_settings = section(
        dir.path(),
        "follower.example",
        follower_port,
        "hub.example",
        hub_port,
    );
    let (hub, others) = start_with(
        Arc::new(bridge_core::MemoryStore::new()),
        hub_settings,
        &["irc"],
    )
    .await;
    let follower = start(Arc::new(bridge_core::MemoryStore::new()), follower_settings).await;
    wait_serving(&[hub_port, follower_port]).await;
    // The follower's user speaks first: the follower then has a participant in the room.
    say(&follower, "f1", "dave", "hello").await;
    received(&hub, 1).await;
    let irc = &others[0];
    say(&hub, "h1", "carol", "carol on far").await;
    let submitted = irc
        .submit(
            inbound("irc-room")
                .id("i1")
                .from("carol")
                .text("carol on irc"),
        )
        .await
        .expect("submitted");
    assert!(matches!(submitted, Submitted::Accepted(_)), "{submitted:?}");
    say(&hub, "h2", "bridge-bot", "not the bot").await;
    say(&hub, "h3", "carol", "carol on far again").await;
    let got = received(&follower, 4).await;
    let by = |text: &str| {
        got.iter()
            .find(|(_, body)| body == text)
            .map(|(user, _)| user.clone())
            .unwrap_or_else(|| panic!("{text:?} not received: {got:?}"))
    };
    let (far_carol, irc_carol, named_bot) =
        (by("carol on far"), by("carol on irc"), by("not the bot"));
    assert_eq!(
        far_carol, "mimi://hub.example/u/carol",
        "the first keeps the plain name"
    );
    assert_ne!(irc_carol, far_carol, "two people, two MIMI users");
    assert!(irc_carol.contains("irc"), "{irc_carol}");
    assert_ne!(named_bot, "mimi://hub.example/u/bridge-bot");
    assert_eq!(by("carol on far again"), far_carol, "and each keeps hers");
    follower.core.shutdown().await;
    hub.core.shutdown().await;
}

/// The MLS host over the namespace the MIMI adapter named "mimi" uses in `store`.
fn adapter_host(store: &Arc<dyn Store>, domain: &str) -> bridge_mimi::mls::MlsHost {
    let namespace = bridge_core::store::keys::Key::new(bridge_core::store::keys::tag::ADAPTER)
        .str("mimi")
        .build();
    bridge_mimi::mls::MlsHost::open(
        domain,
        Arc::new(bridge_mimi::mls::kv::StoreKv::new(
            store.clone(),
            &namespace,
        )),
    )
}

/// Waits until `url` (a file the hub hosts) answers 404 (`gone`) or is served (not `gone`).
async fn hosted_file(client: &bridge_mimi::transport::MimiClient, url: &str, gone: bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match client.download("hub.example", url, 1 << 24).await {
            Err(e) if gone && e.to_string().contains("404") => return,
            Ok(_) if !gone => return,
            other => assert!(
                tokio::time::Instant::now() < deadline,
                "{url}: wanted gone={gone}, got {:?}",
                other.map(|b| b.len())
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_participant_whose_mimi_role_allows_it_deletes_others_messages_and_their_files() {
    use bridge_mimi::codepoints::{ROLE_GROUP_ADMIN, ROLE_ORDINARY_USER};
    use bridge_mimi::mls::uri::RoomUri;

    logs_to_test_output();
    let dir = tempfile::tempdir().expect("tempdir");
    pki(dir.path(), &["hub.example", "follower.example"]);
    let (hub_port, follower_port) = (free_port(), free_port());
    let hub_store: Arc<dyn Store> = Arc::new(bridge_core::MemoryStore::new());
    let follower_store: Arc<dyn Store> = Arc::new(bridge_core::MemoryStore::new());

    // The room as the hub's adapter makes it, with the follower's bob and carol in it; bob is
    // made a group admin (whose role may delete others' messages), carol stays an ordinary
    // participant. No adapter action gives a role yet, so this is done on the MLS hosts over
    // the adapters' stores before the bridges start.
    {
        let hub = adapter_host(&hub_store, "hub.example");
        let follower = adapter_host(&follower_store, "follower.example");
        let room = RoomUri::parse(ROOM).expect("room URI");
        let bot = hub.puppet(bridge_mimi::adapter::BOT_USER);
        hub.create_room(&room, &bot, bridge_mimi::mls::RoomProfile::Mimi)
            .expect("create");
        let (bob, carol) = (follower.puppet("bob"), follower.puppet("carol"));
        let key_packages = [&bob, &carol]
            .iter()
            .map(|user| follower.take_key_package(user).expect("take").expect("kp"))
            .collect();
        let added = hub
            .add_clients(&room, &bot, key_packages, ROLE_ORDINARY_USER)
            .expect("add");
        follower
            .join(
                added.welcome.as_deref().expect("welcome"),
                Some(&added.ratchet_tree),
            )
            .expect("join");
        let promoted = hub
            .set_role(&room, &bot, &bob, ROLE_GROUP_ADMIN)
            .expect("set role");
        follower
            .process(&room, &promoted.commit)
            .expect("the follower takes the role change");
        assert!(
            hub.has_capability(
                &room,
                &bob.to_string(),
                bridge_mimi::codepoints::CAPABILITY_CAN_DELETE_OTHER_MESSAGE
            )
            .expect("role")
        );
    }
    let hub = start(
        hub_store,
        section(
            dir.path(),
            "hub.example",
            hub_port,
            "follower.example",
            follower_port,
        ),
    )
    .await;
    let follower = start(
        follower_store,
        section(
            dir.path(),
            "follower.example",
            follower_port,
            "hub.example",
            hub_port,
        ),
    )
    .await;
    wait_serving(&[hub_port, follower_port]).await;
    let client = follower_client(dir.path(), hub_port);

    // Alice (hub) sends a file: the hub hosts it.
    let link = serve_file(vec![7; 10_000]).await;
    hub.far
        .submit(with_file("h1", "alice", "a cat", &link))
        .await
        .expect("submitted");
    received(&follower, 1).await;
    settled(&follower).await;
    let file = last_file(&follower);
    let copy = follower
        .far
        .native_id_of(messages(&follower)[0].id)
        .expect("delivered");
    hosted_file(&client, &file.url, false).await;

    // Carol deletes it: her own network lets her (a moderator there), but her MIMI role does
    // not, so the hub's side keeps the message and the file. Bob's next message shows that
    // everything carol's deletion could have done has been done.
    let delete = |id: &str, user: &str| {
        let mut event = inbound("far-room").id(id).from(user).redact(copy.as_str());
        event.by_moderator = true;
        event
    };
    follower
        .far
        .submit(delete("f1", "carol"))
        .await
        .expect("submitted");
    say(&follower, "f2", "bob", "after carol").await;
    let got = received(&hub, 1).await;
    assert_eq!(
        got,
        [("mimi://follower.example/u/bob".into(), "after carol".into())]
    );
    hosted_file(&client, &file.url, false).await;

    // Bob, a group admin in the MIMI room, deletes it: the hub's side gets the deletion of
    // alice's message, and the file its provider hosted for it is gone.
    follower
        .far
        .submit(delete("f3", "bob"))
        .await
        .expect("submitted");
    received(&hub, 2).await;
    match &messages(&hub)[1].kind {
        EventKind::Redaction { target, .. } => assert_eq!(target.as_str(), "h1"),
        other => panic!("not a deletion: {other:?}"),
    }
    hosted_file(&client, &file.url, true).await;
    follower.core.shutdown().await;
    hub.core.shutdown().await;
}

/// A moderator on the hub's far side deletes a follower user's message. The moderator's puppet
/// is an ordinary participant in the MIMI room (its role may not delete others' messages, and
/// receivers check that), so the hub's bot, a group admin, sends the deletion; the follower
/// takes it and its far side gets it, before what the hub sends next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moderators_deletion_at_the_hub_is_sent_by_its_bot_and_followers_take_it() {
    logs_to_test_output();
    let dir = tempfile::tempdir().expect("tempdir");
    let (hub, follower, _, _) = pair_in_memory(dir.path()).await;
    say(&follower, "f1", "bob", "spam").await;
    received(&hub, 1).await;
    settled(&hub).await;
    let copy = hub
        .far
        .native_id_of(messages(&hub)[0].id)
        .expect("delivered");

    let mut delete = inbound("far-room")
        .id("h1")
        .from("mod")
        .redact(copy.as_str());
    delete.by_moderator = true;
    let submitted = hub.far.submit(delete).await.expect("submitted");
    assert!(matches!(submitted, Submitted::Accepted(_)), "{submitted:?}");
    say(&hub, "h2", "alice", "after the deletion").await;

    let deadline = tokio::time::Instant::now() + WAIT;
    let got = loop {
        let got = messages(&follower);
        if got.iter().any(|e| body(&e.kind) == "after the deletion") {
            break got;
        }
        assert!(tokio::time::Instant::now() < deadline, "{got:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let deletion = got
        .into_iter()
        .find(|e| matches!(e.kind, EventKind::Redaction { .. }))
        .expect("the follower's far side got the deletion, before alice's message");
    match &deletion.kind {
        EventKind::Redaction { target, .. } => assert_eq!(target.as_str(), "f1"),
        other => panic!("not a deletion: {other:?}"),
    }
    assert_eq!(
        deletion.sender.user.as_str(),
        format!("mimi://hub.example/u/{}", bridge_mimi::adapter::BOT_USER),
        "deleted by the hub's bot"
    );
    follower.core.shutdown().await;
    hub.core.shutdown().await;
}

/// Read markers cross MIMI both ways as message status reports (draft-mahy-mimi-message-status):
/// each side's far adapter gets "read up to" its own message. Someone whose puppet is not in
/// the group (they never spoke) sends nothing, and does not join by reading.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_markers_cross_both_ways_as_message_status_reports() {
    logs_to_test_output();
    let dir = tempfile::tempdir().expect("tempdir");
    let (hub, follower, _, _) = pair_in_memory(dir.path()).await;
    say(&follower, "f1", "bob", "from bob").await;
    received(&hub, 1).await;
    say(&hub, "h1", "alice", "from alice").await;
    received(&follower, 1).await;
    settled(&hub).await;
    settled(&follower).await;
    let bobs_at_hub = hub
        .far
        .native_id_of(messages(&hub)[0].id)
        .expect("delivered");
    let alices_at_follower = follower
        .far
        .native_id_of(messages(&follower)[0].id)
        .expect("delivered");
    let read = |id: &str, user: &str, up_to: &RemoteEventId| {
        inbound("far-room")
            .id(id)
            .from(user)
            .kind(EventKind::ReadMarker {
                up_to: up_to.clone(),
            })
    };
    let wait_marker = |side: &Side, from: &'static str| {
        let far = side.far.clone();
        async move {
            let deadline = tokio::time::Instant::now() + WAIT;
            loop {
                let found = far.sent().into_iter().find(|e| {
                    matches!(e.kind, EventKind::ReadMarker { .. })
                        && e.sender.user.as_str().ends_with(from)
                });
                if let Some(event) = found {
                    return event;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no read marker from {from}: {:?}",
                    far.sent()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };

    // Alice (hub) has read bob's message; zed, who never spoke, reads it too.
    hub.far
        .submit(read("h2", "alice", &bobs_at_hub))
        .await
        .expect("submitted");
    hub.far
        .submit(read("h3", "zed", &bobs_at_hub))
        .await
        .expect("submitted");
    let marker = wait_marker(&follower, "/u/alice").await;
    assert!(
        matches!(&marker.kind, EventKind::ReadMarker { up_to } if up_to.as_str() == "f1"),
        "{marker:?}"
    );

    // Bob (follower) has read alice's.
    follower
        .far
        .submit(read("f2", "bob", &alices_at_follower))
        .await
        .expect("submitted");
    let marker = wait_marker(&hub, "/u/bob").await;
    assert!(
        matches!(&marker.kind, EventKind::ReadMarker { up_to } if up_to.as_str() == "h1"),
        "{marker:?}"
    );

    // After alice's next message, still nothing from zed, and zed never joined.
    say(&hub, "h4", "alice", "again").await;
    heard(&follower, "alice's message after zed's", |b| b == "again").await;
    let sent = follower.far.sent();
    assert!(
        !sent
            .iter()
            .any(|e| e.sender.user.as_str().ends_with("/u/zed")),
        "{sent:?}"
    );
    follower.core.shutdown().await;
    hub.core.shutdown().await;
}

/// Carol (of the follower's far side) says something in the room, then the follower removes
/// `link`: the hub's side sees carol's puppet leave.
async fn carols_puppet_leaves_when_the_follower_unlinks(link: Link) {
    logs_to_test_output();
    let dir = tempfile::tempdir().expect("tempdir");
    let (hub, follower, _, _) = pair_in_memory(dir.path()).await;
    say(&follower, "f1", "carol", "before the unlink").await;
    assert_eq!(received(&hub, 1).await[0].1, "before the unlink");
    follower.core.remove_link(&link).await.expect("unlinked");
    let deadline = tokio::time::Instant::now() + WAIT;
    let carol = (
        "mimi://follower.example/u/carol".to_owned(),
        bridge_core::MembershipChange::Leave,
    );
    while !memberships(&hub).contains(&carol) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "carol's puppet did not leave: {:?}",
            memberships(&hub)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    follower.core.shutdown().await;
    hub.core.shutdown().await;
}

/// The follower's own link to the MIMI room is removed: the puppets it had there (of its far
/// side's users) leave the room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_mimi_room_is_unlinked_the_puppets_in_it_leave() {
    carols_puppet_leaves_when_the_follower_unlinks(Link::new("mimi", ROOM)).await;
}

/// The follower's far side is unlinked from the room: the puppets of its users leave the MIMI
/// room (the hub's side sees them go), and the hub's own users stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_a_far_side_is_unlinked_its_users_puppets_leave_the_mimi_room() {
    carols_puppet_leaves_when_the_follower_unlinks(Link::new("far", "far-room")).await;
}

/// A moderator's `action` on `target` (adapter, user), submitted on `side`'s far side.
async fn moderate(
    side: &Side,
    id: &str,
    target: (&str, &str),
    action: bridge_core::ModerationAction,
) {
    let event = inbound("far-room")
        .id(id)
        .from("mod")
        .moderator()
        .kind(EventKind::Moderation {
            target: bridge_core::Sender {
                adapter: target.0.into(),
                user: bridge_core::RemoteUserId::new(target.1),
                display_name: None,
                avatar: None,
            },
            action,
            reason: Some("spam".into()),
        });
    let submitted = side.far.submit(event).await.expect("submitted");
    assert!(matches!(submitted, Submitted::Accepted(_)), "{submitted:?}");
}

/// A moderator of the hub's far side bans carol, a user of the follower's far side whom the
/// room shows by her MIMI user `mimi://follower.example/u/carol`. The hub's bot bans that user
/// in the group, and the follower tells its far side that the hub's bot banned carol herself
/// (her own network then does the same). Unbanned, she speaks again and is heard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_at_the_hub_reaches_the_users_own_network_and_an_unban_lets_them_back() {
    use bridge_core::ModerationAction;
    logs_to_test_output();
    let dir = tempfile::tempdir().expect("tempdir");
    let (hub, follower, _, _) = pair_in_memory(dir.path()).await;
    say(&follower, "f1", "carol", "hello").await;
    received(&hub, 1).await;
    let carol = ("mimi", "mimi://follower.example/u/carol");
    moderate(&hub, "h1", carol, ModerationAction::Ban).await;

    let ban = moderation_at(&follower).await;
    match &ban.kind {
        EventKind::Moderation { target, action, .. } => {
            assert_eq!(
                (target.adapter.as_str(), target.user.as_str()),
                ("far", "carol")
            );
            assert_eq!(*action, ModerationAction::Ban);
        }
        other => panic!("not a moderation: {other:?}"),
    }
    assert_eq!(
        ban.sender.user.as_str(),
        format!("mimi://hub.example/u/{}", bridge_mimi::adapter::BOT_USER),
        "banned by the hub's bot"
    );
    // No line of text stands in for it on either side: both carried the ban itself.
    assert!(
        !messages(&hub)
            .iter()
            .chain(messages(&follower).iter())
            .any(|e| body(&e.kind).contains("banned")),
        "{:?}",
        follower.far.sent()
    );

    // Her own network has not banned her (this far side does not act on it) and she speaks:
    // the hub keeps her out, and the follower leaves the message out of the room, no dead
    // letter.
    say(&follower, "f2", "carol", "still here?").await;
    kept_out(&hub, &follower, "still here?").await;

    moderate(&hub, "h2", carol, ModerationAction::Unban).await;
    say(&follower, "f3", "carol", "back again").await;
    heard(&hub, "carol was not heard after the unban", |b| {
        b == "back again"
    })
    .await;
    follower.core.shutdown().await;
    hub.core.shutdown().await;
}

/// A banned user of the follower's side speaks while another user of that side keeps the
/// follower in the group: the follower's copy of the participant list says she is banned, so
/// her message is left out without asking the hub, and nothing is stuck or dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_banned_users_message_is_left_out_by_the_follower_without_a_dead_letter() {
    use bridge_core::ModerationAction;
    logs_to_test_output();
    let dir = tempfile::tempdir().expect("tempdir");
    let (hub, follower, _, _) = pair_in_memory(dir.path()).await;
    say(&follower, "f1", "bob", "hello").await;
    say(&follower, "f2", "carol", "hi").await;
    received(&hub, 2).await;
    moderate(
        &hub,
        "h1",
        ("mimi", "mimi://follower.example/u/carol"),
        ModerationAction::Ban,
    )
    .await;
    moderation_at(&follower).await;
    say(&follower, "f3", "carol", "still here?").await;
    kept_out(&hub, &follower, "still here?").await;
    // Bob still speaks.
    say(&follower, "f4", "bob", "after the ban").await;
    heard(&hub, "bob was not heard after carol's ban", |b| {
        b == "after the ban"
    })
    .await;
    follower.core.shutdown().await;
    hub.core.shutdown().await;
}

/// The first moderation `side`'s far adapter got, once it came.
async fn moderation_at(side: &Side) -> bridge_core::OutboundEvent {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let found =
            (side.far.sent().into_iter()).find(|e| matches!(e.kind, EventKind::Moderation { .. }));
        if let Some(found) = found {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no moderation reached the far side: {:?}",
            side.far.sent()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `text`, said on `follower`'s far side by a banned user, leaves the follower's outbox
/// without a dead letter and never reaches `hub`'s far side.
async fn kept_out(hub: &Side, follower: &Side, text: &str) {
    settled(follower).await;
    settled(hub).await;
    assert_eq!(
        follower.core.dead_letters().expect("dead letters"),
        vec![],
        "a banned user's message became a dead letter"
    );
    assert!(
        !messages(hub).iter().any(|e| body(&e.kind) == text),
        "{text:?} reached the hub's side: {:?}",
        hub.far.sent()
    );
}

/// A moderator of the follower's far side kicks alice, a user of the hub's far side: only the
/// room's hub may remove a MIMI participant, so the follower sends the core's line of text
/// instead, and the hub's side reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kick_of_a_mimi_user_at_a_follower_is_said_in_words() {
    use bridge_core::ModerationAction;
    logs_to_test_output();
    let dir = tempfile::tempdir().expect("tempdir");
    let (hub, follower, _, _) = pair_in_memory(dir.path()).await;
    // The follower joins the room when one of its users first speaks.
    say(&follower, "f1", "mod", "I moderate here").await;
    received(&hub, 1).await;
    say(&hub, "h1", "alice", "hello").await;
    received(&follower, 1).await;
    moderate(
        &follower,
        "f2",
        ("mimi", "mimi://hub.example/u/alice"),
        ModerationAction::Kick,
    )
    .await;
    heard(&hub, "no line of text about the kick", |b| {
        b.contains("kicked")
    })
    .await;
    follower.core.shutdown().await;
    hub.core.shutdown().await;
}
