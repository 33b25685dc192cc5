//! Scans every pydicom test file that `read_file_meta` can parse and
//! compares the indexed attributes with what pydicom reports
//! (`fixtures/pydicom_expected.tsv`, made by `fixtures/gen_pydicom_expected.py`).

mod common;

use std::collections::BTreeMap;

use nectar_codecs::meta::read_file_meta;
use nectar_codecs::scan::{
    scan_attributes, ScanError, tags, DatasetEncoding, ScannedAttributes, Tag, INDEXED_TAGS,
};

const EXPECTED: &str = include_str!("fixtures/pydicom_expected.tsv");

fn unescape(s: &str) -> String {
    s.replace("%09", "\t")
        .replace("%0A", "\n")
        .replace("%0D", "\r")
        .replace("%25", "%")
}

/// key -> field -> expected value
fn expected() -> BTreeMap<String, BTreeMap<String, String>> {
    let mut map: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for line in EXPECTED
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let mut parts = line.splitn(3, '\t');
        let (Some(key), Some(field), Some(value)) = (parts.next(), parts.next(), parts.next())
        else {
            panic!("bad fixture line {line:?}");
        };
        map.entry(key.to_owned())
            .or_default()
            .insert(field.to_owned(), unescape(value));
    }
    map
}

fn check(a: &ScannedAttributes, tag: Tag, expected: &str) -> Result<(), String> {
    let ok = match expected {
        "absent" => a.raw(tag).is_none(),
        "empty" => a.text(tag).as_deref() == Some("") && a.int(tag).is_none(),
        _ => {
            if let Some(n) = expected.strip_prefix("int:") {
                a.int(tag) == n.parse::<i64>().ok()
            } else if let Some(text) = expected.strip_prefix("text:") {
                a.text(tag).as_deref() == Some(text)
            } else {
                return Err(format!("bad fixture value {expected:?}"));
            }
        }
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "({:04X},{:04X}): expected {expected:?}, got text {:?} int {:?}",
            tag >> 16,
            tag & 0xFFFF,
            a.text(tag),
            a.int(tag)
        ))
    }
}

/// Corpus files cut short inside their last element: the scan must reject
/// them (pydicom reads what is there).
const TRUNCATED: [&str; 2] = ["/MR_truncated.dcm", "/rtplan_truncated.dcm"];

#[test]
fn indexed_attributes_match_pydicom() {
    let Some(dir) = common::data_dir() else {
        return;
    };
    let expected = expected();
    let mut failures = Vec::new();
    let (mut compared, mut without_meta, mut unknown_syntax) = (0, 0, 0);

    for (key, path) in common::dcm_files(&dir) {
        let data = std::fs::read(&path).unwrap();
        // A flat folder (NECTAR_TEST_FILES) gives bare file names as keys.
        let fields = expected.get(&key).or_else(|| {
            let suffix = format!("/{key}");
            expected
                .iter()
                .find(|(k, _)| k.ends_with(&suffix))
                .map(|(_, f)| f)
        });
        let meta = match read_file_meta(&data) {
            Ok(meta) => meta,
            Err(e) => {
                if fields.is_some_and(|f| f.contains_key("meta.ts")) {
                    failures.push(format!("{key}: read_file_meta: {e}"));
                }
                without_meta += 1;
                continue;
            }
        };
        let Some(fields) = fields else {
            eprintln!("note: {key} is not in the fixture; only checking it scans");
            if let Some(encoding) = DatasetEncoding::for_transfer_syntax(&meta.transfer_syntax_uid)
            {
                if let Err(e) = scan_attributes(&data[meta.dataset_offset..], encoding) {
                    failures.push(format!("{key}: scan: {e}"));
                }
            }
            continue;
        };
        if let Some(ts) = fields.get("meta.ts") {
            if &meta.transfer_syntax_uid != ts {
                failures.push(format!(
                    "{key}: transfer syntax {:?}, pydicom {ts:?}",
                    meta.transfer_syntax_uid
                ));
            }
        }
        if let Some(uid) = fields.get("meta.sop_instance") {
            if &meta.sop_instance_uid != uid {
                failures.push(format!(
                    "{key}: meta SOP instance {:?}, pydicom {uid:?}",
                    meta.sop_instance_uid
                ));
            }
        }
        let Some(encoding) = DatasetEncoding::for_transfer_syntax(&meta.transfer_syntax_uid) else {
            eprintln!(
                "note: {key}: unknown transfer syntax {}",
                meta.transfer_syntax_uid
            );
            unknown_syntax += 1;
            continue;
        };
        let truncated = TRUNCATED.iter().any(|name| key.ends_with(name));
        let a = match scan_attributes(&data[meta.dataset_offset..], encoding) {
            Ok(_) if truncated => {
                failures.push(format!("{key}: a truncated file scanned without an error"));
                continue;
            }
            Ok(a) => a,
            Err(ScanError::ValueOutOfBounds { .. }) if truncated => continue,
            Err(e) => {
                failures.push(format!("{key}: scan ({encoding:?}): {e}"));
                continue;
            }
        };
        compared += 1;
        // The four the brief names first, then every other indexed tag.
        let first = [
            tags::SOP_INSTANCE_UID,
            tags::STUDY_INSTANCE_UID,
            tags::PATIENT_NAME,
            tags::ROWS,
        ];
        for &tag in first
            .iter()
            .chain(INDEXED_TAGS.iter().filter(|t| !first.contains(t)))
        {
            let Some(value) = fields.get(&format!("{tag:08X}")) else {
                continue;
            };
            if let Err(e) = check(&a, tag, value) {
                failures.push(format!("{key}: {e}"));
            }
        }
    }
    eprintln!("compared {compared} files with pydicom ({without_meta} without File Meta, {unknown_syntax} with an unknown transfer syntax)");
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(compared > 0, "no file compared in {}", dir.display());
}
