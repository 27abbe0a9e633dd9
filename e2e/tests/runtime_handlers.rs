//! Runtime handlers (RuntimeClass) through the real daemon: a `[runtimes.runc]` section names
//! Debian's runc, `Status` lists it next to the built-in handler `""`, a pod run with
//! `runtime_handler: "runc"` has its containers created and started by runc (runc's own state
//! knows them, with the pid CRI reports), while carapace's monitor still writes their CRI logs,
//! records their exit codes and events, serves ExecSync (through `runc exec`), attach and a
//! terminal, and outlives a daemon restart; stats and live updates act on the cgroup carapace
//! made; a pod's shared PID namespace is joined; volumes propagate mounts as their propagation
//! asks and a recursive read-only one is read-only below too. An unknown handler is NotFound
//! naming it, a user namespace through runc InvalidArgument. Every test removes what it made
//! and ends with `Node::finish` (no container, pod, cgroup, mount or process left), and runc's
//! state is empty again.

use std::path::{Path, PathBuf};

use carapace_e2e::node::{
    Node, container, cri_log, log_until, output_of, share_pid_namespace, shared_pid_container,
    stdout_of,
};
use carapace_e2e::stream::RemoteCommand;
use carapace_e2e::{DaemonConfig, cri, eventually, mounts_under};
use tonic::Code;

fn runc() -> PathBuf {
    ["/usr/sbin/runc", "/usr/bin/runc"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("runc is installed (Debian's runc package)")
}

/// The node's daemon with `[runtimes.runc]` naming runc by its path, its root under `root`.
async fn node_with_runc(index: u8, root: &Path) -> Node {
    let root = root.display().to_string();
    Node::start_configured(index, move |cfg: &mut DaemonConfig| {
        cfg.set(
            "runtimes.runc.runtime_path",
            toml::Value::String(runc().display().to_string()),
        );
        cfg.set("runtimes.runc.runtime_root", toml::Value::String(root));
    })
    .await
}

/// What `runc state <id>` says of a container: its JSON, or `None` when runc does not know it.
fn runc_state(root: &Path, id: &str) -> Option<serde_json::Value> {
    let out = std::process::Command::new(runc())
        .arg("--root")
        .arg(root)
        .args(["state", id])
        .output()
        .expect("running runc state");
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).expect("runc state prints JSON"))
}

/// The containers runc's state directory holds.
fn runc_list(root: &Path) -> Vec<String> {
    std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

async fn run_pod_with(
    n: &mut Node,
    pod: &cri::PodSandboxConfig,
    handler: &str,
) -> Result<String, tonic::Status> {
    n.rt.run_pod_sandbox(cri::RunPodSandboxRequest {
        config: Some(pod.clone()),
        runtime_handler: handler.into(),
    })
    .await
    .map(|r| r.into_inner().pod_sandbox_id)
}

#[tokio::test]
async fn a_runc_pod_runs_logs_execs_exits_and_is_removed_through_runc() {
    let runc_root = tempfile::Builder::new()
        .prefix("runc-root.")
        .tempdir_in("/tmp")
        .unwrap();
    let root = runc_root.path().join("state");
    let mut n = node_with_runc(100, &root).await;

    // Status lists the built-in handler and runc's.
    let st =
        n.rt.status(cri::StatusRequest { verbose: false })
            .await
            .unwrap()
            .into_inner();
    let names: Vec<&str> = st
        .runtime_handlers
        .iter()
        .map(|h| h.name.as_str())
        .collect();
    assert_eq!(names, ["", "runc"], "{:?}", st.runtime_handlers);
    // runc 1.1's `runc features` lists `rro`: critest (and the kubelet) only try recursive
    // read-only mounts on a handler that reports them; a user namespace it is refused.
    let runc = st.runtime_handlers[1].features.unwrap_or_default();
    assert!(runc.recursive_read_only_mounts, "{:?}", st.runtime_handlers);
    assert!(!runc.user_namespaces, "{:?}", st.runtime_handlers);

    // A handler the configuration does not have: NotFound naming it, and no pod.
    let pod = n.pod("runc", "0d1e2f30-0000-4000-8000-000000000100");
    let e = run_pod_with(&mut n, &pod, "no-such-handler")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(e.message().contains("no-such-handler"), "{e:?}");
    assert!(n.d.pods().await.is_empty());

    // Nor a user namespace through runc.
    let mut userns_pod = pod.clone();
    userns_pod
        .linux
        .get_or_insert_default()
        .security_context
        .get_or_insert_default()
        .namespace_options
        .get_or_insert_default()
        .userns_options = Some(cri::UserNamespace {
        mode: cri::NamespaceMode::Pod as i32,
        uids: vec![cri::IdMapping {
            host_id: 1 << 20,
            container_id: 0,
            length: 65536,
        }],
        gids: vec![cri::IdMapping {
            host_id: 1 << 20,
            container_id: 0,
            length: 65536,
        }],
    });
    let e = run_pod_with(&mut n, &userns_pod, "runc").await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(n.d.pods().await.is_empty());

    let pod_id = run_pod_with(&mut n, &pod, "runc").await.unwrap();
    let (status, _) = n.d.pod_status(&pod_id).await;
    assert_eq!(n.d.pods().await[0].runtime_handler, "runc");
    assert_eq!(status.runtime_handler, "runc");

    // A long-running container: runc created it, its output is in the CRI log.
    let cfg = container(
        "main",
        &[
            "sh",
            "-c",
            "echo out-from-runc; echo err-from-runc >&2; exec sleep 1000",
        ],
    );
    let id = n.create_started(&pod_id, &pod, &cfg).await;
    let (st, info) = n.status(&id).await;
    assert_eq!(st.state, cri::ContainerState::ContainerRunning as i32);
    let state = runc_state(&root, &id).unwrap_or_else(|| {
        panic!(
            "runc does not know container {id}: it was not run by runc\n{}",
            n.d.log_text()
        )
    });
    assert_eq!(state["status"], "running", "{state}");
    assert_eq!(
        state["pid"].as_i64(),
        info["pid"].as_i64(),
        "{state}\n{info}"
    );
    let log = n.log_path(&id).await;
    let lines = log_until(&log, "both streams in the CRI log", |l| {
        l.1 == "stderr" && l.3 == "err-from-runc"
    })
    .await;
    assert!(
        lines
            .iter()
            .any(|l| l.1 == "stdout" && l.3 == "out-from-runc"),
        "{}",
        output_of(&lines)
    );

    // ExecSync through runc exec: output, exit code, the container's namespaces.
    let r = n
        .exec_sync(
            &id,
            &["sh", "-c", "echo exec-out; echo exec-err >&2; exit 3"],
            10,
        )
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&r.stdout), "exec-out\n");
    assert_eq!(String::from_utf8_lossy(&r.stderr), "exec-err\n");
    assert_eq!(r.exit_code, 3);
    let r = n
        .exec_sync(&id, &["cat", "/proc/1/cmdline"], 10)
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&r.stdout), "sleep\u{0}1000\u{0}");
    // A timeout kills the command and answers DeadlineExceeded.
    let e = n.exec_sync(&id, &["sleep", "30"], 1).await.unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");

    // The container is in the cgroup carapace made: its stats, and a live update the
    // container itself sees.
    let stats = n.container_stats(&id).await;
    let mem = stats
        .memory
        .and_then(|m| m.working_set_bytes)
        .map(|v| v.value);
    assert!(mem.is_some_and(|v| v > 0), "{mem:?}");
    n.rt.update_container_resources(cri::UpdateContainerResourcesRequest {
        container_id: id.clone(),
        linux: Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 64 << 20,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let r = n
        .exec_sync(
            &id,
            &["cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"],
            10,
        )
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&r.stdout).trim(),
        (64 << 20).to_string()
    );

    // A container that exits by itself: its exit code, as the monitor reaped it, and its
    // STOPPED event.
    let mut events =
        n.rt.get_container_events(cri::GetEventsRequest {})
            .await
            .unwrap()
            .into_inner();
    let done = n
        .create_started(
            &pod_id,
            &pod,
            &container("done", &["sh", "-c", "echo bye; exit 7"]),
        )
        .await;
    let st = n.exited(&done).await;
    assert_eq!(st.exit_code, 7, "{st:?}");
    let stopped = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Some(ev) = events.message().await.unwrap() {
            if ev.container_id == done
                && ev.container_event_type == cri::ContainerEventType::ContainerStoppedEvent as i32
            {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(stopped, Ok(true), "no STOPPED event for {done}");
    drop(events);
    assert_eq!(stdout_of(&cri_log(&n.log_path(&done).await)), "bye");

    // A command the image does not have: StartContainer fails with runc's reason, and the
    // container goes as cleanly as the others.
    let bad = n
        .create(&pod_id, &pod, &container("bad", &["/no/such/cmd"]))
        .await
        .unwrap();
    let e =
        n.rt.start_container(cri::StartContainerRequest {
            container_id: bad.clone(),
        })
        .await
        .unwrap_err();
    assert!(e.message().contains("/no/such/cmd"), "{e:?}");
    assert!(e.message().contains("runc"), "{e:?}");
    n.remove_container(&bad).await;
    assert!(runc_state(&root, &bad).is_none(), "runc still knows {bad}");

    // Stop (SIGKILL after the grace), then remove: runc forgets them.
    n.stop_container(&id, 1).await;
    let st = n.exited(&id).await;
    assert_eq!(st.exit_code, 137, "{st:?}");
    for c in [&id, &done] {
        n.remove_container(c).await;
        assert!(runc_state(&root, c).is_none(), "runc still knows {c}");
    }
    n.remove_pod(&pod_id).await;
    assert!(runc_list(&root).is_empty(), "{:?}", runc_list(&root));
    n.finish().await;
}

/// A runc container with a terminal and stdin: attach reaches its shell through the terminal
/// runc made (and resizes it), a streaming exec with a terminal runs through `runc exec --tty`,
/// and the container, its monitor and runc's record of it live through a daemon restart.
#[tokio::test]
async fn a_runc_container_with_a_terminal_is_attached_execd_and_survives_a_restart() {
    const WAIT: std::time::Duration = std::time::Duration::from_secs(15);
    let runc_root = tempfile::Builder::new()
        .prefix("runc-root.")
        .tempdir_in("/tmp")
        .unwrap();
    let root = runc_root.path().join("state");
    let mut n = node_with_runc(101, &root).await;
    let pod = n.pod("runctty", "0d1e2f30-0000-4000-8000-000000000101");
    let pod_id = run_pod_with(&mut n, &pod, "runc").await.unwrap();
    let mut c = container("shell", &["sh"]);
    c.tty = true;
    c.stdin = true;
    let id = n.create_started(&pod_id, &pod, &c).await;
    let (_, info) = n.status(&id).await;
    let pid = info["pid"].as_i64();
    assert_eq!(
        runc_state(&root, &id).map(|s| s["pid"].as_i64()),
        Some(pid),
        "runc does not know {id}"
    );

    let attach = |id: &str| cri::AttachRequest {
        container_id: id.into(),
        stdin: true,
        tty: true,
        stdout: true,
        stderr: false,
    };
    let url = n.attach_url(attach(&id)).await.unwrap();
    let mut s = RemoteCommand::connect(&url).await.unwrap();
    s.resize(100, 30).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    s.stdin(b"busybox stty size; [ -t 1 ] && echo term-$((6*7))\n")
        .await;
    s.wait_for("30 100", WAIT).await;
    s.wait_for("term-42", WAIT).await;
    s.hang_up().await;
    let log = n.log_path(&id).await;
    log_until(&log, "the terminal's line in the log", |l| l.3 == "term-42").await;

    // A streaming exec with a terminal.
    let url = n
        .exec_url(cri::ExecRequest {
            container_id: id.clone(),
            cmd: ["sh", "-c", "[ -t 0 ] && echo exec-tty-$((6*7)); exit 5"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            tty: true,
            stdin: false,
            stdout: true,
            stderr: false,
        })
        .await;
    let out = RemoteCommand::connect(&url)
        .await
        .unwrap()
        .finish(WAIT)
        .await;
    assert!(out.stdout_text().contains("exec-tty-42"), "{out:?}");
    assert_eq!(out.exit_code(), Some(5), "{out:?}");

    // A daemon restart: the container, its monitor and runc's record of it carry on.
    n.d = n.d.restart().await;
    n.rt = n.d.runtime().await;
    let (st, info) = n.status(&id).await;
    assert_eq!(st.state, cri::ContainerState::ContainerRunning as i32);
    assert_eq!(info["pid"].as_i64(), pid);
    let r = n.exec_sync(&id, &["echo", "alive"], 10).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&r.stdout), "alive\n");
    let url = n.attach_url(attach(&id)).await.unwrap();
    let mut s = RemoteCommand::connect(&url).await.unwrap();
    s.stdin(b"echo after-$((6*7))\n").await;
    s.wait_for("after-42", WAIT).await;
    s.hang_up().await;

    n.remove_all(&pod_id).await;
    assert!(runc_list(&root).is_empty(), "{:?}", runc_list(&root));
}

/// A runc pod sharing one PID namespace (`shareProcessNamespace`): runc joins the pod's, where
/// one container sees the other's processes, and a stop leaves none behind.
#[tokio::test]
async fn runc_containers_share_their_pods_pid_namespace() {
    let runc_root = tempfile::Builder::new()
        .prefix("runc-root.")
        .tempdir_in("/tmp")
        .unwrap();
    let root = runc_root.path().join("state");
    let mut n = node_with_runc(102, &root).await;
    let mut pod = n.pod("runcpid", "0d1e2f30-0000-4000-8000-000000000102");
    share_pid_namespace(&mut pod);
    let pod_id = run_pod_with(&mut n, &pod, "runc").await.unwrap();
    let a = n
        .create_started(
            &pod_id,
            &pod,
            &shared_pid_container("a", &["sh", "-c", "exec sleep 1001"]),
        )
        .await;
    let b = n
        .create_started(
            &pod_id,
            &pod,
            &shared_pid_container("b", &["sleep", "1002"]),
        )
        .await;
    for c in [&a, &b] {
        assert!(runc_state(&root, c).is_some(), "runc does not know {c}");
    }
    let r = n
        .exec_sync(&b, &["busybox", "ps", "-o", "args"], 10)
        .await
        .unwrap();
    let ps = String::from_utf8_lossy(&r.stdout);
    assert!(
        ps.contains("sleep 1001") && ps.contains("sleep 1002"),
        "{ps:?} {r:?}"
    );
    n.remove_all(&pod_id).await;
    assert!(runc_list(&root).is_empty(), "{:?}", runc_list(&root));
}

/// What runc refuses where the built-in executor adapts, found by critest with
/// `--runtime-handler runc`: a hostname in a pod on the host's network (so in the host's UTS
/// namespace: "unable to set hostname without a private UTS namespace"), and a privileged
/// container's capabilities beyond what the node's bounding set has ("unable to apply caps:
/// operation not permitted" on this node, which lacks CAP_SYS_RESOURCE). Both start, with the
/// host's hostname and the node's own bounding set.
#[tokio::test]
async fn a_privileged_runc_container_of_a_host_network_pod_gets_what_the_node_can_give() {
    let runc_root = tempfile::Builder::new()
        .prefix("runc-root.")
        .tempdir_in("/tmp")
        .unwrap();
    let root = runc_root.path().join("state");
    let mut n = node_with_runc(103, &root).await;
    let mut pod = n.pod("runchostnet", "0d1e2f30-0000-4000-8000-000000000103");
    pod.linux
        .get_or_insert_default()
        .security_context
        .get_or_insert_default()
        .namespace_options
        .get_or_insert_default()
        .network = cri::NamespaceMode::Node as i32;
    let pod_id = run_pod_with(&mut n, &pod, "runc").await.unwrap();
    let mut c = container("priv", &["sleep", "1003"]);
    carapace_e2e::node::security(&mut c).privileged = true;
    let id = n.create_started(&pod_id, &pod, &c).await;
    assert!(runc_state(&root, &id).is_some(), "runc does not know {id}");
    let r = n
        .exec_sync(
            &id,
            &["sh", "-c", "hostname; grep CapBnd /proc/self/status"],
            10,
        )
        .await
        .unwrap();
    let out = String::from_utf8_lossy(&r.stdout).into_owned();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let host = host.trim();
    let own = std::fs::read_to_string("/proc/self/status").unwrap();
    let own_bnd = own.lines().find(|l| l.starts_with("CapBnd")).unwrap();
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        vec![host, own_bnd],
        "{r:?}"
    );
    n.remove_all(&pod_id).await;
    assert!(runc_list(&root).is_empty(), "{:?}", runc_list(&root));
}

/// A tmpfs at `dir` (made), shared: what a Bidirectional volume's host path must be on.
fn shared_tmpfs(dir: &Path) {
    use nix::mount::{MsFlags, mount};
    std::fs::create_dir_all(dir).unwrap();
    mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    mount(
        None::<&str>,
        dir,
        None::<&str>,
        MsFlags::MS_SHARED,
        None::<&str>,
    )
    .unwrap();
}

/// Mount propagation through runc, as critest's "mount with 'rshared'" spec asks: a mount the
/// container makes in a Bidirectional volume appears on the host, and one the host makes there
/// appears in the container (a file volume inside it is bound too); a HostToContainer volume
/// receives the host's mounts and keeps the container's to itself. runc once started from the
/// monitor's slave copy of the host's mounts, so nothing went back to the host.
#[tokio::test]
async fn mounts_propagate_through_a_runc_containers_volumes_as_asked() {
    use nix::mount::{MntFlags, MsFlags, mount, umount2};
    let runc_root = tempfile::Builder::new()
        .prefix("runc-root.")
        .tempdir_in("/tmp")
        .unwrap();
    let root = runc_root.path().join("state");
    let mut n = node_with_runc(235, &root).await;
    let pod = n.pod("runcprop", "0d1e2f30-0000-4000-8000-000000000235");
    let pod_id = run_pod_with(&mut n, &pod, "runc").await.unwrap();
    let vols = n.d.config.dir().join("vols");
    let (bidi, h2c) = (vols.join("bidi"), vols.join("h2c"));
    shared_tmpfs(&bidi);
    shared_tmpfs(&h2c);
    std::fs::write(bidi.join("file"), "a file volume\n").unwrap();
    let volume = |host: &Path, at: &str, p: cri::MountPropagation| cri::Mount {
        container_path: at.into(),
        host_path: host.display().to_string(),
        propagation: p as i32,
        ..Default::default()
    };
    // The HostToContainer mount first: once the Bidirectional one's file is on the host, both
    // were made.
    let mut c = container(
        "prop",
        &[
            "sh",
            "-c",
            "mkdir /h2c/inner /bidi/inner && mount -t tmpfs tmpfs /h2c/inner && touch /h2c/inner/f \
             && mount -t tmpfs tmpfs /bidi/inner && echo from-container > /bidi/inner/f \
             && exec sleep 1235",
        ],
    );
    carapace_e2e::node::security(&mut c).privileged = true;
    c.mounts = vec![
        volume(
            &bidi,
            "/bidi",
            cri::MountPropagation::PropagationBidirectional,
        ),
        volume(
            &bidi.join("file"),
            "/bidifile",
            cri::MountPropagation::PropagationBidirectional,
        ),
        volume(
            &h2c,
            "/h2c",
            cri::MountPropagation::PropagationHostToContainer,
        ),
    ];
    let id = n.create_started(&pod_id, &pod, &c).await;
    assert!(runc_state(&root, &id).is_some(), "runc does not know {id}");

    // The container's mount reached the host.
    let seen = eventually(
        std::time::Duration::from_secs(10),
        "the container's mount in its Bidirectional volume, on the host",
        || {
            let f = std::fs::read_to_string(bidi.join("inner/f")).ok();
            async move { f }
        },
    )
    .await;
    assert_eq!(seen, "from-container\n");
    assert!(mounts_under(&bidi).contains(&bidi.join("inner")));
    // Not the one in its HostToContainer volume.
    assert!(!h2c.join("inner/f").exists());
    assert!(!mounts_under(&h2c).contains(&h2c.join("inner")));

    // The host's mounts reach the container through both volumes.
    for (dir, name) in [(&bidi, "bidi"), (&h2c, "h2c")] {
        std::fs::create_dir(dir.join("fromhost")).unwrap();
        mount(
            Some("tmpfs"),
            &dir.join("fromhost"),
            Some("tmpfs"),
            MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        std::fs::write(dir.join("fromhost/f"), format!("host-to-{name}\n")).unwrap();
    }
    let r = n
        .exec_sync(
            &id,
            &["cat", "/bidi/fromhost/f", "/h2c/fromhost/f", "/bidifile"],
            10,
        )
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&r.stdout),
        "host-to-bidi\nhost-to-h2c\na file volume\n",
        "{r:?}"
    );

    n.stop_container(&id, 0).await;
    for m in [
        bidi.join("inner"),
        bidi.join("fromhost"),
        h2c.join("fromhost"),
        bidi,
        h2c,
    ] {
        umount2(&m, MntFlags::MNT_DETACH).unwrap();
    }
    n.remove_all(&pod_id).await;
    assert!(runc_list(&root).is_empty(), "{:?}", runc_list(&root));
}

/// A recursive read-only volume through runc (1.1 applies the spec's `rro` with
/// mount_setattr): a mount below the volume's source is read-only in the container too, as
/// critest's "should support recursive readonly mounts" checks; the plain read-only volume
/// beside it leaves that submount writable.
#[tokio::test]
async fn a_runc_containers_recursive_read_only_volume_is_read_only_below_too() {
    use nix::mount::{MntFlags, MsFlags, mount, umount2};
    let runc_root = tempfile::Builder::new()
        .prefix("runc-root.")
        .tempdir_in("/tmp")
        .unwrap();
    let root = runc_root.path().join("state");
    let mut n = node_with_runc(236, &root).await;
    let pod = n.pod("runcrro", "0d1e2f30-0000-4000-8000-000000000236");
    let pod_id = run_pod_with(&mut n, &pod, "runc").await.unwrap();
    let vol = n.d.config.dir().join("rro");
    std::fs::create_dir_all(vol.join("tmpfs")).unwrap();
    mount(
        Some("tmpfs"),
        &vol.join("tmpfs"),
        Some("tmpfs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    let volume = |at: &str, recursive: bool| cri::Mount {
        container_path: at.into(),
        host_path: vol.display().to_string(),
        readonly: true,
        recursive_read_only: recursive,
        ..Default::default()
    };
    let mut c = container("rro", &["sleep", "1236"]);
    c.mounts = vec![volume("/rro", true), volume("/ro", false)];
    let id = n.create_started(&pod_id, &pod, &c).await;
    assert!(runc_state(&root, &id).is_some(), "runc does not know {id}");
    let r = n
        .exec_sync(
            &id,
            &[
                "sh",
                "-c",
                "touch /rro/tmpfs/f 2>&1; touch /ro/tmpfs/g && echo writable",
            ],
            10,
        )
        .await
        .unwrap();
    let out = String::from_utf8_lossy(&r.stdout);
    assert!(
        out.contains("Read-only file system") && out.ends_with("writable\n"),
        "{r:?}"
    );
    assert!(!vol.join("tmpfs/f").exists());
    n.stop_container(&id, 0).await;
    umount2(&vol.join("tmpfs"), MntFlags::MNT_DETACH).unwrap();
    n.remove_all(&pod_id).await;
    assert!(runc_list(&root).is_empty(), "{:?}", runc_list(&root));
}
