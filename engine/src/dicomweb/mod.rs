//! DICOMweb (PS3.18) on the HTTP endpoint: STOW-RS to store instances,
//! WADO-RS to retrieve instances, metadata, frames and bulk data, and the
//! DICOM JSON writer those and QIDO-RS use.

mod accept;
mod errors;
mod fragments;
mod frames;
pub mod json;
pub mod media;
pub mod multipart;
mod qido;
mod readers;
mod response;
mod routes;
mod stow;
mod urls;
mod wado;

pub use errors::DicomWebError;
pub use readers::ManifestReaders;
pub use routes::configure;
pub use wado::BULK_DATA_THRESHOLD;
