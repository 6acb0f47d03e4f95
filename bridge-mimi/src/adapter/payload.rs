//! The message payload inside an MLS application message: the MIMI content format
//! (draft-ietf-mimi-content-08, [`crate::content`]), mapped to and from the neutral model.
//! These two functions are the only place the adapter touches the content format.
//!
//! A message's native ID in the core is its MIMI message ID (§3.3) in hex, the same on every
//! provider; references (replies, edits, reactions, redactions) are those IDs.

use bridge_core::{AdapterError, AdapterId, EventKind, Mention, RemoteEventId};

use crate::content::neutral::{self, InboundCtx, MimiAttachment, NeutralError, OutboundCtx};
use crate::content::{MessageId, MimiContent, Salt};

/// The encoded message a neutral event becomes, and its message ID.
pub(crate) struct Encoded {
    /// The CBOR message, the MLS plaintext.
    pub(crate) bytes: Vec<u8>,
    /// Its message ID, hex.
    pub(crate) id: RemoteEventId,
}

/// Encodes `kind`, written by `sender_uri` in `room_uri`; `mention_uri` names mentioned users;
/// `attachments` are the encrypted copies of the content's files, by position.
pub(crate) fn encode(
    kind: &EventKind<RemoteEventId>,
    sender_uri: &str,
    room_uri: &str,
    mention_uri: &dyn Fn(&Mention) -> Option<String>,
    attachments: &[MimiAttachment],
) -> Result<Encoded, AdapterError> {
    let kind = kind
        .clone()
        .map_refs(|r| MessageId::from_hex(r.as_str()).ok())
        .map_err(|e| AdapterError::Permanent(format!("a reference is not a MIMI message: {e}")))?;
    let ctx = OutboundCtx {
        sender_uri,
        room_uri,
        salt: Salt::random(),
        mention_uri,
        attachments,
    };
    let content = neutral::from_neutral(&kind, &ctx).map_err(|e| match e {
        NeutralError::Unsupported(what) => AdapterError::Unsupported(what.to_owned()),
        other => AdapterError::Permanent(other.to_string()),
    })?;
    let bytes = content
        .encode()
        .map_err(|e| AdapterError::Permanent(format!("MIMI content: {e}")))?;
    let id = content
        .message_id(&bytes)
        .map_err(|e| AdapterError::Permanent(format!("MIMI message ID: {e}")))?;
    Ok(Encoded {
        bytes,
        id: RemoteEventId::new(id.to_hex()),
    })
}

/// Why a received payload is not bridged.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PayloadError {
    /// Not valid MIMI content.
    #[error("MIMI content: {0}")]
    Content(#[from] crate::content::ContentError),
    /// It cannot be shown in the neutral model.
    #[error(transparent)]
    Neutral(#[from] NeutralError),
    /// Its `senderUri` is not the MLS sender's user.
    #[error("senderUri {claimed} but the MLS sender is {actual}")]
    WrongSender {
        /// What the message says.
        claimed: String,
        /// Whose credential signed it.
        actual: String,
    },
}

/// A received message in neutral terms.
#[derive(Debug)]
pub(crate) struct Decoded {
    /// Its message ID, hex.
    pub(crate) id: RemoteEventId,
    /// What it says.
    pub(crate) kind: EventKind<RemoteEventId>,
    /// The MIMI details of the kind's attachments, in the same order.
    pub(crate) attachments: Vec<MimiAttachment>,
}

/// Decodes a message `sender_uri` (the MLS sender's user) sent in `room_uri`, or `None` when
/// nothing in it can be shown.
pub(crate) fn decode(
    plaintext: &[u8],
    sender_uri: &str,
    room_uri: &str,
    adapter: &AdapterId,
) -> Result<Option<Decoded>, PayloadError> {
    let content = MimiContent::decode(plaintext)?;
    if let Some(claimed) = &content.extensions.sender_uri
        && claimed != sender_uri
    {
        return Err(PayloadError::WrongSender {
            claimed: claimed.clone(),
            actual: sender_uri.to_owned(),
        });
    }
    let id = content.message_id_with(plaintext, Some(sender_uri), Some(room_uri))?;
    let Some(mapped) = neutral::to_neutral(&content, &InboundCtx { adapter })? else {
        return Ok(None);
    };
    let kind = mapped
        .kind
        .map_refs(|r| Some(RemoteEventId::new(r.to_hex())))
        .map_err(|_| NeutralError::Unsupported("an unresolved reference"))?;
    Ok(Some(Decoded {
        id: RemoteEventId::new(id.to_hex()),
        kind,
        attachments: mapped.attachments,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bridge_core::MessageContent;

    #[test]
    fn a_message_and_a_reply_round_trip_with_their_ids() {
        let sender = "mimi://hub.example/u/alice";
        let room = "mimi://hub.example/r/lobby";
        let adapter = AdapterId::new("mimi");
        let none = |_: &Mention| None;
        let first = EventKind::Message {
            content: MessageContent::text("hello, MIMI"),
            reply_to: None,
            thread: None,
        };
        let sent = encode(&first, sender, room, &none, &[]).expect("encodes");
        let decoded = decode(&sent.bytes, sender, room, &adapter)
            .expect("decodes")
            .expect("a message");
        assert_eq!(decoded.id, sent.id);
        assert_eq!(decoded.kind, first);
        let reply = EventKind::Message {
            content: MessageContent::text("yes"),
            reply_to: Some(sent.id.clone()),
            thread: None,
        };
        let answer = encode(&reply, sender, room, &none, &[]).expect("encodes");
        let decoded = decode(&answer.bytes, sender, room, &adapter)
            .expect("decodes")
            .expect("a message");
        assert_eq!(decoded.kind, reply);
        // Someone else's credential with alice's senderUri: refused.
        assert!(decode(&sent.bytes, "mimi://hub.example/u/mallory", room, &adapter).is_err());
    }
}
