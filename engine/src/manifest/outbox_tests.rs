//! The outbox and study revisions through the manifest's public interface.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::events::{event_type, EventsConfig};
use crate::Location;

fn open_with_events(dir: &tempfile::TempDir) -> Manifest {
    let config = EventsConfig {
        source: "urn:nectar:test".into(),
        provider: "nectar".into(),
        internal_base_url: "http://internal/dicomweb".into(),
        external_base_url: "https://external/dicomweb".into(),
        quiet_period: Duration::from_secs(30),
        retention: Duration::from_secs(3600),
    };
    let manifest_config = ManifestConfig { events: Some(Arc::new(config)), ..ManifestConfig::default() };
    Manifest::open(&dir.path().join("manifest.sqlite3"), manifest_config).expect("open manifest")
}

fn row(uid: &str, study: &str, series: &str, sequence: u64) -> InstanceRecord {
    InstanceRecord {
        sop_instance_uid: uid.into(),
        sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
        transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
        study_instance_uid: study.into(),
        series_instance_uid: series.into(),
        patient_id: Some("P1".into()),
        patient_name: Some("DOE^JANE".into()),
        location: Location { segment: 1, offset: 64 + 2048 * sequence, length: 1000 },
        record_end: 64 + 2048 * (sequence + 1),
        sequence,
        ..Default::default()
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn outbox_instance_events_and_revision() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = open_with_events(&dir);
    manifest.insert_blocking(row("1.1", "9", "9.1", 1)).unwrap();
    manifest.insert_blocking(row("1.2", "9", "9.1", 2)).unwrap();
    // The same record again (recovery re-entering it) records nothing new.
    manifest.insert_blocking(row("1.2", "9", "9.1", 2)).unwrap();
    manifest.flush().unwrap();

    let events = manifest.events_after(0, 100).unwrap();
    let kinds: Vec<&str> = events.iter().map(|(e, _)| e.event_type.as_str()).collect();
    assert_eq!(kinds, [event_type::IMAGE_STORED, event_type::DICOM_AVAILABLE, event_type::IMAGE_STORED, event_type::DICOM_AVAILABLE]);
    assert_eq!(events[0].1, Some(row("1.1", "9", "9.1", 1).location), "stored events carry their record");
    assert!(events[0].0.body.contains("https://external/dicomweb/studies/9/series/9.1/instances/1.1"));

    let waiting = manifest.waiting_studies().unwrap();
    let [(study, last_change)] = &waiting[..] else { panic!("one study waits") };
    let last_change = *last_change;
    assert_eq!(study, "9");
    // A stale wait (an older change) writes nothing.
    assert_eq!(rt().block_on(manifest.emit_revision("9", last_change - 1)).unwrap(), None);
    assert_eq!(rt().block_on(manifest.emit_revision("9", last_change)).unwrap(), Some(1));
    assert_eq!(rt().block_on(manifest.emit_revision("9", last_change)).unwrap(), None, "emitted once");
    assert!(manifest.waiting_studies().unwrap().is_empty());

    let events = manifest.events_after(4, 100).unwrap();
    assert_eq!(events.len(), 1);
    let revision: serde_json::Value = serde_json::from_str(&events[0].0.body).unwrap();
    assert_eq!(revision["type"], "StudyRevisionEvent");
    assert_eq!(revision["data"]["revision"], 1);
    assert_eq!(revision["data"]["changeSet"]["additions"], serde_json::json!(["9.1/1.1", "9.1/1.2"]));
    assert_eq!(revision["data"]["study"]["series"][0]["instances"], serde_json::json!(["1.1", "1.2"]));
}

#[test]
fn outbox_replacement_and_deletion() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = open_with_events(&dir);
    manifest.insert_blocking(row("1.1", "9", "9.1", 1)).unwrap();
    manifest.insert_blocking(row("1.2", "9", "9.1", 2)).unwrap();
    manifest.flush().unwrap();
    let (_, at) = manifest.waiting_studies().unwrap()[0].clone();
    rt().block_on(manifest.emit_revision("9", at)).unwrap();

    manifest.insert_blocking(row("1.1", "9", "9.1", 3)).unwrap(); // newer copy
    manifest.flush().unwrap();
    let scope = DeleteScope { study_instance_uid: "9".into(), series_instance_uid: None, sop_instance_uid: Some("1.2".into()) };
    assert_eq!(rt().block_on(manifest.delete(scope)).unwrap(), 1);
    let (_, at) = manifest.waiting_studies().unwrap()[0].clone();
    assert_eq!(rt().block_on(manifest.emit_revision("9", at)).unwrap(), Some(2));

    let events = manifest.events_after(0, 100).unwrap();
    let last: serde_json::Value = serde_json::from_str(&events.last().unwrap().0.body).unwrap();
    assert_eq!(last["data"]["changeSet"]["modifications"], serde_json::json!(["9.1/1.1"]));
    assert_eq!(last["data"]["changeSet"]["deletions"], serde_json::json!(["9.1/1.2"]));
    assert_eq!(last["data"]["changeSet"]["additions"], serde_json::json!([]));
    assert_eq!(manifest.deleted_locations().unwrap(), [row("1.2", "9", "9.1", 2).location]);
}

#[test]
fn outbox_cursor_moves_forward() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = open_with_events(&dir);
    assert_eq!(manifest.event_cursor("nats").unwrap(), 0);
    manifest.advance_event_cursor("nats", 7).unwrap();
    manifest.advance_event_cursor("nats", 3).unwrap();
    assert_eq!(manifest.event_cursor("nats").unwrap(), 7);
}

#[test]
fn upgrade_rebuilds_study_changes_check() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("manifest.sqlite3");
    open_with_events(&dir).close().unwrap();

    let table_sql = |conn: &rusqlite::Connection| -> String {
        conn.query_row(
            "SELECT sql FROM sqlite_master WHERE name = 'study_changes'",
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    {
        // The table as older manifests define it, with one pending change.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "DROP TABLE study_changes;
             CREATE TABLE study_changes (
                 study_instance_uid TEXT NOT NULL,
                 entry              TEXT NOT NULL,
                 kind               TEXT NOT NULL CHECK (kind IN ('addition', 'modification', 'deletion')),
                 PRIMARY KEY (study_instance_uid, entry)
             ) WITHOUT ROWID;
             INSERT INTO study_changes VALUES ('9', '9.1/1.1', 'addition');",
        )
        .unwrap();
        assert!(table_sql(&conn).contains("kind IN ("));
    }

    open_with_events(&dir).close().unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    assert!(
        !table_sql(&conn).contains("kind IN ("),
        "{}",
        table_sql(&conn)
    );

    let rows: Vec<(String, String, String)> = conn
        .prepare("SELECT study_instance_uid, entry, kind FROM study_changes")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        rows,
        [(
            "9".to_string(),
            "9.1/1.1".to_string(),
            "addition".to_string()
        )]
    );

    let rejected = conn.execute(
        "INSERT INTO study_changes VALUES ('9', '9.1/1.2', 'moved')",
        [],
    );
    assert!(rejected.is_err(), "the check still refuses an unknown kind");
}
