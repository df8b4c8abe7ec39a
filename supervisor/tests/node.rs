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
