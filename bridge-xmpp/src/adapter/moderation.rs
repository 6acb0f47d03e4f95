//! Kicks and bans crossing (component mode): [`bridge_core::EventKind::Moderation`].
//!
//! - **Into the MUC.** A moderator of another network kicked, banned or unbanned someone. The
//!   adapter does the same here as the moderator's puppet (an XEP-0045 admin request: a kick
//!   takes the role `none` by nick, a ban the affiliation `outcast` by bare JID, an unban the
//!   affiliation `none`), and where the room refuses the puppet, as the bridge's own occupant:
//!   the moderator's own network let them. The user is an occupant of this room (found by
//!   their identity), or someone of a third network, whose puppet is the one removed; when the
//!   room lets neither do it, that puppet leaves by itself. A room that refuses both for one
//!   of its own users refuses the event as unsupported (the core leaves it out, counted).
//! - **Out of the MUC.** A moderator here kicked or banned one of our puppets (its own
//!   presence says so, with the moderator as `<actor/>`): that is the moderator's moderation
//!   of the puppet's user, which their network then carries out. A removal by one of our own
//!   occupants (a moderation that came from elsewhere) or by nobody named, and a removal for a
//!   technical reason (status 333), is no one's decision to carry.

use std::sync::Arc;

use bridge_core::{
    AdapterContext, AdapterError, Delivered, EventKind, ModerationAction, RemoteUserId, Sender,
};

use super::outbound::Speaker;
use super::state::is_nick_identity;
use super::{Inner, IqFailure, PUPPET_RESOURCE};
use crate::muc::{self, OccupantPresence};

impl Inner {
    /// Our puppet JID for `user` of another network (component mode).
    pub(super) fn puppet_jid(&self, user: &Sender) -> Option<String> {
        let domain = self.component_domain()?;
        let id = format!("{}.{}", user.adapter, user.user);
        let local = crate::jid::escape_localpart(&id);
        Some(format!("{local}@{domain}/{PUPPET_RESOURCE}"))
    }

    /// Carries out a moderator's kick, ban or unban of `target` in `room` (see the module
    /// docs), as `speaker`, the moderator's puppet.
    pub(super) async fn moderate_user(
        &self,
        room: &str,
        speaker: &Speaker,
        target: &Sender,
        action: ModerationAction,
        reason: Option<&str>,
    ) -> Result<Delivered, AdapterError> {
        let native = target.adapter == self.id;
        let puppet = (!native).then(|| self.puppet_jid(target)).flatten();
        let (nick, bare) = match &puppet {
            Some(puppet) => (
                self.rooms
                    .lock()
                    .our_occupant(room, puppet)
                    .map(|(nick, _)| nick),
                Some(crate::jid::bare(puppet).to_owned()),
            ),
            None => (
                self.rooms.lock().nick_of(room, &target.user),
                address(&target.user),
            ),
        };
        let item = match (action, nick.as_deref(), bare.as_deref()) {
            (ModerationAction::Kick, Some(nick), _) => [("nick", nick), ("role", "none")],
            // Not in the room (left, or kicked here already): nothing to do.
            (ModerationAction::Kick, None, _) => return Ok(Delivered::default()),
            (ModerationAction::Ban, _, Some(bare)) => [("jid", bare), ("affiliation", "outcast")],
            (ModerationAction::Unban, _, Some(bare)) => [("jid", bare), ("affiliation", "none")],
            (_, _, None) => {
                return Err(AdapterError::Unsupported(format!(
                    "{room} does not show the address of {}, which a {} takes",
                    target.user,
                    if action == ModerationAction::Ban {
                        "ban"
                    } else {
                        "unban"
                    }
                )));
            }
        };
        let mut refusals = Vec::new();
        let listener = self.listener_jid();
        // As the moderator's puppet (joined, which a moderator's request takes), then as the
        // bridge's own occupant.
        let as_puppet = match self.ensure_joined(room, speaker).await {
            Ok(_) => Some(speaker.jid.clone()),
            Err(e) => {
                refusals.push(format!("{} cannot join: {e}", speaker.jid));
                None
            }
        };
        for from in [as_puppet, listener].into_iter().flatten() {
            let iq = muc::admin_item_because(self.stanza_from(&from), room, item, reason);
            match self.iq(iq).await {
                Ok(_) => {
                    if let (Some(puppet), ModerationAction::Kick | ModerationAction::Ban) =
                        (&puppet, action)
                    {
                        self.forget_puppet(room, puppet);
                    }
                    tracing::info!(adapter = %self.id, room, user = %target.user,
                        action = action.past(), by = %from, refused = ?refusals, "moderation done");
                    return Ok(Delivered::default());
                }
                Err(IqFailure::NotSent(e)) => return Err(e),
                Err(e @ IqFailure::Error { .. }) => refusals.push(format!("{from}: {e}")),
            }
        }
        // A puppet the room would not remove leaves by itself: its user is gone from the room
        // on their side.
        if let (Some(puppet), Some(_), ModerationAction::Kick | ModerationAction::Ban) =
            (&puppet, &nick, action)
        {
            self.puppet_leaves(room, puppet).await?;
            return Ok(Delivered::default());
        }
        Err(AdapterError::Unsupported(format!(
            "{room} let neither the moderator's puppet nor the bridge have {} {}: {}",
            target.user,
            action.past(),
            refusals.join("; ")
        )))
    }

    /// Our puppet `puppet` was kicked or banned from the room (its own presence `p`): when a
    /// moderator of the room did it, their moderation of the puppet's user (module docs).
    pub(super) fn puppet_moderated(
        self: &Arc<Self>,
        ctx: &AdapterContext,
        p: &OccupantPresence,
        puppet: &str,
    ) {
        if !(p.kicked || p.banned) || p.errored {
            return;
        }
        let Some(mut target) = self.counterpart_of(puppet) else {
            return;
        };
        target.display_name = Some(p.nick.clone());
        let Some(actor) = p.actor.as_deref() else {
            tracing::info!(adapter = %self.id, room = %p.room, puppet,
                "a puppet was removed by no one the room names: not carried");
            return;
        };
        let moderator = {
            let rooms = self.rooms.lock();
            if rooms.is_ours(&p.room, actor, None) {
                return; // a moderation from elsewhere, carried out here
            }
            rooms.occupant(&p.room, actor).map(|o| o.user.clone())
        };
        let Some(moderator) = moderator else {
            tracing::info!(adapter = %self.id, room = %p.room, puppet, actor,
                "a puppet was removed by someone not in the room: not carried");
            return;
        };
        let action = if p.banned {
            ModerationAction::Ban
        } else {
            ModerationAction::Kick
        };
        let kind = EventKind::Moderation {
            target,
            action,
            reason: p.status.clone(),
        };
        let event = super::inbound::event(&p.room, None, moderator, actor, None, kind);
        self.submit(ctx, event);
    }
}

/// The bare JID an XMPP identity ([`super::state::identity`]) names, when it is one: not an
/// occupant-id or a nick, which a ban cannot name.
fn address(user: &RemoteUserId) -> Option<String> {
    let id = user.as_str();
    (!is_nick_identity(user) && !id.contains('?') && id.contains('@')).then(|| id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_real_addresses_can_be_banned() {
        let jid = RemoteUserId::new("xavier@example.org");
        assert_eq!(address(&jid).as_deref(), Some("xavier@example.org"));
        assert_eq!(address(&RemoteUserId::new("r@c?occupant-id=a/b")), None);
        assert_eq!(address(&RemoteUserId::new("r@c/Nick")), None);
    }
}
