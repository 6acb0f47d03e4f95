//! Avatars both ways.
//!
//! **Puppets' avatars** (component mode): the avatar of the remote user a puppet stands for, shown
//! to XMPP clients the way MUC occupants show theirs without PEP (a component's JIDs have none):
//! XEP-0153. The puppet's presences in a room carry the SHA-1 of the image
//! (`<x xmlns='vcard-temp:x:update'><photo>…</photo></x>`), and a vCard request (XEP-0054) to
//! the puppet (its bare JID, where a MUC forwards requests to an occupant, or its full JID) is
//! answered with the image.
//!
//! The image is fetched once per avatar URL through the adapter the user came from (a Matrix
//! `mxc://` URI needs the homeserver's credentials) or as a plain HTTP(S) link, up to
//! [`MAX_BYTES`] and for at most [`FETCH_TIMEOUT`] (it holds up the puppet's join), and kept in the adapter's store (`avatar` → URL, hash, type; `avatar-data` →
//! the bytes), so a restart does not fetch it again. An image that cannot be fetched is logged
//! and the puppet keeps its previous one (none at first); the URL is not tried again until it
//! changes or the bridge restarts.
//!
//! **XMPP users' avatars**: an occupant's presence that announces an avatar hash (XEP-0153) the
//! bridge does not have yet makes it ask the occupant's vCard (XEP-0054, through the room, as
//! clients do); the image is kept by its hash if it matches, and the core gets a profile event
//! with the avatar `xmpp-avatar:<SHA-1>`, which this adapter serves to the others
//! ([`bridge_core::Adapter::fetch_attachment`]); the user's later events carry it too.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use base64::Engine as _;
use bridge_core::{
    AdapterContext, AdapterError, AdapterId, Attachment, AttachmentBody, EventKind, InboundEvent,
    RemoteSender, RemoteUserId,
};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use sha1::Digest as _;
use xmpp_parsers::minidom::Element;

use super::Inner;
use super::inbound::keys;
use crate::muc::NS_VCARD_UPDATE;
use crate::wire::NS_CLIENT;
use crate::xml::Attrs as _;

/// The largest avatar image fetched (vCards travel inside one stanza).
pub(super) const MAX_BYTES: u64 = 256 * 1024;
/// How long fetching a puppet's avatar may hold up the puppet's first event in a room.
const FETCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// XEP-0054.
pub(super) const NS_VCARD: &str = "vcard-temp";
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

/// The URL scheme of XMPP users' avatars in the core: `xmpp-avatar:<SHA-1>`.
pub(super) const SCHEME: &str = "xmpp-avatar:";
/// Store key kinds of XMPP users' avatars: user → hash; hash → media type; hash → image.
const PEER: &str = "peer-avatar";
const PEER_TYPE: &str = "peer-avatar-type";
const PEER_DATA: &str = "peer-avatar-data";

/// XMPP users' avatars as far as known in this process: user → hash (empty: none known), and
/// the hashes being fetched.
#[derive(Debug, Default)]
pub(super) struct Peers {
    hashes: HashMap<String, String>,
    fetching: HashSet<String>,
}

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

    /// The photo hash of `puppet` (see [`key`]), the face of a user whose avatar URL is `url`
    /// on `source`: fetched and stored when the URL is new (see the module docs). `url` `None`
    /// (the event does not say) keeps what is known.
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
            if known.is_none() {
                // Remembered either way, so that the store is read once per puppet.
                let entry = match &stored {
                    Some(s) => (s.url.clone(), Some(s.sha1.clone())),
                    None => (String::new(), None),
                };
                let mut avatars = self.avatars.lock();
                if avatars.len() >= 100_000 {
                    avatars.clear(); // only a cache
                }
                avatars.insert(puppet.to_owned(), entry);
            }
            return current;
        };
        let fetched = tokio::time::timeout(FETCH_TIMEOUT, self.fetch_avatar(source, url))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {FETCH_TIMEOUT:?}")));
        let sha1 = match fetched {
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
        source: &AdapterId,
        url: &str,
    ) -> Result<(bytes::Bytes, String), String> {
        let file = Attachment {
            name: "avatar".into(),
            url: url.to_owned(),
            ..Attachment::default()
        };
        let fetched = self.fetch_from_source(source, &file, MAX_BYTES).await?;
        let mime = (fetched.content_type)
            .filter(|m| m.starts_with("image/"))
            .ok_or("not an image")?;
        Ok((fetched.bytes, mime))
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

impl Inner {
    /// The avatar URL of XMPP user `user` for the events they send, when one is known.
    pub(super) fn peer_avatar(&self, ctx: &AdapterContext, user: &str) -> Option<String> {
        let known = self.peer_avatars.lock().hashes.get(user).cloned();
        let hash = match known {
            Some(hash) => hash,
            None => {
                let stored = (ctx.store().get(&keys::of(PEER, &[user])).ok().flatten())
                    .map(|v| String::from_utf8_lossy(&v).into_owned())
                    .unwrap_or_default();
                let mut peers = self.peer_avatars.lock();
                // Unbounded users must not grow this without end: it is only a cache.
                if peers.hashes.len() >= 100_000 {
                    peers.hashes.clear();
                }
                peers.hashes.insert(user.to_owned(), stored.clone());
                stored
            }
        };
        (!hash.is_empty()).then(|| format!("{SCHEME}{hash}"))
    }

    /// Gives `sender` (an XMPP user) their avatar, when known and not set.
    pub(super) fn with_peer_avatar(&self, ctx: &AdapterContext, sender: &mut RemoteSender) {
        if sender.avatar.is_none() {
            sender.avatar = self.peer_avatar(ctx, sender.id.as_str());
        }
    }

    /// Occupant `nick` of `room` (XMPP user `user`) announced avatar `hash`: unless it is the
    /// one known, their vCard is fetched and the core told (see the module docs).
    pub(super) fn peer_photo(
        self: &Arc<Self>,
        ctx: &AdapterContext,
        room: &str,
        nick: &str,
        user: RemoteUserId,
        hash: String,
    ) {
        if hash.is_empty()
            || self.peer_avatar(ctx, user.as_str()).as_deref() == Some(&format!("{SCHEME}{hash}"))
            || !self.peer_avatars.lock().fetching.insert(hash.clone())
        {
            return;
        }
        let (this, ctx, room, nick) = (self.clone(), ctx.clone(), room.to_owned(), nick.to_owned());
        tokio::spawn(async move {
            let fetched = this.fetch_peer_photo(&ctx, &room, &nick, &hash).await;
            this.peer_avatars.lock().fetching.remove(&hash);
            if let Err(e) = fetched {
                tracing::info!(adapter = %this.id, %room, %nick, error = %e,
                    "an occupant's avatar not fetched; their old one (if any) stays");
                return;
            }
            if let Err(e) = ctx
                .store()
                .put(&keys::of(PEER, &[user.as_str()]), hash.as_bytes())
            {
                tracing::warn!(adapter = %this.id, error = %e, "avatar not stored");
            }
            let url = format!("{SCHEME}{hash}");
            (this.peer_avatars.lock().hashes).insert(user.as_str().to_owned(), hash);
            let kind = EventKind::Profile {
                display_name: Some(nick.clone()),
                avatar: Some(url.clone()),
            };
            let mut event = InboundEvent::new(room.as_str(), None, user, kind);
            event.sender.display_name = Some(nick);
            event.sender.avatar = Some(url);
            if let Err(e) = ctx.enqueue(event) {
                tracing::warn!(adapter = %this.id, error = %e, "avatar change not accepted");
            }
        });
    }

    /// Asks occupant `nick` of `room` for their vCard and keeps its photo under `hash`, which
    /// it must match.
    async fn fetch_peer_photo(
        &self,
        ctx: &AdapterContext,
        room: &str,
        nick: &str,
        hash: &str,
    ) -> Result<(), String> {
        let data_key = keys::of(PEER_DATA, &[hash]);
        if ctx.store().get(&data_key).ok().flatten().is_some() {
            return Ok(()); // the same picture, seen on someone else or in another room
        }
        let mut iq = Element::builder("iq", NS_CLIENT)
            .with("type", "get")
            .with("to", &format!("{room}/{nick}"));
        if let Some(from) = self
            .listener_jid()
            .filter(|_| self.component_domain().is_some())
        {
            iq = iq.with("from", &from);
        }
        let iq = iq.append(Element::builder("vCard", NS_VCARD)).build();
        let answer = self.iq(iq).await.map_err(|e| e.to_string())?;
        let photo = (answer.get_child("vCard", NS_VCARD))
            .and_then(|v| v.get_child("PHOTO", NS_VCARD))
            .ok_or("the vCard has no photo")?;
        let encoded: String = (photo.get_child("BINVAL", NS_VCARD))
            .map(Element::text)
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        if encoded.len() as u64 > MAX_BYTES * 4 / 3 + 4 {
            return Err(format!("a photo over {MAX_BYTES} bytes"));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|e| format!("the photo is not base64: {e}"))?;
        if hex(&sha1::Sha1::digest(&bytes)) != hash {
            return Err("the vCard's photo is not the one the presence announced".into());
        }
        let mime = (photo.get_child("TYPE", NS_VCARD))
            .map(Element::text)
            .map(|t| t.trim().to_ascii_lowercase())
            .filter(|t| t.starts_with("image/"))
            .ok_or("the photo has no image TYPE")?;
        let type_key = keys::of(PEER_TYPE, &[hash]);
        ctx.store()
            .put_all(&[
                (type_key.as_slice(), mime.as_bytes()),
                (data_key.as_slice(), &bytes),
            ])
            .map_err(|e| e.to_string())
    }

    /// An XMPP user's avatar image, for another adapter (`xmpp-avatar:<SHA-1>` URLs).
    pub(super) fn peer_image(&self, url: &str) -> Result<AttachmentBody, AdapterError> {
        let hash = url
            .strip_prefix(SCHEME)
            .ok_or_else(|| AdapterError::Unsupported(format!("this adapter cannot fetch {url}")))?;
        let ctx = self.ctx()?;
        let gone = || AdapterError::Permanent(format!("no avatar {hash} is kept"));
        let data = ctx
            .store()
            .get(&keys::of(PEER_DATA, &[hash]))?
            .ok_or_else(gone)?;
        let mime = (ctx.store().get(&keys::of(PEER_TYPE, &[hash]))?)
            .map(|m| String::from_utf8_lossy(&m).into_owned());
        Ok(AttachmentBody {
            length: Some(data.len() as u64),
            mime,
            chunks: futures::stream::once(async move { Ok(bytes::Bytes::from(data)) }).boxed(),
        })
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
