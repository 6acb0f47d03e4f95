//! `POST /notify/{roomId}` (protocol-06 §5.5): the hub fans messages out to the followers.

use std::io::{Read, Write};

use tls_codec::{Deserialize, Serialize, Size};

use super::codec::{WireBody, WireError, malformed};
use super::mls_objects::{ContentKind, MessageKind, MlsMessage};
use super::submit::Frank;
use super::update::{RatchetTreeOption, check_proposals};

/// The message of a [`FanoutMessage`] and the fields its kind selects.
///
/// protocol-06 selects on `message.wire_format` with content-type labels; we select on what the
/// message is: an application message (a PrivateMessage), a Welcome, a proposal or a commit
/// (each a PublicMessage or PrivateMessage). GroupInfo and KeyPackage messages are refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FanoutPayload {
    /// A PrivateMessage with an application message, and its frank if the hub franked it.
    Application {
        /// The message.
        message: MlsMessage,
        /// `optional Frank frank`.
        frank: Option<Frank>,
    },
    /// A Welcome (sent only to the providers of the clients it welcomes) and the ratchet tree.
    Welcome {
        /// The Welcome, as an MLSMessage.
        welcome: MlsMessage,
        /// `RatchetTreeOption ratchetTreeOption`.
        ratchet_tree: RatchetTreeOption,
    },
    /// A proposal and the proposals sent with it (the same list as in the `UpdateRequest`).
    Proposal {
        /// The proposal.
        proposal: MlsMessage,
        /// `MLSMessage moreProposals<V>`.
        more_proposals: Vec<MlsMessage>,
    },
    /// A commit, and for an external commit the hub's replacements of the proposals it
    /// invalidated.
    Commit {
        /// The commit.
        commit: MlsMessage,
        /// `MLSMessage externalProposals<V>`.
        external_proposals: Vec<MlsMessage>,
    },
}

/// One fanned-out message (protocol-06 §5.5, `FanoutMessage`, for `mls10`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FanoutMessage {
    /// The hub's acceptance time, in milliseconds since the UNIX epoch.
    pub timestamp: u64,
    /// The message.
    pub payload: FanoutPayload,
}

impl FanoutPayload {
    fn check(&self) -> Result<(), String> {
        let (message, expected) = match self {
            FanoutPayload::Application { message, .. } => {
                (message, "an application PrivateMessage")
            }
            FanoutPayload::Welcome { welcome, .. } => (welcome, "a Welcome"),
            FanoutPayload::Proposal {
                proposal,
                more_proposals,
            } => {
                check_proposals(more_proposals, "moreProposals")?;
                (proposal, "a proposal")
            }
            FanoutPayload::Commit {
                commit,
                external_proposals,
            } => {
                check_proposals(external_proposals, "externalProposals")?;
                (commit, "a commit")
            }
        };
        let fits = matches!(
            (self, message.kind()),
            (
                FanoutPayload::Application { .. },
                MessageKind::PrivateMessage(ContentKind::Application)
            ) | (FanoutPayload::Welcome { .. }, MessageKind::Welcome)
                | (
                    FanoutPayload::Proposal { .. },
                    MessageKind::PublicMessage(ContentKind::Proposal)
                        | MessageKind::PrivateMessage(ContentKind::Proposal)
                )
                | (
                    FanoutPayload::Commit { .. },
                    MessageKind::PublicMessage(ContentKind::Commit)
                        | MessageKind::PrivateMessage(ContentKind::Commit)
                )
        );
        if fits {
            Ok(())
        } else {
            Err(format!("expected {expected}, found a {}", message.kind()))
        }
    }

    /// The MLS message.
    pub fn message(&self) -> &MlsMessage {
        match self {
            FanoutPayload::Application { message, .. } => message,
            FanoutPayload::Welcome { welcome, .. } => welcome,
            FanoutPayload::Proposal { proposal, .. } => proposal,
            FanoutPayload::Commit { commit, .. } => commit,
        }
    }
}

impl Size for FanoutMessage {
    fn tls_serialized_len(&self) -> usize {
        8 + self.payload.message().tls_serialized_len()
            + match &self.payload {
                FanoutPayload::Application { frank, .. } => frank.tls_serialized_len(),
                FanoutPayload::Welcome { ratchet_tree, .. } => ratchet_tree.tls_serialized_len(),
                FanoutPayload::Proposal {
                    more_proposals: list,
                    ..
                }
                | FanoutPayload::Commit {
                    external_proposals: list,
                    ..
                } => list.tls_serialized_len(),
            }
    }
}

impl Serialize for FanoutMessage {
    fn tls_serialize<W: Write>(&self, writer: &mut W) -> Result<usize, tls_codec::Error> {
        self.payload
            .check()
            .map_err(tls_codec::Error::EncodingError)?;
        let mut written = self.timestamp.tls_serialize(writer)?;
        written += self.payload.message().tls_serialize(writer)?;
        written += match &self.payload {
            FanoutPayload::Application { frank, .. } => frank.tls_serialize(writer)?,
            FanoutPayload::Welcome { ratchet_tree, .. } => ratchet_tree.tls_serialize(writer)?,
            FanoutPayload::Proposal {
                more_proposals: list,
                ..
            }
            | FanoutPayload::Commit {
                external_proposals: list,
                ..
            } => list.tls_serialize(writer)?,
        };
        Ok(written)
    }
}

impl Deserialize for FanoutMessage {
    fn tls_deserialize<R: Read>(reader: &mut R) -> Result<Self, tls_codec::Error> {
        let timestamp = u64::tls_deserialize(reader)?;
        let message = MlsMessage::tls_deserialize(reader)?;
        let payload = match message.kind() {
            MessageKind::PrivateMessage(ContentKind::Application) => FanoutPayload::Application {
                message,
                frank: Option::<Frank>::tls_deserialize(reader)?,
            },
            MessageKind::Welcome => FanoutPayload::Welcome {
                welcome: message,
                ratchet_tree: RatchetTreeOption::tls_deserialize(reader)?,
            },
            MessageKind::PublicMessage(ContentKind::Proposal)
            | MessageKind::PrivateMessage(ContentKind::Proposal) => FanoutPayload::Proposal {
                proposal: message,
                more_proposals: Vec::<MlsMessage>::tls_deserialize(reader)?,
            },
            MessageKind::PublicMessage(ContentKind::Commit)
            | MessageKind::PrivateMessage(ContentKind::Commit) => FanoutPayload::Commit {
                commit: message,
                external_proposals: Vec::<MlsMessage>::tls_deserialize(reader)?,
            },
            other => return Err(malformed(format!("a FanoutMessage cannot carry a {other}"))),
        };
        payload.check().map_err(malformed)?;
        Ok(Self { timestamp, payload })
    }
}

/// The body of a notify request: one or more [`FanoutMessage`]s, concatenated (protocol-06 §5.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyBody {
    /// The messages, in the hub's order.
    pub messages: Vec<FanoutMessage>,
}

impl Size for NotifyBody {
    fn tls_serialized_len(&self) -> usize {
        self.messages.iter().map(Size::tls_serialized_len).sum()
    }
}

impl Serialize for NotifyBody {
    fn tls_serialize<W: Write>(&self, writer: &mut W) -> Result<usize, tls_codec::Error> {
        if self.messages.is_empty() {
            return Err(tls_codec::Error::EncodingError(
                "a notify body needs at least one FanoutMessage".into(),
            ));
        }
        let mut written = 0;
        for message in &self.messages {
            written += message.tls_serialize(writer)?;
        }
        Ok(written)
    }
}

impl Deserialize for NotifyBody {
    /// Reads messages until the end of the input: a notify body is the whole request body.
    fn tls_deserialize<R: Read>(reader: &mut R) -> Result<Self, tls_codec::Error> {
        let mut all = Vec::new();
        reader
            .read_to_end(&mut all)
            .map_err(|error| malformed(error.to_string()))?;
        let mut rest = all.as_slice();
        let mut messages = Vec::new();
        while !rest.is_empty() {
            messages.push(FanoutMessage::tls_deserialize(&mut rest)?);
        }
        if messages.is_empty() {
            return Err(malformed("an empty notify body"));
        }
        Ok(Self { messages })
    }
}

impl WireBody for NotifyBody {
    const MAX_LEN: usize = 16 << 20;

    fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        if bytes.len() > Self::MAX_LEN {
            return Err(WireError::TooLarge {
                len: bytes.len(),
                max: Self::MAX_LEN,
            });
        }
        let mut rest = bytes;
        Ok(Self::tls_deserialize(&mut rest)?)
    }
}
