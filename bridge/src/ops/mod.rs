//! The operations surface: one HTTP listener (`[bridge] http_addr`) serving
//!
//! - `GET /metrics`: Prometheus text ([`metrics`]);
//! - `GET /health/live`: 200 while the process serves requests;
//! - `GET /health/ready`: 200 when every adapter is connected, else 503 naming those that are
//!   not;
//! - `/api/v1/…`: the provisioning API ([`provisioning`]), when `provisioning_token` is set.
//!
//! docs/operations.md describes it for operators.

mod metrics;
mod provisioning;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bridge_config::BridgeSection;
use bridge_core::Core;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::manage::Manager;
use provisioning::Token;

/// What the HTTP handlers share.
struct Ops {
    core: Arc<Core>,
    metrics: PrometheusHandle,
    /// The provisioning API's bearer token; the API is off without one.
    token: Option<Token>,
    /// The operations the API runs (shared with the admin commands).
    manager: Arc<Manager>,
}

/// The listener, bound and with the metrics recorder installed, before the core starts (so
/// that a taken port fails the start at once, and every metric the core registers is
/// recorded).
#[derive(Debug)]
pub struct Prepared {
    listener: TcpListener,
    metrics: PrometheusHandle,
    token: Option<Token>,
}

/// Binds `bridge.http_addr`, installs the Prometheus recorder and reads the provisioning token.
pub async fn prepare(bridge: &BridgeSection, addr: SocketAddr) -> anyhow::Result<Prepared> {
    let token = match &bridge.provisioning_token {
        Some(secret) => Some(Token::resolve(secret)?),
        None => None,
    };
    let listener = TcpListener::bind(addr).await.with_context(|| {
        format!("cannot serve HTTP on {addr} (bridge.http_addr; is the bridge already running?)")
    })?;
    let metrics = metrics::install()?;
    Ok(Prepared {
        listener,
        metrics,
        token,
    })
}

impl Prepared {
    /// Starts serving requests about `core`.
    pub fn serve(self, manager: Arc<Manager>) -> HttpServer {
        let core = manager.core().clone();
        let addr = self.listener.local_addr().ok();
        let api = self.token.is_some();
        if api && addr.is_some_and(|a| !a.ip().is_loopback()) {
            tracing::warn!(
                "the provisioning API is served over plain HTTP on a non-loopback address: the \
                 token crosses the network in clear unless a TLS proxy is in front"
            );
        }
        let ops = Arc::new(Ops {
            core,
            metrics: self.metrics.clone(),
            token: self.token,
            manager,
        });
        let app = Router::new()
            .route("/metrics", get(metrics::render))
            .route("/health/live", get(live))
            .route("/health/ready", get(ready))
            .merge(provisioning::router())
            .fallback(not_found)
            .with_state(ops)
            .into_make_service_with_connect_info::<SocketAddr>();
        let (stop, stopped) = oneshot::channel::<()>();
        let listener = self.listener;
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stopped.await;
            });
            if let Err(e) = served.await {
                tracing::error!(error = %e, "the HTTP listener failed");
            }
        });
        // Histogram samples are folded into their buckets at each scrape, and here between
        // scrapes so that they never pile up when nobody scrapes.
        let handle = self.metrics;
        let upkeep = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                handle.run_upkeep();
            }
        });
        if let Some(addr) = addr {
            tracing::info!(
                http_addr = %addr,
                provisioning_api = api,
                "serving HTTP: /metrics, /health/live, /health/ready{}",
                if api { ", /api/v1" } else { "" }
            );
        }
        HttpServer { stop, task, upkeep }
    }
}

/// The running HTTP listener.
#[derive(Debug)]
pub struct HttpServer {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
    upkeep: JoinHandle<()>,
}

impl HttpServer {
    /// Stops accepting, lets requests in progress finish (for up to 5 s) and closes the
    /// connections.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.upkeep.abort();
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(5), &mut task)
            .await
            .is_err()
        {
            tracing::warn!("HTTP requests still running after 5 s: abandoned");
            task.abort();
            let _ = task.await;
        }
    }
}

/// `GET /health/live`: the process runs and serves requests.
async fn live() -> axum::Json<Value> {
    axum::Json(json!({ "live": true }))
}

/// The answer of `GET /health/ready`.
#[derive(Debug, Serialize)]
struct Readiness<'a> {
    ready: bool,
    /// The adapters that are not connected.
    not_connected: Vec<&'a str>,
    /// Every adapter: connected or not.
    adapters: BTreeMap<&'a str, bool>,
}

/// `GET /health/ready`: every adapter is connected (200), or which are not (503).
async fn ready(State(ops): State<Arc<Ops>>) -> Response {
    let adapters = ops.core.adapter_connections();
    let readiness = Readiness {
        ready: adapters.iter().all(|(_, connected)| *connected),
        not_connected: adapters
            .iter()
            .filter(|(_, connected)| !connected)
            .map(|(id, _)| id.as_str())
            .collect(),
        adapters: adapters
            .iter()
            .map(|(id, connected)| (id.as_str(), *connected))
            .collect(),
    };
    let status = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(readiness)).into_response()
}

/// Any other path.
async fn not_found() -> provisioning::ApiError {
    provisioning::ApiError::new(
        StatusCode::NOT_FOUND,
        "no such endpoint; see docs/operations.md",
    )
}
