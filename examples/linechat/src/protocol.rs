//! The linechat wire format, shared by the adapter and the [`crate::server`]: one [`Line`] per
//! line of UTF-8 text.
//!
//! ```text
//! client → server  HELLO <client-name>
//! server → client  WELCOME          then every event this name has not acknowledged, in order
//! server → client  EVENT <seq> <room> <sender> <reply-seq or -> <text>
//! client → server  ACK <seq>        taken durably: never sent to this name again
//! client → server  SEND <txn> <room> <sender> <reply-seq or -> <text>
//! server → client  OK <txn> <seq>   a repeated txn gets the same seq and creates nothing
//! server → client  ERR <reason>     the last line was refused; the connection stays
//! ```
//!
//! Fields are separated by single spaces; the last field of `EVENT` and `SEND`, the text, is the
//! rest of the line, with a newline written `\n` and a backslash `\\` ([`escape`], [`unescape`]).
//! Rooms, users, senders, client names and transaction IDs are non-empty and contain no
//! whitespace ([`is_word`]); a reply is a sequence number or `-`.

use std::fmt;
use std::io;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};

/// The longest line accepted, in bytes (newline included).
pub const MAX_LINE: u64 = 1 << 20;

/// One line of the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// Client → server, first: `HELLO <client-name>`.
    Hello {
        /// The client's name: what the server remembers acknowledgements under.
        name: String,
    },
    /// Server → client: `WELCOME`; unacknowledged events follow.
    Welcome,
    /// Server → client: `EVENT <seq> <room> <sender> <reply> <text>`.
    Event {
        /// The server-wide sequence number: the event's native ID.
        seq: u64,
        /// What was posted.
        post: Post,
    },
    /// Client → server: `ACK <seq>`, the client has durably taken the event.
    Ack {
        /// The event's sequence number.
        seq: u64,
    },
    /// Client → server: `SEND <txn> <room> <sender> <reply> <text>`, post as `sender`.
    Send {
        /// The client's transaction ID: a repeated one creates nothing new.
        txn: String,
        /// What to post.
        post: Post,
    },
    /// Server → client: `OK <txn> <seq>`, the `SEND` with this txn is event `seq`.
    Ok {
        /// The transaction ID of the `SEND`.
        txn: String,
        /// The sequence number of the event it created (the first time).
        seq: u64,
    },
    /// Server → client: `ERR <reason>`, the last line was refused.
    Err {
        /// Why.
        reason: String,
    },
}

/// What an `EVENT` or a `SEND` carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Post {
    /// The room ([`is_word`]).
    pub room: String,
    /// Who posts it ([`is_word`]).
    pub sender: String,
    /// The sequence number of the event it replies to.
    pub reply_to: Option<u64>,
    /// The text, unescaped.
    pub text: String,
}

/// Why a line could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Malformed {}

/// True for a valid room, user, sender, client name or txn: non-empty, without whitespace.
pub fn is_word(field: &str) -> bool {
    !field.is_empty() && !field.chars().any(char::is_whitespace)
}

/// Escapes a text for the end of a line: newline → `\n`, backslash → `\\` (and CR → `\r`).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

/// Reverses [`escape`]; an unknown escape `\x` stands for `x`, a lone final `\` for itself.
pub fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (c, if c == '\\' { chars.next() } else { None }) {
            ('\\', Some('n')) => out.push('\n'),
            ('\\', Some('r')) => out.push('\r'),
            ('\\', Some(escaped)) => out.push(escaped),
            (c, _) => out.push(c),
        }
    }
    out
}

/// Reads one line (up to and with its `\n`) into `buf`, at most [`MAX_LINE`] bytes per call;
/// returns 0 at the end of the stream. Cancel-safe (usable in `tokio::select!`): what was read
/// stays in `buf`, and the next call continues the line. The caller clears `buf` after a line.
pub async fn read_line(
    reader: &mut (impl AsyncBufRead + Unpin),
    buf: &mut Vec<u8>,
) -> io::Result<usize> {
    reader.take(MAX_LINE).read_until(b'\n', buf).await
}

fn word(field: Option<&str>) -> Result<String, Malformed> {
    match field {
        Some(field) if is_word(field) => Ok(field.to_owned()),
        _ => Err(Malformed(
            "a name or ID is missing, empty or contains whitespace",
        )),
    }
}

fn number(field: Option<&str>) -> Result<u64, Malformed> {
    let field = field.ok_or(Malformed("a sequence number is missing"))?;
    field
        .parse()
        .map_err(|_| Malformed("not a sequence number"))
}

fn post<'a>(mut fields: impl Iterator<Item = &'a str>) -> Result<Post, Malformed> {
    let (room, sender) = (word(fields.next())?, word(fields.next())?);
    let reply_to = match fields.next() {
        Some("-") => None,
        reply => Some(number(reply).map_err(|_| Malformed("reply must be a number or -"))?),
    };
    let text = unescape(fields.next().ok_or(Malformed("the text is missing"))?);
    Ok(Post {
        room,
        sender,
        reply_to,
        text,
    })
}

impl Line {
    /// Parses one line, with or without its line ending.
    pub fn parse(line: &str) -> Result<Line, Malformed> {
        let line = line.trim_end_matches(['\n', '\r']);
        let (command, rest) = line.split_once(' ').unwrap_or((line, ""));
        let mut fields = rest.splitn(5, ' ');
        Ok(match command {
            "HELLO" => Line::Hello {
                name: word(Some(rest))?,
            },
            "WELCOME" if rest.is_empty() => Line::Welcome,
            "EVENT" => Line::Event {
                seq: number(fields.next())?,
                post: post(fields)?,
            },
            "ACK" => Line::Ack {
                seq: number(Some(rest))?,
            },
            "SEND" => Line::Send {
                txn: word(fields.next())?,
                post: post(fields)?,
            },
            "OK" => {
                let (txn, seq) = rest.split_once(' ').ok_or(Malformed("OK <txn> <seq>"))?;
                Line::Ok {
                    txn: word(Some(txn))?,
                    seq: number(Some(seq))?,
                }
            }
            "ERR" => Line::Err {
                reason: unescape(rest),
            },
            _ => return Err(Malformed("unknown command")),
        })
    }
}

/// Writes the line without its newline, escaping the text.
impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Line::Hello { name } => write!(f, "HELLO {name}"),
            Line::Welcome => f.write_str("WELCOME"),
            Line::Event { seq, post } => write!(f, "EVENT {seq} {post}"),
            Line::Ack { seq } => write!(f, "ACK {seq}"),
            Line::Send { txn, post } => write!(f, "SEND {txn} {post}"),
            Line::Ok { txn, seq } => write!(f, "OK {txn} {seq}"),
            Line::Err { reason } => write!(f, "ERR {}", escape(reason)),
        }
    }
}

/// `<room> <sender> <reply> <escaped text>`.
impl fmt::Display for Post {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} ", self.room, self.sender)?;
        match self.reply_to {
            Some(seq) => write!(f, "{seq}")?,
            None => f.write_str("-")?,
        }
        write!(f, " {}", escape(&self.text))
    }
}
