//! The ghosts: one Matrix user per remote user, registered on first use, named after the
//! remote user's display name, joined to a room the first time it speaks there.
//!
//! What the homeserver already has is remembered in the adapter's store (`g/<user>` → display
//! name, `j/<room>\0<user>` → joined), so after a restart nothing is registered or joined twice.
//! In memory a ghost costs its user ID, its name and a bit per joined room.
//!
//! A remote user may have another name in each room (an XMPP nick is per room). While the
//! ghost is in no other room, a new name is its profile's (which the homeserver shows in its
//! member events). Once it is in several, a room where its user is called otherwise shows that
//! name in the ghost's member event there (`m/<room>\0<user>` → name, set again after each
//! join), and the profile keeps its name. Changing the profile then would rename the ghost in
//! every room at each message, with a "changed their name" line in each.

use std::collections::{HashMap, HashSet};

use bridge_core::{AdapterContext, AdapterError, AdapterId, AdapterStore};
use parking_lot::Mutex;
use ruma::api::client::account::register::{self, LoginType};
use ruma::api::client::membership::{invite_user, join_room_by_id};
use ruma::api::client::profile::set_profile_field;
use ruma::profile::ProfileFieldValue;
use ruma::{OwnedRoomId, OwnedUserId, UserId};

use crate::homeserver::{As, Homeserver, HsError};

/// Store key prefixes.
const GHOST: &[u8] = b"g/";
const JOINED: &[u8] = b"j/";
const ROOM_NAME: &[u8] = b"m/";

/// What is known about a ghost on the homeserver.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
struct Ghost {
    /// The display name set on the homeserver (None: never set).
    #[serde(default, rename = "n", skip_serializing_if = "Option::is_none")]
    name: Option<Box<str>>,
    /// Where the avatar set on the homeserver came from (the remote user's avatar URL).
    #[serde(default, rename = "a", skip_serializing_if = "Option::is_none")]
    avatar: Option<Box<str>>,
}

/// The remote profile a ghost shows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GhostProfile<'a> {
    /// The remote user's display name.
    pub(crate) name: Option<&'a str>,
    /// The remote user's avatar URL, in the scheme of the adapter it came from.
    pub(crate) avatar: Option<&'a str>,
    /// That adapter (which can fetch the avatar).
    pub(crate) source: &'a AdapterId,
}

/// (room, ghost) → a name.
type RoomNames = HashMap<(Box<str>, Box<str>), Box<str>>;

/// The ghosts this adapter has made, and where they are.
#[derive(Debug, Default)]
pub(crate) struct Ghosts {
    known: Mutex<HashMap<Box<str>, Ghost>>,
    /// (room, ghost) pairs where the ghost is joined. Room IDs are interned: a string each.
    joined: Mutex<Joined>,
    /// The `ghost_name` setting, unless it is the name alone.
    name_template: Option<Box<str>>,
    /// (room, ghost) → the name the ghost shows in that room, where it is not the profile's.
    room_names: Mutex<RoomNames>,
}

#[derive(Debug, Default)]
struct Joined {
    rooms: HashMap<Box<str>, u32>,
    pairs: HashSet<(u32, Box<str>)>,
}

impl Joined {
    fn room(&mut self, room: &str) -> u32 {
        if let Some(&i) = self.rooms.get(room) {
            return i;
        }
        let i = u32::try_from(self.rooms.len()).unwrap_or(u32::MAX);
        self.rooms.insert(room.into(), i);
        i
    }
}

/// A ghost's display name from the `ghost_name` template: `{name}` the remote user's name,
/// `{network}` the adapter they come from.
fn display_name(template: &str, name: &str, network: &AdapterId) -> String {
    template
        .replace("{network}", network.as_str())
        .replace("{name}", name)
}

impl Ghosts {
    /// No ghosts yet; their display names made from `template` (the `ghost_name` setting).
    pub(crate) fn named(template: &str) -> Self {
        Self {
            name_template: (template != "{name}").then(|| template.into()),
            ..Self::default()
        }
    }

    /// Loads what the store remembers.
    pub(crate) fn load(store: &AdapterStore) -> Result<Self, bridge_core::StoreError> {
        let ghosts = Self::default();
        {
            let mut known = ghosts.known.lock();
            for (key, value) in store.scan(GHOST, usize::MAX)? {
                let user = String::from_utf8_lossy(&key[GHOST.len()..]).into_owned();
                let ghost = serde_json::from_slice(&value).unwrap_or_default();
                known.insert(user.into_boxed_str(), ghost);
            }
        }
        {
            let mut joined = ghosts.joined.lock();
            for (key, _) in store.scan(JOINED, usize::MAX)? {
                let pair = String::from_utf8_lossy(&key[JOINED.len()..]).into_owned();
                if let Some((room, user)) = pair.split_once('\0') {
                    let i = joined.room(room);
                    joined.pairs.insert((i, user.into()));
                }
            }
        }
        {
            let mut names = ghosts.room_names.lock();
            for (key, value) in store.scan(ROOM_NAME, usize::MAX)? {
                let pair = String::from_utf8_lossy(&key[ROOM_NAME.len()..]).into_owned();
                if let Some((room, user)) = pair.split_once('\0') {
                    let name = String::from_utf8_lossy(&value).into_owned();
                    names.insert((room.into(), user.into()), name.into_boxed_str());
                }
            }
        }
        Ok(ghosts)
    }

    /// Takes over what `other` knows (the state loaded at start).
    pub(crate) fn replace(&self, other: Ghosts) {
        *self.known.lock() = other.known.into_inner();
        *self.joined.lock() = other.joined.into_inner();
        *self.room_names.lock() = other.room_names.into_inner();
    }

    /// The name `user` shows in `room` when it is not its profile's.
    fn room_name(&self, room: &str, user: &str) -> Option<Box<str>> {
        self.room_names
            .lock()
            .get(&(room.into(), user.into()))
            .cloned()
    }

    /// Makes `user` show `name` in `room` (its member event there), now if it is joined, else
    /// after its join.
    async fn name_in_room(
        &self,
        hs: &Homeserver,
        store: &AdapterStore,
        room: &OwnedRoomId,
        user: &UserId,
        name: &str,
    ) -> Result<(), AdapterError> {
        store.put(&key(ROOM_NAME, &format!("{room}\0{user}")), name.as_bytes())?;
        self.room_names
            .lock()
            .insert((room.as_str().into(), user.as_str().into()), name.into());
        if self.is_joined(room.as_str(), user.as_str()) {
            show_name(hs, room, user, name).await?;
        }
        Ok(())
    }

    /// How many ghosts are known.
    pub(crate) fn len(&self) -> usize {
        self.known.lock().len()
    }

    /// Registers the ghost if it is new, and sets its display name and avatar where they
    /// changed: the name in `room` only, once the profile has one (module docs). An avatar that
    /// cannot be fetched or uploaded is logged, not an error: the message still goes out.
    pub(crate) async fn ensure(
        &self,
        hs: &Homeserver,
        ctx: &AdapterContext,
        me: &AdapterId,
        user: &UserId,
        room: Option<&OwnedRoomId>,
        profile: GhostProfile<'_>,
    ) -> Result<(), AdapterError> {
        let store = ctx.store();
        let known = self.known.lock().get(user.as_str()).cloned();
        let mut ghost = match known {
            Some(ghost) => ghost,
            None => {
                register(hs, user).await?;
                let ghost = Ghost::default();
                self.remember(store, user, &ghost)?;
                ghost
            }
        };
        let mut changed = false;
        let name =
            (profile.name.filter(|n| !n.trim().is_empty())).map(|name| match &self.name_template {
                Some(template) => display_name(template, name, profile.source),
                None => name.to_owned(),
            });
        let name = name.map(|n| n.chars().take(256).collect::<String>());
        let shown = room
            .and_then(|r| self.room_name(r.as_str(), user.as_str()))
            .or_else(|| ghost.name.clone());
        // A ghost in no other room takes the name on its profile; one in several, in the room.
        let in_room = room
            .filter(|r| ghost.name.is_some() && self.joined_elsewhere(r.as_str(), user.as_str()));
        if let (Some(name), Some(room)) = (&name, in_room) {
            if shown.as_deref() != Some(name.as_str()) {
                self.name_in_room(hs, store, room, user, name).await?;
            }
        } else if let Some(name) = name
            && ghost.name.as_deref() != Some(name.as_str())
        {
            hs.call(
                set_profile_field::v3::Request::new(
                    user.to_owned(),
                    ProfileFieldValue::DisplayName(name.clone()),
                ),
                As::Ghost(user),
            )
            .await?;
            ghost.name = Some(name.into_boxed_str());
            changed = true;
            if let Some(room) = room {
                self.forget_room_name(store, room.as_str(), user.as_str())?;
                // The homeserver renames the ghost in its rooms in the background: this room
                // shows it before the message that carries the new name.
                // Best effort: the bot may not read a room it is not in (a direct chat).
                let name = ghost.name.as_deref().unwrap_or_default();
                if self.is_joined(room.as_str(), user.as_str())
                    && let Err(e) = show_name(hs, room, user, name).await
                {
                    tracing::debug!(ghost = %user, %room, error = %e,
                        "the room shows the new name once the homeserver renames the ghost there");
                }
            }
        }
        if let Some(avatar) = profile.avatar.filter(|a| !a.is_empty())
            && ghost.avatar.as_deref() != Some(avatar)
        {
            match set_avatar(hs, ctx, me, user, profile.source, avatar).await {
                Ok(()) => {
                    ghost.avatar = Some(avatar.into());
                    changed = true;
                }
                Err(e) => {
                    tracing::warn!(ghost = %user, %avatar, error = %e, "cannot set the ghost's avatar");
                }
            }
        }
        if changed {
            self.remember(store, user, &ghost)?;
        }
        Ok(())
    }

    fn remember(
        &self,
        store: &AdapterStore,
        user: &UserId,
        ghost: &Ghost,
    ) -> Result<(), bridge_core::StoreError> {
        let json = serde_json::to_vec(ghost).unwrap_or_default();
        store.put(&key(GHOST, user.as_str()), &json)?;
        self.known
            .lock()
            .insert(user.as_str().into(), ghost.clone());
        Ok(())
    }

    /// Whether the ghost is joined to the room (as far as this bridge knows).
    /// True when the ghost is joined to a room other than `room`.
    fn joined_elsewhere(&self, room: &str, user: &str) -> bool {
        let joined = self.joined.lock();
        let here = joined.rooms.get(room).copied();
        (joined.pairs.iter()).any(|(i, u)| **u == *user && Some(*i) != here)
    }

    /// Drops the name the ghost had in `room` alone (its profile's name is the one there now).
    fn forget_room_name(
        &self,
        store: &AdapterStore,
        room: &str,
        user: &str,
    ) -> Result<(), AdapterError> {
        if self
            .room_names
            .lock()
            .remove(&(room.into(), user.into()))
            .is_some()
        {
            store.delete(&key(ROOM_NAME, &format!("{room}\0{user}")))?;
        }
        Ok(())
    }

    pub(crate) fn is_joined(&self, room: &str, user: &str) -> bool {
        let joined = self.joined.lock();
        joined
            .rooms
            .get(room)
            .is_some_and(|&i| joined.pairs.contains(&(i, user.into())))
    }

    /// Joins the ghost to the room if it is not there yet: a plain join first (public rooms,
    /// or the ghost was invited), else an invite from the bridge bot and a join.
    pub(crate) async fn join(
        &self,
        hs: &Homeserver,
        store: &AdapterStore,
        room: &OwnedRoomId,
        user: &UserId,
    ) -> Result<(), AdapterError> {
        if self.is_joined(room.as_str(), user.as_str()) {
            return Ok(());
        }
        let join = || {
            hs.call(
                join_room_by_id::v3::Request::new(room.clone()),
                As::Ghost(user),
            )
        };
        if let Err(first) = join().await {
            if first.status() != Some(403) {
                return Err(first.into());
            }
            let invite = invite_user::v3::Request::new(
                room.clone(),
                invite_user::v3::InviteUserId::new(user.to_owned()).into(),
            );
            match hs.call(invite, As::Bot).await {
                Ok(_) => {}
                // Already invited or joined: the join below tells.
                Err(e) if e.status() == Some(403) => {
                    tracing::debug!(room = %room, ghost = %user, error = %e, "invite refused");
                }
                Err(e) => return Err(e.into()),
            }
            if let Err(e) = join().await {
                // Banned by the room's moderators: what its remote user says stays out of the
                // room, as they decided (skipped and counted, not a dead letter).
                if membership(hs, room, user).await.as_deref() == Some("ban") {
                    return Err(AdapterError::Unsupported(format!(
                        "{user} is banned from {room}: its remote user's messages are not delivered there"
                    )));
                }
                return Err(AdapterError::Permanent(format!(
                    "{user} cannot join {room} (is the bridge bot in the room, allowed to invite?): {e}"
                )));
            }
        }
        self.mark_joined(store, room.as_str(), user.as_str())?;
        // Joined with its profile's name: the room's own, if it has one.
        if let Some(name) = self.room_name(room.as_str(), user.as_str())
            && let Err(e) = show_name(hs, room, user, &name).await
        {
            tracing::warn!(%room, ghost = %user, error = %e, "cannot show the ghost's name in this room");
        }
        Ok(())
    }

    /// Records that the ghost is in the room.
    pub(crate) fn mark_joined(
        &self,
        store: &AdapterStore,
        room: &str,
        user: &str,
    ) -> Result<(), bridge_core::StoreError> {
        store.put(&key(JOINED, &format!("{room}\0{user}")), b"")?;
        let mut joined = self.joined.lock();
        let i = joined.room(room);
        joined.pairs.insert((i, user.into()));
        Ok(())
    }

    /// Forgets that the ghost is in the room (it left, or was kicked).
    pub(crate) fn mark_left(
        &self,
        store: &AdapterStore,
        room: &str,
        user: &str,
    ) -> Result<(), bridge_core::StoreError> {
        store.delete(&key(JOINED, &format!("{room}\0{user}")))?;
        let mut joined = self.joined.lock();
        if let Some(&i) = joined.rooms.get(room) {
            joined.pairs.remove(&(i, user.into()));
        }
        Ok(())
    }
}

/// The content of `user`'s `m.room.member` event in `room`, as the bot reads it (`Null` when
/// it is not JSON).
pub(crate) async fn member_state(
    hs: &Homeserver,
    room: &ruma::RoomId,
    user: &str,
) -> Result<serde_json::Value, HsError> {
    let request = ruma::api::client::state::get_state_event_for_key::v3::Request::new(
        room.to_owned(),
        ruma::events::StateEventType::RoomMember,
        user.to_owned(),
    );
    let answer = hs.call(request, As::Bot).await?;
    Ok(serde_json::from_str(answer.event_or_content.get()).unwrap_or_default())
}

/// `user`'s membership in `room` (`join`, `ban`…) as the bot reads it; `None` when the room
/// has no member event of theirs.
pub(crate) async fn membership_of(
    hs: &Homeserver,
    room: &ruma::RoomId,
    user: &str,
) -> Result<Option<String>, HsError> {
    match member_state(hs, room, user).await {
        Ok(content) => Ok(content
            .get("membership")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)),
        Err(e) if e.status() == Some(404) => Ok(None),
        Err(e) => Err(e),
    }
}

/// [`membership_of`], `None` as well when it cannot be read.
async fn membership(hs: &Homeserver, room: &OwnedRoomId, user: &UserId) -> Option<String> {
    membership_of(hs, room, user.as_str()).await.ok().flatten()
}

/// Sets the display name of `user`'s member event in `room` (as the ghost, which may change its
/// own), keeping the rest of it (membership, avatar).
async fn show_name(
    hs: &Homeserver,
    room: &OwnedRoomId,
    user: &UserId,
    name: &str,
) -> Result<(), AdapterError> {
    let mut content = member_state(hs, room, user.as_str()).await?;
    if content
        .get("membership")
        .and_then(serde_json::Value::as_str)
        != Some("join")
    {
        return Ok(()); // not in the room: its next join sets it
    }
    if content
        .get("displayname")
        .and_then(serde_json::Value::as_str)
        == Some(name)
    {
        return Ok(());
    }
    content["displayname"] = name.into();
    crate::calls::put_state(
        hs,
        As::Ghost(user),
        room,
        "m.room.member",
        user.to_string(),
        &content,
    )
    .await?;
    Ok(())
}

/// Puts the remote user's avatar in the media repository (fetched through its adapter) and
/// makes it the ghost's.
async fn set_avatar(
    hs: &Homeserver,
    ctx: &AdapterContext,
    me: &AdapterId,
    user: &UserId,
    source: &AdapterId,
    avatar: &str,
) -> Result<(), AdapterError> {
    /// Avatars are small pictures; anything larger is refused.
    const AVATAR_LIMIT: u64 = 4 * 1024 * 1024;
    let attachment = bridge_core::Attachment {
        name: "avatar".into(),
        url: avatar.to_owned(),
        ..bridge_core::Attachment::default()
    };
    let mxc = crate::calls::rehost(
        hs,
        As::Ghost(user),
        ctx,
        me,
        source,
        &attachment,
        AVATAR_LIMIT,
    )
    .await?;
    let mxc = ruma::OwnedMxcUri::from(mxc);
    hs.call(
        set_profile_field::v3::Request::new(user.to_owned(), ProfileFieldValue::AvatarUrl(mxc)),
        As::Ghost(user),
    )
    .await?;
    Ok(())
}

/// Registers a ghost in the appservice's namespace; an existing one is fine.
pub(crate) async fn register(hs: &Homeserver, user: &UserId) -> Result<(), AdapterError> {
    let mut request = register::v3::Request::new();
    request.username = Some(user.localpart().to_owned());
    request.login_type = Some(LoginType::ApplicationService);
    request.inhibit_login = true;
    match hs.call(request, As::Bot).await {
        Ok(_) => Ok(()),
        Err(HsError::Matrix { errcode, .. }) if errcode == "M_USER_IN_USE" => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn key(prefix: &[u8], rest: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + rest.len());
    key.extend_from_slice(prefix);
    key.extend_from_slice(rest.as_bytes());
    key
}

/// The user ID of a ghost, checked.
pub(crate) fn user_id(text: &str) -> Result<OwnedUserId, AdapterError> {
    UserId::parse(text)
        .map_err(|e| AdapterError::Permanent(format!("{text} is not a valid user ID: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ghost_is_named_from_the_template() {
        let xmpp = AdapterId::new("xmpp");
        assert_eq!(
            display_name("{name} ({network})", "Xavier", &xmpp),
            "Xavier (xmpp)"
        );
        // A name that looks like a placeholder stays as it is.
        assert_eq!(
            display_name("{name} [{network}]", "{network}", &xmpp),
            "{network} [xmpp]"
        );
        assert!(Ghosts::named("{name}").name_template.is_none());
        assert!(Ghosts::named("{name}!").name_template.is_some());
    }
}
