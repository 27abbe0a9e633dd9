//! The real kernel and the real CNI plugins, as root: a pod with its own network (bridge +
//! host-local on a private bridge inside this test's own network namespace), UTS, IPC and PID
//! namespaces, then its removal, and nothing left behind. Skipped when not root or without the
//! plugins in /usr/lib/cni.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use carapace_podsandbox::kernel::Linux;
use carapace_podsandbox::*;

const MARKER: &str = "carapace-infra-role-marker";

/// No libtest harness: this binary is also the infra program, whose role forks and so must start
/// before any thread does. Prints a libtest-style result line for the Makefile's tally.
fn main() -> std::process::ExitCode {
    if std::env::args().any(|a| a == MARKER) {
        return std::process::ExitCode::from(infra_main() as u8);
    }
    let started = std::time::Instant::now();
    let name = "a_pod_with_real_namespaces_and_bridge_network_leaves_nothing_behind";
    let ok = std::panic::catch_unwind(
        a_pod_with_real_namespaces_and_bridge_network_leaves_nothing_behind,
    )
    .is_ok();
    println!("test {name} ... {}", if ok { "ok" } else { "FAILED" });
    println!(
        "test result: {}. {} passed; {} failed; 0 ignored; 0 measured; 0 filtered out; finished in {:.2}s",
        if ok { "ok" } else { "FAILED" },
        u8::from(ok),
        u8::from(!ok),
        started.elapsed().as_secs_f64()
    );
    if ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

struct Cleanup(Options, String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Ok(s) = Sandboxes::open(self.0.clone(), Arc::new(Linux)) {
            let _ = s.remove(&self.1);
        }
    }
}

fn nsenter(ns: &str, pin: &Path, cmd: &[&str]) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--{ns}={}", pin.display()))
        .args(cmd)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn mounts_under(dir: &Path) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .filter(|m| Path::new(m).starts_with(dir))
        .collect()
}

fn a_pod_with_real_namespaces_and_bridge_network_leaves_nothing_behind() {
    let bin = Path::new("/usr/lib/cni");
    if !nix::unistd::geteuid().is_root()
        || !bin.join("bridge").exists()
        || !bin.join("host-local").exists()
    {
        eprintln!("skipped: needs root and the CNI plugins in /usr/lib/cni");
        return;
    }
    // This test's thread gets a network namespace of its own: the bridge and its traffic stay in it.
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("net.d");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(
        conf.join("10-test.conflist"),
        format!(
            r#"{{"cniVersion":"1.0.0","name":"podtest","plugins":[{{"type":"bridge","bridge":"cpdtest0",
              "isGateway":true,"ipMasq":false,"ipam":{{"type":"host-local","dataDir":"{}",
              "ranges":[[{{"subnet":"10.211.0.0/24"}}]],"routes":[{{"dst":"0.0.0.0/0"}}]}}}}]}}"#,
            dir.path().join("ipam").display()
        ),
    )
    .unwrap();
    let mut opts = Options::new(dir.path().join("state"), &conf, vec![bin.into()]);
    opts.infra = Some(InfraCommand {
        program: std::env::current_exe().unwrap(),
        args: vec![MARKER.into()],
    });
    let uid = format!("test{}", std::process::id());
    let sandboxes = Sandboxes::open(opts.clone(), Arc::new(Linux)).unwrap();
    let config = SandboxConfig {
        metadata: Metadata {
            name: "web".into(),
            uid: uid.clone(),
            namespace: "default".into(),
            attempt: 0,
        },
        hostname: "web-0".into(),
        cgroup_parent: format!("/carapace-test/pod{uid}"),
        sysctls: [
            (
                "net.ipv4.ip_unprivileged_port_start".to_owned(),
                "80".to_owned(),
            ),
            ("kernel.shm_rmid_forced".to_owned(), "1".to_owned()),
        ]
        .into(),
        ..Default::default()
    };
    let id = sandboxes.run(config.clone()).unwrap();
    // Whatever fails below, the sandbox goes (its mounts, cgroup and infra process with it).
    let _cleanup = Cleanup(opts.clone(), id.clone());
    let sb = sandboxes.get(&id).unwrap();
    let ns = sb.namespaces.clone();
    let (net, uts, ipc, pid) = (
        ns.net.unwrap(),
        ns.uts.unwrap(),
        ns.ipc.unwrap(),
        ns.pid.unwrap(),
    );

    let ip = sb.ips[0].to_string();
    assert!(ip.starts_with("10.211.0."), "{ip}");
    let addrs = nsenter("net", &net, &["ip", "-o", "addr", "show"]);
    assert!(addrs.contains(&format!("eth0    inet {ip}/24")), "{addrs}");
    let lo = nsenter("net", &net, &["ip", "-o", "link", "show", "lo"]);
    assert!(lo.contains("UP"), "{lo}");
    assert_eq!(nsenter("uts", &uts, &["hostname"]).trim(), "web-0");
    assert_eq!(
        nsenter(
            "net",
            &net,
            &["cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"]
        )
        .trim(),
        "80"
    );
    assert_eq!(
        nsenter("ipc", &ipc, &["cat", "/proc/sys/kernel/shm_rmid_forced"]).trim(),
        "1"
    );
    // The infra process is PID 1 of the pod's PID namespace.
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", sb.infra.unwrap().pid1)).unwrap();
    let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    assert!(nspid.ends_with("\t1"), "{nspid}");
    let in_pid_ns: u32 = nsenter("pid", &pid, &["sh", "-c", "echo $$"])
        .trim()
        .parse()
        .unwrap();
    assert!(in_pid_ns > 1);
    let shm = sb.shm.clone().unwrap();
    assert!(mounts_under(&sb.dir).iter().any(|m| Path::new(m) == shm));
    assert!(
        Path::new("/sys/fs/cgroup/memory/carapace-test")
            .join(format!("pod{uid}"))
            .is_dir()
    );

    // An in-place resize lands in the kernel's files of the pod cgroup.
    let resized = PodResources {
        cpu_shares: Some(512),
        cpu_quota: Some(50_000),
        cpu_period: Some(100_000),
        memory_limit: Some(256 << 20),
        ..Default::default()
    };
    sandboxes.update_resources(&id, resized.clone()).unwrap();
    let pod_file = |hierarchy: &str, file: &str| {
        let path = Path::new("/sys/fs/cgroup")
            .join(hierarchy)
            .join(format!("carapace-test/pod{uid}"))
            .join(file);
        std::fs::read_to_string(path).unwrap().trim().to_owned()
    };
    assert_eq!(pod_file("memory", "memory.limit_in_bytes"), "268435456");
    assert_eq!(pod_file("cpu", "cpu.shares"), "512");
    assert_eq!(pod_file("cpu", "cpu.cfs_quota_us"), "50000");

    // The daemon restarts: the same sandbox, the same IP, and it can still be torn down.
    drop(sandboxes);
    let sandboxes = Sandboxes::open(opts, Arc::new(Linux)).unwrap();
    assert_eq!(sandboxes.get(&id).unwrap().ips, sb.ips);
    assert_eq!(sandboxes.get(&id).unwrap().config.resources, resized);
    assert_eq!(
        sandboxes.run(config).unwrap(),
        id,
        "a retry returns the same sandbox"
    );
    sandboxes.stop(&id).unwrap();
    sandboxes.stop(&id).unwrap();
    sandboxes.remove(&id).unwrap();
    assert!(matches!(sandboxes.remove(&id), Err(Error::NotFound(_))));

    assert_eq!(mounts_under(dir.path()), Vec::<String>::new());
    let leases: Vec<PathBuf> = std::fs::read_dir(dir.path().join("ipam/podtest"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(
        leases
            .iter()
            .all(|p| !p.file_name().unwrap().to_string_lossy().starts_with("10.")),
        "host-local kept a lease: {leases:?}"
    );
    assert!(!Path::new("/sys/fs/cgroup/memory/carapace-test").exists());
    let infra = sb.infra.unwrap();
    // Gone, or a zombie of whatever reaps orphans on this host.
    let state = std::fs::read_to_string(format!("/proc/{}/stat", infra.pid1)).unwrap_or_default();
    assert!(
        state.is_empty() || state.contains(") Z "),
        "PID 1 still runs: {state}"
    );
}
