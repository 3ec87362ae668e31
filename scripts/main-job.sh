#!/usr/bin/env bash
# Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#
# The main job (README command 1): on a fresh Debian 12 machine as root, one
# real build job through the whole system.
#   1. install what is missing (scripts/install-deps.sh), build;
#   2. scripts/stack.sh up: RabbitMQ, a registry with htpasswd auth, a git
#      server holding examples/sample-app, the orchestrator, two workers in
#      regions eu-west and us-east, gRPC between them over mutual TLS with a
#      throwaway CA (scripts/make-certs.sh);
#   3. `blacktree submit --wait` a job for the sample app (region eu-west),
#      showing its progress live;
#   4. print the final status and the digest the registry reports for the image;
#   5. say how to submit your own job, see the workers, read the metrics, stop.
# Running it again restarts the stack it started; it touches nothing else.
# Environment: BUILD_DIR (build), JOBS (2), SKIP_DEPS=1, SKIP_BUILD=1,
# BLACKTREE_STACK_DIR (/var/tmp/blacktree-stack).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-2}
export BUILD_DIR
phase="startup"
trap 'rc=$?; ((rc == 0)) || echo "main-job.sh: FAILED in phase ${phase} (exit status ${rc}); logs: ${BLACKTREE_STACK_DIR:-/var/tmp/blacktree-stack}/logs" >&2' EXIT

phase="install-deps"
if [[ ${SKIP_DEPS:-0} == 1 ]]; then
  echo "SKIP_DEPS=1: not running scripts/install-deps.sh"
elif [[ $(id -u) -eq 0 ]]; then
  bash scripts/install-deps.sh
else
  echo "not root: skipping scripts/install-deps.sh (run it as root once, or set SKIP_DEPS=1)"
fi

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
  phase="build"
  # Same directory and options as scripts/test.sh, so the two share one build.
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBLACKTREE_WERROR=ON >/dev/null
  cmake --build "$BUILD_DIR" --parallel "$JOBS" --target blacktree_orchestrator blacktree_worker_service blacktree_cli
fi

phase="start the stack"
bash scripts/stack.sh up
# shellcheck disable=SC1090
source <(bash scripts/stack.sh env)
BT="$BUILD_DIR/services/blacktree"

phase="submit"
echo
echo "==> submitting a build of the sample app (region eu-west) and following it"
job_id="demo-$(date +%s)-$RANDOM"
export MQ_URL
GITHUB_TOKEN=$(cat "$GITHUB_TOKEN_FILE") "$BT" submit --job-id "$job_id" --repo "$REPO_URL" --branch main \
  --dockerfile Dockerfile --context . --image sample-app:demo --region eu-west --wait | tee "$STACK_DIR/last-job.txt"

phase="check the registry"
digest=$(sed -n 's/^digest: *//p' "$STACK_DIR/last-job.txt" | tail -1)
[[ -n $digest ]] || { echo "no digest in the job's status" >&2; exit 1; }
registry_digest=$(skopeo inspect --tls-verify=false --creds "$REGISTRY_USER:$(cat "$REGISTRY_PASSWORD_FILE")" \
  --format '{{.Digest}}' "docker://$REGISTRY/demo/sample-app@$digest")
echo
echo "==> the registry reports $REGISTRY/demo/sample-app@$registry_digest"
[[ $registry_digest == "$digest" ]] || { echo "the registry's digest differs from the status's" >&2; exit 1; }

phase="done"
cat <<TEXT

Everything is still running (state and logs in $STACK_DIR):
  submit your own job:  GITHUB_TOKEN=... MQ_URL=$MQ_URL $BT submit --repo OWNER/NAME --image NAME:TAG --wait
                        (the sample again: GITHUB_TOKEN=\$(cat $GITHUB_TOKEN_FILE) MQ_URL=$MQ_URL \\
                         $BT submit --repo $REPO_URL --image sample-app:v2 --region us-east --wait)
  see the workers:      $BT workers --orchestrator-addr $ORCHESTRATOR_ADDR \\
                          --tls-cert $BLACKTREE_TLS_CERT --tls-key $BLACKTREE_TLS_KEY --tls-ca $BLACKTREE_TLS_CA
  read the metrics:     curl $METRICS_URL
  stop everything:      bash scripts/stack.sh down
TEXT
