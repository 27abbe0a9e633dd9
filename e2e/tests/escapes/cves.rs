//! Container escapes named after the runc CVEs that opened them (issue 23), tried for real
//! through the daemon: a working directory reached through a file descriptor the runtime holds
//! while it sets the container up, or through a symlink the image planted, and fds of the
//! runtime left open in the container or an exec (CVE-2024-21626, "Leaky Vessels"); and the
//! runtime's own binary, written through `/proc/<pid>/exe` of the runtime running inside the
//! container (CVE-2019-5736). Every test removes what it made and ends with `Node::finish`.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use carapace_e2e::node::{
    Node, container, log_until, share_pid_namespace, shared_pid_container, stdout_of,
};
use carapace_e2e::{carapace_bin, cri};

/// Run with the working directory under test: the names at the top of the tree the cwd is in
/// (as far up as `..` goes) and the names at `/`. Inside the container's root both are its `/`;
/// from a directory of the host they differ (the host's `/` has `usr`, the image has not).
const WHERE_AM_I: &str = "echo top:; ls -a ../../../../../../../../../..; echo root:; ls -a /; \
    echo cwd: $(busybox readlink /proc/self/cwd); echo end";

/// The two listings `WHERE_AM_I` printed, and the cwd it read.
fn listings(out: &str) -> (BTreeSet<String>, BTreeSet<String>, String) {
    let (mut top, mut root, mut cwd) = (BTreeSet::new(), BTreeSet::new(), String::new());
    let mut into = None;
    for line in out.lines() {
        match line {
            "top:" => into = Some(&mut top),
            "root:" => into = Some(&mut root),
            "end" => into = None,
            l if l.starts_with("cwd:") => {
                cwd = l.trim_start_matches("cwd:").trim().to_owned();
                into = None;
            }
            l => {
                if let Some(set) = into.as_mut() {
                    set.insert(l.trim().to_owned());
                }
            }
        }
    }
    (top, root, cwd)
}

/// Runs `WHERE_AM_I` as the init of a container with working directory `dir`, then by ExecSync
/// in it. Either fails (a clean refusal) or shows the cwd inside the container's root; the
/// container is removed. Returns what happened, for the failure messages.
async fn try_working_dir(
    n: &mut Node,
    pod_id: &str,
    pod: &cri::PodSandboxConfig,
    name: &str,
    image: Option<&str>,
    dir: &str,
) -> String {
    let script = format!("{WHERE_AM_I}; sleep 1000");
    let mut c = container(name, &["sh", "-c", &script]);
    c.working_dir = dir.into();
    if let Some(image) = image {
        c.image.as_mut().unwrap().image = image.into();
    }
    let id = match n.create(pod_id, pod, &c).await {
        Ok(id) => id,
        Err(e) => return format!("{dir}: create refused: {}", e.message()),
    };
    let started =
        n.rt.start_container(cri::StartContainerRequest {
            container_id: id.clone(),
        })
        .await;
    let mut what = String::new();
    match started {
        Err(e) => what = format!("{dir}: start refused: {}", e.message()),
        Ok(_) => {
            let log = n.log_path(&id).await;
            let lines = log_until(&log, "the init's listings", |l| l.3 == "end").await;
            let (top, root, cwd) = listings(&stdout_of(&lines));
            assert!(
                !root.is_empty() && top == root,
                "working dir {dir}: the container's init runs outside its root (cwd {cwd:?}): \
                 `..` leads to {top:?}, its / is {root:?}"
            );
            what.push_str(&format!("{dir}: init in the root at {cwd:?}"));
            // The exec helper's fds are not the init's: the same number may name another file.
            match n.exec_sync(&id, &["sh", "-c", WHERE_AM_I], 10).await {
                Err(e) => what.push_str(&format!(", exec refused: {}", e.message())),
                Ok(r) if r.exit_code != 0 => what.push_str(&format!(
                    ", exec failed ({}): {}",
                    r.exit_code,
                    String::from_utf8_lossy(&r.stderr).trim()
                )),
                Ok(r) => {
                    let (top, root, cwd) = listings(&String::from_utf8_lossy(&r.stdout));
                    assert!(
                        !root.is_empty() && top == root,
                        "working dir {dir}: an ExecSync runs outside the container's root \
                         (cwd {cwd:?}): `..` leads to {top:?}, its / is {root:?}"
                    );
                    what.push_str(&format!(", exec in the root at {cwd:?}"));
                }
            }
            n.stop_container(&id, 0).await;
        }
    }
    n.remove_container(&id).await;
    what
}

/// CVE-2024-21626: a working directory `/proc/self/fd/<N>` names whatever the runtime holds
/// open as fd N when it changes into it: runc held `/sys/fs/cgroup` there and started the
/// container in the host's tree. For every N from 3 to 20, the container's init and an ExecSync
/// into it (whose helper holds other fds, the init's `/proc/<pid>` among them) either fail or
/// run inside the container's root. So do working directories through symlinks the image
/// planted: `/work` to `/../../../` and `/work7` to `/proc/self/fd/7`; and an ExecSync whose
/// working directory the container re-pointed at `/proc/self/fd/<N>` after it started.
#[tokio::test]
async fn cve_2024_21626_a_working_dir_through_a_runtime_fd_stays_in_the_root() {
    let (mut n, pod, pod_id) =
        Node::with_running_pod(4, "leaky", "0d1e2f30-0000-4000-8000-000000000004").await;
    let mut seen = Vec::new();
    for fd in 3..=20 {
        let dir = format!("/proc/self/fd/{fd}");
        seen.push(try_working_dir(&mut n, &pod_id, &pod, &format!("fd{fd}"), None, &dir).await);
    }

    let top = tempfile::tempdir().unwrap();
    std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("/../../../", top.path().join("work")).unwrap();
    std::os::unix::fs::symlink("/proc/self/fd/7", top.path().join("work7")).unwrap();
    std::os::unix::fs::symlink("/", top.path().join("wd")).unwrap();
    n.registry
        .push("e2e/leaky", &[&format!("={}", top.path().display())])
        .await;
    let image = format!("{}/e2e/leaky:v1", carapace_e2e::registry::REGISTRY);
    n.pull_image(&image).await;
    for (name, dir) in [("work", "/work"), ("work7", "/work7")] {
        seen.push(try_working_dir(&mut n, &pod_id, &pod, name, Some(&image), dir).await);
    }
    // `/work` resolves to the root itself: the one case that must run.
    assert!(
        seen.iter()
            .any(|s| s.starts_with("/work: init in the root")),
        "{seen:#?}"
    );

    // An ExecSync changes into the container's working directory with the exec helper's fds,
    // not the init's: the container re-points its `/wd` (here done for it from the host,
    // through its root) at each of them in turn, then an exec is run.
    let mut c = container("wd", &["sleep", "1000"]);
    c.working_dir = "/wd".into();
    c.image.as_mut().unwrap().image = image.clone();
    let id = n.create_started(&pod_id, &pod, &c).await;
    let pid = n.status(&id).await.1["pid"].as_i64().unwrap();
    let wd = format!("/proc/{pid}/root/wd");
    for fd in 3..=20 {
        std::fs::remove_file(&wd).unwrap();
        std::os::unix::fs::symlink(format!("/proc/self/fd/{fd}"), &wd).unwrap();
        match n.exec_sync(&id, &["sh", "-c", WHERE_AM_I], 10).await {
            Err(e) => seen.push(format!("exec at fd {fd}: refused: {}", e.message())),
            Ok(r) if r.exit_code != 0 => seen.push(format!(
                "exec at fd {fd}: failed ({}): {}",
                r.exit_code,
                String::from_utf8_lossy(&r.stderr).trim()
            )),
            Ok(r) => {
                let (top, root, cwd) = listings(&String::from_utf8_lossy(&r.stdout));
                assert!(
                    !root.is_empty() && top == root,
                    "/wd to /proc/self/fd/{fd}: an ExecSync runs outside the container's root \
                     (cwd {cwd:?}): `..` leads to {top:?}, its / is {root:?}"
                );
                seen.push(format!("exec at fd {fd}: in the root at {cwd:?}"));
            }
        }
    }
    n.stop_container(&id, 0).await;
    n.remove_container(&id).await;
    eprintln!("{}", seen.join("\n"));
    n.remove_all(&pod_id).await;
}

/// What an fd of a container's process may be: its stdio (pipes to the monitor, a terminal,
/// /dev/null) and nothing the runtime opened on the host.
fn stdio_like(target: &str) -> bool {
    ["pipe:", "socket:", "anon_inode:", "/dev/pts/"]
        .iter()
        .any(|p| target.starts_with(p))
        || target == "/dev/null"
}

/// `ls -l` of a `/proc/<pid>/fd` directory as (fd, target) pairs.
fn ls_fds(out: &str) -> Vec<(i32, String)> {
    out.lines()
        .filter_map(|l| {
            let (left, target) = l.split_once(" -> ")?;
            let fd = left.split_whitespace().last()?.parse().ok()?;
            Some((fd, target.trim().to_owned()))
        })
        .collect()
}

/// CVE-2024-21626, the other half: no fd of the runtime (its state or root directory, a cgroup
/// directory, the host's mount namespace, its pipe to the daemon) is left open in the
/// container's process or in an ExecSync'd one. The init has its stdio only, seen from the
/// host and from inside; an exec'd `ls` has its stdio and the directory it lists.
#[tokio::test]
async fn cve_2024_21626_no_runtime_fd_is_left_to_the_container_or_an_exec() {
    let (mut n, pod, pod_id) =
        Node::with_running_pod(5, "fds", "0d1e2f30-0000-4000-8000-000000000005").await;
    // A pipe of the runtime's left in the init holds StartContainer, which waits for the
    // monitor's report to end: bounded here, so that shows as a failure, not a hung test.
    let sleeper = container("sleeper", &["sleep", "1000"]);
    let id = tokio::time::timeout(
        Duration::from_secs(30),
        n.create_started(&pod_id, &pod, &sleeper),
    )
    .await
    .expect("StartContainer never returned: the container holds the runtime's pipe");
    let pid = n.status(&id).await.1["pid"].as_i64().unwrap();

    let fd_dir = format!("/proc/{pid}/fd");
    let host_view: Vec<(i32, String)> = std::fs::read_dir(&fd_dir)
        .unwrap()
        .flatten()
        .map(|e| {
            let fd = e.file_name().to_string_lossy().parse().unwrap();
            let target = std::fs::read_link(e.path()).unwrap_or_default();
            (fd, target.display().to_string())
        })
        .collect();
    assert!(
        !host_view.is_empty()
            && host_view
                .iter()
                .all(|(fd, t)| (0..=2).contains(fd) && stdio_like(t)),
        "the container's init (pid {pid}) holds more than its stdio: {host_view:?}"
    );

    let inside = n
        .exec_sync(&id, &["ls", "-l", "/proc/1/fd"], 10)
        .await
        .unwrap();
    assert_eq!(inside.exit_code, 0, "{inside:?}");
    let init_view = ls_fds(&String::from_utf8_lossy(&inside.stdout));
    assert!(
        !init_view.is_empty()
            && init_view
                .iter()
                .all(|(fd, t)| (0..=2).contains(fd) && stdio_like(t)),
        "inside, the init holds more than its stdio: {init_view:?}"
    );

    let exec = n
        .exec_sync(&id, &["ls", "-l", "/proc/self/fd"], 10)
        .await
        .unwrap();
    assert_eq!(exec.exit_code, 0, "{exec:?}");
    let exec_view = ls_fds(&String::from_utf8_lossy(&exec.stdout));
    let listing = |t: &str| {
        t.strip_prefix("/proc/")
            .and_then(|t| t.strip_suffix("/fd"))
            .is_some_and(|p| p.chars().all(|c| c.is_ascii_digit()))
    };
    assert!(
        exec_view.len() >= 3
            && exec_view
                .iter()
                .all(|(fd, t)| ((0..=2).contains(fd) && stdio_like(t)) || listing(t)),
        "an exec'd process holds an fd of the runtime: {exec_view:?}"
    );
    let cwd = n
        .exec_sync(&id, &["busybox", "readlink", "/proc/self/cwd"], 10)
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&cwd.stdout).trim(), "/", "{cwd:?}");

    n.remove_all(&pod_id).await;
}

fn sha256(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sha256sum {}: {out:?}",
        path.display()
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// The container's half of CVE-2019-5736: find the runtime's binary running inside the
/// container (its argv[0] is `/bin/trap`), hold it open read-only as runc's exploit did, and
/// write it, directly and by reopening the held fd; the pod's infra process (PID 1 of the
/// shared PID namespace, the same binary) too. Then let the trapped command go.
const EXPLOIT: &str = r#"
found=
for i in $(seq 100); do
  for p in /proc/[0-9]*; do
    if [ "$(busybox head -c 9 $p/cmdline 2>/dev/null)" = "/bin/trap" ]; then found=${p#/proc/}; fi
  done
  [ -n "$found" ] && break
  sleep 0.1
done
echo "pid=$found exe=$(busybox readlink /proc/$found/exe)"
if (exec 3< /proc/$found/exe) 2>/dev/null; then exec 3< /proc/$found/exe; echo held; fi
e=$( (echo -n > /proc/$found/exe) 2>&1 ); echo "direct=$? $e"
e=$( (echo -n > /proc/self/fd/3) 2>&1 ); echo "reopened=$? $e"
e=$( (echo -n > /proc/1/exe) 2>&1 ); echo "infra=$? $e"
echo '[' > /tmp/fifo
"#;

/// CVE-2019-5736: the image replaced a program with a symlink to `/proc/self/exe`, so an exec
/// of it runs the runtime's own binary inside the container, as the container's root and
/// readable to it. Here it blocks (reading its config from a FIFO) while the container opens
/// `/proc/<pid>/exe` and writes to it: every write fails, with EROFS: the runtime runs from a
/// read-only bind of its binary (`O_TRUNC` meets the mount before the busy inode). EROFS and
/// not only ETXTBSY: a busy binary is protected only while some process executes it, and only
/// on a kernel that refuses writes to running binaries; an fd kept (here fd 3) outlives the
/// processes, and a read-only mount holds on any kernel. The binary on the host, the sealed bind
/// and the daemon's `/proc/<pid>/exe` keep their sha256.
#[tokio::test]
async fn cve_2019_5736_the_runtime_binary_cannot_be_written_from_a_container() {
    let mut n = Node::start(6).await;
    let mut pod = n.pod("exe", "0d1e2f30-0000-4000-8000-000000000006");
    share_pid_namespace(&mut pod);
    let pod_id = n.run_pod(&pod).await;

    let bin = carapace_bin();
    let sealed = n.state().join("carapace.exe");
    let daemon_exe = std::path::PathBuf::from(format!("/proc/{}/exe", n.d.pid()));
    let before = [sha256(&bin), sha256(&sealed), sha256(&daemon_exe)];

    let plant = "busybox mkfifo /tmp/fifo && busybox ln -s /proc/self/exe /bin/trap \
        && echo planted; sleep 1000";
    let id = n
        .create_started(
            &pod_id,
            &pod,
            &shared_pid_container("attacker", &["sh", "-c", plant]),
        )
        .await;
    let log = n.log_path(&id).await;
    log_until(&log, "the trap planted", |l| l.3 == "planted").await;

    // What an operator runs; `/bin/trap` stands for any program of the image.
    let mut rt = n.rt.clone();
    let trap_id = id.clone();
    let trapped = tokio::spawn(async move {
        rt.exec_sync(cri::ExecSyncRequest {
            container_id: trap_id,
            cmd: ["/bin/trap", "config", "check", "--config", "/tmp/fifo"]
                .map(String::from)
                .to_vec(),
            timeout: 60,
        })
        .await
    });
    let r = n.exec_sync(&id, &["sh", "-c", EXPLOIT], 60).await.unwrap();
    let out = String::from_utf8_lossy(&r.stdout).into_owned();
    let ran = trapped.await.unwrap().unwrap().into_inner();

    assert!(
        out.contains("\nheld\n") || out.starts_with("held\n"),
        "the runtime's binary never ran readable in the container, nothing was tried: {out}\n\
         trapped exec: {ran:?}"
    );
    // `<key>=<exit code> <the shell's error>` per attempt.
    let attempt = |key: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .and_then(|l| l.split_once(' '))
            .map(|(code, e)| (code.to_owned(), e.to_owned()))
    };
    for key in ["direct", "reopened", "infra"] {
        let (code, e) = attempt(key).unwrap_or_else(|| panic!("{key} not tried: {out}"));
        assert_ne!(
            code, "0",
            "a write to the runtime's binary ({key}) was let through: {out}"
        );
        // The path and the held fd both lead to a read-only mount; the infra process is not
        // even readable (not dumpable).
        if key != "infra" {
            assert!(
                e.contains("Read-only file system"),
                "{key}: the runtime's binary is not on a read-only mount ({e}): {out}"
            );
        }
    }
    let after = [sha256(&bin), sha256(&sealed), sha256(&daemon_exe)];
    assert_eq!(before, after, "the runtime's binary changed: {out}");

    n.remove_all(&pod_id).await;
}
