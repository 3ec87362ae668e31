# Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#
# The one place blacktree looks for rabbitmq-c. Provides rabbitmq::rabbitmq:
# rabbitmq-c's own CMake package where it is installed (Debian's
# librabbitmq-dev ships one), pkg-config's librabbitmq otherwise. Installed next
# to blacktreeConfig.cmake, so find_dependency(rabbitmq-c) works for consumers.
#   find_package(rabbitmq-c REQUIRED)
#   target_link_libraries(app PRIVATE rabbitmq::rabbitmq)

find_package(rabbitmq-c CONFIG QUIET)
if(NOT TARGET rabbitmq::rabbitmq)
  find_package(PkgConfig QUIET)
  if(PkgConfig_FOUND)
    pkg_check_modules(_blacktree_librabbitmq QUIET IMPORTED_TARGET GLOBAL librabbitmq)
    if(TARGET PkgConfig::_blacktree_librabbitmq)
      add_library(rabbitmq::rabbitmq ALIAS PkgConfig::_blacktree_librabbitmq)
    endif()
  endif()
endif()

if(TARGET rabbitmq::rabbitmq)
  set(_blacktree_rabbitmq_target rabbitmq::rabbitmq)
endif()
include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(rabbitmq-c
  REQUIRED_VARS _blacktree_rabbitmq_target
  REASON_FAILURE_MESSAGE "install rabbitmq-c (Debian: librabbitmq-dev)")
unset(_blacktree_rabbitmq_target)
