//! The manifest's SQLite schema and connection setup.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::ManifestError;

/// The schema version this code writes and reads (`meta.schema_version`).
pub const SCHEMA_VERSION: i64 = 1;

/// How long a connection waits for a lock before giving up.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Start of the `issuer_of_patient_id` key value of a patient without
/// PatientID; the Study Instance UID follows. Reads show it as absent.
pub const ANONYMOUS_PATIENT_PREFIX: &str = "\u{1}nectar-unidentified:";

/// The tables, indexes and views.
///
/// Patient key columns are `NOT NULL`: an absent PatientID or
/// IssuerOfPatientID is stored as `''` so that the `UNIQUE` key groups them
/// (SQLite treats NULLs as distinct in unique constraints).
///
/// `attrs_sequence` on patients, studies and series is the store sequence of
/// the record whose attribute values the row currently holds: a record only
/// overwrites them when its sequence is at least that large, so the newest
/// values win whatever order records are (re-)entered in.
pub const DDL: &str = r#"
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS patients (
    id                   INTEGER PRIMARY KEY,
    patient_id           TEXT NOT NULL,
    issuer_of_patient_id TEXT NOT NULL,
    patient_name         TEXT,
    patient_birth_date   TEXT,
    patient_sex          TEXT,
    attrs_sequence       INTEGER NOT NULL,
    UNIQUE (patient_id, issuer_of_patient_id)
);
CREATE INDEX IF NOT EXISTS patients_patient_name ON patients (patient_name);

CREATE TABLE IF NOT EXISTS studies (
    id                       INTEGER PRIMARY KEY,
    study_instance_uid       TEXT NOT NULL UNIQUE,
    patient_pk               INTEGER NOT NULL REFERENCES patients (id),
    study_date               TEXT,
    study_time               TEXT,
    accession_number         TEXT,
    referring_physician_name TEXT,
    study_id                 TEXT,
    study_description        TEXT,
    timezone_offset_from_utc TEXT,
    specific_character_set   TEXT,
    attrs_sequence           INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS studies_patient_pk       ON studies (patient_pk);
CREATE INDEX IF NOT EXISTS studies_study_date       ON studies (study_date);
CREATE INDEX IF NOT EXISTS studies_accession_number ON studies (accession_number);

CREATE TABLE IF NOT EXISTS series (
    id                                  INTEGER PRIMARY KEY,
    series_instance_uid                 TEXT NOT NULL UNIQUE,
    study_pk                            INTEGER NOT NULL REFERENCES studies (id),
    modality                            TEXT,
    series_number                       INTEGER,
    series_description                  TEXT,
    series_date                         TEXT,
    series_time                         TEXT,
    performed_procedure_step_start_date TEXT,
    performed_procedure_step_start_time TEXT,
    institution_name                    TEXT,
    attrs_sequence                      INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS series_study_pk ON series (study_pk);
CREATE INDEX IF NOT EXISTS series_modality ON series (modality);

CREATE TABLE IF NOT EXISTS instances (
    id                  INTEGER PRIMARY KEY,
    sop_instance_uid    TEXT NOT NULL UNIQUE,
    series_pk           INTEGER NOT NULL REFERENCES series (id),
    sop_class_uid       TEXT NOT NULL,
    transfer_syntax_uid TEXT NOT NULL,
    instance_number     INTEGER,
    "rows"              INTEGER,
    "columns"           INTEGER,
    bits_allocated      INTEGER,
    number_of_frames    INTEGER,
    segment             INTEGER NOT NULL,
    "offset"            INTEGER NOT NULL,
    length              INTEGER NOT NULL,
    record_end          INTEGER NOT NULL,
    sequence            INTEGER NOT NULL,
    received_at_ms      INTEGER NOT NULL,
    calling_ae_title    TEXT
);
CREATE INDEX IF NOT EXISTS instances_series_pk      ON instances (series_pk);
CREATE INDEX IF NOT EXISTS instances_segment_offset ON instances (segment, "offset");

-- Superseded copies of duplicate SOP Instance UIDs. `sequence` is the store
-- sequence of the superseded record, so re-entering it is a no-op.
CREATE TABLE IF NOT EXISTS replaced_instances (
    sequence             INTEGER PRIMARY KEY,
    sop_instance_uid     TEXT NOT NULL,
    segment              INTEGER NOT NULL,
    "offset"             INTEGER NOT NULL,
    length               INTEGER NOT NULL,
    replaced_at_ms       INTEGER NOT NULL,
    replaced_by_sequence INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS replaced_instances_sop_instance_uid ON replaced_instances (sop_instance_uid);
CREATE INDEX IF NOT EXISTS replaced_instances_segment         ON replaced_instances (segment, "offset");

-- indexed_end: byte offset in the segment up to which every valid record is
-- in the manifest; recovery scans the segment from there.
CREATE TABLE IF NOT EXISTS segments (
    id          INTEGER PRIMARY KEY,
    indexed_end INTEGER NOT NULL
);

-- Derived study attributes, computed on read.
CREATE VIEW IF NOT EXISTS study_summary AS
SELECT st.id AS study_pk,
       (SELECT group_concat(DISTINCT se.modality) FROM series se
         WHERE se.study_pk = st.id AND se.modality IS NOT NULL AND se.modality <> '')
           AS modalities_in_study,
       (SELECT count(*) FROM series se WHERE se.study_pk = st.id)
           AS number_of_study_related_series,
       (SELECT count(*) FROM instances i JOIN series se ON se.id = i.series_pk
         WHERE se.study_pk = st.id)
           AS number_of_study_related_instances
  FROM studies st;

-- Derived series attribute, computed on read.
CREATE VIEW IF NOT EXISTS series_summary AS
SELECT se.id AS series_pk,
       (SELECT count(*) FROM instances i WHERE i.series_pk = se.id)
           AS number_of_series_related_instances
  FROM series se;
"#;

fn configure(conn: &Connection) -> Result<(), ManifestError> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

/// Opens (creating if needed) the writer's connection: WAL, synchronous=NORMAL,
/// foreign keys on, schema created and its version checked.
pub(crate) fn open_writer(path: &Path) -> Result<Connection, ManifestError> {
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent)?;
        }
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    configure(&conn)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(ManifestError::NotWal(mode));
    }
    conn.execute_batch(
        "PRAGMA synchronous = NORMAL;
         PRAGMA foreign_keys = ON;
         PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -16384;
         PRAGMA wal_autocheckpoint = 8192;",
    )?;
    create_schema(&conn)?;
    Ok(conn)
}

/// Opens a second writing connection to an existing manifest, for the
/// consumers' cursors (short transactions beside the writer's).
pub(crate) fn open_cursor_writer(path: &Path) -> Result<Connection, ManifestError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    configure(&conn)?;
    conn.execute_batch("PRAGMA synchronous = NORMAL;")?;
    Ok(conn)
}

/// Opens a read-only connection to an existing manifest.
pub(crate) fn open_reader(path: &Path) -> Result<Connection, ManifestError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    configure(&conn)?;
    Ok(conn)
}

fn create_schema(conn: &Connection) -> Result<(), ManifestError> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let result = (|| {
        conn.execute_batch(DDL)?;
        conn.execute_batch(super::outbox::DDL)?;
        super::outbox::upgrade(conn)?;
        conn.execute_batch(super::delete::DDL)?;
        let found: Option<String> = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        match found {
            None => {
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)",
                    [SCHEMA_VERSION.to_string()],
                )?;
                Ok(())
            }
            Some(v) if v == SCHEMA_VERSION.to_string() => Ok(()),
            Some(v) => Err(ManifestError::SchemaVersion {
                found: v,
                expected: SCHEMA_VERSION,
            }),
        }
    })();
    match result {
        Ok(()) => {
            conn.execute_batch("COMMIT")?;
            Ok(())
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}
