//! Events of the neutral model.
//!
//! An [`Event`] is what the core stores and routes. Its [`EventKind`] is generic over how it refers
//! to other events: the core uses neutral [`EventId`]s; adapters see the same kinds with
//! [`RemoteEventId`]s of their own protocol, inbound ([`InboundEvent`]) and outbound
//! ([`OutboundEvent`]). [`EventKind::map_refs`] translates between the two.

use serde::{Deserialize, Serialize};

use crate::ids::{AdapterId, EventId, RemoteEventId, RemoteRoomId, RemoteUserId, RoomId};
use crate::richtext::RichText;

/// Who wrote an event: a native user of one adapter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sender {
    /// The adapter the user lives on.
    pub adapter: AdapterId,
    /// The user's native ID.
    pub user: RemoteUserId,
    /// The display name known at the time of the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// An avatar URL (adapter-specific scheme) known at the time of the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar: Option<String>,
}

impl Sender {
    /// The name to show for this user: the display name, else the native ID.
    pub fn name(&self) -> &str {
        self.display_name.as_deref().unwrap_or(self.user.as_str())
    }
}

/// Where an event came from, so that it is never sent back there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The adapter that received it.
    pub adapter: AdapterId,
    /// The native room it was posted in.
    pub room: RemoteRoomId,
    /// Its native ID, when the protocol gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<RemoteEventId>,
}

/// A stored, routed event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Neutral ID, issued by the core; its order is the order of acceptance.
    pub id: EventId,
    /// The neutral room it belongs to.
    pub room: RoomId,
    /// Its author.
    pub sender: Sender,
    /// The native room and event it came from.
    pub origin: Origin,
    /// Milliseconds since the Unix epoch, from the source when it gives one.
    pub ts: u64,
    /// What happened.
    pub kind: EventKind<EventId>,
}

/// Text, emote (`/me`) or notice (automated message).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MsgType {
    /// An ordinary message.
    #[default]
    Text,
    /// An action, written in the third person (`/me waves`).
    Emote,
    /// A message from a bot or service, not to be answered automatically.
    Notice,
}

/// A file attached to a message. The bytes stay where they are; `url` says how the source
/// adapter can fetch them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// File name to show.
    pub name: String,
    /// Where the source adapter can fetch it (an HTTPS URL, an `mxc://` URI, …).
    pub url: String,
    /// MIME type, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime: Option<String>,
    /// Size in bytes, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Image or video width in pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Image or video height in pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
}

/// A user mentioned in a message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mention {
    /// The adapter the mentioned user lives on.
    pub adapter: AdapterId,
    /// The mentioned user's native ID.
    pub user: RemoteUserId,
    /// The text that names them in the body.
    pub display: String,
}

/// The content of a message or of an edit's new version.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MessageContent {
    /// Text, emote or notice.
    #[serde(default)]
    pub msgtype: MsgType,
    /// The text, with optional formatting.
    pub text: RichText,
    /// Attached files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
    /// Users mentioned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mentions: Vec<Mention>,
}

impl MessageContent {
    /// A plain text message.
    pub fn text(body: impl Into<String>) -> Self {
        Self {
            text: RichText::plain(body),
            ..Self::default()
        }
    }
}

/// A change of a user's membership in a room.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MembershipChange {
    /// The user joined.
    Join,
    /// The user left.
    Leave,
    /// The user was removed by someone else.
    Kick,
    /// The user was banned.
    Ban,
    /// The user was invited.
    Invite,
}

/// What a moderator did to another user ([`EventKind::Moderation`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModerationAction {
    /// Removed them from the room; they may come back.
    Kick,
    /// Removed them and keeps them out.
    Ban,
    /// Lets them in again after a ban.
    Unban,
}

impl ModerationAction {
    /// A short verb in the past tense, for notices ("kicked", "banned", "unbanned").
    pub fn past(self) -> &'static str {
        match self {
            Self::Kick => "kicked",
            Self::Ban => "banned",
            Self::Unban => "unbanned",
        }
    }
}

/// A user's availability.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceState {
    /// Online and available.
    Online,
    /// Away for a short while.
    Away,
    /// Away for a long while.
    ExtendedAway,
    /// Do not disturb.
    DoNotDisturb,
    /// Offline.
    Offline,
}

/// A user's standing in a room: what the room lets them do, from least to most. Each protocol
/// has its own scale (XMPP affiliations and roles, Matrix power levels, MIMI room roles); the
/// adapters map theirs onto these five.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// May read but not speak (an XMPP visitor, a Matrix user below the level to send).
    Muted,
    /// An ordinary participant.
    Member,
    /// May act on other people's messages and remove people (an XMPP moderator, a Matrix
    /// moderator).
    Moderator,
    /// Manages the room besides moderating (an XMPP admin, a Matrix admin).
    Admin,
    /// Owns the room (an XMPP owner, a Matrix room creator from room version 12 on).
    Owner,
}

impl Role {
    /// The name used in logs and admin messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Muted => "muted",
            Self::Member => "member",
            Self::Moderator => "moderator",
            Self::Admin => "admin",
            Self::Owner => "owner",
        }
    }

    /// The role [`Role::name`] names.
    pub fn parse(name: &str) -> Option<Self> {
        [
            Self::Muted,
            Self::Member,
            Self::Moderator,
            Self::Admin,
            Self::Owner,
        ]
        .into_iter()
        .find(|role| role.name() == name)
    }
}

/// What happened. `R` is how the event refers to other events: [`EventId`] inside the core,
/// [`RemoteEventId`] at the adapters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "snake_case",
    bound(deserialize = "R: Deserialize<'de>")
)]
#[non_exhaustive]
pub enum EventKind<R = EventId> {
    /// A message, possibly a reply or in a thread.
    Message {
        /// What it says.
        content: MessageContent,
        /// The message it answers.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_to: Option<R>,
        /// The root of the thread it belongs to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        thread: Option<R>,
    },
    /// A new version of an earlier message by the same sender.
    Edit {
        /// The message being replaced (always the first version).
        target: R,
        /// The new content.
        new: MessageContent,
    },
    /// A reaction (usually an emoji) to a message.
    Reaction {
        /// The message reacted to.
        target: R,
        /// The reaction, e.g. "👍".
        key: String,
    },
    /// The removal of the sender's own reaction.
    Unreact {
        /// The message that had been reacted to.
        target: R,
        /// The reaction removed.
        key: String,
        /// The reaction event itself, where the protocol removes reactions by redacting it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reaction: Option<R>,
    },
    /// The deletion of a message (retraction, redaction, moderation).
    Redaction {
        /// The message deleted.
        target: R,
        /// Why, when given.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// The sender joined, left, was kicked, banned or invited.
    Membership {
        /// What changed.
        change: MembershipChange,
        /// Why, when given.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// The sender's display name or avatar changed.
    Profile {
        /// The new display name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        display_name: Option<String>,
        /// The new avatar URL.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        avatar: Option<String>,
    },
    /// The room's topic (MUC subject) changed.
    Topic {
        /// The new topic.
        text: String,
    },
    /// The room's name changed.
    RoomName {
        /// The new name.
        name: String,
    },
    /// The sender started or stopped typing.
    Typing {
        /// Whether they are typing now.
        active: bool,
    },
    /// The sender has read everything up to an event.
    ReadMarker {
        /// The last event read.
        up_to: R,
    },
    /// The sender's presence changed.
    Presence {
        /// The new state.
        state: PresenceState,
        /// A status message.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<String>,
    },
    /// The sender's standing in the room changed, or is first said (a moderator seen joining).
    /// Not said for members when they join: [`Role::Member`] is what a join implies.
    Role {
        /// The new standing.
        role: Role,
    },
    /// The sender, a moderator, kicked, banned or unbanned another user of the room: one of any
    /// network. Each target network does the same there as the moderator's puppet (or, where
    /// the puppet may not, as the bridge, since the sender's own network let them): a user of
    /// that network is removed there, a puppet of someone else's leaves. A user removing
    /// themselves, or one removed without a moderator known, is a
    /// [`EventKind::Membership`] change instead.
    Moderation {
        /// Whom it is about.
        target: Sender,
        /// What was done.
        action: ModerationAction,
        /// Why, when given.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// An event type the neutral model does not know, carried as JSON to every adapter that can
    /// carry it.
    Custom {
        /// The protocol's type string, e.g. `org.example.poll`.
        event_type: String,
        /// The payload.
        content: serde_json::Value,
    },
}

/// A reference that could not be translated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the {0} of this event is unknown here")]
pub struct UnresolvedRef(pub &'static str);

impl<R> EventKind<R> {
    /// A short name of the kind, for logs and metric labels.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Message { .. } => "message",
            Self::Edit { .. } => "edit",
            Self::Reaction { .. } => "reaction",
            Self::Unreact { .. } => "unreact",
            Self::Redaction { .. } => "redaction",
            Self::Membership { .. } => "membership",
            Self::Profile { .. } => "profile",
            Self::Topic { .. } => "topic",
            Self::RoomName { .. } => "room_name",
            Self::Typing { .. } => "typing",
            Self::ReadMarker { .. } => "read_marker",
            Self::Presence { .. } => "presence",
            Self::Role { .. } => "role",
            Self::Moderation { .. } => "moderation",
            Self::Custom { .. } => "custom",
        }
    }

    /// Ephemeral kinds (typing, read markers, presence) are delivered best-effort: not stored,
    /// not retried, not worth delaying anything for.
    pub fn is_ephemeral(&self) -> bool {
        matches!(
            self,
            Self::Typing { .. } | Self::ReadMarker { .. } | Self::Presence { .. }
        )
    }

    /// Every event this one refers to: the reply and thread of a message, the target of an edit,
    /// reaction, unreact, redaction or read marker, the reaction event of an unreact.
    pub fn refs(&self) -> Vec<&R> {
        match self {
            Self::Message {
                reply_to, thread, ..
            } => reply_to.iter().chain(thread).collect(),
            Self::Edit { target, .. }
            | Self::Reaction { target, .. }
            | Self::Redaction { target, .. } => vec![target],
            Self::Unreact {
                target, reaction, ..
            } => std::iter::once(target).chain(reaction).collect(),
            Self::ReadMarker { up_to } => vec![up_to],
            _ => Vec::new(),
        }
    }

    /// Translates every reference with `f`. An optional reference (reply, thread, the reaction
    /// event of an unreact) that `f` cannot translate is dropped; a required one (the target of an
    /// edit, reaction, unreact, redaction or read marker) fails the whole translation.
    pub fn map_refs<S>(
        self,
        mut f: impl FnMut(&R) -> Option<S>,
    ) -> Result<EventKind<S>, UnresolvedRef> {
        let mut required = |r: &R, what: &'static str| f(r).ok_or(UnresolvedRef(what));
        Ok(match self {
            Self::Message {
                content,
                reply_to,
                thread,
            } => {
                // Optional references: reuse the same closure through `required`, ignoring failure.
                let reply_to = reply_to.and_then(|r| required(&r, "reply").ok());
                let thread = thread.and_then(|r| required(&r, "thread").ok());
                EventKind::Message {
                    content,
                    reply_to,
                    thread,
                }
            }
            Self::Edit { target, new } => EventKind::Edit {
                target: required(&target, "edited message")?,
                new,
            },
            Self::Reaction { target, key } => EventKind::Reaction {
                target: required(&target, "message reacted to")?,
                key,
            },
            Self::Unreact {
                target,
                key,
                reaction,
            } => EventKind::Unreact {
                target: required(&target, "message reacted to")?,
                key,
                reaction: reaction.and_then(|r| required(&r, "reaction").ok()),
            },
            Self::Redaction { target, reason } => EventKind::Redaction {
                target: required(&target, "deleted message")?,
                reason,
            },
            Self::ReadMarker { up_to } => EventKind::ReadMarker {
                up_to: required(&up_to, "message read")?,
            },
            Self::Membership { change, reason } => EventKind::Membership { change, reason },
            Self::Profile {
                display_name,
                avatar,
            } => EventKind::Profile {
                display_name,
                avatar,
            },
            Self::Topic { text } => EventKind::Topic { text },
            Self::RoomName { name } => EventKind::RoomName { name },
            Self::Typing { active } => EventKind::Typing { active },
            Self::Presence { state, status } => EventKind::Presence { state, status },
            Self::Role { role } => EventKind::Role { role },
            Self::Moderation {
                target,
                action,
                reason,
            } => EventKind::Moderation {
                target,
                action,
                reason,
            },
            Self::Custom {
                event_type,
                content,
            } => EventKind::Custom {
                event_type,
                content,
            },
        })
    }
}

/// The author of an inbound event, as its adapter knows them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteSender {
    /// Native user ID.
    pub id: RemoteUserId,
    /// Display name, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Avatar URL, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar: Option<String>,
}

/// An event an adapter received from its protocol and hands to the core with
/// [`crate::AdapterContext::submit`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InboundEvent {
    /// The native room it was posted in.
    pub room: RemoteRoomId,
    /// Its native ID: the key of inbound dedup and of the ID map. Ephemeral events may have none.
    pub native_id: Option<RemoteEventId>,
    /// Its author.
    pub sender: RemoteSender,
    /// When it happened (ms since the Unix epoch), if the protocol says.
    pub ts: Option<u64>,
    /// What happened; references are native IDs in the same room.
    pub kind: EventKind<RemoteEventId>,
    /// Set when the adapter recognises this as the reflection of something the bridge sent (an
    /// XMPP origin-id equal to a neutral event ID): the core records `native_id` for that event
    /// and does not route it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echo_of: Option<EventId>,
    /// Set when the protocol says the sender may act on other people's messages (a moderator's
    /// redaction). Edits are always accepted only from the original sender.
    #[serde(default)]
    pub by_moderator: bool,
}

impl InboundEvent {
    /// An inbound event with the required fields; the rest default.
    pub fn new(
        room: impl Into<RemoteRoomId>,
        native_id: Option<RemoteEventId>,
        sender: impl Into<RemoteUserId>,
        kind: EventKind<RemoteEventId>,
    ) -> Self {
        Self {
            room: room.into(),
            native_id,
            sender: RemoteSender {
                id: sender.into(),
                ..RemoteSender::default()
            },
            ts: None,
            kind,
            echo_of: None,
            by_moderator: false,
        }
    }
}

/// An event the core asks an adapter to deliver into one of its native rooms.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutboundEvent {
    /// The neutral ID. Use it as the idempotency key of the send (Matrix transaction ID, XMPP
    /// origin-id): the core may send the same event again after a crash or a retry.
    pub id: EventId,
    /// The neutral room.
    pub neutral_room: RoomId,
    /// The native room to deliver into.
    pub room: RemoteRoomId,
    /// The original author, whom a puppet should represent.
    pub sender: Sender,
    /// When the original happened (ms since the Unix epoch).
    pub ts: u64,
    /// What to deliver; references are already this adapter's native IDs in `room`.
    pub kind: EventKind<RemoteEventId>,
    /// True when the core rewrote the event because this adapter cannot carry the original kind
    /// (a reply turned into a quote, an edit into a "* correction" message…).
    pub degraded: bool,
    /// True for a deletion of someone else's message, which the core let through because its
    /// sender is a moderator where it was made: the adapter deletes it with whatever
    /// moderator rights it has in `room` (an XMPP moderation, a Matrix redaction by a user
    /// with the power, a MIMI deletion by a participant whose role allows it).
    pub moderated: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_refs_drops_optional_and_fails_required() {
        let reply: EventKind<u32> = EventKind::Message {
            content: MessageContent::text("hi"),
            reply_to: Some(7),
            thread: None,
        };
        let mapped = reply.map_refs(|_| None::<u32>);
        assert!(matches!(
            mapped,
            Ok(EventKind::Message { reply_to: None, .. })
        ));
        let edit: EventKind<u32> = EventKind::Edit {
            target: 7,
            new: MessageContent::text("fixed"),
        };
        assert_eq!(
            edit.clone().map_refs(|_| None::<u32>).err(),
            Some(UnresolvedRef("edited message"))
        );
        assert!(matches!(
            edit.map_refs(|r| Some(r + 1)),
            Ok(EventKind::Edit { target: 8, .. })
        ));
    }

    #[test]
    fn refs_lists_what_map_refs_translates() {
        let reply: EventKind<u32> = EventKind::Message {
            content: MessageContent::text("hi"),
            reply_to: Some(1),
            thread: Some(2),
        };
        assert_eq!(reply.refs(), [&1, &2]);
        let unreact: EventKind<u32> = EventKind::Unreact {
            target: 3,
            key: "👍".into(),
            reaction: Some(4),
        };
        assert_eq!(unreact.refs(), [&3, &4]);
        let typing: EventKind<u32> = EventKind::Typing { active: true };
        assert!(typing.refs().is_empty());
    }

    #[test]
    fn custom_events_survive_serialisation() {
        let kind: EventKind = EventKind::Custom {
            event_type: "org.example.poll".into(),
            content: serde_json::json!({"question": "tea?", "answers": ["yes", "no"]}),
        };
        let json = serde_json::to_string(&kind).unwrap_or_default();
        let back: Result<EventKind, _> = serde_json::from_str(&json);
        assert_eq!(back.ok(), Some(kind));
    }
}
