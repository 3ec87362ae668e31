// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// The old name of core::CompletionHandler (completion_handler.hpp), kept so
// code written against it compiles. New code uses CompletionHandler.

#include <blacktree/core/completion_handler.hpp>

namespace blacktree::core::detail {

template <class Signature>
using erased_handler = CompletionHandler<Signature>;

}  // namespace blacktree::core::detail
