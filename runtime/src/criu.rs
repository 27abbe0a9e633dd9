//! CRIU, which a container checkpoint needs: whether it can work on this node. Found once per daemon
//! by `criu check` (the same kernel-feature detection every `criu dump` runs first) and kept, since
//! neither the kernel nor the installed CRIU changes under a running daemon and the check costs a few
//! tens of milliseconds. A node where it fails gets one precise reason, naming CRIU's own error
//! lines, that the CRI layer answers as FailedPrecondition.

use std::fs::File;
use std::io::{Read, Seek};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// A CRIU that passed `criu check` on this node.
#[derive(Debug, Clone)]
pub struct Criu {
    pub path: PathBuf,
    /// As `criu --version` prints it, e.g. "3.17.1".
    pub version: String,
}

/// Where CRIU is looked for besides `PATH`: Debian installs it in /usr/sbin, which a daemon started
/// with a user's PATH may lack.
const SBIN_DIRS: [&str; 3] = ["/usr/sbin", "/usr/local/sbin", "/sbin"];

/// Longer than any healthy `criu check` (well under a second); a hung one must not hang every later
/// checkpoint call, which waits on this probe.
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// The CRIU this node can checkpoint with, or FailedPrecondition saying precisely why there is none.
pub fn usable() -> Result<&'static Criu> {
    static PROBE: OnceLock<std::result::Result<Criu, String>> = OnceLock::new();
    PROBE
        .get_or_init(probe)
        .as_ref()
        .map_err(|why| Error::FailedPrecondition(why.clone()))
}

fn probe() -> std::result::Result<Criu, String> {
    let path = find_criu().ok_or_else(|| {
        "checkpointing needs CRIU and no `criu` binary is installed on this node (looked in PATH \
         and /usr/sbin, /usr/local/sbin, /sbin)"
            .to_string()
    })?;
    let (_, version_out) = run(&path, &["--version"]).map_err(|e| {
        format!(
            "checkpointing needs CRIU and {} --version failed: {e}",
            path.display()
        )
    })?;
    let version = parse_version(&version_out).unwrap_or_else(|| "(unknown version)".into());
    let (ok, out) = run(&path, &["check"]).map_err(|e| {
        format!(
            "checkpointing needs CRIU and `criu check` ({}) failed to run: {e}",
            path.display()
        )
    })?;
    let errors = error_lines(&out);
    if ok && errors.is_empty() {
        tracing::info!(criu = %path.display(), %version, "CRIU passes `criu check`");
        return Ok(Criu { path, version });
    }
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let why = explain(&version, &path, &kernel, &errors, &out, &maps);
    tracing::warn!(reason = %why, "checkpointing is unavailable");
    Err(why)
}

/// The reason a failed `criu check` gives, with a known cause named where CRIU's lines show it.
fn explain(
    version: &str,
    path: &Path,
    kernel: &str,
    errors: &[&str],
    out: &str,
    maps: &str,
) -> String {
    let what = if errors.is_empty() {
        // No "Error" line: keep CRIU's last words, whatever they are.
        out.lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no output")
            .trim()
            .to_string()
    } else {
        errors.join("; ")
    };
    let mut why = format!(
        "checkpointing needs CRIU, and criu {version} ({}) cannot work on this kernel ({kernel}): \
         `criu check` fails: {what}",
        path.display()
    );
    // Linux 6.13 split the vDSO's data pages into [vvar] and [vvar_vclock] (kernel commit
    // e93d2521b27f); a CRIU that predates that expects [vvar] right before [vdso] and fails on its
    // own vDSO before it looks at any process, so no dump or restore can run.
    if errors
        .iter()
        .any(|e| e.contains("Unexpected rt vDSO area bounds"))
        && maps.contains("[vvar_vclock]")
    {
        if !why.ends_with('.') {
            why.push('.');
        }
        why.push_str(
            " Cause: this kernel maps the vDSO clock pages as a separate [vvar_vclock] area \
             (Linux 6.13 and later), which this CRIU does not know; CRIU handles it from 4.1 on",
        );
    }
    why
}

/// CRIU's error lines ("Error (criu/vdso.c:381): vdso: ..."), with any timestamp prefix dropped.
fn error_lines(out: &str) -> Vec<&str> {
    out.lines()
        .filter_map(|l| l.find("Error (").map(|i| l[i..].trim_end()))
        .collect()
}

fn parse_version(out: &str) -> Option<String> {
    out.lines()
        .find_map(|l| l.trim().strip_prefix("Version:"))
        .map(|v| v.trim().to_string())
}

fn find_criu() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(SBIN_DIRS.iter().map(PathBuf::from))
        .map(|d| d.join("criu"))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Runs CRIU with `args`, both its streams into one unnamed temporary file (no pipe to drain, so a
/// chatty CRIU cannot block), killed after [`CHECK_TIMEOUT`]. Returns whether it exited 0, and what
/// it printed.
fn run(path: &Path, args: &[&str]) -> std::io::Result<(bool, String)> {
    let mut out = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .mode(0o600)
        .open(std::env::temp_dir())?;
    let mut child = Command::new(path)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out.try_clone()?))
        .stderr(Stdio::from(out.try_clone()?))
        .spawn()?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > CHECK_TIMEOUT {
            // Not reaped yet, so the pid is still this child's.
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer in {}s", CHECK_TIMEOUT.as_secs()),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    out.rewind()?;
    let mut text = String::new();
    File::read_to_string(&mut out, &mut text)?;
    Ok((status.success(), text))
}

#[cfg(test)]
mod tests {
    use super::*;

    // What CRIU 3.17.1 prints on Linux 6.18 (this node).
    const CHECK_6_18: &str = "\
Error (criu/vdso.c:381): vdso: Unexpected rt vDSO area bounds
Error (criu/vdso.c:613): vdso: Failed to fill self vdso symtable
Error (criu/kerndat.c:1615): kerndat_vdso_fill_symtable failed when initializing kerndat.
Error (criu/crtools.c:260): Could not initialize kernel features detection.
";

    #[test]
    fn error_lines_keep_criu_s_words_without_timestamps() {
        let e =
            error_lines("(00.024006) Error (criu/vdso.c:381): vdso: x\n(00.1) ok\nWarn (a): b\n");
        assert_eq!(e, ["Error (criu/vdso.c:381): vdso: x"]);
    }

    #[test]
    fn the_split_vvar_is_named_as_the_cause() {
        let maps = "7f8f95f48000-7f8f95f4c000 r--p 00000000 00:00 0 [vvar]\n\
                    7f8f95f4c000-7f8f95f4e000 r--p 00000000 00:00 0 [vvar_vclock]\n";
        let why = explain(
            "3.17.1",
            Path::new("/usr/sbin/criu"),
            "6.18.44",
            &error_lines(CHECK_6_18),
            CHECK_6_18,
            maps,
        );
        assert!(why.contains("criu 3.17.1 (/usr/sbin/criu)"), "{why}");
        assert!(why.contains("(6.18.44)"), "{why}");
        assert!(
            why.contains("vdso: Unexpected rt vDSO area bounds"),
            "{why}"
        );
        assert!(
            why.contains("Could not initialize kernel features detection"),
            "{why}"
        );
        assert!(why.contains("[vvar_vclock]"), "{why}");
    }

    #[test]
    fn another_failure_keeps_criu_s_lines_and_names_no_cause() {
        let out = "Error (criu/cr-check.c:1): something else\n";
        let why = explain(
            "3.17.1",
            Path::new("criu"),
            "5.10",
            &error_lines(out),
            out,
            "",
        );
        assert!(why.ends_with("`criu check` fails: Error (criu/cr-check.c:1): something else"));
        let why = explain(
            "3.17.1",
            Path::new("criu"),
            "5.10",
            &[],
            "\nbad thing\n\n",
            "",
        );
        assert!(why.ends_with("fails: bad thing"), "{why}");
    }

    #[test]
    fn the_version_is_read_from_criu_s_banner() {
        assert_eq!(
            parse_version("Version: 3.17.1\n").as_deref(),
            Some("3.17.1")
        );
        assert_eq!(
            parse_version("Version: 4.1\nGitID: v4.1\n").as_deref(),
            Some("4.1")
        );
        assert_eq!(parse_version("nonsense"), None);
    }

    #[test]
    fn run_reports_status_and_both_streams() {
        let (ok, out) = run(Path::new("/bin/sh"), &["-c", "echo a; echo b >&2; exit 3"]).unwrap();
        assert!(!ok);
        assert_eq!(out, "a\nb\n");
    }
}
