//! `vigil bench --notify`: what notifications cost and how fast they go.
//!
//! 1. The ingest path with a notification policy off and on, interleaved
//!    in the same run (`--notify-incidents` new incidents per round, three
//!    rounds each, on a fresh SQLite store with no dispatcher running): the
//!    writer then evaluates the policy and writes a delivery row in each
//!    upsert's transaction. Reported as incidents per second and the ratio
//!    on/off.
//! 2. The dispatcher: a fresh store, a webhook receiver on loopback that
//!    answers 200, the dispatcher as `vigil run` starts it, and as many
//!    incidents raised through the ingest; deliveries per second from the
//!    first incident queued to the last delivery, and the time from a
//!    delivery being queued (in the incident's transaction) to its
//!    delivery, p50/p99. The baseline is the same connector posting the
//!    same number of notifications to the same receiver with the same
//!    concurrency and no store: what the outbox adds is the difference.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use supervisor::store::{
    ConnectorSettings, DeliveryQuery, IncidentUpdate, Ingest, IngestConfig, NameRef, NewConnector, NewOrg, NewPolicy,
    PolicyPatch, Principal, Store, StoreConfig, Trigger,
};

use super::bench::BenchArgs;

/// Timed rounds of each side of the ingest comparison, interleaved.
const ROUNDS: usize = 3;
/// Deliveries in flight at once (the dispatcher's default).
const CONCURRENCY: usize = 16;

/// Runs the notification benchmark.
pub(super) fn run(args: &BenchArgs, dir: &Path) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the runtime")?;
    rt.block_on(bench(args.notify_incidents.max(1), dir))
}

fn settings(dir: &Path) -> Result<ConnectorSettings> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(ConnectorSettings {
        key: Some(Arc::new(connectors::SecretBox::load_or_create(dir)?)),
        allow_private_targets: true,
        max_attempts: 8,
        retry_base_ms: 100,
        retry_max_ms: 1_000,
        concurrency: CONCURRENCY,
    })
}

async fn open(dir: &Path) -> Result<Arc<Store>> {
    let config = StoreConfig { licence_eps: 1_000_000, connectors: settings(dir)?, ..StoreConfig::default() };
    let store = Store::open_data_dir(dir, Arc::new(collector::SystemClock), config).await?;
    Ok(Arc::new(store))
}

/// An org, a webhook configuration to `url` and a policy on created
/// incidents; returns the org's id and the policy's.
async fn setup(store: &Store, url: &str) -> Result<(i64, i64)> {
    let cli = Principal::cli();
    let org = store.create_org(&cli, NewOrg { name: "Bench".into(), ..NewOrg::default() }).await?.id;
    let connector = NewConnector {
        name: "bench-hook".into(),
        org: Some(supervisor::store::OrgRef::Id(org)),
        kind: connectors::Kind::Webhook,
        url: Some(url.to_owned()),
        secret: Some("bench-hmac-key-0123456789abcdef".into()),
        headers: Default::default(),
        to: Vec::new(),
        from: None,
        target: None,
        ca_file: None,
        skip_tls_verify: false,
        timeout_ms: Some(10_000),
        default: true,
        orgs: Vec::new(),
    };
    let connector = store.create_connector(&cli, connector).await?.id;
    let policy = NewPolicy {
        name: "bench-created".into(),
        org: Some(supervisor::store::OrgRef::Id(org)),
        connector: NameRef::Id(connector),
        on: vec![Trigger::Created],
        min_severity: None,
        rule: None,
        tag: None,
        min_count: None,
        title_template: None,
        body_template: None,
        throttle_secs: None,
        digest_secs: None,
    };
    Ok((org, store.create_policy(&cli, policy).await?.id))
}

fn incident(org: i64, n: u64) -> IncidentUpdate {
    IncidentUpdate {
        rule: "ssh-brute-force".into(),
        org_id: org,
        key: format!("src_ip=10.{}.{}.{}", n >> 16 & 255, n >> 8 & 255, n & 255),
        window_start_ms: 1_795_305_600_000 + i64::try_from(n).unwrap_or(0),
        title: format!("SSH brute force #{n}"),
        description: "Many failed logins".into(),
        tags: vec!["attack.t1110".into()],
        severity: rules::Severity::High,
        count: 6,
        first_seen_ms: 1_795_305_600_000,
        last_seen_ms: 1_795_305_660_000,
        event_ids: vec![n],
        received_at_ms: None,
    }
}

/// Raises incidents `first..first + n` through a fresh ingest; seconds
/// until all are committed.
async fn raise(store: &Arc<Store>, org: i64, first: u64, n: u64) -> Result<f64> {
    let (ingest, task) = Ingest::start(store.clone(), IngestConfig::default());
    let start = Instant::now();
    for i in first..first + n {
        ingest.submit(incident(org, i)).await?;
    }
    ingest.flush().await?;
    let secs = start.elapsed().as_secs_f64();
    drop(ingest);
    let _ = task.await;
    Ok(secs)
}

/// A webhook receiver on loopback answering 200, counting requests.
async fn receiver() -> Result<(String, Arc<AtomicU64>, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let got = Arc::new(AtomicU64::new(0));
    let counter = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |_body: axum::body::Bytes| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::Relaxed);
                axum::http::StatusCode::OK
            }
        }),
    );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((format!("http://{addr}/hook"), got, task))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn percentile(sorted: &[i64], q: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn bench(n: u64, dir: &Path) -> Result<()> {
    println!("notifications: {n} incidents per round, one webhook policy on created incidents\n");

    // 1. The ingest path, policy off and on.
    println!("1. ingest (SQLite, no dispatcher): the policy off and on, {ROUNDS} interleaved rounds each");
    let store = open(&dir.join("ingest")).await?;
    let (org, policy) = setup(&store, "http://127.0.0.1:9/unused").await?;
    let cli = Principal::cli();
    let (mut off, mut on) = (Vec::new(), Vec::new());
    let mut next = 0;
    for round in 0..ROUNDS {
        for enabled in [false, true] {
            let patch = PolicyPatch { enabled: Some(enabled), ..PolicyPatch::default() };
            store.update_policy(&cli, &NameRef::Id(policy), patch).await?;
            let secs = raise(&store, org, next, n).await?;
            next += n;
            let rate = n as f64 / secs;
            println!(
                "   round {}: policy {:<3} {rate:>9.0} incidents/s",
                round + 1,
                if enabled { "on" } else { "off" }
            );
            if enabled { &mut on } else { &mut off }.push(rate);
        }
    }
    let queued = store.list_deliveries(&cli, DeliveryQuery { limit: Some(1), ..DeliveryQuery::default() }).await?;
    if queued.items.is_empty() {
        bail!("the policy queued no delivery");
    }
    let (off, on) = (median(off), median(on));
    println!("   median: off {off:.0}/s, on {on:.0}/s: ratio on/off {:.3}", on / off);
    store.close().await;

    // 2. The dispatcher against a local receiver, and its baseline.
    println!("\n2. delivery to a webhook receiver on loopback ({CONCURRENCY} at once)");
    let (url, got, server) = receiver().await?;
    let baseline = baseline(&url, n).await?;
    println!("   baseline, the connector alone (no store): {baseline:.0} deliveries/s");
    got.store(0, Ordering::Relaxed);
    let store = open(&dir.join("dispatch")).await?;
    let (org, _) = setup(&store, &url).await?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let stats = Arc::new(supervisor::notify::DispatchStats::default());
    let dispatcher = tokio::spawn(supervisor::notify::run(store.clone(), stats.clone(), stopped));
    let start = Instant::now();
    let ingest_secs = raise(&store, org, 0, n).await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    while got.load(Ordering::Relaxed) < n {
        if Instant::now() > deadline {
            bail!("only {} of {n} deliveries arrived within 10 minutes", got.load(Ordering::Relaxed));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let _ = stop.send(true);
    let _ = dispatcher.await;
    server.abort();
    let rate = n as f64 / secs;
    println!(
        "   dispatcher: {n} incidents raised in {ingest_secs:.2} s, all {n} delivered after {secs:.2} s: \
         {rate:.0} deliveries/s, ratio to the baseline {:.3}",
        rate / baseline
    );
    let attempts = stats.attempts.load(Ordering::Relaxed);
    println!("   attempts {attempts}, retried {}", stats.retried.load(Ordering::Relaxed));
    let latencies = latencies(&store).await?;
    println!(
        "   queued → delivered: p50 {} ms, p90 {} ms, p99 {} ms, max {} ms ({} deliveries)",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.9),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(0),
        latencies.len()
    );
    store.close().await;
    Ok(())
}

/// Deliveries per second of the connector alone: `n` notifications,
/// [`CONCURRENCY`] at a time, no store.
async fn baseline(url: &str, n: u64) -> Result<f64> {
    let secrets = connectors::Secrets { url: Some(url.to_owned()), secret: Some("bench-hmac-key".into()) };
    let config = connectors::Config { timeout_ms: Some(10_000), ..connectors::Config::default() };
    let settings = connectors::Settings { allow_private_targets: true };
    let connector: Arc<dyn connectors::Connector> =
        Arc::from(connectors::build(connectors::Kind::Webhook, &config, &secrets, settings)?);
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (connector, next) = (connector.clone(), next.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<(), anyhow::Error>(());
                }
                let note = connectors::Notification {
                    delivery_id: format!("{i:032x}"),
                    event: "created".into(),
                    title: format!("[HIGH] SSH brute force #{i} (Bench)"),
                    body: "Incident".into(),
                    org: "Bench".into(),
                    severity: "high".into(),
                    rule: "ssh-brute-force".into(),
                    incident: serde_json::json!({ "id": i, "title": format!("SSH brute force #{i}") }),
                    at_ms: 0,
                };
                match connector.send(&note).await {
                    connectors::Outcome::Delivered { .. } => {}
                    other => bail!("baseline delivery failed: {other:?}"),
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Milliseconds from queued to delivered of every delivery, sorted.
async fn latencies(store: &Store) -> Result<Vec<i64>> {
    let cli = Principal::cli();
    let mut out = Vec::new();
    let mut query = DeliveryQuery { limit: Some(1000), ..DeliveryQuery::default() };
    loop {
        let page = store.list_deliveries(&cli, query.clone()).await?;
        for d in &page.items {
            let (Some(done), created) = (d.done_at.as_deref(), d.created_at.as_str()) else { continue };
            let ms = |s: &str| s.parse::<jiff::Timestamp>().map(|t| t.as_millisecond());
            if let (Ok(a), Ok(b)) = (ms(created), ms(done)) {
                out.push(b - a);
            }
        }
        match page.next_cursor {
            Some(c) => query.cursor = Some(c),
            None => break,
        }
    }
    out.sort_unstable();
    Ok(out)
}
