//! The writer thread: the only connection that writes the manifest.

mod delete;
mod events;
mod hierarchy;
mod indexed;
mod memo;
mod rows;

use std::collections::{HashMap, HashSet};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::Receiver;
use rusqlite::{params, Connection};

use super::record::InstanceRecord;
use rows::{apply_row, RowStatements};
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
