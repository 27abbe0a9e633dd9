//! Pulls against an in-process registry on 127.0.0.1: bearer tokens, an index, mirrors, reuse,
//! one download for concurrent pulls, stalls, corrupt blobs, removal and garbage collection.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body::{Body, Frame};
use hyper::{Request, Response, StatusCode};

use crate::manifest::{OCI_CONFIG, OCI_INDEX, OCI_MANIFEST};
use crate::unpack::tests::{file, raw};
use crate::{Credentials, Digest, Error, Images, ImagesConfig};

/// A response body that sends `first` and then never finishes: a stalled download.
struct Stall(Option<Bytes>);

impl Body for Stall {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.0.take() {
            Some(b) => Poll::Ready(Some(Ok(Frame::data(b)))),
            None => Poll::Pending,
        }
    }
}

type AnyBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn full(b: impl Into<Bytes>) -> AnyBody {
    use http_body_util::BodyExt;
    http_body_util::Full::new(b.into()).boxed()
}

#[derive(Default)]
struct Registry {
    manifests: HashMap<String, (String, Vec<u8>)>,
    blobs: HashMap<String, Vec<u8>>,
    /// `user:password` the token endpoint wants; `None` serves anonymously without tokens.
    login: Option<String>,
    stall_blobs: Vec<String>,
    token_requests: AtomicUsize,
    blob_requests: AtomicUsize,
}

struct Server {
    addr: std::net::SocketAddr,
    reg: Arc<Registry>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(reg: Registry) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let reg = Arc::new(reg);
    let r = reg.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let r = r.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let r = r.clone();
                    async move { Ok::<_, Infallible>(handle(&r, addr, req)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(sock), svc)
                    .await;
            });
        }
    });
    Server { addr, reg, task }
}

fn handle(
    r: &Registry,
    addr: std::net::SocketAddr,
    req: Request<hyper::body::Incoming>,
) -> Response<AnyBody> {
    let path = req.uri().path().to_owned();
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let status = |s: StatusCode, body: &str| {
        let mut resp = Response::new(full(body.to_owned()));
        *resp.status_mut() = s;
        resp
    };
    if path == "/token" {
        r.token_requests.fetch_add(1, Ordering::SeqCst);
        let want = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(r.login.clone().unwrap_or_default())
        );
        if auth != want {
            return status(
                StatusCode::UNAUTHORIZED,
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"incorrect username or password"}]}"#,
            );
        }
        return status(StatusCode::OK, r#"{"token":"tok-1","expires_in":300}"#);
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return status(StatusCode::NOT_FOUND, "");
    };
    if r.login.is_some() && auth != "Bearer tok-1" {
        let mut resp = status(
            StatusCode::UNAUTHORIZED,
            r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
        );
        let ch = format!(
            r#"Bearer realm="http://{addr}/token",service="test-registry",scope="repository:test/app:pull""#
        );
        resp.headers_mut()
            .insert("www-authenticate", ch.parse().unwrap());
        return resp;
    }
    if let Some((_, reference)) = rest.split_once("/manifests/") {
        return match r.manifests.get(reference) {
            Some((ct, body)) => {
                let mut resp = status(StatusCode::OK, "");
                *resp.body_mut() = full(body.clone());
                resp.headers_mut()
                    .insert("content-type", ct.parse().unwrap());
                resp
            }
            None => status(
                StatusCode::NOT_FOUND,
                r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
            ),
        };
    }
    if let Some((_, digest)) = rest.split_once("/blobs/") {
        r.blob_requests.fetch_add(1, Ordering::SeqCst);
        if r.stall_blobs.iter().any(|d| d == digest) {
            let mut resp = Response::new(http_body_util::BodyExt::boxed(Stall(Some(
                Bytes::from_static(b"partial"),
            ))));
            resp.headers_mut()
                .insert("content-length", "1000".parse().unwrap());
            return resp;
        }
        return match r.blobs.get(digest) {
            Some(b) => Response::new(full(b.clone())),
            None => status(
                StatusCode::NOT_FOUND,
                r#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}"#,
            ),
        };
    }
    status(StatusCode::NOT_FOUND, "")
}

/// A two-layer image (the second deletes a file of the first and adds one) behind an index with
/// an arm64 entry first, so platform choice matters.
struct TestImage {
    config: Digest,
    index: Digest,
    manifest: Digest,
    layers: Vec<Digest>,
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, b).unwrap();
    gz.finish().unwrap()
}

fn add_image(reg: &mut Registry, tag: &str, marker: &str) -> TestImage {
    let mut b = tar::Builder::new(Vec::new());
    raw(&mut b, "etc/", tar::EntryType::Directory, "", b"");
    file(&mut b, "etc/os-release", b"ID=test\n");
    file(&mut b, "bin/hello", b"#!/bin/sh\necho hi\n");
    let l1 = b.into_inner().unwrap();
    let mut b = tar::Builder::new(Vec::new());
    file(&mut b, "etc/.wh.os-release", b"");
    file(&mut b, "etc/marker", marker.as_bytes());
    let l2 = b.into_inner().unwrap();
    let (z1, z2) = (gzip(&l1), gzip(&l2));
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"User":"1000:1000","Env":["PATH=/bin"]}},"rootfs":{{"type":"layers","diff_ids":["{}","{}"]}}}}"#,
        Digest::of(&l1),
        Digest::of(&l2)
    );
    let cd = Digest::of(config.as_bytes());
    let layer = |z: &[u8]| {
        format!(
            r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":{}}}"#,
            Digest::of(z),
            z.len()
        )
    };
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{OCI_CONFIG}","digest":"{cd}","size":{}}},"layers":[{},{}]}}"#,
        config.len(),
        layer(&z1),
        layer(&z2)
    );
    let md = Digest::of(manifest.as_bytes());
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[
            {{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":7,"platform":{{"os":"linux","architecture":"arm64"}}}},
            {{"mediaType":"{OCI_MANIFEST}","digest":"{md}","size":{},"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#,
        Digest::of(b"arm64 manifest that is never fetched"),
        manifest.len()
    );
    let id = Digest::of(index.as_bytes());
    reg.manifests.insert(
        tag.to_owned(),
        (OCI_INDEX.into(), index.clone().into_bytes()),
    );
    reg.manifests
        .insert(id.to_string(), (OCI_INDEX.into(), index.into_bytes()));
    reg.manifests
        .insert(md.to_string(), (OCI_MANIFEST.into(), manifest.into_bytes()));
    reg.blobs.insert(cd.to_string(), config.into_bytes());
    let layers = vec![Digest::of(&z1), Digest::of(&z2)];
    reg.blobs.insert(layers[0].to_string(), z1);
    reg.blobs.insert(layers[1].to_string(), z2);
    TestImage {
        config: cd,
        index: id,
        manifest: md,
        layers,
    }
}

fn store(dir: &std::path::Path, stall: Duration) -> (Images, prometheus::Registry) {
    let mut cfg = ImagesConfig::new(dir.join("root"), dir.join("certs.d"));
    cfg.stall_timeout = stall;
    cfg.progress_interval = Duration::from_millis(50);
    cfg.platform = crate::manifest::Platform {
        os: "linux".into(),
        architecture: "amd64".into(),
        variant: None,
    };
    let metrics = prometheus::Registry::new();
    (Images::open(cfg, &metrics).unwrap(), metrics)
}

fn counter(m: &prometheus::Registry, name: &str) -> f64 {
    m.gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric().iter().map(|m| m.get_counter().get_value()))
        .sum()
}

fn login() -> Credentials {
    Credentials {
        username: "alice".into(),
        password: "s3cret".into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_with_bearer_token_through_an_index_then_reuse_and_remove() {
    let mut reg = Registry {
        login: Some("alice:s3cret".into()),
        ..Default::default()
    };
    let img = add_image(&mut reg, "v1", "one");
    let srv = serve(reg).await;
    let d = tempfile::tempdir().unwrap();
    let (images, metrics) = store(d.path(), Duration::from_secs(10));
    let name = format!("127.0.0.1:{}/test/app:v1", srv.addr.port());

    let pulled = images.pull(&name, &login()).await.unwrap();
    assert_eq!(pulled.id, img.config);
    assert_eq!(pulled.repo_tags, std::slice::from_ref(&name));
    assert_eq!(
        pulled.repo_digests,
        [format!(
            "127.0.0.1:{}/test/app@{}",
            srv.addr.port(),
            img.index
        )]
    );
    assert_eq!(pulled.uid, Some(1000));
    assert_eq!(pulled.manifests, [img.index.clone(), img.manifest.clone()]);
    assert_eq!(pulled.layers, img.layers);
    // The token was fetched once and reused for every request after.
    assert_eq!(srv.reg.token_requests.load(Ordering::SeqCst), 1);
    assert_eq!(srv.reg.blob_requests.load(Ordering::SeqCst), 3);
    assert_eq!(counter(&metrics, "carapace_image_blobs_fetched_total"), 3.0);

    let lower = images.lower_dirs(&pulled);
    assert_eq!(lower.len(), 2);
    assert_eq!(std::fs::read(lower[0].join("etc/marker")).unwrap(), b"one");
    assert_eq!(
        std::fs::read(lower[1].join("bin/hello")).unwrap(),
        b"#!/bin/sh\necho hi\n"
    );
    use std::os::unix::fs::FileTypeExt;
    assert!(
        std::fs::symlink_metadata(lower[0].join("etc/os-release"))
            .unwrap()
            .file_type()
            .is_char_device()
    );

    // A second pull fetches no blob; status finds it by ID, tag and digest.
    let again = images.pull(&name, &login()).await.unwrap();
    assert_eq!(again, pulled);
    assert_eq!(srv.reg.blob_requests.load(Ordering::SeqCst), 3);
    assert_eq!(counter(&metrics, "carapace_image_blobs_reused_total"), 3.0);
    assert_eq!(counter(&metrics, "carapace_image_pulls_total"), 2.0);
    for q in [
        pulled.id.to_string(),
        pulled.id.hex().to_owned(),
        name.clone(),
        pulled.repo_digests[0].clone(),
    ] {
        assert_eq!(images.status(&q).unwrap().as_ref(), Some(&pulled), "{q}");
    }
    assert_eq!(images.status("127.0.0.1:1/none:x").unwrap(), None);
    assert!(matches!(
        images.status("Bad//Ref"),
        Err(Error::InvalidReference { .. })
    ));
    assert_eq!(
        images.config(&pulled).unwrap()["config"]["User"],
        "1000:1000"
    );
    let usage = images.fs_usage().await.unwrap();
    assert!(usage.bytes > 0 && usage.inodes > 5, "{usage:?}");

    // Records survive a restart.
    drop(images);
    let (images, _) = store(d.path(), Duration::from_secs(10));
    assert_eq!(images.list(), std::slice::from_ref(&pulled));

    // A container holds the snapshots past the image's removal; then everything goes.
    images.hold("ctr-1", &[&pulled]).unwrap();
    assert!(images.remove(&name).await.unwrap());
    assert!(!images.remove(&name).await.unwrap());
    assert!(images.list().is_empty());
    let blobs = d.path().join("root/content/blobs/sha256");
    assert_eq!(std::fs::read_dir(&blobs).unwrap().count(), 0);
    assert!(lower[0].exists());
    // The hold survives a restart (and the collection that runs at start).
    drop(images);
    let (images, _) = store(d.path(), Duration::from_secs(10));
    assert!(lower[0].exists() && lower[1].exists());
    images.release("ctr-1").await.unwrap();
    images.release("ctr-1").await.unwrap();
    assert!(!lower[0].exists() && !lower[1].exists());
    assert_eq!(
        std::fs::read_dir(d.path().join("root/snapshots"))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_download_each_blob_once_and_tags_untag() {
    let mut reg = Registry::default();
    add_image(&mut reg, "v1", "one");
    let srv = serve(reg).await;
    let d = tempfile::tempdir().unwrap();
    let (images, _) = store(d.path(), Duration::from_secs(10));
    let base = format!("127.0.0.1:{}/test/app", srv.addr.port());
    let (name, anon) = (format!("{base}:v1"), Credentials::default());
    let (a, b) = tokio::join!(images.pull(&name, &anon), images.pull(&name, &anon));
    assert_eq!(a.unwrap(), b.unwrap());
    assert_eq!(srv.reg.blob_requests.load(Ordering::SeqCst), 3);

    // Pulled by digest too: a second repo digest on the same image, no new tag.
    let idx = images.list()[0].repo_digests[0].clone();
    let by_digest = images.pull(&idx, &Credentials::default()).await.unwrap();
    assert_eq!(by_digest.repo_tags, [format!("{base}:v1")]);
    // Removing by digest removes the image.
    assert!(images.remove(&idx).await.unwrap());
    assert!(images.list().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_clear_and_leave_nothing() {
    let mut reg = Registry {
        login: Some("alice:s3cret".into()),
        ..Default::default()
    };
    let img = add_image(&mut reg, "v1", "one");
    add_image(&mut reg, "stall", "two");
    let stalled = add_image(&mut reg, "stall", "two");
    reg.stall_blobs.push(stalled.layers[1].to_string());
    let bad = add_image(&mut reg, "corrupt", "three");
    reg.blobs
        .insert(bad.layers[1].to_string(), gzip(b"not the layer"));
    reg.manifests.insert(
        "v0".into(),
        (
            "application/vnd.docker.distribution.manifest.v1+prettyjws".into(),
            br#"{"schemaVersion":1}"#.to_vec(),
        ),
    );
    let srv = serve(reg).await;
    let d = tempfile::tempdir().unwrap();
    let (images, metrics) = store(d.path(), Duration::from_secs(1));
    let base = format!("127.0.0.1:{}/test/app", srv.addr.port());

    let wrong = Credentials {
        password: "nope".into(),
        ..login()
    };
    let e = images
        .pull(&format!("{base}:v1"), &wrong)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Unauthorized { message, .. } if message.contains("incorrect username or password")),
        "{e}"
    );
    let e = images
        .pull(&format!("{base}:v1"), &Credentials::default())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Unauthorized { .. }), "{e}");

    let e = images
        .pull(&format!("{base}:missing"), &login())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotFoundInRegistry { .. }), "{e}");
    let e = images
        .pull(&format!("{base}:v0"), &login())
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::Unsupported(ref m) if m.contains("schema1")),
        "{e}"
    );
    let e = images.pull("UPPER/case", &login()).await.unwrap_err();
    assert!(matches!(e, Error::InvalidReference { .. }), "{e}");

    let started = std::time::Instant::now();
    let e = images
        .pull(&format!("{base}:stall"), &login())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Stalled { .. }), "{e}");
    assert!(started.elapsed() < Duration::from_secs(8));

    let e = images
        .pull(&format!("{base}:corrupt"), &login())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Verification { .. }), "{e}");
    assert!(images.list().is_empty());
    assert_eq!(counter(&metrics, "carapace_image_pulls_total"), 7.0);
    let blobs = d.path().join("root/content/blobs/sha256");
    assert!(!blobs.join(bad.layers[1].hex()).exists());
    assert_eq!(
        std::fs::read_dir(d.path().join("root/content/ingest"))
            .unwrap()
            .count(),
        0
    );

    // Garbage from the failed pulls goes at the next collection; a good pull still works.
    images.gc().await.unwrap();
    assert_eq!(std::fs::read_dir(&blobs).unwrap().count(), 0);
    assert_eq!(
        std::fs::read_dir(d.path().join("root/snapshots"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(
        images
            .pull(&format!("{base}:v1"), &login())
            .await
            .unwrap()
            .id,
        img.config
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_from_hosts_toml_are_tried_before_the_server() {
    let mut reg = Registry::default();
    let img = add_image(&mut reg, "v1", "one");
    let srv = serve(reg).await;
    let d = tempfile::tempdir().unwrap();
    let certs = d.path().join("certs.d/registry.test");
    std::fs::create_dir_all(&certs).unwrap();
    // The server is a closed port: only the mirror can answer.
    std::fs::write(
        certs.join("hosts.toml"),
        format!("server = \"http://127.0.0.1:1\"\n[host.\"http://{}\"]\ncapabilities = [\"pull\", \"resolve\"]\n", srv.addr),
    )
    .unwrap();
    let (images, _) = store(d.path(), Duration::from_secs(5));
    let got = images
        .pull("registry.test/test/app:v1", &Credentials::default())
        .await
        .unwrap();
    assert_eq!(got.id, img.config);
    assert_eq!(got.repo_tags, ["registry.test/test/app:v1"]);
    let e = images
        .pull("registry.test/test/app:nope", &Credentials::default())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotFoundInRegistry { .. }), "{e}");
}

/// A tar archive holding `files` (path, bytes) and `links` (path, symlink target).
fn archive(files: &[(String, Vec<u8>)], links: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (p, data) in files {
        file(&mut b, p, data);
    }
    for (p, t) in links {
        raw(&mut b, p, tar::EntryType::Symlink, t, b"");
    }
    b.into_inner().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_an_oci_layout_and_a_docker_save_archive() {
    let mut reg = Registry::default();
    let img = add_image(&mut reg, "v1", "one");
    let d = tempfile::tempdir().unwrap();
    let (images, _) = store(d.path(), Duration::from_secs(5));

    // An OCI layout whose index names the image index by tag only.
    let mut files: Vec<(String, Vec<u8>)> = vec![
        ("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
        (
            "index.json".into(),
            format!(
                r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_INDEX}","digest":"{}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"v1"}}}}]}}"#,
                img.index,
                reg.manifests["v1"].1.len()
            )
            .into_bytes(),
        ),
    ];
    for (k, (_, body)) in &reg.manifests {
        if let Some(hex) = k.strip_prefix("sha256:") {
            files.push((format!("blobs/sha256/{hex}"), body.clone()));
        }
    }
    for (k, body) in &reg.blobs {
        files.push((format!("blobs/sha256/{}", &k[7..]), body.clone()));
    }
    let tar = d.path().join("layout.tar");
    std::fs::write(&tar, archive(&files, &[])).unwrap();
    let e = images.import(&tar, None).await.unwrap_err();
    assert!(e.to_string().contains("base name"), "{e}");
    let got = images
        .import(&tar, Some("example.com/team/app"))
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, img.config);
    assert_eq!(got[0].repo_tags, ["example.com/team/app:v1"]);
    assert_eq!(
        got[0].repo_digests,
        [format!("example.com/team/app@{}", img.index)]
    );
    let lower = images.lower_dirs(&got[0]);
    assert_eq!(std::fs::read(lower[0].join("etc/marker")).unwrap(), b"one");

    // A docker save archive: uncompressed layers, the second a symlink to the first.
    let mut b = tar::Builder::new(Vec::new());
    file(&mut b, "hello", b"world");
    let layer = b.into_inner().unwrap();
    let diff = Digest::of(&layer);
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"User":"app"}},"rootfs":{{"type":"layers","diff_ids":["{diff}","{diff}"]}}}}"#
    );
    let files = vec![
        ("cfg.json".to_owned(), config.clone().into_bytes()),
        ("a/layer.tar".to_owned(), layer.clone()),
        ("a/VERSION".to_owned(), b"1.0".to_vec()),
        (
            "manifest.json".to_owned(),
            br#"[{"Config":"cfg.json","RepoTags":["app:1","example.com/app:2"],"Layers":["a/layer.tar","b/layer.tar"]}]"#.to_vec(),
        ),
    ];
    let tar = d.path().join("save.tar");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(
        &mut gz,
        &archive(&files, &[("b/layer.tar", "../a/layer.tar")]),
    )
    .unwrap();
    std::fs::write(&tar, gz.finish().unwrap()).unwrap();
    let got = images.import(&tar, None).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, Digest::of(config.as_bytes()));
    assert_eq!(
        got[0].repo_tags,
        ["docker.io/library/app:1", "example.com/app:2"]
    );
    assert_eq!(got[0].username, "app");
    assert_eq!(got[0].layers, [diff.clone(), diff.clone()]);
    assert_eq!(
        std::fs::read(images.lower_dirs(&got[0])[0].join("hello")).unwrap(),
        b"world"
    );
    assert_eq!(images.list().len(), 2);

    // What is not part of an image (VERSION, manifest.json, ...) did not stay; removal empties.
    assert!(images.remove(&got[0].id.to_string()).await.unwrap());
    assert!(images.remove("example.com/team/app:v1").await.unwrap());
    let blobs = d.path().join("root/content/blobs/sha256");
    assert_eq!(std::fs::read_dir(&blobs).unwrap().count(), 0);
    assert_eq!(
        std::fs::read_dir(d.path().join("root/snapshots"))
            .unwrap()
            .count(),
        0
    );
}
