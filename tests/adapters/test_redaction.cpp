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
