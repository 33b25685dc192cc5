//! Part 10 files used as templates: the data set bytes, the SOP class, the
//! transfer syntax, and where the three UIDs an instance must change live.
//!
//! At load, the top-level elements of the data set are walked once in its
//! transfer syntax to find (0008,0018) SOP Instance UID, (0020,000D) Study
//! Instance UID and (0020,000E) Series Instance UID. Each of these values is
//! made exactly [`UID_LEN`] bytes long (rewriting the element's length field,
//! and a group length (gggg,0000) if the data set has one), so that every
//! instance can then get fresh UIDs by overwriting those 44 bytes in place.
//! The result is checked with `nectar_codecs::scan`, the parser nectar uses.

use std::ops::Range;
use std::path::{Path, PathBuf};

use nectar_codecs::meta::read_file_meta;
use nectar_codecs::scan::{scan_attributes, tags, DatasetEncoding, Tag};

use crate::uid::{UidGen, UidKind, UID_LEN};

/// A template held in memory.
#[derive(Debug, Clone)]
pub struct Template {
    /// Where it was read from (for messages).
    pub path: PathBuf,
    /// SOP class: (0002,0002), or the data set's (0008,0016) when the meta
    /// group leaves it empty.
    pub sop_class_uid: String,
    /// The transfer syntax the data set is stored in; proposed as is.
    pub transfer_syntax_uid: String,
    /// The data set (no preamble, no meta group), UID values resized to
    /// [`UID_LEN`] bytes.
    pub dataset: Vec<u8>,
    /// Byte range of the (0020,000D) value in `dataset`.
    pub study_uid: Range<usize>,
    /// Byte range of the (0020,000E) value in `dataset`.
    pub series_uid: Range<usize>,
    /// Byte range of the (0008,0018) value in `dataset`.
    pub sop_instance_uid: Range<usize>,
}

impl Template {
    /// Reads a Part 10 file.
    pub fn load(path: &Path) -> Result<Template, String> {
        let bytes =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Template::from_part10(&bytes, path.to_path_buf())
            .map_err(|e| format!("template {}: {e}", path.display()))
    }

    /// A template from the bytes of a Part 10 file.
    pub fn from_part10(part10: &[u8], path: PathBuf) -> Result<Template, String> {
        let meta = read_file_meta(part10).map_err(|e| e.to_string())?;
        let ts = meta.transfer_syntax_uid.clone();
        let dataset = part10[meta.dataset_offset..].to_vec();
        Template::from_dataset(dataset, &meta.sop_class_uid, &ts, path)
    }

    /// A template from a data set and its transfer syntax; `sop_class_uid`
    /// may be empty to take it from (0008,0016).
    pub fn from_dataset(
        mut dataset: Vec<u8>,
        sop_class_uid: &str,
        transfer_syntax_uid: &str,
        path: PathBuf,
    ) -> Result<Template, String> {
        let encoding = DatasetEncoding::for_transfer_syntax(transfer_syntax_uid)
            .ok_or_else(|| format!("transfer syntax {transfer_syntax_uid} is not supported"))?;
        let enc = match encoding {
            DatasetEncoding::ImplicitVrLittleEndian => Enc::IMPLICIT_LE,
            DatasetEncoding::ExplicitVrLittleEndian => Enc::EXPLICIT_LE,
            DatasetEncoding::ExplicitVrBigEndian => Enc::EXPLICIT_BE,
            DatasetEncoding::DeflatedExplicitVrLittleEndian => {
                return Err(
                    "deflated data sets cannot be patched in place; use another template"
                        .to_string(),
                )
            }
        };
        if dataset.len() & 1 == 1 {
            return Err(format!("data set has odd length {}", dataset.len()));
        }

        // Resize one UID value at a time, walking again after each change.
        let wanted = [
            tags::SOP_INSTANCE_UID,
            tags::STUDY_INSTANCE_UID,
            tags::SERIES_INSTANCE_UID,
        ];
        let found = loop {
            let found = find_top_level(&dataset, enc)?;
            let mut changed = false;
            for tag in wanted {
                let e = found
                    .get(tag)
                    .ok_or_else(|| format!("data set has no {}", tag_name(tag)))?;
                if e.length as usize != UID_LEN {
                    resize_value(&mut dataset, enc, e, &found, UID_LEN)?;
                    changed = true;
                    break;
                }
            }
            if !changed {
                break found;
            }
        };

        let range = |tag: Tag| {
            let e = found.get(tag).expect("checked above");
            e.value_pos..e.value_pos + UID_LEN
        };
        let sop_class_uid = match trim(sop_class_uid) {
            "" => found
                .sop_class
                .as_ref()
                .map(|r| trim(&String::from_utf8_lossy(&dataset[r.clone()])).to_string())
                .filter(|s| !s.is_empty())
                .ok_or("neither (0002,0002) nor (0008,0016) names the SOP class")?,
            s => s.to_string(),
        };
        let mut t = Template {
            path,
            sop_class_uid,
            transfer_syntax_uid: trim(transfer_syntax_uid).to_string(),
            study_uid: range(tags::STUDY_INSTANCE_UID),
            series_uid: range(tags::SERIES_INSTANCE_UID),
            sop_instance_uid: range(tags::SOP_INSTANCE_UID),
            dataset,
        };

        // Check with nectar's own scanner that the patch lands where it should.
        let gen = UidGen::new(0);
        let mut probe = t.dataset.clone();
        t.patch(&mut probe, &gen, 11, 22, 33);
        let scanned = scan_attributes(&probe, encoding)
            .map_err(|e| format!("nectar's scanner rejects the data set: {e}"))?;
        for (tag, kind, n) in [
            (tags::STUDY_INSTANCE_UID, UidKind::Study, 11),
            (tags::SERIES_INSTANCE_UID, UidKind::Series, 22),
            (tags::SOP_INSTANCE_UID, UidKind::Instance, 33),
        ] {
            let want = gen.uid_string(kind, n);
            if scanned.text(tag).as_deref() != Some(want.as_str()) {
                return Err(format!(
                    "patching {} did not give {want} to nectar's scanner (got {:?})",
                    tag_name(tag),
                    scanned.text(tag)
                ));
            }
        }
        // Leave recognisable placeholders in the template itself.
        let mut dataset = std::mem::take(&mut t.dataset);
        t.patch(&mut dataset, &gen, 0, 0, 0);
        t.dataset = dataset;
        Ok(t)
    }

    /// Writes the study, series and instance UIDs into `dataset`, a copy of
    /// [`Template::dataset`].
    #[inline]
    pub fn patch(&self, dataset: &mut [u8], gen: &UidGen, study: u64, series: u64, instance: u64) {
        gen.write(&mut dataset[self.study_uid.clone()], UidKind::Study, study);
        gen.write(
            &mut dataset[self.series_uid.clone()],
            UidKind::Series,
            series,
        );
        gen.write(
            &mut dataset[self.sop_instance_uid.clone()],
            UidKind::Instance,
            instance,
        );
    }
}

fn trim(s: &str) -> &str {
    s.trim_matches(|c: char| c == '\0' || c == ' ')
}

fn tag_name(tag: Tag) -> String {
    let name = match tag {
        tags::SOP_INSTANCE_UID => " SOP Instance UID",
        tags::STUDY_INSTANCE_UID => " Study Instance UID",
        tags::SERIES_INSTANCE_UID => " Series Instance UID",
        _ => "",
    };
    format!("({:04X},{:04X}){name}", tag >> 16, tag & 0xFFFF)
}

/// Byte order and VR explicitness.
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

    fn u16(self, b: &[u8]) -> u16 {
        let b = [b[0], b[1]];
        if self.big {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        }
    }
    fn u32(self, b: &[u8]) -> u32 {
        let b = [b[0], b[1], b[2], b[3]];
        if self.big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    }
    fn put_u16(self, b: &mut [u8], v: u16) {
        b.copy_from_slice(&if self.big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        });
    }
    fn put_u32(self, b: &mut [u8], v: u32) {
        b.copy_from_slice(&if self.big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        });
    }
}

const UNDEFINED: u32 = u32::MAX;
const ITEM: Tag = 0xFFFE_E000;
const ITEM_END: Tag = 0xFFFE_E00D;
const SEQUENCE_END: Tag = 0xFFFE_E0DD;
const MAX_DEPTH: usize = 32;

/// One element header.
#[derive(Debug, Clone, Copy)]
struct Elem {
    tag: Tag,
    vr: Option<[u8; 2]>,
    /// Offset of the length field and its size (2 or 4 bytes).
    length_pos: usize,
    length_size: usize,
    length: u32,
    value_pos: usize,
}

fn has_long_length(vr: [u8; 2]) -> bool {
    matches!(
        &vr,
        b"OB"
            | b"OD"
            | b"OF"
            | b"OL"
            | b"OV"
            | b"OW"
            | b"SQ"
            | b"SV"
            | b"UC"
            | b"UN"
            | b"UR"
            | b"UT"
            | b"UV"
    )
}

fn read_elem(ds: &[u8], pos: usize, enc: Enc) -> Result<Elem, String> {
    let h = ds
        .get(pos..pos + 8)
        .ok_or_else(|| format!("element header at offset {pos} runs past the end"))?;
    let tag = (u32::from(enc.u16(&h[0..2])) << 16) | u32::from(enc.u16(&h[2..4]));
    if tag >> 16 == 0xFFFE || !enc.explicit {
        return Ok(Elem {
            tag,
            vr: None,
            length_pos: pos + 4,
            length_size: 4,
            length: enc.u32(&h[4..8]),
            value_pos: pos + 8,
        });
    }
    let vr = [h[4], h[5]];
    if !vr.iter().all(u8::is_ascii_uppercase) {
        return Err(format!(
            "element ({:04X},{:04X}) at offset {pos} has no VR; is the transfer syntax right?",
            tag >> 16,
            tag & 0xFFFF
        ));
    }
    if has_long_length(vr) {
        let l = ds
            .get(pos + 8..pos + 12)
            .ok_or_else(|| format!("element header at offset {pos} runs past the end"))?;
        Ok(Elem {
            tag,
            vr: Some(vr),
            length_pos: pos + 8,
            length_size: 4,
            length: enc.u32(l),
            value_pos: pos + 12,
        })
    } else {
        Ok(Elem {
            tag,
            vr: Some(vr),
            length_pos: pos + 6,
            length_size: 2,
            length: u32::from(enc.u16(&h[6..8])),
            value_pos: pos + 8,
        })
    }
}

/// Offset just past the element's value (sequences and encapsulated pixel
/// data of undefined length included).
fn skip_value(ds: &[u8], e: &Elem, enc: Enc, depth: usize) -> Result<usize, String> {
    if e.length != UNDEFINED {
        let end = e.value_pos + e.length as usize;
        if end > ds.len() {
            return Err(format!(
                "element ({:04X},{:04X}) of length {} runs past the end of the data set",
                e.tag >> 16,
                e.tag & 0xFFFF,
                e.length
            ));
        }
        return Ok(end);
    }
    if depth >= MAX_DEPTH {
        return Err("sequences nested too deep".into());
    }
    // UN of undefined length holds Implicit VR Little Endian (PS3.5 6.2.2).
    let inner = if e.vr == Some(*b"UN") {
        Enc::IMPLICIT_LE
    } else {
        enc
    };
    let mut pos = e.value_pos;
    loop {
        let item = read_elem(
            ds,
            pos,
            Enc {
                explicit: false,
                ..inner
            },
        )?;
        match item.tag {
            SEQUENCE_END => return Ok(item.value_pos),
            ITEM if item.length != UNDEFINED => pos = skip_value(ds, &item, inner, depth + 1)?,
            ITEM => {
                pos = item.value_pos;
                loop {
                    let e = read_elem(ds, pos, inner)?;
                    if e.tag == ITEM_END {
                        pos = e.value_pos;
                        break;
                    }
                    pos = skip_value(ds, &e, inner, depth + 1)?;
                }
            }
            other => {
                return Err(format!(
                    "expected an item or sequence delimiter at offset {pos}, found ({:04X},{:04X})",
                    other >> 16,
                    other & 0xFFFF
                ))
            }
        }
    }
}

/// What the top-level walk found.
#[derive(Debug, Default)]
struct Found {
    sop_instance: Option<Elem>,
    study: Option<Elem>,
    series: Option<Elem>,
    sop_class: Option<Range<usize>>,
    /// Group length elements (gggg,0000) of groups 0008 and 0020.
    group_lengths: Vec<Elem>,
}

impl Found {
    fn get(&self, tag: Tag) -> Option<&Elem> {
        match tag {
            tags::SOP_INSTANCE_UID => self.sop_instance.as_ref(),
            tags::STUDY_INSTANCE_UID => self.study.as_ref(),
            tags::SERIES_INSTANCE_UID => self.series.as_ref(),
            _ => None,
        }
    }
}

/// Walks top-level elements up to (0020,000E).
fn find_top_level(ds: &[u8], enc: Enc) -> Result<Found, String> {
    let mut found = Found::default();
    let mut pos = 0;
    while pos < ds.len() {
        // Group 0002 inside a data set is Explicit VR Little Endian.
        let e_enc = if ds.get(pos..pos + 2) == Some(&[2, 0]) {
            Enc::EXPLICIT_LE
        } else {
            enc
        };
        let e = read_elem(ds, pos, e_enc)?;
        if e.tag > tags::SERIES_INSTANCE_UID {
            break;
        }
        let defined = e.length != UNDEFINED;
        match e.tag {
            0x0008_0000 | 0x0020_0000 if e.length == 4 => found.group_lengths.push(e),
            tags::SOP_CLASS_UID if defined => {
                found.sop_class = Some(e.value_pos..e.value_pos + e.length as usize)
            }
            tags::SOP_INSTANCE_UID if defined => found.sop_instance = Some(e),
            tags::STUDY_INSTANCE_UID if defined => found.study = Some(e),
            tags::SERIES_INSTANCE_UID if defined => found.series = Some(e),
            _ => {}
        }
        pos = skip_value(ds, &e, e_enc, 0)?;
    }
    Ok(found)
}

/// Gives element `e` a value of `new_len` bytes (a placeholder UID, to be
/// overwritten), fixing its length field and its group length if present.
fn resize_value(
    ds: &mut Vec<u8>,
    enc: Enc,
    e: &Elem,
    found: &Found,
    new_len: usize,
) -> Result<(), String> {
    let old_len = e.length as usize;
    let delta = new_len as i64 - old_len as i64;
    match e.length_size {
        2 => enc.put_u16(&mut ds[e.length_pos..e.length_pos + 2], new_len as u16),
        _ => enc.put_u32(&mut ds[e.length_pos..e.length_pos + 4], new_len as u32),
    }
    let mut value = vec![b'0'; new_len];
    value[..7].copy_from_slice(b"2.25.10");
    ds.splice(e.value_pos..e.value_pos + old_len, value);
    let group = e.tag >> 16;
    for g in &found.group_lengths {
        if g.tag >> 16 == group {
            let at = g.value_pos;
            let old = i64::from(enc.u32(&ds[at..at + 4]));
            let new = u32::try_from(old + delta).map_err(|_| "group length out of range")?;
            enc.put_u32(&mut ds[at..at + 4], new);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic;

    #[test]
    fn resizes_and_patches_explicit_and_implicit() {
        for explicit in [true, false] {
            let ds = synthetic::ct_dataset(explicit, 4096);
            let ts = if explicit {
                "1.2.840.10008.1.2.1"
            } else {
                "1.2.840.10008.1.2"
            };
            let t = Template::from_dataset(ds, "", ts, "synthetic".into()).unwrap();
            assert_eq!(t.sop_class_uid, synthetic::CT_IMAGE_STORAGE);
            assert_eq!(t.dataset.len() % 2, 0);
            let mut copy = t.dataset.clone();
            let gen = UidGen::new(5);
            t.patch(&mut copy, &gen, 1, 2, 3);
            let enc = DatasetEncoding::for_transfer_syntax(ts).unwrap();
            let s = scan_attributes(&copy, enc).unwrap();
            assert_eq!(
                s.text(tags::SOP_INSTANCE_UID).unwrap(),
                gen.uid_string(UidKind::Instance, 3)
            );
            assert_eq!(s.text(tags::PATIENT_NAME).unwrap(), "Load^Test");
            assert_eq!(s.uint(tags::ROWS), Some(64));
        }
    }
}
