//! `SegmentWriter`: one association's append-only writer.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::aligned::AlignedBuf;
use super::format::{self, RecordHeader, RECORD_HEADER_LEN};
use super::segment::Segment;
use super::{Inner, StoreError};
use crate::Location;

/// Largest payload a writer stages in memory. A record up to this size is written whole
/// into the store's shared segment when it is finished, so that one flush per batch
/// covers the records of every association. A larger record goes to a segment of the
/// writer's own as it arrives.
pub const STAGE_LIMIT: u64 = 256 * 1024;

/// The record being written.
#[derive(Clone, Copy, Debug)]
struct OpenRecord {
    /// Offset of the record header in the writer's own segment, once the record is
    /// written there as it arrives. `None` while the record is staged in memory.
    direct: Option<u64>,
    /// Payload bytes counted so far.
    len: u64,
    /// CRC32C of those payload bytes.
    crc: u32,
}

/// Writes records, each into one of two places. Owned by one association.
///
/// A record is staged in memory until it passes [`STAGE_LIMIT`]. `finish_record` hands a
/// staged record, header and padding included, to the committer, which appends it to the
/// store's shared segment. A record that passes the limit moves to a segment this writer
/// owns exclusively and grows there as more bytes arrive.
///
/// Bytes reach the segment files with positioned writes (`pwrite`), never through the
/// mapping. Stores into a shared file mapping cost a page fault per fresh page, and every
/// flush write-protects those pages again with a TLB shootdown across cores. Readers
/// still see the bytes through the mapping, because both use the same page cache.
pub struct SegmentWriter {
    inner: Arc<Inner>,
    /// The writer's own segment, for records larger than [`STAGE_LIMIT`].
    segment: Option<Arc<Segment>>,
    open: Option<OpenRecord>,
    /// Buffer of the open record. While it is staged: the header slot, then the payload.
    /// Once it is direct: the bytes `spare` hands out, which `advance` writes to the
    /// segment. It grows to the largest staged record or fragment seen, and a finished
    /// staged record takes it along to the committer.
    buf: AlignedBuf,
    /// Segment id and offset up to which writeback of the writer's own segment
    /// has been started.
    written_back: (u64, u64),
}

/// Bytes of a direct record written before their writeback is started, ahead
/// of the flush at commit. 200 MR2_UNCI instances (2 MB) over 4 associations
/// went from 1,010-1,720 to 1,850-2,360 MB/s with it.
///
/// NOTE: `sync_file_range` runs on the association's worker thread and can
/// wait there when the device queue is full.
pub(crate) const WRITEBACK_STEP: u64 = 1024 * 1024;

const HEADER: usize = RECORD_HEADER_LEN as usize;

/// A finished record waiting for [`Store::commit`](super::Store::commit). Not durable yet.
#[derive(Debug)]
pub struct PendingRecord {
    pub(crate) kind: Pending,
}

#[derive(Debug)]
pub(crate) enum Pending {
    /// Written to the writer's own segment and readable there already.
    Written {
        location: Location,
        segment: Arc<Segment>,
        /// End of the record (aligned); the flush must reach at least this far.
        end: u64,
    },
    /// Staged in memory: header, payload and zero padding, `span` bytes in all (a
    /// multiple of `SHARED_RECORD_ALIGN`). The committer gives it its place.
    Staged { buf: AlignedBuf, len: u64, span: usize },
}

impl PendingRecord {
    /// Returns the payload length.
    pub fn length(&self) -> u64 {
        match &self.kind {
            Pending::Written { location, .. } => location.length,
            Pending::Staged { len, .. } => *len,
        }
    }

    /// Bytes the record takes in its segment, padding included.
    fn span(&self) -> u64 {
        match &self.kind {
            Pending::Written { location, end, .. } => end - location.offset,
            Pending::Staged { span, .. } => *span as u64,
        }
    }
}

impl std::fmt::Debug for SegmentWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentWriter").field("segment", &self.segment.as_ref().map(|s| s.id)).field("open", &self.open).finish()
    }
}

impl SegmentWriter {
    pub(crate) fn new(inner: Arc<Inner>) -> SegmentWriter {
        SegmentWriter { inner, segment: None, open: None, buf: AlignedBuf::default(), written_back: (0, 0) }
    }

    /// Returns the id of the segment this writer owns, if any.
    pub fn segment_id(&self) -> Option<u64> {
        self.segment.as_ref().map(|s| s.id)
    }

    /// Starts a record, staged in memory until it grows past [`STAGE_LIMIT`].
    pub fn begin_record(&mut self) -> Result<(), StoreError> {
        self.inner.check_writable()?;
        if self.open.is_some() {
            return Err(StoreError::RecordAlreadyOpen);
        }
        self.open = Some(OpenRecord { direct: None, len: 0, crc: 0 });
        Ok(())
    }

    /// Makes sure the open record can grow by `extra` bytes: in the staging buffer, by
    /// moving the record to the writer's own segment, or by rolling that segment (copying
    /// the partial record).
    fn reserve(&mut self, extra: u64) -> Result<(), StoreError> {
        let rec = self.open.ok_or(StoreError::NoOpenRecord)?;
        let wanted = rec.len.checked_add(extra).ok_or(StoreError::NoOpenRecord)?;
        match rec.direct {
            None if wanted <= STAGE_LIMIT => {
                let needed = HEADER + wanted as usize;
                if self.buf.len() < needed {
                    self.buf.resize(needed);
                }
                Ok(())
            }
            None => self.unstage(wanted),
            Some(start) => self.reserve_direct(start, rec.len, wanted),
        }
    }

    /// Moves the staged record to the tail of the writer's own segment, with room for
    /// `wanted` payload bytes.
    ///
    /// NOTE: creating a segment runs two fsyncs on the calling thread, and every
    /// allocation chunk runs a posix_fallocate there. That thread is an association's
    /// worker arbiter, so the other associations on it wait meanwhile.
    fn unstage(&mut self, wanted: u64) -> Result<(), StoreError> {
        let rec = self.open.expect("called with an open record");
        let has_room = self
            .segment
            .as_ref()
            .is_some_and(|s| record_start(s) + format::record_span(wanted) <= s.len);
        if !has_room {
            let new = self.inner.acquire_segment(wanted)?;
            if let Some(old) = self.segment.replace(new) {
                self.inner.release_segment(old);
            }
        }
        let seg = self.segment.clone().expect("segment acquired above");
        let start = record_start(&seg);
        seg.ensure_allocated(start + RECORD_HEADER_LEN + wanted)?;
        if rec.len > 0 {
            self.write(&seg, start + RECORD_HEADER_LEN, &self.buf[HEADER..HEADER + rec.len as usize])?;
        }
        self.open = Some(OpenRecord { direct: Some(start), ..rec });
        Ok(())
    }

    /// `reserve` for a record in the writer's own segment, starting at `start`.
    fn reserve_direct(&mut self, start: u64, len: u64, wanted: u64) -> Result<(), StoreError> {
        let seg = self.segment.clone().expect("a direct record has a segment");
        if start + RECORD_HEADER_LEN + wanted <= seg.len {
            return seg.ensure_allocated(start + RECORD_HEADER_LEN + wanted);
        }
        // A single append of the whole payload gets exactly its size; a growing record gets
        // twice what it has so far, so a streamed record is copied about 2x its size at most.
        let capacity = if len == 0 { wanted } else { wanted.max(len.saturating_mul(2)) };
        let new = self.inner.acquire_segment(capacity)?;
        let new_start = record_start(&new);
        new.ensure_allocated(new_start + RECORD_HEADER_LEN + wanted)?;
        if len > 0 {
            // SAFETY: this writer's own open record (above `published` of the old segment),
            // which only this writer writes; `new` is a distinct segment.
            let src = unsafe { seg.owned(start + RECORD_HEADER_LEN, len) };
            self.write(&new, new_start + RECORD_HEADER_LEN, src)?;
        }
        // The old segment keeps its tail at `start` (header slot still zero). If it has
        // enough room left to be reused, scrub the copied bytes first.
        if seg.len - start >= self.inner.idle_threshold() {
            self.scrub(&seg, start, len);
        }
        let old = self.segment.replace(new).expect("had a segment");
        self.inner.release_segment(old);
        if let Some(rec) = self.open.as_mut() {
            rec.direct = Some(new_start);
        }
        tracing::debug!(segment = self.segment_id(), copied = len, "rolled segment mid-record");
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

    /// Appends bytes to the open record. A record that outgrows the staging limit or its
    /// segment moves and takes its bytes along. A record larger than the segment size
    /// gets a segment of its own.
    pub fn append(&mut self, data: &[u8]) -> Result<(), StoreError> {
        self.inner.check_writable()?;
        if data.is_empty() {
            return self.open.map(|_| ()).ok_or(StoreError::NoOpenRecord);
        }
        self.reserve(data.len() as u64)?;
        let rec = self.open.expect("reserve checked");
        if rec.direct.is_some() {
            return self.write_payload(data);
        }
        let at = HEADER + rec.len as usize;
        self.buf[at..at + data.len()].copy_from_slice(data);
        self.count_staged(data.len());
        Ok(())
    }

    /// Makes room for `extra` more payload bytes now, so that a record of known length is
    /// not copied when it outgrows the staging limit or its segment.
    pub fn reserve_room(&mut self, extra: u64) -> Result<(), StoreError> {
        self.inner.check_writable()?;
        self.reserve(extra)
    }

    /// Returns `min` bytes to fill with the record's next payload bytes, e.g. straight
    /// from a socket; `advance` then counts them. Room is reserved first, so a full disk
    /// is reported here.
    pub fn spare(&mut self, min: usize) -> Result<&mut [u8], StoreError> {
        self.inner.check_writable()?;
        self.reserve(min as u64)?;
        let rec = self.open.expect("reserve checked");
        let at = if rec.direct.is_some() { 0 } else { HEADER + rec.len as usize };
        if self.buf.len() < at + min {
            self.buf.resize(at + min);
        }
        Ok(&mut self.buf[at..at + min])
    }

    /// Counts the first `n` bytes handed out by `spare` into the record and its running
    /// CRC, writing them to the segment if the record is direct.
    ///
    /// # Panics
    /// Without an open record, or if `n` goes past the room `spare` handed out.
    pub fn advance(&mut self, n: usize) -> Result<(), StoreError> {
        let rec = self.open.expect("advance without an open record");
        if rec.direct.is_none() {
            assert!(HEADER + rec.len as usize + n <= self.buf.len(), "advance past the room spare() gave");
            self.count_staged(n);
            return Ok(());
        }
        assert!(n <= self.buf.len(), "advance past the room spare() gave");
        let buf = std::mem::take(&mut self.buf);
        let result = self.write_payload(&buf[..n]);
        self.buf = buf;
        result
    }

    /// Counts `n` bytes staged after the payload into the record and its CRC.
    fn count_staged(&mut self, n: usize) {
        let rec = self.open.as_mut().expect("called with an open record");
        let at = HEADER + rec.len as usize;
        rec.crc = crc32c::crc32c_append(rec.crc, &self.buf[at..at + n]);
        rec.len += n as u64;
    }

    /// Writes `data` at the tail of the open direct record, inside room `reserve` made.
    fn write_payload(&mut self, data: &[u8]) -> Result<(), StoreError> {
        let rec = self.open.expect("an open record: reserve checked");
        let start = rec.direct.expect("called for a direct record");
        let seg = self.segment.as_ref().expect("a direct record has a segment");
        let at = start + RECORD_HEADER_LEN + rec.len;
        assert!(at + data.len() as u64 <= seg.len, "write past the room reserve() made");
        self.write(seg, at, data)?;
        let end = at + data.len() as u64;
        let (id, done) = self.written_back;
        let done = if id == seg.id { done.max(start) } else { start };
        if end - done >= WRITEBACK_STEP {
            let to = end / 4096 * 4096;
            seg.start_writeback(done, to - done);
            self.written_back = (seg.id, to);
        }
        let rec = self.open.as_mut().expect("checked above");
        rec.crc = crc32c::crc32c_append(rec.crc, data);
        rec.len += data.len() as u64;
        Ok(())
    }

    /// Returns the payload written so far.
    pub fn record_bytes(&self) -> &[u8] {
        match (&self.open, &self.segment) {
            (Some(OpenRecord { direct: None, len, .. }), _) => &self.buf[HEADER..HEADER + *len as usize],
            // SAFETY: the open record's bytes, owned by this writer; `&self` keeps `&mut self`
            // methods (the only writers of these bytes) from running while the slice lives.
            (Some(OpenRecord { direct: Some(start), len, .. }), Some(seg)) => unsafe {
                seg.owned(start + RECORD_HEADER_LEN, *len)
            },
            _ => &[],
        }
    }

    /// Returns the length of the payload written so far.
    pub fn record_len(&self) -> u64 {
        self.open.map_or(0, |r| r.len)
    }

    /// Writes the header (length, sequence, CRC) and finishes the record. It is NOT durable
    /// until [`Store::commit`](super::Store::commit) resolves. A record in the writer's own
    /// segment is readable from here on; a staged one once its commit resolves.
    pub fn finish_record(&mut self, sequence: u64) -> Result<PendingRecord, StoreError> {
        self.inner.check_writable()?;
        let rec = self.open.ok_or(StoreError::NoOpenRecord)?;
        let header = RecordHeader::encode(rec.len, sequence, rec.crc);
        let pending = match rec.direct {
            None => self.finish_staged(&header, rec.len),
            Some(start) => self.finish_direct(&header, start, rec.len)?,
        };
        self.open = None;
        metrics::counter!("nectar_store_bytes_written_total").increment(pending.span());
        Ok(pending)
    }

    /// Completes the staged record with its header and padding and hands its buffer over;
    /// the writer takes another from the store's pool.
    fn finish_staged(&mut self, header: &[u8], len: u64) -> PendingRecord {
        let span = format::align_shared(format::record_span(len)) as usize;
        if self.buf.len() < span {
            self.buf.resize(span);
        }
        self.buf[..HEADER].copy_from_slice(header);
        self.buf[HEADER + len as usize..span].fill(0);
        let buf = std::mem::replace(&mut self.buf, self.inner.shared.take_buffer());
        PendingRecord { kind: Pending::Staged { buf, len, span } }
    }

    /// Writes the padding and header of a record in the writer's own segment.
    fn finish_direct(&mut self, header: &[u8], start: u64, len: u64) -> Result<PendingRecord, StoreError> {
        let seg = self.segment.clone().expect("a direct record has a segment");
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

    /// Drops the open record. A staged record leaves no trace; a direct record's bytes
    /// are zeroed and the next record starts where it did.
    pub fn abort_record(&mut self) {
        if let Some(OpenRecord { direct: Some(start), len, .. }) = self.open.take() {
            let seg = self.segment.clone().expect("a direct record has a segment");
            self.scrub(&seg, start, len);
        }
    }
}

/// Offset of the next record in a segment: its published end, rounded up to a multiple
/// of `SHARED_RECORD_ALIGN` like every record's start.
fn record_start(seg: &Segment) -> u64 {
    format::align_shared(seg.published.load(Ordering::Relaxed))
}

impl Drop for SegmentWriter {
    fn drop(&mut self) {
        self.abort_record();
        if let Some(seg) = self.segment.take() {
            self.inner.release_segment(seg);
        }
    }
}
