//! The container RPCs over the table and the runtime: create, start, stop, remove, list,
//! status, update, reopen log, exec, attach, and the events they send.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use carapace_runtime as runtime;
use carapace_runtime::config as rt;
use carapace_runtime::container::{Runtime, RuntimeOptions, State};
use prost::Message;
use tokio::sync::watch;

use super::cri_to_oci::{
    ImageInfo, MapInput, SIGTERM, SandboxInfo, VolumeLayers, container_name, log_path, resources,
    resources_to_cri, runtime_config, signal_to_cri, volume_image,
};
use super::invalid;
use super::table::{
    self, Inner, Links, META_FILE, Meta, MountRecord, Table, list_item, new_id, state_to_cri,
    to_hash, write_atomic,
};
use crate::api::*;
use crate::error::Error;
use crate::events::Events;
use crate::listing::{CONTAINER_STATE, answer};

/// The steps of the calls below that touch the runtime, run on the blocking pool.
impl Inner {
    /// `/proc/<pid>/ns/pid` of a running container of `sandbox_id`, for PID namespace mode
    /// TARGET, and that namespace's identity (`st_dev`, `st_ino`) for the start to check.
    /// Another pod's container is refused: joining its PID namespace would hand this pod its
    /// processes' environment, root and signals (containerd refuses it too).
    fn pid_ns_of(&self, id: &str, sandbox_id: &str) -> Result<(PathBuf, (u64, u64)), Error> {
        let id = self.resolve(id)?;
        let owner = self
            .table()
            .containers
            .get(&id)
            .map(|m| m.sandbox_id.clone());
        if owner.as_deref() != Some(sandbox_id) {
            return Err(invalid(format!(
                "target container {id} is not in pod sandbox {sandbox_id}: only a container of \
                 the same pod may be the target of PID namespace mode TARGET"
            )));
        }
        let running_pid = || -> Result<i32, Error> {
            let st = self.runtime.get(&id)?.status()?;
            match st.pid {
                Some(pid) if st.state == State::Running => Ok(pid),
                _ => Err(Error::FailedPrecondition(format!(
                    "target container {id} is not running"
                ))),
            }
        };
        let pid = running_pid()?;
        let path = PathBuf::from(format!("/proc/{pid}/ns/pid"));
        let ns = std::fs::metadata(&path).map_err(|e| {
            Error::FailedPrecondition(format!("target container {id}: {}: {e}", path.display()))
        })?;
        // Still running under the same pid once the namespace was read: it was that process's.
        if running_pid()? != pid {
            return Err(Error::FailedPrecondition(format!(
                "target container {id} exited"
            )));
        }
        Ok((path, (ns.dev(), ns.ino())))
    }

    /// The blocking part of create: map, create in the runtime, persist the metadata.
    fn create(
        &self,
        meta: Meta,
        config: &ContainerConfig,
        image: &ImageInfo,
        sb: &SandboxInfo,
        volume_layers: &VolumeLayers,
    ) -> Result<(), Error> {
        let joined = std::cell::Cell::new(None);
        let target = |t: &str| {
            let (path, identity) = self.pid_ns_of(t, &sb.id)?;
            joined.set(Some(identity));
            Ok(path)
        };
        let mut rc = runtime_config(&MapInput {
            id: &meta.id,
            config,
            image,
            sandbox: sb,
            target_pid_ns: &target,
            volume_layers,
        })?;
        // Only the daemon records which namespace a TARGET join was checked against.
        rc.annotations.remove(rt::PID_NAMESPACE_ANNOTATION);
        if let Some((dev, ino)) = joined.get() {
            rc.annotations.insert(
                rt::PID_NAMESPACE_ANNOTATION.to_owned(),
                format!("{dev}:{ino}"),
            );
        }
        let c = self.runtime.create(rc)?;
        carapace_crashpoint::hit("container: created in the runtime");
        let written = serde_json::to_vec(&meta)
            .map_err(|e| Error::Internal(format!("encoding {META_FILE}: {e}")))
            .and_then(|b| {
                write_atomic(&c.bundle().join(META_FILE), &b).map_err(|e| {
                    Error::Internal(format!("writing {META_FILE} of {}: {e}", meta.id))
                })
            });
        if let Err(e) = written {
            if let Err(d) = c.delete() {
                tracing::warn!(container_id = %meta.id, error = %d, "undoing a failed create");
            }
            return Err(e);
        }
        carapace_crashpoint::hit("container: CRI metadata written");
        let mut t = self.table();
        t.names.insert(meta.name.clone(), meta.id.clone());
        t.containers.insert(meta.id.clone(), meta);
        self.changed();
        Ok(())
    }

    /// The CRI status of a container (blocking: reads its state files and asks its monitor).
    fn cri_status(
        &self,
        meta: &Meta,
        verbose: bool,
    ) -> Result<(ContainerStatus, HashMap<String, String>), Error> {
        let c = self.runtime.get(&meta.id)?;
        let spec = if verbose { c.spec().ok() } else { None };
        let (st, config) = (c.status()?, c.config()?);
        let mut info = HashMap::new();
        if verbose {
            let v = serde_json::json!({
                "sandboxID": meta.sandbox_id,
                "name": meta.name,
                "pid": st.pid,
                "image": meta.image_spec,
                "logPath": meta.log_path,
                "runtimeSpec": spec,
            });
            info.insert("info".to_owned(), v.to_string());
        }
        let status = ContainerStatus {
            id: meta.id.clone(),
            metadata: Some(ContainerMetadata {
                name: meta.metadata_name.clone(),
                attempt: meta.attempt,
            }),
            state: state_to_cri(st.state) as i32,
            created_at: meta.created_at,
            started_at: st.started_at,
            finished_at: st.finished_at,
            exit_code: st.exit_code.unwrap_or(0),
            image: Some(ImageSpec {
                image: meta.image.clone(),
                ..Default::default()
            }),
            image_ref: meta.image_ref.clone(),
            reason: st.reason,
            message: st.message,
            labels: to_hash(&meta.labels),
            annotations: to_hash(&meta.annotations),
            mounts: meta
                .mounts
                .iter()
                .map(|m| Mount {
                    container_path: m.container_path.clone(),
                    host_path: m.host_path.clone(),
                    readonly: m.readonly,
                    selinux_relabel: m.selinux_relabel,
                    propagation: m.propagation,
                    recursive_read_only: m.recursive_read_only,
                    image: (!m.image.is_empty() || !m.image_ref.is_empty()).then(|| ImageSpec {
                        image: m.image.clone(),
                        image_ref: m.image_ref.clone(),
                        ..Default::default()
                    }),
                    image_sub_path: m.image_sub_path.clone(),
                    // In a pod with a user namespace every bind is id-mapped through it.
                    uid_mappings: id_mappings(config.namespaces.user.as_ref().map(|u| &u.uids)),
                    gid_mappings: id_mappings(config.namespaces.user.as_ref().map(|u| &u.gids)),
                })
                .collect(),
            log_path: meta.log_path.clone(),
            resources: Some(ContainerResources {
                linux: Some(resources_to_cri(
                    &config.cgroup.resources,
                    config.process.oom_score_adj,
                )),
                windows: None,
            }),
            image_id: meta.image_id.clone(),
            user: Some(ContainerUser {
                linux: Some(container_user(&c, st.state, &config.process)),
            }),
            // The signal StopContainer sends first: the config's, else the image's, else SIGTERM.
            stop_signal: signal_to_cri(config.stop_signal.unwrap_or(SIGTERM)) as i32,
        };
        Ok((status, info))
    }

    /// Sends a container event with the pod's status and its containers' (blocking: reads their
    /// state). Nothing is read when nobody listens.
    fn send_event(&self, id: &str, sandbox_id: &str, kind: ContainerEventType) {
        if !self.events.has_subscribers() {
            return;
        }
        let pod_sandbox_status = self
            .links
            .get()
            .and_then(|l| l.sandboxes.as_ref())
            .and_then(|s| s.get(sandbox_id))
            .map(|sb| crate::sandbox::status(&sb));
        let metas: Vec<Meta> = self
            .table()
            .containers
            .values()
            .filter(|m| m.sandbox_id == sandbox_id)
            .cloned()
            .collect();
        let containers_statuses = metas
            .iter()
            .filter_map(|m| self.cri_status(m, false).ok().map(|(s, _)| s))
            .collect();
        self.events.send(ContainerEventResponse {
            container_id: id.to_owned(),
            container_event_type: kind as i32,
            created_at: now_nanos(),
            pod_sandbox_status,
            containers_statuses,
        });
    }

    /// The STOPPED event of a container, once per start: whoever notices the exit first (the
    /// exit watcher, Stop or Remove) sends it.
    fn stopped(&self, id: &str) {
        self.invalidate(id);
        let first = self
            .watching
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        if first && let Some(sb) = self.sandbox_of(id) {
            self.send_event(id, &sb, ContainerEventType::ContainerStoppedEvent);
        }
    }

    /// Watches the exit of a container that was just started or found running (its monitor
    /// ending) and reports it as STOPPED, so exits that happen by themselves reach the events
    /// stream without any polling.
    fn watch_exit(self: &Arc<Self>, id: &str) {
        let watcher = self.exits.get_or_init(|| {
            let weak = Arc::downgrade(self);
            runtime::exits::ExitWatcher::new(move |id| {
                if let Some(inner) = weak.upgrade() {
                    inner.stopped(id);
                }
            })
        });
        // Marked first: the exit may be reported before `watch` returns.
        self.watching
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_owned());
        match self.runtime.get(id).and_then(|c| watcher.watch(&c)) {
            Ok(true) => {}
            // It ran a moment ago: it exited already.
            Ok(false) => self.stopped(id),
            // Stop or Remove will still report it.
            Err(e) => {
                tracing::warn!(container_id = id, error = %e, "cannot watch the container's exit");
            }
        }
    }
}

/// Drops a name's in-flight mark (and with it the watch sender, waking waiters) however the
/// create ends, panics included.
struct CreatingGuard {
    inner: Arc<Inner>,
    name: String,
    _done: watch::Sender<()>,
}

impl Drop for CreatingGuard {
    fn drop(&mut self) {
        self.inner.table().creating.remove(&self.name);
    }
}

/// The container RPCs. Cheap to clone; every runtime call runs on the blocking pool.
#[derive(Clone)]
pub(crate) struct ContainerApi {
    pub(super) inner: Arc<Inner>,
}

impl ContainerApi {
    /// Opens the runtime under `root`/`state` and reloads every container a previous run left.
    /// A container without CRI metadata (the daemon died between the two writes of a create) is
    /// deleted. Blocks: call it at start-up, before serving.
    pub(crate) fn open(opts: RuntimeOptions) -> Result<Self, Error> {
        let runtime = Runtime::new(opts)?;
        let mut table = Table::default();
        for c in runtime.list()? {
            let path = c.bundle().join(META_FILE);
            let meta = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Meta>(&b).map_err(|e| e.to_string()));
            match meta {
                Ok(m) if m.id == c.id() => {
                    table.names.insert(m.name.clone(), m.id.clone());
                    table.containers.insert(m.id.clone(), m);
                }
                other => {
                    tracing::warn!(container_id = c.id(), problem = ?other.err(), "removing a container without CRI metadata");
                    if let Err(e) = c.delete() {
                        tracing::warn!(container_id = c.id(), error = %e, "removing a half-created container");
                    }
                }
            }
        }
        for c in runtime.half_created() {
            tracing::warn!(
                container_id = c.id(),
                "removing a container a create left half-made"
            );
            if let Err(e) = c.delete() {
                tracing::warn!(container_id = c.id(), error = %e, "removing a half-created container");
            }
        }
        tracing::info!(containers = table.containers.len(), "containers reloaded");
        Ok(Self {
            inner: Arc::new(Inner {
                runtime,
                table: Mutex::new(table),
                stats: Default::default(),
                events: Events::default(),
                watching: Mutex::default(),
                exits: OnceLock::new(),
                links: OnceLock::new(),
                states: Mutex::default(),
                encoded: Default::default(),
                changes: AtomicU64::new(0),
                unfiltered: Default::default(),
            }),
        })
    }

    /// Connects the container calls to the sandbox store (for the pod status in events) and the
    /// node metrics (start latency), then watches the exits of the containers that run now, so
    /// their exits are reported. Call once, inside the tokio runtime; later calls change nothing.
    pub(crate) fn link(&self, links: Links) {
        if self.inner.links.set(links).is_err() {
            return;
        }
        let ids: Vec<String> = self.inner.table().containers.keys().cloned().collect();
        for id in ids {
            let running = self
                .inner
                .runtime
                .get(&id)
                .and_then(|c| c.status())
                .is_ok_and(|s| s.state == State::Running);
            if running {
                self.inner.watch_exit(&id);
            }
        }
    }

    /// GetContainerEvents: the events from now on.
    /// Whether a container of this id exists.
    pub(crate) fn exists(&self, id: &str) -> bool {
        self.inner.table().containers.contains_key(id)
    }

    pub(crate) fn events(&self) -> crate::events::EventStream {
        self.inner.events.subscribe()
    }

    /// Containers by state and each live monitor's memory, fds and CPU, for the Prometheus
    /// gauges (blocking: states as ListContainers keeps them, read from disk only when unknown).
    pub(crate) fn census(
        &self,
    ) -> (
        Vec<(&'static str, i64)>,
        Vec<carapace_metrics::MonitorUsage>,
    ) {
        let ids: Vec<String> = self.inner.table().containers.keys().cloned().collect();
        let states = self.inner.states_of(&ids);
        let mut by_state: HashMap<&'static str, i64> = HashMap::new();
        let mut monitors = Vec::new();
        for (id, state) in ids.iter().zip(states) {
            let state = match state {
                Some(State::Created) => "created",
                Some(State::Running) => "running",
                Some(State::Exited) => "exited",
                None => "unknown",
            };
            *by_state.entry(state).or_default() += 1;
            if let Some(pid) = self
                .inner
                .runtime
                .get(id)
                .ok()
                .and_then(|c| c.monitor_pid())
                && let Some(usage) = monitor_usage(pid)
            {
                monitors.push(usage);
            }
        }
        (by_state.into_iter().collect(), monitors)
    }

    pub(super) async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| Error::Internal(format!("container task: {e}")))?
    }

    /// The ids of the containers of a sandbox, for StopPodSandbox / RemovePodSandbox.
    fn ids_in_sandbox(&self, sandbox_id: &str) -> Vec<String> {
        self.inner
            .table()
            .containers
            .values()
            .filter(|m| m.sandbox_id == sandbox_id)
            .map(|m| m.id.clone())
            .collect()
    }

    /// Stops every container of a sandbox (StopPodSandbox does this first).
    pub(crate) async fn stop_sandbox_containers(
        &self,
        sandbox_id: &str,
        timeout: Duration,
    ) -> Result<(), Error> {
        for id in self.ids_in_sandbox(sandbox_id) {
            self.stop_id(id, timeout).await?;
        }
        Ok(())
    }

    /// Removes every container of a sandbox (RemovePodSandbox does this first). Returns the
    /// removed ids, whose image holds the caller releases.
    async fn remove_sandbox_containers(&self, sandbox_id: &str) -> Result<Vec<String>, Error> {
        let ids = self.ids_in_sandbox(sandbox_id);
        for id in &ids {
            self.remove_id(id.clone()).await?;
        }
        Ok(ids)
    }

    /// CreateContainer. The caller resolved the sandbox (and checked it is ready), the image and
    /// the images of the image volumes.
    async fn create(
        &self,
        req: CreateContainerRequest,
        sandbox: SandboxInfo,
        image: ImageInfo,
        volume_layers: VolumeLayers,
    ) -> Result<CreateContainerResponse, Error> {
        let span = tracing::Span::current();
        span.record("pod_id", sandbox.id.as_str());
        let config = req
            .config
            .ok_or_else(|| invalid("CreateContainer needs a container config"))?;
        let md = config
            .metadata
            .clone()
            .filter(|m| !m.name.is_empty())
            .ok_or_else(|| invalid("container metadata.name is required"))?;
        if req.pod_sandbox_id.is_empty() {
            return Err(invalid("pod_sandbox_id is required"));
        }
        if !sandbox.id.starts_with(&req.pod_sandbox_id) {
            return Err(Error::Internal(format!(
                "sandbox {} handed over for request naming {}",
                sandbox.id, req.pod_sandbox_id
            )));
        }
        let name = container_name(&md, &sandbox);

        // Reserve the name, or hand back what an earlier call with it made (a kubelet retry).
        let done = loop {
            let wait = {
                let mut t = self.inner.table();
                if let Some(id) = t.names.get(&name) {
                    let existing = t.containers.get(id).map(|m| m.sandbox_id.clone());
                    if existing.as_deref() == Some(sandbox.id.as_str()) {
                        span.record("container_id", id.as_str());
                        tracing::info!(name = %name, "CreateContainer retried: returning the existing container");
                        return Ok(CreateContainerResponse {
                            container_id: id.clone(),
                        });
                    }
                    return Err(Error::AlreadyExists(format!(
                        "container name {name:?} is reserved for {id} in sandbox {}",
                        existing.unwrap_or_default()
                    )));
                }
                match t.creating.get(&name) {
                    Some(rx) => rx.clone(),
                    None => {
                        let (tx, rx) = watch::channel(());
                        t.creating.insert(name.clone(), rx);
                        break tx;
                    }
                }
            };
            // Closed when the in-flight create ends, whichever way.
            let mut wait = wait;
            let _ = wait.changed().await;
        };
        // From here on, however this call ends, the name's in-flight mark goes.
        let guard = CreatingGuard {
            inner: self.inner.clone(),
            name: name.clone(),
            _done: done,
        };

        let id = new_id()?;
        span.record("container_id", id.as_str());
        let image_spec = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        let meta = Meta {
            id: id.clone(),
            name: name.clone(),
            sandbox_id: sandbox.id.clone(),
            metadata_name: md.name.clone(),
            attempt: md.attempt,
            labels: config
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            annotations: config
                .annotations
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            image: if image.name.is_empty() {
                image_spec.clone()
            } else {
                image.name.clone()
            },
            image_spec,
            image_ref: image.image_ref.clone(),
            image_id: image.id.clone(),
            log_path: log_path(sandbox.log_directory.as_deref(), &config.log_path)?
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default(),
            mounts: config
                .mounts
                .iter()
                .map(|m| MountRecord {
                    container_path: m.container_path.clone(),
                    host_path: m.host_path.clone(),
                    readonly: m.readonly,
                    selinux_relabel: m.selinux_relabel,
                    propagation: m.propagation,
                    recursive_read_only: m.recursive_read_only,
                    image: volume_image(m).map(|i| i.image.clone()).unwrap_or_default(),
                    image_ref: volume_image(m)
                        .map(|i| i.image_ref.clone())
                        .unwrap_or_default(),
                    image_sub_path: m.image_sub_path.clone(),
                })
                .collect(),
            created_at: 0,
        };
        // Everything, the table included, happens on the blocking task: it completes even when
        // the kubelet gives up on this call, so its retry finds the container.
        let span2 = span.clone();
        tokio::task::spawn_blocking(move || {
            let _entered = span2.enter();
            let mut meta = meta;
            meta.created_at = now_nanos();
            let (id, sandbox_id) = (meta.id.clone(), meta.sandbox_id.clone());
            let r = guard
                .inner
                .create(meta, &config, &image, &sandbox, &volume_layers);
            if r.is_ok() {
                guard
                    .inner
                    .send_event(&id, &sandbox_id, ContainerEventType::ContainerCreatedEvent);
            }
            drop(guard);
            r
        })
        .await
        .map_err(|e| Error::Internal(format!("container task: {e}")))??;
        tracing::info!("container created");
        Ok(CreateContainerResponse { container_id: id })
    }

    pub(crate) async fn start(
        &self,
        req: StartContainerRequest,
    ) -> Result<StartContainerResponse, Error> {
        let id = self.inner.resolve(&req.container_id)?;
        record_ids(&self.inner, &id);
        let began = std::time::Instant::now();
        let inner = self.inner.clone();
        let pid = self
            .blocking(move |i| {
                // A pod being stopped or removed is losing its namespaces: a start there fails
                // obscurely (fork in a PID namespace without its init: ENOMEM) or outlives the
                // pod's teardown. Asked again after a failed start, which may have raced a stop.
                let pod_not_ready = || {
                    let sandboxes = i.links.get()?.sandboxes.as_ref()?;
                    let sb = i.sandbox_of(&id)?;
                    let ready =
                        sandboxes.state(&sb) == Some(carapace_podsandbox::SandboxState::Ready);
                    (!ready).then(|| {
                        Error::FailedPrecondition(format!(
                            "pod sandbox {sb} of container {id} is not ready (stopped or being \
                             removed)"
                        ))
                    })
                };
                if let Some(e) = pod_not_ready() {
                    return Err(e);
                }
                let started = i.runtime.get(&id).and_then(|c| c.start());
                let version = i.invalidate(&id);
                let pid = match started {
                    Ok(pid) => pid,
                    // A container removed meanwhile is NotFound whatever its pod's state.
                    Err(e @ runtime::Error::NotFound(_)) => return Err(e.into()),
                    Err(e) => return Err(pod_not_ready().unwrap_or(e.into())),
                };
                if let Some(sb) = i.sandbox_of(&id) {
                    i.send_event(&id, &sb, ContainerEventType::ContainerStartedEvent);
                }
                // After STARTED is out, so a container that exits at once reports STOPPED second.
                inner.watch_exit(&id);
                // Its monitor just said it runs, and the watcher reports its end from now on: the
                // next list need not ask the monitor again (an exit noticed meanwhile changed the
                // version, and then nothing is kept).
                i.keep_states(vec![(id.clone(), version, State::Running)]);
                Ok(pid)
            })
            .await?;
        if let Some(m) = self.inner.links.get().and_then(|l| l.metrics.as_ref()) {
            m.observe_container_start(began.elapsed().as_secs_f64());
        }
        tracing::info!(pid, "container started");
        Ok(StartContainerResponse {})
    }

    async fn stop_id(&self, id: String, timeout: Duration) -> Result<(), Error> {
        self.blocking(move |i| match i.runtime.get(&id) {
            Ok(c) => {
                c.stop(timeout)?;
                i.stopped(&id);
                Ok(())
            }
            Err(runtime::Error::NotFound(_)) => Ok(()),
            Err(e) => Err(e.into()),
        })
        .await
    }

    /// The full id of `id` with the call's span filled in, or `None` for an id no container has:
    /// Stop and Remove of an unknown container succeed (see the module doc).
    fn resolve_if_known(&self, id: &str) -> Result<Option<String>, Error> {
        match self.inner.resolve(id) {
            Ok(full) => {
                record_ids(&self.inner, &full);
                Ok(Some(full))
            }
            Err(Error::NotFound(_)) => {
                tracing::Span::current().record("container_id", id);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// StopContainer: an unknown id is not an error (see the module doc).
    pub(crate) async fn stop(
        &self,
        req: StopContainerRequest,
    ) -> Result<StopContainerResponse, Error> {
        let Some(id) = self.resolve_if_known(&req.container_id)? else {
            return Ok(StopContainerResponse {});
        };
        let timeout = Duration::from_secs(req.timeout.max(0) as u64);
        self.stop_id(id, timeout).await?;
        Ok(StopContainerResponse {})
    }

    async fn remove_id(&self, id: String) -> Result<(), Error> {
        self.blocking(move |i| {
            match i.runtime.get(&id) {
                // A running container is killed first, as containerd's remove does; its STOPPED
                // event goes out before the DELETED one.
                Ok(c) => {
                    c.stop(Duration::ZERO)?;
                    i.stopped(&id);
                    c.delete()?;
                }
                Err(runtime::Error::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
            let sandbox_id = i.sandbox_of(&id);
            i.forget(&id);
            i.stats.forget(&id);
            if let Some(sb) = sandbox_id {
                i.send_event(&id, &sb, ContainerEventType::ContainerDeletedEvent);
            }
            Ok(())
        })
        .await
    }

    /// RemoveContainer: stops it first; an unknown id is not an error. The caller then releases
    /// the container's image hold (`Images::release(container_id)`).
    pub(crate) async fn remove(
        &self,
        req: RemoveContainerRequest,
    ) -> Result<RemoveContainerResponse, Error> {
        let Some(id) = self.resolve_if_known(&req.container_id)? else {
            return Ok(RemoveContainerResponse {});
        };
        self.remove_id(id).await?;
        tracing::info!("container removed");
        Ok(RemoveContainerResponse {})
    }

    /// ListContainers as the daemon answers it: encoded, from each container's kept encoding.
    pub(crate) async fn list_encoded(&self, req: ListContainersRequest) -> Result<Bytes, Error> {
        let filter = req.filter.unwrap_or_default();
        // The kubelet's poll: answered again as is while nothing changed. The count is read
        // before the records, so an answer is never kept under a count a later change made.
        let unfiltered = filter == ContainerFilter::default();
        let changes = self.inner.changes.load(Ordering::Acquire);
        if unfiltered && let Some(answer) = self.inner.unfiltered.get(changes) {
            return Ok(answer);
        }
        let items: Vec<(String, Bytes)> = {
            let table = self.inner.table();
            let mut kept = self.inner.encoded.lock();
            kept.prune(table.containers.len(), |id| {
                table.containers.contains_key(id)
            });
            table
                .containers
                .values()
                .filter(|m| table::matches(&filter, m))
                .map(|m| {
                    let bytes = kept.get(&m.id, m.created_at, || list_item(m).encode_to_vec());
                    (m.id.clone(), bytes)
                })
                .collect()
        };
        // From memory; only states not known yet (first call, just changed) are read from disk.
        let known = self
            .inner
            .known_states(items.iter().map(|(id, _)| id.as_str()));
        let all_known = known.iter().all(|(_, s)| s.is_some());
        let states: Vec<Option<State>> = if all_known {
            known.into_iter().map(|(_, s)| s).collect()
        } else {
            let ids: Vec<String> = items.iter().map(|(id, _)| id.clone()).collect();
            self.blocking(move |i| Ok(i.states_of(&ids))).await?
        };
        let want = filter.state.map(|s| s.state);
        let listed = items.iter().zip(states).filter_map(|((_, bytes), state)| {
            let state = state
                .map(state_to_cri)
                .unwrap_or(ContainerState::ContainerUnknown) as i32;
            want.is_none_or(|w| w == state)
                .then_some((&bytes[..], state))
        });
        let answer = answer(listed, CONTAINER_STATE);
        // Only states kept in memory are ones a change moves the count for.
        if unfiltered && all_known {
            self.inner.unfiltered.keep(changes, &answer);
        }
        Ok(answer)
    }

    /// ListContainers as a message, decoded from the answer the daemon sends.
    pub(crate) async fn list(
        &self,
        req: ListContainersRequest,
    ) -> Result<ListContainersResponse, Error> {
        crate::listing::decode(self.list_encoded(req).await?, "container list")
    }
    pub(crate) async fn status(
        &self,
        req: ContainerStatusRequest,
    ) -> Result<ContainerStatusResponse, Error> {
        let id = self.inner.resolve(&req.container_id)?;
        record_ids(&self.inner, &id);
        let meta = self
            .inner
            .meta(&id)
            .ok_or_else(|| Error::NotFound(format!("container {id}")))?;
        let verbose = req.verbose;
        let (status, info) = self.blocking(move |i| i.cri_status(&meta, verbose)).await?;
        Ok(ContainerStatusResponse {
            status: Some(status),
            info,
        })
    }

    pub(crate) async fn update_resources(
        &self,
        req: UpdateContainerResourcesRequest,
    ) -> Result<UpdateContainerResourcesResponse, Error> {
        let id = self.inner.resolve(&req.container_id)?;
        record_ids(&self.inner, &id);
        let Some(linux) = req.linux else {
            return Ok(UpdateContainerResourcesResponse {});
        };
        // The OOM score cannot change live; the rest replaces the cgroup's settings.
        let (res, _oom) = resources(&linux)?;
        self.blocking(move |i| Ok(i.runtime.get(&id)?.update_resources(&res)?))
            .await?;
        Ok(UpdateContainerResourcesResponse {})
    }

    pub(crate) async fn reopen_log(
        &self,
        req: ReopenContainerLogRequest,
    ) -> Result<ReopenContainerLogResponse, Error> {
        let id = self.inner.resolve(&req.container_id)?;
        record_ids(&self.inner, &id);
        self.blocking(move |i| Ok(i.runtime.get(&id)?.reopen_log()?))
            .await?;
        Ok(ReopenContainerLogResponse {})
    }

    /// ExecSync: `timeout` seconds (0: none); output capped by the runtime at just under 16 MiB,
    /// both streams together, so the reply fits the kubelet's 16 MiB gRPC limit;
    /// a timeout is DeadlineExceeded, which the kubelet reads as a probe timeout.
    pub(crate) async fn exec_sync(&self, req: ExecSyncRequest) -> Result<ExecSyncResponse, Error> {
        let id = self.inner.resolve(&req.container_id)?;
        record_ids(&self.inner, &id);
        if req.cmd.is_empty() || req.cmd[0].is_empty() {
            return Err(invalid("ExecSync needs a command"));
        }
        // Refused before anything runs, as CreateContainer refuses it: exec(2) cannot take it.
        if req.cmd.iter().any(|a| a.contains('\0')) {
            return Err(invalid("the ExecSync command contains a NUL byte"));
        }
        let timeout = Duration::from_secs(req.timeout.max(0) as u64);
        let cmd = req.cmd;
        let out = self
            .blocking(move |i| Ok(i.runtime.get(&id)?.exec_sync(&cmd, timeout)?))
            .await?;
        Ok(ExecSyncResponse {
            stdout: out.stdout,
            stderr: out.stderr,
            exit_code: out.exit_code,
        })
    }

    /// CheckpointContainer: refused, before anything is touched, unless the container runs and
    /// CRIU works on this node; where CRIU's own check fails (CRIU 3.17 on Linux 6.13 and later)
    /// the answer is FailedPrecondition with CRIU's reason. The dump itself is not built yet.
    pub(crate) async fn checkpoint(
        &self,
        req: CheckpointContainerRequest,
    ) -> Result<CheckpointContainerResponse, Error> {
        let id = self.inner.resolve(&req.container_id)?;
        record_ids(&self.inner, &id);
        // The kubelet always names the archive, as an absolute path; the daemon's working
        // directory means nothing to a client.
        if req.location.is_empty() || !req.location.starts_with('/') {
            return Err(invalid(format!(
                "CheckpointContainer needs the archive's location as an absolute path, not {:?}",
                req.location
            )));
        }
        self.blocking(move |i| {
            if i.runtime.get(&id)?.status()?.state != State::Running {
                return Err(Error::FailedPrecondition(format!(
                    "container {id} is not running, so there is no process to checkpoint"
                )));
            }
            runtime::criu::usable()?;
            Err(Error::Unimplemented("CheckpointContainer's CRIU dump"))
        })
        .await
    }

    /// The pid of a running container (for the streaming server's exec/attach).
    /// The command for a streaming exec of `args` in a running container (see
    /// `Container::exec_command`).
    pub(crate) async fn exec_command(
        &self,
        container_id: &str,
        args: Vec<String>,
    ) -> Result<std::process::Command, Error> {
        let id = self.inner.resolve(container_id)?;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || -> Result<std::process::Command, Error> {
            Ok(inner.runtime.get(&id)?.exec_command(&args)?)
        })
        .await
        .map_err(|e| Error::Internal(format!("exec task: {e}")))?
    }

    /// As [`ContainerApi::exec_command`], with a new pty (see `Container::exec_command_tty`).
    pub(crate) async fn exec_command_tty(
        &self,
        container_id: &str,
        args: Vec<String>,
    ) -> Result<(std::process::Command, std::os::fd::OwnedFd), Error> {
        let id = self.inner.resolve(container_id)?;
        self.blocking(move |i| Ok(i.runtime.get(&id)?.exec_command_tty(&args)?))
            .await
    }

    /// Attach's check: the container runs and, when the client sends input, has a stdin.
    pub(crate) async fn check_attach(&self, container_id: &str, stdin: bool) -> Result<(), Error> {
        let id = self.inner.resolve(container_id)?;
        self.blocking(move |i| {
            let c = i.runtime.get(&id)?;
            if c.status()?.state != State::Running {
                return Err(Error::FailedPrecondition(format!(
                    "container {id} is not running"
                )));
            }
            if stdin && !c.config()?.process.stdin {
                return Err(invalid(format!(
                    "container {id} was not created with stdin, so it has no input to attach to"
                )));
            }
            Ok(())
        })
        .await
    }

    /// Connects to a running container's stdio through its monitor; returns the connection (see
    /// `carapace_runtime::attach`) and whether the container has a terminal.
    pub(crate) async fn attach(
        &self,
        container_id: &str,
        streams: carapace_runtime::attach::Streams,
    ) -> Result<(std::os::unix::net::UnixStream, bool), Error> {
        let id = self.inner.resolve(container_id)?;
        self.blocking(move |i| Ok(i.runtime.get(&id)?.attach(streams)?))
            .await
    }

    pub(crate) async fn pid(&self, container_id: &str) -> Result<i32, Error> {
        let id = self.inner.resolve(container_id)?;
        self.blocking(move |i| {
            let st = i.runtime.get(&id)?.status()?;
            match st.pid {
                Some(pid) if st.state == State::Running => Ok(pid),
                _ => Err(Error::FailedPrecondition(format!(
                    "container {id} is not running"
                ))),
            }
        })
        .await
    }
}

/// The glue to the other stores, so `runtime.rs` needs one call per RPC.
impl ContainerApi {
    /// CreateContainer end to end: resolves the sandbox (which must be ready) and the image,
    /// creates the container, then holds the image's snapshots for it.
    pub(crate) async fn create_from_stores(
        &self,
        req: CreateContainerRequest,
        images: &carapace_imageservice::Images,
        sandboxes: &carapace_podsandbox::Sandboxes,
    ) -> Result<CreateContainerResponse, Error> {
        if req.pod_sandbox_id.is_empty() {
            return Err(invalid("pod_sandbox_id is required"));
        }
        let sb_id = sandboxes.resolve(&req.pod_sandbox_id)?;
        tracing::Span::current().record("pod_id", sb_id.as_str());
        let sb = sandboxes
            .get(&sb_id)
            .ok_or_else(|| Error::NotFound(format!("sandbox {sb_id}")))?;
        if sb.state != carapace_podsandbox::SandboxState::Ready {
            return Err(Error::FailedPrecondition(format!(
                "sandbox {sb_id} is not ready: containers can only be created in a ready sandbox"
            )));
        }
        let spec = req.config.as_ref().and_then(|c| c.image.as_ref());
        let name = spec.map(|i| i.image.clone()).unwrap_or_default();
        let image_ref = spec.map(|i| i.image_ref.clone()).unwrap_or_default();
        if name.is_empty() && image_ref.is_empty() {
            return Err(invalid("the container config names no image"));
        }
        tracing::Span::current().record("image", name.as_str());
        let name = if name.is_empty() {
            image_ref.clone()
        } else {
            name
        };
        let img = find_image(images, &name, &image_ref)?
            .ok_or_else(|| Error::NotFound(format!("image {name:?}")))?;
        // The kubelet pulls an image volume's image before it creates the container and names
        // it by the ref PullImage answered; one not pulled is refused here, naming it.
        let mut volume_images = Vec::new();
        let mut volume_layers = VolumeLayers::new();
        for m in req.config.iter().flat_map(|c| &c.mounts) {
            let Some(spec) = volume_image(m) else {
                continue;
            };
            let named = if spec.image.is_empty() {
                &spec.image_ref
            } else {
                &spec.image
            };
            let vimg = find_image(images, named, &spec.image_ref)?.ok_or_else(|| {
                Error::NotFound(format!(
                    "image {named:?} of image volume {} (it must be pulled first)",
                    m.container_path
                ))
            })?;
            volume_layers.insert(m.container_path.clone(), images.lower_dirs(&vimg));
            volume_images.push(vimg);
        }
        let config = {
            let (images, img) = (images.clone(), img.clone());
            tokio::task::spawn_blocking(move || images.config(&img))
                .await
                .map_err(|e| Error::Internal(format!("image config task: {e}")))??
        };
        let info = ImageInfo::from_image(&img, &config, images.lower_dirs(&img), &name);
        let resp = self
            .create(req, SandboxInfo::from_sandbox(&sb), info, volume_layers)
            .await?;
        // After the create: a hold needs the id. A failed hold leaves a working container whose
        // layers a later image removal could collect, so it is loud but not fatal. Its image
        // volumes' images are held with its own: in use as long as the container exists.
        let held: Vec<&carapace_imageservice::Image> =
            std::iter::once(&img).chain(&volume_images).collect();
        if let Err(e) = images.hold(&resp.container_id, &held) {
            tracing::error!(container_id = %resp.container_id, error = %e, "holding the image's snapshots");
        }
        carapace_crashpoint::hit("images: hold recorded");
        Ok(resp)
    }

    /// RemoveContainer, then the container's image hold is released.
    pub(crate) async fn remove_releasing(
        &self,
        req: RemoveContainerRequest,
        images: &carapace_imageservice::Images,
    ) -> Result<RemoveContainerResponse, Error> {
        let id = self
            .inner
            .resolve(&req.container_id)
            .unwrap_or_else(|_| req.container_id.clone());
        let resp = self.remove(req).await?;
        carapace_crashpoint::hit("container: removed");
        if !id.is_empty() {
            images.release(&id).await?;
            carapace_crashpoint::hit("images: hold released");
        }
        Ok(resp)
    }

    /// Removes every container of a sandbox and releases their image holds
    /// (RemovePodSandbox calls this before removing the sandbox).
    pub(crate) async fn remove_sandbox_containers_releasing(
        &self,
        sandbox_id: &str,
        images: Option<&carapace_imageservice::Images>,
    ) -> Result<(), Error> {
        for id in self.remove_sandbox_containers(sandbox_id).await? {
            if let Some(images) = images {
                images.release(&id).await?;
            }
        }
        Ok(())
    }
}

/// The image `image_ref` names, else the one `name` names. `image_ref` is the id PullImage
/// answered: it names the image the kubelet pulled even where `name` is a tag since moved to
/// another image (or a name no longer held).
fn find_image(
    images: &carapace_imageservice::Images,
    name: &str,
    image_ref: &str,
) -> Result<Option<carapace_imageservice::Image>, Error> {
    if !image_ref.is_empty()
        && let Some(img) = images.status(image_ref)?
    {
        return Ok(Some(img));
    }
    if name.is_empty() {
        return Ok(None);
    }
    Ok(images.status(name)?)
}

/// Puts the container's and its pod's ids on the call's span.
pub(super) fn record_ids(inner: &Inner, id: &str) {
    let span = tracing::Span::current();
    span.record("container_id", id);
    if let Some(m) = inner.meta(id) {
        span.record("pod_id", m.sandbox_id.as_str());
    }
}

/// A monitor's resident memory (`VmRSS` of `/proc/<pid>/status`), open fds and CPU time;
/// `None` once it is gone.
fn monitor_usage(pid: i32) -> Option<carapace_metrics::MonitorUsage> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: i64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    let open_fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as i64);
    // schedstat's first field is the time on a CPU in nanoseconds: no clock-tick unit to know.
    let cpu_ns: u64 = std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    Some(carapace_metrics::MonitorUsage {
        pid,
        rss_bytes: kb * 1024,
        open_fds,
        cpu_seconds: cpu_ns as f64 / 1e9,
    })
}

/// `ContainerStatus.user`: what the kernel says the init has while it runs (the config may not
/// be what was applied), else what was resolved for it at create.
fn container_user(
    c: &runtime::container::Container,
    state: State,
    p: &rt::Process,
) -> LinuxContainerUser {
    let running = (state == State::Running).then(|| c.init_ids()).flatten();
    let (uid, gid, groups) = match running {
        Some(ids) => (ids.uid, ids.gid, ids.groups),
        None => (p.uid, p.gid, p.additional_gids.clone()),
    };
    LinuxContainerUser {
        uid: uid.into(),
        gid: gid.into(),
        supplemental_groups: groups.into_iter().map(i64::from).collect(),
    }
}

pub(super) fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn id_mappings(m: Option<&Vec<carapace_runtime::config::IdMap>>) -> Vec<IdMapping> {
    m.into_iter()
        .flatten()
        .map(|m| IdMapping {
            host_id: m.host_id,
            container_id: m.container_id,
            length: m.length,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::fixtures::*;

    fn create_request(sandbox_id: &str) -> CreateContainerRequest {
        CreateContainerRequest {
            pod_sandbox_id: sandbox_id.into(),
            config: Some(cri_config()),
            sandbox_config: None,
        }
    }

    #[tokio::test]
    async fn create_retried_with_the_same_name_returns_the_first_container() {
        let t = tempfile::tempdir().unwrap();
        let api = api(&t);
        let sb = sandbox();
        let name = container_name(
            &ContainerMetadata {
                name: "app".into(),
                attempt: 2,
            },
            &sb,
        );
        insert(&api, meta("first", &sb.id, &name, &[]));
        let r = api
            .create(
                create_request(&sb.id),
                sb.clone(),
                image(&["sh"], &[]),
                VolumeLayers::new(),
            )
            .await
            .unwrap();
        assert_eq!(r.container_id, "first");

        // The same name in another sandbox is a conflict, not a retry.
        let mut other = sb.clone();
        other.id = "sb-other".into();
        let e = api
            .create(
                create_request(&other.id),
                other,
                image(&["sh"], &[]),
                VolumeLayers::new(),
            )
            .await
            .unwrap_err();
        assert!(matches!(e, Error::AlreadyExists(_)), "{e}");
    }

    #[tokio::test]
    async fn a_retry_waits_for_the_create_in_flight() {
        let t = tempfile::tempdir().unwrap();
        let api = api(&t);
        let sb = sandbox();
        let md = ContainerMetadata {
            name: "app".into(),
            attempt: 2,
        };
        let name = container_name(&md, &sb);
        let (tx, rx) = watch::channel(());
        api.inner.table().creating.insert(name.clone(), rx);
        let retry = {
            let api = api.clone();
            let sb = sb.clone();
            tokio::spawn(async move {
                api.create(
                    create_request(&sb.id),
                    sb,
                    image(&["sh"], &[]),
                    VolumeLayers::new(),
                )
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!retry.is_finished());
        // The first call finishes.
        insert(&api, meta("first", &sb.id, &name, &[]));
        api.inner.table().creating.remove(&name);
        drop(tx);
        assert_eq!(retry.await.unwrap().unwrap().container_id, "first");
    }

    #[tokio::test]
    async fn a_failed_create_frees_the_name() {
        let t = tempfile::tempdir().unwrap();
        let api = api(&t);
        let sb = sandbox();
        // No lower dirs and no command: the mapping refuses it.
        let e = api
            .create(
                create_request(&sb.id),
                sb.clone(),
                image(&[], &[]),
                VolumeLayers::new(),
            )
            .await
            .unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
        let tbl = api.inner.table();
        assert!(tbl.creating.is_empty() && tbl.names.is_empty() && tbl.containers.is_empty());
    }

    #[tokio::test]
    async fn stop_and_remove_of_unknown_ids_succeed() {
        let t = tempfile::tempdir().unwrap();
        let api = api(&t);
        api.stop(StopContainerRequest {
            container_id: "nope".into(),
            timeout: 1,
        })
        .await
        .unwrap();
        api.remove(RemoveContainerRequest {
            container_id: "nope".into(),
        })
        .await
        .unwrap();
        let e = api
            .status(ContainerStatusRequest {
                container_id: "nope".into(),
                verbose: false,
            })
            .await
            .unwrap_err();
        assert!(matches!(e, Error::NotFound(_)), "{e}");
    }

    #[tokio::test]
    async fn remove_forgets_a_container_the_runtime_lost() {
        let t = tempfile::tempdir().unwrap();
        let api = api(&t);
        insert(&api, meta("gone", "sb", "gone_n", &[]));
        api.remove(RemoveContainerRequest {
            container_id: "gone".into(),
        })
        .await
        .unwrap();
        assert!(api.inner.table().containers.is_empty());
        assert!(api.inner.table().names.is_empty());
    }

    #[tokio::test]
    async fn list_applies_every_filter_and_unknown_state() {
        let t = tempfile::tempdir().unwrap();
        let api = api(&t);
        insert(&api, meta("aaa1", "sb1", "a", &[("app", "web")]));
        insert(&api, meta("aaa2", "sb2", "b", &[("app", "db")]));
        insert(&api, meta("bbb3", "sb1", "c", &[("app", "web")]));
        let list = |filter: ContainerFilter| {
            let api = api.clone();
            async move {
                let mut ids: Vec<String> = api
                    .list(ListContainersRequest {
                        filter: Some(filter),
                    })
                    .await
                    .unwrap()
                    .containers
                    .into_iter()
                    .map(|c| c.id)
                    .collect();
                ids.sort();
                ids
            }
        };
        assert_eq!(
            list(ContainerFilter::default()).await,
            ["aaa1", "aaa2", "bbb3"]
        );
        assert_eq!(
            list(ContainerFilter {
                id: "aaa".into(),
                ..Default::default()
            })
            .await,
            ["aaa1", "aaa2"]
        );
        assert_eq!(
            list(ContainerFilter {
                pod_sandbox_id: "sb1".into(),
                label_selector: [("app".to_owned(), "web".to_owned())].into(),
                ..Default::default()
            })
            .await,
            ["aaa1", "bbb3"]
        );
        // The runtime has none of them: their state is unknown, never running.
        let state = |s: ContainerState| ContainerFilter {
            state: Some(ContainerStateValue { state: s as i32 }),
            ..Default::default()
        };
        assert!(
            list(state(ContainerState::ContainerRunning))
                .await
                .is_empty()
        );
        assert_eq!(list(state(ContainerState::ContainerUnknown)).await.len(), 3);
        assert_eq!(api.ids_in_sandbox("sb1").len(), 2);
    }
}
