//! `vigil collector`, `vigil worker` and `vigil supervisor --nats`: the
//! roles as separate processes over NATS JetStream. Each reads the same
//! config file as `vigil run` (its `[cluster]` section and the sections of
//! its role); flags override the file. The role code lives in the role
//! crates (`collector::cluster`, `worker::cluster`, `supervisor::cluster`);
//! this is flags, config and the process around them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use collector::metrics::Exposition;
use collector::node::{CollectorOrg, CollectorSetup};
use collector::{Clock, NodeId, SystemClock};
use parsers::{NodeRole, OrgId};
use supervisor::licence::{self, LicenceStatus};
use supervisor::node::metrics_router;

use super::run::RunConfig;
use super::supervisor::Shutdown;

/// Flags every cluster role takes.
#[derive(Args, Clone, Debug)]
pub struct ClusterArgs {
    /// A TOML config file: `[cluster]` and the role's sections (`vigil config example`).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// NATS server URL (nats-server 2.11 or newer, JetStream enabled).
    #[arg(long, value_name = "URL", env = "VIGIL_NATS")]
    nats: Option<String>,
    /// Prometheus /metrics address (port 0: any free port, printed).
    #[arg(long, value_name = "HOST:PORT")]
    metrics_addr: Option<SocketAddr>,
    /// This node's NATS credentials, from `vigil node add` (collectors and
    /// workers): the node's name, role, org and slot come with them.
    #[arg(long, value_name = "FILE", env = "VIGIL_NATS_CREDS")]
    creds: Option<PathBuf>,
    /// The supervisor's key directory from `vigil cluster init` (its own
    /// credentials, and the keys that revoke removed nodes).
    #[arg(long, value_name = "DIR", env = "VIGIL_CLUSTER_KEYS")]
    keys: Option<PathBuf>,
    /// The CA the NATS server's certificate must chain to (PEM; `tls/ca.pem`
    /// of `vigil cluster init`, which the supervisor finds by itself).
    #[arg(long, value_name = "FILE", env = "VIGIL_NATS_CA")]
    nats_ca: Option<PathBuf>,
}

/// Arguments of `vigil collector`.
#[derive(Args)]
pub struct CollectorArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// This node's name (letters, digits, '-', '_').
    #[arg(long, value_name = "NAME")]
    node: Option<String>,
    /// Syslog address for UDP and TCP (port 0: any free port, printed).
    #[arg(long, value_name = "HOST:PORT")]
    syslog_addr: Option<SocketAddr>,
    /// TLS syslog address (RFC 5425; self-signed certificate in DATA_DIR/tls/ unless configured).
    #[arg(long, value_name = "HOST:PORT")]
    tls_addr: Option<SocketAddr>,
    /// Directory for the self-signed TLS certificate.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

/// Arguments of `vigil worker`.
#[derive(Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// This node's name (letters, digits, '-', '_').
    #[arg(long, value_name = "NAME")]
    node: Option<String>,
    /// Data directory for Parquet event files.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

/// The config file and the cluster flags applied over it; `role` is the
/// process's, which credentials must be for.
fn load(args: &ClusterArgs, node: Option<&String>, role: NodeRole) -> Result<RunConfig> {
    let mut config = match &args.config {
        Some(path) => {
            let text = super::rules::read_text(path)?;
            toml::from_str(&text).with_context(|| format!("invalid config {}", path.display()))?
        }
        // On one machine several roles run side by side: any free port.
        None => {
            let mut c = RunConfig::default();
            c.metrics.addr = SocketAddr::from(([127, 0, 0, 1], 0));
            c
        }
    };
    if let Some(url) = &args.nats {
        config.cluster.nats = Some(url.clone());
    }
    if let Some(n) = node {
        config.cluster.node = Some(n.clone());
    }
    if let Some(a) = args.metrics_addr {
        config.metrics.addr = a;
    }
    if let Some(c) = &args.creds {
        config.cluster.creds_file = Some(c.clone());
    }
    if let Some(k) = &args.keys {
        config.cluster.keys_dir = Some(k.clone());
    }
    if let Some(ca) = &args.nats_ca {
        config.cluster.nats_ca_file = Some(ca.clone());
    }
    if let Some(dir) = &config.cluster.keys_dir
        && config.cluster.nats_ca_file.is_none()
        && dir.join("tls/ca.pem").exists()
    {
        config.cluster.nats_ca_file = Some(dir.join("tls/ca.pem"));
    }
    if let Some(path) = &config.cluster.creds_file {
        let grant = cluster::auth::read_grant(path).context("cluster.creds_file")?;
        if grant.role != role {
            bail!("{} holds {} credentials (node {}), not {role} ones", path.display(), grant.role, grant.node);
        }
        match &config.cluster.node {
            Some(n) if *n != grant.node => {
                bail!("node name {n:?} differs from {:?}, the name in {}", grant.node, path.display())
            }
            _ => config.cluster.node = Some(grant.node),
        }
    }
    config.cluster.validate().map_err(anyhow::Error::msg)?;
    config.metrics.validate()?;
    if config.cluster.nats.is_none() {
        bail!("no NATS server: give --nats URL or cluster.nats in the config file");
    }
    Ok(config)
}

fn node_name(config: &RunConfig) -> Result<String> {
    config.cluster.node.clone().context("no node name: give --node NAME or cluster.node in the config file")
}

async fn connect(config: &RunConfig, client_name: &str) -> Result<cluster::Nats> {
    cluster::connect_config(&config.cluster, client_name).await.map_err(anyhow::Error::new)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the runtime")
}

/// Serves /metrics until `stop`; returns the bound address.
async fn serve_metrics(
    config: &RunConfig,
    render: impl Fn(&mut Exposition) + Send + Sync + 'static,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(config.metrics.addr)
        .await
        .with_context(|| format!("cannot listen for metrics on {}", config.metrics.addr))?;
    let addr = listener.local_addr()?;
    let app = metrics_router(render, config.metrics.token.clone());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.changed().await;
            })
            .await;
    });
    Ok((addr, task))
}

/// Runs `vigil collector`.
pub fn collector(args: CollectorArgs) -> Result<ExitCode> {
    let mut config = load(&args.cluster, args.node.as_ref(), NodeRole::Collector)?;
    if let Some(a) = args.syslog_addr {
        config.syslog.addr = a;
    }
    if let Some(a) = args.tls_addr {
        config.tls.addr = Some(a);
    }
    if let Some(d) = &args.data_dir {
        config.data_dir = d.clone();
    }
    config.syslog.validate()?;
    runtime()?.block_on(run_collector(config))
}

async fn run_collector(config: RunConfig) -> Result<ExitCode> {
    let stop = Shutdown::listen()?;
    let node = node_name(&config)?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let nats = connect(&config, &format!("vigil collector {node}")).await?;
    let (tls, tls_note) = super::run::tls_listener(&config)?.unzip();
    let grant = config.cluster.creds_file.as_deref().map(cluster::auth::read_grant).transpose()?;
    // Credentials bind the org and give the slot; otherwise the config
    // names the org and the node claims a slot.
    let collector_org = match grant.as_ref().and_then(|g| g.org) {
        Some(id) => Some(CollectorOrg::Bound(OrgId(id))),
        None => config.orgs.collector_org.clone().map(CollectorOrg::Named),
    };
    let setup = CollectorSetup {
        node: NodeId::new(&node),
        slot: grant.and_then(|g| g.slot).unwrap_or(0),
        syslog: config.syslog.clone(),
        tls,
        collector_org,
        interval_secs: config.cluster.interval_secs,
        devices: config.devices.clone(),
    };
    println!("vigil collector {node} {} (NATS {})", env!("CARGO_PKG_VERSION"), nats.server_version());
    let spool = match &config.cluster.spool_dir {
        Some(dir) => {
            let spool = collector::spool::Spool::open(dir, config.cluster.spool_max_mb.saturating_mul(1 << 20))?;
            let waiting = spool.stats().events.load(std::sync::atomic::Ordering::Relaxed);
            println!("spool: {} ({waiting} events waiting from before)", dir.display());
            Some(Arc::new(spool))
        }
        None => None,
    };
    let collector = Arc::new(
        collector::cluster::ClusterCollector::start(
            &nats,
            setup,
            clock,
            config.cluster.heartbeat(),
            cluster::PublisherConfig::default(),
            spool,
        )
        .await?,
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (metrics_addr, metrics) = {
        let c = collector.clone();
        serve_metrics(&config, move |m: &mut Exposition| c.render_metrics(m), stop_rx).await?
    };
    println!("syslog: {}", collector.collector().bound().join(" "));
    if let Some(note) = &tls_note {
        println!("tls certificate: {note}");
    }
    println!("event-id slot: {}", collector.slot());
    println!("metrics: http://{metrics_addr}/metrics");
    stop.wait().await;
    eprintln!("vigil collector: stopping: draining listeners, waiting for JetStream to acknowledge");
    let (accepted, acknowledged, spooled) = collector.stop(Duration::from_secs(30)).await;
    let _ = stop_tx.send(true);
    let _ = metrics.await;
    println!(
        "vigil collector: stopped; {accepted} events accepted, {acknowledged} acknowledged by JetStream, \
         {spooled} in the spool (sent at the next start)"
    );
    if acknowledged + spooled < accepted {
        eprintln!(
            "vigil collector: {} accepted events were not acknowledged in 30 s; their senders get no ack",
            accepted - acknowledged - spooled
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `vigil worker`.
pub fn worker(args: WorkerArgs) -> Result<ExitCode> {
    let mut config = load(&args.cluster, args.node.as_ref(), NodeRole::Worker)?;
    if let Some(d) = &args.data_dir {
        config.data_dir = d.clone();
    }
    config.storage.validate()?;
    config.rules.validate()?;
    runtime()?.block_on(run_worker(config))
}

async fn run_worker(config: RunConfig) -> Result<ExitCode> {
    let stop = Shutdown::listen()?;
    let node = node_name(&config)?;
    let rules = super::run::compile_rules(&config)?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let nats = connect(&config, &format!("vigil worker {node}")).await?;
    let setup = worker::cluster::ClusterWorkerSetup {
        node: node.clone(),
        data_dir: config.data_dir.clone(),
        storage: config.storage.clone(),
        rules,
        engine: config.rules.engine_config(),
        lease_ttl: config.cluster.lease_ttl(),
        replay: Duration::from_secs(config.cluster.replay_secs),
        heartbeat: config.cluster.heartbeat(),
        checkpoint_every: config.cluster.checkpoint_every(),
    };
    println!("vigil worker {node} {} (NATS {})", env!("CARGO_PKG_VERSION"), nats.server_version());
    let worker = Arc::new(worker::cluster::ClusterWorker::start(&nats, setup, clock).await?);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (metrics_addr, metrics) = {
        let w = worker.clone();
        serve_metrics(&config, move |m: &mut Exposition| w.render_metrics(m), stop_rx).await?
    };
    println!("data: {} (events/ Parquet)", config.data_dir.display());
    println!("metrics: http://{metrics_addr}/metrics");
    stop.wait().await;
    eprintln!("vigil worker: stopping: writing, committing and handing back every partition");
    worker.stop().await;
    let _ = stop_tx.send(true);
    let _ = metrics.await;
    println!("vigil worker: stopped");
    Ok(ExitCode::SUCCESS)
}

/// The cluster supervisor's config when a NATS server is given (flag or
/// file); `None` for the API-only supervisor.
pub fn supervisor_config(args: &ClusterArgs, store: &super::admin::StoreArgs) -> Result<Option<RunConfig>> {
    let from_file = match &args.config {
        Some(path) => {
            let text = super::rules::read_text(path)?;
            let c: RunConfig = toml::from_str(&text).with_context(|| format!("invalid config {}", path.display()))?;
            c.cluster.nats.is_some()
        }
        None => false,
    };
    if args.nats.is_none() && !from_file {
        return Ok(None);
    }
    let mut config = load(args, None, NodeRole::Supervisor)?;
    config.data_dir = store.data_dir.clone();
    config.license = store.license.clone().or(config.license);
    if !(0.1..=3600.0).contains(&config.orgs.refresh_secs) {
        bail!("orgs.refresh_secs must be 0.1-3600");
    }
    config.devices.validate().map_err(anyhow::Error::msg)?;
    Ok(Some(config))
}

/// Runs `vigil supervisor --nats`: the record store, the API, the EPS loop
/// over every collector, the node registry and the detection consumer.
pub async fn run_supervisor(
    config: RunConfig,
    store: Arc<supervisor::store::Store>,
    api: tokio::net::TcpListener,
    stop: Shutdown,
) -> Result<ExitCode> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let licence =
        LicenceStatus::load(config.license.as_deref(), &licence::trusted_keys(), licence::date_of(clock.now()));
    let licence_eps = licence.licensed_eps();
    let nats = connect(&config, "vigil supervisor").await?;
    let interval = u32::try_from(config.cluster.interval_secs).unwrap_or(180);
    let setup = supervisor::node::SupervisorSetup {
        licence_eps,
        interval_secs: interval,
        grace_secs: 1,
        guarantees: Default::default(),
        burst_cap_eps: licence_eps,
        org_poll: Duration::from_secs_f64(config.orgs.refresh_secs),
        search: Some(config.search.to_config(&config.data_dir)?),
        // ClusterSupervisor subscribes to the collectors' device reports.
        device_reports: None,
        device_every: Duration::from_secs_f64(config.devices.report_secs),
    };
    let revoker = match &config.cluster.keys_dir {
        Some(dir) => {
            let keys = Arc::new(cluster::auth::ClusterKeys::load(dir).context("cluster.keys_dir")?);
            // The API enrols nodes with them too (POST /api/v1/nodes).
            store.set_cluster_keys(keys.clone());
            Some(Arc::new(supervisor::cluster::Revoker {
                keys,
                system: cluster::connect_system(&config.cluster, dir).await?,
            }))
        }
        None => None,
    };
    let cluster_setup = supervisor::cluster::ClusterSetup {
        partitions: config.cluster.partitions,
        stream_max_bytes: config.cluster.stream_max_mb.saturating_mul(1 << 20),
        missed_heartbeat: config.cluster.missed_heartbeat(),
        cross_org: config.cluster.cross_org,
        revoker,
    };
    let sup = Arc::new(supervisor::cluster::ClusterSupervisor::start(&nats, cluster_setup, setup, store, clock).await?);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let api_addr = api.local_addr()?;
    let app = sup.node().router();
    let mut api_stop = stop_rx.clone();
    let server = tokio::spawn(async move {
        let _ = axum::serve(api, app)
            .with_graceful_shutdown(async move {
                let _ = api_stop.changed().await;
            })
            .await;
    });
    let (metrics_addr, metrics) = {
        let s = sup.clone();
        let runtime = tokio::runtime::Handle::current();
        serve_metrics(
            &config,
            move |m: &mut Exposition| {
                let s = s.clone();
                // The registry is read from the store (async).
                tokio::task::block_in_place(|| runtime.block_on(s.render_metrics(m)));
            },
            stop_rx,
        )
        .await?
    };
    println!(
        "cluster: NATS {} ({}), {} partitions, EPS interval {} s",
        nats.server_version(),
        parsers::redact_url(nats.url()),
        config.cluster.partitions,
        interval
    );
    println!("api: http://{api_addr}/api/v1 (OpenAPI: http://{api_addr}/api/v1/openapi.json)");
    println!("metrics: http://{metrics_addr}/metrics");
    stop.wait().await;
    let _ = stop_tx.send(true);
    let _ = server.await;
    let _ = metrics.await;
    sup.stop().await;
    println!("vigil supervisor: stopped");
    Ok(ExitCode::SUCCESS)
}
