//! The puppets a room should have, across sessions (component mode).
//!
//! A MUC keeps its occupants when the bridge goes away quietly, and removes them (status 333)
//! when a stanza to them bounces while the bridge is away; a restarted server has none. The
//! room state of [`super::state`] is gone after a reconnect either way. So each puppet's join
//! is remembered in the store (the room, the puppet's JID → its nicks and occupant-id), and:
//!
//! - an occupant of an earlier session that the room still has is **known as ours** when the
//!   listener sees it again: by its real JID on the component's domain, or by an occupant-id
//!   our occupants had ([`keys::OURS`]). It is taken back as a joined puppet, never bridged as
//!   someone new (which would echo every far-side user back as a user of this network);
//! - once the listener is in the rooms again, every remembered puppet the room no longer has
//!   **joins again**, so that the room's occupant list shows the far side as it was.
//!
//! A puppet is forgotten when its user leaves (the core's leave), when the room bans it, kicks
//! it by someone's decision (not 333), or is destroyed, and when the room is unlinked. A kicked
//! puppet joins again when its user next speaks, as before.

use std::sync::Arc;

use bridge_core::{AdapterContext, RemoteRoomId};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::inbound::keys;
use super::outbound::Speaker;
use super::{Inner, PUPPET_RESOURCE};
use crate::jid;
use crate::muc::OccupantPresence;

/// How many puppets join at once after a reconnect.
const REJOINS_AT_ONCE: usize = 8;

/// What is remembered of a puppet in a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Remembered {
    /// The nick it had first, then the others it may take.
    nicks: Vec<String>,
    /// Its XEP-0421 occupant-id there, when the room gives them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    occupant_id: Option<String>,
}

fn key(room: &str, puppet: &str) -> Vec<u8> {
    keys::of(keys::PUPPET, &[&room.to_ascii_lowercase(), puppet])
}

fn room_prefix(room: &str) -> Vec<u8> {
    keys::of(keys::PUPPET, &[&room.to_ascii_lowercase(), ""])
}

/// The nicks to remember: the one the room gave first, then the candidates, once each.
fn nicks_with(nick: &str, candidates: &[String]) -> Vec<String> {
    let mut nicks = vec![nick.to_owned()];
    nicks.extend(candidates.iter().filter(|n| *n != nick).cloned());
    nicks
}

/// True when a presence that removes our occupant means it should not come back by itself:
/// banned, kicked by someone (a kick for a technical problem, 333, is not a decision), or the
/// room destroyed.
fn removal_is_meant(p: &OccupantPresence) -> bool {
    p.banned || (p.kicked && !p.errored) || p.destroyed.is_some()
}

impl Inner {
    /// A puppet joined `room` as `nick` (trying `candidates`): remembered.
    pub(super) fn remember_puppet(
        &self,
        room: &str,
        puppet: &str,
        nick: &str,
        candidates: &[String],
        occupant_id: Option<&str>,
    ) {
        let Ok(ctx) = self.ctx() else { return };
        let value = Remembered {
            nicks: nicks_with(nick, candidates),
            occupant_id: occupant_id.map(str::to_owned),
        };
        let Ok(bytes) = serde_json::to_vec(&value) else {
            return;
        };
        let key = key(room, puppet);
        if ctx.store().get(&key).ok().flatten().as_deref() == Some(bytes.as_slice()) {
            return;
        }
        if let Err(e) = ctx.store().put(&key, &bytes) {
            tracing::warn!(adapter = %self.id, error = %e, "cannot write to the store");
        }
    }

    /// The puppet's user left `room`: it is not joined again.
    pub(super) fn forget_puppet(&self, room: &str, puppet: &str) {
        if let Ok(ctx) = self.ctx()
            && let Err(e) = ctx.store().delete(&key(room, puppet))
        {
            tracing::warn!(adapter = %self.id, error = %e, "cannot write to the store");
        }
    }

    /// The puppets remembered in `room`, each with the nick it was given first there.
    pub(super) fn remembered_in(&self, room: &str) -> Vec<(String, String)> {
        let Ok(ctx) = self.ctx() else {
            return Vec::new();
        };
        let prefix = room_prefix(room);
        let found = match ctx.store().scan(&prefix, usize::MAX) {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(adapter = %self.id, error = %e, "cannot read the store");
                return Vec::new();
            }
        };
        (found.into_iter())
            .map(|(key, value)| {
                let puppet = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
                let nick = serde_json::from_slice::<Remembered>(&value)
                    .ok()
                    .and_then(|r| r.nicks.into_iter().next())
                    .unwrap_or_default();
                (puppet, nick)
            })
            .collect()
    }

    /// `source`'s users no longer reach `room` (its link to the same neutral room was removed):
    /// their puppets there leave and are forgotten, the remembered ones not in the room now
    /// included (so that no reconnect brings them back).
    pub(super) async fn source_puppets_leave(
        &self,
        room: &str,
        source: &bridge_core::AdapterId,
    ) -> Result<(), bridge_core::AdapterError> {
        let ctx = self.ctx()?;
        let prefix = room_prefix(room);
        let mut puppets: Vec<String> = ctx
            .store()
            .scan(&prefix, usize::MAX)
            .map_err(|e| bridge_core::AdapterError::transient(e.to_string()))?
            .into_iter()
            .map(|(key, _)| String::from_utf8_lossy(&key[prefix.len()..]).into_owned())
            .collect();
        puppets.extend(self.rooms.lock().our_jids(room));
        puppets.sort();
        puppets.dedup();
        for puppet in puppets {
            if (self.counterpart_of(&puppet)).is_none_or(|user| user.adapter != *source) {
                continue;
            }
            self.puppet_leaves(room, &puppet).await?;
        }
        Ok(())
    }

    /// Our puppet leaves `room` (also while its join or nick change is unconfirmed) and is
    /// forgotten: it is not joined again until its user speaks.
    pub(super) async fn puppet_leaves(
        &self,
        room: &str,
        puppet: &str,
    ) -> Result<(), bridge_core::AdapterError> {
        self.forget_puppet(room, puppet);
        let nick = self.rooms.lock().our_claim(room, puppet);
        if let Some(nick) = nick {
            let leave = crate::muc::leave(self.stanza_from(puppet), room, &nick);
            self.rooms.lock().left(room, puppet);
            self.send_stanza(leave).await?;
        }
        Ok(())
    }

    /// Our puppet `puppet` left `room` or was removed (its self-presence): forgotten when
    /// that was meant ([`removal_is_meant`]).
    pub(super) fn puppet_removed(&self, p: &OccupantPresence, puppet: &str) {
        if removal_is_meant(p) {
            tracing::info!(adapter = %self.id, room = %p.room, puppet,
                banned = p.banned, "a puppet was removed from the room; it joins again only when its user speaks");
            self.forget_puppet(&p.room, puppet);
        }
    }

    /// An occupant the listener sees that the room state does not know as ours: `Some` when
    /// it is one of ours from an earlier session (see the module docs), with its JID when the
    /// room says which puppet it is. It is then recorded as joined.
    ///
    /// A real JID on the component's domain tells at any time. Without one, only the
    /// occupants the room lists while the listener joins (before its own presence) are looked
    /// up, as earlier occupants can only be among them: by an occupant-id one of ours had, else
    /// (a room giving neither) by the nick a remembered puppet had.
    pub(super) fn earlier_occupant(
        &self,
        ctx: &AdapterContext,
        p: &OccupantPresence,
    ) -> Option<Option<String>> {
        let domain = self.component_domain()?;
        let listener = self.listener_jid()?;
        let joining = || {
            (self.rooms.lock())
                .our_occupant(&p.room, &listener)
                .is_none()
        };
        let puppet = match (p.real_jid.as_deref(), p.occupant_id.as_deref()) {
            (Some(real), _) => {
                let bare = jid::bare(real);
                if !(bare.rsplit_once('@')).is_some_and(|(_, d)| d.eq_ignore_ascii_case(domain)) {
                    return None;
                }
                Some(format!("{bare}/{PUPPET_RESOURCE}"))
            }
            (None, Some(occupant_id)) if joining() => {
                let ours = keys::of(keys::OURS, &[&p.room, occupant_id]);
                ctx.store().get(&ours).ok().flatten()?;
                self.remembered_puppet(ctx, &p.room, |r| {
                    r.occupant_id.as_deref() == Some(occupant_id)
                })
            }
            (None, None) if joining() => {
                Some(self.remembered_puppet(ctx, &p.room, |r| r.nicks.first() == Some(&p.nick))?)
            }
            _ => return None,
        };
        if p.available
            && let Some(puppet) = &puppet
            && *puppet != listener
        {
            self.rooms.lock().joined(&p.room, puppet, p);
        }
        Some(puppet)
    }

    /// The remembered puppet of `room` whose record `pick` accepts.
    fn remembered_puppet(
        &self,
        ctx: &AdapterContext,
        room: &str,
        pick: impl Fn(&Remembered) -> bool,
    ) -> Option<String> {
        let prefix = room_prefix(room);
        let found = ctx.store().scan(&prefix, usize::MAX).ok()?;
        found.into_iter().find_map(|(key, value)| {
            let remembered: Remembered = serde_json::from_slice(&value).ok()?;
            pick(&remembered).then(|| String::from_utf8_lossy(&key[prefix.len()..]).into_owned())
        })
    }

    /// After the listener is in the linked rooms again: every remembered puppet that the
    /// room does not have joins it again (a few at a time). A join the room refuses for good
    /// forgets the puppet; one that fails for now is tried at the next session.
    pub(super) async fn rejoin_puppets(
        self: Arc<Self>,
        ctx: AdapterContext,
        rooms: Vec<RemoteRoomId>,
    ) {
        let mut wanted = Vec::new();
        for room in rooms.iter().map(RemoteRoomId::as_str) {
            let prefix = room_prefix(room);
            let found = match ctx.store().scan(&prefix, usize::MAX) {
                Ok(found) => found,
                Err(e) => {
                    tracing::warn!(adapter = %self.id, %room, error = %e, "cannot read the room's puppets");
                    continue;
                }
            };
            for (key, value) in found {
                let puppet = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
                // A puppet of a network no longer linked to the room (its link was left out of
                // the configuration) stays out: the core has it leave if the room still has it.
                if let Some(user) = self.counterpart_of(&puppet)
                    && !ctx.reaches(&RemoteRoomId::new(room), &user.adapter)
                {
                    tracing::info!(adapter = %self.id, %room, %puppet,
                        "a puppet of a network no longer linked to the room is not joined again");
                    let _ = ctx.store().delete(&key);
                    continue;
                }
                match serde_json::from_slice::<Remembered>(&value) {
                    Ok(remembered) if !remembered.nicks.is_empty() => {
                        wanted.push((room.to_owned(), puppet, remembered.nicks));
                    }
                    _ => {
                        tracing::warn!(adapter = %self.id, %room, %puppet, "unreadable puppet record; forgotten");
                        let _ = ctx.store().delete(&key);
                    }
                }
            }
        }
        if wanted.is_empty() {
            return;
        }
        tracing::info!(adapter = %self.id, puppets = wanted.len(), "puppets joining their rooms again");
        let this = &self;
        futures::stream::iter(wanted)
            .for_each_concurrent(REJOINS_AT_ONCE, |(room, puppet, nicks)| async move {
                let speaker = Speaker { jid: puppet, nicks };
                match this.ensure_joined(&room, &speaker).await {
                    Ok(_) => {}
                    Err(bridge_core::AdapterError::Permanent(why)) => {
                        tracing::info!(adapter = %this.id, %room, puppet = %speaker.jid, %why,
                            "a puppet cannot join its room again; forgotten until its user speaks");
                        this.forget_puppet(&room, &speaker.jid);
                    }
                    Err(e) => {
                        tracing::debug!(adapter = %this.id, %room, puppet = %speaker.jid, error = %e,
                            "a puppet did not join again; tried at the next session");
                    }
                }
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nick_the_room_gave_comes_first_once() {
        let candidates = ["Bob".to_owned(), "Bob [matrix]".to_owned()];
        assert_eq!(nicks_with("Bob", &candidates), candidates);
        assert_eq!(
            nicks_with("Bob [matrix]", &candidates),
            ["Bob [matrix]", "Bob"]
        );
    }

    #[test]
    fn only_a_decision_makes_a_removal_stick() {
        let mut p = OccupantPresence {
            kicked: true,
            ..OccupantPresence::default()
        };
        assert!(removal_is_meant(&p), "a moderator's kick");
        p.errored = true;
        assert!(
            !removal_is_meant(&p),
            "removed because the bridge did not answer"
        );
        p.banned = true;
        assert!(removal_is_meant(&p));
        let left = OccupantPresence::default();
        assert!(
            !removal_is_meant(&left),
            "a server shutting down, a plain unavailable"
        );
        let destroyed = OccupantPresence {
            destroyed: Some(crate::muc::Destroyed::default()),
            ..OccupantPresence::default()
        };
        assert!(removal_is_meant(&destroyed));
    }

    #[test]
    fn records_read_back() {
        let value = Remembered {
            nicks: vec!["Bob".into()],
            occupant_id: None,
        };
        let bytes = serde_json::to_vec(&value).expect("serialises");
        assert_eq!(bytes, br#"{"nicks":["Bob"]}"#);
        let back: Remembered = serde_json::from_slice(&bytes).expect("reads");
        assert_eq!(back, value);
    }
}
