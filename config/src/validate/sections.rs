//! The `[[adapter]]` and `[[room]]` sections and the checks across them:
//! unique ids, links to known adapters, each native room linked once.

use std::collections::HashMap;

use super::fields::{Table, table_to_toml};
use super::{carry, degrade};
use crate::describe::show;
use crate::diagnostics::Diagnostics;
use crate::identifier::{
    ADAPTER_ID_MAX_LEN, ADAPTER_ID_PUNCTUATION, ROOM_ID_MAX_LEN, ROOM_ID_PUNCTUATION,
    check_identifier,
};
use crate::model::{
    AdapterSection, AdminSection, Carry, Delivery, LinkSection, ManagementSection, RoomSection,
};
use crate::suggest::did_you_mean;

/// Keys of `[[room]]`.
const ROOM_KEYS: &[&str] = &["id", "name", "degrade", "carry", "link"];
/// Keys of `[[room.link]]`.
const LINK_KEYS: &[&str] = &["adapter", "remote"];

/// Every adapter id found in the file (valid or not), with the path of
/// its first definition.
pub(crate) struct AdapterIds(Vec<(String, String)>);

impl AdapterIds {
    fn contains(&self, id: &str) -> bool {
        self.0.iter().any(|(known, _)| known == id)
    }

    fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(id, _)| id.as_str())
    }
}

/// `path (line N)`, or just `path` when the line is unknown.
fn with_line(d: &Diagnostics, path: &str) -> String {
    match d.source_map().locate(path) {
        Some(position) => format!("{path} (line {})", position.line),
        None => path.to_owned(),
    }
}

/// Reads the `[[adapter]]` sections. Sections lacking a usable `id` or
/// `type` are reported and left out of the returned list.
pub(crate) fn adapters(d: &mut Diagnostics, root: Table<'_>) -> (Vec<AdapterSection>, AdapterIds) {
    let mut sections = Vec::new();
    let mut ids = AdapterIds(Vec::new());
    for element in root.tables(d, "adapter") {
        let table = element.view();
        let id = table.string(d, "id", true);
        let type_name = table.non_empty_string(d, "type", true);
        if let Some(id) = id {
            if let Err(message) = check_identifier(id, ADAPTER_ID_MAX_LEN, ADAPTER_ID_PUNCTUATION) {
                d.push(table.path("id"), message);
            }
            if let Some((_, first)) = ids.0.iter().find(|(known, _)| known == id) {
                let first = with_line(d, first);
                d.push(
                    table.path("id"),
                    format!(
                        "duplicate adapter id {}; first defined at {first}",
                        show(id)
                    ),
                );
            } else {
                ids.0.push((id.to_owned(), table.path("id")));
            }
        }
        // What this adapter's rooms take part in at all: keys left out carry (the room's own
        // policy still applies on top).
        let carry = table
            .table(d, "carry")
            .map(|section| carry(d, section.view(), Carry::default()));
        let (Some(id), Some(type_name)) = (id, type_name) else {
            continue;
        };
        let mut settings = table_to_toml(table.table);
        settings.remove("id");
        settings.remove("type");
        settings.remove("carry");
        sections.push(AdapterSection {
            id: id.to_owned(),
            type_name: type_name.to_owned(),
            path: element.path.clone(),
            carry,
            settings,
        });
    }
    (sections, ids)
}

/// Reads the `[[room]]` sections and their links, checking them against
/// the adapters. Rooms without a usable `id` and links without a usable
/// `adapter` and `remote` are reported and left out.
pub(crate) fn rooms(
    d: &mut Diagnostics,
    root: Table<'_>,
    adapters: &AdapterIds,
    delivery: &Delivery,
) -> Vec<RoomSection> {
    let mut sections = Vec::new();
    // Room id → path of its `id` key.
    let mut room_ids: HashMap<String, String> = HashMap::new();
    // (adapter, remote) → (room id, path of the link's `remote`).
    let mut linked: HashMap<(String, String), (String, String)> = HashMap::new();
    for element in root.tables(d, "room") {
        let table = element.view();
        table.check_keys(d, ROOM_KEYS);
        let id = table.string(d, "id", true);
        if let Some(id) = id {
            if let Err(message) = check_identifier(id, ROOM_ID_MAX_LEN, ROOM_ID_PUNCTUATION) {
                d.push(table.path("id"), message);
            }
            if let Some(first) = room_ids.get(id) {
                let first = with_line(d, first);
                d.push(
                    table.path("id"),
                    format!("duplicate room id {}; first defined at {first}", show(id)),
                );
            } else {
                room_ids.insert(id.to_owned(), table.path("id"));
            }
        }
        let name = table.non_empty_string(d, "name", false);
        let degrade = table
            .table(d, "degrade")
            .map(|section| degrade(d, section.view(), delivery.degrade));
        let carry = table
            .table(d, "carry")
            .map(|section| carry(d, section.view(), delivery.carry));
        let room_id = id.unwrap_or_default();
        let mut links = Vec::new();
        for link in table.tables(d, "link") {
            if let Some(link) = self::link(d, link.view(), adapters, room_id, &mut linked) {
                links.push(link);
            }
        }
        if let Some(id) = id {
            sections.push(RoomSection {
                id: id.to_owned(),
                name: name.map(str::to_owned),
                degrade,
                carry,
                links,
                path: element.path.clone(),
            });
        }
    }
    sections
}

/// What to say about a reference to an adapter id that is not configured.
fn unknown_adapter(adapter: &str, adapters: &AdapterIds) -> String {
    match did_you_mean(adapter, adapters.names()) {
        Some(candidate) => format!(
            "unknown adapter {} (did you mean {candidate:?}?)",
            show(adapter)
        ),
        None if adapters.0.is_empty() => format!(
            "unknown adapter {}; no [[adapter]] is configured",
            show(adapter)
        ),
        None => {
            let names: Vec<&str> = adapters.names().collect();
            format!(
                "unknown adapter {}; configured adapters: {}",
                show(adapter),
                names.join(", ")
            )
        }
    }
}

/// Keys of `[[bridge.management]]`.
const MANAGEMENT_KEYS: &[&str] = &["adapter", "remote"];

/// Reads `bridge.admins` (`["ADAPTER:USER", …]`) and the `[[bridge.management]]` rooms,
/// checking them against the adapters and the rooms' links: a management room is never also
/// a bridged link.
pub(crate) fn admin(
    d: &mut Diagnostics,
    bridge: Table<'_>,
    adapters: &AdapterIds,
    rooms: &[RoomSection],
) -> (Vec<AdminSection>, Vec<ManagementSection>) {
    let mut admins = Vec::new();
    if let Some(item) = bridge.item("admins") {
        let path = bridge.path("admins");
        match item.as_array() {
            None => d.push(
                path,
                format!(
                    "expected an array of \"ADAPTER:USER\" strings, got {}",
                    crate::describe::describe(item)
                ),
            ),
            Some(array) => {
                for (index, value) in array.iter().enumerate() {
                    let at = crate::source_map::index_path(&path, index);
                    let Some(text) = value.as_str() else {
                        d.push(
                            at,
                            format!(
                                "expected a string \"ADAPTER:USER\", got {}",
                                crate::describe::describe_value(value)
                            ),
                        );
                        continue;
                    };
                    let Some((adapter, user)) = text.split_once(':') else {
                        d.push(
                            at,
                            format!(
                                "expected \"ADAPTER:USER\" (an adapter id, a colon, the user's \
                                 native ID, e.g. \"matrix:@alice:example.org\"), got {}",
                                show(text)
                            ),
                        );
                        continue;
                    };
                    let user = user.trim();
                    if !adapters.contains(adapter) {
                        d.push(at, unknown_adapter(adapter, adapters));
                    } else if user.is_empty() || user.chars().any(char::is_control) {
                        d.push(
                            at,
                            format!(
                                "the user after {:?} is empty or has control characters",
                                format!("{adapter}:")
                            ),
                        );
                    } else if admins
                        .iter()
                        .any(|a: &AdminSection| a.adapter == adapter && a.user == user)
                    {
                        d.push(at, format!("{} is listed twice", show(text)));
                    } else {
                        admins.push(AdminSection {
                            adapter: adapter.to_owned(),
                            user: user.to_owned(),
                        });
                    }
                }
            }
        }
    }
    let linked: HashMap<(&str, &str), (&str, &str)> = rooms
        .iter()
        .flat_map(|room| {
            room.links.iter().map(move |l| {
                (
                    (l.adapter.as_str(), l.remote.as_str()),
                    (room.id.as_str(), l.path.as_str()),
                )
            })
        })
        .collect();
    let mut management: Vec<ManagementSection> = Vec::new();
    for element in bridge.tables(d, "management") {
        let table = element.view();
        table.check_keys(d, MANAGEMENT_KEYS);
        let adapter = table.string(d, "adapter", true);
        let remote = table.non_empty_string(d, "remote", true);
        if let Some(adapter) = adapter
            && !adapters.contains(adapter)
        {
            d.push(table.path("adapter"), unknown_adapter(adapter, adapters));
            continue;
        }
        let (Some(adapter), Some(remote)) = (adapter, remote) else {
            continue;
        };
        if let Some((room, link_path)) = linked.get(&(adapter, remote)) {
            let first = with_line(d, &format!("{link_path}.remote"));
            d.push(
                table.path("remote"),
                format!(
                    "{} on adapter {} is bridged in room {} at {first}; a management room \
                     cannot also be a bridged room: use a room of its own for commands",
                    show(remote),
                    show(adapter),
                    show(room)
                ),
            );
            continue;
        }
        if let Some(first) = management
            .iter()
            .find(|m| m.adapter == adapter && m.remote == remote)
        {
            let first = with_line(d, &format!("{}.remote", first.path));
            d.push(
                table.path("remote"),
                format!("{} is already a management room at {first}", show(remote)),
            );
            continue;
        }
        management.push(ManagementSection {
            adapter: adapter.to_owned(),
            remote: remote.to_owned(),
            path: element.path.clone(),
        });
    }
    if !management.is_empty() && admins.is_empty() {
        d.push(
            bridge.path("admins"),
            "management rooms are configured but nobody may use them: name the admins, e.g. \
             admins = [\"matrix:@alice:example.org\"]",
        );
    }
    (admins, management)
}

fn link(
    d: &mut Diagnostics,
    table: Table<'_>,
    adapters: &AdapterIds,
    room_id: &str,
    linked: &mut HashMap<(String, String), (String, String)>,
) -> Option<LinkSection> {
    table.check_keys(d, LINK_KEYS);
    let adapter = table.string(d, "adapter", true);
    let remote = table.non_empty_string(d, "remote", true);
    let known = match adapter {
        Some(adapter) if adapters.contains(adapter) => true,
        Some(adapter) => {
            d.push(table.path("adapter"), unknown_adapter(adapter, adapters));
            false
        }
        None => false,
    };
    let (adapter, remote) = (adapter?, remote?);
    if known {
        let key = (adapter.to_owned(), remote.to_owned());
        if let Some((first_room, first_path)) = linked.get(&key) {
            let first = with_line(d, first_path);
            let room = if first_room.is_empty() {
                String::new()
            } else {
                format!("room {} ", show(first_room))
            };
            d.push(
                table.path("remote"),
                format!(
                    "{} on adapter {} is already linked in {room}at {first}",
                    show(remote),
                    show(adapter)
                ),
            );
        } else {
            linked.insert(key, (room_id.to_owned(), table.path("remote")));
        }
    }
    Some(LinkSection {
        adapter: adapter.to_owned(),
        remote: remote.to_owned(),
        path: table.path.to_owned(),
    })
}
