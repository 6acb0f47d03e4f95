//! The MIMI adapter of the bridge.
//!
//! So far: [`content`], the MIMI content format (draft-ietf-mimi-content-08): a typed model,
//! its deterministic CBOR codec, message IDs and the mapping to the neutral model.

pub mod content;
