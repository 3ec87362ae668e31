// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#include "git.hpp"

#include "util.hpp"

#include <blacktree/worker/error.hpp>
#include <blacktree/worker/log.hpp>

#include <fmt/format.h>

#include <fstream>
#include <sstream>

namespace blacktree::worker::detail {

ProcessSpec git_clone_command(const BuildPipelineConfig& config, const BuildSpec& spec, const RepoLocation& location,
                              std::map<std::string, std::string, std::less<>> env, const std::filesystem::path& cwd,
                              const std::filesystem::path& into) {
  ProcessSpec git;
  git.env = std::move(env);
  git.cwd = cwd;
  // No prompts (a missing token must fail, not hang), no system or user
  // configuration (a credential helper there could store the token), and
  // only the allowed protocols, also for redirects and submodules.
  git.env["GIT_TERMINAL_PROMPT"] = "0";
  git.env["GIT_CONFIG_NOSYSTEM"] = "1";
  git.env["GIT_CONFIG_GLOBAL"] = "/dev/null";
  std::string protocols = "https";
  if (config.allow_http_repos) protocols += ":http";
  if (config.allow_file_repos) protocols += ":file";
  git.env["GIT_ALLOW_PROTOCOL"] = protocols;
  if (!spec.github_token.empty() && !location.origin.empty()) {
    // The token travels as an HTTP header set through the environment
    // (git >= 2.31), scoped to the repository's origin: not in argv, not in
    // the URL, not in .git/config.
    git.env["GIT_CONFIG_COUNT"] = "1";
    git.env["GIT_CONFIG_KEY_0"] = fmt::format("http.{}.extraHeader", location.origin);
    git.env["GIT_CONFIG_VALUE_0"] =
        fmt::format("Authorization: Basic {}", base64_encode("x-access-token:" + spec.github_token.reveal()));
  }
  git.argv = {config.git_program, "clone",     "--depth=1",  "--single-branch", "--no-tags",
              "--branch",         spec.branch, "--",         location.url,      into.string()};
  return git;
}

std::string clone_failure(const BuildSpec& spec, std::string_view repo, const std::deque<std::string>& recent,
                          const ProcessOutcome& outcome, std::string_view output) {
  if (any_line_contains(recent, {"Remote branch", "not found in upstream"})) {
    return fmt::format("branch '{}' not found in repository {}", spec.branch, repo);
  }
  if (any_line_contains(recent, {"Authentication failed", "could not read Username", "returned error: 401",
                                 "returned error: 403", "terminal prompts disabled"})) {
    return fmt::format("access to repository {} was refused: the githubToken is {} (git {})", repo,
                       spec.github_token.empty() ? "missing" : "wrong or lacks read access", outcome.describe());
  }
  if (any_line_contains(recent, {"not found", "returned error: 404", "does not appear to be a git repository"})) {
    return fmt::format("repository {} not found (git {}): {}", repo, outcome.describe(), output);
  }
  return fmt::format("git clone of {} failed ({}): {}", repo, outcome.describe(), output);
}

core::Result<void> check_clone_config(const std::filesystem::path& clone_dir, const core::Secret& token) {
  if (token.empty()) return {};
  std::ifstream in(clone_dir / ".git" / "config");
  std::stringstream content;
  content << in.rdbuf();
  Redactor only_token;
  only_token.add(token.reveal());
  if (only_token.apply(content.str()) != content.str()) {
    return core::Error{errc::io_failed,
                       "internal error: the githubToken reached the clone's .git/config; the job was stopped"};
  }
  return {};
}

}  // namespace blacktree::worker::detail
