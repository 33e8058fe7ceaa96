//! `runtime.v1.ImageService`. Images arrive with a later piece; until then every RPC
//! answers `Unimplemented` with the RPC's name.

use crius_proto::cri::{self, image_service_server::ImageService};
use tonic::{Request, Response, Status};

use super::unimplemented;

/// The ImageService implementation.
#[derive(Clone, Default)]
pub struct Images;

type R<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl ImageService for Images {
    async fn list_images(&self, _r: Request<cri::ListImagesRequest>) -> R<cri::ListImagesResponse> {
        Err(unimplemented("ListImages"))
    }
    async fn image_status(
        &self,
        _r: Request<cri::ImageStatusRequest>,
    ) -> R<cri::ImageStatusResponse> {
        Err(unimplemented("ImageStatus"))
    }
    async fn pull_image(&self, _r: Request<cri::PullImageRequest>) -> R<cri::PullImageResponse> {
        Err(unimplemented("PullImage"))
    }
    async fn remove_image(
        &self,
        _r: Request<cri::RemoveImageRequest>,
    ) -> R<cri::RemoveImageResponse> {
        Err(unimplemented("RemoveImage"))
    }
    async fn image_fs_info(
        &self,
        _r: Request<cri::ImageFsInfoRequest>,
    ) -> R<cri::ImageFsInfoResponse> {
        Err(unimplemented("ImageFsInfo"))
    }
}
