//! Types shared by several bodies: the protocol selector, identifier URIs and the small MLS
//! structs of RFC 9420 that the MIMI bodies embed.

use std::io::{Read, Write};

use tls_codec::{Deserialize, Serialize, Size, TlsDeserialize, TlsSerialize, TlsSize, VLBytes};

use super::codec::malformed;

/// The end-to-end protocol of a body (protocol-06 §5, `enum Protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, TlsSerialize, TlsDeserialize, TlsSize)]
#[repr(u8)]
pub enum Protocol {
    /// MLS 1.0 (RFC 9420): `mls10(1)`; `reserved(0)` is not accepted.
    Mls10 = 1,
}

/// A user, client or room URI (protocol-06 §5.2, `struct { opaque uri<V>; } IdentifierUri`), such
/// as `mimi://a.example/u/alice` or `mimi://a.example/r/clubhouse`. Decoding requires UTF-8.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct IdentifierUri(pub String);

impl IdentifierUri {
    /// The URI as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The domain of a `mimi://DOMAIN/...` URI (lower-cased), or `None` for another form.
    pub fn domain(&self) -> Option<String> {
        let rest = self.0.strip_prefix("mimi://")?;
        let domain = rest.split('/').next()?;
        (!domain.is_empty()).then(|| domain.to_ascii_lowercase())
    }
}

impl From<&str> for IdentifierUri {
    fn from(uri: &str) -> Self {
        Self(uri.to_owned())
    }
}

impl std::fmt::Display for IdentifierUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Size for IdentifierUri {
    fn tls_serialized_len(&self) -> usize {
        tls_codec::VLByteSlice(self.0.as_bytes()).tls_serialized_len()
    }
}

impl Serialize for IdentifierUri {
    fn tls_serialize<W: Write>(&self, writer: &mut W) -> Result<usize, tls_codec::Error> {
        tls_codec::VLByteSlice(self.0.as_bytes()).tls_serialize(writer)
    }
}

impl Deserialize for IdentifierUri {
    fn tls_deserialize<R: Read>(bytes: &mut R) -> Result<Self, tls_codec::Error> {
        let raw = VLBytes::tls_deserialize(bytes)?;
        String::from_utf8(raw.into())
            .map(Self)
            .map_err(|_| malformed("an IdentifierUri is not UTF-8"))
    }
}

/// An MLS cipher suite (RFC 9420 §17.1, `uint16`); unknown values are kept, not refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct CipherSuite(pub u16);

impl CipherSuite {
    /// `MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519` (0x0001), mandatory to implement.
    pub const MLS_128_DHKEMX25519_AES128GCM_SHA256_ED25519: Self = Self(0x0001);
}

/// An MLS signature public key (RFC 9420 §5.1.1, `opaque signature_key<V>`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct SignaturePublicKey(pub VLBytes);

/// An HPKE public key (RFC 9420 §5.1.1, `opaque HPKEPublicKey<V>`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct HpkePublicKey(pub VLBytes);

/// An HPKE ciphertext (RFC 9420 §5.1.3, `struct { opaque kem_output<V>; opaque ciphertext<V>; }`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct HpkeCiphertext {
    /// The KEM output.
    pub kem_output: VLBytes,
    /// The AEAD ciphertext.
    pub ciphertext: VLBytes,
}

/// A proposal reference (RFC 9420 §5.2, `HashReference ProposalRef`: `opaque value<V>`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct ProposalRef(pub VLBytes);

/// An MLS credential (RFC 9420 §5.3): its `uint16` type and its content.
///
/// For `basic(1)` the content is `opaque identity<V>`, for `x509(2)` it is
/// `Certificate certificates<V>`: in both cases one variable-length vector, which `content` holds
/// (its bytes, without the length prefix). Other credential types are read the same way, as
/// openmls does: a type whose content is not one vector cannot be carried (the draft leaves the
/// MIMI credential profile open, protocol-06 §4.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct Credential {
    /// The credential type (`basic(1)`, `x509(2)`, ...).
    pub credential_type: u16,
    /// The content vector.
    pub content: VLBytes,
}

impl Credential {
    /// The credential type `basic` (RFC 9420 §17.5).
    pub const BASIC: u16 = 0x0001;
    /// The credential type `x509` (RFC 9420 §17.5).
    pub const X509: u16 = 0x0002;

    /// A basic credential carrying `identity` (for us, the client URI).
    pub fn basic(identity: impl Into<Vec<u8>>) -> Self {
        Self {
            credential_type: Self::BASIC,
            content: VLBytes::new(identity.into()),
        }
    }
}

/// An external sender (RFC 9420 §12.1.8.1): the hub's key and credential.
#[derive(Debug, Clone, PartialEq, Eq, Hash, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct ExternalSender {
    /// The signature key.
    pub signature_key: SignaturePublicKey,
    /// The credential.
    pub credential: Credential,
}

/// The required capabilities of a group (RFC 9420 §11.1, `RequiredCapabilities`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct RequiredCapabilities {
    /// Extension types every member must support.
    pub extension_types: Vec<u16>,
    /// Non-default proposal types every member must support.
    pub proposal_types: Vec<u16>,
    /// Credential types every member must support.
    pub credential_types: Vec<u16>,
}

/// The capabilities of a client (RFC 9420 §7.2, `Capabilities`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct Capabilities {
    /// Protocol versions.
    pub versions: Vec<u16>,
    /// Cipher suites.
    pub cipher_suites: Vec<u16>,
    /// Extension types.
    pub extensions: Vec<u16>,
    /// Proposal types.
    pub proposals: Vec<u16>,
    /// Credential types.
    pub credentials: Vec<u16>,
}

/// An MLS extension (RFC 9420 §13, `struct { ExtensionType extension_type; opaque extension_data<V>; }`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct Extension {
    /// The extension type.
    pub extension_type: u16,
    /// Its data.
    pub extension_data: VLBytes,
}
