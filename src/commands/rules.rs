//! `vigil rules check|test`: compile rule files and report every problem;
//! run rules over a log file on event time and print the incidents.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use parsers::device::AuditJoin;
use parsers::{Event, Network, OrgId, Str};
use rules::{Compiler, Diagnostic, Engine, EngineConfig, RuleSet};
use serde::Deserialize;

use super::parse::{ParsingArgs, read_batches};

#[derive(Subcommand)]
pub enum RulesCommand {
    /// Compile rule files (or every *.yaml/*.yml under directories), print
    /// every diagnostic as FILE:LINE: LEVEL: MESSAGE, exit 1 on any error.
    Check {
        /// Rule files or directories.
        #[arg(value_name = "PATH", required = true)]
        paths: Vec<PathBuf>,
        /// Sigma log-source mappings to use instead of the built-in ones
        /// (docs/sigma.md).
        #[arg(long, value_name = "FILE")]
        mappings: Option<PathBuf>,
    },
    /// Run rules over a log file on event time, flush all windows at the end
    /// of input, and print each incident as one JSON line. `event_ids` are
    /// the input's line numbers.
    Test(TestArgs),
    /// Compile a tree of Sigma rules (*.yml/*.yaml) and report, per rule:
    /// compiled, not applicable (no mapping for its log source), or
    /// unsupported with the exact reason. Prints the table by log source;
    /// exits 1 when the tree holds no Sigma rule.
    ImportSigma {
        /// The directory (or file) of Sigma rules.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// Write the per-rule report here: JSON Lines for *.json/*.jsonl,
        /// else a Markdown table.
        #[arg(long, value_name = "FILE")]
        report: Option<PathBuf>,
        /// Log-source mappings to use instead of the built-in ones
        /// (docs/sigma.md).
        #[arg(long, value_name = "FILE")]
        mappings: Option<PathBuf>,
    },
}

#[derive(Args)]
pub struct TestArgs {
    /// Rule files or directories (default: the built-in pack).
    #[arg(long, value_name = "PATH", num_args = 1..)]
    rules: Vec<PathBuf>,
    /// Sigma log-source mappings to use instead of the built-in ones
    /// (docs/sigma.md).
    #[arg(long, value_name = "FILE")]
    mappings: Option<PathBuf>,
    /// The log file; "-" reads stdin.
    #[arg(long, value_name = "LOGFILE")]
    input: PathBuf,
    /// Org of events the org map does not place (default: Super/Local).
    #[arg(long, value_name = "NAME")]
    org: Option<String>,
    /// TOML file mapping hosts (`[hosts]` `"web-01" = "acme"`) and networks
    /// (`[networks]` `"10.1.0.0/16" = "globex"`, matched against the host when
    /// it is an address) to orgs.
    #[arg(long, value_name = "FILE")]
    org_map: Option<PathBuf>,
    #[command(flatten)]
    parsing: ParsingArgs,
    /// How far out of order events may be and still count (e.g. 30s, 5m).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    lateness: Duration,
    /// Print engine statistics to stderr at the end.
    #[arg(long)]
    stats: bool,
    /// Threads: 2 parses on one while the rules run on the other (batches
    /// of lines pass between them in order, so the result is the same); 1
    /// does both on one.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=2))]
    threads: u8,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    rules::parse_duration(text)
}

pub fn run(cmd: RulesCommand) -> Result<ExitCode> {
    match cmd {
        RulesCommand::Check { paths, mappings } => check(&paths, mappings.as_deref()),
        RulesCommand::Test(args) => test(args).map(|()| ExitCode::SUCCESS),
        RulesCommand::ImportSigma { dir, report, mappings } => {
            import_sigma(&dir, report.as_deref(), mappings.as_deref())
        }
    }
}

/// A compiler using the Sigma log-source mappings of `mappings`, if given.
fn compiler_with(mappings: Option<&Path>) -> Result<Compiler> {
    let mut compiler = Compiler::new();
    if let Some(path) = mappings {
        let text = read_text(path)?;
        let sources = rules::sigma::LogSources::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        compiler.set_log_sources(sources);
    }
    Ok(compiler)
}

fn import_sigma(dir: &Path, report: Option<&Path>, mappings: Option<&Path>) -> Result<ExitCode> {
    use rules::sigma::Verdict;
    let mut compiler = compiler_with(mappings)?;
    compiler.add_path(dir);
    let rules = compiler.sigma_report().to_vec();
    // Problems that are not about a Sigma rule (unreadable files, vigil
    // rules with errors) are shown as they are.
    for d in compiler.diagnostics().iter().filter(|d| d.is_error()) {
        eprintln!("{d}");
    }
    if rules.is_empty() {
        eprintln!("no Sigma rules under {}", dir.display());
        return Ok(ExitCode::from(1));
    }
    let mut table: BTreeMap<&str, [usize; 4]> = BTreeMap::new();
    for r in &rules {
        let row = table.entry(r.logsource.as_str()).or_default();
        row[0] += 1;
        match r.verdict {
            Verdict::Compiled => row[1] += 1,
            Verdict::NotApplicable(_) => row[2] += 1,
            Verdict::Unsupported(_) => row[3] += 1,
        }
    }
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "{:<40} {:>6} {:>9} {:>15} {:>12}",
        "LOG SOURCE", "RULES", "COMPILED", "NOT APPLICABLE", "UNSUPPORTED"
    )?;
    for (source, [all, compiled, na, unsupported]) in &table {
        writeln!(out, "{source:<40} {all:>6} {compiled:>9} {na:>15} {unsupported:>12}")?;
    }
    let compiled = rules.iter().filter(|r| r.verdict == Verdict::Compiled).count();
    let mapped = rules.iter().filter(|r| !matches!(r.verdict, Verdict::NotApplicable(_))).count();
    let percent = if mapped == 0 { 0.0 } else { compiled as f64 * 100.0 / mapped as f64 };
    writeln!(
        out,
        "{} Sigma rules: {compiled} compiled ({percent:.1} % of the {mapped} whose log source has a mapping), {} not applicable, {} unsupported",
        rules.len(),
        rules.len() - mapped,
        mapped - compiled
    )?;
    if let Some(path) = report {
        let file = File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
        let mut w = BufWriter::new(file);
        let json = path.extension().is_some_and(|e| e == "json" || e == "jsonl");
        if !json {
            writeln!(w, "| file | line | id | title | log source | status | reason |\n|---|---|---|---|---|---|---|")?;
        }
        for r in &rules {
            let (s, why) = status_of(&r.verdict);
            if json {
                let line = serde_json::json!({
                    "file": r.file, "line": r.line, "id": r.id, "title": r.title,
                    "logsource": r.logsource, "status": s, "reason": why,
                });
                writeln!(w, "{line}")?;
            } else {
                let cell = |t: &str| t.replace('|', "\\|").replace('\n', " ");
                writeln!(
                    w,
                    "| {} | {} | {} | {} | {} | {s} | {} |",
                    cell(&r.file),
                    r.line,
                    cell(&r.id),
                    cell(&r.title),
                    cell(&r.logsource),
                    cell(why)
                )?;
            }
        }
        w.flush()?;
    }
    Ok(ExitCode::SUCCESS)
}

/// A verdict as the report writes it: status and reason.
fn status_of(v: &rules::sigma::Verdict) -> (&'static str, &str) {
    use rules::sigma::Verdict;
    match v {
        Verdict::Compiled => ("compiled", ""),
        Verdict::NotApplicable(why) => ("not applicable", why.as_str()),
        Verdict::Unsupported(why) => ("unsupported", why.as_str()),
    }
}

fn print_diagnostics(diagnostics: &[Diagnostic]) {
    for d in diagnostics {
        eprintln!("{d}");
    }
}

/// A compiled set with its warnings, or every diagnostic.
type Compiled = std::result::Result<(RuleSet, Vec<Diagnostic>), Vec<Diagnostic>>;

fn compile(paths: &[PathBuf], mappings: Option<&Path>) -> Result<Compiled> {
    let mut compiler = compiler_with(mappings)?;
    for path in paths {
        compiler.add_path(path);
    }
    Ok(compiler.finish())
}

fn check(paths: &[PathBuf], mappings: Option<&Path>) -> Result<ExitCode> {
    match compile(paths, mappings)? {
        Ok((set, warnings)) => {
            print_diagnostics(&warnings);
            eprintln!("{} rules, 0 errors, {} warnings", set.len(), warnings.len());
            Ok(ExitCode::SUCCESS)
        }
        Err(diagnostics) => {
            print_diagnostics(&diagnostics);
            let errors = diagnostics.iter().filter(|d| d.is_error()).count();
            eprintln!("{errors} errors, {} warnings", diagnostics.len() - errors);
            Ok(ExitCode::from(1))
        }
    }
}

/// `--org-map`: hosts and networks → org names.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct OrgMapFile {
    #[serde(default)]
    hosts: BTreeMap<String, String>,
    #[serde(default)]
    networks: BTreeMap<String, String>,
}

/// Decides each event's org the way a collector would from its sources.
struct OrgMap {
    hosts: BTreeMap<String, usize>,
    /// Longest prefix first.
    networks: Vec<(Network, usize)>,
    /// Org names with their ids; index 0 is Super/Local.
    orgs: Vec<(OrgId, Str)>,
    /// Where unmapped events go.
    default: usize,
}

impl OrgMap {
    fn load(path: Option<&Path>, default_org: Option<&str>) -> Result<OrgMap> {
        let file = match path {
            None => OrgMapFile::default(),
            Some(path) => {
                let text = read_text(path)?;
                toml::from_str(&text).with_context(|| format!("invalid org map {}", path.display()))?
            }
        };
        // Org ids: Super/Local is 1; other names get 2, 3, ... in name order,
        // so ids do not depend on the order of lines in the log.
        let mut names: Vec<&str> =
            file.hosts.values().chain(file.networks.values()).map(String::as_str).chain(default_org).collect();
        names.sort_unstable();
        names.dedup();
        let mut orgs = vec![(OrgId::SUPER_LOCAL, Str::from(rules::SUPER_LOCAL))];
        for name in names {
            let chars = name.trim().chars().count();
            if chars == 0 || chars > 128 {
                bail!("org name {name:?} must have 1 to 128 characters");
            }
            if name != rules::SUPER_LOCAL {
                let id = OrgId(u32::try_from(orgs.len() + 1).unwrap_or(u32::MAX));
                orgs.push((id, Str::from(name)));
            }
        }
        let index = |name: &str| orgs.iter().position(|(_, n)| n == name).unwrap_or(0);
        let hosts = file.hosts.iter().map(|(host, org)| (host.to_ascii_lowercase(), index(org))).collect();
        let mut networks = Vec::new();
        for (net, org) in &file.networks {
            let network: Network = net.parse().with_context(|| format!("org map [networks] {net:?}"))?;
            networks.push((network, index(org)));
        }
        networks.sort_by_key(|(n, _)| std::cmp::Reverse(n.prefix()));
        let default = default_org.map_or(0, index);
        Ok(OrgMap { hosts, networks, orgs, default })
    }

    fn assign(&self, event: &mut Event) {
        let mapped = event.host.as_deref().and_then(|host| {
            if let Some(i) = self.hosts.get(&host.to_ascii_lowercase()) {
                return Some(*i);
            }
            let ip = host.parse::<IpAddr>().ok()?;
            self.networks.iter().find(|(net, _)| net.contains(ip)).map(|(_, i)| *i)
        });
        let (id, name) = &self.orgs[mapped.unwrap_or(self.default)];
        event.org_id = Some(*id);
        event.org = Some(name.clone());
    }
}

pub(crate) fn read_text(path: &Path) -> Result<String> {
    let mut text = String::new();
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    #[allow(clippy::disallowed_methods)] // bounded by take
    file.take(16 << 20).read_to_string(&mut text).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(text)
}

/// The rules' side of `vigil rules test`: events in file order through
/// the engine, audit records joined as the collector joins them.
struct Correlate {
    engine: Engine,
    updates: Vec<rules::Incident>,
    audit: AuditJoin,
    joined: Vec<Event>,
    /// Lines so far (a joined event counts as the line that completed it).
    line: u64,
    /// The newest event time so far (audit records are joined on their
    /// own time: a replay has no receive times).
    latest: i64,
}

impl Correlate {
    fn new(engine: Engine) -> Correlate {
        Correlate {
            engine,
            updates: Vec::new(),
            audit: AuditJoin::new(collector::intake::AUDIT_JOIN_WINDOW_MS, collector::intake::AUDIT_JOIN_MAX_PENDING),
            joined: Vec::new(),
            line: 0,
            latest: i64::MIN,
        }
    }

    fn batch(&mut self, events: &[Event]) {
        for event in events {
            self.line += 1;
            self.engine.process(self.line, event, &mut self.updates);
            self.latest = self.latest.max(event.time.unix_millis());
            self.audit.observe(event, self.latest, &mut self.joined);
            self.audit.expire(self.latest, &mut self.joined);
            for e in self.joined.drain(..) {
                self.engine.process(self.line, &e, &mut self.updates);
            }
        }
    }
}

fn test(args: TestArgs) -> Result<()> {
    let rules = if args.rules.is_empty() {
        rules::builtin()
    } else {
        match compile(&args.rules, args.mappings.as_deref())? {
            Ok((set, warnings)) => {
                print_diagnostics(&warnings);
                set
            }
            Err(diagnostics) => {
                print_diagnostics(&diagnostics);
                bail!("the rules do not compile");
            }
        }
    };
    let orgs = OrgMap::load(args.org_map.as_deref(), args.org.as_deref())?;
    let (parser, now) = args.parsing.parser(parsers::InputFormat::Auto)?;
    let devices = args.parsing.devices()?;
    let mut input: Box<dyn Read> = if args.input.as_os_str() == "-" {
        Box::new(io::stdin())
    } else {
        Box::new(File::open(&args.input).with_context(|| format!("cannot open {}", args.input.display()))?)
    };
    // A replayed file has no real receive times (every line gets `--now`):
    // trust the stamps as written.
    let config = EngineConfig { lateness: args.lateness, ..EngineConfig::default() }.trusting_stamps();
    let mut correlate = Correlate::new(Engine::new(Arc::new(rules), config));
    let max_line = NonZeroUsize::new(parsers::framing::DEFAULT_MAX_FRAME_LEN).unwrap_or(NonZeroUsize::MIN);
    // Parses `frames` into `events` (emptied first).
    let parse = |frames: Vec<parsers::framing::Frame>, events: &mut Vec<Event>| {
        events.clear();
        events.extend(frames.into_iter().map(|frame| {
            let mut event = parser.parse(frame.data, now);
            event.truncated = frame.truncated;
            devices.classify(&mut event);
            orgs.assign(&mut event);
            event
        }));
    };
    let read = if args.threads == 1 {
        let mut events = Vec::new();
        read_batches(&mut input, max_line, |_, frames| {
            parse(frames, &mut events);
            correlate.batch(&events);
            true
        })
    } else {
        // Parsed batches go to the rules thread in order; a few at most
        // wait between the two. The rules thread hands each batch back, so
        // that its events are freed on the thread that allocated them (a
        // free on another thread costs the allocator several times more)
        // and its room is filled again.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Event>>(4);
        let (back, returned) = std::sync::mpsc::sync_channel::<Vec<Event>>(8);
        std::thread::scope(|scope| {
            let rules = scope.spawn(|| {
                for batch in rx {
                    correlate.batch(&batch);
                    // Full (the parser is gone): freed here instead.
                    let _ = back.try_send(batch);
                }
            });
            let read = read_batches(&mut input, max_line, |_, frames| {
                let mut events = returned.try_recv().unwrap_or_default();
                parse(frames, &mut events);
                tx.send(events).is_ok()
            });
            drop(tx);
            match rules.join() {
                Ok(()) => read,
                Err(_) => Err(io::Error::other("the rules thread failed")),
            }
        })
    };
    read.with_context(|| format!("cannot read {}", args.input.display()))?;
    let Correlate { mut engine, mut updates, mut audit, mut joined, line, .. } = correlate;
    audit.drain(&mut joined);
    for e in joined.drain(..) {
        engine.process(line, &e, &mut updates);
    }
    engine.flush(&mut updates);

    // The final state of each incident, by first hit (then opening order).
    let mut finals: BTreeMap<u64, rules::Incident> = BTreeMap::new();
    for incident in updates {
        finals.insert(incident.id, incident);
    }
    let mut ordered: Vec<&rules::Incident> = finals.values().collect();
    ordered.sort_by_key(|i| (i.first_seen.unix_nanos(), i.id));
    let mut out = BufWriter::new(io::stdout().lock());
    for incident in ordered {
        writeln!(out, "{}", incident.to_json())?;
    }
    out.flush()?;

    let stats = engine.stats();
    if stats.late_events > 0 {
        eprintln!(
            "warning: {} events arrived more than {} behind newer events of their org and were not evaluated; raise --lateness",
            stats.late_events,
            rules::render_duration(args.lateness)
        );
    }
    if args.stats {
        eprintln!(
            "{line} lines, {} incidents from {} rule hits; {} late, {} window keys, {} bytes of state at the end",
            finals.len(),
            stats.hits,
            stats.late_events,
            stats.window_keys,
            stats.state_bytes
        );
    }
    Ok(())
}
