//! Byte layout of segment and record headers (see `docs/storage-format.md`).
//!
//! Pure functions over byte slices: no I/O, no unsafe.

/// Length of the segment header; the first record starts here.
pub const SEGMENT_HEADER_LEN: u64 = 64;
/// Length of a record header; the payload starts this far after the record's offset.
pub const RECORD_HEADER_LEN: u64 = 32;
/// Every record starts on a multiple of this.
pub const RECORD_ALIGN: u64 = 8;
/// Segment sizes are multiples of this.
pub const SEGMENT_SIZE_GRANULE: u64 = 4096;
/// Records of the shared segment start on a multiple of this, zero bytes filling the
/// space before, so the committer can write them with direct I/O.
pub const SHARED_RECORD_ALIGN: u64 = 512;

pub const SEGMENT_MAGIC: [u8; 8] = *b"NECTSEG\0";
pub const SEGMENT_VERSION: u16 = 1;
/// `b"NREC"` read as a little-endian u32.
pub const RECORD_MAGIC: u32 = u32::from_le_bytes(*b"NREC");
pub const RECORD_VERSION: u16 = 1;

// Segment header field offsets, each derived from the previous one.
const SH_MAGIC: usize = 0;
const SH_VERSION: usize = SH_MAGIC + 8;
const SH_HEADER_LEN: usize = SH_VERSION + 2;
const SH_RECORD_ALIGN: usize = SH_HEADER_LEN + 2;
const SH_ID: usize = SH_RECORD_ALIGN + 4;
const SH_SIZE: usize = SH_ID + 8;
const SH_CREATED: usize = SH_SIZE + 8;
const SH_RESERVED: usize = SH_CREATED + 8;
const SH_CRC: usize = SH_RESERVED + 20;
const SH_END: usize = SH_CRC + 4;
const _: () = assert!(SH_END as u64 == SEGMENT_HEADER_LEN);

// Record header field offsets.
const RH_MAGIC: usize = 0;
const RH_VERSION: usize = RH_MAGIC + 4;
const RH_FLAGS: usize = RH_VERSION + 2;
const RH_LENGTH: usize = RH_FLAGS + 2;
const RH_SEQUENCE: usize = RH_LENGTH + 8;
const RH_HEADER_CRC: usize = RH_SEQUENCE + 8;
const RH_CRC: usize = RH_HEADER_CRC + 4;
const RH_END: usize = RH_CRC + 4;
const _: () = assert!(RH_END as u64 == RECORD_HEADER_LEN);
const _: () = assert!(SEGMENT_HEADER_LEN & (RECORD_ALIGN - 1) == 0);
const _: () = assert!(RECORD_HEADER_LEN & (RECORD_ALIGN - 1) == 0);
const _: () = assert!(SEGMENT_SIZE_GRANULE & (RECORD_ALIGN - 1) == 0);

/// Rounds `n` up to a multiple of [`RECORD_ALIGN`].
#[inline]
pub const fn align8(n: u64) -> u64 {
    (n + (RECORD_ALIGN - 1)) & !(RECORD_ALIGN - 1)
}

/// Bytes a record with a `length`-byte payload occupies in a segment.
#[inline]
pub const fn record_span(length: u64) -> u64 {
    RECORD_HEADER_LEN + align8(length)
}

/// Offset of the record following the one at `location`.
#[inline]
pub fn record_end(location: &crate::Location) -> u64 {
    location.offset + record_span(location.length)
}

/// Rounds `n` up to a multiple of [`SHARED_RECORD_ALIGN`].
#[inline]
pub const fn align_shared(n: u64) -> u64 {
    (n + (SHARED_RECORD_ALIGN - 1)) & !(SHARED_RECORD_ALIGN - 1)
}

/// Where the next record may start when the bytes at `offset` hold no record: the
/// next multiple of [`SHARED_RECORD_ALIGN`], provided the bytes up to it are zero
/// padding. `None` when `offset` is such a multiple already, the padding contains
/// data, or `bytes` ends before a header would fit.
pub fn skip_padding(bytes: &[u8], offset: u64) -> Option<u64> {
    let next = align_shared(offset);
    if next == offset || next + RECORD_HEADER_LEN > bytes.len() as u64 {
        return None;
    }
    bytes[offset as usize..next as usize].iter().all(|&b| b == 0).then_some(next)
}

/// Smallest allowed segment size able to hold a `payload`-byte record at the first
/// multiple of [`SHARED_RECORD_ALIGN`], rounded to the granule.
pub fn segment_size_for(payload: u64) -> u64 {
    let raw = align_shared(SEGMENT_HEADER_LEN) + record_span(payload);
    raw.div_ceil(SEGMENT_SIZE_GRANULE) * SEGMENT_SIZE_GRANULE
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The decoded segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    pub id: u64,
    pub size: u64,
    pub created_ms: u64,
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN as usize] {
        let mut b = [0u8; SEGMENT_HEADER_LEN as usize];
        b[SH_MAGIC..SH_VERSION].copy_from_slice(&SEGMENT_MAGIC);
        b[SH_VERSION..SH_HEADER_LEN].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
        b[SH_HEADER_LEN..SH_RECORD_ALIGN].copy_from_slice(&(SEGMENT_HEADER_LEN as u16).to_le_bytes());
        b[SH_RECORD_ALIGN..SH_ID].copy_from_slice(&(RECORD_ALIGN as u32).to_le_bytes());
        b[SH_ID..SH_SIZE].copy_from_slice(&self.id.to_le_bytes());
        b[SH_SIZE..SH_CREATED].copy_from_slice(&self.size.to_le_bytes());
        b[SH_CREATED..SH_RESERVED].copy_from_slice(&self.created_ms.to_le_bytes());
        let crc = crc32c::crc32c(&b[..SH_CRC]);
        b[SH_CRC..SH_END].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and validates a segment header (magic, version, layout constants, CRC).
    pub fn decode(b: &[u8]) -> Result<SegmentHeader, String> {
        if b.len() < SH_END {
            return Err(format!("segment shorter than its {SH_END}-byte header"));
        }
        if b[SH_MAGIC..SH_VERSION] != SEGMENT_MAGIC {
            return Err("bad segment magic".into());
        }
        let crc = u32_at(b, SH_CRC);
        if crc != crc32c::crc32c(&b[..SH_CRC]) {
            return Err("segment header checksum mismatch".into());
        }
        let version = u16_at(b, SH_VERSION);
        if version != SEGMENT_VERSION {
            return Err(format!("unsupported segment version {version}"));
        }
        if u16_at(b, SH_HEADER_LEN) as u64 != SEGMENT_HEADER_LEN || u32_at(b, SH_RECORD_ALIGN) as u64 != RECORD_ALIGN {
            return Err("unsupported segment layout".into());
        }
        Ok(SegmentHeader { id: u64_at(b, SH_ID), size: u64_at(b, SH_SIZE), created_ms: u64_at(b, SH_CREATED) })
    }
}

/// The decoded fields of a record header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    pub length: u64,
    pub sequence: u64,
    /// CRC32C of header bytes 0..24 followed by the payload.
    pub crc: u32,
}

/// Why the bytes at an offset are not a usable record header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderProblem {
    /// Fewer than [`RECORD_HEADER_LEN`] bytes remain, or the magic is zero: nothing was written here.
    Empty,
    /// Something is written here but it is not a valid header.
    Invalid(String),
}

/// The first 24 header bytes (the part both CRCs cover).
fn header_prefix(length: u64, sequence: u64) -> [u8; RH_HEADER_CRC] {
    let mut b = [0u8; RH_HEADER_CRC];
    b[RH_MAGIC..RH_VERSION].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
    b[RH_VERSION..RH_FLAGS].copy_from_slice(&RECORD_VERSION.to_le_bytes());
    b[RH_FLAGS..RH_LENGTH].copy_from_slice(&0u16.to_le_bytes());
    b[RH_LENGTH..RH_SEQUENCE].copy_from_slice(&length.to_le_bytes());
    b[RH_SEQUENCE..RH_HEADER_CRC].copy_from_slice(&sequence.to_le_bytes());
    b
}

/// The record CRC, CRC32C(payload ++ header prefix), from the CRC32C of the payload alone.
pub fn record_crc(length: u64, sequence: u64, payload_crc: u32) -> u32 {
    let prefix = header_prefix(length, sequence);
    crc32c::crc32c_append(payload_crc, &prefix)
}

impl RecordHeader {
    /// Encodes a header for a payload of `length` bytes whose own CRC32C is `payload_crc`.
    pub fn encode(length: u64, sequence: u64, payload_crc: u32) -> [u8; RECORD_HEADER_LEN as usize] {
        let prefix = header_prefix(length, sequence);
        let mut b = [0u8; RECORD_HEADER_LEN as usize];
        b[..RH_HEADER_CRC].copy_from_slice(&prefix);
        b[RH_HEADER_CRC..RH_CRC].copy_from_slice(&crc32c::crc32c(&prefix).to_le_bytes());
        b[RH_CRC..RH_END].copy_from_slice(&record_crc(length, sequence, payload_crc).to_le_bytes());
        b
    }

    /// Decodes the header at `offset` of `segment` (the whole mapped segment) and checks
    /// magic, version, flags, header CRC and that the record fits in the segment.
    /// Does not look at the payload.
    pub fn decode_at(segment: &[u8], offset: u64) -> Result<RecordHeader, HeaderProblem> {
        let size = segment.len() as u64;
        if offset.checked_add(RECORD_HEADER_LEN).is_none_or(|e| e > size) {
            return Err(HeaderProblem::Empty);
        }
        let b = &segment[offset as usize..(offset + RECORD_HEADER_LEN) as usize];
        let magic = u32_at(b, RH_MAGIC);
        if magic == 0 {
            return Err(HeaderProblem::Empty);
        }
        if magic != RECORD_MAGIC {
            return Err(HeaderProblem::Invalid(format!("bad record magic {magic:#010x}")));
        }
        if u32_at(b, RH_HEADER_CRC) != crc32c::crc32c(&b[..RH_HEADER_CRC]) {
            return Err(HeaderProblem::Invalid("record header checksum mismatch".into()));
        }
        let version = u16_at(b, RH_VERSION);
        if version != RECORD_VERSION {
            return Err(HeaderProblem::Invalid(format!("unsupported record version {version}")));
        }
        let flags = u16_at(b, RH_FLAGS);
        if flags != 0 {
            return Err(HeaderProblem::Invalid(format!("unknown record flags {flags:#06x}")));
        }
        let length = u64_at(b, RH_LENGTH);
        let fits = length
            .checked_add(RECORD_HEADER_LEN + RECORD_ALIGN)
            .and_then(|_| offset.checked_add(record_span(length)))
            .is_some_and(|end| end <= size);
        if !fits {
            return Err(HeaderProblem::Invalid(format!("record length {length} runs past the segment end")));
        }
        Ok(RecordHeader { length, sequence: u64_at(b, RH_SEQUENCE), crc: u32_at(b, RH_CRC) })
    }

    /// Verifies the record CRC against `payload`.
    pub fn verify(&self, payload: &[u8]) -> bool {
        debug_assert_eq!(payload.len() as u64, self.length);
        record_crc(self.length, self.sequence, crc32c::crc32c(payload)) == self.crc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_skips_to_next_multiple() {
        let mut bytes = vec![0u8; 2048];
        assert_eq!(skip_padding(&bytes, 64), Some(512));
        assert_eq!(skip_padding(&bytes, 520), Some(1024));
        assert_eq!(skip_padding(&bytes, 512), None, "already on a multiple");
        assert_eq!(skip_padding(&bytes, 1600), None, "no room for a header after 2048");
        bytes[700] = 1;
        assert_eq!(skip_padding(&bytes, 600), None, "padding holds data");
    }

    #[test]
    fn segment_header_round_trip_and_rejects_damage() {
        let h = SegmentHeader { id: 42, size: 8192, created_ms: 1_700_000_000_000 };
        let mut b = h.encode();
        assert_eq!(&b[..8], b"NECTSEG\0");
        assert_eq!(SegmentHeader::decode(&b), Ok(h));
        b[20] ^= 1;
        assert!(SegmentHeader::decode(&b).is_err());
        assert!(SegmentHeader::decode(&[0u8; 64]).is_err());
    }

    #[test]
    fn record_header_layout_and_crc() {
        let payload = b"hello, segment";
        let mut seg = vec![0u8; 128];
        let h = RecordHeader::encode(payload.len() as u64, 7, crc32c::crc32c(payload));
        assert_eq!(&h[..4], b"NREC");
        seg[8..40].copy_from_slice(&h);
        seg[40..40 + payload.len()].copy_from_slice(payload);
        let d = RecordHeader::decode_at(&seg, 8).unwrap();
        assert_eq!((d.length, d.sequence), (payload.len() as u64, 7));
        assert!(d.verify(payload));
        // The record CRC is crc32c(payload ++ header[0..24]).
        let mut whole = payload.to_vec();
        whole.extend_from_slice(&h[..24]);
        assert_eq!(d.crc, crc32c::crc32c(&whole));
        assert!(!d.verify(b"hello, segmenT"));
        assert_eq!(RecordHeader::decode_at(&seg, 64), Err(HeaderProblem::Empty));
        assert_eq!(RecordHeader::decode_at(&seg, 120), Err(HeaderProblem::Empty));
        // Length past the end.
        let big = RecordHeader::encode(1000, 1, 0);
        seg[8..40].copy_from_slice(&big);
        assert!(matches!(RecordHeader::decode_at(&seg, 8), Err(HeaderProblem::Invalid(_))));
        let huge = RecordHeader::encode(u64::MAX - 3, 1, 0);
        seg[8..40].copy_from_slice(&huge);
        assert!(matches!(RecordHeader::decode_at(&seg, 8), Err(HeaderProblem::Invalid(_))));
    }

    #[test]
    fn sizes() {
        assert_eq!(align8(0), 0);
        assert_eq!(align8(1), 8);
        assert_eq!(align8(8), 8);
        assert_eq!(record_span(13), 48);
        assert_eq!(segment_size_for(10_000), 12_288);
        let loc = crate::Location { segment: 1, offset: 64, length: 13 };
        assert_eq!(record_end(&loc), 112);
    }
}
