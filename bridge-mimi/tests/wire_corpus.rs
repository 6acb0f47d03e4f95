//! Replays the committed fuzz corpus (bridge-mimi/fuzz/corpus/wire_decode) through the fuzz
//! target's check, and every single-byte mutation of each entry: no panic, round trips hold.

mod fixtures;

include!("../fuzz/fuzz_targets/wire_decode_check.rs");

use std::path::PathBuf;

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/wire_decode")
}

/// Whether `name` is one of the hand-written seeds (the fuzzer names what it finds by the
/// SHA-1 of its content).
fn is_seed(name: &str) -> bool {
    !(name.len() == 40 && name.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[test]
fn the_corpus_replays_without_panics() {
    let (mut seeds, mut found) = (0, 0);
    for entry in std::fs::read_dir(corpus_dir()).expect("corpus directory") {
        let path = entry.expect("entry").path();
        let data = std::fs::read(&path).expect("read");
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if !is_seed(name) {
            // What `scripts/fuzz.sh` kept: valid or not, it must not panic.
            check(&data);
            found += 1;
            continue;
        }
        assert!(check(&data), "{} does not decode", path.display());
        for at in 1..data.len() {
            let mut mutated = data.clone();
            mutated[at] ^= 0x5a;
            check(&mutated);
            check(&data[..at]);
        }
        seeds += 1;
    }
    assert!(seeds >= 10, "only {seeds} seeds");
    assert!(found >= 1_000, "only {found} inputs kept from fuzzing");
}

/// The corpus seeds are the hand-written fixtures: each committed seed equals its fixture (the
/// fuzzer adds other files beside them). `BRIDGE_WRITE_CORPUS=1 cargo test -p bridge-mimi
/// --test wire_corpus` writes them again after a fixture changed.
#[test]
fn seed_corpus_matches_the_fixtures() {
    use fixtures::*;
    let app = private_application(5);
    let seeds: Vec<(&str, u8, Vec<u8>)> = vec![
        (
            "key_material_request",
            0,
            cat(&[
                &[0x01],
                &v(b"mimi://a.example/u/alice"),
                &v(b"mimi://b.example/u/bob"),
                &v(b"mimi://a.example/r/clubhouse"),
                &v(&[0x00, 0x01]),
                &v(&[0x00, 0x06]),
                &v(&[0x00, 0x08]),
                &v(&[0x00, 0x01]),
                &v(&[0x0A; 32]),
                &[0x00, 0x01],
                &v(b"mimi://a.example/d/alice/1"),
                &v(&[0x5A; 16]),
            ]),
        ),
        (
            "key_material_response",
            1,
            cat(&[
                &[0x01, 0x01],
                &v(b"mimi://b.example/u/bob"),
                &v(&cat(&[
                    &[0x00],
                    &v(b"mimi://b.example/d/bob/1"),
                    &key_package("mimi://b.example/d/bob/1"),
                    &[0x01],
                    &v(b"mimi://b.example/d/bob/2"),
                ])),
            ]),
        ),
        (
            "update_commit",
            2,
            cat(&[
                &public_commit(),
                &[0x01],
                &welcome(),
                &[0x01],
                &group_info(),
                &ratchet_tree_option_full(),
            ]),
        ),
        (
            "update_proposals",
            2,
            cat(&[&public_remove_proposal(2), &v(&public_remove_proposal(3))]),
        ),
        (
            "update_response",
            3,
            cat(&[&[0x03], &v(b"bad"), &v(&v(&[1; 32]))]),
        ),
        (
            "submit_request",
            4,
            cat(&[&[0x01], &app, &v(b"mimi://b.example/u/bob")]),
        ),
        (
            "submit_response",
            5,
            cat(&[
                &[0x01, 0x00],
                &u64be(42),
                &[0x01],
                &[0x5F; 32],
                &[0x00, 0x01],
                &v(&[9; 8]),
            ]),
        ),
        (
            "notify",
            6,
            cat(&[
                &u64be(1),
                &app,
                &[0x00],
                &u64be(2),
                &welcome_message(),
                &ratchet_tree_option_full(),
                &u64be(3),
                &public_commit(),
                &v(&[]),
            ]),
        ),
        (
            "group_info_request",
            7,
            cat(&[
                &[0x01, 0x00, 0x01],
                &v(&[0x0A; 32]),
                &[0x00, 0x01],
                &v(b"mimi://c.example/d/cathy/2"),
                &v(&[0x0B; 32]),
                &v(b""),
                &v(&[0x5A; 16]),
            ]),
        ),
        (
            "group_info_response",
            8,
            cat(&[
                &[0x01],
                &v(b"mimi://a.example/r/clubhouse"),
                &[0x01, 0x00, 0x01],
                &v(&[0x0C; 32]),
                &[0x00, 0x01],
                &v(b"a.example"),
                &v(&[0x0D; 32]),
                &v(&[0x0E; 40]),
                &v(&[0x5A; 16]),
            ]),
        ),
        (
            "group_info_tbe",
            9,
            cat(&[
                &group_info(),
                &[0x04],
                &v(&cat(&[&public_remove_proposal(2), &u64be(7)])),
            ]),
        ),
    ];
    for (name, selector, body) in seeds {
        let data = cat(&[&[selector], &body]);
        let path = corpus_dir().join(name);
        if std::env::var_os("BRIDGE_WRITE_CORPUS").is_some() {
            std::fs::write(&path, data).expect("write");
        } else {
            let committed = std::fs::read(&path).expect("a committed seed");
            assert_eq!(
                committed,
                data,
                "{} differs from its fixture",
                path.display()
            );
        }
    }
}
