//! The cluster's node registry on a real store (SQLite, and PostgreSQL when
//! `VIGIL_TEST_PG` is set), on a manual clock: heartbeats, problems and
//! recovery, the sweep of silent nodes, maintenance, guarantees within the
//! licence, the audit of operators' changes, `GET /api/v1/nodes` for node
//! administrators and the unknown-path 404 for everyone else, and the
//! metrics.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use collector::metrics::Exposition;
use common::{TestDb, backends, call};
use http_body_util::BodyExt;
use parsers::{EventTime, ManualClock, NodeHeartbeat, NodeId, NodeRole};
use serde_json::{Value, json};
use sqlx::Connection;
use supervisor::store::{AuditQuery, NodeInfo, NodeState, Principal, Store, StoreConfig, StoreError};
use tower::ServiceExt;

/// 2026-11-22T10:00:00Z.
const T0_MS: i64 = 1_795_341_600_000;

async fn open(db: &TestDb, licence_eps: u64) -> (Arc<Store>, ManualClock) {
    let clock = ManualClock::new(EventTime::from_unix_millis(T0_MS));
    let config = StoreConfig { licence_eps, ..StoreConfig::default() };
    let store =
        Store::open(&db.url, Arc::new(clock.clone()), config).await.unwrap_or_else(|e| panic!("{}: {e}", db.name));
    (Arc::new(store), clock)
}

fn beat(name: &str, role: NodeRole, problems: &[&str]) -> NodeHeartbeat {
    NodeHeartbeat {
        node: NodeId::new(name),
        role,
        version: "0.1.0".into(),
        addresses: vec!["tcp://10.0.0.5:6514".into()],
        problems: problems.iter().map(|p| (*p).to_owned()).collect(),
        // The node's clock is wrong; the registry must not care.
        sent_ms: 42,
    }
}

async fn node(store: &Store, name: &str) -> NodeInfo {
    store.list_nodes().await.unwrap().into_iter().find(|n| n.name.as_str() == name).expect("node listed")
}

/// (from, to, reason) of a node's recent transitions, newest first.
fn moves(n: &NodeInfo) -> Vec<(NodeState, NodeState, String)> {
    n.transitions.iter().map(|t| (t.from, t.to, t.reason.clone())).collect()
}

#[tokio::test]
async fn a_heartbeat_registers_a_node_and_makes_it_active() {
    for db in backends().await {
        let (store, clock) = open(&db, 10_000).await;
        store.node_heartbeat(&beat("edge-1", NodeRole::Collector, &[])).await.unwrap();
        let n = node(&store, "edge-1").await;
        assert_eq!((n.state, n.state_reason.as_str(), n.role), (NodeState::Active, "heartbeat", NodeRole::Collector));
        assert_eq!(n.last_seen_ms, Some(T0_MS), "{}: the store's clock, not the node's", db.name);
        assert_eq!(n.last_seen.as_deref(), Some("2026-11-22T10:00:00Z"));
        assert_eq!(n.state_since, "2026-11-22T10:00:00Z");
        assert_eq!((n.version.as_str(), n.addresses.clone()), ("0.1.0", vec!["tcp://10.0.0.5:6514".to_owned()]));
        assert_eq!((n.guaranteed_eps, n.maintenance), (None, false));
        assert_eq!(moves(&n), [(NodeState::Unregistered, NodeState::Active, "heartbeat".to_owned())]);
        assert_eq!(store.get_node("edge-1").await.unwrap(), n);
        assert!(matches!(store.get_node("edge-9").await, Err(StoreError::NotFound("node"))));

        // Later heartbeats update what the node says and when it was seen,
        // and make no transition while nothing changes.
        clock.advance(5);
        let mut hb = beat("edge-1", NodeRole::Collector, &[]);
        hb.version = "0.2.0".into();
        hb.addresses = vec!["udp://10.0.0.5:514".into(), "tcp://10.0.0.5:601".into()];
        store.node_heartbeat(&hb).await.unwrap();
        let n = node(&store, "edge-1").await;
        assert_eq!((n.version.as_str(), n.addresses.len(), n.last_seen_ms), ("0.2.0", 2, Some(T0_MS + 5_000)));
        assert_eq!((n.transitions.len(), n.state_since_ms), (1, T0_MS), "{}", db.name);

        // Network text is kept, escaped; a bad name is refused.
        let mut hb = beat("edge-2", NodeRole::Worker, &["disk\u{0}full"]);
        hb.version = "x".repeat(1_000);
        hb.problems.extend((0..10_000).map(|i| format!("problem {i}")));
        store.node_heartbeat(&hb).await.unwrap();
        let n = node(&store, "edge-2").await;
        assert_eq!((n.state, n.role), (NodeState::Alert, NodeRole::Worker));
        assert!(n.state_reason.starts_with("disk\\u{0}full; problem 0; problem 1;"), "{}", n.state_reason);
        assert!(n.state_reason.ends_with("; problem 30"), "the first 32 problems: {}", n.state_reason);
        assert_eq!(n.version.len(), 64);
        for bad in ["", " edge", "edge\n3", &"e".repeat(129)] {
            let e = store.node_heartbeat(&beat(bad, NodeRole::Collector, &[])).await.unwrap_err();
            assert!(matches!(e, StoreError::Invalid { field: "node", .. }), "{bad:?}: {e}");
        }
        assert_eq!(store.list_nodes().await.unwrap().len(), 2);
        store.close().await;
    }
}

#[tokio::test]
async fn problems_raise_an_alert_and_health_ends_it() {
    for db in backends().await {
        let (store, clock) = open(&db, 10_000).await;
        store.node_heartbeat(&beat("w-1", NodeRole::Worker, &[])).await.unwrap();
        clock.advance(1);
        store.node_heartbeat(&beat("w-1", NodeRole::Worker, &["disk full", "NATS unreachable"])).await.unwrap();
        let n = node(&store, "w-1").await;
        assert_eq!(
            (n.state, n.state_reason.as_str()),
            (NodeState::Alert, "disk full; NATS unreachable"),
            "{}",
            db.name
        );
        assert_eq!(n.state_since_ms, T0_MS + 1_000);

        // Still unwell, for another reason: the reason follows, the state
        // keeps its start and no transition is added.
        clock.advance(1);
        store.node_heartbeat(&beat("w-1", NodeRole::Worker, &["disk full"])).await.unwrap();
        let n = node(&store, "w-1").await;
        assert_eq!(
            (n.state, n.state_reason.as_str(), n.state_since_ms),
            (NodeState::Alert, "disk full", T0_MS + 1_000)
        );
        assert_eq!(n.transitions.len(), 2);

        clock.advance(1);
        store.node_heartbeat(&beat("w-1", NodeRole::Worker, &[])).await.unwrap();
        let n = node(&store, "w-1").await;
        assert_eq!(
            (n.state, n.state_reason.as_str(), n.state_since_ms),
            (NodeState::Active, "heartbeat", T0_MS + 3_000)
        );
        assert_eq!(
            moves(&n),
            [
                (NodeState::Alert, NodeState::Active, "heartbeat".to_owned()),
                (NodeState::Active, NodeState::Alert, "disk full; NATS unreachable".to_owned()),
                (NodeState::Unregistered, NodeState::Active, "heartbeat".to_owned()),
            ],
            "{}",
            db.name
        );
        assert_eq!(n.transitions[0].at, "2026-11-22T10:00:03Z");
        // An unknown node that reports problems at once goes straight to alert.
        store.node_heartbeat(&beat("w-2", NodeRole::Worker, &["starting"])).await.unwrap();
        assert_eq!(
            moves(&node(&store, "w-2").await),
            [(NodeState::Unregistered, NodeState::Alert, "starting".to_owned())]
        );
        store.close().await;
    }
}

#[tokio::test]
async fn a_silent_node_is_swept_into_alert() {
    for db in backends().await {
        let (store, clock) = open(&db, 10_000).await;
        store.node_heartbeat(&beat("edge-1", NodeRole::Collector, &[])).await.unwrap();
        store.node_heartbeat(&beat("edge-2", NodeRole::Collector, &[])).await.unwrap();
        store.node_heartbeat(&beat("edge-3", NodeRole::Collector, &[])).await.unwrap();
        store.set_node_maintenance("edge-3", true).await.unwrap();
        store.set_node_guarantee("edge-4", Some(10)).await.unwrap(); // unregistered
        clock.advance(20);
        store.node_heartbeat(&beat("edge-2", NodeRole::Collector, &[])).await.unwrap();
        assert_eq!(store.sweep_nodes(30_000).await.unwrap(), [], "{}: 20 s is not 30", db.name);
        clock.advance(15);
        let swept = store.sweep_nodes(30_000).await.unwrap();
        assert_eq!(swept.len(), 1, "{}: only edge-1 is silent for 35 s: {swept:?}", db.name);
        assert_eq!(
            (swept[0].node.as_str(), swept[0].from, swept[0].to, swept[0].reason.as_str()),
            ("edge-1", NodeState::Active, NodeState::Alert, "missed heartbeats for 35 s")
        );
        assert_eq!(swept[0].at_ms, T0_MS + 35_000);
        let n = node(&store, "edge-1").await;
        assert_eq!((n.state, n.state_reason.as_str()), (NodeState::Alert, "missed heartbeats for 35 s"));
        assert_eq!(n.transitions[0], swept[0]);
        // Once is enough; maintenance and unregistered nodes are never swept.
        clock.advance(600);
        let again: Vec<_> = store.sweep_nodes(30_000).await.unwrap().into_iter().map(|t| t.node).collect();
        assert_eq!(again, [NodeId::new("edge-2")], "{}", db.name);
        assert_eq!(node(&store, "edge-3").await.state, NodeState::Maintenance);
        assert_eq!(node(&store, "edge-4").await.state, NodeState::Unregistered);
        // A heartbeat brings it back.
        store.node_heartbeat(&beat("edge-1", NodeRole::Collector, &[])).await.unwrap();
        assert_eq!(node(&store, "edge-1").await.state, NodeState::Active);
        store.close().await;
    }
}

#[tokio::test]
async fn maintenance_holds_the_state_and_keeps_its_transitions() {
    for db in backends().await {
        let (store, clock) = open(&db, 10_000).await;
        store.node_heartbeat(&beat("edge-1", NodeRole::Collector, &[])).await.unwrap();
        clock.advance(1);
        let n = store.set_node_maintenance("edge-1", true).await.unwrap();
        assert_eq!(
            (n.state, n.maintenance, n.state_reason.as_str()),
            (NodeState::Maintenance, true, "maintenance started by cli")
        );
        // Again: nothing changes.
        let again = store.set_node_maintenance("edge-1", true).await.unwrap();
        assert_eq!(again.transitions.len(), 2, "{}", db.name);
        // Problems and silence do not move a node in maintenance.
        clock.advance(1);
        store.node_heartbeat(&beat("edge-1", NodeRole::Collector, &["disk full"])).await.unwrap();
        clock.advance(3_600);
        assert_eq!(store.sweep_nodes(30_000).await.unwrap(), []);
        let n = node(&store, "edge-1").await;
        assert_eq!((n.state, n.last_seen_ms), (NodeState::Maintenance, Some(T0_MS + 2_000)), "{}", db.name);

        let n = store.set_node_maintenance("edge-1", false).await.unwrap();
        assert_eq!((n.state, n.maintenance, n.state_reason.as_str()), (NodeState::Active, false, "maintenance ended"));
        assert_eq!(
            moves(&n),
            [
                (NodeState::Maintenance, NodeState::Active, "maintenance ended".to_owned()),
                (NodeState::Active, NodeState::Maintenance, "maintenance started by cli".to_owned()),
                (NodeState::Unregistered, NodeState::Active, "heartbeat".to_owned()),
            ],
            "{}",
            db.name
        );
        // Silent for an hour: the next sweep flags it.
        assert_eq!(store.sweep_nodes(30_000).await.unwrap().len(), 1);
        // A node never heard from goes back to unregistered.
        store.set_node_guarantee("edge-9", None).await.unwrap();
        store.set_node_maintenance("edge-9", true).await.unwrap();
        let n = store.set_node_maintenance("edge-9", false).await.unwrap();
        assert_eq!(n.state, NodeState::Unregistered, "{}", db.name);
        // Unknown nodes are not found.
        let e = store.set_node_maintenance("nowhere", true).await.unwrap_err();
        assert!(matches!(e, StoreError::NotFound("node")), "{e}");
        // Operators' changes are audited, heartbeats and sweeps are not.
        let audit = store
            .list_audit(&Principal::cli(), AuditQuery { object_type: Some("node".into()), ..AuditQuery::default() })
            .await
            .unwrap();
        let actions: Vec<&str> = audit.items.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(actions, ["maintenance_off", "maintenance_on", "create", "maintenance_off", "maintenance_on"]);
        let last = &audit.items[3];
        assert_eq!((last.actor.as_str(), last.org_id), ("cli", None));
        assert_eq!(last.before.as_ref().map(|b| b["state"].clone()), Some(json!("maintenance")));
        assert_eq!(last.after.as_ref().map(|a| a["state"].clone()), Some(json!("active")));
        store.close().await;
    }
}

#[tokio::test]
async fn transitions_keep_the_last_hundred_per_node() {
    for db in backends().await {
        let (store, clock) = open(&db, 10_000).await;
        store.node_heartbeat(&beat("other", NodeRole::Collector, &[])).await.unwrap();
        for i in 0..130 {
            clock.advance(1);
            let problems: &[&str] = if i % 2 == 0 { &["flapping"] } else { &[] };
            store.node_heartbeat(&beat("edge-1", NodeRole::Collector, problems)).await.unwrap();
        }
        let mut conn = sqlx::AnyConnection::connect(&db.url).await.unwrap();
        let counts: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT node_id, CAST(COUNT(*) AS BIGINT) FROM node_transitions GROUP BY node_id ORDER BY node_id",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        let counts: Vec<i64> = counts.into_iter().map(|(_, n)| n).collect();
        assert_eq!(counts, [1, 100], "{}", db.name);
        conn.close().await.ok();
        let n = node(&store, "edge-1").await;
        assert_eq!(n.transitions.len(), 10);
        assert_eq!(n.transitions[0].at_ms, T0_MS + 130_000, "newest first");
        store.close().await;
    }
}

#[tokio::test]
async fn guarantees_stay_within_the_licence() {
    for db in backends().await {
        let (store, _clock) = open(&db, 1_000).await;
        let n = store.set_node_guarantee("edge-1", Some(600)).await.unwrap();
        assert_eq!((n.state, n.role, n.guaranteed_eps), (NodeState::Unregistered, NodeRole::Collector, Some(600)));
        assert_eq!(n.last_seen, None);
        store.set_node_guarantee("edge-2", Some(400)).await.unwrap();
        for (name, eps) in [("edge-3", 1), ("edge-1", 601)] {
            let e = store.set_node_guarantee(name, Some(eps)).await.unwrap_err();
            assert!(matches!(e, StoreError::Refused { field: "guaranteed_eps", .. }), "{}: {e}", db.name);
            assert_eq!(
                e.to_string(),
                format!(
                    "guaranteed_eps: the nodes' guaranteed EPS would add up to {}, more than the 1000 licensed",
                    1_000 + eps - if name == "edge-1" { 600 } else { 0 }
                ),
            );
        }
        assert!(store.list_nodes().await.unwrap().iter().all(|n| n.name.as_str() != "edge-3"), "nothing registered");
        // Lowering and removing are fine, and make room.
        store.set_node_guarantee("edge-1", Some(500)).await.unwrap();
        store.set_node_guarantee("edge-2", None).await.unwrap();
        store.set_node_guarantee("edge-3", Some(500)).await.unwrap();
        // The node reports later; its guarantee stays.
        store.node_heartbeat(&beat("edge-1", NodeRole::Collector, &[])).await.unwrap();
        let n = node(&store, "edge-1").await;
        assert_eq!((n.state, n.guaranteed_eps), (NodeState::Active, Some(500)));
        // Workers have no guarantee and are not planned over.
        store.node_heartbeat(&beat("w-1", NodeRole::Worker, &[])).await.unwrap();
        let e = store.set_node_guarantee("w-1", Some(1)).await.unwrap_err();
        assert!(e.to_string().contains("w-1 is a worker: only collectors have a guaranteed EPS"), "{e}");
        let e = store.set_node_guarantee("edge-1", Some(u64::MAX)).await.unwrap_err();
        assert!(matches!(e, StoreError::Invalid { field: "guaranteed_eps", .. }), "{e}");
        let plan = store.node_guarantees().await.unwrap();
        let plan: Vec<(&str, u64)> = plan.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(plan, [("edge-1", 500), ("edge-2", 0), ("edge-3", 500)], "{}", db.name);
        // Audited as the local administrator, provider-level.
        let audit = store
            .list_audit(&Principal::cli(), AuditQuery { object_type: Some("node".into()), ..AuditQuery::default() })
            .await
            .unwrap();
        let actions: Vec<&str> = audit.items.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(actions, ["create", "update", "update", "create", "create"], "{}", db.name);
        assert_eq!(audit.items[3].after.as_ref().map(|a| a["guaranteed_eps"].clone()), Some(json!(400)));
        store.close().await;
    }
}

#[tokio::test]
async fn a_store_from_before_the_registry_gains_it() {
    for db in backends().await {
        let (store, _clock) = open(&db, 10_000).await;
        store.close().await;
        // Back to before the registry (and the columns later versions
        // added to it), as a store made before it.
        let mut conn = sqlx::AnyConnection::connect(&db.url).await.unwrap();
        for sql in [
            "DROP TABLE node_transitions",
            "DROP TABLE node_revocations",
            "DROP TABLE nodes",
            "DELETE FROM schema_migrations WHERE version IN (2, 6, 9)",
        ] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await.unwrap();
        }
        conn.close().await.ok();
        let (store, _clock) = open(&db, 10_000).await;
        store.node_heartbeat(&beat("edge-1", NodeRole::Collector, &[])).await.unwrap();
        assert_eq!(store.list_nodes().await.unwrap().len(), 1, "{}", db.name);
        store.close().await;
    }
}

async fn ok(app: &Router, method: &str, path: &str, token: &str, body: Option<Value>) -> Value {
    let (status, v) = call(app, method, path, Some(token), body).await;
    assert!(status.is_success(), "{method} {path}: {status} {v}");
    v
}

async fn token_for(app: &Router, root: &str, name: &str, org: Value, role: &str, scope: Option<Value>) -> String {
    let mut body = json!({ "name": name, "org": org, "role": role });
    if let Some(s) = scope {
        body["scope"] = s;
    }
    let user = ok(app, "POST", "/users", root, Some(body)).await;
    let token = ok(app, "POST", "/tokens", root, Some(json!({ "user_id": user["id"], "name": "t" }))).await;
    token["token_secret"].as_str().unwrap().to_owned()
}

/// Status, headers that could tell two answers apart, and the body bytes.
async fn exact(app: &Router, method: &str, path: &str, token: &str) -> (StatusCode, Vec<(String, String)>, Vec<u8>) {
    let req = Request::builder()
        .method(method)
        .uri(format!("/api/v1{path}"))
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let mut headers: Vec<(String, String)> = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned()))
        .collect();
    headers.sort();
    let body = resp.into_body().collect().await.unwrap().to_bytes().to_vec();
    (status, headers, body)
}

#[tokio::test]
async fn only_node_administrators_see_nodes() {
    for db in backends().await {
        let (store, _clock) = open(&db, 10_000).await;
        let root = store.bootstrap_admin(None).await.unwrap().unwrap();
        let app = supervisor::api::router(store.clone());
        store.node_heartbeat(&beat("edge-1", NodeRole::Collector, &[])).await.unwrap();
        store.set_node_guarantee("edge-1", Some(100)).await.unwrap();
        store.node_heartbeat(&beat("w-1", NodeRole::Worker, &["disk full"])).await.unwrap();

        let (status, v) = call(&app, "GET", "/nodes", Some(&root), None).await;
        assert_eq!(status, StatusCode::OK, "{}: {v}", db.name);
        let names: Vec<&str> = v["nodes"].as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["edge-1", "w-1"]);
        let edge = &v["nodes"][0];
        assert_eq!(
            (&edge["role"], &edge["state"], &edge["guaranteed_eps"], &edge["maintenance"]),
            (&json!("collector"), &json!("active"), &json!(100), &json!(false))
        );
        assert_eq!(edge["last_seen"], "2026-11-22T10:00:00Z");
        assert_eq!(
            edge["transitions"][0],
            json!({ "node": "edge-1", "from": "unregistered", "to": "active", "reason": "heartbeat", "at": "2026-11-22T10:00:00Z" })
        );
        let keys: Vec<&String> = edge.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 15, "the documented fields and no others: {keys:?}");
        assert_eq!((&edge["enrolled"], &edge["org_id"], &edge["slot"]), (&json!(false), &Value::Null, &Value::Null));
        assert_eq!(edge["log_sources_silent"], Value::Null);
        assert_eq!(v["nodes"][1]["state_reason"], "disk full");
        // The endpoint takes no query parameters; GET, POST (enrol) only.
        assert_eq!(call(&app, "GET", "/nodes?limit=5", Some(&root), None).await.0, StatusCode::BAD_REQUEST);
        assert_eq!(
            call(&app, "POST", "/nodes", Some(&root), Some(json!({}))).await.0,
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(call(&app, "PUT", "/nodes", Some(&root), Some(json!({}))).await.0, StatusCode::METHOD_NOT_ALLOWED);
        // Without the cluster's keys nothing can be enrolled.
        let (status, v) =
            call(&app, "POST", "/nodes", Some(&root), Some(json!({ "name": "edge-9", "role": "collector" }))).await;
        assert_eq!(status, StatusCode::CONFLICT, "{v}");
        assert!(v["error"]["message"].as_str().unwrap_or_default().contains("no cluster keys"), "{v}");
        assert_eq!(call(&app, "GET", "/nodes/edge-1", Some(&root), None).await.0, StatusCode::OK);
        assert_eq!(call(&app, "GET", "/nodes/nope", Some(&root), None).await.0, StatusCode::NOT_FOUND);
        // A name no node can have is not found either.
        assert_eq!(call(&app, "GET", "/nodes/a%08b", Some(&root), None).await.0, StatusCode::NOT_FOUND);
        assert_eq!(call(&app, "DELETE", "/nodes/a%0Db", Some(&root), None).await.0, StatusCode::NOT_FOUND);
        assert_eq!(call(&app, "GET", "/nodes", None, None).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(call(&app, "GET", "/nodes", Some("vgl_nope"), None).await.0, StatusCode::UNAUTHORIZED);

        ok(&app, "POST", "/orgs", &root, Some(json!({ "name": "Acme" }))).await;
        let org_admin = token_for(&app, &root, "alice", json!("Acme"), "admin", None).await;
        let org_analyst = token_for(&app, &root, "arthur", json!("Acme"), "analyst", None).await;
        let super_analyst = token_for(&app, &root, "sue", json!("Super/Global"), "analyst", None).await;
        let scoped_admin = token_for(&app, &root, "sam", json!("Super/Global"), "admin", Some(json!(["Acme"]))).await;
        for (who, token) in [
            ("org admin", &org_admin),
            ("org analyst", &org_analyst),
            ("Super/Global analyst", &super_analyst),
            ("scoped Super/Global admin", &scoped_admin),
        ] {
            for path in ["/nodes", "/nodes/edge-1", "/nodes/nope"] {
                for (method, query) in [("GET", ""), ("GET", "?limit=5"), ("HEAD", ""), ("POST", ""), ("DELETE", "")] {
                    let nodes = exact(&app, method, &format!("{path}{query}"), token).await;
                    let unknown = exact(&app, method, &format!("/no-such-endpoint{query}"), token).await;
                    assert_eq!(nodes.0, StatusCode::NOT_FOUND, "{}: {who} {method} {path}{query}", db.name);
                    assert_eq!(nodes, unknown, "{}: {who} {method} {path}{query}", db.name);
                }
            }
            // Nor does the audit log mention nodes.
            let (_, audit) = call(&app, "GET", "/audit", Some(token), None).await;
            let types: Vec<&str> =
                audit["items"].as_array().unwrap().iter().map(|e| e["object_type"].as_str().unwrap()).collect();
            assert!(!types.contains(&"node"), "{who}: {types:?}");
        }
        let (_, audit) = call(&app, "GET", "/audit?object_type=node", Some(&root), None).await;
        assert_eq!(audit["items"].as_array().unwrap().len(), 1, "{audit}");
        store.close().await;
    }
}

#[tokio::test]
async fn node_metrics_have_a_series_per_node() {
    for db in backends().await {
        let (store, _clock) = open(&db, 10_000).await;
        store.node_heartbeat(&beat("edge-1", NodeRole::Collector, &[])).await.unwrap();
        store.set_node_guarantee("edge-1", Some(250)).await.unwrap();
        store.node_heartbeat(&beat("w-\"1\"", NodeRole::Worker, &["disk full"])).await.unwrap();
        store.set_node_guarantee("edge-2", None).await.unwrap();
        let mut m = Exposition::default();
        supervisor::node::render_node_metrics(&store.list_nodes().await.unwrap(), &mut m);
        let text = m.render();
        for line in [
            "vigil_node_up{node=\"edge-1\",role=\"collector\"} 1",
            "vigil_node_up{node=\"w-\\\"1\\\"\",role=\"worker\"} 0",
            "vigil_node_up{node=\"edge-2\",role=\"collector\"} 0",
            "vigil_node_state{node=\"edge-1\",role=\"collector\",state=\"active\"} 1",
            "vigil_node_state{node=\"edge-1\",role=\"collector\",state=\"alert\"} 0",
            "vigil_node_state{node=\"w-\\\"1\\\"\",role=\"worker\",state=\"alert\"} 1",
            "vigil_node_state{node=\"edge-2\",role=\"collector\",state=\"unregistered\"} 1",
            "vigil_node_last_seen_seconds{node=\"edge-1\",role=\"collector\"} 1795341600",
            "vigil_node_guaranteed_eps{node=\"edge-1\"} 250",
            "vigil_node_guaranteed_eps{node=\"edge-2\"} 0",
            "# TYPE vigil_node_state gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "{}: no {line:?} in\n{text}", db.name);
        }
        assert!(!text.contains("vigil_node_last_seen_seconds{node=\"edge-2\""), "never seen: no sample");
        assert_eq!(text.matches("vigil_node_state{").count(), 12);
        store.close().await;
    }
}

/// Enrolment through the API (issue 16): a Super/Global administrator adds
/// a collector bound to an org and gets its credentials once; the node is
/// unregistered until it connects; removing it revokes its key. A second
/// enrolment of the same name is refused until it is removed.
#[tokio::test]
async fn administrators_enrol_and_remove_nodes_through_the_api() {
    for db in backends().await {
        let (store, _clock) = open(&db, 10_000).await;
        let root = store.bootstrap_admin(None).await.unwrap().unwrap();
        store.set_cluster_keys(std::sync::Arc::new(cluster::auth::ClusterKeys::generate()));
        let app = supervisor::api::router(store.clone());
        let acme = ok(&app, "POST", "/orgs", &root, Some(json!({ "name": "Acme" }))).await;
        let new = json!({ "name": "edge-api", "role": "collector", "org": "Acme", "guaranteed_eps": 50 });
        let (status, v) = call(&app, "POST", "/nodes", Some(&root), Some(new.clone())).await;
        assert_eq!(status, StatusCode::CREATED, "{}: {v}", db.name);
        assert_eq!((&v["node"]["state"], &v["node"]["enrolled"]), (&json!("unregistered"), &json!(true)));
        assert_eq!((&v["node"]["org_id"], &v["node"]["guaranteed_eps"]), (&acme["id"], &json!(50)));
        let creds = v["creds"].as_str().unwrap();
        assert!(creds.contains("BEGIN NATS USER JWT") && creds.contains("BEGIN USER NKEY SEED"), "{creds}");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("edge-api.creds"), creds).unwrap();
        let grant = cluster::auth::read_grant(&dir.path().join("edge-api.creds")).unwrap();
        let acme_id = u32::try_from(acme["id"].as_u64().unwrap()).unwrap();
        assert_eq!((grant.node.as_str(), grant.org, grant.slot), ("edge-api", Some(acme_id), Some(1)));
        assert_eq!(store.node_bindings().await.unwrap().get("edge-api"), Some(&acme_id));
        // Enrolled already; bad names, roles and a worker with an org.
        assert_eq!(call(&app, "POST", "/nodes", Some(&root), Some(new)).await.0, StatusCode::CONFLICT);
        for bad in [
            json!({ "name": "a.b", "role": "collector" }),
            json!({ "name": "w", "role": "supervisor" }),
            json!({ "name": "w", "role": "worker", "org": "Acme" }),
            json!({ "name": "w", "role": "worker", "guaranteed_eps": 5 }),
        ] {
            let (status, v) = call(&app, "POST", "/nodes", Some(&root), Some(bad.clone())).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {v}");
        }
        assert_eq!(call(&app, "GET", "/nodes/w", Some(&root), None).await.0, StatusCode::NOT_FOUND);
        let (status, v) = call(&app, "DELETE", "/nodes/edge-api", Some(&root), None).await;
        assert_eq!((status, &v["revoked"]), (StatusCode::OK, &json!(true)), "{v}");
        let revoked = store.node_revocations().await.unwrap();
        assert_eq!(revoked.len(), 1, "{revoked:?}");
        assert!(store.node_bindings().await.unwrap().is_empty());
        assert_eq!(call(&app, "GET", "/nodes/edge-api", Some(&root), None).await.0, StatusCode::NOT_FOUND);
        let (_, audit) = call(&app, "GET", "/audit?object_type=node", Some(&root), None).await;
        let actions: Vec<&str> =
            audit["items"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
        assert!(actions.contains(&"enrol") && actions.contains(&"remove"), "{actions:?}");
        assert!(!audit.to_string().contains("NKEY"), "no credentials in the audit log");
        store.close().await;
    }
}
