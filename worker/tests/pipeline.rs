//! The worker loop with a real engine and writer, on a manual clock.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::parquet_rows;

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
    e.id = u64::from(port);
    assert_eq!(e.event_type.as_deref(), Some("ssh.auth.failure"));
    e
}

#[test]
fn waiting_in_vigils_own_queues_never_makes_an_event_late() {
    let dir = std::env::temp_dir().join(format!("vigil-worker-backlog-{}", std::process::id()));
    let (worker, stats) = pack_worker(&dir);
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

#[test]
fn a_quiet_orgs_incident_is_released_once_due_not_at_the_next_flush_tick() {
    // Regression: the clock moved the rule engine only at flush ticks (1 s
    // by default), so an org that fell quiet right after an attack had its
    // incident wait up to a tick past the lateness (the p99 of a light
    // `vigil bench` run was lateness + 0.3–0.7 s).
    let dir = std::env::temp_dir().join(format!("vigil-worker-due-{}", std::process::id()));
    let (worker, _) = pack_worker(&dir);
    let clock = ManualClock::new(EventTime::from_unix(T0, 0, 0));
    let (tx, rx) = crossbeam_channel::bounded(4);
    let (found_tx, found) = crossbeam_channel::unbounded();
    let worker_clock = clock.clone();
    // No flush tick within the test: only the due time can release.
    let run = std::thread::spawn(move || {
        worker.run(&rx, &worker_clock, Duration::from_secs(3_600), |d| {
            let _ = found_tx.send(d);
        })
    });
    tx.send((0..6).map(|i| failure(T0, 50_000 + i)).collect::<Vec<_>>()).unwrap();
    // Not yet due: the lateness has not passed.
    clock.set(EventTime::from_unix(T0 + 1, 900_000_000, 0));
    std::thread::sleep(Duration::from_millis(300));
    assert!(found.try_recv().is_err(), "released before the lateness passed");
    // Due: the horizon is the receive time plus the clock's time since the
    // worker took the batch, so if the worker took it late (a loaded
    // machine), the clock must move on a little further.
    let mut detections = None;
    for step in 0..100 {
        clock.set(EventTime::from_unix(T0 + 2, 0, 0).add_secs(step));
        if let Ok(d) = found.recv_timeout(Duration::from_millis(300)) {
            detections = Some(d);
            break;
        }
    }
    let detections = detections.expect("not released once due");
    let brute: Vec<_> = detections.iter().filter(|d| d.incident.rule == "ssh-brute-force").collect();
    assert_eq!(brute.len(), 1, "{detections:?}");
    assert_eq!(brute[0].received_at, Some(EventTime::from_unix(T0, 0, 0)));
    drop(tx);
    assert_eq!(run.join().unwrap().unwrap(), 6);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A worker with the built-in pack and 2 s of lateness, writing under a
/// fresh `dir`.
fn pack_worker(dir: &std::path::Path) -> (Worker, Arc<WorkerStats>) {
    let _ = std::fs::remove_dir_all(dir);
    let mut compiler = Compiler::new();
    for (name, text) in rules::PACK {
        compiler.add_source(name, text);
    }
    let (rules, _) = compiler.finish().unwrap();
    let engine = Engine::new(Arc::new(rules), EngineConfig::for_lateness(Duration::from_secs(2)));
    let writer = EventWriter::open(EventWriterConfig::new(dir, "node-1"), EventTime::from_unix(T0, 0, 0)).unwrap();
    let stats = Arc::new(WorkerStats::default());
    (Worker::new(writer, engine, stats.clone()), stats)
}

fn plain_worker(dir: &std::path::Path) -> (Worker, Arc<WorkerStats>) {
    let (rules, _) = Compiler::new().finish().unwrap();
    let engine = Engine::new(Arc::new(rules), EngineConfig::default());
    let writer = EventWriter::open(EventWriterConfig::new(dir, "node-1"), EventTime::from_unix(T0, 0, 0)).unwrap();
    let stats = Arc::new(WorkerStats::default());
    (Worker::new(writer, engine, stats.clone()), stats)
}

#[test]
fn a_failing_disk_holds_the_events_until_it_recovers_and_loses_none() {
    let dir = std::env::temp_dir().join(format!("vigil-worker-disk-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (worker, stats) = plain_worker(&dir);
    // A plain file where org 3's partition directory must go.
    let blocker = dir.join("events/org=3");
    std::fs::write(&blocker, b"in the way").unwrap();
    let clock = ManualClock::new(EventTime::from_unix(T0, 0, 0));
    let (tx, rx) = crossbeam_channel::bounded(4);
    let run = std::thread::spawn(move || worker.run(&rx, &clock, Duration::from_millis(5), |_| {}));
    let mut org4 = failure(T0, 1);
    org4.org_id = Some(OrgId(4));
    tx.send(vec![failure(T0, 1), failure(T0, 2), org4]).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while stats.write_errors.load(Ordering::Relaxed) == 0 {
        assert!(std::time::Instant::now() < deadline, "the write never failed");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::fs::remove_file(&blocker).unwrap();
    tx.send(vec![failure(T0, 3)]).unwrap();
    drop(tx);
    assert_eq!(run.join().unwrap().unwrap(), 4, "every event written once the disk recovered");
    assert_eq!(parquet_rows(&dir), 4, "and exactly once");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_disk_still_failing_at_shutdown_is_an_error_not_a_hang() {
    let dir = std::env::temp_dir().join(format!("vigil-worker-dead-disk-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (worker, stats) = plain_worker(&dir);
    std::fs::write(dir.join("events/org=3"), b"in the way").unwrap();
    let clock = ManualClock::new(EventTime::from_unix(T0, 0, 0));
    let (tx, rx) = crossbeam_channel::bounded(4);
    tx.send(vec![failure(T0, 1)]).unwrap();
    drop(tx);
    let result = worker.run(&rx, &clock, Duration::from_millis(5), |_| {});
    assert!(result.is_err(), "{result:?}");
    assert_eq!(stats.stored.load(Ordering::Relaxed), 0);
    assert!(stats.write_errors.load(Ordering::Relaxed) >= 3);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A source whose batches carry stream positions, as JetStream's do.
struct Positioned {
    rx: crossbeam_channel::Receiver<(u64, Vec<Event>)>,
    last: std::sync::atomic::AtomicU64,
}

impl worker::BatchSource for Positioned {
    fn recv_timeout(&self, wait: Duration) -> Result<Vec<Event>, crossbeam_channel::RecvTimeoutError> {
        let (position, events) = self.rx.recv_timeout(wait)?;
        self.last.store(position, Ordering::Relaxed);
        Ok(events)
    }

    fn waiting(&self) -> usize {
        self.rx.len()
    }

    fn position(&self) -> u64 {
        self.last.load(Ordering::Relaxed)
    }
}

/// A durable position tells the cluster what it may purge, and a new
/// owner keeps a file only if a commit covers it whole: every position the
/// worker announces must have its events on disk, and no file may hold
/// rows on both sides of it.
#[test]
fn a_durable_position_has_its_events_on_disk_and_splits_no_file() {
    let dir = std::env::temp_dir().join(format!("vigil-worker-durable-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (worker, stats) = plain_worker(&dir);
    let announced = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (seen, on_disk) = (announced.clone(), stats.clone());
    // Each position is one batch of 3 events (ids 3p to 3p + 2): position
    // p is durable once 3 * p events are stored.
    let worker = worker.with_durable(Arc::new(move |p| {
        seen.lock().unwrap().push((p, on_disk.stored.load(Ordering::Relaxed)));
    }));
    let (tx, rx) = crossbeam_channel::bounded(64);
    let source = Positioned { rx, last: Default::default() };
    let clock = ManualClock::new(EventTime::from_unix(T0, 0, 0));
    let run = std::thread::spawn(move || worker.run(&source, &clock, Duration::from_millis(80), |_| {}).unwrap());
    // About ten batches of each org per flush interval: a file spans many
    // positions.
    let template = failure(T0, 0);
    for p in 1..=240u64 {
        let batch = (0..3)
            .map(|i| {
                let mut e = template.clone();
                e.id = p * 3 + i;
                // Eight orgs in turn, so that partitions fill at different
                // positions.
                e.org_id = Some(OrgId(p as u32 % 8 + 1));
                e
            })
            .collect();
        tx.send((p, batch)).unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(tx);
    assert_eq!(run.join().unwrap(), 720);
    let announced = announced.lock().unwrap();
    assert!(announced.len() > 1, "durable positions announced as the run went: {announced:?}");
    for pair in announced.windows(2) {
        assert!(pair[0].0 < pair[1].0, "durable positions only grow: {announced:?}");
    }
    for (p, stored) in announced.iter() {
        assert!(*stored >= 3 * p, "position {p} announced with {stored} events stored: {announced:?}");
    }
    assert_eq!(announced.last().map(|a| a.0), Some(240), "everything, at the end");
    // Each file's positions, from its event ids.
    for file in common::files(&dir).iter().filter(|f| f.extension().is_some_and(|e| e == "parquet")) {
        let ids: Vec<u64> = common::read(file)
            .iter()
            .flat_map(|b| {
                let column = b.column_by_name("id").unwrap();
                let ids = column.as_any().downcast_ref::<arrow_array::UInt64Array>().unwrap();
                ids.values().to_vec()
            })
            .collect();
        let (low, high) = (ids.iter().min().unwrap() / 3, ids.iter().max().unwrap() / 3);
        for (p, _) in announced.iter() {
            assert!(high <= *p || low > *p, "{} holds positions {low}-{high}, across {p}", file.display());
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
