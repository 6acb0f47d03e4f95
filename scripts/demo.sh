#!/usr/bin/env bash
# The demo: two chat servers (the project's line-based example protocol), the bridge linking a
# room on each, one message crossing each way. It then keeps running: type `lobby NAME TEXT` to
# post on side A; Ctrl-C stops and cleans up everything it started.
# (The XMPP + Matrix demo replaces this once those adapters land.)
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

log "building"
cargo build -q -p bridge -p bridge-example-linechat
bin="$ROOT/target/debug"
work="$(mktemp -d)"
pids=()
cleanup() {
  trap - EXIT INT TERM
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
  echo "stopped; removed $work"
}
trap cleanup EXIT INT TERM

mkfifo "$work/a.in" "$work/b.in"
port_a=17070; port_b=17071
"$bin/linechat-server" "127.0.0.1:$port_a" <"$work/a.in" >"$work/a.out" 2>&1 & pids+=($!)
"$bin/linechat-server" "127.0.0.1:$port_b" <"$work/b.in" >"$work/b.out" 2>&1 & pids+=($!)
exec 3>"$work/a.in" 4>"$work/b.in"

cat >"$work/bridge.toml" <<TOML
[bridge]
data_dir = "$work/data"
log_level = "info"

[[adapter]]
id = "side-a"
type = "linechat"
connect = "127.0.0.1:$port_a"

[[adapter]]
id = "side-b"
type = "linechat"
connect = "127.0.0.1:$port_b"

[[room]]
id = "lobby"
[[room.link]]
adapter = "side-a"
remote = "lobby"
[[room.link]]
adapter = "side-b"
remote = "lobby"
TOML
"$bin/bridge" check -c "$work/bridge.toml"
"$bin/bridge" run -c "$work/bridge.toml" 2>"$work/bridge.log" & pids+=($!)
sleep 1

wait_line() { # file pattern
  for _ in $(seq 1 100); do
    if grep -q "$2" "$1"; then grep "$2" "$1" | head -1; return 0; fi
    sleep 0.1
  done
  echo "did not arrive: $2 in $1" >&2; return 1
}
log "alice posts on side A; side B receives:"
echo "lobby alice hello from side A" >&3
wait_line "$work/b.out" "hello from side A"
log "bob posts on side B; side A receives:"
echo "lobby bob hello from side B" >&4
wait_line "$work/a.out" "hello from side B"

log "running. Type 'lobby NAME TEXT' to post on side A; side B's log: $work/b.out. Ctrl-C stops."
tail -n0 -f "$work/b.out" & pids+=($!)
while IFS= read -r line; do echo "$line" >&3; done
