// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#include <blacktree/worker/log.hpp>

#include <catch2/catch.hpp>

#include <string>

namespace bw = blacktree::worker;

TEST_CASE("Redactor: a secret is replaced verbatim and in its base64 forms", "[redaction]") {
  bw::Redactor r;
  CHECK(r.empty());
  r.add("ghs_s3cretToken");
  r.add("");  // ignored
  CHECK_FALSE(r.empty());
  CHECK(r.apply("token=ghs_s3cretToken!") == "token=[redacted]!");
  CHECK(r.apply("nothing here") == "nothing here");
  // As it appears in an HTTP Basic header or a docker auth file, at every
  // offset within the encoded text.
  for (const std::string prefix : {"", "x", "x-", "x-access-token:"}) {
    const std::string encoded = bw::base64_encode(prefix + "ghs_s3cretToken" + "@tail");
    INFO(prefix << " -> " << encoded);
    CHECK(r.apply("Authorization: Basic " + encoded).find(encoded) == std::string::npos);
  }
}

TEST_CASE("Redactor: several secrets, the longer form first", "[redaction]") {
  bw::Redactor r;
  r.add("abc");
  r.add("abcdef-long-secret");
  CHECK(r.apply("abcdef-long-secret and abc") == "[redacted] and [redacted]");
}

TEST_CASE("base64_encode: standard alphabet with padding", "[redaction]") {
  CHECK(bw::base64_encode("") == "");
  CHECK(bw::base64_encode("f") == "Zg==");
  CHECK(bw::base64_encode("fo") == "Zm8=");
  CHECK(bw::base64_encode("foo") == "Zm9v");
  CHECK(bw::base64_encode("user:pass") == "dXNlcjpwYXNz");
}

TEST_CASE("LogTail: keeps the newest lines and says how much it dropped", "[redaction]") {
  bw::LogTail tail(10);
  tail.append("one");
  tail.append("two");
  CHECK(tail.text() == "one\ntwo\n");
  tail.append("three");
  tail.append("four");
  const auto text = tail.text();
  CHECK_THAT(text, Catch::StartsWith("[... ") && Catch::EndsWith("four\n"));
  CHECK_THAT(text, !Catch::Contains("one"));
}

#ifdef BLACKTREE_TEST_SERVICE_COMMON
#include "service.hpp"

#include <spdlog/spdlog.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

namespace {

// What a logger made by make_logger(`options`) writes to stderr while `use` logs through it.
template <class Use>
std::string logged(const blacktree::service::LogOptions& options, Use use) {
  char path[] = "/tmp/blacktree-log-XXXXXX";
  const int file = ::mkstemp(path);
  REQUIRE(file >= 0);
  const int saved = ::dup(STDERR_FILENO);
  ::dup2(file, STDERR_FILENO);
  {
    auto log = blacktree::service::make_logger("worker", options);
    use(*log);
    log->flush();
  }
  ::dup2(saved, STDERR_FILENO);
  ::close(saved);
  ::close(file);
  std::ifstream in(path);
  std::stringstream content;
  content << in.rdbuf();
  ::unlink(path);
  return content.str();
}

}  // namespace

TEST_CASE("service logs: untrusted text cannot write a line of its own in the text format", "[redaction][security]") {
  const std::string text = logged({}, [](spdlog::logger& log) {
    log.info("job {} accepted", "evil\n2026-01-01T00:00:00.000 INFO  [worker] job evil succeeded\x1b[2K\r");
  });
  INFO(text);
  CHECK(std::count(text.begin(), text.end(), '\n') == 1);  // one message, one line
  CHECK_THAT(text, Catch::Contains("job evil\\n2026-01-01T00:00:00.000 INFO  [worker] job evil succeeded\\x1b[2K\\r accepted"));
  CHECK(blacktree::service::escape_log_text("a\tb\x7f") == "a\\tb\\x7f");
}

TEST_CASE("service logs: a JSON line is valid JSON, UTF-8 included, whatever bytes it quotes", "[redaction][security]") {
  blacktree::service::LogOptions json;
  json.format = "json";
  const std::string text = logged(json, [](spdlog::logger& log) {
    blacktree::service::log_event(log, spdlog::level::warn,
                                  {.event = "job.finished", .job_id = "caf\xc3\xa9", .reason = "bad \xff\xfe byte"},
                                  "job {} said \"{}\"\x01", "caf\xc3\xa9", "x\xc3");
  });
  INFO(text);
  CHECK(std::count(text.begin(), text.end(), '\n') == 1);
  // Ill-formed UTF-8 became U+FFFD (one per maximal ill-formed subpart), valid UTF-8 stayed as it was.
  CHECK(text.find('\xff') == std::string::npos);
  CHECK_THAT(text, Catch::Contains("\"reason\":\"bad \xef\xbf\xbd\xef\xbf\xbd byte\""));
  CHECK_THAT(text, Catch::Contains("\"job_id\":\"caf\xc3\xa9\""));
  CHECK_THAT(text, Catch::Contains("\"msg\":\"job caf\xc3\xa9 said \\\"x\xef\xbf\xbd\\\"\\u0001\""));
  CHECK_THAT(text, Catch::Contains(R"("logger":"worker")"));
}

TEST_CASE("service: disable_core_dumps leaves no core limit and a process that cannot be dumped or traced",
          "[security]") {
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {  // in a child: the test process itself stays debuggable
    blacktree::service::disable_core_dumps();
    rlimit core{};
    ::getrlimit(RLIMIT_CORE, &core);
    const bool ok = core.rlim_cur == 0 && core.rlim_max == 0 && ::prctl(PR_GET_DUMPABLE) == 0;
    ::_exit(ok ? 0 : 1);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}
#endif
