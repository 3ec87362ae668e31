// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#include <blacktree/grpc/credentials.hpp>

#include <blacktree/grpc/error.hpp>

#include <fmt/format.h>
#include <grpc/grpc_security_constants.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_certificate_verifier.h>
#include <grpcpp/security/tls_credentials_options.h>

#include <algorithm>
#include <array>
#include <fstream>
#include <sstream>

#include <sys/random.h>

namespace blacktree::grpc {
namespace {

namespace tls = ::grpc::experimental;

core::Error invalid(std::string message) { return core::Error{errc::invalid_credentials, std::move(message)}; }

// Reads enough of a file to know it holds PEM of the expected kind; the
// content itself never goes into a message.
core::Result<void> check_pem(const std::string& path, std::string_view option, std::string_view kind) {
  if (path.empty()) return invalid(fmt::format("{}: required with TLS (all of --tls-cert, --tls-key and --tls-ca)", option));
  std::ifstream in(path);
  if (!in) return invalid(fmt::format("{}: cannot read the file {}", option, path));
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();
  if (text.find("-----BEGIN ") == std::string::npos || text.find(kind) == std::string::npos)
    return invalid(fmt::format("{}: the file {} holds no PEM {}", option, path, kind));
  return {};
}

std::shared_ptr<tls::FileWatcherCertificateProvider> provider_for(const TlsOptions& t) {
  const auto interval = static_cast<unsigned>(std::max<std::chrono::seconds::rep>(1, t.reload_interval.count()));
  return std::make_shared<tls::FileWatcherCertificateProvider>(t.key_file, t.cert_file, t.ca_file, interval);
}

}  // namespace

core::Result<void> check_tls_files(const TlsOptions& t) {
  if (auto ok = check_pem(t.cert_file, "--tls-cert", "CERTIFICATE"); !ok) return ok;
  if (auto ok = check_pem(t.key_file, "--tls-key", "PRIVATE KEY"); !ok) return ok;
  return check_pem(t.ca_file, "--tls-ca", "CERTIFICATE");
}

core::Result<std::shared_ptr<::grpc::ServerCredentials>> server_credentials(const TlsOptions& t) {
  if (!t.enabled()) return ::grpc::InsecureServerCredentials();
  if (auto ok = check_tls_files(t); !ok) return ok.error();
  tls::TlsServerCredentialsOptions options(provider_for(t));
  options.watch_root_certs();
  options.watch_identity_key_cert_pairs();
  // Mutual: a caller without a certificate from our CA never gets a call in.
  options.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  return tls::TlsServerCredentials(options);
}

core::Result<std::shared_ptr<::grpc::ChannelCredentials>> channel_credentials(const TlsOptions& t) {
  if (!t.enabled()) return ::grpc::InsecureChannelCredentials();
  if (auto ok = check_tls_files(t); !ok) return ok.error();
  tls::TlsChannelCredentialsOptions options;
  options.set_certificate_provider(provider_for(t));
  options.watch_root_certs();
  options.watch_identity_key_cert_pairs();
  options.set_verify_server_certs(true);
  // Explicit, not left to a default: the server's certificate must name the
  // host we dialled.
  options.set_certificate_verifier(std::make_shared<tls::HostNameCertificateVerifier>());
  return tls::TlsCredentials(options);
}

std::vector<std::string> peer_names(const ::grpc::ServerContextBase& context) {
  std::vector<std::string> names;
  const auto auth = context.auth_context();
  if (!auth || !auth->IsPeerAuthenticated()) return names;
  for (const char* property : {GRPC_X509_CN_PROPERTY_NAME, GRPC_PEER_DNS_PROPERTY_NAME}) {
    for (const auto& value : auth->FindPropertyValues(property)) names.emplace_back(value.data(), value.size());
  }
  return names;
}

bool peer_is(const ::grpc::ServerContextBase& context, std::string_view name) {
  if (name.empty()) return false;
  const auto names = peer_names(context);
  return std::find(names.begin(), names.end(), name) != names.end();
}

bool same_secret(std::string_view a, std::string_view b) noexcept {
  // The length difference is folded in, and the loop runs over the longer of
  // the two, so neither the position of the first difference nor a length
  // mismatch ends it early.
  std::size_t diff = a.size() ^ b.size();
  const std::size_t n = std::max(a.size(), b.size());
  for (std::size_t i = 0; i < n; ++i) {
    const auto x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0u;
    const auto y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0u;
    diff |= x ^ y;
  }
  return diff == 0;
}

std::string new_secret() {
  std::array<unsigned char, 32> bytes{};
  std::size_t filled = 0;
  while (filled < bytes.size()) {
    const auto got = ::getrandom(bytes.data() + filled, bytes.size() - filled, 0);
    if (got > 0) filled += static_cast<std::size_t>(got);
  }
  std::string out;
  out.reserve(bytes.size() * 2);
  for (const auto b : bytes) {
    out += "0123456789abcdef"[b >> 4];
    out += "0123456789abcdef"[b & 15];
  }
  return out;
}

std::optional<std::string_view> bearer_of(const ::grpc::ServerContextBase& context) {
  const auto& metadata = context.client_metadata();
  const auto it = metadata.find(::grpc::string_ref(authorization_key.data(), authorization_key.size()));
  if (it == metadata.end()) return std::nullopt;
  const std::string_view value(it->second.data(), it->second.size());
  if (value.substr(0, bearer_prefix.size()) != bearer_prefix) return std::string_view{};
  return value.substr(bearer_prefix.size());
}

void attach_bearer(::grpc::ClientContext& context, std::string_view secret) {
  context.AddMetadata(std::string(authorization_key), std::string(bearer_prefix) + std::string(secret));
}

std::string WorkerSecrets::issue(std::string_view worker_id) {
  auto secret = new_secret();
  std::lock_guard lock(mutex_);
  secrets_.insert_or_assign(std::string(worker_id), secret);
  return secret;
}

std::optional<std::string> WorkerSecrets::find(std::string_view worker_id) const {
  std::lock_guard lock(mutex_);
  const auto it = secrets_.find(std::string(worker_id));
  if (it == secrets_.end()) return std::nullopt;
  return it->second;
}

void WorkerSecrets::forget(std::string_view worker_id) {
  std::lock_guard lock(mutex_);
  secrets_.erase(std::string(worker_id));
}

::grpc::Status authorize_orchestrator(const CallerPolicy& policy, std::string_view registration_secret,
                                      const ::grpc::ServerContextBase& context) {
  if (!policy.orchestrator_name.empty() && !peer_is(context, policy.orchestrator_name)) {
    if (peer_names(context).empty()) {
      return {::grpc::StatusCode::UNAUTHENTICATED,
              "this worker obeys only its orchestrator: present the orchestrator's certificate"};
    }
    return {::grpc::StatusCode::PERMISSION_DENIED,
            fmt::format("this worker obeys only its orchestrator: the caller's certificate does not name '{}' "
                        "(--orchestrator-name)",
                        policy.orchestrator_name)};
  }
  if (!policy.require_secret) return ::grpc::Status::OK;
  if (registration_secret.empty()) {
    return {::grpc::StatusCode::UNAUTHENTICATED,
            "this worker is not registered with an orchestrator yet, and obeys no one until it is"};
  }
  const auto secret = bearer_of(context);
  if (!secret) {
    return {::grpc::StatusCode::UNAUTHENTICATED,
            "this worker obeys only the orchestrator it registered with: the call carries no registration secret"};
  }
  if (!same_secret(*secret, registration_secret)) {
    return {::grpc::StatusCode::PERMISSION_DENIED,
            "this worker obeys only the orchestrator it registered with: the registration secret is wrong"};
  }
  return ::grpc::Status::OK;
}

core::Result<void> require_authentication(std::string_view service, bool tls, bool token, bool insecure) {
  if (tls || token || insecure) return {};
  return invalid(fmt::format(
      "the {} will not run unauthenticated: give it --tls-cert, --tls-key and --tls-ca (mutual TLS; "
      "scripts/make-certs.sh makes a test CA) or --registration-token-file, or say --insecure to run without "
      "either (not for production)",
      service));
}

}  // namespace blacktree::grpc
