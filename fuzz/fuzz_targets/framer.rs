#![no_main]
//! Fuzzes stream framing: the first bytes choose the mode, the maximum frame
//! length and how the rest is cut into reads; the rest is the stream.

use std::num::NonZeroUsize;

use parsers::framing::{Framer, FramingMode, datagram};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let mode = match data[0] % 3 {
        0 => FramingMode::Auto,
        1 => FramingMode::OctetCounting,
        _ => FramingMode::NewlineDelimited,
    };
    let max = usize::from(data[1]) + 1;
    let chunk = usize::from(data[2] % 64) + 1;
    let stream = &data[3..];
    let mut framer = Framer::new(mode, NonZeroUsize::new(max).unwrap());
    let mut out_bytes = 0usize;
    'outer: for piece in stream.chunks(chunk) {
        framer.push(piece);
        loop {
            match framer.next_frame() {
                Ok(Some(frame)) => {
                    assert!(frame.data.len() <= max);
                    assert!(!frame.data.is_empty() || frame.truncated);
                    out_bytes += frame.data.len();
                }
                Ok(None) => break,
                Err(e) => {
                    assert!(e.is_fatal());
                    break 'outer;
                }
            }
        }
        // Bounded memory: what stays buffered is at most a frame plus a read
        // (plus the octet-count header).
        assert!(framer.buffered() <= max + chunk + 12);
    }
    if let Some(frame) = framer.finish() {
        assert!(frame.data.len() <= max);
        out_bytes += frame.data.len();
    }
    assert!(out_bytes <= stream.len());
    if let Some(frame) = datagram(bytes::Bytes::copy_from_slice(stream), NonZeroUsize::new(max).unwrap()) {
        assert!(frame.data.len() <= max);
    }
});
