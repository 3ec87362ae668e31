// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// What the pipeline benchmarks share: timing, medians, shell quoting, the
// pipeline's configuration against the test servers, and the image cache
// benchmark (cache.cpp).

#include <blacktree/worker/build_pipeline.hpp>

#include "pipeline_support.hpp"

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

namespace blacktree::bench {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const auto n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/// `s` in single quotes for /bin/sh.
inline std::string quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

/// A BuildPipelineRunner's configuration for jobs from `git`, pushed to
/// `registry` under `bench/`, working under `tmp` (whose registry-password
/// file holds the registry's password).
inline worker::BuildPipelineConfig pipeline_config(const std::filesystem::path& tmp, const test::GitServer& git,
                                                   const test::Registry& registry) {
  worker::BuildPipelineConfig cfg;
  cfg.work_root = tmp / "jobs";
  cfg.cache_dir = tmp / "cache";
  cfg.github_base_url = git.base_url();
  cfg.allow_http_repos = true;
  cfg.registry = registry.host() + "/bench";
  cfg.registry_tls_verify = false;
  cfg.credentials.kind = worker::RegistryCredentials::Kind::static_password;
  cfg.credentials.username = registry.user();
  cfg.credentials.password_file = tmp / "registry-password";
  return cfg;
}

/// The image cache benchmark: prints its figures and returns 0, or throws
/// what went wrong.
int run_cache_bench(int iterations);

}  // namespace blacktree::bench
