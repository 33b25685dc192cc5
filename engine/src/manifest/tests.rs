use std::collections::HashMap;

use super::*;
use crate::Location;

fn open(dir: &tempfile::TempDir, queue: usize, max_batch: usize) -> Manifest {
    Manifest::open(
        &dir.path().join("manifest.sqlite3"),
        ManifestConfig { queue, max_batch, ..ManifestConfig::default() },
    )
    .expect("open manifest")
}

/// An instance of `patient` / `study` / `series`, stored at `segment` right
/// after the record ending at `offset`.
fn row(
    uid: &str,
    study: &str,
    series: &str,
    patient: &str,
    sequence: u64,
    segment: u64,
    offset: u64,
) -> InstanceRecord {
    InstanceRecord {
        sop_instance_uid: uid.into(),
        sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
        transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
        study_instance_uid: study.into(),
        series_instance_uid: series.into(),
        patient_id: Some(patient.into()),
        patient_name: Some(format!("DOE^{patient}")),
        study_date: Some("20240102".into()),
        accession_number: Some(format!("ACC-{study}")),
        modality: Some("CT".into()),
        series_number: Some(1),
        instance_number: Some(sequence as i64),
        rows: Some(512),
        columns: Some(512),
        bits_allocated: Some(16),
        location: Location {
            segment,
            offset,
            length: 1000,
        },
        // Rows of a segment at offsets 2000 apart are contiguous records.
        record_end: offset + 2000,
        sequence,
        received_at_ms: 1_700_000_000_000 + sequence as i64,
        calling_ae_title: Some("MODALITY".into()),
        ..Default::default()
    }
}

fn full_row() -> InstanceRecord {
    InstanceRecord {
        sop_instance_uid: "1.2.3.4.5.6.7".into(),
        sop_class_uid: "1.2.840.10008.5.1.4.1.1.4".into(),
        transfer_syntax_uid: "1.2.840.10008.1.2.4.50".into(),
        study_instance_uid: "1.2.3.4".into(),
        series_instance_uid: "1.2.3.4.5".into(),
        patient_id: Some("PID-1".into()),
        issuer_of_patient_id: Some("HOSP".into()),
        patient_name: Some("Yamada^Tarou=山田^太郎".into()),
        patient_birth_date: Some("19700101".into()),
        patient_sex: Some("M".into()),
        study_date: Some("20240102".into()),
        study_time: Some("101112.123".into()),
        accession_number: Some("A123".into()),
        referring_physician_name: Some("House^Gregory".into()),
        study_id: Some("S1".into()),
        study_description: Some("MR Brain".into()),
        timezone_offset_from_utc: Some("+0900".into()),
        specific_character_set: Some("ISO_IR 192".into()),
        modality: Some("MR".into()),
        series_number: Some(3),
        series_description: Some("T1 axial".into()),
        series_date: Some("20240102".into()),
        series_time: Some("101500".into()),
        performed_procedure_step_start_date: Some("20240102".into()),
        performed_procedure_step_start_time: Some("101000".into()),
        institution_name: Some("General".into()),
        instance_number: Some(42),
        rows: Some(256),
        columns: Some(320),
        bits_allocated: Some(16),
        number_of_frames: Some(1),
        location: Location {
            segment: 7,
            offset: 64,
            length: 123_456,
        },
        record_end: 64 + 32 + 123_456,
        sequence: 99,
        received_at_ms: 1_700_000_123_456,
        calling_ae_title: Some("SCANNER1".into()),
    }
}

#[test]
fn many_rows_in_batches() {
    let dir = tempfile::tempdir().unwrap();
    let m = open(&dir, 64, 50);
    let mut seq = 0;
    // 4 patients, 3 studies each, 5 series each, 40 instances each = 2400.
    for p in 0..4 {
        for s in 0..3 {
            for se in 0..5 {
                for i in 0..40 {
                    seq += 1;
                    let study = format!("1.{p}.{s}");
                    let series = format!("{study}.{se}");
                    let uid = format!("{series}.{i}");
                    m.insert_blocking(row(
                        &uid,
                        &study,
                        &series,
                        &format!("P{p}"),
                        seq,
                        1,
                        seq * 2000,
                    ))
                    .unwrap();
                }
            }
        }
    }
    m.flush().unwrap();
    assert_eq!(
        m.counts().unwrap(),
        ManifestCounts {
            patients: 4,
            studies: 12,
            series: 60,
            instances: 2400,
            replaced: 0
        }
    );
    assert_eq!(m.instance_locations().unwrap().len(), 2400);
    m.close().unwrap();
}

#[test]
fn round_trip_of_every_field() {
    let dir = tempfile::tempdir().unwrap();
    let m = open(&dir, 16, 16);
    let r = full_row();
    m.try_insert(r.clone()).unwrap();
    let mut bare = row("9.9", "9", "9.1", "x", 100, 7, 200_000);
    bare.patient_id = None;
    bare.patient_name = None;
    bare.modality = None;
    m.try_insert(bare.clone()).unwrap();
    m.flush().unwrap();
    assert_eq!(m.instance(&r.sop_instance_uid).unwrap(), Some(r));
    assert_eq!(m.instance("9.9").unwrap(), Some(bare));
    assert_eq!(m.instance("nope").unwrap(), None);
}

#[test]
fn grouping_of_patients_studies_series() {
    let dir = tempfile::tempdir().unwrap();
    let m = open(&dir, 16, 4);
    // Patient P1 without issuer, P1 with issuer A: two patients.
    let mut a = row("1.1.1.1", "1.1", "1.1.1", "P1", 1, 0, 0);
    let b = row("1.1.1.2", "1.1", "1.1.1", "P1", 2, 0, 2000);
    let mut c = row("1.1.2.1", "1.1", "1.1.2", "P1", 3, 0, 4000);
    c.modality = Some("SR".into());
    let mut d = row("2.1.1.1", "2.1", "2.1.1", "P1", 4, 0, 6000);
    d.issuer_of_patient_id = Some("A".into());
    let mut e = row("3.1.1.1", "3.1", "3.1.1", "P1", 5, 0, 8000);
    e.patient_id = None;
    let mut f = row("4.1.1.1", "4.1", "4.1.1", "P1", 6, 0, 10000);
    f.patient_id = Some(String::new());
    a.patient_name = Some("OLD^NAME".into());
    for r in [a, b, c, d, e, f] {
        m.insert_blocking(r).unwrap();
    }
    m.flush().unwrap();
    // (P1,''), (P1,A), and one patient per study for the absent (study 3.1)
    // and the empty (study 4.1) PatientID.
    assert_eq!(
        m.counts().unwrap(),
        ManifestCounts {
            patients: 4,
            studies: 4,
            series: 5,
            instances: 6,
            replaced: 0
        }
    );
    let s = m.study_summary("1.1").unwrap().unwrap();
    assert_eq!(
        s.modalities_in_study,
        vec!["CT".to_string(), "SR".to_string()]
    );
    assert_eq!(s.number_of_series, 2);
    assert_eq!(s.number_of_instances, 3);
    assert_eq!(m.study_summary("none").unwrap(), None);
    // Newest patient attributes win: sequences 2 and 3 carried DOE^P1.
    assert_eq!(
        m.instance("1.1.1.1")
            .unwrap()
            .unwrap()
            .patient_name
            .as_deref(),
        Some("DOE^P1")
    );
    assert_eq!(
        m.instance("2.1.1.1")
            .unwrap()
            .unwrap()
            .issuer_of_patient_id
            .as_deref(),
        Some("A")
    );
    assert_eq!(m.instance("3.1.1.1").unwrap().unwrap().patient_id, None);
}

#[test]
fn newest_attributes_win_in_any_order() {
    let dir = tempfile::tempdir().unwrap();
    let m = open(&dir, 16, 16);
    let mut newer = row("1.1.1.2", "1.1", "1.1.1", "P1", 10, 0, 2000);
    newer.patient_name = Some("NEW^NAME".into());
    newer.study_description = Some("new".into());
    newer.series_description = Some("new series".into());
    let mut older = row("1.1.1.1", "1.1", "1.1.1", "P1", 5, 0, 0);
    older.patient_name = Some("OLD^NAME".into());
    older.study_description = Some("old".into());
    older.series_description = Some("old series".into());
    // Newer first (as recovery might), then older.
    m.insert_blocking(newer).unwrap();
    m.insert_blocking(older).unwrap();
    m.flush().unwrap();
    let got = m.instance("1.1.1.1").unwrap().unwrap();
    assert_eq!(got.patient_name.as_deref(), Some("NEW^NAME"));
    assert_eq!(got.study_description.as_deref(), Some("new"));
    assert_eq!(got.series_description.as_deref(), Some("new series"));
    // A yet newer record moves the study to another patient; the old
    // patient, now without studies, is removed.
    let moved = row("1.1.1.3", "1.1", "1.1.1", "P2", 11, 0, 4000);
    m.insert_blocking(moved).unwrap();
    // And an older record naming a third patient changes nothing.
    let stale = row("1.1.1.4", "1.1", "1.1.1", "P3", 7, 0, 6000);
    m.insert_blocking(stale).unwrap();
    m.flush().unwrap();
    assert_eq!(
        m.instance("1.1.1.1")
            .unwrap()
            .unwrap()
            .patient_id
            .as_deref(),
        Some("P2")
    );
    assert_eq!(
        m.instance("1.1.1.4")
            .unwrap()
            .unwrap()
            .patient_id
            .as_deref(),
        Some("P2")
    );
    assert_eq!(
        m.counts().unwrap(),
        ManifestCounts {
            patients: 1,
            studies: 1,
            series: 1,
            instances: 4,
            replaced: 0
        }
    );
}

#[test]
fn batch_memo_keeps_newest_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let m = open(&dir, 16, 16);
    // One batch: the second row matches the first in every attribute, so it
    // only raises the sequence the attributes are known at (5 -> 9).
    let mut first = row("4.1.1.1", "4.1", "4.1.1", "P4", 5, 0, 0);
    first.series_description = Some("kept".into());
    let mut second = row("4.1.1.2", "4.1", "4.1.1", "P4", 9, 0, 2000);
    second.series_description = Some("kept".into());
    m.insert_blocking(first).unwrap();
    m.insert_blocking(second).unwrap();
    m.flush().unwrap();
    // A later batch with an older record (7) must not change them.
    let mut stale = row("4.1.1.3", "4.1", "4.1.1", "P4", 7, 0, 4000);
    stale.series_description = Some("stale".into());
    m.insert_blocking(stale).unwrap();
    m.flush().unwrap();
    let got = m.instance("4.1.1.3").unwrap().unwrap();
    assert_eq!(got.series_description.as_deref(), Some("kept"));
}

#[test]
fn memo_across_batches_and_deletion() {
    let dir = tempfile::tempdir().unwrap();
    let m = open(&dir, 16, 16);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut first = row("5.1.1.1", "5.1", "5.1.1", "P5", 1, 0, 0);
    first.study_description = Some("first".into());
    m.insert_blocking(first).unwrap();
    m.flush().unwrap();

    // The next batch changes the study's attributes: the memo of the batch
    // before must not hide the change.
    let mut second = row("5.1.1.2", "5.1", "5.1.1", "P5", 2, 0, 2000);
    second.study_description = Some("second".into());
    m.insert_blocking(second).unwrap();
    m.flush().unwrap();
    let got = m.instance("5.1.1.1").unwrap().unwrap();
    assert_eq!(got.study_description.as_deref(), Some("second"));

    // Deleting the study removes its series and patient. The same series
    // arriving again gets new rows, not the ids the memo held.
    let scope = DeleteScope {
        study_instance_uid: "5.1".into(),
        series_instance_uid: None,
        sop_instance_uid: None,
    };
    assert_eq!(rt.block_on(m.delete(scope)).unwrap(), 2);
    let third = row("5.1.1.3", "5.1", "5.1.1", "P5", 3, 0, 4000);
    m.insert_blocking(third).unwrap();
    m.flush().unwrap();

    let got = m.instance("5.1.1.3").unwrap().unwrap();
    assert_eq!(got.series_instance_uid, "5.1.1");
    assert_eq!(got.study_description, None);
    assert_eq!(
        m.counts().unwrap(),
        ManifestCounts { patients: 1, studies: 1, series: 1, instances: 1, replaced: 0 }
    );
}

#[test]
fn duplicate_newest_wins() {
    let dir = tempfile::tempdir().unwrap();
    let m = open(&dir, 16, 16);
    let first = row("1.1.1.1", "1.1", "1.1.1", "P1", 1, 0, 0);
    m.insert_blocking(first.clone()).unwrap();
    m.flush().unwrap();
    // The same UID again, newer, in another study / series / patient.
    let second = row("1.1.1.1", "2.1", "2.1.1", "P2", 2, 1, 0);
    m.insert_blocking(second.clone()).unwrap();
    m.flush().unwrap();
    assert_eq!(m.instance("1.1.1.1").unwrap(), Some(second.clone()));
    // The old series, study and patient had no other child: gone.
    assert_eq!(
        m.counts().unwrap(),
        ManifestCounts {
            patients: 1,
            studies: 1,
            series: 1,
            instances: 1,
            replaced: 1
        }
    );
    let replaced = m.replaced_instances("1.1.1.1").unwrap();
    assert_eq!(replaced.len(), 1);
    assert_eq!(replaced[0].location, first.location);
    assert_eq!(replaced[0].sequence, 1);
    assert_eq!(replaced[0].replaced_by_sequence, 2);
    assert!(replaced[0].replaced_at_ms > 0);
    assert_eq!(
        m.instance_locations().unwrap(),
        vec![("1.1.1.1".to_string(), second.location, 2)]
    );
}

#[test]
fn duplicate_in_one_batch_and_same_series() {
    let dir = tempfile::tempdir().unwrap();
    let m = open(&dir, 16, 16);
    let a = row("1.1.1.1", "1.1", "1.1.1", "P1", 1, 0, 0);
    let b = row("1.1.1.1", "1.1", "1.1.1", "P1", 2, 0, 2000);
    m.insert_blocking(a).unwrap();
    m.insert_blocking(b.clone()).unwrap();
    m.flush().unwrap();
    assert_eq!(m.instance("1.1.1.1").unwrap(), Some(b));
    assert_eq!(
        m.counts().unwrap(),
        ManifestCounts {
            patients: 1,
            studies: 1,
            series: 1,
            instances: 1,
            replaced: 1
        }
    );
}

#[test]
fn duplicate_older_is_recorded_as_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let m = open(&dir, 16, 16);
    let newer = row("1.1.1.1", "1.1", "1.1.1", "P1", 5, 0, 10_000);
    let older = row("1.1.1.1", "9.1", "9.1.1", "P9", 3, 0, 0);
    m.insert_blocking(newer.clone()).unwrap();
    m.flush().unwrap();
    m.insert_blocking(older.clone()).unwrap();
    // Re-entering the older copy again is a no-op.
    m.insert_blocking(older.clone()).unwrap();
    m.flush().unwrap();
    assert_eq!(m.instance("1.1.1.1").unwrap(), Some(newer));
    // The older copy's study / series / patient were not created.
    assert_eq!(
        m.counts().unwrap(),
        ManifestCounts {
            patients: 1,
            studies: 1,
            series: 1,
            instances: 1,
            replaced: 1
        }
    );
    let replaced = m.replaced_instances("1.1.1.1").unwrap();
    assert_eq!(replaced.len(), 1);
    assert_eq!(replaced[0].location, older.location);
    assert_eq!(replaced[0].sequence, 3);
    assert_eq!(replaced[0].replaced_by_sequence, 5);
}

#[test]
fn same_sequence_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let m = open(&dir, 16, 16);
    let rows: Vec<_> = (0..20u64)
        .map(|i| {
            row(
                &format!("1.1.1.{i}"),
                "1.1",
                "1.1.1",
                "P1",
                i + 1,
                0,
                i * 2000,
            )
        })
        .collect();
    for r in &rows {
        m.insert_blocking(r.clone()).unwrap();
    }
    m.flush().unwrap();
    let before = m.counts().unwrap();
    let ends = m.indexed_ends().unwrap();
    // Recovery re-enters all of them (twice over).
    for r in rows.iter().chain(rows.iter()) {
        m.insert_blocking(r.clone()).unwrap();
    }
    m.flush().unwrap();
    assert_eq!(m.counts().unwrap(), before);
    assert_eq!(before.replaced, 0);
    assert_eq!(m.indexed_ends().unwrap(), ends);
    for r in &rows {
        assert_eq!(m.instance(&r.sop_instance_uid).unwrap().as_ref(), Some(r));
    }
}

#[test]
fn indexed_ends_follow_record_ends() {
    let dir = tempfile::tempdir().unwrap();
    let m = open(&dir, 16, 3);
    assert!(m.indexed_ends().unwrap().is_empty());
    let mut seq = 0;
    let mut expected = HashMap::new();
    for segment in 1..=3u64 {
        let mut offset = 0;
        for i in 0..(segment * 4) {
            seq += 1;
            let mut r = row(
                &format!("{segment}.{i}"),
                "1.1",
                "1.1.1",
                "P1",
                seq,
                segment,
                offset,
            );
            r.record_end = offset + 1000 + 64 + i; // uneven record lengths
            offset = r.record_end;
            m.insert_blocking(r).unwrap();
        }
        expected.insert(segment, offset);
    }
    m.flush().unwrap();
    assert_eq!(m.indexed_ends().unwrap(), expected);
    // A re-entered earlier record never moves indexed_end back.
    let early = row("1.0", "1.1", "1.1.1", "P1", 1, 1, 0);
    m.insert_blocking(early).unwrap();
    m.flush().unwrap();
    assert_eq!(m.indexed_ends().unwrap(), expected);
}

#[test]
fn indexed_end_waits_for_rows_out_of_order() {
    let dir = tempfile::tempdir().unwrap();
    let m = open(&dir, 16, 1);
    let at = |i: u64| row(&format!("9.{i}"), "9", "9.1", "P9", i + 1, 9, 64 + i * 2000);
    m.insert_blocking(at(0)).unwrap();
    m.insert_blocking(at(2)).unwrap();
    m.insert_blocking(at(3)).unwrap();
    m.flush().unwrap();
    assert_eq!(m.indexed_ends().unwrap()[&9], 64 + 2000, "row 1 is missing");
    m.insert_blocking(at(1)).unwrap();
    m.flush().unwrap();
    assert_eq!(m.indexed_ends().unwrap()[&9], 64 + 4 * 2000);
}

#[test]
fn reentry_keeps_deleted_instance_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let m = open(&dir, 16, 1);
    let at = |i: u64| row(&format!("9.{i}"), "9", "9.1", "P9", i + 1, 9, 64 + i * 2000);
    // Row 0 never arrives, so indexed_end stays at the segment's start.
    m.insert_blocking(at(1)).unwrap();
    m.insert_blocking(at(2)).unwrap();
    m.flush().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let scope = DeleteScope {
        study_instance_uid: "9".into(),
        series_instance_uid: Some("9.1".into()),
        sop_instance_uid: Some("9.2".into()),
    };
    assert_eq!(rt.block_on(m.delete(scope)).unwrap(), 1);
    // Recovery enters every record from indexed_end on again.
    for i in 0..3 {
        m.insert_blocking(at(i)).unwrap();
    }
    m.flush().unwrap();
    assert_eq!(m.instance("9.2").unwrap(), None);
    assert!(m.instance("9.0").unwrap().is_some());
    assert_eq!(m.indexed_ends().unwrap()[&9], 64 + 3 * 2000);
}

#[test]
fn reopen_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let full = full_row();
    {
        let m = open(&dir, 16, 16);
        m.insert_blocking(full.clone()).unwrap();
        for i in 0..100u64 {
            m.insert_blocking(row(
                &format!("2.{i}"),
                "2",
                "2.1",
                "P2",
                1000 + i,
                3,
                i * 2000,
            ))
            .unwrap();
        }
        m.close().unwrap();
        // Closed: inserts refused, reads still work, close and flush are fine.
        assert!(matches!(
            m.try_insert(row("x", "x", "x", "x", 1, 0, 0)),
            Err(ManifestError::Closed)
        ));
        assert!(matches!(
            m.insert_blocking(row("x", "x", "x", "x", 1, 0, 0)),
            Err(ManifestError::Closed)
        ));
        assert_eq!(m.counts().unwrap().instances, 101);
        m.flush().unwrap();
        m.close().unwrap();
    }
    {
        // Dropping without close also commits what was queued.
        let m = open(&dir, 16, 16);
        assert_eq!(m.counts().unwrap().instances, 101);
        m.insert_blocking(row("3.1", "3", "3.1", "P3", 5000, 4, 0))
            .unwrap();
    }
    let m = open(&dir, 16, 16);
    assert_eq!(
        m.counts().unwrap(),
        ManifestCounts {
            patients: 3,
            studies: 3,
            series: 3,
            instances: 102,
            replaced: 0
        }
    );
    assert_eq!(
        m.instance(&full.sop_instance_uid).unwrap(),
        Some(full.clone())
    );
    let ends = m.indexed_ends().unwrap();
    assert_eq!(ends[&7], full.record_end);
    assert_eq!(ends[&3], 100 * 2000);
    assert_eq!(ends[&4], 2000);
    // The database is in WAL mode with the schema version recorded.
    let conn = m.read_connection().unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let version: String = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(version, schema::SCHEMA_VERSION.to_string());
}

#[test]
fn refuses_unknown_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("manifest.sqlite3");
    open(&dir, 4, 4).close().unwrap();
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute(
            "UPDATE meta SET value = '999' WHERE key = 'schema_version'",
            [],
        )
        .unwrap();
    }
    let err = Manifest::open(&path, ManifestConfig::default()).unwrap_err();
    assert!(
        matches!(err, ManifestError::SchemaVersion { ref found, .. } if found == "999"),
        "{err}"
    );
}

#[test]
fn flush_waits_for_everything_queued_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let m = open(&dir, 1024, 7);
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let m = m.clone();
            s.spawn(move || {
                for i in 0..250u64 {
                    let seq = t * 1000 + i + 1;
                    m.insert_blocking(row(
                        &format!("{t}.{i}"),
                        &format!("{t}"),
                        &format!("{t}.1"),
                        "P",
                        seq,
                        t,
                        i * 2000,
                    ))
                    .unwrap();
                    if i % 50 == 49 {
                        // Everything this thread queued so far is visible.
                        m.flush().unwrap();
                        assert_eq!(
                            m.instance(&format!("{t}.{i}")).unwrap().unwrap().sequence,
                            seq
                        );
                        let ends = m.indexed_ends().unwrap();
                        assert_eq!(ends[&t], (i + 1) * 2000);
                    }
                }
            });
        }
    });
    m.flush().unwrap();
    assert_eq!(m.counts().unwrap().instances, 1000);
    // A flush with nothing queued returns at once.
    m.flush().unwrap();
}

#[test]
fn try_insert_hands_the_row_back_when_full() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("manifest.sqlite3");
    let m = open(&dir, 2, 1);
    // Hold the write lock so the writer stalls in BEGIN and the queue fills.
    let blocker = rusqlite::Connection::open(&path).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let mut queued = 0u64;
    let rejected = loop {
        let r = row(
            &format!("1.{queued}"),
            "1",
            "1.1",
            "P",
            queued + 1,
            0,
            queued * 2000,
        );
        match m.try_insert(r.clone()) {
            Ok(()) => queued += 1,
            Err(ManifestError::QueueFull(back)) => {
                assert_eq!(*back, r);
                break back;
            }
            Err(e) => panic!("{e}"),
        }
        assert!(queued < 100, "queue never filled");
    };
    blocker.execute_batch("COMMIT").unwrap();
    m.insert_blocking(*rejected).unwrap();
    m.flush().unwrap();
    assert_eq!(m.counts().unwrap().instances, queued + 1);
}

#[tokio::test]
async fn async_insert_with_tiny_queue_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("manifest.sqlite3");
    let m = open(&dir, 2, 3);
    // Stall the writer for a moment so the tasks meet a full queue.
    let blocker = rusqlite::Connection::open(&path).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let m = m.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..300u64 {
                let seq = t * 10_000 + i + 1;
                m.insert(row(
                    &format!("{t}.{i}"),
                    &format!("{t}"),
                    &format!("{t}.{}", i % 3),
                    "P",
                    seq,
                    t,
                    i * 2000,
                ))
                .await
                .unwrap();
            }
        }));
    }
    // The tasks are parked on the full queue; this (single) runtime thread
    // is free to run the timer.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(m.queued() >= 1);
    blocker.execute_batch("COMMIT").unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    m.flush_async().await.unwrap();
    assert_eq!(
        m.counts().unwrap(),
        ManifestCounts {
            patients: 1,
            studies: 8,
            series: 24,
            instances: 2400,
            replaced: 0
        }
    );
    let ends = m.indexed_ends().unwrap();
    for t in 0..8u64 {
        assert_eq!(ends[&t], 300 * 2000);
    }
}

#[test]
fn a_failed_row_is_reported_and_freezes_its_segment() {
    let dir = tempfile::tempdir().unwrap();
    let m = open(&dir, 64, 64);
    m.insert_blocking(row("5.0", "5", "5.1", "P", 1, 5, 0))
        .unwrap();
    m.insert_blocking(row("6.0", "6", "6.1", "P", 2, 6, 0))
        .unwrap();
    m.flush().unwrap();
    let before = m.indexed_ends().unwrap();
    // A sequence SQLite cannot store (> i64::MAX) makes the row fail.
    let bad = row("5.1", "5", "5.1", "P", u64::MAX, 5, 2000);
    m.insert_blocking(bad).unwrap();
    m.insert_blocking(row("5.2", "5", "5.1", "P", 4, 5, 4000))
        .unwrap();
    m.insert_blocking(row("6.1", "6", "6.1", "P", 5, 6, 2000))
        .unwrap();
    let err = m.flush().unwrap_err();
    assert!(
        matches!(err, ManifestError::Write(ref text) if text.contains("5.1")),
        "{err}"
    );
    // The good rows are in; segment 5's indexed_end did not move, so
    // recovery will re-enter from before the failed row; segment 6 moved.
    assert_eq!(m.counts().unwrap().instances, 4);
    assert_eq!(m.instance("5.1").unwrap(), None);
    let ends = m.indexed_ends().unwrap();
    assert_eq!(ends[&5], before[&5]);
    assert_eq!(ends[&6], 4000);
    // Reported once; later rows of segment 5 still do not advance it.
    m.insert_blocking(row("5.3", "5", "5.1", "P", 7, 5, 6000))
        .unwrap();
    m.flush().unwrap();
    assert_eq!(m.indexed_ends().unwrap()[&5], before[&5]);
    assert_eq!(m.counts().unwrap().instances, 5);
}
