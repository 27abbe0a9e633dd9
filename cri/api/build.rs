//! Compiles the vendored CRI `api.proto` into the `runtime.v1` types, servers and clients.
//!
//! `protoc` gets a copy in `OUT_DIR` with the `debug_redact` options taken out (see
//! `src/redact.rs`), so the vendored file stays as upstream wrote it.
use std::error::Error;
use std::path::PathBuf;

#[path = "src/redact.rs"]
mod redact;

const PROTO: &str = "proto/api.proto";

/// The fields `src/lib.rs` hides in `Debug`. A cri-api that marks other fields must have them
/// hidden there too before it builds.
const REDACTED: &[&str] = &[
    "AuthConfig.password",
    "AuthConfig.auth",
    "AuthConfig.identity_token",
    "AuthConfig.registry_token",
];

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed={PROTO}");
    println!("cargo:rerun-if-changed=src/redact.rs");
    let upstream = std::fs::read_to_string(PROTO)?;
    let stripped = redact::strip_debug_redact(&upstream).map_err(|e| format!("{PROTO}: {e}"))?;
    if stripped.fields != REDACTED {
        return Err(format!(
            "{PROTO} marks {:?} debug_redact; build.rs and the Debug impls in src/lib.rs hide {REDACTED:?}",
            stripped.fields
        )
        .into());
    }
    let dir = PathBuf::from(std::env::var("OUT_DIR")?).join("proto");
    std::fs::create_dir_all(&dir)?;
    let cleaned = dir.join("api.proto");
    std::fs::write(&cleaned, stripped.text)?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // The clients are made from a channel the caller connects (a unix socket), so the
        // generated `connect` and the tonic transport feature it needs are not wanted.
        .build_transport(false)
        .emit_rerun_if_changed(false)
        .skip_debug([".runtime.v1.AuthConfig"])
        .compile_protos(&[cleaned.as_path()], &[dir.as_path()])?;
    Ok(())
}
