//! The supervisor role on a real store (SQLite, and PostgreSQL when
//! configured): it starts whatever the licence, and org changes reach the
//! nodes before the change returns.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use collector::{NodeId, SystemClock};
use common::{backends, open};
use parsers::{Budget, OrgSnapshot};
use supervisor::control::Downlink;
use supervisor::node::{SupervisorNode, SupervisorSetup};
use supervisor::store::{NewOrg, Principal, StoreConfig};

/// Records what the supervisor sends down.
#[derive(Default)]
struct Recorded {
    orgs: Mutex<Vec<OrgSnapshot>>,
}

impl Downlink for Recorded {
    fn budget(&self, _: &NodeId, _: &Budget) {}

    fn orgs(&self, orgs: &OrgSnapshot) {
        self.orgs.lock().unwrap().push(orgs.clone());
    }

    fn devices(&self, _: &parsers::DeviceLimits) {}
}

fn setup(licence_eps: u64) -> SupervisorSetup {
    SupervisorSetup {
        licence_eps,
        interval_secs: 180,
        grace_secs: 1,
        guarantees: [(NodeId::new("node-1"), licence_eps)].into_iter().collect::<BTreeMap<_, _>>(),
        burst_cap_eps: licence_eps,
        org_poll: Duration::from_millis(250),
        search: None,
        device_reports: None,
        device_every: Duration::from_secs(30),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn it_starts_under_a_smaller_licence_and_org_changes_reach_nodes_before_they_return() {
    for db in backends().await {
        let store = open(&db, StoreConfig { licence_eps: 10_000, ..StoreConfig::default() }).await;
        let down = Arc::new(Recorded::default());
        let (_reports_tx, reports) = crossbeam_channel::bounded(4);
        let node = SupervisorNode::start(setup(10_000), store.clone(), Arc::new(SystemClock), reports, down.clone())
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", db.name));
        let big = NewOrg {
            name: "Big".into(),
            eps_limit: Some(5_000),
            ip_ranges: vec!["10.9.0.0/16".into()],
            ..NewOrg::default()
        };
        store.create_org(&Principal::cli(), big).await.unwrap();
        let sent =
            down.orgs.lock().unwrap().last().cloned().unwrap_or_else(|| panic!("{}: no org table sent", db.name));
        assert!(
            sent.orgs.iter().any(|o| o.name == "Big" && o.ranges == ["10.9.0.0/16"] && o.eps_limit == Some(5_000)),
            "{}: the new org was sent before create_org returned: {sent:?}",
            db.name
        );
        node.stop().await;

        // The licence expires: 500 EPS, below the org limits set under the
        // old one. The supervisor still starts (it used to refuse).
        let store = open(&db, StoreConfig { licence_eps: 500, ..StoreConfig::default() }).await;
        let (_reports_tx, reports) = crossbeam_channel::bounded(4);
        let node = SupervisorNode::start(setup(500), store.clone(), Arc::new(SystemClock), reports, down.clone())
            .await
            .unwrap_or_else(|e| panic!("{}: a smaller licence stopped the start: {e}", db.name));
        node.stop().await;
    }
}

/// The retention pass: at start (and hourly) each org's days older than its
/// `retention_days` go, by the store's clock; the rest stay.
#[tokio::test(flavor = "multi_thread")]
async fn events_past_an_orgs_retention_are_deleted_by_the_stores_clock() {
    for db in backends().await {
        // 2026-12-01T12:00:00Z on a manual clock.
        let clock = Arc::new(parsers::ManualClock::new(parsers::EventTime::from_unix(1_796_126_400, 0, 0)));
        let config = StoreConfig { licence_eps: 10_000, ..StoreConfig::default() };
        let store = Arc::new(supervisor::store::Store::open(&db.url, clock.clone(), config).await.unwrap());
        let cli = Principal::cli();
        let short = NewOrg { name: "Short".into(), retention_days: Some(7), ..NewOrg::default() };
        let short = store.create_org(&cli, short).await.unwrap().id;
        let root = std::env::temp_dir().join(format!("vigil-retention-node-{}-{}", db.name, std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        // Super/Local (org 1, 90 days) and Short (7 days).
        for (org, day) in [(1, "2026-08-01"), (1, "2026-11-20"), (short, "2026-11-20"), (short, "2026-11-30")] {
            let dir = root.join(format!("org={org}/date={day}"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("part-n-1-000001.parquet"), b"1234").unwrap();
        }
        let setup = SupervisorSetup { search: Some(search::SearchConfig::new(&root)), ..setup(10_000) };
        let (_reports_tx, reports) = crossbeam_channel::bounded(4);
        // The store's clock decides what is old; the node's own loops run
        // on the system clock (a manual one would hold the EPS loop's
        // sleep, and its stop, forever).
        let node =
            SupervisorNode::start(setup, store.clone(), Arc::new(SystemClock), reports, Arc::new(Recorded::default()))
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", db.name));
        // The pass counts what it deleted once it is done: wait for that.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let mut m = collector::metrics::Exposition::default();
            node.render_metrics(&mut m);
            let text = m.render();
            if text.contains("vigil_retention_deleted_days_total 2")
                && text.contains("vigil_retention_deleted_files_total 2")
            {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{}: retention did not run: {text}", db.name);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(!root.join("org=1/date=2026-08-01").exists(), "{}: past 90 days", db.name);
        assert!(!root.join(format!("org={short}/date=2026-11-20")).exists(), "{}: past 7 days", db.name);
        assert!(root.join("org=1/date=2026-11-20").exists(), "{}: within 90 days", db.name);
        assert!(root.join(format!("org={short}/date=2026-11-30")).exists(), "{}: within 7 days", db.name);
        node.stop().await;
        let _ = std::fs::remove_dir_all(&root);
    }
}
