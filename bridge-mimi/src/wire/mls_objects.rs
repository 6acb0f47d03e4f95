//! MLS objects inside MIMI bodies, kept as their exact serialization.
//!
//! A MIMI body embeds MLS structs without a length prefix (`MLSMessage message;`), so finding
//! where one ends means parsing it: openmls's decoder does that (and so checks the framing), and
//! we keep the bytes it consumed. The hub forwards them unchanged; the MLS layer parses them with
//! [`MlsMessage::parse`] and friends, or from [`MlsMessage::as_bytes`].

use std::fmt;
use std::io::{Read, Write};

use openmls::framing::{ContentType, MlsMessageBodyIn, MlsMessageIn};
use openmls::messages::group_info::VerifiableGroupInfo;
use openmls::prelude::{KeyPackageIn, RatchetTreeIn};
use tls_codec::{Deserialize, Serialize, Size};

use super::codec::{WireError, decode_limited};

/// A reader that keeps a copy of everything read through it.
struct Tee<'a, R> {
    inner: &'a mut R,
    seen: Vec<u8>,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.seen.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

/// Decodes one `T` from `reader` and returns it with the bytes it was read from.
fn read_delimited<T: Deserialize, R: Read>(
    reader: &mut R,
) -> Result<(T, Vec<u8>), tls_codec::Error> {
    let mut tee = Tee {
        inner: reader,
        seen: Vec::new(),
    };
    let value = T::tls_deserialize(&mut tee)?;
    Ok((value, tee.seen))
}

/// The largest MLS object accepted by the `from_bytes` constructors (the bodies have their own
/// limits, [`super::WireBody::MAX_LEN`]).
const MAX_OBJECT_LEN: usize = 16 << 20;

fn write_raw<W: Write>(bytes: &[u8], writer: &mut W) -> Result<usize, tls_codec::Error> {
    writer
        .write_all(bytes)
        .map_err(|error| tls_codec::Error::EncodingError(error.to_string()))?;
    Ok(bytes.len())
}

fn fmt_raw(name: &str, bytes: &[u8], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    write!(f, "{name}({} bytes)", bytes.len())
}

macro_rules! mls_object {
    ($(#[$doc:meta])* $name:ident, $parsed:ty, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash)]
        pub struct $name {
            bytes: Vec<u8>,
        }

        impl $name {
            #[doc = concat!("Checks that `bytes` is exactly one ", $what, " and keeps it.")]
            pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, WireError> {
                decode_limited::<$parsed>(&bytes, MAX_OBJECT_LEN)?;
                Ok(Self { bytes })
            }

            #[doc = concat!("The serialization of the ", $what, ".")]
            pub fn as_bytes(&self) -> &[u8] {
                &self.bytes
            }

            #[doc = concat!("The serialization of the ", $what, ", by value.")]
            pub fn into_bytes(self) -> Vec<u8> {
                self.bytes
            }

            #[doc = concat!("The ", $what, " as the openmls type.")]
            pub fn parse(&self) -> Result<$parsed, WireError> {
                decode_limited::<$parsed>(&self.bytes, MAX_OBJECT_LEN)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt_raw(stringify!($name), &self.bytes, f)
            }
        }

        impl Size for $name {
            fn tls_serialized_len(&self) -> usize {
                self.bytes.len()
            }
        }

        impl Serialize for $name {
            fn tls_serialize<W: Write>(&self, writer: &mut W) -> Result<usize, tls_codec::Error> {
                write_raw(&self.bytes, writer)
            }
        }

        impl Deserialize for $name {
            fn tls_deserialize<R: Read>(reader: &mut R) -> Result<Self, tls_codec::Error> {
                let (_, bytes) = read_delimited::<$parsed, R>(reader)?;
                Ok(Self { bytes })
            }
        }
    };
}

mls_object!(
    /// An MLS `KeyPackage` (RFC 9420 §10), as in `ClientKeyMaterial` (protocol-06 §5.2).
    KeyPackage,
    KeyPackageIn,
    "MLS KeyPackage"
);
mls_object!(
    /// An MLS `Welcome` (RFC 9420 §12.4.3.1), as in the `HandshakeBundle` (protocol-06 §5.3).
    Welcome,
    openmls::messages::Welcome,
    "MLS Welcome"
);
mls_object!(
    /// An MLS `GroupInfo` (RFC 9420 §12.4.3), signature not yet verified.
    GroupInfo,
    VerifiableGroupInfo,
    "MLS GroupInfo"
);
mls_object!(
    /// A ratchet tree (RFC 9420 §12.4.3.3, `optional<Node> ratchet_tree<V>`, with its length
    /// prefix), as in `RatchetTreeOption` `full`.
    RatchetTree,
    RatchetTreeIn,
    "ratchet tree"
);

/// The content type of a handshake or application message (RFC 9420 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContentKind {
    /// `application(1)`.
    Application,
    /// `proposal(2)`.
    Proposal,
    /// `commit(3)`.
    Commit,
}

/// What an [`MlsMessage`] carries: its wire format, and for framed messages the content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// `mls_public_message(1)` with its content type.
    PublicMessage(ContentKind),
    /// `mls_private_message(2)` with its (plaintext header) content type.
    PrivateMessage(ContentKind),
    /// `mls_welcome(3)`.
    Welcome,
    /// `mls_group_info(4)`.
    GroupInfo,
    /// `mls_key_package(5)`.
    KeyPackage,
}

impl MessageKind {
    /// The content type of a public or private message.
    pub fn content(self) -> Option<ContentKind> {
        match self {
            MessageKind::PublicMessage(kind) | MessageKind::PrivateMessage(kind) => Some(kind),
            _ => None,
        }
    }
}

impl fmt::Display for MessageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MessageKind::PublicMessage(kind) => write!(f, "PublicMessage({kind:?})"),
            MessageKind::PrivateMessage(kind) => write!(f, "PrivateMessage({kind:?})"),
            MessageKind::Welcome => f.write_str("Welcome"),
            MessageKind::GroupInfo => f.write_str("GroupInfo"),
            MessageKind::KeyPackage => f.write_str("KeyPackage"),
        }
    }
}

fn content_kind(content_type: ContentType) -> ContentKind {
    match content_type {
        ContentType::Application => ContentKind::Application,
        ContentType::Proposal => ContentKind::Proposal,
        ContentType::Commit => ContentKind::Commit,
    }
}

fn kind_of(message: MlsMessageIn) -> Result<MessageKind, tls_codec::Error> {
    Ok(match message.extract() {
        MlsMessageBodyIn::PublicMessage(message) => {
            MessageKind::PublicMessage(content_kind(message.content_type()))
        }
        MlsMessageBodyIn::PrivateMessage(message) => {
            MessageKind::PrivateMessage(content_kind(message.content_type()))
        }
        MlsMessageBodyIn::Welcome(_) => MessageKind::Welcome,
        MlsMessageBodyIn::GroupInfo(_) => MessageKind::GroupInfo,
        MlsMessageBodyIn::KeyPackage(_) => MessageKind::KeyPackage,
        #[allow(unreachable_patterns)]
        _ => {
            return Err(super::codec::malformed(
                "an MLSMessage of an unsupported wire format",
            ));
        }
    })
}

/// An `MLSMessage` (RFC 9420 §6): its serialization and what it carries.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct MlsMessage {
    bytes: Vec<u8>,
    kind: MessageKind,
}

impl MlsMessage {
    /// Checks that `bytes` is exactly one MLSMessage and keeps it.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, WireError> {
        let parsed = decode_limited::<MlsMessageIn>(&bytes, MAX_OBJECT_LEN)?;
        let kind = kind_of(parsed)?;
        Ok(Self { bytes, kind })
    }

    /// What the message carries.
    pub fn kind(&self) -> MessageKind {
        self.kind
    }

    /// The serialization of the message.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The serialization of the message, by value.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// The message as the openmls type.
    pub fn parse(&self) -> Result<MlsMessageIn, WireError> {
        decode_limited::<MlsMessageIn>(&self.bytes, MAX_OBJECT_LEN)
    }
}

impl fmt::Debug for MlsMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MlsMessage({}, {} bytes)", self.kind, self.bytes.len())
    }
}

impl Size for MlsMessage {
    fn tls_serialized_len(&self) -> usize {
        self.bytes.len()
    }
}

impl Serialize for MlsMessage {
    fn tls_serialize<W: Write>(&self, writer: &mut W) -> Result<usize, tls_codec::Error> {
        write_raw(&self.bytes, writer)
    }
}

impl Deserialize for MlsMessage {
    fn tls_deserialize<R: Read>(reader: &mut R) -> Result<Self, tls_codec::Error> {
        let (parsed, bytes) = read_delimited::<MlsMessageIn, R>(reader)?;
        Ok(Self {
            kind: kind_of(parsed)?,
            bytes,
        })
    }
}
