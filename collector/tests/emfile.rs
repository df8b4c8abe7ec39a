//! The accept loop at the file-descriptor limit (EMFILE). Alone in its own
//! test binary: it lowers this process's limit on open files.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use collector::SystemClock;
use collector::listen::{ListenerConfig, Listeners};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;

/// Descriptors this process has open now.
fn open_descriptors() -> u64 {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count() as u64).unwrap_or(64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_the_accept_loop_backs_off_and_recovers() {
    let (tx, mut rx) = mpsc::channel(64);
    let (stop, shutdown) = watch::channel(false);
    // More connections allowed than descriptors exist: accept hits EMFILE.
    let config = ListenerConfig { max_connections: 10_000, ..ListenerConfig::default() };
    let listeners = Listeners::new(config, tx, Arc::new(SystemClock), shutdown);
    let stats = listeners.stats().clone();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let server = tokio::spawn(listeners.serve_tcp(l));
    let (_, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
    rlimit::setrlimit(rlimit::Resource::NOFILE, open_descriptors() + 12, hard).unwrap();
    // Clients take descriptors too; connect until one cannot.
    let mut clients = Vec::new();
    for _ in 0..12 {
        match TcpStream::connect(addr).await {
            Ok(c) => clients.push(c),
            Err(_) => break,
        }
    }
    // The queued connections cannot be accepted: errors are counted, with
    // a pause between tries (one second at most), not in a spin.
    timeout(Duration::from_secs(10), async {
        while stats.accept_errors.load(Ordering::Relaxed) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("an accept error within 10 s");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let errors = stats.accept_errors.load(Ordering::Relaxed);
    assert!(errors <= 40, "{errors} failed accepts in ~2 s: the loop spins");
    // Descriptors freed, the waiting connections are accepted and served.
    let mut last = clients.pop().unwrap();
    drop(clients);
    rlimit::setrlimit(rlimit::Resource::NOFILE, hard.min(4096), hard).unwrap();
    last.write_all(b"<13>after the limit\n").await.unwrap();
    drop(last);
    let batch = timeout(Duration::from_secs(20), rx.recv()).await.expect("served after recovery").unwrap();
    assert_eq!(&batch.items[0].frame.data[..], b"<13>after the limit");
    let _ = stop.send(true);
    let _ = timeout(Duration::from_secs(10), server).await;
}
