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

namespace blacktree::worker::detail {

/// "20s", "1.5s", "30m": durations in messages a person reads.
std::string format_duration(std::chrono::milliseconds d);

/// True when any of `lines` contains any of `needles` (a tool's output,
/// classified by what it says).
bool any_line_contains(const std::deque<std::string>& lines, std::initializer_list<std::string_view> needles);

/// Creates `path` with mode 0600 and `content`; fails (errc::io_failed) if it
/// exists or cannot be written.
core::Result<void> write_private_file(const std::filesystem::path& path, std::string_view content);

}  // namespace blacktree::worker::detail
