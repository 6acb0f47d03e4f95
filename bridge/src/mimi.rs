//! `bridge mimi`: tools for the MIMI protocol.

use std::process::ExitCode;

use anyhow::Context;
use bridge_mimi::content::{MimiContent, json};

use crate::cli::MimiCommand;

/// Runs a `mimi` subcommand.
pub fn main(command: MimiCommand) -> ExitCode {
    let result = match command {
        MimiCommand::Inspect { file, sender, room } => {
            inspect(&file, sender.as_deref(), room.as_deref())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints the message in `file` as JSON, then `message_id=<hex>`.
fn inspect(file: &std::path::Path, sender: Option<&str>, room: Option<&str>) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let content = MimiContent::decode(&bytes)
        .with_context(|| format!("{} is not a valid MIMI content message", file.display()))?;
    let pretty = serde_json::to_string_pretty(&json::to_json(&content))?;
    println!("{pretty}");
    let id = content
        .message_id_with(&bytes, sender, room)
        .with_context(|| {
            "the message ID needs the sender and room URIs: give --sender and --room".to_owned()
        })?;
    println!("message_id={id}");
    Ok(())
}
