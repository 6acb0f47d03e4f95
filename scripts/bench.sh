#!/usr/bin/env bash
# Benchmarks: scripts/bench.sh NAME. Each prints its figures and, as its last line, one JSON
# object. Available: core (the adapter issues add xmpp, matrix, mimi and e2e).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
name="${1:-}"
if [ -z "$name" ]; then
  echo "usage: scripts/bench.sh NAME   (NAME: core)" >&2
  exit 2
fi
cargo build --release -q -p bridge-tests --bin bench >&2
exec "$ROOT/target/release/bench" "$name"
