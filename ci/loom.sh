#!/usr/bin/env bash
# The connection map's loom models (tests/map_loom.rs), compiled with --cfg loom into a
# target directory of their own (the flag changes every crate's build).
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTFLAGS="--cfg loom"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/loom"
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-3}"
cargo test --release --test map_loom
