//! XEP-0045 multi-user chat: the presences we send, and what the room's presences tell us.

use xmpp_parsers::minidom::Element;

use crate::xml::Attrs;

use crate::jid;
use crate::wire::NS_CLIENT;

/// `http://jabber.org/protocol/muc`
pub const NS_MUC: &str = "http://jabber.org/protocol/muc";
/// `http://jabber.org/protocol/muc#user`
pub const NS_MUC_USER: &str = "http://jabber.org/protocol/muc#user";
/// `http://jabber.org/protocol/muc#owner`
pub const NS_MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";
/// XEP-0421 occupant identifiers.
pub const NS_OCCUPANT_ID: &str = "urn:xmpp:occupant-id:0";
/// XEP-0004 data forms.
pub const NS_DATA: &str = "jabber:x:data";
/// Stanza errors.
pub const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
/// XEP-0153: the avatar hash in presences.
pub const NS_VCARD_UPDATE: &str = "vcard-temp:x:update";

/// The presence that joins `room` as `nick`, asking for no history (the archive gives the
/// bridge what it missed, in order, exactly once). `from` is set in component mode.
pub fn join(from: Option<&str>, room: &str, nick: &str, password: Option<&str>) -> Element {
    let mut muc = Element::builder("x", NS_MUC)
        .append(Element::builder("history", NS_MUC).with("maxstanzas", "0"));
    if let Some(password) = password {
        // XEP-0045 §7.2.5: a password-protected room.
        muc = muc.append(Element::builder("password", NS_MUC).append(password));
    }
    let muc = muc.build();
    presence(from, &format!("{room}/{nick}"), None)
        .append(muc)
        .build()
}

/// The presence that leaves `room` (the nick is whatever we have there).
pub fn leave(from: Option<&str>, room: &str, nick: &str) -> Element {
    presence(from, &format!("{room}/{nick}"), Some("unavailable")).build()
}

/// The presence that changes our nick in `room` (an available presence to the new nick).
pub fn change_nick(from: Option<&str>, room: &str, nick: &str) -> Element {
    presence(from, &format!("{room}/{nick}"), None).build()
}

fn presence(
    from: Option<&str>,
    to: &str,
    kind: Option<&str>,
) -> xmpp_parsers::minidom::ElementBuilder {
    let mut b = Element::builder("presence", NS_CLIENT).with("to", to);
    if let Some(from) = from {
        b = b.with("from", from);
    }
    if let Some(kind) = kind {
        b = b.with("type", kind);
    }
    b
}

/// `http://jabber.org/protocol/muc#admin`
pub const NS_MUC_ADMIN: &str = "http://jabber.org/protocol/muc#admin";

/// An XEP-0045 admin request (§8.4, §9.3, §9.6) that sets one item of `room`: a role by nick
/// (`("nick", nick)`, `("role", "moderator")`) or an affiliation by bare JID (`("jid", jid)`,
/// `("affiliation", "admin")`).
pub fn admin_item(from: Option<&str>, room: &str, item: [(&str, &str); 2]) -> Element {
    let mut builder = Element::builder("item", NS_MUC_ADMIN);
    for (name, value) in item {
        builder = builder.with(name, value);
    }
    let query = Element::builder("query", NS_MUC_ADMIN).append(builder);
    let mut iq = Element::builder("iq", NS_CLIENT)
        .with("type", "set")
        .with("to", room);
    if let Some(from) = from {
        iq = iq.with("from", from);
    }
    iq.append(query).build()
}

/// [`admin_item`] with a `<reason/>` in the item when one is given (a kick or a ban, §8.2, §9.1).
pub fn admin_item_because(
    from: Option<&str>,
    room: &str,
    item: [(&str, &str); 2],
    reason: Option<&str>,
) -> Element {
    let mut iq = admin_item(from, room, item);
    if let Some(reason) = reason.filter(|r| !r.trim().is_empty())
        && let Some(item) = iq
            .get_child_mut("query", NS_MUC_ADMIN)
            .and_then(|q| q.get_child_mut("item", NS_MUC_ADMIN))
    {
        item.append_child(
            Element::builder("reason", NS_MUC_ADMIN)
                .append(reason)
                .build(),
        );
    }
    iq
}

/// XEP-0045 §10.1.2: accept the default configuration of a room we just created and that the
/// service keeps locked until it is configured.
pub fn instant_room(from: Option<&str>, room: &str, id: &str) -> Element {
    let form = Element::builder("x", NS_DATA).with("type", "submit");
    let query = Element::builder("query", NS_MUC_OWNER).append(form);
    let mut iq = Element::builder("iq", NS_CLIENT)
        .with("type", "set")
        .with("id", id)
        .with("to", room);
    if let Some(from) = from {
        iq = iq.with("from", from);
    }
    iq.append(query).build()
}

/// What a presence from a room occupant (`room/nick`) says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OccupantPresence {
    /// The room's bare JID.
    pub room: String,
    /// The occupant's nick (the resource of `from`).
    pub nick: String,
    /// `unavailable` presences mean the occupant left (or changed nick, see `new_nick`).
    pub available: bool,
    /// Status 110: this presence is about the recipient itself.
    pub self_presence: bool,
    /// Status 201: the room was just created (and may be locked until configured).
    pub created: bool,
    /// Status 303 with the new nick: a nick change, not a departure.
    pub new_nick: Option<String>,
    /// Status 307 / 301: kicked or banned.
    pub kicked: bool,
    /// Status 301: banned.
    pub banned: bool,
    /// Status 333: removed because of a technical problem (its server or component did not
    /// answer), not by anyone's decision.
    pub errored: bool,
    /// The occupant's real JID, when the room shows it to us.
    pub real_jid: Option<String>,
    /// XEP-0421 occupant-id, stable per real user per room.
    pub occupant_id: Option<String>,
    /// `moderator`, `participant`, `visitor`, `none`.
    pub role: Option<String>,
    /// `owner`, `admin`, `member`, `outcast`, `none`.
    pub affiliation: Option<String>,
    /// The status message or reason, if any.
    pub status: Option<String>,
    /// Who kicked or banned the occupant, by their nick in the room, when the room says.
    pub actor: Option<String>,
    /// XEP-0153: the SHA-1 of the occupant's avatar (lower-case hex), `Some("")` when it says
    /// it has none, `None` when the presence does not say.
    pub photo: Option<String>,
    /// XEP-0045 §10.9: the room was destroyed (every occupant gets this unavailable presence).
    pub destroyed: Option<Destroyed>,
}

/// What a room's owner said when destroying it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Destroyed {
    /// The room its occupants are invited to go to instead, when one is named.
    pub alternate: Option<String>,
    /// Why, when the owner said.
    pub reason: Option<String>,
}

/// An occupant's standing from their affiliation and role (XEP-0045 §5): an owner or admin by
/// affiliation (whatever their role now), else a moderator or a visitor (muted) by role, else
/// a member. `None` when the presence says neither.
pub fn standing(affiliation: Option<&str>, role: Option<&str>) -> Option<bridge_core::Role> {
    use bridge_core::Role;
    match (affiliation, role) {
        (None, None) => None,
        (Some("owner"), _) => Some(Role::Owner),
        (Some("admin"), _) => Some(Role::Admin),
        (_, Some("moderator")) => Some(Role::Moderator),
        (_, Some("visitor")) => Some(Role::Muted),
        _ => Some(Role::Member),
    }
}

/// The admin requests ([`admin_item`]) that take our occupant `bare` (its nick in the room
/// `nick`, when it is there) from standing `before` (as given by the bridge) to `role`: an owner
/// or admin becomes an admin by affiliation; anyone else who was one goes back to member
/// (not `none`, which would put it out of a members-only room); a moderator or muted user gets
/// the `moderator` or `visitor` role, and a member who had one the `participant` role. A role
/// needs the occupant in the room: without `nick` there is no role request (it is given at the
/// occupant's next join).
pub fn role_requests<'a>(
    before: bridge_core::Role,
    role: bridge_core::Role,
    bare: &'a str,
    nick: Option<&'a str>,
) -> Vec<[(&'static str, &'a str); 2]> {
    use bridge_core::Role;
    let by_affiliation = |r: Role| matches!(r, Role::Owner | Role::Admin);
    let mut requests = Vec::new();
    if by_affiliation(role) {
        requests.push([("jid", bare), ("affiliation", "admin")]);
        return requests;
    }
    if by_affiliation(before) {
        requests.push([("jid", bare), ("affiliation", "member")]);
    }
    let session = match role {
        Role::Moderator => Some("moderator"),
        Role::Muted => Some("visitor"),
        _ if matches!(before, Role::Moderator | Role::Muted) => Some("participant"),
        _ => None,
    };
    if let (Some(session), Some(nick)) = (session, nick) {
        requests.push([("nick", nick), ("role", session)]);
    }
    requests
}

/// Reads a MUC presence; `None` when it is not one (no `muc#user` payload or no nick).
pub fn occupant_presence(presence: &Element) -> Option<OccupantPresence> {
    let from = presence.attr("from")?;
    let (room, Some(nick)) = jid::split(from) else {
        return None;
    };
    let x = presence.get_child("x", NS_MUC_USER)?;
    let mut p = OccupantPresence {
        room: room.to_owned(),
        nick: nick.to_owned(),
        available: presence.attr("type").is_none_or(|t| t == "available"),
        ..OccupantPresence::default()
    };
    for child in x.children() {
        if child.is("status", NS_MUC_USER) {
            match child.attr("code") {
                Some("110") => p.self_presence = true,
                Some("201") => p.created = true,
                Some("307") => p.kicked = true,
                Some("301") => p.banned = true,
                Some("333") => p.errored = true,
                _ => {}
            }
        } else if child.is("destroy", NS_MUC_USER) {
            p.destroyed = Some(Destroyed {
                alternate: child
                    .attr("jid")
                    .filter(|j| jid::is_plausible(j))
                    .map(|j| jid::bare(j).to_owned()),
                reason: child
                    .get_child("reason", NS_MUC_USER)
                    .map(|r| r.text().trim().to_owned())
                    .filter(|r| !r.is_empty()),
            });
        } else if child.is("item", NS_MUC_USER) {
            p.real_jid = child
                .attr("jid")
                .filter(|j| jid::is_plausible(j))
                .map(|j| jid::bare(j).to_owned());
            p.role = child.attr("role").map(str::to_owned);
            p.affiliation = child.attr("affiliation").map(str::to_owned);
            p.new_nick = child.attr("nick").map(str::to_owned);
            if let Some(reason) = child.get_child("reason", NS_MUC_USER) {
                p.status = Some(reason.text()).filter(|t| !t.is_empty());
            }
            p.actor = child
                .get_child("actor", NS_MUC_USER)
                .and_then(|a| a.attr("nick"))
                .filter(|n| !n.is_empty())
                .map(str::to_owned);
        }
    }
    let changing = x
        .children()
        .any(|c| c.is("status", NS_MUC_USER) && c.attr("code") == Some("303"));
    if !changing || p.available {
        p.new_nick = None;
    }
    p.occupant_id = presence
        .get_child("occupant-id", NS_OCCUPANT_ID)
        .and_then(|o| o.attr("id"))
        .map(str::to_owned);
    p.photo = presence
        .get_child("x", NS_VCARD_UPDATE)
        .map(|x| {
            x.get_child("photo", NS_VCARD_UPDATE)
                .map(|photo| photo.text().trim().to_ascii_lowercase())
                .unwrap_or_default()
        })
        .filter(|hash| {
            hash.is_empty() || (hash.len() == 40 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
        });
    if p.status.is_none() {
        p.status = presence
            .get_child("status", NS_CLIENT)
            .map(Element::text)
            .filter(|t| !t.is_empty());
    }
    Some(p)
}

/// The defined condition of a stanza error (`conflict`, `forbidden`, …) and its text.
pub fn error_condition(stanza: &Element) -> Option<(String, Option<String>)> {
    let error = stanza.get_child("error", NS_CLIENT)?;
    let mut condition = None;
    let mut text = None;
    for child in error.children().filter(|c| c.ns() == NS_STANZAS) {
        if child.name() == "text" {
            text = Some(child.text());
        } else if condition.is_none() {
            condition = Some(child.name().to_owned());
        }
    }
    Some((
        condition.unwrap_or_else(|| "undefined-condition".into()),
        text,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xml(text: &str) -> Element {
        text.parse().expect("test XML parses")
    }

    #[test]
    fn standing_is_the_affiliation_above_the_role() {
        use bridge_core::Role as R;
        assert_eq!(standing(Some("owner"), Some("moderator")), Some(R::Owner));
        assert_eq!(standing(Some("admin"), Some("moderator")), Some(R::Admin));
        assert_eq!(
            standing(Some("member"), Some("moderator")),
            Some(R::Moderator)
        );
        assert_eq!(standing(Some("none"), Some("visitor")), Some(R::Muted));
        assert_eq!(standing(Some("none"), Some("participant")), Some(R::Member));
        assert_eq!(standing(None, Some("participant")), Some(R::Member));
        assert_eq!(standing(None, None), None);
    }

    #[test]
    fn a_puppet_is_taken_from_what_it_was_given_to_its_new_standing() {
        use bridge_core::Role as R;
        let plan = |before, role, nick| role_requests(before, role, "p@c.x", nick);
        let admin = [("jid", "p@c.x"), ("affiliation", "admin")];
        let member = [("jid", "p@c.x"), ("affiliation", "member")];
        let role = |r| [("nick", "P"), ("role", r)];
        assert_eq!(plan(R::Member, R::Admin, Some("P")), [admin]);
        assert_eq!(plan(R::Member, R::Owner, None), [admin]);
        assert_eq!(plan(R::Admin, R::Member, Some("P")), [member]);
        assert_eq!(
            plan(R::Admin, R::Moderator, Some("P")),
            [member, role("moderator")]
        );
        assert_eq!(plan(R::Member, R::Muted, Some("P")), [role("visitor")]);
        assert_eq!(
            plan(R::Moderator, R::Member, Some("P")),
            [role("participant")]
        );
        assert!(plan(R::Member, R::Member, Some("P")).is_empty());
        // Not in the room: the role waits for the next join.
        assert!(plan(R::Member, R::Moderator, None).is_empty());
    }

    #[test]
    fn a_kick_request_carries_its_reason() {
        let iq = admin_item_because(
            Some("p@b.x/bridge"),
            "r@c.x",
            [("nick", "Zoe"), ("role", "none")],
            Some("off topic"),
        );
        assert_eq!(iq.attr("from"), Some("p@b.x/bridge"));
        let item = iq
            .get_child("query", NS_MUC_ADMIN)
            .and_then(|q| q.get_child("item", NS_MUC_ADMIN))
            .expect("an item");
        assert_eq!(
            (item.attr("nick"), item.attr("role")),
            (Some("Zoe"), Some("none"))
        );
        assert_eq!(
            item.get_child("reason", NS_MUC_ADMIN).map(|r| r.text()),
            Some("off topic".into())
        );
        // No reason, or a blank one: no element.
        for reason in [None, Some("  ")] {
            let iq = admin_item_because(
                None,
                "r@c.x",
                [("jid", "z@x"), ("affiliation", "outcast")],
                reason,
            );
            assert!(
                !String::from(&iq).contains("reason"),
                "{}",
                String::from(&iq)
            );
        }
    }

    #[test]
    fn reads_self_presence_nick_changes_and_kicks() {
        let p = xml(
            "<presence xmlns='jabber:client' from='r@c.x/Al' to='a@b.x/y'>\
             <x xmlns='http://jabber.org/protocol/muc#user'>\
             <item affiliation='owner' role='moderator' jid='al@x/phone'/>\
             <status code='110'/><status code='201'/></x>\
             <occupant-id xmlns='urn:xmpp:occupant-id:0' id='OCC'/></presence>",
        );
        let p = occupant_presence(&p).expect("a MUC presence");
        assert!(p.self_presence && p.created && p.available);
        assert_eq!(p.real_jid.as_deref(), Some("al@x"));
        assert_eq!(p.occupant_id.as_deref(), Some("OCC"));
        assert_eq!(p.role.as_deref(), Some("moderator"));

        let nick = xml(
            "<presence xmlns='jabber:client' type='unavailable' from='r@c.x/Al'>\
             <x xmlns='http://jabber.org/protocol/muc#user'><item nick='Alice'/>\
             <status code='303'/></x></presence>",
        );
        let nick = occupant_presence(&nick).expect("a MUC presence");
        assert_eq!(nick.new_nick.as_deref(), Some("Alice"));
        assert!(!nick.available);

        let kick = xml(
            "<presence xmlns='jabber:client' type='unavailable' from='r@c.x/Al'>\
             <x xmlns='http://jabber.org/protocol/muc#user'><item nick='x'>\
             <actor nick='Mod'/><reason>spam</reason></item><status code='307'/></x></presence>",
        );
        let kick = occupant_presence(&kick).expect("a MUC presence");
        assert!(kick.kicked && kick.new_nick.is_none() && !kick.errored);
        assert_eq!(kick.status.as_deref(), Some("spam"));
        assert_eq!(kick.actor.as_deref(), Some("Mod"));
        assert_eq!(kick.destroyed, None);
        // Prosody's removal of an occupant whose component stopped answering.
        let errored = xml(
            "<presence xmlns='jabber:client' type='unavailable' from='r@c.x/Al'>\
             <x xmlns='http://jabber.org/protocol/muc#user'><item role='none'/>\
             <status code='307'/><status code='333'/><status code='110'/></x></presence>",
        );
        let errored = occupant_presence(&errored).expect("a MUC presence");
        assert!(errored.kicked && errored.errored && errored.self_presence);

        let destroyed = xml(
            "<presence xmlns='jabber:client' type='unavailable' from='r@c.x/Al'>\
             <x xmlns='http://jabber.org/protocol/muc#user'>\
             <item affiliation='none' role='none'/><status code='110'/>\
             <destroy jid='new@c.x'><reason> Moved </reason></destroy></x></presence>",
        );
        let destroyed = occupant_presence(&destroyed).expect("a MUC presence");
        assert!(destroyed.self_presence && !destroyed.available);
        assert_eq!(
            destroyed.destroyed,
            Some(Destroyed {
                alternate: Some("new@c.x".into()),
                reason: Some("Moved".into()),
            })
        );
        let bare = xml(
            "<presence xmlns='jabber:client' type='unavailable' from='r@c.x/Al'>\
             <x xmlns='http://jabber.org/protocol/muc#user'><destroy/></x></presence>",
        );
        assert_eq!(
            occupant_presence(&bare).expect("a MUC presence").destroyed,
            Some(Destroyed::default())
        );

        assert!(
            occupant_presence(&xml("<presence xmlns='jabber:client' from='r@c.x'/>")).is_none()
        );
        assert!(
            occupant_presence(&xml("<presence xmlns='jabber:client' from='a@b/c'/>")).is_none()
        );
    }

    #[test]
    fn reads_the_avatar_hash_of_a_presence() {
        let with = |update: &str| {
            let p = xml(&format!(
                "<presence xmlns='jabber:client' from='r@c.x/Al'>\
                 <x xmlns='http://jabber.org/protocol/muc#user'><item role='participant'/></x>\
                 {update}</presence>"
            ));
            occupant_presence(&p).expect("a MUC presence").photo
        };
        let hash = "A94A8FE5CCB19BA61C4C0873D391E987982FBBD3";
        assert_eq!(
            with(&format!(
                "<x xmlns='vcard-temp:x:update'><photo> {hash} </photo></x>"
            )),
            Some(hash.to_ascii_lowercase())
        );
        // An empty photo: no avatar. No element: nothing said. Not a SHA-1: ignored.
        assert_eq!(
            with("<x xmlns='vcard-temp:x:update'><photo/></x>"),
            Some(String::new())
        );
        assert_eq!(with(""), None);
        assert_eq!(
            with("<x xmlns='vcard-temp:x:update'><photo>../../etc</photo></x>"),
            None
        );
    }

    #[test]
    fn builds_joins_and_reads_errors() {
        let j = join(Some("p@bridge/x"), "r@c", "Nick", None);
        assert_eq!(j.attr("to"), Some("r@c/Nick"));
        let x = j.get_child("x", NS_MUC).expect("the MUC element");
        assert!(x.get_child("password", NS_MUC).is_none());
        let j = join(None, "r@c", "Nick", Some("s3cret"));
        let x = j.get_child("x", NS_MUC).expect("the MUC element");
        assert_eq!(
            x.get_child("password", NS_MUC).map(|p| p.text()),
            Some("s3cret".into())
        );
        let err = xml(
            "<presence xmlns='jabber:client' type='error' from='r@c/Nick'>\
             <error type='cancel'><conflict xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
             <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>taken</text></error></presence>",
        );
        assert_eq!(
            error_condition(&err),
            Some(("conflict".into(), Some("taken".into())))
        );
    }
}
