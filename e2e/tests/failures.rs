//! The failures users hit on a real node, through the real daemon: the disk under `root` filling
//! up during a pull, a CNI plugin that hangs in a pod's ADD, and a container that writes a
//! gigabyte of log in one burst beside a pod that must keep answering. Each test says what the
//! user sees (the status code and message, what is listed) and that nothing is left half-made.
//! Pod-network indexes 175..=179 and 185..=189 are this file's.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use carapace_e2e::node::{Node, container};
use carapace_e2e::{cri, eventually, make_executable, proc_status_field, processes_naming};
use tonic::Code;

const MIB: u64 = 1 << 20;

/// Runs a host tool to success.
fn run(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {tool}: {e}"));
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Bytes free for root on the filesystem holding `path`.
fn free_bytes(path: &Path) -> u64 {
    let p = path.display().to_string();
    run("df", &["--output=avail", "-B1", &p])
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no free space from df for {p}"))
}

/// A small ext4 filesystem on a loop device (`mount -o loop` sets the device to free itself on
/// unmount), for a daemon root that can fill up. No blocks reserved for root: the daemon runs as
/// root and must meet the full disk at the size the test counts on. Dropped, it is unmounted
/// (lazily if a killed daemon's helper still holds it) and its image file removed, so a failing
/// test leaves no mount or loop device behind.
struct SmallDisk {
    image: PathBuf,
    mnt: PathBuf,
    mounted: bool,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    fn new(size_mib: u64) -> SmallDisk {
        let dir = tempfile::Builder::new()
            .prefix("carapace-e2e-disk.")
            .tempdir_in("/tmp")
            .expect("creating the disk's dir");
        let image = dir.path().join("disk.img");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).expect("creating the mount point");
        let img = image.display().to_string();
        run("truncate", &["-s", &format!("{size_mib}M"), &img]);
        run("mkfs.ext4", &["-q", "-F", "-m", "0", &img]);
        run("mount", &["-o", "loop", &img, &mnt.display().to_string()]);
        SmallDisk {
            image,
            mnt,
            mounted: true,
            _dir: dir,
        }
    }

    fn free(&self) -> u64 {
        free_bytes(&self.mnt)
    }

    /// Adds a file taking `bytes` of the disk, so `free()` drops by as much.
    fn fill(&self, name: &str, bytes: u64) -> PathBuf {
        let f = self.mnt.join(name);
        run(
            "fallocate",
            &["-l", &bytes.to_string(), &f.display().to_string()],
        );
        f
    }

    /// Fills the disk up to `left` bytes free.
    fn fill_to(&self, name: &str, left: u64) -> PathBuf {
        let free = self.free();
        assert!(free > left, "only {free} bytes free, wanted {left} left");
        self.fill(name, free - left)
    }

    /// The loop devices backed by the image.
    fn loop_devices(&self) -> String {
        run("losetup", &["-j", &self.image.display().to_string()])
    }

    /// Unmounts, and checks the loop device went with the mount (the kernel lets it go
    /// shortly after the unmount, not at once).
    fn remove(mut self) {
        nix::mount::umount(&self.mnt).expect("unmounting the small disk");
        self.mounted = false;
        let mut left = self.loop_devices();
        for _ in 0..100 {
            if left.trim().is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
            left = self.loop_devices();
        }
        panic!("loop devices left 10 s after the unmount: {left}");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        if self.mounted && nix::mount::umount(&self.mnt).is_err() {
            let _ = nix::mount::umount2(&self.mnt, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Names of the entries of `dir`, sorted (none if it does not exist).
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// What a pull may leave in the image store: blobs, ingests in flight, snapshots (temp dirs
/// included) and the images listed.
#[derive(Debug, PartialEq)]
struct Store {
    blobs: Vec<String>,
    ingest: Vec<String>,
    snapshots: Vec<String>,
    images: Vec<String>,
}

async fn store(node: &Node, root: &Path) -> Store {
    let mut images: Vec<String> = node
        .d
        .images()
        .await
        .list_images(cri::ListImagesRequest::default())
        .await
        .expect("ListImages")
        .into_inner()
        .images
        .into_iter()
        .map(|i| format!("{} {:?}", i.id, i.repo_tags))
        .collect();
    images.sort();
    Store {
        blobs: entries(&root.join("content/blobs/sha256")),
        ingest: entries(&root.join("content/ingest")),
        snapshots: entries(&root.join("snapshots")),
        images,
    }
}

/// Pushes `<repo>:v1`: the busybox image with a top layer holding `/<file>` of `bytes` random
/// (incompressible) bytes, so the layer blob and its unpacked file each take `bytes` of disk.
async fn push_random(node: &mut Node, repo: &str, file: &str, bytes: u64) {
    use std::os::unix::fs::PermissionsExt;
    let top = tempfile::tempdir().expect("a temp dir");
    let mut random = Vec::with_capacity(bytes as usize);
    std::io::Read::read_to_end(
        &mut std::io::Read::take(
            std::fs::File::open("/dev/urandom").expect("/dev/urandom"),
            bytes,
        ),
        &mut random,
    )
    .expect("reading /dev/urandom");
    std::fs::write(top.path().join(file), &random).expect("writing the random file");
    // The layer's `./` lands on the image's root: world-traversable, as an image's.
    std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let extra = format!("={}", top.path().display());
    node.registry.push(repo, &[&extra]).await;
}

/// The disk under `root` fills during a pull, once while the layer downloads and once while it
/// unpacks: the user sees RESOURCE_EXHAUSTED naming that disk, not an internal error, and the
/// store is as before the pull (no ingest, no temp snapshot, no blob or record of the failed
/// image). A small image still pulls while the disk is nearly full, and once space returns the
/// same big pull succeeds and the image runs. Then a container fills the disk through its
/// writable layer: it sees ENOSPC, its removal gives the space back, and the image records on
/// that disk survive a restart.
#[tokio::test]
async fn a_full_disk_fails_a_pull_with_resource_exhausted_and_leaves_nothing_half_written() {
    let t = Instant::now();
    let disk = SmallDisk::new(64);
    let root = disk.mnt.join("root");
    let root_text = root.display().to_string();
    let mut node = Node::start_configured(175, |cfg| {
        cfg.set("root", toml::Value::String(root_text.clone()));
    })
    .await;
    let big_bytes = 16 * MIB;
    push_random(&mut node, "e2e/big", "big.bin", big_bytes).await;
    push_random(&mut node, "e2e/small", "small.bin", MIB).await;
    let big = node.registry.image("e2e/big", "v1");
    let small = node.registry.image("e2e/small", "v1");
    let free_at_start = disk.free();
    eprintln!(
        "small disk: {} MiB free with busybox pulled",
        free_at_start / MIB
    );
    assert!(
        free_at_start > 2 * big_bytes + 8 * MIB,
        "the disk is too small for the big image once space returns: {free_at_start} bytes free"
    );

    // 1. Too little room for the layer blob itself: the download fails.
    let before = store(&node, &root).await;
    let filler = disk.fill_to("filler-1", big_bytes / 2);
    let err = node
        .try_pull_image(&big)
        .await
        .expect_err("a pull bigger than the free space succeeded");
    eprintln!("pull while downloading onto a full disk: {err:?}");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    assert!(
        err.message().contains("no space left") && err.message().contains(&root_text),
        "the message does not name the full disk {root_text}: {}",
        err.message()
    );
    assert_eq!(
        store(&node, &root).await,
        before,
        "the failed pull left something"
    );

    // A small image fits in what is left.
    node.try_pull_image(&small)
        .await
        .unwrap_or_else(|e| panic!("a small pull on a nearly full disk: {e}"));

    // 2. Room for the blob but not for its unpacked layer: the unpack fails.
    std::fs::remove_file(&filler).unwrap();
    let before = store(&node, &root).await;
    let filler = disk.fill_to("filler-2", big_bytes + big_bytes / 2);
    let err = node
        .try_pull_image(&big)
        .await
        .expect_err("a pull whose unpack does not fit succeeded");
    eprintln!("pull while unpacking onto a full disk: {err:?}");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    assert!(
        err.message().contains("no space left") && err.message().contains(&root_text),
        "the message does not name the full disk {root_text}: {}",
        err.message()
    );
    assert_eq!(
        store(&node, &root).await,
        before,
        "the failed pull left something"
    );

    // 3. Space returns: the same pull succeeds and the image runs.
    std::fs::remove_file(&filler).unwrap();
    node.try_pull_image(&big)
        .await
        .unwrap_or_else(|e| panic!("the pull after space returned: {e}"));
    let pod = node.pod("bigdisk", "17500000-0000-4000-8000-000000000175");
    let pod_id = node.run_pod(&pod).await;
    let mut c = container("big", &["/bin/busybox", "wc", "-c", "/big.bin"]);
    c.image = Some(cri::ImageSpec {
        image: big.clone(),
        ..Default::default()
    });
    let (_, st, lines) = node.run_to_exit(&pod_id, &pod, &c).await;
    assert_eq!(st.exit_code, 0, "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.3.trim() == format!("{big_bytes} /big.bin")),
        "the big image's file is not whole in the container: {lines:?}"
    );

    // 4. A container fills the disk through its writable layer: it sees ENOSPC, and the node
    // carries on: its removal gives the space back and the images are intact.
    let images_before = store(&node, &root).await.images;
    let fill = container(
        "fill",
        &[
            "sh",
            "-c",
            "busybox dd if=/dev/zero of=/fill bs=1M; echo dd-exit=$?",
        ],
    );
    let (fill_id, st, lines) = node.run_to_exit(&pod_id, &pod, &fill).await;
    let full = disk.free();
    let out = carapace_e2e::node::output_of(&lines);
    eprintln!("a container filled the disk ({full} bytes free): {out}");
    assert_eq!(st.exit_code, 0, "{out}");
    assert!(
        out.contains("No space left on device") && out.contains("dd-exit=1"),
        "the container did not meet the full disk: {out}"
    );
    node.remove_container(&fill_id).await;
    assert!(
        disk.free() > full + 8 * MIB,
        "removing the container gave no space back: {} bytes free",
        disk.free()
    );
    assert_eq!(store(&node, &root).await.images, images_before);
    // The records on that disk survived it: a restarted daemon has every image and runs one.
    node.d = node.d.restart().await;
    node.rt = node.d.runtime().await;
    assert_eq!(store(&node, &root).await.images, images_before);
    let mut again = container("big-again", &["/bin/busybox", "wc", "-c", "/big.bin"]);
    again.image = c.image.clone();
    let (_, st, lines) = node.run_to_exit(&pod_id, &pod, &again).await;
    assert_eq!(st.exit_code, 0, "{lines:?}");
    node.remove_all(&pod_id).await;
    disk.remove();
    eprintln!("full disk: {:?}", t.elapsed());
}

/// host-local's leases in the network of test `index`.
fn leases(index: u8) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = entries(Path::new(&format!(
        "/var/lib/cni/networks/carapace-e2e-{index}"
    )))
    .iter()
    .filter_map(|n| n.parse().ok())
    .collect();
    v.sort();
    v
}

/// The interfaces on the bridge of test `index` (the host ends of its pods' veths).
fn veths(index: u8) -> String {
    let out = Command::new("ip")
        .args(["-o", "link", "show", "master", &format!("cre2e{index}")])
        .output()
        .expect("running ip");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Whether `pid` is still running (a zombie is not).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .is_some_and(|zombie| !zombie)
}

/// A CNI plugin in the pod network's chain hangs in ADD far beyond the daemon's plugin timeout:
/// RunPodSandbox fails at the timeout with DEADLINE_EXCEEDED naming the plugin and the timeout,
/// the plugin and what it started are killed, DEL ran through the chain (the bridge plugin's
/// lease and veth are gone) and nothing of the pod is left. The kubelet's retry once the
/// plugin is fixed runs the pod.
#[tokio::test]
async fn a_hung_cni_plugin_fails_run_pod_sandbox_at_the_timeout_and_leaves_nothing() {
    const INDEX: u8 = 176;
    const TIMEOUT_SECS: u64 = 2;
    let t = Instant::now();
    let plugins = tempfile::Builder::new()
        .prefix("carapace-e2e-hang.")
        .tempdir_in("/tmp")
        .unwrap();
    let bin = plugins.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let log = plugins.path().join("calls");
    let hang_flag = plugins.path().join("hang");
    std::fs::write(&hang_flag, "").unwrap();
    // Chained after bridge: hangs in ADD while the flag file exists (its pid and its sleep's
    // logged), otherwise hands the previous result on; DEL succeeds.
    let script = format!(
        r#"#!/bin/sh
echo "$CNI_COMMAND $CNI_CONTAINERID" >> {log}
case "$CNI_COMMAND" in
VERSION) echo '{{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}}' ;;
ADD)
  if [ -e {flag} ]; then
    sleep 3176 &
    echo "pids $$ $!" >> {log}
    wait
  fi
  python3 -c 'import json,sys; json.dump(json.load(sys.stdin)["prevResult"], sys.stdout)'
  ;;
esac
"#,
        log = log.display(),
        flag = hang_flag.display()
    );
    let hang = bin.join("hang");
    std::fs::write(&hang, script).unwrap();
    make_executable(&hang);
    let bin_dirs = toml::Value::Array(
        [
            bin.as_path(),
            Path::new("/opt/cni/bin"),
            Path::new("/usr/lib/cni"),
        ]
        .iter()
        .map(|p| toml::Value::String(p.display().to_string()))
        .collect(),
    );
    let mut node = Node::start_configured(INDEX, |cfg| {
        cfg.set("cni.bin_dirs", bin_dirs);
        cfg.set(
            "cni.plugin_timeout_secs",
            toml::Value::Integer(TIMEOUT_SECS as i64),
        );
    })
    .await;
    let conflist = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": format!("carapace-e2e-{INDEX}"),
        "plugins": [
            {
                "type": "bridge",
                "bridge": format!("cre2e{INDEX}"),
                "isGateway": true,
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": format!("10.213.{INDEX}.0/24") }]],
                    "routes": [{ "dst": "0.0.0.0/0" }]
                }
            },
            { "type": "hang" }
        ]
    });
    std::fs::write(
        node.d.config.dir().join("cni/net.d/10-e2e.conflist"),
        conflist.to_string(),
    )
    .unwrap();
    let leases_before = leases(INDEX);
    let pod = node.pod("hung", "17600000-0000-4000-8000-000000000176");

    let started = Instant::now();
    let res = node
        .rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod.clone()),
            runtime_handler: String::new(),
        })
        .await;
    let took = started.elapsed();
    let err = match res {
        Ok(r) => panic!(
            "RunPodSandbox succeeded ({}) through a hung plugin",
            r.into_inner().pod_sandbox_id
        ),
        Err(e) => e,
    };
    eprintln!("RunPodSandbox through a hung plugin after {took:?}: {err:?}");
    let calls = std::fs::read_to_string(&log).unwrap_or_default();
    eprintln!("the plugin's calls:\n{calls}");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    assert!(
        err.message().contains("hang") && err.message().contains(&format!("{TIMEOUT_SECS}s")),
        "the status does not name the plugin and the timeout: {}",
        err.message()
    );
    assert!(
        took >= Duration::from_secs(TIMEOUT_SECS) && took < Duration::from_secs(30),
        "RunPodSandbox took {took:?} with a {TIMEOUT_SECS}s plugin timeout"
    );
    // The hung plugin and its child are killed.
    let pids: Vec<i32> = calls
        .lines()
        .filter_map(|l| l.strip_prefix("pids "))
        .flat_map(|l| l.split(' ').filter_map(|p| p.parse().ok()))
        .collect();
    assert_eq!(pids.len(), 2, "the hung ADD did not log its pids: {calls}");
    eventually(Duration::from_secs(5), "the hung plugin to be gone", || {
        let left: Vec<i32> = pids.iter().copied().filter(|&p| alive(p)).collect();
        async move { left.is_empty().then_some(()) }
    })
    .await;
    // DEL ran through the chain once ADD failed.
    assert!(
        calls.lines().any(|l| l.starts_with("DEL ")),
        "no DEL ran after the failed ADD: {calls}"
    );
    // Nothing of the pod is left: not listed, no lease, no veth, no namespace or mount, no
    // cgroup, no state or cached result.
    let pods = node.d.pods().await;
    assert!(pods.is_empty(), "the failed pod is listed: {pods:?}");
    assert_eq!(
        leases(INDEX),
        leases_before,
        "the failed pod kept its lease"
    );
    assert_eq!(veths(INDEX), "", "the failed pod's veth is left");
    let sandboxes = node.state().join("sandboxes");
    let mounts = carapace_e2e::mounts_under(&sandboxes);
    assert!(
        mounts.is_empty(),
        "mounts left by the failed pod: {mounts:?}"
    );
    assert_eq!(
        entries(&sandboxes),
        Vec::<String>::new(),
        "sandbox dirs left"
    );
    let cgroups = carapace_e2e::node::pod_cgroups(INDEX);
    assert!(cgroups.is_empty(), "cgroups left: {cgroups:?}");
    let records = entries(&node.d.config.root().join("sandboxes"));
    assert!(records.is_empty(), "pod records left: {records:?}");
    let cached = entries(&node.d.config.root().join("cni/results"));
    assert!(cached.is_empty(), "cached CNI results left: {cached:?}");
    let helpers = processes_naming(plugins.path());
    assert!(helpers.is_empty(), "plugin processes left: {helpers:?}");

    // The plugin is fixed; the kubelet retries the same pod.
    std::fs::remove_file(&hang_flag).unwrap();
    let pod_id = node.run_pod(&pod).await;
    let (st, _) = node.d.pod_status(&pod_id).await;
    let ip = st.network.map(|n| n.ip).unwrap_or_default();
    assert!(
        ip.starts_with(&format!("10.213.{INDEX}.")),
        "the retried pod has no address of its network: {ip:?}"
    );
    node.remove_all(&pod_id).await;
    assert_eq!(
        leases(INDEX),
        leases_before,
        "the removed pod kept its lease"
    );
    eprintln!("hung plugin: {:?}", t.elapsed());
}

/// Latencies of a run of calls: count, median and max.
fn summary(v: &[Duration]) -> String {
    let mut s = v.to_vec();
    s.sort();
    match (s.get(s.len() / 2), s.last()) {
        (Some(mid), Some(max)) => format!("{} calls, median {mid:?}, max {max:?}", s.len()),
        _ => "no calls".into(),
    }
}

/// One ExecSync and one ContainerStatus on `id`; their latencies. A stall of either (10 s) or a
/// failed call fails the test.
async fn probe(node: &mut Node, id: &str) -> (Duration, Duration) {
    const STALL: Duration = Duration::from_secs(10);
    let t = Instant::now();
    let r = tokio::time::timeout(STALL, node.exec_sync(id, &["echo", "alive"], 10))
        .await
        .unwrap_or_else(|_| panic!("ExecSync stalled for {STALL:?}"))
        .unwrap_or_else(|e| panic!("ExecSync: {e}"));
    let exec = t.elapsed();
    assert_eq!(
        (r.exit_code, String::from_utf8_lossy(&r.stdout).trim()),
        (0, "alive"),
        "ExecSync answered wrong: {r:?}"
    );
    let t = Instant::now();
    let st = tokio::time::timeout(
        STALL,
        node.rt.container_status(cri::ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        }),
    )
    .await
    .unwrap_or_else(|_| panic!("ContainerStatus stalled for {STALL:?}"))
    .unwrap_or_else(|e| panic!("ContainerStatus: {e}"))
    .into_inner()
    .status
    .expect("ContainerStatus without a status");
    assert_eq!(st.state, cri::ContainerState::ContainerRunning as i32);
    (exec, t.elapsed())
}

/// A container writes 1 GiB of log lines in one burst while another pod runs: the other pod's
/// ExecSync and ContainerStatus keep answering (their latencies printed, before and during),
/// the daemon's memory does not grow with the log (the monitor, not the daemon, carries it), and
/// the bursting container exits 0 with every line in its log, the last one included. carapace
/// does not rotate logs itself: the kubelet does (containerLogMaxSize), renaming the file and
/// calling ReopenContainerLog, so the log's size is the kubelet's to bound; the test rotates
/// once mid-burst as the kubelet would, and no line is lost or torn across it.
#[tokio::test]
async fn a_container_writing_1gib_of_log_slows_neither_the_daemon_nor_another_pod() {
    const LINES: u64 = 1 << 20;
    let t = Instant::now();
    let free = free_bytes(Path::new("/tmp"));
    if free < 3 << 30 {
        eprintln!(
            "SKIPPED: the log burst needs 3 GiB free under /tmp, {} MiB are",
            free / MIB
        );
        return;
    }
    let mut node = Node::start(177).await;
    let quiet = node.pod("quiet", "17700000-0000-4000-8000-000000000177");
    let quiet_id = node.run_pod(&quiet).await;
    let sleeper = node
        .create_started(&quiet_id, &quiet, &container("sleeper", &["sleep", "3600"]))
        .await;
    let daemon = node.d.pid().as_raw() as i64;

    let mut before = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let (e, s) = probe(&mut node, &sleeper).await;
        before.0.push(e);
        before.1.push(s);
    }
    let rss_before = proc_status_field(daemon, "VmRSS");

    // 1 Mi lines of 1023 `x`, 1 GiB with their newlines, then a last line of its own.
    let loud = node.pod("loud", "17700001-0000-4000-8000-000000000177");
    let loud_id = node.run_pod(&loud).await;
    let burst = node
        .create_started(
            &loud_id,
            &loud,
            &container(
                "burst",
                &[
                    "sh",
                    "-c",
                    "line=$(busybox head -c 1023 /dev/zero | busybox tr '\\0' x); \
                     busybox yes \"$line\" | busybox head -c 1073741824; echo BURST-DONE",
                ],
            ),
        )
        .await;
    let log_path = node.log_path(&burst).await;
    let burst_started = Instant::now();
    let mut during = (Vec::new(), Vec::new());
    let mut rss_max = rss_before;
    // The kubelet's rotation, once, mid-burst: rename, then ReopenContainerLog.
    let rotated = log_path.with_file_name("0.log.20261208-000000");
    let mut reopened = None;
    let exited = loop {
        let (e, s) = probe(&mut node, &sleeper).await;
        during.0.push(e);
        during.1.push(s);
        rss_max = rss_max.max(proc_status_field(daemon, "VmRSS"));
        let size = std::fs::metadata(&log_path).map(|m| m.len()).unwrap_or(0);
        if reopened.is_none() && size > 128 * MIB {
            std::fs::rename(&log_path, &rotated).expect("rotating the log");
            let t = Instant::now();
            tokio::time::timeout(
                Duration::from_secs(10),
                node.rt
                    .reopen_container_log(cri::ReopenContainerLogRequest {
                        container_id: burst.clone(),
                    }),
            )
            .await
            .expect("ReopenContainerLog stalled mid-burst")
            .unwrap_or_else(|e| panic!("ReopenContainerLog mid-burst: {e}"));
            reopened = Some((size, t.elapsed()));
        }
        let (st, _) = node.status(&burst).await;
        if st.state == cri::ContainerState::ContainerExited as i32 {
            break st;
        }
        assert!(
            burst_started.elapsed() < Duration::from_secs(600),
            "the burst did not end in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let burst_took = burst_started.elapsed();
    let rss_after = proc_status_field(daemon, "VmRSS");
    let size_of = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let (log_size, rotated_size) = (size_of(&log_path), size_of(&rotated));
    eprintln!(
        "log burst: {} MiB of log in {burst_took:?}: {} MiB in the file rotated away, {} MiB after",
        (log_size + rotated_size) / MIB,
        rotated_size / MIB,
        log_size / MIB
    );
    let Some((rotated_at, reopen_took)) = reopened else {
        panic!("the burst ended before its log reached 128 MiB");
    };
    eprintln!(
        "ReopenContainerLog at {} MiB took {reopen_took:?}",
        rotated_at / MIB
    );
    eprintln!(
        "ExecSync before: {}; during: {}",
        summary(&before.0),
        summary(&during.0)
    );
    eprintln!(
        "ContainerStatus before: {}; during: {}",
        summary(&before.1),
        summary(&during.1)
    );
    eprintln!(
        "daemon VmRSS: {rss_before} KiB before, {rss_max} KiB at most during, {rss_after} KiB after"
    );
    assert_eq!(exited.exit_code, 0, "the bursting container failed");
    assert!(
        rss_max - rss_before < (64 * MIB / 1024) as i64,
        "the daemon grew by {} KiB during the burst",
        rss_max - rss_before
    );
    // Every line is there, across the rotation, and the last is the one written last.
    let lines_in = |p: &Path| -> u64 {
        run("wc", &["-l", &p.display().to_string()])
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let (before_rotation, after_rotation) = (lines_in(&rotated), lines_in(&log_path));
    assert_eq!(
        before_rotation + after_rotation,
        LINES + 1,
        "lines in the log: {before_rotation} rotated away, {after_rotation} after"
    );
    assert!(
        rotated_size >= 128 * MIB && log_size < 1 << 30 && after_rotation > 0,
        "the reopened log is not a new file taking the rest: {rotated_size} bytes rotated away, \
         {log_size} bytes and {after_rotation} lines after"
    );
    // No record was torn at the rotation: the rotated file ends with a whole line.
    let rotated_tail = run("tail", &["-n", "1", &rotated.display().to_string()]);
    assert!(
        rotated_tail
            .trim_end()
            .ends_with(&format!(" stdout F {}", "x".repeat(1023))),
        "the rotated log ends in a torn record: {rotated_tail:?}"
    );
    let tail = run("tail", &["-n", "2", &log_path.display().to_string()]);
    let mut last = tail.lines().rev();
    let (end, body) = (last.next().unwrap_or(""), last.next().unwrap_or(""));
    assert!(
        end.ends_with(" stdout F BURST-DONE"),
        "the last line is not the container's last: {end:?}"
    );
    assert!(
        body.ends_with(&format!(" stdout F {}", "x".repeat(1023))),
        "the last burst line is not whole: {body:?}"
    );
    node.stop_container(&sleeper, 0).await;
    node.remove_container(&sleeper).await;
    node.remove_pod(&quiet_id).await;
    // The gigabyte goes with the test's dir; removed now rather than at the end of the process.
    let _ = std::fs::remove_file(&log_path);
    let _ = std::fs::remove_file(&rotated);
    node.remove_all(&loud_id).await;
    eprintln!("log burst: {:?}", t.elapsed());
}
