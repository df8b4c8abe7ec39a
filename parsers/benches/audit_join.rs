//! Joining audit records (`parsers::device::AuditJoin`) against the
//! same-run baseline of parsing and classifying the same records: 1,000
//! kernel audit events of six records each (`SYSCALL`, `EXECVE`, `CWD`,
//! `PATH`, `PROCTITLE`, `EOE`), as the collector's intake sees them.
//!
//! Run: `cargo bench -p vigil-parsers --bench audit_join`.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use parsers::device::AuditJoin;
use parsers::{DeviceParsers, Event, EventTime, OrgId, Parser};

const EVENTS: u64 = 1_000;

fn lines() -> Vec<Bytes> {
    let mut out = Vec::new();
    for serial in 0..EVENTS {
        let stamp = format!("msg=audit({}.{:03}:{})", 1_795_000_000 + serial / 10, serial % 1_000, 70_000 + serial);
        for record in [
            format!(
                "type=SYSCALL {stamp}: arch=c000003e syscall=59 success=yes exit=0 a0=55d0 a1=1ed items=2 ppid=2211 pid={serial} auid=1000 uid=0 comm=\"curl\" exe=\"/usr/bin/curl\" key=\"exec\""
            ),
            format!("type=EXECVE {stamp}: argc=3 a0=\"curl\" a1=\"-s\" a2=68747470733A2F2F6578616D706C652E6F72672F"),
            format!("type=CWD {stamp}: cwd=\"/root\""),
            format!("type=PATH {stamp}: item=0 name=\"/usr/bin/curl\" inode=4211 dev=fd:00 mode=0100755 ouid=0 ogid=0"),
            format!("type=PROCTITLE {stamp}: proctitle=6375726C002D730068747470733A2F2F6578616D706C652E6F72672F"),
            format!("type=EOE {stamp}: "),
        ] {
            out.push(Bytes::from(record));
        }
    }
    out
}

fn classified(parser: &Parser, devices: &DeviceParsers, lines: &[Bytes]) -> Vec<Event> {
    let at = EventTime::from_unix(1_795_000_100, 0, 0);
    lines
        .iter()
        .map(|l| {
            let mut e = parser.parse(l.clone(), at);
            devices.classify(&mut e);
            e.org_id = Some(OrgId(3));
            e
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let (parser, devices, lines) = (Parser::new(), DeviceParsers::builtin().unwrap(), lines());
    let events = classified(&parser, &devices, &lines);
    let mut check = Vec::new();
    let mut join = AuditJoin::new(2_000, 10_000);
    for e in &events {
        join.observe(e, 0, &mut check);
    }
    assert_eq!(check.len() as u64, EVENTS, "every event joined at its EOE");

    let mut g = c.benchmark_group("audit_join");
    g.throughput(Throughput::Elements(lines.len() as u64));
    g.bench_function("baseline: parse and classify the records", |b| {
        b.iter(|| black_box(classified(&parser, &devices, black_box(&lines))));
    });
    g.bench_function("join the classified records", |b| {
        let mut out = Vec::with_capacity(EVENTS as usize);
        b.iter(|| {
            let mut join = AuditJoin::new(2_000, 10_000);
            out.clear();
            for e in black_box(&events) {
                join.observe(e, 0, &mut out);
            }
            black_box(out.len())
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
