//! Events: what happened to the store, as CloudEvents 1.0 in structured JSON.
//!
//! Three types: `ImageStoredEvent` and `DicomAvailableEvent` for every new
//! or replaced instance, and `StudyRevisionEvent` when a study has been quiet
//! for the quiet period. The manifest writes each event into its outbox in
//! the transaction of the change it describes (see `manifest::outbox`).
//!
//! The consumers, `GET /events` and the NATS publisher, read the outbox in
//! order, each from its own cursor, so delivery is at least once and in
//! order. The study actors get change reports from the manifest writer
//! instead. Event ids are derived from the store's id and the record's store
//! sequence (or the study and revision number). An event written twice, for
//! example when recovery enters a record again, carries the same id, so a
//! consumer drops the copy.

pub mod body;
pub mod compact;
pub mod delete_routes;
pub mod deliver;
pub mod nats;
pub mod sse;
pub mod studies;
mod time;

use std::time::Duration;

pub use time::rfc3339_millis;

/// The CloudEvents `type` of each event.
pub mod event_type {
    pub const IMAGE_STORED: &str = "ImageStoredEvent";
    pub const DICOM_AVAILABLE: &str = "DicomAvailableEvent";
    pub const STUDY_REVISION: &str = "StudyRevisionEvent";

    /// Every type, for the metrics.
    pub const ALL: [&str; 3] = [IMAGE_STORED, DICOM_AVAILABLE, STUDY_REVISION];
}

/// The naming and URLs of events.
#[derive(Debug, Clone)]
pub struct EventsConfig {
    /// CloudEvents `source`: names this nectar instance.
    pub source: String,
    /// The `provider` named in ImageStoredEvent and DicomAvailableEvent.
    pub provider: String,
    /// Base URL of this instance's DICOMweb service as seen from inside the
    /// deployment, e.g. `http://nectar-0.nectar:8080/dicomweb`.
    pub internal_base_url: String,
    /// Base URL clients outside the deployment use.
    pub external_base_url: String,
    /// A study is stable after this long without a new, replaced or deleted instance.
    pub quiet_period: Duration,
    /// Outbox events older than this are deleted once every bounded consumer has published them.
    pub retention: Duration,
}

impl EventsConfig {
    /// Returns the WADO-RS URL of an instance under `base`.
    pub fn instance_url(base: &str, study: &str, series: &str, instance: &str) -> String {
        format!("{base}/studies/{study}/series/{series}/instances/{instance}")
    }

    /// Returns the WADO-RS URL of a series under `base`.
    pub fn series_url(base: &str, study: &str, series: &str) -> String {
        format!("{base}/studies/{study}/series/{series}")
    }
}

/// One event read back from the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEvent {
    /// Position in the outbox: strictly increasing, the order of delivery.
    pub seq: i64,
    /// CloudEvents `id`.
    pub id: String,
    /// CloudEvents `type`, one of [`event_type`].
    pub event_type: String,
    /// Study Instance UID the event belongs to: the unit of ordering.
    pub study_instance_uid: String,
    /// The CloudEvent in structured mode, as JSON text.
    pub body: String,
}
