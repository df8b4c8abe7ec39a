//! Shared helpers for the parsers' integration tests: locating test data,
//! reading JSON Lines vector files, and the conformance report.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use bytes::Bytes;
use parsers::{Event, EventTime, InputFormat, ParserConfig};
use serde_json::Value;

/// `../shared/testdata` next to the repository, or `$VIGIL_TESTDATA`.
pub fn shared_testdata() -> Option<PathBuf> {
    let dir = match std::env::var_os("VIGIL_TESTDATA") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata"),
    };
    dir.is_dir().then_some(dir)
}

/// The repository's own copies of permissively licensed vectors.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Says a test is skipped, outside the test harness's capture so it shows
/// in `cargo test` output.
pub fn say(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

/// Reads a shared test data file, or `None` (and says so) when `../shared`
/// is absent.
pub fn read_shared(relative: &str) -> Option<String> {
    let Some(dir) = shared_testdata() else {
        say(&format!("skipped: ../shared not present ({relative})"));
        return None;
    };
    let path = dir.join(relative);
    Some(std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display())))
}

/// One row of a vector file, with its 1-based line number.
pub struct Row {
    pub line: usize,
    pub v: Value,
}

impl Row {
    pub fn input(&self) -> Vec<u8> {
        match self.v.get("input") {
            Some(Value::String(s)) => s.as_bytes().to_vec(),
            _ => hex(self.v["input_hex"].as_str().expect("input or input_hex")),
        }
    }

    pub fn valid(&self) -> Option<bool> {
        self.v.get("valid").and_then(Value::as_bool)
    }

    pub fn expected(&self) -> &Value {
        &self.v["expected"]
    }

    pub fn option(&self, key: &str) -> Option<&Value> {
        self.v.get("options").and_then(|o| o.get(key))
    }

    pub fn label(&self) -> String {
        let name = self.v.get("test").or_else(|| self.v.get("description")).and_then(Value::as_str).unwrap_or("");
        format!("line {} ({name})", self.line)
    }
}

pub fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

pub fn rows(text: &str) -> Vec<Row> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| Row { line: i + 1, v: serde_json::from_str(l).expect("valid JSON line") })
        .collect()
}

/// Parses `input` with the given settings (device parsers off: these are
/// grammar tests).
pub fn parse(input: &[u8], format: InputFormat, zone: Option<&str>, year: Option<i32>, now: &str) -> Event {
    let parser = ParserConfig { format, timezone: zone.map(str::to_owned), year }.validate_and_build().expect("parser");
    parser.parse(Bytes::copy_from_slice(input), now.parse::<EventTime>().expect("now"))
}

/// Field-by-field comparison collecting every mismatch.
#[derive(Default)]
pub struct Diff {
    pub problems: Vec<String>,
}

impl Diff {
    /// `expected`: absent key = not checked; null or "" = must be absent.
    pub fn text(&mut self, field: &str, expected: Option<&Value>, actual: Option<&str>) {
        let Some(expected) = expected else { return };
        let ok = match expected {
            Value::Null => actual.is_none_or(str::is_empty),
            Value::String(s) if s.is_empty() => actual.is_none_or(str::is_empty),
            Value::String(s) => actual == Some(s.as_str()),
            Value::Number(n) => actual == Some(n.to_string().as_str()),
            _ => false,
        };
        if !ok {
            self.problems.push(format!("{field}: expected {expected}, got {actual:?}"));
        }
    }

    pub fn number(&mut self, field: &str, expected: Option<&Value>, actual: Option<u8>) {
        let Some(expected) = expected else { return };
        let ok = match expected {
            Value::Null => actual.is_none(),
            Value::Number(n) => n.as_u64() == actual.map(u64::from),
            _ => false,
        };
        if !ok {
            self.problems.push(format!("{field}: expected {expected}, got {actual:?}"));
        }
    }

    pub fn time(&mut self, field: &str, expected: &str, actual: EventTime) {
        match expected.parse::<EventTime>() {
            Ok(t) if t.unix_nanos() == actual.unix_nanos() && t.offset_secs() == actual.offset_secs() => {}
            _ => self.problems.push(format!("{field}: expected {expected}, got {actual}")),
        }
    }

    /// Compares a `{key: value}` object with ordered pairs (last value wins).
    pub fn pairs(&mut self, field: &str, expected: Option<&Value>, actual: &parsers::Pairs) {
        let Some(Value::Object(exp)) = expected else { return };
        let got: BTreeMap<&str, &str> = actual.iter().collect();
        let want: BTreeMap<&str, &str> =
            exp.iter().map(|(k, v)| (k.as_str(), v.as_str().unwrap_or("<non-string>"))).collect();
        if got != want {
            self.problems.push(format!("{field}: expected {want:?}, got {got:?}"));
        }
    }

    /// Compares RFC 5424 structured data with an `{id: {param: value}}` object.
    pub fn sd(&mut self, expected: Option<&Value>, event: &Event) {
        let Some(expected) = expected else { return };
        let want: BTreeMap<String, BTreeMap<String, String>> = match expected {
            Value::Null => BTreeMap::new(),
            Value::Object(o) => o
                .iter()
                .map(|(id, params)| {
                    let params = params
                        .as_object()
                        .map(|p| p.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned())).collect())
                        .unwrap_or_default();
                    (id.clone(), params)
                })
                .collect(),
            _ => return self.problems.push(format!("sd: unexpected expectation {expected}")),
        };
        let got: BTreeMap<String, BTreeMap<String, String>> = event
            .sd
            .elements()
            .map(|e| (e.id.to_string(), e.params().map(|(k, v)| (k.to_string(), v.to_string())).collect()))
            .collect();
        if got != want {
            self.problems.push(format!("sd: expected {want:?}, got {got:?}"));
        }
    }

    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// How one vector case went.
pub enum Outcome {
    Pass,
    Fail(String),
    /// The case exercises an upstream option vigil does not have.
    NotApplicable(&'static str),
}

impl From<Diff> for Outcome {
    fn from(d: Diff) -> Outcome {
        if d.ok() { Outcome::Pass } else { Outcome::Fail(d.problems.join("; ")) }
    }
}

/// A case where vigil deliberately differs from upstream, settled by the
/// named decision test in `tests/decisions.rs`.
pub struct Deviation {
    pub decision: &'static str,
    pub applies: fn(&Row) -> bool,
}

/// Runs every row, reports the pass rate, and fails on any mismatch that
/// is not a recorded decision (or a recorded decision that no longer
/// deviates).
///
/// With `VIGIL_CONFORMANCE_ALL=1` every disagreement is listed, recorded or
/// not, and nothing fails: the view to use when revisiting decisions.
pub fn run_suite(name: &str, rows: &[Row], deviations: &[Deviation], case: impl Fn(&Row) -> Outcome) {
    let show_all = std::env::var_os("VIGIL_CONFORMANCE_ALL").is_some();
    let deviations = if show_all { &[][..] } else { deviations };
    let decisions = include_str!("../decisions.rs");
    for d in deviations {
        assert!(
            decisions.contains(&format!("fn {}()", d.decision)),
            "{name}: deviation names decision {} which has no test in tests/decisions.rs",
            d.decision
        );
    }
    let (mut pass, mut decided, mut na) = (0, 0, 0);
    let mut unexplained = Vec::new();
    let mut stale = Vec::new();
    let mut by_decision: BTreeMap<&str, usize> = BTreeMap::new();
    for row in rows {
        let deviation = deviations.iter().find(|d| (d.applies)(row));
        match (case(row), deviation) {
            (Outcome::Pass, None) => pass += 1,
            (Outcome::Pass, Some(d)) => {
                stale.push(format!("{}: passes but is recorded under {}", row.label(), d.decision))
            }
            (Outcome::Fail(_), Some(d)) => {
                decided += 1;
                *by_decision.entry(d.decision).or_default() += 1;
            }
            (Outcome::Fail(why), None) => unexplained.push(format!(
                "{}: {why}\n    input: {:?}",
                row.label(),
                String::from_utf8_lossy(&row.input())
            )),
            (Outcome::NotApplicable(_), _) => na += 1,
        }
    }
    let total = rows.len();
    let applicable = total - na;
    let rate = if applicable == 0 { 100.0 } else { 100.0 * pass as f64 / applicable as f64 };
    let decided_list: Vec<String> = by_decision.iter().map(|(d, n)| format!("{d} x{n}")).collect();
    say(&format!(
        "conformance {name}: {total} cases, {pass} pass, {decided} differ by decision, {na} not applicable, {} unexplained; pass rate {rate:.1}% of applicable{}",
        unexplained.len(),
        if decided_list.is_empty() { String::new() } else { format!(" [{}]", decided_list.join(", ")) }
    ));
    if show_all {
        say(&unexplained.join("\n"));
        return;
    }
    assert!(unexplained.is_empty(), "{name}: unexplained mismatches:\n{}", unexplained.join("\n"));
    assert!(stale.is_empty(), "{name}: stale deviations:\n{}", stale.join("\n"));
}
