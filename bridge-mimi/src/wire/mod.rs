//! The bodies of the MIMI protocol endpoints (draft-ietf-mimi-protocol-06 §5), in the TLS
//! presentation language of RFC 8446 §3 with the MLS conventions of RFC 9420 §2.1 (`<V>` vectors
//! with a variable-length prefix, `optional<T>` as a presence octet).
//!
//! Every body implements [`WireBody`]: [`WireBody::decode`] takes exactly one body (an error for
//! truncated input, unknown code points, trailing bytes or a body over [`WireBody::MAX_LEN`]) and
//! never panics; [`WireBody::encode`] writes it.
//!
//! MLS objects inside the bodies ([`MlsMessage`], [`KeyPackage`], [`Welcome`], [`GroupInfo`],
//! [`RatchetTree`]) are kept as their exact serialization, delimited and checked by openmls's own
//! decoder: the hub forwards them byte for byte and the MLS layer parses them with its provider.
//! Where the draft contradicts itself, docs/mimi.md ("Protocol: draft defects and our
//! decisions") says what we chose.

mod codec;
mod common;
pub mod directory;
mod group_info;
mod key_material;
mod mls_objects;
mod notify;
mod submit;
mod update;

pub use codec::{WireBody, WireError};
pub use common::{
    Capabilities, CipherSuite, Credential, Extension, ExternalSender, HpkeCiphertext,
    HpkePublicKey, IdentifierUri, ProposalRef, Protocol, RequiredCapabilities, SignaturePublicKey,
};
pub use group_info::{
    GroupInfoCode, GroupInfoRatchetTreeTbe, GroupInfoRequest, GroupInfoResponse, GroupInfoResult,
    PendingProposal,
};
pub use key_material::{
    ClientKeyMaterial, ClientKeyMaterialResult, KeyMaterialClientCode, KeyMaterialRequest,
    KeyMaterialResponse, KeyMaterialUserCode,
};
pub use mls_objects::{
    ContentKind, GroupInfo, KeyPackage, MessageKind, MlsMessage, RatchetTree, Welcome,
};
pub use notify::{FanoutMessage, FanoutPayload, NotifyBody};
pub use submit::{
    Frank, SubmitMessageRequest, SubmitMessageResponse, SubmitResponseCode, SubmitResult,
};
pub use update::{
    CommitBundle, GroupInfoOption, GroupInfoRepresentation, HandshakeBundle, PartialGroupInfo,
    ProposalBundle, RatchetTreeOption, RatchetTreePresence, RatchetTreeRepresentation,
    RatchetTreeUrl, UpdateRequest, UpdateResponseCode, UpdateResult, UpdateRoomResponse,
};
