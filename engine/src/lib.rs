//! The nectar engine: everything that waits, stores or sends.

pub mod association;
pub mod cli;
pub mod dicomweb;
pub mod events;
pub mod http;
pub mod ingest;
pub mod location;
pub mod manifest;
pub mod profile;
pub mod query;
pub mod recovery;
pub mod retrieve;
pub mod server;
pub mod shutdown;
pub mod storage;
pub mod telemetry;
mod telemetry_setup;

pub use location::Location;
