//! The sandboxes of a node: run, stop, remove, look up and list, with state persisted under
//! `<state>/sandboxes/<id>/sandbox.json` and reloaded at start.
//!
//! The state dir is a tmpfs on a node, emptied by a reboot that leaves the root dir, and with it
//! the IPAM leases the pods' CNI ADDs took. So each pod also has a record under
//! `<root>/sandboxes/<id>.json`, written durably before its network is attached, and the CNI
//! cache lives under `<root>/cni`. A pod whose record outlived its state comes back NOTREADY
//! (the kubelet stops and removes it, then runs the pod again), and its stop runs the CNI DEL
//! of the cached ADD without a network namespace, as the CNI spec allows and containerd does
//! for a closed one. Nothing runs at start: the DEL waits for the kubelet's stop.
//!
//! A run records every step in the sandbox's state *before* taking it, so one teardown routine
//! serves as the undo of a failed run, as Stop and Remove, and after a crash: it undoes exactly
//! what the record says may exist, and tolerates what is already gone.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use carapace_cni::{Attachment, Bandwidth, Capabilities, Cni, DnsCapability};
use serde::{Deserialize, Serialize};

use crate::cgroup::{self, CgroupDriver, CgroupLayout, PodCgroup};
use crate::infra::{InfraCommand, InfraProcess};
use crate::kernel::{Kernel, NamespaceRequest, UserRequest};
use crate::records::RecordWriter;
use crate::{Error, NamespaceMode, PodResources, SandboxConfig, files, sysctl};

/// The size of a pod's `/dev/shm`, as Docker and containerd default it.
pub const DEFAULT_SHM_SIZE: u64 = 64 << 20;
/// The interface name of the pod network inside the pod.
pub const POD_IFNAME: &str = "eth0";

/// Where and how sandboxes are made.
#[derive(Debug, Clone)]
pub struct Options {
    /// The daemon's state dir; sandboxes live in `<state_dir>/sandboxes`.
    pub state_dir: PathBuf,
    /// The daemon's root dir, which a reboot keeps: the pods' records (`<root>/sandboxes`) and the
    /// CNI cache (`<root>/cni`). `None` keeps the CNI cache under the state dir and no record,
    /// so a reboot forgets the pods.
    pub root_dir: Option<PathBuf>,
    pub cni_conf_dir: PathBuf,
    pub cni_bin_dirs: Vec<PathBuf>,
    pub cni_timeout: Duration,
    pub cgroup_driver: CgroupDriver,
    /// Normally `/sys/fs/cgroup`.
    pub cgroup_root: PathBuf,
    /// How to start the infra process of a pod with a shared PID namespace.
    pub infra: Option<InfraCommand>,
    pub host_resolv_conf: PathBuf,
    pub host_hosts: PathBuf,
    pub shm_size: u64,
    /// Told how long each CNI ADD and DEL took (for the daemon's latency histogram).
    pub cni_observer: Option<CniObserver>,
}

/// Which CNI operation a [`CniObserver`] is told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CniOp {
    Add,
    Del,
}

/// A callback told each CNI operation's kind, success and duration.
#[derive(Clone)]
pub struct CniObserver(pub Arc<dyn Fn(CniOp, bool, Duration) + Send + Sync>);

impl std::fmt::Debug for CniObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CniObserver")
    }
}

impl Options {
    pub fn new(
        state_dir: impl Into<PathBuf>,
        cni_conf_dir: impl Into<PathBuf>,
        cni_bin_dirs: Vec<PathBuf>,
    ) -> Self {
        Self {
            state_dir: state_dir.into(),
            root_dir: None,
            cni_conf_dir: cni_conf_dir.into(),
            cni_bin_dirs,
            cni_timeout: carapace_cni::DEFAULT_TIMEOUT,
            cgroup_driver: CgroupDriver::Cgroupfs,
            cgroup_root: "/sys/fs/cgroup".into(),
            infra: None,
            host_resolv_conf: "/etc/resolv.conf".into(),
            host_hosts: "/etc/hosts".into(),
            shm_size: DEFAULT_SHM_SIZE,
            cni_observer: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxState {
    /// Being made (only ever seen on disk, after a crash mid-run).
    Creating,
    Ready,
    NotReady,
}

/// The pinned namespaces of a pod; `None` where it uses the host's (or a container's own).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespacePaths {
    pub net: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
    pub pid: Option<PathBuf>,
    /// The pod's own user namespace, which owns its net, IPC and UTS namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<PathBuf>,
}

/// A sandbox, as persisted and as the CRI layer reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sandbox {
    pub id: String,
    pub config: SandboxConfig,
    pub state: SandboxState,
    /// Nanoseconds since the epoch.
    pub created_at: i64,
    /// The pod IPs, primary first; empty with host network.
    pub ips: Vec<IpAddr>,
    /// The CNI network this sandbox is (or may be partly) attached to.
    pub network: Option<String>,
    pub namespaces: NamespacePaths,
    pub infra: Option<InfraProcess>,
    pub cgroup: Option<PodCgroup>,
    pub dir: PathBuf,
    pub hostname: String,
    pub hostname_path: PathBuf,
    pub hosts_path: PathBuf,
    pub resolv_conf_path: PathBuf,
    /// The pod's `/dev/shm` tmpfs; `None` with host IPC.
    pub shm: Option<PathBuf>,
    /// Brought back from its record under the root dir after a reboot emptied the state dir:
    /// its namespaces, mounts and processes are gone, and its containers' cgroups, if the
    /// kernel kept them, are empty and unknown to anyone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recovered: bool,
    /// Its run was cut short by the daemon's death: what the run made after its last record
    /// (an infra process started, not yet recorded) is looked for at its teardown.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
}

impl Sandbox {
    pub fn name(&self) -> String {
        self.config.metadata.sandbox_name()
    }
}

/// The sandboxes by id, changed only through `insert`, `remove` and `values_mut`, which count
/// the changes (readers get the map through `Deref`, which gives no way to change it).
#[derive(Default)]
struct Records {
    by_id: HashMap<String, Sandbox>,
    changes: u64,
}

impl Records {
    fn insert(&mut self, sb: Sandbox) {
        self.changes += 1;
        self.by_id.insert(sb.id.clone(), sb);
    }

    fn remove(&mut self, id: &str) {
        self.changes += 1;
        self.by_id.remove(id);
    }

    fn values_mut(&mut self) -> impl Iterator<Item = &mut Sandbox> {
        self.changes += 1;
        self.by_id.values_mut()
    }
}

impl std::ops::Deref for Records {
    type Target = HashMap<String, Sandbox>;

    fn deref(&self) -> &Self::Target {
        &self.by_id
    }
}

#[derive(Default)]
struct Table {
    sandboxes: Records,
    /// Names of runs in flight: a second run with the same name waits for the first.
    creating: HashSet<String>,
    /// Ids with a stop or remove in flight.
    busy: HashSet<String>,
}

/// The node's sandboxes. Calls block (namespaces, CNI plugins): call them off the async runtime.
#[derive(Debug)]
pub struct Sandboxes {
    opts: Options,
    root: PathBuf,
    /// `<root_dir>/sandboxes`: the records a reboot keeps.
    records: Option<PathBuf>,
    record_writer: RecordWriter,
    kernel: Arc<dyn Kernel>,
    cni: Cni,
    cgroups: CgroupLayout,
    table: Mutex<Table>,
    changed: Condvar,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("sandboxes", &self.sandboxes.len())
            .finish()
    }
}

/// Releases a name or id reservation when dropped, whatever path the call took.
struct Reservation<'a> {
    owner: &'a Sandboxes,
    key: String,
    name: bool,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut t = self.owner.lock();
        if self.name {
            t.creating.remove(&self.key);
        } else {
            t.busy.remove(&self.key);
        }
        self.owner.changed.notify_all();
    }
}

impl Sandboxes {
    /// Opens the sandbox store, reloading every sandbox persisted under the state dir. A sandbox
    /// found half-made (the daemon died in its run) is NOTREADY, for the kubelet to remove.
    pub fn open(opts: Options, kernel: Arc<dyn Kernel>) -> Result<Self, Error> {
        let root = opts.state_dir.join("sandboxes");
        std::fs::create_dir_all(&root).map_err(|source| Error::Io {
            path: root.clone(),
            source,
        })?;
        let records = opts.root_dir.as_ref().map(|r| r.join("sandboxes"));
        if let Some(dir) = &records {
            std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                path: dir.clone(),
                source,
            })?;
            // A record write the daemon died in before its rename left a temp file named for
            // that daemon's pid, which no later write reuses. The writer starts after this.
            carapace_cni::remove_stale_temps(dir);
        }
        let cni_cache = match &opts.root_dir {
            Some(r) => {
                let cache = r.join("cni");
                move_cni_cache(&opts.state_dir.join("cni"), &cache);
                cache
            }
            None => opts.state_dir.join("cni"),
        };
        // The same for an ADD result the daemon died caching (no CNI call runs yet).
        carapace_cni::remove_stale_temps(&cni_cache.join("results"));
        let cni = Cni::new(opts.cni_bin_dirs.clone(), &cni_cache).with_timeout(opts.cni_timeout);
        let mut table = Table::default();
        let entries = std::fs::read_dir(&root).map_err(|source| Error::Io {
            path: root.clone(),
            source,
        })?;
        for entry in entries.flatten() {
            // A state write the daemon died in before its rename left its temp file; nothing
            // writes yet, so every one found is stale. The state it was to replace (if any) is
            // the one kept, and a dir that has none must be empty to go (below).
            remove_state_temp(&entry.path());
            let path = entry.path().join("sandbox.json");
            match load(&path) {
                Ok(mut sb) => {
                    if sb.state == SandboxState::Creating {
                        sb.state = SandboxState::NotReady;
                        sb.interrupted = true;
                    }
                    table.sandboxes.insert(sb);
                }
                Err(e) => {
                    // A directory without state is one the daemon died in before anything was
                    // made (the state is written before every step): empty once its temp file
                    // is gone (above), removed.
                    tracing::warn!(error = %e, "skipping sandbox state");
                    let _ = std::fs::remove_dir(entry.path());
                }
            }
        }
        if let Some(dir) = &records {
            recover(dir, &root, &mut table)?;
        }
        tracing::info!(sandboxes = table.sandboxes.len(), "sandbox state loaded");
        let this = Self {
            cgroups: CgroupLayout::detect(&opts.cgroup_root),
            root,
            records,
            record_writer: RecordWriter::default(),
            kernel,
            cni,
            opts,
            table: Mutex::new(table),
            changed: Condvar::new(),
        };
        // Pods a daemon without records ran (an upgrade): recorded now, so a reboot finds them.
        if let Some(dir) = &this.records {
            for sb in this.list() {
                if !dir.join(format!("{}.json", sb.id)).exists()
                    && let Err(e) = this.record(&sb)
                {
                    tracing::warn!(pod_id = %sb.id, error = %e, "writing the pod's record under the root dir");
                }
            }
        }
        Ok(this)
    }

    fn observe_cni(&self, op: CniOp, ok: bool, started: std::time::Instant) {
        if let Some(o) = &self.opts.cni_observer {
            (o.0)(op, ok, started.elapsed());
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The pod network as the CNI configuration dir has it now.
    pub fn network_status(&self) -> Result<carapace_cni::Network, carapace_cni::Error> {
        carapace_cni::load_network(&self.opts.cni_conf_dir)
    }

    /// Runs a sandbox and returns its id. The same metadata again (a kubelet retry) returns the
    /// ready sandbox it made, waiting for it if that run is still in flight; a NOTREADY one of
    /// the same name is removed first, so a name is never reserved forever.
    pub fn run(&self, config: SandboxConfig) -> Result<String, Error> {
        let plan = self.plan(&config)?;
        let name = config.metadata.sandbox_name();
        let stale = {
            let mut t = self.lock();
            while t.creating.contains(&name) {
                t = self.changed.wait(t).unwrap_or_else(|e| e.into_inner());
            }
            let existing = t.sandboxes.values().find(|s| s.name() == name);
            if let Some(s) = existing.filter(|s| s.state == SandboxState::Ready) {
                return Ok(s.id.clone());
            }
            let stale = existing.map(|s| s.id.clone());
            t.creating.insert(name.clone());
            stale
        };
        let _reservation = Reservation {
            owner: self,
            key: name,
            name: true,
        };
        if let Some(id) = stale {
            tracing::info!(pod_id = %id, "removing a NOTREADY sandbox of the same name before a new run");
            self.remove(&id)?;
        }
        let id = new_id();
        let dir = self.root.join(&id);
        let mut sb = Sandbox {
            id: id.clone(),
            state: SandboxState::Creating,
            created_at: now_nanos(),
            ips: Vec::new(),
            network: None,
            namespaces: NamespacePaths::default(),
            infra: None,
            cgroup: None,
            hostname: String::new(),
            hostname_path: dir.join("hostname"),
            hosts_path: dir.join("hosts"),
            resolv_conf_path: dir.join("resolv.conf"),
            shm: None,
            recovered: false,
            interrupted: false,
            dir,
            config,
        };
        std::fs::create_dir(&sb.dir).map_err(|source| Error::Io {
            path: sb.dir.clone(),
            source,
        })?;
        carapace_crashpoint::hit("sandbox: dir made");
        let made = self.persist(&sb).and_then(|()| self.make(&mut sb, &plan));
        if let Err(e) = made {
            tracing::warn!(pod_id = %id, error = %e, "sandbox run failed; undoing it");
            match self.teardown(&mut sb) {
                Ok(()) => {
                    let _ = std::fs::remove_dir_all(&sb.dir);
                    if let Err(e) = self.forget_record(&id) {
                        tracing::warn!(pod_id = %id, error = %e, "removing the pod's record");
                    }
                }
                Err(undo) => {
                    tracing::error!(pod_id = %id, error = %undo, "undo incomplete; sandbox kept as NOTREADY");
                    sb.state = SandboxState::NotReady;
                    let _ = self.persist(&sb);
                    self.lock().sandboxes.insert(sb);
                }
            }
            return Err(e);
        }
        sb.state = SandboxState::Ready;
        // A pod with a network was recorded before its ADD, with all a reboot leaves of it to
        // undo; one without is recorded now (its cgroup). One durable write per run, not two.
        if sb.network.is_none() {
            self.persist_and_record(&sb)?;
        } else {
            self.persist(&sb)?;
        }
        carapace_crashpoint::hit("sandbox: ready state written");
        tracing::info!(pod_id = %id, ips = ?sb.ips, "sandbox ready");
        self.lock().sandboxes.insert(sb);
        Ok(id)
    }

    /// Everything checked before anything is made.
    fn plan(&self, config: &SandboxConfig) -> Result<Plan, Error> {
        let m = &config.metadata;
        if m.name.is_empty() || m.namespace.is_empty() || m.uid.is_empty() {
            return Err(Error::InvalidConfig(
                "metadata needs name, namespace and uid".into(),
            ));
        }
        let bad_arg = |s: &str| s.contains([';', '=', '\0', '\n', '/']);
        if bad_arg(&m.name) || bad_arg(&m.namespace) || bad_arg(&m.uid) {
            return Err(Error::InvalidConfig(
                "metadata holds a forbidden character".into(),
            ));
        }
        if !config.hostname.is_empty() {
            files::validate_hostname(&config.hostname)?;
        }
        if let Some(dns) = &config.dns {
            files::validate_dns(dns)?;
        }
        for p in &config.port_mappings {
            if !matches!(p.protocol.as_str(), "tcp" | "udp" | "sctp") {
                return Err(Error::InvalidConfig(format!(
                    "port mapping protocol {:?}",
                    p.protocol
                )));
            }
        }
        let ns = config.namespaces;
        if ns.pid == NamespaceMode::Pod && self.opts.infra.is_none() {
            return Err(Error::NoInfraProgram);
        }
        if let Some(u) = &config.userns {
            validate_userns(u, ns)?;
            if self.opts.infra.is_none() {
                return Err(Error::NoInfraProgram);
            }
        }
        let sysctls = sysctl::validate(&config.sysctls, ns.host_network(), ns.host_ipc())?;
        let cgroup = if config.cgroup_parent.is_empty() {
            None
        } else {
            Some(cgroup::expand(
                self.opts.cgroup_driver,
                &config.cgroup_parent,
            )?)
        };
        let bandwidth = bandwidth(&config.annotations)?;
        Ok(Plan {
            sysctls,
            cgroup,
            bandwidth,
        })
    }

    /// The steps of a run; each is recorded in `sb` (and on disk) before it is taken.
    fn make(&self, sb: &mut Sandbox, plan: &Plan) -> Result<(), Error> {
        carapace_crashpoint::hit("sandbox: state written");
        let ns = sb.config.namespaces;
        let kernel_err = |op, path: &Path| {
            let path = path.to_owned();
            move |source| Error::Kernel { op, path, source }
        };
        if let Some(rel) = &plan.cgroup {
            // Recorded as an intent before any is made, then as made: the teardown of a run the
            // daemon died in removes what the intent names and is there (a crash between a
            // mkdir and its record once left the pod's cgroup behind).
            let intent = cgroup::missing(&self.cgroups, rel);
            sb.cgroup = Some(PodCgroup {
                path: rel.clone(),
                created: intent.clone(),
            });
            if !intent.is_empty() {
                self.persist(sb)?;
                carapace_crashpoint::hit("sandbox: pod cgroup intent recorded");
            }
            let mut made = Vec::new();
            let created = cgroup::create(&self.cgroups, rel, &mut made);
            let changed = made != intent;
            if let Some(cg) = &mut sb.cgroup {
                cg.created = made;
            }
            if changed {
                self.persist(sb)?;
                carapace_crashpoint::hit("sandbox: pod cgroup recorded");
            }
            created?;
            if !sb.config.resources.is_empty() {
                cgroup::apply(&self.cgroups, rel, &sb.config.resources)?;
                carapace_crashpoint::hit("sandbox: pod cgroup limits written");
            }
        }
        sb.hostname = if sb.config.hostname.is_empty() || ns.host_network() {
            self.kernel
                .hostname()
                .map_err(kernel_err("gethostname", Path::new("")))?
        } else {
            sb.config.hostname.clone()
        };
        let ns_dir = sb.dir.join("ns");
        std::fs::create_dir(&ns_dir).map_err(|source| Error::Io {
            path: ns_dir.clone(),
            source,
        })?;
        carapace_crashpoint::hit("sandbox: ns dir made");
        let own_net = !ns.host_network();
        sb.namespaces = NamespacePaths {
            net: own_net.then(|| ns_dir.join("net")),
            // The UTS namespace follows the network's, as in Kubernetes.
            uts: own_net.then(|| ns_dir.join("uts")),
            ipc: (!ns.host_ipc()).then(|| ns_dir.join("ipc")),
            pid: (ns.pid == NamespaceMode::Pod).then(|| ns_dir.join("pid")),
            user: sb.config.userns.is_some().then(|| ns_dir.join("user")),
        };
        self.persist(sb)?;
        carapace_crashpoint::hit("sandbox: namespaces recorded");
        let req = NamespaceRequest {
            net: sb.namespaces.net.clone(),
            ipc: sb.namespaces.ipc.clone(),
            uts: sb.namespaces.uts.clone(),
            hostname: own_net.then(|| sb.hostname.clone()),
            sysctls: plan.sysctls.clone(),
            user: match (&sb.namespaces.user, &sb.config.userns, &self.opts.infra) {
                (Some(pin), Some(userns), Some(helper)) => Some(UserRequest {
                    pin: pin.clone(),
                    userns: userns.clone(),
                    helper: helper.clone(),
                }),
                _ => None,
            },
        };
        self.kernel.create_namespaces(&req).map_err(|e| {
            // A sysctl the pod's user namespace may not set: the request's fault, said as such.
            let text = e.to_string();
            let refused = text.split_once(": ").filter(|(key, _)| {
                req.user.is_some()
                    && e.kind() == io::ErrorKind::InvalidInput
                    && req
                        .sysctls
                        .iter()
                        .any(|s| s.path.to_string_lossy().replace('/', ".") == *key)
            });
            match refused {
                Some((key, reason)) => Error::InvalidSysctl {
                    key: key.to_owned(),
                    reason: format!("cannot be set in the pod's user namespace: {reason}"),
                },
                None => kernel_err("creating namespaces in", &ns_dir)(e),
            }
        })?;
        if let (Some(pin), Some(cmd)) = (&sb.namespaces.pid, &self.opts.infra) {
            let infra = self
                .kernel
                .start_infra(cmd, pin)
                .map_err(kernel_err("starting the infra process for", pin))?;
            carapace_crashpoint::hit("sandbox: infra process started");
            sb.infra = Some(infra);
            self.persist(sb)?;
            carapace_crashpoint::hit("sandbox: infra process recorded");
        }
        if !ns.host_ipc() {
            let shm = sb.dir.join("shm");
            sb.shm = Some(shm.clone());
            self.persist(sb)?;
            carapace_crashpoint::hit("sandbox: shm recorded");
            self.kernel
                .mount_shm(&shm, self.opts.shm_size)
                .map_err(kernel_err("mounting /dev/shm at", &shm))?;
            carapace_crashpoint::hit("sandbox: shm mounted");
        }
        if own_net {
            let network = carapace_cni::load_network(&self.opts.cni_conf_dir)
                .map_err(Error::NetworkNotReady)?;
            sb.network = Some(network.name().to_owned());
            // Recorded before ADD takes a lease: a reboot from here on finds the pod to DEL.
            self.persist_and_record(sb)?;
            carapace_crashpoint::hit("sandbox: network recorded");
            let started = std::time::Instant::now();
            let result = self
                .cni
                .add(&network, &self.attachment(sb, plan.bandwidth.clone()));
            self.observe_cni(CniOp::Add, result.is_ok(), started);
            let result = result.map_err(Error::Network)?;
            sb.ips = result.addresses();
            carapace_crashpoint::hit("sandbox: network attached");
        }
        self.write_files(sb)?;
        if let Some(logs) = &sb.config.log_directory {
            std::fs::create_dir_all(logs).map_err(|source| Error::Io {
                path: logs.clone(),
                source,
            })?;
        }
        Ok(())
    }

    fn write_files(&self, sb: &Sandbox) -> Result<(), Error> {
        let host_net = sb.config.namespaces.host_network();
        let copy_host = |p: &Path| {
            std::fs::read_to_string(p).map_err(|source| Error::Io {
                path: p.to_owned(),
                source,
            })
        };
        let hosts = if host_net {
            copy_host(&self.opts.host_hosts)?
        } else {
            files::hosts_file(&sb.hostname, &sb.ips)
        };
        let resolv = match &sb.config.dns {
            Some(dns)
                if !(dns.servers.is_empty()
                    && dns.searches.is_empty()
                    && dns.options.is_empty()) =>
            {
                files::resolv_conf(dns)
            }
            _ => copy_host(&self.opts.host_resolv_conf)?,
        };
        for (path, text) in [
            (&sb.hostname_path, files::hostname_file(&sb.hostname)),
            (&sb.hosts_path, hosts),
            (&sb.resolv_conf_path, resolv),
        ] {
            std::fs::write(path, text).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            carapace_crashpoint::hit_in(
                "sandbox: file written",
                &path.file_name().unwrap_or_default().to_string_lossy(),
            );
        }
        Ok(())
    }

    fn attachment(&self, sb: &Sandbox, bandwidth: Option<Bandwidth>) -> Attachment {
        let m = &sb.config.metadata;
        Attachment {
            container_id: sb.id.clone(),
            netns: sb.namespaces.net.clone().unwrap_or_default(),
            ifname: POD_IFNAME.into(),
            args: vec![
                ("K8S_POD_NAMESPACE".into(), m.namespace.clone()),
                ("K8S_POD_NAME".into(), m.name.clone()),
                ("K8S_POD_INFRA_CONTAINER_ID".into(), sb.id.clone()),
                ("K8S_POD_UID".into(), m.uid.clone()),
            ],
            capabilities: Capabilities {
                port_mappings: sb
                    .config
                    .port_mappings
                    .iter()
                    .filter(|p| p.host_port > 0)
                    .map(|p| carapace_cni::PortMapping {
                        host_port: p.host_port,
                        container_port: p.container_port,
                        protocol: p.protocol.clone(),
                        host_ip: p.host_ip.clone(),
                    })
                    .collect(),
                dns: sb.config.dns.as_ref().map(|d| DnsCapability {
                    servers: d.servers.clone(),
                    searches: d.searches.clone(),
                    options: d.options.clone(),
                }),
                bandwidth,
                cgroup_path: (!sb.config.cgroup_parent.is_empty())
                    .then(|| sb.config.cgroup_parent.clone()),
                ..Default::default()
            },
        }
    }

    /// The stop half of a teardown: the infra process and the network attachment.
    fn stop_parts(&self, sb: &mut Sandbox, errors: &mut Vec<String>) {
        // A run the daemon died in between the infra process's start and its record: the PID
        // namespace's pin, recorded before the start, leads to it.
        let unrecorded = match (sb.infra, &sb.namespaces.pid) {
            (None, Some(pin)) if sb.interrupted => self.kernel.find_infra(pin),
            _ => None,
        };
        if let Some(infra) = sb.infra.or(unrecorded) {
            match self.kernel.stop_infra(&infra) {
                Ok(()) => {
                    carapace_crashpoint::hit("sandbox: infra process stopped");
                    sb.infra = None;
                }
                Err(e) => errors.push(format!("stopping the infra process {}: {e}", infra.pid)),
            }
        }
        if let Some(name) = sb.network.clone() {
            let bandwidth = bandwidth(&sb.config.annotations).ok().flatten();
            let att = self.attachment(sb, bandwidth);
            // Without a cached ADD (it failed half-way), the current configuration of that name.
            let fallback = carapace_cni::load_network(&self.opts.cni_conf_dir).ok();
            let started = std::time::Instant::now();
            let result = self.cni.del(&name, &att, fallback.as_ref());
            self.observe_cni(CniOp::Del, result.is_ok(), started);
            match result {
                Ok(()) => sb.network = None,
                // A plugin that is not installed can run no DEL now nor ever: insisting would
                // keep the pod for ever. Its pod-side interfaces go with the namespace; what it
                // may have left on the host (an IPAM lease) is logged for the operator.
                Err(carapace_cni::Error::PluginNotFound { plugin, dirs }) => {
                    tracing::warn!(
                        sandbox = %sb.id,
                        network = %name,
                        %plugin,
                        ?dirs,
                        "CNI DEL skipped: plugin not installed; host-side state it made, if any, stays"
                    );
                    sb.network = None;
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
    }

    /// The rest: namespaces, `/dev/shm`, the cgroup dirs we made.
    fn remove_parts(&self, sb: &mut Sandbox, errors: &mut Vec<String>) {
        let unpin = |p: &mut Option<PathBuf>, errors: &mut Vec<String>| {
            if let Some(path) = p {
                match self.kernel.unpin(path) {
                    Ok(()) => {
                        carapace_crashpoint::hit("sandbox: unpinned");
                        *p = None;
                    }
                    Err(e) => errors.push(format!("unpinning {}: {e}", path.display())),
                }
            }
        };
        let ns = &mut sb.namespaces;
        for p in [
            &mut ns.net,
            &mut ns.ipc,
            &mut ns.uts,
            &mut ns.pid,
            &mut ns.user,
            &mut sb.shm,
        ] {
            unpin(p, errors);
        }
        if let Some(cg) = &mut sb.cgroup {
            if sb.recovered {
                // The cgroups of its containers, whose records the reboot took: empty, in the
                // way of the pod's own.
                for dir in self.cgroups.dirs(&cg.path) {
                    if let Err(e) = self.remove_cgroups_below(&dir) {
                        errors.push(format!("removing cgroups below {}: {e}", dir.display()));
                    }
                }
            }
            while let Some(dir) = cg.created.last() {
                match self.kernel.remove_cgroup(dir) {
                    Ok(()) => {
                        carapace_crashpoint::hit("sandbox: pod cgroup dir removed");
                        cg.created.pop();
                    }
                    // A parent (`kubepods/besteffort`) this pod's run made and pods run since sit
                    // in: one of them removes it when it goes.
                    Err(e)
                        if !dir.ends_with(&cg.path)
                            && matches!(
                                e.kind(),
                                io::ErrorKind::ResourceBusy | io::ErrorKind::DirectoryNotEmpty
                            ) =>
                    {
                        self.hand_over(&sb.id, dir);
                        cg.created.pop();
                    }
                    Err(e) => {
                        errors.push(format!("removing cgroup {}: {e}", dir.display()));
                        break;
                    }
                }
            }
            if cg.created.is_empty() {
                sb.cgroup = None;
            }
        }
    }

    /// Removes every cgroup below `dir`, deepest first; a missing `dir` is fine.
    fn remove_cgroups_below(&self, dir: &Path) -> io::Result<()> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                self.remove_cgroups_below(&entry.path())?;
                self.kernel.remove_cgroup(&entry.path())?;
            }
        }
        Ok(())
    }

    /// Gives a parent cgroup the pod `from` made, and other pods sit in, to one of those pods (the
    /// first found that no stop or remove is changing): its removal removes the parent after its
    /// own cgroups, or hands it on again. With no such pod (one still being made), the parent
    /// stays, as the kubelet's own do.
    fn hand_over(&self, from: &str, parent: &Path) {
        let mut t = self.lock();
        let Table {
            sandboxes, busy, ..
        } = &mut *t;
        let heir = sandboxes.values_mut().find(|s| {
            s.id != from
                && !busy.contains(&s.id)
                && s.cgroup.as_ref().is_some_and(|cg| {
                    self.cgroups
                        .dirs(&cg.path)
                        .iter()
                        .any(|d| d != parent && d.starts_with(parent))
                })
        });
        let Some(heir) = heir else {
            return;
        };
        if let Some(cg) = &mut heir.cgroup {
            // First in the list: removed last, after everything below it.
            cg.created.insert(0, parent.to_owned());
        }
        if let Err(e) = self.persist(heir) {
            tracing::warn!(pod_id = %heir.id, error = %e, "recording a handed-over parent cgroup");
        }
    }

    fn teardown(&self, sb: &mut Sandbox) -> Result<(), Error> {
        let mut errors = Vec::new();
        self.stop_parts(sb, &mut errors);
        self.remove_parts(sb, &mut errors);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Error::Teardown {
                id: sb.id.clone(),
                errors: errors.join("; "),
            })
        }
    }

    /// Resolves a full id or a unique prefix of one.
    pub fn resolve(&self, id: &str) -> Result<String, Error> {
        let t = self.lock();
        if t.sandboxes.contains_key(id) {
            return Ok(id.to_owned());
        }
        let mut matches = t
            .sandboxes
            .keys()
            .filter(|k| !id.is_empty() && k.starts_with(id));
        match (matches.next(), matches.next()) {
            (Some(k), None) => Ok(k.clone()),
            (Some(_), Some(_)) => Err(Error::Ambiguous(id.to_owned())),
            _ => Err(Error::NotFound(id.to_owned())),
        }
    }

    /// Waits until no stop or remove of `id` is in flight and reserves it.
    fn reserve(&self, id: &str) -> Reservation<'_> {
        let mut t = self.lock();
        while t.busy.contains(id) {
            t = self.changed.wait(t).unwrap_or_else(|e| e.into_inner());
        }
        t.busy.insert(id.to_owned());
        Reservation {
            owner: self,
            key: id.to_owned(),
            name: false,
        }
    }

    /// Stops a sandbox: its infra process and its network (CNI DEL). Idempotent; what failed
    /// is retried by the next stop or remove.
    pub fn stop(&self, id: &str) -> Result<(), Error> {
        let id = self.resolve(id)?;
        let _r = self.reserve(&id);
        let Some(mut sb) = self.get(&id) else {
            return Err(Error::NotFound(id));
        };
        let mut errors = Vec::new();
        self.stop_parts(&mut sb, &mut errors);
        let changed = sb.state != SandboxState::NotReady || !errors.is_empty();
        sb.state = SandboxState::NotReady;
        if changed {
            self.persist(&sb)?;
            carapace_crashpoint::hit("sandbox: stopped state written");
        }
        self.lock().sandboxes.insert(sb);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Error::Teardown {
                id,
                errors: errors.join("; "),
            })
        }
    }

    /// Removes a sandbox, stopping it first. Idempotent: removing an unknown id is `NotFound`,
    /// which the caller treats as done.
    pub fn remove(&self, id: &str) -> Result<(), Error> {
        let id = self.resolve(id)?;
        let _r = self.reserve(&id);
        let Some(mut sb) = self.get(&id) else {
            return Err(Error::NotFound(id));
        };
        sb.state = SandboxState::NotReady;
        if let Err(e) = self.teardown(&mut sb) {
            let _ = self.persist(&sb);
            self.lock().sandboxes.insert(sb);
            return Err(e);
        }
        std::fs::remove_dir_all(&sb.dir)
            .or_else(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .map_err(|source| Error::Io {
                path: sb.dir.clone(),
                source,
            })?;
        carapace_crashpoint::hit("sandbox: dir removed");
        // Last: a crash before it leaves the pod to come back NOTREADY and be removed again.
        self.forget_record(&id)?;
        self.lock().sandboxes.remove(&id);
        tracing::info!(pod_id = %id, "sandbox removed");
        Ok(())
    }

    /// Resizes a ready pod in place (`UpdatePodSandboxResources`): writes `resources` (the pod's
    /// resources plus its overhead, summed by the caller as for a run) to the pod cgroup as a run
    /// writes them, skipping a controller the pod cgroup lacks, and records them, so a status or
    /// a restart sees the new values. The containers' own cgroups are not touched. A pod without
    /// a cgroup (no `cgroup_parent`) has no file to write: the call succeeds and only the record
    /// changes. A pod that is not ready is refused: a stopped pod is not resized. A write the
    /// kernel refuses (a memory limit below the pod's usage) fails the call with the files
    /// written before it kept and the record unchanged; the kubelet retries the resize.
    pub fn update_resources(&self, id: &str, resources: PodResources) -> Result<(), Error> {
        let id = self.resolve(id)?;
        // No stop or remove changes the pod meanwhile (and a second resize waits for this one).
        let _r = self.reserve(&id);
        let Some(mut sb) = self.get(&id) else {
            return Err(Error::NotFound(id));
        };
        if sb.state != SandboxState::Ready {
            // The request's fault, not the node's: the pod is stopped or half made.
            return Err(Error::InvalidConfig(format!(
                "pod sandbox {id} is not ready: only a ready pod's resources can be updated"
            )));
        }
        if let Some(cg) = &sb.cgroup {
            cgroup::apply(&self.cgroups, &cg.path, &resources)?;
        }
        sb.config.resources = resources;
        self.persist(&sb)?;
        self.lock().sandboxes.insert(sb);
        tracing::info!(pod_id = %id, "pod sandbox resources updated");
        Ok(())
    }

    pub fn get(&self, id: &str) -> Option<Sandbox> {
        self.lock().sandboxes.get(id).cloned()
    }

    /// A sandbox's state alone, without copying its record (asked on every container start).
    pub fn state(&self, id: &str) -> Option<SandboxState> {
        self.lock().sandboxes.get(id).map(|s| s.state)
    }

    /// The counters of each of `pods`' network interfaces (loopback left out), in order, read
    /// inside its network namespace, every namespace from one thread (the kubelet asks for all
    /// pods' stats every few seconds); empty for a host-network pod (its traffic is the node's),
    /// one without a netns or one not ready.
    pub fn network_stats_of(
        &self,
        pods: &[Sandbox],
    ) -> Vec<Result<Vec<crate::InterfaceStats>, Error>> {
        let netns: Vec<Option<PathBuf>> = pods
            .iter()
            .map(|sb| {
                sb.namespaces
                    .net
                    .clone()
                    .filter(|_| sb.state == SandboxState::Ready)
            })
            .collect();
        let wanted: Vec<PathBuf> = netns.iter().flatten().cloned().collect();
        let mut read = self.kernel.read_net_devs(&wanted).into_iter();
        netns
            .into_iter()
            .map(|ns| match ns {
                None => Ok(Vec::new()),
                Some(ns) => match read.next() {
                    Some(Ok(text)) => Ok(crate::parse_net_dev(&text)),
                    Some(Err(source)) => Err(Error::Kernel {
                        op: "read network counters in",
                        path: ns,
                        source,
                    }),
                    None => Err(Error::Kernel {
                        op: "read network counters in",
                        path: ns,
                        source: std::io::Error::other("no answer from the reader"),
                    }),
                },
            })
            .collect()
    }

    /// Every sandbox, oldest first.
    pub fn list(&self) -> Vec<Sandbox> {
        self.list_map(|s| Some(s.clone()))
    }

    /// How many times the sandboxes changed (run, stopped, removed, a record updated) since the
    /// store was opened: a list made after reading a count holds while the count stays the same.
    pub fn changes(&self) -> u64 {
        self.lock().sandboxes.changes
    }

    /// What `f` makes of every sandbox it keeps, oldest first, read in place under the lock: the
    /// kubelet lists every second, so nothing is cloned that the answer does not need.
    pub fn list_map<T>(&self, f: impl FnMut(&Sandbox) -> Option<T>) -> Vec<T> {
        let t = self.lock();
        let mut v: Vec<&Sandbox> = t.sandboxes.values().collect();
        v.sort_unstable_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        v.into_iter().filter_map(f).collect()
    }

    fn persist(&self, sb: &Sandbox) -> Result<(), Error> {
        self.write_state(sb, &encode(sb)?)
    }

    fn write_state(&self, sb: &Sandbox, bytes: &[u8]) -> Result<(), Error> {
        let path = sb.dir.join("sandbox.json");
        write_atomic(&path, bytes).map_err(|source| Error::Io { path, source })
    }

    /// [`Self::persist`], then the same bytes as the pod's record under the root dir (one
    /// encoding for both).
    fn persist_and_record(&self, sb: &Sandbox) -> Result<(), Error> {
        let bytes = encode(sb)?;
        self.write_state(sb, &bytes)?;
        self.record_bytes(sb, bytes);
        Ok(())
    }

    /// Writes the pod's record under the root dir, durably, off the request path (see
    /// [`RecordWriter`]): what a reboot leaves of the pod.
    fn record(&self, sb: &Sandbox) -> Result<(), Error> {
        if self.records.is_some() {
            self.record_bytes(sb, encode(sb)?);
        }
        Ok(())
    }

    fn record_bytes(&self, sb: &Sandbox, bytes: Vec<u8>) {
        if let Some(dir) = &self.records {
            self.record_writer
                .write(dir.join(format!("{}.json", sb.id)), bytes);
        }
    }

    /// Removes the pod's record through the writer (after any write of it still queued) and
    /// waits for it: once RemovePodSandbox has answered, nothing of the pod is left under root.
    fn forget_record(&self, id: &str) -> Result<(), Error> {
        if let Some(dir) = &self.records {
            self.record_writer.remove(dir.join(format!("{id}.json")));
            self.record_writer.flush();
        }
        Ok(())
    }
}

/// A sandbox as its state file and its record under the root dir hold it.
fn encode(sb: &Sandbox) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(sb).map_err(|e| Error::State {
        path: sb.dir.join("sandbox.json"),
        reason: e.to_string(),
    })
}

/// Brings back, NOTREADY, every pod whose record under the root dir outlived its state (a
/// reboot emptied the state dir): what the reboot ended is dropped from it (namespaces, mounts,
/// the infra process, whose pid may now be another's), what it may have left is kept for the
/// teardown (the CNI attachment, the cgroups). Its state is written again under the state dir
/// (`root` here), so it is an ordinary NOTREADY pod from then on.
fn recover(records: &Path, root: &Path, table: &mut Table) -> Result<(), Error> {
    let entries = std::fs::read_dir(records).map_err(|source| Error::Io {
        path: records.to_owned(),
        source,
    })?;
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
            continue;
        };
        if id.starts_with('.') || table.sandboxes.contains_key(id) {
            continue;
        }
        let mut sb = match load(&path) {
            Ok(sb) if sb.id == id => sb,
            other => {
                tracing::warn!(path = %path.display(), problem = ?other.err(), "skipping a pod record");
                continue;
            }
        };
        let dir = root.join(id);
        sb.state = SandboxState::NotReady;
        sb.recovered = true;
        sb.namespaces = NamespacePaths::default();
        sb.infra = None;
        sb.shm = None;
        sb.hostname_path = dir.join("hostname");
        sb.hosts_path = dir.join("hosts");
        sb.resolv_conf_path = dir.join("resolv.conf");
        sb.dir = dir;
        std::fs::create_dir_all(&sb.dir).map_err(|source| Error::Io {
            path: sb.dir.clone(),
            source,
        })?;
        let state = sb.dir.join("sandbox.json");
        let bytes = serde_json::to_vec(&sb).map_err(|e| Error::State {
            path: state.clone(),
            reason: e.to_string(),
        })?;
        write_atomic(&state, &bytes).map_err(|source| Error::Io {
            path: state,
            source,
        })?;
        tracing::info!(pod_id = %sb.id, network = ?sb.network, "pod recovered NOTREADY from its record: its state did not survive a reboot");
        table.sandboxes.insert(sb);
    }
    Ok(())
}

/// Moves the CNI cache entries a daemon that kept them under the state dir left (an upgrade with
/// pods running) to the root dir, so their DEL still runs the configuration ADD ran. Best
/// effort: an entry left behind only makes its DEL run the current configuration.
fn move_cni_cache(from: &Path, to: &Path) {
    let (from, to) = (from.join("results"), to.join("results"));
    let Ok(entries) = std::fs::read_dir(&from) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let target = to.join(&name);
        let moved = target.exists()
            || std::fs::read(entry.path())
                .and_then(|b| carapace_cni::write_durable(&target, &b))
                .is_ok();
        if moved {
            let _ = std::fs::remove_file(entry.path());
        } else {
            tracing::warn!(entry = %entry.path().display(), "could not move a CNI cache entry to the root dir");
        }
    }
}

struct Plan {
    sysctls: Vec<sysctl::Sysctl>,
    cgroup: Option<PathBuf>,
    bandwidth: Option<Bandwidth>,
}

fn load(path: &Path) -> Result<Sandbox, Error> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| Error::State {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// The temp file [`write_atomic`] renames over a sandbox's `sandbox.json`.
const STATE_TMP: &str = ".sandbox.json.tmp";

/// Removes from a sandbox's `dir` the temp file of a state write the daemon died in before its
/// rename. At start only, when no state write is in flight.
fn remove_state_temp(dir: &Path) {
    use std::io::ErrorKind::{NotADirectory, NotFound};
    let tmp = dir.join(STATE_TMP);
    match std::fs::remove_file(&tmp) {
        Ok(()) => tracing::info!(path = %tmp.display(), "removed a state temp file a crash left"),
        // None there, or `dir` is a stray file and no sandbox's dir.
        Err(e) if matches!(e.kind(), NotFound | NotADirectory) => {}
        Err(e) => {
            tracing::warn!(path = %tmp.display(), error = %e, "removing a state temp file a crash left")
        }
    }
}

/// Temporary file, rename over: readers and a restart after a crash of the daemon see the old
/// state or the new one, never half of one. No fsync: the record lives under the state dir and
/// describes namespaces, mounts and processes that a reboot ends (a tmpfs on a node).
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("no parent"))?;
    let tmp = dir.join(STATE_TMP);
    std::fs::write(&tmp, bytes)?;
    // Between the temp file and its rename: a daemon dying here leaves the temp file.
    carapace_crashpoint::hit("sandbox: state temp written");
    std::fs::rename(&tmp, path)
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or_default()
}

/// 64 hex digits from the kernel's random source, as container ids are.
fn new_id() -> String {
    use std::io::Read;
    let mut b = [0u8; 32];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    if read.is_err() {
        // Never reached on Linux; still unique enough for one node.
        let n = now_nanos().to_le_bytes();
        b[..8].copy_from_slice(&n);
        b[8..12].copy_from_slice(&std::process::id().to_le_bytes());
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The bandwidth plugin's limits from the pod annotations Kubernetes defines
/// (`kubernetes.io/ingress-bandwidth`, `kubernetes.io/egress-bandwidth`, e.g. `10M`).
/// A pod user namespace as Kubernetes asks for one: one range each for uids and gids, starting at
/// the container's root, never the host's root, and the pod's own network, IPC and PID (a host
/// namespace is not the user namespace's to own; the kubelet refuses `hostUsers: false` with them).
fn validate_userns(u: &crate::UserNamespace, ns: crate::NamespaceOptions) -> Result<(), Error> {
    for (what, maps) in [("uid", &u.uids), ("gid", &u.gids)] {
        let [m] = maps.as_slice() else {
            return Err(Error::InvalidConfig(format!(
                "a pod user namespace needs exactly one {what} mapping, not {}",
                maps.len()
            )));
        };
        if m.container_id != 0 {
            return Err(Error::InvalidConfig(format!(
                "the {what} mapping must start at container id 0, not {}",
                m.container_id
            )));
        }
        if m.length == 0 || m.host_id.checked_add(m.length - 1).is_none() {
            return Err(Error::InvalidConfig(format!(
                "the {what} mapping {}+{} is empty or past the largest id",
                m.host_id, m.length
            )));
        }
        if m.host_id == 0 {
            return Err(Error::InvalidConfig(format!(
                "the {what} mapping maps the host's root into the pod"
            )));
        }
    }
    if ns.host_network() || ns.host_ipc() || ns.pid == NamespaceMode::Node {
        return Err(Error::InvalidConfig(
            "a pod user namespace cannot go with the host's network, IPC or PID namespace".into(),
        ));
    }
    Ok(())
}

fn bandwidth(
    annotations: &std::collections::BTreeMap<String, String>,
) -> Result<Option<Bandwidth>, Error> {
    let rate = |key: &str| -> Result<Option<u64>, Error> {
        annotations
            .get(key)
            .map(|v| {
                parse_quantity(v)
                    .ok_or_else(|| Error::InvalidConfig(format!("annotation {key}: {v:?}")))
            })
            .transpose()
    };
    let ingress = rate("kubernetes.io/ingress-bandwidth")?;
    let egress = rate("kubernetes.io/egress-bandwidth")?;
    if ingress.is_none() && egress.is_none() {
        return Ok(None);
    }
    // The kubelet's own choice of burst: effectively unlimited.
    let burst = i32::MAX as u64;
    Ok(Some(Bandwidth {
        ingress_rate: ingress,
        ingress_burst: ingress.map(|_| burst),
        egress_rate: egress,
        egress_burst: egress.map(|_| burst),
    }))
}

/// A Kubernetes quantity such as `10M`, `1.5Gi` or `500k`, as a whole number.
fn parse_quantity(s: &str) -> Option<u64> {
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let mult: f64 = match suffix {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0f64.powi(4),
        "Pi" => 1024.0f64.powi(5),
        _ => return None,
    };
    let n: f64 = num.parse().ok()?;
    let v = n * mult;
    (v.is_finite() && v >= 1.0 && v < u64::MAX as f64).then_some(v as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::Recording;
    use crate::{DnsConfig, Metadata, NamespaceOptions};
    use std::os::unix::fs::PermissionsExt;

    struct Fixture {
        dir: tempfile::TempDir,
        kernel: Arc<Recording>,
        sandboxes: Sandboxes,
    }

    /// A fake CNI plugin: logs each call and answers ADD with 10.77.0.9 (or fails if asked to).
    fn plugin(bin: &Path, log: &Path) {
        let script = format!(
            "#!/bin/sh\necho \"$CNI_COMMAND $CNI_CONTAINERID $CNI_NETNS\" >> {log}\ncat > /dev/null\n\
             [ -e {fail} ] && [ \"$CNI_COMMAND\" = ADD ] && {{ echo '{{\"code\":7,\"msg\":\"bridge says no\"}}'; exit 1; }}\n\
             [ \"$CNI_COMMAND\" = ADD ] && echo '{{\"cniVersion\":\"1.0.0\",\"ips\":[{{\"address\":\"10.77.0.9/24\"}}]}}'\nexit 0\n",
            log = log.display(),
            fail = bin.join("fail").display()
        );
        std::fs::write(bin.join("fakenet"), script).unwrap();
        std::fs::set_permissions(bin.join("fakenet"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
    }

    fn options(dir: &Path) -> Options {
        let mut o = Options::new(dir.join("state"), dir.join("net.d"), vec![dir.join("bin")]);
        o.cgroup_root = dir.join("cgroup");
        o.host_resolv_conf = dir.join("host-resolv.conf");
        o.host_hosts = dir.join("host-hosts");
        o.infra = Some(InfraCommand {
            program: "/nonexistent".into(),
            args: vec![],
        });
        o
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        for d in ["bin", "net.d", "cgroup/cpu", "cgroup/memory"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        plugin(&dir.path().join("bin"), &dir.path().join("cni.log"));
        std::fs::write(
            dir.path().join("net.d/10-fake.conflist"),
            r#"{"cniVersion":"1.0.0","name":"fake","plugins":[{"type":"fakenet"}]}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("host-resolv.conf"),
            "nameserver 192.0.2.53\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("host-hosts"), "127.0.0.1 localhost node1\n").unwrap();
        let kernel = Arc::new(Recording::default());
        let sandboxes = Sandboxes::open(options(dir.path()), kernel.clone()).unwrap();
        Fixture {
            dir,
            kernel,
            sandboxes,
        }
    }

    fn config(name: &str) -> SandboxConfig {
        SandboxConfig {
            metadata: Metadata {
                name: name.into(),
                uid: format!("uid-{name}"),
                namespace: "default".into(),
                attempt: 0,
            },
            hostname: name.into(),
            cgroup_parent: format!("/kubepods/burstable/pod{name}"),
            sysctls: [(
                "net.ipv4.ip_unprivileged_port_start".to_owned(),
                "0".to_owned(),
            )]
            .into(),
            namespaces: NamespaceOptions {
                pid: NamespaceMode::Container,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn cni_log(f: &Fixture) -> String {
        std::fs::read_to_string(f.dir.path().join("cni.log")).unwrap_or_default()
    }

    #[test]
    fn run_makes_every_part_and_remove_takes_them_all_away() {
        let f = fixture();
        let mut cfg = config("web");
        cfg.dns = Some(DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec!["svc.cluster.local".into()],
            options: vec![],
        });
        let id = f.sandboxes.run(cfg).unwrap();
        let sb = f.sandboxes.get(&id).unwrap();
        assert_eq!(sb.state, SandboxState::Ready);
        assert_eq!(sb.ips, ["10.77.0.9".parse::<IpAddr>().unwrap()]);
        let ns = sb.dir.join("ns");
        let req = f.kernel.requests.lock().unwrap()[0].clone();
        assert_eq!(req.net, Some(ns.join("net")));
        assert_eq!(req.uts, Some(ns.join("uts")));
        assert_eq!(req.ipc, Some(ns.join("ipc")));
        assert_eq!(req.hostname.as_deref(), Some("web"));
        assert_eq!(
            req.sysctls[0].path,
            PathBuf::from("net/ipv4/ip_unprivileged_port_start")
        );
        assert_eq!(sb.namespaces.pid, None);
        assert_eq!(std::fs::read_to_string(&sb.hostname_path).unwrap(), "web\n");
        assert!(
            std::fs::read_to_string(&sb.hosts_path)
                .unwrap()
                .contains("10.77.0.9\tweb\n")
        );
        assert_eq!(
            std::fs::read_to_string(&sb.resolv_conf_path).unwrap(),
            "search svc.cluster.local\nnameserver 10.96.0.10\n"
        );
        assert!(
            f.dir
                .path()
                .join("cgroup/memory/kubepods/burstable/podweb")
                .is_dir()
        );
        assert_eq!(
            cni_log(&f),
            format!("ADD {id} {}\n", ns.join("net").display())
        );

        f.sandboxes.stop(&id).unwrap();
        f.sandboxes.stop(&id).unwrap();
        assert_eq!(f.sandboxes.get(&id).unwrap().state, SandboxState::NotReady);
        assert_eq!(
            cni_log(&f).lines().filter(|l| l.starts_with("DEL")).count(),
            1,
            "one DEL for two stops"
        );
        f.sandboxes.remove(&id).unwrap();
        assert!(matches!(f.sandboxes.remove(&id), Err(Error::NotFound(_))));
        assert!(!sb.dir.exists());
        assert!(
            !f.dir.path().join("cgroup/cpu/kubepods").exists(),
            "made by us, so removed"
        );
        assert!(f.sandboxes.list().is_empty());
    }

    #[test]
    fn every_change_a_list_would_show_moves_the_count_on() {
        let f = fixture();
        let mut seen = f.sandboxes.changes();
        let mut moved = |what: &str| {
            let now = f.sandboxes.changes();
            assert!(now > seen, "{what} left the count at {now}");
            seen = now;
        };
        let id = f.sandboxes.run(config("web")).unwrap();
        moved("run");
        f.sandboxes.stop(&id).unwrap();
        moved("stop");
        f.sandboxes.remove(&id).unwrap();
        moved("remove");
        // Reading changes nothing.
        f.sandboxes.list();
        f.sandboxes.get(&id);
        assert_eq!(f.sandboxes.changes(), seen);
    }

    #[test]
    fn a_parent_cgroup_other_pods_sit_in_goes_with_the_last_of_them() {
        let f = fixture();
        let first = f.sandboxes.run(config("web")).unwrap();
        let second = f.sandboxes.run(config("api")).unwrap();
        let cg = f.dir.path().join("cgroup/cpu/kubepods/burstable");
        // The first pod made `kubepods/burstable`; the second sits in it when the first goes.
        f.sandboxes.stop(&first).unwrap();
        f.sandboxes.remove(&first).unwrap();
        assert!(!cg.join("podweb").exists());
        assert!(cg.join("podapi").is_dir());
        // The second was handed the parent: the last pod out takes it away.
        f.sandboxes.stop(&second).unwrap();
        f.sandboxes.remove(&second).unwrap();
        assert!(!cg.exists());
        assert!(!f.dir.path().join("cgroup/memory/kubepods").exists());
        assert!(f.sandboxes.list().is_empty());
    }

    #[test]
    fn a_retry_with_the_same_metadata_returns_the_same_sandbox_even_concurrently() {
        let f = fixture();
        let ids: Vec<String> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| s.spawn(|| f.sandboxes.run(config("web")).unwrap()))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
        assert_eq!(f.sandboxes.list().len(), 1);
        let mut next = config("web");
        next.metadata.attempt = 1;
        assert_ne!(f.sandboxes.run(next).unwrap(), ids[0]);
    }

    #[test]
    fn a_failed_cni_add_undoes_every_step_and_keeps_the_plugins_message() {
        let f = fixture();
        std::fs::write(f.dir.path().join("bin/fail"), "").unwrap();
        let e = f.sandboxes.run(config("web")).unwrap_err();
        assert!(e.to_string().contains("bridge says no"), "{e}");
        assert!(f.sandboxes.list().is_empty());
        assert_eq!(
            std::fs::read_dir(f.dir.path().join("state/sandboxes"))
                .unwrap()
                .count(),
            0
        );
        assert!(!f.dir.path().join("cgroup/cpu/kubepods").exists());
        assert_eq!(
            cni_log(&f).lines().map(|l| &l[..3]).collect::<Vec<_>>(),
            ["ADD", "DEL"]
        );
        let calls = f.kernel.calls();
        assert!(
            calls
                .iter()
                .any(|c| c.starts_with("unpin") && c.ends_with("ns/net")),
            "{calls:?}"
        );
    }

    #[test]
    fn failures_at_each_kernel_step_leave_nothing() {
        for op in ["create_namespaces", "mount_shm", "start_infra"] {
            let f = fixture();
            *f.kernel.fail_on.lock().unwrap() = Some(op);
            let mut cfg = config("web");
            cfg.namespaces.pid = NamespaceMode::Pod;
            let e = f.sandboxes.run(cfg).unwrap_err();
            assert!(
                e.to_string().contains(op) || e.to_string().contains("injected"),
                "{op}: {e}"
            );
            assert!(f.sandboxes.list().is_empty(), "{op}");
            assert_eq!(
                std::fs::read_dir(f.dir.path().join("state/sandboxes"))
                    .unwrap()
                    .count(),
                0,
                "{op}"
            );
            assert!(!f.dir.path().join("cgroup/cpu/kubepods").exists(), "{op}");
            assert!(
                !cni_log(&f).contains("ADD"),
                "{op}: no network before the namespaces"
            );
        }
    }

    #[test]
    fn an_undo_that_fails_keeps_the_sandbox_notready_until_remove_succeeds() {
        let f = fixture();
        std::fs::write(f.dir.path().join("bin/fail"), "").unwrap();
        *f.kernel.fail_on.lock().unwrap() = Some("unpin");
        assert!(f.sandboxes.run(config("web")).is_err());
        let list = f.sandboxes.list();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].state, SandboxState::NotReady);
        *f.kernel.fail_on.lock().unwrap() = None;
        std::fs::remove_file(f.dir.path().join("bin/fail")).unwrap();
        // A retry of the same pod clears the stale one and succeeds.
        let id = f.sandboxes.run(config("web")).unwrap();
        assert_ne!(id, list[0].id);
        assert_eq!(f.sandboxes.list().len(), 1);
    }

    #[test]
    fn state_survives_a_restart_and_a_half_made_sandbox_is_notready() {
        let f = fixture();
        let id = f.sandboxes.run(config("web")).unwrap();
        let before = f.sandboxes.get(&id).unwrap();
        // A crash mid-run: a sandbox left in Creating.
        let mut half = before.clone();
        half.id = "f".repeat(64);
        half.dir = f.dir.path().join("state/sandboxes").join(&half.id);
        half.state = SandboxState::Creating;
        half.config.metadata.name = "half".into();
        std::fs::create_dir(&half.dir).unwrap();
        std::fs::write(
            half.dir.join("sandbox.json"),
            serde_json::to_vec(&half).unwrap(),
        )
        .unwrap();
        std::fs::create_dir(f.dir.path().join("state/sandboxes/empty")).unwrap();

        let again = Sandboxes::open(options(f.dir.path()), f.kernel.clone()).unwrap();
        assert_eq!(again.get(&id).unwrap(), before);
        assert_eq!(again.get(&half.id).unwrap().state, SandboxState::NotReady);
        assert!(!f.dir.path().join("state/sandboxes/empty").exists());
        assert_eq!(again.resolve(&id[..12]).unwrap(), id);
        again.remove(&id).unwrap();
        again.remove(&half.id).unwrap();
        assert!(again.list().is_empty());
    }

    #[test]
    fn a_state_temp_file_a_crash_left_is_removed_at_open_with_a_dir_it_alone_was_in() {
        let f = fixture();
        let id = f.sandboxes.run(config("web")).unwrap();
        // The daemon died after the temp file of a sandbox's first state write, before its
        // rename (the dir holds nothing else), and in a later write of a pod that has state.
        let first = f.dir.path().join("state/sandboxes").join("e".repeat(64));
        std::fs::create_dir(&first).unwrap();
        std::fs::write(first.join(STATE_TMP), b"{}").unwrap();
        let later = f
            .dir
            .path()
            .join("state/sandboxes")
            .join(&id)
            .join(STATE_TMP);
        std::fs::write(&later, b"{}").unwrap();

        let again = Sandboxes::open(options(f.dir.path()), f.kernel.clone()).unwrap();
        assert!(!first.exists());
        assert!(!later.exists());
        assert_eq!(again.list().len(), 1);
        again.remove(&id).unwrap();
    }

    #[test]
    fn record_and_cni_cache_temp_files_a_crash_left_are_removed_at_open() {
        let f = fixture();
        let mut opts = options(f.dir.path());
        opts.root_dir = Some(f.dir.path().join("root"));
        // What a daemon (pid 99, gone) killed between those writes and their renames left.
        let record = f
            .dir
            .path()
            .join(format!("root/sandboxes/.{}.json.tmp99", "a".repeat(64)));
        let cached = f.dir.path().join("root/cni/results/.fake-abc-eth0.tmp99");
        for t in [&record, &cached] {
            std::fs::create_dir_all(t.parent().unwrap()).unwrap();
            std::fs::write(t, b"{}").unwrap();
        }
        Sandboxes::open(opts, f.kernel.clone()).unwrap();
        assert!(!record.exists());
        assert!(!cached.exists());
    }

    #[test]
    fn a_pod_whose_state_a_reboot_emptied_comes_back_notready_and_its_stop_runs_del_without_netns()
    {
        let f = fixture();
        let mut opts = options(f.dir.path());
        opts.root_dir = Some(f.dir.path().join("root"));
        let store = Sandboxes::open(opts.clone(), f.kernel.clone()).unwrap();
        let id = store.run(config("web")).unwrap();
        store.record_writer.flush();
        let before = store.get(&id).unwrap();
        let record = f.dir.path().join(format!("root/sandboxes/{id}.json"));
        let cached = f
            .dir
            .path()
            .join(format!("root/cni/results/fake-{id}-eth0"));
        assert!(record.exists() && cached.exists());
        drop(store);
        // The reboot: the state dir comes back empty; the cgroups here stay, a container's too.
        std::fs::remove_dir_all(f.dir.path().join("state")).unwrap();
        let cg = f.dir.path().join("cgroup/cpu/kubepods/burstable/podweb");
        std::fs::create_dir(cg.join("ctr")).unwrap();

        let store = Sandboxes::open(opts.clone(), f.kernel.clone()).unwrap();
        let sb = store.get(&id).unwrap();
        assert_eq!(sb.state, SandboxState::NotReady);
        assert!(sb.recovered);
        assert_eq!(
            (&sb.config, sb.created_at, &sb.network, &sb.cgroup),
            (
                &before.config,
                before.created_at,
                &before.network,
                &before.cgroup
            )
        );
        assert_eq!(sb.namespaces, NamespacePaths::default());
        assert_eq!((sb.infra, &sb.shm), (None, &None));
        // From now on an ordinary NOTREADY pod: a restart keeps it as it is.
        drop(store);
        let store = Sandboxes::open(opts, f.kernel.clone()).unwrap();
        assert_eq!(store.get(&id).unwrap(), sb);

        store.stop(&id).unwrap();
        assert!(
            cni_log(&f).ends_with(&format!("DEL {id} \n")),
            "{}",
            cni_log(&f)
        );
        assert!(!cached.exists());
        store.remove(&id).unwrap();
        assert!(!cg.exists());
        assert!(!f.dir.path().join("cgroup/cpu/kubepods").exists());
        assert!(!record.exists());
        assert!(!f.dir.path().join("state/sandboxes").join(&id).exists());
        assert!(store.list().is_empty());
    }

    #[test]
    fn cni_cache_entries_under_the_state_dir_move_to_the_root_dir() {
        let f = fixture();
        let old = f.dir.path().join("state/cni/results/fake-abc-eth0");
        std::fs::create_dir_all(old.parent().unwrap()).unwrap();
        std::fs::write(&old, "{}").unwrap();
        let mut opts = options(f.dir.path());
        opts.root_dir = Some(f.dir.path().join("root"));
        Sandboxes::open(opts, f.kernel.clone()).unwrap();
        assert!(!old.exists());
        assert_eq!(
            std::fs::read_to_string(f.dir.path().join("root/cni/results/fake-abc-eth0")).unwrap(),
            "{}"
        );
    }

    #[test]
    fn host_namespaces_make_no_namespace_network_or_shm() {
        let f = fixture();
        let mut cfg = config("hostpod");
        cfg.namespaces = NamespaceOptions {
            network: NamespaceMode::Node,
            pid: NamespaceMode::Node,
            ipc: NamespaceMode::Node,
        };
        cfg.sysctls.clear();
        let id = f.sandboxes.run(cfg.clone()).unwrap();
        let sb = f.sandboxes.get(&id).unwrap();
        assert_eq!(sb.namespaces, NamespacePaths::default());
        assert_eq!(sb.shm, None);
        assert!(sb.ips.is_empty());
        assert_eq!(sb.hostname, "node1");
        assert_eq!(
            std::fs::read_to_string(&sb.hosts_path).unwrap(),
            "127.0.0.1 localhost node1\n"
        );
        assert_eq!(
            std::fs::read_to_string(&sb.resolv_conf_path).unwrap(),
            "nameserver 192.0.2.53\n"
        );
        assert_eq!(cni_log(&f), "");
        // A net.* sysctl is refused with host network, before anything is made.
        cfg.metadata.attempt = 1;
        cfg.sysctls = [("net.ipv4.ip_forward".to_owned(), "1".to_owned())].into();
        assert!(matches!(
            f.sandboxes.run(cfg),
            Err(Error::InvalidSysctl { .. })
        ));
    }

    fn kubelet_userns(host_id: u32) -> crate::UserNamespace {
        let m = crate::IdMapping {
            container_id: 0,
            host_id,
            length: 65536,
        };
        crate::UserNamespace {
            uids: vec![m],
            gids: vec![m],
        }
    }

    #[test]
    fn a_pod_user_namespace_is_made_with_its_maps_pinned_and_unpinned() {
        let f = fixture();
        let mut cfg = config("userns");
        cfg.userns = Some(kubelet_userns(65536 * 10));
        let id = f.sandboxes.run(cfg.clone()).unwrap();
        let sb = f.sandboxes.get(&id).unwrap();
        let pin = sb.namespaces.user.clone().expect("a user namespace pin");
        assert!(pin.exists());
        let req = f.kernel.requests.lock().unwrap().last().cloned().unwrap();
        let user = req.user.expect("the user namespace asked for");
        assert_eq!(
            (user.pin, user.userns),
            (pin.clone(), kubelet_userns(65536 * 10))
        );
        // Made inside it: the pod's other namespaces, in the same request.
        assert!(req.net.is_some() && req.ipc.is_some() && req.uts.is_some());
        f.sandboxes.remove(&id).unwrap();
        assert!(!pin.exists());
        assert!(
            f.kernel
                .calls()
                .contains(&format!("unpin {}", pin.display()))
        );
    }

    #[test]
    fn pod_user_namespaces_the_kubelet_never_asks_for_are_refused_before_anything_is_made() {
        let f = fixture();
        let m = |container_id, host_id, length| crate::IdMapping {
            container_id,
            host_id,
            length,
        };
        let two = crate::UserNamespace {
            uids: vec![m(0, 65536, 65536), m(65536, 2 * 65536, 65536)],
            gids: vec![m(0, 65536, 65536)],
        };
        let cases = [
            ("two ranges", two, NamespaceOptions::default()),
            (
                "root unmapped",
                crate::UserNamespace {
                    uids: vec![m(1, 65536, 65536)],
                    gids: vec![m(0, 65536, 65536)],
                },
                NamespaceOptions::default(),
            ),
            (
                "past the last id",
                crate::UserNamespace {
                    uids: vec![m(0, u32::MAX - 10, 65536)],
                    gids: vec![m(0, 65536, 65536)],
                },
                NamespaceOptions::default(),
            ),
            (
                "the host's root",
                crate::UserNamespace {
                    uids: vec![m(0, 0, 65536)],
                    gids: vec![m(0, 0, 65536)],
                },
                NamespaceOptions::default(),
            ),
            (
                "host network",
                kubelet_userns(65536),
                NamespaceOptions {
                    network: NamespaceMode::Node,
                    ..Default::default()
                },
            ),
            (
                "host PID",
                kubelet_userns(65536),
                NamespaceOptions {
                    pid: NamespaceMode::Node,
                    ..Default::default()
                },
            ),
        ];
        for (what, u, ns) in cases {
            let mut cfg = config("bad");
            cfg.userns = Some(u);
            cfg.namespaces = ns;
            cfg.sysctls.clear();
            assert!(
                matches!(f.sandboxes.run(cfg), Err(Error::InvalidConfig(_))),
                "{what}"
            );
        }
        assert!(f.kernel.calls().is_empty(), "{:?}", f.kernel.calls());
    }

    #[test]
    fn no_network_configured_fails_with_network_not_ready() {
        let f = fixture();
        std::fs::remove_file(f.dir.path().join("net.d/10-fake.conflist")).unwrap();
        let e = f.sandboxes.run(config("web")).unwrap_err();
        assert!(matches!(e, Error::NetworkNotReady(_)), "{e:?}");
        assert!(f.sandboxes.list().is_empty());
    }

    fn resized() -> PodResources {
        PodResources {
            cpu_shares: Some(1024),
            cpu_quota: Some(150_000),
            cpu_period: Some(100_000),
            memory_limit: Some(512 << 20),
            ..Default::default()
        }
    }

    #[test]
    fn update_resources_writes_the_pod_cgroup_alone_and_the_record_survives_a_restart() {
        let f = fixture();
        let id = f.sandboxes.run(config("web")).unwrap();
        let cpu = f.dir.path().join("cgroup/cpu/kubepods/burstable/podweb");
        let memory = f.dir.path().join("cgroup/memory/kubepods/burstable/podweb");
        // A container's cgroup below the pod's: its own limit stays.
        std::fs::create_dir(cpu.join("ctr")).unwrap();
        std::fs::write(cpu.join("ctr/cpu.shares"), "2").unwrap();
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap();

        f.sandboxes.update_resources(&id[..12], resized()).unwrap();
        assert_eq!(read(cpu.join("cpu.shares")), "1024");
        assert_eq!(read(cpu.join("cpu.cfs_quota_us")), "150000");
        assert_eq!(read(cpu.join("cpu.cfs_period_us")), "100000");
        assert_eq!(read(memory.join("memory.limit_in_bytes")), "536870912");
        assert_eq!(read(cpu.join("ctr/cpu.shares")), "2");
        assert_eq!(f.sandboxes.get(&id).unwrap().config.resources, resized());

        // Down again: the files follow, and a restart reads the last values.
        let smaller = PodResources {
            cpu_shares: Some(256),
            memory_limit: Some(128 << 20),
            ..Default::default()
        };
        f.sandboxes.update_resources(&id, smaller.clone()).unwrap();
        assert_eq!(read(cpu.join("cpu.shares")), "256");
        assert_eq!(read(memory.join("memory.limit_in_bytes")), "134217728");
        let again = Sandboxes::open(options(f.dir.path()), f.kernel.clone()).unwrap();
        assert_eq!(again.get(&id).unwrap().config.resources, smaller);
        assert_eq!(again.get(&id).unwrap().state, SandboxState::Ready);
    }

    #[test]
    fn update_resources_skips_a_controller_the_pod_cgroup_lacks() {
        let f = fixture();
        std::fs::remove_dir(f.dir.path().join("cgroup/memory")).unwrap();
        let sandboxes = Sandboxes::open(options(f.dir.path()), f.kernel.clone()).unwrap();
        let id = sandboxes.run(config("web")).unwrap();
        sandboxes.update_resources(&id, resized()).unwrap();
        let cpu = f.dir.path().join("cgroup/cpu/kubepods/burstable/podweb");
        assert_eq!(
            std::fs::read_to_string(cpu.join("cpu.shares")).unwrap(),
            "1024"
        );
        assert!(!f.dir.path().join("cgroup/memory").exists());
        assert_eq!(sandboxes.get(&id).unwrap().config.resources, resized());
    }

    #[test]
    fn update_resources_on_v2_with_the_systemd_driver_writes_weight_max_and_unified() {
        let f = fixture();
        let root = f.dir.path().join("cgroup");
        for d in ["cpu", "memory"] {
            std::fs::remove_dir(root.join(d)).unwrap();
        }
        std::fs::write(root.join("cgroup.controllers"), "cpu memory").unwrap();
        let mut opts = options(f.dir.path());
        opts.cgroup_driver = CgroupDriver::Systemd;
        let sandboxes = Sandboxes::open(opts, f.kernel.clone()).unwrap();
        let mut cfg = config("web");
        cfg.cgroup_parent = "kubepods-burstable-podweb.slice".into();
        let id = sandboxes.run(cfg).unwrap();
        let dir =
            root.join("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podweb.slice");
        // What the kernel shows in a cgroup its parent enables cpu and memory for.
        std::fs::write(dir.join("cgroup.controllers"), "cpu memory").unwrap();
        std::fs::write(dir.join("memory.oom.group"), "0").unwrap();
        let mut r = resized();
        r.unified = [("memory.oom.group".to_owned(), "1".to_owned())].into();
        sandboxes.update_resources(&id, r).unwrap();
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
        assert_eq!(read("cpu.weight"), "39");
        assert_eq!(read("cpu.max"), "150000 100000");
        assert_eq!(read("memory.max"), "536870912");
        assert_eq!(read("memory.oom.group"), "1");
        // A key the pod cgroup has no file for is refused by name and the record kept.
        let mut bad = resized();
        bad.unified = [("memory.no_such_knob".to_owned(), "1".to_owned())].into();
        let e = sandboxes.update_resources(&id, bad).unwrap_err();
        assert!(
            matches!(e, Error::InvalidConfig(ref m) if m.contains("memory.no_such_knob")),
            "{e}"
        );
        assert_eq!(
            sandboxes.get(&id).unwrap().config.resources.unified["memory.oom.group"],
            "1"
        );
    }

    #[test]
    fn update_resources_of_unknown_cgroupless_and_stopped_pods() {
        let f = fixture();
        assert!(matches!(
            f.sandboxes.update_resources("nosuchpod", resized()),
            Err(Error::NotFound(_))
        ));
        // No cgroup_parent: no pod cgroup to write, the record alone changes.
        let mut cfg = config("nocg");
        cfg.cgroup_parent.clear();
        let id = f.sandboxes.run(cfg).unwrap();
        f.sandboxes.update_resources(&id, resized()).unwrap();
        assert_eq!(f.sandboxes.get(&id).unwrap().config.resources, resized());
        assert!(!f.dir.path().join("cgroup/cpu/kubepods").exists());
        // A stopped pod is refused and neither its cgroup nor its record changes.
        let id = f.sandboxes.run(config("web")).unwrap();
        f.sandboxes.stop(&id).unwrap();
        let e = f.sandboxes.update_resources(&id, resized()).unwrap_err();
        assert!(e.to_string().contains("not ready"), "{e}");
        let cpu = f.dir.path().join("cgroup/cpu/kubepods/burstable/podweb");
        assert!(!cpu.join("cpu.shares").exists());
        assert_eq!(
            f.sandboxes.get(&id).unwrap().config.resources,
            PodResources::default()
        );
    }

    #[test]
    fn quantities_and_bandwidth_annotations() {
        assert_eq!(parse_quantity("10M"), Some(10_000_000));
        assert_eq!(parse_quantity("1Gi"), Some(1 << 30));
        assert_eq!(parse_quantity("1.5k"), Some(1500));
        assert_eq!(parse_quantity("10X"), None);
        assert_eq!(parse_quantity("-1"), None);
        let b = bandwidth(
            &[(
                "kubernetes.io/ingress-bandwidth".to_owned(),
                "1M".to_owned(),
            )]
            .into(),
        )
        .unwrap()
        .unwrap();
        assert_eq!((b.ingress_rate, b.egress_rate), (Some(1_000_000), None));
    }
}
