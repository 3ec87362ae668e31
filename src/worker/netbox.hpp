// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// The build step's network box (BuildNetwork): a network namespace of its
// own, with outbound access through slirp4netns in `private` mode, and no
// route to the worker host's addresses or link-local ones.

#include <blacktree/core/result.hpp>
#include <blacktree/worker/build_pipeline.hpp>
#include <blacktree/worker/process.hpp>

#include <string>
#include <vector>

namespace blacktree::worker::detail {

/// The destinations a boxed build has no route to: 169.254.0.0/16 (the cloud
/// metadata service), every IPv4 address of this host (other than loopback:
/// 127.0.0.1 in the box is the box's own), and `extra` (the operator's).
std::vector<std::string> blocked_destinations(const std::vector<std::string>& extra);

/// `build` wrapped so that it runs in a network namespace of its own: for
/// BuildNetwork::host, `build` unchanged.
ProcessSpec in_network_box(ProcessSpec build, const BuildPipelineConfig& config);

/// Whether the box's settings are valid (a pure check of the configuration).
core::Result<void> check_network_box(const BuildPipelineConfig& config);

/// Whether the configured box can be made on this host: makes one around
/// `true` (root or rootless alike), so a missing tool, subordinate id range
/// or device is found at start, not in a job; else why not.
core::Result<void> probe_network_box(const BuildPipelineConfig& config);

}  // namespace blacktree::worker::detail
