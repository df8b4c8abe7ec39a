//! `vigil cluster init --dir DIR`: everything a secured cluster needs on
//! the NATS side, in one directory the supervisor keeps:
//! - the operator, account, account-signing and system-account keys
//!   (`*.nk`, 0600) and the operator JWT;
//! - `supervisor.creds` and `system.creds` (0600);
//! - a CA and a server certificate for the hosts given (`tls/`);
//! - `nats-server.conf` (listen, TLS, JetStream, including `auth.conf`:
//!   the operator, the accounts and a resolver that keeps revocations).
//!
//! Nodes get their credentials from `vigil node add`, signed with the
//! account signing key from this directory.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use cluster::auth::{self, ClusterKeys};

/// `vigil cluster`.
#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Create the cluster's keys, the supervisor's credentials, a CA and
    /// server certificate, and a ready nats-server configuration with
    /// JetStream and per-role permissions.
    Init(InitArgs),
}

/// Arguments of `vigil cluster init`.
#[derive(Args)]
pub struct InitArgs {
    /// The directory to create (it must not hold cluster keys already).
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// Where nats-server listens (port -1: any free port).
    #[arg(long, value_name = "HOST:PORT", default_value = "0.0.0.0:4222")]
    listen: String,
    /// Names and addresses the server's certificate is for (repeat; default
    /// localhost and 127.0.0.1).
    #[arg(long = "host", value_name = "NAME")]
    hosts: Vec<String>,
    /// JetStream's store directory (default DIR/nats/jetstream).
    #[arg(long, value_name = "DIR")]
    store_dir: Option<PathBuf>,
}

/// Runs `vigil cluster`.
pub fn run(cmd: ClusterCommand) -> Result<ExitCode> {
    match cmd {
        ClusterCommand::Init(args) => init(&args),
    }
}

fn now_secs() -> i64 {
    let now = collector::Clock::now(&collector::SystemClock);
    i64::try_from(now.unix_nanos() / 1_000_000_000).unwrap_or(0)
}

fn init(args: &InitArgs) -> Result<ExitCode> {
    let dir = &args.dir;
    if dir.join("operator.nk").exists() {
        bail!(
            "{} holds cluster keys already; new keys would lock every enrolled node out (see docs/cluster.md, \
             \"Rotating the signing key\")",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir.join("tls")).with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = std::fs::canonicalize(dir).with_context(|| format!("cannot resolve {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict {}", dir.display()))?;
    }
    let iat = now_secs();
    let keys = ClusterKeys::generate();
    keys.save(&dir)?;
    let operator_jwt = dir.join(auth::OPERATOR_JWT);
    std::fs::write(&operator_jwt, keys.operator_jwt(iat)?)
        .with_context(|| format!("cannot write {}", operator_jwt.display()))?;
    let supervisor =
        cluster::auth::Grant { node: "supervisor".into(), role: parsers::NodeRole::Supervisor, org: None, slot: None };
    keys.node_creds(&supervisor, iat)?.write(&dir.join(auth::SUPERVISOR_CREDS))?;
    keys.system_creds(iat)?.write(&dir.join(auth::SYSTEM_CREDS))?;
    let resolver = dir.join("nats").join("jwt");
    std::fs::create_dir_all(&resolver).with_context(|| format!("cannot create {}", resolver.display()))?;
    let auth_conf = dir.join("auth.conf");
    std::fs::write(&auth_conf, keys.auth_config(&operator_jwt, &resolver, iat)?)
        .with_context(|| format!("cannot write {}", auth_conf.display()))?;
    let hosts = if args.hosts.is_empty() { vec!["localhost".into(), "127.0.0.1".into()] } else { args.hosts.clone() };
    let tls = write_pki(&dir.join("tls"), &hosts)?;
    let store = args.store_dir.clone().unwrap_or_else(|| dir.join("nats").join("jetstream"));
    let conf = format!(
        "# nats-server for a vigil cluster (written by `vigil cluster init`).\n\
         # Every client connects with TLS and its own credentials; what each\n\
         # vigil role may publish and read is in its credentials (docs/cluster.md).\n\
         listen: \"{}\"\n\
         tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  timeout: 5\n}}\n\
         jetstream {{\n  store_dir: \"{}\"\n\
         \x20 # Each stream's size limit is reserved against max_file_store: vigil's event\n\
         \x20 # stream (cluster.stream_max_mb, 1 GiB by default) and its detection queue\n\
         \x20 # (256 MiB). Unset, it is 75 % of the disk free here when the server starts.\n\
         \x20 # max_file_store: 20G\n}}\n\
         include \"auth.conf\"\n",
        args.listen,
        tls.server_cert.display(),
        tls.server_key.display(),
        store.display(),
    );
    let conf_path = dir.join("nats-server.conf");
    std::fs::write(&conf_path, conf).with_context(|| format!("cannot write {}", conf_path.display()))?;
    let host = hosts.first().map_or("localhost", String::as_str);
    println!("cluster keys and configuration in {}", dir.display());
    println!("  nats-server -c {}", conf_path.display());
    println!("  vigil supervisor --nats tls://{host}:4222 --nats-ca {} --keys {}", tls.ca.display(), dir.display());
    println!("  vigil node add edge-a --role collector --org Acme --keys {} --out edge-a.creds", dir.display());
    println!("  vigil collector --nats tls://{host}:4222 --nats-ca ca.pem --creds edge-a.creds");
    println!("keep {} private: its *.nk files sign every node's credentials", dir.display());
    Ok(ExitCode::SUCCESS)
}

/// The PEM files of the cluster's CA and server certificate.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
}

/// A CA (its key 0600) and a server certificate it signed for `hosts`.
fn write_pki(dir: &Path, hosts: &[String]) -> Result<Pki> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate().context("cannot make the CA key")?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).context("CA parameters")?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    ca.distinguished_name.push(DnType::CommonName, "vigil cluster CA");
    let ca_cert = ca.self_signed(&ca_key).context("cannot sign the CA certificate")?;
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(ca, ca_key);
    let server_key = KeyPair::generate().context("cannot make the server key")?;
    let mut params = CertificateParams::new(hosts.to_vec()).context("server certificate names")?;
    params.distinguished_name.push(DnType::CommonName, "vigil nats-server");
    let server = params.signed_by(&server_key, &issuer).context("cannot sign the server certificate")?;
    let pki = Pki { ca: dir.join("ca.pem"), server_cert: dir.join("server.pem"), server_key: dir.join("server.key") };
    std::fs::write(&pki.ca, ca_cert.pem()).with_context(|| format!("cannot write {}", pki.ca.display()))?;
    auth::write_private(&dir.join("ca.key"), ca_key_pem.as_bytes())?;
    std::fs::write(&pki.server_cert, server.pem())
        .with_context(|| format!("cannot write {}", pki.server_cert.display()))?;
    auth::write_private(&pki.server_key, server_key.serialize_pem().as_bytes())?;
    Ok(pki)
}
