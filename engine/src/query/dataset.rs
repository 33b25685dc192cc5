//! Keys matched against, and values read from, the stored data set of a representative instance.

use dicom_core::header::Header;
use dicom_core::VR;
use dicom_dictionary_std::tags;
use dicom_object::file::ReadPreamble;
use dicom_object::mem::InMemElement;
use dicom_object::{InMemDicomObject, OpenFileOptions};

use super::matching::{self, Matcher};
use super::{Key, ResultAttribute, ResultValue};
use crate::storage::Store;
use crate::Location;

/// Reads the record at `location` (a Part 10 file) up to Pixel Data.
pub(super) fn read_stored(store: &Store, location: Location) -> Result<InMemDicomObject, String> {
    let record = store
        .read(location)
        .map_err(|error| format!("store read failed: {error}"))?;
    let file = OpenFileOptions::new()
        .read_preamble(ReadPreamble::Always)
        .read_until(tags::PIXEL_DATA)
        .from_reader(record.bytes())
        .map_err(|error| format!("stored data set cannot be parsed: {error}"))?;
    Ok(file.into_inner())
}

/// Matches `key` against `object` and returns the value to send back, or
/// `None` when the object does not match. An absent object matches only
/// keys without a condition.
pub(super) fn match_key(key: &Key, object: Option<&InMemDicomObject>) -> Option<ResultValue> {
    let element = object.and_then(|object| object.get(key.tag));
    if let Matcher::Sequence(item_keys) = &key.matcher {
        return match_sequence(item_keys, element);
    }
    let text = element.and_then(element_text);
    if !matching::matches(key.vr, &key.matcher, text.as_deref()) {
        return None;
    }
    Some(match text {
        Some(text) if !text.is_empty() => ResultValue::Text(text),
        _ => ResultValue::Empty,
    })
}

/// Sequence matching (PS3.4 C.2.2.2.6): the items that match every item key,
/// each with the values of those keys. With no item keys every item comes
/// back whole. A sequence whose item keys carry no condition always matches.
fn match_sequence(item_keys: &[Key], element: Option<&InMemElement>) -> Option<ResultValue> {
    let items = element.and_then(|element| element.items()).unwrap_or(&[]);
    if item_keys.is_empty() {
        return Some(ResultValue::Items(items.iter().map(whole_item).collect()));
    }
    let mut matched = Vec::new();
    for item in items {
        let values: Option<Vec<ResultAttribute>> = item_keys
            .iter()
            .map(|key| {
                match_key(key, Some(item)).map(|value| ResultAttribute {
                    tag: key.tag,
                    vr: key.vr,
                    value,
                })
            })
            .collect();
        if let Some(values) = values {
            matched.push(values);
        }
    }
    if matched.is_empty() && item_keys.iter().any(has_condition) {
        return None;
    }
    Some(ResultValue::Items(matched))
}

/// True when a key restricts the matches (anything but universal matching, at any depth).
pub(super) fn has_condition(key: &Key) -> bool {
    match &key.matcher {
        Matcher::Universal => false,
        Matcher::Sequence(keys) => keys.iter().any(has_condition),
        _ => true,
    }
}

fn whole_item(item: &InMemDicomObject) -> Vec<ResultAttribute> {
    item.iter()
        .filter(|element| element.tag().1 != 0x0000)
        .map(|element| {
            let tag = element.tag();
            let vr = element.vr();
            let value = if vr == VR::SQ {
                ResultValue::Items(element.items().unwrap_or(&[]).iter().map(whole_item).collect())
            } else {
                element_text(element)
                    .filter(|text| !text.is_empty())
                    .map_or(ResultValue::Empty, ResultValue::Text)
            };
            ResultAttribute { tag, vr, value }
        })
        .collect()
}

/// Returns the value of a non-sequence element as text, or `None` for binary VRs.
fn element_text(element: &InMemElement) -> Option<String> {
    match element.vr() {
        VR::SQ | VR::OB | VR::OW | VR::OL | VR::OV | VR::OF | VR::OD | VR::UN | VR::AT => None,
        _ => element
            .to_str()
            .ok()
            .map(|text| text.trim_matches([' ', '\0']).to_owned()),
    }
}
