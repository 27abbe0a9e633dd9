//! The per-attachment cache of ADD results, as libcni keeps one: DEL and CHECK after a daemon
//! restart, and DEL after a reboot of the node, run the configuration that ADD ran, with its
//! result as `prevResult`: on a node the cache is under the daemon's root, which a reboot keeps.
//! Each entry is one JSON file written atomically (temporary file, rename), so a crash of the
//! daemon leaves either the old entry or the new one.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Attachment, Error};

const KIND: &str = "carapaceCniCacheV1";

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Entry {
    pub kind: String,
    pub network_name: String,
    pub container_id: String,
    pub if_name: String,
    pub attachment: Attachment,
    /// The network configuration list that ADD ran.
    pub config: Value,
    /// The final result of ADD, as the last plugin printed it.
    pub result: Value,
}

#[derive(Debug)]
pub(crate) struct Cache {
    dir: PathBuf,
}

impl Cache {
    pub fn new(cache_dir: &Path) -> Self {
        Self {
            dir: cache_dir.join("results"),
        }
    }

    /// Names were validated (`is_safe_name`, interface name rules), so the file name cannot
    /// climb out of the cache directory.
    fn path(&self, network: &str, att: &Attachment) -> PathBuf {
        self.dir
            .join(format!("{network}-{}-{}", att.container_id, att.ifname))
    }

    pub fn load(&self, network: &str, att: &Attachment) -> Result<Option<Entry>, Error> {
        let path = self.path(network, att);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(Error::Cache { path, source }),
        };
        let entry: Entry = serde_json::from_slice(&bytes).map_err(|e| Error::Cache {
            path: path.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })?;
        if entry.kind != KIND || entry.container_id != att.container_id {
            return Err(Error::Cache {
                path,
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "not a cache entry of this attachment",
                ),
            });
        }
        Ok(Some(entry))
    }

    pub fn store(
        &self,
        network: &str,
        att: &Attachment,
        config: Value,
        result: Value,
    ) -> Result<(), Error> {
        let entry = Entry {
            kind: KIND.into(),
            network_name: network.into(),
            container_id: att.container_id.clone(),
            if_name: att.ifname.clone(),
            attachment: att.clone(),
            config,
            result,
        };
        let path = self.path(network, att);
        let bytes = serde_json::to_vec(&entry).map_err(|e| Error::Cache {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        replace(&path, &bytes, false, "cni: ADD result temp written")
            .map_err(|source| Error::Cache { path, source })
    }

    pub fn remove(&self, network: &str, att: &Attachment) -> Result<(), Error> {
        let path = self.path(network, att);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(Error::Cache { path, source }),
        }
    }
}

/// Writes `bytes` to `path` so that readers see the old file or the whole new one, even across a
/// crash of the machine: a temporary file beside it, fsync'd, renamed over, and the directory
/// fsync'd. For the pod records of `carapace-podsandbox`, which shares no other dependency with
/// the runtime's own helper. (Its crash point is named for those records: the one other use,
/// moving the CNI cache at start, comes before any call arms a crash point.)
pub fn write_durable(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    replace(path, bytes, true, "records: pod record temp written")
}

/// Removes the temp files [`write_durable`] and the cache's writes leave in `dir` when the
/// process dies between writing one and renaming it: `.<name>.tmp<pid>`, the pid that of a
/// process now gone, so no later write takes the file over. For the start of the process that
/// owns `dir` only, before it writes there: a write in flight has a file of that shape too.
pub fn remove_stale_temps(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        // No dir (a first start), or one we cannot read: then it holds nothing we wrote.
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        if !is_temp_name(&name.to_string_lossy()) || !e.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let path = e.path();
        match std::fs::remove_file(&path) {
            Ok(()) => tracing::info!(path = %path.display(), "removed a temp file a crash left"),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                tracing::warn!(path = %path.display(), error = %err, "removing a temp file a crash left")
            }
        }
    }
}

/// Whether `name` is that of a temp file [`replace`] writes: `.<name>.tmp<pid>`.
fn is_temp_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('.') else {
        return false;
    };
    rest.rsplit_once(".tmp").is_some_and(|(base, pid)| {
        !base.is_empty() && !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit())
    })
}

/// A temporary file beside `path`, renamed over it; with `durable`, fsync'd before the rename and
/// the directory after it. Cache entries are not durable (nor are libcni's, under `/var/lib/cni`):
/// the rename alone survives a crash of the daemon and a clean reboot, and an entry a power loss
/// takes only makes its DEL run the network's current configuration without `prevResult`, which
/// still releases a host-local lease. Two fsyncs would cost each pod start about 12 ms here.
/// `temp_written` names the crash point between the temp file and its rename.
fn replace(path: &Path, bytes: &[u8], durable: bool, temp_written: &str) -> std::io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("path has no parent"))?;
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("path has no file name"))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        if durable {
            f.sync_all()?;
        }
        // A daemon dying here leaves the temp file, named for a pid no later write has.
        carapace_crashpoint::hit(temp_written);
        std::fs::rename(&tmp, path)?;
        if durable {
            // The rename must reach the disk too, or a power loss may bring back the old file.
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_temp_files_a_crash_left_are_removed_and_nothing_else() {
        let d = tempfile::tempdir().unwrap();
        let entry = d.path().join("net-abc-eth0");
        replace(&entry, b"{}", false, "test").unwrap();
        // What a process that died before its renames left, and what is not a temp file.
        let stale = [".net-abc-eth0.tmp4242", ".pod.json.tmp1"];
        let kept = [
            "net-abc-eth0",
            ".net-abc-eth0.tmp",
            ".x.tmpabc",
            "x.tmp1",
            ".tmp7",
        ];
        for n in stale.iter().chain(&kept[1..]) {
            std::fs::write(d.path().join(n), b"{}").unwrap();
        }
        remove_stale_temps(d.path());
        for n in stale {
            assert!(!d.path().join(n).exists(), "{n}");
        }
        for n in kept {
            assert!(d.path().join(n).exists(), "{n}");
        }
        // A dir that is not there holds nothing to remove.
        remove_stale_temps(&d.path().join("none"));
    }
}
