//! The compiler reports every problem at once, each as `file:line: message`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rules::{Compiler, Diagnostic};

fn diagnose(yaml: &str) -> Vec<String> {
    let mut compiler = Compiler::new();
    compiler.add_source("r.yaml", yaml);
    match compiler.finish() {
        Ok((_, warnings)) => warnings.iter().map(Diagnostic::to_string).collect(),
        Err(diags) => diags.iter().map(Diagnostic::to_string).collect(),
    }
}

fn one_error(yaml: &str, expected: &str) {
    let diags = diagnose(yaml);
    let errors: Vec<&String> = diags.iter().filter(|d| d.contains(": error: ")).collect();
    assert_eq!(errors.len(), 1, "{diags:#?}");
    assert!(errors[0].contains(expected), "expected {expected:?} in {:?}", errors[0]);
}

const GOOD: &str = "id: r\npatterns:\n  p:\n    filter: {event_type: a}\n";

#[test]
fn a_good_rule_has_no_diagnostics() {
    assert!(diagnose(GOOD).is_empty());
}

#[test]
fn unknown_field() {
    one_error(
        &GOOD.replace("event_type", "evnt_type"),
        "r.yaml:4: error: unknown field 'evnt_type' (did you mean 'event_type'?)",
    );
    one_error(
        &(GOOD.to_owned() + "    group_by: [srcip]\n"),
        "r.yaml:5: error: unknown field 'srcip' (did you mean 'src_ip'?)",
    );
}

#[test]
fn bad_regex() {
    one_error(&GOOD.replace("{event_type: a}", "{message|re: 'a(b'}"), "r.yaml:4: error: bad regular expression 'a(b'");
}

#[test]
fn unknown_sub_pattern() {
    let yaml = "id: r\npatterns:\n  a: {filter: {event_type: a}}\n  b: {filter: {event_type: b}}\ncondition: a followed by c\nwithin: 1m\n";
    let diags = diagnose(yaml);
    assert!(
        diags.iter().any(|d| d == "r.yaml:5: error: unknown sub-pattern 'c' in condition; patterns are a, b"),
        "{diags:#?}"
    );
    let yaml = "id: r\npatterns:\n  fails: {filter: {event_type: a}}\n  ok: {filter: {event_type: b}}\ncondition: fail followed by ok\nwithin: 1m\n";
    assert!(
        diagnose(yaml).iter().any(|d| d.contains("unknown sub-pattern 'fail' in condition (did you mean 'fails'?)"))
    );
}

#[test]
fn type_mismatch() {
    one_error(
        &GOOD.replace("{event_type: a}", "{src_ip: web-01}"),
        "r.yaml:4: error: type mismatch: src_ip is an IP address",
    );
    one_error(&GOOD.replace("{event_type: a}", "{dst_port|gte: high}"), "'gte' takes one number");
    one_error(&GOOD.replace("{event_type: a}", "{user|lt: 3}"), "type mismatch: user is text");
    one_error(&GOOD.replace("{event_type: a}", "{user|cidr: 10.0.0.0/8}"), "type mismatch: user is text");
    one_error(
        &(GOOD.to_owned() + "    window: 1m\n    having: sum(user) > 3\n"),
        "r.yaml:6: error: type mismatch: sum needs a numeric field; user is not a number",
    );
}

#[test]
fn window_missing() {
    one_error(
        &(GOOD.to_owned() + "    having: count >= 5\n"),
        "r.yaml:5: error: window missing: pattern 'p' has 'having' but no 'window: DURATION'",
    );
    let yaml = "id: r\npatterns:\n  a: {filter: {event_type: a}}\n  b: {filter: {event_type: b}}\ncondition: a and b\n";
    one_error(yaml, "r.yaml:5: error: window missing: a condition over several patterns needs 'within: DURATION'");
}

#[test]
fn other_mistakes_are_named() {
    let cases: &[(&str, &str)] = &[
        (
            "id: r\npatterns: {p: {filter: {event_type: a}}}\nseverity: urgent\n",
            "severity is one of info, low, medium, high, critical",
        ),
        (
            "id: r\npatterns: {p: {filter: {event_type: a}}}\nscope: everyone\n",
            "scope is 'per-org', 'cross-org' or 'org: NAME'",
        ),
        (
            "id: r\npatterns: {p: {filter: {event_type: a}}}\nsupress: 1h\n",
            "unknown rule key 'supress' (did you mean 'suppress'?)",
        ),
        ("id: r\npatterns: {p: {filter: {event_type: a}, window: 60}}\n", "window needs a unit"),
        (
            "id: r\npatterns: {p: {filter: {event_type: a}, window: 1m, having: count < 5}}\n",
            "count can only be compared with >= or >",
        ),
        ("id: r\npatterns: {p: {filter: {event_type: a}, window: 1m, having: median(x) > 5}}\n", "unknown aggregate"),
        ("id: r\npatterns: {p: {filter: {event_type: a}}}\ntitle: 'from {src}'\n", "unknown placeholder {src}"),
        (
            "id: r\npatterns: {p: {filter: {event_type: a}, group_by: [user], window: 1m, having: count > 1}}\ntitle: '{host}'\n",
            "only its group_by fields and aggregates",
        ),
        ("id: r\npatterns: {p: {filter: {event_type: incident.nope}}}\n", "'incident.nope' names no rule in this set"),
        ("id: 'r r'\npatterns: {p: {filter: {event_type: a}}}\n", "rule id 'r r' may only use"),
        ("patterns: {p: {filter: {event_type: a}}}\n", "rule has no id"),
        ("id: r\n", "rule has no patterns"),
        (
            "id: r\npatterns: {a: {filter: {event_type: a}}, b: {filter: {event_type: b}}}\ncondition: a and b or a\nwithin: 1m\n",
            "mixes operators",
        ),
        (
            "id: r\npatterns: {a: {filter: {event_type: a}}, b: {filter: {event_type: b}}}\ncondition: a\n",
            "pattern 'b' is not used by the condition",
        ),
        (
            "id: r\npatterns: {a: {filter: {event_type: a}, window: 1m, having: count > 2}, b: {filter: {event_type: b}}}\ncondition: a and b\nwithin: 1m\njoin: [user]\n",
            "join field user is not in the group_by of pattern 'a'",
        ),
        (
            "id: r\npatterns: {a: {filter: {event_type: a}}, b: {filter: {event_type: b}}}\ncondition: a not followed by b\nwithin: 1m\ntitle: '{b.user}'\n",
            "absent when the rule fires",
        ),
        (
            "id: r\npatterns: {p: {filter: {event_type: a}}}\nactions: [{watchlist_add: {list: x, field: src_ip}}]\n",
            "watchlist_add needs a ttl",
        ),
        ("id: r\npatterns: {p: {filter: {event_type: a}}}\nactions: [{email: a@b}]\n", "unknown action"),
        ("id: r\npatterns: {p: {filter: {event_type: a}}}\n- broken", "invalid YAML"),
        ("42", "a rule file holds a rule or a list of rules, not a number"),
    ];
    for (yaml, expected) in cases {
        let diags = diagnose(yaml);
        assert!(diags.iter().any(|d| d.contains(expected)), "expected {expected:?} for {yaml:?}, got {diags:#?}");
    }
}

#[test]
fn every_error_in_a_file_is_reported_at_once() {
    let yaml = r#"
- id: first
  patterns:
    p:
      filter:
        srcip: 10.0.0.1
        message|re: '(('
      having: count >= 3
- id: second
  patterns:
    a: {filter: {dst_port: ssh}}
  condition: a followed by b
"#;
    let diags = diagnose(yaml);
    let lines: Vec<&str> = diags.iter().map(String::as_str).collect();
    assert_eq!(lines.len(), 4, "{lines:#?}");
    assert!(lines[0].starts_with("r.yaml:6: error: unknown field 'srcip'"), "{lines:#?}");
    assert!(lines[1].starts_with("r.yaml:7: error: bad regular expression"));
    assert!(lines[2].starts_with("r.yaml:8: error: window missing"));
    assert!(lines[3].starts_with("r.yaml:12: error: unknown sub-pattern 'b'"));
}

#[test]
fn duplicate_ids_across_files_and_unreadable_paths() {
    let mut compiler = Compiler::new();
    compiler.add_source("a.yaml", GOOD);
    compiler.add_source("b.yaml", &format!("# comment\n{GOOD}"));
    compiler.add_path(std::path::Path::new("/nonexistent/rules.yaml"));
    let diags: Vec<String> = compiler.finish().unwrap_err().iter().map(Diagnostic::to_string).collect();
    assert!(diags.iter().any(|d| d.starts_with("/nonexistent/rules.yaml:0: error: cannot read")), "{diags:#?}");
    assert!(
        diags.iter().any(|d| d == "b.yaml:2: error: duplicate rule id 'r' (first defined at a.yaml:1)"),
        "{diags:#?}"
    );
}

#[test]
fn warnings_do_not_stop_a_rule_set() {
    let yaml = "id: r\npatterns:\n  p:\n    filter: {src_ip|in_list: nobody-fills-this}\n    window: 5m\n";
    let mut compiler = Compiler::new();
    compiler.add_source("w.yaml", yaml);
    let (set, warnings) = compiler.finish().unwrap();
    assert_eq!(set.len(), 1);
    let warnings: Vec<String> = warnings.iter().map(Diagnostic::to_string).collect();
    assert!(
        warnings.iter().any(|w| w.contains("warning: no rule in this set adds to watch list 'nobody-fills-this'")),
        "{warnings:?}"
    );
    assert!(
        warnings.iter().any(|w| w.starts_with("w.yaml:5: warning: window of pattern 'p' has no effect")),
        "{warnings:?}"
    );
}
