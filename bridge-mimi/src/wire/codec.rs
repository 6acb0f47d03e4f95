//! Decoding and encoding whole bodies: size limit, no trailing bytes, readable errors.

use tls_codec::{Deserialize, Serialize};

/// Why a body could not be decoded or encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The body is longer than the limit for its endpoint.
    #[error("body of {len} bytes is over the limit of {max} bytes")]
    TooLarge {
        /// Length of the body.
        len: usize,
        /// The limit ([`WireBody::MAX_LEN`]).
        max: usize,
    },
    /// The body ends in the middle of a field.
    #[error("truncated: the body ends in the middle of a field")]
    Truncated,
    /// Bytes are left after the body.
    #[error("{0} trailing bytes after the body")]
    TrailingBytes(usize),
    /// A code point (enum value) this implementation does not know.
    #[error("unknown code point {0}")]
    UnknownCodePoint(u64),
    /// A vector length is not valid (over 2^30, or a non-minimal length encoding).
    #[error("invalid vector length")]
    InvalidLength,
    /// Anything else wrong with the bytes, with the reason.
    #[error("malformed: {0}")]
    Malformed(String),
    /// The value cannot be encoded (for example an MLS message of the wrong kind for its field).
    #[error("cannot encode: {0}")]
    Encode(String),
}

impl From<tls_codec::Error> for WireError {
    fn from(error: tls_codec::Error) -> Self {
        match error {
            tls_codec::Error::EndOfStream => WireError::Truncated,
            tls_codec::Error::UnknownValue(value) => WireError::UnknownCodePoint(value),
            tls_codec::Error::InvalidVectorLength => WireError::InvalidLength,
            tls_codec::Error::TrailingData => WireError::TrailingBytes(0),
            tls_codec::Error::DecodingError(reason) => WireError::Malformed(reason),
            tls_codec::Error::EncodingError(reason) => WireError::Encode(reason),
            other => WireError::Malformed(other.to_string()),
        }
    }
}

/// A decoding error with a reason, in the error type the `tls_codec` traits use.
pub(crate) fn malformed(reason: impl Into<String>) -> tls_codec::Error {
    tls_codec::Error::DecodingError(reason.into())
}

/// The body of an HTTP request or response of one MIMI endpoint.
pub trait WireBody: Serialize + Deserialize + Sized {
    /// The longest body accepted for this endpoint, in bytes.
    const MAX_LEN: usize = 1 << 20;

    /// Decodes exactly one body: errors for a body over [`Self::MAX_LEN`], truncated input,
    /// unknown code points, malformed MLS objects and trailing bytes.
    fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        decode_limited(bytes, Self::MAX_LEN)
    }

    /// The serialization of the body.
    fn encode(&self) -> Result<Vec<u8>, WireError> {
        let mut out = Vec::with_capacity(self.tls_serialized_len());
        self.tls_serialize(&mut out)?;
        Ok(out)
    }
}

/// Decodes one `T` filling `bytes` exactly, refusing input longer than `max`.
pub(crate) fn decode_limited<T: Deserialize>(bytes: &[u8], max: usize) -> Result<T, WireError> {
    if bytes.len() > max {
        return Err(WireError::TooLarge {
            len: bytes.len(),
            max,
        });
    }
    let mut rest = bytes;
    let value = T::tls_deserialize(&mut rest)?;
    if !rest.is_empty() {
        return Err(WireError::TrailingBytes(rest.len()));
    }
    Ok(value)
}
