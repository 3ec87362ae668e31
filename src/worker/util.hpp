// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// Internal to blacktree::worker: small helpers its runners share.

#include <blacktree/core/result.hpp>

#include <chrono>
#include <deque>
#include <filesystem>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

namespace blacktree::worker::detail {

/// "20s", "1.5s", "30m": durations in messages a person reads.
std::string format_duration(std::chrono::milliseconds d);

/// True when any of `lines` contains any of `needles` (a tool's output,
/// classified by what it says).
bool any_line_contains(const std::deque<std::string>& lines, std::initializer_list<std::string_view> needles);

/// True when a registry client's output says the registry refused the
/// credentials or the access (an HTTP 401 or 403). Status codes count only
/// with their reason phrase: a bare "401" also occurs inside the hex digests
/// of the blobs a push copies.
bool registry_refused(const std::deque<std::string>& lines);

/// Creates `path` with mode 0600 and `content`; fails (errc::io_failed) if it
/// exists or cannot be written.
core::Result<void> write_private_file(const std::filesystem::path& path, std::string_view content);

/// The base images a Dockerfile's FROM lines name, in order, once each: not
/// `scratch`, not an earlier stage (`FROM base AS build` ... `FROM build`),
/// and not a name that needs an ARG to be known (`FROM $BASE`).
std::vector<std::string> base_images(std::string_view dockerfile);

}  // namespace blacktree::worker::detail
