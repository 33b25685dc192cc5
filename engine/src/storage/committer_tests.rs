//! Tests of where a commit runs: inline on the committing thread, or on the committer thread.

use std::time::Duration;

use super::tests::{payload, put, reopen, rt, small};
use super::*;

#[test]
fn lone_writer_commits_inline() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small(1 << 20)).unwrap();
    let mut w = store.new_writer();
    // One staged record, and one over the staging limit in the writer's own segment.
    let written = rt().block_on(async { vec![put(&store, &mut w, 500).await, put(&store, &mut w, 300_000).await] });
    let stats = store.commit_stats();
    assert_eq!(stats.inline, 2, "{stats:?}");
    assert_eq!(stats.requests, 2, "{stats:?}");
    assert_eq!(stats.batches, 2, "{stats:?}");
    assert_eq!(stats.flushes, 2, "{stats:?}");
    drop(w);
    store.close().unwrap();
    drop(store);
    let store = reopen(dir.path(), small(1 << 20));
    for (loc, seq) in &written {
        assert_eq!(store.read(*loc).unwrap().bytes(), &payload(*seq, loc.length as usize)[..]);
    }
    assert!(store.check().unwrap().is_clean());
}

#[test]
fn two_writers_use_committer_thread() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small(1 << 20)).unwrap();
    let mut a = store.new_writer();
    let b = store.new_writer();
    let (loc, seq) = rt().block_on(put(&store, &mut a, 500));
    assert_eq!(store.read(loc).unwrap().bytes(), &payload(seq, 500)[..]);
    let stats = store.commit_stats();
    assert_eq!(stats.inline, 0, "{stats:?}");
    assert_eq!(stats.requests, 1, "{stats:?}");
    // Once the other writer is gone, the next commit runs inline.
    drop(b);
    rt().block_on(put(&store, &mut a, 500));
    let stats = store.commit_stats();
    assert_eq!(stats.inline, 1, "{stats:?}");
    assert_eq!(stats.requests, 2, "{stats:?}");
}

#[test]
#[allow(clippy::await_holding_lock)] // the batch state is held on purpose while the commit waits
fn lone_commit_queues_during_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small(1 << 20)).unwrap();
    let mut w = store.new_writer();
    let seq = store.next_sequence();
    w.begin_record().unwrap();
    w.append(&payload(seq, 700)).unwrap();
    let pending = w.finish_record(seq).unwrap();
    let loc = rt().block_on(async {
        let running = store.inner.shared.batch_state.lock().unwrap();
        let mut commit = Box::pin(store.commit(pending));
        assert!(tokio::time::timeout(Duration::from_millis(50), &mut commit).await.is_err(), "resolved during a batch");
        drop(running);
        commit.await.unwrap()
    });
    assert_eq!(store.read(loc).unwrap().bytes(), &payload(seq, 700)[..]);
    let stats = store.commit_stats();
    assert_eq!(stats.inline, 0, "{stats:?}");
    assert_eq!(stats.requests, 1, "{stats:?}");
    assert_eq!(stats.batches, 1, "{stats:?}");
}
