//! `vigil bench --sigma DIR`: the cost of running a tree of Sigma rules.
//!
//! It compiles the tree (with `--sigma-mappings` or the built-in
//! mappings), parses and classifies the lines of `--sigma-input` files
//! with the real parsers and device parsers, and cycles through them to
//! make `--sigma-events` events one millisecond apart in one org. It then
//! runs the correlation engine over those events, interleaved three
//! times, with the built-in pack (the baseline: what `vigil run` runs by
//! default) and with the compiled Sigma rules, and reports events per
//! second and their ratio. With `--rsigma PATH` it also gives rsigma the
//! same events as JSON (each field under the name the Sigma rules use, see
//! [`rules::sigma::LogSources::event_json`]) and the same compiled rule
//! files, in the same run, and reports its events per second.
//!
//! vigil's figures are the engine alone on parsed events; rsigma's are a
//! whole process reading JSON lines (its parse included, the rule files'
//! loading too), so the comparison leans in rsigma's disfavour by the cost
//! of JSON parsing and in vigil's by nothing: parsing syslog is not timed.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use parsers::{DeviceParsers, Event, EventTime, OrgId, Parser, Str};
use rules::sigma::{LogSources, Verdict};
use rules::{Compiler, RuleSet};

use super::bench::BenchArgs;

/// The first event's time (2026-11-22T00:00:00Z).
const T0_SECS: i64 = 1_795_305_600;
/// Timed rounds of each side, interleaved.
const ROUNDS: usize = 3;
/// Lines read from the inputs at most.
const MAX_LINES: usize = 1_000_000;

/// One engine run: seconds and rule hits.
struct Timing {
    secs: f64,
    hits: u64,
}

fn run_engine(set: &Arc<RuleSet>, events: &[Event]) -> Timing {
    let (took, engine) = super::bench_report::correlate(set, events, 1.0, false);
    let secs = took.wall;
    Timing { secs, hits: engine.stats().hits }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs `vigil bench --sigma`.
pub(super) fn run(args: &BenchArgs, dir: &Path) -> Result<()> {
    let tree = args.sigma.as_deref().context("--sigma DIR is required")?;
    if args.sigma_input.is_empty() {
        bail!("--sigma needs --sigma-input FILE (log lines to run the rules on; repeat for several files)");
    }
    let mut compiler = Compiler::new();
    let sources = match &args.sigma_mappings {
        Some(path) => {
            let text = super::rules::read_text(path)?;
            LogSources::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        }
        None => LogSources::builtin(),
    };
    compiler.set_log_sources(sources.clone());
    compiler.add_path(tree);
    let report = compiler.sigma_report().to_vec();
    // Files whose every document compiled: the same rules for rsigma.
    let mut files: BTreeSet<&str> = report.iter().map(|r| r.file.as_str()).collect();
    for r in report.iter().filter(|r| r.verdict != Verdict::Compiled) {
        files.remove(r.file.as_str());
    }
    let compiled = report.iter().filter(|r| r.verdict == Verdict::Compiled).count();
    let (sigma, _) = compiler.finish().map_err(|d| {
        anyhow::anyhow!(
            "the rules do not compile: {}",
            d.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
        )
    })?;
    let sigma = Arc::new(sigma);
    let pack = Arc::new(rules::builtin());
    println!(
        "rules: {compiled} Sigma rules compiled of {} in {} ({} files wholly compiled); baseline: the built-in pack ({} rules)",
        report.len(),
        tree.display(),
        files.len(),
        pack.len()
    );

    // The events: the inputs' lines parsed and classified, cycled.
    let parser = Parser::new();
    let devices = DeviceParsers::builtin().context("the built-in device parsers")?;
    let received = EventTime::from_unix(T0_SECS, 0, 0);
    let mut base = Vec::new();
    for path in &args.sigma_input {
        let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        for line in BufReader::new(file).split(b'\n') {
            let line = line.with_context(|| format!("cannot read {}", path.display()))?;
            if line.iter().all(u8::is_ascii_whitespace) || base.len() >= MAX_LINES {
                continue;
            }
            let mut e = parser.parse(Bytes::from(line), received);
            devices.classify(&mut e);
            e.org = Some(Str::from("acme"));
            e.org_id = Some(OrgId(2));
            base.push(e);
        }
    }
    if base.is_empty() {
        bail!("the --sigma-input files hold no lines");
    }
    let n = usize::try_from(args.sigma_events).unwrap_or(usize::MAX).max(1);
    let events: Vec<Event> = (0..n)
        .map(|i| {
            let mut e = base[i % base.len()].clone();
            let ms = i64::try_from(i).unwrap_or(i64::MAX);
            e.time = EventTime::from_unix_millis(T0_SECS * 1000 + ms);
            e
        })
        .collect();
    println!("events: {n} from {} distinct lines of {} file(s), 1 ms apart", base.len(), args.sigma_input.len());

    // The same events and rule files for rsigma.
    let rsigma = match &args.rsigma {
        Some(bin) => {
            let rules_dir = dir.join("rsigma-rules");
            std::fs::create_dir_all(&rules_dir)?;
            for (i, f) in files.iter().enumerate() {
                let name = Path::new(f).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                std::fs::copy(f, rules_dir.join(format!("{i:04}-{name}"))).with_context(|| format!("copying {f}"))?;
            }
            let json = dir.join("events.ndjson");
            let mut out = BufWriter::new(std::fs::File::create(&json)?);
            for e in &events {
                serde_json::to_writer(&mut out, &sources.event_json(e))?;
                out.write_all(b"\n")?;
            }
            out.flush()?;
            Some((bin.clone(), rules_dir, json))
        }
        None => None,
    };

    let (mut pack_secs, mut sigma_secs, mut rsigma_secs) = (Vec::new(), Vec::new(), Vec::new());
    let (mut pack_hits, mut sigma_hits, mut rsigma_hits) = (0, 0, 0);
    for round in 1..=ROUNDS {
        let p = run_engine(&pack, &events);
        let s = run_engine(&sigma, &events);
        pack_secs.push(p.secs);
        sigma_secs.push(s.secs);
        (pack_hits, sigma_hits) = (p.hits, s.hits);
        let mut line =
            format!("round {round}: pack {:.0} ev/s, Sigma {:.0} ev/s", n as f64 / p.secs, n as f64 / s.secs);
        if let Some((bin, rules_dir, json)) = &rsigma {
            let (secs, hits) = run_rsigma(bin, rules_dir, json)?;
            rsigma_secs.push(secs);
            rsigma_hits = hits;
            line.push_str(&format!(", rsigma {:.0} ev/s", n as f64 / secs));
        }
        println!("{line}");
    }
    let (p, s) = (n as f64 / median(pack_secs), n as f64 / median(sigma_secs));
    println!("\n| engine | rules | events/s (median of {ROUNDS}) | rule hits | ratio |");
    println!("|---|---|---|---|---|");
    println!("| vigil, built-in pack (baseline) | {} | {p:.0} | {pack_hits} | 1.00 |", pack.len());
    println!("| vigil, Sigma rules | {compiled} | {s:.0} | {sigma_hits} | {:.2} |", s / p);
    if !rsigma_secs.is_empty() {
        let r = n as f64 / median(rsigma_secs);
        println!(
            "| rsigma (JSON lines, whole process) | {} files | {r:.0} | {rsigma_hits} | {:.2} |",
            files.len(),
            r / p
        );
        println!("\nvigil with the Sigma rules ÷ rsigma with the same rules: {:.2}", s / r);
    }
    Ok(())
}

/// Runs rsigma over the JSON events: seconds and matches printed.
fn run_rsigma(bin: &PathBuf, rules_dir: &Path, json: &Path) -> Result<(f64, u64)> {
    let start = Instant::now();
    let mut child = Command::new(bin)
        .args(["--no-stats", "-q", "--output-format", "ndjson", "engine", "eval", "-r"])
        .arg(rules_dir)
        .arg("-e")
        .arg(format!("@{}", json.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let mut stdout = child.stdout.take().context("rsigma's output")?;
    // One match per line of its output.
    let mut matches = 0;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = stdout.read(&mut buf)?;
        if n == 0 {
            break;
        }
        matches += memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
    }
    let out = child.wait_with_output()?;
    let secs = start.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("{} failed: {}", bin.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok((secs, matches))
}
