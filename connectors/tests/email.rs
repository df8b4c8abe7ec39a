//! E-mail against a real SMTP server (Python's aiosmtpd, as CI installs it) and against
//! a scripted in-process server for the replies aiosmtpd will not give (4xx, 5xx, AUTH).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::{ALLOW, notification, pki, tempdir};
use connectors::{Config, Kind, Outcome, Secrets, Settings, build};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// aiosmtpd running as a child process; killed when dropped.
struct Smtpd {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Smtpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn aiosmtpd(maildir: &Path, tls: Option<(&Path, &Path)>) -> Smtpd {
    let probe = Command::new("python3").args(["-c", "import aiosmtpd"]).status();
    assert!(
        matches!(probe, Ok(s) if s.success()),
        "the e-mail tests need Python's aiosmtpd: run `pip install aiosmtpd` (or `pip install --break-system-packages aiosmtpd`)"
    );
    // A free port: bind, note it, release it for the child.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "aiosmtpd", "-n", "-l", &addr.to_string()]);
    if let Some((cert, key)) = tls {
        cmd.arg("--tlscert").arg(cert).arg("--tlskey").arg(key);
    }
    // Maildir makes its tmp/new/cur only when the directory does not exist yet.
    cmd.args(["-c", "aiosmtpd.handlers.Mailbox"]).arg(maildir.join("mail"));
    // Its log (tracebacks for sessions a test breaks on purpose) goes to a file, not the test output.
    let log = maildir.join("aiosmtpd.log");
    let child =
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(std::fs::File::create(&log).unwrap()).spawn().unwrap();
    let mut smtpd = Smtpd { child, addr };
    // The child is ready when it accepts connections; it is an external process, so poll.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return smtpd;
        }
        if let Ok(Some(status)) = smtpd.child.try_wait() {
            panic!("aiosmtpd exited early ({status}); see {}", log.display());
        }
        assert!(Instant::now() < deadline, "aiosmtpd did not start listening on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn delivered_messages(maildir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(maildir.join("mail").join("new")) else { return Vec::new() };
    entries.map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap()).collect()
}

fn email_config(to: &[&str]) -> Config {
    Config { to: to.iter().map(|s| s.to_string()).collect(), ..Config::default() }
}

fn url(u: String) -> Secrets {
    Secrets { url: Some(u), secret: None }
}

#[tokio::test]
async fn plain_smtp_to_aiosmtpd() {
    let dir = tempdir("maildir-plain");
    let smtpd = aiosmtpd(&dir, None);
    let config = Config {
        from: Some("Vigil <alerts@example.com>".into()),
        ..email_config(&["soc@example.com", "oncall@example.com"])
    };
    let c = build(Kind::Email, &config, &url(format!("smtp+plain://{}", smtpd.addr)), ALLOW).unwrap();
    assert_eq!(c.health().await, Outcome::Delivered { status: Some(221) });
    assert_eq!(c.send(&notification()).await, Outcome::Delivered { status: Some(250) });
    let got = delivered_messages(&dir);
    assert_eq!(got.len(), 1, "{got:?}");
    let m = &got[0];
    assert!(m.contains("Subject: [HIGH] Brute force | ssh=22 (Acme)"), "{m}");
    assert!(m.contains("Message-ID: <dlv-42-7@vigil>"), "{m}");
    assert!(m.contains("X-Vigil-Delivery: dlv-42-7"), "{m}");
    assert!(m.contains("From: Vigil <alerts@example.com>"), "{m}");
    assert!(m.contains("To: soc@example.com, oncall@example.com"), "{m}");
    assert!(m.contains("Content-Type: text/plain"), "{m}");
    assert!(m.contains("Hits: 12"), "{m}");
    drop(smtpd);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn starttls_to_aiosmtpd_with_ca_file() {
    let dir = tempdir("maildir-tls");
    let p = pki("smtp-starttls");
    let smtpd = aiosmtpd(&dir, Some((&p.chain_file, &p.key_file)));
    let config = Config { ca_file: Some(p.ca_file.display().to_string()), ..email_config(&["soc@example.com"]) };
    let c = build(Kind::Email, &config, &url(format!("smtp://{}", smtpd.addr)), ALLOW).unwrap();
    assert_eq!(c.send(&notification()).await.as_str(), "delivered");
    assert_eq!(delivered_messages(&dir).len(), 1);
    // Without the CA, STARTTLS fails verification: permanent.
    let c =
        build(Kind::Email, &email_config(&["soc@example.com"]), &url(format!("smtp://{}", smtpd.addr)), ALLOW).unwrap();
    let o = c.send(&notification()).await;
    assert!(matches!(&o, Outcome::Failed { error, .. } if error.contains("STARTTLS")), "{o:?}");
    drop(smtpd);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn starttls_required_for_smtp_scheme() {
    let dir = tempdir("maildir-nostarttls");
    let smtpd = aiosmtpd(&dir, None);
    let c =
        build(Kind::Email, &email_config(&["soc@example.com"]), &url(format!("smtp://{}", smtpd.addr)), ALLOW).unwrap();
    let o = c.send(&notification()).await;
    assert!(matches!(&o, Outcome::Failed { error, .. } if error.contains("does not offer STARTTLS")), "{o:?}");
    assert!(delivered_messages(&dir).is_empty());
    drop(smtpd);
    let _ = std::fs::remove_dir_all(&dir);
}

/// What the scripted server saw.
#[derive(Debug, Default)]
struct Session {
    auth: Option<String>,
    data: Option<String>,
}

/// A scripted SMTP server: answers MAIL FROM with `mail_reply`, supports AUTH PLAIN.
async fn scripted(
    mail_reply: &'static str,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> (SocketAddr, mpsc::UnboundedReceiver<Session>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let tx = tx.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let session = match tls {
                    Some(acc) => match acc.accept(s).await {
                        Ok(s) => dialogue(s, mail_reply).await,
                        Err(_) => return,
                    },
                    None => dialogue(s, mail_reply).await,
                };
                let _ = tx.send(session);
            });
        }
    });
    (addr, rx)
}

async fn dialogue<S: AsyncRead + AsyncWrite + Unpin>(s: S, mail_reply: &str) -> Session {
    let mut s = BufReader::new(s);
    let mut session = Session::default();
    let _ = s.write_all(b"220 scripted ESMTP\r\n").await;
    loop {
        let mut line = String::new();
        if (&mut s).take(4096).read_line(&mut line).await.unwrap_or(0) == 0 {
            return session;
        }
        let upper = line.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") {
            "250-scripted\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n".into()
        } else if let Some(b64) = line.strip_prefix("AUTH PLAIN ") {
            let raw = base64::engine::general_purpose::STANDARD.decode(b64.trim()).unwrap();
            session.auth = Some(String::from_utf8(raw).unwrap());
            "235 2.7.0 ok\r\n".into()
        } else if upper.starts_with("MAIL FROM") {
            format!("{mail_reply}\r\n")
        } else if upper.starts_with("RCPT TO") {
            "250 ok\r\n".into()
        } else if upper.starts_with("DATA") {
            let _ = s.write_all(b"354 go ahead\r\n").await;
            let mut data = String::new();
            while !data.ends_with("\r\n.\r\n") {
                let mut l = String::new();
                if (&mut s).take(65536).read_line(&mut l).await.unwrap_or(0) == 0 {
                    return session;
                }
                data.push_str(&l);
            }
            session.data = Some(data);
            "250 queued\r\n".into()
        } else if upper.starts_with("QUIT") {
            let _ = s.write_all(b"221 bye\r\n").await;
            return session;
        } else if upper.starts_with("RSET") || upper.starts_with("NOOP") {
            "250 ok\r\n".into()
        } else {
            "502 not implemented\r\n".into()
        };
        if s.write_all(reply.as_bytes()).await.is_err() {
            return session;
        }
    }
}

#[tokio::test]
async fn smtp_4xx_retries_and_5xx_fails() {
    let (addr, _rx) = scripted("451 4.3.0 try again later", None).await;
    let c = build(Kind::Email, &email_config(&["a@example.com"]), &url(format!("smtp+plain://{addr}")), ALLOW).unwrap();
    let o = c.send(&notification()).await;
    assert!(matches!(o, Outcome::Retry { status: Some(451), .. }), "{o:?}");
    let (addr, _rx) = scripted("550 5.7.1 relaying denied", None).await;
    let c = build(Kind::Email, &email_config(&["a@example.com"]), &url(format!("smtp+plain://{addr}")), ALLOW).unwrap();
    let o = c.send(&notification()).await;
    assert!(matches!(o, Outcome::Failed { status: Some(550), .. }), "{o:?}");
}

#[tokio::test]
async fn smtps_with_auth_uses_decoded_user_and_secret() {
    let p = pki("smtps");
    let (addr, mut rx) = scripted("250 ok", Some(p.acceptor.clone())).await;
    let config = Config { ca_file: Some(p.ca_file.display().to_string()), ..email_config(&["a@example.com"]) };
    let secrets = Secrets { url: Some(format!("smtps://alice%40corp@{addr}")), secret: Some("s3cr3t pw".into()) };
    let c = build(Kind::Email, &config, &secrets, ALLOW).unwrap();
    let o = c.send(&notification()).await;
    assert_eq!(o, Outcome::Delivered { status: Some(250) });
    let session = rx.recv().await.unwrap();
    assert_eq!(session.auth.as_deref(), Some("\0alice@corp\0s3cr3t pw"));
    let data = session.data.unwrap();
    assert!(data.contains("Message-ID: <dlv-42-7@vigil>"), "{data}");
    assert!(data.contains("From: vigil@localhost"), "{data}");
}

#[tokio::test]
async fn email_egress_guard_and_unreachable() {
    let c = build(
        Kind::Email,
        &email_config(&["a@example.com"]),
        &url("smtp+plain://127.0.0.1:25".into()),
        Settings::default(),
    )
    .unwrap();
    let o = c.send(&notification()).await;
    assert!(matches!(&o, Outcome::Failed { error, .. } if error.contains("allow_private_targets")), "{o:?}");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let c =
        build(Kind::Email, &email_config(&["a@example.com"]), &url(format!("smtp+plain://127.0.0.1:{port}")), ALLOW)
            .unwrap();
    assert_eq!(c.send(&notification()).await.as_str(), "retry");
}
