// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// A job's own directory under the worker's work root, and the clean-up of
// those a previous process left behind (killed mid-job: kill -9, power loss),
// credentials included. Both know the one naming rule: job-<id>-XXXXXX.

#include <blacktree/core/result.hpp>
#include <blacktree/worker/error.hpp>

#include <filesystem>
#include <string_view>
#include <system_error>
#include <vector>

namespace blacktree::worker {

/// Creates a fresh directory, mode 0700, `<work_root>/job-<id>-XXXXXX` (the
/// id cut to 40 characters, anything but [A-Za-z0-9_-] as '_'); creates
/// work_root if missing. Fails with errc::io_failed.
core::Result<std::filesystem::path> make_job_dir(const std::filesystem::path& work_root, std::string_view job_id);

/// One job directory remove_stale_job_dirs found; `error` set when it stayed.
struct StaleJobDir {
  std::filesystem::path path;
  std::error_code error;
};

/// Removes every job directory under `work_root` (those make_job_dir names).
/// Call it before any job runs: then every one is stale. A missing work_root
/// holds none.
std::vector<StaleJobDir> remove_stale_job_dirs(const std::filesystem::path& work_root);

}  // namespace blacktree::worker
