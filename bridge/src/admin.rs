//! Admin commands in management rooms (`[[bridge.management]]`): an admin named in
//! `bridge.admins` writes `status`, `link ROOM ADAPTER REMOTE`, `unlink ADAPTER REMOTE`,
//! `retry-dead-letters [ROOM]` or `help` (optionally after `!bridge `), and the bridge answers
//! in the same room with a notice of its own.
//!
//! The core hands over every text message posted in a management room, once
//! ([`bridge_core::management`]); here it is parsed ([`parse`]), checked against the admins
//! ([`Admins`]), run through the same operations as the provisioning API
//! ([`crate::manage::Manager`]) and answered ([`bridge_core::Core::send_notice`]). Everything
//! here is protocol-neutral.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::Arc;

use bridge_config::Config;
use bridge_core::{AdapterId, Link, ManagementMessage, RemoteUserId, Sender};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::manage::Manager;

/// The optional prefix of a command (as in other bridges' management rooms).
const PREFIX: &str = "!bridge";

/// The longest command accepted, in bytes; longer messages are not commands.
const MAX_COMMAND_LEN: usize = 2048;

/// What `help` answers.
const HELP: &str = "\
Commands (optionally after \"!bridge \"):
  status [ROOM]                    rooms, links, outbox depths, adapters, dead letters
  link ROOM ADAPTER REMOTE         link a native room to ROOM (created if new)
  unlink ADAPTER REMOTE            unlink a native room (its outbox is dropped)
  retry-dead-letters [ROOM]        put the dead letters (of ROOM) back into their outboxes
  help                             this text";

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `help`.
    Help,
    /// `status [ROOM]`.
    Status(Option<String>),
    /// `link ROOM ADAPTER REMOTE`.
    Link {
        /// The neutral room.
        room: String,
        /// The adapter of the native room.
        adapter: String,
        /// The native room.
        remote: String,
    },
    /// `unlink ADAPTER REMOTE`.
    Unlink {
        /// The adapter of the native room.
        adapter: String,
        /// The native room.
        remote: String,
    },
    /// `retry-dead-letters [ROOM]`.
    RetryDeadLetters(Option<String>),
}

/// Why a message is not a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Nothing but whitespace (or the prefix alone).
    Empty,
    /// The first word is no command.
    Unknown(String),
    /// A command with the wrong arguments: its usage.
    Usage(&'static str),
    /// Longer than [`MAX_COMMAND_LEN`].
    TooLong,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Empty => f.write_str("Empty command; try \"help\"."),
            Self::Unknown(word) => {
                write!(f, "Unknown command {word:?}; \"help\" lists the commands.")
            }
            Self::Usage(usage) => write!(f, "Usage: {usage}"),
            Self::TooLong => write!(
                f,
                "Too long for a command ({MAX_COMMAND_LEN} bytes at most); \"help\" lists the \
                 commands."
            ),
        }
    }
}

/// Parses a message: an optional `!bridge` prefix, a command word (case-insensitive) and its
/// arguments, separated by whitespace.
pub fn parse(text: &str) -> Result<Command, ParseError> {
    if text.len() > MAX_COMMAND_LEN {
        return Err(ParseError::TooLong);
    }
    let mut words = text.split_whitespace().peekable();
    if words.peek().is_some_and(|w| w.eq_ignore_ascii_case(PREFIX)) {
        words.next();
    }
    let Some(command) = words.next() else {
        return Err(ParseError::Empty);
    };
    let args: Vec<&str> = words.collect();
    let owned = |i: usize| args[i].to_owned();
    match command.to_ascii_lowercase().as_str() {
        "help" | "?" => Ok(Command::Help),
        "status" => match args.len() {
            0 => Ok(Command::Status(None)),
            1 => Ok(Command::Status(Some(owned(0)))),
            _ => Err(ParseError::Usage("status [ROOM]")),
        },
        "link" => match args.len() {
            3 => Ok(Command::Link {
                room: owned(0),
                adapter: owned(1),
                remote: owned(2),
            }),
            _ => Err(ParseError::Usage("link ROOM ADAPTER REMOTE")),
        },
        "unlink" => match args.len() {
            2 => Ok(Command::Unlink {
                adapter: owned(0),
                remote: owned(1),
            }),
            _ => Err(ParseError::Usage("unlink ADAPTER REMOTE")),
        },
        "retry-dead-letters" | "retry" => match args.len() {
            0 => Ok(Command::RetryDeadLetters(None)),
            1 => Ok(Command::RetryDeadLetters(Some(owned(0)))),
            _ => Err(ParseError::Usage("retry-dead-letters [ROOM]")),
        },
        _ => Err(ParseError::Unknown(command.chars().take(64).collect())),
    }
}

/// The admins named in the configuration: native users, each on one adapter.
#[derive(Debug, Clone, Default)]
pub struct Admins(HashSet<(AdapterId, RemoteUserId)>);

impl Admins {
    /// The admins of `config` (`bridge.admins`).
    pub fn from_config(config: &Config) -> Self {
        Self(
            config
                .bridge
                .admins
                .iter()
                .map(|a| {
                    (
                        AdapterId::new(a.adapter.as_str()),
                        RemoteUserId::new(a.user.as_str()),
                    )
                })
                .collect(),
        )
    }

    /// True when `sender` is an admin: the same user on the same adapter (exactly: the native
    /// ID the adapter reports, a Matrix user ID or a bare JID).
    pub fn allows(&self, sender: &Sender) -> bool {
        self.0
            .contains(&(sender.adapter.clone(), sender.user.clone()))
    }
}

/// Runs the admin commands of the management rooms.
#[derive(Debug)]
pub struct Commands {
    manager: Arc<Manager>,
    admins: Admins,
}

impl Commands {
    /// Commands run by `manager`, allowed to `admins`.
    pub fn new(manager: Arc<Manager>, admins: Admins) -> Self {
        Self { manager, admins }
    }

    /// The answer to a message in a management room.
    pub async fn answer(&self, message: &ManagementMessage) -> String {
        let sender = &message.sender;
        if !self.admins.allows(sender) {
            tracing::warn!(adapter = %sender.adapter, user = %sender.user, room = %message.room,
                "admin command refused: the sender is not in bridge.admins");
            return format!(
                "Sorry, {}: only the bridge's admins may give it commands.",
                sender.user
            );
        }
        let command = match parse(&message.text) {
            Ok(command) => command,
            Err(e) => return e.to_string(),
        };
        tracing::info!(adapter = %sender.adapter, user = %sender.user, room = %message.room,
            ?command, "admin command");
        self.run(command).await
    }

    /// Runs a command an admin gave; says what happened.
    pub async fn run(&self, command: Command) -> String {
        let m = &self.manager;
        match command {
            Command::Help => HELP.to_owned(),
            Command::Status(room) => self.status(room.as_deref()),
            Command::Link {
                room,
                adapter,
                remote,
            } => match m.link(&room, &adapter, &remote).await {
                Ok((room, link, true)) => {
                    tracing::info!(%link, %room, "admin command: linked");
                    format!("Linked {link} to room {room}.")
                }
                Ok((room, link, false)) => format!("{link} is already linked to room {room}."),
                Err(e) => format!("Cannot link: {e}"),
            },
            Command::Unlink { adapter, remote } => match m.unlink(&adapter, &remote).await {
                Ok(room) => {
                    tracing::info!(%adapter, %remote, %room, "admin command: unlinked");
                    format!("Unlinked {adapter}:{remote} from room {room}.")
                }
                Err(e) => format!("Cannot unlink: {e}"),
            },
            Command::RetryDeadLetters(room) => match m.retry_dead_letters(room.as_deref()).await {
                Ok(n) => {
                    tracing::info!(retried = n, ?room, "admin command: dead letters retried");
                    let letters = if n == 1 { "letter" } else { "letters" };
                    match room {
                        Some(room) => format!(
                            "Put {n} dead {letters} of room {room} back into their outboxes."
                        ),
                        None => format!("Put {n} dead {letters} back into their outboxes."),
                    }
                }
                Err(e) => format!("Cannot retry: {e}"),
            },
        }
    }

    fn status(&self, only: Option<&str>) -> String {
        let m = &self.manager;
        let mut rooms = m.rooms();
        if let Some(only) = only {
            rooms.retain(|r| r.room.as_str() == only);
            if rooms.is_empty() {
                return format!("No room {only}.");
            }
        }
        let letters = m.dead_letters();
        let mut out = String::new();
        if only.is_none() {
            let adapters: Vec<String> = m
                .core()
                .adapter_connections()
                .into_iter()
                .map(|(id, up)| format!("{id} {}", if up { "connected" } else { "DISCONNECTED" }))
                .collect();
            let _ = writeln!(out, "Adapters: {}", adapters.join(", "));
            let _ = writeln!(out, "Rooms: {}", rooms.len());
        }
        for room in &rooms {
            let name = room
                .name
                .as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default();
            let _ = writeln!(out, "Room {}{name}:", room.room);
            if room.links.is_empty() {
                let _ = writeln!(out, "  no links");
            }
            for l in &room.links {
                let origin = if l.from_config { ", from config" } else { "" };
                let _ = writeln!(out, "  {} (outbox {}{origin})", l.link, l.outbox);
            }
        }
        match letters {
            Ok(letters) => {
                let counted = letters
                    .iter()
                    .filter(|d| {
                        only.is_none_or(|r| d.room.as_ref().is_some_and(|x| x.as_str() == r))
                    })
                    .count();
                let _ = write!(out, "Dead letters: {counted}");
            }
            Err(e) => {
                let _ = write!(out, "Dead letters: unknown ({e})");
            }
        }
        out
    }
}

/// Reads the management rooms' messages and answers each, in order, until the sink closes or
/// the task is aborted.
pub fn spawn(commands: Commands, mut sink: mpsc::Receiver<ManagementMessage>) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(message) = sink.recv().await {
            let answer = commands.answer(&message).await;
            let room: &Link = &message.room;
            if let Err(e) = commands.manager.core().send_notice(room, &answer).await {
                tracing::warn!(%room, error = %e, "cannot answer an admin command");
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_with_or_without_the_prefix() {
        assert_eq!(parse("help"), Ok(Command::Help));
        assert_eq!(parse("  !bridge   HELP "), Ok(Command::Help));
        assert_eq!(parse("!Bridge status"), Ok(Command::Status(None)));
        assert_eq!(
            parse("status lobby"),
            Ok(Command::Status(Some("lobby".into())))
        );
        assert_eq!(
            parse("link dev matrix !abc:localhost"),
            Ok(Command::Link {
                room: "dev".into(),
                adapter: "matrix".into(),
                remote: "!abc:localhost".into()
            })
        );
        assert_eq!(
            parse("!bridge unlink xmpp dev@conference.localhost"),
            Ok(Command::Unlink {
                adapter: "xmpp".into(),
                remote: "dev@conference.localhost".into()
            })
        );
        assert_eq!(
            parse("retry-dead-letters"),
            Ok(Command::RetryDeadLetters(None))
        );
        assert_eq!(
            parse("retry-dead-letters lobby"),
            Ok(Command::RetryDeadLetters(Some("lobby".into())))
        );
    }

    #[test]
    fn mistakes_say_what_would_be_right() {
        assert_eq!(parse(""), Err(ParseError::Empty));
        assert_eq!(parse("!bridge"), Err(ParseError::Empty));
        assert_eq!(
            parse("hello there"),
            Err(ParseError::Unknown("hello".into()))
        );
        assert!(
            ParseError::Unknown("hello".into())
                .to_string()
                .contains("\"help\"")
        );
        assert_eq!(
            parse("link dev matrix"),
            Err(ParseError::Usage("link ROOM ADAPTER REMOTE"))
        );
        assert_eq!(
            parse("unlink xmpp"),
            Err(ParseError::Usage("unlink ADAPTER REMOTE"))
        );
        assert_eq!(parse("status a b"), Err(ParseError::Usage("status [ROOM]")));
        assert_eq!(
            parse(&format!("status {}", "x".repeat(MAX_COMMAND_LEN))),
            Err(ParseError::TooLong)
        );
    }

    fn sender(adapter: &str, user: &str) -> Sender {
        Sender {
            adapter: AdapterId::new(adapter),
            user: RemoteUserId::new(user),
            display_name: Some("Alice".into()),
            avatar: None,
        }
    }

    #[test]
    fn only_the_named_admins_are_allowed() {
        let config = bridge_config::parse(
            "[bridge]\ndata_dir = \"/x\"\nadmins = [\"matrix:@alice:localhost\", \
             \"xmpp:alice@localhost\"]\n[[adapter]]\nid = \"matrix\"\ntype = \"matrix\"\n\
             [[adapter]]\nid = \"xmpp\"\ntype = \"xmpp\"\n",
            "bridge.toml",
        )
        .expect("valid");
        let admins = Admins::from_config(&config);
        assert!(admins.allows(&sender("matrix", "@alice:localhost")));
        assert!(admins.allows(&sender("xmpp", "alice@localhost")));
        // The same name on another adapter, another user, a near miss: no.
        assert!(!admins.allows(&sender("xmpp", "@alice:localhost")));
        assert!(!admins.allows(&sender("matrix", "alice@localhost")));
        assert!(!admins.allows(&sender("matrix", "@bob:localhost")));
        assert!(!admins.allows(&sender("matrix", "@alice:localhost.evil")));
        assert!(!Admins::default().allows(&sender("matrix", "@alice:localhost")));
    }
}
