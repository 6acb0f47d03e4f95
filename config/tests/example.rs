//! The example configuration shipped in `examples/bridge.toml`.

#![allow(clippy::unwrap_used)]

use bridge_config::{CustomPolicy, Degrade, Diagnostics, Fallback, Loaded, LogFormat};

const EXAMPLE: &str = include_str!("../../examples/bridge.toml");

/// Checks a `linechat` adapter section the way its factory would.
fn check_linechat(config: &bridge_config::Config, diagnostics: &mut Diagnostics) {
    for section in &config.adapters {
        if section.type_name != "linechat" {
            diagnostics.scope(section.path.clone()).push(
                "type",
                format!("unknown adapter type {:?}", section.type_name),
            );
            continue;
        }
        let mut reader = section.reader(diagnostics);
        reader.required_socket_addr("connect");
        reader.optional_identifier("name", 32, "_-");
        reader.finish();
    }
}

#[test]
fn example_parses_without_diagnostics() {
    let config = match bridge_config::parse(EXAMPLE, "examples/bridge.toml") {
        Ok(config) => config,
        Err(diagnostics) => panic!("{diagnostics}"),
    };
    assert_eq!(config.bridge.data_dir.to_str(), Some("/var/lib/bridge"));
    assert_eq!(config.bridge.log_format, LogFormat::Human);
    assert_eq!(config.bridge.log_level, "info");
    assert_eq!(
        config.bridge.http_addr,
        Some("127.0.0.1:9184".parse().unwrap())
    );
    assert_eq!(config.bridge.metrics_addr, None);
    assert_eq!(config.bridge.provisioning_token, None);
    assert_eq!(config.delivery, bridge_config::Delivery::default());

    let ids: Vec<&str> = config.adapters.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["chat-a", "chat-b"]);
    assert!(config.adapters.iter().all(|a| a.type_name == "linechat"));
    assert_eq!(config.adapters[1].path, "adapter[1]");

    let rooms: Vec<&str> = config.rooms.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(rooms, ["lobby", "dev"]);
    for room in &config.rooms {
        let adapters: Vec<&str> = room.links.iter().map(|l| l.adapter.as_str()).collect();
        assert_eq!(adapters, ["chat-a", "chat-b"], "room {}", room.id);
    }
    assert_eq!(config.rooms[0].degrade, None);
    assert_eq!(config.degrade_for(&config.rooms[0]), &Degrade::default());
    assert_eq!(
        config.rooms[1].degrade,
        Some(Degrade {
            redaction: Fallback::Fallback,
            custom: CustomPolicy::Notice,
            ..Degrade::default()
        })
    );
}

#[test]
fn example_adapter_settings_are_valid_linechat_settings() {
    let mut loaded = Loaded::parse(EXAMPLE, "examples/bridge.toml");
    let config = loaded.config.clone().unwrap();
    check_linechat(&config, &mut loaded.diagnostics);
    assert!(loaded.diagnostics.is_empty(), "{}", loaded.diagnostics);
    assert!(loaded.finish().is_ok());
}

#[test]
fn example_documents_every_delivery_key() {
    for key in [
        "max_attempts",
        "backoff_initial_ms",
        "backoff_max_ms",
        "queue_capacity",
        "reply",
        "edit",
        "reaction",
        "redaction",
        "custom",
    ] {
        assert!(
            EXAMPLE
                .lines()
                .any(|line| line.starts_with(&format!("{key} = "))),
            "{key} missing from the example"
        );
    }
    assert!(EXAMPLE.contains("xmpp, matrix and mimi"));
}

#[test]
fn truncated_and_mangled_examples_never_panic() {
    let boundaries: Vec<usize> = EXAMPLE.char_indices().map(|(i, _)| i).collect();
    for &end in &boundaries {
        let _ = bridge_config::parse(&EXAMPLE[..end], "cut.toml").map_err(|d| d.to_string());
    }
    let lines: Vec<&str> = EXAMPLE.lines().collect();
    for skip in 0..lines.len() {
        let mangled: Vec<&str> = lines
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != skip)
            .map(|(_, line)| *line)
            .collect();
        let _ =
            bridge_config::parse(&mangled.join("\n"), "mangled.toml").map_err(|d| d.to_string());
    }
}
