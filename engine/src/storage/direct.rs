//! Direct I/O (O_DIRECT) on a segment file, and vectored positioned writes.

use std::fs::{File, OpenOptions};
use std::io::IoSlice;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::Mutex;

use super::aligned::BUFFER_ALIGN;
use super::format::SHARED_RECORD_ALIGN;

/// A segment file's second descriptor, opened with O_DIRECT on first use.
#[derive(Default)]
pub(crate) struct DirectFile {
    state: Mutex<State>,
}

#[derive(Default)]
enum State {
    #[default]
    Unopened,
    Open(File),
    /// The file system rejects O_DIRECT or needs a coarser alignment, or the
    /// segment takes no more writes.
    Unavailable,
}

/// The outcome of [`DirectFile::write`].
pub(crate) enum Direct {
    Written,
    /// Not written: the caller writes through the page cache instead.
    Unavailable,
}

impl DirectFile {
    /// Writes `blocks` from `offset` with direct I/O, when the file system allows it
    /// for blocks aligned to [`SHARED_RECORD_ALIGN`] and buffers aligned to
    /// [`BUFFER_ALIGN`]. A direct write rejected with EINVAL turns direct I/O off for
    /// this file, and the caller writes the same blocks through the page cache.
    pub(crate) fn write(&self, path: &Path, segment: u64, offset: u64, blocks: &[&[u8]]) -> std::io::Result<Direct> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(*state, State::Unopened) {
            *state = open(path, segment);
        }
        let State::Open(file) = &*state else { return Ok(Direct::Unavailable) };
        match write_all_vectored(file, offset, blocks) {
            Ok(()) => Ok(Direct::Written),
            Err(error) if error.raw_os_error() == Some(libc::EINVAL) => {
                tracing::warn!(segment, %error, "direct write rejected; writing this segment through the page cache");
                *state = State::Unavailable;
                Ok(Direct::Unavailable)
            }
            Err(error) => Err(error),
        }
    }

    /// Closes the descriptor: the segment takes no more writes.
    pub(crate) fn close(&self) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = State::Unavailable;
    }
}

/// Opens `path` with O_DIRECT if its file system takes direct writes at the
/// offsets and buffer addresses the shared segment uses.
fn open(path: &Path, segment: u64) -> State {
    let file = match OpenOptions::new().write(true).custom_flags(libc::O_DIRECT).open(path) {
        Ok(file) => file,
        Err(error) => {
            tracing::debug!(segment, %error, "no direct I/O for this segment; writing through the page cache");
            return State::Unavailable;
        }
    };
    match dio_alignment(&file) {
        Some((offset_align, memory_align)) if offset_align <= SHARED_RECORD_ALIGN && memory_align <= BUFFER_ALIGN as u64 => {
            State::Open(file)
        }
        found => {
            tracing::debug!(segment, alignment = ?found, "direct I/O needs another alignment here; writing through the page cache");
            State::Unavailable
        }
    }
}

/// Returns the offset and memory alignment direct I/O needs on `file` (statx
/// STATX_DIOALIGN), or `None` when the kernel or file system does not report it.
pub(crate) fn dio_alignment(file: &File) -> Option<(u64, u64)> {
    // SAFETY: `statx` is a plain C struct of integers, valid when zeroed.
    let mut buf: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: statx fills the struct we pass; the empty path with AT_EMPTY_PATH
    // refers to the open descriptor itself.
    let rc = unsafe { libc::statx(file.as_raw_fd(), c"".as_ptr(), libc::AT_EMPTY_PATH, libc::STATX_DIOALIGN, &mut buf) };
    if rc != 0 || buf.stx_mask & libc::STATX_DIOALIGN == 0 || buf.stx_dio_offset_align == 0 {
        return None;
    }
    Some((u64::from(buf.stx_dio_offset_align), u64::from(buf.stx_dio_mem_align)))
}

/// Writes `blocks` one after another from `offset` with `pwritev`, until all are written.
pub(crate) fn write_all_vectored(file: &File, offset: u64, blocks: &[&[u8]]) -> std::io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = blocks.iter().map(|b| IoSlice::new(b)).collect();
    let mut rest = &mut slices[..];
    let mut at = offset;
    while !rest.is_empty() {
        let count = rest.len().min(1024);
        let pos = libc::off_t::try_from(at).map_err(|_| std::io::Error::from_raw_os_error(libc::EFBIG))?;
        // SAFETY: `IoSlice` is ABI-compatible with `iovec`; the slices borrow live
        // buffers for the whole call, and `file` is an open descriptor.
        let n = unsafe { libc::pwritev(file.as_raw_fd(), rest.as_ptr().cast(), count as libc::c_int, pos) };
        if n < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(error);
        }
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        at += n as u64;
        IoSlice::advance_slices(&mut rest, n as usize);
    }
    Ok(())
}
