//! Tools for plugin authors (feature `testkit`): an in-memory adapter ([`MemoryAdapter`]),
//! builders for inbound events ([`inbound`]), and the conformance suite every adapter should
//! pass ([`conformance`]).

pub mod conformance;
mod memory;

pub use memory::{MemoryAdapter, MemoryHandle, Unlinked};

use crate::event::{EventKind, InboundEvent, MembershipChange, MessageContent, MsgType};
use crate::ids::RemoteEventId;
use crate::richtext::RichText;

/// Starts building an inbound event in `room`.
pub fn inbound(room: &str) -> InboundBuilder {
    InboundBuilder {
        event: InboundEvent::new(room, None, "alice", EventKind::Typing { active: false }),
    }
}

/// Builds [`InboundEvent`]s for tests: `inbound("r").id("m1").from("bob").text("hi")`.
#[derive(Debug, Clone)]
pub struct InboundBuilder {
    event: InboundEvent,
}

fn rid(id: &str) -> RemoteEventId {
    RemoteEventId::new(id)
}

impl InboundBuilder {
    /// Sets the native ID.
    pub fn id(mut self, native_id: &str) -> Self {
        self.event.native_id = Some(rid(native_id));
        self
    }

    /// Sets the sender.
    pub fn from(mut self, user: &str) -> Self {
        self.event.sender.id = user.into();
        self
    }

    /// Sets the sender's display name.
    pub fn named(mut self, name: &str) -> Self {
        self.event.sender.display_name = Some(name.to_owned());
        self
    }

    /// Marks the sender as a moderator.
    pub fn moderator(mut self) -> Self {
        self.event.by_moderator = true;
        self
    }

    /// An event of any kind.
    pub fn kind(mut self, kind: EventKind<RemoteEventId>) -> InboundEvent {
        self.event.kind = kind;
        self.event
    }

    /// A plain text message.
    pub fn text(self, body: &str) -> InboundEvent {
        self.kind(EventKind::Message {
            content: MessageContent::text(body),
            reply_to: None,
            thread: None,
        })
    }

    /// A message with formatting (GFM markdown).
    pub fn markdown(self, md: &str) -> InboundEvent {
        self.kind(EventKind::Message {
            content: MessageContent {
                text: RichText::from_markdown(md),
                ..MessageContent::default()
            },
            reply_to: None,
            thread: None,
        })
    }

    /// An emote (`/me …`).
    pub fn emote(self, body: &str) -> InboundEvent {
        self.kind(EventKind::Message {
            content: MessageContent {
                msgtype: MsgType::Emote,
                ..MessageContent::text(body)
            },
            reply_to: None,
            thread: None,
        })
    }

    /// A reply to native message `to`.
    pub fn reply(self, to: &str, body: &str) -> InboundEvent {
        self.kind(EventKind::Message {
            content: MessageContent::text(body),
            reply_to: Some(rid(to)),
            thread: None,
        })
    }

    /// A message in the thread whose root is native message `root`.
    pub fn in_thread(self, root: &str, body: &str) -> InboundEvent {
        self.kind(EventKind::Message {
            content: MessageContent::text(body),
            reply_to: None,
            thread: Some(rid(root)),
        })
    }

    /// An edit of native message `target`.
    pub fn edit(self, target: &str, body: &str) -> InboundEvent {
        self.kind(EventKind::Edit {
            target: rid(target),
            new: MessageContent::text(body),
        })
    }

    /// A reaction to native message `target`.
    pub fn react(self, target: &str, key: &str) -> InboundEvent {
        self.kind(EventKind::Reaction {
            target: rid(target),
            key: key.to_owned(),
        })
    }

    /// The removal of a reaction to native message `target`.
    pub fn unreact(self, target: &str, key: &str) -> InboundEvent {
        self.kind(EventKind::Unreact {
            target: rid(target),
            key: key.to_owned(),
            reaction: None,
        })
    }

    /// The deletion of native event `target`.
    pub fn redact(self, target: &str) -> InboundEvent {
        self.kind(EventKind::Redaction {
            target: rid(target),
            reason: None,
        })
    }

    /// A join.
    pub fn join(self) -> InboundEvent {
        self.kind(EventKind::Membership {
            change: MembershipChange::Join,
            reason: None,
        })
    }

    /// A leave.
    pub fn leave(self) -> InboundEvent {
        self.kind(EventKind::Membership {
            change: MembershipChange::Leave,
            reason: None,
        })
    }

    /// A topic change.
    pub fn topic(self, text: &str) -> InboundEvent {
        self.kind(EventKind::Topic {
            text: text.to_owned(),
        })
    }

    /// A typing notification.
    pub fn typing(self, active: bool) -> InboundEvent {
        self.kind(EventKind::Typing { active })
    }

    /// The sender's new standing in the room.
    pub fn role(self, role: crate::event::Role) -> InboundEvent {
        self.kind(EventKind::Role { role })
    }

    /// A read marker up to native message `up_to`.
    pub fn read_marker(self, up_to: &str) -> InboundEvent {
        self.kind(EventKind::ReadMarker { up_to: rid(up_to) })
    }

    /// A custom event.
    pub fn custom(self, event_type: &str, content: serde_json::Value) -> InboundEvent {
        self.kind(EventKind::Custom {
            event_type: event_type.to_owned(),
            content,
        })
    }
}
