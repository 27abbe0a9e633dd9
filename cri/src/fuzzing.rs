//! Entry points for the fuzz targets in `fuzz/` into request validation and the streaming
//! server's wire parsers, which are not public. Not an API: hidden from the docs and free to
//! change with the fuzz targets.

use crate::api::{ContainerConfig, PodSandboxConfig};

/// A `ContainerConfig` through the mapping to the runtime's config and on to the OCI spec, for a
/// pod and an image that `shape`'s bits choose. `Err` is a refusal, never a crash.
pub fn container_config(config: &ContainerConfig, shape: u8) -> Result<(), String> {
    crate::container::fuzzing::container_config(config, shape)
}

/// A `PodSandboxConfig` through `RunPodSandbox`'s validation, and its cgroup parent through both
/// drivers' expansion.
pub fn sandbox_config(config: PodSandboxConfig, runtime_handler: String) -> Result<(), String> {
    let c = crate::sandbox::sandbox_config(config, runtime_handler).map_err(|e| e.to_string())?;
    if !c.cgroup_parent.is_empty() {
        for driver in [
            carapace_podsandbox::CgroupDriver::Cgroupfs,
            carapace_podsandbox::CgroupDriver::Systemd,
        ] {
            let _ = carapace_podsandbox::cgroup_path(driver, &c.cgroup_parent);
        }
    }
    Ok(())
}

/// `data` as a client's side of a SPDY/3.1 session: frames read until the end or an error, then
/// written and read back, which must give them unchanged. Returns the number of frames read.
pub fn spdy_frames(data: &[u8]) -> usize {
    crate::stream::fuzzing::spdy(data)
}

/// `data` as a client's side of an exec WebSocket under subprotocol `protocol`, each message
/// decoded into its channel as an exec session does. Returns the number of messages read.
pub fn websocket_messages(protocol: &str, data: &[u8]) -> usize {
    crate::stream::fuzzing::websocket(protocol, data)
}
