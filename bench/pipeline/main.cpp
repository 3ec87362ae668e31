// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
//
// The build pipeline's overhead: the same repository cloned, built and pushed
// (a) by BuildPipelineRunner and (b) by the same three commands run by hand
// (one /bin/sh script: git clone, buildah bud, buildah push), in one run,
// against the same local git HTTP server and docker-registry the pipeline
// tests use. Target: overhead <= 5%.
//
//   blacktree_bench_pipeline [iterations=5]
//
// Runs are interleaved (pipeline, by hand, pipeline, ...) after one warm-up
// of each, so that machine load drifts affect both alike; the registry holds
// the layers after the warm-up, so both push the same way.

#include <blacktree/worker/build_pipeline.hpp>

#include <CLI/CLI.hpp>

#include "bench_support.hpp"
#include "pipeline_support.hpp"

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <random>

namespace bw = blacktree::worker;
namespace core = blacktree::core;
using namespace blacktree::test;
using namespace blacktree::bench;

int main(int argc, char** argv) {
  CLI::App app{"blacktree_bench_pipeline: BuildPipelineRunner vs the same git/buildah commands by hand",
               "blacktree_bench_pipeline"};
  int iterations = 5;
  app.add_option("iterations", iterations, "builds per side")->check(CLI::PositiveNumber)->capture_default_str();
  bool cache = false;
  app.add_flag("--cache", cache,
               "the image cache instead: a realistic 300 MB base, cold per-job store vs warm shared store vs "
               "buildah --layers by hand");
  CLI11_PARSE(app, argc, argv);
  try {
    if (cache) return blacktree::bench::run_cache_bench(iterations);
    TempDir tmp("blacktree-bench-pipeline-");
    std::random_device rd;
    const std::string token = "ghs_bench" + std::to_string(rd()) + std::to_string(rd());
    GitServer git(tmp / "git", token);
    Registry registry(tmp / "registry", "pusher", "pw-bench-" + std::to_string(rd()));
    write_file(tmp / "registry-password", registry.password() + "\n");
    git.create_repo("acme/app",
                    {{"app/Dockerfile",
                      "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n"
                      "RUN mkdir -p /srv && echo built > /srv/run.txt\nCOPY hello.txt /srv/hello.txt\n"},
                     {"app/hello.txt", "hello\n"}},
                    "main", {}, {{"app/busybox", "/bin/busybox"}});

    bw::BuildPipelineRunner runner(pipeline_config(tmp.path(), git, registry));

    core::Job job;
    job.id = "bench";
    job.payload =
        core::Payload(bw::BuildSpec{"acme/app", "main", "app/Dockerfile", "app", "app:bench", core::Secret(token), {}});

    // The same three commands by hand, as a person (or the seed's worker) would
    // run them: same storage driver, isolation, auth file and digest file.
    const fs::path hand = tmp / "by-hand";
    const std::string header =
        "Authorization: Basic " + bw::base64_encode("x-access-token:" + token);
    const std::string storage = "--root " + quote((hand / "storage").string()) + " --runroot " +
                                quote((hand / "run").string()) + " --storage-driver vfs";
    const std::string ref = registry.host() + "/bench/app:by-hand";
    const std::string script =
        "set -e\n"
        "mkdir -p " + quote(hand.string()) + "\n"
        "printf '{\"auths\":{\"%s\":{\"auth\":\"%s\"}}}' " + quote(registry.host()) + " " +
        quote(bw::base64_encode(registry.user() + ":" + registry.password())) + " > " +
        quote((hand / "auth.json").string()) + "\n" +
        "GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=http.extraHeader GIT_CONFIG_VALUE_0=" + quote(header) +
        " git clone -q --depth=1 --single-branch --branch main " + quote(git.base_url() + "/acme/app.git") + " " +
        quote((hand / "src").string()) + "\n" +
        "buildah " + storage + " bud -q --isolation chroot --tls-verify=false -f " +
        quote((hand / "src/app/Dockerfile").string()) + " -t " + quote(ref) + " " + quote((hand / "src/app").string()) +
        " > /dev/null\n" +
        "buildah " + storage + " push -q --tls-verify=false --authfile " + quote((hand / "auth.json").string()) +
        " --digestfile " + quote((hand / "digest").string()) + " " + quote(ref) + " " + quote("docker://" + ref) + "\n" +
        "rm -rf " + quote(hand.string()) + "\n";

    const auto run_pipeline = [&] {
      const auto t0 = Clock::now();
      const auto r = runner.run(job, {}, {});
      const double took = seconds_since(t0);
      runner.after_result(job);
      runner.settle();
      if (!r.success) throw std::runtime_error("pipeline failed: " + r.error);
      return took;
    };
    const auto run_by_hand = [&] {
      const auto t0 = Clock::now();
      run_ok({"/bin/sh", "-c", script});
      return seconds_since(t0);
    };

    run_pipeline();  // warm-up: registry blobs, page cache
    run_by_hand();
    std::vector<double> pipeline_s;
    std::vector<double> hand_s;
    for (int i = 0; i < iterations; ++i) {
      pipeline_s.push_back(run_pipeline());
      hand_s.push_back(run_by_hand());
      std::fprintf(stderr, "iteration %d: pipeline %.3fs, by hand %.3fs\n", i + 1, pipeline_s.back(), hand_s.back());
    }
    const double p = median(pipeline_s);
    const double h = median(hand_s);
    std::printf("clone+build+push, %d iterations (medians)\n", iterations);
    std::printf("  by hand (git, buildah bud, buildah push): %.3f s\n", h);
    std::printf("  BuildPipelineRunner:                      %.3f s\n", p);
    std::printf("  ratio pipeline/by-hand: %.3f (overhead %+.1f%%; target <= +5%%)\n", p / h, (p / h - 1) * 100);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "benchmark failed: %s\n", e.what());
    return 1;
  }
}
