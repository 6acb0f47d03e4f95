//! Turning a neutral event into what one target can carry (the degradation policy).
//!
//! References are translated to the target's native IDs. Where the target lacks a capability,
//! or never received the event referred to, the room's [`DegradePolicy`] decides: a reply
//! becomes a quote of the original, an edit a "* correction" message, a reaction or deletion a
//! short line in the third person, a custom event a notice, a kick or ban the removal of the
//! user's puppet (or, of a user of the target's own network, a line saying so), or the thing is
//! dropped (counted).

use super::Shared;
use super::ingest::{load_event, lookup_neutral};
use crate::capabilities::{Capabilities, CustomPolicy, DegradePolicy, Fallback};
use crate::event::{
    Event, EventKind, MembershipChange, MessageContent, ModerationAction, MsgType, OutboundEvent,
};
use crate::ids::{EventId, RemoteEventId};
use crate::richtext::RichText;
use crate::routing::Link;
use crate::store::StoreError;

/// What to do for one target.
pub(crate) enum Prepared {
    /// Send this (boxed: an outbound event is much larger than the other variant).
    Send(Box<OutboundEvent>),
    /// Nothing to send; the reason is logged and counted.
    Skip(&'static str),
}

/// The longest excerpt of an original message quoted in a fallback.
const EXCERPT_CHARS: usize = 80;

fn excerpt(event: Option<&Event>) -> String {
    let body = match event.map(|e| &e.kind) {
        Some(EventKind::Message { content, .. }) | Some(EventKind::Edit { new: content, .. }) => {
            content.text.body()
        }
        _ => return String::from("a message"),
    };
    let line = body.lines().next().unwrap_or_default();
    let mut out: String = line.chars().take(EXCERPT_CHARS).collect();
    if line.chars().count() > EXCERPT_CHARS || body.lines().nth(1).is_some() {
        out.push('…');
    }
    format!("“{out}”")
}

/// Puts `prefix` (plain text) in front of a rich text, keeping its formatting.
fn prefixed(prefix: &str, text: &RichText) -> RichText {
    if text.is_formatted() {
        let mut md = RichText::plain(prefix).to_markdown();
        md.push_str(&text.to_markdown());
        RichText::from_markdown(&md)
    } else {
        RichText::plain(format!("{prefix}{}", text.body()))
    }
}

fn line(msgtype: MsgType, text: String) -> EventKind<RemoteEventId> {
    EventKind::Message {
        content: MessageContent {
            msgtype,
            text: RichText::plain(text),
            ..MessageContent::default()
        },
        reply_to: None,
        thread: None,
    }
}

/// Moves attachments the target cannot take into the text as links.
fn fit_attachments(mut content: MessageContent, caps: &Capabilities) -> (MessageContent, bool) {
    let limit = caps.attachments.map(|a| a.max_bytes);
    let (keep, spill): (Vec<_>, Vec<_>) = content.attachments.into_iter().partition(
        |a| matches!(limit, Some(max) if max.is_none_or(|m| a.size.is_none_or(|s| s <= m))),
    );
    content.attachments = keep;
    if spill.is_empty() {
        return (content, false);
    }
    let mut text = content.text.body().to_owned();
    for a in spill {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(&format!("{}: {}", a.name, a.url));
    }
    content.text = RichText::plain(text);
    (content, true)
}

pub(crate) fn prepare(
    shared: &Shared,
    link: &Link,
    caps: &Capabilities,
    policy: &DegradePolicy,
    event: &Event,
    force_text: bool,
) -> Result<Prepared, StoreError> {
    let store = &*shared.store;
    let native = |id: &EventId| lookup_neutral(store, *id, link);
    let original = |id: &EventId| load_event(store, *id);
    let text_only = Capabilities::text_only();
    let caps = if force_text { &text_only } else { caps };
    let mut degraded = force_text;
    let mut moderated = false;
    // The event goes out as this user instead of its sender.
    let mut as_target = None;
    let kind: EventKind<RemoteEventId> = match &event.kind {
        EventKind::Message {
            content,
            reply_to,
            thread,
        } => {
            let (mut content, spilled) = fit_attachments(content.clone(), caps);
            degraded |= spilled;
            // A thread the target cannot show: the message answers the thread's root there
            // (natively, or quoted under the reply policy), so it keeps its context.
            let thread_as_reply = match (thread, reply_to) {
                (Some(root), None) if !caps.threads => {
                    degraded = true;
                    Some(root)
                }
                _ => None,
            };
            let mut native_reply = None;
            if let Some(target) = reply_to.as_ref().or(thread_as_reply) {
                native_reply = if caps.replies { native(target)? } else { None };
                if native_reply.is_none() {
                    degraded = true;
                    if policy.reply == Fallback::Fallback {
                        let quoted = original(target)?;
                        let who = quoted.as_ref().map_or("someone", |e| e.sender.name());
                        let quote = format!("> {who}: {}\n", excerpt(quoted.as_ref()));
                        content.text = prefixed(&quote, &content.text);
                    }
                }
            }
            // A reply (from a network without threads) to a message in a thread stays in that
            // thread where threads exist.
            let thread = match (thread, reply_to) {
                (None, Some(target)) if caps.threads => {
                    original(target)?.and_then(|e| match e.kind {
                        EventKind::Message { thread, .. } => thread,
                        _ => None,
                    })
                }
                _ => *thread,
            };
            let native_thread = match &thread {
                Some(root) if caps.threads => native(root)?,
                _ => None,
            };
            EventKind::Message {
                content,
                reply_to: native_reply,
                thread: native_thread,
            }
        }
        EventKind::Edit { target, new } => {
            let target_native = if caps.edits { native(target)? } else { None };
            match (target_native, policy.edit) {
                (Some(target), _) => EventKind::Edit {
                    target,
                    new: new.clone(),
                },
                (None, Fallback::Fallback) => {
                    degraded = true;
                    EventKind::Message {
                        content: MessageContent {
                            text: prefixed("* ", &new.text),
                            ..new.clone()
                        },
                        reply_to: None,
                        thread: None,
                    }
                }
                (None, Fallback::Drop) => return Ok(Prepared::Skip("edits dropped by policy")),
            }
        }
        EventKind::Reaction { target, key } => {
            let target_native = if caps.reactions {
                native(target)?
            } else {
                None
            };
            match (target_native, policy.reaction) {
                (Some(target), _) => EventKind::Reaction {
                    target,
                    key: key.clone(),
                },
                (None, Fallback::Fallback) => {
                    degraded = true;
                    let quoted = original(target)?;
                    line(
                        MsgType::Emote,
                        format!("reacted {key} to {}", excerpt(quoted.as_ref())),
                    )
                }
                (None, Fallback::Drop) => {
                    return Ok(Prepared::Skip("reactions dropped by policy"));
                }
            }
        }
        EventKind::Unreact {
            target,
            key,
            reaction,
        } => {
            let target_native = if caps.reactions {
                native(target)?
            } else {
                None
            };
            let reaction_native = match reaction {
                Some(r) if caps.reactions => native(r)?,
                _ => None,
            };
            match target_native {
                Some(target) => EventKind::Unreact {
                    target,
                    key: key.clone(),
                    reaction: reaction_native,
                },
                None => return Ok(Prepared::Skip("the reaction never reached this room")),
            }
        }
        EventKind::Redaction { target, reason } => {
            let target_native = if caps.redactions {
                native(target)?
            } else {
                None
            };
            match (target_native, policy.redaction) {
                (Some(native_target), _) => {
                    // Ingest let a deletion of another's message through only for a moderator.
                    moderated = original(target)?.is_some_and(|o| {
                        o.sender.adapter != event.sender.adapter
                            || o.sender.user != event.sender.user
                    });
                    EventKind::Redaction {
                        target: native_target,
                        reason: reason.clone(),
                    }
                }
                (None, Fallback::Fallback) => {
                    degraded = true;
                    let quoted = original(target)?;
                    line(
                        MsgType::Emote,
                        format!("deleted a message: {}", excerpt(quoted.as_ref())),
                    )
                }
                (None, Fallback::Drop) => {
                    return Ok(Prepared::Skip("deletions dropped by policy"));
                }
            }
        }
        // Someone of another network, shown here by a puppet: the puppet is removed (as them).
        EventKind::Moderation {
            target,
            action,
            reason,
        } if !caps.moderation && caps.membership && target.adapter != link.adapter => {
            let change = match action {
                ModerationAction::Kick => MembershipChange::Kick,
                ModerationAction::Ban => MembershipChange::Ban,
                ModerationAction::Unban => {
                    return Ok(Prepared::Skip("an unban of a puppet changes nothing"));
                }
            };
            as_target = Some(target.clone());
            EventKind::Membership {
                change,
                reason: reason.clone(),
            }
        }
        EventKind::Moderation {
            target,
            action,
            reason,
        } if !caps.moderation => match policy.moderation {
            Fallback::Drop => return Ok(Prepared::Skip("moderation dropped by policy")),
            Fallback::Fallback => {
                degraded = true;
                let why = reason.as_deref().map(|r| format!(": {r}"));
                line(
                    MsgType::Emote,
                    format!(
                        "{} {} on the other networks{}",
                        action.past(),
                        target.name(),
                        why.unwrap_or_default()
                    ),
                )
            }
        },
        EventKind::Custom { event_type, .. } if !caps.custom_events => match policy.custom {
            CustomPolicy::Drop => return Ok(Prepared::Skip("custom events dropped by policy")),
            CustomPolicy::Notice => {
                degraded = true;
                line(
                    MsgType::Notice,
                    format!("sent a {event_type} event, which this room cannot show"),
                )
            }
        },
        other => {
            let carried = match other {
                EventKind::Membership { .. } => caps.membership,
                EventKind::Profile { .. } => caps.profile,
                EventKind::Topic { .. } => caps.topic,
                EventKind::RoomName { .. } => caps.room_name,
                EventKind::Typing { .. } => caps.typing,
                EventKind::ReadMarker { .. } => caps.read_markers,
                EventKind::Presence { .. } => caps.presence,
                EventKind::Role { .. } => caps.roles,
                _ => true,
            };
            if !carried {
                return Ok(Prepared::Skip("the target cannot carry this kind"));
            }
            match other.clone().map_refs(|id| native(id).ok().flatten()) {
                Ok(kind) => kind,
                Err(_) => {
                    return Ok(Prepared::Skip(
                        "the event referred to never reached this room",
                    ));
                }
            }
        }
    };
    if degraded {
        metrics::counter!("bridge_events_degraded_total", "adapter" => link.adapter.to_string(), "kind" => event.kind.name())
            .increment(1);
    }
    Ok(Prepared::Send(Box::new(OutboundEvent {
        id: event.id,
        neutral_room: event.room.clone(),
        room: link.remote.clone(),
        sender: as_target.unwrap_or_else(|| event.sender.clone()),
        ts: event.ts,
        kind,
        degraded,
        moderated,
    })))
}
