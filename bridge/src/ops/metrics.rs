//! `GET /metrics`: the Prometheus recorder, its histogram buckets, and the rendering.

use std::sync::Arc;

use anyhow::Context;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::Ops;

/// Buckets of `bridge_delivery_latency_seconds`: from a few milliseconds (a healthy link) to an
/// hour (a network that was down), since the latency counts retries and outages.
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];
/// Buckets of `bridge_store_flush_seconds`: an fsync takes a fraction of a millisecond on a
/// quiet SSD, tens of milliseconds on a busy disk.
const FLUSH_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];
/// Buckets of every other histogram (one send, an adapter's own timings).
const DEFAULT_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Gauge set at each scrape: the dead letters kept in the store now (the counter
/// `bridge_dead_letters_total` only counts those made since the process started).
const DEAD_LETTERS_STORED: &str = "bridge_dead_letters_stored";
/// Gauge at 1, labelled with the version.
const BUILD_INFO: &str = "bridge_build_info";

/// Installs the global recorder: real Prometheus histograms (not summaries, which cannot be
/// aggregated across instances), with the metrics' help texts.
pub(super) fn install() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets(DEFAULT_BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("bridge_delivery_latency_seconds".to_owned()),
                LATENCY_BUCKETS,
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("bridge_store_flush_seconds".to_owned()),
                FLUSH_BUCKETS,
            )
        })
        .and_then(PrometheusBuilder::install_recorder)
        .context("cannot install the metrics recorder")?;
    bridge_core::telemetry::describe_metrics();
    metrics::describe_gauge!(
        DEAD_LETTERS_STORED,
        "Dead letters kept in the store, waiting to be retried (POST /api/v1/dead-letters/retry)"
    );
    metrics::describe_gauge!(BUILD_INFO, "1, labelled with the bridge's version");
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Ok(handle)
}

/// `GET /metrics`.
pub(super) async fn render(State(ops): State<Arc<Ops>>) -> impl IntoResponse {
    match ops.core.dead_letters() {
        Ok(letters) => metrics::gauge!(DEAD_LETTERS_STORED).set(letters.len() as f64),
        Err(e) => tracing::warn!(error = %e, "cannot count the dead letters"),
    }
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        ops.metrics.render(),
    )
}
