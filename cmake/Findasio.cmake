# Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#
# Findasio
# --------
# Finds standalone (non-Boost) asio, which is header-only and ships neither a
# CMake package config nor a pkg-config file on Debian (libasio-dev).
#
# Result: the INTERFACE IMPORTED target asio::asio, and the variables
#   asio_FOUND, asio_INCLUDE_DIR, asio_VERSION
# Hints:  asio_ROOT (CMake >= 3.12 honours <Package>_ROOT), CMAKE_PREFIX_PATH.
#
# Installed next to blacktreeConfig.cmake so find_dependency(asio) works for
# consumers of the installed package. If something (a parent project, a
# package manager's config) already made asio::asio, that target is used as is.

if(TARGET asio::asio)
  set(asio_FOUND TRUE)
  return()
endif()

find_path(asio_INCLUDE_DIR
  NAMES asio.hpp
  DOC "Directory holding standalone asio's asio.hpp")
mark_as_advanced(asio_INCLUDE_DIR)

if(asio_INCLUDE_DIR AND EXISTS "${asio_INCLUDE_DIR}/asio/version.hpp")
  # asio/version.hpp: #define ASIO_VERSION 102201 // 1.22.1
  file(STRINGS "${asio_INCLUDE_DIR}/asio/version.hpp" _asio_version_line
       REGEX "^#define ASIO_VERSION [0-9]+")
  if(_asio_version_line MATCHES "ASIO_VERSION ([0-9]+)")
    math(EXPR _asio_major "${CMAKE_MATCH_1} / 100000")
    math(EXPR _asio_minor "${CMAKE_MATCH_1} / 100 % 1000")
    math(EXPR _asio_patch "${CMAKE_MATCH_1} % 100")
    set(asio_VERSION "${_asio_major}.${_asio_minor}.${_asio_patch}")
  endif()
  unset(_asio_version_line)
  unset(_asio_major)
  unset(_asio_minor)
  unset(_asio_patch)
endif()

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(asio
  REQUIRED_VARS asio_INCLUDE_DIR
  VERSION_VAR asio_VERSION)

if(asio_FOUND AND NOT TARGET asio::asio)
  add_library(asio::asio INTERFACE IMPORTED)
  set_target_properties(asio::asio PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${asio_INCLUDE_DIR}")
  # asio <= 1.22 decides between aligned_alloc/free and operator new/delete
  # from _GLIBCXX_HAVE_ALIGNED_ALLOC, which is only defined once some standard
  # header has been included. A TU that includes asio first and one that does
  # not then disagree (an ODR violation): memory allocated with operator new
  # in one is released with free() in the other, which AddressSanitizer
  # reports as alloc-dealloc-mismatch. One choice for every TU fixes it.
  set_property(TARGET asio::asio APPEND PROPERTY
    INTERFACE_COMPILE_DEFINITIONS ASIO_DISABLE_STD_ALIGNED_ALLOC)
  # asio needs threads for its schedulers; say so here so that any user of
  # asio::asio links them, not only blacktree's own targets.
  find_package(Threads QUIET)
  if(TARGET Threads::Threads)
    set_property(TARGET asio::asio APPEND PROPERTY INTERFACE_LINK_LIBRARIES Threads::Threads)
  endif()
endif()
