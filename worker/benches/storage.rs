//! What a Parquet file costs besides its rows (issue #17): the storage
//! stage's CPU per event as a function of rows per file.
//!
//! `vigil run` writes one file per org per flush tick
//! (`storage.flush_interval_ms`, 1 s): at 100,000 EPS over 100 orgs that is
//! about 1,000 rows a file. This bench writes the same 100,000 parsed
//! events (sshd, firewall, RFC 5424 and CEF lines) as 100, 10 and 1
//! partitions, i.e. 1,000, 10,000 and 100,000 rows a file, with the
//! worker's own code (`EventBuffer` to seal, `FileWriter` to write and
//! fsync), interleaved in rounds so that load from elsewhere falls on all
//! alike. It prints the CPU time per event of building the Arrow columns
//! (all shapes together), and of the writing thread (from
//! `/proc/thread-self/schedstat`; wall time where that is missing), the
//! wall time, the Parquet bytes per event, and the ratio of each to
//! 100,000 rows a file, measured in the same run.
//!
//! Run: `cargo bench -p vigil-worker --bench storage`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Instant;

use bytes::Bytes;
use parsers::{DeviceParsers, EventTime, OrgId, Parser};
use worker::events::{EventBuffer, EventWriterConfig, FileWriter};

/// The allocator of the `vigil` binary.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const EVENTS: usize = 100_000;
const ROUNDS: usize = 5;

/// A deterministic stream of numbers for the lines' variable parts.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

/// Line `i` of the workload: the mix of `vigil bench`'s (sshd failures,
/// UFW blocks, RFC 5424 application lines, CEF).
fn line(i: usize, r: &mut Lcg) -> String {
    let host = format!("10.0.{}.{}", r.next(100), r.next(250) + 1);
    let ip = format!("{}.{}.{}.{}", r.next(223) + 1, r.next(256), r.next(256), r.next(254) + 1);
    let second = i % 60;
    match i % 4 {
        0 => format!(
            "<38>Nov 22 10:00:{second:02} {host} sshd[{}]: Failed password for invalid user admin from {ip} port {} ssh2",
            r.next(60_000),
            r.next(65_000)
        ),
        1 => format!(
            "<4>Nov 22 10:00:{second:02} {host} kernel: [UFW BLOCK] IN=eth0 OUT= SRC={ip} DST=10.0.0.{} LEN=60 \
             PROTO=TCP SPT={} DPT={}",
            r.next(250),
            r.next(65_000),
            r.next(1_024)
        ),
        2 => format!(
            "<165>1 2026-11-22T10:00:{second:02}.{:03}Z {host} billing {} ORDER [meta@32473 user=\"u{}\"] order {} paid",
            r.next(1_000),
            r.next(9_000),
            r.next(500),
            r.next(1_000_000)
        ),
        _ => format!(
            "<134>Nov 22 10:00:{second:02} {host} CEF:0|Acme|Firewall|2.1|{}|Blocked connection|5|src={ip} spt={} \
             dst=10.0.0.{} dpt=443 act=blocked",
            r.next(100),
            r.next(65_000),
            r.next(250)
        ),
    }
}

/// CPU seconds of this thread so far (wall time since `start` if unknown).
fn cpu(start: Instant) -> f64 {
    worker::priority::thread_cpu_seconds().unwrap_or_else(|| start.elapsed().as_secs_f64())
}

fn main() {
    let parser = Parser::new();
    let devices = DeviceParsers::builtin().unwrap();
    let at = EventTime::from_unix(1_800_000_000, 0, 0);
    let mut r = Lcg(7);
    let events: Vec<parsers::Event> = (0..EVENTS)
        .map(|i| {
            let mut e = parser.parse(Bytes::from(line(i, &mut r)), at);
            devices.classify(&mut e);
            e.id = i as u64 + 1;
            // What the intake adds: the sender and the collector.
            e.reporter_ip = e.host.as_deref().and_then(|h| h.parse().ok());
            e.collector = Some("c1".into());
            e
        })
        .collect();
    let dir = std::env::temp_dir().join(format!("vigil-bench-storage-{}", std::process::id()));
    let writer = FileWriter::open(&EventWriterConfig::new(&dir, "bench"), at).unwrap();
    // Partitions (orgs) per shape: 1,000, 10,000 and 100,000 rows a file.
    let shapes = [100u32, 10, 1];
    // Per shape: CPU seconds, wall seconds, bytes.
    let mut totals = [(0f64, 0f64, 0u64); 3];
    // CPU seconds of building the columns (append and seal), all shapes.
    let mut columns = 0f64;
    let clock = Instant::now();
    for round in 0..ROUNDS {
        for k in 0..shapes.len() {
            let k = (k + round) % shapes.len();
            let mut buffer = EventBuffer::new(1 << 20);
            let shaped: Vec<parsers::Event> = events
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    let mut e = e.clone();
                    let org = i as u32 % shapes[k] + 1;
                    e.org_id = Some(OrgId(org));
                    e.org = Some(format!("org-{org}").into());
                    e
                })
                .collect();
            let cpu0 = cpu(clock);
            for e in &shaped {
                buffer.append(e.id, e).unwrap();
            }
            let sealed = buffer.seal().unwrap();
            columns += cpu(clock) - cpu0;
            let (cpu0, wall0) = (cpu(clock), Instant::now());
            for s in &sealed {
                totals[k].2 += writer.write(s).unwrap().bytes;
            }
            totals[k].0 += cpu(clock) - cpu0;
            totals[k].1 += wall0.elapsed().as_secs_f64();
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let n = (EVENTS * ROUNDS) as f64;
    let base = totals[2];
    println!("storage: Parquet write (encode, zstd, fsync) of {EVENTS} events, {ROUNDS} rounds");
    println!(
        "storage/columns: Arrow columns (append and seal) CPU {:.2} µs/event",
        columns * 1e6 / (n * shapes.len() as f64)
    );
    for (k, orgs) in shapes.iter().enumerate() {
        let (c, w, b) = totals[k];
        println!(
            "storage/{:>6} rows a file: CPU {:.2} µs/event ({:.2}× 100,000 rows a file), wall {:.2} µs/event, \
             {:.1} Parquet bytes/event ({:.2}×)",
            EVENTS / *orgs as usize,
            c * 1e6 / n,
            c / base.0,
            w * 1e6 / n,
            b as f64 / n,
            b as f64 / base.2 as f64
        );
    }
}
