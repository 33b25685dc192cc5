//! `SegmentWriter`: one association's append-only writer.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::format::{self, RecordHeader, RECORD_HEADER_LEN};
use super::segment::Segment;
use super::{Inner, StoreError};
use crate::Location;

/// The record being written.
#[derive(Clone, Copy, Debug)]
struct OpenRecord {
    /// Offset of the record header in the current segment (== the segment's `published`).
    start: u64,
    /// Payload bytes counted so far.
    len: u64,
    /// CRC32C of those payload bytes.
    crc: u32,
}

/// Writes records into segments it owns exclusively. Owned by one association.
///
/// Bytes reach the segment file with positioned writes (`pwrite`), never through the
/// mapping. Stores into a shared file mapping cost a page fault per fresh page, and every
/// flush write-protects those pages again with a TLB shootdown across cores. Readers
/// still see the bytes through the mapping, because both use the same page cache.
pub struct SegmentWriter {
    inner: Arc<Inner>,
    segment: Option<Arc<Segment>>,
    open: Option<OpenRecord>,
    /// Buffer that `spare` hands out and `advance` writes to the segment. It grows to the
    /// largest fragment received, which is at most one maximum PDU on an association.
    staging: Vec<u8>,
}

/// A finished record waiting for [`Store::commit`](super::Store::commit). Not durable yet.
#[derive(Debug)]
pub struct PendingRecord {
    pub location: Location,
    pub(crate) segment: Arc<Segment>,
    /// End of the record (aligned); the flush must reach at least this far.
    pub(crate) end: u64,
}

impl std::fmt::Debug for SegmentWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentWriter").field("segment", &self.segment.as_ref().map(|s| s.id)).field("open", &self.open).finish()
    }
}

impl SegmentWriter {
    pub(crate) fn new(inner: Arc<Inner>) -> SegmentWriter {
        SegmentWriter { inner, segment: None, open: None, staging: Vec::new() }
    }

    /// The segment this writer currently owns, if any.
    pub fn segment_id(&self) -> Option<u64> {
        self.segment.as_ref().map(|s| s.id)
    }

    /// Starts a record at the tail of the active segment (creating or rolling a segment when
    /// needed).
    ///
    /// NOTE: creating a segment runs two fsyncs on the calling thread, and every
    /// allocation chunk a posix_fallocate; that thread is an association's worker
    /// arbiter, so the other associations on it wait meanwhile.
    pub fn begin_record(&mut self) -> Result<(), StoreError> {
        self.inner.check_writable()?;
        if self.open.is_some() {
            return Err(StoreError::RecordAlreadyOpen);
        }
        let has_room = self
            .segment
            .as_ref()
            .is_some_and(|s| s.published.load(Ordering::Relaxed) + RECORD_HEADER_LEN <= s.len);
        if !has_room {
            let new = self.inner.acquire_segment(0)?;
            if let Some(old) = self.segment.replace(new) {
                self.inner.release_segment(old);
            }
        }
        let seg = self.segment.as_ref().expect("segment acquired above");
        let start = seg.published.load(Ordering::Relaxed);
        seg.ensure_allocated(start + RECORD_HEADER_LEN)?;
        self.open = Some(OpenRecord { start, len: 0, crc: 0 });
        Ok(())
    }

    /// Makes sure the open record can grow by `extra` bytes, rolling to another segment (and
    /// copying the partial record) if it cannot.
    fn reserve(&mut self, extra: u64) -> Result<(), StoreError> {
        let rec = self.open.ok_or(StoreError::NoOpenRecord)?;
        let seg = self.segment.as_ref().expect("an open record has a segment");
        let wanted = rec.len.checked_add(extra).ok_or(StoreError::NoOpenRecord)?;
        if rec.start + RECORD_HEADER_LEN + wanted <= seg.len {
            seg.ensure_allocated(rec.start + RECORD_HEADER_LEN + wanted)?;
            return Ok(());
        }
        // A single append of the whole payload gets exactly its size; a growing record gets
        // twice what it has so far, so a streamed record is copied about 2x its size at most.
        let capacity = if rec.len == 0 { wanted } else { wanted.max(rec.len.saturating_mul(2)) };
        let new = self.inner.acquire_segment(capacity)?;
        let new_start = new.published.load(Ordering::Relaxed);
        new.ensure_allocated(new_start + RECORD_HEADER_LEN + wanted)?;
        if rec.len > 0 {
            // SAFETY: this writer's own open record (above `published` of the old segment),
            // which nobody else writes; `new` is a distinct segment.
            let src = unsafe { seg.owned(rec.start + RECORD_HEADER_LEN, rec.len) };
            self.write(&new, new_start + RECORD_HEADER_LEN, src)?;
        }
        // The old segment keeps its tail at `rec.start` (header slot still zero). If it has
        // enough room left to be reused, scrub the copied bytes first.
        if seg.len - rec.start >= self.inner.idle_threshold() {
            self.scrub(seg, rec.start, rec.len);
        }
        let old = self.segment.replace(new).expect("had a segment");
        self.inner.release_segment(old);
        self.open = Some(OpenRecord { start: new_start, ..rec });
        tracing::debug!(segment = self.segment_id(), copied = rec.len, "rolled segment mid-record");
        Ok(())
    }

    /// Writes `data` at `offset` of a segment this writer owns, at or above its
    /// `published` tail. A failed write poisons the store: the segment's unpublished
    /// bytes are then in an unknown state.
    fn write(&self, seg: &Segment, offset: u64, data: &[u8]) -> Result<(), StoreError> {
        seg.write_at(offset, data).inspect_err(|e| self.inner.poison(e))
    }

    /// Zeroes the bytes of an abandoned record (header slot and `len` payload bytes).
    /// A failure poisons the store (see `write`), so no record follows stale bytes.
    fn scrub(&self, seg: &Segment, start: u64, len: u64) {
        let span = (RECORD_HEADER_LEN + len).min(seg.len - start);
        if seg.write_zeros(start, span).inspect_err(|e| self.inner.poison(e)).is_ok() {
            seg.scrub_end.fetch_max(start + span, Ordering::Release);
        }
    }

    /// Appends bytes to the open record. Rolls to a new segment, copying the partial
    /// record, if it does not fit; a record larger than the segment size gets a segment of its own.
    pub fn append(&mut self, data: &[u8]) -> Result<(), StoreError> {
        self.inner.check_writable()?;
        if data.is_empty() {
            return self.open.map(|_| ()).ok_or(StoreError::NoOpenRecord);
        }
        self.reserve(data.len() as u64)?;
        self.write_payload(data)
    }

    /// Makes room for `extra` more payload bytes in the open record's segment now, so
    /// that a record of known length is not copied when its segment fills up.
    pub fn reserve_room(&mut self, extra: u64) -> Result<(), StoreError> {
        self.inner.check_writable()?;
        self.reserve(extra)
    }

    /// `min` bytes to fill with the record's next payload bytes, e.g. straight from a
    /// socket; `advance` then writes them to the segment. Room in the segment is
    /// reserved first, so a full disk is reported here.
    pub fn spare(&mut self, min: usize) -> Result<&mut [u8], StoreError> {
        self.inner.check_writable()?;
        self.reserve(min as u64)?;
        if self.staging.len() < min {
            self.staging.resize(min, 0);
        }
        Ok(&mut self.staging[..min])
    }

    /// Writes the first `n` bytes handed out by `spare` to the record and counts them
    /// into its running CRC.
    ///
    /// # Panics
    /// Without an open record, or if `n` goes past the room `spare` handed out.
    pub fn advance(&mut self, n: usize) -> Result<(), StoreError> {
        assert!(n <= self.staging.len(), "advance past the room spare() gave");
        let staging = std::mem::take(&mut self.staging);
        let result = self.write_payload(&staging[..n]);
        self.staging = staging;
        result
    }

    /// Writes `data` at the open record's tail, inside room `reserve` made.
    fn write_payload(&mut self, data: &[u8]) -> Result<(), StoreError> {
        let rec = self.open.expect("an open record: reserve checked");
        let seg = self.segment.as_ref().expect("an open record has a segment");
        let at = rec.start + RECORD_HEADER_LEN + rec.len;
        assert!(at + data.len() as u64 <= seg.len, "write past the room reserve() made");
        self.write(seg, at, data)?;
        let rec = self.open.as_mut().expect("checked above");
        rec.crc = crc32c::crc32c_append(rec.crc, data);
        rec.len += data.len() as u64;
        Ok(())
    }

    /// The payload written so far.
    pub fn record_bytes(&self) -> &[u8] {
        match (&self.open, &self.segment) {
            // SAFETY: the open record's bytes, owned by this writer; `&self` keeps `&mut self`
            // methods (the only writers of these bytes) from running while the slice lives.
            (Some(rec), Some(seg)) => unsafe { seg.owned(rec.start + RECORD_HEADER_LEN, rec.len) },
            _ => &[],
        }
    }

    /// Length of the payload written so far.
    pub fn record_len(&self) -> u64 {
        self.open.map_or(0, |r| r.len)
    }

    /// Writes the header (length, sequence, CRC) and publishes the record. It is readable from
    /// here on but NOT durable until [`Store::commit`](super::Store::commit) resolves.
    pub fn finish_record(&mut self, sequence: u64) -> Result<PendingRecord, StoreError> {
        self.inner.check_writable()?;
        let rec = self.open.ok_or(StoreError::NoOpenRecord)?;
        let seg = self.segment.clone().expect("an open record has a segment");
        let header = RecordHeader::encode(rec.len, sequence, rec.crc);
        let payload_end = rec.start + RECORD_HEADER_LEN + rec.len;
        let end = rec.start + format::record_span(rec.len);
        debug_assert!(end <= seg.len, "segments are multiples of 8, records 8-aligned");
        // Header slot and padding of the open record, written before the Release store
        // below publishes them.
        self.write(&seg, payload_end, &[0u8; 8][..(end - payload_end) as usize])?;
        self.write(&seg, rec.start, &header)?;
        seg.published.store(end, Ordering::Release);
        self.open = None;
        metrics::counter!("nectar_store_bytes_written_total").increment(end - rec.start);
        Ok(PendingRecord { location: Location { segment: seg.id, offset: rec.start, length: rec.len }, segment: seg, end })
    }

    /// Drops the open record; its bytes are zeroed and the next record starts where it did.
    pub fn abort_record(&mut self) {
        if let Some(rec) = self.open.take() {
            let seg = self.segment.clone().expect("an open record has a segment");
            self.scrub(&seg, rec.start, rec.len);
        }
    }
}

impl Drop for SegmentWriter {
    fn drop(&mut self) {
        self.abort_record();
        if let Some(seg) = self.segment.take() {
            self.inner.release_segment(seg);
        }
    }
}
