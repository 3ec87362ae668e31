# Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#
# Driver for the consumer tests (cmake -P; registered by tests/CMakeLists.txt).
#   MODE=install           install BUILD_DIR into a fresh PREFIX
#   MODE=find_package      check the package config in PREFIX, build examples/ as its
#                          own project against it, run it
#   MODE=components        configure tests/consumer/components against PREFIX once and
#                          build its program per component (COMPONENTS, comma-separated)
#   MODE=run               run PROGRAM, a path relative to WORK_DIR (MODE=components's)
#   MODE=add_subdirectory  build tests/consumer/add_subdirectory (blacktree vendored),
#                          run the example linked to blacktree::core and to
#                          blacktree::core-header-only
# Every step echoes its command; the first failing step stops the test with
# "consumer.<mode>: step '<step>' failed".
#
# Inputs (-D): MODE WORK_DIR SOURCE_DIR BUILD_DIR CONFIG GENERATOR MAKE_PROGRAM
#              CXX_COMPILER CXX_COMPILER_LAUNCHER CXX_FLAGS SANITIZE WERROR
#              EXPECTED_VERSION, and PREFIX, COMPONENTS, PROGRAM as above
# Environment: BLACKTREE_CONSUMER_JOBS (default 2) build jobs per consumer build.

cmake_minimum_required(VERSION 3.21)

foreach(var MODE WORK_DIR SOURCE_DIR BUILD_DIR GENERATOR)
  if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
    message(FATAL_ERROR "run_consumer.cmake: -D ${var}=... is required")
  endif()
endforeach()

set(jobs 2)
if(DEFINED ENV{BLACKTREE_CONSUMER_JOBS} AND NOT "$ENV{BLACKTREE_CONSUMER_JOBS}" STREQUAL "")
  set(jobs "$ENV{BLACKTREE_CONSUMER_JOBS}")
endif()

# step(<name> <command>...): run it, stream its output, stop on failure.
function(step name)
  list(JOIN ARGN " " shown)
  message(STATUS "consumer.${MODE}: [${name}] ${shown}")
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "consumer.${MODE}: step '${name}' failed (exit status: ${rc})\n  command: ${shown}")
  endif()
endfunction()

# The consumer builds use the same toolchain, generator and configuration as
# the build under test, and the same sanitizer (an instrumented static library
# links only into an instrumented program).
set(cxx_flags "${CXX_FLAGS}")
set(link_flags "")
if(SANITIZE)
  string(APPEND cxx_flags " -fsanitize=${SANITIZE} -fno-omit-frame-pointer")
  set(link_flags "-fsanitize=${SANITIZE}")
endif()
set(configure_args -G "${GENERATOR}"
  "-DCMAKE_CXX_FLAGS=${cxx_flags}"
  "-DCMAKE_EXE_LINKER_FLAGS=${link_flags}"
  -DCMAKE_FIND_PACKAGE_NO_PACKAGE_REGISTRY=ON)
if(MAKE_PROGRAM)
  list(APPEND configure_args "-DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM}")
endif()
if(CXX_COMPILER)
  list(APPEND configure_args "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}")
endif()
if(CXX_COMPILER_LAUNCHER)
  list(APPEND configure_args "-DCMAKE_CXX_COMPILER_LAUNCHER=${CXX_COMPILER_LAUNCHER}")
endif()
if(CONFIG)
  list(APPEND configure_args "-DCMAKE_BUILD_TYPE=${CONFIG}")
  set(config_args --config "${CONFIG}")
  # A consumer build checks that the package can be found, compiled against and
  # linked, not how fast the result runs: unoptimised and without debug
  # information it compiles in less than half the time. (The installed
  # libraries it links stay as the build under test made them.)
  string(TOUPPER "${CONFIG}" config_upper)
  list(APPEND configure_args "-DCMAKE_CXX_FLAGS_${config_upper}=-O0 -g0")
else()
  set(config_args)
endif()

# run_program(<step> <build dir> <target name>): single- or multi-config layout.
function(run_program name dir exe)
  foreach(candidate "${dir}/${exe}" "${dir}/${CONFIG}/${exe}")
    if(EXISTS "${candidate}" AND NOT IS_DIRECTORY "${candidate}")
      step("${name}" "${candidate}")
      return()
    endif()
  endforeach()
  message(FATAL_ERROR "consumer.${MODE}: step '${name}' failed: no ${exe} under ${dir}")
endfunction()

if(MODE STREQUAL "run")
  get_filename_component(program_dir "${WORK_DIR}/${PROGRAM}" DIRECTORY)
  get_filename_component(program_name "${PROGRAM}" NAME)
  run_program(run "${program_dir}" "${program_name}")
  return()
endif()

file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")
set(prefix "${PREFIX}")

# check_found_in_prefix(<step> <build dir>): blacktree was found in the fresh
# prefix, not in some other installation.
function(check_found_in_prefix name build)
  file(STRINGS "${build}/CMakeCache.txt" found_dir REGEX "^blacktree_DIR:")
  string(REGEX REPLACE "^blacktree_DIR:[A-Z]+=" "" found_dir "${found_dir}")
  file(REAL_PATH "${prefix}" real_prefix)
  file(REAL_PATH "${found_dir}" real_found_dir)
  string(FIND "${real_found_dir}/" "${real_prefix}/" at)
  if(NOT at EQUAL 0)
    message(FATAL_ERROR "consumer.${MODE}: step '${name}' failed: "
      "blacktree was found in '${found_dir}', not in the fresh prefix '${prefix}'")
  endif()
endfunction()

if(MODE STREQUAL "install")
  # Into a prefix nothing else uses (the other modes' fixture).
  file(REMOVE_RECURSE "${prefix}")
  step(install "${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${prefix}" ${config_args})

elseif(MODE STREQUAL "find_package")
  # 1. The package itself: version check, both targets, header-only define.
  step(check-package "${CMAKE_COMMAND}"
    -S "${SOURCE_DIR}/tests/consumer/find_package_check" -B "${WORK_DIR}/check"
    ${configure_args} "-DCMAKE_PREFIX_PATH=${prefix}" "-DEXPECTED_PREFIX=${prefix}"
    "-DEXPECTED_VERSION=${EXPECTED_VERSION}")

  # 2. examples/ as a project of its own, finding blacktree in the prefix.
  set(build "${WORK_DIR}/examples")
  step(configure-examples "${CMAKE_COMMAND}" -S "${SOURCE_DIR}/examples" -B "${build}"
    ${configure_args} "-DCMAKE_PREFIX_PATH=${prefix}")
  check_found_in_prefix(configure-examples "${build}")
  step(build-examples "${CMAKE_COMMAND}" --build "${build}" ${config_args} --parallel ${jobs})

  # 3. The example must run and succeed.
  run_program(run-example "${build}" blacktree_example_local_process)

elseif(MODE STREQUAL "components")
  # One configure for all components (each finds blacktree in a directory of
  # its own); ctest runs the programs (consumer.component.<name>).
  step(configure "${CMAKE_COMMAND}" -S "${SOURCE_DIR}/tests/consumer/components" -B "${WORK_DIR}"
    ${configure_args} "-DCMAKE_PREFIX_PATH=${prefix}" "-DBLACKTREE_COMPONENTS=${COMPONENTS}")
  check_found_in_prefix(configure "${WORK_DIR}")
  step(build "${CMAKE_COMMAND}" --build "${WORK_DIR}" ${config_args} --parallel ${jobs})

elseif(MODE STREQUAL "add_subdirectory")
  set(build "${WORK_DIR}/build")
  step(configure "${CMAKE_COMMAND}" -S "${SOURCE_DIR}/tests/consumer/add_subdirectory" -B "${build}"
    ${configure_args} "-DBLACKTREE_SOURCE_DIR=${SOURCE_DIR}" "-DBLACKTREE_WERROR=${WERROR}")
  step(build "${CMAKE_COMMAND}" --build "${build}" ${config_args} --parallel ${jobs})
  run_program(run-example-core "${build}" consumer_local_process)
  run_program(run-example-header-only "${build}" consumer_local_process_header_only)

else()
  message(FATAL_ERROR "run_consumer.cmake: unknown MODE '${MODE}' "
                      "(install, find_package, components, run or add_subdirectory)")
endif()

message(STATUS "consumer.${MODE}: all steps passed")
