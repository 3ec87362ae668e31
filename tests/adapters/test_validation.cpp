// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#include <blacktree/wire/wire.hpp>
#include <blacktree/worker/job_dir.hpp>
#include <blacktree/worker/validation.hpp>

#include "worker/registry_auth.hpp"
#include "worker/util.hpp"

#include <catch2/catch.hpp>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <sys/stat.h>

namespace bw = blacktree::worker;
namespace fs = std::filesystem;

namespace {

// A fresh directory under the system's temporary directory, removed at scope end.
struct TempDir {
  TempDir() {
    std::random_device rd;
    path = fs::temp_directory_path() / ("blacktree-adapters-" + std::to_string(rd()) + std::to_string(rd()));
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  fs::path path;
};

std::string message_of(const blacktree::core::Result<void>& r) { return r ? std::string() : r.error().message(); }

}  // namespace

TEST_CASE("validation: a refused field fails with worker::errc::invalid_field naming the field and rule",
          "[validation]") {
  const auto branch = bw::validate_branch("--upload-pack=x");
  REQUIRE_FALSE(branch);
  CHECK(branch.error().code() == bw::errc::invalid_field);
  CHECK(branch.error().code().category().name() == std::string("blacktree.worker"));
  CHECK_THAT(branch.error().message(), Catch::StartsWith("branch: must not start with '-'"));
  CHECK_THAT(message_of(bw::validate_repo_path("contextDir", "a/../..", true)),
             Catch::StartsWith("contextDir: must not contain '..'"));
  CHECK_THAT(message_of(bw::validate_repo_path("dockerfilePath", "/etc/passwd", false)),
             Catch::StartsWith("dockerfilePath: must be relative"));
  CHECK_THAT(message_of(bw::validate_image_name("Evil.example.com/app")),
             Catch::StartsWith("imageName: must not name a registry host"));
  const auto url = bw::resolve_repo_url("https://user:pw@github.com/a/b", {});
  REQUIRE_FALSE(url);
  CHECK(url.error().code() == bw::errc::invalid_field);
  CHECK_THAT(url.error().message(), Catch::StartsWith("repoUrl: must not hold credentials"));
  // A broken GitHub base URL is named as such.
  const auto base = bw::resolve_repo_url("acme/app", {"ftp://git.example.com", false, false});
  REQUIRE_FALSE(base);
  CHECK_THAT(base.error().message(), Catch::StartsWith("repoUrl: the configured GitHub base URL is not usable"));
}

TEST_CASE("validation: check_inside_clone refuses symlinks that leave the clone", "[validation]") {
  TempDir tmp;
  const fs::path clone = tmp.path / "src";
  fs::create_directories(clone / "app");
  std::ofstream(clone / "app" / "Dockerfile") << "FROM scratch\n";
  fs::create_directory_symlink("/etc", clone / "out");
  CHECK(bw::check_inside_clone("dockerfilePath", clone, "app/Dockerfile", false));
  CHECK(bw::check_inside_clone("contextDir", clone, "app", true));
  CHECK_THAT(message_of(bw::check_inside_clone("contextDir", clone, "out", true)),
             Catch::Equals("contextDir: 'out' resolves outside the repository through a symlink"));
  CHECK_THAT(message_of(bw::check_inside_clone("contextDir", clone, "app/Dockerfile", true)),
             Catch::Equals("contextDir: 'app/Dockerfile' is not a directory"));
  CHECK_THAT(message_of(bw::check_inside_clone("dockerfilePath", clone, "nope", false)),
             Catch::Equals("dockerfilePath: 'nope' does not exist in the repository"));
}

TEST_CASE("job directories: named from the job id, private, and removed when stale", "[job_dir]") {
  TempDir tmp;
  const fs::path root = tmp.path / "jobs";
  const auto dir = bw::make_job_dir(root, "a/b c:../x");
  REQUIRE(dir);
  CHECK(dir->parent_path() == root);
  CHECK_THAT(dir->filename().string(), Catch::StartsWith("job-a_b_c____x-"));
  struct stat st {};
  REQUIRE(::stat(dir->c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0700);
  const auto second = bw::make_job_dir(root, "a/b c:../x");
  REQUIRE(second);
  CHECK(*second != *dir);
  std::ofstream(*dir / "config.json") << "{}";
  fs::create_directory(root / "not-a-job");
  std::ofstream(root / "job-file") << "a file, not a job directory";

  auto stale = bw::remove_stale_job_dirs(root);
  CHECK(stale.size() == 2);
  for (const auto& s : stale) CHECK_FALSE(s.error);
  CHECK_FALSE(fs::exists(*dir));
  CHECK_FALSE(fs::exists(*second));
  CHECK(fs::exists(root / "not-a-job"));
  CHECK(fs::exists(root / "job-file"));
  CHECK(bw::remove_stale_job_dirs(tmp.path / "missing").empty());

  const auto refused = bw::make_job_dir(root / "job-file" / "below", "j");
  REQUIRE_FALSE(refused);
  CHECK(refused.error().code() == bw::errc::io_failed);
  CHECK_THAT(refused.error().message(), Catch::StartsWith("worker configuration: cannot create work_root"));
}

TEST_CASE("registry credentials: a helper's JSON reply and docker's config.json", "[registry_auth]") {
  namespace d = bw::detail;
  auto reply = d::parse_credential_helper_reply(
      "{\"ServerURL\":\"r.example\",\"Username\":\"AWS\",\"Secret\":\"p\\\"w\\u00e9\\n\"}\n");
  REQUIRE(reply.username);
  REQUIRE(reply.secret);
  CHECK(*reply.username == "AWS");
  CHECK(*reply.secret == "p\"w\xC3\xA9\n");
  reply = d::parse_credential_helper_reply("credentials not found in native keychain\n");
  CHECK_FALSE(reply.username);
  CHECK_FALSE(reply.secret);
  reply = d::parse_credential_helper_reply(R"({"Username":"u","Secret":42})");
  CHECK(reply.username);
  CHECK_FALSE(reply.secret);

  CHECK(d::docker_config_json({{"127.0.0.1:5000", "dTpw"}}) == R"({"auths":{"127.0.0.1:5000":{"auth":"dTpw"}}})");
  CHECK(d::docker_config_json({{"a.example:5000", "YTpi"}, {"b.example", "Yzpk"}}) ==
        R"({"auths":{"a.example:5000":{"auth":"YTpi"},"b.example":{"auth":"Yzpk"}}})");
  CHECK(d::registry_host("r.example:5000/team/x") == "r.example:5000");
}

TEST_CASE("format_duration: whole seconds, tenths, whole minutes", "[util]") {
  using std::chrono::milliseconds;
  CHECK(bw::detail::format_duration(milliseconds(20000)) == "20s");
  CHECK(bw::detail::format_duration(milliseconds(1500)) == "1.5s");
  CHECK(bw::detail::format_duration(milliseconds(1800000)) == "30m");
  CHECK(bw::detail::format_duration(milliseconds(90000)) == "90s");
}

TEST_CASE("write_private_file: mode 0600, never over an existing file", "[util]") {
  TempDir tmp;
  const fs::path file = tmp.path / "config.json";
  REQUIRE(bw::detail::write_private_file(file, "secret"));
  struct stat st {};
  REQUIRE(::stat(file.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  const auto again = bw::detail::write_private_file(file, "other");
  REQUIRE_FALSE(again);
  CHECK(again.error().code() == bw::errc::io_failed);
  CHECK_THAT(again.error().message(), Catch::StartsWith("cannot create " + file.string()));
}

TEST_CASE("wire: a JobRequest that does not parse is reported by field and rule, never by its value",
          "[wire][security]") {
  const std::string secret = "ghs_NeverEchoThis0123456789";
  const std::string head = R"({"jobId":"j1","repoUrl":"a/b","branch":"main","imageName":"x",)";
  const std::vector<std::pair<std::string, std::string>> cases{
      {head + R"("githubToken":987654321012})", "githubToken"},
      {head + R"("githubToken":[")" + secret + R"("]})", "githubToken"},
      {head + R"("githubToken":{")" + secret + R"(":1}})", "githubToken"},
      {head + R"("timeoutSeconds":")" + secret + R"("})", "timeoutSeconds"},
      {head + R"("githubToken":")" + secret + R"(", )" + secret + "}", ""},
  };
  for (const auto& [json, field] : cases) {
    const auto parsed = blacktree::wire::parse_job_request(json);
    REQUIRE_FALSE(parsed.valid);
    const std::string message = parsed.valid.error().message();
    INFO(message);
    if (!field.empty()) CHECK(parsed.job.id == "j1");  // the status still finds its job
    CHECK(message.find(secret) == std::string::npos);
    CHECK(message.find("NeverEcho") == std::string::npos);
    CHECK(message.find("987654321012") == std::string::npos);
    if (!field.empty()) CHECK_THAT(message, Catch::Contains(field));
  }
}

TEST_CASE("validation: check_token_host allows the GitHub base URL's host and token_hosts only", "[validation]") {
  const auto at = [](std::string_view url) { return *bw::resolve_repo_url(url, {"https://github.com", true, true}); };
  const std::vector<std::string> none;
  CHECK(bw::check_token_host(at("acme/app"), "https://github.com", none));
  CHECK(bw::check_token_host(at("https://GitHub.com:443/acme/app.git"), "https://github.com/", none));
  CHECK(bw::check_token_host(at("file:///srv/repo.git"), "https://github.com", none));  // never gets the token
  const auto foreign = bw::check_token_host(at("https://evil.example/acme/app.git"), "https://github.com", none);
  REQUIRE_FALSE(foreign);
  CHECK(foreign.error().code() == bw::errc::invalid_field);
  CHECK_THAT(foreign.error().message(), Catch::StartsWith("repoUrl:") && Catch::Contains("token_hosts") &&
                                            Catch::Contains("'evil.example'"));
  CHECK_FALSE(bw::check_token_host(at("https://github.com:8443/acme/app.git"), "https://github.com", none));
  const std::vector<std::string> allowed{"GHE.example", "git.example:8443"};
  CHECK(bw::check_token_host(at("https://ghe.example:9999/a/b.git"), "https://github.com", allowed));
  CHECK(bw::check_token_host(at("https://git.example:8443/a/b.git"), "https://github.com", allowed));
  CHECK_FALSE(bw::check_token_host(at("https://git.example/a/b.git"), "https://github.com", allowed));
}

TEST_CASE("a registry's refusal is told from a failed push whose blob digests hold 401 or 403", "[validation]") {
  using blacktree::worker::detail::registry_refused;
  // A push to a port with no registry: the blobs' digests happen to hold "401" and "403".
  CHECK_FALSE(registry_refused({"Copying blob sha256:9f401ab2c403e8d1f5b0510c0ae14952935c9547d2c5176f1cd4365737618c97",
                                "Error: pushing image: dial tcp 127.0.0.1:40391: connect: connection refused"}));
  CHECK_FALSE(registry_refused({"RUN cat /root/secret", "cat: can't open '/root/secret': Permission denied"}));
  CHECK(registry_refused({"Error: writing blob: initiating layer upload to /v2/app/blobs/uploads/ in 127.0.0.1:5000: "
                          "unauthorized: authentication required"}));
  CHECK(registry_refused({"Error: reading manifest v1 in 127.0.0.1:5000/app: "
                          "denied: requested access to the resource is denied"}));
  CHECK(registry_refused({"Error: unexpected http code: 403 Forbidden"}));
}

TEST_CASE("the base images of a Dockerfile: not scratch, not an earlier stage, not one an ARG names", "[validation]") {
  using blacktree::worker::detail::base_images;
  CHECK(base_images("FROM scratch\nCOPY a /a\n").empty());
  CHECK(base_images("# syntax=docker/dockerfile:1\n"
                    "ARG BASE=debian:12\n"
                    "from --platform=linux/amd64 registry.example.com/team/builder:1.2 AS Build\n"
                    "RUN make \\\n"
                    "  FROM not-an-instruction\n"
                    "FROM $BASE\n"
                    "FROM build AS test\n"
                    "FROM registry.example.com/team/builder:1.2\n"
                    "FROM \\\n"
                    "  debian:12-slim\r\n") ==
        std::vector<std::string>{"registry.example.com/team/builder:1.2", "debian:12-slim"});
}
