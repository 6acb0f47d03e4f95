#!/usr/bin/env bash
# Benchmarks: scripts/bench.sh NAME. Each prints its figures and, as its last line, one JSON
# object. Available: core, xmpp, matrix, mimi (a MIMI hub fanning out to 10 follower bridges;
# BENCH_MIMI_FOLLOWERS, _MEMBERS, _MESSAGES, _RSS_CLIENTS shrink it for a trial run), e2e (the
# bridge binary between a Prosody and a Synapse of its own).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
name="${1:-}"
if [ -z "$name" ]; then
  echo "usage: scripts/bench.sh NAME   (NAME: core | xmpp | matrix | mimi | e2e)" >&2
  exit 2
fi
if [ "$name" = matrix ] || [ "$name" = e2e ]; then
  # Synapse from PyPI in $ROOT/.venv-synapse (installed once, like scripts/test.sh does); the
  # bench starts and stops its own server. servers.sh makes a directory for servers started
  # by the shell, which this bench does not use.
  . "$ROOT/scripts/servers.sh"
  rm -rf "$SERVERS_DIR"
  synapse_install >&2
  if [ "$name" = e2e ]; then prosody_install >&2; fi
fi
# The bench binary, and the bridge binary the matrix bench runs for its RSS figure.
cargo build --release -q --workspace --bin bench --bin bridge >&2
# The bridge's memory figures depend on its code layout (bridge/build.rs): say how much of the
# recorded function order this binary still has.
order="$ROOT/bridge/symbol-order.txt"
bridge_bin="${CARGO_TARGET_DIR:-$ROOT/target}/release/bridge"
if [ -f "$order" ] && command -v nm >/dev/null; then
  # The file's first line says how many names the last recording wrote (the rest are other
  # builds' names, kept for them): those are what this binary should have.
  total=$(sed -n '1s/^# \([0-9][0-9]*\) functions recorded.*/\1/p' "$order")
  [ -n "$total" ] || total=$(grep -vc '^#' "$order")
  found=$(nm --defined-only "$bridge_bin" | awk '{print $3}' | sort -u | comm -12 - <(grep -v '^#' "$order" | sort -u) | wc -l)
  echo "code layout: $found of the $total functions last recorded are in the bridge binary" >&2
  if [ $((found * 10)) -lt $((total * 9)) ]; then
    echo "  the order is stale (dependencies changed?) or holds another profile's names: memory figures may be higher; scripts/symbol-order.sh records it again" >&2
  fi
fi
exec "${CARGO_TARGET_DIR:-$ROOT/target}/release/bench" "$name"
