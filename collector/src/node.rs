//! The collector role, assembled: syslog listeners → intake (parse,
//! classify, org, EPS gate, event ids) → an [`EventSink`]; the node side of
//! the EPS loop (close an interval at every boundary, report it through a
//! [`ReportSink`]); and the two things the supervisor sends down, applied
//! at once: budgets ([`Collector::apply_budget`]) and the org table
//! ([`Collector::apply_orgs`]).
//!
//! The sinks are the transport: `vigil run` passes in-process channels, a
//! cluster collector passes NATS JetStream publishers. Nothing else
//! differs, so there is one implementation of each stage.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use parsers::framing::FramerConfig;
use parsers::{
    Budget, DeviceLimits, DeviceParsers, DeviceReport, Event, EventIds, EventTime, IntervalReport, NodeId, OrgId,
    OrgSnapshot, Parser,
};
use serde::Deserialize;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

use crate::clock::Clock;
use crate::devices::{DeviceConfig, DeviceTracker};
use crate::gate::Gate;
use crate::intake::Intake;
use crate::listen::{ListenerConfig, ListenerStats, Listeners, RawBatch, Transport};
use crate::metrics::{Exposition, label};
use crate::orgs::{OrgRoute, OrgTable, RangeConflict};
use crate::skew::SkewConfig;

/// `[syslog]`: the listeners.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SyslogConfig {
    /// Address for both UDP and TCP.
    pub addr: SocketAddr,
    /// Listen on UDP.
    pub udp: bool,
    /// Listen on TCP.
    pub tcp: bool,
    /// Open TCP connections at most.
    pub max_connections: usize,
    /// Seconds before a silent TCP connection is closed.
    pub idle_timeout_secs: u64,
    /// Longest message kept (longer ones are cut and flagged).
    pub max_message_bytes: usize,
    /// Open TCP connections from one source address at most.
    pub max_connections_per_source: usize,
    /// Bytes of unfinished lines held across all connections (beyond 4 KiB
    /// each); past it, a growing unfinished line is cut and flagged.
    pub max_partial_bytes: usize,
    /// At shutdown, connections silent this long are closed…
    pub drain_idle_ms: u64,
    /// …and all are closed this long after shutdown at most.
    pub drain_timeout_secs: u64,
    /// Events stamped this far ahead of their receive time count as clock
    /// skew (counted per org; one system event per source per 10 minutes).
    pub clock_skew_alert_secs: f64,
}

impl Default for SyslogConfig {
    fn default() -> SyslogConfig {
        SyslogConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 5514)),
            udp: true,
            tcp: true,
            max_connections: 10_000,
            idle_timeout_secs: 300,
            max_message_bytes: 64 * 1024,
            max_connections_per_source: 256,
            max_partial_bytes: 64 << 20,
            drain_idle_ms: 1_000,
            drain_timeout_secs: 10,
            clock_skew_alert_secs: 2.0,
        }
    }
}

impl SyslogConfig {
    /// Checks the values a file or flag may get wrong.
    pub fn validate(&self) -> Result<(), CollectorError> {
        if self.max_connections_per_source == 0 || self.max_message_bytes == 0 {
            return Err(CollectorError::Config(
                "syslog.max_connections_per_source and syslog.max_message_bytes must be positive".into(),
            ));
        }
        if !(0.0..=86_400.0).contains(&self.clock_skew_alert_secs) {
            return Err(CollectorError::Config("syslog.clock_skew_alert_secs must be 0-86400".into()));
        }
        Ok(())
    }
}

/// What can stop a collector from starting.
#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    /// A listener address could not be bound.
    #[error("cannot listen for syslog on {addr}: {source}")]
    Bind {
        /// `tcp://…`, `udp://…` or `tls://…`.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// A thread could not be started.
    #[error("cannot start the {0} thread: {1}")]
    Thread(&'static str, std::io::Error),
    /// The org table cannot be applied.
    #[error("org ranges not applied: {0}")]
    Orgs(#[from] RangeConflict),
    /// The collector's own org does not exist.
    #[error("orgs.collector_org: no org named {0:?}")]
    NoSuchOrg(String),
    /// The built-in device parsers failed to load.
    #[error("cannot load the built-in device parsers: {0}")]
    Devices(String),
    /// A setting is out of range.
    #[error("{0}")]
    Config(String),
    /// The cluster transport (NATS JetStream) failed.
    #[error("cluster: {0}")]
    Cluster(String),
}

/// The downstream transport of accepted events (collector → worker).
pub trait EventSink: Send + 'static {
    /// Hands a batch of accepted events on, waiting while the transport is
    /// full (that wait is the backpressure on TCP senders). An error means
    /// the transport is gone for good.
    fn send(&mut self, events: Vec<Event>) -> Result<(), SinkClosed>;
}

/// The transport behind a sink closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the event transport closed")]
pub struct SinkClosed;

impl EventSink for crossbeam_channel::Sender<Vec<Event>> {
    fn send(&mut self, events: Vec<Event>) -> Result<(), SinkClosed> {
        crossbeam_channel::Sender::send(self, events).map_err(|_| SinkClosed)
    }
}

/// The upstream transport of interval reports (collector → supervisor).
/// Losing one only makes the supervisor treat the node as silent for an
/// interval (SPEC §3: it falls back to its guarantee).
pub trait ReportSink: Send + Sync + 'static {
    /// Sends the report of an interval that ended.
    fn report(&self, report: &IntervalReport);
}

impl ReportSink for crossbeam_channel::Sender<IntervalReport> {
    fn report(&self, report: &IntervalReport) {
        let _ = self.send(report.clone());
    }
}

/// The upstream transport of device reports (collector → supervisor).
/// Losing one loses that period's counters of those devices, nothing else.
pub trait DeviceSink: Send + Sync + 'static {
    /// Sends the report of a period that ended.
    fn devices(&self, report: &DeviceReport);
}

impl DeviceSink for tokio::sync::mpsc::Sender<DeviceReport> {
    fn devices(&self, report: &DeviceReport) {
        // Bounded: a supervisor that cannot keep up loses reports, and
        // the collector never waits for it.
        let _ = self.try_send(report.clone());
    }
}

/// A TLS syslog listener to open (the caller builds the acceptor).
pub struct TlsListener {
    /// Where to listen.
    pub addr: SocketAddr,
    /// Certificate and key.
    pub acceptor: TlsAcceptor,
}

/// The org every event a collector receives belongs to (SPEC §4's
/// collector org), whatever its sender's address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CollectorOrg {
    /// By name (`orgs.collector_org`).
    Named(String),
    /// By id: the org the collector's credentials bind it to (`vigil node
    /// add --org`); the server lets it publish that org's events only.
    Bound(OrgId),
}

/// Everything a collector is started with.
pub struct CollectorSetup {
    /// The node's name (in events and reports).
    pub node: NodeId,
    /// The node's event-id slot ([`EventIds`]).
    pub slot: u16,
    /// Listener settings.
    pub syslog: SyslogConfig,
    /// TLS listener, if any.
    pub tls: Option<TlsListener>,
    /// The org this collector belongs to (SPEC §4).
    pub collector_org: Option<CollectorOrg>,
    /// Length of an EPS interval, seconds.
    pub interval_secs: u64,
    /// The device inventory.
    pub devices: DeviceConfig,
}

/// Cumulative per-org gate counts of the intervals that ended: received,
/// accepted, dropped over the org limit, over the node budget, disabled.
#[derive(Clone, Default)]
struct Totals {
    done: BTreeMap<OrgId, [u64; 5]>,
}

impl Totals {
    fn add(&mut self, report: &IntervalReport) {
        for o in &report.orgs {
            let t = self.done.entry(o.org).or_default();
            for (slot, v) in
                t.iter_mut().zip([o.received, o.accepted, o.dropped_org, o.dropped_node, o.rejected_disabled])
            {
                *slot += v;
            }
        }
    }
}

/// What runs until [`Collector::stop`].
struct Running {
    stop: watch::Sender<bool>,
    serving: Vec<tokio::task::JoinHandle<()>>,
    intake: std::thread::JoinHandle<()>,
    agent: std::thread::JoinHandle<()>,
    agent_stop: Arc<AtomicBool>,
    devices: Option<std::thread::JoinHandle<()>>,
    audit_tick: std::thread::JoinHandle<()>,
}

/// A running collector.
pub struct Collector {
    node: NodeId,
    interval_secs: u64,
    collector_org: Option<CollectorOrg>,
    intake: Arc<Intake>,
    gate: Arc<Gate>,
    listeners: Arc<ListenerStats>,
    totals: Arc<Mutex<Totals>>,
    names: Mutex<BTreeMap<OrgId, String>>,
    orgs_version: Mutex<u64>,
    raw_queue: mpsc::WeakSender<RawBatch>,
    bound: Vec<String>,
    running: Mutex<Option<Running>>,
}

impl Collector {
    /// Binds the listeners and starts the intake and the interval agent.
    /// Accepted events go to `events`; reports to `reports`. The node
    /// starts with `budget` and the org table `orgs`.
    pub async fn start(
        setup: CollectorSetup,
        clock: Arc<dyn Clock>,
        orgs: &OrgSnapshot,
        budget: Budget,
        mut events: impl EventSink,
        reports: impl ReportSink,
        device_reports: impl DeviceSink,
    ) -> Result<Collector, CollectorError> {
        setup.syslog.validate()?;
        let relays = setup.devices.validate().map_err(CollectorError::Config)?;
        let table = org_table(orgs, setup.collector_org.as_ref())?;
        let gate = Arc::new(Gate::new(setup.node.clone(), budget));
        let skew = SkewConfig {
            alert_after: Duration::from_secs_f64(setup.syslog.clock_skew_alert_secs),
            ..SkewConfig::default()
        };
        let devices = DeviceParsers::builtin().map_err(|e| CollectorError::Devices(e.to_string()))?;
        let families = devices.family_names().map(Into::into).collect();
        let mut intake = Intake::new(Parser::new(), Some(devices), table, gate.clone(), setup.node.as_str())
            .with_skew(skew)
            .with_event_ids(EventIds::new(setup.slot, clock.now()));
        if setup.devices.enabled {
            intake = intake.with_devices(DeviceTracker::new(
                setup.node.clone(),
                relays,
                setup.devices.max_per_org,
                families,
                clock.now().unix_millis(),
            ));
        }
        let intake = Arc::new(intake);
        // Short queues: under overload events wait in the senders' TCP
        // buffers, not here, so the event→incident latency stays low.
        let (raw_tx, mut raw_rx) = mpsc::channel(64);
        let (stop_tx, stop_rx) = watch::channel(false);
        let s = &setup.syslog;
        let framing = FramerConfig {
            max_frame_len: std::num::NonZeroUsize::new(s.max_message_bytes).unwrap_or(std::num::NonZeroUsize::MIN),
            ..FramerConfig::default()
        };
        let (max_connections, fd_note) = fit_to_descriptors(s.max_connections);
        if let Some(note) = fd_note {
            eprintln!("vigil: {note}");
        }
        let listener_config = ListenerConfig {
            max_connections,
            max_connections_per_source: s.max_connections_per_source,
            max_partial_bytes: s.max_partial_bytes,
            idle_timeout: Duration::from_secs(s.idle_timeout_secs.max(1)),
            drain_idle: Duration::from_millis(s.drain_idle_ms),
            drain_timeout: Duration::from_secs(s.drain_timeout_secs),
            framing,
            ..ListenerConfig::default()
        };
        let listeners = Listeners::new(listener_config, raw_tx.clone(), clock.clone(), stop_rx);
        let mut serving = Vec::new();
        let mut bound = Vec::new();
        let bind_error = |addr: String| move |source| CollectorError::Bind { addr, source };
        if s.tcp {
            let tcp = tokio::net::TcpListener::bind(s.addr).await.map_err(bind_error(format!("tcp://{}", s.addr)))?;
            bound.push(format!("tcp://{}", tcp.local_addr().map_err(bind_error(format!("tcp://{}", s.addr)))?));
            serving.push(tokio::spawn(listeners.clone().serve_tcp(tcp)));
        }
        if s.udp {
            let udp = tokio::net::UdpSocket::bind(s.addr).await.map_err(bind_error(format!("udp://{}", s.addr)))?;
            bound.push(format!("udp://{}", udp.local_addr().map_err(bind_error(format!("udp://{}", s.addr)))?));
            serving.push(tokio::spawn(listeners.clone().serve_udp(udp)));
        }
        if let Some(tls) = setup.tls {
            let at = format!("tls://{}", tls.addr);
            let listener = tokio::net::TcpListener::bind(tls.addr).await.map_err(bind_error(at.clone()))?;
            bound.push(format!("tls://{}", listener.local_addr().map_err(bind_error(at))?));
            serving.push(tokio::spawn(listeners.clone().serve_tls(listener, tls.acceptor)));
        }
        let listener_stats = listeners.stats().clone();
        drop(listeners);

        let intake_thread = {
            let intake = intake.clone();
            std::thread::Builder::new()
                .name("vigil-intake".into())
                .spawn(move || {
                    let mut out = Vec::new();
                    while let Some(batch) = raw_rx.blocking_recv() {
                        intake.process(batch, &mut out);
                        if !out.is_empty() && events.send(std::mem::take(&mut out)).is_err() {
                            return;
                        }
                    }
                    // The listeners are done: audit events still being
                    // joined go out with the last batch.
                    intake.finish(&mut out);
                    if !out.is_empty() {
                        let _ = events.send(out);
                    }
                })
                .map_err(|e| CollectorError::Thread("intake", e))?
        };
        let totals = Arc::new(Mutex::new(Totals::default()));
        let agent_stop = Arc::new(AtomicBool::new(false));
        let audit_tick = {
            let (intake, stop, clock, queue) = (intake.clone(), agent_stop.clone(), clock.clone(), raw_tx.downgrade());
            std::thread::Builder::new()
                .name("vigil-audit-tick".into())
                .spawn(move || audit_tick(&intake, clock.as_ref(), &stop, &queue))
                .map_err(|e| CollectorError::Thread("audit-tick", e))?
        };
        let agent = {
            let agent = NodeAgent { gate: gate.clone(), reports, interval_secs: setup.interval_secs.max(1) };
            let (totals, stop, clock) = (totals.clone(), agent_stop.clone(), clock.clone());
            std::thread::Builder::new()
                .name("vigil-interval".into())
                .spawn(move || {
                    agent.run(clock.as_ref(), &stop, |r| {
                        totals.lock().unwrap_or_else(PoisonError::into_inner).add(r);
                    });
                })
                .map_err(|e| CollectorError::Thread("interval", e))?
        };
        let devices = if setup.devices.enabled {
            let (intake, stop, clock) = (intake.clone(), agent_stop.clone(), clock.clone());
            let every = Duration::from_secs_f64(setup.devices.report_secs);
            Some(
                std::thread::Builder::new()
                    .name("vigil-devices".into())
                    .spawn(move || report_devices(&intake, clock.as_ref(), every, &stop, &device_reports))
                    .map_err(|e| CollectorError::Thread("devices", e))?,
            )
        } else {
            None
        };
        Ok(Collector {
            node: setup.node,
            interval_secs: setup.interval_secs.max(1),
            collector_org: setup.collector_org,
            intake,
            gate,
            listeners: listener_stats,
            totals,
            names: Mutex::new(names_of(orgs)),
            orgs_version: Mutex::new(orgs.version),
            // Weak: it must not keep the channel open at shutdown.
            raw_queue: raw_tx.downgrade(),
            bound,
            running: Mutex::new(Some(Running {
                stop: stop_tx,
                serving,
                intake: intake_thread,
                agent,
                agent_stop,
                devices,
                audit_tick,
            })),
        })
    }

    /// The addresses listened on (`tcp://…`, `udp://…`, `tls://…`).
    pub fn bound(&self) -> &[String] {
        &self.bound
    }

    /// The node's name.
    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// The node's gate.
    pub fn gate(&self) -> &Arc<Gate> {
        &self.gate
    }

    /// Installs the supervisor's budget for the running interval.
    pub fn apply_budget(&self, budget: Budget) {
        self.gate.set_budget(budget);
    }

    /// Installs a newer org table: assignment, the gate's org rules (the
    /// node's own budget kept) and the names metrics use. An older or
    /// equal version is ignored, so tables arriving out of order are safe.
    pub fn apply_orgs(&self, orgs: &OrgSnapshot) -> Result<(), CollectorError> {
        let mut version = self.orgs_version.lock().unwrap_or_else(PoisonError::into_inner);
        if orgs.version != 0 && orgs.version <= *version {
            return Ok(());
        }
        let table = org_table(orgs, self.collector_org.as_ref())?;
        self.intake.set_orgs(table);
        let current = self.gate.budget();
        self.gate.set_budget(Budget {
            interval: current.interval,
            node_events: current.node_events,
            orgs: orgs.org_budgets(self.interval_secs),
        });
        *self.names.lock().unwrap_or_else(PoisonError::into_inner) = names_of(orgs);
        *version = orgs.version;
        Ok(())
    }

    /// Installs the supervisor's view of the licence's device limit.
    pub fn apply_devices(&self, limits: &DeviceLimits) {
        if let Some(mut d) = self.intake.devices() {
            d.apply_limits(limits);
        }
    }

    /// Events accepted so far, in every interval.
    pub fn accepted(&self) -> u64 {
        self.per_org().values().map(|v| v[1]).sum()
    }

    /// Cumulative per-org counts including the running interval.
    fn per_org(&self) -> BTreeMap<OrgId, [u64; 5]> {
        let mut all = self.totals.lock().unwrap_or_else(PoisonError::into_inner).clone();
        all.add(&self.gate.snapshot());
        all.done
    }

    /// Stops the listeners (draining open connections), then the intake
    /// (which closes the event sink once the last batch is handed on) and
    /// the interval agent. Returns the events accepted in all.
    pub async fn stop(&self) -> u64 {
        let running = self.running.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(r) = running {
            let _ = r.stop.send(true);
            for s in r.serving {
                let _ = s.await;
            }
            let _ = tokio::task::spawn_blocking(move || r.intake.join()).await;
            r.agent_stop.store(true, Ordering::Release);
            let _ = tokio::task::spawn_blocking(move || r.agent.join()).await;
            let _ = tokio::task::spawn_blocking(move || r.audit_tick.join()).await;
            if let Some(devices) = r.devices {
                // It sends the last period's report as it ends.
                let _ = tokio::task::spawn_blocking(move || devices.join()).await;
            }
        }
        self.accepted()
    }

    /// Writes the collector's series.
    pub fn render_metrics(&self, m: &mut Exposition) {
        let nl = format!("node=\"{}\"", label(self.node.as_str()));
        let l = &self.listeners;
        let n = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        let one = |v: u64| [(nl.clone(), v)];
        let budget = self.gate.budget();
        let series: [(&'static str, &'static str, &'static str, u64); 12] = [
            (
                "vigil_allocation_eps",
                "gauge",
                "EPS allocated to the node for this interval.",
                budget.node_events / self.interval_secs,
            ),
            ("vigil_syslog_messages_total", "counter", "Messages received by the listeners.", n(&l.messages)),
            ("vigil_syslog_bytes_total", "counter", "Bytes received by the listeners.", n(&l.bytes)),
            (
                "vigil_syslog_udp_dropped_total",
                "counter",
                "UDP messages dropped because the pipeline was full.",
                n(&l.udp_dropped),
            ),
            ("vigil_syslog_truncated_total", "counter", "Messages cut at the maximum length.", n(&l.truncated)),
            ("vigil_tcp_connections_open", "gauge", "Open TCP connections.", n(&l.connections_open)),
            (
                "vigil_tcp_connections_accepted_total",
                "counter",
                "TCP and TLS connections accepted.",
                n(&l.connections_accepted),
            ),
            (
                "vigil_tcp_accept_errors_total",
                "counter",
                "Failed accepts (e.g. out of file descriptors); the listener backs off.",
                n(&l.accept_errors),
            ),
            (
                "vigil_syslog_framing_errors_total",
                "counter",
                "Connections closed because their octet counting broke (RFC 5425).",
                n(&l.framing_errors),
            ),
            (
                "vigil_syslog_partial_bytes",
                "gauge",
                "Bytes of unfinished messages held beyond the per-connection allowance.",
                l.partial_bytes.load(Ordering::Relaxed) as u64,
            ),
            (
                "vigil_tls_handshake_failures_total",
                "counter",
                "TLS connections closed because the handshake failed or took too long.",
                n(&l.tls_handshake_failures),
            ),
            (
                "vigil_tcp_connections_idle_total",
                "counter",
                "TCP connections closed for being idle.",
                n(&l.connections_idle),
            ),
        ];
        for (name, kind, help, value) in series {
            m.add(name, kind, help, one(value));
        }
        m.add(
            "vigil_tcp_connections_refused_total",
            "counter",
            "TCP connections reset at once, by reason: the connection limit, or the limit per source address.",
            [
                (format!("{nl},reason=\"limit\""), n(&l.connections_refused)),
                (format!("{nl},reason=\"per_source\""), n(&l.connections_refused_per_source)),
            ],
        );
        m.add(
            "vigil_syslog_cut_total",
            "counter",
            "Unfinished messages delivered truncated, by reason: the partial-message memory budget, or the connection closing (shutdown, idle).",
            [
                (format!("{nl},reason=\"partial_budget\""), n(&l.partial_cut)),
                (format!("{nl},reason=\"close\""), n(&l.cut_at_close)),
            ],
        );
        let (pending, joined) = self.intake.audit_join().unwrap_or_default();
        m.add(
            "vigil_audit_events_joined_total",
            "counter",
            "Linux audit events joined from their records (audit.event), by how they were completed: at EOE or the window's end, or early to make room.",
            [
                (format!("{nl},how=\"complete\""), joined.joined.saturating_sub(joined.evicted)),
                (format!("{nl},how=\"early\""), joined.evicted),
            ],
        );
        m.add("vigil_audit_join_pending", "gauge", "Audit events being joined.", one(pending as u64));
        m.add(
            "vigil_audit_records_left_out_total",
            "counter",
            "Audit records past the 64 one joined event takes (still events of their own).",
            one(joined.records_left_out),
        );
        let totals = self.per_org();
        let names = self.names.lock().unwrap_or_else(PoisonError::into_inner).clone();
        m.add("vigil_orgs", "gauge", "Orgs in the collector's assignment table.", one(names.len() as u64));
        let org_labels = |org: &OrgId| {
            let name = label(names.get(org).map_or("", String::as_str));
            format!("{nl},org_id=\"{}\",org=\"{name}\"", org.0)
        };
        let per_org = |i: usize, reason: Option<&str>| -> Vec<(String, u64)> {
            totals
                .iter()
                .map(|(org, t)| {
                    let reason = reason.map(|r| format!(",reason=\"{r}\"")).unwrap_or_default();
                    (format!("{}{reason}", org_labels(org)), t[i])
                })
                .collect()
        };
        m.add(
            "vigil_events_received_total",
            "counter",
            "Events received per org (a disabled org's excluded).",
            per_org(0, None),
        );
        m.add("vigil_events_accepted_total", "counter", "Events accepted per org.", per_org(1, None));
        let skewed = self.intake.skewed_events();
        m.add(
            "vigil_events_clock_skew_total",
            "counter",
            "Accepted events stamped ahead of their receive time by more than syslog.clock_skew_alert_secs, per org (correlated at their receive time).",
            totals.keys().map(|org| (org_labels(org), skewed.get(org).copied().unwrap_or(0))).collect::<Vec<_>>(),
        );
        let (devices, limit, within) =
            self.intake.devices().map(|d| (d.counts(), d.limit(), d.within())).unwrap_or_default();
        m.add(
            "vigil_device_limit_applied",
            "gauge",
            "The licence's device limit as this node applies it (0: unlimited, or not received yet).",
            one(limit.unwrap_or(0)),
        );
        m.add(
            "vigil_device_limit_within",
            "gauge",
            "Devices the supervisor last said are within the licence's device limit.",
            one(within),
        );
        let by_org = |f: fn(&crate::devices::OrgDeviceCounts) -> u64| -> Vec<(String, u64)> {
            devices.iter().map(|(org, c)| (org_labels(org), f(c))).collect()
        };
        let mut dropped = per_org(2, Some("org_limit"));
        dropped.extend(per_org(3, Some("licence")));
        dropped.extend(per_org(4, Some("org_disabled")));
        dropped
            .extend(devices.iter().map(|(org, c)| (format!("{},reason=\"device_limit\"", org_labels(org)), c.dropped)));
        m.add("vigil_events_dropped_total", "counter", "Events dropped per org and reason.", dropped);
        m.add("vigil_devices_tracked", "gauge", "Devices this node tracks, per org.", by_org(|c| c.tracked));
        m.add(
            "vigil_devices_overflow_total",
            "counter",
            "New devices not tracked because their org reached devices.max_per_org (their events still flow).",
            by_org(|c| c.overflow),
        );
        m.add(
            "vigil_device_limit_accepted_total",
            "counter",
            "Events accepted from devices beyond the licence's device limit (policy alert).",
            by_org(|c| c.beyond_accepted),
        );
        let raw = self.raw_queue.upgrade().map_or(0, |q| q.max_capacity() - q.capacity());
        m.add(
            "vigil_queue_depth",
            "gauge",
            "Batches or updates waiting between stages.",
            [(format!("{nl},queue=\"intake\""), raw as u64)],
        );
    }
}

/// The node side of the EPS loop: at every interval boundary, start the
/// next interval with the last budget and report the one that ended.
pub struct NodeAgent<R> {
    gate: Arc<Gate>,
    reports: R,
    interval_secs: u64,
}

impl<R: ReportSink> NodeAgent<R> {
    /// An agent closing `gate`'s intervals of `interval_secs` and sending
    /// the reports to `reports`.
    pub fn new(gate: Arc<Gate>, reports: R, interval_secs: u64) -> NodeAgent<R> {
        NodeAgent { gate, reports, interval_secs: interval_secs.max(1) }
    }

    /// Runs until `stop`: at each boundary, begins the next interval with
    /// the last budget, hands the report of the one that ended to `ended`
    /// and then to the report sink.
    pub fn run(&self, clock: &dyn Clock, stop: &AtomicBool, ended: impl FnMut(&IntervalReport)) {
        let first = u64::try_from(clock.now().unix_secs()).unwrap_or(0) / self.interval_secs + 1;
        self.run_from(first, clock, stop, ended);
    }

    /// Like [`NodeAgent::run`], starting at the boundary of interval `k`.
    pub fn run_from(&self, mut k: u64, clock: &dyn Clock, stop: &AtomicBool, mut ended: impl FnMut(&IntervalReport)) {
        loop {
            let boundary = EventTime::from_unix(i64::try_from(k * self.interval_secs).unwrap_or(i64::MAX), 0, 0);
            if !sleep_until_or_stop(clock, boundary, stop) {
                return;
            }
            let report = self.gate.begin_interval(k, None);
            ended(&report);
            self.reports.report(&report);
            k += 1;
        }
    }
}

/// Sleeps on `clock` until `deadline` in steps of at most a quarter
/// second, so a stop request is seen soon; false if stopped first.
pub fn sleep_until_or_stop(clock: &dyn Clock, deadline: EventTime, stop: &AtomicBool) -> bool {
    const STEP_NANOS: i128 = 250_000_000;
    loop {
        if stop.load(Ordering::Acquire) {
            return false;
        }
        let now = clock.now().unix_nanos();
        if now >= deadline.unix_nanos() {
            return true;
        }
        let step = deadline.unix_nanos().min(now + STEP_NANOS);
        clock.sleep_until(EventTime::from_unix_nanos(step));
    }
}

/// While audit records are being joined, hands the intake an empty batch
/// every half second of `clock` time, so an audit event whose window ended
/// is completed even when no more lines come.
fn audit_tick(intake: &Intake, clock: &dyn Clock, stop: &AtomicBool, queue: &mpsc::WeakSender<RawBatch>) {
    const EVERY_NANOS: i128 = 500_000_000;
    loop {
        let next = EventTime::from_unix_nanos(clock.now().unix_nanos() + EVERY_NANOS);
        if !sleep_until_or_stop(clock, next, stop) {
            return;
        }
        if intake.audit_join().is_none_or(|(pending, _)| pending == 0) {
            continue;
        }
        let Some(queue) = queue.upgrade() else { return };
        // A full queue means batches are flowing: they complete it too.
        let _ = queue.try_send(RawBatch { transport: Transport::Tcp, received_at: clock.now(), items: Vec::new() });
    }
}

/// Sends the device inventory's report every `every` until `stop`, and a
/// last one then.
fn report_devices(intake: &Intake, clock: &dyn Clock, every: Duration, stop: &AtomicBool, sink: &dyn DeviceSink) {
    let step = i128::try_from(every.as_nanos()).unwrap_or(i128::MAX).max(1);
    let mut next = clock.now().unix_nanos() + step;
    loop {
        let running = sleep_until_or_stop(clock, EventTime::from_unix_nanos(next), stop);
        let report = intake.devices().map(|mut d| d.report(clock.now().unix_millis()));
        if let Some(report) = report.filter(|r| !r.devices.is_empty() || !r.overflow.is_empty()) {
            sink.devices(&report);
        }
        if !running {
            return;
        }
        next += step;
    }
}

/// Org names by id, for metric labels.
fn names_of(orgs: &OrgSnapshot) -> BTreeMap<OrgId, String> {
    orgs.orgs.iter().map(|o| (o.id, o.name.clone())).collect()
}

/// The assignment table of an org snapshot (Super/Global, being virtual,
/// is never assigned).
pub fn org_table(orgs: &OrgSnapshot, collector_org: Option<&CollectorOrg>) -> Result<OrgTable, CollectorError> {
    let routes = orgs
        .orgs
        .iter()
        .filter(|o| o.id != OrgId::SUPER_GLOBAL)
        .map(|o| OrgRoute {
            id: o.id,
            name: o.name.as_str().into(),
            ranges: o.ranges.iter().filter_map(|r| r.parse().ok()).collect(),
        })
        .collect();
    let collector =
        match collector_org {
            Some(CollectorOrg::Named(name)) => Some(
                orgs.orgs
                    .iter()
                    .find(|o| o.name.eq_ignore_ascii_case(name))
                    .map(|o| o.id)
                    .ok_or_else(|| CollectorError::NoSuchOrg(name.to_owned()))?,
            ),
            Some(CollectorOrg::Bound(id)) => {
                Some(orgs.orgs.iter().find(|o| o.id == *id).map(|o| o.id).ok_or_else(|| {
                    CollectorError::NoSuchOrg(format!("#{} (the org of this node's credentials)", id.0))
                })?)
            }
            None => None,
        };
    Ok(OrgTable::new(routes, collector)?)
}

/// The syslog connection limit that fits the process's file descriptors:
/// the soft limit is raised as far as the hard limit allows, and what is
/// left after a reserve (API, files, database) bounds the connections, so
/// accept never runs out of descriptors and the API keeps answering.
fn fit_to_descriptors(wanted: usize) -> (usize, Option<String>) {
    const RESERVED: u64 = 128;
    let Ok(limit) = crate::listen::raise_descriptor_limit() else { return (wanted, None) };
    let room = usize::try_from(limit.saturating_sub(RESERVED)).unwrap_or(usize::MAX).max(1);
    if wanted <= room {
        return (wanted, None);
    }
    let note = format!(
        "syslog.max_connections lowered from {wanted} to {room}: the process may open {limit} files (ulimit -n), {RESERVED} of them kept for the API, storage and the record store"
    );
    (room, Some(note))
}

#[cfg(test)]
mod tests {
    use super::*;
    use parsers::{ManualClock, OrgEntry};

    fn snapshot(version: u64, ranges: &[&str]) -> OrgSnapshot {
        OrgSnapshot {
            version,
            orgs: vec![
                OrgEntry {
                    id: OrgId::SUPER_LOCAL,
                    name: "Super/Local".into(),
                    ranges: vec![],
                    enabled: true,
                    eps_limit: None,
                },
                OrgEntry {
                    id: OrgId(7),
                    name: "Acme".into(),
                    ranges: ranges.iter().map(|r| r.to_string()).collect(),
                    enabled: true,
                    eps_limit: Some(10),
                },
            ],
        }
    }

    #[test]
    fn the_agent_reports_each_interval_at_its_boundary_and_stops_promptly() {
        let clock = ManualClock::new(EventTime::from_unix(1_005, 0, 0));
        let gate = Arc::new(Gate::new(NodeId::new("a"), Budget::node_only(100, 500)));
        let (tx, rx) = crossbeam_channel::unbounded();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (gate, clock, stop) = (gate.clone(), clock.clone(), stop.clone());
            std::thread::spawn(move || NodeAgent::new(gate, tx, 10).run_from(101, &clock, &stop, |_| {}))
        };
        gate.admit(OrgId(1), 3);
        clock.set(EventTime::from_unix(1_010, 0, 0));
        let report = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!((report.interval, report.accepted), (100, 3));
        stop.store(true, Ordering::Release);
        clock.advance(1);
        thread.join().unwrap();
    }

    #[test]
    fn org_ranges_assign_and_a_missing_collector_org_is_an_error() {
        let nope = CollectorOrg::Named("Nope".into());
        assert!(matches!(org_table(&snapshot(1, &[]), Some(&nope)), Err(CollectorError::NoSuchOrg(_))));
        let missing = CollectorOrg::Bound(OrgId(99));
        assert!(matches!(org_table(&snapshot(1, &[]), Some(&missing)), Err(CollectorError::NoSuchOrg(_))));
        let table = org_table(&snapshot(1, &["10.1.0.0/16"]), None).unwrap();
        let ip = "10.1.2.3".parse().unwrap();
        assert_eq!(table.assign(ip, None).id, OrgId(7));
        assert_eq!(snapshot(1, &[]).org_budgets(180)[1].events, Some(1_800));
    }
}
