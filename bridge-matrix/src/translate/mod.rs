//! Pure translation between Matrix events (JSON as the homeserver sends and takes it) and the
//! neutral event model: no I/O, no state.
//!
//! * [`ids`]: the names of ghosts (`@_bridge_xmpp_alice=40example.org:localhost`) and portal
//!   aliases, and the specification's reversible localpart escaping.
//! * [`inbound`]: a timeline event ([`inbound::timeline_event`]) or an ephemeral event
//!   ([`inbound::ephemeral_event`]) → neutral.
//! * [`outbound`]: a neutral [`OutboundEvent`](bridge_core::OutboundEvent) → the
//!   [`Action`](outbound::Action)s to perform on the homeserver ([`outbound::actions`]).
//!
//! Events are read as [`serde_json::Value`] with small accessors rather than through ruma's
//! typed events: a strict typed parse rejects a whole event for one odd field, while here a
//! field that does not matter is ignored when malformed, and one that does makes
//! [`TranslateError::Malformed`] for that event only. Nothing panics on any input.
//!
//! # Specification
//!
//! Matrix Client-Server API v1.16: `m.room.message` (msgtypes, `org.matrix.custom.html`, media
//! `info` and `filename` captions), rich replies (`m.in_reply_to`; reply fallbacks are read
//! and cut, never written: they are deprecated since v1.13), `m.replace` edits with
//! `m.new_content`, `m.thread` with `is_falling_back`, `m.annotation` reactions,
//! `m.room.redaction` (`redacts` at top level before room version 11, in the content since),
//! `m.mentions`, `m.room.member` with `unsigned.prev_content`, `m.typing` and `m.receipt`
//! (as pushed to application services, with `room_id`), and the appendix's "mapping from
//! other character sets" for ghost localparts.

pub mod ids;
pub mod inbound;
pub mod outbound;

/// The `format` of HTML formatted bodies.
pub const HTML_FORMAT: &str = "org.matrix.custom.html";

/// Why an event could not be translated. The caller logs it and skips that event only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    /// A field the translation needs is missing or has the wrong type.
    #[error("malformed event: {0}")]
    Malformed(String),
}

/// A [`TranslateError::Malformed`].
fn malformed(why: impl Into<String>) -> TranslateError {
    TranslateError::Malformed(why.into())
}

/// Round trips: what [`outbound::actions`] sends comes back from [`inbound::timeline_event`] as
/// the same kind and content.
#[cfg(test)]
mod tests {
    use super::ids::Naming;
    use super::inbound::{InboundCtx, timeline_event};
    use super::outbound::{Action, Voice, actions, file_content};
    use bridge_core::{
        AdapterId, Attachment, EventId, EventKind, Mention, MessageContent, MsgType, OutboundEvent,
        RemoteEventId, RemoteRoomId, RemoteUserId, RichText, RoomId, Sender,
    };
    use serde_json::{Value, json};

    const ROOM: &str = "!room:localhost";

    fn naming() -> Naming {
        Naming::new("_bridge_", "localhost")
    }

    fn outbound(kind: EventKind<RemoteEventId>) -> OutboundEvent {
        OutboundEvent {
            id: EventId::from_u128(7),
            neutral_room: RoomId::new("lobby"),
            room: RemoteRoomId::new(ROOM),
            sender: Sender {
                adapter: AdapterId::new("xmpp"),
                user: RemoteUserId::new("alice@example.org"),
                display_name: Some("Alice".into()),
                avatar: None,
            },
            ts: 1_700_000_000_000,
            kind,
            degraded: false,
            moderated: false,
        }
    }

    /// The event the homeserver would echo for an action of the ghost.
    fn as_event(action: &Action) -> Value {
        let base = |event_type: &str, content: &Value| {
            json!({
                "type": event_type,
                "room_id": ROOM,
                "sender": "@_bridge_xmpp_alice=40example.org:localhost",
                "content": content,
                "origin_server_ts": 1_700_000_000_001_u64,
                "event_id": "$echo",
                "unsigned": {"age": 1, "transaction_id": "01HX"},
            })
        };
        match action {
            Action::Send {
                event_type,
                content,
            } => base(event_type, content),
            Action::Redact { event_id, reason } => {
                let mut ev = base(
                    "m.room.redaction",
                    &json!({"redacts": event_id, "reason": reason}),
                );
                ev["redacts"] = json!(event_id);
                ev
            }
            Action::State {
                event_type,
                state_key,
                content,
            } => {
                let mut ev = base(event_type, content);
                ev["state_key"] = json!(state_key);
                ev
            }
            other => panic!("no event for {other:?}"),
        }
    }

    fn round_trip(kind: EventKind<RemoteEventId>) -> EventKind<RemoteEventId> {
        let naming = naming();
        let actions = actions(&outbound(kind), &naming, &Voice::Ghost).expect("translates");
        let [action] = actions.as_slice() else {
            panic!("not one action: {actions:?}");
        };
        let adapter = AdapterId::new("matrix");
        let ctx = InboundCtx {
            adapter: &adapter,
            naming: &naming,
        };
        timeline_event(&as_event(action), None, &ctx)
            .expect("translates back")
            .expect("something to bridge")
            .kind
    }

    fn assert_round_trip(kind: EventKind<RemoteEventId>) {
        assert_eq!(round_trip(kind.clone()), kind);
    }

    fn id(s: &str) -> RemoteEventId {
        RemoteEventId::new(s)
    }

    fn texts() -> Vec<MessageContent> {
        let mut out = Vec::new();
        for msgtype in [MsgType::Text, MsgType::Emote, MsgType::Notice] {
            for text in [
                RichText::plain("hello"),
                RichText::plain("two\nlines\n\nand a paragraph"),
                RichText::plain("> a quote the author wrote\n\nand a comment"),
                RichText::from_html("<b>bold</b>, <em>it</em>, <code>code</code>"),
                RichText::from_html(
                    "<blockquote>quoted</blockquote><p>then</p><ul><li>a</li><li>b</li></ul>",
                ),
                RichText::from_html("<pre><code class=\"language-rust\">fn main() {}</code></pre>"),
                RichText::from_html("<a href=\"https://example.org/?a=1&amp;b=2\">link</a>"),
            ] {
                out.push(MessageContent {
                    msgtype,
                    text,
                    ..MessageContent::default()
                });
            }
        }
        out
    }

    #[test]
    fn messages() {
        for content in texts() {
            for (reply_to, thread) in [
                (None, None),
                (Some(id("$q")), None),
                (None, Some(id("$root"))),
                (Some(id("$q")), Some(id("$root"))),
            ] {
                assert_round_trip(EventKind::Message {
                    content: content.clone(),
                    reply_to,
                    thread,
                });
            }
        }
    }

    #[test]
    fn mentions() {
        let pill = RichText::from_html(
            "<a href=\"https://matrix.to/#/@bob:localhost\">Bob</a>: and \
             <a href=\"https://matrix.to/#/@_bridge_xmpp_carol=40example.org:localhost\">Carol</a>",
        );
        assert_round_trip(EventKind::Message {
            content: MessageContent {
                text: pill,
                mentions: vec![
                    Mention {
                        adapter: AdapterId::new("matrix"),
                        user: RemoteUserId::new("@bob:localhost"),
                        display: "Bob".into(),
                    },
                    Mention {
                        adapter: AdapterId::new("xmpp"),
                        user: RemoteUserId::new("carol@example.org"),
                        display: "Carol".into(),
                    },
                ],
                ..MessageContent::default()
            },
            reply_to: None,
            thread: None,
        });
        // Without pills, the display is the localpart or the remote user's ID.
        assert_round_trip(EventKind::Message {
            content: MessageContent {
                mentions: vec![
                    Mention {
                        adapter: AdapterId::new("matrix"),
                        user: RemoteUserId::new("@bob:localhost"),
                        display: "bob".into(),
                    },
                    Mention {
                        adapter: AdapterId::new("mimi"),
                        user: RemoteUserId::new("mimi://example.com/u/Dave"),
                        display: "mimi://example.com/u/Dave".into(),
                    },
                ],
                ..MessageContent::text("hi both")
            },
            reply_to: None,
            thread: None,
        });
    }

    #[test]
    fn edits() {
        for new in texts() {
            assert_round_trip(EventKind::Edit {
                target: id("$first"),
                new,
            });
        }
    }

    #[test]
    fn everything_else() {
        for kind in [
            EventKind::Reaction {
                target: id("$m"),
                key: "👍🏽".into(),
            },
            EventKind::Redaction {
                target: id("$m"),
                reason: Some("spam".into()),
            },
            EventKind::Redaction {
                target: id("$m"),
                reason: None,
            },
            EventKind::Topic {
                text: "Topic with <html> & \"quotes\"".into(),
            },
            EventKind::RoomName {
                name: "Lobby 🛋".into(),
            },
            EventKind::Custom {
                event_type: "org.example.poll".into(),
                content: json!({"question": "tea?", "answers": ["yes", "no"], "n": 2}),
            },
        ] {
            assert_round_trip(kind);
        }
    }

    #[test]
    fn files() {
        let naming = naming();
        let adapter = AdapterId::new("matrix");
        let ctx = InboundCtx {
            adapter: &adapter,
            naming: &naming,
        };
        let attachment = Attachment {
            name: "Cat Picture.PNG".into(),
            url: "https://example.org/upload/cat.png".into(),
            mime: Some("image/png".into()),
            size: Some(99_999),
            width: Some(800),
            height: Some(600),
        };
        let ev = outbound(EventKind::Message {
            content: MessageContent {
                attachments: vec![attachment.clone()],
                ..MessageContent::default()
            },
            reply_to: Some(id("$q")),
            thread: Some(id("$root")),
        });
        let actions = actions(&ev, &naming, &Voice::Ghost).expect("translates");
        let [
            Action::SendFile {
                attachment: file,
                msgtype,
                caption,
                reply_to,
                thread,
            },
        ] = actions.as_slice()
        else {
            panic!("not one file: {actions:?}");
        };
        let captions = [
            None,
            caption.clone(),
            Some(RichText::from_html("my <b>cat</b>")),
        ];
        for caption in captions {
            let content = file_content(
                msgtype,
                file,
                "mxc://localhost/cat",
                caption.as_ref(),
                reply_to.as_deref(),
                thread.as_deref(),
                &Voice::Ghost,
                &ev.sender,
            );
            let event = as_event(&Action::Send {
                event_type: "m.room.message".into(),
                content,
            });
            let back = timeline_event(&event, None, &ctx)
                .expect("translates back")
                .expect("something to bridge");
            let expected = EventKind::Message {
                content: MessageContent {
                    text: caption.unwrap_or_default(),
                    attachments: vec![Attachment {
                        url: "mxc://localhost/cat".into(),
                        ..attachment.clone()
                    }],
                    ..MessageContent::default()
                },
                reply_to: Some(id("$q")),
                thread: Some(id("$root")),
            };
            assert_eq!(back.kind, expected);
        }
    }

    #[test]
    fn unreact_becomes_the_redaction_of_the_reaction() {
        // The core turns the redaction of a reaction back into an unreact.
        assert_eq!(
            round_trip(EventKind::Unreact {
                target: id("$m"),
                key: "👍".into(),
                reaction: Some(id("$reaction")),
            }),
            EventKind::Redaction {
                target: id("$reaction"),
                reason: None,
            }
        );
    }
}
