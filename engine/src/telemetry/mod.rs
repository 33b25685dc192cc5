//! Typed telemetry events: each function writes the log line and moves the
//! metrics for one thing that happened, so logs and counters agree.
//!
//! Metric names follow `nectar_<name>_<unit>`; labels come from small fixed sets.
//! Association id, AE titles and peer address come from the caller's span.

pub mod find;
pub mod http;
pub mod qido;

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram, Counter, Histogram};
use nectar_codecs::negotiation::RejectReason;

use crate::association::AssociationError;

pub mod retrieve;

pub fn association_opened() {
    counter!("nectar_associations_total").increment(1);
    gauge!("nectar_associations_active").increment(1.0);
}

pub fn association_ended() {
    gauge!("nectar_associations_active").decrement(1.0);
}

pub fn association_accepted(accepted_contexts: usize) {
    counter!("nectar_associations_accepted_total").increment(1);
    tracing::info!(accepted_contexts, "association accepted");
}

pub fn association_rejected(calling_ae_title: &str, called_ae_title: &str, reason: RejectReason) {
    counter!("nectar_associations_rejected_total", "reason" => reject_label(reason)).increment(1);
    tracing::warn!(calling_ae = calling_ae_title, called_ae = called_ae_title, ?reason, "association rejected");
}

pub fn association_over_limit(max_associations: usize) {
    counter!("nectar_associations_rejected_total", "reason" => "local_limit_exceeded").increment(1);
    tracing::warn!(max_associations, "association rejected: local limit exceeded");
}

pub fn association_failed(error: &AssociationError) {
    counter!("nectar_association_errors_total", "kind" => error.kind()).increment(1);
    match error {
        AssociationError::Protocol { reason, detail } => {
            tracing::warn!(abort_reason = reason, detail = detail.as_str(), "association aborted: protocol violation");
        }
        other => tracing::warn!(error = %other, "association ended with an error"),
    }
}

/// Logs and counts a panic in an HTTP request handler.
pub fn http_handler_panicked(method: &str, path: &str, message: &str) {
    counter!("nectar_http_panics_total").increment(1);
    tracing::error!(panic = message, method, path, "HTTP request handler panicked; responded with 500");
}

/// Returns the text of a panic payload.
pub fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}

pub fn association_panicked(message: &str) {
    counter!("nectar_association_panics_total").increment(1);
    counter!("nectar_association_errors_total", "kind" => "panic").increment(1);
    tracing::error!(panic = message, "association panicked and was aborted");
}

pub fn association_released() {
    tracing::info!("association released");
}

pub fn association_aborted_by_peer() {
    counter!("nectar_associations_aborted_by_peer_total").increment(1);
    tracing::info!("association aborted by the peer");
}

pub fn association_closed_by_peer() {
    tracing::info!("connection closed by the peer");
}

pub fn echo_answered() {
    counter!("nectar_dimse_requests_total", "command" => "C-ECHO", "status" => "success").increment(1);
    tracing::debug!("C-ECHO response sent");
}

pub fn command_unsupported(command_field: u16) {
    counter!("nectar_dimse_requests_total", "command" => "other", "status" => "unrecognized")
        .increment(1);
    tracing::warn!(
        command_field = format_args!("{command_field:#06x}"),
        "command not supported, responded with 0x0211"
    );
}

/// Handles of the metrics every stored instance updates. A macro call looks its
/// key up in the recorder, so the handles are registered once, at the first
/// instance. `serve` installs the recorder before it accepts any association.
struct StoreMetrics {
    requests: Counter,
    instances: Counter,
    bytes: Counter,
    latency: Histogram,
}

fn store_metrics() -> &'static StoreMetrics {
    static METRICS: OnceLock<StoreMetrics> = OnceLock::new();
    METRICS.get_or_init(|| StoreMetrics {
        requests: counter!("nectar_dimse_requests_total", "command" => "C-STORE", "status" => "success"),
        instances: counter!("nectar_instances_stored_total"),
        bytes: counter!("nectar_instance_bytes_total"),
        latency: histogram!("nectar_store_latency_seconds"),
    })
}

pub fn instance_stored(sop_instance_uid: &str, bytes: u64, latency: Duration) {
    let metrics = store_metrics();
    metrics.requests.increment(1);
    metrics.instances.increment(1);
    metrics.bytes.increment(bytes);
    metrics.latency.record(latency.as_secs_f64());
    tracing::debug!(
        sop_instance_uid,
        bytes,
        latency_us = latency.as_micros() as u64,
        "instance stored"
    );
}

pub fn store_failed(sop_instance_uid: &str, status: u16, comment: &str) {
    counter!("nectar_dimse_requests_total", "command" => "C-STORE", "status" => "failure").increment(1);
    counter!("nectar_store_failures_total", "status" => status_label(status)).increment(1);
    tracing::warn!(sop_instance_uid, status = format_args!("{status:#06x}"), comment, "C-STORE failed");
}

fn reject_label(reason: RejectReason) -> &'static str {
    match reason {
        RejectReason::CalledAeTitleNotRecognized => "called_ae_title_not_recognized",
        RejectReason::CallingAeTitleNotRecognized => "calling_ae_title_not_recognized",
        RejectReason::ApplicationContextNotSupported => "application_context_not_supported",
        RejectReason::ProtocolVersionNotSupported => "protocol_version_not_supported",
        RejectReason::NoReasonGiven => "no_reason_given",
        RejectReason::LocalLimitExceeded => "local_limit_exceeded",
    }
}

fn status_label(status: u16) -> &'static str {
    match status {
        0xA700..=0xA7FF => "out_of_resources",
        0xA900..=0xA9FF => "data_set_mismatch",
        0xC000..=0xCFFF => "cannot_understand",
        0x0122 => "sop_class_not_supported",
        _ => "other",
    }
}
