//! The shared segment: records staged by any writer are appended to it whole, one at a
//! time under a lock, so a commit batch of many associations flushes one file.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::format::RECORD_HEADER_LEN;
use super::segment::Segment;
use super::{lock, Inner, StoreError};

impl Inner {
    /// Appends one complete record (header, payload and padding) to the shared segment,
    /// rolling to another segment when it does not fit, and publishes it. Returns the
    /// segment and the record's offset in it.
    ///
    /// Holding the lock while writing keeps records in offset order and makes the lock
    /// holder the segment's single writer, as the `Segment` contract requires.
    ///
    /// NOTE: a roll creates the next segment (two fsyncs) and each 4 MiB allocation
    /// runs posix_fallocate under the lock, so every association finishing a small
    /// instance waits meanwhile, on its worker thread.
    pub(crate) fn append_shared(&self, record: &[u8]) -> Result<(Arc<Segment>, u64), StoreError> {
        let span = record.len() as u64;
        let mut tail = lock(&self.shared_tail);
        self.check_writable()?;
        let fits = tail.as_ref().is_some_and(|s| s.published.load(Ordering::Relaxed) + span <= s.len);
        if !fits {
            let new = self.acquire_segment(span - RECORD_HEADER_LEN)?;
            tracing::debug!(segment = new.id, "new shared segment");
            if let Some(old) = tail.replace(new) {
                self.release_segment(old);
            }
        }
        let seg = tail.clone().expect("a shared segment is set above");
        let start = seg.published.load(Ordering::Relaxed);
        seg.ensure_allocated(start + span)?;
        seg.write_at(start, record).inspect_err(|e| self.poison(e))?;
        seg.published.store(start + span, Ordering::Release);
        Ok((seg, start))
    }

    /// Takes the shared segment away from further appends, for shutdown.
    pub(crate) fn take_shared_tail(&self) -> Option<Arc<Segment>> {
        lock(&self.shared_tail).take()
    }
}
