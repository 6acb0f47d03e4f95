//! What the adapter knows about its rooms in the current session: who is there, under which
//! nick, and which occupants are ours (the listener and the puppets).
//!
//! Nothing here survives a reconnect: a new session has no MUC state, so [`Rooms::reset`]
//! forgets everything and the joins start again.

use std::collections::HashMap;

use bridge_core::{MembershipChange, RemoteUserId};

use crate::muc::OccupantPresence;

/// Longest nick we give a puppet, in characters (Prosody allows far more; clients do not).
const MAX_NICK_CHARS: usize = 48;

/// The stable identity of an occupant, the `RemoteUserId` the core sees: the real bare JID when
/// the room shows it, else the XEP-0421 occupant-id (stable per real user per room, and not
/// forgeable), else — only for rooms that offer neither — the nick, which anyone can take
/// after its owner leaves.
pub fn identity(
    room: &str,
    nick: &str,
    real_jid: Option<&str>,
    occupant_id: Option<&str>,
) -> RemoteUserId {
    match (real_jid, occupant_id) {
        (Some(jid), _) => RemoteUserId::new(jid),
        (None, Some(id)) => RemoteUserId::new(format!("{room}?occupant-id={id}")),
        (None, None) => RemoteUserId::new(format!("{room}/{nick}")),
    }
}

/// True for identities that only rest on a nick: corrections and retractions from them are not
/// trusted.
pub fn is_nick_identity(user: &RemoteUserId) -> bool {
    // `room/nick` has a slash before any `?`; `room?occupant-id=ID` has none there, though the
    // ID (base64) may hold slashes after it. A nick that reads "x?occupant-id=y" stays a nick.
    user.as_str()
        .split('?')
        .next()
        .is_some_and(|before_query| before_query.contains('/'))
}

/// Nicks to try for someone called `name`, in order: the name itself, then the name with the
/// adapter, then with a short hash of the user ID (deterministic, so the same person gets the
/// same nick every time). Control characters are removed and the length is capped.
pub fn nick_candidates(name: &str, adapter: &str, user: &str) -> Vec<String> {
    let clean: String = name
        .chars()
        .map(|c| if c.is_whitespace() { ' ' } else { c })
        .filter(|c| !c.is_control())
        .collect::<String>()
        .split(' ')
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let mut base: String = clean.chars().take(MAX_NICK_CHARS).collect();
    if base.is_empty() {
        base = user
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_NICK_CHARS)
            .collect();
    }
    let hash = fnv1a(user);
    vec![
        base.clone(),
        format!("{base} [{adapter}]"),
        format!("{base} [{:06x}]", hash & 0xff_ffff),
        format!("{base} [{:08x}]", hash),
    ]
}

fn fnv1a(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// Someone else in a room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Occupant {
    /// Their identity (see [`identity`]).
    pub user: RemoteUserId,
    /// Their XEP-0421 occupant-id.
    pub occupant_id: Option<String>,
    /// `moderator`, `participant`…
    pub role: Option<String>,
}

#[derive(Debug)]
struct Ours {
    nick: String,
    joined: bool,
    occupant_id: Option<String>,
}

#[derive(Debug, Default)]
struct Room {
    /// Occupants that are not ours, by nick.
    occupants: HashMap<String, Occupant>,
    /// Our occupants (listener, puppets), by JID.
    ours: HashMap<String, Ours>,
}

/// A change in a room as the listener saw it.
#[derive(Debug, PartialEq, Eq)]
pub enum Observed {
    /// Nothing to bridge (our own occupants, status updates).
    Nothing,
    /// Someone joined.
    Joined(Occupant, String),
    /// Someone left, was kicked or banned.
    Left(Occupant, String, MembershipChange, Option<String>),
    /// Someone changed nick.
    Renamed(Occupant, String),
}

/// Every room's state.
#[derive(Debug, Default)]
pub struct Rooms {
    rooms: HashMap<String, Room>,
}

impl Rooms {
    /// Forgets everything (a new session).
    pub fn reset(&mut self) {
        self.rooms.clear();
    }

    /// True when `nick` in `room` belongs to someone other than `occupant`.
    pub fn nick_taken_by_other(&self, room: &str, nick: &str, occupant: &str) -> bool {
        self.rooms.get(room).is_some_and(|r| {
            r.occupants.contains_key(nick)
                || r.ours
                    .iter()
                    .any(|(jid, o)| o.nick == nick && jid != occupant)
        })
    }

    /// Marks `nick` as ours before joining with it, so the listener does not bridge the join.
    pub fn claim(&mut self, room: &str, occupant: &str, nick: &str) {
        let r = self.rooms.entry(room.to_owned()).or_default();
        r.ours.insert(
            occupant.to_owned(),
            Ours {
                nick: nick.to_owned(),
                joined: false,
                occupant_id: None,
            },
        );
    }

    /// Undoes [`claim`](Self::claim) after a refused join.
    pub fn unclaim(&mut self, room: &str, occupant: &str) {
        if let Some(r) = self.rooms.get_mut(room) {
            r.ours.remove(occupant);
        }
    }

    /// Our occupant's self-presence arrived.
    pub fn joined(&mut self, room: &str, occupant: &str, presence: &OccupantPresence) {
        let r = self.rooms.entry(room.to_owned()).or_default();
        let ours = r.ours.entry(occupant.to_owned()).or_insert(Ours {
            nick: presence.nick.clone(),
            joined: false,
            occupant_id: None,
        });
        ours.nick.clone_from(&presence.nick);
        ours.joined = true;
        ours.occupant_id.clone_from(&presence.occupant_id);
    }

    /// Our occupant's nick and occupant-id, when it is in the room.
    pub fn our_occupant(&self, room: &str, occupant: &str) -> Option<(String, Option<String>)> {
        let ours = self.rooms.get(room)?.ours.get(occupant)?;
        ours.joined
            .then(|| (ours.nick.clone(), ours.occupant_id.clone()))
    }

    /// The nick our occupant has or is taking in the room (joined or not yet confirmed).
    pub fn our_claim(&self, room: &str, occupant: &str) -> Option<String> {
        Some(self.rooms.get(room)?.ours.get(occupant)?.nick.clone())
    }

    /// Our occupant left (or was removed from) the room.
    pub fn left(&mut self, room: &str, occupant: &str) {
        self.unclaim(room, occupant);
    }

    /// Forgets a room; returns our occupants that were in it, to leave.
    pub fn forget(&mut self, room: &str) -> Vec<(String, String)> {
        let Some(r) = self.rooms.remove(room) else {
            return Vec::new();
        };
        r.ours
            .into_iter()
            .filter(|(_, o)| o.joined)
            .map(|(jid, o)| (jid, o.nick))
            .collect()
    }

    /// True when a message from `nick` (with `occupant_id`) in `room` comes from us.
    pub fn is_ours(&self, room: &str, nick: &str, occupant_id: Option<&str>) -> bool {
        self.rooms.get(room).is_some_and(|r| {
            r.ours.values().any(|o| {
                o.nick == nick || (occupant_id.is_some() && o.occupant_id.as_deref() == occupant_id)
            })
        })
    }

    /// The JIDs of our occupants in `room` (joined, or joining).
    pub fn our_jids(&self, room: &str) -> Vec<String> {
        self.rooms
            .get(room)
            .map(|r| r.ours.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The nick of the occupant (not ours) whose identity is `user`.
    pub fn nick_of(&self, room: &str, user: &RemoteUserId) -> Option<String> {
        let r = self.rooms.get(room)?;
        r.occupants
            .iter()
            .find(|(_, o)| o.user == *user)
            .map(|(nick, _)| nick.clone())
    }

    /// The occupant called `nick`.
    pub fn occupant(&self, room: &str, nick: &str) -> Option<&Occupant> {
        self.rooms.get(room)?.occupants.get(nick)
    }

    /// The current occupants of a room that are not ours.
    pub fn occupants(&self, room: &str) -> Vec<Occupant> {
        self.rooms
            .get(room)
            .map(|r| r.occupants.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Applies a presence the listener received; says what to bridge.
    pub fn observe(&mut self, p: &OccupantPresence) -> Observed {
        let r = self.rooms.entry(p.room.clone()).or_default();
        if p.self_presence {
            return Observed::Nothing;
        }
        if r.ours.values().any(|o| o.nick == p.nick) {
            return Observed::Nothing;
        }
        let occupant = Occupant {
            user: identity(
                &p.room,
                &p.nick,
                p.real_jid.as_deref(),
                p.occupant_id.as_deref(),
            ),
            occupant_id: p.occupant_id.clone(),
            role: p.role.clone(),
        };
        if p.available {
            let known = r.occupants.insert(p.nick.clone(), occupant.clone());
            return match known {
                Some(_) => Observed::Nothing,
                None => Observed::Joined(occupant, p.nick.clone()),
            };
        }
        let Some(previous) = r.occupants.remove(&p.nick) else {
            return Observed::Nothing;
        };
        if let Some(new_nick) = &p.new_nick {
            // The available presence under the new nick follows; record it now so that it is
            // not taken for a join.
            r.occupants.insert(new_nick.clone(), previous.clone());
            return Observed::Renamed(previous, new_nick.clone());
        }
        let change = match (p.banned, p.kicked) {
            (true, _) => MembershipChange::Ban,
            (false, true) => MembershipChange::Kick,
            _ => MembershipChange::Leave,
        };
        Observed::Left(previous, p.nick.clone(), change, p.status.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn presence(nick: &str, available: bool) -> OccupantPresence {
        OccupantPresence {
            room: "r@c".into(),
            nick: nick.into(),
            available,
            occupant_id: Some(format!("occ-{nick}")),
            ..OccupantPresence::default()
        }
    }

    #[test]
    fn identities_prefer_real_jids_then_occupant_ids() {
        assert_eq!(identity("r@c", "N", Some("n@x"), Some("o")).as_str(), "n@x");
        assert_eq!(
            identity("r@c", "N", None, Some("o")).as_str(),
            "r@c?occupant-id=o"
        );
        let nick = identity("r@c", "N", None, None);
        assert_eq!(nick.as_str(), "r@c/N");
        assert!(is_nick_identity(&nick));
        assert!(!is_nick_identity(&identity("r@c", "N", None, Some("o"))));
        // Prosody's occupant IDs are base64, slashes included.
        let occupant = identity("r@c", "N", None, Some("IVEl0xYo/RzjW/P0YB="));
        assert!(!is_nick_identity(&occupant), "{occupant}");
        // A nick can look like an occupant-id identity; it is still a nick.
        assert!(is_nick_identity(&identity(
            "r@c",
            "x?occupant-id=y",
            None,
            None
        )));
    }

    #[test]
    fn nick_candidates_are_clean_distinct_and_deterministic() {
        let a = nick_candidates(" Alice\u{7}\n Smith ", "matrix", "@alice:x");
        assert_eq!(a[0], "Alice Smith");
        assert_eq!(a[1], "Alice Smith [matrix]");
        assert_eq!(
            a,
            nick_candidates(" Alice\u{7}\n Smith ", "matrix", "@alice:x")
        );
        assert_ne!(
            a[2],
            nick_candidates("Alice Smith", "matrix", "@alice2:x")[2]
        );
        assert_eq!(nick_candidates("", "m", "@u:x")[0], "@u:x");
        assert_eq!(
            nick_candidates(&"x".repeat(500), "m", "u")[0]
                .chars()
                .count(),
            MAX_NICK_CHARS
        );
    }

    #[test]
    fn presences_become_joins_leaves_and_renames_but_never_for_our_own() {
        let mut rooms = Rooms::default();
        rooms.claim("r@c", "p@bridge/b", "Puppet");
        assert_eq!(rooms.observe(&presence("Puppet", true)), Observed::Nothing);
        let Observed::Joined(bob, nick) = rooms.observe(&presence("Bob", true)) else {
            panic!("Bob's arrival is a join");
        };
        assert_eq!(
            (bob.user.as_str(), nick.as_str()),
            ("r@c?occupant-id=occ-Bob", "Bob")
        );
        assert_eq!(
            rooms.observe(&presence("Bob", true)),
            Observed::Nothing,
            "a status update"
        );
        let mut rename = presence("Bob", false);
        rename.new_nick = Some("Robert".into());
        assert!(matches!(rooms.observe(&rename), Observed::Renamed(_, ref n) if n == "Robert"));
        assert_eq!(rooms.observe(&presence("Robert", true)), Observed::Nothing);
        let mut kick = presence("Robert", false);
        kick.kicked = true;
        assert!(matches!(
            rooms.observe(&kick),
            Observed::Left(_, _, MembershipChange::Kick, _)
        ));
        assert!(rooms.nick_taken_by_other("r@c", "Puppet", "other@bridge/b"));
        assert!(!rooms.nick_taken_by_other("r@c", "Puppet", "p@bridge/b"));
        assert!(rooms.is_ours("r@c", "Puppet", None));
        assert_eq!(
            rooms.forget("r@c"),
            Vec::<(String, String)>::new(),
            "the puppet never joined"
        );
    }
}
