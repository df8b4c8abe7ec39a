//! The worker role in a cluster: partitions of the NATS JetStream event
//! stream, each owned by one worker at a time, each run by the same worker
//! pipeline as `vigil run` (one [`WorkerNode`] per owned partition).
//!
//! # Ownership
//! A worker owns a partition while it holds its lease (`cluster::Leases`);
//! it renews every TTL/4, takes free partitions up to its share (the
//! partition count over the live workers, who announce themselves in the
//! bucket `vigil_workers`, whose keys expire with the lease TTL), and hands
//! extras back gracefully when more workers join. A renew that fails means
//! another worker holds the partition: this one stops at once and commits
//! nothing more.
//!
//! # Acknowledged = durable, exactly once in storage
//! The worker pipeline tells each stream position once every event up to
//! it is in synced Parquet files. The owner then *commits* it: a
//! compare-and-set of the partition's record in the KV bucket
//! `vigil_stored` (`{seq, fence, fences}`), so a stale owner's commit
//! fails. Only then is the stream purged below it (and below the replay
//! horizon). Files are named with the partition, the lease fence and the
//! highest sequence in them; at start, a worker deletes its files that no
//! commit covers (written, then killed before the commit): their events
//! are still in the stream and the partition's next owner stores them.
//!
//! # Rule state moves with the partition
//! The stream keeps the last `replay` of each partition. A new owner reads
//! the partition from its start: messages at or below the committed
//! sequence are replayed through the rule engine only (stored already),
//! later ones are stored and correlated. Windows that were open when the
//! old owner died are therefore rebuilt, and hits reported before the
//! crash come again as the same idempotent incident update.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use cluster::{Checkpoints, ControlKv, EventStream, Lease, LeaseError, Leases, Nats, ReaderConfig, WorkQueue};
use collector::Clock;
use collector::metrics::{Exposition, label};
use crossbeam_channel::RecvTimeoutError;
use parsers::{DetectionSink, Event, IncidentUpdate, NodeHeartbeat, NodeId, NodeRole};
use rules::{EngineConfig, RuleSet};
use serde::{Deserialize, Serialize};

use crate::events::WorkerError;
use crate::node::{StorageConfig, WorkerNode, WorkerSetup};
use crate::pipeline::BatchSource;

pub use cluster::{STORED_BUCKET, WORKERS_BUCKET};
/// Largest checkpoint a new owner loads.
const MAX_CHECKPOINT_BYTES: usize = 1 << 30;

/// Everything a cluster worker is started with.
pub struct ClusterWorkerSetup {
    /// The node's name.
    pub node: String,
    /// Its data directory (Parquet under `events/`).
    pub data_dir: PathBuf,
    /// Storage settings.
    pub storage: StorageConfig,
    /// The compiled rules.
    pub rules: Arc<RuleSet>,
    /// Engine settings.
    pub engine: EngineConfig,
    /// Partition lease TTL: a dead owner's partitions move after at most this.
    pub lease_ttl: Duration,
    /// How much of each partition the stream keeps for a new owner to
    /// rebuild rule windows from.
    pub replay: Duration,
    /// Seconds between heartbeats to the supervisor.
    pub heartbeat: Duration,
    /// How often the owner checkpoints a partition's rule-engine state.
    pub checkpoint_every: Duration,
}

/// A partition's commit record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitRecord {
    /// Every message up to this stream sequence is stored.
    pub seq: u64,
    /// The lease fence of the owner that committed last.
    pub fence: u64,
    /// The owner's name.
    pub owner: String,
    /// Per lease fence, the highest sequence committed under it (the last
    /// 64 fences): tells a restarted worker which of its files count.
    pub fences: BTreeMap<u64, u64>,
}

/// Counters of a cluster worker.
#[derive(Debug, Default)]
pub struct ClusterStats {
    /// Partitions taken over.
    pub acquired: AtomicU64,
    /// Partitions lost to another owner (lease renew failed).
    pub lost: AtomicU64,
    /// Partitions handed back gracefully.
    pub released: AtomicU64,
    /// Batches replayed through the rules only.
    pub replayed_batches: AtomicU64,
    /// Batches that could not be decoded (counted, skipped).
    pub bad_batches: AtomicU64,
    /// Commits made.
    pub commits: AtomicU64,
    /// Stream messages purged.
    pub purged: AtomicU64,
    /// Files no commit covered, deleted at start or after a lost lease.
    pub orphans_removed: AtomicU64,
    /// Detection batches published.
    pub detections: AtomicU64,
    /// Engine checkpoints saved.
    pub checkpoints: AtomicU64,
    /// Size of the last checkpoint saved, bytes.
    pub checkpoint_bytes: AtomicU64,
    /// Partitions whose rule state was restored from a checkpoint.
    pub restored: AtomicU64,
    /// Batches refused before storage, by [`Refusal`].
    pub refused: [AtomicU64; 3],
}

/// The org each enrolled collector is bound to, as the supervisor
/// publishes it (`bindings` in the control bucket).
pub type Bindings = Arc<arc_swap::ArcSwap<BTreeMap<String, u32>>>;

/// Why a batch is refused: neither stored nor correlated, and counted
/// (`vigil_batches_refused_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its subject is not `vigil.events.<p>.<org>.<node>` of this partition.
    Subject,
    /// Its events are not all of the subject's org, or that org's events
    /// belong in another partition.
    Org,
    /// The publishing collector is bound to another org: the server's
    /// permissions should have refused it (a second line of defence).
    Binding,
}

impl Refusal {
    /// All of them, in counter order.
    pub const ALL: [Refusal; 3] = [Refusal::Subject, Refusal::Org, Refusal::Binding];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Subject => "subject",
            Refusal::Org => "org_mismatch",
            Refusal::Binding => "binding",
        }
    }
}

/// Checks a batch read from `partition` against the subject it was
/// published on and the sender's binding. `org_partitions` is `None` on the
/// cross-org partition (every org's events come there).
pub fn check_batch(
    subject: &str,
    partition: u16,
    org_partitions: Option<u16>,
    events: &[parsers::Event],
    bindings: &BTreeMap<String, u32>,
) -> Result<(), Refusal> {
    let (p, org, node) = cluster::parse_batch_subject(subject).ok_or(Refusal::Subject)?;
    if p != partition {
        return Err(Refusal::Subject);
    }
    if let Some(n) = org_partitions
        && cluster::partition_of(org.max(1), n) != partition
    {
        return Err(Refusal::Org);
    }
    if events.iter().any(|e| e.org_id.map_or(0, |o| o.0) != org) {
        return Err(Refusal::Org);
    }
    match bindings.get(node) {
        Some(&bound) if bound != org => Err(Refusal::Binding),
        _ => Ok(()),
    }
}

/// A running cluster worker.
pub struct ClusterWorker {
    node: String,
    stats: Arc<ClusterStats>,
    owned: Arc<Mutex<BTreeMap<u16, Owned>>>,
    stop: tokio::sync::watch::Sender<bool>,
    manager: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The compactor of this node's committed files, with the task that
    /// keeps its view of the commit records fresh.
    compactor: Mutex<Option<(crate::compact::Background, tokio::task::JoinHandle<()>)>>,
    compact_stats: Option<Arc<crate::compact::CompactStats>>,
}

/// What an owned partition runs.
struct Owned {
    lease: Lease,
    fence: u64,
    /// Set to stop reading (graceful stop or lost lease).
    stop: Arc<AtomicBool>,
    /// The lease was lost: commit nothing more.
    lost: Arc<AtomicBool>,
    node: Arc<WorkerNode>,
    feeder: Option<std::thread::JoinHandle<()>>,
    committer: tokio::task::JoinHandle<()>,
    committed: Arc<AtomicU64>,
}

/// The shared parts a partition needs.
#[derive(Clone)]
struct Shared {
    node: String,
    stream: EventStream,
    leases: Leases,
    stored: ControlKv,
    detections: WorkQueue,
    checkpoints: Checkpoints,
    /// Ids of the cross-org rules: the only incidents the cross-org
    /// partition reports (the org partitions report the rest).
    cross_rules: Arc<BTreeSet<String>>,
    setup: Arc<ClusterWorkerSetup>,
    clock: Arc<dyn Clock>,
    stats: Arc<ClusterStats>,
    runtime: tokio::runtime::Handle,
    bindings: Bindings,
    /// Partitions lost while running whose files past the last commit are
    /// not yet removed: not taken again until they are, so this node never
    /// holds an event's new copy beside the copy that is about to go.
    cleaning: Arc<Mutex<BTreeSet<u16>>>,
}

/// Reads the collectors' bindings as the supervisor changes them.
async fn follow_bindings(control: ControlKv, bindings: Bindings, mut stopped: tokio::sync::watch::Receiver<bool>) {
    let mut seen = 0;
    loop {
        match control.get(cluster::BINDINGS_KEY).await {
            Ok(Some((revision, value))) if revision != seen => {
                match serde_json::from_slice::<BTreeMap<String, u32>>(&value) {
                    Ok(b) => bindings.store(Arc::new(b)),
                    Err(e) => eprintln!("vigil worker: node bindings cannot be read: {e}; keeping the last ones"),
                }
                seen = revision;
            }
            Ok(_) => {}
            Err(e) => eprintln!("vigil worker: reading node bindings: {e}"),
        }
        tokio::select! {
            _ = stopped.changed() => return,
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

impl ClusterWorker {
    /// Connects the worker's parts, removes files no commit covers, and
    /// starts taking partitions.
    pub async fn start(
        nats: &Nats,
        setup: ClusterWorkerSetup,
        clock: Arc<dyn Clock>,
    ) -> Result<ClusterWorker, WorkerError> {
        setup.storage.validate()?;
        if !cluster::valid_node_name(&setup.node) {
            return Err(WorkerError::Config(format!("node name {:?}: 1-64 letters, digits, '-' or '_'", setup.node)));
        }
        let nats_err = |what: &str, e: &dyn std::fmt::Display| WorkerError::Cluster(format!("{what}: {e}"));
        let cross_rules: BTreeSet<String> = setup
            .rules
            .rules()
            .into_iter()
            .filter(|r| matches!(r.scope, rules::Scope::CrossOrg))
            .map(|r| r.id)
            .collect();
        let control = ControlKv::open(nats, cluster::CONTROL_BUCKET, 1)
            .await
            .map_err(|e| nats_err("opening the control bucket", &e))?;
        let settings = wait_for_settings(&control).await;
        if !cross_rules.is_empty() && !settings.cross_org {
            return Err(WorkerError::Config(format!(
                "the rules have cross-org rules ({}), which need every org's events in one partition: \
                 set cluster.cross_org = true on the supervisor",
                cross_rules.iter().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        let stream =
            cluster::wait_for_event_stream(nats, "worker").await.map_err(|e| WorkerError::Cluster(e.to_string()))?;
        let leases =
            Leases::open(nats, setup.lease_ttl, 1).await.map_err(|e| nats_err("opening the lease bucket", &e))?;
        let stored = ControlKv::open(nats, STORED_BUCKET, 1).await.map_err(|e| nats_err("opening commits", &e))?;
        let presence = ControlKv::open_with_ttl(nats, WORKERS_BUCKET, 1, setup.lease_ttl)
            .await
            .map_err(|e| nats_err("opening the worker bucket", &e))?;
        let detections = WorkQueue::detections(nats, 1).await.map_err(|e| nats_err("opening detections", &e))?;
        let checkpoints = Checkpoints::open(nats, 1).await.map_err(|e| nats_err("opening checkpoints", &e))?;
        let stats = Arc::new(ClusterStats::default());
        let removed = remove_uncommitted(&setup.data_dir, &setup.node, &stored).await?;
        stats.orphans_removed.fetch_add(removed, Ordering::Relaxed);
        if removed > 0 {
            eprintln!("vigil worker: removed {removed} files no commit covers (their events are stored again)");
        }
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let compactor = match setup.storage.compact_after_secs {
            0 => None,
            after => {
                Some(start_compactor(&setup, &stored, stream.partitions(), clock.clone(), after, stopped.clone())?)
            }
        };
        let compact_stats = compactor.as_ref().map(|(c, _)| c.stats().clone());
        let heartbeat = setup.heartbeat;
        let bindings: Bindings = Default::default();
        tokio::spawn(follow_bindings(control, bindings.clone(), stopped.clone()));
        let shared = Shared {
            node: setup.node.clone(),
            stream,
            leases,
            stored,
            detections,
            checkpoints,
            cross_rules: Arc::new(cross_rules),
            setup: Arc::new(setup),
            clock,
            stats: stats.clone(),
            runtime: tokio::runtime::Handle::current(),
            bindings,
            cleaning: Arc::new(Mutex::new(BTreeSet::new())),
        };
        let owned = Arc::new(Mutex::new(BTreeMap::new()));
        let node = shared.node.clone();
        let manager = tokio::spawn(manage(shared, presence, nats.client().clone(), owned.clone(), heartbeat, stopped));
        Ok(ClusterWorker {
            node,
            stats,
            owned,
            stop,
            manager: Mutex::new(Some(manager)),
            compactor: Mutex::new(compactor),
            compact_stats,
        })
    }

    /// The partitions owned now.
    pub fn owned(&self) -> Vec<u16> {
        self.owned.lock().unwrap_or_else(PoisonError::into_inner).keys().copied().collect()
    }

    /// The worker's counters.
    pub fn stats(&self) -> &Arc<ClusterStats> {
        &self.stats
    }

    /// Stops: every partition is written, committed and handed back, so
    /// another worker takes it over at once.
    pub async fn stop(&self) {
        let _ = self.stop.send(true);
        let manager = self.manager.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(m) = manager {
            let _ = m.await;
        }
        let compactor = self.compactor.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some((mut background, refresh)) = compactor {
            let _ = refresh.await;
            // Waits out a pass under way.
            let _ = tokio::task::spawn_blocking(move || background.stop()).await;
        }
    }

    /// Writes the worker's series (and each owned partition's pipeline).
    pub fn render_metrics(&self, m: &mut Exposition) {
        let nl = format!("node=\"{}\"", label(&self.node));
        let s = &self.stats;
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let owned = self.owned.lock().unwrap_or_else(PoisonError::into_inner);
        m.add(
            "vigil_partitions_owned",
            "gauge",
            "Event stream partitions this worker owns.",
            [(nl.clone(), owned.len() as u64)],
        );
        m.add(
            "vigil_checkpoint_bytes",
            "gauge",
            "Size of the last rule-engine checkpoint saved.",
            [(nl.clone(), n(&s.checkpoint_bytes))],
        );
        let series: [(&str, &str, u64); 11] = [
            ("vigil_checkpoints_total", "Rule-engine checkpoints saved.", n(&s.checkpoints)),
            (
                "vigil_partitions_restored_total",
                "Partitions whose rule state was restored from a checkpoint.",
                n(&s.restored),
            ),
            ("vigil_partitions_acquired_total", "Partitions taken over.", n(&s.acquired)),
            ("vigil_partitions_lost_total", "Partitions lost to another owner (lease renew failed).", n(&s.lost)),
            ("vigil_partitions_released_total", "Partitions handed back gracefully.", n(&s.released)),
            (
                "vigil_replayed_batches_total",
                "Batches replayed through the rules only (stored already).",
                n(&s.replayed_batches),
            ),
            ("vigil_bad_batches_total", "Event batches that could not be decoded (skipped).", n(&s.bad_batches)),
            ("vigil_partition_commits_total", "Stored positions committed.", n(&s.commits)),
            ("vigil_stream_purged_total", "Stream messages purged after being stored.", n(&s.purged)),
            (
                "vigil_orphan_files_removed_total",
                "Files no commit covered, removed at start or after a lost lease.",
                n(&s.orphans_removed),
            ),
            ("vigil_detection_batches_total", "Detection batches published to the supervisor.", n(&s.detections)),
        ];
        for (name, help, value) in series {
            m.add(name, "counter", help, [(nl.clone(), value)]);
        }
        m.add(
            "vigil_batches_refused_total",
            "counter",
            "Event batches refused before storage: subject, org_mismatch (events of another org than the \
             subject's), binding (a collector publishing outside its enrolled org).",
            Refusal::ALL.iter().zip(&s.refused).map(|(r, c)| (format!("{nl},reason=\"{}\"", r.as_str()), n(c))),
        );
        m.add(
            "vigil_partition_committed_sequence",
            "gauge",
            "Highest stream sequence stored and committed, per owned partition.",
            owned.iter().map(|(p, o)| (format!("{nl},partition=\"{p}\""), o.committed.load(Ordering::Relaxed))),
        );
        if let Some(c) = &self.compact_stats {
            c.render(m, &nl);
        }
        for o in owned.values() {
            o.node.render_metrics(m);
        }
    }
}

/// Starts compacting this node's committed files (of any partition it
/// ever owned): a task reads every partition's commit record once per
/// compaction period and the compactor merges only the files those
/// records cover.
fn start_compactor(
    setup: &ClusterWorkerSetup,
    stored: &ControlKv,
    partitions: u16,
    clock: Arc<dyn Clock>,
    after: u64,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> Result<(crate::compact::Background, tokio::task::JoinHandle<()>), WorkerError> {
    let records: Arc<std::sync::RwLock<BTreeMap<u16, CommitRecord>>> = Arc::default();
    let every = Duration::from_secs(setup.storage.compact_every_secs);
    let refresh = {
        let (records, stored) = (records.clone(), stored.clone());
        tokio::spawn(async move {
            loop {
                for partition in 0..partitions {
                    if let Ok((_, record)) = read_commit(&stored, partition).await {
                        records.write().unwrap_or_else(PoisonError::into_inner).insert(partition, record);
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep((every / 2).max(Duration::from_millis(500))) => {}
                    _ = stopped.changed() => return,
                }
            }
        })
    };
    let node = setup.node.clone();
    let committed = move |name: &str| {
        let (partition, fence, position) = parse_file_name(name, &node)?;
        let records = records.read().unwrap_or_else(PoisonError::into_inner);
        Some(records.get(&partition).is_some_and(|r| r.covers(fence, position)))
    };
    let config = crate::compact::CompactConfig {
        min_age: Duration::from_secs(after),
        eligible: crate::compact::Eligible::Committed(Arc::new(committed)),
        ..crate::compact::CompactConfig::new(setup.data_dir.join("events"), &setup.node)
    };
    let compactor = crate::compact::Compactor::new(config)?;
    let background = crate::compact::Background::start(compactor, clock, every, setup.storage.nice)?;
    Ok((background, refresh))
}

/// The supervisor's settings (it writes them at start), waiting for them.
async fn wait_for_settings(control: &ControlKv) -> cluster::ClusterSettings {
    let mut said = false;
    loop {
        if let Ok(Some((_, v))) = control.get("settings").await
            && let Ok(settings) = serde_json::from_slice::<cluster::ClusterSettings>(&v)
        {
            return settings;
        }
        if !said {
            eprintln!("vigil worker: waiting for the supervisor's settings");
            said = true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn stored_key(partition: u16) -> String {
    format!("p{partition}")
}

async fn read_commit(stored: &ControlKv, partition: u16) -> Result<(Option<u64>, CommitRecord), WorkerError> {
    match stored.get(&stored_key(partition)).await {
        Ok(Some((revision, value))) => {
            let record = serde_json::from_slice(&value).map_err(|e| {
                WorkerError::Cluster(format!("commit record of partition {partition} is unreadable: {e}"))
            })?;
            Ok((Some(revision), record))
        }
        Ok(None) => Ok((None, CommitRecord::default())),
        Err(e) => Err(WorkerError::Cluster(format!("reading the commit of partition {partition}: {e}"))),
    }
}

/// Writes `record` if the key is still at `revision`; the new revision, or
/// `None` when somebody else wrote (this owner is stale).
async fn write_commit(
    stored: &ControlKv,
    partition: u16,
    revision: Option<u64>,
    record: &CommitRecord,
) -> Result<Option<u64>, WorkerError> {
    let value = Bytes::from(serde_json::to_vec(record).unwrap_or_default());
    let key = stored_key(partition);
    let written = match revision {
        Some(r) => stored.update(&key, value, r).await,
        None => stored.create(&key, value).await,
    };
    written.map_err(|e| WorkerError::Cluster(format!("committing partition {partition}: {e}")))
}

/// The parts of a file name written by a partition pipeline:
/// `part-<node>-p<partition>-f<fence>-<start>-<seq>-s<position>.parquet`.
fn parse_file_name(name: &str, node: &str) -> Option<(u16, u64, u64)> {
    let rest = name.strip_prefix("part-")?.strip_suffix(".parquet")?;
    let mut parts = rest.rsplitn(6, '-');
    let position = parts.next()?.strip_prefix('s')?.parse().ok()?;
    let _seq = parts.next()?;
    let _start = parts.next()?;
    let fence = parts.next()?.strip_prefix('f')?.parse().ok()?;
    let partition = parts.next()?.strip_prefix('p')?.parse().ok()?;
    (parts.next()? == crate::events::file_safe(node)).then_some((partition, fence, position))
}

fn parquet_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            parquet_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "parquet") {
            out.push(path);
        }
    }
}

/// This node's files of stream partitions: path, partition, fence, and
/// the highest sequence in the file.
fn partition_files(data_dir: &Path, node: &str) -> Vec<(PathBuf, u16, u64, u64)> {
    let mut files = Vec::new();
    parquet_files(&data_dir.join("events"), &mut files);
    files
        .into_iter()
        .filter_map(|path| {
            let (p, f, pos) = parse_file_name(path.file_name()?.to_str()?, node)?;
            Some((path, p, f, pos))
        })
        .collect()
}

impl CommitRecord {
    /// Whether a file written under `fence` holding sequences up to
    /// `position` was committed.
    fn covers(&self, fence: u64, position: u64) -> bool {
        match self.fences.get(&fence) {
            Some(&upto) => position <= upto,
            // A fence older than the record remembers: long since committed
            // or replaced; the file counts.
            None => self.fences.keys().next().is_some_and(|&oldest| fence < oldest),
        }
    }
}

/// Deletes this node's files that no commit covers.
async fn remove_uncommitted(data_dir: &Path, node: &str, stored: &ControlKv) -> Result<u64, WorkerError> {
    let mut records: BTreeMap<u16, CommitRecord> = BTreeMap::new();
    let mut removed = 0;
    for (path, partition, fence, position) in partition_files(data_dir, node) {
        let record = match records.entry(partition) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => e.insert(read_commit(stored, partition).await?.1),
        };
        if !record.covers(fence, position) {
            std::fs::remove_file(&path).map_err(|source| WorkerError::Io { path: path.clone(), source })?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// The manager: heartbeats, presence, lease renewal, taking and handing
/// back partitions; at stop, hands every partition back.
async fn manage(
    shared: Shared,
    presence: ControlKv,
    client: cluster::Client,
    owned: Arc<Mutex<BTreeMap<u16, Owned>>>,
    heartbeat: Duration,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let round = (shared.setup.lease_ttl / 4).max(Duration::from_millis(250));
    let partitions = shared.stream.partitions();
    let mut next_beat = tokio::time::Instant::now();
    // Start at a partition of our own so simultaneous starts spread.
    let offset = shared.node.bytes().fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    let mut first_round = true;
    loop {
        if *stopped.borrow() {
            break;
        }
        if tokio::time::Instant::now() >= next_beat {
            next_beat += heartbeat.max(Duration::from_millis(200));
            beat(&client, &shared, &owned).await;
        }
        let _ = presence.put(&shared.node, Bytes::from_static(b"1")).await;
        // Renew what we hold; drop what we lost.
        let held: Vec<u16> = owned.lock().unwrap_or_else(PoisonError::into_inner).keys().copied().collect();
        for p in held {
            let lease = owned.lock().unwrap_or_else(PoisonError::into_inner).get(&p).map(|o| o.lease.clone());
            let Some(mut lease) = lease else { continue };
            match shared.leases.renew(&mut lease).await {
                Ok(()) => {
                    if let Some(o) = owned.lock().unwrap_or_else(PoisonError::into_inner).get_mut(&p) {
                        o.lease = lease;
                    }
                }
                Err(LeaseError::Lost { holder, .. }) => {
                    eprintln!(
                        "vigil worker: lost partition {p} to {}",
                        holder.unwrap_or_else(|| "nobody (expired)".into())
                    );
                    lose(&shared, &owned, p);
                }
                Err(e) if !lease.is_valid() => {
                    eprintln!("vigil worker: partition {p}: {e}; the lease ran out, stopping it");
                    lose(&shared, &owned, p);
                }
                Err(_) => {}
            }
        }
        // Our share: the partitions over the live workers.
        if !first_round {
            let live = presence.keys("").await.map(|k| k.len()).unwrap_or(1).max(1);
            let share = usize::from(partitions).div_ceil(live);
            let held = owned.lock().unwrap_or_else(PoisonError::into_inner).len();
            if held < share {
                for i in 0..partitions {
                    let p = u16::try_from((u32::from(i) + offset) % u32::from(partitions)).unwrap_or(0);
                    if owned.lock().unwrap_or_else(PoisonError::into_inner).contains_key(&p)
                        || shared.cleaning.lock().unwrap_or_else(PoisonError::into_inner).contains(&p)
                    {
                        continue;
                    }
                    if owned.lock().unwrap_or_else(PoisonError::into_inner).len() >= share {
                        break;
                    }
                    match shared.leases.try_acquire(p, &shared.node).await {
                        Ok(Some(lease)) => match take(&shared, lease).await {
                            Ok(o) => {
                                shared.stats.acquired.fetch_add(1, Ordering::Relaxed);
                                owned.lock().unwrap_or_else(PoisonError::into_inner).insert(p, o);
                            }
                            Err(e) => eprintln!("vigil worker: cannot take partition {p}: {e}"),
                        },
                        Ok(None) => {}
                        Err(e) => eprintln!("vigil worker: acquiring partition {p}: {e}"),
                    }
                }
            } else if held > share {
                // More workers than when we took them: hand one back.
                let last = owned.lock().unwrap_or_else(PoisonError::into_inner).keys().next_back().copied();
                if let Some(p) = last {
                    hand_back(&shared, &owned, p).await;
                }
            }
        }
        first_round = false;
        tokio::select! {
            _ = stopped.changed() => {}
            () = tokio::time::sleep(round) => {}
        }
    }
    let held: Vec<u16> = owned.lock().unwrap_or_else(PoisonError::into_inner).keys().copied().collect();
    for p in held {
        hand_back(&shared, &owned, p).await;
    }
    let _ = presence.delete(&shared.node).await;
}

async fn beat(client: &cluster::Client, shared: &Shared, owned: &Mutex<BTreeMap<u16, Owned>>) {
    let mut problems = Vec::new();
    let failing = owned.lock().unwrap_or_else(PoisonError::into_inner).values().any(|o| {
        o.node.stats().write_errors.load(Ordering::Relaxed) > 0 && o.node.stats().sealed.load(Ordering::Relaxed) > 0
    });
    if failing {
        problems.push("storage failing: Parquet writes are being retried".to_owned());
    }
    let hb = NodeHeartbeat {
        node: NodeId::new(&shared.node),
        role: NodeRole::Worker,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        addresses: Vec::new(),
        problems,
        sent_ms: i64::try_from(shared.clock.now().unix_nanos() / 1_000_000).unwrap_or(0),
    };
    if let Ok(body) = serde_json::to_vec(&hb) {
        let _ = client.publish(cluster::heartbeat_subject(&shared.node), body.into()).await;
    }
}

/// The lease is gone: stop reading at once and commit nothing more.
fn lose(shared: &Shared, owned: &Mutex<BTreeMap<u16, Owned>>, partition: u16) {
    let o = owned.lock().unwrap_or_else(PoisonError::into_inner).remove(&partition);
    let Some(mut o) = o else { return };
    shared.stats.lost.fetch_add(1, Ordering::Relaxed);
    o.lost.store(true, Ordering::Release);
    o.stop.store(true, Ordering::Release);
    o.committer.abort();
    let feeder = o.feeder.take();
    let node = o.node.clone();
    // Once the pipeline has stopped, what it wrote under this fence past
    // the last commit is stored again by the next owner: remove it now.
    remove_past_in_background(shared, partition, o.fence, move || {
        if let Some(f) = feeder {
            let _ = f.join();
        }
        let _ = node.join();
    });
}

/// After `stopped` returns (the partition's pipeline has ended), removes
/// this node's files of `partition` under `fence` past the last commit
/// (the commit record, read again until it can be, says how far the
/// commits got). Until then this node does not take the partition again.
fn remove_past_in_background(shared: &Shared, partition: u16, fence: u64, stopped: impl FnOnce() + Send + 'static) {
    shared.cleaning.lock().unwrap_or_else(PoisonError::into_inner).insert(partition);
    let cleaner = shared.clone();
    let spawned = std::thread::Builder::new().name(format!("vigil-lost-p{partition}")).spawn(move || {
        stopped();
        loop {
            match cleaner.runtime.block_on(read_commit(&cleaner.stored, partition)) {
                Ok((_, record)) => {
                    let removed = remove_files_past(&cleaner.setup.data_dir, &cleaner.node, partition, fence, &record);
                    cleaner.stats.orphans_removed.fetch_add(removed, Ordering::Relaxed);
                    break;
                }
                Err(_) => std::thread::sleep(Duration::from_secs(1)),
            }
        }
        cleaner.cleaning.lock().unwrap_or_else(PoisonError::into_inner).remove(&partition);
    });
    if let Err(e) = spawned {
        // Without the thread the files stay until the next start removes
        // them (`remove_uncommitted`); taking the partition again here
        // would put the new copies beside them.
        eprintln!(
            "vigil worker: partition {partition}: cannot start its cleanup ({e}); not taking it again before a restart"
        );
    }
}

/// Removes this node's files of `partition` written under `fence` that
/// `record` does not cover (never committed).
fn remove_files_past(data_dir: &Path, node: &str, partition: u16, fence: u64, record: &CommitRecord) -> u64 {
    let mut removed = 0;
    for (path, p, f, position) in partition_files(data_dir, node) {
        if p == partition && f == fence && !record.covers(f, position) && std::fs::remove_file(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Stops reading `partition`, writes and commits everything taken, then
/// releases the lease so another worker continues at once.
async fn hand_back(shared: &Shared, owned: &Mutex<BTreeMap<u16, Owned>>, partition: u16) {
    let o = owned.lock().unwrap_or_else(PoisonError::into_inner).remove(&partition);
    let Some(mut o) = o else { return };
    o.stop.store(true, Ordering::Release);
    let feeder = o.feeder.take();
    let node = o.node.clone();
    let joined = tokio::task::spawn_blocking(move || {
        if let Some(f) = feeder {
            let _ = f.join();
        }
        node.join()
    })
    .await;
    if let Ok(Err(e)) = joined {
        eprintln!("vigil worker: partition {partition}: {e}");
    }
    // The pipeline has ended, so the committer sees its last position and ends.
    let _ = (&mut o.committer).await;
    if !o.lost.load(Ordering::Acquire) {
        let _ = shared.leases.release(o.lease).await;
        shared.stats.released.fetch_add(1, Ordering::Relaxed);
    } else {
        // Another owner committed: what this one wrote past its last commit
        // is that owner's to store. The pipeline has ended already.
        match read_commit(&shared.stored, partition).await {
            Ok((_, record)) => {
                let removed = remove_files_past(&shared.setup.data_dir, &shared.node, partition, o.fence, &record);
                shared.stats.orphans_removed.fetch_add(removed, Ordering::Relaxed);
            }
            Err(_) => remove_past_in_background(shared, partition, o.fence, || {}),
        }
    }
}

/// What the feeder hands the pipeline: a decoded batch, its sequence, and
/// whether it is stored already.
struct Item {
    events: Vec<Event>,
    sequence: u64,
    replayed: bool,
}

/// The pipeline's view of a partition.
struct PartitionSource {
    rx: crossbeam_channel::Receiver<Item>,
    last: std::cell::Cell<(u64, bool)>,
    /// Every batch is for the rules only (the cross-org partition).
    rules_only: bool,
    /// The stream holds messages of the partition not yet handed over
    /// (see [`Feeder::behind`]).
    behind: Arc<AtomicBool>,
}

impl BatchSource for PartitionSource {
    fn recv_timeout(&self, wait: Duration) -> Result<Vec<Event>, RecvTimeoutError> {
        let item = self.rx.recv_timeout(wait)?;
        self.last.set((item.sequence, item.replayed || self.rules_only));
        Ok(item.events)
    }

    fn waiting(&self) -> usize {
        // The channel empties between pulls: a partition behind the stream
        // still has a backlog, and the rule clock must not run ahead of it.
        self.rx.len() + usize::from(self.behind.load(Ordering::Acquire))
    }

    fn position(&self) -> u64 {
        self.last.get().0
    }

    fn replayed(&self) -> bool {
        self.last.get().1
    }
}

/// Publishes a partition's detections to the supervisor's queue, waiting
/// until JetStream has them (a detection is never dropped).
struct QueueSink {
    queue: WorkQueue,
    runtime: tokio::runtime::Handle,
    node: String,
    prefix: String,
    sent: u64,
    lost: Arc<AtomicBool>,
    stats: Arc<ClusterStats>,
    /// Report only these rules' incidents (the cross-org partition).
    only: Option<Arc<BTreeSet<String>>>,
}

impl DetectionSink for QueueSink {
    fn deliver(&mut self, mut updates: Vec<IncidentUpdate>) {
        if let Some(only) = &self.only {
            updates.retain(|u| only.contains(&u.rule));
        }
        if updates.is_empty() {
            return;
        }
        let Ok(body) = serde_json::to_vec(&updates) else { return };
        let body = Bytes::from(body);
        self.sent += 1;
        let msg_id = format!("{}/{}", self.prefix, self.sent);
        loop {
            let published =
                self.runtime.block_on(self.queue.publish(&self.node, &msg_id, body.clone(), Duration::from_secs(30)));
            match published {
                Ok(_) => {
                    self.stats.detections.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                // The new owner replays and reports these again.
                Err(_) if self.lost.load(Ordering::Acquire) => return,
                Err(e) => eprintln!("vigil worker: detections not yet delivered, retrying: {e}"),
            }
        }
    }
}

/// Starts a partition just leased; if that fails, gives the lease back at
/// once so another worker need not wait for it to expire.
async fn take(shared: &Shared, lease: Lease) -> Result<Owned, WorkerError> {
    let held = lease.clone();
    let taken = start_partition(shared, lease).await;
    if taken.is_err() {
        let _ = shared.leases.release(held).await;
    }
    taken
}

/// Records the new fence in the commit record, restores or rebuilds the
/// rule state, and starts reading the partition.
async fn start_partition(shared: &Shared, lease: Lease) -> Result<Owned, WorkerError> {
    let partition = lease.partition();
    let fence = lease.fence();
    let (revision, mut record) = read_commit(&shared.stored, partition).await?;
    let stored_upto = record.seq;
    record.fence = fence;
    record.owner = shared.node.clone();
    record.fences.insert(fence, stored_upto);
    while record.fences.len() > 64 {
        record.fences.pop_first();
    }
    let Some(revision) = write_commit(&shared.stored, partition, revision, &record).await? else {
        let _ = shared.leases.release(lease).await;
        return Err(WorkerError::Cluster(format!("partition {partition}: another owner committed meanwhile")));
    };
    let setup = &shared.setup;
    // The cross-org partition runs every rule over every org's events and
    // reports the cross-org rules' incidents; it stores nothing (the org
    // partitions do). The org partitions leave the cross-org rules out.
    let cross = partition == cluster::cross_partition(shared.stream.partitions());
    let engine_config = rules::EngineConfig { cross_org: cross, ..setup.engine.clone() };
    // The rule state: from the partition's checkpoint (then only what
    // follows it is replayed), or rebuilt from what the stream holds.
    let (restored, start, checkpointed) = match shared.checkpoints.load(partition, MAX_CHECKPOINT_BYTES).await {
        Ok(Some(cp)) if cp.sequence <= stored_upto => {
            match rules::Engine::restore(setup.rules.clone(), engine_config.clone(), &cp.data) {
                Ok(engine) => {
                    shared.stats.restored.fetch_add(1, Ordering::Relaxed);
                    (Some(engine), cp.sequence + 1, cp.sequence)
                }
                Err(e) => {
                    eprintln!("vigil worker: partition {partition}: checkpoint not used ({e}); replaying the stream");
                    (None, 1, 0)
                }
            }
        }
        Ok(Some(cp)) => {
            eprintln!(
                "vigil worker: partition {partition}: checkpoint at {} is past the stored {stored_upto}; replaying the stream",
                cp.sequence
            );
            (None, 1, 0)
        }
        Ok(None) => (None, 1, 0),
        Err(e) => {
            eprintln!("vigil worker: partition {partition}: cannot load its checkpoint ({e}); replaying the stream");
            (None, 1, 0)
        }
    };
    let (checkpoint_tx, checkpoint_rx) = tokio::sync::watch::channel::<Option<(u64, Bytes)>>(None);
    let checkpointer: crate::pipeline::Checkpointer = Arc::new(move |position, engine: &rules::Engine| {
        let mut state = Vec::new();
        engine.checkpoint(&mut state);
        let _ = checkpoint_tx.send(Some((position, Bytes::from(state))));
    });
    let stop = Arc::new(AtomicBool::new(false));
    let lost = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicU64::new(stored_upto));
    // Receive time (seconds) of each message read, for the replay horizon.
    let arrivals: Arc<Mutex<VecDeque<(u64, i64)>>> = Arc::new(Mutex::new(VecDeque::new()));
    let (durable_tx, durable_rx) = tokio::sync::watch::channel(0u64);
    let durable: crate::pipeline::Durable = Arc::new(move |position| {
        let _ = durable_tx.send(position);
    });
    let (tx, rx) = crossbeam_channel::bounded::<Item>(16);
    let worker_setup = WorkerSetup {
        node: format!("{}-p{partition}-f{fence}", shared.node),
        data_dir: setup.data_dir.clone(),
        storage: setup.storage.clone(),
        rules: setup.rules.clone(),
        engine: engine_config,
        durable: Some(durable),
        handoff: true,
        restored,
        checkpoints: Some((setup.checkpoint_every, checkpointer)),
        labels: Some(format!("node=\"{}\",partition=\"{partition}\"", label(&shared.node))),
    };
    let sink = QueueSink {
        queue: shared.detections.clone(),
        runtime: shared.runtime.clone(),
        node: shared.node.clone(),
        prefix: format!("{}/p{partition}/f{fence}", shared.node),
        sent: 0,
        lost: lost.clone(),
        stats: shared.stats.clone(),
        only: cross.then(|| shared.cross_rules.clone()),
    };
    // Behind until the first pull says otherwise.
    let behind = Arc::new(AtomicBool::new(true));
    let source =
        PartitionSource { rx, last: std::cell::Cell::new((0, false)), rules_only: cross, behind: behind.clone() };
    let node = Arc::new(WorkerNode::start(worker_setup, shared.clock.clone(), source, sink)?);
    let reader = shared
        .stream
        .reader(partition, start, ReaderConfig { max_wait: Duration::from_millis(500), ..ReaderConfig::default() })
        .map_err(|e| WorkerError::Cluster(e.to_string()))?;
    let feeder = {
        let feeder = Feeder {
            tx,
            stop: stop.clone(),
            behind,
            runtime: shared.runtime.clone(),
            stats: shared.stats.clone(),
            arrivals: arrivals.clone(),
            stored_upto,
            partition,
            org_partitions: (!cross).then(|| cluster::org_partitions(shared.stream.partitions())),
            bindings: shared.bindings.clone(),
        };
        std::thread::Builder::new()
            .name(format!("vigil-feed-p{partition}"))
            .spawn(move || feeder.run(reader))
            .map_err(|e| WorkerError::Io { path: "vigil-feed thread".into(), source: e })?
    };
    let committer = tokio::spawn(commit_loop(CommitLoop {
        shared: shared.clone(),
        partition,
        revision,
        record,
        durable: durable_rx,
        lost: lost.clone(),
        stop: stop.clone(),
        committed: committed.clone(),
        arrivals,
        checkpoint: checkpoint_rx,
        checkpointed,
        fence,
    }));
    let state = match start {
        1 => "rule state rebuilt from the stream".to_owned(),
        s => format!("rule state from the checkpoint at {}", s - 1),
    };
    eprintln!("vigil worker: took partition {partition} (fence {fence}; stored through {stored_upto}; {state})");
    Ok(Owned { lease, fence, stop, lost, node, feeder: Some(feeder), committer, committed })
}

/// The thread that reads a partition for its pipeline.
struct Feeder {
    tx: crossbeam_channel::Sender<Item>,
    stop: Arc<AtomicBool>,
    /// Set while the stream may hold messages of the partition not yet in
    /// the pipeline's channel: before the first pull ends, while a batch
    /// waits for room, when the last delivery had more pending, and while
    /// the server cannot be reached. The pipeline's rule clock then stays
    /// with the last event taken, so a new owner's backlog (or a slow
    /// reader's) is never made late by the wall clock.
    behind: Arc<AtomicBool>,
    runtime: tokio::runtime::Handle,
    stats: Arc<ClusterStats>,
    arrivals: Arc<Mutex<VecDeque<(u64, i64)>>>,
    stored_upto: u64,
    partition: u16,
    /// The org partitions, or `None` on the cross-org partition.
    org_partitions: Option<u16>,
    bindings: Bindings,
}

impl Feeder {
    /// Reads the partition and hands decoded batches to the pipeline until
    /// told to stop.
    fn run(self, mut reader: cluster::PartitionReader) {
        while !self.stop.load(Ordering::Acquire) {
            let next =
                self.runtime.block_on(async { tokio::time::timeout(Duration::from_millis(250), reader.next()).await });
            let record = match next {
                Err(_) => {
                    self.behind.store(!reader.caught_up(), Ordering::Release);
                    continue;
                }
                Ok(Err(e)) => {
                    self.behind.store(true, Ordering::Release);
                    eprintln!("vigil worker: {e}");
                    continue;
                }
                Ok(Ok(record)) => record,
            };
            self.behind.store(true, Ordering::Release);
            // Each event's raw line is a slice of the message: no copy.
            let events = match parsers::wire::decode_batch_bytes(&record.payload) {
                Ok(events) => events,
                Err(e) => {
                    self.stats.bad_batches.fetch_add(1, Ordering::Relaxed);
                    eprintln!("vigil worker: skipping undecodable batch at sequence {}: {e}", record.sequence);
                    continue;
                }
            };
            if let Err(why) =
                check_batch(&record.subject, self.partition, self.org_partitions, &events, &self.bindings.load())
            {
                let i = Refusal::ALL.iter().position(|r| *r == why).unwrap_or(0);
                if self.stats.refused[i].fetch_add(1, Ordering::Relaxed) < 10 {
                    eprintln!(
                        "vigil worker: refused the batch at sequence {} on {} ({}): not stored, not correlated",
                        record.sequence,
                        record.subject,
                        why.as_str()
                    );
                }
                continue;
            }
            let received = events.last().map_or(0, |e| e.received_at.unix_secs());
            {
                let mut a = self.arrivals.lock().unwrap_or_else(PoisonError::into_inner);
                if a.len() >= 1 << 20 {
                    a.pop_front();
                }
                a.push_back((record.sequence, received));
            }
            let replayed = record.sequence <= self.stored_upto;
            if replayed {
                self.stats.replayed_batches.fetch_add(1, Ordering::Relaxed);
            }
            let mut item = Item { events, sequence: record.sequence, replayed };
            // Bounded: a slow pipeline stops the reading here.
            loop {
                match self.tx.send_timeout(item, Duration::from_millis(250)) {
                    Ok(()) => break,
                    Err(crossbeam_channel::SendTimeoutError::Timeout(back)) => {
                        if self.stop.load(Ordering::Acquire) {
                            return;
                        }
                        item = back;
                    }
                    Err(crossbeam_channel::SendTimeoutError::Disconnected(_)) => return,
                }
            }
            // In the channel now, which the pipeline counts itself.
            self.behind.store(record.pending > 0, Ordering::Release);
        }
    }
}

struct CommitLoop {
    shared: Shared,
    partition: u16,
    revision: u64,
    record: CommitRecord,
    durable: tokio::sync::watch::Receiver<u64>,
    lost: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    committed: Arc<AtomicU64>,
    arrivals: Arc<Mutex<VecDeque<(u64, i64)>>>,
    /// The pipeline's latest engine checkpoint and the position it covers.
    checkpoint: tokio::sync::watch::Receiver<Option<(u64, Bytes)>>,
    /// The position of the newest checkpoint saved (0: none yet).
    checkpointed: u64,
    fence: u64,
}

/// Commits each durable position, then purges the stream below what is
/// both stored and older than the replay horizon. Ends when the pipeline
/// has ended (after its last position).
async fn commit_loop(mut c: CommitLoop) {
    loop {
        // A new durable position, or a new checkpoint: one that comes after
        // the last commit (no more input) must still be saved, or the
        // stream is never purged below it and a full stream stays full.
        let ended = tokio::select! {
            biased;
            changed = c.durable.changed() => changed.is_err(),
            changed = c.checkpoint.changed() => {
                if changed.is_ok() && !c.lost.load(Ordering::Acquire) {
                    let saved = c.checkpointed;
                    save_checkpoint(&mut c).await;
                    if c.checkpointed > saved {
                        purge(&c).await;
                    }
                }
                false
            }
        };
        let position = *c.durable.borrow_and_update();
        if position > c.record.seq && !c.lost.load(Ordering::Acquire) {
            let mut record = c.record.clone();
            record.seq = position;
            record.fences.insert(record.fence, position);
            let mut backoff = Duration::from_millis(50);
            loop {
                match write_commit(&c.shared.stored, c.partition, Some(c.revision), &record).await {
                    Ok(Some(revision)) => {
                        c.revision = revision;
                        c.record = record;
                        c.committed.store(position, Ordering::Relaxed);
                        c.shared.stats.commits.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    Ok(None) => {
                        eprintln!("vigil worker: partition {}: another owner committed; stopping", c.partition);
                        c.lost.store(true, Ordering::Release);
                        c.stop.store(true, Ordering::Release);
                        return;
                    }
                    Err(e) => {
                        eprintln!("vigil worker: {e}; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                }
            }
            save_checkpoint(&mut c).await;
            purge(&c).await;
        }
        if ended {
            return;
        }
    }
}

/// Saves the pipeline's newest engine checkpoint once its position is
/// committed (so a new owner never restores state ahead of the stored
/// events).
async fn save_checkpoint(c: &mut CommitLoop) {
    let pending = c.checkpoint.borrow_and_update().clone();
    let Some((position, state)) = pending else { return };
    if position <= c.checkpointed || position > c.record.seq {
        return;
    }
    match c.shared.checkpoints.save(c.partition, position, c.fence, &state).await {
        Ok(()) => {
            c.checkpointed = position;
            c.shared.stats.checkpoints.fetch_add(1, Ordering::Relaxed);
            c.shared.stats.checkpoint_bytes.store(state.len() as u64, Ordering::Relaxed);
        }
        Err(e) => eprintln!("vigil worker: partition {}: checkpoint not saved: {e}", c.partition),
    }
}

/// Purges the partition below what a new owner may need: with a
/// checkpoint, the messages after it; before the first, the replay
/// horizon. Never above the committed sequence.
async fn purge(c: &CommitLoop) {
    let below = if c.checkpointed > 0 { c.checkpointed.min(c.record.seq) + 1 } else { horizon_floor(c) };
    match c.shared.stream.purge_partition_below(c.partition, below).await {
        Ok(n) => {
            c.shared.stats.purged.fetch_add(n, Ordering::Relaxed);
        }
        Err(e) => eprintln!("vigil worker: purging partition {}: {e}", c.partition),
    }
}

/// min(committed + 1, the first message inside the replay horizon).
fn horizon_floor(c: &CommitLoop) -> u64 {
    let horizon = c.shared.clock.now().unix_secs() - i64::try_from(c.shared.setup.replay.as_secs()).unwrap_or(0);
    {
        let mut a = c.arrivals.lock().unwrap_or_else(PoisonError::into_inner);
        while a.front().is_some_and(|&(seq, at)| at < horizon && seq <= c.record.seq) {
            a.pop_front();
        }
        a.front().map_or(c.record.seq + 1, |&(seq, _)| seq.min(c.record.seq + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event_of(org: Option<u32>) -> parsers::Event {
        let now = parsers::EventTime::from_unix(1_800_000_000, 0, 0);
        let mut e = parsers::Parser::new().parse(bytes::Bytes::from_static(b"<13>hello"), now);
        e.org_id = org.map(parsers::OrgId);
        e
    }

    #[test]
    fn batches_are_held_to_their_subject_partition_and_binding() {
        let none = BTreeMap::new();
        let acme = [event_of(Some(5)), event_of(Some(5))];
        // Org 5 of 4 org partitions is partition 1.
        assert_eq!(check_batch("vigil.events.1.5.edge-a", 1, Some(4), &acme, &none), Ok(()));
        assert_eq!(check_batch("vigil.events.1.5.edge-a", 4, None, &acme, &none), Err(Refusal::Subject));
        assert_eq!(check_batch("vigil.events.4.5.edge-a", 4, None, &acme, &none), Ok(()), "cross-org partition");
        assert_eq!(check_batch("vigil.events.2.6.edge-a", 2, Some(4), &acme, &none), Err(Refusal::Org));
        assert_eq!(check_batch("vigil.events.2.5.edge-a", 2, Some(4), &acme, &none), Err(Refusal::Org));
        let mixed = [event_of(Some(5)), event_of(Some(6))];
        assert_eq!(check_batch("vigil.events.1.5.edge-a", 1, Some(4), &mixed, &none), Err(Refusal::Org));
        assert_eq!(check_batch("vigil.events.1", 1, Some(4), &acme, &none), Err(Refusal::Subject));
        let bound = BTreeMap::from([("edge-a".to_owned(), 6)]);
        assert_eq!(check_batch("vigil.events.1.5.edge-a", 1, Some(4), &acme, &bound), Err(Refusal::Binding));
        assert_eq!(check_batch("vigil.events.1.5.edge-b", 1, Some(4), &acme, &bound), Ok(()));
        // Events without an org travel as org 0, in org 1's partition.
        let unassigned = [event_of(None)];
        assert_eq!(check_batch("vigil.events.1.0.edge-b", 1, Some(4), &unassigned, &bound), Ok(()));
    }

    #[test]
    fn a_commit_record_covers_what_each_fence_committed() {
        let record = CommitRecord { fences: [(5, 100), (9, 140)].into_iter().collect(), ..CommitRecord::default() };
        assert!(record.covers(5, 100) && !record.covers(5, 101));
        assert!(record.covers(9, 140) && !record.covers(9, 141));
        assert!(record.covers(3, 1_000), "older than the record remembers: kept");
        assert!(!record.covers(7, 1), "a fence that never committed");
    }

    #[test]
    fn file_names_tell_partition_fence_and_position() {
        let name = "part-w-1-p3-f42-1700000000000-000007-s981.parquet";
        assert_eq!(parse_file_name(name, "w-1"), Some((3, 42, 981)));
        assert_eq!(parse_file_name(name, "w-2"), None);
        assert_eq!(parse_file_name("part-w-1-1700000000000-000007.parquet", "w-1"), None);
        assert_eq!(parse_file_name("part-w-1-px-f42-1-2-s3.parquet", "w-1"), None);
    }
}
