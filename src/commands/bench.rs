//! `vigil bench`: the end-to-end benchmark. It writes a workload (a mix of
//! sshd, firewall, application and CEF lines from many orgs' devices,
//! with SSH brute-force attacks at known places), starts the real
//! `vigil run` on loopback ports with a throw-away data directory, creates
//! the orgs through the API, replays the workload over TCP with
//! `vigil send --restamp`, and reads `/metrics` until every event is in
//! Parquet and every attack is an incident. It reports the sustained EPS,
//! the event→incident latency percentiles, and, when `syslog-ng` is
//! installed, the EPS of syslog-ng receiving the same file over TCP into a
//! file, measured in the same run.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;

/// Arguments of `vigil bench`.
#[derive(Args)]
pub struct BenchArgs {
    /// Licence for the run (the unlicensed allowance is far below a benchmark's rate).
    /// (Required, except with --search and --sigma.)
    #[arg(long, alias = "licence", value_name = "FILE", required_unless_present_any = ["search", "sigma", "notify"])]
    pub(super) license: Option<PathBuf>,
    /// Events in the workload.
    #[arg(long, default_value_t = 2_000_000)]
    pub(super) events: u64,
    /// Orgs the events come from (each with its own /24 of devices).
    #[arg(long, default_value_t = 100)]
    pub(super) orgs: u32,
    /// One SSH brute-force attack (6 failed logins from one new address) per this many lines.
    #[arg(long, default_value_t = 2_000)]
    pub(super) attack_every: u64,
    /// The rule engine's allowed lateness for the run, seconds: every
    /// incident waits this long for out-of-order events, so it is part of
    /// the latency. Below 1 s, RFC 3164 lines (whole seconds) mixed with
    /// sub-second RFC 5424 lines in one org arrive late and are not
    /// correlated.
    #[arg(long, default_value_t = 1.0)]
    pub(super) lateness: f64,
    /// vigil run's worker shards (`[worker] shards`; default: vigil run's
    /// default), to compare shard counts on one workload.
    #[arg(long, value_name = "N")]
    pub(super) shards: Option<usize>,
    /// vigil run's `storage.nice` (nice steps the storage threads run below
    /// the rules; default: vigil run's default), to compare on one workload.
    #[arg(long, value_name = "STEPS")]
    pub(super) storage_nice: Option<u8>,
    /// Rate of the latency run, EPS (default: 70 % of the sustained EPS just measured).
    #[arg(long, value_name = "EPS")]
    pub(super) latency_rate: Option<u64>,
    /// Seconds of traffic in the latency run.
    #[arg(long, default_value_t = 20)]
    pub(super) latency_secs: u64,
    /// Work directory (default: a new one under the system temp directory).
    #[arg(long, value_name = "DIR")]
    pub(super) dir: Option<PathBuf>,
    /// syslog-ng to compare with (default: `syslog-ng` if on PATH).
    #[arg(long, value_name = "PATH")]
    pub(super) syslog_ng: Option<PathBuf>,
    /// Do not run syslog-ng.
    #[arg(long)]
    pub(super) no_syslog_ng: bool,
    /// Keep the work directory (workload, data, syslog-ng output).
    #[arg(long)]
    pub(super) keep: bool,
    /// After the throughput run, keep vigil running this many seconds
    /// with no load and report its resident memory every 30 s (does memory
    /// come back after the load?).
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    pub(super) memory_after: u64,
    /// Also run the cluster on this machine (nats-server, supervisor, one
    /// collector, two workers) on the same workload, with JetStream's own
    /// publish rate of the same batches as the transport baseline.
    #[arg(long)]
    pub(super) cluster: bool,
    /// nats-server for --cluster (default: `nats-server` on PATH; 2.11 or newer).
    #[arg(long, value_name = "PATH")]
    pub(super) nats_server: Option<PathBuf>,
    /// Instead of the pipeline: the event-search benchmark. Generates
    /// --search-events events of --orgs orgs over one day as Parquet the
    /// way flushes leave it, runs a needle query and a group-by over one
    /// org's day --search-runs times with vigil's search and with DuckDB
    /// (the baseline, same SQL, same files, same run), compacts, and runs
    /// them again.
    #[arg(long)]
    pub(super) search: bool,
    /// Events in the search benchmark.
    #[arg(long, default_value_t = 10_000_000)]
    pub(super) search_events: u64,
    /// Seconds between the simulated flushes of the search benchmark's
    /// uncompacted layout: one file per org per this many seconds.
    #[arg(long, default_value_t = 60)]
    pub(super) search_flush_secs: u64,
    /// Timed runs of each query.
    #[arg(long, default_value_t = 20)]
    pub(super) search_runs: usize,
    /// Python with the `duckdb` package, for the baseline (default: python3).
    #[arg(long, value_name = "PATH")]
    pub(super) python: Option<PathBuf>,
    /// Instead of the pipeline: the Sigma benchmark. Compiles the Sigma
    /// rules under DIR and runs the correlation engine over the
    /// --sigma-input lines with them and with the built-in pack (the
    /// baseline), in the same run; with --rsigma, rsigma too.
    #[arg(long, value_name = "DIR")]
    pub(super) sigma: Option<PathBuf>,
    /// Log files whose lines the Sigma benchmark cycles through (repeat
    /// the flag for several).
    #[arg(long, value_name = "FILE")]
    pub(super) sigma_input: Vec<PathBuf>,
    /// Events in the Sigma benchmark.
    #[arg(long, default_value_t = 500_000)]
    pub(super) sigma_events: u64,
    /// Log-source mappings for the Sigma benchmark (default: built in).
    #[arg(long, value_name = "FILE")]
    pub(super) sigma_mappings: Option<PathBuf>,
    /// rsigma to compare with in the Sigma benchmark (`rsigma engine eval`
    /// on the same events as JSON lines and the same rule files).
    #[arg(long, value_name = "PATH")]
    pub(super) rsigma: Option<PathBuf>,
    /// Instead of the pipeline: the notification benchmark: the ingest
    /// path with a policy off and on, and the dispatcher's deliveries per
    /// second and latency to a webhook receiver on loopback.
    #[arg(long)]
    pub(super) notify: bool,
    /// Incidents per round of the notification benchmark.
    #[arg(long, default_value_t = 10_000)]
    pub(super) notify_incidents: u64,
    /// Also write a sizing report for capacity planners to FILE (Markdown):
    /// events per second per core for each stage, Parquet bytes per event,
    /// memory per correlation key and per 1,000 rules, the latency of this
    /// run, and cores and disk for 1k to 100k EPS (docs/sizing.md).
    #[arg(long, value_name = "FILE.md")]
    pub(super) report: Option<PathBuf>,
}

impl BenchArgs {
    /// vigil run's `storage.nice` for the run.
    fn storage_nice(&self) -> u8 {
        self.storage_nice.unwrap_or_else(|| worker::node::StorageConfig::default().nice)
    }

    /// vigil run's worker shards for the run.
    fn shards(&self) -> usize {
        self.shards.unwrap_or_else(|| worker::shards::ShardConfig::default().shards)
    }

    /// The licence file's full path (clap requires it unless --search).
    pub(super) fn license(&self) -> Result<PathBuf> {
        let path = self.license.as_deref().context("--license FILE is required")?;
        path.canonicalize().with_context(|| format!("cannot read {}", path.display()))
    }
}

/// What one receiver did with the workload.
pub(super) struct Outcome {
    /// Seconds from the start of sending until everything was stored.
    pub(super) secs: f64,
    /// Seconds `vigil send` took to hand everything to the socket.
    pub(super) send_secs: f64,
}

/// Runs `vigil bench`.
pub fn run(args: BenchArgs) -> Result<ExitCode> {
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("vigil-bench-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    if args.search || args.sigma.is_some() || args.notify {
        let result = if args.search {
            super::bench_search::run(&args, &dir)
        } else if args.notify {
            super::bench_notify::run(&args, &dir)
        } else {
            super::bench_sigma::run(&args, &dir)
        };
        if !args.keep {
            let _ = std::fs::remove_dir_all(&dir);
        }
        return result.map(|()| ExitCode::SUCCESS);
    }
    let exe = std::env::current_exe().context("cannot find the vigil executable")?;
    let workload = dir.join("workload.log");
    let attack_starts = write_workload(&workload, args.events, args.orgs.max(1), args.attack_every.max(7))?;
    let attacks = attack_starts.len() as u64;
    let bytes = std::fs::metadata(&workload).map(|m| m.len()).unwrap_or(0);
    println!(
        "workload: {} events ({:.0} MB), {} orgs, {attacks} SSH brute-force attacks; {}",
        args.events,
        bytes as f64 / 1e6,
        args.orgs,
        workload.display()
    );

    let baseline = split_lines(&workload)?;
    println!(
        "\n1. throughput: vigil send as fast as vigil run takes it ({} worker shards, storage {} nice steps below the rules)",
        args.shards(),
        args.storage_nice()
    );
    let vigil = bench_vigil(&args, &exe, &dir, &workload, Load { events: args.events, rate: None, attacks })?;
    let sustained = args.events as f64 / vigil.0.secs;
    println!("   all {} events stored after {:.2} s: {sustained:.0} EPS", args.events, vigil.0.secs);
    let rate = args.latency_rate.unwrap_or((sustained * 0.7) as u64).max(1);
    let events = (rate * args.latency_secs).min(args.events);
    let attacks_in = attack_starts.iter().filter(|&&start| start + 6 <= events).count() as u64;
    println!("\n2. latency: {events} events at {rate} EPS");
    let paced = bench_vigil(&args, &exe, &dir, &workload, Load { events, rate: Some(rate), attacks: attacks_in })?;
    println!("   all stored after {:.2} s", paced.0.secs);
    let syslog_ng = match (args.no_syslog_ng, args.syslog_ng.clone().or_else(|| which("syslog-ng"))) {
        (false, Some(ng)) => Some(bench_syslog_ng(&ng, &exe, &dir, &workload, args.events)?),
        _ => {
            println!("syslog-ng: not run (install it, e.g. apt-get install syslog-ng-core, or pass --syslog-ng PATH)");
            None
        }
    };

    let eps = |o: &Outcome| args.events as f64 / o.secs;
    println!();
    println!("| receiver | sustained EPS | all stored after | vigil send done after |");
    println!("|---|---:|---:|---:|");
    println!(
        "| vigil run (parse, orgs, EPS gate, Parquet, rules, incidents) | {:.0} | {:.2} s | {:.2} s |",
        eps(&vigil.0),
        vigil.0.secs,
        vigil.0.send_secs
    );
    if let Some(ng) = &syslog_ng {
        println!(
            "| syslog-ng (TCP → file, flow control) | {:.0} | {:.2} s | {:.2} s |",
            eps(ng),
            ng.secs,
            ng.send_secs
        );
    }
    println!(
        "| baseline: memchr line split of the file, one core | {:.0} | {baseline:.3} s | |",
        args.events as f64 / baseline
    );
    if let Some(ng) = &syslog_ng {
        println!("\nvigil ÷ syslog-ng: {:.2}", eps(&vigil.0) / eps(ng));
    }
    println!("vigil ÷ line split: {:.4}", eps(&vigil.0) * baseline / args.events as f64);
    println!("\nevent→incident latency (allowed lateness {} s included):", args.lateness);
    println!(
        "| load | incidents (of attacks) | p50 | p90 | p99 | max | worker's part p50 / p90 / p99 | queued before the \
         engine p50 / p99 | drops | late events | peak RSS |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (load, f, expected) in
        [(format!("{rate} EPS"), &paced.1, attacks_in), ("saturated (run 1)".to_owned(), &vigil.1, attacks)]
    {
        let [d50, d90, d99, q50, q99] = f.detection.unwrap_or_default();
        println!(
            "| {load} | {} ({expected}) | {} ms | {} ms | {} ms | {} ms | {d50} / {d90} / {d99} ms | {q50} / {q99} ms \
             | {} | {} | {:.0} MB |",
            f.incidents, f.p50, f.p90, f.p99, f.max, f.dropped, f.late, f.peak_rss_mb
        );
    }
    println!(
        "(the worker's part: from receiving the event to the rule engine handing the hit over, the lateness \
         included; the rest is the record store's. Queued before the engine: from receiving an event to the \
         worker taking it, for the first event of each batch.)"
    );
    if let Some(path) = &args.report {
        let e2e = super::bench_report::EndToEnd {
            events: args.events,
            orgs: args.orgs.max(1),
            sustained_eps: eps(&vigil.0),
            syslog_ng_eps: syslog_ng.as_ref().map(eps),
            latency_rate: rate,
            lateness: args.lateness,
            paced: &paced.1,
            saturated: &vigil.1,
        };
        super::bench_report::write(path, &dir, &workload, &e2e)?;
    }
    if args.cluster {
        let ctx = super::bench_cluster::Context { args: &args, exe: &exe, dir: &dir, workload: &workload };
        super::bench_cluster::run(&ctx, attacks, &attack_starts, eps(&vigil.0), &vigil.1)?;
    }
    if !args.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(ExitCode::SUCCESS)
}

/// What a run sends.
pub(super) struct Load {
    /// Lines from the start of the workload.
    pub(super) events: u64,
    /// Lines per second (`None`: as fast as vigil takes them).
    pub(super) rate: Option<u64>,
    /// Attacks in those lines.
    pub(super) attacks: u64,
}

/// Latency and correctness figures read from `/metrics` after the run.
pub(super) struct Figures {
    pub(super) p50: u64,
    pub(super) p90: u64,
    pub(super) p99: u64,
    pub(super) max: u64,
    /// The worker's part, event→detection, p50 / p90 / p99 ms, and of it
    /// the queueing before the engine, event→worker, p50 / p99 ms (`vigil
    /// run` only: one worker).
    pub(super) detection: Option<[u64; 5]>,
    pub(super) dropped: u64,
    pub(super) late: u64,
    pub(super) incidents: u64,
    /// Largest resident memory of vigil run, MB.
    pub(super) peak_rss_mb: f64,
    /// The rule engine's state at the end, MB.
    pub(super) state_mb: f64,
}

/// A small deterministic generator (xorshift64*).
pub(super) struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A random public-looking IPv4 address.
    fn ip(&mut self) -> String {
        format!("{}.{}.{}.{}", 1 + self.below(223), self.below(256), self.below(256), 1 + self.below(254))
    }
}

/// The device address `h` of org `k` (org k owns 10.(k/256).(k%256).0/24).
fn device(k: u32, h: u64) -> String {
    format!("10.{}.{}.{}", k >> 8, k & 255, h)
}

pub(super) fn org_range(k: u32) -> String {
    format!("10.{}.{}.0/24", k >> 8, k & 255)
}

/// Writes `events` lines; returns the line numbers where attacks start. Every
/// attack is six failed passwords for root from a fresh address, which the
/// built-in `ssh-brute-force` rule (5 in 60 s) turns into one incident.
/// Background failures come from random addresses that never repeat
/// enough to trigger anything.
fn write_workload(path: &Path, events: u64, orgs: u32, attack_every: u64) -> Result<Vec<u64>> {
    let mut out = BufWriter::with_capacity(
        1 << 20,
        File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
    );
    let starts = workload(&mut out, events, orgs, attack_every)?;
    out.flush().with_context(|| format!("cannot write {}", path.display()))?;
    Ok(starts)
}

/// The workload's lines into `out` (see [`write_workload`]). The device
/// of org k sends from, and names itself, 10.(k/256).(k%256).h.
pub(super) fn workload(out: &mut impl Write, events: u64, orgs: u32, attack_every: u64) -> Result<Vec<u64>> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut written, mut attacks) = (0u64, 0u64);
    let mut starts = Vec::new();
    let users = ["root", "admin", "oracle", "test", "ubuntu", "deploy", "git", "postgres"];
    while written < events {
        let org = 1 + (rng.below(u64::from(orgs)) as u32);
        let host = device(org, 1 + rng.below(250));
        if written > 0 && written % attack_every == 0 && events - written >= 6 {
            attacks += 1;
            starts.push(written);
            let attacker = format!("198.{}.{}.{}", 18 + (attacks >> 16) % 2, (attacks >> 8) & 255, attacks & 255);
            for i in 0..6 {
                writeln!(
                    out,
                    "<38>Nov 22 10:00:00 {host} sshd[{}]: Failed password for root from {attacker} port {} ssh2",
                    2000 + attacks % 30000,
                    40_000 + i
                )?;
            }
            written += 6;
            continue;
        }
        match rng.below(100) {
            0..35 => {
                let src = rng.ip();
                writeln!(
                    out,
                    "<38>Nov 22 10:00:00 {host} sshd[{}]: Failed password for invalid user {} from {src} port {} ssh2",
                    1000 + rng.below(60000),
                    users[rng.below(users.len() as u64) as usize],
                    1024 + rng.below(60000)
                )?;
            }
            35..50 => writeln!(
                out,
                "<38>Nov 22 10:00:00 {host} sshd[{}]: Accepted publickey for deploy from {} port {} ssh2: ED25519 SHA256:Zm9vYmFyYmF6cXV4",
                1000 + rng.below(60000),
                device(org, 200),
                1024 + rng.below(60000)
            )?,
            50..75 => {
                let src = rng.ip();
                writeln!(
                    out,
                    "<4>Nov 22 10:00:00 {host} kernel: [{}.{:06}] [UFW BLOCK] IN=eth0 OUT= MAC=00:16:3e:5a:11:02:00:16:3e:9c:44:01:08:00 SRC={src} DST={host} LEN=60 TOS=0x00 PREC=0x00 TTL=51 ID={} DF PROTO=TCP SPT={} DPT={} WINDOW=29200 RES=0x00 SYN URGP=0",
                    rng.below(9_000_000),
                    rng.below(1_000_000),
                    rng.below(65536),
                    1024 + rng.below(60000),
                    [22, 23, 80, 443, 3389, 445, 8080][rng.below(7) as usize]
                )?;
            }
            75..95 => writeln!(
                out,
                "<134>1 2026-11-22T10:00:00.000Z {host} billing {} REQ [req@32473 id=\"{}\" ms=\"{}\"] GET /api/invoices/{} 200",
                1000 + rng.below(9000),
                rng.next() & 0xffff_ffff,
                rng.below(900),
                rng.below(1_000_000)
            )?,
            _ => writeln!(
                out,
                "<134>Nov 22 10:00:00 {host} CEF:0|Acme|WAF|4.2|1003|SQL injection attempt|7|src={} dst={host} spt={} dpt=443 request=/login.php act=blocked",
                rng.ip(),
                1024 + rng.below(60000)
            )?,
        }
        written += 1;
    }
    Ok(starts)
}

/// Same-run baseline: seconds to split the file into lines with memchr.
fn split_lines(path: &Path) -> Result<f64> {
    let mut file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    let started = Instant::now();
    let mut lines = 0u64;
    loop {
        let n = file.read(&mut buf).with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        lines += memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
    }
    std::hint::black_box(lines);
    Ok(started.elapsed().as_secs_f64())
}

pub(super) fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A child process stopped (SIGTERM, then kill) when dropped.
pub(super) struct Guard(pub(super) Child);

impl Drop for Guard {
    fn drop(&mut self) {
        terminate(&mut self.0);
    }
}

pub(super) fn terminate(child: &mut Child) {
    if matches!(child.try_wait(), Ok(None)) {
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// `vigil send --restamp --quiet` of the workload to `to`, started now.
pub(super) fn start_send(exe: &Path, to: &str, workload: &Path, load: &Load) -> Result<Child> {
    let mut cmd = Command::new(exe);
    cmd.args(["send", "--restamp", "--quiet", "--to", to, "--limit", &load.events.to_string()]);
    if let Some(rate) = load.rate {
        cmd.args(["--rate", &rate.to_string()]);
    }
    cmd.arg(workload).stdout(Stdio::null()).spawn().context("cannot start vigil send")
}

/// Waits for `done`, polling every 20 ms, noting when `sender` exits.
/// Returns (seconds until done, seconds until the sender exited).
pub(super) fn measure(started: Instant, sender: &mut Child, mut done: impl FnMut() -> Result<bool>) -> Result<Outcome> {
    let mut send_secs = None;
    let deadline = started + Duration::from_secs(1800);
    loop {
        if send_secs.is_none()
            && let Some(status) = sender.try_wait()?
        {
            if !status.success() {
                bail!("vigil send failed: {status}");
            }
            send_secs = Some(started.elapsed().as_secs_f64());
        }
        if done()? {
            let secs = started.elapsed().as_secs_f64();
            let send_secs = match send_secs {
                Some(s) => s,
                None => {
                    let status = sender.wait()?;
                    if !status.success() {
                        bail!("vigil send failed: {status}");
                    }
                    started.elapsed().as_secs_f64()
                }
            };
            return Ok(Outcome { secs, send_secs });
        }
        if Instant::now() > deadline {
            bail!("not done within 30 minutes");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn bench_vigil(args: &BenchArgs, exe: &Path, dir: &Path, workload: &Path, load: Load) -> Result<(Outcome, Figures)> {
    let data = dir.join("vigil-data");
    let _ = std::fs::remove_dir_all(&data);
    let config = dir.join("vigil.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {data:?}\nlicense = {:?}\n[syslog]\naddr = \"127.0.0.1:0\"\nudp = false\n[api]\naddr = \"127.0.0.1:0\"\n[metrics]\naddr = \"127.0.0.1:0\"\n\
             [rules]\nlateness_secs = {}\n[orgs]\nrefresh_secs = 0.2\n[worker]\nshards = {}\n[storage]\nnice = {}\n",
            args.license()?,
            args.lateness,
            args.shards(),
            args.storage_nice(),
        ),
    )?;
    let token = format!("vgl_bench_{:016x}", Rng(u64::from(std::process::id()) | 1).next());
    let mut child = Command::new(exe)
        .args(["run", "--config"])
        .arg(&config)
        .env("VIGIL_ADMIN_TOKEN", &token)
        .env_remove("VIGIL_DATABASE")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start vigil run")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut child = Guard(child);
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        // Our own child's few status lines.
        #[allow(clippy::disallowed_methods)]
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (mut tcp, mut base, mut metrics_url) = (None, None, None);
    while tcp.is_none() || base.is_none() || metrics_url.is_none() {
        let line = lines.recv_timeout(Duration::from_secs(120)).context("vigil run did not start")?;
        if line.starts_with("licence:") {
            println!("vigil run {line}");
        }
        if let Some(rest) = line.strip_prefix("syslog: ") {
            tcp = rest.split_whitespace().find(|a| a.starts_with("tcp://")).map(str::to_owned);
        }
        if let Some(rest) = line.strip_prefix("api: ") {
            base = rest.split_whitespace().next().and_then(|a| a.strip_suffix("/api/v1")).map(str::to_owned);
        }
        if let Some(rest) = line.strip_prefix("metrics: ") {
            metrics_url = rest.split_whitespace().next().map(str::to_owned);
        }
    }
    let (tcp, base, metrics_url) = (tcp.unwrap_or_default(), base.unwrap_or_default(), metrics_url.unwrap_or_default());
    let http: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(30))).build().into();
    for k in 1..=args.orgs {
        http.post(format!("{base}/api/v1/orgs"))
            .header("Authorization", format!("Bearer {token}"))
            .send_json(serde_json::json!({ "name": format!("org-{k:03}"), "ip_ranges": [org_range(k)] }))
            .with_context(|| format!("cannot create org {k}"))?;
    }
    let metrics = || -> Result<String> {
        Ok(http.get(&metrics_url).call().context("GET /metrics")?.body_mut().read_to_string()?)
    };
    // Super/Local and Super/Global are in the table too.
    let wanted = u64::from(args.orgs) + 2;
    let deadline = Instant::now() + Duration::from_secs(60);
    while sum(&metrics()?, "vigil_orgs", "") < wanted as f64 {
        if Instant::now() > deadline {
            bail!("vigil run did not load the orgs");
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    let started = Instant::now();
    let mut sender = Guard(start_send(exe, &tcp, workload, &load)?);
    let outcome = measure(started, &mut sender.0, || {
        let m = metrics()?;
        Ok(sum(&m, "vigil_events_stored_total", "") + sum(&m, "vigil_events_dropped_total", "") >= load.events as f64)
    })?;
    let attacks = load.attacks;
    // Incidents wait out the allowed lateness before the engine releases them.
    let deadline = Instant::now() + Duration::from_secs_f64(args.lateness + 60.0);
    let mut m = metrics()?;
    while sum(&m, "vigil_incidents_created_total", "") < attacks as f64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        m = metrics()?;
    }
    let q = |name: &str, quantile: &str| (max(&m, name, &format!("quantile=\"{quantile}\"")) * 1000.0).round() as u64;
    let incident = |quantile: &str| q("vigil_event_to_incident_seconds", quantile);
    let detection = |quantile: &str| q("vigil_event_to_detection_seconds", quantile);
    let queued = |quantile: &str| q("vigil_event_to_worker_seconds", quantile);
    let figures = Figures {
        p50: incident("0.5"),
        p90: incident("0.9"),
        p99: incident("0.99"),
        max: incident("1"),
        detection: Some([detection("0.5"), detection("0.9"), detection("0.99"), queued("0.5"), queued("0.99")]),
        dropped: sum(&m, "vigil_events_dropped_total", "") as u64
            + sum(&m, "vigil_syslog_udp_dropped_total", "") as u64,
        incidents: sum(&m, "vigil_incidents_created_total", "") as u64,
        late: sum(&m, "vigil_rule_late_events", "") as u64,
        peak_rss_mb: sum(&m, "vigil_process_resident_memory_peak_bytes", "") / 1e6,
        state_mb: sum(&m, "vigil_rule_state_bytes", "") / 1e6,
    };
    if load.rate.is_none() && args.memory_after > 0 {
        println!(
            "   memory: peak RSS {:.0} MB; rule state {:.0} MB; now RSS {:.0} MB",
            figures.peak_rss_mb,
            figures.state_mb,
            sum(&m, "vigil_process_resident_memory_bytes", "") / 1e6
        );
        let idle_from = Instant::now();
        while idle_from.elapsed() < Duration::from_secs(args.memory_after) {
            std::thread::sleep(Duration::from_secs(30).min(Duration::from_secs(args.memory_after)));
            let m = metrics()?;
            println!(
                "   {:>4.0} s after the load: RSS {:.0} MB, rule state {:.0} MB",
                idle_from.elapsed().as_secs_f64(),
                sum(&m, "vigil_process_resident_memory_bytes", "") / 1e6,
                sum(&m, "vigil_rule_state_bytes", "") / 1e6
            );
        }
    }
    terminate(&mut child.0);
    Ok((outcome, figures))
}

/// The sum of the samples of metric `name` whose labels contain `with`.
pub(super) fn sum(metrics: &str, name: &str, with: &str) -> f64 {
    samples(metrics, name, with).sum()
}

/// The largest sample of metric `name` whose labels contain `with` (a
/// quantile of several worker shards: the slowest shard's), 0 if none.
fn max(metrics: &str, name: &str, with: &str) -> f64 {
    samples(metrics, name, with).fold(0.0, f64::max)
}

fn samples<'a>(metrics: &'a str, name: &'a str, with: &'a str) -> impl Iterator<Item = f64> + 'a {
    metrics
        .lines()
        .filter(move |l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{')))
        .filter(move |l| l.contains(with))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
}

fn bench_syslog_ng(ng: &Path, exe: &Path, dir: &Path, workload: &Path, events: u64) -> Result<Outcome> {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
        probe.local_addr()?.port()
    };
    let out = dir.join("syslog-ng.out");
    let _ = std::fs::remove_file(&out);
    let config = dir.join("syslog-ng.conf");
    std::fs::write(
        &config,
        format!(
            "@version: 3.38\n\
             options {{ keep-hostname(yes); chain-hostnames(no); use-dns(no); stats-freq(0); }};\n\
             source s_bench {{ network(ip(\"127.0.0.1\") port({port}) transport(\"tcp\") log-iw-size(100000) max-connections(10)); }};\n\
             destination d_bench {{ file(\"{}\"); }};\n\
             log {{ source(s_bench); destination(d_bench); flags(flow-control); }};\n",
            out.display()
        ),
    )?;
    let version = Command::new(ng)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).lines().next().map(str::to_owned));
    let child = Command::new(ng)
        .args(["-F", "--no-caps", "-f"])
        .arg(&config)
        .arg("-R")
        .arg(dir.join("syslog-ng.persist"))
        .arg("-p")
        .arg(dir.join("syslog-ng.pid"))
        .arg("-c")
        .arg(dir.join("syslog-ng.ctl"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot start {}", ng.display()))?;
    let mut child = Guard(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline || !matches!(child.0.try_wait(), Ok(None)) {
            bail!("syslog-ng did not start listening on 127.0.0.1:{port}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("syslog-ng: {}", version.unwrap_or_else(|| ng.display().to_string()));
    let started = Instant::now();
    let load = Load { events, rate: None, attacks: 0 };
    let mut sender = Guard(start_send(exe, &format!("tcp://127.0.0.1:{port}"), workload, &load)?);
    let mut counted = 0u64;
    let mut offset = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    let outcome = measure(started, &mut sender.0, || {
        let Ok(mut f) = File::open(&out) else { return Ok(false) };
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(offset))?;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            offset += n as u64;
            counted += memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
        }
        Ok(counted >= events)
    })?;
    terminate(&mut child.0);
    Ok(outcome)
}
