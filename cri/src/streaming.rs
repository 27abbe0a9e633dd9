//! The streaming server's backend: exec in a container through the runtime's exec helper with the
//! client's streams as its stdio (or a pty the daemon relays, with `tty`), attach through the
//! container's monitor (which outlives the daemon), and port-forward dialled inside the pod's
//! network namespace.

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use carapace_runtime::attach;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;

use crate::container::ContainerApi;
use crate::error::Error;
use crate::stream::{
    AttachRequest, BoxFuture, ExecRequest, PortStream, ProcessIo, StreamBackend, TerminalSize,
};

/// How long a terminal's output may still drain after its command exited (a background process
/// can hold the terminal open for ever).
const OUTPUT_GRACE: Duration = Duration::from_secs(2);

pub(crate) struct Backend {
    pub(crate) containers: Option<ContainerApi>,
    pub(crate) sandboxes: Option<Arc<carapace_podsandbox::Sandboxes>>,
}

impl Backend {
    fn containers(&self) -> Result<&ContainerApi, Error> {
        self.containers
            .as_ref()
            .ok_or_else(|| Error::Unavailable("the container store".into()))
    }

    async fn exec_inner(&self, req: &ExecRequest, io: ProcessIo) -> Result<i32, Error> {
        if io.tty {
            return self.exec_tty(req, io).await;
        }
        let cmd = self
            .containers()?
            .exec_command(&req.container_id, req.cmd.clone())
            .await?;
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.stdin(if io.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(if io.stdout.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(if io.stderr.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        // The server drops this future when the client leaves: the process must go too.
        .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::Internal(format!("starting the exec helper: {e}")))?;
        let copy_in = pump(io.stdin, child.stdin.take());
        let copy_out = pump(child.stdout.take(), io.stdout);
        let copy_err = pump(child.stderr.take(), io.stderr);
        let (status, _, _, _) = tokio::join!(child.wait(), copy_in, copy_out, copy_err);
        let status = status.map_err(|e| Error::Internal(format!("waiting for exec: {e}")))?;
        Ok(status.code().unwrap_or(255))
    }

    /// Exec with a terminal: the helper and the command get a pty's slave, the daemon relays its
    /// master to the client (stderr is merged into it) and applies the client's resizes.
    async fn exec_tty(&self, req: &ExecRequest, io: ProcessIo) -> Result<i32, Error> {
        let (cmd, master) = self
            .containers()?
            .exec_command_tty(&req.container_id, req.cmd.clone())
            .await?;
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::Internal(format!("starting the exec helper: {e}")))?;
        // Our copies of the slave go with the command, so the master reads EOF once the process
        // and its children closed theirs.
        drop(cmd);
        // The master is non-blocking; tokio's pipe halves poll any such fd (a read after the last
        // slave closed fails with EIO, which ends the copy like EOF).
        let half = |what: &str| {
            master
                .try_clone()
                .map_err(|e| Error::Internal(format!("dup pty master for {what}: {e}")))
        };
        let reader = tokio::net::unix::pipe::Receiver::from_owned_fd_unchecked(half("output")?)
            .map_err(|e| Error::Internal(format!("pty master: {e}")))?;
        let writer = tokio::net::unix::pipe::Sender::from_owned_fd_unchecked(half("input")?)
            .map_err(|e| Error::Internal(format!("pty master: {e}")))?;
        let resize = apply_resizes(master, io.resize);
        let input = async {
            // The end of the client's input is not the end of the terminal: keep it open.
            if let (Some(mut from), mut to) = (io.stdin, writer) {
                let _ = tokio::io::copy(&mut from, &mut to).await;
            }
            std::future::pending::<()>().await
        };
        let out = pump(Some(reader), io.stdout);
        tokio::pin!(resize, input, out);
        let mut out_done = false;
        let status = loop {
            tokio::select! {
                s = child.wait() => break s,
                _ = &mut out, if !out_done => out_done = true,
                _ = &mut input => {}
                _ = &mut resize => {}
            }
        };
        if !out_done {
            let _ = tokio::time::timeout(OUTPUT_GRACE, out).await;
        }
        let status = status.map_err(|e| Error::Internal(format!("waiting for exec: {e}")))?;
        Ok(status.code().unwrap_or(255))
    }

    /// Attach: the monitor streams the container's output and takes the client's input and
    /// resizes; ends when the container's output ends (it exited) or the client leaves.
    async fn attach_inner(&self, req: &AttachRequest, io: ProcessIo) -> Result<(), Error> {
        let streams = attach::Streams {
            stdin: io.stdin.is_some(),
            stdout: io.stdout.is_some(),
            stderr: io.stderr.is_some(),
        };
        let (conn, _tty) = self
            .containers()?
            .attach(&req.container_id, streams)
            .await?;
        let conn = conn
            .set_nonblocking(true)
            .and_then(|()| tokio::net::UnixStream::from_std(conn))
            .map_err(|e| Error::Internal(format!("attach socket: {e}")))?;
        let (rd, wr) = conn.into_split();
        tokio::select! {
            _ = attach_output(rd, io.stdout, io.stderr) => {}
            _ = attach_input(wr, io.stdin, io.resize) => {}
        }
        Ok(())
    }

    async fn dial(&self, pod: &str, port: u16) -> Result<Box<dyn PortStream>, Error> {
        let store = self
            .sandboxes
            .clone()
            .ok_or_else(|| Error::Unavailable("the pod sandbox store".into()))?;
        let pod = pod.to_owned();
        let netns: Option<PathBuf> = tokio::task::spawn_blocking(move || {
            let id = store.resolve(&pod)?;
            let sb = store
                .get(&id)
                .ok_or_else(|| carapace_podsandbox::Error::NotFound(id.clone()))?;
            Ok::<_, carapace_podsandbox::Error>(sb.namespaces.net.clone())
        })
        .await
        .map_err(|e| Error::Internal(format!("port-forward task: {e}")))??;
        // Host-network pods have no namespace of their own: their ports are the node's.
        let Some(ns) = netns else {
            let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .map_err(|e| Error::Internal(format!("dialling port {port}: {e}")))?;
            return Ok(Box::new(stream));
        };
        let stream = tokio::task::spawn_blocking(move || connect_in_netns(&ns, port))
            .await
            .map_err(|e| Error::Internal(format!("port-forward task: {e}")))??;
        stream
            .set_nonblocking(true)
            .map_err(|e| Error::Internal(format!("port-forward socket: {e}")))?;
        let stream = tokio::net::TcpStream::from_std(stream)
            .map_err(|e| Error::Internal(format!("port-forward socket: {e}")))?;
        Ok(Box::new(stream))
    }
}

/// Connects to `127.0.0.1:port` inside the network namespace at `ns`. The socket is made on a
/// thread of its own that enters the namespace and then ends, so no daemon thread ever changes
/// namespace; a socket keeps the namespace it was made in.
fn connect_in_netns(ns: &std::path::Path, port: u16) -> Result<std::net::TcpStream, Error> {
    let ns = ns.to_path_buf();
    std::thread::spawn(move || -> Result<std::net::TcpStream, Error> {
        let f = std::fs::File::open(&ns)
            .map_err(|e| Error::Internal(format!("opening {}: {e}", ns.display())))?;
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| Error::Internal(format!("entering {}: {e}", ns.display())))?;
        std::net::TcpStream::connect(("127.0.0.1", port))
            .map_err(|e| Error::Internal(format!("dialling port {port} in the pod: {e}")))
    })
    .join()
    .map_err(|_| Error::Internal("the port-forward thread panicked".into()))?
}

/// Applies the client's terminal sizes to the pty; resolves never (the session ends it).
async fn apply_resizes(master: std::os::fd::OwnedFd, resize: Option<mpsc::Receiver<TerminalSize>>) {
    if let Some(mut rx) = resize {
        while let Some(s) = rx.recv().await {
            if let Err(e) = carapace_runtime::terminal::resize(master.as_fd(), s.width, s.height) {
                tracing::debug!(error = %e, "exec: resizing the terminal");
            }
        }
    }
    std::future::pending::<()>().await
}

/// The monitor's frames to the client's output pipes, until the monitor hangs up.
async fn attach_output(
    mut rd: tokio::net::unix::OwnedReadHalf,
    mut stdout: Option<DuplexStream>,
    mut stderr: Option<DuplexStream>,
) {
    let mut header = [0u8; attach::HEADER];
    let mut payload = vec![0u8; attach::MAX_PAYLOAD];
    loop {
        if rd.read_exact(&mut header).await.is_err() {
            break;
        }
        let Ok((kind, len)) = attach::parse_header(&header) else {
            break;
        };
        if rd.read_exact(&mut payload[..len]).await.is_err() {
            break;
        }
        let to = match kind {
            attach::STDOUT => &mut stdout,
            attach::STDERR => &mut stderr,
            _ => continue,
        };
        // A client that stopped reading one stream still gets the other.
        if let Some(w) = to.as_mut()
            && w.write_all(&payload[..len]).await.is_err()
        {
            *to = None;
        }
    }
    for w in [stdout, stderr].iter_mut().flatten() {
        let _ = w.shutdown().await;
    }
}

/// The client's input and resizes as frames to the monitor. Resolves never: dropping the write
/// half would shut the connection down, which the monitor takes for the client leaving.
async fn attach_input(
    mut wr: tokio::net::unix::OwnedWriteHalf,
    mut stdin: Option<DuplexStream>,
    mut resize: Option<mpsc::Receiver<TerminalSize>>,
) {
    let mut buf = vec![0u8; attach::MAX_PAYLOAD];
    while stdin.is_some() || resize.is_some() {
        let frame = tokio::select! {
            n = async { stdin.as_mut()?.read(&mut buf).await.ok() }, if stdin.is_some() => {
                match n {
                    Some(n) if n > 0 => attach::frame(attach::STDIN, &buf[..n]),
                    _ => {
                        stdin = None;
                        attach::frame(attach::STDIN_CLOSE, &[])
                    }
                }
            }
            s = async { resize.as_mut()?.recv().await }, if resize.is_some() => match s {
                Some(s) => attach::frame(attach::RESIZE, &attach::resize_payload(s.width, s.height)),
                None => {
                    resize = None;
                    continue;
                }
            },
        };
        if wr.write_all(&frame).await.is_err() {
            break;
        }
    }
    std::future::pending::<()>().await;
    drop(wr);
}

/// Copies `from` into `to` until EOF, then closes `to`; a missing side is nothing to do.
async fn pump<R, W>(from: Option<R>, to: Option<W>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    if let (Some(mut r), Some(mut w)) = (from, to) {
        let _ = tokio::io::copy(&mut r, &mut w).await;
        let _ = w.shutdown().await;
    }
}

impl StreamBackend for Backend {
    fn exec<'a>(
        &'a self,
        req: &'a ExecRequest,
        io: ProcessIo,
    ) -> BoxFuture<'a, Result<i32, Error>> {
        Box::pin(self.exec_inner(req, io))
    }

    fn attach<'a>(
        &'a self,
        req: &'a AttachRequest,
        io: ProcessIo,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(self.attach_inner(req, io))
    }

    fn port_forward<'a>(
        &'a self,
        pod_sandbox_id: &'a str,
        port: u16,
    ) -> BoxFuture<'a, Result<Box<dyn PortStream>, Error>> {
        Box::pin(self.dial(pod_sandbox_id, port))
    }
}
