//! The instances a C-GET or C-MOVE retrieves, looked up by the unique key of
//! its retrieve level (PS3.4 C.4.2.2.1 and C.4.3.2.1).

use std::collections::HashSet;

use rusqlite::Connection;

use super::{Manifest, ManifestError};
use crate::Location;

/// A Query/Retrieve Level (0008,0052) a retrieve may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetrieveLevel {
    /// Keyed by Patient ID (0010,0020); Patient Root only.
    Patient,
    /// Keyed by Study Instance UID (0020,000D).
    Study,
    /// Keyed by Series Instance UID (0020,000E).
    Series,
    /// Keyed by SOP Instance UID (0008,0018).
    Image,
}

impl RetrieveLevel {
    /// Returns the value of (0008,0052) for this level.
    pub fn as_str(self) -> &'static str {
        match self {
            RetrieveLevel::Patient => "PATIENT",
            RetrieveLevel::Study => "STUDY",
            RetrieveLevel::Series => "SERIES",
            RetrieveLevel::Image => "IMAGE",
        }
    }

    /// Returns the query for one key value, in study, series and instance order.
    fn query(self) -> &'static str {
        match self {
            RetrieveLevel::Patient => concat!(
                r#"SELECT i.sop_instance_uid, i.sop_class_uid, i.transfer_syntax_uid, i.segment, i."offset", i.length
                     FROM instances i JOIN series se ON se.id = i.series_pk
                     JOIN studies st ON st.id = se.study_pk JOIN patients p ON p.id = st.patient_pk
                    WHERE p.patient_id = ?1"#,
                " ORDER BY st.id, se.series_number, se.id, i.instance_number, i.id"
            ),
            RetrieveLevel::Study => concat!(
                r#"SELECT i.sop_instance_uid, i.sop_class_uid, i.transfer_syntax_uid, i.segment, i."offset", i.length
                     FROM instances i JOIN series se ON se.id = i.series_pk
                     JOIN studies st ON st.id = se.study_pk
                    WHERE st.study_instance_uid = ?1"#,
                " ORDER BY st.id, se.series_number, se.id, i.instance_number, i.id"
            ),
            RetrieveLevel::Series => concat!(
                r#"SELECT i.sop_instance_uid, i.sop_class_uid, i.transfer_syntax_uid, i.segment, i."offset", i.length
                     FROM instances i JOIN series se ON se.id = i.series_pk
                    WHERE se.series_instance_uid = ?1"#,
                " ORDER BY se.id, i.instance_number, i.id"
            ),
            RetrieveLevel::Image => concat!(
                r#"SELECT i.sop_instance_uid, i.sop_class_uid, i.transfer_syntax_uid, i.segment, i."offset", i.length
                     FROM instances i WHERE i.sop_instance_uid = ?1"#,
                " ORDER BY i.id"
            ),
        }
    }
}

/// One stored instance to send in a retrieve sub-operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrieveInstance {
    pub sop_instance_uid: String,
    pub sop_class_uid: String,
    /// The transfer syntax the data set is stored in, and so the one it is sent in.
    pub transfer_syntax_uid: String,
    pub location: Location,
}

impl Manifest {
    /// Blocking: the instances matching any of `values` at `level`, each once,
    /// in the order of the values given. Reads committed rows only.
    pub fn retrieve_instances(
        &self,
        level: RetrieveLevel,
        values: &[String],
    ) -> Result<Vec<RetrieveInstance>, ManifestError> {
        let conn = self.read_connection()?;
        Ok(instances_for_keys(&conn, level, values)?)
    }
}

fn instances_for_keys(
    conn: &Connection,
    level: RetrieveLevel,
    values: &[String],
) -> rusqlite::Result<Vec<RetrieveInstance>> {
    let mut stmt = conn.prepare_cached(level.query())?;
    let mut seen = HashSet::new();
    let mut found = Vec::new();
    for value in values {
        let rows = stmt.query_map([value], |r| {
            Ok(RetrieveInstance {
                sop_instance_uid: r.get(0)?,
                sop_class_uid: r.get(1)?,
                transfer_syntax_uid: r.get(2)?,
                location: Location { segment: r.get(3)?, offset: r.get(4)?, length: r.get(5)? },
            })
        })?;
        for row in rows {
            let instance = row?;
            if seen.insert(instance.sop_instance_uid.clone()) {
                found.push(instance);
            }
        }
    }
    Ok(found)
}
