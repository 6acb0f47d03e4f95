//! The core's metrics, named and described in one place.
//!
//! The core records through the [`metrics`] facade; the binary installs a recorder (the
//! Prometheus exporter) and calls [`describe_metrics`] so that each metric carries its help text
//! and unit. docs/operations.md lists the same metrics for operators.

use crate::ids::AdapterId;

/// Every metric the core records, with its type, unit and meaning: `(name, kind, help)`.
/// Labels are named in the help text.
pub const METRICS: &[(&str, MetricKind, &str)] = &[
    (
        "bridge_events_in_total",
        MetricKind::Counter,
        "Events received from a network, by adapter, kind and outcome \
         (accepted, duplicate, echo, unrouted, rejected)",
    ),
    (
        "bridge_events_out_total",
        MetricKind::Counter,
        "Events delivered to a network, by target adapter and kind",
    ),
    (
        "bridge_events_skipped_total",
        MetricKind::Counter,
        "Events not delivered to a link because its network cannot carry them and the \
         policy drops them, by adapter and kind",
    ),
    (
        "bridge_events_degraded_total",
        MetricKind::Counter,
        "Events delivered as a fallback (quoted reply, \"* correction\", text line…), by \
         adapter and kind",
    ),
    (
        "bridge_ephemeral_dropped_total",
        MetricKind::Counter,
        "Typing notifications and read markers dropped because a link's queue was full, by \
         adapter",
    ),
    (
        "bridge_outbox_depth",
        MetricKind::Gauge,
        "Events waiting in a link's durable outbox, by adapter and remote (the native room)",
    ),
    (
        "bridge_delivery_latency_seconds",
        MetricKind::Histogram,
        "Time from an event's acceptance to its delivery, by target adapter (retries and \
         outages included)",
    ),
    (
        "bridge_send_seconds",
        MetricKind::Histogram,
        "Duration of one send to a network, successful or not, by adapter and kind",
    ),
    (
        "bridge_retries_total",
        MetricKind::Counter,
        "Sends that failed and will be retried, by adapter and kind",
    ),
    (
        "bridge_dead_letters_total",
        MetricKind::Counter,
        "Events given up for a link after a permanent failure or too many attempts, by adapter",
    ),
    (
        "bridge_adapter_connected",
        MetricKind::Gauge,
        "1 while the adapter reports itself connected to its network, else 0",
    ),
    (
        "bridge_adapter_disconnects_total",
        MetricKind::Counter,
        "Times the adapter lost its connection, by adapter",
    ),
    (
        "bridge_adapter_reconnects_total",
        MetricKind::Counter,
        "Times the adapter connected again after having been connected, by adapter",
    ),
    (
        "bridge_store_flushes_total",
        MetricKind::Counter,
        "Flushes of the durable store (each one fsync), for acknowledgements that wait and for \
         the writes nobody waits for",
    ),
    (
        "bridge_store_flush_seconds",
        MetricKind::Histogram,
        "Duration of one flush of the durable store",
    ),
    (
        "bridge_store_flush_errors_total",
        MetricKind::Counter,
        "Failed flushes of the durable store (acknowledgements wait until one succeeds)",
    ),
    (
        "bridge_store_pruned_total",
        MetricKind::Counter,
        "What the retention passes forgot ([bridge] keep_days), by table: events, native_ids, dead_letters",
    ),
];

/// The type of a metric in [`METRICS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up (until the process restarts).
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution, in seconds.
    Histogram,
}

/// Gives the installed recorder the help text (and unit) of every metric in [`METRICS`]. Call
/// it once, after installing the recorder.
pub fn describe_metrics() {
    for &(name, kind, help) in METRICS {
        match kind {
            MetricKind::Counter => metrics::describe_counter!(name, help),
            MetricKind::Gauge => metrics::describe_gauge!(name, help),
            MetricKind::Histogram => {
                metrics::describe_histogram!(name, metrics::Unit::Seconds, help);
            }
        }
    }
}

/// Registers an adapter's connection metrics at 0, so that they are exported (and alerts on
/// them work) before anything happens.
pub(crate) fn register_adapter(adapter: &AdapterId) {
    let label = adapter.to_string();
    metrics::gauge!("bridge_adapter_connected", "adapter" => label.clone()).set(0.0);
    for name in [
        "bridge_adapter_disconnects_total",
        "bridge_adapter_reconnects_total",
        "bridge_dead_letters_total",
    ] {
        metrics::counter!(name, "adapter" => label.clone()).increment(0);
    }
}
