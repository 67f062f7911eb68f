#!/usr/bin/env bash
# The build other platforms get (mio only) and runs with the backend forced.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo test --no-default-features (mio only; io_uring arms show as ignored by name)"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --no-default-features 2>&1 | tee "$log"
if ! grep -q "ignored, skipped: io_uring driver not built" "$log"; then
  echo "error: the io_uring arms were not reported as skipped in the mio-only build" >&2
  exit 1
fi

echo "== examples: echo round trip with each backend forced"
cargo build --release --example echo_server --example echo_client
bin=${CARGO_TARGET_DIR:-target}/release/examples
. ci/ports.sh
for backend in uring mio; do
  port=$(pick_port)
  out=$(mktemp)
  RINGMILL_BACKEND=$backend "$bin/echo_server" "127.0.0.1:$port" >"$out" 2>&1 &
  pid=$!
  # Wait (bounded) for the server to print its address.
  for _ in $(seq 1 100); do
    grep -q "listening on" "$out" && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  cat "$out"
  expected=$([ "$backend" = uring ] && echo io_uring || echo mio)
  grep -q "backend: $expected" "$out" || { echo "error: echo_server did not report $expected" >&2; kill "$pid"; exit 1; }
  timeout 20 "$bin/echo_client" "127.0.0.1:$port" 3 | tee -a "$out"
  [ "$(grep -c '^echoed: hello' "$out")" = 3 ] || { echo "error: echo round trip failed on $backend" >&2; kill "$pid"; exit 1; }
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  rm -f "$out"
done
