//! Telemetry events of the HTTP endpoint and its DICOMweb services.

use std::time::Duration;

use metrics::{counter, histogram};

/// Records one finished HTTP request. `route` is the route pattern, a small fixed set.
pub fn request_finished(route: &str, method: &str, status: u16, bytes_in: u64, bytes_out: u64, latency: Duration) {
    let route = route.to_string();
    counter!("nectar_http_requests_total", "route" => route.clone(), "method" => method.to_string(), "status" => status.to_string())
        .increment(1);
    counter!("nectar_http_received_bytes_total", "route" => route.clone()).increment(bytes_in);
    counter!("nectar_http_sent_bytes_total", "route" => route.clone()).increment(bytes_out);
    histogram!("nectar_http_request_duration_seconds", "route" => route.clone()).record(latency.as_secs_f64());
    tracing::debug!(route, method, status, bytes_in, bytes_out, latency_ms = latency.as_millis() as u64, "HTTP request finished");
}

/// Logs a request rejected with an error status and the reason sent to the client.
pub fn request_rejected(status: u16, reason: &str) {
    tracing::warn!(status, reason, "DICOMweb request rejected");
}

/// Records one STOW-RS part stored durably.
pub fn stow_part_stored(sop_instance_uid: &str, bytes: u64, latency: Duration) {
    counter!("nectar_stow_instances_total", "outcome" => "stored").increment(1);
    counter!("nectar_stow_bytes_total").increment(bytes);
    tracing::info!(sop_instance_uid, bytes, latency_ms = latency.as_millis() as u64, "STOW-RS instance stored");
}

/// Records one STOW-RS part not stored, with its Failure Reason (0008,1197).
pub fn stow_part_failed(sop_instance_uid: Option<&str>, failure_reason: u16, message: &str) {
    counter!("nectar_stow_instances_total", "outcome" => "failed").increment(1);
    tracing::warn!(
        sop_instance_uid = sop_instance_uid.unwrap_or(""),
        failure_reason = format!("{failure_reason:#06X}"),
        reason = message,
        "STOW-RS instance not stored"
    );
}
