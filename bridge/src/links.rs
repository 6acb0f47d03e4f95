//! `bridge links`: the routing table, read and changed in the store while the bridge is stopped.

use std::process::ExitCode;

use anyhow::Context;
use std::sync::Arc;

use bridge_core::store::CombiningStore;
use bridge_core::{Link, RoomId, RoutingTable, SledStore, Store};

use crate::cli::LinksCommand;
use crate::config;

/// Runs a `links` subcommand.
pub fn main(command: LinksCommand) -> ExitCode {
    match run(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The store as `bridge run` opens it: through its journal, so that what a crash left there is
/// replayed first and what this command writes is journaled like the bridge's own writes.
fn open(path: &std::path::Path) -> anyhow::Result<(bridge_config::Config, CombiningStore)> {
    let config = config::load(path).map_err(|d| anyhow::anyhow!("invalid configuration:\n{d}"))?;
    let dir = &config.bridge.data_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let store = SledStore::open(dir).map_err(|e| {
        anyhow::anyhow!("{e}\nwhile the bridge runs, change links with its admin commands instead")
    })?;
    Ok((config, CombiningStore::open(Arc::new(store))?))
}

/// The stored routing table with the config's rooms merged in (as `bridge run` would).
fn table(config: &bridge_config::Config, store: &CombiningStore) -> anyhow::Result<RoutingTable> {
    let mut table = RoutingTable::load(store)?;
    for room in &config.rooms {
        for l in &room.links {
            // Only the in-memory table matters here (to refuse conflicts); `bridge run` stores
            // the config's links itself, so the batch is not applied.
            let _config_link_batch = table.add_link(
                &RoomId::new(room.id.as_str()),
                Link::new(l.adapter.as_str(), l.remote.as_str()),
            )?;
        }
    }
    Ok(table)
}

fn run(command: LinksCommand) -> anyhow::Result<()> {
    match command {
        LinksCommand::List { config, json } => {
            let (config, store) = open(&config)?;
            let table = table(&config, &store)?;
            let rooms: Vec<serde_json::Value> = table
                .rooms()
                .into_iter()
                .map(|room| {
                    serde_json::json!({
                        "room": room.id,
                        "name": room.settings.name,
                        "links": room.links.iter().map(|l| serde_json::json!({
                            "adapter": l.adapter,
                            "remote": l.remote,
                            "from_config": declared(&config, l),
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            if json {
                println!("{}", serde_json::Value::Array(rooms));
            } else {
                for room in table.rooms() {
                    println!("{}", room.id);
                    for l in &room.links {
                        let origin = if declared(&config, l) {
                            "config"
                        } else {
                            "runtime"
                        };
                        println!("  {:<16} {}  ({origin})", l.adapter.as_str(), l.remote);
                    }
                }
            }
            Ok(())
        }
        LinksCommand::Add {
            config,
            room,
            adapter,
            remote,
        } => {
            let (config, store) = open(&config)?;
            anyhow::ensure!(
                config.adapter(&adapter).is_some(),
                "no adapter {adapter:?} in the configuration"
            );
            let mut table = table(&config, &store)?;
            let batch = table.add_link(
                &RoomId::new(room.as_str()),
                Link::new(adapter.as_str(), remote.as_str()),
            )?;
            store.apply(batch)?;
            store.flush()?;
            println!("linked {adapter}:{remote} to room {room}");
            Ok(())
        }
        LinksCommand::Remove {
            config,
            adapter,
            remote,
        } => {
            let (config, store) = open(&config)?;
            let link = Link::new(adapter.as_str(), remote.as_str());
            anyhow::ensure!(
                !declared(&config, &link),
                "{link} is declared in the configuration file; remove it there"
            );
            let mut table = RoutingTable::load(&store)?;
            let (room, batch) = table.remove_link(&link)?;
            store.apply(batch)?;
            store.flush()?;
            println!("unlinked {link} from room {room}");
            Ok(())
        }
    }
}

fn declared(config: &bridge_config::Config, link: &Link) -> bool {
    config.rooms.iter().any(|r| {
        r.links
            .iter()
            .any(|l| l.adapter == link.adapter.as_str() && l.remote == link.remote.as_str())
    })
}
