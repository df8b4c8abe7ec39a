//! `vigil bench --cluster`: the same workload through the cluster on this
//! machine — nats-server, `vigil supervisor --nats`, one `vigil collector`
//! and two `vigil worker`s — against `vigil run` measured in the same run,
//! with JetStream's own publish rate of the same batches (encoded events,
//! the cluster's batch size, the collector's publisher) as the transport
//! baseline. Reports EPS, event→incident percentiles, bytes per event on
//! the wire and the batch size.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use super::bench::{BenchArgs, Figures, Guard, Load, Outcome, measure, org_range, start_send, sum, which};

/// What the cluster run shares with `vigil bench`.
pub(super) struct Context<'a> {
    /// The bench's arguments.
    pub args: &'a BenchArgs,
    /// The vigil executable.
    pub exe: &'a Path,
    /// The work directory.
    pub dir: &'a Path,
    /// The workload file.
    pub workload: &'a Path,
}

/// A started role and the lines it printed.
struct Proc {
    _guard: Guard,
    lines: mpsc::Receiver<String>,
}

fn spawn(cmd: &mut Command) -> Result<Proc> {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().context("cannot start a process")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        // Our own children's few status lines.
        #[allow(clippy::disallowed_methods)]
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    Ok(Proc { _guard: Guard(child), lines })
}

impl Proc {
    fn wait_line(&self, prefix: &str) -> Result<String> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).with_context(|| format!("no {prefix:?} line within 120 s"))?;
            if let Some(rest) = line.strip_prefix(prefix) {
                return Ok(rest.split_whitespace().next().unwrap_or_default().to_owned());
            }
        }
    }
}

/// The cluster's figures of one run.
struct Run {
    outcome: Outcome,
    figures: Figures,
    /// Wire bytes per event.
    bytes_per_event: f64,
    /// Events per published batch.
    batch: f64,
}

/// Runs the cluster benchmark and prints its table.
pub(super) fn run(
    ctx: &Context<'_>,
    attacks: u64,
    attack_starts: &[u64],
    run_eps: f64,
    run_figures: &Figures,
) -> Result<()> {
    let Some(nats_server) = ctx.args.nats_server.clone().or_else(|| which("nats-server")) else {
        bail!("--cluster needs nats-server 2.11+ (export PATH=\"$(.ci/nats-up):$PATH\", or --nats-server PATH)");
    };
    println!("\n3. cluster: nats-server, supervisor, 1 collector, 2 workers on this machine");
    let events = ctx.args.events;
    let throughput = bench_cluster(ctx, &nats_server, Load { events, rate: None, attacks })?;
    let sustained = events as f64 / throughput.outcome.secs;
    println!("   all {events} events stored after {:.2} s: {sustained:.0} EPS", throughput.outcome.secs);
    let rate = ctx.args.latency_rate.unwrap_or((sustained * 0.7) as u64).max(1);
    let paced_events = (rate * ctx.args.latency_secs).min(events);
    let attacks_in = attack_starts.iter().filter(|&&start| start + 6 <= paced_events).count() as u64;
    println!("\n4. cluster latency: {paced_events} events at {rate} EPS");
    let paced = bench_cluster(ctx, &nats_server, Load { events: paced_events, rate: Some(rate), attacks: attacks_in })?;
    let batch = throughput.batch.max(1.0).round() as usize;
    println!("\n5. transport baseline: JetStream publish of the same events in batches of {batch}");
    let transport = publish_baseline(ctx, &nats_server, batch)?;

    println!();
    println!("| pipeline | sustained EPS | ratio to vigil run | wire bytes/event | events/batch |");
    println!("|---|---:|---:|---:|---:|");
    println!("| vigil run (one process) | {run_eps:.0} | 1.00 | | |");
    println!(
        "| cluster (1 collector, 2 workers, supervisor, nats-server) | {sustained:.0} | {:.2} | {:.0} | {:.0} |",
        sustained / run_eps,
        throughput.bytes_per_event,
        throughput.batch
    );
    println!(
        "| JetStream publish only (same batches, the collector's publisher) | {transport:.0} | {:.2} | {:.0} | {batch} |",
        transport / run_eps,
        throughput.bytes_per_event
    );
    println!("\nevent→incident latency (allowed lateness {} s included):", ctx.args.lateness);
    println!("| run | incidents (of attacks) | p50 | p90 | p99 | max | drops | late events |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (name, f, expected) in [
        ("vigil run, saturated".to_owned(), run_figures, attacks),
        ("cluster, saturated".to_owned(), &throughput.figures, attacks),
        (format!("cluster, {rate} EPS"), &paced.figures, attacks_in),
    ] {
        println!(
            "| {name} | {} ({expected}) | {} ms | {} ms | {} ms | {} ms | {} | {} |",
            f.incidents, f.p50, f.p90, f.p99, f.max, f.dropped, f.late
        );
    }
    Ok(())
}

fn cluster_config(ctx: &Context<'_>, nats: &str) -> Result<std::path::PathBuf> {
    let config = ctx.dir.join("cluster.toml");
    std::fs::write(
        &config,
        format!(
            "license = {:?}\n[cluster]\nnats = \"{nats}\"\npartitions = 8\n[syslog]\naddr = \"127.0.0.1:0\"\nudp = false\n\
             [metrics]\naddr = \"127.0.0.1:0\"\n[rules]\nlateness_secs = {}\n[orgs]\nrefresh_secs = 0.2\n",
            ctx.args.license()?,
            ctx.args.lateness
        ),
    )?;
    Ok(config)
}

fn start_nats(ctx: &Context<'_>, nats_server: &Path) -> Result<(Guard, String)> {
    let dir = ctx.dir.join("nats");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("ports"))?;
    let conf = format!("listen: \"127.0.0.1:-1\"\njetstream {{\n  store_dir: {:?}\n}}\n", dir.join("store"));
    std::fs::write(dir.join("nats.conf"), conf)?;
    let child = Command::new(nats_server)
        .arg("-c")
        .arg(dir.join("nats.conf"))
        .arg("--ports_file_dir")
        .arg(dir.join("ports"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", nats_server.display()))?;
    let guard = Guard(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let port = std::fs::read_dir(dir.join("ports")).ok().and_then(|mut d| d.next()).and_then(|e| {
            let text = std::fs::read_to_string(e.ok()?.path()).ok()?;
            let start = text.find("nats://")? + 7;
            let rest = &text[start..];
            rest[..rest.find('"')?].rsplit(':').next()?.parse::<u16>().ok()
        });
        if let Some(port) = port {
            return Ok((guard, format!("nats://127.0.0.1:{port}")));
        }
        if Instant::now() > deadline {
            bail!("nats-server did not start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn bench_cluster(ctx: &Context<'_>, nats_server: &Path, load: Load) -> Result<Run> {
    let (_nats, url) = start_nats(ctx, nats_server)?;
    let config = cluster_config(ctx, &url)?;
    let sup_dir = ctx.dir.join("supervisor");
    let _ = std::fs::remove_dir_all(&sup_dir);
    let token = format!("vgl_bench_cluster_{:08x}", std::process::id());
    let sup = spawn(
        Command::new(ctx.exe)
            .args(["supervisor", "--api-addr", "127.0.0.1:0", "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(&sup_dir)
            .env("VIGIL_ADMIN_TOKEN", &token)
            .env_remove("VIGIL_DATABASE"),
    )?;
    let api = sup.wait_line("api: ")?;
    let sup_metrics = sup.wait_line("metrics: ")?;
    let http: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(30))).build().into();
    for k in 1..=ctx.args.orgs {
        http.post(format!("{api}/orgs"))
            .header("Authorization", format!("Bearer {token}"))
            .send_json(serde_json::json!({ "name": format!("org-{k:03}"), "ip_ranges": [org_range(k)] }))
            .with_context(|| format!("cannot create org {k}"))?;
    }
    // The one collector is guaranteed the whole licence, as in `vigil run`.
    let licensed = sum(&get(&http, &sup_metrics)?, "vigil_licence_eps", "") as u64;
    let out = Command::new(ctx.exe)
        .args(["node", "set", "edge-1", "--guaranteed-eps", &licensed.to_string(), "--data-dir"])
        .arg(&sup_dir)
        .arg("--license")
        .arg(ctx.args.license()?)
        .output()?;
    if !out.status.success() {
        bail!("vigil node set: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut workers = Vec::new();
    for w in ["w1", "w2"] {
        let data = ctx.dir.join(w);
        let _ = std::fs::remove_dir_all(&data);
        let p = spawn(
            Command::new(ctx.exe).args(["worker", "--node", w, "--config"]).arg(&config).arg("--data-dir").arg(&data),
        )?;
        let m = p.wait_line("metrics: ")?;
        workers.push((p, m));
    }
    let collector = spawn(Command::new(ctx.exe).args(["collector", "--node", "edge-1", "--config"]).arg(&config))?;
    let syslog = {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let line = collector.lines.recv_timeout(deadline.saturating_duration_since(Instant::now()))?;
            if let Some(rest) = line.strip_prefix("syslog: ") {
                break rest.split_whitespace().find(|a| a.starts_with("tcp://")).unwrap_or_default().to_owned();
            }
        }
    };
    let col_metrics = collector.wait_line("metrics: ")?;
    let wanted = u64::from(ctx.args.orgs) + 2;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = get(&http, &col_metrics)?;
        let owned: f64 = workers
            .iter()
            .map(|(_, u)| get(&http, u).map(|m| sum(&m, "vigil_partitions_owned", "")))
            .sum::<Result<f64>>()?;
        if sum(&m, "vigil_orgs", "") >= wanted as f64
            && sum(&m, "vigil_allocation_eps", "") >= licensed as f64
            && owned >= 8.0
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("the cluster did not get ready (orgs, budget, partitions) within 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let started = Instant::now();
    let mut sender = Guard(start_send(ctx.exe, &syslog, ctx.workload, &load)?);
    let outcome = measure(started, &mut sender.0, || {
        let mut stored = 0.0;
        for (_, u) in &workers {
            stored += sum(&get(&http, u)?, "vigil_events_stored_total", "");
        }
        let dropped = sum(&get(&http, &col_metrics)?, "vigil_events_dropped_total", "");
        Ok(stored + dropped >= load.events as f64)
    })?;
    let deadline = Instant::now() + Duration::from_secs_f64(ctx.args.lateness + 60.0);
    let mut m = get(&http, &sup_metrics)?;
    while sum(&m, "vigil_incidents_created_total", "") < load.attacks as f64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        m = get(&http, &sup_metrics)?;
    }
    let c = get(&http, &col_metrics)?;
    let mut late = 0;
    for (_, u) in &workers {
        late += sum(&get(&http, u)?, "vigil_rule_late_events", "") as u64;
    }
    let q = |quantile: &str| {
        (sum(&m, "vigil_event_to_incident_seconds", &format!("quantile=\"{quantile}\"")) * 1000.0).round() as u64
    };
    let acknowledged = sum(&c, "vigil_events_acknowledged_total", "").max(1.0);
    let run = Run {
        outcome,
        figures: Figures {
            p50: q("0.5"),
            p90: q("0.9"),
            p99: q("0.99"),
            max: q("1"),
            detection: None,
            dropped: sum(&c, "vigil_events_dropped_total", "") as u64,
            late,
            incidents: sum(&m, "vigil_incidents_created_total", "") as u64,
            peak_rss_mb: 0.0,
            state_mb: 0.0,
        },
        bytes_per_event: sum(&c, "vigil_batch_bytes_total", "") / acknowledged,
        batch: acknowledged / sum(&c, "vigil_batches_published_total", "").max(1.0),
    };
    drop(collector);
    drop(workers);
    drop(sup);
    Ok(run)
}

fn get(http: &ureq::Agent, url: &str) -> Result<String> {
    Ok(http.get(url).call().with_context(|| format!("GET {url}"))?.body_mut().read_to_string()?)
}

/// JetStream's own rate for the workload's events, parsed once, encoded in
/// batches of `batch` and published with the collector's publisher to a
/// fresh stream: what the transport alone costs on this machine.
fn publish_baseline(ctx: &Context<'_>, nats_server: &Path, batch: usize) -> Result<f64> {
    let (_nats, url) = start_nats(ctx, nats_server)?;
    // Our own workload file, as much of it as the baseline publishes (the
    // encoded batches are held in memory so only publishing is timed).
    let limit = ctx.args.events.min(500_000) as usize;
    #[allow(clippy::disallowed_methods)]
    let text = std::fs::read(ctx.workload)?;
    let parser = parsers::Parser::new();
    let now = parsers::EventTime::from_unix(1_800_000_000, 0, 0);
    let mut ids = parsers::EventIds::new(1, now);
    let mut payloads = Vec::new();
    let mut events = Vec::with_capacity(batch);
    let mut total = 0u64;
    for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()).take(limit) {
        let mut e = parser.parse(bytes::Bytes::copy_from_slice(line), now);
        e.id = ids.next_id();
        events.push(e);
        if events.len() == batch {
            let mut out = Vec::new();
            parsers::wire::encode_batch(&events, &mut out);
            payloads.push((bytes::Bytes::from(out), events.len()));
            total += events.len() as u64;
            events.clear();
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let secs = runtime.block_on(async {
        let nats = cluster::connect(&url, "vigil bench").await?;
        let stream = cluster::ensure_event_stream(&nats, &cluster::StreamSpec::new(8)).await?;
        let publisher = stream.publisher(cluster::PublisherConfig::default());
        let started = Instant::now();
        let mut handles = Vec::with_capacity(payloads.len());
        for (n, (payload, _)) in payloads.into_iter().enumerate() {
            let partition = u16::try_from(n % 8).unwrap_or(0);
            let org = u32::from(partition) + 1;
            let msg_id = format!("bench/{n}");
            handles.push(publisher.publish(partition, org, "bench", &msg_id, Default::default(), payload).await?);
        }
        for h in handles {
            h.await?;
        }
        anyhow::Ok(started.elapsed().as_secs_f64())
    })?;
    let eps = total as f64 / secs;
    println!("   {total} events in {:.2} s: {eps:.0} EPS", secs);
    Ok(eps)
}
