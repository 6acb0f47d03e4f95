//! The message payload inside an MLS application message.
//!
//! Interim format until the MIMI content format (draft-ietf-mimi-content-08, the `content`
//! module) is merged: the message's plain text body in UTF-8. These two functions are the only
//! place that knows the payload format.

use bridge_core::{MessageContent, Sender};

/// The payload of a message `sender` wrote.
pub(crate) fn encode(sender: &Sender, content: &MessageContent) -> Vec<u8> {
    let _ = sender;
    content.text.body().as_bytes().to_vec()
}

/// The message a payload carries (invalid UTF-8 is replaced, not refused).
pub(crate) fn decode(payload: &[u8]) -> MessageContent {
    MessageContent::text(String::from_utf8_lossy(payload).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips() {
        let sender = Sender {
            adapter: bridge_core::AdapterId::new("far"),
            user: bridge_core::RemoteUserId::new("alice"),
            display_name: None,
            avatar: None,
        };
        let content = MessageContent::text("hello, MIMI");
        assert_eq!(decode(&encode(&sender, &content)), content);
    }
}
