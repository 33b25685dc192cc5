//! Study actors: one per study waiting for its quiet period.
//!
//! The manifest writer reports every study it changed. The router hands the
//! report to that study's actor, starting one on the arbiter the hash of the
//! Study Instance UID picks. An actor waits until the quiet period has passed
//! since the newest change it received, then asks the manifest to emit the
//! study's next revision. The manifest writes it only if no later change
//! arrived, so a revision is never written twice. Then the actor stops.
//!
//! Waits survive a restart because the manifest keeps each study's last
//! change. The router starts actors for them at start, and once per quiet
//! period it sweeps for a study whose report reached an actor that was
//! stopping, which is how a lost report or a dead actor is recovered.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use actix_rt::ArbiterHandle;

use crate::manifest::{Manifest, StudyTouch};

/// Delay before asking the manifest again after a failed revision.
const RETRY_AFTER: Duration = Duration::from_secs(1);

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Hands study changes to the study actors.
pub struct StudyRouter {
    arbiters: Vec<ArbiterHandle>,
    manifest: Manifest,
    quiet_period: Duration,
    actors: Mutex<HashMap<String, Addr<StudyActor>>>,
}

impl StudyRouter {
    pub fn new(arbiters: Vec<ArbiterHandle>, manifest: Manifest, quiet_period: Duration) -> Arc<StudyRouter> {
        Arc::new(StudyRouter { arbiters, manifest, quiet_period, actors: Mutex::new(HashMap::new()) })
    }

    /// Studies with a live actor.
    pub fn active(&self) -> usize {
        self.actors.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Routes one change to its study's actor, starting the actor if needed.
    pub fn touch(self: &Arc<Self>, touch: StudyTouch) {
        let mut actors = self.actors.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(actor) = actors.get(&touch.study_instance_uid) {
            if actor.try_send(Touched(touch.last_change_ms)).is_ok() {
                return;
            }
        }
        let arbiter = &self.arbiters[shard(&touch.study_instance_uid, self.arbiters.len())];
        let actor = StudyActor {
            study: touch.study_instance_uid.clone(),
            last_change_ms: touch.last_change_ms,
            router: self.clone(),
            timer: None,
        };
        let addr = StudyActor::start_in_arbiter(arbiter, move |_| actor);
        actors.insert(touch.study_instance_uid, addr);
        metrics::gauge!("nectar_studies_waiting").set(actors.len() as f64);
    }

    fn remove(&self, study: &str, addr: &Addr<StudyActor>) {
        let mut actors = self.actors.lock().unwrap_or_else(|p| p.into_inner());
        if actors.get(study).is_some_and(|a| a == addr) {
            actors.remove(study);
        }
        metrics::gauge!("nectar_studies_waiting").set(actors.len() as f64);
    }

    /// Starts an actor for every study the manifest lists as waiting that has none.
    pub fn sweep(self: &Arc<Self>) {
        match self.manifest.waiting_studies() {
            Ok(waiting) => {
                for (study, last_change_ms) in waiting {
                    let known = self.actors.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&study);
                    if !known {
                        self.touch(StudyTouch { study_instance_uid: study, last_change_ms });
                    }
                }
            }
            Err(error) => tracing::error!(%error, "reading the studies waiting for their quiet period failed"),
        }
    }

    /// Routes the manifest's change reports until `stop`, sweeping once per
    /// quiet period (and once at start, for waits from before a restart).
    pub async fn run(
        self: Arc<Self>,
        mut touches: tokio::sync::mpsc::UnboundedReceiver<StudyTouch>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        self.sweep();
        let mut sweep = tokio::time::interval(self.quiet_period.max(Duration::from_secs(1)));
        sweep.tick().await;
        loop {
            tokio::select! {
                touch = touches.recv() => match touch {
                    Some(touch) => self.touch(touch),
                    None => return,
                },
                _ = sweep.tick() => self.sweep(),
                _ = stop.wait_for(|stopping| *stopping) => return,
            }
        }
    }
}

/// Returns the arbiter index of a study.
fn shard(study: &str, shards: usize) -> usize {
    let mut hasher = DefaultHasher::new();
    study.hash(&mut hasher);
    (hasher.finish() % shards.max(1) as u64) as usize
}

/// A change of the actor's study at the given time (ms since the epoch).
#[derive(Message)]
#[rtype(result = "()")]
struct Touched(i64);

/// Waits out one study's quiet period, then has its revision emitted.
pub struct StudyActor {
    study: String,
    last_change_ms: i64,
    router: Arc<StudyRouter>,
    timer: Option<SpawnHandle>,
}

impl StudyActor {
    fn arm(&mut self, ctx: &mut Context<Self>) {
        if let Some(timer) = self.timer.take() {
            ctx.cancel_future(timer);
        }
        let quiet_ms = self.router.quiet_period.as_millis() as i64;
        let wait_ms = (self.last_change_ms + quiet_ms - now_ms()).clamp(0, quiet_ms);
        self.timer = Some(ctx.run_later(Duration::from_millis(wait_ms as u64), |actor, ctx| actor.quiet(ctx)));
    }

    fn quiet(&mut self, ctx: &mut Context<Self>) {
        self.timer = None;
        let manifest = self.router.manifest.clone();
        let study = self.study.clone();
        let last_change_ms = self.last_change_ms;
        let emit = async move { manifest.emit_revision(&study, last_change_ms).await };
        ctx.spawn(emit.into_actor(self).map(move |result, actor, ctx| match result {
            Ok(Some(revision)) => {
                tracing::info!(study_instance_uid = actor.study.as_str(), revision, "study revision emitted");
                metrics::counter!("nectar_study_revisions_total").increment(1);
                if actor.last_change_ms == last_change_ms {
                    ctx.stop();
                }
            }
            // A later change restarted the wait; its report re-armed the timer
            // or is on its way.
            Ok(None) if actor.last_change_ms != last_change_ms => {}
            Ok(None) => ctx.stop(),
            Err(error) => {
                tracing::warn!(study_instance_uid = actor.study.as_str(), %error, "study revision failed; retrying");
                actor.timer = Some(ctx.run_later(RETRY_AFTER, |actor, ctx| actor.quiet(ctx)));
            }
        }));
    }
}

impl Actor for StudyActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.arm(ctx);
    }

    fn stopped(&mut self, ctx: &mut Context<Self>) {
        self.router.remove(&self.study, &ctx.address());
    }
}

impl Handler<Touched> for StudyActor {
    type Result = ();

    fn handle(&mut self, Touched(at): Touched, ctx: &mut Context<Self>) {
        if at > self.last_change_ms {
            self.last_change_ms = at;
            self.arm(ctx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::shard;

    #[test]
    fn shards_are_stable_and_in_range() {
        for study in ["1.2.3", "1.2.840.113619.2.55.3.604688119", ""] {
            let s = shard(study, 4);
            assert!(s < 4);
            assert_eq!(s, shard(study, 4));
        }
        assert_eq!(shard("1.2.3", 0), 0);
    }
}
