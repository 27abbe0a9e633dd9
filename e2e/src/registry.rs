//! A real registry on loopback for the image and container tests: Debian's `docker-registry`
//! (optionally behind htpasswd basic auth), filled by `skopeo` from OCI layouts built out of
//! `/bin/busybox` or crafted entry by entry ([`Entry`]), and reached by the daemon through a
//! `hosts.toml` in its private `certs.d` (only that file knows where the registry is).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::{Daemon, DaemonConfig, free_port, try_http_get};

/// The registry name the tests pull from; only the daemon's hosts.toml knows where it is.
pub const REGISTRY: &str = "registry.e2e.test";

/// The busybox applets the image links into `/bin` (besides `sh`), for the container tests.
pub const APPLETS: &[&str] = &[
    "cat", "echo", "env", "hostname", "id", "ls", "sleep", "touch", "true", "false", "mkdir",
    "mount", "seq", "unshare",
];

/// Builds an OCI image layout at `layout`, tag `v1`, with gzip layers: busybox with `sh` and the
/// [`APPLETS`] linked to it, the usual empty mount points and a file; then one layer per
/// directory in `extra` (host paths, stored at the same path; one written `=<dir>` is stored at
/// the image's root instead, e.g. an `etc/passwd` of its own).
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
for dir in "$@"; do
  case $dir in
    =*) layer -C "${dir#=}" . ;;
    *) layer -C / "${dir#/}" ;;
  esac
done
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

/// One tar entry of a crafted layer. python3's `tarfile` writes them, as it writes what GNU tar
/// will not (`../x`, `/abs`), so tests can build hostile layers as well as whiteouts.
pub struct Entry {
    kind: &'static str,
    path: String,
    arg: String,
}

impl Entry {
    pub fn file(path: impl Into<String>, data: &str) -> Entry {
        Self::new("file", path, data)
    }

    pub fn dir(path: impl Into<String>) -> Entry {
        Self::new("dir", path, "")
    }

    pub fn symlink(path: impl Into<String>, target: impl Into<String>) -> Entry {
        Self::new("symlink", path, target)
    }

    fn new(kind: &'static str, path: impl Into<String>, arg: impl Into<String>) -> Entry {
        Entry {
            kind,
            path: path.into(),
            arg: arg.into(),
        }
    }
}

/// An image for one architecture (as `dpkg --print-architecture` names it): its layers, bottom
/// first.
pub struct Platform {
    pub arch: String,
    pub layers: Vec<Vec<Entry>>,
}

impl Platform {
    /// An image for this node's architecture.
    pub fn native(layers: Vec<Vec<Entry>>) -> Platform {
        Platform {
            arch: native_arch(),
            layers,
        }
    }
}

/// This node's architecture as OCI names it (`amd64`, `arm64`, ...).
pub fn native_arch() -> String {
    let out = std::process::Command::new("dpkg")
        .arg("--print-architecture")
        .output()
        .expect("running dpkg");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Builds an OCI image layout at `layout`, tag `v1`, from crafted gzip layers: a plain image
/// manifest for one platform, an image index for several.
pub fn build_crafted_layout(layout: &Path, platforms: &[Platform]) {
    let script = r#"
import gzip, hashlib, io, json, os, sys, tarfile
layout, spec = sys.argv[1], json.loads(sys.argv[2])
blobs = os.path.join(layout, "blobs", "sha256")
os.makedirs(blobs, exist_ok=True)
def blob(data, media_type):
    h = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, h), "wb") as f:
        f.write(data)
    return {"mediaType": media_type, "digest": "sha256:" + h, "size": len(data)}
def layer(entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for kind, path, arg in entries:
            ti = tarfile.TarInfo(path)
            ti.mtime, ti.mode, data = 0, 0o644, None
            if kind == "file":
                data = arg.encode()
                ti.size = len(data)
            elif kind == "dir":
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
            elif kind == "symlink":
                ti.type, ti.linkname = tarfile.SYMTYPE, arg
            t.addfile(ti, io.BytesIO(data) if data is not None else None)
    raw = buf.getvalue()
    return (blob(gzip.compress(raw, mtime=0), "application/vnd.oci.image.layer.v1.tar+gzip"),
            "sha256:" + hashlib.sha256(raw).hexdigest())
manifests = []
for p in spec:
    layers = [layer(e) for e in p["layers"]]
    config = {"architecture": p["arch"], "os": "linux", "config": {"Cmd": ["/bin/sh"]},
              "rootfs": {"type": "layers", "diff_ids": [d for _, d in layers]}}
    c = blob(json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json")
    m = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
         "config": c, "layers": [l for l, _ in layers]}
    d = blob(json.dumps(m).encode(), m["mediaType"])
    d["platform"] = {"architecture": p["arch"], "os": "linux"}
    manifests.append(d)
if len(manifests) == 1:
    top = manifests[0]
    del top["platform"]
else:
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": manifests}
    top = blob(json.dumps(index).encode(), index["mediaType"])
top["annotations"] = {"org.opencontainers.image.ref.name": "v1"}
with open(os.path.join(layout, "index.json"), "w") as f:
    json.dump({"schemaVersion": 2, "manifests": [top]}, f)
with open(os.path.join(layout, "oci-layout"), "w") as f:
    f.write('{"imageLayoutVersion":"1.0.0"}')
"#;
    let spec: Vec<serde_json::Value> = platforms
        .iter()
        .map(|p| {
            let layers: Vec<Vec<[&str; 3]>> = p
                .layers
                .iter()
                .map(|l| l.iter().map(|e| [e.kind, &e.path, &e.arg]).collect())
                .collect();
            serde_json::json!({ "arch": p.arch, "layers": layers })
        })
        .collect();
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(layout)
        .arg(serde_json::Value::Array(spec).to_string())
        .output()
        .expect("running python3");
    assert!(
        out.status.success(),
        "building the crafted layout: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Debian's docker-registry on a free loopback port, storing in a temp dir; killed on drop.
pub struct Registry {
    child: Child,
    pub addr: SocketAddr,
    /// The name the daemon pulls it by ([`REGISTRY`], or another for a second registry).
    pub name: String,
    /// htpasswd user and password, when the registry wants basic auth.
    creds: Option<(String, String)>,
    dir: tempfile::TempDir,
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
        Self::start_as(REGISTRY, None).await
    }

    /// An empty registry named `name` that wants basic auth as `user`/`password` (a bcrypt
    /// htpasswd file, as docker-registry requires).
    pub async fn with_basic_auth(name: &str, user: &str, password: &str) -> Registry {
        Self::start_as(name, Some((user.into(), password.into()))).await
    }

    async fn start_as(name: &str, creds: Option<(String, String)>) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("carapace-e2e-registry.")
            .tempdir_in("/tmp")
            .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = dir.path().join("config.yml");
        let mut yaml = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            dir.path().join("storage").display()
        );
        if let Some((user, password)) = &creds {
            let htpasswd = dir.path().join("htpasswd");
            let out = std::process::Command::new("htpasswd")
                .args(["-B", "-b", "-c"])
                .arg(&htpasswd)
                .args([user, password])
                .output()
                .expect(
                    "running htpasswd (apache2-utils; deploy/install-deps.sh test installs it)",
                );
            assert!(
                out.status.success(),
                "htpasswd: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            yaml += &format!(
                "auth:\n  htpasswd:\n    realm: carapace-e2e\n    path: {}\n",
                htpasswd.display()
            );
        }
        std::fs::write(&config, yaml).unwrap();
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
            // Any transport error (refused while it binds, a reset while it comes up) means
            // "not ready yet": once seen in CI as a reset on the first GET.
            let last = match try_http_get(addr, "/v2/").await {
                Ok((status, _)) if status == 200 || (status == 401 && creds.is_some()) => break,
                Ok((status, _)) => format!("HTTP {status}"),
                Err(e) => e.to_string(),
            };
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "docker-registry did not answer on {addr}: {last}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Registry {
            child,
            addr,
            name: name.into(),
            creds,
            dir,
        }
    }

    /// A reference to `repo:tag` here, as the daemon pulls it.
    pub fn image(&self, repo: &str, tag: &str) -> String {
        format!("{}/{repo}:{tag}", self.name)
    }

    /// The files in the registry's storage that hold its blobs (manifests, configs, layers).
    pub fn blob_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let blobs = self
            .dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256");
        for prefix in std::fs::read_dir(blobs).unwrap().flatten() {
            for blob in std::fs::read_dir(prefix.path()).unwrap().flatten() {
                out.push(blob.path().join("data"));
            }
        }
        out
    }

    /// Pushes an image built by [`build_layout`] as `<repo>:v1` (OCI) and `<repo>:docker`
    /// (Docker schema2).
    pub async fn push(&mut self, repo: &str, extra: &[&str]) {
        let work = tempfile::tempdir().unwrap();
        let layout = work.path().join("layout");
        build_layout(&layout, &work.path().join("build"), extra);
        self.push_layout(&layout, repo, true).await;
    }

    /// [`Registry::push`] of the busybox image with a top layer of text `files` (path in the
    /// image, content), e.g. its own `/etc/passwd` and `/etc/group`.
    pub async fn push_with_files(&mut self, repo: &str, files: &[(&str, &str)]) {
        use std::os::unix::fs::PermissionsExt;
        let top = tempfile::tempdir().unwrap();
        for (path, data) in files {
            let f = top.path().join(path.trim_start_matches('/'));
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(&f, data).unwrap();
        }
        // The layer's `./` and directories land on the image's: world-traversable, as an image's.
        for d in walk_dirs(top.path()) {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let extra = format!("={}", top.path().display());
        self.push(repo, &[&extra]).await;
    }

    /// Pushes a crafted image ([`build_crafted_layout`]) as `<repo>:v1` (OCI, every platform)
    /// and, for one platform, as `<repo>:docker` (Docker schema2) too.
    pub async fn push_crafted(&self, repo: &str, platforms: &[Platform]) {
        let work = tempfile::tempdir().unwrap();
        let layout = work.path().join("layout");
        build_crafted_layout(&layout, platforms);
        self.push_layout(&layout, repo, platforms.len() == 1).await;
    }

    /// Copies tag `v1` of the OCI layout at `layout` here as `<repo>:v1`, and as
    /// `<repo>:docker` in Docker's format when `docker`.
    async fn push_layout(&self, layout: &Path, repo: &str, docker: bool) {
        let formats: &[(&str, &str)] = if docker {
            &[("v1", "oci"), ("docker", "v2s2")]
        } else {
            &[("v1", "oci")]
        };
        for (tag, format) in formats {
            let mut cmd = Command::new("skopeo");
            cmd.args([
                "--insecure-policy",
                "copy",
                "--quiet",
                "--all",
                "--dest-tls-verify=false",
            ])
            .args(["--format", format]);
            if let Some((user, password)) = &self.creds {
                cmd.arg(format!("--dest-creds={user}:{password}"));
            }
            let out = cmd
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

    /// Writes the `hosts.toml` in `cfg`'s `certs.d` that sends [`Registry::name`] here, over
    /// plain HTTP.
    pub fn configure(&self, cfg: &DaemonConfig) {
        let hosts = cfg.dir().join("certs.d").join(&self.name);
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

/// `dir` and every directory below it.
fn walk_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        let d = out[i].clone();
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                out.push(e.path());
            }
        }
        i += 1;
    }
    out
}
