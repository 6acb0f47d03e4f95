//! Message IDs and salts (draft-ietf-mimi-content-08 §3.3).
//!
//! ```text
//! hash_output = SHA-256( senderUriLength || senderUri || roomUriLength || roomUri ||
//!                        message || salt )
//! messageId   = 0x01 || hash_output[0..30]
//! ```
//!
//! The lengths are big-endian 16-bit byte counts, new in -08: -07 hashed the URIs without them,
//! so -07 code (and the hex dumps under Reply and Reaction in the -08 text) give other IDs.
//! `message` is the whole encoded message exactly as sent, salt included; the salt is hashed
//! twice against length extension.

use std::fmt;

use sha2::{Digest, Sha256};

use super::ContentError;

/// The hash algorithm ID of SHA-256 in the IANA Named Information registry: the first byte of
/// every message ID this draft defines.
pub const SHA256_ID: u8 = 0x01;

/// A 32-byte message ID: [`SHA256_ID`] and the first 31 bytes of a SHA-256 hash.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId([u8; 32]);

impl MessageId {
    /// Checks that `bytes` are a message ID: 32 bytes, the first [`SHA256_ID`] (an unknown hash
    /// algorithm is, per the draft's security considerations, a sign of a malicious message).
    /// `field` names the field in the error.
    pub fn from_slice(field: &'static str, bytes: &[u8]) -> Result<Self, ContentError> {
        let id: [u8; 32] = bytes.try_into().map_err(|_| ContentError::BadMessageId {
            field,
            reason: "not 32 bytes long",
        })?;
        if id[0] != SHA256_ID {
            return Err(ContentError::BadMessageId {
                field,
                reason: "the first byte is not 0x01 (SHA-256)",
            });
        }
        Ok(MessageId(id))
    }

    /// Computes the ID of `message` (its encoded bytes as sent) from `sender_uri` and
    /// `room_uri` and the message's `salt`.
    pub fn compute(
        sender_uri: &str,
        room_uri: &str,
        message: &[u8],
        salt: &Salt,
    ) -> Result<Self, ContentError> {
        let sender_len =
            u16::try_from(sender_uri.len()).map_err(|_| ContentError::UriTooLong("sender URI"))?;
        let room_len =
            u16::try_from(room_uri.len()).map_err(|_| ContentError::UriTooLong("room URI"))?;
        let mut hash = Sha256::new();
        hash.update(sender_len.to_be_bytes());
        hash.update(sender_uri.as_bytes());
        hash.update(room_len.to_be_bytes());
        hash.update(room_uri.as_bytes());
        hash.update(message);
        hash.update(salt.0);
        let output = hash.finalize();
        let mut id = [0u8; 32];
        id[0] = SHA256_ID;
        id[1..].copy_from_slice(&output[..31]);
        Ok(MessageId(id))
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex, as `bridge mimi inspect` prints it and as adapters may store it.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// Parses [`to_hex`](Self::to_hex)'s form (either case).
    pub fn from_hex(text: &str) -> Result<Self, ContentError> {
        let bytes = unhex(text).ok_or(ContentError::BadMessageId {
            field: "message ID",
            reason: "not hex",
        })?;
        Self::from_slice("message ID", &bytes)
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({})", self.to_hex())
    }
}

/// The 16 random bytes that start every message.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Salt(pub [u8; 16]);

impl Salt {
    /// A fresh salt from `rand`'s thread-local generator, a CSPRNG seeded by the operating system
    /// (the draft asks for a cryptographically random salt; deriving one from the MLS key
    /// schedule, as its security considerations sketch, is an option for the MLS layer).
    pub fn random() -> Self {
        use rand::RngCore;
        let mut salt = [0u8; 16];
        rand::rng().fill_bytes(&mut salt);
        Salt(salt)
    }
}

impl fmt::Debug for Salt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Salt({})", hex(&self.0))
    }
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// Bytes from hex, `None` if `text` is not an even number of hex digits.
pub(crate) fn unhex(text: &str) -> Option<Vec<u8>> {
    let digits = text.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    digits
        .chunks(2)
        .map(|pair| {
            let high = char::from(pair[0]).to_digit(16)?;
            let low = char::from(pair[1]).to_digit(16)?;
            u8::try_from(high << 4 | low).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        let id = MessageId::from_slice("x", &[1; 32]).expect("valid");
        assert_eq!(MessageId::from_hex(&id.to_hex()), Ok(id));
        assert_eq!(id.to_hex(), "01".repeat(32));
        assert!(MessageId::from_hex("0g").is_err());
        assert!(MessageId::from_hex("011").is_err());
    }

    #[test]
    fn refuses_what_is_not_an_id() {
        assert!(MessageId::from_slice("replaces", &[1; 31]).is_err());
        assert!(MessageId::from_slice("replaces", &[2; 32]).is_err());
    }

    #[test]
    fn lengths_are_16_bit_big_endian() {
        // Moving a byte from the end of the sender URI to the start of the room URI changes
        // the ID only because of the length prefixes (-07 hashed both the same).
        let salt = Salt([7; 16]);
        let a = MessageId::compute("ab", "c", b"m", &salt).expect("id");
        let b = MessageId::compute("a", "bc", b"m", &salt).expect("id");
        assert_ne!(a, b);
        let long = "x".repeat(65536);
        assert_eq!(
            MessageId::compute(&long, "r", b"m", &salt),
            Err(ContentError::UriTooLong("sender URI"))
        );
    }
}
