//! `POST /update/{roomId}` (protocol-06 §5.3): a commit or proposals sent to the hub, and the
//! hub's answer. `GroupInfoOption` is from protocol-06 §5.3; `RatchetTreeOption` and
//! `PartialGroupInfo` from draft-mahy-mls-ratchet-tree-options-03 §2-3.

use std::io::{Read, Write};

use tls_codec::{Deserialize, Serialize, Size, TlsDeserialize, TlsSerialize, TlsSize, VLBytes};

use super::codec::{WireBody, malformed};
use super::common::{Extension, ProposalRef};
use super::mls_objects::{ContentKind, GroupInfo, MessageKind, MlsMessage, RatchetTree, Welcome};

/// How the GroupInfo is conveyed (protocol-06 §5.3, `enum GroupInfoRepresentation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, TlsSerialize, TlsDeserialize, TlsSize)]
#[repr(u8)]
pub enum GroupInfoRepresentation {
    /// `full(1)`: the whole GroupInfo.
    Full = 1,
    /// `partial(2)`: a `PartialGroupInfo` the hub completes.
    Partial = 2,
}

/// Whether the ratchet tree extension is in the GroupInfo (ratchet-tree-options-03 §3,
/// `enum RatchetTreePresence`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, TlsSerialize, TlsDeserialize, TlsSize)]
#[repr(u8)]
pub enum RatchetTreePresence {
    /// `no_ratchet_tree(0)`: in neither the current nor the previous epoch.
    NoRatchetTree = 0,
    /// `present(1)`: in both.
    Present = 1,
    /// `removed(2)`: in the previous epoch only.
    Removed = 2,
    /// `added(3)`: in the current epoch only.
    Added = 3,
}

/// What the hub needs to rebuild a GroupInfo (ratchet-tree-options-03 §3, `PartialGroupInfo`).
#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct PartialGroupInfo {
    /// Whether the ratchet tree extension is present.
    pub ratchet_tree_presence: RatchetTreePresence,
    /// The GroupInfo extensions other than `ratchet_tree`.
    pub group_info_extensions: Vec<Extension>,
    /// The committer's GroupInfo signature.
    pub signature: VLBytes,
}

/// The GroupInfo of a commit (protocol-06 §5.3, `GroupInfoOption`).
#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
#[repr(u8)]
pub enum GroupInfoOption {
    /// `full`: the GroupInfo (without the ratchet tree extension).
    #[tls_codec(discriminant = "GroupInfoRepresentation::Full")]
    Full(GroupInfo),
    /// `partial`.
    #[tls_codec(discriminant = "GroupInfoRepresentation::Partial")]
    Partial(PartialGroupInfo),
}

/// How the ratchet tree is conveyed (ratchet-tree-options-03 §2, `enum RatchetTreeRepresentation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, TlsSerialize, TlsDeserialize, TlsSize)]
#[repr(u8)]
pub enum RatchetTreeRepresentation {
    /// `full(1)`: the whole tree is included.
    Full = 1,
    /// `httpsUri(2)`: it can be downloaded from an HTTPS URL.
    HttpsUri = 2,
    /// `outOfBand(3)`: conveyed by other means.
    OutOfBand = 3,
    /// `distributionService(4)`: the hub rebuilds it from the handshakes.
    DistributionService = 4,
}

/// An HTTPS location of a ratchet tree (the `httpsUri` case of `RatchetTreeOption`).
#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct RatchetTreeUrl {
    /// `opaque ratchet_tree_url<V>`: an `https:` URL.
    pub ratchet_tree_url: VLBytes,
    /// `opaque tree_signature<V>`.
    pub tree_signature: VLBytes,
}

/// The ratchet tree of a commit or Welcome (ratchet-tree-options-03 §2, `RatchetTreeOption`).
#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
#[repr(u8)]
pub enum RatchetTreeOption {
    /// `full`: the tree.
    #[tls_codec(discriminant = "RatchetTreeRepresentation::Full")]
    Full(RatchetTree),
    /// `httpsUri`: where to fetch it.
    #[tls_codec(discriminant = "RatchetTreeRepresentation::HttpsUri")]
    HttpsUri(RatchetTreeUrl),
    /// `outOfBand`: `opaque tree_signature<V>`.
    #[tls_codec(discriminant = "RatchetTreeRepresentation::OutOfBand")]
    OutOfBand(VLBytes),
    /// `distributionService`: nothing follows.
    #[tls_codec(discriminant = "RatchetTreeRepresentation::DistributionService")]
    DistributionService,
}

/// A commit with what the hub needs to fan it out (the `commit` case of `HandshakeBundle`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitBundle {
    /// The commit: a PublicMessage (a PrivateMessage is decoded too; SemiPrivateMessage is not
    /// supported by openmls 0.9).
    pub commit: MlsMessage,
    /// The Welcome for added clients, without the ratchet tree.
    pub welcome: Option<Welcome>,
    /// The GroupInfo of the new epoch, without the ratchet tree.
    pub group_info: GroupInfoOption,
    /// The ratchet tree of the new epoch.
    pub ratchet_tree: RatchetTreeOption,
}

/// Proposals sent to the hub (the `proposal` case of `HandshakeBundle`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProposalBundle {
    /// The first proposal.
    pub proposal: MlsMessage,
    /// `MLSMessage moreProposals<V>`: further proposals.
    pub more_proposals: Vec<MlsMessage>,
}

/// protocol-06 §5.3 `HandshakeBundle`: an MLSMessage and fields selected by its content type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeBundle {
    /// A commit.
    Commit(CommitBundle),
    /// One or more proposals.
    Proposals(ProposalBundle),
}

fn handshake_kind(message: &MlsMessage) -> Option<ContentKind> {
    match message.kind() {
        MessageKind::PublicMessage(kind) | MessageKind::PrivateMessage(kind) => Some(kind),
        _ => None,
    }
}

/// Checks that every message of `messages` is a proposal.
pub(crate) fn check_proposals(messages: &[MlsMessage], field: &str) -> Result<(), String> {
    match messages
        .iter()
        .find(|message| handshake_kind(message) != Some(ContentKind::Proposal))
    {
        Some(other) => Err(format!("{field} holds a {}, not a proposal", other.kind())),
        None => Ok(()),
    }
}

impl HandshakeBundle {
    fn check(&self) -> Result<(), String> {
        match self {
            HandshakeBundle::Commit(bundle) => match handshake_kind(&bundle.commit) {
                Some(ContentKind::Commit) => Ok(()),
                _ => Err(format!("a commit bundle holds a {}", bundle.commit.kind())),
            },
            HandshakeBundle::Proposals(bundle) => {
                check_proposals(std::slice::from_ref(&bundle.proposal), "proposalOrCommit")?;
                check_proposals(&bundle.more_proposals, "moreProposals")
            }
        }
    }
}

impl Size for HandshakeBundle {
    fn tls_serialized_len(&self) -> usize {
        match self {
            HandshakeBundle::Commit(bundle) => {
                bundle.commit.tls_serialized_len()
                    + bundle.welcome.tls_serialized_len()
                    + bundle.group_info.tls_serialized_len()
                    + bundle.ratchet_tree.tls_serialized_len()
            }
            HandshakeBundle::Proposals(bundle) => {
                bundle.proposal.tls_serialized_len() + bundle.more_proposals.tls_serialized_len()
            }
        }
    }
}

impl Serialize for HandshakeBundle {
    fn tls_serialize<W: Write>(&self, writer: &mut W) -> Result<usize, tls_codec::Error> {
        self.check().map_err(tls_codec::Error::EncodingError)?;
        Ok(match self {
            HandshakeBundle::Commit(bundle) => {
                bundle.commit.tls_serialize(writer)?
                    + bundle.welcome.tls_serialize(writer)?
                    + bundle.group_info.tls_serialize(writer)?
                    + bundle.ratchet_tree.tls_serialize(writer)?
            }
            HandshakeBundle::Proposals(bundle) => {
                bundle.proposal.tls_serialize(writer)?
                    + bundle.more_proposals.tls_serialize(writer)?
            }
        })
    }
}

impl Deserialize for HandshakeBundle {
    fn tls_deserialize<R: Read>(reader: &mut R) -> Result<Self, tls_codec::Error> {
        let message = MlsMessage::tls_deserialize(reader)?;
        let bundle = match handshake_kind(&message) {
            Some(ContentKind::Commit) => HandshakeBundle::Commit(CommitBundle {
                commit: message,
                welcome: Option::<Welcome>::tls_deserialize(reader)?,
                group_info: GroupInfoOption::tls_deserialize(reader)?,
                ratchet_tree: RatchetTreeOption::tls_deserialize(reader)?,
            }),
            Some(ContentKind::Proposal) => HandshakeBundle::Proposals(ProposalBundle {
                proposal: message,
                more_proposals: Vec::<MlsMessage>::tls_deserialize(reader)?,
            }),
            _ => {
                return Err(malformed(format!(
                    "proposalOrCommit is a {}, not a proposal or commit",
                    message.kind()
                )));
            }
        };
        bundle.check().map_err(malformed)?;
        Ok(bundle)
    }
}

/// The request body (protocol-06 §5.3, `UpdateRequest`): the protocol is the room's (`mls10`),
/// not on the wire.
#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct UpdateRequest {
    /// The handshake.
    pub bundle: HandshakeBundle,
}

impl WireBody for UpdateRequest {
    const MAX_LEN: usize = 16 << 20;
}

/// The hub's verdict (protocol-06 §5.3, `enum UpdateResponseCode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, TlsSerialize, TlsDeserialize, TlsSize)]
#[repr(u8)]
pub enum UpdateResponseCode {
    /// `success(0)`: accepted and will be distributed.
    Success = 0,
    /// `wrongEpoch(1)`: the hub is at another epoch.
    WrongEpoch = 1,
    /// `notAllowed(2)`: refused by policy or authorization.
    NotAllowed = 2,
    /// `invalidProposal(3)`: at least one proposal is invalid.
    InvalidProposal = 3,
}

/// The part of [`UpdateRoomResponse`] selected by its code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateResult {
    /// `success`, with the hub's acceptance time in milliseconds since the UNIX epoch.
    Success {
        /// `uint64 accepted_timestamp`.
        accepted_timestamp: u64,
    },
    /// `wrongEpoch`, with the hub's epoch.
    WrongEpoch {
        /// `uint64 currentEpoch`.
        current_epoch: u64,
    },
    /// `notAllowed`.
    NotAllowed,
    /// `invalidProposal`, with the invalid proposals.
    InvalidProposal {
        /// `ProposalRef invalidProposals<V>`.
        invalid_proposals: Vec<ProposalRef>,
    },
}

impl UpdateResult {
    /// The code on the wire.
    pub fn code(&self) -> UpdateResponseCode {
        match self {
            Self::Success { .. } => UpdateResponseCode::Success,
            Self::WrongEpoch { .. } => UpdateResponseCode::WrongEpoch,
            Self::NotAllowed => UpdateResponseCode::NotAllowed,
            Self::InvalidProposal { .. } => UpdateResponseCode::InvalidProposal,
        }
    }
}

/// The response body (protocol-06 §5.3, `UpdateRoomResponse`). The draft's undefined `string`
/// `errorDescription` is read as `opaque<V>` holding UTF-8 (invalid UTF-8 is replaced, not
/// refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateRoomResponse {
    /// A human-readable description (empty on success).
    pub error_description: String,
    /// The verdict.
    pub result: UpdateResult,
}

impl Size for UpdateRoomResponse {
    fn tls_serialized_len(&self) -> usize {
        1 + tls_codec::VLByteSlice(self.error_description.as_bytes()).tls_serialized_len()
            + match &self.result {
                UpdateResult::Success { .. } | UpdateResult::WrongEpoch { .. } => 8,
                UpdateResult::NotAllowed => 0,
                UpdateResult::InvalidProposal { invalid_proposals } => {
                    invalid_proposals.tls_serialized_len()
                }
            }
    }
}

impl Serialize for UpdateRoomResponse {
    fn tls_serialize<W: Write>(&self, writer: &mut W) -> Result<usize, tls_codec::Error> {
        let mut written = self.result.code().tls_serialize(writer)?;
        written +=
            tls_codec::VLByteSlice(self.error_description.as_bytes()).tls_serialize(writer)?;
        written += match &self.result {
            UpdateResult::Success {
                accepted_timestamp: value,
            }
            | UpdateResult::WrongEpoch {
                current_epoch: value,
            } => value.tls_serialize(writer)?,
            UpdateResult::NotAllowed => 0,
            UpdateResult::InvalidProposal { invalid_proposals } => {
                invalid_proposals.tls_serialize(writer)?
            }
        };
        Ok(written)
    }
}

impl Deserialize for UpdateRoomResponse {
    fn tls_deserialize<R: Read>(reader: &mut R) -> Result<Self, tls_codec::Error> {
        let code = UpdateResponseCode::tls_deserialize(reader)?;
        let description = VLBytes::tls_deserialize(reader)?;
        let error_description = String::from_utf8_lossy(description.as_slice()).into_owned();
        let result = match code {
            UpdateResponseCode::Success => UpdateResult::Success {
                accepted_timestamp: u64::tls_deserialize(reader)?,
            },
            UpdateResponseCode::WrongEpoch => UpdateResult::WrongEpoch {
                current_epoch: u64::tls_deserialize(reader)?,
            },
            UpdateResponseCode::NotAllowed => UpdateResult::NotAllowed,
            UpdateResponseCode::InvalidProposal => UpdateResult::InvalidProposal {
                invalid_proposals: Vec::<ProposalRef>::tls_deserialize(reader)?,
            },
        };
        Ok(Self {
            error_description,
            result,
        })
    }
}

impl WireBody for UpdateRoomResponse {
    const MAX_LEN: usize = 64 << 10;
}
