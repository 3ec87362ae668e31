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
  # A build's network box (--build-network private): a network namespace per
  # build (unshare, from util-linux), routes in it (ip), user-mode NAT out.
  slirp4netns iproute2 util-linux
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  apt-get update
  apt-get install -y --no-install-recommends "${missing[@]}"
else
  echo "install-deps.sh: all ${#packages[@]} packages already installed"
fi
