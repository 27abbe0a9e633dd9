//! The streaming server's backend: exec in a container through the runtime's exec helper with the
//! client's streams as its stdio, and port-forward dialled inside the pod's network namespace.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::container::ContainerApi;
use crate::error::Error;
use crate::stream::{AttachRequest, BoxFuture, ExecRequest, PortStream, ProcessIo, StreamBackend};

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
            return Err(Error::Unimplemented("exec with a terminal"));
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
        _req: &'a AttachRequest,
        _io: ProcessIo,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async { Err(Error::Unimplemented("Attach")) })
    }

    fn port_forward<'a>(
        &'a self,
        pod_sandbox_id: &'a str,
        port: u16,
    ) -> BoxFuture<'a, Result<Box<dyn PortStream>, Error>> {
        Box::pin(self.dial(pod_sandbox_id, port))
    }
}
