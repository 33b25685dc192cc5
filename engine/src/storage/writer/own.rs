//! Records larger than the staging limit, written to the writer's own segment.
//!
//! The first bytes of such a record (its header page and [`HEAD_ZONE`] bytes of
//! payload) go through the page cache, so that the attribute scan at the end of
//! the record and the header written last find them in memory. From the first
//! page boundary after that, payload bytes gather in the writer's buffer and go to
//! the file in whole pages with direct I/O, [`DIRECT_CHUNK`] bytes or more at a
//! time: no page cache copy, no dirty pages for the flush at commit to find.
//!
//! [`SegmentWriter::settle`] puts every byte received so far into the file (the
//! last partial page through the page cache), so that the record can be read
//! through the mapping or copied to another segment.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{record_start, OpenRecord, OwnRecord, Pending, PendingRecord, SegmentWriter, HEADER};
use crate::storage::format::{self, RECORD_HEADER_LEN};
use crate::storage::segment::Segment;
use crate::storage::StoreError;
use crate::Location;

/// Payload bytes after the header that are written through the page cache.
pub(crate) const HEAD_ZONE: u64 = 64 * 1024;

/// Bytes gathered before they are written with direct I/O. When callers take pieces of
/// at most `STAGE_LIMIT` from `spare`, as the receive paths do, the buffer stays under
/// 768 KiB. 2 MB instances over 4 associations took 740-840 µs of CPU each with 512 KiB,
/// against 825-925 with 256 KiB.
pub(crate) const DIRECT_CHUNK: u64 = 512 * 1024;

/// Page size the direct writes are aligned to, in file offset, length and memory.
const PAGE: u64 = 4096;

/// First offset from which a record starting at `start` is written with direct I/O.
fn direct_from(start: u64) -> u64 {
    (start + RECORD_HEADER_LEN + HEAD_ZONE).div_ceil(PAGE) * PAGE
}

impl SegmentWriter {
    /// Moves the staged record to the tail of the writer's own segment, with room for
    /// `needed` payload bytes.
    ///
    /// NOTE: creating a segment runs two fsyncs on the calling thread, and every
    /// allocation chunk runs a posix_fallocate there. That thread is an association's
    /// worker arbiter, so the other associations on it wait meanwhile.
    pub(super) fn unstage(&mut self, needed: u64) -> Result<(), StoreError> {
        let rec = self.open.expect("called with an open record");
        let has_room = self
            .segment
            .as_ref()
            .is_some_and(|s| record_start(s) + format::record_span(needed) <= s.len);
        if !has_room {
            let new = self.inner.acquire_segment(needed)?;
            if let Some(old) = self.segment.replace(new) {
                self.inner.release_segment(old);
            }
        }
        let seg = self.segment.clone().expect("segment acquired above");
        let start = record_start(&seg);
        seg.ensure_allocated(start + RECORD_HEADER_LEN + needed)?;
        let own = OwnRecord { start, tail: direct_from(start), settled: start + RECORD_HEADER_LEN };
        self.open = Some(OpenRecord { own: Some(own), ..rec });
        if rec.len == 0 {
            // A record of known length moves before any payload, maybe with an empty buffer.
            return Ok(());
        }
        // The staged payload takes the same path as bytes arriving now.
        self.place(HEADER, start + RECORD_HEADER_LEN, rec.len as usize)
    }

    /// `reserve` for a record in the writer's own segment. When the segment has no
    /// room left, the record moves to a new one, its bytes copied along.
    pub(super) fn reserve_own(&mut self, own: OwnRecord, len: u64, needed: u64) -> Result<(), StoreError> {
        let seg = self.segment.clone().expect("an own record has a segment");
        if own.start + RECORD_HEADER_LEN + needed <= seg.len {
            return seg.ensure_allocated(own.start + RECORD_HEADER_LEN + needed);
        }
        self.settle()?;
        self.roll(seg, own, len, needed)
    }

    /// Moves the open record, `len` bytes so far and all in the file, from `seg` to a new
    /// segment with room for `needed` payload bytes.
    fn roll(&mut self, seg: Arc<Segment>, own: OwnRecord, len: u64, needed: u64) -> Result<(), StoreError> {
        // A single append of the whole payload gets exactly its size. A growing record gets
        // twice what it has so far, so a streamed record is copied about 2x its size at most.
        let capacity = if len == 0 { needed } else { needed.max(len.saturating_mul(2)) };
        let new = self.inner.acquire_segment(capacity)?;
        let new_start = record_start(&new);
        if let Err(error) = new.ensure_allocated(new_start + RECORD_HEADER_LEN + needed) {
            self.inner.release_segment(new);
            return Err(error);
        }

        let payload_end = new_start + RECORD_HEADER_LEN + len;
        if len > 0 {
            // SAFETY: the bytes are this writer's open record, above `published` of the old
            // segment, so only this writer writes them. `settle` put them all in the file,
            // and `new` is a distinct segment.
            let src = unsafe { seg.owned(own.start + RECORD_HEADER_LEN, len) };
            self.write(&new, new_start + RECORD_HEADER_LEN, src)?;
        }
        // The old segment keeps its tail at `start` (header slot still zero). If it has
        // enough room left to be reused, scrub the copied bytes first.
        if seg.len - own.start >= self.inner.idle_threshold() {
            self.scrub(&seg, own.start, len);
        }
        let old = self.segment.replace(new).expect("had a segment");
        self.inner.release_segment(old);

        let tail = direct_from(new_start).max(payload_end.div_ceil(PAGE) * PAGE);
        if let Some(rec) = self.open.as_mut() {
            rec.own = Some(OwnRecord { start: new_start, tail, settled: payload_end });
        }
        tracing::debug!(segment = self.segment_id(), copied = len, "rolled segment mid-record");
        Ok(())
    }

    /// Returns the buffer index at which `spare` hands out room for an own record, right
    /// after the bytes the buffer already contains.
    pub(super) fn own_spare_at(&self) -> usize {
        let rec = self.open.expect("called with an open record");
        let own = rec.own.expect("called for an own record");
        (own.start + RECORD_HEADER_LEN + rec.len).saturating_sub(own.tail) as usize
    }

    /// Takes the `n` bytes after the buffered ones into the own record, counting
    /// them into its length and CRC.
    pub(super) fn take_own(&mut self, n: usize) -> Result<(), StoreError> {
        let at = self.own_spare_at();
        assert!(at + n <= self.buf.len(), "advance past the room spare() gave");
        let rec = self.open.as_mut().expect("called with an open record");
        let own = rec.own.expect("called for an own record");
        let end = own.start + RECORD_HEADER_LEN + rec.len;
        rec.crc = crc32c::crc32c_append(rec.crc, &self.buf[at..at + n]);
        rec.len += n as u64;
        self.place(at, end, n)
    }

    /// Places the `n` payload bytes at `buf[at..]`, which belong at file offset `end`.
    /// Bytes below the direct I/O boundary go through the page cache, and the rest stay
    /// at the front of the buffer. Once it contains [`DIRECT_CHUNK`] bytes, their whole
    /// pages go out with direct I/O.
    fn place(&mut self, at: usize, end: u64, n: usize) -> Result<(), StoreError> {
        let mut own = self.open.and_then(|rec| rec.own).expect("called for an own record");
        let seg = self.segment.clone().expect("an own record has a segment");
        if end < own.tail {
            // Nothing is buffered yet: the head goes to the page cache, the rest to the front.
            let head = ((own.tail - end) as usize).min(n);
            self.write(&seg, end, &self.buf[at..at + head])?;
            self.buf.copy_within(at + head..at + n, 0);
            own.settled = end + head as u64;
        } else {
            debug_assert_eq!(at as u64, end - own.tail, "buffered bytes start at the buffer's front");
        }
        let buffered = (end + n as u64).saturating_sub(own.tail);
        if buffered >= DIRECT_CHUNK {
            self.write_pages(&seg, &mut own, buffered)?;
        }
        self.set_own(own);
        Ok(())
    }

    /// Writes the whole pages among the `buffered` bytes with direct I/O and moves the
    /// rest to the front of the buffer.
    fn write_pages(&mut self, seg: &Segment, own: &mut OwnRecord, buffered: u64) -> Result<(), StoreError> {
        let pages = buffered / PAGE * PAGE;
        if pages == 0 {
            return Ok(());
        }
        let direct = seg.write_blocks(own.tail, &[&self.buf[..pages as usize]]).inspect_err(|e| self.inner.poison(e))?;
        // Where direct I/O is not available, this starts the writeback of the pages ahead
        // of the flush. After a direct write it finds no dirty page.
        seg.start_writeback(own.tail, pages);
        self.buf.copy_within(pages as usize..buffered as usize, 0);
        own.tail += pages;
        own.settled = own.settled.max(own.tail);
        if direct {
            direct_bytes().increment(pages);
        }
        Ok(())
    }

    fn set_own(&mut self, own: OwnRecord) {
        if let Some(rec) = self.open.as_mut() {
            rec.own = Some(own);
        }
    }

    /// Puts every payload byte of the open own record into the file: whole pages with
    /// direct I/O, the last partial page through the page cache. That page stays buffered,
    /// and goes out whole with direct I/O if more bytes follow.
    pub(super) fn settle(&mut self) -> Result<(), StoreError> {
        let Some(OpenRecord { own: Some(mut own), len, .. }) = self.open else { return Ok(()) };
        let end = own.start + RECORD_HEADER_LEN + len;
        if own.settled >= end {
            return Ok(());
        }
        let seg = self.segment.clone().expect("an own record has a segment");
        let buffered = end - own.tail;
        self.write_pages(&seg, &mut own, buffered)?;
        let rest = (end - own.tail) as usize;
        if rest > 0 {
            self.write(&seg, own.tail, &self.buf[..rest])?;
        }
        own.settled = end;
        self.set_own(own);
        Ok(())
    }

    /// Writes the rest, the padding and the header of a record in the writer's own
    /// segment, and publishes it.
    pub(super) fn finish_own(&mut self, header: &[u8], start: u64, len: u64) -> Result<PendingRecord, StoreError> {
        self.settle()?;
        let seg = self.segment.clone().expect("an own record has a segment");
        let payload_end = start + RECORD_HEADER_LEN + len;
        let end = start + format::record_span(len);
        debug_assert!(end <= seg.len, "segments are multiples of 8, records 8-aligned");
        // Padding and header slot of the open record, written before the Release store
        // below publishes them.
        self.write(&seg, payload_end, &[0u8; 8][..(end - payload_end) as usize])?;
        self.write(&seg, start, header)?;
        seg.published.store(end, Ordering::Release);
        let location = Location { segment: seg.id, offset: start, length: len };
        Ok(PendingRecord { kind: Pending::Written { location, segment: seg, end } })
    }
}

/// Returns the counter of bytes written with direct I/O. It is registered once,
/// because each `counter!` call looks its key up in the recorder.
fn direct_bytes() -> &'static metrics::Counter {
    static COUNTER: std::sync::OnceLock<metrics::Counter> = std::sync::OnceLock::new();
    COUNTER.get_or_init(|| metrics::counter!("nectar_store_direct_bytes_total"))
}

#[cfg(test)]
mod tests;
