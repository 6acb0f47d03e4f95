//! Decoding and encoding [`MimiContent`] as deterministic CBOR (draft §4 and §6).

use super::cbor::{Reader, Writer};
use super::id::{MessageId, Salt};
use super::model::{
    Disposition, Expiration, ExtensionKey, Extensions, ExternalPart, MimiContent, NestedPart, Part,
    PartSemantics, RawCbor,
};
use super::{
    ContentError, MAX_EXTENSION_DEPTH, MAX_MESSAGE_SIZE, MAX_PART_DEPTH, MAX_PARTS, MAX_TOPIC_ID,
};

impl MimiContent {
    /// Decodes a message, enforcing the draft's encoding (deterministic CBOR, §6.1), data model
    /// (§6.2) and depth limits (§6.3), plus [`MAX_MESSAGE_SIZE`], [`MAX_PARTS`] and
    /// [`MAX_TOPIC_ID`]. Whatever it accepts, [`encode`](Self::encode) gives back byte for byte.
    pub fn decode(bytes: &[u8]) -> Result<Self, ContentError> {
        if bytes.len() > MAX_MESSAGE_SIZE {
            return Err(ContentError::TooLarge {
                size: bytes.len(),
                max: MAX_MESSAGE_SIZE,
            });
        }
        let mut r = Reader::new(bytes);
        r.array_of("mimiContent", 7)?;
        let salt = r.bytes("salt")?;
        let salt = Salt(
            salt.try_into()
                .map_err(|_| ContentError::BadSalt(salt.len()))?,
        );
        let replaces = message_id(&mut r, "replaces")?;
        let topic_id = r.bytes("topicId")?;
        if topic_id.len() > MAX_TOPIC_ID {
            return Err(ContentError::TopicTooLong {
                len: topic_id.len(),
                max: MAX_TOPIC_ID,
            });
        }
        let expires = if r.null() {
            None
        } else {
            r.array_of("expires", 2)?;
            let relative = r.bool("relative")?;
            let time = r.uint_max("time", u64::from(u32::MAX))? as u32;
            Some(Expiration { relative, time })
        };
        let in_reply_to = message_id(&mut r, "inReplyTo")?;
        let extensions = extensions(&mut r)?;
        let mut count = 0;
        let body = nested_part(&mut r, 1, &mut count)?;
        if r.remaining() > 0 {
            return Err(ContentError::TrailingBytes(r.remaining()));
        }
        Ok(MimiContent {
            salt,
            replaces,
            topic_id: topic_id.to_vec(),
            expires,
            in_reply_to,
            extensions,
            body,
        })
    }

    /// Encodes the message as deterministic CBOR. Refuses what [`decode`](Self::decode) would
    /// refuse, so nothing invalid is ever sent.
    pub fn encode(&self) -> Result<Vec<u8>, ContentError> {
        if self.topic_id.len() > MAX_TOPIC_ID {
            return Err(ContentError::TopicTooLong {
                len: self.topic_id.len(),
                max: MAX_TOPIC_ID,
            });
        }
        let mut w = Writer::default();
        w.array(7);
        w.bytes(&self.salt.0);
        optional_id(&mut w, self.replaces.as_ref());
        w.bytes(&self.topic_id);
        match self.expires {
            None => w.null(),
            Some(Expiration { relative, time }) => {
                w.array(2);
                w.bool(relative);
                w.uint(u64::from(time));
            }
        }
        optional_id(&mut w, self.in_reply_to.as_ref());
        write_extensions(&mut w, &self.extensions)?;
        let mut count = 0;
        write_part(&mut w, &self.body, 1, &mut count)?;
        if w.out.len() > MAX_MESSAGE_SIZE {
            return Err(ContentError::TooLarge {
                size: w.out.len(),
                max: MAX_MESSAGE_SIZE,
            });
        }
        Ok(w.out)
    }

    /// The message ID of `message`, the encoded form of this message as it was sent or
    /// received, with the sender and room URIs of its extensions (§3.3).
    pub fn message_id(&self, message: &[u8]) -> Result<MessageId, ContentError> {
        self.message_id_with(message, None, None)
    }

    /// [`message_id`](Self::message_id) with the sender and room URIs given (e.g. from the MLS
    /// credential and the group) where the message has none or they are to be overridden.
    pub fn message_id_with(
        &self,
        message: &[u8],
        sender_uri: Option<&str>,
        room_uri: Option<&str>,
    ) -> Result<MessageId, ContentError> {
        let sender = sender_uri
            .or(self.extensions.sender_uri.as_deref())
            .ok_or(ContentError::MissingUri("sender URI"))?;
        let room = room_uri
            .or(self.extensions.room_uri.as_deref())
            .ok_or(ContentError::MissingUri("room URI"))?;
        MessageId::compute(sender, room, message, &self.salt)
    }
}

fn message_id(r: &mut Reader<'_>, field: &'static str) -> Result<Option<MessageId>, ContentError> {
    if r.null() {
        return Ok(None);
    }
    let bytes = r.bytes(field)?;
    MessageId::from_slice(field, bytes).map(Some)
}

fn optional_id(w: &mut Writer, id: Option<&MessageId>) {
    match id {
        Some(id) => w.bytes(id.as_bytes()),
        None => w.null(),
    }
}

fn extensions(r: &mut Reader<'_>) -> Result<Extensions, ContentError> {
    let len = r.map("mimiExtensions")?;
    let mut out = Extensions::default();
    let mut previous: Option<&[u8]> = None;
    for _ in 0..len {
        let start = r.pos();
        let head = r.head()?;
        let key = match head.major {
            super::cbor::UINT | super::cbor::NINT => {
                if head.arg > super::model::MAX_INT_KEY as u64
                    || (head.major == super::cbor::NINT
                        && head.arg >= super::model::MAX_INT_KEY as u64)
                {
                    return Err(ContentError::BadExtensionKey(
                        "an integer key beyond ±(2^53 - 1)",
                    ));
                }
                let n = head.arg as i64;
                ExtensionKey::Int(if head.major == super::cbor::NINT {
                    -1 - n
                } else {
                    n
                })
            }
            super::cbor::TEXT => ExtensionKey::Text(r.text_payload(head)?.to_owned()),
            _ => {
                return Err(ContentError::BadExtensionKey(
                    "a key that is neither an integer nor a text string",
                ));
            }
        };
        key.validate()?;
        let encoded = r.since(start);
        if let Some(previous) = previous {
            match previous.cmp(encoded) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => {
                    return Err(ContentError::DuplicateExtension(key.to_string()));
                }
                std::cmp::Ordering::Greater => {
                    return Err(ContentError::NotDeterministic {
                        at: start,
                        reason: "extension keys not in bytewise order",
                    });
                }
            }
        }
        previous = Some(encoded);
        if key == ExtensionKey::SENDER_URI {
            out.sender_uri = Some(r.text("senderUri")?.to_owned());
        } else if key == ExtensionKey::ROOM_URI {
            out.room_uri = Some(r.text("roomUri")?.to_owned());
        } else {
            let value_start = r.pos();
            r.skip_value(2, MAX_EXTENSION_DEPTH)?;
            out.other
                .insert(key, RawCbor::from_checked(r.since(value_start)));
        }
    }
    Ok(out)
}

fn write_extensions(w: &mut Writer, ext: &Extensions) -> Result<(), ContentError> {
    let mut entries: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let text = |t: &str| {
        let mut v = Writer::default();
        v.text(t);
        v.out
    };
    if let Some(uri) = &ext.sender_uri {
        entries.push((ExtensionKey::SENDER_URI.encoded(), text(uri)));
    }
    if let Some(uri) = &ext.room_uri {
        entries.push((ExtensionKey::ROOM_URI.encoded(), text(uri)));
    }
    for (key, value) in &ext.other {
        key.validate()?;
        if *key == ExtensionKey::SENDER_URI || *key == ExtensionKey::ROOM_URI {
            return Err(ContentError::DuplicateExtension(key.to_string()));
        }
        entries.push((key.encoded(), value.as_bytes().to_vec()));
    }
    entries.sort();
    w.map(entries.len());
    for (key, value) in entries {
        w.raw(&key);
        w.raw(&value);
    }
    Ok(())
}

/// Reads a part at nesting `level` (the body is level 1), counting parts in `count`.
fn nested_part(
    r: &mut Reader<'_>,
    level: usize,
    count: &mut usize,
) -> Result<NestedPart, ContentError> {
    if level > MAX_PART_DEPTH {
        return Err(ContentError::PartsTooDeep {
            max: MAX_PART_DEPTH,
        });
    }
    *count += 1;
    if *count > MAX_PARTS {
        return Err(ContentError::TooManyParts { max: MAX_PARTS });
    }
    let at = r.pos();
    let len = r.array("NestedPart")?;
    if len < 3 {
        return Err(ContentError::Invalid {
            at,
            field: "NestedPart",
            reason: "fewer than 3 elements",
        });
    }
    let disposition = Disposition(r.uint_max("disposition", 255)? as u8);
    let language = r.text("language")?.to_owned();
    let cardinality = r.uint("cardinality")?;
    let expected = match cardinality {
        0 => 3,
        1 | 3 => 5,
        2 => 15,
        _ => return Err(ContentError::UnknownCardinality(cardinality)),
    };
    if len != expected {
        return Err(ContentError::Invalid {
            at,
            field: "NestedPart",
            reason: "the wrong number of elements for its cardinality",
        });
    }
    let part = match cardinality {
        0 => Part::Null,
        1 => Part::Single {
            content_type: r.text("contentType")?.to_owned(),
            content: r.bytes("content")?.to_vec(),
        },
        2 => Part::External(ExternalPart {
            content_type: r.text("contentType")?.to_owned(),
            url: r.text("url")?.to_owned(),
            expires: r.uint_max("expires", u64::from(u32::MAX))? as u32,
            size: r.uint("size")?,
            enc_alg: r.uint_max("encAlg", u64::from(u16::MAX))? as u16,
            key: r.bytes("key")?.to_vec(),
            nonce: r.bytes("nonce")?.to_vec(),
            aad: r.bytes("aad")?.to_vec(),
            hash_alg: r.uint_max("hashAlg", u64::from(u8::MAX))? as u8,
            content_hash: r.bytes("contentHash")?.to_vec(),
            description: r.text("description")?.to_owned(),
            filename: r.text("filename")?.to_owned(),
        }),
        _ => {
            let semantics = PartSemantics::from_code(r.uint("partSemantics")?)?;
            let n = r.array("parts")?;
            if n < 2 {
                return Err(ContentError::TooFewParts(n));
            }
            let mut parts = Vec::new();
            for _ in 0..n {
                parts.push(nested_part(r, level + 1, count)?);
            }
            Part::Multi { semantics, parts }
        }
    };
    Ok(NestedPart {
        disposition,
        language,
        part,
    })
}

fn write_part(
    w: &mut Writer,
    part: &NestedPart,
    level: usize,
    count: &mut usize,
) -> Result<(), ContentError> {
    if level > MAX_PART_DEPTH {
        return Err(ContentError::PartsTooDeep {
            max: MAX_PART_DEPTH,
        });
    }
    *count += 1;
    if *count > MAX_PARTS {
        return Err(ContentError::TooManyParts { max: MAX_PARTS });
    }
    let len = match &part.part {
        Part::Null => 3,
        Part::Single { .. } | Part::Multi { .. } => 5,
        Part::External(_) => 15,
    };
    w.array(len);
    w.uint(u64::from(part.disposition.0));
    w.text(&part.language);
    match &part.part {
        Part::Null => w.uint(0),
        Part::Single {
            content_type,
            content,
        } => {
            w.uint(1);
            w.text(content_type);
            w.bytes(content);
        }
        Part::External(e) => {
            w.uint(2);
            w.text(&e.content_type);
            w.text(&e.url);
            w.uint(u64::from(e.expires));
            w.uint(e.size);
            w.uint(u64::from(e.enc_alg));
            w.bytes(&e.key);
            w.bytes(&e.nonce);
            w.bytes(&e.aad);
            w.uint(u64::from(e.hash_alg));
            w.bytes(&e.content_hash);
            w.text(&e.description);
            w.text(&e.filename);
        }
        Part::Multi { semantics, parts } => {
            if parts.len() < 2 {
                return Err(ContentError::TooFewParts(parts.len()));
            }
            w.uint(3);
            w.uint(semantics.code());
            w.array(parts.len());
            for p in parts {
                write_part(w, p, level + 1, count)?;
            }
        }
    }
    Ok(())
}
