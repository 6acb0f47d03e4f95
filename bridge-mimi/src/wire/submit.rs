//! `POST /submitMessage/{roomId}` (protocol-06 §5.4): an application message sent to the hub.

use std::io::{Read, Write};

use tls_codec::{Deserialize, Serialize, Size, TlsDeserialize, TlsSerialize, TlsSize, VLBytes};

use super::codec::{WireBody, malformed};
use super::common::{CipherSuite, IdentifierUri, Protocol};
use super::mls_objects::{ContentKind, MessageKind, MlsMessage};

/// The request body (protocol-06 §5.4, `SubmitMessageRequest`, for `mls10`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmitMessageRequest {
    /// The protocol (`mls10`).
    pub protocol: Protocol,
    /// A PrivateMessage with an application message (anything else is refused when decoding).
    pub app_message: MlsMessage,
    /// The sender: a user URI in the room's participant list (or a pseudonym).
    pub sending_uri: IdentifierUri,
}

fn check_app_message(message: &MlsMessage) -> Result<(), String> {
    match message.kind() {
        MessageKind::PrivateMessage(ContentKind::Application) => Ok(()),
        other => Err(format!(
            "appMessage is a {other}, not a PrivateMessage with an application message"
        )),
    }
}

impl Size for SubmitMessageRequest {
    fn tls_serialized_len(&self) -> usize {
        self.protocol.tls_serialized_len()
            + self.app_message.tls_serialized_len()
            + self.sending_uri.tls_serialized_len()
    }
}

impl Serialize for SubmitMessageRequest {
    fn tls_serialize<W: Write>(&self, writer: &mut W) -> Result<usize, tls_codec::Error> {
        check_app_message(&self.app_message).map_err(tls_codec::Error::EncodingError)?;
        Ok(self.protocol.tls_serialize(writer)?
            + self.app_message.tls_serialize(writer)?
            + self.sending_uri.tls_serialize(writer)?)
    }
}

impl Deserialize for SubmitMessageRequest {
    fn tls_deserialize<R: Read>(reader: &mut R) -> Result<Self, tls_codec::Error> {
        let protocol = Protocol::tls_deserialize(reader)?;
        let app_message = MlsMessage::tls_deserialize(reader)?;
        check_app_message(&app_message).map_err(malformed)?;
        let sending_uri = IdentifierUri::tls_deserialize(reader)?;
        Ok(Self {
            protocol,
            app_message,
            sending_uri,
        })
    }
}

impl WireBody for SubmitMessageRequest {}

/// The hub's verdict (protocol-06 §5.4, `enum SubmitResponseCode`). The draft's select says
/// `success` where the enum says `accepted(0)`: they are the same code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, TlsSerialize, TlsDeserialize, TlsSize)]
#[repr(u8)]
pub enum SubmitResponseCode {
    /// `accepted(0)`: accepted and will be distributed.
    Accepted = 0,
    /// `notAllowed(1)`: refused by policy or authorization.
    NotAllowed = 1,
    /// `epochTooOld(2)`: the hub is at a newer epoch.
    EpochTooOld = 2,
}

/// The hub's frank of a message (protocol-06 §5.4, `Frank`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct Frank {
    /// `uint8 server_frank[32]`.
    pub server_frank: [u8; 32],
    /// The cipher suite of the franking signature.
    pub franking_signature_ciphersuite: CipherSuite,
    /// `opaque franking_integrity_signature<V>`.
    pub franking_integrity_signature: VLBytes,
}

/// The part of [`SubmitMessageResponse`] selected by its code.
#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
#[repr(u8)]
pub enum SubmitResult {
    /// `accepted`: the hub's acceptance time in milliseconds since the UNIX epoch and, when the
    /// message carried a franking tag, the frank (`optional<Frank>`).
    #[tls_codec(discriminant = "SubmitResponseCode::Accepted")]
    Accepted {
        /// `uint64 accepted_timestamp`.
        accepted_timestamp: u64,
        /// `optional Frank frank`.
        frank: Option<Frank>,
    },
    /// `notAllowed`.
    #[tls_codec(discriminant = "SubmitResponseCode::NotAllowed")]
    NotAllowed,
    /// `epochTooOld`, with the hub's epoch.
    #[tls_codec(discriminant = "SubmitResponseCode::EpochTooOld")]
    EpochTooOld {
        /// `uint64 currentEpoch`.
        current_epoch: u64,
    },
}

/// The response body (protocol-06 §5.4, `SubmitMessageResponse`, for `mls10`).
#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct SubmitMessageResponse {
    /// The protocol (`mls10`).
    pub protocol: Protocol,
    /// The verdict.
    pub result: SubmitResult,
}

impl WireBody for SubmitMessageResponse {
    const MAX_LEN: usize = 64 << 10;
}
