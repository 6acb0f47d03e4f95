//! What an adapter can carry, declared as data, and the admin's policy for what it cannot.

use serde::{Deserialize, Serialize};

/// What an adapter's protocol can carry. The core degrades or drops anything else, per the
/// room's [`DegradePolicy`], before calling [`crate::Adapter::send`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Capabilities {
    /// Formatted text (otherwise the adapter receives the formatting but should send the body).
    pub formatting: bool,
    /// Edits of earlier messages.
    pub edits: bool,
    /// Replies that point at a message.
    pub replies: bool,
    /// Threads.
    pub threads: bool,
    /// Reactions and their removal.
    pub reactions: bool,
    /// Deletion of messages.
    pub redactions: bool,
    /// File attachments, and the largest size accepted (None: no limit known).
    pub attachments: Option<AttachmentLimit>,
    /// Join / leave / kick / ban / invite.
    pub membership: bool,
    /// Display name and avatar changes.
    pub profile: bool,
    /// Room topics.
    pub topic: bool,
    /// Room names.
    pub room_name: bool,
    /// Typing notifications.
    pub typing: bool,
    /// Read markers.
    pub read_markers: bool,
    /// Presence.
    pub presence: bool,
    /// Roles: the standing of the room's members ([`crate::Role`]), shown on their puppets.
    #[serde(default)]
    pub roles: bool,
    /// Moderation: kicking, banning and unbanning users ([`crate::EventKind::Moderation`]).
    #[serde(default)]
    pub moderation: bool,
    /// Custom (unknown to the neutral model) event types.
    pub custom_events: bool,
}

/// How large an attachment an adapter takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentLimit {
    /// Largest size in bytes, when the protocol has a limit.
    pub max_bytes: Option<u64>,
}

impl Capabilities {
    /// Plain text messages only: everything else is degraded or dropped.
    pub const fn text_only() -> Self {
        Self {
            formatting: false,
            edits: false,
            replies: false,
            threads: false,
            reactions: false,
            redactions: false,
            attachments: None,
            membership: false,
            profile: false,
            topic: false,
            room_name: false,
            typing: false,
            read_markers: false,
            presence: false,
            roles: false,
            moderation: false,
            custom_events: false,
        }
    }

    /// Everything the neutral model has.
    pub const fn all() -> Self {
        Self {
            formatting: true,
            edits: true,
            replies: true,
            threads: true,
            reactions: true,
            redactions: true,
            attachments: Some(AttachmentLimit { max_bytes: None }),
            membership: true,
            profile: true,
            topic: true,
            room_name: true,
            typing: true,
            read_markers: true,
            presence: true,
            roles: true,
            moderation: true,
            custom_events: true,
        }
    }
}

impl Default for Capabilities {
    fn default() -> Self {
        Self::text_only()
    }
}

/// What to do with a relation or kind the target cannot carry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fallback {
    /// Send a readable text version instead.
    #[default]
    Fallback,
    /// Leave it out (counted in the metrics).
    Drop,
}

/// What to do with custom events the target cannot carry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CustomPolicy {
    /// Leave it out (counted in the metrics).
    #[default]
    Drop,
    /// Send a short notice naming the event type.
    Notice,
}

/// What crosses between the native rooms of a room at all, whatever the targets could carry:
/// the admin's choice, global or per room (typing notifications and read markers say who is
/// active and who read what, which some communities keep to their own network; to a MIMI room
/// each read marker is also an MLS message to every member; a role crossing gives a puppet
/// the power its user has where they are). An event kept back is counted in
/// `bridge_events_withheld_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct CarryPolicy {
    /// Typing notifications cross (default `true`).
    pub typing: bool,
    /// Read markers cross (default `true`).
    pub read_markers: bool,
    /// Roles cross (default `true`): a moderator on one side is a moderator's puppet on the
    /// others, where the bridge may grant it.
    pub roles: bool,
    /// Moderation crosses (default `true`): a user kicked or banned by a moderator on one side
    /// is kicked or banned on the others, by the moderator's puppet or else by the bridge.
    pub moderation: bool,
}

impl Default for CarryPolicy {
    fn default() -> Self {
        Self {
            typing: true,
            read_markers: true,
            roles: true,
            moderation: true,
        }
    }
}

impl CarryPolicy {
    /// Whether events of `kind` cross to the room's other native rooms.
    pub fn carries<R>(&self, kind: &crate::event::EventKind<R>) -> bool {
        use crate::event::EventKind;
        match kind {
            EventKind::Typing { .. } => self.typing,
            EventKind::ReadMarker { .. } => self.read_markers,
            EventKind::Role { .. } => self.roles,
            EventKind::Moderation { .. } => self.moderation,
            _ => true,
        }
    }

    /// Whether the policy has a say over events of `kind` (every other kind always crosses).
    pub fn governs<R>(kind: &crate::event::EventKind<R>) -> bool {
        use crate::event::EventKind;
        matches!(
            kind,
            EventKind::Typing { .. }
                | EventKind::ReadMarker { .. }
                | EventKind::Role { .. }
                | EventKind::Moderation { .. }
        )
    }
}

/// The admin's degradation policy, global or per room.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DegradePolicy {
    /// A reply to a target without replies becomes a quote of the original (fallback).
    pub reply: Fallback,
    /// An edit to a target without edits becomes a "* corrected text" message (fallback).
    pub edit: Fallback,
    /// A reaction to a target without reactions becomes a short text line (fallback).
    pub reaction: Fallback,
    /// A deletion to a target without deletions becomes a notice (fallback).
    pub redaction: Fallback,
    /// A kick or ban to a target without moderation becomes a notice (fallback).
    #[serde(default)]
    pub moderation: Fallback,
    /// Custom events to a target that cannot carry them.
    pub custom: CustomPolicy,
}

impl Default for DegradePolicy {
    fn default() -> Self {
        Self {
            reply: Fallback::Fallback,
            edit: Fallback::Fallback,
            reaction: Fallback::Fallback,
            redaction: Fallback::Drop,
            moderation: Fallback::Fallback,
            custom: CustomPolicy::Drop,
        }
    }
}
