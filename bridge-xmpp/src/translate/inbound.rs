//! Stanza → [`Parsed`].

use std::str::FromStr;

use bridge_core::richtext::html::escape;
use bridge_core::{Attachment, MessageContent, MsgType, RichText};
use xmpp_parsers::date::DateTime;
use xmpp_parsers::minidom::rxml::Namespace;
use xmpp_parsers::minidom::{Element, Node};

use super::{
    ChatState, Content, ENCRYPTED, KNOWN, Limits, MAX_ATTACHMENTS, MAX_REACTION_BYTES,
    MAX_REACTIONS, MessageType, ParseError, Parsed, Reply, StanzaId, ns,
};

/// HTML elements without end tag.
const VOID: &[&str] = &["br", "hr", "img"];

/// Reads a `<message/>` stanza.
///
/// The main [`Content`] is the first that applies of: nothing for an error bounce; a
/// moderation; a retraction; a correction; reactions; a message (a body or attachments); a
/// groupchat subject without body; a [`build_custom`](super::build_custom) JSON container; the
/// first payload outside the namespaces this module knows, as [`Content::Custom`]; nothing.
///
/// In a message, XEP-0428 fallbacks for a reply are cut from the body (code point ranges; a
/// reply fallback without range cuts the leading `>` quote lines), a leading `/me ` makes it an
/// emote, and trailing body lines that repeat an attachment's URL are dropped. Formatting comes
/// from XHTML-IM when present and consistent with the body (for an emote it starts with `/me `,
/// for a quoted reply with the `<blockquote>` of the quote; both are cut), else from XEP-0393
/// styling, unless the message is marked `<unstyled/>`.
///
/// Forwarded messages (carbons, MAM results) are not unwrapped: pass the inner message. The
/// element should come from a reader that limits nesting ([`crate::component::MAX_DEPTH`]):
/// this function walks iteratively, but minidom serialises custom payloads recursively.
pub fn parse_message(el: &Element, limits: &Limits) -> Result<Parsed, ParseError> {
    if !el.is("message", ns::CLIENT) {
        return Err(ParseError::NotAMessage);
    }
    let msg_type = MessageType::from_attr(el.attr("type"));
    let mut parsed = Parsed {
        id: owned(el.attr("id")),
        from: owned(el.attr("from")),
        to: owned(el.attr("to")),
        msg_type,
        origin_id: None,
        stanza_ids: Vec::new(),
        occupant_id: None,
        delay_ms: None,
        content: Content::None,
        chat_state: None,
        displayed: None,
    };
    for child in el.children() {
        if child.is("origin-id", ns::SID) {
            parsed.origin_id = parsed.origin_id.take().or(owned(child.attr("id")));
        } else if child.is("stanza-id", ns::SID) {
            if let (Some(id), Some(by)) = (child.attr("id"), child.attr("by")) {
                parsed.stanza_ids.push(StanzaId {
                    id: id.to_owned(),
                    by: by.to_owned(),
                });
            }
        } else if child.is("occupant-id", ns::OCCUPANT_ID) {
            parsed.occupant_id = parsed.occupant_id.take().or(owned(child.attr("id")));
        } else if child.is("delay", ns::DELAY) {
            parsed.delay_ms = parsed.delay_ms.or_else(|| stamp_ms(child.attr("stamp")?));
        }
    }
    // An error bounce carries (parts of) what we sent: nothing in it is news.
    if msg_type == MessageType::Error {
        return Ok(parsed);
    }
    parsed.chat_state = el
        .children()
        .filter(|c| c.has_ns(ns::CHATSTATES))
        .find_map(|c| ChatState::from_name(c.name()));
    parsed.displayed = child(el, "displayed", ns::MARKERS).and_then(|d| owned(d.attr("id")));
    parsed.content = content(el, msg_type, limits)?;
    Ok(parsed)
}

fn content(el: &Element, msg_type: MessageType, limits: &Limits) -> Result<Content, ParseError> {
    if let Some(moderation) = moderation(el)? {
        return Ok(moderation);
    }
    if let Some(id) = retraction(el)? {
        return Ok(Content::Retraction { id });
    }
    if let Some(method) = encryption(el) {
        return Ok(Content::Encrypted { method });
    }
    if let Some(replace) = child(el, "replace", ns::CORRECT) {
        let replace_id = required(replace, "replace", "id")?;
        let new = message_content(el, limits)?.map(|(c, _)| c);
        return Ok(Content::Correction {
            replace_id,
            new: new.unwrap_or_default(),
        });
    }
    if let Some(reactions) = child(el, "reactions", ns::REACTIONS) {
        return Ok(Content::Reactions {
            to_id: required(reactions, "reactions", "id")?,
            keys: reaction_keys(reactions)?,
        });
    }
    if let Some((content, reply)) = message_content(el, limits)? {
        let thread = child(el, "thread", ns::CLIENT)
            .filter(|t| text_len(t) <= limits.max_body_bytes)
            .map(Element::text);
        return Ok(Content::Message {
            content,
            reply,
            thread,
        });
    }
    if msg_type == MessageType::Groupchat
        && let Some(subject) = child(el, "subject", ns::CLIENT)
    {
        return Ok(Content::Subject(bounded_text(
            subject,
            limits.max_body_bytes,
            "subject",
        )?));
    }
    if let Some(custom) = child(el, "json", ns::JSON).and_then(|j| json_custom(j, limits)) {
        return custom;
    }
    let unknown = el
        .children()
        .find(|c| !c.has_ns(ns::CLIENT) && !KNOWN.iter().any(|known| c.has_ns(*known)));
    match unknown {
        Some(payload) => Ok(Content::Custom {
            event_type: format!("xmpp:{}#{}", payload.ns(), payload.name()),
            content: serde_json::json!({ "xml": serialise(payload, limits.max_markup_bytes)? }),
        }),
        None => Ok(Content::None),
    }
}

/// The end-to-end encryption of a message: a known encrypted payload ([`ENCRYPTED`]), else a
/// XEP-0380 `<encryption/>` declaring one (its `name`, else its `namespace`).
fn encryption(el: &Element) -> Option<String> {
    let known = el.children().find_map(|c| {
        ENCRYPTED
            .iter()
            .find(|(namespace, name, _)| c.is(*name, *namespace))
            .map(|(_, _, method)| (*method).to_owned())
    });
    known.or_else(|| {
        let declared = child(el, "encryption", ns::EME)?;
        let method = declared
            .attr("name")
            .or(declared.attr("namespace"))
            .filter(|m| !m.trim().is_empty())
            .unwrap_or("unknown");
        Some(method.chars().take(64).collect())
    })
}

/// XEP-0425: the current `<retract id><moderated by/><reason/></retract>`, else the older
/// `<apply-to id><moderated by><retract/><reason/></moderated></apply-to>`.
fn moderation(el: &Element) -> Result<Option<Content>, ParseError> {
    let current = el.children().find_map(|r| {
        let moderated = r
            .is("retract", ns::RETRACT)
            .then(|| child(r, "moderated", ns::MODERATE))??;
        Some((r, moderated, child(r, "reason", ns::RETRACT)))
    });
    let older = || {
        el.children().find_map(|a| {
            let moderated = a
                .is("apply-to", ns::FASTEN)
                .then(|| child(a, "moderated", ns::MODERATE_0))??;
            Some((a, moderated, child(moderated, "reason", ns::MODERATE_0)))
        })
    };
    let Some((carrier, moderated, reason)) = current.or_else(older) else {
        return Ok(None);
    };
    Ok(Some(Content::Moderation {
        id: required(carrier, carrier_name(carrier), "id")?,
        by: owned(moderated.attr("by")),
        reason: reason.map(Element::text).filter(|r| !r.trim().is_empty()),
    }))
}

/// XEP-0424: the current `<retract id/>`, else the older `<apply-to id><retract/></apply-to>`.
fn retraction(el: &Element) -> Result<Option<String>, ParseError> {
    let carrier = child(el, "retract", ns::RETRACT).or_else(|| {
        el.children()
            .find(|a| a.is("apply-to", ns::FASTEN) && a.has_child("retract", ns::RETRACT_0))
    });
    carrier
        .map(|c| required(c, carrier_name(c), "id"))
        .transpose()
}

fn carrier_name(el: &Element) -> &'static str {
    if el.name() == "retract" {
        "retract"
    } else {
        "apply-to"
    }
}

fn reaction_keys(reactions: &Element) -> Result<Vec<String>, ParseError> {
    let mut keys: Vec<String> = Vec::new();
    for reaction in reactions
        .children()
        .filter(|r| r.is("reaction", ns::REACTIONS))
    {
        if text_len(reaction) > MAX_REACTION_BYTES {
            continue;
        }
        let key = reaction.text();
        let key = key.trim();
        if key.is_empty() || keys.iter().any(|k| k == key) {
            continue;
        }
        if keys.len() == MAX_REACTIONS {
            return Err(ParseError::TooLarge {
                what: "reactions",
                limit: MAX_REACTIONS,
            });
        }
        keys.push(key.to_owned());
    }
    Ok(keys)
}

/// The message content (body, formatting, attachments) and reply, or `None` when there is
/// neither a body nor an attachment.
fn message_content(
    el: &Element,
    limits: &Limits,
) -> Result<Option<(MessageContent, Option<Reply>)>, ParseError> {
    let attachments = attachments(el, limits)?;
    let body = body(el);
    if body.is_none() && attachments.is_empty() {
        return Ok(None);
    }
    let full = match body {
        Some(body) => bounded_text(body, limits.max_body_bytes, "body")?,
        None => String::new(),
    };
    let reply = child(el, "reply", ns::REPLY).and_then(|r| {
        Some(Reply {
            id: r.attr("id")?.to_owned(),
            to: owned(r.attr("to")),
        })
    });

    let unquoted = strip_reply_fallback(el, &full);
    let quote_cut = unquoted.len() != full.len();
    let (msgtype, text) = match unquoted.strip_prefix("/me ") {
        Some(rest) => (MsgType::Emote, rest),
        None => (MsgType::Text, &*unquoted),
    };
    let text = strip_urls(text, &attachments);
    let text = (!text.trim().is_empty())
        .then(|| {
            xhtml(
                el,
                msgtype == MsgType::Emote,
                quote_cut,
                limits.max_markup_bytes,
            )
        })
        .flatten()
        .filter(|html| !html.body().trim().is_empty())
        .unwrap_or_else(|| {
            if el.has_child("unstyled", ns::STYLING) {
                RichText::plain(text)
            } else {
                RichText::from_styling(text)
            }
        });
    Ok(Some((
        MessageContent {
            msgtype,
            text,
            attachments,
            mentions: Vec::new(),
        },
        reply,
    )))
}

/// The body to read: the one in the message's language (or without one), else the first.
fn body(el: &Element) -> Option<&Element> {
    let bodies = || el.children().filter(|b| b.is("body", ns::CLIENT));
    bodies()
        .find(|b| lang(b).or(lang(el)) == lang(el))
        .or_else(|| bodies().next())
}

fn lang(el: &Element) -> Option<&str> {
    el.attr_ns(&Namespace::XML, "lang")
}

/// XEP-0066 attachments, named after the last segment of their URL.
fn attachments(el: &Element, limits: &Limits) -> Result<Vec<Attachment>, ParseError> {
    let mut out = Vec::new();
    for x in el.children().filter(|x| x.is("x", ns::OOB)) {
        let Some(url) = child(x, "url", ns::OOB) else {
            continue;
        };
        let url = bounded_text(url, limits.max_body_bytes, "attachment URL")?;
        let url = url.trim();
        if url.is_empty() {
            continue;
        }
        if out.len() == MAX_ATTACHMENTS {
            return Err(ParseError::TooLarge {
                what: "attachments",
                limit: MAX_ATTACHMENTS,
            });
        }
        out.push(Attachment {
            name: file_name(url),
            url: url.to_owned(),
            ..Attachment::default()
        });
    }
    Ok(out)
}

/// The last path segment of a URL, percent-decoded; `file` when there is none.
fn file_name(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or_default();
    let path = path.split_once("://").map_or(path, |(_, rest)| rest);
    let segment = path
        .split_once('/')
        .and_then(|(_, p)| p.rsplit('/').next())
        .unwrap_or_default();
    let name = percent_decode(segment);
    if name.trim().is_empty() {
        "file".to_owned()
    } else {
        name.replace(['/', '\\'], "_")
    }
}

fn percent_decode(text: &str) -> String {
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        let decoded = (byte == b'%')
            .then(|| std::str::from_utf8(tail.get(..2)?).ok())
            .flatten()
            .filter(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match decoded {
            Some(decoded) => {
                out.push(decoded);
                rest = tail.get(2..).unwrap_or_default();
            }
            None => {
                out.push(byte);
                rest = tail;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Cuts XEP-0428 reply fallbacks from the body: their code point ranges, or the leading quote
/// lines when a reply fallback gives no range.
fn strip_reply_fallback<'a>(el: &Element, body: &'a str) -> std::borrow::Cow<'a, str> {
    let fallbacks = el
        .children()
        .filter(|f| f.is("fallback", ns::FALLBACK) && f.attr("for") == Some(ns::REPLY));
    let mut ranges = Vec::new();
    let mut found = false;
    for fallback in fallbacks {
        found = true;
        ranges.extend(
            fallback
                .children()
                .filter(|b| b.is("body", ns::FALLBACK))
                .filter_map(|b| {
                    let start = b.attr("start")?.parse::<usize>().ok()?;
                    let end = b.attr("end")?.parse::<usize>().ok()?;
                    (start < end).then_some((start, end))
                }),
        );
    }
    if !found {
        return body.into();
    }
    if ranges.is_empty() {
        let mut rest = body;
        while rest.starts_with('>') {
            rest = rest.split_once('\n').map_or("", |(_, r)| r);
        }
        return rest.into();
    }
    ranges.sort_unstable();
    let mut out = String::with_capacity(body.len());
    let mut ranges = ranges.into_iter().peekable();
    for (i, c) in body.chars().enumerate() {
        while ranges.next_if(|&(_, end)| end <= i).is_some() {}
        if ranges.peek().is_none_or(|&(start, _)| start > i) {
            out.push(c);
        }
    }
    out.into()
}

/// Drops trailing lines that repeat an attachment's URL (clients send the URL as the body).
fn strip_urls<'a>(mut text: &'a str, attachments: &[Attachment]) -> &'a str {
    while !attachments.is_empty() {
        let trimmed = text.trim_end();
        let (head, last) = trimmed.rsplit_once('\n').unwrap_or(("", trimmed));
        if !attachments.iter().any(|a| a.url == last.trim()) {
            break;
        }
        text = head;
    }
    text
}

/// The XHTML-IM body as rich text, if present and within `limit` bytes of HTML. It must say
/// what the body does: for an `emote` it must start with `/me ` (which is cut), and when the body
/// had a reply fallback (`quoted`) it must start with a `<blockquote>` (which is dropped).
fn xhtml(el: &Element, emote: bool, quoted: bool, limit: usize) -> Option<RichText> {
    let body = child(el, "html", ns::XHTML_IM)?
        .children()
        .find(|b| b.is("body", ns::XHTML))?;
    enum Step<'a> {
        Node(&'a Node),
        Close(&'a str),
    }
    let mut nodes = body
        .nodes()
        .skip_while(|n| n.as_text().is_some_and(|t| t.trim().is_empty()));
    if quoted {
        nodes
            .next()?
            .as_element()
            .filter(|e| e.is("blockquote", ns::XHTML))?;
    }
    let mut out = String::new();
    let mut me = emote;
    let mut stack: Vec<Step<'_>> = nodes.map(Step::Node).collect();
    stack.reverse();
    while let Some(step) = stack.pop() {
        match step {
            Step::Close(name) => {
                out.push_str("</");
                out.push_str(name);
                out.push('>');
            }
            Step::Node(Node::Text(text)) => {
                let mut text = text.as_str();
                if me && !text.trim().is_empty() {
                    text = text.trim_start().strip_prefix("/me ")?;
                    me = false;
                }
                escape(&mut out, text);
            }
            Step::Node(Node::Element(e)) => {
                if e.has_ns(ns::XHTML) {
                    out.push('<');
                    out.push_str(e.name());
                    for ((attr_ns, name), value) in e.attrs().iter() {
                        if *attr_ns == Namespace::NONE {
                            out.push(' ');
                            out.push_str(name);
                            out.push_str("=\"");
                            escape(&mut out, value);
                            out.push('"');
                        }
                    }
                    out.push('>');
                    if VOID.contains(&e.name()) {
                        continue;
                    }
                    stack.push(Step::Close(e.name()));
                }
                stack.extend(e.nodes().rev().map(Step::Node));
            }
        }
        if out.len() > limit {
            return None;
        }
    }
    (!me).then(|| RichText::from_html(&out))
}

/// A [`super::build_custom`] container: `{"type": …, "content": …}`. `None` when it is not one
/// (it is then carried as an unknown payload).
fn json_custom(json: &Element, limits: &Limits) -> Option<Result<Content, ParseError>> {
    let text = match bounded_text(json, limits.max_markup_bytes, "JSON container") {
        Ok(text) => text,
        Err(e) => return Some(Err(e)),
    };
    let serde_json::Value::Object(mut object) = serde_json::from_str(&text).ok()? else {
        return None;
    };
    let serde_json::Value::String(event_type) = object.remove("type")? else {
        return None;
    };
    Some(Ok(Content::Custom {
        event_type,
        content: object.remove("content")?,
    }))
}

/// `el` serialised, or [`ParseError::TooLarge`] past `limit` bytes.
fn serialise(el: &Element, limit: usize) -> Result<String, ParseError> {
    struct Bounded(Vec<u8>, usize);
    impl std::io::Write for Bounded {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.0.len() + buf.len() > self.1 {
                return Err(std::io::ErrorKind::FileTooLarge.into());
            }
            self.0.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let too_large = ParseError::TooLarge {
        what: "custom payload",
        limit,
    };
    let mut out = Bounded(Vec::new(), limit);
    el.write_to(&mut out).map_err(|_| too_large.clone())?;
    String::from_utf8(out.0).map_err(|_| too_large)
}

/// The text of `el`, or [`ParseError::TooLarge`] when it is over `limit` bytes (checked before
/// copying).
fn bounded_text(el: &Element, limit: usize, what: &'static str) -> Result<String, ParseError> {
    if text_len(el) > limit {
        return Err(ParseError::TooLarge { what, limit });
    }
    Ok(el.text())
}

fn text_len(el: &Element) -> usize {
    el.texts().map(str::len).sum()
}

fn child<'a>(el: &'a Element, name: &str, ns: &str) -> Option<&'a Element> {
    el.get_child(name, ns)
}

fn required(
    el: &Element,
    element: &'static str,
    attribute: &'static str,
) -> Result<String, ParseError> {
    el.attr(attribute)
        .map(str::to_owned)
        .ok_or(ParseError::MissingAttribute { element, attribute })
}

fn owned(value: Option<&str>) -> Option<String> {
    value.map(str::to_owned)
}

/// A XEP-0082 date-time as ms since the Unix epoch; `None` if unreadable or before 1970.
fn stamp_ms(stamp: &str) -> Option<u64> {
    let date = DateTime::from_str(stamp.trim()).ok()?;
    u64::try_from(date.0.timestamp_millis()).ok()
}
