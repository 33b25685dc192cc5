//! Upper-layer PDU framing, DICOM PS3.8 section 9.3.
//!
//! Two layers live here:
//!
//! * byte-level framing that the engine uses on every read and write:
//!   [`parse_pdu_header`], [`parse_pdv_header`], [`encode_pdata_headers`],
//!   [`encode_pdata_fragments`] and the fixed ten-byte release and abort PDUs;
//! * association PDUs, which are rare and complex, delegated to `dicom-ul`:
//!   [`decode_associate_rq`] (with the clean-ups `dicom-ul` leaves out) and
//!   [`encode_pdu`].
//!
//! Nothing here allocates on the P-DATA path except the output `Vec` the
//! caller hands in.

use dicom_ul::pdu::{
    AssociationRQ, Pdu, PresentationContextProposed, ReadError, UserVariableItem, WriteError,
};

#[doc(hidden)]
pub mod fuzz;
#[cfg(test)]
pub(crate) mod test_support;
#[cfg(test)]
mod tests;

/// Length of a PDU header: PDU type (1), reserved (1), PDU length (4, big endian).
pub const PDU_HEADER_LEN: usize = 6;

/// Length of a presentation data value item header as it precedes the data:
/// item length (4, big endian), presentation context ID (1), message control header (1).
pub const PDV_HEADER_LEN: usize = 6;

/// PDU type codes, PS3.8 table 9-11 and sections 9.3.2 to 9.3.8.
pub mod pdu_type {
    /// A-ASSOCIATE-RQ.
    pub const ASSOCIATE_RQ: u8 = 0x01;
    /// A-ASSOCIATE-AC.
    pub const ASSOCIATE_AC: u8 = 0x02;
    /// A-ASSOCIATE-RJ.
    pub const ASSOCIATE_RJ: u8 = 0x03;
    /// P-DATA-TF.
    pub const P_DATA_TF: u8 = 0x04;
    /// A-RELEASE-RQ.
    pub const RELEASE_RQ: u8 = 0x05;
    /// A-RELEASE-RP.
    pub const RELEASE_RP: u8 = 0x06;
    /// A-ABORT.
    pub const ABORT: u8 = 0x07;
}

/// A-ABORT reason/diag values for source 2, DICOM UL service-provider (PS3.8 table 9-26).
pub mod abort_reason {
    /// reason-not-specified.
    pub const NOT_SPECIFIED: u8 = 0;
    /// unrecognized-PDU.
    pub const UNRECOGNIZED_PDU: u8 = 1;
    /// unexpected-PDU.
    pub const UNEXPECTED_PDU: u8 = 2;
    /// unrecognized-PDU parameter.
    pub const UNRECOGNIZED_PDU_PARAMETER: u8 = 4;
    /// unexpected-PDU parameter.
    pub const UNEXPECTED_PDU_PARAMETER: u8 = 5;
    /// invalid-PDU-parameter value.
    pub const INVALID_PDU_PARAMETER: u8 = 6;
}

/// Everything that can go wrong in this module.
#[derive(Debug, thiserror::Error)]
pub enum PduError {
    /// A PDV item length below 2 cannot hold the context ID and the message
    /// control header (PS3.8 9.3.5.1).
    #[error("PDV item length {0} is below the minimum of 2")]
    InvalidPdvItemLength(u32),
    /// Fewer bytes than a PDU header.
    #[error("{available} bytes cannot hold a PDU header of {PDU_HEADER_LEN} bytes")]
    TooShort {
        /// bytes handed in
        available: usize,
    },
    /// The PDU is not of the type the function decodes.
    #[error("expected PDU type {expected:#04x}, found {found:#04x}")]
    UnexpectedPduType {
        /// the type the function decodes
        expected: u8,
        /// the type in the header
        found: u8,
    },
    /// The PDU length field disagrees with the number of bytes handed in.
    #[error("PDU length field says {declared} bytes after the header, {actual} were given")]
    LengthMismatch {
        /// value of the PDU length field
        declared: u32,
        /// bytes after the header actually present
        actual: usize,
    },
    /// `dicom-ul` could not make sense of the A-ASSOCIATE-RQ body.
    #[error("malformed A-ASSOCIATE-RQ: {0}")]
    MalformedAssociateRq(#[source] ReadError),
    /// `dicom-ul` returned something other than an A-ASSOCIATE-RQ (or nothing).
    #[error("A-ASSOCIATE-RQ could not be read completely")]
    IncompleteAssociateRq,
    /// `dicom-ul` could not encode the PDU (for example an AE title over 16 bytes
    /// or a character outside ISO 8859-1).
    #[error("could not encode PDU: {0}")]
    Encode(#[source] WriteError),
}

/// The fixed header of every PDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PduHeader {
    /// PDU type, see [`pdu_type`].
    pub pdu_type: u8,
    /// Number of bytes that follow the header.
    pub length: u32,
}

/// Parses the 6-byte PDU header at the start of `bytes`.
///
/// Returns `None` when fewer than [`PDU_HEADER_LEN`] bytes are available. The
/// PDU type is not validated; unknown types are the caller's to abort on.
pub fn parse_pdu_header(bytes: &[u8]) -> Option<PduHeader> {
    let h: &[u8; PDU_HEADER_LEN] = bytes.get(..PDU_HEADER_LEN)?.try_into().ok()?;
    Some(PduHeader {
        pdu_type: h[0],
        length: u32::from_be_bytes([h[2], h[3], h[4], h[5]]),
    })
}

/// The header of one presentation data value item inside a P-DATA-TF PDU
/// (PS3.8 9.3.5.1 and annex E.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PdvHeader {
    /// Bytes after the item length field: context ID (1), message control
    /// header (1) and the data fragment. At least 2.
    pub item_length: u32,
    /// Presentation context ID.
    pub context_id: u8,
    /// Message control header bit 0: the fragment is command information
    /// (otherwise data set information).
    pub is_command: bool,
    /// Message control header bit 1: this is the last fragment of the
    /// command or data set.
    pub is_last: bool,
}

impl PdvHeader {
    /// Length of the data fragment that follows the [`PDV_HEADER_LEN`] header bytes.
    pub fn data_len(&self) -> usize {
        self.item_length.saturating_sub(2) as usize
    }
}

/// Parses the 6-byte PDV item header at the start of `bytes`.
///
/// `Ok(None)` when fewer than [`PDV_HEADER_LEN`] bytes are available,
/// `Err` when the item length is below 2. The reserved bits 2-7 of the
/// message control header are not tested.
pub fn parse_pdv_header(bytes: &[u8]) -> Result<Option<PdvHeader>, PduError> {
    let Some(h) = bytes.get(..PDV_HEADER_LEN) else {
        return Ok(None);
    };
    let item_length = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
    if item_length < 2 {
        return Err(PduError::InvalidPdvItemLength(item_length));
    }
    Ok(Some(PdvHeader {
        item_length,
        context_id: h[4],
        is_command: h[5] & 0x01 != 0,
        is_last: h[5] & 0x02 != 0,
    }))
}

/// Largest data fragment that fits in one PDV of one P-DATA-TF PDU, whose
/// length field is a `u32` that also counts the 6-byte PDV header.
const MAX_FRAGMENT: usize = ((u32::MAX as usize) - PDV_HEADER_LEN) & !1;

/// Writes a P-DATA-TF PDU header followed by one PDV header announcing
/// `data_len` bytes; the caller appends the data.
///
/// # Panics
///
/// When `data_len` exceeds `u32::MAX - 6`, which no PDU can carry: use
/// [`encode_pdata_fragments`] for data of unbounded size.
pub fn encode_pdata_headers(
    out: &mut Vec<u8>,
    context_id: u8,
    is_command: bool,
    is_last: bool,
    data_len: usize,
) {
    assert!(
        data_len <= u32::MAX as usize - PDV_HEADER_LEN,
        "PDV data of {data_len} bytes does not fit in one P-DATA-TF PDU"
    );
    let pdu_length = (data_len + PDV_HEADER_LEN) as u32;
    let item_length = (data_len + 2) as u32;
    let mch = u8::from(is_command) | (u8::from(is_last) << 1);
    let l = pdu_length.to_be_bytes();
    let i = item_length.to_be_bytes();
    out.extend_from_slice(&[
        pdu_type::P_DATA_TF,
        0,
        l[0],
        l[1],
        l[2],
        l[3],
        i[0],
        i[1],
        i[2],
        i[3],
        context_id,
        mch,
    ]);
}

/// Largest data fragment per PDV for a peer's maximum PDU length.
///
/// `max_pdu_length` is the Maximum-length-received the peer announced (PS3.8
/// D.1): the largest value it accepts in the PDU-length field of a P-DATA-TF,
/// which counts the 6-byte PDV header but not the 6-byte PDU header. 0 means
/// no limit. Fragments are kept even (DICOM values are even-length, so this
/// keeps fragment boundaries on value boundaries where dcmtk puts them) and
/// never below 2 bytes, even for a nonsensical peer limit under 8.
pub fn max_fragment_len(max_pdu_length: u32) -> usize {
    if max_pdu_length == 0 {
        return MAX_FRAGMENT;
    }
    let room = (max_pdu_length as usize).saturating_sub(PDV_HEADER_LEN) & !1;
    room.clamp(2, MAX_FRAGMENT)
}

/// Encodes `data` as a sequence of P-DATA-TF PDUs, one PDV each, none larger
/// than `max_pdu_length` (0 = unlimited), setting the last-fragment bit on
/// the final PDV.
///
/// "Larger" is measured as the PDU-length field, the way the peer checks its
/// Maximum-length-received (PS3.8 D.1): header excluded, PDV header included.
/// Empty `data` yields a single PDV with no data and the last bit set.
pub fn encode_pdata_fragments(
    out: &mut Vec<u8>,
    context_id: u8,
    is_command: bool,
    data: &[u8],
    max_pdu_length: u32,
) {
    let chunk = max_fragment_len(max_pdu_length);
    let pieces = data.len().div_ceil(chunk).max(1);
    out.reserve(data.len() + pieces * (PDU_HEADER_LEN + PDV_HEADER_LEN));
    if data.is_empty() {
        encode_pdata_headers(out, context_id, is_command, true, 0);
        return;
    }
    let mut rest = data;
    while !rest.is_empty() {
        let n = rest.len().min(chunk);
        let (piece, tail) = rest.split_at(n);
        encode_pdata_headers(out, context_id, is_command, tail.is_empty(), n);
        out.extend_from_slice(piece);
        rest = tail;
    }
}

fn fixed_pdu(pdu_type: u8, b9: u8, b10: u8) -> [u8; 10] {
    [pdu_type, 0, 0, 0, 0, 4, 0, 0, b9, b10]
}

/// A-RELEASE-RP (PS3.8 9.3.7).
pub fn encode_release_rp() -> [u8; 10] {
    fixed_pdu(pdu_type::RELEASE_RP, 0, 0)
}

/// A-RELEASE-RQ (PS3.8 9.3.6).
pub fn encode_release_rq() -> [u8; 10] {
    fixed_pdu(pdu_type::RELEASE_RQ, 0, 0)
}

/// A-ABORT from the service provider (source 2) with the given reason, or
/// from the service user (source 0) when `reason` is None (PS3.8 9.3.8).
pub fn encode_abort(reason: Option<u8>) -> [u8; 10] {
    match reason {
        Some(r) => fixed_pdu(pdu_type::ABORT, 2, r),
        None => fixed_pdu(pdu_type::ABORT, 0, 0),
    }
}

/// The largest max-PDU argument `dicom-ul`'s reader accepts; the real size
/// check is ours (the slice handed in), so the reader must not add one.
const READER_MAX_PDU: u32 = dicom_ul::pdu::MAXIMUM_PDU_SIZE;

/// Decodes a whole A-ASSOCIATE-RQ PDU (header included) with `dicom-ul`.
///
/// AE titles are trimmed of leading/trailing spaces (a title of 16 spaces
/// becomes ""); the application context name, abstract and transfer syntaxes,
/// implementation class UID, version name and the SOP class UIDs of role
/// selection and extended negotiation items are trimmed of NUL and space
/// padding, which `dicom-ul` leaves in place. A Maximum Length sub-item of 0
/// is kept as 0 (no limit, PS3.8 D.1).
///
/// `pdu` must be exactly one PDU: its length field must match the bytes
/// after the header.
pub fn decode_associate_rq(pdu: &[u8]) -> Result<AssociationRQ, PduError> {
    let header = parse_pdu_header(pdu).ok_or(PduError::TooShort {
        available: pdu.len(),
    })?;
    if header.pdu_type != pdu_type::ASSOCIATE_RQ {
        return Err(PduError::UnexpectedPduType {
            expected: pdu_type::ASSOCIATE_RQ,
            found: header.pdu_type,
        });
    }
    let body_len = pdu.len() - PDU_HEADER_LEN;
    if header.length as usize != body_len {
        return Err(PduError::LengthMismatch {
            declared: header.length,
            actual: body_len,
        });
    }
    match dicom_ul::pdu::read_pdu(pdu, READER_MAX_PDU, false) {
        Ok(Some(Pdu::AssociationRQ(rq))) => Ok(clean_associate_rq(rq)),
        Ok(_) => Err(PduError::IncompleteAssociateRq),
        Err(e) => Err(PduError::MalformedAssociateRq(e)),
    }
}

/// Trims NUL and space padding from both ends, allocation-free when clean.
pub(crate) fn trim_padding(s: &str) -> &str {
    s.trim_matches(|c: char| c == '\0' || c == ' ')
}

fn clean(s: &mut String) {
    let t = trim_padding(s);
    if t.len() != s.len() {
        *s = t.to_owned();
    }
}

fn clean_associate_rq(mut rq: AssociationRQ) -> AssociationRQ {
    clean(&mut rq.called_ae_title);
    clean(&mut rq.calling_ae_title);
    clean(&mut rq.application_context_name);
    for PresentationContextProposed {
        abstract_syntax,
        transfer_syntaxes,
        ..
    } in &mut rq.presentation_contexts
    {
        clean(abstract_syntax);
        transfer_syntaxes.iter_mut().for_each(clean);
    }
    for item in &mut rq.user_variables {
        match item {
            UserVariableItem::ImplementationClassUID(s)
            | UserVariableItem::ImplementationVersionName(s)
            | UserVariableItem::SopClassExtendedNegotiationSubItem(s, _)
            | UserVariableItem::ScuScpRoleSelectionSubItem(s, _) => clean(s),
            _ => {}
        }
    }
    rq
}

/// Encodes any PDU with `dicom-ul` (used for A-ASSOCIATE-AC and -RJ).
pub fn encode_pdu(pdu: &Pdu) -> Result<Vec<u8>, PduError> {
    let mut out = Vec::with_capacity(256);
    dicom_ul::pdu::write_pdu(&mut out, pdu).map_err(PduError::Encode)?;
    Ok(out)
}
