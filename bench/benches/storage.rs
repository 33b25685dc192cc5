//! The segment store's write path: append a 40 KB record, finish it, commit
//! it (wait for its msync), from one task and from eight concurrent tasks on
//! one current-thread runtime, where the group committer flushes the records
//! of several tasks with one msync. The same with 4 KB records, where msync
//! latency rather than write-back bandwidth is the limit. After each case
//! the committer's counters are printed: commits per batch and per msync
//! (one msync per segment per batch, and every writer owns its own segment).
//!
//! Each criterion sample gets a fresh store in a temporary directory, so the
//! disk use stays bounded; segment creation happens before the clock starts.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use nectar_engine::storage::{SegmentWriter, Store, StoreConfig};

/// Record sizes: 40 KB (a CT slice); 4 KB shows group commit where msync
/// latency rather than write-back bandwidth is the limit.
const RECORDS: [usize; 2] = [40_000, 4_000];

fn config() -> StoreConfig {
    StoreConfig {
        segment_size: 64 << 20,
        ..StoreConfig::default()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn put(store: &Store, writer: &mut SegmentWriter, payload: &[u8]) {
    let seq = store.next_sequence();
    writer.begin_record().unwrap();
    writer.append(payload).unwrap();
    let pending = writer.finish_record(seq).unwrap();
    store.commit(pending).await.unwrap();
}

/// Committer counters over a timed run.
#[derive(Default)]
struct Counts {
    requests: u64,
    batches: u64,
    flushes: u64,
}

/// Commits `iters` records from `tasks` concurrent tasks; returns the time
/// taken and the committer's counters for the run.
fn run(tasks: u64, iters: u64, payload: &'static [u8]) -> (Duration, Counts) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), config()).unwrap();
    let rt = runtime();
    let elapsed = rt.block_on(async {
        // One warm-up record per writer: creates its segment off the clock.
        let mut writers = Vec::new();
        for _ in 0..tasks {
            let mut w = store.new_writer();
            put(&store, &mut w, payload).await;
            writers.push(w);
        }
        let before = store.commit_stats();
        let started = Instant::now();
        let handles: Vec<_> = writers
            .into_iter()
            .enumerate()
            .map(|(i, mut w)| {
                let store = store.clone();
                // Spread `iters` over the tasks.
                let n = iters / tasks + u64::from((i as u64) < iters % tasks);
                tokio::spawn(async move {
                    for _ in 0..n {
                        put(&store, &mut w, payload).await;
                    }
                })
            })
            .collect();
        for h in handles {
            h.await.unwrap();
        }
        let elapsed = started.elapsed();
        let after = store.commit_stats();
        (
            elapsed,
            Counts {
                requests: after.requests - before.requests,
                batches: after.batches - before.batches,
                flushes: after.flushes - before.flushes,
            },
        )
    });
    store.close().unwrap();
    elapsed
}

fn storage(c: &mut Criterion) {
    let mut g = c.benchmark_group("storage");
    g.throughput(Throughput::Elements(1));
    for (record, tasks) in RECORDS.iter().flat_map(|&r| [(r, 1u64), (r, 8)]) {
        let payload: &'static [u8] = Box::leak(
            (0..record)
                .map(|i| ((i * 13) >> 2) as u8)
                .collect::<Vec<u8>>()
                .into_boxed_slice(),
        );
        let name = format!("append_{}KB_finish_commit/{tasks}_tasks", record / 1000);
        let mut total = Counts::default();
        g.bench_function(&name, |b| {
            b.iter_custom(|iters| {
                let (elapsed, c) = run(tasks, iters, payload);
                total.requests += c.requests;
                total.batches += c.batches;
                total.flushes += c.flushes;
                elapsed
            })
        });
        if total.batches > 0 {
            eprintln!(
                "storage/{name}: {} commits in {} batches ({:.2} per batch), {} msyncs ({:.2} commits per msync)",
                total.requests,
                total.batches,
                total.requests as f64 / total.batches as f64,
                total.flushes,
                total.requests as f64 / total.flushes.max(1) as f64
            );
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = storage
}
criterion_main!(benches);
