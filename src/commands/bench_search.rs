//! `vigil bench --search`: event search against DuckDB on the same files.
//!
//! It generates `--search-events` events of `--orgs` orgs spread over one
//! day (the pipeline benchmark's mix of sshd, firewall, application and
//! CEF lines, parsed and classified by the real parsers) and stores them
//! with the worker's writer the way flushes leave them: one file per org
//! every `--search-flush-secs` seconds of event time. It then runs a
//! needle query (one `src_ip` in one org's day) and a `count(*) GROUP BY
//! event_type` over one org's day with vigil's search and with DuckDB
//! (`benches/search_duckdb.py`, the same SQL on the same files, in the same
//! run), compacts with the worker's compactor, and runs both again.
//! Reports p50 and p99 of the timed runs and vigil ÷ DuckDB.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Instant, SystemTime};

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use parsers::{DeviceParsers, EventTime, OrgId, Parser, Str};
use serde_json::{Value, json};

use super::bench::BenchArgs;

/// The day the events fall in (2026-11-22, UTC).
const DAY_START_SECS: i64 = 1_795_305_600;
const DAY_NS: i64 = 86_400_000_000_000;
/// The org every query asks about.
const TARGET_ORG: u32 = 1;
/// Node name in the files' names.
const NODE: &str = "bench";

/// The DuckDB side, run with `python3 -c`.
const DUCKDB_SCRIPT: &str = include_str!("../../benches/search_duckdb.py");

/// A `Write` that hands each complete line to a function.
struct Lines<F: FnMut(&[u8]) -> Result<()>> {
    partial: Vec<u8>,
    each: F,
    failed: Option<anyhow::Error>,
}

impl<F: FnMut(&[u8]) -> Result<()>> Write for Lines<F> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.partial.extend_from_slice(buf);
        let mut start = 0;
        while let Some(n) = memchr::memchr(b'\n', &self.partial[start..]) {
            if let Err(e) = (self.each)(&self.partial[start..start + n]) {
                self.failed = Some(e);
                return Err(std::io::Error::other("line handler failed"));
            }
            start += n + 1;
        }
        self.partial.drain(..start);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What generating the layout produced.
struct Layout {
    files: u64,
    bytes: u64,
    secs: f64,
    /// An address that sent a handful of events of the target org.
    needle: String,
}

/// Generates the events and writes them as flushes would.
fn generate(args: &BenchArgs, data: &Path) -> Result<Layout> {
    let started = Instant::now();
    let events = args.search_events.max(1);
    let orgs = args.orgs.max(1);
    let parser = Parser::new();
    let devices = DeviceParsers::builtin().context("device parsers")?;
    let writer = worker::EventWriter::open(
        worker::EventWriterConfig::new(data, NODE),
        EventTime::from_unix(DAY_START_SECS + 86_400, 0, 0),
    )?;
    let (mut buffer, files, _) = writer.into_parts();
    let names: Vec<Str> = (0..=orgs).map(|k| Str::from(format!("org-{k}").as_str())).collect();
    let collector = Str::from("bench");
    let step = DAY_NS / i64::try_from(events).unwrap_or(i64::MAX);
    let window_ns = i64::try_from(args.search_flush_secs.max(1)).unwrap_or(60) * 1_000_000_000;
    let (mut written, mut bytes, mut index, mut window) = (0u64, 0u64, 0u64, 0i64);
    let mut needle: Option<String> = None;
    let mut write_out = |buffer: &mut worker::EventBuffer| -> Result<()> {
        let sealed = buffer.seal()?;
        // Most of a write is waiting for fsync: four at a time.
        let results: Vec<Result<worker::FlushReport, worker::WorkerError>> = std::thread::scope(|s| {
            let handles: Vec<_> = sealed
                .chunks(sealed.len().div_ceil(4).max(1))
                .map(|chunk| {
                    let files = &files;
                    s.spawn(move || {
                        let mut total = worker::FlushReport::default();
                        for one in chunk {
                            let r = files.write(one)?;
                            total.files += r.files;
                            total.bytes += r.bytes;
                        }
                        Ok(total)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or(Err(worker::WorkerError::WriterFailed))).collect()
        });
        for r in results {
            let r = r?;
            written += r.files as u64;
            bytes += r.bytes;
        }
        Ok(())
    };
    let mut sink = Lines {
        partial: Vec::new(),
        failed: None,
        each: |line: &[u8]| -> Result<()> {
            let offset = i64::try_from(index).unwrap_or(i64::MAX).saturating_mul(step);
            index += 1;
            if offset / window_ns != window {
                window = offset / window_ns;
                write_out(&mut buffer)?;
            }
            let time = EventTime::from_unix_nanos(i128::from(DAY_START_SECS) * 1_000_000_000 + i128::from(offset));
            let mut event = parser.parse(Bytes::copy_from_slice(line), time);
            devices.classify(&mut event);
            event.time = time;
            // The workload's devices are 10.(k/256).(k%256).h, k the org.
            let Some(std::net::IpAddr::V4(host)) = event.host.as_deref().and_then(|h| h.parse().ok()) else {
                bail!("a workload line without its device address: {}", String::from_utf8_lossy(line));
            };
            let [_, hi, lo, _] = host.octets();
            let org = u32::from(hi) << 8 | u32::from(lo);
            event.org_id = Some(OrgId(org));
            event.org = names.get(org as usize).cloned();
            event.reporter_ip = Some(std::net::IpAddr::V4(host));
            event.collector = Some(collector.clone());
            if org == TARGET_ORG
                && needle.is_none()
                // An attacker of the workload's brute forces (198.18.0.0/15):
                // six events.
                && let Some(src) = event.src_ip.filter(|ip| matches!(ip, std::net::IpAddr::V4(v4) if v4.octets()[..2] == [198, 18] || v4.octets()[..2] == [198, 19]))
            {
                needle = Some(src.to_string());
            }
            buffer.append(index, &event)?;
            Ok(())
        },
    };
    let outcome = super::bench::workload(&mut sink, events, orgs, 2_000);
    if let Some(e) = sink.failed.take() {
        return Err(e);
    }
    outcome?;
    drop(sink);
    write_out(&mut buffer)?;
    let needle = needle.context("no attack in the target org: raise --search-events")?;
    Ok(Layout { files: written, bytes, secs: started.elapsed().as_secs_f64(), needle })
}

/// Timings of one query on one engine.
struct Timed {
    ms: Vec<f64>,
    /// The rows, each value as text (null: None), for comparing answers.
    rows: Vec<Vec<Option<String>>>,
    stats: Option<search::Stats>,
}

impl Timed {
    fn percentile(&self, p: f64) -> f64 {
        let mut v = self.ms.clone();
        v.sort_by(f64::total_cmp);
        let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len().max(1));
        v.get(rank - 1).copied().unwrap_or(f64::NAN)
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// The queries, by name.
fn queries(needle: &str) -> Vec<(&'static str, String)> {
    vec![
        ("needle", format!("SELECT time, host, event_type, src_ip, message FROM events WHERE src_ip = '{needle}'")),
        ("group-by", "SELECT event_type, count(*) AS n FROM events GROUP BY event_type".to_owned()),
    ]
}

fn run_vigil(searcher: &search::Searcher, sql: &str, runs: usize) -> Result<Timed> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("runtime")?;
    let range = search::TimeRange::new(DAY_START_SECS * 1_000_000_000, (DAY_START_SECS + 86_400) * 1_000_000_000);
    let query = search::SqlQuery { sql: sql.to_owned(), range, limit: 10_000 };
    let mut ms = Vec::with_capacity(runs);
    let mut answer = runtime.block_on(searcher.sql(&[TARGET_ORG], &query))?;
    for _ in 0..runs {
        let started = Instant::now();
        answer = runtime.block_on(searcher.sql(&[TARGET_ORG], &query))?;
        ms.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let rows = answer.rows.iter().map(|r| r.iter().map(text).collect()).collect();
    Ok(Timed { ms, rows, stats: Some(answer.stats) })
}

/// The DuckDB side: `None` (with the reason printed) when Python or its
/// `duckdb` package is missing.
fn run_duckdb(args: &BenchArgs, root: &Path, needle: &str) -> Result<Option<(String, Vec<Timed>)>> {
    let python = args.python.clone().unwrap_or_else(|| PathBuf::from("python3"));
    let has_duckdb = Command::new(&python)
        .args(["-c", "import duckdb"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_duckdb {
        println!(
            "   DuckDB: not run ({} cannot import duckdb: pip install duckdb, or pass --python PATH)",
            python.display()
        );
        return Ok(None);
    }
    let glob = root.join(format!("org={TARGET_ORG}")).join("date=*").join("*.parquet");
    let job = json!({
        "globs": [glob.display().to_string()],
        "from": "2026-11-22T00:00:00Z",
        "to": "2026-11-23T00:00:00Z",
        "runs": args.search_runs.max(1),
        "queries": queries(needle).into_iter().map(|(name, sql)| json!({"name": name, "sql": sql})).collect::<Vec<_>>(),
    });
    let mut child = Command::new(&python)
        .args(["-c", DUCKDB_SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", python.display()))?;
    child.stdin.take().context("stdin")?.write_all(job.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("the DuckDB baseline failed ({})", out.status);
    }
    let answer: Value = serde_json::from_slice(&out.stdout).context("the DuckDB baseline's answer")?;
    let version = format!("DuckDB {} ({} threads)", answer["version"].as_str().unwrap_or("?"), answer["threads"]);
    let timed = answer["results"]
        .as_array()
        .context("results")?
        .iter()
        .map(|r| Timed {
            ms: r["ms"].as_array().map(|v| v.iter().filter_map(Value::as_f64).collect()).unwrap_or_default(),
            rows: r["rows"]
                .as_array()
                .map(|rows| {
                    rows.iter()
                        .map(|row| row.as_array().map(|v| v.iter().map(text).collect()).unwrap_or_default())
                        .collect()
                })
                .unwrap_or_default(),
            stats: None,
        })
        .collect();
    Ok(Some((version, timed)))
}

/// One layout's measurements: per query, vigil's and DuckDB's.
fn measure(args: &BenchArgs, root: &Path, needle: &str, layout: &str, out: &mut Vec<String>) -> Result<()> {
    let config =
        search::SearchConfig { time_limit: std::time::Duration::from_secs(600), ..search::SearchConfig::new(root) };
    let searcher = search::Searcher::new(config)?;
    let runs = args.search_runs.max(1);
    let mut ours = Vec::new();
    for (_, sql) in queries(needle) {
        ours.push(run_vigil(&searcher, &sql, runs)?);
    }
    let theirs = run_duckdb(args, root, needle)?;
    if let Some((version, _)) = &theirs {
        println!("   baseline: {version}");
    }
    for (i, (name, _)) in queries(needle).into_iter().enumerate() {
        let v = &ours[i];
        let s = v.stats.clone().unwrap_or_default();
        let (d50, d99, same) = match &theirs {
            Some((_, t)) => {
                let d = &t[i];
                let mut a = v.rows.clone();
                let mut b = d.rows.clone();
                a.sort();
                b.sort();
                // The needle's rows hold times, whose text differs by
                // engine: compare their number; the group-by's exactly.
                let same = if name == "needle" { a.len() == b.len() } else { a == b };
                (Some(d.percentile(0.5)), Some(d.percentile(0.99)), Some(same))
            }
            None => (None, None, None),
        };
        let fmt = |x: Option<f64>| x.map_or("–".to_owned(), |x| format!("{x:.1} ms"));
        let ratio = |a: f64, b: Option<f64>| b.map_or("–".to_owned(), |b| format!("{:.2}", a / b));
        let (p50, p99) = (v.percentile(0.5), v.percentile(0.99));
        if same == Some(false) {
            bail!(
                "{name} ({layout}): vigil and DuckDB disagree: {:?} vs {:?}",
                v.rows,
                theirs.map(|t| t.1[i].rows.clone())
            );
        }
        out.push(format!(
            "| {name} | {layout} | {} of {} | {} of {} | {} | {:.1} MB | {p50:.1} ms | {p99:.1} ms | {} | {} | {} | {} |",
            s.files - s.files_pruned,
            s.files,
            s.row_groups - s.row_groups_pruned,
            s.row_groups,
            s.rows_scanned,
            s.bytes_read as f64 / 1e6,
            fmt(d50),
            fmt(d99),
            ratio(p50, d50),
            ratio(p99, d99),
        ));
    }
    Ok(())
}

/// Runs `vigil bench --search` in `dir`.
pub(super) fn run(args: &BenchArgs, dir: &Path) -> Result<()> {
    let data = dir.join("search");
    let root = data.join("events");
    if root.exists() {
        std::fs::remove_dir_all(&root).with_context(|| format!("cannot clear {}", root.display()))?;
    }
    println!(
        "search: {} events of {} orgs over 2026-11-22, one file per org per {} s of event time; {}",
        args.search_events,
        args.orgs,
        args.search_flush_secs,
        root.display()
    );
    let layout = generate(args, &data)?;
    println!(
        "   written in {:.1} s: {} files, {:.1} MB ({:.0} events/s); needle src_ip {} in org {TARGET_ORG}",
        layout.secs,
        layout.files,
        layout.bytes as f64 / 1e6,
        args.search_events as f64 / layout.secs,
        layout.needle
    );
    let mut rows = Vec::new();
    println!("\n1. as flushed ({} runs of each query after one untimed)", args.search_runs);
    measure(args, &root, &layout.needle, "as flushed", &mut rows)?;

    println!("\n2. compaction (the worker's compactor, one thread)");
    let compactor = worker::compact::Compactor::new(worker::compact::CompactConfig {
        min_age: std::time::Duration::ZERO,
        grace: std::time::Duration::ZERO,
        ..worker::compact::CompactConfig::new(&root, NODE)
    })?;
    let started = Instant::now();
    let merged = compactor.run(SystemTime::now())?;
    let secs = started.elapsed().as_secs_f64();
    // The grace is zero: the next pass deletes the inputs.
    let deleted = compactor.run(SystemTime::now())?.deleted;
    println!(
        "   {} files ({:.1} MB) into {} ({:.1} MB) in {secs:.1} s: {:.0} rows/s; {deleted} inputs deleted",
        merged.inputs,
        merged.bytes_in as f64 / 1e6,
        merged.outputs,
        merged.bytes_out as f64 / 1e6,
        merged.rows as f64 / secs,
    );
    println!("\n3. compacted");
    measure(args, &root, &layout.needle, "compacted", &mut rows)?;

    println!();
    println!(
        "| query | layout | files read | row groups read | rows scanned | bytes read | vigil p50 | vigil p99 | DuckDB p50 | DuckDB p99 | ÷ p50 | ÷ p99 |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!("{r}");
    }
    Ok(())
}
