//! QIDO-RS (PS3.18 section 10.6): searches for studies, series and instances,
//! returned as `application/dicom+json`, a JSON array of data sets.
//!
//! The query runner streams matches from a blocking thread over a bounded
//! channel, and the response body writes each match as it arrives, so a large
//! result is never held whole. A search without matches returns 204 No
//! Content with an empty body.

use std::time::Instant;

use actix_web::http::header::WARNING;
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder};
use bytes::Bytes;
use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use futures_util::stream;
use serde_json::Value;
use tokio::sync::mpsc;

use super::accept;
use super::errors::DicomWebError;
use super::json;
use super::urls;
use crate::http::HttpState;
use crate::query::qido::{self, Scope};
use crate::query::{identifier, runner, Level, Query, QueryError, ResultRow, ResultValue};
use crate::telemetry::qido as telemetry;

/// Matches buffered between the query thread and the response body.
const ROW_QUEUE: usize = 64;

/// `GET /studies`, `/series`, `/instances` and their forms scoped to a study or series.
pub async fn search(
    request: HttpRequest,
    state: web::Data<HttpState>,
    level: Level,
    scope: Scope,
) -> Result<HttpResponse, DicomWebError> {
    accept::check_json(&request).map_err(|_| {
        DicomWebError::NotAcceptable("search results are served as application/dicom+json only".into())
    })?;
    let started = Instant::now();
    let params = web::Query::<Vec<(String, String)>>::from_query(request.query_string())
        .map_err(|error| DicomWebError::BadRequest(format!("query string cannot be decoded: {error}")))?
        .into_inner();
    let search = qido::parse(level, &scope, &params).map_err(DicomWebError::BadRequest)?;

    // Instances acknowledged before the search are visible to it.
    state.manifest.flush_async().await?;
    let fuzzy = search.fuzzy;
    let mut rows = spawn(search.query, &state);
    let first = match rows.recv().await {
        None => {
            telemetry::search_finished(level.label(), 0, true, started.elapsed());
            return Ok(response(HttpResponse::NoContent(), fuzzy).finish());
        }
        Some(Err(error)) => return Err(DicomWebError::Unavailable(error.comment)),
        Some(Ok(row)) => row,
    };

    let body = Body {
        rows,
        first: Some(first),
        base: urls::base_url(&request),
        progress: Progress { level, matches: 0, complete: false, started },
        closed: false,
    };
    let chunks = stream::unfold(body, |mut body| async move {
        let chunk = body.next_chunk().await?;
        Some((chunk, body))
    });
    Ok(response(HttpResponse::Ok(), fuzzy).content_type("application/dicom+json").streaming(chunks))
}

/// Adds a Warning header when the request had `fuzzymatching=true`: nectar
/// matches person names case-insensitively and does no other fuzzy matching.
fn response(mut builder: HttpResponseBuilder, fuzzy: bool) -> HttpResponseBuilder {
    if fuzzy {
        builder.insert_header((
            WARNING,
            "299 nectar: \"The fuzzymatching parameter is not supported. Only literal matching has been performed.\"",
        ));
    }
    builder
}

/// Runs `query` on a pooled manifest connection on a blocking thread.
fn spawn(query: Query, state: &HttpState) -> mpsc::Receiver<runner::Message> {
    let (sender, receiver) = mpsc::channel(ROW_QUEUE);
    let readers = state.manifest_readers.clone();
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || {
        let outcome = readers.with(|conn| {
            Ok::<_, DicomWebError>(runner::run(&query, conn, &store, |row| sender.blocking_send(Ok(row)).is_ok()))
        });
        let error = match outcome {
            Ok(Ok(_)) => return,
            Ok(Err(error)) => error,
            Err(error) => QueryError::unable_to_process(error.to_string()),
        };
        let _ = sender.blocking_send(Err(error));
    });
    receiver
}

/// The response body: `[`, the matches separated by commas, `]`.
struct Body {
    rows: mpsc::Receiver<runner::Message>,
    first: Option<ResultRow>,
    base: String,
    progress: Progress,
    closed: bool,
}

impl Body {
    async fn next_chunk(&mut self) -> Option<Result<Bytes, DicomWebError>> {
        if self.closed {
            return None;
        }
        let (row, separator) = match self.first.take() {
            Some(row) => (row, "["),
            None => match self.rows.recv().await {
                Some(Ok(row)) => (row, ","),
                Some(Err(error)) => {
                    self.closed = true;
                    telemetry::search_failed(self.progress.level.label(), &error.comment);
                    return Some(Err(DicomWebError::Unavailable(error.comment)));
                }
                None => {
                    self.closed = true;
                    self.progress.complete = true;
                    return Some(Ok(Bytes::from_static(b"]")));
                }
            },
        };
        self.progress.matches += 1;
        let object = Value::Object(write_row(&row, self.progress.level, &self.base));
        Some(Ok(Bytes::from(format!("{separator}{object}"))))
    }
}

/// Logs the search when its response ends, whether finished or dropped.
struct Progress {
    level: Level,
    matches: u64,
    complete: bool,
    started: Instant,
}

impl Drop for Progress {
    fn drop(&mut self) {
        telemetry::search_finished(self.level.label(), self.matches, self.complete, self.started.elapsed());
    }
}

/// Writes one match as DICOM JSON, with its RetrieveURL (0008,1190) and
/// without QueryRetrieveLevel.
pub fn write_row(row: &ResultRow, level: Level, base: &str) -> serde_json::Map<String, Value> {
    let mut object = identifier::to_identifier(row, None);
    object.remove_element(tags::QUERY_RETRIEVE_LEVEL);
    if let Some(url) = retrieve_url(row, level, base) {
        object.put(DataElement::new(tags::RETRIEVE_URL, VR::UR, PrimitiveValue::from(url)));
    }
    json::write_dataset(&object, None)
}

/// Builds the WADO-RS URL of the matched study, series or instance.
fn retrieve_url(row: &ResultRow, level: Level, base: &str) -> Option<String> {
    let study = text(row, tags::STUDY_INSTANCE_UID)?;
    let study_url = urls::study_url(base, study);
    if level == Level::Study {
        return Some(study_url);
    }
    let series = text(row, tags::SERIES_INSTANCE_UID)?;
    if level == Level::Series {
        return Some(format!("{study_url}/series/{series}"));
    }
    let instance = text(row, tags::SOP_INSTANCE_UID)?;
    Some(urls::instance_url(base, study, series, instance))
}

fn text(row: &ResultRow, tag: Tag) -> Option<&str> {
    row.attributes.iter().find(|attribute| attribute.tag == tag).and_then(|attribute| match &attribute.value {
        ResultValue::Text(text) => Some(text.as_str()),
        _ => None,
    })
}
