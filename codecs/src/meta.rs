//! PS3.10 section 7.1 File Meta Information: the 128-byte preamble, the
//! `DICM` prefix and group 0002, always Explicit VR Little Endian.

/// Length of the Part 10 preamble that precedes `DICM`.
pub const PREAMBLE_LEN: usize = 128;

const MAGIC: &[u8; 4] = b"DICM";
const META_START: usize = PREAMBLE_LEN + MAGIC.len();
const UNDEFINED_LENGTH: u32 = 0xFFFF_FFFF;

const GROUP_LENGTH: u32 = 0x0002_0000;
const VERSION: u32 = 0x0002_0001;
const MEDIA_STORAGE_SOP_CLASS_UID: u32 = 0x0002_0002;
const MEDIA_STORAGE_SOP_INSTANCE_UID: u32 = 0x0002_0003;
const TRANSFER_SYNTAX_UID: u32 = 0x0002_0010;
const IMPLEMENTATION_CLASS_UID: u32 = 0x0002_0012;
const IMPLEMENTATION_VERSION_NAME: u32 = 0x0002_0013;
const SOURCE_APPLICATION_ENTITY_TITLE: u32 = 0x0002_0016;

/// The values [`write_file_meta`] puts into group 0002.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMetaFields<'a> {
    /// (0002,0002) Media Storage SOP Class UID.
    pub sop_class_uid: &'a str,
    /// (0002,0003) Media Storage SOP Instance UID.
    pub sop_instance_uid: &'a str,
    /// (0002,0010) Transfer Syntax UID of the data set that follows.
    pub transfer_syntax_uid: &'a str,
    /// (0002,0016) Source Application Entity Title, written when given.
    pub source_ae_title: Option<&'a str>,
    /// (0002,0012) Implementation Class UID.
    pub implementation_class_uid: &'a str,
    /// (0002,0013) Implementation Version Name.
    pub implementation_version_name: &'a str,
}

/// Appends the 128-byte zero preamble, "DICM" and group 0002: (0002,0000)
/// group length, (0002,0001) version 00\01 (OB), (0002,0002), (0002,0003),
/// (0002,0010), (0002,0012), (0002,0013), (0002,0016) when given. UIDs padded
/// to even length with NUL, other strings with space.
///
/// Values are written as given (callers pass valid UIDs and AE titles); a
/// value longer than the 16-bit length field allows is cut at 65534 bytes
/// rather than producing a corrupt element.
pub fn write_file_meta(out: &mut Vec<u8>, fields: &FileMetaFields<'_>) {
    out.reserve(META_START + 12 + 14 + 4 * 72 + 2 * 24);
    out.extend_from_slice(&[0u8; PREAMBLE_LEN]);
    out.extend_from_slice(MAGIC);

    let length_at = out.len() + 8;
    put_short(out, GROUP_LENGTH, b"UL", &[0; 4], 0);
    let elements_start = out.len();

    // OB uses the long header form: tag, "OB", 2 reserved bytes, 4-byte length.
    put_tag(out, VERSION);
    out.extend_from_slice(b"OB\0\0");
    out.extend_from_slice(&2u32.to_le_bytes());
    out.extend_from_slice(&[0x00, 0x01]);

    put_short(
        out,
        MEDIA_STORAGE_SOP_CLASS_UID,
        b"UI",
        fields.sop_class_uid.as_bytes(),
        0,
    );
    put_short(
        out,
        MEDIA_STORAGE_SOP_INSTANCE_UID,
        b"UI",
        fields.sop_instance_uid.as_bytes(),
        0,
    );
    put_short(
        out,
        TRANSFER_SYNTAX_UID,
        b"UI",
        fields.transfer_syntax_uid.as_bytes(),
        0,
    );
    put_short(
        out,
        IMPLEMENTATION_CLASS_UID,
        b"UI",
        fields.implementation_class_uid.as_bytes(),
        0,
    );
    put_short(
        out,
        IMPLEMENTATION_VERSION_NAME,
        b"SH",
        fields.implementation_version_name.as_bytes(),
        b' ',
    );
    if let Some(ae) = fields.source_ae_title {
        put_short(
            out,
            SOURCE_APPLICATION_ENTITY_TITLE,
            b"AE",
            ae.as_bytes(),
            b' ',
        );
    }

    let group_length = (out.len() - elements_start) as u32;
    out[length_at..length_at + 4].copy_from_slice(&group_length.to_le_bytes());
}

fn put_tag(out: &mut Vec<u8>, tag: u32) {
    out.extend_from_slice(&((tag >> 16) as u16).to_le_bytes());
    out.extend_from_slice(&(tag as u16).to_le_bytes());
}

/// An element with a 2-byte length, its value padded to even length.
fn put_short(out: &mut Vec<u8>, tag: u32, vr: &[u8; 2], value: &[u8], pad: u8) {
    let value = &value[..value.len().min(0xFFFE)];
    let padded = value.len() + value.len() % 2;
    put_tag(out, tag);
    out.extend_from_slice(vr);
    out.extend_from_slice(&(padded as u16).to_le_bytes());
    out.extend_from_slice(value);
    if padded != value.len() {
        out.push(pad);
    }
}

/// What [`read_file_meta`] reports of a Part 10 file's meta group.
#[derive(Debug, Clone, PartialEq)]
pub struct FileMeta {
    /// (0002,0002) Media Storage SOP Class UID; empty when the file lacks it.
    pub sop_class_uid: String,
    /// (0002,0003) Media Storage SOP Instance UID; empty when the file lacks it.
    pub sop_instance_uid: String,
    /// (0002,0010) Transfer Syntax UID of the data set (never empty).
    pub transfer_syntax_uid: String,
    /// (0002,0016) Source Application Entity Title, if present.
    pub source_ae_title: Option<String>,
    /// Byte offset of the data set after the meta group.
    pub dataset_offset: usize,
}

/// Why a Part 10 file's meta information could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    /// Fewer than 132 bytes: no room for the preamble and `DICM`.
    #[error("{len} bytes are too short for a DICOM Part 10 file (128-byte preamble and DICM)")]
    TooShort { len: usize },
    /// Bytes 128..132 are not `DICM`.
    #[error("no DICM prefix at offset 128")]
    MissingPrefix,
    /// No group 0002 element follows `DICM`.
    #[error("no File Meta Information group after DICM at offset {offset}")]
    NoMetaGroup { offset: usize },
    /// An element header or value runs past the end of the data.
    #[error("meta element ({:04X},{:04X}) at offset {offset} runs past the end of the data", tag >> 16, tag & 0xFFFF)]
    Truncated { offset: usize, tag: u32 },
    /// An element in group 0002 has undefined length.
    #[error("meta element ({:04X},{:04X}) at offset {offset} has undefined length", tag >> 16, tag & 0xFFFF)]
    UndefinedLength { offset: usize, tag: u32 },
    /// The Transfer Syntax UID is absent or empty.
    #[error("meta element ({:04X},{:04X}) is missing", tag >> 16, tag & 0xFFFF)]
    MissingElement { tag: u32 },
}

/// Reads the preamble, "DICM" and group 0002 of a Part 10 file; values
/// trimmed of NUL/space padding.
///
/// Only the Transfer Syntax UID is required: some writers leave out or
/// empty (0002,0002) and (0002,0003), which then read as empty strings
/// (the data set's own (0008,0016) and (0008,0018) are the ones to trust).
///
/// The group is read element by element until the first tag outside group
/// 0002, so a wrong (0002,0000) group length does no harm. Elements written
/// in Implicit VR by non-conformant writers are recognised when the two VR
/// bytes are not a known VR.
pub fn read_file_meta(part10: &[u8]) -> Result<FileMeta, MetaError> {
    if part10.len() < META_START {
        return Err(MetaError::TooShort { len: part10.len() });
    }
    if &part10[PREAMBLE_LEN..META_START] != MAGIC {
        return Err(MetaError::MissingPrefix);
    }

    let mut sop_class_uid = None;
    let mut sop_instance_uid = None;
    let mut transfer_syntax_uid = None;
    let mut source_ae_title = None;

    let mut pos = META_START;
    loop {
        let Some(head) = part10.get(pos..pos + 8) else {
            // Fewer than 8 bytes left: fine only if they are not the start
            // of another group 0002 element.
            let rest = &part10[pos.min(part10.len())..];
            if rest.is_empty() || rest.get(..2).is_some_and(|g| g != [0x02, 0x00]) {
                break;
            }
            let element = rest
                .get(2..4)
                .map_or(0, |e| u32::from(u16::from_le_bytes([e[0], e[1]])));
            return Err(MetaError::Truncated {
                offset: pos,
                tag: 0x0002_0000 | element,
            });
        };
        let group = u16::from_le_bytes([head[0], head[1]]);
        if group != 0x0002 {
            break;
        }
        let tag = (u32::from(group) << 16) | u32::from(u16::from_le_bytes([head[2], head[3]]));
        let vr = [head[4], head[5]];
        let (header_len, length) = if crate::scan::is_known_vr(vr) {
            if crate::scan::has_long_length(vr) {
                let long = part10
                    .get(pos + 8..pos + 12)
                    .ok_or(MetaError::Truncated { offset: pos, tag })?;
                (12, u32::from_le_bytes([long[0], long[1], long[2], long[3]]))
            } else {
                (8, u32::from(u16::from_le_bytes([head[6], head[7]])))
            }
        } else {
            // Implicit VR: 4-byte length right after the tag.
            (8, u32::from_le_bytes([head[4], head[5], head[6], head[7]]))
        };
        if length == UNDEFINED_LENGTH {
            return Err(MetaError::UndefinedLength { offset: pos, tag });
        }
        let start = pos + header_len;
        let end = start
            .checked_add(length as usize)
            .filter(|&end| end <= part10.len())
            .ok_or(MetaError::Truncated { offset: pos, tag })?;
        let value = &part10[start..end];
        let slot = match tag {
            MEDIA_STORAGE_SOP_CLASS_UID => Some(&mut sop_class_uid),
            MEDIA_STORAGE_SOP_INSTANCE_UID => Some(&mut sop_instance_uid),
            TRANSFER_SYNTAX_UID => Some(&mut transfer_syntax_uid),
            SOURCE_APPLICATION_ENTITY_TITLE => Some(&mut source_ae_title),
            _ => None,
        };
        if let Some(slot) = slot {
            if slot.is_none() {
                *slot = Some(trimmed(value));
            }
        }
        pos = end;
    }
    if pos == META_START {
        return Err(MetaError::NoMetaGroup { offset: META_START });
    }

    let transfer_syntax_uid =
        transfer_syntax_uid
            .filter(|v| !v.is_empty())
            .ok_or(MetaError::MissingElement {
                tag: TRANSFER_SYNTAX_UID,
            })?;
    Ok(FileMeta {
        sop_class_uid: sop_class_uid.unwrap_or_default(),
        sop_instance_uid: sop_instance_uid.unwrap_or_default(),
        transfer_syntax_uid,
        source_ae_title: source_ae_title.filter(|v| !v.is_empty()),
        dataset_offset: pos,
    })
}

fn trimmed(value: &[u8]) -> String {
    let pad = |b: &u8| *b == 0 || *b == b' ';
    let start = value.iter().position(|b| !pad(b)).unwrap_or(value.len());
    let end = value.iter().rposition(|b| !pad(b)).map_or(start, |p| p + 1);
    String::from_utf8_lossy(&value[start..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> FileMetaFields<'static> {
        FileMetaFields {
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.2",
            sop_instance_uid: "1.2.3.4.5",
            transfer_syntax_uid: "1.2.840.10008.1.2.1",
            source_ae_title: Some("NECTAR"),
            implementation_class_uid: "1.2.826.0.1.3680043.10.1",
            implementation_version_name: "NECTAR_010",
        }
    }

    #[test]
    fn round_trip() {
        let mut out = Vec::new();
        write_file_meta(&mut out, &fields());
        assert!(out[..PREAMBLE_LEN].iter().all(|&b| b == 0));
        assert_eq!(&out[128..132], b"DICM");
        assert_eq!(out.len() % 2, 0);
        // Group length covers everything after the (0002,0000) element.
        let group_length = u32::from_le_bytes(out[140..144].try_into().unwrap()) as usize;
        assert_eq!(group_length, out.len() - 144);
        out.extend_from_slice(&[0x08, 0x00, 0x16, 0x00]);
        let meta = read_file_meta(&out).unwrap();
        assert_eq!(
            meta,
            FileMeta {
                sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
                sop_instance_uid: "1.2.3.4.5".into(),
                transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
                source_ae_title: Some("NECTAR".into()),
                dataset_offset: out.len() - 4,
            }
        );
    }

    #[test]
    fn padding() {
        let mut out = Vec::new();
        let f = FileMetaFields {
            sop_instance_uid: "1.2.3",
            source_ae_title: Some("ODD"),
            ..fields()
        };
        write_file_meta(&mut out, &f);
        let find = |needle: &[u8]| out.windows(needle.len()).position(|w| w == needle).unwrap();
        // UI padded with NUL, AE with space.
        assert_eq!(&out[find(b"1.2.3\0")..][..6], b"1.2.3\0");
        assert_eq!(&out[find(b"ODD ")..][..4], b"ODD ");
        let meta = read_file_meta(&out).unwrap();
        assert_eq!(meta.sop_instance_uid, "1.2.3");
        assert_eq!(meta.source_ae_title.as_deref(), Some("ODD"));
        assert_eq!(meta.dataset_offset, out.len());

        let mut out = Vec::new();
        write_file_meta(
            &mut out,
            &FileMetaFields {
                source_ae_title: None,
                ..fields()
            },
        );
        assert_eq!(read_file_meta(&out).unwrap().source_ae_title, None);
    }

    #[test]
    fn errors() {
        assert_eq!(
            read_file_meta(&[0; 10]),
            Err(MetaError::TooShort { len: 10 })
        );
        assert_eq!(read_file_meta(&[0; 200]), Err(MetaError::MissingPrefix));
        let mut out = Vec::new();
        write_file_meta(&mut out, &fields());
        assert_eq!(
            read_file_meta(&out[..132]),
            Err(MetaError::NoMetaGroup { offset: 132 })
        );
        // Cut inside an element: truncated; anywhere: no panic.
        assert_eq!(
            read_file_meta(&out[..150]),
            Err(MetaError::Truncated {
                offset: 144,
                tag: VERSION
            })
        );
        for cut in 0..out.len() {
            let _ = read_file_meta(&out[..cut]);
        }
        // Without the transfer syntax.
        let mut out = Vec::new();
        write_file_meta(
            &mut out,
            &FileMetaFields {
                transfer_syntax_uid: "",
                ..fields()
            },
        );
        assert_eq!(
            read_file_meta(&out),
            Err(MetaError::MissingElement {
                tag: TRANSFER_SYNTAX_UID
            })
        );
    }

    #[test]
    fn implicit_vr_meta_elements() {
        let mut out = vec![0u8; 128];
        out.extend_from_slice(b"DICM");
        for (el, v) in [
            (2u16, &b"1.2\0"[..]),
            (3, b"3.4\0"),
            (0x10, b"1.2.840.10008.1.2\0"),
        ] {
            out.extend_from_slice(&2u16.to_le_bytes());
            out.extend_from_slice(&el.to_le_bytes());
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            out.extend_from_slice(v);
        }
        let meta = read_file_meta(&out).unwrap();
        assert_eq!(meta.transfer_syntax_uid, "1.2.840.10008.1.2");
        assert_eq!(meta.sop_class_uid, "1.2");
    }
}
