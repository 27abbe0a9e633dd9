//! The device cgroup, and volumes that reach procfs through a symlink: each tried for real through
//! the daemon and named after its class. Every test removes what it made and ends with
//! `Node::finish` (via `remove_all`), which checks that nothing is left.

use std::path::Path;

use carapace_e2e::cri;
use carapace_e2e::devices::LoopDevice;
use carapace_e2e::node::{Node, container, output_of, security};

const MARKER: &[u8; 16] = b"carapace-host-16";

/// Makes a node for the loop device, reads its first 16 bytes and writes `X` at byte 100, each
/// step printing what happened.
fn attack(path: &str, major: u64, minor: u64, mknod: bool) -> Vec<String> {
    let make = if mknod {
        format!("mknod {path} b {major} {minor} && echo MKNOD-OK; ")
    } else {
        String::new()
    };
    // Only through a block device: dd would otherwise write a plain file of that name.
    let script = format!(
        "{make}if [ -b {path} ]; then head -c 16 {path} && echo; echo READ-DONE; \
         echo X | dd of={path} seek=100 bs=1 conv=notrunc 2>&1 && echo WRITE-OK; fi; true"
    );
    vec!["sh".into(), "-c".into(), script]
}

/// CVE class: no device cgroup (what runc's default device rules exist for). A default root
/// container with CAP_MKNOD makes a node for the host's loop device and must neither read the
/// host's data through it nor write to it; a privileged container can; a device the request names
/// is there and works, and only that one.
#[tokio::test]
async fn device_cgroup_denies_host_devices_to_a_default_container() {
    let disk = LoopDevice::new(MARKER);
    let (major, minor) = disk.numbers();
    let (mut n, pod, pod_id) =
        Node::with_running_pod(60, "devices", "0d1e2f30-0000-4000-8000-000000000060").await;

    let args = attack("/tmp/l", major, minor, true);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let plain = container("plain", &argv);
    let (_, st, lines) = n.run_to_exit(&pod_id, &pod, &plain).await;
    let out = output_of(&lines);
    assert_eq!(st.exit_code, 0, "{out}");
    assert!(
        !out.contains("carapace-host-16"),
        "a default container read the host's disk:\n{out}"
    );
    assert!(!out.contains("WRITE-OK"), "{out}");
    assert!(
        out.contains("Operation not permitted"),
        "the device was not refused as runc refuses it:\n{out}"
    );
    assert_eq!(disk.written(), vec![0u8; 16], "the write reached the host");

    // The same with the device asked for by the request (read-only): there, readable, and the
    // write refused by the device cgroup, not by the node's mode.
    let container_path = "/dev/xvdz";
    let args = attack(container_path, major, minor, false);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut given = container("given", &argv);
    given.devices = vec![cri::Device {
        host_path: disk.device.display().to_string(),
        container_path: container_path.into(),
        permissions: "r".into(),
    }];
    let (_, st, lines) = n.run_to_exit(&pod_id, &pod, &given).await;
    let out = output_of(&lines);
    assert_eq!(st.exit_code, 0, "{out}");
    assert!(out.contains("carapace-host-16"), "{out}");
    assert!(!out.contains("WRITE-OK"), "{out}");
    assert_eq!(
        disk.written(),
        vec![0u8; 16],
        "a read-only device was written"
    );

    // Privileged: every device, as containerd gives it.
    let args = attack("/tmp/l", major, minor, true);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut admin = container("admin", &argv);
    security(&mut admin).privileged = true;
    let (_, st, lines) = n.run_to_exit(&pod_id, &pod, &admin).await;
    let out = output_of(&lines);
    assert_eq!(st.exit_code, 0, "{out}");
    assert!(out.contains("carapace-host-16"), "{out}");
    assert!(out.contains("WRITE-OK"), "{out}");
    assert_eq!(&disk.written()[..2], b"X\n");

    // A path that is not a device is refused at create, naming it.
    let mut bad = container("bad", &["true"]);
    bad.devices = vec![cri::Device {
        host_path: disk.backing.display().to_string(),
        container_path: "/dev/x".into(),
        permissions: "rw".into(),
    }];
    let e = n.create(&pod_id, &pod, &bad).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    assert!(e.message().contains("disk.img"), "{e}");

    n.remove_all(&pod_id).await;
    assert!(Path::new(&disk.device).exists());
}

/// CVE class: a volume mounted over procfs through a symlink (runc checks the resolved target,
/// not only the destination's text). A shared volume holds `p -> /proc` (planted here by the test,
/// as another container of the pod could); a volume at `/v/p/sys` reads as harmless text but
/// resolves to the container's `/proc/sys`. The start is refused, naming the destination.
#[tokio::test]
async fn a_volume_reaching_proc_through_a_symlink_is_refused() {
    let (mut n, pod, pod_id) =
        Node::with_running_pod(61, "procsym", "0d1e2f30-0000-4000-8000-000000000061").await;
    let shared = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/proc", shared.path().join("p")).unwrap();
    let cover = tempfile::tempdir().unwrap();
    let mut c = container("cover", &["sh", "-c", "cat /proc/sys/kernel/hostname"]);
    c.mounts = vec![
        cri::Mount {
            container_path: "/v".into(),
            host_path: shared.path().display().to_string(),
            ..Default::default()
        },
        cri::Mount {
            container_path: "/v/p/sys".into(),
            host_path: cover.path().display().to_string(),
            ..Default::default()
        },
    ];
    let id = n.create(&pod_id, &pod, &c).await.unwrap();
    let e =
        n.rt.start_container(cri::StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .expect_err("a volume was mounted over /proc/sys through a symlink");
    assert!(e.message().contains("resolves into /proc"), "{e}");
    n.remove_all(&pod_id).await;
}
