//! STOW-RS (PS3.18 section 10.5): `POST /studies` and `POST /studies/{study}`
//! with a `multipart/related; type="application/dicom"` body. Each part is a
//! Part 10 file. Its bytes go into a store record as they arrive, and the
//! instance counts as stored only after its record is durable.

use std::time::Instant;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use nectar_codecs::meta;
use nectar_codecs::scan::{tags, DatasetEncoding};
use serde_json::{Map, Value};

use super::errors::DicomWebError;
use super::media::MediaType;
use super::multipart::{self, Event, Parser};
use super::{json, routes::BytesIn, urls};
use crate::http::HttpState;
use crate::ingest::{self, PartialRecord};
use crate::storage::{SegmentWriter, StoreError};
use crate::telemetry::http as telemetry;

const DICOM: &str = "application/dicom";

/// Maximum finished parts waiting for one joint commit.
const MAX_PENDING_PARTS: usize = 64;

/// Maximum bytes a part's Content-Length reserves in the store before they arrive.
const MAX_RESERVED_PART_LEN: usize = 1 << 30;

/// Failure Reason (0008,1197) values (PS3.4 Table B.2-1, PS3.18 section 10.5.3).
mod reason {
    /// Refused: Out of Resources.
    pub const OUT_OF_RESOURCES: u16 = 0xA700;
    /// Error: Data Set does not match SOP Class (a required attribute is missing).
    pub const DATA_SET_DOES_NOT_MATCH_SOP_CLASS: u16 = 0xA900;
    /// Error: Cannot understand (the part is not a readable Part 10 file).
    pub const CANNOT_UNDERSTAND: u16 = 0xC000;
    /// Refused: the part's media type is not application/dicom. PS3.4 names
    /// 0x0122 "Refused: SOP Class not supported", the nearest standard reason.
    pub const UNSUPPORTED_MEDIA_TYPE: u16 = 0x0122;
    /// Error: the Study Instance UID differs from the one in the request path
    /// (the value of dcm4chee-arc's STOW-RS service).
    pub const STUDY_INSTANCE_UID_MISMATCH: u16 = 0xC409;
    /// Error: the part's transfer syntax is not supported (the value of
    /// dcm4chee-arc's STOW-RS service).
    pub const TRANSFER_SYNTAX_NOT_SUPPORTED: u16 = 0xC122;
}

/// The outcome of one part.
enum PartOutcome {
    Stored { sop_class_uid: String, sop_instance_uid: String, series_instance_uid: String, study_instance_uid: String },
    Failed(PartFailure),
}

struct PartFailure {
    reason: u16,
    message: String,
    sop_class_uid: Option<String>,
    sop_instance_uid: Option<String>,
}

impl PartFailure {
    fn new(reason: u16, message: impl Into<String>) -> PartFailure {
        PartFailure { reason, message: message.into(), sop_class_uid: None, sop_instance_uid: None }
    }
}

/// The part being received.
enum CurrentPart {
    Writing { started: Instant },
    Skipping(PartFailure),
}

/// `POST /dicomweb/studies`.
pub async fn store_instances(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<HttpState>,
) -> Result<HttpResponse, DicomWebError> {
    store(request, payload, state, None).await
}

/// `POST /dicomweb/studies/{study}`.
pub async fn store_study_instances(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<HttpState>,
    study: web::Path<String>,
) -> Result<HttpResponse, DicomWebError> {
    store(request, payload, state, Some(study.into_inner())).await
}

async fn store(
    request: HttpRequest,
    mut payload: web::Payload,
    state: web::Data<HttpState>,
    study_instance_uid: Option<String>,
) -> Result<HttpResponse, DicomWebError> {
    let boundary = check_content_type(&request)?;
    let mut parser = Parser::new(&boundary).map_err(|error| DicomWebError::BadRequest(error.to_string()))?;
    let mut ingest = StowIngest {
        state: state.clone(),
        writer: state.store.new_writer(),
        study_instance_uid,
        current: None,
        outcomes: Vec::new(),
        pending: Vec::new(),
    };

    let received = receive(&mut ingest, &mut payload, &mut parser).await;
    // Parts finished before a broken body are still committed, so the store
    // and the manifest agree about them.
    ingest.commit_pending().await;
    let bytes_in = received?;
    if ingest.outcomes.is_empty() {
        return Err(DicomWebError::BadRequest("the multipart body has no parts".into()));
    }

    let mut response = respond(&request, &ingest.outcomes, ingest.study_instance_uid.as_deref());
    response.extensions_mut().insert(BytesIn(bytes_in));
    Ok(response)
}

/// Feeds the body to the parser and its events to `ingest`; returns the body's length.
async fn receive(ingest: &mut StowIngest, payload: &mut web::Payload, parser: &mut Parser) -> Result<u64, DicomWebError> {
    let mut bytes_in = 0u64;
    let mut events = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|error| DicomWebError::BadRequest(format!("failed to read the request body: {error}")))?;
        bytes_in += chunk.len() as u64;
        parser.feed(&chunk, &mut events).map_err(|error| DicomWebError::BadRequest(error.to_string()))?;
        for event in events.drain(..) {
            ingest.handle(event).await;
        }
    }
    parser.finish().map_err(|error| DicomWebError::BadRequest(format!("invalid multipart body: {error}")))?;
    Ok(bytes_in)
}

/// Checks the request's Content-Type and returns its boundary.
fn check_content_type(request: &HttpRequest) -> Result<String, DicomWebError> {
    let header = request
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .ok_or_else(|| DicomWebError::UnsupportedMediaType(format!("missing Content-Type; send multipart/related; type=\"{DICOM}\"")))?;
    let media_type = MediaType::parse(header)
        .ok_or_else(|| DicomWebError::BadRequest(format!("invalid Content-Type {header:?}")))?;
    if media_type.essence != "multipart/related" {
        return Err(DicomWebError::UnsupportedMediaType(format!(
            "Content-Type {} is not supported; send multipart/related; type=\"{DICOM}\"",
            media_type.essence
        )));
    }
    if let Some(related) = media_type.related_type() {
        if related != DICOM {
            return Err(DicomWebError::UnsupportedMediaType(format!(
                "multipart/related type {related:?} is not supported; only {DICOM} parts are stored"
            )));
        }
    }
    media_type
        .param("boundary")
        .map(str::to_string)
        .ok_or_else(|| DicomWebError::BadRequest("multipart/related Content-Type has no boundary parameter".into()))
}

/// The state of one STOW-RS request while its parts arrive.
struct StowIngest {
    state: web::Data<HttpState>,
    writer: SegmentWriter,
    study_instance_uid: Option<String>,
    current: Option<CurrentPart>,
    outcomes: Vec<PartOutcome>,
    /// Finished parts waiting for their commit.
    pending: Vec<PendingPart>,
}

impl StowIngest {
    async fn handle(&mut self, event: Event) {
        match event {
            Event::PartStart(headers) => self.begin_part(&headers),
            Event::Data(bytes) => self.write(&bytes),
            Event::PartEnd => self.end_part().await,
        }
    }

    fn begin_part(&mut self, headers: &[(String, String)]) {
        let content_type = multipart::header(headers, "content-type").unwrap_or(DICOM);
        let essence = MediaType::parse(content_type).map(|media_type| media_type.essence);
        if essence.as_deref() != Some(DICOM) {
            let failure = PartFailure::new(
                reason::UNSUPPORTED_MEDIA_TYPE,
                format!("part media type {content_type:?} is not supported; only {DICOM} parts are stored"),
            );
            self.current = Some(CurrentPart::Skipping(failure));
            return;
        }
        let opened = self.writer.begin_record().and_then(|()| {
            // A declared part length reserves the record's room at once, so a
            // large part is not copied when its segment fills up. The reservation
            // is capped because the length is only the client's claim.
            match multipart::header(headers, "content-length").and_then(|len| len.trim().parse::<usize>().ok()) {
                Some(len) if len > 0 => self.writer.reserve_room(len.min(MAX_RESERVED_PART_LEN) as u64),
                _ => Ok(()),
            }
        });
        self.current = Some(match opened {
            Ok(()) => CurrentPart::Writing { started: Instant::now() },
            Err(error) => {
                self.writer.abort_record();
                CurrentPart::Skipping(PartFailure::new(reason::OUT_OF_RESOURCES, format!("storage unavailable: {error}")))
            }
        });
    }

    fn write(&mut self, bytes: &[u8]) {
        let Some(CurrentPart::Writing { .. }) = self.current else {
            return;
        };
        if let Err(error) = self.writer.append(bytes) {
            self.writer.abort_record();
            let failure = PartFailure::new(reason::OUT_OF_RESOURCES, format!("storage write failed: {error}"));
            self.current = Some(CurrentPart::Skipping(failure));
        }
    }

    async fn end_part(&mut self) {
        match self.current.take() {
            Some(CurrentPart::Writing { started }) => self.finish_part(started).await,
            Some(CurrentPart::Skipping(failure)) => self.add_failure(failure),
            None => {}
        }
    }

    fn add_failure(&mut self, failure: PartFailure) {
        telemetry::stow_part_failed(failure.sop_instance_uid.as_deref(), failure.reason, &failure.message);
        self.outcomes.push(PartOutcome::Failed(failure));
    }

    /// Checks the received part and finishes its record. The commit waits
    /// for [`StowIngest::commit_pending`], so the parts of one request share
    /// the committer's flushes.
    async fn finish_part(&mut self, started: Instant) {
        let bytes = self.writer.record_len();
        let checked = match self.writer.record_bytes() {
            Ok(part10) => check_part(part10, self.study_instance_uid.as_deref()),
            Err(error) => Err(PartFailure::new(reason::OUT_OF_RESOURCES, format!("storage write failed: {error}"))),
        };
        let (partial, stored) = match checked {
            Ok(checked) => checked,
            Err(failure) => {
                self.writer.abort_record();
                return self.add_failure(failure);
            }
        };
        match ingest::finish_instance(&self.state.store, &mut self.writer, partial) {
            Ok(finished) => {
                self.pending.push(PendingPart { finished, outcome: self.outcomes.len(), bytes, started });
                self.outcomes.push(stored);
                if self.pending.len() >= MAX_PENDING_PARTS {
                    self.commit_pending().await;
                }
            }
            Err(error) => {
                self.writer.abort_record();
                let failure = storage_failure(&stored, &error);
                self.add_failure(failure);
            }
        }
    }

    /// Commits every finished part and queues their manifest entries.
    async fn commit_pending(&mut self) {
        let batch = std::mem::take(&mut self.pending);
        let state = self.state.clone();
        let mut parts = Vec::with_capacity(batch.len());
        let mut commits = Vec::with_capacity(batch.len());
        for part in batch {
            parts.push((part.outcome, part.bytes, part.started));
            commits.push(ingest::commit_finished(&state.store, &state.manifest, part.finished));
        }
        let results = futures_util::future::join_all(commits).await;

        for ((index, bytes, started), result) in parts.into_iter().zip(results) {
            match result {
                Ok(_) => {
                    if let PartOutcome::Stored { sop_instance_uid, .. } = &self.outcomes[index] {
                        telemetry::stow_part_stored(sop_instance_uid, bytes, started.elapsed());
                    }
                }
                Err(error) => {
                    let failure = storage_failure(&self.outcomes[index], &error);
                    telemetry::stow_part_failed(failure.sop_instance_uid.as_deref(), failure.reason, &failure.message);
                    self.outcomes[index] = PartOutcome::Failed(failure);
                }
            }
        }
    }
}

/// A part whose record is finished but not yet committed.
struct PendingPart {
    finished: ingest::FinishedInstance,
    /// Index of the part's outcome in [`StowIngest::outcomes`].
    outcome: usize,
    bytes: u64,
    started: Instant,
}

/// Builds the failure of a checked part that storage could not finish or commit.
fn storage_failure(stored: &PartOutcome, error: &StoreError) -> PartFailure {
    let (sop_class_uid, sop_instance_uid) = match stored {
        PartOutcome::Stored { sop_class_uid, sop_instance_uid, .. } => (Some(sop_class_uid.clone()), Some(sop_instance_uid.clone())),
        PartOutcome::Failed(failure) => (failure.sop_class_uid.clone(), failure.sop_instance_uid.clone()),
    };
    PartFailure { reason: reason::OUT_OF_RESOURCES, message: format!("storage commit failed: {error}"), sop_class_uid, sop_instance_uid }
}

/// Reads a part's File Meta, scans its data set and checks the attributes
/// the manifest needs.
fn check_part(part10: &[u8], path_study_uid: Option<&str>) -> Result<(PartialRecord, PartOutcome), PartFailure> {
    let file_meta = meta::read_file_meta(part10).map_err(|error| {
        PartFailure::new(reason::CANNOT_UNDERSTAND, format!("part is not a DICOM Part 10 file: {error}"))
    })?;
    let fail = |reason: u16, message: String| PartFailure {
        reason,
        message,
        sop_class_uid: Some(file_meta.sop_class_uid.clone()).filter(|uid| !uid.is_empty()),
        sop_instance_uid: Some(file_meta.sop_instance_uid.clone()).filter(|uid| !uid.is_empty()),
    };
    if DatasetEncoding::for_transfer_syntax(&file_meta.transfer_syntax_uid).is_none() {
        let message = format!("transfer syntax {} is not supported", file_meta.transfer_syntax_uid);
        return Err(fail(reason::TRANSFER_SYNTAX_NOT_SUPPORTED, message));
    }
    let dataset = &part10[file_meta.dataset_offset..];
    let attributes = ingest::scan_data_set(dataset, &file_meta.transfer_syntax_uid)
        .map_err(|message| fail(reason::CANNOT_UNDERSTAND, message))?;

    // The data set's SOP Instance UID identifies the instance. The File Meta
    // is kept as sent even where its Media Storage SOP Instance UID is empty
    // or differs (several pydicom test files have such a File Meta).
    let Some(sop_instance_uid) = attributes.text(tags::SOP_INSTANCE_UID).filter(|uid| !uid.is_empty()) else {
        return Err(fail(reason::DATA_SET_DOES_NOT_MATCH_SOP_CLASS, "data set has no SOP Instance UID (0008,0018)".into()));
    };
    let sop_class_uid = attributes
        .text(tags::SOP_CLASS_UID)
        .filter(|uid| !uid.is_empty())
        .or_else(|| Some(file_meta.sop_class_uid.clone()).filter(|uid| !uid.is_empty()))
        .ok_or_else(|| fail(reason::DATA_SET_DOES_NOT_MATCH_SOP_CLASS, "data set has no SOP Class UID (0008,0016)".into()))?;
    let fail = |reason: u16, message: String| PartFailure {
        reason,
        message,
        sop_class_uid: Some(sop_class_uid.clone()),
        sop_instance_uid: Some(sop_instance_uid.clone()),
    };
    let partial = PartialRecord::from_attributes(
        &attributes,
        &sop_class_uid,
        &sop_instance_uid,
        &file_meta.transfer_syntax_uid,
        file_meta.source_ae_title.as_deref(),
    )
    .map_err(|message| fail(reason::DATA_SET_DOES_NOT_MATCH_SOP_CLASS, message))?;

    let study_instance_uid = attributes.text(tags::STUDY_INSTANCE_UID).unwrap_or_default();
    if let Some(expected) = path_study_uid {
        if study_instance_uid != expected {
            let message = format!("Study Instance UID {study_instance_uid} differs from {expected} in the request path");
            return Err(fail(reason::STUDY_INSTANCE_UID_MISMATCH, message));
        }
    }
    let stored = PartOutcome::Stored {
        sop_class_uid: sop_class_uid.clone(),
        sop_instance_uid: sop_instance_uid.clone(),
        series_instance_uid: attributes.text(tags::SERIES_INSTANCE_UID).unwrap_or_default(),
        study_instance_uid,
    };
    Ok((partial, stored))
}

/// Builds the Store Instances Response (PS3.18 section 10.5.3): 200 when
/// every part was stored, 202 when some were, 409 when none was.
fn respond(request: &HttpRequest, outcomes: &[PartOutcome], path_study_uid: Option<&str>) -> HttpResponse {
    let base = urls::base_url(request);
    let mut referenced = Vec::new();
    let mut failed = Vec::new();
    for outcome in outcomes {
        match outcome {
            PartOutcome::Stored { sop_class_uid, sop_instance_uid, series_instance_uid, study_instance_uid } => {
                let mut item = Map::new();
                item.insert("00081150".into(), json::attribute("UI", &[sop_class_uid]));
                item.insert("00081155".into(), json::attribute("UI", &[sop_instance_uid]));
                let url = urls::instance_url(&base, study_instance_uid, series_instance_uid, sop_instance_uid);
                item.insert("00081190".into(), json::attribute("UR", &[&url]));
                referenced.push(item);
            }
            PartOutcome::Failed(failure) => {
                let mut item = Map::new();
                if let Some(uid) = &failure.sop_class_uid {
                    item.insert("00081150".into(), json::attribute("UI", &[uid]));
                }
                if let Some(uid) = &failure.sop_instance_uid {
                    item.insert("00081155".into(), json::attribute("UI", &[uid]));
                }
                item.insert("00081197".into(), json::unsigned_short(failure.reason));
                failed.push(item);
            }
        }
    }

    let status = match (referenced.is_empty(), failed.is_empty()) {
        (false, true) => StatusCode::OK,
        (false, false) => StatusCode::ACCEPTED,
        (true, _) => StatusCode::CONFLICT,
    };
    let mut body = Map::new();
    if let Some(study) = path_study_uid {
        body.insert("00081190".into(), json::attribute("UR", &[&urls::study_url(&base, study)]));
    }
    if !failed.is_empty() {
        body.insert("00081198".into(), json::sequence(failed));
    }
    if !referenced.is_empty() {
        body.insert("00081199".into(), json::sequence(referenced));
    }
    HttpResponse::build(status)
        .content_type("application/dicom+json")
        .body(Value::Object(body).to_string())
}
