//! Replays `tests/fixtures/fuzz-regressions/*` (crash inputs from fuzzing
//! and hand-written edge cases) through every grammar, the device families
//! and the framer, checking the same invariants as the fuzz targets.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::num::NonZeroUsize;

use bytes::Bytes;
use parsers::framing::{Framer, FramingMode, datagram};
use parsers::{DeviceParsers, EventTime, Format, InputFormat, ParserConfig};

#[test]
fn replay_regression_inputs() {
    let dir = support::fixtures().join("fuzz-regressions");
    let devices = DeviceParsers::builtin().unwrap();
    let now = EventTime::from_unix(1_763_800_000, 0, 0);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            continue;
        }
        // Regression inputs are small files written by the fuzzer or by us.
        #[allow(clippy::disallowed_methods)]
        let data = std::fs::read(&path).unwrap();
        for format in
            [InputFormat::Auto, InputFormat::Rfc5424, InputFormat::Rfc3164, InputFormat::Cef, InputFormat::Leef]
        {
            let parser = ParserConfig { format, ..Default::default() }.validate_and_build().unwrap();
            let mut e = parser.parse(Bytes::copy_from_slice(&data), now);
            assert_eq!(&e.raw[..], &data[..], "{}", path.display());
            assert_eq!(e.format == Format::Raw, e.parse_error.is_some(), "{}", path.display());
            devices.classify(&mut e);
            assert!(e.to_json().starts_with('{'));
        }
        for mode in [FramingMode::Auto, FramingMode::OctetCounting, FramingMode::NewlineDelimited] {
            for max in [1usize, 7, 64, 65536] {
                let mut framer = Framer::new(mode, NonZeroUsize::new(max).unwrap());
                framer.push(&data);
                while let Ok(Some(f)) = framer.next_frame() {
                    assert!(f.data.len() <= max);
                }
                if let Some(f) = framer.finish() {
                    assert!(f.data.len() <= max);
                }
                if let Some(f) = datagram(Bytes::copy_from_slice(&data), NonZeroUsize::new(max).unwrap()) {
                    assert!(f.data.len() <= max);
                }
            }
        }
        n += 1;
    }
    assert!(n >= 18, "only {n} regression inputs found in {}", dir.display());
}
