//! Data sets and Part 10 files built in code: a CT image with the usual
//! patient, study, series and image attributes, two sequences (one of
//! undefined, one of defined length) and pixel data of a chosen size.

use nectar_codecs::meta::{write_file_meta, FileMetaFields};

/// CT Image Storage.
pub const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
/// Explicit VR Little Endian.
pub const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
/// Implicit VR Little Endian.
pub const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";

struct Writer {
    out: Vec<u8>,
    explicit: bool,
}

impl Writer {
    fn tag(&mut self, tag: u32) {
        self.out
            .extend_from_slice(&((tag >> 16) as u16).to_le_bytes());
        self.out.extend_from_slice(&(tag as u16).to_le_bytes());
    }

    fn header(&mut self, tag: u32, vr: &[u8; 2], length: u32) {
        self.tag(tag);
        if !self.explicit {
            self.out.extend_from_slice(&length.to_le_bytes());
            return;
        }
        self.out.extend_from_slice(vr);
        if matches!(vr, b"OB" | b"OW" | b"SQ" | b"UN" | b"UT" | b"UC" | b"UR") {
            self.out.extend_from_slice(&[0, 0]);
            self.out.extend_from_slice(&length.to_le_bytes());
        } else {
            self.out.extend_from_slice(&(length as u16).to_le_bytes());
        }
    }

    /// A text element, padded to even length (UI with NUL, others with space).
    fn text(&mut self, tag: u32, vr: &[u8; 2], value: &str) {
        let pad = value.len() % 2;
        self.header(tag, vr, (value.len() + pad) as u32);
        self.out.extend_from_slice(value.as_bytes());
        if pad == 1 {
            self.out.push(if vr == b"UI" { 0 } else { b' ' });
        }
    }

    fn us(&mut self, tag: u32, v: u16) {
        self.header(tag, b"US", 2);
        self.out.extend_from_slice(&v.to_le_bytes());
    }

    fn item_header(&mut self, tag: u32, length: u32) {
        self.tag(tag);
        self.out.extend_from_slice(&length.to_le_bytes());
    }
}

/// A CT image data set in Explicit (or Implicit) VR Little Endian with
/// `pixel_bytes` (rounded up to even) of pixel data. Its UIDs are short
/// (`1.2.3...`), so [`crate::template::Template`] resizes them.
pub fn ct_dataset(explicit: bool, pixel_bytes: usize) -> Vec<u8> {
    let mut w = Writer {
        out: Vec::with_capacity(2048 + pixel_bytes),
        explicit,
    };
    w.text(0x0008_0005, b"CS", "ISO_IR 100");
    w.text(0x0008_0008, b"CS", "ORIGINAL\\PRIMARY\\AXIAL");
    w.text(0x0008_0016, b"UI", CT_IMAGE_STORAGE);
    w.text(0x0008_0018, b"UI", "1.2.3.4.5.6.7.8.9");
    w.text(0x0008_0020, b"DA", "20240102");
    w.text(0x0008_0021, b"DA", "20240102");
    w.text(0x0008_0030, b"TM", "120000");
    w.text(0x0008_0031, b"TM", "120501.25");
    w.text(0x0008_0050, b"SH", "ACC0001");
    w.text(0x0008_0060, b"CS", "CT");
    w.text(0x0008_0070, b"LO", "nectar synthetic");
    w.text(0x0008_0080, b"LO", "General Hospital");
    w.text(0x0008_0090, b"PN", "Doe^Referring");
    w.text(0x0008_1030, b"LO", "Load test study");
    w.text(0x0008_103E, b"LO", "Load test series");
    // Referenced Image Sequence, undefined length, one item of undefined length.
    w.header(0x0008_1140, b"SQ", u32::MAX);
    w.item_header(0xFFFE_E000, u32::MAX);
    w.text(0x0008_1150, b"UI", CT_IMAGE_STORAGE);
    w.text(0x0008_1155, b"UI", "1.2.3.4.5.6.7.8.10");
    w.item_header(0xFFFE_E00D, 0);
    w.item_header(0xFFFE_E0DD, 0);
    w.text(0x0010_0010, b"PN", "Load^Test");
    w.text(0x0010_0020, b"LO", "PID0001");
    w.text(0x0010_0030, b"DA", "19700101");
    w.text(0x0010_0040, b"CS", "O");
    w.text(0x0018_0050, b"DS", "1.0");
    w.text(0x0018_0060, b"DS", "120");
    w.text(0x0018_5100, b"CS", "HFS");
    w.text(0x0020_000D, b"UI", "1.2.3.4");
    w.text(0x0020_000E, b"UI", "1.2.3.4.5");
    w.text(0x0020_0010, b"SH", "1");
    w.text(0x0020_0011, b"IS", "1");
    w.text(0x0020_0013, b"IS", "1");
    w.text(0x0020_0032, b"DS", "0\\0\\0");
    w.text(0x0020_0037, b"DS", "1\\0\\0\\0\\1\\0");
    w.us(0x0028_0002, 1);
    w.text(0x0028_0004, b"CS", "MONOCHROME2");
    w.us(0x0028_0010, 64);
    w.us(0x0028_0011, 64);
    w.text(0x0028_0030, b"DS", "0.5\\0.5");
    w.us(0x0028_0100, 16);
    w.us(0x0028_0101, 16);
    w.us(0x0028_0102, 15);
    w.us(0x0028_0103, 1);
    // Request Attributes Sequence, defined length, one item of defined length.
    let mut item = Writer {
        out: Vec::new(),
        explicit,
    };
    item.text(0x0040_0009, b"SH", "SPS1");
    item.text(0x0040_1001, b"SH", "RP1");
    let item = item.out;
    w.header(0x0040_0275, b"SQ", (item.len() + 8) as u32);
    w.item_header(0xFFFE_E000, item.len() as u32);
    w.out.extend_from_slice(&item);
    let pixels = pixel_bytes + pixel_bytes % 2;
    w.header(0x7FE0_0010, b"OW", pixels as u32);
    let start = w.out.len();
    w.out.resize(start + pixels, 0);
    for (i, b) in w.out[start..].iter_mut().enumerate() {
        *b = (i.wrapping_mul(31) >> 3) as u8;
    }
    w.out
}

/// A Part 10 file: preamble, `DICM`, meta group, then `dataset`.
pub fn part10(
    dataset: &[u8],
    sop_class_uid: &str,
    sop_instance_uid: &str,
    transfer_syntax_uid: &str,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(dataset.len() + 512);
    write_file_meta(
        &mut out,
        &FileMetaFields {
            sop_class_uid,
            sop_instance_uid,
            transfer_syntax_uid,
            source_ae_title: None,
            implementation_class_uid: crate::client::IMPLEMENTATION_CLASS_UID,
            implementation_version_name: crate::client::IMPLEMENTATION_VERSION_NAME,
        },
    );
    out.extend_from_slice(dataset);
    out
}
