//! The collector role in a cluster: the same [`Collector`] as `vigil run`,
//! with NATS JetStream as its transports.
//!
//! - Accepted events leave as batches (one org's events per batch, in the
//!   org's partition `vigil.events.<p>`, [`parsers::wire`] encoded) through
//!   a publisher with a bounded window of unacknowledged batches; an event
//!   counts as *acknowledged* only once JetStream has stored its batch. A
//!   batch that fails is published again with the same message id (the
//!   stream's duplicate window makes that idempotent) until it is stored:
//!   while NATS is away the window fills, the intake waits, TCP senders
//!   feel backpressure and UDP drops are counted.
//! - Interval reports go up on `vigil.control.report.<node>`, device
//!   reports on `vigil.control.devices.<node>`; heartbeats on
//!   `vigil.control.heartbeat.<node>`.
//! - Budgets (`budget.<node>`), the org table (`orgs`) and the device
//!   limit's standings (`devices`) come down through
//!   the control KV bucket, watched and applied as they change. The bucket
//!   keeps them, so a collector that starts while the supervisor is down
//!   uses the last ones; a brand-new collector waits for its first budget
//!   before it opens its listeners, so it never drops its first events.
//! - The node's event-id slot is claimed once in the KV bucket
//!   `vigil_slots` (create-if-absent), so ids stay unique across
//!   collectors and restarts.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use cluster::{Client, ControlKv, Nats, Publisher, PublisherConfig};
use parsers::{
    Budget, DeviceLimits, DeviceLimitsPart, DeviceReport, Event, EventIds, IntervalReport, MESSAGE_PART_BYTES,
    NodeHeartbeat, NodeId, NodeRole, OrgSnapshot,
};

use crate::clock::Clock;
use crate::metrics::{Exposition, label};
use crate::node::{Collector, CollectorError, CollectorSetup, DeviceSink, EventSink, ReportSink, SinkClosed};
use crate::spool::{Spool, SpoolError, Spooled};

/// The KV bucket of event-id slots.
pub const SLOT_BUCKET: &str = "vigil_slots";

/// Counters of the event publisher.
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Events JetStream has acknowledged.
    pub acknowledged: AtomicU64,
    /// Events published and not yet acknowledged.
    pub unacknowledged: AtomicU64,
    /// Batches published.
    pub batches: AtomicU64,
    /// Batch bytes published.
    pub bytes: AtomicU64,
    /// Batches published again after a failure.
    pub republished: AtomicU64,
}

/// Publishes accepted events to their orgs' partitions.
struct StreamSink {
    publisher: Publisher,
    runtime: tokio::runtime::Handle,
    /// Org partitions (the stream's subjects but the last).
    partitions: u16,
    /// The cross-org partition, when cross-org rules run.
    cross: Option<u16>,
    /// Message ids: `<node>/<boot>/<n>`.
    prefix: String,
    sent: u64,
    stats: Arc<SinkStats>,
    /// This node's name (in every batch's subject).
    node: String,
    groups: Vec<(u32, Vec<Event>)>,
    buffer: Vec<u8>,
    /// Batches published and not yet stored, in flight or to be published
    /// again, at most (one permit each).
    outstanding: Arc<tokio::sync::Semaphore>,
    /// The disk buffer for when the link is down, if configured.
    spool: Option<Arc<Spool>>,
    /// The NATS connection (is the link up?).
    link: Client,
}

impl EventSink for StreamSink {
    fn send(&mut self, events: Vec<Event>) -> Result<(), SinkClosed> {
        // One batch per org (nearly always one: a batch comes from one
        // read of one connection): the org is in the subject, where the
        // server's permissions can hold a bound collector to it.
        let org = |e: &Event| e.org_id.map_or(0, |o| o.0);
        let first = events.first().map(org);
        if events.iter().all(|e| Some(org(e)) == first) {
            if let Some(o) = first {
                self.publish_org(o, &events)?;
            }
            return Ok(());
        }
        let mut groups = std::mem::take(&mut self.groups);
        for e in events {
            let o = org(&e);
            match groups.iter_mut().find(|(g, _)| *g == o) {
                Some((_, g)) => g.push(e),
                None => groups.push((o, vec![e])),
            }
        }
        let mut outcome = Ok(());
        for (o, group) in &mut groups {
            if outcome.is_ok() && !group.is_empty() {
                outcome = self.publish_org(*o, group);
            }
            group.clear();
        }
        // The groups' buffers are kept for the next mixed batch (bounded by
        // the orgs one read can hold).
        groups.retain(|(_, g)| g.capacity() <= 4096);
        self.groups = groups;
        outcome
    }
}

impl StreamSink {
    /// Publishes one org's events to its partition, and to the cross-org
    /// partition when cross-org rules run.
    fn publish_org(&mut self, org: u32, events: &[Event]) -> Result<(), SinkClosed> {
        if let Some(cross) = self.cross {
            // For the cross-org rules only (stored from the org
            // partitions): counted once, by those.
            self.publish(cross, org, events, false)?;
        }
        let partition = cluster::partition_of(if org == 0 { 1 } else { org }, self.partitions);
        self.publish(partition, org, events, true)
    }

    /// Publishes one batch; `counted` batches count in the acknowledged
    /// and unacknowledged events.
    fn publish(&mut self, partition: u16, org: u32, events: &[Event], counted: bool) -> Result<(), SinkClosed> {
        self.buffer.clear();
        parsers::wire::encode_batch(events, &mut self.buffer);
        // The encoded batch becomes the payload as it is (no copy); the
        // next one starts in a buffer of the same size.
        let next = Vec::with_capacity(self.buffer.len());
        let payload = Bytes::from(std::mem::replace(&mut self.buffer, next));
        self.sent += 1;
        let msg_id = format!("{}/{}", self.prefix, self.sent);
        let n = if counted { events.len() as u64 } else { 0 };
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.stats.bytes.fetch_add(payload.len() as u64, Ordering::Relaxed);
        // While the link is down (or batches wait on disk already, which
        // keeps them in order) the batch goes to the spool; a full spool
        // holds the sender back like the window does.
        if let Some(spool) = &self.spool
            && (spool.has_backlog() || self.link.connection_state() != cluster::ConnectionState::Connected)
        {
            let batch = Spooled {
                partition,
                org,
                events: u32::try_from(n).unwrap_or(u32::MAX),
                msg_id: msg_id.clone(),
                payload: payload.clone(),
            };
            match spool.append(&batch) {
                Ok(()) => return Ok(()),
                Err(SpoolError::Full(_)) => {}
                Err(e) => eprintln!("vigil collector: {e}; holding the batch in memory instead"),
            }
        }
        self.stats.unacknowledged.fetch_add(n, Ordering::Relaxed);
        let (publisher, stats, node) = (self.publisher.clone(), self.stats.clone(), self.node.clone());
        // Waits here while the batches not yet stored (in flight, or
        // waiting to be published again) fill the window: the
        // backpressure that holds TCP senders while JetStream cannot take
        // more (server away, stream full), instead of buffering.
        let outstanding = self.outstanding.clone();
        let permit = self.runtime.block_on(outstanding.acquire_owned()).map_err(|_| SinkClosed)?;
        let handle = self
            .runtime
            .block_on(publisher.publish(partition, org, &node, &msg_id, Default::default(), payload.clone()))
            .map_err(|_| SinkClosed)?;
        self.runtime.spawn(async move {
            let _permit = permit;
            let mut outcome = handle.await;
            let mut backoff = Duration::from_millis(100);
            while let Err(e) = outcome {
                if backoff == Duration::from_millis(100) {
                    eprintln!("vigil collector: batch {msg_id} not stored yet, publishing it again until it is: {e}");
                }
                stats.republished.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                outcome = match publisher
                    .publish(partition, org, &node, &msg_id, Default::default(), payload.clone())
                    .await
                {
                    Ok(handle) => handle.await,
                    Err(e) => Err(e),
                };
            }
            stats.unacknowledged.fetch_sub(n, Ordering::Relaxed);
            stats.acknowledged.fetch_add(n, Ordering::Relaxed);
        });
        Ok(())
    }
}

/// Sends interval reports up on core NATS.
struct NatsReports {
    client: Client,
    runtime: tokio::runtime::Handle,
    subject: String,
}

impl NatsReports {
    fn send(&self, subject: &str, body: serde_json::Result<Vec<u8>>) {
        if let Ok(body) = body {
            let (client, subject) = (self.client.clone(), subject.to_owned());
            if let Err(e) = self.runtime.block_on(async { client.publish(subject.clone(), body.into()).await }) {
                eprintln!("vigil collector: cannot send {subject}: {e}");
            }
        }
    }
}

impl ReportSink for NatsReports {
    fn report(&self, report: &IntervalReport) {
        self.send(&self.subject, serde_json::to_vec(report));
    }
}

/// Sends device reports up on core NATS.
struct NatsDevices(NatsReports);

impl DeviceSink for NatsDevices {
    fn devices(&self, report: &DeviceReport) {
        // A NATS message is at most 1 MiB by default: a node hearing
        // thousands of devices sends its period's report in parts.
        for part in report.clone().split(MESSAGE_PART_BYTES) {
            self.0.send(&self.0.subject, serde_json::to_vec(&part));
        }
    }
}

/// A collector in a cluster.
pub struct ClusterCollector {
    collector: Arc<Collector>,
    stats: Arc<SinkStats>,
    publisher: Publisher,
    /// Batches not yet stored (one permit each) and the most there may be.
    outstanding: Arc<tokio::sync::Semaphore>,
    window: usize,
    slot: u16,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    spool: Option<Arc<Spool>>,
    link: Client,
}

/// Sends what the spool holds, in order, while the link is up: up to 32
/// batches at a time through the publisher, each marked sent once
/// JetStream has stored it (a failure sends the rest again later, with
/// the same message ids).
async fn drain(
    spool: Arc<Spool>,
    publisher: Publisher,
    link: Client,
    node: String,
    stats: Arc<SinkStats>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let idle = !spool.has_backlog() || link.connection_state() != cluster::ConnectionState::Connected;
        if idle {
            tokio::select! {
                _ = stopped.changed() => return,
                () = tokio::time::sleep(Duration::from_millis(200)) => continue,
            }
        }
        let next = {
            let spool = spool.clone();
            tokio::task::spawn_blocking(move || spool.peek(32)).await
        };
        let batches = match next {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                eprintln!("vigil collector: reading the spool: {e}; again in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(_) => return,
        };
        let mut sent = Vec::with_capacity(batches.len());
        for (pos, b) in batches {
            let handle =
                publisher.publish(b.partition, b.org, &node, &b.msg_id, Default::default(), b.payload.clone()).await;
            sent.push((pos, b, handle));
        }
        for (pos, b, handle) in sent {
            let stored = match handle {
                Ok(h) => h.await.is_ok(),
                Err(_) => false,
            };
            if !stored {
                // The rest go again on the next round.
                tokio::time::sleep(Duration::from_millis(500)).await;
                break;
            }
            spool.commit(pos, &b);
            stats.acknowledged.fetch_add(u64::from(b.events), Ordering::Relaxed);
        }
    }
}

/// Claims (or finds) `node`'s event-id slot.
pub async fn claim_slot(nats: &Nats, node: &str) -> Result<u16, CollectorError> {
    let kv = ControlKv::open(nats, SLOT_BUCKET, 1).await.map_err(|e| CollectorError::Cluster(e.to_string()))?;
    let err = |e: cluster::KvError| CollectorError::Cluster(e.to_string());
    let mine = format!("node.{node}");
    if let Some((_, v)) = kv.get(&mine).await.map_err(err)?
        && let Some(slot) = std::str::from_utf8(&v).ok().and_then(|s| s.parse::<u16>().ok())
    {
        return Ok(slot);
    }
    let taken = kv.keys("slot.").await.map_err(err)?;
    for slot in 1..=EventIds::MAX_SLOT {
        let key = format!("slot.{slot}");
        if taken.contains(&key) {
            continue;
        }
        if kv.create(&key, Bytes::from(node.to_owned())).await.map_err(err)?.is_some() {
            kv.put(&mine, Bytes::from(slot.to_string())).await.map_err(err)?;
            return Ok(slot);
        }
    }
    Err(CollectorError::Cluster(format!("all {} event-id slots are taken", EventIds::MAX_SLOT)))
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    serde_json::from_slice(bytes).ok()
}

impl ClusterCollector {
    /// Claims the node's slot, waits for the org table and a budget, opens
    /// the listeners and starts following the supervisor.
    pub async fn start(
        nats: &Nats,
        mut setup: CollectorSetup,
        clock: Arc<dyn Clock>,
        heartbeat: Duration,
        publisher: PublisherConfig,
        spool: Option<Arc<Spool>>,
    ) -> Result<ClusterCollector, CollectorError> {
        let node = setup.node.as_str().to_owned();
        if !cluster::valid_node_name(&node) {
            return Err(CollectorError::Config(format!("node name {node:?}: 1-64 letters, digits, '-' or '_'")));
        }
        // Credentials carry the slot given at enrolment; without them the
        // node claims one in the slot bucket.
        if setup.slot == 0 {
            setup.slot = claim_slot(nats, &node).await?;
        }
        let slot = setup.slot;
        let stream = cluster::wait_for_event_stream(nats, "collector")
            .await
            .map_err(|e| CollectorError::Cluster(e.to_string()))?;
        let control = ControlKv::open(nats, cluster::CONTROL_BUCKET, 1)
            .await
            .map_err(|e| CollectorError::Cluster(e.to_string()))?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let client = nats.client().clone();
        let stats = Arc::new(SinkStats::default());
        let beating = Arc::new(BeatState::default());
        let mut tasks = vec![tokio::spawn(heartbeats(
            client.clone(),
            node.clone(),
            clock.clone(),
            heartbeat,
            stats.clone(),
            beating.clone(),
            stopped.clone(),
        ))];
        // The org table and this node's budget, waiting for the first ones.
        let mut said = false;
        let (settings, orgs, budget) = loop {
            let settings =
                control.get("settings").await.ok().flatten().and_then(|(_, v)| decode::<cluster::ClusterSettings>(&v));
            let orgs = control.get("orgs").await.ok().flatten().and_then(|(_, v)| decode::<OrgSnapshot>(&v));
            let budget =
                control.get(&format!("budget.{node}")).await.ok().flatten().and_then(|(_, v)| decode::<Budget>(&v));
            if let (Some(s), Some(o), Some(b)) = (settings, orgs, budget) {
                break (s, o, b);
            }
            if !said {
                eprintln!("vigil collector: waiting for the org table and this node's budget from the supervisor");
                said = true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        setup.interval_secs = settings.interval_secs;
        let runtime = tokio::runtime::Handle::current();
        let publisher = stream.publisher(publisher);
        let window = publisher.config().max_in_flight;
        let outstanding = Arc::new(tokio::sync::Semaphore::new(window));
        let boot = u64::try_from(clock.now().unix_nanos() / 1_000_000).unwrap_or(0);
        let sink = StreamSink {
            publisher: publisher.clone(),
            runtime: runtime.clone(),
            partitions: cluster::org_partitions(stream.partitions()),
            cross: settings.cross_org.then(|| cluster::cross_partition(stream.partitions())),
            prefix: format!("{node}/{boot:x}"),
            sent: 0,
            stats: stats.clone(),
            node: node.clone(),
            groups: Vec::new(),
            buffer: Vec::with_capacity(1 << 20),
            outstanding: outstanding.clone(),
            spool: spool.clone(),
            link: client.clone(),
        };
        let reports =
            NatsReports { client: client.clone(), runtime: runtime.clone(), subject: cluster::report_subject(&node) };
        let devices =
            NatsDevices(NatsReports { client: client.clone(), runtime, subject: cluster::devices_subject(&node) });
        let collector = Arc::new(Collector::start(setup, clock, &orgs, budget, sink, reports, devices).await?);
        beating
            .addresses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone_from(&collector.bound().to_vec());
        *beating.window.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some((outstanding.clone(), window));
        if let Some(spool) = &spool {
            tasks.push(tokio::spawn(drain(
                spool.clone(),
                publisher.clone(),
                client.clone(),
                node.clone(),
                stats.clone(),
                stopped.clone(),
            )));
        }
        *beating.spool.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = spool.clone();
        tasks.push(tokio::spawn(follow(control, node.clone(), collector.clone(), stopped)));
        Ok(ClusterCollector {
            collector,
            stats,
            publisher,
            outstanding,
            window,
            slot,
            stop,
            tasks: std::sync::Mutex::new(tasks),
            spool,
            link: client,
        })
    }

    /// The collector.
    pub fn collector(&self) -> &Arc<Collector> {
        &self.collector
    }

    /// The node's event-id slot.
    pub fn slot(&self) -> u16 {
        self.slot
    }

    /// Events JetStream has acknowledged.
    pub fn acknowledged(&self) -> u64 {
        self.stats.acknowledged.load(Ordering::Relaxed)
    }

    /// Stops the listeners (draining connections), waits until every
    /// accepted event is acknowledged or, while the link is down, spooled
    /// (at most `wait`), and stops following the supervisor. Returns
    /// (accepted, acknowledged, left in the spool for the next start).
    pub async fn stop(&self, wait: Duration) -> (u64, u64, u64) {
        let accepted = self.collector.stop().await;
        let deadline = tokio::time::Instant::now() + wait;
        let spooled = || self.spool.as_ref().map_or(0, |s| s.stats().events.load(Ordering::Relaxed));
        // The window, and what the spool holds while the link is up.
        while (self.stats.unacknowledged.load(Ordering::Relaxed) > 0 || (spooled() > 0 && self.publisher_link_up()))
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.stop.send(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        for t in tasks {
            let _ = t.await;
        }
        (accepted, self.acknowledged(), spooled())
    }

    fn publisher_link_up(&self) -> bool {
        self.link.connection_state() == cluster::ConnectionState::Connected
    }

    /// Writes the collector's series and the publisher's.
    pub fn render_metrics(&self, m: &mut Exposition) {
        self.collector.render_metrics(m);
        let nl = format!("node=\"{}\"", label(self.collector.node().as_str()));
        let s = &self.stats;
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let p = self.publisher.stats();
        m.add(
            "vigil_events_acknowledged_total",
            "counter",
            "Accepted events JetStream has stored (acknowledged = durable).",
            [(nl.clone(), n(&s.acknowledged))],
        );
        m.add(
            "vigil_events_unacknowledged",
            "gauge",
            "Accepted events published and not yet acknowledged by JetStream.",
            [(nl.clone(), n(&s.unacknowledged))],
        );
        m.add("vigil_batches_published_total", "counter", "Event batches published.", [(nl.clone(), n(&s.batches))]);
        m.add(
            "vigil_batch_bytes_total",
            "counter",
            "Bytes of event batches published (wire size).",
            [(nl.clone(), n(&s.bytes))],
        );
        m.add(
            "vigil_batches_republished_total",
            "counter",
            "Event batches published again after a failure (same message id).",
            [(nl.clone(), n(&s.republished) + p.retried)],
        );
        if let Some(spool) = &self.spool {
            let st = spool.stats();
            m.add(
                "vigil_spool_events",
                "gauge",
                "Accepted events in the disk spool, waiting for the link to NATS.",
                [(nl.clone(), n(&st.events))],
            );
            m.add("vigil_spool_bytes", "gauge", "Bytes in the disk spool.", [(nl.clone(), n(&st.bytes))]);
            m.add(
                "vigil_spool_batches_total",
                "counter",
                "Batches written to the disk spool and sent from it.",
                [(format!("{nl},op=\"written\""), n(&st.written)), (format!("{nl},op=\"sent\""), n(&st.sent))],
            );
            m.add(
                "vigil_spool_full_total",
                "counter",
                "Batches that found the spool full (their senders were held back instead).",
                [(nl.clone(), n(&st.full))],
            );
        }
        m.add(
            "vigil_queue_depth",
            "gauge",
            "Batches or updates waiting between stages.",
            [(
                format!("{nl},queue=\"unacknowledged_batches\""),
                (self.window - self.outstanding.available_permits()) as u64,
            )],
        );
    }
}

#[derive(Default)]
struct BeatState {
    addresses: std::sync::Mutex<Vec<String>>,
    /// The batches not yet stored and the most there may be, once the
    /// collector runs (a full window tells saturation).
    window: std::sync::Mutex<Option<(Arc<tokio::sync::Semaphore>, usize)>>,
    spool: std::sync::Mutex<Option<Arc<Spool>>>,
}

async fn heartbeats(
    client: Client,
    node: String,
    clock: Arc<dyn Clock>,
    every: Duration,
    stats: Arc<SinkStats>,
    state: Arc<BeatState>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    // Beats in a row that found the unacknowledged window full.
    let mut full_for = 0u32;
    loop {
        let mut problems = Vec::new();
        let backlog = stats.unacknowledged.load(Ordering::Relaxed);
        if client.connection_state() != cluster::ConnectionState::Connected {
            problems.push("NATS unreachable".to_owned());
        }
        let full = state
            .window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .is_some_and(|(sem, _)| sem.available_permits() == 0);
        full_for = if full { full_for + 1 } else { 0 };
        // One full beat is a burst; two in a row is a collector JetStream
        // cannot keep up with (its senders are being held back).
        if full_for >= 2 {
            problems.push(format!("queue saturated: {backlog} events waiting for JetStream acknowledgement"));
        }
        if let Some(spool) = state.spool.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref()
            && spool.has_backlog()
        {
            let events = spool.stats().events.load(Ordering::Relaxed);
            problems.push(format!("{events} events spooled on disk, waiting for the link to NATS"));
        }
        let hb = NodeHeartbeat {
            node: NodeId::new(&node),
            role: NodeRole::Collector,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            addresses: state.addresses.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone(),
            problems,
            sent_ms: i64::try_from(clock.now().unix_nanos() / 1_000_000).unwrap_or(0),
        };
        if let Ok(body) = serde_json::to_vec(&hb) {
            let _ = client.publish(cluster::heartbeat_subject(&node), body.into()).await;
        }
        tokio::select! {
            _ = stopped.changed() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// The whole standings of `header`: itself, or with its parts fetched
/// (written before it; a part not there yet is asked for again, briefly).
async fn standings(control: &ControlKv, header: DeviceLimits) -> Result<DeviceLimits, String> {
    let mut parts = Vec::with_capacity(header.parts as usize);
    for part in 0..header.parts {
        let key = cluster::devices_part_key(header.version, part);
        let mut tries = 0;
        let value = loop {
            match control.get(&key).await.map_err(|e| e.to_string())? {
                Some((_, value)) => break value,
                None if tries < 10 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                None => return Err(format!("part {part} of standings {} is missing", header.version)),
            }
        };
        parts.push(decode::<DeviceLimitsPart>(&value).ok_or_else(|| format!("part {part} cannot be read"))?);
    }
    if parts.is_empty() {
        return Ok(header);
    }
    header.assemble(parts).map_err(|e| e.to_string())
}

/// How often the control values are read.
const FOLLOW_EVERY: Duration = Duration::from_millis(250);

/// Applies budgets, org tables and device standings as the supervisor
/// writes them. They are read key by key (a direct get of the last value,
/// applied when its revision changes) rather than watched: a watch needs a
/// consumer on the whole bucket, and a collector may read only its own
/// budget (issue 16's permissions).
async fn follow(
    control: ControlKv,
    node: String,
    collector: Arc<Collector>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let budget_key = format!("budget.{node}");
    let mut seen = [0u64; 3];
    let mut failing = false;
    loop {
        let mut failed = None;
        for (i, key) in [budget_key.as_str(), "orgs", cluster::DEVICES_KEY].into_iter().enumerate() {
            let (revision, value) = match control.get(key).await {
                Ok(Some(found)) => found,
                Ok(None) => continue,
                Err(e) => {
                    failed = Some(e.to_string());
                    break;
                }
            };
            if revision == seen[i] {
                continue;
            }
            seen[i] = revision;
            match i {
                0 => {
                    if let Some(b) = decode::<Budget>(&value) {
                        collector.apply_budget(b);
                    }
                }
                1 => {
                    if let Some(o) = decode::<OrgSnapshot>(&value)
                        && let Err(e) = collector.apply_orgs(&o)
                    {
                        eprintln!("vigil collector: {e}");
                    }
                }
                _ => {
                    if let Some(d) = decode::<DeviceLimits>(&value) {
                        match standings(&control, d).await {
                            Ok(d) => collector.apply_devices(&d),
                            Err(e) => {
                                // Read again next time.
                                seen[i] = 0;
                                eprintln!("vigil collector: device limit: {e}; keeping the standings it had");
                            }
                        }
                    }
                }
            }
        }
        match failed {
            Some(e) if !failing => {
                eprintln!("vigil collector: following the supervisor: {e}; trying again");
                failing = true;
            }
            Some(_) => {}
            None => failing = false,
        }
        tokio::select! {
            _ = stopped.changed() => return,
            () = tokio::time::sleep(FOLLOW_EVERY) => {}
        }
    }
}
