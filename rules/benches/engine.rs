//! The engine's throughput with 10, 100 and 1,000 rules over 1,000 orgs
//! and 1,000,000 distinct group keys, against a same-run baseline that only
//! iterates the same events; and the bytes of state per active key.
//!
//! Workload: 200 event types; rule `i` watches type `i % 200`, so an event
//! reaches 0.05, 0.5 and 5 rules on average with 10, 100 and 1,000 rules
//! (the index skips the rest). Rules are of the built-in pack's kinds:
//! 60 % count thresholds per `src_ip`, 20 % distinct users per `src_ip`,
//! 10 % distinct ports per `src_ip`, 10 % a count threshold followed by a
//! success from the same `src_ip`. Events carry one of 1,000,000 source
//! addresses (the group keys) in one of 1,000 orgs; event time advances 10 µs
//! per event, so all keys are active within the 60 s windows.
//!
//! Run: `cargo bench -p vigil-rules --bench engine`. The state-size figures
//! are printed before the timings. The `eviction` group feeds one new key
//! per event, at and below the key ceiling (`rules.max_keys`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use parsers::{Event, EventTime, OrgId, Str};
use rules::{Compiler, Engine, EngineConfig, RuleSet};

const TYPES: usize = 200;
const ORGS: u32 = 1000;
const KEYS: u32 = 1_000_000;
const BATCH: usize = 100_000;
const STEP_NANOS: i64 = 10_000;

fn rule_set(n: usize) -> Arc<RuleSet> {
    let mut yaml = String::new();
    for i in 0..n {
        let t = i % TYPES;
        let rule = match i % 10 {
            0..=5 => format!(
                "- id: count-{i}\n  patterns:\n    p:\n      filter: {{event_type: t{t}}}\n      group_by: [src_ip]\n      window: 60s\n      having: count >= {}\n",
                20 + i % 7
            ),
            6 | 7 => format!(
                "- id: users-{i}\n  patterns:\n    p:\n      filter: {{event_type: t{t}}}\n      group_by: [src_ip]\n      window: 10m\n      having: count_distinct(user) >= 10\n"
            ),
            8 => format!(
                "- id: ports-{i}\n  patterns:\n    p:\n      filter: {{event_type: t{t}, dst_port|exists: true}}\n      group_by: [src_ip]\n      window: 60s\n      having: count_distinct(dst_port) >= 20\n"
            ),
            _ => format!(
                "- id: seq-{i}\n  patterns:\n    a:\n      filter: {{event_type: t{t}}}\n      group_by: [src_ip]\n      window: 60s\n      having: count >= 5\n    b:\n      filter: {{event_type: t{}, outcome: success}}\n  condition: a followed by b\n  within: 300s\n  join: [src_ip]\n",
                (t + 1) % TYPES
            ),
        };
        yaml.push_str(&rule);
    }
    let mut compiler = Compiler::new();
    compiler.add_source("bench.yaml", &yaml);
    Arc::new(compiler.finish().unwrap().0)
}

/// A cheap deterministic sequence (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn events(count: usize, seed: u64) -> Vec<Event> {
    let types: Vec<Str> = (0..TYPES).map(|t| Str::from(format!("t{t}"))).collect();
    let users: Vec<Str> = (0..50).map(|u| Str::from(format!("user{u}"))).collect();
    let orgs: Vec<Str> = (0..ORGS).map(|o| Str::from(format!("org-{o}"))).collect();
    let mut rng = Rng(seed);
    (0..count)
        .map(|i| {
            let key = rng.next(u64::from(KEYS)) as u32;
            let mut e = Event::empty(Bytes::new(), EventTime::from_unix_nanos(i as i128 * i128::from(STEP_NANOS)));
            let org = key % ORGS;
            e.org_id = Some(OrgId(2 + org));
            e.org = Some(orgs[org as usize].clone());
            e.event_type = Some(types[rng.next(TYPES as u64) as usize].clone());
            e.src_ip = Some(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | key)));
            e.user = Some(users[rng.next(50) as usize].clone());
            e.dst_port = Some(1 + rng.next(1024) as u16);
            e.outcome = Some(Str::from(if rng.next(20) == 0 { "success" } else { "failure" }));
            e
        })
        .collect()
}

/// Moves a batch forward in time by its own span, so replaying it keeps
/// event time increasing, and on to the next `BATCH` keys (same orgs), so
/// replays cycle through all `KEYS` keys.
fn shift(events: &mut [Event], by: i64) {
    for e in events {
        e.time = EventTime::from_unix_nanos(e.time.unix_nanos() + i128::from(by));
        if let Some(IpAddr::V4(ip)) = e.src_ip {
            let key = (u32::from(ip) & 0x00ff_ffff) + BATCH as u32;
            e.src_ip = Some(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (key % KEYS))));
        }
    }
}

fn resident_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = status.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

/// Bytes per active threshold key: the brute-force kind of rule (count >= 5
/// per `src_ip` in 60 s), 1,000,000 keys in 1,000 orgs with three events
/// each, all within the window.
fn state_size() {
    let yaml = "id: brute\npatterns:\n  p:\n    filter: {event_type: t0}\n    group_by: [src_ip]\n    window: 60s\n    having: count >= 5\n";
    let mut compiler = Compiler::new();
    compiler.add_source("brute.yaml", yaml);
    let rules = Arc::new(compiler.finish().unwrap().0);
    let mut engine = Engine::new(rules, EngineConfig { lateness: Duration::ZERO, ..EngineConfig::default() });
    let mut out = Vec::new();
    let before = resident_bytes();
    let mut id = 0u64;
    let t0 = Str::from("t0");
    for _round in 0..3u32 {
        for key in 0..KEYS {
            id += 1;
            let mut e = Event::empty(Bytes::new(), EventTime::from_unix_nanos(i128::from(id) * 15_000));
            e.org_id = Some(OrgId(2 + key % ORGS));
            e.event_type = Some(t0.clone());
            e.src_ip = Some(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | key)));
            engine.process(id, &e, &mut out);
        }
    }
    let after = resident_bytes();
    let stats = engine.stats();
    assert!(out.is_empty());
    println!(
        "state: {} active threshold keys (3 events each); engine estimate {} B/key; resident memory growth {} B/key",
        stats.window_keys,
        stats.state_bytes / stats.window_keys.max(1),
        after.saturating_sub(before) / stats.window_keys.max(1)
    );
}

fn engine_benches(c: &mut Criterion) {
    state_size();
    let template = events(BATCH, 0x9e37_79b9_7f4a_7c15);
    let span = BATCH as i64 * STEP_NANOS;

    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(15));

    group.bench_function("baseline_iterate_events", |b| {
        let mut batch = template.clone();
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                shift(&mut batch, span);
                let start = Instant::now();
                let mut sum = 0usize;
                for e in &batch {
                    sum += e.event_type.as_ref().map_or(0, |t| t.len());
                    sum += usize::from(e.src_ip.is_some()) + e.org_id.map_or(0, |o| o.0 as usize);
                }
                black_box(sum);
                total += start.elapsed();
            }
            total
        });
    });

    for n in [10, 100, 1000] {
        let rules = rule_set(n);
        let mut engine = Engine::new(Arc::clone(&rules), EngineConfig::default());
        let mut batch = template.clone();
        let mut out = Vec::new();
        let mut id = 0u64;
        group.bench_function(format!("rules_{n}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    shift(&mut batch, span);
                    out.clear();
                    let start = Instant::now();
                    for e in &batch {
                        id += 1;
                        engine.process(id, e, &mut out);
                    }
                    total += start.elapsed();
                }
                total
            });
        });
        let stats = engine.stats();
        let keys = stats.window_keys + stats.join_keys;
        println!(
            "rules_{n}: {} events; {} window keys, {} join keys, {} buffered records; {} incidents; {} late; {} MB of state ({} B per key)",
            stats.events,
            stats.window_keys,
            stats.join_keys,
            stats.buffered,
            stats.incidents,
            stats.late_events,
            stats.state_bytes >> 20,
            stats.state_bytes / keys.max(1)
        );
    }
    group.finish();
    eviction_benches(c);
}

/// A new key per event (an attacker's one-off source addresses, the shape
/// of `vigil bench`'s workload): at the key ceiling each one evicts an old
/// key; below it, sweeps drop the keys that left the 1 s window. The
/// difference is what eviction costs per key.
fn eviction_benches(c: &mut Criterion) {
    let yaml = "id: brute\npatterns:\n  p:\n    filter: {event_type: t0}\n    group_by: [src_ip]\n    window: 1s\n    having: count >= 5\n";
    let mut compiler = Compiler::new();
    compiler.add_source("brute.yaml", yaml);
    let rules = Arc::new(compiler.finish().unwrap().0);
    let t0 = Str::from("t0");
    let orgs: Vec<Str> = (0..10).map(|o| Str::from(format!("org-{o}"))).collect();
    let mut group = c.benchmark_group("eviction");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(20);
    // (name, key ceiling, ns between events: 10 µs keeps 100,000 keys in the
    // 1 s window, 1 µs a million, so the 250,000-key ceiling is reached).
    for (name, max_window_keys, spacing) in [
        ("new_keys_below_ceiling", 10_000_000, 10_000i128),
        ("new_keys_at_ceiling", 50_000, 10_000),
        ("new_keys_at_ceiling_250k", 250_000, 1_000),
    ] {
        let config = EngineConfig {
            lateness: Duration::ZERO,
            max_window_keys,
            sweep_every: Duration::from_millis(100),
            ..EngineConfig::default()
        };
        let mut engine = Engine::new(Arc::clone(&rules), config);
        let mut out = Vec::new();
        let mut n = 0u64;
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let batch: Vec<Event> = (0..BATCH as u64)
                        .map(|i| {
                            let k = n + i;
                            let mut e = Event::empty(Bytes::new(), EventTime::from_unix_nanos(i128::from(k) * spacing));
                            e.org_id = Some(OrgId(2 + (k % 10) as u32));
                            e.org = Some(orgs[(k % 10) as usize].clone());
                            e.event_type = Some(t0.clone());
                            e.src_ip = Some(IpAddr::V4(Ipv4Addr::from(k as u32)));
                            e
                        })
                        .collect();
                    out.clear();
                    let start = Instant::now();
                    for e in &batch {
                        n += 1;
                        engine.process(n, e, &mut out);
                    }
                    total += start.elapsed();
                }
                total
            });
        });
        let stats = engine.stats();
        println!("{name}: {} window keys, {} evicted, {} events", stats.window_keys, stats.evicted_keys, stats.events);
    }
    group.finish();
}

criterion_group!(benches, engine_benches);
criterion_main!(benches);
