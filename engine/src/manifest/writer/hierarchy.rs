//! The patient, study and series rows of a record: found or created, their
//! attributes kept at the newest record's values, and removed once empty.

use rusqlite::types::{Value, ValueRef};
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};

use super::memo;
use crate::manifest::record::InstanceRecord;

/// Returns the second half of a patient's key: its IssuerOfPatientID, or, for an
/// instance without PatientID, a marker naming its study, so that patients
/// without an identifier are one per study instead of one for all.
fn patient_key_issuer(r: &InstanceRecord) -> String {
    if key(&r.patient_id).is_empty() {
        format!("{}{}", crate::manifest::schema::ANONYMOUS_PATIENT_PREFIX, r.study_instance_uid)
    } else {
        key(&r.issuer_of_patient_id).to_owned()
    }
}

fn key(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("")
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

pub(super) fn seq_i64(seq: u64) -> rusqlite::Result<i64> {
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
pub(super) fn upsert_hierarchy(conn: &Connection, r: &InstanceRecord, memo: &mut memo::HierarchyMemo) -> rusqlite::Result<i64> {
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
pub(super) fn gc_series(conn: &Connection, series_pk: i64) -> rusqlite::Result<()> {
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
