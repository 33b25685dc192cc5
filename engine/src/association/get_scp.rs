//! The C-GET SCP (PS3.4 annex C.4.3): C-STORE sub-operations on the
//! requesting association, on contexts where the peer took the SCP role.

use nectar_codecs::command::{self, command_field};
use nectar_codecs::negotiation::AcceptedContext;

use super::error::AssociationError;
use super::retrieve::{self as shared, Finished};
use super::session::{Incoming, PendingRequest, Session};
use crate::manifest::RetrieveInstance;
use crate::retrieve::{Progress, SubOperationResult};

const KIND: &str = "get";

/// Performs one C-GET: the sub-operations, a Pending response after each, and the final response.
pub(super) async fn run(session: &mut Session, request: PendingRequest) -> Result<(), AssociationError> {
    let resolved = match shared::resolve(session, &request).await {
        Ok(resolved) => resolved,
        Err(rejection) => return shared::send_rejection(session, &request, KIND, &rejection, None).await,
    };
    let message_id = request.command.message_id.unwrap_or(0);
    let mut progress = Progress::new(resolved.instances.len());
    let mut cancelled = false;

    for (index, instance) in resolved.instances.iter().enumerate() {
        cancelled |= shared::cancel_requested(session, message_id).await?;
        if cancelled {
            break;
        }
        // The next instance is read from disk while this one is sent.
        if let Some(next) = resolved.instances.get(index + 1) {
            session.services.store.prefetch(next.location);
        }
        let store_message_id = (index % usize::from(u16::MAX)) as u16 + 1;
        let result = store_one(session, instance, store_message_id, message_id, &mut cancelled).await?;
        progress.record(result, &instance.sop_instance_uid);
        let counts = progress.pending_counts();
        shared::send_response(session, &request, command::status::PENDING, counts, &[], None).await?;
    }

    let finished = Finished {
        kind: KIND,
        level: resolved.level,
        progress: &progress,
        cancelled,
        destination_ae: None,
        comment: None,
    };
    shared::send_final(session, &request, finished).await
}

/// Finds the context a sub-operation for `instance` may use: its SOP class,
/// its stored transfer syntax (nectar does not transcode), and the SCP role
/// accepted by the peer.
fn store_context<'a>(session: &'a Session, instance: &RetrieveInstance) -> Option<&'a AcceptedContext> {
    session.contexts().find(|context| {
        context.requestor_is_scp
            && context.abstract_syntax == instance.sop_class_uid
            && context.transfer_syntax == instance.transfer_syntax_uid
    })
}

/// Runs one C-STORE sub-operation: C-STORE-RQ, the data set, then the
/// C-STORE-RSP. A C-CANCEL-RQ that arrives meanwhile sets `cancelled`.
async fn store_one(
    session: &mut Session,
    instance: &RetrieveInstance,
    store_message_id: u16,
    get_message_id: u16,
    cancelled: &mut bool,
) -> Result<SubOperationResult, AssociationError> {
    let uid = instance.sop_instance_uid.as_str();
    let Some(context_id) = store_context(session, instance).map(|context| context.id) else {
        let reason = "no accepted presentation context with the SCP role for its SOP class and stored transfer syntax";
        return Ok(shared::fail_unsent(KIND, uid, reason));
    };
    let data_set = match shared::read_data_set(session, instance) {
        Ok(data_set) => data_set,
        Err(reason) => return Ok(shared::fail_unsent(KIND, uid, &reason)),
    };

    let request = command::c_store_rq(store_message_id, &instance.sop_class_uid, uid, None);
    session.send_command(context_id, &request).await?;
    let max = session.peer_max_pdu_length;
    session.conn.send_pdata_borrowed(context_id, false, data_set.bytes(), max).await?;
    let bytes = data_set.bytes().len() as u64;
    drop(data_set);

    let store_status = loop {
        match shared::read_with_timeout(session).await? {
            Incoming::Command { command, .. }
                if command.command_field == command_field::C_STORE_RSP
                    && command.message_id_being_responded_to == Some(store_message_id) =>
            {
                break command.status.unwrap_or(u16::MAX);
            }
            other => *cancelled |= shared::is_cancel(other, get_message_id)?,
        }
    };
    Ok(shared::sub_operation_done(KIND, uid, store_status, bytes))
}

