//! The JSON bodies of the three event types, CloudEvents 1.0 structured mode.

use serde::Serialize;
use serde_json::{json, Map, Value};

use super::{event_type, EventsConfig};
use crate::manifest::InstanceRecord;

/// Wraps `data` in the CloudEvents attributes.
pub fn envelope(config: &EventsConfig, id: &str, kind: &str, subject: &str, time: &str, data: Value) -> Value {
    json!({
        "specversion": "1.0",
        "id": id,
        "source": config.source,
        "type": kind,
        "subject": subject,
        "time": time,
        "datacontenttype": "application/json",
        "data": data,
    })
}

/// The CloudEvents attributes around the data of one instance's event,
/// serialized straight to text: these bodies are written for every stored
/// instance, and building a `Value` tree first cost more than the insert.
#[derive(Serialize)]
struct InstanceEnvelope<'a, D> {
    specversion: &'static str,
    id: &'a str,
    source: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    subject: &'a str,
    time: &'a str,
    datacontenttype: &'static str,
    data: D,
}

impl<'a, D: Serialize> InstanceEnvelope<'a, D> {
    fn to_json(config: &'a EventsConfig, id: &'a str, kind: &'static str, row: &'a InstanceRecord, time: &'a str, data: D) -> String {
        let envelope = InstanceEnvelope {
            specversion: "1.0",
            id,
            source: &config.source,
            kind,
            subject: &row.sop_instance_uid,
            time,
            datacontenttype: "application/json",
            data,
        };
        serde_json::to_string(&envelope).expect("event bodies serialize: strings and integers only")
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StoredImage<'a> {
    #[serde(rename = "studyInstanceUID")]
    study_instance_uid: &'a str,
    #[serde(rename = "seriesInstanceUID")]
    series_instance_uid: &'a str,
    #[serde(rename = "sopInstanceUID")]
    sop_instance_uid: &'a str,
    #[serde(rename = "sopClassUID")]
    sop_class_uid: &'a str,
    #[serde(rename = "transferSyntaxUID")]
    transfer_syntax_uid: &'a str,
    attributes: Option<()>,
}

#[derive(Serialize)]
struct StoredLocation {
    segment: u64,
    offset: u64,
    length: u64,
    sequence: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StoredPlace<'a> {
    provider: &'a str,
    location: StoredLocation,
    internal_url: String,
    external_url: String,
}

#[derive(Serialize)]
struct ImageStoredData<'a> {
    image: StoredImage<'a>,
    store: StoredPlace<'a>,
}

#[derive(Serialize)]
struct DicomAvailableData<'a> {
    provider: &'a str,
    endpoint: String,
    #[serde(rename = "studyInstanceUID")]
    study_instance_uid: &'a str,
    #[serde(rename = "seriesInstanceUID")]
    series_instance_uid: &'a str,
    #[serde(rename = "sopInstanceUID")]
    sop_instance_uid: &'a str,
}

/// Returns the ImageStoredEvent of a stored instance as JSON text.
/// `image.attributes` is left null here: the outbox fills it from the stored
/// record when it delivers the event.
pub fn image_stored(config: &EventsConfig, id: &str, time: &str, row: &InstanceRecord) -> String {
    let (study, series, sop) = (&row.study_instance_uid, &row.series_instance_uid, &row.sop_instance_uid);
    let data = ImageStoredData {
        image: StoredImage {
            study_instance_uid: study,
            series_instance_uid: series,
            sop_instance_uid: sop,
            sop_class_uid: &row.sop_class_uid,
            transfer_syntax_uid: &row.transfer_syntax_uid,
            attributes: None,
        },
        store: StoredPlace {
            provider: &config.provider,
            location: StoredLocation {
                segment: row.location.segment,
                offset: row.location.offset,
                length: row.location.length,
                sequence: row.sequence,
            },
            internal_url: EventsConfig::instance_url(&config.internal_base_url, study, series, sop),
            external_url: EventsConfig::instance_url(&config.external_base_url, study, series, sop),
        },
    };
    InstanceEnvelope::to_json(config, id, event_type::IMAGE_STORED, row, time, data)
}

/// Returns the DicomAvailableEvent of an instance as JSON text: the instance
/// is in the manifest and can be retrieved.
pub fn dicom_available(config: &EventsConfig, id: &str, time: &str, row: &InstanceRecord) -> String {
    let (study, series, sop) = (&row.study_instance_uid, &row.series_instance_uid, &row.sop_instance_uid);
    let data = DicomAvailableData {
        provider: &config.provider,
        endpoint: EventsConfig::instance_url(&config.external_base_url, study, series, sop),
        study_instance_uid: study,
        series_instance_uid: series,
        sop_instance_uid: sop,
    };
    InstanceEnvelope::to_json(config, id, event_type::DICOM_AVAILABLE, row, time, data)
}

/// One series of a study as a revision describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesView {
    pub series_instance_uid: String,
    /// Series-level attributes as DICOM JSON.
    pub attributes: Map<String, Value>,
    pub sop_instance_uids: Vec<String>,
}

/// A study as a revision describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct StudyView {
    pub study_instance_uid: String,
    pub study_date: Option<String>,
    /// Patient- and study-level attributes as DICOM JSON.
    pub attributes: Map<String, Value>,
    pub series: Vec<SeriesView>,
}

/// The instances added, replaced and deleted since the previous revision,
/// each as `<Series Instance UID>/<SOP Instance UID>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeSet {
    pub additions: Vec<String>,
    pub modifications: Vec<String>,
    pub deletions: Vec<String>,
}

/// StudyRevisionEvent number `revision` of a study.
pub fn study_revision(
    config: &EventsConfig,
    id: &str,
    time: &str,
    revision: i64,
    study: &StudyView,
    changes: &ChangeSet,
) -> Value {
    let uid = &study.study_instance_uid;
    let series: Vec<Value> = study
        .series
        .iter()
        .map(|s| {
            json!({
                "seriesInstanceUID": s.series_instance_uid,
                "attributes": s.attributes,
                "instances": s.sop_instance_uids,
                "endpoint": EventsConfig::series_url(&config.external_base_url, uid, &s.series_instance_uid),
            })
        })
        .collect();
    let data = json!({
        "revision": revision,
        "study": {
            "studyInstanceUID": uid,
            "studyDate": study.study_date,
            "attributes": study.attributes,
            "series": series,
            "endpoint": format!("{}/studies/{uid}", config.external_base_url),
        },
        "changeSet": {
            "additions": changes.additions,
            "modifications": changes.modifications,
            "deletions": changes.deletions,
        },
    });
    envelope(config, id, event_type::STUDY_REVISION, uid, time, data)
}

/// Adds one attribute of a string VR to a DICOM JSON object (PS3.18 annex F):
/// PN values become Alphabetic / Ideographic / Phonetic groups, IS a number,
/// multiple values split at backslashes, and an absent value an attribute
/// without "Value".
pub fn put_attribute(object: &mut Map<String, Value>, tag: u32, vr: &str, value: Option<&str>) {
    let mut attribute = Map::new();
    attribute.insert("vr".into(), Value::from(vr));
    if let Some(value) = value.filter(|v| !v.is_empty()) {
        let values: Vec<Value> = value.split('\\').map(|v| json_value(vr, v)).collect();
        attribute.insert("Value".into(), Value::Array(values));
    }
    object.insert(format!("{tag:08X}"), Value::Object(attribute));
}

fn json_value(vr: &str, value: &str) -> Value {
    match vr {
        "PN" => {
            let mut groups = Map::new();
            for (name, group) in ["Alphabetic", "Ideographic", "Phonetic"].iter().zip(value.split('=')) {
                if !group.is_empty() {
                    groups.insert((*name).into(), Value::from(group));
                }
            }
            Value::Object(groups)
        }
        "IS" => value.trim().parse::<i64>().map(Value::from).unwrap_or_else(|_| Value::from(value)),
        _ => Value::from(value),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::Location;

    pub(crate) fn config() -> EventsConfig {
        EventsConfig {
            source: "nectar://test".into(),
            provider: "nectar".into(),
            internal_base_url: "http://nectar-0:8080/dicomweb".into(),
            external_base_url: "https://pacs.example/dicomweb".into(),
            quiet_period: std::time::Duration::from_secs(30),
            retention: std::time::Duration::from_secs(60),
        }
    }

    pub(crate) fn row() -> InstanceRecord {
        InstanceRecord {
            sop_instance_uid: "1.2.3.3".into(),
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
            transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
            study_instance_uid: "1.2.3.1".into(),
            series_instance_uid: "1.2.3.2".into(),
            location: Location { segment: 7, offset: 64, length: 1000 },
            sequence: 42,
            ..Default::default()
        }
    }

    #[test]
    fn image_stored_text_keeps_the_key_order() {
        let text = image_stored(&config(), "s-42-stored", "2026-12-05T00:00:00.000Z", &row());
        assert_eq!(
            text,
            concat!(
                r#"{"specversion":"1.0","id":"s-42-stored","source":"nectar://test","type":"ImageStoredEvent","#,
                r#""subject":"1.2.3.3","time":"2026-12-05T00:00:00.000Z","datacontenttype":"application/json","#,
                r#""data":{"image":{"studyInstanceUID":"1.2.3.1","seriesInstanceUID":"1.2.3.2","#,
                r#""sopInstanceUID":"1.2.3.3","sopClassUID":"1.2.840.10008.5.1.4.1.1.2","#,
                r#""transferSyntaxUID":"1.2.840.10008.1.2.1","attributes":null},"#,
                r#""store":{"provider":"nectar","location":{"segment":7,"offset":64,"length":1000,"sequence":42},"#,
                r#""internalUrl":"http://nectar-0:8080/dicomweb/studies/1.2.3.1/series/1.2.3.2/instances/1.2.3.3","#,
                r#""externalUrl":"https://pacs.example/dicomweb/studies/1.2.3.1/series/1.2.3.2/instances/1.2.3.3"}}}"#,
            )
        );
    }

    #[test]
    fn dicom_available_text_keeps_the_key_order() {
        let text = dicom_available(&config(), "s-42-available", "2026-12-05T00:00:00.000Z", &row());
        assert_eq!(
            text,
            concat!(
                r#"{"specversion":"1.0","id":"s-42-available","source":"nectar://test","type":"DicomAvailableEvent","#,
                r#""subject":"1.2.3.3","time":"2026-12-05T00:00:00.000Z","datacontenttype":"application/json","#,
                r#""data":{"provider":"nectar","#,
                r#""endpoint":"https://pacs.example/dicomweb/studies/1.2.3.1/series/1.2.3.2/instances/1.2.3.3","#,
                r#""studyInstanceUID":"1.2.3.1","seriesInstanceUID":"1.2.3.2","sopInstanceUID":"1.2.3.3"}}"#,
            )
        );
    }

    #[test]
    fn attributes_follow_dicom_json() {
        let mut object = Map::new();
        put_attribute(&mut object, 0x0010_0010, "PN", Some("Yamada^Tarou=山田^太郎=やまだ^たろう"));
        put_attribute(&mut object, 0x0020_0011, "IS", Some("7"));
        put_attribute(&mut object, 0x0008_0061, "CS", Some("CT\\MR"));
        put_attribute(&mut object, 0x0008_0050, "SH", None);
        assert_eq!(
            Value::Object(object),
            json!({
                "00100010": {"vr": "PN", "Value": [{
                    "Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}]},
                "00200011": {"vr": "IS", "Value": [7]},
                "00080061": {"vr": "CS", "Value": ["CT", "MR"]},
                "00080050": {"vr": "SH"},
            })
        );
    }
}
