//! Errors of DICOMweb requests. Each becomes an HTTP status and a JSON body
//! with the reason.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

#[derive(Debug, thiserror::Error)]
pub enum DicomWebError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    NotAcceptable(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl ResponseError for DicomWebError {
    fn status_code(&self) -> StatusCode {
        match self {
            DicomWebError::BadRequest(_) => StatusCode::BAD_REQUEST,
            DicomWebError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            DicomWebError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            DicomWebError::NotFound(_) => StatusCode::NOT_FOUND,
            DicomWebError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            DicomWebError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        crate::telemetry::http::request_rejected(self.status_code().as_u16(), &self.to_string());
        HttpResponse::build(self.status_code())
            .content_type("application/json")
            .body(serde_json::json!({ "error": self.to_string() }).to_string())
    }
}

impl From<crate::manifest::ManifestError> for DicomWebError {
    fn from(error: crate::manifest::ManifestError) -> Self {
        DicomWebError::Unavailable(format!("manifest query failed: {error}"))
    }
}

impl From<rusqlite::Error> for DicomWebError {
    fn from(error: rusqlite::Error) -> Self {
        DicomWebError::Unavailable(format!("manifest query failed: {error}"))
    }
}
