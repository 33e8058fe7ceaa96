//! `runtime.v1.ImageService`: protobuf in, [`crate::image`] domain calls, protobuf out.

use std::collections::HashMap;
use std::sync::Arc;

use crius_proto::cri::{self, image_service_server::ImageService as CriImageService};
use tonic::{Request, Response, Status};

use crate::image::record::{image_user, ImageUser};
use crate::image::registry::AuthConfig;
use crate::image::{ImageError, ImageRecord, ImageService, RegistryFailure};

/// The ImageService implementation.
#[derive(Clone)]
pub struct Images {
    images: Arc<ImageService>,
}

impl Images {
    /// Serves `images`.
    pub fn new(images: Arc<ImageService>) -> Images {
        Images { images }
    }
}

type R<T> = Result<Response<T>, Status>;

/// Maps an image error to the gRPC status the CRI contract expects.
pub fn to_status(e: ImageError) -> Status {
    let msg = e.to_string();
    match &e {
        ImageError::Reference(_) | ImageError::InvalidArgument(_) => Status::invalid_argument(msg),
        ImageError::Registry { kind, .. } => match kind {
            RegistryFailure::Unreachable => Status::unavailable(msg),
            RegistryFailure::Unauthorized => Status::permission_denied(msg),
            RegistryFailure::NotFound => Status::not_found(msg),
            RegistryFailure::Other => Status::unknown(msg),
        },
        ImageError::DigestMismatch { .. } | ImageError::SizeMismatch { .. } => {
            Status::data_loss(msg)
        }
        ImageError::Unsupported { .. } | ImageError::Unpack { .. } | ImageError::Corrupt { .. } => {
            Status::failed_precondition(msg)
        }
        ImageError::NotFound(_) => Status::not_found(msg),
        ImageError::Store(crate::store::StoreError::Locked { .. }) => Status::unavailable(msg),
        ImageError::Io { .. } | ImageError::Store(_) | ImageError::Internal(_) => {
            Status::internal(msg)
        }
    }
}

fn spec_of(spec: Option<cri::ImageSpec>, field: &str) -> Result<String, Status> {
    let image = spec.map(|s| s.image).unwrap_or_default();
    if image.trim().is_empty() {
        return Err(Status::invalid_argument(format!("{field} is empty")));
    }
    Ok(image)
}

fn to_cri(rec: &ImageRecord) -> cri::Image {
    let (uid, username) = match image_user(rec.user.as_deref()) {
        ImageUser::None => (None, String::new()),
        ImageUser::Uid(u) => (Some(cri::Int64Value { value: u }), String::new()),
        ImageUser::Name(n) => (None, n),
    };
    cri::Image {
        id: rec.id.to_string(),
        repo_tags: rec.repo_tags.clone(),
        repo_digests: rec.repo_digests.clone(),
        size: rec.size,
        uid,
        username,
        spec: Some(cri::ImageSpec {
            image: rec.id.to_string(),
            annotations: rec.annotations.clone().into_iter().collect(),
            ..Default::default()
        }),
        pinned: rec.pinned,
    }
}

fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

#[tonic::async_trait]
impl CriImageService for Images {
    async fn list_images(&self, r: Request<cri::ListImagesRequest>) -> R<cri::ListImagesResponse> {
        let filter = r.into_inner().filter.and_then(|f| f.image).map(|s| s.image);
        let images = self.images.list(filter.as_deref()).map_err(to_status)?;
        Ok(Response::new(cri::ListImagesResponse {
            images: images.iter().map(to_cri).collect(),
        }))
    }

    async fn image_status(
        &self,
        r: Request<cri::ImageStatusRequest>,
    ) -> R<cri::ImageStatusResponse> {
        let r = r.into_inner();
        let spec = spec_of(r.image, "image.image")?;
        let Some(rec) = self.images.resolve(&spec).map_err(to_status)? else {
            // The CRI contract: an absent image is an empty response, not an error.
            return Ok(Response::new(cri::ImageStatusResponse::default()));
        };
        let mut info = HashMap::new();
        if r.verbose {
            let (_, config) = self.images.config(&rec).await.map_err(to_status)?;
            let config: serde_json::Value =
                serde_json::from_slice(&config).unwrap_or(serde_json::Value::Null);
            let v = serde_json::json!({
                "chainID": rec.top_chain_id().map(|c| c.to_string()),
                "manifest": rec.manifest.digest.to_string(),
                "imageSpec": config,
            });
            info.insert("info".to_string(), v.to_string());
        }
        Ok(Response::new(cri::ImageStatusResponse {
            image: Some(to_cri(&rec)),
            info,
        }))
    }

    async fn pull_image(&self, r: Request<cri::PullImageRequest>) -> R<cri::PullImageResponse> {
        let r = r.into_inner();
        let spec = spec_of(r.image, "image.image")?;
        let auth = r.auth.map(|a| AuthConfig {
            username: a.username,
            password: a.password,
            auth: a.auth,
            identity_token: a.identity_token,
            registry_token: a.registry_token,
        });
        let rec = self
            .images
            .pull(&spec, auth.as_ref(), None)
            .await
            .map_err(|e| {
                tracing::warn!(image = %spec, error = %e, "pull failed");
                to_status(e)
            })?;
        Ok(Response::new(cri::PullImageResponse {
            image_ref: rec.id.to_string(),
        }))
    }

    async fn remove_image(
        &self,
        r: Request<cri::RemoveImageRequest>,
    ) -> R<cri::RemoveImageResponse> {
        let spec = spec_of(r.into_inner().image, "image.image")?;
        self.images.remove(&spec).await.map_err(to_status)?;
        Ok(Response::new(cri::RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _r: Request<cri::ImageFsInfoRequest>,
    ) -> R<cri::ImageFsInfoResponse> {
        let u = self.images.fs_usage().map_err(to_status)?;
        Ok(Response::new(cri::ImageFsInfoResponse {
            image_filesystems: vec![cri::FilesystemUsage {
                timestamp: now_nanos(),
                fs_id: Some(cri::FilesystemIdentifier {
                    mountpoint: u.mountpoint.display().to_string(),
                }),
                used_bytes: Some(cri::UInt64Value { value: u.bytes }),
                inodes_used: Some(cri::UInt64Value { value: u.inodes }),
            }],
            container_filesystems: vec![],
        }))
    }
}
