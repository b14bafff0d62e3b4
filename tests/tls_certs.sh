#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
#
# Throwaway TLS certificates for the volley test suite.
#
# Usage: tests/tls_certs.sh DIR
#
# Writes into DIR (created if needed), with the openssl command line tool
# and EC P-256 keys (fast to make):
#   ca.crt ca.key                 the test CA (self-signed)
#   server.crt server.key         signed by the CA, SAN DNS:localhost,
#                                 IP:127.0.0.1
#   client.crt client.key         a client certificate signed by the CA
#   other-ca.crt other-ca.key     an unrelated CA, for the "wrong CA" case
#   expired.crt expired.key       a server certificate (SAN as above) by the
#                                 CA whose validity ended in 2021
#   wronghost.crt wronghost.key   by the CA, SAN DNS:not-this-host.example
#                                 only
#
# Idempotent: when every file is already there it does nothing; otherwise it
# makes the whole set again in a scratch directory and moves it into place,
# so that DIR never holds a mix of two generations. Never prompts.

set -eu

if [ "$#" -ne 1 ]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
DIR=$1

readonly FILES="ca.crt ca.key server.crt server.key client.crt client.key other-ca.crt
other-ca.key expired.crt expired.key wronghost.crt wronghost.key"

if ! command -v openssl >/dev/null; then
    echo "tls_certs.sh: openssl not found; run tests/deps.sh" >&2
    exit 1
fi

mkdir -p "$DIR"
complete=1
for f in $FILES; do
    [ -s "$DIR/$f" ] || complete=0
done
if [ "$complete" -eq 1 ]; then
    exit 0
fi

WORK=$(mktemp -d "$DIR/.tls-certs.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# openssl's own output is kept and shown only when a step fails.
run() {
    if ! "$@" >>"$WORK/openssl.log" 2>&1; then
        echo "tls_certs.sh: failed: $*" >&2
        cat "$WORK/openssl.log" >&2
        exit 1
    fi
}

key() {
    run openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$WORK/$1.key"
}

# A self-signed CA certificate $1 with subject CN $2.
make_ca() {
    key "$1"
    run openssl req -new -x509 -key "$WORK/$1.key" -out "$WORK/$1.crt" -days 3650 \
        -subj "/O=volley tests/CN=$2" \
        -addext basicConstraints=critical,CA:TRUE \
        -addext keyUsage=critical,keyCertSign,cRLSign
}

# Extension sections for the leaf certificates, used by both signers below.
cat >"$WORK/ext.cnf" <<'EOF'
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost,IP:127.0.0.1

[client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth

[wronghost]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:not-this-host.example
EOF

# A leaf certificate $1 with subject CN $2 and extensions [$3], signed by
# the test CA for a year from now.
make_leaf() {
    key "$1"
    run openssl req -new -key "$WORK/$1.key" -out "$WORK/$1.csr" -subj "/O=volley tests/CN=$2"
    run openssl x509 -req -in "$WORK/$1.csr" -CA "$WORK/ca.crt" -CAkey "$WORK/ca.key" \
        -CAcreateserial -out "$WORK/$1.crt" -days 365 -extfile "$WORK/ext.cnf" -extensions "$3"
}

make_ca ca "volley test CA"
make_ca other-ca "volley unrelated CA"
make_leaf server localhost server
make_leaf client "volley test client" client
make_leaf wronghost not-this-host.example wronghost

# OpenSSL 3.0's x509 cannot date a certificate in the past; `openssl ca`
# can (-startdate/-enddate), given a minimal database of its own.
mkdir "$WORK/ca-db"
: >"$WORK/ca-db/index.txt"
echo 1000 >"$WORK/ca-db/serial"
cat >"$WORK/ca.cnf" <<EOF
[ca]
default_ca = test_ca

[test_ca]
database = $WORK/ca-db/index.txt
serial = $WORK/ca-db/serial
new_certs_dir = $WORK/ca-db
certificate = $WORK/ca.crt
private_key = $WORK/ca.key
default_md = sha256
policy = any
unique_subject = no
copy_extensions = none

[any]
commonName = supplied
organizationName = optional
EOF
key expired
run openssl req -new -key "$WORK/expired.key" -out "$WORK/expired.csr" \
    -subj "/O=volley tests/CN=localhost"
run openssl ca -batch -notext -config "$WORK/ca.cnf" -in "$WORK/expired.csr" \
    -out "$WORK/expired.crt" -startdate 20200101000000Z -enddate 20210101000000Z \
    -extfile "$WORK/ext.cnf" -extensions server

# redis-server reads the keys as whatever user it runs as; they are test
# keys in a private directory, never secrets.
for f in $FILES; do
    chmod 644 "$WORK/$f"
    mv -f "$WORK/$f" "$DIR/$f"
done
