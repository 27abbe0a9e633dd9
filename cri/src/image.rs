//! `runtime.v1.ImageService`: pulling, listing, inspecting and removing images, and the image
//! filesystem's usage. Answered `Unimplemented` until the image store lands.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::Node;
use crate::api::image_service_server::ImageService;
use crate::api::*;
use crate::error::Error;

pub struct ImageApi {
    #[allow(dead_code)] // used once the image store lands
    node: Arc<Node>,
}

impl ImageApi {
    pub(crate) fn new(node: Arc<Node>) -> Self {
        Self { node }
    }
}

type Rpc<T> = Result<Response<T>, Status>;

fn unimplemented<T>(rpc: &'static str) -> Rpc<T> {
    Err(Error::Unimplemented(rpc).into())
}

#[tonic::async_trait]
impl ImageService for ImageApi {
    async fn list_images(&self, _: Request<ListImagesRequest>) -> Rpc<ListImagesResponse> {
        unimplemented("ListImages")
    }
    async fn image_status(&self, _: Request<ImageStatusRequest>) -> Rpc<ImageStatusResponse> {
        unimplemented("ImageStatus")
    }
    async fn pull_image(&self, _: Request<PullImageRequest>) -> Rpc<PullImageResponse> {
        unimplemented("PullImage")
    }
    async fn remove_image(&self, _: Request<RemoveImageRequest>) -> Rpc<RemoveImageResponse> {
        unimplemented("RemoveImage")
    }
    async fn image_fs_info(&self, _: Request<ImageFsInfoRequest>) -> Rpc<ImageFsInfoResponse> {
        unimplemented("ImageFsInfo")
    }
}
