//! The supervisor role in a cluster: the same [`SupervisorNode`] as
//! `vigil run` (record store, incident ingest, EPS loop, org publisher,
//! API), with NATS JetStream as its transports:
//!
//! - it creates the event stream, the detection queue and the control
//!   bucket;
//! - interval reports arrive on `vigil.control.report.*` and feed the EPS
//!   loop; budgets and the org table leave through the control bucket
//!   (`budget.<node>`, `orgs`), written by one task, latest value per key;
//! - detections (incident updates) arrive on the durable consumer
//!   `supervisor` of `VIGIL_DETECTIONS`; a message is acknowledged only
//!   once its updates are committed in the record store, so detections
//!   published while the supervisor was down become incidents when it is
//!   back (updates are idempotent, so a redelivery never doubles one);
//! - heartbeats (`vigil.control.heartbeat.*`) keep the node registry;
//!   a sweep flags nodes that went silent; the allocator plans over the
//!   registered collectors and their guarantees, and plans the running
//!   interval again when one joins or a guarantee changes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use cluster::StreamExt;
use cluster::{ControlKv, Nats, StreamSpec, WorkQueue};
use collector::metrics::Exposition;
use collector::{Clock, NodeId};
use parsers::{
    Budget, DeviceLimits, DeviceReport, IncidentUpdate, IntervalReport, MESSAGE_PART_BYTES, NodeHeartbeat, NodeRole,
    OrgSnapshot,
};
use tokio::sync::Notify;

use crate::control::{Downlink, SharedNodes};
use crate::node::{SupervisorNode, SupervisorSetup};
use crate::store::{Store, StoreError};

/// Cluster settings of the supervisor.
#[derive(Clone, Debug)]
pub struct ClusterSetup {
    /// Partitions of the event stream (fixed once the stream exists).
    pub partitions: u16,
    /// Size limit of the event stream, bytes.
    pub stream_max_bytes: u64,
    /// A node silent this long is flagged (state `alert`).
    pub missed_heartbeat: Duration,
    /// Cross-org rules run (batches go to the cross-org partition too).
    pub cross_org: bool,
    /// With enrolled nodes (`vigil cluster init`): the cluster's keys and a
    /// system-account connection, to push revocations to the server.
    pub revoker: Option<Arc<Revoker>>,
}

/// What revokes removed nodes' credentials on the running server.
pub struct Revoker {
    /// The cluster's keys (the operator key signs the account JWT).
    pub keys: Arc<cluster::auth::ClusterKeys>,
    /// A connection as the system-account user.
    pub system: cluster::Client,
}

impl std::fmt::Debug for Revoker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revoker").field("keys", &self.keys).finish_non_exhaustive()
    }
}

/// How often enrolment changes (bindings, revocations) are looked for.
const ENROLMENT_EVERY: Duration = Duration::from_millis(500);

/// Keeps NATS in step with the registry's enrolment: the collectors'
/// org bindings go to the control bucket (workers refuse batches outside
/// them), and every revoked user key goes into the account JWT pushed to
/// the server, which disconnects the node and refuses it from then on.
/// A push that fails is tried again on the next round.
async fn follow_enrolment(
    store: Arc<Store>,
    kv: ControlKv,
    revoker: Option<Arc<Revoker>>,
    clock: Arc<dyn Clock>,
    stats: Arc<ClusterStats>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut bindings_sent = None;
    let mut revocations_sent = None;
    let mut last_iat = 0i64;
    loop {
        match store.node_bindings().await {
            Ok(b) if Some(&b) != bindings_sent.as_ref() => {
                let body = serde_json::to_vec(&b).unwrap_or_default();
                if kv.put(cluster::BINDINGS_KEY, body.into()).await.is_ok() {
                    stats.control_writes.fetch_add(1, Ordering::Relaxed);
                    bindings_sent = Some(b);
                }
            }
            Ok(_) => {}
            Err(e) => eprintln!("vigil supervisor: reading node bindings: {e}"),
        }
        if let Some(r) = &revoker {
            match store.node_revocations().await {
                Ok(revoked) if Some(&revoked) != revocations_sent.as_ref() => {
                    // Each update must be newer than the last the server kept.
                    let now = i64::try_from(clock.now().unix_nanos() / 1_000_000_000).unwrap_or(0);
                    let iat = now.max(last_iat + 1);
                    let pushed = match r.keys.account_jwt(&revoked, iat) {
                        Ok(jwt) => cluster::auth::push_account(&r.system, &jwt).await,
                        Err(e) => Err(e),
                    };
                    match pushed {
                        Ok(()) => {
                            last_iat = iat;
                            stats.revocation_pushes.fetch_add(1, Ordering::Relaxed);
                            if revocations_sent.is_some() {
                                eprintln!("vigil supervisor: {} node keys revoked on the server", revoked.len());
                            }
                            revocations_sent = Some(revoked);
                        }
                        Err(e) => eprintln!("vigil supervisor: revoking removed nodes: {e}; trying again"),
                    }
                }
                Ok(_) => {}
                Err(e) => eprintln!("vigil supervisor: reading revocations: {e}"),
            }
        }
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(ENROLMENT_EVERY) => {}
        }
    }
}

/// Counters of the cluster transports.
#[derive(Debug, Default)]
pub struct ClusterStats {
    /// Interval reports received.
    pub reports: AtomicU64,
    /// Heartbeats received.
    pub heartbeats: AtomicU64,
    /// Detection messages committed and acknowledged.
    pub detections: AtomicU64,
    /// Detection messages that could not be read (acknowledged, dropped).
    pub bad_detections: AtomicU64,
    /// Control values written (budgets, org tables).
    pub control_writes: AtomicU64,
    /// Device reports that could not be read, or named another node than their subject.
    pub bad_device_reports: AtomicU64,
    /// Account updates with revocations pushed to nats-server.
    pub revocation_pushes: AtomicU64,
}

/// Budgets, org tables and device standings for the control bucket: the
/// latest value per key (`None`: delete it), written by one task (bounded
/// by the number of keys).
struct KvDownlink {
    pending: Mutex<BTreeMap<String, Option<Bytes>>>,
    /// The version and part count of the standings last sent in parts.
    parts: Mutex<Option<(u64, u32)>>,
    wake: Notify,
}

impl Downlink for KvDownlink {
    fn budget(&self, node: &NodeId, budget: &Budget) {
        if let Ok(v) = serde_json::to_vec(budget) {
            self.put(format!("budget.{node}"), v.into());
        }
    }

    fn orgs(&self, orgs: &OrgSnapshot) {
        if let Ok(v) = serde_json::to_vec(orgs) {
            self.put("orgs".into(), v.into());
        }
    }

    fn devices(&self, limits: &DeviceLimits) {
        // NATS refuses a message over its max_payload (1 MiB by default):
        // large standings go in parts, the header last.
        let (header, parts) = limits.clone().split(MESSAGE_PART_BYTES);
        for part in &parts {
            if let Ok(v) = serde_json::to_vec(part) {
                self.put(cluster::devices_part_key(part.version, part.part), v.into());
            }
        }
        if let Ok(v) = serde_json::to_vec(&header) {
            self.put(cluster::DEVICES_KEY.into(), v.into());
        }
        let sent = (header.parts > 0).then_some((header.version, header.parts));
        let before = std::mem::replace(&mut *self.parts.lock().unwrap_or_else(PoisonError::into_inner), sent);
        if let Some((version, n)) = before.filter(|(v, _)| *v != header.version) {
            for part in 0..n {
                self.delete(cluster::devices_part_key(version, part));
            }
        }
    }
}

impl KvDownlink {
    fn put(&self, key: String, value: Bytes) {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner).insert(key, Some(value));
        self.wake.notify_one();
    }

    fn delete(&self, key: String) {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner).insert(key, None);
        self.wake.notify_one();
    }
}

async fn write_control(
    kv: ControlKv,
    downlink: Arc<KvDownlink>,
    stats: Arc<ClusterStats>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let mut batch = std::mem::take(&mut *downlink.pending.lock().unwrap_or_else(PoisonError::into_inner));
        // The standings' header after their parts, so that a node reading
        // it finds them.
        let header = batch.remove_entry(cluster::DEVICES_KEY);
        for (key, value) in batch.into_iter().chain(header) {
            let written = match &value {
                Some(v) => kv.put(&key, v.clone()).await.map(|_| ()),
                None => kv.delete(&key).await,
            };
            // Kept until written: a newer value for the key replaces it.
            if let Err(e) = written {
                eprintln!("vigil supervisor: cannot write {key}: {e}; retrying");
                downlink.pending.lock().unwrap_or_else(PoisonError::into_inner).entry(key).or_insert(value);
                tokio::time::sleep(Duration::from_millis(500)).await;
            } else {
                stats.control_writes.fetch_add(1, Ordering::Relaxed);
            }
        }
        if !downlink.pending.lock().unwrap_or_else(PoisonError::into_inner).is_empty() {
            continue;
        }
        tokio::select! {
            _ = stop.changed() => return,
            () = downlink.wake.notified() => {}
        }
    }
}

/// A supervisor in a cluster.
pub struct ClusterSupervisor {
    node: Arc<SupervisorNode>,
    stats: Arc<ClusterStats>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl ClusterSupervisor {
    /// Creates the cluster's streams and buckets, starts the supervisor
    /// node over them and follows reports, heartbeats and detections.
    pub async fn start(
        nats: &Nats,
        cluster_setup: ClusterSetup,
        mut setup: SupervisorSetup,
        store: Arc<Store>,
        clock: Arc<dyn Clock>,
    ) -> Result<ClusterSupervisor, StoreError> {
        let err = |e: &dyn std::fmt::Display| StoreError::Cluster(e.to_string());
        // The org partitions and, last, the cross-org one.
        let subjects = cluster_setup.partitions.saturating_add(1);
        let spec = StreamSpec { max_bytes: cluster_setup.stream_max_bytes, ..StreamSpec::new(subjects) };
        cluster::ensure_event_stream(nats, &spec).await.map_err(|e| err(&e))?;
        let detections = WorkQueue::detections(nats, 1).await.map_err(|e| err(&e))?;
        let kv = ControlKv::open(nats, cluster::CONTROL_BUCKET, 1).await.map_err(|e| err(&e))?;
        let settings = cluster::ClusterSettings {
            interval_secs: u64::from(setup.interval_secs),
            cross_org: cluster_setup.cross_org,
        };
        let settings = serde_json::to_vec(&settings).map_err(|e| err(&e))?;
        kv.put("settings", settings.into()).await.map_err(|e| err(&e))?;
        let stats = Arc::new(ClusterStats::default());
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let downlink =
            Arc::new(KvDownlink { pending: Mutex::new(BTreeMap::new()), parts: Mutex::new(None), wake: Notify::new() });
        let mut tasks = vec![tokio::spawn(write_control(kv.clone(), downlink.clone(), stats.clone(), stopped.clone()))];
        tasks.push(tokio::spawn(follow_enrolment(
            store.clone(),
            kv,
            cluster_setup.revoker,
            clock.clone(),
            stats.clone(),
            stopped.clone(),
        )));
        setup.guarantees = store.node_guarantees().await?;
        let (reports_tx, reports_rx) = crossbeam_channel::bounded::<IntervalReport>(4_096);
        let client = nats.client().clone();
        let reports = client
            .subscribe(cluster::report_subject("*"))
            .await
            .map_err(|e| StoreError::Cluster(format!("subscribing to reports: {e}")))?;
        let heartbeats = client
            .subscribe(cluster::heartbeat_subject("*"))
            .await
            .map_err(|e| StoreError::Cluster(format!("subscribing to heartbeats: {e}")))?;
        let devices = client
            .subscribe(cluster::devices_subject("*"))
            .await
            .map_err(|e| StoreError::Cluster(format!("subscribing to device reports: {e}")))?;
        let (devices_tx, devices_rx) = tokio::sync::mpsc::channel::<DeviceReport>(256);
        setup.device_reports = Some(devices_rx);
        let node = Arc::new(SupervisorNode::start(setup, store.clone(), clock, reports_rx, downlink).await?);
        tasks.push(tokio::spawn(take_device_reports(devices, devices_tx, stats.clone(), stopped.clone())));
        let nodes = node.nodes();
        tasks.push(tokio::spawn(take_reports(reports, reports_tx, stats.clone(), stopped.clone())));
        tasks.push(tokio::spawn(follow_nodes(
            heartbeats,
            store.clone(),
            nodes,
            cluster_setup.missed_heartbeat,
            stats.clone(),
            stopped.clone(),
        )));
        let consumer = detections.consumer("supervisor", Duration::from_secs(30)).await.map_err(|e| err(&e))?;
        let ingest = node.ingest().ok_or(StoreError::Closed)?;
        tasks.push(tokio::spawn(take_detections(consumer, ingest, stats.clone(), stopped)));
        Ok(ClusterSupervisor { node, stats, stop, tasks: Mutex::new(tasks) })
    }

    /// The supervisor node (store, API).
    pub fn node(&self) -> &Arc<SupervisorNode> {
        &self.node
    }

    /// Stops following the cluster, writes the last incidents and closes
    /// the store.
    pub async fn stop(&self) {
        let _ = self.stop.send(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner));
        for t in tasks {
            let _ = t.await;
        }
        self.node.stop().await;
    }

    /// Writes the supervisor's series, the cluster transports' and one set
    /// per registered node.
    pub async fn render_metrics(&self, m: &mut Exposition) {
        self.node.render_metrics(m);
        let s = &self.stats;
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        for (name, help, v) in [
            ("vigil_reports_received_total", "Interval reports received from collectors.", n(&s.reports)),
            ("vigil_heartbeats_received_total", "Heartbeats received from nodes.", n(&s.heartbeats)),
            ("vigil_detection_messages_total", "Detection messages committed to the record store.", n(&s.detections)),
            (
                "vigil_detection_messages_bad_total",
                "Detection messages that could not be read (dropped).",
                n(&s.bad_detections),
            ),
            (
                "vigil_device_reports_bad_total",
                "Device reports that could not be read or named another node than their subject (dropped).",
                n(&s.bad_device_reports),
            ),
            (
                "vigil_revocation_pushes_total",
                "Account updates with the revoked node keys pushed to nats-server.",
                n(&s.revocation_pushes),
            ),
            (
                "vigil_control_writes_total",
                "Budgets and org tables written to the control bucket.",
                n(&s.control_writes),
            ),
        ] {
            m.add(name, "counter", help, [(String::new(), v)]);
        }
        if let Ok(nodes) = self.node.store().list_nodes().await {
            crate::node::render_node_metrics(&nodes, m);
        }
    }
}

/// Hands each message of `messages` that reads as a `T` to `take` (with its
/// subject), counting the others as bad, until `stop`.
async fn take_each<T: serde::de::DeserializeOwned>(
    mut messages: cluster::Subscriber,
    mut stop: tokio::sync::watch::Receiver<bool>,
    bad: impl Fn(),
    mut take: impl FnMut(&str, T) -> bool,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            message = messages.next() => {
                let Some(message) = message else { return };
                let taken = serde_json::from_slice::<T>(&message.payload)
                    .is_ok_and(|value| take(message.subject.as_str(), value));
                if !taken {
                    bad();
                }
            }
        }
    }
}

async fn take_reports(
    reports: cluster::Subscriber,
    tx: crossbeam_channel::Sender<IntervalReport>,
    stats: Arc<ClusterStats>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let counted = stats.clone();
    take_each(
        reports,
        stop,
        || {},
        move |_, report: IntervalReport| {
            counted.reports.fetch_add(1, Ordering::Relaxed);
            // A full queue loses a report: the node counts as silent for one
            // interval (it falls back to its guarantee).
            let _ = tx.try_send(report);
            true
        },
    )
    .await;
}

async fn take_device_reports(
    reports: cluster::Subscriber,
    tx: tokio::sync::mpsc::Sender<DeviceReport>,
    stats: Arc<ClusterStats>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let bad = move || {
        stats.bad_device_reports.fetch_add(1, Ordering::Relaxed);
    };
    take_each(reports, stop, bad, move |subject, report: DeviceReport| {
        // The subject names the sender: a report claiming another node's
        // name is not taken.
        if subject != cluster::devices_subject(report.node.as_str()) {
            return false;
        }
        // A full queue loses the report: those devices' counters of one
        // period, nothing else.
        let _ = tx.try_send(report);
        true
    })
    .await;
}

/// Keeps the node registry from heartbeats, flags silent nodes, and keeps
/// the allocator's nodes in step with the registry.
async fn follow_nodes(
    mut heartbeats: cluster::Subscriber,
    store: Arc<Store>,
    nodes: SharedNodes,
    missed: Duration,
    stats: Arc<ClusterStats>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut sweep = tokio::time::interval(Duration::from_secs(1));
    let mut planned: BTreeSet<String> = BTreeSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            message = heartbeats.next() => {
                let Some(message) = message else { return };
                let Ok(hb) = serde_json::from_slice::<NodeHeartbeat>(&message.payload) else { continue };
                if !cluster::valid_node_name(hb.node.as_str()) {
                    continue;
                }
                stats.heartbeats.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = store.node_heartbeat(&hb).await {
                    eprintln!("vigil supervisor: heartbeat of {}: {e}", hb.node);
                }
                if hb.role == NodeRole::Collector && !planned.contains(hb.node.as_str()) {
                    refresh(&store, &nodes, &mut planned).await;
                }
            }
            _ = sweep.tick() => {
                let missed_ms = i64::try_from(missed.as_millis()).unwrap_or(i64::MAX);
                for t in store.sweep_nodes(missed_ms).await.unwrap_or_default() {
                    eprintln!("vigil supervisor: node {} is now {} ({})", t.node, t.to, t.reason);
                }
                refresh(&store, &nodes, &mut planned).await;
            }
        }
    }
}

/// Takes the registry's collectors and guarantees; a change makes the loop
/// plan the running interval again.
async fn refresh(store: &Store, nodes: &SharedNodes, planned: &mut BTreeSet<String>) {
    let Ok(guarantees) = store.node_guarantees().await else { return };
    let changed = *nodes.guarantees.lock().unwrap_or_else(PoisonError::into_inner) != guarantees;
    if changed {
        *planned = guarantees.keys().map(|n| n.as_str().to_owned()).collect();
        *nodes.guarantees.lock().unwrap_or_else(PoisonError::into_inner) = guarantees;
        nodes.replan.store(true, Ordering::Release);
    }
}

/// Commits detections to the record store, acknowledging each message
/// only once its updates are written.
async fn take_detections(
    consumer: cluster::QueueConsumer,
    ingest: crate::store::Ingest,
    stats: Arc<ClusterStats>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        if *stop.borrow() {
            return;
        }
        let taken = match consumer.fetch(256, Duration::from_millis(500)).await {
            Ok(t) => t,
            Err(e) => {
                eprintln!("vigil supervisor: reading detections: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        if taken.is_empty() {
            continue;
        }
        for t in &taken {
            match serde_json::from_slice::<Vec<IncidentUpdate>>(&t.payload) {
                Ok(updates) => {
                    for u in updates {
                        if ingest.submit(u).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    stats.bad_detections.fetch_add(1, Ordering::Relaxed);
                    eprintln!("vigil supervisor: dropping an unreadable detection message from {}: {e}", t.subject);
                }
            }
        }
        if ingest.flush().await.is_err() {
            return;
        }
        for t in &taken {
            if t.ack().await.is_ok() {
                stats.detections.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
