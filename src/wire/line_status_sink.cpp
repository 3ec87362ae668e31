// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#include <blacktree/wire/line_status_sink.hpp>

#include <blacktree/wire/wire.hpp>

#include <cerrno>
#include <string>

#include <unistd.h>

namespace blacktree::wire {

std::error_code LineStatusSink::write_line(const core::JobResult& result) {
  const std::string line = job_response_json(result) + "\n";
  std::lock_guard lock(mutex_);
  for (std::size_t written = 0; written < line.size();) {
    const auto n = ::write(fd_, line.data() + written, line.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      return {errno, std::system_category()};
    }
    written += static_cast<std::size_t>(n);
  }
  return {};
}

}  // namespace blacktree::wire
