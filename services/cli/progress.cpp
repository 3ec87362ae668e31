// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#include "progress.hpp"

#include <blacktree/wire/wire.hpp>

#include <fmt/format.h>

#include <sys/ioctl.h>
#include <unistd.h>

namespace blacktree::cli {

std::string phase_name(v1::Phase phase) {
  if (phase == v1::PHASE_UNSPECIFIED) return "unknown";
  return std::string(wire::phase_name(phase));
}

std::string printable(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (const char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (ch == '\t' || (c >= 0x20 && c != 0x7f)) out += ch;
  }
  return out;
}

ProgressDisplay::ProgressDisplay(std::FILE* out, Style style, std::string job_id)
    : out_(out), style_(style), job_id_(std::move(job_id)) {
  if (style_ == Style::live) draw_status();
}

void ProgressDisplay::on_event(const v1::JobEvent& event) {
  const std::string phase = phase_name(event.phase());
  const bool phase_changed = phase != phase_;
  phase_ = phase;
  if (!event.worker_id().empty()) worker_id_ = event.worker_id();
  const std::string line = printable(event.line());

  if (style_ == Style::live) {
    if (!line.empty()) {
      clear_status();
      fmt::print(out_, "{}\n", line);
      ++lines_shown_;
    }
    draw_status();
    return;
  }
  const bool tagged = style_ == Style::tagged;
  if (!line.empty()) {
    if (tagged) fmt::print(out_, "[{}] ", phase_);
    fmt::print(out_, "{}\n", line);
    ++lines_shown_;
  } else if (tagged && phase_changed && !event.has_result()) {  // the summary reports the end
    fmt::print(out_, "[{}]{}\n", phase_, worker_id_.empty() ? "" : " on worker " + worker_id_);
  }
  std::fflush(out_);
}

void ProgressDisplay::tick() {
  if (style_ != Style::live) return;
  ++spinner_;
  draw_status();
}

void ProgressDisplay::finish() {
  if (style_ == Style::live) clear_status();
  std::fflush(out_);
}

void ProgressDisplay::clear_status() {
  if (!status_drawn_) return;
  std::fputs("\r\033[K", out_);
  status_drawn_ = false;
}

void ProgressDisplay::draw_status() {
  static constexpr const char* frames[] = {"|", "/", "-", "\\"};
  const auto elapsed =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - started_).count();
  std::string status = fmt::format("{} {:<9} {:02}:{:02}  job {}{}", frames[spinner_ % 4], phase_, elapsed / 60,
                                   elapsed % 60, job_id_, worker_id_.empty() ? "" : " on " + worker_id_);
  // One line only: a status wider than the terminal would wrap and "\r" would
  // then redraw just its last row.
  winsize size{};
  if (::ioctl(::fileno(out_), TIOCGWINSZ, &size) == 0 && size.ws_col > 1 && status.size() >= size.ws_col)
    status.resize(size.ws_col - 1);
  fmt::print(out_, "\r\033[K{}", status);
  std::fflush(out_);
  status_drawn_ = true;
}

}  // namespace blacktree::cli
