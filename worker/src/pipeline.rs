//! The worker loop: admitted events in, stored and correlated. Each event
//! gets an id, goes to its Parquet partition and through the rule engine;
//! on every tick of the flush interval the buffered events are written and
//! the engine's clock advances; incidents go to the caller's sink. When
//! the input channel closes, everything buffered is written and every
//! window closed before the loop returns.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use collector::Clock;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use parsers::{Event, EventTime};
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
    /// Events too late for the rule engine (stored, not correlated).
    pub late_events: AtomicU64,
    /// Failed writes (retried on the next tick).
    pub write_errors: AtomicU64,
}

/// An incident update and, for an incident's first hit, when the newest
/// event of that hit was received (where event→incident latency starts).
#[derive(Clone, Debug)]
pub struct Detection {
    /// The engine's report.
    pub incident: Incident,
    /// Receive time of the newest contributing event of a first hit, while
    /// the worker still remembers it (the last [`ARRIVALS`] batches).
    pub received_at: Option<EventTime>,
}

/// How many runs of event ids with one receive time the worker remembers.
pub const ARRIVALS: usize = 65_536;

/// Receive times by event id: ids are handed out in arrival order, so a
/// run of ids with one receive time is one entry.
#[derive(Default)]
struct Arrivals {
    runs: VecDeque<(u64, EventTime)>,
}

impl Arrivals {
    fn note(&mut self, id: u64, received_at: EventTime) {
        if self.runs.back().is_some_and(|(_, at)| *at == received_at) {
            return;
        }
        if self.runs.len() >= ARRIVALS {
            self.runs.pop_front();
        }
        self.runs.push_back((id, received_at));
    }

    fn of(&self, id: u64) -> Option<EventTime> {
        let after = self.runs.partition_point(|(first, _)| *first <= id);
        (after > 0).then(|| self.runs[after - 1].1)
    }
}

/// The worker: a writer, an engine, and an id sequence.
pub struct Worker {
    writer: EventWriter,
    engine: Engine,
    next_id: u64,
    stats: Arc<WorkerStats>,
    arrivals: Arrivals,
    /// Receive time of the last event taken, and the clock then.
    frontier: Option<(EventTime, EventTime)>,
}

impl Worker {
    /// A worker whose event ids start at `first_id` (make it unique per
    /// run, e.g. start time in seconds << 32).
    pub fn new(writer: EventWriter, engine: Engine, first_id: u64, stats: Arc<WorkerStats>) -> Worker {
        Worker { writer, engine, next_id: first_id, stats, arrivals: Arrivals::default(), frontier: None }
    }

    /// Runs until `input` closes; `sink` receives incident updates.
    /// Returns the number of events written in all.
    pub fn run(
        mut self,
        input: &Receiver<Vec<Event>>,
        clock: &dyn Clock,
        flush_every: Duration,
        mut sink: impl FnMut(Vec<Detection>),
    ) -> Result<u64, WorkerError> {
        let mut incidents = Vec::new();
        let mut next_tick = std::time::Instant::now() + flush_every;
        loop {
            let wait = next_tick.saturating_duration_since(std::time::Instant::now());
            match input.recv_timeout(wait) {
                Ok(events) => {
                    self.stats.events.fetch_add(events.len() as u64, Ordering::Relaxed);
                    if let Some(last) = events.last() {
                        self.frontier = Some((last.received_at, clock.now()));
                    }
                    for event in events {
                        let id = self.next_id;
                        self.next_id += 1;
                        self.arrivals.note(id, event.received_at);
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
                self.engine.advance(self.horizon(clock.now()), &mut incidents);
                let engine = self.engine.stats();
                self.stats.rule_state_bytes.store(engine.state_bytes as u64, Ordering::Relaxed);
                self.stats.late_events.store(engine.late_events, Ordering::Relaxed);
            }
            self.stats.buffered.store(self.writer.buffered() as u64, Ordering::Relaxed);
            if !incidents.is_empty() {
                sink(self.detections(&mut incidents));
            }
        }
        let r = self.writer.flush()?;
        self.count(&r);
        self.stats.buffered.store(0, Ordering::Relaxed);
        self.engine.flush(&mut incidents);
        self.stats.late_events.store(self.engine.stats().late_events, Ordering::Relaxed);
        if !incidents.is_empty() {
            sink(self.detections(&mut incidents));
        }
        Ok(self.stats.stored.load(Ordering::Relaxed))
    }

    /// How far the rule engine's clock may advance: the receive time of the
    /// last event taken plus the time since, never past `now`. While a
    /// backlog drains this trails the wall clock by the time events wait
    /// inside vigil, so queueing here never makes an event late; when the
    /// input is quiet it follows the clock, so quiet orgs' windows close.
    fn horizon(&self, now: EventTime) -> EventTime {
        match self.frontier {
            Some((received, seen)) => {
                let waited = now.unix_nanos().saturating_sub(seen.unix_nanos());
                EventTime::from_unix_nanos(received.unix_nanos().saturating_add(waited).min(now.unix_nanos()))
            }
            None => now,
        }
    }

    /// Takes the engine's reports, adding first hits' receive times.
    fn detections(&self, incidents: &mut Vec<Incident>) -> Vec<Detection> {
        self.stats.incidents.fetch_add(incidents.len() as u64, Ordering::Relaxed);
        incidents
            .drain(..)
            .map(|incident| {
                let newest = incident.event_ids.iter().max().copied().filter(|_| incident.count == 1);
                Detection { received_at: newest.and_then(|id| self.arrivals.of(id)), incident }
            })
            .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrivals_map_ids_to_the_run_they_arrived_in() {
        let t = |s: i64| EventTime::from_unix(s, 0, 0);
        let mut a = Arrivals::default();
        assert_eq!(a.of(5), None);
        for id in 10..20 {
            a.note(id, t(100));
        }
        for id in 20..25 {
            a.note(id, t(101));
        }
        assert_eq!(a.runs.len(), 2, "one entry per run");
        assert_eq!(a.of(9), None);
        assert_eq!(a.of(10), Some(t(100)));
        assert_eq!(a.of(19), Some(t(100)));
        assert_eq!(a.of(20), Some(t(101)));
        assert_eq!(a.of(1_000), Some(t(101)));
    }
}
