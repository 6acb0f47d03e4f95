//! The neutral model → what to do on a Matrix homeserver.
//!
//! [`actions`] turns an [`OutboundEvent`] into a list of [`Action`]s (sends, redactions, state,
//! typing…) for the adapter to perform in order; [`file_content`] builds the message of an
//! attachment once the adapter has uploaded it.
//!
//! Reply fallbacks are never written (deprecated since Matrix 1.13): replies are only the
//! `m.in_reply_to` relation.

use bridge_core::richtext::html::escape;
use bridge_core::{
    AdapterError, AdapterId, Attachment, EventKind, MembershipChange, Mention, ModerationAction,
    MsgType, OutboundEvent, RemoteUserId, RichText, Role, Sender,
};
use serde_json::{Map, Value, json};

use super::HTML_FORMAT;
use super::ids::{Naming, is_user_id};

type Object = Map<String, Value>;

/// One thing to do on the homeserver for an [`OutboundEvent`], in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// `PUT /rooms/{room}/send/{event_type}/{txn}`.
    Send {
        /// The event type, e.g. `m.room.message`.
        event_type: String,
        /// The event content.
        content: Value,
    },
    /// Upload the attachment (the adapter fetches and uploads it), then send the
    /// `m.room.message` that [`file_content`] builds from the upload.
    SendFile {
        /// The file.
        attachment: Attachment,
        /// `m.image`, `m.video`, `m.audio` or `m.file`, from the MIME type ([`file_msgtype`]).
        msgtype: &'static str,
        /// A caption to send with the file.
        caption: Option<RichText>,
        /// The event the file answers.
        reply_to: Option<String>,
        /// The root of the thread the file is posted in.
        thread: Option<String>,
    },
    /// `PUT /rooms/{room}/redact/{event_id}/{txn}`.
    Redact {
        /// The event to redact.
        event_id: String,
        /// Why, shown to the room.
        reason: Option<String>,
    },
    /// `PUT /rooms/{room}/state/{event_type}/{state_key}`.
    State {
        /// The state event type, e.g. `m.room.topic`.
        event_type: String,
        /// The state key (`""` for room-wide state).
        state_key: String,
        /// The event content.
        content: Value,
    },
    /// `PUT /rooms/{room}/typing/{user}`.
    Typing {
        /// Whether the ghost is typing now.
        active: bool,
    },
    /// `POST /rooms/{room}/receipt/m.read/{event_id}`.
    Receipt {
        /// The event read up to.
        event_id: String,
    },
    /// The ghost joins the room (already joined: the adapter makes it a no-op).
    Join,
    /// The ghost leaves the room.
    Leave {
        /// Why, when given (a kick or ban on the other side).
        reason: Option<String>,
    },
    /// Kick, ban or unban `user` (a Matrix user, or the ghost of someone of another network)
    /// as the ghost of the moderator who did it on their side, else as the bot.
    Moderate {
        /// The user's Matrix ID.
        user: String,
        /// What to do.
        action: ModerationAction,
        /// Why, when given.
        reason: Option<String>,
    },
    /// Set the ghost's power level to what shows `role` ([`with_role`]): the adapter reads the
    /// room's power levels and writes them back as the bot.
    Power {
        /// The standing the ghost's user has on their side.
        role: Role,
    },
    /// Set the ghost's display name and/or avatar (the adapter sets it globally and, where
    /// needed, per room).
    Profile {
        /// The new display name.
        display_name: Option<String>,
        /// The new avatar (a URL of the source network; the adapter uploads it).
        avatar: Option<String>,
    },
}

/// How an event is sent: as the author's own ghost (appservice mode) or by a relay bot that
/// names the author in the text.
#[derive(Debug, Clone)]
pub enum Voice<'a> {
    /// The author's ghost sends it: the text is theirs as is.
    Ghost,
    /// A relay bot sends it for the author.
    Relay {
        /// The text of a relayed message: `{name}` is replaced by the author's name and
        /// `{text}` by the text, e.g. `<{name}> {text}`. Without `{text}`, the text follows the
        /// format after a space.
        format: &'a str,
    },
}

/// The actions that deliver `ev` into its Matrix room.
///
/// * Message: an `m.room.message` (`m.text`, `m.emote`, `m.notice`) with the body, and
///   `org.matrix.custom.html` when the text is formatted; a reply as `m.in_reply_to`; a thread
///   as `m.thread` (falling back to a reply to the root when there is no explicit reply);
///   mentions as `m.mentions.user_ids` (a user that is a Matrix user ID as is, any other as
///   its ghost; without mentions, `m.mentions` is left out so that the homeserver's
///   keyword rules still notify people named in the text). Then one [`Action::SendFile`] per
///   attachment; without text, the first file carries the reply; every file carries the
///   thread. Empty text without attachments: nothing.
/// * Edit: an `m.replace` with `m.new_content`, and the new text with a `* ` in front as the
///   fallback; an empty `m.mentions` at the top level so that an edit notifies nobody again
///   (the new content's mentions are in `m.new_content`). Attachments of the new content are
///   not sent (Matrix edits of media need the upload).
/// * Reaction: an `m.reaction`; Unreact: a redaction of the reaction event, `Unsupported`
///   without it. Redaction: a redaction.
/// * Topic, RoomName: the `m.room.topic` / `m.room.name` state.
/// * Typing, ReadMarker, Profile: typing, receipt, profile. Membership: Join joins; Leave, Kick
///   and Ban leave (with the reason); Invite: nothing.
/// * Custom: its type and content as an event, `Unsupported` for an empty type, a content that
///   is not an object or a type starting with `m.room.` (state and encryption are not for
///   other networks to set).
/// * Presence: nothing (Matrix has no per-room presence to set).
///
/// With [`Voice::Relay`], messages and edits name the author (see [`Voice::Relay`]; an emote
/// becomes the `m.text` `* Name waves`), and are always formatted so that the name is bold;
/// reactions and their removal are `Unsupported` (the core then degrades them to text);
/// membership, profile, typing and read markers give nothing (the bot does not represent the
/// author); topic, name and redactions are the bot's.
pub fn actions(
    ev: &OutboundEvent,
    naming: &Naming,
    voice: &Voice<'_>,
) -> Result<Vec<Action>, AdapterError> {
    let relay = matches!(voice, Voice::Relay { .. });
    let unsupported = |what: &str| Err(AdapterError::Unsupported(what.to_owned()));
    Ok(match &ev.kind {
        EventKind::Message {
            content,
            reply_to,
            thread,
        } => {
            let mut out = Vec::new();
            let reply_to = reply_to.as_ref().map(|r| r.as_str());
            let thread = thread.as_ref().map(|t| t.as_str());
            let has_text = !content.text.body().trim().is_empty();
            if has_text {
                let mut message = text_content(content.msgtype, &content.text, voice, &ev.sender);
                add_mentions(&mut message, &content.mentions, naming);
                if let Some(relation) = relates_to(reply_to, thread) {
                    message.insert("m.relates_to".into(), relation);
                }
                out.push(send("m.room.message", message));
            }
            for (i, attachment) in content.attachments.iter().enumerate() {
                out.push(Action::SendFile {
                    attachment: attachment.clone(),
                    msgtype: file_msgtype(attachment.mime.as_deref()),
                    caption: None,
                    reply_to: reply_to.filter(|_| i == 0 && !has_text).map(str::to_owned),
                    thread: thread.map(str::to_owned),
                });
            }
            out
        }
        EventKind::Edit { target, new } => {
            let mut new_content = text_content(new.msgtype, &new.text, voice, &ev.sender);
            add_mentions(&mut new_content, &new.mentions, naming);
            let mut message = Object::new();
            for key in ["msgtype", "body", "format", "formatted_body"] {
                if let Some(value) = new_content.get(key) {
                    let value = match (key, value) {
                        ("body" | "formatted_body", Value::String(text)) => {
                            Value::String(format!("* {text}"))
                        }
                        _ => value.clone(),
                    };
                    message.insert(key.into(), value);
                }
            }
            message.insert("m.new_content".into(), Value::Object(new_content));
            message.insert(
                "m.relates_to".into(),
                json!({ "rel_type": "m.replace", "event_id": target.as_str() }),
            );
            message.insert("m.mentions".into(), json!({}));
            vec![send("m.room.message", message)]
        }
        EventKind::Reaction { .. } | EventKind::Unreact { .. } if relay => {
            return unsupported("a relay bot does not react for others");
        }
        EventKind::Reaction { target, key } => vec![Action::Send {
            event_type: "m.reaction".into(),
            content: json!({
                "m.relates_to": {
                    "rel_type": "m.annotation",
                    "event_id": target.as_str(),
                    "key": key,
                }
            }),
        }],
        EventKind::Unreact {
            reaction: Some(reaction),
            ..
        } => vec![Action::Redact {
            event_id: reaction.as_str().to_owned(),
            reason: None,
        }],
        EventKind::Unreact { reaction: None, .. } => {
            return unsupported("Matrix removes a reaction by redacting it, and its ID is unknown");
        }
        EventKind::Redaction { target, reason } => vec![Action::Redact {
            event_id: target.as_str().to_owned(),
            reason: reason.clone(),
        }],
        EventKind::Topic { text } => vec![state("m.room.topic", json!({ "topic": text }))],
        EventKind::RoomName { name } => vec![state("m.room.name", json!({ "name": name }))],
        EventKind::Membership { .. }
        | EventKind::Profile { .. }
        | EventKind::Typing { .. }
        | EventKind::ReadMarker { .. }
        | EventKind::Role { .. }
        | EventKind::Moderation { .. }
            if relay =>
        {
            Vec::new()
        }
        EventKind::Membership { change, reason } => match change {
            MembershipChange::Join => vec![Action::Join],
            MembershipChange::Leave | MembershipChange::Kick | MembershipChange::Ban => {
                vec![Action::Leave {
                    reason: reason.clone(),
                }]
            }
            MembershipChange::Invite => Vec::new(),
        },
        EventKind::Profile {
            display_name,
            avatar,
        } => vec![Action::Profile {
            display_name: display_name.clone(),
            avatar: avatar.clone(),
        }],
        EventKind::Typing { active } => vec![Action::Typing { active: *active }],
        EventKind::ReadMarker { up_to } => vec![Action::Receipt {
            event_id: up_to.as_str().to_owned(),
        }],
        EventKind::Presence { .. } => Vec::new(),
        EventKind::Role { role } => vec![Action::Power { role: *role }],
        EventKind::Moderation {
            target,
            action,
            reason,
        } => vec![Action::Moderate {
            user: matrix_user(&target.adapter, &target.user, naming),
            action: *action,
            reason: reason.clone(),
        }],
        EventKind::Custom {
            event_type,
            content,
        } => {
            if event_type.is_empty() || event_type.starts_with("m.room.") {
                return unsupported("this event type cannot be sent as a custom event");
            }
            if !content.is_object() {
                return unsupported("a Matrix event content must be an object");
            }
            vec![Action::Send {
                event_type: event_type.clone(),
                content: content.clone(),
            }]
        }
        other => return unsupported(other.name()),
    })
}

/// The power levels (content) with `user` at the level that shows `role`, for the bot `bot`
/// to write: `Ok(None)` when `user` stands so already. An owner or admin gets level 100, a
/// moderator 50, a member the room's default (their entry removed), a muted user one below the
/// level to send; never the bot's own level or more, which the bot could not take back (so an
/// admin under a bot of level 100 gets 99). `Err` says why the bot may not: its level is below
/// what changing the power levels takes, or not above the user's, or too low to show a
/// moderator.
pub fn with_role(
    levels: &Value,
    creators: &[String],
    bot: &str,
    user: &str,
    role: Role,
) -> Result<Option<Value>, String> {
    use super::inbound::{ADMIN_LEVEL, MODERATOR_LEVEL, level_field, send_level, user_level};
    let Some(fields) = levels.as_object() else {
        return Err("the room has no power levels to set".into());
    };
    if creators.iter().any(|c| c == user) {
        return Err(format!("{user} created the room: its power cannot change"));
    }
    let bot_level = if creators.iter().any(|c| c == bot) {
        i64::MAX
    } else {
        user_level(levels, bot)
    };
    let needed = (levels.get("events"))
        .and_then(|events| level_field(events, "m.room.power_levels"))
        .or_else(|| level_field(levels, "state_default"))
        .unwrap_or(MODERATOR_LEVEL);
    if bot_level < needed {
        return Err(format!(
            "the bridge's level ({bot_level}) is below the {needed} that changing power levels takes"
        ));
    }
    let current = user_level(levels, user);
    if current >= bot_level {
        return Err(format!(
            "{user}'s level ({current}) is not below the bridge's ({bot_level})"
        ));
    }
    let default = level_field(levels, "users_default").unwrap_or(0);
    let wanted = match role {
        Role::Owner | Role::Admin => ADMIN_LEVEL,
        Role::Moderator => MODERATOR_LEVEL,
        Role::Member => default.max(send_level(levels)),
        Role::Muted => send_level(levels).saturating_sub(1),
    }
    .min(bot_level.saturating_sub(1));
    if role >= Role::Moderator && wanted < MODERATOR_LEVEL {
        return Err(format!(
            "the bridge's level ({bot_level}) leaves no level to show {user} as a {}",
            role.name()
        ));
    }
    if current == wanted {
        return Ok(None);
    }
    let mut fields = fields.clone();
    let users = fields
        .entry("users")
        .or_insert_with(|| Value::Object(Map::new()));
    if !users.is_object() {
        *users = Value::Object(Map::new());
    }
    let Some(users) = users.as_object_mut() else {
        return Err("the room's power levels cannot be read".into());
    };
    if wanted == default {
        users.remove(user);
    } else {
        users.insert(user.to_owned(), Value::from(wanted));
    }
    Ok(Some(Value::Object(fields)))
}

/// The `m.room.message` content for an uploaded attachment: `msgtype`, `url` (the `mxc://` URI
/// of the upload), `filename`, `info` (`mimetype`, `size`, `w`, `h`, those known), `body`: the
/// caption's text, or the file name when there is no caption (then it is no caption, as the
/// specification reads a body equal to the `filename`), the caption's HTML when it is
/// formatted, and the reply and thread relations as for a text message. With
/// [`Voice::Relay`], the caption (else the file name) is put in the relay format so that the
/// room sees who sent the file.
#[allow(clippy::too_many_arguments)]
pub fn file_content(
    msgtype: &str,
    attachment: &Attachment,
    mxc: &str,
    caption: Option<&RichText>,
    reply_to: Option<&str>,
    thread: Option<&str>,
    voice: &Voice<'_>,
    sender: &Sender,
) -> Value {
    let name = if attachment.name.is_empty() {
        "file"
    } else {
        attachment.name.as_str()
    };
    let caption = caption.filter(|c| !c.body().trim().is_empty());
    let mut content = match (caption, voice) {
        (Some(caption), _) => text_content(MsgType::Text, caption, voice, sender),
        (None, Voice::Relay { .. }) => {
            text_content(MsgType::Text, &RichText::plain(name), voice, sender)
        }
        (None, Voice::Ghost) => {
            let mut content = Object::new();
            content.insert("body".into(), name.into());
            content
        }
    };
    content.insert("msgtype".into(), msgtype.into());
    content.insert("url".into(), mxc.into());
    content.insert("filename".into(), name.into());
    let mut info = Object::new();
    if let Some(mime) = &attachment.mime {
        info.insert("mimetype".into(), mime.as_str().into());
    }
    if let Some(size) = attachment.size {
        info.insert("size".into(), size.into());
    }
    if let Some(width) = attachment.width {
        info.insert("w".into(), width.into());
    }
    if let Some(height) = attachment.height {
        info.insert("h".into(), height.into());
    }
    content.insert("info".into(), Value::Object(info));
    if let Some(relation) = relates_to(reply_to, thread) {
        content.insert("m.relates_to".into(), relation);
    }
    Value::Object(content)
}

/// The msgtype for a file of this MIME type: `m.image` for images (but SVG, which clients do
/// not show inline), `m.video`, `m.audio`, else `m.file`.
pub fn file_msgtype(mime: Option<&str>) -> &'static str {
    let mime = mime.unwrap_or_default().trim().to_ascii_lowercase();
    let Some((kind, subtype)) = mime.split_once('/').filter(|(_, sub)| !sub.is_empty()) else {
        return "m.file";
    };
    match kind {
        "image" if !subtype.starts_with("svg") => "m.image",
        "video" => "m.video",
        "audio" => "m.audio",
        _ => "m.file",
    }
}

/// `msgtype`, `body` and, when formatted, `format` and `formatted_body` for a text in a voice.
fn text_content(msgtype: MsgType, text: &RichText, voice: &Voice<'_>, sender: &Sender) -> Object {
    let mut content = Object::new();
    let (msgtype, body, html) = match voice {
        Voice::Ghost => (
            msgtype_name(msgtype),
            text.body().to_owned(),
            text.is_formatted().then(|| text.to_html()),
        ),
        Voice::Relay { format } => {
            let (format, msgtype) = match msgtype {
                MsgType::Emote => ("* {name} {text}", "m.text"),
                other => (*format, msgtype_name(other)),
            };
            let name = sender.name();
            let mut strong = String::from("<strong>");
            escape(&mut strong, name);
            strong.push_str("</strong>");
            let body = fill(format, name, text.body(), false);
            let html = fill(format, &strong, &text.to_html(), true);
            (msgtype, body, Some(html))
        }
    };
    content.insert("msgtype".into(), msgtype.into());
    content.insert("body".into(), body.into());
    if let Some(html) = html {
        content.insert("format".into(), HTML_FORMAT.into());
        content.insert("formatted_body".into(), html.into());
    }
    content
}

/// The relay format with `{name}` and `{text}` replaced in one pass (so that a name containing
/// `{text}` stays as it is), the rest of the format HTML-escaped when `html`.
fn fill(format: &str, name: &str, text: &str, html: bool) -> String {
    let mut out = String::with_capacity(format.len() + name.len() + text.len());
    let literal = |out: &mut String, s: &str| {
        if html {
            escape(out, s);
        } else {
            out.push_str(s);
        }
    };
    let mut rest = format;
    let mut had_text = false;
    loop {
        let next = [("{name}", name), ("{text}", text)]
            .into_iter()
            .filter_map(|(placeholder, value)| {
                rest.find(placeholder).map(|at| (at, placeholder, value))
            })
            .min_by_key(|(at, ..)| *at);
        let Some((at, placeholder, value)) = next else {
            literal(&mut out, rest);
            break;
        };
        literal(&mut out, &rest[..at]);
        out.push_str(value);
        had_text |= placeholder == "{text}";
        rest = &rest[at + placeholder.len()..];
    }
    if !had_text {
        out.push(' ');
        out.push_str(text);
    }
    out
}

fn msgtype_name(msgtype: MsgType) -> &'static str {
    match msgtype {
        MsgType::Text => "m.text",
        MsgType::Emote => "m.emote",
        MsgType::Notice => "m.notice",
    }
}

/// `m.mentions.user_ids`, when there are mentions: a mentioned user whose native ID is a
/// Matrix user ID as is, any other as its ghost.
/// The Matrix ID that stands for a user of the room: their own when they are a Matrix user,
/// else their ghost's.
fn matrix_user(adapter: &AdapterId, user: &RemoteUserId, naming: &Naming) -> String {
    if is_user_id(user.as_str()) {
        user.as_str().to_owned()
    } else {
        naming.ghost_user_id(adapter, user)
    }
}

fn add_mentions(content: &mut Object, mentions: &[Mention], naming: &Naming) {
    let mut ids: Vec<String> = Vec::new();
    for mention in mentions {
        let id = matrix_user(&mention.adapter, &mention.user, naming);
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    if !ids.is_empty() {
        content.insert("m.mentions".into(), json!({ "user_ids": ids }));
    }
}

/// The `m.relates_to` of a message: a reply, or a thread (whose `m.in_reply_to` is the reply,
/// else the root as the fallback for clients without threads).
fn relates_to(reply_to: Option<&str>, thread: Option<&str>) -> Option<Value> {
    match (reply_to, thread) {
        (None, None) => None,
        (Some(reply), None) => Some(json!({ "m.in_reply_to": { "event_id": reply } })),
        (reply, Some(root)) => Some(json!({
            "rel_type": "m.thread",
            "event_id": root,
            "is_falling_back": reply.is_none(),
            "m.in_reply_to": { "event_id": reply.unwrap_or(root) },
        })),
    }
}

fn send(event_type: &str, content: Object) -> Action {
    Action::Send {
        event_type: event_type.to_owned(),
        content: Value::Object(content),
    }
}

fn state(event_type: &str, content: Value) -> Action {
    Action::State {
        event_type: event_type.to_owned(),
        state_key: String::new(),
        content,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_bridge_sets_a_ghost_level_it_can_take_back() {
        use bridge_core::Role;
        let levels = json!({
            "users": { "@bot:x": 100, "@g:x": 50, "@peer:x": 100 },
            "users_default": 0,
            "events": { "m.room.power_levels": 100 },
            "events_default": 0,
            "state_default": 50,
        });
        let set = |user, role| with_role(&levels, &[], "@bot:x", user, role);
        let users = |v: Option<Value>| v.expect("a change")["users"].clone();
        // An admin under a bot of level 100 gets 99: the bot can lower it again.
        assert_eq!(
            users(set("@g:x", Role::Admin).expect("allowed"))["@g:x"],
            99
        );
        assert_eq!(
            users(set("@g:x", Role::Owner).expect("allowed"))["@g:x"],
            99
        );
        assert_eq!(set("@g:x", Role::Moderator), Ok(None));
        let member = users(set("@g:x", Role::Member).expect("allowed"));
        assert!(member.get("@g:x").is_none(), "{member}");
        assert_eq!(member["@peer:x"], 100, "others are kept");
        assert_eq!(
            users(set("@new:x", Role::Muted).expect("allowed"))["@new:x"],
            -1
        );
        assert_eq!(
            users(set("@new:x", Role::Moderator).expect("allowed"))["@new:x"],
            50
        );
        assert_eq!(set("@new:x", Role::Member), Ok(None));
        // Not below the bot: refused; nor by a bot that may not change the power levels.
        assert!(set("@peer:x", Role::Member).is_err());
        let weak = json!({ "users": { "@bot:x": 50 }, "events": { "m.room.power_levels": 100 } });
        assert!(with_role(&weak, &[], "@bot:x", "@g:x", Role::Moderator).is_err());
        // A creator bot (room version 12) may give 100.
        let creators = ["@bot:x".to_owned()];
        let v12 = json!({ "users": {}, "state_default": 50 });
        let set = with_role(&v12, &creators, "@bot:x", "@g:x", Role::Admin).expect("allowed");
        assert_eq!(users(set)["@g:x"], 100);
        assert!(with_role(&Value::Null, &[], "@bot:x", "@g:x", Role::Admin).is_err());
        // Levels as strings (rooms before version 10) count; so does a bot too low to show a
        // moderator, and an extreme level to send does not overflow.
        let strings =
            json!({ "users": { "@bot:x": 50 }, "events": { "m.room.power_levels": "100" } });
        assert!(with_role(&strings, &[], "@bot:x", "@g:x", Role::Muted).is_err());
        let low = json!({ "users": { "@bot:x": 50 }, "state_default": 50 });
        assert!(with_role(&low, &[], "@bot:x", "@g:x", Role::Moderator).is_err());
        let odd = json!({ "users": { "@bot:x": 100 }, "events_default": i64::MIN });
        let muted = with_role(&odd, &[], "@bot:x", "@g:x", Role::Muted).expect("allowed");
        assert_eq!(users(muted)["@g:x"], i64::MIN);
    }

    use super::*;
    use bridge_core::{
        AdapterId, EventId, MessageContent, PresenceState, RemoteEventId, RemoteRoomId,
        RemoteUserId, RoomId,
    };

    fn naming() -> Naming {
        Naming::new("_bridge_", "localhost")
    }

    fn alice() -> Sender {
        Sender {
            adapter: AdapterId::new("xmpp"),
            user: RemoteUserId::new("alice@example.org"),
            display_name: Some("Alice".into()),
            avatar: None,
        }
    }

    fn outbound(kind: EventKind<RemoteEventId>) -> OutboundEvent {
        OutboundEvent {
            id: EventId::from_u128(1),
            neutral_room: RoomId::new("lobby"),
            room: RemoteRoomId::new("!room:localhost"),
            sender: alice(),
            ts: 1_700_000_000_000,
            kind,
            degraded: false,
            moderated: false,
        }
    }

    fn id(s: &str) -> RemoteEventId {
        RemoteEventId::new(s)
    }

    fn message(content: MessageContent) -> EventKind<RemoteEventId> {
        EventKind::Message {
            content,
            reply_to: None,
            thread: None,
        }
    }

    fn ghost(kind: EventKind<RemoteEventId>) -> Result<Vec<Action>, AdapterError> {
        actions(&outbound(kind), &naming(), &Voice::Ghost)
    }

    fn relay(kind: EventKind<RemoteEventId>) -> Result<Vec<Action>, AdapterError> {
        actions(
            &outbound(kind),
            &naming(),
            &Voice::Relay {
                format: "<{name}> {text}",
            },
        )
    }

    /// The content of the one `Send` of `m.room.message` the kind gives.
    fn sent(actions: Result<Vec<Action>, AdapterError>) -> Value {
        match actions.expect("translates").as_slice() {
            [
                Action::Send {
                    event_type,
                    content,
                },
            ] if event_type == "m.room.message" => content.clone(),
            other => panic!("not one message: {other:?}"),
        }
    }

    fn unsupported(actions: Result<Vec<Action>, AdapterError>) {
        assert!(
            matches!(actions, Err(AdapterError::Unsupported(_))),
            "{actions:?}"
        );
    }

    #[test]
    fn plain_text() {
        let content = sent(ghost(message(MessageContent::text("hello"))));
        assert_eq!(content, json!({"msgtype": "m.text", "body": "hello"}));
        // A degraded event is just a message.
        let mut ev = outbound(message(MessageContent::text("* fixed")));
        ev.degraded = true;
        let actions = actions(&ev, &naming(), &Voice::Ghost).expect("ok");
        assert_eq!(
            actions,
            [Action::Send {
                event_type: "m.room.message".into(),
                content: json!({"msgtype": "m.text", "body": "* fixed"}),
            }]
        );
    }

    #[test]
    fn msgtypes_and_formatting() {
        for (msgtype, name) in [
            (MsgType::Text, "m.text"),
            (MsgType::Emote, "m.emote"),
            (MsgType::Notice, "m.notice"),
        ] {
            let text = RichText::from_html("some <b>bold</b> text");
            let content = sent(ghost(message(MessageContent {
                msgtype,
                text: text.clone(),
                ..MessageContent::default()
            })));
            assert_eq!(
                content,
                json!({
                    "msgtype": name,
                    "body": text.body(),
                    "format": "org.matrix.custom.html",
                    "formatted_body": text.to_html(),
                })
            );
        }
    }

    #[test]
    fn replies_and_threads() {
        let reply = sent(ghost(EventKind::Message {
            content: MessageContent::text("answer"),
            reply_to: Some(id("$orig")),
            thread: None,
        }));
        // No fallback in the body (deprecated since v1.13).
        assert_eq!(
            reply,
            json!({
                "msgtype": "m.text",
                "body": "answer",
                "m.relates_to": {"m.in_reply_to": {"event_id": "$orig"}},
            })
        );
        let in_thread = sent(ghost(EventKind::Message {
            content: MessageContent::text("in thread"),
            reply_to: None,
            thread: Some(id("$root")),
        }));
        assert_eq!(
            in_thread["m.relates_to"],
            json!({
                "rel_type": "m.thread",
                "event_id": "$root",
                "is_falling_back": true,
                "m.in_reply_to": {"event_id": "$root"},
            })
        );
        let reply_in_thread = sent(ghost(EventKind::Message {
            content: MessageContent::text("answer in thread"),
            reply_to: Some(id("$other")),
            thread: Some(id("$root")),
        }));
        assert_eq!(
            reply_in_thread["m.relates_to"],
            json!({
                "rel_type": "m.thread",
                "event_id": "$root",
                "is_falling_back": false,
                "m.in_reply_to": {"event_id": "$other"},
            })
        );
    }

    #[test]
    fn mentions() {
        let mention = |adapter: &str, user: &str| Mention {
            adapter: AdapterId::new(adapter),
            user: RemoteUserId::new(user),
            display: user.into(),
        };
        let content = sent(ghost(message(MessageContent {
            mentions: vec![
                mention("matrix", "@bob:localhost"),
                mention("xmpp", "carol@example.org"),
                mention("mimi", "mimi://example.com/u/dave"),
                mention("matrix", "@bob:localhost"),
            ],
            ..MessageContent::text("hi all")
        })));
        assert_eq!(
            content["m.mentions"],
            json!({"user_ids": [
                "@bob:localhost",
                "@_bridge_xmpp_carol=40example.org:localhost",
                "@_bridge_mimi_mimi=3a//example.com/u/dave:localhost",
            ]})
        );
    }

    #[test]
    fn attachments() {
        let file = |name: &str, mime: Option<&str>| Attachment {
            name: name.into(),
            url: format!("https://example.org/{name}"),
            mime: mime.map(str::to_owned),
            ..Attachment::default()
        };
        let cat = file("cat.png", Some("image/png"));
        let doc = file("doc.pdf", Some("application/pdf"));
        let with_text = ghost(EventKind::Message {
            content: MessageContent {
                attachments: vec![cat.clone(), doc.clone()],
                ..MessageContent::text("two files")
            },
            reply_to: Some(id("$q")),
            thread: Some(id("$root")),
        })
        .expect("ok");
        assert_eq!(with_text.len(), 3);
        assert!(matches!(&with_text[0], Action::Send { content, .. }
            if content["body"] == "two files" && content["m.relates_to"]["m.in_reply_to"]["event_id"] == "$q"));
        assert_eq!(
            with_text[1..],
            [
                Action::SendFile {
                    attachment: cat.clone(),
                    msgtype: "m.image",
                    caption: None,
                    reply_to: None,
                    thread: Some("$root".into()),
                },
                Action::SendFile {
                    attachment: doc.clone(),
                    msgtype: "m.file",
                    caption: None,
                    reply_to: None,
                    thread: Some("$root".into()),
                },
            ]
        );
        // Without text: the first file carries the reply.
        let files_only = ghost(EventKind::Message {
            content: MessageContent {
                attachments: vec![cat.clone(), doc.clone()],
                ..MessageContent::text(" ")
            },
            reply_to: Some(id("$q")),
            thread: None,
        })
        .expect("ok");
        assert_eq!(
            files_only,
            [
                Action::SendFile {
                    attachment: cat,
                    msgtype: "m.image",
                    caption: None,
                    reply_to: Some("$q".into()),
                    thread: None,
                },
                Action::SendFile {
                    attachment: doc,
                    msgtype: "m.file",
                    caption: None,
                    reply_to: None,
                    thread: None,
                },
            ]
        );
        // Nothing at all: nothing to send.
        assert_eq!(ghost(message(MessageContent::text(""))).expect("ok"), []);
    }

    #[test]
    fn file_msgtypes() {
        for (mime, msgtype) in [
            (Some("image/png"), "m.image"),
            (Some("IMAGE/JPEG"), "m.image"),
            (Some("image/svg+xml"), "m.file"),
            (Some("video/mp4"), "m.video"),
            (Some("audio/ogg; codecs=opus"), "m.audio"),
            (Some("application/pdf"), "m.file"),
            (Some("image"), "m.file"),
            (Some(""), "m.file"),
            (None, "m.file"),
        ] {
            assert_eq!(file_msgtype(mime), msgtype, "{mime:?}");
        }
    }

    #[test]
    fn file_contents() {
        let cat = Attachment {
            name: "cat.png".into(),
            url: "https://example.org/cat.png".into(),
            mime: Some("image/png".into()),
            size: Some(1234),
            width: Some(64),
            height: Some(48),
        };
        let plain = file_content(
            "m.image",
            &cat,
            "mxc://localhost/cat",
            None,
            Some("$q"),
            None,
            &Voice::Ghost,
            &alice(),
        );
        assert_eq!(
            plain,
            json!({
                "msgtype": "m.image",
                "body": "cat.png",
                "filename": "cat.png",
                "url": "mxc://localhost/cat",
                "info": {"mimetype": "image/png", "size": 1234, "w": 64, "h": 48},
                "m.relates_to": {"m.in_reply_to": {"event_id": "$q"}},
            })
        );
        let caption = RichText::from_html("my <em>cat</em>");
        let captioned = file_content(
            "m.image",
            &Attachment {
                name: String::new(),
                ..cat.clone()
            },
            "mxc://localhost/cat",
            Some(&caption),
            None,
            Some("$root"),
            &Voice::Ghost,
            &alice(),
        );
        assert_eq!(captioned["body"], "my cat");
        assert_eq!(captioned["filename"], "file");
        assert_eq!(captioned["formatted_body"], caption.to_html());
        assert_eq!(captioned["m.relates_to"]["rel_type"], "m.thread");
        let relayed = file_content(
            "m.image",
            &cat,
            "mxc://localhost/cat",
            None,
            None,
            None,
            &Voice::Relay {
                format: "<{name}> {text}",
            },
            &alice(),
        );
        assert_eq!(relayed["body"], "<Alice> cat.png");
        assert_eq!(relayed["filename"], "cat.png");
        assert_eq!(
            relayed["formatted_body"],
            "&lt;<strong>Alice</strong>&gt; cat.png"
        );
    }

    #[test]
    fn edits() {
        let new = MessageContent {
            text: RichText::from_html("fixed <b>text</b>"),
            mentions: vec![Mention {
                adapter: AdapterId::new("matrix"),
                user: RemoteUserId::new("@bob:localhost"),
                display: "bob".into(),
            }],
            ..MessageContent::default()
        };
        let html = new.text.to_html();
        let content = sent(ghost(EventKind::Edit {
            target: id("$first"),
            new: new.clone(),
        }));
        assert_eq!(
            content,
            json!({
                "msgtype": "m.text",
                "body": "* fixed text",
                "format": "org.matrix.custom.html",
                "formatted_body": format!("* {html}"),
                "m.new_content": {
                    "msgtype": "m.text",
                    "body": "fixed text",
                    "format": "org.matrix.custom.html",
                    "formatted_body": html,
                    "m.mentions": {"user_ids": ["@bob:localhost"]},
                },
                "m.relates_to": {"rel_type": "m.replace", "event_id": "$first"},
                "m.mentions": {},
            })
        );
        // Plain edits stay plain.
        let content = sent(ghost(EventKind::Edit {
            target: id("$first"),
            new: MessageContent::text("fixed"),
        }));
        assert_eq!(content["body"], "* fixed");
        assert_eq!(content.get("formatted_body"), None);
        assert_eq!(
            content["m.new_content"],
            json!({"msgtype": "m.text", "body": "fixed"})
        );
    }

    #[test]
    fn reactions_and_redactions() {
        assert_eq!(
            ghost(EventKind::Reaction {
                target: id("$msg"),
                key: "👍".into(),
            })
            .expect("ok"),
            [Action::Send {
                event_type: "m.reaction".into(),
                content: json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": "$msg", "key": "👍"}}),
            }]
        );
        assert_eq!(
            ghost(EventKind::Unreact {
                target: id("$msg"),
                key: "👍".into(),
                reaction: Some(id("$reaction")),
            })
            .expect("ok"),
            [Action::Redact {
                event_id: "$reaction".into(),
                reason: None,
            }]
        );
        unsupported(ghost(EventKind::Unreact {
            target: id("$msg"),
            key: "👍".into(),
            reaction: None,
        }));
        assert_eq!(
            ghost(EventKind::Redaction {
                target: id("$msg"),
                reason: Some("oops".into()),
            })
            .expect("ok"),
            [Action::Redact {
                event_id: "$msg".into(),
                reason: Some("oops".into()),
            }]
        );
    }

    #[test]
    fn room_state() {
        assert_eq!(
            ghost(EventKind::Topic {
                text: "new topic".into()
            })
            .expect("ok"),
            [Action::State {
                event_type: "m.room.topic".into(),
                state_key: "".into(),
                content: json!({"topic": "new topic"}),
            }]
        );
        assert_eq!(
            ghost(EventKind::RoomName {
                name: "Lobby".into()
            })
            .expect("ok"),
            [Action::State {
                event_type: "m.room.name".into(),
                state_key: "".into(),
                content: json!({"name": "Lobby"}),
            }]
        );
    }

    #[test]
    fn presence_of_the_ghost() {
        let cases: [(EventKind<RemoteEventId>, Vec<Action>); 9] = [
            (
                EventKind::Typing { active: true },
                vec![Action::Typing { active: true }],
            ),
            (
                EventKind::ReadMarker { up_to: id("$last") },
                vec![Action::Receipt {
                    event_id: "$last".into(),
                }],
            ),
            (
                EventKind::Membership {
                    change: MembershipChange::Join,
                    reason: None,
                },
                vec![Action::Join],
            ),
            (
                EventKind::Membership {
                    change: MembershipChange::Leave,
                    reason: None,
                },
                vec![Action::Leave { reason: None }],
            ),
            (
                EventKind::Membership {
                    change: MembershipChange::Kick,
                    reason: Some("flood".into()),
                },
                vec![Action::Leave {
                    reason: Some("flood".into()),
                }],
            ),
            (
                EventKind::Membership {
                    change: MembershipChange::Ban,
                    reason: Some("spam".into()),
                },
                vec![Action::Leave {
                    reason: Some("spam".into()),
                }],
            ),
            (
                EventKind::Membership {
                    change: MembershipChange::Invite,
                    reason: None,
                },
                vec![],
            ),
            (
                EventKind::Profile {
                    display_name: Some("Alice A.".into()),
                    avatar: Some("https://example.org/a.png".into()),
                },
                vec![Action::Profile {
                    display_name: Some("Alice A.".into()),
                    avatar: Some("https://example.org/a.png".into()),
                }],
            ),
            (
                EventKind::Presence {
                    state: PresenceState::Away,
                    status: None,
                },
                vec![],
            ),
        ];
        for (kind, expected) in cases {
            assert_eq!(ghost(kind.clone()).expect("ok"), expected, "{kind:?}");
            // A relay bot does not represent the author's presence in the room.
            assert_eq!(relay(kind.clone()).expect("ok"), [], "{kind:?}");
        }
    }

    #[test]
    fn moderation_names_the_matrix_user_or_the_ghost() {
        let moderation = |adapter: &str, user: &str| EventKind::Moderation {
            target: Sender {
                adapter: AdapterId::new(adapter),
                user: RemoteUserId::new(user),
                display_name: None,
                avatar: None,
            },
            action: ModerationAction::Ban,
            reason: Some("spam".into()),
        };
        assert_eq!(
            ghost(moderation("matrix", "@bob:localhost")).expect("ok"),
            [Action::Moderate {
                user: "@bob:localhost".into(),
                action: ModerationAction::Ban,
                reason: Some("spam".into()),
            }]
        );
        let xavier = RemoteUserId::new("xavier@example.org");
        let naming = Naming::new("_bridge_", "localhost");
        assert_eq!(
            ghost(moderation("xmpp", xavier.as_str())).expect("ok"),
            [Action::Moderate {
                user: naming.ghost_user_id(&AdapterId::new("xmpp"), &xavier),
                action: ModerationAction::Ban,
                reason: Some("spam".into()),
            }]
        );
        // A relay bot does not moderate for others (the core sends it a line instead).
        assert_eq!(relay(moderation("xmpp", xavier.as_str())).expect("ok"), []);
    }

    #[test]
    fn custom_events() {
        let content = json!({"question": "tea?"});
        assert_eq!(
            ghost(EventKind::Custom {
                event_type: "org.example.poll".into(),
                content: content.clone(),
            })
            .expect("ok"),
            [Action::Send {
                event_type: "org.example.poll".into(),
                content: content.clone(),
            }]
        );
        for event_type in [
            "m.room.power_levels",
            "m.room.encrypted",
            "m.room.message",
            "",
        ] {
            unsupported(ghost(EventKind::Custom {
                event_type: event_type.into(),
                content: content.clone(),
            }));
        }
        unsupported(ghost(EventKind::Custom {
            event_type: "org.example.x".into(),
            content: json!("not an object"),
        }));
    }

    #[test]
    fn relay_messages() {
        let content = sent(relay(message(MessageContent::text("hello <world>"))));
        assert_eq!(
            content,
            json!({
                "msgtype": "m.text",
                "body": "<Alice> hello <world>",
                "format": "org.matrix.custom.html",
                "formatted_body": "&lt;<strong>Alice</strong>&gt; hello &lt;world&gt;",
            })
        );
        let emote = sent(relay(message(MessageContent {
            msgtype: MsgType::Emote,
            ..MessageContent::text("waves")
        })));
        assert_eq!(emote["msgtype"], "m.text");
        assert_eq!(emote["body"], "* Alice waves");
        assert_eq!(emote["formatted_body"], "* <strong>Alice</strong> waves");
        let notice = sent(relay(message(MessageContent {
            msgtype: MsgType::Notice,
            ..MessageContent::text("automated")
        })));
        assert_eq!(notice["msgtype"], "m.notice");
        // Formatting is kept inside the format.
        let bold = sent(relay(message(MessageContent {
            text: RichText::from_html("<b>loud</b>"),
            ..MessageContent::default()
        })));
        assert_eq!(
            bold["formatted_body"],
            "&lt;<strong>Alice</strong>&gt; <strong>loud</strong>"
        );
        // Edits are relayed in the format too.
        let edit = sent(relay(EventKind::Edit {
            target: id("$bot-message"),
            new: MessageContent::text("fixed"),
        }));
        assert_eq!(edit["body"], "* <Alice> fixed");
        assert_eq!(edit["m.new_content"]["body"], "<Alice> fixed");
        // Reactions are degraded by the core; topic and redactions are the bot's.
        unsupported(relay(EventKind::Reaction {
            target: id("$m"),
            key: "👍".into(),
        }));
        unsupported(relay(EventKind::Unreact {
            target: id("$m"),
            key: "👍".into(),
            reaction: Some(id("$r")),
        }));
        assert_eq!(
            relay(EventKind::Topic { text: "t".into() })
                .expect("ok")
                .len(),
            1
        );
        assert_eq!(
            relay(EventKind::Redaction {
                target: id("$m"),
                reason: None
            })
            .expect("ok")
            .len(),
            1
        );
    }

    #[test]
    fn relay_names_are_inert() {
        let sender = Sender {
            display_name: Some("<b>{text}</b> & co".into()),
            ..alice()
        };
        let text = RichText::plain("hi");
        let voice = Voice::Relay {
            format: "{name}: {text}",
        };
        let content = text_content(MsgType::Text, &text, &voice, &sender);
        assert_eq!(content["body"], "<b>{text}</b> & co: hi");
        assert_eq!(
            content["formatted_body"],
            "<strong>&lt;b&gt;{text}&lt;/b&gt; &amp; co</strong>: hi"
        );
        // A format without {text}: the text follows it. Without a display name: the user ID.
        let sender = Sender {
            display_name: None,
            ..alice()
        };
        let voice = Voice::Relay { format: "[{name}]" };
        let content = text_content(MsgType::Text, &text, &voice, &sender);
        assert_eq!(content["body"], "[alice@example.org] hi");
    }
}
