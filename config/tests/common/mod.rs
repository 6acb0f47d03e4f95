//! Helpers shared by the integration tests.

#![allow(dead_code, clippy::unwrap_used)]

use bridge_config::{Config, Diagnostics};

/// The smallest valid `[bridge]` section.
pub const BRIDGE: &str = "[bridge]\ndata_dir = \"/tmp/bridge\"\n";

/// Parses text that must be valid.
pub fn ok(source: &str) -> Config {
    match bridge_config::parse(source, "bridge.toml") {
        Ok(config) => config,
        Err(diagnostics) => panic!("unexpected diagnostics:\n{diagnostics}"),
    }
}

/// Parses text that must be invalid.
pub fn diagnostics(source: &str) -> Diagnostics {
    match bridge_config::parse(source, "bridge.toml") {
        Ok(config) => panic!("expected diagnostics, got {config:#?}"),
        Err(diagnostics) => diagnostics,
    }
}

/// The one diagnostic of a text with exactly one problem, as
/// (path, line, message).
pub fn single(source: &str) -> (String, Option<usize>, String) {
    let diagnostics = diagnostics(source);
    assert_eq!(
        diagnostics.len(),
        1,
        "expected one diagnostic:\n{diagnostics}"
    );
    let d = &diagnostics.as_slice()[0];
    (d.path.clone(), d.line, d.message.clone())
}
