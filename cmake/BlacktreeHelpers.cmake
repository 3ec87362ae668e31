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

# blacktree_add_library(<component> <source>...)
# The static library blacktree_<component>, named blacktree::<component> in
# this build (an ALIAS) and in the installed package (EXPORT_NAME) alike.
function(blacktree_add_library component)
  add_library(blacktree_${component} STATIC ${ARGN})
  add_library(blacktree::${component} ALIAS blacktree_${component})
  set_target_properties(blacktree_${component} PROPERTIES EXPORT_NAME ${component})
endfunction()

# blacktree_install_component(<component> TARGETS <target>...)
# Installs the targets of one package component into an export set of its
# own, blacktree-<component>-targets.cmake, which blacktreeConfig.cmake loads
# only when the component (or one that depends on it) is asked for and its
# dependencies are found. Records the component in the global property
# BLACKTREE_INSTALLED_COMPONENTS for the package config.
function(blacktree_install_component component)
  cmake_parse_arguments(PARSE_ARGV 1 arg "" "" "TARGETS")
  if(NOT arg_TARGETS OR arg_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "blacktree_install_component(${component} TARGETS <target>...)")
  endif()
  install(TARGETS ${arg_TARGETS}
    EXPORT blacktree-${component}-targets
    ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
    LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
    RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
  install(EXPORT blacktree-${component}-targets
    NAMESPACE blacktree::
    FILE blacktree-${component}-targets.cmake
    DESTINATION ${BLACKTREE_INSTALL_CMAKEDIR})
  set_property(GLOBAL APPEND PROPERTY BLACKTREE_INSTALLED_COMPONENTS ${component})
endfunction()
