//! Record-store benchmark (not a test; run with `cargo bench -p
//! vigil-supervisor --bench store`):
//!
//! 1. ingest rate: `VIGIL_BENCH_INCIDENTS` (default 1,000,000) pipeline
//!    incidents over 1,000 orgs (random org and severity, last seen
//!    advancing over 30 days as a streaming engine reports them) through
//!    [`Ingest::submit`] (backpressure),
//!    then a 10,000-update burst through `try_submit` (caller time and
//!    time until written);
//! 2. incident-list latency through the API router (auth, query, JSON) as
//!    org users and as a Super/Global user, p50/p99/max from hdrhistogram.
//!
//! Runs on SQLite, and on PostgreSQL when `VIGIL_TEST_PG` holds a URL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::Request;
use hdrhistogram::Histogram;
use http_body_util::BodyExt;
use sqlx::Connection;
use supervisor::store::{
    IncidentUpdate, Ingest, IngestConfig, NewOrg, NewToken, NewUser, OrgRef, Principal, RoleRef, Store, StoreConfig,
};
use tower::ServiceExt;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

const ORGS: usize = 1_000;
const REQUESTS: usize = 1_000;

async fn run(name: &str, url: &str, incidents: usize) {
    let store = Arc::new(Store::open(url, Arc::new(collector::SystemClock), StoreConfig::default()).await.unwrap());
    let cli = Principal::cli();
    let root = store.bootstrap_admin(None).await.unwrap().unwrap();
    let started = Instant::now();
    let mut orgs = Vec::with_capacity(ORGS);
    for i in 0..ORGS {
        orgs.push(
            store.create_org(&cli, NewOrg { name: format!("org-{i:04}"), ..NewOrg::default() }).await.unwrap().id,
        );
    }
    eprintln!("{name}: {ORGS} orgs in {:.1} s", started.elapsed().as_secs_f64());

    let (ingest, _task) = Ingest::start(store.clone(), IngestConfig::default());
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let base = 1_790_000_000_000_i64;
    let make = |rng: &mut Rng, i: usize| {
        let org = orgs[(rng.next() % ORGS as u64) as usize];
        // The engine reports incidents as event time advances: spread over
        // 30 days in order, with up to a minute of jitter.
        let last = base + (i as i64) * (30 * 86_400_000) / incidents as i64 + (rng.next() % 60_000) as i64;
        IncidentUpdate {
            rule: ["ssh-brute-force", "port-scan", "ssh-password-spray"][i % 3].into(),
            org_id: org,
            key: format!("src_ip=10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255),
            window_start_ms: last - 60_000,
            title: format!("incident {i}"),
            description: String::new(),
            tags: Vec::new(),
            severity: rules::Severity::ALL[(rng.next() % 5) as usize],
            count: 5,
            first_seen_ms: last - 60_000,
            last_seen_ms: last,
            event_ids: vec![i as u64, i as u64 + 1],
            received_at_ms: None,
        }
    };
    let started = Instant::now();
    for i in 0..incidents {
        ingest.submit(make(&mut rng, i)).await.unwrap();
    }
    ingest.flush().await.unwrap();
    let secs = started.elapsed().as_secs_f64();
    let batches = ingest.stats().batches.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "{name}: ingest {incidents} new incidents: {secs:.1} s = {:.0}/s ({batches} transactions)",
        incidents as f64 / secs
    );

    // A burst of 10,000 updates to existing incidents, as try_submit.
    let mut rng2 = Rng(0x9e37_79b9_7f4a_7c15);
    let burst: Vec<IncidentUpdate> = (0..10_000).map(|i| IncidentUpdate { count: 6, ..make(&mut rng2, i) }).collect();
    let started = Instant::now();
    for u in burst {
        ingest.try_submit(u).unwrap();
    }
    let caller = started.elapsed();
    ingest.flush().await.unwrap();
    let written = started.elapsed();
    println!(
        "{name}: burst of 10,000 updates: caller {:.2} ms total ({:.0} ns each, none refused); written after {:.0} ms = {:.0}/s",
        caller.as_secs_f64() * 1e3,
        caller.as_nanos() as f64 / 10_000.0,
        written.as_secs_f64() * 1e3,
        10_000.0 / written.as_secs_f64()
    );

    // Org users in 10 orgs.
    let mut org_tokens = Vec::new();
    for i in 0..10 {
        let org = orgs[i * 97 % ORGS];
        let user = store
            .create_user(
                &cli,
                NewUser {
                    name: format!("analyst-{i}"),
                    org: OrgRef::Id(org),
                    role: RoleRef::Name("analyst".into()),
                    scope: None,
                },
            )
            .await
            .unwrap();
        let t = store.create_token(&cli, NewToken { user_id: Some(user.id), ..NewToken::default() }).await.unwrap();
        org_tokens.push(t.token_secret);
    }
    let app = supervisor::api::router(store.clone());
    // Same-run baseline: the router's cheapest route (no token, no query).
    let scenarios: [(&str, Vec<String>, &str); 5] = [
        ("baseline: GET /health", vec![root.clone()], "/api/v1/health"),
        ("org user, newest 50", org_tokens.clone(), "/api/v1/incidents"),
        ("org user, high+critical", org_tokens.clone(), "/api/v1/incidents?severity=high,critical&sort=-last_seen"),
        ("Super/Global, newest 50", vec![root.clone()], "/api/v1/incidents"),
        ("Super/Global, high+critical", vec![root.clone()], "/api/v1/incidents?severity=high,critical&sort=-last_seen"),
    ];
    let mut baseline_p99 = 0.0;
    for (label, tokens, path) in scenarios {
        let mut h = Histogram::<u64>::new(3).unwrap();
        let mut items = 0;
        for i in 0..REQUESTS + 50 {
            let token = &tokens[i % tokens.len()];
            let req =
                Request::get(path).header("authorization", format!("Bearer {token}")).body(Body::empty()).unwrap();
            let t = Instant::now();
            let resp = app.clone().oneshot(req).await.unwrap();
            assert!(resp.status().is_success());
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            let elapsed = t.elapsed();
            if i >= 50 {
                h.record(elapsed.as_nanos() as u64).unwrap();
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                items += v["items"].as_array().map_or(0, Vec::len);
            }
        }
        let p99 = h.value_at_quantile(0.99) as f64 / 1e6;
        if baseline_p99 == 0.0 {
            baseline_p99 = p99;
        }
        println!(
            "{name}: list as {label:<28} p50 {:>7.3} ms  p99 {:>7.3} ms  max {:>7.3} ms  ({:.0} items/answer, p99 {:.0}x baseline)",
            h.value_at_quantile(0.5) as f64 / 1e6,
            p99,
            h.max() as f64 / 1e6,
            items as f64 / REQUESTS as f64,
            p99 / baseline_p99
        );
    }
    drop(ingest);
    store.close().await;
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing
    // useful: do a tiny run then, so the code stays exercised.
    let bench = std::env::args().any(|a| a == "--bench");
    let incidents: usize = if bench {
        std::env::var("VIGIL_BENCH_INCIDENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000)
    } else {
        2_000
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        sqlx::any::install_default_drivers();
        let dir = std::env::temp_dir().join(format!("vigil-store-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        run("sqlite", &format!("sqlite://{}?mode=rwc", dir.join("vigil.db").display()), incidents).await;
        let _ = std::fs::remove_dir_all(&dir);
        if let Ok(admin) = std::env::var("VIGIL_TEST_PG") {
            let db = format!("vigil_bench_{}", std::process::id());
            let mut c = sqlx::AnyConnection::connect(&admin).await.unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}"))).execute(&mut c).await.unwrap();
            let base = admin.split('?').next().unwrap();
            run("postgresql", &format!("{}/{db}", &base[..base.rfind('/').unwrap()]), incidents).await;
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE {db} WITH (FORCE)")))
                .execute(&mut c)
                .await
                .unwrap();
        } else {
            eprintln!("skipped: PostgreSQL (VIGIL_TEST_PG not set)");
        }
    });
}
