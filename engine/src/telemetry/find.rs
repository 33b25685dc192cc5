//! Telemetry of the C-FIND SCP and the query runner.

use std::time::Duration;

use metrics::{counter, histogram};

/// Records a query that ended with its final status: counted by level and
/// status, with its matches and duration, and logged once at info level.
pub fn query_finished(level: &'static str, status: u16, matches: u64, duration: Duration) {
    let status_label = status_label(status);
    counter!("nectar_find_queries_total", "level" => level, "status" => status_label).increment(1);
    counter!("nectar_find_matches_total", "level" => level).increment(matches);
    histogram!("nectar_find_duration_seconds", "level" => level).record(duration.as_secs_f64());
    counter!("nectar_dimse_requests_total", "command" => "C-FIND", "status" => status_label).increment(1);
    tracing::info!(
        level,
        matches,
        status = format_args!("{status:#06x}"),
        duration_ms = duration.as_millis() as u64,
        "C-FIND finished"
    );
}

/// Records a failed query with the Error Comment sent to the peer.
pub fn query_failed(level: &'static str, status: u16, comment: &str, duration: Duration) {
    let status_label = status_label(status);
    counter!("nectar_find_queries_total", "level" => level, "status" => status_label).increment(1);
    histogram!("nectar_find_duration_seconds", "level" => level).record(duration.as_secs_f64());
    counter!("nectar_dimse_requests_total", "command" => "C-FIND", "status" => status_label).increment(1);
    tracing::warn!(level, status = format_args!("{status:#06x}"), comment, "C-FIND failed");
}

/// Records a stored data set that could not be read for a query. Its keys come
/// back empty and match only universal matching.
pub fn representative_unreadable(instance_id: i64, reason: &str) {
    counter!("nectar_find_unreadable_instances_total").increment(1);
    tracing::warn!(instance_id, reason, "stored data set unreadable for a query");
}

fn status_label(status: u16) -> &'static str {
    match status {
        0x0000 => "success",
        0xFE00 => "cancel",
        0xA700..=0xA7FF => "out_of_resources",
        0xA900..=0xA9FF => "identifier_mismatch",
        0xC000..=0xCFFF => "unable_to_process",
        _ => "other",
    }
}
