//! Sigma conformance cases: one file per modifier and per correlation
//! type under `tests/sigma-cases/`, each with Sigma documents and the
//! events they must and must not fire on (negative cases included).
//!
//! A case file:
//!
//! ```yaml
//! sigma: |                  # Sigma documents (several with ---)
//!   title: ...
//! mappings: |               # optional: log-source mappings (default below)
//! report: {rule-id: compiled | not-applicable | "unsupported: TEXT"}
//! match: [{user: root}]     # each event alone raises an incident
//! no_match: [{user: bob}]   # each event alone raises none
//! runs:                     # event sequences: `t` is seconds
//!   - events: [{t: 0, user: bob}, {t: 5, user: bob}]
//!     incidents: [corr-1]   # the rules of the incidents, in order
//! ```
//!
//! Events are in org `acme` with `event_type: test` unless they say
//! otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parsers::Event;
use rules::sigma::{LogSources, Verdict};
use rules::{Compiler, RuleSet};
use serde::Deserialize;

mod common;

use common::{config, ev, run_with};

const DEFAULT_MAPPINGS: &str = "\
- logsource: {product: test}
  filter: {event_type: test}
  fields:
    User: user
    SourceIp: src_ip
    DestinationIp: dst_ip
    DestinationPort: dst_port
    Reason: ext.reason
    Path: ext.path
    CommandLine: ext.command_line
    TargetUser: ext.target_user
    Bytes: ext.bytes
- logsource: {product: other}
  filter: {event_type: other}
  fields: {Account: user, ClientIp: src_ip}
";

/// An event's fields as a case writes them (numbers or text).
type Fields = BTreeMap<String, serde_json::Value>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    sigma: String,
    #[serde(default)]
    mappings: Option<String>,
    #[serde(default)]
    report: BTreeMap<String, String>,
    #[serde(default, rename = "match")]
    matches: Vec<Fields>,
    #[serde(default)]
    no_match: Vec<Fields>,
    #[serde(default)]
    runs: Vec<Run>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Run {
    events: Vec<Fields>,
    incidents: Vec<String>,
}

/// An event from a case's fields (`t`: seconds after the tests' t = 0).
fn event(fields: &Fields, default_t: f64) -> Event {
    let text = |v: &serde_json::Value| v.as_str().map_or_else(|| v.to_string(), str::to_owned);
    let t = fields.get("t").map_or(default_t, |t| text(t).parse().unwrap());
    let values: Vec<(String, String)> =
        fields.iter().filter(|(k, _)| *k != "t").map(|(k, v)| (k.clone(), text(v))).collect();
    let mut all: Vec<(&str, &str)> = vec![("event_type", "test"), ("org", "acme")];
    for (k, v) in &values {
        all.retain(|(name, _)| name != k);
        all.push((k.as_str(), v.as_str()));
    }
    ev(t, &all)
}

fn verdict_name(v: &Verdict) -> String {
    match v {
        Verdict::Compiled => "compiled".into(),
        Verdict::NotApplicable(_) => "not-applicable".into(),
        Verdict::Unsupported(why) => format!("unsupported: {why}"),
    }
}

fn run_case(path: &Path) -> usize {
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let text = std::fs::read_to_string(path).unwrap();
    let case: Case = serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut c = Compiler::new();
    let mappings = case.mappings.as_deref().unwrap_or(DEFAULT_MAPPINGS);
    c.set_log_sources(LogSources::parse(mappings).unwrap_or_else(|e| panic!("{name}: mappings: {e}")));
    c.add_source(&name, &case.sigma);
    let report = c.sigma_report().to_vec();
    for r in &report {
        let got = verdict_name(&r.verdict);
        match case.report.get(&r.id) {
            Some(want) => assert!(got.starts_with(want.as_str()), "{name}: {} is '{got}', not '{want}'", r.id),
            None => assert_eq!(got, "compiled", "{name}: {}", r.id),
        }
    }
    let set: Arc<RuleSet> = Arc::new(c.finish().unwrap_or_else(|d| panic!("{name}: {d:?}")).0);
    let mut checks = 0;
    for fields in &case.matches {
        let (incidents, _) = run_with(&set, &[event(fields, 1.0)], config(1));
        assert!(!incidents.is_empty(), "{name}: should match {fields:?}");
        checks += 1;
    }
    for fields in &case.no_match {
        let (incidents, _) = run_with(&set, &[event(fields, 1.0)], config(1));
        assert!(incidents.is_empty(), "{name}: should not match {fields:?}: {incidents:?}");
        checks += 1;
    }
    for (i, run) in case.runs.iter().enumerate() {
        let events: Vec<Event> = run.events.iter().enumerate().map(|(n, f)| event(f, n as f64)).collect();
        let (incidents, _) = run_with(&set, &events, config(1));
        let rules: Vec<&str> = incidents.iter().map(|i| i.rule.as_str()).collect();
        assert_eq!(rules, run.incidents, "{name}: run {i}: {incidents:?}");
        checks += 1;
    }
    assert!(checks > 0 || !case.report.is_empty(), "{name}: a case checks something");
    checks
}

#[test]
fn every_modifier_and_correlation_type_behaves_as_its_case_file_says() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sigma-cases");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() >= 30, "{} case files", files.len());
    let mut checks = 0;
    for file in &files {
        checks += run_case(file);
    }
    eprintln!("{} case files, {checks} checks", files.len());
}
