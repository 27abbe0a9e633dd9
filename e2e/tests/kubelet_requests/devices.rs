//! Devices as the kubelet asks for them: what a device plugin hands it (host path, container
//! path, permissions) passed on in `CreateContainer.devices`, and a privileged container, which
//! gets the host's device nodes as runc gives them under containerd.

use std::collections::BTreeSet;
use std::path::Path;

use carapace_e2e::cri;
use carapace_e2e::devices::{LoopDevice, numbers};
use carapace_e2e::node::{Node, container, output_of, security, stdout_of};

/// What a device plugin's `Allocate` answers and the kubelet passes on unchanged: two disks, at
/// container paths of their own, one `rw` and one `rwm`. Each is a node of the right kind in
/// the container and can be read and written; a device the request does not name cannot be
/// opened even after the container makes a node for it.
#[tokio::test]
async fn a_device_plugins_devices_are_there_and_usable_and_no_other() {
    let a = LoopDevice::new(b"kubelet-device-a");
    let b = LoopDevice::new(b"kubelet-device-b");
    let (mut n, pod, pod_id) =
        Node::with_running_pod(162, "devices", "6b0d0000-0000-4000-8000-000000000162").await;
    let (amaj, amin) = numbers(&a.device);
    let (bmaj, bmin) = numbers(&b.device);
    // loop-control: a host device the request does not name.
    let (cmaj, cmin) = numbers(Path::new("/dev/loop-control"));
    let script = format!(
        "stat -c '%n %F %t:%T' /dev/xvda /dev/sdb; \
         head -c 16 /dev/xvda; echo; head -c 16 /dev/sdb; echo; \
         echo A | dd of=/dev/xvda seek=100 bs=1 conv=notrunc 2>/dev/null && echo WROTE-A; \
         echo B | dd of=/dev/sdb seek=100 bs=1 conv=notrunc 2>/dev/null && echo WROTE-B; \
         ls /dev/loop-control 2>&1; \
         (mknod /tmp/lc c {cmaj} {cmin} && : <>/tmp/lc && echo OPENED-LC) 2>&1; true"
    );
    let mut c = container("gpu", &["sh", "-c", &script]);
    c.devices = vec![
        cri::Device {
            host_path: a.device.display().to_string(),
            container_path: "/dev/xvda".into(),
            permissions: "rw".into(),
        },
        cri::Device {
            host_path: b.device.display().to_string(),
            container_path: "/dev/sdb".into(),
            permissions: "rwm".into(),
        },
    ];
    let (_, st, lines) = n.run_to_exit(&pod_id, &pod, &c).await;
    let out = stdout_of(&lines);
    assert_eq!(st.exit_code, 0, "{}", output_of(&lines));
    let want = [
        format!("/dev/xvda block special file {amaj:x}:{amin:x}"),
        format!("/dev/sdb block special file {bmaj:x}:{bmin:x}"),
        "kubelet-device-a".into(),
        "kubelet-device-b".into(),
        "WROTE-A".into(),
        "WROTE-B".into(),
    ];
    for w in &want {
        assert!(out.lines().any(|l| l == w), "missing {w:?} in:\n{out}");
    }
    assert_eq!(&a.written()[..2], b"A\n");
    assert_eq!(&b.written()[..2], b"B\n");
    assert!(out.contains("/dev/loop-control: No such file"), "{out}");
    // Refused at mknod or at open (runc allows the mknod), never opened.
    assert!(
        out.contains("/tmp/lc: Operation not permitted") && !out.contains("OPENED-LC"),
        "a device not asked for was opened:\n{out}"
    );
    n.remove_all(&pod_id).await;
}

/// The host's character and block nodes under `root`, as `path type major:minor`, leaving out
/// what a container has its own of (devpts, shm, mqueue, console, ptmx).
fn host_nodes(root: &Path) -> BTreeSet<String> {
    use std::os::unix::fs::FileTypeExt;
    let mut out = BTreeSet::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = e.path();
            let Ok(m) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            if m.is_dir() {
                if !["pts", "shm", "mqueue"].contains(&rel.as_str()) {
                    dirs.push(p);
                }
                continue;
            }
            if rel == "console" || rel == "ptmx" {
                continue;
            }
            let kind = if m.file_type().is_char_device() {
                "c"
            } else if m.file_type().is_block_device() {
                "b"
            } else {
                continue;
            };
            let (major, minor) = numbers(&p);
            out.insert(format!("/dev/{rel} {kind} {major:x}:{minor:x}"));
        }
    }
    out
}

/// A privileged container sees the host's device nodes, as runc makes them from the list
/// containerd gives it for a privileged container: every character and block node of the
/// host's `/dev`, subdirectories included, with its numbers.
#[tokio::test]
async fn a_privileged_container_sees_the_hosts_devices() {
    let (mut n, pod, pod_id) =
        Node::with_running_pod(163, "privileged", "6b0d0000-0000-4000-8000-000000000163").await;
    let before = host_nodes(Path::new("/dev"));
    let script = "cd /dev && find . -path ./pts -prune -o -path ./shm -prune -o -path ./mqueue \
                  -prune -o \\( -type c -o -type b \\) -print | while read p; do \
                  case $p in ./console|./ptmx) continue;; esac; \
                  if [ -b $p ]; then k=b; else k=c; fi; \
                  echo \"/dev/${p#./} $k $(stat -c %t:%T $p)\"; done";
    let mut c = container("admin", &["sh", "-c", script]);
    security(&mut c).privileged = true;
    let (_, st, lines) = n.run_to_exit(&pod_id, &pod, &c).await;
    let after = host_nodes(Path::new("/dev"));
    let out = stdout_of(&lines);
    assert_eq!(st.exit_code, 0, "{}", output_of(&lines));
    let seen: BTreeSet<String> = out.lines().map(str::to_owned).collect();
    // Another test may add or remove a loop device meanwhile: what the host had all along must
    // be there, and nothing the host never had.
    let always: BTreeSet<String> = before.intersection(&after).cloned().collect();
    let ever: BTreeSet<String> = before.union(&after).cloned().collect();
    let missing: Vec<&String> = always.difference(&seen).collect();
    let extra: Vec<&String> = seen.difference(&ever).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "host nodes missing in the container: {missing:?}\nnodes the host lacks: {extra:?}"
    );
    assert!(seen.len() > 6, "{seen:?}");
    n.remove_all(&pod_id).await;
}
