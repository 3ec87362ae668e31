// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#include "registry_auth.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cstdlib>

namespace blacktree::worker::detail {

std::string registry_host(std::string_view registry) { return std::string(registry.substr(0, registry.find('/'))); }

ProcessSpec credential_helper_command(const std::string& helper, std::map<std::string, std::string, std::less<>> env,
                                      const std::filesystem::path& cwd, const std::string& host) {
  ProcessSpec spec;
  spec.argv = {fmt::format("docker-credential-{}", helper), "get"};
  spec.env = std::move(env);
  // docker-credential-ecr-login reads ~/.aws and caches in ~/.ecr.
  if (const char* home = std::getenv("HOME"); home != nullptr) spec.env["HOME"] = home;
  for (const char* var : {"AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_CONFIG_FILE",
                          "AWS_SHARED_CREDENTIALS_FILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                          "AWS_SESSION_TOKEN", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
                          "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_ECR_CACHE_DIR", "AWS_ECR_DISABLE_CACHE"}) {
    if (const char* v = std::getenv(var); v != nullptr) spec.env[var] = v;
  }
  spec.cwd = cwd;
  spec.input = host + "\n";
  return spec;
}

HelperReply parse_credential_helper_reply(std::string_view reply) {
  HelperReply out;
  const auto json = nlohmann::json::parse(reply, nullptr, /*allow_exceptions=*/false);
  if (!json.is_object()) return out;
  const auto field = [&json](const char* key) -> std::optional<std::string> {
    const auto it = json.find(key);
    if (it == json.end() || !it->is_string()) return std::nullopt;
    return it->get<std::string>();
  };
  out.username = field("Username");
  out.secret = field("Secret");
  return out;
}

std::string docker_config_json(const std::map<std::string, std::string>& auths) {
  nlohmann::json config;
  config["auths"] = nlohmann::json::object();
  for (const auto& [host, auth] : auths) config["auths"][host]["auth"] = auth;
  return config.dump();
}

}  // namespace blacktree::worker::detail
