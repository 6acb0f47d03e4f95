#!/usr/bin/env python3
"""The two people of scripts/demo.sh: juliet on XMPP (slixmpp) and alice on Matrix (matrix-nio).

    demo_clients.py setup    --homeserver URL --room-alias lobby --bot @_bridge_bot:localhost
        alice creates the public Matrix room #lobby:localhost, invites the bridge bot and gives
        it power level 100 (it invites ghosts and carries out moderation); prints the room ID.
    demo_clients.py exchange --homeserver URL --room-alias lobby --xmpp 127.0.0.1:5222 \
                             --muc lobby@conference.localhost
        juliet joins the MUC and says hello; alice waits for it in the Matrix room and answers;
        juliet waits for the answer. Each side prints what it received, as it arrives.

Plain TCP without TLS, for the loopback servers the demo starts. Exit status 0 when both
messages crossed within the timeout.
"""

import argparse
import asyncio
import sys
import time

import slixmpp
from nio import AsyncClient, JoinResponse, LoginResponse, RoomCreateResponse, RoomMessageText
from nio.api import RoomPreset

TIMEOUT = 30


def say(who, text):
    print(f"  [{time.strftime('%H:%M:%S')}] {who}: {text}", flush=True)


async def matrix_login(homeserver):
    alice = AsyncClient(homeserver, "@alice:localhost")
    answer = await alice.login("alicepass", device_name="demo")
    if not isinstance(answer, LoginResponse):
        raise SystemExit(f"alice cannot log in: {answer}")
    return alice


async def setup(args):
    alice = await matrix_login(args.homeserver)
    answer = await alice.room_create(
        alias=args.room_alias,
        name="Lobby (bridged with XMPP)",
        preset=RoomPreset.public_chat,
        invite=[args.bot],
        power_level_override={"users": {args.bot: 100}},
    )
    if not isinstance(answer, RoomCreateResponse):
        raise SystemExit(f"cannot create #{args.room_alias}:localhost: {answer}")
    print(answer.room_id)
    await alice.close()


class Juliet(slixmpp.ClientXMPP):
    """An XMPP user in the MUC who records the groupchat messages she receives."""

    def __init__(self, muc):
        super().__init__("juliet@localhost/demo", "julietpass")
        self.muc = muc
        self.received = asyncio.Queue()
        self.joined = asyncio.Event()
        self.enable_plaintext = True
        self.enable_starttls = False
        self.enable_direct_tls = False
        self.register_plugin("xep_0045")
        self.register_plugin("xep_0077")
        mechanisms = self.plugin["feature_mechanisms"]
        mechanisms.unencrypted_plain = True
        mechanisms.unencrypted_scram = True
        self.plugin["xep_0077"].force_registration = True
        self.add_event_handler("session_start", self.started)
        self.add_event_handler("register", self.register)
        self.add_event_handler("groupchat_message", self.message)

    async def register(self, _form):
        answer = self.Iq()
        answer["type"] = "set"
        answer["register"]["username"] = "juliet"
        answer["register"]["password"] = "julietpass"
        try:
            await answer.send()
        except Exception:  # already registered by an earlier run: log in
            pass

    async def started(self, _event):
        self.send_presence()
        await self.plugin["xep_0045"].join_muc_wait(self.muc, "juliet", maxstanzas=0)
        self.joined.set()

    def message(self, msg):
        if msg["mucnick"] != "juliet":
            self.received.put_nowait((msg["mucnick"], msg["body"]))


async def exchange(args):
    host, port = args.xmpp.rsplit(":", 1)
    juliet = Juliet(args.muc)
    juliet.connect(host, int(port))  # explicit address: no SRV lookup
    alice = await matrix_login(args.homeserver)
    joined = await alice.join(f"#{args.room_alias}:localhost")
    if not isinstance(joined, JoinResponse):
        raise SystemExit(f"alice cannot join: {joined}")
    room = joined.room_id
    await alice.sync(timeout=0)  # only what happens from now on
    from_xmpp = asyncio.Queue()

    def on_matrix(room_, event):
        if room_.room_id == room and event.sender != "@alice:localhost":
            from_xmpp.put_nowait((room_.user_name(event.sender) or event.sender, event.body))

    alice.add_event_callback(on_matrix, RoomMessageText)

    async def keep_syncing():
        while True:
            await alice.sync(timeout=3000, since=alice.next_batch)

    syncing = asyncio.create_task(keep_syncing())
    ok = True
    try:
        await asyncio.wait_for(juliet.joined.wait(), TIMEOUT)
        text = "Hello from XMPP! — juliet"
        say("juliet on XMPP sends", text)
        juliet.send_message(mto=args.muc, mbody=text, mtype="groupchat")
        sender, body = await asyncio.wait_for(from_xmpp.get(), TIMEOUT)
        say(f"alice on Matrix received from {sender}", body)
        text = "Hello from Matrix! — alice"
        say("alice on Matrix sends", text)
        await alice.room_send(room, "m.room.message", {"msgtype": "m.text", "body": text})
        sender, body = await asyncio.wait_for(juliet.received.get(), TIMEOUT)
        say(f"juliet on XMPP received from {sender}", body)
    except asyncio.TimeoutError:
        print(f"a message did not cross within {TIMEOUT} s", file=sys.stderr)
        ok = False
    finally:
        syncing.cancel()
        await alice.close()
        await juliet.disconnect()
    return ok


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("step", choices=["setup", "exchange"])
    parser.add_argument("--homeserver", required=True)
    parser.add_argument("--room-alias", default="lobby")
    parser.add_argument("--bot", default="@_bridge_bot:localhost")
    parser.add_argument("--xmpp", default="127.0.0.1:5222")
    parser.add_argument("--muc", default="lobby@conference.localhost")
    args = parser.parse_args()
    if args.step == "setup":
        asyncio.run(setup(args))
    else:
        sys.exit(0 if asyncio.run(exchange(args)) else 1)


main()
