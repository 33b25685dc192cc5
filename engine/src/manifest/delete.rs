//! Deleting instances from the manifest. The records stay in their segments
//! (their space is reclaimed later) and are listed in `deleted_instances`, so
//! fsck and recovery know them.

use rusqlite::{params, Connection};

use super::outbox::{self, ChangeKind};
use crate::Location;

/// The deleted-instances table, created with the rest of the schema.
pub const DDL: &str = r#"
CREATE TABLE IF NOT EXISTS deleted_instances (
    sequence         INTEGER PRIMARY KEY,
    sop_instance_uid TEXT NOT NULL,
    segment          INTEGER NOT NULL,
    "offset"         INTEGER NOT NULL,
    length           INTEGER NOT NULL,
    deleted_at_ms    INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS deleted_instances_segment ON deleted_instances (segment, "offset");
"#;

/// The instances to delete: a study, one of its series, or one instance of that series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteScope {
    pub study_instance_uid: String,
    pub series_instance_uid: Option<String>,
    pub sop_instance_uid: Option<String>,
}

struct Doomed {
    id: i64,
    series_pk: i64,
    series_uid: String,
    sop_uid: String,
    location: Location,
    sequence: i64,
}

/// Deletes the instances in `scope` inside the open transaction, records each
/// as a deletion of its study when `events` is set, and returns how many went.
/// Series, studies and patients left empty are removed by `gc_series`.
pub(crate) fn delete(
    conn: &Connection,
    scope: &DeleteScope,
    events: bool,
    now_ms: i64,
    gc_series: impl Fn(&Connection, i64) -> rusqlite::Result<()>,
) -> rusqlite::Result<usize> {
    let mut stmt = conn.prepare_cached(
        r#"SELECT i.id, i.series_pk, se.series_instance_uid, i.sop_instance_uid,
                  i.segment, i."offset", i.length, i.sequence
             FROM instances i
             JOIN series se  ON se.id = i.series_pk
             JOIN studies st ON st.id = se.study_pk
            WHERE st.study_instance_uid = ?1
              AND (?2 IS NULL OR se.series_instance_uid = ?2)
              AND (?3 IS NULL OR i.sop_instance_uid = ?3)"#,
    )?;
    let doomed = stmt
        .query_map(
            params![scope.study_instance_uid, scope.series_instance_uid, scope.sop_instance_uid],
            |r| {
                Ok(Doomed {
                    id: r.get(0)?,
                    series_pk: r.get(1)?,
                    series_uid: r.get(2)?,
                    sop_uid: r.get(3)?,
                    location: Location { segment: r.get(4)?, offset: r.get(5)?, length: r.get(6)? },
                    sequence: r.get(7)?,
                })
            },
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut series: Vec<i64> = Vec::new();
    for d in &doomed {
        conn.prepare_cached(
            r#"INSERT OR IGNORE INTO deleted_instances (sequence, sop_instance_uid, segment, "offset", length, deleted_at_ms)
               VALUES (?1, ?2, ?3, ?4, ?5, ?6)"#,
        )?
        .execute(params![d.sequence, d.sop_uid, d.location.segment, d.location.offset, d.location.length, now_ms])?;
        conn.prepare_cached("DELETE FROM instances WHERE id = ?1")?.execute([d.id])?;
        if events {
            let entry = format!("{}/{}", d.series_uid, d.sop_uid);
            outbox::record_change(conn, &scope.study_instance_uid, &entry, ChangeKind::Deletion, now_ms)?;
        }
        if !series.contains(&d.series_pk) {
            series.push(d.series_pk);
        }
    }
    for series_pk in series {
        gc_series(conn, series_pk)?;
    }
    Ok(doomed.len())
}

/// Locations of every deleted record, for fsck.
pub(crate) fn deleted_locations(conn: &Connection) -> rusqlite::Result<Vec<Location>> {
    let mut stmt = conn.prepare_cached(r#"SELECT segment, "offset", length FROM deleted_instances"#)?;
    let rows = stmt.query_map([], |r| Ok(Location { segment: r.get(0)?, offset: r.get(1)?, length: r.get(2)? }))?;
    rows.collect()
}
