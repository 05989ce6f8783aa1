#!/usr/bin/env bash
# Runs the fuzz targets from the seed corpus (fuzz/README.md).
#
#   fuzz/run.sh [SECONDS] [TARGET...]     # default: 30 s each, every target
#
# Installs what is missing (the nightly toolchain, cargo-fuzz), builds the seed
# corpus from tests/fixtures, builds every target once (nightly, ASan, debug
# assertions and overflow checks), then runs each for SECONDS. Exits non-zero
# on the first crash, timeout or out-of-memory; libFuzzer names the input it
# saved under fuzz/artifacts/<target>/. The log of each run is kept in
# fuzz/logs/<target>.log (gitignored, like the corpus and artifacts).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
shift || true
if (($# > 0)); then targets=("$@"); else targets=(admission maps reference); fi

if ! rustup toolchain list | grep -q '^nightly'; then
    echo "fuzz: installing the nightly toolchain"
    # --no-self-update: installing a toolchain otherwise replaces rustup itself.
    rustup toolchain install nightly --profile minimal --no-self-update
fi
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
# The fuzz crate is its own workspace; its lock starts as the project's, so
# the fuzzed code is built with the versions Cargo.lock pins (cargo adds only
# libfuzzer-sys and its few build dependencies). Derived, so not committed.
cp Cargo.lock fuzz/Cargo.lock
fuzz/seed-corpus.py
cargo +nightly fuzz build

mkdir -p fuzz/logs
for target in "${targets[@]}"; do
    echo "fuzz: ${target} for ${seconds} s"
    # -timeout: an input that takes 10 s is a finding (a review must be
    # answered well within the API server's 10 s webhook timeout).
    status=0
    cargo +nightly fuzz run "$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -dict="$PWD/fuzz/dict/${target}.dict" -print_final_stats=1 \
        >"fuzz/logs/${target}.log" 2>&1 || status=$?
    grep -aE '^#[0-9]+[[:space:]]+DONE|^stat::number_of_executed_units|^stat::peak_rss_mb' "fuzz/logs/${target}.log" || true
    if ((status != 0)); then
        tail -n 60 "fuzz/logs/${target}.log"
        echo "fuzz: ${target} failed (exit ${status}); the input is under fuzz/artifacts/${target}/"
        exit "$status"
    fi
done
