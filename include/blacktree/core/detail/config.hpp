// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// Header-mostly, spdlog style: non-template bodies live in `*-inl.hpp` and are
// compiled once into blacktree::core (src/core/core.cpp). Define
// BLACKTREE_HEADER_ONLY (or link blacktree::core-header-only) to get them inline.
#ifdef BLACKTREE_HEADER_ONLY
#define BLACKTREE_INLINE inline
#else
#define BLACKTREE_INLINE
#endif
