//! 100k pseudo-random mutations of real and synthetic Part 10 files through
//! `read_file_meta` and `scan_attributes` (and the text/number accessors):
//! none may panic or hang. Fixed-seed xorshift, so a failure reproduces.

mod common;

use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use nectar_codecs::charset::{decode_person_name, decode_text};
use nectar_codecs::meta::{read_file_meta, write_file_meta, FileMetaFields};
use nectar_codecs::scan::{scan_attributes, DatasetEncoding, INDEXED_TAGS};

const ITERATIONS: usize = 100_000;
/// Real files are cut to this many bytes: the scanner stops before the
/// pixel data, so mutations further on would test nothing.
const MAX_BASE_LEN: usize = 16 * 1024;

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const ENCODINGS: [DatasetEncoding; 4] = [
    DatasetEncoding::ImplicitVrLittleEndian,
    DatasetEncoding::ExplicitVrLittleEndian,
    DatasetEncoding::ExplicitVrBigEndian,
    DatasetEncoding::DeflatedExplicitVrLittleEndian,
];

const TS: [&str; 4] = [
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.1.99",
];

/// A small data set with the usual structures, in the given encoding.
fn synthetic_dataset(explicit: bool, big: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let u16b = |v: u16| {
        if big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let u32b = |v: u32| {
        if big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let el = |out: &mut Vec<u8>, tag: u32, vr: &[u8; 2], len: u32, value: &[u8]| {
        out.extend_from_slice(&u16b((tag >> 16) as u16));
        out.extend_from_slice(&u16b(tag as u16));
        if explicit {
            out.extend_from_slice(vr);
            if matches!(vr, b"SQ" | b"OB" | b"UN" | b"UT") {
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(&u32b(len));
            } else {
                out.extend_from_slice(&u16b(len as u16));
            }
        } else {
            out.extend_from_slice(&u32b(len));
        }
        out.extend_from_slice(value);
    };
    let item = |out: &mut Vec<u8>, tag: u32, len: u32| {
        out.extend_from_slice(&u16b((tag >> 16) as u16));
        out.extend_from_slice(&u16b(tag as u16));
        out.extend_from_slice(&u32b(len));
    };
    el(&mut out, 0x0008_0005, b"CS", 16, b"\\ISO 2022 IR 87 ");
    el(
        &mut out,
        0x0008_0016,
        b"UI",
        26,
        b"1.2.840.10008.5.1.4.1.1.2\0",
    );
    el(&mut out, 0x0008_0018, b"UI", 6, b"1.2.3\0");
    el(&mut out, 0x0008_1110, b"SQ", u32::MAX, b"");
    item(&mut out, 0xFFFE_E000, u32::MAX);
    el(&mut out, 0x0008_1150, b"UI", 4, b"1.2\0");
    el(&mut out, 0x0040_0275, b"SQ", u32::MAX, b"");
    item(&mut out, 0xFFFE_E000, 0);
    item(&mut out, 0xFFFE_E0DD, 0);
    item(&mut out, 0xFFFE_E00D, 0);
    item(&mut out, 0xFFFE_E0DD, 0);
    el(&mut out, 0x0009_1001, b"OB", 4, &[1, 2, 3, 4]);
    el(
        &mut out,
        0x0010_0010,
        b"PN",
        30,
        b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@\x1b(B",
    );
    el(&mut out, 0x0020_0013, b"IS", 2, b"7 ");
    el(&mut out, 0x0028_0010, b"US", 2, &u16b(512));
    el(&mut out, 0x7FE0_0010, b"OB", 8, &[0; 8]);
    out
}

fn synthetic_files() -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for (i, encoding) in ENCODINGS.iter().enumerate() {
        let explicit = *encoding != DatasetEncoding::ImplicitVrLittleEndian;
        let big = *encoding == DatasetEncoding::ExplicitVrBigEndian;
        let mut data = Vec::new();
        write_file_meta(
            &mut data,
            &FileMetaFields {
                sop_class_uid: "1.2.840.10008.5.1.4.1.1.2",
                sop_instance_uid: "1.2.3",
                transfer_syntax_uid: TS[i],
                source_ae_title: Some("FUZZ"),
                implementation_class_uid: "1.2.3.4",
                implementation_version_name: "FUZZ",
            },
        );
        let dataset = synthetic_dataset(explicit, big);
        if *encoding == DatasetEncoding::DeflatedExplicitVrLittleEndian {
            let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&dataset).unwrap();
            data.extend_from_slice(&e.finish().unwrap());
        } else {
            data.extend_from_slice(&dataset);
        }
        files.push((format!("synthetic {encoding:?}"), data));
    }
    files
}

fn mutate(rng: &mut XorShift, data: &mut Vec<u8>) {
    const INTERESTING: [u32; 10] = [
        0xFFFF_FFFF,
        0,
        1,
        3,
        0x7FFF_FFFF,
        0xFFFF_FFFE,
        0xE000_FFFE,
        0xE00D_FFFE,
        0xE0DD_FFFE,
        0x0000_FFFF,
    ];
    const VRS: [&[u8; 2]; 8] = [b"SQ", b"UN", b"OB", b"UT", b"US", b"PN", b"ZZ", b"\0\0"];
    // Mostly near the start, where the meta group and the scanned elements are.
    let window = if rng.below(4) == 0 {
        data.len()
    } else {
        data.len().min(2048)
    };
    let at = rng.below(window.max(1));
    match rng.below(8) {
        0 => {
            for _ in 0..=rng.below(4) {
                if !data.is_empty() {
                    let i = rng.below(window.max(1)).min(data.len() - 1);
                    data[i] = rng.next() as u8;
                }
            }
        }
        1 | 2 => {
            let v = if rng.below(2) == 0 {
                INTERESTING[rng.below(INTERESTING.len())]
            } else {
                rng.next() as u32
            };
            let bytes = if rng.below(2) == 0 {
                v.to_le_bytes()
            } else {
                v.to_be_bytes()
            };
            for (k, b) in bytes.iter().enumerate() {
                if let Some(slot) = data.get_mut(at + k) {
                    *slot = *b;
                }
            }
        }
        3 => data.truncate(at),
        4 => {
            let n = 1 + rng.below(16);
            let insert: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            let at = at.min(data.len());
            data.splice(at..at, insert);
        }
        5 => {
            let at = at.min(data.len());
            let end = (at + 1 + rng.below(16)).min(data.len());
            data.drain(at..end);
        }
        6 => {
            let vr = VRS[rng.below(VRS.len())];
            for (k, b) in vr.iter().enumerate() {
                if let Some(slot) = data.get_mut(at + k) {
                    *slot = *b;
                }
            }
        }
        _ => {
            // Copy a chunk over another place (repeats element headers).
            let len = 1 + rng.below(64);
            let from = rng.below(window.max(1));
            let chunk: Vec<u8> = data.iter().skip(from).take(len).copied().collect();
            for (k, b) in chunk.iter().enumerate() {
                if let Some(slot) = data.get_mut(at + k) {
                    *slot = *b;
                }
            }
        }
    }
}

/// Scans done, and how many of them succeeded.
#[derive(Default)]
struct Outcomes {
    meta_ok: usize,
    scans: usize,
    scans_ok: usize,
}

fn exercise(data: &[u8], fallback: DatasetEncoding, outcomes: &mut Outcomes) {
    let (dataset, encoding) = match read_file_meta(data) {
        Ok(meta) => {
            outcomes.meta_ok += 1;
            let encoding =
                DatasetEncoding::for_transfer_syntax(&meta.transfer_syntax_uid).unwrap_or(fallback);
            (data.get(meta.dataset_offset..).unwrap_or(&[]), encoding)
        }
        Err(_) => (data.get(132..).unwrap_or(&[]), fallback),
    };
    for (dataset, encoding) in [(dataset, encoding), (dataset, fallback)] {
        outcomes.scans += 1;
        if let Ok(attributes) = scan_attributes(dataset, encoding) {
            outcomes.scans_ok += 1;
            for &tag in INDEXED_TAGS {
                let _ = (
                    attributes.raw(tag),
                    attributes.text(tag),
                    attributes.int(tag),
                    attributes.uint(tag),
                );
            }
        }
    }
}

#[test]
fn mutations_never_panic() {
    let mut bases = synthetic_files();
    if let Some(dir) = common::data_dir() {
        for (key, path) in common::dcm_files(&dir) {
            let mut data = std::fs::read(&path).unwrap();
            data.truncate(MAX_BASE_LEN);
            bases.push((key, data));
        }
    }
    eprintln!("mutating {} base files {ITERATIONS} times", bases.len());

    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut failures = Vec::new();
    let mut slowest = (Duration::ZERO, 0);
    let mut data = Vec::new();
    let mut outcomes = Outcomes::default();
    for iteration in 0..ITERATIONS {
        let (name, base) = &bases[iteration % bases.len()];
        data.clear();
        data.extend_from_slice(base);
        for _ in 0..=rng.below(3) {
            mutate(&mut rng, &mut data);
        }
        let fallback = ENCODINGS[rng.below(4)];
        let started = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| {
            exercise(&data, fallback, &mut outcomes)
        }));
        let took = started.elapsed();
        if took > slowest.0 {
            slowest = (took, iteration);
        }
        if result.is_err() {
            let path = std::env::temp_dir().join(format!("nectar-scan-panic-{iteration}.dcm"));
            let _ = std::fs::write(&path, &data);
            failures.push(format!(
                "iteration {iteration} ({name}, fallback {fallback:?}): input saved to {}",
                path.display()
            ));
        }
    }
    eprintln!(
        "read_file_meta accepted {} inputs; {} of {} scans succeeded",
        outcomes.meta_ok, outcomes.scans_ok, outcomes.scans
    );
    eprintln!("slowest iteration: {} ({:?})", slowest.1, slowest.0);
    assert!(
        failures.is_empty(),
        "{} panics:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        slowest.0 < Duration::from_secs(5),
        "iteration {} took {:?}",
        slowest.1,
        slowest.0
    );
}

#[test]
fn random_text_never_panics() {
    const SETS: [&str; 12] = [
        "",
        "ISO_IR 100",
        "ISO_IR 109",
        "ISO_IR 127",
        "ISO_IR 192",
        "ISO_IR 13",
        "GB18030",
        "GBK",
        "\\ISO 2022 IR 87",
        "ISO 2022 IR 13\\ISO 2022 IR 87\\ISO 2022 IR 159",
        "\\ISO 2022 IR 149",
        "ISO 2022 IR 100\\ISO 2022 IR 126\\ISO 2022 IR 58",
    ];
    // Bytes drawn mostly from the interesting ones: ESC, escape sequence
    // parts, delimiters, high bytes.
    const PICK: &[u8] = b"\x1b\x1b$()-BJ@DICAF^=\\\r\n \x80\xa1\xff\x5c\x8e\x8fab";
    let mut rng = XorShift(0x0123_4567_89AB_CDEF);
    for i in 0..20_000 {
        let len = rng.below(24);
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                if rng.below(3) == 0 {
                    rng.next() as u8
                } else {
                    PICK[rng.below(PICK.len())]
                }
            })
            .collect();
        let set = SETS[i % SETS.len()];
        let _ = decode_text(&bytes, Some(set));
        let _ = decode_person_name(&bytes, Some(set));
    }
}
