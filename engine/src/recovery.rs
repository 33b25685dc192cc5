//! Start-up recovery: committed records missing from the manifest are entered again.

use crate::ingest;
use crate::manifest::{Manifest, ManifestError};
use crate::storage::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("failed to scan the segments: {0}")]
    Scan(#[from] StoreError),
    #[error("failed to update the manifest: {0}")]
    Manifest(#[from] ManifestError),
}

/// Counts from one recovery pass.
#[derive(Debug, Default, Clone, Copy)]
pub struct RecoveryReport {
    /// Records found past each segment's indexed end and entered in the manifest.
    pub reentered: u64,
    /// Records that are intact but could not be scanned; they stay in the segment and fsck reports them.
    pub unreadable: u64,
}

/// Scans every segment from the point up to which the manifest is complete
/// and enters each committed record found there.
pub fn reenter_missing(store: &Store, manifest: &Manifest) -> Result<RecoveryReport, RecoveryError> {
    let indexed_ends = manifest.indexed_ends()?;
    let records = store.scan_from(&indexed_ends)?;
    let mut report = RecoveryReport::default();
    for scanned in records {
        match ingest::record_from_part10(scanned.record.bytes(), scanned.location, scanned.sequence) {
            Ok(row) => {
                manifest.insert_blocking(row)?;
                report.reentered += 1;
            }
            Err(error) => {
                report.unreadable += 1;
                tracing::error!(segment = scanned.location.segment, offset = scanned.location.offset, %error, "stored record cannot be indexed");
            }
        }
    }
    manifest.flush()?;
    Ok(report)
}
