#!/usr/bin/env bash
# blacktree's test command (the README's; CI runs it through .ci/run).
#
#   1. scripts/install-deps.sh (as root; skipped with a note otherwise)
#   2. build/       Ninja, RelWithDebInfo, unity build, -Werror: everything, then all of ctest
#                   (unit, stress, example and consumer tests; header checks are
#                   compiled as part of the build)
#   3. build-tsan/  ThreadSanitizer build of the unit tests only, running the
#                   tests labelled unit and stress
#
# Exits non-zero at the first failure and says which phase failed.
# Environment:
#   BUILD_DIR (build)  TSAN_BUILD_DIR (build-tsan)  JOBS (2)
#   SKIP_DEPS=1        do not run install-deps.sh
#   SKIP_TSAN=1        stop after the main build's tests
#   BLACKTREE_STRESS_JOBS  jobs per stress run (the test's own default otherwise)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

BUILD_DIR=${BUILD_DIR:-build}
TSAN_BUILD_DIR=${TSAN_BUILD_DIR:-build-tsan}
JOBS=${JOBS:-2}

phase="startup"
started=$SECONDS
on_exit() {
  local rc=$?
  if ((rc != 0)); then
    echo "test.sh: FAILED in phase '${phase}' (exit status ${rc}) after $((SECONDS - started))s" >&2
  else
    echo "test.sh: all phases passed in $((SECONDS - started))s"
  fi
}
trap on_exit EXIT

begin() {
  phase=$1
  echo
  echo "==> [${phase}] ($((SECONDS - started))s)"
}

begin "install-deps"
if [[ ${SKIP_DEPS:-0} == 1 ]]; then
  echo "SKIP_DEPS=1: not running scripts/install-deps.sh"
elif [[ $(id -u) -eq 0 ]]; then
  bash scripts/install-deps.sh
else
  echo "not root: skipping scripts/install-deps.sh (run it as root once, or set SKIP_DEPS=1)"
fi

begin "configure ${BUILD_DIR}"
cmake -S . -B "${BUILD_DIR}" -G Ninja \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_UNITY_BUILD=ON \
  -DBLACKTREE_WERROR=ON

begin "build ${BUILD_DIR}"
cmake --build "${BUILD_DIR}" --parallel "${JOBS}"

begin "ctest ${BUILD_DIR}"
ctest --test-dir "${BUILD_DIR}" --output-on-failure --no-tests=error --parallel "${JOBS}"

if [[ ${SKIP_TSAN:-0} == 1 ]]; then
  echo "SKIP_TSAN=1: skipping the ThreadSanitizer phases"
  exit 0
fi

# GCC 12's ThreadSanitizer cannot map its shadow memory when the kernel
# randomizes mmap with more than 28 bits (vm.mmap_rnd_bits=32 on recent
# kernels): the instrumented binary dies at startup with "unexpected memory
# mapping". Running without ASLR avoids that; the setting is inherited by the
# build (which runs the test binary to list its tests) and by ctest.
tsan_wrap=()
if setarch "$(uname -m)" -R true 2>/dev/null; then
  tsan_wrap=(setarch "$(uname -m)" -R)
else
  echo "note: cannot disable ASLR (setarch -R); TSan may fail to start on kernels with mmap_rnd_bits > 28"
fi
export TSAN_OPTIONS=${TSAN_OPTIONS:-"halt_on_error=1 second_deadlock_stack=1"}

begin "configure ${TSAN_BUILD_DIR} (ThreadSanitizer)"
# Examples, consumer tests and services are left out: this phase is about races
# in the core, which the unit and stress tests exercise.
cmake -S . -B "${TSAN_BUILD_DIR}" -G Ninja \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_UNITY_BUILD=ON \
  -DBLACKTREE_SANITIZE=thread \
  -DBLACKTREE_BUILD_EXAMPLES=OFF \
  -DBLACKTREE_CONSUMER_TESTS=OFF \
  -DBLACKTREE_BUILD_SERVICES=OFF \
  -DBLACKTREE_INSTALL=OFF

begin "build ${TSAN_BUILD_DIR} (ThreadSanitizer)"
"${tsan_wrap[@]}" cmake --build "${TSAN_BUILD_DIR}" --parallel "${JOBS}" --target blacktree_tests

begin "ctest ${TSAN_BUILD_DIR} (ThreadSanitizer: unit + stress)"
"${tsan_wrap[@]}" ctest --test-dir "${TSAN_BUILD_DIR}" --output-on-failure --no-tests=error \
  --parallel "${JOBS}" --label-regex '^(unit|stress)$'

phase="done"
