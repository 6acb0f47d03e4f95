//! The `bridge` command line: `check` reports every mistake; `links` manages the routing table.

use std::process::Command;

fn bridge() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bridge"))
}

const FIVE_MISTAKES: &str = r#"[bridge]
data_dir = "/tmp/bridge-five-mistakes"
log_format = "jsno"

[delivery]
max_attempts = 0

[[adapter]]
id = "chat-a"
type = "linechat"
connect = "not an address"

[[adapter]]
id = "chat-b"
type = "ircc"

[[room]]
id = "lobby"
[[room.link]]
adapter = "chat-c"
remote = "lobby"
"#;

#[test]
fn check_lists_all_five_mistakes_with_paths_and_lines() {
    let (_dir, path) = config_file(FIVE_MISTAKES);
    let out = check(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stderr}");
    assert!(!out.status.success());
    for (line, path) in [
        (3, "bridge.log_format"),
        (6, "delivery.max_attempts"),
        (11, "adapter[0].connect"),
        (15, "adapter[1].type"),
        (20, "room[0].link[0].adapter"),
    ] {
        assert!(
            stderr
                .lines()
                .any(|l| l.contains(&format!("bridge.toml:{line}:")) && l.contains(path)),
            "missing {path} at line {line}"
        );
    }
    assert!(stderr.contains("5 errors"));
}

/// `text` written as `bridge.toml` in a fresh directory (removed when the guard drops).
fn config_file(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bridge.toml");
    std::fs::write(&path, text).expect("write");
    (dir, path)
}

/// `bridge check -c <path>`.
fn check(path: impl AsRef<std::ffi::OsStr>) -> std::process::Output {
    bridge()
        .arg("check")
        .arg("-c")
        .arg(path)
        .output()
        .expect("run")
}

#[test]
fn check_accepts_the_example_configs() {
    for example in ["bridge.toml", "xmpp.toml"] {
        let path = format!("{}/../examples/{example}", env!("CARGO_MANIFEST_DIR"));
        let out = check(&path);
        assert!(
            out.status.success(),
            "{example}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn check_reports_every_xmpp_mistake_with_its_path() {
    let (_dir, path) = config_file(
        r#"[bridge]
data_dir = "data"
[[adapter]]
id = "x"
type = "xmpp"
mode = "component"
server = "nowhere"
domain = "a@b"
"#,
    );
    let out = check(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    for key in ["server", "domain", "secret"] {
        assert!(stderr.contains(key), "{key} not reported: {stderr}");
    }
}

#[test]
fn links_are_added_listed_and_removed_in_the_store() {
    let (dir, path) = config_file(
        r#"[bridge]
data_dir = "data"
[[adapter]]
id = "a"
type = "linechat"
connect = "127.0.0.1:9"
[[room]]
id = "lobby"
[[room.link]]
adapter = "a"
remote = "lobby"
"#,
    );
    let run = |args: &[&str]| {
        let out = bridge()
            .args(args)
            .arg("-c")
            .arg(&path)
            .output()
            .expect("run");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, out) = run(&["links", "add", "other", "a", "side-room"]);
    assert!(ok, "{out}");
    let (ok, out) = run(&["links", "add", "other", "a", "lobby"]);
    assert!(!ok && out.contains("already linked to room lobby"), "{out}");
    let (ok, out) = run(&["links", "list", "--json"]);
    assert!(ok, "{out}");
    let rooms: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(rooms.as_array().map(Vec::len), Some(2));
    let (ok, out) = run(&["links", "remove", "a", "lobby"]);
    assert!(
        !ok && out.contains("declared in the configuration"),
        "{out}"
    );
    let (ok, out) = run(&["links", "remove", "a", "side-room"]);
    assert!(ok, "{out}");
    let (ok, out) = run(&["links", "list"]);
    assert!(ok && !out.contains("side-room"), "{out}");
    assert!(
        dir.path().join("data").exists(),
        "data_dir is relative to the config file"
    );
}
