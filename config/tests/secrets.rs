//! `resolve_secret`: inline, `{ env = … }`, `{ file = … }` and invalid forms.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use bridge_config::{Diagnostics, Loaded, resolve_secret, resolve_secret_in};

fn value(text: &str) -> toml::Value {
    let table: toml::Table = toml::from_str(&format!("secret = {text}")).unwrap();
    table["secret"].clone()
}

#[test]
fn inline() {
    assert_eq!(
        resolve_secret(&value("\"hunter2\""), "adapter[0].password").unwrap(),
        "hunter2"
    );
}

#[test]
fn from_environment() {
    // Tests may not set variables (that needs `unsafe`), so use one that is set.
    let (name, expected) = std::env::vars_os()
        .find_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)))
        .expect("some environment variable");
    let secret = resolve_secret(&value(&format!("{{ env = {name:?} }}")), "adapter[0].token");
    assert_eq!(secret.unwrap(), expected);

    let unset = "BRIDGE_CONFIG_TEST_VARIABLE_THAT_IS_NEVER_SET";
    assert!(std::env::var_os(unset).is_none());
    let error = resolve_secret(
        &value(&format!("{{ env = {unset:?} }}")),
        "adapter[0].token",
    )
    .unwrap_err();
    assert_eq!(error.path, "adapter[0].token.env");
    assert_eq!(
        error.message,
        format!("environment variable {unset:?} is not set")
    );
    assert_eq!(error.line, None);
}

#[test]
fn from_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret");
    std::fs::write(&file, "s3cret\n").unwrap();
    let secret = resolve_secret(
        &value(&format!("{{ file = {:?} }}", file.display().to_string())),
        "p",
    );
    assert_eq!(secret.unwrap(), "s3cret");

    // Only one trailing newline goes; CRLF counts as one.
    std::fs::write(&file, "two\n\n").unwrap();
    let text = format!("{{ file = {:?} }}", file.display().to_string());
    assert_eq!(resolve_secret(&value(&text), "p").unwrap(), "two\n");
    std::fs::write(&file, "crlf\r\n").unwrap();
    assert_eq!(resolve_secret(&value(&text), "p").unwrap(), "crlf");
    std::fs::write(&file, "none").unwrap();
    assert_eq!(resolve_secret(&value(&text), "p").unwrap(), "none");

    // Relative to a base directory.
    let relative = resolve_secret_in(&value("{ file = \"secret\" }"), "p", Some(dir.path()));
    assert_eq!(relative.unwrap(), "none");

    let missing = dir.path().join("missing");
    let text = format!("{{ file = {:?} }}", missing.display().to_string());
    let error = resolve_secret(&value(&text), "adapter[1].password").unwrap_err();
    assert_eq!(error.path, "adapter[1].password.file");
    assert!(
        error.message.starts_with(&format!(
            "cannot read secret file {:?}: ",
            missing.display().to_string()
        )),
        "{}",
        error.message
    );
}

#[test]
fn invalid_forms() {
    let expected = "expected a secret: a string, { env = \"VAR\" } or { file = \"/path\" }";
    for (text, path, message) in [
        ("5", "p", format!("{expected}, got an integer 5")),
        ("[\"a\"]", "p", format!("{expected}, got an array")),
        ("{}", "p", format!("{expected}, got an empty table")),
        (
            "{ vault = \"x\" }",
            "p",
            format!("{expected}, got a table with keys vault"),
        ),
        (
            "{ env = \"A\", file = \"B\" }",
            "p",
            format!("{expected}, got a table with keys env, file"),
        ),
        (
            "{ env = 1 }",
            "p.env",
            "expected a string, got an integer 1".to_owned(),
        ),
        ("{ file = \"\" }", "p.file", "must not be empty".to_owned()),
    ] {
        let error = resolve_secret(&value(text), "p").unwrap_err();
        assert_eq!(
            (error.path.as_str(), error.message.as_str()),
            (path, message.as_str()),
            "{text}"
        );
    }
}

#[test]
fn secret_errors_get_lines_in_diagnostics() {
    let source = "[bridge]\ndata_dir = \"/d\"\n\n[[adapter]]\nid = \"a\"\ntype = \"t\"\n\
                  token = { env = \"BRIDGE_CONFIG_TEST_VARIABLE_THAT_IS_NEVER_SET\" }\n";
    let mut loaded = Loaded::parse(source, "bridge.toml");
    let config = loaded.config.clone().unwrap();
    let section = &config.adapters[0];
    let error = resolve_secret(&section.settings["token"], &section.key_path("token")).unwrap_err();
    loaded.diagnostics.push_diagnostic(error);
    let d = loaded.finish().unwrap_err();
    assert_eq!(
        d.to_string(),
        "bridge.toml:7:17: adapter[0].token.env: environment variable \
         \"BRIDGE_CONFIG_TEST_VARIABLE_THAT_IS_NEVER_SET\" is not set\n1 error"
    );
}

#[test]
fn settings_reader_reads_secret_files_next_to_the_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "abc\n").unwrap();
    let path = dir.path().join("bridge.toml");
    std::fs::write(
        &path,
        "[bridge]\ndata_dir = \"state\"\n[[adapter]]\nid = \"a\"\ntype = \"t\"\ntoken = { file = \"token\" }\n",
    )
    .unwrap();
    let (config, map) = bridge_config::load(&path).unwrap();
    assert_eq!(map.base_dir(), Some(dir.path()));
    let mut diagnostics = Diagnostics::new(map);
    let mut reader = config.adapters[0].reader(&mut diagnostics);
    assert_eq!(reader.required_secret("token").as_deref(), Some("abc"));
    assert_eq!(reader.optional_secret("other"), None);
    assert_eq!(reader.required_secret("missing"), None);
    reader.finish();
    let paths: Vec<&str> = diagnostics.iter().map(|d| d.path.as_str()).collect();
    assert_eq!(paths, ["adapter[0].missing"]);
    assert!(Path::new(&config.bridge.data_dir).ends_with("state"));
}
