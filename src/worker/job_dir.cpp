// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#include <blacktree/worker/job_dir.hpp>

#include <fmt/format.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <string>

#include <stdlib.h>

namespace blacktree::worker {

namespace {
constexpr std::string_view prefix = "job-";
}

core::Result<std::filesystem::path> make_job_dir(const std::filesystem::path& work_root, std::string_view job_id) {
  std::error_code ec;
  std::filesystem::create_directories(work_root, ec);
  if (ec) {
    return core::Error{errc::io_failed, fmt::format("worker configuration: cannot create work_root {}: {}",
                                                    work_root.string(), ec.message())};
  }
  std::string safe_id;
  for (char c : job_id) {
    if (safe_id.size() >= 40) break;
    safe_id += (std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-' || c == '_') ? c : '_';
  }
  std::string templ = (work_root / fmt::format("{}{}-XXXXXX", prefix, safe_id)).string();
  if (::mkdtemp(templ.data()) == nullptr) {  // mkdtemp makes it 0700
    return core::Error{errc::io_failed, fmt::format("cannot create a job directory under {}: {}", work_root.string(),
                                                    std::strerror(errno))};
  }
  return std::filesystem::path(templ);
}

std::vector<StaleJobDir> remove_stale_job_dirs(const std::filesystem::path& work_root) {
  std::vector<StaleJobDir> found;
  std::error_code scan_error;
  for (const auto& entry : std::filesystem::directory_iterator(work_root, scan_error)) {
    if (!entry.is_directory() || entry.path().filename().string().rfind(prefix, 0) != 0) continue;
    StaleJobDir dir{entry.path(), {}};
    std::filesystem::remove_all(entry.path(), dir.error);
    found.push_back(std::move(dir));
  }
  return found;
}

}  // namespace blacktree::worker
