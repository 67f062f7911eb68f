#!/usr/bin/env bash
# Installs the system peers of the layer tests (Debian packages): microsocks, a SOCKS5
# server (tests/socks5.rs, `*_via_microsocks`), and the openssl command line tool, which
# makes certificates and plays s_client/s_server (tests/tls.rs, `*_openssl_*`). Plain
# `cargo test` needs neither (it tests the same behaviours against in-process peers) and
# reports these tests as skipped without them; ci/features.sh runs them with
# RINGMILL_TEST_REQUIRE_TOOLS=1, which makes a missing tool a failure.
set -euo pipefail

missing=()
command -v microsocks >/dev/null 2>&1 || missing+=(microsocks)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)

if [ "${#missing[@]}" -gt 0 ]; then
  echo "== installing ${missing[*]}"
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

echo "microsocks: $(command -v microsocks)"
echo "openssl: $(openssl version)"
