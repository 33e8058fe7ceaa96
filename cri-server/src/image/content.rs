//! The content store: verified blobs at `<root>/content/sha256/<hex>`.
//!
//! A blob is written into `ingest/` under a random name, hashed as it is written, and renamed
//! into place only when its digest (and size, when known) match. A blob file that exists is
//! therefore always the content its name says; a crash leaves at most an ingest file, which
//! [`ContentStore::clean_ingest`] removes at start-up.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::digest::{Digest, Hasher};
use super::ImageError;

/// Blobs up to this size are written on the calling task.
const INLINE_PUT: usize = 256 << 10;

/// The content store rooted at `<root>/content`.
#[derive(Debug, Clone)]
pub struct ContentStore {
    dir: PathBuf,
}

impl ContentStore {
    /// A store under `root` (directories are created on demand).
    pub fn new(root: &Path) -> ContentStore {
        ContentStore {
            dir: root.join("content"),
        }
    }

    /// Where a blob lives.
    pub fn path(&self, d: &Digest) -> PathBuf {
        self.dir.join("sha256").join(d.hex())
    }

    /// Whether a verified blob is present.
    pub async fn exists(&self, d: &Digest) -> bool {
        // One stat: cheaper inline than a hop to the blocking pool.
        std::fs::metadata(self.path(d)).is_ok()
    }

    /// Reads a whole blob (configs and manifests: small).
    pub async fn read(&self, d: &Digest) -> Result<Vec<u8>, ImageError> {
        tokio::fs::read(self.path(d))
            .await
            .map_err(|e| ImageError::io(format!("read blob {d}"), e))
    }

    /// Stores bytes already in memory, verifying them against `d`.
    pub async fn put(&self, d: &Digest, bytes: &[u8]) -> Result<(), ImageError> {
        let actual = Digest::of(bytes);
        if &actual != d {
            return Err(ImageError::DigestMismatch {
                what: "blob".into(),
                expected: d.clone(),
                actual,
            });
        }
        if self.exists(d).await {
            return Ok(());
        }
        // Manifests and configs are small: written inline rather than on the blocking pool.
        if bytes.len() <= INLINE_PUT {
            let mut w = self.ingest()?;
            w.write(bytes)?;
            return w.commit(d, Some(bytes.len() as u64));
        }
        let store = self.clone();
        let d = d.clone();
        let bytes = bytes.to_vec();
        tokio::task::spawn_blocking(move || {
            let mut w = store.ingest()?;
            w.write(&bytes)?;
            w.commit(&d, Some(bytes.len() as u64))
        })
        .await
        .map_err(|e| ImageError::Internal(format!("blob writer task: {e}")))?
    }

    /// Starts a blocking writer for one blob (used on the unpack thread).
    pub fn ingest(&self) -> Result<BlobWriter, ImageError> {
        let ingest = self.dir.join("ingest");
        std::fs::create_dir_all(&ingest)
            .map_err(|e| ImageError::io(format!("create {}", ingest.display()), e))?;
        std::fs::create_dir_all(self.dir.join("sha256"))
            .map_err(|e| ImageError::io("create content dir", e))?;
        let file = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(&ingest)
            .map_err(|e| {
                ImageError::io(format!("create ingest file in {}", ingest.display()), e)
            })?;
        Ok(BlobWriter {
            file,
            hasher: Hasher::default(),
            store: self.clone(),
        })
    }

    /// Removes leftovers of interrupted writes.
    pub async fn clean_ingest(&self) {
        let _ = tokio::fs::remove_dir_all(self.dir.join("ingest")).await;
    }

    /// Removes a blob; a missing one is fine.
    pub async fn remove(&self, d: &Digest) -> Result<(), ImageError> {
        match tokio::fs::remove_file(self.path(d)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ImageError::io(format!("remove blob {d}"), e)),
        }
    }

    /// Every blob present.
    pub async fn list(&self) -> Result<Vec<Digest>, ImageError> {
        let mut out = Vec::new();
        let mut rd = match tokio::fs::read_dir(self.dir.join("sha256")).await {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(ImageError::io("list content", e)),
        };
        while let Some(e) = rd
            .next_entry()
            .await
            .map_err(|e| ImageError::io("list content", e))?
        {
            if let Some(name) = e.file_name().to_str() {
                if let Ok(d) = format!("sha256:{name}").parse::<Digest>() {
                    out.push(d);
                }
            }
        }
        Ok(out)
    }
}

/// A blob being written: hashed on the way in, renamed into place by [`BlobWriter::commit`].
/// Dropping it without a commit deletes the ingest file.
pub struct BlobWriter {
    file: tempfile::NamedTempFile,
    hasher: Hasher,
    store: ContentStore,
}

impl BlobWriter {
    /// Appends bytes.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), ImageError> {
        self.hasher.update(bytes);
        self.file
            .write_all(bytes)
            .map_err(|e| ImageError::io("write ingest file", e))
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.hasher.len()
    }

    /// True before any byte.
    pub fn is_empty(&self) -> bool {
        self.hasher.is_empty()
    }

    /// Verifies digest and size and moves the blob into place.
    pub fn commit(self, expected: &Digest, size: Option<u64>) -> Result<(), ImageError> {
        self.verify(expected, size)?.persist()
    }

    /// Verifies digest and size, leaving the blob in `ingest/` until [`VerifiedBlob::persist`]:
    /// a layer's blob is kept only once its unpacking and `diff_id` have checked out too.
    pub fn verify(self, expected: &Digest, size: Option<u64>) -> Result<VerifiedBlob, ImageError> {
        let len = self.hasher.len();
        if let Some(size) = size {
            if size != len {
                return Err(ImageError::SizeMismatch {
                    digest: expected.clone(),
                    expected: size,
                    actual: len,
                });
            }
        }
        let actual = self.hasher.finish();
        if &actual != expected {
            return Err(ImageError::DigestMismatch {
                what: "blob".into(),
                expected: expected.clone(),
                actual,
            });
        }
        Ok(VerifiedBlob {
            file: self.file,
            dest: self.store.path(expected),
            digest: actual,
        })
    }
}

/// A blob whose digest and size are checked, not yet in place. Dropping it deletes the
/// ingest file.
pub struct VerifiedBlob {
    file: tempfile::NamedTempFile,
    dest: PathBuf,
    digest: Digest,
}

impl VerifiedBlob {
    /// Moves the blob into place.
    pub fn persist(self) -> Result<(), ImageError> {
        let digest = self.digest;
        self.file
            .persist(&self.dest)
            .map_err(|e| ImageError::io(format!("commit blob {digest}"), e.error))?;
        Ok(())
    }
}
