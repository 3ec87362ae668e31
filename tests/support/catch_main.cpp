// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
//
// Catch2 v2's runner, in a TU of its own so the (slow) main is compiled once
// and never again when a test file changes.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
