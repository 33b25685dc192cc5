//! The values a scan keeps, and their decoding to text and numbers.

use std::borrow::Cow;
use std::sync::OnceLock;

use super::{indexed_slot, tags, Tag, Vr, INDEXED, INDEXED_COUNT};
use crate::charset;

/// The raw values of the indexed attributes found at the top level of a data
/// set, with what is needed to interpret them.
#[derive(Debug, Clone, Default)]
pub struct ScannedAttributes {
    /// All kept values, back to back.
    values: Vec<u8>,
    /// Specific Character Set, decoded on first use because every text value needs it.
    character_set: OnceLock<Option<String>>,
    /// Per [`INDEXED_TAGS`] position: the value's VR and place in `values`.
    slots: [Option<Slot>; INDEXED_COUNT],
    big_endian: bool,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    vr: Vr,
    start: u32,
    len: u32,
}

impl ScannedAttributes {
    /// Returns an empty set for a data set of the given byte order.
    pub(super) fn new(big_endian: bool) -> ScannedAttributes {
        ScannedAttributes {
            // The indexed values of a typical data set fit without a reallocation.
            values: Vec::with_capacity(512),
            big_endian,
            ..ScannedAttributes::default()
        }
    }

    /// Keeps the value of the indexed attribute at position `slot`, unless one is kept already.
    #[inline]
    pub(super) fn store(&mut self, slot: usize, vr: Vr, value: &[u8]) {
        if self.slots[slot].is_some() {
            return; // keep the first occurrence of a repeated tag
        }
        let start = self.values.len() as u32;
        self.values.extend_from_slice(value);
        self.slots[slot] = Some(Slot {
            vr,
            start,
            len: value.len() as u32,
        });
    }

    fn entry(&self, tag: Tag) -> Option<(Vr, &[u8])> {
        let slot = self.slots[indexed_slot(tag)?]?;
        let start = slot.start as usize;
        Some((slot.vr, &self.values[start..start + slot.len as usize]))
    }

    /// The raw value bytes of an indexed attribute, as found (padding
    /// included, in the data set's byte order).
    pub fn raw(&self, tag: Tag) -> Option<&[u8]> {
        self.entry(tag).map(|(_, value)| value)
    }

    /// The VR the attribute was encoded with (the dictionary VR for Implicit
    /// VR data sets).
    pub fn vr(&self, tag: Tag) -> Option<Vr> {
        self.entry(tag).map(|(vr, _)| vr)
    }

    /// Number of indexed attributes found.
    pub fn len(&self) -> usize {
        self.slots.iter().flatten().count()
    }

    /// Whether no indexed attribute was found.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The VR to interpret a value with: the dictionary VR when the value
    /// came as UN.
    fn effective_vr(tag: Tag, vr: Vr) -> Vr {
        if &vr == b"UN" {
            if let Some(slot) = indexed_slot(tag) {
                return INDEXED[slot].1;
            }
        }
        vr
    }

    /// The data set's Specific Character Set (0008,0005), if any, trimmed.
    pub fn specific_character_set(&self) -> Option<String> {
        self.character_set().map(str::to_owned)
    }

    fn character_set(&self) -> Option<&str> {
        self.character_set
            .get_or_init(|| {
                // Not through text(): whatever VR it came with, it is never
                // decoded with itself.
                let raw = self.raw(tags::SPECIFIC_CHARACTER_SET)?;
                Some(trim_values(&latin1(raw), true))
            })
            .as_deref()
    }

    /// Text value decoded with the data set's Specific Character Set,
    /// trailing spaces/NULs trimmed (leading spaces trimmed too except for PN
    /// and the text VRs ST, LT, UT, UR, per PS3.5 section 6.2); with several
    /// values each value is trimmed. None when absent; Some("") when present
    /// but empty. US/SS/UL/SL values are rendered as decimal numbers.
    pub fn text(&self, tag: Tag) -> Option<String> {
        let (vr, raw) = self.entry(tag)?;
        let vr = Self::effective_vr(tag, vr);
        let scs = || self.character_set();
        let text = match &vr {
            b"US" | b"SS" | b"UL" | b"SL" => {
                let numbers: Vec<String> =
                    self.binary_ints(&vr, raw).map(|n| n.to_string()).collect();
                return Some(numbers.join("\\"));
            }
            b"PN" => trim_person_names(&charset::decode_person_name(raw, scs())),
            b"SH" | b"LO" | b"UC" => trim_values(&charset::decode_text(raw, scs()), true),
            b"ST" | b"LT" | b"UT" => trim_end(&charset::decode_text(raw, scs())).to_owned(),
            b"UR" => trim_end(&latin1(raw)).to_owned(),
            // CS, UI, DA, TM, DT, IS, DS, AE, AS use the default repertoire.
            _ => trim_values(&latin1(raw), true),
        };
        Some(text)
    }

    fn binary_ints<'a>(&self, vr: &Vr, raw: &'a [u8]) -> impl Iterator<Item = i64> + 'a {
        let big = self.big_endian;
        let (size, signed) = match vr {
            b"US" => (2, false),
            b"SS" => (2, true),
            b"UL" => (4, false),
            _ => (4, true), // SL
        };
        raw.chunks_exact(size).map(move |c| {
            let mut b = [0u8; 4];
            b[..size].copy_from_slice(c);
            match (size, signed, big) {
                (2, false, false) => i64::from(u16::from_le_bytes([b[0], b[1]])),
                (2, false, true) => i64::from(u16::from_be_bytes([b[0], b[1]])),
                (2, true, false) => i64::from(i16::from_le_bytes([b[0], b[1]])),
                (2, true, true) => i64::from(i16::from_be_bytes([b[0], b[1]])),
                (_, false, false) => i64::from(u32::from_le_bytes(b)),
                (_, false, true) => i64::from(u32::from_be_bytes(b)),
                (_, true, false) => i64::from(i32::from_le_bytes(b)),
                (_, true, true) => i64::from(i32::from_be_bytes(b)),
            }
        })
    }

    /// US values (Rows, Columns, BitsAllocated) decoded with the data set's
    /// byte order; IS values (NumberOfFrames, SeriesNumber, InstanceNumber)
    /// parsed. The first value when there are several; None when absent,
    /// empty, unparsable or negative.
    pub fn uint(&self, tag: Tag) -> Option<u32> {
        self.int(tag).and_then(|n| u32::try_from(n).ok())
    }

    /// Like [`Self::uint`], signed.
    pub fn int(&self, tag: Tag) -> Option<i64> {
        let (vr, raw) = self.entry(tag)?;
        let vr = Self::effective_vr(tag, vr);
        match &vr {
            b"US" | b"SS" | b"UL" | b"SL" => self.binary_ints(&vr, raw).next(),
            _ => parse_integer(self.text(tag)?.split('\\').next()?.trim()),
        }
    }
}

/// Decodes ISO 8859-1 bytes. Most values are ASCII, which is copied whole
/// instead of character by character.
fn latin1(raw: &[u8]) -> Cow<'_, str> {
    if raw.is_ascii() {
        Cow::Borrowed(std::str::from_utf8(raw).expect("ASCII is UTF-8"))
    } else {
        Cow::Owned(raw.iter().map(|&b| b as char).collect())
    }
}

fn trim_end(s: &str) -> &str {
    s.trim_end_matches([' ', '\0'])
}

/// Trims each backslash-separated value: trailing spaces and NULs, and
/// leading spaces when `leading`.
fn trim_values(s: &str, leading: bool) -> String {
    fn trim(v: &str, leading: bool) -> &str {
        let v = trim_end(v);
        if leading {
            v.trim_start_matches([' ', '\0'])
        } else {
            v
        }
    }
    if !s.contains('\\') {
        return trim(s, leading).to_owned();
    }
    let mut out = String::with_capacity(s.len());
    for (i, v) in s.split('\\').enumerate() {
        if i > 0 {
            out.push('\\');
        }
        out.push_str(trim(v, leading));
    }
    out
}

/// PN values: trailing spaces trimmed and empty trailing component groups
/// (`Doe^John=` is `Doe^John`) dropped.
fn trim_person_names(s: &str) -> String {
    let trimmed = trim_values(s, false);
    if !trimmed.contains('=') {
        return trimmed;
    }
    let values: Vec<&str> = trimmed
        .split('\\')
        .map(|v| trim_end(v.trim_end_matches([' ', '\0', '='])))
        .collect();
    values.join("\\")
}

/// IS (and DS with an integral value, as some writers put "1.0" in IS).
fn parse_integer(s: &str) -> Option<i64> {
    if s.is_empty() {
        return None;
    }
    if let Ok(n) = s.parse::<i64>() {
        return Some(n);
    }
    let f = s.parse::<f64>().ok()?;
    (f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64)
}
