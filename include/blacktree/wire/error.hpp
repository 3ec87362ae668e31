// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

#include <system_error>

namespace blacktree::wire {

/// Why a message could not be read. The core::Error that carries one says
/// which field and which rule, in the JSON's own names ("repoUrl").
enum class errc {
  invalid_json = 1,  ///< not JSON, not an object, or a field of the wrong type
  missing_field,     ///< a required field is absent or empty
  invalid_field,     ///< a field breaks its rule (the jobId's length or characters)
};

}  // namespace blacktree::wire

template <>
struct std::is_error_code_enum<blacktree::wire::errc> : std::true_type {};

namespace blacktree::wire {

/// The category of wire::errc ("blacktree.wire").
const std::error_category& error_category() noexcept;

inline std::error_code make_error_code(errc e) noexcept { return {static_cast<int>(e), error_category()}; }

}  // namespace blacktree::wire
