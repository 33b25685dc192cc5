//! Durable storage: memory-mapped, append-only segment files with a group committer.
//!
//! The on-disk format, the write invariants and every crash case are described in
//! `docs/storage-format.md`. In short:
//!
//! - Each association gets a [`SegmentWriter`] which owns one segment at a time and
//!   writes records (32-byte header + payload) with positioned writes; readers borrow
//!   them from the read-only mapping.
//! - [`SegmentWriter::finish_record`] writes the header and returns a [`PendingRecord`];
//!   [`Store::commit`] hands it to the committer thread, which flushes (msync) each segment
//!   once per batch and then resolves the commit: only then is the record durable.
//! - [`Store::open`] maps existing segments read-only (sealed) and recovers the sequence
//!   counter; [`Store::scan_from`] finds records the manifest does not know about;
//!   [`Store::check`] verifies every CRC.
#![warn(clippy::undocumented_unsafe_blocks)]
#![warn(unsafe_op_in_unsafe_fn)]

mod aligned;
mod check;
mod committer;
mod direct;
pub mod format;
mod recovery;
mod segment;
mod shared;
mod shared_tail;
mod writer;

#[cfg(test)]
mod committer_tests;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use crossbeam_channel::Sender;

use crate::Location;

pub use check::{CheckReport, SegmentCheck};
pub use committer::CommitStats;
pub use format::{record_end, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
pub use writer::{PendingRecord, SegmentWriter, STAGE_LIMIT};

use aligned::AlignedBuf;
use committer::CommitRequest;
use segment::Segment;

/// Store tuning.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Size of each segment file (rounded up to a multiple of 4096, at least 4096).
    pub segment_size: u64,
    /// Capacity of the bounded channel feeding the committer.
    pub commit_queue: usize,
    /// Most commit requests the committer takes into one batch.
    pub max_commit_batch: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { segment_size: 256 << 20, commit_queue: 1024, max_commit_batch: 256 }
    }
}

/// Errors of the segment store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file system has no room for a new segment (ENOSPC/EDQUOT). Does not poison the store.
    #[error("out of space: {path} needs {needed} bytes: {source}")]
    OutOfSpace { path: PathBuf, needed: u64, source: std::io::Error },
    /// An earlier flush or I/O error made the store refuse writes until it is reopened.
    #[error("the store refuses writes after an earlier I/O failure; reopen it")]
    Poisoned,
    /// `close` was called (or the committer is gone).
    #[error("the store is closed")]
    Closed,
    #[error("{op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: std::io::Error },
    /// No record at this location (unknown segment, or beyond what was written).
    #[error("no record at {0:?}")]
    NotFound(Location),
    /// The bytes at this place are not what the format requires.
    #[error("corrupt data in segment {segment} at offset {offset}: {reason}")]
    Corrupt { segment: u64, offset: u64, reason: String },
    /// A `scan_from` start offset that cannot be a record boundary.
    #[error("invalid scan start offset {offset} for segment {segment}")]
    InvalidOffset { segment: u64, offset: u64 },
    /// Another `Store` holds the data directory's lock.
    #[error("the segment directory {0} is in use by another store")]
    Locked(PathBuf),
    /// `append`/`spare`/`finish_record` without `begin_record`.
    #[error("no record is open on this writer")]
    NoOpenRecord,
    /// `begin_record` while a record is open.
    #[error("a record is already open on this writer")]
    RecordAlreadyOpen,
}

/// A record's payload, borrowed from the mapping (no copy). Keeps its segment mapped.
#[derive(Clone)]
pub struct RecordRef {
    segment: Arc<Segment>,
    start: usize,
    len: usize,
}

impl RecordRef {
    /// The payload.
    pub fn bytes(&self) -> &[u8] {
        &self.segment.readable()[self.start..self.start + self.len]
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl AsRef<[u8]> for RecordRef {
    /// Lets `bytes::Bytes::from_owner(record)` serve the payload without a copy.
    fn as_ref(&self) -> &[u8] {
        self.bytes()
    }
}

impl std::fmt::Debug for RecordRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordRef").field("segment", &self.segment.id).field("start", &self.start).field("len", &self.len).finish()
    }
}

/// A record found by [`Store::scan_from`].
#[derive(Clone, Debug)]
pub struct ScannedRecord {
    pub location: Location,
    pub sequence: u64,
    pub record: RecordRef,
}

/// State shared with the committer thread (which must not keep [`Inner`] alive).
pub(crate) struct Shared {
    dir: PathBuf,
    /// `StoreConfig::segment_size`, rounded.
    segment_size: u64,
    segments: RwLock<BTreeMap<u64, Arc<Segment>>>,
    next_segment: AtomicU64,
    /// Staging buffers handed back by the committer, for writers to reuse.
    buffers: Mutex<Vec<AlignedBuf>>,
    pub(crate) poisoned: AtomicBool,
    pub(crate) stats: committer::StatsCells,
    /// State of the batch runner, locked by the thread that runs a batch: the committer
    /// thread, or an inline commit.
    pub(crate) batch_state: Mutex<committer::BatchState>,
    /// Count of the commits submitted and not yet resolved or dropped.
    pub(crate) in_flight: AtomicUsize,
    /// Test seam: the committer holds this while it gathers and flushes a batch.
    #[cfg(test)]
    pub(crate) gate: Mutex<()>,
    /// Test seam: the next flush fails.
    #[cfg(test)]
    pub(crate) fail_next_flush: AtomicBool,
}

pub(crate) struct Inner {
    config: StoreConfig,
    /// Files named like segments that could not be mapped: (id, path, why).
    broken: Vec<(u64, PathBuf, String)>,
    /// Writable segments with room left that no writer owns.
    idle: Mutex<Vec<Arc<Segment>>>,
    next_sequence: AtomicU64,
    shared: Arc<Shared>,
    closed: AtomicBool,
    /// Count of the live writers. A commit runs inline only while there is at most one.
    writers: AtomicUsize,
    sender: RwLock<Option<Sender<CommitRequest>>>,
    committer: Mutex<Option<JoinHandle<()>>>,
    /// Holds the flock on `segments/.lock` for the life of the store.
    _lock: File,
}

/// The segment store. Cheap to clone; all clones share one committer.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.inner.shared.dir).finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inner {
    /// Fails when writes are refused.
    pub(crate) fn check_writable(&self) -> Result<(), StoreError> {
        if self.shared.poisoned.load(Ordering::Acquire) {
            return Err(StoreError::Poisoned);
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        Ok(())
    }

    pub(crate) fn poison(&self, why: &StoreError) {
        self.shared.poison(why);
    }

    /// Minimum room a segment must have left to go back to the idle pool.
    pub(crate) fn idle_threshold(&self) -> u64 {
        (self.config.segment_size / 8).clamp(RECORD_HEADER_LEN + 64, 64 << 10)
    }

    /// A segment owned exclusively by the caller with room for the header and
    /// `payload_capacity` payload bytes at its tail: from the idle pool, or newly created.
    pub(crate) fn acquire_segment(&self, payload_capacity: u64) -> Result<Arc<Segment>, StoreError> {
        self.check_writable()?;
        // Room for the record and the padding before its start.
        let need = format::record_span(payload_capacity) + format::SHARED_RECORD_ALIGN;
        {
            let mut idle = lock(&self.idle);
            if let Some(i) = idle.iter().rposition(|s| s.len - s.published.load(Ordering::Relaxed) >= need) {
                return Ok(idle.swap_remove(i));
            }
        }
        self.shared.create_segment(payload_capacity)
    }

    /// Gives a segment back when its writer is done with it.
    pub(crate) fn release_segment(&self, seg: Arc<Segment>) {
        let room = seg.len - seg.published.load(Ordering::Relaxed);
        if room >= self.idle_threshold() && !self.closed.load(Ordering::Acquire) {
            lock(&self.idle).push(seg);
        } else {
            seg.close_direct();
        }
    }

    fn segment(&self, id: u64) -> Option<Arc<Segment>> {
        self.shared.segments.read().unwrap_or_else(|e| e.into_inner()).get(&id).cloned()
    }

    fn all_segments(&self) -> Vec<Arc<Segment>> {
        self.shared.segments.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }

    /// Stops accepting commits, lets the committer drain its queue, and joins it.
    fn shutdown(&self) {
        self.closed.store(true, Ordering::Release);
        let idle = std::mem::take(&mut *lock(&self.idle));
        // Dropping the only Sender disconnects the channel once the queue is drained;
        // the committer processes everything still queued, then exits.
        drop(self.sender.write().unwrap_or_else(|e| e.into_inner()).take());
        if let Some(handle) = lock(&self.committer).take() {
            if handle.join().is_err() {
                tracing::error!("segment committer thread panicked");
            }
        }
        // The next open seals these segments, so their allocated tails would stay
        // allocated but unused for good.
        for segment in idle {
            segment.release_unused_tail();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Store {
    /// Opens or creates `<data_dir>/segments`, maps existing segments read-only, starts the
    /// committer thread.
    pub fn open(data_dir: &Path, config: StoreConfig) -> Result<Store, StoreError> {
        let mut config = config;
        config.segment_size = config
            .segment_size
            .max(format::SEGMENT_SIZE_GRANULE)
            .div_ceil(format::SEGMENT_SIZE_GRANULE)
            * format::SEGMENT_SIZE_GRANULE;
        config.commit_queue = config.commit_queue.max(1);
        config.max_commit_batch = config.max_commit_batch.max(1);

        let recovered = recovery::open_dir(data_dir)?;
        let shared = Arc::new(Shared {
            dir: recovered.dir.clone(),
            segment_size: config.segment_size,
            segments: RwLock::new(recovered.segments),
            next_segment: AtomicU64::new(recovered.next_segment),
            buffers: Mutex::new(Vec::new()),
            poisoned: AtomicBool::new(false),
            stats: Default::default(),
            batch_state: Mutex::new(committer::BatchState::new(config.max_commit_batch)),
            in_flight: AtomicUsize::new(0),
            #[cfg(test)]
            gate: Mutex::new(()),
            #[cfg(test)]
            fail_next_flush: AtomicBool::new(false),
        });
        let (tx, rx) = crossbeam_channel::bounded(config.commit_queue);
        let handle = {
            let shared = shared.clone();
            let max_batch = config.max_commit_batch;
            std::thread::Builder::new()
                .name("nectar-committer".into())
                .spawn(move || committer::run(rx, shared, max_batch))
                .map_err(|e| StoreError::Io { op: "spawn committer thread", path: recovered.dir.clone(), source: e })?
        };
        tracing::info!(
            dir = %recovered.dir.display(),
            segments = shared.segments.read().unwrap_or_else(|e| e.into_inner()).len(),
            next_sequence = recovered.next_sequence,
            next_segment = recovered.next_segment,
            "opened segment store"
        );
        let inner = Inner {
            config,
            broken: recovered.broken,
            idle: Mutex::new(Vec::new()),
            next_sequence: AtomicU64::new(recovered.next_sequence),
            shared,
            closed: AtomicBool::new(false),
            writers: AtomicUsize::new(0),
            sender: RwLock::new(Some(tx)),
            committer: Mutex::new(Some(handle)),
            _lock: recovered.lock,
        };
        Ok(Store { inner: Arc::new(inner) })
    }

    /// Returns a writer for one association. Records up to `STAGE_LIMIT` go to the
    /// shared segment whole. A larger record goes to a segment the writer owns alone,
    /// which it creates (or takes from the idle pool) when it first needs one.
    pub fn new_writer(&self) -> SegmentWriter {
        SegmentWriter::new(self.inner.clone())
    }

    /// The payload of a record, borrowed from the mapping (no copy). Checks bounds and the
    /// header (magic, version, header CRC, length); does not verify the payload CRC.
    pub fn read(&self, location: Location) -> Result<RecordRef, StoreError> {
        let seg = self.inner.segment(location.segment).ok_or(StoreError::NotFound(location))?;
        let readable = seg.readable();
        let end = location
            .offset
            .checked_add(RECORD_HEADER_LEN)
            .and_then(|e| e.checked_add(location.length))
            .ok_or(StoreError::NotFound(location))?;
        if location.offset < SEGMENT_HEADER_LEN || location.offset & (format::RECORD_ALIGN - 1) != 0 || end > readable.len() as u64 {
            return Err(StoreError::NotFound(location));
        }
        let header = format::RecordHeader::decode_at(readable, location.offset).map_err(|p| StoreError::Corrupt {
            segment: location.segment,
            offset: location.offset,
            reason: match p {
                format::HeaderProblem::Empty => "no record header here".into(),
                format::HeaderProblem::Invalid(why) => why,
            },
        })?;
        if header.length != location.length {
            return Err(StoreError::Corrupt {
                segment: location.segment,
                offset: location.offset,
                reason: format!("header says length {} but the location says {}", header.length, location.length),
            });
        }
        if location.length > STAGE_LIMIT {
            seg.read_ahead(location.offset + RECORD_HEADER_LEN, location.length);
        }
        Ok(RecordRef { segment: seg, start: (location.offset + RECORD_HEADER_LEN) as usize, len: location.length as usize })
    }

    /// Starts reading the record at `location` into the page cache when it is over the
    /// staging limit, because such a record was written with direct I/O. Only a hint for
    /// a reader that reads this record next, so an unknown or invalid location is ignored.
    pub fn prefetch(&self, location: Location) {
        if location.length <= STAGE_LIMIT {
            return;
        }
        let Some(seg) = self.inner.segment(location.segment) else { return };
        let end = location.offset.saturating_add(RECORD_HEADER_LEN).saturating_add(location.length);
        if end <= seg.readable_end() {
            seg.read_ahead(location.offset + RECORD_HEADER_LEN, location.length);
        }
    }

    /// Every valid record, segment by segment in id order, starting each segment at the given
    /// offset (absent: its first record) and stopping it at its torn tail.
    pub fn scan_from(&self, start_offsets: &HashMap<u64, u64>) -> Result<Vec<ScannedRecord>, StoreError> {
        recovery::scan_from(&self.inner.all_segments(), start_offsets)
    }

    /// Verifies every record's CRC in every segment.
    pub fn check(&self) -> Result<CheckReport, StoreError> {
        Ok(check::check(&self.inner.all_segments(), &self.inner.broken))
    }

    /// Waits until every commit submitted so far is durable, then stops the committer.
    /// Later writes and commits fail with [`StoreError::Closed`]. Idempotent.
    pub fn close(&self) -> Result<(), StoreError> {
        self.inner.shutdown();
        if self.inner.shared.poisoned.load(Ordering::Acquire) {
            return Err(StoreError::Poisoned);
        }
        Ok(())
    }

    /// Takes the next global sequence number (strictly increasing, also across restarts).
    pub fn next_sequence(&self) -> u64 {
        self.inner.next_sequence.fetch_add(1, Ordering::Relaxed)
    }

    /// Makes sure later [`Store::next_sequence`] values are above `sequence` (e.g. the highest
    /// sequence the manifest has seen).
    pub fn ensure_sequence_above(&self, sequence: u64) {
        self.inner.next_sequence.fetch_max(sequence.saturating_add(1), Ordering::Relaxed);
    }

    /// Whether a failed flush or I/O error made the store refuse writes.
    pub fn is_poisoned(&self) -> bool {
        self.inner.shared.poisoned.load(Ordering::Acquire)
    }

    /// The directory holding the segment files.
    pub fn segments_dir(&self) -> &Path {
        &self.inner.shared.dir
    }

    /// Counters of the group committer since open.
    pub fn commit_stats(&self) -> CommitStats {
        self.inner.shared.stats.snapshot()
    }

    /// Hands the record to the group committer and waits until it is durable (flushed
    /// together with everything else pending, one flush per segment per batch). A staged
    /// record gets its place in the shared segment here.
    ///
    /// Never blocks the calling thread: if the queue is full it yields/sleeps and retries
    /// (counted in `nectar_commit_queue_full_total`).
    pub async fn commit(&self, pending: PendingRecord) -> Result<Location, StoreError> {
        committer::commit(&self.inner, pending).await
    }
}
