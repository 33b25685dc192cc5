//! Where a stored record lives.

/// The position of one record in the segment store.
///
/// `offset` is the byte offset of the record header inside the segment file,
/// and `length` is the length of the record's payload (the Part 10 file).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    pub segment: u64,
    pub offset: u64,
    pub length: u64,
}
