#!/usr/bin/env bash
# The README's test command with nothing but what cargo brings: runs ci/test.sh (`cargo
# test`) with the system tools of the layer tests (microsocks, openssl) out of reach, on a
# PATH where each directory holding one of them is replaced by a copy of its links without
# it. Then checks that the SOCKS5 and TLS tests ran against their in-process peers and that
# the system-peer tests said they were skipped.
#
#   ci/hermetic.sh                 # ci/test.sh, as CI runs it
#   ci/hermetic.sh --test socks5 --test tls   # only these `cargo test` targets
set -euo pipefail
cd "$(dirname "$0")/.."

tools=(microsocks openssl)
shim_root=$(mktemp -d)
log=$(mktemp)
trap 'rm -rf "$shim_root" "$log"' EXIT

new_path=""
i=0
IFS=: read -r -a dirs <<<"$PATH"
for dir in "${dirs[@]}"; do
  [ -n "$dir" ] || continue
  hides=no
  for tool in "${tools[@]}"; do
    [ -e "$dir/$tool" ] && hides=yes
  done
  if [ "$hides" = yes ]; then
    shim="$shim_root/$i"
    mkdir -p "$shim"
    for entry in "$dir"/*; do
      name=$(basename "$entry")
      case " ${tools[*]} " in *" $name "*) continue ;; esac
      ln -s "$entry" "$shim/$name"
    done
    dir=$shim
  fi
  new_path="${new_path:+$new_path:}$dir"
  i=$((i + 1))
done

for tool in "${tools[@]}"; do
  if PATH="$new_path" command -v "$tool" >/dev/null 2>&1; then
    echo "error: $tool is still reachable on the stripped PATH" >&2
    exit 1
  fi
done
echo "== microsocks and openssl are unreachable for this run (PATH without them)"

if [ "$#" -gt 0 ]; then
  PATH="$new_path" cargo test "$@" 2>&1 | tee "$log"
else
  PATH="$new_path" bash ci/test.sh 2>&1 | tee "$log"
fi

# The in-process peers served, and the system-peer tests reported their skip.
for line in \
  "username_password_authentication::mio ... ok" \
  "tls_server_to_a_rustls_client::mio ... ok" \
  "tls_client_to_a_rustls_server::mio ... ok" \
  "skipped: microsocks not installed" \
  "skipped: openssl not installed"; do
  grep -qF "$line" "$log" || { echo "error: expected in the test output: $line" >&2; exit 1; }
done
echo "== cargo test passed with no system tool: SOCKS5 and TLS ran against in-process peers"
