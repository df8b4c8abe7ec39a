//! Engine checkpoints: size, and time to write and to restore, for an
//! engine holding about 100,000 window keys (issue 12).
//!
//! State: the brute-force kind of rule (count >= 5 per `src_ip` in 60 s) and
//! a distinct-users rule per `src_ip`: 50,000 addresses in 100 orgs with
//! three events each, 100 µs apart, all within the windows, so 100,000
//! window keys. Measured twice: with the last 10 s (the default lateness,
//! 100,000 events) still in the reorder buffers, and after they drained.
//!
//! Run: `cargo bench -p vigil-rules --bench checkpoint`. The size is
//! printed before the timings.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use parsers::{Event, EventTime, OrgId, Str};
use rules::{Compiler, Engine, EngineConfig, RuleSet};

const ADDRESSES: u32 = 50_000;
const ORGS: u32 = 100;

fn rules() -> Arc<RuleSet> {
    let yaml = "\
- id: brute
  patterns: {p: {filter: {event_type: fail}, group_by: [src_ip], window: 60s, having: count >= 5}}
- id: spray
  patterns: {p: {filter: {event_type: fail}, group_by: [src_ip], window: 10m, having: count_distinct(user) >= 10}}
";
    let mut compiler = Compiler::new();
    compiler.add_source("bench.yaml", yaml);
    Arc::new(compiler.finish().unwrap().0)
}

fn loaded(rules: &Arc<RuleSet>) -> Engine {
    let mut engine = Engine::new(Arc::clone(rules), EngineConfig::default());
    let users: Vec<Str> = (0..20).map(|u| Str::from(format!("user{u}"))).collect();
    let fail = Str::from("fail");
    let mut out = Vec::new();
    let mut id = 0u64;
    for round in 0..3u32 {
        for key in 0..ADDRESSES {
            id += 1;
            // 100 µs apart: the last 100,000 events (10 s, the lateness)
            // are still buffered.
            let time = EventTime::from_unix_nanos(1_700_000_000_000_000_000 + i128::from(id) * 100_000);
            let mut e = Event::empty(Bytes::new(), time);
            e.org_id = Some(OrgId(2 + key % ORGS));
            e.org = Some(Str::from(format!("org-{}", key % ORGS)));
            e.event_type = Some(fail.clone());
            e.src_ip = Some(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | key)));
            e.user = Some(users[((key + round) % 20) as usize].clone());
            engine.process(id, &e, &mut out);
        }
    }
    engine
}

fn checkpoint_benches(c: &mut Criterion) {
    let rules = rules();
    let mut engine = loaded(&rules);
    let before = engine.stats();
    let mut bytes = Vec::new();
    let start = Instant::now();
    engine.checkpoint(&mut bytes);
    let wrote = start.elapsed();
    let start = Instant::now();
    let restored = Engine::restore(Arc::clone(&rules), EngineConfig::default(), &bytes).unwrap();
    let read = start.elapsed();
    assert_eq!(restored.stats().window_keys, before.window_keys);
    println!(
        "checkpoint: {} window keys, {} buffered records, {} B of state (estimate); checkpoint {} B, written in {:?}, restored in {:?}",
        before.window_keys,
        before.buffered,
        before.state_bytes,
        bytes.len(),
        wrote,
        read
    );
    // Drain the buffers: the windows alone.
    engine.advance(EventTime::from_unix_nanos(1_700_000_000_000_000_000 + 30_000_000_000), &mut Vec::new());
    let mut windows_only = Vec::new();
    let start = Instant::now();
    engine.checkpoint(&mut windows_only);
    let wrote = start.elapsed();
    let start = Instant::now();
    let restored = Engine::restore(Arc::clone(&rules), EngineConfig::default(), &windows_only).unwrap();
    let read = start.elapsed();
    let after = engine.stats();
    assert_eq!(restored.stats().window_keys, after.window_keys);
    println!(
        "checkpoint, buffers drained: {} window keys, {} buffered records; checkpoint {} B ({} B per key), written in {:?}, restored in {:?}",
        after.window_keys,
        after.buffered,
        windows_only.len(),
        windows_only.len() / after.window_keys.max(1),
        wrote,
        read
    );

    let mut group = c.benchmark_group("checkpoint");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    let engine = loaded(&rules);
    let mut out = Vec::with_capacity(bytes.len());
    group.bench_function("write_100k_keys_100k_buffered", |b| {
        b.iter(|| {
            out.clear();
            engine.checkpoint(&mut out);
            black_box(out.len())
        });
    });
    group.bench_function("restore_100k_keys_100k_buffered", |b| {
        b.iter(|| black_box(Engine::restore(Arc::clone(&rules), EngineConfig::default(), &bytes).unwrap()));
    });
    group.finish();
}

criterion_group!(benches, checkpoint_benches);
criterion_main!(benches);
