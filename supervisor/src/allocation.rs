//! EPS allocation among entry nodes (SPEC §3): a pure, deterministic
//! function from (configuration, state, the reports of the interval that
//! ended, the next interval's start) to the next interval's plan.
//!
//! # Policy
//!
//! Every node first gets its guarantee. The rest of the licence is shared
//! by max-min fair water-filling on measured demand above the guarantees (a
//! node asking for little gets all of it; the largest askers share what is
//! left equally); whatever demand leaves over is split evenly among the
//! nodes that report, as headroom for growth. Demand the licence cannot
//! cover may be met from the unused-EPS pool as burst, water-filled the
//! same way and capped per interval.
//!
//! In detail, for the interval starting at `start`:
//! 1. **Accrual**: the pool gains Σ max(0, aₙ − iₙ) over the nodes that
//!    reported, with aₙ the allocation (without burst) they had and iₙ their
//!    incoming EPS; the pool is capped at 5 × L.
//! 2. **Midnight**: each local midnight (in the configured zone) between
//!    the previous interval and this one halves the pool.
//! 3. **Guarantees**: aₙ = gₙ for every known node. Σ g ≤ L is checked
//!    when the configuration is built.
//! 4. **Water-filling**: R = L − Σ g is shared over the excess demand
//!    eₙ = max(0, dₙ − gₙ) of reporting nodes. The demand dₙ is last
//!    interval's incoming EPS iₙ plus the larger of its rise over the
//!    interval before and 5 % of it: dₙ = iₙ + max(iₙ − iₙ', iₙ / 20). The
//!    trend keeps a ramping node from always being one interval behind; the
//!    margin absorbs ordinary jitter (paid from the pool when the licence is
//!    fully used). Shares are min(eₙ, λ) with the highest λ that fits R.
//! 5. **Headroom**: what R has left goes in equal parts to the nodes that
//!    reported last interval or have never reported (new nodes). A node that
//!    reported before and did not this time gets only its guarantee.
//! 6. **Burst**: unmet demand uₙ = max(0, dₙ − aₙ) is water-filled from the
//!    pool, at most `burst_cap` per interval; the pool pays what it grants.
//!
//! Org limits become per-node org budgets: each org's limit × T is split
//! over the nodes by the same water-filling on that org's events per node,
//! the rest evenly, so an org whose traffic moves between nodes still has
//! some budget everywhere. Disabled orgs get no budget and are rejected.
//!
//! # Worked example
//!
//! L = 1000 EPS, guarantees a: 200, b: 100, c: 0. Last interval a received
//! 150 EPS, b 600, c 700 (steady, so the trend is 0 and the 5 % margin
//! applies): demand a 157.5, b 630, c 735. The pool holds 300.
//! - Guarantees: a 200, b 100, c 0; R = 700.
//! - Excess demand: a 0, b 530, c 735. Water-filling 700: λ = 350, so b and
//!   c get 350 each. Allocations: a 200, b 450, c 350 (Σ = 1000 = L).
//! - Unmet: b 180, c 385. The pool (after accruing a's unused 50: 350)
//!   grants 350, water-filled at λ = 175: b 175, c 175. The pool is left at 0.
//!
//! All quantities are integers in milli-EPS, so sums are exact and replays
//! are bit-for-bit identical.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU32;

use collector::{Budget, IntervalReport, NodeId, OrgBudget};
use parsers::{EventTime, OrgId, SourceZone};

use crate::error::Error;

/// One thousandth of an event per second.
pub type MilliEps = u64;

/// Milli-EPS in one EPS.
pub const MILLI: u64 = 1000;

/// An org's admission rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrgQuota {
    /// The organization.
    pub org: OrgId,
    /// Disabled orgs receive nothing and do not count towards EPS.
    pub enabled: bool,
    /// The org's EPS limit, if any.
    pub eps_limit: Option<u64>,
}

/// Settings of the allocator; built with [`AllocatorConfig::validate`].
#[derive(Clone, Debug)]
pub struct AllocatorConfig {
    /// Licensed EPS (L).
    pub licensed_eps: u64,
    /// Interval length T in seconds (180 in production).
    pub interval_secs: NonZeroU32,
    /// Guaranteed EPS per node.
    pub guarantees: BTreeMap<NodeId, u64>,
    /// Most burst EPS granted in one interval.
    pub burst_cap_eps: u64,
    /// Zone whose midnight halves the pool.
    pub zone: SourceZone,
    /// Org limits and enabled flags.
    pub orgs: Vec<OrgQuota>,
}

impl AllocatorConfig {
    /// Checks the rules of SPEC §3 that configuration must obey: Σ g ≤ L
    /// and Σ of enabled orgs' limits ≤ L.
    pub fn validate(self) -> Result<AllocatorConfig, Error> {
        let guaranteed: u64 = self.guarantees.values().sum();
        if guaranteed > self.licensed_eps {
            return Err(Error::GuaranteesExceedLicence { guaranteed, licensed: self.licensed_eps });
        }
        let limited: u64 = self.orgs.iter().filter(|o| o.enabled).filter_map(|o| o.eps_limit).sum();
        if limited > self.licensed_eps {
            return Err(Error::OrgLimitsExceedLicence { limits: limited, licensed: self.licensed_eps });
        }
        Ok(self)
    }

    fn interval(&self) -> u64 {
        u64::from(self.interval_secs.get())
    }

    /// Interval number of the interval starting at or containing `t`.
    pub fn interval_of(&self, t: EventTime) -> u64 {
        u64::try_from(t.unix_secs()).unwrap_or(0) / self.interval()
    }
}

/// What the allocator carries from one interval to the next.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllocatorState {
    /// The unused-EPS pool U, in milli-EPS.
    pub pool: MilliEps,
    /// Local date of the last interval planned, for the midnight halving.
    pub day: Option<(i32, u8, u8)>,
    /// Allocation (without burst) of every node that has reported, as given
    /// for the last interval.
    pub last: BTreeMap<NodeId, MilliEps>,
    /// Incoming EPS of the nodes that reported last time, for the trend.
    pub last_incoming: BTreeMap<NodeId, MilliEps>,
}

/// The plan for one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodePlan {
    /// The node.
    pub node: NodeId,
    /// Whether it reported for the interval that ended.
    pub reported: bool,
    /// Its incoming EPS in the interval that ended (0 if it did not report).
    pub incoming: MilliEps,
    /// Allocated EPS for the next interval.
    pub allocated: MilliEps,
    /// Burst EPS granted from the pool for the next interval.
    pub burst: MilliEps,
    /// What its gate enforces.
    pub budget: Budget,
}

/// The plan for one interval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Interval number.
    pub interval: u64,
    /// Per node, by node id.
    pub nodes: Vec<NodePlan>,
    /// The pool after accrual and halving, before the grants.
    pub pool_before_burst: MilliEps,
    /// Burst granted in all.
    pub burst_granted: MilliEps,
}

/// Plans the interval starting at `start` from the reports of the interval
/// that ended. Returns the plan and the state to pass next time.
pub fn allocate(
    config: &AllocatorConfig,
    state: &AllocatorState,
    reports: &[IntervalReport],
    start: EventTime,
) -> (Plan, AllocatorState) {
    let t = config.interval();
    let licensed = config.licensed_eps * MILLI;
    let reports: BTreeMap<&NodeId, &IntervalReport> = reports.iter().map(|r| (&r.node, r)).collect();
    let incoming = |node: &NodeId| reports.get(node).map(|r| r.received * MILLI / t);

    // 1. Accrual for the interval that ended.
    let mut pool = state.pool;
    for (node, allocated) in &state.last {
        if let Some(i) = incoming(node) {
            pool = pool.saturating_add(allocated.saturating_sub(i));
        }
    }
    pool = pool.min(5 * licensed);

    // 2. Local midnights since the last interval planned.
    let local = start.with_offset(config.zone.offset_at(start)).civil();
    let today = (local.year, local.month, local.day);
    if let Some(previous) = state.day {
        let days = parsers::time::days_from_civil(today.0, today.1, today.2)
            - parsers::time::days_from_civil(previous.0, previous.1, previous.2);
        for _ in 0..days.clamp(0, 64) {
            pool /= 2;
        }
    }

    // Known nodes: configured, reported before, or reporting now.
    let nodes: Vec<&NodeId> = config
        .guarantees
        .keys()
        .chain(state.last.keys())
        .chain(reports.keys().copied())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let guarantee = |n: &NodeId| config.guarantees.get(n).copied().unwrap_or(0) * MILLI;
    let measured: Vec<Option<MilliEps>> = nodes.iter().map(|n| incoming(n)).collect();
    let demand: Vec<Option<MilliEps>> = nodes
        .iter()
        .zip(&measured)
        .map(|(n, m)| m.map(|i| i + i.saturating_sub(state.last_incoming.get(*n).copied().unwrap_or(i)).max(i / 20)))
        .collect();

    // 3-4. Guarantees, then water-filling on excess demand.
    let mut allocated: Vec<MilliEps> = nodes.iter().map(|n| guarantee(n)).collect();
    let rest = licensed.saturating_sub(allocated.iter().sum());
    let excess: Vec<u64> =
        nodes.iter().zip(&demand).map(|(n, d)| d.map_or(0, |d| d.saturating_sub(guarantee(n)))).collect();
    let shares = water_fill(rest, &excess);
    for (a, s) in allocated.iter_mut().zip(&shares) {
        *a += s;
    }

    // 5. Headroom for reporting and new nodes.
    let leftover = rest - shares.iter().sum::<u64>();
    let growing: Vec<usize> =
        (0..nodes.len()).filter(|&i| demand[i].is_some() || !state.last.contains_key(nodes[i])).collect();
    for (k, share) in even_split(leftover, growing.len()).into_iter().enumerate() {
        allocated[growing[k]] += share;
    }

    // 6. Burst from the pool for demand the licence cannot cover.
    let unmet: Vec<u64> = demand.iter().zip(&allocated).map(|(d, a)| d.map_or(0, |d| d.saturating_sub(*a))).collect();
    let pool_before_burst = pool;
    let grant = pool.min(unmet.iter().sum()).min(config.burst_cap_eps * MILLI);
    let burst = water_fill(grant, &unmet);
    let burst_granted: u64 = burst.iter().sum();
    pool -= burst_granted;

    let interval = config.interval_of(start);
    let org_budgets = org_budgets(config, &nodes, &reports);
    let plans: Vec<NodePlan> = nodes
        .iter()
        .enumerate()
        .map(|(i, node)| NodePlan {
            node: (*node).clone(),
            reported: measured[i].is_some(),
            incoming: measured[i].unwrap_or(0),
            allocated: allocated[i],
            burst: burst[i],
            budget: Budget {
                interval,
                node_events: (allocated[i] + burst[i]) * t / MILLI,
                orgs: org_budgets.iter().map(|per_node| per_node[i].clone()).collect(),
            },
        })
        .collect();

    let next = AllocatorState {
        pool,
        day: Some(today),
        last: plans
            .iter()
            .filter(|p| p.reported || state.last.contains_key(&p.node))
            .map(|p| (p.node.clone(), p.allocated))
            .collect(),
        last_incoming: plans.iter().filter(|p| p.reported).map(|p| (p.node.clone(), p.incoming)).collect(),
    };
    (Plan { interval, nodes: plans, pool_before_burst, burst_granted }, next)
}

/// Per org (in config order), per node (in `nodes` order): its budget.
fn org_budgets(
    config: &AllocatorConfig,
    nodes: &[&NodeId],
    reports: &BTreeMap<&NodeId, &IntervalReport>,
) -> Vec<Vec<OrgBudget>> {
    let t = config.interval();
    config
        .orgs
        .iter()
        .map(|quota| {
            let rule = |events| OrgBudget { org: quota.org, enabled: quota.enabled, events };
            match (quota.enabled, quota.eps_limit) {
                (false, _) => nodes.iter().map(|_| rule(Some(0))).collect(),
                (true, None) => nodes.iter().map(|_| rule(None)).collect(),
                (true, Some(limit)) => {
                    let seen: Vec<u64> = nodes
                        .iter()
                        .map(|n| {
                            reports
                                .get(n)
                                .and_then(|r| r.orgs.iter().find(|c| c.org == quota.org))
                                .map_or(0, |c| c.received)
                        })
                        .collect();
                    let total = limit * t;
                    let mut shares = water_fill(total, &seen);
                    let left = total - shares.iter().sum::<u64>();
                    for (s, extra) in shares.iter_mut().zip(even_split(left, nodes.len())) {
                        *s += extra;
                    }
                    shares.into_iter().map(|s| rule(Some(s))).collect()
                }
            }
        })
        .collect()
}

/// Max-min fair split of `total` over `demands`: every share is
/// min(demand, λ) for the highest level λ that `total` allows. Integer
/// remainders go to the earliest entries. Σ shares ≤ total and each share
/// ≤ its demand.
pub fn water_fill(total: u64, demands: &[u64]) -> Vec<u64> {
    let mut shares = vec![0u64; demands.len()];
    let mut order: Vec<usize> = (0..demands.len()).filter(|&i| demands[i] > 0).collect();
    order.sort_by_key(|&i| (demands[i], i));
    let mut remaining = total;
    let mut k = 0;
    while k < order.len() {
        let left = (order.len() - k) as u64;
        let fair = remaining / left;
        let i = order[k];
        if demands[i] <= fair {
            shares[i] = demands[i];
            remaining -= demands[i];
            k += 1;
            continue;
        }
        // Everyone left wants more than the fair share: give the level, and
        // the remainder one by one to the earliest (by index).
        let mut rest: Vec<usize> = order[k..].to_vec();
        rest.sort_unstable();
        let extra = remaining % left;
        for (j, &i) in rest.iter().enumerate() {
            shares[i] = fair + u64::from((j as u64) < extra);
        }
        return shares;
    }
    shares
}

/// `total` in `n` near-equal integer parts (the first ones get the
/// remainder).
pub fn even_split(total: u64, n: usize) -> Vec<u64> {
    if n == 0 {
        return Vec::new();
    }
    let n64 = n as u64;
    (0..n64).map(|i| total / n64 + u64::from(i < total % n64)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use collector::OrgCounts;

    fn node(name: &str) -> NodeId {
        NodeId::new(name)
    }

    fn config(l: u64, guarantees: &[(&str, u64)]) -> AllocatorConfig {
        AllocatorConfig {
            licensed_eps: l,
            interval_secs: NonZeroU32::new(180).unwrap(),
            guarantees: guarantees.iter().map(|(n, g)| (node(n), *g)).collect(),
            burst_cap_eps: l,
            zone: SourceZone::utc(),
            orgs: Vec::new(),
        }
        .validate()
        .unwrap()
    }

    fn report(name: &str, eps: u64) -> IntervalReport {
        IntervalReport { node: node(name), interval: 0, received: eps * 180, accepted: 0, orgs: Vec::new() }
    }

    fn eps(plan: &Plan, name: &str) -> (u64, u64) {
        let p = plan.nodes.iter().find(|p| p.node == node(name)).unwrap();
        (p.allocated / MILLI, p.burst / MILLI)
    }

    #[test]
    fn worked_example_from_the_docs() {
        let cfg = config(1000, &[("a", 200), ("b", 100), ("c", 0)]);
        let state = AllocatorState {
            pool: 300 * MILLI,
            day: None,
            last: [(node("a"), 200 * MILLI), (node("b"), 400 * MILLI), (node("c"), 400 * MILLI)].into_iter().collect(),
            last_incoming: BTreeMap::new(),
        };
        let start: EventTime = "2026-11-22T10:03:00Z".parse().unwrap();
        let (plan, next) = allocate(&cfg, &state, &[report("a", 150), report("b", 600), report("c", 700)], start);
        assert_eq!(eps(&plan, "a"), (200, 0));
        assert_eq!(eps(&plan, "b"), (450, 175));
        assert_eq!(eps(&plan, "c"), (350, 175));
        assert_eq!(plan.pool_before_burst, 350 * MILLI);
        assert_eq!(next.pool, 0);
        assert_eq!(plan.nodes[1].budget.node_events, 625 * 180);
    }

    #[test]
    fn rising_demand_is_extrapolated_one_step() {
        let cfg = config(1000, &[]);
        let (_, state) =
            allocate(&cfg, &AllocatorState::default(), &[report("a", 300), report("b", 300)], EventTime::UNIX_EPOCH);
        // a rose by 100 EPS: planned for 500; b fell: 200 + 5 % = 210.
        let (plan, _) = allocate(&cfg, &state, &[report("a", 400), report("b", 200)], EventTime::from_unix(180, 0, 0));
        // Demand 710 < 1000: 145 EPS headroom each on top.
        assert_eq!(eps(&plan, "a"), (645, 0));
        assert_eq!(eps(&plan, "b"), (355, 0));
    }

    #[test]
    fn headroom_when_demand_is_below_the_licence() {
        let cfg = config(1000, &[("a", 100)]);
        let (plan, _) =
            allocate(&cfg, &AllocatorState::default(), &[report("a", 50), report("b", 150)], EventTime::UNIX_EPOCH);
        // Demand with the 5 % margin: a 52.5 (its guarantee of 100 covers
        // it), b 157.5; the leftover 742.5 is split evenly.
        assert_eq!(eps(&plan, "a"), (471, 0));
        assert_eq!(eps(&plan, "b"), (528, 0));
    }

    #[test]
    fn silent_nodes_fall_back_to_their_guarantee() {
        let cfg = config(1000, &[("a", 100), ("b", 100)]);
        let (_, state) =
            allocate(&cfg, &AllocatorState::default(), &[report("a", 400), report("b", 400)], EventTime::UNIX_EPOCH);
        let (plan, _) = allocate(&cfg, &state, &[report("a", 400)], EventTime::from_unix(180, 0, 0));
        assert_eq!(eps(&plan, "b"), (100, 0));
        assert_eq!(eps(&plan, "a"), (900, 0));
    }

    #[test]
    fn pool_accrues_caps_and_halves_at_local_midnight() {
        let mut cfg = config(1000, &[]);
        cfg.zone = SourceZone::parse("+02:00").unwrap();
        let mut state = AllocatorState::default();
        // 21:00 UTC = 23:00 local: one node using nothing of its 1000.
        let mut t: EventTime = "2026-11-22T21:00:00Z".parse().unwrap();
        for _ in 0..40 {
            let (_, next) = allocate(&cfg, &state, &[report("a", 0)], t);
            state = next;
            t = t.add_secs(180);
            assert!(state.pool <= 5 * 1000 * MILLI);
        }
        // Accrued 1000 EPS per interval up to the cap; local midnight (22:00
        // UTC) came after 20 intervals and halved it once.
        assert_eq!(state.pool, 5 * 1000 * MILLI);
        let (plan, _) = allocate(&cfg, &state, &[report("a", 0)], "2026-11-23T22:00:00Z".parse().unwrap());
        assert_eq!(plan.pool_before_burst, 5 * 1000 * MILLI / 2);
    }

    #[test]
    fn config_rules() {
        assert!(matches!(
            AllocatorConfig {
                guarantees: [(node("a"), 600), (node("b"), 500)].into_iter().collect(),
                ..config(1000, &[])
            }
            .validate(),
            Err(Error::GuaranteesExceedLicence { guaranteed: 1100, licensed: 1000 })
        ));
        let orgs = vec![
            OrgQuota { org: OrgId(2), enabled: true, eps_limit: Some(700) },
            OrgQuota { org: OrgId(3), enabled: false, eps_limit: Some(700) },
        ];
        assert!(AllocatorConfig { orgs: orgs.clone(), ..config(1000, &[]) }.validate().is_ok());
        let mut over = orgs;
        over[1].enabled = true;
        assert!(AllocatorConfig { orgs: over, ..config(1000, &[]) }.validate().is_err());
    }

    #[test]
    fn org_limits_follow_the_org_traffic() {
        let mut cfg = config(1000, &[]);
        cfg.orgs = vec![
            OrgQuota { org: OrgId(2), enabled: true, eps_limit: Some(100) },
            OrgQuota { org: OrgId(3), enabled: false, eps_limit: None },
        ];
        let mut a = report("a", 300);
        a.orgs = vec![OrgCounts {
            org: OrgId(2),
            received: 90 * 180,
            accepted: 0,
            dropped_org: 0,
            dropped_node: 0,
            rejected_disabled: 0,
        }];
        let (plan, _) = allocate(&cfg, &AllocatorState::default(), &[a, report("b", 300)], EventTime::UNIX_EPOCH);
        let budget = |n: usize| plan.nodes[n].budget.orgs[0].events.unwrap();
        // 100 EPS × 180 s: a's 90 EPS first, the remaining 10 EPS split.
        assert_eq!(budget(0), 95 * 180);
        assert_eq!(budget(1), 5 * 180);
        assert_eq!(plan.nodes[0].budget.orgs[1], OrgBudget { org: OrgId(3), enabled: false, events: Some(0) });
    }

    #[test]
    fn water_fill_examples() {
        assert_eq!(water_fill(700, &[0, 500, 700]), vec![0, 350, 350]);
        assert_eq!(water_fill(1000, &[100, 200, 300]), vec![100, 200, 300]);
        assert_eq!(water_fill(10, &[5, 5, 5]), vec![4, 3, 3]);
        assert_eq!(water_fill(0, &[5]), vec![0]);
        assert_eq!(even_split(10, 3), vec![4, 3, 3]);
    }
}
