//! A [`Source`] over a deflated data set that inflates on demand and keeps
//! only a window of the inflated bytes: skipped values are inflated and
//! dropped, never buffered whole.

use flate2::{Decompress, FlushDecompress, Status};

use super::{ScanError, Source};

/// How much is inflated per step.
const CHUNK: usize = 32 * 1024;

pub(super) struct InflateSource<'a> {
    input: &'a [u8],
    in_pos: usize,
    inflater: Decompress,
    /// Inflated bytes `[start, start + window.len())`.
    window: Vec<u8>,
    start: usize,
    /// The stream has ended (or stopped making progress on truncated input).
    done: bool,
}

impl<'a> InflateSource<'a> {
    pub(super) fn new(input: &'a [u8]) -> Self {
        InflateSource {
            input,
            in_pos: 0,
            inflater: Decompress::new(looks_like_zlib(input)),
            window: Vec::new(),
            start: 0,
            done: false,
        }
    }

    fn end(&self) -> usize {
        self.start + self.window.len()
    }

    /// Drops inflated bytes before `keep_from`, in large steps so the
    /// window is not shifted for every element.
    fn release(&mut self, keep_from: usize) {
        let droppable = keep_from.saturating_sub(self.start).min(self.window.len());
        if droppable == self.window.len() {
            self.window.clear();
        } else if droppable >= CHUNK {
            self.window.drain(..droppable);
        } else {
            return;
        }
        self.start += droppable;
    }

    /// Inflates until the stream reaches `target` or ends, keeping the bytes
    /// from `keep_from` on.
    fn fill(&mut self, keep_from: usize, target: usize) -> Result<(), ScanError> {
        self.release(keep_from);
        while self.end() < target && !self.done {
            self.window.reserve(CHUNK);
            let (in_before, out_before) = (self.inflater.total_in(), self.inflater.total_out());
            let status = self
                .inflater
                .decompress_vec(
                    &self.input[self.in_pos..],
                    &mut self.window,
                    FlushDecompress::None,
                )
                .map_err(|e| ScanError::Inflate {
                    offset: self.start + self.window.len(),
                    message: e.to_string(),
                })?;
            let consumed = (self.inflater.total_in() - in_before) as usize;
            self.in_pos = (self.in_pos + consumed).min(self.input.len());
            let progressed = consumed > 0 || self.inflater.total_out() > out_before;
            if status == Status::StreamEnd || !progressed {
                self.done = true;
            }
            self.release(keep_from);
        }
        Ok(())
    }
}

impl Source for InflateSource<'_> {
    fn get(&mut self, pos: usize, n: usize) -> Result<Option<&[u8]>, ScanError> {
        let Some(target) = pos.checked_add(n) else {
            return Ok(None);
        };
        self.fill(pos, target)?;
        if pos < self.start || self.end() < target {
            return Ok(None);
        }
        Ok(Some(&self.window[pos - self.start..target - self.start]))
    }

    fn reaches(&mut self, pos: usize) -> Result<bool, ScanError> {
        self.fill(pos, pos)?;
        Ok(self.end() >= pos)
    }

    fn known_len(&self) -> Option<usize> {
        None
    }

    fn ends_at(&mut self, pos: usize) -> Result<bool, ScanError> {
        let Some(target) = pos.checked_add(1) else {
            return Ok(true);
        };
        self.fill(pos, target)?;
        Ok(self.end() <= pos)
    }
}

/// The Deflated Explicit VR Little Endian syntax is raw deflate (RFC 1951),
/// but some writers put a zlib header in front. A zlib header read as raw
/// deflate is a non-final stored block whose LEN/NLEN check fails, so the
/// two cannot be confused.
fn looks_like_zlib(input: &[u8]) -> bool {
    let [cmf, flg, ..] = input else { return false };
    let header_ok =
        cmf & 0x0F == 8 && cmf >> 4 <= 7 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0;
    if !header_ok {
        return false;
    }
    match input.get(1..5) {
        Some(&[l0, l1, n0, n1]) => u16::from_le_bytes([l0, l1]) != !u16::from_le_bytes([n0, n1]),
        _ => true,
    }
}
