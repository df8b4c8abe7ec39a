//! A real cluster on loopback for the end-to-end tests: nats-server (from
//! PATH; `.ci/nats-up` installs the pinned one), `vigil supervisor --nats`,
//! `vigil collector` and `vigil worker` processes, each on ephemeral ports,
//! with a short EPS interval and lease TTL so the tests run in seconds.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// nats-server with JetStream on a free loopback port and a store of its own.
pub struct Nats {
    child: Option<Child>,
    pub dir: PathBuf,
    pub port: u16,
    /// More server configuration (e.g. a `tls { … }` block).
    extra: String,
}

fn installed() -> bool {
    Command::new("nats-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Nats {
    /// `None` (and the note CI greps for) when nats-server is not installed.
    pub fn start(dir: &Path) -> Option<Nats> {
        Nats::start_with(dir, "")
    }

    /// Like [`Nats::start`], with `extra` appended to the server's
    /// configuration.
    pub fn start_with(dir: &Path, extra: &str) -> Option<Nats> {
        if !installed() {
            eprintln!("skipped: nats-server not installed");
            return None;
        }
        let mut n = Nats { child: None, dir: dir.join("nats"), port: 0, extra: extra.to_owned() };
        std::fs::create_dir_all(&n.dir).unwrap();
        n.launch();
        Some(n)
    }

    fn launch(&mut self) {
        let listen = if self.port == 0 { "127.0.0.1:-1".to_owned() } else { format!("127.0.0.1:{}", self.port) };
        let conf = format!(
            // max_file_store is explicit: the server's default (75 % of the disk
            // free at start) refuses vigil's 1 GiB event stream on a nearly full
            // CI disk, though the tests store a few MB.
            "listen: \"{listen}\"\njetstream {{\n  store_dir: \"{}\"\n  max_file_store: 64G\n}}\n{}",
            self.dir.join("store").display(),
            self.extra
        );
        std::fs::write(self.dir.join("nats.conf"), conf).unwrap();
        let ports = self.dir.join("ports");
        let _ = std::fs::remove_dir_all(&ports);
        std::fs::create_dir_all(&ports).unwrap();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("server.log")).unwrap();
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(self.dir.join("nats.conf"))
            .arg("--ports_file_dir")
            .arg(&ports)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let found = std::fs::read_dir(&ports).ok().and_then(|mut d| d.next()).and_then(|e| {
                let text = std::fs::read_to_string(e.ok()?.path()).ok()?;
                let start = text.find("nats://").map(|i| i + 7).or_else(|| text.find("tls://").map(|i| i + 6))?;
                let rest = &text[start..];
                rest[..rest.find('"')?].rsplit(':').next()?.parse::<u16>().ok()
            });
            if let Some(port) = found {
                self.port = port;
                return;
            }
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same port with the same store.
    pub fn start_again(&mut self) {
        self.launch();
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One `vigil` role process and what it printed.
pub struct Role {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
    pub printed: Vec<String>,
    pub args: Vec<String>,
}

impl Role {
    pub fn spawn(args: &[String], env: &[(&str, &str)]) -> Role {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vigil"));
        cmd.args(args).env_remove("VIGIL_ADMIN_TOKEN").env_remove("VIGIL_DATABASE").env_remove("VIGIL_NATS");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let (child, lines) = super::spawn_with_lines(&mut cmd);
        Role { child, lines, printed: Vec::new(), args: args.to_vec() }
    }

    /// Waits for a line starting with `prefix`; the rest of it.
    pub fn wait_line(&mut self, prefix: &str) -> String {
        if let Some(l) = self.printed.iter().find(|l| l.starts_with(prefix)) {
            return l[prefix.len()..].to_owned();
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|_| {
                panic!("vigil {:?} printed no {prefix:?} within 60 s: {:?}", self.args, self.printed)
            });
            self.printed.push(line.clone());
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.to_owned();
            }
        }
    }

    /// kill -9.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait; whether it exited with success.
    pub fn terminate(&mut self) -> bool {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.success();
            }
            assert!(Instant::now() < deadline, "vigil {:?} did not stop on SIGTERM", self.args);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Short periods, so intervals, heartbeats and lease moves take seconds.
pub const CLUSTER_CONFIG: &str = "[cluster]\npartitions = 4\ninterval_secs = 3\nlease_ttl_secs = 2.0\n\
heartbeat_secs = 0.5\nmissed_heartbeat_secs = 2.0\ncheckpoint_secs = 0.5\n[rules]\nlateness_secs = 1.0\n[storage]\nflush_interval_ms = 200\n\
[orgs]\nrefresh_secs = 0.2\n";

/// A supervisor (SQLite in `dir/supervisor`, or PostgreSQL at `database`).
pub struct Supervisor {
    pub role: Role,
    pub api: String,
    pub token: String,
    pub metrics_url: String,
}

pub fn config_file(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("cluster.toml");
    std::fs::write(&path, text).unwrap();
    path
}

pub fn supervisor(dir: &Path, nats: &str, config: &Path, database: Option<&str>, token: &str) -> Supervisor {
    let mut args: Vec<String> =
        ["supervisor", "--nats", nats, "--api-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
    args.extend(["--config".into(), config.display().to_string()]);
    args.extend(["--data-dir".into(), dir.join("supervisor").display().to_string()]);
    if let Some(db) = database {
        args.extend(["--database".into(), db.to_owned()]);
    }
    let mut role = Role::spawn(&args, &[("VIGIL_ADMIN_TOKEN", token)]);
    let api = role.wait_line("api: ").split_whitespace().next().unwrap().to_owned();
    let metrics_url = role.wait_line("metrics: ").split_whitespace().next().unwrap().to_owned();
    Supervisor { role, api, token: token.to_owned(), metrics_url }
}

impl Supervisor {
    /// Creates orgs (name, one IP range) through the API.
    pub fn create_orgs(&self, orgs: &[(&str, &str)]) {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        for (name, range) in orgs {
            let created = agent
                .post(format!("{}/orgs", self.api))
                .header("Authorization", format!("Bearer {}", self.token))
                .send_json(serde_json::json!({"name": name, "ip_ranges": [range]}))
                .unwrap();
            assert_eq!(created.status().as_u16(), 201, "creating {name}");
        }
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let mut resp = agent
            .get(format!("{}{path}", self.api))
            .header("Authorization", format!("Bearer {}", self.token))
            .call()
            .unwrap();
        (resp.status().as_u16(), resp.body_mut().read_json().unwrap_or(Value::Null))
    }
}

/// A collector; its TCP syslog address and metrics URL.
pub struct Collector {
    pub role: Role,
    pub tcp: String,
    pub metrics_url: String,
}

pub fn collector(node: &str, nats: &str, config: &Path) -> Collector {
    collector_with(node, nats, config, &[])
}

/// A collector with more flags (`--creds FILE`).
pub fn collector_with(node: &str, nats: &str, config: &Path, extra: &[&str]) -> Collector {
    let mut args: Vec<String> = [
        "collector",
        "--nats",
        nats,
        "--node",
        node,
        "--syslog-addr",
        "127.0.0.1:0",
        "--metrics-addr",
        "127.0.0.1:0",
        "--config",
        config.to_str().unwrap(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let mut role = Role::spawn(&args, &[]);
    let syslog = role.wait_line("syslog: ");
    let tcp = syslog.split_whitespace().find(|a| a.starts_with("tcp://")).unwrap().to_owned();
    let metrics_url = role.wait_line("metrics: ").split_whitespace().next().unwrap().to_owned();
    Collector { role, tcp, metrics_url }
}

/// A worker storing under `data`.
pub struct Worker {
    pub role: Role,
    pub data: PathBuf,
    pub metrics_url: String,
}

pub fn worker(node: &str, nats: &str, config: &Path, data: &Path) -> Worker {
    worker_with(node, nats, config, data, &[])
}

/// A worker with more flags (`--creds FILE`).
pub fn worker_with(node: &str, nats: &str, config: &Path, data: &Path, extra: &[&str]) -> Worker {
    let mut args: Vec<String> = [
        "worker",
        "--nats",
        nats,
        "--node",
        node,
        "--data-dir",
        data.to_str().unwrap(),
        "--metrics-addr",
        "127.0.0.1:0",
        "--config",
        config.to_str().unwrap(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let mut role = Role::spawn(&args, &[]);
    let metrics_url = role.wait_line("metrics: ").split_whitespace().next().unwrap().to_owned();
    Worker { role, data: data.to_owned(), metrics_url }
}

/// `/metrics` of a process, or "" when it does not answer (killed).
pub fn metrics(url: &str) -> String {
    let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(5))).build().into();
    agent.get(url).call().ok().and_then(|mut r| r.body_mut().read_to_string().ok()).unwrap_or_default()
}

/// The sum of a metric's samples whose labels contain all of `with`.
pub fn metric(url: &str, name: &str, with: &[&str]) -> u64 {
    metrics(url)
        .lines()
        .filter(|l| {
            l.starts_with(name)
                && (l.as_bytes().get(name.len()) == Some(&b'{') || l.as_bytes().get(name.len()) == Some(&b' '))
        })
        .filter(|l| with.iter().all(|w| l.contains(w)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

pub fn wait(what: &str, limit: Duration, done: impl FnMut() -> bool) {
    wait_explained(what, limit, done, String::new);
}

/// [`wait`], failing with what `explain` says about the state (metrics,
/// listings) when the time is up.
pub fn wait_explained(what: &str, limit: Duration, mut done: impl FnMut() -> bool, explain: impl Fn() -> String) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}\n{}", explain());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The samples of `/metrics` whose names start with one of `prefixes`.
pub fn metric_lines(url: &str, prefixes: &[&str]) -> String {
    metrics(url)
        .lines()
        .filter(|l| !l.starts_with('#') && prefixes.iter().any(|p| l.starts_with(p)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Sends `lines` to `tcp` with the real `vigil send`.
pub fn send(dir: &Path, tcp: &str, name: &str, lines: Vec<String>) {
    let file = dir.join(name);
    super::run::write_lines(&file, lines.into_iter());
    let out = super::vigil_with_input(&["send", "--to", tcp, "--quiet", file.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", super::stderr(&out));
}

/// Rows stored under `data` and distinct event ids among them: equal
/// when no event is stored twice.
pub fn stored_counts(data: &Path) -> (usize, usize) {
    let ids = stored_ids(data);
    let distinct = ids.iter().copied().collect::<std::collections::BTreeSet<u64>>().len();
    (ids.len(), distinct)
}

/// Every stored event id under `data` (all Parquet files), with repeats.
///
/// A file listed and then gone before it is opened is skipped: a worker
/// that lost its lease (nats-server away) removes what it wrote past its
/// last commit, which the next owner stores again. Once open, a file
/// stays readable even if it is removed meanwhile.
pub fn stored_ids(data: &Path) -> Vec<u64> {
    use arrow_array::Array;
    let mut ids = Vec::new();
    for p in super::run::parquet_files(data) {
        let file = match std::fs::File::open(&p) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("{}: {e}", p.display()),
        };
        let reader =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let col = batch.column_by_name("id").unwrap();
            let col = col.as_any().downcast_ref::<arrow_array::UInt64Array>().unwrap();
            ids.extend((0..col.len()).map(|i| col.value(i)));
        }
    }
    ids
}
