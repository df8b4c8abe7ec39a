#![no_main]
//! Fuzzes format detection plus every built-in device family.

#[path = "../common.rs"]
mod common;

use std::sync::OnceLock;

static DEVICES: OnceLock<parsers::DeviceParsers> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let devices = DEVICES.get_or_init(|| parsers::DeviceParsers::builtin().unwrap());
    let mut event = common::check(data, parsers::InputFormat::Auto);
    devices.classify(&mut event);
    let _ = event.to_json();
});
