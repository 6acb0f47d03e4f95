//! Pieces shared by the Matrix fault and cross-server tests (`tests/matrix_faults.rs`,
//! `tests/xmpp_matrix.rs`): the appservice registration written for a given port, an
//! [`AppserviceAdapter`] or a `bridge` config section for it, a room's whole history read back
//! through `/messages`, and the count of a numbered sequence (delivered, duplicated, out of
//! order).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use bridge_core::AdapterId;
use bridge_matrix::AppserviceAdapter;
use serde_json::{Value, json};

use crate::matrix_human::MatrixHuman;

/// The bridge bot of the test registration.
pub const BOT: &str = "@_bridge_bot:localhost";

/// Writes the test registration (`tests/servers/appservice.yaml`) pointing at `as_port` into
/// `dir`; returns its path.
pub fn registration_file(dir: &Path, as_port: u16) -> PathBuf {
    let template = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("servers/appservice.yaml");
    let text = std::fs::read_to_string(template)
        .expect("registration template")
        .replace("@AS_PORT@", &as_port.to_string());
    let path = dir.join("registration.yaml");
    std::fs::write(&path, text).expect("registration written");
    path
}

/// The settings of an appservice section for `homeserver`, listening on `as_port`, as TOML
/// (without `id` and `type`), with the registration written into `dir`.
pub fn appservice_settings(dir: &Path, homeserver: &str, as_port: u16) -> String {
    format!(
        "mode = 'appservice'\nhomeserver = '{homeserver}'\nserver_name = 'localhost'\n\
         registration = '{}'\nlisten = '127.0.0.1:{as_port}'\n",
        registration_file(dir, as_port).display(),
    )
}

/// An appservice adapter with ID `matrix` for `homeserver`, listening on `as_port`.
pub fn appservice_adapter(dir: &Path, homeserver: &str, as_port: u16) -> AppserviceAdapter {
    let table: toml::Table = appservice_settings(dir, homeserver, as_port)
        .parse()
        .expect("settings parse");
    let settings = bridge_matrix::settings::parse(&table, true).expect("valid settings");
    let registration = bridge_matrix::registration::load(&registration_file(dir, as_port))
        .expect("registration loads");
    AppserviceAdapter::new(AdapterId::new("matrix"), settings, registration).expect("adapter")
}

/// Waits (at most `timeout`) until `human` sees the bridge's bot join `room`; returns that
/// membership event.
pub async fn bot_joined(
    human: &mut MatrixHuman,
    room: &str,
    timeout: std::time::Duration,
) -> Result<Value> {
    human
        .next_event(
            |e| {
                e["event"] == "timeline"
                    && e["room_id"] == room
                    && e["type"] == "m.room.member"
                    && e["state_key"] == BOT
                    && e["content"]["membership"] == "join"
            },
            timeout,
        )
        .await
}

/// A free TCP port on the loopback interface in 28000–28999 (the range these tests own),
/// starting the search at `from`.
pub fn free_port(from: u16) -> u16 {
    (from..29000)
        .find(|&p| {
            std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
                && std::net::TcpStream::connect(("127.0.0.1", p)).is_err()
        })
        .expect("a free port in 28000-28999")
}

/// Every event of a room's history, oldest first, read backwards from the end through
/// `/messages` pages of up to 1,000 events (Synapse's largest page).
pub async fn history(human: &mut MatrixHuman, room: &str) -> Result<Vec<Value>> {
    let mut from: Option<String> = None;
    let mut all = Vec::new();
    loop {
        let reply = human
            .command(
                "messages",
                json!({ "room": room, "limit": 1000, "dir": "b", "from": from }),
            )
            .await?;
        let events = reply["events"]
            .as_array()
            .with_context(|| format!("no events in {reply}"))?;
        all.extend(events.iter().cloned());
        match reply["end"].as_str() {
            Some(end) if !events.is_empty() => from = Some(end.to_owned()),
            _ => break,
        }
    }
    all.reverse();
    Ok(all)
}

/// The bodies of the `m.room.message` events of `events` that start with `prefix`, in order.
pub fn bodies_with(events: &[Value], prefix: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .filter_map(|e| e["content"]["body"].as_str())
        .filter(|b| b.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

/// How a numbered sequence (`"<prefix><i>"` for i in 0..n) came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SequenceCount {
    /// Distinct messages of the sequence that arrived.
    pub delivered: usize,
    /// Messages of the sequence missing.
    pub lost: usize,
    /// Extra copies.
    pub duplicated: usize,
    /// Messages whose number is not above the one before.
    pub out_of_order: usize,
}

impl std::fmt::Display for SequenceCount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "delivered {}, lost {}, duplicated {}, out of order {}",
            self.delivered, self.lost, self.duplicated, self.out_of_order
        )
    }
}

/// Counts the sequence `"<prefix><i>"`, i in 0..n, in `bodies` (in arrival order; bodies
/// without the prefix are ignored).
pub fn count_sequence<S: AsRef<str>>(bodies: &[S], prefix: &str, n: usize) -> SequenceCount {
    let mut seen: HashMap<usize, usize> = HashMap::new();
    let mut last: Option<usize> = None;
    let mut out_of_order = 0;
    for body in bodies {
        let Some(i) = body
            .as_ref()
            .strip_prefix(prefix)
            .and_then(|rest| rest.parse::<usize>().ok())
            .filter(|&i| i < n)
        else {
            continue;
        };
        *seen.entry(i).or_default() += 1;
        if last.is_some_and(|l| i <= l) {
            out_of_order += 1;
        }
        last = Some(i);
    }
    SequenceCount {
        delivered: seen.len(),
        lost: n - seen.len(),
        duplicated: seen.values().map(|c| c - 1).sum(),
        out_of_order,
    }
}

#[cfg(test)]
mod tests {
    use super::count_sequence;

    #[test]
    fn a_sequence_is_counted_for_loss_duplicates_and_order() {
        let c = count_sequence(&["m 0", "m 1", "m 3", "m 1", "x", "m 2"], "m ", 5);
        assert_eq!((c.delivered, c.lost, c.duplicated), (4, 1, 1));
        // Only the second "m 1" (after "m 3") is out of order.
        assert_eq!(c.out_of_order, 1);
    }
}
