//! `carapace image import FILE`: loads an OCI image layout or `docker save` archive on a node that
//! cannot reach a registry. While a daemon holds the root, the import goes through it (so its
//! `ListImages` shows the image at once and no two processes write the store): the daemon serves
//! `<state>/admin.sock`, root only, one JSON request line answered by one JSON line. With no
//! daemon, the command takes the root lock itself and imports directly.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use carapace_cri::config::Config;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// The admin socket, under the state dir.
const ADMIN_SOCKET: &str = "admin.sock";
/// A request is a path and a name: anything longer is not ours.
const MAX_REQUEST: u64 = 64 * 1024;
/// How long the command waits for a daemon that holds the root lock but is still starting.
const CONNECT_WAIT: Duration = Duration::from_secs(10);

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Request {
    Import {
        path: PathBuf,
        base_name: Option<String>,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Response {
    Imported(Vec<Imported>),
    Error(String),
}

#[derive(Serialize, Deserialize)]
struct Imported {
    id: String,
    repo_tags: Vec<String>,
}

/// Root only (0600): whoever can write to it makes the daemon read any file as root.
pub fn admin_socket(config: &Config) -> PathBuf {
    config.state.join(ADMIN_SOCKET)
}

/// Serves the admin socket until the task is aborted. Each connection is one request.
pub async fn serve_admin(listener: UnixListener, cri: Arc<carapace_cri::Cri>) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "admin socket accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let cri = cri.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &cri).await {
                tracing::warn!(error = %e, "admin request");
            }
        });
    }
}

async fn answer(stream: UnixStream, cri: &carapace_cri::Cri) -> Result<()> {
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    BufReader::new(r.take(MAX_REQUEST))
        .read_line(&mut line)
        .await
        .context("reading the request")?;
    let response = match serde_json::from_str::<Request>(&line) {
        Err(e) => Response::Error(format!("bad admin request: {e}")),
        Ok(Request::Import { path, base_name }) => {
            match cri.import_images(&path, base_name.as_deref()).await {
                Ok(images) => Response::Imported(images.into_iter().map(imported).collect()),
                Err(e) => Response::Error(e.to_string()),
            }
        }
    };
    let mut out = serde_json::to_vec(&response)?;
    out.push(b'\n');
    w.write_all(&out).await.context("writing the answer")?;
    Ok(())
}

fn imported(img: carapace_cri::api::Image) -> Imported {
    Imported {
        id: img.id,
        repo_tags: img.repo_tags,
    }
}

/// `carapace image import`: through the daemon if one holds the root, else directly.
pub fn import(config_path: Option<&Path>, file: &Path, base_name: Option<&str>) -> Result<()> {
    let config = crate::serve::load_config(config_path)?;
    // `-`: the archive comes on stdin; a temp file in the state dir lets the daemon read it too.
    let _stdin_copy;
    let file = if file == Path::new("-") {
        crate::serve::make_dir(&config.state, 0o711)?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".import-")
            .tempfile_in(&config.state)
            .context("creating a temp file for stdin")?;
        std::io::copy(&mut std::io::stdin().lock(), &mut tmp).context("reading stdin")?;
        tmp.flush()?;
        let p = tmp.path().to_path_buf();
        _stdin_copy = tmp;
        p
    } else {
        // The daemon resolves relative paths from its own directory, not ours.
        std::path::absolute(file).with_context(|| format!("resolving {}", file.display()))?
    };
    if !file.is_file() {
        bail!("{} is not a file", file.display());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    crate::serve::make_dir(&config.root, 0o711)?;
    let images = match crate::serve::try_lock_root(&config.root)? {
        // No daemon: this process owns the root until the import is done.
        Some(_lock) => rt.block_on(async {
            let metrics = carapace_metrics::Metrics::new(env!("CARGO_PKG_VERSION"))?;
            let cri = carapace_cri::Cri::open(
                config.clone(),
                env!("CARGO_PKG_VERSION"),
                metrics.registry(),
            )
            .context("opening the image store")?;
            let images = cri.import_images(&file, base_name).await?;
            Ok::<_, anyhow::Error>(images.into_iter().map(imported).collect())
        })?,
        None => rt.block_on(ask_daemon(
            &admin_socket(&config),
            &Request::Import {
                path: file.clone(),
                base_name: base_name.map(str::to_owned),
            },
        ))?,
    };
    for img in &images {
        if img.repo_tags.is_empty() {
            println!("{}", img.id);
        }
        for tag in &img.repo_tags {
            println!("{tag} {}", img.id);
        }
    }
    Ok(())
}

async fn ask_daemon(socket: &Path, req: &Request) -> Result<Vec<Imported>> {
    let started = Instant::now();
    let mut stream = loop {
        match UnixStream::connect(socket).await {
            Ok(s) => break s,
            // The daemon took the lock but has not bound its socket yet.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) && started.elapsed() < CONNECT_WAIT =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => {
                return Err(anyhow!(e)).with_context(|| {
                    format!(
                        "a carapace daemon holds the root but does not answer on {}",
                        socket.display()
                    )
                });
            }
        }
    };
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    stream
        .write_all(&line)
        .await
        .context("sending the request to the daemon")?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .await
        .context("reading the daemon's answer")?;
    if answer.is_empty() {
        bail!("the daemon closed the admin connection without an answer (see its log)");
    }
    match serde_json::from_str(&answer).context("the daemon's answer does not parse")? {
        Response::Imported(images) => Ok(images),
        Response::Error(e) => bail!("{e}"),
    }
}
