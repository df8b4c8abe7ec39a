//! Connectors, policies and the delivery outbox end to end: real HTTP
//! receivers on loopback, the dispatcher as `vigil run` starts it, the
//! API through the router; on SQLite and, when `VIGIL_TEST_PG` is set,
//! PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use common::{TestDb, backends, call, id, ok, open, user_token};
use serde_json::{Value, json};
use supervisor::notify::DispatchStats;
use supervisor::store::{ConnectorSettings, IncidentUpdate, Ingest, IngestConfig, Store, StoreConfig};

const HMAC_KEY: &str = "hmac-key-do-not-leak-0123456789";
const URL_TOKEN: &str = "T0KEN-in-the-url-do-not-leak";

fn settings() -> ConnectorSettings {
    ConnectorSettings {
        key: Some(Arc::new(connectors::SecretBox::from_key(&[7; 32]))),
        allow_private_targets: true,
        max_attempts: 6,
        retry_base_ms: 20,
        retry_max_ms: 200,
        concurrency: 4,
    }
}

fn config(s: ConnectorSettings) -> StoreConfig {
    StoreConfig { licence_eps: 10_000, connectors: s, ..StoreConfig::default() }
}

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Got {
    headers: HeaderMap,
    body: Vec<u8>,
}

/// An HTTP receiver on loopback answering a scripted sequence of
/// statuses (the last one repeats).
struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Got>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(statuses: Vec<u16>) -> Receiver {
        Receiver::on(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(), statuses)
    }

    fn on(listener: tokio::net::TcpListener, statuses: Vec<u16>) -> Receiver {
        let addr = listener.local_addr().unwrap();
        let got: Arc<Mutex<Vec<Got>>> = Arc::default();
        let app = {
            let got = got.clone();
            Router::new().route(
                "/hook/{token}",
                axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                    let got = got.clone();
                    let statuses = statuses.clone();
                    async move {
                        let mut g = got.lock().unwrap();
                        let n = g.len();
                        g.push(Got { headers, body: body.to_vec() });
                        let status = statuses.get(n).or(statuses.last()).copied().unwrap_or(200);
                        StatusCode::from_u16(status).unwrap()
                    }
                }),
            )
        };
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { addr, got, task }
    }

    fn url(&self) -> String {
        format!("http://{}/hook/{URL_TOKEN}", self.addr)
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Running {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    stats: Arc<DispatchStats>,
}

fn dispatcher(store: &Arc<Store>) -> Running {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let stats = Arc::new(DispatchStats::default());
    let task = tokio::spawn(supervisor::notify::run(store.clone(), stats.clone(), stopped));
    Running { stop, task, stats }
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(30), self.task).await.unwrap().unwrap();
    }
}

fn update(org: i64, key: &str, count: u64) -> IncidentUpdate {
    IncidentUpdate {
        rule: "ssh-brute-force".into(),
        org_id: org,
        key: format!("src_ip={key}"),
        window_start_ms: 1_700_000_000_000,
        title: format!("SSH brute force from {key}"),
        description: "Many failed logins".into(),
        tags: vec!["attack.t1110".into()],
        severity: rules::Severity::High,
        count,
        first_seen_ms: 1_700_000_000_000,
        last_seen_ms: 1_700_000_000_000 + i64::try_from(count).unwrap(),
        event_ids: vec![count],
        received_at_ms: None,
    }
}

/// Waits (bounded) until `GET path` as `token` satisfies `done`.
async fn wait_for(app: &Router, path: &str, token: &str, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..400 {
        let v = ok(app, "GET", path, token, None).await;
        if done(&v) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{path} never reached the expected state: {}", ok(app, "GET", path, token, None).await);
}

struct World {
    store: Arc<Store>,
    app: Router,
    root: String,
    acme: i64,
}

async fn world(db: &TestDb, s: ConnectorSettings) -> World {
    let store = open(db, config(s)).await;
    let root = store.bootstrap_admin(None).await.unwrap().unwrap();
    let app = supervisor::api::router(store.clone());
    let acme = id(&ok(&app, "POST", "/orgs", &root, Some(json!({ "name": "Acme" }))).await);
    World { store, app, root, acme }
}

impl World {
    async fn webhook(&self, name: &str, url: &str) -> i64 {
        let body = json!({ "name": name, "org": "Acme", "type": "webhook", "url": url, "secret": HMAC_KEY,
            "headers": { "X-Team": "soc" }, "timeout_ms": 2_000 });
        id(&ok(&self.app, "POST", "/connectors", &self.root, Some(body)).await)
    }

    async fn policy(&self, name: &str, connector: i64, on: Value, throttle: i64) -> i64 {
        let body = json!({ "name": name, "org": "Acme", "connector": connector, "on": on, "throttle_secs": throttle });
        id(&ok(&self.app, "POST", "/policies", &self.root, Some(body)).await)
    }

    async fn raise(&self, key: &str, count: u64) {
        let (ingest, _task) = Ingest::start(self.store.clone(), IngestConfig::default());
        ingest.submit(update(self.acme, key, count)).await.unwrap();
        ingest.flush().await.unwrap();
    }
}

fn hmac_hex(body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, HMAC_KEY.as_bytes());
    ring::hmac::sign(&key, body).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn a_failing_receiver_gets_the_incident_once_after_three_attempts() {
    for db in backends().await {
        let w = world(&db, settings()).await;
        let rx = Receiver::start(vec![500, 500, 200]).await;
        let hook = w.webhook("acme-hook", &rx.url()).await;
        w.policy("all-new", hook, json!(["created"]), 0).await;
        let d = dispatcher(&w.store);
        w.raise("10.0.0.1", 5).await;
        let list = wait_for(&w.app, "/deliveries", &w.root, |v| v["items"][0]["state"] == "delivered").await;
        let delivery = &list["items"][0];
        let full = ok(&w.app, "GET", &format!("/deliveries/{}", id(delivery)), &w.root, None).await;
        let log = full["attempt_log"].as_array().unwrap();
        let outcomes: Vec<(&str, i64)> =
            log.iter().map(|a| (a["outcome"].as_str().unwrap(), a["status"].as_i64().unwrap())).collect();
        assert_eq!(outcomes, [("retry", 500), ("retry", 500), ("delivered", 200)], "{}: {full}", db.name);
        assert_eq!(full["attempts"], 3);
        let got = rx.got();
        assert_eq!(got.len(), 3, "{}", db.name);
        // Every attempt carries the same delivery id: the receiver keeps one.
        let ids: Vec<&str> = got.iter().map(|g| g.headers["x-vigil-delivery"].to_str().unwrap()).collect();
        assert!(ids.iter().all(|i| *i == full["delivery_id"].as_str().unwrap()), "{ids:?}");
        let last = got.last().unwrap();
        let sig = last.headers["x-vigil-signature"].to_str().unwrap();
        assert_eq!(sig, format!("sha256={}", hmac_hex(&last.body)), "the signature verifies over the body");
        assert_eq!(last.headers["x-team"], "soc");
        let payload: Value = serde_json::from_slice(&last.body).unwrap();
        assert_eq!(payload["event"], "created");
        assert_eq!(payload["incident"]["title"], "SSH brute force from 10.0.0.1");
        assert_eq!(payload["incident"]["tags"], json!(["attack.t1110"]));
        assert!(payload["title"].as_str().unwrap().contains("[HIGH]"), "{payload}");
        let s = &d.stats;
        assert_eq!(s.delivered.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert_eq!(s.retried.load(std::sync::atomic::Ordering::Relaxed), 2);
        d.stop().await;
        w.store.close().await;
    }
}

#[tokio::test]
async fn a_400_fails_at_once_and_a_dead_receiver_is_dead_lettered() {
    for db in backends().await {
        let w = world(&db, ConnectorSettings { max_attempts: 3, ..settings() }).await;
        let bad = Receiver::start(vec![400]).await;
        let hook = w.webhook("refuses", &bad.url()).await;
        w.policy("to-refuser", hook, json!(["created"]), 0).await;
        // A port nobody listens on: connection refused, every time.
        let gone = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let dead = w.webhook("gone", &format!("http://{gone}/hook/x")).await;
        w.policy("to-nowhere", dead, json!(["created"]), 0).await;
        let d = dispatcher(&w.store);
        w.raise("10.0.0.2", 5).await;
        let list = wait_for(&w.app, "/deliveries", &w.root, |v| {
            v["items"].as_array().is_some_and(|i| i.len() == 2 && i.iter().all(|d| d["state"] != "pending"))
        })
        .await;
        let by_connector =
            |name: &str| list["items"].as_array().unwrap().iter().find(|d| d["connector"] == name).cloned();
        let failed = by_connector("refuses").unwrap();
        assert_eq!((failed["state"].as_str(), failed["attempts"].as_i64()), (Some("failed"), Some(1)), "{failed}");
        assert_eq!(failed["last_status"], 400);
        assert_eq!(bad.got().len(), 1, "{}: a 400 is not retried", db.name);
        let dead = by_connector("gone").unwrap();
        assert_eq!((dead["state"].as_str(), dead["attempts"].as_i64()), (Some("dead"), Some(3)), "{dead}");
        assert!(dead["last_error"].as_str().is_some_and(|e| !e.is_empty()));
        let filtered = ok(&w.app, "GET", "/deliveries?state=dead", &w.root, None).await;
        assert_eq!(filtered["items"].as_array().unwrap().len(), 1);
        d.stop().await;
        w.store.close().await;
    }
}

#[tokio::test]
async fn a_pending_delivery_survives_a_restart() {
    for db in backends().await {
        let s = ConnectorSettings { max_attempts: 100, retry_base_ms: 50, retry_max_ms: 100, ..settings() };
        let w = world(&db, s.clone()).await;
        // Reserve a port, then free it: the receiver is down.
        let port = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let hook = w.webhook("later", &format!("http://{port}/hook/{URL_TOKEN}")).await;
        w.policy("p", hook, json!(["created"]), 0).await;
        let d = dispatcher(&w.store);
        w.raise("10.0.0.3", 5).await;
        wait_for(&w.app, "/deliveries", &w.root, |v| v["items"][0]["attempts"].as_i64().unwrap_or(0) >= 2).await;
        d.stop().await;
        w.store.close().await;
        // vigil restarts; the receiver comes back on its address.
        let store = open(&db, config(s)).await;
        let app = supervisor::api::router(store.clone());
        let rx = Receiver::on(tokio::net::TcpListener::bind(port).await.unwrap(), vec![200]);
        let d = dispatcher(&store);
        let list = wait_for(&app, "/deliveries", &w.root, |v| v["items"][0]["state"] == "delivered").await;
        assert_eq!(list["items"].as_array().unwrap().len(), 1, "{}", db.name);
        assert_eq!(rx.got().len(), 1, "{}: delivered once", db.name);
        d.stop().await;
        store.close().await;
    }
}

#[tokio::test]
async fn throttle_holds_under_a_burst_of_updates() {
    for db in backends().await {
        let w = world(&db, settings()).await;
        let hook = w.webhook("h", "http://127.0.0.1:9/hook/x").await;
        let throttled = w.policy("throttled", hook, json!(["created", "updated"]), 3_600).await;
        let every = w.policy("every", hook, json!(["updated"]), 0).await;
        let at_100 = id(&ok(
            &w.app,
            "POST",
            "/policies",
            &w.root,
            Some(json!({ "name": "at-100", "connector": hook, "org": "Acme", "on": ["updated"], "min_count": 100 })),
        )
        .await);
        // 1,000 updates to one incident, in batches as the pipeline sends them.
        let (ingest, _task) = Ingest::start(w.store.clone(), IngestConfig::default());
        for count in 1..=1_000u64 {
            ingest.submit(update(w.acme, "10.0.0.4", count)).await.unwrap();
            if count % 10 == 0 {
                ingest.flush().await.unwrap();
            }
        }
        ingest.flush().await.unwrap();
        let count = |policy: i64| {
            let app = w.app.clone();
            let root = w.root.clone();
            async move {
                let v = ok(&app, "GET", &format!("/deliveries?policy={policy}&limit=1000"), &root, None).await;
                v["items"].as_array().unwrap().len()
            }
        };
        assert_eq!(count(throttled).await, 1, "{}: one notification per throttle window", db.name);
        assert_eq!(count(at_100).await, 1, "{}: the count crossed 100 once", db.name);
        // Without a throttle, every batch that grew the count notifies (the
        // writer takes what is queued: at least one batch per flush).
        let every = count(every).await;
        assert!((99..1_000).contains(&every), "{}: {every}", db.name);
        w.store.close().await;
    }
}

#[tokio::test]
async fn a_digest_gathers_the_incidents_of_its_window_into_one_message() {
    for db in backends().await {
        let w = world(&db, settings()).await;
        let rx = Receiver::start(vec![200]).await;
        let hook = w.webhook("digest-hook", &rx.url()).await;
        let body = json!({ "name": "daily", "org": "Acme", "connector": hook, "on": ["created"], "digest_secs": 1 });
        let policy = ok(&w.app, "POST", "/policies", &w.root, Some(body)).await;
        assert_eq!(policy["digest_secs"], 1);
        let d = dispatcher(&w.store);
        let (ingest, _task) = Ingest::start(w.store.clone(), IngestConfig::default());
        for key in ["10.0.0.7", "10.0.0.8", "10.0.0.9"] {
            ingest.submit(update(w.acme, key, 5)).await.unwrap();
        }
        ingest.flush().await.unwrap();
        let list = wait_for(&w.app, "/deliveries", &w.root, |v| v["items"][0]["state"] == "delivered").await;
        assert_eq!(list["items"].as_array().unwrap().len(), 1, "{}: one digest: {list}", db.name);
        assert_eq!(list["items"][0]["event"], "digest");
        assert_eq!(list["items"][0]["title"], "3 incidents in Acme");
        let got = rx.got();
        assert_eq!(got.len(), 1);
        let payload: Value = serde_json::from_slice(&got[0].body).unwrap();
        let listed = payload["incident"]["incidents"].as_array().unwrap();
        assert_eq!(listed.len(), 3, "{payload}");
        assert!(payload["body"].as_str().unwrap().contains("SSH brute force from 10.0.0.8"), "{payload}");
        d.stop().await;
        w.store.close().await;
    }
}

/// The dispatcher keeps connectors built between deliveries; a changed
/// configuration is used from the next delivery on.
#[tokio::test]
async fn a_changed_configuration_is_used_at_once() {
    for db in backends().await {
        let w = world(&db, settings()).await;
        let (first, second) = (Receiver::start(vec![200]).await, Receiver::start(vec![200]).await);
        let hook = w.webhook("moving-hook", &first.url()).await;
        w.policy("p", hook, json!(["created"]), 0).await;
        let d = dispatcher(&w.store);
        w.raise("10.0.0.1", 5).await;
        wait_for(&w.app, "/deliveries", &w.root, |v| v["items"][0]["state"] == "delivered").await;
        let patch = json!({ "url": second.url() });
        ok(&w.app, "PATCH", &format!("/connectors/{hook}"), &w.root, Some(patch)).await;
        w.raise("10.0.0.2", 5).await;
        wait_for(&w.app, "/deliveries", &w.root, |v| {
            v["items"].as_array().is_some_and(|i| i.len() == 2 && i.iter().all(|d| d["state"] == "delivered"))
        })
        .await;
        assert_eq!((first.got().len(), second.got().len()), (1, 1), "{}", db.name);
        d.stop().await;
        w.store.close().await;
    }
}

/// A store made by the first connectors release (schema version 7, whose
/// policies had no digest column) gains the column on open and keeps its
/// policies, which send at once (no digest).
#[tokio::test]
async fn a_store_from_before_digests_gains_them() {
    for db in backends().await {
        let w = world(&db, settings()).await;
        let hook = w.webhook("h", "https://hooks.example.com/x").await;
        let before = w.policy("p", hook, json!(["created"]), 0).await;
        w.store.close().await;
        let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&db.url).await.unwrap();
        for sql in ["ALTER TABLE policies DROP COLUMN digest_ms", "DELETE FROM schema_migrations WHERE version = 8"] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await.unwrap();
        }
        sqlx::Connection::close(conn).await.ok();
        let store = open(&db, config(settings())).await;
        let app = supervisor::api::router(store.clone());
        let old = ok(&app, "GET", &format!("/policies/{before}"), &w.root, None).await;
        assert_eq!(old["digest_secs"], 0, "{}: {old}", db.name);
        let body = json!({ "name": "d", "org": "Acme", "connector": hook, "on": ["created"], "digest_secs": 60 });
        assert_eq!(ok(&app, "POST", "/policies", &w.root, Some(body)).await["digest_secs"], 60, "{}", db.name);
        store.close().await;
    }
}

#[tokio::test]
async fn templates_are_checked_when_saved() {
    for db in backends().await {
        let w = world(&db, settings()).await;
        let hook = w.webhook("h", "https://hooks.example.com/x").await;
        for (field, template, needle) in [
            ("title_template", "{{ title", "title"),
            ("body_template", "{% if %}", "body"),
            ("body_template", "{{ no_such_field }}", "no_such_field"),
        ] {
            let body = json!({ "name": "p", "connector": hook, "org": "Acme", "on": ["created"], field: template });
            let (status, v) = call(&w.app, "POST", "/policies", Some(&w.root), Some(body)).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{}: {template}: {v}", db.name);
            assert_eq!(v["error"]["field"], field, "{v}");
            assert!(v["error"]["message"].as_str().unwrap().contains(needle), "{v}");
        }
        let (status, _) = call(&w.app, "GET", "/policies", Some(&w.root), None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(ok(&w.app, "GET", "/policies", &w.root, None).await["items"].as_array().unwrap().is_empty());
        w.store.close().await;
    }
}

#[tokio::test]
async fn analysts_changes_and_manual_actions_notify() {
    for db in backends().await {
        let w = world(&db, settings()).await;
        let rx = Receiver::start(vec![200]).await;
        let body = json!({ "name": "acme-hook", "org": "Acme", "type": "webhook", "url": rx.url(), "default": true });
        let hook = id(&ok(&w.app, "POST", "/connectors", &w.root, Some(body)).await);
        w.policy("status", hook, json!(["status", "severity"]), 0).await;
        let (_, analyst, _) = user_token(&w.app, &w.root, "arthur", json!("Acme"), "analyst", None).await;
        let (_, viewer, _) = user_token(&w.app, &w.root, "ava", json!("Acme"), "viewer", None).await;
        let inc =
            id(&ok(&w.app, "POST", "/incidents", &analyst, Some(json!({ "title": "x", "severity": "low" }))).await);
        let d = dispatcher(&w.store);
        ok(&w.app, "PATCH", &format!("/incidents/{inc}"), &analyst, Some(json!({ "status": "investigating" }))).await;
        ok(&w.app, "PATCH", &format!("/incidents/{inc}"), &analyst, Some(json!({ "title": "renamed" }))).await;
        // A manual action through the org's default configuration.
        let (status, v) =
            call(&w.app, "POST", &format!("/incidents/{inc}/actions"), Some(&analyst), Some(json!({}))).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{}: {v}", db.name);
        assert_eq!(v["event"], "manual");
        let (status, _) =
            call(&w.app, "POST", &format!("/incidents/{inc}/actions"), Some(&viewer), Some(json!({}))).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "viewers do not execute");
        let list = wait_for(&w.app, &format!("/deliveries?incident={inc}"), &analyst, |v| {
            v["items"].as_array().is_some_and(|i| i.len() == 2 && i.iter().all(|d| d["state"] == "delivered"))
        })
        .await;
        let events: Vec<&str> =
            list["items"].as_array().unwrap().iter().map(|d| d["event"].as_str().unwrap()).collect();
        assert_eq!(events, ["manual", "status"], "{}: a title change notifies nobody", db.name);
        let audit = ok(&w.app, "GET", &format!("/audit?object_type=incident&object_id={inc}"), &w.root, None).await;
        assert!(audit["items"].as_array().unwrap().iter().any(|e| e["action"] == "execute"), "{audit}");
        // The health check of a reachable target.
        let test = ok(&w.app, "POST", &format!("/connectors/{hook}/test"), &analyst, None).await;
        assert_eq!(test["ok"], true, "{test}");
        d.stop().await;
        w.store.close().await;
    }
}

/// Every connector endpoint and object, for every kind of user: an org's
/// users see and use their org's configurations and the shared ones
/// granted to it, nothing else (404); no answer ever holds a secret.
#[tokio::test]
async fn tenants_see_only_their_connectors_policies_and_deliveries() {
    for db in backends().await {
        let w = world(&db, settings()).await;
        let (app, root) = (&w.app, w.root.as_str());
        let globex = id(&ok(app, "POST", "/orgs", root, Some(json!({ "name": "Globex" }))).await);
        ok(app, "POST", "/orgs", root, Some(json!({ "name": "Initech" }))).await;
        let (_, a_admin, _) = user_token(app, root, "alice", json!("Acme"), "admin", None).await;
        let (_, a_viewer, _) = user_token(app, root, "ava", json!("Acme"), "viewer", None).await;
        let (_, b_admin, _) = user_token(app, root, "bob", json!("Globex"), "admin", None).await;
        let (_, scoped, _) =
            user_token(app, root, "sam", json!("Super/Global"), "admin", Some(json!(["Initech"]))).await;
        let rx = Receiver::start(vec![200]).await;
        let secret_url = rx.url();
        let new = |name: &str| json!({ "name": name, "type": "webhook", "url": secret_url, "secret": HMAC_KEY });
        let a_hook = id(&ok(app, "POST", "/connectors", &a_admin, Some(new("acme-hook"))).await);
        let b_hook = id(&ok(app, "POST", "/connectors", &b_admin, Some(new("globex-hook"))).await);
        let mut shared = new("provider-slack");
        shared["type"] = json!("slack");
        shared["orgs"] = json!(["Acme"]);
        shared.as_object_mut().unwrap().remove("secret");
        let shared_id = id(&ok(app, "POST", "/connectors", root, Some(shared)).await);
        let policy = |name: &str, c: i64| json!({ "name": name, "connector": c, "on": ["created"] });
        let a_policy = id(&ok(app, "POST", "/policies", &a_admin, Some(policy("acme-p", a_hook))).await);
        let b_policy = id(&ok(app, "POST", "/policies", &b_admin, Some(policy("globex-p", b_hook))).await);
        // A's users may use the shared configuration granted to them; B may not.
        ok(app, "POST", "/policies", &a_admin, Some(policy("acme-shared", shared_id))).await;
        let (s, v) = call(app, "POST", "/policies", Some(&b_admin), Some(policy("globex-shared", shared_id))).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{}: {v}", db.name);
        let (s, _) = call(app, "POST", "/policies", Some(&a_admin), Some(policy("acme-b", b_hook))).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, _) = call(
            app,
            "POST",
            "/connectors",
            Some(&a_admin),
            Some(json!({ "name": "x", "type": "webhook",
            "url": "https://example.com/x", "org": "Globex" })),
        )
        .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "creating into another org");
        let (s, _) = call(app, "POST", "/connectors", Some(&a_viewer), Some(new("viewer-hook"))).await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        let inc_b =
            id(&ok(app, "POST", "/incidents", &b_admin, Some(json!({ "title": "b", "severity": "high" }))).await);
        let inc_a =
            id(&ok(app, "POST", "/incidents", &a_admin, Some(json!({ "title": "a", "severity": "high" }))).await);
        let d = dispatcher(&w.store);
        let b_deliveries = wait_for(app, "/deliveries", &b_admin, |v| {
            v["items"].as_array().is_some_and(|i| i.len() == 1 && i[0]["state"] == "delivered")
        })
        .await;
        let b_delivery = id(&b_deliveries["items"][0]);
        wait_for(app, "/deliveries", &a_admin, |v| v["items"].as_array().is_some_and(|i| i.len() == 2)).await;

        // Every endpoint, as A's admin, against B's objects: not found.
        let cases: Vec<(&str, String, Option<Value>)> = vec![
            ("GET", format!("/connectors/{b_hook}"), None),
            ("PATCH", format!("/connectors/{b_hook}"), Some(json!({ "enabled": false }))),
            ("DELETE", format!("/connectors/{b_hook}"), None),
            ("POST", format!("/connectors/{b_hook}/test"), None),
            ("GET", format!("/policies/{b_policy}"), None),
            ("PATCH", format!("/policies/{b_policy}"), Some(json!({ "enabled": false }))),
            ("DELETE", format!("/policies/{b_policy}"), None),
            ("GET", format!("/deliveries/{b_delivery}"), None),
            ("POST", format!("/incidents/{inc_b}/actions"), Some(json!({}))),
            ("POST", format!("/incidents/{inc_a}/actions"), Some(json!({ "connector": b_hook }))),
            ("GET", format!("/deliveries?org={globex}"), None),
        ];
        for (method, path, body) in &cases {
            for token in [&a_admin, &scoped] {
                let (status, v) = call(app, method, path, Some(token), body.clone()).await;
                assert_eq!(status, StatusCode::NOT_FOUND, "{}: {method} {path}: {v}", db.name);
            }
        }
        // A's shared configuration is visible, but only its administrators change it.
        let (s, _) =
            call(app, "PATCH", &format!("/connectors/{shared_id}"), Some(&a_admin), Some(json!({ "enabled": false })))
                .await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, _) = call(app, "DELETE", &format!("/connectors/{shared_id}"), Some(&a_admin), None).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        // Lists.
        let names = |v: &Value| -> Vec<String> {
            v["items"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap().to_owned()).collect()
        };
        assert_eq!(names(&ok(app, "GET", "/connectors", &a_admin, None).await), ["acme-hook", "provider-slack"]);
        assert_eq!(names(&ok(app, "GET", "/connectors", &b_admin, None).await), ["globex-hook"]);
        assert!(names(&ok(app, "GET", "/connectors", &scoped, None).await) == ["provider-slack"], "scoped to Initech");
        assert_eq!(names(&ok(app, "GET", "/connectors", root, None).await).len(), 3);
        assert_eq!(names(&ok(app, "GET", "/policies", &a_admin, None).await), ["acme-p", "acme-shared"]);
        assert_eq!(names(&ok(app, "GET", "/policies", &b_admin, None).await), ["globex-p"]);
        let a_list = ok(app, "GET", "/deliveries", &a_admin, None).await;
        assert!(a_list["items"].as_array().unwrap().iter().all(|d| d["org"] == "Acme"), "{a_list}");
        // The shared one shows A among its grants to A, and all of them to root only.
        let seen_by_a = ok(app, "GET", &format!("/connectors/{shared_id}"), &a_admin, None).await;
        assert_eq!(seen_by_a["orgs"], json!([w.acme]));
        assert_eq!(seen_by_a["shared"], true);
        // No answer holds a secret, to anyone.
        for token in [root, &a_admin, &b_admin, &scoped, &a_viewer] {
            for path in ["/connectors", "/policies", "/deliveries", "/audit?limit=1000"] {
                let (_, v) = call(app, "GET", path, Some(token), None).await;
                let text = v.to_string();
                assert!(
                    !text.contains(HMAC_KEY) && !text.contains(URL_TOKEN),
                    "{}: {path} leaks a secret: {text}",
                    db.name
                );
            }
        }
        let one = ok(app, "GET", &format!("/connectors/{a_hook}"), &a_admin, None).await;
        assert_eq!(one["secret_set"], true);
        assert_eq!(one["target"], format!("http://{}/…", rx.addr), "{one}");
        // Deleting a configuration a policy uses is refused; then allowed.
        let (s, v) = call(app, "DELETE", &format!("/connectors/{a_hook}"), Some(&a_admin), None).await;
        assert_eq!(s, StatusCode::CONFLICT, "{v}");
        ok(app, "DELETE", &format!("/policies/{a_policy}"), &a_admin, None).await;
        let (s, _) = call(app, "DELETE", &format!("/connectors/{a_hook}"), Some(&a_admin), None).await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        // Changes are audited in the owner's org.
        let audit = ok(app, "GET", "/audit?object_type=connector&limit=1000", &a_admin, None).await;
        let actions: Vec<&str> =
            audit["items"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
        assert!(actions.contains(&"create") && actions.contains(&"delete"), "{audit}");
        d.stop().await;
        w.store.close().await;
    }
}
