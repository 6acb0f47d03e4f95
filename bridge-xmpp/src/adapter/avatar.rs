//! Puppets' avatars (component mode): the avatar of the remote user a puppet stands for, shown
//! to XMPP clients the way MUC occupants show theirs without PEP (a component's JIDs have none):
//! XEP-0153. The puppet's presences in a room carry the SHA-1 of the image
//! (`<x xmlns='vcard-temp:x:update'><photo>…</photo></x>`), and a vCard request (XEP-0054) to
//! the puppet (its bare JID, where a MUC forwards requests to an occupant, or its full JID) is
//! answered with the image.
//!
//! The image is fetched once per avatar URL through the adapter the user came from (a Matrix
//! `mxc://` URI needs the homeserver's credentials) or as a plain HTTP(S) link, up to
//! [`MAX_BYTES`], and kept in the adapter's store (`avatar` → URL, hash, type; `avatar-data` →
//! the bytes), so a restart does not fetch it again. An image that cannot be fetched is logged
//! and the puppet keeps its previous one (none at first); the URL is not tried again until it
//! changes or the bridge restarts.

use std::collections::HashMap;

use base64::Engine as _;
use bridge_core::{AdapterContext, AdapterError, AdapterId, Attachment};
use serde::{Deserialize, Serialize};
use sha1::Digest as _;
use xmpp_parsers::minidom::Element;

use super::Inner;
use super::inbound::keys;
use crate::wire::NS_CLIENT;
use crate::xml::Attrs as _;

/// The largest avatar image fetched (vCards travel inside one stanza).
pub(super) const MAX_BYTES: u64 = 256 * 1024;
/// XEP-0054.
pub(super) const NS_VCARD: &str = "vcard-temp";
/// XEP-0153.
const NS_VCARD_UPDATE: &str = "vcard-temp:x:update";
/// Store key kinds: a puppet's avatar (JSON [`Stored`]) and its image bytes.
const AVATAR: &str = "avatar";
const AVATAR_DATA: &str = "avatar-data";

/// What is stored about a puppet's avatar.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    /// The remote user's avatar URL it was fetched from.
    url: String,
    /// SHA-1 of the image, lower-case hex (XEP-0153's photo hash).
    sha1: String,
    /// The image's media type.
    mime: String,
}

/// Per puppet (bare JID): the avatar URL last seen and the hash of the image it gave (`None`:
/// it could not be fetched, and there was no earlier image).
pub(super) type Known = HashMap<String, (String, Option<String>)>;

/// The key of a puppet's avatar: its bare JID, lower-cased (servers route localparts
/// case-folded).
pub(super) fn key(jid: &str) -> String {
    crate::jid::bare(jid).to_lowercase()
}

/// `<x xmlns='vcard-temp:x:update'><photo>HASH</photo></x>` for a presence.
pub(super) fn update_element(sha1: &str) -> Element {
    Element::builder("x", NS_VCARD_UPDATE)
        .append(Element::builder("photo", NS_VCARD_UPDATE).append(sha1))
        .build()
}

impl Inner {
    /// The photo hash known for occupant `jid` in this process (joins carry it).
    pub(super) fn photo_of(&self, jid: &str) -> Option<String> {
        self.avatars
            .lock()
            .get(&key(jid))
            .and_then(|(_, sha1)| sha1.clone())
    }

    /// The photo hash of `puppet` (see [`key`]), the face of a user whose avatar URL is `url` on `source`:
    /// fetched and stored when the URL is new (see the module docs). `url` `None` (the event
    /// does not say) keeps what is known.
    pub(super) async fn avatar_of(
        &self,
        ctx: &AdapterContext,
        source: &AdapterId,
        puppet: &str,
        url: Option<&str>,
    ) -> Option<String> {
        let known = self.avatars.lock().get(puppet).cloned();
        let stored = match &known {
            Some(_) => None,
            None => self.stored_avatar(ctx, puppet),
        };
        let current = match (&known, &stored) {
            (Some((_, sha1)), _) => sha1.clone(),
            (None, Some(s)) => Some(s.sha1.clone()),
            (None, None) => None,
        };
        let seen = known
            .as_ref()
            .map(|(u, _)| u.as_str())
            .or(stored.as_ref().map(|s| s.url.as_str()));
        let Some(url) = url.filter(|u| !u.is_empty() && Some(*u) != seen) else {
            if known.is_none()
                && let Some(s) = &stored
            {
                self.avatars
                    .lock()
                    .insert(puppet.to_owned(), (s.url.clone(), Some(s.sha1.clone())));
            }
            return current;
        };
        let sha1 = match self.fetch_avatar(ctx, source, url).await {
            Ok((bytes, mime)) => {
                let sha1 = hex(&sha1::Sha1::digest(&bytes));
                let record = Stored {
                    url: url.to_owned(),
                    sha1: sha1.clone(),
                    mime,
                };
                let json = serde_json::to_vec(&record).unwrap_or_default();
                let (meta, data) = (
                    keys::of(AVATAR, &[puppet]),
                    keys::of(AVATAR_DATA, &[puppet]),
                );
                if let Err(e) = ctx
                    .store()
                    .put_all(&[(meta.as_slice(), &json), (data.as_slice(), &bytes)])
                {
                    tracing::warn!(adapter = %self.id, puppet, error = %e, "avatar not stored");
                }
                Some(sha1)
            }
            Err(e) => {
                tracing::warn!(adapter = %self.id, puppet, url, error = %e,
                    "cannot fetch an avatar; the puppet keeps its previous one");
                current
            }
        };
        self.avatars
            .lock()
            .insert(puppet.to_owned(), (url.to_owned(), sha1.clone()));
        sha1
    }

    fn stored_avatar(&self, ctx: &AdapterContext, puppet: &str) -> Option<Stored> {
        let json = ctx.store().get(&keys::of(AVATAR, &[puppet])).ok()??;
        serde_json::from_slice(&json).ok()
    }

    /// The image at `url`, through `source` or as a plain link, and its media type.
    async fn fetch_avatar(
        &self,
        ctx: &AdapterContext,
        source: &AdapterId,
        url: &str,
    ) -> Result<(bytes::Bytes, String), String> {
        let file = Attachment {
            name: "avatar".into(),
            url: url.to_owned(),
            ..Attachment::default()
        };
        let (bytes, mime) = match ctx.fetch_attachment(source, &file).await {
            Ok(body) => {
                let mime = body.mime.clone();
                (
                    body.collect(MAX_BYTES).await.map_err(|e| e.to_string())?,
                    mime,
                )
            }
            Err(AdapterError::Unsupported(_))
                if url.starts_with("http://") || url.starts_with("https://") =>
            {
                let http = self.http.as_ref().ok_or("no HTTP client")?;
                let fetched = http
                    .fetch(url, MAX_BYTES)
                    .await
                    .map_err(|e| e.to_string())?;
                (fetched.bytes, fetched.content_type)
            }
            Err(e) => return Err(e.to_string()),
        };
        let mime = mime
            .filter(|m| m.starts_with("image/"))
            .ok_or("not an image")?;
        Ok((bytes, mime))
    }

    /// The answer to a vCard request to `puppet` (bare JID) named `name`: its name and, when
    /// it has one, its avatar.
    pub(super) fn vcard(&self, puppet: &str, name: &str) -> Element {
        let mut vcard = Element::builder("vCard", NS_VCARD)
            .append(Element::builder("FN", NS_VCARD).append(name));
        let ctx = self.ctx().ok();
        let stored = ctx.as_ref().and_then(|ctx| self.stored_avatar(ctx, puppet));
        let data = ctx
            .as_ref()
            .and_then(|ctx| ctx.store().get(&keys::of(AVATAR_DATA, &[puppet])).ok()?);
        if let (Some(stored), Some(data)) = (stored, data) {
            vcard = vcard.append(
                Element::builder("PHOTO", NS_VCARD)
                    .append(Element::builder("TYPE", NS_VCARD).append(stored.mime.as_str()))
                    .append(
                        Element::builder("BINVAL", NS_VCARD)
                            .append(base64::engine::general_purpose::STANDARD.encode(data)),
                    ),
            );
        }
        vcard.build()
    }
}

/// Whether `iq` is a vCard request (`get` with a vcard-temp `vCard` child).
pub(super) fn is_vcard_get(iq: &Element) -> bool {
    iq.attr("type") == Some("get")
        && iq
            .children()
            .next()
            .is_some_and(|c| c.is("vCard", NS_VCARD))
}

/// The result IQ answering `request` with `payload`.
pub(super) fn result(request: &Element, payload: Element) -> Element {
    let mut iq = Element::builder("iq", NS_CLIENT)
        .with("type", "result")
        .with("id", request.attr("id").unwrap_or_default());
    if let Some(to) = request.attr("from") {
        iq = iq.with("to", to);
    }
    if let Some(from) = request.attr("to") {
        iq = iq.with("from", from);
    }
    iq.append(payload).build()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
