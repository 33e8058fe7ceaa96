//! The image store as the rest of crius sees it: pull, look up, list, remove, usage.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use tokio::sync::RwLock;

use super::content::ContentStore;
use super::digest::Digest;
use super::gc::{self, GcStats};
use super::manifest::{self, ImageConfig};
use super::progress::ProgressTx;
use super::pull::Puller;
use super::record::ImageRecord;
use super::reference::Reference;
use super::registry::{AuthConfig, Registries, RegistryConfig};
use super::snapshot::Snapshots;
use super::ImageError;
use crate::store::{Store, IMAGES, LEASES};

/// Disk used by images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsUsage {
    /// The snapshot root.
    pub mountpoint: PathBuf,
    /// Bytes allocated.
    pub bytes: u64,
    /// Inodes used.
    pub inodes: u64,
}

/// Images: one per daemon (or per `crius image` command).
#[derive(Debug)]
pub struct ImageService {
    store: Store,
    content: ContentStore,
    snapshots: Snapshots,
    puller: Puller,
    /// Pulls and imports hold it shared; collection holds it exclusively, so it never takes
    /// what a pull has stored but not yet recorded.
    gc_lock: RwLock<()>,
}

impl ImageService {
    /// Opens the image store under `root`: removes leftovers of interrupted pulls, installs
    /// the built-in pause image, and collects unreferenced content.
    pub async fn open(
        root: &Path,
        store: Store,
        registry: RegistryConfig,
    ) -> Result<ImageService, ImageError> {
        let content = ContentStore::new(root);
        let snapshots = Snapshots::new(root, store.clone());
        let registries = Registries::new(registry)?;
        let puller = Puller::new(
            registries,
            content.clone(),
            snapshots.clone(),
            store.clone(),
        );
        let svc = ImageService {
            store,
            content,
            snapshots,
            puller,
            gc_lock: RwLock::new(()),
        };
        svc.content.clean_ingest().await;
        svc.snapshots.clean().await?;
        svc.install_builtin_pause().await?;
        svc.gc().await?;
        Ok(svc)
    }

    /// The content store.
    pub fn content(&self) -> &ContentStore {
        &self.content
    }

    /// The snapshots.
    pub fn snapshots(&self) -> &Snapshots {
        &self.snapshots
    }

    /// Pulls an image by reference.
    pub async fn pull(
        &self,
        reference: &str,
        auth: Option<&AuthConfig>,
        progress: Option<ProgressTx>,
    ) -> Result<ImageRecord, ImageError> {
        let r = Reference::parse(reference)?;
        let _no_gc = self.gc_lock.read().await;
        self.puller.pull(&r, auth, progress).await
    }

    /// Imports a `docker save` or OCI layout archive.
    pub async fn import(&self, archive: &Path) -> Result<Vec<ImageRecord>, ImageError> {
        let _no_gc = self.gc_lock.read().await;
        super::import::import_archive(self, archive).await
    }

    async fn install_builtin_pause(&self) -> Result<(), ImageError> {
        let _no_gc = self.gc_lock.read().await;
        super::import::install_builtin_pause(self).await
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// Every image.
    pub fn all(&self) -> Result<Vec<ImageRecord>, ImageError> {
        Ok(self
            .store
            .list::<ImageRecord>(IMAGES)?
            .into_iter()
            .map(|(_, r)| r)
            .collect())
    }

    /// Finds an image by reference (`busybox`, `name:tag`, `name@sha256:…`), id
    /// (`sha256:…`) or unique id prefix. No match is `Ok(None)`.
    pub fn resolve(&self, spec: &str) -> Result<Option<ImageRecord>, ImageError> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Ok(None);
        }
        let images = self.all()?;
        if let Ok(r) = Reference::parse(spec) {
            let found = match (&r.digest, r.tagged()) {
                (Some(d), _) => {
                    let name = r.with_digest(d);
                    images
                        .iter()
                        .find(|i| i.repo_digests.contains(&name) || i.manifest.digest == *d)
                }
                (None, Some(tagged)) => images.iter().find(|i| i.repo_tags.contains(&tagged)),
                (None, None) => None,
            };
            if let Some(i) = found {
                return Ok(Some(i.clone()));
            }
        }
        let hex = spec.strip_prefix("sha256:").unwrap_or(spec);
        if !hex.is_empty() && hex.len() <= 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let hex = hex.to_ascii_lowercase();
            let mut m = images.iter().filter(|i| i.id.hex().starts_with(&hex));
            if let (Some(one), None) = (m.next(), m.next()) {
                return Ok(Some(one.clone()));
            }
        }
        Ok(None)
    }

    /// Images, or the one `filter` names.
    pub fn list(&self, filter: Option<&str>) -> Result<Vec<ImageRecord>, ImageError> {
        match filter.map(str::trim).filter(|f| !f.is_empty()) {
            Some(f) => Ok(self.resolve(f)?.into_iter().collect()),
            None => self.all(),
        }
    }

    /// The parsed image config.
    pub async fn config(&self, rec: &ImageRecord) -> Result<(ImageConfig, Vec<u8>), ImageError> {
        let bytes = self.content.read(&rec.id).await?;
        let cfg = manifest::parse_config(&bytes).map_err(|what| ImageError::Unsupported {
            reference: rec.id.to_string(),
            what,
        })?;
        Ok((cfg, bytes))
    }

    /// Removes the image `spec` names (all its names, as containerd does), then collects what
    /// it alone used. Removing an absent image succeeds.
    pub async fn remove(&self, spec: &str) -> Result<Option<ImageRecord>, ImageError> {
        let Some(rec) = self.resolve(spec)? else {
            return Ok(None);
        };
        self.store.update(|t| t.delete(IMAGES, rec.id.as_str()))?;
        self.gc().await?;
        Ok(Some(rec))
    }

    /// Snapshot chains leased by sandboxes and containers (the `LEASES` table, which
    /// their lifecycle writes in the same transaction as their records).
    fn leased(&self) -> Result<HashSet<Digest>, ImageError> {
        Ok(self
            .store
            .list::<Digest>(LEASES)?
            .into_iter()
            .map(|(_, d)| d)
            .collect())
    }

    /// Collects unreferenced blobs and snapshots.
    pub async fn gc(&self) -> Result<GcStats, ImageError> {
        let _exclusive = self.gc_lock.write().await;
        let leased = self.leased()?;
        gc::collect(&self.store, &self.content, &self.snapshots, &leased).await
    }

    /// Bytes and inodes used by unpacked images.
    pub fn fs_usage(&self) -> Result<FsUsage, ImageError> {
        let (bytes, inodes) = self
            .snapshots
            .list()?
            .iter()
            .fold((0, 0), |(b, n), r| (b + r.bytes, n + r.inodes));
        Ok(FsUsage {
            mountpoint: self.snapshots.root().to_path_buf(),
            bytes,
            inodes,
        })
    }
}
