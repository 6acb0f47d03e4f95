//! `bridge mimi inspect`: decodes a MIMI content message, prints it as JSON and its message ID.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn inspect(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bridge"))
        .args(["mimi", "inspect"])
        .args(args)
        .output()
        .expect("run bridge")
}

fn vector(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../bridge-mimi/testdata/mimi-content")
        .join(name)
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

#[test]
fn inspect_prints_json_and_the_message_id_last() {
    let file = vector("reply.cbor");
    let out = inspect(&[path(&file)]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (json, last) = stdout.trim_end().rsplit_once('\n').expect("several lines");
    assert_eq!(
        last,
        "message_id=015354973c2b65ca937bf1e035ae53a5ab80e947afa43d46920d4202e5cc0b27"
    );
    let value: serde_json::Value = serde_json::from_str(json).expect("JSON");
    assert_eq!(
        value["inReplyTo"],
        "017ce54837404c3696e0c747b985cb172716d0ed0a3d249ca63ace7d82a096f4"
    );
    assert_eq!(
        value["body"]["content"],
        "Right on! _Congratulations_ 'all!"
    );

    // Other URIs give another ID.
    let out = inspect(&[path(&file), "--sender", "mimi://example.com/u/mallory"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    let last = stdout.trim_end().lines().last().expect("a last line");
    assert!(last.starts_with("message_id=01"), "{last}");
    assert!(!last.contains("015354973c2b65ca"), "{last}");
}

#[test]
fn inspect_refuses_garbage_with_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let garbage = dir.path().join("garbage.cbor");
    std::fs::write(&garbage, b"\x87not mimi at all").expect("write");
    let out = inspect(&[path(&garbage)]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is not a valid MIMI content message"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());

    let out = inspect(&[path(&dir.path().join("missing.cbor"))]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

#[test]
fn inspect_without_uris_says_so() {
    // original.cbor without its extensions map: rewrite the map to {} and fix nothing else.
    let bytes = std::fs::read(vector("original.cbor")).expect("read");
    let start = bytes.iter().position(|&b| b == 0xa2).expect("the map");
    let end = bytes
        .windows(3)
        .position(|w| w == [0x85, 0x01, 0x60])
        .expect("the body");
    let mut bare = bytes[..start].to_vec();
    bare.push(0xa0);
    bare.extend(&bytes[end..]);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bare.cbor");
    std::fs::write(&file, &bare).expect("write");
    let out = inspect(&[path(&file)]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no sender URI"), "{stderr}");
    assert!(stderr.contains("--sender"), "{stderr}");
    // With both given, it works.
    let out = inspect(&[
        path(&file),
        "--sender",
        "mimi://example.com/u/alice-smith",
        "--room",
        "mimi://example.com/r/engineering_team",
    ]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("message_id=01"));
}
