//! The worker loop: admitted events in, stored and correlated. Each event
//! gets an id, goes to its Parquet partition and through the rule engine;
//! on every tick of the flush interval the buffered events are written and
//! the engine's clock advances; incidents go to the caller's sink. When
//! the input channel closes, everything buffered is written and every
//! window closed before the loop returns.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use collector::Clock;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use parsers::Event;
use rules::{Engine, Incident};

use crate::events::{EventWriter, WorkerError};

/// What the worker has done, for metrics.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Events taken in.
    pub events: AtomicU64,
    /// Events written to Parquet.
    pub stored: AtomicU64,
    /// Parquet files written.
    pub files: AtomicU64,
    /// Parquet bytes written.
    pub bytes: AtomicU64,
    /// Incident updates produced.
    pub incidents: AtomicU64,
    /// Events waiting to be written.
    pub buffered: AtomicU64,
    /// The engine's state estimate, bytes.
    pub rule_state_bytes: AtomicU64,
    /// Failed writes (retried on the next tick).
    pub write_errors: AtomicU64,
}

/// The worker: a writer, an engine, and an id sequence.
pub struct Worker {
    writer: EventWriter,
    engine: Engine,
    next_id: u64,
    stats: Arc<WorkerStats>,
}

impl Worker {
    /// A worker whose event ids start at `first_id` (make it unique per
    /// run, e.g. start time in seconds << 32).
    pub fn new(writer: EventWriter, engine: Engine, first_id: u64, stats: Arc<WorkerStats>) -> Worker {
        Worker { writer, engine, next_id: first_id, stats }
    }

    /// Runs until `input` closes; `sink` receives incident updates.
    /// Returns the number of events written in all.
    pub fn run(
        mut self,
        input: &Receiver<Vec<Event>>,
        clock: &dyn Clock,
        flush_every: Duration,
        mut sink: impl FnMut(Vec<Incident>),
    ) -> Result<u64, WorkerError> {
        let mut incidents = Vec::new();
        let mut next_tick = std::time::Instant::now() + flush_every;
        loop {
            let wait = next_tick.saturating_duration_since(std::time::Instant::now());
            match input.recv_timeout(wait) {
                Ok(events) => {
                    self.stats.events.fetch_add(events.len() as u64, Ordering::Relaxed);
                    for event in events {
                        let id = self.next_id;
                        self.next_id += 1;
                        self.engine.process(id, &event, &mut incidents);
                        match self.writer.append(id, event) {
                            Ok(r) => self.count(&r),
                            Err(e) => self.write_failed(&e, flush_every),
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if std::time::Instant::now() >= next_tick {
                next_tick = std::time::Instant::now() + flush_every;
                match self.writer.flush() {
                    Ok(r) => self.count(&r),
                    Err(e) => self.write_failed(&e, flush_every),
                }
                self.engine.advance(clock.now(), &mut incidents);
                self.stats.rule_state_bytes.store(self.engine.stats().state_bytes as u64, Ordering::Relaxed);
            }
            self.stats.buffered.store(self.writer.buffered() as u64, Ordering::Relaxed);
            if !incidents.is_empty() {
                self.stats.incidents.fetch_add(incidents.len() as u64, Ordering::Relaxed);
                sink(std::mem::take(&mut incidents));
            }
        }
        let r = self.writer.flush()?;
        self.count(&r);
        self.stats.buffered.store(0, Ordering::Relaxed);
        self.engine.flush(&mut incidents);
        if !incidents.is_empty() {
            self.stats.incidents.fetch_add(incidents.len() as u64, Ordering::Relaxed);
            sink(incidents);
        }
        Ok(self.stats.stored.load(Ordering::Relaxed))
    }

    /// A write failed: the events stay buffered for the next attempt, and
    /// the worker slows down so that a full disk pushes back on the
    /// pipeline (and TCP senders) instead of growing memory without bound.
    fn write_failed(&self, e: &WorkerError, pause: Duration) {
        self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
        eprintln!("vigil worker: writing events failed, keeping them and retrying: {e}");
        std::thread::sleep(pause);
    }

    fn count(&self, r: &crate::events::FlushReport) {
        self.stats.stored.fetch_add(r.events as u64, Ordering::Relaxed);
        self.stats.files.fetch_add(r.files as u64, Ordering::Relaxed);
        self.stats.bytes.fetch_add(r.bytes, Ordering::Relaxed);
    }
}
