//! The example messages of draft-ietf-mimi-content-08 (`testdata/mimi-content/`): each decodes,
//! re-encodes byte for byte, and gives the message ID written in the header of its `.edn`.

use std::path::{Path, PathBuf};

use bridge_mimi::content::{ContentError, MessageId, MimiContent};

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/mimi-content")
}

/// Every `NAME.cbor` with its `NAME.edn`, by name.
fn vectors() -> Vec<(String, Vec<u8>, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(vectors_dir()).expect("testdata") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "cbor") {
            let name = path
                .file_stem()
                .expect("stem")
                .to_string_lossy()
                .into_owned();
            let cbor = std::fs::read(&path).expect("cbor");
            let edn = std::fs::read_to_string(path.with_extension("edn")).expect("edn");
            out.push((name, cbor, edn));
        }
    }
    out.sort();
    out
}

/// The ID in an `.edn` header: `# message ID = h'…` continued on the next comment line up to
/// the closing quote.
fn expected_id(edn: &str) -> MessageId {
    let start = edn
        .find("# message ID = h'")
        .expect("a message ID in the header")
        + 17;
    let rest = &edn[start..];
    let end = rest.find('\'').expect("closing quote");
    let hex: String = rest[..end]
        .chars()
        .filter(char::is_ascii_hexdigit)
        .collect();
    MessageId::from_hex(&hex).expect("a valid ID")
}

#[test]
fn every_vector_round_trips_and_gives_its_id() {
    let vectors = vectors();
    assert_eq!(vectors.len(), 14, "the 14 examples of the draft");
    for (name, cbor, edn) in vectors {
        let content = MimiContent::decode(&cbor).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(content.encode().expect("encode"), cbor, "{name} re-encodes");
        let id = content.message_id(&cbor).expect("URIs in the extensions");
        assert_eq!(id, expected_id(&edn), "{name}: message ID");
    }
}

#[test]
fn the_references_between_vectors_hold() {
    let read = |name: &str| {
        let cbor = std::fs::read(vectors_dir().join(format!("{name}.cbor"))).expect("read");
        let content = MimiContent::decode(&cbor).expect("decode");
        let id = content.message_id(&cbor).expect("id");
        (content, id)
    };
    let (_, original) = read("original");
    let (reply, reply_id) = read("reply");
    let (reaction, reaction_id) = read("reaction");
    assert_eq!(reply.in_reply_to, Some(original));
    assert_eq!(reaction.in_reply_to, Some(original));
    // The -08 ID of the original, not the -07 one (01b00844…) in the draft's hex dumps.
    assert!(original.to_hex().starts_with("017ce548"));
    assert_eq!(read("edit").0.replaces, Some(reply_id));
    assert_eq!(read("delete").0.replaces, Some(reply_id));
    assert_eq!(read("unlike").0.replaces, Some(reaction_id));
}

#[test]
fn the_uris_can_be_given_by_the_caller() {
    let cbor = std::fs::read(vectors_dir().join("original.cbor")).expect("read");
    let content = MimiContent::decode(&cbor).expect("decode");
    let same = content
        .message_id_with(
            &cbor,
            Some("mimi://example.com/u/alice-smith"),
            Some("mimi://example.com/r/engineering_team"),
        )
        .expect("id");
    assert_eq!(Ok(same), content.message_id(&cbor));
    let other = content
        .message_id_with(&cbor, Some("mimi://example.com/u/mallory"), None)
        .expect("id");
    assert_ne!(other, same);
    let mut bare = content.clone();
    bare.extensions.sender_uri = None;
    assert_eq!(
        bare.message_id(&cbor),
        Err(ContentError::MissingUri("sender URI"))
    );
}

/// `original.cbor`, changed by `f`.
fn original_with(f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut cbor = std::fs::read(vectors_dir().join("original.cbor")).expect("read");
    f(&mut cbor);
    cbor
}

#[test]
fn every_truncation_of_every_vector_is_refused() {
    for (name, cbor, _) in vectors() {
        for len in 0..cbor.len() {
            assert!(
                MimiContent::decode(&cbor[..len]).is_err(),
                "{name} cut at {len} was accepted"
            );
        }
    }
}

#[test]
fn trailing_bytes_are_refused() {
    let cbor = original_with(|c| c.push(0));
    assert_eq!(
        MimiContent::decode(&cbor),
        Err(ContentError::TrailingBytes(1))
    );
}

#[test]
fn a_salt_of_the_wrong_length_is_refused() {
    // 0x50 is bytes(16); 0x4f would be bytes(15).
    let cbor = original_with(|c| {
        c[1] = 0x4f;
        c.remove(2);
    });
    assert_eq!(MimiContent::decode(&cbor), Err(ContentError::BadSalt(15)));
}

#[test]
fn wrong_types_are_refused() {
    // The salt as a text string.
    let cbor = original_with(|c| c[1] = 0x70);
    assert!(matches!(
        MimiContent::decode(&cbor),
        Err(ContentError::WrongType { field: "salt", .. })
    ));
    // An array of 6.
    let cbor = original_with(|c| c[0] = 0x86);
    assert!(matches!(
        MimiContent::decode(&cbor),
        Err(ContentError::Invalid {
            field: "mimiContent",
            ..
        })
    ));
    // The topic ID (byte 19: 0x40) as the integer 0.
    let cbor = original_with(|c| c[19] = 0x00);
    assert!(matches!(
        MimiContent::decode(&cbor),
        Err(ContentError::WrongType {
            field: "topicId",
            ..
        })
    ));
    // Not an array at all.
    assert!(MimiContent::decode(b"garbage").is_err());
    assert_eq!(MimiContent::decode(b""), Err(ContentError::Truncated));
}

#[test]
fn an_unknown_cardinality_is_refused() {
    // original.cbor's body: 85 01 60 01 …; make the cardinality 4.
    let cbor = original_with(|c| {
        let body = c
            .windows(3)
            .position(|w| w == [0x85, 0x01, 0x60])
            .expect("body");
        c[body + 3] = 0x04;
    });
    assert_eq!(
        MimiContent::decode(&cbor),
        Err(ContentError::UnknownCardinality(4))
    );
}

#[test]
fn too_deep_parts_are_refused() {
    use bridge_mimi::content::{Disposition, NestedPart, Part, PartSemantics};
    let cbor = std::fs::read(vectors_dir().join("multipart-3.cbor")).expect("read");
    let mut content = MimiContent::decode(&cbor).expect("4 levels are fine");
    // Wrap the body once more: 5 levels.
    let leaf = NestedPart::new(
        Disposition::RENDER,
        Part::Single {
            content_type: "text/plain".into(),
            content: b"x".to_vec(),
        },
    );
    content.body = NestedPart::new(
        Disposition::RENDER,
        Part::Multi {
            semantics: PartSemantics::ProcessAll,
            parts: vec![content.body.clone(), leaf],
        },
    );
    assert_eq!(content.encode(), Err(ContentError::PartsTooDeep { max: 4 }));
    // The same bytes, written by hand: the decoder refuses them too.
    let mut deep = cbor[..cbor.len()].to_vec();
    let body = deep
        .windows(5)
        .position(|w| w == [0x85, 0x01, 0x60, 0x03, 0x00])
        .expect("body");
    let old_body = deep.split_off(body);
    deep.extend([0x85, 0x01, 0x60, 0x03, 0x02, 0x82]);
    deep.extend(old_body);
    deep.extend([0x85, 0x01, 0x60, 0x01, 0x6a]);
    deep.extend(b"text/plain");
    deep.extend([0x41, b'x']);
    assert_eq!(
        MimiContent::decode(&deep),
        Err(ContentError::PartsTooDeep { max: 4 })
    );
}

#[test]
fn non_deterministic_encodings_are_refused() {
    // The disposition 1 of the body in two bytes (0x18 0x01).
    let cbor = original_with(|c| {
        let body = c
            .windows(3)
            .position(|w| w == [0x85, 0x01, 0x60])
            .expect("body");
        c[body + 1] = 0x18;
        c.insert(body + 2, 0x01);
    });
    assert!(matches!(
        MimiContent::decode(&cbor),
        Err(ContentError::NotDeterministic { .. })
    ));
    // The extension keys swapped (2 before 1).
    let mut content = MimiContent::decode(&original_with(|_| {})).expect("decode");
    content.extensions.sender_uri = Some("s".into());
    content.extensions.room_uri = Some("r".into());
    let mut cbor = content.encode().expect("encode");
    let map = cbor
        .windows(4)
        .position(|w| w == [0xa2, 0x01, 0x61, b's'])
        .expect("map");
    cbor[map + 1..map + 7].copy_from_slice(&[0x02, 0x61, b'r', 0x01, 0x61, b's']);
    assert!(matches!(
        MimiContent::decode(&cbor),
        Err(ContentError::NotDeterministic { .. })
    ));
}

#[test]
fn unknown_extensions_and_dispositions_survive() {
    use bridge_mimi::content::{Disposition, ExtensionKey, RawCbor};
    let mut content = MimiContent::decode(&original_with(|_| {})).expect("decode");
    content.body.disposition = Disposition(200);
    content.body.language = "en,fr".into();
    content
        .extensions
        .other
        .insert(ExtensionKey::Int(-7), RawCbor::uint(5));
    content
        .extensions
        .other
        .insert(ExtensionKey::Text("x-vendor".into()), RawCbor::text("v"));
    // The draft's §6.3 example value: [[h'1234', 32("http://example.com")], [h'3456', 5771]].
    let mut nested = vec![0x82, 0x82, 0x42, 0x12, 0x34, 0xd8, 0x20, 0x72];
    nested.extend(b"http://example.com");
    nested.extend([0x82, 0x42, 0x34, 0x56, 0x19, 0x16, 0x8b]);
    content.extensions.other.insert(
        ExtensionKey::Int(256),
        RawCbor::new(nested).expect("4 levels"),
    );
    let cbor = content.encode().expect("encode");
    let back = MimiContent::decode(&cbor).expect("decode");
    assert_eq!(back, content);
    assert_eq!(back.encode().expect("encode"), cbor);
    // One level more is refused.
    assert!(matches!(
        RawCbor::new(vec![0x81, 0x81, 0x81, 0x80]),
        Err(ContentError::ExtensionTooDeep { max: 4 })
    ));
}

#[test]
fn a_multipart_of_one_is_refused() {
    let cbor = std::fs::read(vectors_dir().join("multipart-1.cbor")).expect("read");
    let mut content = MimiContent::decode(&cbor).expect("decode");
    if let bridge_mimi::content::Part::Multi { parts, .. } = &mut content.body.part {
        parts.truncate(1);
    }
    assert_eq!(content.encode(), Err(ContentError::TooFewParts(1)));
    // On the wire: 0x82 (two parts) → 0x81 with the second part cut off.
    let at = cbor
        .windows(3)
        .position(|w| w == [0x03, 0x00, 0x82])
        .expect("parts")
        + 2;
    let mut one = cbor.clone();
    one[at] = 0x81;
    assert_eq!(MimiContent::decode(&one), Err(ContentError::TooFewParts(1)));
}

#[test]
fn oversized_messages_are_refused_before_parsing() {
    let big = vec![0u8; bridge_mimi::content::MAX_MESSAGE_SIZE + 1];
    assert!(matches!(
        MimiContent::decode(&big),
        Err(ContentError::TooLarge { .. })
    ));
}
