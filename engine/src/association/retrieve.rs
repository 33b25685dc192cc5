//! Steps shared by the C-GET and C-MOVE SCPs on the requesting association:
//! resolving the identifier to stored instances, reading a stored data set,
//! noticing C-CANCEL-RQ, and sending C-GET-RSP or C-MOVE-RSP.
//!
//! Waiting on the peer fails at the server's shutdown deadline, so a retrieve
//! still running then ends with A-ABORT.

use futures_util::FutureExt;
use nectar_codecs::command::{self, command_field, status, SubOperations, MAX_ERROR_COMMENT_LEN};
use nectar_codecs::pdu;

use super::error::AssociationError;
use super::session::{Incoming, PendingRequest, Session};
use crate::manifest::{RetrieveInstance, RetrieveLevel};
use crate::retrieve::{identifier, parse_identifier, Progress, SubOperationResult};
use crate::storage::RecordRef;
use crate::telemetry;

/// A C-GET or C-MOVE whose identifier resolved to stored instances.
pub(super) struct Resolved {
    pub level: RetrieveLevel,
    pub instances: Vec<RetrieveInstance>,
}

/// A final failure response sent before any sub-operation.
pub(super) struct Rejection {
    pub status: u16,
    pub comment: String,
}

/// Parses the identifier and looks the instances up in the manifest.
pub(super) async fn resolve(session: &Session, request: &PendingRequest) -> Result<Resolved, Rejection> {
    let keys = parse_identifier(&request.identifier, &request.context.transfer_syntax, &request.context.abstract_syntax)
        .map_err(|error| Rejection { status: status::DATA_SET_DOES_NOT_MATCH_SOP_CLASS, comment: error.0 })?;
    let unable = |comment: &str| Rejection {
        status: status::OUT_OF_RESOURCES_UNABLE_TO_PERFORM_SUB_OPERATIONS,
        comment: comment.to_owned(),
    };

    // Instances whose C-STORE-RSP has been sent may still wait in the manifest
    // writer's queue; flushing makes them visible to the query below.
    let manifest = session.services.manifest.clone();
    if let Err(error) = manifest.flush_async().await {
        tracing::error!(%error, "failed to flush the manifest before a retrieve");
        return Err(unable("the manifest could not be read"));
    }

    // NOTE: the whole match list is held in memory (about 200 bytes per
    // instance) because Number of Remaining Sub-operations needs the total first.
    let level = keys.level;
    let lookup = tokio::task::spawn_blocking(move || manifest.retrieve_instances(keys.level, &keys.values)).await;
    match lookup {
        Ok(Ok(instances)) => Ok(Resolved { level, instances }),
        Ok(Err(error)) => {
            tracing::error!(%error, "manifest query for a retrieve failed");
            Err(unable("the manifest could not be read"))
        }
        Err(error) => {
            tracing::error!(%error, "manifest query task for a retrieve failed");
            Err(unable("the manifest could not be read"))
        }
    }
}

/// A stored instance's data set: the record with the offset of the data set
/// after the preamble and File Meta.
pub(super) struct StoredDataSet {
    record: RecordRef,
    offset: usize,
}

impl StoredDataSet {
    /// Returns the data set bytes, borrowed from the memory-mapped segment.
    pub fn bytes(&self) -> &[u8] {
        &self.record.bytes()[self.offset..]
    }
}

/// Reads an instance's record and checks that its File Meta names the
/// transfer syntax the manifest has.
pub(super) fn read_data_set(session: &Session, instance: &RetrieveInstance) -> Result<StoredDataSet, String> {
    let record = session
        .services
        .store
        .read(instance.location)
        .map_err(|error| format!("failed to read the stored record: {error}"))?;
    let meta = nectar_codecs::meta::read_file_meta(record.bytes())
        .map_err(|error| format!("invalid File Meta in the stored record: {error}"))?;
    if meta.transfer_syntax_uid != instance.transfer_syntax_uid {
        return Err(format!(
            "the stored record's transfer syntax {} differs from the manifest's {}",
            meta.transfer_syntax_uid, instance.transfer_syntax_uid
        ));
    }
    Ok(StoredDataSet { record, offset: meta.dataset_offset })
}

/// Reports whether `incoming` is a C-CANCEL-RQ for the request `message_id`.
/// Errors end the association: the peer aborted or closed it, or sent a
/// command that has no place while a retrieve runs.
pub(super) fn is_cancel(incoming: Incoming, message_id: u16) -> Result<bool, AssociationError> {
    match incoming {
        Incoming::Command { command, .. } if command.command_field == command_field::C_CANCEL_RQ => {
            Ok(command.message_id_being_responded_to == Some(message_id))
        }
        Incoming::Command { command, .. } => Err(AssociationError::unexpected_pdu(format!(
            "command {:#06x} while a retrieve is running",
            command.command_field
        ))),
        Incoming::Aborted => Err(peer_gone("the peer aborted the association during a retrieve")),
        Incoming::Closed => Err(peer_gone("the peer closed the connection during a retrieve")),
    }
}

pub(super) fn peer_gone(detail: &str) -> AssociationError {
    AssociationError::Io(std::io::Error::new(std::io::ErrorKind::ConnectionAborted, detail.to_owned()))
}

/// Reads every message the peer has already started to send, without
/// waiting for more, and reports whether one was a C-CANCEL-RQ for `message_id`.
pub(super) async fn cancel_requested(session: &mut Session, message_id: u16) -> Result<bool, AssociationError> {
    let mut cancelled = false;
    // `readable` is cancel-safe, so polling it once and dropping it loses nothing.
    while let Some(ready) = session.readable().now_or_never() {
        ready?;
        let incoming = read_with_timeout(session).await?;
        cancelled |= is_cancel(incoming, message_id)?;
    }
    Ok(cancelled)
}

/// Classifies, counts and (on failure) logs a sub-operation whose C-STORE-RSP
/// came back with `store_status` after `bytes` of data set were sent.
pub(super) fn sub_operation_done(kind: &'static str, uid: &str, store_status: u16, bytes: u64) -> SubOperationResult {
    let result = SubOperationResult::from_store_status(store_status);
    if result == SubOperationResult::Failed {
        telemetry::retrieve::sub_operation_failed(kind, uid, Some(store_status), "the C-STORE-RSP reports a failure");
    }
    telemetry::retrieve::sub_operation_finished(kind, result, true, bytes);
    result
}

/// Counts and logs a sub-operation that failed before its C-STORE-RQ was sent.
pub(super) fn fail_unsent(kind: &'static str, sop_instance_uid: &str, reason: &str) -> SubOperationResult {
    telemetry::retrieve::sub_operation_failed(kind, sop_instance_uid, None, reason);
    telemetry::retrieve::sub_operation_finished(kind, SubOperationResult::Failed, false, 0);
    SubOperationResult::Failed
}

/// Runs [`Session::read_message`] under the idle timer.
pub(super) async fn read_with_timeout(session: &mut Session) -> Result<Incoming, AssociationError> {
    let idle = session.services.limits.idle_timeout;
    match tokio::time::timeout(idle, session.read_message()).await {
        Ok(incoming) => incoming,
        Err(_) => Err(AssociationError::Timeout { timer: "idle", seconds: idle.as_secs() }),
    }
}

/// Sends a C-GET-RSP or C-MOVE-RSP for `request`; with `failed_uids` a Failed
/// SOP Instance UID List identifier follows the command.
pub(super) async fn send_response(
    session: &mut Session,
    request: &PendingRequest,
    response_status: u16,
    counts: SubOperations,
    failed_uids: &[String],
    comment: Option<&str>,
) -> Result<(), AssociationError> {
    let identifier = if failed_uids.is_empty() {
        None
    } else {
        identifier::failed_uid_list(failed_uids, &request.context.transfer_syntax)
    };
    let mut response = command::c_retrieve_rsp(
        request.command.command_field | 0x8000,
        request.command.message_id.unwrap_or(0),
        &request.context.abstract_syntax,
        response_status,
        counts,
        identifier.is_some(),
    );
    response.error_comment = comment.map(|text| text.chars().take(MAX_ERROR_COMMENT_LEN).collect());
    session.send_command(request.context.id, &response).await?;
    if let Some(bytes) = identifier {
        let max = session.peer_max_pdu_length;
        pdu::encode_pdata_fragments(session.conn.out(), request.context.id, false, &bytes, max);
        session.conn.flush_out().await?;
    }
    Ok(())
}

/// Sends the final response of a retrieve rejected before any sub-operation.
pub(super) async fn send_rejection(
    session: &mut Session,
    request: &PendingRequest,
    kind: &'static str,
    rejection: &Rejection,
    destination_ae: Option<&str>,
) -> Result<(), AssociationError> {
    telemetry::retrieve::retrieve_rejected(kind, rejection.status, &rejection.comment, destination_ae);
    let counts = SubOperations::default();
    send_response(session, request, rejection.status, counts, &[], Some(&rejection.comment)).await
}

/// The outcome of a retrieve's sub-operations, for its final response.
pub(super) struct Finished<'a> {
    pub kind: &'static str,
    pub level: RetrieveLevel,
    pub progress: &'a Progress,
    /// A C-CANCEL-RQ stopped the sub-operations.
    pub cancelled: bool,
    /// The Move Destination of a C-MOVE.
    pub destination_ae: Option<&'a str>,
    /// The Error Comment of the final response.
    pub comment: Option<&'a str>,
}

/// Sends the final response after the sub-operations and logs the retrieve.
pub(super) async fn send_final(
    session: &mut Session,
    request: &PendingRequest,
    finished: Finished<'_>,
) -> Result<(), AssociationError> {
    let Finished { kind, level, progress, cancelled, destination_ae, comment } = finished;
    let final_status = progress.final_status(cancelled);
    telemetry::retrieve::retrieve_finished(kind, level.as_str(), final_status, progress, destination_ae);
    let counts = progress.final_counts(cancelled);
    send_response(session, request, final_status, counts, progress.failed_uids(), comment).await
}
