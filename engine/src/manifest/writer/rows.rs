//! Entering one record's row: the instance, the copy it replaces or that
//! replaces it, and its patient, study and series.

use rusqlite::types::ToSql;
use rusqlite::{params, Connection, OptionalExtension};

use super::hierarchy::{gc_series, seq_i64, upsert_hierarchy};
use super::{memo, now_ms, Outcome};
use crate::manifest::record::InstanceRecord;
use crate::Location;

/// The instance row a record's SOP Instance UID already has.
struct Existing {
    id: i64,
    series_pk: i64,
    sequence: u64,
    location: Location,
}

/// The statements every row of a batch runs, taken from the statement cache
/// once per batch: each lookup in the cache hashes the whole SQL text.
pub(super) struct RowStatements<'c> {
    find_instance: rusqlite::CachedStatement<'c>,
    insert_instance: rusqlite::CachedStatement<'c>,
    /// Present when events are recorded.
    pub(super) events: Option<crate::manifest::outbox::InstanceEventStatements<'c>>,
}

impl<'c> RowStatements<'c> {
    /// Takes the statements from the connection's statement cache.
    pub(super) fn prepare(conn: &'c Connection, events: bool) -> rusqlite::Result<Self> {
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
            events: if events { Some(crate::manifest::outbox::InstanceEventStatements::prepare(conn)?) } else { None },
        })
    }
}

/// Applies one row inside the open transaction. `deleted_max` is the highest
/// sequence in `deleted_instances`: a row above it cannot have been deleted.
pub(super) fn apply_row(
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
            statements.insert_instance.execute(instance_params(&r.sop_instance_uid, &series_pk, r))?;
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
            .execute(instance_params(&e.id, &series_pk, r))?;
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

/// Returns the parameters of the insert and of the update of an instance row:
/// `key` (?1), then the series and the record's columns (?2 to ?16).
fn instance_params<'a>(key: &'a dyn ToSql, series_pk: &'a i64, r: &'a InstanceRecord) -> [&'a dyn ToSql; 16] {
    [
        key,
        series_pk,
        &r.sop_class_uid,
        &r.transfer_syntax_uid,
        &r.instance_number,
        &r.rows,
        &r.columns,
        &r.bits_allocated,
        &r.number_of_frames,
        &r.location.segment,
        &r.location.offset,
        &r.location.length,
        &r.record_end,
        &r.sequence,
        &r.received_at_ms,
        &r.calling_ae_title,
    ]
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
