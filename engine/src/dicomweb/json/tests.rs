use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, Tag, VR};
use dicom_object::mem::InMemDicomObject;
use serde_json::json;

use super::{read_number_text, write_dataset, BulkData};

fn element(tag: Tag, vr: VR, value: PrimitiveValue) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, value)
}

fn sample() -> InMemDicomObject {
    let mut object = InMemDicomObject::new_empty();
    object.put(element(Tag(0x0010, 0x0010), VR::PN, PrimitiveValue::from("Yamada^Tarou=山田^太郎=やまだ^たろう")));
    object.put(element(Tag(0x0008, 0x0090), VR::PN, PrimitiveValue::from("^Smith")));
    object.put(element(Tag(0x0020, 0x0013), VR::IS, PrimitiveValue::Strs(["12 ".to_string(), "x1".to_string()].into())));
    object.put(element(Tag(0x0018, 0x0050), VR::DS, PrimitiveValue::Strs([" 2.5".to_string(), "NaN".to_string()].into())));
    object.put(element(Tag(0x0008, 0x0050), VR::SH, PrimitiveValue::Empty));
    object.put(element(Tag(0x0028, 0x0010), VR::US, PrimitiveValue::from(512_u16)));
    object.put(element(Tag(0x0020, 0x5000), VR::AT, PrimitiveValue::Tags(vec![Tag(0x0010, 0x0020)].into())));
    object.put(element(Tag(0x0008, 0x0060), VR::CS, PrimitiveValue::from("CT")));
    object.put(element(Tag(0x0009, 0x1001), VR::OB, PrimitiveValue::U8(vec![1, 2, 3].into())));
    object.put(element(Tag(0x7FE0, 0x0010), VR::OW, PrimitiveValue::U8(vec![0; 8].into())));
    let mut item = InMemDicomObject::new_empty();
    item.put(element(Tag(0x0028, 0x3006), VR::OW, PrimitiveValue::U8(vec![9; 2048].into())));
    item.put(element(Tag(0x0008, 0x0100), VR::SH, PrimitiveValue::from("T-D1100")));
    object.put(DataElement::new(
        Tag(0x0028, 0x3010),
        VR::SQ,
        DataSetSequence::from(vec![item]),
    ));
    object
}

#[test]
fn person_name_groups() {
    let json = write_dataset(&sample(), None);
    assert_eq!(
        json["00100010"],
        json!({"vr": "PN", "Value": [{"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}]})
    );
    assert_eq!(json["00080090"], json!({"vr": "PN", "Value": [{"Alphabetic": "^Smith"}]}));
}

#[test]
fn integer_and_decimal_strings() {
    let json = write_dataset(&sample(), None);
    assert_eq!(json["00200013"], json!({"vr": "IS", "Value": [12, "x1"]}));
    assert_eq!(json["00180050"], json!({"vr": "DS", "Value": [2.5, "NaN"]}));
}

#[test]
fn empty_value_has_no_value_key() {
    let json = write_dataset(&sample(), None);
    assert_eq!(json["00080050"], json!({"vr": "SH"}));
}

#[test]
fn numbers_tags_and_strings() {
    let json = write_dataset(&sample(), None);
    assert_eq!(json["00280010"], json!({"vr": "US", "Value": [512]}));
    assert_eq!(json["00205000"], json!({"vr": "AT", "Value": ["00100020"]}));
    assert_eq!(json["00080060"], json!({"vr": "CS", "Value": ["CT"]}));
}

#[test]
fn inline_binary_without_bulk_data() {
    let json = write_dataset(&sample(), None);
    assert_eq!(json["00091001"], json!({"vr": "OB", "InlineBinary": "AQID"}));
    assert_eq!(json["7FE00010"], json!({"vr": "OW", "InlineBinary": "AAAAAAAAAAA="}));
}

#[test]
fn bulk_data_uris_with_tag_paths() {
    let bulk = BulkData { threshold: 1024, base_uri: "http://h/i/bulkdata" };
    let json = write_dataset(&sample(), Some(&bulk));
    assert_eq!(json["00091001"], json!({"vr": "OB", "InlineBinary": "AQID"}));
    assert_eq!(json["7FE00010"], json!({"vr": "OW", "BulkDataURI": "http://h/i/bulkdata/7FE00010"}));
    let item = &json["00283010"]["Value"][0];
    assert_eq!(item["00283006"], json!({"vr": "OW", "BulkDataURI": "http://h/i/bulkdata/00283010/0/00283006"}));
    assert_eq!(item["00080100"], json!({"vr": "SH", "Value": ["T-D1100"]}));
}

/// Explicit VR Little Endian bytes of one element with a short value length.
fn explicit_element(group: u16, element: u16, vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&group.to_le_bytes());
    out.extend_from_slice(&element.to_le_bytes());
    out.extend_from_slice(vr);
    out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    out.extend_from_slice(value);
    out
}

fn read_explicit_le(bytes: &[u8]) -> InMemDicomObject {
    let ts = dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN.erased();
    InMemDicomObject::read_dataset_with_ts(bytes, &ts).expect("valid data set")
}

#[test]
fn latin1_names_decoded_to_utf8() {
    let mut bytes = explicit_element(0x0008, 0x0005, b"CS", b"ISO_IR 100");
    bytes.extend(explicit_element(0x0010, 0x0010, b"PN", b"M\xfcller^J\xf6rg"));
    let json = write_dataset(&read_explicit_le(&bytes), None);
    assert_eq!(json["00100010"]["Value"][0]["Alphabetic"], "Müller^Jörg");
}

#[test]
fn utf8_names_kept() {
    let mut bytes = explicit_element(0x0008, 0x0005, b"CS", b"ISO_IR 192");
    bytes.extend(explicit_element(0x0010, 0x0010, b"PN", "Wang^XiaoDong=王^小東".as_bytes()));
    let json = write_dataset(&read_explicit_le(&bytes), None);
    assert_eq!(json["00100010"]["Value"][0]["Ideographic"], "王^小東");
}

#[test]
fn number_text_read_from_number_or_string() {
    assert_eq!(read_number_text(&json!(12)).as_deref(), Some("12"));
    assert_eq!(read_number_text(&json!(" 2.5 ")).as_deref(), Some("2.5"));
    assert_eq!(read_number_text(&json!(null)), None);
}

#[test]
fn vr_comes_first_and_tags_ascend() {
    let text = serde_json::Value::Object(write_dataset(&sample(), None)).to_string();
    assert!(text.starts_with(r#"{"00080050":{"vr":"SH"}"#), "{text}");
    assert!(text.find("\"00100010\"").unwrap() < text.find("\"7FE00010\"").unwrap());
}
