// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#include "util.hpp"

#include <blacktree/worker/error.hpp>

#include <fmt/format.h>

#include <cerrno>
#include <cstring>

#include <fcntl.h>
#include <unistd.h>

namespace blacktree::worker::detail {

std::string format_duration(std::chrono::milliseconds d) {
  const auto s = d.count() / 1000;
  if (d.count() % 1000 != 0) return fmt::format("{:.1f}s", static_cast<double>(d.count()) / 1000.0);
  if (s % 60 == 0 && s >= 60) return fmt::format("{}m", s / 60);
  return fmt::format("{}s", s);
}

bool any_line_contains(const std::deque<std::string>& lines, std::initializer_list<std::string_view> needles) {
  for (const auto& line : lines) {
    for (auto n : needles) {
      if (line.find(n) != std::string::npos) return true;
    }
  }
  return false;
}

core::Result<void> write_private_file(const std::filesystem::path& path, std::string_view content) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    return core::Error{errc::io_failed, fmt::format("cannot create {}: {}", path.string(), std::strerror(errno))};
  }
  std::size_t done = 0;
  while (done < content.size()) {
    const ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      const std::string err = std::strerror(errno);
      ::close(fd);
      return core::Error{errc::io_failed, fmt::format("cannot write {}: {}", path.string(), err)};
    }
    done += static_cast<std::size_t>(n);
  }
  ::close(fd);
  return {};
}

}  // namespace blacktree::worker::detail
