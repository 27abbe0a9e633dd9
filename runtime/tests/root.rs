//! Containers run for real (root only): a busybox rootfs as the single overlay lower dir, a
//! container started through the monitor (this test binary re-exec'd in the helper role), and what
//! a user sees checked: CRI logs, exit code, hostname, uid, capabilities, seccomp, read-only root,
//! memory limit, exec, and that delete leaves no mount, cgroup or process behind.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use carapace_runtime::config::{ContainerConfig, NsMode, Process, RootFs};
use carapace_runtime::container::{Runtime, RuntimeOptions, State};
use carapace_runtime::monitor::{HELPER_SUBCOMMAND, helper_main};

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == HELPER_SUBCOMMAND) {
        return helper_main(args[2..].to_vec());
    }
    if !nix::unistd::Uid::effective().is_root() || !Path::new("/bin/busybox").exists() {
        println!("root tests skipped: need root and /bin/busybox");
        println!("0 passed, 0 failed");
        return ExitCode::SUCCESS;
    }
    let filter = args
        .iter()
        .skip(1)
        .find(|a| !a.to_string_lossy().starts_with('-'));
    let tests: &[(&str, fn())] = &[
        ("exit_code_logs_and_identity", exit_code_logs_and_identity),
        (
            "readonly_rootfs_refuses_writes",
            readonly_rootfs_refuses_writes,
        ),
        ("memory_limit_exec_and_stop", memory_limit_exec_and_stop),
    ];
    let started = Instant::now();
    let (mut passed, mut failed) = (0, 0);
    for (name, f) in tests {
        if filter.is_some_and(|x| !name.contains(&*x.to_string_lossy())) {
            continue;
        }
        let t = Instant::now();
        match std::panic::catch_unwind(f) {
            Ok(()) => {
                passed += 1;
                println!("test {name} ... ok ({:.2?})", t.elapsed());
            }
            Err(_) => {
                failed += 1;
                println!("test {name} ... FAILED");
            }
        }
    }
    // The per-test parent cgroup is ours too.
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
        for e in entries.flatten() {
            let _ = std::fs::remove_dir(
                e.path()
                    .join(format!("carapace-test-{}", std::process::id())),
            );
        }
    }
    println!("root tests finished in {:.2?}", started.elapsed());
    // libtest's closing line, so tools that total `cargo test` output count these too.
    let verdict = if failed == 0 { "ok" } else { "FAILED" };
    println!("test result: {verdict}. {passed} passed; {failed} failed; 0 ignored");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    runtime: Runtime,
    lower: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let lower = dir.path().join("lower");
    std::fs::create_dir_all(lower.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", lower.join("bin/busybox")).unwrap();
    for app in [
        "sh", "echo", "cat", "id", "hostname", "grep", "touch", "sleep", "true",
    ] {
        std::os::unix::fs::symlink("busybox", lower.join("bin").join(app)).unwrap();
    }
    for d in ["proc", "sys", "dev", "etc", "tmp"] {
        std::fs::create_dir_all(lower.join(d)).unwrap();
    }
    let runtime = Runtime::new(RuntimeOptions {
        root: dir.path().join("root"),
        state: dir.path().join("state"),
        helper_exe: std::env::current_exe().unwrap(),
        helper_args: vec![HELPER_SUBCOMMAND.into()],
        sealed: None,
    })
    .unwrap();
    Fixture {
        dir,
        runtime,
        lower,
    }
}

fn config(f: &Fixture, id: &str, script: &str) -> ContainerConfig {
    ContainerConfig {
        id: id.into(),
        process: Process {
            args: vec!["sh".into(), "-c".into(), script.into()],
            ..Default::default()
        },
        rootfs: RootFs {
            lower_dirs: vec![f.lower.clone()],
            readonly: false,
        },
        hostname: Some("box".into()),
        log_path: Some(f.dir.path().join("logs").join(format!("{id}.log"))),
        namespaces: carapace_runtime::config::Namespaces {
            network: NsMode::New,
            ipc: NsMode::New,
            uts: NsMode::New,
            pid: NsMode::New,
            user: None,
        },
        cgroup: carapace_runtime::config::CgroupConfig {
            parent: format!("carapace-test-{}", std::process::id()),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn wait_exited(c: &carapace_runtime::container::Container) -> carapace_runtime::container::Status {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = c.status().unwrap();
        if s.state == State::Exited {
            return s;
        }
        assert!(Instant::now() < deadline, "container did not exit: {s:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn log_lines(path: &Path) -> Vec<(String, String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let p: Vec<&str> = l.splitn(4, ' ').collect();
            assert!(p[0].ends_with('Z'), "timestamp {l}");
            (
                p[1].to_string(),
                p[2].to_string(),
                p.get(3).unwrap_or(&"").to_string(),
            )
        })
        .collect()
}

/// Nothing of the container is left: no mount under the temp dir, no cgroup, no process.
fn assert_nothing_leaked(f: &Fixture, cgroup_dirs: &[PathBuf], pid: Option<i32>) {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let tmp = f.dir.path().to_string_lossy().to_string();
    assert!(!mounts.contains(&tmp), "a mount under {tmp} leaked");
    for d in cgroup_dirs {
        assert!(!d.exists(), "cgroup {} leaked", d.display());
    }
    if let Some(pid) = pid {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(
            stat.is_empty() || stat.contains(") Z"),
            "process {pid} leaked: {stat}"
        );
    }
}

fn exit_code_logs_and_identity() {
    let f = fixture();
    let mut cfg = config(
        &f,
        "c-exit",
        "echo hi; echo oops >&2; hostname; id -u; grep -E '^(CapEff|Seccomp):' /proc/self/status; exit 3",
    );
    cfg.process.uid = 1000;
    cfg.process.gid = 1000;
    let log = cfg.log_path.clone().unwrap();
    let c = f.runtime.create(cfg).unwrap();
    assert_eq!(c.status().unwrap().state, State::Created);
    let cgroup_dirs = c.cgroup_dirs().unwrap();
    assert!(cgroup_dirs.iter().all(|d| d.exists()));
    let pid = c.start().unwrap();
    let s = wait_exited(&c);
    assert_eq!(s.exit_code, Some(3));
    assert_eq!(s.reason, "Error");
    let lines = log_lines(&log);
    let text: Vec<(&str, &str, &str)> = lines
        .iter()
        .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
        .collect();
    assert!(text.contains(&("stdout", "F", "hi")), "{text:?}");
    assert!(text.contains(&("stderr", "F", "oops")), "{text:?}");
    assert!(text.contains(&("stdout", "F", "box")), "{text:?}");
    assert!(text.contains(&("stdout", "F", "1000")), "{text:?}");
    // A non-root user keeps no effective capabilities; the filter is on.
    assert!(
        text.iter()
            .any(|l| l.2.starts_with("CapEff:") && l.2.ends_with("0000000000000000")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|l| l.2.starts_with("Seccomp:") && l.2.ends_with('2')),
        "{text:?}"
    );
    c.delete().unwrap();
    c.delete().unwrap();
    assert!(f.runtime.get("c-exit").is_err());
    assert_nothing_leaked(&f, &cgroup_dirs, Some(pid));
}

fn readonly_rootfs_refuses_writes() {
    let f = fixture();
    let mut cfg = config(
        &f,
        "c-ro",
        "grep CapEff /proc/self/status; touch /x && echo wrote || echo refused",
    );
    cfg.rootfs.readonly = true;
    let log = cfg.log_path.clone().unwrap();
    let c = f.runtime.create(cfg).unwrap();
    let cgroup_dirs = c.cgroup_dirs().unwrap();
    c.start().unwrap();
    let s = wait_exited(&c);
    assert_eq!(s.exit_code, Some(0));
    assert_eq!(s.reason, "Completed");
    let lines = log_lines(&log);
    assert!(lines.iter().any(|l| l.2 == "refused"), "{lines:?}");
    // Root in the container has containerd's 14 default capabilities: 0xa80425fb.
    assert!(
        lines.iter().any(|l| l.2.ends_with("00000000a80425fb")),
        "{lines:?}"
    );
    c.delete().unwrap();
    assert_nothing_leaked(&f, &cgroup_dirs, None);
}

fn memory_limit_exec_and_stop() {
    let f = fixture();
    let mut cfg = config(
        &f,
        "c-mem",
        "trap 'exit 0' TERM; while true; do sleep 0.1; done",
    );
    cfg.cgroup.resources.memory_limit = Some(64 << 20);
    let c = f.runtime.create(cfg).unwrap();
    let cgroup_dirs = c.cgroup_dirs().unwrap();
    let mem_dir = cgroup_dirs
        .iter()
        .find(|d| d.to_string_lossy().contains("/memory/"))
        .unwrap()
        .clone();
    let limit = std::fs::read_to_string(mem_dir.join("memory.limit_in_bytes")).unwrap();
    assert_eq!(limit.trim(), (64u64 << 20).to_string());
    let pid = c.start().unwrap();
    assert_eq!(c.status().unwrap().state, State::Running);
    let out = c
        .exec_sync(
            &[
                "sh".into(),
                "-c".into(),
                "echo out; echo err >&2; exit 7".into(),
            ],
            Duration::from_secs(5),
        )
        .unwrap();
    assert_eq!(out.exit_code, 7);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    let timed = c.exec_sync(&["sleep".into(), "5".into()], Duration::from_millis(300));
    assert!(
        matches!(timed, Err(carapace_runtime::Error::DeadlineExceeded(_))),
        "{timed:?}"
    );
    let mut r = c.config().unwrap().cgroup.resources;
    r.memory_limit = Some(32 << 20);
    c.update_resources(&r).unwrap();
    let limit = std::fs::read_to_string(mem_dir.join("memory.limit_in_bytes")).unwrap();
    assert_eq!(limit.trim(), (32u64 << 20).to_string());
    c.reopen_log().unwrap();
    c.stop(Duration::from_secs(5)).unwrap();
    let s = c.status().unwrap();
    assert_eq!(s.state, State::Exited);
    assert_eq!(s.exit_code, Some(0));
    c.stop(Duration::from_secs(1)).unwrap();
    c.delete().unwrap();
    assert_nothing_leaked(&f, &cgroup_dirs, Some(pid));
}
