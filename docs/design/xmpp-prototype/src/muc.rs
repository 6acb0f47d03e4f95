//! MUC helpers shared by both modes (plain xmpp-parsers types, jabber:client).

use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::{BareJid, FullJid, Jid};
use xmpp_parsers::message::{Lang, Message};
use xmpp_parsers::minidom::Element;
use xmpp_parsers::muc::muc::{History, Muc};
use xmpp_parsers::muc::user::{MucUser, Status};
use xmpp_parsers::occupant_id::OccupantId;
use xmpp_parsers::presence::Presence;
use xmpp_parsers::stanza_id::StanzaId;

/// Join presence. `from` is needed in component mode (puppet JID), ignored
/// (None) in client mode.
pub fn join(from: Option<FullJid>, room: &BareJid, nick: &str) -> Presence {
    let mut p = Presence::available()
        .with_to(room.with_resource_str(nick).expect("valid nick"))
        .with_payload(Muc::new().with_history(History::new().with_maxstanzas(0)));
    if let Some(f) = from {
        p = p.with_from(f);
    }
    p
}

pub fn groupchat(from: Option<FullJid>, room: &BareJid, body: &str, id: &str) -> Message {
    let mut m = Message::groupchat(Jid::from(room.clone())).with_body(Lang::new(), body.into());
    m.id = Some(xmpp_parsers::message::Id(id.to_string()));
    m.from = from.map(Jid::from);
    m
}

/// XEP-0045 §10.1.2: accept the default configuration of a locked new room.
pub fn instant_room(from: Option<FullJid>, room: &BareJid, id: &str) -> Iq {
    let payload: Element = "<query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'/></query>"
        .parse()
        .expect("static");
    Iq::Set {
        from: from.map(Jid::from),
        to: Some(Jid::from(room.clone())),
        id: id.to_string(),
        payload,
    }
}

/// What a MUC presence tells us.
#[derive(Debug, Default)]
pub struct PresenceInfo {
    pub self_presence: bool,
    pub room_created: bool, // 201: we created it; locked until configured (unless muc_room_locking=false)
    pub occupant_id: Option<String>,
}

pub fn presence_info(p: &Presence) -> PresenceInfo {
    let mut info = PresenceInfo::default();
    for pl in &p.payloads {
        if let Ok(x) = MucUser::try_from(pl.clone()) {
            info.self_presence |= x.status.contains(&Status::SelfPresence);
            info.room_created |= x.status.contains(&Status::RoomHasBeenCreated);
        } else if let Ok(o) = OccupantId::try_from(pl.clone()) {
            info.occupant_id = Some(o.id);
        }
    }
    info
}

/// stanza-id stamped by the room (`by` == room JID) and occupant-id, if any.
pub fn message_ids(m: &Message) -> (Option<String>, Option<String>) {
    let mut sid = None;
    let mut oid = None;
    for pl in &m.payloads {
        if let Ok(s) = StanzaId::try_from(pl.clone()) {
            if m.from.as_ref().map(|f| f.to_bare()) == Some(s.by.to_bare()) {
                sid = Some(s.id);
            }
        } else if let Ok(o) = OccupantId::try_from(pl.clone()) {
            oid = Some(o.id);
        }
    }
    (sid, oid)
}
