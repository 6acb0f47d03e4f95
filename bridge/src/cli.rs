//! The command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Links chat communities across protocols: an XMPP group chat, a Matrix room and a MIMI room
/// (and any protocol an adapter adds) behave as one room.
#[derive(Debug, Parser)]
#[command(name = "bridge", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the bridge until SIGINT or SIGTERM.
    Run {
        /// The configuration file.
        #[arg(short, long, value_name = "FILE", env = "BRIDGE_CONFIG")]
        config: PathBuf,
    },
    /// Check a configuration file and list every problem in it (exit status 1 if any).
    Check {
        /// The configuration file.
        #[arg(short, long, value_name = "FILE", env = "BRIDGE_CONFIG")]
        config: PathBuf,
    },
    /// Write the Matrix appservice registration for the config's appservice adapter, with new
    /// random tokens, to the `registration` path of its section (or --output). Give the file to
    /// the homeserver (Synapse: `app_service_config_files`).
    GenerateRegistration {
        /// The configuration file.
        #[arg(short, long, value_name = "FILE", env = "BRIDGE_CONFIG")]
        config: PathBuf,
        /// The adapter ID, when the config has more than one Matrix appservice adapter.
        #[arg(long, value_name = "ID")]
        adapter: Option<String>,
        /// Where the homeserver pushes transactions; default `http://` + the section's `listen`.
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// Where to write the file instead of the section's `registration` path.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Replace an existing file (its tokens change: give the homeserver the new file).
        #[arg(long)]
        force: bool,
    },
    /// List, add or remove links between neutral rooms and native rooms (bridge stopped).
    Links {
        /// What to do with links.
        #[command(subcommand)]
        command: LinksCommand,
    },
    /// Tools for the MIMI protocol.
    Mimi {
        /// What to do.
        #[command(subcommand)]
        command: MimiCommand,
    },
}

/// `bridge mimi …`
#[derive(Debug, Subcommand)]
pub enum MimiCommand {
    /// Decode a MIMI content message (draft-ietf-mimi-content-08, CBOR) and print it as JSON,
    /// then its message ID as the last line, `message_id=<hex>`. The ID is computed with the
    /// sender and room URIs of the message's extensions unless given here. Exit status 1 if the
    /// file is not a valid message or no URI is known.
    Inspect {
        /// The message, as raw CBOR bytes.
        file: PathBuf,
        /// The sender's URI for the message ID, e.g. `mimi://example.com/u/alice`.
        #[arg(long, value_name = "URI")]
        sender: Option<String>,
        /// The room's URI for the message ID, e.g. `mimi://example.com/r/lobby`.
        #[arg(long, value_name = "URI")]
        room: Option<String>,
    },
}

/// `bridge links …`
#[derive(Debug, Subcommand)]
pub enum LinksCommand {
    /// List every room with its links and the events waiting in each outbox.
    List {
        /// The configuration file.
        #[arg(short, long, value_name = "FILE", env = "BRIDGE_CONFIG")]
        config: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Link a native room to a neutral room (created if new). Persisted in the store.
    Add {
        /// The configuration file.
        #[arg(short, long, value_name = "FILE", env = "BRIDGE_CONFIG")]
        config: PathBuf,
        /// The neutral room, e.g. `lobby`.
        room: String,
        /// The adapter ID from the config, e.g. `xmpp`.
        adapter: String,
        /// The native room, e.g. `lobby@conference.example.org`.
        remote: String,
    },
    /// Unlink a native room. Links declared in the config file are changed there instead.
    Remove {
        /// The configuration file.
        #[arg(short, long, value_name = "FILE", env = "BRIDGE_CONFIG")]
        config: PathBuf,
        /// The adapter ID.
        adapter: String,
        /// The native room.
        remote: String,
    },
}
