//! Absolute URLs of DICOMweb resources: under `--public-url` when it is set,
//! else built from the request's scheme and Host header so clients can follow them.

use actix_web::{web, HttpRequest};

use crate::http::HttpState;

/// Builds the service root, e.g. `http://127.0.0.1:8080/dicomweb`.
pub fn base_url(request: &HttpRequest) -> String {
    if let Some(public) = request.app_data::<web::Data<HttpState>>().and_then(|state| state.public_url.clone()) {
        return public;
    }
    let info = request.connection_info();
    format!("{}://{}/dicomweb", info.scheme(), info.host())
}

pub fn study_url(base: &str, study: &str) -> String {
    format!("{base}/studies/{study}")
}

pub fn instance_url(base: &str, study: &str, series: &str, instance: &str) -> String {
    format!("{base}/studies/{study}/series/{series}/instances/{instance}")
}
