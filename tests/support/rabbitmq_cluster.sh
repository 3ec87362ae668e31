#!/usr/bin/env bash
# Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#
# A throwaway RabbitMQ cluster for tests: N nodes (default 3) on 127.0.0.1,
# each a node of tests/support/rabbitmq.sh in <dir>/node<i> (its own name,
# ports, data and logs), sharing one Erlang cookie and one epmd of their own,
# joined into one cluster with `rabbitmqctl join_cluster`.
#
#   rabbitmq_cluster.sh start <dir> [n]       start n nodes (default 3) and cluster them, or
#                                             after `stop`, start the same nodes again; returns
#                                             once every node runs and sees all n as running
#   rabbitmq_cluster.sh stop <dir>            stop every node and the cluster's epmd (<dir> is kept)
#   rabbitmq_cluster.sh stop-node <dir> <i>   stop node i (1..n); the others go on
#   rabbitmq_cluster.sh start-node <dir> <i>  start node i again; returns once it is back in
#                                             the cluster (every node running, as node i sees it)
#   rabbitmq_cluster.sh ctl <dir> <i> ARGS    rabbitmqctl ARGS against node i
#   rabbitmq_cluster.sh queues <dir> <i> ARGS rabbitmq-queues ARGS against node i
#                                             (e.g. `quorum_status execute.queue`)
#
# After `start`, <dir> holds:
#   urls     the nodes' AMQP URLs, comma-separated, node 1 first (what --mq-url / MQ_URL take)
#   ports    the nodes' AMQP ports, one a line (line i: node i)
#   names    the nodes' Erlang names, one a line (as `cluster_status` and `list_queues leader` name them)
#   n        the number of nodes
#   node<i>/ node i's directory (see rabbitmq.sh: port, url, log/ ...)
#
# Exit status 0 on success; otherwise a message on stderr. Needs what
# rabbitmq.sh needs. Every wait asks the nodes (await_startup,
# cluster_status) until a deadline; none is a bare sleep.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
NODE_SH="$HERE/rabbitmq.sh"
CLUSTER_TIMEOUT=${RABBITMQ_CLUSTER_TIMEOUT:-120}

usage() {
  sed -n '4,29p' "$0" >&2
  exit 2
}

[[ $# -ge 2 ]] || usage
cmd=$1
dir=$2
shift 2
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

die() {
  echo "rabbitmq_cluster.sh: $*" >&2
  exit 1
}

node_count() {
  [[ -f "$dir/n" ]] || die "no cluster was ever started in $dir"
  cat "$dir/n"
}

node_index() {  # checks that $1 names a node of the cluster
  local n
  n=$(node_count)
  if ! [[ $1 =~ ^[0-9]+$ ]] || (($1 < 1 || $1 > n)); then die "node '$1': it must be 1 to $n"; fi
}

name_of() { sed -n "${1}p" "$dir/names"; }

# How many nodes node $1 sees running in its cluster (0 when it cannot be asked).
running_seen_by() {
  "$NODE_SH" ctl "$dir/node$1" cluster_status --formatter json 2>/dev/null |
    python3 -c 'import json, sys; print(len(json.load(sys.stdin).get("running_nodes", [])))' 2>/dev/null || echo 0
}

# Waits until node $1 sees $2 nodes running, or fails after CLUSTER_TIMEOUT.
await_running() {
  local deadline=$((SECONDS + CLUSTER_TIMEOUT)) seen
  while :; do
    seen=$(running_seen_by "$1")
    ((seen == $2)) && return 0
    ((SECONDS < deadline)) || die "node $1 sees $seen running nodes, not $2, after ${CLUSTER_TIMEOUT}s; see $dir/node$1/log"
    sleep 0.5  # between questions to the node, not instead of them
  done
}

# Starts nodes "$@" side by side (a clustered node waits for its peers while it boots).
start_nodes() {
  local i pids=() failed=0
  for i in "$@"; do
    "$NODE_SH" start "$dir/node$i" >/dev/null &
    pids+=($!)
  done
  for i in "${pids[@]}"; do wait "$i" || failed=1; done
  ((failed == 0)) || die "a node did not start; see $dir/node*/log"
}

write_files() {
  local n=$1 i urls=""
  : >"$dir/ports"
  for i in $(seq 1 "$n"); do
    cat "$dir/node$i/port" >>"$dir/ports"
    urls+="${urls:+,}$(cat "$dir/node$i/url")"
  done
  echo "$urls" >"$dir/urls"
}

case $cmd in
  start)
    if [[ -f "$dir/n" ]]; then  # the same nodes again, all at once
      n=$(cat "$dir/n")
      start_nodes $(seq 1 "$n")
      for i in $(seq 1 "$n"); do await_running "$i" "$n"; done
      write_files "$n"
      exit 0
    fi
    n=${1:-3}
    if ! [[ $n =~ ^[0-9]+$ ]] || ((n < 1)); then die "n '$n': it must be a number of nodes, 1 or more"; fi
    id="bt$$-$RANDOM"
    export CLUSTER_EPMD_PORT
    CLUSTER_EPMD_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    export CLUSTER_COOKIE
    CLUSTER_COOKIE=$(python3 -c 'import secrets; print(secrets.token_hex(20).upper())')
    echo "$CLUSTER_EPMD_PORT" >"$dir/epmd_port"
    : >"$dir/names"
    pids=()
    for i in $(seq 1 "$n"); do  # side by side: each boots on its own first
      mkdir -p "$dir/node$i"
      CLUSTER_NODE_NAME="$id-$i@localhost" "$NODE_SH" start "$dir/node$i" >/dev/null &
      pids+=($!)
      echo "$id-$i@localhost" >>"$dir/names"
    done
    echo "$n" >"$dir/n"
    failed=0
    for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
    ((failed == 0)) || die "a node did not start; see $dir/node*/log"
    # Nodes 2..n join node 1: stop_app, join_cluster, start_app.
    first=$(name_of 1)
    for i in $(seq 2 "$n"); do
      "$NODE_SH" ctl "$dir/node$i" stop_app >/dev/null
      "$NODE_SH" ctl "$dir/node$i" join_cluster "$first" >/dev/null || die "node $i could not join $first"
      "$NODE_SH" ctl "$dir/node$i" start_app >/dev/null
      "$NODE_SH" ctl "$dir/node$i" await_startup --timeout "$CLUSTER_TIMEOUT" >/dev/null
    done
    for i in $(seq 1 "$n"); do await_running "$i" "$n"; done
    write_files "$n"
    ;;
  stop)
    [[ -f "$dir/n" ]] || exit 0  # nothing ever ran here
    n=$(cat "$dir/n")
    for i in $(seq "$n" -1 1); do "$NODE_SH" stop "$dir/node$i"; done
    epmd -port "$(cat "$dir/epmd_port")" -kill >/dev/null 2>&1 || true
    ;;
  stop-node)
    [[ $# -ge 1 ]] || usage
    node_index "$1"
    "$NODE_SH" stop "$dir/node$1"
    ;;
  start-node)
    [[ $# -ge 1 ]] || usage
    node_index "$1"
    n=$(node_count)
    start_nodes "$1"
    # Back in the cluster: it sees every node running (those that run).
    running=0
    for i in $(seq 1 "$n"); do
      if [[ -f "$dir/node$i/rabbitmq.pid" ]] && kill -0 "$(cat "$dir/node$i/rabbitmq.pid")" 2>/dev/null; then
        running=$((running + 1))
      fi
    done
    await_running "$1" "$running"
    ;;
  ctl)
    [[ $# -ge 1 ]] || usage
    node_index "$1"
    i=$1
    shift
    "$NODE_SH" ctl "$dir/node$i" "$@"
    ;;
  queues)
    [[ $# -ge 1 ]] || usage
    node_index "$1"
    i=$1
    shift
    "$NODE_SH" queues "$dir/node$i" "$@"
    ;;
  *)
    usage
    ;;
esac
