//! Test receivers and fixtures: a hand-written HTTP/1.1 server (plain or TLS, so the
//! same code serves the HTTPS tests), a throw-away CA, notifications, temp dirs.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

/// A request as the receiver saw it.
#[derive(Debug)]
pub struct Captured {
    pub method: String,
    pub path: String,
    /// Lower-case names.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Captured {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// Replies by path: `/s/CODE` answers CODE (429 with Retry-After: 7, 302 with a
/// Location), anything else 200.
pub fn reply_by_path(req: &Captured) -> String {
    let code: u16 = req.path.strip_prefix("/s/").and_then(|c| c.parse().ok()).unwrap_or(200);
    let mut extra = String::new();
    if code == 429 {
        extra.push_str("Retry-After: 7\r\n");
    }
    if code == 302 {
        extra.push_str("Location: http://169.254.169.254/latest/meta-data/\r\n");
    }
    let body = if code < 300 { "ok".to_owned() } else { format!("nope:\n  status {code}   from the test receiver") };
    format!("HTTP/1.1 {code} X\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
}

/// Starts an HTTP/1.1 server on 127.0.0.1 (TLS when `tls` is given). Each request is
/// sent on the channel, then answered with `reply`.
pub async fn http_server(
    tls: Option<TlsAcceptor>,
    reply: fn(&Captured) -> String,
) -> (SocketAddr, mpsc::UnboundedReceiver<Captured>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let tx = tx.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    Some(acc) => {
                        if let Ok(s) = acc.accept(tcp).await {
                            serve_one(s, tx, reply).await;
                        }
                    }
                    None => serve_one(tcp, tx, reply).await,
                }
            });
        }
    });
    (addr, rx)
}

async fn serve_one<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    tx: mpsc::UnboundedSender<Captured>,
    reply: fn(&Captured) -> String,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        assert!(buf.len() < 64 * 1024, "request head too large");
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap().split(' ');
    let method = first.next().unwrap().to_owned();
    let path = first.next().unwrap().to_owned();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    let req = Captured { method, path, headers, body };
    let resp = reply(&req);
    let _ = tx.send(req);
    let _ = s.write_all(resp.as_bytes()).await;
    let _ = s.shutdown().await;
}

/// A CA, a server certificate for 127.0.0.1/localhost signed by it, and the CA's PEM
/// written to a file (for `ca_file`).
pub struct Pki {
    pub ca_file: PathBuf,
    pub acceptor: TlsAcceptor,
    pub cert_pem: String,
    pub key_pem: String,
    pub chain_file: PathBuf,
    pub key_file: PathBuf,
}

pub fn pki(name: &str) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    ca_params.distinguished_name.push(DnType::CommonName, "vigil connectors test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf_params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    leaf_params.distinguished_name.push(DnType::CommonName, "localhost");
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();

    let dir = tempdir(name);
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();
    let chain_file = dir.join("chain.pem");
    std::fs::write(&chain_file, format!("{}{}", leaf.pem(), ca_cert.pem())).unwrap();
    let key_file = dir.join("key.pem");
    std::fs::write(&key_file, leaf_key.serialize_pem()).unwrap();

    let key = rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap();
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone(), ca_cert.der().clone()], key)
        .unwrap();
    Pki {
        ca_file,
        acceptor: TlsAcceptor::from(Arc::new(server)),
        cert_pem: leaf.pem(),
        key_pem: leaf_key.serialize_pem(),
        chain_file,
        key_file,
    }
}

/// A fresh directory under the system temp dir, unique per test process and name.
pub fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vigil-connectors-it-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn notification() -> connectors::Notification {
    connectors::Notification {
        delivery_id: "dlv-42-7".into(),
        event: "created".into(),
        title: "[HIGH] Brute force | ssh=22 (Acme)".into(),
        body: "Rule: ssh_bruteforce\nHits: 12\nback\\slash & <b>bold</b>".into(),
        org: "Acme".into(),
        severity: "high".into(),
        rule: "ssh_bruteforce".into(),
        incident: serde_json::json!({
            "id": 42, "title": "Brute force", "severity": "high", "status": "open", "hit_count": 12,
            "first_seen": "2026-01-02T03:04:05.000Z", "last_seen": "2026-01-02T03:14:05.000Z",
            "tags": ["attack.t1110"], "author": "vigil", "references": []
        }),
        at_ms: 1_767_323_645_000,
    }
}

pub const ALLOW: connectors::Settings = connectors::Settings { allow_private_targets: true };
