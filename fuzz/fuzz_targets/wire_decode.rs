#![no_main]
//! Fuzzes the batch decoder (`parsers::wire`): no bytes make it panic, and
//! what decodes is a batch: encoding the events again and decoding that
//! gives the same events. Inputs are tried as they are and behind the batch
//! header, so mutations get past the magic bytes at once.

use parsers::wire::{HEADER, decode_batch, decode_batch_bytes, encode_batch};

fn check(data: &[u8]) {
    let Ok(events) = decode_batch(data) else { return };
    assert_eq!(decode_batch_bytes(&bytes::Bytes::copy_from_slice(data)).unwrap(), events);
    let mut again = Vec::new();
    encode_batch(&events, &mut again);
    assert_eq!(decode_batch(&again).unwrap(), events);
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    check(data);
    let mut with_header = HEADER.to_vec();
    with_header.extend_from_slice(data);
    check(&with_header);
});
