use super::*;
use crate::pdu::test_support::{self as ts, Rq};
use crate::pdu::{decode_associate_rq, encode_pdu, parse_pdu_header};
use dicom_ul::pdu::{Pdu, PresentationContextProposed};

const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
const MR: &str = "1.2.840.10008.5.1.4.1.1.4";
const JPEG_BASELINE: &str = "1.2.840.10008.1.2.4.50";
const BIG_ENDIAN: &str = "1.2.840.10008.1.2.2";
const FIND: &str = "1.2.840.10008.5.1.4.1.2.2.1";

fn policy() -> AcceptorPolicy {
    AcceptorPolicy {
        ae_title: "NECTAR".into(),
        accept_any_called_ae: false,
        allowed_calling_ae_titles: vec![],
        max_pdu_length: 16384,
    }
}

fn pc(id: u8, abs: &str, tss: &[&str]) -> PresentationContextProposed {
    PresentationContextProposed {
        id,
        abstract_syntax: abs.into(),
        transfer_syntaxes: tss.iter().map(|s| s.to_string()).collect(),
    }
}

fn rq(contexts: Vec<PresentationContextProposed>) -> AssociationRQ {
    AssociationRQ {
        protocol_version: 1,
        calling_ae_title: "STORESCU".into(),
        called_ae_title: "NECTAR".into(),
        application_context_name: DICOM_APPLICATION_CONTEXT.into(),
        presentation_contexts: contexts,
        user_variables: vec![UserVariableItem::MaxLength(4096)],
    }
}

#[track_caller]
fn accepted(n: Negotiation) -> (AssociationAC, Vec<AcceptedContext>, u32, String, String) {
    match n {
        Negotiation::Accept {
            ac,
            contexts,
            peer_max_pdu_length,
            calling_ae_title,
            called_ae_title,
        } => (
            ac,
            contexts,
            peer_max_pdu_length,
            calling_ae_title,
            called_ae_title,
        ),
        Negotiation::Reject { reason, .. } => panic!("rejected: {reason:?}"),
    }
}

#[track_caller]
fn rejected(n: Negotiation) -> (AssociationRJ, RejectReason) {
    match n {
        Negotiation::Reject { rj, reason } => (rj, reason),
        Negotiation::Accept { .. } => panic!("accepted"),
    }
}

fn result(ac: &AssociationAC, id: u8) -> (&PresentationContextResultReason, &str) {
    let r = ac
        .presentation_contexts
        .iter()
        .find(|r| r.id == id)
        .unwrap();
    (&r.reason, r.transfer_syntax.as_str())
}

// ---------------------------------------------------------------- accept

#[test]
fn accepts_decoded_dcmtk_style_request_end_to_end() {
    let bytes = Rq::typical(0).encode();
    let request = decode_associate_rq(&bytes).unwrap();
    let (ac, contexts, peer_max, calling, called) = accepted(negotiate(&request, &policy()));
    assert_eq!(peer_max, 0, "max length 0 = unlimited");
    assert_eq!((calling.as_str(), called.as_str()), ("", "NECTAR"));
    assert_eq!(
        contexts,
        [
            AcceptedContext {
                id: 1,
                abstract_syntax: CT.into(),
                transfer_syntax: JPEG_BASELINE.into(),
                requestor_is_scu: true,
                requestor_is_scp: false,
            },
            AcceptedContext {
                id: 3,
                abstract_syntax: VERIFICATION_SOP_CLASS.into(),
                transfer_syntax: IMPLICIT_VR_LITTLE_ENDIAN.into(),
                requestor_is_scu: true,
                requestor_is_scp: false,
            },
        ]
    );
    assert_eq!(ac.protocol_version, 1);
    assert_eq!(ac.calling_ae_title, "");
    assert_eq!(ac.called_ae_title, "NECTAR");
    assert_eq!(ac.application_context_name, DICOM_APPLICATION_CONTEXT);
    assert_eq!(
        ac.user_variables,
        [
            UserVariableItem::MaxLength(16384),
            UserVariableItem::ImplementationClassUID(IMPLEMENTATION_CLASS_UID.into()),
            UserVariableItem::ScuScpRoleSelectionSubItem(
                CT.into(),
                RequestorRoles {
                    scu: true,
                    scp: false
                }
            ),
            UserVariableItem::ImplementationVersionName(IMPLEMENTATION_VERSION_NAME.into()),
        ]
    );
    // the AC encodes, and dicom-ul reads it back unchanged
    let out = encode_pdu(&Pdu::AssociationAC(ac.clone())).unwrap();
    assert_eq!(
        parse_pdu_header(&out).unwrap().pdu_type,
        crate::pdu::pdu_type::ASSOCIATE_AC
    );
    let back = dicom_ul::pdu::read_pdu(&out[..], 65536, false)
        .unwrap()
        .unwrap();
    assert_eq!(back, Pdu::AssociationAC(ac));
}

#[test]
fn peer_max_pdu_length_from_user_information() {
    let mut r = rq(vec![pc(1, CT, &[IMPLICIT_VR_LITTLE_ENDIAN])]);
    assert_eq!(accepted(negotiate(&r, &policy())).2, 4096);
    r.user_variables.clear();
    assert_eq!(
        accepted(negotiate(&r, &policy())).2,
        0,
        "absent = no limit stated = 0"
    );
    let decoded = decode_associate_rq(&Rq::typical(4096).encode()).unwrap();
    assert_eq!(accepted(negotiate(&decoded, &policy())).2, 4096);
}

#[test]
fn first_supported_transfer_syntax_in_scu_order() {
    let r = rq(vec![
        pc(
            1,
            CT,
            &[
                "1.2.3.4.5.6",
                EXPLICIT_VR_LITTLE_ENDIAN,
                IMPLICIT_VR_LITTLE_ENDIAN,
            ],
        ),
        pc(3, MR, &[BIG_ENDIAN, JPEG_BASELINE]),
        pc(
            5,
            VERIFICATION_SOP_CLASS,
            &[
                BIG_ENDIAN,
                EXPLICIT_VR_LITTLE_ENDIAN,
                IMPLICIT_VR_LITTLE_ENDIAN,
            ],
        ),
    ]);
    let (ac, contexts, ..) = accepted(negotiate(&r, &policy()));
    let chosen: Vec<(u8, &str)> = contexts
        .iter()
        .map(|c| (c.id, c.transfer_syntax.as_str()))
        .collect();
    assert_eq!(
        chosen,
        [
            (1, EXPLICIT_VR_LITTLE_ENDIAN),
            (3, BIG_ENDIAN),
            (5, EXPLICIT_VR_LITTLE_ENDIAN)
        ]
    );
    assert_eq!(
        result(&ac, 3),
        (&PresentationContextResultReason::Acceptance, BIG_ENDIAN)
    );
}

#[test]
fn unsupported_abstract_and_transfer_syntaxes() {
    let r = rq(vec![
        pc(1, "1.2.840.10008.5.1.4.31", &[IMPLICIT_VR_LITTLE_ENDIAN]), // Modality Worklist FIND
        pc(3, "1.2.3.999", &[]),
        pc(5, CT, &["1.2.840.10008.1.2.4.52", "1.2.3"]), // retired JPEG: not stored
        pc(7, VERIFICATION_SOP_CLASS, &[BIG_ENDIAN]),
        pc(9, CT, &[IMPLICIT_VR_LITTLE_ENDIAN]),
    ]);
    let (ac, contexts, ..) = accepted(negotiate(&r, &policy()));
    use PresentationContextResultReason as R;
    assert_eq!(
        result(&ac, 1),
        (&R::AbstractSyntaxNotSupported, IMPLICIT_VR_LITTLE_ENDIAN)
    );
    assert_eq!(result(&ac, 3), (&R::AbstractSyntaxNotSupported, ""));
    assert_eq!(
        result(&ac, 5),
        (&R::TransferSyntaxesNotSupported, "1.2.840.10008.1.2.4.52")
    );
    assert_eq!(
        result(&ac, 7),
        (&R::TransferSyntaxesNotSupported, BIG_ENDIAN)
    );
    assert_eq!(result(&ac, 9), (&R::Acceptance, IMPLICIT_VR_LITTLE_ENDIAN));
    assert_eq!(contexts.len(), 1);
    // results keep the requestor's order
    let ids: Vec<u8> = ac.presentation_contexts.iter().map(|r| r.id).collect();
    assert_eq!(ids, [1, 3, 5, 7, 9]);
}

#[test]
fn zero_accepted_contexts_still_accepts() {
    let r = rq(vec![pc(1, "1.2.840.10008.5.1.4.31", &[IMPLICIT_VR_LITTLE_ENDIAN])]);
    let (ac, contexts, ..) = accepted(negotiate(&r, &policy()));
    assert!(contexts.is_empty());
    assert_eq!(ac.presentation_contexts.len(), 1);
}

#[test]
fn called_ae_ignores_padding_but_not_case_unless_any() {
    let mut r = rq(vec![pc(1, CT, &[IMPLICIT_VR_LITTLE_ENDIAN])]);
    r.called_ae_title = "  NECTAR ".into();
    let (_, _, _, _, called) = accepted(negotiate(&r, &policy()));
    assert_eq!(called, "NECTAR");
    let mut p = policy();
    p.ae_title = " NECTAR  ".into();
    accepted(negotiate(&r, &p));
    r.called_ae_title = "nectar".into();
    let (rj, reason) = rejected(negotiate(&r, &policy()));
    assert_eq!(reason, RejectReason::CalledAeTitleNotRecognized);
    assert_eq!(
        encode_pdu(&Pdu::AssociationRJ(rj)).unwrap(),
        [3, 0, 0, 0, 0, 4, 0, 1, 1, 7]
    );
    p.accept_any_called_ae = true;
    let (ac, ..) = accepted(negotiate(&r, &p));
    assert_eq!(ac.called_ae_title, "nectar", "AC echoes what was called");
}

#[test]
fn calling_ae_allow_list() {
    let mut r = rq(vec![pc(1, CT, &[IMPLICIT_VR_LITTLE_ENDIAN])]);
    let mut p = policy();
    p.allowed_calling_ae_titles = vec!["MODALITY1".into(), "STORESCU ".into()];
    accepted(negotiate(&r, &p));
    r.calling_ae_title = "INTRUDER".into();
    let (rj, reason) = rejected(negotiate(&r, &p));
    assert_eq!(reason, RejectReason::CallingAeTitleNotRecognized);
    assert_eq!(
        encode_pdu(&Pdu::AssociationRJ(rj)).unwrap(),
        [3, 0, 0, 0, 0, 4, 0, 1, 1, 3]
    );
    p.allowed_calling_ae_titles.clear();
    accepted(negotiate(&r, &p));
}

#[test]
fn application_context_must_be_dicom() {
    let mut r = rq(vec![pc(1, CT, &[IMPLICIT_VR_LITTLE_ENDIAN])]);
    r.application_context_name = "1.2.840.10008.3.1.1.1\0".into();
    accepted(negotiate(&r, &policy()));
    r.application_context_name = "1.2.3".into();
    let (rj, reason) = rejected(negotiate(&r, &policy()));
    assert_eq!(reason, RejectReason::ApplicationContextNotSupported);
    assert_eq!(
        encode_pdu(&Pdu::AssociationRJ(rj)).unwrap(),
        [3, 0, 0, 0, 0, 4, 0, 1, 1, 2]
    );
}

#[test]
fn protocol_version_bit_zero() {
    let mut r = rq(vec![pc(1, CT, &[IMPLICIT_VR_LITTLE_ENDIAN])]);
    r.protocol_version = 0x0003;
    accepted(negotiate(&r, &policy()));
    r.protocol_version = 0x0002;
    let (rj, reason) = rejected(negotiate(&r, &policy()));
    assert_eq!(reason, RejectReason::ProtocolVersionNotSupported);
    assert_eq!(
        encode_pdu(&Pdu::AssociationRJ(rj)).unwrap(),
        [3, 0, 0, 0, 0, 4, 0, 1, 2, 2]
    );
}

#[test]
fn no_or_duplicate_presentation_contexts() {
    let (rj, reason) = rejected(negotiate(&rq(vec![]), &policy()));
    assert_eq!(reason, RejectReason::NoReasonGiven);
    assert_eq!(
        encode_pdu(&Pdu::AssociationRJ(rj)).unwrap(),
        [3, 0, 0, 0, 0, 4, 0, 1, 1, 1]
    );
    let r = rq(vec![
        pc(1, CT, &[IMPLICIT_VR_LITTLE_ENDIAN]),
        pc(1, MR, &[IMPLICIT_VR_LITTLE_ENDIAN]),
    ]);
    assert_eq!(
        rejected(negotiate(&r, &policy())).1,
        RejectReason::NoReasonGiven
    );
}

#[test]
fn ae_checks_come_before_context_sanity() {
    let mut r = rq(vec![]);
    r.called_ae_title = "OTHER".into();
    assert_eq!(
        rejected(negotiate(&r, &policy())).1,
        RejectReason::CalledAeTitleNotRecognized
    );
}

#[test]
fn local_limit_rejection() {
    let rj = reject_local_limit();
    assert_eq!(rj, RejectReason::LocalLimitExceeded.to_rj());
    assert_eq!(rj.result, AssociationRJResult::Transient);
    assert_eq!(
        encode_pdu(&Pdu::AssociationRJ(rj)).unwrap(),
        [3, 0, 0, 0, 0, 4, 0, 2, 3, 2]
    );
}

#[test]
fn role_selection_replies() {
    let mut r = rq(vec![
        pc(1, CT, &[IMPLICIT_VR_LITTLE_ENDIAN]),
        pc(3, MR, &[IMPLICIT_VR_LITTLE_ENDIAN]),
        pc(5, FIND, &[IMPLICIT_VR_LITTLE_ENDIAN]),
    ]);
    let roles = |scu, scp| RequestorRoles { scu, scp };
    r.user_variables = vec![
        UserVariableItem::MaxLength(0),
        UserVariableItem::ScuScpRoleSelectionSubItem(format!("{CT}\0"), roles(true, true)),
        UserVariableItem::ScuScpRoleSelectionSubItem(MR.into(), roles(false, true)),
        UserVariableItem::ScuScpRoleSelectionSubItem(FIND.into(), roles(true, false)),
        UserVariableItem::ScuScpRoleSelectionSubItem(CT.into(), roles(false, true)), // repeat: ignored
    ];
    let (ac, contexts, ..) = accepted(negotiate(&r, &policy()));
    let replies: Vec<&UserVariableItem> = ac
        .user_variables
        .iter()
        .filter(|v| matches!(v, UserVariableItem::ScuScpRoleSelectionSubItem(..)))
        .collect();
    assert_eq!(
        replies,
        [
            &UserVariableItem::ScuScpRoleSelectionSubItem(CT.into(), roles(true, true)),
            &UserVariableItem::ScuScpRoleSelectionSubItem(MR.into(), roles(false, true)),
        ]
    );
    // MR was proposed with the requestor as SCP only: a C-GET context
    let roles_of = |id: u8| {
        let c = contexts.iter().find(|c| c.id == id).unwrap();
        (c.requestor_is_scu, c.requestor_is_scp)
    };
    assert_eq!(roles_of(1), (true, true));
    assert_eq!(roles_of(3), (false, true));
    assert_eq!(roles_of(5), (true, false));
    // sub-item order: 51, 52, 54..., 55
    let types: Vec<u8> = ac
        .user_variables
        .iter()
        .map(|v| match v {
            UserVariableItem::MaxLength(_) => 0x51,
            UserVariableItem::ImplementationClassUID(_) => 0x52,
            UserVariableItem::ScuScpRoleSelectionSubItem(..) => 0x54,
            UserVariableItem::ImplementationVersionName(_) => 0x55,
            _ => 0,
        })
        .collect();
    assert_eq!(types, [0x51, 0x52, 0x54, 0x54, 0x55]);
    // and dicom-ul round-trips the role items
    let out = encode_pdu(&Pdu::AssociationAC(ac.clone())).unwrap();
    assert_eq!(
        dicom_ul::pdu::read_pdu(&out[..], 65536, false)
            .unwrap()
            .unwrap(),
        Pdu::AssociationAC(ac)
    );
}

#[test]
fn role_selection_from_wire_bytes() {
    let mut spec = Rq::typical(4096);
    spec.user = Some(vec![
        ts::max_length(4096),
        ts::role_selection(&ts::uid_nul(CT), true, true),
    ]);
    let r = decode_associate_rq(&spec.encode()).unwrap();
    let (ac, ..) = accepted(negotiate(&r, &policy()));
    assert!(ac
        .user_variables
        .contains(&UserVariableItem::ScuScpRoleSelectionSubItem(
            CT.into(),
            RequestorRoles {
                scu: true,
                scp: true
            }
        )));
}

#[test]
fn negotiate_no_role_left_user_rejection() {
    let mut r = rq(vec![pc(1, CT, &[IMPLICIT_VR_LITTLE_ENDIAN])]);
    r.user_variables = vec![UserVariableItem::ScuScpRoleSelectionSubItem(
        CT.into(),
        RequestorRoles { scu: false, scp: false },
    )];
    let (ac, contexts, ..) = accepted(negotiate(&r, &policy()));
    assert!(contexts.is_empty());
    assert_eq!(result(&ac, 1).0, &PresentationContextResultReason::UserRejection);
}

#[test]
fn query_retrieve_classes_are_accepted() {
    let r = rq(query_retrieve::ALL
        .iter()
        .enumerate()
        .map(|(i, uid)| pc(2 * i as u8 + 1, uid, &[BIG_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN]))
        .collect());
    let (_, contexts, ..) = accepted(negotiate(&r, &policy()));
    assert_eq!(contexts.len(), query_retrieve::ALL.len());
    assert!(contexts.iter().all(|c| c.transfer_syntax == BIG_ENDIAN));
}

// ---------------------------------------------------------------- tables

#[test]
fn storage_sop_classes() {
    for yes in [
        CT,
        MR,
        "1.2.840.10008.5.1.4.1.1.7",     // Secondary Capture
        "1.2.840.10008.5.1.4.1.1.6",     // Ultrasound Image Storage (Retired)
        "1.2.840.10008.5.1.4.1.1.88.11", // Basic Text SR
        "1.2.840.10008.5.1.4.1.1.104.1", // Encapsulated PDF
        "1.2.840.10008.5.1.4.1.1.1.1.1", // DX For Processing
        "1.2.840.10008.5.1.4.1.1.481.5", // RT Plan
        "1.2.840.10008.5.1.4.38.1",      // Hanging Protocol Storage
        "1.2.840.10008.5.1.4.1.1.2\0",   // padded
    ] {
        assert!(is_storage_sop_class(yes), "{yes}");
    }
    for no in [
        VERIFICATION_SOP_CLASS,
        "1.2.840.10008.1.20.1", // Storage Commitment Push Model
        "1.2.840.10008.1.20.2", // Storage Commitment Pull Model (Retired)
        "1.2.840.10008.1.3.10", // Media Storage Directory Storage
        FIND,
        "1.2.840.10008.5.1.4.1.1.2.99",
        "",
        IMPLICIT_VR_LITTLE_ENDIAN,
    ] {
        assert!(!is_storage_sop_class(no), "{no}");
    }
}

#[test]
fn storage_transfer_syntaxes_cover_the_brief() {
    for uid in [
        "1.2.840.10008.1.2",
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2.2",
        "1.2.840.10008.1.2.1.99",
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.57",
        "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.4.80",
        "1.2.840.10008.1.2.4.81",
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.4.201",
        "1.2.840.10008.1.2.4.202",
        "1.2.840.10008.1.2.4.203",
        "1.2.840.10008.1.2.5",
        "1.2.840.10008.1.2.4.100",
        "1.2.840.10008.1.2.4.101",
        "1.2.840.10008.1.2.4.102",
        "1.2.840.10008.1.2.4.103",
        "1.2.840.10008.1.2.4.104",
        "1.2.840.10008.1.2.4.105",
        "1.2.840.10008.1.2.4.106",
        "1.2.840.10008.1.2.4.107",
        "1.2.840.10008.1.2.4.108",
        "1.2.840.10008.1.2.4.110",
        "1.2.840.10008.1.2.4.111",
        "1.2.840.10008.1.2.4.112",
    ] {
        assert!(STORAGE_TRANSFER_SYNTAXES.contains(&uid), "{uid}");
    }
    let unique: HashSet<&str> = STORAGE_TRANSFER_SYNTAXES.iter().copied().collect();
    assert_eq!(
        unique.len(),
        STORAGE_TRANSFER_SYNTAXES.len(),
        "no duplicates"
    );
    assert!(STORAGE_TRANSFER_SYNTAXES
        .iter()
        .all(|u| u.len() <= 64 && u.bytes().all(|b| b.is_ascii_digit() || b == b'.')));
}

#[test]
fn implementation_identity_is_valid() {
    let uid = IMPLEMENTATION_CLASS_UID;
    assert!(uid.starts_with("2.25."));
    assert!(uid.len() <= 64);
    let n = &uid[5..];
    assert!(!n.starts_with('0') && n.bytes().all(|b| b.is_ascii_digit()));
    assert!(n.parse::<u128>().is_ok(), "fits in 128 bits");
    assert!(IMPLEMENTATION_VERSION_NAME.len() <= 16 && !IMPLEMENTATION_VERSION_NAME.is_empty());
}
