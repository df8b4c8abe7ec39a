//! Sigma rules through the compiler: the specification's constructs with
//! expected matches, and SigmaHQ's rules from `../shared/testdata/sigma`
//! (read at test time: they are under the Detection Rule License) with
//! the compile rate per log source.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use std::sync::Arc;

use common::{config, ev, run_with};
use parsers::Event;
use rules::sigma::{LogSources, Verdict};
use rules::{Compiler, Level};

mod common;

const TEST_SOURCE: &str =
    "- logsource: {product: test}\n  filter: {event_type: test}\n  fields: {Reason: ext.reason, Path: ext.path}\n";

/// Compiles one Sigma rule (`detection` given) under the test log source.
fn sigma(detection: &str) -> Arc<rules::RuleSet> {
    let text = format!(
        "title: Test rule\nid: 0e95725d-7320-415d-80f7-004da920fc11\nlevel: high\nauthor: Someone\nlogsource:\n  product: test\ndetection:\n{detection}"
    );
    let mut c = Compiler::new();
    c.set_log_sources(LogSources::parse(TEST_SOURCE).unwrap());
    c.add_source("sigma.yml", &text);
    assert_eq!(c.sigma_report()[0].verdict, Verdict::Compiled, "{text}");
    Arc::new(c.finish().unwrap_or_else(|d| panic!("{d:?}")).0)
}

/// Whether the rule raises an incident on `event` alone.
fn fires(set: &Arc<rules::RuleSet>, fields: &[(&str, &str)]) -> bool {
    let mut all = vec![("event_type", "test"), ("org", "acme")];
    all.extend_from_slice(fields);
    let event: Event = ev(1.0, &all);
    !run_with(set, &[event], config(1)).0.is_empty()
}

/// Events as field lists.
type Events<'a> = &'a [&'a [(&'a str, &'a str)]];

/// Each construct of the detection grammar, with events it must and must
/// not match.
#[test]
fn the_detection_grammar_matches_as_the_specification_says() {
    let cases: &[(&str, Events, Events)] = &[
        // Maps are and, lists are or, matching ignores case.
        (
            "  selection:\n    user: [Root, admin]\n    action: Accept\n  condition: selection\n",
            &[&[("user", "root"), ("action", "accept")], &[("user", "ADMIN"), ("action", "Accept")]],
            &[&[("user", "bob"), ("action", "accept")], &[("user", "root")]],
        ),
        // Wildcards: * any run, ? one character.
        (
            "  selection:\n    user: ['adm*n', 'r?ot']\n  condition: selection\n",
            &[&[("user", "ADMIN")], &[("user", "admn")], &[("user", "administrator-n")], &[("user", "ruot")]],
            &[&[("user", "administrator")], &[("user", "rot")], &[("user", "xadmin")]],
        ),
        // Escaped wildcards are plain characters.
        (
            "  selection:\n    message|contains: 'a\\*b'\n  condition: selection\n",
            &[&[("message", "xa*by")]],
            &[&[("message", "xaQb")], &[("message", "ab")]],
        ),
        // contains|all, startswith, endswith.
        (
            "  a:\n    message|contains|all: [foo, bar]\n  b:\n    user|startswith: svc_\n  c:\n    host|endswith: .corp\n  condition: a or b or c\n",
            &[&[("message", "FOO then bar")], &[("user", "SVC_backup")], &[("host", "db.CORP")]],
            &[&[("message", "foo only")], &[("user", "my_svc_x")], &[("host", "corp.example")]],
        ),
        // cased and neq.
        (
            "  a:\n    user|cased: Root\n  b:\n    host|neq: [web-1, web-2]\n  condition: a and b\n",
            &[&[("user", "Root"), ("host", "db-1")]],
            &[&[("user", "root"), ("host", "db-1")], &[("user", "Root"), ("host", "WEB-1")]],
        ),
        // exists, null and the empty value.
        (
            "  a:\n    Reason|exists: true\n  b:\n    user: null\n  condition: a and b\n",
            &[&[("ext.reason", "x")]],
            &[&[("ext.reason", "x"), ("user", "bob")], &[]],
        ),
        // re (case-sensitive unless |i), cidr, numbers.
        (
            "  a:\n    message|re|i: 'fail(ed|ure)'\n  b:\n    src_ip|cidr: 10.0.0.0/8\n  c:\n    dst_port|gt: 1024\n  condition: a and b and c\n",
            &[&[("message", "FAILED login"), ("src_ip", "10.1.2.3"), ("dst_port", "8443")]],
            &[
                &[("message", "ok"), ("src_ip", "10.1.2.3"), ("dst_port", "8443")],
                &[("message", "failure"), ("src_ip", "192.0.2.1"), ("dst_port", "8443")],
                &[("message", "failure"), ("src_ip", "10.1.2.3"), ("dst_port", "22")],
            ],
        ),
        ("  a:\n    message|re: 'Fail'\n  condition: a\n", &[&[("message", "Failed")]], &[&[("message", "failed")]]),
        // Keywords (any), |all keywords, mapped fields.
        (
            "  keywords:\n    - evil.exe\n    - mimikatz\n  both:\n    '|all': [alpha, beta]\n  path:\n    Path|endswith: '\\cmd.exe'\n  condition: keywords or both or path\n",
            &[&[("message", "ran MIMIKATZ")], &[("message", "beta, alpha")], &[("ext.path", "C:\\Windows\\CMD.EXE")]],
            &[&[("message", "alpha only")], &[("ext.path", "cmd.exe.bak")]],
        ),
        // Transformation modifiers: base64 at any offset, Windows dashes.
        (
            "  a:\n    message|base64offset|contains: /bin/bash\n  b:\n    message|windash|contains: ' -enc '\n  condition: a or b\n",
            &[
                &[("message", "echo L2Jpbi9iYXNo | base64 -d")],
                &[("message", "x IC9iaW4vYmFzaA== y")],
                &[("message", "powershell /enc AAA")],
                &[("message", "powershell \u{2013}enc AAA")],
            ],
            &[&[("message", "/bin/bash")], &[("message", "powershell enc AAA")]],
        ),
        // x of, them (without _names), brackets, not.
        (
            "  sel_a:\n    user: a\n  sel_b:\n    host: b\n  _aux:\n    action: never\n  filter:\n    message|contains: benign\n  condition: (1 of sel_* and not filter) or all of them\n",
            &[&[("user", "a")], &[("host", "b"), ("message", "bad")]],
            &[&[("user", "a"), ("message", "benign")], &[("user", "z")]],
        ),
    ];
    for (detection, yes, no) in cases {
        let set = sigma(detection);
        for fields in *yes {
            assert!(fires(&set, fields), "should match {fields:?}:\n{detection}");
        }
        for fields in *no {
            assert!(!fires(&set, fields), "should not match {fields:?}:\n{detection}");
        }
    }
}

/// What cannot be compiled is reported with the exact reason, and a rule
/// without a mapping for its log source is not applicable.
#[test]
fn unsupported_constructs_are_named() {
    let cases = [
        ("    user|fieldref|contains: host\n", "fieldref takes no text or encoding modifier"),
        ("    user|hour: 3\n", "hour takes a part of the event time, and 'user' is user"),
        ("    message|base64offset: x\n", "it needs contains"),
        ("    Unknown: x\n", "field 'Unknown' has no mapping for log source test/-/-"),
        ("    user|expand: '%Admins%'\n", "placeholder %Admins% cannot be resolved"),
        ("    user|expand: 'x-%Admins%'\n", "a watch list stands only for a whole value"),
        ("    dst_port|contains: 44\n", "'dst_port' is not text"),
    ];
    for (selection, reason) in cases {
        let text = format!(
            "title: T\nid: x-1\nlogsource: {{product: test}}\ndetection:\n  selection:\n{selection}  condition: selection\n"
        );
        let mut c = Compiler::new();
        c.set_log_sources(LogSources::parse(TEST_SOURCE).unwrap());
        c.add_source("s.yml", &text);
        match &c.sigma_report()[0].verdict {
            Verdict::Unsupported(why) => assert!(why.contains(reason), "{why} lacks {reason}"),
            other => panic!("{other:?} for {selection}"),
        }
        assert!(c.finish().is_ok(), "an unsupported Sigma rule is a warning, not an error");
    }
    let mut c = Compiler::new();
    c.add_source("w.yml", "title: W\nid: w-1\nlogsource: {product: windows, service: security}\ndetection:\n  s: {EventID: 4625}\n  condition: s\n");
    assert_eq!(
        c.sigma_report()[0].verdict,
        Verdict::NotApplicable("no mapping for log source windows/-/security".into())
    );
    c.add_source(
        "c.yml",
        "title: C\nid: c-1\ncorrelation: {type: event_count, rules: [w-1], timespan: 5m, condition: {gte: 3}}\n",
    );
    assert!(matches!(&c.sigma_report()[1].verdict, Verdict::Unsupported(w) if w.contains("names 'w-1'")));
}

fn shared() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata/sigma/rules");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("skipped: ../shared not present");
        None
    }
}

/// Every SigmaHQ rule is compiled, reported not applicable, or reported
/// unsupported with a reason; of those with a mapping, at least 95 %
/// compile.
#[test]
fn sigmahq_rules_compile_or_say_why() {
    let Some(dir) = shared() else { return };
    let mut c = Compiler::new();
    c.add_path(&dir);
    let report = c.sigma_report().to_vec();
    assert!(report.len() >= 500, "{} Sigma rules met", report.len());
    let mut table: BTreeMap<String, [usize; 3]> = BTreeMap::new();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for r in &report {
        let row = table.entry(r.logsource.clone()).or_default();
        match &r.verdict {
            Verdict::Compiled => row[0] += 1,
            Verdict::NotApplicable(_) => row[1] += 1,
            Verdict::Unsupported(why) => {
                row[2] += 1;
                *reasons.entry(why.clone()).or_default() += 1;
            }
        }
    }
    for (source, [compiled, na, unsupported]) in &table {
        eprintln!("{source:<40} compiled {compiled:>4}  not applicable {na:>4}  unsupported {unsupported:>4}");
    }
    for (why, n) in &reasons {
        eprintln!("{n:>4}  {why}");
    }
    let compiled = report.iter().filter(|r| r.verdict == Verdict::Compiled).count();
    let mapped = report.iter().filter(|r| !matches!(r.verdict, Verdict::NotApplicable(_))).count();
    eprintln!("{compiled} of {mapped} mapped rules compile ({} rules in all)", report.len());
    // Every rule not compiled is a warning naming it: none is dropped silently.
    let warnings =
        c.diagnostics().iter().filter(|d| d.level == Level::Warning && d.message.contains("not loaded")).count();
    assert_eq!(warnings, report.len() - compiled);
    assert!(compiled * 100 >= mapped * 95, "{compiled} of {mapped} mapped rules compile");
    let (set, _) = c.finish().unwrap_or_else(|d| panic!("{d:?}"));
    assert_eq!(set.len(), compiled);
}

/// A SigmaHQ web server rule, as shipped, fires on access-log lines (raw
/// and through syslog) that carry its attack, at the lines' own times, and
/// not on the same path without it.
#[test]
fn a_sigmahq_webserver_rule_fires_on_access_log_lines() {
    let Some(dir) = shared() else { return };
    let rule = dir.join(
        "rules-emerging-threats/2025/Exploits/CVE-2025-31324/web_lnx_exploit_cve_2025_31324_sap_netviewer_webshell.yml",
    );
    let set = compiled_file(&rule);
    let lines = [
        r#"203.0.113.9 - - [02/Dec/2026:10:15:42 +0000] "GET /irj/servlet_jsp/irj/root/helper.jsp?cmd=whoami HTTP/1.1" 200 512 "-" "curl/8.0""#,
        r#"203.0.113.9 - - [02/Dec/2026:10:15:43 +0000] "GET /irj/portal/x.jsp HTTP/1.1" 200 512 "-" "curl/8.0""#,
        r#"<134>Dec  2 10:15:44 web-01 nginx: 203.0.113.9 - - [02/Dec/2026:10:15:44 +0000] "GET /irj/x.jsp?exec=id HTTP/1.1" 200 1 "-" "-""#,
    ];
    let events = parsed(&lines, parsers::EventTime::from_unix(1_796_206_600, 0, 0));
    let (incidents, _) = run_with(&set, &events, config(60));
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    assert_eq!(incidents[0].event_ids, [1, 3]);
    assert_eq!(incidents[0].rule.as_str(), "94e12f41-6cb3-45c5-97b1-c783a7bf2e72");
}

/// The rule set of one Sigma file, which must compile.
fn compiled_file(path: &std::path::Path) -> Arc<rules::RuleSet> {
    let mut c = Compiler::new();
    c.add_path(path);
    let report = c.sigma_report().to_vec();
    assert_eq!(report[0].verdict, Verdict::Compiled, "{report:?}");
    Arc::new(c.finish().unwrap_or_else(|d| panic!("{d:?}")).0)
}

/// Lines as a collector makes them events (parsed, classified by the
/// built-in device families), all of org acme.
fn parsed<S: AsRef<str>>(lines: &[S], received: parsers::EventTime) -> Vec<Event> {
    let parser = parsers::Parser::new();
    let devices = parsers::DeviceParsers::builtin().unwrap();
    lines
        .iter()
        .map(|l| {
            let mut e = parser.parse(bytes::Bytes::copy_from_slice(l.as_ref().as_bytes()), received);
            devices.classify(&mut e);
            e.org = Some("acme".into());
            e.org_id = Some(common::org_id("acme"));
            e
        })
        .collect()
}

/// A base rule and a correlation over it, as one multi-document file
/// under the test log source.
fn correlation_set(correlation: &str) -> (Arc<rules::RuleSet>, Vec<rules::sigma::SigmaReport>) {
    let text = format!(
        "title: Failed login\nid: base-1\nname: failed_login\nlogsource: {{product: test}}\ndetection:\n  selection:\n    action: login\n    outcome: failure\n  condition: selection\n---\n\
         title: Many failed logins\nid: corr-1\nlevel: high\ncorrelation:\n{correlation}"
    );
    let mut c = Compiler::new();
    c.set_log_sources(LogSources::parse(TEST_SOURCE).unwrap());
    c.add_source("corr.yml", &text);
    let report = c.sigma_report().to_vec();
    let set = Arc::new(c.finish().unwrap_or_else(|d| panic!("{d:?}")).0);
    (set, report)
}

fn failed(secs: f64, user: &str, ip: &str) -> Event {
    ev(
        secs,
        &[
            ("event_type", "test"),
            ("org", "acme"),
            ("action", "login"),
            ("ext.outcome_", "x"),
            ("user", user),
            ("src_ip", ip),
        ],
    )
}

/// Sigma correlations on event time, per org: event_count and value_count
/// with group-by and timespan over a rule named by id or by name; the
/// rules they name raise nothing of their own unless `generate: true`.
#[test]
fn correlations_count_events_and_values_over_their_rules() {
    let with_outcome = |mut e: Event| {
        e.outcome = Some("failure".into());
        e
    };
    let (set, report) = correlation_set(
        "  type: event_count\n  rules: [failed_login]\n  group-by: [user]\n  timespan: 5m\n  condition: {gte: 3}\n",
    );
    assert!(report.iter().all(|r| r.verdict == Verdict::Compiled), "{report:?}");
    assert_eq!(set.len(), 1, "the base rule is the correlation's only");
    let events: Vec<Event> = [(0.0, "bob"), (60.0, "bob"), (90.0, "eve"), (200.0, "bob"), (900.0, "eve")]
        .iter()
        .map(|(t, u)| with_outcome(failed(*t, u, "192.0.2.1")))
        .collect();
    let (incidents, _) = run_with(&set, &events, config(1));
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    assert_eq!((incidents[0].rule.as_str(), incidents[0].event_ids.as_slice()), ("corr-1", [1, 2, 4].as_slice()));

    let (set, report) = correlation_set(
        "  type: value_count\n  rules: [base-1]\n  group-by: [user]\n  timespan: 10m\n  condition: {field: src_ip, gt: 1}\n  generate: true\n",
    );
    assert!(report.iter().all(|r| r.verdict == Verdict::Compiled), "{report:?}");
    assert_eq!(set.len(), 2, "generate keeps the base rule");
    let events: Vec<Event> = [(0.0, "10.0.0.1"), (10.0, "10.0.0.1"), (20.0, "10.0.0.2")]
        .iter()
        .map(|(t, ip)| with_outcome(failed(*t, "bob", ip)))
        .collect();
    let (incidents, _) = run_with(&set, &events, config(1));
    let rules: Vec<&str> = incidents.iter().map(|i| i.rule.as_str()).collect();
    assert!(rules.contains(&"corr-1") && rules.contains(&"base-1"), "{rules:?}");
}

/// Correlations vigil cannot run yet say why, and take nothing away.
#[test]
fn unsupported_correlations_are_named() {
    for (correlation, reason) in [
        ("  type: value_percentile\n  rules: [base-1]\n  timespan: 5m\n", "of which population"),
        ("  type: temporal\n  rules: [base-1]\n  timespan: 5m\n", "two rules or more"),
        ("  type: event_count\n  rules: [base-1]\n  timespan: 5m\n  condition: {lt: 3}\n", "not when it stays low"),
        ("  type: event_count\n  rules: [base-1]\n  timespan: 5m\n  condition: {gte: 3, lte: 9}\n", "below a ceiling"),
        ("  type: event_count\n  rules: [nope]\n  timespan: 5m\n  condition: {gte: 3}\n", "names 'nope'"),
        ("  type: value_count\n  rules: [base-1]\n  timespan: 5m\n  condition: {gte: 3}\n", "needs condition.field"),
    ] {
        let (set, report) = correlation_set(correlation);
        match &report[1].verdict {
            Verdict::Unsupported(why) => assert!(why.contains(reason), "{why} lacks {reason}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(set.len(), 1, "the base rule still runs on its own");
    }
}

/// The specification's correlation examples: each is compiled or reported
/// with a reason (their rules are Windows rules, not in the set).
#[test]
fn the_specifications_correlation_examples_are_reported() {
    let Some(dir) = shared() else { return };
    let examples = dir.join("../examples/correlation");
    let mut c = Compiler::new();
    c.add_path(&examples);
    let report = c.sigma_report().to_vec();
    assert_eq!(report.len(), 8, "{report:?}");
    for r in &report {
        assert!(matches!(r.verdict, Verdict::Unsupported(_)), "{r:?}");
    }
}

/// temporal and temporal_ordered: every named rule within the timespan
/// for the same group-by values, in their order when ordered.
#[test]
fn temporal_correlations_join_their_rules_in_time() {
    let text = |kind: &str| {
        format!(
            "title: Scan\nid: scan-1\nlogsource: {{product: test}}\ndetection:\n  s:\n    action: scan\n  condition: s\n---\n\
             title: Login\nid: login-1\nlogsource: {{product: test}}\ndetection:\n  s:\n    action: login\n  condition: s\n---\n\
             title: Scan then login\nid: corr-t\ncorrelation:\n  type: {kind}\n  rules: [scan-1, login-1]\n  group-by: [src_ip]\n  timespan: 10m\n"
        )
    };
    let event = |t: f64, action: &str, ip: &str| {
        ev(t, &[("event_type", "test"), ("org", "acme"), ("action", action), ("src_ip", ip)])
    };
    for (kind, login_first_fires) in [("temporal", true), ("temporal_ordered", false)] {
        let mut c = Compiler::new();
        c.set_log_sources(LogSources::parse(TEST_SOURCE).unwrap());
        c.add_source("t.yml", &text(kind));
        assert!(c.sigma_report().iter().all(|r| r.verdict == Verdict::Compiled), "{kind}: {:?}", c.sigma_report());
        let set = Arc::new(c.finish().unwrap_or_else(|d| panic!("{d:?}")).0);
        assert_eq!(set.len(), 1);
        // A scan then a login from the same address: both kinds fire.
        let (hits, _) = run_with(&set, &[event(0.0, "scan", "10.0.0.1"), event(60.0, "login", "10.0.0.1")], config(1));
        assert_eq!(hits.len(), 1, "{kind}: {hits:?}");
        // From different addresses, or too far apart: neither.
        let (hits, _) = run_with(&set, &[event(0.0, "scan", "10.0.0.1"), event(60.0, "login", "10.0.0.2")], config(1));
        assert!(hits.is_empty(), "{kind}");
        let (hits, _) =
            run_with(&set, &[event(0.0, "scan", "10.0.0.1"), event(1_200.0, "login", "10.0.0.1")], config(1));
        assert!(hits.is_empty(), "{kind}");
        // The login first: only the unordered kind fires.
        let (hits, _) = run_with(&set, &[event(0.0, "login", "10.0.0.1"), event(60.0, "scan", "10.0.0.1")], config(1));
        assert_eq!(!hits.is_empty(), login_first_fires, "{kind}");
    }
}

/// A SigmaHQ auditd rule, as shipped, fires on the EXECVE record of its
/// command (arguments quoted or hex-encoded, as auditd writes them) and not
/// on another command's.
#[test]
fn a_sigmahq_auditd_rule_fires_on_audit_records() {
    let Some(dir) = shared() else { return };
    let set = compiled_file(&dir.join("rules/linux/auditd/lnx_auditd_disable_aslr_protection.yml"));
    // kernel.randomize_va_space=0, hex-encoded as auditd may write it.
    let hex: String = "kernel.randomize_va_space=0".bytes().map(|b| format!("{b:02X}")).collect();
    let lines = [
        format!("type=EXECVE msg=audit(1700000000.100:77): argc=3 a0=\"sysctl\" a1=\"-w\" a2={hex}"),
        "type=EXECVE msg=audit(1700000001.100:78): argc=3 a0=\"sysctl\" a1=\"-w\" a2=\"vm.swappiness=10\"".to_owned(),
        "<14>Nov 14 22:13:22 host-1 audispd: type=EXECVE msg=audit(1700000002.100:79): argc=3 a0=\"sysctl\" a1=\"-w\" a2=\"kernel.randomize_va_space=0\"".to_owned(),
    ];
    let events = parsed(&lines, parsers::EventTime::from_unix(1_700_000_100, 0, 0));
    assert_eq!(events[0].ext.get("a2"), Some("kernel.randomize_va_space=0"), "decoded");
    let (incidents, _) = run_with(&set, &events, config(600));
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    assert_eq!(incidents[0].event_ids, [1, 3]);
}

/// A SigmaHQ proxy rule, as shipped, fires on a proxy's combined-format
/// line for its host and user agent (absolute URI or CONNECT), not on a
/// web server's line with the same agent.
#[test]
fn a_sigmahq_proxy_rule_fires_on_proxy_lines() {
    let Some(dir) = shared() else { return };
    let set = compiled_file(&dir.join("rules-emerging-threats/2019/TA/APT40/proxy_apt_apt40_dropbox_tool_ua.yml"));
    let ua =
        "Mozilla/5.0 (Windows NT 6.1; WOW64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/36.0.1985.143 Safari/537.36";
    let lines = [
        format!(
            r#"10.1.2.3 - - [02/Dec/2026:10:15:42 +0000] "CONNECT api.dropbox.com:443 HTTP/1.1" 200 4512 "-" "{ua}""#
        ),
        format!(r#"10.1.2.3 - - [02/Dec/2026:10:15:43 +0000] "GET /x HTTP/1.1" 200 12 "-" "{ua}""#),
        format!(
            r#"<134>Dec  2 10:15:44 proxy-1 squid: 10.1.2.3 - - [02/Dec/2026:10:15:44 +0000] "GET http://API.dropbox.com/2/files HTTP/1.1" 200 1 "-" "{ua}""#
        ),
    ];
    let events = parsed(&lines, parsers::EventTime::from_unix(1_796_206_600, 0, 0));
    assert_eq!(events[0].ext.get("uri_host"), Some("api.dropbox.com"));
    let (incidents, _) = run_with(&set, &events, config(60));
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    assert_eq!(incidents[0].event_ids, [1, 3]);
}

/// Incidents of a Sigma rule show its description, id and level, author
/// (the Detection Rule License asks for it), ATT&CK tags and references.
#[test]
fn sigma_incidents_carry_the_rules_attribution() {
    let text = "title: Attributed\nid: 5f1a-2\nstatus: test\nlevel: critical\ndescription: Something bad.\nauthor: Jane Doe\n\
                tags: [attack.execution, attack.t1059]\nreferences: ['https://example.org/advisory']\n\
                logsource: {product: test}\ndetection:\n  s: {Reason: x}\n  condition: s\n";
    let mut c = Compiler::new();
    c.set_log_sources(LogSources::parse(TEST_SOURCE).unwrap());
    c.add_source("a.yml", text);
    let (set, _) = c.finish().unwrap();
    assert_eq!(
        set.incident_description("5f1a-2"),
        "Something bad.\nSigma rule 5f1a-2, level critical, status test.\nAuthor: Jane Doe\n\
         Tags: attack.execution, attack.t1059\nReferences: https://example.org/advisory"
    );
    assert_eq!(set.rules()[0].severity, rules::Severity::Critical);
}
