#!/usr/bin/env bash
# The stated rust-version (Cargo.toml, workspace.package) is true: every library of the
# workspace, with every feature, checks on that toolchain. The toolchain is installed with
# rustup (minimal profile); where it cannot be had, this says so and stops without failing.
set -euo pipefail
cd "$(dirname "$0")/.."
msrv=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml | head -1)
toolchain="$msrv.0"
[ "$(echo "$msrv" | tr -cd . | wc -c)" -ge 2 ] && toolchain=$msrv
if ! rustup toolchain install "$toolchain" --profile minimal >/dev/null 2>&1; then
  echo "skipped: the rust-version check: toolchain $toolchain cannot be installed here"
  exit 0
fi
echo "== cargo +$toolchain check --workspace --lib --all-features (rust-version = $msrv)"
CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}/msrv cargo "+$toolchain" check --workspace --lib --all-features
