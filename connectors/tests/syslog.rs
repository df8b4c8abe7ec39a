//! Syslog/CEF over TCP (octet counting), UDP and TLS to receivers on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{ALLOW, notification, pki};
use connectors::{Config, Kind, Outcome, Secrets, Settings, build};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpListener, UdpSocket};

fn target(t: String) -> Config {
    Config { target: Some(t), ..Config::default() }
}

/// Reads one connection to EOF and splits the octet-counted frame.
async fn read_frame<S: AsyncRead + Unpin>(mut s: S) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await.unwrap();
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        assert!(buf.len() < 64 * 1024);
    }
    let text = String::from_utf8(buf).unwrap();
    let (len, msg) = text.split_once(' ').unwrap();
    assert_eq!(len.parse::<usize>().unwrap(), msg.len(), "octet count matches: {text:?}");
    msg.to_owned()
}

fn check_cef(line: &str) {
    assert!(line.starts_with("<163>1 "), "{line}");
    assert!(line.contains(" vigil - - - CEF:0|vigil|vigil|"), "{line}");
    assert!(line.contains("|ssh_bruteforce|[HIGH] Brute force \\| ssh=22 (Acme)|8|"), "header escaping: {line}");
    assert!(line.contains("externalId=dlv-42-7 cs1Label=org cs1=Acme cs2Label=status cs2=open cnt=12 start=1767323045000 end=1767323645000"), "{line}");
    assert!(
        line.ends_with("msg=Rule: ssh_bruteforce\\nHits: 12\\nback\\\\slash & <b>bold</b>"),
        "extension escaping: {line}"
    );
    assert!(!line.contains('\n'));
}

#[tokio::test]
async fn tcp_octet_counted_cef() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let recv = tokio::spawn(async move { read_frame(l.accept().await.unwrap().0).await });
    let c = build(Kind::Syslog, &target(format!("tcp://{addr}")), &Secrets::default(), ALLOW).unwrap();
    assert_eq!(c.send(&notification()).await, Outcome::Delivered { status: None });
    check_cef(&recv.await.unwrap());
}

#[tokio::test]
async fn udp_one_datagram() {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    let c = build(Kind::Syslog, &target(format!("udp://{addr}")), &Secrets::default(), ALLOW).unwrap();
    assert_eq!(c.health().await.as_str(), "delivered");
    assert_eq!(c.send(&notification()).await.as_str(), "delivered");
    let mut buf = vec![0u8; 65536];
    let (n, _) =
        tokio::time::timeout(std::time::Duration::from_secs(5), sock.recv_from(&mut buf)).await.unwrap().unwrap();
    check_cef(std::str::from_utf8(&buf[..n]).unwrap());
    // A huge body still fits one datagram of at most 8 KiB.
    let mut big = notification();
    big.body = "x=y\n".repeat(10_000);
    assert_eq!(c.send(&big).await.as_str(), "delivered");
    let (n, _) =
        tokio::time::timeout(std::time::Duration::from_secs(5), sock.recv_from(&mut buf)).await.unwrap().unwrap();
    assert!(n <= 8 * 1024, "{n}");
    assert!(std::str::from_utf8(&buf[..n]).unwrap().contains("externalId=dlv-42-7"));
}

#[tokio::test]
async fn tls_with_ca_file() {
    let p = pki("syslog-tls");
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let acc = p.acceptor.clone();
    let recv = tokio::spawn(async move {
        // The health check connects and closes first; then the message.
        let (h, _) = l.accept().await.unwrap();
        let _ = acc.accept(h).await;
        let (s, _) = l.accept().await.unwrap();
        read_frame(acc.accept(s).await.unwrap()).await
    });
    let config = Config { ca_file: Some(p.ca_file.display().to_string()), ..target(format!("tls://{addr}")) };
    let c = build(Kind::Syslog, &config, &Secrets::default(), ALLOW).unwrap();
    assert_eq!(c.health().await.as_str(), "delivered");
    assert_eq!(c.send(&notification()).await.as_str(), "delivered");
    check_cef(&recv.await.unwrap());
    // Without the CA (public roots only) the handshake fails verification: permanent.
    let l2 = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr2 = l2.local_addr().unwrap();
    let acc = p.acceptor.clone();
    tokio::spawn(async move {
        let (s, _) = l2.accept().await.unwrap();
        let _ = acc.accept(s).await;
    });
    let c = build(Kind::Syslog, &target(format!("tls://{addr2}")), &Secrets::default(), ALLOW).unwrap();
    let o = c.send(&notification()).await;
    assert!(matches!(&o, Outcome::Failed { error, .. } if error.contains("certificate")), "{o:?}");
}

#[tokio::test]
async fn refused_and_unreachable() {
    let c =
        build(Kind::Syslog, &target("udp://127.0.0.1:514".into()), &Secrets::default(), Settings::default()).unwrap();
    assert!(c.send(&notification()).await.error().unwrap().contains("allow_private_targets = true"));
    assert_eq!(c.health().await.as_str(), "failed");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let c = build(Kind::Syslog, &target(format!("tcp://127.0.0.1:{port}")), &Secrets::default(), ALLOW).unwrap();
    assert_eq!(c.send(&notification()).await.as_str(), "retry");
}
