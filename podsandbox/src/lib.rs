//! Pod sandboxes: the namespaces a pod shares (network, IPC, UTS, and PID when asked), pinned as
//! bind-mounted nsfs files under the state dir so that no pause image is needed; the pod's hostname,
//! `/etc/hosts` and `/etc/resolv.conf` files, its `/dev/shm`, its sysctls and its cgroup. It persists
//! each sandbox's state atomically and undoes every step of a failed start. It never sees gRPC types and
//! never starts containers: it hands plain paths to whoever does.
//!
//! The daemon never changes namespace itself: namespaces are created on a thread of their own that
//! pins them and ends ([`kernel`]); a pod's user namespace, which a multi-threaded process cannot
//! make, by a helper process that makes the pod's other namespaces inside it. Every kernel
//! operation goes through the [`Kernel`] seam.
#![deny(unsafe_code)]

mod cgroup;
mod error;
mod files;
mod infra;
pub mod kernel;
mod netstats;
mod records;
mod sandbox;
mod spec;
mod sys;
mod sysctl;

pub use cgroup::{CgroupDriver, PodCgroup, expand as cgroup_path};
pub use error::Error;
pub use infra::{InfraCommand, InfraProcess, infra_main, with_user_namespace};
pub use kernel::Kernel;
pub use netstats::{InterfaceStats, parse_net_dev};
pub use sandbox::{
    CniObserver, CniOp, DEFAULT_SHM_SIZE, NamespacePaths, Options, POD_IFNAME, Sandbox,
    SandboxState, Sandboxes,
};
pub use spec::{
    DnsConfig, IdMapping, Metadata, NamespaceMode, NamespaceOptions, PodResources, PortMapping,
    SandboxConfig, UserNamespace,
};
