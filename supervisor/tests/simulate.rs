//! The simulator end to end: the checked-in examples run and produce the
//! three files; bad scenarios fail with one line naming the field and line.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use std::path::{Path, PathBuf};

use serde_json::Value;
use supervisor::simulate::Scenario;

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn out_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vigil-sim-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn parse(text: &str) -> Result<Scenario, String> {
    Scenario::parse(text, "scenario.toml", Path::new(".")).map_err(|e| e.to_string())
}

#[test]
fn examples_produce_csv_summary_and_chart() {
    for (name, nodes) in [("steady", 4), ("diurnal-attack", 3)] {
        let out = out_dir(name);
        let s = Scenario::load(&examples().join(format!("{name}.toml"))).unwrap();
        let outcome = s.run(&out).unwrap();
        assert_eq!(outcome.intervals, 7 * 480);
        let csv = std::fs::read_to_string(out.join("intervals.csv")).unwrap();
        let mut lines = csv.lines();
        assert_eq!(
            lines.next().unwrap(),
            "interval,start,node,incoming_eps,allocated_eps,burst_eps,accepted,dropped,unused_pool"
        );
        let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
        assert_eq!(rows.len(), 7 * 480 * nodes);
        for r in &rows {
            assert_eq!(r.len(), 9, "{r:?}");
            assert!(r[1].ends_with('Z') && r[1].contains('T'));
            for numeric in [3, 4, 5, 8] {
                assert!(r[numeric].parse::<f64>().is_ok(), "{r:?}");
            }
            assert!(r[6].parse::<u64>().is_ok() && r[7].parse::<u64>().is_ok());
        }
        let summary: Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
        assert_eq!(summary["nodes"].as_array().unwrap().len(), nodes);
        for n in summary["nodes"].as_array().unwrap() {
            for key in ["name", "received", "accepted", "dropped", "percent_dropped", "peak_burst_eps"] {
                assert!(n.get(key).is_some(), "{key} missing in {n}");
            }
        }
        let svg = std::fs::read_to_string(out.join("chart.svg")).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.matches("<polyline").count() >= 5);
        std::fs::remove_dir_all(&out).unwrap();
    }
}

#[test]
fn attack_scenario_bursts_from_the_pool_and_then_drops() {
    let out = out_dir("attack");
    let outcome = Scenario::load(&examples().join("diurnal-attack.toml")).unwrap().run(&out).unwrap();
    let fw = &outcome.nodes["fw-collector"];
    assert!(fw.peak_burst_eps > 0.0, "the attack used the pool");
    assert!(fw.dropped > 0, "and was more than the pool could cover");
    // The disabled org's share is rejected at entry, not counted as received.
    let contractor = &outcome.orgs["contractor"];
    assert_eq!(contractor.received, 0);
    assert!(contractor.rejected_disabled > 0);
    // Afternoon peaks slightly above the licence are covered by bursts: the
    // collector without an org limit loses almost nothing...
    let dc = &outcome.nodes["dc-collector"];
    assert!(dc.peak_burst_eps > 0.0 && dc.dropped * 10_000 < dc.received, "{dc:?}");
    // ...while the "retail" org is held to its 3,500 EPS at its peaks.
    assert!(outcome.orgs["retail"].dropped > 0);
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn runs_are_deterministic() {
    let (a, b) = (out_dir("det-a"), out_dir("det-b"));
    let s = Scenario::load(&examples().join("steady.toml")).unwrap();
    s.run(&a).unwrap();
    s.run(&b).unwrap();
    for f in ["intervals.csv", "summary.json", "chart.svg"] {
        assert_eq!(std::fs::read(a.join(f)).unwrap(), std::fs::read(b.join(f)).unwrap(), "{f}");
    }
    std::fs::remove_dir_all(&a).unwrap();
    std::fs::remove_dir_all(&b).unwrap();
}

const GOOD: &str = r#"licensed_eps = 1000
days = 1

[[org]]
name = "acme"
eps_limit = 500

[[node]]
name = "c1"
guaranteed_eps = 100
org = "acme"
demand = [{ kind = "constant", eps = 300 }]
"#;

#[test]
fn bad_scenarios_name_the_field_and_line() {
    assert!(parse(GOOD).is_ok());
    let cases = [
        (GOOD.replace("days = 1", "dayz = 1"), "scenario.toml:2: unknown field `dayz`"),
        (
            GOOD.replace("guaranteed_eps = 100", "guaranteed_eps = 1100"),
            "scenario.toml:10: guaranteed EPS add up to 1100, more than the 1000 licensed",
        ),
        (
            GOOD.replace("org = \"acme\"", "org = \"acme-corp\""),
            "scenario.toml:11: field `org`: no org named \"acme-corp\"",
        ),
        (GOOD.replace("eps_limit = 500", "eps_limit = \"lots\""), "scenario.toml:6: field `eps_limit`"),
        (
            GOOD.replace("kind = \"constant\"", "kind = \"sawtooth\""),
            "scenario.toml:12: field `demand`: unknown variant `sawtooth`",
        ),
        (GOOD.replace("eps = 300", "epz = 300"), "scenario.toml:12: field `demand`: unknown field `epz`"),
        (GOOD.replace("days = 1", "days = 0"), "scenario.toml:2: field `days`"),
        (
            GOOD.replace("eps_limit = 500", "eps_limit = 5000"),
            "scenario.toml:5: enabled organizations' EPS limits add up to 5000",
        ),
    ];
    for (text, want) in cases {
        let err = parse(&text).map(|_| ()).unwrap_err();
        assert!(err.starts_with(want), "got {err:?}, want {want:?}");
        assert!(!err.contains('\n'), "not one line: {err:?}");
    }
}

#[test]
fn csv_traces_are_read_relative_to_the_scenario() {
    let dir = out_dir("csv");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("trace.csv"), "eps\n100\n200\n300\n").unwrap();
    let text = GOOD.replace(
        "demand = [{ kind = \"constant\", eps = 300 }]",
        "demand = [{ kind = \"csv\", file = \"trace.csv\" }]",
    );
    std::fs::write(dir.join("s.toml"), &text).unwrap();
    let s = Scenario::load(&dir.join("s.toml")).unwrap();
    s.run(&dir.join("out")).unwrap();
    let csv = std::fs::read_to_string(dir.join("out/intervals.csv")).unwrap();
    let incoming: Vec<&str> = csv.lines().skip(1).take(4).map(|l| l.split(',').nth(3).unwrap()).collect();
    assert_eq!(incoming, ["100.000", "200.000", "300.000", "100.000"]);
    std::fs::write(dir.join("bad.csv"), "1\nten\n").unwrap();
    let err = Scenario::load(&dir.join("s.toml").with_file_name("s.toml")).map(|_| ());
    assert!(err.is_ok());
    let bad = text.replace("trace.csv", "bad.csv");
    std::fs::write(dir.join("s2.toml"), bad).unwrap();
    let err = Scenario::load(&dir.join("s2.toml")).map(|_| ()).unwrap_err().to_string();
    assert!(err.contains("bad.csv:2: \"ten\" is not a number"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
