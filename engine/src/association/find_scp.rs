//! The C-FIND SCP (PS3.4 annex C, PS3.7 section 9.1.2) for the Patient Root
//! and Study Root Query/Retrieve information models.
//!
//! The identifier becomes a [`Query`]. The query runner streams matches from
//! a blocking thread, and each match goes out as a Pending response as soon
//! as it arrives. While the query runs the SCP also watches the socket for a
//! C-CANCEL-RQ, which ends the query with status Cancel (0xFE00).

use std::time::Instant;

use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use nectar_codecs::command::{self, command_field, status, Command};
use nectar_codecs::negotiation::query_retrieve;
use nectar_codecs::pdu;

use super::error::AssociationError;
use super::session::{Incoming, PendingRequest, Session};
use crate::query::{identifier, runner, Model, Query, QueryError, ResultRow};
use crate::telemetry;

/// Matches buffered between the query thread and the association.
const RESULT_QUEUE: usize = 32;

/// Responds to one C-FIND-RQ with its Pending responses and the final one.
pub(super) async fn run(session: &mut Session, request: PendingRequest) -> Result<(), AssociationError> {
    let started = Instant::now();
    let call = Call {
        context_id: request.context.id,
        message_id: request.command.message_id.unwrap_or(0),
        sop_class_uid: request.context.abstract_syntax.clone(),
        transfer_syntax_uid: request.context.transfer_syntax.clone(),
    };
    let query = match parse_request(&request) {
        Ok(query) => Query { retrieve_ae_title: Some(session.services.policy.ae_title.clone()), ..query },
        Err(error) => {
            telemetry::find::query_failed("unknown", error.status, &error.comment, started.elapsed());
            return call.send_final(session, error.status, Some(error.comment)).await;
        }
    };
    let level = query.level.label();
    let services = session.services.clone();
    let open = move || {
        // Instances acknowledged before the query are visible to it.
        services
            .manifest
            .flush()
            .map_err(|error| QueryError::unable_to_process(format!("manifest flush failed: {error}")))?;
        services
            .manifest
            .read_connection()
            .map_err(|error| QueryError::unable_to_process(format!("manifest read connection failed: {error}")))
    };
    let character_set = query.specific_character_set.clone();
    let mut matches = runner::spawn(query, session.services.store.clone(), open, RESULT_QUEUE);

    // `readable` fails at the server's shutdown deadline, which ends the query with A-ABORT.
    let mut sent: u64 = 0;
    let final_status = loop {
        tokio::select! {
            biased;
            ready = session.readable() => {
                ready?;
                if call.cancelled(session.read_message().await?)? {
                    break (status::CANCEL, None);
                }
            }
            next = matches.recv() => match next {
                Some(Ok(row)) => {
                    call.send_pending(session, &row, character_set.as_deref()).await?;
                    sent += 1;
                }
                Some(Err(error)) => break (error.status, Some(error.comment)),
                None => break (status::SUCCESS, None),
            },
        }
    };
    drop(matches);

    let (final_status, comment) = final_status;
    match &comment {
        Some(comment) => telemetry::find::query_failed(level, final_status, comment, started.elapsed()),
        None => telemetry::find::query_finished(level, final_status, sent, started.elapsed()),
    }
    call.send_final(session, final_status, comment).await
}

/// Decodes the identifier and builds the query from it.
fn parse_request(request: &PendingRequest) -> Result<Query, QueryError> {
    let model = match request.context.abstract_syntax.as_str() {
        query_retrieve::PATIENT_ROOT_FIND => Model::PatientRoot,
        query_retrieve::STUDY_ROOT_FIND => Model::StudyRoot,
        other => {
            return Err(QueryError {
                status: status::SOP_CLASS_NOT_SUPPORTED,
                comment: format!("C-FIND on presentation context of {other}, which is not a FIND SOP class"),
            });
        }
    };
    let transfer_syntax = TransferSyntaxRegistry
        .get(&request.context.transfer_syntax)
        .ok_or_else(|| {
            QueryError::unable_to_process(format!("unknown transfer syntax {}", request.context.transfer_syntax))
        })?;
    let object = InMemDicomObject::read_dataset_with_ts(request.identifier.as_slice(), transfer_syntax)
        .map_err(|error| QueryError::invalid_identifier(format!("the identifier cannot be decoded: {error}")))?;
    identifier::parse(&object, model)
}

/// The C-FIND-RQ in progress.
struct Call {
    context_id: u8,
    message_id: u16,
    sop_class_uid: String,
    transfer_syntax_uid: String,
}

impl Call {
    /// Tells whether `incoming` cancels this query. A C-CANCEL-RQ for another
    /// message is ignored; an abort or a closed connection ends the association.
    fn cancelled(&self, incoming: Incoming) -> Result<bool, AssociationError> {
        match incoming {
            Incoming::Command { command, .. } if command.command_field == command_field::C_CANCEL_RQ => {
                Ok(command.message_id_being_responded_to == Some(self.message_id))
            }
            Incoming::Command { command, .. } => Err(AssociationError::unexpected_pdu(format!(
                "command {:#06x} while a C-FIND is running",
                command.command_field
            ))),
            Incoming::Aborted => Err(AssociationError::Io(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "the peer sent A-ABORT during a C-FIND",
            ))),
            Incoming::Closed => Err(AssociationError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the peer closed the connection during a C-FIND",
            ))),
        }
    }

    /// Sends a Pending response (0xFF00) with the identifier of one match.
    async fn send_pending(
        &self,
        session: &mut Session,
        row: &ResultRow,
        request_character_set: Option<&str>,
    ) -> Result<(), AssociationError> {
        let object = identifier::to_identifier(row, request_character_set);
        let transfer_syntax = TransferSyntaxRegistry
            .get(&self.transfer_syntax_uid)
            .expect("the transfer syntax was resolved when the request was parsed");
        let mut data = Vec::new();
        if let Err(error) = object.write_dataset_with_ts(&mut data, transfer_syntax) {
            // A value that cannot be encoded is a bug here, not the peer's fault.
            return Err(AssociationError::Io(std::io::Error::other(format!(
                "C-FIND response encoding failed: {error}"
            ))));
        }
        let response = command::c_find_rsp(self.message_id, &self.sop_class_uid, status::PENDING, true);
        let encoded = command::encode_command(&response);
        let max = session.peer_max_pdu_length;
        pdu::encode_pdata_fragments(session.conn.out(), self.context_id, true, &encoded, max);
        pdu::encode_pdata_fragments(session.conn.out(), self.context_id, false, &data, max);
        session.conn.flush_out().await?;
        Ok(())
    }

    /// Sends the final response: Success, Cancel or a failure with its Error Comment.
    async fn send_final(
        &self,
        session: &mut Session,
        status: u16,
        comment: Option<String>,
    ) -> Result<(), AssociationError> {
        let mut response: Command = command::c_find_rsp(self.message_id, &self.sop_class_uid, status, false);
        response.error_comment = comment.map(|comment| truncate_comment(&comment));
        session.send_command(self.context_id, &response).await
    }
}

/// Error Comment (0000,0902) is LO: at most 64 characters.
fn truncate_comment(comment: &str) -> String {
    comment.chars().take(64).collect()
}
