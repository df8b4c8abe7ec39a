//! `vigil run`'s worker on several shards: every event stored once, the
//! same incidents as on one shard, each shard's files under its own name,
//! and a rule set with cross-org rules kept on one shard.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use collector::ManualClock;
use collector::node::EventSink;
use parsers::{DetectionSink, DeviceParsers, Event, EventTime, IncidentUpdate, OrgId, Parser};
use rules::{Compiler, EngineConfig, RuleSet};
use worker::node::{StorageConfig, WorkerSetup};
use worker::shards::{ShardedWorker, shard_queues};

const T0: i64 = 1_795_000_000;

#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<IncidentUpdate>>>);

impl DetectionSink for Collect {
    fn deliver(&mut self, updates: Vec<IncidentUpdate>) {
        self.0.lock().unwrap().extend(updates);
    }
}

fn pack() -> RuleSet {
    let mut compiler = Compiler::new();
    for (name, text) in rules::PACK {
        compiler.add_source(name, text);
    }
    compiler.finish().unwrap().0
}

/// A failed SSH login of org `org` from an address of its own, at `secs`.
fn failure(org: u32, secs: i64, id: u64) -> Event {
    let at = EventTime::from_unix(secs, 0, 0);
    let line =
        format!("<38>1 {at} web-{org} sshd 2311 - - Failed password for root from 203.0.113.{org} port {id} ssh2");
    let mut e = Parser::new().parse(Bytes::from(line), at);
    DeviceParsers::builtin().unwrap().classify(&mut e);
    e.org_id = Some(OrgId(org));
    e.org = Some(format!("org-{org}").into());
    e.id = id;
    e
}

/// Incidents as (rule, org, key).
type Found = BTreeSet<(String, i64, String)>;

/// Eight orgs' brute forces through `shards` shards: (shards running,
/// events stored, incidents, file names).
fn run(dir: &Path, rules: RuleSet, shards: usize) -> (usize, u64, Found, Vec<String>) {
    let _ = std::fs::remove_dir_all(dir);
    let rules = Arc::new(rules);
    let engine = EngineConfig::for_lateness(Duration::from_secs(2));
    let (mut sender, queues) = shard_queues(shards, &rules, &engine);
    let storage = StorageConfig { compact_after_secs: 0, ..StorageConfig::default() };
    let setup = WorkerSetup::new("vigil", dir, storage, rules, engine);
    let sink = Collect::default();
    let clock = Arc::new(ManualClock::new(EventTime::from_unix(T0, 0, 0)));
    let worker = ShardedWorker::start(setup, queues, clock, sink.clone()).unwrap();
    let mut id = 0;
    // Batches mixing the orgs, as the collector's are.
    for second in 0..8 {
        let batch = (1..=8u32)
            .map(|org| {
                id += 1;
                failure(org, T0 + second, id)
            })
            .collect();
        sender.send(batch).unwrap();
    }
    drop(sender);
    let stored = worker.join().unwrap();
    let incidents = sink.0.lock().unwrap().iter().map(|u| (u.rule.clone(), u.org_id, u.key.clone())).collect();
    let names = common::files(&dir.join("events"))
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    (worker.shards(), stored, incidents, names)
}

#[test]
fn two_shards_store_everything_once_and_find_what_one_finds() {
    let dir = std::env::temp_dir().join(format!("vigil-shards-{}", std::process::id()));
    let (one, stored_one, found_one, _) = run(&dir, pack(), 1);
    let (two, stored_two, found_two, names) = run(&dir, pack(), 2);
    assert_eq!((one, two), (1, 2));
    assert_eq!((stored_one, stored_two), (64, 64));
    assert_eq!(common::parquet_rows(&dir.join("events")), 64, "every event stored once");
    let orgs: BTreeSet<i64> = found_two.iter().filter(|(rule, ..)| rule == "ssh-brute-force").map(|i| i.1).collect();
    assert_eq!(orgs, (1..=8).collect(), "a brute force in every org, on both shards: {found_two:?}");
    assert_eq!(found_one, found_two, "the same incidents on one shard and on two");
    // Odd orgs' files are shard 1's, even orgs' shard 0's.
    assert!(names.iter().any(|n| n.starts_with("part-vigil-s1-")), "{names:?}");
    assert!(names.iter().any(|n| n.starts_with("part-vigil-") && !n.starts_with("part-vigil-s")), "{names:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cross_org_rules_keep_the_worker_on_one_shard() {
    let mut compiler = Compiler::new();
    compiler.add_source(
        "cross.yml",
        "- id: cross-org-spray\n  scope: cross-org\n  patterns:\n    f: {filter: {event_type: ssh.auth.failure}, \
         group_by: [user], window: 2m, having: count_distinct(src_ip) >= 4}\n",
    );
    let (rules, _) = compiler.finish().unwrap();
    let dir = std::env::temp_dir().join(format!("vigil-shards-cross-{}", std::process::id()));
    let (shards, stored, found, _) = run(&dir, rules, 4);
    assert_eq!((shards, stored), (1, 64));
    assert!(found.iter().any(|(rule, ..)| rule == "cross-org-spray"), "every org's events in one engine: {found:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
