//! The listeners on real loopback sockets: framing per connection, one
//! stalled or abusive client never holding up the others, the connection
//! limit, idle timeouts, backpressure without loss on TCP, counted drops
//! on UDP, and shutdown handing over everything read.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use collector::SystemClock;
use collector::listen::{ListenerConfig, Listeners, RawBatch};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;

struct Setup {
    listeners: Listeners,
    rx: mpsc::Receiver<RawBatch>,
    stop: watch::Sender<bool>,
}

fn setup(config: ListenerConfig, capacity: usize) -> Setup {
    let (tx, rx) = mpsc::channel(capacity);
    let (stop, shutdown) = watch::channel(false);
    Setup { listeners: Listeners::new(config, tx, Arc::new(SystemClock), shutdown), rx, stop }
}

async fn tcp(listeners: &Listeners) -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(listeners.clone().serve_tcp(l));
    addr
}

/// Receives messages until `n` have arrived (at most 20 s).
async fn collect(rx: &mut mpsc::Receiver<RawBatch>, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    while out.len() < n {
        let batch = timeout(Duration::from_secs(20), rx.recv()).await.expect("messages within 20 s").unwrap();
        out.extend(batch.items.iter().map(|r| String::from_utf8_lossy(&r.frame.data).into_owned()));
    }
    out
}

/// A connection to `addr` is refused: reset as it connects, or closed
/// before anything is read.
async fn assert_refused(addr: std::net::SocketAddr) {
    let Ok(mut c) = TcpStream::connect(addr).await else { return };
    let mut buf = [0u8; 1];
    let r = timeout(Duration::from_secs(10), tokio::io::AsyncReadExt::read(&mut c, &mut buf)).await.unwrap();
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    timeout(Duration::from_secs(10), async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what} within 10 s"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_frames_each_connection_and_a_stalled_client_holds_up_nobody() {
    let mut s = setup(ListenerConfig::default(), 64);
    let addr = tcp(&s.listeners).await;
    // A client that sends half a line and then nothing.
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled.write_all(b"<13>Nov 22 10:00:00 h app: this line never ends").await.unwrap();
    // A client sending garbage bytes, and two well-behaved ones (one LF,
    // one octet-counted).
    let mut garbage = TcpStream::connect(addr).await.unwrap();
    garbage.write_all(&[0xff, 0x00, 0xfe, b'\n', b'\n', 0x80, b'\n']).await.unwrap();
    let lf = tokio::spawn(async move {
        let mut c = TcpStream::connect(addr).await.unwrap();
        for i in 0..1000 {
            c.write_all(format!("<13>Nov 22 10:00:00 h app: lf {i}\n").as_bytes()).await.unwrap();
        }
    });
    let oc = tokio::spawn(async move {
        let mut c = TcpStream::connect(addr).await.unwrap();
        for i in 0..1000 {
            let msg = format!("<13>1 2026-11-22T10:00:00Z h app - - - oc {i}");
            c.write_all(format!("{} {msg}", msg.len()).as_bytes()).await.unwrap();
        }
    });
    lf.await.unwrap();
    oc.await.unwrap();
    let got = collect(&mut s.rx, 2002).await;
    assert_eq!(got.iter().filter(|m| m.contains(": lf ")).count(), 1000);
    assert_eq!(got.iter().filter(|m| m.contains(" - - - oc ")).count(), 1000);
    // Each connection's messages stay in order.
    let n = |s: &String| s.rsplit(' ').next().unwrap().parse::<u32>().unwrap();
    let lf_order: Vec<u32> = got.iter().filter(|m| m.contains(": lf ")).map(n).collect();
    assert_eq!(lf_order, (0..1000).collect::<Vec<_>>());
    // The stalled client's half line arrives when it closes.
    drop(stalled);
    let last = collect(&mut s.rx, 1).await;
    assert_eq!(last, ["<13>Nov 22 10:00:00 h app: this line never ends"]);
    drop(garbage);
    let _ = s.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_limit_refuses_extra_connections_and_idle_ones_are_closed() {
    let config =
        ListenerConfig { max_connections: 2, idle_timeout: Duration::from_millis(300), ..ListenerConfig::default() };
    let s = setup(config, 64);
    let addr = tcp(&s.listeners).await;
    let stats = s.listeners.stats().clone();
    let mut a = TcpStream::connect(addr).await.unwrap();
    let _b = TcpStream::connect(addr).await.unwrap();
    wait_for("two connections accepted", || stats.connections_accepted.load(Ordering::Relaxed) == 2).await;
    // The third is reset by the server: its connect or first read fails.
    assert_refused(addr).await;
    assert_eq!(stats.connections_refused.load(Ordering::Relaxed), 1);
    // Idle connections are closed after the timeout.
    let mut buf = [0u8; 1];
    let r = timeout(Duration::from_secs(10), tokio::io::AsyncReadExt::read(&mut a, &mut buf)).await.unwrap();
    assert!(matches!(r, Ok(0) | Err(_)));
    wait_for("both idle connections closed", || stats.connections_idle.load(Ordering::Relaxed) == 2).await;
    wait_for("slots freed", || stats.connections_open.load(Ordering::Relaxed) == 0).await;
    // Slots are free again.
    let mut d = TcpStream::connect(addr).await.unwrap();
    d.write_all(b"hello\n").await.unwrap();
    wait_for("a new connection accepted", || stats.connections_accepted.load(Ordering::Relaxed) == 3).await;
    assert_eq!(stats.connections_refused.load(Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_pipeline_pushes_back_on_tcp_without_losing_anything() {
    let config = ListenerConfig { batch_messages: 16, ..ListenerConfig::default() };
    let mut s = setup(config, 1);
    let addr = tcp(&s.listeners).await;
    let sender = tokio::spawn(async move {
        let mut c = TcpStream::connect(addr).await.unwrap();
        let line = format!("<13>Nov 22 10:00:00 h app: {}\n", "x".repeat(200));
        // 46 MB: more than loopback socket buffers can absorb.
        for _ in 0..200_000 {
            c.write_all(line.as_bytes()).await.unwrap();
        }
    });
    // Read slowly at first: the sender must wait, not lose messages.
    let mut n = 0;
    for _ in 0..20 {
        n += s.rx.recv().await.unwrap().items.len();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!sender.is_finished(), "the sender is held back while the pipeline is full");
    n += collect(&mut s.rx, 200_000 - n).await.len();
    sender.await.unwrap();
    assert_eq!(n, 200_000);
    let _ = s.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_takes_datagrams_and_counts_what_a_full_pipeline_drops() {
    let mut s = setup(ListenerConfig { batch_messages: 8, ..ListenerConfig::default() }, 2);
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(s.listeners.clone().serve_udp(sock));
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for i in 0..10 {
        client.send_to(format!("<13>Nov 22 10:00:00 h app: udp {i}\n").as_bytes(), addr).await.unwrap();
    }
    let got = collect(&mut s.rx, 10).await;
    assert_eq!(got[0], "<13>Nov 22 10:00:00 h app: udp 0", "trailing LF removed");
    // Now nobody reads: after two batches the channel is full and the
    // listener drops and counts instead of blocking.
    let stats = s.listeners.stats().clone();
    for i in 0..2_000 {
        client.send_to(format!("<13>Nov 22 10:00:00 h app: flood {i}").as_bytes(), addr).await.unwrap();
        if i % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    wait_for("drops counted", || stats.udp_dropped.load(Ordering::Relaxed) > 0).await;
    // The socket still works once the pipeline drains.
    while s.rx.try_recv().is_ok() {}
    client.send_to(b"<13>Nov 22 10:00:00 h app: after", addr).await.unwrap();
    loop {
        let got = collect(&mut s.rx, 1).await;
        if got.iter().any(|m| m.ends_with("after")) {
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_hands_over_everything_already_read() {
    let config = ListenerConfig {
        batch_delay: Duration::from_secs(3600),
        batch_messages: 1_000_000,
        ..ListenerConfig::default()
    };
    let mut s = setup(config, 64);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let server = tokio::spawn(s.listeners.clone().serve_tcp(l));
    let mut c = TcpStream::connect(addr).await.unwrap();
    for i in 0..100 {
        c.write_all(format!("line {i}\n").as_bytes()).await.unwrap();
    }
    c.flush().await.unwrap();
    let stats = s.listeners.stats().clone();
    wait_for("100 messages read", || stats.messages.load(Ordering::Relaxed) == 100).await;
    s.stop.send(true).unwrap();
    timeout(Duration::from_secs(10), server).await.unwrap().unwrap();
    let got = collect(&mut s.rx, 100).await;
    assert_eq!(got.len(), 100);
    assert_eq!(got[99], "line 99");
}

/// A TLS acceptor with a fresh self-signed certificate for 127.0.0.1, and
/// a connector that trusts it.
fn tls_pair() -> (tokio_rustls::TlsAcceptor, tokio_rustls::TlsConnector) {
    use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    let der = cert.der().clone();
    let key = tokio_rustls::rustls::pki_types::PrivateKeyDer::try_from(signing_key.serialize_der()).unwrap();
    let server = ServerConfig::builder().with_no_client_auth().with_single_cert(vec![der.clone()], key).unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(der).unwrap();
    let client = ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    (tokio_rustls::TlsAcceptor::from(Arc::new(server)), tokio_rustls::TlsConnector::from(Arc::new(client)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_frames_each_session_and_a_client_that_never_handshakes_holds_up_nobody() {
    let mut s = setup(ListenerConfig { idle_timeout: Duration::from_millis(500), ..ListenerConfig::default() }, 64);
    let (acceptor, connector) = tls_pair();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(s.listeners.clone().serve_tls(l, acceptor));
    // A client that connects and says nothing, and one that speaks plain syslog.
    let _silent = TcpStream::connect(addr).await.unwrap();
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain.write_all(b"<13>Nov 22 10:00:00 h app: not TLS\n").await.unwrap();
    // RFC 5425: octet counting inside the session; LF framing works too.
    let stream = TcpStream::connect(addr).await.unwrap();
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut session = connector.connect(name, stream).await.unwrap();
    for i in 0..500 {
        let msg = format!("<13>1 2026-11-22T10:00:00Z h app - - - tls {i}");
        session.write_all(format!("{} {msg}", msg.len()).as_bytes()).await.unwrap();
    }
    session.shutdown().await.unwrap();
    let mut got = Vec::new();
    while got.len() < 500 {
        let batch = timeout(Duration::from_secs(20), s.rx.recv()).await.expect("messages within 20 s").unwrap();
        assert_eq!(batch.transport, collector::listen::Transport::Tls);
        got.extend(batch.items.iter().map(|r| String::from_utf8_lossy(&r.frame.data).into_owned()));
    }
    assert_eq!(got.len(), 500);
    assert!(got.iter().enumerate().all(|(i, m)| m.ends_with(&format!(" tls {i}"))), "in order, whole: {got:?}");
    let stats = s.listeners.stats().clone();
    wait_for("both bad clients closed", || stats.tls_handshake_failures.load(Ordering::Relaxed) == 2).await;
    assert!(s.rx.try_recv().is_err(), "nothing from the clients that never completed a handshake");
    let _ = s.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_source_cannot_hold_every_slot_and_refusals_are_counted_by_reason() {
    let config = ListenerConfig { max_connections: 10, max_connections_per_source: 2, ..ListenerConfig::default() };
    let s = setup(config, 64);
    let addr = tcp(&s.listeners).await;
    let stats = s.listeners.stats().clone();
    let _a = TcpStream::connect(addr).await.unwrap();
    let _b = TcpStream::connect(addr).await.unwrap();
    wait_for("two connections open", || stats.connections_open.load(Ordering::Relaxed) == 2).await;
    // Refused with a reset: the sender's writes fail instead of vanishing.
    assert_refused(addr).await;
    wait_for("refused per source", || stats.connections_refused_per_source.load(Ordering::Relaxed) == 1).await;
    assert_eq!(stats.connections_refused.load(Ordering::Relaxed), 0, "the global limit was not reached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_lines_share_one_memory_budget_and_are_cut_past_it() {
    // 16 KiB for all partial frames beyond 4 KiB each: the third client's
    // 12 KiB unfinished line does not fit once two hold 8 KiB of budget each.
    let config = ListenerConfig { max_partial_bytes: 16 * 1024, ..ListenerConfig::default() };
    let mut s = setup(config, 64);
    let addr = tcp(&s.listeners).await;
    let stats = s.listeners.stats().clone();
    let long = |c: char| format!("<13>Nov 22 10:00:00 h app: {}", c.to_string().repeat(12 * 1024));
    let mut clients = Vec::new();
    for c in ['a', 'b', 'c'] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(long(c).as_bytes()).await.unwrap();
        clients.push(stream);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_for("a partial line cut", || stats.partial_cut.load(Ordering::Relaxed) >= 1).await;
    assert!(stats.partial_bytes.load(Ordering::Relaxed) <= 16 * 1024);
    // Every client finishes its line and sends one more. A cut line's rest
    // is skipped and the connection goes on with the next line; a line
    // that fitted is whole.
    for (i, client) in clients.iter_mut().enumerate() {
        client
            .write_all(format!(" rest of the long line\n<13>Nov 22 10:00:00 h app: next {i}\n").as_bytes())
            .await
            .unwrap();
    }
    let mut long_lines = Vec::new();
    let mut next = 0;
    while next < 3 {
        let batch = timeout(Duration::from_secs(20), s.rx.recv()).await.expect("messages within 20 s").unwrap();
        for r in batch.items {
            let text = String::from_utf8_lossy(&r.frame.data).into_owned();
            if text.contains(": next ") {
                next += 1;
            } else {
                long_lines.push((text.ends_with(" rest of the long line"), r.frame.truncated));
            }
        }
    }
    assert_eq!(long_lines.len(), 3);
    assert!(
        long_lines.iter().all(|(whole, cut)| whole != cut),
        "a line is either whole or cut and flagged: {long_lines:?}"
    );
    assert!(long_lines.iter().any(|(_, cut)| *cut));
    assert_eq!(stats.partial_bytes.load(Ordering::Relaxed), 0, "nothing unfinished is held any more");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_cut_off_by_an_idle_timeout_or_shutdown_is_truncated_and_the_rest_drained() {
    let config = ListenerConfig {
        idle_timeout: Duration::from_millis(300),
        drain_idle: Duration::from_millis(300),
        ..ListenerConfig::default()
    };
    let mut s = setup(config, 64);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let server = tokio::spawn(s.listeners.clone().serve_tcp(l));
    // Idle: the unfinished line is delivered flagged.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"<13>whole\n<13>Failed password for invalid user al").await.unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        let batch = timeout(Duration::from_secs(20), s.rx.recv()).await.unwrap().unwrap();
        got.extend(
            batch.items.into_iter().map(|r| (String::from_utf8_lossy(&r.frame.data).into_owned(), r.frame.truncated)),
        );
    }
    assert_eq!(got, [("<13>whole".to_owned(), false), ("<13>Failed password for invalid user al".to_owned(), true)]);
    // Shutdown: an open connection is still read until it falls silent, so
    // what it sent after the signal arrives too.
    let mut open = TcpStream::connect(addr).await.unwrap();
    open.write_all(b"<13>before\n").await.unwrap();
    let stats = s.listeners.stats().clone();
    wait_for("read before the signal", || stats.messages.load(Ordering::Relaxed) == 3).await;
    s.stop.send(true).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    open.write_all(b"<13>after the signal\n").await.unwrap();
    timeout(Duration::from_secs(10), server).await.unwrap().unwrap();
    let got = collect(&mut s.rx, 2).await;
    assert_eq!(got, ["<13>before", "<13>after the signal"]);
    // And no new connection is taken once the signal is given.
    assert!(TcpStream::connect(addr).await.is_err() || stats.connections_accepted.load(Ordering::Relaxed) == 2);
}
