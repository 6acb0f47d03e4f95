//! Management rooms: native rooms where admins talk to the bridge itself.
//!
//! A management room is configured on one adapter ([`crate::CoreBuilder::management`]); it is
//! never a link of a neutral room. The adapter joins it like a linked room
//! ([`crate::AdapterContext::linked_rooms`] lists both) and hands its events to the core as
//! usual; the core does not bridge them: each text message (not a notice, not from one of the
//! bridge's puppets) goes, once (dedup by native ID like any event), to the command sink as a
//! [`ManagementMessage`]. What reads the sink (the `bridge` binary's admin commands) decides
//! who may do what and answers with [`crate::Core::send_notice`], which the adapter sends as
//! the bridge itself ([`crate::Adapter::send_notice`]), never as a puppet.

use crate::event::Sender;
use crate::ids::RemoteEventId;
use crate::routing::Link;

/// A text message posted in a management room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagementMessage {
    /// The management room (adapter and native room): where to answer.
    pub room: Link,
    /// Who wrote it (`sender.adapter` is the room's adapter).
    pub sender: Sender,
    /// Its native ID, when the protocol gives one.
    pub native_id: Option<RemoteEventId>,
    /// The plain text of the message.
    pub text: String,
}

/// How many management messages may wait for the command reader; more are dropped (with a
/// warning), so a flood cannot grow memory.
pub const SINK_CAPACITY: usize = 64;
