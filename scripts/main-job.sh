#!/usr/bin/env bash
# The project's main job (README command 1), for now: build the library and
# run the example that embeds it. Later issues replace this with starting the
# orchestrator and worker services.
# Environment: BUILD_DIR (build), JOBS (2), SKIP_DEPS=1 to not run install-deps.sh.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-2}

phase="startup"
trap 'rc=$?; ((rc == 0)) || echo "main-job.sh: FAILED in phase ${phase} (exit status ${rc})" >&2' EXIT

phase="install-deps"
if [[ ${SKIP_DEPS:-0} == 1 ]]; then
  echo "SKIP_DEPS=1: not running scripts/install-deps.sh"
elif [[ $(id -u) -eq 0 ]]; then
  bash scripts/install-deps.sh
else
  echo "not root: skipping scripts/install-deps.sh (run it as root once, or set SKIP_DEPS=1)"
fi

phase="configure"
# Same directory and options as scripts/test.sh, so the two share one build.
cmake -S . -B "${BUILD_DIR}" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBLACKTREE_WERROR=ON

phase="build"
cmake --build "${BUILD_DIR}" --parallel "${JOBS}" --target blacktree_example_local_process

phase="run example"
"${BUILD_DIR}/examples/blacktree_example_local_process"
