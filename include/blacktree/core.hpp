// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// Everything in blacktree::core, for programs that want one include.
#include <blacktree/core/completion_handler.hpp>
#include <blacktree/core/concepts.hpp>
#include <blacktree/core/dispatcher.hpp>
#include <blacktree/core/error.hpp>
#include <blacktree/core/error_category.hpp>
#include <blacktree/core/health_monitor.hpp>
#include <blacktree/core/in_memory.hpp>
#include <blacktree/core/job.hpp>
#include <blacktree/core/job_board.hpp>
#include <blacktree/core/result.hpp>
#include <blacktree/core/worker_pool.hpp>
