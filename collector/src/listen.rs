//! Syslog listeners: UDP (one datagram, one message), TCP (RFC 6587
//! framing per connection) and TLS (RFC 5425: TCP framing inside a TLS
//! session). They only receive and frame; parsing, org assignment and the
//! EPS gate run downstream on batches.
//!
//! Every connection is its own task with its own framer, so a slow, silent
//! or malformed client stalls nobody else. Memory is bounded: a
//! connection holds at most one read and one frame, batches go out over a
//! bounded channel, and when that channel is full TCP stops reading (the
//! sender's kernel buffers fill, then the sender blocks) while UDP counts
//! what it had to drop.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parsers::EventTime;
use parsers::framing::{Frame, FramerConfig, datagram};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::Clock;

/// How a message arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// A UDP datagram.
    Udp,
    /// A TCP stream.
    Tcp,
    /// A TLS session over TCP (RFC 5425).
    Tls,
}

/// One received message and who sent it.
#[derive(Clone, Debug)]
pub struct Received {
    /// The sender's address (the reporter IP).
    pub peer: IpAddr,
    /// The message.
    pub frame: Frame,
}

/// Messages received close together, handed downstream at once.
#[derive(Debug)]
pub struct RawBatch {
    /// How they arrived.
    pub transport: Transport,
    /// When the first of them was read.
    pub received_at: EventTime,
    /// The messages, in arrival order.
    pub items: Vec<Received>,
}

/// Listener settings.
#[derive(Clone, Debug)]
pub struct ListenerConfig {
    /// Open TCP connections at most; more are accepted and closed at once.
    pub max_connections: usize,
    /// A TCP connection silent this long is closed.
    pub idle_timeout: Duration,
    /// A batch is sent when it holds this many messages…
    pub batch_messages: usize,
    /// …or when its first message is this old.
    pub batch_delay: Duration,
    /// Framing of TCP streams, and the longest message kept.
    pub framing: FramerConfig,
}

impl Default for ListenerConfig {
    fn default() -> ListenerConfig {
        ListenerConfig {
            max_connections: 10_000,
            idle_timeout: Duration::from_secs(300),
            batch_messages: 512,
            batch_delay: Duration::from_millis(10),
            framing: FramerConfig::default(),
        }
    }
}

/// What the listeners have seen, for metrics.
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// TCP connections open now.
    pub connections_open: AtomicU64,
    /// TCP connections accepted in all.
    pub connections_accepted: AtomicU64,
    /// TCP connections closed at once because of the connection limit.
    pub connections_refused: AtomicU64,
    /// TCP connections closed for being idle.
    pub connections_idle: AtomicU64,
    /// TCP connections closed on a framing error (strict octet counting).
    pub framing_errors: AtomicU64,
    /// TLS connections closed because the handshake failed or took too long.
    pub tls_handshake_failures: AtomicU64,
    /// Messages received (both transports).
    pub messages: AtomicU64,
    /// Bytes received (both transports).
    pub bytes: AtomicU64,
    /// Messages cut at the maximum length.
    pub truncated: AtomicU64,
    /// UDP messages dropped because the pipeline was full.
    pub udp_dropped: AtomicU64,
}

impl ListenerStats {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Shared by every listener of a process.
#[derive(Clone)]
pub struct Listeners {
    config: Arc<ListenerConfig>,
    out: mpsc::Sender<RawBatch>,
    stats: Arc<ListenerStats>,
    clock: Arc<dyn Clock>,
    shutdown: watch::Receiver<bool>,
}

impl Listeners {
    /// Listeners that send batches to `out`, stamp them with `clock`, and
    /// stop (flushing what they hold) when `shutdown` becomes true.
    pub fn new(
        config: ListenerConfig,
        out: mpsc::Sender<RawBatch>,
        clock: Arc<dyn Clock>,
        shutdown: watch::Receiver<bool>,
    ) -> Listeners {
        Listeners { config: Arc::new(config), out, stats: Arc::new(ListenerStats::default()), clock, shutdown }
    }

    /// Their counters.
    pub fn stats(&self) -> &Arc<ListenerStats> {
        &self.stats
    }

    /// Accepts TCP connections until shutdown, then waits for every
    /// connection to hand over what it has read.
    pub async fn serve_tcp(self, listener: TcpListener) {
        self.serve(listener, None).await;
    }

    /// Accepts TLS connections (RFC 5425) until shutdown, then waits for
    /// every connection to hand over what it has read. A handshake that
    /// fails or takes longer than the idle timeout (at most 10 s) closes
    /// the connection.
    pub async fn serve_tls(self, listener: TcpListener, acceptor: TlsAcceptor) {
        self.serve(listener, Some(acceptor)).await;
    }

    async fn serve(self, listener: TcpListener, tls: Option<TlsAcceptor>) {
        let slots = Arc::new(Semaphore::new(self.config.max_connections));
        let mut connections = JoinSet::new();
        let mut shutdown = self.shutdown.clone();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, peer)) = accepted else { continue };
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        ListenerStats::add(&self.stats.connections_refused, 1);
                        drop(stream);
                        continue;
                    };
                    ListenerStats::add(&self.stats.connections_accepted, 1);
                    let this = self.clone();
                    let tls = tls.clone();
                    connections.spawn(async move {
                        this.stats.connections_open.fetch_add(1, Ordering::Relaxed);
                        let _ = stream.set_nodelay(true);
                        match tls {
                            None => this.connection(stream, peer, Transport::Tcp).await,
                            Some(acceptor) => {
                                let limit = this.config.idle_timeout.min(Duration::from_secs(10));
                                match tokio::time::timeout(limit, acceptor.accept(stream)).await {
                                    Ok(Ok(session)) => this.connection(session, peer, Transport::Tls).await,
                                    _ => ListenerStats::add(&this.stats.tls_handshake_failures, 1),
                                }
                            }
                        }
                        this.stats.connections_open.fetch_sub(1, Ordering::Relaxed);
                        drop(slot);
                    });
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                _ = shutdown.changed() => break,
            }
        }
        drop(listener);
        while connections.join_next().await.is_some() {}
    }

    async fn send(&self, batch: &mut Vec<Received>, transport: Transport, received_at: EventTime) -> bool {
        if batch.is_empty() {
            return true;
        }
        let items = std::mem::take(batch);
        self.out.send(RawBatch { transport, received_at, items }).await.is_ok()
    }

    async fn connection(&self, mut stream: impl AsyncRead + Unpin, peer: SocketAddr, transport: Transport) {
        let peer = peer.ip();
        let max = self.config.framing.max_frame_len.get();
        let mut framer = self.config.framing.build();
        let mut shutdown = self.shutdown.clone();
        let mut batch: Vec<Received> = Vec::new();
        let mut first_at = self.clock.now();
        let mut flush_at: Option<Instant> = None;
        loop {
            let buf = framer.buffer_mut();
            buf.reserve(max.min(64 * 1024));
            let deadline = flush_at;
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                () = sleep_until(deadline), if deadline.is_some() => {
                    flush_at = None;
                    if !self.send(&mut batch, transport, first_at).await {
                        return;
                    }
                    continue;
                }
                read = tokio::time::timeout(self.config.idle_timeout, stream.read_buf(buf)) => match read {
                    Err(_) => {
                        ListenerStats::add(&self.stats.connections_idle, 1);
                        break;
                    }
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Ok(Ok(n)) => ListenerStats::add(&self.stats.bytes, n as u64),
                }
            }
            if batch.is_empty() {
                first_at = self.clock.now();
            }
            loop {
                match framer.next_frame() {
                    Ok(Some(frame)) => self.push(&mut batch, peer, frame),
                    Ok(None) => break,
                    Err(e) => {
                        if e.is_fatal() {
                            ListenerStats::add(&self.stats.framing_errors, 1);
                            self.send(&mut batch, transport, first_at).await;
                            return;
                        }
                    }
                }
            }
            if batch.len() >= self.config.batch_messages {
                flush_at = None;
                // Waits while the pipeline is full: this connection stops
                // reading and TCP pushes back on the sender.
                if !self.send(&mut batch, transport, first_at).await {
                    return;
                }
            } else if !batch.is_empty() && flush_at.is_none() {
                flush_at = Some(Instant::now() + self.config.batch_delay);
            }
        }
        // End of stream, idle or shutdown: a last line without LF is still
        // a message.
        if let Some(frame) = framer.finish() {
            self.push(&mut batch, peer, frame);
        }
        self.send(&mut batch, transport, first_at).await;
    }

    /// Adds a message to a batch, counting it.
    fn push(&self, batch: &mut Vec<Received>, peer: IpAddr, frame: Frame) {
        ListenerStats::add(&self.stats.messages, 1);
        if frame.truncated {
            ListenerStats::add(&self.stats.truncated, 1);
        }
        batch.push(Received { peer, frame });
    }

    /// Receives datagrams until shutdown. A full pipeline drops (and
    /// counts) datagrams rather than stalling the socket.
    pub async fn serve_udp(self, socket: UdpSocket) {
        let max = self.config.framing.max_frame_len;
        let mut buf = vec![0u8; 65_536];
        let mut shutdown = self.shutdown.clone();
        let mut batch: Vec<Received> = Vec::new();
        let mut first_at = self.clock.now();
        let mut flush_at: Option<Instant> = None;
        loop {
            let deadline = flush_at;
            let flush = tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                () = sleep_until(deadline), if deadline.is_some() => true,
                got = socket.recv_from(&mut buf) => {
                    let Ok((n, peer)) = got else { continue };
                    ListenerStats::add(&self.stats.bytes, n as u64);
                    if let Some(frame) = datagram(Bytes::copy_from_slice(&buf[..n]), max) {
                        if batch.is_empty() {
                            first_at = self.clock.now();
                            flush_at = Some(Instant::now() + self.config.batch_delay);
                        }
                        self.push(&mut batch, peer.ip(), frame);
                    }
                    batch.len() >= self.config.batch_messages
                }
            };
            if flush {
                flush_at = None;
                self.try_send(&mut batch, first_at);
            }
        }
        // Shutdown: hand over what was received, waiting if need be.
        self.send(&mut batch, Transport::Udp, first_at).await;
    }

    fn try_send(&self, batch: &mut Vec<Received>, received_at: EventTime) {
        if batch.is_empty() {
            return;
        }
        let items = std::mem::take(batch);
        let n = items.len() as u64;
        if let Err(mpsc::error::TrySendError::Full(_) | mpsc::error::TrySendError::Closed(_)) =
            self.out.try_send(RawBatch { transport: Transport::Udp, received_at, items })
        {
            ListenerStats::add(&self.stats.udp_dropped, n);
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
