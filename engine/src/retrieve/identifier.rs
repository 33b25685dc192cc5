//! The identifier of a C-GET or C-MOVE request (PS3.4 C.4.2.1.4, C.4.3.1.4):
//! the Query/Retrieve Level and the unique key of that level, one value or a
//! backslash-separated list. Also the Failed SOP Instance UID List identifier
//! of a response.

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::{TransferSyntaxIndex, TransferSyntaxRegistry};
use nectar_codecs::negotiation::query_retrieve;

use crate::manifest::RetrieveLevel;

/// The retrieve level and the values of its unique key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrieveKeys {
    pub level: RetrieveLevel,
    pub values: Vec<String>,
}

/// The reason an identifier cannot be served, sent as the Error Comment of
/// a 0xA900 response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct IdentifierError(pub String);

/// Parses `identifier`, encoded in `transfer_syntax_uid`, for the retrieve SOP
/// class `sop_class_uid`. Keys above the retrieve level are not checked.
pub fn parse_identifier(
    identifier: &[u8],
    transfer_syntax_uid: &str,
    sop_class_uid: &str,
) -> Result<RetrieveKeys, IdentifierError> {
    let fail = |text: &str| IdentifierError(text.to_owned());
    let ts = TransferSyntaxRegistry
        .get(transfer_syntax_uid)
        .ok_or_else(|| fail("unknown transfer syntax of the identifier"))?;
    let object = InMemDicomObject::read_dataset_with_ts(identifier, ts)
        .map_err(|_| fail("the identifier is not a valid data set"))?;

    let level = match string_value(&object, tags::QUERY_RETRIEVE_LEVEL).as_deref() {
        Some("PATIENT") => RetrieveLevel::Patient,
        Some("STUDY") => RetrieveLevel::Study,
        Some("SERIES") => RetrieveLevel::Series,
        Some("IMAGE") => RetrieveLevel::Image,
        Some(_) => return Err(fail("invalid QueryRetrieveLevel")),
        None => return Err(fail("missing QueryRetrieveLevel")),
    };
    let patient_root = [query_retrieve::PATIENT_ROOT_GET, query_retrieve::PATIENT_ROOT_MOVE].contains(&sop_class_uid);
    if level == RetrieveLevel::Patient && !patient_root {
        return Err(fail("PATIENT level needs the Patient Root model"));
    }

    let (tag, name) = match level {
        RetrieveLevel::Patient => (tags::PATIENT_ID, "PatientID"),
        RetrieveLevel::Study => (tags::STUDY_INSTANCE_UID, "StudyInstanceUID"),
        RetrieveLevel::Series => (tags::SERIES_INSTANCE_UID, "SeriesInstanceUID"),
        RetrieveLevel::Image => (tags::SOP_INSTANCE_UID, "SOPInstanceUID"),
    };
    let raw = string_value(&object, tag).unwrap_or_default();
    let values: Vec<String> = raw.split('\\').map(|v| v.trim_matches([' ', '\0']).to_owned()).collect();
    if values.iter().any(String::is_empty) {
        return Err(IdentifierError(format!("missing or empty {name}")));
    }
    for value in &values {
        let valid = if level == RetrieveLevel::Patient { !value.contains(['*', '?']) } else { is_uid(value) };
        if !valid {
            return Err(IdentifierError(format!("invalid {name}")));
        }
    }
    Ok(RetrieveKeys { level, values })
}

/// Returns the value of a string element without padding, or `None` when it is absent or empty.
fn string_value(object: &InMemDicomObject, tag: dicom_core::Tag) -> Option<String> {
    let element = object.get(tag)?;
    let text = element.to_str().ok()?;
    let text = text.trim_matches([' ', '\0']);
    (!text.is_empty()).then(|| text.to_owned())
}

/// Checks a unique key value of VR UI: at most 64 characters and no wildcard.
/// Characters other than digits and dots are allowed because some stored
/// instances carry such UIDs, and a retrieve should reach them.
fn is_uid(value: &str) -> bool {
    value.len() <= 64 && value.bytes().all(|b| b.is_ascii_graphic() && b != b'*' && b != b'?')
}

/// Largest value of (0008,0058) written: its length field in Explicit VR has
/// 16 bits. UIDs past it are left out of the list (the counts still have them).
const MAX_FAILED_LIST_LEN: usize = 0xFFFE;

/// Encodes the Failed SOP Instance UID List (0008,0058) identifier of a final
/// C-GET or C-MOVE response in `transfer_syntax_uid`.
pub fn failed_uid_list(uids: &[String], transfer_syntax_uid: &str) -> Option<Vec<u8>> {
    let ts = TransferSyntaxRegistry.get(transfer_syntax_uid)?;
    let mut listed: Vec<String> = Vec::new();
    let mut len = 0;
    for uid in uids {
        let added = uid.len() + usize::from(!listed.is_empty());
        if len + added > MAX_FAILED_LIST_LEN {
            break;
        }
        len += added;
        listed.push(uid.clone());
    }
    let mut object = InMemDicomObject::new_empty();
    object.put(DataElement::new(
        tags::FAILED_SOP_INSTANCE_UID_LIST,
        VR::UI,
        PrimitiveValue::Strs(listed.into_iter().collect()),
    ));
    let mut out = Vec::new();
    object.write_dataset_with_ts(&mut out, ts).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
    const IMPLICIT_LE: &str = "1.2.840.10008.1.2";

    fn identifier(elements: &[(dicom_core::Tag, VR, &str)], ts: &str) -> Vec<u8> {
        let mut object = InMemDicomObject::new_empty();
        for (tag, vr, value) in elements {
            object.put(DataElement::new(*tag, *vr, PrimitiveValue::from(*value)));
        }
        let mut out = Vec::new();
        object.write_dataset_with_ts(&mut out, TransferSyntaxRegistry.get(ts).unwrap()).unwrap();
        out
    }

    #[test]
    fn study_level_with_list() {
        let bytes = identifier(
            &[(tags::QUERY_RETRIEVE_LEVEL, VR::CS, "STUDY"), (tags::STUDY_INSTANCE_UID, VR::UI, "1.2.3\\1.2.4")],
            EXPLICIT_LE,
        );
        let keys = parse_identifier(&bytes, EXPLICIT_LE, query_retrieve::STUDY_ROOT_GET).unwrap();
        assert_eq!(keys.level, RetrieveLevel::Study);
        assert_eq!(keys.values, ["1.2.3", "1.2.4"]);
    }

    #[test]
    fn patient_level_needs_patient_root() {
        let bytes = identifier(
            &[(tags::QUERY_RETRIEVE_LEVEL, VR::CS, "PATIENT"), (tags::PATIENT_ID, VR::LO, "PID-1")],
            IMPLICIT_LE,
        );
        let keys = parse_identifier(&bytes, IMPLICIT_LE, query_retrieve::PATIENT_ROOT_MOVE).unwrap();
        assert_eq!(keys.values, ["PID-1"]);
        assert!(parse_identifier(&bytes, IMPLICIT_LE, query_retrieve::STUDY_ROOT_MOVE).is_err());
    }

    #[test]
    fn bad_identifiers_rejected() {
        let cases: [&[(dicom_core::Tag, VR, &str)]; 5] = [
            &[(tags::STUDY_INSTANCE_UID, VR::UI, "1.2.3")],
            &[(tags::QUERY_RETRIEVE_LEVEL, VR::CS, "FRAME"), (tags::STUDY_INSTANCE_UID, VR::UI, "1.2.3")],
            &[(tags::QUERY_RETRIEVE_LEVEL, VR::CS, "SERIES"), (tags::STUDY_INSTANCE_UID, VR::UI, "1.2.3")],
            &[(tags::QUERY_RETRIEVE_LEVEL, VR::CS, "IMAGE"), (tags::SOP_INSTANCE_UID, VR::UI, "1.2.*")],
            &[(tags::QUERY_RETRIEVE_LEVEL, VR::CS, "STUDY"), (tags::STUDY_INSTANCE_UID, VR::UI, "1.2\\")],
        ];
        for elements in cases {
            let bytes = identifier(elements, EXPLICIT_LE);
            let result = parse_identifier(&bytes, EXPLICIT_LE, query_retrieve::STUDY_ROOT_GET);
            assert!(result.is_err(), "{elements:?} should be rejected");
        }
        assert!(parse_identifier(&[0x08, 0x00, 0x52], EXPLICIT_LE, query_retrieve::STUDY_ROOT_GET).is_err());
    }

    #[test]
    fn failed_list_round_trip() {
        let uids = vec!["1.2.3".to_owned(), "1.2.44".to_owned()];
        let bytes = failed_uid_list(&uids, EXPLICIT_LE).unwrap();
        let ts = TransferSyntaxRegistry.get(EXPLICIT_LE).unwrap();
        let object = InMemDicomObject::read_dataset_with_ts(&bytes[..], ts).unwrap();
        let value = object.get(tags::FAILED_SOP_INSTANCE_UID_LIST).unwrap().to_str().unwrap();
        assert_eq!(value, "1.2.3\\1.2.44");
    }
}
