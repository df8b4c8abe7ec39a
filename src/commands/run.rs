//! `vigil run`: every role in one process (SPEC §1, the embedded default).
//!
//! syslog (UDP + TCP) → listeners → intake thread (parse, classify, org,
//! EPS gate) → worker thread (ids, Parquet, rule engine) → incident ingest
//! queue → record store ← incident API and `/metrics`. Channels between the
//! stages are bounded, so a slow stage pushes back on TCP senders and makes
//! UDP count drops. SIGTERM or Ctrl-C stops the listeners, lets every stage
//! drain, writes every accepted event to Parquet and every incident to the
//! store, then exits.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use collector::metrics::Exposition;
use collector::node::{Collector, CollectorSetup, SyslogConfig, TlsListener};
use collector::{Clock, NodeId, SystemClock};
use parsers::Budget;
use serde::Deserialize;
use supervisor::licence::{self, LicenceStatus};
use supervisor::node::{ApiConfig, IngestSink, MetricsConfig, SupervisorNode, SupervisorSetup, metrics_router};
use supervisor::store::{Store, StoreConfig};
use worker::node::{RulesConfig, StorageConfig, WorkerSetup};
use worker::shards::{ShardConfig, ShardedWorker, shard_queues};

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
    pub database: Option<DatabaseUrl>,
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
    /// The worker's threads.
    pub worker: ShardConfig,
    /// Org assignment.
    pub orgs: OrgsConfig,
    /// The cluster roles (`vigil supervisor|collector|worker`); `vigil run` ignores it.
    pub cluster: cluster::ClusterConfig,
    /// Event search limits and where the events are.
    pub search: search::SearchSettings,
    /// The device inventory and the licence's device limit.
    pub devices: collector::devices::DeviceConfig,
    /// Connectors and notifications: the egress guard and retries.
    pub connectors: supervisor::store::ConnectorsConfig,
}

/// A database URL from the config: it may hold a password, so `Debug`
/// shows it redacted.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct DatabaseUrl(pub String);

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseUrl({:?})", parsers::redact_url(&self.0))
    }
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

/// `[orgs]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OrgsConfig {
    /// Seconds between checks for org changes made by another process
    /// (the admin CLI); changes through the API apply at once.
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
            worker: ShardConfig::default(),
            orgs: OrgsConfig::default(),
            cluster: cluster::ClusterConfig::default(),
            search: search::SearchSettings::default(),
            devices: collector::devices::DeviceConfig::default(),
            connectors: supervisor::store::ConnectorsConfig::default(),
        }
    }
}

impl Default for OrgsConfig {
    fn default() -> OrgsConfig {
        OrgsConfig { refresh_secs: 0.25, collector_org: None }
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
compact_after_secs = 3600        # files unchanged this long are merged into larger ones sorted by time (0: never)
compact_every_secs = 300         # seconds between compaction passes
nice = 0                         # 1-19: storage runs this many nice steps below the rules: busy cores serve detection first, Parquet lags (more memory)

[rules]
builtin = true                   # the built-in pack (rules/packs)
paths = []                       # more rule files or directories (vigil and Sigma rules)
# sigma_mappings = "logsources.yaml"  # Sigma log-source mappings instead of the built-in ones (docs/sigma.md)
lateness_secs = 10.0             # how late an event may arrive and still be evaluated in order
max_buffer_mb = 256              # memory for events waiting out the lateness; past it the oldest are released early
max_keys = 500000                # window keys (rule, pattern, group value); past it the stalest of the largest org go

[worker]
shards = 2                       # worker threads (rules, Arrow, Parquet), each with its share of the orgs; cross-org rules run on one

[orgs]
refresh_secs = 0.25              # org changes through the API apply at once; the CLI's are seen this often
# collector_org = "Acme"         # everything this collector receives belongs to one org

[cluster]                        # vigil supervisor|collector|worker (vigil run ignores this section)
# nats = "nats://127.0.0.1:4222" # or --nats; nats-server 2.11+ with JetStream
# node = "collector-1"           # or --node; letters, digits, '-', '_'
nats_tls = false                 # require TLS to NATS (implied by the files below and by a tls:// URL)
# nats_ca_file = "/etc/vigil/nats-ca.pem"   # CA of the NATS server's certificate (default: public roots)
# nats_cert_file = "/etc/vigil/node.pem"    # this node's certificate, when the server verifies clients
# nats_key_file = "/etc/vigil/node.key"     # its private key
# creds_file = "/etc/vigil/edge-a.creds"     # this node's credentials from `vigil node add` (collectors, workers)
# keys_dir = "/etc/vigil/cluster-keys"       # the supervisor's `vigil cluster init` directory
# spool_dir = "/var/lib/vigil/spool"         # a collector's disk buffer while its link to NATS is down
spool_max_mb = 1024              # the spool's limit; when full, senders are held back
partitions = 8                   # event stream partitions; each org's events go to one
interval_secs = 180              # EPS interval (the supervisor's value reaches collectors)
lease_ttl_secs = 10.0            # a dead worker's partitions move to a live one within this
replay_secs = 900                # before a partition's first checkpoint: stream history kept to rebuild rule windows
checkpoint_secs = 30.0           # each partition's rule state is checkpointed this often; a new owner restores it
heartbeat_secs = 2.0             # nodes tell the supervisor they are alive this often
missed_heartbeat_secs = 10.0     # silent this long: the node is flagged (alert)
stream_max_mb = 1024             # event stream size limit; when full, collectors push back
cross_org = false                # run cross-org rules: every batch also goes to the cross-org partition (supervisor's setting)

[devices]                        # the device inventory (GET /api/v1/devices, vigil device list)
enabled = true
relays = ["127.0.0.0/8", "::1/128"] # senders that forward for others: their events' device is the HOSTNAME
max_per_org = 20000              # devices kept per org; more are counted as overflow (their events still flow)
report_secs = 30.0               # device counters go to the inventory this often; silence is checked as often
limit_policy = "alert"           # devices beyond the licence's device limit: "alert" (accept, count, alert) or "enforce" (drop, count)
active_days = 30                 # a device counts towards the limit while seen within this many days
silent_floor_secs = 600          # shorter silences never raise an incident
silent_factor = 4.0              # silent after this many times the device's usual gap between events
learn_periods = 3                # report periods with events before the usual gap is trusted

[connectors]                     # incidents to webhooks, Slack, Teams, e-mail, other SIEMs (docs/connectors.md)
allow_private_targets = false    # true: targets on loopback, private, link-local or metadata addresses, and http://
max_attempts = 8                 # a delivery is dead-lettered after this many attempts
retry_base_secs = 5.0            # first retry delay; each next one doubles (a random half taken off), or Retry-After
retry_max_secs = 900.0           # longest retry delay
concurrency = 16                 # deliveries sent at once
# The key that seals connector secrets: VIGIL_CONNECTOR_KEY (base64 of 32 bytes) or data_dir/connectors.key (made 0600)

[search]                         # event search (POST /api/v1/search, GET /api/v1/events)
# events_dir = "vigil-data/events" # default: <data_dir>/events; in a cluster, the workers' shared root
max_rows = 10000                 # most rows one answer holds
memory_mb = 256                  # memory one query may use (no spilling); over it: 422
time_limit_secs = 30.0           # a query running longer is stopped: 422
concurrency = 4                  # searches at once; more: 503 with Retry-After
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
        config.database = Some(DatabaseUrl(d.clone()));
    }
    if !(0.1..=3600.0).contains(&config.orgs.refresh_secs) {
        bail!("orgs.refresh_secs must be 0.1-3600");
    }
    config.syslog.validate()?;
    config.storage.validate()?;
    config.rules.validate()?;
    config.worker.validate()?;
    config.metrics.validate()?;
    config.devices.validate().map_err(anyhow::Error::msg)?;
    Ok(config)
}

/// The TLS syslog listener the config asks for, if any, and the line that
/// tells senders which certificate to trust.
pub fn tls_listener(config: &RunConfig) -> Result<Option<(TlsListener, String)>> {
    let Some(addr) = config.tls.addr else { return Ok(None) };
    let mut names = config.tls.names.clone();
    if !addr.ip().is_unspecified() {
        names.push(addr.ip().to_string());
    }
    let tls = super::tls::server(config.tls.cert.as_deref(), config.tls.key.as_deref(), &config.data_dir, &names)?;
    let note = if tls.self_signed {
        format!("{} (self-signed; senders trust it: vigil send --ca {0})", tls.cert.display())
    } else {
        tls.cert.display().to_string()
    };
    Ok(Some((TlsListener { addr, acceptor: tls.acceptor }, note)))
}

/// Compiles the configured rules, printing warnings; every error found,
/// then a failure.
pub fn compile_rules(config: &RunConfig) -> Result<Arc<rules::RuleSet>> {
    match config.rules.compile() {
        Ok((set, warnings)) => {
            for w in warnings {
                eprintln!("{w}");
            }
            Ok(Arc::new(set))
        }
        Err(diagnostics) => {
            for d in diagnostics {
                eprintln!("{d}");
            }
            bail!("the rules do not compile");
        }
    }
}

/// Runs `vigil run`.
pub fn run(args: RunArgs) -> Result<ExitCode> {
    let config = load_config(&args)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the runtime")?;
    rt.block_on(serve(config))
}

async fn serve(config: RunConfig) -> Result<ExitCode> {
    // Signals are caught from here on, before anything says it is ready.
    let stop = super::supervisor::Shutdown::listen()?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let today = licence::date_of(clock.now());
    let licence = LicenceStatus::load(config.license.as_deref(), &licence::trusted_keys(), today);
    let licence_eps = licence.licensed_eps();

    // Rules first: a broken rule file stops the start, before any socket.
    let rules = compile_rules(&config)?;

    // The record store.
    let store_config = StoreConfig {
        licence_eps,
        devices: supervisor::store::DeviceSettings::new(&config.devices, licence.device_limit()),
        connectors: config.connectors.settings(&config.data_dir).context("[connectors]")?,
        ..StoreConfig::default()
    };
    let store = Arc::new(match config.database.as_ref().map(|d| &d.0) {
        Some(url) => Store::open(url, clock.clone(), store_config).await.context("cannot open the record store")?,
        None => Store::open_data_dir(&config.data_dir, clock.clone(), store_config)
            .await
            .with_context(|| format!("cannot open the record store in {}", config.data_dir.display()))?,
    });
    let admin_token = std::env::var("VIGIL_ADMIN_TOKEN").ok().filter(|t| !t.is_empty());
    let new_admin = store.bootstrap_admin(admin_token.as_deref()).await?;

    // The three roles, joined by in-process transports: a bounded channel
    // of event batches (collector → worker), one of interval reports
    // (collector → supervisor), the ingest queue (worker → supervisor),
    // and the collector itself as the supervisor's downlink. The collector
    // is guaranteed the whole licence; what it leaves unused accrues to
    // the pool, from which it may burst above the licence.
    let node = NodeId::new(&config.node);
    let orgs = store.org_snapshot(1).await?;
    let interval = u64::try_from(clock.now().unix_secs()).unwrap_or(0) / INTERVAL_SECS;
    let budget = Budget {
        interval,
        node_events: licence_eps.saturating_mul(INTERVAL_SECS),
        orgs: orgs.org_budgets(INTERVAL_SECS),
    };
    let (tls, tls_note) = tls_listener(&config)?.unzip();
    let engine = config.rules.engine_config();
    let (event_tx, event_rx) = shard_queues(config.worker.shards, &rules, &engine);
    let (report_tx, report_rx) = crossbeam_channel::bounded(1024);
    let (device_tx, device_rx) = tokio::sync::mpsc::channel(64);
    let setup = CollectorSetup {
        node: node.clone(),
        slot: 0,
        syslog: config.syslog.clone(),
        tls,
        collector_org: config.orgs.collector_org.clone().map(collector::node::CollectorOrg::Named),
        interval_secs: INTERVAL_SECS,
        devices: config.devices.clone(),
    };
    let collector =
        Arc::new(Collector::start(setup, clock.clone(), &orgs, budget, event_tx, report_tx, device_tx).await?);
    let supervisor_setup = SupervisorSetup {
        licence_eps,
        interval_secs: INTERVAL_SECS as u32,
        grace_secs: 1,
        guarantees: [(node.clone(), licence_eps)].into_iter().collect(),
        burst_cap_eps: licence_eps,
        org_poll: std::time::Duration::from_secs_f64(config.orgs.refresh_secs),
        search: Some(config.search.to_config(&config.data_dir)?),
        device_reports: config.devices.enabled.then_some(device_rx),
        device_every: std::time::Duration::from_secs_f64(config.devices.report_secs),
    };
    let supervisor = Arc::new(
        SupervisorNode::start(supervisor_setup, store.clone(), clock.clone(), report_rx, collector.clone()).await?,
    );
    let ingest = supervisor.ingest().context("the supervisor stopped")?;
    let worker_setup =
        WorkerSetup::new(config.node.clone(), config.data_dir.clone(), config.storage.clone(), rules, engine);
    let sink = IngestSink::new(ingest, tokio::runtime::Handle::current());
    let worker = Arc::new(
        ShardedWorker::start(worker_setup, event_rx, clock.clone(), sink).context("cannot open the event store")?,
    );

    // API and metrics.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let app = supervisor.router();
    let api = tokio::net::TcpListener::bind(config.api.addr)
        .await
        .with_context(|| format!("cannot listen for the API on {}", config.api.addr))?;
    let api_addr = api.local_addr()?;
    let metrics_listener = tokio::net::TcpListener::bind(config.metrics.addr)
        .await
        .with_context(|| format!("cannot listen for metrics on {}", config.metrics.addr))?;
    let metrics_addr = metrics_listener.local_addr()?;
    let metrics_app = {
        let (c, w, s) = (collector.clone(), worker.clone(), supervisor.clone());
        metrics_router(
            move |m: &mut Exposition| {
                s.render_metrics(m);
                c.render_metrics(m);
                w.render_metrics(m);
            },
            config.metrics.token.clone(),
        )
    };

    println!("vigil {} (all roles in one process)", env!("CARGO_PKG_VERSION"));
    println!("licence: {}", licence.describe());
    println!("syslog: {}", collector.bound().join(" "));
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

    stop.wait().await;
    eprintln!("vigil: stopping: draining listeners, intake and worker");
    // Upstream first: the collector drains its connections and closes the
    // event channel, the worker writes everything and ends, then the
    // supervisor writes the last incidents.
    let accepted = collector.stop().await;
    let stored = {
        let worker = worker.clone();
        tokio::task::spawn_blocking(move || worker.join()).await
    };
    // The API and metrics stop before the store closes under them.
    let _ = stop_tx.send(true);
    let _ = server.await;
    let _ = metrics_server.await;
    supervisor.stop().await;
    let stored = match stored {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => bail!("writing events failed: {e}"),
        Err(_) => bail!("the worker thread failed"),
    };
    println!("vigil: stopped; {accepted} events accepted, {stored} written to Parquet");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_is_the_defaults() {
        let parsed: RunConfig = toml::from_str(EXAMPLE).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed, RunConfig::default());
        assert!(toml::from_str::<RunConfig>("[syslog]\nadr = \"x\"").is_err(), "unknown keys are refused");
    }
}
