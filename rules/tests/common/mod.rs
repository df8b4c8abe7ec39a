//! Helpers shared by the engine tests: events from field lists, and a
//! runner that returns each incident's final state.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parsers::{Event, EventTime, OrgId};
use rules::{Compiler, Engine, EngineConfig, Incident, RuleSet, Stats};

/// Seconds since the epoch of the tests' t = 0.
pub const T0: i64 = 1_700_000_000;

/// Compiles YAML rules or panics with every diagnostic.
pub fn compile(yaml: &str) -> Arc<RuleSet> {
    let mut compiler = Compiler::new();
    compiler.add_source("test.yaml", yaml);
    match compiler.finish() {
        Ok((set, _)) => Arc::new(set),
        Err(diags) => panic!("{}", diags.iter().map(|d| format!("{d}\n")).collect::<String>()),
    }
}

/// The org id the tests use for a name.
pub fn org_id(name: &str) -> OrgId {
    match name {
        "Super/Local" => OrgId::SUPER_LOCAL,
        "acme" => OrgId(10),
        "globex" => OrgId(11),
        "initech" => OrgId(12),
        other => OrgId(100 + other.bytes().map(u32::from).sum::<u32>()),
    }
}

/// An event at `T0 + secs` with the given fields (`org` sets org and id).
pub fn ev(secs: f64, fields: &[(&str, &str)]) -> Event {
    let whole = secs.floor();
    let nanos = ((secs - whole) * 1e9).round() as u32;
    let mut e = Event::empty(Bytes::new(), EventTime::from_unix(T0 + whole as i64, nanos, 0));
    for (k, v) in fields {
        match *k {
            "org" => {
                e.org = Some((*v).into());
                e.org_id = Some(org_id(v));
            }
            "event_type" => e.event_type = Some((*v).into()),
            "src_ip" => e.src_ip = Some(v.parse().unwrap()),
            "dst_ip" => e.dst_ip = Some(v.parse().unwrap()),
            "dst_port" => e.dst_port = Some(v.parse().unwrap()),
            "user" => e.user = Some((*v).into()),
            "host" => e.host = Some((*v).into()),
            "action" => e.action = Some((*v).into()),
            "outcome" => e.outcome = Some((*v).into()),
            "app" => e.app = Some((*v).into()),
            "src_port" => e.src_port = Some(v.parse().unwrap()),
            "message" => e.message = Some((*v).into()),
            key => match key.strip_prefix("ext.") {
                Some(k) => e.ext.push(k, v),
                None => panic!("test helper does not set {key}"),
            },
        }
    }
    e
}

/// A config with the given lateness in seconds.
pub fn config(lateness_secs: u64) -> EngineConfig {
    EngineConfig::for_lateness(Duration::from_secs(lateness_secs))
}

/// Runs events (ids 1, 2, ... in order), flushes, and returns the final
/// state of every incident by id, with the engine's stats.
pub fn run_with(rules: &Arc<RuleSet>, events: &[Event], config: EngineConfig) -> (Vec<Incident>, Stats) {
    let mut engine = Engine::new(Arc::clone(rules), config);
    let mut updates = Vec::new();
    for (i, e) in events.iter().enumerate() {
        engine.process(i as u64 + 1, e, &mut updates);
    }
    engine.flush(&mut updates);
    (finals(updates), engine.stats())
}

/// Runs with 10 s lateness.
pub fn run(yaml: &str, events: &[Event]) -> Vec<Incident> {
    run_with(&compile(yaml), events, config(10)).0
}

/// The last update of each incident, by id.
pub fn finals(updates: Vec<Incident>) -> Vec<Incident> {
    let mut by_id: Vec<Incident> = Vec::new();
    for u in updates {
        match by_id.iter_mut().find(|i| i.id == u.id) {
            Some(slot) => *slot = u,
            None => by_id.push(u),
        }
    }
    by_id.sort_by_key(|i| i.id);
    by_id
}

/// `n` failed SSH logins from `ip` in `org`, `gap` seconds apart from `start`.
pub fn failures(org: &str, ip: &str, start: f64, gap: f64, n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| {
            ev(
                start + gap * i as f64,
                &[("org", org), ("event_type", "ssh.auth.failure"), ("src_ip", ip), ("user", "root")],
            )
        })
        .collect()
}

/// The incidents as (rule, org, key values, count).
pub fn summary(incidents: &[Incident]) -> Vec<(String, String, Vec<String>, u64)> {
    incidents
        .iter()
        .map(|i| (i.rule.to_string(), i.org.to_string(), i.key.iter().map(|(_, v)| v.clone()).collect(), i.count))
        .collect()
}
