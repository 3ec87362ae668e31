#!/usr/bin/env bash
# Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#
# A complete local blacktree on 127.0.0.1, for the main job, demos and the
# end-to-end tests. Everything it starts lives under one state directory and
# is stopped by `down`; it never touches a service it did not start.
#
#   scripts/stack.sh up     start: RabbitMQ, a registry with htpasswd auth, a
#                           git server (token required) holding examples/sample-app,
#                           the orchestrator, and two workers (regions eu-west, us-east),
#                           all gRPC over mutual TLS with a throwaway CA (scripts/make-certs.sh)
#   scripts/stack.sh down   stop everything `up` started
#   scripts/stack.sh env    print the stack's settings as shell assignments
#
# Environment: BLACKTREE_STACK_DIR (default /var/tmp/blacktree-stack),
# BUILD_DIR (default build; the binaries are in $BUILD_DIR/services).
# After `up`, $BLACKTREE_STACK_DIR/stack.env holds MQ_URL, ORCHESTRATOR_ADDR,
# METRICS_URL, REGISTRY, REPO_URL, GITHUB_TOKEN_FILE, REGISTRY_USER,
# REGISTRY_PASSWORD_FILE, and BLACKTREE_TLS_CERT/KEY/CA (the admin's
# certificate, for `blacktree workers`); certs/ the CA and certificates;
# logs/ has one log per process.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STACK=${BLACKTREE_STACK_DIR:-/var/tmp/blacktree-stack}
BUILD_DIR=${BUILD_DIR:-build}
[[ $BUILD_DIR = /* ]] || BUILD_DIR="$ROOT/$BUILD_DIR"
BIN="$BUILD_DIR/services"
PYTHON=/usr/bin/python3
[[ -x $PYTHON ]] || PYTHON=python3

die() {
  echo "stack.sh: $*" >&2
  exit 1
}

free_port() { "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits until something accepts connections on 127.0.0.1:$1 (the process $2 must stay alive).
wait_port() {
  local port=$1 pid=$2 what=$3 deadline=$((SECONDS + ${4:-60}))
  until "$PYTHON" -c "import socket,sys; s=socket.socket(); s.settimeout(0.5); sys.exit(s.connect_ex(('127.0.0.1',$port)))" 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || die "$what exited during start-up; see $STACK/logs"
    ((SECONDS < deadline)) || die "$what did not listen on port $port in time; see $STACK/logs"
    sleep 0.2
  done
}

# start NAME CMD...: runs CMD in its own session, logging to logs/NAME.log.
start() {
  local name=$1
  shift
  setsid "$@" >>"$STACK/logs/$name.log" 2>&1 </dev/null &
  echo "$! $name" >>"$STACK/pids"
  echo $!
}

down() {
  if [[ -f $STACK/pids ]]; then
    # Workers first (they deregister), then the orchestrator, then the servers.
    tac "$STACK/pids" | while read -r pid name; do
      if kill -0 "$pid" 2>/dev/null; then
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL -- "-$pid" 2>/dev/null || true
        echo "stopped $name"
      fi
    done
    rm -f "$STACK/pids"
  fi
  if [[ -f $STACK/rabbitmq/env ]]; then
    bash "$ROOT/tests/support/rabbitmq.sh" stop "$STACK/rabbitmq" && echo "stopped rabbitmq"
  fi
}

up() {
  for b in blacktree-orchestrator blacktree-worker blacktree; do
    [[ -x $BIN/$b ]] || die "$BIN/$b is missing: build first (cmake --build $BUILD_DIR)"
  done
  command -v buildah >/dev/null || die "buildah is not installed (scripts/install-deps.sh)"
  [[ -x /bin/busybox ]] || die "/bin/busybox is missing (Debian package busybox-static)"
  down
  rm -rf "$STACK"
  mkdir -p "$STACK/logs"
  chmod 700 "$STACK"

  # Secrets: random per stack, in files (never on a command line).
  head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$STACK/github-token"
  head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$STACK/registry-password"
  chmod 600 "$STACK/github-token" "$STACK/registry-password"

  echo "==> RabbitMQ"
  bash "$ROOT/tests/support/rabbitmq.sh" start "$STACK/rabbitmq" >"$STACK/logs/rabbitmq-start.log" 2>&1 ||
    { cat "$STACK/logs/rabbitmq-start.log" >&2; die "RabbitMQ did not start"; }
  local mq_url
  mq_url=$(cat "$STACK/rabbitmq/url")

  echo "==> registry (htpasswd auth)"
  local reg_port
  reg_port=$(free_port)
  mkdir -p "$STACK/registry/data"
  htpasswd -Bbn blacktree "$(cat "$STACK/registry-password")" >"$STACK/registry/htpasswd" 2>/dev/null
  cat >"$STACK/registry/config.yml" <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $STACK/registry/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$reg_port
  secret: $(head -c 16 /dev/urandom | base64 | tr -d '/+=')
auth:
  htpasswd:
    realm: blacktree
    path: $STACK/registry/htpasswd
YAML
  local pid
  pid=$(start registry docker-registry serve "$STACK/registry/config.yml")
  wait_port "$reg_port" "$pid" registry

  echo "==> git server with examples/sample-app (token required)"
  local work="$STACK/git/work"
  mkdir -p "$work" "$STACK/git/root/demo"
  cp -r "$ROOT/examples/sample-app/." "$work/"
  cp /bin/busybox "$work/busybox"
  git -C "$work" init -q -b main
  git -C "$work" add -A
  git -C "$work" -c user.name=blacktree -c user.email=blacktree@localhost commit -q -m "sample app"
  git clone -q --bare "$work" "$STACK/git/root/demo/sample-app.git"
  "$PYTHON" "$ROOT/tests/pipeline/git_http_server.py" --root "$STACK/git/root" --token-file "$STACK/github-token" \
    --port-file "$STACK/git/port" --log "$STACK/logs/git-requests.log" >>"$STACK/logs/git.log" 2>&1 </dev/null &
  echo "$! git" >>"$STACK/pids"
  local deadline=$((SECONDS + 30))
  until [[ -s $STACK/git/port ]]; do
    ((SECONDS < deadline)) || die "the git server did not start; see $STACK/logs/git.log"
    sleep 0.1
  done
  local git_port
  git_port=$(cat "$STACK/git/port")

  echo "==> certificates (mutual TLS between orchestrator, workers and admin)"
  local certs="$STACK/certs"
  bash "$ROOT/scripts/make-certs.sh" "$certs" blacktree-orchestrator blacktree-admin worker-eu-west worker-us-east
  tls_flags() { TLS=(--tls-cert "$certs/$1.pem" --tls-key "$certs/$1.key" --tls-ca "$certs/ca.pem"); }

  echo "==> orchestrator"
  local grpc_port http_port
  grpc_port=$(free_port)
  http_port=$(free_port)
  tls_flags blacktree-orchestrator
  pid=$(start orchestrator env MQ_URL="$mq_url" "$BIN/blacktree-orchestrator" --listen "127.0.0.1:$grpc_port" \
    --http-listen "127.0.0.1:$http_port" "${TLS[@]}")
  wait_port "$grpc_port" "$pid" orchestrator

  for region in eu-west us-east; do
    echo "==> worker $region"
    local wport
    wport=$(free_port)
    mkdir -p "$STACK/jobs-$region"
    tls_flags "worker-$region"
    pid=$(start "worker-$region" "$BIN/blacktree-worker" --orchestrator-addr "127.0.0.1:$grpc_port" "${TLS[@]}" \
      --listen "127.0.0.1:$wport" --worker-id "worker-$region" --region "$region" --capacity 2 \
      --runner build --registry "127.0.0.1:$reg_port/demo" --registry-insecure \
      --registry-auth password --registry-username blacktree --registry-password-file "$STACK/registry-password" \
      --allow-http-repos --token-hosts "127.0.0.1:$git_port" --work-root "$STACK/jobs-$region" --cache-dir "$STACK/cache-$region")
    wait_port "$wport" "$pid" "worker $region"
  done

  cat >"$STACK/stack.env" <<ENV
MQ_URL=$mq_url
ORCHESTRATOR_ADDR=127.0.0.1:$grpc_port
METRICS_URL=http://127.0.0.1:$http_port/metrics
HEALTHZ_URL=http://127.0.0.1:$http_port/healthz
REGISTRY=127.0.0.1:$reg_port
REGISTRY_USER=blacktree
REGISTRY_PASSWORD_FILE=$STACK/registry-password
REPO_URL=http://127.0.0.1:$git_port/demo/sample-app.git
GITHUB_TOKEN_FILE=$STACK/github-token
BLACKTREE_TLS_CERT=$certs/blacktree-admin.pem
BLACKTREE_TLS_KEY=$certs/blacktree-admin.key
BLACKTREE_TLS_CA=$certs/ca.pem
STACK_DIR=$STACK
ENV

  # Ready when both workers are registered and the broker connections are up.
  deadline=$((SECONDS + 60))
  tls_flags blacktree-admin
  until [[ $("$BIN/blacktree" workers --orchestrator-addr "127.0.0.1:$grpc_port" "${TLS[@]}" 2>/dev/null |
    grep -c free) -ge 2 ]] &&
    curl -fs "http://127.0.0.1:$http_port/healthz" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "the workers did not register in time; see $STACK/logs"
    sleep 0.2
  done
  echo "==> stack is up (settings in $STACK/stack.env)"
}

case ${1:-} in
  up) up ;;
  down) down ;;
  env) cat "$STACK/stack.env" ;;
  *)
    sed -n '4,22p' "$0" >&2
    exit 2
    ;;
esac
