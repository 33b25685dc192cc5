//! nectar as a Storage SCU on an association it opens to a C-MOVE
//! destination (PS3.8 section 9.3; PS3.4 annex B): negotiation, C-STORE
//! sub-operations and release, each step under a timer.

use std::time::Duration;

use dicom_ul::pdu::{
    AssociationRQ, Pdu, PDataValueType, PresentationContextProposed, PresentationContextResultReason,
    UserVariableItem,
};
use nectar_codecs::command::{self, command_field};
use nectar_codecs::negotiation::{DICOM_APPLICATION_CONTEXT, IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME};
use nectar_codecs::pdu::{self, PDU_HEADER_LEN};
use tokio::net::TcpStream;

use super::io::{Connection, Fill};
use crate::retrieve::RemoteAe;

/// Largest PDU read from the destination. It sends only A-ASSOCIATE-AC and
/// C-STORE-RSP command sets, which are a few hundred bytes.
const MAX_INCOMING_PDU_LEN: u32 = 1024 * 1024;

/// Presentation context IDs are odd numbers from 1 to 255 (PS3.8 9.3.2.2).
pub(super) const MAX_PROPOSED_CONTEXTS: usize = 128;

#[derive(Debug, thiserror::Error)]
pub(super) enum ScuError {
    #[error("failed to connect to {address}: {source}")]
    Connect { address: String, source: std::io::Error },
    #[error("{step} timed out after {seconds} s")]
    Timeout { step: &'static str, seconds: u64 },
    #[error("the destination rejected the association ({0})")]
    Rejected(String),
    #[error("the destination aborted the association")]
    Aborted,
    #[error("the destination closed the connection")]
    Closed,
    #[error("protocol error from the destination: {0}")]
    Protocol(String),
    #[error("socket I/O failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Timers of the outgoing association.
#[derive(Debug, Clone, Copy)]
pub(super) struct ScuTimeouts {
    /// For the TCP connect and for the A-ASSOCIATE-AC.
    pub connect: Duration,
    /// For each C-STORE-RSP and for the A-RELEASE-RP.
    pub response: Duration,
}

/// An accepted context of the outgoing association.
struct ScuContext {
    id: u8,
    sop_class_uid: String,
    transfer_syntax_uid: String,
}

/// An established association from nectar to a Storage SCP.
pub(super) struct StoreScu {
    conn: Connection,
    contexts: Vec<ScuContext>,
    peer_max_pdu_length: u32,
    timeouts: ScuTimeouts,
    next_message_id: u16,
}

impl StoreScu {
    /// Connects to `remote` and negotiates one presentation context per
    /// (SOP class, transfer syntax) pair of `needed`, at most
    /// [`MAX_PROPOSED_CONTEXTS`] of them.
    pub async fn open(
        remote: &RemoteAe,
        calling_ae_title: &str,
        needed: &[(String, String)],
        max_pdu_length: u32,
        timeouts: ScuTimeouts,
    ) -> Result<StoreScu, ScuError> {
        let address = format!("{}:{}", remote.host, remote.port);
        let connect = TcpStream::connect((remote.host.as_str(), remote.port));
        let stream = within(timeouts.connect, "connect", connect)
            .await?
            .map_err(|source| ScuError::Connect { address, source })?;
        // Failing only costs latency, so the error is ignored.
        let _ = stream.set_nodelay(true);
        let mut conn = Connection::new(stream);

        let request = associate_rq(calling_ae_title, &remote.ae_title, needed, max_pdu_length);
        let bytes = pdu::encode_pdu(&request.into()).map_err(|error| ScuError::Protocol(error.to_string()))?;
        conn.send(&bytes).await?;
        let ac = match within(timeouts.connect, "association negotiation", read_pdu(&mut conn)).await?? {
            Pdu::AssociationAC(ac) => ac,
            Pdu::AssociationRJ(rj) => return Err(ScuError::Rejected(format!("{:?}, {:?}", rj.result, rj.source))),
            Pdu::AbortRQ { .. } => return Err(ScuError::Aborted),
            other => return Err(ScuError::Protocol(format!("{} instead of A-ASSOCIATE-AC", other.short_description()))),
        };

        let contexts = ac
            .presentation_contexts
            .iter()
            .filter(|result| result.reason == PresentationContextResultReason::Acceptance)
            .filter_map(|result| {
                let index = usize::from(result.id / 2);
                let (sop_class_uid, proposed_syntax) = needed.get(index)?;
                let accepted_syntax = result.transfer_syntax.trim_matches(['\0', ' ']);
                (accepted_syntax == proposed_syntax.as_str()).then(|| ScuContext {
                    id: result.id,
                    sop_class_uid: sop_class_uid.clone(),
                    transfer_syntax_uid: proposed_syntax.clone(),
                })
            })
            .collect();
        let peer_max_pdu_length = ac
            .user_variables
            .iter()
            .find_map(|item| match item {
                UserVariableItem::MaxLength(length) => Some(*length),
                _ => None,
            })
            .unwrap_or(0);
        Ok(StoreScu { conn, contexts, peer_max_pdu_length, timeouts, next_message_id: 1 })
    }

    /// Finds the accepted context for this SOP class and transfer syntax.
    pub fn context_for(&self, sop_class_uid: &str, transfer_syntax_uid: &str) -> Option<u8> {
        self.contexts
            .iter()
            .find(|c| c.sop_class_uid == sop_class_uid && c.transfer_syntax_uid == transfer_syntax_uid)
            .map(|c| c.id)
    }

    /// Sends one C-STORE-RQ with `data_set` on `context_id` and returns the
    /// status of its C-STORE-RSP.
    pub async fn store(
        &mut self,
        context_id: u8,
        sop_class_uid: &str,
        sop_instance_uid: &str,
        data_set: &[u8],
        move_originator: (&str, u16),
    ) -> Result<u16, ScuError> {
        let message_id = self.next_message_id;
        self.next_message_id = self.next_message_id.wrapping_add(1).max(1);
        let request = command::c_store_rq(message_id, sop_class_uid, sop_instance_uid, Some(move_originator));
        let encoded = command::encode_command(&request);
        self.conn.send_pdata_borrowed(context_id, true, &encoded, self.peer_max_pdu_length).await?;
        self.conn.send_pdata_borrowed(context_id, false, data_set, self.peer_max_pdu_length).await?;

        let response = within(self.timeouts.response, "C-STORE-RSP", self.read_command()).await??;
        if response.command_field != command_field::C_STORE_RSP
            || response.message_id_being_responded_to != Some(message_id)
        {
            return Err(ScuError::Protocol(format!(
                "expected the C-STORE-RSP to message {message_id}, received command {:#06x}",
                response.command_field
            )));
        }
        Ok(response.status.unwrap_or(u16::MAX))
    }

    /// Reads P-DATA-TF PDUs until one command set is complete.
    async fn read_command(&mut self) -> Result<command::Command, ScuError> {
        let mut bytes = Vec::new();
        loop {
            let values = match read_pdu(&mut self.conn).await? {
                Pdu::PData { data } => data,
                Pdu::AbortRQ { .. } => return Err(ScuError::Aborted),
                other => return Err(ScuError::Protocol(format!("{} instead of P-DATA-TF", other.short_description()))),
            };
            for value in values {
                if value.value_type != PDataValueType::Command {
                    return Err(ScuError::Protocol("a data set PDV instead of a C-STORE-RSP".into()));
                }
                bytes.extend_from_slice(&value.data);
                if value.is_last {
                    return command::decode_command(&bytes).map_err(|error| ScuError::Protocol(error.to_string()));
                }
            }
        }
    }

    /// Releases the association (PS3.8 9.3.6, 9.3.7), waiting for A-RELEASE-RP
    /// under the response timer; on any error the connection is just closed.
    pub async fn release(mut self) -> Result<(), ScuError> {
        let result = async {
            self.conn.send(&pdu::encode_release_rq()).await?;
            match within(self.timeouts.response, "A-RELEASE-RP", read_pdu(&mut self.conn)).await?? {
                Pdu::ReleaseRP => Ok(()),
                other => Err(ScuError::Protocol(format!("{} instead of A-RELEASE-RP", other.short_description()))),
            }
        }
        .await;
        self.conn.shutdown().await;
        result
    }

    /// Sends A-ABORT and closes the connection.
    pub async fn abort(mut self) {
        // The association is being dropped, so a failed send changes nothing.
        let _ = self.conn.send(&pdu::encode_abort(None)).await;
        self.conn.shutdown().await;
    }
}

fn associate_rq(calling_ae_title: &str, called_ae_title: &str, needed: &[(String, String)], max_pdu_length: u32) -> AssociationRQ {
    let presentation_contexts = needed
        .iter()
        .take(MAX_PROPOSED_CONTEXTS)
        .enumerate()
        .map(|(index, (sop_class_uid, transfer_syntax_uid))| PresentationContextProposed {
            id: (index * 2 + 1) as u8,
            abstract_syntax: sop_class_uid.clone(),
            transfer_syntaxes: vec![transfer_syntax_uid.clone()],
        })
        .collect();
    AssociationRQ {
        protocol_version: 1,
        calling_ae_title: calling_ae_title.to_owned(),
        called_ae_title: called_ae_title.to_owned(),
        application_context_name: DICOM_APPLICATION_CONTEXT.to_owned(),
        presentation_contexts,
        user_variables: vec![
            UserVariableItem::MaxLength(max_pdu_length),
            UserVariableItem::ImplementationClassUID(IMPLEMENTATION_CLASS_UID.to_owned()),
            UserVariableItem::ImplementationVersionName(IMPLEMENTATION_VERSION_NAME.to_owned()),
        ],
    }
}

/// Reads one whole PDU and decodes it with `dicom-ul`.
async fn read_pdu(conn: &mut Connection) -> Result<Pdu, ScuError> {
    if conn.fill(PDU_HEADER_LEN).await? == Fill::Closed {
        return Err(ScuError::Closed);
    }
    let header = conn.read_exact_buffered(PDU_HEADER_LEN).await?;
    let mut whole = header.to_vec();
    let header = pdu::parse_pdu_header(&whole).expect("six bytes were read");
    if header.length > MAX_INCOMING_PDU_LEN {
        return Err(ScuError::Protocol(format!("PDU of {} bytes exceeds {MAX_INCOMING_PDU_LEN}", header.length)));
    }
    whole.resize(PDU_HEADER_LEN + header.length as usize, 0);
    conn.read_into(&mut whole[PDU_HEADER_LEN..]).await?;
    match dicom_ul::pdu::read_pdu(&whole[..], dicom_ul::pdu::MAXIMUM_PDU_SIZE, false) {
        Ok(Some(pdu)) => Ok(pdu),
        Ok(None) => Err(ScuError::Protocol("incomplete PDU".into())),
        Err(error) => Err(ScuError::Protocol(error.to_string())),
    }
}

async fn within<F: std::future::Future>(limit: Duration, step: &'static str, future: F) -> Result<F::Output, ScuError> {
    tokio::time::timeout(limit, future).await.map_err(|_| ScuError::Timeout { step, seconds: limit.as_secs() })
}
