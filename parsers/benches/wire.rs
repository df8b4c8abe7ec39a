//! The wire form of event batches (`parsers::wire`): encode and decode of a
//! 1,000-event batch built from the checked-in corpora in `benches/data`
//! (250 lines each of RFC 3164, RFC 5424, CEF and sshd, parsed, classified
//! and stamped as a collector hands them on), against the same-run
//! baseline of the events' JSON form (encode only: `Event` has no
//! `Deserialize`).
//!
//! Sizes are printed before the timings: bytes per event of the wire form,
//! of the lines themselves and of the JSON.
//!
//! Run: `cargo bench -p vigil-parsers --bench wire`.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::net::IpAddr;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use parsers::wire::{decode_batch, decode_batch_bytes, decode_batch_into, encode_batch};
use parsers::{DeviceParsers, Event, EventTime, OrgId, Parser};

const CORPORA: [&str; 4] = ["rfc3164", "rfc5424", "cef", "sshd"];

fn lines(name: &str) -> Vec<Bytes> {
    let path = format!("{}/../benches/data/{name}.log", env!("CARGO_MANIFEST_DIR"));
    // Bench input is a small checked-in file, read once.
    #[allow(clippy::disallowed_methods)]
    let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e} (run benches/data/generate.py)"));
    let buf = Bytes::from(data);
    buf.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(|l| buf.slice_ref(l)).collect()
}

/// `n` events of the corpora `names`, taken in turn, as one collector of
/// one org hands them on: consecutive ids, receive times a millisecond
/// apart with microsecond fractions, one reporter address per source.
fn batch(names: &[&str], n: usize) -> Vec<Event> {
    let parser = Parser::new();
    let devices = DeviceParsers::builtin().unwrap();
    let corpora: Vec<Vec<Bytes>> = names.iter().map(|name| lines(name)).collect();
    let base = EventTime::from_unix(1_763_820_000, 0, 0);
    (0..n)
        .map(|i| {
            let source = i % corpora.len();
            let line = corpora[source][(i / corpora.len()) % corpora[source].len()].clone();
            let received = EventTime::from_unix_nanos(base.unix_nanos() + i as i128 * 1_317_000);
            let mut e = parser.parse(line, received);
            devices.classify(&mut e);
            e.id = (3 << 52) | (1_763_820_000 << 20) | i as u64;
            e.org_id = Some(OrgId(1042));
            e.org = Some("acme".into());
            e.collector = Some("collector-2".into());
            e.reporter_ip = Some(IpAddr::from([192, 0, 2, 10 + source as u8]));
            e
        })
        .collect()
}

fn json(events: &[Event], out: &mut Vec<u8>) {
    for e in events {
        serde_json::to_writer(&mut *out, e).unwrap();
        out.push(b'\n');
    }
}

fn sizes(name: &str, events: &[Event]) {
    let n = events.len() as f64;
    let raw: usize = events.iter().map(|e| e.raw.len()).sum();
    let mut wire = Vec::new();
    encode_batch(events, &mut wire);
    let mut text = Vec::new();
    json(events, &mut text);
    println!(
        "{name:>8}: wire {:6.1} B/event, lines {:6.1} B/event (wire/lines {:.2}), json {:6.1} B/event (wire/json {:.2})",
        wire.len() as f64 / n,
        raw as f64 / n,
        wire.len() as f64 / raw as f64,
        text.len() as f64 / n,
        wire.len() as f64 / text.len() as f64,
    );
}

fn wire(c: &mut Criterion) {
    let events = batch(&CORPORA, 1000);
    for name in CORPORA {
        sizes(name, &batch(&[name], 1000));
    }
    sizes("mixed", &events);

    let mut encoded = Vec::new();
    encode_batch(&events, &mut encoded);
    assert_eq!(decode_batch(&encoded).unwrap(), events);
    let shared = Bytes::from(encoded.clone());

    let mut group = c.benchmark_group("wire_1000");
    group.throughput(Throughput::Elements(events.len() as u64));
    let mut out = Vec::with_capacity(encoded.len());
    group.bench_function("encode", |b| {
        b.iter(|| {
            out.clear();
            encode_batch(black_box(&events), &mut out);
            black_box(out.len())
        })
    });
    // Decoded events are dropped outside the measurement.
    group.bench_function("decode", |b| {
        b.iter_batched(|| (), |()| decode_batch(black_box(&encoded)).unwrap(), BatchSize::SmallInput)
    });
    group.bench_function("decode_bytes", |b| {
        b.iter_batched(|| (), |()| decode_batch_bytes(black_box(&shared)).unwrap(), BatchSize::SmallInput)
    });
    // What a worker does: one vector reused batch after batch (dropping the
    // previous batch's events is part of the cost).
    let mut decoded = Vec::with_capacity(events.len());
    group.bench_function("decode_into_reused", |b| {
        b.iter(|| {
            decoded.clear();
            decode_batch_into(black_box(&encoded), &mut decoded).unwrap();
            black_box(decoded.len())
        })
    });
    let mut text = Vec::new();
    group.bench_function("json_encode", |b| {
        b.iter(|| {
            text.clear();
            json(black_box(&events), &mut text);
            black_box(text.len())
        })
    });
    group.finish();
}

criterion_group!(benches, wire);
criterion_main!(benches);
