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
pub(crate) fn read_stored(store: &Store, location: Location) -> Result<InMemDicomObject, String> {
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

#[cfg(test)]
mod tests {
    use dicom_core::value::{DataSetSequence, PrimitiveValue};
    use dicom_core::DataElement;

    use super::*;
    use crate::query::matching::parse_matcher;

    fn code_item(value: &str, scheme: &str) -> InMemDicomObject {
        let mut item = InMemDicomObject::new_empty();
        item.put(DataElement::new(tags::CODE_VALUE, VR::SH, PrimitiveValue::from(value)));
        item.put(DataElement::new(
            tags::CODING_SCHEME_DESIGNATOR,
            VR::SH,
            PrimitiveValue::from(scheme),
        ));
        item
    }

    fn with_codes(items: Vec<InMemDicomObject>) -> InMemDicomObject {
        let mut object = InMemDicomObject::new_empty();
        object.put(DataElement::new(
            tags::DERIVATION_CODE_SEQUENCE,
            VR::SQ,
            DataSetSequence::from(items),
        ));
        object.put(DataElement::new(
            tags::PATIENT_AGE,
            VR::AS,
            PrimitiveValue::from("042Y"),
        ));
        object
    }

    fn key(tag: dicom_core::Tag, vr: VR, value: &str) -> Key {
        Key {
            tag,
            vr,
            matcher: parse_matcher(vr, value).unwrap(),
        }
    }

    fn sequence_key(item_keys: Vec<Key>) -> Key {
        Key {
            tag: tags::DERIVATION_CODE_SEQUENCE,
            vr: VR::SQ,
            matcher: Matcher::Sequence(item_keys),
        }
    }

    #[test]
    fn sequence_returns_only_matching_items() {
        let object = with_codes(vec![code_item("113072", "DCM"), code_item("121327", "DCM")]);
        let query = sequence_key(vec![
            key(tags::CODE_VALUE, VR::SH, "121327"),
            key(tags::CODING_SCHEME_DESIGNATOR, VR::SH, ""),
        ]);
        let Some(ResultValue::Items(items)) = match_key(&query, Some(&object)) else {
            panic!("expected a match with items");
        };
        assert_eq!(items.len(), 1);
        assert_eq!(items[0][0].value, ResultValue::Text("121327".into()));
        assert_eq!(items[0][1].value, ResultValue::Text("DCM".into()));
    }

    #[test]
    fn sequence_without_matching_item_does_not_match() {
        let object = with_codes(vec![code_item("113072", "DCM")]);
        let query = sequence_key(vec![key(tags::CODE_VALUE, VR::SH, "999")]);
        assert_eq!(match_key(&query, Some(&object)), None);
        assert_eq!(match_key(&query, None), None);
    }

    #[test]
    fn empty_sequence_key_returns_whole_items() {
        let object = with_codes(vec![code_item("113072", "DCM"), code_item("121327", "DCM")]);
        let Some(ResultValue::Items(items)) = match_key(&sequence_key(Vec::new()), Some(&object)) else {
            panic!("expected every item");
        };
        assert_eq!(items.len(), 2);
        assert_eq!(items[1].len(), 2);
    }

    #[test]
    fn sequence_with_return_keys_only_always_matches() {
        let query = sequence_key(vec![key(tags::CODE_VALUE, VR::SH, "")]);
        assert_eq!(match_key(&query, None), Some(ResultValue::Items(Vec::new())));
    }

    #[test]
    fn plain_key_matches_stored_value() {
        let object = with_codes(Vec::new());
        assert_eq!(
            match_key(&key(tags::PATIENT_AGE, VR::AS, "042Y"), Some(&object)),
            Some(ResultValue::Text("042Y".into()))
        );
        assert_eq!(match_key(&key(tags::PATIENT_AGE, VR::AS, "043Y"), Some(&object)), None);
        assert_eq!(
            match_key(&key(tags::PATIENT_AGE, VR::AS, ""), None),
            Some(ResultValue::Empty)
        );
    }
}
