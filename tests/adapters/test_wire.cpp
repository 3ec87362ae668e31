// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#include <blacktree/wire/wire.hpp>

#include <blacktree/worker/build_spec.hpp>
#include <blacktree/worker/validation.hpp>

#include <catch2/catch.hpp>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/message_differencer.h>

#include <chrono>
#include <initializer_list>
#include <map>
#include <string>
#include <vector>

namespace core = blacktree::core;
namespace wire = blacktree::wire;
namespace bw = blacktree::worker;
namespace v1 = blacktree::v1;

namespace {

// A JSON text as a tree (objects, arrays, strings, numbers), to compare two
// texts that may differ only in how they spell the same thing.
google::protobuf::Value json_tree(const std::string& json) {
  google::protobuf::Value tree;
  INFO(json);
  REQUIRE(wire::from_json(json, tree));
  return tree;
}

bool same_json(const std::string& a, const std::string& b) {
  return google::protobuf::util::MessageDifferencer::Equals(json_tree(a), json_tree(b));
}

const bw::BuildSpec& build_of(const core::Job& job) {
  const auto* spec = job.payload.get<bw::BuildSpec>();
  REQUIRE(spec != nullptr);
  return *spec;
}

}  // namespace

TEST_CASE("wire: a seed JobRequest becomes a job whose payload is its BuildSpec", "[wire]") {
  const auto parsed = wire::parse_job_request(
      R"({"jobId":"j1","repoUrl":"octo/hello","branch":"main","imageName":"hello:1","githubToken":"ghp_x",)"
      R"("region":"eu-west-1","labels":{"arch":"arm64"},"timeoutSeconds":90,"payload":"opaque",)"
      R"("futureField":{"nested":[1,2]}})");
  INFO((parsed.valid ? std::string() : parsed.valid.error().message()));
  REQUIRE(parsed.valid);
  const core::Job& job = parsed.job;
  CHECK(job.id == "j1");
  CHECK(job.required_labels == core::Labels{{"arch", "arm64"}, {"region", "eu-west-1"}});
  CHECK(job.timeout == std::chrono::seconds(90));
  const auto& spec = build_of(job);
  CHECK(spec.repo_url == "octo/hello");
  CHECK(spec.branch == "main");
  CHECK(spec.image_name == "hello:1");
  CHECK(spec.github_token.reveal() == "ghp_x");
  CHECK(spec.payload == "opaque");
  // The seed's defaults.
  CHECK(spec.dockerfile_path == "Dockerfile");
  CHECK(spec.context_dir == ".");
}

TEST_CASE("wire: an invalid JobRequest says which field and keeps the jobId it could read", "[wire]") {
  auto parsed = wire::parse_job_request(R"({"jobId":"j2","branch":"main"})");
  REQUIRE_FALSE(parsed.valid);
  CHECK(parsed.valid.error().message() == "the JobRequest lacks required field(s): repoUrl, imageName");
  CHECK(parsed.valid.error().code() == wire::errc::missing_field);
  CHECK(parsed.job.id == "j2");

  parsed = wire::parse_job_request(R"({"jobId":"j3","repoUrl":5,"branch":"main","imageName":"a"})");
  REQUIRE_FALSE(parsed.valid);
  CHECK_THAT(parsed.valid.error().message(),
             Catch::StartsWith("the message is not a valid JobRequest JSON object: ") &&
                 Catch::Contains("repoUrl") && !Catch::Contains("repo_url"));
  CHECK(parsed.valid.error().code() == wire::errc::invalid_json);
  CHECK(parsed.job.id == "j3");

  parsed = wire::parse_job_request("not json");
  REQUIRE_FALSE(parsed.valid);
  CHECK_THAT(parsed.valid.error().message(), Catch::StartsWith("the message is not a valid JobRequest JSON object: "));
  CHECK(parsed.valid.error().code() == wire::errc::invalid_json);
  CHECK(parsed.job.id.empty());
}

TEST_CASE("wire: from_json fails with wire::errc::invalid_json naming the JSON field", "[wire]") {
  v1::JobResponse response;
  const auto read = wire::from_json(R"({"jobId":"j","imageUrl":[1]})", response);
  REQUIRE_FALSE(read);
  CHECK(read.error().code() == wire::errc::invalid_json);
  CHECK(read.error().code().category().name() == std::string("blacktree.wire"));
  CHECK_THAT(read.error().message(), Catch::Contains("imageUrl"));
  CHECK(wire::from_json(R"({"jobId":"j","unknownField":1})", response));
}

TEST_CASE("wire: a JobRequest round-trips through JSON and the proto", "[wire]") {
  core::Job job;
  job.id = "j4";
  job.required_labels = {{"region", "eu"}};
  job.timeout = std::chrono::seconds(30);
  job.payload = core::Payload(bw::BuildSpec{"acme/app", "dev", "app/Dockerfile", "app", "app:v2", core::Secret("t0k")});
  const std::string json = wire::job_request_json(job);
  CHECK_THAT(json, Catch::Contains(R"("repoUrl":"acme/app")") && Catch::Contains(R"("githubToken":"t0k")"));
  const auto back = wire::parse_job_request(json);
  REQUIRE(back.valid);
  CHECK(back.job.id == "j4");
  CHECK(back.job.required_labels == job.required_labels);
  CHECK(back.job.timeout == job.timeout);
  const auto& spec = build_of(back.job);
  CHECK(spec.branch == "dev");
  CHECK(spec.dockerfile_path == "app/Dockerfile");
  CHECK(spec.context_dir == "app");
  CHECK(spec.image_name == "app:v2");
  CHECK(spec.github_token.reveal() == "t0k");
  CHECK(wire::job_request_json(back.job) == json);  // byte-for-byte stable
}

TEST_CASE("wire: a JobRequest's build options reach the BuildSpec and travel back", "[wire]") {
  const auto parsed = wire::parse_job_request(
      R"({"jobId":"j6","repoUrl":"acme/app","branch":"main","imageName":"app:v1",)"
      R"("buildArgs":{"GREETING":"hi","VERSION":"1.2"},"target":"final",)"
      R"("imageLabels":{"org.example.team":"builds"},"buildSecrets":["deploy_key","npm"],)"
      R"("labels":{"arch":"arm64"}})");
  REQUIRE(parsed.valid);
  const auto& spec = build_of(parsed.job);
  CHECK(spec.build_args == std::map<std::string, std::string>{{"GREETING", "hi"}, {"VERSION", "1.2"}});
  CHECK(spec.target == "final");
  CHECK(spec.image_labels == std::map<std::string, std::string>{{"org.example.team", "builds"}});
  CHECK(spec.build_secrets == std::vector<std::string>{"deploy_key", "npm"});
  // "labels" still places the job: it is not an image label.
  CHECK(parsed.job.required_labels.at("arch") == "arm64");
  const auto back = wire::parse_job_request(wire::job_request_json(parsed.job));
  REQUIRE(back.valid);
  CHECK(build_of(back.job).build_args == spec.build_args);
  CHECK(build_of(back.job).target == "final");
  CHECK(build_of(back.job).image_labels == spec.image_labels);
  CHECK(build_of(back.job).build_secrets == spec.build_secrets);
}

TEST_CASE("validation: each build option's rule, named in its error without its value", "[validation]") {
  const auto error_of = [](const bw::BuildSpec& spec) {
    const auto checked = bw::validate_build_options(spec);
    return checked ? std::string() : checked.error().message();
  };
  bw::BuildSpec ok;
  ok.build_args = {{"GREETING", "hello world"}, {"_X1", ""}};
  ok.target = "final-1.2";
  ok.image_labels = {{"org.opencontainers.image.source", "https://example.com/a"}};
  ok.build_secrets = {"deploy_key", "npm.rc"};
  CHECK(error_of(ok).empty());

  const std::string hidden = "HIDDEN-VALUE";
  bw::BuildSpec bad = ok;
  bad.build_args = {{"1ST", "x"}};
  CHECK_THAT(error_of(bad), Catch::StartsWith("buildArgs: a name"));
  bad.build_args = {{"OK", hidden + "\nsecond line"}};
  CHECK_THAT(error_of(bad), Catch::StartsWith("buildArgs: a value") && !Catch::Contains(hidden));
  bad = ok;
  bad.target = "-x";
  CHECK_THAT(error_of(bad), Catch::StartsWith("target: "));
  bad = ok;
  bad.image_labels = {{"a key", "v"}};
  CHECK_THAT(error_of(bad), Catch::StartsWith("imageLabels: a key"));
  bad.image_labels = {{"k", hidden + std::string(1, '\x01')}};
  CHECK_THAT(error_of(bad), Catch::StartsWith("imageLabels: a value") && !Catch::Contains(hidden));
  bad = ok;
  bad.build_secrets = {"a/b"};
  CHECK_THAT(error_of(bad), Catch::StartsWith("buildSecrets: a name"));
  bad.build_secrets = {"x", "x"};
  CHECK_THAT(error_of(bad), Catch::StartsWith("buildSecrets: each name at most once"));
  bad = ok;
  for (int i = 0; i < 65; ++i) bad.build_args["A" + std::to_string(i)] = "v";
  CHECK_THAT(error_of(bad), Catch::StartsWith("buildArgs: at most 64"));
}

TEST_CASE("wire: a job with a text payload travels in the payload field", "[wire]") {
  core::Job job;
  job.id = "j5";
  job.payload = core::Payload("echo hi");
  const auto request = wire::to_proto(job);
  CHECK(request.payload() == "echo hi");
  CHECK(request.repo_url().empty());
  CHECK(build_of(wire::from_proto(request)).payload == "echo hi");
  core::Job none;
  none.id = "j6";
  CHECK(wire::to_proto(none).payload().empty());
}

TEST_CASE("wire: a JobResponse round-trips with every seed field present", "[wire]") {
  core::JobResult result;
  result.job_id = "j7";
  result.success = false;
  result.error = "build step failed";
  result.worker_id = "w1";
  result.attempts = 2;
  const std::string json = wire::job_response_json(result);
  for (const char* field : {"\"jobId\"", "\"success\"", "\"logs\"", "\"imageUrl\"", "\"error\""}) {
    CHECK(json.find(field) != std::string::npos);
  }
  CHECK(json.find("receivedAt") == std::string::npos);  // unset times are absent
  const auto back = wire::parse_job_response(json);
  REQUIRE(back);
  CHECK(back->job_id == "j7");
  CHECK_FALSE(back->success);
  CHECK(back->error == "build step failed");
  CHECK(back->worker_id == "w1");
  CHECK(back->attempts == 2);

  const auto bad = wire::parse_job_response("[1,2]");
  REQUIRE_FALSE(bad);
  CHECK(bad.error().code() == wire::errc::invalid_json);
}

TEST_CASE("wire: phases and stages map onto the proto's phases both ways", "[wire]") {
  CHECK(wire::to_proto(core::Phase::accepted, {}) == v1::PHASE_ACCEPTED);
  CHECK(wire::to_proto(core::Phase::running, bw::stage::cloning) == v1::PHASE_CLONING);
  CHECK(wire::to_proto(core::Phase::running, bw::stage::building) == v1::PHASE_BUILDING);
  CHECK(wire::to_proto(core::Phase::running, bw::stage::pushing) == v1::PHASE_PUSHING);
  CHECK(wire::to_proto(core::Phase::running, "compiling") == v1::PHASE_BUILDING);
  CHECK(wire::to_proto(core::Phase::finished, {}) == v1::PHASE_FINISHED);
  for (auto phase : {v1::PHASE_ACCEPTED, v1::PHASE_CLONING, v1::PHASE_BUILDING, v1::PHASE_PUSHING,
                     v1::PHASE_FINISHED}) {
    const auto [core_phase, stage] = wire::from_proto(phase);
    CHECK(wire::to_proto(core_phase, stage) == phase);
  }
  CHECK(wire::phase_name(v1::PHASE_CLONING) == "cloning");
  CHECK(wire::phase_name(v1::PHASE_FINISHED) == "finished");

  const core::ProgressEvent event{"j8", "w1", core::Phase::running, "pushing", "pushed"};
  const auto json = wire::job_event_json(event);
  CHECK_THAT(json, Catch::Contains(R"("phase":"PHASE_PUSHING")") && Catch::Contains(R"("line":"pushed")"));
  const auto back = wire::from_proto(wire::to_proto(event));
  CHECK(back.phase == core::Phase::running);
  CHECK(back.stage == "pushing");
  CHECK(back.line == "pushed");
}

TEST_CASE("wire: a jobId must be 1 to 128 of A-Z a-z 0-9 . _ : -, and the reason never echoes it", "[wire]") {
  const auto job = [](const std::string& id) {
    return R"({"jobId":")" + id + R"(","repoUrl":"octo/hello","branch":"main","imageName":"hello:1"})";
  };
  CHECK(wire::parse_job_request(job("build-42.v1_x:7")).valid);
  CHECK(wire::parse_job_request(job(std::string(128, 'k'))).valid);
  for (const std::string& bad : {std::string(129, 'k'), std::string(300, 'k'), std::string("has space"),
                                 std::string("slash/id"), std::string("uni\xc3\xa9")}) {
    const auto parsed = wire::parse_job_request(job(bad));
    REQUIRE_FALSE(parsed.valid);
    const std::string reason = parsed.valid.error().message();
    INFO(reason);
    CHECK(parsed.valid.error().code() == wire::errc::invalid_field);
    CHECK_THAT(reason, Catch::Contains("jobId") && Catch::Contains("128"));
    CHECK(reason.find(bad) == std::string::npos);
    CHECK(parsed.job.id.empty());  // not an id anything may carry further
  }
}

TEST_CASE("wire: a priority is 0 to 9 and travels with the job", "[wire]") {
  const auto job = [](const std::string& priority) {
    return R"({"jobId":"j","repoUrl":"octo/hello","branch":"main","imageName":"hello:1","priority":)" + priority +
           "}";
  };
  const auto high = wire::parse_job_request(job("9"));
  REQUIRE(high.valid);
  CHECK(high.job.priority == 9);
  CHECK(wire::parse_job_request(job("0")).job.priority == 0);
  CHECK(wire::parse_job_request(R"({"jobId":"j","repoUrl":"o/h","branch":"main","imageName":"h:1"})").job.priority ==
        0);
  CHECK(wire::from_proto(wire::to_proto(high.job)).priority == 9);
  const auto over = wire::parse_job_request(job("10"));
  REQUIRE_FALSE(over.valid);
  CHECK(over.valid.error().code() == wire::errc::invalid_field);
  CHECK(over.valid.error().message() == "priority is 10: it must be 0 to 9");
  CHECK(over.job.id == "j");  // dead-lettered under its id
  CHECK_FALSE(wire::parse_job_request(job("-1")).valid);
}

TEST_CASE("wire: only strict JSON is a JobRequest", "[wire]") {
  const std::string fields = R"("repoUrl":"octo/hello","branch":"main","imageName":"hello:1")";
  CHECK(wire::parse_job_request(" {\"jobId\":\"j\"," + fields + "}\n").valid);
  for (const std::string& body :
       {std::string("{'jobId':'j','repoUrl':'r','branch':'b','imageName':'i'}"), "{jobId:\"j\"," + fields + "}",
        "{\"jobId\":\"j\"," + fields + "} trailing", "{\"jobId\":\"j\"," + fields + ",}",
        "{\"jobId\":\"j\", /* c */ " + fields + "}", "{\"jobId\":\"j\",\"timeoutSeconds\":0x10," + fields + "}",
        "{\"jobId\":\"j\"," + fields + "}{}", std::string(100000, '[')}) {
    const auto parsed = wire::parse_job_request(body);
    INFO(body.substr(0, 80));
    REQUIRE_FALSE(parsed.valid);
    CHECK(parsed.valid.error().code() == wire::errc::invalid_json);
  }
}

TEST_CASE("wire: a JobResponse carries its stage timings and cache counts", "[wire]") {
  core::JobResult result;
  result.job_id = "j7";
  result.stage_durations = {{"cloning", std::chrono::milliseconds(1250)}, {"pushing", std::chrono::milliseconds(40)}};
  result.cached_steps = 3;
  result.built_steps = 1;
  result.cached_by_step = {true, true, false, true};
  const std::string json = wire::job_response_json(result);
  CHECK_THAT(json, Catch::Contains(R"("stageSeconds":{)") && Catch::Contains(R"("cloning":1.25)") &&
                       Catch::Contains(R"("cachedSteps":3)") && Catch::Contains(R"("builtSteps":1)") &&
                       Catch::Contains(R"("cachedByStep":[true,true,false,true])"));
  const auto back = wire::parse_job_response(json);
  REQUIRE(back);
  CHECK(back->stage_durations == result.stage_durations);
  CHECK(back->cached_steps == 3);
  CHECK(back->built_steps == 1);
  CHECK(back->cached_by_step == result.cached_by_step);
}

TEST_CASE("wire: a JobResponse carries its statusId", "[wire]") {
  core::JobResult result;
  result.job_id = "j";
  result.status_id = "j.1";
  const std::string json = wire::job_response_json(result);
  CHECK_THAT(json, Catch::Contains(R"("statusId":"j.1")"));
  auto back = wire::parse_job_response(json);
  REQUIRE(back);
  CHECK(back->status_id == "j.1");
}

TEST_CASE("wire: a cancel request is strict JSON with a valid jobId and a bounded reason", "[wire][cancel]") {
  auto ok = wire::parse_cancel_request(R"({"jobId": "job-7", "reason": "wrong branch"})");
  REQUIRE(ok);
  CHECK(ok->job_id() == "job-7");
  CHECK(ok->reason() == "wrong branch");
  auto bare = wire::parse_cancel_request(R"({"jobId": "job-8", "fromTheFuture": 1})");
  REQUIRE(bare);  // unknown fields are ignored, the reason is optional
  CHECK(bare->reason().empty());

  const auto error_of = [](std::string_view json) {
    auto parsed = wire::parse_cancel_request(json);
    REQUIRE_FALSE(parsed);
    return parsed.error().message();
  };
  CHECK_THAT(error_of(R"({"reason": "x"})"), Catch::Contains("lacks jobId"));
  CHECK_THAT(error_of(R"({"jobId": "a/b"})"), Catch::Contains("jobId") && Catch::Contains("must be 1 to"));
  CHECK_THAT(error_of(R"({'jobId': 'a'})"), Catch::Contains("not strict JSON"));
  CHECK_THAT(error_of(R"({"jobId": 7})"), Catch::Contains("not a valid cancel request"));
  CHECK_THAT(error_of(R"({"jobId": "a", "reason": ")" + std::string(1025, 'r') + R"("})"),
             Catch::Contains("reason is 1025 bytes") && Catch::Contains("at most 1024"));
}

TEST_CASE("wire: the status and event JSON are what protobuf's printer makes of them", "[wire]") {
  using namespace std::chrono;
  using namespace std::chrono_literals;
  // Every field set, text that needs escaping, times with 0, 3, 6 and 9
  // fractional digits; then every field at its default; then bytes that are
  // not UTF-8, which both must carry as U+FFFD.
  core::JobResult full;
  full.job_id = "job-1";
  full.success = true;
  full.logs = "line \"one\"\n\ttab \\ back\x01\x1f\x7f end <b> & \xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x98\x80 \r\b\f";
  full.image_url = "registry.local/app@sha256:abc";
  full.error = "step 2/3 failed: exit status 1";
  full.worker_id = "w-1";
  full.image_digest = "sha256:abc";
  full.redelivered = true;
  full.attempts = 3;
  full.status_id = "run-0123456789abcdef";
  full.stage_durations = {{"building", 1250ms}, {"cloning", 3ms}, {"pushing", 0ms}};
  full.cached_steps = 2;
  full.built_steps = 1;
  full.cancelled = true;
  full.cached_by_step = {true, false};
  const system_clock::time_point epoch_s(seconds(1'700'000'000));
  full.received_at = epoch_s;
  full.started_at = epoch_s + 123ms;
  full.finished_at = epoch_s + 2s + 123456us;
  core::JobResult nanos = full;
  nanos.finished_at = epoch_s + duration_cast<system_clock::duration>(1ns);
  nanos.stage_durations = {{"building", 1ms}};
  const core::JobResult empty;
  core::JobResult broken;
  broken.job_id = "j";
  broken.logs = "bad \xff\xfe bytes \xe2\x82";
  broken.error = "\xc0\xaf overlong";

  for (const core::JobResult* r : std::initializer_list<const core::JobResult*>{&full, &nanos, &empty, &broken}) {
    core::JobResult repaired = *r;
    wire::repair_utf8(repaired.logs);
    wire::repair_utf8(repaired.error);
    const std::string ours = wire::job_response_json(*r);
    const std::string theirs = wire::to_json(wire::to_proto(repaired));
    INFO("ours:   " << ours << "\ntheirs: " << theirs);
    CHECK(same_json(ours, theirs));
    auto back = wire::parse_job_response(ours);
    REQUIRE(back);
    CHECK(back->logs == repaired.logs);
    CHECK(back->finished_at == r->finished_at);
  }
  CHECK_THAT(wire::job_response_json(full), Catch::Contains(R"("receivedAt":"2023-11-14T22:13:20Z")") &&
                                                Catch::Contains(R"("startedAt":"2023-11-14T22:13:20.123Z")") &&
                                                Catch::Contains(R"("finishedAt":"2023-11-14T22:13:22.123456Z")"));
  CHECK_THAT(wire::job_response_json(nanos), Catch::Contains(R"("finishedAt":"2023-11-14T22:13:20.000000001Z")"));
  CHECK_THAT(wire::job_response_json(broken), Catch::Contains("bad \xef\xbf\xbd\xef\xbf\xbd bytes \xef\xbf\xbd"));

  // An event, with and without its result; its time is when it was written.
  const core::ProgressEvent event{"job-1", "w-1", core::Phase::running, "building", "STEP 2/4: RUN \"make\"\t\x02"};
  for (const core::JobResult* result : std::initializer_list<const core::JobResult*>{nullptr, &full}) {
    const auto before = system_clock::now();
    const std::string ours = wire::job_event_json(event, result);
    const auto after = system_clock::now();
    v1::JobEvent parsed;
    REQUIRE(wire::from_json(ours, parsed));
    const auto written = system_clock::time_point(duration_cast<system_clock::duration>(
        seconds(parsed.time().seconds()) + nanoseconds(parsed.time().nanos())));
    CHECK(written >= before);
    CHECK(written <= after);
    v1::JobEvent expected = wire::to_proto(event);
    *expected.mutable_time() = parsed.time();
    if (result) *expected.mutable_result() = wire::to_proto(*result);
    INFO("ours: " << ours);
    CHECK(same_json(ours, wire::to_json(expected)));
  }
}
