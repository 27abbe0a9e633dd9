//! The streaming server behind `Exec`, `Attach` and `PortForward`: the RPC stores the request under
//! a single-use token and hands back a URL; the kubelet, kubectl (through the kubelet) or crictl
//! then connects to that URL and upgrades to SPDY/3.1 or WebSocket to carry stdin, stdout, stderr,
//! terminal resizes and forwarded ports. This module owns the HTTP server, the tokens, both wire
//! protocols and the remotecommand / port-forward semantics; what runs in a container or dials in
//! a pod is behind [`StreamBackend`], so it never touches namespaces or processes itself.
//!
//! Wire facts follow the kubelet's `pkg/kubelet/cri/streaming` and client-go's clients.

pub(crate) mod fuzzing;
mod http;
mod portforward;
mod remotecommand;
mod session;
mod spdy;
mod token;
mod ws;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, DuplexStream};
use tokio::sync::{Semaphore, mpsc, watch};

use token::{Pending, Tokens};

/// What a backend returns: a boxed future, so that the server can hold `dyn StreamBackend`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("streaming server: binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    InvalidRequest(String),
    #[error("too many pending streaming requests ({0}); try again later")]
    TooManyPending(usize),
    #[error("streaming server: no randomness for a token: {0}")]
    Random(String),
}

/// An `Exec` call, as plain data (the RPC layer has checked that the container runs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    pub container_id: String,
    pub cmd: Vec<String>,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// An `Attach` call, as plain data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachRequest {
    pub container_id: String,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// A `PortForward` call. The ports a client forwards come with each stream; the CRI request's
/// list is informational, as in the kubelet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortForwardRequest {
    pub pod_sandbox_id: String,
    pub ports: Vec<i32>,
}

/// A terminal size from the client's resize stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct TerminalSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// The process side of an exec or attach session. Each handle is one end of a bounded in-memory
/// pipe whose other end the server pumps to and from the client; `None` when the client did not
/// ask for that stream.
pub struct ProcessIo {
    /// Read the client's input here; EOF when the client closes stdin.
    pub stdin: Option<DuplexStream>,
    /// Write the process's output here; shut it down (or drop it) when the output ends.
    pub stdout: Option<DuplexStream>,
    /// Never present with `tty` (a terminal merges stderr into stdout).
    pub stderr: Option<DuplexStream>,
    /// Terminal sizes, the first as soon as the client sends it; present only with `tty`.
    pub resize: Option<mpsc::Receiver<TerminalSize>>,
    pub tty: bool,
}

/// A connection to a port inside a pod.
pub trait PortStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> PortStream for T {}

/// What the streaming server asks of the container layer.
///
/// The server may drop a returned future before it completes (the client went away, the session
/// idled out, the server is shutting down): an implementation must then release what it holds
/// (for exec, kill the process it started).
pub trait StreamBackend: Send + Sync + 'static {
    /// Runs `req.cmd` in the container with `io` as its stdio; resolves to its exit code.
    fn exec<'a>(
        &'a self,
        req: &'a ExecRequest,
        io: ProcessIo,
    ) -> BoxFuture<'a, Result<i32, crate::Error>>;

    /// Connects `io` to the running container's stdio; resolves when the container exits or the
    /// attachment ends.
    fn attach<'a>(
        &'a self,
        req: &'a AttachRequest,
        io: ProcessIo,
    ) -> BoxFuture<'a, Result<(), crate::Error>>;

    /// Dials `port` on the pod's loopback, inside its network namespace.
    fn port_forward<'a>(
        &'a self,
        pod_sandbox_id: &'a str,
        port: u16,
    ) -> BoxFuture<'a, Result<Box<dyn PortStream>, crate::Error>>;
}

/// Bounds on the server; the defaults are the kubelet's and containerd's where they have one.
#[derive(Debug, Clone)]
pub struct Limits {
    /// How long a URL stays valid (kubelet: 1 minute).
    pub token_ttl: Duration,
    /// URLs handed out and not yet used (kubelet: 1000).
    pub max_pending: usize,
    /// Upgraded sessions at once; more get 503.
    pub max_sessions: usize,
    /// HTTP connections at once, upgraded or not; more are closed on accept.
    pub max_connections: usize,
    /// A session with no frame either way for this long is closed (containerd: 4 h).
    pub idle_timeout: Duration,
    /// How long a client has to open the streams it announced (kubelet: 30 s).
    pub stream_creation_timeout: Duration,
    /// Largest SPDY DATA frame or WebSocket message accepted.
    pub max_frame: usize,
    /// Bytes received and not yet consumed, per session.
    pub session_buffer: usize,
    /// SPDY streams open at once per session (port-forward uses two per connection).
    pub max_streams: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            token_ttl: Duration::from_secs(60),
            max_pending: 1000,
            max_sessions: 64,
            max_connections: 256,
            idle_timeout: Duration::from_secs(4 * 3600),
            stream_creation_timeout: Duration::from_secs(30),
            max_frame: 1 << 20,
            session_buffer: 2 << 20,
            max_streams: 128,
        }
    }
}

/// Bytes of each in-memory pipe between a session and the process.
const PIPE_BUFFER: usize = 64 * 1024;

/// Resolves once the server is shutting down (or gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// When a session last moved a frame either way, for the idle timeout.
#[derive(Clone)]
struct Activity(Arc<std::sync::Mutex<std::time::Instant>>);

impl Activity {
    fn new() -> Self {
        Self(Arc::new(std::sync::Mutex::new(std::time::Instant::now())))
    }

    fn touch(&self) {
        if let Ok(mut t) = self.0.lock() {
            *t = std::time::Instant::now();
        }
    }

    /// Resolves once nothing moved for `timeout`.
    async fn idle(&self, timeout: Duration) {
        loop {
            let last = self
                .0
                .lock()
                .map(|t| *t)
                .unwrap_or_else(|_| std::time::Instant::now());
            let deadline = last + timeout;
            if std::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    }
}

struct Inner {
    backend: Arc<dyn StreamBackend>,
    tokens: Tokens,
    limits: Limits,
    sessions: Arc<Semaphore>,
    connections: Arc<Semaphore>,
    shutdown: watch::Receiver<bool>,
}

/// The running streaming server. Dropping it stops it, and ends the sessions in flight.
pub struct StreamServer {
    inner: Arc<Inner>,
    addr: SocketAddr,
    /// The URL prefix, `http://host:port`.
    base: String,
    shutdown: watch::Sender<bool>,
}

impl StreamServer {
    /// Binds `addr` (port 0: the kernel chooses) and serves in the background on the current
    /// tokio runtime.
    pub async fn start(
        addr: SocketAddr,
        backend: Arc<dyn StreamBackend>,
        limits: Limits,
    ) -> Result<Self, StreamError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| StreamError::Bind { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| StreamError::Bind { addr, source })?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let inner = Arc::new(Inner {
            backend,
            tokens: Tokens::new(limits.token_ttl, limits.max_pending),
            sessions: Arc::new(Semaphore::new(limits.max_sessions)),
            connections: Arc::new(Semaphore::new(limits.max_connections)),
            limits,
            shutdown: shutdown_rx,
        });
        tokio::spawn(http::serve(listener, inner.clone()));
        tracing::info!(address = %local, "streaming server listening");
        Ok(Self {
            inner,
            addr: local,
            base: format!("http://{}", url_host(local)),
            shutdown,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stores an exec request and returns its single-use URL.
    pub fn exec_url(&self, req: ExecRequest) -> Result<String, StreamError> {
        if req.container_id.is_empty() {
            return Err(StreamError::InvalidRequest(
                "container id must not be empty".into(),
            ));
        }
        if req.cmd.is_empty() {
            return Err(StreamError::InvalidRequest("cmd must not be empty".into()));
        }
        // Refused here, as ExecSync refuses it, not once the client has connected to the URL:
        // exec(2) cannot take it.
        if req.cmd.iter().any(|a| a.contains('\0')) {
            return Err(StreamError::InvalidRequest(
                "cmd contains a NUL byte".into(),
            ));
        }
        validate_streams(req.tty, req.stdin, req.stdout, req.stderr)?;
        self.url("exec", Pending::Exec(req))
    }

    /// Stores an attach request and returns its single-use URL.
    pub fn attach_url(&self, req: AttachRequest) -> Result<String, StreamError> {
        if req.container_id.is_empty() {
            return Err(StreamError::InvalidRequest(
                "container id must not be empty".into(),
            ));
        }
        validate_streams(req.tty, req.stdin, req.stdout, req.stderr)?;
        self.url("attach", Pending::Attach(req))
    }

    /// Stores a port-forward request and returns its single-use URL.
    pub fn port_forward_url(&self, req: PortForwardRequest) -> Result<String, StreamError> {
        if req.pod_sandbox_id.is_empty() {
            return Err(StreamError::InvalidRequest(
                "pod sandbox id must not be empty".into(),
            ));
        }
        if let Some(p) = req.ports.iter().find(|p| !(1..=65535).contains(*p)) {
            return Err(StreamError::InvalidRequest(format!(
                "port {p} is out of range"
            )));
        }
        self.url("portforward", Pending::PortForward(req))
    }

    fn url(&self, kind: &str, p: Pending) -> Result<String, StreamError> {
        let token = self.inner.tokens.insert(p)?;
        Ok(format!("{}/{kind}/{token}", self.base))
    }

    /// Stops accepting and ends every session.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }
}

impl Drop for StreamServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The host of the URLs: a wildcard bind is reached on loopback, since the kubelet and crictl run
/// on the node.
fn url_host(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => format!("127.0.0.1:{}", a.port()),
        SocketAddr::V6(a) if a.ip().is_unspecified() => format!("[::1]:{}", a.port()),
        a => a.to_string(),
    }
}

/// The kubelet's rule: at least one stream; a terminal has no separate stderr.
fn validate_streams(tty: bool, stdin: bool, stdout: bool, stderr: bool) -> Result<(), StreamError> {
    if !stdin && !stdout && !stderr {
        return Err(StreamError::InvalidRequest(
            "one of stdin, stdout and stderr must be set".into(),
        ));
    }
    if tty && stderr {
        return Err(StreamError::InvalidRequest(
            "tty and stderr cannot both be set".into(),
        ));
    }
    Ok(())
}
