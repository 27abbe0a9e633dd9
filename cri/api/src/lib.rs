//! The CRI protobufs carapace speaks: cri-api `pkg/apis/runtime/v1/api.proto` at tag v0.36.3
//! (commit 1733b6a9fa123c5887eefa14523c532b12827f73 of github.com/kubernetes/cri-api), vendored
//! byte-identical in `proto/api.proto` with its licence header, compiled by `build.rs` into the
//! message types, the `RuntimeService`/`ImageService` server traits and their clients.
//!
//! Only the protocol lives here: no behaviour, nothing that knows about carapace. The clients are
//! built over a channel the caller connects (the e2e tests and the bench dial a unix socket).
//!
//! To move to another cri-api tag: replace `proto/api.proto` with that tag's file unchanged, update
//! the tag and commit above, and build; `build.rs` refuses a file whose `debug_redact` fields are
//! not the ones hidden below.
#![deny(unsafe_code)]

/// CRI `runtime.v1`, the only CRI version kubelets speak since 1.26.
// The doc comments are upstream's proto comments, written for Go: bare URLs and `<size>`-style
// placeholders.
#[allow(
    clippy::doc_lazy_continuation,
    rustdoc::bare_urls,
    rustdoc::invalid_html_tags
)]
pub mod v1 {
    tonic::include_proto!("runtime.v1");

    /// Shows the registry credentials as `[redacted]` (what upstream's `debug_redact` asks of
    /// printers), so a logged `PullImageRequest` never carries a password or token.
    impl std::fmt::Debug for AuthConfig {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            fn hidden(s: &str) -> &'static str {
                if s.is_empty() { "" } else { "[redacted]" }
            }
            f.debug_struct("AuthConfig")
                .field("username", &self.username)
                .field("password", &hidden(&self.password))
                .field("auth", &hidden(&self.auth))
                .field("server_address", &self.server_address)
                .field("identity_token", &hidden(&self.identity_token))
                .field("registry_token", &hidden(&self.registry_token))
                .finish()
        }
    }
}

#[cfg(test)]
mod redact;
#[cfg(test)]
mod tests;
