//! The EPS control loop: every interval T, each entry node closes its
//! gate's interval and reports; the supervisor collects the reports, plans
//! the next interval and sends every node its budget.
//!
//! Both sides run on a [`Clock`], so tests drive them on virtual time. The
//! node side is `collector::node::NodeAgent`. Reports come in on a
//! channel and budgets go out through a [`Downlink`]: in `vigil run` the
//! in-process collector, in a cluster a NATS publisher. One loop serves
//! both.
//!
//! Timing at a boundary t: nodes switch to a new interval at t keeping
//! their last budget (SPEC §3: a node that hears nothing keeps its last
//! allocation) and report; the supervisor waits `grace` for the reports,
//! plans, and delivers budgets, which nodes apply to the running interval.
//! A node whose report misses the grace period counts as not reporting
//! (SPEC §3: it falls back to its guarantee).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use collector::node::sleep_until_or_stop;
use collector::{Clock, IntervalReport, NodeId};
use parsers::{Budget, DeviceLimits, EventTime, OrgSnapshot};

use crate::allocation::{AllocatorConfig, AllocatorState, OrgQuota, Plan, allocate};

/// What the supervisor sends down to entry nodes (supervisor → nodes).
pub trait Downlink: Send + Sync {
    /// `node`'s budget for the running interval.
    fn budget(&self, node: &NodeId, budget: &Budget);
    /// A new org table, for every node.
    fn orgs(&self, orgs: &OrgSnapshot);
    /// The device limit's standings, for every entry node.
    fn devices(&self, limits: &DeviceLimits);
}

/// The org quotas the allocator plans with, shared with whoever follows
/// the org table (they change between intervals).
pub type SharedQuotas = Arc<Mutex<Vec<OrgQuota>>>;

/// The entry nodes and their guaranteed EPS, shared with whoever follows
/// the node registry. Setting `replan` makes the loop plan the running
/// interval again at once (a node joined or a guarantee changed), from the
/// same reports and pool it was first planned with.
#[derive(Clone, Default)]
pub struct SharedNodes {
    /// Guaranteed EPS per entry node (Σ ≤ L; the store refuses more).
    pub guarantees: Arc<Mutex<BTreeMap<NodeId, u64>>>,
    /// Plan the running interval again.
    pub replan: Arc<AtomicBool>,
}

/// Start of interval `k`.
fn interval_start(config: &AllocatorConfig, k: u64) -> EventTime {
    EventTime::from_unix(i64::try_from(k * u64::from(config.interval_secs.get())).unwrap_or(i64::MAX), 0, 0)
}

/// The supervisor side of the loop.
pub struct Supervisor {
    config: AllocatorConfig,
    state: AllocatorState,
    reports: crossbeam_channel::Receiver<IntervalReport>,
    downlink: Arc<dyn Downlink>,
    quotas: SharedQuotas,
    nodes: SharedNodes,
    grace_secs: i64,
    /// The last interval planned, with the state and reports it was planned
    /// from (to plan it again when nodes change).
    last: Option<(u64, AllocatorState, Vec<IntervalReport>)>,
}

impl Supervisor {
    /// A supervisor reading reports from `reports` and delivering budgets
    /// through `downlink`.
    pub fn new(
        config: AllocatorConfig,
        reports: crossbeam_channel::Receiver<IntervalReport>,
        downlink: Arc<dyn Downlink>,
        grace_secs: i64,
    ) -> Supervisor {
        let quotas = Arc::new(Mutex::new(config.orgs.clone()));
        let nodes = SharedNodes {
            guarantees: Arc::new(Mutex::new(config.guarantees.clone())),
            replan: Arc::new(AtomicBool::new(false)),
        };
        Supervisor {
            config,
            state: AllocatorState::default(),
            reports,
            downlink,
            quotas,
            nodes,
            grace_secs,
            last: None,
        }
    }

    /// The entry nodes the next plans cover; change them (and set
    /// `replan`) when the node registry changes.
    pub fn nodes(&self) -> SharedNodes {
        self.nodes.clone()
    }

    /// The org quotas the next plans use; replace them when orgs change.
    pub fn quotas(&self) -> SharedQuotas {
        self.quotas.clone()
    }

    /// The allocator state (pool, last allocations).
    pub fn state(&self) -> &AllocatorState {
        &self.state
    }

    /// Plans interval `k` from the reports for `k - 1` that have arrived,
    /// and delivers every node its budget.
    pub fn plan_interval(&mut self, k: u64) -> Plan {
        let previous = k.checked_sub(1);
        let reports: Vec<IntervalReport> = self.reports.try_iter().filter(|r| Some(r.interval) == previous).collect();
        let before = self.state.clone();
        let plan = self.plan_from(k, &before, &reports);
        self.last = Some((k, before, reports));
        plan
    }

    /// Plans the running interval again with the current nodes and quotas,
    /// from the state and reports it was first planned with, so a node
    /// that joins mid-interval gets a budget at once and the totals still
    /// respect the licence. `None` before the first plan.
    pub fn replan(&mut self) -> Option<Plan> {
        let (k, before, reports) = self.last.clone()?;
        Some(self.plan_from(k, &before, &reports))
    }

    fn plan_from(&mut self, k: u64, state: &AllocatorState, reports: &[IntervalReport]) -> Plan {
        self.config.orgs = self.quotas.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let guarantees = self.nodes.guarantees.lock().unwrap_or_else(PoisonError::into_inner).clone();
        if guarantees.values().sum::<u64>() <= self.config.licensed_eps {
            self.config.guarantees = guarantees;
        }
        let (plan, next) = allocate(&self.config, state, reports, interval_start(&self.config, k));
        self.state = next;
        for p in &plan.nodes {
            self.downlink.budget(&p.node, &p.budget);
        }
        plan
    }

    /// Runs until `stop`: plans the running interval at once (so every
    /// node has a budget), then at each boundary plus the grace period
    /// plans the interval that began; `on_plan` sees every plan (metrics,
    /// logging).
    pub fn run(&mut self, clock: &dyn Clock, stop: &AtomicBool, mut on_plan: impl FnMut(&Plan)) {
        let now = self.config.interval_of(clock.now());
        let plan = self.plan_interval(now);
        on_plan(&plan);
        self.run_from(now + 1, clock, stop, on_plan);
    }

    /// Like [`Supervisor::run`], starting with interval `k` and without
    /// the first plan.
    pub fn run_from(&mut self, mut k: u64, clock: &dyn Clock, stop: &AtomicBool, mut on_plan: impl FnMut(&Plan)) {
        loop {
            let deadline = interval_start(&self.config, k).add_secs(self.grace_secs);
            // Wait for the boundary in short steps, planning the running
            // interval again whenever the nodes change.
            let mut step = clock.now().add_secs(1).min(deadline);
            while sleep_until_or_stop(clock, step, stop) && step != deadline {
                if self.nodes.replan.swap(false, Ordering::AcqRel)
                    && let Some(plan) = self.replan()
                {
                    on_plan(&plan);
                }
                step = clock.now().add_secs(1).min(deadline);
            }
            if stop.load(Ordering::Acquire) {
                return;
            }
            self.nodes.replan.store(false, Ordering::Release);
            let plan = self.plan_interval(k);
            on_plan(&plan);
            k += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::num::NonZeroU32;

    use std::sync::atomic::Ordering;

    use collector::node::NodeAgent;
    use collector::{Gate, ManualClock};
    use parsers::{OrgId, SourceZone};

    use super::*;
    use crate::allocation::MILLI;

    /// Gates in this process as the nodes.
    struct Gates(Vec<Arc<Gate>>);

    impl Downlink for Gates {
        fn budget(&self, node: &NodeId, budget: &Budget) {
            for g in self.0.iter().filter(|g| g.node() == node) {
                g.set_budget(budget.clone());
            }
        }

        fn orgs(&self, _: &OrgSnapshot) {}

        fn devices(&self, _: &DeviceLimits) {}
    }

    fn end_interval(gate: &Gate, tx: &crossbeam_channel::Sender<IntervalReport>, k: u64) {
        tx.send(gate.begin_interval(k, None)).unwrap();
    }

    fn config() -> AllocatorConfig {
        AllocatorConfig {
            licensed_eps: 100,
            interval_secs: NonZeroU32::new(10).unwrap(),
            guarantees: [(NodeId::new("a"), 10), (NodeId::new("b"), 10)].into_iter().collect::<BTreeMap<_, _>>(),
            burst_cap_eps: 100,
            zone: SourceZone::utc(),
            orgs: Vec::new(),
        }
        .validate()
        .unwrap()
    }

    #[test]
    fn budgets_follow_demand_interval_by_interval() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let a = Arc::new(Gate::new(NodeId::new("a"), Budget::node_only(0, 500)));
        let b = Arc::new(Gate::new(NodeId::new("b"), Budget::node_only(0, 500)));
        let mut sup = Supervisor::new(config(), rx, Arc::new(Gates(vec![a.clone(), b.clone()])), 1);

        // Interval 0: a sees 80 EPS, b 5 EPS.
        a.admit(OrgId(1), 800);
        b.admit(OrgId(1), 50);
        end_interval(&a, &tx, 1);
        end_interval(&b, &tx, 1);
        let plan = sup.plan_interval(1);
        let alloc = |n: &str| plan.nodes.iter().find(|p| p.node.as_str() == n).unwrap().allocated / MILLI;
        // Guarantees 10 + 10; a's demand (80 + 5 %) is 74 over its guarantee
        // and fits; the 6 left over are split.
        assert_eq!((alloc("a"), alloc("b")), (87, 13));
        assert_eq!(a.budget().node_events, 870);

        // b stops reporting: it falls back to its guarantee.
        a.admit(OrgId(1), 800);
        end_interval(&a, &tx, 2);
        let plan = sup.plan_interval(2);
        let b_plan = plan.nodes.iter().find(|p| p.node.as_str() == "b").unwrap();
        assert_eq!((b_plan.reported, b_plan.allocated / MILLI), (false, 10));
        // Its gate is still reachable here, so it is told so.
        assert_eq!(b.budget().node_events, 100);
    }

    #[test]
    fn loops_run_on_virtual_time_without_sleeping() {
        let clock = ManualClock::new(EventTime::from_unix(1000, 0, 0));
        let (tx, rx) = crossbeam_channel::unbounded();
        let a = Arc::new(Gate::new(NodeId::new("a"), Budget::node_only(100, 500)));
        let stop = Arc::new(AtomicBool::new(false));
        let (plans_tx, plans_rx) = crossbeam_channel::unbounded();
        let queued = rx.clone();
        let sup_thread = {
            let (clock, stop, a) = (clock.clone(), stop.clone(), a.clone());
            std::thread::spawn(move || {
                let mut sup = Supervisor::new(config(), rx, Arc::new(Gates(vec![a])), 1);
                sup.run_from(101, &clock, &stop, |plan| {
                    let _ = plans_tx.send(plan.clone());
                });
            })
        };
        let node_thread = {
            let (clock, stop, a) = (clock.clone(), stop.clone(), a.clone());
            std::thread::spawn(move || NodeAgent::new(a, tx, 10).run_from(101, &clock, &stop, |_| {}))
        };
        let boundary = |k: i64| EventTime::from_unix(k * 10, 0, 0);
        let mut planned = Vec::new();
        for k in 101..=105 {
            a.admit(OrgId(1), 300);
            // The node closes interval k-1 at the boundary...
            clock.set(boundary(k));
            let started = std::time::Instant::now();
            while queued.is_empty() {
                assert!(started.elapsed().as_secs() < 10, "node did not report interval {}", k - 1);
                std::thread::yield_now();
            }
            // ...and the supervisor plans k after its one-second grace.
            clock.set(boundary(k).add_secs(1));
            let plan = plans_rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
            planned.push(plan.interval);
        }
        stop.store(true, Ordering::Release);
        clock.advance(20);
        sup_thread.join().unwrap();
        node_thread.join().unwrap();
        assert_eq!(planned, vec![101, 102, 103, 104, 105]);
        // a reported 30 EPS each interval (31.5 with the margin): 10
        // guaranteed + 21.5, plus half of the 58.5 left (b has never
        // reported: a new node, it shares the headroom) = 60.75 EPS.
        assert_eq!(a.budget().node_events, 607);
    }
}
