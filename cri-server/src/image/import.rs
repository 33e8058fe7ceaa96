//! Images from outside a registry: `docker save` archives, OCI image layout archives, and the
//! built-in pause image. They go through the same layer path as a pull ([`store_layer`]), so
//! the same digest checks and unpack rules apply.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::digest::{chain_ids, Digest, Hasher};
use super::manifest::{self, Compression, Descriptor, Document, OCI_MANIFEST};
use super::pull::{record_image, store_layer, LayerFailure, LayerJob, ReaderSource};
use super::record::ImageRecord;
use super::reference::Reference;
use super::service::ImageService;
use super::{pause, unpack, ImageError};

/// Where a layer's bytes come from.
#[derive(Debug, Clone)]
pub enum LayerInput {
    /// A file (inside an extracted archive).
    File(PathBuf),
    /// Bytes in memory.
    Bytes(Arc<Vec<u8>>),
}

/// One image to install from local bytes.
#[derive(Debug, Clone)]
pub struct LocalImage {
    /// The manifest as stored (its digest is the image's manifest digest).
    pub manifest: Vec<u8>,
    /// The config blob.
    pub config: Vec<u8>,
    /// One input per manifest layer.
    pub layers: Vec<LayerInput>,
    /// Normalized `name:tag` references.
    pub names: Vec<String>,
    /// Kept from the kubelet's image GC.
    pub pinned: bool,
}

fn unsupported(origin: &str, what: impl Into<String>) -> ImageError {
    ImageError::Unsupported {
        reference: origin.to_string(),
        what: what.into(),
    }
}

/// Installs one local image: content, snapshots, record.
pub async fn install(
    svc: &ImageService,
    img: LocalImage,
    origin: &str,
) -> Result<ImageRecord, ImageError> {
    let manifest_digest = Digest::of(&img.manifest);
    let m = match manifest::parse_document(&img.manifest).map_err(|w| unsupported(origin, w))? {
        Document::Manifest(m) => m,
        Document::Index(_) => return Err(unsupported(origin, "expected a manifest, got an index")),
    };
    if m.layers.len() != img.layers.len() {
        return Err(ImageError::Internal(format!(
            "{origin}: {} layer inputs for {} manifest layers",
            img.layers.len(),
            m.layers.len()
        )));
    }
    svc.content().put(&m.config.digest, &img.config).await?;
    svc.content().put(&manifest_digest, &img.manifest).await?;
    let config = manifest::parse_config(&img.config).map_err(|w| unsupported(origin, w))?;
    let diff_ids = config.rootfs.diff_ids.clone();
    if diff_ids.len() != m.layers.len() {
        return Err(unsupported(
            origin,
            format!(
                "manifest has {} layers but the config lists {} diff_ids",
                m.layers.len(),
                diff_ids.len()
            ),
        ));
    }
    let chains = chain_ids(&diff_ids);
    for (i, (layer, input)) in m.layers.iter().zip(img.layers).enumerate() {
        if svc.snapshots().get(&chains[i])?.is_some() {
            continue;
        }
        let compression =
            manifest::layer_compression(&layer.media_type).map_err(|w| unsupported(origin, w))?;
        let job = LayerJob {
            content: svc.content().clone(),
            snapshots: svc.snapshots().clone(),
            layer: layer.clone(),
            compression,
            diff_id: diff_ids[i].clone(),
            chain_id: chains[i].clone(),
            parent: i.checked_sub(1).map(|p| chains[p].clone()),
        };
        tokio::task::spawn_blocking(move || -> Result<(), LayerFailure> {
            match input {
                LayerInput::File(p) => {
                    let f = std::fs::File::open(&p)
                        .map_err(|e| ImageError::io(format!("open {}", p.display()), e))?;
                    store_layer(ReaderSource(std::io::BufReader::new(f)), &job)?;
                }
                LayerInput::Bytes(b) => {
                    store_layer(ReaderSource(&b[..]), &job)?;
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| ImageError::Internal(format!("import task: {e}")))?
        .map_err(|e| match e {
            LayerFailure::Image(e) => e,
            LayerFailure::Transfer(cause) => ImageError::Internal(cause),
        })?;
    }
    let repo_digests = img
        .names
        .iter()
        .filter_map(|n| Reference::parse(n).ok())
        .map(|r| r.with_digest(&manifest_digest))
        .collect();
    let rec = ImageRecord {
        id: m.config.digest.clone(),
        repo_tags: img.names,
        repo_digests,
        manifest: Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: manifest_digest,
            size: img.manifest.len() as u64,
            platform: None,
            annotations: Default::default(),
        },
        index: None,
        size: m.config.size + m.layers.iter().map(|l| l.size).sum::<u64>(),
        layers: m.layers.clone(),
        diff_ids,
        chain_ids: chains,
        user: config.config.as_ref().and_then(|c| c.user.clone()),
        pinned: img.pinned,
        annotations: m.annotations.clone(),
    };
    record_image(svc.store(), rec)
}

/// Installs `crius.local/pause:builtin` unless it is already there.
pub async fn install_builtin_pause(svc: &ImageService) -> Result<(), ImageError> {
    let b = pause::builtin();
    let id = Digest::of(&b.config);
    if let Some(r) = svc.resolve(pause::PAUSE_IMAGE_REF)? {
        if r.id == id {
            return Ok(());
        }
    }
    install(
        svc,
        LocalImage {
            manifest: b.manifest,
            config: b.config,
            layers: vec![LayerInput::Bytes(Arc::new(b.layer))],
            names: vec![pause::PAUSE_IMAGE_REF.to_string()],
            pinned: true,
        },
        pause::PAUSE_IMAGE_REF,
    )
    .await?;
    Ok(())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerSaveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

#[derive(Deserialize)]
struct OciIndexFile {
    manifests: Vec<Descriptor>,
}

/// Imports every image of a `docker save` archive (`manifest.json`) or an OCI image layout
/// archive (`index.json`), gzip-compressed or not.
pub async fn import_archive(
    svc: &ImageService,
    archive: &Path,
) -> Result<Vec<ImageRecord>, ImageError> {
    let origin = archive.display().to_string();
    let parent = svc
        .snapshots()
        .root()
        .parent()
        .unwrap_or(Path::new("/"))
        .to_path_buf();
    let tmp = tempfile::Builder::new()
        .prefix("import-")
        .tempdir_in(&parent)
        .map_err(|e| ImageError::io(format!("create import dir in {}", parent.display()), e))?;
    let dir = tmp.path().to_path_buf();
    let src = archive.to_path_buf();
    tokio::task::spawn_blocking(move || extract(&src, &dir))
        .await
        .map_err(|e| ImageError::Internal(format!("extract task: {e}")))??;
    let dir = tmp.path();

    let mut images = Vec::new();
    if dir.join("manifest.json").exists() {
        let entries: Vec<DockerSaveEntry> = serde_json::from_slice(&read_in(dir, "manifest.json")?)
            .map_err(|e| unsupported(&origin, format!("manifest.json: {e}")))?;
        for e in entries {
            images.push(docker_image(dir, &origin, e)?);
        }
    } else if dir.join("index.json").exists() {
        let idx: OciIndexFile = serde_json::from_slice(&read_in(dir, "index.json")?)
            .map_err(|e| unsupported(&origin, format!("index.json: {e}")))?;
        for d in idx.manifests {
            images.push(oci_image(dir, &origin, d)?);
        }
    } else {
        return Err(unsupported(
            &origin,
            "neither manifest.json (docker save) nor index.json (OCI layout) in the archive",
        ));
    }
    let mut out = Vec::new();
    for img in images {
        out.push(install(svc, img, &origin).await?);
    }
    Ok(out)
}

/// Unpacks the archive with the layer unpacker: the same refusal of escaping paths.
fn extract(src: &Path, dir: &Path) -> Result<(), ImageError> {
    let mut f = std::fs::File::open(src)
        .map_err(|e| ImageError::io(format!("open {}", src.display()), e))?;
    let mut magic = [0u8; 2];
    let n = f
        .read(&mut magic)
        .map_err(|e| ImageError::io(format!("read {}", src.display()), e))?;
    let f = std::fs::File::open(src)
        .map_err(|e| ImageError::io(format!("open {}", src.display()), e))?;
    let reader: Box<dyn Read> = if n == 2 && magic == [0x1f, 0x8b] {
        Box::new(flate2::read::MultiGzDecoder::new(std::io::BufReader::new(
            f,
        )))
    } else {
        Box::new(std::io::BufReader::new(f))
    };
    unpack::apply_layer(reader, dir).map_err(|e| ImageError::Unsupported {
        reference: src.display().to_string(),
        what: format!("not a usable image archive: {e}"),
    })?;
    Ok(())
}

/// Reads a file named inside the extracted archive, refusing names that leave it.
fn read_in(dir: &Path, name: &str) -> Result<Vec<u8>, ImageError> {
    let p = inside(dir, name)?;
    std::fs::read(&p).map_err(|e| ImageError::io(format!("read {name} from the archive"), e))
}

fn inside(dir: &Path, name: &str) -> Result<PathBuf, ImageError> {
    let p = dir.join(name.trim_start_matches('/'));
    let canon = p
        .canonicalize()
        .map_err(|e| ImageError::io(format!("{name} in the archive"), e))?;
    let root = dir
        .canonicalize()
        .map_err(|e| ImageError::io("import dir", e))?;
    if !canon.starts_with(&root) {
        return Err(ImageError::Unsupported {
            reference: name.into(),
            what: "archive entry points outside the archive".into(),
        });
    }
    Ok(canon)
}

/// Digest, size and media type of a layer file (compression from its magic bytes).
fn describe_layer(path: &Path) -> Result<Descriptor, ImageError> {
    let mut f = std::fs::File::open(path)
        .map_err(|e| ImageError::io(format!("open {}", path.display()), e))?;
    let mut h = Hasher::default();
    let mut buf = vec![0u8; 1 << 16];
    let mut head = Vec::new();
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| ImageError::io(format!("read {}", path.display()), e))?;
        if n == 0 {
            break;
        }
        if head.len() < 4 {
            head.extend_from_slice(&buf[..n.min(4)]);
        }
        h.update(&buf[..n]);
    }
    let compression = if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    };
    let media_type = match compression {
        Compression::None => "application/vnd.oci.image.layer.v1.tar",
        Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
        Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
    };
    let size = h.len();
    Ok(Descriptor {
        media_type: media_type.into(),
        digest: h.finish(),
        size,
        platform: None,
        annotations: Default::default(),
    })
}

fn docker_image(dir: &Path, origin: &str, e: DockerSaveEntry) -> Result<LocalImage, ImageError> {
    let config = read_in(dir, &e.config)?;
    let mut descs = Vec::new();
    let mut inputs = Vec::new();
    for l in &e.layers {
        let p = inside(dir, l)?;
        descs.push(describe_layer(&p)?);
        inputs.push(LayerInput::File(p));
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": Digest::of(&config),
            "size": config.len(),
        },
        "layers": descs,
    });
    let manifest = serde_json::to_vec(&manifest)
        .map_err(|err| unsupported(origin, format!("manifest: {err}")))?;
    let names = e
        .repo_tags
        .unwrap_or_default()
        .iter()
        .map(|t| Reference::parse(t).map(|r| r.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(LocalImage {
        manifest,
        config,
        layers: inputs,
        names,
        pinned: false,
    })
}

fn blob_path(dir: &Path, d: &Digest) -> Result<PathBuf, ImageError> {
    inside(dir, &format!("blobs/sha256/{}", d.hex()))
}

fn oci_image(dir: &Path, origin: &str, d: Descriptor) -> Result<LocalImage, ImageError> {
    let name = d
        .annotations
        .get("io.containerd.image.name")
        .or_else(|| d.annotations.get("org.opencontainers.image.ref.name"))
        .filter(|n| n.contains('/') || n.contains(':'))
        .map(|n| Reference::parse(n).map(|r| r.to_string()))
        .transpose()?;
    let mut bytes = std::fs::read(blob_path(dir, &d.digest)?)
        .map_err(|e| ImageError::io(format!("read blob {}", d.digest), e))?;
    if Digest::of(&bytes) != d.digest {
        return Err(ImageError::DigestMismatch {
            what: format!("{origin}: manifest"),
            expected: d.digest.clone(),
            actual: Digest::of(&bytes),
        });
    }
    let m = match manifest::parse_document(&bytes).map_err(|w| unsupported(origin, w))? {
        Document::Manifest(m) => m,
        Document::Index(idx) => {
            let want = manifest::host_platform();
            let pick = manifest::select_platform(&idx, &want)
                .cloned()
                .ok_or_else(|| unsupported(origin, "no manifest for this platform in the index"))?;
            bytes = std::fs::read(blob_path(dir, &pick.digest)?)
                .map_err(|e| ImageError::io(format!("read blob {}", pick.digest), e))?;
            match manifest::parse_document(&bytes).map_err(|w| unsupported(origin, w))? {
                Document::Manifest(m) => m,
                Document::Index(_) => return Err(unsupported(origin, "nested index")),
            }
        }
    };
    let config = std::fs::read(blob_path(dir, &m.config.digest)?)
        .map_err(|e| ImageError::io(format!("read config {}", m.config.digest), e))?;
    let layers = m
        .layers
        .iter()
        .map(|l| blob_path(dir, &l.digest).map(LayerInput::File))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(LocalImage {
        manifest: bytes,
        config,
        layers,
        names: name.into_iter().collect(),
        pinned: false,
    })
}
