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
mod devices;
mod error;
pub mod executor;
pub mod exits;
pub mod fsutil;
pub mod logs;
pub mod monitor;
pub mod sealed;
pub mod seccomp;
pub mod spec;
pub mod stats;
mod sys;
pub mod terminal;

pub use error::{Error, Result};
pub use sys::{mount_setattr_supported, release_idle_memory, release_program_code};
