#!/usr/bin/env bash
# Runs every fuzz target for a time budget each (seconds, default 20) with
# cargo-fuzz (libFuzzer), installing cargo-fuzz if missing. The toolchain
# is stable: RUSTC_BOOTSTRAP lets cargo-fuzz pass its instrumentation
# flags, and the sanitizer is off (Rust code here forbids `unsafe`;
# libFuzzer still finds panics, overflows in debug assertions, hangs and
# out-of-memory). Findings land in fuzz/artifacts/ and fail the run.
set -euo pipefail
cd "$(dirname "$0")/.."
budget="${1:-20}"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz@0.13.1
fi
export RUSTC_BOOTSTRAP=1
for target in mqtt_packet payloads edge_config; do
    mkdir -p "fuzz/corpus/$target"
    echo "fuzzing $target for ${budget}s"
    # New inputs go to corpus/ (not committed); seeds/ holds the starting ones.
    (cd fuzz && cargo fuzz run --sanitizer none --debug-assertions "$target" \
        "corpus/$target" "seeds/$target" -- \
        -max_total_time="$budget" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1)
done
