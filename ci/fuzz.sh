#!/usr/bin/env bash
# Property tests with a fixed budget, in release: the buffer pool against a model, framing
# round trips with random chunk limits, write sizes and re-framing on both backends, and
# random client scripts compared between io_uring and mio (tests/reliability_fuzz.rs).
#
#   ci/fuzz.sh [CASES]      # default 1000 cases per property
set -euo pipefail
cd "$(dirname "$0")/.."
export RINGMILL_FUZZ_CASES="${1:-1000}"
cargo test --release --test reliability_fuzz
