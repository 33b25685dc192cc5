//! DIMSE command sets, PS3.7 section 9 and annex E.
//!
//! A command set is always encoded in Implicit VR Little Endian and holds
//! only group 0000 elements (PS3.7 6.3.1). [`decode_command`] reads the
//! elements a C-STORE / C-ECHO SCP needs into a [`Command`] and skips the
//! rest; [`encode_command`] writes a [`Command`] back the way dcmtk does:
//! group length first, ascending tag order, even-length values.
//!
//! Text values are ISO 646 (a subset of ISO 8859-1) in a command set; they
//! are decoded byte-per-character as ISO 8859-1, so decoding never fails on
//! text, and encoded back the same way (a character above U+00FF, which only
//! a hand-built [`Command`] can hold, is written as `?`).

#[cfg(test)]
mod tests;

/// Command Field (0000,0100) values, PS3.7 annex E.
pub mod command_field {
    pub const C_STORE_RQ: u16 = 0x0001;
    pub const C_STORE_RSP: u16 = 0x8001;
    pub const C_GET_RQ: u16 = 0x0010;
    pub const C_GET_RSP: u16 = 0x8010;
    pub const C_FIND_RQ: u16 = 0x0020;
    pub const C_FIND_RSP: u16 = 0x8020;
    pub const C_MOVE_RQ: u16 = 0x0021;
    pub const C_MOVE_RSP: u16 = 0x8021;
    pub const C_ECHO_RQ: u16 = 0x0030;
    pub const C_ECHO_RSP: u16 = 0x8030;
    pub const N_EVENT_REPORT_RQ: u16 = 0x0100;
    pub const N_EVENT_REPORT_RSP: u16 = 0x8100;
    pub const N_GET_RQ: u16 = 0x0110;
    pub const N_GET_RSP: u16 = 0x8110;
    pub const N_SET_RQ: u16 = 0x0120;
    pub const N_SET_RSP: u16 = 0x8120;
    pub const N_ACTION_RQ: u16 = 0x0130;
    pub const N_ACTION_RSP: u16 = 0x8130;
    pub const N_CREATE_RQ: u16 = 0x0140;
    pub const N_CREATE_RSP: u16 = 0x8140;
    pub const N_DELETE_RQ: u16 = 0x0150;
    pub const N_DELETE_RSP: u16 = 0x8150;
    pub const C_CANCEL_RQ: u16 = 0x0FFF;

    /// Whether the command field is a response (bit 15 set).
    pub fn is_response(command_field: u16) -> bool {
        command_field & 0x8000 != 0
    }
}

/// Status (0000,0900) values, PS3.7 annex C and the service classes of PS3.4.
pub mod status {
    /// Success.
    pub const SUCCESS: u16 = 0x0000;
    /// Warning: attribute list error (N-SET, N-CREATE).
    pub const ATTRIBUTE_LIST_ERROR: u16 = 0x0107;
    /// Warning: attribute value out of range.
    pub const ATTRIBUTE_VALUE_OUT_OF_RANGE: u16 = 0x0116;
    /// Warning: coercion of data elements (C-STORE, PS3.4 B.2.3).
    pub const COERCION_OF_DATA_ELEMENTS: u16 = 0xB000;
    /// Warning: sub-operations complete, one or more failures or warnings (C-GET, C-MOVE).
    pub const SUB_OPERATIONS_COMPLETE_WITH_FAILURES: u16 = 0xB000;
    /// Warning: elements discarded (C-STORE).
    pub const ELEMENTS_DISCARDED: u16 = 0xB006;
    /// Warning: data set does not match SOP class (C-STORE).
    pub const DATA_SET_DOES_NOT_MATCH_SOP_CLASS_WARNING: u16 = 0xB007;
    /// Pending.
    pub const PENDING: u16 = 0xFF00;
    /// Pending, with one or more optional keys not supported (C-FIND).
    pub const PENDING_WARNING: u16 = 0xFF01;
    /// Cancel.
    pub const CANCEL: u16 = 0xFE00;
    /// Failure: refused, out of resources (C-STORE).
    pub const OUT_OF_RESOURCES: u16 = 0xA700;
    /// Failure: out of resources, unable to calculate number of matches (C-GET, C-MOVE).
    pub const OUT_OF_RESOURCES_UNABLE_TO_CALCULATE_MATCHES: u16 = 0xA701;
    /// Failure: out of resources, unable to perform sub-operations (C-GET, C-MOVE).
    pub const OUT_OF_RESOURCES_UNABLE_TO_PERFORM_SUB_OPERATIONS: u16 = 0xA702;
    /// Failure: move destination unknown (C-MOVE).
    pub const MOVE_DESTINATION_UNKNOWN: u16 = 0xA801;
    /// Failure: data set does not match SOP class (C-STORE), identifier does
    /// not match SOP class (C-FIND, C-GET, C-MOVE).
    pub const DATA_SET_DOES_NOT_MATCH_SOP_CLASS: u16 = 0xA900;
    /// Failure: cannot understand (C-STORE; 0xC000-0xCFFF are all "cannot understand").
    pub const CANNOT_UNDERSTAND: u16 = 0xC000;
    /// Failure: no such attribute.
    pub const NO_SUCH_ATTRIBUTE: u16 = 0x0105;
    /// Failure: invalid attribute value.
    pub const INVALID_ATTRIBUTE_VALUE: u16 = 0x0106;
    /// Failure: processing failure.
    pub const PROCESSING_FAILURE: u16 = 0x0110;
    /// Failure: duplicate SOP instance.
    pub const DUPLICATE_SOP_INSTANCE: u16 = 0x0111;
    /// Failure: no such SOP instance.
    pub const NO_SUCH_SOP_INSTANCE: u16 = 0x0112;
    /// Failure: no such event type.
    pub const NO_SUCH_EVENT_TYPE: u16 = 0x0113;
    /// Failure: no such argument.
    pub const NO_SUCH_ARGUMENT: u16 = 0x0114;
    /// Failure: invalid argument value.
    pub const INVALID_ARGUMENT_VALUE: u16 = 0x0115;
    /// Failure: invalid object instance.
    pub const INVALID_OBJECT_INSTANCE: u16 = 0x0117;
    /// Failure: no such SOP class.
    pub const NO_SUCH_SOP_CLASS: u16 = 0x0118;
    /// Failure: class-instance conflict.
    pub const CLASS_INSTANCE_CONFLICT: u16 = 0x0119;
    /// Failure: missing attribute.
    pub const MISSING_ATTRIBUTE: u16 = 0x0120;
    /// Failure: missing attribute value.
    pub const MISSING_ATTRIBUTE_VALUE: u16 = 0x0121;
    /// Failure: refused, SOP class not supported.
    pub const SOP_CLASS_NOT_SUPPORTED: u16 = 0x0122;
    /// Failure: no such action.
    pub const NO_SUCH_ACTION: u16 = 0x0123;
    /// Failure: refused, not authorized.
    pub const NOT_AUTHORIZED: u16 = 0x0124;
    /// Failure: duplicate invocation.
    pub const DUPLICATE_INVOCATION: u16 = 0x0210;
    /// Failure: unrecognized operation.
    pub const UNRECOGNIZED_OPERATION: u16 = 0x0211;
    /// Failure: mistyped argument.
    pub const MISTYPED_ARGUMENT: u16 = 0x0212;
    /// Failure: resource limitation.
    pub const RESOURCE_LIMITATION: u16 = 0x0213;

    /// The status classes of PS3.7 annex C.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Category {
        Success,
        Warning,
        Failure,
        Cancel,
        Pending,
    }

    /// Classifies a status code per PS3.7 annex C (0x0001 and 0xBxxx,
    /// 0x0107 and 0x0116 are warnings; every unlisted code is a failure).
    pub fn category(status: u16) -> Category {
        match status {
            SUCCESS => Category::Success,
            PENDING | PENDING_WARNING => Category::Pending,
            CANCEL => Category::Cancel,
            0x0001 | 0x0107 | 0x0116 | 0xB000..=0xBFFF => Category::Warning,
            _ => Category::Failure,
        }
    }
}

/// Priority (0000,0700) values.
pub mod priority {
    pub const MEDIUM: u16 = 0x0000;
    pub const HIGH: u16 = 0x0001;
    pub const LOW: u16 = 0x0002;
}

/// Element numbers of the group 0000 attributes this module reads or writes.
pub mod element {
    /// (0000,0000) Command Group Length, UL.
    pub const COMMAND_GROUP_LENGTH: u16 = 0x0000;
    /// (0000,0002) Affected SOP Class UID, UI.
    pub const AFFECTED_SOP_CLASS_UID: u16 = 0x0002;
    /// (0000,0003) Requested SOP Class UID, UI.
    pub const REQUESTED_SOP_CLASS_UID: u16 = 0x0003;
    /// (0000,0100) Command Field, US.
    pub const COMMAND_FIELD: u16 = 0x0100;
    /// (0000,0110) Message ID, US.
    pub const MESSAGE_ID: u16 = 0x0110;
    /// (0000,0120) Message ID Being Responded To, US.
    pub const MESSAGE_ID_BEING_RESPONDED_TO: u16 = 0x0120;
    /// (0000,0600) Move Destination, AE.
    pub const MOVE_DESTINATION: u16 = 0x0600;
    /// (0000,0700) Priority, US.
    pub const PRIORITY: u16 = 0x0700;
    /// (0000,0800) Command Data Set Type, US.
    pub const COMMAND_DATA_SET_TYPE: u16 = 0x0800;
    /// (0000,0900) Status, US.
    pub const STATUS: u16 = 0x0900;
    /// (0000,0902) Error Comment, LO.
    pub const ERROR_COMMENT: u16 = 0x0902;
    /// (0000,1000) Affected SOP Instance UID, UI.
    pub const AFFECTED_SOP_INSTANCE_UID: u16 = 0x1000;
    /// (0000,1001) Requested SOP Instance UID, UI.
    pub const REQUESTED_SOP_INSTANCE_UID: u16 = 0x1001;
    /// (0000,1020) Number of Remaining Sub-operations, US.
    pub const NUMBER_OF_REMAINING_SUB_OPERATIONS: u16 = 0x1020;
    /// (0000,1021) Number of Completed Sub-operations, US.
    pub const NUMBER_OF_COMPLETED_SUB_OPERATIONS: u16 = 0x1021;
    /// (0000,1022) Number of Failed Sub-operations, US.
    pub const NUMBER_OF_FAILED_SUB_OPERATIONS: u16 = 0x1022;
    /// (0000,1023) Number of Warning Sub-operations, US.
    pub const NUMBER_OF_WARNING_SUB_OPERATIONS: u16 = 0x1023;
    /// (0000,1030) Move Originator Application Entity Title, AE.
    pub const MOVE_ORIGINATOR_AE_TITLE: u16 = 0x1030;
    /// (0000,1031) Move Originator Message ID, US.
    pub const MOVE_ORIGINATOR_MESSAGE_ID: u16 = 0x1031;
}

/// Command Data Set Type (0000,0800) value meaning "no data set follows".
/// Any other value means a data set follows (senders use 0x0000 or 0x0001).
pub const NO_DATA_SET: u16 = 0x0101;

/// Command Data Set Type (0000,0800) value this encoder writes when a data set follows.
pub const DATA_SET_PRESENT: u16 = 0x0000;

/// The attributes of a DIMSE command set that nectar uses.
///
/// String values are held without their padding (leading/trailing NUL and
/// space removed).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Command {
    /// (0000,0100), see [`command_field`].
    pub command_field: u16,
    /// (0000,0110)
    pub message_id: Option<u16>,
    /// (0000,0120)
    pub message_id_being_responded_to: Option<u16>,
    /// (0000,0002)
    pub affected_sop_class_uid: Option<String>,
    /// (0000,0003)
    pub requested_sop_class_uid: Option<String>,
    /// (0000,1000)
    pub affected_sop_instance_uid: Option<String>,
    /// (0000,1001)
    pub requested_sop_instance_uid: Option<String>,
    /// (0000,0700), see [`priority`].
    pub priority: Option<u16>,
    /// (0000,0800): [`NO_DATA_SET`] or anything else for "a data set follows".
    pub data_set_type: u16,
    /// (0000,0900), see [`status`].
    pub status: Option<u16>,
    /// (0000,0600)
    pub move_destination: Option<String>,
    /// (0000,1020), (0000,1021), (0000,1022), (0000,1023).
    pub sub_operations: Option<SubOperations>,
    /// (0000,1030)
    pub move_originator_ae_title: Option<String>,
    /// (0000,1031)
    pub move_originator_message_id: Option<u16>,
    /// (0000,0902)
    pub error_comment: Option<String>,
}

/// The sub-operation counters of a C-GET or C-MOVE response (PS3.7 9.3.3.2, 9.3.4.2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubOperations {
    /// (0000,1020); absent from a final response, so `None` there.
    pub remaining: Option<u16>,
    /// (0000,1021)
    pub completed: u16,
    /// (0000,1022)
    pub failed: u16,
    /// (0000,1023)
    pub warning: u16,
}

impl Command {
    /// Whether a data set follows this command (data set type other than 0x0101).
    pub fn has_data_set(&self) -> bool {
        self.data_set_type != NO_DATA_SET
    }
}

/// Why a command set could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The bytes end inside an element header or value.
    #[error("command set truncated at offset {offset}: {needed} bytes needed, {available} left")]
    Truncated {
        /// offset of the element header or value that does not fit
        offset: usize,
        /// bytes the header or value needs
        needed: usize,
        /// bytes left from `offset`
        available: usize,
    },
    /// An element has an odd value length, impossible in Implicit VR Little Endian.
    #[error("element ({group:04X},{element:04X}) has odd length {length}")]
    OddLength {
        group: u16,
        element: u16,
        length: u32,
    },
    /// An element has undefined length (0xFFFFFFFF), which no command element may have.
    #[error("element ({group:04X},{element:04X}) has undefined length")]
    UndefinedLength { group: u16, element: u16 },
    /// A US element whose length is not 2.
    #[error("element (0000,{element:04X}) is US but has length {length}")]
    InvalidValueLength { element: u16, length: u32 },
    /// A mandatory element is absent: Command Field or Command Data Set Type.
    #[error("command set lacks mandatory element (0000,{0:04X})")]
    MissingElement(u16),
}

/// Decodes an Implicit VR Little Endian command set.
///
/// Elements other than those of [`Command`] (including the group length and
/// any element outside group 0000) are skipped. Command Field and Command
/// Data Set Type are mandatory. Truncated input, odd or undefined lengths and
/// US elements of a length other than 2 are errors; no input panics.
pub fn decode_command(bytes: &[u8]) -> Result<Command, CommandError> {
    let mut cmd = Command::default();
    let mut command_field = None;
    let mut data_set_type = None;
    let mut pos = 0usize;
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        let Some(h) = rest.get(..8) else {
            return Err(CommandError::Truncated {
                offset: pos,
                needed: 8,
                available: rest.len(),
            });
        };
        let group = u16::from_le_bytes([h[0], h[1]]);
        let elem = u16::from_le_bytes([h[2], h[3]]);
        let length = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        if length == u32::MAX {
            return Err(CommandError::UndefinedLength {
                group,
                element: elem,
            });
        }
        if length % 2 != 0 {
            return Err(CommandError::OddLength {
                group,
                element: elem,
                length,
            });
        }
        let Some(value) = rest[8..].get(..length as usize) else {
            return Err(CommandError::Truncated {
                offset: pos + 8,
                needed: length as usize,
                available: rest.len() - 8,
            });
        };
        pos += 8 + length as usize;
        if group != 0x0000 {
            continue;
        }
        let us = || -> Result<u16, CommandError> {
            match value {
                [a, b] => Ok(u16::from_le_bytes([*a, *b])),
                _ => Err(CommandError::InvalidValueLength {
                    element: elem,
                    length,
                }),
            }
        };
        match elem {
            element::AFFECTED_SOP_CLASS_UID => cmd.affected_sop_class_uid = Some(text(value)),
            element::REQUESTED_SOP_CLASS_UID => cmd.requested_sop_class_uid = Some(text(value)),
            element::COMMAND_FIELD => command_field = Some(us()?),
            element::MESSAGE_ID => cmd.message_id = Some(us()?),
            element::MESSAGE_ID_BEING_RESPONDED_TO => {
                cmd.message_id_being_responded_to = Some(us()?)
            }
            element::MOVE_DESTINATION => cmd.move_destination = Some(text(value)),
            element::PRIORITY => cmd.priority = Some(us()?),
            element::COMMAND_DATA_SET_TYPE => data_set_type = Some(us()?),
            element::STATUS => cmd.status = Some(us()?),
            element::ERROR_COMMENT => cmd.error_comment = Some(text(value)),
            element::AFFECTED_SOP_INSTANCE_UID => cmd.affected_sop_instance_uid = Some(text(value)),
            element::REQUESTED_SOP_INSTANCE_UID => {
                cmd.requested_sop_instance_uid = Some(text(value))
            }
            element::NUMBER_OF_REMAINING_SUB_OPERATIONS => {
                cmd.sub_operations.get_or_insert_with(SubOperations::default).remaining = Some(us()?)
            }
            element::NUMBER_OF_COMPLETED_SUB_OPERATIONS => {
                cmd.sub_operations.get_or_insert_with(SubOperations::default).completed = us()?
            }
            element::NUMBER_OF_FAILED_SUB_OPERATIONS => {
                cmd.sub_operations.get_or_insert_with(SubOperations::default).failed = us()?
            }
            element::NUMBER_OF_WARNING_SUB_OPERATIONS => {
                cmd.sub_operations.get_or_insert_with(SubOperations::default).warning = us()?
            }
            element::MOVE_ORIGINATOR_AE_TITLE => cmd.move_originator_ae_title = Some(text(value)),
            element::MOVE_ORIGINATOR_MESSAGE_ID => cmd.move_originator_message_id = Some(us()?),
            _ => {}
        }
    }
    cmd.command_field =
        command_field.ok_or(CommandError::MissingElement(element::COMMAND_FIELD))?;
    cmd.data_set_type =
        data_set_type.ok_or(CommandError::MissingElement(element::COMMAND_DATA_SET_TYPE))?;
    Ok(cmd)
}

/// ISO 8859-1 bytes to a string without NUL/space padding.
fn text(value: &[u8]) -> String {
    let start = value.iter().position(|&b| b != 0 && b != b' ');
    let Some(start) = start else {
        return String::new();
    };
    let end = value
        .iter()
        .rposition(|&b| b != 0 && b != b' ')
        .unwrap_or(start)
        + 1;
    value[start..end].iter().map(|&b| char::from(b)).collect()
}

fn put_header(out: &mut Vec<u8>, elem: u16, length: u32) {
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&elem.to_le_bytes());
    out.extend_from_slice(&length.to_le_bytes());
}

fn put_us(out: &mut Vec<u8>, elem: u16, v: u16) {
    put_header(out, elem, 2);
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_text(out: &mut Vec<u8>, elem: u16, s: &str, pad: u8) {
    let n = s.chars().count();
    let padded = n + n % 2;
    put_header(out, elem, padded as u32);
    out.extend(s.chars().map(|c| u8::try_from(c).unwrap_or(b'?')));
    if n % 2 == 1 {
        out.push(pad);
    }
}

/// Encodes a command set in Implicit VR Little Endian.
///
/// Writes (0000,0000) group length, (0000,0100), (0000,0800) and every
/// `Some` field, in ascending tag order, the way dcmtk does. UIDs are padded
/// to even length with NUL, other strings with a space. Values are written
/// as given: callers keep UIDs within 64 and AE titles within 16 characters.
pub fn encode_command(cmd: &Command) -> Vec<u8> {
    const UI: u8 = 0;
    const SP: u8 = b' ';
    let mut out = Vec::with_capacity(192);
    put_header(&mut out, element::COMMAND_GROUP_LENGTH, 4);
    out.extend_from_slice(&[0; 4]);
    let start = out.len();
    let text = |out: &mut Vec<u8>, elem, v: &Option<String>, pad| {
        if let Some(s) = v {
            put_text(out, elem, s, pad);
        }
    };
    let us = |out: &mut Vec<u8>, elem, v: Option<u16>| {
        if let Some(v) = v {
            put_us(out, elem, v);
        }
    };
    text(
        &mut out,
        element::AFFECTED_SOP_CLASS_UID,
        &cmd.affected_sop_class_uid,
        UI,
    );
    text(
        &mut out,
        element::REQUESTED_SOP_CLASS_UID,
        &cmd.requested_sop_class_uid,
        UI,
    );
    put_us(&mut out, element::COMMAND_FIELD, cmd.command_field);
    us(&mut out, element::MESSAGE_ID, cmd.message_id);
    us(
        &mut out,
        element::MESSAGE_ID_BEING_RESPONDED_TO,
        cmd.message_id_being_responded_to,
    );
    text(
        &mut out,
        element::MOVE_DESTINATION,
        &cmd.move_destination,
        SP,
    );
    us(&mut out, element::PRIORITY, cmd.priority);
    put_us(&mut out, element::COMMAND_DATA_SET_TYPE, cmd.data_set_type);
    us(&mut out, element::STATUS, cmd.status);
    text(&mut out, element::ERROR_COMMENT, &cmd.error_comment, SP);
    text(
        &mut out,
        element::AFFECTED_SOP_INSTANCE_UID,
        &cmd.affected_sop_instance_uid,
        UI,
    );
    text(
        &mut out,
        element::REQUESTED_SOP_INSTANCE_UID,
        &cmd.requested_sop_instance_uid,
        UI,
    );
    if let Some(sub) = cmd.sub_operations {
        us(&mut out, element::NUMBER_OF_REMAINING_SUB_OPERATIONS, sub.remaining);
        put_us(&mut out, element::NUMBER_OF_COMPLETED_SUB_OPERATIONS, sub.completed);
        put_us(&mut out, element::NUMBER_OF_FAILED_SUB_OPERATIONS, sub.failed);
        put_us(&mut out, element::NUMBER_OF_WARNING_SUB_OPERATIONS, sub.warning);
    }
    text(
        &mut out,
        element::MOVE_ORIGINATOR_AE_TITLE,
        &cmd.move_originator_ae_title,
        SP,
    );
    us(
        &mut out,
        element::MOVE_ORIGINATOR_MESSAGE_ID,
        cmd.move_originator_message_id,
    );
    let group_length = (out.len() - start) as u32;
    out[start - 4..start].copy_from_slice(&group_length.to_le_bytes());
    out
}

/// C-ECHO-RSP (PS3.7 9.3.5.2) answering message `message_id`.
pub fn c_echo_rsp(message_id: u16, sop_class_uid: &str, status: u16) -> Command {
    Command {
        command_field: command_field::C_ECHO_RSP,
        message_id_being_responded_to: Some(message_id),
        affected_sop_class_uid: Some(sop_class_uid.to_owned()),
        data_set_type: NO_DATA_SET,
        status: Some(status),
        ..Command::default()
    }
}

/// Longest Error Comment (0000,0902) value, VR LO.
pub const MAX_ERROR_COMMENT_LEN: usize = 64;

/// C-STORE-RSP (PS3.7 9.3.1.2) answering message `message_id`.
///
/// The error comment is cut to [`MAX_ERROR_COMMENT_LEN`] characters.
pub fn c_store_rsp(
    message_id: u16,
    sop_class_uid: &str,
    sop_instance_uid: &str,
    status: u16,
    error_comment: Option<&str>,
) -> Command {
    Command {
        command_field: command_field::C_STORE_RSP,
        message_id_being_responded_to: Some(message_id),
        affected_sop_class_uid: Some(sop_class_uid.to_owned()),
        affected_sop_instance_uid: Some(sop_instance_uid.to_owned()),
        data_set_type: NO_DATA_SET,
        status: Some(status),
        error_comment: error_comment.map(|c| c.chars().take(MAX_ERROR_COMMENT_LEN).collect()),
        ..Command::default()
    }
}

/// A C-FIND-RSP (PS3.7 9.3.2.2) answering message `message_id`; `has_identifier`
/// for a Pending response that carries a matching identifier.
pub fn c_find_rsp(message_id: u16, sop_class_uid: &str, status: u16, has_identifier: bool) -> Command {
    Command {
        command_field: command_field::C_FIND_RSP,
        message_id_being_responded_to: Some(message_id),
        affected_sop_class_uid: Some(sop_class_uid.to_owned()),
        data_set_type: if has_identifier { DATA_SET_PRESENT } else { NO_DATA_SET },
        status: Some(status),
        ..Command::default()
    }
}

/// A C-GET-RSP or C-MOVE-RSP (PS3.7 9.3.3.2, 9.3.4.2) answering message
/// `message_id`. `response_field` is [`command_field::C_GET_RSP`] or
/// [`command_field::C_MOVE_RSP`]; `has_identifier` when a Failed SOP Instance
/// UID List follows.
pub fn c_retrieve_rsp(
    response_field: u16,
    message_id: u16,
    sop_class_uid: &str,
    status: u16,
    sub_operations: SubOperations,
    has_identifier: bool,
) -> Command {
    Command {
        command_field: response_field,
        message_id_being_responded_to: Some(message_id),
        affected_sop_class_uid: Some(sop_class_uid.to_owned()),
        data_set_type: if has_identifier { DATA_SET_PRESENT } else { NO_DATA_SET },
        status: Some(status),
        sub_operations: Some(sub_operations),
        ..Command::default()
    }
}

/// A C-STORE-RQ (PS3.7 9.3.1.1) for a sub-operation of a C-GET or C-MOVE;
/// `move_originator` is the AE title and message ID of the C-MOVE it serves.
pub fn c_store_rq(
    message_id: u16,
    sop_class_uid: &str,
    sop_instance_uid: &str,
    move_originator: Option<(&str, u16)>,
) -> Command {
    Command {
        command_field: command_field::C_STORE_RQ,
        message_id: Some(message_id),
        affected_sop_class_uid: Some(sop_class_uid.to_owned()),
        affected_sop_instance_uid: Some(sop_instance_uid.to_owned()),
        priority: Some(priority::MEDIUM),
        data_set_type: DATA_SET_PRESENT,
        move_originator_ae_title: move_originator.map(|(ae, _)| ae.to_owned()),
        move_originator_message_id: move_originator.map(|(_, id)| id),
        ..Command::default()
    }
}
