//! Container escapes a request asks for, which runc, containerd and Docker refuse: each tried for
//! real through the daemon and named after its class. Every test removes what it made and ends
//! with `Node::finish` (via `remove_all`), which checks that nothing is left.

use std::path::{Path, PathBuf};

use carapace_e2e::cri;
use carapace_e2e::node::{Node, container, cri_log, dirs_below, log_until, output_of, security};
use tonic::Code;

/// The containers' directories the daemon keeps (bundles and writable layers), to show a refused
/// request left none.
fn container_dirs(n: &Node) -> Vec<String> {
    [n.d.config.root(), n.state().to_path_buf()]
        .iter()
        .flat_map(|base| dirs_below(base, 3))
        .filter(|d| {
            Path::new(d)
                .parent()
                .is_some_and(|p| p.ends_with("containers"))
        })
        .collect()
}

fn target(cfg: &mut cri::ContainerConfig, id: &str) {
    security(cfg).namespace_options = Some(cri::NamespaceOption {
        pid: cri::NamespaceMode::Target as i32,
        target_id: id.into(),
        ..Default::default()
    });
}

/// The host pid of a running container.
async fn pid_of(n: &mut Node, id: &str) -> i32 {
    let (_, info) = n.status(id).await;
    info["pid"].as_i64().expect("a running container has a pid") as i32
}

/// A host process (`sleep`) given `pid`, as a pid freed by an exit is handed out again; None if
/// other processes kept taking it.
fn host_process_with_pid(pid: i32) -> Option<std::process::Child> {
    for _ in 0..50 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).ok()?;
        let mut child = std::process::Command::new("sleep").arg("60").spawn().ok()?;
        if child.id() as i32 == pid {
            return Some(child);
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    None
}

/// Class: one pod joins another pod's processes. PID namespace mode TARGET naming a container of
/// another pod must be refused (it would read the victim's environment and root, and signal
/// it); within the pod it works. And a TARGET container created against a process that then
/// exited must not join whatever process gets that pid next.
#[tokio::test]
async fn pid_namespace_target_in_another_pod_is_refused() {
    let mut n = Node::start(75).await;
    let pod_a = n.pod("victim", "0d1e2f30-0000-4000-8000-000000000075");
    let pod_a_id = n.run_pod(&pod_a).await;
    let pod_b = n.pod("intruder", "0d1e2f30-0000-4001-8000-000000000075");
    let pod_b_id = n.run_pod(&pod_b).await;

    let mut victim_cfg = container("victim", &["sleep", "1000"]);
    victim_cfg.envs = vec![cri::KeyValue {
        key: "SECRET".into(),
        value: "hunter2".into(),
    }];
    let victim = n.create_started(&pod_a_id, &pod_a, &victim_cfg).await;

    let mut intruder = container(
        "intruder",
        &[
            "sh",
            "-c",
            "cat /proc/1/environ | tr '\\0' '\\n' | grep SECRET; ls /proc/1/root/; \
             kill -STOP 1 && echo SIGNALLED",
        ],
    );
    target(&mut intruder, &victim);
    match n.create(&pod_b_id, &pod_b, &intruder).await {
        Err(e) => {
            assert_eq!(e.code(), Code::InvalidArgument, "{e}");
            assert!(e.message().contains(&victim), "{e}");
        }
        Ok(id) => {
            n.start_container(&id).await;
            let st = n.exited(&id).await;
            panic!(
                "a container of another pod was let into the victim's PID namespace; it saw:\n{}",
                output_of(&cri_log(Path::new(&st.log_path)))
            );
        }
    }
    let (st, _) = n.status(&victim).await;
    assert_eq!(st.state, cri::ContainerState::ContainerRunning as i32);
    assert_eq!(n.list(cri::ContainerFilter::default()).await.len(), 1);

    // Within the pod, TARGET is what ephemeral debug containers use: it joins the victim's.
    let mut debug = container("debug", &["sh", "-c", "tr '\\0' ' ' < /proc/1/cmdline"]);
    target(&mut debug, &victim);
    let (_, st, lines) = n.run_to_exit(&pod_a_id, &pod_a, &debug).await;
    assert_eq!(st.exit_code, 0, "{}", output_of(&lines));
    assert!(
        lines
            .iter()
            .any(|l| l.1 == "stdout" && l.3.trim() == "sleep 1000"),
        "{}",
        output_of(&lines)
    );

    // Created against a process that then exits: at start, its pid may name another process,
    // here one of the host's, whose PID namespace must not be joined.
    let short = n
        .create_started(&pod_a_id, &pod_a, &container("short", &["sleep", "1000"]))
        .await;
    let short_pid = pid_of(&mut n, &short).await;
    let mut late = container(
        "late",
        &[
            "sh",
            "-c",
            "tr '\\0' ' ' < /proc/1/cmdline; echo; sleep 1000",
        ],
    );
    target(&mut late, &short);
    let late_id = n
        .create(&pod_a_id, &pod_a, &late)
        .await
        .unwrap_or_else(|e| panic!("CreateContainer late: {e}"));
    n.stop_container(&short, 0).await;
    match host_process_with_pid(short_pid) {
        Some(mut host) => {
            let started =
                n.rt.start_container(cri::StartContainerRequest {
                    container_id: late_id.clone(),
                })
                .await;
            let _ = host.kill();
            let _ = host.wait();
            let e = match started {
                Err(e) => e,
                Ok(_) => {
                    let log = log_until(&n.log_path(&late_id).await, "its output", |l| {
                        l.1 == "stdout"
                    })
                    .await;
                    panic!(
                        "started in the PID namespace of host pid {short_pid}; /proc/1/cmdline: {}",
                        output_of(&log)
                    );
                }
            };
            assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
            assert!(e.message().contains("no longer"), "{e}");
        }
        None => eprintln!("pid {short_pid} could not be taken again: reuse not tried"),
    }

    n.remove_pod(&pod_b_id).await;
    n.remove_all(&pod_a_id).await;
}

/// Class: volumes over /proc and the cgroup filesystem. A volume at `/proc/sys` (however the path
/// is spelled) would hand the container the host's sysctls, or hide the files the kernel's and
/// the runtime's checks trust; runc refuses every /proc destination but a few lxcfs files.
#[tokio::test]
async fn volume_over_proc_sys_is_refused() {
    let (mut n, pod, pod_id) =
        Node::with_running_pod(76, "procvol", "0d1e2f30-0000-4000-8000-000000000076").await;
    let host = tempfile::tempdir().unwrap();
    let with_volume = |at: &str| {
        let mut c = container("vol", &["sh", "-c", "cat /proc/sys/kernel/core_pattern"]);
        c.mounts = vec![cri::Mount {
            container_path: at.into(),
            host_path: host.path().display().to_string(),
            ..Default::default()
        }];
        c
    };
    let before = container_dirs(&n);
    for at in [
        "/proc/sys",
        "/proc/sys/",
        "/proc/./sys",
        "//proc/sys/kernel",
        "/proc",
        "/sys/fs/cgroup",
    ] {
        match n.create(&pod_id, &pod, &with_volume(at)).await {
            Err(e) => {
                assert_eq!(e.code(), Code::InvalidArgument, "{at}: {e}");
                assert!(e.message().contains(at), "{at}: {e}");
            }
            Ok(id) => {
                n.start_container(&id).await;
                let st = n.exited(&id).await;
                panic!(
                    "a volume at {at} was accepted; the container read core_pattern: {}",
                    output_of(&cri_log(Path::new(&st.log_path)))
                );
            }
        }
    }
    assert!(n.list(cri::ContainerFilter::default()).await.is_empty());
    assert_eq!(container_dirs(&n), before);

    // Elsewhere the volume works, under the same name (nothing was left reserved).
    let mut fine = with_volume("/data");
    fine.command = vec!["sh".into(), "-c".into(), "ls -d /data".into()];
    let (_, st, lines) = n.run_to_exit(&pod_id, &pod, &fine).await;
    assert_eq!(st.exit_code, 0, "{}", output_of(&lines));

    n.remove_all(&pod_id).await;
}

/// A static x86-64 program of one page: `io_uring_setup(1, &params)`, then exits with its errno
/// (0 when it made a ring). `params` lies in the segment's zero-filled tail, past the file.
#[cfg(target_arch = "x86_64")]
fn io_uring_probe() -> Vec<u8> {
    const BASE: u64 = 0x40_0000;
    #[rustfmt::skip]
    let code: &[u8] = &[
        0xbf, 0x01, 0x00, 0x00, 0x00, // mov edi, 1         (entries)
        0xbe, 0x00, 0x02, 0x40, 0x00, // mov esi, BASE+0x200 (params)
        0xb8, 0xa9, 0x01, 0x00, 0x00, // mov eax, 425       (io_uring_setup)
        0x0f, 0x05,                   // syscall
        0x85, 0xc0,                   // test eax, eax
        0x79, 0x04,                   // jns ok
        0xf7, 0xd8,                   // neg eax            (the errno)
        0xeb, 0x02,                   // jmp out
        0x31, 0xc0,                   // ok: xor eax, eax
        0x89, 0xc7,                   // out: mov edi, eax
        0xb8, 0xe7, 0x00, 0x00, 0x00, // mov eax, 231       (exit_group)
        0x0f, 0x05,                   // syscall
    ];
    let entry = BASE + 64 + 56;
    let file_size = (64 + 56 + code.len()) as u64;
    let mut elf = Vec::new();
    // ELF header: 64-bit, little-endian, version 1, an executable for x86-64.
    elf.extend_from_slice(b"\x7fELF\x02\x01\x01\x00");
    elf.extend_from_slice(&[0; 8]);
    elf.extend_from_slice(&2u16.to_le_bytes());
    elf.extend_from_slice(&0x3eu16.to_le_bytes());
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&entry.to_le_bytes());
    elf.extend_from_slice(&64u64.to_le_bytes()); // program headers right after
    elf.extend_from_slice(&0u64.to_le_bytes()); // no section headers
    elf.extend_from_slice(&0u32.to_le_bytes());
    for half in [64u16, 56, 1, 0, 0, 0] {
        elf.extend_from_slice(&half.to_le_bytes());
    }
    // One PT_LOAD, read-write-execute, of the whole file and a zeroed page.
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&7u32.to_le_bytes());
    for word in [0, BASE, BASE, file_size, 0x1000, 0x1000] {
        elf.extend_from_slice(&word.to_le_bytes());
    }
    elf.extend_from_slice(code);
    elf
}

/// Class: the default seccomp profile lets io_uring through. A ring submits opens, connects and
/// more without the syscalls the filter checks; Docker and containerd took io_uring_* out of
/// their default profiles. (The probe program is x86-64 code.)
#[cfg(target_arch = "x86_64")]
#[tokio::test]
async fn io_uring_is_refused_under_runtime_default() {
    let (mut n, pod, pod_id) =
        Node::with_running_pod(77, "uring", "0d1e2f30-0000-4000-8000-000000000077").await;
    let dir = tempfile::tempdir().unwrap();
    let probe: PathBuf = dir.path().join("uring");
    std::fs::write(&probe, io_uring_probe()).unwrap();
    carapace_e2e::make_executable(&probe);
    let mut exit_codes = Vec::new();
    for (name, profile) in [
        ("unconfined", cri::security_profile::ProfileType::Unconfined),
        (
            "confined",
            cri::security_profile::ProfileType::RuntimeDefault,
        ),
    ] {
        let mut c = container(name, &["/probe/uring"]);
        c.mounts = vec![cri::Mount {
            container_path: "/probe".into(),
            host_path: dir.path().display().to_string(),
            readonly: true,
            ..Default::default()
        }];
        security(&mut c).seccomp = Some(cri::SecurityProfile {
            profile_type: profile as i32,
            ..Default::default()
        });
        let (_, st, lines) = n.run_to_exit(&pod_id, &pod, &c).await;
        exit_codes.push((name, st.exit_code, output_of(&lines)));
    }
    // The kernel makes the ring (else this node proves nothing), the default profile refuses it.
    assert_eq!(exit_codes[0].1, 0, "unconfined: {:?}", exit_codes[0]);
    assert_eq!(
        exit_codes[1].1, 1,
        "RuntimeDefault, EPERM: {:?}",
        exit_codes[1]
    );

    n.remove_all(&pod_id).await;
}

/// Class: a misspelled deny rule fails open. A Localhost profile that denies a syscall the
/// runtime cannot name would silently allow it: the profile is refused, naming the syscall.
#[tokio::test]
async fn localhost_seccomp_profile_naming_an_unknown_syscall_is_refused() {
    let (mut n, pod, pod_id) =
        Node::with_running_pod(78, "badprofile", "0d1e2f30-0000-4000-8000-000000000078").await;
    let dir = tempfile::tempdir().unwrap();
    let profile = |names: &str| {
        let p = dir.path().join(format!("{}.json", names.len()));
        std::fs::write(
            &p,
            format!(
                r#"{{"defaultAction":"SCMP_ACT_ALLOW",
                    "syscalls":[{{"names":[{names}],"action":"SCMP_ACT_ERRNO"}}]}}"#
            ),
        )
        .unwrap();
        let mut c = container("confined", &["sh", "-c", "mkdir /made && echo MADE"]);
        security(&mut c).seccomp = Some(cri::SecurityProfile {
            profile_type: cri::security_profile::ProfileType::Localhost as i32,
            localhost_ref: p.display().to_string(),
        });
        c
    };
    let before = container_dirs(&n);
    match n
        .create(
            &pod_id,
            &pod,
            &profile(r#""notasyscall","mkdir","mkdirat""#),
        )
        .await
    {
        Err(e) => {
            assert_eq!(e.code(), Code::InvalidArgument, "{e}");
            assert!(e.message().contains("notasyscall"), "{e}");
        }
        Ok(id) => {
            n.remove_container(&id).await;
            panic!("a profile denying \"notasyscall\" was accepted");
        }
    }
    assert!(n.list(cri::ContainerFilter::default()).await.is_empty());
    assert_eq!(container_dirs(&n), before);

    // Without the unknown name the same profile is taken and holds.
    let (_, st, lines) = n
        .run_to_exit(&pod_id, &pod, &profile(r#""mkdir","mkdirat""#))
        .await;
    assert_ne!(st.exit_code, 0, "{}", output_of(&lines));
    assert!(
        !lines.iter().any(|l| l.3.contains("MADE")),
        "{}",
        output_of(&lines)
    );

    n.remove_all(&pod_id).await;
}
