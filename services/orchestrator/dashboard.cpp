// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#include "dashboard.hpp"

#include <blacktree/grpc/credentials.hpp>

#include <fmt/chrono.h>
#include <fmt/format.h>
#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <future>
#include <memory>

namespace blacktree::service {
namespace {

using Clock = std::chrono::system_clock;
using std::chrono::duration_cast;
using std::chrono::seconds;

std::string escape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

// "4s", "3m07s", "2h05m".
std::string span(Clock::duration d) {
  const auto s = std::max<long long>(0, duration_cast<seconds>(d).count());
  if (s < 60) return fmt::format("{}s", s);
  if (s < 3600) return fmt::format("{}m{:02}s", s / 60, s % 60);
  return fmt::format("{}h{:02}m", s / 3600, s / 60 % 60);
}

std::string since(Clock::time_point t, Clock::time_point now) {
  return t == Clock::time_point{} ? "-" : span(now - t);
}

std::string between(Clock::time_point from, Clock::time_point to) {
  return from == Clock::time_point{} || to == Clock::time_point{} ? "-" : span(to - from);
}

std::string labels_text(const core::Labels& labels) {
  if (labels.empty()) return "-";
  std::string out;
  for (const auto& [key, value] : labels) out += (out.empty() ? "" : " ") + key + "=" + value;
  return out;
}

std::string outcome(const core::JobView& job) {
  if (job.state != core::BoardState::finished && job.state != core::BoardState::publishing) {
    return std::string(core::to_string(job.state));
  }
  if (job.cancelled) return "cancelled";
  return job.success ? "succeeded" : "failed";
}

std::string job_link(const std::string& id) { return fmt::format("<a href=\"/jobs/{0}\">{0}</a>", escape(id)); }

constexpr std::string_view style = R"(body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1b1b1b}
h1{font-size:1.3em}h2{font-size:1.05em;margin-top:1.6em}table{border-collapse:collapse}
td,th{padding:.2em .7em;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}
th{background:#f3f3f3}.succeeded{color:#11632a}.failed{color:#a01515}.cancelled{color:#8a5a00}
pre{background:#111;color:#e8e8e8;padding:.8em;overflow-x:auto;max-height:70vh}
.totals span{margin-right:1.4em}.muted{color:#777}form{margin-top:1em}
)";

// Later lines of a job page's log, from its server-sent events (the page
// works without it: it then shows the lines it was rendered with).
constexpr std::string_view script = R"((function () {
  var log = document.getElementById('log');
  if (!log || !window.EventSource) return;
  var state = document.getElementById('state');
  var source = new EventSource(log.getAttribute('data-events') + '?from=' + log.getAttribute('data-next'));
  source.onmessage = function (e) {
    var atEnd = window.innerHeight + window.scrollY >= document.body.offsetHeight - 4;
    log.appendChild(document.createTextNode(e.data + '\n'));
    if (atEnd) window.scrollTo(0, document.body.scrollHeight);
  };
  source.addEventListener('end', function (e) {
    if (state) state.textContent = e.data;
    source.close();
  });
})();
)";

std::string page(std::string_view title, std::string_view head_extra, const std::string& body) {
  return fmt::format(
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
      "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">{}"
      "<title>{}</title><link rel=\"stylesheet\" href=\"/static/dashboard.css\"></head>\n<body>\n{}\n"
      "<script src=\"/static/dashboard.js\"></script></body></html>\n",
      head_extra, escape(title), body);
}

void secure_headers(httplib::Response& res) {
  res.set_header("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; "
                                            "connect-src 'self'; form-action 'self'; frame-ancestors 'none'");
  res.set_header("X-Content-Type-Options", "nosniff");
  res.set_header("Referrer-Policy", "no-referrer");
  res.set_header("Cache-Control", "no-store");
}

std::string index_body(const DashboardSource& src) {
  const auto now = Clock::now();
  const auto steady_now = std::chrono::steady_clock::now();
  const auto stats = src.stats();
  const auto jobs = src.board->jobs(true);
  std::string out = fmt::format("<h1>blacktree {}</h1>\n", escape(src.title));

  // Totals, and rates over the finished jobs the board remembers.
  std::size_t done_last_5m = 0;
  for (const auto& job : jobs) {
    if (job.state == core::BoardState::finished && job.finished_at != Clock::time_point{} &&
        now - job.finished_at <= std::chrono::minutes(5))
      ++done_last_5m;
  }
  out += fmt::format(
      "<p class=\"totals\"><span>received <b id=\"received\">{}</b></span><span>succeeded <b>{}</b></span>"
      "<span>failed <b>{}</b></span><span>cancelled <b>{}</b></span><span>lost <b>{}</b></span>"
      "<span>dead-lettered <b>{}</b></span><span>in flight <b id=\"in-flight\">{}</b></span>"
      "<span>finished in the last 5 min <b>{}</b> ({:.1f}/min)</span></p>\n",
      stats.received, stats.succeeded, stats.failed, stats.cancelled, stats.lost, stats.dead_lettered,
      stats.in_flight, done_last_5m, static_cast<double>(done_last_5m) / 5.0);

  if (src.queue) out += fmt::format("<p id=\"queue\">In the broker: {}</p>\n", escape(src.queue()));

  out += "<h2>Workers</h2>\n<table id=\"workers\"><tr><th>worker</th><th>state</th><th>labels</th>"
         "<th>slots</th><th>running</th><th>last seen</th><th>address</th><th>version</th></tr>\n";
  auto workers = src.workers();
  std::sort(workers.begin(), workers.end(), [](const auto& a, const auto& b) { return a.info->id < b.info->id; });
  for (const auto& w : workers) {
    if (!w.info) continue;
    std::string running;
    for (const auto& job : jobs) {
      if (job.state == core::BoardState::running && job.worker_id == w.info->id)
        running += (running.empty() ? "" : " ") + job_link(job.id);
    }
    const std::string seen =
        w.last_seen == std::chrono::steady_clock::time_point{} ? "-" : span(steady_now - w.last_seen) + " ago";
    out += fmt::format(
        "<tr data-worker=\"{0}\"><td>{0}</td><td>{1}</td><td>{2}</td><td>{3}/{4}</td><td>{5}</td><td>{6}</td>"
        "<td>{7}</td><td>{8}</td></tr>\n",
        escape(w.info->id), core::to_string(w.state), escape(labels_text(w.info->labels)), w.in_use,
        w.info->capacity, running.empty() ? "-" : running, seen, escape(w.info->address), escape(w.info->version));
  }
  out += "</table>\n";

  out += "<h2>Jobs in flight</h2>\n<table id=\"in-flight-jobs\"><tr><th>job</th><th>state</th><th>worker</th>"
         "<th>stage</th><th>age</th><th>priority</th><th>labels</th><th>output</th></tr>\n";
  std::size_t held = 0;
  for (const auto& job : jobs) {
    if (job.state == core::BoardState::finished) continue;
    ++held;
    out += fmt::format(
        "<tr data-job=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>"
        "<td>{} lines</td></tr>\n",
        escape(job.id), job_link(job.id), core::to_string(job.state), escape(job.worker_id.empty() ? "-" : job.worker_id),
        escape(job.stage.empty() ? "-" : job.stage), since(job.received_at, now), job.priority,
        escape(labels_text(job.labels)), job.lines);
  }
  if (held == 0) out += "<tr><td colspan=\"8\" class=\"muted\">none</td></tr>\n";
  out += "</table>\n";

  out += "<h2>Waiting for a worker, by labels</h2>\n<table id=\"backlog\"><tr><th>labels</th><th>jobs</th>"
         "<th>longest wait</th></tr>\n";
  const auto backlog = src.board->backlog();
  for (const auto& b : backlog) {
    out += fmt::format("<tr><td>{}</td><td>{}</td><td>{}</td></tr>\n", escape(labels_text(b.labels)), b.jobs,
                       since(b.oldest, now));
  }
  if (backlog.empty()) out += "<tr><td colspan=\"3\" class=\"muted\">none</td></tr>\n";
  out += "</table>\n<p class=\"muted\">Jobs still in the broker's queue are not shown: the orchestrator takes "
         "only what it can place.</p>\n";

  out += "<h2>Finished</h2>\n<table id=\"finished\"><tr><th>job</th><th>outcome</th><th>worker</th>"
         "<th>waited</th><th>ran</th><th>finished</th><th>error</th></tr>\n";
  for (const auto& job : jobs) {
    if (job.state != core::BoardState::finished) continue;
    const std::string result = outcome(job);
    out += fmt::format(
        "<tr data-job=\"{}\"><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} ago</td>"
        "<td>{}</td></tr>\n",
        escape(job.id), job_link(job.id), result, result, escape(job.worker_id.empty() ? "-" : job.worker_id),
        between(job.received_at, job.started_at), between(job.started_at, job.finished_at),
        since(job.finished_at, now), escape(job.error));
  }
  out += "</table>\n";
  return out;
}

std::string job_body(const DashboardSource& src, const core::JobView& job, const core::JobBoard::Tail& tail,
                     std::string_view notice) {
  const auto now = Clock::now();
  std::string out = fmt::format("<p><a href=\"/\">&larr; all jobs</a></p>\n<h1>job {}</h1>\n", escape(job.id));
  if (!notice.empty()) out += fmt::format("<p id=\"notice\"><b>{}</b></p>\n", escape(notice));
  out += fmt::format(
      "<table id=\"job\"><tr><th>state</th><td id=\"state\">{}</td></tr><tr><th>worker</th><td>{}</td></tr>"
      "<tr><th>stage</th><td>{}</td></tr><tr><th>received</th><td>{} ago</td></tr>"
      "<tr><th>waited</th><td>{}</td></tr><tr><th>ran</th><td>{}</td></tr><tr><th>priority</th><td>{}</td></tr>"
      "<tr><th>labels</th><td>{}</td></tr><tr><th>output</th><td>{} lines, {} bytes</td></tr>",
      outcome(job), escape(job.worker_id.empty() ? "-" : job.worker_id), escape(job.stage.empty() ? "-" : job.stage),
      since(job.received_at, now), between(job.received_at, job.started_at),
      job.finished_at == Clock::time_point{} ? (job.started_at == Clock::time_point{} ? "-" : since(job.started_at, now))
                                             : between(job.started_at, job.finished_at),
      job.priority, escape(labels_text(job.labels)), job.lines, job.log_bytes);
  if (!job.error.empty()) out += fmt::format("<tr><th>error</th><td id=\"error\">{}</td></tr>", escape(job.error));
  out += "</table>\n";
  const bool more = !tail.ended;
  std::string lines;
  if (!tail.lines.empty() && tail.lines.front().seq > 0)
    lines += fmt::format("[... {} earlier lines not kept ...]\n", tail.lines.front().seq);
  for (const auto& line : tail.lines) lines += escape(line.text) + "\n";
  out += fmt::format("<h2>Output</h2>\n<pre id=\"log\" data-events=\"/jobs/{}/events\" data-next=\"{}\">{}</pre>\n",
                     escape(job.id), tail.next, lines);
  if (more) out += "<noscript><p class=\"muted\">Reload for newer lines (with JavaScript they appear as they come).</p></noscript>\n";
  if (!src.admin_token.empty() && more) {
    out += fmt::format(
        "<form method=\"post\" action=\"/jobs/{}/cancel\"><input type=\"password\" name=\"token\" "
        "placeholder=\"admin token\" required> <input name=\"reason\" placeholder=\"reason\" maxlength=\"1024\"> "
        "<button type=\"submit\">Cancel the job</button></form>\n",
        escape(job.id));
  }
  return out;
}

// Server-sent events: one `data:` line per line of output (a line holds no
// newline; a stray \r is dropped), numbered by `id:`, then `event: end`.
std::string sse(const std::vector<core::BoardLine>& lines) {
  std::string out;
  for (const auto& line : lines) {
    std::string text = line.text;
    std::erase(text, '\r');
    std::replace(text.begin(), text.end(), '\n', ' ');
    out += fmt::format("id: {}\ndata: {}\n\n", line.seq, text);
  }
  return out;
}

bool authorized(const DashboardSource& src, const httplib::Request& req) {
  std::string given = req.get_param_value("token");
  if (given.empty()) {
    const std::string header = req.get_header_value("Authorization");
    if (header.rfind("Bearer ", 0) == 0) given = header.substr(7);
  }
  return !given.empty() && grpc::same_secret(given, src.admin_token);
}

}  // namespace

void add_dashboard(httplib::Server& server, DashboardSource source) {
  auto src = std::make_shared<const DashboardSource>(std::move(source));
  auto streams = std::make_shared<std::atomic<std::size_t>>(0);

  server.Get("/", [src](const httplib::Request&, httplib::Response& res) {
    secure_headers(res);
    res.set_content(page("blacktree " + src->title, "<meta http-equiv=\"refresh\" content=\"5\">", index_body(*src)),
                    "text/html; charset=utf-8");
  });
  server.Get("/static/dashboard.css", [](const httplib::Request&, httplib::Response& res) {
    secure_headers(res);
    res.set_content(std::string(style), "text/css; charset=utf-8");
  });
  server.Get("/static/dashboard.js", [](const httplib::Request&, httplib::Response& res) {
    secure_headers(res);
    res.set_content(std::string(script), "text/javascript; charset=utf-8");
  });

  server.Get(R"(/jobs/([A-Za-z0-9._:-]{1,128}))", [src](const httplib::Request& req, httplib::Response& res) {
    secure_headers(res);
    const std::string id = req.matches[1];
    const auto job = src->board->job(id);
    if (!job) {
      res.status = 404;
      res.set_content(page("job " + id, "", fmt::format("<p><a href=\"/\">&larr; all jobs</a></p><h1>job {}</h1><p>"
                                                        "This orchestrator does not hold it and has not finished it "
                                                        "recently.</p>",
                                                        escape(id))),
                      "text/html; charset=utf-8");
      return;
    }
    const auto tail = src->board->lines(id, 0, std::chrono::milliseconds(0));
    res.set_content(page("job " + id, "", job_body(*src, *job, tail, req.get_param_value("notice"))),
                    "text/html; charset=utf-8");
  });

  server.Get(R"(/jobs/([A-Za-z0-9._:-]{1,128})/events)", [src, streams](const httplib::Request& req,
                                                                         httplib::Response& res) {
    secure_headers(res);
    const std::string id = req.matches[1];
    if (!src->board->job(id)) {
      res.status = 404;
      res.set_content("no such job\n", "text/plain");
      return;
    }
    if (streams->fetch_add(1) >= src->max_streams) {
      streams->fetch_sub(1);
      res.status = 503;
      res.set_content("too many live log tails open; try again later\n", "text/plain");
      return;
    }
    std::uint64_t from = 0;
    if (req.has_param("from")) from = std::strtoull(req.get_param_value("from").c_str(), nullptr, 10);
    if (const auto last = req.get_header_value("Last-Event-ID"); !last.empty())
      from = std::strtoull(last.c_str(), nullptr, 10) + 1;
    auto next = std::make_shared<std::uint64_t>(from);
    res.set_chunked_content_provider(
        "text/event-stream",
        [src, id, next](std::size_t, httplib::DataSink& sink) {
          const auto tail = src->board->lines(id, *next, std::chrono::seconds(15));
          if (tail.closed || !tail.known) {
            sink.done();
            return true;
          }
          std::string chunk = tail.lines.empty() && !tail.ended ? ": still running\n\n" : sse(tail.lines);
          *next = tail.next;
          if (tail.ended) {
            const auto job = src->board->job(id);
            chunk += fmt::format("event: end\ndata: {}\n\n", job ? outcome(*job) : std::string("finished"));
          }
          if (!sink.write(chunk.data(), chunk.size())) return false;  // the client went away
          if (tail.ended) sink.done();
          return true;
        },
        [streams](bool) { streams->fetch_sub(1); });
  });

  server.Post(R"(/jobs/([A-Za-z0-9._:-]{1,128})/cancel)", [src](const httplib::Request& req, httplib::Response& res) {
    secure_headers(res);
    const std::string id = req.matches[1];
    if (src->admin_token.empty() || !src->cancel) {
      res.status = 403;
      res.set_content("this dashboard is read-only: no admin token is configured\n", "text/plain");
      return;
    }
    if (!authorized(*src, req)) {
      res.status = 403;
      res.set_content("the admin token is missing or wrong\n", "text/plain");
      return;
    }
    std::string reason = req.get_param_value("reason");
    if (reason.size() > 1024) reason.resize(1024);
    if (reason.empty()) reason = "cancelled from the dashboard";
    auto outcome_promise = std::make_shared<std::promise<core::CancelOutcome>>();
    auto outcome_future = outcome_promise->get_future();
    std::string notice = "cancel not taken: the orchestrator is stopping";
    if (src->cancel(id, reason, [outcome_promise](core::CancelOutcome o) { outcome_promise->set_value(o); }))
      notice = "cancel: " + std::string(core::to_string(outcome_future.get()));
    res.status = 303;
    res.set_header("Location", "/jobs/" + id + "?notice=" + httplib::detail::encode_query_param(notice));
  });
}

}  // namespace blacktree::service
