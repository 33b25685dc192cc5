//! `Store::check`: verifies every record of every segment.

use std::path::PathBuf;
use std::sync::Arc;

use super::format::{self, RECORD_ALIGN, RECORD_MAGIC, SEGMENT_HEADER_LEN};
use super::recovery::{probe, Probe};
use super::segment::Segment;

/// The result of [`Store::check`](super::Store::check).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Segment files looked at (including ones that could not be mapped).
    pub segments: usize,
    /// Valid records.
    pub records: u64,
    /// Payload bytes of the valid records.
    pub bytes: u64,
    /// (segment, offset, why) for each damaged place that has valid data after it, for bad
    /// segment headers (offset 0) and for files that could not be used at all.
    pub corrupt: Vec<(u64, u64, String)>,
    /// Non-zero bytes after the last valid record of each segment (torn or abandoned writes).
    pub torn_tail_bytes: u64,
    /// The same counts per segment, in id order.
    pub per_segment: Vec<SegmentCheck>,
}

/// Counts for one segment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SegmentCheck {
    pub segment: u64,
    /// Mapped read-only (it existed when the store was opened).
    pub sealed: bool,
    pub size: u64,
    pub records: u64,
    pub bytes: u64,
    /// Offset just past the last valid record.
    pub end: u64,
    pub corrupt: usize,
    pub torn_tail_bytes: u64,
}

impl CheckReport {
    /// No corruption found (torn tails are expected after a crash and do not count).
    pub fn is_clean(&self) -> bool {
        self.corrupt.is_empty()
    }
}

pub(crate) fn check(segments: &[Arc<Segment>], broken: &[(u64, PathBuf, String)]) -> CheckReport {
    let mut report = CheckReport::default();
    for seg in segments {
        let s = check_segment(seg, &mut report.corrupt);
        report.records += s.records;
        report.bytes += s.bytes;
        report.torn_tail_bytes += s.torn_tail_bytes;
        report.per_segment.push(s);
    }
    for (id, path, why) in broken {
        report.corrupt.push((*id, 0, format!("{}: {why}", path.display())));
        report.per_segment.push(SegmentCheck { segment: *id, corrupt: 1, ..Default::default() });
    }
    report.per_segment.sort_by_key(|s| s.segment);
    report.corrupt.sort_by_key(|c| (c.0, c.1));
    report.segments = report.per_segment.len();
    report
}

fn check_segment(seg: &Segment, corrupt: &mut Vec<(u64, u64, String)>) -> SegmentCheck {
    let bytes = seg.readable();
    let limit = bytes.len() as u64;
    let mut s = SegmentCheck { segment: seg.id, sealed: seg.sealed, size: seg.len, ..Default::default() };
    if let Some(why) = &seg.header_problem {
        corrupt.push((seg.id, 0, why.clone()));
        s.corrupt += 1;
    }
    // The segment's last nonzero byte, found once. Records in the shared segment
    // are followed by zero padding, and a search from each of them to the end
    // would read the whole zero tail once per record.
    let last = last_nonzero(bytes, SEGMENT_HEADER_LEN);
    let nonzero_after = |offset: u64| last.filter(|&last| last >= offset);
    let mut offset = SEGMENT_HEADER_LEN;
    loop {
        let (reason, resume_from) = match probe(bytes, offset) {
            Probe::Valid(h) => {
                s.records += 1;
                s.bytes += h.length;
                offset += format::record_span(h.length);
                s.end = offset;
                continue;
            }
            Probe::Empty => match (format::skip_padding(bytes, offset), nonzero_after(offset)) {
                (_, None) => break, // clean end: zeros up to the end
                (Some(next), Some(_)) => {
                    offset = next;
                    continue;
                }
                (None, Some(_)) => ("zero record magic followed by data".to_string(), offset + RECORD_ALIGN),
            },
            Probe::Invalid { reason, skip: Some(h) } => (reason, offset + format::record_span(h.length)),
            Probe::Invalid { reason, skip: None } => (reason, offset + RECORD_ALIGN),
        };
        match find_valid(bytes, resume_from) {
            Some(next) => {
                corrupt.push((seg.id, offset, format!("{reason} ({} bytes unreadable before the next valid record)", next - offset)));
                s.corrupt += 1;
                offset = next;
            }
            None => {
                if let Some(last) = nonzero_after(offset) {
                    s.torn_tail_bytes = last + 1 - offset;
                }
                break;
            }
        }
    }
    if s.end == 0 {
        s.end = SEGMENT_HEADER_LEN.min(limit);
    }
    s
}

/// Offset of the last non-zero byte at or after `from`.
fn last_nonzero(bytes: &[u8], from: u64) -> Option<u64> {
    let from = (from as usize).min(bytes.len());
    bytes[from..].iter().rposition(|b| *b != 0).map(|i| (from + i) as u64)
}

/// The first 8-aligned offset at or after `from` holding a fully valid record.
fn find_valid(bytes: &[u8], from: u64) -> Option<u64> {
    let magic = RECORD_MAGIC.to_le_bytes();
    let mut at = format::align8(from);
    while at + format::RECORD_HEADER_LEN <= bytes.len() as u64 {
        let i = at as usize;
        if bytes[i..i + 4] == magic {
            if let Probe::Valid(_) = probe(bytes, at) {
                return Some(at);
            }
        }
        at += RECORD_ALIGN;
    }
    None
}
