// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// The checks a build job's user-supplied fields pass before anything runs.
// Each succeeds when the value is acceptable, else fails with
// errc::invalid_field and a message that names the field and the rule
// ("branch: must not start with '-'"), ready to be a job's failure status. They are pure functions of the text, except
// check_inside_clone, which resolves symlinks on disk after the clone.

#include <blacktree/core/result.hpp>
#include <blacktree/worker/error.hpp>

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace blacktree::worker {

struct BuildSpec;

/// A git branch name as `git check-ref-format --branch` accepts it, and not
/// starting with '-' (it would be read as an option).
core::Result<void> validate_branch(std::string_view branch);

/// A path inside the repository: relative, normalised (no empty, '.' or '..'
/// components, no trailing '/'), no control characters. `field` names it in
/// the error ("dockerfilePath", "contextDir"). `allow_dot`: "." (the
/// repository root) is accepted.
core::Result<void> validate_repo_path(std::string_view field, std::string_view path, bool allow_dot);

/// An image name the worker pushes under its configured registry:
/// `path[/path...][:tag]`, each path component lowercase [a-z0-9] separated
/// by '.', '_', '__' or '-'; the tag [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}; no
/// registry host (the worker chooses the registry) and no digest.
core::Result<void> validate_image_name(std::string_view image_name);

/// A job's build options (BuildSpec):
///  - buildArgs: at most 64; names [A-Za-z_][A-Za-z0-9_]* up to 128
///    characters; values up to 4096 bytes without control characters (tab
///    allowed);
///  - target: empty, or [A-Za-z0-9][A-Za-z0-9_.-]* up to 128 characters;
///  - imageLabels: at most 64; keys up to 256 printable characters without
///    '=' or spaces; values as buildArgs';
///  - buildSecrets: at most 16 distinct names [A-Za-z0-9_.-] up to 64
///    characters (whether the worker holds them is the pipeline's check).
/// Errors name the field and the rule, never a value.
core::Result<void> validate_build_options(const BuildSpec& spec);

/// Where a repoUrl points: `owner/name` on the configured GitHub base, or a
/// full URL whose scheme is https (http and file only when allowed). URLs
/// with credentials in them are refused: tokens travel in headers only.
struct RepoLocation {
  std::string url;     ///< what git clones
  std::string origin;  ///< scheme://host[:port]/ that the token header is scoped to; "" for file://
  std::string host;    ///< host[:port], lowercase, without the scheme's default port; "" for file://
};
struct RepoUrlRules {
  std::string github_base_url = "https://github.com";
  bool allow_http = false;
  bool allow_file = false;
};
/// The location, or an error naming repoUrl and the rule.
core::Result<RepoLocation> resolve_repo_url(std::string_view repo_url, const RepoUrlRules& rules);

/// Whether a job's githubToken may be sent to `location`: only when its host
/// is the GitHub base URL's host, or matches an entry of `token_hosts`
/// ("host" for any port, "host:port" for that port; case-insensitive). A
/// file:// location never gets the token. Else errc::invalid_field naming
/// repoUrl, the host and the rule.
core::Result<void> check_token_host(const RepoLocation& location, std::string_view github_base_url,
                                    const std::vector<std::string>& token_hosts);

/// After the clone: `relative` (already validated) resolved with symlinks
/// followed must exist and stay inside `clone_root`. `want_directory` checks
/// its type. Errors name `field` and the rule.
core::Result<void> check_inside_clone(std::string_view field, const std::filesystem::path& clone_root,
                                      std::string_view relative, bool want_directory);

}  // namespace blacktree::worker
