//! Telemetry of QIDO-RS searches. Request counts and latency come from the
//! DICOMweb route wrapper; these events add the level and the matches.

use std::time::Duration;

use metrics::counter;

/// Records a search whose response ended. `complete` is false when the client
/// went away or the query failed before the last match was sent.
pub fn search_finished(level: &'static str, matches: u64, complete: bool, duration: Duration) {
    counter!("nectar_qido_searches_total", "level" => level).increment(1);
    counter!("nectar_qido_matches_total", "level" => level).increment(matches);
    tracing::info!(
        level,
        matches,
        complete,
        duration_ms = duration.as_millis() as u64,
        "QIDO-RS search finished"
    );
}

/// Logs a query that failed after its response had started; the response is cut short.
pub fn search_failed(level: &'static str, reason: &str) {
    tracing::warn!(level, reason, "QIDO-RS search failed while streaming");
}
