//! What the fuzz targets (`bridge-xmpp/fuzz`, run by `scripts/fuzz.sh`) check, shared with the
//! test that replays their committed corpora (`tests/fuzz_corpus.rs`). Not part of the API.

use tokio::io::AsyncWriteExt as _;

use crate::component::{ComponentConnection, ComponentError};
use crate::depth_guard::Cutter;
use crate::translate::{Limits, parse_message};

/// What a server says before `data`: its stream header and the handshake's acceptance.
const SERVER_OPENING: &[u8] = b"<?xml version='1.0'?><stream:stream \
    xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' \
    from='bridge.example' id='fuzz'><handshake/>";

/// `data` as what a server sends on a component stream after the handshake: every stanza the
/// reader yields is parsed as a message. Nothing may panic, and the reader ends.
pub fn stanza_parse(data: &[u8]) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().build() else {
        return;
    };
    runtime.block_on(async {
        let (ours, mut server) = tokio::io::duplex(64 * 1024);
        let feed = async move {
            // The bridge's side reads concurrently; a write error means it stopped reading.
            let _ = server.write_all(SERVER_OPENING).await;
            let _ = server.write_all(data).await;
            let _ = server.shutdown().await;
            // Keep the server's end open until the reader is done (it reads the bridge's
            // header and handshake, which nobody answers).
            server
        };
        let read = async move {
            let Ok(mut conn) = ComponentConnection::handshake(ours, "bridge.example", "s").await
            else {
                return;
            };
            let limits = Limits::default();
            loop {
                match conn.next_element().await {
                    Ok(el) => {
                        if el.name() == "message" {
                            let _ = parse_message(&el, &limits);
                        }
                    }
                    Err(ComponentError::Skipped(_)) => {}
                    Err(_) => return,
                }
            }
        };
        let (_server, ()) = tokio::join!(feed, read);
    });
}

/// `data` through the client-mode depth guard, whole and split at `split` (bytes): nothing may
/// panic, and both give the same bytes.
pub fn depth_guard(data: &[u8], split: usize) {
    let mut whole = Vec::new();
    Cutter::default().feed(data, &mut whole);
    let mut parts = Vec::new();
    let mut cutter = Cutter::default();
    let (a, b) = data.split_at(split.min(data.len()));
    cutter.feed(a, &mut parts);
    cutter.feed(b, &mut parts);
    assert_eq!(
        whole, parts,
        "the guard's output depends on how the input is split"
    );
    assert!(whole.len() <= data.len(), "the guard added bytes");
}
