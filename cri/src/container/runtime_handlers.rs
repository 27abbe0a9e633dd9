//! The configured runtime handlers, as the container side needs them: a pod's handler name
//! becomes the OCI runtime its containers are created with.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use carapace_runtime::config::OciRuntime;

use crate::error::Error;

static HANDLERS: RwLock<BTreeMap<String, OciRuntime>> = RwLock::new(BTreeMap::new());
/// The handlers whose runtime applies recursive read-only mounts (`rro`).
static RRO: RwLock<BTreeSet<String>> = RwLock::new(BTreeSet::new());

/// Sets the handlers every later [`oci_runtime`] looks in (the daemon's `[runtimes.*]`), and
/// asks each runtime once what it supports (`<runtime> features`, runtime-spec's
/// features-linux): a kubelet shows a feature to pods only where `Status` reports it.
pub(crate) fn set(handlers: BTreeMap<String, OciRuntime>) {
    let rro = if carapace_runtime::mount_setattr_supported() {
        handlers
            .iter()
            .filter(|(_, rt)| lists_mount_option(rt, "rro"))
            .map(|(name, _)| name.clone())
            .collect()
    } else {
        BTreeSet::new()
    };
    *RRO.write().unwrap_or_else(|e| e.into_inner()) = rro;
    *HANDLERS.write().unwrap_or_else(|e| e.into_inner()) = handlers;
}

/// Whether pods of handler `name` can have recursive read-only mounts: the built-in executor
/// where the kernel has mount_setattr(2), an OCI runtime where its features list `rro` too.
pub(crate) fn recursive_read_only(name: &str) -> bool {
    if name.is_empty() {
        return carapace_runtime::mount_setattr_supported();
    }
    RRO.read().unwrap_or_else(|e| e.into_inner()).contains(name)
}

/// Whether `<runtime> features` lists `option` among its mount options. A runtime without the
/// subcommand (runsc), one that fails or one that takes longer than a few seconds is taken to
/// support nothing beyond the spec's basics.
fn lists_mount_option(rt: &OciRuntime, option: &str) -> bool {
    let Ok(mut child) = Command::new(&rt.binary)
        .args(&rt.args)
        .arg("features")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    // The answer is a few KiB, well inside a pipe's buffer: waiting before reading cannot block
    // the runtime on a full pipe.
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => break,
            Ok(None) if started.elapsed() < Duration::from_secs(5) => {
                std::thread::sleep(Duration::from_millis(5));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
    let mut out = Vec::new();
    if let Some(mut stdout) = child.stdout.take() {
        let _ = std::io::Read::read_to_end(&mut stdout, &mut out);
    }
    features_list_mount_option(&out, option)
}

fn features_list_mount_option(features: &[u8], option: &str) -> bool {
    serde_json::from_slice::<serde_json::Value>(features)
        .ok()
        .and_then(|v| v.get("mountOptions")?.as_array().cloned())
        .is_some_and(|opts| opts.iter().any(|o| o.as_str() == Some(option)))
}

/// The OCI runtime of handler `name`: `None` for the built-in executor (`""`), NotFound naming
/// it for a handler the configuration does not have.
pub(crate) fn oci_runtime(name: &str) -> Result<Option<OciRuntime>, Error> {
    if name.is_empty() {
        return Ok(None);
    }
    HANDLERS
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(name)
        .cloned()
        .map(Some)
        .ok_or_else(|| Error::NotFound(format!("runtime handler {name:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rro_is_read_from_the_features_mount_options() {
        let runc = br#"{"ociVersionMin":"1.0.0","mountOptions":["ro","rbind","rro","rshared"]}"#;
        assert!(features_list_mount_option(runc, "rro"));
        let old = br#"{"mountOptions":["ro","rbind"]}"#;
        assert!(!features_list_mount_option(old, "rro"));
        assert!(!features_list_mount_option(
            b"flag provided but not defined",
            "rro"
        ));
        assert!(!features_list_mount_option(
            br#"{"mountOptions":"rro"}"#,
            "rro"
        ));
    }

    #[test]
    fn a_runtime_without_features_supports_no_rro() {
        let rt = |binary: &str, args: &[&str]| OciRuntime {
            handler: "x".into(),
            binary: binary.into(),
            root: "/nonexistent".into(),
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        assert!(!lists_mount_option(&rt("/nonexistent/runtime", &[]), "rro"));
        // `sh -c '...' features`: prints its answer as a runtime would.
        let sh = rt("/bin/sh", &["-c", r#"echo '{"mountOptions":["rro"]}'"#]);
        assert!(lists_mount_option(&sh, "rro"));
        let fails = rt("/bin/sh", &["-c", "exit 1"]);
        assert!(!lists_mount_option(&fails, "rro"));
    }
}
