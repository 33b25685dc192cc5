//! Reads for WADO-RS: where the instances of a study, series or single
//! instance are stored.

use rusqlite::{params, Connection};

use crate::Location;

/// One stored instance and where its Part 10 record is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredInstance {
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub sop_instance_uid: String,
    pub sop_class_uid: String,
    pub transfer_syntax_uid: String,
    pub location: Location,
}

/// The instances a request names: a whole study, one series of it, or one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceFilter<'a> {
    pub study_instance_uid: &'a str,
    pub series_instance_uid: Option<&'a str>,
    pub sop_instance_uid: Option<&'a str>,
}

/// Queries the instances matching `filter`, ordered by series and instance number.
pub fn stored_instances(conn: &Connection, filter: &InstanceFilter<'_>) -> rusqlite::Result<Vec<StoredInstance>> {
    let mut stmt = conn.prepare_cached(
        r#"SELECT st.study_instance_uid, se.series_instance_uid, i.sop_instance_uid, i.sop_class_uid,
                  i.transfer_syntax_uid, i.segment, i."offset", i.length
             FROM instances i
             JOIN series se ON se.id = i.series_pk
             JOIN studies st ON st.id = se.study_pk
            WHERE st.study_instance_uid = ?1
              AND (?2 IS NULL OR se.series_instance_uid = ?2)
              AND (?3 IS NULL OR i.sop_instance_uid = ?3)
            ORDER BY se.series_number, se.id, i.instance_number, i.id"#,
    )?;
    let rows = stmt.query_map(
        params![filter.study_instance_uid, filter.series_instance_uid, filter.sop_instance_uid],
        |row| {
            Ok(StoredInstance {
                study_instance_uid: row.get(0)?,
                series_instance_uid: row.get(1)?,
                sop_instance_uid: row.get(2)?,
                sop_class_uid: row.get(3)?,
                transfer_syntax_uid: row.get(4)?,
                location: Location { segment: row.get(5)?, offset: row.get(6)?, length: row.get(7)? },
            })
        },
    )?;
    rows.collect()
}
