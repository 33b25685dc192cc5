//! Tests of records written to a writer's own segment: the direct writes, the bytes
//! they hold back, and the paths that need every byte in the file first.

use std::os::unix::fs::OpenOptionsExt;

use super::{direct_from, DIRECT_CHUNK, PAGE};
use crate::storage::tests::{payload, put, reopen, rt, small};
use crate::storage::{direct, format, record_end, segment, SegmentWriter, Store, RECORD_HEADER_LEN, STAGE_LIMIT};
use crate::Location;

/// Streams `data` into the open record through `spare` and `advance`, `piece` bytes at a time.
fn stream(w: &mut SegmentWriter, data: &[u8], piece: usize) {
    for chunk in data.chunks(piece) {
        w.spare(chunk.len()).unwrap().copy_from_slice(chunk);
        w.advance(chunk.len()).unwrap();
    }
}

/// Closes the store, reopens it and checks that it contains exactly `records`, intact.
fn close_and_check(store: Store, dir: &std::path::Path, segment_size: u64, records: &[(Location, u64)]) {
    store.close().unwrap();
    drop(store);
    let store = reopen(dir, small(segment_size));
    for (loc, seq) in records {
        assert_eq!(store.read(*loc).unwrap().bytes(), &payload(*seq, loc.length as usize)[..]);
    }
    let report = store.check().unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.records, records.len() as u64);
    assert_eq!(report.torn_tail_bytes, 0, "{report:?}");
}

#[test]
fn roll_after_direct_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small(2 << 20)).unwrap();
    let records = rt().block_on(async {
        let mut w = store.new_writer();
        let first = put(&store, &mut w, 1_200_000).await;
        let seq = store.next_sequence();
        let data = payload(seq, 1_500_000);
        w.begin_record().unwrap();
        stream(&mut w, &data, 100_003);
        assert_eq!(w.record_bytes().unwrap(), &data[..]);
        let loc = store.commit(w.finish_record(seq).unwrap()).await.unwrap();
        assert_ne!(loc.segment, first.0.segment, "the record outgrew the first segment");
        assert_eq!(store.read(loc).unwrap().bytes(), &data[..]);
        vec![first, (loc, seq)]
    });
    close_and_check(store, dir.path(), 2 << 20, &records);
}

#[test]
fn read_mid_record_then_continue() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small(8 << 20)).unwrap();
    let record = rt().block_on(async {
        let mut w = store.new_writer();
        let seq = store.next_sequence();
        let data = payload(seq, 3 * DIRECT_CHUNK as usize + 777);
        w.begin_record().unwrap();
        // Stops past the first direct write, in the middle of a page.
        let cut = (STAGE_LIMIT + DIRECT_CHUNK) as usize + 1234;
        stream(&mut w, &data[..cut], 65_536);
        assert_eq!(w.record_bytes().unwrap(), &data[..cut]);
        stream(&mut w, &data[cut..], 65_536);
        assert_eq!(w.record_bytes().unwrap(), &data[..]);
        let loc = store.commit(w.finish_record(seq).unwrap()).await.unwrap();
        assert_eq!(store.read(loc).unwrap().bytes(), &data[..]);
        (loc, seq)
    });
    close_and_check(store, dir.path(), 8 << 20, &[record]);
}

#[test]
fn abort_after_direct_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small(8 << 20)).unwrap();
    let records = rt().block_on(async {
        let mut w = store.new_writer();
        let first = put(&store, &mut w, 400_000).await;
        w.begin_record().unwrap();
        w.append(&payload(99, 1_100_000)).unwrap();
        w.abort_record();
        let second = put(&store, &mut w, 600_000).await;
        assert_eq!(second.0.offset, format::align_shared(record_end(&first.0)), "the aborted record left no trace");
        vec![first, second]
    });
    close_and_check(store, dir.path(), 8 << 20, &records);
}

/// Returns whether direct I/O works in `dir` at the alignment the store writes with.
fn direct_io_available(dir: &std::path::Path) -> bool {
    let path = dir.join("probe");
    std::fs::write(&path, [0u8; 4096]).unwrap();
    let Ok(file) = std::fs::OpenOptions::new().write(true).custom_flags(libc::O_DIRECT).open(&path) else {
        return false;
    };
    direct::dio_alignment(&file).is_some_and(|(offset, memory)| offset <= 512 && memory <= 4096)
}

/// Counts the pages of `[from, to)` of `file` that are in the page cache.
fn cached_pages(file: &std::fs::File, from: u64, to: u64) -> usize {
    // SAFETY: a read-only mapping of a segment file, which keeps its length during the test.
    let map = unsafe { memmap2::Mmap::map(file) }.unwrap();
    let pages = ((to - from) / PAGE) as usize;
    let mut resident = vec![0u8; pages];
    // SAFETY: the range lies in the mapping (page-aligned start, whole pages), and
    // `resident` has one byte per page.
    let rc = unsafe { libc::mincore(map.as_ptr().add(from as usize) as *mut libc::c_void, to as usize - from as usize, resident.as_mut_ptr()) };
    assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
    resident.iter().filter(|&&r| r & 1 == 1).count()
}

/// Opens a store in a new directory, writes one 2 MB record through a writer's own
/// segment and opens that segment's file. Returns `None` where the file system has
/// no direct I/O.
fn store_with_large_record() -> Option<(tempfile::TempDir, Store, Location, std::fs::File)> {
    let dir = tempfile::tempdir().unwrap();
    if !direct_io_available(dir.path()) {
        eprintln!("skipped: no direct I/O on the file system of {}", dir.path().display());
        return None;
    }
    let store = Store::open(dir.path(), small(8 << 20)).unwrap();
    let (loc, _) = rt().block_on(async {
        let mut w = store.new_writer();
        put(&store, &mut w, 2_000_000).await
    });
    let file = std::fs::File::open(store.segments_dir().join(segment::segment_file_name(loc.segment))).unwrap();
    Some((dir, store, loc, file))
}

#[test]
fn large_record_bypasses_page_cache() {
    let Some((_dir, _store, loc, file)) = store_with_large_record() else { return };
    let head = loc.offset / PAGE * PAGE;
    assert_eq!(cached_pages(&file, head, head + PAGE), 1, "the header page goes through the page cache");
    let payload_end = loc.offset + RECORD_HEADER_LEN + loc.length;
    let (from, to) = (direct_from(loc.offset), payload_end / PAGE * PAGE);
    assert_eq!(cached_pages(&file, from, to), 0, "pages {from}..{to} went around the page cache");
}

#[test]
fn prefetch_reads_large_record_ahead() {
    let Some((_dir, store, loc, file)) = store_with_large_record() else { return };
    let (from, to) = (direct_from(loc.offset), (loc.offset + RECORD_HEADER_LEN + loc.length) / PAGE * PAGE);
    assert_eq!(cached_pages(&file, from, to), 0, "written around the page cache");

    store.prefetch(Location { segment: loc.segment + 7, ..loc });
    store.prefetch(Location { length: u64::MAX - loc.offset, ..loc });
    assert_eq!(cached_pages(&file, from, to), 0, "unknown and out-of-range locations start no read");

    store.prefetch(loc);
    let pages = ((to - from) / PAGE) as usize;
    // The read is asynchronous: wait for it, with a bound far above what it takes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while cached_pages(&file, from, to) < pages && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(cached_pages(&file, from, to), pages, "the whole payload was read ahead");
}

#[test]
fn known_length_moves_before_any_payload() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small(8 << 20)).unwrap();
    let records = rt().block_on(async {
        let mut records = Vec::new();
        for first_call_reserves in [true, false] {
            // A fresh writer has an empty buffer.
            let mut w = store.new_writer();
            let seq = store.next_sequence();
            let data = payload(seq, STAGE_LIMIT as usize + 300_000);
            w.begin_record().unwrap();
            if first_call_reserves {
                w.reserve_room(data.len() as u64).unwrap();
                w.append(&data).unwrap();
            } else {
                w.spare(data.len()).unwrap().copy_from_slice(&data);
                w.advance(data.len()).unwrap();
            }
            assert_eq!(w.record_bytes().unwrap(), &data[..]);
            let loc = store.commit(w.finish_record(seq).unwrap()).await.unwrap();
            records.push((loc, seq));
        }
        records
    });
    close_and_check(store, dir.path(), 8 << 20, &records);
}

#[test]
fn lengths_at_page_and_chunk_edges() {
    let limit = STAGE_LIMIT as usize;
    let chunk = DIRECT_CHUNK as usize;
    // The first record starts at 512, so a payload of 4096 * k - 544 bytes ends on a page boundary.
    let lengths = [limit + 1, 4096 * 70 - 544, limit + chunk, limit + chunk + 1, limit + 2 * chunk - 1, 2 * limit + 4096];
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small(16 << 20)).unwrap();
    let records = rt().block_on(async {
        let mut w = store.new_writer();
        let mut records = Vec::new();
        for (i, len) in lengths.into_iter().enumerate() {
            let seq = store.next_sequence();
            let data = payload(seq, len);
            w.begin_record().unwrap();
            stream(&mut w, &data, [1, 4096, 65_536, 100_003][i % 4].max(len / 64));
            assert_eq!(w.record_bytes().unwrap(), &data[..], "payload of {len} bytes");
            let loc = store.commit(w.finish_record(seq).unwrap()).await.unwrap();
            assert_eq!(store.read(loc).unwrap().bytes(), &data[..], "payload of {len} bytes");
            records.push((loc, seq));
        }
        let segments: std::collections::BTreeSet<u64> = records.iter().map(|(loc, _)| loc.segment).collect();
        assert_eq!(segments.len(), 1, "the records follow one another in one segment");
        records
    });
    close_and_check(store, dir.path(), 16 << 20, &records);
}

#[test]
fn dropped_open_record_leaves_zeros() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small(8 << 20)).unwrap();
    let records = rt().block_on(async {
        let mut a = store.new_writer();
        let first = put(&store, &mut a, 700_000).await;
        a.begin_record().unwrap();
        stream(&mut a, &payload(98, 1_500_000), 65_536);
        drop(a);
        // The next writer takes the dropped writer's segment from the idle pool.
        let mut b = store.new_writer();
        let second = put(&store, &mut b, 300_000).await;
        assert_eq!(second.0.segment, first.0.segment);
        assert_eq!(second.0.offset, format::align_shared(record_end(&first.0)));
        vec![first, second]
    });
    close_and_check(store, dir.path(), 8 << 20, &records);
}
