//! TLS for syslog (RFC 5425): the listener's certificate (given, or a
//! self-signed one made once in the data directory) and the sender's trust.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// Where the certificate came from, for the start-up lines.
pub struct ServerTls {
    /// The acceptor for the listener.
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// The certificate file senders should trust (their `--ca`).
    pub cert: PathBuf,
    /// Whether vigil made it.
    pub self_signed: bool,
}

/// The listener's TLS: `cert` and `key` (PEM) when given, otherwise a
/// self-signed certificate for `localhost`, `127.0.0.1`, `::1` and
/// `extra_names`, made once under `data_dir/tls/` and reused.
pub fn server(cert: Option<&Path>, key: Option<&Path>, data_dir: &Path, extra_names: &[String]) -> Result<ServerTls> {
    let (cert, key, self_signed) = match (cert, key) {
        (Some(c), Some(k)) => (c.to_owned(), k.to_owned(), false),
        (None, None) => {
            let (c, k) = self_signed(&data_dir.join("tls"), extra_names)?;
            (c, k, true)
        }
        _ => bail!("tls.cert and tls.key go together: give both, or neither for a self-signed certificate"),
    };
    let chain = CertificateDer::pem_file_iter(&cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("cannot read the TLS certificate {}", cert.display()))?;
    if chain.is_empty() {
        bail!("{}: no PEM certificate in it", cert.display());
    }
    let private =
        PrivateKeyDer::from_pem_file(&key).with_context(|| format!("cannot read the TLS key {}", key.display()))?;
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .with_context(|| format!("{} and {} do not make a usable pair", cert.display(), key.display()))?;
    // Senders never resume sessions; unread tickets only make a sender's
    // close a reset, which can cost the last lines it sent.
    config.send_tls13_tickets = 0;
    Ok(ServerTls { acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)), cert, self_signed })
}

/// `dir/syslog-cert.pem` and `dir/syslog-key.pem`, made if missing.
fn self_signed(dir: &Path, extra_names: &[String]) -> Result<(PathBuf, PathBuf)> {
    let cert = dir.join("syslog-cert.pem");
    let key = dir.join("syslog-key.pem");
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    names.extend(extra_names.iter().filter(|n| !names.contains(n)).cloned().collect::<Vec<_>>());
    let made = rcgen::generate_simple_self_signed(names).context("cannot make a self-signed certificate")?;
    // A key left without its certificate (an interrupted first start) is replaced.
    let _ = std::fs::remove_file(&key);
    super::license::write_private(&key, made.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(&cert, made.cert.pem()).with_context(|| format!("cannot write {}", cert.display()))?;
    Ok((cert, key))
}

/// A client configuration trusting the certificates in `ca` (PEM).
pub fn client(ca: &Path) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).with_context(|| format!("cannot read {}", ca.display()))? {
        let cert = cert.with_context(|| format!("{}: not a PEM certificate", ca.display()))?;
        roots.add(cert).with_context(|| format!("{}: unusable certificate", ca.display()))?;
    }
    if roots.is_empty() {
        bail!("{}: no PEM certificate in it", ca.display());
    }
    Ok(Arc::new(ClientConfig::builder().with_root_certificates(roots).with_no_client_auth()))
}
