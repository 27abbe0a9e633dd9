//! What the container module's unit tests share.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use carapace_runtime::config as rt;
use carapace_runtime::container::RuntimeOptions;

use super::cri_to_oci::{ImageInfo, SandboxInfo};
use super::handlers::ContainerApi;
use super::table::Meta;
use crate::api::*;
use crate::error::Error;

pub(super) fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

pub(super) fn image(entrypoint: &[&str], cmd: &[&str]) -> ImageInfo {
    ImageInfo {
        id: "sha256:abc".into(),
        name: "docker.io/library/busybox:latest".into(),
        image_ref: "docker.io/library/busybox@sha256:def".into(),
        entrypoint: s(entrypoint),
        cmd: s(cmd),
        ..Default::default()
    }
}

pub(super) fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: v.into(),
    }
}

/// A layer dir with `files` (path → content) written below it.
pub(super) fn layer(root: &Path, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = root.join(name);
    fs::create_dir_all(&dir).unwrap();
    for (p, content) in files {
        let p = dir.join(p.trim_start_matches('/'));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }
    dir
}

pub(super) const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                      # a comment\n\
                      broken line\n\
                      app:x:1000:1000:App:/home/app:/bin/sh\n\
                      nobody:x:65534:65534::/nonexistent:/bin/false\n";
pub(super) const GROUP: &str = "root:x:0:\n\
                     app:x:1000:\n\
                     staff:x:50:app,other\n\
                     audio:x:29:app\n\
                     video:x:44:other\n";

pub(super) fn sandbox() -> SandboxInfo {
    SandboxInfo {
        id: "sb1234".into(),
        pod_name: "web".into(),
        pod_namespace: "default".into(),
        pod_uid: "uid-1".into(),
        network: rt::NsMode::Join("/run/carapace/netns/sb1234".into()),
        ipc: rt::NsMode::Join("/run/carapace/ipcns/sb1234".into()),
        uts: rt::NsMode::Join("/run/carapace/utsns/sb1234".into()),
        pid: rt::NsMode::New,
        cgroup_parent: "kubepods/besteffort/poduid-1".into(),
        log_directory: Some("/var/log/pods/default_web_uid-1".into()),
        hostname: "web".into(),
        hostname_path: Some("/run/carapace/sb/hostname".into()),
        hosts_path: Some("/run/carapace/sb/hosts".into()),
        resolv_conf_path: Some("/run/carapace/sb/resolv.conf".into()),
        shm_path: Some("/run/carapace/sb/shm".into()),
        user: None,
        runtime_handler: String::new(),
    }
}

pub(super) fn no_target(_: &str) -> Result<PathBuf, Error> {
    Err(Error::NotFound("target".into()))
}

pub(super) fn sc() -> LinuxContainerSecurityContext {
    LinuxContainerSecurityContext::default()
}

pub(super) fn cri_config() -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "app".into(),
            attempt: 2,
        }),
        image: Some(ImageSpec {
            image: "busybox".into(),
            ..Default::default()
        }),
        args: s(&["-c", "sleep 1"]),
        envs: vec![kv("FOO", "bar")],
        log_path: "app/2.log".into(),
        labels: [("tier".to_owned(), "web".to_owned())].into(),
        annotations: [("a".to_owned(), "b".to_owned())].into(),
        linux: Some(LinuxContainerConfig {
            resources: Some(LinuxContainerResources {
                memory_limit_in_bytes: 1 << 30,
                oom_score_adj: 100,
                ..Default::default()
            }),
            security_context: Some(LinuxContainerSecurityContext {
                run_as_username: "app".into(),
                no_new_privs: true,
                readonly_rootfs: true,
                capabilities: Some(Capability {
                    add_capabilities: s(&["NET_ADMIN"]),
                    drop_capabilities: s(&["MKNOD"]),
                    ..Default::default()
                }),
                masked_paths: s(&["/proc/kcore"]),
                namespace_options: Some(NamespaceOption {
                    pid: NamespaceMode::Container as i32,
                    ..Default::default()
                }),
                seccomp: Some(SecurityProfile {
                    profile_type: security_profile::ProfileType::RuntimeDefault as i32,
                    localhost_ref: String::new(),
                }),
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

pub(super) fn meta(id: &str, sandbox_id: &str, name: &str, labels: &[(&str, &str)]) -> Meta {
    Meta {
        id: id.into(),
        name: name.into(),
        sandbox_id: sandbox_id.into(),
        metadata_name: name.into(),
        attempt: 0,
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        annotations: BTreeMap::new(),
        image_spec: "busybox".into(),
        image: "docker.io/library/busybox:latest".into(),
        image_ref: "sha256:1".into(),
        image_id: "sha256:1".into(),
        log_path: String::new(),
        mounts: vec![],
        created_at: 1,
    }
}

/// An API over an empty runtime in a temp dir: enough for everything that does not run a
/// container (which needs root and is covered in `e2e/`).
pub(super) fn api(t: &tempfile::TempDir) -> ContainerApi {
    ContainerApi::open(RuntimeOptions {
        root: t.path().join("root"),
        state: t.path().join("state"),
        helper_exe: "/bin/false".into(),
        helper_args: vec![],
        sealed: None,
    })
    .unwrap()
}

pub(super) fn insert(api: &ContainerApi, m: Meta) {
    let mut t = api.inner.table();
    t.names.insert(m.name.clone(), m.id.clone());
    t.containers.insert(m.id.clone(), m);
}
