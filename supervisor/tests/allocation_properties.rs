//! Properties of the allocator over thousands of random scenarios: the sum
//! of allocations never exceeds the licence, bursts come only from the pool,
//! the pool stays within [0, 5L], guarantees always hold, and the same
//! inputs give the same outputs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::num::NonZeroU32;

use collector::{IntervalReport, NodeId, OrgCounts};
use parsers::{EventTime, OrgId, SourceZone};
use proptest::prelude::*;
use supervisor::allocation::{AllocatorConfig, AllocatorState, MILLI, OrgQuota, allocate};

/// Events received in all, and per org.
type NodeReport = (u64, Vec<u64>);

#[derive(Debug, Clone)]
struct Scenario {
    licensed: u64,
    interval: u32,
    guarantees: Vec<u64>,
    burst_cap: u64,
    org_limits: Vec<(bool, Option<u64>)>,
    /// Per interval: per node, what it reports (if it does).
    reports: Vec<Vec<Option<NodeReport>>>,
    start: i64,
    step_secs: i64,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (1u64..50_000, 1usize..12, prop_oneof![Just(180u32), 1u32..4000]).prop_flat_map(|(licensed, nodes, interval)| {
        let guarantees = proptest::collection::vec(0u64..=licensed / nodes as u64, nodes);
        let orgs = proptest::collection::vec((any::<bool>(), proptest::option::of(0u64..=licensed / 4)), 0..4);
        let n_orgs = 4;
        let report = proptest::option::weighted(
            0.8,
            (
                0u64..licensed * 3 * u64::from(interval),
                proptest::collection::vec(0u64..licensed * u64::from(interval), n_orgs),
            ),
        );
        let reports = proptest::collection::vec(proptest::collection::vec(report, nodes), 1..30);
        (
            Just(licensed),
            Just(interval),
            guarantees,
            0u64..licensed * 2,
            orgs,
            reports,
            0i64..4_000_000_000,
            prop_oneof![Just(i64::from(interval)), 1i64..200_000],
        )
            .prop_map(|(licensed, interval, guarantees, burst_cap, org_limits, reports, start, step_secs)| {
                Scenario { licensed, interval, guarantees, burst_cap, org_limits, reports, start, step_secs }
            })
    })
}

fn config(s: &Scenario) -> AllocatorConfig {
    AllocatorConfig {
        licensed_eps: s.licensed,
        interval_secs: NonZeroU32::new(s.interval).unwrap(),
        guarantees: s
            .guarantees
            .iter()
            .enumerate()
            .map(|(i, g)| (NodeId::new(&format!("n{i}")), *g))
            .collect::<BTreeMap<_, _>>(),
        burst_cap_eps: s.burst_cap,
        zone: SourceZone::parse("Europe/Berlin").unwrap(),
        orgs: s
            .org_limits
            .iter()
            .enumerate()
            .map(|(i, (enabled, limit))| OrgQuota { org: OrgId(i as u32 + 2), enabled: *enabled, eps_limit: *limit })
            .collect(),
    }
}

fn reports_of(s: &Scenario, k: usize) -> Vec<IntervalReport> {
    s.reports[k]
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            r.as_ref().map(|(received, per_org)| IntervalReport {
                node: NodeId::new(&format!("n{i}")),
                interval: 0,
                received: *received,
                accepted: 0,
                orgs: per_org
                    .iter()
                    .enumerate()
                    .map(|(o, &received)| OrgCounts {
                        org: OrgId(o as u32 + 2),
                        received,
                        accepted: received,
                        dropped_org: 0,
                        dropped_node: 0,
                        rejected_disabled: 0,
                    })
                    .collect(),
            })
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn allocation_invariants_hold_over_interval_sequences(s in scenario()) {
        // Σ g ≤ L and Σ limits ≤ L are configuration rules; scenarios that
        // break them must be refused, the others must plan.
        let cfg = config(&s);
        let guaranteed: u64 = s.guarantees.iter().sum();
        let limits: u64 = s.org_limits.iter().filter(|(e, _)| *e).filter_map(|(_, l)| *l).sum();
        let validated = cfg.clone().validate();
        prop_assert_eq!(validated.is_ok(), guaranteed <= s.licensed && limits <= s.licensed);
        let Ok(cfg) = validated else { return Ok(()) };

        let licensed = s.licensed * MILLI;
        let mut state = AllocatorState::default();
        for k in 0..s.reports.len() {
            let start = EventTime::from_unix(s.start + k as i64 * s.step_secs, 0, 0);
            let reports = reports_of(&s, k);
            let (plan, next) = allocate(&cfg, &state, &reports, start);

            // Same inputs, same outputs.
            let (plan2, next2) = allocate(&cfg, &state, &reports, start);
            prop_assert_eq!(&plan, &plan2);
            prop_assert_eq!(&next, &next2);

            let allocated: u64 = plan.nodes.iter().map(|p| p.allocated).sum();
            let burst: u64 = plan.nodes.iter().map(|p| p.burst).sum();
            prop_assert!(allocated <= licensed, "Σa {} > L {}", allocated, licensed);
            prop_assert!(allocated + burst <= licensed + plan.burst_granted);
            prop_assert_eq!(burst, plan.burst_granted);
            prop_assert!(plan.burst_granted <= plan.pool_before_burst);
            prop_assert!(plan.burst_granted <= s.burst_cap * MILLI);
            prop_assert!(plan.pool_before_burst <= 5 * licensed);
            prop_assert!(next.pool <= 5 * licensed);
            prop_assert_eq!(next.pool, plan.pool_before_burst - plan.burst_granted);
            for (i, g) in s.guarantees.iter().enumerate() {
                let node = NodeId::new(&format!("n{i}"));
                let p = plan.nodes.iter().find(|p| p.node == node).unwrap();
                prop_assert!(p.allocated >= g * MILLI, "node {} below its guarantee", i);
                prop_assert_eq!(p.budget.node_events, (p.allocated + p.burst) * u64::from(s.interval) / MILLI);
                // Org budgets never add up to more than the org's limit.
            }
            for (o, (enabled, limit)) in s.org_limits.iter().enumerate() {
                let org = OrgId(o as u32 + 2);
                let budgets: Vec<Option<u64>> = plan
                    .nodes
                    .iter()
                    .map(|p| p.budget.orgs.iter().find(|b| b.org == org).and_then(|b| b.events))
                    .collect();
                match (enabled, limit) {
                    (false, _) => prop_assert!(budgets.iter().all(|b| *b == Some(0))),
                    (true, Some(l)) => {
                        let total: u64 = budgets.iter().map(|b| b.unwrap()).sum();
                        prop_assert_eq!(total, l * u64::from(s.interval));
                    }
                    (true, None) => prop_assert!(budgets.iter().all(Option::is_none)),
                }
            }
            state = next;
        }
    }

    #[test]
    fn water_fill_is_max_min_fair(total in 0u64..100_000, demands in proptest::collection::vec(0u64..20_000, 0..20)) {
        let shares = supervisor::allocation::water_fill(total, &demands);
        let sum: u64 = shares.iter().sum();
        prop_assert!(sum <= total);
        prop_assert!(shares.iter().zip(&demands).all(|(s, d)| s <= d));
        let wanted: u64 = demands.iter().sum();
        // Either everyone is satisfied or the whole total is given out.
        prop_assert!(sum == wanted.min(total));
        // Max-min: an unsatisfied node gets at least as much as any other
        // node's share minus one (integer remainders).
        for (i, (s, d)) in shares.iter().zip(&demands).enumerate() {
            if s < d {
                prop_assert!(shares.iter().all(|o| *o <= s + 1), "node {} unsatisfied with {} while others got more", i, s);
            }
        }
    }
}
