// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

#include <asio/associated_executor.hpp>
#include <asio/execution/outstanding_work.hpp>
#include <asio/prefer.hpp>
#include <asio/post.hpp>

#include <memory>
#include <optional>
#include <type_traits>
#include <utility>

namespace blacktree::core {

template <class Signature>
class CompletionHandler;

/// A completion handler of any type, kept until an asynchronous operation
/// ends: what a source, transport or sink stores between the initiating
/// `async_*` call and its completion, when that completion comes from another
/// thread, a callback or a later event (asio 1.22 has no
/// `any_completion_handler`; this is the part of it the concepts need).
///
///     template <class Token>
///     auto async_publish(const JobResult& r, Token&& token) {
///       return asio::async_initiate<Token, void(std::error_code)>(
///           [this, &r](auto handler) {
///             start(r, CompletionHandler<void(std::error_code)>(std::move(handler), executor_));
///           }, token);
///     }
///     ... later, from any thread:  handler.complete(ec);
///
/// What it guarantees, so that every model of concepts.hpp keeps asio's rules
/// without writing them again:
///  - move-only, so move-only handlers (asio's own are) fit, unlike std::function;
///  - the handler runs on its associated executor, or on `fallback` when it
///    has none (a plain lambda), and always through asio::post: never inside
///    the call to complete(), so never inside the initiating function either;
///  - until completed, the handler's executor counts the operation as
///    outstanding work (`io_context::run()` does not return while it is pending,
///    as for a pending socket read).
///
/// Cancellation is the operation's business: read the handler's slot
/// (`asio::get_associated_cancellation_slot(handler)`) before wrapping it.
template <class... Args>
class CompletionHandler<void(Args...)> {
 public:
  /// Empty: holds no handler (`complete` must not be called).
  CompletionHandler() = default;

  template <class Handler, class Executor>
  CompletionHandler(Handler&& handler, const Executor& fallback)
      : impl_(std::make_unique<model<std::decay_t<Handler>, Executor>>(std::forward<Handler>(handler), fallback)) {}

  CompletionHandler(CompletionHandler&&) noexcept = default;
  CompletionHandler& operator=(CompletionHandler&&) noexcept = default;

  /// Holds a handler not yet completed.
  explicit operator bool() const noexcept { return impl_ != nullptr; }

  /// Posts the handler with `args` to its executor and leaves *this empty, so
  /// a handler is completed at most once. Requires a handler (`*this` true).
  /// Destroying a CompletionHandler without completing it destroys the
  /// handler uninvoked, as an io_context does with the handlers it never ran.
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

}  // namespace blacktree::core
