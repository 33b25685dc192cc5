//! `SegmentWriter`: one association's append-only writer.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::aligned::AlignedBuf;
use super::format::{self, RecordHeader, RECORD_HEADER_LEN};
use super::segment::Segment;
use super::{Inner, StoreError};
use crate::Location;

mod own;

#[cfg(test)]
pub(crate) use own::DIRECT_CHUNK;

/// Largest payload a writer stages in memory. A record up to this size is written whole
/// into the store's shared segment when it is finished, so that one flush per batch
/// covers the records of every association. A larger record goes to a segment of the
/// writer's own as it arrives.
pub const STAGE_LIMIT: u64 = 256 * 1024;

/// The record being written.
#[derive(Clone, Copy, Debug)]
struct OpenRecord {
    /// Position of the record in the writer's own segment, once it is written there as
    /// it arrives. `None` while the record is staged in memory.
    own: Option<OwnRecord>,
    /// Payload bytes counted so far.
    len: u64,
    /// CRC32C of those payload bytes.
    crc: u32,
}

/// A record in the writer's own segment.
#[derive(Clone, Copy, Debug)]
struct OwnRecord {
    /// Offset of the record header.
    start: u64,
    /// Offset of the first payload byte held in the writer's buffer, a multiple of
    /// the page size. Payload below it is in the file.
    tail: u64,
    /// Offset up to which the payload is in the file. The bytes of a partial page that
    /// `settle` wrote stay in the buffer too, so this may lie above `tail`.
    settled: u64,
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
/// flush write-protects those pages again with a TLB shootdown across cores. Most bytes
/// of a large record bypass the page cache (see the `own` module). Readers still see
/// every byte through the mapping, because the kernel drops the cached pages of a range
/// written with direct I/O.
pub struct SegmentWriter {
    inner: Arc<Inner>,
    /// The writer's own segment, for records larger than [`STAGE_LIMIT`].
    segment: Option<Arc<Segment>>,
    open: Option<OpenRecord>,
    /// Buffer of the open record. While it is staged: the header slot, then the payload.
    /// In the writer's own segment: the payload bytes from `OwnRecord::tail` on, then the
    /// room `spare` hands out. A finished staged record takes it along to the committer.
    buf: AlignedBuf,
}

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
        inner.writers.fetch_add(1, Ordering::Relaxed);
        SegmentWriter { inner, segment: None, open: None, buf: AlignedBuf::default() }
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
        self.open = Some(OpenRecord { own: None, len: 0, crc: 0 });
        Ok(())
    }

    /// Makes sure the open record can grow by `extra` bytes: in the staging buffer, by
    /// moving the record to the writer's own segment, or by rolling that segment (copying
    /// the partial record).
    fn reserve(&mut self, extra: u64) -> Result<(), StoreError> {
        let rec = self.open.ok_or(StoreError::NoOpenRecord)?;
        let wanted = rec.len.checked_add(extra).ok_or(StoreError::NoOpenRecord)?;
        match rec.own {
            None if wanted <= STAGE_LIMIT => {
                let needed = HEADER + wanted as usize;
                if self.buf.len() < needed {
                    self.buf.resize(needed);
                }
                Ok(())
            }
            None => self.unstage(wanted),
            Some(own) => self.reserve_own(own, rec.len, wanted),
        }
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
        for piece in data.chunks(STAGE_LIMIT as usize) {
            self.spare(piece.len())?.copy_from_slice(piece);
            self.advance(piece.len())?;
        }
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
    /// is reported here. Any other call on the writer between the two may move the
    /// buffer, and the bytes filled in are then lost.
    pub fn spare(&mut self, min: usize) -> Result<&mut [u8], StoreError> {
        self.inner.check_writable()?;
        self.reserve(min as u64)?;
        let rec = self.open.expect("reserve checked");
        let at = if rec.own.is_some() { self.own_spare_at() } else { HEADER + rec.len as usize };
        if self.buf.len() < at + min {
            self.buf.resize(at + min);
        }
        Ok(&mut self.buf[at..at + min])
    }

    /// Counts the first `n` bytes handed out by `spare` into the record and its running
    /// CRC; in the writer's own segment, writes them out once enough have gathered.
    ///
    /// # Panics
    /// Without an open record, or if `n` goes past the room `spare` handed out.
    pub fn advance(&mut self, n: usize) -> Result<(), StoreError> {
        let rec = self.open.expect("advance without an open record");
        if rec.own.is_some() {
            return self.take_own(n);
        }
        assert!(HEADER + rec.len as usize + n <= self.buf.len(), "advance past the room spare() gave");
        self.count_staged(n);
        Ok(())
    }

    /// Counts `n` bytes staged after the payload into the record and its CRC.
    fn count_staged(&mut self, n: usize) {
        let rec = self.open.as_mut().expect("called with an open record");
        let at = HEADER + rec.len as usize;
        rec.crc = crc32c::crc32c_append(rec.crc, &self.buf[at..at + n]);
        rec.len += n as u64;
    }

    /// Returns the payload written so far. A record in the writer's own segment is read
    /// through the mapping, after its held bytes are written to the file.
    pub fn record_bytes(&mut self) -> Result<&[u8], StoreError> {
        self.settle()?;
        Ok(match (&self.open, &self.segment) {
            (Some(OpenRecord { own: None, len, .. }), _) => &self.buf[HEADER..HEADER + *len as usize],
            // SAFETY: the open record's bytes, owned by this writer and all in the file after
            // `settle`. The borrow of `self` keeps `&mut self` methods, the only writers of
            // these bytes, from running while the slice lives.
            (Some(OpenRecord { own: Some(own), len, .. }), Some(seg)) => unsafe {
                seg.owned(own.start + RECORD_HEADER_LEN, *len)
            },
            _ => &[],
        })
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
        let pending = match rec.own {
            None => self.finish_staged(&header, rec.len),
            Some(own) => self.finish_own(&header, own.start, rec.len)?,
        };
        self.open = None;
        bytes_written().increment(pending.span());
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

    /// Drops the open record. A staged record leaves no trace. The bytes of a record in
    /// the writer's own segment are zeroed, and the next record starts where it did.
    pub fn abort_record(&mut self) {
        if let Some(OpenRecord { own: Some(own), len, .. }) = self.open.take() {
            let seg = self.segment.clone().expect("an own record has a segment");
            self.scrub(&seg, own.start, len);
        }
    }
}

/// Returns the counter of bytes written to segments. It is registered once,
/// because each `counter!` call looks its key up in the recorder.
fn bytes_written() -> &'static metrics::Counter {
    static COUNTER: std::sync::OnceLock<metrics::Counter> = std::sync::OnceLock::new();
    COUNTER.get_or_init(|| metrics::counter!("nectar_store_bytes_written_total"))
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
        self.inner.writers.fetch_sub(1, Ordering::Relaxed);
    }
}
