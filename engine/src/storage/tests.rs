//! Tests of the segment store (tempfile directories; `cargo test -p nectar-engine storage`).

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::format::{self, RecordHeader};
use super::*;

pub(crate) fn payload(seq: u64, len: usize) -> Vec<u8> {
    let mut x = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub(crate) fn small(segment_size: u64) -> StoreConfig {
    StoreConfig { segment_size, commit_queue: 64, max_commit_batch: 64 }
}

/// Opens the store again. Another test of this process that forks a child
/// (the tmpfs test runs mount) lends it our lock file's descriptor until the
/// child execs, so the lock may look taken for a moment.
pub(crate) fn reopen(dir: &std::path::Path, config: StoreConfig) -> Store {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match Store::open(dir, config.clone()) {
            Err(StoreError::Locked(_)) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            other => return other.unwrap(),
        }
    }
}

pub(crate) fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Writes and commits one record; returns its location and sequence.
pub(crate) async fn put(store: &Store, w: &mut SegmentWriter, len: usize) -> (Location, u64) {
    let seq = store.next_sequence();
    w.begin_record().unwrap();
    w.append(&payload(seq, len)).unwrap();
    let p = w.finish_record(seq).unwrap();
    let loc = store.commit(p).await.unwrap();
    (loc, seq)
}

/// Writes one record and commits it on a runtime of its own; returns its sequence and
/// the commit's outcome.
fn try_put(store: &Store, w: &mut SegmentWriter, len: usize) -> (u64, Result<Location, StoreError>) {
    let seq = store.next_sequence();
    w.begin_record().unwrap();
    w.append(&payload(seq, len)).unwrap();
    let pending = w.finish_record(seq).unwrap();
    (seq, rt().block_on(store.commit(pending)))
}

fn seg_path(store: &Store, id: u64) -> std::path::PathBuf {
    store.segments_dir().join(segment::segment_file_name(id))
}

fn patch(path: &std::path::Path, offset: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
    f.sync_all().unwrap();
}

fn read_at(path: &std::path::Path, offset: u64, len: usize) -> Vec<u8> {
    let f = std::fs::File::open(path).unwrap();
    let mut b = vec![0u8; len];
    f.read_exact_at(&mut b, offset).unwrap();
    b
}

#[test]
fn round_trip_many_records_several_writers_and_roll() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small(16 << 10)).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                rt().block_on(async {
                    let mut w = store.new_writer();
                    let mut out = Vec::new();
                    for i in 0..60usize {
                        let len = (i * 137 + t * 31) % 3000;
                        out.push(put(&store, &mut w, len).await);
                    }
                    out
                })
            })
        })
        .collect();
    let written: Vec<(Location, u64)> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    assert_eq!(written.len(), 240);

    let mut segs: Vec<u64> = written.iter().map(|(l, _)| l.segment).collect();
    segs.sort();
    segs.dedup();
    assert!(segs.len() > 4, "expected rolls to new segments, got {segs:?}");
    let mut seqs: Vec<u64> = written.iter().map(|(_, s)| *s).collect();
    seqs.sort();
    seqs.dedup();
    assert_eq!(seqs.len(), 240, "sequence numbers are unique");

    for (loc, seq) in &written {
        let r = store.read(*loc).unwrap();
        assert_eq!(r.bytes(), &payload(*seq, loc.length as usize)[..], "{loc:?}");
        assert_eq!(loc.offset % 8, 0);
    }
    // Records within a segment never overlap (each segment had one writer at a time).
    let mut by_seg: HashMap<u64, Vec<Location>> = HashMap::new();
    for (l, _) in &written {
        by_seg.entry(l.segment).or_default().push(*l);
    }
    for locs in by_seg.values_mut() {
        locs.sort_by_key(|l| l.offset);
        for w in locs.windows(2) {
            assert!(record_end(&w[0]) <= w[1].offset);
        }
    }
    let report = store.check().unwrap();
    assert_eq!(report.records, 240);
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.torn_tail_bytes, 0);
    let stats = store.commit_stats();
    assert_eq!(stats.requests, 240);
    store.close().unwrap();
}

#[test]
fn record_bigger_than_segment() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small(4096)).unwrap();
    rt().block_on(async {
        let mut w = store.new_writer();
        let (small_loc, s1) = put(&store, &mut w, 100).await;
        // One append of the whole payload: a segment of its own size.
        let (big, s2) = put(&store, &mut w, 20_000).await;
        assert_ne!(big.segment, small_loc.segment);
        let len = std::fs::metadata(seg_path(&store, big.segment)).unwrap().len();
        // A staged record: a shared segment with room for it past the header padding.
        let room = format::align_shared(SEGMENT_HEADER_LEN) + format::align_shared(format::record_span(20_000));
        assert_eq!(len, room.div_ceil(4096) * 4096);
        assert_eq!(store.read(big).unwrap().bytes(), &payload(s2, 20_000)[..]);
        assert_eq!(store.read(small_loc).unwrap().bytes(), &payload(s1, 100)[..]);

        // Streamed through spare/advance in chunks: rolls (copying) as it grows.
        let seq = store.next_sequence();
        let data = payload(seq, 100_000);
        w.begin_record().unwrap();
        for chunk in data.chunks(1500) {
            let buf = w.spare(chunk.len()).unwrap();
            assert!(buf.len() >= chunk.len());
            buf[..chunk.len()].copy_from_slice(chunk);
            w.advance(chunk.len()).unwrap();
        }
        assert_eq!(w.record_bytes().unwrap(), &data[..]);
        let p = w.finish_record(seq).unwrap();
        let loc = store.commit(p).await.unwrap();
        assert_eq!(store.read(loc).unwrap().bytes(), &data[..]);
        // A small record after it still works.
        let (after, s3) = put(&store, &mut w, 10).await;
        assert_eq!(store.read(after).unwrap().bytes(), &payload(s3, 10)[..]);
    });
    let report = store.check().unwrap();
    assert_eq!(report.records, 4);
    assert!(report.is_clean(), "{report:?}");
}

#[test]
fn read_after_reopen_seals_and_continues_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let mut written = Vec::new();
    {
        let store = Store::open(dir.path(), small(8192)).unwrap();
        rt().block_on(async {
            let mut w = store.new_writer();
            for i in 0..20 {
                written.push(put(&store, &mut w, i * 97).await);
            }
        });
        store.close().unwrap();
    }
    let max_seq = written.iter().map(|w| w.1).max().unwrap();
    let max_seg = written.iter().map(|w| w.0.segment).max().unwrap();
    let store = Store::open(dir.path(), small(8192)).unwrap();
    for (loc, seq) in &written {
        assert_eq!(store.read(*loc).unwrap().bytes(), &payload(*seq, loc.length as usize)[..]);
    }
    assert!(store.next_sequence() > max_seq);
    rt().block_on(async {
        let mut w = store.new_writer();
        let (loc, _) = put(&store, &mut w, 10).await;
        assert!(loc.segment > max_seg, "new writers create new segments after a restart");
    });
    // Out-of-range reads are refused.
    let (loc, _) = written[3];
    assert!(matches!(store.read(Location { length: 1 << 40, ..loc }), Err(StoreError::NotFound(_))));
    assert!(matches!(store.read(Location { segment: 999, ..loc }), Err(StoreError::NotFound(_))));
    assert!(matches!(store.read(Location { length: loc.length + 1, ..loc }), Err(StoreError::Corrupt { .. })));
    assert!(matches!(store.read(Location { offset: loc.offset + 8, ..loc }), Err(StoreError::Corrupt { .. })));
}

#[test]
fn scan_from_mid_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut written = Vec::new();
    {
        let store = Store::open(dir.path(), small(1 << 20)).unwrap();
        rt().block_on(async {
            let mut w = store.new_writer();
            for i in 0..10 {
                written.push(put(&store, &mut w, 50 + i * 10).await);
            }
            // A second segment: a record too large to stage goes to the writer's own.
            let mut w2 = store.new_writer();
            written.push(put(&store, &mut w2, STAGE_LIMIT as usize + 7).await);
        });
    }
    let store = Store::open(dir.path(), small(1 << 20)).unwrap();
    let all = store.scan_from(&HashMap::new()).unwrap();
    assert_eq!(all.len(), 11);
    for (s, (loc, seq)) in all.iter().zip(&written) {
        assert_eq!(s.location, *loc);
        assert_eq!(s.sequence, *seq);
        assert_eq!(s.record.bytes(), &payload(*seq, loc.length as usize)[..]);
    }
    let first = written[0].0.segment;
    let second = written[10].0.segment;
    let mut from = HashMap::new();
    from.insert(first, record_end(&written[4].0));
    from.insert(second, record_end(&written[10].0));
    let tail = store.scan_from(&from).unwrap();
    let got: Vec<Location> = tail.iter().map(|s| s.location).collect();
    let want: Vec<Location> = written[5..10].iter().map(|w| w.0).collect();
    assert_eq!(got, want);

    from.insert(first, 101);
    assert!(matches!(store.scan_from(&from), Err(StoreError::InvalidOffset { .. })));
}

#[test]
fn torn_records_are_dropped_and_earlier_ones_survive() {
    let dir = tempfile::tempdir().unwrap();
    let mut written = Vec::new();
    let (seg, path);
    {
        let store = Store::open(dir.path(), small(1 << 20)).unwrap();
        rt().block_on(async {
            let mut w = store.new_writer();
            for i in 0..6 {
                written.push(put(&store, &mut w, 1000 + i).await);
            }
        });
        seg = written[0].0.segment;
        path = seg_path(&store, seg);
    }
    // Case 1: the last record's payload only partly reached the disk.
    let last = written[5].0;
    patch(&path, last.offset + RECORD_HEADER_LEN + 500, &vec![0u8; 300]);
    // Case 3: after it, a header whose payload never arrived.
    let tail = record_end(&last);
    patch(&path, tail, &RecordHeader::encode(64, 999, crc32c::crc32c(&payload(999, 64))));
    {
        let store = Store::open(dir.path(), small(1 << 20)).unwrap();
        let scanned = store.scan_from(&HashMap::new()).unwrap();
        let got: Vec<Location> = scanned.iter().map(|s| s.location).collect();
        let want: Vec<Location> = written[..5].iter().map(|w| w.0).collect();
        assert_eq!(got, want, "the torn record and what follows are dropped");
        let report = store.check().unwrap();
        assert_eq!(report.records, 5);
        assert!(report.is_clean(), "a torn tail is not corruption: {report:?}");
        assert!(report.torn_tail_bytes > 1000, "{report:?}");
        // The sequence counter is above the torn header's sequence too.
        assert!(store.next_sequence() > 999);
    }

    // Case 2: payload bytes without a header (crash before finish_record).
    let dir = tempfile::tempdir().unwrap();
    let (path, loc) = {
        let store = Store::open(dir.path(), small(1 << 20)).unwrap();
        let loc = rt().block_on(async {
            let mut w = store.new_writer();
            put(&store, &mut w, 300).await.0
        });
        (seg_path(&store, loc.segment), loc)
    };
    patch(&path, record_end(&loc) + RECORD_HEADER_LEN, &payload(5, 200));
    let store = Store::open(dir.path(), small(1 << 20)).unwrap();
    assert_eq!(store.scan_from(&HashMap::new()).unwrap().len(), 1);
    let report = store.check().unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.records, 1);
    assert!(report.torn_tail_bytes > 0 && report.torn_tail_bytes <= 232, "{report:?}");
}

#[test]
fn bit_flips_are_reported_by_check() {
    let dir = tempfile::tempdir().unwrap();
    let mut written = Vec::new();
    let path;
    {
        let store = Store::open(dir.path(), small(1 << 20)).unwrap();
        rt().block_on(async {
            let mut w = store.new_writer();
            for _ in 0..6 {
                written.push(put(&store, &mut w, 400).await);
            }
        });
        assert!(store.check().unwrap().is_clean());
        path = seg_path(&store, written[0].0.segment);
    }
    let flip = |offset: u64| {
        let mut b = read_at(&path, offset, 1);
        b[0] ^= 0x10;
        patch(&path, offset, &b);
    };
    // Payload bit flip in record 1, header bit flip (the length field) in record 3.
    flip(written[1].0.offset + RECORD_HEADER_LEN + 123);
    flip(written[3].0.offset + 9);
    let store = Store::open(dir.path(), small(1 << 20)).unwrap();
    let report = store.check().unwrap();
    assert_eq!(report.records, 4, "{report:?}");
    let places: Vec<(u64, u64)> = report.corrupt.iter().map(|c| (c.0, c.1)).collect();
    assert_eq!(places, vec![(written[1].0.segment, written[1].0.offset), (written[3].0.segment, written[3].0.offset)]);
    assert!(report.corrupt[0].2.contains("checksum"), "{report:?}");
    assert_eq!(report.torn_tail_bytes, 0);
    assert!(!report.is_clean());
    // Reads do not verify the payload CRC; the record with a bad header is refused.
    assert!(store.read(written[1].0).is_ok());
    assert!(matches!(store.read(written[3].0), Err(StoreError::Corrupt { .. })));
    // A flipped bit in the segment header is reported at offset 0.
    drop(store);
    flip(20);
    let store = Store::open(dir.path(), small(1 << 20)).unwrap();
    let report = store.check().unwrap();
    assert!(report.corrupt.iter().any(|c| c.1 == 0), "{report:?}");
    assert_eq!(report.records, 4);
}

#[test]
#[allow(clippy::await_holding_lock)] // the gate is held on purpose while tasks queue up
fn commits_from_many_tasks_are_batched() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small(1 << 20)).unwrap();
    rt().block_on(async {
        // Hold the committer after it takes the first request so the others queue up.
        let gate = store.inner.shared.gate.lock().unwrap();
        let mut tasks = Vec::new();
        for i in 0..8u64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut w = store.new_writer();
                let seq = store.next_sequence();
                w.begin_record().unwrap();
                w.append(&payload(seq, 100 + i as usize)).unwrap();
                let p = w.finish_record(seq).unwrap();
                let loc = store.commit(p).await.unwrap();
                (loc, seq)
            }));
        }
        let queued = || store.inner.sender.read().unwrap().as_ref().unwrap().len();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while queued() < 7 {
            assert!(std::time::Instant::now() < deadline, "requests did not queue up");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        drop(gate);
        for t in tasks {
            let (loc, seq) = t.await.unwrap();
            assert_eq!(store.read(loc).unwrap().bytes(), &payload(seq, loc.length as usize)[..]);
        }
    });
    let stats = store.commit_stats();
    assert_eq!(stats.requests, 8);
    assert!(stats.max_batch >= 7, "{stats:?}");
    assert!(stats.batches <= 2, "{stats:?}");
    // Eight writers, eight segments: one flush per segment per batch.
    assert!(stats.flushes <= 8, "{stats:?}");
}

#[test]
fn one_flush_covers_a_segment_and_earlier_records() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small(8 << 20)).unwrap();
    rt().block_on(async {
        let mut w = store.new_writer();
        let mut pending = Vec::new();
        // Records past the staging limit, written to the writer's own segment as they arrive.
        for i in 0..5u64 {
            let seq = store.next_sequence();
            w.begin_record().unwrap();
            w.append(&payload(seq, STAGE_LIMIT as usize + 200 + i as usize)).unwrap();
            pending.push(w.finish_record(seq).unwrap());
        }
        // Commit the last one first: its flush covers the four before it.
        let last = pending.pop().unwrap();
        store.commit(last).await.unwrap();
        let flushes = store.commit_stats().flushes;
        for p in pending {
            store.commit(p).await.unwrap();
        }
        assert_eq!(store.commit_stats().flushes, flushes, "earlier records were already durable");
    });
}

#[test]
fn poisoned_after_a_failed_flush() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small(1 << 20)).unwrap();
    rt().block_on(async {
        let mut w = store.new_writer();
        let (ok_loc, ok_seq) = put(&store, &mut w, 10).await;
        store.inner.shared.fail_next_flush.store(true, Ordering::SeqCst);
        let seq = store.next_sequence();
        w.begin_record().unwrap();
        w.append(b"doomed").unwrap();
        let p = w.finish_record(seq).unwrap();
        let err = store.commit(p).await.unwrap_err();
        assert!(matches!(err, StoreError::Io { op: "msync", .. }), "{err:?}");
        assert!(store.is_poisoned());
        assert!(matches!(w.begin_record(), Err(StoreError::Poisoned)));
        assert!(matches!(store.new_writer().begin_record(), Err(StoreError::Poisoned)));
        // Durable data stays readable.
        assert_eq!(store.read(ok_loc).unwrap().bytes(), &payload(ok_seq, 10)[..]);
    });
    assert!(matches!(store.close(), Err(StoreError::Poisoned)));
    drop(store);
    let store = reopen(dir.path(), small(1 << 20));
    assert!(!store.is_poisoned());
    rt().block_on(async {
        let mut w = store.new_writer();
        put(&store, &mut w, 10).await;
    });
}

#[test]
fn out_of_space_when_fallocate_fails() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small(1 << 20)).unwrap();
    segment::FAIL_FALLOCATE.with(|f| f.set(Some(libc::ENOSPC)));
    let mut w = store.new_writer();
    w.begin_record().unwrap();
    // Past the staging limit: the writer creates a segment of its own, on this thread.
    let err = w.spare(STAGE_LIMIT as usize + 1).unwrap_err();
    assert!(matches!(err, StoreError::OutOfSpace { .. }), "{err:?}");
    assert!(!store.is_poisoned(), "out of space does not poison");
    w.abort_record();
    let leftovers: Vec<_> = std::fs::read_dir(store.segments_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != ".lock")
        .collect();
    assert!(leftovers.is_empty(), "the half-created segment was removed: {leftovers:?}");
    // Space is back: writes resume.
    rt().block_on(async {
        put(&store, &mut w, 10).await;
    });
    // Other errors poison.
    let err = segment::io_error("x", std::path::Path::new("/p"), std::io::Error::from_raw_os_error(libc::EDQUOT), 5);
    assert!(matches!(err, StoreError::OutOfSpace { needed: 5, .. }));
    let err = segment::io_error("x", std::path::Path::new("/p"), std::io::Error::from_raw_os_error(libc::EIO), 5);
    assert!(matches!(err, StoreError::Io { .. }));
}

/// A real full file system: a 1 MiB tmpfs (skipped when mounting is not permitted).
#[test]
fn out_of_space_on_a_full_tmpfs() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mnt)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipping: cannot mount a tmpfs here");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.clone());
    {
        let store = Store::open(&mnt, small(4 << 20)).unwrap();
        let mut w = store.new_writer();
        w.begin_record().unwrap();
        let err = w.spare(STAGE_LIMIT as usize + 1).unwrap_err();
        assert!(matches!(err, StoreError::OutOfSpace { .. }), "{err:?}");
        assert!(!store.is_poisoned());
        w.abort_record();
        w.begin_record().unwrap();
        w.append(&payload(1, 10)).unwrap();
        // A staged record: the committer fails to create the shared segment.
        let p = w.finish_record(1).unwrap();
        let err = rt().block_on(store.commit(p)).unwrap_err();
        assert!(matches!(err, StoreError::OutOfSpace { .. }), "{err:?}");
        assert!(!store.is_poisoned());
        assert_eq!(store.check().unwrap().segments, 0, "nothing half-created is left behind");
    }
    // A segment that fits works.
    let store = Store::open(&mnt, small(256 << 10)).unwrap();
    rt().block_on(async {
        let mut w = store.new_writer();
        put(&store, &mut w, 1000).await;
    });
}

#[test]
fn abort_rewinds_and_leaves_no_garbage() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), small(1 << 20)).unwrap();
        rt().block_on(async {
            let mut w = store.new_writer();
            let first = put(&store, &mut w, 100).await.0;
            w.begin_record().unwrap();
            w.append(&payload(77, 5000)).unwrap();
            assert_eq!(w.record_len(), 5000);
            w.abort_record();
            let kept = put(&store, &mut w, 10).await.0;
            assert_eq!(kept.offset, format::align_shared(record_end(&first)), "the aborted record left no trace");
            // An open record dropped with its writer is aborted too.
            w.begin_record().unwrap();
            w.append(&payload(78, 3000)).unwrap();
        });
        store.close().unwrap();
    }
    let store = Store::open(dir.path(), small(1 << 20)).unwrap();
    let report = store.check().unwrap();
    assert_eq!(report.records, 2);
    assert!(report.is_clean());
    assert_eq!(report.torn_tail_bytes, 0, "aborted bytes were zeroed: {report:?}");
}

#[test]
fn staged_records_share_one_segment() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small(1 << 20)).unwrap();
    let mut written = Vec::new();
    rt().block_on(async {
        let mut a = store.new_writer();
        let mut b = store.new_writer();
        for i in 0..6 {
            let w = if i % 2 == 0 { &mut a } else { &mut b };
            written.push(put(&store, w, 1000 + i).await);
        }
        assert_eq!(a.segment_id(), None, "staged records need no segment of the writer's own");
    });
    for pair in written.windows(2) {
        assert_eq!(pair[1].0.segment, pair[0].0.segment);
        assert_eq!(pair[1].0.offset, format::align_shared(record_end(&pair[0].0)));
    }
    assert_eq!(store.commit_stats().flushes, 6);
    for (loc, seq) in &written {
        assert_eq!(store.read(*loc).unwrap().bytes(), &payload(*seq, loc.length as usize)[..]);
    }
}

#[test]
fn shared_segment_rolls_under_two_threads() {
    let dir = tempfile::tempdir().unwrap();
    let mut written: Vec<(Location, u64)> = Vec::new();
    {
        let store = Store::open(dir.path(), small(64 << 10)).unwrap();
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..2)
                .map(|t| {
                    let store = store.clone();
                    scope.spawn(move || {
                        let mut w = store.new_writer();
                        let rt = rt();
                        (0..40).map(|i| rt.block_on(put(&store, &mut w, 4000 + t * 100 + i))).collect::<Vec<_>>()
                    })
                })
                .collect();
            for h in handles {
                written.extend(h.join().unwrap());
            }
        });
        let segments: std::collections::BTreeSet<u64> = written.iter().map(|(l, _)| l.segment).collect();
        assert!(segments.len() > 2, "64 KiB segments roll: {segments:?}");
        store.close().unwrap();
    }
    let store = Store::open(dir.path(), small(64 << 10)).unwrap();
    for (loc, seq) in &written {
        assert_eq!(store.read(*loc).unwrap().bytes(), &payload(*seq, loc.length as usize)[..]);
    }
    let report = store.check().unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.records, 80);
}

#[test]
#[allow(clippy::await_holding_lock)] // the gate is held on purpose while commits queue up
fn staged_batch_takes_one_flush() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small(1 << 20)).unwrap();
    let mut sequences = Vec::new();
    let locations: Vec<Location> = rt().block_on(async {
        let mut pending = Vec::new();
        let gate = store.inner.shared.gate.lock().unwrap();
        let mut writers: Vec<SegmentWriter> = (0..4).map(|_| store.new_writer()).collect();
        for (i, w) in writers.iter_mut().enumerate() {
            let seq = store.next_sequence();
            sequences.push(seq);
            w.begin_record().unwrap();
            w.append(&payload(seq, 500 + i)).unwrap();
            pending.push(w.finish_record(seq).unwrap());
        }
        let commits: Vec<_> = pending.into_iter().map(|p| store.commit(p)).collect();
        let mut all = Box::pin(futures_util::future::join_all(commits));
        // Polling sends every request while the committer waits at the gate.
        assert!(tokio::time::timeout(Duration::from_millis(50), &mut all).await.is_err());
        assert_eq!(store.check().unwrap().records, 0, "nothing is readable before the commit");
        drop(gate);
        all.await.into_iter().map(Result::unwrap).collect()
    });
    let stats = store.commit_stats();
    assert_eq!(stats.requests, 4);
    assert_eq!(stats.batches, 1, "{stats:?}");
    assert_eq!(stats.flushes, 1, "one flush for the four writers: {stats:?}");
    // Back to back in commit order, each on the next multiple of 512 after the one before.
    assert_eq!(locations[0].offset, format::align_shared(SEGMENT_HEADER_LEN));
    for pair in locations.windows(2) {
        assert_eq!(pair[1].offset, format::align_shared(record_end(&pair[0])));
    }
    for (loc, seq) in locations.iter().zip(&sequences) {
        assert_eq!(store.read(*loc).unwrap().bytes(), &payload(*seq, loc.length as usize)[..]);
    }
    drop(store);
    let store = reopen(dir.path(), small(1 << 20));
    let report = store.check().unwrap();
    assert!(report.is_clean(), "the zero padding is no damage: {report:?}");
    let scanned: Vec<Location> = store.scan_from(&HashMap::new()).unwrap().iter().map(|s| s.location).collect();
    assert_eq!(scanned, locations);
}

#[test]
fn large_record_uses_own_segment() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small(8 << 20)).unwrap();
    rt().block_on(async {
        let mut w = store.new_writer();
        let (small_loc, small_seq) = put(&store, &mut w, 100).await;
        let seq = store.next_sequence();
        // Long enough for two direct writes before the commit.
        let data = payload(seq, (STAGE_LIMIT + 2 * writer::DIRECT_CHUNK) as usize + 5000);
        w.begin_record().unwrap();
        for chunk in data.chunks(16 * 1024) {
            w.spare(chunk.len()).unwrap().copy_from_slice(chunk);
            w.advance(chunk.len()).unwrap();
        }
        assert_eq!(w.record_bytes().unwrap(), &data[..]);
        let p = w.finish_record(seq).unwrap();
        let loc = store.commit(p).await.unwrap();
        assert_eq!(w.segment_id(), Some(loc.segment));
        assert_ne!(loc.segment, small_loc.segment, "the shared segment holds only staged records");
        assert_eq!(store.read(loc).unwrap().bytes(), &data[..]);
        assert_eq!(store.read(small_loc).unwrap().bytes(), &payload(small_seq, 100)[..]);
    });
}

#[test]
fn dropped_writers_hand_their_segment_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small(4 << 20)).unwrap();
    let large = STAGE_LIMIT as usize + 100;
    rt().block_on(async {
        let mut a = store.new_writer();
        let (la, _) = put(&store, &mut a, large).await;
        let mut b = store.new_writer();
        let (lb, _) = put(&store, &mut b, large).await;
        assert_ne!(la.segment, lb.segment, "live writers never share their own segments");
        drop(a);
        let mut c = store.new_writer();
        let (lc, _) = put(&store, &mut c, large).await;
        assert_eq!(lc.segment, la.segment);
        assert_eq!(lc.offset, format::align_shared(record_end(&la)));
    });
}

#[test]
fn open_cleans_up_and_locks() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("segments")).unwrap();
    let tmp = dir.path().join("segments").join("0000000000000010.seg.tmp");
    std::fs::write(&tmp, b"half made").unwrap();
    let store = Store::open(dir.path(), small(8192)).unwrap();
    assert!(!tmp.exists());
    assert!(matches!(Store::open(dir.path(), small(8192)), Err(StoreError::Locked(_))));
    rt().block_on(async {
        let mut w = store.new_writer();
        let (loc, _) = put(&store, &mut w, 1).await;
        assert!(loc.segment > 0x10);
    });
    assert_eq!(store.check().unwrap().segments, 1);
}

#[test]
fn close_waits_then_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small(1 << 20)).unwrap();
    let mut w = store.new_writer();
    let seq = store.next_sequence();
    w.begin_record().unwrap();
    w.append(b"x").unwrap();
    let p = w.finish_record(seq).unwrap();
    let handle = {
        let store = store.clone();
        std::thread::spawn(move || rt().block_on(store.commit(p)))
    };
    handle.join().unwrap().unwrap();
    store.close().unwrap();
    store.close().unwrap();
    assert!(matches!(w.begin_record(), Err(StoreError::Closed)));
    let p2 = {
        // Pending records after close are refused.
        let dir2 = tempfile::tempdir().unwrap();
        let s2 = Store::open(dir2.path(), small(8192)).unwrap();
        let mut w2 = s2.new_writer();
        w2.begin_record().unwrap();
        let p = w2.finish_record(1).unwrap();
        s2.close().unwrap();
        rt().block_on(s2.commit(p))
    };
    assert!(matches!(p2, Err(StoreError::Closed)));
}

#[test]
fn misuse_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small(8192)).unwrap();
    let mut w = store.new_writer();
    assert!(matches!(w.append(b"x"), Err(StoreError::NoOpenRecord)));
    assert!(matches!(w.finish_record(1), Err(StoreError::NoOpenRecord)));
    assert!(w.record_bytes().unwrap().is_empty());
    w.begin_record().unwrap();
    assert!(matches!(w.begin_record(), Err(StoreError::RecordAlreadyOpen)));
    // Empty records are allowed.
    let p = w.finish_record(store.next_sequence()).unwrap();
    assert_eq!(p.length(), 0);
    let location = rt().block_on(store.commit(p)).unwrap();
    assert_eq!(location.offset, format::align_shared(SEGMENT_HEADER_LEN));
    assert!(store.read(location).unwrap().is_empty());
}

#[test]
fn send_sync_bounds() {
    fn send<T: Send>() {}
    fn send_sync_clone<T: Send + Sync + Clone>() {}
    send::<SegmentWriter>();
    send::<PendingRecord>();
    send_sync_clone::<RecordRef>();
    send_sync_clone::<Store>();
}

#[test]
fn close_releases_unused_segment_tail() {
    use std::os::unix::fs::MetadataExt;

    let dir = tempfile::tempdir().unwrap();
    let segment_size = 8 * 1024 * 1024;
    let store = Store::open(dir.path(), small(segment_size)).unwrap();
    let mut writer = store.new_writer();
    let (location, _) = rt().block_on(put(&store, &mut writer, 10_000));
    let path = seg_path(&store, location.segment);
    let allocated_before = std::fs::metadata(&path).unwrap().blocks() * 512;
    assert!(allocated_before >= segment::ALLOCATION_CHUNK, "the first chunk is allocated at creation");
    assert!(allocated_before < segment_size, "the rest is allocated as the writer reaches it");

    drop(writer);
    store.close().unwrap();
    drop(store);

    let metadata = std::fs::metadata(&path).unwrap();
    assert_eq!(metadata.len(), segment_size, "the file keeps its size");
    assert!(metadata.blocks() * 512 <= 64 * 1024, "only the written head stays allocated: {}", metadata.blocks() * 512);

    let reopened = Store::open(dir.path(), small(segment_size)).unwrap();
    let record = reopened.read(location).unwrap();
    assert_eq!(record.bytes(), &payload(1, 10_000)[..], "the record survives");
    let report = reopened.check().unwrap();
    assert!(report.corrupt.is_empty(), "no damage after releasing the tail");
    assert_eq!(report.records, 1);
}

#[test]
fn writer_allocates_chunks_as_it_fills() {
    use std::os::unix::fs::MetadataExt;

    let dir = tempfile::tempdir().unwrap();
    let segment_size = 16 * 1024 * 1024;
    let store = Store::open(dir.path(), small(segment_size)).unwrap();
    let mut writer = store.new_writer();
    let mut locations = Vec::new();
    rt().block_on(async {
        for _ in 0..12 {
            locations.push(put(&store, &mut writer, 700_000).await);
        }
    });
    let (first, _) = locations[0];
    let allocated = std::fs::metadata(seg_path(&store, first.segment)).unwrap().blocks() * 512;
    assert!(allocated >= 12 * 700_000, "every written byte is allocated: {allocated}");
    assert!(allocated < segment_size, "not yet the whole segment: {allocated}");
    for (location, sequence) in locations {
        assert_eq!(store.read(location).unwrap().bytes(), &payload(sequence, 700_000)[..]);
    }
}

/// Runs a system command and returns its output, or `None` when it cannot run or fails, so the caller skips.
fn run_command(program: &str, args: &[&str]) -> Option<String> {
    let output = std::process::Command::new(program).args(args).stderr(std::process::Stdio::null()).output().ok()?;
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// Unmounts a file system mounted by a test.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// Detaches a loop device attached by a test.
struct DetachLoop(String);

impl Drop for DetachLoop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// An ext4 file system on a loop device with 4096-byte logical blocks, as on a 4Kn
/// disk or a LUKS2 volume with 4096-byte sectors. Direct I/O there needs offsets and
/// lengths that are multiples of 4096, which a staged record at offset 512 is not.
/// Skipped when losetup, mkfs.ext4 or mount is not permitted.
#[test]
fn staged_commit_on_4k_sector_device() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.img");
    std::fs::File::create(&image).unwrap().set_len(64 << 20).unwrap();
    let Some(device) = run_command("losetup", &["--sector-size", "4096", "-f", "--show", image.to_str().unwrap()]) else {
        eprintln!("skipping: cannot attach a loop device here");
        return;
    };
    let _detach = DetachLoop(device.clone());
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    if run_command("mkfs.ext4", &["-q", &device]).is_none() || run_command("mount", &[&device, mnt.to_str().unwrap()]).is_none() {
        eprintln!("skipping: cannot make or mount an ext4 file system here");
        return;
    }
    let _unmount = Unmount(mnt.clone());

    let store = Store::open(&mnt, small(1 << 20)).unwrap();
    let mut writer = store.new_writer();
    let (sequence, committed) = try_put(&store, &mut writer, 1000);

    assert!(committed.is_ok(), "commit of a 1000-byte staged record failed: {committed:?}");
    assert!(!store.is_poisoned());
    let location = committed.unwrap();
    assert_eq!(store.read(location).unwrap().bytes(), &payload(sequence, 1000)[..]);
    drop(writer);
    drop(store);
}

/// A full disk when the shared segment needs its next allocation chunk: the commit
/// fails with `OutOfSpace`, the store is not poisoned, and commits work again once
/// space is freed. A 10 MiB tmpfs has room for the segment's first 4 MiB chunk and a 4 MiB
/// ballast file, so the second chunk does not fit until the ballast is removed.
/// Skipped when mounting is not permitted.
#[test]
fn shared_chunk_out_of_space_does_not_poison() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    if run_command("mount", &["-t", "tmpfs", "-o", "size=10m", "tmpfs", mnt.to_str().unwrap()]).is_none() {
        eprintln!("skipping: cannot mount a tmpfs here");
        return;
    }
    let _unmount = Unmount(mnt.clone());

    let store = Store::open(&mnt, small(8 << 20)).unwrap();
    let mut writer = store.new_writer();
    rt().block_on(put(&store, &mut writer, 1000));
    let ballast = mnt.join("ballast");
    std::fs::write(&ballast, vec![1u8; 4 << 20]).unwrap();

    // 200 KB records fill the first 4 MiB chunk, and the record after them needs the second.
    let mut failure = None;
    for _ in 0..40 {
        if let (_, Err(error)) = try_put(&store, &mut writer, 200_000) {
            failure = Some(error);
            break;
        }
    }
    let failure = failure.expect("the second allocation chunk does not fit");
    assert!(matches!(failure, StoreError::OutOfSpace { .. }), "{failure:?}");
    assert!(!store.is_poisoned(), "out of space does not poison the store");

    std::fs::remove_file(&ballast).unwrap();
    let (_, retried) = try_put(&store, &mut writer, 200_000);
    assert!(retried.is_ok(), "commit after space was freed failed: {retried:?}");
    drop(writer);
    drop(store);
}
