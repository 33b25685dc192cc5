//! `AlignedBuf`: a growable byte buffer whose start is aligned for direct I/O.

use std::alloc::{self, Layout};
use std::ptr::NonNull;

/// Alignment of every allocation: a page, which also satisfies the logical
/// block size of any device direct I/O goes to.
pub(crate) const BUFFER_ALIGN: usize = 4096;

/// Smallest capacity allocated, so a buffer reaches its working size in a few steps.
const MIN_CAPACITY: usize = 64 * 1024;

/// A byte buffer like `Vec<u8>` restricted to what the writer needs (resize with
/// zeros, slice access), whose memory starts on a [`BUFFER_ALIGN`] boundary.
pub(crate) struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    cap: usize,
}

// SAFETY: the buffer owns its allocation exclusively, like a `Vec<u8>`.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared access only reads, through `&[u8]`.
unsafe impl Sync for AlignedBuf {}

impl Default for AlignedBuf {
    fn default() -> Self {
        AlignedBuf { ptr: NonNull::dangling(), len: 0, cap: 0 }
    }
}

impl AlignedBuf {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn capacity(&self) -> usize {
        self.cap
    }

    /// Sets the length to `new_len`; bytes added at the end are zero.
    pub(crate) fn resize(&mut self, new_len: usize) {
        if new_len > self.cap {
            self.grow(new_len);
        }
        if new_len > self.len {
            // SAFETY: `new_len <= cap`, so the range lies in the allocation.
            unsafe { self.ptr.as_ptr().add(self.len).write_bytes(0, new_len - self.len) };
        }
        self.len = new_len;
    }

    /// Moves the contents to a zeroed allocation of at least `required` bytes.
    fn grow(&mut self, required: usize) {
        let cap = required.next_power_of_two().max(MIN_CAPACITY);
        let layout = Layout::from_size_align(cap, BUFFER_ALIGN).expect("buffer size fits a layout");
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else { alloc::handle_alloc_error(layout) };
        if self.cap > 0 {
            // SAFETY: both allocations hold at least `len` bytes and do not overlap; the old
            // one was allocated with the layout `release` rebuilds.
            unsafe {
                std::ptr::copy_nonoverlapping(self.ptr.as_ptr(), ptr.as_ptr(), self.len);
                self.release();
            }
        }
        self.ptr = ptr;
        self.cap = cap;
    }

    /// Frees the allocation.
    ///
    /// # Safety
    /// `cap > 0`, and the buffer must not be used afterwards without a new allocation.
    unsafe fn release(&mut self) {
        let layout = Layout::from_size_align(self.cap, BUFFER_ALIGN).expect("layout was valid when allocated");
        // SAFETY: allocated in `grow` with this layout.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), layout) };
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.cap > 0 {
            // SAFETY: `cap > 0`, and the buffer is going away.
            unsafe { self.release() };
        }
    }
}

impl std::ops::Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `len` bytes from `ptr` are initialised, because they were zeroed at
        // allocation or written since. An empty buffer's dangling pointer is valid for a
        // zero-length slice.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf").field("len", &self.len).field("cap", &self.cap).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_aligned_and_keeps_contents() {
        let mut b = AlignedBuf::default();
        assert!(b.is_empty());
        b.resize(10);
        b[..3].copy_from_slice(b"abc");
        b.resize(300_000);
        assert_eq!(b.as_ptr() as usize % BUFFER_ALIGN, 0);
        assert!(b.capacity() >= 300_000);
        assert_eq!(&b[..3], b"abc");
        assert!(b[3..].iter().all(|&x| x == 0));
    }

    #[test]
    fn regrown_bytes_are_zero() {
        let mut b = AlignedBuf::default();
        b.resize(100);
        b.fill(7);
        b.resize(10);
        b.resize(100);
        assert!(b[..10].iter().all(|&x| x == 7));
        assert!(b[10..].iter().all(|&x| x == 0));
    }
}
