//! Telemetry of the C-GET and C-MOVE SCPs.
//!
//! `kind` is "get" or "move"; `level` is a Query/Retrieve Level or "none" for
//! a request rejected before its identifier was read.

use metrics::counter;

use crate::retrieve::{Progress, SubOperationResult};

/// Maps a final status to its `status` label.
fn status_label(status: u16) -> &'static str {
    match status {
        0x0000 => "success",
        0xB000 => "warning",
        0xFE00 => "cancel",
        0xA702 => "unable_to_perform_sub_operations",
        0xA801 => "move_destination_unknown",
        0xA900 => "identifier_does_not_match_sop_class",
        _ => "other_failure",
    }
}

/// Records a retrieve rejected with a failure status before any sub-operation.
pub fn retrieve_rejected(kind: &'static str, status: u16, comment: &str, destination_ae: Option<&str>) {
    counter!("nectar_retrieves_total", "kind" => kind, "level" => "none", "status" => status_label(status)).increment(1);
    tracing::warn!(
        kind,
        status = format_args!("{status:#06x}"),
        comment,
        destination_ae,
        "retrieve rejected"
    );
}

/// Counts one C-STORE sub-operation that finished, or failed before its C-STORE-RQ was sent.
pub fn sub_operation_finished(kind: &'static str, result: SubOperationResult, sent: bool, bytes: u64) {
    if sent {
        counter!("nectar_retrieve_sub_operations_total", "kind" => kind, "result" => "sent").increment(1);
        counter!("nectar_retrieve_bytes_total", "kind" => kind).increment(bytes);
    }
    counter!("nectar_retrieve_sub_operations_total", "kind" => kind, "result" => result.label()).increment(1);
}

/// Logs a failed sub-operation. `store_status` is the C-STORE-RSP status when one came back.
pub fn sub_operation_failed(kind: &'static str, sop_instance_uid: &str, store_status: Option<u16>, reason: &str) {
    tracing::warn!(
        kind,
        sop_instance_uid,
        store_status = store_status.map(|s| format!("{s:#06x}")),
        reason,
        "retrieve sub-operation failed"
    );
}

/// Records a C-MOVE destination that could not be reached or rejected the association.
pub fn destination_failed(destination_ae: &str, error: &dyn std::fmt::Display) {
    counter!("nectar_retrieve_destination_errors_total").increment(1);
    tracing::warn!(destination_ae, %error, "C-MOVE destination association failed");
}

/// Records a retrieve that sent its final response after its sub-operations.
pub fn retrieve_finished(
    kind: &'static str,
    level: &'static str,
    status: u16,
    progress: &Progress,
    destination_ae: Option<&str>,
) {
    counter!("nectar_retrieves_total", "kind" => kind, "level" => level, "status" => status_label(status)).increment(1);
    tracing::info!(
        kind,
        level,
        status = format_args!("{status:#06x}"),
        completed = progress.completed(),
        failed = progress.failed(),
        warning = progress.warning(),
        remaining = progress.remaining(),
        destination_ae,
        "retrieve finished"
    );
}
