//! The worker loop: admitted events in, stored and correlated. Each event
//! gets an id, goes to its Parquet partition and through the rule engine;
//! on every tick of the flush interval the buffered events are written and
//! the engine's clock advances; incidents go to the caller's sink. When
//! the input channel closes, everything buffered is written and every
//! window closed before the loop returns.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use collector::Clock;
use collector::metrics::LatencyHistogram;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parsers::{Event, EventTime};
use rules::{Engine, Incident};

use crate::events::{EventBuffer, EventWriter, FileWriter, FlushReport, Sealed, WorkerError};

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
    /// Events buffered in partitions, not yet sealed.
    pub buffered: AtomicU64,
    /// Events sealed and waiting for the writer thread.
    pub sealed: AtomicU64,
    /// The engine's state estimate, bytes.
    pub rule_state_bytes: AtomicU64,
    /// Events too late for the rule engine (stored, not correlated).
    pub late_events: AtomicU64,
    /// Events stamped ahead of their receive time, correlated at it.
    pub future_events: AtomicU64,
    /// Events stamped further behind their receive time than half the
    /// lateness, correlated at that bound.
    pub behind_events: AtomicU64,
    /// Records the engine released before the allowed lateness had passed
    /// because its reorder buffers reached their ceiling.
    pub early_releases: AtomicU64,
    /// Bytes in the engine's reorder buffers (part of `rule_state_bytes`).
    pub rule_buffer_bytes: AtomicU64,
    /// Window keys the engine holds.
    pub rule_window_keys: AtomicU64,
    /// Window keys the engine dropped at its ceiling.
    pub rule_evicted_keys: AtomicU64,
    /// Failed writes (retried on the next tick).
    pub write_errors: AtomicU64,
    /// From receiving the newest event of an incident's first hit to the
    /// engine handing the hit over: the allowed lateness and the time in
    /// the pipeline up to the worker, without the record store's part
    /// (not measured while a cluster worker replays after a restart).
    pub detection_latency: LatencyHistogram,
    /// From receiving an event to this worker taking it, for the first
    /// (oldest) event of each batch taken: the queueing before the engine.
    pub queue_latency: LatencyHistogram,
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

/// Receive times by event id. Each collector (node slot of the id) hands
/// ids out in arrival order, so a run of one slot's ids with one receive
/// time is one entry; slots interleave when several collectors feed a
/// partition, so each has its own runs.
#[derive(Default)]
struct Arrivals {
    slots: HashMap<u16, VecDeque<(u64, EventTime)>>,
}

impl Arrivals {
    fn note(&mut self, id: u64, received_at: EventTime) {
        let runs = self.slots.entry(parsers::EventIds::slot_of(id)).or_default();
        if runs.back().is_some_and(|(first, at)| *at == received_at || *first > id) {
            return;
        }
        if runs.len() >= ARRIVALS {
            runs.pop_front();
        }
        runs.push_back((id, received_at));
    }

    fn of(&self, id: u64) -> Option<EventTime> {
        let runs = self.slots.get(&parsers::EventIds::slot_of(id))?;
        let after = runs.partition_point(|(first, _)| *first <= id);
        (after > 0).then(|| runs[after - 1].1)
    }
}

/// Default for [`Worker::with_max_buffer_bytes`].
pub const DEFAULT_MAX_BUFFER_BYTES: usize = 128 << 20;

/// Bytes of sealed partitions handed to the writer thread and not yet
/// written: the worker waits while they are over the limit, so a slow disk
/// holds back the pipeline instead of letting sealed batches pile up.
struct InFlight {
    bytes: Mutex<usize>,
    freed: Condvar,
    limit: usize,
}

impl InFlight {
    /// Waits until `n` more bytes fit (or nothing is in flight, so one
    /// seal larger than the limit still goes), then counts them. False if
    /// the writer is gone.
    fn acquire(&self, n: usize, writer_gone: &AtomicBool) -> bool {
        let mut bytes = self.bytes.lock().unwrap_or_else(PoisonError::into_inner);
        while *bytes > 0 && *bytes + n > self.limit {
            if writer_gone.load(Ordering::Relaxed) {
                return false;
            }
            bytes =
                self.freed.wait_timeout(bytes, Duration::from_millis(100)).unwrap_or_else(PoisonError::into_inner).0;
        }
        *bytes += n;
        true
    }

    fn release(&self, n: usize) {
        let mut bytes = self.bytes.lock().unwrap_or_else(PoisonError::into_inner);
        *bytes = bytes.saturating_sub(n);
        self.freed.notify_all();
    }
}

/// The worker's input transport (collector → worker): batches of events
/// in arrival order. `vigil run` uses an in-process channel; a cluster
/// worker reads its partitions of the NATS JetStream event stream.
pub trait BatchSource {
    /// The next batch, waiting at most `wait`; `Disconnected` once the
    /// input has ended and everything was taken.
    fn recv_timeout(&self, wait: Duration) -> Result<Vec<Event>, RecvTimeoutError>;
    /// Batches waiting now (the queue depth).
    fn waiting(&self) -> usize;
    /// The source position (stream sequence) of the last batch returned;
    /// 0 for a source without positions (an in-process channel).
    fn position(&self) -> u64 {
        0
    }
    /// Whether the last batch returned is stored already and is replayed
    /// for the rule engine only (a new partition owner catching up).
    fn replayed(&self) -> bool {
        false
    }
}

impl BatchSource for Receiver<Vec<Event>> {
    fn recv_timeout(&self, wait: Duration) -> Result<Vec<Event>, RecvTimeoutError> {
        Receiver::recv_timeout(self, wait)
    }

    fn waiting(&self) -> usize {
        self.len()
    }
}

/// Sets a flag when dropped: the writer thread is gone, however it ended.
struct Gone<'a>(&'a AtomicBool);

impl Drop for Gone<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The worker: an event buffer, a file writer, an engine, and an id sequence.
pub struct Worker {
    buffer: EventBuffer,
    /// Moves to the writer thread when the worker runs.
    files: Option<(FileWriter, VecDeque<Sealed>)>,
    engine: Engine,
    stats: Arc<WorkerStats>,
    arrivals: Arrivals,
    /// Receive time of the last event taken, and the clock then.
    frontier: Option<(EventTime, EventTime)>,
    /// Column bytes buffered, and sealed in flight, at most each.
    max_buffer_bytes: usize,
    /// Told every source position once everything up to it is on disk.
    durable: Option<Durable>,
    /// At the end of the input, leave windows open (the partition moves
    /// to another owner, who replays and continues them).
    handoff: bool,
    /// Checkpoints of the engine, at most this often.
    checkpoints: Option<(Duration, Checkpointer)>,
    /// Nice steps the writer threads run below the rules (see [`crate::priority`]).
    storage_nice: u8,
}

/// Called on the writer thread with a source position once every event
/// up to it is written and synced.
pub type Durable = Arc<dyn Fn(u64) + Send + Sync>;

/// Called on the worker thread with the source position the engine has
/// taken everything up to, and the engine, to checkpoint its state.
pub type Checkpointer = Arc<dyn Fn(u64, &Engine) + Send + Sync>;

impl Worker {
    /// A worker storing with `writer` and correlating with `engine`. Events
    /// arrive with their ids (the collector gives them).
    pub fn new(writer: EventWriter, engine: Engine, stats: Arc<WorkerStats>) -> Worker {
        let (buffer, files, unwritten) = writer.into_parts();
        Worker {
            buffer,
            files: Some((files, unwritten)),
            engine,
            stats,
            arrivals: Arrivals::default(),
            frontier: None,
            max_buffer_bytes: DEFAULT_MAX_BUFFER_BYTES,
            durable: None,
            handoff: false,
            checkpoints: None,
            storage_nice: 0,
        }
    }

    /// Hands `checkpoint` the engine and the source position it covers at
    /// a flush tick at most every `every` (and only when input was taken
    /// since the last one).
    pub fn with_checkpoints(mut self, every: Duration, checkpoint: Checkpointer) -> Worker {
        self.checkpoints = Some((every, checkpoint));
        self
    }

    /// Tells `durable` each source position once every event up to it is
    /// on disk (at every flush tick that took input, and at the end).
    pub fn with_durable(mut self, durable: Durable) -> Worker {
        self.durable = Some(durable);
        self
    }

    /// At the end of the input, writes everything but leaves the rule
    /// windows open instead of closing them (a partition handed over).
    pub fn with_handoff(mut self) -> Worker {
        self.handoff = true;
        self
    }

    /// Bounds the worker's memory for events to about `bytes`: partitions
    /// are sealed when their columns reach half of it (besides every flush
    /// interval), and at most the other half of sealed partitions wait for
    /// the disk.
    pub fn with_max_buffer_bytes(mut self, bytes: usize) -> Worker {
        self.max_buffer_bytes = bytes.max(1 << 20);
        self
    }

    /// Runs the writer threads `steps` nice steps below the rules thread
    /// (`storage.nice`; 0, the default here: the same priority).
    pub fn with_storage_nice(mut self, steps: u8) -> Worker {
        self.storage_nice = steps;
        self
    }

    /// Runs until `input` closes; `sink` receives incident updates.
    /// Returns the number of events written in all.
    ///
    /// Two threads: this one assigns ids, runs the engine and fills the
    /// partitions' columns; a second one (`vigil-parquet`) encodes and
    /// writes the sealed partitions, so zstd and fsync overlap with the
    /// next events. Between them is a queue bounded in bytes (half of
    /// [`Worker::with_max_buffer_bytes`]): a slow or failing disk stops
    /// this thread, and with it the pipeline upstream.
    pub fn run(
        mut self,
        input: &impl BatchSource,
        clock: &dyn Clock,
        flush_every: Duration,
        mut sink: impl FnMut(Vec<Detection>),
    ) -> Result<u64, WorkerError> {
        // The queue's length is loose: `InFlight` bounds it in bytes.
        let (to_disk, from_worker) = crossbeam_channel::bounded::<Shipment>(64);
        let closing = AtomicBool::new(false);
        let writer_gone = AtomicBool::new(false);
        // Half the bound for columns being filled, half for sealed ones.
        let in_flight = InFlight { bytes: Mutex::new(0), freed: Condvar::new(), limit: self.max_buffer_bytes / 2 };
        let (files, unwritten) = self.files.take().ok_or(WorkerError::WriterFailed)?;
        let stats = self.stats.clone();
        let durable = self.durable.clone();
        let nice = self.storage_nice;
        std::thread::scope(|scope| {
            let disk = std::thread::Builder::new()
                .name("vigil-parquet".into())
                .spawn_scoped(scope, || {
                    let _gone = Gone(&writer_gone);
                    // The writer's helpers start from this thread and
                    // inherit its priority. Refused: storage runs as before.
                    crate::priority::lower_this_thread_or_say(nice, "Parquet");
                    let durable = durable.as_deref();
                    write_loop(files, unwritten, &from_worker, &stats, &closing, flush_every, &in_flight, durable)
                })
                .map_err(|e| WorkerError::Io { path: "vigil-parquet thread".into(), source: e })?;
            let to_disk = Disk { queue: to_disk, in_flight: &in_flight, writer_gone: &writer_gone };
            let pumped = self.pump(input, clock, flush_every, &mut sink, &to_disk);
            closing.store(true, Ordering::Relaxed);
            drop(to_disk);
            let written = disk.join().unwrap_or(Err(WorkerError::WriterFailed));
            pumped?;
            written
        })?;
        Ok(self.stats.stored.load(Ordering::Relaxed))
    }

    fn pump(
        &mut self,
        input: &impl BatchSource,
        clock: &dyn Clock,
        flush_every: Duration,
        sink: &mut impl FnMut(Vec<Detection>),
        to_disk: &Disk<'_>,
    ) -> Result<(), WorkerError> {
        let mut incidents = Vec::new();
        // The flush interval in slices: each partition is sealed in its
        // turn, once an interval (see `FLUSH_TURNS`). Not with a durable
        // consumer (the cluster): a new owner keeps a file only if a commit
        // covers it whole, so a file must never hold rows on both sides of
        // a durable position, and a partition sealed in its turn would.
        let turns = if self.durable.is_some() { 1 } else { FLUSH_TURNS };
        let slice = flush_every / turns;
        let mut turn = 0;
        let mut next_tick = std::time::Instant::now() + slice;
        // The clock releases waiting records no sooner than this again.
        let mut next_release = std::time::Instant::now();
        // The source position taken last, and the last one shipped as a mark.
        let (mut position, mut marked) = (0u64, 0u64);
        // Whether the last batch taken was replayed after a restart: its
        // events waited for the restart, which is not latency to measure.
        let mut replayed = false;
        // The position of the last checkpoint, and when it was taken.
        let (mut checkpointed, mut checkpoint_at) = (0u64, std::time::Instant::now());
        loop {
            let now = std::time::Instant::now();
            let mut wait = next_tick.saturating_duration_since(now);
            if let Some(due) = self.due_in(clock.now()) {
                wait = wait.min(due.max(next_release.saturating_duration_since(now)));
            }
            match input.recv_timeout(wait) {
                Ok(events) => {
                    self.stats.events.fetch_add(events.len() as u64, Ordering::Relaxed);
                    replayed = input.replayed();
                    let store = !replayed;
                    if let Some(last) = events.last() {
                        let now = clock.now();
                        self.frontier = Some((last.received_at, now));
                        if let Some(first) = events.first().filter(|_| store) {
                            let waited = now.unix_millis() - first.received_at.unix_millis();
                            self.stats.queue_latency.record(std::iter::once(waited));
                        }
                    }
                    position = position.max(input.position());
                    self.buffer.set_position(position);
                    for event in &events {
                        let id = event.id;
                        self.arrivals.note(id, event.received_at);
                        self.engine.process(id, event, &mut incidents);
                        if store && let Some(sealed) = self.buffer.append(id, event)? {
                            self.ship(vec![sealed], None, to_disk)?;
                        }
                    }
                    // Past the memory bound, seal now rather than at the tick.
                    if self.buffer.buffered_bytes() >= self.max_buffer_bytes / 2 {
                        let sealed = self.buffer.seal()?;
                        self.ship(sealed, None, to_disk)?;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            let now = std::time::Instant::now();
            if now < next_tick && now >= next_release && self.release_due(clock, input.waiting() > 0, &mut incidents) {
                next_release = now + RELEASE_EVERY;
            }
            if now >= next_tick {
                next_tick = now + slice;
                next_release = now + RELEASE_EVERY;
                let sealed = self.buffer.seal_turn(turn, turns)?;
                turn = (turn + 1) % turns;
                // Everything taken up to `position` is in this seal or an
                // earlier one (with a durable consumer every partition is
                // sealed at each tick): once written, the source may
                // forget it.
                let mark = (position > marked).then_some(position);
                marked = position;
                self.ship(sealed, mark, to_disk)?;
                if let Some(horizon) = self.horizon(clock.now(), input.waiting() > 0) {
                    self.engine.advance(horizon, &mut incidents);
                }
                self.publish_engine_stats();
                if let Some((every, checkpoint)) = &self.checkpoints
                    && position > checkpointed
                    && checkpoint_at.elapsed() >= *every
                {
                    checkpoint(position, &self.engine);
                    (checkpointed, checkpoint_at) = (position, std::time::Instant::now());
                }
            }
            self.stats.buffered.store(self.buffer.buffered() as u64, Ordering::Relaxed);
            if !incidents.is_empty() {
                sink(self.detections(&mut incidents, (!replayed).then(|| clock.now())));
            }
        }
        let sealed = self.buffer.seal()?;
        let mark = (position > marked).then_some(position);
        self.ship(sealed, mark, to_disk)?;
        self.stats.buffered.store(0, Ordering::Relaxed);
        if !self.handoff {
            self.engine.flush(&mut incidents);
        }
        self.publish_engine_stats();
        if !incidents.is_empty() {
            sink(self.detections(&mut incidents, (!replayed).then(|| clock.now())));
        }
        Ok(())
    }

    fn publish_engine_stats(&self) {
        let engine = self.engine.stats();
        let s = &self.stats;
        s.rule_state_bytes.store(engine.state_bytes as u64, Ordering::Relaxed);
        s.rule_buffer_bytes.store(engine.buffer_bytes as u64, Ordering::Relaxed);
        s.late_events.store(engine.late_events, Ordering::Relaxed);
        s.future_events.store(engine.future_events, Ordering::Relaxed);
        s.behind_events.store(engine.behind_events, Ordering::Relaxed);
        s.early_releases.store(engine.early_releases, Ordering::Relaxed);
        s.rule_window_keys.store(engine.window_keys as u64, Ordering::Relaxed);
        s.rule_evicted_keys.store(engine.evicted_keys, Ordering::Relaxed);
    }

    /// Hands sealed partitions to the writer thread, waiting while more
    /// than the memory bound of earlier ones is still being written.
    fn ship(&self, sealed: Vec<Sealed>, mark: Option<u64>, to_disk: &Disk<'_>) -> Result<(), WorkerError> {
        if sealed.is_empty() {
            return match mark {
                Some(_) => to_disk.queue.send(Shipment { sealed, mark }).map_err(|_| WorkerError::WriterFailed),
                None => Ok(()),
            };
        }
        let rows: usize = sealed.iter().map(Sealed::rows).sum();
        let bytes: usize = sealed.iter().map(Sealed::bytes).sum();
        if !to_disk.in_flight.acquire(bytes, to_disk.writer_gone) {
            return Err(WorkerError::WriterFailed);
        }
        self.stats.sealed.fetch_add(rows as u64, Ordering::Relaxed);
        to_disk.queue.send(Shipment { sealed, mark }).map_err(|_| WorkerError::WriterFailed)
    }

    /// Advances the engine's clock if something waiting is due by now;
    /// whether it did.
    fn release_due(&mut self, clock: &dyn Clock, backlog: bool, incidents: &mut Vec<Incident>) -> bool {
        let (Some(due), Some(horizon)) = (self.engine.due(), self.horizon(clock.now(), backlog)) else {
            return false;
        };
        if due > horizon {
            return false;
        }
        self.engine.advance(horizon, incidents);
        true
    }

    /// How long until the clock, moving on with no input, makes something
    /// waiting due (at most [`RELEASE_POLL`], so a clock that jumps is
    /// followed); `None` when nothing waits.
    fn due_in(&self, now: EventTime) -> Option<Duration> {
        let due = self.engine.due()?;
        let horizon = self.horizon(now, false).unwrap_or(now);
        let nanos = u64::try_from(due.unix_nanos().saturating_sub(horizon.unix_nanos()).max(0)).unwrap_or(u64::MAX);
        Some(Duration::from_nanos(nanos).min(RELEASE_POLL))
    }

    /// How far the rule engine's clock may advance: the receive time of the
    /// last event taken, plus the time since only when no input is waiting.
    /// While a backlog drains (or the worker was held up by a slow disk)
    /// this trails the wall clock by the time events waited inside vigil,
    /// so queueing here never makes an event late; when the input is quiet
    /// it follows the clock, so quiet orgs' windows close. Nothing taken yet
    /// with input waiting (a new partition owner before its first batch):
    /// the clock stays where it is, or every event of the backlog would be
    /// late.
    fn horizon(&self, now: EventTime, backlog: bool) -> Option<EventTime> {
        match self.frontier {
            Some((received, _)) if backlog => Some(received),
            Some((received, seen)) => {
                let waited = now.unix_nanos().saturating_sub(seen.unix_nanos());
                Some(EventTime::from_unix_nanos(received.unix_nanos().saturating_add(waited).min(now.unix_nanos())))
            }
            None if backlog => None,
            None => Some(now),
        }
    }

    /// Takes the engine's reports, adding first hits' receive times, and
    /// records how long after those receive times `now` is (`None`: not
    /// measured).
    fn detections(&self, incidents: &mut Vec<Incident>, now: Option<EventTime>) -> Vec<Detection> {
        self.stats.incidents.fetch_add(incidents.len() as u64, Ordering::Relaxed);
        let detections: Vec<Detection> = incidents
            .drain(..)
            .map(|incident| {
                let newest = incident.event_ids.iter().max().copied().filter(|_| incident.count == 1);
                Detection { received_at: newest.and_then(|id| self.arrivals.of(id)), incident }
            })
            .collect();
        if let Some(now_ms) = now.map(|t| t.unix_millis()) {
            self.stats
                .detection_latency
                .record(detections.iter().filter_map(|d| Some(now_ms - d.received_at?.unix_millis())));
        }
        detections
    }
}

/// The way to the writer thread: its queue and the bytes in flight on it.
struct Disk<'a> {
    queue: Sender<Shipment>,
    in_flight: &'a InFlight,
    writer_gone: &'a AtomicBool,
}

/// Sealed partitions for the writer thread, and the source position that
/// is durable once they (and everything before them) are written.
struct Shipment {
    sealed: Vec<Sealed>,
    mark: Option<u64>,
}

/// The clock releases a quiet org's waiting records (and fires its timers)
/// as soon as they are due, rather than at the next flush tick, but at most
/// this often: a visit of every org costs O(orgs), and under steady input
/// orgs' own events release almost everything first.
const RELEASE_EVERY: Duration = Duration::from_millis(25);

/// Turns in a flush interval: each partition (org and day) is sealed in
/// its own quarter of the interval, once an interval, so the writer
/// threads encode a quarter of the files at a time. Sealed all at once,
/// the files of a hundred orgs took the cores from the rules thread for a
/// burst every interval: at 87,000 EPS on 2 cores the events queued in
/// front of the engine 151–265 ms at p99 and peaked at 336–341 MB RSS;
/// a quarter at a time, 99–180 ms and 287–304 MB (`vigil bench`, three
/// alternating runs each). A partition still waits at most one interval,
/// so the files are as many and as large as before. `vigil run` only: see
/// `Worker::pump` for why the cluster seals every partition at each tick.
const FLUSH_TURNS: u32 = 4;

/// The longest the worker waits for input while records wait for the
/// clock: it looks at the clock again after this.
const RELEASE_POLL: Duration = Duration::from_millis(100);

/// Files a batch of sealed partitions is written with at once: writing a
/// file is mostly waiting for its fsync, and concurrent syncs are committed
/// together by the filesystem, so a flush of a hundred orgs' partitions
/// does not wait for a hundred syncs in a row.
const WRITERS: usize = 4;

/// The writer thread: writes sealed partitions, a batch at a time on up to
/// [`WRITERS`] threads. A failed write is retried after a pause (nothing
/// is dropped; the worker waits meanwhile); once the worker has finished,
/// three failures in a row give up.
#[allow(clippy::too_many_arguments)]
fn write_loop(
    files: FileWriter,
    mut pending: VecDeque<Sealed>,
    input: &Receiver<Shipment>,
    stats: &WorkerStats,
    closing: &AtomicBool,
    pause: Duration,
    in_flight: &InFlight,
    durable: Option<&(dyn Fn(u64) + Send + Sync)>,
) -> Result<(), WorkerError> {
    let mut failures = 0;
    // The newest mark whose partitions are not all written yet.
    let mut mark: Option<u64> = None;
    loop {
        if pending.is_empty() {
            if let (Some(m), Some(tell)) = (mark.take(), durable) {
                tell(m);
            }
            match input.recv() {
                Ok(shipment) => {
                    pending.extend(shipment.sealed);
                    mark = shipment.mark.or(mark);
                }
                Err(_) => return Ok(()),
            }
            if pending.is_empty() {
                continue;
            }
        }
        let batch: Vec<Sealed> = pending.drain(..).collect();
        let results = write_batch(&files, &batch);
        let mut error = None;
        for (sealed, result) in batch.into_iter().zip(results) {
            match result {
                Ok(r) => {
                    stats.sealed.fetch_sub(r.events as u64, Ordering::Relaxed);
                    stats.stored.fetch_add(r.events as u64, Ordering::Relaxed);
                    stats.files.fetch_add(r.files as u64, Ordering::Relaxed);
                    stats.bytes.fetch_add(r.bytes, Ordering::Relaxed);
                    in_flight.release(sealed.bytes());
                }
                Err(e) => {
                    // Kept, in order, for the next try.
                    pending.push_back(sealed);
                    error = Some(e);
                }
            }
        }
        match error {
            None => failures = 0,
            Some(e) => {
                stats.write_errors.fetch_add(1, Ordering::Relaxed);
                failures += 1;
                if closing.load(Ordering::Relaxed) && failures >= 3 {
                    return Err(e);
                }
                eprintln!("vigil worker: writing events failed, keeping them and retrying: {e}");
                std::thread::sleep(pause);
            }
        }
    }
}

/// Writes every partition of `batch` as its own file, on up to [`WRITERS`]
/// threads; the results are in the order of `batch`.
fn write_batch(files: &FileWriter, batch: &[Sealed]) -> Vec<Result<FlushReport, WorkerError>> {
    if batch.len() <= 1 {
        return batch.iter().map(|s| files.write(s)).collect();
    }
    let next = AtomicU64::new(0);
    let results: Mutex<Vec<Option<Result<FlushReport, WorkerError>>>> =
        Mutex::new((0..batch.len()).map(|_| None).collect());
    let work = || {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed) as usize;
            let Some(sealed) = batch.get(i) else { break };
            let result = files.write(sealed);
            results.lock().unwrap_or_else(PoisonError::into_inner)[i] = Some(result);
        }
    };
    std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..WRITERS.min(batch.len()))
            .filter_map(|n| {
                std::thread::Builder::new().name(format!("vigil-parquet-{n}")).spawn_scoped(scope, work).ok()
            })
            .collect();
        work();
        for h in helpers {
            let _ = h.join();
        }
    });
    results
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner)
        .into_iter()
        .map(|r| r.unwrap_or(Err(WorkerError::WriterFailed)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_held_up_with_input_waiting_does_not_move_the_rule_clock_past_it() {
        // Regression: blocked on a slow disk for seconds, the worker used to
        // add that time to the receive time of the last event it took, so
        // the events waiting in its queue came out late (164,174 late in a
        // saturated `vigil bench` run).
        let dir = std::env::temp_dir().join(format!("vigil-horizon-{}", std::process::id()));
        let t = |s: i64| EventTime::from_unix(s, 0, 0);
        let writer = EventWriter::open(crate::EventWriterConfig::new(&dir, "node-1"), t(0)).unwrap();
        let engine = Engine::new(Arc::new(rules::builtin()), rules::EngineConfig::default());
        let mut worker = Worker::new(writer, engine, Arc::new(WorkerStats::default()));
        assert_eq!(worker.horizon(t(100), false), Some(t(100)), "nothing taken yet: the clock");
        assert_eq!(worker.horizon(t(100), true), None, "nothing taken yet, input waiting: no move");
        worker.frontier = Some((t(90), t(95)));
        assert_eq!(worker.horizon(t(100), true), Some(t(90)), "input waiting: no further than what was taken");
        assert_eq!(worker.horizon(t(100), false), Some(t(95)), "quiet: the time since counts");
        assert_eq!(worker.horizon(t(200), false), Some(t(195)));
        let _ = std::fs::remove_dir_all(&dir);
    }

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
        assert_eq!(a.slots[&0].len(), 2, "one entry per run");
        // Another collector's ids interleave without disturbing these.
        let other = 3u64 << parsers::EventIds::SEQ_BITS;
        a.note(other + 5, t(102));
        a.note(25, t(103));
        assert_eq!(a.of(other + 7), Some(t(102)));
        assert_eq!(a.of(26), Some(t(103)));
        assert_eq!(a.of(12), Some(t(100)));
        assert_eq!(a.of(9), None);
        assert_eq!(a.of(10), Some(t(100)));
        assert_eq!(a.of(19), Some(t(100)));
        assert_eq!(a.of(20), Some(t(101)));
        assert_eq!(a.of(1_000), Some(t(103)), "past the newest run: its time");
    }
}
