//! The worker arbiters: one actix arbiter per worker thread, each pinned to a core.

use actix_rt::Arbiter;
use core_affinity::CoreId;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fixed pool of arbiters; associations are spread over them round-robin
/// and stay on theirs for their whole life.
pub struct WorkerPool {
    arbiters: Vec<Arbiter>,
    next: AtomicUsize,
}

impl WorkerPool {
    /// Starts `count` arbiters. Worker `i` is pinned to `cores[i % cores.len()]`;
    /// with no cores given, no worker is pinned.
    pub fn start(count: usize, cores: &[CoreId]) -> WorkerPool {
        let arbiters = (0..count.max(1))
            .map(|index| {
                let arbiter = Arbiter::new();
                let core = (!cores.is_empty()).then(|| cores[index % cores.len()]);
                arbiter.spawn_fn(move || {
                    let pinned = core.map(core_affinity::set_for_current).unwrap_or(false);
                    tracing::debug!(worker = index, pinned, core = ?core.map(|c| c.id), "worker started");
                });
                arbiter
            })
            .collect();
        WorkerPool { arbiters, next: AtomicUsize::new(0) }
    }

    /// The arbiter for the next association.
    pub fn next(&self) -> &Arbiter {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.arbiters.len();
        &self.arbiters[index]
    }

    /// Handles on every arbiter, in worker order.
    pub fn handles(&self) -> Vec<actix_rt::ArbiterHandle> {
        self.arbiters.iter().map(|arbiter| arbiter.handle()).collect()
    }

    /// Stops every arbiter once its running tasks return control, and waits for the threads.
    pub fn stop(self) {
        for arbiter in self.arbiters {
            arbiter.stop();
            let _ = arbiter.join();
        }
    }
}
