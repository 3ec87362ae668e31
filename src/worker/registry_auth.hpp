// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// Internal to blacktree::worker: the registry credentials of one job, in the
// formats the tools speak (docker's credential-helper protocol, docker's
// config.json).

#include <blacktree/worker/process.hpp>

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace blacktree::worker::detail {

/// "host[:port]" of "host[:port][/prefix]".
std::string registry_host(std::string_view registry);

/// `docker-credential-<helper> get`, asked for `host`. The helper is the
/// operator's tool, not the job's: it gets the worker's HOME and AWS settings.
ProcessSpec credential_helper_command(const std::string& helper, std::map<std::string, std::string, std::less<>> env,
                                      const std::filesystem::path& cwd, const std::string& host);

/// What a helper replied: {"ServerURL", "Username", "Secret"}. A field is
/// nullopt when absent, not a string, or the reply is not a JSON object.
struct HelperReply {
  std::optional<std::string> username;
  std::optional<std::string> secret;
};
HelperReply parse_credential_helper_reply(std::string_view reply);

/// Docker's config.json with each registry's auth (host -> base64
/// "user:password"): buildah --authfile reads it.
std::string docker_config_json(const std::map<std::string, std::string>& auths);

}  // namespace blacktree::worker::detail
