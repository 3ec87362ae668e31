// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// The build vocabulary: what blacktree's own worker builds, carried by the
// core as a job's opaque core::Payload. Header-only and dependent on the core
// alone, so that blacktree::wire maps the seed's JobRequest onto it without
// linking the worker library.

#include <blacktree/core/job.hpp>

#include <string>
#include <vector>
#include <map>
#include <string_view>

namespace blacktree::worker {

/// What blacktree's own worker builds (the seed's JobRequest fields).
/// A job carries it as `core::Payload(BuildSpec{...})`.
struct BuildSpec {
  std::string repo_url;  ///< `owner/name` (GitHub) or a full git URL
  std::string branch;
  std::string dockerfile_path;
  std::string context_dir;
  std::string image_name;
  core::Secret github_token;
  /// The JobRequest's `payload` extension: opaque text for runners whose
  /// jobs are not builds (ArgvRunner hands it on as BLACKTREE_JOB_PAYLOAD).
  std::string payload{};  // braced: a six-field initializer stays complete
  /// Build options (buildah bud --build-arg, --target, --label).
  std::map<std::string, std::string> build_args{};
  std::string target{};
  std::map<std::string, std::string> image_labels{};
  /// Names of build secrets the build may mount (RUN --mount=type=secret,id=NAME);
  /// the worker holds their values (BuildPipelineConfig::build_secrets).
  std::vector<std::string> build_secrets{};
};

/// The stages (ProgressEvent::stage) of a running build, in order.
namespace stage {
inline constexpr std::string_view cloning = "cloning";
inline constexpr std::string_view building = "building";
inline constexpr std::string_view pushing = "pushing";
}  // namespace stage

}  // namespace blacktree::worker
