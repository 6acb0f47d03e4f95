//! The in-process server, spoken to over raw TCP.

use std::time::Duration;

use bridge_example_linechat::server::Server;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

const WAIT: Duration = Duration::from_secs(10);

struct Client {
    lines: Lines<BufReader<OwnedReadHalf>>,
    writer: OwnedWriteHalf,
}

impl Client {
    async fn connect(server: &Server) -> Client {
        let stream = TcpStream::connect(server.addr()).await.expect("connects");
        let (reader, writer) = stream.into_split();
        let lines = BufReader::new(reader).lines();
        Client { lines, writer }
    }

    async fn hello(server: &Server, name: &str) -> Client {
        let mut client = Client::connect(server).await;
        client.say(&format!("HELLO {name}")).await;
        assert_eq!(client.next().await.as_deref(), Some("WELCOME"));
        client
    }

    async fn say(&mut self, line: &str) {
        let line = format!("{line}\n");
        self.writer
            .write_all(line.as_bytes())
            .await
            .expect("writes");
    }

    /// The next line, or `None` when the server closed the connection.
    async fn next(&mut self) -> Option<String> {
        let line = tokio::time::timeout(WAIT, self.lines.next_line()).await;
        line.expect("a line in time").ok().flatten()
    }
}

#[tokio::test]
async fn misbehaving_clients_get_errors_and_keep_their_connection() {
    let server = Server::bind("127.0.0.1:0").await.expect("binds");
    let mut client = Client::connect(&server).await;
    client.say("ACK 1").await;
    assert!(client.next().await.is_some_and(|l| l.starts_with("ERR ")));
    client.say("HELLO two words").await;
    assert!(client.next().await.is_some_and(|l| l.starts_with("ERR ")));
    client.say("HELLO me").await;
    assert_eq!(client.next().await.as_deref(), Some("WELCOME"));
    for bad in [
        "HELLO again",
        "NONSENSE",
        "SEND t1 lobby",
        "SEND t1 lobby me x bad reply",
        "ACK 99",
        "ACK 0",
        "OK t1 1",
        "WELCOME",
    ] {
        client.say(bad).await;
        let answer = client.next().await;
        assert!(
            answer.as_ref().is_some_and(|l| l.starts_with("ERR ")),
            "{bad}: {answer:?}"
        );
    }
    client
        .writer
        .write_all(b"\xff\xfe\n")
        .await
        .expect("writes");
    assert!(client.next().await.is_some_and(|l| l.starts_with("ERR ")));
    // Still connected and served.
    client.say("SEND t1 lobby me - still here").await;
    assert_eq!(client.next().await.as_deref(), Some("OK t1 1"));
    assert_eq!(server.messages("lobby").len(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn sends_are_idempotent_by_txn_and_echoed() {
    let server = Server::bind("127.0.0.1:0").await.expect("binds");
    let first = server.post("lobby", "alice", None, "question");
    let mut client = Client::hello(&server, "bridge").await;
    assert_eq!(
        client.next().await.as_deref(),
        Some("EVENT 1 lobby alice - question")
    );
    client.say("ACK 1").await;
    client
        .say("SEND t1 lobby mem.bob 1 answer\\nin two lines")
        .await;
    assert_eq!(client.next().await.as_deref(), Some("OK t1 2"));
    // The OK comes before the echo of the event it created.
    assert_eq!(
        client.next().await.as_deref(),
        Some("EVENT 2 lobby mem.bob 1 answer\\nin two lines")
    );
    client
        .say("SEND t1 lobby mem.bob 1 answer\\nin two lines")
        .await;
    assert_eq!(client.next().await.as_deref(), Some("OK t1 2"));
    assert_eq!(server.duplicate_sends(), 1);

    let all = server.messages("lobby");
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].seq, first);
    assert_eq!(all[0].txn, None);
    let sent = server.from_bridge("lobby");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].text, "answer\nin two lines");
    assert_eq!(sent[0].reply_to, Some(1));
    assert_eq!(sent[0].txn.as_deref(), Some("t1"));
    assert!(server.messages("elsewhere").is_empty());
    assert_eq!(server.events_after(1).len(), 1);
    assert_eq!(server.events_after(99).len(), 0);
    server.shutdown().await;
}

#[tokio::test]
async fn unacknowledged_events_are_resent_in_order_to_the_same_name() {
    let server = Server::bind("127.0.0.1:0").await.expect("binds");
    for i in 1..=5 {
        server.post("room", "al ice", None, &format!("m{i}"));
    }
    assert_eq!(server.messages("room")[0].sender, "al_ice");
    assert_eq!(server.unacked("bridge"), 5);
    let mut client = Client::hello(&server, "bridge").await;
    for i in 1..=5 {
        let line = client.next().await.expect("an event");
        assert!(line.starts_with(&format!("EVENT {i} ")), "{line}");
    }
    // Out of order, with a repeat.
    for seq in [4, 2, 2, 1] {
        client.say(&format!("ACK {seq}")).await;
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while server.unacked("bridge") != 2 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(server.unacked("someone-else"), 5);

    // A second connection with the same name replaces the first and gets 3 and 5 again.
    let mut second = Client::hello(&server, "bridge").await;
    assert_eq!(client.next().await, None, "the older connection is closed");
    assert!(
        second
            .next()
            .await
            .is_some_and(|l| l.starts_with("EVENT 3 "))
    );
    assert!(
        second
            .next()
            .await
            .is_some_and(|l| l.starts_with("EVENT 5 "))
    );
    // New events follow as they happen.
    server.post("room", "bob", Some(3), "live");
    assert_eq!(
        second.next().await.as_deref(),
        Some("EVENT 6 room bob 3 live")
    );

    // A restart keeps the log and the acknowledgements.
    server.shutdown().await;
    assert_eq!(second.next().await, None, "connections close on shutdown");
    assert!(TcpStream::connect(server.addr()).await.is_err());
    server.post("room", "bob", None, "while down");
    server.resume().await.expect("rebinds");
    let mut third = Client::hello(&server, "bridge").await;
    for seq in [3, 5, 6, 7] {
        let line = third.next().await.expect("an event");
        assert!(line.starts_with(&format!("EVENT {seq} ")), "{line}");
    }
    server.disconnect("bridge");
    assert_eq!(third.next().await, None);
}

#[tokio::test]
async fn a_large_backlog_streams_to_several_clients() {
    let server = Server::bind("127.0.0.1:0").await.expect("binds");
    const N: u64 = 20_000;
    for i in 0..N {
        server.post("room", "alice", None, &format!("message number {i}"));
    }
    let mut a = Client::hello(&server, "a").await;
    let mut b = Client::hello(&server, "b").await;
    for seq in 1..=N {
        for client in [&mut a, &mut b] {
            let line = client.next().await.expect("an event");
            assert!(line.starts_with(&format!("EVENT {seq} ")), "{line}");
            if seq % 1000 == 0 {
                client.say(&format!("ACK {seq}")).await;
            }
        }
    }
    assert_eq!(server.events_after(0).len(), N as usize);
    server.shutdown().await;
}
