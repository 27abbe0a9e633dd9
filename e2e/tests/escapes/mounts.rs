//! Container escapes through the mounts the executor makes, each named after the class of hole
//! it closes (issue 19): masks bound from a `/dev/null` a volume planted (CVE-2025-31133), a
//! read-only volume remounted by a path another container swaps meanwhile (CVE-2021-30465), and
//! read-only remounts that drop a volume's nosuid/nodev. Through the real daemon as in
//! `containers_isolation.rs`; every test removes what it made and ends with `Node::finish`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use carapace_e2e::cri;
use carapace_e2e::node::{Node, container, stdout_of};
use nix::mount::{MntFlags, MsFlags, mount, umount2};

const CORE_PATTERN: &str = "/proc/sys/kernel/core_pattern";

/// The host's core_pattern as it was; dropped, it puts it back should a container have changed
/// it (a failing assertion included), so no test leaves the node's core dumps redirected.
struct CorePattern(String);

impl CorePattern {
    fn save() -> CorePattern {
        CorePattern(std::fs::read_to_string(CORE_PATTERN).unwrap())
    }

    fn changed(&self) -> Option<String> {
        let now = std::fs::read_to_string(CORE_PATTERN).unwrap();
        (now != self.0).then_some(now)
    }
}

impl Drop for CorePattern {
    fn drop(&mut self) {
        if self.changed().is_some() {
            let _ = std::fs::write(CORE_PATTERN, self.0.trim_end_matches('\n'));
        }
    }
}

/// A host directory given to a container as a volume.
fn volume(host: &Path, at: &str, readonly: bool) -> cri::Mount {
    cri::Mount {
        container_path: at.into(),
        host_path: host.display().to_string(),
        readonly,
        ..Default::default()
    }
}

/// A tmpfs at `dir` whose mount source reads `name` in a mount table.
fn tmpfs(dir: &Path, name: &str, flags: MsFlags) {
    std::fs::create_dir_all(dir).unwrap();
    mount(Some(name), dir, Some("tmpfs"), flags, None::<&str>).unwrap();
}

/// The per-mount options (`rw,nosuid,...`) of every mount of `source` in a mountinfo text.
fn options_of_source<'a>(mountinfo: &'a str, source: &str) -> Vec<(&'a str, &'a str)> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            (right.split(' ').nth(1)? == source).then_some((*left.get(4)?, *left.get(5)?))
        })
        .collect()
}

/// Creates and starts `config`; the start's error, if it fails.
async fn try_start(
    n: &mut Node,
    pod_id: &str,
    pod: &cri::PodSandboxConfig,
    config: &cri::ContainerConfig,
) -> (String, Result<(), tonic::Status>) {
    let id = n
        .create(pod_id, pod, config)
        .await
        .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", n.d.log_text()));
    let r =
        n.rt.start_container(cri::StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .map(|_| ());
    (id, r)
}

/// CVE-2025-31133: with a volume at /dev, the container's /dev/null is whatever the volume
/// holds. A `null` symlink to the host's core_pattern must not turn the masks of /proc/kcore (where
/// the kernel has it) and /proc/timer_list into writable binds of it: the container is refused with the reason. A real
/// null device in the same volume is used as it is.
#[tokio::test]
async fn masked_paths_are_not_bound_from_a_planted_dev_null_cve_2025_31133() {
    let (mut n, pod, pod_id) =
        Node::with_running_pod(85, "devnull", "0d1e2f30-0000-4000-8000-000000000085").await;
    let dev = n.d.config.dir().join("vols/dev");
    std::fs::create_dir_all(&dev).unwrap();
    std::os::unix::fs::symlink(CORE_PATTERN, dev.join("null")).unwrap();
    let saved = CorePattern::save();

    let mut victim = container(
        "planted",
        &[
            "sh",
            "-c",
            "for f in /proc/kcore /proc/timer_list; do [ -e $f ] && echo carapace-e2e-31133 > $f; done",
        ],
    );
    victim.mounts = vec![volume(&dev, "/dev", false)];
    let (id, started) = try_start(&mut n, &pod_id, &pod, &victim).await;
    if started.is_ok() {
        n.exited(&id).await;
    }
    assert_eq!(
        saved.changed(),
        None,
        "a container wrote the host's core_pattern through a masked path (start: {started:?})"
    );
    let e = started.expect_err("a container with a planted /dev/null started");
    assert!(
        e.message().contains("/dev/null is not the null device"),
        "{e}"
    );

    // The volume's own null device: the masks are that device, and writes to them go nowhere.
    std::fs::remove_file(dev.join("null")).unwrap();
    let made = std::process::Command::new("mknod")
        .arg(dev.join("null"))
        .args(["c", "1", "3"])
        .status()
        .unwrap();
    assert!(made.success());
    let mut real = container(
        "real",
        &[
            "sh",
            "-c",
            "stat -c %t:%T /proc/timer_list; echo x > /proc/timer_list && wc -c < /proc/timer_list",
        ],
    );
    real.mounts = vec![volume(&dev, "/dev", false)];
    let (_, st, lines) = n.run_to_exit(&pod_id, &pod, &real).await;
    assert_eq!(st.exit_code, 0, "{lines:?}");
    let out: Vec<String> = stdout_of(&lines)
        .lines()
        .map(|l| l.trim().to_owned())
        .collect();
    assert_eq!(out, ["1:3", "0"], "{lines:?}");
    assert_eq!(saved.changed(), None);

    n.remove_all(&pod_id).await;
}

/// Renames on the host that make `<d>/x` a directory, then a symlink to `/a`, then a directory
/// again, as fast as they go until `stop`: what a container sharing the volume can do. A rename
/// keeps a mount on the directory (only rmdir and unlink detach one).
fn swap_until(d: PathBuf, stop: Arc<AtomicBool>, swaps: Arc<AtomicU64>) {
    let (x, y, s) = (d.join("x"), d.join("y"), d.join("s"));
    while !stop.load(Ordering::Relaxed) {
        let _ = std::fs::rename(&x, &y);
        let _ = std::fs::rename(&s, &x);
        let _ = std::fs::rename(&x, &s);
        let _ = std::fs::rename(&y, &x);
        swaps.fetch_add(1, Ordering::Relaxed);
    }
}

/// CVE-2021-30465 (remount side): a read-only volume at /a/x inside a shared volume at /a. While
/// another party keeps swapping the shared `x` between a directory and a symlink to `/a`, every
/// container that starts has the read-only volume read-only wherever it landed and the shared
/// volume writable: the remount never reaches another mount through a second lookup of the path.
#[tokio::test]
async fn a_read_only_volume_stays_read_only_when_its_path_is_swapped_during_start() {
    let (mut n, pod, pod_id) =
        Node::with_running_pod(86, "swap", "0d1e2f30-0000-4000-8000-000000000086").await;
    let vols = n.d.config.dir().join("vols");
    let (d, b) = (vols.join("d"), vols.join("b"));
    tmpfs(&d, "e2e-swap-shared", MsFlags::empty());
    tmpfs(&b, "e2e-swap-readonly", MsFlags::empty());
    std::fs::create_dir(d.join("x")).unwrap();
    std::os::unix::fs::symlink("/a", d.join("s")).unwrap();
    let victim = |i: usize, cmd: &str| {
        let mut c = container(&format!("victim{i}"), &["sh", "-c", cmd]);
        c.mounts = vec![volume(&d, "/a", false), volume(&b, "/a/x", true)];
        c
    };

    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicU64::new(0));
    let swapper = {
        let (d, stop, swaps) = (d.clone(), stop.clone(), swaps.clone());
        std::thread::spawn(move || swap_until(d, stop, swaps))
    };
    let (mut started, mut refused, mut wrong) = (0, Vec::new(), Vec::new());
    let until = Instant::now() + Duration::from_secs(6);
    let mut i = 0;
    while Instant::now() < until {
        i += 1;
        let (id, r) = try_start(
            &mut n,
            &pod_id,
            &pod,
            &victim(i, "cat /proc/self/mountinfo"),
        )
        .await;
        if let Err(e) = r {
            // A start the swaps broke (the mount point went away under it) is no escape.
            refused.push(e.message().to_owned());
            continue;
        }
        started += 1;
        let st = n.exited(&id).await;
        let table = stdout_of(&carapace_e2e::node::cri_log(Path::new(&st.log_path)));
        let ro = options_of_source(&table, "e2e-swap-readonly");
        let shared = options_of_source(&table, "e2e-swap-shared");
        let bad = ro.iter().any(|(_, o)| !o.starts_with("ro"))
            || shared.iter().any(|(_, o)| !o.starts_with("rw"))
            || shared.is_empty();
        if bad {
            wrong.push(format!(
                "victim{i}: read-only volume {ro:?}, shared volume {shared:?}"
            ));
        }
    }
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();
    eprintln!(
        "{i} victims, {started} started, {} swaps; refused: {refused:#?}",
        swaps.load(Ordering::Relaxed)
    );
    assert!(wrong.is_empty(), "mounts with the wrong mode: {wrong:#?}");
    assert!(started >= 3, "{started} of {i} started: {refused:#?}");

    // Settled: the volume at /a/x refuses writes, the shared one around it takes them.
    let x = d.join("x");
    if !x.is_dir() {
        let _ = std::fs::remove_file(&x);
        std::fs::create_dir(&x).unwrap();
    }
    let check = victim(
        0,
        "touch /a/x/f; touch /a/f && echo shared-written; grep -c e2e-swap /proc/self/mountinfo",
    );
    let (_, st, lines) = n.run_to_exit(&pod_id, &pod, &check).await;
    let out = stdout_of(&lines);
    let err: Vec<&str> = lines
        .iter()
        .filter(|l| l.1 == "stderr")
        .map(|l| l.3.as_str())
        .collect();
    assert_eq!(st.exit_code, 0, "{lines:?}");
    assert_eq!(out, "shared-written\n2", "{lines:?}");
    assert!(
        err.iter().any(|l| l.contains("Read-only file system")),
        "{lines:?}"
    );

    // The daemon's last check finds no mount left under its directory.
    for m in [&d, &b] {
        umount2(m.as_path(), MntFlags::MNT_DETACH).unwrap();
    }
    n.remove_all(&pod_id).await;
}

/// A read-only bind of a `nosuid,nodev,noexec` mount keeps those flags in the container: the
/// read-only remount repeats them instead of clearing them.
#[tokio::test]
async fn a_read_only_volume_keeps_the_nosuid_nodev_noexec_of_its_source() {
    let (mut n, pod, pod_id) =
        Node::with_running_pod(87, "flags", "0d1e2f30-0000-4000-8000-000000000087").await;
    let src = n.d.config.dir().join("vols/locked");
    tmpfs(
        &src,
        "e2e-flags-locked",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
    );
    let mut c = container("flags", &["cat", "/proc/self/mountinfo"]);
    c.mounts = vec![volume(&src, "/ro", true), volume(&src, "/rw", false)];
    let (_, st, lines) = n.run_to_exit(&pod_id, &pod, &c).await;
    assert_eq!(st.exit_code, 0, "{lines:?}");
    let table = stdout_of(&lines);
    let mut seen = options_of_source(&table, "e2e-flags-locked");
    seen.sort();
    let want = |mode: &str| {
        ["nosuid", "nodev", "noexec"]
            .iter()
            .all(|f| mode.split(',').any(|o| o == *f))
    };
    assert_eq!(
        seen.iter().map(|(at, _)| *at).collect::<Vec<_>>(),
        ["/ro", "/rw"],
        "{table}"
    );
    for (at, options) in &seen {
        assert!(want(options), "{at} lost a flag of its source: {options}");
    }
    assert!(seen[0].1.starts_with("ro,"), "{seen:?}");
    assert!(seen[1].1.starts_with("rw,"), "{seen:?}");

    umount2(src.as_path(), MntFlags::MNT_DETACH).unwrap();
    n.remove_all(&pod_id).await;
}
