// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// Internal to blacktree::worker: the clone of a build job, and what git's
// output says when it fails.

#include <blacktree/core/result.hpp>
#include <blacktree/worker/build_pipeline.hpp>

#include <deque>
#include <filesystem>
#include <string>
#include <string_view>

namespace blacktree::worker::detail {

/// A shallow single-branch clone of `location` into `into`, with no prompts,
/// no system or user configuration, only the allowed protocols, and the
/// token (if any) as an HTTP header scoped to the repository's origin,
/// passed through the environment: never in argv, the URL or .git/config.
ProcessSpec git_clone_command(const BuildPipelineConfig& config, const BuildSpec& spec, const RepoLocation& location,
                              std::map<std::string, std::string, std::less<>> env, const std::filesystem::path& cwd,
                              const std::filesystem::path& into);

/// Why a clone failed, for the job's status, from git's last output lines.
/// `repo` is the (redacted) repoUrl; `output` the lines joined.
std::string clone_failure(const BuildSpec& spec, std::string_view repo, const std::deque<std::string>& recent,
                          const ProcessOutcome& outcome, std::string_view output);

/// Belt and braces: fails when `token` reached the clone's .git/config.
core::Result<void> check_clone_config(const std::filesystem::path& clone_dir, const core::Secret& token);

}  // namespace blacktree::worker::detail
