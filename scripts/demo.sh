#!/usr/bin/env bash
# The demo: Prosody and Synapse on loopback, the bridge linking the MUC
# lobby@conference.localhost with the Matrix room #lobby:localhost, and one message crossing each
# way between two real clients (juliet on slixmpp, alice on matrix-nio). It then keeps running
# with instructions for connecting any XMPP or Matrix client; Ctrl-C stops and removes
# everything it started.
#
# Installs what is missing (Prosody from apt, Synapse and the clients in venvs). Ports: XMPP
# c2s 25222, Synapse 25808 (override with PROSODY_C2S_PORT, SYNAPSE_PORT, … as in servers.sh).
#
# For scripts (scripts/symbol-order.sh runs the demo as its workload): BRIDGE_DEMO_BIN runs that
# binary instead of building the debug one, BRIDGE_DEMO_WRAP is a command put in front of it
# (split on spaces), BRIDGE_DEMO_ROUNDS repeats the exchange, and BRIDGE_DEMO_EXIT=1 stops
# everything after the exchange (and BRIDGE_DEMO_LINGER more seconds, reading /health/ready and
# /metrics) instead of waiting for Ctrl-C.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bin="${BRIDGE_DEMO_BIN:-}"
if [ -z "$bin" ]; then
  log "building the bridge"
  cargo build -q --bin bridge
  bin="${CARGO_TARGET_DIR:-$ROOT/target}/debug/bridge"
fi
read -r -a wrap <<<"${BRIDGE_DEMO_WRAP:-}"

. "$ROOT/scripts/servers.sh"
work="$SERVERS_DIR"
bridge_pid=""
interrupted=""
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [ "$status" -ne 0 ] && [ -z "$interrupted" ] && [ -f "$work/bridge.log" ]; then
    echo "the demo failed; the end of the bridge's log:" >&2
    tail -n 30 "$work/bridge.log" >&2
  fi
  if [ -n "$bridge_pid" ]; then kill "$bridge_pid" 2>/dev/null || true; wait "$bridge_pid" 2>/dev/null || true; fi
  servers_stop
  echo "stopped the bridge, Prosody and Synapse; removed $work"
}
trap cleanup EXIT
trap 'interrupted=1; exit 130' INT TERM

log "installing what is missing"
prosody_install
test_clients_install
synapse_install

export PROSODY_C2S_PORT="${PROSODY_C2S_PORT:-25222}"
export SYNAPSE_PORT="${SYNAPSE_PORT:-25808}"
export BRIDGE_TEST_AS_PORT="${BRIDGE_TEST_AS_PORT:-25900}"
BRIDGE_HTTP_PORT="${BRIDGE_HTTP_PORT:-25984}"
hs="http://127.0.0.1:$SYNAPSE_PORT"

cat >"$work/bridge.toml" <<TOML
[bridge]
data_dir = "$work/bridge-data"
log_level = "info"
http_addr = "127.0.0.1:$BRIDGE_HTTP_PORT"

[[adapter]]
id = "xmpp"
type = "xmpp"
mode = "component"
server = "127.0.0.1:${PROSODY_COMPONENT_PORT:-25347}"
domain = "bridge.localhost"
secret = "bridgesecret"

[[adapter]]
id = "matrix"
type = "matrix"
mode = "appservice"
homeserver = "$hs"
server_name = "localhost"
registration = "$work/registration.yaml"
listen = "127.0.0.1:$BRIDGE_TEST_AS_PORT"

[[room]]
id = "lobby"
[[room.link]]
adapter = "xmpp"
remote = "lobby@conference.localhost"
[[room.link]]
adapter = "matrix"
remote = "#lobby:localhost"
TOML

log "the appservice registration, with fresh tokens"
"$bin" generate-registration -c "$work/bridge.toml"

log "starting Prosody and Synapse"
prosody_start
SYNAPSE_REGISTRATION="$work/registration.yaml" synapse_start

log "alice creates #lobby:localhost on Matrix and invites the bridge bot"
"$BRIDGE_TEST_PYTHON" "$ROOT/scripts/demo_clients.py" setup --homeserver "$hs"

log "starting the bridge (log: $work/bridge.log)"
"$bin" check -c "$work/bridge.toml"
"${wrap[@]}" "$bin" run -c "$work/bridge.toml" >"$work/bridge.log" 2>&1 &
bridge_pid=$!
for _ in $(seq 1 300); do
  if grep -q "matrix appservice connected" "$work/bridge.log" && grep -q "XMPP session up" "$work/bridge.log"; then sleep 1; break; fi
  if ! kill -0 "$bridge_pid" 2>/dev/null; then cat "$work/bridge.log" >&2; exit 1; fi
  sleep 0.2
done

log "one message each way, printed as it arrives on the other side"
for _ in $(seq 1 "${BRIDGE_DEMO_ROUNDS:-1}"); do
  "$BRIDGE_TEST_PYTHON" "$ROOT/scripts/demo_clients.py" exchange --homeserver "$hs" \
    --xmpp "127.0.0.1:$PROSODY_C2S_PORT" --muc lobby@conference.localhost
done
if [ "${BRIDGE_DEMO_EXIT:-}" = 1 ]; then
  # Lingering, read health and metrics as a monitoring system would.
  for _ in $(seq 1 "${BRIDGE_DEMO_LINGER:-0}"); do
    "$BRIDGE_TEST_PYTHON" -c 'import sys, urllib.request
for path in ("/health/ready", "/metrics"):
    urllib.request.urlopen(sys.argv[1] + path, timeout=10).read()' "http://127.0.0.1:$BRIDGE_HTTP_PORT"
    sleep 1
  done
  exit 0
fi

cat <<EOF

The bridge is running. Connect any client and talk across:
  XMPP:   server 127.0.0.1 port $PROSODY_C2S_PORT, no TLS (plain authentication allowed on loopback);
          register an account (in-band registration is on) or use juliet@localhost / julietpass;
          join lobby@conference.localhost
  Matrix: homeserver $hs; log in as alice / alicepass (also bob, carol);
          join #lobby:localhost
Health and metrics: http://127.0.0.1:$BRIDGE_HTTP_PORT/health/ready, /metrics
Bridge log: $work/bridge.log   Config: $work/bridge.toml
Ctrl-C stops everything.
EOF
wait "$bridge_pid"
