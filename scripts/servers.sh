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

# The scripted XMPP "human" of the tests (tests/clients/xmpp_human.py) runs on slixmpp in a venv
# at $ROOT/.venv. Created on first use; a stamp file listing what was installed makes later calls
# a no-op until XMPP_CLIENT_PACKAGES changes.
XMPP_CLIENT_PACKAGES="slixmpp==1.17.0 aiohttp==3.14.5"
xmpp_client_install() {
  local venv="$ROOT/.venv"
  if [ "$(cat "$venv/.bridge-packages" 2>/dev/null)" != "$XMPP_CLIENT_PACKAGES" ]; then
    log "installing the XMPP test client in $venv: $XMPP_CLIENT_PACKAGES"
    python3 -m venv "$venv"
    # shellcheck disable=SC2086 # the list is meant to split into arguments
    "$venv/bin/pip" install --quiet --disable-pip-version-check $XMPP_CLIENT_PACKAGES
    printf '%s\n' "$XMPP_CLIENT_PACKAGES" >"$venv/.bridge-packages"
  fi
  export BRIDGE_TEST_PYTHON="$venv/bin/python"
}

servers_stop() {
  for pid in "${SERVER_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${SERVER_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  SERVER_PIDS=()
  rm -rf "$SERVERS_DIR"
}
