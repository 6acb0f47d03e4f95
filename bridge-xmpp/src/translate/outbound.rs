//! Neutral content → stanzas.

use bridge_core::richtext::html::escape;
use bridge_core::{MessageContent, MsgType};
use serde_json::Value;
use xmpp_parsers::minidom::Element;
use xmpp_parsers::minidom::rxml::{Namespace, NcName};

use super::{ChatState, KNOWN, MessageType, ns};
use crate::component::MAX_DEPTH;

/// The body of a retraction, for clients without XEP-0424 (the text the XEP suggests).
pub const RETRACTION_FALLBACK: &str =
    "/me retracted a previous message, but it's unsupported by your client.";

/// The addressing of an outbound message stanza.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// The sender (a puppet's JID, or the bridge's own).
    pub from: &'a str,
    /// The recipient: a room's bare JID for groupchat, a user's JID for chat.
    pub to: &'a str,
    /// `Groupchat` or `Chat`.
    pub msg_type: MessageType,
    /// The stanza `id`, also sent as the XEP-0359 origin-id of the stanzas that get one. Use the
    /// neutral event ID: it makes repeated sends recognisable.
    pub id: &'a str,
}

/// The reply part of an outbound message (XEP-0461).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutReply<'a> {
    /// The author of the message replied to (a full JID in a MUC), when known.
    pub to: Option<&'a str>,
    /// The message replied to: its stanza-id in a MUC, else its `id`.
    pub id: &'a str,
    /// Text to quote as the XEP-0428 fallback (e.g. `Alice: hi`), for clients without replies.
    pub quote: Option<&'a str>,
}

/// A message: the body (XEP-0393 styling of formatted text, `/me ` for an emote; notices are
/// plain), an XHTML-IM version of formatted text, one XEP-0066 `<x><url/></x>` per attachment
/// (URLs the text does not already contain are appended to the body on lines of their own, so
/// every client shows them), the reply and its quoted fallback, a XEP-0333 `<markable/>` and the
/// origin-id.
pub fn build_message(
    env: &Envelope<'_>,
    content: &MessageContent,
    reply: Option<&OutReply<'_>>,
) -> Element {
    let mut msg = stanza(env);
    let quote = reply
        .and_then(|r| r.quote)
        .map(|q| xml_safe(&fallback_quote(q)));
    push_content(&mut msg, content, quote.as_deref());
    if let Some(reply) = reply {
        let mut attrs = vec![("id", reply.id)];
        attrs.extend(reply.to.map(|to| ("to", to)));
        msg.append_child(elem("reply", ns::REPLY, &attrs));
        if let Some(quote) = quote.filter(|q| !q.is_empty()) {
            let end = quote.chars().count().to_string();
            let range = elem("body", ns::FALLBACK, &[("start", "0"), ("end", &end)]);
            let mut fallback = elem("fallback", ns::FALLBACK, &[("for", ns::REPLY)]);
            fallback.append_child(range);
            msg.append_child(fallback);
        }
    }
    msg.append_child(elem("markable", ns::MARKERS, &[]));
    with_origin_id(msg, env)
}

/// A XEP-0308 correction of the message `replace_id` (the first version's `id`) with new
/// content, built as by [`build_message`].
pub fn build_correction(env: &Envelope<'_>, replace_id: &str, new: &MessageContent) -> Element {
    let mut msg = stanza(env);
    push_content(&mut msg, new, None);
    msg.append_child(elem("replace", ns::CORRECT, &[("id", replace_id)]));
    with_origin_id(msg, env)
}

/// The sender's complete set of XEP-0444 reactions to `to_id` (empty removes them all), with
/// a `<store/>` hint. Empty and repeated keys are left out.
pub fn build_reactions<S: AsRef<str>>(env: &Envelope<'_>, to_id: &str, keys: &[S]) -> Element {
    let mut reactions = elem("reactions", ns::REACTIONS, &[("id", to_id)]);
    let mut seen: Vec<&str> = Vec::new();
    for key in keys.iter().map(|k| k.as_ref().trim()) {
        if !key.is_empty() && !seen.contains(&key) {
            seen.push(key);
            reactions.append_child(text_elem("reaction", ns::REACTIONS, key));
        }
    }
    let mut msg = stanza(env);
    msg.append_child(reactions);
    msg.append_child(elem("store", ns::HINTS, &[]));
    with_origin_id(msg, env)
}

/// A XEP-0424 retraction of the sender's message `id` (its stanza-id in a MUC): `<retract/>` in
/// the current namespace, [`RETRACTION_FALLBACK`] as body marked as a XEP-0428 fallback, and a
/// `<store/>` hint.
pub fn build_retraction(env: &Envelope<'_>, id: &str) -> Element {
    let mut msg = stanza(env);
    msg.append_child(elem("retract", ns::RETRACT, &[("id", id)]));
    msg.append_child(elem("fallback", ns::FALLBACK, &[("for", ns::RETRACT)]));
    msg.append_child(text_elem("body", ns::CLIENT, RETRACTION_FALLBACK));
    msg.append_child(elem("store", ns::HINTS, &[]));
    with_origin_id(msg, env)
}

/// A XEP-0425 moderation request: the IQ a moderator (`from`) sends to `room` to retract the
/// message with stanza-id `stanza_id`, with an optional reason.
pub fn build_moderation(
    from: &str,
    room: &str,
    iq_id: &str,
    stanza_id: &str,
    reason: Option<&str>,
) -> Element {
    let mut moderate = elem("moderate", ns::MODERATE, &[("id", stanza_id)]);
    moderate.append_child(elem("retract", ns::RETRACT, &[]));
    if let Some(reason) = reason.filter(|r| !r.is_empty()) {
        moderate.append_child(text_elem("reason", ns::MODERATE, reason));
    }
    let mut iq = elem(
        "iq",
        ns::CLIENT,
        &[("type", "set"), ("from", from), ("to", room), ("id", iq_id)],
    );
    iq.append_child(moderate);
    iq
}

/// The same request in the form XEP-0425 had before 0.3 (`urn:xmpp:message-moderate:0` inside a
/// XEP-0422 `<apply-to/>`), which older servers (prosody-modules' `mod_muc_moderation` of 2023)
/// still speak exclusively.
pub fn build_moderation_v0(
    from: &str,
    room: &str,
    iq_id: &str,
    stanza_id: &str,
    reason: Option<&str>,
) -> Element {
    let mut moderate = elem("moderate", ns::MODERATE_0, &[]);
    moderate.append_child(elem("retract", ns::RETRACT_0, &[]));
    if let Some(reason) = reason.filter(|r| !r.is_empty()) {
        moderate.append_child(text_elem("reason", ns::MODERATE_0, reason));
    }
    let mut apply_to = elem("apply-to", ns::FASTEN, &[("id", stanza_id)]);
    apply_to.append_child(moderate);
    let mut iq = elem(
        "iq",
        ns::CLIENT,
        &[("type", "set"), ("from", from), ("to", room), ("id", iq_id)],
    );
    iq.append_child(apply_to);
    iq
}

/// A message carrying only a XEP-0085 chat state (e.g. `Composing` or `Paused`), with a
/// `<no-store/>` hint.
pub fn build_chat_state(env: &Envelope<'_>, state: ChatState) -> Element {
    let mut msg = stanza(env);
    msg.append_child(elem(state.as_str(), ns::CHATSTATES, &[]));
    msg.append_child(elem("no-store", ns::HINTS, &[]));
    msg
}

/// A XEP-0333 `<displayed/>` marker for message `id` (its stanza-id in a MUC), with a
/// `<no-store/>` hint.
pub fn build_displayed(env: &Envelope<'_>, id: &str) -> Element {
    let mut msg = stanza(env);
    msg.append_child(elem("displayed", ns::MARKERS, &[("id", id)]));
    msg.append_child(elem("no-store", ns::HINTS, &[]));
    msg
}

/// A MUC subject change (use a groupchat envelope); an empty subject clears it.
pub fn build_subject(env: &Envelope<'_>, subject: &str) -> Element {
    let mut msg = stanza(env);
    msg.append_child(text_elem("subject", ns::CLIENT, subject));
    with_origin_id(msg, env)
}

/// A custom event, with a `<store/>` hint. An event read from XMPP (`xmpp:{namespace}#{name}`
/// with `{"xml": …}`) gets its element back, provided the XML is that one element and its
/// namespace is not one this module handles (no body, retraction or the like can be smuggled
/// in); anything else travels in a XEP-0335 `<json/>` container as
/// `{"type": event_type, "content": content}`, which [`parse_message`](super::parse_message)
/// reads back.
pub fn build_custom(env: &Envelope<'_>, event_type: &str, content: &Value) -> Element {
    let mut msg = stanza(env);
    let payload = native_payload(event_type, content).unwrap_or_else(|| {
        let json = serde_json::json!({ "type": event_type, "content": content });
        text_elem("json", ns::JSON, &json.to_string())
    });
    msg.append_child(payload);
    msg.append_child(elem("store", ns::HINTS, &[]));
    with_origin_id(msg, env)
}

fn native_payload(event_type: &str, content: &Value) -> Option<Element> {
    let (namespace, name) = event_type.strip_prefix("xmpp:")?.rsplit_once('#')?;
    let el = parse_bounded(content.get("xml")?.as_str()?)?;
    let foreign = namespace != ns::CLIENT && !KNOWN.contains(&namespace);
    (foreign && el.is(name, namespace)).then_some(el)
}

/// Appends the body, XHTML-IM and attachments of `content`, after an optional reply `quote`.
fn push_content(msg: &mut Element, content: &MessageContent, quote: Option<&str>) {
    let emote = content.msgtype == MsgType::Emote;
    let formatted = content.text.is_formatted();
    let mut text = if emote { "/me " } else { "" }.to_owned();
    if formatted {
        text.push_str(&content.text.to_styling());
    } else {
        text.push_str(content.text.body());
    }
    for attachment in &content.attachments {
        if !text.contains(attachment.url.as_str()) {
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(&attachment.url);
        }
    }
    let body = format!("{}{text}", quote.unwrap_or_default());
    msg.append_child(text_elem("body", ns::CLIENT, &body));
    if formatted && let Some(html) = xhtml(&content.text.to_html(), emote, quote) {
        msg.append_child(html);
    }
    for attachment in &content.attachments {
        let mut x = elem("x", ns::OOB, &[]);
        x.append_child(text_elem("url", ns::OOB, &attachment.url));
        msg.append_child(x);
    }
}

/// The XHTML-IM `<html/>` of the rich text's HTML, or `None` if that is not well-formed XML.
/// The HTML is the core's sanitised rendering, whose only void element is `<br>`.
fn xhtml(html: &str, emote: bool, quote: Option<&str>) -> Option<Element> {
    let mut xml = format!("<body xmlns='{}'>", ns::XHTML);
    if let Some(quote) = quote.filter(|q| !q.is_empty()) {
        xml.push_str("<blockquote>");
        // The quote is in fallback form already: drop its "> " markers.
        for (i, line) in quote.lines().enumerate() {
            if i > 0 {
                xml.push_str("<br/>");
            }
            escape(&mut xml, line.strip_prefix("> ").unwrap_or(line));
        }
        xml.push_str("</blockquote>");
    }
    if emote {
        xml.push_str("/me ");
    }
    xml.push_str(&xml_safe(&html.replace("<br>", "<br/>")));
    xml.push_str("</body>");
    let body = parse_bounded(&xml)?;
    let mut wrapper = elem("html", ns::XHTML_IM, &[]);
    wrapper.append_child(body);
    Some(wrapper)
}

/// Largest XML accepted from a custom event, in bytes.
const MAX_CUSTOM_XML_BYTES: usize = 256 * 1024;

/// `xml` parsed as one element, if it is one, at most [`MAX_CUSTOM_XML_BYTES`] long and nested
/// at most [`MAX_DEPTH`] deep: minidom drops, clones and serialises trees recursively, so depth
/// is checked with a streaming pass first.
fn parse_bounded(xml: &str) -> Option<Element> {
    if xml.len() > MAX_CUSTOM_XML_BYTES {
        return None;
    }
    let mut depth = 0usize;
    for event in rxml::Reader::new(xml.as_bytes()) {
        match event.ok()? {
            rxml::Event::StartElement(..) => depth += 1,
            rxml::Event::EndElement(..) => depth = depth.saturating_sub(1),
            _ => {}
        }
        if depth > MAX_DEPTH {
            return None;
        }
    }
    xml.parse().ok()
}

/// `quote` as XEP-0393 quote lines, each ending in a newline.
fn fallback_quote(quote: &str) -> String {
    quote.lines().map(|line| format!("> {line}\n")).collect()
}

/// A `<message/>` with the envelope's attributes.
fn stanza(env: &Envelope<'_>) -> Element {
    elem(
        "message",
        ns::CLIENT,
        &[
            ("from", env.from),
            ("to", env.to),
            ("type", env.msg_type.as_str()),
            ("id", env.id),
        ],
    )
}

fn with_origin_id(mut msg: Element, env: &Envelope<'_>) -> Element {
    msg.append_child(elem("origin-id", ns::SID, &[("id", env.id)]));
    msg
}

fn elem(name: &str, namespace: &str, attrs: &[(&str, &str)]) -> Element {
    let mut el = Element::bare(name, namespace);
    for &(key, value) in attrs {
        // Every name passed here is a literal valid NcName.
        if let Ok(key) = NcName::try_from(key) {
            el.set_attr(Namespace::NONE, key, xml_safe(value));
        }
    }
    el
}

fn text_elem(name: &str, namespace: &str, text: &str) -> Element {
    let mut el = Element::bare(name, namespace);
    if !text.is_empty() {
        el.append_text_node(xml_safe(text));
    }
    el
}

/// `text` without the characters XML 1.0 cannot carry (most C0 controls, U+FFFE, U+FFFF):
/// minidom panics when it serialises them.
fn xml_safe(text: &str) -> String {
    let allowed = |c: char| {
        matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{FFFE}' && c != '\u{FFFF}')
    };
    text.chars().filter(|&c| allowed(c)).collect()
}
