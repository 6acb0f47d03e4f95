//! Message status reports (draft-mahy-mimi-message-status-01): read receipts and delivery
//! reports of MIMI messages, in a body part of media type `application/mimi-message-status`.
//!
//! A report is a CBOR array of `[messageId, status]` pairs, `messageId` a 32-byte MIMI message
//! ID of the same room and `status` a small integer: unread 0, delivered 1, read 2, expired 3,
//! deleted 4, hidden 5, error 6, 7–255 unknown (kept, never acted on). The draft is an
//! individual one, not a working-group document, and says nothing of how the part is carried:
//! we send it as the whole body of a MIMI content message, one part with disposition
//! `session` (not something to render), and read a body that is one part of that media type
//! (whatever its disposition).

use super::cbor::{Reader, Writer};
use super::{ContentError, MessageId};

/// The media type of a report.
pub const MEDIA_TYPE: &str = "application/mimi-message-status";

/// The most entries read from one report (a larger one is refused as suspicious).
pub const MAX_ENTRIES: usize = 1024;

/// A message's status in a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub u8);

impl Status {
    /// Not read yet by the reporter.
    pub const UNREAD: Status = Status(0);
    /// Received by a client of the reporter.
    pub const DELIVERED: Status = Status(1);
    /// Read by the reporter.
    pub const READ: Status = Status(2);
    /// Expired before it could be read.
    pub const EXPIRED: Status = Status(3);
    /// Deleted, by the reporter's client or a moderator.
    pub const DELETED: Status = Status(4);
    /// Hidden by the reporter's client (archived).
    pub const HIDDEN: Status = Status(5);
    /// Known, but something went wrong receiving it.
    pub const ERROR: Status = Status(6);
}

/// A decoded report: each message named, with its status, in the report's order.
pub type Report = Vec<(MessageId, Status)>;

/// Encodes `entries` as a report.
pub fn encode(entries: &[(MessageId, Status)]) -> Vec<u8> {
    let mut w = Writer::default();
    w.array(entries.len());
    for (id, status) in entries {
        w.array(2);
        w.bytes(id.as_bytes());
        w.uint(u64::from(status.0));
    }
    w.out
}

/// Decodes a report; the whole of `bytes` must be one.
pub fn decode(bytes: &[u8]) -> Result<Report, ContentError> {
    let mut r = Reader::new(bytes);
    let at = r.pos();
    let n = r.array("MessageStatusReport")?;
    if n > MAX_ENTRIES {
        return Err(ContentError::Invalid {
            at,
            field: "MessageStatusReport",
            reason: "more entries than the bridge reads from one report",
        });
    }
    let mut report = Vec::with_capacity(n);
    for _ in 0..n {
        r.array_of("PerMessageStatus", 2)?;
        let id = MessageId::from_slice("messageId", r.bytes("messageId")?)?;
        let status = r.uint_max("status", 255)?;
        report.push((id, Status(u8::try_from(status).unwrap_or(u8::MAX))));
    }
    if r.remaining() > 0 {
        return Err(ContentError::TrailingBytes(r.remaining()));
    }
    Ok(report)
}

/// The message a report says its sender has read up to: the last one it reports read.
pub fn read_up_to(report: &Report) -> Option<MessageId> {
    report
        .iter()
        .rev()
        .find(|(_, status)| *status == Status::READ)
        .map(|(id, _)| *id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(hex: &str) -> MessageId {
        MessageId::from_hex(hex).expect("message ID")
    }

    /// The draft's example (its `status.edn` and the hex dump under it), byte for byte.
    #[test]
    fn the_drafts_example_decodes_and_encodes_byte_for_byte() {
        let hex = concat!(
            "84",
            "825820017ce54837404c3696e0c747b985cb172716d0ed0a3d249ca63ace7d82a096f402",
            "825820015354973c2b65ca937bf1e035ae53a5ab80e947afa43d46920d4202e5cc0b2702",
            "825820018d825adf9f6be00dcafc5704c4102f5022e74219d0b603e4ba7622654042af00",
            "82582001e59db8173939facc2c8a4a0f0ae8d0c7a11a81239626630c9464a8d6717a0303",
        );
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect();
        let report = decode(&bytes).expect("decodes");
        assert_eq!(
            report,
            vec![
                (
                    id("017ce54837404c3696e0c747b985cb172716d0ed0a3d249ca63ace7d82a096f4"),
                    Status::READ
                ),
                (
                    id("015354973c2b65ca937bf1e035ae53a5ab80e947afa43d46920d4202e5cc0b27"),
                    Status::READ
                ),
                (
                    id("018d825adf9f6be00dcafc5704c4102f5022e74219d0b603e4ba7622654042af"),
                    Status::UNREAD
                ),
                (
                    id("01e59db8173939facc2c8a4a0f0ae8d0c7a11a81239626630c9464a8d6717a03"),
                    Status::EXPIRED
                ),
            ]
        );
        assert_eq!(encode(&report), bytes);
        assert_eq!(
            read_up_to(&report),
            Some(id(
                "015354973c2b65ca937bf1e035ae53a5ab80e947afa43d46920d4202e5cc0b27"
            ))
        );
    }

    #[test]
    fn bad_reports_are_refused_without_panicking() {
        let good = encode(&[(
            id("017ce54837404c3696e0c747b985cb172716d0ed0a3d249ca63ace7d82a096f4"),
            Status::READ,
        )]);
        for (bad, why) in [
            (Vec::new(), "empty"),
            (vec![0xa0], "a map"),
            (good[..good.len() - 1].to_vec(), "truncated"),
            ([good.as_slice(), &[0]].concat(), "trailing bytes"),
            (
                [&[0x81, 0x82, 0x41, 0x01][..], &[0x02]].concat(),
                "a one-byte message ID",
            ),
            (
                [&good[..good.len() - 1], &[0x19, 0x01, 0x00][..]].concat(),
                "a status over 255",
            ),
        ] {
            assert!(decode(&bad).is_err(), "{why}");
        }
        let mut many = vec![0x99, 0x04, 0x01];
        many.extend(std::iter::repeat_n(0u8, 2000));
        assert!(decode(&many).is_err(), "more than MAX_ENTRIES");
        // Unknown statuses are kept; a report with no read entry reads up to nothing.
        let unknown = encode(&[(
            id("017ce54837404c3696e0c747b985cb172716d0ed0a3d249ca63ace7d82a096f4"),
            Status(200),
        )]);
        let report = decode(&unknown).expect("decodes");
        assert_eq!(report[0].1, Status(200));
        assert_eq!(read_up_to(&report), None);
    }
}
