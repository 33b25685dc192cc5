//! Per-segment `indexed_end`: the end of the run of records, from the start of a
//! segment, that the manifest contains.
//!
//! Records of the shared segment come from many associations, and each association
//! queues its row when its own commit resolves, so rows of one segment can arrive out
//! of offset order. A row past a gap waits in `ahead` until the rows before it arrive.
//! A gap that never closes (an association stopped between its commit and its row)
//! keeps `indexed_end` below it, and recovery enters the missing record at the next start.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};

use rusqlite::{Connection, OptionalExtension};

use crate::storage::format::align_shared;
use crate::storage::SEGMENT_HEADER_LEN;
use crate::Location;

/// Records past a gap kept per segment. A gap that outlives this many rows
/// will not close in this process (its row was lost), so the rest are dropped.
const MAX_AHEAD: usize = 4096;

#[derive(Clone, Debug, Default)]
pub(super) struct Progress {
    /// End of the contiguous run of entered records.
    pub(super) end: u64,
    /// Entered records past a gap: offset to record end.
    ahead: BTreeMap<u64, u64>,
}

impl Progress {
    /// Returns whether a record at `offset` continues the run. It does when it starts at
    /// or before the run's end, or on the next multiple of `SHARED_RECORD_ALIGN` after
    /// it, because the store starts every record there after zero padding.
    ///
    /// NOTE: segments written before that padding pack their records, so there a lost
    /// row of a record under 472 bytes could be skipped by this rule.
    fn continues(&self, offset: u64) -> bool {
        offset <= self.end || offset == align_shared(self.end)
    }

    /// Counts the record at `offset`, ending at `record_end`, as entered.
    fn enter(&mut self, offset: u64, record_end: u64) {
        if !self.continues(offset) {
            if self.ahead.len() >= MAX_AHEAD {
                // The gap is not closing: stop tracking what lies past it. The
                // end stays below the gap, which only makes recovery rescan more.
                self.ahead.clear();
            }
            self.ahead.insert(offset, record_end);
            return;
        }
        self.end = self.end.max(record_end);
        while let Some((&offset, &next_end)) = self.ahead.first_key_value() {
            if !self.continues(offset) {
                break;
            }
            self.ahead.remove(&offset);
            self.end = self.end.max(next_end);
        }
    }
}

/// The progress of every segment this writer has entered rows for.
#[derive(Default)]
pub(super) struct IndexedEnds {
    segments: HashMap<u64, Progress>,
}

impl IndexedEnds {
    /// Returns the progress of the segments of `entered` after those rows, leaving this
    /// tracker unchanged until [`IndexedEnds::apply`], so a rolled-back batch changes nothing.
    pub(super) fn plan(&self, conn: &Connection, entered: &[(Location, u64)]) -> rusqlite::Result<HashMap<u64, Progress>> {
        let mut planned: HashMap<u64, Progress> = HashMap::new();
        for (location, record_end) in entered {
            let progress = match planned.entry(location.segment) {
                Entry::Occupied(planned) => planned.into_mut(),
                Entry::Vacant(slot) => slot.insert(match self.segments.get(&location.segment) {
                    Some(known) => known.clone(),
                    None => Progress { end: stored_end(conn, location.segment)?, ahead: BTreeMap::new() },
                }),
            };
            progress.enter(location.offset, *record_end);
        }
        Ok(planned)
    }

    /// Keeps the progress planned for a committed batch.
    pub(super) fn apply(&mut self, planned: HashMap<u64, Progress>) {
        self.segments.extend(planned);
    }
}

/// Returns the segment's `indexed_end` in the manifest, or the offset of its first record.
fn stored_end(conn: &Connection, segment: u64) -> rusqlite::Result<u64> {
    let stored: Option<u64> = conn
        .prepare_cached("SELECT indexed_end FROM segments WHERE id = ?1")?
        .query_row([segment], |r| r.get(0))
        .optional()?;
    Ok(stored.unwrap_or(SEGMENT_HEADER_LEN).max(SEGMENT_HEADER_LEN))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_out_of_order_wait_for_the_gap() {
        let mut p = Progress { end: 64, ahead: BTreeMap::new() };
        p.enter(200, 300);
        assert_eq!(p.end, 64);
        p.enter(100, 200);
        assert_eq!(p.end, 64);
        p.enter(64, 100);
        assert_eq!(p.end, 300);
        assert!(p.ahead.is_empty());
    }

    #[test]
    fn shared_padding_is_no_gap() {
        let mut p = Progress { end: 64, ahead: BTreeMap::new() };
        p.enter(1024, 1500);
        p.enter(512, 1000);
        assert_eq!(p.end, 1500);
        // A record past the next multiple is past a gap.
        p.enter(2048, 2100);
        assert_eq!(p.end, 1500);
        assert_eq!(p.ahead.len(), 1);
    }

    #[test]
    fn rows_below_the_end_change_nothing() {
        let mut p = Progress { end: 500, ahead: BTreeMap::new() };
        p.enter(64, 100);
        assert_eq!(p.end, 500);
        assert!(p.ahead.is_empty());
    }
}
