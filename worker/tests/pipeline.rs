//! The worker loop with a real engine and writer, on a manual clock.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use collector::ManualClock;
use parsers::{DeviceParsers, Event, EventTime, OrgId, Parser};
use rules::{Compiler, Engine, EngineConfig};
use worker::{EventWriter, EventWriterConfig, Worker, WorkerStats};

const T0: i64 = 1_795_000_000;

/// A failed SSH login at `secs`, received at the same moment.
fn failure(secs: i64, port: u32) -> Event {
    let at = EventTime::from_unix(secs, 0, 0);
    let line = format!("<38>1 {at} web-03 sshd 2311 - - Failed password for root from 203.0.113.45 port {port} ssh2");
    let mut e = Parser::new().parse(Bytes::from(line), at);
    DeviceParsers::builtin().unwrap().classify(&mut e);
    e.org_id = Some(OrgId(3));
    e.org = Some("Acme".into());
    assert_eq!(e.event_type.as_deref(), Some("ssh.auth.failure"));
    e
}

#[test]
fn waiting_in_vigils_own_queues_never_makes_an_event_late() {
    let dir = std::env::temp_dir().join(format!("vigil-worker-backlog-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut compiler = Compiler::new();
    for (name, text) in rules::PACK {
        compiler.add_source(name, text);
    }
    let (rules, _) = compiler.finish().unwrap();
    let engine =
        Engine::new(Arc::new(rules), EngineConfig { lateness: Duration::from_secs(2), ..EngineConfig::default() });
    let writer = EventWriter::open(EventWriterConfig::new(&dir, "node-1"), EventTime::from_unix(T0, 0, 0)).unwrap();
    let stats = Arc::new(WorkerStats::default());
    let worker = Worker::new(writer, engine, 1, stats.clone());
    // The worker is an hour behind its input: a backlog drained late.
    let clock = ManualClock::new(EventTime::from_unix(T0 + 3_600, 0, 0));
    let (tx, rx) = crossbeam_channel::bounded(4);
    let run = std::thread::spawn(move || {
        let mut found = Vec::new();
        let stored = worker.run(&rx, &clock, Duration::from_millis(1), |d| found.extend(d)).unwrap();
        (stored, found)
    });
    tx.send((0..3).map(|i| failure(T0, 50_000 + i)).collect::<Vec<_>>()).unwrap();
    // Flush ticks run at the clock's hour-later time before the rest arrives.
    std::thread::sleep(Duration::from_millis(50));
    tx.send((3..6).map(|i| failure(T0 + 1, 50_000 + i)).collect::<Vec<_>>()).unwrap();
    drop(tx);
    let (stored, found) = run.join().unwrap();
    assert_eq!(stored, 6);
    assert_eq!(
        stats.late_events.load(Ordering::Relaxed),
        0,
        "late: judged against receive time, not the worker's clock"
    );
    let brute: Vec<_> = found.iter().filter(|d| d.incident.rule == "ssh-brute-force").collect();
    assert_eq!(brute.len(), 1, "{found:?}");
    let ids = &brute[0].incident.event_ids;
    assert_eq!(brute[0].received_at, Some(EventTime::from_unix(T0 + 1, 0, 0)), "first hit completed by event {ids:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
