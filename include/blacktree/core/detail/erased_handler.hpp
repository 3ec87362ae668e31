// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// A move-only, type-erased completion handler that remembers its associated
// executor (a standard executor) and keeps outstanding work on it until it is completed (asio 1.22
// has no any_completion_handler). Completing it never runs the handler
// inline: the handler is posted to its associated executor, as asio requires
// of asynchronous operations.

#include <asio/associated_executor.hpp>
#include <asio/execution/outstanding_work.hpp>
#include <asio/prefer.hpp>
#include <asio/post.hpp>

#include <memory>
#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>

namespace blacktree::core::detail {

template <class Signature>
class erased_handler;

template <class... Args>
class erased_handler<void(Args...)> {
 public:
  erased_handler() = default;

  template <class Handler, class Executor>
  erased_handler(Handler&& handler, const Executor& fallback)
      : impl_(std::make_unique<model<std::decay_t<Handler>, Executor>>(
            std::forward<Handler>(handler), fallback)) {}

  explicit operator bool() const noexcept { return impl_ != nullptr; }

  /// Posts the handler with `args` to its executor. Leaves *this empty.
  void complete(Args... args) {
    auto taken = std::move(impl_);
    taken->post(std::move(args)...);
  }

 private:
  struct base {
    virtual ~base() = default;
    virtual void post(Args... args) = 0;
  };

  template <class Handler, class Executor>
  struct model final : base {
    using handler_executor = asio::associated_executor_t<Handler, Executor>;
    // The handler's executor, counting this pending operation as outstanding work.
    using work_executor = std::decay_t<decltype(asio::prefer(std::declval<const handler_executor&>(),
                                                             asio::execution::outstanding_work.tracked))>;

    template <class H>
    model(H&& h, const Executor& fallback)
        : handler(std::forward<H>(h)),
          work(asio::prefer(asio::get_associated_executor(handler, fallback),
                            asio::execution::outstanding_work.tracked)) {}

    void post(Args... args) override {
      auto executor = std::move(*work);
      work.reset();
      asio::post(executor, [h = std::move(handler), ... a = std::move(args)]() mutable {
        std::move(h)(std::move(a)...);
      });
    }

    Handler handler;
    std::optional<work_executor> work;
  };

  std::unique_ptr<base> impl_;
};

}  // namespace blacktree::core::detail
