//! The writer's side of deletion.

use super::hierarchy::gc_series;
use super::{now_ms, StudyTouch, Writer};
use crate::manifest::delete::{self, DeleteScope};
use crate::manifest::outbox;

impl Writer {
    /// Deletes the instances in `scope` in one transaction and returns how many there were.
    pub(super) fn delete(&mut self, scope: &DeleteScope) -> Result<usize, String> {
        let now = now_ms();
        let events = self.events.is_some();
        self.deleted_max = None;
        // A deletion may remove or move what the memo describes.
        self.memo = super::memo::HierarchyMemo::default();
        let result = (|| {
            self.conn.execute_batch("BEGIN IMMEDIATE")?;
            match delete::delete(&self.conn, scope, events, now, gc_series) {
                Ok(count) => {
                    self.conn.execute_batch("COMMIT")?;
                    Ok(count)
                }
                Err(error) => {
                    let _ = self.conn.execute_batch("ROLLBACK");
                    Err(error)
                }
            }
        })();
        let count = result.map_err(|error| {
            tracing::error!(?scope, %error, "deleting instances failed");
            error.to_string()
        })?;
        tracing::info!(study_instance_uid = scope.study_instance_uid.as_str(), series_instance_uid = ?scope.series_instance_uid,
            sop_instance_uid = ?scope.sop_instance_uid, deleted = count, "instances deleted");
        metrics::counter!("nectar_instances_deleted_total").increment(count as u64);
        if let (Some(sink), true) = (&self.events, count > 0) {
            for (study, last_change_ms) in outbox::waiting_since(&self.conn, std::iter::once(scope.study_instance_uid.as_str())) {
                let _ = sink.touches.send(StudyTouch { study_instance_uid: study, last_change_ms });
            }
        }
        Ok(count)
    }
}
