//! Homeserver calls shared by both modes: sending an event, redacting, setting state, and
//! putting an attachment in the media repository. Each takes who to send as: a ghost
//! (appservice mode) or the bot (either mode).

use bridge_core::{AdapterContext, AdapterError, AdapterId, Attachment, AttachmentBody};
use ruma::api::client::{
    message::send_message_event, redact::redact_event, state::send_state_event,
};
use ruma::events::{MessageLikeEventType, StateEventType};
use ruma::serde::Raw;
use ruma::{OwnedEventId, OwnedRoomId, OwnedTransactionId};

use std::borrow::Cow;

use ruma::api::auth_scheme::{AuthScheme, SendAccessToken};
use ruma::api::path_builder::PathBuilder;
use ruma::api::{OutgoingRequest, SupportedVersions};

use crate::homeserver::{As, Homeserver, HsError};

/// JSON as ruma's raw type.
pub(crate) fn raw<T>(content: &serde_json::Value) -> Result<Raw<T>, AdapterError> {
    serde_json::value::to_raw_value(content)
        .map(Raw::from_json)
        .map_err(|e| AdapterError::Permanent(e.to_string()))
}

/// `PUT /rooms/{room}/send/{type}/{txn}`.
pub(crate) async fn send_event(
    hs: &Homeserver,
    who: As<'_>,
    room: &OwnedRoomId,
    txn: &OwnedTransactionId,
    event_type: &str,
    content: &serde_json::Value,
) -> Result<OwnedEventId, HsError> {
    let body = raw(content).map_err(|e| HsError::Invalid(e.to_string()))?;
    let request = send_message_event::v3::Request::new_raw(
        room.clone(),
        txn.clone(),
        MessageLikeEventType::from(event_type),
        body,
    );
    Ok(hs.call(request, who).await?.event_id)
}

/// `PUT /rooms/{room}/redact/{event}/{txn}`; when `who` may not (a moderator's deletion of
/// someone else's message, sent by the author's ghost), the bot tries with its power.
pub(crate) async fn redact(
    hs: &Homeserver,
    who: As<'_>,
    room: &OwnedRoomId,
    event_id: &str,
    txn: OwnedTransactionId,
    reason: Option<String>,
) -> Result<OwnedEventId, AdapterError> {
    let target = OwnedEventId::try_from(event_id)
        .map_err(|e| AdapterError::Permanent(format!("{event_id} is not an event ID: {e}")))?;
    let mut request = redact_event::v3::Request::new(room.clone(), target, txn);
    request.reason = reason;
    Ok(as_or_bot(hs, who, request).await?.event_id)
}

/// `PUT /rooms/{room}/state/{type}/{key}`, falling back to the bot's power like [`redact`].
pub(crate) async fn put_state(
    hs: &Homeserver,
    who: As<'_>,
    room: &OwnedRoomId,
    event_type: &str,
    state_key: String,
    content: &serde_json::Value,
) -> Result<OwnedEventId, AdapterError> {
    let request = send_state_event::v3::Request::new_raw(
        room.clone(),
        StateEventType::from(event_type),
        state_key,
        raw(content)?,
    );
    Ok(as_or_bot(hs, who, request).await?.event_id)
}

/// Puts an attachment in the media repository and returns its `mxc://` URI: one that this
/// adapter received (`source` is `me`) is already there; anything else is fetched through its
/// source adapter (or as an HTTP(S) link) and uploaded as `who`, streamed, refused over `limit`.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn rehost(
    hs: &Homeserver,
    who: As<'_>,
    ctx: &AdapterContext,
    me: &AdapterId,
    source: &AdapterId,
    attachment: &Attachment,
    limit: u64,
) -> Result<String, AdapterError> {
    if attachment.url.starts_with("mxc://") && source == me {
        return Ok(attachment.url.clone());
    }
    let body = match ctx.fetch_attachment(source, attachment).await {
        Ok(body) => body,
        Err(AdapterError::Unsupported(_))
            if attachment.url.starts_with("http://") || attachment.url.starts_with("https://") =>
        {
            fetch_http(&attachment.url, limit).await?
        }
        Err(e) => return Err(e),
    };
    let mime = body.mime.clone().or_else(|| attachment.mime.clone());
    // The upload announces its length: take it from the source, else read the file first.
    let (body, length) = match body.length {
        Some(length) if length <= limit => (body, length),
        _ => {
            let bytes = body.collect(limit).await?;
            let length = bytes.len() as u64;
            (AttachmentBody::from_bytes(bytes, None), length)
        }
    };
    let body = AttachmentBody { mime, ..body };
    let name = if attachment.name.is_empty() {
        "file"
    } else {
        &attachment.name
    };
    let mxc = hs
        .upload(body, length, name, who)
        .await
        .map_err(|e| match e {
            HsError::Matrix { status: 413, .. } => {
                AdapterError::Permanent(format!("the homeserver refuses {name} as too large: {e}"))
            }
            other => other.into(),
        })?;
    Ok(mxc.to_string())
}

/// One file of an event, as [`crate::translate::outbound::Action::SendFile`] gives it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FileParts<'a> {
    pub(crate) attachment: &'a Attachment,
    pub(crate) msgtype: &'a str,
    pub(crate) caption: Option<&'a bridge_core::RichText>,
    pub(crate) reply_to: Option<&'a str>,
    pub(crate) thread: Option<&'a str>,
}

/// What to send for one file of an event: the file message, after putting the file in the
/// media repository ([`rehost`]); or, when it can never cross (too large, refused, gone at its
/// source), a notice with its name and link ([`file_notice`]) so the room keeps a trace of it.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn file_message(
    hs: &Homeserver,
    who: As<'_>,
    ctx: &AdapterContext,
    me: &AdapterId,
    event: &bridge_core::OutboundEvent,
    file: &FileParts<'_>,
    voice: &crate::translate::outbound::Voice<'_>,
    limit: u64,
) -> Result<serde_json::Value, AdapterError> {
    let attachment = file.attachment;
    match rehost(hs, who, ctx, me, &event.sender.adapter, attachment, limit).await {
        Ok(mxc) => Ok(crate::translate::outbound::file_content(
            file.msgtype,
            attachment,
            &mxc,
            file.caption,
            file.reply_to,
            file.thread,
            voice,
            &event.sender,
        )),
        Err(AdapterError::Permanent(why)) => {
            tracing::warn!(adapter = %me, event = %event.id, file = %attachment.name, %why,
                "file not bridged; sending its name and link instead");
            Ok(file_notice(attachment, &why))
        }
        Err(e) => Err(e),
    }
}

/// The notice sent in place of a file that cannot cross: its name, size, link (when it is a
/// web link) and why.
pub(crate) fn file_notice(attachment: &Attachment, why: &str) -> serde_json::Value {
    let size = attachment
        .size
        .map(|n| format!(", {n} bytes"))
        .unwrap_or_default();
    let link = if attachment.url.starts_with("https://") || attachment.url.starts_with("http://") {
        format!(" {}", attachment.url)
    } else {
        String::new()
    };
    let name = if attachment.name.is_empty() {
        "a file"
    } else {
        &attachment.name
    };
    serde_json::json!({
        "msgtype": "m.notice",
        "body": format!("📎 {name}{size}{link} (not bridged: {why})"),
    })
}

/// Downloads an HTTP(S) attachment, streamed; refuses at once one announced over `limit`.
async fn fetch_http(url: &str, limit: u64) -> Result<AttachmentBody, AdapterError> {
    let response = reqwest::Client::new()
        .get(url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| AdapterError::transient(format!("cannot fetch {url}: {e}")))?;
    crate::homeserver::body_of(response, limit, url)
        .map_err(|e| AdapterError::Permanent(e.to_string()))
}

/// The transaction ID of the `i`-th homeserver call made for one neutral event: the event ID,
/// then `<id>.1`, `<id>.2`… (stable across retries, so the homeserver recognises a repeat).
/// Sends `text` as an `m.notice` from `who`: what the bridge itself says (an admin command's
/// answer, why a message could not be delivered). Not an event of the core, so its
/// transaction ID is random: a notice is sent once, never retried.
pub(crate) async fn send_notice(
    hs: &Homeserver,
    who: As<'_>,
    room: &OwnedRoomId,
    text: &str,
) -> Result<OwnedEventId, HsError> {
    let txn = OwnedTransactionId::from(format!(
        "notice.{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    ));
    let content = serde_json::json!({ "msgtype": "m.notice", "body": text });
    send_event(hs, who, room, &txn, "m.room.message", &content).await
}

pub(crate) fn txn_id(event: &bridge_core::EventId, i: usize) -> OwnedTransactionId {
    if i == 0 {
        event.to_string().into()
    } else {
        format!("{event}.{i}").into()
    }
}

/// Sends `request` as `who`; when that is refused (403) and `who` is a ghost, again as the
/// bot, whose power covers what a ghost may not do (a moderator's deletion, a topic).
async fn as_or_bot<R>(
    hs: &Homeserver,
    who: As<'_>,
    request: R,
) -> Result<R::IncomingResponse, HsError>
where
    R: OutgoingRequest,
    for<'a> R::Authentication: AuthScheme<Input<'a> = SendAccessToken<'a>>,
    for<'a> R::PathBuilder: PathBuilder<Input<'a> = Cow<'a, SupportedVersions>>,
{
    match hs.call(request.clone(), who).await {
        Err(e) if e.status() == Some(403) && matches!(who, As::Ghost(_)) => {
            hs.call(request, As::Bot).await
        }
        other => other,
    }
}
