//! One segment file: creation (preallocated, fsynced), mapping, and raw access.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::{MmapOptions, MmapRaw};

use super::direct::{self, Direct, DirectFile};
use super::format::{SegmentHeader, SEGMENT_HEADER_LEN, SHARED_RECORD_ALIGN};
use super::StoreError;

/// File name of segment `id`.
pub(crate) fn segment_file_name(id: u64) -> String {
    format!("{id:016x}.seg")
}

/// Parses `{id:016x}.seg` (or, with `tmp`, `{id:016x}.seg.tmp`).
pub(crate) fn parse_segment_file_name(name: &str) -> Option<(u64, bool)> {
    let (stem, tmp) = if let Some(s) = name.strip_suffix(".seg.tmp") {
        (s, true)
    } else {
        (name.strip_suffix(".seg")?, false)
    };
    if stem.len() != 16 || !stem.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    u64::from_str_radix(stem, 16).ok().map(|id| (id, tmp))
}

/// Maps an I/O error to a [`StoreError`], recognising out-of-space conditions.
pub(crate) fn io_error(op: &'static str, path: &Path, source: std::io::Error, needed: u64) -> StoreError {
    match source.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => StoreError::OutOfSpace { path: path.to_path_buf(), needed, source },
        _ => StoreError::Io { op, path: path.to_path_buf(), source },
    }
}

/// fsyncs a directory so that entries created or renamed in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    let d = File::open(dir).map_err(|e| io_error("open directory", dir, e, 0))?;
    d.sync_all().map_err(|e| io_error("fsync directory", dir, e, 0))
}

/// Bytes allocated at a time ahead of a segment's writer (at most the segment size).
/// Writes stay inside allocated blocks, so a full disk is reported before a record's
/// bytes are written, and a segment takes disk space only as it fills.
pub(crate) const ALLOCATION_CHUNK: u64 = 4 * 1024 * 1024;

/// Allocates `[offset, offset + len)` of `file`, so that later writes into that range
/// do not fail for lack of space on a file system that writes in place (not on a
/// copy-on-write one).
pub(crate) fn preallocate(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    let too_big = |_| std::io::Error::from_raw_os_error(libc::EFBIG);
    let offset = libc::off_t::try_from(offset).map_err(too_big)?;
    let len = libc::off_t::try_from(len).map_err(too_big)?;
    loop {
        // SAFETY:
        // - `file` is an open file descriptor for the whole call (borrowed `&File`).
        // - posix_fallocate takes plain integers and touches no memory of ours.
        let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), offset, len) };
        match rc {
            0 => return Ok(()),
            libc::EINTR => continue,
            e => return Err(std::io::Error::from_raw_os_error(e)),
        }
    }
}

/// A mapped segment.
///
/// Concurrency contract (the basis of every `unsafe` block that touches the mapping):
/// - Bytes below `published` are immutable: nobody writes them again. Readers may form
///   shared slices over them after an `Acquire` load of `published`.
/// - Bytes at or above `published` belong to the single writer that currently owns the
///   segment: a `SegmentWriter`, or the committer for the shared segment (a writable
///   segment is held by at most one writer, or sits in the idle pool where nobody writes).
///   No other code reads them.
/// - Nothing is written through the mapping: writers use positioned writes on `file`,
///   which land in the same page cache the mapping shows, or on `direct`, after which the
///   kernel drops the cached pages of the range.
/// - The committer never forms references; it writes the shared segment with
///   `write_blocks` and calls `msync` on ranges.
/// - The file is never truncated by us; it has its full length `len` before mapping, and the
///   writer writes only below `allocated`, whose blocks are allocated.
pub(crate) struct Segment {
    pub(crate) id: u64,
    pub(crate) path: PathBuf,
    map: MmapRaw,
    pub(crate) len: u64,
    /// Existed when the store was opened: mapped read-only, never written.
    pub(crate) sealed: bool,
    /// The reason the segment header is invalid, if it is.
    pub(crate) header_problem: Option<String>,
    /// End of the last record whose header has been written (writable segments).
    pub(crate) published: AtomicU64,
    /// Everything below this is known to be on disk (maintained by the committer).
    pub(crate) durable: AtomicU64,
    /// Highest end of a range zeroed by `abort_record`; flushed along with the next commit.
    pub(crate) scrub_end: AtomicU64,
    /// End of the allocated blocks: the writer writes only below it (writable segments).
    pub(crate) allocated: AtomicU64,
    /// The open file, kept for allocating further chunks (writable segments only).
    file: Option<File>,
    /// The file opened again with O_DIRECT, for the committer's appends to the shared segment.
    direct: DirectFile,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("id", &self.id)
            .field("len", &self.len)
            .field("sealed", &self.sealed)
            .field("published", &self.published.load(Ordering::Relaxed))
            .finish()
    }
}

impl Segment {
    /// Creates segment `id` of `size` bytes in `dir` (see "Writing", invariant 6, in the format doc).
    pub(crate) fn create(dir: &Path, id: u64, size: u64) -> Result<Segment, StoreError> {
        debug_assert!(size & (super::format::SEGMENT_SIZE_GRANULE - 1) == 0);
        let final_path = dir.join(segment_file_name(id));
        let tmp_path = dir.join(format!("{}.tmp", segment_file_name(id)));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp_path)
            .map_err(|e| io_error("create segment", &tmp_path, e, size))?;
        let cleanup = |err: StoreError| {
            let _ = std::fs::remove_file(&tmp_path);
            err
        };
        // The file gets its full size at once, but blocks only for the first chunk: the
        // writer allocates the rest chunk by chunk (`ensure_allocated`).
        let allocated = ALLOCATION_CHUNK.min(size);
        file.set_len(size).map_err(|e| cleanup(io_error("set segment length", &tmp_path, e, size)))?;
        fallocate_hook(&file, 0, allocated).map_err(|e| cleanup(io_error("posix_fallocate", &tmp_path, e, allocated)))?;
        let created_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let header = SegmentHeader { id, size, created_ms }.encode();
        file.write_all_at(&header, 0).map_err(|e| cleanup(io_error("write segment header", &tmp_path, e, size)))?;
        file.sync_all().map_err(|e| cleanup(io_error("fsync segment", &tmp_path, e, size)))?;
        std::fs::rename(&tmp_path, &final_path).map_err(|e| cleanup(io_error("rename segment", &tmp_path, e, size)))?;
        sync_dir(dir)?;
        // Mapping raw is safe in itself (MmapRaw hands out only raw pointers); references into
        // it are formed under the contract on `Segment`. The file was set to `size`
        // bytes and we never truncate it. Read-only: writes go through `file`.
        let map = MmapOptions::new().len(size as usize).map_raw_read_only(&file)
            .map_err(|e| io_error("mmap segment", &final_path, e, size))?;
        Ok(Segment {
            id,
            path: final_path,
            map,
            len: size,
            sealed: false,
            header_problem: None,
            published: AtomicU64::new(SEGMENT_HEADER_LEN),
            durable: AtomicU64::new(SEGMENT_HEADER_LEN),
            scrub_end: AtomicU64::new(SEGMENT_HEADER_LEN),
            allocated: AtomicU64::new(allocated),
            file: Some(file),
            direct: DirectFile::default(),
        })
    }

    /// Maps an existing segment read-only. `Ok(Err(reason))` when the file cannot be a segment at all.
    pub(crate) fn open_sealed(path: &Path, id: u64) -> Result<Result<Segment, String>, StoreError> {
        let file = File::open(path).map_err(|e| io_error("open segment", path, e, 0))?;
        let len = file.metadata().map_err(|e| io_error("stat segment", path, e, 0))?.len();
        if len < SEGMENT_HEADER_LEN {
            return Ok(Err(format!("file is {len} bytes, shorter than a segment header")));
        }
        if usize::try_from(len).is_err() {
            return Ok(Err(format!("file is {len} bytes, too large to map")));
        }
        // Read-only mapping of a file nobody writes after a restart: sealed segments are never
        // given to a writer. External truncation is outside the contract (format doc).
        let map = MmapOptions::new().len(len as usize).map_raw_read_only(&file)
            .map_err(|e| io_error("mmap segment", path, e, 0))?;
        let mut seg = Segment {
            id,
            path: path.to_path_buf(),
            map,
            len,
            sealed: true,
            header_problem: None,
            published: AtomicU64::new(len),
            durable: AtomicU64::new(len),
            scrub_end: AtomicU64::new(len),
            allocated: AtomicU64::new(len),
            file: None,
            direct: DirectFile::default(),
        };
        seg.header_problem = match SegmentHeader::decode(seg.readable()) {
            Ok(h) if h.id != id => Some(format!("segment header says id {} but the file name says {id}", h.id)),
            Ok(h) if h.size != len => Some(format!("segment header says size {} but the file has {len} bytes", h.size)),
            Ok(_) => None,
            Err(why) => Some(why),
        };
        Ok(Ok(seg))
    }

    /// End of the bytes that may be read: the whole file for sealed segments, `published` otherwise.
    pub(crate) fn readable_end(&self) -> u64 {
        self.published.load(Ordering::Acquire)
    }

    /// The immutable prefix `[0, readable_end)` of the segment.
    pub(crate) fn readable(&self) -> &[u8] {
        let end = self.readable_end();
        // SAFETY:
        // - `end <= len`: `published` only moves within the mapping.
        // - Bytes below `published` are never written again (contract on `Segment`), and the
        //   Acquire load above synchronises with the Release store that published them, so the
        //   writes that produced them happen-before this read.
        // - The mapping lives as long as `self`.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr(), end as usize) }
    }

    /// Writes `data` at `offset` with a positioned write (writable segments only).
    /// The caller must be the segment's owning writer and the range must lie at or
    /// above `published` and below `allocated`.
    pub(crate) fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), StoreError> {
        debug_assert!(offset >= self.published.load(Ordering::Relaxed));
        assert!(offset.checked_add(data.len() as u64).is_some_and(|e| e <= self.len), "write past segment end");
        let Some(file) = &self.file else {
            return Err(StoreError::Io {
                op: "write to a sealed segment",
                path: self.path.clone(),
                source: std::io::Error::from_raw_os_error(libc::EBADF),
            });
        };
        file.write_all_at(data, offset).map_err(|e| io_error("pwrite", &self.path, e, data.len() as u64))
    }

    /// Writes `blocks` one after another from `offset` (writable segments only), under the
    /// conditions of [`Segment::write_at`]. When the offset and every block's address and
    /// length are multiples of [`SHARED_RECORD_ALIGN`], the write bypasses the page cache
    /// (O_DIRECT) where the file system allows it: no page is allocated, and the flush at
    /// commit finds no dirty page. Returns whether the write bypassed the page cache.
    pub(crate) fn write_blocks(&self, offset: u64, blocks: &[&[u8]]) -> Result<bool, StoreError> {
        let total: u64 = blocks.iter().map(|b| b.len() as u64).sum();
        debug_assert!(offset >= self.published.load(Ordering::Relaxed));
        assert!(offset.checked_add(total).is_some_and(|e| e <= self.len), "write past segment end");
        let Some(file) = &self.file else {
            return Err(io_error("write to a sealed segment", &self.path, std::io::Error::from_raw_os_error(libc::EBADF), 0));
        };
        let align = SHARED_RECORD_ALIGN as usize;
        let aligned = (offset as usize).is_multiple_of(align)
            && blocks.iter().all(|b| (b.as_ptr() as usize | b.len()).is_multiple_of(align));
        if aligned {
            let written = self.direct.write(&self.path, self.id, offset, blocks).map_err(|e| io_error("pwritev", &self.path, e, total))?;
            if matches!(written, Direct::Written) {
                return Ok(true);
            }
        }
        direct::write_all_vectored(file, offset, blocks).map_err(|e| io_error("pwritev", &self.path, e, total))?;
        Ok(false)
    }

    /// Closes the direct I/O descriptor of a segment that takes no more writes.
    pub(crate) fn close_direct(&self) {
        self.direct.close();
    }

    /// Starts writing `[offset, offset + len)` back to disk without waiting for
    /// it (`sync_file_range` with `SYNC_FILE_RANGE_WRITE`), so that the flush at
    /// commit finds less to write. Makes nothing durable; errors are ignored,
    /// because the flush at commit writes and checks the same range again.
    pub(crate) fn start_writeback(&self, offset: u64, len: u64) {
        let Some(file) = &self.file else { return };
        let (Ok(offset), Ok(len)) = (libc::off64_t::try_from(offset), libc::off64_t::try_from(len)) else { return };
        // SAFETY: `file` is an open descriptor for the whole call; sync_file_range
        // takes plain integers and touches no memory of ours.
        unsafe { libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE) };
    }

    /// Writes `len` zero bytes at `offset`, under the conditions of [`Segment::write_at`].
    pub(crate) fn write_zeros(&self, offset: u64, len: u64) -> Result<(), StoreError> {
        static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(ZEROS.len() as u64);
            self.write_at(offset + done, &ZEROS[..n as usize])?;
            done += n;
        }
        Ok(())
    }

    /// A shared view of `[offset, offset + len)` of bytes the calling writer owns.
    ///
    /// # Safety
    /// The caller must be the segment's owning writer, the range must lie at or above
    /// `published` and within the segment, and the writer must not write the range while
    /// the returned slice lives.
    pub(crate) unsafe fn owned(&self, offset: u64, len: u64) -> &[u8] {
        assert!(offset.checked_add(len).is_some_and(|e| e <= self.len), "read past segment end");
        // SAFETY: in bounds of a live mapping; only the calling owner writes these bytes, and it
        // cannot do so while this shared borrow is alive (the borrow ties up the writer).
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(offset as usize), len as usize) }
    }

    /// Gives the blocks past the last record back to the file system, keeping the file size,
    /// so the unused tail reads as zeros and takes no space. Only for a segment no writer
    /// will use again; a failure is logged and leaves the tail allocated.
    pub(crate) fn release_unused_tail(&self) {
        let start = self.published.load(Ordering::Acquire).div_ceil(4096) * 4096;
        if self.sealed || start >= self.len {
            return;
        }
        let result = OpenOptions::new().write(true).open(&self.path).and_then(|file| {
            let offset = libc::off_t::try_from(start).map_err(|_| std::io::Error::from_raw_os_error(libc::EFBIG))?;
            let len = libc::off_t::try_from(self.len - start).map_err(|_| std::io::Error::from_raw_os_error(libc::EFBIG))?;
            // SAFETY:
            // - `file` is an open file descriptor for the whole call.
            // - fallocate takes plain integers and touches no memory of ours; the punched
            //   range lies above `published`, which no reader looks at and no writer uses.
            let rc = unsafe {
                libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, offset, len)
            };
            if rc == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
        match result {
            Ok(()) => tracing::debug!(segment = self.id, released = self.len - start, "released the unused segment tail"),
            Err(error) => tracing::warn!(segment = self.id, %error, "failed to release the unused segment tail"),
        }
    }

    /// Allocates blocks up to at least `end`, `ALLOCATION_CHUNK` bytes at a time. Only the
    /// segment's writer calls this, before it writes below `end`.
    pub(crate) fn ensure_allocated(&self, end: u64) -> Result<(), StoreError> {
        let allocated = self.allocated.load(Ordering::Relaxed);
        if end <= allocated {
            return Ok(());
        }
        let Some(file) = &self.file else {
            return Err(StoreError::Io {
                op: "allocate in a sealed segment",
                path: self.path.clone(),
                source: std::io::Error::from_raw_os_error(libc::EBADF),
            });
        };
        let target = end.max(allocated + ALLOCATION_CHUNK).div_ceil(4096).saturating_mul(4096).min(self.len);
        fallocate_hook(file, allocated, target - allocated)
            .map_err(|e| io_error("posix_fallocate", &self.path, e, target - allocated))?;
        self.allocated.store(target, Ordering::Relaxed);
        Ok(())
    }

    /// Asks the kernel to read `[offset, offset + len)` of the mapping ahead
    /// (`madvise(MADV_WILLNEED)`), so that a reader of a record written with direct I/O
    /// finds its pages arriving instead of faulting them in one readahead window at a
    /// time. Only a hint: an error is ignored.
    pub(crate) fn read_ahead(&self, offset: u64, len: u64) {
        let _ = self.map.advise_range(memmap2::Advice::WillNeed, offset as usize, len as usize);
    }

    /// msync(MS_SYNC) of `[start, end)`: on Linux a data sync of that range of the file
    /// (the mapping is shared, so the kernel syncs the file behind it).
    pub(crate) fn flush(&self, start: u64, end: u64) -> std::io::Result<()> {
        if end <= start {
            return Ok(());
        }
        self.map.flush_range(start as usize, (end - start) as usize)
    }
}

#[cfg(not(test))]
fn fallocate_hook(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    preallocate(file, offset, len)
}

#[cfg(test)]
thread_local! {
    /// Test seam: when set, the next preallocation on this thread fails with this errno.
    pub(crate) static FAIL_FALLOCATE: std::cell::Cell<Option<i32>> = const { std::cell::Cell::new(None) };
}

#[cfg(test)]
fn fallocate_hook(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    if let Some(errno) = FAIL_FALLOCATE.with(|f| f.take()) {
        return Err(std::io::Error::from_raw_os_error(errno));
    }
    preallocate(file, offset, len)
}
