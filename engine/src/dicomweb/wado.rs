//! WADO-RS (PS3.18 section 10.4): instances of a study, series or single
//! instance as `multipart/related; type="application/dicom"`, and their
//! metadata as DICOM JSON.

use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use dicom_object::file::ReadPreamble;
use dicom_object::OpenFileOptions;
use serde_json::Value;

use super::accept::{self, Offer};
use super::errors::DicomWebError;
use super::json::{self, BulkData};
use super::response::{self, Part};
use super::urls;
use crate::http::HttpState;
use crate::manifest::wado::{self as queries, InstanceFilter, StoredInstance};

/// Binary values longer than this many bytes are written as a BulkDataURI in metadata.
pub const BULK_DATA_THRESHOLD: usize = 1024;

/// The UIDs of a request path: a study, optionally a series, optionally an instance.
#[derive(Debug, Clone)]
pub struct ResourcePath {
    pub study: String,
    pub series: Option<String>,
    pub instance: Option<String>,
}

impl ResourcePath {
    fn describe(&self) -> String {
        match (&self.series, &self.instance) {
            (Some(series), Some(instance)) => format!("instance {instance} of series {series} in study {}", self.study),
            (Some(series), None) => format!("series {series} in study {}", self.study),
            _ => format!("study {}", self.study),
        }
    }
}

/// Finds the stored instances a path names. Before returning not found, it
/// waits once for rows queued but not yet committed to the manifest.
pub async fn find_instances(state: &HttpState, path: &ResourcePath) -> Result<Vec<StoredInstance>, DicomWebError> {
    let found = query_instances(state, path).await?;
    if !found.is_empty() {
        return Ok(found);
    }
    state.manifest.flush_async().await?;
    let found = query_instances(state, path).await?;
    if found.is_empty() {
        return Err(DicomWebError::NotFound(format!("{} not found", path.describe())));
    }
    Ok(found)
}

async fn query_instances(state: &HttpState, path: &ResourcePath) -> Result<Vec<StoredInstance>, DicomWebError> {
    let readers = state.manifest_readers.clone();
    let path = path.clone();
    web::block(move || {
        readers.with(|conn| -> Result<Vec<StoredInstance>, DicomWebError> {
            let filter = InstanceFilter {
                study_instance_uid: &path.study,
                series_instance_uid: path.series.as_deref(),
                sop_instance_uid: path.instance.as_deref(),
            };
            Ok(queries::stored_instances(conn, &filter)?)
        })
    })
    .await
    .map_err(|error| DicomWebError::Internal(format!("manifest query task failed: {error}")))?
}

/// Reads the stored Part 10 record of an instance, borrowed from its segment.
pub fn read_record(state: &HttpState, instance: &StoredInstance) -> Result<Bytes, DicomWebError> {
    let record = state.store.read(instance.location).map_err(|error| {
        DicomWebError::Internal(format!("failed to read instance {} from the store: {error}", instance.sop_instance_uid))
    })?;
    Ok(Bytes::from_owner(record))
}

/// `GET .../studies/{study}[/series/{series}[/instances/{instance}]]`.
pub async fn retrieve(request: HttpRequest, state: web::Data<HttpState>, path: ResourcePath) -> Result<HttpResponse, DicomWebError> {
    let instances = find_instances(&state, &path).await?;
    for instance in &instances {
        let offer = Offer { media_type: "application/dicom", transfer_syntax: &instance.transfer_syntax_uid, equivalent: &[] };
        accept::check_multipart(&request, &offer)?;
    }

    let base = urls::base_url(&request);
    let mut parts = Vec::with_capacity(instances.len());
    for instance in &instances {
        parts.push(Part {
            content_type: format!("application/dicom; transfer-syntax={}", instance.transfer_syntax_uid),
            location: Some(instance_url(&base, instance)),
            body: read_record(&state, instance)?,
        });
    }
    Ok(response::multipart("application/dicom", parts))
}

/// `GET .../metadata` at study, series or instance level.
pub async fn metadata(request: HttpRequest, state: web::Data<HttpState>, path: ResourcePath) -> Result<HttpResponse, DicomWebError> {
    accept::check_json(&request)?;
    let instances = find_instances(&state, &path).await?;
    let base = urls::base_url(&request);
    let mut records = Vec::with_capacity(instances.len());
    for instance in instances {
        let record = read_record(&state, &instance)?;
        records.push((instance_url(&base, &instance), instance.sop_instance_uid, record));
    }

    let body = web::block(move || -> Result<String, DicomWebError> {
        let mut datasets = Vec::with_capacity(records.len());
        for (url, sop_instance_uid, record) in &records {
            let object = parse_part10(record, sop_instance_uid)?;
            let bulk = BulkData { threshold: BULK_DATA_THRESHOLD, base_uri: &format!("{url}/bulkdata") };
            datasets.push(Value::Object(json::write_dataset(&object, Some(&bulk))));
        }
        Ok(Value::Array(datasets).to_string())
    })
    .await
    .map_err(|error| DicomWebError::Internal(format!("metadata task failed: {error}")))??;

    Ok(HttpResponse::Ok().content_type("application/dicom+json").body(body))
}

/// Parses a stored Part 10 record with dicom-object, which decodes text by Specific Character Set.
pub fn parse_part10(record: &[u8], sop_instance_uid: &str) -> Result<dicom_object::DefaultDicomObject, DicomWebError> {
    OpenFileOptions::new()
        .read_preamble(ReadPreamble::Always)
        .from_reader(record)
        .map_err(|error| DicomWebError::Internal(format!("stored instance {sop_instance_uid} cannot be parsed: {error}")))
}

pub fn instance_url(base: &str, instance: &StoredInstance) -> String {
    urls::instance_url(base, &instance.study_instance_uid, &instance.series_instance_uid, &instance.sop_instance_uid)
}
