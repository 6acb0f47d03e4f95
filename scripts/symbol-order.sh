#!/usr/bin/env bash
# Records which functions of the release `bridge` binary a deployment runs, and writes their
# names to bridge/symbol-order.txt. bridge/build.rs has the linker place those functions first
# and side by side, so the running bridge keeps a few MB of its code in memory instead of ~20
# (docs/benchmarks.md, "Code layout").
#
# Two workloads, the bridge under valgrind's callgrind (which names every function that ran):
# scripts/demo.sh (XMPP and Matrix appservice, a message each way, repeated, health and metrics
# read), then the e2e bench (two rooms, thousands of messages both ways, a restart; its figures
# mean nothing under callgrind). Run it again when the dependencies change: a function's symbol
# name carries a hash of its crate's build metadata, and names the binary no longer has are
# ignored (the layout degrades, nothing breaks). Edits rename only the ~590 `NAME.llvm.<hash>`
# locals of the modules they change; scripts/bench.sh prints how many recorded names the binary
# still has. The names do not depend on the checkout's directory (scripts/rustc-wrapper), but a
# crate compiled before that wrapper existed keeps its old names until cargo rebuilds it:
# `cargo clean --release -p <each workspace crate>` before recording in such a target directory. The names depend on the cargo invocation and
# the profile too: this records those of scripts/bench.sh's (`--release --workspace`);
# BRIDGE_ORDER_PROFILE=dist records the `dist` profile's, kept in the same file next to the
# release names (each binary finds only its own; names no build has any more are harmless, and
# deleting the file before recording starts afresh).
#
# Installs valgrind from apt when missing; the demo and servers.sh install the rest.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if ! command -v valgrind >/dev/null; then
  log "installing valgrind"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends valgrind >/dev/null
fi

profile="${BRIDGE_ORDER_PROFILE:-release}"
log "building as scripts/bench.sh does, profile $profile (the symbol names depend on both)"
cargo build --profile "$profile" -q --workspace --bin bench --bin bridge
bin="${CARGO_TARGET_DIR:-$ROOT/target}/$profile/bridge"

out="$(mktemp -d /tmp/bridge-symbol-order.XXXXXX)"
trap 'rm -rf "$out"' EXIT

# MALLOC_ARENA_MAX set: the bridge would otherwise start itself again to set it (process.rs),
# and callgrind does not follow that exec. Mangled names: what the linker's order file needs.
callgrind="env MALLOC_ARENA_MAX=2 valgrind --tool=callgrind --demangle=no"

log "the demo as the workload, the bridge under callgrind"
BRIDGE_DEMO_BIN="$bin" BRIDGE_DEMO_EXIT=1 BRIDGE_DEMO_ROUNDS=3 BRIDGE_DEMO_LINGER=20 \
  BRIDGE_DEMO_WRAP="$callgrind --callgrind-out-file=$out/callgrind.%p" \
  "$ROOT/scripts/demo.sh"

log "the e2e bench as the second workload, the bridge under callgrind"
. "$ROOT/scripts/servers.sh"
rm -rf "$SERVERS_DIR"
prosody_install
synapse_install
mkdir "$out/bin"
cp "${CARGO_TARGET_DIR:-$ROOT/target}/$profile/bench" "$out/bin/"
# The bench runs the `bridge` next to it. Periodic dumps: the bench kills its last bridge.
cat >"$out/bin/bridge" <<SH
#!/bin/sh
exec $callgrind --dump-every-bb=300000000 --callgrind-out-file=$out/callgrind.e2e.%p "$bin" "\$@"
SH
chmod +x "$out/bin/bridge"
"$out/bin/bench" e2e >"$out/e2e.log" 2>&1 || {
  tail -n 20 "$out/e2e.log" >&2
  echo "the e2e bench failed under callgrind (above); what ran until then is recorded" >&2
}

log "writing bridge/symbol-order.txt"
nm --defined-only "$bin" >"$out/symbols"
python3 - "$out" "$ROOT/bridge/symbol-order.txt" <<'PY'
import glob, re, sys

out, target = sys.argv[1], sys.argv[2]
# Functions defined in the binary (libc's and the loader's are not ours to place).
defined = set()
for line in open(f"{out}/symbols"):
    parts = line.split()
    if len(parts) == 3 and parts[1] in "tTwW":
        defined.add(parts[2])
# callgrind names a function once per file as "fn=(id) name" or "cfn=(id) name". The demo's
# functions first, then what the e2e bench ran besides.
names, seen = [], set()
demo = sorted(p for p in glob.glob(f"{out}/callgrind.*") if ".e2e." not in p)
for path in demo + sorted(glob.glob(f"{out}/callgrind.e2e.*")):
    for line in open(path, errors="replace"):
        m = re.match(r"^c?fn=\(\d+\) (.+)$", line.rstrip("\n"))
        if m and m.group(1) in defined and m.group(1) not in seen:
            seen.add(m.group(1))
            names.append(m.group(1))
if len(names) < 1000:
    sys.exit(f"only {len(names)} functions recorded: the workload did not run")
# Names of other builds (another profile) stay after this build's. The first line (a comment,
# which the linker skips) says how many are this build's: scripts/bench.sh compares a binary
# with those alone.
try:
    old = [l.strip() for l in open(target) if l.strip() and not l.startswith("#")]
    kept = [n for n in old if n not in defined]
except FileNotFoundError:
    kept = []
with open(target, "w") as f:
    f.write(f"# {len(names)} functions recorded from one build, then {len(kept)} of other builds\n")
    f.write("".join(n + "\n" for n in names + kept))
print(f"{len(names)} functions of {len(defined)} written to {target}, {len(kept)} of other builds kept")
PY
