// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// Who may talk to whom over blacktree's gRPC, in one place:
//
//  - TlsOptions: mutual TLS with gRPC's own TLS credentials. Each side
//    presents the certificate in `cert_file` and verifies the peer's against
//    `ca_file`; a server requires a client certificate. The files are watched
//    and read again every `reload_interval` (rotation without a restart); a
//    new pair applies to new connections.
//  - peer_names: the names a verified peer certificate carries (its subject
//    common name and its DNS subject alternative names). A worker's
//    certificate names its worker id; the orchestrator's names the identity
//    workers expect (`--orchestrator-name`).
//  - WorkerSecrets: the per-registration secret the orchestrator hands a
//    worker in RegisterReply and sends with every call to it (metadata
//    `authorization: Bearer <secret>`), so that a worker obeys only the
//    orchestrator it registered with.
//  - same_secret: comparison in constant time, length included.

#include <blacktree/core/result.hpp>

#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace grpc {
class ChannelCredentials;
class ServerCredentials;
class ClientContext;
class ServerContextBase;
class Status;
}  // namespace grpc

namespace blacktree::grpc {

struct TlsOptions {
  std::string cert_file;  ///< this side's certificate chain (PEM)
  std::string key_file;   ///< its private key (PEM)
  std::string ca_file;    ///< the CA bundle (PEM) the peer's certificate must chain to
  std::chrono::seconds reload_interval{60};  ///< how often the files are checked for changes

  /// Any of the three set: TLS is wanted (and all three are then required).
  bool enabled() const noexcept { return !cert_file.empty() || !key_file.empty() || !ca_file.empty(); }
};

/// All three files set, readable and PEM of the right kind; an error names
/// the option (`--tls-key`) and the rule, never the file's content.
core::Result<void> check_tls_files(const TlsOptions& tls);

/// Mutual-TLS server credentials (client certificates required and verified
/// against the CA), or insecure ones when `tls` is not enabled().
core::Result<std::shared_ptr<::grpc::ServerCredentials>> server_credentials(const TlsOptions& tls);

/// Mutual-TLS channel credentials (the server's certificate is verified
/// against the CA and must name the host dialled), or insecure ones when `tls`
/// is not enabled().
core::Result<std::shared_ptr<::grpc::ChannelCredentials>> channel_credentials(const TlsOptions& tls);

/// The names of the caller's verified certificate: its subject common name
/// and DNS subject alternative names. Empty for a plaintext caller.
std::vector<std::string> peer_names(const ::grpc::ServerContextBase& context);

/// True when the caller's verified certificate names `name` (see peer_names).
bool peer_is(const ::grpc::ServerContextBase& context, std::string_view name);

/// Equal contents and length, compared without an early exit.
bool same_secret(std::string_view a, std::string_view b) noexcept;

/// 32 random bytes from the kernel, as 64 hex digits.
std::string new_secret();

/// The metadata key and value prefix a secret travels in.
inline constexpr std::string_view authorization_key = "authorization";
inline constexpr std::string_view bearer_prefix = "Bearer ";

/// The secret a call carries as `authorization: Bearer <secret>`, if any.
std::optional<std::string_view> bearer_of(const ::grpc::ServerContextBase& context);

/// Adds `authorization: Bearer <secret>` to an outgoing call.
void attach_bearer(::grpc::ClientContext& context, std::string_view secret);

/// The orchestrator's per-registration secrets, by worker id. Shared by the
/// OrchestratorService (which issues one at every Register) and the
/// GrpcTransport (which sends it with every call to that worker).
/// Thread-safe.
class WorkerSecrets {
 public:
  /// A fresh secret for `worker_id`, replacing the one it had.
  std::string issue(std::string_view worker_id);
  std::optional<std::string> find(std::string_view worker_id) const;
  void forget(std::string_view worker_id);

 private:
  mutable std::mutex mutex_;
  std::unordered_map<std::string, std::string> secrets_;
};

/// Whom a worker obeys (RunJob, Ping, Cancel). See WorkerService.
struct CallerPolicy {
  /// Non-empty: the caller's certificate must name this (the orchestrator's
  /// identity). Empty: no certificate check.
  std::string orchestrator_name;
  /// The caller must carry the secret of the worker's current registration.
  bool require_secret = false;
};

/// Whether the caller of a worker's RunJob, Ping or Cancel is the
/// orchestrator it registered with, under `policy`: OK, UNAUTHENTICATED (no
/// certificate, no secret, or the worker is not registered yet) or
/// PERMISSION_DENIED (another certificate, a wrong secret). Never echoes
/// what the caller sent.
::grpc::Status authorize_orchestrator(const CallerPolicy& policy, std::string_view registration_secret,
                                      const ::grpc::ServerContextBase& context);

/// The fail-closed rule for a service: it runs authenticated (TLS, or for the
/// orchestrator a registration token) or only when the operator said
/// `--insecure`. The error names the options that would satisfy it.
core::Result<void> require_authentication(std::string_view service, bool tls, bool token, bool insecure);

}  // namespace blacktree::grpc
