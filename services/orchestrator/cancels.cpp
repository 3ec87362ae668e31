// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#include "cancels.hpp"

#include "../common/service.hpp"

#include <blacktree/wire/wire.hpp>

namespace blacktree::service {

void CancelGate::open(Fn fn) {
  std::lock_guard lock(mutex_);
  fn_ = std::move(fn);
}

void CancelGate::close() {
  std::lock_guard lock(mutex_);
  fn_ = nullptr;
}

bool CancelGate::submit(std::string job_id, std::string reason, Done done) {
  std::lock_guard lock(mutex_);
  if (!fn_) return false;
  fn_(std::move(job_id), std::move(reason), std::move(done));
  return true;
}

void CancelReader::receive() {
  source_.async_receive([self = shared_from_this()](std::error_code ec, amqp::AmqpDelivery delivery) {
    if (ec) return;  // the source stopped
    self->on_request(delivery);
    self->receive();
  });
}

void CancelReader::on_request(amqp::AmqpDelivery& delivery) {
  auto request = wire::parse_cancel_request(delivery.body());
  if (!request) {
    const std::string why = request.error().message();
    log_event(*log_, spdlog::level::warn, {.event = "job.cancel", .outcome = "dead_lettered", .reason = why},
              "cancel request dead-lettered: {}", why);
    source_.reject(delivery, core::Disposition::dead_letter, why);
    return;
  }
  // The gate's function logs the outcome.
  if (gate_.submit(request->job_id(), request->reason(), [](core::CancelOutcome) {})) {
    source_.ack(delivery);
  } else {
    source_.reject(delivery, core::Disposition::requeue, "the orchestrator is stopping");
  }
}

std::string_view short_name(core::CancelOutcome outcome) noexcept {
  switch (outcome) {
    case core::CancelOutcome::cancelled: return "cancelled";
    case core::CancelOutcome::stopping: return "stopping";
    case core::CancelOutcome::finished: return "finished";
    case core::CancelOutcome::remembered: return "remembered";
  }
  return "unknown";
}

}  // namespace blacktree::service
