//! Prototype for the XMPP adapter: component (XEP-0114) and client mode in one build.
pub mod actors;
pub mod component;
pub mod muc;
pub mod scenario;
pub mod wire;
