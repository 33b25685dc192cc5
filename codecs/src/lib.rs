//! Pure, synchronous DICOM codecs: no I/O, no clocks, no threads.
//!
//! Everything that turns bytes into meaning lives here, so it can be tested
//! and fuzzed without a socket.
#![deny(unsafe_code)]

pub mod charset;
pub mod command;
pub mod meta;
pub mod negotiation;
pub mod pdu;
pub mod scan;
