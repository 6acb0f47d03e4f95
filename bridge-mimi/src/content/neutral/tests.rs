//! Each case both ways: the draft's examples to the neutral model, and neutral events through
//! MIMI content (encoded and decoded) back to the same neutral event.

use std::path::Path;

use bridge_core::richtext::Node;
use bridge_core::{
    AdapterId, Attachment, EventKind, Mention, MessageContent, MsgType, RemoteUserId, RichText,
};

use super::*;
use crate::content::{ContentError, MimiContent};

fn adapter() -> AdapterId {
    AdapterId::new("mimi")
}

/// An example of the draft, decoded, with its message ID.
fn vector(name: &str) -> (MimiContent, MessageId) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/mimi-content")
        .join(format!("{name}.cbor"));
    let cbor = std::fs::read(path).expect("read");
    let content = MimiContent::decode(&cbor).expect("decode");
    let id = content.message_id(&cbor).expect("id");
    (content, id)
}

fn inbound(name: &str) -> Result<Option<Neutral>, NeutralError> {
    let adapter = adapter();
    to_neutral(&vector(name).0, &InboundCtx { adapter: &adapter })
}

fn mapped(name: &str) -> Neutral {
    inbound(name).expect("maps").expect("something to bridge")
}

fn message(neutral: &Neutral) -> (&MessageContent, Option<MessageId>, Option<MessageId>) {
    match &neutral.kind {
        EventKind::Message {
            content,
            reply_to,
            thread,
        } => (content, *reply_to, *thread),
        other => panic!("not a message: {other:?}"),
    }
}

#[test]
fn original_reply_and_mention() {
    let (_, original) = vector("original");
    let neutral = mapped("original");
    let (content, reply_to, thread) = message(&neutral);
    assert_eq!(
        content.text.body(),
        "Hi everyone, we just shipped release 2.0. Good  work!"
    );
    assert!(content.text.is_formatted());
    assert_eq!((reply_to, thread), (None, None));

    let neutral = mapped("reply");
    assert_eq!(message(&neutral).1, Some(original));

    let neutral = mapped("mention");
    let (content, reply_to, _) = message(&neutral);
    assert_eq!(reply_to, Some(original));
    assert_eq!(
        content.text.body(),
        "Kudos to @Alice Smith for making the release happen!"
    );
    assert_eq!(
        content.mentions,
        [Mention {
            adapter: adapter(),
            user: RemoteUserId::new("mimi://example.com/u/alice-smith"),
            display: "@Alice Smith".into(),
        }]
    );
    // The HTML variant: the text, but its mimi: link is not read as a mention.
    let neutral = mapped("mention-html");
    let (content, _, _) = message(&neutral);
    assert_eq!(
        content.text.body(),
        "Kudos to @Alice Smith for making the release happen!"
    );
}

#[test]
fn edit_delete_reaction_unlike() {
    let (_, original) = vector("original");
    let (_, reply) = vector("reply");
    let (_, reaction) = vector("reaction");
    match mapped("edit").kind {
        EventKind::Edit { target, new } => {
            assert_eq!(target, reply);
            assert_eq!(new.text.body(), "Right on! Congratulations y'all!");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        mapped("delete").kind,
        EventKind::Redaction {
            target: reply,
            reason: None
        }
    );
    assert_eq!(
        mapped("reaction").kind,
        EventKind::Reaction {
            target: original,
            key: "\u{2764}".into()
        }
    );
    assert_eq!(
        mapped("unlike").kind,
        EventKind::Unreact {
            target: original,
            key: String::new(),
            reaction: Some(reaction)
        }
    );
    // multipart-2: three reactions but no inReplyTo.
    assert_eq!(
        inbound("multipart-2"),
        Err(NeutralError::NoTarget("reaction"))
    );
}

#[test]
fn attachment_keeps_what_decryption_needs() {
    let neutral = mapped("attachment");
    let (content, _, _) = message(&neutral);
    assert_eq!(
        content.attachments,
        [Attachment {
            name: "bigfile.mp4".into(),
            url: "https://example.com/storage/8ksB4bSrrRE.mp4".into(),
            mime: Some("video/mp4".into()),
            size: Some(708_234_961),
            width: None,
            height: None,
        }]
    );
    assert_eq!(content.text.body(), "2 hours of key signing video");
    let [mimi] = neutral.attachments.as_slice() else {
        panic!("one attachment");
    };
    assert_eq!(mimi.disposition, Disposition::ATTACHMENT);
    assert_eq!(mimi.part.enc_alg, ExternalPart::AES_128_GCM);
    assert_eq!(hex(&mimi.part.key), "21399320958a6f4c745dde670d95e0d8");
    assert_eq!(hex(&mimi.part.nonce), "c86cf2c33f21527d1dd76f5b");
    assert_eq!(mimi.part.hash_alg, 1);
    assert_eq!(mimi.part.content_hash.len(), 32);
}

#[test]
fn expiring_conferencing_and_multiparts() {
    let neutral = mapped("expiring");
    assert_eq!(
        neutral.expires,
        Some(Expiration {
            relative: false,
            time: 1_644_390_004
        })
    );
    let neutral = mapped("conferencing");
    assert_eq!(neutral.topic.as_deref(), Some(&b"Foo 118"[..]));
    let (content, _, thread) = message(&neutral);
    assert_eq!(thread, None);
    assert_eq!(
        content.text.body(),
        "Join the Foo 118 conference <https://example.com/join/12345>"
    );
    assert!(content.text.is_formatted(), "a link");
    assert!(content.attachments.is_empty());
    // chooseOne of markdown and a vendor format: the markdown.
    let neutral = mapped("multipart-1");
    assert_eq!(message(&neutral).0.text.body(), "Welcome!");
    // chooseOne of (HTML en/fr + GIF) and (HTML en/fr + PNG): the first, in English; the inline
    // image has no place in the neutral model.
    let neutral = mapped("multipart-3");
    let (content, _, _) = message(&neutral);
    assert_eq!(content.text.body(), "Welcome!");
    assert!(content.attachments.is_empty());
}

fn id(n: u8) -> MessageId {
    let mut bytes = [n; 32];
    bytes[0] = 1;
    MessageId::from_slice("test", &bytes).expect("id")
}

fn puppet_uri(mention: &Mention) -> Option<String> {
    (mention.adapter.as_str() == "matrix").then(|| {
        format!(
            "mimi://bridge.example/u/{}",
            mention
                .user
                .as_str()
                .replace('@', "%40")
                .replace(':', "%3A")
        )
    })
}

/// `kind` → MIMI content → bytes → MIMI content → neutral.
fn round_trip(kind: &EventKind<MessageId>, attachments: &[MimiAttachment]) -> (Neutral, String) {
    let ctx = OutboundCtx {
        sender_uri: "mimi://bridge.example/u/alice",
        room_uri: "mimi://bridge.example/r/lobby",
        salt: Salt([9; 16]),
        mention_uri: &puppet_uri,
        attachments,
    };
    let content = from_neutral(kind, &ctx).expect("maps");
    let cbor = content.encode().expect("encodes");
    let decoded = MimiContent::decode(&cbor).expect("decodes");
    assert_eq!(decoded, content);
    let body = match &decoded.body.part {
        Part::Single { content, .. } => String::from_utf8_lossy(content).into_owned(),
        _ => String::new(),
    };
    let adapter = adapter();
    let neutral = to_neutral(&decoded, &InboundCtx { adapter: &adapter })
        .expect("maps back")
        .expect("something");
    (neutral, body)
}

fn message_kind(content: MessageContent, reply_to: Option<MessageId>) -> EventKind<MessageId> {
    EventKind::Message {
        content,
        reply_to,
        thread: Some(id(7)),
    }
}

#[test]
fn plain_and_formatted_messages_round_trip() {
    let plain = message_kind(MessageContent::text("hello *not bold*"), Some(id(2)));
    let (back, body) = round_trip(&plain, &[]);
    assert_eq!(back.kind, plain);
    assert_eq!(body, "hello *not bold*");

    let formatted = message_kind(
        MessageContent {
            text: RichText::from_markdown("**bold** and _it_ and `code`"),
            ..MessageContent::default()
        },
        None,
    );
    let (back, _) = round_trip(&formatted, &[]);
    assert_eq!(back.kind, formatted);

    let emote = message_kind(
        MessageContent {
            msgtype: MsgType::Emote,
            text: RichText::plain("waves"),
            ..MessageContent::default()
        },
        None,
    );
    let (back, body) = round_trip(&emote, &[]);
    assert_eq!(back.kind, emote);
    assert_eq!(body, "/me waves");
}

#[test]
fn mentions_become_mimi_links_and_come_back() {
    let matrix = AdapterId::new("matrix");
    let content = MessageContent {
        text: RichText::from_nodes(vec![
            Node::text("thanks "),
            Node::Mention {
                id: "@bob:example.org".into(),
                text: "Bob".into(),
            },
            Node::text("!"),
        ]),
        mentions: vec![Mention {
            adapter: matrix,
            user: RemoteUserId::new("@bob:example.org"),
            display: "Bob".into(),
        }],
        ..MessageContent::default()
    };
    let (back, body) = round_trip(&message_kind(content, None), &[]);
    assert_eq!(
        body,
        "thanks [Bob](mimi://bridge.example/u/%40bob%3Aexample.org)!"
    );
    let (content, _, _) = message(&back);
    assert_eq!(content.text.body(), "thanks Bob!");
    assert_eq!(
        content.mentions,
        [Mention {
            adapter: adapter(),
            user: RemoteUserId::new("mimi://bridge.example/u/%40bob%3Aexample.org"),
            display: "Bob".into(),
        }]
    );
}

#[test]
fn attachments_round_trip_with_their_keys() {
    let file = Attachment {
        name: "cat.png".into(),
        url: "https://bridge.example/media/cat".into(),
        mime: Some("image/png".into()),
        size: Some(1234),
        width: None,
        height: None,
    };
    let mimi = MimiAttachment {
        disposition: Disposition::INLINE,
        part: ExternalPart {
            enc_alg: ExternalPart::AES_128_GCM,
            key: vec![1; 16],
            nonce: vec![2; 12],
            hash_alg: 1,
            content_hash: vec![3; 32],
            ..ExternalPart::default()
        },
    };
    let kind = message_kind(
        MessageContent {
            text: RichText::plain("a cat"),
            attachments: vec![file.clone()],
            ..MessageContent::default()
        },
        None,
    );
    let (back, _) = round_trip(&kind, std::slice::from_ref(&mimi));
    assert_eq!(back.kind, kind);
    let [got] = back.attachments.as_slice() else {
        panic!("one attachment");
    };
    assert_eq!(got.disposition, Disposition::INLINE);
    assert_eq!(got.part.key, mimi.part.key);
    assert_eq!(got.part.content_hash, mimi.part.content_hash);
    assert_eq!(got.part.url, file.url);
    assert_eq!(got.part.size, 1234);
    // Without MIMI details: an unencrypted external part, and no text: the file alone.
    let kind = message_kind(
        MessageContent {
            attachments: vec![file],
            ..MessageContent::default()
        },
        None,
    );
    let (back, _) = round_trip(&kind, &[]);
    assert_eq!(back.kind, kind);
    assert_eq!(back.attachments[0].part.enc_alg, 0);
    assert_eq!(back.attachments[0].disposition, Disposition::ATTACHMENT);
}

#[test]
fn edits_reactions_unreacts_and_redactions_round_trip() {
    let edit = EventKind::Edit {
        target: id(3),
        new: MessageContent::text("fixed"),
    };
    assert_eq!(round_trip(&edit, &[]).0.kind, edit);

    let reaction = EventKind::Reaction {
        target: id(3),
        key: "👍".into(),
    };
    assert_eq!(round_trip(&reaction, &[]).0.kind, reaction);

    let unreact = EventKind::Unreact {
        target: id(3),
        key: "👍".into(),
        reaction: Some(id(4)),
    };
    assert_eq!(
        round_trip(&unreact, &[]).0.kind,
        EventKind::Unreact {
            target: id(3),
            key: String::new(),
            reaction: Some(id(4)),
        }
    );

    let redaction = EventKind::Redaction {
        target: id(5),
        reason: Some("spam".into()),
    };
    assert_eq!(
        round_trip(&redaction, &[]).0.kind,
        EventKind::Redaction {
            target: id(5),
            reason: None
        }
    );
}

#[test]
fn what_mimi_cannot_carry_is_refused() {
    let ctx = OutboundCtx {
        sender_uri: "mimi://a/u/b",
        room_uri: "mimi://a/r/c",
        salt: Salt([0; 16]),
        mention_uri: &|_| None,
        attachments: &[],
    };
    for kind in [
        EventKind::Typing { active: true },
        EventKind::Topic { text: "t".into() },
        EventKind::Unreact {
            target: id(1),
            key: "x".into(),
            reaction: None,
        },
        EventKind::Message {
            content: MessageContent::default(),
            reply_to: None,
            thread: None,
        },
    ] {
        assert!(matches!(
            from_neutral(&kind, &ctx),
            Err(NeutralError::Unsupported(_))
        ));
    }
}

#[test]
fn references_map_like_event_kinds() {
    let neutral = mapped("reply");
    let mapped = neutral
        .map_refs(|id| Some(id.to_hex()))
        .expect("all resolved");
    match mapped.kind {
        EventKind::Message { reply_to, .. } => {
            assert!(reply_to.is_some_and(|r| r.starts_with("017ce548")));
        }
        other => panic!("{other:?}"),
    }
    let _ = ContentError::Truncated;
}

#[test]
fn a_read_marker_is_a_status_report_and_comes_back() {
    let kind = EventKind::ReadMarker { up_to: id(5) };
    let ctx = OutboundCtx {
        sender_uri: "mimi://bridge.example/u/alice",
        room_uri: "mimi://bridge.example/r/lobby",
        salt: Salt([9; 16]),
        mention_uri: &puppet_uri,
        attachments: &[],
    };
    let content = from_neutral(&kind, &ctx).expect("maps");
    assert_eq!(content.body.disposition, Disposition::SESSION);
    match &content.body.part {
        Part::Single {
            content_type,
            content,
        } => {
            assert_eq!(content_type, status::MEDIA_TYPE);
            assert_eq!(
                status::decode(content).expect("a report"),
                vec![(id(5), status::Status::READ)]
            );
        }
        other => panic!("not one part: {other:?}"),
    }
    let (neutral, _) = round_trip(&kind, &[]);
    assert_eq!(neutral.kind, kind);

    // A report of other statuses only is nothing to bridge; a broken one is an error.
    let mut delivered = content.clone();
    delivered.body.part = Part::Single {
        content_type: status::MEDIA_TYPE.to_owned(),
        content: status::encode(&[(id(5), status::Status::DELIVERED)]),
    };
    let adapter = adapter();
    let ctx = InboundCtx { adapter: &adapter };
    assert!(matches!(to_neutral(&delivered, &ctx), Ok(None)));
    let mut broken = content;
    broken.body.part = Part::Single {
        content_type: status::MEDIA_TYPE.to_owned(),
        content: vec![0x81],
    };
    assert!(matches!(
        to_neutral(&broken, &ctx),
        Err(NeutralError::Status(_))
    ));
}
