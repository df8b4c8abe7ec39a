//! `vigil run` driven end to end: start it on ephemeral loopback ports,
//! administer it with the real CLI, feed it with the real `vigil send`, read
//! the API, `/metrics` and the Parquet files it writes.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Vigil {
    pub child: Child,
    pub dir: PathBuf,
    pub tcp: String,
    pub tls: String,
    pub ca: String,
    pub api: String,
    pub base: String,
    pub token: String,
    pub lines: mpsc::Receiver<String>,
    pub metrics_url: String,
}

impl Drop for Vigil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub const CONFIG: &str =
    "[rules]\nlateness_secs = 1.0\n[orgs]\nrefresh_secs = 0.2\n[storage]\nflush_interval_ms = 200\n";

/// `vigil run` on ephemeral loopback ports with [`CONFIG`].
pub fn start(tag: &str) -> Vigil {
    start_with(tag, CONFIG, None)
}

/// `vigil run` with `config` as its config file; with `ulimit_n`, under
/// that limit on open files.
pub fn start_with(tag: &str, config: &str, ulimit_n: Option<u32>) -> Vigil {
    let dir = super::temp_dir(tag);
    std::fs::File::create(dir.join("vigil.toml")).unwrap().write_all(config.as_bytes()).unwrap();
    launch(dir, ulimit_n, None)
}

/// `vigil run` on `dir`'s config and data directory, on ephemeral ports,
/// with its stdout as lines; not waiting for it to be ready.
pub fn spawn(dir: &Path, ulimit_n: Option<u32>) -> (Child, mpsc::Receiver<String>) {
    let exe = env!("CARGO_BIN_EXE_vigil");
    let mut cmd = match ulimit_n {
        None => Command::new(exe),
        Some(n) => {
            let mut c = Command::new("sh");
            c.args(["-c", &format!("ulimit -n {n} && exec \"$0\" \"$@\""), exe]);
            c
        }
    };
    super::spawn_with_lines(
        cmd.args(["run", "--syslog-addr", "127.0.0.1:0", "--api-addr", "127.0.0.1:0", "--tls-addr", "127.0.0.1:0"])
            .args(["--metrics-addr", "127.0.0.1:0"])
            .arg("--config")
            .arg(dir.join("vigil.toml"))
            .arg("--data-dir")
            .arg(dir.join("data"))
            .env_remove("VIGIL_ADMIN_TOKEN")
            .env_remove("VIGIL_DATABASE"),
    )
}

/// `vigil run` on `dir`'s config and data directory; on a restart, `token`
/// is the admin token the first start printed (it is printed once).
pub fn launch(dir: PathBuf, ulimit_n: Option<u32>, token: Option<String>) -> Vigil {
    let (child, lines) = spawn(&dir, ulimit_n);
    let (mut tcp, mut tls, mut ca, mut api, mut metrics_url) = (None, None, None, None, None);
    let mut token = token;
    while api.is_none() || tcp.is_none() || token.is_none() || metrics_url.is_none() {
        let line = lines.recv_timeout(Duration::from_secs(60)).expect("vigil run did not start within 60 s");
        if let Some(rest) = line.strip_prefix("syslog: ") {
            tcp = rest.split_whitespace().find(|a| a.starts_with("tcp://")).map(str::to_owned);
            tls = rest.split_whitespace().find(|a| a.starts_with("tls://")).map(str::to_owned);
        }
        if let Some(rest) = line.strip_prefix("tls certificate: ") {
            ca = rest.split_whitespace().next().map(str::to_owned);
        }
        if let Some(rest) = line.strip_prefix("api: ") {
            api = rest.split_whitespace().next().map(str::to_owned);
        }
        if let Some(rest) = line.strip_prefix("metrics: ") {
            metrics_url = rest.split_whitespace().next().map(str::to_owned);
        }
        if let Some(t) = line.strip_prefix("admin token (shown once; keep it): ") {
            token = Some(t.to_owned());
        }
    }
    let api = api.unwrap();
    let base = api.trim_end_matches("/api/v1").to_owned();
    let (tcp, tls, ca, token) = (tcp.unwrap(), tls.unwrap(), ca.unwrap(), token.unwrap());
    let metrics_url = metrics_url.unwrap();
    Vigil { child, dir, tcp, tls, ca, api, base, token, lines, metrics_url }
}

impl Vigil {
    pub fn cli(&self, args: &[&str]) -> String {
        let mut all = args.to_vec();
        let data = self.dir.join("data");
        all.extend(["--data-dir", data.to_str().unwrap()]);
        let out = super::vigil_with_input(&all, None);
        assert!(out.status.success(), "vigil {args:?}: {}", super::stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn send(&self, file: &Path, extra: &[&str]) -> String {
        self.send_to(&self.tcp, file, extra)
    }

    pub fn send_to(&self, to: &str, file: &Path, extra: &[&str]) -> String {
        let mut args = vec!["send", "--to", to, "--quiet"];
        args.extend_from_slice(extra);
        args.push(file.to_str().unwrap());
        let out = super::vigil_with_input(&args, None);
        assert!(out.status.success(), "{}", super::stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn get(&self, path: &str, token: &str) -> (u16, Value) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let mut resp =
            agent.get(format!("{}{path}", self.api)).header("Authorization", format!("Bearer {token}")).call().unwrap();
        (resp.status().as_u16(), resp.body_mut().read_json().unwrap_or(Value::Null))
    }

    pub fn post(&self, path: &str, token: &str, body: &Value) -> (u16, Value) {
        self.send_json("POST", path, token, body)
    }

    pub fn patch(&self, path: &str, token: &str, body: &Value) -> (u16, Value) {
        self.send_json("PATCH", path, token, body)
    }

    fn send_json(&self, method: &str, path: &str, token: &str, body: &Value) -> (u16, Value) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let url = format!("{}{path}", self.api);
        let auth = format!("Bearer {token}");
        let sent = match method {
            "PATCH" => agent.patch(url).header("Authorization", auth).send_json(body),
            _ => agent.post(url).header("Authorization", auth).send_json(body),
        };
        let mut resp = sent.unwrap();
        (resp.status().as_u16(), resp.body_mut().read_json().unwrap_or(Value::Null))
    }

    pub fn metrics(&self) -> String {
        let mut resp = ureq::get(&self.metrics_url).call().unwrap();
        resp.body_mut().read_to_string().unwrap()
    }

    /// The sum of a metric's samples whose labels contain all of `with`.
    pub fn metric(&self, name: &str, with: &[&str]) -> u64 {
        self.metrics()
            .lines()
            .filter(|l| {
                l.starts_with(name)
                    && (l.as_bytes().get(name.len()) == Some(&b'{') || l.as_bytes().get(name.len()) == Some(&b' '))
            })
            .filter(|l| with.iter().all(|w| l.contains(w)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    pub fn wait(&self, what: &str, mut done: impl FnMut(&Vigil) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done(self) {
            assert!(Instant::now() < deadline, "{what}: not within 60 s\n{}", self.metrics());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn wait_orgs(&self, n: u64) {
        self.wait("org table reloaded", |v| v.metric("vigil_orgs", &[]) == n);
    }

    /// SIGTERM, then the exit status and the final line.
    pub fn stop(mut self) -> (bool, String) {
        sigterm(&self.child);
        let status = wait_exit(&mut self.child);
        if !status.success() {
            eprintln!("vigil run exited with {status} on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(100));
        let last = self.lines.try_iter().filter(|l| l.starts_with("vigil: stopped")).last().unwrap_or_default();
        (status.success(), last)
    }
}

/// Sends SIGTERM to `child`.
pub fn sigterm(child: &Child) {
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
}

/// The exit status of `child`, which must end within 60 s (else it is
/// killed and the test fails).
pub fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("vigil run did not stop within 60 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every Parquet file under `dir`, recursively.
pub fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        // An entry removed while the directory is read is not listed.
        for entry in entries.flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "parquet") {
                files.push(p);
            }
        }
    }
    files
}

/// Rows in every Parquet file under `dir` (recursively), by org directory.
pub fn parquet_rows(dir: &Path) -> std::collections::BTreeMap<String, i64> {
    use parquet::file::reader::FileReader;
    let mut out = std::collections::BTreeMap::new();
    for p in parquet_files(dir) {
        let reader = parquet::file::reader::SerializedFileReader::new(std::fs::File::open(&p).unwrap()).unwrap();
        let org = p.ancestors().find_map(|a| a.file_name()?.to_str()?.strip_prefix("org=").map(str::to_owned)).unwrap();
        *out.entry(org).or_default() += reader.metadata().file_metadata().num_rows();
    }
    out
}

pub fn write_lines(path: &Path, lines: impl Iterator<Item = String>) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
}

pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    // A plain UTC rendering without a date crate: days → civil date.
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Real sshd "Failed password" lines, relayed with the device's address as
/// HOSTNAME (the org's IP range), timestamped now.
pub fn ssh_attack(host: &str, attacker: &str, n: usize) -> Vec<String> {
    let now = now_rfc3339();
    (0..n)
        .map(|i| format!("<38>1 {now} {host} sshd 2311 - - Failed password for invalid user admin{i} from {attacker} port {} ssh2", 40_000 + i))
        .collect()
}
