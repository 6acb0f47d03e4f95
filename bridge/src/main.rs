//! `bridge`: links chat rooms across protocols.
//!
//! `bridge run -c FILE` runs the bridge (with metrics, health probes and the provisioning API
//! on `http_addr`, see [`ops`]); `bridge check -c FILE` validates a config and lists
//! every problem; `bridge links …` lists and changes links while the bridge is stopped;
//! `bridge generate-registration -c FILE` writes the Matrix appservice registration;
//! `bridge mimi inspect FILE` decodes a MIMI content message.

mod admin;
mod cli;
mod config;
mod links;
mod logging;
mod manage;
mod mimi;
mod ops;
mod registration;
mod registry;
mod run;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli.command {
        cli::Command::Check { config } => config::check(&config),
        cli::Command::Run { config } => {
            // A long-running process: fewer malloc arenas keep its memory lean (does not
            // return when it restarts the program with the setting).
            if let Err(e) = bridge_core::process::exec_with_malloc_arena_limit() {
                eprintln!(
                    "bridge: could not restart with MALLOC_ARENA_MAX set ({e}); going on without"
                );
            }
            run::main(&config)
        }
        cli::Command::Links { command } => links::main(command),
        cli::Command::Mimi { command } => mimi::main(command),
        cli::Command::GenerateRegistration {
            config,
            adapter,
            url,
            output,
            force,
        } => registration::main(&config, adapter.as_deref(), url.as_deref(), output, force),
    }
}
