//! Instance events stored short. The outbox row of an ImageStoredEvent or a
//! DicomAvailableEvent keeps only the fields that differ between instances,
//! and the CloudEvent text is built from them when the event is read.
//!
//! The full text of the two events of an instance is about 1.7 KB. Storing
//! it cost the manifest writer about 7 microseconds per instance, measured
//! with `cargo bench --bench manifest` against empty bodies.

use super::{body, event_type, rfc3339_millis, EventsConfig};
use crate::manifest::InstanceRecord;
use crate::Location;

/// First character of a short body. A full body is a JSON object and starts with `{`.
const MARK: char = '\u{1}';

/// Separator of the fields: UIDs consist of digits and dots only.
const SEPARATOR: char = '\t';

/// Returns the short body of an instance's ImageStoredEvent.
pub fn image_stored(row: &InstanceRecord) -> String {
    let fields = [
        row.series_instance_uid.as_str(),
        &row.sop_instance_uid,
        &row.sop_class_uid,
        &row.transfer_syntax_uid,
        &row.sequence.to_string(),
    ];
    join(&fields)
}

/// Returns the short body of an instance's DicomAvailableEvent.
pub fn dicom_available(row: &InstanceRecord) -> String {
    join(&[row.series_instance_uid.as_str(), &row.sop_instance_uid])
}

fn join(fields: &[&str]) -> String {
    let mut text = String::with_capacity(1 + fields.iter().map(|f| f.len() + 1).sum::<usize>());
    text.push(MARK);
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            text.push(SEPARATOR);
        }
        text.push_str(field);
    }
    text
}

/// The stored parts of an outbox row an event is built from.
pub struct StoredEvent<'a> {
    pub id: &'a str,
    pub event_type: &'a str,
    pub study_instance_uid: &'a str,
    pub created_ms: i64,
    pub body: &'a str,
    pub record: Option<Location>,
}

/// Builds the CloudEvent text of a short body with the current `config`.
/// Returns `None` for a full body, and an error for a short body that is
/// malformed or of another event type.
pub fn expand(config: &EventsConfig, event: &StoredEvent<'_>) -> Option<Result<String, String>> {
    let fields = event.body.strip_prefix(MARK)?;
    let fields: Vec<&str> = fields.split(SEPARATOR).collect();
    let time = rfc3339_millis(event.created_ms);
    let mut row = InstanceRecord {
        study_instance_uid: event.study_instance_uid.to_owned(),
        ..InstanceRecord::default()
    };
    let text = match (event.event_type, fields.as_slice(), event.record) {
        (event_type::IMAGE_STORED, [series, sop, class, syntax, sequence], Some(location)) => {
            let Ok(sequence) = sequence.parse() else {
                return Some(Err(format!("invalid sequence {sequence:?} in a stored event")));
            };
            row.series_instance_uid = (*series).to_owned();
            row.sop_instance_uid = (*sop).to_owned();
            row.sop_class_uid = (*class).to_owned();
            row.transfer_syntax_uid = (*syntax).to_owned();
            row.sequence = sequence;
            row.location = location;
            body::image_stored(config, event.id, &time, &row)
        }
        (event_type::DICOM_AVAILABLE, [series, sop], _) => {
            row.series_instance_uid = (*series).to_owned();
            row.sop_instance_uid = (*sop).to_owned();
            body::dicom_available(config, event.id, &time, &row)
        }
        _ => return Some(Err(format!("invalid short body of a {} event with {} fields", event.event_type, fields.len()))),
    };
    Some(Ok(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::body::tests::{config, row};

    fn stored<'a>(id: &'a str, kind: &'a str, body: &'a str, record: Option<Location>) -> StoredEvent<'a> {
        StoredEvent { id, event_type: kind, study_instance_uid: "1.2.3.1", created_ms: 1_764_892_800_123, body, record }
    }

    #[test]
    fn expanded_stored_event_equals_full() {
        let short = image_stored(&row());
        let event = stored("s-42-stored", event_type::IMAGE_STORED, &short, Some(row().location));
        let full = body::image_stored(&config(), "s-42-stored", &rfc3339_millis(1_764_892_800_123), &row());
        assert_eq!(expand(&config(), &event), Some(Ok(full)));
    }

    #[test]
    fn expanded_available_event_equals_full() {
        let short = dicom_available(&row());
        let event = stored("s-42-available", event_type::DICOM_AVAILABLE, &short, None);
        let full = body::dicom_available(&config(), "s-42-available", &rfc3339_millis(1_764_892_800_123), &row());
        assert_eq!(expand(&config(), &event), Some(Ok(full)));
    }

    #[test]
    fn full_body_is_left_alone() {
        let event = stored("x", event_type::STUDY_REVISION, "{\"specversion\":\"1.0\"}", None);
        assert_eq!(expand(&config(), &event), None);
    }

    #[test]
    fn malformed_short_body_is_an_error() {
        let event = stored("x", event_type::IMAGE_STORED, "\u{1}1.2\t1.3", Some(row().location));
        assert!(matches!(expand(&config(), &event), Some(Err(_))));
        let short = image_stored(&row());
        let event = stored("x", event_type::IMAGE_STORED, &short, None);
        assert!(matches!(expand(&config(), &event), Some(Err(_))), "a stored event without its record");
    }
}
