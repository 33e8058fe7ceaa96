//! What the store keeps of an image.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::digest::Digest;
use super::manifest::Descriptor;

/// One image, keyed by its id (the config's digest, as containerd's CRI does).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// `sha256:` of the config.
    pub id: Digest,
    /// `registry/repo:tag` names pointing here.
    pub repo_tags: Vec<String>,
    /// `registry/repo@sha256:…` names pointing here.
    pub repo_digests: Vec<String>,
    /// The platform manifest.
    pub manifest: Descriptor,
    /// The index the manifest was chosen from, if any.
    pub index: Option<Digest>,
    /// Layers, bottom first (compressed descriptors as the manifest gives them).
    pub layers: Vec<Descriptor>,
    /// Uncompressed layer digests, bottom first.
    pub diff_ids: Vec<Digest>,
    /// Chain IDs, bottom first; the last is the rootfs's top snapshot.
    pub chain_ids: Vec<Digest>,
    /// Config size plus compressed layer sizes (what containerd reports).
    pub size: u64,
    /// `USER` of the image config.
    pub user: Option<String>,
    /// Pinned images are never garbage-collected by the kubelet.
    pub pinned: bool,
    /// Manifest annotations.
    pub annotations: BTreeMap<String, String>,
}

impl ImageRecord {
    /// The top snapshot, which a container's rootfs stacks on.
    pub fn top_chain_id(&self) -> Option<&Digest> {
        self.chain_ids.last()
    }

    /// Every blob this image needs kept.
    pub fn blobs(&self) -> Vec<Digest> {
        let mut v = vec![self.id.clone(), self.manifest.digest.clone()];
        v.extend(self.index.iter().cloned());
        v.extend(self.layers.iter().map(|l| l.digest.clone()));
        v
    }
}

/// The CRI view of an image's `USER`: a numeric uid, or a user name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageUser {
    /// No USER, or an empty one.
    None,
    /// `1000` or `1000:1000`.
    Uid(i64),
    /// `nobody` or `nobody:nogroup`.
    Name(String),
}

/// Splits `USER` as the kubelet expects: only the user part counts.
pub fn image_user(user: Option<&str>) -> ImageUser {
    let Some(u) = user.map(str::trim).filter(|u| !u.is_empty()) else {
        return ImageUser::None;
    };
    let user_part = u.split(':').next().unwrap_or(u);
    if user_part.is_empty() {
        return ImageUser::None;
    }
    match user_part.parse::<i64>() {
        Ok(uid) => ImageUser::Uid(uid),
        Err(_) => ImageUser::Name(user_part.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_forms() {
        assert_eq!(image_user(None), ImageUser::None);
        assert_eq!(image_user(Some("")), ImageUser::None);
        assert_eq!(image_user(Some("1000")), ImageUser::Uid(1000));
        assert_eq!(image_user(Some("1000:50")), ImageUser::Uid(1000));
        assert_eq!(image_user(Some("nobody")), ImageUser::Name("nobody".into()));
        assert_eq!(image_user(Some("www:www")), ImageUser::Name("www".into()));
    }
}
