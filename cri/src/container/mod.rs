//! The container half of `runtime.v1.RuntimeService`: `CreateContainer`, `StartContainer`,
//! `StopContainer`, `RemoveContainer`, `ListContainers`, `ContainerStatus`,
//! `UpdateContainerResources`, `ReopenContainerLog`, `ExecSync` and the container stats.
//!
//! It owns two things: the pure mapping from a CRI `ContainerConfig` (plus plain data about the
//! image and the sandbox) to the runtime's config by the Kubernetes rules ([`cri_to_oci`], with
//! the image's users and groups read by [`image_users`]), and the CRI metadata of each container
//! (name, labels, annotations, image, sandbox) kept next to the runtime's bundle as `cri.json`,
//! so a restarted daemon lists the same containers ([`table`]). The calls themselves are in
//! [`handlers`] and [`stats`]. It never looks up images or sandboxes itself (the caller hands
//! them over as plain data) and never runs container code: the runtime does.
//!
//! Interpretations (to record in `docs/cri.md`):
//! - `StopContainer` and `RemoveContainer` of an unknown id succeed. containerd answers NotFound
//!   to Stop; critest's idempotence specs and kubelet retries after a restart want no error.
//! - A `CreateContainer` retried with the same sandbox, name and attempt returns the container
//!   made by the first call (waiting for it if still in flight), never "name is reserved".
//! - Ids may be given as a unique prefix, as crictl users do.

mod cdi;
mod cri_to_oci;
#[cfg(test)]
mod fixtures;
pub(crate) mod fuzzing;
mod handlers;
mod image_users;
pub(crate) mod runtime_handlers;
mod stats;
mod table;

pub(crate) use cdi::{
    DEFAULT_SPEC_DIRS as DEFAULT_CDI_SPEC_DIRS, set_spec_dirs as set_cdi_spec_dirs,
};
pub(crate) use handlers::ContainerApi;
pub(crate) use table::Links;

use crate::error::Error;

/// A request refused as malformed; here, not in one part, because every part refuses some.
fn invalid(msg: impl Into<String>) -> Error {
    Error::InvalidArgument(msg.into())
}
