//! MIMI content ↔ the neutral model of `bridge-core` (draft-ietf-mimi-content-08 §5).
//!
//! Both directions work on message IDs as opaque [`MessageId`]s: [`to_neutral`] gives an
//! [`EventKind<MessageId>`] (inside a [`Neutral`]) and [`from_neutral`] takes one, so the
//! adapter translates references with [`Neutral::map_refs`] / [`EventKind::map_refs`] and its
//! ID map, as the other adapters do with their native IDs.
//!
//! | MIMI | neutral |
//! |---|---|
//! | a body without `replaces` | [`EventKind::Message`]; `inReplyTo` is the reply, a `topicId` that is a message ID the thread |
//! | `replaces` + a body | [`EventKind::Edit`] of the first version (`replaces`) |
//! | `replaces` + NullPart, disposition render (or any but reaction) | [`EventKind::Redaction`] |
//! | disposition reaction + `inReplyTo` | [`EventKind::Reaction`] (the first reaction of a multipart) |
//! | `replaces` (the reaction) + NullPart, disposition reaction, `inReplyTo` | [`EventKind::Unreact`], `key` empty: the adapter knows it from the reaction it stored |
//! | ExternalPart | an [`Attachment`], with a [`MimiAttachment`] keeping the key, nonce, AAD, algorithms and hash |
//! | ExternalPart with disposition session | a link in the text |
//! | `expires` | [`Neutral::expires`] (the neutral model has no expiry) |
//! | a body of type `application/mimi-message-status` ([`super::status`]) | [`EventKind::ReadMarker`] up to the last message it reports read (nothing when none) |
//!
//! Bodies: `text/plain` is plain text (a leading `/me ` makes an emote), `text/markdown`
//! (GFM-MIMI) goes through the core's markdown parser and its `mimi://…/u/…` links are
//! mentions, `text/html` through the core's HTML sanitiser. A `chooseOne` multipart gives its
//! best alternative (markdown, then HTML, then plain text, then anything usable), `singleUnit`
//! and `processAll` all their parts, texts as separate paragraphs. Parts with the dispositions
//! profile, icon and preview, and inline binary parts (the neutral model has no inline bytes),
//! are left out.

use bridge_core::event::UnresolvedRef;
use bridge_core::richtext::Node;
use bridge_core::{
    AdapterId, Attachment, EventKind, Mention, MessageContent, MsgType, RemoteUserId, RichText,
};
use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

use super::id::hex;
use super::{
    ContentError, Disposition, Expiration, Extensions, ExternalPart, MessageId, MimiContent,
    NestedPart, Part, PartSemantics, Salt, status,
};

/// The media type of plain text bodies.
pub const PLAIN: &str = "text/plain;charset=utf-8";
/// The media type of markdown bodies (GFM-MIMI, §7.1.1 of the draft).
pub const MARKDOWN: &str = "text/markdown;variant=GFM-MIMI";

/// The most mentions read from one message.
pub const MAX_MENTIONS: usize = 256;

/// Why a message or event cannot be mapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NeutralError {
    /// A reaction or an unlike without `inReplyTo`: nothing says which message it is about.
    #[error("a {0} without inReplyTo")]
    NoTarget(&'static str),
    /// A neutral event MIMI content cannot carry (membership, typing, an unreact without the
    /// reaction's ID, an empty message…).
    #[error("MIMI content cannot carry {0}")]
    Unsupported(&'static str),
    /// A message status report that does not decode.
    #[error("a message status report: {0}")]
    Status(ContentError),
}

/// What [`to_neutral`] needs to know about the bridge.
#[derive(Debug, Clone)]
pub struct InboundCtx<'a> {
    /// The MIMI adapter's ID: the adapter of every user mentioned (the adapter turns mentions of
    /// its own puppets into the users they stand for).
    pub adapter: &'a AdapterId,
}

/// A MIMI message in neutral terms: the event, plus what MIMI says that the neutral model has
/// no place for. `R` is how it refers to other messages, [`MessageId`] as [`to_neutral`] gives
/// it.
#[derive(Debug, Clone, PartialEq)]
pub struct Neutral<R = MessageId> {
    /// What happened.
    pub kind: EventKind<R>,
    /// The MIMI details of each attachment of the kind's content, in the same order.
    pub attachments: Vec<MimiAttachment>,
    /// When the message should be deleted.
    pub expires: Option<Expiration>,
    /// A `topicId` that is not a message ID (one that is becomes the neutral thread).
    pub topic: Option<Vec<u8>>,
}

impl<R> Neutral<R> {
    /// Translates the references of the kind with `f`, as [`EventKind::map_refs`] does.
    pub fn map_refs<S>(self, f: impl FnMut(&R) -> Option<S>) -> Result<Neutral<S>, UnresolvedRef> {
        Ok(Neutral {
            kind: self.kind.map_refs(f)?,
            attachments: self.attachments,
            expires: self.expires,
            topic: self.topic,
        })
    }
}

/// An attachment as MIMI describes it: everything needed to download and decrypt it later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MimiAttachment {
    /// Its disposition (attachment, inline, reaction…).
    pub disposition: Disposition,
    /// The external part: URL, AEAD algorithm, key, nonce, AAD, hash algorithm and hash.
    pub part: ExternalPart,
}

/// Maps a message to the neutral model. `Ok(None)`: nothing to bridge (no part the neutral
/// model can show).
pub fn to_neutral(
    content: &MimiContent,
    ctx: &InboundCtx<'_>,
) -> Result<Option<Neutral<MessageId>>, NeutralError> {
    let (thread, topic) = match content.topic_id.as_slice() {
        [] => (None, None),
        bytes => match MessageId::from_slice("topicId", bytes) {
            Ok(id) => (Some(id), None),
            Err(_) => (None, Some(bytes.to_vec())),
        },
    };
    let neutral = |kind, attachments| {
        Some(Neutral {
            kind,
            attachments,
            expires: content.expires,
            topic: topic.clone(),
        })
    };
    if let Part::Single {
        content_type,
        content: report,
    } = &content.body.part
        && content_type.eq_ignore_ascii_case(status::MEDIA_TYPE)
    {
        // A read receipt: read up to the last message it says is read; other statuses
        // (delivered, unread, hidden…) have no neutral counterpart.
        let report = status::decode(report).map_err(NeutralError::Status)?;
        return Ok(status::read_up_to(&report)
            .and_then(|up_to| neutral(EventKind::ReadMarker { up_to }, Vec::new())));
    }
    if let Part::Null = content.body.part {
        let Some(target) = content.replaces else {
            return Ok(None);
        };
        let kind = if content.body.disposition == Disposition::REACTION {
            EventKind::Unreact {
                target: content
                    .in_reply_to
                    .ok_or(NeutralError::NoTarget("unlike"))?,
                key: String::new(),
                reaction: Some(target),
            }
        } else {
            EventKind::Redaction {
                target,
                reason: None,
            }
        };
        return Ok(neutral(kind, Vec::new()));
    }
    let mut found = Found::default();
    found.collect(&content.body, ctx);
    if content.body.disposition == Disposition::REACTION
        || (found.texts.is_empty() && found.attachments.is_empty() && !found.reactions.is_empty())
    {
        let target = content
            .in_reply_to
            .ok_or(NeutralError::NoTarget("reaction"))?;
        let Some(key) = found.reactions.into_iter().next() else {
            return Ok(None);
        };
        return Ok(neutral(EventKind::Reaction { target, key }, Vec::new()));
    }
    let (attachments, mimi): (Vec<_>, Vec<_>) = found.attachments.into_iter().unzip();
    let (msgtype, text) = joined(found.texts, found.emote, &found.descriptions);
    if text.body().is_empty() && attachments.is_empty() {
        return Ok(None);
    }
    let message = MessageContent {
        msgtype,
        text,
        attachments,
        mentions: found.mentions,
    };
    let kind = match content.replaces {
        Some(target) => EventKind::Edit {
            target,
            new: message,
        },
        None => EventKind::Message {
            content: message,
            reply_to: content.in_reply_to,
            thread,
        },
    };
    Ok(neutral(kind, mimi))
}

/// What the parts of a body give.
#[derive(Default)]
struct Found {
    texts: Vec<RichText>,
    /// The first text was an emote (`/me `).
    emote: bool,
    mentions: Vec<Mention>,
    attachments: Vec<(Attachment, MimiAttachment)>,
    descriptions: Vec<String>,
    reactions: Vec<String>,
}

impl Found {
    /// Reads a part and what is inside it (at most [`MAX_PART_DEPTH`](super::MAX_PART_DEPTH)
    /// deep, which decoding guarantees).
    fn collect(&mut self, part: &NestedPart, ctx: &InboundCtx<'_>) {
        let disposition = part.disposition;
        if matches!(
            disposition,
            Disposition::PROFILE | Disposition::ICON | Disposition::PREVIEW
        ) {
            return;
        }
        match &part.part {
            Part::Null => {}
            Part::Single {
                content_type,
                content,
            } => {
                let text = String::from_utf8_lossy(content);
                let kind = TextKind::of(content_type);
                if disposition == Disposition::REACTION {
                    if kind == Some(TextKind::Plain) && !text.trim().is_empty() {
                        self.reactions.push(text.trim().to_owned());
                    }
                    return;
                }
                let (text, emote) = match kind {
                    Some(TextKind::Plain) => match text.strip_prefix("/me ") {
                        Some(rest) => (RichText::plain(rest), true),
                        None => (RichText::plain(text), false),
                    },
                    Some(TextKind::Markdown) => {
                        let (md, emote) = match text.strip_prefix("/me ") {
                            Some(rest) => (rest, true),
                            None => (&*text, false),
                        };
                        self.add_mentions(md, ctx);
                        (RichText::from_markdown(md), emote)
                    }
                    Some(TextKind::Html) => (RichText::from_html(&text), false),
                    None => return,
                };
                if self.texts.is_empty() {
                    self.emote = emote;
                }
                if !text.body().is_empty() {
                    self.texts.push(text);
                }
            }
            Part::External(external) if disposition == Disposition::SESSION => {
                let label = if external.description.is_empty() {
                    external.url.clone()
                } else {
                    external.description.clone()
                };
                self.texts.push(RichText::from_nodes(vec![Node::Link {
                    href: external.url.clone(),
                    children: vec![Node::text(label)],
                }]));
            }
            Part::External(external) => {
                if disposition == Disposition::REACTION {
                    return; // An image or sound as a reaction: the neutral key is text.
                }
                if !external.description.is_empty() {
                    self.descriptions.push(external.description.clone());
                }
                self.attachments.push((
                    attachment(external),
                    MimiAttachment {
                        disposition,
                        part: external.clone(),
                    },
                ));
            }
            Part::Multi { semantics, parts } => match semantics {
                PartSemantics::ChooseOne => {
                    // The highest preference wins; on a tie, the sender's first choice.
                    let best = parts
                        .iter()
                        .enumerate()
                        .max_by_key(|(i, p)| (preference(p), std::cmp::Reverse(*i)));
                    if let Some((_, best)) = best {
                        self.collect(best, ctx);
                    }
                }
                PartSemantics::SingleUnit | PartSemantics::ProcessAll => {
                    for p in parts {
                        self.collect(p, ctx);
                    }
                }
            },
        }
    }

    /// Records the `mimi://…/u/…` links of a markdown text as mentions.
    fn add_mentions(&mut self, md: &str, ctx: &InboundCtx<'_>) {
        let mut open: Option<(String, String)> = None;
        for event in Parser::new_ext(md, Options::ENABLE_STRIKETHROUGH) {
            match event {
                Event::Start(Tag::Link { dest_url, .. }) if is_user_uri(&dest_url) => {
                    open = Some((dest_url.into_string(), String::new()));
                }
                Event::Text(text) | Event::Code(text) => {
                    if let Some((_, display)) = &mut open {
                        display.push_str(&text);
                    }
                }
                Event::End(TagEnd::Link) => {
                    if let Some((uri, display)) = open.take() {
                        let user = RemoteUserId::new(uri);
                        if self.mentions.len() < MAX_MENTIONS
                            && !self.mentions.iter().any(|m| m.user == user)
                        {
                            let display = display.trim().to_owned();
                            self.mentions.push(Mention {
                                adapter: ctx.adapter.clone(),
                                display: if display.is_empty() {
                                    user.as_str().to_owned()
                                } else {
                                    display
                                },
                                user,
                            });
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// How much [`to_neutral`] likes an alternative of a `chooseOne`.
fn preference(part: &NestedPart) -> u8 {
    match &part.part {
        Part::Single { content_type, .. } => match TextKind::of(content_type) {
            Some(TextKind::Markdown) => 4,
            Some(TextKind::Html) => 3,
            Some(TextKind::Plain) => 2,
            None => 0,
        },
        Part::External(_) | Part::Multi { .. } => 1,
        Part::Null => 0,
    }
}

/// The text media types the mapping reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TextKind {
    Plain,
    Markdown,
    Html,
}

impl TextKind {
    /// By the media type's type and subtype, whatever the parameters (a charset other than
    /// UTF-8 is read as UTF-8 anyway, lossily).
    fn of(content_type: &str) -> Option<Self> {
        let essence = content_type.split(';').next().unwrap_or_default().trim();
        if essence.eq_ignore_ascii_case("text/plain") {
            Some(TextKind::Plain)
        } else if essence.eq_ignore_ascii_case("text/markdown") {
            Some(TextKind::Markdown)
        } else if essence.eq_ignore_ascii_case("text/html") {
            Some(TextKind::Html)
        } else {
            None
        }
    }
}

/// Whether `uri` names a MIMI user (`mimi://DOMAIN/u/…`, draft-mahy-mimi-identity).
fn is_user_uri(uri: &str) -> bool {
    uri.strip_prefix("mimi://")
        .and_then(|rest| rest.split_once('/'))
        .is_some_and(|(domain, path)| !domain.is_empty() && path.starts_with("u/"))
}

/// The neutral attachment of an external part.
fn attachment(external: &ExternalPart) -> Attachment {
    let name = if external.filename.is_empty() {
        external
            .url
            .split(['?', '#'])
            .next()
            .and_then(|path| path.rsplit('/').next())
            .filter(|name| !name.is_empty())
            .unwrap_or("file")
            .to_owned()
    } else {
        external.filename.clone()
    };
    Attachment {
        name,
        url: external.url.clone(),
        mime: (!external.content_type.is_empty()).then(|| external.content_type.clone()),
        size: (external.size != 0).then_some(external.size),
        width: None,
        height: None,
    }
}

/// One text from the texts of a body, or the attachments' descriptions when there is none.
fn joined(texts: Vec<RichText>, emote: bool, descriptions: &[String]) -> (MsgType, RichText) {
    let msgtype = if emote { MsgType::Emote } else { MsgType::Text };
    let mut texts = texts;
    match texts.len() {
        0 => (MsgType::Text, RichText::plain(descriptions.join("\n"))),
        1 => (msgtype, texts.remove(0)),
        _ => {
            let mut nodes = Vec::new();
            for text in &texts {
                let tree = text.tree().into_owned();
                if tree.iter().all(|n| !n.is_block()) {
                    nodes.push(Node::Paragraph(tree));
                } else {
                    nodes.extend(tree);
                }
            }
            (msgtype, RichText::from_nodes(nodes))
        }
    }
}

/// What [`from_neutral`] needs to know.
#[derive(Clone, Copy)]
pub struct OutboundCtx<'a> {
    /// The sender's MIMI user URI, written as extension 1 (`senderUri`).
    pub sender_uri: &'a str,
    /// The room's MIMI URI, written as extension 2 (`roomUri`).
    pub room_uri: &'a str,
    /// The new message's salt ([`Salt::random`]).
    pub salt: Salt,
    /// The MIMI user URI of a mentioned user (a MIMI user's own URI, the puppet's for a user of
    /// another network); `None` leaves the mention as plain text.
    pub mention_uri: &'a dyn Fn(&Mention) -> Option<String>,
    /// MIMI details (key, nonce, hash…, from the upload) of the content's attachments, by
    /// position; an attachment without them is sent as an unencrypted external part.
    pub attachments: &'a [MimiAttachment],
}

impl std::fmt::Debug for OutboundCtx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundCtx")
            .field("sender_uri", &self.sender_uri)
            .field("room_uri", &self.room_uri)
            .field("salt", &self.salt)
            .field("attachments", &self.attachments)
            .finish_non_exhaustive()
    }
}

/// Maps a neutral event to a MIMI message. The caller may then set what the neutral event does
/// not say: `expires`, or the `inReplyTo` of an edit (which should repeat the original's).
///
/// * Message: markdown (GFM-MIMI) when the text is formatted or mentions someone, else plain
///   text (an emote starts with `/me `); attachments as external parts (with the
///   [`MimiAttachment`] given for them); several parts as a `processAll` multipart. The reply
///   is `inReplyTo`, the thread root the `topicId`.
/// * Edit: `replaces` and the new content. Reaction: disposition reaction with the key as plain
///   text and `inReplyTo`. Unreact: `replaces` the reaction (required), NullPart with
///   disposition reaction, `inReplyTo` the message. Redaction: `replaces` and a NullPart with
///   disposition render (the reason is lost).
/// * Anything else: [`NeutralError::Unsupported`].
pub fn from_neutral(
    kind: &EventKind<MessageId>,
    ctx: &OutboundCtx<'_>,
) -> Result<MimiContent, NeutralError> {
    let mut content = MimiContent {
        salt: ctx.salt,
        replaces: None,
        topic_id: Vec::new(),
        expires: None,
        in_reply_to: None,
        extensions: Extensions {
            sender_uri: Some(ctx.sender_uri.to_owned()),
            room_uri: Some(ctx.room_uri.to_owned()),
            ..Extensions::default()
        },
        body: NestedPart::new(Disposition::RENDER, Part::Null),
    };
    match kind {
        EventKind::Message {
            content: message,
            reply_to,
            thread,
        } => {
            content.body = body(message, ctx)?;
            content.in_reply_to = *reply_to;
            if let Some(thread) = thread {
                content.topic_id = thread.as_bytes().to_vec();
            }
        }
        EventKind::Edit { target, new } => {
            content.replaces = Some(*target);
            content.body = body(new, ctx)?;
        }
        EventKind::Reaction { target, key } => {
            content.in_reply_to = Some(*target);
            content.body = NestedPart::new(
                Disposition::REACTION,
                Part::Single {
                    content_type: PLAIN.to_owned(),
                    content: key.as_bytes().to_vec(),
                },
            );
        }
        EventKind::Unreact {
            target, reaction, ..
        } => {
            content.replaces = Some(reaction.ok_or(NeutralError::Unsupported(
                "an unreact without the reaction's ID",
            ))?);
            content.in_reply_to = Some(*target);
            content.body.disposition = Disposition::REACTION;
        }
        EventKind::Redaction { target, .. } => {
            content.replaces = Some(*target);
        }
        EventKind::ReadMarker { up_to } => {
            content.body = NestedPart::new(
                Disposition::SESSION,
                Part::Single {
                    content_type: status::MEDIA_TYPE.to_owned(),
                    content: status::encode(&[(*up_to, status::Status::READ)]),
                },
            );
        }
        other => return Err(NeutralError::Unsupported(other.name())),
    }
    Ok(content)
}

/// The body of a message's content.
fn body(message: &MessageContent, ctx: &OutboundCtx<'_>) -> Result<NestedPart, NeutralError> {
    let mut parts = Vec::new();
    if !message.text.body().is_empty() {
        let emote = if message.msgtype == MsgType::Emote {
            "/me "
        } else {
            ""
        };
        let (markdown, mentioned) = markdown_with_mentions(message, ctx);
        let (content_type, text) = if message.text.is_formatted() || mentioned {
            (MARKDOWN, format!("{emote}{markdown}"))
        } else {
            (PLAIN, format!("{emote}{}", message.text.body()))
        };
        parts.push(NestedPart::new(
            Disposition::RENDER,
            Part::Single {
                content_type: content_type.to_owned(),
                content: text.into_bytes(),
            },
        ));
    }
    for (i, file) in message.attachments.iter().enumerate() {
        let (disposition, mut part) = match ctx.attachments.get(i) {
            Some(mimi) => (mimi.disposition, mimi.part.clone()),
            None => (Disposition::ATTACHMENT, ExternalPart::default()),
        };
        // The upload's URL (where the encrypted copy is) wins over the source's.
        if part.url.is_empty() {
            part.url.clone_from(&file.url);
        }
        part.filename.clone_from(&file.name);
        if let Some(mime) = &file.mime {
            part.content_type.clone_from(mime);
        }
        if let Some(size) = file.size
            && part.size == 0
        {
            part.size = size;
        }
        parts.push(NestedPart::new(disposition, Part::External(part)));
    }
    match parts.len() {
        0 => Err(NeutralError::Unsupported("an empty message")),
        1 => Ok(parts.remove(0)),
        _ => Ok(NestedPart::new(
            Disposition::RENDER,
            Part::Multi {
                semantics: PartSemantics::ProcessAll,
                parts,
            },
        )),
    }
}

/// The text as GFM-MIMI markdown, with each mention node whose user has a MIMI URI written as a
/// link to that URI; `true` if there was one. The core's tree allows no `mimi:` links, so
/// mentions become links to a placeholder that is replaced in the rendered markdown.
fn markdown_with_mentions(message: &MessageContent, ctx: &OutboundCtx<'_>) -> (String, bool) {
    let prefix = format!("https://mention.invalid/{}/", hex(&ctx.salt.0));
    let mut uris: Vec<String> = Vec::new();
    let tree = replace_mentions(&message.text.tree(), &mut |id, display| {
        let mention = message
            .mentions
            .iter()
            .find(|m| m.user.as_str() == id || m.display == display)?;
        let uri = (ctx.mention_uri)(mention)?;
        uris.push(uri);
        Some(format!("{prefix}{}", uris.len() - 1))
    });
    if uris.is_empty() {
        return (message.text.to_markdown(), false);
    }
    let mut markdown = RichText::from_nodes(tree).to_markdown();
    // Last first, so that placeholder 1 is not replaced inside placeholder 10.
    for (i, uri) in uris.iter().enumerate().rev() {
        markdown = markdown.replace(
            &format!("]({prefix}{i})"),
            &format!("]({})", link_destination(uri)),
        );
    }
    (markdown, true)
}

/// `nodes` with every mention that `href` gives a link target for replaced by that link.
fn replace_mentions(
    nodes: &[Node],
    href: &mut impl FnMut(&str, &str) -> Option<String>,
) -> Vec<Node> {
    nodes
        .iter()
        .map(|node| match node {
            Node::Mention { id, text } => match href(id, text) {
                Some(href) => Node::Link {
                    href,
                    children: vec![Node::text(text.clone())],
                },
                None => node.clone(),
            },
            Node::Bold(c) => Node::Bold(replace_mentions(c, href)),
            Node::Italic(c) => Node::Italic(replace_mentions(c, href)),
            Node::Strikethrough(c) => Node::Strikethrough(replace_mentions(c, href)),
            Node::BlockQuote(c) => Node::BlockQuote(replace_mentions(c, href)),
            Node::Paragraph(c) => Node::Paragraph(replace_mentions(c, href)),
            Node::BulletList(items) => {
                Node::BulletList(items.iter().map(|i| replace_mentions(i, href)).collect())
            }
            Node::OrderedList { start, items } => Node::OrderedList {
                start: *start,
                items: items.iter().map(|i| replace_mentions(i, href)).collect(),
            },
            other => other.clone(),
        })
        .collect()
}

/// A URI as a markdown link destination (CommonMark §6.3).
fn link_destination(uri: &str) -> String {
    let angle = uri
        .chars()
        .any(|c| c.is_whitespace() || matches!(c, '(' | ')' | '<' | '>'));
    let mut out = String::with_capacity(uri.len() + 2);
    if angle {
        out.push('<');
    }
    for c in uri.chars() {
        if matches!(c, '\\' | '&' | '<' | '>') {
            out.push('\\');
        }
        out.push(c);
    }
    if angle {
        out.push('>');
    }
    out
}

#[cfg(test)]
mod tests;
