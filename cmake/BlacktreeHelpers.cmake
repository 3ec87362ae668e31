# Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#
# Small helpers shared by blacktree's own CMakeLists files. Nothing here is
# installed: consumers get targets, not our build policy.

include_guard(GLOBAL)

# blacktree_read_version(<header> <out-var>)
# Parses BLACKTREE_VERSION_MAJOR/MINOR/PATCH out of version.hpp, the single
# source of truth, into "<major>.<minor>.<patch>". Runs before project().
function(blacktree_read_version header out_var)
  file(STRINGS "${header}" lines REGEX "^#define BLACKTREE_VERSION_(MAJOR|MINOR|PATCH) ")
  foreach(part MAJOR MINOR PATCH)
    if(NOT lines MATCHES "#define BLACKTREE_VERSION_${part} ([0-9]+)")
      message(FATAL_ERROR "blacktree: cannot read BLACKTREE_VERSION_${part} from ${header}")
    endif()
    set(${part} "${CMAKE_MATCH_1}")
  endforeach()
  set(${out_var} "${MAJOR}.${MINOR}.${PATCH}" PARENT_SCOPE)
endfunction()

# blacktree_target_warnings(<target>...)
# Our warning policy, PRIVATE to our own compiled targets so it never reaches a
# consumer's compile line ({fmt} does the same). BLACKTREE_WERROR turns the
# warnings into errors (CI builds with it ON).
function(blacktree_target_warnings)
  foreach(target IN LISTS ARGV)
    if(MSVC)
      target_compile_options(${target} PRIVATE /W4 $<$<BOOL:${BLACKTREE_WERROR}>:/WX>)
    else()
      target_compile_options(${target} PRIVATE
        -Wall -Wextra -Wpedantic -Wshadow
        $<$<BOOL:${BLACKTREE_WERROR}>:-Werror>)
    endif()
  endforeach()
endfunction()
