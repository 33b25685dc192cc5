//! The manifest: an embedded SQLite database (WAL) of the patients, studies,
//! series and instances in the store, for QIDO-RS / C-FIND and for recovery.
//!
//! # Shape
//!
//! One dedicated writer thread owns the only writing connection. Rows are
//! queued on a bounded crossbeam channel ([`ManifestConfig::queue`]); the
//! writer blocks for the first message, drains up to
//! [`ManifestConfig::max_batch`] rows, and writes them in one transaction with
//! cached prepared statements: upsert patient / study / series, insert or
//! replace the instance, advance `segments.indexed_end`, commit. A
//! [`Manifest::flush`] returns after the transaction containing every row
//! queued before it. Reads go through a separate read-only connection (WAL
//! readers never wait for the writer) and see committed rows only.
//!
//! The database runs with `synchronous=NORMAL`: a power loss may lose the last
//! commits, which is fine because the segments are the durable truth.
//! `segments.indexed_end` is the byte offset up to which every valid record of
//! a segment is in the manifest (committed in the same transaction as the
//! rows), so recovery re-enters what a crash lost by scanning each segment
//! from its [`Manifest::indexed_ends`] entry. Re-entering a record that is
//! already present is a no-op (see below), so recovery may overlap.
//!
//! The writer advances a segment's `indexed_end` to the end of the run of
//! records, from the segment's start, whose rows it committed
//! ([`InstanceRecord::record_end`]). Rows may arrive out of segment order,
//! because associations share a segment for small records. A row past a gap
//! counts once the rows before it are in. If a row fails to be written, the
//! writer logs it, reports it to the next `flush`/`close`, and stops advancing
//! that segment's `indexed_end` until the next start, so recovery re-enters it.
//!
//! # Schema
//!
//! See [`schema::DDL`]. Tables `patients`, `studies`, `series`, `instances`
//! hold the attributes QIDO-RS and C-FIND match on and return (PS3.18 6.7.1,
//! tables 6.7.1-1 / 6.7.1-2; PS3.4 C.6); `replaced_instances` the superseded
//! copies of duplicate SOP Instance UIDs; `segments` the `indexed_end` per
//! segment; `meta` the schema version ([`schema::SCHEMA_VERSION`]). The
//! derived study attributes ModalitiesInStudy, NumberOfStudyRelatedSeries and
//! NumberOfStudyRelatedInstances (and NumberOfSeriesRelatedInstances) are
//! computed on read by the views `study_summary` and `series_summary`.
//! There are indexes on PatientID (the patient key), PatientName, StudyDate,
//! AccessionNumber, Modality, the UIDs and every foreign key.
//!
//! # Patients and newest-wins attributes
//!
//! A patient is identified by (PatientID, IssuerOfPatientID); an absent value
//! is stored as the empty string. Instances without PatientID belong to one
//! patient per study: their issuer key is a marker with the Study Instance UID
//! ([`schema::ANONYMOUS_PATIENT_PREFIX`]), which reads show as absent. Patient, study and series rows remember the
//! store `sequence` of the record their attribute values came from; a record
//! whose sequence is at least that large overwrites all of them (absent
//! values included), an older one leaves them alone. So the newest record
//! wins, whatever order records are entered in (live or recovery):
//! when a study arrives with different patient attributes (name, birth date,
//! sex), the newest values replace the old ones; when it arrives under a
//! different (PatientID, Issuer), the study moves to that patient; a series
//! naming a different study moves likewise. Patients, studies and series
//! left without children are deleted.
//!
//! # Duplicate SOP Instance UIDs: the newest copy wins
//!
//! * Inserting an instance whose SOPInstanceUID exists with a **lower**
//!   `sequence`: the old row's location and sequence go to
//!   `replaced_instances` (with `replaced_at_ms` and `replaced_by_sequence`),
//!   and the row is updated to the new copy, including its series / study /
//!   patient if they changed. Logged at info level with both sequences and
//!   locations; counted in `nectar_manifest_replaced_total`.
//! * Inserting one with a **lower** sequence than the existing row (recovery
//!   re-entering an older record): the incoming copy is recorded in
//!   `replaced_instances` instead, and nothing else changes. Also logged and
//!   counted.
//! * The **same** sequence: already present, a no-op (idempotent re-entry).
//!   Re-entering a copy already in `replaced_instances` is a no-op too.
//!
//! # Metrics
//!
//! `nectar_manifest_batch_size` (histogram, rows per transaction),
//! `nectar_manifest_commit_duration_seconds` (histogram, BEGIN to COMMIT),
//! `nectar_manifest_rows_total` (rows committed, no-ops included),
//! `nectar_manifest_replaced_total`, `nectar_manifest_queue_full_total`
//! (inserts that found the queue full: once per row, however long it waited),
//! `nectar_manifest_errors_total` (rows that failed to commit), and the
//! gauge `nectar_manifest_queue_depth` (set after each batch).

mod delete;
mod event_api;
pub(crate) mod outbox;
mod query;
mod retrieve;
pub mod wado;
mod record;
pub mod schema;
mod writer;

#[cfg(test)]
mod outbox_tests;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Sender, TrySendError};
use rusqlite::Connection;

pub use record::{InstanceRecord, ManifestCounts, ReplacedInstance, StudySummary};
pub use delete::DeleteScope;
pub use outbox::ChangeKind;
pub use writer::StudyTouch;
pub use retrieve::{RetrieveInstance, RetrieveLevel};
use writer::{Ack, EventSink, Msg, Writer};

/// Sizing of the writer's queue and transactions.
#[derive(Debug, Clone)]
pub struct ManifestConfig {
    /// Capacity of the bounded queue in front of the writer.
    pub queue: usize,
    /// Rows per transaction, at most.
    pub max_batch: usize,
    /// Record events in the outbox with every change; `None`: no events.
    pub events: Option<Arc<crate::events::EventsConfig>>,
    /// Outbox events a bounded consumer (see [`Manifest::report_published`]) may
    /// leave unpublished before ingest waits for it.
    pub outbox_bound: Option<i64>,
}

impl Default for ManifestConfig {
    fn default() -> Self {
        ManifestConfig {
            queue: 4096,
            max_batch: 512,
            events: None,
            outbox_bound: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("manifest I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The queue is full; the row is handed back.
    #[error("manifest queue is full")]
    QueueFull(Box<InstanceRecord>),
    /// The manifest was closed.
    #[error("manifest is closed")]
    Closed,
    /// The writer thread stopped without being closed (it panicked).
    #[error("manifest writer thread is gone")]
    WriterGone,
    /// Rows queued before a flush / close failed to commit; recovery will
    /// re-enter them from the segments on the next start.
    #[error("manifest writer failed to commit rows: {0}")]
    Write(String),
    #[error("manifest schema version {found} is not the supported version {expected}")]
    SchemaVersion { found: String, expected: i64 },
    #[error("manifest database refused WAL mode (journal_mode = {0})")]
    NotWal(String),
    #[error("this manifest records no events")]
    EventsDisabled,
}

struct Shared {
    tx: Sender<Msg>,
    path: PathBuf,
    reader: Mutex<Connection>,
    writer: Mutex<Option<JoinHandle<()>>>,
    closed: AtomicBool,
    events: Option<SharedEvents>,
}

/// The manifest's ends of the event machinery.
struct SharedEvents {
    /// Expands the short bodies of instance events as they are read.
    config: Arc<crate::events::EventsConfig>,
    head: Arc<tokio::sync::watch::Sender<i64>>,
    touches: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<StudyTouch>>>,
    /// Outbox position up to which the bounded consumer has published.
    published: Arc<AtomicI64>,
    /// The connection consumers write their cursors with (not the writer's:
    /// the writer may be waiting for them).
    cursors: Mutex<Option<Connection>>,
}

impl Shared {
    fn reader(&self) -> MutexGuard<'_, Connection> {
        self.reader.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stop(&self) -> Result<(), ManifestError> {
        self.closed.store(true, Ordering::SeqCst);
        if let Some(events) = &self.events {
            // A writer holding ingest back for an absent consumer lets go: the
            // events stay in the outbox for the next start.
            events.published.store(i64::MAX, Ordering::Release);
        }
        let handle = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(handle) = handle else {
            return Ok(());
        };
        let (ack_tx, ack_rx) = crossbeam_channel::bounded(1);
        let report = match self.tx.send(Msg::Close(Ack::Blocking(ack_tx))) {
            Ok(()) => ack_rx.recv().map_err(|_| ManifestError::WriterGone),
            Err(_) => Err(ManifestError::WriterGone),
        };
        let joined = handle.join();
        match (report, joined) {
            (_, Err(_)) => Err(ManifestError::WriterGone),
            (Err(e), _) => Err(e),
            (Ok(Err(text)), _) => Err(ManifestError::Write(text)),
            (Ok(Ok(())), _) => Ok(()),
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::error!(error = %e, "closing the manifest on drop");
        }
    }
}

/// A handle on the manifest; clones share the writer thread. Dropping the last
/// handle closes it like [`Manifest::close`] (blocking until committed).
#[derive(Clone)]
pub struct Manifest {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Manifest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manifest")
            .field("path", &self.shared.path)
            .field("queued", &self.shared.tx.len())
            .finish()
    }
}

fn describe_metrics() {
    metrics::describe_histogram!(
        "nectar_manifest_batch_size",
        "Rows written per manifest transaction"
    );
    metrics::describe_histogram!(
        "nectar_manifest_commit_duration_seconds",
        metrics::Unit::Seconds,
        "Duration of one manifest transaction, BEGIN to COMMIT"
    );
    metrics::describe_counter!(
        "nectar_manifest_rows_total",
        "Rows committed to the manifest"
    );
    metrics::describe_counter!(
        "nectar_manifest_replaced_total",
        "Duplicate SOP Instance UIDs: copies moved to replaced_instances"
    );
    metrics::describe_counter!(
        "nectar_manifest_queue_full_total",
        "Manifest inserts that found the writer queue full"
    );
    metrics::describe_counter!(
        "nectar_manifest_errors_total",
        "Manifest rows that failed to commit"
    );
    metrics::describe_gauge!(
        "nectar_manifest_queue_depth",
        "Rows and requests waiting for the manifest writer"
    );
}

impl Manifest {
    /// Opens or creates `<path>` (e.g. data_dir/manifest.sqlite3) in WAL mode
    /// (synchronous=NORMAL: the segments are the durable truth and recovery
    /// re-enters what a crash lost, using `segments.indexed_end`), creates the
    /// schema, starts the writer thread.
    pub fn open(path: &Path, config: ManifestConfig) -> Result<Manifest, ManifestError> {
        describe_metrics();
        let conn = schema::open_writer(path)?;
        let reader = schema::open_reader(path)?;
        let (tx, rx) = crossbeam_channel::bounded(config.queue.max(1));
        let (sink, events) = match &config.events {
            None => (None, None),
            Some(events_config) => {
                let store_id = outbox::store_id(&conn)?;
                let head = Arc::new(tokio::sync::watch::channel(outbox::head(&conn)?).0);
                let (touches_tx, touches_rx) = tokio::sync::mpsc::unbounded_channel();
                let published = Arc::new(AtomicI64::new(i64::MAX));
                let sink = EventSink {
                    config: events_config.clone(),
                    store_id,
                    head: head.clone(),
                    touches: touches_tx,
                    bound: config.outbox_bound.map(|bound| (bound, published.clone())),
                };
                let shared = SharedEvents {
                    config: events_config.clone(),
                    head,
                    touches: Mutex::new(Some(touches_rx)),
                    published,
                    cursors: Mutex::new(None),
                };
                (Some(sink), Some(shared))
            }
        };
        let writer = Writer::new(conn, rx, config.max_batch, sink);
        let handle = std::thread::Builder::new()
            .name("nectar-manifest".into())
            .spawn(move || writer.run())?;
        Ok(Manifest {
            shared: Arc::new(Shared {
                tx,
                path: path.to_path_buf(),
                reader: Mutex::new(reader),
                writer: Mutex::new(Some(handle)),
                closed: AtomicBool::new(false),
                events,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// A new read-only connection to the database, for queries of one's own
    /// (QIDO-RS, C-FIND). It reads committed rows only.
    pub fn read_connection(&self) -> Result<Connection, ManifestError> {
        schema::open_reader(&self.shared.path)
    }

    /// Rows and requests waiting in the queue.
    pub fn queued(&self) -> usize {
        self.shared.tx.len()
    }

    fn check_open(&self) -> Result<(), ManifestError> {
        if self.shared.closed.load(Ordering::SeqCst) {
            Err(ManifestError::Closed)
        } else {
            Ok(())
        }
    }

    /// Queues a row without blocking; `Err(QueueFull(row))` gives it back
    /// when the queue is full.
    pub fn try_insert(&self, row: InstanceRecord) -> Result<(), ManifestError> {
        self.check_open()?;
        match self.shared.tx.try_send(Msg::Insert(Box::new(row))) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(Msg::Insert(row))) => {
                metrics::counter!("nectar_manifest_queue_full_total").increment(1);
                Err(ManifestError::QueueFull(row))
            }
            Err(TrySendError::Full(_)) => unreachable!("try_send hands back what it was given"),
            Err(TrySendError::Disconnected(_)) => Err(ManifestError::Closed),
        }
    }

    /// Queues a row, waiting asynchronously (short tokio sleeps, counted once
    /// per row in `nectar_manifest_queue_full_total`) while the queue is full.
    /// Never blocks the thread. Needs a tokio runtime with time enabled.
    /// If the future is dropped before it completes, the row was not queued.
    pub async fn insert(&self, row: InstanceRecord) -> Result<(), ManifestError> {
        self.check_open()?;
        let mut msg = Msg::Insert(Box::new(row));
        let mut delay = Duration::from_micros(250);
        let mut counted = false;
        loop {
            match self.shared.tx.try_send(msg) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(back)) => {
                    if !counted {
                        metrics::counter!("nectar_manifest_queue_full_total").increment(1);
                        counted = true;
                    }
                    msg = back;
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(5));
                    self.check_open()?;
                }
                Err(TrySendError::Disconnected(_)) => return Err(ManifestError::Closed),
            }
        }
    }

    /// Blocking: queues a row (for recovery on a plain thread).
    pub fn insert_blocking(&self, row: InstanceRecord) -> Result<(), ManifestError> {
        self.check_open()?;
        match self.shared.tx.try_send(Msg::Insert(Box::new(row))) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(msg)) => {
                metrics::counter!("nectar_manifest_queue_full_total").increment(1);
                self.shared.tx.send(msg).map_err(|_| ManifestError::Closed)
            }
            Err(TrySendError::Disconnected(_)) => Err(ManifestError::Closed),
        }
    }

    fn flush_result(&self, report: Option<writer::Report>) -> Result<(), ManifestError> {
        match report {
            Some(Ok(())) => Ok(()),
            Some(Err(text)) => Err(ManifestError::Write(text)),
            // The writer went away: fine if it was closed (everything queued
            // was committed then), an error otherwise.
            None if self.shared.closed.load(Ordering::SeqCst) => Ok(()),
            None => Err(ManifestError::WriterGone),
        }
    }

    /// Blocking: waits until every row queued before this call is committed
    /// to SQLite. `Err(Write)` if some row queued since the previous flush
    /// failed to commit. After [`Manifest::close`] it returns `Ok` at once.
    pub fn flush(&self) -> Result<(), ManifestError> {
        let (ack_tx, ack_rx) = crossbeam_channel::bounded(1);
        let report = match self.shared.tx.send(Msg::Flush(Ack::Blocking(ack_tx))) {
            Ok(()) => ack_rx.recv().ok(),
            Err(_) => None,
        };
        self.flush_result(report)
    }

    /// [`Manifest::flush`] for async code: waits without blocking the thread.
    pub async fn flush_async(&self) -> Result<(), ManifestError> {
        let (ack_tx, ack_rx) = tokio::sync::oneshot::channel();
        let mut msg = Msg::Flush(Ack::Async(ack_tx));
        let mut delay = Duration::from_micros(250);
        loop {
            match self.shared.tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) => {
                    msg = back;
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(5));
                }
                Err(TrySendError::Disconnected(_)) => return self.flush_result(None),
            }
        }
        self.flush_result(ack_rx.await.ok())
    }

    /// Per-segment byte offsets up to which the manifest contains every record.
    pub fn indexed_ends(&self) -> Result<HashMap<u64, u64>, ManifestError> {
        Ok(query::indexed_ends(&self.shared.reader())?)
    }

    /// Every instance's (SOPInstanceUID, Location, sequence), for fsck, in
    /// (segment, offset) order.
    pub fn instance_locations(&self) -> Result<Vec<(String, crate::Location, u64)>, ManifestError> {
        Ok(query::instance_locations(&self.shared.reader())?)
    }

    /// The store locations of every superseded copy, for fsck.
    pub fn replaced_locations(&self) -> Result<Vec<crate::Location>, ManifestError> {
        Ok(query::replaced_locations(&self.shared.reader())?)
    }

    /// Returns the store locations of every deleted instance, for fsck.
    pub fn deleted_locations(&self) -> Result<Vec<crate::Location>, ManifestError> {
        Ok(delete::deleted_locations(&self.shared.reader())?)
    }

    /// Deletes the instances in `scope` from the manifest (their records stay
    /// in the segments) and returns how many there were.
    pub async fn delete(&self, scope: DeleteScope) -> Result<usize, ManifestError> {
        self.check_open()?;
        let (ack, answer) = tokio::sync::oneshot::channel();
        let tx = self.shared.tx.clone();
        tokio::task::spawn_blocking(move || tx.send(Msg::Delete { scope, ack }))
            .await
            .map_err(|_| ManifestError::WriterGone)?
            .map_err(|_| ManifestError::Closed)?;
        answer.await.map_err(|_| ManifestError::WriterGone)?.map_err(ManifestError::Write)
    }

    /// Row counts: patients, studies, series, instances, replaced.
    pub fn counts(&self) -> Result<ManifestCounts, ManifestError> {
        Ok(query::counts(&self.shared.reader())?)
    }

    /// The current copy of an instance, with the newest patient / study /
    /// series attributes.
    pub fn instance(
        &self,
        sop_instance_uid: &str,
    ) -> Result<Option<InstanceRecord>, ManifestError> {
        Ok(query::instance(&self.shared.reader(), sop_instance_uid)?)
    }

    /// The derived attributes of a study, if it exists.
    pub fn study_summary(
        &self,
        study_instance_uid: &str,
    ) -> Result<Option<StudySummary>, ManifestError> {
        Ok(query::study_summary(
            &self.shared.reader(),
            study_instance_uid,
        )?)
    }

    /// The superseded copies of a SOP Instance UID, oldest first.
    pub fn replaced_instances(
        &self,
        sop_instance_uid: &str,
    ) -> Result<Vec<ReplacedInstance>, ManifestError> {
        Ok(query::replaced_instances(
            &self.shared.reader(),
            sop_instance_uid,
        )?)
    }

    /// Flushes and stops the writer thread. Later inserts fail with
    /// `Closed`; reads keep working. Closing twice is fine.
    pub fn close(&self) -> Result<(), ManifestError> {
        self.shared.stop()
    }
}
