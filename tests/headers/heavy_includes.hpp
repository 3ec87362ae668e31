// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// Include guards and version macros that tell whether a heavy library's
// headers were included before this point, for the checks in this folder:
// include the headers under test first, then this, then #error on the
// BLACKTREE_SAW_* that must not be set.

// gRPC (grpc++ and the C core; every grpcpp header reaches one of these).
#if defined(GRPCPP_GRPCPP_H) || defined(GRPCPP_SUPPORT_CONFIG_H) || defined(GRPCPP_IMPL_CODEGEN_CONFIG_H) || \
    defined(GRPC_GRPC_H) || defined(GRPC_SUPPORT_PORT_PLATFORM_H) || defined(GRPC_IMPL_CODEGEN_PORT_PLATFORM_H)
#define BLACKTREE_SAW_GRPC 1
#endif

// protobuf (generated code and the runtime both include stubs/common.h).
#if defined(GOOGLE_PROTOBUF_VERSION) || defined(GOOGLE_PROTOBUF_COMMON_H__)
#define BLACKTREE_SAW_PROTOBUF 1
#endif

// rabbitmq-c (<amqp.h> in 0.11, <rabbitmq-c/amqp.h> in 0.12+).
#if defined(AMQP_H) || defined(AMQP_VERSION_MAJOR) || defined(RABBITMQ_C_AMQP_H)
#define BLACKTREE_SAW_RABBITMQ 1
#endif

// fmt/spdlog: the services log with them.
#if defined(FMT_VERSION) || defined(SPDLOG_VER_MAJOR)
#define BLACKTREE_SAW_FMT 1
#endif
