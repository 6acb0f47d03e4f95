//! `POST /keyMaterial/{targetUser}` (protocol-06 §5.2): claim KeyPackages of a user's clients.

use std::io::{Read, Write};

use tls_codec::{Deserialize, Serialize, Size, TlsDeserialize, TlsSerialize, TlsSize, VLBytes};

use super::codec::WireBody;
use super::common::{
    Capabilities, CipherSuite, Credential, IdentifierUri, Protocol, RequiredCapabilities,
    SignaturePublicKey,
};
use super::mls_objects::KeyPackage;

/// The request body (protocol-06 §5.2, `KeyMaterialRequest`), with `protocol` = `mls10`.
#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct KeyMaterialRequest {
    /// The protocol (`mls10`).
    pub protocol: Protocol,
    /// The user asking.
    pub requesting_user: IdentifierUri,
    /// The user whose clients' KeyPackages are claimed.
    pub target_user: IdentifierUri,
    /// The room the KeyPackages are for (empty when not for a room: our reading, see docs).
    pub room_id: IdentifierUri,
    /// Cipher suites the requester accepts (non-empty).
    pub acceptable_ciphersuites: Vec<CipherSuite>,
    /// Capabilities the room requires.
    pub required_capabilities: RequiredCapabilities,
    /// The requester's signature key.
    pub requester_signature_key: SignaturePublicKey,
    /// The requester's credential.
    pub requester_credential: Credential,
    /// `SignWithLabel(requesterSignatureKey, "KeyMaterialRequestTBS", KeyMaterialRequestTBS)`.
    pub key_material_request_signature: VLBytes,
}

impl KeyMaterialRequest {
    /// The label of the request signature.
    pub const SIGNATURE_LABEL: &'static str = "KeyMaterialRequestTBS";

    /// The serialized `KeyMaterialRequestTBS`: every field but the signature, to sign or verify.
    pub fn to_be_signed(&self) -> Result<Vec<u8>, super::WireError> {
        let mut out = Vec::new();
        self.protocol.tls_serialize(&mut out)?;
        self.requesting_user.tls_serialize(&mut out)?;
        self.target_user.tls_serialize(&mut out)?;
        self.room_id.tls_serialize(&mut out)?;
        self.acceptable_ciphersuites.tls_serialize(&mut out)?;
        self.required_capabilities.tls_serialize(&mut out)?;
        self.requester_signature_key.tls_serialize(&mut out)?;
        self.requester_credential.tls_serialize(&mut out)?;
        Ok(out)
    }
}

impl WireBody for KeyMaterialRequest {
    const MAX_LEN: usize = 64 << 10;
}

/// Outcome for the user (protocol-06 §5.2, `enum KeyMaterialUserCode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, TlsSerialize, TlsDeserialize, TlsSize)]
#[repr(u8)]
pub enum KeyMaterialUserCode {
    /// `success(0)`: key material for every client.
    Success = 0,
    /// `partialSuccess(1)`: key material for at least one client.
    PartialSuccess = 1,
    /// `incompatibleProtocol(2)`.
    IncompatibleProtocol = 2,
    /// `noCompatibleMaterial(3)`: no client matches the required capabilities.
    NoCompatibleMaterial = 3,
    /// `userUnknown(4)`.
    UserUnknown = 4,
    /// `noConsent(5)`.
    NoConsent = 5,
    /// `noConsentForThisRoom(6)`.
    NoConsentForThisRoom = 6,
    /// `userDeleted(7)`.
    UserDeleted = 7,
}

/// Outcome for one client (protocol-06 §5.2, `enum KeyMaterialClientCode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, TlsSerialize, TlsDeserialize, TlsSize)]
#[repr(u8)]
pub enum KeyMaterialClientCode {
    /// `success(0)`: a KeyPackage follows.
    Success = 0,
    /// `keyMaterialExhausted(1)`: none left for this client.
    KeyMaterialExhausted = 1,
    /// `nothingCompatible(2)`: the client's capabilities may follow.
    NothingCompatible = 2,
}

/// The per-client part of [`ClientKeyMaterial`], selected by its `clientStatus`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientKeyMaterialResult {
    /// `success`: the claimed KeyPackage.
    Success(KeyPackage),
    /// `keyMaterialExhausted`.
    KeyMaterialExhausted,
    /// `nothingCompatible`, with the client's capabilities unless withheld for privacy.
    NothingCompatible(Option<Capabilities>),
}

impl ClientKeyMaterialResult {
    /// The status code on the wire.
    pub fn code(&self) -> KeyMaterialClientCode {
        match self {
            Self::Success(_) => KeyMaterialClientCode::Success,
            Self::KeyMaterialExhausted => KeyMaterialClientCode::KeyMaterialExhausted,
            Self::NothingCompatible(_) => KeyMaterialClientCode::NothingCompatible,
        }
    }
}

/// One client of the target user (protocol-06 §5.2, `ClientKeyMaterial`, for `mls10`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientKeyMaterial {
    /// The client's URI.
    pub client_uri: IdentifierUri,
    /// Its status and key material.
    pub result: ClientKeyMaterialResult,
}

impl Size for ClientKeyMaterial {
    fn tls_serialized_len(&self) -> usize {
        1 + self.client_uri.tls_serialized_len()
            + match &self.result {
                ClientKeyMaterialResult::Success(key_package) => key_package.tls_serialized_len(),
                ClientKeyMaterialResult::KeyMaterialExhausted => 0,
                ClientKeyMaterialResult::NothingCompatible(capabilities) => {
                    capabilities.tls_serialized_len()
                }
            }
    }
}

impl Serialize for ClientKeyMaterial {
    fn tls_serialize<W: Write>(&self, writer: &mut W) -> Result<usize, tls_codec::Error> {
        let mut written = self.result.code().tls_serialize(writer)?;
        written += self.client_uri.tls_serialize(writer)?;
        written += match &self.result {
            ClientKeyMaterialResult::Success(key_package) => key_package.tls_serialize(writer)?,
            ClientKeyMaterialResult::KeyMaterialExhausted => 0,
            ClientKeyMaterialResult::NothingCompatible(capabilities) => {
                capabilities.tls_serialize(writer)?
            }
        };
        Ok(written)
    }
}

impl Deserialize for ClientKeyMaterial {
    fn tls_deserialize<R: Read>(reader: &mut R) -> Result<Self, tls_codec::Error> {
        let code = KeyMaterialClientCode::tls_deserialize(reader)?;
        let client_uri = IdentifierUri::tls_deserialize(reader)?;
        let result = match code {
            KeyMaterialClientCode::Success => {
                ClientKeyMaterialResult::Success(KeyPackage::tls_deserialize(reader)?)
            }
            KeyMaterialClientCode::KeyMaterialExhausted => {
                ClientKeyMaterialResult::KeyMaterialExhausted
            }
            KeyMaterialClientCode::NothingCompatible => ClientKeyMaterialResult::NothingCompatible(
                Option::<Capabilities>::tls_deserialize(reader)?,
            ),
        };
        Ok(Self { client_uri, result })
    }
}

/// The response body (protocol-06 §5.2, `KeyMaterialResponse`).
#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct KeyMaterialResponse {
    /// The protocol (`mls10`).
    pub protocol: Protocol,
    /// The outcome for the user.
    pub user_status: KeyMaterialUserCode,
    /// The target user.
    pub user_uri: IdentifierUri,
    /// One entry per client (empty unless `success`, `partialSuccess` or `noCompatibleMaterial`).
    pub clients: Vec<ClientKeyMaterial>,
}

impl WireBody for KeyMaterialResponse {}
