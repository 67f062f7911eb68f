#!/usr/bin/env bash
# Benchmarks must keep compiling.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== cargo bench --no-run"
cargo bench --workspace --no-run
