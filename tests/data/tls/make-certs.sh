#!/usr/bin/env bash
# Makes the committed test certificates (tests/data/tls), so the TLS tests need no tool at
# run time: a test CA, a server certificate it signed for localhost, 127.0.0.1 and ::1, and a
# second CA the server certificate does not chain to. P-256 keys, valid for 100 years. The
# CA keys are not kept. Run from anywhere; rewrites the files beside this script.
set -euo pipefail
cd "$(dirname "$0")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
ca() { # ca NAME CN
  openssl req -x509 "${ec[@]}" -keyout "$work/$1.key" -out "$1.pem" -days 36500 \
    -subj "/CN=$2" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}
ca ca "ringmill test CA"
ca other-ca "ringmill other test CA"
openssl req -new "${ec[@]}" -keyout server.key -out "$work/server.csr" -subj "/CN=localhost" 2>/dev/null
cat >"$work/server.ext" <<EXT
subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth,clientAuth
EXT
openssl x509 -req -in "$work/server.csr" -CA ca.pem -CAkey "$work/ca.key" -set_serial 2 \
  -days 36500 -extfile "$work/server.ext" -out server.pem 2>/dev/null
echo "made ca.pem other-ca.pem server.pem server.key in $(pwd)"
