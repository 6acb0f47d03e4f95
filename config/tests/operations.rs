//! The operations keys of `[bridge]`: `http_addr` (and its former name `metrics_addr`) and
//! `provisioning_token`.

#![allow(clippy::unwrap_used)]

mod common;

use bridge_config::{Loaded, SecretRef};
use common::{diagnostics, ok, single};

const HEAD: &str = "[bridge]\ndata_dir = \"/x\"\n";

#[test]
fn http_addr_is_read_and_metrics_addr_is_its_former_name() {
    let config = ok(&format!("{HEAD}http_addr = \"127.0.0.1:9184\"\n"));
    assert_eq!(
        config.bridge.http_addr,
        Some("127.0.0.1:9184".parse().unwrap())
    );
    assert_eq!(config.bridge.metrics_addr, None);

    let config = ok(&format!("{HEAD}metrics_addr = \"[::1]:9000\"\n"));
    assert_eq!(config.bridge.http_addr, Some("[::1]:9000".parse().unwrap()));
    assert_eq!(config.bridge.metrics_addr, config.bridge.http_addr);

    let config = ok(HEAD);
    assert_eq!(config.bridge.http_addr, None);
    assert_eq!(config.bridge.provisioning_token, None);
}

#[test]
fn both_names_at_once_are_refused() {
    let (path, line, message) = single(&format!(
        "{HEAD}http_addr = \"127.0.0.1:1\"\nmetrics_addr = \"127.0.0.1:2\"\n"
    ));
    assert_eq!((path.as_str(), line), ("bridge.metrics_addr", Some(4)));
    assert!(message.contains("former name of http_addr"), "{message}");
}

#[test]
fn a_bad_http_addr_is_reported_at_its_line() {
    let (path, line, message) = single(&format!("{HEAD}http_addr = \"localhost\"\n"));
    assert_eq!((path.as_str(), line), ("bridge.http_addr", Some(3)));
    assert!(message.contains("socket address"), "{message}");
}

#[test]
fn the_token_takes_the_three_secret_forms() {
    let with = |token: &str| {
        ok(&format!(
            "{HEAD}http_addr = \"127.0.0.1:1\"\nprovisioning_token = {token}\n"
        ))
        .bridge
        .provisioning_token
        .unwrap()
    };
    assert_eq!(
        with("\"0123456789abcdef\""),
        SecretRef::Inline("0123456789abcdef".into())
    );
    assert_eq!(
        with("{ env = \"BRIDGE_TOKEN\" }"),
        SecretRef::Env("BRIDGE_TOKEN".into())
    );
    assert_eq!(
        with("{ file = \"/run/token\" }"),
        SecretRef::File("/run/token".into())
    );
}

#[test]
fn an_inline_token_never_shows_in_debug_or_serialized_output() {
    let config = ok(&format!(
        "{HEAD}http_addr = \"127.0.0.1:1\"\nprovisioning_token = \"very-secret-token-1234\"\n"
    ));
    let debug = format!("{config:?}");
    assert!(!debug.contains("very-secret"), "{debug}");
    let json = toml::to_string(&config.bridge).unwrap();
    assert!(!json.contains("very-secret"), "{json}");
    assert!(json.contains("<redacted>"), "{json}");
}

#[test]
fn token_mistakes_are_reported_with_their_paths() {
    let (path, line, message) = single(&format!(
        "{HEAD}http_addr = \"127.0.0.1:1\"\nprovisioning_token = \"short\"\n"
    ));
    assert_eq!(
        (path.as_str(), line),
        ("bridge.provisioning_token", Some(4))
    );
    assert!(message.contains("too short (5 bytes)"), "{message}");

    let (path, _, message) = single(&format!(
        "{HEAD}provisioning_token = \"0123456789abcdef\"\n"
    ));
    assert_eq!(path, "bridge.provisioning_token");
    assert!(message.contains("http_addr, which is not set"), "{message}");

    let d = diagnostics(&format!(
        "{HEAD}http_addr = \"127.0.0.1:1\"\nprovisioning_token = {{ env = 3 }}\n"
    ));
    assert_eq!(d.as_slice()[0].path, "bridge.provisioning_token.env");
    assert_eq!(d.as_slice()[0].line, Some(4));

    let (path, _, message) = single(&format!(
        "{HEAD}http_addr = \"127.0.0.1:1\"\nprovisioning_tokn = \"0123456789abcdef\"\n"
    ));
    assert_eq!(path, "bridge.provisioning_tokn");
    assert!(
        message.contains("did you mean \"provisioning_token\""),
        "{message}"
    );
}

#[test]
fn a_token_is_read_from_the_environment_or_a_file_relative_to_the_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "from-a-file-0123456789\n").unwrap();
    let path = dir.path().join("bridge.toml");
    std::fs::write(
        &path,
        format!("{HEAD}http_addr = \"127.0.0.1:1\"\nprovisioning_token = {{ file = \"token\" }}\n"),
    )
    .unwrap();
    let config = Loaded::read(&path).finish().unwrap();
    let token = config.bridge.provisioning_token.unwrap();
    assert_eq!(token, SecretRef::File(dir.path().join("token")));
    assert_eq!(
        token.resolve("bridge.provisioning_token").unwrap(),
        "from-a-file-0123456789"
    );

    let unset = SecretRef::Env("BRIDGE_TEST_TOKEN_THAT_IS_NOT_SET".into());
    let error = unset.resolve("bridge.provisioning_token").unwrap_err();
    assert_eq!(error.path, "bridge.provisioning_token.env");
    assert!(error.message.contains("is not set"), "{}", error.message);
    let missing = SecretRef::File(dir.path().join("nope"));
    let error = missing.resolve("bridge.provisioning_token").unwrap_err();
    assert_eq!(error.path, "bridge.provisioning_token.file");
}

#[test]
fn the_example_documents_the_operations_keys_and_its_token_line_works() {
    let example = include_str!("../../examples/bridge.toml");
    assert!(example.lines().any(|l| l.starts_with("http_addr = ")));
    let commented = "# provisioning_token = ";
    assert!(example.lines().any(|l| l.starts_with(commented)));
    let config = ok(&example.replace(commented, "provisioning_token = "));
    assert_eq!(
        config.bridge.provisioning_token,
        Some(SecretRef::File("/etc/bridge/provisioning-token".into()))
    );
}
