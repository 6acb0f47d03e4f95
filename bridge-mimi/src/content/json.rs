//! MIMI content as JSON, for people: what `bridge mimi inspect` prints.
//!
//! Field names are the draft's. Byte strings are hex, except a text part's content, shown as
//! text when it is UTF-8; unknown extensions are shown in CBOR diagnostic notation.

use serde_json::{Map, Value, json};

use super::id::hex;
use super::{MimiContent, NestedPart, Part, RawCbor};

/// The message as a JSON value.
pub fn to_json(content: &MimiContent) -> Value {
    let mut extensions = Map::new();
    if let Some(uri) = &content.extensions.sender_uri {
        extensions.insert("senderUri (1)".into(), json!(uri));
    }
    if let Some(uri) = &content.extensions.room_uri {
        extensions.insert("roomUri (2)".into(), json!(uri));
    }
    for (key, value) in &content.extensions.other {
        extensions.insert(key.to_string(), json!(diagnostic(value)));
    }
    json!({
        "salt": hex(&content.salt.0),
        "replaces": content.replaces.map(|id| id.to_hex()),
        "topicId": hex(&content.topic_id),
        "expires": content.expires.map(|e| json!({"relative": e.relative, "time": e.time})),
        "inReplyTo": content.in_reply_to.map(|id| id.to_hex()),
        "mimiExtensions": extensions,
        "body": part(&content.body),
    })
}

fn part(part: &NestedPart) -> Value {
    let mut out = Map::new();
    out.insert(
        "disposition".into(),
        match part.disposition.name() {
            Some(name) => json!(name),
            None => json!(part.disposition.0),
        },
    );
    out.insert("language".into(), json!(part.language));
    match &part.part {
        Part::Null => {
            out.insert("cardinality".into(), json!("null"));
        }
        Part::Single {
            content_type,
            content,
        } => {
            out.insert("cardinality".into(), json!("single"));
            out.insert("contentType".into(), json!(content_type));
            let text = content_type.starts_with("text/");
            match std::str::from_utf8(content) {
                Ok(s) if text => out.insert("content".into(), json!(s)),
                _ => out.insert("contentHex".into(), json!(hex(content))),
            };
            // A message status report (read receipts) is shown decoded as well.
            if content_type.eq_ignore_ascii_case(super::status::MEDIA_TYPE)
                && let Ok(report) = super::status::decode(content)
            {
                let statuses: Vec<Value> = (report.iter())
                    .map(|(id, status)| json!({"messageId": id.to_hex(), "status": status_name(*status)}))
                    .collect();
                out.insert("statusReport".into(), json!(statuses));
            }
        }
        Part::External(e) => {
            out.insert("cardinality".into(), json!("external"));
            for (key, value) in [
                ("contentType", json!(e.content_type)),
                ("url", json!(e.url)),
                ("expires", json!(e.expires)),
                ("size", json!(e.size)),
                ("encAlg", json!(e.enc_alg)),
                ("key", json!(hex(&e.key))),
                ("nonce", json!(hex(&e.nonce))),
                ("aad", json!(hex(&e.aad))),
                ("hashAlg", json!(e.hash_alg)),
                ("contentHash", json!(hex(&e.content_hash))),
                ("description", json!(e.description)),
                ("filename", json!(e.filename)),
            ] {
                out.insert(key.into(), value);
            }
        }
        Part::Multi { semantics, parts } => {
            out.insert("cardinality".into(), json!("multi"));
            out.insert("partSemantics".into(), json!(format!("{semantics:?}")));
            out.insert("parts".into(), parts.iter().map(self::part).collect());
        }
    }
    Value::Object(out)
}

/// A value in CBOR diagnostic notation (RFC 8949 §8), e.g. `[h'1234', 32("x")]`.
pub fn diagnostic(value: &RawCbor) -> String {
    let mut out = String::new();
    let mut bytes = value.as_bytes();
    write_item(&mut bytes, &mut out);
    out
}

/// Writes one item from the front of `bytes` (already validated, so well-formed and at most a
/// few levels deep: the recursion is bounded).
fn write_item(bytes: &mut &[u8], out: &mut String) {
    let Some((&initial, rest)) = bytes.split_first() else {
        return;
    };
    *bytes = rest;
    let (major, info) = (initial >> 5, initial & 0x1f);
    let width = match info {
        24 => 1,
        25 => 2,
        26 => 4,
        27 => 8,
        _ => 0,
    };
    let (arg_bytes, rest) = bytes.split_at(width.min(bytes.len()));
    *bytes = rest;
    let arg = if width == 0 {
        u64::from(info)
    } else {
        arg_bytes
            .iter()
            .fold(0u64, |acc, b| acc << 8 | u64::from(*b))
    };
    fn take<'a>(bytes: &mut &'a [u8], arg: u64) -> &'a [u8] {
        let n = usize::try_from(arg).unwrap_or(usize::MAX).min(bytes.len());
        let (taken, rest) = bytes.split_at(n);
        *bytes = rest;
        taken
    }
    match major {
        0 => out.push_str(&arg.to_string()),
        1 => out.push_str(&format!("-{}", u128::from(arg) + 1)),
        2 => out.push_str(&format!("h'{}'", hex(take(bytes, arg)))),
        3 => out.push_str(&format!("{:?}", String::from_utf8_lossy(take(bytes, arg)))),
        4 | 5 => {
            let (open, close, n) = if major == 4 {
                ('[', ']', arg)
            } else {
                ('{', '}', arg.saturating_mul(2))
            };
            out.push(open);
            for i in 0..n {
                if i > 0 {
                    out.push_str(if major == 5 && i % 2 == 1 { ": " } else { ", " });
                }
                write_item(bytes, out);
            }
            out.push(close);
        }
        6 => {
            out.push_str(&format!("{arg}("));
            write_item(bytes, out);
            out.push(')');
        }
        _ => out.push_str(&match (info, arg) {
            (20, _) => "false".into(),
            (21, _) => "true".into(),
            (22, _) => "null".into(),
            (23, _) => "undefined".into(),
            (25, bits) => format!("float16(0x{bits:04x})"),
            (26, bits) => f64::from(f32::from_bits(bits as u32)).to_string(),
            (27, bits) => f64::from_bits(bits).to_string(),
            (_, n) => format!("simple({n})"),
        }),
    }
}

/// A status of a message status report, by its name in the draft (or its number when unknown).
fn status_name(status: super::status::Status) -> Value {
    use super::status::Status;
    match status {
        Status::UNREAD => json!("unread"),
        Status::DELIVERED => json!("delivered"),
        Status::READ => json!("read"),
        Status::EXPIRED => json!("expired"),
        Status::DELETED => json!("deleted"),
        Status::HIDDEN => json!("hidden"),
        Status::ERROR => json!("error"),
        Status(other) => json!(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagnostic_notation() {
        let mut nested = vec![0x82, 0x82, 0x42, 0x12, 0x34, 0xd8, 0x20, 0x61, b'x'];
        nested.extend([0xa1, 0x20, 0xf5]);
        let value = RawCbor::new(nested).expect("valid");
        assert_eq!(diagnostic(&value), "[[h'1234', 32(\"x\")], {-1: true}]");
    }

    #[test]
    fn a_status_report_is_shown_decoded() {
        let mut id = [7u8; 32];
        id[0] = 1;
        let id = crate::content::MessageId::from_slice("test", &id).expect("id");
        let report = crate::content::status::encode(&[
            (id, crate::content::status::Status::READ),
            (id, crate::content::status::Status(9)),
        ]);
        let shown = part(&NestedPart::new(
            crate::content::Disposition::SESSION,
            Part::Single {
                content_type: crate::content::status::MEDIA_TYPE.to_owned(),
                content: report,
            },
        ));
        assert_eq!(
            shown["statusReport"],
            json!([
                {"messageId": id.to_hex(), "status": "read"},
                {"messageId": id.to_hex(), "status": 9},
            ])
        );
    }
}
