//! `linechat-server [ADDR]` (default `127.0.0.1:7070`): a linechat server for demos.
//!
//! Type `room user text` on stdin to post as a human; every new event of the log is printed,
//! those sent by a bridge marked with their transaction ID. Ctrl-C stops it.

use std::io::BufRead;

use bridge_example_linechat::server::{Message, Server};
use tokio::sync::mpsc;

fn show(m: &Message) {
    let reply = m
        .reply_to
        .map(|r| format!(" (reply to #{r})"))
        .unwrap_or_default();
    let via = m
        .txn
        .as_ref()
        .map(|t| format!(" [bridge txn {t}]"))
        .unwrap_or_default();
    println!(
        "#{} {} <{}>{reply}{via} {}",
        m.seq, m.room, m.sender, m.text
    );
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7070".to_owned());
    let server = Server::bind(addr.as_str()).await?;
    println!(
        "linechat server listening on {}; type `room user text` to post",
        server.addr()
    );
    let mut changes = server.subscribe();
    // Stdin is read on a plain thread: blocking reads have no place on the async runtime.
    let (typed, mut stdin) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if typed.send(line).is_err() {
                break;
            }
        }
    });
    let mut stdin_open = true;
    let mut shown = 0;
    loop {
        tokio::select! {
            line = stdin.recv(), if stdin_open => match line {
                None => stdin_open = false,
                Some(line) => {
                    let mut parts = line.splitn(3, ' ').filter(|p| !p.is_empty());
                    match (parts.next(), parts.next(), parts.next()) {
                        (Some(room), Some(user), Some(text)) => {
                            server.post(room, user, None, text);
                        }
                        _ => eprintln!("usage: <room> <user> <text>"),
                    }
                }
            },
            changed = changes.changed() => {
                if changed.is_err() {
                    break;
                }
                for m in server.events_after(shown) {
                    show(&m);
                    shown = m.seq;
                }
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    server.shutdown().await;
    Ok(())
}
