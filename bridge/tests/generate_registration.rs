//! `bridge generate-registration`: the Matrix appservice registration for a config's appservice
//! section, as a homeserver admin gets it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bridge() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bridge"))
}

/// A config with one Matrix appservice section whose registration lives at `registration`
/// (plus `extra` lines in the section), and where it was written.
fn config(dir: &Path, registration: &Path, extra: &str) -> PathBuf {
    let text = format!(
        r#"[bridge]
data_dir = "data"

[[adapter]]
id = "matrix"
type = "matrix"
mode = "appservice"
homeserver = "http://127.0.0.1:8008"
server_name = "example.org"
registration = "{}"
{extra}
"#,
        registration.display()
    );
    let path = dir.join("bridge.toml");
    std::fs::write(&path, text).expect("config written");
    path
}

fn generate(config: &Path, args: &[&str]) -> Output {
    bridge()
        .arg("generate-registration")
        .arg("-c")
        .arg(config)
        .args(args)
        .output()
        .expect("run")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn writes_a_registration_the_adapter_loads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("matrix-registration.yaml");
    let config = config(dir.path(), &path, "listen = \"127.0.0.1:9009\"");
    let out = generate(&config, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&path.display().to_string()),
        "{}",
        text(&out)
    );

    let yaml = std::fs::read_to_string(&path).expect("written at the section's path");
    let registration = bridge_matrix::registration::load(&path).expect("the adapter loads it");
    assert_eq!(registration.id, "matrix");
    assert_eq!(registration.url.as_deref(), Some("http://127.0.0.1:9009"));
    assert_eq!(registration.sender_localpart, "_bridge_bot");
    let users = &registration.namespaces.users;
    let aliases = &registration.namespaces.aliases;
    assert_eq!(users.len(), 1);
    assert!(users[0].exclusive);
    assert_eq!(users[0].regex, r"^@_bridge_.*:example\.org$");
    assert_eq!(aliases.len(), 1);
    assert!(aliases[0].exclusive);
    assert_eq!(aliases[0].regex, r"^#_bridge_.*:example\.org$");
    assert_eq!(registration.rate_limited, Some(false));
    assert!(registration.receive_ephemeral);
    assert!(yaml.contains("rate_limited: false"), "{yaml}");
    assert!(yaml.contains("receive_ephemeral: true"), "{yaml}");
    // Fresh random tokens: long, different from each other.
    assert!(registration.as_token.len() >= 32 && registration.hs_token.len() >= 32);
    assert_ne!(registration.as_token, registration.hs_token);

    // An existing file is kept without --force …
    let again = generate(&config, &[]);
    assert!(!again.status.success());
    assert!(text(&again).contains("--force"), "{}", text(&again));
    assert_eq!(
        std::fs::read_to_string(&path).expect("still there"),
        yaml,
        "untouched"
    );
    // … and replaced, with new tokens, with it.
    let forced = generate(&config, &["--force"]);
    assert!(forced.status.success(), "{}", text(&forced));
    let replaced = bridge_matrix::registration::load(&path).expect("loads");
    assert_ne!(replaced.as_token, registration.as_token);
    assert_ne!(replaced.hs_token, registration.hs_token);
}

#[test]
fn url_overrides_the_listen_address_and_is_needed_without_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("registration.yaml");
    let with_listen = config(dir.path(), &path, "listen = \"127.0.0.1:9009\"");
    let out = generate(&with_listen, &["--url", "http://bridge.internal:9000"]);
    assert!(out.status.success(), "{}", text(&out));
    let registration = bridge_matrix::registration::load(&path).expect("loads");
    assert_eq!(
        registration.url.as_deref(),
        Some("http://bridge.internal:9000")
    );

    let path = dir.path().join("other.yaml");
    let without_listen = config(dir.path(), &path, "");
    let out = generate(&without_listen, &[]);
    assert!(!out.status.success());
    assert!(text(&out).contains("--url"), "{}", text(&out));
    assert!(!path.exists());
    let out = generate(&without_listen, &["--url", "http://127.0.0.1:9100"]);
    assert!(out.status.success(), "{}", text(&out));
    let registration = bridge_matrix::registration::load(&path).expect("loads");
    assert_eq!(registration.url.as_deref(), Some("http://127.0.0.1:9100"));
}

#[test]
fn a_relay_only_config_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bridge.toml");
    std::fs::write(
        &path,
        r#"[bridge]
data_dir = "data"

[[adapter]]
id = "matrix-relay"
type = "matrix"
mode = "relay"
homeserver = "http://127.0.0.1:8008"
user = "@relay:example.org"
password = "secret"
"#,
    )
    .expect("config written");
    let out = generate(&path, &[]);
    assert!(!out.status.success());
    let said = text(&out);
    assert!(
        said.contains("appservice") && said.contains("relay"),
        "the message says why: {said}"
    );
    let written: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert_eq!(written.len(), 1, "nothing written: {written:?}");
}
