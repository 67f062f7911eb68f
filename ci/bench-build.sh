#!/usr/bin/env bash
# Benchmarks must keep compiling: the criterion benches of the workspace, and the peer
# comparison (a workspace of its own, so tokio/monoio/mill-net stay out of the library's
# lock file; checked here, not built in release).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== cargo bench --no-run"
cargo bench --workspace --no-run

echo "== peer comparison: fmt, clippy"
cargo fmt --manifest-path benches/peer/Cargo.toml -- --check
cargo clippy --manifest-path benches/peer/Cargo.toml -- -D warnings

echo "== peer comparison: its own tests (plain loop, load generators' byte check, report)"
cargo test --manifest-path benches/peer/Cargo.toml
