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
    /// holder the segment's single writer, as the `Segment` contract requires. The next
    /// segment is created outside the lock (two fsyncs), so the other associations keep
    /// appending meanwhile.
    ///
    /// NOTE: each 4 MiB allocation still runs posix_fallocate under the lock.
    pub(crate) fn append_shared(&self, record: &[u8]) -> Result<(Arc<Segment>, u64), StoreError> {
        let span = record.len() as u64;
        let fits = |tail: &Option<Arc<Segment>>| {
            tail.as_ref().is_some_and(|s| s.published.load(Ordering::Relaxed) + span <= s.len)
        };
        let mut spare: Option<Arc<Segment>> = None;
        loop {
            let mut tail = lock(&self.shared_tail);
            self.check_writable()?;
            if !fits(&tail) {
                let Some(new) = spare.take() else {
                    drop(tail);
                    spare = Some(self.acquire_segment(span - RECORD_HEADER_LEN)?);
                    continue;
                };
                tracing::debug!(segment = new.id, "new shared segment");
                if let Some(old) = tail.replace(new) {
                    self.release_segment(old);
                }
            }
            if let Some(unused) = spare.take() {
                // Another writer rolled the shared segment first.
                self.release_segment(unused);
            }
            let seg = tail.clone().expect("a shared segment is set above");
            let start = seg.published.load(Ordering::Relaxed);
            seg.ensure_allocated(start + span)?;
            seg.write_at(start, record).inspect_err(|e| self.poison(e))?;
            seg.published.store(start + span, Ordering::Release);
            return Ok((seg, start));
        }
    }

    /// Takes the shared segment away from further appends, for shutdown.
    pub(crate) fn take_shared_tail(&self) -> Option<Arc<Segment>> {
        lock(&self.shared_tail).take()
    }
}
