//! Posting: a `SEND` and its `OK`, for deliveries and for answers to admin commands (posted as
//! the bridge's own linechat user, never as a puppet).

use bridge_core::{AdapterError, RemoteRoomId, RemoteUserId};

use tokio::sync::oneshot;

use crate::protocol::Post;
use crate::{LinechatAdapter, SEND_TIMEOUT};

/// The linechat user the bridge itself posts as.
pub const BRIDGE_USER: &str = "bridge";

/// Posts `text` in `room` as [`BRIDGE_USER`], registered as ours first so that its `EVENT`
/// coming back is an echo, never a command.
pub(crate) async fn send(
    adapter: &LinechatAdapter,
    room: &RemoteRoomId,
    text: &str,
) -> Result<(), AdapterError> {
    let me = RemoteUserId::new(BRIDGE_USER);
    adapter.register_puppet(&me).await?;
    let post = Post {
        room: room.to_string(),
        sender: me.to_string(),
        reply_to: None,
        text: text.to_owned(),
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    self::post(adapter, format!("notice-{nanos}"), post)
        .await
        .map(|_| ())
}

/// Queues a `SEND` and waits for its `OK`: the sequence number of the event it made.
pub(crate) async fn post(
    adapter: &LinechatAdapter,
    txn: String,
    post: Post,
) -> Result<u64, AdapterError> {
    let (waiter, ok) = oneshot::channel();
    let out = adapter.out.lock().clone();
    if out.is_none_or(|out| out.send((txn, post, waiter)).is_err()) {
        return Err(AdapterError::transient("not connected"));
    }
    match tokio::time::timeout(SEND_TIMEOUT, ok).await {
        Ok(Ok(seq)) => Ok(seq),
        Ok(Err(_)) => Err(AdapterError::transient("disconnected before the OK")),
        Err(_) => Err(AdapterError::transient("no OK within 10 s")),
    }
}
