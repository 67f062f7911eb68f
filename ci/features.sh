#!/usr/bin/env bash
# The optional `tls` feature: clippy and rustdoc with warnings denied, and its tests (the
# layer tests, now with microsocks and openssl required: RINGMILL_TEST_REQUIRE_TOOLS=1
# makes a missing tool a failure instead of a skip; the facade's unit and doc tests). The
# rest of the suite runs in ci/test.sh (the tests see the feature there too).
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in microsocks openssl; do
  command -v "$tool" >/dev/null 2>&1 || { echo "error: $tool missing: run ci/layer-tools.sh" >&2; exit 1; }
done

echo "== cargo clippy --features tls"
cargo clippy --workspace --all-targets --features tls -- -D warnings

echo "== cargo doc --features tls"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --features tls

echo "== cargo test --features tls (tls, layers, socks5, lib)"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
RINGMILL_TEST_REQUIRE_TOOLS=1 cargo test --features tls --lib --test tls --test layers --test socks5 2>&1 | tee "$log"
echo "== cargo test --features tls --doc"
cargo test --features tls --doc

# The tests against the system tools must have run.
for line in \
  "tls_server_to_openssl_s_client::mio ... ok" \
  "tls_client_to_openssl_s_server::mio ... ok" \
  "username_password_authentication_via_microsocks::mio ... ok"; do
  grep -qF "$line" "$log" || { echo "error: did not run: $line" >&2; exit 1; }
done
if grep -q "skipped: .* not installed" "$log"; then
  echo "error: a system-peer test was skipped" >&2
  exit 1
fi

echo "== example: socks_client through microsocks to echo_server, as the README shows"
cargo build --release --example echo_server --example socks_client
bin=${CARGO_TARGET_DIR:-target}/release/examples
. ci/ports.sh
echo_port=$(pick_port)
proxy_port=$(pick_port)
while [ "$proxy_port" = "$echo_port" ]; do proxy_port=$(pick_port); done
out=$(mktemp)
"$bin/echo_server" "127.0.0.1:$echo_port" >"$out" 2>&1 &
echo_pid=$!
microsocks -i 127.0.0.1 -p "$proxy_port" >/dev/null 2>&1 &
proxy_pid=$!
cleanup() { kill "$echo_pid" "$proxy_pid" 2>/dev/null || true; rm -f "$out" "$log"; }
trap cleanup EXIT
# Wait (bounded) for both to listen; say which one did not.
ready=no
for _ in $(seq 1 200); do
  if grep -q "listening on" "$out" && (exec 3<>"/dev/tcp/127.0.0.1/$proxy_port") 2>/dev/null; then
    ready=yes
    break
  fi
  sleep 0.1
done
if [ "$ready" != yes ]; then
  kill -0 "$proxy_pid" 2>/dev/null || echo "error: microsocks on port $proxy_port exited" >&2
  grep -q "listening on" "$out" || { echo "error: echo_server on port $echo_port not listening:" >&2; cat "$out" >&2; }
  exit 1
fi
got=$(printf 'hello through socks\nsecond line\n' \
  | timeout 30 "$bin/socks_client" "127.0.0.1:$proxy_port" "127.0.0.1:$echo_port")
echo "$got"
[ "$got" = "$(printf 'hello through socks\nsecond line')" ] \
  || { echo "error: socks_client did not get its lines back" >&2; exit 1; }
