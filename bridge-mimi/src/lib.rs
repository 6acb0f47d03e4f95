//! The MIMI adapter of the bridge.
//!
//! - [`wire`]: the bodies of the MIMI protocol endpoints (draft-ietf-mimi-protocol-06 §5) and
//!   the endpoint directory;
//! - [`transport`]: the HTTPS server and client over mutually authenticated TLS (§4.1).

pub mod transport;
pub mod wire;
