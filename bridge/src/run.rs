//! `bridge run`: start everything (the HTTP listener of [`crate::ops`] first, when
//! `http_addr` is set), stop cleanly on SIGINT / SIGTERM.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use bridge_core::{AdapterId, Core, Link, RoomSettings, SledStore, Store};
use tokio::signal::unix::{SignalKind, signal};

use crate::manage::Manager;
use crate::{admin, config, logging, ops, registry};

/// Runs the bridge with the config at `path`.
pub fn main(path: &Path) -> ExitCode {
    let config = match config::load(path) {
        Ok(config) => config,
        Err(diagnostics) => {
            eprint!("{diagnostics}");
            return ExitCode::FAILURE;
        }
    };
    logging::init(&config.bridge);
    // One thread by default: the bridge's own work per message is small next to the cost of
    // waking threads to hand it around (docs/benchmarks.md, "## e2e").
    let runtime = match bridge_core::process::runtime(usize::from(config.bridge.worker_threads)) {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: bridge_config::Config) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    if config.bridge.metrics_addr.is_some() {
        tracing::warn!(
            "bridge.metrics_addr is the former name of http_addr, which also serves the health \
             probes (and the provisioning API when provisioning_token is set): rename it"
        );
    }
    // Before anything registers a metric, and so that a taken port stops the start at once.
    let http = match config.bridge.http_addr {
        Some(addr) => Some(ops::prepare(&config.bridge, addr).await?),
        None => None,
    };
    let data_dir = &config.bridge.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data_dir {}", data_dir.display()))?;
    let store: Arc<dyn Store> = Arc::new(SledStore::open(data_dir)?);

    let mut builder =
        Core::builder(store)
            .settings(config::delivery(&config))
            .default_policy(config::policy(&config.delivery.degrade))
            .keep_events((config.bridge.keep_days > 0).then(|| {
                std::time::Duration::from_secs(86_400 * u64::from(config.bridge.keep_days))
            }))
            .default_carry(config::carry(&config.delivery.carry));
    for section in &config.adapters {
        let factory = registry::factory(&section.type_name)
            .with_context(|| format!("unknown adapter type {}", section.type_name))?;
        let adapter = factory
            .build(AdapterId::new(&section.id), &section.settings)
            .with_context(|| format!("cannot build adapter {}", section.id))?;
        builder = builder.adapter(section.id.as_str(), adapter);
        if let Some(carry) = &section.carry {
            builder = builder.adapter_carry(section.id.as_str(), config::carry(carry));
        }
    }
    for room in &config.rooms {
        let settings = RoomSettings {
            name: room.name.clone(),
            policy: room.degrade.as_ref().map(config::policy),
            carry: room.carry.as_ref().map(config::carry),
        };
        let links = room
            .links
            .iter()
            .map(|l| Link::new(l.adapter.as_str(), l.remote.as_str()))
            .collect();
        builder = builder.room(room.id.as_str(), settings, links);
    }
    // Commands come from the management rooms and from direct conversations with the bridge
    // itself (its Matrix bot, its XMPP address), so the reader is always there.
    let (sink, management) = tokio::sync::mpsc::channel(bridge_core::management::SINK_CAPACITY);
    let rooms = config
        .bridge
        .management
        .iter()
        .map(|m| Link::new(m.adapter.as_str(), m.remote.as_str()));
    builder = builder.management(rooms, sink);
    let core = Arc::new(builder.start().await?);
    let manager = Arc::new(Manager::new(core.clone(), &config));
    let commands = admin::spawn(
        admin::Commands::new(manager.clone(), admin::Admins::from_config(&config)),
        management,
    );
    let http = http.map(|prepared| prepared.serve(manager.clone()));
    tracing::info!(
        adapters = config.adapters.len(),
        rooms = config.rooms.len(),
        management_rooms = config.bridge.management.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "bridge started"
    );

    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
    // The HTTP listener first: nothing may change the links while the core stops.
    if let Some(http) = http {
        http.stop().await;
    }
    commands.abort();
    let _ = commands.await;
    drop(manager);
    match sole_owner(core).await {
        Some(core) => {
            core.shutdown().await;
            tracing::info!("stopped; the store is flushed");
        }
        // Only if an HTTP request outlived its connection's 5 s of grace: everything accepted
        // is durable all the same (group commit), and the next start resumes the outboxes.
        None => tracing::error!("the core is still in use: stopped without the final flush"),
    }
    Ok(())
}

/// The core once the HTTP handlers have let go of it (they do when their connections close).
async fn sole_owner(mut core: Arc<Core>) -> Option<Core> {
    for _ in 0..50 {
        match Arc::try_unwrap(core) {
            Ok(core) => return Some(core),
            Err(shared) => core = shared,
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    None
}
