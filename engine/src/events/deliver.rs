//! Turning an outbox row into the bytes a consumer receives.

use serde_json::Value;

use super::{event_type, OutboxEvent};
use crate::storage::Store;
use crate::Location;

/// Returns the event as delivered: the stored body, with an
/// ImageStoredEvent's `image.attributes` filled from its record.
pub fn render(store: &Store, event: &OutboxEvent, record: Option<Location>) -> String {
    let (Some(location), event_type::IMAGE_STORED) = (record, event.event_type.as_str()) else {
        return event.body.clone();
    };
    match image_attributes(store, location) {
        // The body is compact serde_json output, and "attributes" is a key of
        // the image object only.
        Ok(attributes) => event.body.replacen("\"attributes\":null", &format!("\"attributes\":{attributes}"), 1),
        Err(error) => {
            tracing::warn!(event_id = event.id.as_str(), %error, "attributes of an ImageStoredEvent unreadable");
            event.body.clone()
        }
    }
}

/// Writes the top-level attributes before Pixel Data of a stored instance as
/// DICOM JSON. Binary values are inline (Pixel Data is never read).
fn image_attributes(store: &Store, location: Location) -> Result<Value, String> {
    let object = crate::query::read_stored(store, location)?;
    Ok(Value::Object(crate::dicomweb::json::write_dataset(&object, None)))
}

/// Returns the metrics label of an event type (a fixed set).
pub fn type_label(kind: &str) -> &'static str {
    event_type::ALL.iter().copied().find(|t| *t == kind).unwrap_or("other")
}
