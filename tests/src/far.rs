//! The far side of a test's link: what the core's in-memory adapter was asked to deliver, and
//! a loopback web server standing in for an attachment's source.

use std::time::Duration;

use bridge_core::testkit::MemoryHandle;
use bridge_core::{EventKind, OutboundEvent};

/// The first event delivered to the memory side that `pick` accepts, within `timeout`;
/// panics listing what was delivered otherwise.
pub async fn delivered(
    memory: &MemoryHandle,
    timeout: Duration,
    mut pick: impl FnMut(&OutboundEvent) -> bool,
) -> OutboundEvent {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let sent = memory.sent();
        if let Some(found) = sent.iter().find(|e| pick(e)) {
            return found.clone();
        }
        if tokio::time::Instant::now() >= deadline {
            panic!(
                "not delivered within {timeout:?}; delivered so far:\n{}",
                summary(&sent)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One line per delivered event: kind, sender, content.
pub fn summary(sent: &[OutboundEvent]) -> String {
    sent.iter()
        .map(|e| format!("{} from {}: {:?}", e.kind.name(), e.sender.user, e.kind))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The text of a message event.
pub fn body_of(event: &OutboundEvent) -> Option<&str> {
    match &event.kind {
        EventKind::Message { content, .. } => Some(content.text.body()),
        _ => None,
    }
}

/// Serves `body` (as `image/png`) to every request on a loopback port; returns its URL.
pub async fn serve_file(body: &'static [u8]) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf).await;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: image/png\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body).await;
        }
    });
    format!("http://{addr}/picture.png")
}
