// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#include "netbox.hpp"

#include <blacktree/worker/error.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <string_view>

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <unistd.h>

namespace blacktree::worker::detail {

namespace {

// Runs in the worker's network namespace, inside the job's containment:
//   $1 mode (none | private), $2 slirp4netns, $3 destinations to block
//   (space-separated CIDRs), $4 "rootless" or "root", then the build's argv.
// The build side unshares a network namespace, says so through a FIFO, waits
// until slirp4netns (private) is attached, installs `unreachable` routes and
// becomes the build. The routes hold against the build's RUN steps: buildah
// runs them without CAP_NET_ADMIN. slirp4netns itself connects out from the
// host, so --disable-host-loopback keeps 10.0.2.2 from meaning the host's
// 127.0.0.1, and the routes keep the host's own addresses out of reach.
// Rootless, the network namespace belongs to a user namespace of its own,
// mapped as rootless buildah maps its own (the worker's uid as root, its
// subordinate ids from /etc/subuid and /etc/subgid above): buildah inside
// sees root and the ids it would have had, and slirp4netns joins the user
// namespace to reach the network one. A mount namespace of its own too:
// buildah, seeing root, mounts (its overlay store), which the user
// namespace may do only in a mount namespace it owns.
constexpr const char* box_script = R"sh(set -u
mode=$1 slirp=$2 blocked=$3 rootless=$4
shift 4
userns= slirp_userns=
[ "$rootless" = rootless ] && userns="--map-root-user --map-auto --mount"
dir=$(mktemp -d) || exit 1
mkfifo "$dir/netns" "$dir/go" "$dir/ready" || exit 1
unshare $userns --net -- sh -c '
  echo > "$0/netns"
  read -r go < "$0/go"; [ "$go" = go ] || exit 1
  ip link set lo up || exit 1
  for destination in $1; do ip route add unreachable "$destination" || exit 1; done
  shift
  exec "$@"' "$dir" "$blocked" "$@" &
build=$!
read -r _ < "$dir/netns"
[ "$rootless" = rootless ] && slirp_userns="--userns-path=/proc/$build/ns/user"
slirp_pid=
if [ "$mode" = private ]; then
  "$slirp" --configure --mtu=65520 --disable-host-loopback $slirp_userns --ready-fd=3 "$build" tap0 \
    3>"$dir/ready" >"$dir/slirp.log" 2>&1 &
  slirp_pid=$!
  read -r ready < "$dir/ready"
  if [ "$ready" != 1 ]; then
    echo "blacktree: slirp4netns could not give the build a network:" >&2
    cat "$dir/slirp.log" >&2
    kill "$build" 2>/dev/null
    wait "$build"
    exit 1
  fi
fi
echo go > "$dir/go"
status=0
wait "$build" || status=$?
[ -n "$slirp_pid" ] && kill "$slirp_pid" 2>/dev/null
rm -rf "$dir"
exit "$status"
)sh";

bool is_cidr_text(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || c == '.' || c == ':' ||
           c == '/';
  });
}

}  // namespace

std::vector<std::string> blocked_destinations(const std::vector<std::string>& extra) {
  std::vector<std::string> out{"169.254.0.0/16"};
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) == 0) {
    for (auto* a = list; a != nullptr; a = a->ifa_next) {
      if (a->ifa_addr == nullptr || a->ifa_addr->sa_family != AF_INET || (a->ifa_flags & IFF_LOOPBACK) != 0) continue;
      char text[INET_ADDRSTRLEN];
      ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(a->ifa_addr)->sin_addr, text, sizeof text);
      out.push_back(std::string(text) + "/32");
    }
    ::freeifaddrs(list);
  }
  for (const auto& e : extra) out.push_back(e);
  return out;
}

ProcessSpec in_network_box(ProcessSpec build, const BuildPipelineConfig& config) {
  if (config.build_network == BuildNetwork::host) return build;
  std::string blocked;
  for (const auto& d : blocked_destinations(config.build_network_blocked)) {
    if (!blocked.empty()) blocked += ' ';
    blocked += d;
  }
  std::vector<std::string> argv{"/bin/sh", "-c", box_script, "blacktree-build-network",
                                config.build_network == BuildNetwork::none ? "none" : "private",
                                config.slirp4netns_program, blocked, ::geteuid() == 0 ? "root" : "rootless"};
  argv.insert(argv.end(), build.argv.begin(), build.argv.end());
  build.argv = std::move(argv);
  return build;
}

core::Result<void> check_network_box(const BuildPipelineConfig& config) {
  const auto misconfigured = [](std::string why) { return core::Error{errc::misconfigured, std::move(why)}; };
  for (const auto& d : config.build_network_blocked) {
    if (!is_cidr_text(d)) {
      return misconfigured(fmt::format("build_network_blocked: entry {} of {} is not an address or CIDR",
                                       &d - config.build_network_blocked.data() + 1,
                                       config.build_network_blocked.size()));
    }
  }
  if (config.build_network == BuildNetwork::host) return {};
  return {};
}

core::Result<void> probe_network_box(const BuildPipelineConfig& config) {
  if (config.build_network == BuildNetwork::host) return {};
  ProcessSpec probe;
  probe.argv = {"true"};
  probe.env = minimal_environment();
  probe.timeout = std::chrono::seconds(30);
  probe = in_network_box(std::move(probe), config);
  std::string output;
  const auto outcome = run_process(probe, [&](std::string_view line) {
    if (output.size() < 2048) output.append(line).append(" ");
  });
  if (outcome.ok()) return {};
  if (!output.empty()) output.pop_back();
  return core::Error{
      errc::misconfigured,
      fmt::format("build_network {}: cannot make the build's network box on this host ({}{}). It needs unshare and ip "
                  "(iproute2){}{}. build_network host needs no box: for trusted Dockerfiles only",
                  config.build_network == BuildNetwork::none ? "none" : "private", outcome.describe(),
                  output.empty() ? "" : ", it said: " + output,
                  config.build_network == BuildNetwork::private_network
                      ? ", slirp4netns_program and a /dev/net/tun this user may read and write"
                      : "",
                  ::geteuid() == 0 ? ""
                                   : "; rootless, also newuidmap/newgidmap and subordinate ids for this user in "
                                     "/etc/subuid and /etc/subgid")};
}

}  // namespace blacktree::worker::detail
