//! A real nats-server on loopback for the integration tests.
//!
//! Each test starts its own server with a random port and a temporary JetStream store,
//! and can stop, freeze or restart it (same port, same store). Without `nats-server` on
//! PATH the tests print "skipped: nats-server not installed" and pass.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
    jetstream: bool,
    /// The server's `max_file_store`.
    store_limit: String,
}

/// The JetStream storage limit of test servers. Set explicitly because the
/// server's default is 75 % of the disk free when it starts, and JetStream
/// reserves each stream's whole size limit (1 GiB for the event stream)
/// against it: on a nearly full CI disk the tests would fail before writing a
/// byte. The tests themselves store a few MB.
pub const TEST_STORE_LIMIT: &str = "64G";

fn installed() -> bool {
    Command::new("nats-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|status| status.success())
        .unwrap_or(false)
}

impl Server {
    /// A server with JetStream, or `None` (and a note) when nats-server is not installed.
    pub fn start() -> Option<Server> {
        Server::start_with(true)
    }

    /// A server with or without JetStream.
    pub fn start_with(jetstream: bool) -> Option<Server> {
        Server::start_configured(jetstream, TEST_STORE_LIMIT)
    }

    /// A server with JetStream whose `max_file_store` is `limit` (e.g. `"64M"`).
    pub fn start_with_store_limit(limit: &str) -> Option<Server> {
        Server::start_configured(true, limit)
    }

    fn start_configured(jetstream: bool, store_limit: &str) -> Option<Server> {
        if !installed() {
            eprintln!("skipped: nats-server not installed");
            return None;
        }
        let dir = tempfile::Builder::new().prefix("vigil-nats-").tempdir().expect("temp dir");
        let mut server = Server { child: None, dir, port: 0, jetstream, store_limit: store_limit.to_owned() };
        server.launch();
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    fn ports_dir(&self) -> PathBuf {
        self.dir.path().join("ports")
    }

    /// Writes the config (random port the first time, the same port afterwards) and
    /// starts the server, waiting until it has written its ports file.
    fn launch(&mut self) {
        let listen = if self.port == 0 { "127.0.0.1:-1".to_owned() } else { format!("127.0.0.1:{}", self.port) };
        let mut conf = format!("listen: \"{listen}\"\n");
        if self.jetstream {
            conf.push_str(&format!(
                "jetstream {{\n  store_dir: \"{}\"\n  max_file_store: {}\n}}\n",
                self.store_dir().display(),
                self.store_limit
            ));
        }
        let conf_path = self.dir.path().join("nats.conf");
        fs::write(&conf_path, conf).expect("write config");
        let ports_dir = self.ports_dir();
        let _ = fs::remove_dir_all(&ports_dir);
        fs::create_dir_all(&ports_dir).expect("ports dir");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .expect("log file");
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(&conf_path)
            .arg("--ports_file_dir")
            .arg(&ports_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn nats-server");
        self.child = Some(child);
        let port = wait_for_port(&ports_dir, Duration::from_secs(20)).unwrap_or_else(|| {
            let log = fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
            panic!("nats-server wrote no ports file; its log:\n{log}")
        });
        if self.port != 0 {
            assert_eq!(port, self.port, "restarted server must listen on the same port");
        }
        self.port = port;
    }

    /// Kills the server (SIGKILL: a crash, not a clean shutdown).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same store.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "server still running");
        self.launch();
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing is answered.
    /// Returns once the process is stopped (the signal is asynchronous: a
    /// server still running for a moment could answer what comes next).
    pub fn freeze(&self) {
        self.signal("-STOP");
        let pid = self.child.as_ref().expect("server running").id();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !stopped(pid) {
            assert!(Instant::now() < deadline, "nats-server did not stop on SIGSTOP");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Lets a frozen server run again (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("server running").id();
        let status = Command::new("kill").arg(signal).arg(pid.to_string()).status().expect("run kill");
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_ref() {
            // SIGKILL ends a stopped process too; continuing it first is only tidier.
            let _ = Command::new("kill").arg("-CONT").arg(child.id().to_string()).status();
        }
        self.kill();
    }
}

/// Whether process `pid` is stopped (state `T` in /proc/PID/stat).
fn stopped(pid: u32) -> bool {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state follows the command name, which is in parentheses.
    stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('T'))
}

fn wait_for_port(dir: &Path, limit: Duration) -> Option<u16> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(entries) = fs::read_dir(dir) {
            for entry in entries.flatten() {
                let Ok(text) = fs::read_to_string(entry.path()) else { continue };
                if let Some(port) = nats_port(&text) {
                    return Some(port);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// The client port in a ports file: `{"nats":["nats://127.0.0.1:PORT"], ...}`.
fn nats_port(text: &str) -> Option<u16> {
    let start = text.find("nats://")? + "nats://".len();
    let rest = &text[start..];
    let end = rest.find('"')?;
    rest[..end].rsplit(':').next()?.parse().ok()
}

/// Runs a test body with a time bound, so a hang fails instead of blocking the suite.
pub async fn bounded<T>(limit: Duration, body: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, body).await {
        Ok(value) => value,
        Err(_) => panic!("test did not finish within {limit:?}"),
    }
}
