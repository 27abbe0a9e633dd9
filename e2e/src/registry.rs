//! A real registry on loopback for the image and container tests: Debian's `docker-registry`,
//! filled by `skopeo` from an OCI layout built out of `/bin/busybox`, and reached by the daemon
//! through a `hosts.toml` in its private `certs.d` (only that file knows where [`REGISTRY`] is).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::{Daemon, DaemonConfig, free_port, http_get};

/// The registry name the tests pull from; only the daemon's hosts.toml knows where it is.
pub const REGISTRY: &str = "registry.e2e.test";

/// The busybox applets the image links into `/bin` (besides `sh`), for the container tests.
pub const APPLETS: &[&str] = &[
    "cat", "echo", "env", "hostname", "id", "ls", "sleep", "touch", "true", "false",
];

/// Builds an OCI image layout at `layout`, tag `v1`, with gzip layers: busybox with `sh` and the
/// [`APPLETS`] linked to it, the usual empty mount points and a file; then one layer per
/// directory in `extra` (host paths, stored at the same path).
pub fn build_layout(layout: &Path, work: &Path, extra: &[&str]) {
    let script = r#"
set -eu
L=$1; W=$2; APPLETS=$3; shift 3
mkdir -p "$W/rootfs/bin" "$W/rootfs/etc" "$L/blobs/sha256"
for d in dev proc sys tmp; do mkdir -p "$W/rootfs/$d"; done
chmod 1777 "$W/rootfs/tmp"
cp /bin/busybox "$W/rootfs/bin/busybox"
ln -s busybox "$W/rootfs/bin/sh"
for a in $APPLETS; do ln -s busybox "$W/rootfs/bin/$a"; done
echo carapace-e2e > "$W/rootfs/etc/hostname"
blob() { h=$(sha256sum "$1" | cut -d' ' -f1); cp "$1" "$L/blobs/sha256/$h"; echo "$h $(stat -c %s "$1")"; }
diffs=""; layers=""; n=0
layer() {
  n=$((n+1))
  tar --numeric-owner --owner=0 --group=0 --mtime=@0 --sort=name "$@" -cf "$W/layer$n.tar"
  d=$(sha256sum "$W/layer$n.tar" | cut -d' ' -f1)
  gzip -n -c "$W/layer$n.tar" > "$W/layer$n.tar.gz"
  set -- $(blob "$W/layer$n.tar.gz")
  diffs="$diffs${diffs:+,}\"sha256:$d\""
  layers="$layers${layers:+,}{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$1\",\"size\":$2}"
}
layer -C "$W/rootfs" .
for dir in "$@"; do layer -C / "${dir#/}"; done
arch=$(dpkg --print-architecture)
printf '{"architecture":"%s","os":"linux","config":{"Cmd":["/bin/sh"],"User":"0"},"rootfs":{"type":"layers","diff_ids":[%s]}}' "$arch" "$diffs" > "$W/config.json"
set -- $(blob "$W/config.json"); ch=$1; csz=$2
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[%s]}' "$ch" "$csz" "$layers" > "$W/manifest.json"
set -- $(blob "$W/manifest.json"); mh=$1; msz=$2
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"v1"}}]}' "$mh" "$msz" > "$L/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' > "$L/oci-layout"
"#;
    let out = std::process::Command::new("sh")
        .args(["-c", script, "build-layout"])
        .arg(layout)
        .arg(work)
        .arg(APPLETS.join(" "))
        .args(extra)
        .output()
        .expect("running sh");
    assert!(
        out.status.success(),
        "building the OCI layout: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Debian's docker-registry on a free loopback port, storing in a temp dir; killed on drop.
pub struct Registry {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// A registry holding `e2e/busybox:v1` (OCI) and `e2e/busybox:docker` (Docker schema2).
    pub async fn start() -> Registry {
        let mut r = Self::empty().await;
        r.push("e2e/busybox", &[]).await;
        r
    }

    /// The busybox image's name as the daemon pulls it (OCI format).
    pub fn busybox() -> String {
        format!("{REGISTRY}/e2e/busybox:v1")
    }

    pub async fn empty() -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("carapace-e2e-registry.")
            .tempdir_in("/tmp")
            .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
                dir.path().join("storage").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("starting docker-registry (deploy/install-deps.sh test installs it)");
        let started = Instant::now();
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                let (status, _) = http_get(addr, "/v2/").await;
                if status == 200 {
                    break;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "docker-registry did not answer on {addr}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Registry {
            child,
            addr,
            _dir: dir,
        }
    }

    /// Pushes an image built by [`build_layout`] as `<repo>:v1` (OCI) and `<repo>:docker`
    /// (Docker schema2).
    pub async fn push(&mut self, repo: &str, extra: &[&str]) {
        let work = tempfile::tempdir().unwrap();
        let layout = work.path().join("layout");
        build_layout(&layout, &work.path().join("build"), extra);
        for (tag, format) in [("v1", "oci"), ("docker", "v2s2")] {
            let out = Command::new("skopeo")
                .args([
                    "--insecure-policy",
                    "copy",
                    "--quiet",
                    "--dest-tls-verify=false",
                ])
                .args(["--format", format])
                .arg(format!("oci:{}:v1", layout.display()))
                .arg(format!("docker://{}/{repo}:{tag}", self.addr))
                .output()
                .await
                .expect("running skopeo");
            assert!(
                out.status.success(),
                "skopeo copy: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// Writes the `hosts.toml` in `cfg`'s `certs.d` that sends [`REGISTRY`] here, over plain HTTP.
    pub fn configure(&self, cfg: &DaemonConfig) {
        let hosts = cfg.dir().join("certs.d").join(REGISTRY);
        std::fs::create_dir_all(&hosts).unwrap();
        std::fs::write(
            hosts.join("hosts.toml"),
            format!(
                "server = \"http://{0}\"\n\n[host.\"http://{0}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
                self.addr
            ),
        )
        .unwrap();
    }

    /// A daemon with a default private configuration whose `certs.d` points here.
    pub async fn daemon(&self) -> Daemon {
        let cfg = DaemonConfig::new();
        self.configure(&cfg);
        Daemon::start_with(cfg).await
    }

    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}
