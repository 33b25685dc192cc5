//! The nectar engine: everything that waits, stores or sends.

pub mod location;
pub mod manifest;
pub mod storage;

pub use location::Location;
