//! The DICOMweb route table under `/dicomweb`, and the middleware that
//! measures every request.

use std::time::Instant;

use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::header::CONTENT_LENGTH;
use actix_web::{web, HttpRequest, HttpResponse};

use super::errors::DicomWebError;
use super::wado::{self, ResourcePath};
use super::{frames, qido, stow};
use crate::query::qido::Scope;
use crate::query::Level;
use crate::http::HttpState;
use crate::telemetry::http as telemetry;

/// Request body bytes a handler read, for requests without Content-Length.
#[derive(Debug, Clone, Copy)]
pub struct BytesIn(pub u64);

/// Adds the DICOMweb routes to an actix-web app.
pub fn configure(config: &mut web::ServiceConfig) {
    config.service(
        web::scope("/dicomweb")
            .wrap_fn(|request, service| {
                let started = Instant::now();
                let method = request.method().to_string();
                let response = service.call(request);
                async move {
                    let response = response.await?;
                    observe(&response, &method, started);
                    Ok(response)
                }
            })
            .route("/studies", web::post().to(stow::store_instances))
            .route("/studies", web::get().to(search_studies))
            .route("/series", web::get().to(search_series))
            .route("/instances", web::get().to(search_instances))
            .route("/studies/{study}/series", web::get().to(search_study_series))
            .route("/studies/{study}/instances", web::get().to(search_study_instances))
            .route("/studies/{study}/series/{series}/instances", web::get().to(search_series_instances))
            .route("/studies/{study}", web::post().to(stow::store_study_instances))
            .route("/studies/{study}", web::get().to(retrieve_study))
            .route("/studies/{study}/metadata", web::get().to(study_metadata))
            .route("/studies/{study}/series/{series}", web::get().to(retrieve_series))
            .route("/studies/{study}/series/{series}/metadata", web::get().to(series_metadata))
            .route("/studies/{study}/series/{series}/instances/{instance}", web::get().to(retrieve_instance))
            .route("/studies/{study}/series/{series}/instances/{instance}/metadata", web::get().to(instance_metadata))
            .route("/studies/{study}/series/{series}/instances/{instance}/frames/{frames}", web::get().to(instance_frames))
            .route("/studies/{study}/series/{series}/instances/{instance}/bulkdata/{tag_path:.*}", web::get().to(instance_bulk_data))
            .configure(crate::events::delete_routes::configure)
            .default_service(web::to(not_found)),
    );
}

fn observe<B: MessageBody>(response: &ServiceResponse<B>, method: &str, started: Instant) {
    let request = response.request();
    let route = request.match_pattern().unwrap_or_else(|| "unmatched".to_string());
    let bytes_in = response
        .response()
        .extensions()
        .get::<BytesIn>()
        .map(|bytes| bytes.0)
        .or_else(|| content_length(request))
        .unwrap_or(0);
    let bytes_out = match response.response().body().size() {
        BodySize::Sized(len) => len,
        _ => 0,
    };
    telemetry::request_finished(&route, method, response.status().as_u16(), bytes_in, bytes_out, started.elapsed());
}

fn content_length(request: &HttpRequest) -> Option<u64> {
    request.headers().get(CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

async fn not_found(request: HttpRequest) -> Result<HttpResponse, DicomWebError> {
    Err(DicomWebError::NotFound(format!("no DICOMweb resource {} {}", request.method(), request.path())))
}

type Study = web::Path<String>;
type Series = web::Path<(String, String)>;
type Instance = web::Path<(String, String, String)>;

fn study_path(study: Study) -> ResourcePath {
    ResourcePath { study: study.into_inner(), series: None, instance: None }
}

fn series_path(path: Series) -> ResourcePath {
    let (study, series) = path.into_inner();
    ResourcePath { study, series: Some(series), instance: None }
}

fn instance_path(path: Instance) -> ResourcePath {
    let (study, series, instance) = path.into_inner();
    ResourcePath { study, series: Some(series), instance: Some(instance) }
}

async fn retrieve_study(request: HttpRequest, state: web::Data<HttpState>, path: Study) -> Result<HttpResponse, DicomWebError> {
    wado::retrieve(request, state, study_path(path)).await
}

async fn retrieve_series(request: HttpRequest, state: web::Data<HttpState>, path: Series) -> Result<HttpResponse, DicomWebError> {
    wado::retrieve(request, state, series_path(path)).await
}

async fn retrieve_instance(request: HttpRequest, state: web::Data<HttpState>, path: Instance) -> Result<HttpResponse, DicomWebError> {
    wado::retrieve(request, state, instance_path(path)).await
}

async fn study_metadata(request: HttpRequest, state: web::Data<HttpState>, path: Study) -> Result<HttpResponse, DicomWebError> {
    wado::metadata(request, state, study_path(path)).await
}

async fn series_metadata(request: HttpRequest, state: web::Data<HttpState>, path: Series) -> Result<HttpResponse, DicomWebError> {
    wado::metadata(request, state, series_path(path)).await
}

async fn instance_metadata(request: HttpRequest, state: web::Data<HttpState>, path: Instance) -> Result<HttpResponse, DicomWebError> {
    wado::metadata(request, state, instance_path(path)).await
}

async fn instance_frames(
    request: HttpRequest,
    state: web::Data<HttpState>,
    path: web::Path<(String, String, String, String)>,
) -> Result<HttpResponse, DicomWebError> {
    let (study, series, instance, list) = path.into_inner();
    let resource = ResourcePath { study, series: Some(series), instance: Some(instance) };
    frames::frames(request, state, resource, list).await
}

async fn instance_bulk_data(
    request: HttpRequest,
    state: web::Data<HttpState>,
    path: web::Path<(String, String, String, String)>,
) -> Result<HttpResponse, DicomWebError> {
    let (study, series, instance, tag_path) = path.into_inner();
    let resource = ResourcePath { study, series: Some(series), instance: Some(instance) };
    frames::bulk_data(request, state, resource, tag_path).await
}

async fn search_studies(request: HttpRequest, state: web::Data<HttpState>) -> Result<HttpResponse, DicomWebError> {
    qido::search(request, state, Level::Study, Scope::default()).await
}

async fn search_series(request: HttpRequest, state: web::Data<HttpState>) -> Result<HttpResponse, DicomWebError> {
    qido::search(request, state, Level::Series, Scope::default()).await
}

async fn search_instances(request: HttpRequest, state: web::Data<HttpState>) -> Result<HttpResponse, DicomWebError> {
    qido::search(request, state, Level::Image, Scope::default()).await
}

async fn search_study_series(request: HttpRequest, state: web::Data<HttpState>, path: Study) -> Result<HttpResponse, DicomWebError> {
    let scope = Scope { study: Some(path.into_inner()), series: None };
    qido::search(request, state, Level::Series, scope).await
}

async fn search_study_instances(request: HttpRequest, state: web::Data<HttpState>, path: Study) -> Result<HttpResponse, DicomWebError> {
    let scope = Scope { study: Some(path.into_inner()), series: None };
    qido::search(request, state, Level::Image, scope).await
}

async fn search_series_instances(request: HttpRequest, state: web::Data<HttpState>, path: Series) -> Result<HttpResponse, DicomWebError> {
    let (study, series) = path.into_inner();
    qido::search(request, state, Level::Image, Scope { study: Some(study), series: Some(series) }).await
}
