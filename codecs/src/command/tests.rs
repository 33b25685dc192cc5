use super::*;
use crate::pdu::test_support::dcmtk_c_store_rq;

fn el(out: &mut Vec<u8>, group: u16, elem: u16, value: &[u8]) {
    out.extend_from_slice(&group.to_le_bytes());
    out.extend_from_slice(&elem.to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value);
}

fn full_command() -> Command {
    Command {
        command_field: command_field::C_MOVE_RSP,
        message_id: Some(0xFFFF),
        message_id_being_responded_to: Some(2),
        affected_sop_class_uid: Some("1.2.840.10008.5.1.4.1.2.2.2".into()),
        requested_sop_class_uid: Some("1.2.3".into()),
        affected_sop_instance_uid: Some("1.2.3.4.5".into()),
        requested_sop_instance_uid: Some("1.2.3.4.56".into()),
        priority: Some(priority::HIGH),
        data_set_type: 0x0000,
        status: Some(status::PENDING),
        move_destination: Some("DEST".into()),
        move_originator_ae_title: Some("ORIGIN".into()),
        move_originator_message_id: Some(77),
        sub_operations: Some(SubOperations { remaining: Some(4), completed: 1, failed: 2, warning: 3 }),
        error_comment: Some("odd".into()),
    }
}

#[test]
fn decodes_dcmtk_c_store_rq() {
    let bytes = dcmtk_c_store_rq();
    let cmd = decode_command(&bytes).unwrap();
    assert_eq!(
        cmd,
        Command {
            command_field: command_field::C_STORE_RQ,
            message_id: Some(7),
            affected_sop_class_uid: Some("1.2.840.10008.5.1.4.1.1.2".into()),
            affected_sop_instance_uid: Some("1.2.826.0.1.3680043.2.1125.1.123456".into()),
            priority: Some(priority::MEDIUM),
            data_set_type: 0x0001,
            ..Command::default()
        }
    );
    assert!(cmd.has_data_set());
    // and we write it back byte for byte as dcmtk did
    assert_eq!(encode_command(&cmd), bytes);
}

#[test]
fn encode_writes_group_length_first_and_ascending_tags() {
    let bytes = encode_command(&full_command());
    // group length element
    assert_eq!(&bytes[..8], &[0, 0, 0, 0, 4, 0, 0, 0]);
    let group_length = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
    assert_eq!(group_length as usize, bytes.len() - 12);
    // walk: tags strictly ascending, all group 0000, all lengths even
    let mut pos = 0;
    let mut last = None;
    let mut tags = Vec::new();
    while pos < bytes.len() {
        let group = u16::from_le_bytes([bytes[pos], bytes[pos + 1]]);
        let elem = u16::from_le_bytes([bytes[pos + 2], bytes[pos + 3]]);
        let len = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap()) as usize;
        assert_eq!(group, 0);
        assert_eq!(len % 2, 0);
        assert!(last < Some(elem));
        last = Some(elem);
        tags.push(elem);
        pos += 8 + len;
    }
    assert_eq!(
        tags,
        [
            0x0000, 0x0002, 0x0003, 0x0100, 0x0110, 0x0120, 0x0600, 0x0700, 0x0800, 0x0900, 0x0902,
            0x1000, 0x1001, 0x1020, 0x1021, 0x1022, 0x1023, 0x1030, 0x1031
        ]
    );
}

#[test]
fn encode_pads_uids_with_nul_and_strings_with_space() {
    let cmd = Command {
        command_field: command_field::C_ECHO_RQ,
        affected_sop_class_uid: Some("1.2.3".into()),
        move_destination: Some("ABC".into()),
        error_comment: Some("x".into()),
        data_set_type: NO_DATA_SET,
        ..Command::default()
    };
    let bytes = encode_command(&cmd);
    let mut expected = Vec::new();
    el(&mut expected, 0, 0x0002, b"1.2.3\0");
    el(&mut expected, 0, 0x0100, &0x0030u16.to_le_bytes());
    el(&mut expected, 0, 0x0600, b"ABC ");
    el(&mut expected, 0, 0x0800, &0x0101u16.to_le_bytes());
    el(&mut expected, 0, 0x0902, b"x ");
    let mut whole = Vec::new();
    el(
        &mut whole,
        0,
        0x0000,
        &(expected.len() as u32).to_le_bytes(),
    );
    whole.extend(expected);
    assert_eq!(bytes, whole);
}

#[test]
fn minimal_command_has_only_mandatory_elements() {
    let bytes = encode_command(&Command {
        command_field: command_field::C_ECHO_RQ,
        data_set_type: NO_DATA_SET,
        ..Command::default()
    });
    assert_eq!(bytes.len(), 12 + 10 + 10);
}

#[test]
fn round_trips() {
    for cmd in [
        full_command(),
        c_echo_rsp(3, "1.2.840.10008.1.1", status::SUCCESS),
        c_store_rsp(
            9,
            "1.2.840.10008.5.1.4.1.1.2",
            "1.2.3.4",
            status::OUT_OF_RESOURCES,
            Some("disk full"),
        ),
        Command {
            command_field: command_field::C_CANCEL_RQ,
            message_id_being_responded_to: Some(1),
            data_set_type: NO_DATA_SET,
            affected_sop_class_uid: Some(String::new()),
            ..Command::default()
        },
    ] {
        let bytes = encode_command(&cmd);
        assert_eq!(decode_command(&bytes).unwrap(), cmd);
    }
}

#[test]
fn decode_trims_padding_and_reads_latin1() {
    let mut b = Vec::new();
    el(&mut b, 0, 0x0100, &1u16.to_le_bytes());
    el(&mut b, 0, 0x0800, &1u16.to_le_bytes());
    el(&mut b, 0, 0x0600, b" AE  "); // 5 bytes: odd
    assert!(matches!(
        decode_command(&b),
        Err(CommandError::OddLength {
            element: 0x0600,
            length: 5,
            ..
        })
    ));
    let mut fixed = Vec::new();
    el(&mut fixed, 0, 0x0100, &1u16.to_le_bytes());
    el(&mut fixed, 0, 0x0800, &1u16.to_le_bytes());
    el(&mut fixed, 0, 0x0002, b"1.2.3 ");
    el(&mut fixed, 0, 0x0600, b" AE   ");
    el(&mut fixed, 0, 0x0600, b"  AE2 "); // duplicate: last wins
    el(&mut fixed, 0, 0x0902, &[b'c', 0xE9]);
    el(&mut fixed, 0, 0x1000, b"\0\0");
    let cmd = decode_command(&fixed).unwrap();
    assert_eq!(cmd.affected_sop_class_uid.as_deref(), Some("1.2.3"));
    assert_eq!(cmd.move_destination.as_deref(), Some("AE2"));
    assert_eq!(cmd.error_comment.as_deref(), Some("c\u{e9}"));
    assert_eq!(cmd.affected_sop_instance_uid.as_deref(), Some(""));
    // Latin-1 survives the round trip
    assert_eq!(decode_command(&encode_command(&cmd)).unwrap(), cmd);
}

#[test]
fn decode_skips_unknown_elements_and_other_groups() {
    let mut b = Vec::new();
    el(&mut b, 0, 0x0000, &100u32.to_le_bytes()); // wrong group length: not checked
    el(&mut b, 0, 0x0100, &0x8001u16.to_le_bytes());
    el(&mut b, 0, 0x0120, &5u16.to_le_bytes());
    el(&mut b, 0, 0x0800, &0x0101u16.to_le_bytes());
    el(&mut b, 0, 0x0900, &0xB000u16.to_le_bytes());
    el(&mut b, 0, 0x0901, &[0x10, 0, 0x10, 0]); // Offending Element, AT
    el(&mut b, 0, 0x0903, &[0; 2]); // Error ID
    el(&mut b, 0, 0x1020, &[1, 0]); // Number of Remaining Sub-operations
    el(&mut b, 0x0008, 0x0016, b"1.2\0"); // not a command element at all
    el(&mut b, 0, 0x0100, &0x8001u16.to_le_bytes());
    let cmd = decode_command(&b).unwrap();
    assert_eq!(cmd.command_field, command_field::C_STORE_RSP);
    assert_eq!(cmd.message_id_being_responded_to, Some(5));
    assert_eq!(cmd.status, Some(status::COERCION_OF_DATA_ELEMENTS));
    assert!(!cmd.has_data_set());
}

#[test]
fn decode_errors_never_panic() {
    let good = dcmtk_c_store_rq();
    // every truncation of a valid set is an error, except the cut right
    // before the last element (0000,1000), which leaves a valid set
    let without_last = good.len() - 8 - "1.2.826.0.1.3680043.2.1125.1.123456\0".len();
    for n in 0..good.len() {
        match decode_command(&good[..n]) {
            Ok(cmd) => {
                assert_eq!(n, without_last, "prefix {n} decoded");
                assert_eq!(cmd.affected_sop_instance_uid, None);
            }
            Err(_) => assert_ne!(n, without_last),
        }
    }
    assert!(matches!(
        decode_command(&good[..5]),
        Err(CommandError::Truncated {
            offset: 0,
            needed: 8,
            available: 5
        })
    ));
    assert!(matches!(
        decode_command(&good[..14]),
        Err(CommandError::Truncated {
            offset: 12,
            needed: 8,
            available: 2
        })
    ));
    assert!(matches!(
        decode_command(&good[..30]),
        Err(CommandError::Truncated {
            offset: 20,
            needed: 26,
            available: 10
        })
    ));
    let mut b = Vec::new();
    el(&mut b, 0, 0x0100, &1u16.to_le_bytes());
    b.extend_from_slice(&[0, 0, 0, 8, 0xFF, 0xFF, 0xFF, 0xFF]);
    assert_eq!(
        decode_command(&b),
        Err(CommandError::UndefinedLength {
            group: 0,
            element: 0x0800
        })
    );
    let mut b = Vec::new();
    el(&mut b, 0, 0x0100, &[1, 0, 0, 0]);
    assert_eq!(
        decode_command(&b),
        Err(CommandError::InvalidValueLength {
            element: 0x0100,
            length: 4
        })
    );
    let mut b = Vec::new();
    el(&mut b, 0, 0x0800, &[1, 0]);
    assert_eq!(
        decode_command(&b),
        Err(CommandError::MissingElement(0x0100))
    );
    let mut b = Vec::new();
    el(&mut b, 0, 0x0100, &[1, 0]);
    assert_eq!(
        decode_command(&b),
        Err(CommandError::MissingElement(0x0800))
    );
    assert_eq!(
        decode_command(&[]),
        Err(CommandError::MissingElement(0x0100))
    );
    // huge length on a short buffer
    let b = [0, 0, 0, 1, 0xFE, 0xFF, 0xFF, 0xFF, 1, 2];
    assert!(matches!(
        decode_command(&b),
        Err(CommandError::Truncated { .. })
    ));
    // error messages carry the values
    let msg = CommandError::OddLength {
        group: 0,
        element: 0x0600,
        length: 5,
    }
    .to_string();
    assert!(msg.contains("(0000,0600)") && msg.contains('5'), "{msg}");
}

#[test]
fn echo_and_store_responses() {
    let echo = c_echo_rsp(42, "1.2.840.10008.1.1", status::SUCCESS);
    assert_eq!(echo.command_field, command_field::C_ECHO_RSP);
    assert_eq!(echo.message_id_being_responded_to, Some(42));
    assert_eq!(echo.message_id, None);
    assert_eq!(
        echo.affected_sop_class_uid.as_deref(),
        Some("1.2.840.10008.1.1")
    );
    assert_eq!(echo.status, Some(0));
    assert!(!echo.has_data_set());

    let store = c_store_rsp(
        7,
        "1.2.840.10008.5.1.4.1.1.2",
        "1.2.3",
        status::SUCCESS,
        None,
    );
    assert_eq!(store.command_field, command_field::C_STORE_RSP);
    assert_eq!(store.message_id_being_responded_to, Some(7));
    assert_eq!(store.affected_sop_instance_uid.as_deref(), Some("1.2.3"));
    assert_eq!(store.error_comment, None);
    assert!(!store.has_data_set());

    let long = "e".repeat(100);
    let store = c_store_rsp(7, "1.2", "1.2.3", status::CANNOT_UNDERSTAND, Some(&long));
    assert_eq!(
        store.error_comment.as_ref().map(|s| s.len()),
        Some(MAX_ERROR_COMMENT_LEN)
    );
}

#[test]
fn status_categories_and_constants() {
    use status::{category, Category};
    assert_eq!(category(status::SUCCESS), Category::Success);
    assert_eq!(category(status::PENDING), Category::Pending);
    assert_eq!(category(status::PENDING_WARNING), Category::Pending);
    assert_eq!(category(status::CANCEL), Category::Cancel);
    assert_eq!(
        category(status::COERCION_OF_DATA_ELEMENTS),
        Category::Warning
    );
    assert_eq!(category(status::ELEMENTS_DISCARDED), Category::Warning);
    assert_eq!(category(status::ATTRIBUTE_LIST_ERROR), Category::Warning);
    for failure in [
        status::OUT_OF_RESOURCES,
        status::DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
        status::CANNOT_UNDERSTAND,
        0xC123,
        status::SOP_CLASS_NOT_SUPPORTED,
        status::UNRECOGNIZED_OPERATION,
        status::DUPLICATE_SOP_INSTANCE,
        status::MISTYPED_ARGUMENT,
    ] {
        assert_eq!(category(failure), Category::Failure, "{failure:#06x}");
    }
    assert_eq!(
        (
            status::OUT_OF_RESOURCES,
            status::DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
            status::CANNOT_UNDERSTAND
        ),
        (0xA700, 0xA900, 0xC000)
    );
    assert_eq!(
        (
            status::SOP_CLASS_NOT_SUPPORTED,
            status::UNRECOGNIZED_OPERATION,
            status::DUPLICATE_SOP_INSTANCE,
            status::MISTYPED_ARGUMENT
        ),
        (0x0122, 0x0211, 0x0111, 0x0212)
    );
    assert!(command_field::is_response(command_field::C_STORE_RSP));
    assert!(command_field::is_response(command_field::N_DELETE_RSP));
    assert!(!command_field::is_response(command_field::C_CANCEL_RQ));
    assert!(!command_field::is_response(command_field::C_ECHO_RQ));
}

#[test]
fn sub_operation_counters_round_trip() {
    let sub = SubOperations { remaining: Some(3), completed: 2, failed: 1, warning: 0 };
    let rsp = c_retrieve_rsp(command_field::C_GET_RSP, 7, "1.2.840.10008.5.1.4.1.2.2.3", status::PENDING, sub, false);
    let decoded = decode_command(&encode_command(&rsp)).unwrap();
    assert_eq!(decoded.sub_operations, Some(sub));
    assert_eq!(decoded, rsp);

    let last = SubOperations { remaining: None, ..sub };
    let rsp = c_retrieve_rsp(command_field::C_MOVE_RSP, 7, "1.2.840.10008.5.1.4.1.2.2.2", status::SUB_OPERATIONS_COMPLETE_WITH_FAILURES, last, true);
    let bytes = encode_command(&rsp);
    assert!(!bytes.windows(4).any(|w| w == [0x00, 0x00, 0x20, 0x10]), "no remaining counter in a final response");
    assert_eq!(decode_command(&bytes).unwrap(), rsp);
}

#[test]
fn store_sub_operation_request_carries_the_move_originator() {
    let rq = c_store_rq(9, "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4", Some(("MOVESCU", 5)));
    let decoded = decode_command(&encode_command(&rq)).unwrap();
    assert_eq!(decoded.move_originator_ae_title.as_deref(), Some("MOVESCU"));
    assert_eq!(decoded.move_originator_message_id, Some(5));
    assert!(decoded.has_data_set());
}
