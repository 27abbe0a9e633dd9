//! `runtime.v1.ImageService`: pulling, listing, inspecting and removing images, and the image
//! filesystem's usage. It validates requests and translates to and from the image store
//! (`carapace-imageservice`); errors become status codes in [`crate::error`].

use std::collections::HashMap;

use carapace_imageservice::{Credentials, Images};
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use crate::api::image_service_server::ImageService;
use crate::api::*;
use crate::error::Error;

pub struct ImageApi {
    images: Option<Images>,
    /// For the writable layers' filesystem in `ImageFsInfo`.
    containers: Option<crate::container::ContainerApi>,
}

impl ImageApi {
    pub(crate) fn new(
        images: Option<Images>,
        containers: Option<crate::container::ContainerApi>,
    ) -> Self {
        Self { images, containers }
    }

    fn images(&self) -> Result<&Images, Error> {
        self.images
            .as_ref()
            .ok_or_else(|| Error::Unavailable("the image store (not opened by this daemon)".into()))
    }

    pub(crate) async fn import(
        &self,
        archive: &std::path::Path,
        base_name: Option<&str>,
    ) -> Result<Vec<Image>, Error> {
        let got = self.images()?.import(archive, base_name).await?;
        for img in &got {
            tracing::info!(image_id = %img.id, names = ?img.repo_tags, archive = %archive.display(), "imported image");
        }
        Ok(got.iter().map(to_cri).collect())
    }
}

type Rpc<T> = Result<Response<T>, Status>;

/// The image a request names; an empty name is the caller's mistake, said as such.
fn image_name(spec: Option<&ImageSpec>) -> Result<&str, Error> {
    let name = spec.map(|s| s.image.as_str()).unwrap_or("");
    if name.is_empty() {
        return Err(Error::InvalidArgument(
            "an image name or ID is required".into(),
        ));
    }
    tracing::Span::current().record("image", name);
    Ok(name)
}

fn to_cri(img: &carapace_imageservice::Image) -> Image {
    Image {
        id: img.id.to_string(),
        repo_tags: img.repo_tags.clone(),
        repo_digests: img.repo_digests.clone(),
        size: img.size,
        uid: img.uid.map(|value| Int64Value { value }),
        username: img.username.clone(),
        spec: Some(ImageSpec {
            image: img.id.to_string(),
            ..Default::default()
        }),
        pinned: img.pinned,
    }
}

impl ImageApi {
    /// The images ListImages and StreamImages answer with: all, or the one `filter` names.
    fn list(&self, filter: Option<ImageFilter>) -> Result<Vec<Image>, Error> {
        let images = self.images()?;
        let name = filter
            .as_ref()
            .and_then(|f| f.image.as_ref())
            .map(|s| s.image.as_str())
            .filter(|s| !s.is_empty());
        let found = match name {
            None => images.list(),
            Some(f) => images.status(f).map_err(Error::from)?.into_iter().collect(),
        };
        Ok(found.iter().map(to_cri).collect())
    }
}

#[tonic::async_trait]
impl ImageService for ImageApi {
    async fn list_images(&self, req: Request<ListImagesRequest>) -> Rpc<ListImagesResponse> {
        Ok(Response::new(ListImagesResponse {
            images: self.list(req.into_inner().filter)?,
        }))
    }

    type StreamImagesStream = BoxStream<StreamImagesResponse>;

    /// ListImages' items as a stream (see [`crate::list_stream`]).
    async fn stream_images(
        &self,
        req: Request<StreamImagesRequest>,
    ) -> Rpc<Self::StreamImagesStream> {
        let images = self.list(req.into_inner().filter)?;
        Ok(Response::new(crate::list_stream::stream(
            images,
            |images| StreamImagesResponse { images },
        )))
    }

    async fn image_status(&self, req: Request<ImageStatusRequest>) -> Rpc<ImageStatusResponse> {
        let images = self.images()?;
        let req = req.get_ref();
        let name = image_name(req.image.as_ref())?;
        // An absent image is an empty answer, not an error: the kubelet asks before it pulls.
        let Some(img) = images.status(name).map_err(Error::from)? else {
            return Ok(Response::new(ImageStatusResponse::default()));
        };
        let mut info = HashMap::new();
        if req.verbose {
            let config = images.config(&img).map_err(Error::from)?;
            let lower: Vec<String> = images
                .lower_dirs(&img)
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            // containerd's shape: one "info" key holding a JSON object with the image spec.
            let v = serde_json::json!({
                "imageSpec": config,
                "chainIDs": img.chain_ids,
                "manifests": img.manifests,
                "layers": img.layers,
                "lowerDirs": lower,
            });
            info.insert("info".to_owned(), v.to_string());
        }
        Ok(Response::new(ImageStatusResponse {
            image: Some(to_cri(&img)),
            info,
        }))
    }

    async fn pull_image(&self, req: Request<PullImageRequest>) -> Rpc<PullImageResponse> {
        carapace_crashpoint::rpc("PullImage");
        let images = self.images()?;
        let req = req.into_inner();
        let name = image_name(req.image.as_ref())?;
        let creds = req
            .auth
            .map(|a| Credentials {
                username: a.username,
                password: a.password,
                auth: a.auth,
                identity_token: a.identity_token,
                registry_token: a.registry_token,
            })
            .unwrap_or_default();
        let pulled = images.pull(name, &creds).await;
        if images.pulls_in_flight() == 0 {
            release_after_pulls(images);
        }
        let img = pulled.map_err(Error::from)?;
        Ok(Response::new(PullImageResponse {
            image_ref: img.id.to_string(),
        }))
    }

    async fn remove_image(&self, req: Request<RemoveImageRequest>) -> Rpc<RemoveImageResponse> {
        carapace_crashpoint::rpc("RemoveImage");
        let images = self.images()?;
        let name = image_name(req.get_ref().image.as_ref())?;
        // Removing what is not there succeeds: the kubelet retries removals.
        images.remove(name).await.map_err(Error::from)?;
        Ok(Response::new(RemoveImageResponse {}))
    }

    async fn image_fs_info(&self, _: Request<ImageFsInfoRequest>) -> Rpc<ImageFsInfoResponse> {
        let images = self.images()?;
        let usage = images.fs_usage().await.map_err(Error::from)?;
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        // The writable layers, from the stats calls' brief cache (the kubelet asks both often).
        let container_filesystems = match &self.containers {
            Some(c) => vec![crate::stats::layer_fs(
                &c.layers_mountpoint(),
                c.layers_usage().await?,
                timestamp,
            )],
            None => Vec::new(),
        };
        Ok(Response::new(ImageFsInfoResponse {
            image_filesystems: vec![FilesystemUsage {
                timestamp,
                fs_id: Some(FilesystemIdentifier {
                    mountpoint: images.root().display().to_string(),
                }),
                used_bytes: Some(UInt64Value { value: usage.bytes }),
                inodes_used: Some(UInt64Value {
                    value: usage.inodes,
                }),
            }],
            container_filesystems,
        }))
    }
}

/// How long after the last pull of a burst the daemon gives back, a second time, the code that
/// answering it and the kubelet's follow-up calls brought back in.
const PULL_QUIET: std::time::Duration = std::time::Duration::from_secs(1);

/// Hands back what pulling used once the last pull of a burst is over: a 100 MB image left the
/// idle daemon 6 MiB larger, mostly pages of the HTTP, TLS, decompression and unpacking code
/// (mapped 64 KiB at a time as it ran) and freed heap. Once now, before the answer, and once
/// more after a quiet second unless another pull came meanwhile: answering maps 4 MiB of
/// serving code back, and an idle daemon should hold what idling needs.
fn release_after_pulls(images: &Images) {
    carapace_runtime::release_idle_memory();
    let started = images.pulls_started();
    let images = images.clone();
    tokio::spawn(async move {
        tokio::time::sleep(PULL_QUIET).await;
        if images.pulls_in_flight() == 0 && images.pulls_started() == started {
            carapace_runtime::release_idle_memory();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn api(dir: &std::path::Path) -> ImageApi {
        let cfg = carapace_imageservice::ImagesConfig::new(dir.join("root"), dir.join("certs.d"));
        let images = Images::open(cfg, &prometheus::Registry::new()).unwrap();
        ImageApi::new(Some(images), None)
    }

    fn spec(image: &str) -> Option<ImageSpec> {
        Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        })
    }

    #[tokio::test]
    async fn absent_images_bad_names_and_fs_info() {
        let d = tempfile::tempdir().unwrap();
        let api = api(d.path());
        let r = api
            .image_status(Request::new(ImageStatusRequest {
                image: spec("busybox"),
                verbose: true,
            }))
            .await
            .unwrap();
        assert_eq!(r.get_ref().image, None);
        api.remove_image(Request::new(RemoveImageRequest {
            image: spec("busybox:1"),
        }))
        .await
        .unwrap();
        let e = api
            .pull_image(Request::new(PullImageRequest::default()))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        let e = api
            .pull_image(Request::new(PullImageRequest {
                image: spec("Not/A:Ref:x"),
                ..Default::default()
            }))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        let l = api
            .list_images(Request::new(ListImagesRequest::default()))
            .await
            .unwrap();
        assert!(l.get_ref().images.is_empty());
        let fs = api
            .image_fs_info(Request::new(ImageFsInfoRequest {}))
            .await
            .unwrap();
        let u = &fs.get_ref().image_filesystems[0];
        assert_eq!(
            u.fs_id.as_ref().unwrap().mountpoint,
            d.path().join("root").display().to_string()
        );
        assert!(u.inodes_used.as_ref().unwrap().value > 0);
    }

    #[tokio::test]
    async fn without_a_store_image_calls_are_unavailable() {
        let api = ImageApi::new(None, None);
        let e = api
            .list_images(Request::new(ListImagesRequest::default()))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unavailable);
    }
}
