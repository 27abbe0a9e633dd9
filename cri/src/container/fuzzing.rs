//! The CRI → runtime mapping, driven by the fuzz targets through [`crate::fuzzing`].

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use carapace_runtime::config as rt;

use super::cri_to_oci::{ImageInfo, MapInput, SandboxInfo, VolumeLayers, runtime_config};
use crate::api::ContainerConfig;
use crate::error::Error;

/// Maps `config` for a pod and an image chosen by `shape`'s bits, then builds the OCI spec of
/// the result. No CDI spec folders: the host's would make the outcome depend on the machine.
pub(crate) fn container_config(config: &ContainerConfig, shape: u8) -> Result<(), String> {
    super::set_cdi_spec_dirs(Vec::new());
    let pod = pod_files();
    let users = ["", "1000", "1000:1000", "app"];
    let image = ImageInfo {
        id: "sha256:0123".into(),
        name: "docker.io/library/busybox:latest".into(),
        image_ref: "docker.io/library/busybox@sha256:4567".into(),
        entrypoint: vec!["/bin/sh".into()],
        cmd: vec!["-c".into(), "sleep 1".into()],
        env: vec!["PATH=/usr/bin:/bin".into(), "HOME=/root".into()],
        working_dir: if shape & 1 != 0 {
            "/srv".into()
        } else {
            String::new()
        },
        user: users[usize::from(shape >> 1) & 3].into(),
        stop_signal: if shape & 8 != 0 {
            "SIGQUIT".into()
        } else {
            String::new()
        },
        lower_dirs: vec!["/var/lib/carapace/fuzz/snapshots/1/fs".into()],
    };
    let join = |kind: &str| rt::NsMode::Join(format!("/run/carapace/{kind}ns/sb0").into());
    let sandbox = SandboxInfo {
        id: "sb0".into(),
        pod_name: "web".into(),
        pod_namespace: "default".into(),
        pod_uid: "uid-0".into(),
        network: if shape & 16 != 0 {
            rt::NsMode::Host
        } else {
            join("net")
        },
        ipc: join("ipc"),
        uts: join("uts"),
        pid: match (shape >> 5) & 3 {
            0 => rt::NsMode::New,
            1 => rt::NsMode::Host,
            _ => join("pid"),
        },
        cgroup_parent: "kubepods/besteffort/poduid-0".into(),
        log_directory: Some("/var/log/pods/default_web_uid-0".into()),
        hostname: "web".into(),
        runtime_handler: String::new(),
        hostname_path: Some(pod.join("hostname")),
        hosts_path: Some(pod.join("hosts")),
        resolv_conf_path: Some(pod.join("resolv.conf")),
        shm_path: Some(pod.join("shm")),
        user: (shape & 128 != 0).then(|| {
            let map = vec![rt::IdMap {
                container_id: 0,
                host_id: 65536,
                length: 65536,
            }];
            rt::UserNs {
                path: "/run/carapace/userns/sb0".into(),
                uids: map.clone(),
                gids: map,
            }
        }),
    };
    let target = |id: &str| -> Result<PathBuf, Error> {
        if id.is_empty() {
            Err(Error::NotFound("target container".into()))
        } else {
            Ok("/proc/4242/ns/pid".into())
        }
    };
    let rc = runtime_config(&MapInput {
        id: "c0",
        config,
        image: &image,
        sandbox: &sandbox,
        target_pid_ns: &target,
        volume_layers: &VolumeLayers::new(),
    })
    .map_err(|e| e.to_string())?;
    carapace_runtime::spec::build(&rc, Path::new("/run/carapace/c0/rootfs"))
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// The pod's files that containers bind-mount: the mapping checks that they exist.
fn pod_files() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join("carapace-fuzz-pod");
        let _ = std::fs::create_dir_all(dir.join("shm"));
        for f in ["hostname", "hosts", "resolv.conf"] {
            let _ = std::fs::write(dir.join(f), "");
        }
        dir
    })
}
