//! The gate's hot path under contention: two threads admitting into one
//! gate, as two listener threads of a collector do.
//!
//! Reported time is wall time per event *per thread* (each thread admits
//! `iters` events while the other does the same), the stricter reading of
//! "ns per event with 2 threads".
//!
//! Run: `cargo bench -p vigil-collector --bench gate`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use collector::{Budget, Gate, NodeId, OrgBudget};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use parsers::OrgId;

const THREADS: usize = 2;
const ORGS: u32 = 8;

fn gate(node_events: u64, org_limit: Option<u64>) -> Arc<Gate> {
    let orgs = (0..ORGS).map(|i| OrgBudget { org: OrgId(i + 2), enabled: true, events: org_limit }).collect();
    Arc::new(Gate::new(NodeId::new("c1"), Budget { interval: 0, node_events, orgs }))
}

/// Runs `work(thread, i)` for `i` in `0..iters` on each of two threads,
/// started together, and returns the wall time.
fn on_two_threads(iters: u64, work: impl Fn(usize, u64) + Send + Sync + 'static) -> Duration {
    let work = Arc::new(work);
    let barrier = Arc::new(Barrier::new(THREADS + 1));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (work, barrier) = (Arc::clone(&work), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                for i in 0..iters {
                    work(t, i);
                }
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    for h in handles {
        h.join().unwrap();
    }
    start.elapsed()
}

/// Two threads each admitting `iters` runs of `run` events.
fn contended(gate: &Arc<Gate>, iters: u64, run: u64) -> Duration {
    let gate = Arc::clone(gate);
    on_two_threads(iters, move |t, i| {
        let org = OrgId(2 + ((i as u32).wrapping_add(t as u32) % ORGS));
        black_box(gate.admit(org, run));
    })
}

fn gate_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("gate_2_threads");
    for (name, run, org_limit, node) in [
        ("per_event_org_limits", 1, Some(u64::MAX / 4), u64::MAX / 2),
        ("per_event_no_org_limits", 1, None, u64::MAX / 2),
        ("per_event_node_budget_spent", 1, Some(u64::MAX / 4), 0),
        ("runs_of_64_org_limits", 64, Some(u64::MAX / 4), u64::MAX / 2),
    ] {
        group.throughput(Throughput::Elements(run));
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let g = gate(node, org_limit);
                contended(&g, iters, run)
            })
        });
    }
    // Same-run baseline: the cheapest contended operation, one atomic add
    // per event on a counter both threads share.
    group.throughput(Throughput::Elements(1));
    group.bench_function("baseline_one_shared_atomic_add", |b| {
        b.iter_custom(|iters| {
            let counter = Arc::new(AtomicU64::new(0));
            on_two_threads(iters, move |_, _| {
                black_box(counter.fetch_add(1, Ordering::AcqRel));
            })
        })
    });
    group.finish();
}

criterion_group!(benches, gate_benches);
criterion_main!(benches);
