//! Container escapes that runc, containerd and CRI-O closed after CVEs (issues 19 and 23), each
//! tried for real through the daemon and named after its class; one test binary, a module per
//! place the hole was in. Every test removes what it made and ends with `Node::finish` (via
//! `remove_all` where it has one pod), which checks that no container, pod, cgroup, mount or
//! process is left.

mod cves;
mod devices;
mod infra;
mod mounts;
mod process;
mod requests;
