// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
//
// The compiled part of blacktree::core: the non-template bodies from the
// *-inl.hpp headers, and the worker pools the library ships, instantiated once.
#ifdef BLACKTREE_HEADER_ONLY
#error "core.cpp is the compiled library; do not build it with BLACKTREE_HEADER_ONLY"
#endif

#include <blacktree/core/error-inl.hpp>
#include <blacktree/core/in_memory-inl.hpp>
#include <blacktree/core/job-inl.hpp>
#include <blacktree/core/job_board-inl.hpp>
#include <blacktree/core/worker_pool-inl.hpp>

namespace blacktree::core {
template class BasicWorkerPool<std::mutex>;
template class BasicWorkerPool<detail::null_mutex>;
}  // namespace blacktree::core
