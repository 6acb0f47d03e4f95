//! End-to-end scenario against a real Prosody (used by main.rs and tests/e2e.rs).

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_xmpp::xmlstream::Timeouts;
use xmpp_parsers::jid::{BareJid, FullJid, Jid};
use xmpp_parsers::message::{Message, MessageType};
use xmpp_parsers::presence::Presence;
use xmpp_parsers::stanza::Stanza;

use crate::actors::{ComponentConfig, XmppEvent, spawn_client, spawn_component};
use crate::muc;

pub struct Endpoints {
    pub c2s: String,
    pub component: String,
    pub domain: String,
    pub secret: String,
}

impl Default for Endpoints {
    fn default() -> Self {
        Self {
            c2s: "127.0.0.1:5222".into(),
            component: "127.0.0.1:5347".into(),
            domain: "bridge.localhost".into(),
            secret: "bridgesecret".into(),
        }
    }
}

async fn wait_for<T>(
    rx: &mut mpsc::Receiver<XmppEvent>,
    what: &str,
    mut f: impl FnMut(&XmppEvent) -> Option<T>,
) -> Result<T, String> {
    let deadline = tokio::time::sleep(Duration::from_secs(10));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => return Err(format!("timeout waiting for {what}")),
            ev = rx.recv() => {
                let ev = ev.ok_or_else(|| format!("channel closed waiting for {what}"))?;
                log::debug!("event: {ev:?}");
                if let Some(v) = f(&ev) { return Ok(v); }
            }
        }
    }
}

fn self_presence_in<'a>(ev: &'a XmppEvent, room: &BareJid) -> Option<&'a Presence> {
    match ev {
        XmppEvent::Stanza(Stanza::Presence(p))
            if p.from.as_ref().map(|f| f.to_bare()).as_ref() == Some(room)
                && muc::presence_info(p).self_presence =>
        {
            Some(p)
        }
        _ => None,
    }
}

fn groupchat_with_body<'a>(ev: &'a XmppEvent, body: &str) -> Option<&'a Message> {
    match ev {
        XmppEvent::Stanza(Stanza::Message(m))
            if m.type_ == MessageType::Groupchat
                && m.bodies.values().any(|b| b == body) =>
        {
            Some(m)
        }
        _ => None,
    }
}

/// Returns log lines describing what happened (timings, ids).
pub async fn run(ep: &Endpoints, room: &str, locked_room: Option<&str>) -> Result<Vec<String>, String> {
    let mut log = Vec::new();
    let t0 = Instant::now();
    let room: BareJid = room.parse().map_err(|e| format!("{e}"))?;
    let puppet: FullJid = format!("alice@{}/x", ep.domain).parse().unwrap();

    // --- component mode ---------------------------------------------------
    let (comp_tx, mut comp_rx) = spawn_component(ComponentConfig {
        addr: ep.component.clone(),
        domain: ep.domain.clone(),
        secret: ep.secret.clone(),
        keepalive: Default::default(),
    });
    wait_for(&mut comp_rx, "component online", |ev| match ev {
        XmppEvent::Online(_) => Some(()),
        XmppEvent::Disconnected(e) => {
            log::warn!("component connect failed: {e}");
            None
        }
        _ => None,
    })
    .await?;
    log.push(format!("component handshake ok after {:?}", t0.elapsed()));

    let t = Instant::now();
    comp_tx
        .send(muc::join(Some(puppet.clone()), &room, "alice-puppet").into())
        .await
        .unwrap();
    let p = wait_for(&mut comp_rx, "puppet self-presence", |ev| self_presence_in(ev, &room).cloned()).await?;
    let info = muc::presence_info(&p);
    log.push(format!(
        "puppet joined {room} in {:?} (created={}, occupant-id={:?})",
        t.elapsed(),
        info.room_created,
        info.occupant_id
    ));

    if let Some(locked) = locked_room {
        let locked: BareJid = locked.parse().map_err(|e| format!("{e}"))?;
        let t = Instant::now();
        comp_tx
            .send(muc::join(Some(puppet.clone()), &locked, "alice-puppet").into())
            .await
            .unwrap();
        let p = wait_for(&mut comp_rx, "puppet self-presence (locked room)", |ev| {
            self_presence_in(ev, &locked).cloned()
        })
        .await?;
        let info = muc::presence_info(&p);
        if info.room_created {
            comp_tx
                .send(muc::instant_room(Some(puppet.clone()), &locked, "cfg1").into())
                .await
                .unwrap();
            let ok = wait_for(&mut comp_rx, "instant-room result", |ev| match ev {
                XmppEvent::Stanza(Stanza::Iq(xmpp_parsers::iq::Iq::Result { id, .. })) if id == "cfg1" => Some(true),
                XmppEvent::Stanza(Stanza::Iq(xmpp_parsers::iq::Iq::Error { id, error, .. })) if id == "cfg1" => {
                    log::warn!("instant room error: {error:?}");
                    Some(false)
                }
                _ => None,
            })
            .await?;
            if !ok {
                return Err("instant room refused".into());
            }
        }
        let body = format!("in locked room {}", t0.elapsed().as_nanos());
        comp_tx
            .send(muc::groupchat(Some(puppet.clone()), &locked, &body, "lk1").into())
            .await
            .unwrap();
        wait_for(&mut comp_rx, "reflection in unlocked room", |ev| groupchat_with_body(ev, &body).map(|_| ())).await?;
        log.push(format!(
            "locked room {locked}: created={} -> instant-room form accepted, message reflected, in {:?}",
            info.room_created,
            t.elapsed()
        ));
    }

    // --- client mode (same process, same build) -----------------------------
    let t = Instant::now();
    let (cl_tx, mut cl_rx) = spawn_client("bob@localhost/proto", "bobpass", &ep.c2s, Timeouts::tight());
    let bound = wait_for(&mut cl_rx, "client online", |ev| match ev {
        XmppEvent::Online(j) => Some(j.clone()),
        _ => None,
    })
    .await?;
    log.push(format!("client online as {bound} in {:?}", t.elapsed()));
    let t = Instant::now();
    cl_tx.send(muc::join(None, &room, "bob").into()).await.unwrap();
    wait_for(&mut cl_rx, "client self-presence", |ev| self_presence_in(ev, &room).map(|_| ())).await?;
    log.push(format!("client joined {room} in {:?}", t.elapsed()));

    // puppet -> room -> client
    let t = Instant::now();
    let body1 = format!("hello from puppet {}", t0.elapsed().as_nanos());
    comp_tx
        .send(muc::groupchat(Some(puppet.clone()), &room, &body1, "p1").into())
        .await
        .unwrap();
    let m = wait_for(&mut cl_rx, "client receives puppet message", |ev| groupchat_with_body(ev, &body1).cloned()).await?;
    let (sid, oid) = muc::message_ids(&m);
    log.push(format!(
        "client got puppet's message from {:?} in {:?}; stanza-id={sid:?} occupant-id={oid:?}",
        m.from.as_ref().map(Jid::to_string),
        t.elapsed()
    ));
    let m = wait_for(&mut comp_rx, "puppet reflection", |ev| groupchat_with_body(ev, &body1).cloned()).await?;
    let (sid, oid) = muc::message_ids(&m);
    log.push(format!(
        "puppet got its reflection (id={:?} kept) stanza-id={sid:?} occupant-id={oid:?}",
        m.id.as_ref().map(|i| i.0.clone())
    ));

    // client -> room -> puppet
    let t = Instant::now();
    let body2 = format!("hello from client {}", t0.elapsed().as_nanos());
    cl_tx.send(muc::groupchat(None, &room, &body2, "c1").into()).await.unwrap();
    let m = wait_for(&mut comp_rx, "puppet receives client message", |ev| groupchat_with_body(ev, &body2).cloned()).await?;
    let (sid, oid) = muc::message_ids(&m);
    log.push(format!(
        "puppet got client's message from {:?} to {:?} in {:?}; stanza-id={sid:?} occupant-id={oid:?}",
        m.from.as_ref().map(Jid::to_string),
        m.to.as_ref().map(Jid::to_string),
        t.elapsed()
    ));

    // client -> puppet direct message (routed to the component)
    let mut dm = Message::chat(Jid::from(puppet.to_bare()));
    dm.bodies.insert(Default::default(), "dm to puppet".into());
    cl_tx.send(dm.into()).await.unwrap();
    let m = wait_for(&mut comp_rx, "DM to puppet", |ev| match ev {
        XmppEvent::Stanza(Stanza::Message(m)) if m.type_ == MessageType::Chat => Some(m.clone()),
        _ => None,
    })
    .await?;
    log.push(format!(
        "component got DM from {:?} to {:?}",
        m.from.as_ref().map(Jid::to_string),
        m.to.as_ref().map(Jid::to_string)
    ));
    drop(cl_tx);
    drop(comp_tx);
    tokio::time::sleep(Duration::from_millis(200)).await;
    log.push(format!("total {:?}", t0.elapsed()));
    Ok(log)
}
