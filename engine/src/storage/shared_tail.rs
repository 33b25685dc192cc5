//! The shared segment: the committer appends the records that writers staged in
//! memory, from any association, so that a batch flushes one file.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::aligned::AlignedBuf;
use super::committer::{Group, Reply};
use super::format::{align_shared, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use super::segment::Segment;
use super::{Shared, StoreError};
use crate::Location;

/// Bytes of zeros one block of the zero-filling write covers.
const ZERO_BLOCK: usize = 1024 * 1024;

/// A staged record on its way into the shared segment.
pub(crate) struct Staged {
    /// Header, payload and zero padding: `span` bytes, a multiple of `SHARED_RECORD_ALIGN`.
    pub(crate) buf: AlignedBuf,
    pub(crate) len: u64,
    pub(crate) span: usize,
    pub(crate) reply: Reply,
}

/// The committer's end of the shared segment. Only the committer thread appends, so
/// records land in batch order, each on a multiple of `SHARED_RECORD_ALIGN`, with
/// one vectored write per batch.
#[derive(Default)]
pub(crate) struct SharedTail {
    segment: Option<Arc<Segment>>,
    /// Offset of the next record in `segment`.
    next: u64,
    /// End of the zeros written ahead of `next` in `segment`.
    zeroed: u64,
    /// Zero bytes to write from, allocated on first use.
    zeros: AlignedBuf,
    /// Segments rolled away from, whose unused tails are released once this batch is flushed.
    retired: Vec<Arc<Segment>>,
}

impl SharedTail {
    /// Writes `records` to the shared segment (not durable yet) and adds each to the
    /// group of its segment, rolling to a new segment when one does not fit.
    pub(crate) fn append(&mut self, shared: &Shared, records: Vec<Staged>, groups: &mut BTreeMap<u64, Group>) {
        let mut run: Vec<Staged> = Vec::with_capacity(records.len());
        let mut run_len = 0u64;
        for record in records {
            let span = record.span as u64;
            if self.segment.as_ref().is_none_or(|s| self.next + run_len + span > s.len) {
                self.write_run(shared, &mut run, groups);
                run_len = 0;
                if let Err(error) = self.roll(shared, record.span) {
                    let _ = record.reply.send(Err(error));
                    continue;
                }
            }
            run_len += span;
            run.push(record);
        }
        self.write_run(shared, &mut run, groups);
    }

    fn roll(&mut self, shared: &Shared, span: usize) -> Result<(), StoreError> {
        if shared.poisoned.load(std::sync::atomic::Ordering::Acquire) {
            return Err(StoreError::Poisoned);
        }
        // `create_segment` takes the payload room after a record header.
        let new = shared.create_segment(span as u64 - RECORD_HEADER_LEN)?;
        tracing::debug!(segment = new.id, "new shared segment");
        if let Some(old) = self.segment.replace(new) {
            self.retired.push(old);
        }
        self.next = align_shared(SEGMENT_HEADER_LEN);
        self.zeroed = self.next;
        Ok(())
    }

    /// Writes the records of `run`, back to back from `next`, and empties it.
    fn write_run(&mut self, shared: &Shared, run: &mut Vec<Staged>, groups: &mut BTreeMap<u64, Group>) {
        let Some(seg) = self.segment.clone().filter(|_| !run.is_empty()) else { return };
        let start = self.next;
        let end = start + run.iter().map(|r| r.span as u64).sum::<u64>();
        let written = self.zero_ahead(&seg, end).and_then(|()| {
            let blocks: Vec<&[u8]> = run.iter().map(|r| &r.buf[..r.span]).collect();
            seg.write_blocks(start, &blocks).map(drop)
        });
        if let Err(error) = written {
            // A full disk leaves `next` and `zeroed` where they were, so a later batch
            // tries again once there is room. Any other failure leaves the segment's
            // bytes in an unknown state.
            if !matches!(error, StoreError::OutOfSpace { .. }) {
                shared.poison(&error);
            }
            for record in run.drain(..) {
                let _ = record.reply.send(Err(super::committer::copy_error(&error)));
            }
            return;
        }
        self.next = end;
        let group = groups.entry(seg.id).or_insert_with(|| Group::new(seg.clone(), true));
        let mut at = start;
        for record in run.drain(..) {
            let location = Location { segment: seg.id, offset: at, length: record.len };
            at += record.span as u64;
            group.add(location, at, record.reply);
            shared.give_buffer(record.buf);
        }
    }

    /// Makes sure the blocks up to `end` are allocated and hold written zeros.
    ///
    /// Blocks from `posix_fallocate` are unwritten extents: a write to them changes the
    /// extent tree, so every flush also writes and waits for metadata. Zeros written and
    /// flushed once per allocation chunk turn the extents into written ones, and the
    /// flush of each batch then writes data and flushes the device cache only.
    ///
    /// NOTE: the zeros are written on the committer thread, so the batch that reaches a
    /// new chunk waits for a 4 MiB write and a flush. A thread of its own that kept the
    /// zeros two chunks ahead measured no faster on a virtio disk, likely because every
    /// batch's device cache flush then waits for the zero writes in flight.
    fn zero_ahead(&mut self, seg: &Segment, end: u64) -> Result<(), StoreError> {
        if end <= self.zeroed {
            return Ok(());
        }
        seg.ensure_allocated(end)?;
        let target = seg.allocated.load(std::sync::atomic::Ordering::Relaxed);
        if self.zeros.is_empty() {
            self.zeros.resize(ZERO_BLOCK);
        }
        let mut blocks: Vec<&[u8]> = Vec::new();
        let mut at = self.zeroed;
        while at < target {
            let n = (target - at).min(ZERO_BLOCK as u64) as usize;
            blocks.push(&self.zeros[..n]);
            at += n as u64;
        }
        seg.write_blocks(self.zeroed, &blocks)?;
        seg.flush(self.zeroed, target).map_err(|source| StoreError::Io { op: "msync", path: seg.path.clone(), source })?;
        metrics::counter!("nectar_store_zeroed_bytes_total").increment(target - self.zeroed);
        self.zeroed = target;
        Ok(())
    }

    /// Releases the unused tails of segments rolled away from, once their last records
    /// are flushed and published.
    pub(crate) fn release_retired(&mut self) {
        for seg in self.retired.drain(..) {
            seg.close_direct();
            seg.release_unused_tail();
        }
    }

    /// Releases the unused tail of the current segment too, for shutdown.
    pub(crate) fn close(&mut self) {
        self.retired.extend(self.segment.take());
        self.release_retired();
    }
}
