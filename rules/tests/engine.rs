//! The engine on synthetic streams: windows, conditions, incidents, orgs,
//! watch lists, nesting, lateness and state bounds.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use parsers::{EventTime, OrgId};
use rules::{Engine, EngineConfig};

const BRUTE: &str = r#"
id: brute
severity: high
patterns:
  f:
    filter: {event_type: ssh.auth.failure}
    group_by: [src_ip]
    weight: ext.repeat
    window: 60s
    having: count >= 5
title: "brute force from {src_ip} in {org}: {count}"
suppress: 10m
"#;

#[test]
fn a_threshold_fires_within_its_window_only() {
    // Five failures spanning exactly 60 s: the window includes both ends.
    let hits = run(BRUTE, &failures("acme", "10.0.0.1", 0.0, 15.0, 5));
    assert_eq!(summary(&hits), vec![("brute".into(), "acme".into(), vec!["10.0.0.1".into()], 1)]);
    assert_eq!(hits[0].title, "brute force from 10.0.0.1 in acme: 5");
    assert_eq!(hits[0].event_ids, vec![1, 2, 3, 4, 5]);
    assert_eq!(hits[0].first_seen, EventTime::from_unix(T0 + 60, 0, 0));
    assert_eq!(hits[0].key, vec![("src_ip".to_string(), "10.0.0.1".to_string())]);
    // Four are not enough; five spread over 60.1 s are not either.
    assert!(run(BRUTE, &failures("acme", "10.0.0.1", 0.0, 15.0, 4)).is_empty());
    assert!(run(BRUTE, &failures("acme", "10.0.0.1", 0.0, 15.025, 5)).is_empty());
    // Other sources do not add up.
    let mut mixed = failures("acme", "10.0.0.1", 0.0, 1.0, 4);
    mixed.extend(failures("acme", "10.0.0.2", 5.0, 1.0, 4));
    assert!(run(BRUTE, &mixed).is_empty());
}

#[test]
fn repeated_messages_count_by_their_weight() {
    let mut events = failures("acme", "10.0.0.1", 0.0, 1.0, 1);
    events.push(ev(
        2.0,
        &[("org", "acme"), ("event_type", "ssh.auth.failure"), ("src_ip", "10.0.0.1"), ("ext.repeat", "4")],
    ));
    let hits = run(BRUTE, &events);
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].event_ids, vec![1, 2]);
}

#[test]
fn hits_within_the_suppression_window_increment_one_incident() {
    // 12 failures: the window fires at the 5th and 10th (it restarts after
    // each match), both within 10 minutes: one incident, count 2.
    let hits = run(BRUTE, &failures("acme", "10.0.0.1", 0.0, 1.0, 12));
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].count, 2);
    assert_eq!(hits[0].first_seen, EventTime::from_unix(T0 + 4, 0, 0));
    assert_eq!(hits[0].last_seen, EventTime::from_unix(T0 + 9, 0, 0));
    assert_eq!(hits[0].event_ids, (1..=10).collect::<Vec<u64>>());
    // The same again 11 minutes after the last hit opens a new incident.
    let mut events = failures("acme", "10.0.0.1", 0.0, 1.0, 5);
    events.extend(failures("acme", "10.0.0.1", 4.0 + 601.0, 1.0, 5));
    let hits = run(BRUTE, &events);
    assert_eq!(hits.iter().map(|i| (i.id, i.count)).collect::<Vec<_>>(), vec![(1, 1), (2, 1)]);
}

#[test]
fn contributing_event_ids_are_capped() {
    let rule = BRUTE.replace("count >= 5", "count >= 150").replace("60s", "10m");
    let hits = run(&rule, &failures("acme", "10.0.0.1", 0.0, 1.0, 150));
    assert_eq!(hits.len(), 1);
    // The most recent 100 of the window.
    assert_eq!(hits[0].event_ids, (51..=150).collect::<Vec<u64>>());
}

#[test]
fn per_org_rules_never_mix_orgs() {
    let mut events = failures("acme", "10.0.0.1", 0.0, 1.0, 3);
    events.extend(failures("globex", "10.0.0.1", 3.0, 1.0, 3));
    assert!(run(BRUTE, &events).is_empty());
    let mut events = failures("acme", "10.0.0.1", 0.0, 1.0, 5);
    events.extend(failures("globex", "10.0.0.1", 0.0, 1.0, 5));
    let hits = run(BRUTE, &events);
    assert_eq!(
        hits.iter().map(|i| (i.org.as_str(), i.org_id)).collect::<Vec<_>>(),
        vec![("acme", org_id("acme")), ("globex", org_id("globex"))]
    );
}

#[test]
fn events_without_an_org_belong_to_super_local() {
    let events: Vec<_> =
        (0..5).map(|i| ev(f64::from(i), &[("event_type", "ssh.auth.failure"), ("src_ip", "10.0.0.9")])).collect();
    let hits = run(BRUTE, &events);
    assert_eq!((hits[0].org.as_str(), hits[0].org_id), ("Super/Local", OrgId::SUPER_LOCAL));
}

#[test]
fn org_specific_and_cross_org_scopes() {
    let only_acme = BRUTE.replace("severity: high", "severity: high\nscope: {org: acme}");
    let mut events = failures("acme", "10.0.0.1", 0.0, 1.0, 5);
    events.extend(failures("globex", "10.0.0.2", 0.0, 1.0, 5));
    assert_eq!(summary(&run(&only_acme, &events)), vec![("brute".into(), "acme".into(), vec!["10.0.0.1".into()], 1)]);

    // Cross-org: three failures in each of two orgs from one address add up,
    // and the incident belongs to Super/Local.
    let cross = BRUTE.replace("severity: high", "severity: high\nscope: cross-org");
    let mut events = failures("acme", "10.0.0.1", 0.0, 1.0, 3);
    events.extend(failures("globex", "10.0.0.1", 3.0, 1.0, 3));
    let hits = run(&cross, &events);
    assert_eq!(summary(&hits), vec![("brute".into(), "Super/Local".into(), vec!["10.0.0.1".into()], 1)]);
    assert_eq!(hits[0].org_id, OrgId::SUPER_LOCAL);
    assert_eq!(hits[0].title, "brute force from 10.0.0.1 in Super/Local: 5");
}

#[test]
fn out_of_order_events_within_lateness_give_the_in_order_result() {
    let ordered = failures("acme", "10.0.0.1", 0.0, 10.0, 5);
    let mut shuffled = ordered.clone();
    shuffled.swap(0, 3);
    shuffled.swap(1, 4);
    let rules = compile(BRUTE);
    let (a, _) = run_with(&rules, &ordered, config(60));
    let (b, stats) = run_with(&rules, &shuffled, config(60));
    assert_eq!(summary(&a), summary(&b));
    assert_eq!(a[0].first_seen, b[0].first_seen);
    assert_eq!(stats.late_events, 0);
}

#[test]
fn late_events_are_counted_and_not_merged() {
    // With 5 s lateness, the failure at t=0 arriving after one at t=100 is late.
    let mut events = failures("acme", "10.0.0.1", 100.0, 1.0, 4);
    events.push(ev(0.0, &[("org", "acme"), ("event_type", "ssh.auth.failure"), ("src_ip", "10.0.0.1")]));
    events.push(ev(98.0, &[("org", "acme"), ("event_type", "ssh.auth.failure"), ("src_ip", "10.0.0.1")]));
    let (hits, stats) = run_with(&compile(BRUTE), &events, config(5));
    assert_eq!(stats.late_events, 1);
    assert_eq!(stats.orgs.iter().find(|o| o.1 == "acme").map(|o| o.2), Some(1));
    // The one at t=98 was within lateness and counts.
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].event_ids, vec![6, 1, 2, 3, 4]);
}

fn with_brute(rest: &str) -> String {
    format!("- {}\n{}", BRUTE.trim().replace('\n', "\n  "), rest)
}

const BRUTE_THEN_LOGIN: &str = r#"
- id: brute-success
  severity: critical
  patterns:
    attack: {filter: {event_type: incident.brute}}
    login: {filter: {event_type: ssh.auth.success}}
  condition: attack followed by login
  within: 300s
  join: [src_ip]
  title: "{login.user} logged in from {src_ip}"
"#;

fn login(secs: f64, org: &str, ip: &str, user: &str) -> parsers::Event {
    ev(secs, &[("org", org), ("event_type", "ssh.auth.success"), ("src_ip", ip), ("user", user)])
}

#[test]
fn nested_followed_by_fires_on_a_login_after_the_attack() {
    let rules = with_brute(BRUTE_THEN_LOGIN);
    let mut events = failures("acme", "10.0.0.1", 0.0, 1.0, 5);
    events.push(login(100.0, "acme", "10.0.0.1", "admin"));
    let hits = run(&rules, &events);
    assert_eq!(hits.len(), 2, "{hits:?}");
    assert_eq!(hits[1].rule, "brute-success");
    assert_eq!(hits[1].title, "admin logged in from 10.0.0.1");
    assert_eq!(hits[1].first_seen, EventTime::from_unix(T0 + 100, 0, 0));
    // The nested incident carries the failures' ids and the login's.
    assert_eq!(hits[1].event_ids, vec![1, 2, 3, 4, 5, 6]);

    // A login before the attack, from another address, another org, or
    // after 300 s does not count.
    for (secs, org, ip) in [
        (1.5, "acme", "10.0.0.1"),
        (100.0, "acme", "10.0.0.2"),
        (100.0, "globex", "10.0.0.1"),
        (305.0, "acme", "10.0.0.1"),
    ] {
        let mut events = failures("acme", "10.0.0.1", 0.0, 1.0, 5);
        events.push(login(secs, org, ip, "admin"));
        events.sort_by_key(|e| e.time.unix_nanos());
        let hits = run(&rules, &events);
        assert_eq!(hits.len(), 1, "login at {secs} in {org} from {ip}: {hits:?}");
    }
}

#[test]
fn not_followed_by_fires_when_the_watermark_passes_the_window() {
    let rule = r#"
id: unapproved
patterns:
  add: {filter: {event_type: account.group.member_added}}
  ok: {filter: {action: approved}}
condition: add not followed by ok
within: 1h
join: [user]
title: "{user} added to {add.ext.group}"
"#;
    let add = |secs: f64, user: &str| {
        ev(
            secs,
            &[("org", "acme"), ("event_type", "account.group.member_added"), ("user", user), ("ext.group", "sudo")],
        )
    };
    let approve = |secs: f64, user: &str| ev(secs, &[("org", "acme"), ("action", "approved"), ("user", user)]);
    let noise = |secs: f64| ev(secs, &[("org", "acme"), ("event_type", "noise")]);
    let rules = compile(rule);

    // Approved in time: nothing, even after flushing.
    let (hits, _) = run_with(&rules, &[add(0.0, "bob"), approve(3599.0, "bob"), noise(9000.0)], config(10));
    assert!(hits.is_empty(), "{hits:?}");

    // Not approved: nothing while the window is open, the incident once
    // event time passes its end (plus lateness), without a flush.
    let mut engine = Engine::new(Arc::clone(&rules), config(10));
    let mut out = Vec::new();
    engine.process(1, &add(0.0, "bob"), &mut out);
    engine.process(2, &approve(100.0, "alice"), &mut out);
    engine.process(3, &noise(3605.0), &mut out);
    assert!(out.is_empty());
    engine.process(4, &noise(3611.0), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].title, "bob added to sudo");
    assert_eq!(out[0].first_seen, EventTime::from_unix(T0 + 3600, 0, 0));
    assert_eq!(out[0].event_ids, vec![1]);

    // An approval after the window closed is too late; a flush closes windows.
    let (hits, _) = run_with(&rules, &[add(0.0, "bob"), approve(3601.0, "bob")], config(10));
    assert_eq!(hits.len(), 1);
    let (hits, _) = run_with(&rules, &[add(0.0, "bob")], config(10));
    assert_eq!(hits.len(), 1);

    // A wall clock advances quiet orgs; the engine says when the waiting
    // start's timer is due (its window's end plus the lateness).
    let mut engine = Engine::new(Arc::clone(&rules), config(10));
    let mut out = Vec::new();
    engine.process(1, &add(0.0, "carol"), &mut out);
    engine.advance(EventTime::from_unix(T0 + 3000, 0, 0), &mut out);
    assert!(out.is_empty());
    assert_eq!(engine.due(), Some(EventTime::from_unix(T0 + 3610, 1, 0)));
    engine.advance(EventTime::from_unix(T0 + 3610, 0, 0), &mut out);
    assert!(out.is_empty(), "due a nanosecond later");
    engine.advance(EventTime::from_unix(T0 + 3610, 1, 0), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(engine.due(), None);
}

#[test]
fn the_engine_says_when_a_quiet_orgs_waiting_records_are_due() {
    let rules = compile(BRUTE);
    let mut engine = Engine::new(rules, config(2));
    let mut out = Vec::new();
    assert_eq!(engine.due(), None, "nothing waits");
    // acme's attack completes at 10.5 s and then acme goes quiet; globex
    // keeps sending, which moves only globex's watermark.
    let mut id = 0;
    for e in failures("acme", "10.0.0.1", 10.0, 0.1, 6) {
        id += 1;
        engine.process(id, &e, &mut out);
    }
    assert_eq!(engine.due(), Some(EventTime::from_unix(T0 + 12, 0, 0)), "the first record plus the lateness");
    for t in 0..30 {
        id += 1;
        let ip = format!("10.9.9.{t}");
        engine.process(id, &failures("globex", &ip, 11.0 + f64::from(t) * 0.1, 0.0, 1)[0], &mut out);
    }
    assert!(out.is_empty(), "acme's watermark has not moved: {out:?}");
    // Too early: nothing released, and the answer does not move back.
    engine.advance(EventTime::from_unix(T0 + 11, 0, 0), &mut out);
    assert!(out.is_empty());
    assert_eq!(engine.due(), Some(EventTime::from_unix(T0 + 12, 0, 0)));
    // Once due, advancing releases acme's incident; what waits next is
    // the records after it.
    engine.advance(EventTime::from_unix(T0 + 12, 500_000_000, 0), &mut out);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].org, "acme");
    let next = engine.due().expect("globex's later records still wait");
    assert!(next > EventTime::from_unix(T0 + 12, 500_000_000, 0), "{next:?}");
    engine.flush(&mut out);
    assert_eq!(engine.due(), None, "a flush releases everything");
}

#[test]
fn and_across_two_sources_needs_both_within_the_window() {
    let rule = r#"
id: both
patterns:
  fw:
    filter: {event_type: network.connection.denied}
    group_by: [src_ip]
    window: 10m
    having: count >= 2
  ssh: {filter: {event_type: ssh.auth.failure}}
condition: fw and ssh
within: 5m
join: [src_ip]
"#;
    let deny =
        |secs: f64, ip: &str| ev(secs, &[("org", "acme"), ("event_type", "network.connection.denied"), ("src_ip", ip)]);
    let fail = |secs: f64, ip: &str| ev(secs, &[("org", "acme"), ("event_type", "ssh.auth.failure"), ("src_ip", ip)]);
    // Either order.
    assert_eq!(run(rule, &[deny(0.0, "1.1.1.1"), deny(1.0, "1.1.1.1"), fail(200.0, "1.1.1.1")]).len(), 1);
    assert_eq!(run(rule, &[fail(0.0, "1.1.1.1"), deny(100.0, "1.1.1.1"), deny(101.0, "1.1.1.1")]).len(), 1);
    // Too far apart, or different addresses.
    assert!(run(rule, &[fail(0.0, "1.1.1.1"), deny(400.0, "1.1.1.1"), deny(401.0, "1.1.1.1")]).is_empty());
    assert!(run(rule, &[deny(0.0, "1.1.1.1"), deny(1.0, "1.1.1.1"), fail(2.0, "2.2.2.2")]).is_empty());
    let hits = run(rule, &[deny(0.0, "1.1.1.1"), deny(1.0, "1.1.1.1"), fail(2.0, "1.1.1.1")]);
    assert_eq!(hits[0].title, "both: src_ip=1.1.1.1");
}

#[test]
fn and_not_suppresses_when_the_excluded_pattern_came_first() {
    let rule = r#"
id: login-without-vpn
patterns:
  login: {filter: {event_type: ssh.auth.success}}
  vpn: {filter: {event_type: vpn.connected}}
condition: login and not vpn
within: 1h
join: [user]
"#;
    let vpn = |secs: f64, user: &str| ev(secs, &[("org", "acme"), ("event_type", "vpn.connected"), ("user", user)]);
    assert!(run(rule, &[vpn(0.0, "bob"), login(100.0, "acme", "1.1.1.1", "bob")]).is_empty());
    assert_eq!(run(rule, &[vpn(0.0, "alice"), login(100.0, "acme", "1.1.1.1", "bob")]).len(), 1);
    assert_eq!(run(rule, &[vpn(0.0, "bob"), login(3700.0, "acme", "1.1.1.1", "bob")]).len(), 1);
}

#[test]
fn or_fires_on_either_pattern() {
    let rule = r#"
id: either
patterns:
  a: {filter: {event_type: a}, group_by: [user]}
  b: {filter: {event_type: b}, group_by: [user]}
condition: a or b
suppress: 0
"#;
    let e = |secs: f64, t: &str| ev(secs, &[("org", "acme"), ("event_type", t), ("user", "u")]);
    let hits = run(rule, &[e(0.0, "a"), e(1.0, "b"), e(2.0, "c")]);
    assert_eq!(hits.len(), 2, "suppress: 0 opens an incident per hit");
}

#[test]
fn a_longer_followed_by_chain_keeps_order() {
    let rule = r#"
id: chain
patterns:
  a: {filter: {event_type: a}}
  b: {filter: {event_type: b}}
  c: {filter: {event_type: c}}
condition: a followed by b followed by c
within: 60s
"#;
    let e = |secs: f64, t: &str| ev(secs, &[("org", "acme"), ("event_type", t)]);
    assert_eq!(run(rule, &[e(0.0, "a"), e(1.0, "b"), e(2.0, "c")]).len(), 1);
    assert!(run(rule, &[e(0.0, "a"), e(1.0, "c"), e(2.0, "b")]).is_empty());
    assert!(run(rule, &[e(0.0, "b"), e(1.0, "a"), e(2.0, "c")]).is_empty());
    assert!(run(rule, &[e(0.0, "a"), e(1.0, "b"), e(61.0, "c")]).is_empty());
    // A later start keeps the chain alive.
    assert_eq!(run(rule, &[e(0.0, "a"), e(30.0, "a"), e(50.0, "b"), e(80.0, "c")]).len(), 1);
}

#[test]
fn distinct_counts_and_numeric_aggregates() {
    let spray = r#"
id: spray
patterns:
  f:
    filter: {event_type: ssh.auth.failure}
    group_by: [src_ip]
    window: 10m
    having: count_distinct(user) >= 3
title: "{count_distinct(user)} users, {count} attempts"
"#;
    let fail = |secs: f64, user: &str| {
        ev(secs, &[("org", "acme"), ("event_type", "ssh.auth.failure"), ("src_ip", "1.1.1.1"), ("user", user)])
    };
    let hits = run(spray, &[fail(0.0, "a"), fail(1.0, "a"), fail(2.0, "b"), fail(3.0, "a"), fail(4.0, "c")]);
    assert_eq!(hits[0].title, "3 users, 5 attempts");
    assert!(run(spray, &[fail(0.0, "a"), fail(1.0, "b"), fail(700.0, "c")]).is_empty());

    let exfil = r#"
id: exfil
patterns:
  t:
    filter: {event_type: transfer}
    group_by: [user]
    window: 1h
    having: [sum(ext.bytes) > 1000, max(ext.bytes) >= 600, min(ext.bytes) > 10, avg(ext.bytes) < 400]
title: "{sum(ext.bytes)} {avg(ext.bytes)} {min(ext.bytes)} {max(ext.bytes)}"
"#;
    let t = |secs: f64, bytes: &str| {
        ev(secs, &[("org", "acme"), ("event_type", "transfer"), ("user", "u"), ("ext.bytes", bytes)])
    };
    let hits = run(exfil, &[t(0.0, "600"), t(1.0, "20"), t(2.0, "x"), t(3.0, "100"), t(4.0, "300")]);
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].title, "1020 255 20 600");
    // The 600 leaves the window: the maximum drops.
    let late = [t(4000.0, "20"), t(4001.0, "100"), t(4002.0, "300"), t(4003.0, "590")];
    assert!(run(exfil, &late).is_empty());
    let mut all = vec![t(3700.0, "600")];
    all.extend(late);
    assert_eq!(run(exfil, &all).len(), 1);
}

#[test]
fn watch_lists_are_filled_by_actions_and_expire() {
    let rules = r#"
- id: scan
  patterns:
    p:
      filter: {event_type: probe}
      group_by: [src_ip]
      window: 60s
      having: count_distinct(dst_port) >= 3
  actions:
    - watchlist_add: {list: scanners, field: src_ip, ttl: 1h}
- id: login-from-scanner
  patterns:
    l:
      filter: {event_type: ssh.auth.success, src_ip|in_list: scanners}
      group_by: [src_ip]
"#;
    let probe = |secs: f64, port: &str| {
        ev(secs, &[("org", "acme"), ("event_type", "probe"), ("src_ip", "6.6.6.6"), ("dst_port", port)])
    };
    let scan = [probe(0.0, "22"), probe(1.0, "23"), probe(2.0, "80")];
    let mut events = scan.to_vec();
    events.push(login(2.5, "acme", "6.6.6.6", "root"));
    let hits = run(rules, &events);
    assert_eq!(hits.iter().map(|i| i.rule.as_str()).collect::<Vec<_>>(), vec!["scan", "login-from-scanner"]);
    // Membership is judged in event time: a login before the scan, after
    // the TTL, or in another org does not match.
    for (secs, org) in [(1.5, "acme"), (3603.0, "acme"), (10.0, "globex")] {
        let mut events = scan.to_vec();
        events.push(login(secs, org, "6.6.6.6", "root"));
        events.sort_by_key(|e| e.time.unix_nanos());
        let hits = run(rules, &events);
        assert_eq!(hits.len(), 1, "login at {secs} in {org}");
    }
}

#[test]
fn self_feeding_rules_stop_at_the_depth_limit() {
    let rule = r#"
id: echo
patterns:
  p: {filter: {event_type: [start, incident.echo]}}
suppress: 0
"#;
    let config = EngineConfig { max_depth: 3, ..config(0) };
    let (hits, stats) = run_with(&compile(rule), &[ev(0.0, &[("org", "acme"), ("event_type", "start")])], config);
    assert_eq!(hits.len(), 4);
    assert_eq!(stats.depth_limited, 1);
}

#[test]
fn incidents_of_per_org_rules_feed_cross_org_rules() {
    let rules = with_brute(
        r#"
- id: campaign
  scope: cross-org
  patterns:
    b:
      filter: {event_type: incident.brute}
      group_by: [src_ip]
      window: 1h
      having: count_distinct(org) >= 2
  title: "{src_ip} attacks {count_distinct(org)} orgs"
"#,
    );
    let mut events = failures("acme", "10.0.0.1", 0.0, 1.0, 5);
    events.extend(failures("globex", "10.0.0.1", 100.0, 1.0, 5));
    events.extend(failures("initech", "10.0.0.1", 200.0, 1.0, 3));
    events.sort_by_key(|e| e.time.unix_nanos());
    let hits = run(&rules, &events);
    let campaign: Vec<_> = hits.iter().filter(|i| i.rule == "campaign").collect();
    assert_eq!(campaign.len(), 1, "{hits:?}");
    assert_eq!(campaign[0].org, "Super/Local");
    assert_eq!(campaign[0].title, "10.0.0.1 attacks 2 orgs");
}

/// An event received at `T0 + received` and stamped `ahead` seconds later.
fn received(mut event: parsers::Event, received: f64) -> parsers::Event {
    event.received_at = ev(received, &[]).time;
    event
}

#[test]
fn a_future_stamped_event_does_not_make_its_orgs_events_late() {
    // Issue 11, defect 1: one line stamped 290 s ahead used to move acme's
    // watermark, so every real event of acme for ~5 minutes was late.
    let rules = compile(BRUTE);
    let mut events = vec![received(ev(290.0, &[("org", "acme"), ("event_type", "x")]), 0.0)];
    events.extend(
        failures("acme", "10.0.0.1", 1.0, 1.0, 5).into_iter().enumerate().map(|(i, e)| received(e, 1.0 + i as f64)),
    );
    let (hits, stats) = run_with(&rules, &events, config(10));
    assert_eq!((stats.future_events, stats.late_events), (1, 0));
    assert_eq!(summary(&hits), vec![("brute".into(), "acme".into(), vec!["10.0.0.1".into()], 1)]);
    // Trusting stamps as written (a replayed file) restores the old reading.
    let trusting = config(10).trusting_stamps();
    let (hits, stats) = run_with(&rules, &events, trusting);
    assert_eq!((stats.future_events, stats.late_events), (0, 5));
    assert!(hits.is_empty());
}

/// Feeds `n` failed logins from distinct addresses, 1 ms apart, with ids
/// from `*id + 1`; none repeats, so each is a window key of its own.
fn one_off_sources(engine: &mut Engine, n: u32, id: &mut u64, out: &mut Vec<rules::Incident>) {
    for i in 0..n {
        let ip = format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255);
        *id += 1;
        engine.process(*id, &failures("acme", &ip, f64::from(i) * 0.001, 0.0, 1)[0], out);
    }
}

#[test]
fn the_reorder_buffer_is_small_per_event_and_shrinks_after_a_burst() {
    let rules = compile(BRUTE);
    let mut engine = Engine::new(rules, config(3600));
    let mut out = Vec::new();
    // 200,000 failures from distinct addresses, all within the lateness:
    // every one waits in the buffer.
    one_off_sources(&mut engine, 200_000, &mut 0, &mut out);
    let stats = engine.stats();
    assert_eq!(stats.buffered, 200_000);
    let per_event = stats.buffer_bytes / 200_000;
    assert!(per_event <= 40, "{per_event} bytes per buffered event");
    // Released, the buffer gives its memory back.
    engine.advance(ev(7_200.0, &[]).time, &mut out);
    let stats = engine.stats();
    assert_eq!(stats.buffered, 0);
    assert!(stats.buffer_bytes <= 256 * 1024, "{} bytes after release", stats.buffer_bytes);
}

#[test]
fn past_the_buffer_ceiling_the_oldest_records_are_released_early_and_counted() {
    let rules = compile(BRUTE);
    let limited = EngineConfig { max_buffer_bytes: 1 << 20, ..config(3600) };
    let mut engine = Engine::new(rules, limited);
    let mut out = Vec::new();
    let mut id = 0;
    one_off_sources(&mut engine, 200_000, &mut id, &mut out);
    // An attack in the middle of the flood is still found.
    for e in failures("acme", "203.0.113.9", 200.0, 1.0, 5) {
        id += 1;
        engine.process(id, &e, &mut out);
    }
    engine.flush(&mut out);
    let stats = engine.stats();
    assert!(stats.early_releases > 100_000, "{stats:?}");
    assert!(stats.buffer_bytes <= 2 << 20);
    assert_eq!(finals(out).len(), 1);
}

#[test]
fn filters_over_two_watch_lists_decide_at_release_as_before() {
    // A login from a listed address by a user not on the allow list.
    let yaml = r#"
- id: mark
  patterns:
    bad: {filter: {event_type: mark.bad}, group_by: [src_ip]}
  actions:
    - watchlist_add: {list: bad, field: src_ip, ttl: 1h}
- id: allow
  patterns:
    ok: {filter: {event_type: mark.ok}, group_by: [user]}
  actions:
    - watchlist_add: {list: allowed, field: user, ttl: 1h}
- id: hit
  patterns:
    login:
      filter:
        event_type: ssh.auth.success
        src_ip|in_list: bad
        not: {user|in_list: allowed}
      group_by: [src_ip, user]
"#;
    let mark = |t: f64, ip: &str| ev(t, &[("org", "acme"), ("event_type", "mark.bad"), ("src_ip", ip)]);
    let allow = |t: f64, user: &str| ev(t, &[("org", "acme"), ("event_type", "mark.ok"), ("user", user)]);
    // Arrival order differs from time order: the lists are filled by
    // earlier events that arrive after the logins.
    let events = vec![
        login(10.0, "acme", "10.0.0.1", "eve"),
        login(11.0, "acme", "10.0.0.1", "bob"),
        login(12.0, "acme", "10.0.0.2", "eve"),
        mark(5.0, "10.0.0.1"),
        allow(6.0, "bob"),
    ];
    let hits = run(yaml, &events);
    let hit: Vec<_> = summary(&hits).into_iter().filter(|h| h.0 == "hit").collect();
    assert_eq!(hit, vec![("hit".into(), "acme".into(), vec!["10.0.0.1".into(), "eve".into()], 1)]);
}

#[test]
fn state_is_reported_and_expires() {
    let rules = compile(BRUTE);
    let mut engine = Engine::new(rules, EngineConfig { lateness: Duration::ZERO, ..EngineConfig::default() });
    let mut out = Vec::new();
    for i in 0..1000u32 {
        let ip = format!("10.0.{}.{}", i / 256, i % 256);
        engine.process(u64::from(i), &failures("acme", &ip, f64::from(i) * 0.01, 0.0, 1)[0], &mut out);
    }
    let stats = engine.stats();
    assert_eq!(stats.window_keys, 1000);
    assert!(stats.state_bytes > 1000 * 80 && stats.state_bytes < 1000 * 400, "{}", stats.state_bytes);
    // Two minutes later of event time the windows have expired and are swept.
    engine.process(5000, &ev(200.0, &[("org", "acme"), ("event_type", "noise")]), &mut out);
    let stats = engine.stats();
    assert_eq!(stats.window_keys, 0);
    assert!(out.is_empty());
}

#[test]
fn the_same_input_gives_byte_identical_output() {
    let rules = compile(&with_brute(BRUTE_THEN_LOGIN));
    let mut events = Vec::new();
    for (o, org) in ["acme", "globex", "initech"].iter().enumerate() {
        for ip in 0..20 {
            events.extend(failures(org, &format!("10.0.{o}.{ip}"), f64::from(ip), 0.5, 6 + ip as usize % 3));
            events.push(login(f64::from(ip) + 30.0, org, &format!("10.0.{o}.{ip}"), "root"));
        }
    }
    let render = || {
        let mut engine = Engine::new(Arc::clone(&rules), config(30));
        let mut out = Vec::new();
        for (i, e) in events.iter().enumerate() {
            engine.process(i as u64, e, &mut out);
        }
        engine.flush(&mut out);
        out.iter().map(|i| i.to_json() + "\n").collect::<String>()
    };
    let first = render();
    assert_eq!(first.lines().count(), 120);
    assert_eq!(first, render());
    assert!(first.starts_with("{\"id\":1,\"rule\":\"brute\",\"org\":\"acme\",\"org_id\":10,\"severity\":\"high\",\"key\":{\"src_ip\":\"10.0.0.0\"},\"count\":1,"), "{first}");
}

#[test]
fn patterns_without_a_fixed_event_type_see_incidents_too() {
    let rules = with_brute(
        r#"
- id: any-incident
  patterns:
    p:
      filter: {event_type|startswith: incident., ext.severity: high}
      group_by: [src_ip]
  title: "{p.ext.rule} from {src_ip}"
"#,
    );
    let hits = run(&rules, &failures("acme", "10.0.0.1", 0.0, 1.0, 5));
    assert_eq!(hits.iter().map(|i| i.rule.as_str()).collect::<Vec<_>>(), vec!["brute", "any-incident"]);
    assert_eq!(hits[1].title, "brute from 10.0.0.1");
}

#[test]
fn past_the_key_ceiling_the_stalest_keys_go_and_fresh_attacks_are_still_found() {
    let rules = compile(BRUTE);
    let limited = EngineConfig { max_window_keys: 1_000, ..config(0) };
    let mut engine = Engine::new(rules, limited);
    let mut out = Vec::new();
    let mut id = 0;
    // 10,000 one-off sources, then an attack: the sources' keys are older.
    one_off_sources(&mut engine, 10_000, &mut id, &mut out);
    for e in failures("acme", "203.0.113.9", 20.0, 1.0, 5) {
        id += 1;
        engine.process(id, &e, &mut out);
    }
    let stats = engine.stats();
    assert!(stats.window_keys <= 1_000, "{stats:?}");
    assert!(stats.evicted_keys >= 9_000, "{stats:?}");
    engine.flush(&mut out);
    assert_eq!(summary(&finals(out)), vec![("brute".into(), "acme".into(), vec!["203.0.113.9".into()], 1)]);
}

/// `generate: false`: the rule's hits feed nested rules but raise no
/// incident of their own; its author, tags and links describe the
/// incidents of the rules that have them.
#[test]
fn a_rule_that_does_not_generate_still_feeds_nested_rules() {
    let rules = compile(
        r#"
- id: burst
  generate: false
  patterns:
    f:
      filter: {event_type: ssh.auth.failure}
      group_by: [src_ip]
      window: 60s
      having: count >= 2
- id: bursts
  description: Repeated bursts of failures.
  author: Jane Doe
  tags: [attack.credential-access, attack.t1110]
  references: [https://attack.mitre.org/techniques/T1110/]
  patterns:
    b:
      filter: {event_type: incident.burst}
      group_by: [src_ip]
      window: 1h
      having: count >= 2
"#,
    );
    let failure = |t: f64| ev(t, &[("event_type", "ssh.auth.failure"), ("org", "acme"), ("src_ip", "10.0.0.1")]);
    let (incidents, _) = run_with(&rules, &[failure(0.0), failure(1.0), failure(600.0), failure(601.0)], config(1));
    let fired: Vec<&str> = incidents.iter().map(|i| i.rule.as_str()).collect();
    assert_eq!(fired, ["bursts"], "{incidents:?}");
    assert_eq!(
        rules.incident_description("bursts"),
        "Repeated bursts of failures.\nAuthor: Jane Doe\nTags: attack.credential-access, attack.t1110\n\
         References: https://attack.mitre.org/techniques/T1110/"
    );
    assert_eq!(rules.incident_description("burst"), "");
    assert_eq!(rules.incident_description("nope"), "");
}

/// Feeds `events` as a live worker does: the clock advanced to each
/// event's receive time (its flush tick) before the event is taken.
fn live(config: EngineConfig, events: &[parsers::Event]) -> (Vec<rules::Incident>, rules::Stats) {
    let mut engine = Engine::new(compile(BRUTE), config);
    let mut out = Vec::new();
    for (i, e) in events.iter().enumerate() {
        engine.advance(e.received_at, &mut out);
        engine.process(i as u64 + 1, e, &mut out);
    }
    engine.flush(&mut out);
    (out, engine.stats())
}

#[test]
fn a_source_whose_clock_is_slow_is_not_blind_to_the_rules() {
    // A device stamping 30 s behind (a slow clock, or local time read as
    // UTC): the clock had moved acme's watermark past every stamp it
    // sends, so each of its events was late and no rule saw them.
    let slow: Vec<_> = failures("acme", "10.0.0.1", 0.0, 1.0, 5)
        .into_iter()
        .enumerate()
        .map(|(i, e)| received(e, 30.0 + i as f64))
        .collect();
    let (hits, stats) = live(config(10), &slow);
    assert_eq!((stats.behind_events, stats.late_events), (5, 0));
    assert_eq!(summary(&hits), vec![("brute".into(), "acme".into(), vec!["10.0.0.1".into()], 1)]);
    // Correlated at the earliest time allowed: receive time minus half the
    // lateness.
    assert_eq!(hits[0].first_seen, EventTime::from_unix(T0 + 34 - 5, 0, 0));
    // Trusting stamps as written (a replayed file) gives the old reading.
    let (hits, stats) = live(config(10).trusting_stamps(), &slow);
    assert_eq!((stats.behind_events, stats.late_events), (0, 4));
    assert!(hits.is_empty());
}

#[test]
fn stamps_a_little_behind_their_receive_time_are_kept_in_order() {
    // Within half the lateness, stamps are the event time: two failures
    // received in the opposite order of their stamps are still evaluated
    // in stamp order, and nothing is corrected.
    let mut events: Vec<_> = failures("acme", "10.0.0.1", 0.0, 1.0, 5)
        .into_iter()
        .enumerate()
        .map(|(i, e)| received(e, 3.0 + i as f64))
        .collect();
    events.swap(1, 2);
    let (hits, stats) = live(config(10), &events);
    assert_eq!((stats.behind_events, stats.late_events), (0, 0));
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].first_seen, EventTime::from_unix(T0 + 4, 0, 0));
    // Never more than half the lateness, whatever the config says: with a
    // lateness of 2 s, a stamp 3 s behind is corrected.
    let wide = EngineConfig { max_behind: Some(Duration::from_secs(60)), ..config(2) };
    let (hits, stats) = live(wide, &events);
    assert_eq!((stats.behind_events, stats.late_events), (5, 0));
    assert_eq!(hits.len(), 1);
}
