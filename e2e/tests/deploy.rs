//! The files in `deploy/` as an operator installs them: systemd accepts the unit as written (with
//! the binary path pointed at the one just built), and it keeps containers alive across a restart
//! of the service.

use std::path::Path;

use carapace_e2e::carapace_bin;

fn repo_file(rel: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    let unit = repo_file("deploy/carapace.service");
    // What a restart must not touch and what readiness means, as the unit says it.
    for line in ["Type=notify", "KillMode=process", "Delegate=yes"] {
        assert!(
            unit.lines().any(|l| l.trim() == line),
            "{line} missing from the unit"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("carapace.service");
    std::fs::write(
        &path,
        unit.replace(
            "/usr/local/bin/carapace",
            &carapace_bin().display().to_string(),
        ),
    )
    .unwrap();
    // Installed by deploy/install-deps.sh test (package systemd); a missing tool fails the test.
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("running systemd-analyze (deploy/install-deps.sh test installs it)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    // An unknown key or bad value is only a warning to systemd: any line about the unit is a
    // defect. `modprobe` may be absent in a test container; its line is prefixed `-` in the unit.
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("carapace.service") && !l.contains("modprobe"))
        .collect();
    assert!(
        complaints.is_empty(),
        "systemd-analyze verify: {complaints:?}"
    );
}
