// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
//
// blacktree: the command-line client. `submit` queues a build job (and with
// --wait follows it); `cancel` asks for one to be cancelled; `logs -f`
// follows one; `workers` and `jobs` list what the orchestrator knows. Flags
// only here; the commands are in submit.cpp, cancel.cpp, logs.cpp,
// workers.cpp and jobs.cpp.

#include "../common/service.hpp"
#include "commands.hpp"

#include <blacktree/version.hpp>

#include <fmt/format.h>

#include <chrono>
#include <cstdlib>
#include <set>

namespace {

namespace cli = blacktree::cli;
namespace service = blacktree::service;

// service::YamlConfig flattens `submit: {mq-url: ...}` to "submit-mq-url";
// CLI11 finds a subcommand's option only through the item's parents, so move
// the subcommand's name there. A key whose option's environment variable is
// set is dropped: the environment overrides the file, as in the services.
class SubcommandYamlConfig final : public CLI::Config {
 public:
  SubcommandYamlConfig(const CLI::App* app, std::set<std::string> subcommands)
      : app_(app), subcommands_(std::move(subcommands)) {}

  std::string to_config(const CLI::App*, bool, bool, std::string) const override { return {}; }

  std::vector<CLI::ConfigItem> from_config(std::istream& input) const override {
    auto parsed = yaml_.from_config(input);
    for (auto& item : parsed) {
      const auto dash = item.name.find('-');
      if (dash == std::string::npos || !item.parents.empty()) continue;
      if (const auto sub = item.name.substr(0, dash); subcommands_.count(sub) != 0) {
        item.parents = {sub};
        item.name = item.name.substr(dash + 1);
      }
    }
    std::erase_if(parsed, [this](const CLI::ConfigItem& item) {
      const CLI::App* owner = app_;
      if (!item.parents.empty()) owner = app_->get_subcommand(item.parents.front());  // one of subcommands_
      const CLI::Option* option = owner ? owner->get_option_no_throw("--" + item.name) : nullptr;
      if (option == nullptr || option->get_envname().empty()) return false;
      const char* value = std::getenv(option->get_envname().c_str());
      return value != nullptr && *value != '\0';
    });
    return parsed;
  }

 private:
  const CLI::App* app_;
  service::YamlConfig yaml_;
  std::set<std::string> subcommands_;
};

constexpr const char* exit_codes_text =
    "Exit codes: 0 done (submit --wait, logs -f: the job succeeded); 1 the job failed; 2 the broker or the "
    "orchestrator could not be used; 3 no result within --wait-timeout-s (the job may still run); 64 bad "
    "flags or configuration; 128+signal (130 for Ctrl-C) interrupted while following a job (the job keeps "
    "running).";

// The broker flags of the commands that publish, named as for the orchestrator.
void add_broker_options(CLI::App& command, blacktree::amqp::AmqpOptions& amqp, std::string& password_file,
                        std::uint32_t& connect_timeout_s) {
  amqp.url = "amqp://guest:guest@127.0.0.1:5672/";
  command.add_option("--mq-url", amqp.url,
                     "the broker, amqp[s]://user:password@host:port/vhost; a cluster: one URL per node, "
                     "comma-separated (tried in turn)")
      ->envname("MQ_URL")
      ->capture_default_str();
  command.add_option("--mq-password-file", password_file, "file holding the broker password (overrides the URL's)")
      ->envname("MQ_PASSWORD_FILE");
  command.add_option("--mq-tls-ca-file", amqp.tls.ca_file, "CA bundle for amqps (default: the system's)")
      ->envname("MQ_TLS_CA_FILE");
  command.add_option("--mq-tls-cert-file", amqp.tls.cert_file, "client certificate for amqps")
      ->envname("MQ_TLS_CERT_FILE");
  command.add_option("--mq-tls-key-file", amqp.tls.key_file, "client key for amqps")->envname("MQ_TLS_KEY_FILE");
  command.add_option("--connect-timeout-s", connect_timeout_s,
                     "bound on connecting to the broker and on each of its replies")
      ->check(CLI::Range(1u, 3600u))
      ->capture_default_str();
}

// The flags of the commands that follow a job on the events exchange.
void add_follow_options(CLI::App& command, blacktree::amqp::AmqpOptions& amqp, std::uint32_t& wait_timeout_s,
                        const std::string& what) {
  command.add_option("--events-exchange", amqp.events_exchange,
                     "topic exchange the orchestrator publishes progress to (" + what + ")")
      ->envname("BLACKTREE_EVENTS_EXCHANGE")
      ->capture_default_str();
  command.add_option("--wait-timeout-s", wait_timeout_s, "with " + what + ": give up waiting after this long (exit 3)")
      ->check(CLI::Range(1u, 30u * 24 * 3600))
      ->capture_default_str();
}

void add_cancel_options(CLI::App& cancel, cli::CancelSettings& s, std::string& password_file) {
  cancel.add_option("JOBID", s.job_id, "the id of the job to cancel")->required();
  cancel.add_option("--reason", s.reason, "why, for the job's status (at most 1024 bytes)");
  add_broker_options(cancel, s.amqp, password_file, s.connect_timeout_s);
  cancel.add_option("--cancel-queue", s.amqp.cancel_queue, "queue the orchestrator takes cancel requests from")
      ->envname("BLACKTREE_CANCEL_QUEUE")
      ->capture_default_str();
}

void add_submit_options(CLI::App& submit, cli::SubmitSettings& s, std::string& token_env, std::string& token_file,
                        std::string& password_file) {
  submit.add_option("--repo", s.repo, "repository to build: owner/name (GitHub) or a git URL")->required();
  submit.add_option("--branch", s.branch, "branch to build")->capture_default_str();
  submit.add_option("--dockerfile", s.dockerfile, "Dockerfile path inside the repository")->capture_default_str();
  submit.add_option("--context", s.context, "build context directory inside the repository")->capture_default_str();
  submit.add_option("--image", s.image, "image to push, e.g. registry.example.com/team/app:1.2")->required();
  submit.add_option("--region", s.region, "run only on a worker in this region (the label region=...)");
  submit.add_option("--label", s.labels, "run only on a worker with this label, key=value (repeatable)");
  submit.add_option("--job-id", s.job_id, "the job's id (default: a random UUID v4)");
  submit.add_option("--timeout-s", s.timeout_s, "the job's time limit in seconds (0: the worker's default)")
      ->capture_default_str();
  submit.add_option("--priority", s.priority,
                    "0 to 9, higher first: among jobs waiting for a worker, and on a queue declared with "
                    "x-max-priority (the AMQP priority is set too)")
      ->capture_default_str();
  // The token is never a flag value: argv is visible to every user of the machine (ps, /proc).
  auto* env_opt = submit.add_option("--token-env", token_env,
                                    "environment variable holding the GitHub token for private repositories "
                                    "(unset: no token)")
                      ->capture_default_str();
  submit.add_option("--token-file", token_file, "file holding the GitHub token (instead of --token-env)")
      ->excludes(env_opt);

  add_broker_options(submit, s.amqp, password_file, s.connect_timeout_s);
  submit.add_option("--execute-queue", s.amqp.execute_queue, "queue the orchestrator takes jobs from")
      ->envname("BLACKTREE_EXECUTE_QUEUE")
      ->capture_default_str();
  submit.add_option("--exchange", s.exchange,
                    "exchange to publish to, with the execute queue's name as routing key (default: \"\", "
                    "the default exchange)");
  add_follow_options(submit, s.amqp, s.wait_timeout_s, "--wait");
  submit.add_flag("--wait", s.wait, "follow the job's progress until its result; exit 1 if it fails");
}

void add_logs_options(CLI::App& logs, cli::LogsSettings& s, std::string& password_file) {
  logs.add_option("JOBID", s.job_id, "the id of the job to follow")->required();
  logs.add_flag("-f,--follow", s.follow,
                "print the job's output from now on until it ends; exit 1 if it fails (required: the events "
                "exchange keeps no history, so earlier lines are not shown)");
  add_broker_options(logs, s.amqp, password_file, s.connect_timeout_s);
  add_follow_options(logs, s.amqp, s.wait_timeout_s, "-f");
}

// How the admin commands (workers, jobs) reach the orchestrator: flags, then
// read_orchestrator_flags once they are parsed.
struct OrchestratorFlags {
  std::string token_file;
  service::TlsFlags tls;
};

void add_orchestrator_options(CLI::App& command, cli::OrchestratorConnection& c, OrchestratorFlags& flags) {
  command.add_option("--orchestrator-addr", c.address, "the orchestrator's gRPC address (host:port)")
      ->envname("ORCHESTRATOR_ADDR")
      ->capture_default_str();
  command.add_option("--registration-token-file", flags.token_file,
                     "file holding the orchestrator's registration token (env BLACKTREE_REGISTRATION_TOKEN "
                     "also works)")
      ->envname("BLACKTREE_REGISTRATION_TOKEN_FILE");
  command.add_option("--rpc-timeout-s", c.timeout_s, "how long to wait for the orchestrator's answer")
      ->check(CLI::Range(1u, 3600u))
      ->capture_default_str();
  service::add_tls_options(command, flags.tls, false);
}

void read_orchestrator_flags(const OrchestratorFlags& flags, cli::OrchestratorConnection& c) {
  if (!flags.token_file.empty()) {
    c.token = blacktree::core::Secret(
        service::value_or_usage_error(service::read_secret_file(flags.token_file, "--registration-token-file")));
  } else if (const char* value = std::getenv("BLACKTREE_REGISTRATION_TOKEN"); value && *value) {
    c.token = blacktree::core::Secret(value);
  }
  c.tls = {flags.tls.cert, flags.tls.key, flags.tls.ca, std::chrono::seconds(flags.tls.reload_interval_s)};
  if (c.tls.enabled()) service::value_or_usage_error(blacktree::grpc::check_tls_files(c.tls));
}

// --mq-password-file, when given, overrides the URL's password.
void read_broker_password(const std::string& password_file, blacktree::amqp::AmqpOptions& amqp) {
  if (password_file.empty()) return;
  amqp.password = blacktree::core::Secret(
      service::value_or_usage_error(service::read_secret_file(password_file, "--mq-password-file")));
}

// Usage errors print CLI11's message and one exit code for all of them.
int usage_exit(const CLI::App& app, const CLI::Error& e) {
  const int code = app.exit(e);
  return code == 0 ? cli::exit_ok : cli::exit_usage;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"blacktree: submit build jobs to a blacktree orchestrator, follow them, and see its jobs and workers"};
  app.set_version_flag("--version", std::string(BLACKTREE_VERSION_STRING));
  app.footer(exit_codes_text);
  app.require_subcommand(1);
  app.fallthrough();  // `blacktree submit --config f.yaml ...` works as well as `blacktree --config f.yaml submit`
  service::add_config_file_option(app);
  app.config_formatter(std::make_shared<SubcommandYamlConfig>(
      &app, std::set<std::string>{"submit", "cancel", "logs", "workers", "jobs"}));

  cli::SubmitSettings submit_settings;
  std::string token_env = "GITHUB_TOKEN";
  std::string token_file;
  std::string password_file;
  auto* submit = app.add_subcommand(
      "submit", "queue a build job on the execute queue; with --wait, follow it to its result");
  submit->footer(exit_codes_text);
  add_submit_options(*submit, submit_settings, token_env, token_file, password_file);

  cli::CancelSettings cancel_settings;
  auto* cancel = app.add_subcommand(
      "cancel", "ask the orchestrator to cancel a job: waiting, running, or not yet published");
  cancel->footer(exit_codes_text);
  std::string cancel_password_file;
  add_cancel_options(*cancel, cancel_settings, cancel_password_file);

  cli::LogsSettings logs_settings;
  auto* logs = app.add_subcommand(
      "logs", "with -f: print a job's output from now on until it ends (lines published before are not "
              "kept by the events exchange, so not shown)");
  logs->footer(exit_codes_text);
  std::string logs_password_file;
  add_logs_options(*logs, logs_settings, logs_password_file);

  cli::WorkersSettings workers_settings;
  OrchestratorFlags workers_flags;
  auto* workers = app.add_subcommand("workers", "list the workers registered with the orchestrator");
  workers->footer(exit_codes_text);
  add_orchestrator_options(*workers, workers_settings.orchestrator, workers_flags);
  workers->add_flag("--json", workers_settings.json,
                    "print the reply as JSON (ListWorkersReply, camelCase) instead of a table");

  cli::JobsSettings jobs_settings;
  OrchestratorFlags jobs_flags;
  auto* jobs = app.add_subcommand(
      "jobs", "list the jobs the orchestrator holds (waiting, running, publishing); with --finished also "
              "the last ones it finished");
  jobs->footer(exit_codes_text);
  add_orchestrator_options(*jobs, jobs_settings.orchestrator, jobs_flags);
  jobs->add_flag("--finished", jobs_settings.finished,
                 "also the last jobs it finished (the newest first, at most 100), with their outcome");
  jobs->add_flag("--json", jobs_settings.json, "print the reply as JSON (ListJobsReply, camelCase) instead of a table");

  try {
    app.parse(argc, argv);
    if (*submit) {
      if (!token_file.empty()) {
        submit_settings.token = blacktree::core::Secret(
            service::value_or_usage_error(service::read_secret_file(token_file, "--token-file")));
      } else if (const char* value = std::getenv(token_env.c_str()); value && *value) {
        submit_settings.token = blacktree::core::Secret(value);
      } else if (submit->get_option("--token-env")->count() > 0) {
        fmt::print(stderr, "blacktree: warning: the environment variable {} (--token-env) is not set: "
                           "submitting without a GitHub token\n", token_env);
      }
      read_broker_password(password_file, submit_settings.amqp);
      return cli::run_submit(submit_settings);
    }
    if (*cancel) {
      read_broker_password(cancel_password_file, cancel_settings.amqp);
      return cli::run_cancel(cancel_settings);
    }
    if (*logs) {
      read_broker_password(logs_password_file, logs_settings.amqp);
      return cli::run_logs(logs_settings);
    }
    if (*jobs) {
      read_orchestrator_flags(jobs_flags, jobs_settings.orchestrator);
      return cli::run_jobs(jobs_settings);
    }
    read_orchestrator_flags(workers_flags, workers_settings.orchestrator);
    return cli::run_workers(workers_settings);
  } catch (const CLI::Error& e) {
    return usage_exit(app, e);
  }
}
