//! The writer thread: the only connection that writes the manifest.

mod delete;
mod events;
mod indexed;
mod memo;

use std::collections::{HashMap, HashSet};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::Receiver;
use rusqlite::types::{Value, ValueRef};
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};

use super::record::InstanceRecord;
use crate::Location;

/// How long the writer keeps a batch open for more rows after its first one.
/// Rows are entered after their C-STORE-RSP, so this delays only when an
/// instance becomes visible in the manifest, never an acknowledgement. A query
/// flushes the writer first, and waits for at most the rest of one linger.
/// 10 ms rather than 5 means about half as many transactions under steady
/// ingest, and measured about 10% less nectar CPU per small instance.
const BATCH_LINGER: std::time::Duration = std::time::Duration::from_millis(10);

/// What the writer reports back to `flush` / `close`: `Err` carries the
/// descriptions of rows that failed to commit since the previous report.
pub(crate) type Report = Result<(), String>;

pub(crate) enum Ack {
    Blocking(crossbeam_channel::Sender<Report>),
    Async(tokio::sync::oneshot::Sender<Report>),
}

impl Ack {
    fn send(self, report: Report) {
        match self {
            Ack::Blocking(tx) => {
                let _ = tx.send(report);
            }
            Ack::Async(tx) => {
                let _ = tx.send(report);
            }
        }
    }
}

pub(crate) enum Msg {
    Insert(Box<InstanceRecord>),
    /// Delete the instances in a scope. The reply is how many there were.
    Delete {
        scope: crate::manifest::DeleteScope,
        ack: tokio::sync::oneshot::Sender<Result<usize, String>>,
    },
    /// Emit the next revision of a study if its newest change is still the
    /// one at `last_change_ms`. The reply is the revision written.
    EmitRevision {
        study: String,
        last_change_ms: i64,
        ack: tokio::sync::oneshot::Sender<Result<Option<i64>, String>>,
    },
    /// Answered after the transaction holding every row queued before it.
    Flush(Ack),
    /// Commit everything still queued, answer, and stop.
    Close(Ack),
}

/// The writer's event settings: the naming, the store's id, and the channels
/// that report its commits.
pub(crate) struct EventSink {
    pub config: std::sync::Arc<crate::events::EventsConfig>,
    pub store_id: String,
    /// The newest outbox position, for the consumers.
    pub head: std::sync::Arc<tokio::sync::watch::Sender<i64>>,
    /// Studies that changed, for the study actors.
    pub touches: tokio::sync::mpsc::UnboundedSender<StudyTouch>,
    /// Outbox positions the slowest bounded consumer has not published yet, at
    /// most; ingest waits above it. `None`: unbounded.
    pub bound: Option<(i64, std::sync::Arc<std::sync::atomic::AtomicI64>)>,
}

/// A study changed at `last_change_ms` and waits for its quiet period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StudyTouch {
    pub study_instance_uid: String,
    pub last_change_ms: i64,
}

pub(crate) struct Writer {
    conn: Connection,
    events: Option<EventSink>,
    last_prune: Instant,
    rx: Receiver<Msg>,
    max_batch: usize,
    /// Segments whose `indexed_end` this process no longer advances because
    /// a row of theirs failed to commit: recovery on the next start re-enters
    /// everything from the last good `indexed_end`.
    frozen: HashSet<u64>,
    /// How far each segment's records are all entered.
    indexed: indexed::IndexedEnds,
    /// Failures not yet reported to a flush / close.
    errors: Vec<String>,
    /// The highest sequence in `deleted_instances`, read again after a deletion.
    deleted_max: Option<u64>,
    /// The patients, studies and series as the last committed batch left them,
    /// so a series that goes on in the next batch costs no select.
    memo: memo::HierarchyMemo,
}

/// What one row did to the manifest.
enum Outcome {
    /// A new SOP Instance UID.
    Inserted,
    /// Same SOP Instance UID and sequence already present: nothing to do.
    AlreadyPresent,
    /// The row replaced an older copy (moved to `replaced_instances`).
    Replaced {
        old_sequence: u64,
        old_location: Location,
    },
    /// The row is older than the present copy and went to
    /// `replaced_instances` itself.
    Superseded {
        current_sequence: u64,
        current_location: Location,
    },
}

struct Existing {
    id: i64,
    series_pk: i64,
    sequence: u64,
    location: Location,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Writer {
    pub(crate) fn new(conn: Connection, rx: Receiver<Msg>, max_batch: usize, events: Option<EventSink>) -> Writer {
        Writer {
            conn,
            events,
            last_prune: Instant::now(),
            rx,
            max_batch: max_batch.max(1),
            frozen: HashSet::new(),
            indexed: indexed::IndexedEnds::default(),
            errors: Vec::new(),
            deleted_max: None,
            memo: memo::HierarchyMemo::default(),
        }
    }

    /// Returns the highest sequence in `deleted_instances` (0 when empty).
    fn deleted_max(&mut self) -> rusqlite::Result<u64> {
        if let Some(max) = self.deleted_max {
            return Ok(max);
        }
        let max: i64 = self.conn.query_row(
            "SELECT coalesce(max(sequence), 0) FROM deleted_instances",
            [],
            |r| r.get(0),
        )?;
        let max = u64::try_from(max).unwrap_or(0);
        self.deleted_max = Some(max);
        Ok(max)
    }

    pub(crate) fn run(mut self) {
        let mut rows: Vec<Box<InstanceRecord>> = Vec::with_capacity(self.max_batch);
        let mut acks: Vec<Ack> = Vec::new();
        let mut close: Option<Ack> = None;
        loop {
            // Block for the first message, unless closing: then only drain.
            let first = if close.is_some() {
                self.rx.try_recv().ok()
            } else {
                match self.rx.recv() {
                    Ok(m) => Some(m),
                    // Every sender is gone: nothing more can arrive.
                    Err(_) => break,
                }
            };
            let Some(first) = first else { break };
            let batch_started = Instant::now();
            let mut msg = Some(first);
            while let Some(m) = msg.take() {
                match m {
                    Msg::Insert(row) => rows.push(row),
                    Msg::Delete { scope, ack } => {
                        if !rows.is_empty() {
                            self.write_batch(&rows);
                            rows.clear();
                        }
                        let _ = ack.send(self.delete(&scope));
                    }
                    Msg::EmitRevision { study, last_change_ms, ack } => {
                        // Rows queued before it go first: their changes belong to this study's wait.
                        if !rows.is_empty() {
                            self.write_batch(&rows);
                            rows.clear();
                        }
                        let _ = ack.send(self.emit_revision(&study, last_change_ms));
                    }
                    Msg::Flush(ack) => acks.push(ack),
                    Msg::Close(ack) => {
                        if let Some(previous) = close.replace(ack) {
                            previous.send(Ok(()));
                        }
                    }
                }
                if rows.len() >= self.max_batch {
                    break;
                }
                msg = self.rx.try_recv().ok();
                if msg.is_none() && acks.is_empty() && close.is_none() {
                    msg = self.linger(batch_started);
                }
            }
            if !rows.is_empty() {
                self.wait_for_outbox_room();
                self.write_batch(&rows);
                rows.clear();
            }
            self.prune_outbox();
            metrics::gauge!("nectar_manifest_queue_depth").set(self.rx.len() as f64);
            if !acks.is_empty() {
                let report = self.take_report();
                for ack in acks.drain(..) {
                    ack.send(report.clone());
                }
            }
        }
        if !rows.is_empty() {
            self.write_batch(&rows);
        }
        let report = self.take_report();
        for ack in acks.drain(..) {
            ack.send(report.clone());
        }
        if let Some(ack) = close {
            ack.send(report);
        }
        tracing::debug!("manifest writer stopped");
    }

    /// Waits for more rows until `BATCH_LINGER` after the batch's first
    /// message, so a steady trickle of rows shares one transaction.
    /// Sleeps out the rest of the batch's linger time, then takes the next
    /// message if one came. A sleep, not a receive with a timeout, because
    /// the receive would wake this thread for every row.
    fn linger(&self, batch_started: Instant) -> Option<Msg> {
        let waited = batch_started.elapsed();
        if waited >= BATCH_LINGER {
            return None;
        }
        std::thread::sleep(BATCH_LINGER - waited);
        self.rx.try_recv().ok()
    }

    fn take_report(&mut self) -> Report {
        if self.errors.is_empty() {
            Ok(())
        } else {
            let n = self.errors.len();
            let mut text = self.errors.drain(..).take(8).collect::<Vec<_>>().join("; ");
            if n > 8 {
                text.push_str(&format!("; and {} more", n - 8));
            }
            Err(text)
        }
    }

    fn fail_batch(&mut self, rows: &[Box<InstanceRecord>], what: &str, e: rusqlite::Error) {
        tracing::error!(error = %e, rows = rows.len(), "manifest batch {what} failed; its segments will be re-entered by recovery");
        metrics::counter!("nectar_manifest_errors_total").increment(rows.len() as u64);
        for row in rows {
            self.frozen.insert(row.location.segment);
        }
        self.errors
            .push(format!("batch of {} rows: {what} failed: {e}", rows.len()));
    }

    /// Writes one batch in one transaction. If a row fails, the transaction
    /// is rolled back and the batch written again with a savepoint around
    /// each row (savepoints cost about as much as the rows themselves, so
    /// only then): the failing row is rolled back alone and freezes its
    /// segment's `indexed_end`.
    fn write_batch(&mut self, rows: &[Box<InstanceRecord>]) {
        let started = Instant::now();
        let mut careful = false;
        let (events, failed, row_errors, planned) = loop {
            if let Err(e) = self.conn.execute_batch("BEGIN IMMEDIATE") {
                self.fail_batch(rows, "BEGIN", e);
                return;
            }
            let mut entered: Vec<(Location, u64)> = Vec::with_capacity(rows.len());
            let mut planned = HashMap::new();
            let mut failed: HashSet<u64> = HashSet::new();
            let mut events: Vec<(&InstanceRecord, Outcome)> = Vec::with_capacity(rows.len());
            let mut row_errors: Vec<String> = Vec::new();
            // Ok(false): written; Ok(true): a row failed, retry carefully.
            // The memo describes the tables as committed batches left them. A
            // failed attempt drops it, and the careful retry runs without one.
            let mut memo = std::mem::take(&mut self.memo);
            if careful {
                memo = memo::HierarchyMemo::new(false);
            }
            let result: rusqlite::Result<bool> = (|| {
                let deleted_max = self.deleted_max()?;
                let mut statements = RowStatements::prepare(&self.conn, self.events.is_some())?;
                for row in rows {
                    if careful {
                        self.conn
                            .prepare_cached("SAVEPOINT manifest_row")?
                            .execute([])?;
                    }
                    match apply_row(&self.conn, &mut statements, row, &mut memo, deleted_max)
                        .and_then(|outcome| {
                            self.record_events(statements.events.as_mut(), row, &outcome)?;
                            Ok(outcome)
                        }) {
                        Ok(outcome) => {
                            if careful {
                                self.conn
                                    .prepare_cached("RELEASE manifest_row")?
                                    .execute([])?;
                            }
                            entered.push((row.location, row.record_end));
                            events.push((row, outcome));
                        }
                        Err(_) if !careful => return Ok(true),
                        Err(e) => {
                            self.conn
                                .execute_batch("ROLLBACK TO manifest_row; RELEASE manifest_row")?;
                            tracing::error!(
                                sop_instance_uid = %row.sop_instance_uid,
                                sequence = row.sequence,
                                location = ?row.location,
                                error = %e,
                                "manifest row failed; its segment will be re-entered by recovery"
                            );
                            failed.insert(row.location.segment);
                            row_errors.push(format!(
                                "{} (sequence {}): {e}",
                                row.sop_instance_uid, row.sequence
                            ));
                        }
                    }
                }
                let mut stmt = self.conn.prepare_cached(
                    "INSERT INTO segments (id, indexed_end) VALUES (?1, ?2)
                     ON CONFLICT (id) DO UPDATE SET indexed_end = max(indexed_end, excluded.indexed_end)",
                )?;
                memo.flush(&self.conn)?;
                self.touch_studies(&events)?;
                planned = self.indexed.plan(&self.conn, &entered)?;
                for (segment, progress) in &planned {
                    if failed.contains(segment) || self.frozen.contains(segment) {
                        continue;
                    }
                    stmt.execute(params![segment, progress.end])?;
                }
                Ok(false)
            })();
            match result {
                Ok(false) => {}
                Ok(true) => {
                    let _ = self.conn.execute_batch("ROLLBACK");
                    careful = true;
                    continue;
                }
                Err(e) => {
                    let _ = self.conn.execute_batch("ROLLBACK");
                    self.fail_batch(rows, "write", e);
                    return;
                }
            }
            if let Err(e) = self.conn.execute_batch("COMMIT") {
                let _ = self.conn.execute_batch("ROLLBACK");
                self.fail_batch(rows, "COMMIT", e);
                return;
            }
            if !careful && memo.len() <= memo::KEPT_ENTRIES {
                self.memo = memo;
            }
            break (events, failed, row_errors, planned);
        };
        self.indexed.apply(planned);
        let elapsed = started.elapsed();
        self.announce(&events);

        self.frozen.extend(failed);
        if !row_errors.is_empty() {
            metrics::counter!("nectar_manifest_errors_total").increment(row_errors.len() as u64);
            self.errors.extend(row_errors);
        }
        let mut replaced = 0u64;
        for (row, outcome) in &events {
            match outcome {
                Outcome::Inserted | Outcome::AlreadyPresent => {}
                Outcome::Replaced {
                    old_sequence,
                    old_location,
                } => {
                    replaced += 1;
                    tracing::info!(
                        sop_instance_uid = %row.sop_instance_uid,
                        old_sequence,
                        old_location = ?old_location,
                        new_sequence = row.sequence,
                        new_location = ?row.location,
                        "duplicate SOP Instance UID: newer copy replaces the older one"
                    );
                }
                Outcome::Superseded {
                    current_sequence,
                    current_location,
                } => {
                    replaced += 1;
                    tracing::info!(
                        sop_instance_uid = %row.sop_instance_uid,
                        old_sequence = row.sequence,
                        old_location = ?row.location,
                        new_sequence = current_sequence,
                        new_location = ?current_location,
                        "duplicate SOP Instance UID: incoming copy is older than the stored one; recorded as replaced"
                    );
                }
            }
        }
        metrics::histogram!("nectar_manifest_batch_size").record(rows.len() as f64);
        metrics::histogram!("nectar_manifest_commit_duration_seconds")
            .record(elapsed.as_secs_f64());
        metrics::counter!("nectar_manifest_rows_total").increment(events.len() as u64);
        if replaced > 0 {
            metrics::counter!("nectar_manifest_replaced_total").increment(replaced);
        }
    }
}

/// The second half of a patient's key: its IssuerOfPatientID, or, for an
/// instance without PatientID, a marker naming its study, so that patients
/// without an identifier are one per study instead of one for all.
fn patient_key_issuer(r: &InstanceRecord) -> String {
    if key(&r.patient_id).is_empty() {
        format!("{}{}", super::schema::ANONYMOUS_PATIENT_PREFIX, r.study_instance_uid)
    } else {
        key(&r.issuer_of_patient_id).to_owned()
    }
}

fn key(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("")
}

/// The statements every row of a batch runs, taken from the statement cache
/// once per batch: each lookup in the cache hashes the whole SQL text.
struct RowStatements<'c> {
    find_instance: rusqlite::CachedStatement<'c>,
    insert_instance: rusqlite::CachedStatement<'c>,
    /// Present when events are recorded.
    events: Option<super::outbox::InstanceEventStatements<'c>>,
}

impl<'c> RowStatements<'c> {
    /// Takes the statements from the connection's statement cache.
    fn prepare(conn: &'c Connection, events: bool) -> rusqlite::Result<Self> {
        Ok(RowStatements {
            find_instance: conn.prepare_cached(
                r#"SELECT id, series_pk, sequence, segment, "offset", length
                     FROM instances WHERE sop_instance_uid = ?1"#,
            )?,
            insert_instance: conn.prepare_cached(
                r#"INSERT INTO instances (
                       sop_instance_uid, series_pk, sop_class_uid, transfer_syntax_uid,
                       instance_number, "rows", "columns", bits_allocated, number_of_frames,
                       segment, "offset", length, record_end, sequence, received_at_ms, calling_ae_title)
                   VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"#,
            )?,
            events: if events { Some(super::outbox::InstanceEventStatements::prepare(conn)?) } else { None },
        })
    }
}

/// Applies one row inside the open transaction. `deleted_max` is the highest
/// sequence in `deleted_instances`: a row above it cannot have been deleted.
fn apply_row(
    conn: &Connection,
    statements: &mut RowStatements<'_>,
    r: &InstanceRecord,
    memo: &mut memo::HierarchyMemo,
    deleted_max: u64,
) -> rusqlite::Result<Outcome> {
    let existing = statements
        .find_instance
        .query_row([&r.sop_instance_uid], |row| {
            Ok(Existing {
                id: row.get(0)?,
                series_pk: row.get(1)?,
                sequence: row.get(2)?,
                location: Location {
                    segment: row.get(3)?,
                    offset: row.get(4)?,
                    length: row.get(5)?,
                },
            })
        })
        .optional()?;

    match existing {
        None if r.sequence <= deleted_max && was_deleted(conn, r.sequence)? => {
            Ok(Outcome::AlreadyPresent)
        }
        None => {
            let series_pk = upsert_hierarchy(conn, r, memo)?;
            statements.insert_instance.execute(params![
                r.sop_instance_uid,
                series_pk,
                r.sop_class_uid,
                r.transfer_syntax_uid,
                r.instance_number,
                r.rows,
                r.columns,
                r.bits_allocated,
                r.number_of_frames,
                r.location.segment,
                r.location.offset,
                r.location.length,
                r.record_end,
                r.sequence,
                r.received_at_ms,
                r.calling_ae_title,
            ])?;
            Ok(Outcome::Inserted)
        }
        Some(e) if e.sequence == r.sequence => Ok(Outcome::AlreadyPresent),
        Some(e) if e.sequence < r.sequence => {
            insert_replaced(
                conn,
                &r.sop_instance_uid,
                e.location,
                e.sequence,
                r.sequence,
            )?;
            let series_pk = upsert_hierarchy(conn, r, memo)?;
            conn.prepare_cached(
                r#"UPDATE instances SET
                       series_pk = ?2, sop_class_uid = ?3, transfer_syntax_uid = ?4,
                       instance_number = ?5, "rows" = ?6, "columns" = ?7, bits_allocated = ?8,
                       number_of_frames = ?9, segment = ?10, "offset" = ?11, length = ?12,
                       record_end = ?13, sequence = ?14, received_at_ms = ?15, calling_ae_title = ?16
                   WHERE id = ?1"#,
            )?
            .execute(params![
                e.id,
                series_pk,
                r.sop_class_uid,
                r.transfer_syntax_uid,
                r.instance_number,
                r.rows,
                r.columns,
                r.bits_allocated,
                r.number_of_frames,
                r.location.segment,
                r.location.offset,
                r.location.length,
                r.record_end,
                r.sequence,
                r.received_at_ms,
                r.calling_ae_title,
            ])?;
            if e.series_pk != series_pk {
                memo.clear(conn)?;
                gc_series(conn, e.series_pk)?;
            }
            Ok(Outcome::Replaced {
                old_sequence: e.sequence,
                old_location: e.location,
            })
        }
        Some(e) => {
            let added = insert_replaced(
                conn,
                &r.sop_instance_uid,
                r.location,
                r.sequence,
                e.sequence,
            )?;
            if added {
                Ok(Outcome::Superseded {
                    current_sequence: e.sequence,
                    current_location: e.location,
                })
            } else {
                // Re-entry of a copy already recorded as replaced.
                Ok(Outcome::AlreadyPresent)
            }
        }
    }
}

/// Returns whether the record with this sequence was entered and then
/// deleted. Recovery enters again every record past a segment's
/// `indexed_end`, which can stop below deleted records, and a deletion must
/// stay a deletion.
fn was_deleted(conn: &Connection, sequence: u64) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT 1 FROM deleted_instances WHERE sequence = ?1")?
        .query_row([seq_i64(sequence)?], |_| Ok(()))
        .optional()
        .map(|found| found.is_some())
}

/// Records a superseded copy; false if that sequence is already recorded.
fn insert_replaced(
    conn: &Connection,
    uid: &str,
    location: Location,
    sequence: u64,
    replaced_by: u64,
) -> rusqlite::Result<bool> {
    let n = conn
        .prepare_cached(
            r#"INSERT OR IGNORE INTO replaced_instances
                   (sequence, sop_instance_uid, segment, "offset", length, replaced_at_ms, replaced_by_sequence)
               VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"#,
        )?
        .execute(params![
            sequence,
            uid,
            location.segment,
            location.offset,
            location.length,
            now_ms(),
            replaced_by
        ])?;
    Ok(n == 1)
}

/// The statements of one level of the hierarchy (patient, study, series).
///
/// Parameter layouts: `select` takes the key columns and returns
/// `id, parent (or NULL), attrs_sequence, attributes...`; `insert` takes
/// `keys..., [parent], attributes..., attrs_sequence`; `update` takes
/// `id, [parent], attributes..., attrs_sequence`; `touch` takes
/// `id, attrs_sequence`.
struct Level {
    select: &'static str,
    insert: &'static str,
    update: &'static str,
    touch: &'static str,
}

const PATIENT: Level = Level {
    select: "SELECT id, NULL, attrs_sequence, patient_name, patient_birth_date, patient_sex
               FROM patients WHERE patient_id = ?1 AND issuer_of_patient_id = ?2",
    insert: "INSERT INTO patients (patient_id, issuer_of_patient_id, patient_name,
                                   patient_birth_date, patient_sex, attrs_sequence)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    update: "UPDATE patients SET patient_name = ?2, patient_birth_date = ?3, patient_sex = ?4,
                                 attrs_sequence = ?5
              WHERE id = ?1",
    touch: "UPDATE patients SET attrs_sequence = ?2 WHERE id = ?1",
};

const STUDY: Level = Level {
    select: "SELECT id, patient_pk, attrs_sequence, study_date, study_time, accession_number,
                    referring_physician_name, study_id, study_description,
                    timezone_offset_from_utc, specific_character_set
               FROM studies WHERE study_instance_uid = ?1",
    insert: "INSERT INTO studies (study_instance_uid, patient_pk, study_date, study_time,
                                  accession_number, referring_physician_name, study_id,
                                  study_description, timezone_offset_from_utc,
                                  specific_character_set, attrs_sequence)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    update: "UPDATE studies SET patient_pk = ?2, study_date = ?3, study_time = ?4,
                                accession_number = ?5, referring_physician_name = ?6,
                                study_id = ?7, study_description = ?8,
                                timezone_offset_from_utc = ?9, specific_character_set = ?10,
                                attrs_sequence = ?11
              WHERE id = ?1",
    touch: "UPDATE studies SET attrs_sequence = ?2 WHERE id = ?1",
};

const SERIES: Level = Level {
    select: "SELECT id, study_pk, attrs_sequence, modality, series_number, series_description,
                    series_date, series_time, performed_procedure_step_start_date,
                    performed_procedure_step_start_time, institution_name
               FROM series WHERE series_instance_uid = ?1",
    insert: "INSERT INTO series (series_instance_uid, study_pk, modality, series_number,
                                 series_description, series_date, series_time,
                                 performed_procedure_step_start_date,
                                 performed_procedure_step_start_time, institution_name,
                                 attrs_sequence)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    update: "UPDATE series SET study_pk = ?2, modality = ?3, series_number = ?4,
                               series_description = ?5, series_date = ?6, series_time = ?7,
                               performed_procedure_step_start_date = ?8,
                               performed_procedure_step_start_time = ?9, institution_name = ?10,
                               attrs_sequence = ?11
              WHERE id = ?1",
    touch: "UPDATE series SET attrs_sequence = ?2 WHERE id = ?1",
};

fn text(v: &Option<String>) -> Value {
    Value::from(v.clone())
}

fn seq_i64(seq: u64) -> rusqlite::Result<i64> {
    i64::try_from(seq).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

/// Finds or creates one entity; updates its parent and attributes when this
/// record (`seq`) is at least as new as the values it holds. Returns its id
/// and, when a parent may have lost its last child, that parent's id: the
/// old parent if the entity moved, or `parent` if the entity stays under a
/// newer record's parent.
fn upsert_level(
    conn: &Connection,
    memo: &mut memo::HierarchyMemo,
    level: &Level,
    keys: &[Value],
    parent: Option<i64>,
    attrs: &[Value],
    seq: u64,
) -> rusqlite::Result<(i64, Option<i64>)> {
    let seq_i = seq_i64(seq)?;
    if let memo::Lookup::Hit(id) = memo.lookup(conn, level.touch, keys, parent, attrs, seq_i)? {
        return Ok((id, None));
    }
    let seq = Value::Integer(seq_i);
    let found = conn
        .prepare_cached(level.select)?
        .query_row(params_from_iter(keys), |row| {
            let id: i64 = row.get(0)?;
            let old_parent: Option<i64> = row.get(1)?;
            let attrs_seq: i64 = row.get(2)?;
            let mut same = true;
            for (i, want) in attrs.iter().enumerate() {
                if row.get_ref(3 + i)? != ValueRef::from(want) {
                    same = false;
                    break;
                }
            }
            Ok((id, old_parent, attrs_seq, same))
        })
        .optional()?;
    let Some((id, old_parent, attrs_seq, same)) = found else {
        let values = keys
            .iter()
            .cloned()
            .chain(parent.map(Value::Integer))
            .chain(attrs.iter().cloned())
            .chain(std::iter::once(seq));
        conn.prepare_cached(level.insert)?
            .execute(params_from_iter(values))?;
        let id = conn.last_insert_rowid();
        memo.remember(level.touch, keys, id, parent, attrs, seq_i);
        return Ok((id, None));
    };
    if seq_i < attrs_seq {
        // A newer record set this entity's values: leave them.
        let orphan = match (parent, old_parent) {
            (Some(p), Some(old)) if p != old => Some(p),
            _ => None,
        };
        return Ok((id, orphan));
    }
    if same && parent == old_parent {
        // Nothing changes but the sequence the values are known at: leave
        // the indexed columns alone.
        conn.prepare_cached(level.touch)?
            .execute(params![id, seq_i])?;
        memo.remember(level.touch, keys, id, parent, attrs, seq_i);
        return Ok((id, None));
    }
    let values = std::iter::once(Value::Integer(id))
        .chain(parent.map(Value::Integer))
        .chain(attrs.iter().cloned())
        .chain(std::iter::once(seq));
    conn.prepare_cached(level.update)?
        .execute(params_from_iter(values))?;
    memo.remember(level.touch, keys, id, parent, attrs, seq_i);
    let moved_from = match (parent, old_parent) {
        (Some(p), Some(old)) if p != old => Some(old),
        _ => None,
    };
    Ok((id, moved_from))
}

/// Finds or creates the row's patient, study and series, updating their
/// attributes when this row is at least as new as the values they hold, and
/// returns the series' key. Entities left without children are removed.
fn upsert_hierarchy(conn: &Connection, r: &InstanceRecord, memo: &mut memo::HierarchyMemo) -> rusqlite::Result<i64> {
    let seq = r.sequence;
    // Patient, keyed by (PatientID, IssuerOfPatientID), '' for absent.
    let (patient_pk, _) = upsert_level(
        conn,
        memo,
        &PATIENT,
        &[
            Value::Text(key(&r.patient_id).to_owned()),
            Value::Text(patient_key_issuer(r)),
        ],
        None,
        &[
            text(&r.patient_name),
            text(&r.patient_birth_date),
            text(&r.patient_sex),
        ],
        seq,
    )?;
    let (study_pk, orphan_patient) = upsert_level(
        conn,
        memo,
        &STUDY,
        &[Value::Text(r.study_instance_uid.clone())],
        Some(patient_pk),
        &[
            text(&r.study_date),
            text(&r.study_time),
            text(&r.accession_number),
            text(&r.referring_physician_name),
            text(&r.study_id),
            text(&r.study_description),
            text(&r.timezone_offset_from_utc),
            text(&r.specific_character_set),
        ],
        seq,
    )?;
    if let Some(p) = orphan_patient {
        memo.clear(conn)?;
        gc_patient(conn, p)?;
    }
    let (series_pk, orphan_study) = upsert_level(
        conn,
        memo,
        &SERIES,
        &[Value::Text(r.series_instance_uid.clone())],
        Some(study_pk),
        &[
            text(&r.modality),
            Value::from(r.series_number),
            text(&r.series_description),
            text(&r.series_date),
            text(&r.series_time),
            text(&r.performed_procedure_step_start_date),
            text(&r.performed_procedure_step_start_time),
            text(&r.institution_name),
        ],
        seq,
    )?;
    if let Some(s) = orphan_study {
        memo.clear(conn)?;
        gc_study(conn, s)?;
    }
    Ok(series_pk)
}

/// Deletes the series if it has no instance, then its study if emptied.
fn gc_series(conn: &Connection, series_pk: i64) -> rusqlite::Result<()> {
    let study_pk: Option<i64> = conn
        .prepare_cached(
            "DELETE FROM series WHERE id = ?1
                AND NOT EXISTS (SELECT 1 FROM instances WHERE series_pk = ?1)
             RETURNING study_pk",
        )?
        .query_row([series_pk], |row| row.get(0))
        .optional()?;
    match study_pk {
        Some(study_pk) => gc_study(conn, study_pk),
        None => Ok(()),
    }
}

/// Deletes the study if it has no series, then its patient if emptied.
fn gc_study(conn: &Connection, study_pk: i64) -> rusqlite::Result<()> {
    let patient_pk: Option<i64> = conn
        .prepare_cached(
            "DELETE FROM studies WHERE id = ?1
                AND NOT EXISTS (SELECT 1 FROM series WHERE study_pk = ?1)
             RETURNING patient_pk",
        )?
        .query_row([study_pk], |row| row.get(0))
        .optional()?;
    match patient_pk {
        Some(patient_pk) => gc_patient(conn, patient_pk),
        None => Ok(()),
    }
}

/// Deletes the patient if it has no study.
fn gc_patient(conn: &Connection, patient_pk: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "DELETE FROM patients WHERE id = ?1
            AND NOT EXISTS (SELECT 1 FROM studies WHERE patient_pk = ?1)",
    )?
    .execute([patient_pk])?;
    Ok(())
}
