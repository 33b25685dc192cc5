//! The first phase of an association: wait for A-ASSOCIATE-RQ under the
//! ARTIM timer, negotiate, and send A-ASSOCIATE-AC or A-ASSOCIATE-RJ.

use nectar_codecs::negotiation::{self, AcceptedContext, Negotiation};
use nectar_codecs::pdu::{self, pdu_type, PDU_HEADER_LEN};

use super::error::AssociationError;
use super::io::{Connection, Fill};
use super::Services;
use crate::telemetry;

/// Largest A-ASSOCIATE-RQ accepted. A request with hundreds of presentation
/// contexts is about 40 KiB, so this leaves room and bounds memory.
const MAX_ASSOCIATE_RQ_LEN: u32 = 1024 * 1024;

/// An association accepted by this SCP.
pub struct Established {
    pub calling_ae_title: String,
    pub contexts: Vec<AcceptedContext>,
    /// Largest PDU the peer accepts; 0 means unlimited.
    pub peer_max_pdu_length: u32,
}

/// Negotiates the association; returns `None` when it was rejected,
/// aborted or closed, after logging why.
pub async fn negotiate_association(
    conn: &mut Connection,
    services: &Services,
) -> Option<Established> {
    let artim = services.limits.artim_timeout;
    let request = match tokio::time::timeout(artim, read_associate_rq(conn)).await {
        Ok(Ok(Some(request))) => request,
        Ok(Ok(None)) => return None,
        Ok(Err(error)) => {
            telemetry::association_failed(&error);
            abort_if_protocol(conn, &error).await;
            return None;
        }
        Err(_) => {
            let error = AssociationError::Timeout { timer: "ARTIM", seconds: artim.as_secs() };
            telemetry::association_failed(&error);
            conn.shutdown().await;
            return None;
        }
    };

    match negotiation::negotiate(&request, &services.policy) {
        Negotiation::Accept { ac, contexts, peer_max_pdu_length, calling_ae_title, called_ae_title } => {
            let bytes = match pdu::encode_pdu(&ac.into()) {
                Ok(bytes) => bytes,
                Err(error) => {
                    tracing::error!(%error, "failed to encode A-ASSOCIATE-AC");
                    return None;
                }
            };
            if let Err(error) = conn.send(&bytes).await {
                telemetry::association_failed(&error.into());
                return None;
            }
            let span = tracing::Span::current();
            span.record("calling_ae", calling_ae_title.as_str());
            span.record("called_ae", called_ae_title.as_str());
            telemetry::association_accepted(contexts.len());
            Some(Established { calling_ae_title, contexts, peer_max_pdu_length })
        }
        Negotiation::Reject { rj, reason } => {
            telemetry::association_rejected(
                request.calling_ae_title.trim(),
                request.called_ae_title.trim(),
                reason,
            );
            if let Ok(bytes) = pdu::encode_pdu(&rj.into()) {
                let _ = conn.send(&bytes).await;
            }
            conn.shutdown().await;
            None
        }
    }
}

/// Reads the first PDU, which must be an A-ASSOCIATE-RQ (PS3.8 section 9.3.2).
async fn read_associate_rq(
    conn: &mut Connection,
) -> Result<Option<dicom_ul::pdu::AssociationRQ>, AssociationError> {
    if conn.fill(PDU_HEADER_LEN).await? == Fill::Closed {
        return Ok(None);
    }
    let header = conn.read_exact_buffered(PDU_HEADER_LEN).await?;
    let header = pdu::parse_pdu_header(header).expect("six bytes were read");

    match header.pdu_type {
        pdu_type::ASSOCIATE_RQ => {}
        pdu_type::P_DATA_TF
        | pdu_type::ASSOCIATE_AC
        | pdu_type::ASSOCIATE_RJ
        | pdu_type::RELEASE_RQ
        | pdu_type::RELEASE_RP => {
            return Err(AssociationError::unexpected_pdu(format!(
                "PDU type {:#04x} before A-ASSOCIATE-RQ",
                header.pdu_type
            )));
        }
        pdu_type::ABORT => return Ok(None),
        other => {
            return Err(AssociationError::unrecognized_pdu(format!("unknown PDU type {other:#04x}")));
        }
    }
    if header.length > MAX_ASSOCIATE_RQ_LEN {
        return Err(AssociationError::invalid_parameter(format!(
            "A-ASSOCIATE-RQ length {} exceeds {MAX_ASSOCIATE_RQ_LEN}",
            header.length
        )));
    }

    let mut whole = vec![0u8; PDU_HEADER_LEN + header.length as usize];
    whole[..PDU_HEADER_LEN].copy_from_slice(&encode_header(header.pdu_type, header.length));
    conn.read_into(&mut whole[PDU_HEADER_LEN..]).await?;
    pdu::decode_associate_rq(&whole)
        .map(Some)
        .map_err(|error| AssociationError::invalid_parameter(format!("invalid A-ASSOCIATE-RQ: {error}")))
}

fn encode_header(pdu_type: u8, length: u32) -> [u8; PDU_HEADER_LEN] {
    let len = length.to_be_bytes();
    [pdu_type, 0, len[0], len[1], len[2], len[3]]
}

/// Sends A-ABORT for a protocol violation; for other errors the socket just closes.
pub async fn abort_if_protocol(conn: &mut Connection, error: &AssociationError) {
    if let AssociationError::Protocol { reason, .. } = error {
        let _ = conn.send(&pdu::encode_abort(Some(*reason))).await;
    }
    conn.shutdown().await;
}
