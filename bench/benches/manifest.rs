//! Manifest insert cost: batches of 512 InstanceRecord rows queued with
//! `insert_blocking`, then `flush` (which returns once the writer thread has
//! committed them). One iteration is one batch of 512 rows; each criterion
//! sample gets a fresh database in a temporary directory. Rows are built
//! before the clock starts. The time reported is the process's CPU time
//! (user and system, all threads), not wall time: the writer keeps a batch
//! open for a linger time while its queue is empty, and wall time would
//! mostly measure that sleep. The second benchmark records events (two
//! outbox rows and the study's change per instance) as `nectar serve` does
//! by default.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::sync::Arc;

use nectar_bench::cpu::process_cpu_time;
use nectar_engine::events::EventsConfig;
use nectar_engine::manifest::{InstanceRecord, Manifest, ManifestConfig};
use nectar_engine::Location;

const BATCH: u64 = 512;
/// Instances per series (one series per study).
const PER_SERIES: u64 = 200;
const RECORD_LEN: u64 = 40_000;

fn row(n: u64) -> InstanceRecord {
    let study = n / PER_SERIES;
    // Records of one segment, back to back as the store writes them.
    let offset = 64 + n * (32 + RECORD_LEN);
    InstanceRecord {
        sop_instance_uid: format!("2.25.1000000000000003{n:022}"),
        sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
        transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
        study_instance_uid: format!("2.25.1000000000000001{study:022}"),
        series_instance_uid: format!("2.25.1000000000000002{study:022}"),
        patient_id: Some(format!("PID{:06}", study % 1000)),
        patient_name: Some(format!("DOE^PATIENT{:06}", study % 1000)),
        patient_birth_date: Some("19700101".into()),
        patient_sex: Some("O".into()),
        study_date: Some("20240102".into()),
        study_time: Some("120000".into()),
        accession_number: Some(format!("ACC{study:08}")),
        study_id: Some("1".into()),
        study_description: Some("Load test study".into()),
        specific_character_set: Some("ISO_IR 100".into()),
        modality: Some("CT".into()),
        series_number: Some(1),
        series_description: Some("Load test series".into()),
        institution_name: Some("General Hospital".into()),
        instance_number: Some((n % PER_SERIES) as i64 + 1),
        rows: Some(512),
        columns: Some(512),
        bits_allocated: Some(16),
        location: Location {
            segment: 1,
            offset,
            length: RECORD_LEN,
        },
        record_end: offset + 32 + RECORD_LEN,
        sequence: n + 1,
        received_at_ms: 1_700_000_000_000 + n as i64,
        calling_ae_title: Some("NECTARLOAD".into()),
        ..Default::default()
    }
}

fn events_config() -> ManifestConfig {
    let events = EventsConfig {
        source: "nectar://bench".into(),
        provider: "nectar".into(),
        internal_base_url: "http://127.0.0.1:8080/dicomweb".into(),
        external_base_url: "http://127.0.0.1:8080/dicomweb".into(),
        quiet_period: Duration::from_secs(3600),
        retention: Duration::from_secs(3600),
    };
    ManifestConfig { events: Some(Arc::new(events)), ..ManifestConfig::default() }
}

fn run(iters: u64, config: ManifestConfig) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let manifest = Manifest::open(&dir.path().join("manifest.sqlite3"), config).unwrap();
    let mut batches: Vec<Vec<InstanceRecord>> = (0..iters)
        .map(|i| (i * BATCH..(i + 1) * BATCH).map(row).collect())
        .collect();
    let started = process_cpu_time();
    for batch in batches.drain(..) {
        for r in batch {
            manifest.insert_blocking(r).unwrap();
        }
        manifest.flush().unwrap();
    }
    let elapsed = process_cpu_time().since(started).total();
    assert_eq!(manifest.counts().unwrap().instances, iters * BATCH);
    manifest.close().unwrap();
    elapsed
}

fn manifest(c: &mut Criterion) {
    let mut g = c.benchmark_group("manifest");
    g.throughput(Throughput::Elements(BATCH));
    g.bench_function("insert_blocking_512_rows_then_flush", |b| {
        b.iter_custom(|iters| run(iters, ManifestConfig::default()))
    });
    g.bench_function("insert_blocking_512_rows_then_flush_with_events", |b| {
        b.iter_custom(|iters| run(iters, events_config()))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = manifest
}
criterion_main!(benches);
