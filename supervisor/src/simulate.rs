//! The EPS simulator for capacity planners (`vigil license simulate`): the
//! real allocator run over a scenario of nodes, guarantees, orgs and demand
//! traces on virtual time, with each node's gate applied arithmetically.
//!
//! Outputs: `intervals.csv` (one row per node per interval), `summary.json`
//! (per node and per org totals) and `chart.svg` (demand against
//! allocation, and the unused pool, over time).
//!
//! The gate is applied per interval to each node's events split by its org
//! mix: an org over its budget loses the excess; if the node's budget binds,
//! what the orgs may send is cut in proportion. (The live gate admits in
//! arrival order; over a whole interval the two agree on totals.)

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::num::NonZeroU32;
use std::path::Path;

use collector::{IntervalReport, NodeId, OrgCounts};
use parsers::{EventTime, OrgId, SourceZone};
use serde::Deserialize;
use toml::Spanned;

use crate::allocation::{AllocatorConfig, AllocatorState, MILLI, OrgQuota, allocate};
use crate::error::Error;
use crate::licence::{read_small_file, toml_problem};

const CSV_HEADER: &str = "interval,start,node,incoming_eps,allocated_eps,burst_eps,accepted,dropped,unused_pool";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    licensed_eps: Spanned<u64>,
    #[serde(default = "default_interval")]
    interval_seconds: Spanned<u32>,
    days: Spanned<f64>,
    #[serde(default)]
    start: Option<Spanned<String>>,
    #[serde(default)]
    timezone: Option<Spanned<String>>,
    #[serde(default)]
    burst_cap_eps: Option<u64>,
    #[serde(default, rename = "org")]
    orgs: Vec<OrgFile>,
    #[serde(rename = "node")]
    nodes: Vec<NodeFile>,
}

fn default_interval() -> Spanned<u32> {
    Spanned::new(0..0, 180)
}

fn zero_spanned() -> Spanned<u64> {
    Spanned::new(0..0, 0)
}

fn default_true() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrgFile {
    name: Spanned<String>,
    #[serde(default)]
    eps_limit: Option<u64>,
    #[serde(default = "default_true")]
    enabled: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeFile {
    name: Spanned<String>,
    #[serde(default = "zero_spanned")]
    guaranteed_eps: Spanned<u64>,
    #[serde(default)]
    org: Option<Spanned<String>>,
    #[serde(default)]
    orgs: Option<Spanned<BTreeMap<String, f64>>>,
    demand: Spanned<Vec<TraceFile>>,
    #[serde(default)]
    jitter: f64,
}

/// One component of a node's demand; a node's demand is the sum of its
/// components.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
enum TraceFile {
    /// The same EPS all the time.
    Constant { eps: f64 },
    /// A daily wave between `base` (night) and `peak` at `peak_hour` (local).
    Diurnal {
        base: f64,
        peak: f64,
        #[serde(default = "default_peak_hour")]
        peak_hour: f64,
    },
    /// `before` until day `at_day` (fractional days from the start), then `after`.
    Step { before: f64, after: f64, at_day: f64 },
    /// `eps` extra for `duration_minutes` from day `start_day`, repeated
    /// every `every_hours` if given (an attack, a log storm).
    Spike {
        eps: f64,
        start_day: f64,
        duration_minutes: f64,
        #[serde(default)]
        every_hours: Option<f64>,
    },
    /// One EPS value per interval from a CSV file (first column; a header
    /// line is skipped; the values repeat when the file is shorter).
    Csv { file: String },
}

fn default_peak_hour() -> f64 {
    14.0
}

enum Trace {
    Constant(f64),
    Diurnal { base: f64, peak: f64, peak_hour: f64 },
    Step { before: f64, after: f64, at: f64 },
    Spike { eps: f64, start: f64, duration: f64, every: Option<f64> },
    Series(Vec<f64>),
}

impl Trace {
    /// EPS at `offset` seconds from the start, `local_hour` of day, interval `k`.
    fn eps(&self, offset: f64, local_hour: f64, k: usize) -> f64 {
        match self {
            Trace::Constant(e) => *e,
            Trace::Diurnal { base, peak, peak_hour } => {
                let phase = (local_hour - peak_hour) / 24.0 * std::f64::consts::TAU;
                base + (peak - base) * (1.0 + phase.cos()) / 2.0
            }
            Trace::Step { before, after, at } => {
                if offset < *at {
                    *before
                } else {
                    *after
                }
            }
            Trace::Spike { eps, start, duration, every } => {
                let since = offset - start;
                let inside = match every {
                    _ if since < 0.0 => false,
                    Some(period) => since % period < *duration,
                    None => since < *duration,
                };
                if inside { *eps } else { 0.0 }
            }
            Trace::Series(values) => values.get(k % values.len().max(1)).copied().unwrap_or(0.0),
        }
    }
}

struct Node {
    id: NodeId,
    traces: Vec<Trace>,
    /// (org slot, share) summing to 1.
    mix: Vec<(usize, f64)>,
    jitter: f64,
    seed: u64,
}

struct Org {
    id: OrgId,
    name: String,
    enabled: bool,
}

/// A parsed, validated scenario.
pub struct Scenario {
    config: AllocatorConfig,
    start: EventTime,
    intervals: usize,
    nodes: Vec<Node>,
    orgs: Vec<Org>,
}

/// Per-node and per-org totals of a run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Totals {
    /// Events received (disabled orgs excluded).
    pub received: u64,
    /// Events accepted.
    pub accepted: u64,
    /// Events dropped (over a budget).
    pub dropped: u64,
    /// Events of a disabled org, rejected at entry.
    pub rejected_disabled: u64,
    /// Highest burst EPS granted in one interval.
    pub peak_burst_eps: f64,
}

impl Totals {
    fn percent_dropped(&self) -> f64 {
        if self.received == 0 { 0.0 } else { 100.0 * self.dropped as f64 / self.received as f64 }
    }
}

/// What a run produced, besides its files.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// Intervals simulated.
    pub intervals: usize,
    /// Totals per node, by name.
    pub nodes: BTreeMap<String, Totals>,
    /// Totals per org, by name.
    pub orgs: BTreeMap<String, Totals>,
}

fn spanned_line(text: &str, span: std::ops::Range<usize>) -> usize {
    text[..span.start.min(text.len())].bytes().filter(|b| *b == b'\n').count() + 1
}

impl Scenario {
    /// Reads and validates a scenario file. Errors are one line:
    /// `file:line: problem`, naming the field.
    pub fn load(path: &Path) -> Result<Scenario, Error> {
        let text = read_small_file(path).map_err(|source| Error::Io { path: path.to_owned(), source })?;
        Scenario::parse(&text, &path.display().to_string(), path.parent().unwrap_or(Path::new(".")))
    }

    /// Parses scenario text; `file` names it in errors, `dir` resolves CSV
    /// traces.
    pub fn parse(text: &str, file: &str, dir: &Path) -> Result<Scenario, Error> {
        let err = |line: usize, message: String| Error::Scenario { file: file.to_owned(), line, message };
        let at = |span: std::ops::Range<usize>| spanned_line(text, span);
        let s: ScenarioFile = toml::from_str(text).map_err(|e| {
            let problem = toml_problem(text, &e);
            match problem.strip_prefix("line ").and_then(|r| r.split_once(": ")) {
                Some((line, message)) => err(line.parse().unwrap_or(0), message.to_owned()),
                None => err(0, problem),
            }
        })?;

        let licensed = *s.licensed_eps.get_ref();
        if licensed == 0 {
            return Err(err(at(s.licensed_eps.span()), "field `licensed_eps` must be positive".into()));
        }
        let interval = NonZeroU32::new(*s.interval_seconds.get_ref())
            .ok_or_else(|| err(at(s.interval_seconds.span()), "field `interval_seconds` must be positive".into()))?;
        let days = *s.days.get_ref();
        if !(days > 0.0 && days <= 3660.0) {
            return Err(err(at(s.days.span()), "field `days` must be between 0 and 3660".into()));
        }
        let start = match &s.start {
            Some(text_start) => text_start.get_ref().parse::<EventTime>().map_err(|_| {
                err(at(text_start.span()), format!("field `start`: {:?} is not an RFC 3339 time", text_start.get_ref()))
            })?,
            None => "2026-01-05T00:00:00Z".parse().unwrap_or(EventTime::UNIX_EPOCH),
        };
        let zone = match &s.timezone {
            Some(z) => {
                SourceZone::parse(z.get_ref()).map_err(|e| err(at(z.span()), format!("field `timezone`: {e}")))?
            }
            None => SourceZone::utc(),
        };

        let mut orgs = vec![Org { id: OrgId::SUPER_LOCAL, name: "Super/Local".into(), enabled: true }];
        let mut quotas = Vec::new();
        for (i, o) in s.orgs.iter().enumerate() {
            let name = o.name.get_ref().trim();
            if name.is_empty() || name.chars().count() > 128 {
                return Err(err(at(o.name.span()), "field `name` of an org must be 1 to 128 characters".into()));
            }
            if orgs.iter().any(|x| x.name == name) {
                return Err(err(at(o.name.span()), format!("org {name:?} is defined twice")));
            }
            let id = OrgId(u32::try_from(i).unwrap_or(u32::MAX - 2) + 2);
            orgs.push(Org { id, name: name.to_owned(), enabled: o.enabled });
            quotas.push(OrgQuota { org: id, enabled: o.enabled, eps_limit: o.eps_limit });
        }

        let mut nodes = Vec::new();
        let mut guarantees = BTreeMap::new();
        let org_slot = |name: &str| orgs.iter().position(|o| o.name == name);
        for n in &s.nodes {
            let name = n.name.get_ref().trim();
            if name.is_empty() {
                return Err(err(at(n.name.span()), "field `name` of a node must not be empty".into()));
            }
            let id = NodeId::new(name);
            if guarantees.contains_key(&id) {
                return Err(err(at(n.name.span()), format!("node {name:?} is defined twice")));
            }
            guarantees.insert(id.clone(), *n.guaranteed_eps.get_ref());
            let mix = match (&n.org, &n.orgs) {
                (Some(_), Some(m)) => {
                    return Err(err(at(m.span()), "give either `org` or `orgs` for a node, not both".into()));
                }
                (Some(o), None) => vec![(
                    org_slot(o.get_ref())
                        .ok_or_else(|| err(at(o.span()), format!("field `org`: no org named {:?}", o.get_ref())))?,
                    1.0,
                )],
                (None, Some(m)) => {
                    let mut mix = Vec::new();
                    for (org, share) in m.get_ref() {
                        let slot = org_slot(org)
                            .ok_or_else(|| err(at(m.span()), format!("field `orgs`: no org named {org:?}")))?;
                        if share.is_nan() || *share < 0.0 {
                            return Err(err(
                                at(m.span()),
                                format!("field `orgs`: share of {org:?} must not be negative"),
                            ));
                        }
                        mix.push((slot, *share));
                    }
                    let total: f64 = mix.iter().map(|(_, s)| s).sum();
                    if (total - 1.0).abs() > 1e-6 {
                        return Err(err(at(m.span()), format!("field `orgs`: shares add up to {total}, not 1")));
                    }
                    mix
                }
                (None, None) => vec![(0, 1.0)],
            };
            let mut traces = Vec::new();
            for t in n.demand.get_ref() {
                traces.push(match t.clone() {
                    TraceFile::Constant { eps } => Trace::Constant(eps),
                    TraceFile::Diurnal { base, peak, peak_hour } => Trace::Diurnal { base, peak, peak_hour },
                    TraceFile::Step { before, after, at_day } => Trace::Step { before, after, at: at_day * 86_400.0 },
                    TraceFile::Spike { eps, start_day, duration_minutes, every_hours } => Trace::Spike {
                        eps,
                        start: start_day * 86_400.0,
                        duration: duration_minutes * 60.0,
                        every: every_hours.filter(|h| *h > 0.0).map(|h| h * 3600.0),
                    },
                    TraceFile::Csv { file } => {
                        Trace::Series(read_series(&dir.join(&file)).map_err(|m| err(at(n.demand.span()), m))?)
                    }
                });
            }
            if traces.is_empty() {
                return Err(err(at(n.demand.span()), "field `demand` needs at least one trace".into()));
            }
            if !(0.0..=1.0).contains(&n.jitter) {
                return Err(err(at(n.name.span()), "field `jitter` must be between 0 and 1".into()));
            }
            let seed =
                name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
            nodes.push(Node { id, traces, mix, jitter: n.jitter, seed });
        }
        if nodes.is_empty() {
            return Err(err(0, "a scenario needs at least one [[node]]".into()));
        }

        let config = AllocatorConfig {
            licensed_eps: licensed,
            interval_secs: interval,
            guarantees,
            burst_cap_eps: s.burst_cap_eps.unwrap_or(licensed),
            zone,
            orgs: quotas,
        };
        let config = config.validate().map_err(|e| {
            let line = match e {
                Error::GuaranteesExceedLicence { .. } => s.nodes.first().map_or(0, |n| at(n.guaranteed_eps.span())),
                _ => s.orgs.first().map_or(0, |o| at(o.name.span())),
            };
            err(line, e.to_string())
        })?;
        let intervals = ((days * 86_400.0) / f64::from(interval.get())).ceil() as usize;
        Ok(Scenario { config, start, intervals, nodes, orgs })
    }

    /// Runs the scenario and writes `intervals.csv`, `summary.json` and
    /// `chart.svg` into `out`.
    pub fn run(&self, out: &Path) -> Result<Outcome, Error> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| Error::Io { path: path.clone(), source }
        };
        std::fs::create_dir_all(out).map_err(io(out))?;
        let csv_path = out.join("intervals.csv");
        let file = std::fs::File::create(&csv_path).map_err(io(&csv_path))?;
        let mut csv = std::io::BufWriter::with_capacity(1 << 20, file);
        writeln!(csv, "{CSV_HEADER}").map_err(io(&csv_path))?;

        let t = u64::from(self.config.interval_secs.get());
        let mut state = AllocatorState::default();
        let mut reports: Vec<IntervalReport> = Vec::new();
        let mut outcome = Outcome { intervals: self.intervals, ..Outcome::default() };
        let mut chart = ChartData::new(self);
        let mut row = String::with_capacity(160);
        let mut org_totals: Vec<Totals> = self.orgs.iter().map(|_| Totals::default()).collect();
        let mut node_totals: Vec<Totals> = self.nodes.iter().map(|_| Totals::default()).collect();

        for k in 0..self.intervals {
            let start = self.start.add_secs(i64::try_from(k as u64 * t).unwrap_or(i64::MAX));
            let (plan, next) = allocate(&self.config, &state, &reports, start);
            let offset = (k as u64 * t) as f64 + t as f64 / 2.0;
            let local = start.add_secs(i64::try_from(t / 2).unwrap_or(0));
            let local = local.with_offset(self.config.zone.offset_at(local)).civil();
            let hour = f64::from(local.hour) + f64::from(local.minute) / 60.0;
            let mut new_reports = Vec::with_capacity(self.nodes.len());
            for (n, node) in self.nodes.iter().enumerate() {
                let mut eps: f64 = node.traces.iter().map(|tr| tr.eps(offset, hour, k)).sum();
                if node.jitter > 0.0 {
                    eps *= 1.0 + node.jitter * noise(node.seed, k as u64);
                }
                let events = (eps.max(0.0) * t as f64).round() as u64;
                let p = plan.nodes.iter().find(|p| p.node == node.id);
                let (allocated, burst, budget) = p.map_or((0, 0, None), |p| (p.allocated, p.burst, Some(&p.budget)));
                let gate = self.gate(node, events, budget);
                let report = IntervalReport {
                    node: node.id.clone(),
                    interval: plan.interval,
                    received: gate.received,
                    accepted: gate.accepted,
                    orgs: gate.orgs.clone(),
                };
                let totals = &mut node_totals[n];
                totals.received += gate.received;
                totals.accepted += gate.accepted;
                totals.dropped += gate.received - gate.accepted;
                totals.rejected_disabled += gate.rejected;
                totals.peak_burst_eps = totals.peak_burst_eps.max(burst as f64 / MILLI as f64);
                for c in &gate.orgs {
                    if let Some(slot) = self.orgs.iter().position(|o| o.id == c.org) {
                        let o = &mut org_totals[slot];
                        o.received += c.received;
                        o.accepted += c.accepted;
                        o.dropped += c.dropped_org + c.dropped_node;
                        o.rejected_disabled += c.rejected_disabled;
                        o.peak_burst_eps = o.peak_burst_eps.max(burst as f64 / MILLI as f64);
                    }
                }
                row.clear();
                let _ = write!(row, "{k},");
                start.write_rfc3339(&mut row);
                row.push(',');
                row.push_str(node.id.as_str());
                row.push(',');
                push_milli(&mut row, gate.received * MILLI / t);
                row.push(',');
                push_milli(&mut row, allocated);
                row.push(',');
                push_milli(&mut row, burst);
                let _ = write!(row, ",{},{},", gate.accepted, gate.received - gate.accepted);
                push_milli(&mut row, next.pool);
                row.push('\n');
                csv.write_all(row.as_bytes()).map_err(io(&csv_path))?;
                chart.add_node(k, n, gate.received * MILLI / t, allocated + burst);
                new_reports.push(report);
            }
            chart.add_interval(k, next.pool);
            reports = new_reports;
            state = next;
        }
        csv.flush().map_err(io(&csv_path))?;

        for (node, totals) in self.nodes.iter().zip(node_totals) {
            outcome.nodes.insert(node.id.to_string(), totals);
        }
        for (org, totals) in self.orgs.iter().zip(org_totals) {
            if totals.received > 0 || totals.rejected_disabled > 0 {
                outcome.orgs.insert(org.name.clone(), totals);
            }
        }
        let summary_path = out.join("summary.json");
        std::fs::write(&summary_path, self.summary_json(&outcome)).map_err(io(&summary_path))?;
        let chart_path = out.join("chart.svg");
        std::fs::write(&chart_path, chart.svg(self, &outcome)).map_err(io(&chart_path))?;
        Ok(outcome)
    }

    /// One node's gate over one interval, arithmetically.
    fn gate(&self, node: &Node, events: u64, budget: Option<&collector::Budget>) -> GateResult {
        let node_budget = budget.map_or(0, |b| b.node_events);
        // Split the node's events over its orgs (remainder to the first).
        let mut per_org: Vec<(usize, u64)> =
            node.mix.iter().map(|&(slot, share)| (slot, (events as f64 * share).floor() as u64)).collect();
        let assigned: u64 = per_org.iter().map(|(_, e)| e).sum();
        if let Some(first) = per_org.first_mut() {
            first.1 += events - assigned.min(events);
        }
        let mut result = GateResult::default();
        let mut admitted: Vec<(usize, u64, u64, u64)> = Vec::new(); // slot, received, org-admitted, dropped_org
        for (slot, received) in per_org {
            let org = &self.orgs[slot];
            let rule = budget.and_then(|b| b.orgs.iter().find(|o| o.org == org.id));
            if !org.enabled || rule.is_some_and(|r| !r.enabled) {
                result.rejected += received;
                result.orgs.push(OrgCounts {
                    org: org.id,
                    received: 0,
                    accepted: 0,
                    dropped_org: 0,
                    dropped_node: 0,
                    rejected_disabled: received,
                });
                continue;
            }
            let allowed = rule.and_then(|r| r.events).map_or(received, |limit| received.min(limit));
            admitted.push((slot, received, allowed, received - allowed));
        }
        let wanted: u64 = admitted.iter().map(|a| a.2).sum();
        let mut granted: Vec<u64> = if wanted <= node_budget {
            admitted.iter().map(|a| a.2).collect()
        } else {
            let scaled: Vec<u64> = admitted
                .iter()
                .map(|a| (u128::from(a.2) * u128::from(node_budget) / u128::from(wanted.max(1))) as u64)
                .collect();
            scaled
        };
        let mut spare = node_budget.min(wanted).saturating_sub(granted.iter().sum());
        for (g, a) in granted.iter_mut().zip(&admitted) {
            let add = spare.min(a.2 - *g);
            *g += add;
            spare -= add;
        }
        for ((slot, received, allowed, dropped_org), accepted) in admitted.into_iter().zip(granted) {
            result.received += received;
            result.accepted += accepted;
            result.orgs.push(OrgCounts {
                org: self.orgs[slot].id,
                received,
                accepted,
                dropped_org,
                dropped_node: allowed - accepted,
                rejected_disabled: 0,
            });
        }
        result
    }

    fn summary_json(&self, outcome: &Outcome) -> String {
        let entry = |name: &str, t: &Totals| {
            serde_json::json!({
                "name": name,
                "received": t.received,
                "accepted": t.accepted,
                "dropped": t.dropped,
                "percent_dropped": (t.percent_dropped() * 1000.0).round() / 1000.0,
                "rejected_disabled": t.rejected_disabled,
                "peak_burst_eps": (t.peak_burst_eps * 1000.0).round() / 1000.0,
            })
        };
        let total = outcome.nodes.values().fold(Totals::default(), |mut acc, t| {
            acc.received += t.received;
            acc.accepted += t.accepted;
            acc.dropped += t.dropped;
            acc.rejected_disabled += t.rejected_disabled;
            acc.peak_burst_eps = acc.peak_burst_eps.max(t.peak_burst_eps);
            acc
        });
        let doc = serde_json::json!({
            "licensed_eps": self.config.licensed_eps,
            "interval_seconds": self.config.interval_secs.get(),
            "intervals": outcome.intervals,
            "start": self.start.to_rfc3339(),
            "total": entry("total", &total),
            "nodes": outcome.nodes.iter().map(|(n, t)| entry(n, t)).collect::<Vec<_>>(),
            "orgs": outcome.orgs.iter().map(|(n, t)| entry(n, t)).collect::<Vec<_>>(),
        });
        serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
    }
}

#[derive(Default)]
struct GateResult {
    received: u64,
    accepted: u64,
    rejected: u64,
    orgs: Vec<OrgCounts>,
}

/// Deterministic noise in [-1, 1] for node `seed` at interval `k`
/// (splitmix64).
fn noise(seed: u64, k: u64) -> f64 {
    let mut z = seed ^ k.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
}

fn read_series(path: &Path) -> Result<Vec<f64>, String> {
    let text = read_small_file(path).map_err(|e| format!("csv trace {}: {e}", path.display()))?;
    let mut values = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let first = line.split(',').next().unwrap_or("").trim();
        if first.is_empty() {
            continue;
        }
        match first.parse::<f64>() {
            Ok(v) if v >= 0.0 => values.push(v),
            _ if i == 0 => continue,
            _ => return Err(format!("csv trace {}:{}: {first:?} is not a number of EPS", path.display(), i + 1)),
        }
    }
    if values.is_empty() {
        return Err(format!("csv trace {} has no values", path.display()));
    }
    Ok(values)
}

/// Appends milli-units as a plain decimal with three digits.
fn push_milli(out: &mut String, milli: u64) {
    let _ = write!(out, "{}.{:03}", milli / MILLI, milli % MILLI);
}

/// Series for the chart, reduced to at most `MAX_POINTS` points (the
/// maximum over each bucket of intervals, so spikes stay visible).
struct ChartData {
    bucket: usize,
    total_demand: Vec<u64>,
    total_alloc: Vec<u64>,
    pool: Vec<u64>,
    node_demand: Vec<Vec<u64>>,
    node_alloc: Vec<Vec<u64>>,
    interval_demand: u64,
    interval_alloc: u64,
}

const MAX_POINTS: usize = 1200;
const PALETTE: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];

impl ChartData {
    fn new(s: &Scenario) -> ChartData {
        let bucket = s.intervals.div_ceil(MAX_POINTS).max(1);
        let points = s.intervals.div_ceil(bucket).max(1);
        ChartData {
            bucket,
            total_demand: vec![0; points],
            total_alloc: vec![0; points],
            pool: vec![0; points],
            node_demand: vec![vec![0; points]; s.nodes.len()],
            node_alloc: vec![vec![0; points]; s.nodes.len()],
            interval_demand: 0,
            interval_alloc: 0,
        }
    }

    fn point(&self, k: usize) -> usize {
        (k / self.bucket).min(self.pool.len() - 1)
    }

    fn add_node(&mut self, k: usize, n: usize, demand: u64, alloc: u64) {
        let p = self.point(k);
        self.node_demand[n][p] = self.node_demand[n][p].max(demand);
        self.node_alloc[n][p] = self.node_alloc[n][p].max(alloc);
        self.interval_demand += demand;
        self.interval_alloc += alloc;
    }

    fn add_interval(&mut self, k: usize, pool: u64) {
        let p = self.point(k);
        self.total_demand[p] = self.total_demand[p].max(self.interval_demand);
        self.total_alloc[p] = self.total_alloc[p].max(self.interval_alloc);
        self.pool[p] = self.pool[p].max(pool);
        self.interval_demand = 0;
        self.interval_alloc = 0;
    }

    fn svg(&self, s: &Scenario, outcome: &Outcome) -> String {
        const W: f64 = 1100.0;
        const PANEL: f64 = 250.0;
        const LEFT: f64 = 80.0;
        const RIGHT: f64 = 190.0;
        const TOP: f64 = 84.0;
        const GAP: f64 = 70.0;
        let plot_w = W - LEFT - RIGHT;
        let height = TOP + 3.0 * PANEL + 2.0 * GAP + 50.0;
        let mut out = String::new();
        let _ = write!(
            out,
            r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" viewBox="0 0 {W} {height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{LEFT}" y="24" font-size="16" font-weight="bold">EPS simulation: {} EPS licensed, {} intervals of {} s from {}</text>
<text x="{LEFT}" y="42" fill="#555">Each point is the maximum over {} interval(s). Values in events per second.</text>
"##,
            s.config.licensed_eps, s.intervals, s.config.interval_secs, s.start, self.bucket
        );
        let licensed = s.config.licensed_eps * MILLI;
        // Panel 1: all nodes together.
        let top1 = TOP;
        let max1 = self.total_demand.iter().chain(&self.total_alloc).copied().max().unwrap_or(0).max(licensed);
        let panel = Panel { top: top1, height: PANEL, left: LEFT, width: plot_w, ymax: nice_max(max1) };
        panel.frame(&mut out, "All nodes: incoming vs allocated (incl. burst)", s);
        panel.line(&mut out, &self.total_demand, "#ff7f0e", "");
        panel.line(&mut out, &self.total_alloc, "#1f77b4", "");
        panel.hline(&mut out, licensed, "#444", "6,4");
        panel.legend(
            &mut out,
            &[("#ff7f0e", "", "incoming"), ("#1f77b4", "", "allocated + burst"), ("#444", "6,4", "licensed")],
        );
        // Panel 2: the nodes that lost the most events (else the busiest).
        let mut order: Vec<usize> = (0..s.nodes.len()).collect();
        order.sort_by_key(|&n| {
            let t = outcome.nodes.get(s.nodes[n].id.as_str()).cloned().unwrap_or_default();
            (std::cmp::Reverse(t.dropped), std::cmp::Reverse(t.received), n)
        });
        order.truncate(PALETTE.len());
        let top2 = top1 + PANEL + GAP;
        let max2 = order
            .iter()
            .flat_map(|&n| self.node_demand[n].iter().chain(&self.node_alloc[n]))
            .copied()
            .max()
            .unwrap_or(0);
        let panel2 = Panel { top: top2, height: PANEL, left: LEFT, width: plot_w, ymax: nice_max(max2) };
        panel2.frame(&mut out, "Per node (most dropped first): incoming dashed, allocated + burst solid", s);
        let mut legend = Vec::new();
        for (i, &n) in order.iter().enumerate() {
            panel2.line(&mut out, &self.node_demand[n], PALETTE[i], "5,3");
            panel2.line(&mut out, &self.node_alloc[n], PALETTE[i], "");
            legend.push((PALETTE[i], "", s.nodes[n].id.as_str()));
        }
        panel2.legend(&mut out, &legend);
        // Panel 3: the pool.
        let top3 = top2 + PANEL + GAP;
        let cap = 5 * licensed;
        let panel3 = Panel { top: top3, height: PANEL, left: LEFT, width: plot_w, ymax: nice_max(cap) };
        panel3.frame(&mut out, "Unused-EPS pool (halved at local midnight, capped at 5 x licensed)", s);
        panel3.line(&mut out, &self.pool, "#2ca02c", "");
        panel3.hline(&mut out, cap, "#444", "6,4");
        panel3.legend(&mut out, &[("#2ca02c", "", "pool"), ("#444", "6,4", "cap")]);
        out.push_str("</svg>\n");
        out
    }
}

struct Panel {
    top: f64,
    height: f64,
    left: f64,
    width: f64,
    ymax: u64,
}

impl Panel {
    fn y(&self, milli: u64) -> f64 {
        self.top + self.height - (milli as f64 / self.ymax.max(1) as f64) * self.height
    }

    fn x(&self, i: usize, n: usize) -> f64 {
        self.left + if n <= 1 { 0.0 } else { i as f64 / (n - 1) as f64 * self.width }
    }

    fn frame(&self, out: &mut String, title: &str, s: &Scenario) {
        let (l, t, w, h) = (self.left, self.top, self.width, self.height);
        let _ = writeln!(out, r#"<text x="{l}" y="{}" font-weight="bold">{}</text>"#, t - 10.0, xml(title));
        let _ = writeln!(out, r##"<rect x="{l}" y="{t}" width="{w}" height="{h}" fill="none" stroke="#999"/>"##);
        for i in 0..=4 {
            let v = self.ymax / 4 * i;
            let y = self.y(v);
            let _ = writeln!(
                out,
                r##"<line x1="{l}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end" fill="#555">{}</text>"##,
                l + w,
                l - 6.0,
                y + 4.0,
                v / MILLI
            );
        }
        let days = s.intervals as f64 * f64::from(s.config.interval_secs.get()) / 86_400.0;
        let step = (days / 10.0).ceil().max(1.0) as usize;
        let mut d = 0usize;
        while d as f64 <= days {
            let x = l + (d as f64 / days.max(1e-9)).min(1.0) * w;
            let c = s.start.add_secs(i64::try_from(d * 86_400).unwrap_or(0)).civil();
            let _ = writeln!(
                out,
                r##"<line x1="{x:.1}" y1="{t}" x2="{x:.1}" y2="{}" stroke="#eee"/><text x="{x:.1}" y="{}" text-anchor="middle" fill="#555">{:02}-{:02}</text>"##,
                t + h,
                t + h + 16.0,
                c.month,
                c.day
            );
            d += step;
        }
    }

    fn line(&self, out: &mut String, values: &[u64], color: &str, dash: &str) {
        let mut points = String::with_capacity(values.len() * 14);
        for (i, v) in values.iter().enumerate() {
            let _ = write!(points, "{:.1},{:.1} ", self.x(i, values.len()), self.y(*v));
        }
        let dash = if dash.is_empty() { String::new() } else { format!(r#" stroke-dasharray="{dash}""#) };
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.5"{dash} points="{}"/>"#,
            points.trim_end()
        );
    }

    fn hline(&self, out: &mut String, value: u64, color: &str, dash: &str) {
        let y = self.y(value);
        let _ = writeln!(
            out,
            r#"<line x1="{}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="{color}" stroke-dasharray="{dash}"/>"#,
            self.left,
            self.left + self.width
        );
    }

    fn legend(&self, out: &mut String, entries: &[(&str, &str, &str)]) {
        let x = self.left + self.width + 16.0;
        for (i, (color, dash, label)) in entries.iter().enumerate() {
            let y = self.top + 12.0 + i as f64 * 20.0;
            let _ = writeln!(
                out,
                r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{color}" stroke-width="2" stroke-dasharray="{dash}"/><text x="{}" y="{}">{}</text>"#,
                x + 24.0,
                x + 30.0,
                y + 4.0,
                xml(label)
            );
        }
    }
}

/// A round axis maximum above `milli` (1, 2 or 5 × 10^n EPS).
fn nice_max(milli: u64) -> u64 {
    let eps = (milli.div_ceil(MILLI)).max(1) as f64 * 1.05;
    let magnitude = 10f64.powf(eps.log10().floor());
    let nice = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * magnitude).find(|v| *v >= eps).unwrap_or(10.0 * magnitude);
    nice as u64 * MILLI
}

fn xml(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_is_deterministic_and_bounded() {
        for k in 0..1000 {
            let v = noise(42, k);
            assert!((-1.0..=1.0).contains(&v));
            assert_eq!(v, noise(42, k));
        }
    }
}
