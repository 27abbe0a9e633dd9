//! `carapace check` on this machine: the real binary against a test configuration with a pod
//! network (index 130) and the loopback registry as a mirror. It must report the facts of the CI
//! machine (a Debian VM with hybrid cgroups: v1 controllers, cgroup2 at /sys/fs/cgroup/unified,
//! hugetlb left to cgroup2, no CAP_SYS_RESOURCE in the bounding set); where this node differs, the
//! assertion says what it found. The exit status is 1 exactly when a check FAILs. The daemon logs
//! the same checks' WARN and FAIL lines once at start.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use carapace_e2e::registry::Registry;
use carapace_e2e::{Daemon, DaemonConfig, PodNetwork, carapace_bin, eventually};
use serde_json::Value;

/// Runs `carapace check --config <config> <args>`.
fn check(config: &Path, args: &[&str]) -> Output {
    let out = Command::new(carapace_bin())
        .arg("check")
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("running carapace check");
    assert!(
        out.status.code().is_some(),
        "carapace check died: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn report(out: &Output) -> Vec<Value> {
    let text = String::from_utf8_lossy(&out.stdout);
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Array(a)) => a,
        other => panic!(
            "check --json printed no JSON array ({other:?}):\n{text}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// The one finding named `name`, and all of them printed when it is missing.
fn finding<'a>(report: &'a [Value], name: &str) -> &'a Value {
    let all: Vec<&Value> = report.iter().filter(|f| f["check"] == name).collect();
    match all.as_slice() {
        [f] => f,
        _ => panic!(
            "expected one {name:?} check, found {}:\n{}",
            all.len(),
            serde_json::to_string_pretty(report).unwrap()
        ),
    }
}

fn text(f: &Value, key: &str) -> String {
    f[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string in {f}"))
        .to_owned()
}

fn assert_exit_matches(out: &Output, report: &[Value]) {
    let failed: Vec<String> = report
        .iter()
        .filter(|f| f["status"] == "FAIL")
        .map(|f| text(f, "check"))
        .collect();
    let expected = if failed.is_empty() { 0 } else { 1 };
    assert_eq!(
        out.status.code(),
        Some(expected),
        "exit status with FAILs {failed:?}"
    );
}

/// A configuration with the test's pod network and the loopback registry as a `certs.d` entry.
async fn config() -> (DaemonConfig, PodNetwork, Registry) {
    let cfg = DaemonConfig::new();
    let net = PodNetwork::bridge(&cfg, 130);
    let registry = Registry::start().await;
    registry.configure(&cfg);
    (cfg, net, registry)
}

#[tokio::test]
async fn check_reports_this_nodes_facts_as_json() {
    let (cfg, net, registry) = config().await;
    let out = check(&cfg.write(), &["--json"]);
    let r = report(&out);
    for f in &r {
        for key in ["check", "found", "meaning", "fix"] {
            text(f, key);
        }
        assert!(
            matches!(f["status"].as_str(), Some("OK" | "WARN" | "FAIL")),
            "status of {f}"
        );
    }
    assert_exit_matches(&out, &r);

    let layout = finding(&r, "cgroup layout");
    let found = text(layout, "found");
    assert!(
        found.starts_with("hybrid") && found.contains("/sys/fs/cgroup/unified"),
        "this node's cgroup layout is not the CI machine's hybrid one; check found: {found}"
    );

    let hugetlb = finding(&r, "cgroup hugetlb");
    let found = text(hugetlb, "found");
    assert!(
        found.contains("not mounted") && hugetlb["status"] != "OK",
        "the CI machine has no v1 hugetlb hierarchy; check found: {hugetlb}"
    );
    // What carapace does with the kubelet's hugepage limits there, said as it is.
    assert!(
        hugetlb["status"] == "WARN" && text(hugetlb, "meaning").contains("skips them"),
        "{hugetlb}"
    );
    assert!(text(hugetlb, "fix").contains("mount -t cgroup -o hugetlb"));

    let caps = finding(&r, "capability bounding set");
    assert!(
        text(caps, "found").contains("CAP_SYS_RESOURCE") && caps["status"] == "WARN",
        "the CI machine runs without CAP_SYS_RESOURCE in the bounding set; check found: {caps}"
    );
    assert!(text(caps, "meaning").contains("oom_score_adj"), "{caps}");

    let network = finding(&r, "CNI network");
    assert_eq!(network["status"], "OK", "{network}");
    let found = text(network, "found");
    assert!(
        found.starts_with(&format!("{} ", net.name)) && found.contains("10-e2e.conflist"),
        "the CNI network is not the test's {}: {found}",
        net.name
    );
    for plugin in ["bridge", "host-local", "portmap"] {
        let p = finding(&r, &format!("CNI plugin {plugin}"));
        assert_eq!(
            p["status"], "OK",
            "the CI machine has the CNI plugins of Debian's containernetworking-plugins: {p}"
        );
        assert!(text(p, "found").contains("1.0.0"), "{p}");
    }

    // The registry mirror (listed twice in hosts.toml: as a host and as the server) answers.
    let mirrors: Vec<&Value> = r
        .iter()
        .filter(|f| {
            text(f, "check") == format!("registry {} host {}", registry.name, registry.addr)
        })
        .collect();
    assert!(
        !mirrors.is_empty(),
        "no line for the test registry:\n{r:#?}"
    );
    for m in mirrors {
        assert_eq!(m["status"], "OK", "{m}");
        assert!(text(m, "found").contains("/v2/ answered"), "{m}");
    }

    // The kubelet's driver compared with ours: a mismatch FAILs, and the exit status says so.
    let kubelet = cfg.dir().join("kubelet.yaml");
    std::fs::write(
        &kubelet,
        "kind: KubeletConfiguration\ncgroupDriver: systemd # kubeadm's\n",
    )
    .unwrap();
    let out = check(
        &cfg.write(),
        &["--json", "--kubelet-config", kubelet.to_str().unwrap()],
    );
    let r = report(&out);
    let driver = finding(&r, "cgroup driver");
    assert_eq!(driver["status"], "FAIL", "{driver}");
    assert!(
        text(driver, "found").contains("kubelet systemd"),
        "{driver}"
    );
    assert_eq!(out.status.code(), Some(1));
    assert_exit_matches(&out, &r);

    std::fs::write(
        &kubelet,
        "kind: KubeletConfiguration\ncgroupDriver: cgroupfs\n",
    )
    .unwrap();
    let out = check(
        &cfg.write(),
        &["--json", "--kubelet-config", kubelet.to_str().unwrap()],
    );
    let r = report(&out);
    assert_eq!(finding(&r, "cgroup driver")["status"], "OK");
    assert_exit_matches(&out, &r);
    registry.stop().await;
}

#[tokio::test]
async fn check_prints_one_line_per_check_status_first() {
    let (cfg, _net, registry) = config().await;
    let path = cfg.write();
    let json = check(&path, &["--json"]);
    let r = report(&json);
    let plain = check(&path, &[]);
    assert_eq!(plain.status.code(), json.status.code());
    let stdout = String::from_utf8_lossy(&plain.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        r.len(),
        "one line per check, as many as in the JSON:\n{stdout}"
    );
    for (line, f) in lines.iter().zip(&r) {
        let status = text(f, "status");
        assert!(
            line.starts_with(&format!("{status:<4} {}: ", text(f, "check"))),
            "line {line:?} for {f}"
        );
        // Not the whole finding: free space moves between the two runs.
        if !text(f, "fix").is_empty() {
            assert!(line.contains(&text(f, "fix")), "{line:?} for {f}");
        }
    }
    registry.stop().await;
}

#[tokio::test]
async fn the_daemon_logs_the_checks_once_at_start() {
    let (cfg, _net, registry) = config().await;
    let d = Daemon::start_with(cfg).await;
    let log = eventually(Duration::from_secs(10), "the start-time checks", || {
        let log = d.log_text();
        async move { log.contains("check=capability bounding set").then_some(log) }
    })
    .await;
    let warned: Vec<&str> = log.lines().filter(|l| l.contains("node check")).collect();
    assert!(
        warned.iter().all(|l| l.contains(" WARN ")),
        "logged as warnings:\n{}",
        warned.join("\n")
    );
    for check in ["check=capability bounding set", "check=cgroup hugetlb"] {
        assert_eq!(
            warned.iter().filter(|l| l.contains(check)).count(),
            1,
            "{check} once:\n{log}"
        );
    }
    // OK checks stay out of the log.
    assert!(!log.contains("check=CNI network"), "{log}");
    d.stop().await;
    registry.stop().await;
}
