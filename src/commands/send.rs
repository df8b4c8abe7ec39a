//! `vigil send`: replays a log file to a syslog listener at a given rate,
//! a load generator for tests and capacity planning. Lines go out as they
//! are in the file (LF-framed over TCP, or RFC 6587 octet-counted with
//! `--octet-counting`; one datagram per line over UDP), paced by a token
//! bucket, with a progress bar on stderr and a final report on stdout.

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::net::{TcpStream, ToSocketAddrs, UdpSocket};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;

use super::parse::read_batches;

/// Arguments of `vigil send`.
#[derive(Args)]
pub struct SendArgs {
    /// Where to: tcp://HOST:PORT, udp://HOST:PORT or tls://HOST:PORT.
    #[arg(long, value_name = "URL")]
    to: String,
    /// For tls://: the certificate (or CA) to trust, PEM. `vigil run`
    /// prints the path of its self-signed one.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Lines per second (default: as fast as the listener takes them).
    #[arg(long, value_name = "EPS")]
    rate: Option<u64>,
    /// Start over at the end of the file (stop with --limit, --duration or Ctrl-C).
    #[arg(long = "loop")]
    repeat: bool,
    /// Stop after this many lines.
    #[arg(long, value_name = "LINES")]
    limit: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    duration: Option<f64>,
    /// Frame TCP messages with RFC 6587 octet counting instead of LF.
    #[arg(long)]
    octet_counting: bool,
    /// Replace each line's RFC 5424 or RFC 3164 timestamp with the time it
    /// is sent (UTC), as a live device would stamp it; other lines go as they are.
    #[arg(long)]
    restamp: bool,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
    /// The log file to send.
    file: PathBuf,
}

enum Sink {
    Tcp(BufWriter<TcpStream>, bool),
    Tls(Box<BufWriter<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>>),
    Udp(UdpSocket),
}

impl Sink {
    fn open(to: &str, ca: Option<&std::path::Path>) -> Result<Sink> {
        let (scheme, addr) = to
            .split_once("://")
            .with_context(|| format!("--to {to:?}: expected tcp://HOST:PORT, udp://HOST:PORT or tls://HOST:PORT"))?;
        let target = addr
            .to_socket_addrs()
            .with_context(|| format!("--to {to:?}: cannot resolve {addr}"))?
            .next()
            .with_context(|| format!("--to {to:?}: {addr} has no address"))?;
        match scheme {
            "tcp" => {
                let stream = TcpStream::connect_timeout(&target, Duration::from_secs(10))
                    .with_context(|| format!("cannot connect to {target}"))?;
                let _ = stream.set_nodelay(true);
                Ok(Sink::Tcp(BufWriter::with_capacity(256 * 1024, stream), false))
            }
            "tls" => {
                let ca = ca.with_context(|| {
                    format!("--to {to:?}: tls:// needs --ca FILE (the listener's certificate or its CA, PEM)")
                })?;
                let config = super::tls::client(ca)?;
                let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h).trim_start_matches('[').trim_end_matches(']');
                let name = rustls::pki_types::ServerName::try_from(host.to_owned())
                    .with_context(|| format!("--to {to:?}: {host} is not a valid TLS server name"))?;
                let connection = rustls::ClientConnection::new(config, name).context("cannot start a TLS session")?;
                let tcp = TcpStream::connect_timeout(&target, Duration::from_secs(10))
                    .with_context(|| format!("cannot connect to {target}"))?;
                let _ = tcp.set_nodelay(true);
                let mut stream = rustls::StreamOwned::new(connection, tcp);
                // Handshake now, so a certificate problem is reported as one.
                while stream.conn.is_handshaking() {
                    stream
                        .conn
                        .complete_io(&mut stream.sock)
                        .with_context(|| format!("TLS handshake with {target} failed"))?;
                }
                Ok(Sink::Tls(Box::new(BufWriter::with_capacity(256 * 1024, stream))))
            }
            "udp" => {
                let local = if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
                let socket = UdpSocket::bind(local).context("cannot open a UDP socket")?;
                socket.connect(target).with_context(|| format!("cannot address {target}"))?;
                Ok(Sink::Udp(socket))
            }
            other => bail!("--to {to:?}: unknown scheme {other:?} (tcp, udp or tls)"),
        }
    }

    fn send(&mut self, line: &[u8]) -> io::Result<()> {
        match self {
            Sink::Tcp(w, octets) => {
                if *octets {
                    write!(w, "{} ", line.len())?;
                    w.write_all(line)
                } else {
                    w.write_all(line)?;
                    w.write_all(b"\n")
                }
            }
            // RFC 5425: octet counting inside the TLS session.
            Sink::Tls(w) => {
                write!(w, "{} ", line.len())?;
                w.write_all(line)
            }
            Sink::Udp(s) => s.send(line).map(drop),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Tcp(w, _) => w.flush(),
            Sink::Tls(w) => w.flush(),
            Sink::Udp(_) => Ok(()),
        }
    }

    /// Flushes, closes our side and waits for the listener to close its
    /// side: a listener closes after it has read everything, so a clean
    /// end means every line was taken. A reset (a listener that refused
    /// the connection, or went away) is an error: the lines may be lost.
    fn finish(&mut self) -> io::Result<()> {
        self.flush()?;
        match self {
            Sink::Tcp(w, _) => {
                let stream = w.get_mut();
                stream.shutdown(std::net::Shutdown::Write)?;
                read_to_close(stream, false)
            }
            Sink::Tls(w) => {
                let stream = w.get_mut();
                stream.conn.send_close_notify();
                stream.flush()?;
                // Closing a socket with unread input (e.g. TLS 1.3 session
                // tickets) resets the connection, and a reset can discard what
                // the listener has not read yet: half-close and read to the end.
                stream.sock.shutdown(std::net::Shutdown::Write)?;
                read_to_close(stream, true)
            }
            Sink::Udp(_) => Ok(()),
        }
    }
}

/// Reads until the peer closes (within 60 s). A TLS peer may close without
/// a close_notify of its own: that is still a clean end.
fn read_to_close(stream: &mut (impl io::Read + AsSocket), tls: bool) -> io::Result<()> {
    stream.socket().set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut sink = [0u8; 4096];
    loop {
        match io::Read::read(stream, &mut sink) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if tls && e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Err(io::Error::new(e.kind(), "the listener did not close the connection within 60 s"));
            }
            Err(e) => return Err(io::Error::new(e.kind(), format!("the listener reset the connection ({e})"))),
        }
    }
}

/// The TCP socket under a stream.
trait AsSocket {
    fn socket(&self) -> &TcpStream;
}

impl AsSocket for TcpStream {
    fn socket(&self) -> &TcpStream {
        self
    }
}

impl AsSocket for rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    fn socket(&self) -> &TcpStream {
        &self.sock
    }
}

#[derive(Default)]
struct Restamper {
    millis: i64,
    rfc5424: String,
    secs: i64,
    rfc3164: String,
    line: Vec<u8>,
}

impl Restamper {
    fn restamp<'a>(&'a mut self, line: &'a [u8]) -> &'a [u8] {
        // `<PRI>` then either `1 TIMESTAMP ` (RFC 5424) or `Mmm dd hh:mm:ss ` (RFC 3164).
        let Some(close) = line.iter().take(5).position(|&b| b == b'>').filter(|&i| i > 0 && line[0] == b'<') else {
            return line;
        };
        let rest = &line[close + 1..];
        let now = jiff::Timestamp::now();
        let (start, len, rfc5424) = if rest.starts_with(b"1 ") {
            let Some(len) = rest[2..].iter().position(|&b| b == b' ') else { return line };
            let millis = now.as_millisecond();
            if millis != self.millis || self.rfc5424.is_empty() {
                self.millis = millis;
                self.rfc5424 = now.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
            }
            (close + 3, len, true)
        } else if rest.len() > 16 && rest[3] == b' ' && rest[6] == b' ' && rest[9] == b':' && rest[15] == b' ' {
            let secs = now.as_second();
            if secs != self.secs || self.rfc3164.is_empty() {
                self.secs = secs;
                self.rfc3164 = now.strftime("%b %e %H:%M:%S").to_string();
            }
            (close + 1, 15, false)
        } else {
            return line;
        };
        let stamp = if rfc5424 { &self.rfc5424 } else { &self.rfc3164 };
        self.line.clear();
        self.line.extend_from_slice(&line[..start]);
        self.line.extend_from_slice(stamp.as_bytes());
        self.line.extend_from_slice(&line[start + len..]);
        &self.line
    }
}

struct Progress {
    started: Instant,
    last_draw: Instant,
    total: Option<u64>,
    show: bool,
}

impl Progress {
    fn draw(&mut self, sent: u64, force: bool) {
        if !self.show || (!force && self.last_draw.elapsed() < Duration::from_millis(250)) {
            return;
        }
        self.last_draw = Instant::now();
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        let rate = sent as f64 / secs;
        let bar = match self.total {
            Some(total) if total > 0 => {
                let done = (sent.min(total) * 30 / total) as usize;
                format!("[{}{}] {:>3}% ", "#".repeat(done), ".".repeat(30 - done), sent.min(total) * 100 / total)
            }
            _ => String::new(),
        };
        eprint!("\r{bar}{sent} lines, {rate:.0} lines/s, {secs:.1} s   ");
    }
}

/// Runs `vigil send`.
pub fn run(args: SendArgs) -> Result<ExitCode> {
    if args.rate == Some(0) {
        bail!("--rate must be at least 1");
    }
    let show = !args.quiet && io::stderr().is_terminal();
    // Counting the lines (for the bar) is a pass over the file: not when quiet.
    File::open(&args.file).with_context(|| format!("cannot open {}", args.file.display()))?;
    let per_pass = if show || args.repeat { count_lines(&args.file)? } else { 0 };
    let mut sink = Sink::open(&args.to, args.ca.as_deref())?;
    if let Sink::Tcp(_, octets) = &mut sink {
        *octets = args.octet_counting;
    }
    let deadline = args.duration.map(|d| Instant::now() + Duration::from_secs_f64(d.max(0.0)));
    let total = match (args.repeat, args.limit) {
        (_, Some(limit)) => Some(limit),
        (false, None) => show.then_some(per_pass),
        (true, None) => None,
    };
    let mut progress = Progress { started: Instant::now(), last_draw: Instant::now(), total, show };
    let started = Instant::now();
    let (mut sent, mut bytes) = (0u64, 0u64);
    let max_line = NonZeroUsize::new(64 * 1024).unwrap_or(NonZeroUsize::MIN);
    let mut failure: Option<io::Error> = None;
    let mut stamps = Restamper::default();
    'passes: loop {
        let mut file = File::open(&args.file).with_context(|| format!("cannot open {}", args.file.display()))?;
        let mut stop = false;
        read_batches(&mut file, max_line, |_, frames| {
            for frame in frames {
                if args.limit.is_some_and(|l| sent >= l) || deadline.is_some_and(|d| Instant::now() >= d) {
                    stop = true;
                    return false;
                }
                if let Some(rate) = args.rate {
                    // Token bucket: never ahead of rate × elapsed.
                    let due = Duration::from_secs_f64(sent as f64 / rate as f64);
                    let elapsed = started.elapsed();
                    if due > elapsed {
                        if let Err(e) = sink.flush() {
                            failure = Some(e);
                            return false;
                        }
                        std::thread::sleep(due - elapsed);
                    }
                }
                let line = if args.restamp { stamps.restamp(&frame.data) } else { &frame.data[..] };
                if let Err(e) = sink.send(line) {
                    failure = Some(e);
                    return false;
                }
                sent += 1;
                bytes += frame.data.len() as u64;
                if sent % 4096 == 0 {
                    progress.draw(sent, false);
                }
            }
            true
        })
        .with_context(|| format!("cannot read {}", args.file.display()))?;
        if stop || failure.is_some() || !args.repeat || per_pass == 0 {
            break 'passes;
        }
    }
    let flushed = sink.finish();
    let secs = started.elapsed().as_secs_f64();
    progress.draw(sent, true);
    if progress.show {
        eprintln!();
    }
    if let Some(e) = failure.or(flushed.err()) {
        bail!("sending to {} failed after writing {sent} lines ({bytes} bytes) in {secs:.2} s: {e}", args.to);
    }
    println!(
        "sent {sent} lines ({bytes} bytes) to {} in {secs:.2} s: {:.0} lines/s",
        args.to,
        sent as f64 / secs.max(1e-9)
    );
    Ok(ExitCode::SUCCESS)
}

/// Lines in the file, for the progress bar (one memchr pass).
fn count_lines(path: &PathBuf) -> Result<u64> {
    let mut file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut n = 0u64;
    read_batches(&mut file, NonZeroUsize::new(64 * 1024).unwrap_or(NonZeroUsize::MIN), |_, frames| {
        n += frames.len() as u64;
        true
    })
    .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restamping_replaces_only_the_header_timestamp() {
        let mut r = Restamper::default();
        let out = String::from_utf8(r.restamp(b"<38>1 2020-01-01T00:00:00Z web sshd - - - hi").to_vec()).unwrap();
        assert!(out.starts_with("<38>1 20") && out.ends_with("Z web sshd - - - hi"), "{out}");
        assert_eq!(out.len(), "<38>1 2020-01-01T00:00:00.000Z web sshd - - - hi".len(), "{out}");
        assert!(!out.contains("2020-01-01"), "{out}");
        let out = String::from_utf8(r.restamp(b"<13>Jan  1 00:00:00 web app: x").to_vec()).unwrap();
        assert!(out.starts_with("<13>") && out.ends_with(" web app: x") && !out.contains("Jan  1 00:00:00"), "{out}");
        assert_eq!(out.len(), "<13>Jan  1 00:00:00 web app: x".len());
        for untouched in [&b"no header"[..], b"<13>short", b"<13>1 nospace", b"", b"<>x"] {
            assert_eq!(r.restamp(untouched), untouched);
        }
    }
}
