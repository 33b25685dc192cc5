use std::io::Write;

use super::tags::*;
use super::*;

/// Hand-built data sets in any of the four encodings.
#[derive(Clone)]
struct Builder {
    enc: Enc,
    buf: Vec<u8>,
}

const ALL: [DatasetEncoding; 4] = [
    DatasetEncoding::ImplicitVrLittleEndian,
    DatasetEncoding::ExplicitVrLittleEndian,
    DatasetEncoding::ExplicitVrBigEndian,
    DatasetEncoding::DeflatedExplicitVrLittleEndian,
];

fn enc_of(encoding: DatasetEncoding) -> Enc {
    match encoding {
        DatasetEncoding::ImplicitVrLittleEndian => Enc::IMPLICIT_LE,
        DatasetEncoding::ExplicitVrBigEndian => Enc::EXPLICIT_BE,
        _ => Enc::EXPLICIT_LE,
    }
}

impl Builder {
    fn new(encoding: DatasetEncoding) -> Self {
        Builder {
            enc: enc_of(encoding),
            buf: Vec::new(),
        }
    }
    fn with_enc(enc: Enc) -> Self {
        Builder {
            enc,
            buf: Vec::new(),
        }
    }
    fn u16(&mut self, v: u16) {
        let b = if self.enc.big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        self.buf.extend_from_slice(&b);
    }
    fn u32(&mut self, v: u32) {
        let b = if self.enc.big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        self.buf.extend_from_slice(&b);
    }
    fn tag(&mut self, tag: Tag) {
        self.u16((tag >> 16) as u16);
        self.u16(tag as u16);
    }
    /// Element header with the given length (may be UNDEFINED_LENGTH).
    fn header(&mut self, tag: Tag, vr: &[u8; 2], length: u32) -> &mut Self {
        self.tag(tag);
        if self.enc.explicit {
            self.buf.extend_from_slice(vr);
            if has_long_length(*vr) {
                self.buf.extend_from_slice(&[0, 0]);
                self.u32(length);
            } else {
                self.u16(length as u16);
            }
        } else {
            self.u32(length);
        }
        self
    }
    /// Element with the value as given (no padding added).
    fn raw(&mut self, tag: Tag, vr: &[u8; 2], value: &[u8]) -> &mut Self {
        self.header(tag, vr, value.len() as u32);
        self.buf.extend_from_slice(value);
        self
    }
    /// String element padded to even length with space (NUL for UI).
    fn str(&mut self, tag: Tag, vr: &[u8; 2], value: &str) -> &mut Self {
        let mut v = value.as_bytes().to_vec();
        if v.len() % 2 == 1 {
            v.push(if vr == b"UI" { 0 } else { b' ' });
        }
        self.raw(tag, vr, &v)
    }
    fn us(&mut self, tag: Tag, v: u16) -> &mut Self {
        let b = if self.enc.big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        self.raw(tag, b"US", &b)
    }
    fn item_delimiter(&mut self) -> &mut Self {
        self.tag(ITEM_DELIMITATION);
        self.u32(0);
        self
    }
    fn sequence_delimiter(&mut self) -> &mut Self {
        self.tag(SEQUENCE_DELIMITATION);
        self.u32(0);
        self
    }
    fn item(&mut self, length: u32) -> &mut Self {
        self.tag(ITEM);
        self.u32(length);
        self
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self
    }
    fn build(&self, encoding: DatasetEncoding) -> Vec<u8> {
        if encoding == DatasetEncoding::DeflatedExplicitVrLittleEndian {
            deflate(&self.buf)
        } else {
            self.buf.clone()
        }
    }
}

fn deflate(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A nested sequence with every kind of item: undefined-length sequence,
/// undefined-length item holding a defined-length SQ and another
/// undefined-length sequence, a defined-length item, an empty item.
fn nested_sequence(b: &mut Builder) {
    // Referenced Study Sequence (0008,1110) SQ, undefined length.
    b.header(0x0008_1110, b"SQ", UNDEFINED_LENGTH);
    b.item(UNDEFINED_LENGTH);
    b.str(0x0008_1150, b"UI", "1.2.3");
    // A defined-length sequence inside.
    let mut inner = Builder::with_enc(b.enc);
    inner.item(10);
    inner.str(0x0008_0100, b"SH", "AB");
    let inner = inner.buf;
    b.header(0x0008_1115, b"SQ", inner.len() as u32)
        .bytes(&inner);
    // An undefined-length sequence with an undefined-length item inside.
    b.header(0x0040_0275, b"SQ", UNDEFINED_LENGTH);
    b.item(UNDEFINED_LENGTH);
    // Content that looks like an indexed tag must not be picked up.
    b.str(PATIENT_NAME, b"PN", "Nested^Name");
    b.item_delimiter();
    b.sequence_delimiter();
    b.item_delimiter();
    // A defined-length item.
    let mut item = Builder::with_enc(b.enc);
    item.str(0x0008_1155, b"UI", "1.2.4");
    let item = item.buf;
    b.item(item.len() as u32).bytes(&item);
    // An empty item.
    b.item(0);
    b.sequence_delimiter();
}

fn sample(encoding: DatasetEncoding) -> Builder {
    let mut b = Builder::new(encoding);
    b.str(SPECIFIC_CHARACTER_SET, b"CS", "ISO_IR 100")
        .str(SOP_CLASS_UID, b"UI", "1.2.840.10008.5.1.4.1.1.2")
        .str(SOP_INSTANCE_UID, b"UI", "1.2.3.4.5.6.7")
        .str(STUDY_DATE, b"DA", "20240131")
        .str(MODALITY, b"CS", "CT")
        .raw(0x0009_0010, b"LO", b"PRIVATE ")
        .raw(0x0009_1001, b"OB", &[1, 2, 3, 4]);
    nested_sequence(&mut b);
    b.raw(PATIENT_NAME, b"PN", b"M\xfcller^J\xfcrgen ")
        .str(PATIENT_ID, b"LO", " ID42 ")
        .str(STUDY_INSTANCE_UID, b"UI", "1.2.3")
        .str(SERIES_NUMBER, b"IS", " 12 ")
        .str(INSTANCE_NUMBER, b"IS", "-3")
        .str(NUMBER_OF_FRAMES, b"IS", "")
        .us(ROWS, 512)
        .us(COLUMNS, 0x1234)
        .us(BITS_ALLOCATED, 16);
    b
}

fn check_sample(a: &ScannedAttributes) {
    assert_eq!(
        a.text(SPECIFIC_CHARACTER_SET).as_deref(),
        Some("ISO_IR 100")
    );
    assert_eq!(
        a.text(SOP_CLASS_UID).as_deref(),
        Some("1.2.840.10008.5.1.4.1.1.2")
    );
    assert_eq!(a.text(SOP_INSTANCE_UID).as_deref(), Some("1.2.3.4.5.6.7"));
    assert_eq!(a.raw(SOP_INSTANCE_UID), Some(&b"1.2.3.4.5.6.7\0"[..]));
    assert_eq!(a.text(STUDY_DATE).as_deref(), Some("20240131"));
    assert_eq!(a.text(MODALITY).as_deref(), Some("CT"));
    assert_eq!(a.text(PATIENT_NAME).as_deref(), Some("Müller^Jürgen"));
    assert_eq!(a.text(PATIENT_ID).as_deref(), Some("ID42"));
    assert_eq!(a.text(STUDY_INSTANCE_UID).as_deref(), Some("1.2.3"));
    assert_eq!(a.int(SERIES_NUMBER), Some(12));
    assert_eq!(a.uint(SERIES_NUMBER), Some(12));
    assert_eq!(a.int(INSTANCE_NUMBER), Some(-3));
    assert_eq!(a.uint(INSTANCE_NUMBER), None);
    assert_eq!(a.text(NUMBER_OF_FRAMES).as_deref(), Some(""));
    assert_eq!(a.uint(NUMBER_OF_FRAMES), None);
    assert_eq!(a.uint(ROWS), Some(512));
    assert_eq!(a.uint(COLUMNS), Some(0x1234));
    assert_eq!(a.text(COLUMNS).as_deref(), Some("4660"));
    assert_eq!(a.uint(BITS_ALLOCATED), Some(16));
    assert_eq!(a.text(SERIES_INSTANCE_UID), None);
    assert_eq!(a.raw(SERIES_INSTANCE_UID), None);
    assert_eq!(a.len(), 14);
}

#[test]
fn all_encodings() {
    for encoding in ALL {
        let data = sample(encoding).build(encoding);
        let a = scan_attributes(&data, encoding).unwrap_or_else(|e| panic!("{encoding:?}: {e}"));
        check_sample(&a);
        assert_eq!(a.vr(PATIENT_NAME), Some(*b"PN"));
    }
}

#[test]
fn after_the_last_indexed_tag_only_the_structure_is_checked() {
    for encoding in ALL {
        let deflated = encoding == DatasetEncoding::DeflatedExplicitVrLittleEndian;
        // Pixel data that ends where the data set ends: fine.
        let mut b = sample(encoding);
        b.raw(0x7FE0_0010, b"OW", &[0u8; 64]);
        check_sample(&scan_attributes(&b.build(encoding), encoding).unwrap());

        // Pixel data with a length far beyond the data (a truncated file).
        let mut b = sample(encoding);
        b.header(0x7FE0_0010, b"OW", 0x7FFF_FFF0).bytes(b"garbage");
        let scanned = scan_attributes(&b.build(encoding), encoding);
        if deflated {
            // The rest of a deflated stream is not inflated.
            check_sample(&scanned.unwrap());
        } else {
            let err = scanned.unwrap_err();
            assert!(matches!(err, ScanError::ValueOutOfBounds { tag: 0x7FE0_0010, .. }), "{encoding:?}: {err}");
        }

        // An element after the last indexed tag with a bad length.
        let mut b = sample(encoding);
        b.str(PERFORMED_PROCEDURE_STEP_START_TIME, b"TM", "101010")
            .header(0x0040_0246, b"LO", 0xFFF0)
            .bytes(b"x");
        let scanned = scan_attributes(&b.build(encoding), encoding);
        if deflated {
            let a = scanned.unwrap();
            assert_eq!(a.text(PERFORMED_PROCEDURE_STEP_START_TIME).as_deref(), Some("101010"));
        } else {
            assert!(matches!(scanned, Err(ScanError::ValueOutOfBounds { tag: 0x0040_0246, .. })), "{encoding:?}");
        }
    }
}

#[test]
fn garbage_tail_and_truncation() {
    for encoding in ALL {
        // A 3-byte tail after the last element.
        let mut b = sample(encoding);
        b.bytes(b"\x01\x02\x03");
        let err = scan_attributes(&b.build(encoding), encoding).unwrap_err();
        assert!(
            matches!(err, ScanError::TruncatedHeader { tag: None, .. }),
            "{encoding:?}: {err}"
        );

        // Any truncation of the sample never panics, and is either an error
        // or a clean end between elements.
        let full = sample(encoding).buf;
        for cut in 0..full.len() {
            let data = Builder {
                enc: enc_of(encoding),
                buf: full[..cut].to_vec(),
            }
            .build(encoding);
            let _ = scan_attributes(&data, encoding);
        }
    }
}

#[test]
fn length_past_the_end() {
    for encoding in ALL {
        let mut b = sample(encoding);
        b.header(PATIENT_SEX, b"CS", 100).bytes(b"M ");
        let err = scan_attributes(&b.build(encoding), encoding).unwrap_err();
        assert_eq!(
            err,
            ScanError::ValueOutOfBounds {
                offset: b.buf.len() - 10,
                tag: PATIENT_SEX,
                length: 100
            }
        );

        // A skipped element too.
        let mut b = Builder::new(encoding);
        b.header(0x0008_0070, b"LO", 0xFF00).bytes(b"ACME");
        let err = scan_attributes(&b.build(encoding), encoding).unwrap_err();
        assert!(
            matches!(
                err,
                ScanError::ValueOutOfBounds {
                    offset: 0,
                    tag: 0x0008_0070,
                    ..
                }
            ),
            "{err}"
        );

        // A defined-length item past the end of its sequence's data.
        let mut b = Builder::new(encoding);
        b.header(0x0008_1110, b"SQ", UNDEFINED_LENGTH)
            .item(1000)
            .bytes(&[0; 8]);
        let err = scan_attributes(&b.build(encoding), encoding).unwrap_err();
        assert!(
            matches!(err, ScanError::ValueOutOfBounds { tag: ITEM, .. }),
            "{err}"
        );

        // Data ends inside an undefined-length sequence.
        let mut b = Builder::new(encoding);
        b.header(0x0008_1110, b"SQ", UNDEFINED_LENGTH)
            .item(UNDEFINED_LENGTH)
            .str(0x0008_1150, b"UI", "1.2");
        let err = scan_attributes(&b.build(encoding), encoding).unwrap_err();
        assert!(
            matches!(
                err,
                ScanError::UnterminatedSequence {
                    tag: 0x0008_1110,
                    ..
                }
            ),
            "{err}"
        );
    }
}

#[test]
fn odd_lengths_are_tolerated() {
    for encoding in ALL {
        let mut b = Builder::new(encoding);
        b.raw(SOP_INSTANCE_UID, b"UI", b"1.2.3")
            .raw(0x0008_0070, b"LO", b"ACM")
            .raw(PATIENT_NAME, b"PN", b"Doe");
        let a = scan_attributes(&b.build(encoding), encoding).unwrap();
        assert_eq!(a.text(SOP_INSTANCE_UID).as_deref(), Some("1.2.3"));
        assert_eq!(a.text(PATIENT_NAME).as_deref(), Some("Doe"));
    }
}

#[test]
fn undefined_length_where_not_allowed() {
    for encoding in ALL {
        // An indexed attribute with undefined length.
        let mut b = Builder::new(encoding);
        b.header(PATIENT_ID, b"UT", UNDEFINED_LENGTH)
            .sequence_delimiter();
        let err = scan_attributes(&b.build(encoding), encoding).unwrap_err();
        assert_eq!(
            err,
            ScanError::UndefinedLength {
                offset: 0,
                tag: PATIENT_ID
            }
        );
    }
    // UT with undefined length in Explicit VR.
    let mut b = Builder::new(DatasetEncoding::ExplicitVrLittleEndian);
    b.header(0x0008_0070, b"UT", UNDEFINED_LENGTH)
        .sequence_delimiter();
    let err = scan_attributes(&b.buf, DatasetEncoding::ExplicitVrLittleEndian).unwrap_err();
    assert_eq!(
        err,
        ScanError::UndefinedLength {
            offset: 0,
            tag: 0x0008_0070
        }
    );
}

#[test]
fn unexpected_tags() {
    for encoding in ALL {
        // Something other than an item inside a sequence.
        let mut b = Builder::new(encoding);
        b.header(0x0008_1110, b"SQ", UNDEFINED_LENGTH)
            .str(0x0008_1150, b"UI", "1.2");
        let err = scan_attributes(&b.build(encoding), encoding).unwrap_err();
        assert!(
            matches!(
                err,
                ScanError::UnexpectedTag {
                    tag: 0x0008_1150,
                    ..
                }
            ),
            "{err}"
        );

        // A sequence delimiter where an item delimiter is due.
        let mut b = Builder::new(encoding);
        b.header(0x0008_1110, b"SQ", UNDEFINED_LENGTH)
            .item(UNDEFINED_LENGTH)
            .sequence_delimiter();
        let err = scan_attributes(&b.build(encoding), encoding).unwrap_err();
        assert!(
            matches!(
                err,
                ScanError::UnexpectedTag {
                    tag: SEQUENCE_DELIMITATION,
                    ..
                }
            ),
            "{err}"
        );
    }
}

#[test]
fn invalid_vr() {
    let mut b = Builder::new(DatasetEncoding::ExplicitVrLittleEndian);
    b.raw(PATIENT_NAME, b"ZZ", b"ab");
    let err = scan_attributes(&b.buf, DatasetEncoding::ExplicitVrLittleEndian).unwrap_err();
    assert_eq!(
        err,
        ScanError::InvalidVr {
            offset: 0,
            tag: PATIENT_NAME,
            vr: *b"ZZ"
        }
    );
}

fn nested(encoding: DatasetEncoding, levels: usize) -> Vec<u8> {
    let mut b = Builder::new(encoding);
    for _ in 0..levels {
        b.header(0x0008_1110, b"SQ", UNDEFINED_LENGTH)
            .item(UNDEFINED_LENGTH);
    }
    for _ in 0..levels {
        b.item_delimiter().sequence_delimiter();
    }
    b.str(PATIENT_NAME, b"PN", "Deep");
    b.build(encoding)
}

#[test]
fn depth_limit() {
    for encoding in ALL {
        let a = scan_attributes(&nested(encoding, MAX_DEPTH), encoding).unwrap();
        assert_eq!(a.text(PATIENT_NAME).as_deref(), Some("Deep"));
        let err = scan_attributes(&nested(encoding, MAX_DEPTH + 1), encoding).unwrap_err();
        assert!(
            matches!(
                err,
                ScanError::TooDeep {
                    tag: 0x0008_1110,
                    ..
                }
            ),
            "{err}"
        );
        // Far deeper input: still an error, no stack overflow.
        let err = scan_attributes(&nested(encoding, 100_000), encoding).unwrap_err();
        assert!(matches!(err, ScanError::TooDeep { .. }), "{err}");
    }
}

#[test]
fn un_with_undefined_length_holds_implicit_vr() {
    for encoding in [
        DatasetEncoding::ExplicitVrLittleEndian,
        DatasetEncoding::ExplicitVrBigEndian,
    ] {
        let mut b = Builder::new(encoding);
        b.header(0x0009_1010, b"UN", UNDEFINED_LENGTH);
        // The items of a UN sequence are Implicit VR Little Endian.
        let mut inner = Builder::with_enc(Enc::IMPLICIT_LE);
        inner
            .item(UNDEFINED_LENGTH)
            .str(0x0009_1011, b"LO", "x")
            .item_delimiter()
            .sequence_delimiter();
        b.bytes(&inner.buf);
        b.str(PATIENT_NAME, b"PN", "After^UN");
        let a = scan_attributes(&b.build(encoding), encoding).unwrap();
        assert_eq!(a.text(PATIENT_NAME).as_deref(), Some("After^UN"));
    }
}

#[test]
fn encapsulated_value_before_last_tag_is_skipped() {
    // An OB with undefined length (fragments) before an indexed tag.
    let mut b = Builder::new(DatasetEncoding::ExplicitVrLittleEndian);
    b.header(0x0009_1002, b"OB", UNDEFINED_LENGTH)
        .item(0)
        .item(4)
        .bytes(&[1, 2, 3, 4])
        .sequence_delimiter();
    b.str(PATIENT_NAME, b"PN", "X");
    let a = scan_attributes(&b.buf, DatasetEncoding::ExplicitVrLittleEndian).unwrap();
    assert_eq!(a.text(PATIENT_NAME).as_deref(), Some("X"));
}

#[test]
fn group_0002_inside_the_data_set_is_skipped() {
    for encoding in ALL {
        let mut meta = Builder::with_enc(Enc::EXPLICIT_LE);
        meta.str(0x0002_0010, b"UI", "1.2.840.10008.1.2")
            .raw(0x0002_0001, b"OB", &[0, 1]);
        let mut b = Builder::new(encoding);
        b.bytes(&meta.buf).str(PATIENT_NAME, b"PN", "After^Meta");
        let a = scan_attributes(&b.build(encoding), encoding).unwrap();
        assert_eq!(a.text(PATIENT_NAME).as_deref(), Some("After^Meta"));
    }
}

#[test]
fn value_representation_details() {
    let encoding = DatasetEncoding::ExplicitVrLittleEndian;
    let mut b = Builder::new(encoding);
    b.raw(SOP_INSTANCE_UID, b"UI", b"1.2\0\0")
        .raw(ACCESSION_NUMBER, b"SH", b"  A1  ")
        .raw(REFERRING_PHYSICIAN_NAME, b"PN", b" Lead^Space  \0")
        .raw(INSTITUTION_NAME, b"LO", b" A \\ B ")
        .raw(STUDY_DESCRIPTION, b"LO", b"")
        // Sent as UN: interpreted with the dictionary VR.
        .raw(PATIENT_NAME, b"UN", b"Un^Known ")
        .raw(SERIES_NUMBER, b"IS", b"1.0 ")
        .raw(INSTANCE_NUMBER, b"IS", b"7\\8")
        .raw(NUMBER_OF_FRAMES, b"IS", b"x ")
        .raw(ROWS, b"UN", &[0x00, 0x02])
        .raw(COLUMNS, b"US", &[0x01, 0x00, 0x02, 0x00]);
    let a = scan_attributes(&b.buf, encoding).unwrap();
    assert_eq!(a.text(SOP_INSTANCE_UID).as_deref(), Some("1.2"));
    assert_eq!(a.text(ACCESSION_NUMBER).as_deref(), Some("A1"));
    assert_eq!(
        a.text(REFERRING_PHYSICIAN_NAME).as_deref(),
        Some(" Lead^Space")
    );
    assert_eq!(a.text(INSTITUTION_NAME).as_deref(), Some("A\\B"));
    assert_eq!(a.text(STUDY_DESCRIPTION).as_deref(), Some(""));
    assert_eq!(a.text(PATIENT_NAME).as_deref(), Some("Un^Known"));
    assert_eq!(a.vr(PATIENT_NAME), Some(*b"UN"));
    assert_eq!(a.int(SERIES_NUMBER), Some(1));
    assert_eq!(a.int(INSTANCE_NUMBER), Some(7));
    assert_eq!(a.int(NUMBER_OF_FRAMES), None);
    assert_eq!(a.uint(ROWS), Some(512));
    assert_eq!(a.uint(COLUMNS), Some(1));
    assert_eq!(a.text(COLUMNS).as_deref(), Some("1\\2"));
    assert_eq!(a.int(MODALITY), None);
}

#[test]
fn repeated_tag_keeps_the_first() {
    let mut b = Builder::new(DatasetEncoding::ExplicitVrLittleEndian);
    b.str(PATIENT_NAME, b"PN", "First")
        .str(PATIENT_NAME, b"PN", "Second");
    let a = scan_attributes(&b.buf, DatasetEncoding::ExplicitVrLittleEndian).unwrap();
    assert_eq!(a.text(PATIENT_NAME).as_deref(), Some("First"));
}

#[test]
fn character_sets_in_data_set() {
    let mut b = Builder::new(DatasetEncoding::ImplicitVrLittleEndian);
    b.str(SPECIFIC_CHARACTER_SET, b"CS", "\\ISO 2022 IR 87")
        .raw(
            PATIENT_NAME,
            b"PN",
            b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B",
        )
        .raw(STUDY_DESCRIPTION, b"LO", b"\x1b$B;3ED\x1b(B ");
    let a = scan_attributes(&b.buf, DatasetEncoding::ImplicitVrLittleEndian).unwrap();
    assert_eq!(
        a.text(PATIENT_NAME).as_deref(),
        Some("Yamada^Tarou=山田^太郎")
    );
    assert_eq!(a.text(STUDY_DESCRIPTION).as_deref(), Some("山田"));

    let mut b = Builder::new(DatasetEncoding::ExplicitVrLittleEndian);
    b.str(SPECIFIC_CHARACTER_SET, b"CS", "ISO_IR 192").str(
        PATIENT_NAME,
        b"PN",
        "Wang^XiaoDong=王^小東",
    );
    let a = scan_attributes(&b.buf, DatasetEncoding::ExplicitVrLittleEndian).unwrap();
    assert_eq!(
        a.text(PATIENT_NAME).as_deref(),
        Some("Wang^XiaoDong=王^小東")
    );
}

#[test]
fn deflate_is_lazy() {
    // A large pixel data value whose compressed bytes are then corrupted:
    // the scan never inflates that far.
    let mut b = sample(DatasetEncoding::DeflatedExplicitVrLittleEndian);
    let pixels: Vec<u8> = (0..4_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    b.raw(0x7FE0_0010, b"OB", &pixels);
    let mut data = deflate(&b.buf);
    let n = data.len();
    for byte in &mut data[n / 2..] {
        *byte = 0xFF;
    }
    check_sample(&scan_attributes(&data, DatasetEncoding::DeflatedExplicitVrLittleEndian).unwrap());
    // The corrupt part is reached when it is needed.
    let mut b = Builder::new(DatasetEncoding::DeflatedExplicitVrLittleEndian);
    b.raw(0x0009_1001, b"OB", &pixels)
        .str(PATIENT_NAME, b"PN", "X");
    let mut data = deflate(&b.buf);
    let n = data.len();
    for byte in &mut data[n / 2..] {
        *byte = 0xFF;
    }
    let err = scan_attributes(&data, DatasetEncoding::DeflatedExplicitVrLittleEndian).unwrap_err();
    assert!(
        matches!(
            err,
            ScanError::Inflate { .. } | ScanError::ValueOutOfBounds { .. }
        ),
        "{err}"
    );
}

#[test]
fn deflate_with_zlib_header_and_garbage() {
    let b = sample(DatasetEncoding::DeflatedExplicitVrLittleEndian);
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(&b.buf).unwrap();
    let data = z.finish().unwrap();
    check_sample(&scan_attributes(&data, DatasetEncoding::DeflatedExplicitVrLittleEndian).unwrap());

    let deflated = deflate(&b.buf);
    for cut in 0..deflated.len() {
        let _ = scan_attributes(
            &deflated[..cut],
            DatasetEncoding::DeflatedExplicitVrLittleEndian,
        );
    }
    let err =
        scan_attributes(&[0xFF; 64], DatasetEncoding::DeflatedExplicitVrLittleEndian).unwrap_err();
    assert!(matches!(err, ScanError::Inflate { offset: 0, .. }), "{err}");
    assert!(
        scan_attributes(&[], DatasetEncoding::DeflatedExplicitVrLittleEndian)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn empty_data_set() {
    for encoding in [
        DatasetEncoding::ImplicitVrLittleEndian,
        DatasetEncoding::ExplicitVrLittleEndian,
        DatasetEncoding::ExplicitVrBigEndian,
    ] {
        assert!(scan_attributes(&[], encoding).unwrap().is_empty());
    }
}

#[test]
fn transfer_syntaxes() {
    use DatasetEncoding::*;
    let cases = [
        ("1.2.840.10008.1.2", Some(ImplicitVrLittleEndian)),
        ("1.2.840.10008.1.2\0", Some(ImplicitVrLittleEndian)),
        ("1.2.840.10008.1.2.1", Some(ExplicitVrLittleEndian)),
        (
            "1.2.840.10008.1.2.1.99",
            Some(DeflatedExplicitVrLittleEndian),
        ),
        ("1.2.840.10008.1.2.2", Some(ExplicitVrBigEndian)),
        ("1.2.840.10008.1.2.4.50", Some(ExplicitVrLittleEndian)),
        ("1.2.840.10008.1.2.4.70", Some(ExplicitVrLittleEndian)),
        ("1.2.840.10008.1.2.4.80", Some(ExplicitVrLittleEndian)),
        ("1.2.840.10008.1.2.4.90", Some(ExplicitVrLittleEndian)),
        (
            "1.2.840.10008.1.2.4.95",
            Some(DeflatedExplicitVrLittleEndian),
        ),
        ("1.2.840.10008.1.2.4.102.1", Some(ExplicitVrLittleEndian)),
        ("1.2.840.10008.1.2.4.107", Some(ExplicitVrLittleEndian)),
        ("1.2.840.10008.1.2.4.201", Some(ExplicitVrLittleEndian)),
        ("1.2.840.10008.1.2.5", Some(ExplicitVrLittleEndian)),
        ("1.2.840.10008.1.2.1.98", Some(ExplicitVrLittleEndian)),
        ("1.2.840.10008.1.2.4.999", None),
        ("1.2.840.10008.1.2.3", None),
        ("1.2.840.10008.1.20", None),
        ("1.2.840.113619.5.2", None),
        ("", None),
    ];
    for (uid, expected) in cases {
        assert_eq!(DatasetEncoding::for_transfer_syntax(uid), expected, "{uid}");
    }
}

#[test]
fn indexed_tags_match_the_dictionary() {
    use dicom_dictionary_std::tags as d;
    let expected = [
        d::SPECIFIC_CHARACTER_SET,
        d::SOP_CLASS_UID,
        d::SOP_INSTANCE_UID,
        d::STUDY_DATE,
        d::SERIES_DATE,
        d::STUDY_TIME,
        d::SERIES_TIME,
        d::ACCESSION_NUMBER,
        d::MODALITY,
        d::INSTITUTION_NAME,
        d::REFERRING_PHYSICIAN_NAME,
        d::TIMEZONE_OFFSET_FROM_UTC,
        d::STUDY_DESCRIPTION,
        d::SERIES_DESCRIPTION,
        d::PATIENT_NAME,
        d::PATIENT_ID,
        d::ISSUER_OF_PATIENT_ID,
        d::PATIENT_BIRTH_DATE,
        d::PATIENT_SEX,
        d::STUDY_INSTANCE_UID,
        d::SERIES_INSTANCE_UID,
        d::STUDY_ID,
        d::SERIES_NUMBER,
        d::INSTANCE_NUMBER,
        d::NUMBER_OF_FRAMES,
        d::ROWS,
        d::COLUMNS,
        d::BITS_ALLOCATED,
        d::PERFORMED_PROCEDURE_STEP_START_DATE,
        d::PERFORMED_PROCEDURE_STEP_START_TIME,
    ];
    let expected: Vec<Tag> = expected
        .iter()
        .map(|t| (u32::from(t.0) << 16) | u32::from(t.1))
        .collect();
    assert_eq!(INDEXED_TAGS, &expected[..]);
    assert!(
        INDEXED_TAGS.windows(2).all(|w| w[0] < w[1]),
        "INDEXED_TAGS must be ascending"
    );
}

#[test]
fn declared_vr_encoding_that_does_not_match_the_data() {
    // Implicit VR data declared as Explicit VR (and the other way round),
    // with and without meta elements in front.
    for with_meta in [false, true] {
        let mut b = Builder::with_enc(Enc::EXPLICIT_LE);
        if with_meta {
            b.str(0x0002_0010, b"UI", "1.2.840.10008.1.2");
        }
        let mut implicit = Builder::with_enc(Enc::IMPLICIT_LE);
        implicit
            .str(0x0008_0008, b"CS", "ORIGINAL")
            .str(PATIENT_NAME, b"PN", "Implicit^Data")
            .us(ROWS, 7);
        b.bytes(&implicit.buf);
        for encoding in [
            DatasetEncoding::ExplicitVrLittleEndian,
            DatasetEncoding::DeflatedExplicitVrLittleEndian,
        ] {
            let a = scan_attributes(&b.build(encoding), encoding).unwrap();
            assert_eq!(a.text(PATIENT_NAME).as_deref(), Some("Implicit^Data"));
            assert_eq!(a.uint(ROWS), Some(7));
        }

        let mut b = Builder::with_enc(Enc::EXPLICIT_LE);
        if with_meta {
            b.str(0x0002_0010, b"UI", "1.2.840.10008.1.2.1");
        }
        b.str(0x0008_0008, b"CS", "ORIGINAL")
            .str(PATIENT_NAME, b"PN", "Explicit^Data")
            .us(ROWS, 7);
        let a = scan_attributes(&b.buf, DatasetEncoding::ImplicitVrLittleEndian).unwrap();
        assert_eq!(a.text(PATIENT_NAME).as_deref(), Some("Explicit^Data"));
        assert_eq!(a.uint(ROWS), Some(7));
    }
}

#[test]
fn person_name_trailing_empty_groups() {
    let mut b = Builder::new(DatasetEncoding::ExplicitVrLittleEndian);
    b.raw(PATIENT_NAME, b"PN", b"Doe^John==")
        .raw(REFERRING_PHYSICIAN_NAME, b"PN", b"^^^^");
    let a = scan_attributes(&b.buf, DatasetEncoding::ExplicitVrLittleEndian).unwrap();
    assert_eq!(a.text(PATIENT_NAME).as_deref(), Some("Doe^John"));
    assert_eq!(a.text(REFERRING_PHYSICIAN_NAME).as_deref(), Some("^^^^"));
}

#[test]
fn specific_character_set_with_a_text_vr_does_not_recurse() {
    let mut b = Builder::new(DatasetEncoding::ExplicitVrLittleEndian);
    b.raw(SPECIFIC_CHARACTER_SET, b"LO", b"ISO_IR 100 ")
        .raw(PATIENT_NAME, b"PN", b"\xe9");
    let a = scan_attributes(&b.buf, DatasetEncoding::ExplicitVrLittleEndian).unwrap();
    assert_eq!(
        a.text(SPECIFIC_CHARACTER_SET).as_deref(),
        Some("ISO_IR 100")
    );
    assert_eq!(a.specific_character_set().as_deref(), Some("ISO_IR 100"));
    assert_eq!(a.text(PATIENT_NAME).as_deref(), Some("é"));
}

#[test]
fn vr_sets_match_lists() {
    for first in 0..=u8::MAX {
        for second in 0..=u8::MAX {
            let vr = [first, second];
            assert_eq!(is_known_vr(vr), KNOWN_VRS.contains(&&vr), "{vr:?}");
            assert_eq!(
                has_long_length(vr),
                LONG_LENGTH_VRS.contains(&&vr),
                "{vr:?}"
            );
        }
    }
}

#[test]
fn indexed_slot_finds_every_indexed_tag() {
    for (i, tag) in INDEXED_TAGS.iter().enumerate() {
        assert_eq!(indexed_slot(*tag), Some(i), "{tag:08X}");
    }
    for tag in [
        0x0008_0006,
        0x0018_0050,
        0x0019_1000,
        0x0028_0101,
        0x7FE0_0010,
        0xFFFE_E000,
    ] {
        assert_eq!(indexed_slot(tag), None, "{tag:08X}");
    }
}
