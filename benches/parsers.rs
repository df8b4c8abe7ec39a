//! Parser throughput, in lines per second, over the checked-in corpora in
//! `benches/data` (regenerate with `python3 benches/data/generate.py`).
//!
//! Every group has the same-run baseline `memchr_lines`: splitting the same
//! buffer into lines with `memchr` and touching each line, the floor any
//! line-oriented tool pays. Report parser speed as a ratio to it.
//!
//! Run: `cargo bench --bench parsers` (one core is used).

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use parsers::{DeviceParsers, Event, EventTime, Parser};

fn corpus(name: &str) -> Bytes {
    let path = format!("{}/benches/data/{name}.log", env!("CARGO_MANIFEST_DIR"));
    // Bench input is a small checked-in file, read once.
    #[allow(clippy::disallowed_methods)]
    let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e} (run benches/data/generate.py)"));
    Bytes::from(data)
}

/// Line slices of `buf` (as shared `Bytes`, like the framer produces).
fn lines(buf: &Bytes) -> Vec<Bytes> {
    memchr::memchr_iter(b'\n', buf)
        .scan(0, |start, end| {
            let line = buf.slice(*start..end);
            *start = end + 1;
            Some(line)
        })
        .collect()
}

fn memchr_baseline(buf: &[u8]) -> usize {
    let mut start = 0;
    let mut total = 0;
    for end in memchr::memchr_iter(b'\n', buf) {
        let line = black_box(&buf[start..end]);
        total += line.len();
        start = end + 1;
    }
    total
}

fn now() -> EventTime {
    EventTime::from_unix(1_763_820_000, 0, 0)
}

fn grammar_group(c: &mut Criterion, name: &str) {
    let buf = corpus(name);
    let frames = lines(&buf);
    let parser = Parser::new();
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(frames.len() as u64));
    group.bench_function("memchr_lines", |b| b.iter(|| memchr_baseline(black_box(&buf))));
    // The borrowed view: grammar work only, no allocation.
    group.bench_function("view", |b| {
        b.iter(|| {
            for line in &frames {
                black_box(parser.parse_view(line));
            }
        })
    });
    // The owned event the pipeline stores (time resolved, fields shared
    // with the line buffer, unescaped values owned).
    group.bench_function("event", |b| {
        b.iter(|| {
            for line in &frames {
                black_box(parser.parse(line.clone(), now()));
            }
        })
    });
    group.finish();
}

fn rfc3164(c: &mut Criterion) {
    grammar_group(c, "rfc3164");
}

fn rfc5424(c: &mut Criterion) {
    grammar_group(c, "rfc5424");
}

fn cef(c: &mut Criterion) {
    grammar_group(c, "cef");
}

fn sshd_classification(c: &mut Criterion) {
    let buf = corpus("sshd");
    let frames = lines(&buf);
    let parser = Parser::new();
    let devices = DeviceParsers::builtin().unwrap_or_else(|e| panic!("{e}"));
    let parsed: Vec<Event> = frames.iter().map(|l| parser.parse(l.clone(), now())).collect();
    let mut group = c.benchmark_group("sshd");
    group.throughput(Throughput::Elements(frames.len() as u64));
    group.bench_function("memchr_lines", |b| b.iter(|| memchr_baseline(black_box(&buf))));
    // Device classification alone, on already parsed events.
    group.bench_function("classify", |b| {
        b.iter_batched_ref(
            || parsed.clone(),
            |events| {
                for e in events.iter_mut() {
                    black_box(devices.classify(e));
                }
            },
            BatchSize::LargeInput,
        )
    });
    // Line to classified event: what a collector does per line.
    group.bench_function("parse_and_classify", |b| {
        b.iter(|| {
            for line in &frames {
                let mut e = parser.parse(line.clone(), now());
                devices.classify(&mut e);
                black_box(e);
            }
        })
    });
    group.finish();
}

criterion_group!(benches, rfc3164, rfc5424, cef, sshd_classification);
criterion_main!(benches);
