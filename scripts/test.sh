#!/usr/bin/env bash
# The one command that checks everything: formatting, lints, and every test in the workspace.
# The servers the integration tests need (Prosody, Synapse) and the scripted test clients are
# installed if missing, started here on loopback with fresh data, and stopped on exit.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

started=$(date +%s)
. "$ROOT/scripts/servers.sh"
trap servers_stop EXIT
# pip (Synapse and the test clients: ~50 s on a clean machine, nothing once installed) works in
# the background while cargo checks and builds.
( synapse_install && test_clients_install ) >"$SERVERS_DIR/pip-install.log" 2>&1 &
pip_job=$!

# What the build will have to work with (it takes ~6 GB on a clean clone, ~7.5 GB with
# incremental caches): printed so that a build killed by a full disk is recognised as such.
target_dir="${CARGO_TARGET_DIR:-$ROOT/target}"
mkdir -p "$target_dir"
log "free disk where the build goes: $(df -h --output=avail "$target_dir" | tail -1 | tr -d ' ')"

log "cargo fmt --check"
cargo fmt --all --check

log "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings

log "cargo doc (warnings are errors: every public item is documented)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet

log "cargo build (the bridge binary is used by the end-to-end tests)"
cargo build --workspace --all-targets

log "starting the servers the integration tests use"
prosody_install
prosody_start
if ! wait "$pip_job"; then
  echo "installing Synapse or the test clients failed:" >&2
  cat "$SERVERS_DIR/pip-install.log" >&2
  exit 1
fi
cat "$SERVERS_DIR/pip-install.log"
synapse_install && test_clients_install   # no-ops now: they export the interpreters' paths
synapse_start

log "cargo test"
output="$target_dir/test-output.txt"   # CARGO_TARGET_DIR may be elsewhere
set +e   # a failing test run still gets its summary below
cargo test --workspace --no-fail-fast 2>&1 | tee "$output"
status=${PIPESTATUS[0]}
set -e

passed=$(grep -Eo 'test result: [a-zA-Z]+\. [0-9]+ passed' "$output" | awk '{s+=$4} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' "$output" | awk '{s+=$1} END {print s+0}')
log "done in $(( $(date +%s) - started )) s; the build takes $(du -sh "$target_dir" | cut -f1)"
echo "$passed passed, $failed failed"
exit "$status"
