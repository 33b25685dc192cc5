//! C-FIND identifiers (PS3.4 section C.4.1.1.3): a decoded data set in, a
//! [`Query`] out; a [`ResultRow`] in, a response identifier out.
//!
//! dicom-object decodes text with the Specific Character Set of the request,
//! so every key value here is UTF-8.

use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::attributes;
use super::matching::{parse_matcher, splits_values};
use super::{Key, Level, Matcher, Model, Query, QueryError, ResultAttribute, ResultRow, ResultValue};

/// Builds the query of a C-FIND identifier under information model `model`.
///
/// Fails with 0xA900 and an Error Comment when QueryRetrieveLevel is missing
/// or invalid, when the level does not exist in the model, or when a key value
/// is invalid for its VR. It fails the same way when a unique key of a level
/// above the query level is not a single value or a UID list, as hierarchical
/// search requires (C.4.1.3.1.1).
pub fn parse(identifier: &InMemDicomObject, model: Model) -> Result<Query, QueryError> {
    let level = parse_level(identifier, model)?;
    let specific_character_set = identifier
        .get(tags::SPECIFIC_CHARACTER_SET)
        .and_then(|element| element.to_str().ok())
        .map(|text| text.trim().to_owned())
        .filter(|text| !text.is_empty());

    let mut keys = parse_keys(identifier)?;
    check_hierarchy(&keys, model, level)?;
    add_unique_keys(&mut keys, model, level);
    keys.sort_by_key(|key| key.tag);

    Ok(Query {
        model,
        level,
        keys,
        offset: 0,
        limit: None,
        specific_character_set,
        retrieve_ae_title: None,
    })
}

fn parse_level(identifier: &InMemDicomObject, model: Model) -> Result<Level, QueryError> {
    let Some(element) = identifier.get(tags::QUERY_RETRIEVE_LEVEL) else {
        return Err(QueryError::invalid_identifier(
            "QueryRetrieveLevel (0008,0052) is missing",
        ));
    };
    let value = element.to_str().map(|text| text.trim().to_owned()).unwrap_or_default();
    let Some(level) = Level::from_keyword(&value) else {
        return Err(QueryError::invalid_identifier(
            "QueryRetrieveLevel must be PATIENT, STUDY, SERIES or IMAGE",
        ));
    };
    if model == Model::StudyRoot && level == Level::Patient {
        return Err(QueryError::invalid_identifier("Study Root has no PATIENT level"));
    }
    Ok(level)
}

/// Reads every element of a data set (or sequence item) as a key.
fn parse_keys(object: &InMemDicomObject) -> Result<Vec<Key>, QueryError> {
    let mut keys = Vec::new();
    for element in object.iter() {
        let tag = element.header().tag;
        if is_not_a_key(tag) {
            continue;
        }
        let vr = element.header().vr;
        let matcher = if vr == VR::SQ {
            parse_sequence_key(element.items().unwrap_or(&[]))?
        } else {
            let text = element.to_str().map(|text| text.into_owned()).unwrap_or_default();
            parse_matcher(vr, &text).map_err(|reason| {
                QueryError::invalid_identifier(format!("invalid key ({:04X},{:04X}): {reason}", tag.0, tag.1))
            })?
        };
        keys.push(Key { tag, vr, matcher });
    }
    Ok(keys)
}

/// Parses a sequence key. It has at most one item (C.2.2.2.6), and an empty sequence or item is universal.
fn parse_sequence_key(items: &[InMemDicomObject]) -> Result<Matcher, QueryError> {
    match items {
        [] => Ok(Matcher::Sequence(Vec::new())),
        [item] => Ok(Matcher::Sequence(parse_keys(item)?)),
        _ => Err(QueryError::invalid_identifier(format!(
            "sequence key with {} items, at most 1 allowed",
            items.len()
        ))),
    }
}

/// Group lengths, QueryRetrieveLevel and Specific Character Set are not keys.
fn is_not_a_key(tag: Tag) -> bool {
    tag.1 == 0x0000 || tag == tags::QUERY_RETRIEVE_LEVEL || tag == tags::SPECIFIC_CHARACTER_SET
}

/// Lists the levels from the root of `model` down to `level`, `level` excluded.
pub fn levels_above(model: Model, level: Level) -> Vec<Level> {
    let root = match model {
        Model::PatientRoot => Level::Patient,
        Model::StudyRoot => Level::Study,
    };
    [Level::Patient, Level::Study, Level::Series, Level::Image]
        .into_iter()
        .filter(|l| *l >= root && *l < level)
        .collect()
}

fn check_hierarchy(keys: &[Key], model: Model, level: Level) -> Result<(), QueryError> {
    for above in levels_above(model, level) {
        let unique = attributes::unique_key(above);
        let matcher = keys.iter().find(|key| key.tag == unique.tag).map(|key| &key.matcher);
        let accepted = match matcher {
            Some(Matcher::Single(_)) => true,
            Some(Matcher::List(_)) => unique.vr == VR::UI,
            _ => false,
        };
        if !accepted {
            let (group, element) = (unique.tag.0, unique.tag.1);
            let form = if unique.vr == VR::UI {
                "single value or UID list"
            } else {
                "single value"
            };
            return Err(QueryError::invalid_identifier(format!(
                "{} level needs ({group:04X},{element:04X}) as {form}",
                level.keyword(),
            )));
        }
    }
    Ok(())
}

/// Responses always carry the unique keys of the query level and the levels above.
fn add_unique_keys(keys: &mut Vec<Key>, model: Model, level: Level) {
    let mut levels = levels_above(model, level);
    levels.push(level);
    for l in levels {
        let unique = attributes::unique_key(l);
        if !keys.iter().any(|key| key.tag == unique.tag) {
            keys.push(Key {
                tag: unique.tag,
                vr: unique.vr,
                matcher: Matcher::Universal,
            });
        }
    }
}

/// Builds the response identifier of one match.
///
/// Specific Character Set is ISO_IR 192 (UTF-8) when any value is outside
/// US-ASCII; otherwise it repeats the request's, or is left out when the
/// request had none.
pub fn to_identifier(row: &ResultRow, request_character_set: Option<&str>) -> InMemDicomObject {
    let mut object = attributes_to_object(&row.attributes);
    let character_set = if row.has_non_ascii() {
        Some("ISO_IR 192")
    } else {
        request_character_set
    };
    if let Some(character_set) = character_set {
        object.put(DataElement::new(
            tags::SPECIFIC_CHARACTER_SET,
            VR::CS,
            PrimitiveValue::from(character_set),
        ));
    }
    object
}

fn attributes_to_object(attributes: &[ResultAttribute]) -> InMemDicomObject {
    let mut object = InMemDicomObject::new_empty();
    for attribute in attributes {
        let element = match &attribute.value {
            ResultValue::Items(items) => {
                let items: Vec<InMemDicomObject> = items.iter().map(|item| attributes_to_object(item)).collect();
                DataElement::new(attribute.tag, VR::SQ, DataSetSequence::from(items))
            }
            ResultValue::Empty => DataElement::new(attribute.tag, attribute.vr, PrimitiveValue::Empty),
            ResultValue::Text(text) => DataElement::new(attribute.tag, attribute.vr, primitive(attribute.vr, text)),
        };
        object.put(element);
    }
    object
}

/// Converts text back into the value type of `vr`; unparsable numbers become empty.
fn primitive(vr: VR, text: &str) -> PrimitiveValue {
    fn numbers<T: std::str::FromStr>(text: &str) -> Option<Vec<T>> {
        text.split('\\').map(|value| value.trim().parse().ok()).collect()
    }
    let converted = match vr {
        VR::US => numbers::<u16>(text).map(|v| PrimitiveValue::U16(v.into())),
        VR::UL => numbers::<u32>(text).map(|v| PrimitiveValue::U32(v.into())),
        VR::SS => numbers::<i16>(text).map(|v| PrimitiveValue::I16(v.into())),
        VR::SL => numbers::<i32>(text).map(|v| PrimitiveValue::I32(v.into())),
        VR::FL | VR::OF => numbers::<f32>(text).map(|v| PrimitiveValue::F32(v.into())),
        VR::FD | VR::OD => numbers::<f64>(text).map(|v| PrimitiveValue::F64(v.into())),
        VR::SV => numbers::<i64>(text).map(|v| PrimitiveValue::I64(v.into())),
        VR::UV => numbers::<u64>(text).map(|v| PrimitiveValue::U64(v.into())),
        VR::OB | VR::OW | VR::OL | VR::OV | VR::UN | VR::AT => Some(PrimitiveValue::Empty),
        _ if splits_values(vr) => Some(PrimitiveValue::Strs(text.split('\\').map(str::to_owned).collect())),
        _ => Some(PrimitiveValue::Str(text.to_owned())),
    };
    converted.unwrap_or(PrimitiveValue::Empty)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identifier(level: Option<&str>, elements: &[(Tag, VR, &str)]) -> InMemDicomObject {
        let mut object = InMemDicomObject::new_empty();
        if let Some(level) = level {
            object.put(DataElement::new(
                tags::QUERY_RETRIEVE_LEVEL,
                VR::CS,
                PrimitiveValue::from(level),
            ));
        }
        for (tag, vr, value) in elements {
            object.put(DataElement::new(*tag, *vr, PrimitiveValue::from(*value)));
        }
        object
    }

    #[test]
    fn missing_level_is_rejected() {
        let error = parse(&identifier(None, &[]), Model::StudyRoot).unwrap_err();
        assert_eq!(error.status, 0xA900);
        assert!(error.comment.contains("QueryRetrieveLevel"));
    }

    #[test]
    fn invalid_level_is_rejected() {
        let error = parse(&identifier(Some("FRAME"), &[]), Model::StudyRoot).unwrap_err();
        assert_eq!(error.status, 0xA900);
    }

    #[test]
    fn patient_level_on_study_root_is_rejected() {
        let error = parse(&identifier(Some("PATIENT"), &[]), Model::StudyRoot).unwrap_err();
        assert_eq!(error.status, 0xA900);
        assert!(parse(&identifier(Some("PATIENT"), &[]), Model::PatientRoot).is_ok());
    }

    #[test]
    fn series_level_needs_study_uid() {
        let error = parse(&identifier(Some("SERIES"), &[]), Model::StudyRoot).unwrap_err();
        assert!(error.comment.contains("(0020,000D)"), "{}", error.comment);
        let wildcard = identifier(Some("SERIES"), &[(tags::STUDY_INSTANCE_UID, VR::UI, "")]);
        assert!(parse(&wildcard, Model::StudyRoot).is_err());
        let list = identifier(Some("SERIES"), &[(tags::STUDY_INSTANCE_UID, VR::UI, "1.2\\1.3")]);
        assert!(parse(&list, Model::StudyRoot).is_ok());
    }

    #[test]
    fn patient_root_study_level_needs_patient_id() {
        let without = identifier(Some("STUDY"), &[]);
        assert!(parse(&without, Model::PatientRoot).is_err());
        assert!(parse(&without, Model::StudyRoot).is_ok());
        let wildcard = identifier(Some("STUDY"), &[(tags::PATIENT_ID, VR::LO, "A*")]);
        assert!(parse(&wildcard, Model::PatientRoot).is_err());
        let single = identifier(Some("STUDY"), &[(tags::PATIENT_ID, VR::LO, "A1")]);
        assert!(parse(&single, Model::PatientRoot).is_ok());
    }

    #[test]
    fn unique_keys_are_added_as_return_keys() {
        let query = parse(
            &identifier(
                Some("IMAGE"),
                &[
                    (tags::STUDY_INSTANCE_UID, VR::UI, "1.2"),
                    (tags::SERIES_INSTANCE_UID, VR::UI, "1.3"),
                ],
            ),
            Model::StudyRoot,
        )
        .unwrap();
        let tags: Vec<Tag> = query.keys.iter().map(|key| key.tag).collect();
        assert_eq!(
            tags,
            vec![
                tags::SOP_INSTANCE_UID,
                tags::STUDY_INSTANCE_UID,
                tags::SERIES_INSTANCE_UID
            ]
        );
    }

    #[test]
    fn invalid_range_is_rejected() {
        let object = identifier(Some("STUDY"), &[(tags::STUDY_DATE, VR::DA, "2000*")]);
        assert_eq!(parse(&object, Model::StudyRoot).unwrap_err().status, 0xA900);
    }

    #[test]
    fn non_ascii_response_is_utf8() {
        let row = ResultRow {
            attributes: vec![ResultAttribute {
                tag: tags::PATIENT_NAME,
                vr: VR::PN,
                value: ResultValue::Text("Müller".into()),
            }],
        };
        let object = to_identifier(&row, Some("ISO_IR 100"));
        assert_eq!(
            object.get(tags::SPECIFIC_CHARACTER_SET).unwrap().to_str().unwrap(),
            "ISO_IR 192"
        );
        let ascii = ResultRow {
            attributes: vec![ResultAttribute {
                tag: tags::PATIENT_NAME,
                vr: VR::PN,
                value: ResultValue::Text("Doe".into()),
            }],
        };
        assert_eq!(
            to_identifier(&ascii, Some("ISO_IR 100"))
                .get(tags::SPECIFIC_CHARACTER_SET)
                .unwrap()
                .to_str()
                .unwrap(),
            "ISO_IR 100"
        );
        assert!(to_identifier(&ascii, None).get(tags::SPECIFIC_CHARACTER_SET).is_none());
    }
}
