//! The core of the bridge: the neutral room/event model, routing, durable delivery and the
//! adapter API.
//!
//! - [`event`] and [`ids`]: the neutral model (a room is a routing tag; events are typed, with
//!   custom events carried as JSON); [`richtext`]: formatted text and its converters.
//! - [`adapter`]: what a protocol adapter implements ([`Adapter`], [`AdapterFactory`]) and what
//!   the core gives it ([`AdapterContext`]).
//! - [`routing`]: neutral rooms and their links to native rooms.
//! - [`Core`]: ingest, ID map, echo suppression, dedup, ordered outboxes with retries, dead
//!   letters and capability fallbacks.
//! - [`store`]: the durable store ([`store::SledStore`] by default, behind a
//!   [`store::CombiningStore`] that merges small batches) and [`durability`]: group commit.
//! - [`telemetry`]: the metrics the core records, with their descriptions.
//! - [`process`]: process-wide settings a bridge program applies as it starts (the allocator's).
//! - `testkit` (feature): an in-memory adapter, event builders and the adapter conformance
//!   suite.
//!
//! The guarantees (no loss, no duplicates, no loops, order per room, isolation) are stated
//! where they are implemented and summarised in ARCHITECTURE.md.

pub mod adapter;
pub mod backoff;
pub mod capabilities;
pub mod durability;
mod engine;
pub mod event;
pub mod ids;
pub mod management;
pub mod process;
pub mod richtext;
pub mod routing;
pub mod store;
pub mod telemetry;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use adapter::{
    Adapter, AdapterContext, AdapterError, AdapterFactory, AdapterStore, AttachmentBody,
    ConfigIssue, Delivered, Pending, SubmitError, Submitted, text_setting, unknown_settings,
};
pub use backoff::Backoff;
pub use capabilities::{
    AttachmentLimit, Capabilities, CarryPolicy, CustomPolicy, DegradePolicy, Fallback,
};
pub use engine::{
    Core, CoreBuilder, CoreError, DeadLetter, DeliverySettings, PruneReport, RoomStatus,
};
pub use event::{
    Attachment, Event, EventKind, InboundEvent, MembershipChange, Mention, MessageContent,
    ModerationAction, MsgType, Origin, OutboundEvent, PresenceState, RemoteSender, Role, Sender,
};
pub use ids::{AdapterId, EventId, RemoteEventId, RemoteRoomId, RemoteUserId, RoomId};
pub use management::ManagementMessage;
pub use richtext::RichText;
pub use routing::{Link, Room, RoomSettings, RoutingError, RoutingTable};
pub use store::{MemoryStore, SledStore, Store, StoreError};
