//! Attribute scanning of a data set held in memory (PS3.5 section 7).
//!
//! [`scan_attributes`] walks the top-level elements of an encoded data set
//! and keeps the raw values of the attributes the manifest indexes
//! ([`INDEXED_TAGS`]). It allocates nothing per skipped element, skips
//! sequences without looking inside defined-length ones, and stops at the
//! first tag after the last indexed one (so before Pixel Data). Malformed
//! input gives a [`ScanError`], never a panic or an endless loop: every
//! step moves forward by at least one element header and sequence nesting is
//! limited to [`MAX_DEPTH`].

mod attributes;
mod deflate;

pub use attributes::ScannedAttributes;

use std::fmt;

/// A data element tag: `(group << 16) | element`.
pub type Tag = u32;

/// A value representation, as its two ASCII letters.
pub type Vr = [u8; 2];

/// Tags of the indexed attributes.
pub mod tags {
    use super::Tag;

    pub const SPECIFIC_CHARACTER_SET: Tag = 0x0008_0005;
    pub const SOP_CLASS_UID: Tag = 0x0008_0016;
    pub const SOP_INSTANCE_UID: Tag = 0x0008_0018;
    pub const STUDY_DATE: Tag = 0x0008_0020;
    pub const SERIES_DATE: Tag = 0x0008_0021;
    pub const STUDY_TIME: Tag = 0x0008_0030;
    pub const SERIES_TIME: Tag = 0x0008_0031;
    pub const ACCESSION_NUMBER: Tag = 0x0008_0050;
    pub const MODALITY: Tag = 0x0008_0060;
    pub const INSTITUTION_NAME: Tag = 0x0008_0080;
    pub const REFERRING_PHYSICIAN_NAME: Tag = 0x0008_0090;
    pub const TIMEZONE_OFFSET_FROM_UTC: Tag = 0x0008_0201;
    pub const STUDY_DESCRIPTION: Tag = 0x0008_1030;
    pub const SERIES_DESCRIPTION: Tag = 0x0008_103E;
    pub const PATIENT_NAME: Tag = 0x0010_0010;
    pub const PATIENT_ID: Tag = 0x0010_0020;
    pub const ISSUER_OF_PATIENT_ID: Tag = 0x0010_0021;
    pub const PATIENT_BIRTH_DATE: Tag = 0x0010_0030;
    pub const PATIENT_SEX: Tag = 0x0010_0040;
    pub const STUDY_INSTANCE_UID: Tag = 0x0020_000D;
    pub const SERIES_INSTANCE_UID: Tag = 0x0020_000E;
    pub const STUDY_ID: Tag = 0x0020_0010;
    pub const SERIES_NUMBER: Tag = 0x0020_0011;
    pub const INSTANCE_NUMBER: Tag = 0x0020_0013;
    pub const NUMBER_OF_FRAMES: Tag = 0x0028_0008;
    pub const ROWS: Tag = 0x0028_0010;
    pub const COLUMNS: Tag = 0x0028_0011;
    pub const BITS_ALLOCATED: Tag = 0x0028_0100;
    pub const PERFORMED_PROCEDURE_STEP_START_DATE: Tag = 0x0040_0244;
    pub const PERFORMED_PROCEDURE_STEP_START_TIME: Tag = 0x0040_0245;
}

/// The indexed attributes in ascending tag order, with their dictionary VR
/// (used for Implicit VR data sets and for values sent as UN).
const INDEXED: [(Tag, Vr); 30] = {
    use tags::*;
    [
        (SPECIFIC_CHARACTER_SET, *b"CS"),
        (SOP_CLASS_UID, *b"UI"),
        (SOP_INSTANCE_UID, *b"UI"),
        (STUDY_DATE, *b"DA"),
        (SERIES_DATE, *b"DA"),
        (STUDY_TIME, *b"TM"),
        (SERIES_TIME, *b"TM"),
        (ACCESSION_NUMBER, *b"SH"),
        (MODALITY, *b"CS"),
        (INSTITUTION_NAME, *b"LO"),
        (REFERRING_PHYSICIAN_NAME, *b"PN"),
        (TIMEZONE_OFFSET_FROM_UTC, *b"SH"),
        (STUDY_DESCRIPTION, *b"LO"),
        (SERIES_DESCRIPTION, *b"LO"),
        (PATIENT_NAME, *b"PN"),
        (PATIENT_ID, *b"LO"),
        (ISSUER_OF_PATIENT_ID, *b"LO"),
        (PATIENT_BIRTH_DATE, *b"DA"),
        (PATIENT_SEX, *b"CS"),
        (STUDY_INSTANCE_UID, *b"UI"),
        (SERIES_INSTANCE_UID, *b"UI"),
        (STUDY_ID, *b"SH"),
        (SERIES_NUMBER, *b"IS"),
        (INSTANCE_NUMBER, *b"IS"),
        (NUMBER_OF_FRAMES, *b"IS"),
        (ROWS, *b"US"),
        (COLUMNS, *b"US"),
        (BITS_ALLOCATED, *b"US"),
        (PERFORMED_PROCEDURE_STEP_START_DATE, *b"DA"),
        (PERFORMED_PROCEDURE_STEP_START_TIME, *b"TM"),
    ]
};
const INDEXED_COUNT: usize = INDEXED.len();

const fn indexed_tags() -> [Tag; INDEXED_COUNT] {
    let mut tags = [0; INDEXED_COUNT];
    let mut i = 0;
    while i < INDEXED_COUNT {
        tags[i] = INDEXED[i].0;
        i += 1;
    }
    tags
}

/// The top-level attributes the manifest indexes (those QIDO-RS and C-FIND
/// match on and return, PS3.18 section 6.7.1 tables 6.7.1-1 and 6.7.1-2), in
/// ascending order:
/// SpecificCharacterSet (0008,0005), SOPClassUID (0008,0016), SOPInstanceUID
/// (0008,0018), StudyDate (0008,0020), SeriesDate (0008,0021), StudyTime
/// (0008,0030), SeriesTime (0008,0031), AccessionNumber (0008,0050), Modality
/// (0008,0060), InstitutionName (0008,0080), ReferringPhysicianName
/// (0008,0090), TimezoneOffsetFromUTC (0008,0201), StudyDescription
/// (0008,1030), SeriesDescription (0008,103E), PatientName (0010,0010),
/// PatientID (0010,0020), IssuerOfPatientID (0010,0021), PatientBirthDate
/// (0010,0030), PatientSex (0010,0040), StudyInstanceUID (0020,000D),
/// SeriesInstanceUID (0020,000E), StudyID (0020,0010), SeriesNumber
/// (0020,0011), InstanceNumber (0020,0013), NumberOfFrames (0028,0008), Rows
/// (0028,0010), Columns (0028,0011), BitsAllocated (0028,0100),
/// PerformedProcedureStepStartDate (0040,0244), PerformedProcedureStepStartTime
/// (0040,0245).
pub const INDEXED_TAGS: &[Tag] = &indexed_tags();

const LAST_INDEXED: Tag = INDEXED[INDEXED_COUNT - 1].0;
const ITEM: Tag = 0xFFFE_E000;
const ITEM_DELIMITATION: Tag = 0xFFFE_E00D;
const SEQUENCE_DELIMITATION: Tag = 0xFFFE_E0DD;
const UNDEFINED_LENGTH: u32 = 0xFFFF_FFFF;

/// Deepest sequence nesting [`scan_attributes`] follows.
pub const MAX_DEPTH: usize = 16;

/// Longest value of an indexed attribute that is accepted (all of them are
/// short strings or numbers; this bounds what garbage lengths can make the
/// deflate path buffer).
pub const MAX_INDEXED_VALUE_LEN: u32 = 1 << 20;

/// Bit `g` is set when an indexed tag is in group `g` (all of them are below 128).
const INDEXED_GROUPS: u128 = {
    let mut groups = 0u128;
    let mut i = 0;
    while i < INDEXED_COUNT {
        let group = INDEXED[i].0 >> 16;
        assert!(group < 128, "indexed groups must fit the mask");
        groups |= 1 << group;
        i += 1;
    }
    groups
};

/// Returns the position of `tag` in [`INDEXED_TAGS`]. Most elements of a data
/// set are in groups without an indexed tag, and a mask check skips the search.
#[inline]
fn indexed_slot(tag: Tag) -> Option<usize> {
    let group = tag >> 16;
    if group >= 128 || INDEXED_GROUPS & (1 << group) == 0 {
        return None;
    }
    INDEXED_TAGS.binary_search(&tag).ok()
}

/// The encoding of a data set (PS3.5 section 10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatasetEncoding {
    ImplicitVrLittleEndian,
    ExplicitVrLittleEndian,
    ExplicitVrBigEndian,
    DeflatedExplicitVrLittleEndian,
}

impl DatasetEncoding {
    /// The encoding of data sets in the given transfer syntax (trailing
    /// NUL/space padding ignored). Encapsulated syntaxes (JPEG, JPEG-LS,
    /// JPEG 2000, HTJ2K, JPEG XL, RLE, MPEG-2/4, HEVC, JPIP, deflated image
    /// frames, encapsulated uncompressed) are Explicit VR Little Endian, the
    /// JPIP "Referenced Deflate" ones deflated. Unknown UIDs give `None`.
    pub fn for_transfer_syntax(uid: &str) -> Option<Self> {
        use DatasetEncoding::*;
        let uid = uid.trim_end_matches(['\0', ' ']);
        let rest = uid.strip_prefix("1.2.840.10008.1.2")?;
        Some(match rest {
            "" => ImplicitVrLittleEndian,
            ".1" => ExplicitVrLittleEndian,
            ".1.99" => DeflatedExplicitVrLittleEndian,
            ".2" => ExplicitVrBigEndian,
            // Encapsulated Uncompressed Explicit VR Little Endian.
            ".1.98" => ExplicitVrLittleEndian,
            // RLE Lossless.
            ".5" => ExplicitVrLittleEndian,
            // Deflated Image Frame Compression.
            ".8.1" => ExplicitVrLittleEndian,
            _ => {
                let number = rest.strip_prefix(".4.")?;
                match number {
                    // JPIP Referenced Deflate, JPIP HTJ2K Referenced Deflate.
                    "95" | "205" => DeflatedExplicitVrLittleEndian,
                    // JPEG baseline/extended/lossless and retired processes.
                    "50" | "51" | "52" | "53" | "54" | "55" | "56" | "57" | "58" | "59" | "60"
                    | "61" | "62" | "63" | "64" | "65" | "66" | "70"
                    // JPEG-LS.
                    | "80" | "81"
                    // JPEG 2000, JPEG 2000 Part 2, JPIP.
                    | "90" | "91" | "92" | "93" | "94"
                    // MPEG-2, MPEG-4 AVC/H.264, HEVC/H.265 and their fragmentable forms.
                    | "100" | "100.1" | "101" | "101.1" | "102" | "102.1" | "103" | "103.1"
                    | "104" | "104.1" | "105" | "105.1" | "106" | "106.1" | "107" | "108"
                    // JPEG XL.
                    | "110" | "111" | "112"
                    // High-Throughput JPEG 2000, JPIP HTJ2K Referenced.
                    | "201" | "202" | "203" | "204" => ExplicitVrLittleEndian,
                    _ => return None,
                }
            }
        })
    }
}

/// The reason a data set could not be scanned. Offsets are byte offsets into the
/// data set (for the deflated encoding, into the inflated stream).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    /// The data ends inside an element header.
    #[error("truncated element header at offset {offset}{}", tag.map(|t| format!(" (tag {})", TagFmt(t))).unwrap_or_default())]
    TruncatedHeader { offset: usize, tag: Option<Tag> },
    /// A defined length runs past the end of the data.
    #[error("element {} at offset {offset}: length {length} runs past the end of the data", TagFmt(*tag))]
    ValueOutOfBounds {
        offset: usize,
        tag: Tag,
        length: u32,
    },
    /// An explicit VR that is not a DICOM VR.
    #[error("element {} at offset {offset}: invalid VR {:?}", TagFmt(*tag), String::from_utf8_lossy(vr))]
    InvalidVr { offset: usize, tag: Tag, vr: Vr },
    /// Undefined length on an element that cannot have it (PS3.5 section 7.1).
    #[error("element {} at offset {offset}: undefined length not allowed", TagFmt(*tag))]
    UndefinedLength { offset: usize, tag: Tag },
    /// An item or delimiter where a data element was expected, or anything
    /// other than an item or a sequence delimiter inside a sequence.
    #[error("unexpected tag {} at offset {offset}", TagFmt(*tag))]
    UnexpectedTag { offset: usize, tag: Tag },
    /// The data ends inside the undefined-length sequence or item `tag`.
    #[error("data ends at offset {offset} inside the undefined-length sequence {}", TagFmt(*tag))]
    UnterminatedSequence { offset: usize, tag: Tag },
    /// Sequences nested deeper than [`MAX_DEPTH`].
    #[error("sequence {} at offset {offset} nested deeper than {MAX_DEPTH}", TagFmt(*tag))]
    TooDeep { offset: usize, tag: Tag },
    /// An indexed attribute longer than [`MAX_INDEXED_VALUE_LEN`].
    #[error("element {} at offset {offset}: length {length} is too long for an indexed attribute", TagFmt(*tag))]
    ValueTooLong {
        offset: usize,
        tag: Tag,
        length: u32,
    },
    /// The deflate stream is corrupt.
    #[error("corrupt deflate stream at inflated offset {offset}: {message}")]
    Inflate { offset: usize, message: String },
}

struct TagFmt(Tag);

impl fmt::Display for TagFmt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({:04X},{:04X})", self.0 >> 16, self.0 & 0xFFFF)
    }
}

/// Scans top-level elements in ascending tag order and keeps the
/// INDEXED_TAGS; skips sequences (defined and undefined length, with items
/// and delimiters). After the last indexed tag, or at Pixel Data (7FE0,0010),
/// it only walks the remaining element headers to check that the last
/// element ends where the data set ends. For the deflated syntax it inflates
/// (raw deflate, flate2) only as much of the stream as the scan needs and
/// does not walk the rest.
///
/// Group 0002 elements inside the data set are skipped (they are read as
/// Explicit VR Little Endian whatever the data set's encoding). Odd defined
/// lengths are tolerated. A data set that ends cleanly between elements
/// before the last indexed tag is fine: absent attributes are simply absent.
pub fn scan_attributes(
    dataset: &[u8],
    encoding: DatasetEncoding,
) -> Result<ScannedAttributes, ScanError> {
    match encoding {
        DatasetEncoding::ImplicitVrLittleEndian => {
            scan(&mut SliceSource(dataset), Enc::IMPLICIT_LE)
        }
        DatasetEncoding::ExplicitVrLittleEndian => {
            scan(&mut SliceSource(dataset), Enc::EXPLICIT_LE)
        }
        DatasetEncoding::ExplicitVrBigEndian => scan(&mut SliceSource(dataset), Enc::EXPLICIT_BE),
        DatasetEncoding::DeflatedExplicitVrLittleEndian => {
            scan(&mut deflate::InflateSource::new(dataset), Enc::EXPLICIT_LE)
        }
    }
}

/// The source the scanner reads from. The scanner only moves forward: after
/// requesting bytes at `pos` it never requests bytes before `pos` again, so a
/// streaming source may drop them.
trait Source {
    /// The bytes `[pos, pos + n)`, or `None` when the data ends before.
    fn get(&mut self, pos: usize, n: usize) -> Result<Option<&[u8]>, ScanError>;
    /// Whether the data is at least `pos` bytes long.
    fn reaches(&mut self, pos: usize) -> Result<bool, ScanError>;
    /// Whether the data is exactly `pos` bytes long (or shorter).
    fn ends_at(&mut self, pos: usize) -> Result<bool, ScanError>;
    /// The total length, if known without reading ahead.
    fn known_len(&self) -> Option<usize>;
}

struct SliceSource<'a>(&'a [u8]);

impl Source for SliceSource<'_> {
    #[inline]
    fn get(&mut self, pos: usize, n: usize) -> Result<Option<&[u8]>, ScanError> {
        Ok(pos.checked_add(n).and_then(|end| self.0.get(pos..end)))
    }
    #[inline]
    fn reaches(&mut self, pos: usize) -> Result<bool, ScanError> {
        Ok(pos <= self.0.len())
    }
    #[inline]
    fn ends_at(&mut self, pos: usize) -> Result<bool, ScanError> {
        Ok(pos >= self.0.len())
    }
    fn known_len(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

/// Byte order and VR explicitness of the elements being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Enc {
    explicit: bool,
    big: bool,
}

impl Enc {
    const IMPLICIT_LE: Enc = Enc {
        explicit: false,
        big: false,
    };
    const EXPLICIT_LE: Enc = Enc {
        explicit: true,
        big: false,
    };
    const EXPLICIT_BE: Enc = Enc {
        explicit: true,
        big: true,
    };

    #[inline]
    fn u16(self, b: [u8; 2]) -> u16 {
        if self.big {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        }
    }
    #[inline]
    fn u32(self, b: [u8; 4]) -> u32 {
        if self.big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    }
    #[inline]
    fn tag(self, b: &[u8; 8]) -> Tag {
        (u32::from(self.u16([b[0], b[1]])) << 16) | u32::from(self.u16([b[2], b[3]]))
    }
}

/// The VRs defined in PS3.5 section 6.2.
const KNOWN_VRS: [&[u8; 2]; 34] = [
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"OB",
    b"OD", b"OF", b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM",
    b"UC", b"UI", b"UL", b"UN", b"UR", b"US", b"UT", b"UV",
];

/// VRs with 2 reserved bytes and a 4-byte length in Explicit VR (PS3.5
/// section 7.1.2).
const LONG_LENGTH_VRS: [&[u8; 2]; 13] = [
    b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV",
];

/// A set of VRs: bit `second - b'A'` of entry `first - b'A'`.
type VrSet = [u32; 26];

const fn vr_set(vrs: &[&[u8; 2]]) -> VrSet {
    let mut set = [0u32; 26];
    let mut i = 0;
    while i < vrs.len() {
        set[(vrs[i][0] - b'A') as usize] |= 1 << (vrs[i][1] - b'A');
        i += 1;
    }
    set
}

const KNOWN_VR_SET: VrSet = vr_set(&KNOWN_VRS);
const LONG_LENGTH_VR_SET: VrSet = vr_set(&LONG_LENGTH_VRS);

/// Returns whether `vr` is in `set`. Every scanned element needs this once or
/// twice, so it is a table lookup rather than a comparison with each VR.
#[inline]
fn in_vr_set(set: &VrSet, vr: Vr) -> bool {
    let first = vr[0].wrapping_sub(b'A');
    let second = vr[1].wrapping_sub(b'A');
    first < 26 && second < 26 && set[first as usize] & (1 << second) != 0
}

/// Returns whether two bytes are a VR defined in PS3.5 section 6.2.
#[inline]
pub(crate) fn is_known_vr(vr: Vr) -> bool {
    in_vr_set(&KNOWN_VR_SET, vr)
}

/// Returns whether `vr` has 2 reserved bytes and a 4-byte length in Explicit
/// VR (PS3.5 section 7.1.2).
#[inline]
pub(crate) fn has_long_length(vr: Vr) -> bool {
    in_vr_set(&LONG_LENGTH_VR_SET, vr)
}

struct Header {
    tag: Tag,
    /// The explicit VR, or for Implicit VR the dictionary VR of indexed tags
    /// (`None` for items, delimiters and other implicit elements).
    vr: Option<Vr>,
    length: u32,
    value_pos: usize,
    /// The encoding this element was read with (differs from the data set's
    /// for group 0002 elements).
    enc: Enc,
}

impl Header {
    /// Whether an undefined length is legal here: any implicit element
    /// (a sequence or item list), or SQ, UN, OB, OW in Explicit VR.
    fn undefined_length_allowed(&self) -> bool {
        !self.enc.explicit || matches!(self.vr.as_ref(), Some(b"SQ" | b"UN" | b"OB" | b"OW"))
    }

    /// Encoding of the items of an undefined-length value: UN contents are
    /// Implicit VR Little Endian (PS3.5 section 6.2.2).
    fn inner_enc(&self) -> Enc {
        if self.enc.explicit && self.vr.as_ref() == Some(b"UN") {
            Enc::IMPLICIT_LE
        } else {
            self.enc
        }
    }
}

#[inline]
fn read_header<S: Source>(
    src: &mut S,
    pos: usize,
    enc: Enc,
    top_level: bool,
) -> Result<Option<Header>, ScanError> {
    if src.ends_at(pos)? {
        return Ok(None);
    }
    let Some(bytes) = src.get(pos, 8)? else {
        let tag = src
            .get(pos, 4)?
            .map(|b| enc.tag(&[b[0], b[1], b[2], b[3], 0, 0, 0, 0]));
        return Err(ScanError::TruncatedHeader { offset: pos, tag });
    };
    let mut b = [0u8; 8];
    b.copy_from_slice(bytes);

    let mut enc = enc;
    // Group 0002 is always Explicit VR Little Endian (PS3.10 section 7.1).
    if top_level
        && b[0] == 0x02
        && b[1] == 0x00
        && enc != Enc::EXPLICIT_LE
        && is_known_vr([b[4], b[5]])
    {
        enc = Enc::EXPLICIT_LE;
    }
    let tag = enc.tag(&b);
    if tag >> 16 == 0xFFFE {
        // Items and delimiters: tag and 4-byte length in every encoding.
        let length = enc.u32([b[4], b[5], b[6], b[7]]);
        return Ok(Some(Header {
            tag,
            vr: None,
            length,
            value_pos: pos + 8,
            enc,
        }));
    }
    if !enc.explicit {
        let vr = indexed_slot(tag).map(|slot| INDEXED[slot].1);
        let length = enc.u32([b[4], b[5], b[6], b[7]]);
        return Ok(Some(Header {
            tag,
            vr,
            length,
            value_pos: pos + 8,
            enc,
        }));
    }
    let vr = [b[4], b[5]];
    if !is_known_vr(vr) {
        return Err(ScanError::InvalidVr {
            offset: pos,
            tag,
            vr,
        });
    }
    if has_long_length(vr) {
        let Some(l) = src.get(pos + 8, 4)? else {
            return Err(ScanError::TruncatedHeader {
                offset: pos,
                tag: Some(tag),
            });
        };
        let length = enc.u32([l[0], l[1], l[2], l[3]]);
        Ok(Some(Header {
            tag,
            vr: Some(vr),
            length,
            value_pos: pos + 12,
            enc,
        }))
    } else {
        let length = u32::from(enc.u16([b[6], b[7]]));
        Ok(Some(Header {
            tag,
            vr: Some(vr),
            length,
            value_pos: pos + 8,
            enc,
        }))
    }
}

/// End of a defined-length value, checked against the data.
#[inline]
fn value_end<S: Source>(src: &mut S, pos: usize, h: &Header) -> Result<usize, ScanError> {
    let out_of_bounds = ScanError::ValueOutOfBounds {
        offset: pos,
        tag: h.tag,
        length: h.length,
    };
    let end = h
        .value_pos
        .checked_add(h.length as usize)
        .ok_or_else(|| out_of_bounds.clone())?;
    if src.reaches(end)? {
        Ok(end)
    } else {
        Err(out_of_bounds)
    }
}

/// Some writers declare one VR encoding and use the other (pydicom's test
/// files have examples). Looking at the first element after any group 0002
/// ones: declared Explicit VR whose VR bytes are not a VR but whose implicit
/// reading is plausible is read as Implicit VR, and declared Implicit VR
/// whose bytes 4-5 are a VR and whose implicit length would run past the
/// data is read as Explicit VR. Big endian data sets are taken as declared.
fn sniff_vr_encoding<S: Source>(src: &mut S, pos: usize, declared: Enc) -> Result<Enc, ScanError> {
    if declared.big {
        return Ok(declared);
    }
    let Some(b) = src.get(pos, 8)? else {
        return Ok(declared);
    };
    let vr_like = is_known_vr([b[4], b[5]]);
    let implicit_length = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let group = u16::from_le_bytes([b[0], b[1]]);
    // Whether an implicit reading of the length stays within the data (when
    // the source knows its length without inflating it all).
    let implicit_fits = match src.known_len() {
        _ if implicit_length == UNDEFINED_LENGTH => true,
        Some(len) => (pos + 8)
            .checked_add(implicit_length as usize)
            .is_some_and(|end| end <= len),
        None => true,
    };
    if declared.explicit {
        let plausible_tag = group >= 0x0008 && group != 0xFFFE;
        if !vr_like && plausible_tag && implicit_fits {
            return Ok(Enc::IMPLICIT_LE);
        }
    } else if vr_like && !implicit_fits {
        return Ok(Enc::EXPLICIT_LE);
    }
    Ok(declared)
}

fn scan<S: Source>(src: &mut S, declared: Enc) -> Result<ScannedAttributes, ScanError> {
    let mut found = ScannedAttributes::new(declared.big);
    let mut pos = 0;
    let mut enc = declared;
    let mut sniffed = false;
    loop {
        if !sniffed {
            // Wait for the first element outside group 0002.
            match src.get(pos, 2)? {
                Some(&[0x02, 0x00]) => {}
                Some(_) => {
                    enc = sniff_vr_encoding(src, pos, declared)?;
                    sniffed = true;
                }
                None => {}
            }
        }
        let Some(h) = read_header(src, pos, enc, true)? else {
            break;
        };
        // Also stops at Pixel Data and at stray items or delimiters
        // (group FFFE), which sort after every indexed tag.
        if h.tag > LAST_INDEXED {
            // A deflated stream is inflated only as far as the scan needs, so
            // its rest is not walked.
            if src.known_len().is_some() {
                check_rest(src, pos, enc)?;
            }
            break;
        }
        let slot = indexed_slot(h.tag);
        if h.length == UNDEFINED_LENGTH {
            if slot.is_some() || !h.undefined_length_allowed() {
                return Err(ScanError::UndefinedLength {
                    offset: pos,
                    tag: h.tag,
                });
            }
            pos = skip_sequence(src, h.value_pos, h.inner_enc(), 1, h.tag)?;
            continue;
        }
        match slot {
            Some(slot) => {
                if h.length > MAX_INDEXED_VALUE_LEN {
                    return Err(ScanError::ValueTooLong {
                        offset: pos,
                        tag: h.tag,
                        length: h.length,
                    });
                }
                let vr = h.vr.unwrap_or(INDEXED[slot].1);
                let Some(value) = src.get(h.value_pos, h.length as usize)? else {
                    return Err(ScanError::ValueOutOfBounds {
                        offset: pos,
                        tag: h.tag,
                        length: h.length,
                    });
                };
                found.store(slot, vr, value);
                pos = h.value_pos + h.length as usize;
            }
            None => pos = value_end(src, pos, &h)?,
        }
    }
    Ok(found)
}

/// Walks the top-level elements from `pos` to the end without keeping any,
/// so a data set whose last elements run past its end (a truncated file)
/// fails here rather than when it is read back. Values are skipped, not read.
fn check_rest<S: Source>(src: &mut S, mut pos: usize, enc: Enc) -> Result<(), ScanError> {
    while let Some(h) = read_header(src, pos, enc, true)? {
        if h.tag >> 16 == 0xFFFE {
            return Err(ScanError::UnexpectedTag { offset: pos, tag: h.tag });
        }
        pos = if h.length == UNDEFINED_LENGTH {
            if !h.undefined_length_allowed() {
                return Err(ScanError::UndefinedLength { offset: pos, tag: h.tag });
            }
            skip_sequence(src, h.value_pos, h.inner_enc(), 1, h.tag)?
        } else {
            value_end(src, pos, &h)?
        };
    }
    Ok(())
}

/// Skips the items of an undefined-length sequence (or encapsulated value)
/// starting at `pos`, up to and including its sequence delimitation item.
/// Returns the position after it.
fn skip_sequence<S: Source>(
    src: &mut S,
    mut pos: usize,
    enc: Enc,
    depth: usize,
    seq: Tag,
) -> Result<usize, ScanError> {
    if depth > MAX_DEPTH {
        return Err(ScanError::TooDeep {
            offset: pos,
            tag: seq,
        });
    }
    loop {
        let Some(bytes) = src.get(pos, 8)? else {
            return Err(ScanError::UnterminatedSequence {
                offset: pos,
                tag: seq,
            });
        };
        let mut b = [0u8; 8];
        b.copy_from_slice(bytes);
        let tag = enc.tag(&b);
        let length = enc.u32([b[4], b[5], b[6], b[7]]);
        match tag {
            ITEM if length == UNDEFINED_LENGTH => pos = skip_item(src, pos + 8, enc, depth, seq)?,
            ITEM => {
                let h = Header {
                    tag,
                    vr: None,
                    length,
                    value_pos: pos + 8,
                    enc,
                };
                pos = value_end(src, pos, &h)?;
            }
            SEQUENCE_DELIMITATION => return Ok(pos + 8),
            _ => return Err(ScanError::UnexpectedTag { offset: pos, tag }),
        }
    }
}

/// Skips the elements of an undefined-length item up to and including its
/// item delimitation item. Returns the position after it.
fn skip_item<S: Source>(
    src: &mut S,
    mut pos: usize,
    enc: Enc,
    depth: usize,
    seq: Tag,
) -> Result<usize, ScanError> {
    loop {
        let Some(h) = read_header(src, pos, enc, false)? else {
            return Err(ScanError::UnterminatedSequence {
                offset: pos,
                tag: seq,
            });
        };
        match h.tag {
            ITEM_DELIMITATION => return Ok(h.value_pos),
            ITEM | SEQUENCE_DELIMITATION => {
                return Err(ScanError::UnexpectedTag {
                    offset: pos,
                    tag: h.tag,
                })
            }
            _ => {}
        }
        if h.length == UNDEFINED_LENGTH {
            if !h.undefined_length_allowed() {
                return Err(ScanError::UndefinedLength {
                    offset: pos,
                    tag: h.tag,
                });
            }
            pos = skip_sequence(src, h.value_pos, h.inner_enc(), depth + 1, h.tag)?;
        } else {
            pos = value_end(src, pos, &h)?;
        }
    }
}

#[cfg(test)]
mod tests;
