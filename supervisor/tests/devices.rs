//! The device inventory in the record store, on a manual clock (no
//! sleeps): merging entry nodes' reports, silent log sources (one incident
//! per outage, resolved and audited when the device reports again; one
//! incident for a whole collector gone quiet), the licence's device limit
//! (first seen first; alert and its resolution), and the per-org ceiling.
//! On SQLite and, when `VIGIL_TEST_PG` is set, PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::{TestDb, backends};
use parsers::{DeviceReport, DeviceSeen, EventTime, ManualClock, NodeHeartbeat, NodeId, NodeRole, OrgId};
use supervisor::store::{
    DevicePatch, DeviceQuery, DeviceSettings, Kind, ListQuery, NewOrg, NodeState, Principal, Store, StoreConfig,
};

const T0: i64 = 1_800_000_000_000;
const MIN: i64 = 60_000;

async fn store(db: &TestDb, clock: &Arc<ManualClock>, devices: DeviceSettings) -> (Arc<Store>, i64, i64) {
    let config = StoreConfig { licence_eps: 10_000, devices, ..StoreConfig::default() };
    let store =
        Arc::new(Store::open(&db.url, clock.clone(), config).await.unwrap_or_else(|e| panic!("{}: {e}", db.name)));
    let cli = Principal::cli();
    let mut ids = Vec::new();
    for name in ["Acme", "Globex"] {
        let org = store
            .create_org(
                &cli,
                NewOrg {
                    name: name.into(),
                    description: String::new(),
                    eps_limit: None,
                    ip_ranges: vec![],
                    retention_days: None,
                },
            )
            .await
            .unwrap();
        ids.push(org.id);
    }
    (store, ids[0], ids[1])
}

fn at(clock: &ManualClock, ms: i64) {
    clock.set(EventTime::from_unix_millis(ms));
}

fn seen(org: i64, identity: &str, first_ms: i64, last_ms: i64, events: u64) -> DeviceSeen {
    DeviceSeen {
        org: OrgId(u32::try_from(org).unwrap()),
        identity: identity.into(),
        hosts: vec![identity.into()],
        family: Some("openssh".into()),
        product: Some("openssh".into()),
        formats: vec!["rfc3164".into()],
        first_ms,
        last_ms,
        events,
        bytes: events * 100,
        max_gap_ms: 0,
    }
}

fn report(node: &str, at_ms: i64, devices: Vec<DeviceSeen>) -> DeviceReport {
    DeviceReport { node: NodeId::new(node), at_ms, period_ms: MIN, devices, overflow: vec![] }
}

async fn incidents(store: &Store, rule: &str) -> Vec<supervisor::store::Record> {
    let q = ListQuery { rule: Some(rule.into()), limit: Some(1000), ..ListQuery::default() };
    store.list_records(&Principal::cli(), Kind::Incident, q).await.unwrap().items
}

async fn device(store: &Store, identity: &str) -> supervisor::store::Device {
    let q = DeviceQuery { q: Some(identity.into()), limit: Some(1000), ..DeviceQuery::default() };
    let page = store.list_devices(&Principal::cli(), q).await.unwrap();
    page.items.into_iter().find(|d| d.identity == identity).unwrap_or_else(|| panic!("no device {identity}"))
}

/// A device reporting every minute, then quiet: nothing before its learned
/// interval (floored at 10 minutes) has passed, then exactly one incident
/// however many passes run, resolved with an audit entry when it is back.
#[tokio::test]
async fn a_silent_device_raises_one_incident_and_its_return_resolves_it() {
    for db in backends().await {
        let clock = Arc::new(ManualClock::new(EventTime::from_unix_millis(T0)));
        let (store, acme, globex) = store(&db, &clock, DeviceSettings::default()).await;
        for i in 0..5 {
            let t = T0 + i * MIN;
            at(&clock, t + 1_000);
            store
                .merge_devices(&report("c1", t, vec![seen(acme, "fw-1", t, t, 10), seen(globex, "sw-1", t, t, 1)]))
                .await
                .unwrap();
        }
        let last = T0 + 4 * MIN;
        let d = device(&store, "fw-1").await;
        assert_eq!(
            (d.events, d.bytes, d.learned_interval_secs, d.silent_after_secs),
            (50, 5_000, Some(60), Some(600)),
            "{}",
            db.name
        );
        assert_eq!(d.family, "openssh");
        // Globex's device keeps reporting; Acme's goes quiet.
        let mut t = last;
        while t < last + 30 * MIN {
            t += MIN;
            at(&clock, t);
            store.merge_devices(&report("c1", t, vec![seen(globex, "sw-1", t, t, 1)])).await.unwrap();
            let out = store.sweep_devices().await.unwrap();
            let quiet = t - last;
            let expected = if quiet > 10 * MIN { 1 } else { 0 };
            assert_eq!(incidents(&store, "log-source-silent").await.len(), expected, "{}: quiet {quiet} ms", db.name);
            if quiet == 11 * MIN {
                assert_eq!((out.newly_silent, out.incidents, out.silent), (1, 1, 1), "{}", db.name);
            }
        }
        let inc = &incidents(&store, "log-source-silent").await[0];
        assert_eq!((inc.org_id, inc.status, inc.severity), (Some(acme), "open", "medium"));
        assert!(inc.title.contains("fw-1"), "{}", inc.title);
        let d = device(&store, "fw-1").await;
        assert!(d.silent && d.silent_incident_id == Some(inc.id));
        // It comes back: silent no more, incident resolved by the pipeline.
        t += MIN;
        at(&clock, t);
        let stats = store.merge_devices(&report("c1", t, vec![seen(acme, "fw-1", t, t, 3)])).await.unwrap();
        assert_eq!(stats.returned, 1);
        let inc = store.get_record(&Principal::cli(), Kind::Incident, inc.id).await.unwrap();
        assert_eq!(inc.status, "resolved", "{}", db.name);
        let last_change = inc.history.unwrap().pop().unwrap();
        assert_eq!(
            (last_change.actor.as_str(), &last_change.after.unwrap()["reason"]),
            ("pipeline", &"the log source reported again".into())
        );
        assert!(!device(&store, "fw-1").await.silent);
        // A second outage is a second incident.
        at(&clock, t + 40 * MIN);
        store.sweep_devices().await.unwrap();
        assert_eq!(incidents(&store, "log-source-silent").await.len(), 2, "{}", db.name);
    }
}

/// An expected interval set by an administrator replaces the learned one
/// (and needs no history); a retired device is not watched, and retiring
/// a silent one resolves its incident.
#[tokio::test]
async fn an_expected_interval_is_used_and_retired_devices_are_not_watched() {
    for db in backends().await {
        let clock = Arc::new(ManualClock::new(EventTime::from_unix_millis(T0)));
        let (store, acme, _) = store(&db, &clock, DeviceSettings::default()).await;
        store
            .merge_devices(&report("c1", T0, vec![seen(acme, "db-1", T0, T0, 1), seen(acme, "db-2", T0, T0, 1)]))
            .await
            .unwrap();
        let cli = Principal::cli();
        for name in ["db-1", "db-2"] {
            let id = device(&store, name).await.id;
            let patch = DevicePatch { expected_interval_secs: Some(Some(120)), ..DevicePatch::default() };
            store.update_device(&cli, id, patch).await.unwrap();
        }
        let db2 = device(&store, "db-2").await.id;
        store.update_device(&cli, db2, DevicePatch { retired: Some(true), ..DevicePatch::default() }).await.unwrap();
        at(&clock, T0 + 2 * MIN);
        store.sweep_devices().await.unwrap();
        assert!(
            incidents(&store, "log-source-silent").await.is_empty(),
            "{}: exactly the interval is not silence",
            db.name
        );
        at(&clock, T0 + 3 * MIN);
        let out = store.sweep_devices().await.unwrap();
        assert_eq!(out.newly_silent, 1, "{}: db-1 only; db-2 is retired", db.name);
        let inc = incidents(&store, "log-source-silent").await.remove(0);
        let db1 = device(&store, "db-1").await;
        assert_eq!(db1.silent_after_secs, Some(120));
        store.update_device(&cli, db1.id, DevicePatch { retired: Some(true), ..DevicePatch::default() }).await.unwrap();
        let inc = store.get_record(&cli, Kind::Incident, inc.id).await.unwrap();
        assert_eq!(inc.status, "resolved");
        // Out-of-range intervals and names are refused with the field named.
        let e = store
            .update_device(
                &cli,
                db1.id,
                DevicePatch { expected_interval_secs: Some(Some(5)), ..DevicePatch::default() },
            )
            .await
            .unwrap_err();
        assert!(e.to_string().contains("expected_interval_secs"), "{e}");
    }
}

fn beat(node: &str) -> NodeHeartbeat {
    NodeHeartbeat {
        node: NodeId::new(node),
        role: NodeRole::Collector,
        version: "0.1.0".into(),
        addresses: vec![],
        problems: vec![],
        sent_ms: 0,
    }
}

/// When every device a collector hears goes quiet together, the collector
/// is the likely cause: one incident for the provider, none per device,
/// and the node registry says so (its heartbeats keep it alert); when the
/// collector's sources are back, the incident is resolved and the next
/// heartbeat makes the node active.
#[tokio::test]
async fn a_whole_collector_going_quiet_is_one_incident() {
    for db in backends().await {
        let clock = Arc::new(ManualClock::new(EventTime::from_unix_millis(T0)));
        let (store, acme, globex) = store(&db, &clock, DeviceSettings::default()).await;
        store.node_heartbeat(&beat("site-7")).await.unwrap();
        for i in 0..4 {
            let t = T0 + i * MIN;
            at(&clock, t);
            let devices = vec![seen(acme, "a-1", t, t, 1), seen(acme, "a-2", t, t, 1), seen(globex, "g-1", t, t, 1)];
            store.merge_devices(&report("site-7", t, devices)).await.unwrap();
            store.merge_devices(&report("hq", t, vec![seen(acme, "hq-1", t, t, 1)])).await.unwrap();
        }
        let mut t = T0 + 3 * MIN;
        for _ in 0..15 {
            t += MIN;
            at(&clock, t);
            store.merge_devices(&report("hq", t, vec![seen(acme, "hq-1", t, t, 1)])).await.unwrap();
            store.sweep_devices().await.unwrap();
        }
        let all = incidents(&store, "log-source-silent").await;
        assert_eq!(all.len(), 1, "{}: {all:?}", db.name);
        assert_eq!(all[0].org_id, Some(supervisor::store::SUPER_LOCAL));
        assert!(
            all[0].title.contains("site-7") && all[0].description.contains("The node registry has site-7 active"),
            "{}",
            all[0].description
        );
        for name in ["a-1", "a-2", "g-1"] {
            assert_eq!(device(&store, name).await.silent_incident_id, Some(all[0].id));
        }
        // The registry blames the collector, and its heartbeats (it is up,
        // its sources are not heard) keep it alert.
        let node = store.get_node("site-7").await.unwrap();
        let why = format!(
            "all 3 log sources it hears went silent together (none since {}; incident {})",
            supervisor::store::fmt_ms(T0 + 3 * MIN),
            all[0].id
        );
        assert_eq!(
            (node.state, node.log_sources_silent.as_deref()),
            (NodeState::Alert, Some(why.as_str())),
            "{}",
            db.name
        );
        assert_eq!(node.state_reason, why);
        store.node_heartbeat(&beat("site-7")).await.unwrap();
        assert_eq!(store.get_node("site-7").await.unwrap().state, NodeState::Alert, "{}", db.name);
        assert_eq!(store.get_node("hq").await.map(|n| n.log_sources_silent).ok().flatten(), None);
        // One device behind the collector reports: the collector is back.
        at(&clock, t + 1_000);
        store.merge_devices(&report("site-7", t, vec![seen(acme, "a-1", t, t, 1)])).await.unwrap();
        let inc = store.get_record(&Principal::cli(), Kind::Incident, all[0].id).await.unwrap();
        assert_eq!(inc.status, "resolved", "{}", db.name);
        assert!(!device(&store, "a-2").await.silent, "the others are watched again, each on its own");
        assert_eq!(store.get_node("site-7").await.unwrap().log_sources_silent, None, "{}", db.name);
        store.node_heartbeat(&beat("site-7")).await.unwrap();
        assert_eq!(store.get_node("site-7").await.unwrap().state, NodeState::Active, "{}", db.name);
    }
}

/// Five devices under a licence of three: the first three seen are within
/// it, the provider is alerted once, retiring devices makes room for the
/// next ones in order of first sight and resolves the alert.
#[tokio::test]
async fn the_device_limit_admits_the_first_seen_and_alerts_the_provider() {
    for db in backends().await {
        let clock = Arc::new(ManualClock::new(EventTime::from_unix_millis(T0)));
        let settings = DeviceSettings { limit: Some(3), ..DeviceSettings::default() };
        let (store, acme, globex) = store(&db, &clock, settings).await;
        let names = ["d1", "d2", "d3", "d4", "d5"];
        for (i, name) in names.iter().enumerate() {
            let t = T0 + i as i64 * 1_000;
            let org = if i % 2 == 0 { acme } else { globex };
            store.merge_devices(&report("c1", t, vec![seen(org, name, t, t, 1)])).await.unwrap();
        }
        at(&clock, T0 + MIN);
        let out = store.sweep_devices().await.unwrap();
        assert_eq!((out.active, out.beyond), (5, 2), "{}", db.name);
        let within: Vec<&str> = out.limits.within.iter().map(|(_, i)| i.as_str()).collect();
        assert_eq!(within, ["d1", "d2", "d3"]);
        for (name, expect) in names.iter().zip([true, true, true, false, false]) {
            assert_eq!(device(&store, name).await.within_limit, expect, "{}: {name}", db.name);
        }
        store.sweep_devices().await.unwrap();
        let alerts = incidents(&store, "device-limit").await;
        assert_eq!(alerts.len(), 1, "{}: one alert, kept up to date", db.name);
        assert_eq!((alerts[0].org_id, alerts[0].count), (Some(supervisor::store::SUPER_LOCAL), 2));
        assert!(
            alerts[0].title.contains("5 active devices") && alerts[0].title.contains("allows 3"),
            "{}",
            alerts[0].title
        );
        // Retire d2: d4 is next in line.
        let cli = Principal::cli();
        let d2 = device(&store, "d2").await.id;
        store.update_device(&cli, d2, DevicePatch { retired: Some(true), ..DevicePatch::default() }).await.unwrap();
        let out = store.sweep_devices().await.unwrap();
        let within: Vec<&str> = out.limits.within.iter().map(|(_, i)| i.as_str()).collect();
        assert_eq!((within, out.beyond), (vec!["d1", "d3", "d4"], 1), "{}", db.name);
        let d1 = device(&store, "d1").await.id;
        store.update_device(&cli, d1, DevicePatch { retired: Some(true), ..DevicePatch::default() }).await.unwrap();
        let out = store.sweep_devices().await.unwrap();
        assert_eq!((out.active, out.beyond), (3, 0));
        let alert = store.get_record(&cli, Kind::Incident, alerts[0].id).await.unwrap();
        assert_eq!(alert.status, "resolved", "{}: within the limit again", db.name);
        // A device unseen for the active window no longer counts.
        at(&clock, T0 + 31 * 86_400_000);
        assert_eq!(store.sweep_devices().await.unwrap().active, 0);
    }
}

/// Spoofed names cannot grow an org's inventory without bound: past
/// `max_per_org` new devices are counted, not kept; known ones still merge.
#[tokio::test]
async fn an_orgs_inventory_has_a_ceiling() {
    for db in backends().await {
        let clock = Arc::new(ManualClock::new(EventTime::from_unix_millis(T0)));
        let settings = DeviceSettings { max_per_org: 2, ..DeviceSettings::default() };
        let (store, acme, globex) = store(&db, &clock, settings).await;
        let many: Vec<DeviceSeen> = (0..5).map(|i| seen(acme, &format!("spoof-{i}"), T0, T0, 1)).collect();
        let mut r = report("c1", T0, many);
        r.devices.push(seen(globex, "g-1", T0, T0, 1));
        r.overflow = vec![(OrgId(u32::try_from(acme).unwrap()), 7)];
        let stats = store.merge_devices(&r).await.unwrap();
        assert_eq!(
            (stats.created, stats.overflow),
            (3, 10),
            "{}: 2 of Acme's + Globex's; 3 refused here, 7 at the node",
            db.name
        );
        let again = store
            .merge_devices(&report("c1", T0 + MIN, vec![seen(acme, "spoof-0", T0 + MIN, T0 + MIN, 1)]))
            .await
            .unwrap();
        assert_eq!((again.merged, again.created), (1, 0));
        assert_eq!(device(&store, "spoof-0").await.events, 2);
        // A report for an org that does not exist is dropped, not an error.
        store.merge_devices(&report("c1", T0, vec![seen(999, "ghost", T0, T0, 1)])).await.unwrap();
        let page = store.list_devices(&Principal::cli(), DeviceQuery::default()).await.unwrap();
        assert_eq!(page.items.len(), 3);
    }
}
