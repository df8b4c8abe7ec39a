#![no_main]
//! Fuzzes the rfc3164 grammar (forced format) and the event conversion.

#[path = "../common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    common::check(data, parsers::InputFormat::Rfc3164);
});
