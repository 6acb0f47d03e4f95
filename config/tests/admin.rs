//! `bridge.admins` and `[[bridge.management]]`: who may run admin commands, and where.

#![allow(clippy::unwrap_used)]

mod common;

use bridge_config::{AdminSection, ManagementSection};
use common::{diagnostics, ok, single};

const ADAPTERS: &str = "\
[[adapter]]
id = \"matrix\"
type = \"matrix\"

[[adapter]]
id = \"xmpp\"
type = \"xmpp\"
";

fn toml(bridge_extra: &str, rest: &str) -> String {
    format!("[bridge]\ndata_dir = \"/x\"\n{bridge_extra}\n{ADAPTERS}\n{rest}")
}

#[test]
fn admins_and_management_rooms_are_read() {
    let config = ok(&toml(
        "admins = [\"matrix:@alice:localhost\", \"xmpp:alice@localhost\"]\n\
         [[bridge.management]]\nadapter = \"matrix\"\nremote = \"!abc:localhost\"\n\
         [[bridge.management]]\nadapter = \"xmpp\"\nremote = \"admin@conference.localhost\"\n",
        "",
    ));
    assert_eq!(
        config.bridge.admins,
        vec![
            AdminSection {
                adapter: "matrix".into(),
                user: "@alice:localhost".into()
            },
            AdminSection {
                adapter: "xmpp".into(),
                user: "alice@localhost".into()
            },
        ]
    );
    assert_eq!(
        config.bridge.management,
        vec![
            ManagementSection {
                adapter: "matrix".into(),
                remote: "!abc:localhost".into(),
                path: "bridge.management[0]".into()
            },
            ManagementSection {
                adapter: "xmpp".into(),
                remote: "admin@conference.localhost".into(),
                path: "bridge.management[1]".into()
            },
        ]
    );
    // Without either, nothing changes.
    let config = ok(&toml("", ""));
    assert!(config.bridge.admins.is_empty() && config.bridge.management.is_empty());
}

#[test]
fn a_bad_admin_is_reported_at_its_index() {
    let (path, line, message) = single(&toml("admins = [\"matrix:@a:x\", \"alice\"]", ""));
    assert_eq!((path.as_str(), line), ("bridge.admins[1]", Some(3)));
    assert!(message.contains("ADAPTER:USER"), "{message}");

    let (path, _, message) = single(&toml("admins = [\"matrx:@a:x\"]", ""));
    assert_eq!(path, "bridge.admins[0]");
    assert!(message.contains("did you mean \"matrix\""), "{message}");

    let (path, _, message) = single(&toml("admins = [\"xmpp:\"]", ""));
    assert_eq!(path, "bridge.admins[0]");
    assert!(message.contains("empty"), "{message}");

    let (path, _, message) = single(&toml("admins = [\"xmpp:a@b\", \"xmpp:a@b\"]", ""));
    assert_eq!(path, "bridge.admins[1]");
    assert!(message.contains("twice"), "{message}");

    let (path, _, message) = single(&toml("admins = [42]", ""));
    assert_eq!(path, "bridge.admins[0]");
    assert!(message.contains("expected a string"), "{message}");

    let (path, _, message) = single(&toml("admins = \"matrix:@a:x\"", ""));
    assert_eq!(path, "bridge.admins");
    assert!(message.contains("expected an array"), "{message}");
}

#[test]
fn a_management_room_cannot_be_a_bridged_link() {
    let (path, line, message) = single(&toml(
        "admins = [\"matrix:@a:x\"]\n[[bridge.management]]\nadapter = \"matrix\"\nremote = \"!lobby:x\"",
        "[[room]]\nid = \"lobby\"\n[[room.link]]\nadapter = \"matrix\"\nremote = \"!lobby:x\"\n",
    ));
    assert_eq!(
        (path.as_str(), line),
        ("bridge.management[0].remote", Some(6))
    );
    assert!(
        message.contains("bridged in room \"lobby\" at room[0].link[0].remote (line"),
        "{message}"
    );
    assert!(
        message.contains("cannot also be a bridged room"),
        "{message}"
    );
}

#[test]
fn management_rooms_are_checked_like_links() {
    let all = diagnostics(&toml(
        "admins = [\"matrix:@a:x\"]\n\
         [[bridge.management]]\nadapter = \"matrix\"\nremote = \"!m:x\"\n\
         [[bridge.management]]\nadapter = \"matrix\"\nremote = \"!m:x\"\n\
         [[bridge.management]]\nadapter = \"irc\"\nremote = \"#m\"\n\
         [[bridge.management]]\nadapter = \"xmpp\"\nroom = \"m@x\"\n",
        "",
    ));
    let paths: Vec<&str> = all.as_slice().iter().map(|d| d.path.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "bridge.management[1].remote",
            "bridge.management[2].adapter",
            "bridge.management[3].room",
            "bridge.management[3].remote",
        ],
        "{all}"
    );
}

#[test]
fn management_rooms_need_admins() {
    let (path, _, message) = single(&toml(
        "[[bridge.management]]\nadapter = \"matrix\"\nremote = \"!m:x\"",
        "",
    ));
    assert_eq!(path, "bridge.admins");
    assert!(message.contains("nobody may use them"), "{message}");
}
