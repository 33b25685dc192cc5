//! Reads on a (read-only) connection. They see what the writer has
//! committed: call [`super::Manifest::flush`] first to see rows just queued.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, Row};

use super::record::{InstanceRecord, ManifestCounts, ReplacedInstance, StudySummary};
use crate::Location;

pub(crate) fn indexed_ends(conn: &Connection) -> rusqlite::Result<HashMap<u64, u64>> {
    let mut stmt = conn.prepare_cached("SELECT id, indexed_end FROM segments")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, u64>(0)?, r.get::<_, u64>(1)?)))?;
    rows.collect()
}

pub(crate) fn instance_locations(
    conn: &Connection,
) -> rusqlite::Result<Vec<(String, Location, u64)>> {
    let mut stmt = conn.prepare_cached(
        r#"SELECT sop_instance_uid, segment, "offset", length, sequence
             FROM instances ORDER BY segment, "offset""#,
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get(0)?,
            Location {
                segment: r.get(1)?,
                offset: r.get(2)?,
                length: r.get(3)?,
            },
            r.get(4)?,
        ))
    })?;
    rows.collect()
}

pub(crate) fn replaced_locations(conn: &Connection) -> rusqlite::Result<Vec<Location>> {
    let mut stmt = conn.prepare_cached(
        r#"SELECT segment, "offset", length FROM replaced_instances ORDER BY segment, "offset""#,
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(Location {
            segment: r.get(0)?,
            offset: r.get(1)?,
            length: r.get(2)?,
        })
    })?;
    rows.collect()
}

pub(crate) fn counts(conn: &Connection) -> rusqlite::Result<ManifestCounts> {
    conn.prepare_cached(
        "SELECT (SELECT count(*) FROM patients),
                (SELECT count(*) FROM studies),
                (SELECT count(*) FROM series),
                (SELECT count(*) FROM instances),
                (SELECT count(*) FROM replaced_instances)",
    )?
    .query_row([], |r| {
        Ok(ManifestCounts {
            patients: r.get(0)?,
            studies: r.get(1)?,
            series: r.get(2)?,
            instances: r.get(3)?,
            replaced: r.get(4)?,
        })
    })
}

fn none_if_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty())
}

fn instance_from_row(r: &Row<'_>) -> rusqlite::Result<InstanceRecord> {
    Ok(InstanceRecord {
        sop_instance_uid: r.get(0)?,
        sop_class_uid: r.get(1)?,
        transfer_syntax_uid: r.get(2)?,
        study_instance_uid: r.get(3)?,
        series_instance_uid: r.get(4)?,
        patient_id: none_if_empty(r.get(5)?),
        issuer_of_patient_id: none_if_empty(r.get::<_, Option<String>>(6)?)
            .filter(|issuer| !issuer.starts_with(super::schema::ANONYMOUS_PATIENT_PREFIX)),
        patient_name: r.get(7)?,
        patient_birth_date: r.get(8)?,
        patient_sex: r.get(9)?,
        study_date: r.get(10)?,
        study_time: r.get(11)?,
        accession_number: r.get(12)?,
        referring_physician_name: r.get(13)?,
        study_id: r.get(14)?,
        study_description: r.get(15)?,
        timezone_offset_from_utc: r.get(16)?,
        specific_character_set: r.get(17)?,
        modality: r.get(18)?,
        series_number: r.get(19)?,
        series_description: r.get(20)?,
        series_date: r.get(21)?,
        series_time: r.get(22)?,
        performed_procedure_step_start_date: r.get(23)?,
        performed_procedure_step_start_time: r.get(24)?,
        institution_name: r.get(25)?,
        instance_number: r.get(26)?,
        rows: r.get(27)?,
        columns: r.get(28)?,
        bits_allocated: r.get(29)?,
        number_of_frames: r.get(30)?,
        location: Location {
            segment: r.get(31)?,
            offset: r.get(32)?,
            length: r.get(33)?,
        },
        record_end: r.get(34)?,
        sequence: r.get(35)?,
        received_at_ms: r.get(36)?,
        calling_ae_title: r.get(37)?,
    })
}

pub(crate) fn instance(
    conn: &Connection,
    sop_instance_uid: &str,
) -> rusqlite::Result<Option<InstanceRecord>> {
    conn.prepare_cached(
        r#"SELECT i.sop_instance_uid, i.sop_class_uid, i.transfer_syntax_uid,
                  st.study_instance_uid, se.series_instance_uid,
                  p.patient_id, p.issuer_of_patient_id, p.patient_name, p.patient_birth_date, p.patient_sex,
                  st.study_date, st.study_time, st.accession_number, st.referring_physician_name,
                  st.study_id, st.study_description, st.timezone_offset_from_utc, st.specific_character_set,
                  se.modality, se.series_number, se.series_description, se.series_date, se.series_time,
                  se.performed_procedure_step_start_date, se.performed_procedure_step_start_time,
                  se.institution_name,
                  i.instance_number, i."rows", i."columns", i.bits_allocated, i.number_of_frames,
                  i.segment, i."offset", i.length, i.record_end, i.sequence, i.received_at_ms,
                  i.calling_ae_title
             FROM instances i
             JOIN series se   ON se.id = i.series_pk
             JOIN studies st  ON st.id = se.study_pk
             JOIN patients p  ON p.id = st.patient_pk
            WHERE i.sop_instance_uid = ?1"#,
    )?
    .query_row([sop_instance_uid], instance_from_row)
    .optional()
}

pub(crate) fn study_summary(
    conn: &Connection,
    study_instance_uid: &str,
) -> rusqlite::Result<Option<StudySummary>> {
    conn.prepare_cached(
        "SELECT s.modalities_in_study, s.number_of_study_related_series,
                s.number_of_study_related_instances
           FROM studies st JOIN study_summary s ON s.study_pk = st.id
          WHERE st.study_instance_uid = ?1",
    )?
    .query_row([study_instance_uid], |r| {
        let modalities: Option<String> = r.get(0)?;
        let mut modalities: Vec<String> = modalities
            .map(|m| m.split(',').map(str::to_owned).collect())
            .unwrap_or_default();
        modalities.sort();
        Ok(StudySummary {
            modalities_in_study: modalities,
            number_of_series: r.get(1)?,
            number_of_instances: r.get(2)?,
        })
    })
    .optional()
}

pub(crate) fn replaced_instances(
    conn: &Connection,
    sop_instance_uid: &str,
) -> rusqlite::Result<Vec<ReplacedInstance>> {
    let mut stmt = conn.prepare_cached(
        r#"SELECT sop_instance_uid, segment, "offset", length, sequence, replaced_at_ms,
                  replaced_by_sequence
             FROM replaced_instances WHERE sop_instance_uid = ?1 ORDER BY sequence"#,
    )?;
    let rows = stmt.query_map([sop_instance_uid], |r| {
        Ok(ReplacedInstance {
            sop_instance_uid: r.get(0)?,
            location: Location {
                segment: r.get(1)?,
                offset: r.get(2)?,
                length: r.get(3)?,
            },
            sequence: r.get(4)?,
            replaced_at_ms: r.get(5)?,
            replaced_by_sequence: r.get(6)?,
        })
    })?;
    rows.collect()
}
