//! The EPS gate (SPEC §3): during an interval a node accepts at most its
//! budget (allocated EPS × T, plus any burst), each organization at most its
//! own budget, and nothing of a disabled organization. Everything received
//! is counted per org; every drop is counted with its reason.
//!
//! The hot path writes nothing shared: counters live in per-thread shards
//! (summed for reports), and each shard spends a *lease* of the node's and
//! the org's budget, refilled from the shared budget with compare-and-swap in
//! chunks that shrink as the budget runs out. Leases are never overshot and
//! are revoked when a new budget arrives, so accepted events never exceed a
//! budget and the counts are exact; the cost is that near the end of a budget
//! a few events of lease may sit in one thread while another is refused.
//! Admission also takes runs of events of one org (the collector admits a
//! batch per org), which pays even the shard counters once per run.
//!
//! Interval boundaries are not decided here: the node's control loop calls
//! [`Gate::begin_interval`] when its clock says so, with the budget the
//! supervisor sent (or the last one, if none arrived: SPEC §3, "a node that
//! cannot reach the supervisor keeps its last allocation").
//!
//! Invariant: within an interval, accepted ≤ node budget and, for each
//! org with a limit, accepted ≤ org budget.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use parsers::OrgId;
pub use parsers::protocol::{Budget, IntervalReport, NodeId, OrgBudget, OrgCounts};

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

/// `limit` value meaning "no limit".
const UNLIMITED: u64 = u64::MAX;

/// Shards of counters and leases; threads are spread over them round-robin.
/// More threads than shards share shards (still correct, just contended).
const SHARDS: usize = 16;

/// The most a shard leases from a shared budget at once. Leases shrink as a
/// budget runs out (see [`lease_size`]), so little budget sits idle in one
/// thread's lease while another thread is refused.
const MAX_LEASE: u64 = 256;

/// Padding entries at both ends of a shard's per-org array, so two shards'
/// arrays never share a cache line.
const PAD: usize = 4;

thread_local! {
    static SHARD: usize = {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS
    };
}

/// One org's shared state for one interval: its rule and how much of its
/// budget shards have leased.
#[derive(Debug)]
struct OrgRule {
    enabled: AtomicBool,
    limit: AtomicU64,
    leased: AtomicU64,
}

/// One org's counters and lease in one shard. Written by the shard's
/// thread; summed over shards for reports.
#[derive(Debug, Default)]
struct OrgShard {
    lease: AtomicU64,
    received: AtomicU64,
    dropped_org: AtomicU64,
    dropped_node: AtomicU64,
    rejected_disabled: AtomicU64,
}

/// A shard: its lease of the node budget and its per-org counters.
#[derive(Debug)]
#[repr(align(128))]
struct Shard {
    node_lease: AtomicU64,
    /// `PAD` unused entries, one per org slot, `PAD` unused entries.
    orgs: Box<[OrgShard]>,
}

impl Shard {
    fn new(orgs: usize) -> Shard {
        Shard { node_lease: AtomicU64::new(0), orgs: (0..orgs + 2 * PAD).map(|_| OrgShard::default()).collect() }
    }

    fn org(&self, slot: usize) -> &OrgShard {
        &self.orgs[PAD + slot]
    }
}

/// An org outside the interval's slot table: unknown to the budget the
/// interval began with (no rule: enabled, unlimited), or given a rule by
/// [`Gate::set_budget`] after the interval began (an org created or
/// changed mid-interval). Counted on a slower, locked path until the next
/// interval gives it a slot.
#[derive(Debug)]
struct OtherOrg {
    rule: OrgRule,
    /// One set of counters and one lease, shared by every thread.
    counts: OrgShard,
}

impl Default for OtherOrg {
    fn default() -> OtherOrg {
        OtherOrg {
            rule: OrgRule {
                enabled: AtomicBool::new(true),
                limit: AtomicU64::new(UNLIMITED),
                leased: AtomicU64::new(0),
            },
            counts: OrgShard::default(),
        }
    }
}

/// The counters of one interval.
#[derive(Debug)]
struct Period {
    interval: u64,
    node_budget: AtomicU64,
    /// Node budget leased to shards (every accepted event was leased first).
    node_leased: AtomicU64,
    /// Org ids come from configuration, not from events: a fast unkeyed hash.
    slots: hashbrown::HashMap<OrgId, usize>,
    rules: Vec<(OrgId, OrgRule)>,
    shards: Box<[Shard]>,
    /// Bounded by the org table, which is configuration.
    others: Mutex<BTreeMap<OrgId, Arc<OtherOrg>>>,
}

impl Period {
    fn new(budget: &Budget) -> Period {
        let mut rules = Vec::with_capacity(budget.orgs.len());
        let mut slots = hashbrown::HashMap::with_capacity(budget.orgs.len());
        for o in &budget.orgs {
            if slots.contains_key(&o.org) {
                continue;
            }
            slots.insert(o.org, rules.len());
            let rule = OrgRule {
                enabled: AtomicBool::new(o.enabled),
                limit: AtomicU64::new(o.events.unwrap_or(UNLIMITED)),
                leased: AtomicU64::new(0),
            };
            rules.push((o.org, rule));
        }
        let shards = (0..SHARDS).map(|_| Shard::new(rules.len())).collect();
        Period {
            interval: budget.interval,
            node_budget: AtomicU64::new(budget.node_events),
            node_leased: AtomicU64::new(0),
            slots,
            rules,
            shards,
            others: Mutex::new(BTreeMap::new()),
        }
    }

    /// Returns every shard's node lease to the shared budget.
    fn revoke_node_leases(&self) {
        for shard in &*self.shards {
            let lease = shard.node_lease.swap(0, Ordering::AcqRel);
            self.node_leased.fetch_sub(lease, Ordering::AcqRel);
        }
    }

    /// Returns every shard's lease of org `slot` to the org's budget.
    fn revoke_org_leases(&self, slot: usize) {
        for shard in &*self.shards {
            let lease = shard.org(slot).lease.swap(0, Ordering::AcqRel);
            self.rules[slot].1.leased.fetch_sub(lease, Ordering::AcqRel);
        }
    }
}

/// How much to lease at once: what is needed, or more while the budget is
/// far from spent (a 1/32 share of what remains, at most `MAX_LEASE`).
fn lease_size(need: u64, limit: u64, leased: u64) -> u64 {
    let remaining = limit.saturating_sub(leased);
    need.max((remaining / (2 * SHARDS as u64)).min(MAX_LEASE))
}

/// Leases up to `want` from a shared counter without exceeding `limit`;
/// returns how many were granted.
fn reserve(counter: &AtomicU64, limit: u64, want: u64) -> u64 {
    let mut current = counter.load(Ordering::Relaxed);
    loop {
        let take = want.min(limit.saturating_sub(current));
        if take == 0 {
            return 0;
        }
        match counter.compare_exchange_weak(current, current + take, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return take,
            Err(actual) => current = actual,
        }
    }
}

/// Takes up to `n` from a shard's lease, refilling it from the shared
/// counter when it runs short. Returns how many of `n` were granted.
fn take(lease: &AtomicU64, shared: &AtomicU64, limit: u64, n: u64) -> u64 {
    // Only this shard's threads touch `lease`, and `revoke_*` swaps it to
    // zero: a compare-and-swap keeps both exact.
    let mut have = lease.load(Ordering::Acquire);
    loop {
        let from_lease = have.min(n);
        match lease.compare_exchange_weak(have, have - from_lease, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) if from_lease == n => return n,
            Ok(_) => {
                let need = n - from_lease;
                let want = lease_size(need, limit, shared.load(Ordering::Relaxed));
                let got = reserve(shared, limit, want);
                let granted = got.min(need);
                if got > granted {
                    lease.fetch_add(got - granted, Ordering::AcqRel);
                }
                return from_lease + granted;
            }
            Err(actual) => have = actual,
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
        // A guard, not a reference count: no shared write. `begin_interval`
        // still waits for this admission, since swapping the period turns
        // outstanding guards into counted references.
        let period = self.period.load();
        let shard = &period.shards[SHARD.with(|s| *s)];
        match period.slots.get(&org) {
            Some(&slot) => admit_in(&period, shard, slot, n),
            None => {
                let other = {
                    let mut others = period.others.lock().unwrap_or_else(PoisonError::into_inner);
                    Arc::clone(others.entry(org).or_default())
                };
                admit_org(&period, &shard.node_lease, &other.rule, &other.counts, n)
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
    /// ended) takes effect. Leases taken under the old budget are returned
    /// first, so the new limits hold exactly.
    pub fn set_budget(&self, budget: Budget) {
        let period = self.period.load_full();
        period.node_budget.store(budget.node_events, Ordering::Release);
        period.revoke_node_leases();
        for rule in &budget.orgs {
            if let Some(&slot) = period.slots.get(&rule.org) {
                let org = &period.rules[slot].1;
                org.enabled.store(rule.enabled, Ordering::Release);
                org.limit.store(rule.events.unwrap_or(UNLIMITED), Ordering::Release);
                period.revoke_org_leases(slot);
            } else {
                let mut others = period.others.lock().unwrap_or_else(PoisonError::into_inner);
                let other = others.entry(rule.org).or_default();
                other.rule.enabled.store(rule.enabled, Ordering::Release);
                other.rule.limit.store(rule.events.unwrap_or(UNLIMITED), Ordering::Release);
                let lease = other.counts.lease.swap(0, Ordering::AcqRel);
                other.rule.leased.fetch_sub(lease, Ordering::AcqRel);
            }
        }
        *self.budget.lock().unwrap_or_else(PoisonError::into_inner) = Budget { interval: period.interval, ..budget };
    }

    /// The counts so far in the current interval (for metrics).
    pub fn snapshot(&self) -> IntervalReport {
        report(&self.node, &self.period.load_full())
    }
}

fn admit_in(period: &Period, shard: &Shard, slot: usize, n: u64) -> Admission {
    admit_org(period, &shard.node_lease, &period.rules[slot].1, shard.org(slot), n)
}

/// Admits `n` events of one org under its `rule`, counting in `counts`
/// and leasing the node budget through `node_lease`.
fn admit_org(period: &Period, node_lease: &AtomicU64, rule: &OrgRule, counts: &OrgShard, n: u64) -> Admission {
    if !rule.enabled.load(Ordering::Acquire) {
        counts.rejected_disabled.fetch_add(n, Ordering::AcqRel);
        return Admission { rejected_disabled: n, ..Admission::default() };
    }
    counts.received.fetch_add(n, Ordering::AcqRel);
    let limit = rule.limit.load(Ordering::Acquire);
    let limited = limit != UNLIMITED;
    let granted_org = if limited { take(&counts.lease, &rule.leased, limit, n) } else { n };
    let node_budget = period.node_budget.load(Ordering::Acquire);
    let granted = take(node_lease, &period.node_leased, node_budget, granted_org);
    if limited && granted < granted_org {
        // The node could not take what the org granted: keep it for later.
        counts.lease.fetch_add(granted_org - granted, Ordering::AcqRel);
    }
    let admission = Admission {
        accepted: granted,
        dropped_org: n - granted_org,
        dropped_node: granted_org - granted,
        rejected_disabled: 0,
    };
    if admission.dropped_org > 0 {
        counts.dropped_org.fetch_add(admission.dropped_org, Ordering::AcqRel);
    }
    if admission.dropped_node > 0 {
        counts.dropped_node.fetch_add(admission.dropped_node, Ordering::AcqRel);
    }
    admission
}

/// An org's report line from a reader of its counters.
fn org_counts(org: OrgId, sum: impl Fn(fn(&OrgShard) -> &AtomicU64) -> u64) -> OrgCounts {
    let received = sum(|c| &c.received);
    let dropped_org = sum(|c| &c.dropped_org);
    let dropped_node = sum(|c| &c.dropped_node);
    OrgCounts {
        org,
        received,
        accepted: received - dropped_org - dropped_node,
        dropped_org,
        dropped_node,
        rejected_disabled: sum(|c| &c.rejected_disabled),
    }
}

fn report(node: &NodeId, period: &Period) -> IntervalReport {
    let mut orgs: Vec<OrgCounts> = period
        .rules
        .iter()
        .enumerate()
        .map(|(slot, (org, _))| {
            org_counts(*org, |f| period.shards.iter().map(|s| f(s.org(slot)).load(Ordering::Acquire)).sum())
        })
        .collect();
    orgs.extend(
        period
            .others
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(org, other)| org_counts(*org, |f| f(&other.counts).load(Ordering::Acquire))),
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
    fn orgs_given_a_rule_mid_interval_obey_it_at_once() {
        let gate = Gate::new(NodeId::new("c1"), Budget::node_only(1, 100));
        assert_eq!(gate.admit(OrgId(7), 2).accepted, 2, "unknown: enabled, unlimited");
        gate.set_budget(Budget {
            interval: 1,
            node_events: 100,
            orgs: vec![
                OrgBudget { org: OrgId(7), enabled: false, events: None },
                OrgBudget { org: OrgId(8), enabled: true, events: Some(5) },
            ],
        });
        assert_eq!(gate.admit(OrgId(7), 4), Admission { rejected_disabled: 4, ..Admission::default() });
        assert_eq!(gate.admit(OrgId(8), 3).accepted, 3);
        assert_eq!(gate.admit(OrgId(8), 3), Admission { accepted: 2, dropped_org: 1, ..Admission::default() });
        assert_eq!(gate.admit(OrgId(8), 1), Admission { dropped_org: 1, ..Admission::default() });
        let r = gate.begin_interval(2, None);
        let seven = r.orgs.iter().find(|o| o.org == OrgId(7)).cloned();
        let eight = r.orgs.iter().find(|o| o.org == OrgId(8)).cloned();
        assert_eq!(seven.map(|o| (o.received, o.accepted, o.rejected_disabled)), Some((2, 2, 4)));
        assert_eq!(eight.map(|o| (o.received, o.accepted, o.dropped_org)), Some((7, 5, 2)));
        // The next interval gives both a slot under the same rules.
        assert_eq!(gate.admit(OrgId(7), 1).rejected_disabled, 1);
        assert_eq!(gate.admit(OrgId(8), 9).accepted, 5);
    }

    #[test]
    fn a_smaller_budget_holds_exactly_despite_outstanding_leases() {
        let big = Budget {
            interval: 1,
            node_events: 1_000_000,
            orgs: vec![OrgBudget { org: A, enabled: true, events: Some(1_000_000) }],
        };
        let gate = Gate::new(NodeId::new("c1"), big);
        // One event leases a large chunk of both budgets for this thread.
        assert_eq!(gate.admit(A, 1).accepted, 1);
        gate.set_budget(Budget {
            interval: 1,
            node_events: 5,
            orgs: vec![OrgBudget { org: A, enabled: true, events: Some(3) }],
        });
        assert_eq!(gate.admit(A, 10), Admission { accepted: 2, dropped_org: 8, ..Admission::default() });
        gate.set_budget(Budget::node_only(1, 2));
        assert_eq!(gate.admit(OrgId(77), 1).accepted, 0);
        let r = gate.begin_interval(2, None);
        assert_eq!((r.received, r.accepted), (12, 3));
    }

    #[test]
    fn threads_share_budgets_fully_and_exactly() {
        for (node, limit) in [(1u64, 1u64), (37, 5), (1000, 200), (100_000, 60_000)] {
            let budget = Budget {
                interval: 1,
                node_events: node,
                orgs: vec![
                    OrgBudget { org: A, enabled: true, events: Some(limit) },
                    OrgBudget { org: B, enabled: true, events: None },
                ],
            };
            let gate = Arc::new(Gate::new(NodeId::new("c1"), budget));
            let handles: Vec<_> = (0..3u64)
                .map(|t| {
                    let gate = Arc::clone(&gate);
                    std::thread::spawn(move || {
                        let (mut a, mut all) = (0, 0);
                        for i in 0..40_000u64 {
                            let org = if (i + t) % 2 == 0 { A } else { B };
                            let got = gate.admit(org, 1 + i % 3).accepted;
                            all += got;
                            if org == A {
                                a += got;
                            }
                        }
                        (a, all)
                    })
                })
                .collect();
            let (a, all) = handles.into_iter().map(|h| h.join().unwrap()).fold((0, 0), |x, y| (x.0 + y.0, x.1 + y.1));
            let r = gate.begin_interval(2, None);
            // Demand is far above both budgets: they are spent exactly.
            assert_eq!(all, node, "node {node}");
            assert!(a <= limit, "org {a} > {limit}");
            assert_eq!(r.accepted, all);
            assert_eq!(r.received, 3 * (0..40_000u64).map(|i| 1 + i % 3).sum::<u64>());
        }
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
