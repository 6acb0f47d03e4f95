//! Matrix events → the neutral model.
//!
//! [`timeline_event`] reads one room timeline event (from an appservice transaction or a
//! `/sync` timeline); [`ephemeral_event`] reads typing notifications and read receipts, and
//! [`typing_changes`] turns successive typing sets into start/stop events.
//!
//! Events sent by the bridge's own ghosts are translated like any other: recognising them
//! ([`Naming::is_ours`]) and their echoes is the adapter's job, as is setting
//! [`InboundEvent::by_moderator`] for a redaction by someone with the room's `redact` power
//! level (a redaction in the timeline is no proof of that: from room version 3 on, servers
//! accept any redaction event and only decide whether to apply it).

use bridge_core::richtext::Node;
use bridge_core::{
    AdapterId, Attachment, EventKind, InboundEvent, MembershipChange, Mention, MessageContent,
    ModerationAction, MsgType, RemoteEventId, RemoteUserId, RichText, Role, Sender,
};
use serde_json::{Map, Value};

use super::ids::{Naming, is_user_id, localpart};
use super::{HTML_FORMAT, TranslateError, malformed};

type Object = Map<String, Value>;

/// Most users read from one `m.mentions.user_ids` (or from the pills of a message without
/// `m.mentions`); the rest are ignored.
pub const MAX_MENTIONS: usize = 256;

/// Prefixes of non-state event types that are never bridged, not even as
/// [`EventKind::Custom`]: room events the translation does not handle (`m.room.encrypted`
/// among them), VoIP signalling and in-room key verification, which mean nothing on another
/// network.
pub const NOT_BRIDGED: &[&str] = &[
    "m.room.",
    "m.call.",
    "org.matrix.call.",
    "m.rtc.",
    "org.matrix.msc4075.rtc.",
    "m.key.verification.",
    // A vote means nothing where the poll is text; the poll's end says the outcome.
    "m.poll.response",
    "org.matrix.msc3381.poll.response",
];

/// What inbound translation needs to know about the bridge.
#[derive(Debug, Clone)]
pub struct InboundCtx<'a> {
    /// The ID of the Matrix adapter: the adapter of every Matrix user mentioned.
    pub adapter: &'a AdapterId,
    /// How ghosts are named, to recognise mentions of users of other networks.
    pub naming: &'a Naming,
}

/// Translates one timeline event: the JSON object as the homeserver sends it, with `room_id`
/// or, in a `/sync` timeline where it is left out, the room given as `room`.
///
/// The event's `event_id` is the native ID, `room_id` the room, `sender` the sender (the
/// member, `state_key`, for `m.room.member`), `origin_server_ts` the time. Display names are
/// left to the adapter's member cache, except for membership events, which carry the member's
/// `displayname` and `avatar_url`.
///
/// * `m.room.message`: a [`EventKind::Message`] (see below), or an [`EventKind::Edit`] for an
///   `m.replace` relation (its `m.new_content`, else the content without its `* ` prefix).
/// * `m.sticker`: a message with the sticker as its one attachment and no text.
/// * `m.poll.start`, `m.poll.end` (and their unstable `org.matrix.msc3381.` names): a
///   message with the poll's question and numbered answers; the end's text, answering the
///   poll. Votes are not bridged.
/// * `m.reaction` (`m.annotation`): [`EventKind::Reaction`].
/// * `m.room.redaction`: [`EventKind::Redaction`] of `content.redacts` (room version 11) or of
///   the top-level `redacts` (earlier versions).
/// * `m.room.member`: [`EventKind::Membership`] or [`EventKind::Profile`], comparing the
///   content's `membership` with the previous one, `unsigned.prev_content.membership` (or a
///   top-level `prev_content`, as older servers send it; `leave` when there is none). The
///   sender is the member (the state key), whoever made the change:
///
///   | previous → new | result |
///   |---|---|
///   | not `join` → `join` | `Membership(Join)` |
///   | `join` → `join` | `Profile` with what changed: the `displayname` (its removal: the user ID, which clients then show) and the `avatar_url`; nothing when neither changed or only the avatar was removed |
///   | `join` → `leave` by the member | `Membership(Leave)` |
///   | `join` → `leave` by someone else | `Membership(Kick)`, with the `reason` |
///   | not `ban` → `ban` | `Membership(Ban)`, with the `reason` |
///   | not `invite` → `invite` | `Membership(Invite)`: like every membership event, its sender is the member (the invitee); the inviter is not kept |
///   | anything else (a rejected or withdrawn invitation, an unban, a knock) | nothing |
///
/// * `m.room.topic`, `m.room.name` (state key `""`): [`EventKind::Topic`],
///   [`EventKind::RoomName`]; an absent or `null` value is an empty one (cleared).
/// * Any other non-state event with an object content, unless its type starts with one of
///   [`NOT_BRIDGED`]: [`EventKind::Custom`].
///
/// In a message, `m.text`, `m.emote` and `m.notice` give their [`MsgType`]; the text is the
/// sanitised `formatted_body` when the format is `org.matrix.custom.html` (its `<mx-reply>`
/// fallback dropped), else the `body`, with the `> ` reply fallback cut when the event is a
/// reply ([`strip_reply_fallback`]). `m.image`, `m.file`, `m.video` and `m.audio` give one [`Attachment`] (the `mxc://`
/// URL, `filename` or `body`, and `info`); their text is the caption: the body, when a
/// `filename` different from it is given, else empty. Other msgtypes with a body give that body
/// as text. `m.relates_to` gives the reply (`m.in_reply_to`) and thread (`m.thread`, whose
/// `m.in_reply_to` is a reply only when `is_falling_back` is not true); `m.mentions.user_ids`
/// the mentions (a ghost of the bridge as the user it stands for; without `m.mentions`, the
/// pills of the formatted body).
///
/// `Ok(None)`: nothing to bridge: a message with neither text nor file, another state event, an encrypted event or encrypted media,
/// a redacted event, a membership event that changes nothing modelled, an event of a type in
/// [`NOT_BRIDGED`], an in-room verification request. `Err`: no `event_id`, `sender` or `type`,
/// no room, or a field the kind needs is missing or of the wrong type (a body that is not a
/// string, a reaction without key, media whose `url` is not `mxc://`…). Fields that do not
/// matter are ignored when malformed (a bad `info`, `m.mentions`, `format` or `m.relates_to`).
pub fn timeline_event(
    ev: &Value,
    room: Option<&str>,
    ctx: &InboundCtx<'_>,
) -> Result<Option<InboundEvent>, TranslateError> {
    let ev = ev
        .as_object()
        .ok_or_else(|| malformed("the event is not a JSON object"))?;
    let event_id = required_str(ev, "event_id")?;
    let sender = required_str(ev, "sender")?;
    let event_type = required_str(ev, "type")?;
    if event_id.is_empty() || sender.is_empty() || event_type.is_empty() {
        return Err(malformed("empty event_id, sender or type"));
    }
    let room = match opt_str(ev, "room_id")? {
        Some(room) => room,
        None => room.ok_or_else(|| malformed("no room_id"))?,
    };
    let empty = Object::new();
    let content = match ev.get("content") {
        None | Some(Value::Null) => None,
        Some(Value::Object(content)) => Some(content),
        Some(_) => return Err(malformed("content is not an object")),
    };
    let state_key = opt_str(ev, "state_key")?;
    let inbound = |kind| {
        let mut inbound = InboundEvent::new(room, Some(RemoteEventId::new(event_id)), sender, kind);
        inbound.ts = ev.get("origin_server_ts").and_then(Value::as_u64);
        inbound
    };

    if let Some(state_key) = state_key {
        let content = content.unwrap_or(&empty);
        let kind = match (event_type, state_key) {
            ("m.room.member", member) => {
                return membership(ev, member, content, ctx).map(|found| {
                    found.map(|found| {
                        let moderation = matches!(found.kind, EventKind::Moderation { .. });
                        let mut event = inbound(found.kind);
                        if !moderation {
                            // The event is about the member; a moderator's is theirs.
                            event.sender.id = RemoteUserId::new(member);
                            event.sender.display_name = found.display_name;
                            event.sender.avatar = found.avatar;
                        }
                        event
                    })
                });
            }
            ("m.room.topic", "") => EventKind::Topic {
                text: opt_str(content, "topic")?.unwrap_or_default().to_owned(),
            },
            ("m.room.name", "") => EventKind::RoomName {
                name: opt_str(content, "name")?.unwrap_or_default().to_owned(),
            },
            _ => return Ok(None),
        };
        return Ok(Some(inbound(kind)));
    }

    let redacted = ev
        .get("unsigned")
        .and_then(|u| u.get("redacted_because"))
        .is_some_and(|r| !r.is_null());
    let Some(content) = content.filter(|c| !c.is_empty() && !redacted) else {
        return Ok(None);
    };
    let kind = match event_type {
        "m.room.message" => message(content, ctx)?,
        "m.sticker" => sticker(content)?,
        "m.reaction" => Some(reaction(content)?),
        "m.room.redaction" => Some(EventKind::Redaction {
            target: match opt_str(content, "redacts")? {
                Some(target) => RemoteEventId::new(target),
                None => RemoteEventId::new(
                    opt_str(ev, "redacts")?
                        .ok_or_else(|| malformed("redaction without redacts"))?,
                ),
            },
            reason: lenient_str(content, "reason").map(str::to_owned),
        }),
        "m.room.encrypted" => {
            tracing::debug!(event_id, room, "encrypted event not bridged");
            None
        }
        "m.poll.start" | "org.matrix.msc3381.poll.start" => poll_start(content),
        "m.poll.end" | "org.matrix.msc3381.poll.end" => poll_end(content),
        other if NOT_BRIDGED.iter().any(|prefix| other.starts_with(prefix)) => None,
        other => Some(EventKind::Custom {
            event_type: other.to_owned(),
            content: Value::Object(content.clone()),
        }),
    };
    Ok(kind.map(inbound))
}

/// What an `m.room.member` event says.
struct Member {
    kind: EventKind<RemoteEventId>,
    display_name: Option<String>,
    avatar: Option<String>,
}

/// The change an `m.room.member` event makes (see [`timeline_event`]), with the member's
/// display name and avatar from the content. `member` is the state key. A kick, ban or unban
/// by someone else is that moderator's [`EventKind::Moderation`] of the member (a Matrix user,
/// or the user of another network a ghost stands for).
fn membership(
    ev: &Object,
    member: &str,
    content: &Object,
    ctx: &InboundCtx<'_>,
) -> Result<Option<Member>, TranslateError> {
    let Some(now) = opt_str(content, "membership")? else {
        return Ok(None);
    };
    let empty = Object::new();
    let prev = ev
        .get("unsigned")
        .and_then(|u| u.get("prev_content"))
        .or_else(|| ev.get("prev_content"))
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let before = lenient_str(prev, "membership").unwrap_or("leave");
    let display_name = lenient_str(content, "displayname").filter(|n| !n.is_empty());
    let avatar = lenient_str(content, "avatar_url").filter(|a| !a.is_empty());
    let reason = lenient_str(content, "reason")
        .filter(|r| !r.trim().is_empty())
        .map(str::to_owned);
    let sender = opt_str(ev, "sender")?;
    let change = match (before, now) {
        ("join", "join") => {
            let old_name = lenient_str(prev, "displayname").filter(|n| !n.is_empty());
            let old_avatar = lenient_str(prev, "avatar_url").filter(|a| !a.is_empty());
            let name_changed = display_name != old_name;
            let new_avatar = avatar.filter(|_| avatar != old_avatar);
            if !name_changed && new_avatar.is_none() {
                return Ok(None);
            }
            let kind = EventKind::Profile {
                display_name: name_changed.then(|| display_name.unwrap_or(member).to_owned()),
                avatar: new_avatar.map(str::to_owned),
            };
            return Ok(Some(Member {
                kind,
                display_name: owned(display_name),
                avatar: owned(avatar),
            }));
        }
        (_, "join") => MembershipChange::Join,
        ("join", "leave") if sender == Some(member) => MembershipChange::Leave,
        ("join", "leave") => MembershipChange::Kick,
        (before, "ban") if before != "ban" => MembershipChange::Ban,
        ("ban", "leave") if sender.is_some_and(|s| s != member) => {
            return Ok(Some(moderation(
                member,
                ModerationAction::Unban,
                reason,
                prev,
                ctx,
            )));
        }
        (before, "invite") if before != "invite" => MembershipChange::Invite,
        _ => return Ok(None),
    };
    let action = match change {
        MembershipChange::Kick => Some(ModerationAction::Kick),
        MembershipChange::Ban => Some(ModerationAction::Ban),
        _ => None,
    };
    if let Some(action) = action.filter(|_| sender.is_some_and(|s| s != member)) {
        return Ok(Some(moderation(member, action, reason, prev, ctx)));
    }
    let reason = match change {
        MembershipChange::Join | MembershipChange::Invite => None,
        _ => reason,
    };
    Ok(Some(Member {
        kind: EventKind::Membership { change, reason },
        display_name: owned(display_name),
        avatar: owned(avatar),
    }))
}

/// A moderator's kick, ban or unban of `member`: the user it is about is the Matrix user, or
/// the user of another network when `member` is one of our ghosts, with the name they had
/// (`prev`, the content before).
fn moderation(
    member: &str,
    action: ModerationAction,
    reason: Option<String>,
    prev: &Object,
    ctx: &InboundCtx<'_>,
) -> Member {
    let (adapter, user) = ctx
        .naming
        .ghost_of(member)
        .unwrap_or_else(|| (ctx.adapter.clone(), RemoteUserId::new(member)));
    let display_name = lenient_str(prev, "displayname")
        .filter(|n| !n.is_empty())
        .map(str::to_owned);
    Member {
        kind: EventKind::Moderation {
            target: Sender {
                adapter,
                user,
                display_name,
                avatar: None,
            },
            action,
            reason,
        },
        display_name: None,
        avatar: None,
    }
}

/// The relations of a message, read leniently: an `m.relates_to` that is not an object, or a
/// relation without the fields it needs, is no relation.
#[derive(Debug, Default)]
struct Relations<'a> {
    /// The event an `m.replace` edits.
    replace: Option<&'a str>,
    /// The root of the `m.thread`.
    thread: Option<&'a str>,
    /// The event replied to (not the thread fallback's).
    reply_to: Option<&'a str>,
    /// Whether there is an `m.in_reply_to` at all (a reply fallback may then be in the body).
    has_in_reply_to: bool,
}

fn relations(content: &Object) -> Relations<'_> {
    let Some(rel) = content.get("m.relates_to").and_then(Value::as_object) else {
        return Relations::default();
    };
    let event_id = lenient_str(rel, "event_id").filter(|id| !id.is_empty());
    let in_reply_to = rel
        .get("m.in_reply_to")
        .and_then(|r| r.get("event_id"))
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty());
    let mut relations = Relations {
        has_in_reply_to: in_reply_to.is_some(),
        ..Relations::default()
    };
    match lenient_str(rel, "rel_type") {
        Some("m.replace") => relations.replace = event_id,
        Some("m.thread") => {
            relations.thread = event_id;
            let falling_back = rel.get("is_falling_back").and_then(Value::as_bool) == Some(true);
            relations.reply_to = in_reply_to.filter(|_| !falling_back || event_id.is_none());
        }
        _ => relations.reply_to = in_reply_to,
    }
    relations
}

/// An `m.room.message`: a message, or an edit.
fn message(
    content: &Object,
    ctx: &InboundCtx<'_>,
) -> Result<Option<EventKind<RemoteEventId>>, TranslateError> {
    let relations = relations(content);
    let is_edit = content
        .get("m.relates_to")
        .and_then(|r| r.get("rel_type"))
        .and_then(Value::as_str)
        == Some("m.replace");
    if is_edit {
        let target = relations
            .replace
            .ok_or_else(|| malformed("m.replace without event_id"))?;
        let new = match content.get("m.new_content") {
            Some(Value::Object(new)) => message_content(new, false, ctx)?,
            _ => message_content(&unstarred(content), false, ctx)?,
        };
        return Ok(new.map(|new| EventKind::Edit {
            target: RemoteEventId::new(target),
            new,
        }));
    }
    let Some(content) = message_content(content, relations.has_in_reply_to, ctx)? else {
        return Ok(None);
    };
    if content.text.body().trim().is_empty() && content.attachments.is_empty() {
        return Ok(None);
    }
    Ok(Some(EventKind::Message {
        content,
        reply_to: relations.reply_to.map(RemoteEventId::new),
        thread: relations.thread.map(RemoteEventId::new),
    }))
}

/// The content of an edit that has no `m.new_content`: its own, without the `* ` that marks
/// the fallback text of an edit.
fn unstarred(content: &Object) -> Object {
    let mut content = content.clone();
    for key in ["body", "formatted_body"] {
        if let Some(Value::String(text)) = content.get_mut(key)
            && let Some(rest) = text.strip_prefix("* ")
        {
            *text = rest.to_owned();
        }
    }
    content
}

/// The neutral content of an `m.room.message` content (or of an edit's `m.new_content`).
/// `reply`: the event is a reply, so its body may start with a reply fallback.
fn message_content(
    content: &Object,
    reply: bool,
    ctx: &InboundCtx<'_>,
) -> Result<Option<MessageContent>, TranslateError> {
    let msgtype = required_str(content, "msgtype")?;
    let body = opt_str(content, "body")?;
    let mut out = match msgtype {
        "m.text" | "m.emote" | "m.notice" => {
            if body.is_none() {
                return Err(malformed(format!("{msgtype} without body")));
            }
            MessageContent {
                msgtype: match msgtype {
                    "m.emote" => MsgType::Emote,
                    "m.notice" => MsgType::Notice,
                    _ => MsgType::Text,
                },
                text: rich_text(content, reply)?,
                ..MessageContent::default()
            }
        }
        "m.image" | "m.file" | "m.video" | "m.audio" => {
            let Some(attachment) = attachment(content, body)? else {
                return Ok(None);
            };
            // A `filename` different from the body makes the body a caption.
            let caption = lenient_str(content, "filename").is_some_and(|f| Some(f) != body)
                && body.is_some_and(|b| !b.is_empty());
            MessageContent {
                text: if caption {
                    rich_text(content, reply)?
                } else {
                    RichText::default()
                },
                attachments: vec![attachment],
                ..MessageContent::default()
            }
        }
        "m.key.verification.request" => return Ok(None),
        _ => match body {
            Some(body) => MessageContent::text(body),
            None => return Ok(None),
        },
    };
    out.mentions = mentions(content, &out.text, ctx);
    Ok(Some(out))
}

/// The text of a message content: the sanitised HTML when it is formatted (and says anything),
/// else the body, its reply fallback cut when `reply`.
fn rich_text(content: &Object, reply: bool) -> Result<RichText, TranslateError> {
    let body = opt_str(content, "body")?.unwrap_or_default();
    let plain = if reply {
        strip_reply_fallback(body)
    } else {
        body
    };
    if lenient_str(content, "format") == Some(HTML_FORMAT)
        && let Some(html) = lenient_str(content, "formatted_body")
    {
        // `from_html` drops `<mx-reply>` (the reply fallback) with everything in it.
        let rich = RichText::from_html(html);
        if !rich.body().trim().is_empty() || plain.trim().is_empty() {
            return Ok(rich);
        }
    }
    Ok(RichText::plain(plain))
}

/// Cuts the classic reply fallback from a body: leading lines that start with `>`, the first
/// of them naming the original's sender as fallbacks do (`> <@bob:example.org> …`, or
/// `> * <@bob:example.org> …` for an emote), followed by an empty line. Anything else (a quote
/// the author wrote, a quote not followed by an empty line) is left alone.
pub fn strip_reply_fallback(body: &str) -> &str {
    if !(body.starts_with("> <") || body.starts_with("> * <")) {
        return body;
    }
    let mut rest = body;
    while rest.starts_with('>') {
        match rest.split_once('\n') {
            Some((_, next)) => rest = next,
            None => return body,
        }
    }
    if let Some(after) = rest.strip_prefix('\n') {
        after
    } else if let Some(after) = rest.strip_prefix("\r\n") {
        after
    } else {
        body
    }
}

/// The attachment of a media message or sticker. `None` for encrypted media (a `file` object
/// instead of `url`), which the bridge cannot read.
fn attachment(content: &Object, body: Option<&str>) -> Result<Option<Attachment>, TranslateError> {
    let url = match opt_str(content, "url")? {
        Some(url) => url,
        None if content.contains_key("file") => {
            tracing::debug!("encrypted media not bridged");
            return Ok(None);
        }
        None => return Err(malformed("media without url")),
    };
    if !url.starts_with("mxc://") {
        // Anything else would make the adapter fetch an arbitrary URL.
        return Err(malformed("media url is not an mxc:// URI"));
    }
    let name = lenient_str(content, "filename")
        .or(body)
        .filter(|n| !n.is_empty())
        .unwrap_or("file");
    let info = content.get("info").and_then(Value::as_object);
    let number = |key: &str| info.and_then(|i| i.get(key)).and_then(Value::as_u64);
    let pixels = |key: &str| number(key).and_then(|n| u32::try_from(n).ok());
    Ok(Some(Attachment {
        name: name.to_owned(),
        url: url.to_owned(),
        mime: info
            .and_then(|i| lenient_str(i, "mimetype"))
            .filter(|m| !m.is_empty())
            .map(str::to_owned),
        size: number("size"),
        width: pixels("w"),
        height: pixels("h"),
    }))
}

/// An `m.sticker`: a message whose one attachment is the sticker, named after its body (its
/// description), without text.
fn sticker(content: &Object) -> Result<Option<EventKind<RemoteEventId>>, TranslateError> {
    let body = opt_str(content, "body")?;
    let Some(mut attachment) = attachment(content, body)? else {
        return Ok(None);
    };
    if body.is_none_or(str::is_empty) {
        attachment.name = String::from("sticker");
    }
    let relations = relations(content);
    Ok(Some(EventKind::Message {
        content: MessageContent {
            attachments: vec![attachment],
            ..MessageContent::default()
        },
        reply_to: relations.reply_to.map(RemoteEventId::new),
        thread: relations.thread.map(RemoteEventId::new),
    }))
}

/// The text of an extensible-events text block (MSC1767): the stable `m.text` (a list of
/// representations, the first plain one, else the first) or the unstable
/// `org.matrix.msc1767.text` (a string).
fn extensible_text(block: &Object) -> Option<String> {
    if let Some(list) = block.get("m.text").and_then(Value::as_array) {
        let body = |r: &Value| r.get("body").and_then(Value::as_str).map(str::to_owned);
        let plain = list.iter().find(|r| {
            r.get("mimetype")
                .and_then(Value::as_str)
                .is_none_or(|m| m == "text/plain")
        });
        if let Some(text) = plain.and_then(body).or_else(|| list.iter().find_map(body)) {
            return Some(text);
        }
    }
    block
        .get("org.matrix.msc1767.text")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// A poll (MSC3381, `m.poll.start` or its unstable name): a message with its question and its
/// numbered answers, for networks without polls (their votes are not bridged: see
/// [`NOT_BRIDGED`]); the event's own text fallback when the poll cannot be read.
fn poll_start(content: &Object) -> Option<EventKind<RemoteEventId>> {
    let poll = content
        .get("m.poll")
        .or_else(|| content.get("org.matrix.msc3381.poll.start"))
        .and_then(Value::as_object);
    let question = poll
        .and_then(|p| p.get("question"))
        .and_then(Value::as_object)
        .and_then(extensible_text);
    let answers: Vec<String> = poll
        .and_then(|p| p.get("answers"))
        .and_then(Value::as_array)
        .map(|answers| {
            answers
                .iter()
                .filter_map(|a| a.as_object().and_then(extensible_text))
                .collect()
        })
        .unwrap_or_default();
    let text = match question {
        Some(question) => {
            let mut text = format!("Poll: {question}");
            for (i, answer) in answers.iter().enumerate() {
                text.push_str(&format!("\n{}. {answer}", i + 1));
            }
            text
        }
        None => extensible_text(content)?,
    };
    Some(EventKind::Message {
        content: MessageContent::text(text),
        reply_to: None,
        thread: relations(content).thread.map(RemoteEventId::new),
    })
}

/// The end of a poll: its text fallback (the outcome, in the clients that send one), as an
/// answer to the poll it ends (its `m.reference`).
fn poll_end(content: &Object) -> Option<EventKind<RemoteEventId>> {
    let text = extensible_text(content).unwrap_or_else(|| String::from("The poll has ended."));
    let poll = content
        .get("m.relates_to")
        .and_then(Value::as_object)
        .filter(|rel| rel.get("rel_type").and_then(Value::as_str) == Some("m.reference"))
        .and_then(|rel| rel.get("event_id"))
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty());
    Some(EventKind::Message {
        content: MessageContent::text(text),
        reply_to: poll.map(RemoteEventId::new),
        thread: None,
    })
}

/// An `m.reaction`: its `m.annotation` relation, with the event and the key.
fn reaction(content: &Object) -> Result<EventKind<RemoteEventId>, TranslateError> {
    let rel = content
        .get("m.relates_to")
        .and_then(Value::as_object)
        .ok_or_else(|| malformed("reaction without m.relates_to"))?;
    if opt_str(rel, "rel_type")? != Some("m.annotation") {
        return Err(malformed("reaction without m.annotation"));
    }
    let target = required_str(rel, "event_id")?;
    let key = required_str(rel, "key")?;
    if key.is_empty() || target.is_empty() {
        return Err(malformed("reaction with an empty key or event_id"));
    }
    Ok(EventKind::Reaction {
        target: RemoteEventId::new(target),
        key: key.to_owned(),
    })
}

/// The users a message mentions: `m.mentions.user_ids`, or, for a message without
/// `m.mentions` (older clients), its pills. A ghost of the bridge is the user it stands for; any
/// other Matrix user is a user of this adapter. A mention's display text is its pill's text in
/// the formatted body, else the native ID of a ghost's user or a Matrix user's localpart.
/// Invalid and malformed-ghost IDs are skipped.
fn mentions(content: &Object, text: &RichText, ctx: &InboundCtx<'_>) -> Vec<Mention> {
    let tree = text.nodes().unwrap_or_default();
    let pills = pills(tree);
    let ids: Vec<&str> = match content.get("m.mentions") {
        Some(mentions) => mentions
            .get("user_ids")
            .and_then(Value::as_array)
            .map(|ids| ids.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default(),
        None => pills.iter().map(|(id, _)| *id).collect(),
    };
    let mut out: Vec<Mention> = Vec::new();
    for id in ids {
        if out.len() == MAX_MENTIONS {
            break;
        }
        if !is_user_id(id) {
            continue;
        }
        let pill = pills.iter().find(|(p, _)| *p == id).map(|(_, text)| *text);
        let (adapter, user, fallback) = match ctx.naming.ghost_of(id) {
            Some((adapter, user)) => {
                let display = user.as_str().to_owned();
                (adapter, user, display)
            }
            None if ctx.naming.is_ours(id) => continue,
            None => (
                ctx.adapter.clone(),
                RemoteUserId::new(id),
                localpart(id).unwrap_or(id).to_owned(),
            ),
        };
        if out.iter().any(|m| m.adapter == adapter && m.user == user) {
            continue;
        }
        out.push(Mention {
            adapter,
            user,
            display: pill
                .filter(|p| !p.is_empty())
                .map_or(fallback, str::to_owned),
        });
    }
    out
}

/// Every Matrix user mention in a formatting tree, with its text, in document order. The walk
/// uses its own stack, and the tree is at most [`bridge_core::richtext::MAX_DEPTH`] deep.
fn pills(tree: &[Node]) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let mut stack: Vec<std::slice::Iter<'_, Node>> = vec![tree.iter()];
    while let Some(top) = stack.last_mut() {
        let Some(node) = top.next() else {
            stack.pop();
            continue;
        };
        match node {
            Node::Mention { id, text } if id.starts_with('@') && out.len() < MAX_MENTIONS => {
                out.push((id.as_str(), text.as_str()));
            }
            Node::Bold(c)
            | Node::Italic(c)
            | Node::Strikethrough(c)
            | Node::BlockQuote(c)
            | Node::Paragraph(c)
            | Node::Link { children: c, .. } => stack.push(c.iter()),
            Node::BulletList(items) | Node::OrderedList { items, .. } => {
                for item in items.iter().rev() {
                    stack.push(item.iter());
                }
            }
            _ => {}
        }
    }
    out
}

/// Typing notifications and read receipts, from the `ephemeral` (or
/// `de.sorunome.msc2409.ephemeral`) list of an appservice transaction, or a `/sync` room's
/// Whether `user` may redact other people's events in a room with these power levels (the
/// content of `m.room.power_levels`) and creators: a creator always may (room version 12 and
/// later give creators unlimited power); otherwise the user's level (`users`, else
/// `users_default`, default 0) must reach `redact` (default 50). No power levels at all: only
/// the creators.
pub fn may_redact_others(levels: &Value, creators: &[String], user: &str) -> bool {
    if creators.iter().any(|c| c == user) {
        return true;
    }
    if !levels.is_object() {
        return false;
    }
    user_level(levels, user) >= level_field(levels, "redact").unwrap_or(50)
}

/// A power level as the event gives it: a number, or (in rooms before version 10) a string
/// of one.
fn level_value(v: Option<&Value>) -> Option<i64> {
    v.and_then(|v| {
        v.as_i64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
    })
}

/// A top-level level of a power-levels content (`redact`, `events_default`, ...).
pub(crate) fn level_field(levels: &Value, field: &str) -> Option<i64> {
    level_value(levels.get(field))
}

/// `user`'s power level: their entry in `users`, else `users_default`, else 0.
pub(crate) fn user_level(levels: &Value, user: &str) -> i64 {
    level_value(levels.get("users").and_then(|u| u.get(user)))
        .or_else(|| level_field(levels, "users_default"))
        .unwrap_or(0)
}

/// The level needed to send a message: `events."m.room.message"`, else `events_default`.
pub(crate) fn send_level(levels: &Value) -> i64 {
    level_value(levels.get("events").and_then(|e| e.get("m.room.message")))
        .or_else(|| level_field(levels, "events_default"))
        .unwrap_or(0)
}

/// The level at which a user shows as an admin in Matrix clients.
pub const ADMIN_LEVEL: i64 = 100;
/// The level at which a user shows as a moderator in Matrix clients.
pub const MODERATOR_LEVEL: i64 = 50;

/// `user`'s standing in a room with these power levels (content) and creators: a creator
/// (room version 12 on) is its owner; level 100 and up an admin, 50 and up a moderator (the
/// levels Matrix clients name so); below the level needed to send a message, muted; else a
/// member. A room without power levels has only its creators above members.
pub fn role_of(levels: &Value, creators: &[String], user: &str) -> Role {
    if creators.iter().any(|c| c == user) {
        return Role::Owner;
    }
    if !levels.is_object() {
        return Role::Member;
    }
    let level = user_level(levels, user);
    if level >= ADMIN_LEVEL {
        Role::Admin
    } else if level >= MODERATOR_LEVEL {
        Role::Moderator
    } else if level < send_level(levels) {
        Role::Muted
    } else {
        Role::Member
    }
}

/// Whether a power-levels change from `old` to `new` (contents) moves users it does not name:
/// `users_default` or the level to send a message changed. Then the room's members are needed
/// to say who stands differently ([`role_changes`]).
pub fn defaults_moved(old: &Value, new: &Value) -> bool {
    let default = |levels: &Value| level_field(levels, "users_default").unwrap_or(0);
    default(old) != default(new) || send_level(old) != send_level(new)
}

/// Who stands differently after a power-levels change from `old` to `new` (contents): each
/// user named in either's `users`, and each of `members` (the room's members, for a change
/// of the defaults: [`defaults_moved`]), with their new standing, in the order of their IDs.
pub fn role_changes(
    old: &Value,
    new: &Value,
    creators: &[String],
    members: &[String],
) -> Vec<(String, Role)> {
    let named = |levels: &Value| -> Vec<String> {
        levels
            .get("users")
            .and_then(Value::as_object)
            .map(|users| users.keys().cloned().collect())
            .unwrap_or_default()
    };
    let mut users = named(old);
    users.extend(named(new));
    users.extend(members.iter().cloned());
    users.sort();
    users.dedup();
    users
        .into_iter()
        .filter_map(|user| {
            let role = role_of(new, creators, &user);
            (role != role_of(old, creators, &user)).then_some((user, role))
        })
        .collect()
}

/// The creators of a room from its `m.room.create` event: from room version 12 on, the sender
/// and `content.additional_creators`; before, nobody has power by creation alone (the power
/// levels list the creator).
pub fn creators(create: &Value) -> Vec<String> {
    let content = create.get("content").unwrap_or(&Value::Null);
    let version = content
        .get("room_version")
        .and_then(Value::as_str)
        .unwrap_or("1");
    if version.parse::<u32>().map_or(true, |v| v < 12) {
        return Vec::new();
    }
    let mut creators: Vec<String> = create
        .get("sender")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .into_iter()
        .collect();
    if let Some(more) = content.get("additional_creators").and_then(Value::as_array) {
        creators.extend(more.iter().filter_map(Value::as_str).map(str::to_owned));
    }
    creators
}

/// `ephemeral` events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ephemeral {
    /// The complete set of users typing in a room now (`m.typing`).
    Typing {
        /// The room.
        room: String,
        /// Everyone typing; the users not listed are not.
        users: Vec<String>,
    },
    /// A user has read a room up to an event (an `m.read` receipt).
    Read {
        /// The room.
        room: String,
        /// The reader.
        user: String,
        /// The event read up to.
        event_id: String,
    },
}

/// Reads one ephemeral event: `m.typing` gives one [`Ephemeral::Typing`]; `m.receipt` one
/// [`Ephemeral::Read`] per event and user of its public `m.read` receipts (private ones,
/// `m.read.private`, are not bridged; threaded receipts count as plain ones); any other type
/// (`m.presence`…) nothing. The room is the event's `room_id` (always there in what
/// homeservers push to appservices) or, for `/sync`, `room`. `Err`: not an object, no
/// `type`, no room, or a content without what its type needs.
pub fn ephemeral_event(ev: &Value, room: Option<&str>) -> Result<Vec<Ephemeral>, TranslateError> {
    let ev = ev
        .as_object()
        .ok_or_else(|| malformed("the event is not a JSON object"))?;
    let event_type = required_str(ev, "type")?;
    if !matches!(event_type, "m.typing" | "m.receipt") {
        return Ok(Vec::new());
    }
    let room = match opt_str(ev, "room_id")? {
        Some(room) => room,
        None => room.ok_or_else(|| malformed("no room_id"))?,
    };
    let content = ev
        .get("content")
        .and_then(Value::as_object)
        .ok_or_else(|| malformed("content is not an object"))?;
    if event_type == "m.typing" {
        let users = content
            .get("user_ids")
            .and_then(Value::as_array)
            .ok_or_else(|| malformed("m.typing without user_ids"))?;
        let mut out: Vec<String> = Vec::new();
        for user in users.iter().filter_map(Value::as_str) {
            if !out.iter().any(|u| u == user) {
                out.push(user.to_owned());
            }
        }
        return Ok(vec![Ephemeral::Typing {
            room: room.to_owned(),
            users: out,
        }]);
    }
    let mut out = Vec::new();
    for (event_id, receipts) in content {
        let Some(readers) = receipts.get("m.read").and_then(Value::as_object) else {
            continue;
        };
        for user in readers.keys() {
            out.push(Ephemeral::Read {
                room: room.to_owned(),
                user: user.clone(),
                event_id: event_id.clone(),
            });
        }
    }
    Ok(out)
}

/// What changed between two typing sets of a room: `(user, false)` for everyone in `old` but
/// not in `new` (stopped), then `(user, true)` for everyone in `new` but not in `old`
/// (started), each in the order given, without repeats.
pub fn typing_changes(old: &[String], new: &[String]) -> Vec<(String, bool)> {
    let mut out: Vec<(String, bool)> = Vec::new();
    let changes = old
        .iter()
        .filter(|u| !new.contains(u))
        .map(|u| (u, false))
        .chain(new.iter().filter(|u| !old.contains(u)).map(|u| (u, true)));
    for (user, active) in changes {
        if !out.iter().any(|(u, _)| u == user) {
            out.push((user.clone(), active));
        }
    }
    out
}

/// A string field that must be there.
fn required_str<'a>(obj: &'a Object, key: &str) -> Result<&'a str, TranslateError> {
    opt_str(obj, key)?.ok_or_else(|| malformed(format!("no {key}")))
}

/// A string field that may be absent or `null`, but is an error when of another type.
fn opt_str<'a>(obj: &'a Object, key: &str) -> Result<Option<&'a str>, TranslateError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(malformed(format!("{key} is not a string"))),
    }
}

/// A string field, ignored when of another type.
fn lenient_str<'a>(obj: &'a Object, key: &str) -> Option<&'a str> {
    obj.get(key).and_then(Value::as_str)
}

fn owned(s: Option<&str>) -> Option<String> {
    s.map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ROOM: &str = "!kHbTpLWKtWqZvbYHNC:localhost";

    fn adapter() -> AdapterId {
        AdapterId::new("matrix")
    }

    fn naming() -> Naming {
        Naming::new("_bridge_", "localhost")
    }

    fn translate(ev: &Value) -> Result<Option<InboundEvent>, TranslateError> {
        let (adapter, naming) = (adapter(), naming());
        let ctx = InboundCtx {
            adapter: &adapter,
            naming: &naming,
        };
        timeline_event(ev, None, &ctx)
    }

    /// A timeline event as Synapse pushes it to an appservice.
    fn event(event_type: &str, content: Value) -> Value {
        json!({
            "type": event_type,
            "room_id": ROOM,
            "sender": "@alice:localhost",
            "content": content,
            "origin_server_ts": 1_700_000_000_000_u64,
            "unsigned": { "age": 97 },
            "event_id": "$2xBdv4NLNgBk6u3xFx9gIHWdE3rqRyHUnK2zRUcU8i0",
            "user_id": "@alice:localhost",
            "age": 97,
        })
    }

    fn kind_of(ev: &Value) -> EventKind<RemoteEventId> {
        translate(ev)
            .expect("translates")
            .expect("something to bridge")
            .kind
    }

    fn message(content: Value) -> (MessageContent, Option<String>, Option<String>) {
        match kind_of(&event("m.room.message", content)) {
            EventKind::Message {
                content,
                reply_to,
                thread,
            } => (
                content,
                reply_to.map(|r| r.as_str().to_owned()),
                thread.map(|t| t.as_str().to_owned()),
            ),
            other => panic!("not a message: {other:?}"),
        }
    }

    fn nothing(ev: &Value) {
        assert_eq!(translate(ev).expect("translates"), None, "{ev}");
    }

    fn malformed(ev: &Value) {
        assert!(
            matches!(translate(ev), Err(TranslateError::Malformed(_))),
            "{ev}"
        );
    }

    #[test]
    fn text_message() {
        let ev = event(
            "m.room.message",
            json!({"msgtype": "m.text", "body": "hello"}),
        );
        let inbound = translate(&ev).expect("ok").expect("some");
        assert_eq!(inbound.room.as_str(), ROOM);
        assert_eq!(
            inbound.native_id.as_ref().map(RemoteEventId::as_str),
            Some("$2xBdv4NLNgBk6u3xFx9gIHWdE3rqRyHUnK2zRUcU8i0")
        );
        assert_eq!(inbound.sender.id.as_str(), "@alice:localhost");
        assert_eq!(inbound.sender.display_name, None);
        assert_eq!(inbound.ts, Some(1_700_000_000_000));
        assert!(!inbound.by_moderator);
        assert_eq!(inbound.echo_of, None);
        assert_eq!(
            inbound.kind,
            EventKind::Message {
                content: MessageContent::text("hello"),
                reply_to: None,
                thread: None,
            }
        );
    }

    #[test]
    fn msgtypes() {
        for (msgtype, expected) in [
            ("m.text", MsgType::Text),
            ("m.emote", MsgType::Emote),
            ("m.notice", MsgType::Notice),
        ] {
            let (content, ..) = message(json!({"msgtype": msgtype, "body": "waves"}));
            assert_eq!(content.msgtype, expected);
            assert_eq!(content.text.body(), "waves");
        }
        // Unknown msgtypes with a body: their body as text.
        let (content, ..) = message(json!({
            "msgtype": "m.location",
            "body": "Big Ben, London, UK",
            "geo_uri": "geo:51.5008,0.1247",
        }));
        assert_eq!(content, MessageContent::text("Big Ben, London, UK"));
        nothing(&event(
            "m.room.message",
            json!({"msgtype": "org.example.nobody"}),
        ));
        nothing(&event(
            "m.room.message",
            json!({"msgtype": "m.text", "body": " \n"}),
        ));
        nothing(&event(
            "m.room.message",
            json!({"msgtype": "m.text", "body": "", "format": "org.matrix.custom.html", "formatted_body": "<p></p>"}),
        ));
        nothing(&event(
            "m.room.message",
            json!({
                "msgtype": "m.key.verification.request",
                "body": "Alice is requesting to verify your key",
                "from_device": "ABC",
                "methods": ["m.sas.v1"],
                "to": "@bob:localhost",
            }),
        ));
    }

    #[test]
    fn formatted_text() {
        let (content, ..) = message(json!({
            "msgtype": "m.text",
            "body": "**bold** and _it_",
            "format": "org.matrix.custom.html",
            "formatted_body": "<strong>bold</strong> and <em>it</em>",
        }));
        assert_eq!(
            content.text,
            RichText::from_html("<strong>bold</strong> and <em>it</em>")
        );
        assert!(content.text.is_formatted());
        assert_eq!(content.text.body(), "bold and it");
        // Another format: the body.
        let (content, ..) = message(json!({
            "msgtype": "m.text",
            "body": "plain",
            "format": "org.example.markup",
            "formatted_body": "<b>ignored</b>",
        }));
        assert_eq!(content.text, RichText::plain("plain"));
        // A formatted_body of the wrong type is ignored.
        let (content, ..) = message(json!({
            "msgtype": "m.text",
            "body": "plain",
            "format": "org.matrix.custom.html",
            "formatted_body": 42,
        }));
        assert_eq!(content.text, RichText::plain("plain"));
        // Formatting that says nothing falls back to the body.
        let (content, ..) = message(json!({
            "msgtype": "m.text",
            "body": "hello",
            "format": "org.matrix.custom.html",
            "formatted_body": "<img src=\"mxc://x/y\">",
        }));
        assert_eq!(content.text, RichText::plain("hello"));
    }

    #[test]
    fn scripts_are_sanitised_out() {
        let (content, ..) = message(json!({
            "msgtype": "m.text",
            "body": "hi",
            "format": "org.matrix.custom.html",
            "formatted_body": "<script>alert('x')</script><b onclick=\"evil()\">hi</b>\
                <a href=\"javascript:evil()\">there</a><style>*{}</style>",
        }));
        let html = content.text.to_html();
        assert!(
            !html.contains("script") && !html.contains("alert"),
            "{html}"
        );
        assert!(
            !html.contains("onclick") && !html.contains("javascript"),
            "{html}"
        );
        assert_eq!(content.text.body(), "hithere");
    }

    #[test]
    fn reply_with_fallbacks() {
        let (content, reply, thread) = message(json!({
            "msgtype": "m.text",
            "body": "> <@bob:localhost> the original\n> second line\n\nmy answer",
            "format": "org.matrix.custom.html",
            "formatted_body": "<mx-reply><blockquote><a href=\"https://matrix.to/#/!r:localhost/$orig\">In reply to</a> <a href=\"https://matrix.to/#/@bob:localhost\">@bob:localhost</a><br>the original</blockquote></mx-reply>my <b>answer</b>",
            "m.relates_to": {"m.in_reply_to": {"event_id": "$orig"}},
        }));
        assert_eq!(reply.as_deref(), Some("$orig"));
        assert_eq!(thread, None);
        assert_eq!(content.text, RichText::from_html("my <b>answer</b>"));
        // The plain fallback, without HTML.
        let (content, reply, _) = message(json!({
            "msgtype": "m.text",
            "body": "> <@bob:localhost> the original\n>\n> third\n\nmy answer\n\nmore",
            "m.relates_to": {"m.in_reply_to": {"event_id": "$orig"}},
        }));
        assert_eq!(reply.as_deref(), Some("$orig"));
        assert_eq!(content.text, RichText::plain("my answer\n\nmore"));
        // Not a reply: a quote is the text.
        let quoted = "> a quote\n\nmy comment";
        let (content, reply, _) = message(json!({"msgtype": "m.text", "body": quoted}));
        assert_eq!((content.text.body(), reply), (quoted, None));
        // A reply that starts with a quote but no fallback (no empty line after it) is kept.
        let (content, ..) = message(json!({
            "msgtype": "m.text",
            "body": "> <@bob:localhost> quoted\nnot a fallback",
            "m.relates_to": {"m.in_reply_to": {"event_id": "$orig"}},
        }));
        assert_eq!(
            content.text.body(),
            "> <@bob:localhost> quoted\nnot a fallback"
        );
        // Nor is a quote the author wrote.
        let (content, ..) = message(json!({
            "msgtype": "m.text",
            "body": "> you said\n\nI agree",
            "m.relates_to": {"m.in_reply_to": {"event_id": "$orig"}},
        }));
        assert_eq!(content.text.body(), "> you said\n\nI agree");
    }

    #[test]
    fn reply_fallback_stripping() {
        assert_eq!(strip_reply_fallback("> <@a:b> x\n\ny"), "y");
        assert_eq!(strip_reply_fallback("> <@a:b> x\r\n\r\ny"), "y");
        assert_eq!(strip_reply_fallback("> <@a:b> x\n> y\n\n"), "");
        assert_eq!(
            strip_reply_fallback("> <@a:b> only a quote"),
            "> <@a:b> only a quote"
        );
        assert_eq!(strip_reply_fallback("> <@a:b> a\n> b"), "> <@a:b> a\n> b");
        assert_eq!(
            strip_reply_fallback("> <@a:b> a\nb\n\nc"),
            "> <@a:b> a\nb\n\nc"
        );
        assert_eq!(strip_reply_fallback("no quote"), "no quote");
        assert_eq!(strip_reply_fallback(""), "");
        assert_eq!(strip_reply_fallback("> * <@a:b> waves\n\nhi"), "hi");
        // Quotes the author wrote are no fallback.
        assert_eq!(strip_reply_fallback(">\n\nx"), ">\n\nx");
        assert_eq!(strip_reply_fallback("> a quote\n\nx"), "> a quote\n\nx");
    }

    #[test]
    fn threads() {
        // A message in a thread, not a reply: the m.in_reply_to is the fallback.
        let (content, reply, thread) = message(json!({
            "msgtype": "m.text",
            "body": "in the thread",
            "m.relates_to": {
                "rel_type": "m.thread",
                "event_id": "$root",
                "is_falling_back": true,
                "m.in_reply_to": {"event_id": "$latest"},
            },
        }));
        assert_eq!(content.text.body(), "in the thread");
        assert_eq!((reply, thread.as_deref()), (None, Some("$root")));
        // A real reply inside a thread.
        let (_, reply, thread) = message(json!({
            "msgtype": "m.text",
            "body": "answer",
            "m.relates_to": {
                "rel_type": "m.thread",
                "event_id": "$root",
                "is_falling_back": false,
                "m.in_reply_to": {"event_id": "$other"},
            },
        }));
        assert_eq!(
            (reply.as_deref(), thread.as_deref()),
            (Some("$other"), Some("$root"))
        );
        // is_falling_back absent means false.
        let (_, reply, _) = message(json!({
            "msgtype": "m.text",
            "body": "answer",
            "m.relates_to": {
                "rel_type": "m.thread",
                "event_id": "$root",
                "m.in_reply_to": {"event_id": "$other"},
            },
        }));
        assert_eq!(reply.as_deref(), Some("$other"));
        // A thread relation without event_id is none; its reply stays.
        let (_, reply, thread) = message(json!({
            "msgtype": "m.text",
            "body": "answer",
            "m.relates_to": {
                "rel_type": "m.thread",
                "is_falling_back": true,
                "m.in_reply_to": {"event_id": "$other"},
            },
        }));
        assert_eq!((reply.as_deref(), thread), (Some("$other"), None));
    }

    #[test]
    fn edits() {
        let ev = event(
            "m.room.message",
            json!({
                "msgtype": "m.text",
                "body": "* fixed **text**",
                "format": "org.matrix.custom.html",
                "formatted_body": "* fixed <b>text</b>",
                "m.new_content": {
                    "msgtype": "m.text",
                    "body": "fixed **text**",
                    "format": "org.matrix.custom.html",
                    "formatted_body": "fixed <b>text</b>",
                    "m.mentions": {"user_ids": ["@bob:localhost"]},
                },
                "m.mentions": {},
                "m.relates_to": {"rel_type": "m.replace", "event_id": "$first"},
            }),
        );
        let EventKind::Edit { target, new } = kind_of(&ev) else {
            panic!("not an edit");
        };
        assert_eq!(target.as_str(), "$first");
        assert_eq!(new.text, RichText::from_html("fixed <b>text</b>"));
        assert_eq!(new.mentions.len(), 1);
        // Without m.new_content: the content without its "* ".
        let ev = event(
            "m.room.message",
            json!({
                "msgtype": "m.emote",
                "body": "* waves",
                "m.relates_to": {"rel_type": "m.replace", "event_id": "$first"},
            }),
        );
        let EventKind::Edit { new, .. } = kind_of(&ev) else {
            panic!("not an edit");
        };
        assert_eq!((new.msgtype, new.text.body()), (MsgType::Emote, "waves"));
        let ev = event(
            "m.room.message",
            json!({
                "msgtype": "m.text",
                "body": "* fixed",
                "format": "org.matrix.custom.html",
                "formatted_body": "* <i>fixed</i>",
                "m.new_content": "not an object",
                "m.relates_to": {"rel_type": "m.replace", "event_id": "$first"},
            }),
        );
        let EventKind::Edit { new, .. } = kind_of(&ev) else {
            panic!("not an edit");
        };
        assert_eq!(new.text, RichText::from_html("<i>fixed</i>"));
        // An edit must say what it edits.
        malformed(&event(
            "m.room.message",
            json!({
                "msgtype": "m.text",
                "body": "* fixed",
                "m.new_content": {"msgtype": "m.text", "body": "fixed"},
                "m.relates_to": {"rel_type": "m.replace"},
            }),
        ));
        // A malformed new content is a malformed edit.
        malformed(&event(
            "m.room.message",
            json!({
                "msgtype": "m.text",
                "body": "* fixed",
                "m.new_content": {"msgtype": "m.text", "body": 3},
                "m.relates_to": {"rel_type": "m.replace", "event_id": "$first"},
            }),
        ));
    }

    #[test]
    fn mentions_of_matrix_users_and_ghosts() {
        let (content, ..) = message(json!({
            "msgtype": "m.text",
            "body": "Bob, alice@example.org: hi",
            "format": "org.matrix.custom.html",
            "formatted_body": "<a href=\"https://matrix.to/#/@bob:localhost\">Bob</a>, \
                <a href=\"https://matrix.to/#/@_bridge_xmpp_alice=40example.org:localhost\">Alice (XMPP)</a>: hi",
            "m.mentions": {"user_ids": [
                "@bob:localhost",
                "@_bridge_xmpp_alice=40example.org:localhost",
                "@_bridge_xmpp_carol=40example.org:localhost",
                "@dave:example.org",
                "@bob:localhost",
                "@_bridge_xmpp_Bad:localhost",
                "not a user id",
                42,
            ]},
        }));
        let matrix = adapter();
        let xmpp = AdapterId::new("xmpp");
        let expected = [
            (&matrix, "@bob:localhost", "Bob"),
            (&xmpp, "alice@example.org", "Alice (XMPP)"),
            (&xmpp, "carol@example.org", "carol@example.org"),
            (&matrix, "@dave:example.org", "dave"),
        ];
        assert_eq!(
            content.mentions.len(),
            expected.len(),
            "{:?}",
            content.mentions
        );
        for (mention, (adapter, user, display)) in content.mentions.iter().zip(expected) {
            assert_eq!(
                (
                    &mention.adapter,
                    mention.user.as_str(),
                    mention.display.as_str()
                ),
                (adapter, user, display)
            );
        }
        // Without m.mentions (older clients): the pills.
        let (content, ..) = message(json!({
            "msgtype": "m.text",
            "body": "Bob: hi",
            "format": "org.matrix.custom.html",
            "formatted_body": "<a href=\"https://matrix.to/#/@bob:localhost\">Bob</a>: hi",
        }));
        assert_eq!(content.mentions.len(), 1);
        assert_eq!(content.mentions[0].display, "Bob");
        // An explicit empty m.mentions: nobody, whatever the pills.
        let (content, ..) = message(json!({
            "msgtype": "m.text",
            "body": "Bob: hi",
            "format": "org.matrix.custom.html",
            "formatted_body": "<a href=\"https://matrix.to/#/@bob:localhost\">Bob</a>: hi",
            "m.mentions": {},
        }));
        assert!(content.mentions.is_empty());
        // Malformed m.mentions: ignored, the message still bridged.
        for bad in [
            json!("x"),
            json!([1]),
            json!({"user_ids": "@bob:localhost"}),
        ] {
            let (content, ..) = message(json!({
                "msgtype": "m.text",
                "body": "hi",
                "m.mentions": bad,
            }));
            assert_eq!(content, MessageContent::text("hi"));
        }
    }

    #[test]
    fn too_many_mentions_are_capped() {
        let ids: Vec<String> = (0..1000).map(|i| format!("@u{i}:localhost")).collect();
        let (content, ..) = message(json!({
            "msgtype": "m.text",
            "body": "everyone",
            "m.mentions": {"user_ids": ids},
        }));
        assert_eq!(content.mentions.len(), MAX_MENTIONS);
    }

    #[test]
    fn media() {
        let image = json!({
            "msgtype": "m.image",
            "body": "cat.png",
            "filename": "cat.png",
            "url": "mxc://localhost/AbCdEf",
            "info": {"mimetype": "image/png", "size": 31_337, "w": 640, "h": 480,
                "thumbnail_url": "mxc://localhost/thumb"},
        });
        let (content, ..) = message(image);
        assert_eq!(content.text.body(), "");
        assert_eq!(
            content.attachments,
            [Attachment {
                name: "cat.png".into(),
                url: "mxc://localhost/AbCdEf".into(),
                mime: Some("image/png".into()),
                size: Some(31_337),
                width: Some(640),
                height: Some(480),
            }]
        );
        // No filename: the body is the name, no caption.
        let (content, ..) = message(json!({
            "msgtype": "m.file",
            "body": "report.pdf",
            "url": "mxc://localhost/pdf",
        }));
        assert_eq!(content.text.body(), "");
        assert_eq!(content.attachments[0].name, "report.pdf");
        assert_eq!(content.attachments[0].mime, None);
        // A filename different from the body: the body is a caption, possibly formatted.
        let (content, ..) = message(json!({
            "msgtype": "m.video",
            "body": "look at *this*",
            "format": "org.matrix.custom.html",
            "formatted_body": "look at <em>this</em>",
            "filename": "clip.mp4",
            "url": "mxc://localhost/clip",
            "info": {"mimetype": "video/mp4", "duration": 1000, "w": "wide", "h": -1, "size": 1.5},
        }));
        assert_eq!(content.text, RichText::from_html("look at <em>this</em>"));
        let attachment = &content.attachments[0];
        assert_eq!(attachment.name, "clip.mp4");
        assert_eq!(
            (attachment.width, attachment.height, attachment.size),
            (None, None, None)
        );
        assert_eq!(attachment.mime.as_deref(), Some("video/mp4"));
        // Audio, with an info that is not an object.
        let (content, ..) = message(json!({
            "msgtype": "m.audio",
            "body": "voice message",
            "url": "mxc://localhost/ogg",
            "info": "none",
        }));
        assert_eq!(content.attachments[0].name, "voice message");
        // Encrypted media: nothing; media elsewhere than mxc: or without url: malformed.
        nothing(&event(
            "m.room.message",
            json!({
                "msgtype": "m.image",
                "body": "secret.png",
                "file": {"url": "mxc://localhost/enc", "key": {}, "iv": "", "hashes": {}, "v": "v2"},
            }),
        ));
        malformed(&event(
            "m.room.message",
            json!({"msgtype": "m.image", "body": "x.png", "url": "http://169.254.169.254/"}),
        ));
        malformed(&event(
            "m.room.message",
            json!({"msgtype": "m.image", "body": "x.png"}),
        ));
        malformed(&event(
            "m.room.message",
            json!({"msgtype": "m.image", "body": "x.png", "url": 7}),
        ));
    }

    #[test]
    fn media_reply_has_its_caption_fallback_cut() {
        let (content, reply, _) = message(json!({
            "msgtype": "m.image",
            "body": "> <@bob:localhost> hi\n\nmy cat",
            "filename": "cat.png",
            "url": "mxc://localhost/cat",
            "m.relates_to": {"m.in_reply_to": {"event_id": "$hi"}},
        }));
        assert_eq!(reply.as_deref(), Some("$hi"));
        assert_eq!(content.text.body(), "my cat");
    }

    #[test]
    fn stickers() {
        let ev = event(
            "m.sticker",
            json!({
                "body": "Landing",
                "url": "mxc://localhost/sticker",
                "info": {"mimetype": "image/webp", "w": 256, "h": 256, "size": 8000},
            }),
        );
        let EventKind::Message { content, .. } = kind_of(&ev) else {
            panic!("not a message");
        };
        assert_eq!(content.text.body(), "");
        assert_eq!(content.attachments[0].name, "Landing");
        assert_eq!(content.attachments[0].width, Some(256));
        malformed(&event("m.sticker", json!({"body": "x"})));
    }

    #[test]
    fn reactions() {
        let ev = event(
            "m.reaction",
            json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": "$msg", "key": "👍"}}),
        );
        assert_eq!(
            kind_of(&ev),
            EventKind::Reaction {
                target: RemoteEventId::new("$msg"),
                key: "👍".into(),
            }
        );
        for bad in [
            json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": "$msg"}}),
            json!({"m.relates_to": {"rel_type": "m.annotation", "key": "👍"}}),
            json!({"m.relates_to": {"rel_type": "m.reference", "event_id": "$m", "key": "👍"}}),
            json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": "$m", "key": ""}}),
            json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": "$m", "key": 1}}),
            json!({"m.relates_to": [1, 2]}),
            json!({"key": "👍"}),
        ] {
            malformed(&event("m.reaction", bad));
        }
    }

    #[test]
    fn redactions() {
        // Room version 11: in the content (Synapse also copies it to the top level).
        let mut ev = event(
            "m.room.redaction",
            json!({"redacts": "$v11", "reason": "spam"}),
        );
        assert_eq!(
            kind_of(&ev),
            EventKind::Redaction {
                target: RemoteEventId::new("$v11"),
                reason: Some("spam".into()),
            }
        );
        ev["redacts"] = json!("$v11");
        assert!(
            matches!(kind_of(&ev), EventKind::Redaction { target, .. } if target.as_str() == "$v11")
        );
        // Earlier versions: top level only.
        let mut ev = event("m.room.redaction", json!({}));
        ev["redacts"] = json!("$old");
        ev["content"] = json!({"reason": 5});
        assert_eq!(
            kind_of(&ev),
            EventKind::Redaction {
                target: RemoteEventId::new("$old"),
                reason: None,
            }
        );
        malformed(&event("m.room.redaction", json!({"reason": "no target"})));
        malformed(&event("m.room.redaction", json!({"redacts": ["$x"]})));
    }

    fn member(
        sender: &str,
        state_key: &str,
        content: Value,
        prev: Option<Value>,
    ) -> Result<Option<InboundEvent>, TranslateError> {
        let mut ev = event("m.room.member", content);
        ev["sender"] = json!(sender);
        ev["state_key"] = json!(state_key);
        if let Some(prev) = prev {
            ev["unsigned"]["prev_content"] = prev;
            ev["unsigned"]["replaces_state"] = json!("$previous");
        }
        translate(&ev)
    }

    fn change(event: &InboundEvent) -> (MembershipChange, Option<&str>) {
        match &event.kind {
            EventKind::Membership { change, reason } => (*change, reason.as_deref()),
            other => panic!("not a membership change: {other:?}"),
        }
    }

    #[test]
    fn membership_changes() {
        let joined = json!({"membership": "join", "displayname": "Bob", "avatar_url": "mxc://localhost/bob"});
        // A first join: the name and avatar come with it.
        let join = member("@bob:localhost", "@bob:localhost", joined.clone(), None)
            .expect("ok")
            .expect("some");
        assert_eq!(change(&join), (MembershipChange::Join, None));
        assert_eq!(join.sender.id.as_str(), "@bob:localhost");
        assert_eq!(join.sender.display_name.as_deref(), Some("Bob"));
        assert_eq!(join.sender.avatar.as_deref(), Some("mxc://localhost/bob"));
        // Accepting an invitation is a join.
        let join = member(
            "@bob:localhost",
            "@bob:localhost",
            joined.clone(),
            Some(json!({"membership": "invite"})),
        )
        .expect("ok")
        .expect("some");
        assert_eq!(change(&join).0, MembershipChange::Join);
        // The same membership again: nothing, unless the profile changed.
        let same = member(
            "@bob:localhost",
            "@bob:localhost",
            joined.clone(),
            Some(joined.clone()),
        );
        assert_eq!(same.expect("ok"), None);
        let renamed = member(
            "@bob:localhost",
            "@bob:localhost",
            json!({"membership": "join", "displayname": "Robert", "avatar_url": "mxc://localhost/bob"}),
            Some(joined.clone()),
        )
        .expect("ok")
        .expect("some");
        assert_eq!(
            renamed.kind,
            EventKind::Profile {
                display_name: Some("Robert".into()),
                avatar: None,
            }
        );
        assert_eq!(renamed.sender.display_name.as_deref(), Some("Robert"));
        let new_avatar = member(
            "@bob:localhost",
            "@bob:localhost",
            json!({"membership": "join", "displayname": "Bob", "avatar_url": "mxc://localhost/new"}),
            Some(joined.clone()),
        )
        .expect("ok")
        .expect("some");
        assert_eq!(
            new_avatar.kind,
            EventKind::Profile {
                display_name: None,
                avatar: Some("mxc://localhost/new".into()),
            }
        );
        // A removed display name: the user ID, which clients then show.
        let unnamed = member(
            "@bob:localhost",
            "@bob:localhost",
            json!({"membership": "join", "avatar_url": "mxc://localhost/bob"}),
            Some(joined.clone()),
        )
        .expect("ok")
        .expect("some");
        assert_eq!(
            unnamed.kind,
            EventKind::Profile {
                display_name: Some("@bob:localhost".into()),
                avatar: None,
            }
        );
        // Only the avatar removed: nothing the model can say.
        let no_avatar = member(
            "@bob:localhost",
            "@bob:localhost",
            json!({"membership": "join", "displayname": "Bob"}),
            Some(joined.clone()),
        );
        assert_eq!(no_avatar.expect("ok"), None);
        // Leaving: the sender is the member.
        let left = member(
            "@bob:localhost",
            "@bob:localhost",
            json!({"membership": "leave"}),
            Some(joined.clone()),
        )
        .expect("ok")
        .expect("some");
        assert_eq!(change(&left), (MembershipChange::Leave, None));
        let kicked = member(
            "@mod:localhost",
            "@bob:localhost",
            json!({"membership": "leave", "reason": "flooding"}),
            Some(joined.clone()),
        )
        .expect("ok")
        .expect("some");
        // Kicked or banned by someone else: the moderator's moderation of the member, named
        // as they were; the user of another network when the member is one of our ghosts.
        let bob = Sender {
            adapter: adapter(),
            user: RemoteUserId::new("@bob:localhost"),
            display_name: Some("Bob".into()),
            avatar: None,
        };
        assert_eq!(kicked.sender.id.as_str(), "@mod:localhost");
        assert_eq!(
            kicked.kind,
            EventKind::Moderation {
                target: bob.clone(),
                action: ModerationAction::Kick,
                reason: Some("flooding".into()),
            }
        );
        let banned = member(
            "@mod:localhost",
            "@bob:localhost",
            json!({"membership": "ban", "reason": "spam"}),
            Some(joined.clone()),
        )
        .expect("ok")
        .expect("some");
        assert_eq!(
            banned.kind,
            EventKind::Moderation {
                target: bob.clone(),
                action: ModerationAction::Ban,
                reason: Some("spam".into()),
            }
        );
        let unbanned = member(
            "@mod:localhost",
            "@bob:localhost",
            json!({"membership": "leave"}),
            Some(json!({"membership": "ban"})),
        )
        .expect("ok")
        .expect("some");
        assert_eq!(
            unbanned.kind,
            EventKind::Moderation {
                target: Sender {
                    display_name: None,
                    ..bob
                },
                action: ModerationAction::Unban,
                reason: None,
            }
        );
        let ghost = naming().ghost_user_id(
            &AdapterId::new("xmpp"),
            &RemoteUserId::new("xavier@example.org"),
        );
        let ghost_kicked = member(
            "@mod:localhost",
            &ghost,
            json!({"membership": "leave"}),
            Some(joined.clone()),
        )
        .expect("ok")
        .expect("some");
        assert_eq!(
            ghost_kicked.kind,
            EventKind::Moderation {
                target: Sender {
                    adapter: AdapterId::new("xmpp"),
                    user: RemoteUserId::new("xavier@example.org"),
                    display_name: Some("Bob".into()),
                    avatar: None,
                },
                action: ModerationAction::Kick,
                reason: None,
            }
        );
        // An invitation: the sender is the invitee.
        let invited = member(
            "@alice:localhost",
            "@carol:localhost",
            json!({"membership": "invite", "displayname": "Carol"}),
            None,
        )
        .expect("ok")
        .expect("some");
        assert_eq!(change(&invited), (MembershipChange::Invite, None));
        assert_eq!(invited.sender.id.as_str(), "@carol:localhost");
        assert_eq!(invited.sender.display_name.as_deref(), Some("Carol"));
        // Nothing modelled: a rejected invitation, a knock, a second ban (an unban is above).
        for (sender, now, prev) in [
            ("@carol:localhost", "leave", "invite"),
            ("@carol:localhost", "knock", "leave"),
            ("@mod:localhost", "ban", "ban"),
            ("@mod:localhost", "invite", "invite"),
        ] {
            let result = member(
                sender,
                "@carol:localhost",
                json!({ "membership": now }),
                Some(json!({ "membership": prev })),
            );
            assert_eq!(result.expect("ok"), None, "{prev} → {now}");
        }
        // Older servers put prev_content at the top level.
        let mut ev = event("m.room.member", json!({"membership": "leave"}));
        ev["state_key"] = json!("@alice:localhost");
        ev["prev_content"] = json!({"membership": "join"});
        let left = translate(&ev).expect("ok").expect("some");
        assert_eq!(change(&left).0, MembershipChange::Leave);
        // Malformed: a membership that is not a string, a state key that is not one.
        malformed(&{
            let mut ev = event("m.room.member", json!({"membership": 1}));
            ev["state_key"] = json!("@alice:localhost");
            ev
        });
        malformed(&{
            let mut ev = event("m.room.member", json!({"membership": "join"}));
            ev["state_key"] = json!(["@alice:localhost"]);
            ev
        });
        // No membership at all (a redacted state event would keep it): nothing.
        assert_eq!(
            member("@a:localhost", "@a:localhost", json!({}), None).expect("ok"),
            None
        );
    }

    fn state(event_type: &str, state_key: &str, content: Value) -> Value {
        let mut ev = event(event_type, content);
        ev["state_key"] = json!(state_key);
        ev
    }

    #[test]
    fn topic_and_name() {
        assert_eq!(
            kind_of(&state("m.room.topic", "", json!({"topic": "Rust & XMPP"}))),
            EventKind::Topic {
                text: "Rust & XMPP".into()
            }
        );
        assert_eq!(
            kind_of(&state("m.room.name", "", json!({"name": "Lobby"}))),
            EventKind::RoomName {
                name: "Lobby".into()
            }
        );
        // Cleared.
        assert_eq!(
            kind_of(&state("m.room.name", "", json!({}))),
            EventKind::RoomName { name: "".into() }
        );
        assert_eq!(
            kind_of(&state("m.room.topic", "", json!({"topic": null}))),
            EventKind::Topic { text: "".into() }
        );
        malformed(&state("m.room.topic", "", json!({"topic": {"text": "x"}})));
        // Not the room's: nothing.
        nothing(&state(
            "m.room.topic",
            "@alice:localhost",
            json!({"topic": "x"}),
        ));
        // A topic or name event without state key is not state.
        nothing(&event("m.room.topic", json!({"topic": "x"})));
    }

    #[test]
    fn other_state_events_are_nothing() {
        nothing(&state(
            "m.room.create",
            "",
            json!({"creator": "@alice:localhost", "room_version": "11"}),
        ));
        nothing(&state(
            "m.room.power_levels",
            "",
            json!({"users": {"@alice:localhost": 100}}),
        ));
        nothing(&state(
            "m.room.join_rules",
            "",
            json!({"join_rule": "public"}),
        ));
        nothing(&state("org.example.state", "key", json!({"x": 1})));
        // A message type with a state key is state, not a message.
        nothing(&state(
            "m.room.message",
            "",
            json!({"msgtype": "m.text", "body": "x"}),
        ));
    }

    #[test]
    fn polls_are_text_and_votes_are_not_bridged() {
        let body = |kind: EventKind<RemoteEventId>| match kind {
            EventKind::Message {
                content, reply_to, ..
            } => (content.text.body().to_owned(), reply_to),
            other => panic!("not a message: {other:?}"),
        };
        // As Element sends it (the unstable names).
        let unstable = json!({
            "org.matrix.msc3381.poll.start": {
                "question": {"org.matrix.msc1767.text": "Tea or coffee?"},
                "kind": "org.matrix.msc3381.poll.disclosed",
                "max_selections": 1,
                "answers": [
                    {"id": "a", "org.matrix.msc1767.text": "Tea"},
                    {"id": "b", "org.matrix.msc1767.text": "Coffee"},
                ],
            },
            "org.matrix.msc1767.text": "Tea or coffee?\n1. Tea\n2. Coffee",
        });
        let expected = String::from("Poll: Tea or coffee?\n1. Tea\n2. Coffee");
        assert_eq!(
            body(kind_of(&event("org.matrix.msc3381.poll.start", unstable))),
            (expected.clone(), None)
        );
        // The stable names (Matrix 1.7), text as lists of representations.
        let stable = json!({
            "m.poll": {
                "question": {"m.text": [{"mimetype": "text/html", "body": "<b>Tea</b> or coffee?"}, {"body": "Tea or coffee?"}]},
                "answers": [{"m.id": "a", "m.text": [{"body": "Tea"}]}, {"m.id": "b", "m.text": [{"body": "Coffee"}]}],
            },
            "m.text": [{"body": "Tea or coffee?"}],
        });
        assert_eq!(
            body(kind_of(&event("m.poll.start", stable))),
            (expected, None)
        );
        // Unreadable poll: the event's own fallback; neither: nothing.
        assert_eq!(
            body(kind_of(&event(
                "m.poll.start",
                json!({"m.poll": {}, "m.text": [{"body": "a poll"}]})
            )))
            .0,
            "a poll"
        );
        nothing(&event("m.poll.start", json!({"m.poll": {}})));
        // The end answers the poll with its outcome.
        let end = json!({
            "m.relates_to": {"rel_type": "m.reference", "event_id": "$poll"},
            "org.matrix.msc3381.poll.end": {},
            "org.matrix.msc1767.text": "The poll has closed. Top answer: Tea",
        });
        assert_eq!(
            body(kind_of(&event("org.matrix.msc3381.poll.end", end))),
            (
                "The poll has closed. Top answer: Tea".to_owned(),
                Some(RemoteEventId::new("$poll"))
            )
        );
        let vote = json!({
            "m.relates_to": {"rel_type": "m.reference", "event_id": "$poll"},
            "org.matrix.msc3381.poll.response": {"answers": ["a"]},
        });
        nothing(&event("org.matrix.msc3381.poll.response", vote.clone()));
        nothing(&event("m.poll.response", vote));
    }

    #[test]
    fn custom_and_skipped_events() {
        let content = json!({"question": "tea?", "answers": ["yes", "no"]});
        assert_eq!(
            kind_of(&event("org.example.poll", content.clone())),
            EventKind::Custom {
                event_type: "org.example.poll".into(),
                content,
            }
        );
        nothing(&event(
            "m.room.encrypted",
            json!({"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgA", "device_id": "DEV", "sender_key": "k", "session_id": "s"}),
        ));
        nothing(&event(
            "m.call.invite",
            json!({"call_id": "1", "version": 1, "lifetime": 60000, "offer": {"type": "offer", "sdp": ""}}),
        ));
        nothing(&event(
            "m.key.verification.start",
            json!({"method": "m.sas.v1"}),
        ));
        nothing(&event("m.room.pinned_events", json!({"pinned": []})));
        // Redacted or empty content: nothing.
        let mut redacted = event("m.room.message", json!({}));
        redacted["unsigned"]["redacted_because"] = json!({"type": "m.room.redaction"});
        nothing(&redacted);
        let mut redacted = event("m.room.message", json!({"msgtype": "m.text", "body": "x"}));
        redacted["unsigned"]["redacted_because"] = json!({"type": "m.room.redaction"});
        nothing(&redacted);
        nothing(&event("org.example.poll", json!({})));
        let mut no_content = event("m.room.message", json!({}));
        if let Some(ev) = no_content.as_object_mut() {
            ev.remove("content");
        }
        nothing(&no_content);
    }

    #[test]
    fn envelope_errors() {
        malformed(&json!("an event"));
        malformed(&json!([1, 2]));
        malformed(&json!(null));
        for field in ["event_id", "sender", "type"] {
            let mut ev = event("m.room.message", json!({"msgtype": "m.text", "body": "x"}));
            if let Some(ev) = ev.as_object_mut() {
                ev.remove(field);
            }
            malformed(&ev);
            let mut ev = event("m.room.message", json!({"msgtype": "m.text", "body": "x"}));
            ev[field] = json!(12);
            malformed(&ev);
            ev[field] = json!("");
            malformed(&ev);
        }
        // The room: room_id, else the one given (a /sync timeline), else an error.
        let mut ev = event("m.room.message", json!({"msgtype": "m.text", "body": "x"}));
        if let Some(ev) = ev.as_object_mut() {
            ev.remove("room_id");
        }
        malformed(&ev);
        let (adapter, naming) = (adapter(), naming());
        let ctx = InboundCtx {
            adapter: &adapter,
            naming: &naming,
        };
        let synced = timeline_event(&ev, Some("!sync:localhost"), &ctx)
            .expect("ok")
            .expect("some");
        assert_eq!(synced.room.as_str(), "!sync:localhost");
        // Content of the wrong type.
        malformed(&event("m.room.message", json!("hello")));
        malformed(&event("m.room.message", json!([1])));
        // A timestamp that is no u64 is left out.
        let mut ev = event("m.room.message", json!({"msgtype": "m.text", "body": "x"}));
        ev["origin_server_ts"] = json!(-5);
        assert_eq!(translate(&ev).expect("ok").expect("some").ts, None);
        ev["origin_server_ts"] = json!("yesterday");
        assert_eq!(translate(&ev).expect("ok").expect("some").ts, None);
    }

    #[test]
    fn hostile_messages() {
        // A body that is not a string, no body, no msgtype.
        malformed(&event(
            "m.room.message",
            json!({"msgtype": "m.text", "body": 42}),
        ));
        malformed(&event("m.room.message", json!({"msgtype": "m.text"})));
        malformed(&event("m.room.message", json!({"body": "no msgtype"})));
        malformed(&event(
            "m.room.message",
            json!({"msgtype": ["m.text"], "body": "x"}),
        ));
        // m.relates_to of the wrong shape: no relation, the message still bridged.
        for relates_to in [
            json!([1, 2, 3]),
            json!("$event"),
            json!({"m.in_reply_to": "$event"}),
            json!({"m.in_reply_to": {"event_id": 5}}),
            json!({"rel_type": 7, "event_id": "$x"}),
        ] {
            let (content, reply, thread) = message(json!({
                "msgtype": "m.text",
                "body": "hi",
                "m.relates_to": relates_to,
            }));
            assert_eq!((content.text.body(), reply, thread), ("hi", None, None));
        }
    }

    #[test]
    fn huge_bodies() {
        let huge = "a".repeat(1 << 20);
        let (content, ..) = message(json!({"msgtype": "m.text", "body": huge}));
        assert_eq!(content.text.body().len(), 1 << 20);
        let html = "<b>x</b> ".repeat((1 << 20) / 9);
        let (content, ..) = message(json!({
            "msgtype": "m.text",
            "body": "x",
            "format": "org.matrix.custom.html",
            "formatted_body": html,
        }));
        assert!(content.text.is_formatted());
        // A reply fallback of a million quoted lines.
        let quoted = format!("> <@bob:localhost> q\n{}\nreal", "> q\n".repeat(250_000));
        let (content, ..) = message(json!({
            "msgtype": "m.text",
            "body": quoted,
            "m.relates_to": {"m.in_reply_to": {"event_id": "$x"}},
        }));
        assert_eq!(content.text.body(), "real");
    }

    #[test]
    fn deeply_nested_html() {
        let depth = 20_000;
        let html = format!(
            "{}deep{}",
            "<blockquote><b><i><ul><li>".repeat(depth),
            "</li></ul></i></b></blockquote>".repeat(depth)
        );
        let (content, ..) = message(json!({
            "msgtype": "m.text",
            "body": "deep",
            "format": "org.matrix.custom.html",
            "formatted_body": html,
            "m.mentions": {},
        }));
        assert!(content.text.body().contains("deep"));
        // Unclosed nesting, and pills deep inside.
        let html = format!(
            "{}<a href=\"https://matrix.to/#/@bob:localhost\">Bob</a>",
            "<blockquote>".repeat(depth)
        );
        let (content, ..) = message(json!({
            "msgtype": "m.text",
            "body": "Bob",
            "format": "org.matrix.custom.html",
            "formatted_body": html,
        }));
        assert!(content.mentions.len() <= 1);
    }

    #[test]
    fn typing() {
        let ev = json!({
            "type": "m.typing",
            "room_id": ROOM,
            "content": {"user_ids": ["@alice:localhost", "@bob:example.org", 3, "@alice:localhost"]},
        });
        assert_eq!(
            ephemeral_event(&ev, None).expect("ok"),
            [Ephemeral::Typing {
                room: ROOM.into(),
                users: vec!["@alice:localhost".into(), "@bob:example.org".into()],
            }]
        );
        // In /sync, without room_id.
        let ev = json!({"type": "m.typing", "content": {"user_ids": []}});
        assert_eq!(
            ephemeral_event(&ev, Some("!r:localhost")).expect("ok"),
            [Ephemeral::Typing {
                room: "!r:localhost".into(),
                users: vec![],
            }]
        );
        assert!(ephemeral_event(&ev, None).is_err());
        assert!(
            ephemeral_event(
                &json!({"type": "m.typing", "room_id": ROOM, "content": {}}),
                None
            )
            .is_err()
        );
        assert!(
            ephemeral_event(
                &json!({"type": "m.typing", "room_id": ROOM, "content": "x"}),
                None
            )
            .is_err()
        );
    }

    #[test]
    fn receipts() {
        let ev = json!({
            "type": "m.receipt",
            "room_id": ROOM,
            "content": {
                "$e1": {
                    "m.read": {
                        "@alice:localhost": {"ts": 1_700_000_000_000_u64},
                        "@bob:localhost": {"ts": 1_700_000_000_001_u64, "thread_id": "main"},
                    },
                    "m.read.private": {"@carol:localhost": {"ts": 1}},
                },
                "$e2": {"m.read": {"@dave:localhost": {"ts": 2, "thread_id": "$root"}}},
                "$e3": {"m.read.private": {"@eve:localhost": {"ts": 3}}},
                "$e4": "garbage",
                "$e5": {"m.read": ["@x:localhost"]},
            },
        });
        let read = |user: &str, event_id: &str| Ephemeral::Read {
            room: ROOM.into(),
            user: user.into(),
            event_id: event_id.into(),
        };
        let mut got = ephemeral_event(&ev, None).expect("ok");
        got.sort_by_key(|e| format!("{e:?}"));
        assert_eq!(
            got,
            [
                read("@alice:localhost", "$e1"),
                read("@bob:localhost", "$e1"),
                read("@dave:localhost", "$e2"),
            ]
        );
    }

    #[test]
    fn other_ephemeral_events() {
        let presence = json!({
            "type": "m.presence",
            "sender": "@alice:localhost",
            "content": {"presence": "online", "last_active_ago": 5, "currently_active": true},
        });
        assert_eq!(ephemeral_event(&presence, None).expect("ok"), []);
        assert!(ephemeral_event(&json!({"content": {}}), None).is_err());
        assert!(ephemeral_event(&json!(42), None).is_err());
    }

    #[test]
    fn typing_transitions() {
        let set = |users: &[&str]| users.iter().map(|u| (*u).to_owned()).collect::<Vec<_>>();
        let changes = typing_changes(&set(&["@a:x", "@b:x"]), &set(&["@b:x", "@c:x", "@c:x"]));
        assert_eq!(
            changes,
            [("@a:x".to_owned(), false), ("@c:x".to_owned(), true)]
        );
        assert_eq!(typing_changes(&set(&["@a:x"]), &set(&["@a:x"])), []);
        assert_eq!(
            typing_changes(&[], &set(&["@a:x"])),
            [("@a:x".to_owned(), true)]
        );
        assert_eq!(
            typing_changes(&set(&["@a:x"]), &[]),
            [("@a:x".to_owned(), false)]
        );
    }

    #[test]
    fn moderators_come_from_power_levels_and_creation() {
        let levels = json!({ "users": { "@mod:x": 50, "@admin:x": "100" }, "users_default": 0, "redact": 50 });
        assert!(may_redact_others(&levels, &[], "@mod:x"));
        assert!(may_redact_others(&levels, &[], "@admin:x"));
        assert!(!may_redact_others(&levels, &[], "@someone:x"));
        let lax = json!({ "users_default": 60 });
        assert!(may_redact_others(&lax, &[], "@someone:x"));
        assert!(!may_redact_others(&Value::Null, &[], "@someone:x"));
        let v12 = json!({ "sender": "@creator:x", "content": { "room_version": "12", "additional_creators": ["@co:x"] } });
        let creators = creators(&v12);
        assert_eq!(creators, ["@creator:x", "@co:x"]);
        assert!(may_redact_others(&levels, &creators, "@co:x"));
        let v10 = json!({ "sender": "@creator:x", "content": { "room_version": "10" } });
        assert!(super::creators(&v10).is_empty());
    }

    #[test]
    fn standing_comes_from_the_levels_clients_name() {
        let levels = json!({
            "users": { "@admin:x": 100, "@mod:x": "50", "@half:x": 49, "@quiet:x": -1, "@bot:x": 101 },
            "users_default": 0,
            "events": { "m.room.message": 0 },
        });
        let role = |user| role_of(&levels, &["@owner:x".to_owned()], user);
        assert_eq!(role("@owner:x"), Role::Owner);
        assert_eq!(role("@bot:x"), Role::Admin);
        assert_eq!(role("@admin:x"), Role::Admin);
        assert_eq!(role("@mod:x"), Role::Moderator);
        assert_eq!(role("@half:x"), Role::Member);
        assert_eq!(role("@quiet:x"), Role::Muted);
        assert_eq!(role("@nobody:x"), Role::Member);
        // Sending needs more than the default: everyone not named is muted.
        let strict = json!({ "users": { "@ok:x": 10 }, "events_default": 10 });
        assert_eq!(role_of(&strict, &[], "@nobody:x"), Role::Muted);
        assert_eq!(role_of(&strict, &[], "@ok:x"), Role::Member);
        assert_eq!(role_of(&Value::Null, &[], "@nobody:x"), Role::Member);
    }

    #[test]
    fn a_power_levels_change_names_whose_standing_moved() {
        let old = json!({ "users": { "@a:x": 100, "@b:x": 50, "@c:x": 20 } });
        let new = json!({ "users": { "@a:x": 100, "@c:x": 50, "@d:x": -5, "@e:x": 1 } });
        assert_eq!(
            role_changes(&old, &new, &[], &[]),
            [
                ("@b:x".to_owned(), Role::Member),
                ("@c:x".to_owned(), Role::Moderator),
                ("@d:x".to_owned(), Role::Muted),
            ]
        );
        assert!(role_changes(&new, &new, &[], &[]).is_empty());
        assert!(!defaults_moved(&old, &new));
        // A creator stays the owner whatever the levels say.
        assert!(role_changes(&old, &new, &["@b:x".to_owned()], &[]).len() == 2);
    }

    #[test]
    fn a_change_of_the_defaults_moves_the_members_it_does_not_name() {
        let members = ["@a:x", "@m:x", "@n:x", "@owner:x"].map(str::to_owned);
        let creators = ["@owner:x".to_owned()];
        let open = json!({ "users": { "@a:x": 100 }, "events_default": 0 });
        // Announcements only: sending needs 50, which nobody unnamed has.
        let read_only = json!({ "users": { "@a:x": 100 }, "events_default": 50 });
        assert!(defaults_moved(&open, &read_only));
        assert_eq!(
            role_changes(&open, &read_only, &creators, &members),
            [
                ("@m:x".to_owned(), Role::Muted),
                ("@n:x".to_owned(), Role::Muted),
            ]
        );
        // Without the members, nobody unnamed is known to have moved.
        assert!(role_changes(&open, &read_only, &creators, &[]).is_empty());
        // Everyone a moderator by default; a member named in `users` with 0 stays a member.
        let all_mods = json!({ "users": { "@a:x": 100, "@n:x": 0 }, "users_default": 50 });
        assert!(defaults_moved(&open, &all_mods));
        assert_eq!(
            role_changes(&open, &all_mods, &creators, &members),
            [("@m:x".to_owned(), Role::Moderator)]
        );
        // The level to send set per event type counts as the level to send.
        let per_type = json!({ "users": { "@a:x": 100 }, "events": { "m.room.message": 10 } });
        assert!(defaults_moved(&open, &per_type));
        assert!(!defaults_moved(&per_type, &per_type));
    }
}
