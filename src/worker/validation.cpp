// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#include <blacktree/worker/validation.hpp>

#include <blacktree/worker/build_spec.hpp>

#include <blacktree/worker/error.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <vector>

#include <cctype>
#include <climits>
#include <cstdlib>

namespace blacktree::worker {

namespace {

bool has_control(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u < 0x20 || u == 0x7f;
  });
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  std::size_t start = 0;
  for (;;) {
    const std::size_t end = s.find(sep, start);
    out.push_back(s.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start));
    if (end == std::string_view::npos) return out;
    start = end + 1;
  }
}

std::string lowercase(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

// host[:port] of a URL's authority, lowercase, the scheme's default port
// dropped (https://github.com:443 is https://github.com).
std::string normalised_host(std::string_view scheme, std::string_view authority) {
  std::string host = lowercase(authority);
  const auto bracket = host.rfind(']');
  const auto colon = host.rfind(':');
  if (colon != std::string::npos && (bracket == std::string::npos || colon > bracket)) {
    const std::string_view port = std::string_view(host).substr(colon + 1);
    if (port.empty() || (scheme == "https" && port == "443") || (scheme == "http" && port == "80")) host.resize(colon);
  }
  return host;
}

// The host part of host[:port] (an IPv6 literal keeps its brackets).
std::string_view host_without_port(std::string_view host) {
  const auto bracket = host.rfind(']');
  const auto colon = host.rfind(':');
  if (colon != std::string_view::npos && (bracket == std::string_view::npos || colon > bracket)) {
    return host.substr(0, colon);
  }
  return host;
}

bool is_lower_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }
bool is_word(char c) { return is_lower_alnum(c) || (c >= 'A' && c <= 'Z') || c == '_'; }

// [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)* from the distribution reference grammar.
bool is_path_component(std::string_view c) {
  if (c.empty() || !is_lower_alnum(c.front()) || !is_lower_alnum(c.back())) return false;
  std::size_t i = 0;
  while (i < c.size()) {
    if (is_lower_alnum(c[i])) {
      ++i;
      continue;
    }
    // a separator run
    std::size_t j = i;
    while (j < c.size() && !is_lower_alnum(c[j])) ++j;
    const std::string_view sep = c.substr(i, j - i);
    const bool dashes = std::all_of(sep.begin(), sep.end(), [](char x) { return x == '-'; });
    if (!(sep == "." || sep == "_" || sep == "__" || dashes)) return false;
    i = j;
  }
  return true;
}

}  // namespace

core::Result<void> validate_branch(std::string_view b) {
  const auto fail = [](std::string_view rule) {
    return core::Error{errc::invalid_field, fmt::format("branch: {}", rule)};
  };
  if (b.empty()) return fail("must not be empty");
  if (b.front() == '-') return fail("must not start with '-' (it would be read as an option)");
  if (b.size() > 255) return fail("must be at most 255 characters");
  if (has_control(b)) return fail("must not contain control characters");
  for (char c : {' ', '~', '^', ':', '?', '*', '[', '\\'}) {
    if (b.find(c) != std::string_view::npos) {
      return fail(fmt::format("must not contain '{}' (git ref name rules)", c));
    }
  }
  if (b.find("..") != std::string_view::npos) return fail("must not contain '..' (git ref name rules)");
  if (b.find("@{") != std::string_view::npos) return fail("must not contain '@{' (git ref name rules)");
  if (b == "@") return fail("must not be '@' (git ref name rules)");
  if (b.front() == '/' || b.back() == '/') return fail("must not start or end with '/' (git ref name rules)");
  if (b.find("//") != std::string_view::npos) return fail("must not contain '//' (git ref name rules)");
  if (b.back() == '.') return fail("must not end with '.' (git ref name rules)");
  for (auto component : split(b, '/')) {
    if (component.front() == '.') return fail("no component may start with '.' (git ref name rules)");
    if (component.size() >= 5 && component.substr(component.size() - 5) == ".lock") {
      return fail("no component may end with '.lock' (git ref name rules)");
    }
  }
  return {};
}

core::Result<void> validate_repo_path(std::string_view field, std::string_view path, bool allow_dot) {
  const auto fail = [field](std::string_view rule) {
    return core::Error{errc::invalid_field, fmt::format("{}: {}", field, rule)};
  };
  if (path.empty()) return fail("must not be empty");
  if (path.size() > 1024) return fail("must be at most 1024 characters");
  if (has_control(path) || path.find('\0') != std::string_view::npos) return fail("must not contain control characters");
  if (path.front() == '/') return fail("must be relative to the repository root, not absolute");
  if (path == ".") {
    if (allow_dot) return {};
    return fail("must name a file, not the repository root");
  }
  if (path.back() == '/') return fail("must be normalised (no trailing '/')");
  for (auto component : split(path, '/')) {
    if (component == "..") return fail("must not contain '..' (it must stay inside the repository)");
    if (component.empty()) return fail("must be normalised (no empty component, '//')");
    if (component == ".") return fail("must be normalised (no '.' component)");
  }
  return {};
}

core::Result<void> validate_build_options(const BuildSpec& spec) {
  const auto fail = [](std::string_view field, std::string_view rule) {
    return core::Error{errc::invalid_field, fmt::format("{}: {}", field, rule)};
  };
  const auto all = [](std::string_view s, auto pred) { return std::all_of(s.begin(), s.end(), pred); };
  const auto name_char = [](char c) { return is_word(c); };
  const auto plain_value = [](std::string_view v) {
    return v.size() <= 4096 && std::none_of(v.begin(), v.end(), [](char c) {
             const auto u = static_cast<unsigned char>(c);
             return (u < 0x20 && c != '\t') || u == 0x7f;
           });
  };
  if (spec.build_args.size() > 64) return fail("buildArgs", "at most 64 build arguments");
  for (const auto& [name, value] : spec.build_args) {
    if (name.empty() || name.size() > 128 || std::isdigit(static_cast<unsigned char>(name.front())) != 0 ||
        !all(name, name_char)) {
      return fail("buildArgs", "a name must be letters, digits and '_', not starting with a digit, at most 128 characters");
    }
    if (!plain_value(value)) {
      return fail("buildArgs", "a value must be at most 4096 bytes without control characters (its value is not shown)");
    }
  }
  if (!spec.target.empty()) {
    if (spec.target.size() > 128 || !is_word(spec.target.front()) || spec.target.front() == '_' ||
        !all(spec.target, [](char c) { return is_word(c) || c == '.' || c == '-'; })) {
      return fail("target", "must be a stage name: a letter or digit, then letters, digits, '_', '.' or '-', at most 128 characters");
    }
  }
  if (spec.image_labels.size() > 64) return fail("imageLabels", "at most 64 labels");
  for (const auto& [key, value] : spec.image_labels) {
    if (key.empty() || key.size() > 256 ||
        !all(key, [](char c) { return c > ' ' && c < 0x7f && c != '='; })) {
      return fail("imageLabels", "a key must be 1 to 256 printable characters without spaces or '='");
    }
    if (!plain_value(value)) {
      return fail("imageLabels", "a value must be at most 4096 bytes without control characters (its value is not shown)");
    }
  }
  if (spec.build_secrets.size() > 16) return fail("buildSecrets", "at most 16 secrets");
  for (std::size_t i = 0; i < spec.build_secrets.size(); ++i) {
    const auto& name = spec.build_secrets[i];
    if (name.empty() || name.size() > 64 || !all(name, [](char c) { return is_word(c) || c == '.' || c == '-'; })) {
      return fail("buildSecrets", "a name must be 1 to 64 letters, digits, '_', '.' or '-'");
    }
    if (std::find(spec.build_secrets.begin(), spec.build_secrets.begin() + static_cast<std::ptrdiff_t>(i), name) !=
        spec.build_secrets.begin() + static_cast<std::ptrdiff_t>(i)) {
      return fail("buildSecrets", "each name at most once");
    }
  }
  return {};
}

core::Result<void> validate_image_name(std::string_view name) {
  const auto fail = [](std::string_view rule) {
    return core::Error{errc::invalid_field, fmt::format("imageName: {}", rule)};
  };
  if (name.empty()) return fail("must not be empty");
  if (name.size() > 255) return fail("must be at most 255 characters");
  if (name.find('@') != std::string_view::npos) {
    return fail("must not contain a digest ('@'): the digest is known only after the push");
  }
  std::string_view repo = name;
  std::string_view tag;
  const auto last_slash = name.rfind('/');
  const auto colon = name.find(':', last_slash == std::string_view::npos ? 0 : last_slash);
  if (colon != std::string_view::npos) {
    repo = name.substr(0, colon);
    tag = name.substr(colon + 1);
    if (tag.empty()) return fail("the tag after ':' must not be empty");
    if (tag.size() > 128) return fail("the tag must be at most 128 characters");
    if (!is_word(tag.front())) return fail("the tag must start with a letter, digit or '_'");
    if (!std::all_of(tag.begin(), tag.end(), [](char c) { return is_word(c) || c == '.' || c == '-'; })) {
      return fail("the tag may contain only letters, digits, '_', '.' and '-'");
    }
  }
  const auto components = split(repo, '/');
  if (repo.find(':') != std::string_view::npos || (components.size() > 1 && (components.front().find('.') != std::string_view::npos ||
                                                                            components.front() == "localhost"))) {
    return fail("must not name a registry host: the worker pushes to its configured registry");
  }
  for (auto component : components) {
    if (!is_path_component(component)) {
      return fail(fmt::format(
          "'{}' is not a valid repository path component (lowercase letters and digits, separated by '.', '_', '__' "
          "or '-')",
          component));
    }
  }
  return {};
}

core::Result<RepoLocation> resolve_repo_url(std::string_view repo_url, const RepoUrlRules& rules) {
  const auto fail = [](std::string_view rule) {
    return core::Error{errc::invalid_field, fmt::format("repoUrl: {}", rule)};
  };
  if (repo_url.empty()) return fail("must not be empty");
  if (repo_url.size() > 2048) return fail("must be at most 2048 characters");
  if (has_control(repo_url) || repo_url.find(' ') != std::string_view::npos) {
    return fail("must not contain spaces or control characters");
  }
  if (repo_url.front() == '-') return fail("must not start with '-' (it would be read as an option)");

  const auto scheme_end = repo_url.find("://");
  if (scheme_end == std::string_view::npos) {
    // owner/name on GitHub
    const auto parts = split(repo_url, '/');
    const auto valid_part = [](std::string_view p) {
      return !p.empty() && p != "." && p != ".." && p.front() != '-' &&
             std::all_of(p.begin(), p.end(), [](char c) {
               return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
                      c == '_' || c == '.';
             });
    };
    if (parts.size() != 2 || !valid_part(parts[0]) || !valid_part(parts[1])) {
      return fail("must be 'owner/name' (letters, digits, '-', '_', '.') or a full https:// URL");
    }
    std::string base = rules.github_base_url;
    while (!base.empty() && base.back() == '/') base.pop_back();
    std::string url = fmt::format("{}/{}/{}", base, parts[0], parts[1]);
    if (url.size() < 4 || url.substr(url.size() - 4) != ".git") url += ".git";
    // The base URL comes from configuration, but goes through the same rules.
    auto location = resolve_repo_url(url, rules);
    if (!location) {
      return fail(fmt::format("the configured GitHub base URL is not usable: {}", location.error().message()));
    }
    return location;
  }

  const std::string_view scheme = repo_url.substr(0, scheme_end);
  const std::string_view rest = repo_url.substr(scheme_end + 3);
  if (scheme == "file") {
    if (!rules.allow_file) return fail("file:// URLs are not allowed by this worker's configuration");
    if (rest.empty() || rest.front() != '/') return fail("a file:// URL must hold an absolute path");
    return RepoLocation{std::string(repo_url), "", ""};
  }
  if (scheme != "https" && !(scheme == "http" && rules.allow_http)) {
    return fail(scheme == "http" ? "http:// URLs are not allowed by this worker's configuration (use https)"
                                 : fmt::format("scheme '{}' is not allowed (use https)", scheme));
  }
  const std::string_view authority = rest.substr(0, rest.find_first_of("/?#"));
  if (authority.empty()) return fail("the URL has no host");
  if (authority.find('@') != std::string_view::npos) {
    return fail("must not hold credentials ('user@' in the URL): the token is passed separately");
  }
  if (rest.find_first_of("?#") != std::string_view::npos) return fail("must not contain '?' or '#'");
  const auto path_start = rest.find('/');
  if (path_start == std::string_view::npos || path_start + 1 >= rest.size()) return fail("the URL names no repository path");
  for (auto component : split(rest.substr(path_start + 1), '/')) {
    if (component == "..") return fail("must not contain '..' path components");
  }
  return RepoLocation{std::string(repo_url), fmt::format("{}://{}/", scheme, authority),
                      normalised_host(scheme, authority)};
}

core::Result<void> check_token_host(const RepoLocation& location, std::string_view github_base_url,
                                    const std::vector<std::string>& token_hosts) {
  if (location.host.empty()) return {};  // file://: the token is never attached
  std::string base_host;
  if (const auto scheme_end = github_base_url.find("://"); scheme_end != std::string_view::npos) {
    const std::string_view rest = github_base_url.substr(scheme_end + 3);
    base_host = normalised_host(github_base_url.substr(0, scheme_end), rest.substr(0, rest.find_first_of("/?#")));
  }
  if (!base_host.empty() && location.host == base_host) return {};
  for (const auto& entry : token_hosts) {
    const std::string allowed = lowercase(entry);
    if (allowed == location.host || allowed == host_without_port(location.host)) return {};
  }
  return core::Error{
      errc::invalid_field,
      fmt::format("repoUrl: the githubToken may be sent only to the GitHub base URL's host ({}) or a host in "
                  "token_hosts, and '{}' is neither; the job was stopped before connecting (send the job without "
                  "a token, or add the host to token_hosts)",
                  base_host.empty() ? "none configured" : base_host, location.host)};
}

core::Result<void> check_inside_clone(std::string_view field, const std::filesystem::path& clone_root,
                                      std::string_view relative, bool want_directory) {
  namespace fs = std::filesystem;
  const auto invalid = [](std::string message) { return core::Error{errc::invalid_field, std::move(message)}; };
  std::error_code ec;
  const fs::path root = fs::canonical(clone_root, ec);
  if (ec) return invalid(fmt::format("{}: the clone directory cannot be resolved: {}", field, ec.message()));
  const fs::path candidate = clone_root / fs::path(std::string(relative));
  // Refuse escapes before asking whether the target exists, so that a link
  // to a missing file outside is still reported as an escape.
  fs::path resolved = fs::weakly_canonical(candidate, ec);
  if (ec) return invalid(fmt::format("{}: '{}' cannot be resolved: {}", field, relative, ec.message()));
  const auto [root_end, _] = std::mismatch(root.begin(), root.end(), resolved.begin(), resolved.end());
  if (root_end != root.end()) {
    return invalid(fmt::format("{}: '{}' resolves outside the repository through a symlink", field, relative));
  }
  const fs::path rel = resolved.lexically_relative(root);
  if (!rel.empty() && *rel.begin() == ".git") {
    return invalid(fmt::format("{}: '{}' must not point into the repository's .git directory", field, relative));
  }
  const auto status = fs::status(resolved, ec);
  if (ec || !fs::exists(status)) {
    return invalid(fmt::format("{}: '{}' does not exist in the repository", field, relative));
  }
  if (want_directory && !fs::is_directory(status)) {
    return invalid(fmt::format("{}: '{}' is not a directory", field, relative));
  }
  if (!want_directory && !fs::is_regular_file(status)) {
    return invalid(fmt::format("{}: '{}' is not a regular file", field, relative));
  }
  return {};
}

}  // namespace blacktree::worker
