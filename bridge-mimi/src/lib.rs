//! The MIMI adapter of the bridge (draft-ietf-mimi-protocol-06): [`adapter`] (`type = "mimi"`,
//! with [`settings`]) and the layers it is built on:
//!
//! - [`content`]: the MIMI content format (draft-ietf-mimi-content-08): a typed model, its
//!   deterministic CBOR codec, message IDs and the mapping to the neutral model;
//! - [`codepoints`]: every provisional code point we use, in one table;
//! - [`mls`]: the MLS layer (openmls): puppet clients, KeyPackages, rooms and their state, all
//!   persisted through the bridge's store;
//! - [`wire`]: the bodies of the MIMI protocol endpoints (§5) and the endpoint directory;
//! - [`transport`]: the HTTPS server and client over mutually authenticated TLS (§4.1).

pub mod adapter;
pub mod codepoints;
pub mod content;
pub mod mls;
pub mod settings;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod transport;
pub mod wire;

pub use adapter::{MimiAdapter, MimiFactory};
