// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#include <blacktree/worker/log.hpp>

#include <fmt/format.h>

#include <algorithm>

namespace blacktree::worker {

std::string base64_encode(std::string_view bytes) {
  static constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    const unsigned v = (static_cast<unsigned char>(bytes[i]) << 16) |
                       (static_cast<unsigned char>(bytes[i + 1]) << 8) | static_cast<unsigned char>(bytes[i + 2]);
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    out += alphabet[(v >> 6) & 63];
    out += alphabet[v & 63];
  }
  const std::size_t rest = bytes.size() - i;
  if (rest > 0) {
    unsigned v = static_cast<unsigned char>(bytes[i]) << 16;
    if (rest == 2) v |= static_cast<unsigned char>(bytes[i + 1]) << 8;
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    out += rest == 2 ? alphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

void Redactor::add(std::string_view secret) {
  if (secret.empty()) return;
  const auto add_pattern = [this](std::string p) {
    if (std::find(patterns_.begin(), patterns_.end(), p) == patterns_.end()) patterns_.push_back(std::move(p));
  };
  add_pattern(std::string(secret));
  add_pattern(base64_encode(secret));
  // Inside a longer encoded text (e.g. base64("user:" + password)) the secret
  // starts at byte offset 0, 1 or 2 of a 3-byte group. For each alignment keep
  // only the characters that depend on the secret's bytes alone.
  for (std::size_t shift = 0; shift < 3; ++shift) {
    const std::string padded = std::string(shift, '\0') + std::string(secret);
    const std::string enc = base64_encode(padded);
    const std::size_t full_chars = padded.size() / 3 * 4;  // chars of complete groups
    const std::size_t drop_front = shift == 0 ? 0 : shift + 1;
    if (full_chars <= drop_front) continue;
    std::string fragment = enc.substr(drop_front, full_chars - drop_front);
    if (fragment.size() >= 6) add_pattern(std::move(fragment));
  }
  std::sort(patterns_.begin(), patterns_.end(),
            [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
}

std::string Redactor::apply(std::string_view text) const {
  std::string out(text);
  for (const auto& pattern : patterns_) {
    std::size_t pos = 0;
    while ((pos = out.find(pattern, pos)) != std::string::npos) {
      out.replace(pos, pattern.size(), "[redacted]");
      pos += 10;
    }
  }
  return out;
}

void LogTail::append(std::string_view line) {
  buffer_.append(line);
  buffer_ += '\n';
  if (buffer_.size() <= max_bytes_) return;
  // Drop whole lines from the front; when only the newest line is left and
  // it alone is too long, keep its end.
  const std::size_t excess = buffer_.size() - max_bytes_;
  std::size_t cut = buffer_.find('\n', excess - 1) + 1;  // the buffer ends in '\n': always found
  if (cut >= buffer_.size()) cut = excess;
  omitted_ += cut;
  buffer_.erase(0, cut);
}

std::string LogTail::text() const {
  if (omitted_ == 0) return buffer_;
  return fmt::format("[... {} bytes omitted ...]\n{}", omitted_, buffer_);
}

}  // namespace blacktree::worker
