//! The event outbox and the study revision state, in the manifest.
//!
//! The writer records a change's events and its study's pending change in the
//! transaction that makes the change, so an event exists exactly when its
//! change does. `study_revisions.last_change_ms` is set while a study waits
//! for its quiet period, so the wait survives a restart. The revision that
//! ends the wait is written in one transaction with clearing it, so it is
//! emitted once.

use rusqlite::{params, CachedStatement, Connection, OptionalExtension, Statement};
use serde_json::Map;

use super::record::InstanceRecord;
use crate::events::body::{self, ChangeSet, SeriesView, StudyView};
use crate::events::{compact, event_type, rfc3339_millis, EventsConfig, OutboxEvent};
use crate::Location;

/// The outbox tables, created with the rest of the schema.
pub const DDL: &str = r#"
CREATE TABLE IF NOT EXISTS outbox (
    seq                INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id           TEXT NOT NULL UNIQUE,
    type               TEXT NOT NULL,
    study_instance_uid TEXT NOT NULL,
    created_ms         INTEGER NOT NULL,
    body               TEXT NOT NULL,
    -- ImageStoredEvent: the record whose attributes fill image.attributes on delivery.
    segment            INTEGER,
    "offset"           INTEGER,
    length             INTEGER
);

-- The outbox position each consumer has read up to.
CREATE TABLE IF NOT EXISTS event_cursors (
    consumer TEXT PRIMARY KEY,
    seq      INTEGER NOT NULL
) WITHOUT ROWID;

-- The last revision of every study that had one, and when its newest
-- change not yet in a revision happened (NULL: nothing waits).
CREATE TABLE IF NOT EXISTS study_revisions (
    study_instance_uid TEXT PRIMARY KEY,
    revision           INTEGER NOT NULL,
    last_change_ms     INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS study_revisions_waiting ON study_revisions (last_change_ms)
    WHERE last_change_ms IS NOT NULL;

-- Changes since the study's last revision, one per instance.
CREATE TABLE IF NOT EXISTS study_changes (
    study_instance_uid TEXT NOT NULL,
    entry              TEXT NOT NULL,
    -- OR rather than IN: SQLite checks an IN list of three against a bound
    -- value through a temporary index it builds on every insert.
    kind               TEXT NOT NULL CHECK (kind = 'addition' OR kind = 'modification' OR kind = 'deletion'),
    PRIMARY KEY (study_instance_uid, entry)
) WITHOUT ROWID;
"#;

/// Rebuilds `study_changes` of a manifest created with the earlier `kind IN
/// (...)` check, which costs every insert a temporary index. The table holds
/// only changes not yet in a revision, so the copy is small. Runs inside the
/// schema transaction, after [`DDL`].
pub(crate) fn upgrade(conn: &Connection) -> rusqlite::Result<()> {
    let sql: Option<String> = conn
        .query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'study_changes'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if !sql.is_some_and(|sql| sql.contains("kind IN (")) {
        return Ok(());
    }
    conn.execute_batch("ALTER TABLE study_changes RENAME TO study_changes_before_upgrade")?;
    conn.execute_batch(DDL)?;
    conn.execute_batch(
        "INSERT INTO study_changes (study_instance_uid, entry, kind)
             SELECT study_instance_uid, entry, kind FROM study_changes_before_upgrade;
         DROP TABLE study_changes_before_upgrade;",
    )?;
    tracing::info!("manifest: rebuilt study_changes with an OR check on kind instead of IN");
    Ok(())
}

/// The kind of change an instance went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Addition,
    Modification,
    Deletion,
}

impl ChangeKind {
    fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Addition => "addition",
            ChangeKind::Modification => "modification",
            ChangeKind::Deletion => "deletion",
        }
    }

    fn parse(text: &str) -> Option<ChangeKind> {
        match text {
            "addition" => Some(ChangeKind::Addition),
            "modification" => Some(ChangeKind::Modification),
            "deletion" => Some(ChangeKind::Deletion),
            _ => None,
        }
    }

    /// Returns the net change after `self` and then `next` within one
    /// revision, or `None` when they cancel out (added, then deleted).
    fn then(self, next: ChangeKind) -> Option<ChangeKind> {
        use ChangeKind::*;
        match (self, next) {
            (Addition, Deletion) => None,
            (Addition, _) => Some(Addition),
            (Deletion, Addition) | (Deletion, Modification) => Some(Modification),
            (_, next) => Some(next),
        }
    }
}

/// Inserts one outbox row. A row whose event id is already present is skipped.
const INSERT_EVENT: &str = r#"INSERT INTO outbox (event_id, type, study_instance_uid, created_ms, body, segment, "offset", length)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (event_id) DO NOTHING"#;

/// Marks an instance of a study as added or modified, merged in one statement
/// with any change of the same instance since the last revision (the same
/// merge as [`ChangeKind::then`], which never cancels an addition or a
/// modification). The study's wait starts with [`touch_study`].
const RECORD_STORED_CHANGE: &str =
    "INSERT INTO study_changes (study_instance_uid, entry, kind) VALUES (?1, ?2, ?3)
    ON CONFLICT (study_instance_uid, entry) DO UPDATE SET kind = CASE kind
        WHEN 'addition' THEN 'addition'
        WHEN 'deletion' THEN 'modification'
        ELSE excluded.kind END";

/// The statements [`record_instance`] runs, taken from the statement cache once
/// for a whole batch of rows.
pub(crate) struct InstanceEventStatements<'c> {
    insert_event: CachedStatement<'c>,
    stored_change: CachedStatement<'c>,
}

impl<'c> InstanceEventStatements<'c> {
    /// Takes both statements from the connection's statement cache.
    pub(crate) fn prepare(conn: &'c Connection) -> rusqlite::Result<Self> {
        Ok(InstanceEventStatements {
            insert_event: conn.prepare_cached(INSERT_EVENT)?,
            stored_change: conn.prepare_cached(RECORD_STORED_CHANGE)?,
        })
    }
}

/// Writes the ImageStoredEvent and DicomAvailableEvent of a new or replaced
/// instance, with short bodies that `events_after` expands, and marks its
/// study as changed.
pub(crate) fn record_instance(
    statements: &mut InstanceEventStatements<'_>,
    store_id: &str,
    row: &InstanceRecord,
    kind: ChangeKind,
    now_ms: i64,
) -> rusqlite::Result<()> {
    debug_assert!(kind != ChangeKind::Deletion);
    let study = &row.study_instance_uid;
    let stored_id = format!("{store_id}-{}-stored", row.sequence);
    let stored = compact::image_stored(row);
    insert_event(
        &mut statements.insert_event,
        &stored_id,
        event_type::IMAGE_STORED,
        study,
        now_ms,
        &stored,
        Some(row.location),
    )?;
    let available_id = format!("{store_id}-{}-available", row.sequence);
    let available = compact::dicom_available(row);
    insert_event(
        &mut statements.insert_event,
        &available_id,
        event_type::DICOM_AVAILABLE,
        study,
        now_ms,
        &available,
        None,
    )?;
    let entry = format!("{}/{}", row.series_instance_uid, row.sop_instance_uid);
    statements
        .stored_change
        .execute([study.as_str(), &entry, kind.as_str()])?;
    Ok(())
}

/// Marks `entry` of a study as changed at `now_ms`, merged with any change
/// of the same instance since the last revision.
pub(crate) fn record_change(
    conn: &Connection,
    study: &str,
    entry: &str,
    kind: ChangeKind,
    now_ms: i64,
) -> rusqlite::Result<()> {
    let previous: Option<String> = conn
        .prepare_cached("SELECT kind FROM study_changes WHERE study_instance_uid = ?1 AND entry = ?2")?
        .query_row([study, entry], |r| r.get(0))
        .optional()?;
    let net = match previous.as_deref().and_then(ChangeKind::parse) {
        Some(previous) => previous.then(kind),
        None => Some(kind),
    };
    match net {
        Some(net) => {
            conn.prepare_cached(
                "INSERT INTO study_changes (study_instance_uid, entry, kind) VALUES (?1, ?2, ?3)
                 ON CONFLICT (study_instance_uid, entry) DO UPDATE SET kind = excluded.kind",
            )?
            .execute([study, entry, net.as_str()])?;
        }
        None => {
            conn.prepare_cached("DELETE FROM study_changes WHERE study_instance_uid = ?1 AND entry = ?2")?
                .execute([study, entry])?;
        }
    }
    touch_study(conn, study, now_ms)
}

/// Records that a study changed at `now_ms`, which starts (or restarts) its
/// wait for the quiet period.
pub(crate) fn touch_study(conn: &Connection, study: &str, now_ms: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO study_revisions (study_instance_uid, revision, last_change_ms) VALUES (?1, 0, ?2)
         ON CONFLICT (study_instance_uid) DO UPDATE SET last_change_ms = excluded.last_change_ms",
    )?
    .execute(params![study, now_ms])?;
    Ok(())
}

fn insert_event(
    statement: &mut Statement<'_>,
    id: &str,
    kind: &str,
    study: &str,
    now_ms: i64,
    body: &str,
    record: Option<Location>,
) -> rusqlite::Result<()> {
    statement.execute(params![
        id,
        kind,
        study,
        now_ms,
        body,
        record.map(|l| l.segment),
        record.map(|l| l.offset),
        record.map(|l| l.length),
    ])?;
    Ok(())
}

/// Emits the next StudyRevisionEvent of `study` if its newest change is still
/// the one at `last_change_ms` (a later change restarts the quiet period).
/// Returns the revision number written.
pub(crate) fn emit_revision(
    conn: &Connection,
    config: &EventsConfig,
    store_id: &str,
    study: &str,
    last_change_ms: i64,
    now_ms: i64,
) -> rusqlite::Result<Option<i64>> {
    let state: Option<(i64, Option<i64>)> = conn
        .prepare_cached("SELECT revision, last_change_ms FROM study_revisions WHERE study_instance_uid = ?1")?
        .query_row([study], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((previous, Some(waiting_since))) = state else {
        return Ok(None);
    };
    if waiting_since != last_change_ms {
        return Ok(None);
    }
    let changes = change_set(conn, study)?;
    let view = study_view(conn, study)?;
    let revision = previous + 1;
    let id = format!("{store_id}-{study}-r{revision}");
    let event = body::study_revision(
        config,
        &id,
        &rfc3339_millis(now_ms),
        revision,
        &view,
        &changes,
    );
    insert_event(
        &mut *conn.prepare_cached(INSERT_EVENT)?,
        &id,
        event_type::STUDY_REVISION,
        study,
        now_ms,
        &event.to_string(),
        None,
    )?;
    conn.prepare_cached(
        "UPDATE study_revisions SET revision = ?2, last_change_ms = NULL WHERE study_instance_uid = ?1",
    )?
    .execute(params![study, revision])?;
    conn.prepare_cached("DELETE FROM study_changes WHERE study_instance_uid = ?1")?
        .execute([study])?;
    Ok(Some(revision))
}

fn change_set(conn: &Connection, study: &str) -> rusqlite::Result<ChangeSet> {
    let mut stmt = conn.prepare_cached(
        "SELECT entry, kind FROM study_changes WHERE study_instance_uid = ?1 ORDER BY entry",
    )?;
    let rows = stmt.query_map([study], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    let mut changes = ChangeSet::default();
    for row in rows {
        let (entry, kind) = row?;
        match ChangeKind::parse(&kind) {
            Some(ChangeKind::Addition) => changes.additions.push(entry),
            Some(ChangeKind::Modification) => changes.modifications.push(entry),
            Some(ChangeKind::Deletion) => changes.deletions.push(entry),
            None => {}
        }
    }
    Ok(changes)
}

/// Reads the study as it is now: patient and study attributes, series and
/// instances. A study whose instances were all deleted has no series.
pub(crate) fn study_view(conn: &Connection, study: &str) -> rusqlite::Result<StudyView> {
    let mut view = StudyView {
        study_instance_uid: study.to_owned(),
        study_date: None,
        attributes: Map::new(),
        series: Vec::new(),
    };
    let found = conn
        .prepare_cached(
            "SELECT st.id, st.study_date, st.study_time, st.accession_number, st.referring_physician_name,
                    st.study_id, st.study_description, p.patient_id, p.patient_name, p.patient_birth_date,
                    p.patient_sex
               FROM studies st JOIN patients p ON p.id = st.patient_pk
              WHERE st.study_instance_uid = ?1",
        )?
        .query_row([study], |r| {
            let text = |i| r.get::<_, Option<String>>(i);
            let attributes = [
                (0x0008_0020, "DA", text(1)?),
                (0x0008_0030, "TM", text(2)?),
                (0x0008_0050, "SH", text(3)?),
                (0x0008_0090, "PN", text(4)?),
                (0x0008_1030, "LO", text(6)?),
                (0x0010_0010, "PN", text(8)?),
                (0x0010_0020, "LO", text(7)?),
                (0x0010_0030, "DA", text(9)?),
                (0x0010_0040, "CS", text(10)?),
                (0x0020_000D, "UI", Some(study.to_owned())),
                (0x0020_0010, "SH", text(5)?),
            ];
            Ok((r.get::<_, i64>(0)?, text(1)?, attributes))
        })
        .optional()?;
    let Some((study_pk, study_date, attributes)) = found else {
        return Ok(view);
    };
    view.study_date = study_date;
    for (tag, vr, value) in &attributes {
        body::put_attribute(&mut view.attributes, *tag, vr, value.as_deref());
    }
    let mut series_stmt = conn.prepare_cached(
        "SELECT id, series_instance_uid, modality, series_number, series_description
           FROM series WHERE study_pk = ?1 ORDER BY series_number, series_instance_uid",
    )?;
    let series_rows = series_stmt.query_map([study_pk], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<String>>(2)?,
            r.get::<_, Option<i64>>(3)?,
            r.get::<_, Option<String>>(4)?,
        ))
    })?;
    let mut instances_stmt = conn.prepare_cached(
        "SELECT sop_instance_uid FROM instances WHERE series_pk = ?1 ORDER BY instance_number, sop_instance_uid",
    )?;
    for series in series_rows {
        let (series_pk, uid, modality, number, description) = series?;
        let mut attributes = Map::new();
        body::put_attribute(&mut attributes, 0x0008_0060, "CS", modality.as_deref());
        body::put_attribute(&mut attributes, 0x0008_103E, "LO", description.as_deref());
        body::put_attribute(&mut attributes, 0x0020_000E, "UI", Some(&uid));
        body::put_attribute(&mut attributes, 0x0020_0011, "IS", number.map(|n| n.to_string()).as_deref());
        let sop_instance_uids = instances_stmt
            .query_map([series_pk], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        view.series.push(SeriesView { series_instance_uid: uid, attributes, sop_instance_uids });
    }
    Ok(view)
}

/// Returns the last change of each of `studies` that waits for its quiet
/// period. A failed read is logged and returns nothing, because the router's
/// sweep finds those studies later.
pub(crate) fn waiting_since<'a>(conn: &Connection, studies: impl Iterator<Item = &'a str>) -> Vec<(String, i64)> {
    let mut found = Vec::new();
    for study in studies {
        let read = conn
            .prepare_cached(
                "SELECT last_change_ms FROM study_revisions WHERE study_instance_uid = ?1",
            )
            .and_then(|mut stmt| {
                stmt.query_row([study], |r| r.get::<_, Option<i64>>(0))
                    .optional()
            });
        match read {
            Ok(Some(Some(at))) => found.push((study.to_owned(), at)),
            Ok(_) => {}
            Err(error) => {
                tracing::error!(study_instance_uid = study, %error, "reading a study's wait failed")
            }
        }
    }
    found
}

/// Studies waiting for their quiet period: (Study Instance UID, last change).
pub(crate) fn waiting_studies(conn: &Connection) -> rusqlite::Result<Vec<(String, i64)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT study_instance_uid, last_change_ms FROM study_revisions WHERE last_change_ms IS NOT NULL",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

/// Up to `limit` events after position `after`, in order, with the record
/// location of each ImageStoredEvent.
///
/// Short bodies of instance events are expanded with `config`, so they show
/// the event source, provider and URLs configured when they are read.
pub(crate) fn events_after(
    conn: &Connection,
    config: Option<&EventsConfig>,
    after: i64,
    limit: usize,
) -> rusqlite::Result<Vec<(OutboxEvent, Option<Location>)>> {
    let mut stmt = conn.prepare_cached(
        r#"SELECT seq, event_id, type, study_instance_uid, body, segment, "offset", length, created_ms
             FROM outbox WHERE seq > ?1 ORDER BY seq LIMIT ?2"#,
    )?;
    let rows = stmt.query_map(params![after, limit as i64], |r| {
        let location = match (r.get::<_, Option<u64>>(5)?, r.get::<_, Option<u64>>(6)?, r.get::<_, Option<u64>>(7)?) {
            (Some(segment), Some(offset), Some(length)) => Some(Location { segment, offset, length }),
            _ => None,
        };
        let mut event = OutboxEvent {
            seq: r.get(0)?,
            id: r.get(1)?,
            event_type: r.get(2)?,
            study_instance_uid: r.get(3)?,
            body: r.get(4)?,
        };
        if let Some(config) = config {
            expand_body(config, &mut event, location, r.get(8)?);
        }
        Ok((event, location))
    })?;
    rows.collect()
}

/// Replaces a short body of an instance event with its CloudEvent text.
fn expand_body(config: &EventsConfig, event: &mut OutboxEvent, record: Option<Location>, created_ms: i64) {
    let stored = compact::StoredEvent {
        id: &event.id,
        event_type: &event.event_type,
        study_instance_uid: &event.study_instance_uid,
        created_ms,
        body: &event.body,
        record,
    };
    match compact::expand(config, &stored) {
        None => {}
        Some(Ok(text)) => event.body = text,
        Some(Err(error)) => {
            tracing::warn!(event_id = event.id.as_str(), %error, "outbox event body cannot be expanded; delivering it as stored")
        }
    }
}

/// Deletes events created before `cutoff_ms` up to position `published`, keeping
/// the newest event so positions never restart. Returns how many went.
pub(crate) fn prune(conn: &Connection, cutoff_ms: i64, published: i64) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "DELETE FROM outbox WHERE created_ms < ?1 AND seq <= ?2 AND seq < (SELECT max(seq) FROM outbox)",
    )?
    .execute(params![cutoff_ms, published])
}

/// Returns the position of the newest event (0 when the outbox is empty).
pub(crate) fn head(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT coalesce(max(seq), 0) FROM outbox")?.query_row([], |r| r.get(0))
}

/// Returns the position `consumer` has read the outbox up to (0 before its first read).
pub(crate) fn cursor(conn: &Connection, consumer: &str) -> rusqlite::Result<i64> {
    Ok(conn
        .prepare_cached("SELECT seq FROM event_cursors WHERE consumer = ?1")?
        .query_row([consumer], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

/// Moves `consumer`'s cursor forward to `seq` (never back).
pub(crate) fn advance_cursor(conn: &Connection, consumer: &str, seq: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO event_cursors (consumer, seq) VALUES (?1, ?2)
         ON CONFLICT (consumer) DO UPDATE SET seq = max(seq, excluded.seq)",
    )?
    .execute(params![consumer, seq])?;
    Ok(())
}

/// Returns the store's id, made at random when the manifest is created. It
/// prefixes every event id, so ids from two stores do not collide.
pub(crate) fn store_id(conn: &Connection) -> rusqlite::Result<String> {
    let found: Option<String> = conn
        .prepare_cached("SELECT value FROM meta WHERE key = 'store_id'")?
        .query_row([], |r| r.get(0))
        .optional()?;
    if let Some(id) = found {
        return Ok(id);
    }
    let id: String = conn.query_row("SELECT lower(hex(randomblob(8)))", [], |r| r.get(0))?;
    conn.execute("INSERT INTO meta (key, value) VALUES ('store_id', ?1)", [&id])?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::ChangeKind::*;

    #[test]
    fn changes_merge_within_a_revision() {
        assert_eq!(Addition.then(Modification), Some(Addition));
        assert_eq!(Addition.then(Deletion), None);
        assert_eq!(Modification.then(Deletion), Some(Deletion));
        assert_eq!(Deletion.then(Addition), Some(Modification));
        assert_eq!(Modification.then(Modification), Some(Modification));
    }
}
