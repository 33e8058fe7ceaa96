//! Unpacked layers ("snapshots") at `<root>/snapshots/<n>/fs`, keyed by chain ID.
//!
//! A layer is unpacked into `snapshots/tmp-*/fs`, then renamed to `snapshots/<n>` inside the
//! store transaction that records it; so a record always points at a complete directory, and a
//! crash leaves at most a `tmp-*` or an unrecorded `<n>` directory, which [`Snapshots::clean`]
//! removes at start-up. Each snapshot holds only its own layer (overlay whiteouts included);
//! a rootfs is an overlay of the chain's `fs` directories.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::digest::Digest;
use super::ImageError;
use crate::store::{Store, SNAPSHOTS};

/// What the store knows of one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// Directory number under `snapshots/`.
    pub id: u64,
    /// The chain ID it is keyed by.
    pub chain_id: Digest,
    /// The chain ID of the layer below, if any.
    pub parent: Option<Digest>,
    /// The uncompressed layer's digest.
    pub diff_id: Digest,
    /// Disk usage in bytes (allocated blocks).
    pub bytes: u64,
    /// Inodes used.
    pub inodes: u64,
}

/// The snapshot directory and its records.
#[derive(Debug, Clone)]
pub struct Snapshots {
    dir: PathBuf,
    store: Store,
}

/// A snapshot being unpacked; dropping it removes the directory (after a commit renamed it
/// away, there is nothing left to remove).
#[derive(Debug)]
pub struct Prepared {
    dir: PathBuf,
}

impl Prepared {
    /// The directory to unpack into.
    pub fn fs(&self) -> PathBuf {
        self.dir.join("fs")
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        // Blocking, but only on an unpack thread.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Snapshots {
    /// Snapshots under `<root>/snapshots`.
    pub fn new(root: &Path, store: Store) -> Snapshots {
        Snapshots {
            dir: root.join("snapshots"),
            store,
        }
    }

    /// The root of every snapshot (what `ImageFsInfo` reports on).
    pub fn root(&self) -> &Path {
        &self.dir
    }

    /// The `fs` directory of a committed snapshot.
    pub fn fs_dir(&self, rec: &SnapshotRecord) -> PathBuf {
        self.dir.join(rec.id.to_string()).join("fs")
    }

    /// A committed snapshot by chain ID.
    pub fn get(&self, chain_id: &Digest) -> Result<Option<SnapshotRecord>, ImageError> {
        Ok(self.store.get(SNAPSHOTS, chain_id.as_str())?)
    }

    /// Every committed snapshot.
    pub fn list(&self) -> Result<Vec<SnapshotRecord>, ImageError> {
        Ok(self
            .store
            .list::<SnapshotRecord>(SNAPSHOTS)?
            .into_iter()
            .map(|(_, r)| r)
            .collect())
    }

    /// A fresh, empty directory to unpack into (blocking: call on a blocking thread).
    pub fn prepare(&self) -> Result<Prepared, ImageError> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| ImageError::io(format!("create {}", self.dir.display()), e))?;
        let tmp = tempfile::Builder::new()
            .prefix("tmp-")
            .tempdir_in(&self.dir)
            .map_err(|e| ImageError::io("create snapshot dir", e))?
            .keep();
        let p = Prepared { dir: tmp };
        std::fs::create_dir(p.fs()).map_err(|e| ImageError::io("create snapshot fs dir", e))?;
        Ok(p)
    }

    /// Records a prepared snapshot under `chain_id` (blocking). If another pull committed the
    /// same chain ID first, the prepared copy is dropped and the existing record returned.
    pub fn commit(
        &self,
        prepared: Prepared,
        chain_id: &Digest,
        parent: Option<&Digest>,
        diff_id: &Digest,
    ) -> Result<SnapshotRecord, ImageError> {
        let tmp = prepared.dir.clone();
        let (bytes, inodes) = disk_usage(&tmp.join("fs"))?;
        let dir = self.dir.clone();
        let rec = self.store.update(|t| {
            if let Some(existing) = t.get::<SnapshotRecord>(SNAPSHOTS, chain_id.as_str())? {
                return Ok(existing);
            }
            let id = t.next_id("snapshot")?;
            let rec = SnapshotRecord {
                id,
                chain_id: chain_id.clone(),
                parent: parent.cloned(),
                diff_id: diff_id.clone(),
                bytes,
                inodes,
            };
            std::fs::rename(&tmp, dir.join(id.to_string())).map_err(|e| {
                crate::store::StoreError::Db {
                    context: "rename snapshot",
                    message: format!("{}: {e}", tmp.display()),
                }
            })?;
            t.put(SNAPSHOTS, chain_id.as_str(), &rec)?;
            Ok(rec)
        })?;
        // After a rename the tmp path is gone; after a lost race it holds a duplicate copy.
        drop(prepared);
        Ok(rec)
    }

    /// The `fs` directories of a chain, top layer first (overlay `lowerdir` order).
    pub fn lowers(&self, top: &Digest) -> Result<Vec<PathBuf>, ImageError> {
        let mut out = Vec::new();
        let mut next = Some(top.clone());
        while let Some(c) = next {
            let rec = self
                .get(&c)?
                .ok_or_else(|| ImageError::Internal(format!("snapshot {c} is missing")))?;
            out.push(self.fs_dir(&rec));
            next = rec.parent;
        }
        Ok(out)
    }

    /// Removes a snapshot: the record first, so a crash leaves only an unrecorded directory.
    pub async fn remove(&self, chain_id: &Digest) -> Result<(), ImageError> {
        let key = chain_id.as_str().to_string();
        let rec: Option<SnapshotRecord> = self.store.update(|t| {
            let r = t.get(SNAPSHOTS, &key)?;
            t.delete(SNAPSHOTS, &key)?;
            Ok(r)
        })?;
        if let Some(rec) = rec {
            let d = self.dir.join(rec.id.to_string());
            tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&d))
                .await
                .map_err(|e| ImageError::Internal(format!("remove task: {e}")))?
                .or_else(|e| {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        Ok(())
                    } else {
                        Err(ImageError::io(format!("remove snapshot {chain_id}"), e))
                    }
                })?;
        }
        Ok(())
    }

    /// Removes interrupted unpacks and directories no record names.
    pub async fn clean(&self) -> Result<(), ImageError> {
        let known: HashSet<String> = self.list()?.into_iter().map(|r| r.id.to_string()).collect();
        let mut rd = match tokio::fs::read_dir(&self.dir).await {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(ImageError::io("list snapshots", e)),
        };
        let mut stale = Vec::new();
        while let Some(e) = rd
            .next_entry()
            .await
            .map_err(|e| ImageError::io("list snapshots", e))?
        {
            let name = e.file_name().to_string_lossy().into_owned();
            let numeric = name.bytes().all(|b| b.is_ascii_digit());
            if name.starts_with("tmp-") || (numeric && !known.contains(&name)) {
                stale.push(e.path());
            }
        }
        for p in stale {
            tracing::info!(path = %p.display(), "removing leftover snapshot directory");
            let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(p)).await;
        }
        Ok(())
    }
}

/// Allocated bytes and inode count of a tree, hard links counted once.
fn disk_usage(root: &Path) -> Result<(u64, u64), ImageError> {
    let mut bytes = 0u64;
    let mut inodes = 0u64;
    let mut seen = HashSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = std::fs::symlink_metadata(&p)
            .map_err(|e| ImageError::io(format!("stat {}", p.display()), e))?;
        if md.nlink() > 1 && !md.is_dir() && !seen.insert(md.ino()) {
            continue;
        }
        inodes += 1;
        bytes += md.blocks() * 512;
        if md.is_dir() {
            let rd = std::fs::read_dir(&p)
                .map_err(|e| ImageError::io(format!("list {}", p.display()), e))?;
            for e in rd {
                let e = e.map_err(|e| ImageError::io(format!("list {}", p.display()), e))?;
                stack.push(e.path());
            }
        }
    }
    Ok((bytes, inodes))
}
