# Loopback servers for the integration tests, sourced by scripts/test.sh (and the demo later).
# Each server gets a fresh directory and non-default ports, so a server already running on the
# machine is never touched; `servers_stop` (run on exit) stops what was started here.

SERVERS_DIR="${SERVERS_DIR:-$(mktemp -d /tmp/bridge-servers.XXXXXX)}"
SERVER_PIDS=()

# Installs Prosody (and prosody-modules, for mod_muc_moderation) from Debian if missing, without
# letting apt start the packaged service.
prosody_install() {
  if command -v prosody >/dev/null 2>&1 \
    && [ -e /usr/lib/prosody/modules/mod_muc_moderation/mod_muc_moderation.lua ]; then
    return 0
  fi
  log "installing Prosody and prosody-modules (apt)"
  local policy=/usr/sbin/policy-rc.d restore=""
  if [ -e "$policy" ]; then restore="$(cat "$policy")"; fi
  printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prosody prosody-modules >/dev/null
  local status=$?
  if [ -n "$restore" ]; then printf '%s\n' "$restore" >"$policy"; else rm -f "$policy"; fi
  return $status
}

# Waits until something listens on 127.0.0.1:$1 (at most $2 seconds).
wait_port() {
  local port="$1" deadline=$(( $(date +%s) + ${2:-20} ))
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    if [ "$(date +%s)" -ge "$deadline" ]; then return 1; fi
    sleep 0.1
  done
}

# Starts Prosody with the test config; exports where the tests find it.
prosody_start() {
  local dir="$SERVERS_DIR/prosody"
  mkdir -p "$dir/data" "$dir/certs"
  export PROSODY_C2S_PORT="${PROSODY_C2S_PORT:-25222}"
  export PROSODY_COMPONENT_PORT="${PROSODY_COMPONENT_PORT:-25347}"
  export PROSODY_HTTP_PORT="${PROSODY_HTTP_PORT:-25280}"
  sed -e "s#@DIR@#$dir#g" -e "s#@C2S_PORT@#$PROSODY_C2S_PORT#" \
      -e "s#@COMPONENT_PORT@#$PROSODY_COMPONENT_PORT#" -e "s#@HTTP_PORT@#$PROSODY_HTTP_PORT#" \
      "$ROOT/tests/servers/prosody.cfg.lua" >"$dir/prosody.cfg.lua"
  prosody --config "$dir/prosody.cfg.lua" -F >"$dir/prosody.out" 2>&1 &
  SERVER_PIDS+=($!)
  if ! wait_port "$PROSODY_COMPONENT_PORT" 20 || ! wait_port "$PROSODY_C2S_PORT" 5; then
    echo "Prosody did not start; its output:" >&2
    cat "$dir/prosody.out" >&2
    return 1
  fi
  export BRIDGE_TEST_PROSODY_CONFIG="$dir/prosody.cfg.lua"
  export BRIDGE_TEST_XMPP_COMPONENT="127.0.0.1:$PROSODY_COMPONENT_PORT"
  export BRIDGE_TEST_XMPP_C2S="127.0.0.1:$PROSODY_C2S_PORT"
  echo "Prosody $(dpkg-query -W -f='${Version}' prosody 2>/dev/null) on 127.0.0.1:$PROSODY_C2S_PORT (c2s), :$PROSODY_COMPONENT_PORT (component); data in $dir"
}

# The scripted test clients, XMPP (tests/clients/xmpp_human.py, on slixmpp) and Matrix
# (tests/clients/matrix_human.py, on matrix-nio), run in one venv at $ROOT/.venv. Created on first
# use; a stamp file listing what was installed makes later calls a no-op until
# TEST_CLIENT_PACKAGES changes. (matrix-nio 0.26 wants aiohttp >= 3.10, < 4: the pin fits both.)
TEST_CLIENT_PACKAGES="slixmpp==1.17.0 aiohttp==3.14.5 matrix-nio==0.26.0"
test_clients_install() {
  local venv="$ROOT/.venv"
  if [ "$(cat "$venv/.bridge-packages" 2>/dev/null)" != "$TEST_CLIENT_PACKAGES" ]; then
    log "installing the test clients in $venv: $TEST_CLIENT_PACKAGES"
    python3 -m venv "$venv"
    # shellcheck disable=SC2086 # the list is meant to split into arguments
    "$venv/bin/pip" install --quiet --disable-pip-version-check $TEST_CLIENT_PACKAGES
    printf '%s\n' "$TEST_CLIENT_PACKAGES" >"$venv/.bridge-packages"
  fi
  export BRIDGE_TEST_PYTHON="$venv/bin/python"
}
# The names the test clients are known by (one venv serves both).
xmpp_client_install() { test_clients_install; }
matrix_client_install() { test_clients_install; }

# Synapse from PyPI (wheels only: nothing to compile) in its own venv at $ROOT/.venv-synapse,
# created on first use and kept, like the test clients', until SYNAPSE_PACKAGES changes.
SYNAPSE_PACKAGES="matrix-synapse==1.163.2"
synapse_install() {
  local venv="$ROOT/.venv-synapse"
  if [ "$(cat "$venv/.bridge-packages" 2>/dev/null)" != "$SYNAPSE_PACKAGES" ]; then
    log "installing Synapse in $venv: $SYNAPSE_PACKAGES"
    python3 -m venv "$venv"
    # shellcheck disable=SC2086 # the list is meant to split into arguments
    "$venv/bin/pip" install --quiet --disable-pip-version-check --only-binary :all: $SYNAPSE_PACKAGES
    printf '%s\n' "$SYNAPSE_PACKAGES" >"$venv/.bridge-packages"
  fi
  export BRIDGE_TEST_SYNAPSE_PYTHON="$venv/bin/python"
}

# Starts Synapse with the test config (tests/servers/homeserver.yaml, appservice.yaml), waits
# until it answers and registers the test users alice, bob, carol (passwords alicepass...) and the
# admin "admin" (adminpass); exports where the tests find it. Needs synapse_install first.
synapse_start() {
  local dir="$SERVERS_DIR/synapse" servers="$ROOT/tests/servers"
  mkdir -p "$dir"
  export SYNAPSE_PORT="${SYNAPSE_PORT:-25808}"
  export BRIDGE_TEST_AS_PORT="${BRIDGE_TEST_AS_PORT:-25900}"
  # Another server there would answer in place of ours (and already know the test users).
  if (exec 3<>"/dev/tcp/127.0.0.1/$SYNAPSE_PORT") 2>/dev/null; then
    echo "something already listens on 127.0.0.1:$SYNAPSE_PORT: set SYNAPSE_PORT to a free port" >&2
    return 1
  fi
  sed -e "s#@DIR@#$dir#g" -e "s#@PORT@#$SYNAPSE_PORT#g" "$servers/homeserver.yaml" >"$dir/homeserver.yaml"
  cp "$servers/synapse.log.config" "$dir/"
  # SYNAPSE_REGISTRATION: a registration of the caller's (the demo's, written by `bridge
  # generate-registration`) instead of the tests' fixed one.
  local registration="${SYNAPSE_REGISTRATION:-}"
  if [ -n "$registration" ]; then
    cp "$registration" "$dir/appservice.yaml"
  else
    sed -e "s#@AS_PORT@#$BRIDGE_TEST_AS_PORT#g" "$servers/appservice.yaml" >"$dir/appservice.yaml"
  fi
  "$BRIDGE_TEST_SYNAPSE_PYTHON" "$servers/synapse_setup.py" signing-key "$dir/localhost.signing.key"
  "$BRIDGE_TEST_SYNAPSE_PYTHON" -m synapse.app.homeserver -c "$dir/homeserver.yaml" >"$dir/synapse.out" 2>&1 &
  SERVER_PIDS+=($!)
  if ! "$BRIDGE_TEST_SYNAPSE_PYTHON" "$servers/synapse_setup.py" register \
      "http://127.0.0.1:$SYNAPSE_PORT" --pid "$!" --timeout 60; then
    echo "Synapse did not start, or the test users could not be registered; the end of its output:" >&2
    tail -n 40 "$dir/synapse.out" >&2
    return 1
  fi
  export BRIDGE_TEST_SYNAPSE_URL="http://127.0.0.1:$SYNAPSE_PORT"
  export BRIDGE_TEST_SYNAPSE_CONFIG="$dir/homeserver.yaml"
  # The tokens of the registration, read from the template so they are written down once.
  BRIDGE_TEST_AS_TOKEN="$(sed -n 's/^as_token: *"\{0,1\}\([^" ]*\)"\{0,1\}.*/\1/p' "$dir/appservice.yaml")"
  BRIDGE_TEST_HS_TOKEN="$(sed -n 's/^hs_token: *"\{0,1\}\([^" ]*\)"\{0,1\}.*/\1/p' "$dir/appservice.yaml")"
  export BRIDGE_TEST_AS_TOKEN BRIDGE_TEST_HS_TOKEN
  echo "Synapse ${SYNAPSE_PACKAGES#*==} on $BRIDGE_TEST_SYNAPSE_URL (appservice pushes to 127.0.0.1:$BRIDGE_TEST_AS_PORT); data in $dir"
}

servers_stop() {
  for pid in "${SERVER_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${SERVER_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  SERVER_PIDS=()
  rm -rf "$SERVERS_DIR"
}
