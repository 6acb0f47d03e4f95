//! Every kind of problem, reported with its path and line.

#![allow(clippy::unwrap_used)]

mod common;

use common::{BRIDGE, diagnostics, ok, single};

#[test]
fn syntax_error_has_line_and_column() {
    let source = "[bridge]\ndata_dir = \"/x\"\nlog_level = info\n";
    let (path, line, message) = single(source);
    assert_eq!(path, "");
    assert_eq!(line, Some(3));
    assert!(message.starts_with("invalid TOML: "), "{message}");
    assert!(
        message.ends_with(" (strings must be quoted: \"info\")"),
        "{message}"
    );
    let d = diagnostics(source);
    assert_eq!(d.as_slice()[0].column, Some(13));
    let text = d.to_string();
    assert!(
        text.starts_with("bridge.toml:3:13: invalid TOML: "),
        "{text}"
    );
    assert!(text.ends_with("\n1 error"), "{text}");

    let (_, line, message) = single("[bridge]\ndata_dir = \"/x\"\ndata_dir = \"/y\"\n");
    assert_eq!(line, Some(3));
    assert_eq!(message, "invalid TOML: duplicate key \"data_dir\"");
}

#[test]
fn missing_required_keys() {
    assert_eq!(
        single(""),
        (
            "bridge".into(),
            None,
            "missing required section [bridge]".into()
        )
    );
    assert_eq!(
        single("[bridge]\nlog_level = \"info\"\n"),
        (
            "bridge.data_dir".into(),
            Some(1),
            "missing required key \"data_dir\"".into()
        )
    );
    let source = format!("{BRIDGE}\n[[adapter]]\nid = \"a\"\n\n[[adapter]]\ntype = \"linechat\"\n");
    let d = diagnostics(&source);
    let found: Vec<(&str, Option<usize>)> = d.iter().map(|d| (d.path.as_str(), d.line)).collect();
    assert_eq!(
        found,
        [("adapter[0].type", Some(4)), ("adapter[1].id", Some(7))]
    );

    let source = format!("{BRIDGE}[[room]]\nname = \"x\"\n[[room.link]]\nremote = \"r\"\n");
    let d = diagnostics(&source);
    let found: Vec<(&str, Option<usize>)> = d.iter().map(|d| (d.path.as_str(), d.line)).collect();
    assert_eq!(
        found,
        [
            ("room[0].id", Some(3)),
            ("room[0].link[0].adapter", Some(5))
        ]
    );
}

#[test]
fn wrong_value_types() {
    assert_eq!(
        single("[bridge]\ndata_dir = 5\n"),
        (
            "bridge.data_dir".into(),
            Some(2),
            "expected a string, got an integer 5".into()
        )
    );
    assert_eq!(
        single(&format!("{BRIDGE}[delivery]\nmax_attempts = \"12\"\n")),
        (
            "delivery.max_attempts".into(),
            Some(4),
            "expected an integer, got a string \"12\"".into()
        )
    );
    assert_eq!(
        single("bridge = 5\n"),
        (
            "bridge".into(),
            Some(1),
            "expected a table, got an integer 5".into()
        )
    );
    assert_eq!(
        single(&format!("adapter = \"x\"\n{BRIDGE}")).2,
        "expected an array of tables ([[adapter]]), got a string \"x\""
    );
    assert_eq!(
        single(&format!("room = [1]\n{BRIDGE}")),
        (
            "room[0]".into(),
            Some(1),
            "expected a table, got an integer 1".into()
        )
    );
    assert_eq!(
        single(&format!("{BRIDGE}[delivery]\ndegrade = true\n")).2,
        "expected a table, got a boolean true"
    );
}

#[test]
fn inline_tables_are_accepted_for_sections() {
    let config = ok(
        "bridge = { data_dir = \"/d\" }\ndelivery = { max_attempts = 3 }\n\
                     adapter = [{ id = \"a\", type = \"t\", k = 1 }]\n\
                     room = [{ id = \"r\", link = [{ adapter = \"a\", remote = \"x\" }] }]\n",
    );
    assert_eq!(config.delivery.max_attempts, 3);
    assert_eq!(
        config.adapters[0].settings.get("k"),
        Some(&toml::Value::Integer(1))
    );
    assert_eq!(config.rooms[0].links[0].path, "room[0].link[0]");
}

#[test]
fn unknown_keys_with_suggestions() {
    let (path, line, message) = single("[bridge]\ndata_dir = \"/x\"\nlog_levl = \"debug\"\n");
    assert_eq!((path.as_str(), line), ("bridge.log_levl", Some(3)));
    assert_eq!(
        message,
        "unknown key \"log_levl\" (did you mean \"log_level\"?)"
    );

    let (path, _, message) = single(&format!("{BRIDGE}[[rooms]]\nid = \"x\"\n"));
    assert_eq!(path, "rooms");
    assert_eq!(message, "unknown key \"rooms\" (did you mean \"room\"?)");

    let (path, line, message) = single(&format!(
        "{BRIDGE}[[room]]\nid = \"r\"\ncolour = \"blue\"\n"
    ));
    assert_eq!((path.as_str(), line), ("room[0].colour", Some(5)));
    assert_eq!(
        message,
        "unknown key \"colour\"; expected one of: id, name, degrade, carry, link"
    );

    let (path, _, message) = single(&format!("{BRIDGE}[delivery.degrade]\nreplys = \"drop\"\n"));
    assert_eq!(path, "delivery.degrade.replys");
    assert_eq!(message, "unknown key \"replys\" (did you mean \"reply\"?)");

    let (path, _, _) = single(&format!(
        "{BRIDGE}[[adapter]]\nid = \"a\"\ntype = \"t\"\n[[room]]\nid = \"r\"\n[[room.link]]\nadapter = \"a\"\nremote = \"x\"\nremot = \"y\"\n"
    ));
    assert_eq!(path, "room[0].link[0].remot");
}

#[test]
fn invalid_enum_values_list_the_allowed_ones() {
    let (path, line, message) = single("[bridge]\ndata_dir = \"/x\"\nlog_format = \"xml\"\n");
    assert_eq!((path.as_str(), line), ("bridge.log_format", Some(3)));
    assert_eq!(message, "expected one of \"human\", \"json\", got \"xml\"");

    let (path, _, message) = single(&format!(
        "{BRIDGE}[delivery.degrade]\ncustom = \"notise\"\n"
    ));
    assert_eq!(path, "delivery.degrade.custom");
    assert_eq!(
        message,
        "expected one of \"drop\", \"notice\", got \"notise\" (did you mean \"notice\"?)"
    );

    let (path, _, _) = single(&format!(
        "{BRIDGE}[[room]]\nid = \"r\"\n[room.degrade]\nedit = \"quote\"\n"
    ));
    assert_eq!(path, "room[0].degrade.edit");

    let (path, line, message) = single(&format!("{BRIDGE}[delivery.carry]\ntyping = \"no\"\n"));
    assert_eq!(path, "delivery.carry.typing");
    assert!(line.is_some());
    assert_eq!(message, "expected true or false, got a string \"no\"");

    let (path, _, message) = single(&format!(
        "{BRIDGE}[[room]]\nid = \"r\"\n[room.carry]\nread_marker = false\n"
    ));
    assert_eq!(path, "room[0].carry.read_marker");
    assert!(message.contains("read_markers"), "{message}");

    let (path, _, message) = single(&format!(
        "{BRIDGE}[[adapter]]\nid = \"a\"\ntype = \"linechat\"\ncarry = \"none\"\n"
    ));
    assert_eq!(path, "adapter[0].carry");
    assert_eq!(message, "expected a table, got a string \"none\"");
    let (path, _, message) = single(&format!(
        "{BRIDGE}[[adapter]]\nid = \"a\"\ntype = \"linechat\"\n[adapter.carry]\ntyping = 0\n"
    ));
    assert_eq!(path, "adapter[0].carry.typing");
    assert!(message.starts_with("expected true or false"), "{message}");
}

#[test]
fn numbers_out_of_range() {
    let source = format!(
        "{BRIDGE}worker_threads = 300\nkeep_days = -1\n[delivery]\nmax_attempts = 0\nbackoff_initial_ms = -5\nqueue_capacity = 2000000\n"
    );
    let d = diagnostics(&source);
    let found: Vec<(&str, Option<usize>, &str)> = d
        .iter()
        .map(|d| (d.path.as_str(), d.line, d.message.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            (
                "bridge.worker_threads",
                Some(3),
                "expected an integer from 0 to 256, got 300"
            ),
            (
                "bridge.keep_days",
                Some(4),
                "expected an integer from 0 to 36500, got -1"
            ),
            (
                "delivery.max_attempts",
                Some(6),
                "expected an integer from 1 to 10000, got 0"
            ),
            (
                "delivery.backoff_initial_ms",
                Some(7),
                "expected an integer from 1 to 86400000, got -5"
            ),
            (
                "delivery.queue_capacity",
                Some(8),
                "expected an integer from 1 to 1048576, got 2000000"
            ),
        ]
    );

    let (path, line, message) = single(&format!(
        "{BRIDGE}[delivery]\nbackoff_initial_ms = 500\nbackoff_max_ms = 100\n"
    ));
    assert_eq!((path.as_str(), line), ("delivery.backoff_max_ms", Some(5)));
    assert_eq!(
        message,
        "must be at least backoff_initial_ms (500), got 100"
    );

    let (path, _, message) = single(&format!("{BRIDGE}[delivery]\nbackoff_initial_ms = 90000\n"));
    assert_eq!(path, "delivery.backoff_initial_ms");
    assert_eq!(
        message,
        "must be at most backoff_max_ms (60000, the default), got 90000"
    );
}

#[test]
fn invalid_socket_address() {
    let (path, line, message) = single("[bridge]\ndata_dir = \"/x\"\nmetrics_addr = \"nowhere\"\n");
    assert_eq!((path.as_str(), line), ("bridge.metrics_addr", Some(3)));
    assert_eq!(
        message,
        "expected a socket address like \"127.0.0.1:9184\", got \"nowhere\""
    );
    let d = diagnostics("[bridge]\ndata_dir = \"/x\"\nmetrics_addr = \"nowhere\"\n");
    assert_eq!(d.as_slice()[0].column, Some(16));
    assert_eq!(
        ok("[bridge]\ndata_dir = \"/x\"\nmetrics_addr = \"[::1]:9184\"\n")
            .bridge
            .metrics_addr,
        Some("[::1]:9184".parse().unwrap())
    );
}

#[test]
fn invalid_log_level() {
    let (path, _, message) = single("[bridge]\ndata_dir = \"/x\"\nlog_level = \"inof\"\n");
    assert_eq!(path, "bridge.log_level");
    assert!(
        message.ends_with("got \"inof\" (did you mean \"info\"?)"),
        "{message}"
    );
    let config = ok("[bridge]\ndata_dir = \"/x\"\nlog_level = \"warn,bridge_core=trace\"\n");
    assert_eq!(config.bridge.log_level, "warn,bridge_core=trace");
}

#[test]
fn invalid_id_syntax() {
    let (path, line, message) = single(&format!(
        "{BRIDGE}[[adapter]]\nid = \"Chat A\"\ntype = \"linechat\"\n"
    ));
    assert_eq!((path.as_str(), line), ("adapter[0].id", Some(4)));
    assert_eq!(
        message,
        "expected 1 to 32 characters from [a-z0-9_-], got \"Chat A\""
    );

    let (path, _, message) = single(&format!("{BRIDGE}[[room]]\nid = \"lobby!\"\n"));
    assert_eq!(path, "room[0].id");
    assert_eq!(
        message,
        "expected 1 to 64 characters from [a-z0-9_.-], got \"lobby!\""
    );

    ok(&format!("{BRIDGE}[[room]]\nid = \"team.dev-2_x\"\n"));
    let (path, _, _) = single(&format!(
        "{BRIDGE}[[adapter]]\nid = \"{}\"\ntype = \"t\"\n",
        "a".repeat(33)
    ));
    assert_eq!(path, "adapter[0].id");
}

#[test]
fn duplicate_ids() {
    let source = format!(
        "{BRIDGE}[[adapter]]\nid = \"a\"\ntype = \"t\"\n[[adapter]]\nid = \"a\"\ntype = \"t\"\n"
    );
    let (path, line, message) = single(&source);
    assert_eq!((path.as_str(), line), ("adapter[1].id", Some(7)));
    assert_eq!(
        message,
        "duplicate adapter id \"a\"; first defined at adapter[0].id (line 4)"
    );

    let source =
        format!("{BRIDGE}[[room]]\nid = \"r\"\n[[room]]\nid = \"s\"\n[[room]]\nid = \"r\"\n");
    let (path, line, message) = single(&source);
    assert_eq!((path.as_str(), line), ("room[2].id", Some(8)));
    assert_eq!(
        message,
        "duplicate room id \"r\"; first defined at room[0].id (line 4)"
    );
}

const ADAPTERS: &str = "[[adapter]]\nid = \"chat-a\"\ntype = \"linechat\"\n\
                        [[adapter]]\nid = \"chat-b\"\ntype = \"linechat\"\n";

#[test]
fn link_to_unknown_adapter() {
    let source = format!(
        "{BRIDGE}{ADAPTERS}[[room]]\nid = \"r\"\n[[room.link]]\nadapter = \"chat-c\"\nremote = \"x\"\n"
    );
    let (path, line, message) = single(&source);
    assert_eq!((path.as_str(), line), ("room[0].link[0].adapter", Some(12)));
    assert_eq!(
        message,
        "unknown adapter \"chat-c\" (did you mean \"chat-a\"?)"
    );

    let source = format!(
        "{BRIDGE}{ADAPTERS}[[room]]\nid = \"r\"\n[[room.link]]\nadapter = \"xmpp\"\nremote = \"x\"\n"
    );
    assert_eq!(
        single(&source).2,
        "unknown adapter \"xmpp\"; configured adapters: chat-a, chat-b"
    );

    let source = format!(
        "{BRIDGE}[[room]]\nid = \"r\"\n[[room.link]]\nadapter = \"xmpp\"\nremote = \"x\"\n"
    );
    assert_eq!(
        single(&source).2,
        "unknown adapter \"xmpp\"; no [[adapter]] is configured"
    );

    // An adapter defined after the rooms is fine.
    ok(&format!(
        "{BRIDGE}[[room]]\nid = \"r\"\n[[room.link]]\nadapter = \"chat-a\"\nremote = \"x\"\n{ADAPTERS}"
    ));
}

#[test]
fn same_remote_linked_twice() {
    let source = format!(
        "{BRIDGE}{ADAPTERS}\
         [[room]]\nid = \"one\"\n[[room.link]]\nadapter = \"chat-a\"\nremote = \"lobby\"\n\
         [[room]]\nid = \"two\"\n[[room.link]]\nadapter = \"chat-b\"\nremote = \"lobby\"\n\
         [[room.link]]\nadapter = \"chat-a\"\nremote = \"lobby\"\n"
    );
    let (path, line, message) = single(&source);
    assert_eq!((path.as_str(), line), ("room[1].link[1].remote", Some(21)));
    assert_eq!(
        message,
        "\"lobby\" on adapter \"chat-a\" is already linked in room \"one\" at room[0].link[0].remote (line 13)"
    );
}

#[test]
fn empty_strings_are_rejected() {
    let d = diagnostics(&format!(
        "[bridge]\ndata_dir = \"\"\n{ADAPTERS}[[room]]\nid = \"r\"\nname = \"\"\n[[room.link]]\nadapter = \"chat-a\"\nremote = \" \"\n"
    ));
    let paths: Vec<&str> = d.iter().map(|d| d.path.as_str()).collect();
    assert_eq!(
        paths,
        ["bridge.data_dir", "room[0].name", "room[0].link[0].remote"]
    );
    assert!(d.iter().all(|d| d.message == "must not be empty"));
}

#[test]
fn five_mistakes_five_diagnostics() {
    let source = "\
[bridge]
data_dir = \"/tmp/bridge\"
log_format = \"jsno\"
metrics_addr = \"nowhere\"

[delivery]
max_attempts = 0

[[adapter]]
id = \"chat-a\"
type = \"linechat\"

[[room]]
id = \"lobby\"
colour = \"blue\"
[[room.link]]
adapter = \"chat-b\"
remote = \"lobby\"
";
    let d = diagnostics(source);
    let found: Vec<(&str, Option<usize>, Option<usize>)> = d
        .iter()
        .map(|d| (d.path.as_str(), d.line, d.column))
        .collect();
    assert_eq!(
        found,
        [
            ("bridge.log_format", Some(3), Some(14)),
            ("bridge.metrics_addr", Some(4), Some(16)),
            ("delivery.max_attempts", Some(7), Some(16)),
            ("room[0].colour", Some(15), Some(1)),
            ("room[0].link[0].adapter", Some(17), Some(11)),
        ]
    );
    assert_eq!(
        d.to_string(),
        "\
bridge.toml:3:14: bridge.log_format: expected one of \"human\", \"json\", got \"jsno\" (did you mean \"json\"?)
bridge.toml:4:16: bridge.metrics_addr: expected a socket address like \"127.0.0.1:9184\", got \"nowhere\"
bridge.toml:7:16: delivery.max_attempts: expected an integer from 1 to 10000, got 0
bridge.toml:15:1: room[0].colour: unknown key \"colour\"; expected one of: id, name, degrade, carry, link
bridge.toml:17:11: room[0].link[0].adapter: unknown adapter \"chat-b\" (did you mean \"chat-a\"?)
5 errors"
    );
}

#[test]
fn garbage_never_panics() {
    let garbage = [
        "",
        "\0",
        "\u{feff}",
        "[[[",
        "]]]",
        "= = =",
        "[bridge",
        "[bridge]\ndata_dir",
        "a.b.c.d.e = 1",
        "\"\\u{ffff}\" = 1",
        "[[adapter]]\n[[adapter]]\n[[room]]\n[[room.link]]\n[[room.link]]\n",
        "adapter = []\nroom = [[], {}, 1, \"x\"]\nbridge = []\ndelivery = 1.5e400",
        "[bridge]\ndata_dir = 1979-05-27T07:32:00Z\nlog_level = [\"a\", {b = 1}]",
        "[delivery]\nmax_attempts = 9223372036854775807\nbackoff_initial_ms = -9223372036854775808",
        "[room.degrade]\n[room.link]\n",
        "[[room]]\n[[room.link]]\nadapter = \"\"\nremote = \"\"\n[room.degrade]\nreply = 1",
        "x = \"\u{1F600}\u{1F600}\" # 😀\n[bridge]\ndata_dir=\"é\"\nlog_level=\"é=é,[=]]\"",
        "\r\n\r\n[bridge]\r\ndata_dir = 3\r\n",
        "bridge.data_dir = \"/x\"\nbridge.log_level = \"]=\"\n",
    ];
    for text in garbage {
        let result = bridge_config::parse(text, "garbage.toml");
        if let Err(diagnostics) = result {
            let shown = diagnostics.to_string();
            assert!(shown.ends_with(&format!(
                "{} error{}",
                diagnostics.len(),
                if diagnostics.len() == 1 { "" } else { "s" }
            )));
            assert!(!diagnostics.is_empty());
        }
    }
    let mut bytes: Vec<u8> = (0u8..=255).collect();
    bytes.extend_from_slice(b"[bridge]\ndata_dir=\"x\"\n");
    let text = String::from_utf8_lossy(&bytes);
    assert!(bridge_config::parse(&text, "bytes.toml").is_err());
}
