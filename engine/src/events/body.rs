//! The JSON bodies of the three event types, CloudEvents 1.0 structured mode.

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

/// ImageStoredEvent for a stored instance. `image.attributes` is left null
/// here: the outbox fills it from the stored record when it delivers the event.
pub fn image_stored(config: &EventsConfig, id: &str, time: &str, row: &InstanceRecord) -> Value {
    let (study, series, sop) = (&row.study_instance_uid, &row.series_instance_uid, &row.sop_instance_uid);
    let data = json!({
        "image": {
            "studyInstanceUID": study,
            "seriesInstanceUID": series,
            "sopInstanceUID": sop,
            "sopClassUID": row.sop_class_uid,
            "transferSyntaxUID": row.transfer_syntax_uid,
            "attributes": Value::Null,
        },
        "store": {
            "provider": config.provider,
            "location": {
                "segment": row.location.segment,
                "offset": row.location.offset,
                "length": row.location.length,
                "sequence": row.sequence,
            },
            "internalUrl": EventsConfig::instance_url(&config.internal_base_url, study, series, sop),
            "externalUrl": EventsConfig::instance_url(&config.external_base_url, study, series, sop),
        },
    });
    envelope(config, id, event_type::IMAGE_STORED, sop, time, data)
}

/// DicomAvailableEvent: the instance is in the manifest and can be retrieved.
pub fn dicom_available(config: &EventsConfig, id: &str, time: &str, row: &InstanceRecord) -> Value {
    let (study, series, sop) = (&row.study_instance_uid, &row.series_instance_uid, &row.sop_instance_uid);
    let data = json!({
        "provider": config.provider,
        "endpoint": EventsConfig::instance_url(&config.external_base_url, study, series, sop),
        "studyInstanceUID": study,
        "seriesInstanceUID": series,
        "sopInstanceUID": sop,
    });
    envelope(config, id, event_type::DICOM_AVAILABLE, sop, time, data)
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
mod tests {
    use super::*;

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
