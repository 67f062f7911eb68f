#!/usr/bin/env bash
# The connection map's loom models (backends/core/src/map/loom_models.rs): map.rs itself,
# compiled with --cfg loom against loom's atomics (backends/core/src/map/sync.rs), into a
# target directory of their own (the flag changes every crate's build).
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTFLAGS="--cfg loom"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/loom"
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-3}"
cargo test -p ringmill-core --release --lib map::loom_models
