//! `carapace serve`: the daemon's start, its listeners and its orderly stop.
//!
//! Start order matters: the lock on the root comes first (so a second daemon never touches the
//! first one's socket), then the socket, then the services. Stop is the reverse: stop accepting,
//! let in-flight calls finish for a bounded time, remove the socket. The lock is never given back:
//! the kernel drops it when the process is gone, so nothing this process still does (a call cut
//! off by the grace finishing, the sealed binary's unmount) can touch a successor's files.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use carapace_cri::config::{self, Config, LogFormat, LogLevel};
use nix::fcntl::{Flock, FlockArg};
use tokio::net::UnixListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnixListenerStream;

/// How long in-flight calls may run on after SIGTERM before the daemon exits anyway; well under
/// systemd's default stop timeout of 90 s.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long the whole stop may take, whatever the daemon's threads are doing: the grace, then up
/// to 1 s for the metrics server, 1 s for the runtime's threads and a few seconds to spare for
/// the sockets and the sealed binary's unmount. A thread stuck in the kernel or on a child must
/// not keep a half-stopped daemon alive: it still holds the root lock, so the restart that
/// follows a stop would wait on it. Still well under systemd's 90 s, so the stop ends by our
/// exit rather than its SIGKILL.
const STOP_DEADLINE: Duration = Duration::from_secs(15);
/// How long the runtime's blocking threads (a call the grace cut off) are waited for once the
/// server has stopped; what still runs then ends with the process.
const THREADS_GRACE: Duration = Duration::from_secs(1);

pub fn load_config(path: Option<&Path>) -> Result<Config> {
    let (path, explicit) = match path {
        Some(p) => (p.to_path_buf(), true),
        None => (PathBuf::from(config::DEFAULT_PATH), false),
    };
    Ok(Config::load(&path, explicit)?)
}

pub fn run(config_path: Option<PathBuf>) -> Result<()> {
    let started = Instant::now();
    let config = load_config(config_path.as_deref())?;
    init_logging(&config.log)?;
    make_dir(&config.root, 0o711)?;
    make_dir(&config.state, 0o711)?;
    // Held until the process is gone: never unlocked, never closed, and no destructor may drop
    // it (a runtime drop waits for blocking threads, and the daemon used to give the lock back
    // before that: a second daemon started, and the first, exiting, removed its sealed binary).
    // The kernel releases it with the last thread; O_CLOEXEC keeps it out of helpers.
    std::mem::forget(lock_root(&config.root)?);
    crate::memory::limit_arenas();
    // Two workers: the CRI is mostly waiting on the kernel and on children, and a node agent
    // should not claim a thread per core.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let outcome = rt.block_on(serve(config, started));
    // Dropping the runtime would wait for every blocking thread without bound (an ExecSync of a
    // long command): they are given a moment, then left to end with the process.
    rt.shutdown_timeout(THREADS_GRACE);
    tracing::info!("carapace stopped");
    outcome
}

/// From the start of the stop, a thread that ends the process at [`STOP_DEADLINE`] whatever the
/// others are doing (the main thread included: a drop or an unmount may hang too).
fn exit_at_the_deadline() {
    let spawned = std::thread::Builder::new()
        .name("stop-deadline".into())
        .spawn(|| {
            std::thread::sleep(STOP_DEADLINE);
            tracing::error!(
                deadline_s = STOP_DEADLINE.as_secs(),
                "the stop overran its deadline; exiting now"
            );
            // No destructor runs: the root lock goes with the process, and with it the files
            // only its holder may remove are left for the next daemon to replace.
            std::process::exit(1);
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the stop's deadline thread");
    }
}

fn init_logging(log: &config::Log) -> Result<()> {
    let level = match log.level {
        LogLevel::Error => "error",
        LogLevel::Warn => "warn",
        LogLevel::Info => "info",
        LogLevel::Debug => "debug",
        LogLevel::Trace => "trace",
    };
    // RUST_LOG, when set, refines the configured level (e.g. `carapace_cri=trace`).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let res = match log.format {
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
        LogFormat::Text => builder.with_ansi(false).try_init(),
    };
    res.map_err(|e| anyhow::anyhow!("setting up logging: {e}"))
}

async fn serve(config: Config, started: Instant) -> Result<()> {
    // Before anything can see the daemon (socket, READY): a SIGTERM that arrives as soon as the
    // socket answers must take the orderly way out, not the default disposition (seen in CI: a
    // test stopping a just-started daemon got "killed by signal 15").
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;

    let metrics = carapace_metrics::Metrics::new(env!("CARGO_PKG_VERSION"))?;
    let cri = carapace_cri::Cri::open(
        config.clone(),
        env!("CARGO_PKG_VERSION"),
        metrics.registry(),
    )
    .context("opening the image store")?
    .with_metrics(metrics.clone())
    .with_containers()
    .context("opening the container store")?;
    // The pod infra process (PID 1 of a shared PID namespace) is this binary in its `infra` role,
    // started from the same read-only bind as the container helpers.
    let infra = carapace_cri::InfraCommand {
        program: cri
            .helper_exe()
            .map_or_else(|| "/proc/self/exe".into(), |p| p.to_owned()),
        args: vec![crate::INFRA_SUBCOMMAND.into()],
    };
    let cri = cri
        .with_sandboxes(Some(infra))
        .context("opening the sandbox store")?
        .with_streaming()
        .await
        .context("starting the streaming server")?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        // An error means the sender is gone, which only happens on the way out: stop as well.
        let _ = rx.wait_for(|s| *s).await;
    };

    let (metrics_addr, metrics_server) = carapace_metrics::serve(
        config.metrics.address,
        metrics.clone(),
        stopped(stop_rx.clone()),
    )
    .await?;
    let metrics_task = tokio::spawn(metrics_server);
    tokio::spawn(crate::memory::trim_periodically());

    let socket = &config.grpc.address;
    // The admin socket before the CRI one: clients take an answering CRI socket as "started",
    // and the admin socket must exist with its mode by then (seen in CI: a test read it 0755,
    // between bind and chmod).
    let admin_socket = crate::image::admin_socket(&config);
    let admin = bind_socket(&admin_socket, 0o600)?;
    // 0660: root and the socket's group (kubelet runs as root; a group lets crictl users in).
    let listener = bind_socket(socket, 0o660)?;
    let grpc = tonic::transport::Server::builder()
        .trace_fn(carapace_cri::call_span)
        .layer(carapace_metrics::CriMetricsLayer::new(metrics))
        .add_service(cri.runtime_service())
        .add_service(cri.image_service())
        .serve_with_incoming_shutdown(cri_connections(listener), stopped(stop_rx));
    let mut grpc_task = tokio::spawn(grpc);
    let admin_task = tokio::spawn(crate::image::serve_admin(admin, std::sync::Arc::new(cri)));

    tracing::info!(
        socket = %socket.display(),
        metrics = %metrics_addr,
        root = %config.root.display(),
        state = %config.state.display(),
        startup_ms = started.elapsed().as_millis() as u64,
        version = env!("CARGO_PKG_VERSION"),
        "carapace is serving the CRI"
    );

    crate::notify::notify("READY=1\nSTATUS=serving the CRI");
    // The node's checks, once, as warnings: after READY and in their own task (the probes block,
    // registries may take seconds to answer), so start-up never waits on them.
    tokio::spawn(crate::memory::release_start_up(crate::check::log_at_start(
        config.clone(),
    )));

    let early_exit = tokio::select! {
        _ = term.recv() => { tracing::info!("SIGTERM: stopping"); None }
        _ = int.recv() => { tracing::info!("SIGINT: stopping"); None }
        res = &mut grpc_task => Some(res),
    };

    exit_at_the_deadline();
    crate::notify::notify("STOPPING=1");
    // Stop accepting first, so nothing new starts while in-flight calls drain.
    let _ = stop_tx.send(true);
    let outcome = match early_exit {
        Some(res) => match res {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(anyhow::Error::new(e).context("the gRPC server failed")),
            Err(e) => Err(anyhow::Error::new(e).context("the gRPC server task died")),
        },
        None => match tokio::time::timeout(SHUTDOWN_GRACE, grpc_task).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(anyhow::Error::new(e).context("the gRPC server failed")),
            Ok(Err(e)) => Err(anyhow::Error::new(e).context("the gRPC server task died")),
            Err(_) => {
                tracing::warn!(
                    grace_s = SHUTDOWN_GRACE.as_secs(),
                    "in-flight calls did not finish in time; exiting anyway"
                );
                Ok(())
            }
        },
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), metrics_task).await;
    // An import in flight stops here; what it stored unrecorded is collected at the next start.
    admin_task.abort();
    for s in [socket, &admin_socket] {
        if let Err(e) = fs::remove_file(s)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(error = %e, socket = %s.display(), "removing the socket");
        }
    }
    outcome
}

/// The CRI socket's connections, each with the `:authority` of its calls made acceptable to h2
/// (grpc-core and grpc-java clients send the socket's path: see [`crate::authority`]).
fn cri_connections(
    listener: UnixListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<crate::authority::AuthorityRewrite>> {
    UnixListenerStream::new(listener).map(|c| c.map(crate::authority::AuthorityRewrite::new))
}

pub(crate) fn make_dir(path: &Path, mode: u32) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .with_context(|| format!("creating {}", path.display()))
}

/// Takes the lock that makes this daemon the only one on `root`. The lock is held for the life of
/// the process (the kernel drops it when the process dies, so a crash never leaves a stale lock);
/// the file holds the pid for the operator's benefit.
fn lock_root(root: &Path) -> Result<Flock<File>> {
    match try_lock_root(root)? {
        Some(lock) => Ok(lock),
        None => {
            let path = root.join("carapace.lock");
            let owner = fs::read_to_string(&path).unwrap_or_default();
            bail!(
                "another carapace is already running with root {} (pid {}, lock file {}); \
                 stop it first, or give this one its own root",
                root.display(),
                owner.trim(),
                path.display()
            );
        }
    }
}

/// The root lock, or `None` when another process (a daemon) holds it.
pub(crate) fn try_lock_root(root: &Path) -> Result<Option<Flock<File>>> {
    let path = root.join("carapace.lock");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(nix::libc::O_CLOEXEC)
        .open(&path)
        .with_context(|| format!("opening the lock file {}", path.display()))?;
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Ok(None),
        Err((_, e)) => {
            return Err(e).with_context(|| format!("locking {}", path.display()));
        }
    };
    lock.set_len(0)
        .and_then(|()| writeln!(&mut *lock, "{}", std::process::id()))
        .with_context(|| format!("writing the pid to {}", path.display()))?;
    Ok(Some(lock))
}

/// Binds a socket of the daemon with `mode`. Called with the root lock held, so a socket already
/// there is a leftover of a daemon that died, and is replaced.
pub(crate) fn bind_socket(path: &Path, mode: u32) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        make_dir(dir, 0o711)?;
    }
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_dir() => {
            bail!("the socket path {} is a directory", path.display())
        }
        Ok(_) => {
            tracing::info!(socket = %path.display(), "replacing a stale socket");
            fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("inspecting {}", path.display())),
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    Ok(listener)
}
