#!/usr/bin/env bash
# Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#
# A throwaway CA and certificates for blacktree's mutual TLS, with openssl.
# For tests, demos and a first deployment; a production CA keeps its key
# offline (see docs/security.md).
#
#   scripts/make-certs.sh DIR [NAME...]
#
# Makes DIR/ca.pem and DIR/ca.key when DIR has no CA yet (an existing one is
# kept), then for every NAME a key DIR/NAME.key and a certificate DIR/NAME.pem
# signed by that CA: subject CN=NAME, subject alternative names DNS:NAME and
# every entry of CERT_HOSTS, usable as TLS server and client. A NAME given
# again gets a new key and certificate, each replacing the old file at once
# (rename), so a running process picks up the pair at its next reload.
# Without NAMEs: blacktree-orchestrator (the name workers expect by default,
# --orchestrator-name) and blacktree-admin (for `blacktree workers`).
# A worker's NAME is its worker id: the orchestrator lets a certificate
# register and deregister only the worker it names.
#
# Environment: CERT_HOSTS (default "127.0.0.1": the host names and
# IP addresses the others dial this NAME by), CERT_DAYS (default 30).
set -euo pipefail

dir=${1:?usage: make-certs.sh DIR [NAME...]}
shift
(($# > 0)) || set -- blacktree-orchestrator blacktree-admin
hosts=${CERT_HOSTS:-127.0.0.1}
days=${CERT_DAYS:-30}

umask 077
mkdir -p "$dir"

if [[ ! -s $dir/ca.pem || ! -s $dir/ca.key ]]; then
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/ca.key.tmp" 2>/dev/null
  openssl req -x509 -new -key "$dir/ca.key.tmp" -sha256 -days "$days" -subj "/CN=blacktree test CA $(openssl rand -hex 4)" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$dir/ca.pem.tmp"
  mv "$dir/ca.key.tmp" "$dir/ca.key"
  mv "$dir/ca.pem.tmp" "$dir/ca.pem"
  chmod 644 "$dir/ca.pem"
fi

for name in "$@"; do
  [[ $name =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] || { echo "make-certs.sh: '$name' is not a usable name" >&2; exit 2; }
  san="DNS:$name"
  for host in $hosts; do
    if [[ $host =~ ^[0-9.]+$ || $host == *:* ]]; then san+=",IP:$host"; else san+=",DNS:$host"; fi
  done
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/$name.key.tmp" 2>/dev/null
  openssl req -new -key "$dir/$name.key.tmp" -subj "/CN=$name" -out "$dir/$name.csr"
  openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -set_serial "0x$(openssl rand -hex 16)" \
    -days "$days" -sha256 -out "$dir/$name.pem.tmp" 2>/dev/null \
    -extfile <(printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=%s\n' "$san")
  rm -f "$dir/$name.csr"
  chmod 644 "$dir/$name.pem.tmp"
  mv "$dir/$name.key.tmp" "$dir/$name.key"
  mv "$dir/$name.pem.tmp" "$dir/$name.pem"
done
