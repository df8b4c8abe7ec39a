//! `vigil run`: every role in one process (SPEC §1, the embedded default).
//!
//! syslog (UDP + TCP) → listeners → intake thread (parse, classify, org,
//! EPS gate) → worker thread (ids, Parquet, rule engine) → incident ingest
//! queue → record store ← incident API and `/metrics`. Channels between the
//! stages are bounded, so a slow stage pushes back on TCP senders and makes
//! UDP count drops. SIGTERM or Ctrl-C stops the listeners, lets every stage
//! drain, writes every accepted event to Parquet and every incident to the
//! store, then exits.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use collector::gate::{Budget, Gate, IntervalReport, NodeId, OrgBudget};
use collector::intake::Intake;
use collector::listen::{ListenerConfig, ListenerStats, Listeners};
use collector::orgs::{OrgRoute, OrgTable};
use collector::skew::SkewConfig;
use collector::{Clock, SystemClock};
use parsers::framing::FramerConfig;
use parsers::{DeviceParsers, OrgId, Parser};
use rules::{Engine, EngineConfig};
use serde::Deserialize;
use supervisor::allocation::{AllocatorConfig, AllocatorState, MILLI, OrgQuota, allocate};
use supervisor::licence::{self, LicenceStatus};
use supervisor::store::{IncidentUpdate, Ingest, IngestConfig, Org, Principal, Store, StoreConfig};
use worker::{Detection, EventWriter, EventWriterConfig, Worker, WorkerStats};

/// Length of an EPS interval (SPEC §3).
const INTERVAL_SECS: u64 = 180;

/// Arguments of `vigil run`; flags override the config file.
#[derive(Args)]
pub struct RunArgs {
    /// A TOML config file (`vigil config example` prints one).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory: record store, Parquet event files.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Syslog address for UDP and TCP (port 0: any free port, printed).
    #[arg(long, value_name = "HOST:PORT")]
    syslog_addr: Option<SocketAddr>,
    /// TLS syslog address (RFC 5425; port 0: any free port, printed). Uses
    /// tls.cert/tls.key from the config, or a self-signed certificate made
    /// in DATA_DIR/tls/.
    #[arg(long, value_name = "HOST:PORT")]
    tls_addr: Option<SocketAddr>,
    /// HTTP API address (port 0: any free port, printed).
    #[arg(long, value_name = "HOST:PORT")]
    api_addr: Option<SocketAddr>,
    /// Prometheus /metrics address, for operators only: metrics name every
    /// tenant (port 0: any free port, printed).
    #[arg(long, value_name = "HOST:PORT")]
    metrics_addr: Option<SocketAddr>,
    /// Licence file (default: the unlicensed allowance).
    #[arg(long, alias = "licence", value_name = "FILE")]
    license: Option<PathBuf>,
    /// Record store in PostgreSQL instead of SQLite in the data directory.
    #[arg(long, value_name = "URL", env = "VIGIL_DATABASE")]
    database: Option<String>,
}

/// The config file. Every field has a default; `vigil run` needs none.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// Data directory.
    pub data_dir: PathBuf,
    /// PostgreSQL URL for the record store (default: SQLite in data_dir).
    pub database: Option<String>,
    /// Licence file.
    pub license: Option<PathBuf>,
    /// This node's name (in events and file names).
    pub node: String,
    /// Syslog listeners.
    pub syslog: SyslogConfig,
    /// The TLS syslog listener.
    pub tls: TlsConfig,
    /// The HTTP API.
    pub api: ApiConfig,
    /// Prometheus metrics.
    pub metrics: MetricsConfig,
    /// Event storage.
    pub storage: StorageConfig,
    /// Correlation.
    pub rules: RulesConfig,
    /// Org assignment.
    pub orgs: OrgsConfig,
}

/// `[syslog]`.
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

/// `[tls]`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Address of the TLS listener (none: no TLS listener).
    pub addr: Option<SocketAddr>,
    /// PEM certificate chain (default: self-signed, made in data_dir/tls/).
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
    /// More names or addresses for the self-signed certificate.
    pub names: Vec<String>,
}

/// `[api]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Address of the API.
    pub addr: SocketAddr,
}

/// `[metrics]`: a listener of its own, since metrics name every tenant and
/// the API promises a tenant that nothing reveals another one exists.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address of /metrics (loopback by default).
    pub addr: SocketAddr,
    /// A bearer token scrapers must present (none: the listener's address
    /// is the only protection; keep it on loopback or a private network).
    pub token: Option<Secret>,
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
    fn matches(&self, offered: &[u8]) -> bool {
        let ours = self.0.as_bytes();
        ours.len() == offered.len() && ours.iter().zip(offered).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

/// `[storage]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Milliseconds between writes of buffered events: the most a kill -9 can lose.
    pub flush_interval_ms: u64,
    /// Events per Parquet file at most.
    pub roll_rows: usize,
    /// Megabytes of events on their way to Parquet: columns being filled
    /// are sealed at half of it, and at most the other half wait for the disk.
    pub max_buffer_mb: usize,
}

/// `[rules]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// Run the built-in pack.
    pub builtin: bool,
    /// More rule files or directories.
    pub paths: Vec<PathBuf>,
    /// Seconds an event may arrive late and still be evaluated in order.
    pub lateness_secs: f64,
    /// Megabytes the records waiting out the lateness may hold; past it
    /// the oldest are released early (the lateness shrinks, counted).
    pub max_buffer_mb: usize,
    /// Window keys (rule, pattern, group value) held at most; past it the
    /// org with the most loses its stalest (counted).
    pub max_keys: usize,
}

/// `[orgs]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OrgsConfig {
    /// Seconds between reloads of orgs from the store.
    pub refresh_secs: f64,
    /// The org this collector belongs to (all it receives is that org's).
    pub collector_org: Option<String>,
}

impl Default for RunConfig {
    fn default() -> RunConfig {
        RunConfig {
            data_dir: "vigil-data".into(),
            database: None,
            license: None,
            node: "node-1".into(),
            syslog: SyslogConfig::default(),
            tls: TlsConfig::default(),
            api: ApiConfig::default(),
            metrics: MetricsConfig::default(),
            storage: StorageConfig::default(),
            rules: RulesConfig::default(),
            orgs: OrgsConfig::default(),
        }
    }
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

impl Default for ApiConfig {
    fn default() -> ApiConfig {
        ApiConfig { addr: SocketAddr::from(([127, 0, 0, 1], 8080)) }
    }
}

impl Default for MetricsConfig {
    fn default() -> MetricsConfig {
        MetricsConfig { addr: SocketAddr::from(([127, 0, 0, 1], 9464)), token: None }
    }
}

impl Default for StorageConfig {
    fn default() -> StorageConfig {
        StorageConfig { flush_interval_ms: 1_000, roll_rows: 256 * 1024, max_buffer_mb: 128 }
    }
}

impl Default for RulesConfig {
    fn default() -> RulesConfig {
        RulesConfig { builtin: true, paths: Vec::new(), lateness_secs: 10.0, max_buffer_mb: 256, max_keys: 500_000 }
    }
}

impl Default for OrgsConfig {
    fn default() -> OrgsConfig {
        OrgsConfig { refresh_secs: 2.0, collector_org: None }
    }
}

/// `vigil config example`: every setting with its default and meaning.
pub const EXAMPLE: &str = r#"# vigil run --config FILE. Every setting is optional; shown with its default.

data_dir = "vigil-data"          # record store (vigil.db) and Parquet files (events/)
# database = "postgres://vigil:secret@127.0.0.1/vigil"   # record store in PostgreSQL instead
# license = "/etc/vigil/licence.toml"                    # default: the unlicensed 500 EPS allowance
node = "node-1"                  # this node's name, in events and file names

[syslog]
addr = "127.0.0.1:5514"          # UDP and TCP; use 0.0.0.0:514 to receive from the network
udp = true
tcp = true
max_connections = 10000          # more TCP connections are reset at once (lowered to fit `ulimit -n`)
max_connections_per_source = 256 # so one host cannot hold every slot
idle_timeout_secs = 300          # silent TCP connections are closed after this (a line in progress is cut)
max_message_bytes = 65536        # longer messages are cut and flagged truncated
max_partial_bytes = 67108864     # unfinished lines held across connections (beyond 4 KiB each); then cut and flagged
drain_idle_ms = 1000             # at shutdown, connections silent this long are closed...
drain_timeout_secs = 10          # ...and every connection this long after shutdown at most
clock_skew_alert_secs = 2.0      # events stamped this far ahead of their receive time are clock skew

[tls]                            # syslog over TLS (RFC 5425: octet counting in a TLS session)
# addr = "127.0.0.1:6514"        # off unless set here or with --tls-addr
# cert = "/etc/vigil/syslog.crt" # PEM chain; default: self-signed, made once as data_dir/tls/syslog-cert.pem
# key = "/etc/vigil/syslog.key"  # PEM private key of cert
names = []                       # extra names/addresses for the self-signed certificate (localhost, 127.0.0.1, ::1 always)

[api]
addr = "127.0.0.1:8080"          # incident API (/api/v1)

[metrics]                        # Prometheus /metrics: names every tenant, so operators only
addr = "127.0.0.1:9464"          # keep it on loopback or a private network
# token = "a long random string" # then scrapers must send Authorization: Bearer <token>

[storage]
flush_interval_ms = 1000         # buffered events are written this often: the most kill -9 can lose
roll_rows = 262144               # events per Parquet file at most
max_buffer_mb = 128              # memory for events on their way to Parquet: half being filled, half waiting for the disk

[rules]
builtin = true                   # the built-in pack (rules/packs)
paths = []                       # more rule files or directories
lateness_secs = 10.0             # how late an event may arrive and still be evaluated in order
max_buffer_mb = 256              # memory for events waiting out the lateness; past it the oldest are released early
max_keys = 500000                # window keys (rule, pattern, group value); past it the stalest of the largest org go

[orgs]
refresh_secs = 2.0               # orgs, IP ranges, limits and enabled flags are reloaded this often
# collector_org = "Acme"         # everything this collector receives belongs to one org
"#;

fn load_config(args: &RunArgs) -> Result<RunConfig> {
    let mut config = match &args.config {
        Some(path) => {
            let text = super::rules::read_text(path)?;
            toml::from_str(&text).with_context(|| format!("invalid config {}", path.display()))?
        }
        None => RunConfig::default(),
    };
    if let Some(d) = &args.data_dir {
        config.data_dir = d.clone();
    }
    if let Some(a) = args.syslog_addr {
        config.syslog.addr = a;
    }
    if let Some(a) = args.api_addr {
        config.api.addr = a;
    }
    if let Some(a) = args.metrics_addr {
        config.metrics.addr = a;
    }
    if let Some(a) = args.tls_addr {
        config.tls.addr = Some(a);
    }
    if let Some(l) = &args.license {
        config.license = Some(l.clone());
    }
    if let Some(d) = &args.database {
        config.database = Some(d.clone());
    }
    if config.storage.flush_interval_ms == 0 || config.storage.roll_rows == 0 {
        bail!("storage.flush_interval_ms and storage.roll_rows must be positive");
    }
    if !(0.0..=3600.0).contains(&config.rules.lateness_secs) || !(0.1..=3600.0).contains(&config.orgs.refresh_secs) {
        bail!("rules.lateness_secs must be 0-3600 and orgs.refresh_secs 0.1-3600");
    }
    if config.rules.max_buffer_mb == 0
        || config.rules.max_keys == 0
        || config.storage.max_buffer_mb == 0
        || config.syslog.max_connections_per_source == 0
    {
        bail!(
            "rules.max_buffer_mb, rules.max_keys, storage.max_buffer_mb and syslog.max_connections_per_source must be positive"
        );
    }
    if !(0.0..=86_400.0).contains(&config.syslog.clock_skew_alert_secs) {
        bail!("syslog.clock_skew_alert_secs must be 0-86400");
    }
    if config.metrics.token.as_ref().is_some_and(|t| t.0.len() < 16) {
        bail!("metrics.token must be at least 16 characters");
    }
    Ok(config)
}

/// Cumulative per-org gate counts of the intervals that ended.
#[derive(Clone, Default)]
struct Totals {
    done: BTreeMap<OrgId, [u64; 5]>,
}

impl Totals {
    /// Adds an interval's counts (received, accepted, dropped over the org
    /// limit, over the licence, disabled).
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

    /// These totals plus the running interval's counts.
    fn with_running(totals: &Mutex<Totals>, gate: &Gate) -> Totals {
        let mut all = totals.lock().unwrap_or_else(PoisonError::into_inner).clone();
        all.add(&gate.snapshot());
        all
    }
}

/// Org names by id, for metric labels.
fn names_of(orgs: &[Org]) -> BTreeMap<OrgId, String> {
    orgs.iter().map(|o| (org_id(o.id), o.name.clone())).collect()
}

/// The store's org id as the pipeline's.
fn org_id(id: i64) -> OrgId {
    OrgId(u32::try_from(id).unwrap_or(u32::MAX))
}

/// What `/metrics` reads.
struct Metrics {
    node: String,
    /// Unused-EPS pool and the burst granted, EPS.
    pool: Arc<Mutex<(u64, u64)>>,
    licence_eps: u64,
    gate: Arc<Gate>,
    totals: Arc<Mutex<Totals>>,
    names: Arc<Mutex<BTreeMap<OrgId, String>>>,
    listeners: Arc<ListenerStats>,
    intake: Arc<Intake>,
    worker: Arc<WorkerStats>,
    ingest: Ingest,
    raw_queue: tokio::sync::mpsc::WeakSender<collector::listen::RawBatch>,
    event_queue: crossbeam_channel::Receiver<Vec<parsers::Event>>,
}

fn label(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Metrics {
    fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        let node = label(&self.node);
        let mut metric = |name: &str, kind: &str, help: &str, samples: Vec<(String, u64)>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in samples {
                if labels.is_empty() {
                    let _ = writeln!(out, "{name} {v}");
                } else {
                    let _ = writeln!(out, "{name}{{{labels}}} {v}");
                }
            }
        };
        let l = &self.listeners;
        let n = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        let nl = format!("node=\"{node}\"");
        metric("vigil_licence_eps", "gauge", "Licensed EPS.", vec![(String::new(), self.licence_eps)]);
        let budget = self.gate.budget();
        metric(
            "vigil_allocation_eps",
            "gauge",
            "EPS allocated to the node for this interval.",
            vec![(nl.clone(), budget.node_events / INTERVAL_SECS)],
        );
        let (pool, burst) = *self.pool.lock().unwrap_or_else(PoisonError::into_inner);
        metric(
            "vigil_unused_pool_eps",
            "gauge",
            "Unused-EPS pool: licensed EPS left unused, available for bursts.",
            vec![(String::new(), pool)],
        );
        metric(
            "vigil_burst_eps",
            "gauge",
            "EPS granted from the pool above the allocation for this interval.",
            vec![(nl.clone(), burst)],
        );
        metric(
            "vigil_syslog_messages_total",
            "counter",
            "Messages received by the listeners.",
            vec![(nl.clone(), n(&l.messages))],
        );
        metric(
            "vigil_syslog_bytes_total",
            "counter",
            "Bytes received by the listeners.",
            vec![(nl.clone(), n(&l.bytes))],
        );
        metric(
            "vigil_syslog_udp_dropped_total",
            "counter",
            "UDP messages dropped because the pipeline was full.",
            vec![(nl.clone(), n(&l.udp_dropped))],
        );
        metric(
            "vigil_syslog_truncated_total",
            "counter",
            "Messages cut at the maximum length.",
            vec![(nl.clone(), n(&l.truncated))],
        );
        metric(
            "vigil_tcp_connections_open",
            "gauge",
            "Open TCP connections.",
            vec![(nl.clone(), n(&l.connections_open))],
        );
        metric(
            "vigil_tcp_connections_accepted_total",
            "counter",
            "TCP and TLS connections accepted.",
            vec![(nl.clone(), n(&l.connections_accepted))],
        );
        metric(
            "vigil_tcp_connections_refused_total",
            "counter",
            "TCP connections reset at once, by reason: the connection limit, or the limit per source address.",
            vec![
                (format!("{nl},reason=\"limit\""), n(&l.connections_refused)),
                (format!("{nl},reason=\"per_source\""), n(&l.connections_refused_per_source)),
            ],
        );
        metric(
            "vigil_tcp_accept_errors_total",
            "counter",
            "Failed accepts (e.g. out of file descriptors); the listener backs off.",
            vec![(nl.clone(), n(&l.accept_errors))],
        );
        metric(
            "vigil_syslog_framing_errors_total",
            "counter",
            "Connections closed because their octet counting broke (RFC 5425).",
            vec![(nl.clone(), n(&l.framing_errors))],
        );
        metric(
            "vigil_syslog_cut_total",
            "counter",
            "Unfinished messages delivered truncated, by reason: the partial-message memory budget, or the connection closing (shutdown, idle).",
            vec![
                (format!("{nl},reason=\"partial_budget\""), n(&l.partial_cut)),
                (format!("{nl},reason=\"close\""), n(&l.cut_at_close)),
            ],
        );
        metric(
            "vigil_syslog_partial_bytes",
            "gauge",
            "Bytes of unfinished messages held beyond the per-connection allowance.",
            vec![(nl.clone(), l.partial_bytes.load(Ordering::Relaxed) as u64)],
        );
        metric(
            "vigil_tls_handshake_failures_total",
            "counter",
            "TLS connections closed because the handshake failed or took too long.",
            vec![(nl.clone(), n(&l.tls_handshake_failures))],
        );
        metric(
            "vigil_tcp_connections_idle_total",
            "counter",
            "TCP connections closed for being idle.",
            vec![(nl.clone(), n(&l.connections_idle))],
        );
        let totals = Totals::with_running(&self.totals, &self.gate).done;
        let names = self.names.lock().unwrap_or_else(PoisonError::into_inner).clone();
        metric(
            "vigil_orgs",
            "gauge",
            "Orgs in the collector's assignment table.",
            vec![(nl.clone(), names.len() as u64)],
        );
        let per_org = |i: usize, reason: Option<&str>| -> Vec<(String, u64)> {
            totals
                .iter()
                .map(|(org, t)| {
                    let name = label(names.get(org).map_or("", String::as_str));
                    let reason = reason.map(|r| format!(",reason=\"{r}\"")).unwrap_or_default();
                    (format!("{nl},org_id=\"{}\",org=\"{name}\"{reason}", org.0), t[i])
                })
                .collect()
        };
        metric(
            "vigil_events_received_total",
            "counter",
            "Events received per org (a disabled org's excluded).",
            per_org(0, None),
        );
        metric("vigil_events_accepted_total", "counter", "Events accepted per org.", per_org(1, None));
        let skewed = self.intake.skewed_events();
        metric(
            "vigil_events_clock_skew_total",
            "counter",
            "Accepted events stamped ahead of their receive time by more than syslog.clock_skew_alert_secs, per org (correlated at their receive time).",
            totals
                .keys()
                .map(|org| {
                    let name = label(names.get(org).map_or("", String::as_str));
                    (format!("{nl},org_id=\"{}\",org=\"{name}\"", org.0), skewed.get(org).copied().unwrap_or(0))
                })
                .collect(),
        );
        let mut dropped = per_org(2, Some("org_limit"));
        dropped.extend(per_org(3, Some("licence")));
        dropped.extend(per_org(4, Some("org_disabled")));
        metric("vigil_events_dropped_total", "counter", "Events dropped per org and reason.", dropped);
        let w = &self.worker;
        metric("vigil_events_stored_total", "counter", "Events written to Parquet.", vec![(nl.clone(), n(&w.stored))]);
        metric("vigil_parquet_files_total", "counter", "Parquet files written.", vec![(nl.clone(), n(&w.files))]);
        metric("vigil_parquet_bytes_total", "counter", "Parquet bytes written.", vec![(nl.clone(), n(&w.bytes))]);
        metric(
            "vigil_storage_write_errors_total",
            "counter",
            "Failed Parquet writes (retried).",
            vec![(nl.clone(), n(&w.write_errors))],
        );
        metric(
            "vigil_rule_state_bytes",
            "gauge",
            "Correlation engine state, estimated.",
            vec![(nl.clone(), n(&w.rule_state_bytes))],
        );
        metric(
            "vigil_rule_buffer_bytes",
            "gauge",
            "Correlation records waiting out the allowed lateness (part of vigil_rule_state_bytes).",
            vec![(nl.clone(), n(&w.rule_buffer_bytes))],
        );
        metric(
            "vigil_rule_window_keys",
            "gauge",
            "Window keys (rule, pattern, group value) the engine holds.",
            vec![(nl.clone(), n(&w.rule_window_keys))],
        );
        metric(
            "vigil_rule_evicted_keys",
            "gauge",
            "Window keys dropped at the rules.max_keys ceiling (the stalest of the org holding the most).",
            vec![(nl.clone(), n(&w.rule_evicted_keys))],
        );
        metric(
            "vigil_rule_late_events",
            "gauge",
            "Events that arrived later than the allowed lateness: stored, not correlated.",
            vec![(nl.clone(), n(&w.late_events))],
        );
        metric(
            "vigil_rule_future_events",
            "gauge",
            "Events stamped ahead of their receive time: correlated at their receive time.",
            vec![(nl.clone(), n(&w.future_events))],
        );
        metric(
            "vigil_rule_early_releases",
            "gauge",
            "Records released before the allowed lateness had passed, because the reorder buffers reached rules.max_buffer_mb.",
            vec![(nl.clone(), n(&w.early_releases))],
        );
        if let Some((rss, peak)) = resident_memory() {
            metric(
                "vigil_process_resident_memory_bytes",
                "gauge",
                "Resident set size of the process.",
                vec![(String::new(), rss)],
            );
            metric(
                "vigil_process_resident_memory_peak_bytes",
                "gauge",
                "Largest resident set size of the process so far.",
                vec![(String::new(), peak)],
            );
        }
        metric(
            "vigil_incident_updates_total",
            "counter",
            "Incident updates from the rule engine.",
            vec![(nl.clone(), n(&w.incidents))],
        );
        let s = self.ingest.stats();
        // A summary from the ingest's hdrhistogram, after the counters.
        let l = s.latency();
        let secs = |ms: u64| ms as f64 / 1000.0;
        let mut latency = String::from(
            "# HELP vigil_event_to_incident_seconds From receiving the event that completes an incident's first hit \
             to the incident's creation in the record store.\n# TYPE vigil_event_to_incident_seconds summary\n",
        );
        for (q, v) in [("0.5", l.p50_ms), ("0.9", l.p90_ms), ("0.99", l.p99_ms), ("0.999", l.p999_ms), ("1", l.max_ms)]
        {
            let _ = writeln!(latency, "vigil_event_to_incident_seconds{{quantile=\"{q}\"}} {}", secs(v));
        }
        let _ = writeln!(latency, "vigil_event_to_incident_seconds_sum {}", l.sum_ms / 1000.0);
        let _ = writeln!(latency, "vigil_event_to_incident_seconds_count {}", l.count);
        metric(
            "vigil_incidents_created_total",
            "counter",
            "Incidents created in the record store.",
            vec![(String::new(), n(&s.created))],
        );
        metric(
            "vigil_incident_ingest_refused_total",
            "counter",
            "Incident updates refused by a full ingest queue (then retried blocking).",
            vec![(String::new(), n(&s.refused))],
        );
        let raw = self.raw_queue.upgrade().map_or(0, |q| q.max_capacity() - q.capacity());
        metric(
            "vigil_queue_depth",
            "gauge",
            "Batches or updates waiting between stages.",
            vec![
                (format!("{nl},queue=\"intake\""), raw as u64),
                (format!("{nl},queue=\"worker\""), self.event_queue.len() as u64),
                (format!("{nl},queue=\"buffered_events\""), n(&w.buffered)),
                (format!("{nl},queue=\"sealed_events\""), n(&w.sealed)),
                (String::from("queue=\"incident_ingest\""), self.ingest.depth() as u64),
            ],
        );
        out.push_str(&latency);
        out
    }
}

/// Resident and peak resident memory, bytes (Linux: /proc/self/status).
fn resident_memory() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib = |field: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(field))?;
        line[field.len()..].trim().trim_end_matches("kB").trim().parse::<u64>().ok().map(|k| k * 1024)
    };
    Some((kib("VmRSS:")?, kib("VmHWM:")?))
}

/// The budget for interval `k`: `node_events` for this node, and the
/// store's org rules.
fn budget(k: u64, node_events: u64, orgs: &[Org]) -> Budget {
    Budget {
        interval: k,
        node_events,
        orgs: orgs
            .iter()
            .map(|o| OrgBudget {
                org: org_id(o.id),
                enabled: o.enabled,
                events: o.eps_limit.map(|l| u64::try_from(l).unwrap_or(0).saturating_mul(INTERVAL_SECS)),
            })
            .collect(),
    }
}

/// The EPS allocator (SPEC §3) for this one node: it is guaranteed the
/// whole licence; what it leaves unused accrues to the pool, from which it
/// may burst above the licence when its traffic exceeds it.
struct Allocation {
    config: AllocatorConfig,
    state: AllocatorState,
    /// Pool and burst of the last plan, EPS, for /metrics.
    figures: Arc<Mutex<(u64, u64)>>,
}

impl Allocation {
    fn new(node: &NodeId, licence_eps: u64) -> Allocation {
        let config = AllocatorConfig {
            licensed_eps: licence_eps,
            interval_secs: std::num::NonZeroU32::new(INTERVAL_SECS as u32).unwrap_or(std::num::NonZeroU32::MIN),
            guarantees: [(node.clone(), licence_eps)].into_iter().collect(),
            burst_cap_eps: licence_eps,
            zone: parsers::SourceZone::utc(),
            orgs: Vec::new(),
        };
        Allocation { config, state: AllocatorState::default(), figures: Arc::new(Mutex::new((0, 0))) }
    }

    /// Plans interval `k` from the report of the one that ended: this
    /// node's budget (allocation plus burst) with the store's org rules.
    fn plan(&mut self, k: u64, report: IntervalReport, orgs: &[Org]) -> Budget {
        self.config.orgs = orgs
            .iter()
            .map(|o| OrgQuota {
                org: org_id(o.id),
                enabled: o.enabled,
                eps_limit: o.eps_limit.map(|l| u64::try_from(l).unwrap_or(0)),
            })
            .collect();
        let node = report.node.clone();
        let start = parsers::EventTime::from_unix(i64::try_from(k * INTERVAL_SECS).unwrap_or(i64::MAX), 0, 0);
        let (plan, next) = allocate(&self.config, &self.state, &[report], start);
        self.state = next;
        *self.figures.lock().unwrap_or_else(PoisonError::into_inner) =
            (self.state.pool / MILLI, plan.burst_granted / MILLI);
        match plan.nodes.into_iter().find(|p| p.node == node) {
            Some(p) => p.budget,
            None => budget(k, self.config.licensed_eps.saturating_mul(INTERVAL_SECS), orgs),
        }
    }
}

/// `/metrics` on a router of its own; with a token, only for who presents it.
fn metrics_router(metrics: Arc<Metrics>, token: Option<Secret>) -> axum::Router {
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::IntoResponse;
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move |headers: HeaderMap| {
            let (m, token) = (metrics.clone(), token.clone());
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
                ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], m.render()).into_response()
            }
        }),
    )
}

/// The syslog connection limit that fits the process's file descriptors:
/// the soft limit is raised as far as the hard limit allows, and what is
/// left after a reserve (API, files, database) bounds the connections, so
/// accept never runs out of descriptors and the API keeps answering.
fn fit_to_descriptors(wanted: usize) -> (usize, Option<String>) {
    const RESERVED: u64 = 128;
    let Ok(limit) = collector::listen::raise_descriptor_limit() else { return (wanted, None) };
    let room = usize::try_from(limit.saturating_sub(RESERVED)).unwrap_or(usize::MAX).max(1);
    if wanted <= room {
        return (wanted, None);
    }
    let note = format!(
        "syslog.max_connections lowered from {wanted} to {room}: the process may open {limit} files (ulimit -n), {RESERVED} of them kept for the API, storage and the record store"
    );
    (room, Some(note))
}

fn org_table(orgs: &[Org], collector_org: Option<&str>) -> Result<OrgTable> {
    let routes = orgs
        .iter()
        .filter(|o| o.name != "Super/Global")
        .map(|o| OrgRoute {
            id: org_id(o.id),
            name: o.name.as_str().into(),
            ranges: o.ip_ranges.iter().filter_map(|r| r.parse().ok()).collect(),
        })
        .collect();
    let collector = match collector_org {
        Some(name) => Some(
            orgs.iter()
                .find(|o| o.name.eq_ignore_ascii_case(name))
                .map(|o| org_id(o.id))
                .with_context(|| format!("orgs.collector_org: no org named {name:?}"))?,
        ),
        None => None,
    };
    Ok(OrgTable::new(routes, collector)?)
}

fn update_of(d: &Detection) -> IncidentUpdate {
    let i = &d.incident;
    let key = i.key.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
    let ms = |t: parsers::EventTime| i64::try_from(t.unix_nanos() / 1_000_000).unwrap_or(0);
    IncidentUpdate {
        rule: i.rule.to_string(),
        org_id: i64::from(i.org_id.0),
        key,
        window_start_ms: ms(i.first_seen),
        title: i.title.clone(),
        severity: i.severity,
        count: i.count,
        first_seen_ms: ms(i.first_seen),
        last_seen_ms: ms(i.last_seen),
        event_ids: i.event_ids.clone(),
        received_at_ms: d.received_at.map(ms),
    }
}

/// Runs `vigil run`.
pub fn run(args: RunArgs) -> Result<ExitCode> {
    let config = load_config(&args)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the runtime")?;
    rt.block_on(serve(config))
}

async fn serve(config: RunConfig) -> Result<ExitCode> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let today = licence::date_of(clock.now());
    let licence = LicenceStatus::load(config.license.as_deref(), &licence::trusted_keys(), today);
    let licence_eps = licence.licensed_eps();

    // Rules first: a broken rule file stops the start, before any socket.
    let mut compiler = rules::Compiler::new();
    if config.rules.builtin {
        for (name, text) in rules::PACK {
            compiler.add_source(name, text);
        }
    }
    for p in &config.rules.paths {
        compiler.add_path(p);
    }
    let rules = match compiler.finish() {
        Ok((set, warnings)) => {
            for w in warnings {
                eprintln!("{w}");
            }
            set
        }
        Err(diagnostics) => {
            for d in diagnostics {
                eprintln!("{d}");
            }
            bail!("the rules do not compile");
        }
    };
    let engine_config = EngineConfig {
        lateness: Duration::from_secs_f64(config.rules.lateness_secs),
        max_buffer_bytes: config.rules.max_buffer_mb.saturating_mul(1 << 20),
        max_window_keys: config.rules.max_keys,
        ..EngineConfig::default()
    };
    let engine = Engine::new(Arc::new(rules), engine_config);

    // The record store.
    let store_config = StoreConfig { licence_eps, ..StoreConfig::default() };
    let store = Arc::new(match &config.database {
        Some(url) => Store::open(url, clock.clone(), store_config).await.context("cannot open the record store")?,
        None => Store::open_data_dir(&config.data_dir, clock.clone(), store_config)
            .await
            .with_context(|| format!("cannot open the record store in {}", config.data_dir.display()))?,
    });
    let admin_token = std::env::var("VIGIL_ADMIN_TOKEN").ok().filter(|t| !t.is_empty());
    let new_admin = store.bootstrap_admin(admin_token.as_deref()).await?;
    let cli = Principal::cli();
    let orgs = store.list_orgs(&cli).await?.items;
    let table = org_table(&orgs, config.orgs.collector_org.as_deref())?;
    let names: BTreeMap<OrgId, String> = names_of(&orgs);
    let names = Arc::new(Mutex::new(names));

    // Collector: gate, intake, listeners.
    let interval = u64::try_from(clock.now().unix_secs()).unwrap_or(0) / INTERVAL_SECS;
    let node_id = NodeId::new(&config.node);
    let mut allocation = Allocation::new(&node_id, licence_eps);
    let pool = allocation.figures.clone();
    let gate = Arc::new(Gate::new(node_id, budget(interval, licence_eps.saturating_mul(INTERVAL_SECS), &orgs)));
    let skew = SkewConfig {
        alert_after: Duration::from_secs_f64(config.syslog.clock_skew_alert_secs),
        ..SkewConfig::default()
    };
    let intake = Arc::new(
        Intake::new(
            Parser::new(),
            Some(DeviceParsers::builtin().context("cannot load the built-in device parsers")?),
            table,
            gate.clone(),
            &config.node,
        )
        .with_skew(skew)
        .with_event_ids(parsers::EventIds::new(0, clock.now())),
    );
    // Short queues: under overload events wait in the senders' TCP buffers,
    // not here, so the event→incident latency stays low.
    let (raw_tx, mut raw_rx) = tokio::sync::mpsc::channel(64);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let framing = FramerConfig {
        max_frame_len: std::num::NonZeroUsize::new(config.syslog.max_message_bytes)
            .context("syslog.max_message_bytes must be positive")?,
        ..FramerConfig::default()
    };
    let (max_connections, fd_note) = fit_to_descriptors(config.syslog.max_connections);
    if let Some(note) = fd_note {
        eprintln!("vigil: {note}");
    }
    let listener_config = ListenerConfig {
        max_connections,
        max_connections_per_source: config.syslog.max_connections_per_source,
        max_partial_bytes: config.syslog.max_partial_bytes,
        idle_timeout: Duration::from_secs(config.syslog.idle_timeout_secs.max(1)),
        drain_idle: Duration::from_millis(config.syslog.drain_idle_ms),
        drain_timeout: Duration::from_secs(config.syslog.drain_timeout_secs),
        framing,
        ..ListenerConfig::default()
    };
    let listeners = Listeners::new(listener_config, raw_tx.clone(), clock.clone(), stop_rx.clone());
    let mut serving = Vec::new();
    let mut bound = Vec::new();
    if config.syslog.tcp {
        let tcp = tokio::net::TcpListener::bind(config.syslog.addr)
            .await
            .with_context(|| format!("cannot listen for syslog on tcp://{}", config.syslog.addr))?;
        bound.push(format!("tcp://{}", tcp.local_addr()?));
        serving.push(tokio::spawn(listeners.clone().serve_tcp(tcp)));
    }
    if config.syslog.udp {
        let udp = tokio::net::UdpSocket::bind(config.syslog.addr)
            .await
            .with_context(|| format!("cannot listen for syslog on udp://{}", config.syslog.addr))?;
        bound.push(format!("udp://{}", udp.local_addr()?));
        serving.push(tokio::spawn(listeners.clone().serve_udp(udp)));
    }
    let mut tls_note = None;
    if let Some(addr) = config.tls.addr {
        let mut names = config.tls.names.clone();
        if !addr.ip().is_unspecified() {
            names.push(addr.ip().to_string());
        }
        let tls = super::tls::server(config.tls.cert.as_deref(), config.tls.key.as_deref(), &config.data_dir, &names)?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for syslog on tls://{addr}"))?;
        bound.push(format!("tls://{}", listener.local_addr()?));
        tls_note = Some(if tls.self_signed {
            format!("{} (self-signed; senders trust it: vigil send --ca {0})", tls.cert.display())
        } else {
            tls.cert.display().to_string()
        });
        serving.push(tokio::spawn(listeners.clone().serve_tls(listener, tls.acceptor)));
    }
    let listener_stats = listeners.stats().clone();
    drop(listeners);

    // Worker.
    let (event_tx, event_rx) = crossbeam_channel::bounded::<Vec<parsers::Event>>(16);
    let event_queue = event_rx.clone();
    let writer_config = EventWriterConfig {
        roll_rows: config.storage.roll_rows,
        ..EventWriterConfig::new(&config.data_dir, &config.node)
    };
    let writer = EventWriter::open(writer_config, clock.now()).context("cannot open the event store")?;
    let worker_stats = Arc::new(WorkerStats::default());
    let worker = Worker::new(writer, engine, worker_stats.clone())
        .with_max_buffer_bytes(config.storage.max_buffer_mb.saturating_mul(1 << 20));
    let (ingest, ingest_task) = Ingest::start(store.clone(), IngestConfig::default());
    let worker_thread = {
        let ingest = ingest.clone();
        let clock = clock.clone();
        let handle = tokio::runtime::Handle::current();
        let flush = Duration::from_millis(config.storage.flush_interval_ms);
        std::thread::Builder::new().name("vigil-worker".into()).spawn(move || {
            worker.run(&event_rx, clock.as_ref(), flush, |incidents| {
                for i in &incidents {
                    let update = update_of(i);
                    if let Err(supervisor::store::StoreError::QueueFull(_)) = ingest.try_submit(update.clone()) {
                        let _ = handle.block_on(ingest.submit(update));
                    }
                }
            })
        })?
    };
    let intake_thread = {
        let intake = intake.clone();
        std::thread::Builder::new().name("vigil-intake".into()).spawn(move || {
            let mut out = Vec::new();
            while let Some(batch) = raw_rx.blocking_recv() {
                intake.process(batch, &mut out);
                if !out.is_empty() && event_tx.send(std::mem::take(&mut out)).is_err() {
                    break;
                }
            }
        })?
    };

    // EPS intervals and org reloads.
    let totals = Arc::new(Mutex::new(Totals::default()));
    let control = {
        let (gate, store, intake, totals, names, clock) =
            (gate.clone(), store.clone(), intake.clone(), totals.clone(), names.clone(), clock.clone());
        let refresh = Duration::from_secs_f64(config.orgs.refresh_secs);
        let collector_org = config.orgs.collector_org.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut current = orgs;
            let mut k = interval;
            loop {
                tokio::select! {
                    _ = stop.changed() => break,
                    () = tokio::time::sleep(refresh) => {}
                }
                let now_k = u64::try_from(clock.now().unix_secs()).unwrap_or(0) / INTERVAL_SECS;
                let fresh = match store.list_orgs(&Principal::cli()).await {
                    Ok(page) => page.items,
                    Err(e) => {
                        eprintln!("vigil: cannot reload orgs: {e}");
                        current.clone()
                    }
                };
                if now_k > k {
                    k = now_k;
                    // The node keeps its last budget while the next is planned.
                    let report = gate.begin_interval(k, None);
                    totals.lock().unwrap_or_else(PoisonError::into_inner).add(&report);
                    gate.set_budget(allocation.plan(k, report, &fresh));
                } else if fresh != current {
                    gate.set_budget(budget(k, gate.budget().node_events, &fresh));
                }
                if fresh != current {
                    match org_table(&fresh, collector_org.as_deref()) {
                        Ok(table) => intake.set_orgs(table),
                        Err(e) => eprintln!("vigil: org ranges not applied: {e:#}"),
                    }
                    *names.lock().unwrap_or_else(PoisonError::into_inner) = names_of(&fresh);
                    current = fresh;
                }
            }
        })
    };

    // API and metrics.
    let metrics = Arc::new(Metrics {
        node: config.node.clone(),
        pool,
        licence_eps,
        gate: gate.clone(),
        totals: totals.clone(),
        names: names.clone(),
        listeners: listener_stats.clone(),
        intake: intake.clone(),
        worker: worker_stats.clone(),
        ingest: ingest.clone(),
        // Weak, and a receiver: neither keeps a channel open at shutdown.
        raw_queue: raw_tx.downgrade(),
        event_queue: event_queue.clone(),
    });
    drop(raw_tx);
    let app = supervisor::api::router(store.clone());
    let api = tokio::net::TcpListener::bind(config.api.addr)
        .await
        .with_context(|| format!("cannot listen for the API on {}", config.api.addr))?;
    let api_addr = api.local_addr()?;
    let metrics_listener = tokio::net::TcpListener::bind(config.metrics.addr)
        .await
        .with_context(|| format!("cannot listen for metrics on {}", config.metrics.addr))?;
    let metrics_addr = metrics_listener.local_addr()?;
    let metrics_app = metrics_router(metrics, config.metrics.token.clone());

    println!("vigil {} (all roles in one process)", env!("CARGO_PKG_VERSION"));
    println!("licence: {}", licence.describe());
    println!("syslog: {}", bound.join(" "));
    if let Some(note) = &tls_note {
        println!("tls certificate: {note}");
    }
    println!("api: http://{api_addr}/api/v1 (OpenAPI: http://{api_addr}/api/v1/openapi.json)");
    println!(
        "metrics: http://{metrics_addr}/metrics{}",
        if config.metrics.token.is_some() { " (bearer token: metrics.token)" } else { "" }
    );
    println!("data: {} (events/ Parquet, vigil.db record store)", config.data_dir.display());
    match (&new_admin, &admin_token) {
        (Some(_), Some(_)) => println!("admin: created user admin with the token from VIGIL_ADMIN_TOKEN"),
        (Some(token), None) => println!("admin token (shown once; keep it): {token}"),
        (None, _) => {}
    }

    let mut api_stop = stop_rx.clone();
    let server = tokio::spawn(async move {
        axum::serve(api, app)
            .with_graceful_shutdown(async move {
                let _ = api_stop.changed().await;
            })
            .await
    });
    let mut metrics_stop = stop_rx.clone();
    let metrics_server = tokio::spawn(async move {
        axum::serve(metrics_listener, metrics_app)
            .with_graceful_shutdown(async move {
                let _ = metrics_stop.changed().await;
            })
            .await
    });

    super::supervisor::shutdown().await;
    eprintln!("vigil: stopping: draining listeners, intake and worker");
    let _ = stop_tx.send(true);
    for s in serving {
        let _ = s.await;
    }
    let _ = control.await;
    let intake_done = tokio::task::spawn_blocking(move || intake_thread.join()).await;
    let stored = tokio::task::spawn_blocking(move || worker_thread.join()).await;
    ingest.flush().await.ok();
    drop(ingest);
    let _ = ingest_task.await;
    let _ = server.await;
    let _ = metrics_server.await;
    store.close().await;
    if intake_done.is_err() {
        bail!("the intake thread failed");
    }
    let stored = match stored {
        Ok(Ok(Ok(n))) => n,
        Ok(Ok(Err(e))) => bail!("writing events failed: {e}"),
        _ => bail!("the worker thread failed"),
    };
    let accepted: u64 = Totals::with_running(&totals, &gate).done.values().map(|v| v[1]).sum();
    println!("vigil: stopped; {accepted} events accepted, {stored} written to Parquet");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unused_licence_accrues_to_the_pool_and_pays_for_a_burst_above_it() {
        let node = NodeId::new("node-1");
        let mut a = Allocation::new(&node, 1_000);
        let report = |k: u64, eps: u64| IntervalReport {
            node: node.clone(),
            interval: k,
            received: eps * INTERVAL_SECS,
            accepted: eps.min(1_000) * INTERVAL_SECS,
            orgs: Vec::new(),
        };
        // Two quiet intervals at 100 EPS of 1,000: 900 EPS unused each.
        assert_eq!(a.plan(1, report(0, 100), &[]).node_events, 1_000 * INTERVAL_SECS);
        assert_eq!(a.plan(2, report(1, 100), &[]).node_events, 1_000 * INTERVAL_SECS);
        let (pool, burst) = *a.figures.lock().unwrap();
        assert_eq!((pool, burst), (900, 0));
        // Then 1,500 EPS arrive: the pool pays for what the licence cannot.
        let b = a.plan(3, report(2, 1_500), &[]);
        let (pool, burst) = *a.figures.lock().unwrap();
        assert!(burst > 0 && b.node_events == (1_000 + burst) * INTERVAL_SECS, "{b:?} burst {burst}");
        assert!(burst <= 900 && pool < 1_800, "the burst comes out of the pool: {pool} {burst}");
    }

    #[test]
    fn the_example_config_is_the_defaults() {
        let parsed: RunConfig = toml::from_str(EXAMPLE).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed, RunConfig::default());
        assert!(toml::from_str::<RunConfig>("[syslog]\nadr = \"x\"").is_err(), "unknown keys are refused");
    }
}
