//! Containers: the OCI runtime spec built from a container's configuration, the built-in executor
//! (namespaces, mounts, capabilities, seccomp, cgroups) and the per-container monitor that owns stdio,
//! CRI-format logs and the exit status, so containers outlive a restart of the daemon. It takes the
//! sandbox and image as plain data (paths and settings) and never imports `podsandbox` or `imageservice`.
#![deny(unsafe_code)]

pub mod attach;
pub mod capabilities;
pub mod cgroup;
pub mod config;
pub mod container;
pub mod criu;
mod devices;
mod error;
pub mod executor;
pub mod exits;
pub mod fsutil;
mod image_volume;
pub mod logs;
pub mod monitor;
mod oci_cli;
pub mod sealed;
pub mod seccomp;
pub mod spec;
pub mod stats;
mod sys;
pub mod terminal;

pub use error::{Error, Result};

/// Whether a test that mounts can run: the runtime's tests run as root; elsewhere such a test
/// says it was skipped and passes.
#[cfg(test)]
pub(crate) fn root_or_skip() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        eprintln!("skipped: needs root");
    }
    root
}
pub use sys::{mount_setattr_supported, release_idle_memory, release_program_code};
