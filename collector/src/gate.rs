//! The EPS gate (SPEC §3): during an interval a node accepts at most its
//! budget (allocated EPS × T, plus any burst), each organization at most its
//! own budget, and nothing of a disabled organization. Everything received
//! is counted per org; every drop is counted with its reason.
//!
//! Admission is by runs of events of one org (the collector admits a batch
//! per org), so the cost of the shared counters is paid per run, not per
//! event. Budgets are reserved with compare-and-swap, never overshot, and an
//! org's reservation is given back when the node budget cannot cover it, so
//! the counts are exact.
//!
//! Interval boundaries are not decided here: the node's control loop calls
//! [`Gate::begin_interval`] when its clock says so, with the budget the
//! supervisor sent (or the last one, if none arrived: SPEC §3, "a node that
//! cannot reach the supervisor keeps its last allocation").
//!
//! Invariant: within an interval, accepted ≤ node budget and, for each
//! org with a limit, accepted ≤ org budget.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use parsers::{OrgId, Str};

/// Name of an entry node (a collector, or a worker/supervisor that receives
/// syslog directly).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub Str);

impl NodeId {
    /// A node id from its name.
    pub fn new(name: &str) -> NodeId {
        NodeId(Str::from(name))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One org's admission rule on this node for one interval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrgBudget {
    /// The organization.
    pub org: OrgId,
    /// A disabled org's events are dropped at entry and not counted as EPS.
    pub enabled: bool,
    /// At most this many of its events; `None` when the org has no limit.
    pub events: Option<u64>,
}

/// What a node may accept in one interval, as sent by the supervisor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Interval number (start time / T).
    pub interval: u64,
    /// Events the node may accept: (allocated + burst EPS) × T.
    pub node_events: u64,
    /// Per-org rules; orgs not listed are enabled and unlimited.
    pub orgs: Vec<OrgBudget>,
}

impl Budget {
    /// A budget with no org rules.
    pub fn node_only(interval: u64, node_events: u64) -> Budget {
        Budget { interval, node_events, orgs: Vec::new() }
    }
}

/// The outcome of admitting a run of `n` events of one org.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Admission {
    /// The first `accepted` events of the run are accepted.
    pub accepted: u64,
    /// Dropped because the org's budget was spent.
    pub dropped_org: u64,
    /// Dropped because the node's budget was spent.
    pub dropped_node: u64,
    /// Dropped because the org is disabled (not counted as received).
    pub rejected_disabled: u64,
}

/// One org's counters for one interval.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct OrgCounts {
    /// The organization.
    pub org: OrgId,
    /// Events received (accepted or dropped); excludes a disabled org's.
    pub received: u64,
    /// Events accepted.
    pub accepted: u64,
    /// Dropped over the org's budget.
    pub dropped_org: u64,
    /// Dropped over the node's budget.
    pub dropped_node: u64,
    /// Dropped because the org is disabled.
    pub rejected_disabled: u64,
}

/// What a node reports at the end of an interval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntervalReport {
    /// The reporting node.
    pub node: NodeId,
    /// The interval the counts are for.
    pub interval: u64,
    /// Events received (accepted or not), the node's incoming EPS × T.
    pub received: u64,
    /// Events accepted.
    pub accepted: u64,
    /// Per-org counters, by org id.
    pub orgs: Vec<OrgCounts>,
}

/// `limit` value meaning "no limit".
const UNLIMITED: u64 = u64::MAX;

#[derive(Debug)]
struct OrgCell {
    enabled: AtomicBool,
    limit: AtomicU64,
    used: AtomicU64,
    received: AtomicU64,
    dropped_org: AtomicU64,
    dropped_node: AtomicU64,
    rejected_disabled: AtomicU64,
}

impl OrgCell {
    fn new(enabled: bool, limit: Option<u64>) -> OrgCell {
        OrgCell {
            enabled: AtomicBool::new(enabled),
            limit: AtomicU64::new(limit.unwrap_or(UNLIMITED)),
            used: AtomicU64::new(0),
            received: AtomicU64::new(0),
            dropped_org: AtomicU64::new(0),
            dropped_node: AtomicU64::new(0),
            rejected_disabled: AtomicU64::new(0),
        }
    }

    fn counts(&self, org: OrgId) -> OrgCounts {
        let received = self.received.load(Ordering::Acquire);
        let dropped_org = self.dropped_org.load(Ordering::Acquire);
        let dropped_node = self.dropped_node.load(Ordering::Acquire);
        OrgCounts {
            org,
            received,
            accepted: received - dropped_org - dropped_node,
            dropped_org,
            dropped_node,
            rejected_disabled: self.rejected_disabled.load(Ordering::Acquire),
        }
    }
}

/// The counters of one interval.
#[derive(Debug)]
struct Period {
    interval: u64,
    node_budget: AtomicU64,
    node_used: AtomicU64,
    slots: HashMap<OrgId, usize>,
    cells: Vec<(OrgId, OrgCell)>,
    /// Orgs without a rule (normally none: budgets list every org). Bounded
    /// by the org table, which is configuration.
    others: Mutex<BTreeMap<OrgId, Arc<OrgCell>>>,
}

impl Period {
    fn new(budget: &Budget) -> Period {
        let mut cells = Vec::with_capacity(budget.orgs.len());
        let mut slots = HashMap::with_capacity(budget.orgs.len());
        for o in &budget.orgs {
            slots.insert(o.org, cells.len());
            cells.push((o.org, OrgCell::new(o.enabled, o.events)));
        }
        Period {
            interval: budget.interval,
            node_budget: AtomicU64::new(budget.node_events),
            node_used: AtomicU64::new(0),
            slots,
            cells,
            others: Mutex::new(BTreeMap::new()),
        }
    }
}

/// Reserves up to `n` from a budget counter without exceeding `limit`;
/// returns how many were granted.
fn reserve(counter: &AtomicU64, limit: u64, n: u64) -> u64 {
    let mut current = counter.load(Ordering::Relaxed);
    loop {
        let take = n.min(limit.saturating_sub(current));
        if take == 0 {
            return 0;
        }
        match counter.compare_exchange_weak(current, current + take, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return take,
            Err(actual) => current = actual,
        }
    }
}

/// The gate of one entry node. Shared by all threads that admit events.
#[derive(Debug)]
pub struct Gate {
    node: NodeId,
    period: ArcSwap<Period>,
    budget: Mutex<Budget>,
}

impl Gate {
    /// A gate starting with `budget`.
    pub fn new(node: NodeId, budget: Budget) -> Gate {
        Gate { node, period: ArcSwap::from_pointee(Period::new(&budget)), budget: Mutex::new(budget) }
    }

    /// The node this gate belongs to.
    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// The budget in effect.
    pub fn budget(&self) -> Budget {
        self.budget.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Admits a run of `n` events of `org`: the first `accepted` of them
    /// may go on; the rest are dropped and counted.
    pub fn admit(&self, org: OrgId, n: u64) -> Admission {
        // A full Arc (not a borrowed guard): `begin_interval` waits for the
        // last one to go before reading the counters, so no run is lost.
        let period = self.period.load_full();
        match period.slots.get(&org) {
            Some(&slot) => admit_in(&period, &period.cells[slot].1, n),
            None => {
                let cell = {
                    let mut others = period.others.lock().unwrap_or_else(PoisonError::into_inner);
                    Arc::clone(others.entry(org).or_insert_with(|| Arc::new(OrgCell::new(true, None))))
                };
                admit_in(&period, &cell, n)
            }
        }
    }

    /// Ends the current interval: installs `next` (or, with `None`, the
    /// last budget again, for a new interval number) and returns the report
    /// of the interval that ended.
    pub fn begin_interval(&self, interval: u64, next: Option<Budget>) -> IntervalReport {
        let budget = {
            let mut current = self.budget.lock().unwrap_or_else(PoisonError::into_inner);
            let mut b = next.unwrap_or_else(|| current.clone());
            b.interval = interval;
            *current = b.clone();
            b
        };
        let mut old = self.period.swap(Arc::new(Period::new(&budget)));
        // Wait for admissions still using the old counters.
        let old = loop {
            match Arc::try_unwrap(old) {
                Ok(period) => break period,
                Err(shared) => {
                    old = shared;
                    std::thread::yield_now();
                }
            }
        };
        report(&self.node, &old)
    }

    /// Replaces the budget of the current interval without resetting its
    /// counters: how a budget that arrives after the interval began (the
    /// supervisor computes it from the reports of the interval that just
    /// ended) takes effect.
    pub fn set_budget(&self, budget: Budget) {
        let period = self.period.load_full();
        period.node_budget.store(budget.node_events, Ordering::Release);
        for rule in &budget.orgs {
            if let Some(&slot) = period.slots.get(&rule.org) {
                let cell = &period.cells[slot].1;
                cell.enabled.store(rule.enabled, Ordering::Release);
                cell.limit.store(rule.events.unwrap_or(UNLIMITED), Ordering::Release);
            }
        }
        *self.budget.lock().unwrap_or_else(PoisonError::into_inner) = Budget { interval: period.interval, ..budget };
    }

    /// The counts so far in the current interval (for metrics).
    pub fn snapshot(&self) -> IntervalReport {
        report(&self.node, &self.period.load_full())
    }
}

fn admit_in(period: &Period, cell: &OrgCell, n: u64) -> Admission {
    if !cell.enabled.load(Ordering::Acquire) {
        cell.rejected_disabled.fetch_add(n, Ordering::AcqRel);
        return Admission { rejected_disabled: n, ..Admission::default() };
    }
    cell.received.fetch_add(n, Ordering::AcqRel);
    let limit = cell.limit.load(Ordering::Acquire);
    let limited = limit != UNLIMITED;
    let granted_org = if limited { reserve(&cell.used, limit, n) } else { n };
    let granted = reserve(&period.node_used, period.node_budget.load(Ordering::Acquire), granted_org);
    if limited && granted < granted_org {
        // The node could not take what the org was granted: give it back.
        cell.used.fetch_sub(granted_org - granted, Ordering::AcqRel);
    }
    let admission = Admission {
        accepted: granted,
        dropped_org: n - granted_org,
        dropped_node: granted_org - granted,
        rejected_disabled: 0,
    };
    if admission.dropped_org > 0 {
        cell.dropped_org.fetch_add(admission.dropped_org, Ordering::AcqRel);
    }
    if admission.dropped_node > 0 {
        cell.dropped_node.fetch_add(admission.dropped_node, Ordering::AcqRel);
    }
    admission
}

fn report(node: &NodeId, period: &Period) -> IntervalReport {
    let mut orgs: Vec<OrgCounts> = period.cells.iter().map(|(org, cell)| cell.counts(*org)).collect();
    orgs.extend(
        period.others.lock().unwrap_or_else(PoisonError::into_inner).iter().map(|(org, cell)| cell.counts(*org)),
    );
    orgs.retain(|c| c.received > 0 || c.rejected_disabled > 0);
    orgs.sort();
    IntervalReport {
        node: node.clone(),
        interval: period.interval,
        received: orgs.iter().map(|c| c.received).sum(),
        accepted: orgs.iter().map(|c| c.accepted).sum(),
        orgs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: OrgId = OrgId(10);
    const B: OrgId = OrgId(11);
    const OFF: OrgId = OrgId(12);

    fn budget(node_events: u64) -> Budget {
        Budget {
            interval: 1,
            node_events,
            orgs: vec![
                OrgBudget { org: A, enabled: true, events: Some(50) },
                OrgBudget { org: B, enabled: true, events: None },
                OrgBudget { org: OFF, enabled: false, events: None },
            ],
        }
    }

    #[test]
    fn node_and_org_budgets_and_disabled_orgs() {
        let gate = Gate::new(NodeId::new("c1"), budget(100));
        assert_eq!(gate.admit(A, 40).accepted, 40);
        assert_eq!(gate.admit(A, 20), Admission { accepted: 10, dropped_org: 10, ..Admission::default() });
        assert_eq!(gate.admit(OFF, 7), Admission { rejected_disabled: 7, ..Admission::default() });
        assert_eq!(gate.admit(B, 70), Admission { accepted: 50, dropped_node: 20, ..Admission::default() });
        let report = gate.begin_interval(2, None);
        assert_eq!(report.interval, 1);
        assert_eq!((report.received, report.accepted), (130, 100));
        let a = report.orgs.iter().find(|c| c.org == A).unwrap();
        assert_eq!((a.received, a.accepted, a.dropped_org), (60, 50, 10));
        let off = report.orgs.iter().find(|c| c.org == OFF).unwrap();
        assert_eq!((off.received, off.rejected_disabled), (0, 7));
        // The next interval starts fresh with the same budget.
        assert_eq!(gate.admit(A, 50).accepted, 50);
        assert_eq!(gate.snapshot().interval, 2);
    }

    #[test]
    fn org_reservation_is_returned_when_the_node_is_full() {
        let gate = Gate::new(NodeId::new("c1"), budget(30));
        assert_eq!(gate.admit(B, 30).accepted, 30);
        assert_eq!(gate.admit(A, 10), Admission { dropped_node: 10, ..Admission::default() });
        gate.begin_interval(2, Some(budget(100)));
        // Org A's budget was not consumed by the dropped events.
        assert_eq!(gate.admit(A, 60).accepted, 50);
    }

    #[test]
    fn a_budget_arriving_mid_interval_keeps_the_counts() {
        let gate = Gate::new(NodeId::new("c1"), budget(10));
        assert_eq!(gate.admit(B, 15).accepted, 10);
        gate.set_budget(budget(20));
        assert_eq!(gate.admit(B, 15).accepted, 10);
        let r = gate.begin_interval(2, None);
        assert_eq!((r.received, r.accepted), (30, 20));
        assert_eq!(gate.budget().node_events, 20);
    }

    #[test]
    fn unknown_orgs_are_counted_and_unlimited() {
        let gate = Gate::new(NodeId::new("c1"), Budget::node_only(1, 10));
        assert_eq!(gate.admit(OrgId(99), 15).accepted, 10);
        let r = gate.begin_interval(2, None);
        let want = OrgCounts {
            org: OrgId(99),
            received: 15,
            accepted: 10,
            dropped_org: 0,
            dropped_node: 5,
            rejected_disabled: 0,
        };
        assert_eq!(r.orgs, vec![want]);
    }

    #[test]
    fn concurrent_admission_never_exceeds_budgets() {
        let gate = Arc::new(Gate::new(NodeId::new("c1"), budget(1000)));
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let gate = Arc::clone(&gate);
                std::thread::spawn(move || {
                    let mut accepted = 0;
                    for i in 0..2000 {
                        let org = if (i + t) % 3 == 0 { A } else { B };
                        accepted += gate.admit(org, 1).accepted;
                    }
                    accepted
                })
            })
            .collect();
        let total: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        let r = gate.begin_interval(2, None);
        assert_eq!(total, 1000);
        assert_eq!(r.accepted, 1000);
        assert_eq!(r.received, 8000);
        assert!(r.orgs.iter().find(|c| c.org == A).unwrap().accepted <= 50);
    }
}
