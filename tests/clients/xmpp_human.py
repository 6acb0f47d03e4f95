#!/usr/bin/env python3
"""A scripted XMPP "human" for the bridge's integration tests.

A real third-party client (slixmpp) that a test drives through JSON lines:

* stdin (a pipe, as the Rust wrapper gives it, or a terminal): one command per line, e.g.
  {"cmd": "send", "req": 3, "to": "r@conference.localhost", "type": "groupchat", "body": "hi"}.
  Commands run one after the other, in order.
* stdout: one event per line, flushed each time: {"event": "ready"} once online, then
  {"event": "ok", "req": 3, ...} or {"event": "error", "req": 3, "message": "..."} for each
  command, and {"event": "message" | "presence" | "iq_error" | "disconnected", ...} as things
  happen ({"event": "error", "req": null} for a failed login or a failing stanza handler).

Usage: xmpp_human.py --jid bob@localhost --password pw --server 127.0.0.1:5222 [--register]

Plain TCP without TLS (the test Prosody has none). Exceptions become error events; `quit` or
the end of stdin disconnects cleanly. slixmpp's own log goes to stderr (warnings and up).
"""

import argparse
import asyncio
import base64
import hashlib
import json
import logging
import sys
import xml.etree.ElementTree as ET

import aiohttp
import slixmpp
from slixmpp.exceptions import IqError, IqTimeout, PresenceError
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import StanzaPath

# How long a command may wait for the server (an answer, a self-presence).
TIMEOUT = 10

# Namespaces parsed or built by hand.
NS_CLIENT = "jabber:client"
NS_SID = "urn:xmpp:sid:0"  # XEP-0359 stanza-id / origin-id
NS_OCCUPANT_ID = "urn:xmpp:occupant-id:0"  # XEP-0421
NS_CORRECT = "urn:xmpp:message-correct:0"  # XEP-0308
NS_REPLY = "urn:xmpp:reply:0"  # XEP-0461
NS_FALLBACK = "urn:xmpp:fallback:0"  # XEP-0428
NS_REACTIONS = "urn:xmpp:reactions:0"  # XEP-0444
NS_RETRACT_1 = "urn:xmpp:message-retract:1"  # XEP-0424, current version (what slixmpp sends)
NS_RETRACT_0 = "urn:xmpp:message-retract:0"  # XEP-0424, old version (inside XEP-0422 fastening)
NS_FASTEN = "urn:xmpp:fasten:0"  # XEP-0422
NS_MODERATE_0 = "urn:xmpp:message-moderate:0"  # XEP-0425 as Prosody 0.12's mod_muc_moderation
NS_MODERATE_1 = "urn:xmpp:message-moderate:1"  # XEP-0425, current version
NS_CHAT_STATES = "http://jabber.org/protocol/chatstates"  # XEP-0085
NS_MARKERS = "urn:xmpp:chat-markers:0"  # XEP-0333
NS_OOB = "jabber:x:oob"  # XEP-0066
NS_XHTML_IM = "http://jabber.org/protocol/xhtml-im"  # XEP-0071
NS_XHTML = "http://www.w3.org/1999/xhtml"
NS_DELAY = "urn:xmpp:delay"  # XEP-0203
NS_MAM = "urn:xmpp:mam:2"  # XEP-0313
NS_MUC_USER = "http://jabber.org/protocol/muc#user"  # XEP-0045
NS_MUC_ADMIN = "http://jabber.org/protocol/muc#admin"
NS_VCARD = "vcard-temp"  # XEP-0054
NS_VCARD_UPDATE = "vcard-temp:x:update"  # XEP-0153
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"

CHAT_STATES = ("active", "composing", "paused", "inactive", "gone")


def emit(event):
    """Writes one event as a JSON line on stdout."""
    sys.stdout.write(json.dumps(event, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def q(ns, name):
    """ElementTree's name for element `name` in namespace `ns`."""
    return "{%s}%s" % (ns, name)


def attr(elem, name):
    """An attribute of an element that may be missing (None if either is)."""
    return None if elem is None else elem.get(name)


def error_of(xml):
    """The <error/> child of a stanza as {type, condition, text}, or None."""
    err = xml.find(q(NS_CLIENT, "error"))
    if err is None:
        return None
    condition = next((c.tag.split("}")[1] for c in err if c.tag.startswith("{%s}" % NS_STANZAS)
                      and not c.tag.endswith("}text")), None)
    return {"type": err.get("type"), "condition": condition,
            "text": err.findtext(q(NS_STANZAS, "text"))}


def describe(exc):
    """A one-line description of an exception, with the XMPP error condition when there is one."""
    if isinstance(exc, (IqError, PresenceError)):
        kind, stanza = ("iq", exc.iq) if isinstance(exc, IqError) else ("presence", exc.presence)
        err = error_of(stanza.xml) or {}
        return "%s error: %s (%s) %s" % (
            kind, err.get("condition"), err.get("type"), err.get("text") or "")
    if isinstance(exc, IqTimeout):
        return "iq timeout: no answer from the server"
    if isinstance(exc, asyncio.TimeoutError):
        return "timeout: no answer from the server"
    return "%s: %s" % (type(exc).__name__, exc)


def parse_message(xml, own_bare):
    """Everything a test may want to check in a <message/>, parsed from the stanza's XML.

    Done by hand rather than through slixmpp's stanza interfaces: reading an absent plugin there
    creates the element, Message['origin_id'] is an alias of the id attribute, and the
    occupant-id stanza declares no interfaces (slixmpp 1.17). Absent fields are None.
    """
    sender = xml.get("from")
    room_bare = sender.split("/")[0] if sender else None
    # XEP-0359: a MUC adds its stanza-id with by=room; for chats our server adds by=our JID.
    stanza_ids = xml.findall(q(NS_SID, "stanza-id"))
    own = [s for s in stanza_ids if s.get("by") in (room_bare, own_bare)]
    stanza_id = (own or stanza_ids or [None])[0]

    reply = xml.find(q(NS_REPLY, "reply"))
    reactions = xml.find(q(NS_REACTIONS, "reactions"))
    displayed = xml.find(q(NS_MARKERS, "displayed"))
    subject = xml.find(q(NS_CLIENT, "subject"))
    xhtml = xml.find(q(NS_XHTML_IM, "html"))
    xhtml_body = None if xhtml is None else xhtml.find(q(NS_XHTML, "body"))
    delay = xml.find(q(NS_DELAY, "delay"))
    return {
        "event": "message",
        "type": xml.get("type", "normal"),
        "from": sender,
        "to": xml.get("to"),
        "id": xml.get("id"),
        "body": xml.findtext(q(NS_CLIENT, "body")),
        "origin_id": attr(xml.find(q(NS_SID, "origin-id")), "id"),
        "stanza_id": attr(stanza_id, "id"),
        "stanza_id_by": attr(stanza_id, "by"),
        "occupant_id": attr(xml.find(q(NS_OCCUPANT_ID, "occupant-id")), "id"),
        "replace_id": attr(xml.find(q(NS_CORRECT, "replace")), "id"),
        "reply": None if reply is None else {"to": reply.get("to"), "id": reply.get("id")},
        "fallbacks": [
            {"for": f.get("for"),
             "body": [{"start": int_or_none(b.get("start")),
                       "end": int_or_none(b.get("end"))}
                      for b in f.findall(q(NS_FALLBACK, "body"))]}
            for f in xml.findall(q(NS_FALLBACK, "fallback"))],
        "reactions": None if reactions is None else {
            "id": reactions.get("id"),
            "keys": [r.text or "" for r in reactions.findall(q(NS_REACTIONS, "reaction"))]},
        "retract_id": attr(xml.find(q(NS_RETRACT_1, "retract")), "id") or self_retraction_0(xml),
        "moderated": parse_moderation(xml),
        "status_codes": muc_status_codes(xml),  # e.g. 104/170/172: the room's config changed
        "chat_state": next((s for s in CHAT_STATES if xml.find(q(NS_CHAT_STATES, s)) is not None),
                           None),
        "displayed_id": attr(displayed, "id"),
        "subject": None if subject is None else (subject.text or ""),
        "oob_urls": [x.findtext(q(NS_OOB, "url")) for x in xml.findall(q(NS_OOB, "x"))],
        "xhtml": None if xhtml_body is None else ET.tostring(
            xhtml_body, encoding="unicode", default_namespace=NS_XHTML),
        "delay": None if delay is None else {
            "stamp": delay.get("stamp"), "from": delay.get("from")},
        "error": error_of(xml),
    }


def int_or_none(value):
    """An integer attribute, None when absent or not a number."""
    return int(value) if value is not None and value.isdigit() else None


def self_retraction_0(xml):
    """The id retracted by an old-style (v0, fastening) XEP-0424 retraction, if it is one."""
    apply_to = xml.find(q(NS_FASTEN, "apply-to"))
    if apply_to is not None and apply_to.find(q(NS_RETRACT_0, "retract")) is not None:
        return apply_to.get("id")
    return None


def parse_moderation(xml):
    """A XEP-0425 moderation announcement as {id, by, reason, retract, version}, or None.

    Version 0 (Prosody 0.12 + mod_muc_moderation): <apply-to id=stanza-id><moderated by=…>
    <retract/><reason/></moderated></apply-to>; in the archive, the message itself is replaced
    by a tombstone <moderated by=…><retracted/><reason/></moderated> (id None, tombstone true).
    Version 1: <retract id=stanza-id><moderated by=…/><reason/></retract>.
    """
    apply_to = xml.find(q(NS_FASTEN, "apply-to"))
    moderated = None if apply_to is None else apply_to.find(q(NS_MODERATE_0, "moderated"))
    if moderated is not None:
        return {"id": apply_to.get("id"), "by": moderated.get("by"),
                "reason": moderated.findtext(q(NS_MODERATE_0, "reason")),
                "retract": moderated.find(q(NS_RETRACT_0, "retract")) is not None, "version": 0,
                "tombstone": False}
    moderated = xml.find(q(NS_MODERATE_0, "moderated"))
    if moderated is not None:
        return {"id": None, "by": moderated.get("by"),
                "reason": moderated.findtext(q(NS_MODERATE_0, "reason")),
                "retract": moderated.find(q(NS_RETRACT_0, "retracted")) is not None,
                "version": 0, "tombstone": True}
    retract = xml.find(q(NS_RETRACT_1, "retract"))
    moderated = None if retract is None else retract.find(q(NS_MODERATE_1, "moderated"))
    if moderated is not None:
        return {"id": retract.get("id"), "by": moderated.get("by"),
                "reason": retract.findtext(q(NS_RETRACT_1, "reason")), "retract": True,
                "version": 1, "tombstone": False}
    return None


def muc_status_codes(xml):
    """The MUC status codes a stanza carries (muc#user <status code=…/>), sorted."""
    x = xml.find(q(NS_MUC_USER, "x"))
    if x is None:
        return []
    return sorted(int_or_none(s.get("code")) or 0 for s in x.findall(q(NS_MUC_USER, "status")))


def photo_hash(xml):
    """The XEP-0153 photo hash of a presence, if it has the element."""
    x = xml.find(q(NS_VCARD_UPDATE, "x"))
    if x is None:
        return None
    photo = x.find(q(NS_VCARD_UPDATE, "photo"))
    return "" if photo is None else (photo.text or "")


def parse_muc_presence(xml):
    """A MUC presence: nick, occupant-id, status codes and the <item/>."""
    x = xml.find(q(NS_MUC_USER, "x"))
    item = None if x is None else x.find(q(NS_MUC_USER, "item"))
    sender = xml.get("from") or ""
    return {
        "event": "presence",
        "from": sender,
        "type": xml.get("type", "available"),
        "nick": sender.split("/", 1)[1] if "/" in sender else None,
        "occupant_id": attr(xml.find(q(NS_OCCUPANT_ID, "occupant-id")), "id"),
        "status_codes": muc_status_codes(xml),
        # XEP-0153: the occupant's avatar hash (None: no x element; "": no avatar).
        "photo": photo_hash(xml),
        "item": None if item is None else {
            "affiliation": item.get("affiliation"), "role": item.get("role"),
            "jid": item.get("jid"), "nick": item.get("nick")},
        "error": error_of(xml),
    }


class Human(slixmpp.ClientXMPP):
    """The client: slixmpp plus the stanza handlers that report events."""

    def __init__(self, jid, password, register):
        super().__init__(jid, password)
        # No TLS on the loopback test server; SASL over the cleartext stream.
        self.enable_plaintext, self.enable_starttls, self.enable_direct_tls = True, False, False
        self.plugin["feature_mechanisms"].unencrypted_plain = True
        self.plugin["feature_mechanisms"].unencrypted_scram = True
        for plugin in ("xep_0030", "xep_0045", "xep_0059", "xep_0066", "xep_0071", "xep_0085",
                       "xep_0199", "xep_0308", "xep_0313", "xep_0333", "xep_0334", "xep_0359",
                       "xep_0363", "xep_0424", "xep_0428", "xep_0444", "xep_0461"):
            self.register_plugin(plugin)
        self.registration = None  # None: not asked; else the outcome, for main()
        self.presence_waiters = []  # (predicate on the XML, future), see wait_presence
        if register:
            self.register_plugin("xep_0077")
            self.plugin["xep_0077"].force_registration = True
            self.add_event_handler("register", self.on_register)
        # Our own handlers see every message and presence (slixmpp's "message" event only
        # fires for messages with a body).
        self.register_handler(Callback("human: message", StanzaPath("message"), self.on_message))
        self.register_handler(Callback("human: presence", StanzaPath("presence"),
                                       self.on_presence))
        self.register_handler(Callback("human: iq error", StanzaPath("iq@type=error"),
                                       self.on_iq_error))
        # slixmpp does not reconnect by itself: a test sees the loss (and the end, after quit).
        self.add_event_handler("disconnected", lambda reason: emit(
            {"event": "disconnected", "reason": str(reason)}))

    def exception(self, exception):
        """An exception in a stanza handler (slixmpp's hook): report it, keep running."""
        logging.error("in a stanza handler", exc_info=exception)
        emit({"event": "error", "req": None,
              "message": "in a stanza handler: %s" % describe(exception)})

    async def on_register(self, _form):
        """XEP-0077 in-band registration before logging in; an existing account is fine."""
        iq = self.Iq()
        iq["type"] = "set"
        iq["register"]["username"] = self.boundjid.user
        iq["register"]["password"] = self.password
        try:
            await iq.send(timeout=TIMEOUT)
            self.registration = "registered"
        except IqError as exc:
            if (error_of(exc.iq.xml) or {}).get("condition") == "conflict":
                self.registration = "exists"
            else:
                self.registration = describe(exc)
        except IqTimeout as exc:
            self.registration = describe(exc)

    def on_message(self, msg):
        # MAM results are the answer to a `mam` command, not conversation.
        if msg.xml.find(q(NS_MAM, "result")) is not None:
            return
        emit(parse_message(msg.xml, self.boundjid.bare))

    def wait_presence(self, predicate):
        """A future for the XML of the next presence that `predicate` accepts.

        (slixmpp's MUC plugin forgets a room as we leave it, so it reports no self-presence
        for the leave itself.)
        """
        future = asyncio.get_running_loop().create_future()
        self.presence_waiters.append((predicate, future))
        return future

    def on_presence(self, pres):
        # Presences in rooms (they carry muc#user), and errors for room joins.
        if pres.xml.find(q(NS_MUC_USER, "x")) is not None or pres["type"] == "error":
            emit(parse_muc_presence(pres.xml))
        for predicate, future in self.presence_waiters:
            if not future.done() and predicate(pres.xml):
                future.set_result(pres.xml)
        self.presence_waiters = [(p, f) for p, f in self.presence_waiters if not f.done()]

    def on_iq_error(self, iq):
        emit({"event": "iq_error", "from": iq["from"].full, "id": iq["id"],
              "error": error_of(iq.xml)})


class Commands:
    """The commands a test sends; each returns the fields of its `ok` reply."""

    def __init__(self, xmpp):
        self.xmpp = xmpp
        self.muc = xmpp.plugin["xep_0045"]
        self.nicks = {}  # room -> our nick there
        # The command names of the protocol ("quit" is handled by the reader).
        self.table = {name: getattr(self, name) for name in (
            "join", "leave", "nick", "send", "correct", "reply", "react", "retract", "moderate",
            "admin",
            "chatstate", "displayed", "subject", "oob", "upload", "fetch", "mam", "raw",
            "configure", "vcard", "avatar")}

    def message(self, c, body=None):
        """A new message to c["to"] of c["type"], with c["id"] if given (also as origin-id)."""
        msg = self.xmpp.make_message(mto=c["to"], mbody=body, mtype=c.get("type", "chat"))
        if c.get("id"):
            msg["id"] = c["id"]
        if not msg["id"]:
            msg["id"] = self.xmpp.new_id()
        # XEP-0359 origin-id, like the usual clients: same value as the id attribute.
        ET.SubElement(msg.xml, q(NS_SID, "origin-id"), {"id": msg["id"]})
        return msg

    async def join(self, c):
        room, nick = slixmpp.JID(c["room"]), c["nick"]
        pres, subject, _occupants, _history = await self.muc.join_muc_wait(
            room, nick, maxstanzas=c.get("history") or 0, timeout=TIMEOUT)
        self.nicks[c["room"]] = pres["from"].resource
        info = parse_muc_presence(pres.xml)
        return {"nick": info["nick"], "occupant_id": info["occupant_id"],
                "status_codes": info["status_codes"], "item": info["item"],
                "subject": subject.xml.findtext(q(NS_CLIENT, "subject"))}

    async def leave(self, c):
        room = c["room"]

        def own_exit(xml):  # our unavailable self-presence (status 110) from the room
            return ((xml.get("from") or "").split("/")[0] == room
                    and xml.get("type") == "unavailable" and 110 in muc_status_codes(xml))

        left = self.xmpp.wait_presence(own_exit)
        self.muc.leave_muc(slixmpp.JID(room), self.nicks.pop(room, ""))
        xml = await asyncio.wait_for(left, TIMEOUT)
        return {"status_codes": muc_status_codes(xml)}

    async def nick(self, c):
        new = await self.muc.set_self_nick(slixmpp.JID(c["room"]), c["nick"], timeout=TIMEOUT)
        self.nicks[c["room"]] = new
        return {"nick": new}

    async def send(self, c):
        msg = self.message(c, c["body"])
        if c.get("xhtml"):
            msg["html"]["body"] = c["xhtml"]  # XEP-0071: inner XML of the XHTML <body/>
        msg.send()
        return {"id": msg["id"]}

    async def correct(self, c):
        msg = self.message(c, c["body"])
        msg["replace"]["id"] = c["replace_id"]
        msg.send()
        return {"id": msg["id"]}

    async def reply(self, c):
        msg = self.message(c, c["body"])
        msg["reply"]["to"] = c["reply_to_jid"]
        msg["reply"]["id"] = c["reply_to_id"]
        if c.get("fallback_quote"):
            # "> quoted\n" prepended to the body, marked with a XEP-0428 fallback range.
            msg["reply"].add_quoted_fallback(c["fallback_quote"])
        msg.send()
        return {"id": msg["id"], "body": msg["body"]}

    async def react(self, c):
        msg = self.message(c)
        msg["reactions"]["id"] = c["msg_id"]
        msg["reactions"].set_values(c["reactions"], all_chars=True)  # the full new set
        msg.enable("store")  # XEP-0334: body-less, but worth archiving
        msg.send()
        return {"id": msg["id"]}

    async def retract(self, c):
        msg = self.xmpp.plugin["xep_0424"].send_retraction(
            slixmpp.JID(c["to"]), c["msg_id"], mtype=c.get("type", "chat"))
        return {"id": msg["id"]}

    async def moderate(self, c):
        # XEP-0425 v0 by hand (slixmpp only has v1; Prosody 0.12's module only v0).
        iq = self.xmpp.make_iq_set(ito=c["room"])
        apply_to = ET.SubElement(iq.xml, q(NS_FASTEN, "apply-to"), {"id": c["stanza_id"]})
        moderate = ET.SubElement(apply_to, q(NS_MODERATE_0, "moderate"))
        ET.SubElement(moderate, q(NS_RETRACT_0, "retract"))
        if c.get("reason"):
            ET.SubElement(moderate, q(NS_MODERATE_0, "reason")).text = c["reason"]
        await iq.send(timeout=TIMEOUT)
        return {}

    async def admin(self, c):
        """An XEP-0045 admin request setting one item: a role by nick, or an affiliation by JID."""
        iq = self.xmpp.make_iq_set(ito=c["room"])
        query = ET.SubElement(iq.xml, q(NS_MUC_ADMIN, "query"))
        ET.SubElement(query, q(NS_MUC_ADMIN, "item"),
                      {k: c[k] for k in ("nick", "jid", "role", "affiliation") if c.get(k)})
        await iq.send(timeout=TIMEOUT)
        return {}

    async def chatstate(self, c):
        msg = self.message(c)
        msg["chat_state"] = c["state"]
        msg.send()
        return {"id": msg["id"]}

    async def displayed(self, c):
        msg = self.message(c)
        msg["displayed"]["id"] = c["msg_id"]
        msg.send()
        return {"id": msg["id"]}

    async def subject(self, c):
        self.muc.set_subject(c["room"], c["subject"])
        return {}

    async def oob(self, c):
        # The body carries the URL too, as clients expect for inline media.
        msg = self.message(c, c["url"])
        msg["oob"]["url"] = c["url"]
        if c.get("desc"):
            msg["oob"]["desc"] = c["desc"]
        msg.send()
        return {"id": msg["id"]}

    async def upload(self, c):
        with open(c["path"], "rb") as f:
            data = f.read()
        # Discovers the service (disco#items on our domain, then disco#info on each), asks for
        # a slot and PUTs the file with the slot's headers.
        url = await self.xmpp.plugin["xep_0363"].upload_file(
            c["path"], size=len(data), content_type=c.get("content_type"), timeout=TIMEOUT)
        return {"url": url, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    async def fetch(self, c):
        timeout = aiohttp.ClientTimeout(total=TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.get(c["url"]) as resp:
                data = await resp.read()
                return {"status": resp.status, "size": len(data),
                        "sha256": hashlib.sha256(data).hexdigest(),
                        "content_type": resp.headers.get("Content-Type")}

    async def mam(self, c):
        rsm = {"max": c.get("max") or 50}
        if c.get("after"):
            rsm["after"] = c["after"]
        result = await self.xmpp.plugin["xep_0313"].retrieve(
            jid=slixmpp.JID(c["room"]), rsm=rsm, timeout=TIMEOUT)
        messages = []
        for wrapper in result["mam"]["results"]:
            res = wrapper.xml.find(q(NS_MAM, "result"))
            forwarded = res.find("{urn:xmpp:forward:0}forwarded")
            inner = forwarded.find(q(NS_CLIENT, "message"))
            parsed = parse_message(inner, self.xmpp.boundjid.bare)
            parsed["archive_id"] = res.get("id")
            delay = forwarded.find(q(NS_DELAY, "delay"))
            parsed["archived_at"] = attr(delay, "stamp")
            del parsed["event"]
            messages.append(parsed)
        fin = result.xml.find(q(NS_MAM, "fin"))
        rsm_set = fin.find("{http://jabber.org/protocol/rsm}set")
        return {"messages": messages, "complete": fin.get("complete") == "true",
                "last": rsm_set.findtext("{http://jabber.org/protocol/rsm}last")}

    async def vcard(self, c):
        """XEP-0054: asks c["jid"] (an occupant's room/nick, or a JID) for its vCard; the
        reply has the full name, and the photo's type, size and SHA-1 when it has one."""
        iq = self.xmpp.Iq()
        iq["type"], iq["to"] = "get", c["jid"]
        iq.append(ET.Element(q(NS_VCARD, "vCard")))
        result = await iq.send(timeout=TIMEOUT)
        card = result.xml.find(q(NS_VCARD, "vCard"))
        name = None if card is None else card.find(q(NS_VCARD, "FN"))
        photo = None if card is None else card.find(q(NS_VCARD, "PHOTO"))
        out = {"fn": None if name is None else name.text, "photo": None}
        if photo is not None:
            binval = photo.find(q(NS_VCARD, "BINVAL"))
            kind = photo.find(q(NS_VCARD, "TYPE"))
            data = base64.b64decode("".join((binval.text or "").split())) if binval is not None else b""
            out["photo"] = {"type": None if kind is None else kind.text, "size": len(data),
                            "sha1": hashlib.sha1(data).hexdigest()}
        return out

    async def avatar(self, c):
        """Sets our avatar as clients without PEP avatars do: publishes our vCard (XEP-0054)
        with the picture (data_b64, type), then tells each room we are in its hash in a new
        presence (XEP-0153). The reply has the hash."""
        data = base64.b64decode(c["data_b64"])
        iq = self.xmpp.Iq()
        iq["type"] = "set"
        card = ET.Element(q(NS_VCARD, "vCard"))
        photo = ET.SubElement(card, q(NS_VCARD, "PHOTO"))
        ET.SubElement(photo, q(NS_VCARD, "TYPE")).text = c.get("type", "image/png")
        ET.SubElement(photo, q(NS_VCARD, "BINVAL")).text = base64.b64encode(data).decode()
        iq.append(card)
        await iq.send(timeout=TIMEOUT)
        sha1 = hashlib.sha1(data).hexdigest()
        for room, nick in self.nicks.items():
            pres = self.xmpp.make_presence(pto="%s/%s" % (room, nick))
            update = ET.SubElement(pres.xml, q(NS_VCARD_UPDATE, "x"))
            ET.SubElement(update, q(NS_VCARD_UPDATE, "photo")).text = sha1
            pres.send()
        return {"sha1": sha1}

    async def raw(self, c):
        self.xmpp.send_raw(c["xml"])
        return {}

    async def configure(self, c):
        # muc#owner: fetch the room's form, fill in the options, submit it. Short names get the
        # muc#roomconfig_ prefix ("whois" -> "muc#roomconfig_whois").
        room = c["room"]
        form = await self.muc.get_room_config(room, timeout=TIMEOUT)
        fields = form.get_fields()
        for name, value in c["options"].items():
            var = name if name in fields else "muc#roomconfig_" + name
            if var not in fields:
                raise ValueError("room %s has no config field %r" % (room, name))
            fields[var]["value"] = value
        await self.muc.set_room_config(room, form, timeout=TIMEOUT)
        return {}


async def run_commands(xmpp, commands):
    """Reads commands from stdin until `quit` or EOF; answers each with ok or error."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=16 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            return  # EOF: the test dropped us
        if not line.strip():
            continue
        req = None
        try:
            c = json.loads(line)
            req = c.get("req")
            name = c.get("cmd")
            if name == "quit":
                emit({"event": "ok", "req": req})
                return
            handler = commands.table.get(name) if isinstance(name, str) else None
            if handler is None:
                raise ValueError("unknown command %r" % name)
            reply = await handler(c)
            emit({"event": "ok", "req": req, **reply})
        except Exception as exc:  # any failure is the test's business, the client lives on
            # A traceback only when it is not the server saying no (or not answering).
            expected = isinstance(exc, (IqError, IqTimeout, PresenceError, asyncio.TimeoutError))
            logging.warning("command failed: %s: %s", line.decode(errors="replace").strip(),
                            describe(exc), exc_info=not expected)
            emit({"event": "error", "req": req, "message": describe(exc)})


async def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jid", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--server", required=True, help="host:port of the c2s listener")
    parser.add_argument("--register", action="store_true",
                        help="create the account first (XEP-0077); an existing one is fine")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="xmpp_human %s: %%(levelname)s %%(name)s: %%(message)s" % args.jid)
    host, port = args.server.rsplit(":", 1)

    xmpp = Human(args.jid, args.password, args.register)
    online = asyncio.get_running_loop().create_future()
    xmpp.add_event_handler("session_start", lambda _: online.done() or online.set_result(None))
    xmpp.add_event_handler("failed_auth", lambda _: online.done() or online.set_exception(
        RuntimeError("authentication failed for %s" % args.jid)))
    xmpp.add_event_handler("disconnected", lambda _: online.done() or online.set_exception(
        RuntimeError("disconnected before the session started")))
    xmpp.connect(host, int(port))  # explicit address: no SRV lookup
    try:
        await asyncio.wait_for(online, TIMEOUT)
        if args.register and xmpp.registration not in ("registered", "exists"):
            raise RuntimeError("no registration")
    except Exception as exc:
        reason = describe(exc)
        if args.register and xmpp.registration not in ("registered", "exists"):
            reason = "in-band registration of %s failed: %s (then %s)" % (
                args.jid, xmpp.registration or "the server offered none", reason)
        emit({"event": "error", "req": None, "message": "could not log in: %s" % reason})
        xmpp.abort()
        sys.exit(1)
    xmpp.send_presence()
    emit({"event": "ready", "jid": xmpp.boundjid.full, "registration": xmpp.registration})

    await run_commands(xmpp, Commands(xmpp))
    await xmpp.disconnect()


if __name__ == "__main__":
    asyncio.run(main())
