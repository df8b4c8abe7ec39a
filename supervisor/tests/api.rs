//! The incident API end to end through the router: the tenant isolation
//! matrix (every endpoint, org users vs other orgs, Super/Global users,
//! scoped Super users, role permissions), Self records, deboarding, EPS
//! limits and request errors. Each test runs on SQLite and, when
//! `VIGIL_TEST_PG` is set, on PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use common::{TestDb, backends, call, id, ok, open, user_token};
use serde_json::{Value, json};
use supervisor::store::{IncidentUpdate, Ingest, IngestConfig, Store, StoreConfig};

/// method, path, token, body, expected status, expected error code.
type Case<'a> = (&'a str, &'a str, Option<&'a str>, Option<Value>, u16, &'a str);

struct World {
    app: Router,
    store: Arc<Store>,
    root: String,
    scoped: String,
    a_admin: String,
    a_analyst: String,
    a_viewer: String,
    b_admin: String,
    org_a: i64,
    org_b: i64,
    org_c: i64,
    a_admin_id: i64,
    b_admin_id: i64,
    b_token_id: i64,
    team_a: i64,
    team_b: i64,
    role_a: i64,
    role_b: i64,
    inc_a: i64,
    inc_b: i64,
    inc_c: i64,
    inc_self: i64,
    alert_b: i64,
    dev_a: i64,
    dev_b: i64,
    dev_c: i64,
}

async fn world(db: &TestDb) -> World {
    let store = open(db, StoreConfig { licence_eps: 10_000, ..StoreConfig::default() }).await;
    let root = store.bootstrap_admin(None).await.unwrap().expect("a new store bootstraps its admin");
    assert!(store.bootstrap_admin(None).await.unwrap().is_none(), "bootstrap happens once");
    let app = supervisor::api::router(store.clone());
    let org = |name: &str, ip: &str| json!({ "name": name, "description": format!("{name} Inc."), "ip_ranges": [ip] });
    let org_a = id(&ok(&app, "POST", "/orgs", &root, Some(org("Acme", "10.1.0.0/16"))).await);
    let org_b = id(&ok(&app, "POST", "/orgs", &root, Some(org("Globex", "10.2.0.0/16"))).await);
    let org_c = id(&ok(&app, "POST", "/orgs", &root, Some(org("Initech", "10.3.0.0/16"))).await);
    let (_, scoped, _) = user_token(&app, &root, "sam", json!("Super/Global"), "admin", Some(json!(["Acme"]))).await;
    let (a_admin_id, a_admin, _) = user_token(&app, &root, "alice", json!(org_a), "admin", None).await;
    let (_, a_analyst, _) = user_token(&app, &root, "arthur", json!("acme"), "analyst", None).await;
    let (_, a_viewer, _) = user_token(&app, &root, "ava", json!(org_a), "viewer", None).await;
    let (b_admin_id, b_admin, b_token_id) = user_token(&app, &root, "bob", json!(org_b), "admin", None).await;
    let team_a =
        id(&ok(&app, "POST", "/teams", &a_admin, Some(json!({ "name": "SOC", "members": [a_admin_id] }))).await);
    let team_b =
        id(&ok(&app, "POST", "/teams", &b_admin, Some(json!({ "name": "SOC", "members": [b_admin_id] }))).await);
    let perms = json!({ "incidents": ["read", "update"], "comments": ["read", "create"] });
    let role_a =
        id(&ok(&app, "POST", "/roles", &a_admin, Some(json!({ "name": "triage", "permissions": perms }))).await);
    let role_b =
        id(&ok(&app, "POST", "/roles", &b_admin, Some(json!({ "name": "triage", "permissions": perms }))).await);
    let incident = |title: &str| json!({ "title": title, "severity": "high" });
    let inc_a = id(&ok(&app, "POST", "/incidents", &a_admin, Some(incident("Acme brute force"))).await);
    let inc_b = id(&ok(&app, "POST", "/incidents", &b_admin, Some(incident("Globex brute force"))).await);
    let inc_c = id(&ok(
        &app,
        "POST",
        "/incidents",
        &root,
        Some(json!({ "title": "Initech scan", "severity": "low", "org": "Initech" })),
    )
    .await);
    let inc_self = id(&ok(&app, "POST", "/incidents", &root, Some(incident("Provider-side finding"))).await);
    ok(&app, "POST", "/alerts", &a_admin, Some(incident("Acme alert"))).await;
    let alert_b = id(&ok(&app, "POST", "/alerts", &b_admin, Some(incident("Globex alert"))).await);
    for (token, inc) in [(&a_admin, inc_a), (&b_admin, inc_b)] {
        ok(&app, "POST", &format!("/incidents/{inc}/comments"), token, Some(json!({ "body": "looking" }))).await;
    }
    // Pipeline incidents for both orgs.
    let (ingest, _task) = Ingest::start(store.clone(), IngestConfig::default());
    for (org, ip) in [(org_a, "10.1.0.9"), (org_b, "10.2.0.9")] {
        ingest
            .try_submit(IncidentUpdate {
                rule: "ssh-brute-force".into(),
                org_id: org,
                key: format!("src_ip={ip}"),
                window_start_ms: 1_700_000_000_000,
                title: format!("SSH brute force from {ip}"),
                description: String::new(),
                tags: Vec::new(),
                severity: rules::Severity::High,
                count: 3,
                first_seen_ms: 1_700_000_000_000,
                last_seen_ms: 1_700_000_060_000,
                event_ids: vec![1, 2, 3],
                received_at_ms: None,
            })
            .unwrap();
    }
    ingest.flush().await.unwrap();
    // A device of each org, as a collector reports them (today: the
    // summary counts recent days).
    let now =
        i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()).unwrap();
    let seen = |org: i64, ip: &str| parsers::DeviceSeen {
        org: parsers::OrgId(u32::try_from(org).unwrap()),
        identity: ip.into(),
        hosts: vec![],
        family: Some("fortigate".into()),
        product: Some("fortigate".into()),
        formats: vec!["rfc5424".into()],
        first_ms: now - 60_000,
        last_ms: now,
        events: 10,
        bytes: 1_000,
        max_gap_ms: 0,
    };
    let report = parsers::DeviceReport {
        node: parsers::NodeId::new("c1"),
        at_ms: now,
        period_ms: 30_000,
        devices: vec![seen(org_a, "10.1.0.5"), seen(org_b, "10.2.0.5"), seen(org_c, "10.3.0.5")],
        overflow: vec![],
    };
    store.merge_devices(&report).await.unwrap();
    let devices = store.list_devices(&supervisor::store::Principal::cli(), Default::default()).await.unwrap().items;
    let dev = |org: i64| devices.iter().find(|d| d.org_id == org).unwrap().id;
    let (dev_a, dev_b, dev_c) = (dev(org_a), dev(org_b), dev(org_c));
    World {
        app,
        store,
        root,
        scoped,
        a_admin,
        a_analyst,
        a_viewer,
        b_admin,
        org_a,
        org_b,
        org_c,
        a_admin_id,
        b_admin_id,
        b_token_id,
        team_a,
        team_b,
        role_a,
        role_b,
        inc_a,
        inc_b,
        inc_c,
        inc_self,
        alert_b,
        dev_a,
        dev_b,
        dev_c,
    }
}

fn items(v: &Value) -> Vec<Value> {
    v["items"].as_array().cloned().unwrap_or_else(|| panic!("no items in {v}"))
}

fn ids_of(v: &Value) -> Vec<i64> {
    items(v).iter().map(id).collect()
}

/// Every endpoint, as a user of org A, against org B's objects.
#[tokio::test]
async fn org_users_get_nothing_of_other_orgs() {
    for db in backends().await {
        let w = world(&db).await;
        let (app, a) = (&w.app, w.a_admin.as_str());
        let b_objects = [
            format!("/incidents/{}", w.inc_b),
            format!("/incidents/{}", w.inc_c),
            format!("/incidents/{}", w.inc_self),
            format!("/alerts/{}", w.alert_b),
            format!("/orgs/{}", w.org_b),
            format!("/users/{}", w.b_admin_id),
            format!("/teams/{}", w.team_b),
            format!("/roles/{}", w.role_b),
        ];
        for path in &b_objects {
            for method in ["GET", "PATCH", "DELETE"] {
                let body = (method == "PATCH").then(|| json!({}));
                // Deboarding takes confirm=true (a request without it is
                // refused before anyone is looked up).
                let path = match (method, path.starts_with("/orgs/")) {
                    ("DELETE", true) => format!("{path}?confirm=true"),
                    _ => path.clone(),
                };
                let (status, v) = call(app, method, &path, Some(a), body).await;
                assert_eq!(status, StatusCode::NOT_FOUND, "{}: {method} {path} as org A: {v}", db.name);
                assert_eq!(v["error"]["code"], "not_found");
            }
        }
        for path in [format!("/incidents/{}/comments", w.inc_b), format!("/alerts/{}/comments", w.alert_b)] {
            let (status, _) = call(app, "GET", &path, Some(a), None).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{}: GET {path}", db.name);
            let (status, _) = call(app, "POST", &path, Some(a), Some(json!({ "body": "x" }))).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{}: POST {path}", db.name);
        }
        for path in [format!("/orgs/{}/disable", w.org_b), format!("/orgs/{}/enable", w.org_b)] {
            let (status, _) = call(app, "POST", &path, Some(a), None).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{}: POST {path}", db.name);
        }
        let (status, _) = call(app, "DELETE", &format!("/tokens/{}", w.b_token_id), Some(a), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{}: revoke B's token", db.name);
        for dev in [w.dev_b, w.dev_c] {
            let path = format!("/devices/{dev}");
            let (status, _) = call(app, "GET", &path, Some(a), None).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{}: GET {path}", db.name);
            let (status, _) = call(app, "PATCH", &path, Some(a), Some(json!({ "name": "mine now" }))).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{}: PATCH {path}", db.name);
        }
        assert_eq!(ids_of(&ok(app, "GET", "/devices", a, None).await), vec![w.dev_a], "{}", db.name);
        for path in ["/devices?org=Globex", "/devices/summary?org=Globex", "/devices?org=999"] {
            let (status, _) = call(app, "GET", path, Some(a), None).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{}: {path}", db.name);
        }
        let summary = ok(app, "GET", "/devices/summary?days=400", a, None).await;
        let orgs: Vec<_> = items(&summary).iter().map(|r| r["org_id"].as_i64().unwrap()).collect();
        assert_eq!(orgs, vec![w.org_a], "{}: {summary}", db.name);
        let (_, v) = call(app, "GET", &format!("/audit?object_type=device&object_id={}", w.dev_b), Some(a), None).await;
        assert!(items(&v).is_empty());

        // Lists hold only org A's objects.
        for kind in ["incidents", "alerts"] {
            let list = ok(app, "GET", &format!("/{kind}?limit=1000"), a, None).await;
            assert!(!items(&list).is_empty());
            for item in items(&list) {
                assert_eq!(item["org_id"], w.org_a, "{}: {kind} list as A: {item}", db.name);
            }
            let counts = ok(app, "GET", &format!("/{kind}/counts"), a, None).await;
            assert_eq!(counts["total"].as_i64().unwrap(), items(&list).len() as i64, "{}: {kind} counts", db.name);
            assert_eq!(counts["by_org"].as_object().unwrap().keys().collect::<Vec<_>>(), vec!["Acme"]);
            // Filtering on another org is "not found", as for a missing one.
            for org in ["Globex", "globex", "Nonexistent"] {
                let (status, _) = call(app, "GET", &format!("/{kind}?org={org}"), Some(a), None).await;
                assert_eq!(status, StatusCode::NOT_FOUND, "{}: {kind}?org={org}", db.name);
                let (status, _) = call(app, "GET", &format!("/{kind}/counts?org={org}"), Some(a), None).await;
                assert_eq!(status, StatusCode::NOT_FOUND);
            }
        }
        assert_eq!(ids_of(&ok(app, "GET", "/orgs", a, None).await), vec![w.org_a]);
        for u in items(&ok(app, "GET", "/users", a, None).await) {
            assert_eq!(u["org_id"], w.org_a);
        }
        assert_eq!(ids_of(&ok(app, "GET", "/teams", a, None).await), vec![w.team_a]);
        let roles = ids_of(&ok(app, "GET", "/roles", a, None).await);
        assert!(roles.contains(&w.role_a) && !roles.contains(&w.role_b), "{}: roles {roles:?}", db.name);
        let tokens = ok(app, "GET", "/tokens", a, None).await;
        assert!(!ids_of(&tokens).contains(&w.b_token_id));
        for e in items(&ok(app, "GET", "/audit?limit=1000", a, None).await) {
            assert_eq!(e["org_id"], w.org_a, "{}: audit entry {e}", db.name);
        }
        let (_, v) =
            call(app, "GET", &format!("/audit?object_type=incident&object_id={}", w.inc_b), Some(a), None).await;
        assert!(items(&v).is_empty());

        // Creating into, or pointing at, org B is refused.
        let (s, _) =
            call(app, "POST", "/incidents", Some(a), Some(json!({ "title": "x", "severity": "low", "org": "Globex" })))
                .await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, _) =
            call(app, "POST", "/users", Some(a), Some(json!({ "name": "mallory", "org": w.org_b, "role": "viewer" })))
                .await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, _) = call(app, "POST", "/teams", Some(a), Some(json!({ "name": "x", "org": "Globex" }))).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, _) =
            call(app, "POST", "/roles", Some(a), Some(json!({ "name": "x", "org": "Globex", "permissions": {} })))
                .await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, _) = call(app, "POST", "/tokens", Some(a), Some(json!({ "user_id": w.b_admin_id }))).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, v) =
            call(app, "PATCH", &format!("/incidents/{}", w.inc_a), Some(a), Some(json!({ "assignee": w.b_admin_id })))
                .await;
        assert_eq!((s, &v["error"]["field"]), (StatusCode::CONFLICT, &json!("assignee")), "{v}");
        let (s, _) =
            call(app, "PATCH", &format!("/teams/{}", w.team_a), Some(a), Some(json!({ "members": [w.b_admin_id] })))
                .await;
        assert_eq!(s, StatusCode::CONFLICT);
        let (s, _) =
            call(app, "POST", "/users", Some(a), Some(json!({ "name": "x2", "org": w.org_a, "role": w.role_b }))).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "another org's custom role");
        let (s, _) = call(
            app,
            "POST",
            "/users",
            Some(a),
            Some(json!({ "name": "x3", "org": "Super/Global", "role": "viewer" })),
        )
        .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "Super/Global is out of an org user's sight");

        // Nothing of B changed.
        let dev_b = ok(app, "GET", &format!("/devices/{}", w.dev_b), &w.b_admin, None).await;
        assert!(dev_b["name"].is_null(), "{dev_b}");
        let b = ok(app, "GET", &format!("/incidents/{}", w.inc_b), &w.b_admin, None).await;
        assert_eq!(b["status"], "open");
        assert_eq!(
            ok(app, "GET", &format!("/incidents/{}/comments", w.inc_b), &w.b_admin, None).await["items"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        // And B sees symmetric results.
        for item in items(&ok(app, "GET", "/incidents", &w.b_admin, None).await) {
            assert_eq!(item["org_id"], w.org_b);
        }
        let _ = &w.store;
        let _ = (w.org_c, w.a_admin_id, w.dev_c);
    }
}

#[tokio::test]
async fn super_users_see_all_or_their_scope() {
    for db in backends().await {
        let w = world(&db).await;
        let app = &w.app;
        let all = ids_of(&ok(app, "GET", "/incidents?limit=1000", &w.root, None).await);
        for inc in [w.inc_a, w.inc_b, w.inc_c, w.inc_self] {
            assert!(all.contains(&inc), "{}: root sees {inc}", db.name);
        }
        let counts = ok(app, "GET", "/incidents/counts", &w.root, None).await;
        assert_eq!(counts["total"].as_i64().unwrap(), all.len() as i64);
        assert_eq!(counts["by_org"]["self"], 1);
        let orgs = ids_of(&ok(app, "GET", "/orgs", &w.root, None).await);
        assert!(orgs.contains(&w.org_b) && orgs.contains(&w.org_c) && orgs.contains(&1) && orgs.contains(&2));

        // Scoped to Acme: Acme's records and Self records, nothing else.
        let s = w.scoped.as_str();
        let seen = ids_of(&ok(app, "GET", "/incidents?limit=1000", s, None).await);
        assert!(seen.contains(&w.inc_a) && seen.contains(&w.inc_self), "{}: scoped sees {seen:?}", db.name);
        assert!(!seen.contains(&w.inc_b) && !seen.contains(&w.inc_c));
        for path in [
            format!("/incidents/{}", w.inc_b),
            format!("/alerts/{}", w.alert_b),
            format!("/orgs/{}", w.org_b),
            format!("/users/{}", w.b_admin_id),
            format!("/teams/{}", w.team_b),
        ] {
            let (status, _) = call(app, "GET", &path, Some(s), None).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{}: scoped GET {path}", db.name);
        }
        let counts = ok(app, "GET", "/incidents/counts", s, None).await;
        let orgs: Vec<_> = counts["by_org"].as_object().unwrap().keys().cloned().collect();
        assert_eq!(orgs, vec!["Acme", "self"]);
        assert_eq!(ids_of(&ok(app, "GET", "/devices", s, None).await), vec![w.dev_a], "{}: scoped devices", db.name);
        let (status, _) = call(app, "GET", &format!("/devices/{}", w.dev_b), Some(s), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let all = ids_of(&ok(app, "GET", "/devices", &w.root, None).await);
        assert_eq!(all, vec![w.dev_a, w.dev_b, w.dev_c], "{}: root sees every org's devices", db.name);
        let globex = ok(app, "GET", "/devices?org=Globex&family=fortigate&q=10.2", &w.root, None).await;
        assert_eq!(ids_of(&globex), vec![w.dev_b]);
        let orgs = ids_of(&ok(app, "GET", "/orgs", s, None).await);
        assert!(orgs.contains(&w.org_a) && !orgs.contains(&w.org_b));
        for e in items(&ok(app, "GET", "/audit?limit=1000", s, None).await) {
            assert!(e["org_id"].is_null() || e["org_id"] == w.org_a, "{}: scoped audit {e}", db.name);
        }
        // A scoped Super user cannot create orgs or widen anyone's reach.
        let (status, _) = call(app, "POST", "/orgs", Some(s), Some(json!({ "name": "Umbrella" }))).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _) =
            call(app, "POST", "/users", Some(s), Some(json!({ "name": "x", "org": "Super/Global", "role": "viewer" })))
                .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _) = call(app, "DELETE", &format!("/orgs/{}?confirm=true", w.org_a), Some(s), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        // But works within its scope.
        ok(app, "PATCH", &format!("/incidents/{}", w.inc_a), s, Some(json!({ "status": "investigating" }))).await;
    }
}

#[tokio::test]
async fn role_permissions_hold() {
    for db in backends().await {
        let w = world(&db).await;
        let app = &w.app;
        let (v, an) = (w.a_viewer.as_str(), w.a_analyst.as_str());
        let inc = format!("/incidents/{}", w.inc_a);
        // Viewer: reads, never writes.
        ok(app, "GET", &inc, v, None).await;
        for (method, path, body) in [
            ("POST", "/incidents".to_owned(), Some(json!({ "title": "x", "severity": "low" }))),
            ("PATCH", inc.clone(), Some(json!({ "status": "closed" }))),
            ("DELETE", inc.clone(), None),
            ("POST", format!("{inc}/comments"), Some(json!({ "body": "x" }))),
            ("POST", "/users".to_owned(), Some(json!({ "name": "x", "org": w.org_a, "role": "viewer" }))),
            ("POST", "/teams".to_owned(), Some(json!({ "name": "x" }))),
            ("POST", "/roles".to_owned(), Some(json!({ "name": "x", "permissions": {} }))),
            ("PATCH", format!("/orgs/{}", w.org_a), Some(json!({ "description": "x" }))),
            ("POST", "/orgs".to_owned(), Some(json!({ "name": "x" }))),
            ("POST", "/tokens".to_owned(), Some(json!({ "user_id": w.a_admin_id }))),
        ] {
            let (status, body) = call(app, method, &path, Some(v), body).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{}: viewer {method} {path}: {body}", db.name);
            assert_eq!(body["error"]["code"], "forbidden");
        }
        // Devices: everyone reads; only a role with devices:update changes them.
        let dev = format!("/devices/{}", w.dev_a);
        ok(app, "GET", &dev, v, None).await;
        for who in [v, an] {
            let (status, body) = call(app, "PATCH", &dev, Some(who), Some(json!({ "name": "edge" }))).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{}: {body}", db.name);
        }
        let named =
            ok(app, "PATCH", &dev, &w.a_admin, Some(json!({ "name": "edge", "expected_interval_secs": 300 }))).await;
        assert_eq!((named["name"].as_str(), named["expected_interval_secs"].as_i64()), (Some("edge"), Some(300)));
        let audit = ok(app, "GET", &format!("/audit?object_type=device&object_id={}", w.dev_a), &w.a_admin, None).await;
        assert_eq!(items(&audit)[0]["after"]["name"], "edge", "{}: {audit}", db.name);
        // A viewer may still make a token for themself.
        ok(app, "POST", "/tokens", v, Some(json!({ "name": "mine" }))).await;
        // Analyst: works incidents, cannot delete them or manage people.
        ok(app, "PATCH", &inc, an, Some(json!({ "status": "investigating", "assignee": w.a_admin_id }))).await;
        ok(app, "POST", &format!("{inc}/comments"), an, Some(json!({ "body": "on it" }))).await;
        let (status, _) = call(app, "DELETE", &inc, Some(an), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _) =
            call(app, "POST", "/users", Some(an), Some(json!({ "name": "y", "org": w.org_a, "role": "viewer" }))).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        // No escalation: an analyst-made role, or a token for an admin.
        let (status, _) = call(app, "POST", "/tokens", Some(an), Some(json!({ "user_id": w.a_admin_id }))).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        // Org admins cannot change orgs, even their own.
        let (status, _) = call(app, "POST", &format!("/orgs/{}/disable", w.org_a), Some(&w.a_admin), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        // A custom role: triage can read and update incidents, not create.
        let (_, tok, _) = {
            let user = ok(
                app,
                "POST",
                "/users",
                &w.a_admin,
                Some(json!({ "name": "tina", "org": w.org_a, "role": "triage" })),
            )
            .await;
            let t = ok(app, "POST", "/tokens", &w.a_admin, Some(json!({ "user_id": id(&user) }))).await;
            (id(&user), t["token_secret"].as_str().unwrap().to_owned(), id(&t))
        };
        ok(app, "PATCH", &inc, &tok, Some(json!({ "severity": "critical" }))).await;
        let (status, _) =
            call(app, "POST", "/incidents", Some(&tok), Some(json!({ "title": "x", "severity": "low" }))).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _) = call(app, "GET", "/alerts", Some(&tok), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        // The role is in use: it cannot be deleted.
        let (status, _) = call(app, "DELETE", &format!("/roles/{}", w.role_a), Some(&w.a_admin), None).await;
        assert_eq!(status, StatusCode::CONFLICT);
        // Built-in roles never change.
        let (status, _) = call(app, "PATCH", "/roles/1", Some(&w.root), Some(json!({ "name": "boss" }))).await;
        assert_eq!(status, StatusCode::CONFLICT);
        // The history shows who did what, in order.
        let rec = ok(app, "GET", &inc, &w.root, None).await;
        let actions: Vec<_> =
            rec["history"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap().to_owned()).collect();
        assert_eq!(actions, ["create", "comment", "update", "comment", "update"], "{}", db.name);
        let last = &rec["history"][4];
        assert_eq!(last["actor"], "tina");
        assert_eq!(last["before"]["severity"], "high");
        assert_eq!(last["after"]["severity"], "critical");
        assert_eq!(rec["owners"], json!([w.team_a]));
    }
}

#[tokio::test]
async fn self_records_take_a_tenant_once() {
    for db in backends().await {
        let w = world(&db).await;
        let app = &w.app;
        let path = format!("/incidents/{}", w.inc_self);
        let rec = ok(app, "GET", &path, &w.root, None).await;
        assert_eq!(rec["self"], true);
        assert!(rec["org"].is_null());
        let (s, _) = call(app, "PATCH", &path, Some(&w.root), Some(json!({ "org": "Super/Global" }))).await;
        assert_eq!(s, StatusCode::CONFLICT);
        let rec = ok(app, "PATCH", &path, &w.root, Some(json!({ "org": "Acme" }))).await;
        assert_eq!(rec["org"], "Acme");
        assert_eq!(rec["self"], false);
        let (s, v) = call(app, "PATCH", &path, Some(&w.root), Some(json!({ "org": "Globex" }))).await;
        assert_eq!(s, StatusCode::CONFLICT, "{v}");
        // Naming the same tenant again is harmless.
        ok(app, "PATCH", &path, &w.root, Some(json!({ "org": w.org_a }))).await;
        // Org A now sees it; B still does not; Acme's teams own it.
        let rec = ok(app, "GET", &path, &w.a_admin, None).await;
        assert_eq!(rec["owners"], json!([w.team_a]));
        let (s, _) = call(app, "GET", &path, Some(&w.b_admin), None).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let history =
            ok(app, "GET", &format!("/audit?object_type=incident&object_id={}", w.inc_self), &w.a_admin, None).await;
        assert!(items(&history).iter().any(|e| e["action"] == "set_tenant"));
        // An org user's records are always their org's.
        let rec = ok(app, "POST", "/incidents", &w.a_admin, Some(json!({ "title": "x", "severity": "low" }))).await;
        assert_eq!(rec["org_id"], w.org_a);
        // The pipeline's incidents carry rule, key and event ids.
        let list = ok(app, "GET", "/incidents?rule=ssh-brute-force", &w.a_admin, None).await;
        let found = items(&list);
        assert_eq!(found.len(), 1);
        let one = ok(app, "GET", &format!("/incidents/{}", id(&found[0])), &w.a_admin, None).await;
        assert_eq!(one["event_ids"], json!([1, 2, 3]));
        assert_eq!(one["count"], 3);
        assert_eq!(one["history"][0]["actor"], "pipeline");
    }
}

#[tokio::test]
async fn deboarding_deletes_an_org_irreversibly_and_only_when_confirmed() {
    for db in backends().await {
        let w = world(&db).await;
        let app = &w.app;
        let (_, b_viewer, _) = user_token(app, &w.root, "bea", json!(w.org_b), "viewer", None).await;
        let path = format!("/orgs/{}", w.org_b);
        let (s, v) = call(app, "DELETE", &path, Some(&w.root), None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        assert!(v["error"]["message"].as_str().unwrap().contains("confirm=true"));
        let (s, _) = call(app, "DELETE", &format!("{path}?confirm=true"), Some(&w.b_admin), None).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "an org cannot deboard itself");
        let (s, _) = call(app, "DELETE", "/orgs/2?confirm=true", Some(&w.root), None).await;
        assert_eq!(s, StatusCode::CONFLICT, "built-in orgs stay");
        let before = ok(app, "GET", "/incidents/counts", &w.root, None).await;
        let gone = ok(app, "DELETE", &format!("{path}?confirm=true"), &w.root, None).await;
        assert_eq!(gone["org"], "Globex");
        assert_eq!(gone["deleted"]["records"], 3, "{}: {gone}", db.name);
        let after = ok(app, "GET", "/incidents/counts", &w.root, None).await;
        assert_eq!(after["total"].as_i64().unwrap(), before["total"].as_i64().unwrap() - 2);
        assert!(after["by_org"].get("Globex").is_none());
        for token in [&w.b_admin, &b_viewer] {
            let (s, _) = call(app, "GET", "/me", Some(token), None).await;
            assert_eq!(s, StatusCode::UNAUTHORIZED, "deboarded users' tokens stop working");
        }
        let (s, _) = call(app, "GET", &format!("/incidents/{}", w.inc_b), Some(&w.root), None).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let audit = ok(app, "GET", "/audit?object_type=org", &w.root, None).await;
        let entry = items(&audit).into_iter().find(|e| e["action"] == "deboard").expect("deboarding is audited");
        assert_eq!(entry["actor"], "admin");
        assert!(entry["org_id"].is_null());
        // Nothing of Globex is left in the audit log but that entry.
        assert!(
            items(&ok(app, "GET", "/audit?limit=1000", &w.root, None).await).iter().all(|e| e["org_id"] != w.org_b)
        );
        // Org A is untouched.
        ok(app, "GET", &format!("/incidents/{}", w.inc_a), &w.a_admin, None).await;
    }
}

#[tokio::test]
async fn eps_limits_stay_within_the_licence() {
    for db in backends().await {
        let store = open(&db, StoreConfig { licence_eps: 1_000, ..StoreConfig::default() }).await;
        let root = store.bootstrap_admin(Some("vgl_test-admin-token-0001")).await.unwrap().unwrap();
        assert_eq!(root, "vgl_test-admin-token-0001");
        let app = supervisor::api::router(store.clone());
        let a = id(&ok(&app, "POST", "/orgs", &root, Some(json!({ "name": "A", "eps_limit": 600 }))).await);
        let (s, v) = call(&app, "POST", "/orgs", Some(&root), Some(json!({ "name": "B", "eps_limit": 500 }))).await;
        assert_eq!(s, StatusCode::CONFLICT, "{v}");
        assert_eq!(v["error"]["field"], "eps_limit");
        let b = id(&ok(&app, "POST", "/orgs", &root, Some(json!({ "name": "B", "eps_limit": 400 }))).await);
        ok(&app, "POST", &format!("/orgs/{a}/disable"), &root, None).await;
        ok(&app, "PATCH", &format!("/orgs/{b}"), &root, Some(json!({ "eps_limit": 900 }))).await;
        let (s, _) = call(&app, "POST", &format!("/orgs/{a}/enable"), Some(&root), None).await;
        assert_eq!(s, StatusCode::CONFLICT, "enabling A would exceed the licence");
        ok(&app, "PATCH", &format!("/orgs/{b}"), &root, Some(json!({ "eps_limit": null }))).await;
        let org = ok(&app, "POST", &format!("/orgs/{a}/enable"), &root, None).await;
        assert_eq!(org["enabled"], true);
        let (s, _) = call(&app, "POST", "/orgs", Some(&root), Some(json!({ "name": "a" }))).await;
        assert_eq!(s, StatusCode::CONFLICT, "names are unique regardless of case");
        let (s, _) = call(&app, "POST", "/orgs/1/disable", Some(&root), None).await;
        assert_eq!(s, StatusCode::CONFLICT);
    }
}

#[tokio::test]
async fn bad_requests_get_clear_json_errors() {
    for db in backends().await {
        let w = world(&db).await;
        let app = &w.app;
        let cases: Vec<Case> = vec![
            ("GET", "/incidents", None, None, 401, "unauthorized"),
            ("GET", "/incidents", Some("vgl_nope"), None, 401, "unauthorized"),
            ("GET", "/nowhere", Some(&w.root), None, 404, "not_found"),
            ("GET", "/incidents/abc", Some(&w.root), None, 400, "bad_request"),
            ("GET", "/incidents/999999", Some(&w.root), None, 404, "not_found"),
            ("GET", "/incidents?stauts=open", Some(&w.root), None, 400, "bad_request"),
            ("GET", "/incidents?status=opne", Some(&w.root), None, 400, "bad_request"),
            ("GET", "/incidents?limit=0", Some(&w.root), None, 400, "bad_request"),
            ("GET", "/incidents?sort=title", Some(&w.root), None, 400, "bad_request"),
            ("GET", "/incidents?cursor=zzz", Some(&w.root), None, 400, "bad_request"),
            ("GET", "/incidents?since=yesterday", Some(&w.root), None, 400, "bad_request"),
            ("POST", "/orgs", Some(&w.root), Some(json!({ "name": "x", "colour": "red" })), 422, "invalid"),
            ("POST", "/orgs", Some(&w.root), Some(json!({ "name": "é".repeat(129) })), 422, "invalid"),
            ("POST", "/orgs", Some(&w.root), Some(json!({ "name": "" })), 422, "invalid"),
            (
                "POST",
                "/orgs",
                Some(&w.root),
                Some(json!({ "name": "ok", "description": "d".repeat(257) })),
                422,
                "invalid",
            ),
            (
                "POST",
                "/orgs",
                Some(&w.root),
                Some(json!({ "name": "ok", "ip_ranges": ["10.0.0.0/33"] })),
                422,
                "invalid",
            ),
            ("POST", "/orgs", Some(&w.root), Some(json!({ "name": "Acme" })), 409, "conflict"),
            (
                "POST",
                "/orgs",
                Some(&w.root),
                Some(json!({ "name": "Acme2", "ip_ranges": ["10.1.0.0/16"] })),
                409,
                "conflict",
            ),
            ("POST", "/incidents", Some(&w.root), Some(json!({ "title": "x", "severity": "huge" })), 422, "invalid"),
            (
                "POST",
                "/users",
                Some(&w.root),
                Some(json!({ "name": "alice", "org": "Acme", "role": "viewer" })),
                409,
                "conflict",
            ),
            (
                "POST",
                "/roles",
                Some(&w.root),
                Some(json!({ "name": "r", "permissions": { "everything": ["read"] } })),
                422,
                "invalid",
            ),
            ("DELETE", "/incidents", Some(&w.root), None, 405, "method_not_allowed"),
        ];
        for (method, path, token, body, status, code) in cases {
            let (s, v) = call(app, method, path, token, body).await;
            assert_eq!(s.as_u16(), status, "{}: {method} {path}: {v}", db.name);
            assert_eq!(v["error"]["code"], code, "{method} {path}: {v}");
            assert!(!v["error"]["message"].as_str().unwrap_or_default().is_empty());
        }
        let (_, v) = call(app, "POST", "/orgs", Some(&w.root), Some(json!({ "name": "é".repeat(129) }))).await;
        assert_eq!(v["error"]["field"], "name");
        assert!(v["error"]["message"].as_str().unwrap().contains("at most 128"), "{v}");
        // Malformed JSON, a wrong content type, an oversized body.
        let req = |ct: &str, body: String| {
            axum::http::Request::builder()
                .method("POST")
                .uri("/api/v1/incidents")
                .header("authorization", format!("Bearer {}", w.root))
                .header("content-type", ct)
                .body(axum::body::Body::from(body))
                .unwrap()
        };
        let (s, v) = common::raw(app, req("application/json", "{\"title\": ".into())).await;
        assert_eq!((s.as_u16(), v["error"]["code"].as_str()), (400, Some("bad_request")), "{v}");
        let (s, v) = common::raw(app, req("text/plain", "{}".into())).await;
        assert_eq!((s.as_u16(), v["error"]["code"].as_str()), (415, Some("unsupported_media_type")), "{v}");
        let big = format!("{{\"title\": \"{}\", \"severity\": \"low\"}}", "x".repeat(supervisor::api::MAX_BODY));
        let (s, v) = common::raw(app, req("application/json", big)).await;
        assert_eq!((s.as_u16(), v["error"]["code"].as_str()), (413, Some("payload_too_large")), "{v}");
        // Nothing was created by any of it.
        let counts = ok(app, "GET", "/incidents/counts", &w.root, None).await;
        assert_eq!(counts["total"], 6, "{}: {counts}", db.name);
    }
}

#[tokio::test]
async fn every_documented_route_is_served() {
    for db in backends().await {
        let store = open(&db, StoreConfig::default()).await;
        let app = supervisor::api::router(store);
        for (method, path) in supervisor::api::ROUTES {
            let mut path = path.replace("{id}", "1");
            if (*method, path.as_str()) == ("delete", "/orgs/1") {
                path.push_str("?confirm=true");
            }
            let (s, v) = call(&app, &method.to_uppercase(), &path, None, None).await;
            let public = matches!(path.as_str(), "/openapi.json" | "/health");
            let expect = if public { StatusCode::OK } else { StatusCode::UNAUTHORIZED };
            assert_eq!(s, expect, "{method} {path}: {v}");
        }
        let (_, doc) = call(&app, "GET", "/openapi.json", None, None).await;
        assert_eq!(doc["openapi"], "3.1.0");
    }
}

#[tokio::test]
async fn lists_paginate_and_sort_without_gaps_or_repeats() {
    for db in backends().await {
        let w = world(&db).await;
        let app = &w.app;
        for i in 0..23 {
            let sev = ["info", "low", "medium", "high", "critical"][i % 5];
            ok(app, "POST", "/incidents", &w.a_admin, Some(json!({ "title": format!("bulk {i}"), "severity": sev })))
                .await;
        }
        let all = ids_of(&ok(app, "GET", "/incidents?limit=1000&sort=id", &w.a_admin, None).await);
        for sort in ["-last_seen", "last_seen", "severity", "-severity", "-id", "count", "created_at", "-first_seen"] {
            let mut seen = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let mut path = format!("/incidents?limit=4&sort={sort}");
                if let Some(c) = &cursor {
                    path.push_str(&format!("&cursor={c}"));
                }
                let page = ok(app, "GET", &path, &w.a_admin, None).await;
                seen.extend(ids_of(&page));
                match page["next_cursor"].as_str() {
                    Some(c) => cursor = Some(c.to_owned()),
                    None => break,
                }
            }
            let mut sorted = seen.clone();
            sorted.sort_unstable();
            let mut expected = all.clone();
            expected.sort_unstable();
            assert_eq!(sorted, expected, "{}: sort {sort} pages", db.name);
        }
        let sev = ok(app, "GET", "/incidents?severity=critical,high&q=BULK", &w.a_admin, None).await;
        assert!(items(&sev).iter().all(|i| i["severity"] == "critical" || i["severity"] == "high"));
        assert_eq!(items(&sev).len(), 8, "{}", db.name);
        let sorted = ok(app, "GET", "/incidents?sort=-severity&limit=3", &w.a_admin, None).await;
        assert!(items(&sorted).iter().all(|i| i["severity"] == "critical"));
        let none = ok(app, "GET", "/incidents?q=100%25_", &w.a_admin, None).await;
        assert!(items(&none).is_empty(), "LIKE wildcards in q are literal");
        let old = ok(app, "GET", "/incidents?until=2000-01-01T00:00:00Z", &w.a_admin, None).await;
        assert!(items(&old).is_empty());
    }
}

/// Every (method, path) of the OpenAPI document that takes a JSON body.
fn body_operations() -> Vec<(String, String)> {
    let doc = supervisor::api::openapi_document();
    let mut out = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            if op.get("requestBody").is_some() {
                out.push((method.to_uppercase(), path.trim_start_matches("/api/v1").to_owned()));
            }
        }
    }
    assert!(out.len() >= 15, "{out:?}");
    out
}

/// Issue 11, defect 7: serde reads a struct from an array of its field
/// values in order, so `PATCH /incidents/ID` with `["closed", "critical"]`
/// set the status and the severity, past the unknown-field check. Every
/// operation that takes a body now refuses anything but a JSON object.
#[tokio::test]
async fn json_arrays_are_accepted_in_place_of_objects() {
    for db in backends().await {
        let w = world(&db).await;
        let app = &w.app;
        let path = format!("/incidents/{}", w.inc_a);
        let (s, v) = call(app, "PATCH", &path, Some(&w.root), Some(json!(["closed", "critical"]))).await;
        assert_eq!((s.as_u16(), v["error"]["code"].as_str()), (422, Some("invalid")), "{}: {v}", db.name);
        assert_eq!(v["error"]["message"], "the request body must be a JSON object, not an array");
        let rec = ok(app, "GET", &path, &w.root, None).await;
        assert_eq!((rec["status"].as_str(), rec["severity"].as_str()), (Some("open"), Some("high")));
        for (method, path) in body_operations() {
            let path = path.replace("{id}", &w.inc_a.to_string());
            for body in [json!([]), json!(["x", "high"]), json!("x"), json!(1), json!(true), Value::Null] {
                let (s, v) = call(app, &method, &path, Some(&w.root), Some(body.clone())).await;
                assert_eq!(s.as_u16(), 422, "{}: {method} {path} {body}: {v}", db.name);
                let message = v["error"]["message"].as_str().unwrap_or_default();
                assert!(message.starts_with("the request body must be a JSON object, not "), "{message}");
            }
        }
        let counts = ok(app, "GET", "/incidents/counts", &w.root, None).await;
        assert_eq!(counts["total"], 6, "{}: nothing was created", db.name);
    }
}

/// The routes of `ROUTES` with ids of objects the root user sees.
fn concrete_routes(w: &World) -> Vec<(String, String)> {
    supervisor::api::ROUTES
        .iter()
        .map(|(method, path)| {
            let id = match path.split('/').nth(1) {
                Some("incidents") => w.inc_a,
                Some("alerts") => w.alert_b,
                Some("orgs") => w.org_a,
                Some("users") => w.a_admin_id,
                Some("teams") => w.team_a,
                Some("roles") => w.role_a,
                Some("devices") => w.dev_a,
                _ => w.b_token_id,
            };
            (method.to_uppercase(), path.replace("{id}", &id.to_string()))
        })
        .collect()
}

/// Issue 11, defect 8: `?bogus=1` and `limit=-5` answered 200 on `/orgs`,
/// `/users`, `/teams`, `/roles`, `/tokens` and the comment lists, which
/// ignored their query strings. Every endpoint now refuses a parameter it
/// does not take, and every list a value out of range, with a 400 naming
/// the parameter.
#[tokio::test]
async fn unknown_query_parameters_are_ignored() {
    for db in backends().await {
        let w = world(&db).await;
        let app = &w.app;
        for (method, path) in concrete_routes(&w) {
            // The query is checked before anything else, body included.
            let (s, v) = call(app, &method, &format!("{path}?bogus=1"), Some(&w.root), None).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{}: {method} {path}?bogus=1: {v}", db.name);
            assert_eq!(v["error"]["field"], "bogus", "{method} {path}: {v}");
            assert!(v["error"]["message"].as_str().unwrap().contains("unknown query parameter `bogus`"), "{v}");
        }
        let lists = [
            "/incidents".to_owned(),
            "/alerts".into(),
            "/incidents/counts".into(),
            "/orgs".into(),
            "/users".into(),
            "/teams".into(),
            "/roles".into(),
            "/tokens".into(),
            "/audit".into(),
            format!("/incidents/{}/comments", w.inc_a),
            format!("/alerts/{}/comments", w.alert_b),
        ];
        for list in &lists {
            for bad in ["limit=-5", "limit=0", "limit=1001", "limit=ten", "limit=5&limit=6"] {
                let (s, v) = call(app, "GET", &format!("{list}?{bad}"), Some(&w.root), None).await;
                assert_eq!(s, StatusCode::BAD_REQUEST, "{}: {list}?{bad}: {v}", db.name);
                assert_eq!(v["error"]["field"], "limit", "{list}?{bad}: {v}");
                assert!(v["error"]["message"].as_str().unwrap().contains("`limit`"), "{v}");
            }
        }
        for ok_query in ["/incidents?limit=1000", "/incidents?limit=1", "/audit?limit=1000", "/alerts?limit=7"] {
            ok(app, "GET", ok_query, &w.root, None).await;
        }
    }
}

/// What the OpenAPI document says about every query parameter is what
/// the API enforces: a value outside the documented type or range is a
/// 400 naming the parameter, for each parameter of each operation.
#[tokio::test]
async fn every_documented_query_parameter_is_enforced() {
    for db in backends().await {
        let w = world(&db).await;
        let doc = supervisor::api::openapi_document();
        let mut checked = 0;
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                for param in op["parameters"].as_array().unwrap().iter().filter(|p| p["in"] == "query") {
                    let name = param["name"].as_str().unwrap();
                    let schema = &param["schema"];
                    let bad: Vec<String> = match schema["type"].as_str().unwrap() {
                        "integer" => vec![
                            format!("{}", schema["maximum"].as_i64().unwrap() as i128 + 1),
                            format!("{}", schema["minimum"].as_i64().unwrap() as i128 - 1),
                            "1.5".into(),
                        ],
                        "boolean" if schema["enum"] == json!([true]) => vec!["false".into(), "yes".into()],
                        "boolean" => vec!["yes".into(), "1".into()],
                        "array" => vec!["".into(), "nope".into(), format!("{},", schema["items"]["enum"][0])],
                        "string" if schema.get("enum").is_some() => vec!["nope".into()],
                        "string" if schema["format"] == "date-time" => {
                            vec!["2026-02-30T00:00:00Z".into(), "now".into()]
                        }
                        "string" => vec!["a%00b".into(), "a%1Bb".into()],
                        other => panic!("{path} {name}: type {other}"),
                    };
                    let path = path.trim_start_matches("/api/v1").replace("{id}", "1");
                    for value in bad {
                        let value = value.replace('"', "");
                        let (s, v) = call(
                            &w.app,
                            &method.to_uppercase(),
                            &format!("{path}?{name}={value}"),
                            Some(&w.root),
                            None,
                        )
                        .await;
                        assert_eq!(s, StatusCode::BAD_REQUEST, "{}: {method} {path}?{name}={value}: {v}", db.name);
                        assert_eq!(v["error"]["field"], name, "{v}");
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 50, "{checked}");
    }
}

/// Issue 11 (text fields accept NUL): PostgreSQL refuses NUL in text (a
/// 500 there) while SQLite stored it. Every text field now refuses control
/// characters on every back-end with an error naming the field; only
/// descriptions and comment bodies, which are multi-line, take tab, line
/// feed and carriage return.
#[tokio::test]
async fn text_fields_accept_nul() {
    for db in backends().await {
        let w = world(&db).await;
        let app = &w.app;
        let inc = format!("/incidents/{}", w.inc_a);
        let org = format!("/orgs/{}", w.org_a);
        for bad in ["\u{0}", "\u{1b}[2J", "\u{7f}", "\u{85}"] {
            let cases: Vec<(&str, String, Value, &str)> = vec![
                ("POST", "/orgs".into(), json!({ "name": format!("a{bad}b") }), "name"),
                ("POST", "/orgs".into(), json!({ "name": "fine", "description": format!("a{bad}") }), "description"),
                ("PATCH", org.clone(), json!({ "name": format!("a{bad}") }), "name"),
                ("PATCH", org.clone(), json!({ "description": format!("a{bad}") }), "description"),
                (
                    "POST",
                    "/users".into(),
                    json!({ "name": format!("u{bad}"), "org": "Acme", "role": "viewer" }),
                    "name",
                ),
                ("POST", "/users".into(), json!({ "name": "u", "org": format!("Acme{bad}"), "role": "viewer" }), "org"),
                (
                    "POST",
                    "/users".into(),
                    json!({ "name": "u", "org": "Acme", "role": format!("viewer{bad}") }),
                    "role",
                ),
                (
                    "POST",
                    "/users".into(),
                    json!({ "name": "u", "org": "Super/Global", "role": "viewer", "scope": [format!("Acme{bad}")] }),
                    "scope",
                ),
                ("POST", "/teams".into(), json!({ "name": format!("t{bad}") }), "name"),
                ("POST", "/teams".into(), json!({ "name": "t", "org": format!("Acme{bad}") }), "org"),
                ("POST", "/roles".into(), json!({ "name": format!("r{bad}"), "permissions": {} }), "name"),
                ("POST", "/tokens".into(), json!({ "name": format!("k{bad}") }), "name"),
                ("POST", "/incidents".into(), json!({ "title": format!("x{bad}"), "severity": "low" }), "title"),
                (
                    "POST",
                    "/incidents".into(),
                    json!({ "title": "x", "severity": "low", "description": format!("d{bad}") }),
                    "description",
                ),
                (
                    "POST",
                    "/incidents".into(),
                    json!({ "title": "x", "severity": "low", "org": format!("Ac{bad}me") }),
                    "org",
                ),
                ("PATCH", inc.clone(), json!({ "title": format!("x{bad}") }), "title"),
                ("PATCH", inc.clone(), json!({ "description": format!("x{bad}") }), "description"),
                ("POST", format!("{inc}/comments"), json!({ "body": format!("c{bad}") }), "body"),
            ];
            for (method, path, body, field) in cases {
                let (s, v) = call(app, method, &path, Some(&w.root), Some(body.clone())).await;
                assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{}: {method} {path} {body}: {v}", db.name);
                assert_eq!(v["error"]["field"], field, "{}: {method} {path} {body}: {v}", db.name);
                assert!(v["error"]["message"].as_str().unwrap().contains("control characters"), "{v}");
            }
            let encoded: String = bad.bytes().map(|b| format!("%{b:02X}")).collect();
            for (list, name) in [
                ("/incidents", "q"),
                ("/incidents", "rule"),
                ("/incidents", "org"),
                ("/alerts/counts", "q"),
                ("/audit", "object_type"),
            ] {
                let (s, v) = call(app, "GET", &format!("{list}?{name}=x{encoded}"), Some(&w.root), None).await;
                assert_eq!(s, StatusCode::BAD_REQUEST, "{}: {list}?{name}: {v}", db.name);
                assert_eq!(v["error"]["field"], name, "{v}");
            }
        }
        // Single-line fields refuse line breaks; multi-line ones keep them.
        let (s, v) = call(app, "PATCH", &inc, Some(&w.root), Some(json!({ "title": "two\nlines" }))).await;
        assert_eq!((s, &v["error"]["field"]), (StatusCode::UNPROCESSABLE_ENTITY, &json!("title")), "{v}");
        let text = "first line\r\n\tsecond line\n";
        let rec = ok(app, "PATCH", &inc, &w.root, Some(json!({ "description": text }))).await;
        assert_eq!(rec["description"], text);
        let c = ok(app, "POST", &format!("{inc}/comments"), &w.root, Some(json!({ "body": text }))).await;
        assert_eq!(c["body"], text);
        let o = ok(app, "PATCH", &org, &w.root, Some(json!({ "description": "Acme\nInc." }))).await;
        assert_eq!(o["description"], "Acme\nInc.");
        // The admin CLI goes through the same checks.
        let e = w
            .store
            .create_org(
                &supervisor::store::Principal::cli(),
                supervisor::store::NewOrg { name: "Nul".into(), description: "a\u{0}".into(), ..Default::default() },
            )
            .await
            .unwrap_err();
        assert!(matches!(e, supervisor::store::StoreError::Invalid { field: "description", .. }), "{e}");
        assert_eq!(items(&ok(app, "GET", "/orgs", &w.root, None).await).len(), 5, "{}: no org was created", db.name);
    }
}

/// `null` is taken exactly where the document says a field is nullable
/// (`eps_limit`, `assignee`, `scope`: "none"); anywhere else it is refused
/// like any other wrong type, not read as "field left out".
#[tokio::test]
async fn null_is_refused_where_the_schema_forbids_it() {
    for db in backends().await {
        let w = world(&db).await;
        let app = &w.app;
        let (inc, org) = (format!("/incidents/{}", w.inc_a), format!("/orgs/{}", w.org_a));
        for (method, path, body) in [
            ("PATCH", org.as_str(), json!({ "name": null })),
            ("PATCH", org.as_str(), json!({ "description": null })),
            ("PATCH", org.as_str(), json!({ "ip_ranges": null })),
            ("POST", "/orgs", json!({ "name": "n", "description": null })),
            ("PATCH", inc.as_str(), json!({ "status": null })),
            ("PATCH", inc.as_str(), json!({ "title": null })),
            ("PATCH", inc.as_str(), json!({ "org": null })),
            ("POST", "/incidents", json!({ "title": "t", "severity": "low", "org": null })),
            ("POST", "/tokens", json!({ "name": null })),
            ("POST", "/teams", json!({ "name": "t", "members": null })),
            ("PATCH", "/roles/1", json!({ "permissions": null })),
        ] {
            let (s, v) = call(app, method, path, Some(&w.root), Some(body.clone())).await;
            assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{}: {method} {path} {body}: {v}", db.name);
        }
        ok(app, "PATCH", &org, &w.root, Some(json!({ "eps_limit": null }))).await;
        ok(app, "PATCH", &inc, &w.root, Some(json!({ "assignee": null }))).await;
        ok(app, "POST", "/incidents", &w.root, Some(json!({ "title": "t", "severity": "low", "assignee": null })))
            .await;
        let user = json!({ "name": "nully", "org": "Super/Global", "role": "viewer", "scope": null });
        assert!(ok(app, "POST", "/users", &w.root, Some(user)).await["scope"].is_null());
    }
}

/// JSON has one number type and JSON Schema's `integer` is any number
/// without a fraction, so `5.0` and `5e0` are integers; `5.5` is not.
#[tokio::test]
async fn integers_may_be_written_with_a_zero_fraction() {
    for db in backends().await {
        let w = world(&db).await;
        let app = &w.app;
        let body = format!(r#"{{"user_id": {}.0, "expires_in_days": 3e1}}"#, w.a_admin_id);
        let req = axum::http::Request::builder()
            .method("POST")
            .uri("/api/v1/tokens")
            .header("authorization", format!("Bearer {}", w.root))
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body))
            .unwrap();
        let (s, v) = common::raw(app, req).await;
        assert_eq!(s, StatusCode::CREATED, "{}: {v}", db.name);
        assert_eq!(v["user_id"], w.a_admin_id);
        let (s, _) = call(app, "POST", "/tokens", Some(&w.root), Some(json!({ "user_id": 1.5 }))).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    }
}
