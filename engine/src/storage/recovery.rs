//! Opening a segment directory and scanning segments for valid records.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::format::{self, HeaderProblem, RecordHeader, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use super::segment::{io_error, parse_segment_file_name, sync_dir, Segment};
use super::{RecordRef, ScannedRecord, StoreError};
use crate::Location;

pub(crate) struct Recovered {
    pub(crate) dir: PathBuf,
    pub(crate) segments: BTreeMap<u64, Arc<Segment>>,
    pub(crate) broken: Vec<(u64, PathBuf, String)>,
    pub(crate) next_segment: u64,
    pub(crate) next_sequence: u64,
    pub(crate) lock: File,
}

/// Takes the directory lock, removes half-created segments, maps the others read-only and
/// walks their record headers for the highest sequence number.
pub(crate) fn open_dir(data_dir: &Path) -> Result<Recovered, StoreError> {
    let dir = data_dir.join("segments");
    if !dir.is_dir() {
        std::fs::create_dir_all(&dir).map_err(|e| io_error("create directory", &dir, e, 0))?;
        sync_dir(data_dir)?;
    }
    let lock_path = dir.join(".lock");
    let lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|e| io_error("open lock file", &lock_path, e, 0))?;
    // SAFETY:
    // - `lock` is an open file descriptor for the duration of the call.
    // - flock takes plain integers and touches no memory of ours.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            StoreError::Locked(dir)
        } else {
            io_error("flock", &lock_path, e, 0)
        });
    }

    let mut finals: BTreeMap<u64, PathBuf> = BTreeMap::new();
    let mut max_id = 0u64;
    let mut removed_tmp = false;
    let entries = std::fs::read_dir(&dir).map_err(|e| io_error("read directory", &dir, e, 0))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_error("read directory", &dir, e, 0))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            tracing::warn!(file = ?entry.path(), "ignoring file with a non-UTF-8 name in the segment directory");
            continue;
        };
        if name == ".lock" {
            continue;
        }
        match parse_segment_file_name(name) {
            Some((id, true)) => {
                max_id = max_id.max(id);
                let path = entry.path();
                tracing::warn!(file = %path.display(), "removing segment whose creation did not finish");
                std::fs::remove_file(&path).map_err(|e| io_error("remove unfinished segment", &path, e, 0))?;
                removed_tmp = true;
            }
            Some((id, false)) => {
                max_id = max_id.max(id);
                finals.insert(id, entry.path());
            }
            None => tracing::warn!(file = name, "ignoring unexpected file in the segment directory"),
        }
    }
    if removed_tmp {
        sync_dir(&dir)?;
    }

    let mut segments = BTreeMap::new();
    let mut broken = Vec::new();
    let mut max_sequence = 0u64;
    for (id, path) in finals {
        match Segment::open_sealed(&path, id)? {
            Ok(seg) => {
                if let Some(why) = &seg.header_problem {
                    tracing::error!(segment = id, problem = %why, "segment header is invalid; its records are still used");
                }
                let walk = walk_headers(&seg);
                max_sequence = max_sequence.max(walk.max_sequence);
                tracing::debug!(segment = id, records = walk.records, end = walk.end, "walked segment");
                segments.insert(id, Arc::new(seg));
            }
            Err(why) => {
                tracing::error!(segment = id, file = %path.display(), problem = %why, "cannot use segment file");
                broken.push((id, path, why));
            }
        }
    }
    Ok(Recovered { dir, segments, broken, next_segment: max_id + 1, next_sequence: max_sequence + 1, lock })
}

struct Walk {
    records: u64,
    end: u64,
    max_sequence: u64,
}

/// Follows record headers (not payload CRCs) from the first record to the first header that
/// is not valid.
fn walk_headers(seg: &Segment) -> Walk {
    let bytes = seg.readable();
    let mut walk = Walk { records: 0, end: SEGMENT_HEADER_LEN, max_sequence: 0 };
    let mut at = walk.end;
    loop {
        match RecordHeader::decode_at(bytes, at) {
            Ok(h) => {
                walk.records += 1;
                walk.max_sequence = walk.max_sequence.max(h.sequence);
                at += format::record_span(h.length);
                walk.end = at;
            }
            Err(HeaderProblem::Empty) => match format::skip_padding(bytes, at) {
                Some(next) => at = next,
                None => return walk,
            },
            Err(HeaderProblem::Invalid(_)) => return walk,
        }
    }
}

/// The outcome of looking for a fully valid record at an offset.
pub(crate) enum Probe {
    Valid(RecordHeader),
    /// Nothing written here (magic zero, or no room for a header).
    Empty,
    /// Not a valid record; `skip` is the header when it is intact (only the payload CRC failed).
    Invalid { reason: String, skip: Option<RecordHeader> },
}

/// Checks the record at `offset` of `bytes` completely, payload CRC included.
pub(crate) fn probe(bytes: &[u8], offset: u64) -> Probe {
    match RecordHeader::decode_at(bytes, offset) {
        Err(HeaderProblem::Empty) => Probe::Empty,
        Err(HeaderProblem::Invalid(reason)) => Probe::Invalid { reason, skip: None },
        Ok(h) => {
            let start = (offset + RECORD_HEADER_LEN) as usize;
            if h.verify(&bytes[start..start + h.length as usize]) {
                Probe::Valid(h)
            } else {
                Probe::Invalid { reason: "record checksum mismatch".into(), skip: Some(h) }
            }
        }
    }
}

/// `Store::scan_from`.
pub(crate) fn scan_from(segments: &[Arc<Segment>], start_offsets: &HashMap<u64, u64>) -> Result<Vec<ScannedRecord>, StoreError> {
    let mut out = Vec::new();
    for seg in segments {
        let bytes = seg.readable();
        let mut offset = start_offsets.get(&seg.id).copied().unwrap_or(SEGMENT_HEADER_LEN).max(SEGMENT_HEADER_LEN);
        if offset & (format::RECORD_ALIGN - 1) != 0 || offset > bytes.len() as u64 {
            return Err(StoreError::InvalidOffset { segment: seg.id, offset });
        }
        let start = offset;
        loop {
            match probe(bytes, offset) {
                Probe::Valid(h) => {
                    out.push(ScannedRecord {
                        location: Location { segment: seg.id, offset, length: h.length },
                        sequence: h.sequence,
                        record: RecordRef {
                            segment: seg.clone(),
                            start: (offset + RECORD_HEADER_LEN) as usize,
                            len: h.length as usize,
                        },
                    });
                    offset += format::record_span(h.length);
                }
                Probe::Empty => match format::skip_padding(bytes, offset) {
                    Some(next) => offset = next,
                    None => break,
                },
                Probe::Invalid { reason, .. } => {
                    if offset == start && start > SEGMENT_HEADER_LEN {
                        tracing::warn!(segment = seg.id, offset, %reason, "scan start offset is not at a valid record; is the manifest offset a record end?");
                    } else {
                        tracing::warn!(segment = seg.id, offset, %reason, "segment ends in a torn record; ignoring it and what follows");
                    }
                    break;
                }
            }
        }
    }
    Ok(out)
}
