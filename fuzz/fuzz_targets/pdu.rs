//! Arbitrary bytes through every protocol decoder of nectar-codecs:
//! PDU and PDV headers (the body walked as P-DATA-TF), A-ASSOCIATE-RQ
//! decoding followed by negotiation and A-ASSOCIATE-AC/RJ encoding, and
//! the command set round trip encode_command(decode_command(x)).
//!
//! The body is `nectar_codecs::pdu::fuzz::exercise`, which the unit test
//! `pdu::tests::fuzz_stand_in_never_panics` also drives on stable.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    nectar_codecs::pdu::fuzz::exercise(data);
});
