//! The body of the `pdu` fuzz target (fuzz/fuzz_targets/pdu.rs), kept here
//! so the unit-test stand-in in `pdu::tests` runs exactly the same code on
//! a stable toolchain. Not part of the API.

use crate::command::{decode_command, encode_command};
use crate::negotiation::{negotiate, AcceptorPolicy, Negotiation};
use crate::pdu::{
    decode_associate_rq, encode_pdu, parse_pdu_header, parse_pdv_header, pdu_type, PDU_HEADER_LEN,
    PDV_HEADER_LEN,
};

/// Feeds `data` through every decoder; panics only on a broken invariant.
///
/// * PDU header, then the PDVs of the body as a P-DATA-TF, each PDV's data
///   through the command round trip;
/// * the whole input as an A-ASSOCIATE-RQ and, when it decodes, through
///   [`negotiate`] and [`encode_pdu`], whose output must decode again;
/// * the whole input as a command set, round-tripped.
pub fn exercise(data: &[u8]) {
    if let Some(header) = parse_pdu_header(data) {
        let body = &data[PDU_HEADER_LEN..];
        let body = &body[..body.len().min(header.length as usize)];
        walk_pdvs(body);
    }

    if let Ok(rq) = decode_associate_rq(data) {
        let policy = AcceptorPolicy {
            ae_title: "NECTAR".into(),
            accept_any_called_ae: true,
            allowed_calling_ae_titles: Vec::new(),
            max_pdu_length: 16384,
        };
        let pdu = match negotiate(&rq, &policy) {
            Negotiation::Accept { ac, contexts, .. } => {
                assert!(contexts.len() <= rq.presentation_contexts.len());
                assert_eq!(
                    ac.presentation_contexts.len(),
                    rq.presentation_contexts.len()
                );
                dicom_ul::pdu::Pdu::AssociationAC(ac)
            }
            Negotiation::Reject { rj, .. } => dicom_ul::pdu::Pdu::AssociationRJ(rj),
        };
        let bytes = encode_pdu(&pdu).expect("a negotiated reply always encodes");
        let header = parse_pdu_header(&bytes).expect("encoded PDU has a header");
        assert_eq!(header.length as usize, bytes.len() - PDU_HEADER_LEN);
        let back = dicom_ul::pdu::read_pdu(&bytes[..], dicom_ul::pdu::MAXIMUM_PDU_SIZE, false)
            .expect("our reply decodes")
            .expect("our reply is complete");
        assert!(matches!(
            (header.pdu_type, back),
            (pdu_type::ASSOCIATE_AC, dicom_ul::pdu::Pdu::AssociationAC(_))
                | (pdu_type::ASSOCIATE_RJ, dicom_ul::pdu::Pdu::AssociationRJ(_))
        ));
    }

    command_round_trip(data);
}

fn walk_pdvs(mut body: &[u8]) {
    while let Ok(Some(pdv)) = parse_pdv_header(body) {
        assert!(pdv.item_length >= 2);
        let Some(fragment) = body[PDV_HEADER_LEN..].get(..pdv.data_len()) else {
            return;
        };
        if pdv.is_command {
            command_round_trip(fragment);
        }
        body = &body[PDV_HEADER_LEN + pdv.data_len()..];
    }
}

fn command_round_trip(bytes: &[u8]) {
    if let Ok(cmd) = decode_command(bytes) {
        let encoded = encode_command(&cmd);
        let again = decode_command(&encoded).expect("an encoded command decodes");
        assert_eq!(again, cmd, "decode(encode(cmd)) != cmd");
        assert_eq!(encode_command(&again), encoded, "encoding is not stable");
    }
}
