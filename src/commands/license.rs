//! `vigil license`: signing keys, licences, and the EPS simulator.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use supervisor::licence::{self, PublicKey, SigningKey};
use supervisor::simulate::Scenario;

#[derive(Subcommand)]
pub enum LicenseCommand {
    /// Create a licence signing key pair in DIR (the private key file is
    /// readable by its owner only).
    Keygen {
        /// Directory to write licence-signing.key and licence-signing.pub into.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Sign a licence body (TOML: customer, licensed_eps, device_limit,
    /// issued, expires) and print the licence.
    Sign {
        /// The private key file from `keygen`.
        #[arg(long, value_name = "KEY")]
        key: PathBuf,
        /// The licence body.
        #[arg(value_name = "BODY")]
        body: PathBuf,
    },
    /// Verify a licence; exit 1 with the reason if it is not valid.
    Verify {
        /// Public key to trust (default: the keys built into this binary).
        #[arg(long, value_name = "PUB")]
        pubkey: Option<PathBuf>,
        /// Day to check validity on (default: today, UTC).
        #[arg(long, value_name = "YYYY-MM-DD")]
        today: Option<String>,
        /// The licence file.
        #[arg(value_name = "LICENCE")]
        licence: PathBuf,
    },
    /// Run the EPS allocator over a scenario and write intervals.csv,
    /// summary.json and chart.svg.
    Simulate {
        /// Scenario file (TOML); see examples/.
        #[arg(long, value_name = "FILE")]
        scenario: PathBuf,
        /// Output directory.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

pub fn run(cmd: LicenseCommand) -> Result<ExitCode> {
    match cmd {
        LicenseCommand::Keygen { out } => keygen(&out).map(|()| ExitCode::SUCCESS),
        LicenseCommand::Sign { key, body } => sign(&key, &body).map(|()| ExitCode::SUCCESS),
        LicenseCommand::Verify { pubkey, today, licence } => verify(pubkey.as_deref(), today.as_deref(), &licence),
        LicenseCommand::Simulate { scenario, out } => simulate(&scenario, &out).map(|()| ExitCode::SUCCESS),
    }
}

fn read(path: &Path) -> Result<String> {
    use std::io::Read;
    let mut text = String::new();
    #[allow(clippy::disallowed_methods)] // bounded by `take`
    std::fs::File::open(path)
        .and_then(|f| f.take(1024 * 1024).read_to_string(&mut text))
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(text)
}

fn keygen(out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let key = SigningKey::generate()?;
    let (key_path, pub_path) = (out.join("licence-signing.key"), out.join("licence-signing.pub"));
    for p in [&key_path, &pub_path] {
        if p.exists() {
            bail!("{} exists; refusing to overwrite a key", p.display());
        }
    }
    write_private(&key_path, key.to_file_text().as_bytes())?;
    std::fs::write(&pub_path, key.public().to_file_text())
        .with_context(|| format!("cannot write {}", pub_path.display()))?;
    println!("key id {}: private key {}, public key {}", key.public().id(), key_path.display(), pub_path.display());
    Ok(())
}

/// Writes a new file only its owner can read (refuses to overwrite).
pub(super) fn write_private(path: &Path, content: &[u8]) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
        .open(path)
        .and_then(|mut f| f.write_all(content))
        .with_context(|| format!("cannot write {}", path.display()))
}

fn sign(key: &Path, body: &Path) -> Result<()> {
    let key = SigningKey::parse(&read(key)?).with_context(|| format!("{}", key.display()))?;
    let licence = licence::sign(&read(body)?, &key).with_context(|| format!("{}", body.display()))?;
    std::io::stdout().write_all(licence.as_bytes()).context("cannot write the licence")?;
    Ok(())
}

fn verify(pubkey: Option<&Path>, today: Option<&str>, path: &Path) -> Result<ExitCode> {
    let keys = match pubkey {
        Some(p) => vec![PublicKey::parse(&read(p)?).with_context(|| format!("{}", p.display()))?],
        None => licence::trusted_keys(),
    };
    let today = match today {
        Some(d) => d.parse().with_context(|| format!("--today {d:?} is not a date (YYYY-MM-DD)"))?,
        None => licence::date_of(collector_now()),
    };
    match licence::verify(&read(path)?, &keys, today) {
        Ok(l) => {
            println!(
                "valid: {} - {} EPS, {} devices, {} to {}, key {}",
                l.customer, l.licensed_eps, l.device_limit, l.issued, l.expires, l.key_id
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("invalid licence {}: {e}", path.display());
            Ok(ExitCode::from(1))
        }
    }
}

fn collector_now() -> parsers::EventTime {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    parsers::EventTime::from_unix(i64::try_from(since.as_secs()).unwrap_or(i64::MAX), 0, 0)
}

fn simulate(scenario: &Path, out: &Path) -> Result<()> {
    let started = Instant::now();
    let s = Scenario::load(scenario)?;
    let outcome = s.run(out)?;
    let elapsed = started.elapsed();
    let total_received: u64 = outcome.nodes.values().map(|t| t.received).sum();
    let total_dropped: u64 = outcome.nodes.values().map(|t| t.dropped).sum();
    let mut report = format!(
        "{} intervals x {} nodes simulated in {:.2} s: {} events received, {} dropped ({:.3}%)\n",
        outcome.intervals,
        outcome.nodes.len(),
        elapsed.as_secs_f64(),
        total_received,
        total_dropped,
        if total_received == 0 { 0.0 } else { 100.0 * total_dropped as f64 / total_received as f64 }
    );
    for name in ["intervals.csv", "summary.json", "chart.svg"] {
        report.push_str(&format!("  {}\n", out.join(name).display()));
    }
    match std::io::stdout().write_all(report.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e).context("cannot write to stdout"),
        _ => {}
    }
    Ok(())
}
