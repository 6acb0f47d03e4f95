#!/usr/bin/env bash
# Benchmarks: scripts/bench.sh NAME. Each prints its figures and, as its last line, one JSON
# object. Available: core, xmpp (the adapter issues add matrix, mimi and e2e).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
name="${1:-}"
if [ -z "$name" ]; then
  echo "usage: scripts/bench.sh NAME   (NAME: core | xmpp)" >&2
  exit 2
fi
cargo build --release -q -p bridge-tests --bin bench >&2
exec "${CARGO_TARGET_DIR:-$ROOT/target}/release/bench" "$name"
