//! Defaults, loading from files, and adding problems after parsing.

#![allow(clippy::unwrap_used)]

mod common;

use bridge_config::{
    Carry, CustomPolicy, Degrade, Delivery, Diagnostic, Diagnostics, Fallback, Loaded, LogFormat,
    SourceMap,
};
use common::{BRIDGE, ok};

#[test]
fn defaults() {
    let config = ok(BRIDGE);
    assert_eq!(config.bridge.data_dir.to_str(), Some("/tmp/bridge"));
    assert_eq!(config.bridge.log_format, LogFormat::Human);
    assert_eq!(config.bridge.log_level, "info");
    assert_eq!(config.bridge.metrics_addr, None);
    assert_eq!(config.bridge.worker_threads, 1);
    assert_eq!(config.bridge.keep_days, 365);
    assert_eq!(config.delivery, Delivery::default());
    assert_eq!(config.delivery.max_attempts, 12);
    assert_eq!(config.delivery.backoff_initial_ms, 250);
    assert_eq!(config.delivery.backoff_max_ms, 60_000);
    assert_eq!(config.delivery.queue_capacity, 1024);
    assert_eq!(config.delivery.degrade, Degrade::default());
    assert!(config.adapters.is_empty());
    assert!(config.rooms.is_empty());
}

#[test]
fn every_value_is_read() {
    let config = ok("\
[bridge]
data_dir = \"relative/dir\"
log_format = \"json\"
log_level = \"debug\"
metrics_addr = \"0.0.0.0:9000\"
worker_threads = 4
keep_days = 0
[delivery]
max_attempts = 3
backoff_initial_ms = 10
backoff_max_ms = 10
queue_capacity = 1
[delivery.degrade]
reply = \"drop\"
edit = \"drop\"
reaction = \"drop\"
redaction = \"fallback\"
moderation = \"drop\"
custom = \"notice\"
[delivery.carry]
read_markers = false
[[adapter]]
id = \"x_1\"
type = \"linechat\"
connect = \"127.0.0.1:1\"
nested = { a = [1, 2.5, true, \"s\"] }
[adapter.tls]
when = 1979-05-27T07:32:00Z
[adapter.carry]
typing = false
[[room]]
id = \"r.1\"
name = \"Room\"
[room.degrade]
reply = \"fallback\"
[room.carry]
typing = false
roles = false
moderation = false
[[room.link]]
adapter = \"x_1\"
remote = \"#room\"
");
    // parse() leaves a relative data_dir alone.
    assert_eq!(config.bridge.data_dir.to_str(), Some("relative/dir"));
    assert_eq!(config.bridge.log_format, LogFormat::Json);
    assert_eq!(config.bridge.log_level, "debug");
    assert_eq!(config.bridge.worker_threads, 4);
    assert_eq!(config.bridge.keep_days, 0, "0: kept for ever");
    assert_eq!(
        config.bridge.metrics_addr,
        Some("0.0.0.0:9000".parse().unwrap())
    );
    assert_eq!(
        (
            config.delivery.max_attempts,
            config.delivery.backoff_initial_ms
        ),
        (3, 10)
    );
    assert_eq!(
        (
            config.delivery.backoff_max_ms,
            config.delivery.queue_capacity
        ),
        (10, 1)
    );
    let global = Degrade {
        reply: Fallback::Drop,
        edit: Fallback::Drop,
        reaction: Fallback::Drop,
        redaction: Fallback::Fallback,
        moderation: Fallback::Drop,
        custom: CustomPolicy::Notice,
    };
    assert_eq!(config.delivery.degrade, global);

    let adapter = config.adapter("x_1").unwrap();
    assert_eq!(adapter.path, "adapter[0]");
    let keys: Vec<&str> = adapter.settings.keys().map(String::as_str).collect();
    assert_eq!(keys, ["connect", "nested", "tls"]);
    assert_eq!(adapter.settings["connect"].as_str(), Some("127.0.0.1:1"));
    assert_eq!(adapter.settings["nested"]["a"][1].as_float(), Some(2.5));
    assert!(adapter.settings["tls"]["when"].as_datetime().is_some());
    // An adapter's carry table is the bridge's, not the type's; keys it leaves out carry
    // (they do not follow [delivery.carry], which is the rooms' policy).
    assert_eq!(
        adapter.carry,
        Some(Carry {
            typing: false,
            read_markers: true,
            roles: true,
            moderation: true,
        })
    );

    let room = config.room("r.1").unwrap();
    assert_eq!(room.name.as_deref(), Some("Room"));
    // Keys the room leaves out follow [delivery.degrade].
    let own = Degrade {
        reply: Fallback::Fallback,
        ..global
    };
    assert_eq!(room.degrade, Some(own));
    assert_eq!(config.degrade_for(room), &own);
    // So do the keys it leaves out of [delivery.carry].
    assert_eq!(
        config.delivery.carry,
        Carry {
            typing: true,
            read_markers: false,
            roles: true,
            moderation: true,
        }
    );
    let carry = Carry {
        typing: false,
        read_markers: false,
        roles: false,
        moderation: false,
    };
    assert_eq!(room.carry, Some(carry));
    assert_eq!(config.carry_for(room), &carry);
    assert_eq!(room.links[0].adapter, "x_1");
    assert_eq!(room.links[0].remote, "#room");
    assert_eq!(room.links[0].path, "room[0].link[0]");
    assert_eq!(room.path, "room[0]");
}

#[test]
fn load_resolves_data_dir_against_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bridge.toml");
    std::fs::write(&path, "[bridge]\ndata_dir = \"state\"\n").unwrap();
    let (config, map) = bridge_config::load(&path).unwrap();
    assert_eq!(config.bridge.data_dir, dir.path().join("state"));
    assert_eq!(map.file_name(), path.display().to_string());

    std::fs::write(&path, "[bridge]\ndata_dir = \"/abs/state\"\n").unwrap();
    let (config, _) = bridge_config::load(&path).unwrap();
    assert_eq!(config.bridge.data_dir.to_str(), Some("/abs/state"));
}

#[test]
fn load_reports_unreadable_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.toml");
    let d = bridge_config::load(&path).unwrap_err();
    assert_eq!(d.len(), 1);
    let text = d.to_string();
    assert!(
        text.starts_with(&format!(
            "{}: cannot read the configuration file: ",
            path.display()
        )),
        "{text}"
    );
    assert!(text.ends_with("\n1 error"));
}

#[test]
fn callers_add_problems_with_lines() {
    let source = "[bridge]\ndata_dir = \"/d\"\n\n[[adapter]]\nid = \"a\"\ntype = \"linechat\"\n\n\
                  [[adapter]]\nid = \"b\"\ntype = \"linechat\"\nconnect = \"nowhere\"\n";
    let mut loaded = Loaded::parse(source, "bridge.toml");
    let config = loaded.config.clone().unwrap();

    // By full path, through a scope, as (relative path, message) pairs, as
    // finished diagnostics, and through a settings reader.
    loaded.diagnostics.push(
        format!("{}.connect", config.adapters[1].path),
        "expected a socket address like \"127.0.0.1:7000\", got \"nowhere\"",
    );
    loaded
        .diagnostics
        .scope(config.adapters[0].path.clone())
        .push("connect", "missing required key \"connect\"");
    loaded.diagnostics.extend_relative(
        &config.adapters[1].path,
        [("type", "unknown adapter type"), ("tls.ca", "no such file")],
    );
    loaded
        .diagnostics
        .extend([Diagnostic::new("adapter[1].id", "reserved")]);
    let mut reader = config.adapters[1].reader(&mut loaded.diagnostics);
    assert_eq!(reader.required_socket_addr("connect"), None);
    reader.finish();

    let d = loaded.finish().unwrap_err();
    assert_eq!(
        d.to_string(),
        "\
bridge.toml:4:1: adapter[0].connect: missing required key \"connect\"
bridge.toml:8:1: adapter[1].tls.ca: no such file
bridge.toml:9:6: adapter[1].id: reserved
bridge.toml:10:8: adapter[1].type: unknown adapter type
bridge.toml:11:11: adapter[1].connect: expected a socket address like \"127.0.0.1:7000\", got \"nowhere\"
bridge.toml:11:11: adapter[1].connect: expected a socket address like \"127.0.0.1:7000\", got \"nowhere\"
6 errors"
    );
}

#[test]
fn settings_reader_reports_types_and_unknown_keys() {
    let source = "[bridge]\ndata_dir = \"/d\"\n[[adapter]]\nid = \"a\"\ntype = \"t\"\n\
                  name = \"Bad Name\"\nport = 70000\nflag = \"yes\"\nhost = 5\nextra = 1\n";
    let mut loaded = Loaded::parse(source, "bridge.toml");
    let config = loaded.config.clone().unwrap();
    let mut reader = config.adapters[0].reader(&mut loaded.diagnostics);
    assert_eq!(reader.path("name"), "adapter[0].name");
    assert_eq!(reader.optional_identifier("name", 32, "_-"), None);
    assert_eq!(reader.optional_integer("port", 1..=65535), None);
    assert_eq!(reader.optional_bool("flag"), None);
    assert_eq!(reader.optional_string("host"), None);
    assert_eq!(reader.optional_string("absent"), None);
    assert_eq!(reader.required_string("needed"), None);
    reader.finish();
    let found: Vec<(&str, Option<usize>, &str)> = loaded
        .diagnostics
        .iter()
        .map(|d| (d.path.as_str(), d.line, d.message.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            (
                "adapter[0].name",
                Some(6),
                "expected 1 to 32 characters from [a-z0-9_-], got \"Bad Name\""
            ),
            (
                "adapter[0].port",
                Some(7),
                "expected an integer from 1 to 65535, got 70000"
            ),
            (
                "adapter[0].flag",
                Some(8),
                "expected a boolean, got a string \"yes\""
            ),
            (
                "adapter[0].host",
                Some(9),
                "expected a string, got an integer 5"
            ),
            (
                "adapter[0].needed",
                Some(3),
                "missing required key \"needed\""
            ),
            (
                "adapter[0].extra",
                Some(10),
                "unknown key \"extra\"; expected one of: name, port, flag, host, absent, needed"
            ),
        ]
    );
}

#[test]
fn diagnostics_without_a_source() {
    let mut d = Diagnostics::new(SourceMap::empty("x.toml"));
    assert!(d.is_empty());
    assert_eq!(d.to_string(), "0 errors");
    d.push("bridge.data_dir", "missing");
    d.push("", "whole file");
    assert_eq!(d.len(), 2);
    assert_eq!(
        d.to_string(),
        "x.toml: bridge.data_dir: missing\nx.toml: whole file\n2 errors"
    );
    let located = Diagnostic {
        path: "a".into(),
        line: Some(3),
        column: Some(4),
        message: "m".into(),
    };
    assert_eq!(located.to_string(), "3:4: a: m");
    assert!(d.into_result(()).is_err());
    assert!(Diagnostics::default().into_result(1).is_ok());
}
