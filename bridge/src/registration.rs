//! `bridge generate-registration`: the Matrix appservice registration for the config.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Writes the registration of the config's Matrix appservice adapter.
pub fn main(
    config: &Path,
    adapter: Option<&str>,
    url: Option<&str>,
    output: Option<PathBuf>,
    force: bool,
) -> ExitCode {
    match write(config, adapter, url, output, force) {
        Ok(path) => {
            println!(
                "wrote {}; give it to the homeserver (Synapse: app_service_config_files) and restart it",
                path.display()
            );
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn write(
    config: &Path,
    adapter: Option<&str>,
    url: Option<&str>,
    output: Option<PathBuf>,
    force: bool,
) -> Result<PathBuf, String> {
    let loaded = crate::config::load(config).map_err(|d| d.to_string())?;
    let matrix: Vec<_> = loaded
        .adapters
        .iter()
        .filter(|a| a.type_name == "matrix")
        .filter(|a| adapter.is_none_or(|id| a.id == id))
        .collect();
    let appservices: Vec<_> = matrix
        .iter()
        .filter(|a| a.settings.get("mode").and_then(toml::Value::as_str) == Some("appservice"))
        .collect();
    let section = match appservices.as_slice() {
        [one] => **one,
        [] if !matrix.is_empty() => {
            let relays: Vec<&str> = matrix.iter().map(|a| a.id.as_str()).collect();
            return Err(format!(
                "{}: matrix adapter {} is in relay mode: a relay bot logs in as an ordinary \
                 user and needs no registration; only a section with mode = \"appservice\" has one",
                config.display(),
                relays.join(", ")
            ));
        }
        [] => {
            return Err(match adapter {
                Some(id) => format!("{}: no matrix appservice adapter {id:?}", config.display()),
                None => format!(
                    "{}: no matrix adapter with mode = \"appservice\"",
                    config.display()
                ),
            });
        }
        _ => {
            return Err(format!(
                "{}: several matrix appservice adapters; choose one with --adapter",
                config.display()
            ));
        }
    };
    let (path, yaml) =
        bridge_matrix::registration::for_section(&section.id, &section.settings, url)?;
    let path = output.unwrap_or(path);
    if path.exists() && !force {
        return Err(format!(
            "{} exists; --force replaces it (with new tokens the homeserver must be given)",
            path.display()
        ));
    }
    std::fs::write(&path, yaml).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}
