// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// The one place the version lives: the top-level CMakeLists.txt parses these
// three lines into project(blacktree VERSION ...), so the package version,
// the installed config and the headers can never disagree.
#define BLACKTREE_VERSION_MAJOR 0
#define BLACKTREE_VERSION_MINOR 1
#define BLACKTREE_VERSION_PATCH 0

// One integer for preprocessor comparisons, like FMT_VERSION: 0.1.0 is 100,
// 1.2.3 would be 10203. `#if BLACKTREE_VERSION >= 200` works.
#define BLACKTREE_VERSION \
  (BLACKTREE_VERSION_MAJOR * 10000 + BLACKTREE_VERSION_MINOR * 100 + BLACKTREE_VERSION_PATCH)

#define BLACKTREE_DETAIL_STR2(x) #x
#define BLACKTREE_DETAIL_STR(x) BLACKTREE_DETAIL_STR2(x)
/// "0.1.0"
#define BLACKTREE_VERSION_STRING                                                       \
  BLACKTREE_DETAIL_STR(BLACKTREE_VERSION_MAJOR)                                        \
  "." BLACKTREE_DETAIL_STR(BLACKTREE_VERSION_MINOR) "." BLACKTREE_DETAIL_STR(BLACKTREE_VERSION_PATCH)
