//! The MIMI adapter (draft-ietf-mimi-protocol-06): so far the code points and the MLS layer.

pub mod codepoints;
pub mod mls;
