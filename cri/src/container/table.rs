//! The container table: each container's CRI metadata (`cri.json` beside its bundle, so a
//! restarted daemon lists the same containers), the states last read and the kept
//! ListContainers items.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use carapace_runtime as runtime;
use carapace_runtime::container::{Runtime, State};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::invalid;
use crate::api::*;
use crate::error::Error;
use crate::events::Events;

/// A CRI mount as `ContainerStatus` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct MountRecord {
    pub container_path: String,
    pub host_path: String,
    pub readonly: bool,
    pub selinux_relabel: bool,
    pub propagation: i32,
    #[serde(default)]
    pub recursive_read_only: bool,
    /// An image volume's image as the mount named it (`ImageSpec.image`, `.image_ref`), and
    /// its sub path; empty for a bind.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image_ref: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image_sub_path: String,
}

/// What the CRI knows of a container and the runtime does not: `cri.json` in its bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Meta {
    pub id: String,
    /// The reserved name, [`super::cri_to_oci::container_name`].
    pub name: String,
    pub sandbox_id: String,
    pub metadata_name: String,
    pub attempt: u32,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// The image as the kubelet asked for it (`ImageSpec.image`).
    pub image_spec: String,
    pub image: String,
    pub image_ref: String,
    pub image_id: String,
    pub log_path: String,
    pub mounts: Vec<MountRecord>,
    pub created_at: i64,
}

pub(super) const META_FILE: &str = "cri.json";

/// Temp file, rename: a crash of the daemon leaves the old file or the new one. No fsync: the
/// record lives in the bundle under the state dir, whose containers a reboot ends anyway.
pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("no parent directory"))?;
    let tmp = dir.join(format!(".{META_FILE}.tmp"));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// A container's ListContainers item without its state, which each answer appends.
pub(super) fn list_item(m: &Meta) -> Container {
    Container {
        id: m.id.clone(),
        pod_sandbox_id: m.sandbox_id.clone(),
        metadata: Some(ContainerMetadata {
            name: m.metadata_name.clone(),
            attempt: m.attempt,
        }),
        image: Some(ImageSpec {
            image: m.image.clone(),
            ..Default::default()
        }),
        // The image ID, as containerd lists it, not the repo digest ContainerStatus shows:
        // kubelets before `image_id` existed match in-use images for garbage collection by
        // this field against ListImages' ids.
        image_ref: m.image_id.clone(),
        state: 0,
        created_at: m.created_at,
        labels: to_hash(&m.labels),
        annotations: to_hash(&m.annotations),
        image_id: m.image_id.clone(),
    }
}

/// A random 64-hex container id.
pub(super) fn new_id() -> Result<String, Error> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| Error::Internal(format!("random container id: {e}")))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

#[derive(Default)]
pub(super) struct Table {
    pub containers: HashMap<String, Meta>,
    /// Reserved name → container id.
    pub names: HashMap<String, String>,
    /// Names whose create is in flight; the receiver closes when it ends.
    pub creating: HashMap<String, watch::Receiver<()>>,
}

pub(super) struct Inner {
    pub runtime: Runtime,
    pub table: Mutex<Table>,
    pub stats: crate::stats::StatsCache,
    pub events: Events,
    /// Running containers whose exit no STOPPED event reported yet.
    pub watching: Mutex<HashSet<String>>,
    pub exits: OnceLock<runtime::exits::ExitWatcher>,
    pub links: OnceLock<Links>,
    /// Container states as last read, so that ListContainers (which the kubelet calls every
    /// second) is served from memory; see [`Inner::invalidate`].
    pub states: Mutex<HashMap<String, Known>>,
    /// Each container's ListContainers item, encoded once.
    pub encoded: crate::listing::EncodedItems,
    /// Changes to what ListContainers shows (a container made or forgotten, a state changed or
    /// learnt), counted after each is made; and the last unfiltered answer, by that count.
    pub changes: AtomicU64,
    pub unfiltered: crate::listing::KeptAnswer,
}

/// A container's state as last read from disk, and the number of changes seen so far: a read
/// that raced with a change (the version moved meanwhile) is not kept.
#[derive(Default)]
pub(super) struct Known {
    version: u64,
    state: Option<State>,
}

/// What the container calls reach beyond the runtime, set once by
/// [`super::ContainerApi::link`].
#[derive(Clone, Default)]
pub(crate) struct Links {
    /// For the pod status every container event carries.
    pub sandboxes: Option<Arc<carapace_podsandbox::Sandboxes>>,
    pub metrics: Option<carapace_metrics::NodeMetrics>,
}

impl Inner {
    pub(super) fn table(&self) -> MutexGuard<'_, Table> {
        // The table stays consistent across a panic (every update is one insert or remove).
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The full id of `id` or of the one container whose id starts with it.
    pub(super) fn resolve(&self, id: &str) -> Result<String, Error> {
        if id.is_empty() {
            return Err(invalid("a container id is required"));
        }
        let t = self.table();
        if t.containers.contains_key(id) {
            return Ok(id.to_owned());
        }
        let mut found = t.containers.keys().filter(|k| k.starts_with(id));
        match (found.next(), found.next()) {
            (Some(k), None) => Ok(k.clone()),
            (Some(_), Some(_)) => Err(invalid(format!("container id prefix {id:?} is ambiguous"))),
            (None, _) => Err(Error::NotFound(format!("container {id:?}"))),
        }
    }

    pub(super) fn meta(&self, id: &str) -> Option<Meta> {
        self.table().containers.get(id).cloned()
    }

    /// The sandbox a container belongs to (for events: no copy of the whole record).
    pub(super) fn sandbox_of(&self, id: &str) -> Option<String> {
        self.table()
            .containers
            .get(id)
            .map(|m| m.sandbox_id.clone())
    }

    /// Forgets the state kept for `id`: called after everything that changes it (start, an exit
    /// noticed, stop, removal). Created and Exited only change through those; Running is kept
    /// only while the exit watcher watches the container, which reports its exit. Returns the
    /// new version, for [`Inner::keep_states`].
    pub(super) fn invalidate(&self, id: &str) -> u64 {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        let k = states.entry(id.to_owned()).or_default();
        k.version += 1;
        k.state = None;
        let version = k.version;
        self.changed();
        version
    }

    /// Counts a change to what ListContainers shows, once it is made.
    pub(super) fn changed(&self) {
        self.changes.fetch_add(1, Ordering::Release);
    }

    /// The kept states of `ids`, with the versions to hand back to [`Inner::keep_states`].
    pub(super) fn known_states<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a str>,
    ) -> Vec<(u64, Option<State>)> {
        let states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        ids.into_iter()
            .map(|id| states.get(id).map_or((0, None), |k| (k.version, k.state)))
            .collect()
    }

    /// The states of `ids` (None: unreadable): kept ones from memory, the others read from disk
    /// (blocking) and kept for next time.
    pub(super) fn states_of(&self, ids: &[String]) -> Vec<Option<State>> {
        let mut read = Vec::new();
        let mut states = Vec::with_capacity(ids.len());
        let known = self.known_states(ids.iter().map(String::as_str));
        for (id, (version, kept)) in ids.iter().zip(known) {
            let state = kept.or_else(|| {
                let s = self.runtime.get(id).and_then(|c| c.status()).ok()?.state;
                read.push((id.clone(), version, s));
                Some(s)
            });
            states.push(state);
        }
        self.keep_states(read);
        states
    }

    /// Keeps states just read from disk, unless a change came in since `version` was taken.
    pub(super) fn keep_states(&self, read: Vec<(String, u64, State)>) {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        let watching = self.watching.lock().unwrap_or_else(|p| p.into_inner());
        let table = self.table();
        let mut learnt = false;
        for (id, version, state) in read {
            if !table.containers.contains_key(&id)
                || (state == State::Running && !watching.contains(&id))
            {
                continue;
            }
            let k = states.entry(id).or_default();
            if k.version == version && k.state != Some(state) {
                k.state = Some(state);
                learnt = true;
            }
        }
        // Only a state learnt counts (a metrics scrape reads states too, mostly known ones).
        if learnt {
            self.changed();
        }
    }

    pub(super) fn forget(&self, id: &str) {
        {
            let mut t = self.table();
            if let Some(m) = t.containers.remove(id)
                && t.names.get(&m.name).is_some_and(|i| i == id)
            {
                t.names.remove(&m.name);
            }
        }
        // Not under the table's lock: `keep_states` takes the two in the other order.
        self.states
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        self.changed();
    }
}

pub(super) fn state_to_cri(s: State) -> ContainerState {
    match s {
        State::Created => ContainerState::ContainerCreated,
        State::Running => ContainerState::ContainerRunning,
        State::Exited => ContainerState::ContainerExited,
    }
}

pub(super) fn to_hash(m: &BTreeMap<String, String>) -> HashMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// ListContainers' filter, before the state (which needs the runtime).
pub(super) fn matches(f: &ContainerFilter, m: &Meta) -> bool {
    m.id.starts_with(&f.id)
        && m.sandbox_id.starts_with(&f.pod_sandbox_id)
        && f.label_selector
            .iter()
            .all(|(k, v)| m.labels.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    use std::fs;

    use carapace_runtime::config as rt;
    use carapace_runtime::container::RuntimeOptions;

    use super::*;
    use crate::container::fixtures::*;
    use crate::container::handlers::ContainerApi;

    #[test]
    fn ids_are_64_hex_and_differ() {
        let a = new_id().unwrap();
        let b = new_id().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        rt::validate_id(&a).unwrap();
    }

    #[test]
    fn list_filters_by_id_prefix_sandbox_and_labels() {
        let m = meta("abc123", "sb999", "n", &[("app", "web"), ("tier", "front")]);
        let f = |id: &str, sb: &str, labels: &[(&str, &str)]| ContainerFilter {
            id: id.into(),
            pod_sandbox_id: sb.into(),
            label_selector: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            state: None,
        };
        assert!(matches(&f("", "", &[]), &m));
        assert!(matches(&f("abc", "", &[]), &m));
        assert!(!matches(&f("abd", "", &[]), &m));
        assert!(matches(&f("", "sb9", &[]), &m));
        assert!(!matches(&f("", "sb1", &[]), &m));
        assert!(matches(&f("", "", &[("app", "web")]), &m));
        assert!(matches(
            &f("", "", &[("app", "web"), ("tier", "front")]),
            &m
        ));
        assert!(!matches(&f("", "", &[("app", "db")]), &m));
        assert!(!matches(&f("", "", &[("missing", "")]), &m));
    }

    #[test]
    fn ids_resolve_by_unique_prefix() {
        let t = tempfile::tempdir().unwrap();
        let api = api(&t);
        insert(&api, meta("abc1", "sb", "a", &[]));
        insert(&api, meta("abc2", "sb", "b", &[]));
        insert(&api, meta("def", "sb", "c", &[]));
        assert_eq!(api.inner.resolve("d").unwrap(), "def");
        assert_eq!(api.inner.resolve("abc1").unwrap(), "abc1");
        assert!(matches!(
            api.inner.resolve("abc"),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(api.inner.resolve("x"), Err(Error::NotFound(_))));
        assert!(matches!(
            api.inner.resolve(""),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn metadata_survives_a_restart() {
        let t = tempfile::tempdir().unwrap();
        let opts = RuntimeOptions {
            root: t.path().join("root"),
            state: t.path().join("state"),
            helper_exe: "/bin/false".into(),
            helper_args: vec![],
            sealed: None,
        };
        // A bundle as the runtime leaves it (its record is opaque here), with our cri.json beside it,
        // and one without cri.json (a create interrupted between the two writes).
        let api1 = ContainerApi::open(opts.clone()).unwrap();
        drop(api1);
        let bundle = opts.state.join("containers/keep");
        fs::create_dir_all(&bundle).unwrap();
        fs::write(bundle.join("container.json"), "{}").unwrap();
        let m = meta("keep", "sb", "keep_name", &[("l", "v")]);
        write_atomic(&bundle.join(META_FILE), &serde_json::to_vec(&m).unwrap()).unwrap();
        let orphan = opts.state.join("containers/orphan");
        fs::create_dir_all(&orphan).unwrap();
        fs::write(orphan.join("container.json"), "{}").unwrap();

        let api2 = ContainerApi::open(opts).unwrap();
        let tbl = api2.inner.table();
        assert_eq!(tbl.containers.get("keep"), Some(&m));
        assert_eq!(tbl.names.get("keep_name").map(String::as_str), Some("keep"));
        assert!(!tbl.containers.contains_key("orphan"));
        assert!(!orphan.exists(), "the half-created container is cleaned up");
    }
}
