//! An established association: P-DATA-TF, release and abort (PS3.8 section 9.3.5 to 9.3.8),
//! with each complete DIMSE command dispatched to its service.

use std::sync::Arc;

use nectar_codecs::command::{self, command_field, status, Command};
use nectar_codecs::negotiation::{query_retrieve, AcceptedContext};
use nectar_codecs::pdu::{self, pdu_type, PdvHeader, PDU_HEADER_LEN, PDV_HEADER_LEN};

use super::accept::{abort_if_protocol, Established};
use super::error::AssociationError;
use super::io::{Connection, Fill};
use super::store_scp::StoreInProgress;
use super::Services;
use crate::shutdown::ShutdownSignals;
use crate::telemetry;

/// Largest command set accepted; real ones are a few hundred bytes.
const MAX_COMMAND_LEN: usize = 64 * 1024;

/// Largest query/retrieve identifier accepted; real ones are a few kilobytes.
const MAX_IDENTIFIER_LEN: usize = 1024 * 1024;

/// The destination of the data set PDVs that follow a command.
enum DataSet {
    /// No command is waiting for a data set.
    None,
    /// A C-STORE is writing its data set into the store.
    Store(Box<StoreInProgress>),
    /// The data set belongs to a command this SCP does not perform; it is read and dropped.
    Discard { context_id: u8 },
    /// The identifier of a C-FIND, C-GET or C-MOVE request, collected in memory.
    Identifier(Box<PendingRequest>),
}

/// A query/retrieve request waiting for the rest of its identifier.
pub(super) struct PendingRequest {
    pub command: Command,
    pub context: AcceptedContext,
    pub identifier: Vec<u8>,
}

/// A message from the peer while an operation (a query or a retrieve) runs.
pub(super) enum Incoming {
    /// A complete command without a data set (C-CANCEL-RQ, C-STORE-RSP), boxed
    /// because it is far larger than the other variants.
    Command { command: Box<Command> },
    /// The peer sent A-ABORT.
    Aborted,
    /// The peer closed the connection.
    Closed,
}

/// The way an association ended.
enum End {
    Released,
    AbortedByPeer,
    Closed,
}

pub struct Session {
    pub(super) conn: Connection,
    pub(super) services: Arc<Services>,
    pub(super) calling_ae_title: String,
    contexts: [Option<AcceptedContext>; 256],
    pub(super) peer_max_pdu_length: u32,
    signals: ShutdownSignals,
    command: Vec<u8>,
    command_context: Option<u8>,
    data_set: DataSet,
    pub(super) writer: crate::storage::SegmentWriter,
}

impl Session {
    pub fn new(
        conn: Connection,
        established: Established,
        services: Arc<Services>,
        signals: ShutdownSignals,
    ) -> Session {
        let mut contexts: [Option<AcceptedContext>; 256] = std::array::from_fn(|_| None);
        for context in established.contexts {
            let slot = context.id as usize;
            contexts[slot] = Some(context);
        }
        let writer = services.store.new_writer();
        Session {
            conn,
            services,
            calling_ae_title: established.calling_ae_title,
            contexts,
            peer_max_pdu_length: established.peer_max_pdu_length,
            signals,
            command: Vec::new(),
            command_context: None,
            data_set: DataSet::None,
            writer,
        }
    }

    /// Serves the association until release, abort, error or shutdown deadline.
    pub async fn run(mut self) {
        let outcome = self.serve().await;
        if let DataSet::Store(_) = self.data_set {
            self.writer.abort_record();
        }
        match outcome {
            Ok(End::Released) => telemetry::association_released(),
            Ok(End::AbortedByPeer) => telemetry::association_aborted_by_peer(),
            Ok(End::Closed) => telemetry::association_closed_by_peer(),
            Err(error) => {
                telemetry::association_failed(&error);
                if let AssociationError::ShutdownDeadline = error {
                    let reason = pdu::abort_reason::NOT_SPECIFIED;
                    let _ = self.conn.send(&pdu::encode_abort(Some(reason))).await;
                    self.conn.shutdown().await;
                } else {
                    abort_if_protocol(&mut self.conn, &error).await;
                }
            }
        }
    }

    async fn serve(&mut self) -> Result<End, AssociationError> {
        let idle = self.services.limits.idle_timeout;
        loop {
            let mut abort = self.signals.abort.clone();
            let next = tokio::select! {
                biased;
                _ = abort.wait_for(|aborting| *aborting) => return Err(AssociationError::ShutdownDeadline),
                filled = tokio::time::timeout(idle, self.conn.fill(PDU_HEADER_LEN)) => filled,
            };
            let Ok(filled) = next else {
                return Err(AssociationError::Timeout { timer: "idle", seconds: idle.as_secs() });
            };
            if filled? == Fill::Closed {
                return Ok(End::Closed);
            }
            let header = self.conn.read_exact_buffered(PDU_HEADER_LEN).await?;
            let header = pdu::parse_pdu_header(header).expect("six bytes were read");

            match header.pdu_type {
                pdu_type::P_DATA_TF => self.read_pdata(header.length).await?,
                pdu_type::RELEASE_RQ => {
                    self.conn.skip(header.length as usize).await?;
                    self.conn.send(&pdu::encode_release_rp()).await?;
                    self.conn.shutdown().await;
                    return Ok(End::Released);
                }
                pdu_type::ABORT => return Ok(End::AbortedByPeer),
                pdu_type::ASSOCIATE_RQ
                | pdu_type::ASSOCIATE_AC
                | pdu_type::ASSOCIATE_RJ
                | pdu_type::RELEASE_RP => {
                    return Err(AssociationError::unexpected_pdu(format!(
                        "PDU type {:#04x} on an established association",
                        header.pdu_type
                    )));
                }
                other => {
                    return Err(AssociationError::unrecognized_pdu(format!("unknown PDU type {other:#04x}")));
                }
            }
        }
    }

    /// Reads the PDVs of one P-DATA-TF PDU of `length` bytes (PS3.8 section 9.3.5).
    async fn read_pdata(&mut self, length: u32) -> Result<(), AssociationError> {
        let max = self.services.limits.max_pdu_length;
        if max != 0 && length > max {
            return Err(AssociationError::invalid_parameter(format!(
                "P-DATA-TF length {length} exceeds the negotiated maximum {max}"
            )));
        }
        let mut remaining = length as usize;
        while remaining > 0 {
            if remaining < PDV_HEADER_LEN {
                return Err(AssociationError::invalid_parameter(format!(
                    "{remaining} bytes left in P-DATA-TF, too few for a PDV header"
                )));
            }
            let bytes = self.conn.read_exact_buffered(PDV_HEADER_LEN).await?;
            let pdv = match pdu::parse_pdv_header(bytes) {
                Ok(Some(pdv)) => pdv,
                Ok(None) => unreachable!("six bytes were read"),
                Err(error) => return Err(AssociationError::invalid_parameter(error.to_string())),
            };
            remaining -= PDV_HEADER_LEN;
            let data_len = pdv.data_len();
            if data_len > remaining {
                return Err(AssociationError::invalid_parameter(format!(
                    "PDV of {data_len} bytes overruns its P-DATA-TF ({remaining} bytes left)"
                )));
            }
            if self.contexts[pdv.context_id as usize].is_none() {
                return Err(AssociationError::invalid_parameter(format!(
                    "PDV on presentation context {} which was not accepted",
                    pdv.context_id
                )));
            }
            if pdv.is_command {
                self.read_command_fragment(pdv).await?;
            } else {
                self.read_data_fragment(pdv).await?;
            }
            remaining -= data_len;
        }
        Ok(())
    }

    async fn read_command_fragment(&mut self, pdv: PdvHeader) -> Result<(), AssociationError> {
        if !matches!(self.data_set, DataSet::None) {
            return Err(AssociationError::unexpected_pdu("command PDV while a data set was still arriving"));
        }
        if let Some(context) = self.command_context {
            if context != pdv.context_id {
                return Err(AssociationError::invalid_parameter("command fragments on two presentation contexts"));
            }
        }
        let data_len = pdv.data_len();
        if self.command.len() + data_len > MAX_COMMAND_LEN {
            return Err(AssociationError::invalid_parameter(format!(
                "command set longer than {MAX_COMMAND_LEN} bytes"
            )));
        }
        let start = self.command.len();
        self.command.resize(start + data_len, 0);
        self.conn.read_into(&mut self.command[start..]).await?;
        self.command_context = Some(pdv.context_id);
        if pdv.is_last {
            let bytes = std::mem::take(&mut self.command);
            self.command_context = None;
            let result = self.dispatch_command(pdv.context_id, &bytes).await;
            self.command = bytes;
            self.command.clear();
            result?;
        }
        Ok(())
    }

    async fn read_data_fragment(&mut self, pdv: PdvHeader) -> Result<(), AssociationError> {
        let data_len = pdv.data_len();
        match &mut self.data_set {
            DataSet::None => Err(AssociationError::unexpected_pdu("data set PDV without a command")),
            DataSet::Discard { context_id } => {
                if *context_id != pdv.context_id {
                    return Err(AssociationError::invalid_parameter("data set PDV on another presentation context"));
                }
                self.conn.skip(data_len).await?;
                if pdv.is_last {
                    self.data_set = DataSet::None;
                }
                Ok(())
            }
            DataSet::Identifier(pending) => {
                if pending.context.id != pdv.context_id {
                    return Err(AssociationError::invalid_parameter("data set PDV on another presentation context"));
                }
                if pending.identifier.len() + data_len > MAX_IDENTIFIER_LEN {
                    return Err(AssociationError::invalid_parameter(format!(
                        "identifier longer than {MAX_IDENTIFIER_LEN} bytes"
                    )));
                }
                let start = pending.identifier.len();
                pending.identifier.resize(start + data_len, 0);
                self.conn.read_into(&mut pending.identifier[start..]).await?;
                if pdv.is_last {
                    let DataSet::Identifier(pending) = std::mem::replace(&mut self.data_set, DataSet::None) else {
                        unreachable!("matched above");
                    };
                    self.run_query_retrieve(*pending).await?;
                }
                Ok(())
            }
            DataSet::Store(store) => {
                if store.context_id != pdv.context_id {
                    return Err(AssociationError::invalid_parameter("data set PDV on another presentation context"));
                }
                self.receive_store_fragment(data_len).await?;
                if pdv.is_last {
                    let DataSet::Store(store) = std::mem::replace(&mut self.data_set, DataSet::None) else {
                        unreachable!("matched above");
                    };
                    self.finish_store(*store).await?;
                }
                Ok(())
            }
        }
    }

    async fn dispatch_command(&mut self, context_id: u8, bytes: &[u8]) -> Result<(), AssociationError> {
        let command = match command::decode_command(bytes) {
            Ok(command) => command,
            Err(error) => {
                return Err(AssociationError::invalid_parameter(format!("invalid command set: {error}")));
            }
        };
        let context = self.contexts[context_id as usize].clone().expect("checked in read_pdata");
        let command_field = command.command_field;
        match command_field {
            command_field::C_ECHO_RQ => self.answer_echo(&command, &context).await,
            command_field::C_STORE_RQ => {
                self.begin_store(&command, &context).await
            }
            command_field::C_FIND_RQ | command_field::C_GET_RQ | command_field::C_MOVE_RQ
                if query_retrieve::ALL.contains(&context.abstract_syntax.as_str()) =>
            {
                if !command.has_data_set() {
                    let response = query_retrieve_without_identifier(&command);
                    return self.send_command(context.id, &response).await;
                }
                self.data_set = DataSet::Identifier(Box::new(PendingRequest {
                    command,
                    context,
                    identifier: Vec::new(),
                }));
                Ok(())
            }
            // A C-CANCEL-RQ for an operation that has ended already.
            command_field::C_CANCEL_RQ => Ok(()),
            _ => self.answer_unsupported(&command, &context).await,
        }
    }

    async fn answer_echo(&mut self, command: &Command, context: &AcceptedContext) -> Result<(), AssociationError> {
        let message_id = command.message_id.unwrap_or(0);
        let response = command::c_echo_rsp(message_id, &context.abstract_syntax, status::SUCCESS);
        if command.has_data_set() {
            self.data_set = DataSet::Discard { context_id: context.id };
        }
        telemetry::echo_answered();
        self.send_command(context.id, &response).await
    }

    /// Runs a C-FIND, C-GET or C-MOVE to its final response.
    async fn run_query_retrieve(&mut self, request: PendingRequest) -> Result<(), AssociationError> {
        match request.command.command_field {
            command_field::C_FIND_RQ => super::find_scp::run(self, request).await,
            command_field::C_GET_RQ => super::get_scp::run(self, request).await,
            _ => super::move_scp::run(self, request).await,
        }
    }

    /// Waits until the peer has sent at least the start of a PDU. Cancel-safe,
    /// so an operation can `select!` on it beside its own work, then call
    /// [`Session::read_message`].
    /// Fails with [`AssociationError::ShutdownDeadline`] once the server's
    /// shutdown deadline has passed, so a running operation ends with A-ABORT.
    pub(super) async fn readable(&mut self) -> Result<(), AssociationError> {
        let mut abort = self.signals.abort.clone();
        tokio::select! {
            biased;
            _ = abort.wait_for(|aborting| *aborting) => Err(AssociationError::ShutdownDeadline),
            filled = self.conn.fill(PDU_HEADER_LEN) => {
                filled?;
                Ok(())
            }
        }
    }

    /// Reads PDUs until the peer has sent one complete command without a data
    /// set, an A-ABORT, or closed the connection. Used while an operation runs,
    /// when the peer may only send C-CANCEL-RQ or C-STORE-RSP.
    pub(super) async fn read_message(&mut self) -> Result<Incoming, AssociationError> {
        let mut abort = self.signals.abort.clone();
        tokio::select! {
            biased;
            _ = abort.wait_for(|aborting| *aborting) => Err(AssociationError::ShutdownDeadline),
            message = self.read_message_until_complete() => message,
        }
    }

    async fn read_message_until_complete(&mut self) -> Result<Incoming, AssociationError> {
        let mut command = Vec::new();
        loop {
            if self.conn.fill(PDU_HEADER_LEN).await? == Fill::Closed {
                return Ok(Incoming::Closed);
            }
            let header = self.conn.read_exact_buffered(PDU_HEADER_LEN).await?;
            let header = pdu::parse_pdu_header(header).expect("six bytes were read");
            match header.pdu_type {
                pdu_type::P_DATA_TF => {}
                pdu_type::ABORT => return Ok(Incoming::Aborted),
                other => {
                    return Err(AssociationError::unexpected_pdu(format!(
                        "PDU type {other:#04x} while an operation is running"
                    )));
                }
            }
            let mut remaining = header.length as usize;
            while remaining > 0 {
                if remaining < PDV_HEADER_LEN {
                    return Err(AssociationError::invalid_parameter("P-DATA-TF too short for a PDV header"));
                }
                let bytes = self.conn.read_exact_buffered(PDV_HEADER_LEN).await?;
                let pdv = pdu::parse_pdv_header(bytes)
                    .map_err(|error| AssociationError::invalid_parameter(error.to_string()))?
                    .expect("six bytes were read");
                remaining -= PDV_HEADER_LEN;
                let data_len = pdv.data_len();
                if data_len > remaining || command.len() + data_len > MAX_COMMAND_LEN {
                    return Err(AssociationError::invalid_parameter("PDV overruns its P-DATA-TF"));
                }
                if !pdv.is_command {
                    return Err(AssociationError::unexpected_pdu("data set PDV while an operation is running"));
                }
                let start = command.len();
                command.resize(start + data_len, 0);
                self.conn.read_into(&mut command[start..]).await?;
                remaining -= data_len;
                if pdv.is_last {
                    if remaining > 0 {
                        return Err(AssociationError::invalid_parameter("PDVs after the last command fragment"));
                    }
                    let command = command::decode_command(&command)
                        .map_err(|error| AssociationError::invalid_parameter(format!("invalid command set: {error}")))?;
                    if command.has_data_set() {
                        return Err(AssociationError::unexpected_pdu(
                            "a command with a data set while an operation is running",
                        ));
                    }
                    return Ok(Incoming::Command { command: Box::new(command) });
                }
            }
        }
    }

    /// Returns every accepted presentation context.
    pub(super) fn contexts(&self) -> impl Iterator<Item = &AcceptedContext> {
        self.contexts.iter().flatten()
    }

    /// Responds to a command this SCP does not perform with Unrecognized Operation (PS3.7 section C.4).
    async fn answer_unsupported(&mut self, command: &Command, context: &AcceptedContext) -> Result<(), AssociationError> {
        if command.command_field & 0x8000 != 0 {
            return Err(AssociationError::unexpected_pdu(format!(
                "response command {:#06x} sent to an SCP",
                command.command_field
            )));
        }
        if command.has_data_set() {
            self.data_set = DataSet::Discard { context_id: context.id };
        }
        telemetry::command_unsupported(command.command_field);
        let response = Command {
            command_field: command.command_field | 0x8000,
            message_id_being_responded_to: command.message_id,
            affected_sop_class_uid: command.affected_sop_class_uid.clone().or_else(|| command.requested_sop_class_uid.clone()),
            data_set_type: command::NO_DATA_SET,
            status: Some(status::UNRECOGNIZED_OPERATION),
            ..Command::default()
        };
        self.send_command(context.id, &response).await
    }

    /// Encodes `response` into P-DATA-TF PDUs within the peer's maximum length and sends it.
    pub(super) async fn send_command(&mut self, context_id: u8, response: &Command) -> Result<(), AssociationError> {
        let encoded = command::encode_command(response);
        let max = self.peer_max_pdu_length;
        pdu::encode_pdata_fragments(self.conn.out(), context_id, true, &encoded, max);
        self.conn.flush_out().await?;
        Ok(())
    }

    pub(super) fn set_store(&mut self, store: StoreInProgress) {
        self.data_set = DataSet::Store(Box::new(store));
    }

    pub(super) fn store_in_progress(&mut self) -> Option<&mut StoreInProgress> {
        match &mut self.data_set {
            DataSet::Store(store) => Some(store),
            _ => None,
        }
    }
}

/// Builds the failure response to a C-FIND, C-GET or C-MOVE request that
/// carries no identifier (PS3.7 C.5.6: the identifier is mandatory).
fn query_retrieve_without_identifier(command: &Command) -> Command {
    Command {
        command_field: command.command_field | 0x8000,
        message_id_being_responded_to: command.message_id,
        affected_sop_class_uid: command.affected_sop_class_uid.clone(),
        data_set_type: command::NO_DATA_SET,
        status: Some(status::DATA_SET_DOES_NOT_MATCH_SOP_CLASS),
        error_comment: Some("the request carries no identifier".to_owned()),
        ..Command::default()
    }
}
