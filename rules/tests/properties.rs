//! Properties: the compiler survives any text; the engine gives the same
//! incidents for any arrival order within the allowed lateness.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::*;
use parsers::Event;
use proptest::prelude::*;
use rules::{Compiler, Engine, Incident, RuleSet};

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn the_compiler_never_panics(text in "\\PC{0,300}") {
        let mut compiler = Compiler::new();
        compiler.add_source("p.yaml", &text);
        let _ = compiler.finish();
    }

    #[test]
    fn the_compiler_never_panics_on_rule_shaped_text(
        parts in proptest::collection::vec(prop::sample::select(vec![
            "id: r\n", "patterns:\n", "  p:\n", "    filter:\n", "      user|re: '(a'\n", "      src_ip|cidr: 1.2.3.4/40\n",
            "    having: count >= 1e9\n", "    having: sum(ext.x) != 3\n", "    window: 0\n", "    group_by: [user, user]\n",
            "condition: p followed by p\n", "condition: p not followed by\n", "within: 9999999d\n", "join: [{p: user}]\n",
            "title: '{p.count}{'\n", "scope: {org: ''}\n", "actions: [{watchlist_add: {list: l, field: user, ttl: 1s}}]\n",
            "- id: x\n", "  patterns: {q: {filter: {any: [{not: {}}]}}}\n", "weight: ext.n\n", "    weight: user\n",
        ]), 0..12)
    ) {
        let mut compiler = Compiler::new();
        compiler.add_source("p.yaml", &parts.concat());
        let _ = compiler.finish();
    }
}

const EXTRA: &str = r#"
- id: any-two-users
  patterns:
    a: {filter: {event_type: ssh.auth.failure}, group_by: [user], window: 2m, having: count >= 2}
    b: {filter: {event_type: ssh.auth.success}}
  condition: a and b
  within: 1m
  join: [user]
- id: success-without-vpn
  patterns:
    ok: {filter: {event_type: ssh.auth.success}}
    vpn: {filter: {event_type: vpn.connected}}
  condition: ok and not vpn
  within: 1m
  join: [user]
  suppress: 0
"#;

fn rule_set() -> Arc<RuleSet> {
    let mut compiler = Compiler::new();
    compiler.add_path(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/packs")));
    compiler.add_source("extra.yaml", EXTRA);
    Arc::new(compiler.finish().unwrap().0)
}

fn event_strategy() -> impl Strategy<Value = (u8, u8, u8, u8, u16)> {
    (0u8..6, 0u8..3, 0u8..3, 0u8..12, 0u16..40)
}

fn make_event(time: f64, (kind, org, ip, user, port): (u8, u8, u8, u8, u16)) -> Event {
    let org = ["acme", "globex", "initech"][usize::from(org)];
    let ip = format!("10.0.0.{ip}");
    let user = format!("u{user}");
    let port = (20 + port).to_string();
    let fields: Vec<(&str, &str)> = match kind {
        0 | 1 => vec![("event_type", "ssh.auth.failure"), ("src_ip", &ip), ("user", &user)],
        2 => vec![("event_type", "ssh.auth.success"), ("src_ip", &ip), ("user", &user), ("host", "h")],
        3 => vec![("event_type", "account.group.member_added"), ("user", &user), ("ext.group", "sudo"), ("host", "h")],
        4 => vec![("action", "approved"), ("user", &user)],
        _ => vec![("event_type", "network.connection.denied"), ("src_ip", &ip), ("dst_port", &port)],
    };
    let mut all = vec![("org", org)];
    all.extend(fields);
    ev(time, &all)
}

/// Incidents in a form independent of the order partitions opened them.
fn canonical(incidents: Vec<Incident>) -> Vec<String> {
    let mut lines: Vec<String> = finals(incidents)
        .into_iter()
        .map(|mut i| {
            i.id = 0;
            i.event_ids.sort_unstable();
            i.to_json()
        })
        .collect();
    lines.sort();
    lines
}

fn run_order(rules: &Arc<RuleSet>, events: &[(u64, Event)]) -> (Vec<String>, u64) {
    let mut engine = Engine::new(Arc::clone(rules), config(30));
    let mut out = Vec::new();
    for (id, event) in events {
        engine.process(*id, event, &mut out);
    }
    engine.flush(&mut out);
    (canonical(out), engine.stats().late_events)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn arrival_order_within_lateness_does_not_change_incidents(
        specs in proptest::collection::vec((event_strategy(), 0.0f64..29.9), 1..400)
    ) {
        let rules = rule_set();
        // Distinct times, 0.5 s apart on average.
        let events: Vec<(u64, Event, f64)> = specs
            .iter()
            .enumerate()
            .map(|(i, (spec, delay))| {
                let time = i as f64 * 0.5 + 0.001 * (i % 7) as f64;
                (i as u64 + 1, make_event(time, *spec), time + delay)
            })
            .collect();
        let in_order: Vec<(u64, Event)> = events.iter().map(|(id, e, _)| (*id, e.clone())).collect();
        let mut shuffled = events.clone();
        shuffled.sort_by(|a, b| a.2.total_cmp(&b.2));
        let shuffled: Vec<(u64, Event)> = shuffled.into_iter().map(|(id, e, _)| (id, e)).collect();
        let (expected, late_a) = run_order(&rules, &in_order);
        let (got, late_b) = run_order(&rules, &shuffled);
        prop_assert_eq!((late_a, late_b), (0, 0));
        prop_assert_eq!(expected, got);
    }
}

#[test]
fn the_order_property_is_exercised_by_many_incidents() {
    let rules = rule_set();
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let mut events = Vec::new();
    for i in 0..3000u64 {
        let spec = (next(6) as u8, next(3) as u8, next(3) as u8, next(12) as u8, next(40) as u16);
        let time = i as f64 * 0.5;
        events.push((i + 1, make_event(time, spec), time + next(2990) as f64 / 100.0));
    }
    let in_order: Vec<(u64, Event)> = events.iter().map(|(id, e, _)| (*id, e.clone())).collect();
    events.sort_by(|a, b| a.2.total_cmp(&b.2));
    let shuffled: Vec<(u64, Event)> = events.into_iter().map(|(id, e, _)| (id, e)).collect();
    let (expected, _) = run_order(&rules, &in_order);
    let (got, late) = run_order(&rules, &shuffled);
    assert_eq!(late, 0);
    assert_eq!(expected, got);
    let rules_hit: std::collections::BTreeSet<String> =
        expected.iter().map(|l| l.split("\"rule\":\"").nth(1).unwrap().split('"').next().unwrap().to_owned()).collect();
    assert!(expected.len() > 50, "{}", expected.len());
    assert!(rules_hit.len() >= 5, "{rules_hit:?}");
}
