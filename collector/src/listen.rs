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
//!
//! Abuse is bounded too:
//! - a connection limit in all and one per source address, so one host
//!   cannot hold every slot; refused connections are reset and counted by
//!   reason;
//! - the bytes of unfinished frames, across all connections, come out of one
//!   budget: past a small allowance per connection, a partial frame may
//!   only grow while the budget lasts, after which it is cut (delivered
//!   `truncated`) and the rest of it skipped;
//! - an accept that fails (out of file descriptors: EMFILE) backs off and
//!   is logged once per interval, instead of spinning on a core.
//!
//! Shutdown drains: the listening sockets close at once, but every open
//! connection keeps being read until it has been silent for `drain_idle`
//! or `drain_timeout` has passed, so lines the kernel already accepted are
//! not lost. A line cut off by shutdown or an idle timeout is delivered
//! `truncated`, never as a whole one.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use parsers::EventTime;
use parsers::framing::{Frame, Framer, FramerConfig, datagram};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch};
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
    /// Open TCP connections at most; more are accepted and reset at once.
    pub max_connections: usize,
    /// Open TCP connections from one source address at most.
    pub max_connections_per_source: usize,
    /// Bytes of unfinished frames held across all connections, beyond
    /// [`PARTIAL_ALLOWANCE`] per connection.
    pub max_partial_bytes: usize,
    /// A TCP connection silent this long is closed.
    pub idle_timeout: Duration,
    /// At shutdown, a connection silent this long is closed…
    pub drain_idle: Duration,
    /// …and every connection is closed this long after shutdown at most.
    pub drain_timeout: Duration,
    /// A batch is sent when it holds this many messages…
    pub batch_messages: usize,
    /// …or when its first message is this old.
    pub batch_delay: Duration,
    /// Framing of TCP streams, and the longest message kept.
    pub framing: FramerConfig,
}

/// Bytes of an unfinished frame a connection may hold without drawing on
/// the shared budget: ordinary lines never need it.
pub const PARTIAL_ALLOWANCE: usize = 4 * 1024;

/// Bytes read at once by a quiet connection; a busy one reads up to
/// [`BUSY_READ`] at once. Small reads keep ten thousand idle connections at
/// tens of megabytes.
const QUIET_READ: usize = 4 * 1024;
const BUSY_READ: usize = 64 * 1024;

/// Accept errors are logged at most this often.
const ACCEPT_ERROR_REPORT: Duration = Duration::from_secs(10);

impl Default for ListenerConfig {
    fn default() -> ListenerConfig {
        ListenerConfig {
            max_connections: 10_000,
            max_connections_per_source: 256,
            max_partial_bytes: 64 << 20,
            idle_timeout: Duration::from_secs(300),
            drain_idle: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(10),
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
    /// TCP connections reset at once because of the connection limit.
    pub connections_refused: AtomicU64,
    /// TCP connections reset at once because their source had
    /// `max_connections_per_source` open.
    pub connections_refused_per_source: AtomicU64,
    /// Accepts that failed (e.g. out of file descriptors).
    pub accept_errors: AtomicU64,
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
    /// Unfinished frames cut because the partial-frame budget was spent.
    pub partial_cut: AtomicU64,
    /// Lines cut off by shutdown or an idle timeout (delivered truncated).
    pub cut_at_close: AtomicU64,
    /// Bytes of unfinished frames held beyond the per-connection allowance.
    pub partial_bytes: AtomicUsize,
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
    /// Open connections per source address (TCP and TLS together).
    sources: Arc<Mutex<HashMap<IpAddr, usize>>>,
    /// Open connections in all (TCP and TLS together).
    open: Arc<AtomicUsize>,
}

/// Why a connection ends.
enum End {
    /// The peer closed it: a last line without LF is a whole line.
    Eof,
    /// We close it (idle, shutdown drained, drain deadline): a line in
    /// progress is cut.
    Cut,
    /// Downstream is gone or the framing broke: nothing more to deliver.
    Abort,
}

/// A connection slot, released on drop.
struct Slot {
    peer: IpAddr,
    sources: Arc<Mutex<HashMap<IpAddr, usize>>>,
    open: Arc<AtomicUsize>,
    stats: Arc<ListenerStats>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut sources = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = sources.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                sources.remove(&self.peer);
            }
        }
        self.open.fetch_sub(1, Ordering::Relaxed);
        self.stats.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// This connection's draw on the shared partial-frame budget.
struct Partial<'a> {
    held: usize,
    limit: usize,
    used: &'a AtomicUsize,
}

impl Partial<'_> {
    /// Adjusts the draw to `pending` buffered bytes; false when the budget
    /// cannot cover them.
    fn fit(&mut self, pending: usize) -> bool {
        let need = pending.saturating_sub(PARTIAL_ALLOWANCE);
        if need <= self.held {
            self.used.fetch_sub(self.held - need, Ordering::Relaxed);
            self.held = need;
            return true;
        }
        let more = need - self.held;
        let granted = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| (u + more <= self.limit).then_some(u + more))
            .is_ok();
        if granted {
            self.held = need;
        }
        granted
    }
}

impl Drop for Partial<'_> {
    fn drop(&mut self) {
        self.used.fetch_sub(self.held, Ordering::Relaxed);
    }
}

impl Listeners {
    /// Listeners that send batches to `out`, stamp them with `clock`, and
    /// stop (draining open connections) when `shutdown` becomes true.
    pub fn new(
        config: ListenerConfig,
        out: mpsc::Sender<RawBatch>,
        clock: Arc<dyn Clock>,
        shutdown: watch::Receiver<bool>,
    ) -> Listeners {
        Listeners {
            config: Arc::new(config),
            out,
            stats: Arc::new(ListenerStats::default()),
            clock,
            shutdown,
            sources: Arc::new(Mutex::new(HashMap::new())),
            open: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Their counters.
    pub fn stats(&self) -> &Arc<ListenerStats> {
        &self.stats
    }

    /// Their settings.
    pub fn config(&self) -> &ListenerConfig {
        &self.config
    }

    /// Accepts TCP connections until shutdown, then drains the open ones.
    pub async fn serve_tcp(self, listener: TcpListener) {
        self.serve(listener, None).await;
    }

    /// Accepts TLS connections (RFC 5425) until shutdown, then drains the
    /// open ones. A handshake that fails or takes longer than the idle
    /// timeout (at most 10 s) closes the connection.
    pub async fn serve_tls(self, listener: TcpListener, acceptor: TlsAcceptor) {
        self.serve(listener, Some(acceptor)).await;
    }

    /// A slot for a connection from `peer`, or the counter of the reason
    /// there is none.
    fn slot(&self, peer: IpAddr) -> Result<Slot, &AtomicU64> {
        let mut sources = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
        if self.open.load(Ordering::Relaxed) >= self.config.max_connections {
            return Err(&self.stats.connections_refused);
        }
        let n = sources.entry(peer).or_insert(0);
        if *n >= self.config.max_connections_per_source {
            return Err(&self.stats.connections_refused_per_source);
        }
        *n += 1;
        self.open.fetch_add(1, Ordering::Relaxed);
        self.stats.connections_open.fetch_add(1, Ordering::Relaxed);
        Ok(Slot { peer, sources: self.sources.clone(), open: self.open.clone(), stats: self.stats.clone() })
    }

    async fn serve(self, listener: TcpListener, tls: Option<TlsAcceptor>) {
        let mut connections = JoinSet::new();
        let mut shutdown = self.shutdown.clone();
        let local = listener.local_addr().ok();
        let mut backoff = Duration::ZERO;
        let mut errors_unreported = 0u64;
        let mut last_report: Option<Instant> = None;
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(accepted) => {
                            backoff = Duration::ZERO;
                            accepted
                        }
                        Err(e) => {
                            // Out of descriptors (EMFILE/ENFILE) or memory: the
                            // pending connection stays queued, so retrying at
                            // once would spin. Wait, growing to a second.
                            ListenerStats::add(&self.stats.accept_errors, 1);
                            errors_unreported += 1;
                            if last_report.is_none_or(|t| t.elapsed() >= ACCEPT_ERROR_REPORT) {
                                let at = local.map(|a| a.to_string()).unwrap_or_default();
                                eprintln!(
                                    "vigil: cannot accept syslog connections on {at}: {e} ({errors_unreported} failures since the last report; retrying)"
                                );
                                errors_unreported = 0;
                                last_report = Some(Instant::now());
                            }
                            backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                            tokio::select! {
                                () = tokio::time::sleep(backoff) => {}
                                _ = shutdown.changed() => break,
                            }
                            continue;
                        }
                    };
                    let slot = match self.slot(peer.ip()) {
                        Ok(slot) => slot,
                        Err(reason) => {
                            ListenerStats::add(reason, 1);
                            refuse(stream);
                            continue;
                        }
                    };
                    ListenerStats::add(&self.stats.connections_accepted, 1);
                    let this = self.clone();
                    let tls = tls.clone();
                    connections.spawn(async move {
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
                        drop(slot);
                    });
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                _ = shutdown.changed() => break,
            }
        }
        // Stop accepting; the open connections drain on their own.
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
        let mut framer = self.config.framing.build();
        let mut shutdown = self.shutdown.clone();
        let mut draining: Option<Instant> = None;
        let mut partial = Partial { held: 0, limit: self.config.max_partial_bytes, used: &self.stats.partial_bytes };
        let mut batch: Vec<Received> = Vec::new();
        let mut first_at = self.clock.now();
        let mut flush_at: Option<Instant> = None;
        let mut read_size = QUIET_READ;
        let end = loop {
            let buf = framer.buffer_mut();
            buf.reserve(read_size);
            let deadline = flush_at;
            // While draining, a connection silent for `drain_idle` is done,
            // and none reads past the drain deadline.
            let idle = match draining {
                Some(until) => self.config.drain_idle.min(until.saturating_duration_since(Instant::now())),
                None => self.config.idle_timeout,
            };
            tokio::select! {
                biased;
                _ = shutdown.changed(), if draining.is_none() => {
                    draining = Some(Instant::now() + self.config.drain_timeout);
                    continue;
                }
                () = sleep_until(deadline), if deadline.is_some() => {
                    flush_at = None;
                    if !self.send(&mut batch, transport, first_at).await {
                        break End::Abort;
                    }
                    continue;
                }
                read = tokio::time::timeout(idle, stream.read_buf(buf)) => match read {
                    Err(_) => {
                        if draining.is_none() {
                            ListenerStats::add(&self.stats.connections_idle, 1);
                        }
                        break End::Cut;
                    }
                    Ok(Ok(0)) => break End::Eof,
                    Ok(Err(_)) => break End::Cut,
                    Ok(Ok(n)) => {
                        ListenerStats::add(&self.stats.bytes, n as u64);
                        // A read that filled its room asks for more next time; one
                        // that did not goes back to a small read, so a connection
                        // waiting for its next bytes holds 4 KiB of buffer.
                        read_size = if n >= read_size { (read_size * 2).min(BUSY_READ) } else { QUIET_READ };
                    }
                }
            }
            if batch.is_empty() {
                first_at = self.clock.now();
            }
            if !self.frames(&mut framer, &mut batch, peer) {
                ListenerStats::add(&self.stats.framing_errors, 1);
                self.send(&mut batch, transport, first_at).await;
                break End::Abort;
            }
            // An unfinished frame grows only while the shared budget lasts.
            if !partial.fit(framer.buffered()) {
                ListenerStats::add(&self.stats.partial_cut, 1);
                if let Some(frame) = framer.cut_partial() {
                    self.push(&mut batch, peer, frame);
                }
                partial.fit(framer.buffered());
            }
            // Nothing unfinished: let go of a grown read buffer (the frames cut
            // from it keep what they need), so a connection that falls quiet
            // after a burst or a cut line holds a few KiB, not 64.
            // The next read starts small too: a read that filled its room
            // may have emptied the socket, and a connection blocked in a
            // read holds the room it reserved.
            if framer.buffered() == 0 {
                *framer.buffer_mut() = bytes::BytesMut::new();
                read_size = QUIET_READ;
            }
            if batch.len() >= self.config.batch_messages {
                flush_at = None;
                // Waits while the pipeline is full: this connection stops
                // reading and TCP pushes back on the sender.
                if !self.send(&mut batch, transport, first_at).await {
                    break End::Abort;
                }
            } else if !batch.is_empty() && flush_at.is_none() {
                flush_at = Some(Instant::now() + self.config.batch_delay);
            }
        };
        let last = match end {
            // The sender closed the stream after it: a whole last line.
            End::Eof => framer.finish(),
            End::Cut => {
                let cut = framer.cut_partial();
                if cut.is_some() {
                    ListenerStats::add(&self.stats.cut_at_close, 1);
                }
                cut
            }
            End::Abort => None,
        };
        if let Some(frame) = last {
            self.push(&mut batch, peer, frame);
        }
        self.send(&mut batch, transport, first_at).await;
    }

    /// Cuts every complete frame out of the buffer; false on a framing
    /// error that ends the connection.
    fn frames(&self, framer: &mut Framer, batch: &mut Vec<Received>, peer: IpAddr) -> bool {
        loop {
            match framer.next_frame() {
                Ok(Some(frame)) => self.push(batch, peer, frame),
                Ok(None) => return true,
                Err(e) if e.is_fatal() => return false,
                Err(_) => {}
            }
        }
    }

    /// Adds a message to a batch, counting it.
    fn push(&self, batch: &mut Vec<Received>, peer: IpAddr, frame: Frame) {
        ListenerStats::add(&self.stats.messages, 1);
        if frame.truncated {
            ListenerStats::add(&self.stats.truncated, 1);
        }
        batch.push(Received { peer, frame });
    }

    /// Receives datagrams until shutdown, then takes what the socket has
    /// already queued. A full pipeline drops (and counts) datagrams rather
    /// than stalling the socket.
    pub async fn serve_udp(self, socket: UdpSocket) {
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
                    if batch.is_empty() {
                        first_at = self.clock.now();
                        flush_at = Some(Instant::now() + self.config.batch_delay);
                    }
                    self.take_datagram(&mut batch, &buf[..n], peer);
                    batch.len() >= self.config.batch_messages
                }
            };
            if flush {
                flush_at = None;
                self.try_send(&mut batch, first_at);
            }
        }
        // Shutdown: what the kernel already holds is received, then handed
        // over with the rest, waiting if need be.
        if batch.is_empty() {
            first_at = self.clock.now();
        }
        while let Ok((n, peer)) = socket.try_recv_from(&mut buf) {
            self.take_datagram(&mut batch, &buf[..n], peer);
            if batch.len() >= self.config.batch_messages && !self.send(&mut batch, Transport::Udp, first_at).await {
                return;
            }
        }
        self.send(&mut batch, Transport::Udp, first_at).await;
    }

    fn take_datagram(&self, batch: &mut Vec<Received>, data: &[u8], peer: SocketAddr) {
        ListenerStats::add(&self.stats.bytes, data.len() as u64);
        if let Some(frame) = datagram(Bytes::copy_from_slice(data), self.config.framing.max_frame_len) {
            self.push(batch, peer.ip(), frame);
        }
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

/// Raises this process's soft limit on open files as far as its hard limit
/// allows; returns the soft limit now in force.
pub fn raise_descriptor_limit() -> std::io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

/// Closes a refused connection with a reset, so its sender learns at once
/// that nothing it sends is taken (a plain close would let its first
/// writes succeed).
fn refuse(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
