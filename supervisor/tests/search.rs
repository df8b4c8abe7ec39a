//! Event search through the API: the isolation matrix for every search
//! endpoint (SQL, event pages, histograms, an incident's events) and every
//! kind of caller, SQL that tries to reach another org, refused
//! statements, and the `events` permission. On SQLite and, when
//! `VIGIL_TEST_PG` is set, on PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use bytes::Bytes;
use common::{TestDb, backends, call, id, ok, open, user_token};
use parsers::{DeviceParsers, EventTime, OrgId, Parser};
use serde_json::{Value, json};
use supervisor::store::{IncidentUpdate, Ingest, IngestConfig, StoreConfig};

/// 2023-11-14T22:13:20Z, when the pipeline incidents' events happened.
const AT_SECS: i64 = 1_700_000_000;

struct World {
    app: Router,
    dir: PathBuf,
    root: String,
    scoped: String,
    a_admin: String,
    a_viewer: String,
    a_triage: String,
    b_admin: String,
    org_a: i64,
    org_b: i64,
    inc_a: i64,
    inc_b: i64,
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A new user's token secret.
async fn token(app: &Router, root: &str, name: &str, org: Value, role: Value, scope: Option<Value>) -> String {
    user_token(app, root, name, org, role, scope).await.1
}

/// Writes `n` sshd failures of `org` from `ip`, ids `first..`, a second apart.
fn write_events(dir: &std::path::Path, org: i64, ip: &str, first: u64, n: u64) {
    let now = EventTime::from_unix(AT_SECS, 0, 0);
    let mut w = worker::EventWriter::open(worker::EventWriterConfig::new(dir, &format!("w{org}")), now).unwrap();
    let parsers = DeviceParsers::builtin().unwrap();
    for i in 0..n {
        let t = jiff::Timestamp::from_second(AT_SECS + i as i64).unwrap();
        let line = format!("<38>1 {t} web-01 sshd 1 - - Failed password for root from {ip} port 4000{i} ssh2");
        let mut e = Parser::new().parse(Bytes::from(line), now);
        parsers.classify(&mut e);
        e.org_id = Some(OrgId(org as u32));
        w.append(first + i, &e).unwrap();
    }
    w.flush().unwrap();
}

async fn world(db: &TestDb, tag: &str) -> World {
    let dir = std::env::temp_dir().join(format!("vigil-api-search-{tag}-{}-{}", db.name, std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = open(db, StoreConfig { licence_eps: 10_000, ..StoreConfig::default() }).await;
    let root = store.bootstrap_admin(None).await.unwrap().unwrap();
    let searcher = search::Searcher::new(search::SearchConfig::new(dir.join("events"))).unwrap();
    let app = supervisor::api::router_with_search(store.clone(), Some(searcher));
    let org = |name: &str| json!({ "name": name });
    let org_a = id(&ok(&app, "POST", "/orgs", &root, Some(org("Acme"))).await);
    let org_b = id(&ok(&app, "POST", "/orgs", &root, Some(org("Globex"))).await);
    let org_c = id(&ok(&app, "POST", "/orgs", &root, Some(org("Initech"))).await);
    let scoped = token(&app, &root, "sam", json!("Super/Global"), json!("viewer"), Some(json!(["Acme"]))).await;
    let a_admin = token(&app, &root, "alice", json!(org_a), json!("admin"), None).await;
    let a_viewer = token(&app, &root, "ava", json!(org_a), json!("viewer"), None).await;
    let b_admin = token(&app, &root, "bob", json!(org_b), json!("admin"), None).await;
    // A custom role that reads incidents but not events.
    let perms = json!({ "incidents": ["read"] });
    let triage =
        id(&ok(&app, "POST", "/roles", &a_admin, Some(json!({ "name": "triage", "permissions": perms }))).await);
    let a_triage = token(&app, &root, "tim", json!(org_a), json!(triage), None).await;
    // Events: A 5 from 10.1.0.9, B 7 from 10.2.0.9, C 3 from 10.3.0.9;
    // A's and B's ids are the same numbers on purpose.
    write_events(&dir, org_a, "10.1.0.9", 1, 5);
    write_events(&dir, org_b, "10.2.0.9", 1, 7);
    write_events(&dir, org_c, "10.3.0.9", 100, 3);
    let (ingest, _task) = Ingest::start(store.clone(), IngestConfig::default());
    for (org, ip) in [(org_a, "10.1.0.9"), (org_b, "10.2.0.9")] {
        ingest
            .try_submit(IncidentUpdate {
                rule: "ssh-brute-force".into(),
                org_id: org,
                key: format!("src_ip={ip}"),
                window_start_ms: AT_SECS * 1000,
                title: format!("SSH brute force from {ip}"),
                description: String::new(),
                tags: Vec::new(),
                severity: rules::Severity::High,
                count: 3,
                first_seen_ms: AT_SECS * 1000,
                last_seen_ms: AT_SECS * 1000 + 2000,
                event_ids: vec![1, 2, 3],
                received_at_ms: None,
            })
            .unwrap();
    }
    ingest.flush().await.unwrap();
    let list = ok(&app, "GET", "/incidents?rule=ssh-brute-force", &root, None).await;
    let by_org: BTreeMap<i64, i64> =
        list["items"].as_array().unwrap().iter().map(|i| (i["org_id"].as_i64().unwrap(), id(i))).collect();
    World {
        app,
        dir,
        root,
        scoped,
        a_admin,
        a_viewer,
        a_triage,
        b_admin,
        org_a,
        org_b,
        inc_a: by_org[&org_a],
        inc_b: by_org[&org_b],
    }
}

const RANGE: &str = "from=2023-11-14T00:00:00Z&to=2023-11-15T00:00:00Z";

fn sql(text: &str) -> Value {
    json!({ "sql": text, "from": "2023-11-14T00:00:00Z", "to": "2023-11-15T00:00:00Z" })
}

/// `org_id -> events` as a SQL search by `token` sees them.
async fn orgs_seen(w: &World, token: &str) -> BTreeMap<i64, i64> {
    let a = ok(&w.app, "POST", "/search", token, Some(sql("SELECT org_id, count(*) AS n FROM events GROUP BY org_id")))
        .await;
    a["rows"].as_array().unwrap().iter().map(|r| (r[0].as_i64().unwrap(), r[1].as_i64().unwrap())).collect()
}

#[tokio::test]
async fn every_search_endpoint_shows_a_caller_only_its_orgs() {
    for db in backends().await {
        let w = world(&db, "matrix").await;
        let (a, b) = (w.org_a, w.org_b);
        let all = orgs_seen(&w, &w.root).await;
        assert_eq!(all.values().sum::<i64>(), 15, "{}: root sees every org: {all:?}", db.name);
        assert_eq!(orgs_seen(&w, &w.a_admin).await, BTreeMap::from([(a, 5)]), "{}", db.name);
        assert_eq!(orgs_seen(&w, &w.a_viewer).await, BTreeMap::from([(a, 5)]), "{}", db.name);
        assert_eq!(orgs_seen(&w, &w.b_admin).await, BTreeMap::from([(b, 7)]), "{}", db.name);
        assert_eq!(orgs_seen(&w, &w.scoped).await, BTreeMap::from([(a, 5)]), "{}: scoped to Acme", db.name);

        // SQL that reaches for another org finds nothing of it.
        for attempt in [
            format!("SELECT count(*) FROM events WHERE org_id = {b}"),
            format!("SELECT count(*) FROM (SELECT * FROM events UNION ALL SELECT * FROM events) x WHERE org_id = {b}"),
            "SELECT count(*) FROM events WHERE src_ip = '10.2.0.9'".to_owned(),
            format!("SELECT (SELECT count(*) FROM events e2 WHERE e2.org_id = {b}) FROM events LIMIT 1"),
        ] {
            let r = ok(&w.app, "POST", "/search", &w.a_admin, Some(sql(&attempt))).await;
            assert_eq!(r["rows"][0][0], json!(0), "{}: {attempt}: {r}", db.name);
        }
        for attempt in [
            format!("SELECT * FROM '{}/events/org={b}/'", w.dir.display()),
            format!("CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '{}/events/org={b}/'", w.dir.display()),
        ] {
            let (status, e) = call(&w.app, "POST", "/search", Some(&w.a_admin), Some(sql(&attempt))).await;
            assert_eq!(status.as_u16(), 400, "{}: {attempt}: {e}", db.name);
            assert_eq!(e["error"]["field"], "sql");
        }

        // Event pages and histograms: the caller's orgs; another org by
        // name or id is as unknown as one that does not exist.
        let page = ok(&w.app, "GET", &format!("/events?{RANGE}"), &w.a_admin, None).await;
        let orgs: Vec<i64> = page["items"].as_array().unwrap().iter().map(|e| e["org_id"].as_i64().unwrap()).collect();
        assert_eq!(orgs, vec![a; 5], "{}", db.name);
        for other in [b.to_string(), "Globex".into(), "999".into(), "Nope".into()] {
            let (status, e) =
                call(&w.app, "GET", &format!("/events?{RANGE}&org={other}"), Some(&w.a_admin), None).await;
            assert_eq!(status.as_u16(), 404, "{}: org={other}: {e}", db.name);
            let (status, _) =
                call(&w.app, "GET", &format!("/events/histogram?{RANGE}&org={other}"), Some(&w.a_admin), None).await;
            assert_eq!(status.as_u16(), 404, "{}: histogram org={other}", db.name);
        }
        let page = ok(&w.app, "GET", &format!("/events?{RANGE}&org=Globex&src_ip=10.2.0.0/16"), &w.root, None).await;
        assert_eq!(page["items"].as_array().unwrap().len(), 7, "{}", db.name);
        let h = ok(&w.app, "GET", &format!("/events/histogram?{RANGE}&interval=1d"), &w.b_admin, None).await;
        let total: u64 = h["buckets"].as_array().unwrap().iter().map(|b| b["count"].as_u64().unwrap()).sum();
        assert_eq!(total, 7, "{}: {h}", db.name);

        // An incident's events: its own org's, with the ids it lists, and
        // only for those who see the incident.
        let events = ok(&w.app, "GET", &format!("/incidents/{}/events", w.inc_b), &w.b_admin, None).await;
        let got: Vec<(i64, u64)> = events["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["org_id"].as_i64().unwrap(), e["event_id"].as_u64().unwrap()))
            .collect();
        assert_eq!(got, [(b, 1), (b, 2), (b, 3)], "{}: B's events, not A's of the same ids", db.name);
        for (token, inc) in [(&w.a_admin, w.inc_b), (&w.b_admin, w.inc_a), (&w.scoped, w.inc_b)] {
            let (status, e) = call(&w.app, "GET", &format!("/incidents/{inc}/events"), Some(token), None).await;
            assert_eq!(status.as_u16(), 404, "{}: {e}", db.name);
        }
        // A role that reads incidents but not events: the incident's
        // events yes (they come with the incident), searching no.
        let events = ok(&w.app, "GET", &format!("/incidents/{}/events", w.inc_a), &w.a_triage, None).await;
        assert_eq!(events["items"].as_array().unwrap().len(), 3, "{}", db.name);
        for (method, path, body) in [
            ("POST", "/search".to_owned(), Some(sql("SELECT 1"))),
            ("GET", format!("/events?{RANGE}"), None),
            ("GET", format!("/events/histogram?{RANGE}"), None),
        ] {
            let (status, e) = call(&w.app, method, &path, Some(&w.a_triage), body).await;
            assert_eq!(status.as_u16(), 403, "{}: {method} {path}: {e}", db.name);
        }
        // No token, no search.
        let (status, _) = call(&w.app, "POST", "/search", None, Some(sql("SELECT 1"))).await;
        assert_eq!(status.as_u16(), 401);
    }
}

#[tokio::test]
async fn search_requests_are_checked() {
    let db = backends().await.remove(0);
    let w = world(&db, "requests").await;
    for (body, status, field) in [
        (json!({ "sql": "DROP TABLE events" }), 400, Some("sql")),
        (json!({ "sql": "SELECT 1; SELECT 2" }), 400, Some("sql")),
        (json!({ "sql": "SELECT 1", "limit": 0 }), 400, Some("limit")),
        (json!({ "sql": "SELECT 1", "limit": 10_001 }), 400, Some("limit")),
        (json!({ "sql": "SELECT 1", "from": "yesterday" }), 400, Some("from")),
        (json!({ "sql": "SELECT 1", "extra": 1 }), 422, None),
        (json!({ "sql": 5 }), 422, None),
    ] {
        let (got, e) = call(&w.app, "POST", "/search", Some(&w.root), Some(body.clone())).await;
        assert_eq!(got.as_u16(), status, "{body}: {e}");
        assert_eq!(e["error"]["field"].as_str(), field, "{body}: {e}");
    }
    // A range that ends where (or before) it starts holds nothing.
    for to in ["2023-11-14T00:00:00Z", "2023-11-13T00:00:00Z"] {
        let body = json!({ "sql": "SELECT count(*) FROM events", "from": "2023-11-14T00:00:00Z", "to": to });
        let a = ok(&w.app, "POST", "/search", &w.root, Some(body)).await;
        assert_eq!(a["rows"][0][0], json!(0), "{a}");
    }
    let h =
        ok(&w.app, "GET", "/events/histogram?from=2023-11-14T00:00:00Z&to=2023-11-14T00:00:00Z", &w.root, None).await;
    assert_eq!(h["buckets"], json!([]));
    // The answer: columns, rows, whether cut, and what was read.
    let a = ok(&w.app, "POST", "/search", &w.root, Some(json!({ "sql": "SELECT event_id, src_ip FROM events ORDER BY event_id", "from": "2023-11-14T00:00:00Z", "to": "2023-11-15T00:00:00Z", "limit": 2 }))).await;
    assert_eq!(a["columns"], json!([{ "name": "event_id", "type": "UInt64" }, { "name": "src_ip", "type": "Utf8" }]));
    assert_eq!((a["rows"].as_array().unwrap().len(), &a["truncated"]), (2, &json!(true)));
    assert!(a["stats"]["files"].as_u64().unwrap() >= 3, "{a}");
    // Without a range: the last day by the store's clock, which holds
    // none of these 2023 events.
    let a = ok(&w.app, "POST", "/search", &w.root, Some(json!({ "sql": "SELECT count(*) FROM events" }))).await;
    assert_eq!(a["rows"][0][0], json!(0));
    // Query parameters of the event list are held to their table.
    for bad in ["cursor=nope", "interval=5", "limit=0", "src_ip=", "bogus=1"] {
        let (status, _) = call(&w.app, "GET", &format!("/events?{RANGE}&{bad}"), Some(&w.root), None).await;
        assert_eq!(status.as_u16(), 400, "{bad}");
    }
    let (status, e) = call(&w.app, "GET", &format!("/events?{RANGE}&src_ip=300.0.0.1"), Some(&w.root), None).await;
    assert_eq!(status.as_u16(), 400, "{e}");
}

#[tokio::test]
async fn without_an_event_store_search_is_unavailable() {
    let db = backends().await.remove(0);
    let store = open(&db, StoreConfig { licence_eps: 10_000, ..StoreConfig::default() }).await;
    let root = store.bootstrap_admin(None).await.unwrap().unwrap();
    let app = supervisor::api::router(Arc::clone(&store));
    let (status, e) = call(&app, "POST", "/search", Some(&root), Some(sql("SELECT 1"))).await;
    assert_eq!(status.as_u16(), 503, "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("no event store"), "{e}");
}

#[tokio::test]
async fn retention_is_an_org_setting_and_deboarding_deletes_the_orgs_events() {
    for db in backends().await {
        let w = world(&db, "retention").await;
        let org = ok(&w.app, "GET", &format!("/orgs/{}", w.org_b), &w.root, None).await;
        assert_eq!(org["retention_days"], 90, "{}: the default", db.name);
        let org =
            ok(&w.app, "PATCH", &format!("/orgs/{}", w.org_b), &w.root, Some(json!({ "retention_days": 7 }))).await;
        assert_eq!(org["retention_days"], 7);
        for bad in [0, 36_501] {
            let (status, e) = call(
                &w.app,
                "PATCH",
                &format!("/orgs/{}", w.org_b),
                Some(&w.root),
                Some(json!({ "retention_days": bad })),
            )
            .await;
            assert_eq!(status.as_u16(), 422, "{bad}: {e}");
            assert_eq!(e["error"]["field"], "retention_days");
        }
        // Deboarding takes the org's event files with it, and says so in
        // its answer and its audit entry.
        let b_dir = w.dir.join(format!("events/org={}", w.org_b));
        assert!(b_dir.exists());
        let done = ok(&w.app, "DELETE", &format!("/orgs/{}?confirm=true", w.org_b), &w.root, None).await;
        assert_eq!(done["deleted"]["event_files"], 1, "{}: {done}", db.name);
        assert_eq!(done["deleted"]["event_days"], 1);
        assert!(!b_dir.exists(), "{}", db.name);
        assert!(w.dir.join(format!("events/org={}", w.org_a)).exists(), "other orgs' events stay");
        let audit = ok(&w.app, "GET", "/audit?object_type=org", &w.root, None).await;
        let entry = audit["items"].as_array().unwrap().iter().find(|e| e["action"] == "deboard").cloned().unwrap();
        assert_eq!(entry["after"]["deleted"]["event_files"], 1, "{entry}");
    }
}
