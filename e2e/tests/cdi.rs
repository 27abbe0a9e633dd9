//! CDI devices over the socket: spec files the test writes (one YAML, one JSON) into its own spec
//! directory, given to the daemon as `cdi_spec_dirs`, for harmless devices backed by `/dev/null`
//! and `/dev/fuse` (opened, never used), with a bind mount, env vars and an additional group. An unprivileged container
//! that names them in `cdi_devices` (or in a `cdi.k8s.io/` annotation, the older form) sees the
//! nodes with the host's numbers, may use them as far as the spec's cgroup permissions say, and
//! sees the mount and the env; an unknown device is refused with InvalidArgument naming it. The
//! pod is on the host network (none is needed); `PodNetwork` index 247 names its uid and cgroups.

use std::collections::HashMap;
use std::path::Path;

use carapace_e2e::DaemonConfig;
use carapace_e2e::cri;
use carapace_e2e::node::{Node, container};

const INDEX: u8 = 247;

fn uid(n: u8) -> String {
    format!("cd100000-0000-4000-8000-{n:012}")
}

/// `sh -c script` in the container: (exit code, stdout, stderr).
async fn sh(n: &mut Node, id: &str, script: &str) -> (i32, String, String) {
    let r = n
        .exec_sync(id, &["sh", "-c", script], 10)
        .await
        .unwrap_or_else(|e| panic!("ExecSync {script:?}: {e}"));
    (
        r.exit_code,
        String::from_utf8_lossy(&r.stdout).into_owned(),
        String::from_utf8_lossy(&r.stderr).into_owned(),
    )
}

/// The YAML spec: spec-level env, and device `null` with a node, a read-only mount of `data` and
/// its own env.
fn yaml_spec(data: &Path) -> String {
    format!(
        "cdiVersion: 0.6.0
kind: e2e.carapace.dev/null
containerEdits:
  env:
    - CDI_SPEC=yaml
devices:
  - name: dev0
    containerEdits:
      env: [CDI_DEVICE=dev0]
      deviceNodes:
        - path: /dev/cdi-null
          hostPath: /dev/null
      mounts:
        - hostPath: {}
          containerPath: /cdi-data
          options: [ro, nosuid, nodev, rbind, rprivate]
",
        data.display()
    )
}

/// The JSON spec: device `fuse`, a node the container may only read, and a group. Not one of
/// the nodes every container may use (`/dev/null` is), so what the container may do with it is
/// only what the spec's permissions put in its device cgroup; opening it does nothing.
const JSON_SPEC: &str = r#"{
  "cdiVersion": "1.0.0",
  "kind": "e2e.carapace.dev/fuse",
  "devices": [
    {
      "name": "fuse",
      "containerEdits": {
        "env": ["CDI_JSON=1"],
        "deviceNodes": [
          {"path": "/dev/cdi-fuse", "hostPath": "/dev/fuse", "type": "c", "permissions": "r"}
        ],
        "additionalGids": [4242]
      }
    }
  ]
}"#;

fn cdi(names: &[&str]) -> Vec<cri::CdiDevice> {
    names
        .iter()
        .map(|n| cri::CdiDevice {
            name: n.to_string(),
        })
        .collect()
}

#[tokio::test]
async fn cdi_devices_from_yaml_and_json_specs_reach_an_unprivileged_container() {
    // A short state dir, as Node::start makes it, and the test's own CDI spec dir.
    let state = tempfile::Builder::new()
        .prefix("cs.")
        .tempdir_in("/tmp")
        .unwrap();
    let mut cfg = DaemonConfig::new();
    cfg.set(
        "state",
        toml::Value::String(state.path().display().to_string()),
    );
    let spec_dir = cfg.dir().join("cdi");
    let data = cfg.dir().join("cdi-data");
    std::fs::create_dir_all(&spec_dir).unwrap();
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("hello.txt"), "from the host").unwrap();
    std::fs::write(spec_dir.join("null.yaml"), yaml_spec(&data)).unwrap();
    std::fs::write(spec_dir.join("zero.json"), JSON_SPEC).unwrap();
    // A broken spec of another vendor must not keep the others from working.
    std::fs::write(
        spec_dir.join("broken.yaml"),
        "kind: other.dev/x\ndevices: [",
    )
    .unwrap();
    cfg.set(
        "cdi_spec_dirs",
        toml::Value::Array(vec![toml::Value::String(spec_dir.display().to_string())]),
    );
    let mut n = Node::start_with(INDEX, cfg).await;
    let mut pod = n.pod("cdi", &uid(INDEX));
    pod.linux.get_or_insert_default().security_context = Some(cri::LinuxSandboxSecurityContext {
        namespace_options: Some(cri::NamespaceOption {
            network: cri::NamespaceMode::Node as i32,
            ..Default::default()
        }),
        ..Default::default()
    });
    let pod_id = n.run_pod(&pod).await;

    let mut c = container("gpu", &["sleep", "3600"]);
    c.cdi_devices = cdi(&["e2e.carapace.dev/null=dev0", "e2e.carapace.dev/fuse=fuse"]);
    let id = n.create_started(&pod_id, &pod, &c).await;

    // The node is the host's 1:3, and this unprivileged container may write to it.
    let (code, out, err) = sh(&mut n, &id, "ls -l /dev/cdi-null").await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with('c'), "not a character device: {out}");
    let (_, out, _) = sh(&mut n, &id, "stat -c '%t:%T' /dev/cdi-null /dev/cdi-fuse").await;
    // The host's numbers, in hex as stat prints them.
    let fuse = std::process::Command::new("stat")
        .args(["-c", "%t:%T", "/dev/fuse"])
        .output()
        .unwrap();
    let fuse = String::from_utf8(fuse.stdout).unwrap();
    assert_eq!(out, format!("1:3\n{fuse}"));
    let (code, out, err) = sh(&mut n, &id, "echo hi > /dev/cdi-null && echo written").await;
    assert_eq!((code, out.as_str()), (0, "written\n"), "{err}");
    // Read-only by the spec's permissions: the device cgroup lets it be opened for reading and
    // refuses it for writing.
    let (code, out, err) = sh(&mut n, &id, "exec 3< /dev/cdi-fuse && echo opened").await;
    assert_eq!((code, out.as_str()), (0, "opened\n"), "{err}");
    let (code, _, err) = sh(&mut n, &id, "exec 3> /dev/cdi-fuse").await;
    assert!(
        code != 0 && err.contains("Operation not permitted"),
        "{code}: {err}"
    );

    // The mount, read-only; the env of the spec and of both devices; the group.
    let (code, out, err) = sh(&mut n, &id, "cat /cdi-data/hello.txt").await;
    assert_eq!((code, out.as_str()), (0, "from the host"), "{err}");
    let (code, _, err) = sh(&mut n, &id, "touch /cdi-data/new").await;
    assert!(code != 0 && err.contains("Read-only file system"), "{err}");
    let (_, out, _) = sh(&mut n, &id, "echo $CDI_SPEC $CDI_DEVICE $CDI_JSON").await;
    assert_eq!(out, "yaml dev0 1\n");
    let (_, out, _) = sh(&mut n, &id, "id -G").await;
    assert!(out.split_whitespace().any(|g| g == "4242"), "groups: {out}");

    // The older annotation form names a device just as well.
    let mut a = container("annotated", &["sleep", "3600"]);
    a.annotations = HashMap::from([(
        "cdi.k8s.io/e2e-plugin_dev0".to_string(),
        "e2e.carapace.dev/null=dev0".to_string(),
    )]);
    let aid = n.create_started(&pod_id, &pod, &a).await;
    let (code, out, err) = sh(
        &mut n,
        &aid,
        "stat -c '%t:%T' /dev/cdi-null; echo $CDI_SPEC",
    )
    .await;
    assert_eq!((code, out.as_str()), (0, "1:3\nyaml\n"), "{err}");

    // A device no spec defines is refused, naming it.
    let mut u = container("unknown", &["sleep", "3600"]);
    u.cdi_devices = cdi(&["e2e.carapace.dev/null=dev0", "e2e.carapace.dev/null=nope"]);
    let e = n
        .create(&pod_id, &pod, &u)
        .await
        .expect_err("an unknown CDI device was accepted");
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    assert!(e.message().contains("e2e.carapace.dev/null=nope"), "{e}");

    n.remove_all(&pod_id).await;
    drop(state);
}
