#!/usr/bin/env bash
# Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#
# A throwaway RabbitMQ node for tests: its own data, logs, cookie, ports and
# epmd, all under one directory, so any number of them can run side by side
# and none touches the system's broker.
#
#   rabbitmq.sh start <dir>        start a node (or start it again after `stop`)
#                                  and wait until it accepts AMQP connections
#   rabbitmq.sh stop <dir>         stop the node and its epmd; <dir> is kept, so
#                                  a later `start <dir>` brings the same node back
#                                  (same name, ports, durable queues and messages)
#   rabbitmq.sh ctl <dir> ARGS...  rabbitmqctl ARGS against that node, e.g.
#                                  `ctl <dir> list_queues name messages_unacknowledged`
#   rabbitmq.sh queues <dir> ARGS... rabbitmq-queues ARGS against that node, e.g.
#                                  `queues <dir> quorum_status execute.queue`
#
# After `start`, <dir> holds:
#   port   the AMQP port on 127.0.0.1 (connect to amqp://guest:guest@127.0.0.1:<port>/)
#   url    that URL
#   env    the node's name and ports (sourced by this script)
#   log/   the broker's logs (read them when something fails)
# With RABBITMQ_TLS=1 at the first `start` of a <dir>, the node also listens
# for amqps on 127.0.0.1, with a certificate for the name "localhost" from a CA of its own:
#   tls_port     the amqps port (amqps://guest:guest@localhost:<tls_port>/)
#   tls/ca.pem   the CA to trust; tls/client.pem + tls/client.key a client certificate
#
# Exit status 0 on success; otherwise a message on stderr. `stop` on a
# directory whose node is not running succeeds. Needs rabbitmq-server (Debian
# package; /usr/lib/rabbitmq/bin is used directly, so no root and no su) and
# python3 (to find free ports); openssl with RABBITMQ_TLS=1.
#
# For a node of a cluster (tests/support/rabbitmq_cluster.sh sets them at the
# first `start` of a <dir>; they are kept in <dir>/env like the rest):
#   CLUSTER_NODE_NAME   the node's name (default: blacktree-<pid>-<random>@localhost)
#   CLUSTER_EPMD_PORT   an epmd port the cluster's nodes share (so they find
#                       each other); `stop` then leaves that epmd running
#   CLUSTER_COOKIE      the Erlang cookie the cluster's nodes share
set -euo pipefail

RABBIT_BIN=${RABBIT_BIN:-/usr/lib/rabbitmq/bin}
START_TIMEOUT=${RABBITMQ_START_TIMEOUT:-90}

usage() {
  sed -n '4,38p' "$0" >&2
  exit 2
}

[[ $# -ge 2 ]] || usage
cmd=$1
dir=$2
shift 2

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

free_ports() {  # prints N distinct free TCP ports on 127.0.0.1
  python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# The node's identity is chosen once and kept in <dir>/env, so a restart is the same node.
fresh_env=0
if [[ ! -f "$dir/env" ]]; then
  fresh_env=1
  [[ $cmd != stop ]] || exit 0  # nothing ever ran here
  [[ $cmd == start ]] || { echo "rabbitmq.sh: no node was ever started in $dir" >&2; exit 1; }
  read -r amqp_port dist_port epmd_port tls_port < <(free_ports 4)
  [[ ${RABBITMQ_TLS:-0} == 1 ]] || tls_port=
  epmd_shared=0
  if [[ -n ${CLUSTER_EPMD_PORT:-} ]]; then
    epmd_port=$CLUSTER_EPMD_PORT
    epmd_shared=1
  fi
  cat >"$dir/env" <<EOF
NODE_NAME=${CLUSTER_NODE_NAME:-blacktree-$$-$RANDOM@localhost}
AMQP_PORT=$amqp_port
DIST_PORT=$dist_port
EPMD_PORT=$epmd_port
EPMD_SHARED=$epmd_shared
TLS_PORT=$tls_port
EOF
  if [[ -n ${CLUSTER_COOKIE:-} ]]; then
    mkdir -p "$dir/home"
    (umask 077 && printf '%s' "$CLUSTER_COOKIE" >"$dir/home/.erlang.cookie")
    chmod 400 "$dir/home/.erlang.cookie"
  fi
fi
# shellcheck disable=SC1091
source "$dir/env"

mkdir -p "$dir/mnesia" "$dir/log" "$dir/home"
: >"$dir/enabled_plugins.conf"
[[ -f "$dir/enabled_plugins" ]] || echo "[]." >"$dir/enabled_plugins"
make_tls() {  # a CA, a server certificate for localhost/127.0.0.1 and a client certificate
  local t="$dir/tls" who
  mkdir -p "$t"
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=blacktree test CA" \
    -keyout "$t/ca.key" -out "$t/ca.pem" >/dev/null 2>&1
  # No IP entry: connecting to 127.0.0.1 by address is how the tests provoke a host name mismatch.
  printf 'subjectAltName=DNS:localhost\n' >"$t/ext.cnf"
  for who in server client; do
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout "$t/$who.key" -out "$t/$who.csr" >/dev/null 2>&1
    openssl x509 -req -in "$t/$who.csr" -CA "$t/ca.pem" -CAkey "$t/ca.key" -CAcreateserial -days 30 \
      -extfile "$t/ext.cnf" -out "$t/$who.pem" >/dev/null 2>&1
  done
  chmod 644 "$t"/*.key
}

if [[ ! -f "$dir/rabbitmq.conf" ]]; then
  {
    echo "listeners.tcp.1 = 127.0.0.1:$AMQP_PORT"
    echo "loopback_users = none"
    if [[ -n ${TLS_PORT:-} ]]; then
      make_tls
      echo "listeners.ssl.1 = 127.0.0.1:$TLS_PORT"
      echo "ssl_options.cacertfile = $dir/tls/ca.pem"
      echo "ssl_options.certfile = $dir/tls/server.pem"
      echo "ssl_options.keyfile = $dir/tls/server.key"
      echo "ssl_options.verify = verify_none"
      echo "ssl_options.fail_if_no_peer_cert = false"
    fi
  } >"$dir/rabbitmq.conf"
fi

export HOME="$dir/home"  # the Erlang cookie lives here, private to this node
export RABBITMQ_CONF_ENV_FILE="$dir/enabled_plugins.conf"  # an empty file: ignore /etc/rabbitmq/rabbitmq-env.conf
export RABBITMQ_CONFIG_FILE="$dir/rabbitmq"  # -> $dir/rabbitmq.conf
export RABBITMQ_ADVANCED_CONFIG_FILE="$dir/advanced.config"
export RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins"
export RABBITMQ_MNESIA_BASE="$dir/mnesia"
export RABBITMQ_LOG_BASE="$dir/log"
export RABBITMQ_PID_FILE="$dir/rabbitmq.pid"
export RABBITMQ_NODENAME="$NODE_NAME"
export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
export RABBITMQ_NODE_PORT="$AMQP_PORT"
export RABBITMQ_DIST_PORT="$DIST_PORT"
export ERL_EPMD_PORT="$EPMD_PORT"
export ERL_EPMD_ADDRESS=127.0.0.1

ctl() { "$RABBIT_BIN/rabbitmqctl" -q -n "$NODE_NAME" "$@"; }

# The CLI tools start an epmd on EPMD_PORT when none runs; it serves only
# this node, unless the port is a cluster's (then the cluster script ends it).
kill_epmd() {
  [[ ${EPMD_SHARED:-0} == 1 ]] || epmd -port "$EPMD_PORT" -kill >/dev/null 2>&1 || true
}

failed_start() {
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  # A port picked free was taken meanwhile by another process: on a node's
  # first start (nothing depends on its ports yet), pick new ones, twice at most.
  local try=${RABBITMQ_START_TRY:-1}
  if ((fresh_env == 1 && try < 3)) && grep -rqi eaddrinuse "$dir/log" 2>/dev/null; then
    echo "rabbitmq.sh: a port was taken meanwhile (eaddrinuse); starting with new ports" >&2
    kill_epmd
    rm -rf "$dir/env" "$dir/mnesia" "$dir/log"
    RABBITMQ_START_TRY=$((try + 1)) exec bash "$0" start "$dir"
  fi
  echo "rabbitmq.sh: $1; see $dir/log" >&2
  tail -n 20 "$dir/log/server.out" >&2 || true
  kill_epmd
  exit 1
}

node_pid() {  # the broker's OS pid, if it runs
  [[ -f "$dir/rabbitmq.pid" ]] || return 1
  local pid
  pid=$(cat "$dir/rabbitmq.pid" 2>/dev/null) || return 1
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

case $cmd in
  start)
    if node_pid >/dev/null; then
      echo "rabbitmq.sh: node $NODE_NAME already runs in $dir" >&2
      exit 1
    fi
    rm -f "$dir/rabbitmq.pid"
    "$RABBIT_BIN/rabbitmq-server" </dev/null >>"$dir/log/server.out" 2>&1 &
    server_pid=$!
    # Ask the node itself: `await_startup` returns once the broker has fully
    # booted, and fails at once while the Erlang node is not up yet.
    deadline=$((SECONDS + START_TIMEOUT))
    until ctl await_startup --timeout 10 >/dev/null 2>&1; do
      kill -0 "$server_pid" 2>/dev/null || failed_start "rabbitmq-server exited during start-up"
      ((SECONDS < deadline)) || failed_start "node $NODE_NAME not up after ${START_TIMEOUT}s"
      sleep 0.5  # between questions to the node, not instead of them
    done
    "$RABBIT_BIN/rabbitmq-diagnostics" -q -n "$NODE_NAME" check_port_connectivity >/dev/null
    [[ -z ${TLS_PORT:-} ]] || echo "$TLS_PORT" >"$dir/tls_port"
    echo "$AMQP_PORT" >"$dir/port"
    echo "amqp://guest:guest@127.0.0.1:$AMQP_PORT/" >"$dir/url"
    ;;
  stop)
    if pid=$(node_pid); then
      # `stop <pidfile>` returns once the OS process has exited.
      ctl stop "$dir/rabbitmq.pid" >/dev/null 2>&1 || kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/rabbitmq.pid"
    kill_epmd
    ;;
  ctl)
    ctl "$@"
    ;;
  queues)
    "$RABBIT_BIN/rabbitmq-queues" -q -n "$NODE_NAME" "$@"
    ;;
  *)
    usage
    ;;
esac
