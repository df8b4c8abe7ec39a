//! Test back-ends: a fresh SQLite file always, and a fresh PostgreSQL
//! database when `VIGIL_TEST_PG` holds a server URL (`.ci/run` starts one).

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use sqlx::Connection;
use supervisor::store::{Store, StoreConfig};
use tower::ServiceExt;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A store on one back-end, removed when dropped.
pub struct TestDb {
    pub name: &'static str,
    pub url: String,
    dir: Option<PathBuf>,
    pg: Option<(String, String)>,
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some((admin, db)) = self.pg.take() {
            // Best effort, on a runtime of its own (we may be inside one).
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
                if let Ok(rt) = rt {
                    rt.block_on(async {
                        if let Ok(mut c) = sqlx::AnyConnection::connect(&admin).await {
                            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                                "DROP DATABASE IF EXISTS {db} WITH (FORCE)"
                            )))
                            .execute(&mut c)
                            .await;
                        }
                    });
                }
            })
            .join();
        }
    }
}

fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{prefix}_{}_{n}_{nanos}", std::process::id())
}

/// The back-ends to run on: SQLite, plus PostgreSQL if configured.
pub async fn backends() -> Vec<TestDb> {
    sqlx::any::install_default_drivers();
    let dir = std::env::temp_dir().join(unique("vigil-store-test"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut out = vec![TestDb {
        name: "sqlite",
        url: format!("sqlite://{}?mode=rwc", dir.join("vigil.db").display()),
        dir: Some(dir),
        pg: None,
    }];
    match std::env::var("VIGIL_TEST_PG") {
        Ok(admin) if !admin.is_empty() => {
            let db = unique("vigil_t");
            let mut c = sqlx::AnyConnection::connect(&admin).await.expect("VIGIL_TEST_PG: cannot connect");
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}"))).execute(&mut c).await.unwrap();
            let base = admin.split('?').next().unwrap_or(&admin);
            let url = format!("{}/{db}", &base[..base.rfind('/').unwrap()]);
            out.push(TestDb { name: "postgresql", url, dir: None, pg: Some((admin.clone(), db)) });
        }
        _ => eprintln!("skipped: PostgreSQL (VIGIL_TEST_PG not set); running on SQLite only"),
    }
    out
}

pub async fn open(db: &TestDb, config: StoreConfig) -> Arc<Store> {
    let clock = Arc::new(collector::SystemClock);
    Arc::new(Store::open(&db.url, clock, config).await.unwrap_or_else(|e| panic!("{}: {e}", db.name)))
}

/// One request through the router: status and JSON body (Null if empty).
pub async fn call(
    app: &Router,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(format!("/api/v1{path}"));
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = match body {
        Some(b) => req.header("content-type", "application/json").body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    raw(app, req).await
}

pub async fn raw(app: &Router, req: Request<Body>) -> (StatusCode, Value) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let json = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
    (status, json)
}

/// `call` that must succeed; the body.
pub async fn ok(app: &Router, method: &str, path: &str, token: &str, body: Option<Value>) -> Value {
    let (status, v) = call(app, method, path, Some(token), body).await;
    assert!(status.is_success(), "{method} {path}: {status} {v}");
    v
}

/// The `id` of a created record.
pub fn id(v: &Value) -> i64 {
    v["id"].as_i64().unwrap_or_else(|| panic!("no id in {v}"))
}

/// A new user of `org` with `role` (a name or a role object) and a token
/// of theirs: (user id, token secret, token id).
pub async fn user_token(
    app: &Router,
    root: &str,
    name: &str,
    org: Value,
    role: impl Into<Value>,
    scope: Option<Value>,
) -> (i64, String, i64) {
    let mut body = serde_json::json!({ "name": name, "org": org, "role": role.into() });
    if let Some(s) = scope {
        body["scope"] = s;
    }
    let user = ok(app, "POST", "/users", root, Some(body)).await;
    let token = ok(app, "POST", "/tokens", root, Some(serde_json::json!({ "user_id": id(&user), "name": "t" }))).await;
    (id(&user), token["token_secret"].as_str().unwrap_or_default().to_owned(), id(&token))
}
