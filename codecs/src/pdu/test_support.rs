//! Hand-made association PDUs, byte by byte per PS3.8 9.3.2, for tests.
//! Deliberately independent of dicom-ul's writer.

/// A 16-byte AE title field: `s` as given (it may carry its own leading
/// spaces), right-padded with spaces.
pub(crate) fn ae(s: &str) -> [u8; 16] {
    let mut f = [b' '; 16];
    f[..s.len()].copy_from_slice(s.as_bytes());
    f
}

/// A UID padded to even length with NUL, the way many toolkits send it.
pub(crate) fn uid_nul(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    if v.len() % 2 == 1 {
        v.push(0);
    }
    v
}

/// An item with a 2-byte length: type, reserved, length (BE), value.
pub(crate) fn item(item_type: u8, value: &[u8]) -> Vec<u8> {
    let mut v = vec![item_type, 0];
    v.extend_from_slice(&(value.len() as u16).to_be_bytes());
    v.extend_from_slice(value);
    v
}

/// Maximum Length sub-item (51H).
pub(crate) fn max_length(n: u32) -> Vec<u8> {
    item(0x51, &n.to_be_bytes())
}

/// SCP/SCU Role Selection sub-item (54H).
pub(crate) fn role_selection(uid: &[u8], scu: bool, scp: bool) -> Vec<u8> {
    let mut v = (uid.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(uid);
    v.push(scu as u8);
    v.push(scp as u8);
    item(0x54, &v)
}

/// Presentation Context item (20H) with raw abstract and transfer syntax bytes.
pub(crate) fn presentation_context(id: u8, abstract_syntax: &[u8], ts: &[&[u8]]) -> Vec<u8> {
    let mut v = vec![id, 0, 0, 0];
    v.extend(item(0x30, abstract_syntax));
    for t in ts {
        v.extend(item(0x40, t));
    }
    item(0x20, &v)
}

/// An A-ASSOCIATE-RQ PDU.
pub(crate) struct Rq {
    pub protocol_version: u16,
    pub called: [u8; 16],
    pub calling: [u8; 16],
    pub application_context: Vec<u8>,
    /// Encoded presentation context items.
    pub contexts: Vec<Vec<u8>>,
    /// Encoded user information sub-items; `None` leaves out the 50H item.
    pub user: Option<Vec<Vec<u8>>>,
}

impl Rq {
    /// Calling AE of sixteen spaces, called AE "  NECTAR" with leading and
    /// trailing padding, NUL-padded UIDs, CT Image Storage proposed with JPEG
    /// Baseline then Implicit VR LE, Verification with Implicit VR LE, and a
    /// user information item with the given max length.
    pub fn typical(max_len: u32) -> Rq {
        Rq {
            protocol_version: 1,
            called: ae("  NECTAR"),
            calling: ae(""),
            application_context: uid_nul("1.2.840.10008.3.1.1.1"),
            contexts: vec![
                presentation_context(
                    1,
                    &uid_nul("1.2.840.10008.5.1.4.1.1.2"),
                    &[
                        &uid_nul("1.2.840.10008.1.2.4.50"),
                        &uid_nul("1.2.840.10008.1.2"),
                    ],
                ),
                presentation_context(
                    3,
                    &uid_nul("1.2.840.10008.1.1"),
                    &[&uid_nul("1.2.840.10008.1.2")],
                ),
            ],
            user: Some(vec![
                max_length(max_len),
                item(0x52, &uid_nul("1.2.276.0.7230010.3.0.3.6.8")),
                role_selection(&uid_nul("1.2.840.10008.5.1.4.1.1.2"), true, false),
                item(0x55, b"OFFIS_DCMTK_368 "),
            ]),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&self.protocol_version.to_be_bytes());
        body.extend_from_slice(&[0, 0]);
        body.extend_from_slice(&self.called);
        body.extend_from_slice(&self.calling);
        body.extend_from_slice(&[0; 32]);
        body.extend(item(0x10, &self.application_context));
        for c in &self.contexts {
            body.extend_from_slice(c);
        }
        if let Some(user) = &self.user {
            body.extend(item(0x50, &user.concat()));
        }
        let mut pdu = vec![0x01, 0];
        pdu.extend_from_slice(&(body.len() as u32).to_be_bytes());
        pdu.extend(body);
        pdu
    }
}

/// A C-STORE-RQ command set written the way dcmtk's storescu writes one:
/// group length first, then ascending tags, UIDs NUL-padded, US values.
pub(crate) fn dcmtk_c_store_rq() -> Vec<u8> {
    fn el(out: &mut Vec<u8>, elem: u16, value: &[u8]) {
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&elem.to_le_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(value);
    }
    let mut rest = Vec::new();
    el(&mut rest, 0x0002, &uid_nul("1.2.840.10008.5.1.4.1.1.2")); // 26 bytes, even
    el(&mut rest, 0x0100, &0x0001u16.to_le_bytes());
    el(&mut rest, 0x0110, &7u16.to_le_bytes());
    el(&mut rest, 0x0700, &0u16.to_le_bytes());
    el(&mut rest, 0x0800, &0x0001u16.to_le_bytes());
    el(
        &mut rest,
        0x1000,
        &uid_nul("1.2.826.0.1.3680043.2.1125.1.123456"),
    ); // 35 chars -> NUL
    let mut out = Vec::new();
    el(&mut out, 0x0000, &(rest.len() as u32).to_le_bytes());
    out.extend(rest);
    out
}
