//! Pulling: resolve a reference at a registry (mirrors first), then fetch the layers in
//! parallel, each streamed through its digest check and decompression straight into
//! unpacking, and record the image only when every layer is in place.
//!
//! Every layer goes through [`store_layer`], which the archive import uses too: the blob is
//! teed into the content store while it is decompressed and unpacked, and both digests
//! (compressed and `diff_id`) are checked before anything is committed. A failure or a
//! cancelled request drops the half-written blob and snapshot; nothing is recorded.

use std::collections::HashMap;
use std::io::{BufReader, Read};
use std::sync::{Arc, Mutex};

use bytes::{Buf, Bytes};
use futures::StreamExt;
use tokio::sync::{mpsc, OwnedMutexGuard, Semaphore};

use super::content::{BlobWriter, ContentStore};
use super::digest::{chain_ids, Digest, Hasher};
use super::manifest::{self, Compression, Descriptor, Document, ImageManifest};
use super::progress::{Progress, ProgressTx};
use super::record::ImageRecord;
use super::reference::Reference;
use super::registry::distribution::{BlobStream, DistributionError, RepositoryClient};
use super::registry::{classify, AuthConfig, Endpoint, Registries};
use super::snapshot::{SnapshotRecord, Snapshots};
use super::unpack::{self, UnpackStats};
use super::{ImageError, RegistryFailure};
use crate::store::{Store, IMAGES};

/// Keyed async locks: one holder per key, so concurrent pulls of one image or one layer do the
/// work once (the second finds it done).
#[derive(Debug, Default)]
pub struct KeyedLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl KeyedLocks {
    /// Waits for and takes the lock of `key`.
    pub async fn lock(&self, key: &str) -> OwnedMutexGuard<()> {
        let m = {
            let mut map = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            // Forget locks nobody holds or waits for, so the map stays small.
            map.retain(|_, m| Arc::strong_count(m) > 1);
            map.entry(key.to_string()).or_default().clone()
        };
        m.lock_owned().await
    }
}

/// The puller: registry access, where blobs and snapshots go, and the concurrency limits.
#[derive(Debug)]
pub struct Puller {
    registries: Registries,
    content: ContentStore,
    snapshots: Snapshots,
    store: Store,
    downloads: Arc<Semaphore>,
    images: KeyedLocks,
    layers: Arc<KeyedLocks>,
}

/// Which layer to fetch and what it must turn out to be.
struct LayerTarget<'a> {
    layer: &'a Descriptor,
    diff_id: &'a Digest,
    chain_id: &'a Digest,
    parent: Option<Digest>,
}

/// One fetch location: a client for the reference's repository at one host.
struct Source<'a> {
    client: RepositoryClient,
    endpoint: &'a Endpoint,
    reference: &'a Reference,
}

impl Source<'_> {
    /// The digest the reference pins, else its tag (`latest` when it names neither).
    fn manifest_ref(&self) -> String {
        match (&self.reference.digest, &self.reference.tag) {
            (Some(d), _) => d.to_string(),
            (None, t) => t.clone().unwrap_or_else(|| "latest".into()),
        }
    }

    fn err(&self, e: &DistributionError) -> ImageError {
        let (kind, cause) = classify(e);
        ImageError::Registry {
            host: self.endpoint.host.clone(),
            reference: self.reference.to_string(),
            cause,
            kind,
        }
    }
}

impl Puller {
    /// A puller storing into `content` and `snapshots`, recording into `store`.
    pub fn new(
        registries: Registries,
        content: ContentStore,
        snapshots: Snapshots,
        store: Store,
    ) -> Puller {
        let downloads = Arc::new(Semaphore::new(registries.max_concurrent_downloads()));
        Puller {
            registries,
            content,
            snapshots,
            store,
            downloads,
            images: KeyedLocks::default(),
            layers: Arc::new(KeyedLocks::default()),
        }
    }

    /// Pulls `reference` and returns its record. Mirrors are tried first; a mirror that fails
    /// for any registry reason falls through to the next endpoint, the origin last.
    pub async fn pull(
        &self,
        reference: &Reference,
        auth: Option<&AuthConfig>,
        progress: Option<ProgressTx>,
    ) -> Result<ImageRecord, ImageError> {
        let _one_at_a_time = self.images.lock(&reference.to_string()).await;
        let creds = self
            .registries
            .credentials(&reference.registry, auth)
            .map_err(|cause| {
                ImageError::InvalidArgument(format!("pulling {reference}: {cause}"))
            })?;
        let mut last = None;
        for endpoint in self.registries.endpoints(&reference.registry) {
            let result =
                match self
                    .registries
                    .client(&endpoint.host, &reference.repository, creds.clone())
                {
                    Ok(client) => {
                        let src = Source {
                            client,
                            endpoint: &endpoint,
                            reference,
                        };
                        self.pull_from(&src, progress.as_ref()).await
                    }
                    Err(cause) => Err(ImageError::Registry {
                        host: endpoint.host.clone(),
                        reference: reference.to_string(),
                        cause,
                        kind: RegistryFailure::Other,
                    }),
                };
            match result {
                Ok(rec) => return Ok(rec),
                Err(e @ ImageError::Registry { .. }) if endpoint.mirror => {
                    tracing::warn!(mirror = %endpoint.host, error = %e, "mirror failed, trying next");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| ImageError::Internal("no registry endpoint".into())))
    }

    async fn pull_from(
        &self,
        src: &Source<'_>,
        progress: Option<&ProgressTx>,
    ) -> Result<ImageRecord, ImageError> {
        let reference = src.reference;
        let top_bytes = src
            .client
            .manifest(&src.manifest_ref(), manifest::ACCEPT)
            .await
            .map_err(|e| src.err(&e))?;
        let top_digest = Digest::of(&top_bytes);
        if let Some(want) = &reference.digest {
            if *want != top_digest {
                return Err(ImageError::DigestMismatch {
                    what: format!("manifest of {reference} from {}", src.endpoint.host),
                    expected: want.clone(),
                    actual: top_digest,
                });
            }
        }
        let unsupported = |what: String| ImageError::Unsupported {
            reference: reference.to_string(),
            what,
        };
        let doc = manifest::parse_document(&top_bytes).map_err(unsupported)?;
        let (manifest, manifest_desc, index) = match doc {
            Document::Manifest(m) => {
                let desc = Descriptor {
                    media_type: media_type_of(&top_bytes),
                    digest: top_digest.clone(),
                    size: top_bytes.len() as u64,
                    platform: None,
                    annotations: Default::default(),
                };
                (m, desc, None)
            }
            Document::Index(idx) => {
                let want = manifest::host_platform();
                let desc = manifest::select_platform(&idx, &want)
                    .cloned()
                    .ok_or_else(|| {
                        unsupported(format!(
                            "no manifest for {}/{}{} in the image index (it has: {})",
                            want.os,
                            want.architecture,
                            want.variant
                                .as_ref()
                                .map(|v| format!("/{v}"))
                                .unwrap_or_default(),
                            idx.manifests
                                .iter()
                                .filter_map(|d| d.platform.as_ref())
                                .map(|p| format!(
                                    "{}/{}{}",
                                    p.os,
                                    p.architecture,
                                    p.variant
                                        .as_ref()
                                        .map(|v| format!("/{v}"))
                                        .unwrap_or_default()
                                ))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ))
                    })?;
                let bytes = src
                    .client
                    .manifest(desc.digest.as_str(), manifest::ACCEPT)
                    .await
                    .map_err(|e| src.err(&e))?;
                let got = Digest::of(&bytes);
                if got != desc.digest {
                    return Err(ImageError::DigestMismatch {
                        what: format!("platform manifest of {reference}"),
                        expected: desc.digest.clone(),
                        actual: got,
                    });
                }
                let m = match manifest::parse_document(&bytes).map_err(unsupported)? {
                    Document::Manifest(m) => m,
                    Document::Index(_) => {
                        return Err(unsupported("an index nested in an index".into()))
                    }
                };
                self.content.put(&desc.digest, &bytes).await?;
                self.content.put(&top_digest, &top_bytes).await?;
                (m, desc, Some(top_digest.clone()))
            }
        };
        if index.is_none() {
            self.content.put(&manifest_desc.digest, &top_bytes).await?;
        }
        tracing::debug!(reference = %reference, manifest = %manifest_desc.digest, "resolved");
        if let Some(tx) = progress {
            let _ = tx.send(Progress::Resolved {
                reference: reference.to_string(),
                manifest: manifest_desc.digest.clone(),
                layers: manifest.layers.len(),
            });
        }

        // The config names the diff_ids (and so the chain IDs) the layers are checked against;
        // while it is fetched, the first layers' responses are requested already, unless
        // their blob is stored (then the layer is most likely unpacked: no request wasted).
        let ahead = self
            .registries
            .max_concurrent_downloads()
            .min(manifest.layers.len());
        let prefetch = manifest.layers[..ahead].iter().map(|l| async move {
            if self.content.exists(&l.digest).await {
                None
            } else {
                Some(src.client.blob_stream(l.digest.as_str()).await)
            }
        });
        let (config_bytes, prefetched) = tokio::join!(
            self.fetch_config(src, &manifest),
            futures::future::join_all(prefetch)
        );
        let config_bytes = config_bytes?;
        let mut prefetched = prefetched.into_iter();
        tracing::debug!(config = %manifest.config.digest, "config stored");
        let config = manifest::parse_config(&config_bytes).map_err(unsupported)?;
        let diff_ids = config.rootfs.diff_ids.clone();
        if diff_ids.len() != manifest.layers.len() {
            return Err(unsupported(format!(
                "manifest has {} layers but the config lists {} diff_ids",
                manifest.layers.len(),
                diff_ids.len()
            )));
        }
        let chains = chain_ids(&diff_ids);
        let fetches = manifest.layers.iter().enumerate().map(|(i, layer)| {
            let parent = i.checked_sub(1).map(|p| chains[p].clone());
            let ready = prefetched.next().flatten();
            let target = LayerTarget {
                layer,
                diff_id: &diff_ids[i],
                chain_id: &chains[i],
                parent,
            };
            self.fetch_layer(src, target, ready, progress)
        });
        futures::future::try_join_all(fetches).await?;

        let rec = ImageRecord {
            id: manifest.config.digest.clone(),
            repo_tags: reference.tagged().into_iter().collect(),
            repo_digests: vec![reference.with_digest(&top_digest)],
            manifest: manifest_desc,
            index,
            size: manifest.config.size + manifest.layers.iter().map(|l| l.size).sum::<u64>(),
            layers: manifest.layers.clone(),
            diff_ids,
            chain_ids: chains,
            user: config.config.as_ref().and_then(|c| c.user.clone()),
            pinned: false,
            annotations: manifest.annotations.clone(),
        };
        tracing::debug!(layers = rec.layers.len(), "layers in place");
        let rec = record_image(&self.store, rec)?;
        tracing::debug!(id = %rec.id, "image recorded");
        if let Some(tx) = progress {
            let _ = tx.send(Progress::Done { id: rec.id.clone() });
        }
        Ok(rec)
    }

    async fn fetch_config(
        &self,
        src: &Source<'_>,
        manifest: &ImageManifest,
    ) -> Result<Vec<u8>, ImageError> {
        let d = &manifest.config.digest;
        if self.content.exists(d).await {
            return self.content.read(d).await;
        }
        let bytes = src
            .client
            .blob_bytes(d.as_str(), manifest.config.size)
            .await
            .map_err(|e| src.err(&e))?;
        if bytes.len() as u64 != manifest.config.size {
            return Err(ImageError::SizeMismatch {
                digest: d.clone(),
                expected: manifest.config.size,
                actual: bytes.len() as u64,
            });
        }
        let got = Digest::of(&bytes);
        if got != *d {
            return Err(ImageError::DigestMismatch {
                what: format!("config of {}", src.reference),
                expected: d.clone(),
                actual: got,
            });
        }
        self.content.put(d, &bytes).await?;
        Ok(bytes)
    }

    async fn fetch_layer(
        &self,
        src: &Source<'_>,
        target: LayerTarget<'_>,
        ready: Option<Result<BlobStream, DistributionError>>,
        progress: Option<&ProgressTx>,
    ) -> Result<SnapshotRecord, ImageError> {
        let LayerTarget {
            layer,
            diff_id,
            chain_id,
            parent,
        } = target;
        let compression = manifest::layer_compression(&layer.media_type).map_err(|what| {
            ImageError::Unsupported {
                reference: src.reference.to_string(),
                what: format!("layer {}: {what}", layer.digest),
            }
        })?;
        let _layer_lock = self.layers.lock(chain_id.as_str()).await;
        if let Some(rec) = self.snapshots.get(chain_id)? {
            if let Some(tx) = progress {
                let _ = tx.send(Progress::Cached {
                    layer: layer.digest.clone(),
                });
            }
            return Ok(rec);
        }
        let _permit = self
            .downloads
            .acquire()
            .await
            .map_err(|_| ImageError::Internal("download limiter closed".into()))?;
        let mut stream = match ready {
            Some(r) => r,
            None => src.client.blob_stream(layer.digest.as_str()).await,
        }
        .map_err(|e| src.err(&e))?;

        let (tx, rx) = mpsc::channel::<Result<Bytes, String>>(64);
        let job = LayerJob {
            content: self.content.clone(),
            snapshots: self.snapshots.clone(),
            layer: layer.clone(),
            compression,
            diff_id: diff_id.clone(),
            chain_id: chain_id.clone(),
            parent,
        };
        let unpacker = tokio::task::spawn_blocking(move || {
            let reader = ChannelReader {
                rx,
                cur: Bytes::new(),
                error: None,
            };
            store_layer(reader, &job)
        });
        tracing::debug!(layer = %layer.digest, "layer response");
        let mut done = 0u64;
        while let Some(item) = stream.next().await {
            let item = item.map_err(|e| e.to_string());
            let failed = item.is_err();
            if let Ok(b) = &item {
                done += b.len() as u64;
                if let Some(p) = progress {
                    let _ = p.send(Progress::Bytes {
                        layer: layer.digest.clone(),
                        done,
                        total: layer.size,
                    });
                }
            }
            if tx.send(item).await.is_err() || failed {
                break;
            }
        }
        drop(tx);
        let rec = unpacker
            .await
            .map_err(|e| ImageError::Internal(format!("unpack task: {e}")))?
            .map_err(|e| match e {
                LayerFailure::Transfer(cause) => ImageError::Registry {
                    host: src.endpoint.host.clone(),
                    reference: src.reference.to_string(),
                    cause: format!("layer {}: {cause}", layer.digest),
                    kind: RegistryFailure::Other,
                },
                LayerFailure::Image(e) => e,
            })?;
        tracing::debug!(layer = %layer.digest, "layer committed");
        if let Some(p) = progress {
            let _ = p.send(Progress::Unpacked {
                layer: layer.digest.clone(),
            });
        }
        Ok(rec)
    }
}

/// Adds a new image record, merging names with an existing record of the same id and taking
/// its tags away from any other image (a tag names one image).
pub fn record_image(store: &Store, new: ImageRecord) -> Result<ImageRecord, ImageError> {
    Ok(store.update(|t| {
        let mut rec = match t.get::<ImageRecord>(IMAGES, new.id.as_str())? {
            Some(mut old) => {
                for n in &new.repo_tags {
                    if !old.repo_tags.contains(n) {
                        old.repo_tags.push(n.clone());
                    }
                }
                for n in &new.repo_digests {
                    if !old.repo_digests.contains(n) {
                        old.repo_digests.push(n.clone());
                    }
                }
                old.pinned |= new.pinned;
                old
            }
            None => new.clone(),
        };
        rec.repo_tags.sort();
        rec.repo_digests.sort();
        for (key, mut other) in t.list::<ImageRecord>(IMAGES)? {
            if other.id == rec.id {
                continue;
            }
            let before = other.repo_tags.len();
            other.repo_tags.retain(|n| !rec.repo_tags.contains(n));
            if other.repo_tags.len() != before {
                if other.repo_tags.is_empty() && other.repo_digests.is_empty() {
                    t.delete(IMAGES, &key)?;
                } else {
                    t.put(IMAGES, &key, &other)?;
                }
            }
        }
        t.put(IMAGES, rec.id.as_str(), &rec)?;
        Ok(rec)
    })?)
}

fn media_type_of(bytes: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct M {
        #[serde(rename = "mediaType", default)]
        media_type: String,
    }
    serde_json::from_slice::<M>(bytes)
        .map(|m| m.media_type)
        .unwrap_or_default()
}

/// Everything a blocking layer store needs.
#[derive(Debug, Clone)]
pub struct LayerJob {
    /// Where the compressed blob goes.
    pub content: ContentStore,
    /// Where the unpacked layer goes.
    pub snapshots: Snapshots,
    /// The layer's descriptor (compressed digest and size).
    pub layer: Descriptor,
    /// How it is compressed.
    pub compression: Compression,
    /// Its expected uncompressed digest.
    pub diff_id: Digest,
    /// Its chain ID.
    pub chain_id: Digest,
    /// Its parent's chain ID.
    pub parent: Option<Digest>,
}

/// Why a layer failed: the transfer broke, or the content is wrong.
#[derive(Debug)]
pub enum LayerFailure {
    /// The source stream failed before delivering every byte.
    Transfer(String),
    /// The bytes are not the promised layer.
    Image(ImageError),
}

impl From<ImageError> for LayerFailure {
    fn from(e: ImageError) -> LayerFailure {
        LayerFailure::Image(e)
    }
}

/// A source of compressed layer bytes that can say whether it failed.
pub trait LayerSource: Read {
    /// The transfer error, if the source failed.
    fn failure(&self) -> Option<String>;
}

/// Reads chunks sent from the async side.
struct ChannelReader {
    rx: mpsc::Receiver<Result<Bytes, String>>,
    cur: Bytes,
    error: Option<String>,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if !self.cur.is_empty() {
                let n = buf.len().min(self.cur.len());
                buf[..n].copy_from_slice(&self.cur[..n]);
                self.cur.advance(n);
                return Ok(n);
            }
            if let Some(e) = &self.error {
                return Err(std::io::Error::other(e.clone()));
            }
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => self.error = Some(e),
                None => return Ok(0),
            }
        }
    }
}

impl LayerSource for ChannelReader {
    fn failure(&self) -> Option<String> {
        self.error.clone()
    }
}

/// A plain reader (a file in an archive) as a layer source.
pub struct ReaderSource<R>(pub R);

impl<R: Read> Read for ReaderSource<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl<R: Read> LayerSource for ReaderSource<R> {
    fn failure(&self) -> Option<String> {
        None
    }
}

/// Copies everything read into the blob writer.
struct Tee<S> {
    src: S,
    blob: BlobWriter,
    write_error: Option<String>,
}

impl<S: Read> Read for Tee<S> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.src.read(buf)?;
        if let Err(e) = self.blob.write(&buf[..n]) {
            self.write_error = Some(e.to_string());
            return Err(std::io::Error::other(e.to_string()));
        }
        Ok(n)
    }
}

/// Hashes what passes through and remembers the first read error (a decompression failure).
struct Hashing<R> {
    inner: R,
    hasher: Hasher,
    error: Option<String>,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.hasher.update(&buf[..n]);
                Ok(n)
            }
            Err(e) => {
                if self.error.is_none() {
                    self.error = Some(e.to_string());
                }
                Err(e)
            }
        }
    }
}

/// Stores one layer (blocking): tees the compressed bytes into the content store, decompresses
/// and unpacks them into a fresh snapshot, then checks, in this order, that the transfer
/// completed, that the blob's size and digest are the descriptor's, that unpacking worked, and
/// that the uncompressed digest is the config's `diff_id`; only then are blob and snapshot
/// committed. The blob check comes first so that corrupted bytes are reported as a digest
/// mismatch naming both digests, whatever the decompressor made of them.
pub fn store_layer<S: LayerSource>(src: S, job: &LayerJob) -> Result<SnapshotRecord, LayerFailure> {
    let blob = job.content.ingest()?;
    let mut tee = Tee {
        src,
        blob,
        write_error: None,
    };
    let prepared = job.snapshots.prepare()?;
    let outcome = unpack_stream(&mut tee, job.compression, &prepared.fs(), &job.layer.digest);
    // Drain what the decompressor left, so the blob digest covers every byte received.
    let _ = std::io::copy(&mut tee, &mut std::io::sink());
    let Tee {
        src,
        blob,
        write_error,
    } = tee;
    if let Some(e) = write_error {
        return Err(
            ImageError::Internal(format!("writing layer {}: {e}", job.layer.digest)).into(),
        );
    }
    if let Some(e) = src.failure() {
        if blob.len() < job.layer.size {
            return Err(LayerFailure::Transfer(e));
        }
    }
    // Verified but not yet in place: a blob that does not unpack, or unpacks to the wrong
    // diff_id, is dropped with the snapshot rather than kept unreferenced.
    let blob = blob.verify(&job.layer.digest, Some(job.layer.size))?;
    let (stats, diff) = outcome?;
    if diff != job.diff_id {
        return Err(ImageError::DigestMismatch {
            what: format!("layer {} uncompressed (diff_id)", job.layer.digest),
            expected: job.diff_id.clone(),
            actual: diff,
        }
        .into());
    }
    blob.persist()?;
    tracing::debug!(layer = %job.layer.digest, entries = stats.entries, "layer unpacked");
    let rec = job
        .snapshots
        .commit(prepared, &job.chain_id, job.parent.as_ref(), &job.diff_id)?;
    tracing::debug!(layer = %job.layer.digest, "snapshot committed");
    Ok(rec)
}

fn unpack_stream<R: Read>(
    src: R,
    compression: Compression,
    dest: &std::path::Path,
    layer: &Digest,
) -> Result<(UnpackStats, Digest), ImageError> {
    let run = |decoded: &mut dyn Read| {
        let mut h = Hashing {
            inner: decoded,
            hasher: Hasher::default(),
            error: None,
        };
        match unpack::apply_layer(&mut h, dest) {
            Ok(stats) => Ok((stats, h.hasher.finish())),
            // A read error underneath the tar parser is the compressed stream's fault.
            Err(e) => Err(match h.error {
                Some(cause) => ImageError::Corrupt {
                    layer: layer.clone(),
                    cause: format!("{}: {cause}", compression_name(compression)),
                },
                None => ImageError::Unpack {
                    layer: layer.clone(),
                    source: e,
                },
            }),
        }
    };
    match compression {
        Compression::None => {
            let mut src = src;
            run(&mut src)
        }
        Compression::Gzip => run(&mut flate2::read::MultiGzDecoder::new(BufReader::new(src))),
        Compression::Zstd => match zstd::stream::read::Decoder::new(src) {
            Ok(mut d) => run(&mut d),
            Err(e) => Err(ImageError::Corrupt {
                layer: layer.clone(),
                cause: format!("zstd: {e}"),
            }),
        },
    }
}

fn compression_name(c: Compression) -> &'static str {
    match c {
        Compression::None => "tar",
        Compression::Gzip => "gzip",
        Compression::Zstd => "zstd",
    }
}
