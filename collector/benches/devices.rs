//! The device inventory's cost on the ingest path (issue #18): the intake
//! (parse, classify, org, inventory, gate, ids) with the inventory off and
//! on, its table already holding 100,000 devices, measured in the same
//! run, over three traffic shapes:
//!
//! - `direct`: devices sending their own logs; a batch is one connection's
//!   read, 64 lines of one device, successive batches from devices spread
//!   over the whole table;
//! - `relayed`: a relay forwarding for 1,000 of the devices, 1,024 lines a
//!   batch from hosts drawn among them (identity = HOSTNAME);
//! - `scattered`: the worst case, 1,024 lines a batch each from a
//!   different device anywhere in the table.
//!
//! Run: `cargo bench -p vigil-collector --bench devices`; the figure is the
//! ratio of the throughputs on and off for each shape (target ≥ 0.97).
//! `DEVICES_TRACKER=1` times the tracker alone instead (ns per event over
//! prebuilt batches, whose events are not in cache as the intake's are);
//! `DEVICES_SHAPE=relayed` (say) measures one shape, for profiling.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, Ipv4Addr};

use bytes::Bytes;
use collector::devices::{DeviceTracker, Origin};
use collector::gate::Gate;
use collector::intake::Intake;
use collector::listen::{RawBatch, Received, Transport};
use collector::orgs::OrgTable;
use collector::{Budget, NodeId};
use criterion::{BatchSize, Criterion, Throughput, criterion_group};
use parsers::framing::Frame;
use parsers::{DeviceParsers, EventTime, Parser};

/// The allocator of the `vigil` binary: the cost of a table of small
/// allocations next to the parser's depends on it.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const DEVICES: u32 = 100_000;
const BATCH: u32 = 1_024;

fn intake(with_devices: bool) -> Intake {
    let gate = std::sync::Arc::new(Gate::new(NodeId::new("c1"), Budget::node_only(0, u64::MAX)));
    let devices = DeviceParsers::builtin().unwrap();
    let families = devices.family_names().map(Into::into).collect();
    let orgs = OrgTable::new(vec![], None).unwrap();
    let intake = Intake::new(Parser::new(), Some(devices), orgs, gate, "c1");
    if !with_devices {
        return intake;
    }
    let relays = vec!["127.0.0.0/8".parse().unwrap()];
    intake.with_devices(DeviceTracker::new(NodeId::new("c1"), relays, DEVICES as usize, families, 0))
}

/// Device `i`'s line and sender: behind the relay, or sending itself.
fn line(i: u32, relayed: bool) -> Received {
    let host = format!("host-{i}");
    let text = format!(
        "<38>Nov 22 10:15:42 {host} sshd[2311]: Failed password for root from 203.0.113.45 port {} ssh2",
        40_000 + i % 20_000
    );
    let peer = if relayed { IpAddr::V4(Ipv4Addr::LOCALHOST) } else { IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)) };
    Received { peer, frame: Frame { data: Bytes::from(text), truncated: false } }
}

fn batch(items: Vec<Received>) -> RawBatch {
    RawBatch { transport: Transport::Tcp, received_at: EventTime::from_unix(1_800_000_000, 0, 0), items }
}

/// Which line of the table the `k`th line of batch `n` is, per shape.
fn pick(shape: &str, n: u32, k: u32) -> u32 {
    match shape {
        "direct" => n.wrapping_mul(7_919) % DEVICES,
        // The relay's 1,000 hosts: every 100th device.
        "relayed" => (n.wrapping_mul(1_024).wrapping_add(k).wrapping_mul(7_919) % 1_000) * 100,
        _ => n.wrapping_mul(7_919).wrapping_add(k.wrapping_mul(97)) % DEVICES,
    }
}

fn bench(c: &mut Criterion) {
    for shape in ["direct", "relayed", "scattered"] {
        let relayed = shape == "relayed";
        let per_batch = if shape == "direct" { 64 } else { BATCH };
        let lines: Vec<Received> = (0..DEVICES).map(|i| line(i, relayed)).collect();
        let mut group = c.benchmark_group(format!("intake_{shape}"));
        group.throughput(Throughput::Elements(u64::from(per_batch)));
        for with_devices in [false, true] {
            let intake = intake(with_devices);
            let mut out = Vec::new();
            // Every device seen once: the table holds all of them.
            for chunk in lines.chunks(BATCH as usize) {
                intake.process(batch(chunk.to_vec()), &mut out);
                out.clear();
            }
            if with_devices {
                assert_eq!(intake.devices().unwrap().len(), DEVICES as usize);
            }
            let mut n = 0u32;
            group.bench_function(if with_devices { "inventory_on" } else { "inventory_off" }, |b| {
                b.iter_batched(
                    || {
                        n = n.wrapping_add(1);
                        batch((0..per_batch).map(|k| lines[pick(shape, n, k) as usize].clone()).collect())
                    },
                    |raw| {
                        intake.process(raw, &mut out);
                        out.clear();
                    },
                    BatchSize::SmallInput,
                );
            });
        }
        group.finish();
    }
}

/// Every device's line parsed, with its sender, and a tracker that has
/// seen them all, for `shape`.
fn full_table(shape: &str) -> (Vec<(IpAddr, parsers::Event)>, DeviceTracker) {
    let parser = Parser::new();
    let at = EventTime::from_unix(1_800_000_000, 0, 0);
    let events: Vec<(IpAddr, parsers::Event)> = (0..DEVICES)
        .map(|i| {
            let r = line(i, shape == "relayed");
            (r.peer, parser.parse(r.frame.data, at))
        })
        .collect();
    let relays = vec!["127.0.0.0/8".parse().unwrap()];
    let mut t = DeviceTracker::new(NodeId::new("c1"), relays, DEVICES as usize, vec!["openssh".into()], 0);
    for (peer, e) in &events {
        t.observe(parsers::OrgId(2), *peer, false, e, Some(0), 1);
    }
    (events, t)
}

/// An event's origin as the intake makes it (org 2, openssh).
fn origin(t: &DeviceTracker, peer: IpAddr, e: &parsers::Event) -> Origin {
    t.origin(e, parsers::OrgId(2), peer, false, Some(0))
}

/// The tracker alone over parsed events: what a lookup and count cost.
fn tracker_alone(c: &mut Criterion) {
    let mut group = c.benchmark_group("tracker");
    group.throughput(Throughput::Elements(u64::from(BATCH)));
    for shape in ["direct", "relayed", "scattered"] {
        let (events, mut t) = full_table(shape);
        let mut n = 0u32;
        let mut standings = Vec::new();
        group.bench_function(shape, |b| {
            b.iter_batched_ref(
                || {
                    n = n.wrapping_add(1);
                    (0..BATCH).map(|k| &events[pick(shape, n, k) as usize]).cloned().unzip::<_, _, Vec<_>, Vec<_>>()
                },
                |(peers, batch): &mut (Vec<IpAddr>, Vec<parsers::Event>)| {
                    let origins: Vec<Origin> = peers.iter().zip(batch.iter()).map(|(p, e)| origin(&t, *p, e)).collect();
                    t.observe_batch(batch, &origins, 2, &mut standings);
                    std::hint::black_box(&standings);
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

/// The figure itself: both intakes over the same batches, interleaved
/// (off, on, on, off, …, 30 rounds of 20 batches each), so that load from
/// elsewhere on the machine falls on both alike; prints each shape's
/// throughput ratio on/off (total time) and the median of the rounds'.
fn interleaved_ratios() {
    // `DEVICES_SHAPE=direct` (say) measures that shape alone, for profiling.
    let only = std::env::var("DEVICES_SHAPE").ok();
    for shape in ["direct", "relayed", "scattered"].into_iter().filter(|s| only.as_deref().is_none_or(|o| o == *s)) {
        let relayed = shape == "relayed";
        let per_batch = if shape == "direct" { 64 } else { BATCH };
        let lines: Vec<Received> = (0..DEVICES).map(|i| line(i, relayed)).collect();
        let intakes = [intake(false), intake(true)];
        let mut out = Vec::new();
        for i in &intakes {
            for chunk in lines.chunks(BATCH as usize) {
                i.process(batch(chunk.to_vec()), &mut out);
                out.clear();
            }
        }
        let (mut total, mut ratios) = ([0f64; 2], Vec::new());
        let rounds = if only.is_some() { 300 } else { 30 };
        for round in 0..rounds {
            let mut took = [0f64; 2];
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for which in order {
                let batches: Vec<RawBatch> = (0..20)
                    .map(|n| {
                        batch((0..per_batch).map(|k| lines[pick(shape, round * 20 + n, k) as usize].clone()).collect())
                    })
                    .collect();
                let start = std::time::Instant::now();
                for b in batches {
                    intakes[which].process(b, &mut out);
                    out.clear();
                }
                took[which] = start.elapsed().as_secs_f64();
            }
            total[0] += took[0];
            total[1] += took[1];
            ratios.push(took[0] / took[1]);
        }
        ratios.sort_by(f64::total_cmp);
        let events = f64::from(rounds) * 20.0 * f64::from(per_batch);
        println!(
            "devices/{shape}: inventory off {:.0} events/s, on {:.0} events/s: ratio {:.3} (median of rounds {:.3})",
            events / total[0],
            events / total[1],
            total[0] / total[1],
            ratios[ratios.len() / 2]
        );
    }
}

criterion_group!(benches, bench, tracker_alone);

/// The tracker alone, timed around `observe_batch` only (prebuilt
/// batches): ns per event for each shape. `DEVICES_TRACKER=1` runs it
/// alone (for profiling; `DEVICES_SHAPE` picks one shape).
fn tracker_timing() {
    let only = std::env::var("DEVICES_SHAPE").ok();
    for shape in ["direct", "relayed", "scattered"].into_iter().filter(|s| only.as_deref().is_none_or(|o| o == *s)) {
        let per_batch = if shape == "direct" { 64 } else { BATCH };
        let (events, mut t) = full_table(shape);
        let batches: Vec<(Vec<Origin>, Vec<parsers::Event>)> = (0..200)
            .map(|n| {
                let (peers, evs): (Vec<IpAddr>, Vec<parsers::Event>) =
                    (0..per_batch).map(|k| &events[pick(shape, n, k) as usize]).cloned().unzip();
                (peers.into_iter().zip(&evs).map(|(p, e)| origin(&t, p, e)).collect(), evs)
            })
            .collect();
        let mut standings = Vec::new();
        let mut took = std::time::Duration::ZERO;
        let rounds = 20;
        for _ in 0..rounds {
            for (origins, evs) in &batches {
                standings.clear();
                let start = std::time::Instant::now();
                t.observe_batch(evs, origins, 2, &mut standings);
                took += start.elapsed();
            }
        }
        let n = f64::from(rounds * 200 * per_batch);
        println!("tracker/{shape}: {:.1} ns per event", took.as_secs_f64() * 1e9 / n);
    }
}

fn main() {
    if std::env::var("DEVICES_TRACKER").is_ok() {
        tracker_timing();
        return;
    }
    interleaved_ratios();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
