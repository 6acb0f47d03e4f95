//! `bridge`: links chat rooms across protocols.
//!
//! `bridge run -c FILE` runs the bridge; `bridge check -c FILE` validates a config and lists
//! every problem; `bridge links …` lists and changes links while the bridge is stopped.

mod cli;
mod config;
mod links;
mod logging;
mod registry;
mod run;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli.command {
        cli::Command::Check { config } => config::check(&config),
        cli::Command::Run { config } => run::main(&config),
        cli::Command::Links { command } => links::main(command),
    }
}
