#!/usr/bin/env python3
"""A scripted Matrix "human" for the bridge's integration tests.

A real third-party client (matrix-nio) that a test drives through JSON lines, like
xmpp_human.py:

* stdin (a pipe, as the Rust wrapper gives it, or a terminal): one command per line, e.g.
  {"cmd": "send", "req": 3, "room": "!abc:localhost", "body": "hi"}. Commands run one after
  the other, in order.
* stdout: one event per line, flushed each time: {"event": "ready", "user_id": ...} once logged
  in and through the first sync, then {"event": "ok", "req": 3, ...} or
  {"event": "error", "req": 3, "message": "..."} for each command, and, as the sync loop sees
  them: {"event": "timeline", ...} (each room event, raw), {"event": "ephemeral", ...} (typing
  notifications, receipts), {"event": "invite", ...}, {"event": "left", ...},
  {"event": "sync_error" | "sync_resumed", ...} ({"event": "error", "req": null} for a failed
  login or a failed automatic join).

Usage: matrix_human.py --user alice --password alicepass --homeserver http://127.0.0.1:25808
       [--autojoin]

Without encryption (the test rooms are unencrypted). Exceptions and error responses become
error events; `quit` or the end of stdin closes the client. nio's own log goes to stderr
(warnings and up).
"""

import argparse
import asyncio
import base64
import hashlib
import html
import json
import logging
import sys
import time
from urllib.parse import quote, urlparse

import aiohttp
from nio import (
    AsyncClient,
    AsyncClientConfig,
    ErrorResponse,
    JoinResponse,
    RoomBanResponse,
    RoomKickResponse,
    RoomUnbanResponse,
    JoinedMembersResponse,
    LoginResponse,
    MessageDirection,
    ProfileSetAvatarResponse,
    ProfileSetDisplayNameResponse,
    RoomCreateResponse,
    RoomGetEventResponse,
    RoomGetStateEventResponse,
    RoomInviteResponse,
    RoomLeaveResponse,
    RoomMessagesResponse,
    RoomPreset,
    RoomPutStateResponse,
    RoomRedactResponse,
    RoomResolveAliasResponse,
    RoomSendResponse,
    RoomTypingResponse,
    RoomVisibility,
    SyncResponse,
    UploadResponse,
)

# How long a command's request may take (the Rust side gives a command 15 s in all).
TIMEOUT = 10
# How long one /sync long-poll waits on the server (ms).
SYNC_TIMEOUT_MS = 30000
# The sync filter: a timeline large enough that a burst between two polls is never cut
# ("limited"), no presence (it is off on the test server anyway).
SYNC_FILTER = {"room": {"timeline": {"limit": 1000}}, "presence": {"types": []}}
# The first sync only establishes where we are: its timelines are history, not news.
FIRST_SYNC_FILTER = {"room": {"timeline": {"limit": 1}}, "presence": {"types": []}}

HTML = "org.matrix.custom.html"


def emit(event):
    """Writes one event as a JSON line on stdout."""
    sys.stdout.write(json.dumps(event, ensure_ascii=False) + "\n")
    sys.stdout.flush()


class CommandError(Exception):
    """A failure worth a one-line message and no traceback (the server said no)."""


def check(resp, expected):
    """Returns nio response `resp` if it is of class `expected`; raises a CommandError with the
    server's errcode, message and HTTP status otherwise."""
    if isinstance(resp, expected):
        return resp
    status = getattr(getattr(resp, "transport_response", None), "status", None)
    if isinstance(resp, ErrorResponse):
        raise CommandError("%s: %s %s (HTTP %s)" % (
            type(resp).__name__, resp.status_code, resp.message, status))
    raise CommandError("unexpected response %r (HTTP %s)" % (resp, status))


def describe(exc):
    """A one-line description of an exception."""
    if isinstance(exc, CommandError):
        return str(exc)
    if isinstance(exc, asyncio.TimeoutError):
        return "timeout: no answer from the server"
    return "%s: %s" % (type(exc).__name__, exc)


def timeline_event(room_id, source):
    """The `timeline` event for a room event as the server sent it (nio's `event.source`)."""
    content = source.get("content") or {}
    return {
        "event": "timeline",
        "room_id": room_id,
        "event_id": source.get("event_id"),
        "sender": source.get("sender"),
        "type": source.get("type"),
        "content": content,
        "state_key": source.get("state_key"),
        # Room versions up to 10 have `redacts` at the top level, v11 in the content.
        "redacts": source.get("redacts") or content.get("redacts"),
        "origin_server_ts": source.get("origin_server_ts"),
        # e.g. transaction_id on our own events, or the redacted_because of a redacted one.
        "unsigned": source.get("unsigned") or {},
    }


def strip_reply_fallback(body, formatted):
    """The body and HTML of an event without a reply fallback it may carry itself, so that
    replying to a reply quotes only the reply's own text (as clients do)."""
    if body.startswith("> "):
        lines = body.split("\n")
        while lines and lines[0].startswith(">"):
            lines.pop(0)
        if lines and lines[0] == "":
            lines.pop(0)
        body = "\n".join(lines)
    if formatted and "</mx-reply>" in formatted:
        formatted = formatted.split("</mx-reply>", 1)[1]
    return body, formatted


class Client(AsyncClient):
    """nio's client, keeping the JSON of the latest /sync answer (nio parses typing and
    receipt events into objects and drops their raw content; the test wants it as sent)."""

    last_sync_json = None

    async def parse_body(self, transport_response):
        parsed = await super().parse_body(transport_response)
        if transport_response.url.path.endswith("/sync"):
            self.last_sync_json = parsed
        return parsed


class Human:
    """The logged-in client, its sync loop and the commands a test sends (each command
    returns the fields of its `ok` reply)."""

    def __init__(self, client, autojoin):
        self.client = client
        self.autojoin = autojoin
        self.http = None  # aiohttp session for what nio does not do (or not as wanted)
        self.table = {name: getattr(self, name) for name in (
            "create_room", "join", "leave", "invite", "kick", "ban", "unban", "send", "edit", "reply", "react",
            "redact", "send_file", "download", "typing", "read", "displayname", "avatar", "topic",
            "room_name", "send_raw", "messages", "state", "forward_extremities", "members",
            "set_autojoin", "whoami", "upgrade")}

    # --- plumbing ---------------------------------------------------------------------------

    async def api(self, method, path, body=None, ok=(200,)):
        """A raw client-server (or admin) API request with our access token; the decoded JSON
        answer. Anything but a status in `ok` is a CommandError."""
        headers = {"Authorization": "Bearer " + self.client.access_token}
        async with self.http.request(method, self.client.homeserver + path, headers=headers,
                                     json=body) as resp:
            text = await resp.text()
            if resp.status not in ok:
                raise CommandError("%s %s: HTTP %d %s" % (method, path, resp.status, text))
            return json.loads(text) if text else {}

    async def send_event(self, room, event_type, content):
        """Sends a room event through nio; returns its event ID."""
        resp = await self.client.room_send(room, event_type, content)
        return check(resp, RoomSendResponse).event_id

    async def put_state(self, room, event_type, content, state_key=""):
        """Sets a state event through nio; returns its event ID."""
        resp = await self.client.room_put_state(room, event_type, content, state_key)
        return check(resp, RoomPutStateResponse).event_id

    async def room_id(self, room):
        """A room ID for a room ID or an alias (resolved through the directory)."""
        if room.startswith("#"):
            resp = await self.client.room_resolve_alias(room)
            return check(resp, RoomResolveAliasResponse).room_id
        return room

    # --- the sync loop ----------------------------------------------------------------------

    async def first_sync(self):
        """The initial sync: where the stream stands, and the invites waiting for us."""
        # (A 1 ms poll rather than 0, which would also turn nio's HTTP timeout off.)
        resp = check(await self.client.sync(timeout=1, sync_filter=FIRST_SYNC_FILTER),
                     SyncResponse)
        for room_id, info in resp.rooms.invite.items():
            await self.on_invite(room_id, info)

    async def sync_forever(self):
        """Long-polls /sync for ever and reports what arrives. A failing sync (the server is
        restarting, say) is reported once, retried every half second, and its end reported as
        soon as the server answers (the retries do not long-poll)."""
        failing = False
        while True:
            try:
                resp = await self.client.sync(timeout=1 if failing else SYNC_TIMEOUT_MS,
                                              sync_filter=SYNC_FILTER)
                check(resp, SyncResponse)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the loop must survive anything
                if not failing:
                    emit({"event": "sync_error", "message": describe(exc)})
                    failing = True
                await asyncio.sleep(0.5)
                continue
            if failing:
                emit({"event": "sync_resumed"})
                failing = False
            await self.report(resp, self.client.last_sync_json or {})

    async def report(self, resp, raw):
        """Emits the events of one sync answer: timelines (of joined and left rooms),
        ephemeral events, invites, departures."""
        rooms = raw.get("rooms") or {}
        for room_id, info in resp.rooms.join.items():
            for event in info.timeline.events:
                emit(timeline_event(room_id, event.source))
            # nio's parsed typing/receipt objects drop the raw content: use the JSON.
            raw_room = (rooms.get("join") or {}).get(room_id) or {}
            for ephemeral in (raw_room.get("ephemeral") or {}).get("events") or []:
                emit({"event": "ephemeral", "room_id": room_id, "type": ephemeral.get("type"),
                      "content": ephemeral.get("content")})
        for room_id, info in resp.rooms.leave.items():
            for event in info.timeline.events:
                emit(timeline_event(room_id, event.source))
            emit({"event": "left", "room_id": room_id})
        for room_id, info in resp.rooms.invite.items():
            await self.on_invite(room_id, info)

    async def on_invite(self, room_id, info):
        """Reports an invite (with who sent it and the room's name, from the stripped state)
        and joins the room in the background when autojoin is on."""
        sender = name = None
        for event in info.invite_state:
            source = getattr(event, "source", {}) or {}
            if source.get("type") == "m.room.member" and \
                    source.get("state_key") == self.client.user_id:
                sender = source.get("sender")
            elif source.get("type") == "m.room.name":
                name = (source.get("content") or {}).get("name")
        emit({"event": "invite", "room_id": room_id, "sender": sender, "name": name})
        if self.autojoin:
            asyncio.create_task(self.autojoin_room(room_id))

    async def autojoin_room(self, room_id):
        try:
            check(await self.client.join(room_id), JoinResponse)
            emit({"event": "autojoined", "room_id": room_id})
        except Exception as exc:
            emit({"event": "error", "req": None,
                  "message": "joining %s on invite: %s" % (room_id, describe(exc))})

    # --- commands ---------------------------------------------------------------------------

    async def whoami(self, c):
        return {"user_id": self.client.user_id, "device_id": self.client.device_id}

    async def set_autojoin(self, c):
        self.autojoin = bool(c.get("on", True))
        return {"autojoin": self.autojoin}

    async def create_room(self, c):
        """A new room: name, topic, alias_localpart, invite (user IDs), public (public_chat
        preset and listed in the directory; else private_chat), direct; optional
        power_level_override, initial_state and room_version passed through."""
        public = bool(c.get("public"))
        resp = await self.client.room_create(
            visibility=RoomVisibility.public if public else RoomVisibility.private,
            alias=c.get("alias_localpart"),
            name=c.get("name"),
            topic=c.get("topic"),
            invite=c.get("invite") or (),
            preset=RoomPreset.public_chat if public else RoomPreset.private_chat,
            is_direct=bool(c.get("direct")),
            room_version=c.get("room_version"),
            initial_state=c.get("initial_state") or (),
            power_level_override=c.get("power_level_override"),
        )
        return {"room_id": check(resp, RoomCreateResponse).room_id}

    async def join(self, c):
        resp = await self.client.join(c["room"])
        return {"room_id": check(resp, JoinResponse).room_id}

    async def leave(self, c):
        check(await self.client.room_leave(await self.room_id(c["room"])), RoomLeaveResponse)
        return {}

    async def invite(self, c):
        check(await self.client.room_invite(await self.room_id(c["room"]), c["user"]),
              RoomInviteResponse)
        return {}

    async def kick(self, c):
        """Kicks user from room, with an optional reason."""
        check(await self.client.room_kick(await self.room_id(c["room"]), c["user"],
                                          c.get("reason")), RoomKickResponse)
        return {}

    async def ban(self, c):
        """Bans user from room, with an optional reason."""
        check(await self.client.room_ban(await self.room_id(c["room"]), c["user"],
                                         c.get("reason")), RoomBanResponse)
        return {}

    async def unban(self, c):
        """Lifts the ban of user from room."""
        check(await self.client.room_unban(await self.room_id(c["room"]), c["user"]),
              RoomUnbanResponse)
        return {}

    async def send(self, c):
        """An m.room.message: body, optional formatted_body (HTML), msgtype (m.text), and any
        `extra` content fields merged in last."""
        content = {"msgtype": c.get("msgtype") or "m.text", "body": c["body"]}
        if c.get("formatted_body") is not None:
            content.update(format=HTML, formatted_body=c["formatted_body"])
        content.update(c.get("extra") or {})
        room = await self.room_id(c["room"])
        return {"event_id": await self.send_event(room, "m.room.message", content)}

    async def edit(self, c):
        """An edit (m.replace) of event_id: m.new_content has the new text; the event's own
        body is the "* " fallback that clients without edits show."""
        new = {"msgtype": c.get("msgtype") or "m.text", "body": c["body"]}
        content = {"msgtype": new["msgtype"], "body": "* " + c["body"]}
        if c.get("formatted_body") is not None:
            new.update(format=HTML, formatted_body=c["formatted_body"])
            content.update(format=HTML, formatted_body="* " + c["formatted_body"])
        content["m.new_content"] = new
        content["m.relates_to"] = {"rel_type": "m.replace", "event_id": c["event_id"]}
        room = await self.room_id(c["room"])
        return {"event_id": await self.send_event(room, "m.room.message", content)}

    async def reply(self, c):
        """A reply (m.in_reply_to) to event_id, with the classic reply fallback unless
        "fallback": false: the original quoted as "> <@sender> text" lines before the body, and
        an <mx-reply> block before the HTML. The reply has event_id, body and formatted_body as
        sent."""
        room = await self.room_id(c["room"])
        text = c["body"]
        text_html = c.get("formatted_body")
        if text_html is None:
            text_html = html.escape(text).replace("\n", "<br>")
        content = {"msgtype": c.get("msgtype") or "m.text", "body": text,
                   "m.relates_to": {"m.in_reply_to": {"event_id": c["event_id"]}}}
        if c.get("fallback", True):
            original = check(await self.client.room_get_event(room, c["event_id"]),
                             RoomGetEventResponse).event.source
            o_content = original.get("content") or {}
            o_body, o_html = strip_reply_fallback(
                str(o_content.get("body", "")),
                o_content.get("formatted_body") if o_content.get("format") == HTML else None)
            sender = original.get("sender", "")
            lines = o_body.split("\n")
            quoted = ["> <%s> %s" % (sender, lines[0])] + ["> " + line for line in lines[1:]]
            content["body"] = "\n".join(quoted) + "\n\n" + text
            if o_html is None:
                o_html = html.escape(o_body).replace("\n", "<br>")
            content["format"] = HTML
            content["formatted_body"] = (
                '<mx-reply><blockquote><a href="https://matrix.to/#/%s/%s">In reply to</a> '
                '<a href="https://matrix.to/#/%s">%s</a><br>%s</blockquote></mx-reply>%s'
                % (room, c["event_id"], sender, html.escape(sender), o_html, text_html))
        elif c.get("formatted_body") is not None:
            content.update(format=HTML, formatted_body=text_html)
        event_id = await self.send_event(room, "m.room.message", content)
        return {"event_id": event_id, "body": content["body"],
                "formatted_body": content.get("formatted_body")}

    async def react(self, c):
        content = {"m.relates_to": {"rel_type": "m.annotation", "event_id": c["event_id"],
                                    "key": c["key"]}}
        room = await self.room_id(c["room"])
        return {"event_id": await self.send_event(room, "m.reaction", content)}

    async def redact(self, c):
        resp = await self.client.room_redact(await self.room_id(c["room"]), c["event_id"],
                                             reason=c.get("reason"))
        return {"event_id": check(resp, RoomRedactResponse).event_id}

    async def send_file(self, c):
        """Uploads a file (data_b64, or path) to the media repository and sends it: name,
        mimetype (application/octet-stream), msgtype (from the mimetype: m.image, m.video,
        m.audio, else m.file), body (the name), optional info fields (w, h, ...) and extra
        content. The reply has event_id, url (mxc), size and sha256 (hex)."""
        if c.get("data_b64") is not None:
            data = base64.b64decode(c["data_b64"])
        else:
            with open(c["path"], "rb") as f:
                data = f.read()
        name = c.get("name") or (c.get("path") or "file").rsplit("/", 1)[-1]
        mimetype = c.get("mimetype") or "application/octet-stream"
        resp, _keys = await self.client.upload(
            lambda _got_429, _got_timeouts: data, content_type=mimetype, filename=name,
            filesize=len(data))
        url = check(resp, UploadResponse).content_uri
        msgtype = c.get("msgtype") or {"image": "m.image", "video": "m.video",
                                       "audio": "m.audio"}.get(mimetype.split("/")[0], "m.file")
        info = {"mimetype": mimetype, "size": len(data)}
        info.update(c.get("info") or {})
        content = {"msgtype": msgtype, "body": c.get("body") or name, "filename": name,
                   "url": url, "info": info}
        content.update(c.get("extra") or {})
        room = await self.room_id(c["room"])
        event_id = await self.send_event(room, "m.room.message", content)
        return {"event_id": event_id, "url": url, "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest()}

    async def download(self, c):
        """Downloads an mxc:// URL through the authenticated media API
        (GET /_matrix/client/v1/media/download/{server}/{id} with our token in the
        Authorization header; "authenticated": false leaves the token out). The reply has size,
        sha256 (hex), content_type and content_disposition; a status other than 200 is an
        error."""
        mxc = urlparse(c["mxc"])
        if mxc.scheme != "mxc" or not mxc.netloc or len(mxc.path) < 2:
            raise CommandError("not an mxc:// URL: %r" % c["mxc"])
        path = "/_matrix/client/v1/media/download/%s/%s" % (
            quote(mxc.netloc, safe=""), quote(mxc.path[1:], safe=""))
        headers = {}
        if c.get("authenticated", True):
            headers["Authorization"] = "Bearer " + self.client.access_token
        async with self.http.get(self.client.homeserver + path, headers=headers) as resp:
            data = await resp.read()
            if resp.status != 200:
                raise CommandError("GET %s: HTTP %d %s" % (
                    path, resp.status, data[:300].decode(errors="replace")))
            return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                    "content_type": resp.headers.get("Content-Type"),
                    "content_disposition": resp.headers.get("Content-Disposition")}

    async def typing(self, c):
        resp = await self.client.room_typing(await self.room_id(c["room"]),
                                             typing_state=bool(c.get("active", True)),
                                             timeout=int(c.get("timeout_ms") or 30000))
        check(resp, RoomTypingResponse)
        return {}

    async def read(self, c):
        """A read receipt (m.read; m.read.private with "private": true) up to event_id;
        unthreaded unless thread_id is given (nio would always send thread_id "main")."""
        room = await self.room_id(c["room"])
        kind = "m.read.private" if c.get("private") else "m.read"
        body = {"thread_id": c["thread_id"]} if c.get("thread_id") else {}
        await self.api("POST", "/_matrix/client/v3/rooms/%s/receipt/%s/%s" % (
            quote(room, safe=""), kind, quote(c["event_id"], safe="")), body)
        return {}

    async def displayname(self, c):
        check(await self.client.set_displayname(c["name"]), ProfileSetDisplayNameResponse)
        return {}

    async def avatar(self, c):
        """Uploads a picture (data_b64, mimetype) and makes it our avatar; the reply has its
        mxc:// url and sha256."""
        data = base64.b64decode(c["data_b64"])
        resp, _keys = await self.client.upload(
            lambda _got_429, _got_timeouts: data, content_type=c.get("mimetype", "image/png"),
            filename="avatar", filesize=len(data))
        url = check(resp, UploadResponse).content_uri
        check(await self.client.set_avatar(url), ProfileSetAvatarResponse)
        return {"url": url, "sha256": hashlib.sha256(data).hexdigest()}

    async def topic(self, c):
        room = await self.room_id(c["room"])
        return {"event_id": await self.put_state(room, "m.room.topic", {"topic": c["text"]})}

    async def room_name(self, c):
        room = await self.room_id(c["room"])
        return {"event_id": await self.put_state(room, "m.room.name", {"name": c["name"]})}

    async def send_raw(self, c):
        """Any event: type and content as given; a state event when state_key is given."""
        room = await self.room_id(c["room"])
        if c.get("state_key") is not None:
            event_id = await self.put_state(room, c["type"], c["content"], c["state_key"])
        else:
            event_id = await self.send_event(room, c["type"], c["content"])
        return {"event_id": event_id}

    async def messages(self, c):
        """GET /messages: limit (10) events in direction dir ("b": newest first, from the end;
        "f": oldest first, from the start), from a token if given, optional filter. The reply
        has events (raw, in the server's order), start and end."""
        direction = MessageDirection.front if c.get("dir") == "f" else MessageDirection.back
        resp = await self.client.room_messages(
            await self.room_id(c["room"]), start=c.get("from"), direction=direction,
            limit=int(c.get("limit") or 10), message_filter=c.get("filter"))
        resp = check(resp, RoomMessagesResponse)
        return {"events": [e.source for e in resp.chunk], "start": resp.start, "end": resp.end}

    async def state(self, c):
        """A state event's content (type, state_key default ""); missing is an error."""
        resp = await self.client.room_get_state_event(
            await self.room_id(c["room"]), c["type"], c.get("state_key") or "")
        return {"content": check(resp, RoomGetStateEventResponse).content}

    async def upgrade(self, c):
        """Upgrades the room to new_version (POST /upgrade): the old room gets a tombstone and
        the reply names the replacement_room."""
        room = await self.room_id(c["room"])
        answer = await self.api("POST", "/_matrix/client/v3/rooms/%s/upgrade" % quote(room, safe=""),
                                {"new_version": c["new_version"]})
        return {"replacement_room": answer.get("replacement_room")}

    async def forward_extremities(self, c):
        """The room's forward extremities through Synapse's admin API (needs an admin)."""
        room = await self.room_id(c["room"])
        answer = await self.api("GET", "/_synapse/admin/v1/rooms/%s/forward_extremities"
                                % quote(room, safe=""))
        return {"count": answer.get("count"), "results": answer.get("results")}

    async def members(self, c):
        """The joined members: user_ids, and members with display names and avatars."""
        resp = check(await self.client.joined_members(await self.room_id(c["room"])),
                     JoinedMembersResponse)
        members = [{"user_id": m.user_id, "display_name": m.display_name,
                    "avatar_url": m.avatar_url} for m in resp.members]
        return {"user_ids": sorted(m["user_id"] for m in members), "members": members}


async def run_commands(human):
    """Reads commands from stdin until `quit` or EOF; answers each with ok or error."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 * 1024 * 1024)  # send_file carries base64 data
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
            handler = human.table.get(name) if isinstance(name, str) else None
            if handler is None:
                raise CommandError("unknown command %r" % name)
            reply = await asyncio.wait_for(handler(c), TIMEOUT + 2)
            emit({"event": "ok", "req": req, **reply})
        except Exception as exc:  # any failure is the test's business, the client lives on
            # A traceback only when it is not the server saying no (or not answering).
            expected = isinstance(exc, (CommandError, asyncio.TimeoutError))
            shown = line.decode(errors="replace").strip()
            logging.warning("command failed: %s: %s", shown[:500], describe(exc),
                            exc_info=not expected)
            emit({"event": "error", "req": req, "message": describe(exc)})


async def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--user", required=True, help="localpart or full user ID")
    parser.add_argument("--password", required=True)
    parser.add_argument("--homeserver", required=True, help="e.g. http://127.0.0.1:25808")
    parser.add_argument("--autojoin", action="store_true", help="join rooms on invite")
    parser.add_argument("--device-name", default="matrix_human")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="matrix_human %s: %%(levelname)s %%(name)s: %%(message)s"
                        % args.user)

    # Requests fail fast instead of nio's default of retrying a refused connection for ever
    # (the sync loop does its own retrying); 429s are still waited out.
    config = AsyncClientConfig(max_timeouts=0, request_timeout=TIMEOUT,
                               store_sync_tokens=False, encryption_enabled=False)
    client = Client(args.homeserver.rstrip("/"), args.user, config=config)
    human = Human(client, args.autojoin)
    started = time.monotonic()
    try:
        check(await client.login(args.password, device_name=args.device_name), LoginResponse)
        human.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT))
        await human.first_sync()
    except Exception as exc:
        emit({"event": "error", "req": None, "message": "could not log in as %s on %s: %s"
              % (args.user, args.homeserver, describe(exc))})
        if human.http:
            await human.http.close()
        await client.close()
        sys.exit(1)
    emit({"event": "ready", "user_id": client.user_id, "device_id": client.device_id,
          "startup_ms": int((time.monotonic() - started) * 1000)})

    sync = asyncio.create_task(human.sync_forever())
    try:
        await run_commands(human)
    finally:
        sync.cancel()
        try:
            await sync
        except asyncio.CancelledError:
            pass
        await human.http.close()
        await client.close()


if __name__ == "__main__":
    asyncio.run(main())
