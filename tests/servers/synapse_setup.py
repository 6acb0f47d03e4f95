#!/usr/bin/env python3
"""Chores around the test Synapse, shared by scripts/servers.sh and tests/src/synapse.rs.

    synapse_setup.py signing-key PATH
        Writes a fresh ed25519 signing key in Synapse's format ("ed25519 a_XXXX <seed>"), as
        `synapse.app.homeserver --generate-keys` would, without its 1.5 s of imports.
    synapse_setup.py wait URL [--pid PID] [--timeout S]
        Waits until URL/_matrix/client/versions answers 200; gives up early when process PID
        has exited (or is a zombie), so a Synapse that failed to start is reported at once.
    synapse_setup.py register URL [--pid PID] [--timeout S] [--secret SECRET]
        Waits as above, then registers the test users through the shared-secret registration
        API (POST /_synapse/admin/v1/register): alice/alicepass, bob/bobpass, carol/carolpass
        and the server admin admin/adminpass. All in one process: one Python start-up instead of
        one `register_new_matrix_user` per user.

Standard library only, so any Python 3 runs it. Exit status 1 with a message on stderr on
failure.
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import secrets
import string
import sys
import time
import urllib.error
import urllib.request

# The users every test Synapse has: (localpart, password, admin).
USERS = [
    ("alice", "alicepass", False),
    ("bob", "bobpass", False),
    ("carol", "carolpass", False),
    ("admin", "adminpass", True),
]

# registration_shared_secret in tests/servers/homeserver.yaml.
DEFAULT_SECRET = "test_shared_secret"


def signing_key(path):
    """A new signing key: the algorithm, a key id ("a_" + 4 characters) and the 32-byte seed
    in unpadded base64, on one line (what signedjson.key.read_signing_keys parses)."""
    key_id = "a_" + "".join(secrets.choice(string.ascii_letters + string.digits)
                            for _ in range(4))
    seed = base64.b64encode(os.urandom(32)).decode().rstrip("=")
    with open(path, "w") as f:
        f.write("ed25519 %s %s\n" % (key_id, seed))


def alive(pid):
    """Whether process `pid` still runs (a zombie, exited but not yet reaped, does not)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            # "pid (comm) state ...": the state follows the last ")".
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def wait(url, pid, timeout):
    """Polls /_matrix/client/versions every 50 ms until it answers 200."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if pid is not None and not alive(pid):
            sys.exit("synapse_setup: Synapse (pid %d) exited before answering on %s"
                     % (pid, url))
        try:
            with urllib.request.urlopen(url + "/_matrix/client/versions", timeout=2) as resp:
                if resp.status == 200:
                    return
                last = "HTTP %d" % resp.status
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.05)
    sys.exit("synapse_setup: %s did not answer within %g s (%s)" % (url, timeout, last))


def call(method, url, body=None):
    """One JSON request; the decoded JSON answer. HTTP errors carry the server's message."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as exc:
        raise RuntimeError("%s %s: HTTP %d %s" % (method, url, exc.code,
                                                  exc.read().decode(errors="replace")))


def register(url, secret):
    """Registers USERS with the shared secret: a nonce, then the user with an HMAC-SHA1 over
    nonce, user, password and admin flag (NUL-separated), as Synapse's admin API specifies."""
    endpoint = url + "/_synapse/admin/v1/register"
    for user, password, admin in USERS:
        nonce = call("GET", endpoint)["nonce"]
        mac = hmac.new(secret.encode(), digestmod=hashlib.sha1)
        mac.update(b"\x00".join([nonce.encode(), user.encode(), password.encode(),
                                 b"admin" if admin else b"notadmin"]))
        call("POST", endpoint, {"nonce": nonce, "username": user, "password": password,
                                "admin": admin, "mac": mac.hexdigest()})


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    key = sub.add_parser("signing-key", help="write a fresh signing key")
    key.add_argument("path")
    for name in ("wait", "register"):
        p = sub.add_parser(name)
        p.add_argument("url", help="the client listener, e.g. http://127.0.0.1:25808")
        p.add_argument("--pid", type=int, help="Synapse's process: stop waiting if it exits")
        p.add_argument("--timeout", type=float, default=60)
        p.add_argument("--secret", default=DEFAULT_SECRET)
    args = parser.parse_args()

    if args.command == "signing-key":
        signing_key(args.path)
        return
    url = args.url.rstrip("/")
    wait(url, args.pid, args.timeout)
    if args.command == "register":
        try:
            register(url, args.secret)
        except (RuntimeError, OSError, KeyError, ValueError) as exc:
            sys.exit("synapse_setup: registering the test users on %s failed: %s" % (url, exc))


if __name__ == "__main__":
    main()
