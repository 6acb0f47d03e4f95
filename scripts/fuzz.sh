#!/usr/bin/env bash
# Fuzzing: scripts/fuzz.sh [SECONDS] runs every cargo-fuzz target for SECONDS each (default 60),
# then minimises its corpus. Corpora live in <crate>/fuzz/corpus/<target>/ and are committed
# (keep them small); a crash leaves its input in <crate>/fuzz/artifacts/<target>/ and fails the
# script. cargo-fuzz needs nightly features: RUSTC_BOOTSTRAP=1 enables them on the stable
# toolchain. The corpora are also replayed by ordinary unit tests, so CI covers them without
# cargo-fuzz.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
seconds="${1:-60}"
case "$seconds" in
  '' | *[!0-9]*) echo "usage: scripts/fuzz.sh [SECONDS]" >&2; exit 2 ;;
esac
if ! cargo fuzz --version >/dev/null 2>&1; then
  log "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
# Panics are what we look for (the code has no `unsafe`): no sanitizer, which doubles the speed,
# but debug assertions on, so that arithmetic overflow panics.
opts=(--sanitizer none --debug-assertions)
for fuzz_dir in bridge-core/fuzz bridge-mimi/fuzz bridge-xmpp/fuzz bridge-matrix/fuzz; do
  crate="$(dirname "$fuzz_dir")"
  for target in $(cd "$crate" && cargo fuzz list --fuzz-dir fuzz); do
    corpus="fuzz/corpus/$target"
    mkdir -p "$crate/$corpus"
    log "fuzzing $crate $target for ${seconds}s"
    (cd "$crate" && cargo fuzz run "${opts[@]}" --fuzz-dir fuzz "$target" "$corpus" -- \
      -max_total_time="$seconds" -max_len=4096 -print_final_stats=1)
    log "minimising the corpus of $target"
    # cmin keeps only what adds coverage: the hand-written seeds (files not named by a SHA-1,
    # which the replay tests require) are put back afterwards.
    seeds="$(mktemp -d)"
    for file in "$crate/$corpus"/*; do
      [[ "$(basename "$file")" =~ ^[0-9a-f]{40}$ ]] || cp "$file" "$seeds/"
    done
    (cd "$crate" && cargo fuzz cmin "${opts[@]}" --fuzz-dir fuzz "$target" "$corpus" -- -max_len=4096)
    cp -n "$seeds"/* "$crate/$corpus/" 2>/dev/null || true
    rm -rf "$seeds"
    echo "$target: $(find "$crate/$corpus" -type f | wc -l) corpus files, $(du -sh --apparent-size "$crate/$corpus" | cut -f1)"
  done
done
