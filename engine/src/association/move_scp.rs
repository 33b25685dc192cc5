//! The C-MOVE SCP (PS3.4 annex C).

use nectar_codecs::command::{status, Command};

use super::error::AssociationError;
use super::session::{PendingRequest, Session};

/// Answers one C-MOVE-RQ with its responses, up to the final one.
pub(super) async fn run(session: &mut Session, request: PendingRequest) -> Result<(), AssociationError> {
    let response = Command {
        command_field: request.command.command_field | 0x8000,
        message_id_being_responded_to: request.command.message_id,
        affected_sop_class_uid: Some(request.context.abstract_syntax.clone()),
        data_set_type: nectar_codecs::command::NO_DATA_SET,
        status: Some(status::UNRECOGNIZED_OPERATION),
        ..Command::default()
    };
    session.send_command(request.context.id, &response).await
}
