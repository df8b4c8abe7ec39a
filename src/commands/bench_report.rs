//! `vigil bench --report FILE.md`: what a capacity planner needs, measured
//! on the machine the bench runs on, from the same workload as the
//! end-to-end run: events per second per core for each stage (intake,
//! rules, storage), Parquet bytes per event against the raw lines, memory
//! per active correlation key and per 1,000 rules, the event→incident
//! latency of the run, and the cores and disk a given rate and retention
//! need.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use parsers::{DeviceParsers, Event, EventTime, OrgId, Parser};
use rules::{Engine, EngineConfig, RuleSet};

/// Lines of the workload the stage measurements use.
const STAGE_LINES: usize = 400_000;
/// The share of a core a stage is planned at: room for bursts, the API,
/// searches and compaction.
const PLANNED_LOAD: f64 = 0.6;
/// Rates the sizing table is for.
const RATES: [u64; 4] = [1_000, 10_000, 50_000, 100_000];
/// Retention the disk column is for, days (the default org retention).
const RETENTION_DAYS: u64 = 90;

/// What the end-to-end run measured, for the report.
pub(super) struct EndToEnd<'a> {
    pub(super) events: u64,
    pub(super) orgs: u32,
    pub(super) sustained_eps: f64,
    pub(super) syslog_ng_eps: Option<f64>,
    pub(super) latency_rate: u64,
    pub(super) lateness: f64,
    pub(super) paced: &'a super::bench::Figures,
    pub(super) saturated: &'a super::bench::Figures,
}

/// One stage's rate on one core.
struct Stage {
    name: &'static str,
    what: &'static str,
    eps: f64,
}

/// Time a stage took on the thread that ran it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Took {
    /// Seconds of CPU the thread used (wall seconds where the kernel does
    /// not say): time it waited, for an fsync or for a core another process
    /// held, is not in it.
    pub(super) cpu: f64,
    /// Seconds of wall time.
    pub(super) wall: f64,
}

/// Times what this thread does from [`Stopwatch::start`] to [`Stopwatch::took`].
struct Stopwatch {
    wall: Instant,
    cpu: Option<f64>,
}

impl Stopwatch {
    fn start() -> Stopwatch {
        Stopwatch { cpu: worker::priority::thread_cpu_seconds(), wall: Instant::now() }
    }

    fn took(&self) -> Took {
        let wall = self.wall.elapsed().as_secs_f64();
        let cpu = self.cpu.zip(worker::priority::thread_cpu_seconds()).map_or(wall, |(start, now)| now - start);
        Took { cpu, wall }
    }
}

/// Bytes the allocator (jemalloc) has handed out and not had back.
fn allocated() -> u64 {
    let _ = tikv_jemalloc_ctl::epoch::advance();
    tikv_jemalloc_ctl::stats::allocated::read().map_or(0, |b| b as u64)
}

/// The workload's first lines, parsed, classified and given their org the
/// way the intake does (org k's devices are 10.(k/256).(k%256).h).
fn intake(workload: &Path) -> Result<(Vec<Event>, u64, Took)> {
    let file = std::fs::File::open(workload).with_context(|| format!("cannot open {}", workload.display()))?;
    let lines: Vec<Vec<u8>> =
        BufReader::new(file).split(b'\n').take(STAGE_LINES).collect::<std::io::Result<_>>().context("workload")?;
    let raw: u64 = lines.iter().map(|l| l.len() as u64 + 1).sum();
    let lines: Vec<Bytes> = lines.into_iter().map(Bytes::from).collect();
    let parser = Parser::new();
    let devices = DeviceParsers::builtin().context("the built-in device parsers")?;
    let received = EventTime::from_unix(1_800_000_000, 0, 0);
    let start = Stopwatch::start();
    let mut events = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        let mut e = parser.parse(line.clone(), received);
        devices.classify(&mut e);
        let org = e.host.as_deref().and_then(org_of).unwrap_or(1);
        e.org_id = Some(OrgId(org));
        e.id = i as u64 + 1;
        events.push(e);
    }
    Ok((events, raw, start.took()))
}

/// The org of a workload device name `10.a.b.h`: `a * 256 + b`, as the
/// bench's org ranges say.
fn org_of(host: &str) -> Option<u32> {
    let mut parts = host.strip_prefix("10.")?.split('.');
    let a: u32 = parts.next()?.parse().ok()?;
    let b: u32 = parts.next()?.parse().ok()?;
    Some(a * 256 + b)
}

/// The engine over `events`, with `lateness`: the time it took, and the
/// engine, for its state and counters. `live`: the clock moves to each
/// 1,000th event's time, as the worker's ticks move it, and the state is
/// left as it stands; otherwise one flush at the end evaluates everything.
pub(super) fn correlate(set: &Arc<RuleSet>, events: &[Event], lateness: f64, live: bool) -> (Took, Engine) {
    // A file replayed: its stamps, however far behind the time it is read,
    // are the event times (as before `max_behind`), so the state measured
    // is that of the workload's real spacing.
    let config =
        EngineConfig { lateness: Duration::from_secs_f64(lateness), max_behind: None, ..EngineConfig::default() };
    let mut engine = Engine::new(Arc::clone(set), config);
    let mut out = Vec::new();
    let start = Stopwatch::start();
    for (i, e) in events.iter().enumerate() {
        engine.process(i as u64 + 1, e, &mut out);
        if live && i % 1_000 == 999 {
            engine.advance(e.time, &mut out);
        }
        if out.len() > 4096 {
            out.clear();
        }
    }
    if !live {
        engine.flush(&mut out);
    }
    (start.took(), engine)
}

/// Arrow columns and Parquet files of `events` (synced as the worker
/// does), on this thread: the time it took and the bytes written.
fn store(events: &[Event], dir: &Path) -> Result<(Took, u64)> {
    let config = worker::events::EventWriterConfig::new(dir.join("sizing"), "sizing");
    let mut writer = worker::events::EventWriter::open(config, EventTime::from_unix(1_800_000_000, 0, 0))?;
    let start = Stopwatch::start();
    let mut bytes = 0;
    for e in events {
        bytes += writer.append(e.id, e)?.bytes;
    }
    bytes += writer.flush()?.bytes;
    Ok((start.took(), bytes))
}

/// `n` threshold rules like the built-in SSH brute force, each on its own
/// event type, in vigil's rule format.
fn synthetic_rules(n: usize) -> String {
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&format!(
            "- id: sizing-{i}\n  name: Sizing rule {i}\n  severity: low\n  patterns:\n    hits:\n      filter:\n        \
             event_type: sizing.type{i}\n      group_by: [src_ip]\n      window: 60s\n      having: count >= 5\n  \
             title: \"sizing {i} from {{src_ip}}\"\n"
        ));
    }
    text
}

/// Memory that 1,000 compiled rules hold: the allocator's bytes in use
/// before and after compiling them (held).
fn rules_memory(dir: &Path) -> Result<u64> {
    let path = dir.join("sizing-rules");
    std::fs::create_dir_all(&path)?;
    std::fs::write(path.join("sizing.yaml"), synthetic_rules(1_000))?;
    let config =
        worker::node::RulesConfig { builtin: false, paths: vec![path], ..worker::node::RulesConfig::default() };
    let before = allocated();
    let (set, _) = config.compile().map_err(|d| anyhow::anyhow!("sizing rules: {} diagnostics", d.len()))?;
    let after = allocated();
    anyhow::ensure!(set.len() == 1_000, "{} of 1,000 sizing rules compiled", set.len());
    drop(set);
    Ok(after.saturating_sub(before))
}

/// Measures the stages and writes the report to `path`.
pub(super) fn write(path: &Path, dir: &Path, workload: &Path, e2e: &EndToEnd<'_>) -> Result<()> {
    println!("\n3. sizing report: stages one core at a time on {} lines of the workload", STAGE_LINES);
    let (mut events, raw_bytes, parse) = intake(workload)?;
    // The workload's lines carry one stamp (`vigil send --restamp` gives
    // them the sending time): here they are spaced at the end-to-end run's
    // sustained rate, so windows open and close as they did there.
    let step_ns = 1e9 / e2e.sustained_eps.max(1.0);
    for (i, e) in events.iter_mut().enumerate() {
        e.time = EventTime::from_unix_nanos(1_800_000_000_000_000_000 + (i as f64 * step_ns) as i128);
        e.received_at = e.time;
    }
    let n = events.len() as f64;
    let set = super::run::compile_rules(&super::run::RunConfig::default())?;
    // The state is read before a final flush would empty it.
    let (rules, engine) = correlate(&set, &events, e2e.lateness, true);
    let stats = engine.stats();
    // The windows' share: the reorder buffer is sized by the lateness, not
    // by the keys.
    let state_bytes = stats.state_bytes.saturating_sub(stats.buffer_bytes) as u64;
    let keys = (stats.window_keys + stats.join_keys) as u64;
    drop(engine);
    let (storage, parquet_bytes) = store(&events, dir)?;
    let rules_mem = rules_memory(dir)?;
    let stages = [
        Stage { name: "intake", what: "parse, classify (device patterns), org", eps: n / parse.cpu },
        Stage { name: "rules", what: "the built-in pack", eps: n / rules.cpu },
        Stage { name: "storage", what: "Arrow columns, Parquet (zstd), fsync", eps: n / storage.cpu },
    ];
    let cpu_per_event: f64 = stages.iter().map(|s| 1.0 / s.eps).sum();
    let parquet_per_event = parquet_bytes as f64 / n;
    let raw_per_event = raw_bytes as f64 / n;
    let per_key = if keys > 0 { state_bytes as f64 / keys as f64 } else { 0.0 };
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let host = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| t.lines().next().and_then(|l| l.split_whitespace().nth(1)).and_then(|k| k.parse::<f64>().ok()))
        .map_or(0.0, |kib| kib / (1024.0 * 1024.0));
    let today = jiff::Timestamp::now().strftime("%Y-%m-%d").to_string();

    let mut r = String::new();
    let mut line = |s: String| {
        r.push_str(&s);
        r.push('\n');
    };
    line("# vigil sizing report".into());
    line(String::new());
    line(format!(
        "Measured by `vigil bench --report` on {cores} cores ({host}), {mem_gib:.0} GiB RAM; vigil {}; {}.",
        env!("CARGO_PKG_VERSION"),
        today
    ));
    line(format!(
        "Workload: {} events from {} orgs' devices (sshd, firewall, application and CEF lines with SSH brute \
         forces), {raw_per_event:.0} bytes per line on average.",
        e2e.events, e2e.orgs
    ));
    line(String::new());
    line("## End to end: `vigil run` on this machine".into());
    line(String::new());
    line("| | value |".into());
    line("|---|---:|".into());
    line(format!(
        "| sustained EPS (parse, orgs, EPS gate, rules, Parquet, incidents; `vigil send` on the same cores) | {:.0} |",
        e2e.sustained_eps
    ));
    if let Some(ng) = e2e.syslog_ng_eps {
        line(format!(
            "| syslog-ng, TCP → file, same run | {ng:.0} (vigil ÷ syslog-ng {:.2}) |",
            e2e.sustained_eps / ng
        ));
    }
    for (load, f) in [(format!("at {} EPS", e2e.latency_rate), e2e.paced), ("saturated".to_owned(), e2e.saturated)] {
        line(format!(
            "| event→incident latency {load}, p50 / p90 / p99 (allowed lateness {} s included) | {} / {} / {} ms |",
            e2e.lateness, f.p50, f.p90, f.p99
        ));
        line(format!("| peak resident memory {load} | {:.0} MB |", f.peak_rss_mb));
    }
    line(String::new());
    line("## Each stage on one core".into());
    line(String::new());
    line(format!(
        "The same {} lines through each stage alone, on one thread, timed by the CPU the thread used: time it \
         waited (for a core another process held, or for storage's fsyncs) is not counted. Storage's wall time, \
         with its fsyncs, was {:.2} µs per event.",
        events.len(),
        storage.wall * 1e6 / n
    ));
    line(String::new());
    line("| stage | what | events/s per core | µs of CPU per event |".into());
    line("|---|---|---:|---:|".into());
    for s in &stages {
        line(format!("| {} | {} | {:.0} | {:.2} |", s.name, s.what, s.eps, 1e6 / s.eps));
    }
    line(format!(
        "| all three | one event through every stage | {:.0} | {:.2} |",
        1.0 / cpu_per_event,
        cpu_per_event * 1e6
    ));
    line(String::new());
    line(format!(
        "End to end the process needs more than the stages' sum ({:.1} µs per event at the sustained rate on \
         {cores} cores, against {:.1} µs): batching between threads, the EPS gate, the TCP listener, and \
         `vigil send` sharing the cores.",
        cores as f64 * 1e6 / e2e.sustained_eps,
        cpu_per_event * 1e6
    ));
    line(String::new());
    line("## Storage".into());
    line(String::new());
    line("| | per event |".into());
    line("|---|---:|".into());
    line(format!("| raw syslog line | {raw_per_event:.0} bytes |"));
    line(format!("| Parquet (all fields, zstd) | {parquet_per_event:.1} bytes |"));
    line(format!("| compression against raw | {:.1}× |", raw_per_event / parquet_per_event.max(0.001)));
    line(String::new());
    line("## Memory".into());
    line(String::new());
    line("| | |".into());
    line("|---|---:|".into());
    line(format!(
        "| rule window state per active correlation key ({keys} keys after the {} events) | {per_key:.0} bytes |",
        events.len()
    ));
    line(format!("| 1,000 compiled threshold rules (resident memory they add) | {:.1} MB |", rules_mem as f64 / 1e6));
    line(format!("| reorder buffer and window state, saturated run | {:.1} MB |", e2e.saturated.state_mb));
    line(String::new());
    line("## Cores and disk for a rate".into());
    line(String::new());
    line(format!(
        "Cores: CPU per event times the rate, planned at {:.0} % of each core (room for bursts, the API, \
         searches and compaction), and never fewer than 2; once from the stages' CPU (the floor), once from the \
         end-to-end run's cores per sustained EPS (conservative: it includes `vigil send` and this machine's noise). Disk: Parquet bytes per event times events per day; \
         {RETENTION_DAYS} days is the default org retention. Memory: 1 GB for the process, plus the rule state \
         (bytes per key times active keys; with the built-in pack most keys are source addresses seen in the last \
         minute).",
        PLANNED_LOAD * 100.0
    ));
    line(String::new());
    line(format!(
        "| EPS | cores (stages' CPU) | cores (end to end, this run) | disk per day | disk for {RETENTION_DAYS} days | raw logs per day |"
    ));
    line("|---:|---:|---:|---:|---:|---:|".into());
    let e2e_per_event = cores as f64 / e2e.sustained_eps;
    for eps in RATES {
        let need = |per_event: f64| ((eps as f64 * per_event) / PLANNED_LOAD).ceil().max(2.0);
        let per_day = eps as f64 * 86_400.0 * parquet_per_event;
        let raw_day = eps as f64 * 86_400.0 * raw_per_event;
        line(format!(
            "| {eps} | {:.0} | {:.0} | {:.1} GB | {:.0} GB | {:.1} GB |",
            need(cpu_per_event),
            need(e2e_per_event),
            per_day / 1e9,
            per_day * RETENTION_DAYS as f64 / 1e9,
            raw_day / 1e9
        ));
    }
    line(String::new());
    line(
        "In a cluster the stages split: collectors run the intake, workers the rules and storage (one partition \
         per org, so one org's rate is bounded by one worker core's rules + storage rate above), and NATS \
         JetStream keeps the stream (`vigil bench --cluster` measures its publish rate on the same batches)."
            .into(),
    );
    let mut file = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(r.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
    println!("   sizing report written to {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_is_timed_by_the_cpu_it_used_not_by_what_it_waited_for() {
        if worker::priority::thread_cpu_seconds().is_none() {
            eprintln!("skipped: no /proc/thread-self/schedstat");
            return;
        }
        let watch = Stopwatch::start();
        std::thread::sleep(Duration::from_millis(200));
        let slept = watch.took();
        assert!(slept.wall >= 0.2, "{slept:?}");
        assert!(slept.cpu < 0.1, "a sleeping thread used no core: {slept:?}");
        let watch = Stopwatch::start();
        let mut x = 0u64;
        while watch.wall.elapsed() < Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let busy = watch.took();
        assert!(busy.cpu > 0.0 && busy.cpu <= busy.wall + 0.01, "{busy:?}");
    }
}
