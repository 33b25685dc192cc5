//! SQL matching agrees with in-memory matching on a manifest.

use dicom_core::{Tag, VR};
use dicom_dictionary_std::tags;
use rusqlite::{params, params_from_iter, Connection};

use super::{build, register_functions};
use crate::manifest::schema::DDL;
use crate::query::attributes;
use crate::query::matching::{matches, parse_matcher};
use crate::query::{Key, Level, Matcher, Model, Query};

/// (patient name, study uid, date, time, accession, [(series uid, modality, instances)])
type Study = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str, usize)],
);

const STUDIES: &[Study] = &[
    (
        "Doe^John",
        "1.1",
        "20040826",
        "071500",
        "A1",
        &[("1.1.1", "MR", 2), ("1.1.2", "CT", 1)],
    ),
    ("DOE^JANE", "1.2", "19991231", "080059.5", "A2", &[("1.2.1", "MR", 1)]),
    ("Müller^Hans", "1.3", "20100101", "080100", "B7", &[("1.3.1", "US", 3)]),
    ("", "1.4", "", "", "", &[("1.4.1", "", 1)]),
];

fn manifest() -> Connection {
    let conn = Connection::open_in_memory().unwrap();
    conn.execute_batch(DDL).unwrap();
    register_functions(&conn).unwrap();
    let mut instance = 0;
    for (index, (name, study_uid, date, time, accession, series)) in STUDIES.iter().enumerate() {
        conn.execute(
            "INSERT INTO patients (patient_id, issuer_of_patient_id, patient_name, attrs_sequence) VALUES (?1, '', ?2, 0)",
            params![format!("P{index}"), name],
        )
        .unwrap();
        let patient = conn.last_insert_rowid();
        conn.execute(
            "INSERT INTO studies (study_instance_uid, patient_pk, study_date, study_time, accession_number, attrs_sequence)
             VALUES (?1, ?2, ?3, ?4, ?5, 0)",
            params![study_uid, patient, date, time, accession],
        )
        .unwrap();
        let study = conn.last_insert_rowid();
        for (series_uid, modality, instances) in series.iter() {
            conn.execute(
                "INSERT INTO series (series_instance_uid, study_pk, modality, attrs_sequence) VALUES (?1, ?2, ?3, 0)",
                params![series_uid, study, modality],
            )
            .unwrap();
            let series_pk = conn.last_insert_rowid();
            for _ in 0..*instances {
                instance += 1;
                conn.execute(
                    r#"INSERT INTO instances (sop_instance_uid, series_pk, sop_class_uid, transfer_syntax_uid,
                         segment, "offset", length, record_end, sequence, received_at_ms)
                       VALUES (?1, ?2, '1.2.840.10008.5.1.4.1.1.7', '1.2.840.10008.1.2.1', 0, 0, 0, 0, ?3, 0)"#,
                    params![format!("{series_uid}.{instance}"), series_pk, instance],
                )
                .unwrap();
            }
        }
    }
    conn
}

fn study_query(tag: Tag, vr: VR, key: &str) -> Query {
    Query {
        model: Model::StudyRoot,
        level: Level::Study,
        keys: vec![Key {
            tag,
            vr,
            matcher: parse_matcher(vr, key).unwrap(),
        }],
        offset: 0,
        limit: None,
        specific_character_set: None,
        retrieve_ae_title: None,
    }
}

/// Entity ids the SQL statement selects.
fn sql_matches(conn: &Connection, query: &Query) -> Vec<i64> {
    let statement = build(query);
    let mut prepared = conn.prepare(&statement.sql).unwrap();
    let rows = prepared
        .query_map(params_from_iter(statement.params.iter()), |r| r.get(0))
        .unwrap();
    rows.map(Result::unwrap).collect()
}

/// Entity ids selected by fetching every value and matching in memory.
fn memory_matches(conn: &Connection, query: &Query) -> Vec<i64> {
    let key = &query.keys[0];
    let universal = Query {
        keys: vec![Key {
            matcher: Matcher::Universal,
            ..key.clone()
        }],
        ..query.clone()
    };
    let statement = build(&universal);
    let mut prepared = conn.prepare(&statement.sql).unwrap();
    let rows = prepared
        .query_map([], |r| {
            let value: Option<String> = match r.get_ref(2)? {
                rusqlite::types::ValueRef::Integer(n) => Some(n.to_string()),
                rusqlite::types::ValueRef::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
                _ => None,
            };
            Ok((r.get::<_, i64>(0)?, value))
        })
        .unwrap();
    rows.map(Result::unwrap)
        .filter(|(_, value)| matches(key.vr, &key.matcher, value.as_deref()))
        .map(|(id, _)| id)
        .collect()
}

#[test]
fn sql_and_memory_agree_on_study_keys() {
    let conn = manifest();
    let cases: &[(Tag, &str)] = &[
        (tags::PATIENT_NAME, "doe*"),
        (tags::PATIENT_NAME, "DOE^JOHN"),
        (tags::PATIENT_NAME, "?oe^*"),
        (tags::PATIENT_NAME, "MÜLLER*"),
        (tags::PATIENT_NAME, "*"),
        (tags::STUDY_DATE, "20000101-"),
        (tags::STUDY_DATE, "-20100101"),
        (tags::STUDY_DATE, "20000101-20091231"),
        (tags::STUDY_DATE, "20040826"),
        (tags::STUDY_TIME, "0700-0800"),
        (tags::STUDY_TIME, "0801-"),
        (tags::STUDY_INSTANCE_UID, "1.1\\1.3\\9.9"),
        (tags::STUDY_INSTANCE_UID, "1.2"),
        (tags::ACCESSION_NUMBER, "A*"),
        (tags::ACCESSION_NUMBER, "B7"),
        (tags::MODALITIES_IN_STUDY, "MR"),
        (tags::MODALITIES_IN_STUDY, "US\\CT"),
        (tags::MODALITIES_IN_STUDY, "M?"),
        (tags::NUMBER_OF_STUDY_RELATED_INSTANCES, "3"),
        (tags::NUMBER_OF_STUDY_RELATED_SERIES, "2"),
    ];
    for (tag, key) in cases {
        let vr = attributes::find(*tag).unwrap().vr;
        let query = study_query(*tag, vr, key);
        let from_sql = sql_matches(&conn, &query);
        let from_memory = memory_matches(&conn, &query);
        assert_eq!(from_sql, from_memory, "key ({:04X},{:04X}) = {key:?}", tag.0, tag.1);
    }
}

#[test]
fn sql_matches_expected_studies() {
    let conn = manifest();
    let ids = |tag: Tag, key: &str| {
        let vr = attributes::find(tag).unwrap().vr;
        sql_matches(&conn, &study_query(tag, vr, key))
    };
    assert_eq!(ids(tags::PATIENT_NAME, "doe*"), vec![1, 2]);
    assert_eq!(ids(tags::PATIENT_NAME, "müller^hans"), vec![3]);
    assert_eq!(ids(tags::STUDY_DATE, "20000101-"), vec![1, 3]);
    assert_eq!(ids(tags::STUDY_DATE, "-20100101"), vec![1, 2, 3]);
    assert_eq!(ids(tags::STUDY_TIME, "0700-0800"), vec![1, 2]);
    assert_eq!(ids(tags::MODALITIES_IN_STUDY, "CT"), vec![1]);
    assert_eq!(ids(tags::STUDY_INSTANCE_UID, "1.2\\1.4"), vec![2, 4]);
    assert_eq!(ids(tags::NUMBER_OF_STUDY_RELATED_INSTANCES, "3"), vec![1, 3]);
    assert_eq!(ids(tags::PATIENT_NAME, "").len(), 4);
}

#[test]
fn series_level_joins_its_study() {
    let conn = manifest();
    let query = Query {
        model: Model::StudyRoot,
        level: Level::Series,
        keys: vec![
            Key {
                tag: tags::STUDY_INSTANCE_UID,
                vr: VR::UI,
                matcher: Matcher::Single("1.1".into()),
            },
            Key {
                tag: tags::MODALITY,
                vr: VR::CS,
                matcher: Matcher::Single("MR".into()),
            },
        ],
        offset: 0,
        limit: None,
        specific_character_set: None,
        retrieve_ae_title: None,
    };
    assert_eq!(sql_matches(&conn, &query), vec![1]);
}

#[test]
fn matcher_text_round_trips() {
    for (vr, text) in [
        (VR::DA, "20000101-"),
        (VR::DA, "-20100101"),
        (VR::DA, "2000-2001"),
        (VR::PN, "D*"),
        (VR::UI, "1\\2"),
    ] {
        let matcher = parse_matcher(vr, text).unwrap();
        assert_eq!(
            parse_matcher(vr, &super::matcher_text(&matcher)).unwrap(),
            matcher,
            "{text}"
        );
    }
}
