//! The container facade the CRI layer uses: create, start, stop, kill, delete, state, exec, log
//! reopen and resource updates, with everything persisted under `<state>/containers/<id>/` (the
//! bundle) and `<root>/containers/<id>/` (the writable layer), so a restarted daemon reloads its
//! containers while their monitors keep running. It never runs container code in the daemon's own
//! process: the monitor and exec helper are separate (re-exec'd) processes.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use crate::cgroup::ContainerCgroup;
use crate::config::{ContainerConfig, Propagation, Resources, validate_id};
use crate::error::{Error, Result};
use crate::executor::Overlay;
use crate::fsutil::{MountPropagation, mount_propagation, unix_nanos};
use crate::monitor::{self, Exit, HELPER_SUBCOMMAND, Record, Started};

/// Where the runtime keeps things and how it starts its helper processes.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Persistent root (e.g. `/var/lib/carapace`): containers' writable layers.
    pub root: PathBuf,
    /// Volatile state (e.g. `/run/carapace`): bundles, monitor sockets, exit records.
    pub state: PathBuf,
    /// The binary to run as monitor / exec helper (the daemon's own `carapace`).
    pub helper_exe: PathBuf,
    /// Arguments before `monitor|exec <bundle>`; `[HELPER_SUBCOMMAND]` for the daemon.
    pub helper_args: Vec<OsString>,
    /// Keeps `helper_exe`'s read-only bind mounted while the daemon runs.
    pub sealed: Option<std::sync::Arc<crate::sealed::SealedExe>>,
}

impl RuntimeOptions {
    /// The daemon's options: this very binary, started with [`HELPER_SUBCOMMAND`] from its
    /// read-only bind (see [`crate::sealed`]).
    pub fn for_daemon(root: PathBuf, state: PathBuf) -> Result<Self> {
        let sealed = std::sync::Arc::new(crate::sealed::SealedExe::prepare(&state)?);
        Ok(Self {
            root,
            state,
            helper_exe: sealed.path().to_owned(),
            helper_args: vec![HELPER_SUBCOMMAND.into()],
            sealed: Some(sealed),
        })
    }

    /// The sealed binary helpers start from; the pod infra process uses it too.
    pub fn helper_exe(&self) -> &Path {
        &self.helper_exe
    }
}

/// All containers of the node.
#[derive(Debug, Clone)]
pub struct Runtime {
    opts: RuntimeOptions,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Created,
    Running,
    Exited,
}

/// What `ContainerStatus` needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub state: State,
    /// Nanoseconds since the epoch; 0 when not yet.
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub pid: Option<i32>,
    pub exit_code: Option<i32>,
    /// `Completed`, `Error`, `OOMKilled` once exited.
    pub reason: String,
    pub message: String,
}

/// The identity a process has, as `/proc/<pid>/status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessIds {
    /// The real uid and gid.
    pub uid: u32,
    pub gid: u32,
    /// The supplementary groups, sorted (the kernel keeps them so).
    pub groups: Vec<u32>,
}

/// The parent pid and ids of a `/proc/<pid>/status`; `None` when a line is missing or garbled.
fn parse_proc_status(text: &str) -> Option<(i32, ProcessIds)> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(str::split_whitespace)
    };
    let ppid = field("PPid")?.next()?.parse().ok()?;
    let uid = field("Uid")?.next()?.parse().ok()?;
    let gid = field("Gid")?.next()?.parse().ok()?;
    let groups = field("Groups")?
        .map(|g| g.parse().ok())
        .collect::<Option<Vec<u32>>>()?;
    Some((ppid, ProcessIds { uid, gid, groups }))
}

/// ExecSync's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i32,
}

/// The cap on ExecSync output, both streams together. The kubelet (and crictl) take a gRPC
/// message of 16 MiB at most; capped per stream, as containerd does, 16 MiB on each came back
/// as a ResourceExhausted instead of the output. Together, as CRI-O caps them (conmon's
/// `--log-global-size-max`), with 1 KiB left for the reply's own fields: the encoded
/// `ExecSyncResponse` (two tags and lengths of 5 bytes at most each, an exit code of 11 at most)
/// always fits.
pub const EXEC_OUTPUT_CAP: usize = (16 << 20) - 1024;

impl Runtime {
    pub fn new(opts: RuntimeOptions) -> Result<Self> {
        for d in [opts.root.join("containers"), opts.state.join("containers")] {
            std::fs::create_dir_all(&d).map_err(|e| Error::io("create", &d, e))?;
        }
        Ok(Self { opts })
    }

    fn container(&self, id: &str) -> Container {
        Container {
            id: id.to_string(),
            bundle: self.opts.state.join("containers").join(id),
            fs_dir: self.opts.root.join("containers").join(id),
            opts: self.opts.clone(),
        }
    }

    /// Creates the container: spec, writable layer, cgroup with its limits. Nothing runs yet.
    pub fn create(&self, config: ContainerConfig) -> Result<Container> {
        validate_id(&config.id)?;
        let c = self.container(&config.id);
        if c.bundle.join("container.json").exists() {
            return Err(Error::AlreadyExists(format!("container {}", config.id)));
        }
        let r = c.create_files(config);
        if r.is_err() {
            let _ = c.delete();
        }
        r.map(|()| c)
    }

    /// A container created earlier (by this daemon or before its restart).
    pub fn get(&self, id: &str) -> Result<Container> {
        validate_id(id)?;
        let c = self.container(id);
        if !c.bundle.join("container.json").exists() {
            return Err(Error::NotFound(format!("container {id}")));
        }
        Ok(c)
    }

    /// Every container on disk, e.g. to rebuild the daemon's view after a restart.
    /// The directory holding every container's writable layer (the filesystem `ImageFsInfo`
    /// reports as the containers').
    pub fn writable_layers_dir(&self) -> PathBuf {
        self.opts.root.join("containers")
    }

    /// Containers a create left half-made, the daemon having died before their record: a
    /// bundle without `container.json`, or a writable layer without a bundle. Nothing else
    /// knows of them; [`Container::delete`] removes what there is. Only for the daemon's
    /// start, when no create is in flight.
    pub fn half_created(&self) -> Vec<Container> {
        let mut ids: Vec<String> = [
            self.opts.state.join("containers"),
            self.opts.root.join("containers"),
        ]
        .iter()
        .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|id| validate_id(id).is_ok())
        .filter(|id| !self.container(id).bundle.join("container.json").exists())
        .collect();
        ids.sort();
        ids.dedup();
        ids.iter().map(|id| self.container(id)).collect()
    }

    pub fn list(&self) -> Result<Vec<Container>> {
        let dir = self.opts.state.join("containers");
        let entries = std::fs::read_dir(&dir).map_err(|e| Error::io("read", &dir, e))?;
        Ok(entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter_map(|id| self.get(&id).ok())
            .collect())
    }
}

/// A volume can only propagate what its host mount propagates: Bidirectional needs the source on
/// a shared mount, HostToContainer on a shared or slave one (as containerd checks). Refused at
/// create with the mount named, rather than silently propagating nothing.
fn check_propagation(config: &ContainerConfig) -> Result<()> {
    for m in &config.mounts {
        let (needs, ok): (&str, fn(&MountPropagation) -> bool) = match m.propagation {
            Propagation::Private => continue,
            Propagation::HostToContainer => ("a shared or slave", |p| p.shared || p.slave),
            Propagation::Bidirectional => ("a shared", |p| p.shared),
        };
        let p = mount_propagation(&m.host_path)?;
        if !ok(&p) {
            return Err(Error::FailedPrecondition(format!(
                "volume {} ({:?} propagation) is on {}, which is not {needs} mount",
                m.host_path.display(),
                m.propagation,
                p.mount_point.display()
            )));
        }
    }
    Ok(())
}

/// One container, by id; cheap to make, all state is on disk.
#[derive(Debug, Clone)]
pub struct Container {
    id: String,
    bundle: PathBuf,
    fs_dir: PathBuf,
    opts: RuntimeOptions,
}

impl Container {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn bundle(&self) -> &Path {
        &self.bundle
    }

    fn create_files(&self, config: ContainerConfig) -> Result<()> {
        config.cgroup.resources.check_node()?;
        let mkdir = |d: &Path| std::fs::create_dir_all(d).map_err(|e| Error::io("create", d, e));
        mkdir(&self.bundle)?;
        carapace_crashpoint::hit("container: bundle dir made");
        let rootfs = self.bundle.join("rootfs");
        mkdir(&rootfs)?;
        carapace_crashpoint::hit("container: rootfs dir made");
        let overlay = Overlay {
            lower_dirs: config.rootfs.lower_dirs.clone(),
            upper_dir: self.fs_dir.join("upper"),
            work_dir: self.fs_dir.join("work"),
        };
        for l in &overlay.lower_dirs {
            if !l.is_dir() {
                return Err(Error::NotFound(format!("rootfs layer {}", l.display())));
            }
        }
        check_propagation(&config)?;
        crate::image_volume::check(&config, &self.bundle)?;
        mkdir(&overlay.upper_dir)?;
        carapace_crashpoint::hit("container: upper dir made");
        mkdir(&overlay.work_dir)?;
        carapace_crashpoint::hit("container: work dir made");
        let mut spec = crate::spec::build(&config, &rootfs)?;
        if config.oci_runtime.is_some() {
            crate::oci_cli::adapt_spec(&mut spec, &config)?;
        }
        crate::spec::save(&self.bundle, &spec)?;
        carapace_crashpoint::hit("container: spec written");
        let cgroup_path = crate::spec::cgroup_path(&config);
        // The spec's resources, not only the limits: they carry the device rules too.
        let resources = spec
            .linux()
            .as_ref()
            .and_then(|l| l.resources().clone())
            .unwrap_or_default();
        // `create` removes what it made when it fails; past it the cgroup is ours to remove,
        // which `delete` cannot do without the record written next.
        let cgroup = ContainerCgroup::new(&cgroup_path);
        cgroup.create(&resources)?;
        carapace_crashpoint::hit("container: cgroup made");
        // Written last: its presence means the container exists.
        let written = monitor::write_json(
            &self.bundle.join("container.json"),
            &Record {
                config,
                overlay,
                cgroup_path,
                created_at: unix_nanos(SystemTime::now()),
            },
        );
        if written.is_err()
            && let Err(e) = cgroup.destroy(Duration::from_secs(1))
        {
            tracing::warn!(
                container_id = %self.id, error = %e,
                "removing the cgroup of a failed create"
            );
        }
        if written.is_ok() {
            carapace_crashpoint::hit("container: record written");
        }
        written
    }

    fn record(&self) -> Result<Record> {
        monitor::read_json(&self.bundle.join("container.json"))
    }

    pub fn config(&self) -> Result<ContainerConfig> {
        Ok(self.record()?.config)
    }

    pub fn spec(&self) -> Result<oci_spec::runtime::Spec> {
        crate::spec::load(&self.bundle)
    }

    fn started(&self) -> Option<Started> {
        monitor::read_json(&self.bundle.join("runtime.json")).ok()
    }

    fn exit(&self) -> Option<Exit> {
        monitor::read_json(&self.bundle.join("exit.json")).ok()
    }

    fn monitor_alive(&self, started: &Started) -> bool {
        monitor::request(&self.bundle, "ping").is_some_and(|a| a.starts_with("ok"))
            || process_alive(started.monitor_pid)
    }

    pub fn status(&self) -> Result<Status> {
        let record = self.record()?;
        let mut s = Status {
            state: State::Created,
            created_at: record.created_at,
            started_at: 0,
            finished_at: 0,
            pid: None,
            exit_code: None,
            reason: String::new(),
            message: String::new(),
        };
        let Some(started) = self.started() else {
            return Ok(s);
        };
        s.started_at = started.started_at;
        s.pid = Some(started.pid);
        let mut exit = self.exit();
        let alive = exit.is_none() && self.monitor_alive(&started);
        if exit.is_none() && !alive {
            // The monitor writes exit.json, then exits: read before it wrote and checked after it
            // went, the exit looks unrecorded (seen as a spurious 255 under load).
            exit = self.exit();
        }
        if let Some(exit) = exit {
            s.state = State::Exited;
            s.finished_at = exit.finished_at;
            s.exit_code = Some(exit.exit_code);
            s.reason = if exit.oom_killed {
                "OOMKilled"
            } else if exit.exit_code == 0 {
                "Completed"
            } else {
                "Error"
            }
            .into();
            s.pid = None;
        } else if alive {
            s.state = State::Running;
        } else {
            // The monitor died without recording the exit (e.g. killed by hand).
            s.state = State::Exited;
            s.exit_code = Some(255);
            s.reason = "Error".into();
            s.message = "the container's monitor exited without recording its exit".into();
            s.pid = None;
        }
        Ok(s)
    }

    /// The bundle's lock, held by a start and by a delete: a delete racing a start would remove
    /// the cgroup and the bundle under the monitor setting the container up (the start failing
    /// obscurely, the delete with ENOTEMPTY, a process left behind); serialised, the start sees
    /// the container gone or the delete sees it running. `None` when the bundle is gone. The fd
    /// is close-on-exec, so the monitor never inherits the lock.
    fn lock_bundle(&self) -> Result<Option<nix::fcntl::Flock<std::fs::File>>> {
        let dir = match std::fs::File::open(&self.bundle) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("open", &self.bundle, e)),
        };
        nix::fcntl::Flock::lock(dir, nix::fcntl::FlockArg::LockExclusive)
            .map(Some)
            .map_err(|(_, e)| Error::internal(format!("lock {}", self.bundle.display()), e))
    }

    /// Starts the monitor, which starts the container's process; returns once it has exec'd.
    pub fn start(&self) -> Result<i32> {
        let _lock = self
            .lock_bundle()?
            .ok_or_else(|| Error::NotFound(format!("container {}", self.id)))?;
        // Removed while this start waited for the lock.
        if !self.bundle.join("container.json").exists() {
            return Err(Error::NotFound(format!("container {}", self.id)));
        }
        if self.started().is_some() || self.bundle.join("exit.json").exists() {
            return Err(Error::FailedPrecondition(format!(
                "container {} was already started",
                self.id
            )));
        }
        let mut child = Command::new(&self.opts.helper_exe)
            .args(&self.opts.helper_args)
            .arg("monitor")
            .arg(&self.bundle)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| Error::internal("spawn monitor", e))?;
        carapace_crashpoint::hit("container: monitor spawned");
        let mut line = String::new();
        if let Some(mut out) = child.stdout.take() {
            // EOF comes when the detached monitor reports and closes its copy.
            let _ = out.read_to_string(&mut line);
        }
        let _ = child.wait();
        carapace_crashpoint::hit("container: monitor answered");
        let line = line.trim();
        if let Some(pid) = line.strip_prefix("ok ") {
            return pid
                .parse()
                .map_err(|e| Error::internal("monitor answer", e));
        }
        // Removed while it started (RemoveContainer racing StartContainer): the monitor found
        // no record or no bundle to bind its socket in, and the caller must hear NotFound.
        if !self.bundle.join("container.json").exists() {
            return Err(Error::NotFound(format!("container {}", self.id)));
        }
        let msg = line.strip_prefix("error ").unwrap_or(line);
        // fork(2) in a PID namespace whose init has exited fails with ENOMEM: the pod's PID 1
        // is gone, i.e. the pod is stopped or being removed, which "Out of memory" hides.
        if msg.contains(&format!("fork: {}", nix::errno::Errno::ENOMEM.desc())) {
            return Err(Error::FailedPrecondition(format!(
                "start container {}: its pod is not ready: the PID 1 of the pod's PID namespace \
                 has exited (the pod is stopped or being removed)",
                self.id
            )));
        }
        Err(Error::FailedPrecondition(format!(
            "start container {}: {}",
            self.id,
            if msg.is_empty() {
                "the monitor exited without answering"
            } else {
                msg
            }
        )))
    }

    /// Sends `signal` to the init (and with `all`, every process of its cgroup). A no-op once it
    /// exited.
    pub fn kill(&self, signal: i32, all: bool) -> Result<()> {
        let line = format!("kill {signal}{}", if all { " all" } else { "" });
        match monitor::request(&self.bundle, &line) {
            Some(a) if a.starts_with("error") => Err(Error::InvalidArgument(a)),
            _ => Ok(()),
        }
    }

    fn wait_exit(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        // The monitor records the exit and then exits: its end wakes us at once.
        let monitor = self
            .started()
            .and_then(|s| crate::sys::pidfd_open(s.monitor_pid).ok());
        loop {
            if self
                .status()
                .map(|s| s.state != State::Running)
                .unwrap_or(true)
            {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            // Looked at again at least every 100 ms, in case the monitor lingers after recording.
            match &monitor {
                Some(fd) => {
                    crate::sys::wait_readable(
                        std::os::fd::AsFd::as_fd(fd),
                        left.min(Duration::from_millis(100)),
                    );
                }
                None => std::thread::sleep(left.min(Duration::from_millis(10))),
            }
        }
    }

    /// The stop signal (the image's, else SIGTERM), then SIGKILL to everything in the cgroup after
    /// `timeout`. Idempotent.
    pub fn stop(&self, timeout: Duration) -> Result<()> {
        if self.status()?.state != State::Running {
            return Ok(());
        }
        let sig = self.record()?.config.stop_signal.unwrap_or(libc::SIGTERM);
        if !timeout.is_zero() {
            self.kill(sig, false)?;
            carapace_crashpoint::hit("container: stop signal sent");
            if self.wait_exit(timeout) {
                carapace_crashpoint::hit("container: exit seen");
                return Ok(());
            }
        }
        self.kill(libc::SIGKILL, true)?;
        carapace_crashpoint::hit("container: SIGKILL sent");
        if self.wait_exit(Duration::from_secs(10)) {
            carapace_crashpoint::hit("container: exit seen");
            Ok(())
        } else {
            Err(Error::DeadlineExceeded(format!(
                "container {} did not die after SIGKILL",
                self.id
            )))
        }
    }

    /// Stops it if needed, then releases everything: cgroup, writable layer, bundle. Idempotent.
    pub fn delete(&self) -> Result<()> {
        if !self.bundle.exists() && !self.fs_dir.exists() {
            return Ok(());
        }
        // After a start in progress, never during it (see `lock_bundle`).
        let _lock = self.lock_bundle()?;
        let record = self.record().ok();
        if self
            .status()
            .map(|s| s.state == State::Running)
            .unwrap_or(false)
        {
            self.stop(Duration::ZERO)?;
        }
        if let Some(started) = self.started() {
            // The monitor removes its socket and exits right after recording the exit.
            crate::sys::wait_exited(started.monitor_pid, Duration::from_secs(5));
        }
        if let Some(r) = &record {
            if let Some(rt) = &r.config.oci_runtime {
                // Its state, and the cgroups it made in hierarchies carapace does not use.
                crate::oci_cli::delete(rt, &self.bundle, &self.id);
            }
            let cgroup = ContainerCgroup::new(&r.cgroup_path);
            // Whatever is left in it is the container's and goes with it: the monitor kills
            // what its init left behind, but not if it died before it could.
            if !cgroup.procs().is_empty() {
                cgroup.signal_all(nix::sys::signal::Signal::SIGKILL);
            }
            cgroup.destroy(Duration::from_secs(5))?;
            carapace_crashpoint::hit("container: cgroup removed");
        } else if let Some(path) = self
            .spec()
            .ok()
            .and_then(|s| s.linux().clone()?.cgroups_path().clone())
        {
            // Half-created (no record): the spec, written before the cgroup, names it. Nothing
            // ever ran in it.
            ContainerCgroup::new(&path.to_string_lossy()).destroy(Duration::from_secs(1))?;
        }
        for d in [&self.fs_dir, &self.bundle] {
            match std::fs::remove_dir_all(d) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove", d, e)),
            }
            carapace_crashpoint::hit("container: dir removed");
        }
        Ok(())
    }

    /// ReopenContainerLog.
    pub fn reopen_log(&self) -> Result<()> {
        match monitor::request(&self.bundle, "reopen") {
            Some(a) if a == "ok" => Ok(()),
            // The monitor answers with the error's text; its kind is kept (a log path the node
            // made unusable is not the daemon failing).
            Some(a) => {
                let msg = a.strip_prefix("error ").unwrap_or(&a);
                let what = format!("reopen the log of container {}", self.id);
                Err(match msg.strip_prefix("failed precondition: ") {
                    Some(m) => Error::FailedPrecondition(format!("{what}: {m}")),
                    None => Error::Internal(format!("{what}: {msg}")),
                })
            }
            None => Err(Error::FailedPrecondition(format!(
                "container {} is not running",
                self.id
            ))),
        }
    }

    /// UpdateContainerResources: the cgroup changes live and the record keeps the new values.
    pub fn update_resources(&self, resources: &Resources) -> Result<()> {
        resources.validate()?;
        resources.check_node()?;
        let mut record = self.record()?;
        ContainerCgroup::new(&record.cgroup_path)
            .update(&crate::spec::linux_resources(resources)?)?;
        record.config.cgroup.resources = resources.clone();
        monitor::write_json(&self.bundle.join("container.json"), &record)
    }

    /// CPU, memory and process figures of the container's cgroup (NotFound before create made it
    /// or after delete removed it).
    pub fn cgroup_stats(&self) -> Result<crate::stats::CgroupStats> {
        crate::stats::cgroup_stats(&self.record()?.cgroup_path)
    }

    /// The container's writable layer (the overlay's upper dir), for its disk usage.
    pub fn writable_layer(&self) -> PathBuf {
        self.fs_dir.join("upper")
    }

    /// The pid of the container's monitor while it runs (it outlives the container by at most
    /// the moments it takes to record the exit).
    pub fn monitor_pid(&self) -> Option<i32> {
        if self.bundle.join("exit.json").exists() {
            return None;
        }
        self.started().map(|s| s.monitor_pid)
    }

    /// The uid, gid and groups the running container's init has now, read from the kernel rather
    /// than taken from the config; `None` when it is not running or cannot be read.
    pub fn init_ids(&self) -> Option<ProcessIds> {
        let started = self.started()?;
        if self.bundle.join("exit.json").exists() {
            return None;
        }
        let text = std::fs::read_to_string(format!("/proc/{}/status", started.pid)).ok()?;
        let (ppid, ids) = parse_proc_status(&text)?;
        // The init is its monitor's child: under a reused pid is another process's status.
        (ppid == started.monitor_pid).then_some(ids)
    }

    /// A descriptor that becomes readable when the running container's monitor exits, which it
    /// does right after recording the container's exit: a way to notice exits without polling.
    /// `None` when the container is not running (never started, or its exit already recorded).
    pub fn exit_watch(&self) -> Result<Option<std::os::fd::OwnedFd>> {
        let Some(started) = self.started() else {
            return Ok(None);
        };
        if self.bundle.join("exit.json").exists() {
            return Ok(None);
        }
        let fd = match crate::sys::pidfd_open(started.monitor_pid) {
            Ok(fd) => fd,
            // Gone between the two looks: its exit is on disk, or it died without one.
            Err(_) => return Ok(None),
        };
        // The pid may have been reused after a monitor died while the daemon was down: only a
        // monitor that answers on the container's socket is ours.
        if self.status()?.state != State::Running {
            return Ok(None);
        }
        Ok(Some(fd))
    }

    /// The cgroup's directories (one per v1 controller), for callers that read more.
    pub fn cgroup_dirs(&self) -> Result<Vec<PathBuf>> {
        Ok(ContainerCgroup::new(&self.record()?.cgroup_path).dirs())
    }

    /// The command that runs `args` in this running container with the command's own stdio as
    /// the process's stdio (for streaming exec): the caller sets stdio, spawns and waits. The exit
    /// status is the process's (128 + signal when killed).
    pub fn exec_command(&self, args: &[String]) -> Result<Command> {
        self.exec_helper(args, Duration::ZERO, false, false)
    }

    /// As [`Container::exec_command`], with a new pty: the command's stdin, stdout and stderr are
    /// its slave (and its controlling terminal in the container); the caller relays the returned
    /// master and resizes it with [`crate::terminal::resize`].
    pub fn exec_command_tty(&self, args: &[String]) -> Result<(Command, OwnedFd)> {
        let mut cmd = self.exec_helper(args, Duration::ZERO, true, false)?;
        let pty = crate::terminal::open_pty()?;
        let dup = |fd: &OwnedFd| {
            fd.try_clone()
                .map_err(|e| Error::internal("dup pty slave", e))
        };
        cmd.stdin(Stdio::from(dup(&pty.slave)?))
            .stdout(Stdio::from(dup(&pty.slave)?))
            .stderr(Stdio::from(pty.slave));
        Ok((cmd, pty.master))
    }

    /// Connects to the running container's stdio through its monitor (which outlives the daemon).
    /// Returns the connection, past the handshake, speaking [`crate::attach`] frames, and whether
    /// the container has a terminal.
    pub fn attach(&self, streams: crate::attach::Streams) -> Result<(UnixStream, bool)> {
        let not_running =
            || Error::FailedPrecondition(format!("container {} is not running", self.id));
        let dir = std::fs::File::open(&self.bundle).map_err(|_| not_running())?;
        let conn = UnixStream::connect(monitor::short_path(&dir)).map_err(|_| not_running())?;
        let timeout = Some(Duration::from_secs(5));
        conn.set_read_timeout(timeout)
            .and_then(|()| conn.set_write_timeout(timeout))
            .map_err(|e| Error::internal("attach socket", e))?;
        (&conn)
            .write_all(format!("{}\n", streams.request_line()).as_bytes())
            .map_err(|e| Error::internal("attach request", e))?;
        // Byte by byte: what follows the answer line is the container's output.
        let mut answer = Vec::new();
        let mut byte = [0u8; 1];
        while byte[0] != b'\n' && answer.len() < 4096 {
            match (&conn).read(&mut byte) {
                Ok(1) => answer.push(byte[0]),
                Ok(_) => return Err(not_running()),
                Err(e) => return Err(Error::internal("attach answer", e)),
            }
        }
        let answer = String::from_utf8_lossy(&answer).trim().to_string();
        let tty = match answer.as_str() {
            "ok 0" => false,
            "ok 1" => true,
            a => {
                let msg = a.strip_prefix("error ").unwrap_or(a);
                return Err(Error::FailedPrecondition(format!(
                    "attach to container {}: {msg}",
                    self.id
                )));
            }
        };
        conn.set_read_timeout(None)
            .and_then(|()| conn.set_write_timeout(None))
            .map_err(|e| Error::internal("attach socket", e))?;
        Ok((conn, tty))
    }

    /// The exec helper for `args`, the request in its environment so that its stdio is the
    /// process's; the helper kills the process when `timeout` passes (zero: never). With `sync`
    /// the helper relays the output and exits once that has ended (ExecSync).
    fn exec_helper(
        &self,
        args: &[String],
        timeout: Duration,
        tty: bool,
        sync: bool,
    ) -> Result<Command> {
        if self.status()?.state != State::Running {
            return Err(Error::FailedPrecondition(format!(
                "container {} is not running",
                self.id
            )));
        }
        if args.is_empty() {
            return Err(Error::InvalidArgument("exec needs a command".into()));
        }
        // The init may be gone while its monitor has yet to record the exit, and its pid taken
        // by another process: refused here with the reason. The helper checks again where it
        // joins the namespaces, which is what keeps it out of another process's.
        if let Some(started) = self.started() {
            started.open_init(&ContainerCgroup::new(&self.record()?.cgroup_path))?;
        }
        let req = serde_json::to_string(&monitor::ExecRequest {
            args: args.to_vec(),
            timeout_ms: timeout.as_millis() as u64,
            tty,
            sync,
            sent_at: unix_nanos(SystemTime::now()),
        })
        .map_err(|e| Error::internal("exec request", e))?;
        let mut cmd = Command::new(&self.opts.helper_exe);
        cmd.args(&self.opts.helper_args)
            .arg("exec")
            .arg(&self.bundle)
            .env(monitor::EXEC_REQUEST_ENV, req);
        Ok(cmd)
    }

    /// ExecSync: runs `args` in the container's namespaces and cgroup with its user, capabilities
    /// and seccomp. Done once the command has exited and its output has ended (a background
    /// child may hold it); when `timeout` passes first, its process group is killed and the
    /// answer is DeadlineExceeded. Without a timeout, the output is read up to a short grace
    /// after the command's exit (see `monitor::exec_relayed`).
    pub fn exec_sync(&self, args: &[String], timeout: Duration) -> Result<ExecOutput> {
        let started = Instant::now();
        let mut child = self
            .exec_helper(args, timeout, false, true)?
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::internal("spawn exec helper", e))?;
        let streams = [
            child
                .stdout
                .take()
                .map(|f| std::fs::File::from(OwnedFd::from(f))),
            child
                .stderr
                .take()
                .map(|f| std::fs::File::from(OwnedFd::from(f))),
        ];
        // The helper is the only writer of these pipes and exits by the timeout (see
        // `monitor::exec_relayed`); one that has not by a moment later is killed and no longer
        // read, so no call outlives its timeout whatever holds the command's output.
        let deadline = (!timeout.is_zero()).then(|| started + timeout + EXEC_HELPER_GRACE);
        let [stdout, stderr] = read_capped(streams, deadline);
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = child.kill();
        }
        let status = child
            .wait()
            .map_err(|e| Error::internal("wait exec helper", e))?;
        let code = status.code().unwrap_or(255);
        if !timeout.is_zero() && started.elapsed() >= timeout {
            return Err(Error::DeadlineExceeded(format!(
                "exec in {} timed out after {timeout:?}",
                self.id
            )));
        }
        if code == 125 {
            return Err(Error::Internal(
                String::from_utf8_lossy(&stderr).trim().to_string(),
            ));
        }
        Ok(ExecOutput {
            stdout,
            stderr,
            exit_code: code,
        })
    }
}

/// How long past an ExecSync's timeout its helper may take to kill the command and exit.
const EXEC_HELPER_GRACE: Duration = Duration::from_millis(500);

/// Reads both streams to their end, [`EXEC_OUTPUT_CAP`] bytes of the two together at most (once
/// it is reached neither is read any more, so the command's further writes fail), in the
/// calling thread; stops at `deadline` whatever is left.
fn read_capped(mut streams: [Option<std::fs::File>; 2], deadline: Option<Instant>) -> [Vec<u8>; 2] {
    use std::os::fd::AsFd;
    let mut out = [Vec::new(), Vec::new()];
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if left.is_some_and(|l| l.is_zero()) {
            return out;
        }
        let mut fds = Vec::new();
        let mut slots = Vec::new();
        for (i, s) in streams.iter().enumerate() {
            if let Some(f) = s {
                fds.push(f.as_fd());
                slots.push(i);
            }
        }
        if fds.is_empty() {
            return out;
        }
        let Ok(ready) = crate::fsutil::readable(&fds, left) else {
            return out;
        };
        let ready: Vec<usize> = ready.into_iter().map(|p| slots[p]).collect();
        drop(fds);
        for i in ready {
            let room = (EXEC_OUTPUT_CAP - out[0].len() - out[1].len()).min(buf.len());
            let n = streams[i]
                .as_mut()
                .map(|f| f.read(&mut buf[..room]))
                .unwrap_or(Ok(0));
            match n {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Ok(0) | Err(_) => streams[i] = None,
                Ok(n) => {
                    out[i].extend_from_slice(&buf[..n]);
                    if out[0].len() + out[1].len() >= EXEC_OUTPUT_CAP {
                        return out;
                    }
                }
            }
        }
    }
}

/// True while `pid` exists and is not a zombie.
fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_status_ids_are_the_real_ones() {
        let status = "Name:\tsh\nTgid:\t42\nPid:\t42\nPPid:\t7\nTracerPid:\t0\n\
                      Uid:\t1000\t0\t0\t0\nGid:\t1000\t1000\t1000\t1000\nFDSize:\t64\n\
                      Groups:\t1000 1234 \nNStgid:\t42\t1\n";
        let (ppid, ids) = parse_proc_status(status).unwrap();
        assert_eq!(ppid, 7);
        assert_eq!(
            ids,
            ProcessIds {
                uid: 1000,
                gid: 1000,
                groups: vec![1000, 1234]
            }
        );
        let none = status.replace("Groups:\t1000 1234 ", "Groups:\t");
        assert!(parse_proc_status(&none).unwrap().1.groups.is_empty());
        assert!(parse_proc_status("Uid:\t0\t0\t0\t0\n").is_none());
        assert!(parse_proc_status(&status.replace("Groups:\t1000", "Groups:\tx")).is_none());
    }

    /// The running test's own status parses, and says what the kernel says of it.
    #[test]
    fn own_proc_status_parses() {
        let text = std::fs::read_to_string("/proc/self/status").unwrap();
        let (ppid, ids) = parse_proc_status(&text).unwrap();
        assert_eq!(ppid, nix::unistd::getppid().as_raw());
        assert_eq!(ids.uid, nix::unistd::getuid().as_raw());
        assert_eq!(ids.gid, nix::unistd::getgid().as_raw());
    }

    /// Two commands' worth of 20 MiB, one on each stream: what is read stops at the cap over
    /// both together (the kubelet takes no more in one reply), and the writers' further writes
    /// fail instead of blocking.
    #[test]
    fn exec_output_is_capped_over_both_streams_together() {
        let mut streams = [None, None];
        let mut writers = Vec::new();
        for s in &mut streams {
            let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
            *s = Some(std::fs::File::from(r));
            writers.push(std::thread::spawn(move || {
                let mut w = std::fs::File::from(w);
                let chunk = vec![7u8; 1 << 20];
                (0..20).any(|_| std::io::Write::write_all(&mut w, &chunk).is_err())
            }));
        }
        let out = read_capped(streams, Some(Instant::now() + Duration::from_secs(30)));
        assert_eq!(out[0].len() + out[1].len(), EXEC_OUTPUT_CAP);
        assert!(out.iter().flatten().all(|&b| b == 7));
        for w in writers {
            assert!(w.join().unwrap(), "a writer got all of its 20 MiB through");
        }
    }
}
