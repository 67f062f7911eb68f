#!/usr/bin/env bash
# Installs the real peers the layer tests run against (Debian packages): microsocks, a
# SOCKS5 server (tests/socks5.rs), and the openssl command line tool, which makes the test
# certificates and plays s_client/s_server (tests/tls.rs). Without them those tests fail
# and name this script (RINGMILL_TEST_ALLOW_MISSING_TOOLS=1 turns that into a reported skip).
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
