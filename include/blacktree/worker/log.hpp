// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// What a job's output becomes before anyone sees it: secrets redacted, and
// only a bounded tail kept for the final status (a build can print megabytes;
// a status message must stay small).

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace blacktree::worker {

/// Replaces every known secret in a text with "[redacted]". A secret is also
/// matched in its base64 forms (as it appears inside an HTTP Basic header or a
/// docker auth file, at any byte offset within the encoded text), so that a
/// tool echoing an encoded credential does not leak it either.
class Redactor {
 public:
  /// Adds `secret` and its base64 forms. Empty secrets are ignored; base64
  /// fragments shorter than 6 characters are not added (they would match
  /// ordinary text), so very short secrets are matched verbatim only.
  void add(std::string_view secret);

  /// `text` with every secret replaced.
  std::string apply(std::string_view text) const;

  bool empty() const noexcept { return patterns_.empty(); }

  /// The length of the longest text it replaces (0 when empty): a text cut
  /// into pieces is safe to emit up to this many bytes before the cut.
  std::size_t longest() const noexcept { return patterns_.empty() ? 0 : patterns_.front().size(); }

 private:
  std::vector<std::string> patterns_;  // longest first, so a longer form wins
};

/// Standard base64 (with '=' padding).
std::string base64_encode(std::string_view bytes);

/// The last `max_bytes` of a job's output, cut at line boundaries; when older
/// lines were dropped, text() starts with a line saying how much.
class LogTail {
 public:
  explicit LogTail(std::size_t max_bytes) : max_bytes_(max_bytes) {}

  /// Appends one line (a '\n' is added).
  void append(std::string_view line);

  /// The tail, with an "[... N bytes omitted ...]" first line if anything was dropped.
  std::string text() const;

 private:
  std::size_t max_bytes_;
  std::string buffer_;
  std::size_t omitted_ = 0;
};

}  // namespace blacktree::worker
