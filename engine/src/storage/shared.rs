//! State of the store used by both the writers and the committer thread:
//! segment creation, the poisoned flag and the pool of staging buffers.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::aligned::AlignedBuf;
use super::format::{self, SEGMENT_HEADER_LEN};
use super::segment::Segment;
use super::writer::STAGE_LIMIT;
use super::{lock, Shared, StoreError};

/// Staging buffers kept for reuse. More are only in use while that many records
/// wait for the committer at once.
const POOLED_BUFFERS: usize = 32;

impl Shared {
    pub(crate) fn poison(&self, why: &StoreError) {
        if !self.poisoned.swap(true, Ordering::AcqRel) {
            tracing::error!(error = %why, "segment store poisoned; refusing writes until reopened");
        }
    }

    /// Segment size for a record that needs `payload_capacity` bytes of payload room.
    fn segment_size_for(&self, payload_capacity: u64) -> u64 {
        let base = self.segment_size;
        if format::align_shared(SEGMENT_HEADER_LEN) + format::record_span(payload_capacity) <= base {
            base
        } else {
            format::segment_size_for(payload_capacity)
        }
    }

    /// Creates a segment with room for a record of `payload_capacity` payload bytes.
    /// A failure other than a full disk poisons the store.
    pub(crate) fn create_segment(&self, payload_capacity: u64) -> Result<Arc<Segment>, StoreError> {
        let size = self.segment_size_for(payload_capacity);
        let id = self.next_segment.fetch_add(1, Ordering::Relaxed);
        let seg = match Segment::create(&self.dir, id, size) {
            Ok(s) => Arc::new(s),
            Err(e @ StoreError::OutOfSpace { .. }) => {
                tracing::warn!(error = %e, "cannot create segment");
                return Err(e);
            }
            Err(e) => {
                self.poison(&e);
                return Err(e);
            }
        };
        metrics::counter!("nectar_segments_created_total").increment(1);
        tracing::debug!(segment = id, size, "created segment");
        self.segments.write().unwrap_or_else(|e| e.into_inner()).insert(id, seg.clone());
        Ok(seg)
    }

    /// Takes a staging buffer from the pool, or returns an empty one.
    pub(crate) fn take_buffer(&self) -> AlignedBuf {
        lock(&self.buffers).pop().unwrap_or_default()
    }

    /// Keeps a staging buffer for reuse, unless the pool is full.
    pub(crate) fn give_buffer(&self, buf: AlignedBuf) {
        if buf.capacity() == 0 || buf.capacity() as u64 > 2 * STAGE_LIMIT {
            return;
        }
        let mut pool = lock(&self.buffers);
        if pool.len() < POOLED_BUFFERS {
            pool.push(buf);
        }
    }
}
