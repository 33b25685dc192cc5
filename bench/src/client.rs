//! A minimal, low-overhead C-STORE SCU.
//!
//! [`Association`] opens an association (A-ASSOCIATE-RQ built with
//! `dicom-ul`), writes requests handed to it as I/O slices with vectored
//! writes, reads responses through one reused buffer and releases.
//! [`StoreRequests`] turns a template into the bytes of one C-STORE-RQ per
//! instance without allocating: the command set is encoded once per template
//! and patched (Message ID, Affected SOP Instance UID), the data set is a
//! per-association copy of the template patched in place, and the PDU and
//! PDV headers go into one reused buffer, interleaved with slices of the data
//! set so a request of any size is written with as few `writev` calls as the
//! socket allows.

use std::io::IoSlice;
use std::ops::Range;
use std::time::Duration;

use dicom_ul::pdu::{AssociationRQ, Pdu, PresentationContextProposed, UserVariableItem};
use nectar_codecs::command::{
    command_field, decode_command, element, encode_command, priority, Command,
};
use nectar_codecs::negotiation::DICOM_APPLICATION_CONTEXT;
use nectar_codecs::pdu::{
    encode_abort, encode_pdata_fragments, encode_pdata_headers, encode_pdu, encode_release_rq,
    max_fragment_len, parse_pdu_header, parse_pdv_header, pdu_type, PDU_HEADER_LEN, PDV_HEADER_LEN,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::template::Template;
use crate::uid::{UidGen, UID_LEN};

/// Implementation Class UID nectar-load announces (a UUID under 2.25).
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.247134001658779591003755465783251378730";
/// Implementation Version Name nectar-load announces.
pub const IMPLEMENTATION_VERSION_NAME: &str = "NECTARLOAD_010";

/// Most slices handed to one `writev` (Linux's IOV_MAX is 1024).
const MAX_IOV: usize = 1024;

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub host: String,
    pub port: u16,
    pub called_ae: String,
    pub calling_ae: String,
    /// Our Maximum Length Received (0 = unlimited).
    pub max_pdu: u32,
    /// Limit on connecting, on each response and on the release.
    pub timeout: Duration,
}

/// The presentation contexts to propose for a set of templates: one per
/// distinct (SOP class, transfer syntax), with odd IDs from 1, and for each
/// template the ID of its context.
pub fn proposals(templates: &[Template]) -> (Vec<PresentationContextProposed>, Vec<u8>) {
    let mut contexts: Vec<PresentationContextProposed> = Vec::new();
    let mut ids = Vec::with_capacity(templates.len());
    for t in templates {
        let existing = contexts.iter().find(|c| {
            c.abstract_syntax == t.sop_class_uid && c.transfer_syntaxes[0] == t.transfer_syntax_uid
        });
        let id = match existing {
            Some(c) => c.id,
            None => {
                let id = (contexts.len() * 2 + 1) as u8;
                contexts.push(PresentationContextProposed {
                    id,
                    abstract_syntax: t.sop_class_uid.clone(),
                    transfer_syntaxes: vec![t.transfer_syntax_uid.clone()],
                });
                id
            }
        };
        ids.push(id);
    }
    (contexts, ids)
}

/// Reads whole PDUs through one buffer that is reused (and grown only for a
/// PDU larger than any before).
struct PduReader {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Largest PDU body accepted.
    limit: usize,
}

impl PduReader {
    fn new(limit: usize) -> PduReader {
        PduReader {
            buf: vec![0; 64 << 10],
            start: 0,
            end: 0,
            limit,
        }
    }

    /// Makes at least `n` unread bytes available.
    async fn fill(&mut self, stream: &mut TcpStream, n: usize) -> Result<(), String> {
        if self.end - self.start >= n {
            return Ok(());
        }
        if self.start + n > self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if n > self.buf.len() {
                self.buf.resize(n, 0);
            }
        }
        while self.end - self.start < n {
            let got = stream
                .read(&mut self.buf[self.end..])
                .await
                .map_err(|e| format!("read: {e}"))?;
            if got == 0 {
                return Err("the peer closed the connection".into());
            }
            self.end += got;
        }
        Ok(())
    }

    /// The next PDU: its type and the range of the whole PDU (header
    /// included) in `self.buf`, valid until the next call.
    async fn next(&mut self, stream: &mut TcpStream) -> Result<(u8, Range<usize>), String> {
        self.fill(stream, PDU_HEADER_LEN).await?;
        let header = parse_pdu_header(&self.buf[self.start..self.end]).expect("6 bytes are there");
        let len = header.length as usize;
        if len > self.limit {
            return Err(format!(
                "received a PDU of {len} bytes, above our maximum of {}",
                self.limit
            ));
        }
        self.fill(stream, PDU_HEADER_LEN + len).await?;
        let range = self.start..self.start + PDU_HEADER_LEN + len;
        self.start = range.end;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        Ok((header.pdu_type, range))
    }
}

/// An established association.
pub struct Association {
    stream: TcpStream,
    reader: PduReader,
    peer_max_pdu: u32,
    timeout: Duration,
    command: Vec<u8>,
}

async fn with_timeout<T>(
    limit: Duration,
    what: &str,
    fut: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {limit:?} waiting for {what}")),
    }
}

fn describe_abort(pdu: &[u8]) -> String {
    match pdu.get(8..10) {
        Some([source, reason]) => {
            format!("the association was aborted (A-ABORT source {source}, reason {reason})")
        }
        _ => "the association was aborted (A-ABORT)".into(),
    }
}

impl Association {
    /// Connects, proposes `contexts`, and checks that every one is accepted
    /// with the proposed transfer syntax.
    pub async fn open(
        config: &ClientConfig,
        contexts: &[PresentationContextProposed],
    ) -> Result<Association, String> {
        let addr = format!("{}:{}", config.host, config.port);
        let stream = with_timeout(config.timeout, "the TCP connection", async {
            TcpStream::connect(&addr)
                .await
                .map_err(|e| format!("connect to {addr}: {e}"))
        })
        .await?;
        stream
            .set_nodelay(true)
            .map_err(|e| format!("TCP_NODELAY: {e}"))?;
        let limit = match config.max_pdu {
            0 => 64 << 20,
            n => (n as usize).max(64 << 10),
        };
        let mut assoc = Association {
            stream,
            reader: PduReader::new(limit),
            peer_max_pdu: 0,
            timeout: config.timeout,
            command: Vec::with_capacity(256),
        };
        let rq = Pdu::AssociationRQ(AssociationRQ {
            protocol_version: 1,
            calling_ae_title: config.calling_ae.clone(),
            called_ae_title: config.called_ae.clone(),
            application_context_name: DICOM_APPLICATION_CONTEXT.to_string(),
            presentation_contexts: contexts.to_vec(),
            user_variables: vec![
                UserVariableItem::MaxLength(config.max_pdu),
                UserVariableItem::ImplementationClassUID(IMPLEMENTATION_CLASS_UID.to_string()),
                UserVariableItem::ImplementationVersionName(
                    IMPLEMENTATION_VERSION_NAME.to_string(),
                ),
            ],
        });
        let bytes = encode_pdu(&rq).map_err(|e| e.to_string())?;
        assoc
            .stream
            .write_all(&bytes)
            .await
            .map_err(|e| format!("write A-ASSOCIATE-RQ: {e}"))?;

        let Association { stream, reader, .. } = &mut assoc;
        let (ty, range) =
            with_timeout(config.timeout, "A-ASSOCIATE-AC", reader.next(stream)).await?;
        let pdu = &reader.buf[range];
        let decoded = || {
            dicom_ul::pdu::read_pdu(pdu, dicom_ul::pdu::MAXIMUM_PDU_SIZE, false)
                .map_err(|e| format!("cannot decode the association answer: {e}"))
        };
        let ac = match ty {
            pdu_type::ASSOCIATE_AC => match decoded()? {
                Some(Pdu::AssociationAC(ac)) => ac,
                other => return Err(format!("unexpected answer {other:?}")),
            },
            pdu_type::ASSOCIATE_RJ => {
                return Err(match decoded()? {
                    Some(Pdu::AssociationRJ(rj)) => format!(
                        "association rejected ({}), source and reason: {}",
                        words(&format!("{:?}", rj.result)),
                        words(&format!("{:?}", rj.source))
                    ),
                    _ => "association rejected".into(),
                })
            }
            pdu_type::ABORT => return Err(describe_abort(pdu)),
            other => {
                return Err(format!(
                    "unexpected PDU type {other:#04x} instead of A-ASSOCIATE-AC"
                ))
            }
        };

        let mut refused = Vec::new();
        for pc in contexts {
            match ac.presentation_contexts.iter().find(|r| r.id == pc.id) {
                Some(r)
                    if r.reason == dicom_ul::pdu::PresentationContextResultReason::Acceptance
                        && r.transfer_syntax.trim_end_matches(['\0', ' '])
                            == pc.transfer_syntaxes[0] => {}
                Some(r) => refused.push(format!(
                    "context {} ({} in {}): {:?}, transfer syntax {:?}",
                    pc.id, pc.abstract_syntax, pc.transfer_syntaxes[0], r.reason, r.transfer_syntax
                )),
                None => refused.push(format!("context {}: no answer", pc.id)),
            }
        }
        if !refused.is_empty() {
            assoc.abort().await;
            return Err(format!(
                "presentation contexts not accepted: {}",
                refused.join("; ")
            ));
        }
        assoc.peer_max_pdu = ac
            .user_variables
            .iter()
            .find_map(|v| match v {
                UserVariableItem::MaxLength(n) => Some(*n),
                _ => None,
            })
            .unwrap_or(0);
        Ok(assoc)
    }

    /// The peer's Maximum Length Received (0 = unlimited).
    pub fn peer_max_pdu(&self) -> u32 {
        self.peer_max_pdu
    }

    /// Writes all of `bufs`, at most [`MAX_IOV`] slices per `writev`.
    pub async fn write_vectored_all(&mut self, mut bufs: &mut [IoSlice<'_>]) -> Result<(), String> {
        IoSlice::advance_slices(&mut bufs, 0);
        while !bufs.is_empty() {
            let n = bufs.len().min(MAX_IOV);
            let written = self
                .stream
                .write_vectored(&bufs[..n])
                .await
                .map_err(|e| format!("write: {e}"))?;
            if written == 0 {
                return Err("write: the socket accepts no more data".into());
            }
            IoSlice::advance_slices(&mut bufs, written);
        }
        Ok(())
    }

    /// Reads the next DIMSE command (C-STORE-RSP), within the timeout.
    pub async fn read_command(&mut self) -> Result<Command, String> {
        let timeout = self.timeout;
        with_timeout(timeout, "the C-STORE-RSP", self.read_command_inner()).await
    }

    async fn read_command_inner(&mut self) -> Result<Command, String> {
        self.command.clear();
        loop {
            let (ty, range) = self.reader.next(&mut self.stream).await?;
            let pdu = &self.reader.buf[range];
            match ty {
                pdu_type::P_DATA_TF => {}
                pdu_type::ABORT => return Err(describe_abort(pdu)),
                pdu_type::RELEASE_RQ => {
                    return Err("the peer asked for a release while a response was due".into())
                }
                other => {
                    return Err(format!(
                        "unexpected PDU type {other:#04x} while waiting for a response"
                    ))
                }
            }
            let mut rest = &pdu[PDU_HEADER_LEN..];
            let mut done = false;
            while !rest.is_empty() {
                let pdv = parse_pdv_header(rest)
                    .map_err(|e| e.to_string())?
                    .ok_or("truncated PDV header")?;
                let data = rest
                    .get(PDV_HEADER_LEN..PDV_HEADER_LEN + pdv.data_len())
                    .ok_or("a PDV runs past its PDU")?;
                if pdv.is_command {
                    self.command.extend_from_slice(data);
                    done |= pdv.is_last;
                }
                rest = &rest[PDV_HEADER_LEN + pdv.data_len()..];
            }
            if done {
                return decode_command(&self.command).map_err(|e| format!("response: {e}"));
            }
        }
    }

    /// A-RELEASE-RQ, then waits for A-RELEASE-RP and closes.
    pub async fn release(mut self) -> Result<(), String> {
        self.stream
            .write_all(&encode_release_rq())
            .await
            .map_err(|e| format!("write A-RELEASE-RQ: {e}"))?;
        let Association {
            stream,
            reader,
            timeout,
            ..
        } = &mut self;
        let result = with_timeout(*timeout, "A-RELEASE-RP", async {
            loop {
                let (ty, range) = reader.next(stream).await?;
                match ty {
                    pdu_type::RELEASE_RP => return Ok(()),
                    pdu_type::P_DATA_TF => continue,
                    pdu_type::ABORT => return Err(describe_abort(&reader.buf[range])),
                    other => {
                        return Err(format!(
                            "unexpected PDU type {other:#04x} instead of A-RELEASE-RP"
                        ))
                    }
                }
            }
        })
        .await;
        let _ = self.stream.shutdown().await;
        result
    }

    /// A-ABORT (service user) and close.
    pub async fn abort(&mut self) {
        let _ = self.stream.write_all(&encode_abort(None)).await;
        let _ = self.stream.shutdown().await;
    }
}

/// A command set encoded once, with the places to patch per request.
#[derive(Debug, Clone)]
struct CommandTemplate {
    bytes: Vec<u8>,
    message_id: Range<usize>,
    sop_instance_uid: Range<usize>,
}

impl CommandTemplate {
    fn c_store_rq(sop_class_uid: &str) -> CommandTemplate {
        let placeholder = "0".repeat(UID_LEN);
        let bytes = encode_command(&Command {
            command_field: command_field::C_STORE_RQ,
            message_id: Some(1),
            affected_sop_class_uid: Some(sop_class_uid.to_string()),
            affected_sop_instance_uid: Some(placeholder),
            priority: Some(priority::MEDIUM),
            data_set_type: 0x0000,
            ..Command::default()
        });
        let find = |wanted: u16| {
            let mut pos = 0;
            while pos + 8 <= bytes.len() {
                let elem = u16::from_le_bytes([bytes[pos + 2], bytes[pos + 3]]);
                let len = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap()) as usize;
                if elem == wanted {
                    return pos + 8..pos + 8 + len;
                }
                pos += 8 + len;
            }
            unreachable!("encode_command wrote element (0000,{wanted:04X})")
        };
        CommandTemplate {
            message_id: find(element::MESSAGE_ID),
            sop_instance_uid: find(element::AFFECTED_SOP_INSTANCE_UID),
            bytes,
        }
    }
}

/// Builds C-STORE-RQs from templates for one association, reusing every
/// buffer.
pub struct StoreRequests<'t> {
    templates: &'t [Template],
    context_ids: &'t [u8],
    gen: &'t UidGen,
    datasets: Vec<Vec<u8>>,
    commands: Vec<CommandTemplate>,
    headers: Vec<u8>,
    /// Per data fragment: range of its 12 header bytes in `headers` and of
    /// its data in the data set.
    fragments: Vec<(Range<usize>, Range<usize>)>,
}

/// One request, ready to write.
pub struct Request<'a> {
    pub slices: Vec<IoSlice<'a>>,
    /// Data set bytes in the request.
    pub dataset_len: usize,
}

impl<'t> StoreRequests<'t> {
    pub fn new(templates: &'t [Template], context_ids: &'t [u8], gen: &'t UidGen) -> Self {
        StoreRequests {
            templates,
            context_ids,
            gen,
            datasets: templates.iter().map(|t| t.dataset.clone()).collect(),
            commands: templates
                .iter()
                .map(|t| CommandTemplate::c_store_rq(&t.sop_class_uid))
                .collect(),
            headers: Vec::with_capacity(1024),
            fragments: Vec::with_capacity(8),
        }
    }

    /// The request storing instance `instance` of series/study `study`,
    /// from template `template`, as message `message_id`, fragmented for a
    /// peer that accepts PDUs of `peer_max_pdu` bytes.
    pub fn build(
        &mut self,
        template: usize,
        study: u64,
        instance: u64,
        message_id: u16,
        peer_max_pdu: u32,
    ) -> Request<'_> {
        let t = &self.templates[template];
        let context_id = self.context_ids[template];
        let dataset = &mut self.datasets[template];
        t.patch(dataset, self.gen, study, study, instance);
        let cmd = &mut self.commands[template];
        cmd.bytes[cmd.message_id.clone()].copy_from_slice(&message_id.to_le_bytes());
        cmd.bytes[cmd.sop_instance_uid.clone()]
            .copy_from_slice(&dataset[t.sop_instance_uid.clone()]);

        self.headers.clear();
        self.fragments.clear();
        encode_pdata_fragments(
            &mut self.headers,
            context_id,
            true,
            &cmd.bytes,
            peer_max_pdu,
        );
        let chunk = max_fragment_len(peer_max_pdu);
        let mut at = 0;
        while at < dataset.len() {
            let n = (dataset.len() - at).min(chunk);
            let h = self.headers.len();
            encode_pdata_headers(
                &mut self.headers,
                context_id,
                false,
                at + n == dataset.len(),
                n,
            );
            self.fragments.push((h..self.headers.len(), at..at + n));
            at += n;
        }

        let dataset: &[u8] = dataset;
        let mut slices = Vec::with_capacity(self.fragments.len() * 2);
        // The command PDUs and the first data header go out as one slice.
        let mut pending_start = 0;
        for (h, d) in &self.fragments {
            slices.push(IoSlice::new(&self.headers[pending_start..h.end]));
            slices.push(IoSlice::new(&dataset[d.clone()]));
            pending_start = h.end;
        }
        Request {
            slices,
            dataset_len: dataset.len(),
        }
    }
}

/// Turns a Rust debug name such as `ServiceUser(CalledAETitleNotRecognized)` into
/// lower-case words ("service user, called AE title not recognized"), keeping acronyms.
fn words(debug: &str) -> String {
    let chars: Vec<char> = debug.chars().collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        match c {
            '(' => out.push_str(", "),
            ')' => {}
            _ if c.is_uppercase() => {
                let prev_upper = i > 0 && chars[i - 1].is_uppercase();
                let prev_lower = i > 0 && chars[i - 1].is_lowercase();
                let next_upper = chars.get(i + 1).is_some_and(|n| n.is_uppercase());
                let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
                if (prev_lower || (prev_upper && next_lower)) && !out.ends_with(' ') {
                    out.push(' ');
                }
                if next_upper || (prev_upper && !next_lower) {
                    out.push(c);
                } else {
                    out.extend(c.to_lowercase());
                }
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod words_tests {
    use super::words;

    #[test]
    fn debug_names_become_words() {
        assert_eq!(words("Permanent"), "permanent");
        assert_eq!(words("ServiceUser(CalledAETitleNotRecognized)"), "service user, called AE title not recognized");
        assert_eq!(words("ServiceProviderASCE(NoReasonGiven)"), "service provider ASCE, no reason given");
    }
}
