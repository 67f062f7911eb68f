#!/usr/bin/env bash
# Formatting, clippy (default and mio-only builds) and rustdoc, all with warnings denied.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy (default features)"
cargo clippy --workspace --all-targets -- -D warnings

echo "== cargo clippy (--no-default-features: the mio-only build other OSes get)"
cargo clippy --workspace --all-targets --no-default-features -- -D warnings

echo "== cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps
