//! The supervisor role, assembled: the record store and its incident
//! ingest (the [`DetectionSink`] workers deliver to), the EPS control loop
//! ([`crate::control`]) over every entry node, the org publisher (org
//! changes reach every node through the [`Downlink`] at once, and changes
//! another process made, such as the admin CLI, within the poll period),
//! the HTTP API and the supervisor's metrics, the node registry's among
//! them ([`render_node_metrics`]).

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use collector::metrics::Exposition;
use collector::node::Collector;
use collector::{Clock, IntervalReport, NodeId};
use parsers::{Budget, DetectionSink, DeviceLimits, DeviceReport, IncidentUpdate, OrgSnapshot};
use serde::Deserialize;

use crate::allocation::{AllocatorConfig, MILLI, OrgQuota};
use crate::control::{Downlink, SharedNodes, SharedQuotas, Supervisor};
use crate::inventory::InventoryStats;
use crate::store::{Ingest, IngestConfig, NodeInfo, NodeState, Store, StoreError};

/// `[api]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Address of the API.
    pub addr: std::net::SocketAddr,
}

impl Default for ApiConfig {
    fn default() -> ApiConfig {
        ApiConfig { addr: std::net::SocketAddr::from(([127, 0, 0, 1], 8080)) }
    }
}

/// `[metrics]`: a listener of its own, since metrics name every tenant and
/// the API promises a tenant that nothing reveals another one exists.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address of /metrics (loopback by default).
    pub addr: std::net::SocketAddr,
    /// A bearer token scrapers must present (none: the listener's address
    /// is the only protection; keep it on loopback or a private network).
    pub token: Option<Secret>,
}

impl Default for MetricsConfig {
    fn default() -> MetricsConfig {
        MetricsConfig { addr: std::net::SocketAddr::from(([127, 0, 0, 1], 9464)), token: None }
    }
}

impl MetricsConfig {
    /// Checks the token is long enough to be a secret.
    pub fn validate(&self) -> Result<(), StoreError> {
        if self.token.as_ref().is_some_and(|t| t.0.len() < 16) {
            return Err(StoreError::BadRequest("metrics.token must be at least 16 characters".into()));
        }
        Ok(())
    }
}

/// A secret from the config: compared, never printed.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Secret {
    /// Whether `offered` is this secret, in time independent of where they differ.
    pub fn matches(&self, offered: &[u8]) -> bool {
        let ours = self.0.as_bytes();
        ours.len() == offered.len() && ours.iter().zip(offered).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

/// `/metrics` on a router of its own; with a token, only for who presents
/// it. `render` writes the process's series.
pub fn metrics_router(render: impl Fn(&mut Exposition) + Send + Sync + 'static, token: Option<Secret>) -> axum::Router {
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::IntoResponse;
    let render = Arc::new(render);
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move |headers: HeaderMap| {
            let (render, token) = (render.clone(), token.clone());
            async move {
                if let Some(token) = token {
                    let offered = headers
                        .get(header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.strip_prefix("Bearer "))
                        .unwrap_or("");
                    if !token.matches(offered.as_bytes()) {
                        return (
                            StatusCode::UNAUTHORIZED,
                            [(header::WWW_AUTHENTICATE, "Bearer")],
                            "metrics need the bearer token configured as metrics.token\n",
                        )
                            .into_response();
                    }
                }
                let mut m = Exposition::default();
                render(&mut m);
                ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], m.render()).into_response()
            }
        }),
    )
}

/// The in-process downlink of `vigil run`: the collector in this process.
impl Downlink for Collector {
    fn budget(&self, node: &NodeId, budget: &Budget) {
        if node == self.node() {
            self.apply_budget(budget.clone());
        }
    }

    fn orgs(&self, orgs: &OrgSnapshot) {
        if let Err(e) = self.apply_orgs(orgs) {
            eprintln!("vigil: {e}");
        }
    }

    fn devices(&self, limits: &DeviceLimits) {
        self.apply_devices(limits);
    }
}

/// The in-process detection transport: straight into the ingest queue,
/// waiting (blocking this worker thread) while it is full. Each worker
/// shard has a clone.
#[derive(Clone)]
pub struct IngestSink {
    ingest: Ingest,
    runtime: tokio::runtime::Handle,
}

impl IngestSink {
    /// A sink into `ingest`, blocking on `runtime` when the queue is full.
    pub fn new(ingest: Ingest, runtime: tokio::runtime::Handle) -> IngestSink {
        IngestSink { ingest, runtime }
    }
}

impl DetectionSink for IngestSink {
    fn deliver(&mut self, updates: Vec<IncidentUpdate>) {
        for update in updates {
            if let Err(StoreError::QueueFull(_)) = self.ingest.try_submit(update.clone()) {
                let _ = self.runtime.block_on(self.ingest.submit(update));
            }
        }
    }
}

/// Everything a supervisor is started with.
pub struct SupervisorSetup {
    /// Licensed EPS (L).
    pub licence_eps: u64,
    /// Length of an EPS interval, seconds (T).
    pub interval_secs: u32,
    /// Seconds after a boundary the supervisor waits for reports.
    pub grace_secs: i64,
    /// Guaranteed EPS per entry node (Σ ≤ L).
    pub guarantees: BTreeMap<NodeId, u64>,
    /// Burst EPS the pool may grant per interval at most.
    pub burst_cap_eps: u64,
    /// How often the org publisher looks for org changes made by another
    /// process (the admin CLI); changes through this store apply at once.
    pub org_poll: Duration,
    /// Event search over the stored Parquet (`None`: this supervisor
    /// cannot read the events; the search endpoints answer 503).
    pub search: Option<search::SearchConfig>,
    /// Entry nodes' device reports (`None`: no device inventory).
    pub device_reports: Option<tokio::sync::mpsc::Receiver<DeviceReport>>,
    /// How often the inventory finds silent devices and decides the
    /// licence's device limit.
    pub device_every: Duration,
}

/// What runs until [`SupervisorNode::stop`].
struct Running {
    control: std::thread::JoinHandle<()>,
    publisher: tokio::task::JoinHandle<()>,
    ingest_task: tokio::task::JoinHandle<()>,
    retention: Option<tokio::task::JoinHandle<()>>,
    inventory: Option<tokio::task::JoinHandle<()>>,
    dispatcher: tokio::task::JoinHandle<()>,
}

/// What the retention pass deleted, for `/metrics`.
#[derive(Debug, Default)]
pub struct RetentionStats {
    /// Date directories (one org's day) deleted.
    pub days: AtomicU64,
    /// Files deleted.
    pub files: AtomicU64,
    /// Bytes deleted.
    pub bytes: AtomicU64,
    /// Passes that failed (tried again at the next).
    pub errors: AtomicU64,
}

/// How often the retention pass runs (it deletes whole days, so hourly
/// keeps every org within an hour of its retention).
pub const RETENTION_EVERY: Duration = Duration::from_secs(3_600);

/// Deletes each org's events older than its `retention_days`, at start and
/// every [`RETENTION_EVERY`], by the store's clock, until stopped.
async fn retention_loop(
    store: Arc<Store>,
    root: std::path::PathBuf,
    stats: Arc<RetentionStats>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        match store.retention_policy().await {
            Ok(policy) => {
                let now_secs = store.now_ms().div_euclid(1_000);
                let dir = root.clone();
                let done =
                    tokio::task::spawn_blocking(move || worker::retention::expire(&dir, &policy, now_secs)).await;
                match done {
                    Ok(Ok(r)) => {
                        if r.days > 0 {
                            eprintln!(
                                "vigil supervisor: retention deleted {} days of events ({} files, {} bytes)",
                                r.days, r.files, r.bytes
                            );
                        }
                        stats.days.fetch_add(r.days, Ordering::Relaxed);
                        stats.files.fetch_add(r.files, Ordering::Relaxed);
                        stats.bytes.fetch_add(r.bytes, Ordering::Relaxed);
                    }
                    Ok(Err(e)) => {
                        stats.errors.fetch_add(1, Ordering::Relaxed);
                        eprintln!("vigil supervisor: retention: {e}");
                    }
                    Err(e) => eprintln!("vigil supervisor: retention: {e}"),
                }
            }
            Err(e) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                eprintln!("vigil supervisor: retention: {e}");
            }
        }
        tokio::select! {
            _ = stopped.wait_for(|s| *s) => return,
            () = tokio::time::sleep(RETENTION_EVERY) => {}
        }
    }
}

/// A running supervisor.
pub struct SupervisorNode {
    store: Arc<Store>,
    search: Option<search::Searcher>,
    /// Taken at stop, so the ingest task ends once the last worker's
    /// sink is gone.
    ingest: Mutex<Option<Ingest>>,
    licence_eps: u64,
    /// Unused-EPS pool and the burst granted by the last plan, EPS.
    figures: Arc<Mutex<(u64, u64)>>,
    stop: Arc<AtomicBool>,
    stop_publisher: tokio::sync::watch::Sender<bool>,
    running: Mutex<Option<Running>>,
    nodes: SharedNodes,
    retention: Arc<RetentionStats>,
    inventory: Arc<InventoryStats>,
    device_limits: Arc<Mutex<Option<DeviceLimits>>>,
    dispatch: Arc<crate::notify::DispatchStats>,
}

fn quotas_of(orgs: &OrgSnapshot) -> Vec<OrgQuota> {
    orgs.orgs.iter().map(|o| OrgQuota { org: o.id, enabled: o.enabled, eps_limit: o.eps_limit }).collect()
}

impl SupervisorNode {
    /// Starts the ingest, the org publisher and the control loop. Reports
    /// arrive on `reports`; budgets and org tables leave by `downlink`.
    /// Returns the node and the org table it published first.
    pub async fn start(
        setup: SupervisorSetup,
        store: Arc<Store>,
        clock: Arc<dyn Clock>,
        reports: crossbeam_channel::Receiver<IntervalReport>,
        downlink: Arc<dyn Downlink>,
    ) -> Result<SupervisorNode, StoreError> {
        // Versions rise across restarts (nodes ignore a table no newer than
        // theirs), so a restarted supervisor's tables still apply.
        let version = u64::try_from(clock.now().unix_nanos() / 1_000_000).unwrap_or(1).max(1);
        let first = store.org_snapshot(version).await?;
        // Guarantees are checked against the licence; org limits are not:
        // the store refuses new ones past it, and limits set under a larger
        // licence (one since expired) must not stop the start.
        let mut config = AllocatorConfig {
            licensed_eps: setup.licence_eps,
            interval_secs: NonZeroU32::new(setup.interval_secs).unwrap_or(NonZeroU32::MIN),
            guarantees: setup.guarantees,
            burst_cap_eps: setup.burst_cap_eps,
            zone: parsers::SourceZone::utc(),
            orgs: Vec::new(),
        }
        .validate()
        .map_err(|e| StoreError::BadRequest(format!("EPS allocation: {e}")))?;
        config.orgs = quotas_of(&first);
        let search = match setup.search {
            Some(config) => Some(
                search::Searcher::new(config)
                    .map_err(|e| StoreError::BadRequest(format!("cannot start event search: {e}")))?,
            ),
            None => None,
        };
        let (ingest, ingest_task) = Ingest::start(store.clone(), IngestConfig::default());
        let mut control = Supervisor::new(config, reports, downlink.clone(), setup.grace_secs);
        let quotas = control.quotas();
        let nodes = control.nodes();
        let figures = Arc::new(Mutex::new((0, 0)));
        let stop = Arc::new(AtomicBool::new(false));
        let control_thread = {
            let (figures, stop, clock) = (figures.clone(), stop.clone(), clock.clone());
            std::thread::Builder::new()
                .name("vigil-eps".into())
                .spawn(move || {
                    control.run(clock.as_ref(), &stop, |plan| {
                        *figures.lock().unwrap_or_else(PoisonError::into_inner) = (
                            plan.pool_before_burst.saturating_sub(plan.burst_granted) / MILLI,
                            plan.burst_granted / MILLI,
                        );
                    });
                })
                .map_err(|e| StoreError::BadRequest(format!("cannot start the EPS loop: {e}")))?
        };
        let (stop_publisher, stopped) = tokio::sync::watch::channel(false);
        // Every node starts from the table as it is now.
        downlink.orgs(&first);
        store.attach_org_publisher();
        let inventory = Arc::new(InventoryStats::default());
        let device_limits = Arc::new(Mutex::new(None));
        let inventory_task = setup.device_reports.map(|reports| {
            tokio::spawn(crate::inventory::run(
                store.clone(),
                reports,
                downlink.clone(),
                setup.device_every.max(Duration::from_millis(100)),
                inventory.clone(),
                device_limits.clone(),
                stop_publisher.subscribe(),
            ))
        });
        let publisher = tokio::spawn(publish_orgs(store.clone(), first, downlink, quotas, setup.org_poll, stopped));
        let retention = Arc::new(RetentionStats::default());
        let expiring = search.as_ref().map(|s| {
            let root = s.config().root.clone();
            tokio::spawn(retention_loop(store.clone(), root, retention.clone(), stop_publisher.subscribe()))
        });
        // One dispatcher per supervisor; claims are leased in the store, so
        // two supervisors on one database never send a delivery twice at once.
        let dispatch = Arc::new(crate::notify::DispatchStats::default());
        let dispatcher = tokio::spawn(crate::notify::run(store.clone(), dispatch.clone(), stop_publisher.subscribe()));
        Ok(SupervisorNode {
            store,
            search,
            ingest: Mutex::new(Some(ingest)),
            licence_eps: setup.licence_eps,
            figures,
            stop,
            stop_publisher,
            running: Mutex::new(Some(Running {
                control: control_thread,
                publisher,
                ingest_task,
                retention: expiring,
                inventory: inventory_task,
                dispatcher,
            })),
            retention,
            nodes,
            inventory,
            dispatch,
            device_limits,
        })
    }

    /// The incident ingest (what workers' detections go into); `None`
    /// once stopped.
    pub fn ingest(&self) -> Option<Ingest> {
        self.ingest.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The entry nodes the EPS loop plans over (change them, then set
    /// `replan`).
    pub fn nodes(&self) -> SharedNodes {
        self.nodes.clone()
    }

    /// The device limit's standings as last sent to the entry nodes.
    pub fn device_limits(&self) -> Option<DeviceLimits> {
        self.device_limits.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The record store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The HTTP API.
    pub fn router(&self) -> axum::Router {
        crate::api::router_with_search(self.store.clone(), self.search.clone())
    }

    /// Stops the control loop and the org publisher, writes every queued
    /// incident, and closes the store.
    pub async fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.stop_publisher.send(true);
        let running = self.running.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(r) = running {
            let _ = r.publisher.await;
            if let Some(task) = r.retention {
                let _ = task.await;
            }
            if let Some(task) = r.inventory {
                // It merges the reports still queued first.
                let _ = task.await;
            }
            let _ = r.dispatcher.await;
            let _ = tokio::task::spawn_blocking(move || r.control.join()).await;
            let ingest = self.ingest.lock().unwrap_or_else(PoisonError::into_inner).take();
            if let Some(ingest) = ingest {
                ingest.flush().await.ok();
            }
            let _ = r.ingest_task.await;
        }
        self.store.close().await;
    }

    fn render_dispatch(&self, m: &mut Exposition) {
        let d = &self.dispatch;
        let outbox = self.store.outbox();
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let series: [(&'static str, &'static str, u64); 8] = [
            ("vigil_deliveries_queued_total", "Notifications queued in the outbox by this process.", n(&outbox.queued)),
            ("vigil_deliveries_throttled_total", "Notifications a policy's throttle held back.", n(&outbox.throttled)),
            ("vigil_delivery_attempts_total", "Delivery attempts made.", n(&d.attempts)),
            ("vigil_deliveries_delivered_total", "Deliveries the receiver accepted.", n(&d.delivered)),
            ("vigil_delivery_retries_total", "Attempts that failed transiently (retried later).", n(&d.retried)),
            ("vigil_deliveries_failed_total", "Deliveries refused for good (4xx, bad configuration).", n(&d.failed)),
            ("vigil_deliveries_dead_total", "Deliveries dead-lettered after their last attempt.", n(&d.dead)),
            ("vigil_delivery_store_errors_total", "Record-store errors of the dispatcher (retried).", n(&d.errors)),
        ];
        for (name, help, value) in series {
            m.add(name, "counter", help, [(String::new(), value)]);
        }
    }

    /// Writes the supervisor's series.
    pub fn render_metrics(&self, m: &mut Exposition) {
        m.gauge("vigil_licence_eps", "Licensed EPS.", self.licence_eps);
        let (pool, burst) = *self.figures.lock().unwrap_or_else(PoisonError::into_inner);
        m.gauge("vigil_unused_pool_eps", "Unused-EPS pool: licensed EPS left unused, available for bursts.", pool);
        m.gauge("vigil_burst_eps", "EPS granted from the pool above the allocations for this interval.", burst);
        self.inventory.render(self.store.config().devices.limit, m);
        self.render_dispatch(m);
        if let Some(search) = &self.search {
            render_search_metrics(search.counters(), m);
            let r = &self.retention;
            let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
            let series: [(&'static str, &'static str, u64); 4] = [
                ("vigil_retention_deleted_days_total", "Org-days of events deleted past their retention.", n(&r.days)),
                ("vigil_retention_deleted_files_total", "Event files deleted past their retention.", n(&r.files)),
                ("vigil_retention_deleted_bytes_total", "Event bytes deleted past their retention.", n(&r.bytes)),
                ("vigil_retention_errors_total", "Retention passes that failed (tried again).", n(&r.errors)),
            ];
            for (name, help, value) in series {
                m.add(name, "counter", help, [(String::new(), value)]);
            }
        }
        let Some(ingest) = self.ingest() else { return };
        let s = ingest.stats();
        let n = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        m.add(
            "vigil_incidents_created_total",
            "counter",
            "Incidents created in the record store.",
            [(String::new(), n(&s.created))],
        );
        m.add(
            "vigil_incident_ingest_refused_total",
            "counter",
            "Incident updates refused by a full ingest queue (then retried blocking).",
            [(String::new(), n(&s.refused))],
        );
        m.add(
            "vigil_queue_depth",
            "gauge",
            "Batches or updates waiting between stages.",
            [(String::from("queue=\"incident_ingest\""), ingest.depth() as u64)],
        );
        if let Some((rss, peak)) = resident_memory() {
            m.gauge("vigil_process_resident_memory_bytes", "Resident set size of the process.", rss);
            m.gauge(
                "vigil_process_resident_memory_peak_bytes",
                "Largest resident set size of the process so far.",
                peak,
            );
        }
        m.latency_summary(
            "vigil_event_to_incident_seconds",
            "From receiving the event that completes an incident's first hit to the incident's creation in the \
             record store.",
            "",
            &s.latency(),
        );
    }
}

/// Writes the event search's series.
fn render_search_metrics(c: &search::SearchCounters, m: &mut Exposition) {
    let n = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    m.add(
        "vigil_searches_total",
        "counter",
        "Event searches (SQL, event pages, histograms, incident events) by how they ended.",
        [
            ("outcome=\"answered\"".to_owned(), n(&c.answered)),
            ("outcome=\"rejected\"".to_owned(), n(&c.rejected)),
            ("outcome=\"limited\"".to_owned(), n(&c.limited)),
            ("outcome=\"busy\"".to_owned(), n(&c.busy)),
            ("outcome=\"failed\"".to_owned(), n(&c.failed)),
        ],
    );
    m.gauge("vigil_searches_running", "Event searches running now.", n(&c.running));
    m.add(
        "vigil_search_rows_scanned_total",
        "counter",
        "Rows event searches read from Parquet files.",
        [(String::new(), n(&c.rows_scanned))],
    );
    m.add(
        "vigil_search_bytes_read_total",
        "counter",
        "Bytes event searches read from Parquet files.",
        [(String::new(), n(&c.bytes_read))],
    );
}

/// Writes the node registry's series, one set per node (from
/// [`Store::list_nodes`]): `vigil_node_up{node,role}` (1 when active, 0
/// otherwise), `vigil_node_state{node,role,state}` (1 for its current
/// state, 0 for the others, so a change shows as a change of value),
/// `vigil_node_last_seen_seconds{node,role}` (Unix time of its last
/// heartbeat; absent before the first) and `vigil_node_guaranteed_eps{node}`
/// (0 without a guarantee).
pub fn render_node_metrics(nodes: &[NodeInfo], m: &mut Exposition) {
    use collector::metrics::label;
    let labels = |n: &NodeInfo| format!("node=\"{}\",role=\"{}\"", label(n.name.as_str()), n.role.as_str());
    m.add(
        "vigil_node_up",
        "gauge",
        "1 when the node is active (heartbeats arrive and report no problems), else 0.",
        nodes.iter().map(|n| (labels(n), u64::from(n.state == NodeState::Active))),
    );
    m.add(
        "vigil_node_state",
        "gauge",
        "1 for the node's current state (unregistered, active, maintenance, alert), 0 for the others.",
        nodes.iter().flat_map(|n| {
            NodeState::ALL.map(|s| (format!("{},state=\"{}\"", labels(n), s.as_str()), u64::from(n.state == s)))
        }),
    );
    m.add(
        "vigil_node_last_seen_seconds",
        "gauge",
        "Unix time of the node's last heartbeat, by the supervisor's clock.",
        nodes.iter().filter_map(|n| {
            let secs = u64::try_from(n.last_seen_ms?.div_euclid(1000)).unwrap_or(0);
            Some((labels(n), secs))
        }),
    );
    m.add(
        "vigil_node_guaranteed_eps",
        "gauge",
        "The node's guaranteed EPS (0 without a guarantee).",
        nodes.iter().map(|n| (format!("node=\"{}\"", label(n.name.as_str())), n.guaranteed_eps.unwrap_or(0))),
    );
}

/// Resident and peak resident memory, bytes (Linux: /proc/self/status).
pub fn resident_memory() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib = |field: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(field))?;
        line[field.len()..].trim().trim_end_matches("kB").trim().parse::<u64>().ok().map(|k| k * 1024)
    };
    Some((kib("VmRSS:")?, kib("VmHWM:")?))
}

/// Follows the org tables: on a change made through this store (at once)
/// or by another process (polled), publishes the new table to every node
/// and to the allocator's quotas, then tells the store it is applied.
async fn publish_orgs(
    store: Arc<Store>,
    mut current: OrgSnapshot,
    downlink: Arc<dyn Downlink>,
    quotas: SharedQuotas,
    poll: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut changes = store.org_changes();
    let mut fingerprint = store.orgs_fingerprint().await.ok();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = changes.changed() => {}
            () = tokio::time::sleep(poll) => {
                let now = store.orgs_fingerprint().await.ok();
                if now == fingerprint {
                    continue;
                }
            }
        }
        let seen = *changes.borrow_and_update();
        fingerprint = store.orgs_fingerprint().await.ok();
        match store.org_snapshot(current.version + 1).await {
            Ok(fresh) if fresh.orgs != current.orgs => {
                *quotas.lock().unwrap_or_else(PoisonError::into_inner) = quotas_of(&fresh);
                downlink.orgs(&fresh);
                current = fresh;
            }
            Ok(_) => {}
            Err(e) => eprintln!("vigil: cannot reload orgs: {e}"),
        }
        store.orgs_applied(seen);
    }
}
