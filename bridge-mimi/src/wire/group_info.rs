//! `POST /groupInfo/{roomId}` (protocol-06 §5.6): fetch a room's GroupInfo for an external join.

use tls_codec::{Serialize, TlsDeserialize, TlsSerialize, TlsSize, VLBytes};

use super::codec::{WireBody, WireError};
use super::common::{
    CipherSuite, Credential, ExternalSender, HpkeCiphertext, HpkePublicKey, IdentifierUri,
    Protocol, SignaturePublicKey,
};
use super::mls_objects::{GroupInfo, MlsMessage};
use super::update::RatchetTreeOption;

/// The request body (protocol-06 §5.6, `GroupInfoRequest`, for `mls10`).
#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct GroupInfoRequest {
    /// The protocol (`mls10`).
    pub protocol: Protocol,
    /// A cipher suite in common with the hub, for the signatures of request and response.
    pub cipher_suite: CipherSuite,
    /// The requester's signature key.
    pub requesting_signature_key: SignaturePublicKey,
    /// The requester's credential.
    pub requesting_credential: Credential,
    /// The key the hub encrypts the GroupInfo to.
    pub group_info_public_key: HpkePublicKey,
    /// `opaque joiningCode<V>`: empty when there is none.
    pub joining_code: VLBytes,
    /// `SignWithLabel(requestingSignatureKey, "GroupInfoRequestTBS", GroupInfoRequestTBS)`.
    pub signature: VLBytes,
}

impl GroupInfoRequest {
    /// The label of the request signature.
    pub const SIGNATURE_LABEL: &'static str = "GroupInfoRequestTBS";

    /// The serialized `GroupInfoRequestTBS`: every field but the signature, as in the request
    /// (the draft's `optional` on the TBS joining code is read as a typo).
    pub fn to_be_signed(&self) -> Result<Vec<u8>, WireError> {
        let mut out = Vec::new();
        self.protocol.tls_serialize(&mut out)?;
        self.cipher_suite.tls_serialize(&mut out)?;
        self.requesting_signature_key.tls_serialize(&mut out)?;
        self.requesting_credential.tls_serialize(&mut out)?;
        self.group_info_public_key.tls_serialize(&mut out)?;
        self.joining_code.tls_serialize(&mut out)?;
        Ok(out)
    }
}

impl WireBody for GroupInfoRequest {
    const MAX_LEN: usize = 64 << 10;
}

/// The hub's verdict (protocol-06 §5.6, `enum GroupInfoCode`; note `success` is 1 here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, TlsSerialize, TlsDeserialize, TlsSize)]
#[repr(u8)]
pub enum GroupInfoCode {
    /// `success(1)`.
    Success = 1,
    /// `notAuthorized(2)`.
    NotAuthorized = 2,
    /// `noSuchRoom(3)` (a hub may answer `notAuthorized` instead).
    NoSuchRoom = 3,
}

/// The part of [`GroupInfoResponse`] selected by its status.
#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
#[repr(u8)]
pub enum GroupInfoResult {
    /// `success`: the encrypted GroupInfo, tree and pending proposals, signed by the hub.
    #[tls_codec(discriminant = "GroupInfoCode::Success")]
    Success {
        /// The cipher suite of the HPKE encryption and signature.
        cipher_suite: CipherSuite,
        /// The hub as an external sender (its key signs the response).
        hub_sender: ExternalSender,
        /// `EncryptWithLabel(groupInfoPublicKey, "GroupInfo and ratchet_tree encryption",
        /// room_id, GroupInfoRatchetTreeTBE)`.
        encrypted_groupinfo_and_tree: HpkeCiphertext,
        /// `SignWithLabel(hub_sender.signature_key, "GroupInfoResponseTBS", GroupInfoResponseTBS)`.
        signature: VLBytes,
    },
    /// `notAuthorized`.
    #[tls_codec(discriminant = "GroupInfoCode::NotAuthorized")]
    NotAuthorized,
    /// `noSuchRoom`.
    #[tls_codec(discriminant = "GroupInfoCode::NoSuchRoom")]
    NoSuchRoom,
}

/// The response body (protocol-06 §5.6, `GroupInfoResponse`; its `Protocol version` field is
/// the protocol, and `opaque room_id<V>` is read as the room URI).
#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct GroupInfoResponse {
    /// The protocol (`mls10`).
    pub protocol: Protocol,
    /// The room.
    pub room_id: IdentifierUri,
    /// The verdict and, on success, the encrypted GroupInfo.
    pub result: GroupInfoResult,
}

impl GroupInfoResponse {
    /// The label of the response signature.
    pub const SIGNATURE_LABEL: &'static str = "GroupInfoResponseTBS";

    /// The serialized `GroupInfoResponseTBS` of a successful response (`None` otherwise).
    pub fn to_be_signed(&self) -> Result<Option<Vec<u8>>, WireError> {
        let GroupInfoResult::Success {
            cipher_suite,
            hub_sender,
            encrypted_groupinfo_and_tree,
            ..
        } = &self.result
        else {
            return Ok(None);
        };
        let mut out = Vec::new();
        self.protocol.tls_serialize(&mut out)?;
        self.room_id.tls_serialize(&mut out)?;
        GroupInfoCode::Success.tls_serialize(&mut out)?;
        cipher_suite.tls_serialize(&mut out)?;
        hub_sender.tls_serialize(&mut out)?;
        encrypted_groupinfo_and_tree.tls_serialize(&mut out)?;
        Ok(Some(out))
    }
}

impl WireBody for GroupInfoResponse {
    const MAX_LEN: usize = 16 << 20;
}

/// A proposal the hub accepted in the current epoch (protocol-06 §5.6, `PendingProposal`).
#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct PendingProposal {
    /// The proposal.
    pub proposal: MlsMessage,
    /// When the hub accepted it, in milliseconds since the UNIX epoch.
    pub hub_accepted_time: u64,
}

/// The plaintext of `encrypted_groupinfo_and_tree` (protocol-06 §5.6, `GroupInfoRatchetTreeTBE`).
#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct GroupInfoRatchetTreeTbe {
    /// The GroupInfo, without the ratchet tree extension.
    pub group_info: GroupInfo,
    /// The ratchet tree.
    pub ratchet_tree: RatchetTreeOption,
    /// The valid pending proposals of the epoch.
    pub pending_proposals: Vec<PendingProposal>,
}

impl GroupInfoRatchetTreeTbe {
    /// The HPKE label of the encryption.
    pub const ENCRYPTION_LABEL: &'static str = "GroupInfo and ratchet_tree encryption";
}

impl WireBody for GroupInfoRatchetTreeTbe {
    const MAX_LEN: usize = 16 << 20;
}
