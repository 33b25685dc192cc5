//! The group committer: flushes each segment once per batch.
//!
//! A commit of the only writer, with no other commit in flight, runs its batch of
//! one on the calling thread (inline). Any other commit goes through a bounded queue to the
//! committer thread, which takes every request waiting into one batch. Whichever
//! thread runs a batch locks [`BatchState`] for it, so batches never overlap.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TrySendError};
use tokio::sync::oneshot;

use super::segment::Segment;
use super::shared_tail::{Staged, SharedTail};
use super::writer::{Pending, PendingRecord};
use super::{lock, Inner, Shared, StoreError};
use crate::Location;

pub(crate) type Reply = oneshot::Sender<Result<Location, StoreError>>;

pub(crate) struct CommitRequest {
    pending: Pending,
    reply: Reply,
}

/// Counters of the committer since the store was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Batches processed.
    pub batches: u64,
    /// Commit requests processed.
    pub requests: u64,
    /// msync calls made.
    pub flushes: u64,
    /// Largest batch seen.
    pub max_batch: u64,
    /// Commits that ran inline, on the thread that called `commit`.
    pub inline: u64,
}

#[derive(Default)]
pub(crate) struct StatsCells {
    batches: AtomicU64,
    requests: AtomicU64,
    flushes: AtomicU64,
    max_batch: AtomicU64,
    inline: AtomicU64,
}

impl StatsCells {
    pub(crate) fn snapshot(&self) -> CommitStats {
        CommitStats {
            batches: self.batches.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            flushes: self.flushes.load(Ordering::Relaxed),
            max_batch: self.max_batch.load(Ordering::Relaxed),
            inline: self.inline.load(Ordering::Relaxed),
        }
    }
}

/// State of the batch runner: the shared segment's tail, the batch and its metrics.
/// The thread that runs a batch locks it.
pub(crate) struct BatchState {
    tail: SharedTail,
    batch: Vec<CommitRequest>,
    // Registered once, because each `histogram!` call looks its key up in the recorder.
    batch_size: metrics::Histogram,
    duration: metrics::Histogram,
    inline: metrics::Counter,
}

impl BatchState {
    pub(crate) fn new(max_batch: usize) -> BatchState {
        BatchState {
            tail: SharedTail::default(),
            batch: Vec::with_capacity(max_batch),
            batch_size: metrics::histogram!("nectar_commit_batch_size"),
            duration: metrics::histogram!("nectar_commit_duration_seconds"),
            inline: metrics::counter!("nectar_commit_inline_total"),
        }
    }

    /// Runs the requests in `batch`, which started at `started`.
    fn run(&mut self, shared: &Shared, started: Instant) {
        let n = self.batch.len() as u64;
        self.batch_size.record(n as f64);
        shared.stats.batches.fetch_add(1, Ordering::Relaxed);
        shared.stats.requests.fetch_add(n, Ordering::Relaxed);
        shared.stats.max_batch.fetch_max(n, Ordering::Relaxed);
        process(shared, &mut self.tail, &mut self.batch);
        self.duration.record(started.elapsed().as_secs_f64());
    }
}

/// Guard that counts a commit as in flight from `enter` until it is dropped, also
/// when the commit's future is dropped before it resolves.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    /// Returns the guard, and whether no other commit was in flight.
    fn enter(count: &'a AtomicUsize) -> (InFlight<'a>, bool) {
        let before = count.fetch_add(1, Ordering::AcqRel);
        (InFlight(count), before == 0)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// `Store::commit`.
pub(crate) async fn commit(inner: &Inner, pending: PendingRecord) -> Result<Location, StoreError> {
    inner.check_writable()?;
    if let Pending::Written { location, segment, end } = &pending.kind {
        if *end <= segment.durable.load(Ordering::Acquire) {
            // A later record of the same segment was flushed already, covering this one.
            return Ok(*location);
        }
    }
    let (tx, rx) = oneshot::channel();
    let mut request = CommitRequest { pending: pending.kind, reply: tx };
    let (_in_flight, alone) = InFlight::enter(&inner.shared.in_flight);
    if alone && inner.writers.load(Ordering::Relaxed) <= 1 {
        match commit_inline(inner, request) {
            Ok(()) => return rx.await.unwrap_or(Err(StoreError::Closed)),
            Err(back) => request = back,
        }
    }
    let mut attempts: u32 = 0;
    loop {
        let sent = {
            let guard = inner.sender.read().unwrap_or_else(|e| e.into_inner());
            match guard.as_ref() {
                Some(sender) => sender.try_send(request),
                None => return Err(StoreError::Closed),
            }
        };
        match sent {
            Ok(()) => break,
            Err(TrySendError::Full(back)) => {
                request = back;
                metrics::counter!("nectar_commit_queue_full_total").increment(1);
                if attempts < 8 {
                    tokio::task::yield_now().await;
                } else {
                    let micros = 100u64 << (attempts - 8).min(4);
                    tokio::time::sleep(Duration::from_micros(micros)).await;
                }
                attempts += 1;
                inner.check_writable()?;
            }
            Err(TrySendError::Disconnected(_)) => return Err(StoreError::Closed),
        }
    }
    rx.await.unwrap_or(Err(StoreError::Closed))
}

/// Runs `request` as a batch of one on this thread. Returns the request, for the
/// queue, when another batch is running.
///
/// The caller is the only writer and no other commit is in flight, so no other
/// request could join the batch. Running it here saves waking the committer thread
/// and being woken by it: two thread switches per commit. It blocks this thread for
/// the write and the flush, the time the caller waits for anyway. With several
/// writers, the committer thread runs the batches, so that the thread of each
/// writer goes on receiving for the others during a flush.
fn commit_inline(inner: &Inner, request: CommitRequest) -> Result<(), CommitRequest> {
    let shared = &inner.shared;
    let Ok(mut state) = shared.batch_state.try_lock() else { return Err(request) };
    #[cfg(test)]
    let Ok(_gate) = shared.gate.try_lock() else { return Err(request) };
    // `close` sets `closed` before the committer thread's last batch. A commit that
    // locks the state after that batch reads it as set and writes nothing.
    if inner.closed.load(Ordering::Acquire) {
        let _ = request.reply.send(Err(StoreError::Closed));
        return Ok(());
    }
    let started = Instant::now();
    state.inline.increment(1);
    shared.stats.inline.fetch_add(1, Ordering::Relaxed);
    state.batch.push(request);
    state.run(shared, started);
    Ok(())
}

/// The records of one batch in one segment, flushed together.
pub(crate) struct Group {
    segment: Arc<Segment>,
    end: u64,
    /// Records appended by the committer (shared segment): they become readable once flushed.
    publish: bool,
    replies: Vec<(Reply, Location)>,
}

impl Group {
    pub(crate) fn new(segment: Arc<Segment>, publish: bool) -> Group {
        Group { segment, end: 0, publish, replies: Vec::new() }
    }

    /// Adds a record, ending at `end`, to the group.
    pub(crate) fn add(&mut self, location: Location, end: u64, reply: Reply) {
        self.end = self.end.max(end);
        self.replies.push((reply, location));
    }
}

/// The committer thread's loop. Returns when every sender is gone and the queue is empty.
pub(crate) fn run(rx: Receiver<CommitRequest>, shared: Arc<Shared>, max_batch: usize) {
    while let Ok(first) = rx.recv() {
        let mut state = lock(&shared.batch_state);
        #[cfg(test)]
        let _gate = shared.gate.lock().unwrap_or_else(|e| e.into_inner());
        let started = Instant::now();
        state.batch.push(first);
        while state.batch.len() < max_batch {
            match rx.try_recv() {
                Ok(r) => state.batch.push(r),
                Err(_) => break,
            }
        }
        state.run(&shared, started);
    }
    lock(&shared.batch_state).tail.close();
    tracing::debug!("segment committer stopped");
}

/// Copies `error` for one more waiting commit.
pub(crate) fn copy_error(error: &StoreError) -> StoreError {
    match error {
        StoreError::Io { op, path, source } => {
            StoreError::Io { op, path: path.clone(), source: std::io::Error::new(source.kind(), source.to_string()) }
        }
        StoreError::OutOfSpace { path, needed, source } => {
            StoreError::OutOfSpace { path: path.clone(), needed: *needed, source: std::io::Error::new(source.kind(), source.to_string()) }
        }
        StoreError::Closed => StoreError::Closed,
        _ => StoreError::Poisoned,
    }
}

fn process(shared: &Shared, tail: &mut SharedTail, batch: &mut Vec<CommitRequest>) {
    let mut groups: BTreeMap<u64, Group> = BTreeMap::new();
    let mut staged = Vec::new();
    for r in batch.drain(..) {
        match r.pending {
            Pending::Written { location, segment, end } => {
                let g = groups.entry(segment.id).or_insert_with(|| Group::new(segment.clone(), false));
                g.add(location, end, r.reply);
            }
            Pending::Staged { buf, len, span } => staged.push(Staged { buf, len, span, reply: r.reply }),
        }
    }
    if !staged.is_empty() {
        tail.append(shared, staged, &mut groups);
    }
    for g in groups.into_values() {
        let result = flush_group(shared, &g);
        if let Err(e) = &result {
            if !matches!(e, StoreError::Poisoned) && !shared.poisoned.swap(true, std::sync::atomic::Ordering::AcqRel) {
                tracing::error!(error = %e, "segment flush failed; store poisoned until reopened");
            }
        }
        if result.is_ok() && g.publish {
            g.segment.published.fetch_max(g.end, Ordering::Release);
        }
        for (reply, location) in g.replies {
            let r = match &result {
                Ok(()) => Ok(location),
                Err(e) => Err(copy_error(e)),
            };
            // The caller may have stopped waiting (cancelled future); nothing to do then.
            let _ = reply.send(r);
        }
    }
    tail.release_retired();
}

/// Flushes `[durable, max(end, scrub_end))` of one segment and advances `durable` to `end`.
fn flush_group(shared: &Shared, g: &Group) -> Result<(), StoreError> {
    let seg = &g.segment;
    let durable = seg.durable.load(Ordering::Acquire);
    if g.end <= durable {
        return Ok(());
    }
    if shared.poisoned.load(Ordering::Acquire) {
        return Err(StoreError::Poisoned);
    }
    let flush_end = g.end.max(seg.scrub_end.load(Ordering::Acquire)).min(seg.len);
    #[cfg(test)]
    if shared.fail_next_flush.swap(false, Ordering::AcqRel) {
        return Err(StoreError::Io { op: "msync", path: seg.path.clone(), source: std::io::Error::other("injected flush failure") });
    }
    shared.stats.flushes.fetch_add(1, Ordering::Relaxed);
    seg.flush(durable, flush_end).map_err(|source| StoreError::Io { op: "msync", path: seg.path.clone(), source })?;
    // Only record ends move `durable`: bytes below a published record end are immutable,
    // while scrubbed bytes above it may be written again.
    seg.durable.fetch_max(g.end, Ordering::Release);
    Ok(())
}
