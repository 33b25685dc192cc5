//! The writer's side of events: recording them with each change, emitting
//! study revisions, announcing commits, and holding ingest back while the
//! outbox is full.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use std::time::Duration;

use super::{now_ms, InstanceRecord, Outcome, StudyTouch, Writer};
use crate::events::event_type;
use crate::manifest::outbox::{self, ChangeKind};

/// How often the writer looks again while the outbox is over its bound.
const OUTBOX_FULL_POLL: Duration = Duration::from_millis(20);

/// Returns the counters of the two events each new instance records, taken
/// once: a macro call looks its key up in the recorder. `serve` installs the
/// recorder before it opens the manifest.
fn recorded_counters() -> &'static [metrics::Counter; 2] {
    static COUNTERS: OnceLock<[metrics::Counter; 2]> = OnceLock::new();
    COUNTERS.get_or_init(|| {
        [event_type::IMAGE_STORED, event_type::DICOM_AVAILABLE]
            .map(|kind| metrics::counter!("nectar_events_recorded_total", "type" => kind))
    })
}

impl Writer {
    /// Records the events of one applied row, inside its transaction, with the
    /// batch's event statements (`None` when events are off).
    pub(super) fn record_events(
        &self,
        statements: Option<&mut outbox::InstanceEventStatements<'_>>,
        row: &InstanceRecord,
        outcome: &Outcome,
    ) -> rusqlite::Result<()> {
        let (Some(sink), Some(statements)) = (&self.events, statements) else {
            return Ok(());
        };
        let kind = match outcome {
            Outcome::Inserted => ChangeKind::Addition,
            Outcome::Replaced { .. } => ChangeKind::Modification,
            Outcome::AlreadyPresent | Outcome::Superseded { .. } => return Ok(()),
        };
        outbox::record_instance(statements, &sink.store_id, row, kind, now_ms())?;
        for counter in recorded_counters() {
            counter.increment(1);
        }
        Ok(())
    }

    /// Starts the quiet-period wait of every study a new or replaced row of
    /// the batch belongs to: one statement per study, not per row.
    pub(super) fn touch_studies(&self, applied: &[(&InstanceRecord, Outcome)]) -> rusqlite::Result<()> {
        if self.events.is_none() {
            return Ok(());
        }
        let now = now_ms();
        let mut studies: BTreeMap<&str, ()> = BTreeMap::new();
        for (row, outcome) in applied {
            if matches!(outcome, Outcome::Inserted | Outcome::Replaced { .. }) {
                studies.insert(&row.study_instance_uid, ());
            }
        }
        for study in studies.keys() {
            outbox::touch_study(&self.conn, study, now)?;
        }
        Ok(())
    }

    /// Reports, after a commit, the changed studies to the study actors and
    /// the new end of the outbox to the consumers.
    pub(super) fn announce(&self, applied: &[(&InstanceRecord, Outcome)]) {
        let Some(sink) = &self.events else {
            return;
        };
        let mut studies: BTreeMap<&str, ()> = BTreeMap::new();
        for (row, outcome) in applied {
            if matches!(outcome, Outcome::Inserted | Outcome::Replaced { .. }) {
                studies.insert(&row.study_instance_uid, ());
            }
        }
        if studies.is_empty() {
            return;
        }
        let waiting = outbox::waiting_since(&self.conn, studies.keys().copied());
        for (study, last_change_ms) in waiting {
            let _ = sink.touches.send(StudyTouch { study_instance_uid: study, last_change_ms });
        }
        self.announce_head();
    }

    fn announce_head(&self) {
        let Some(sink) = &self.events else {
            return;
        };
        match outbox::head(&self.conn) {
            Ok(head) => {
                sink.head.send_replace(head);
                metrics::gauge!("nectar_outbox_head").set(head as f64);
                if let Some((_, published)) = &sink.bound {
                    let depth = head - published.load(Ordering::Acquire);
                    metrics::gauge!("nectar_outbox_depth").set(depth.max(0) as f64);
                }
            }
            Err(error) => tracing::error!(%error, "reading the outbox head failed"),
        }
    }

    /// Emits a study's next revision in its own transaction.
    pub(super) fn emit_revision(&mut self, study: &str, last_change_ms: i64) -> Result<Option<i64>, String> {
        let Some(sink) = &self.events else {
            return Ok(None);
        };
        let result = (|| {
            self.conn.execute_batch("BEGIN IMMEDIATE")?;
            let written =
                outbox::emit_revision(&self.conn, &sink.config, &sink.store_id, study, last_change_ms, now_ms());
            match written {
                Ok(revision) => {
                    self.conn.execute_batch("COMMIT")?;
                    Ok(revision)
                }
                Err(error) => {
                    let _ = self.conn.execute_batch("ROLLBACK");
                    Err(error)
                }
            }
        })();
        match result {
            Ok(revision) => {
                if revision.is_some() {
                    metrics::counter!("nectar_events_recorded_total", "type" => event_type::STUDY_REVISION).increment(1);
                    self.announce_head();
                }
                Ok(revision)
            }
            Err(error) => {
                tracing::error!(study_instance_uid = study, %error, "writing a study revision failed");
                Err(error.to_string())
            }
        }
    }

    /// Waits while the outbox contains more unread events than its bound, so
    /// the queue in front of the writer fills and associations slow down.
    pub(super) fn wait_for_outbox_room(&self) {
        let Some((bound, published)) = self.events.as_ref().and_then(|sink| sink.bound.as_ref()) else {
            return;
        };
        let mut waited = false;
        loop {
            let head = self.events.as_ref().map(|sink| *sink.head.borrow()).unwrap_or(0);
            let depth = head - published.load(Ordering::Acquire);
            metrics::gauge!("nectar_outbox_depth").set(depth.max(0) as f64);
            if depth <= *bound {
                break;
            }
            if !waited {
                metrics::counter!("nectar_outbox_full_total").increment(1);
                tracing::warn!(depth, bound, "outbox full: ingest waits for the event consumers");
                waited = true;
            }
            std::thread::sleep(OUTBOX_FULL_POLL);
        }
    }
}

impl Writer {
    /// Deletes outbox events older than the retention that the bounded
    /// consumer has published, at most once per [`PRUNE_EVERY`].
    pub(super) fn prune_outbox(&mut self) {
        let Some(sink) = &self.events else {
            return;
        };
        if self.last_prune.elapsed() < PRUNE_EVERY {
            return;
        }
        self.last_prune = std::time::Instant::now();
        let cutoff = now_ms() - sink.config.retention.as_millis() as i64;
        let published = sink.bound.as_ref().map(|(_, published)| published.load(Ordering::Acquire)).unwrap_or(i64::MAX);
        match outbox::prune(&self.conn, cutoff, published) {
            Ok(0) => {}
            Ok(pruned) => {
                metrics::counter!("nectar_outbox_pruned_total").increment(pruned as u64);
                tracing::debug!(pruned, "outbox events past their retention deleted");
            }
            Err(error) => tracing::warn!(%error, "pruning the outbox failed"),
        }
    }
}

/// How often the writer prunes the outbox.
pub(super) const PRUNE_EVERY: Duration = Duration::from_secs(60);
