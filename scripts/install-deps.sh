#!/usr/bin/env bash
# Installs everything blacktree needs to build and test on Debian 12, as root.
# Safe to run again: apt-get skips what is already installed.
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
  echo "install-deps.sh: run as root (it calls apt-get)" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive

# Build toolchain and the libraries the core, adapters and services link.
packages=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  libasio-dev libfmt-dev libspdlog-dev libyaml-cpp-dev libcli11-dev
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  librabbitmq-dev libcpp-httplib-dev
  # The worker's JSON (a credential helper's reply, docker's config.json):
  # saves a hand-written parser and formatter. Header-only, build time only.
  nlohmann-json3-dev
  catch2
  # Real servers and tools the integration tests (and the main job) run.
  rabbitmq-server amqp-tools
  git buildah skopeo docker-registry apache2-utils busybox-static tar curl
  python3 python3-pytest python3-pytest-timeout python3-pika python3-grpcio python3-protobuf
  # The dashboard's browser test: Debian's headless Chromium, driven through
  # chromedriver's WebDriver HTTP API.
  chromium chromium-driver
  # promtool checks deploy/prometheus/ and a real prometheus scrapes both services (test_prometheus.py).
  prometheus
  # A build's network box (--build-network private): a network namespace per
  # build (unshare, from util-linux), routes in it (ip), user-mode NAT out.
  slirp4netns iproute2 util-linux
  # A rootless worker's box: its own user namespace mapped from /etc/subuid.
  uidmap
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  apt-get update
  apt-get install -y --no-install-recommends "${missing[@]}"
  # Debian enables and starts the prometheus service it installs (on 9090, the
  # orchestrator's default ops port); the tests run their own, so one this
  # script installed does not stay running.
  if [[ " ${missing[*]} " == *" prometheus "* && -d /run/systemd/system ]]; then
    systemctl disable --now prometheus.service || true
  fi
else
  echo "install-deps.sh: all ${#packages[@]} packages already installed"
fi

# The rootless-worker test (pipeline, [rootless]) runs part of itself as this
# user: no login, a subordinate id range of its own, as a rootless buildah
# user needs.
if ! id blacktree-rootless >/dev/null 2>&1; then
  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin blacktree-rootless
fi
grep -q '^blacktree-rootless:' /etc/subuid || usermod --add-subuids 524288-589823 blacktree-rootless
grep -q '^blacktree-rootless:' /etc/subgid || usermod --add-subgids 524288-589823 blacktree-rootless
# slirp4netns opens /dev/net/tun as the worker's user. Debian's udev makes it
# 0666; some containers leave it 0600, which a rootless worker cannot open.
if [[ -c /dev/net/tun ]]; then chmod 0666 /dev/net/tun; fi
