//! Garbage collection: blobs and snapshots that no image and no container references go.
//!
//! Roots are the image records (config, manifests, layer blobs, chain IDs) and the snapshots
//! leased by containers; a kept snapshot keeps its ancestors. The caller excludes pulls while
//! collecting, so content a pull has stored but not yet recorded is never taken.

use std::collections::HashSet;

use super::content::ContentStore;
use super::digest::Digest;
use super::record::ImageRecord;
use super::snapshot::Snapshots;
use super::ImageError;
use crate::store::{Store, IMAGES};

/// What one collection removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcStats {
    /// Blobs deleted.
    pub blobs: usize,
    /// Snapshots deleted.
    pub snapshots: usize,
}

/// Collects everything unreferenced. `leased` are snapshot chain IDs in use by containers.
pub async fn collect(
    store: &Store,
    content: &ContentStore,
    snapshots: &Snapshots,
    leased: &HashSet<Digest>,
) -> Result<GcStats, ImageError> {
    let images: Vec<ImageRecord> = store.list(IMAGES)?.into_iter().map(|(_, r)| r).collect();
    let keep_blobs: HashSet<Digest> = images.iter().flat_map(|i| i.blobs()).collect();
    let all = snapshots.list()?;
    let parent_of: std::collections::HashMap<Digest, Option<Digest>> = all
        .iter()
        .map(|r| (r.chain_id.clone(), r.parent.clone()))
        .collect();
    let mut keep_snaps: HashSet<Digest> = HashSet::new();
    let roots = images
        .iter()
        .flat_map(|i| i.chain_ids.iter().cloned())
        .chain(leased.iter().cloned());
    for root in roots {
        let mut cur = Some(root);
        while let Some(c) = cur {
            if !keep_snaps.insert(c.clone()) {
                break;
            }
            cur = parent_of.get(&c).cloned().flatten();
        }
    }

    let mut stats = GcStats::default();
    for d in content.list().await? {
        if !keep_blobs.contains(&d) {
            content.remove(&d).await?;
            stats.blobs += 1;
        }
    }
    for s in all {
        if !keep_snaps.contains(&s.chain_id) {
            snapshots.remove(&s.chain_id).await?;
            stats.snapshots += 1;
        }
    }
    if stats != GcStats::default() {
        tracing::info!(
            blobs = stats.blobs,
            snapshots = stats.snapshots,
            "garbage collected"
        );
    }
    Ok(stats)
}
