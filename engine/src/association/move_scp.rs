//! The C-MOVE SCP (PS3.4 annex C.4.2): C-STORE sub-operations on an
//! association nectar opens to the Move Destination, while the requesting
//! association receives Pending responses and may send C-CANCEL-RQ.

use std::collections::BTreeSet;

use nectar_codecs::command::status;

use super::error::AssociationError;
use super::retrieve::{self as shared, Finished, Rejection};
use super::session::{PendingRequest, Session};
use super::store_scu::{ScuError, ScuTimeouts, StoreScu, MAX_PROPOSED_CONTEXTS};
use crate::manifest::RetrieveInstance;
use crate::retrieve::{Progress, RemoteAe, SubOperationResult};
use crate::telemetry;

const KIND: &str = "move";

/// Performs one C-MOVE: the sub-operations, a Pending response after each, and the final response.
pub(super) async fn run(session: &mut Session, request: PendingRequest) -> Result<(), AssociationError> {
    let destination = request.command.move_destination.clone().unwrap_or_default();
    let Some(remote) = session.services.remote_aes.get(&destination).cloned() else {
        let rejection = Rejection {
            status: status::MOVE_DESTINATION_UNKNOWN,
            comment: format!("unknown Move Destination {:?}", destination.trim()),
        };
        return shared::send_rejection(session, &request, KIND, &rejection, Some(destination.trim())).await;
    };
    let resolved = match shared::resolve(session, &request).await {
        Ok(resolved) => resolved,
        Err(rejection) => {
            return shared::send_rejection(session, &request, KIND, &rejection, Some(&remote.ae_title)).await;
        }
    };
    let mut progress = Progress::new(resolved.instances.len());
    let finished = |progress, cancelled, comment| Finished {
        kind: KIND,
        level: resolved.level,
        progress,
        cancelled,
        destination_ae: Some(remote.ae_title.as_str()),
        comment,
    };
    if resolved.instances.is_empty() {
        return shared::send_final(session, &request, finished(&progress, false, None)).await;
    }

    let mut scu = match open_destination(session, &remote, &resolved.instances).await {
        Ok(scu) => scu,
        Err(error) => {
            telemetry::retrieve::destination_failed(&remote.ae_title, &error);
            fail_without_destination(&mut progress, &resolved.instances);
            let comment = format!("failed to associate with {}", remote.ae_title);
            return shared::send_final(session, &request, finished(&progress, false, Some(&comment))).await;
        }
    };

    let outcome = send_all(session, &request, &mut scu, &resolved.instances, &mut progress).await;
    let (cancelled, destination_error) = match outcome {
        Ok(ended) => ended,
        Err(error) => {
            scu.abort().await;
            return Err(error);
        }
    };
    let comment = if let Some(error) = destination_error {
        telemetry::retrieve::destination_failed(&remote.ae_title, &error);
        scu.abort().await;
        Some(format!("the association with {} failed", remote.ae_title))
    } else {
        if let Err(error) = scu.release().await {
            telemetry::retrieve::destination_failed(&remote.ae_title, &error);
        }
        None
    };
    shared::send_final(session, &request, finished(&progress, cancelled, comment.as_deref())).await
}

/// Opens the association to the destination with a context for every
/// (SOP class, stored transfer syntax) pair among `instances`.
async fn open_destination(
    session: &Session,
    remote: &RemoteAe,
    instances: &[RetrieveInstance],
) -> Result<StoreScu, ScuError> {
    let pairs: BTreeSet<(String, String)> = instances
        .iter()
        .map(|i| (i.sop_class_uid.clone(), i.transfer_syntax_uid.clone()))
        .collect();
    if pairs.len() > MAX_PROPOSED_CONTEXTS {
        // NOTE: one association carries at most 128 presentation contexts, so
        // instances of the pairs past that fail as having no accepted context.
        tracing::warn!(pairs = pairs.len(), "a C-MOVE needs more presentation contexts than one association carries");
    }
    let needed: Vec<(String, String)> = pairs.into_iter().collect();
    let limits = &session.services.limits;
    let timeouts = ScuTimeouts { connect: limits.artim_timeout, response: limits.idle_timeout };
    let calling_ae_title = session.services.policy.ae_title.clone();
    StoreScu::open(remote, &calling_ae_title, &needed, limits.max_pdu_length, timeouts).await
}

/// Runs the sub-operations in order, a Pending response after each. Returns
/// whether a C-CANCEL-RQ stopped them, and the error of the destination
/// association if it failed (the instances not yet sent then count as failed).
async fn send_all(
    session: &mut Session,
    request: &PendingRequest,
    scu: &mut StoreScu,
    instances: &[RetrieveInstance],
    progress: &mut Progress,
) -> Result<(bool, Option<ScuError>), AssociationError> {
    let message_id = request.command.message_id.unwrap_or(0);
    let originator_ae_title = session.calling_ae_title.clone();
    let mut cancelled = false;

    for (index, instance) in instances.iter().enumerate() {
        cancelled |= shared::cancel_requested(session, message_id).await?;
        if cancelled {
            break;
        }
        // The next instance is read from disk while this one is sent.
        if let Some(next) = instances.get(index + 1) {
            session.services.store.prefetch(next.location);
        }
        let originator = (originator_ae_title.as_str(), message_id);
        let result = match store_one(session, scu, instance, originator, &mut cancelled).await? {
            Ok(result) => result,
            Err(error) => {
                progress.record(SubOperationResult::Failed, &instance.sop_instance_uid);
                fail_without_destination(progress, &instances[index + 1..]);
                return Ok((cancelled, Some(error)));
            }
        };
        progress.record(result, &instance.sop_instance_uid);
        let counts = progress.pending_counts();
        shared::send_response(session, request, status::PENDING, counts, &[], None).await?;
    }
    Ok((cancelled, None))
}

/// Runs one C-STORE sub-operation on the destination association while
/// watching the requesting association for C-CANCEL-RQ. The outer error ends
/// the requesting association; the inner one is a failed destination.
async fn store_one(
    session: &mut Session,
    scu: &mut StoreScu,
    instance: &RetrieveInstance,
    originator: (&str, u16),
    cancelled: &mut bool,
) -> Result<Result<SubOperationResult, ScuError>, AssociationError> {
    let uid = instance.sop_instance_uid.as_str();
    let Some(context_id) = scu.context_for(&instance.sop_class_uid, &instance.transfer_syntax_uid) else {
        return Ok(Ok(shared::fail_unsent(KIND, uid, "the destination accepted no context for its SOP class and stored transfer syntax")));
    };
    let data_set = match shared::read_data_set(session, instance) {
        Ok(data_set) => data_set,
        Err(reason) => return Ok(Ok(shared::fail_unsent(KIND, uid, &reason))),
    };
    let bytes = data_set.bytes().len() as u64;

    // The sub-operation runs to its end: a C-CANCEL-RQ only stops the next one.
    let store = scu.store(context_id, &instance.sop_class_uid, uid, data_set.bytes(), originator);
    tokio::pin!(store);
    let store_status = loop {
        tokio::select! {
            finished = &mut store => break finished,
            ready = session.readable() => {
                ready?;
                let incoming = shared::read_with_timeout(session).await?;
                *cancelled |= shared::is_cancel(incoming, originator.1)?;
            }
        }
    };
    let store_status = match store_status {
        Ok(store_status) => store_status,
        Err(error) => {
            telemetry::retrieve::sub_operation_failed(KIND, uid, None, &error.to_string());
            telemetry::retrieve::sub_operation_finished(KIND, SubOperationResult::Failed, true, bytes);
            return Ok(Err(error));
        }
    };
    Ok(Ok(shared::sub_operation_done(KIND, uid, store_status, bytes)))
}

/// Counts `instances` as failed sub-operations that were never sent because
/// there is no destination association. The destination error is logged once
/// by the caller instead of once per instance.
fn fail_without_destination(progress: &mut Progress, instances: &[RetrieveInstance]) {
    for instance in instances {
        progress.record(SubOperationResult::Failed, &instance.sop_instance_uid);
        telemetry::retrieve::sub_operation_finished(KIND, SubOperationResult::Failed, false, 0);
    }
}
