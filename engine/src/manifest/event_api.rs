//! The manifest's event interface: the outbox for its consumers, and the
//! study revision state for the study actors.

use std::sync::atomic::Ordering;

use rusqlite::Connection;

use super::{outbox, schema, Manifest, ManifestError, Msg, SharedEvents, StudyTouch};
use crate::events::OutboxEvent;
use crate::Location;

impl Manifest {
    fn events(&self) -> Result<&SharedEvents, ManifestError> {
        self.shared.events.as_ref().ok_or(ManifestError::EventsDisabled)
    }

    /// Returns whether this manifest records events.
    pub fn events_enabled(&self) -> bool {
        self.shared.events.is_some()
    }

    /// Subscribes to the newest outbox position, updated after every commit that adds events.
    pub fn subscribe_outbox(&self) -> Result<tokio::sync::watch::Receiver<i64>, ManifestError> {
        Ok(self.events()?.head.subscribe())
    }

    /// Returns the receiver of study change reports. Only the first caller gets it.
    pub fn take_study_touches(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<StudyTouch>> {
        let events = self.shared.events.as_ref()?;
        events.touches.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Emits the next revision of `study` if its newest change is still the
    /// one at `last_change_ms`; returns the revision number written.
    pub async fn emit_revision(&self, study: &str, last_change_ms: i64) -> Result<Option<i64>, ManifestError> {
        self.check_open()?;
        let (ack, answer) = tokio::sync::oneshot::channel();
        let msg = Msg::EmitRevision { study: study.to_owned(), last_change_ms, ack };
        let tx = self.shared.tx.clone();
        // The queue may be full of rows; wait for room off the runtime.
        tokio::task::spawn_blocking(move || tx.send(msg))
            .await
            .map_err(|_| ManifestError::WriterGone)?
            .map_err(|_| ManifestError::Closed)?;
        answer.await.map_err(|_| ManifestError::WriterGone)?.map_err(ManifestError::Write)
    }

    /// Studies waiting for their quiet period, with the time of their last change.
    pub fn waiting_studies(&self) -> Result<Vec<(String, i64)>, ManifestError> {
        Ok(outbox::waiting_studies(&self.shared.reader())?)
    }

    /// Up to `limit` outbox events after position `after`, in order, each with
    /// the record an ImageStoredEvent describes. Blocking (a short read).
    pub fn events_after(&self, after: i64, limit: usize) -> Result<Vec<(OutboxEvent, Option<Location>)>, ManifestError> {
        let config = self.shared.events.as_ref().map(|events| &*events.config);
        Ok(outbox::events_after(&self.shared.reader(), config, after, limit)?)
    }

    /// Returns the position `consumer` has read the outbox up to. Blocking.
    pub fn event_cursor(&self, consumer: &str) -> Result<i64, ManifestError> {
        self.with_cursor_connection(|conn| outbox::cursor(conn, consumer))
    }

    /// Records that `consumer` has read the outbox up to `seq`. Blocking.
    pub fn advance_event_cursor(&self, consumer: &str, seq: i64) -> Result<(), ManifestError> {
        self.with_cursor_connection(|conn| outbox::advance_cursor(conn, consumer, seq))
    }

    /// Reports to the writer how far the bounded consumer has published the
    /// outbox. Ingest waits while more than the bound is left unpublished.
    pub fn report_published(&self, seq: i64) {
        if let Some(events) = &self.shared.events {
            events.published.store(seq, Ordering::Release);
        }
    }

    fn with_cursor_connection<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, ManifestError> {
        let events = self.events()?;
        let mut slot = events.cursors.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(schema::open_cursor_writer(&self.shared.path)?);
        }
        Ok(f(slot.as_ref().expect("opened above"))?)
    }
}
