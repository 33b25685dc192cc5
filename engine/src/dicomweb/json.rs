//! The DICOM JSON Model (PS3.18 annex F): data sets written as JSON objects
//! keyed by `GGGGEEEE` tags, each attribute with its `vr` and a `Value`,
//! `InlineBinary` or `BulkDataURI`.
//!
//! Choices where the standard leaves room:
//! - IS and DS values are JSON numbers when they parse as finite numbers,
//!   else the original strings, so a malformed stored value is not lost.
//!   PS3.18 annex F calls for numbers, so readers should accept both.
//! - Strings arrive decoded to UTF-8 by dicom-object according to Specific
//!   Character Set (0008,0005); that attribute is written as stored.
//! - An attribute with zero-length value has `vr` and no `Value`.

use base64::Engine;
use dicom_core::header::Header;
use dicom_core::value::{PrimitiveValue, Value as DicomValue};
use dicom_core::{Tag, VR};
use dicom_object::mem::{InMemDicomObject, InMemElement};
use serde_json::{json, Map, Number, Value};

/// Pixel Data (7FE0,0010), Float Pixel Data (7FE0,0008), Double Float Pixel Data (7FE0,0009).
const PIXEL_DATA_TAGS: [Tag; 3] = [Tag(0x7FE0, 0x0010), Tag(0x7FE0, 0x0008), Tag(0x7FE0, 0x0009)];

/// When binary values are written as a `BulkDataURI` instead of inline.
#[derive(Debug, Clone)]
pub struct BulkData<'a> {
    /// Binary values longer than this many bytes go to bulk data; pixel data always does.
    pub threshold: usize,
    /// URI the tag path is appended to, e.g. `http://host/dicomweb/studies/1/series/2/instances/3/bulkdata`.
    pub base_uri: &'a str,
}

/// Writes a data set. Without `bulk_data`, binary values are inline and
/// encapsulated pixel data is written without a value.
pub fn write_dataset(object: &InMemDicomObject, bulk_data: Option<&BulkData<'_>>) -> Map<String, Value> {
    write_items(object, bulk_data, "")
}

fn write_items(object: &InMemDicomObject, bulk_data: Option<&BulkData<'_>>, path: &str) -> Map<String, Value> {
    let mut out = Map::new();
    for element in object.iter() {
        let tag = element.tag();
        let key = tag_key(tag);
        let element_path = format!("{path}{key}");
        out.insert(key, write_element(element, bulk_data, &element_path));
    }
    out
}

/// Formats the JSON key of a tag: eight upper-case hex digits.
pub fn tag_key(tag: Tag) -> String {
    format!("{:04X}{:04X}", tag.group(), tag.element())
}

fn write_element(element: &InMemElement, bulk_data: Option<&BulkData<'_>>, path: &str) -> Value {
    let vr = element.vr();
    let mut attribute = Map::new();
    attribute.insert("vr".into(), Value::String(vr.to_string().to_string()));
    match element.value() {
        DicomValue::Sequence(sequence) => {
            let items: Vec<Value> = sequence
                .items()
                .iter()
                .enumerate()
                .map(|(index, item)| Value::Object(write_items(item, bulk_data, &format!("{path}/{index}/"))))
                .collect();
            if !items.is_empty() {
                attribute.insert("Value".into(), Value::Array(items));
            }
        }
        DicomValue::PixelSequence(_) => {
            if let Some(bulk_data) = bulk_data {
                attribute.insert("BulkDataURI".into(), Value::String(format!("{}/{path}", bulk_data.base_uri)));
            }
        }
        DicomValue::Primitive(value) => write_primitive(&mut attribute, element.tag(), vr, value, bulk_data, path),
    }
    Value::Object(attribute)
}

fn write_primitive(
    attribute: &mut Map<String, Value>,
    tag: Tag,
    vr: VR,
    value: &PrimitiveValue,
    bulk_data: Option<&BulkData<'_>>,
    path: &str,
) {
    if value.calculate_byte_len() == 0 {
        return;
    }
    if is_binary(vr) {
        let bytes = value.to_bytes();
        let as_bulk = bulk_data.filter(|bulk| PIXEL_DATA_TAGS.contains(&tag) || bytes.len() > bulk.threshold);
        match as_bulk {
            Some(bulk) => {
                attribute.insert("BulkDataURI".into(), Value::String(format!("{}/{path}", bulk.base_uri)));
            }
            None => {
                let encoded = base64::engine::general_purpose::STANDARD.encode(&bytes);
                attribute.insert("InlineBinary".into(), Value::String(encoded));
            }
        }
        return;
    }
    let values = match vr {
        VR::PN => strings(value).iter().map(|name| person_name(name)).collect(),
        VR::IS | VR::DS => strings(value).iter().map(|text| decimal_or_integer(text, vr)).collect(),
        VR::AT => tags(value),
        VR::US | VR::SS | VR::UL | VR::SL | VR::FL | VR::FD | VR::SV | VR::UV => numbers(value),
        VR::LT | VR::ST | VR::UT | VR::UR => vec![text_or_null(value.to_str().trim_end_matches([' ', '\0']))],
        _ => strings(value).iter().map(|text| text_or_null(text)).collect(),
    };
    if !values.is_empty() {
        attribute.insert("Value".into(), Value::Array(values));
    }
}

fn is_binary(vr: VR) -> bool {
    matches!(vr, VR::OB | VR::OD | VR::OF | VR::OL | VR::OV | VR::OW | VR::UN)
}

/// Splits the values of a string VR, each without its padding.
fn strings(value: &PrimitiveValue) -> Vec<String> {
    value.to_multi_str().iter().map(|text| text.trim_matches([' ', '\0']).to_string()).collect()
}

fn text_or_null(text: &str) -> Value {
    if text.is_empty() {
        Value::Null
    } else {
        Value::String(text.to_string())
    }
}

/// Writes a PN value as its Alphabetic, Ideographic and Phonetic component groups.
fn person_name(name: &str) -> Value {
    if name.is_empty() {
        return Value::Null;
    }
    let mut groups = Map::new();
    for (key, group) in ["Alphabetic", "Ideographic", "Phonetic"].into_iter().zip(name.split('=')) {
        if !group.is_empty() {
            groups.insert(key.into(), Value::String(group.to_string()));
        }
    }
    Value::Object(groups)
}

fn decimal_or_integer(text: &str, vr: VR) -> Value {
    if text.is_empty() {
        return Value::Null;
    }
    if vr == VR::IS {
        if let Ok(integer) = text.parse::<i64>() {
            return Value::Number(integer.into());
        }
    }
    match text.parse::<f64>().ok().and_then(Number::from_f64) {
        Some(number) if vr == VR::DS => Value::Number(number),
        _ => Value::String(text.to_string()),
    }
}

fn tags(value: &PrimitiveValue) -> Vec<Value> {
    match value {
        PrimitiveValue::Tags(tags) => tags.iter().map(|tag| Value::String(tag_key(*tag))).collect(),
        other => other
            .to_bytes()
            .chunks_exact(4)
            .map(|pair| {
                let group = u16::from_le_bytes([pair[0], pair[1]]);
                let element = u16::from_le_bytes([pair[2], pair[3]]);
                Value::String(tag_key(Tag(group, element)))
            })
            .collect(),
    }
}

fn numbers(value: &PrimitiveValue) -> Vec<Value> {
    match value {
        PrimitiveValue::U8(values) => values.iter().map(|v| json!(v)).collect(),
        PrimitiveValue::I16(values) => values.iter().map(|v| json!(v)).collect(),
        PrimitiveValue::U16(values) => values.iter().map(|v| json!(v)).collect(),
        PrimitiveValue::I32(values) => values.iter().map(|v| json!(v)).collect(),
        PrimitiveValue::U32(values) => values.iter().map(|v| json!(v)).collect(),
        PrimitiveValue::I64(values) => values.iter().map(|v| json!(v)).collect(),
        PrimitiveValue::U64(values) => values.iter().map(|v| json!(v)).collect(),
        PrimitiveValue::F32(values) => values.iter().map(|v| float(f64::from(*v))).collect(),
        PrimitiveValue::F64(values) => values.iter().map(|v| float(*v)).collect(),
        other => strings(other).iter().map(|text| decimal_or_integer(text, VR::DS)).collect(),
    }
}

/// Writes a finite float as a number. NaN and the infinities, which JSON
/// cannot represent, become the strings "NaN", "inf" and "-inf".
fn float(value: f64) -> Value {
    Number::from_f64(value).map(Value::Number).unwrap_or_else(|| Value::String(value.to_string()))
}

/// Builds one attribute with string values, for response data sets.
pub fn attribute(vr: &str, values: &[&str]) -> Value {
    json!({ "vr": vr, "Value": values })
}

/// Builds one attribute with a US value.
pub fn unsigned_short(value: u16) -> Value {
    json!({ "vr": "US", "Value": [value] })
}

/// Builds one SQ attribute.
pub fn sequence(items: Vec<Map<String, Value>>) -> Value {
    if items.is_empty() {
        return json!({ "vr": "SQ" });
    }
    json!({ "vr": "SQ", "Value": items })
}

/// Reads an IS or DS value from DICOM JSON, where it may be a number or a string.
pub fn read_number_text(value: &Value) -> Option<String> {
    match value {
        Value::Number(number) => Some(number.to_string()),
        Value::String(text) => Some(text.trim().to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
