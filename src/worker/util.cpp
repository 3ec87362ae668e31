// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#include "util.hpp"

#include <blacktree/worker/error.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <sstream>
#include <utility>

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

bool registry_refused(const std::deque<std::string>& lines) {
  // The distribution API's error codes and messages, and containers/image's
  // "unexpected http code" form.
  return any_line_contains(lines, {"unauthorized", "authentication required", "access to the resource is denied",
                                   "401 Unauthorized", "403 Forbidden"});
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

std::vector<std::string> base_images(std::string_view dockerfile) {
  const auto lower = [](std::string s) {
    for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
  };
  // Logical lines: a trailing backslash continues the line.
  std::vector<std::string> lines;
  std::string current;
  std::size_t start = 0;
  while (start <= dockerfile.size()) {
    auto end = dockerfile.find('\n', start);
    if (end == std::string_view::npos) end = dockerfile.size();
    std::string_view line = dockerfile.substr(start, end - start);
    start = end + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    const auto first = line.find_first_not_of(" \t");
    if (first != std::string_view::npos && line[first] == '#') continue;  // a comment (or directive)
    if (!line.empty() && line.back() == '\\') {
      current.append(line.substr(0, line.size() - 1)).push_back(' ');
      continue;
    }
    current.append(line);
    lines.push_back(std::exchange(current, {}));
  }
  std::vector<std::string> images;
  std::vector<std::string> stages;
  for (const auto& line : lines) {
    std::istringstream words(line);
    std::string instruction;
    if (!(words >> instruction) || lower(instruction) != "from") continue;
    std::string image;
    while (words >> image && image.rfind("--", 0) == 0) image.clear();  // --platform=...
    if (image.empty()) continue;
    std::string as, stage;
    words >> as >> stage;
    const std::string key = lower(image);
    const bool earlier_stage = std::find(stages.begin(), stages.end(), key) != stages.end();
    if (lower(as) == "as" && !stage.empty()) stages.push_back(lower(stage));
    if (key == "scratch" || earlier_stage || image.find('$') != std::string::npos) continue;
    if (std::find(images.begin(), images.end(), image) == images.end()) images.push_back(image);
  }
  return images;
}

}  // namespace blacktree::worker::detail
