//! `bridge run`: start everything, stop cleanly on SIGINT / SIGTERM.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use bridge_core::{AdapterId, Core, Link, RoomSettings, SledStore, Store};
use tokio::signal::unix::{SignalKind, signal};

use crate::{config, logging, registry};

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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
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
    if let Some(addr) = config.bridge.metrics_addr {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr)
            .install()
            .with_context(|| format!("cannot serve metrics on {addr}"))?;
        tracing::info!(%addr, "serving Prometheus metrics at /metrics");
    }
    let data_dir = &config.bridge.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data_dir {}", data_dir.display()))?;
    let store: Arc<dyn Store> = Arc::new(SledStore::open(data_dir)?);

    let mut builder = Core::builder(store)
        .settings(config::delivery(&config))
        .default_policy(config::policy(&config.delivery.degrade));
    for section in &config.adapters {
        let factory = registry::factory(&section.type_name)
            .with_context(|| format!("unknown adapter type {}", section.type_name))?;
        let adapter = factory
            .build(AdapterId::new(&section.id), &section.settings)
            .with_context(|| format!("cannot build adapter {}", section.id))?;
        builder = builder.adapter(section.id.as_str(), adapter);
    }
    for room in &config.rooms {
        let settings = RoomSettings {
            name: room.name.clone(),
            policy: room.degrade.as_ref().map(config::policy),
        };
        let links = room
            .links
            .iter()
            .map(|l| Link::new(l.adapter.as_str(), l.remote.as_str()))
            .collect();
        builder = builder.room(room.id.as_str(), settings, links);
    }
    let core = builder.start().await?;
    tracing::info!(
        adapters = config.adapters.len(),
        rooms = config.rooms.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "bridge started"
    );

    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
    core.shutdown().await;
    tracing::info!("stopped; the store is flushed");
    Ok(())
}
