//! Forwarding to another SIEM: one RFC 5424 syslog message carrying a CEF record, over
//! UDP, TCP or TLS (RFC 5425). TCP and TLS use octet-counting framing (`LEN SP MSG`,
//! RFC 6587) so multi-line text cannot split the record.
//!
//! A connection per send: notifications are rare (incidents, not events), and a fresh
//! connection means no half-dead socket to detect and each send passes the egress guard.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::bounded::read_limited;
use crate::notification::field;
use crate::template::cut_str;
use crate::{
    BoxFuture, Config, Connector, ConnectorError, Kind, Notification, Outcome, Settings, VERSION, egress, tls,
};

/// local4: a facility receivers rarely use for anything else, easy to route.
const FACILITY: u8 = 20;
/// One UDP datagram: receivers commonly accept 8 KiB, many fewer; stay within it.
const MAX_DATAGRAM: usize = 8 * 1024;
/// How much of the body goes into `msg`.
const MSG_CHARS: usize = 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Proto {
    Udp,
    Tcp,
    Tls,
}

/// A parsed `target`: `tcp://HOST:PORT`, `udp://HOST:PORT` or `tls://HOST:PORT`.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    pub proto: Proto,
    pub host: String,
    pub port: u16,
}

impl Target {
    pub fn parse(s: Option<&str>) -> Result<Target, ConnectorError> {
        let s = s.map(str::trim).filter(|s| !s.is_empty()).ok_or_else(|| {
            ConnectorError::invalid("target", "is required: tcp://HOST:PORT, udp://HOST:PORT or tls://HOST:PORT")
        })?;
        let bad = |why: &str| {
            ConnectorError::invalid(
                "target",
                format!("{s:?} {why}; expected tcp://HOST:PORT, udp://HOST:PORT or tls://HOST:PORT"),
            )
        };
        let u = url::Url::parse(s).map_err(|_| bad("is not a valid target"))?;
        let proto = match u.scheme() {
            "udp" => Proto::Udp,
            "tcp" => Proto::Tcp,
            "tls" => Proto::Tls,
            _ => return Err(bad("has an unsupported scheme")),
        };
        if !u.username().is_empty() || u.password().is_some() || u.query().is_some() || u.fragment().is_some() {
            return Err(bad("has parts other than host and port"));
        }
        if !(u.path().is_empty() || u.path() == "/") {
            return Err(bad("has a path"));
        }
        let host = u.host_str().filter(|h| !h.is_empty()).ok_or_else(|| bad("has no host"))?;
        let port = u.port().filter(|p| *p != 0).ok_or_else(|| bad("has no port"))?;
        Ok(Target { proto, host: host.to_owned(), port })
    }

    fn shown(&self) -> String {
        let scheme = match self.proto {
            Proto::Udp => "udp",
            Proto::Tcp => "tcp",
            Proto::Tls => "tls",
        };
        format!("{scheme}://{}:{}", self.host, self.port)
    }
}

/// A syslog connector.
pub(crate) struct Syslog {
    target: Target,
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
    settings: Settings,
    hostname: String,
}

impl Syslog {
    pub fn new(config: &Config, settings: Settings, timeout: Duration) -> Result<Syslog, ConnectorError> {
        let target = Target::parse(config.target.as_deref())?;
        let tls = if target.proto == Proto::Tls { Some(tls::client_config(config, &[])?) } else { None };
        Ok(Syslog { target, tls, timeout, settings, hostname: hostname() })
    }

    async fn deliver(&self, n: &Notification) -> Result<Outcome, Outcome> {
        let shown = self.target.shown();
        let addr = egress::resolve(&self.target.host, self.target.port, self.settings).await?;
        let now = jiff::Timestamp::now();
        if self.target.proto == Proto::Udp {
            let line = message(n, &self.hostname, now, Some(MAX_DATAGRAM));
            let local: SocketAddr = if addr.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
            let sock = UdpSocket::bind(local).await.map_err(|e| Outcome::retry(format!("{shown}: {e}")))?;
            sock.send_to(line.as_bytes(), addr)
                .await
                .map_err(|e| Outcome::retry(format!("{shown}: cannot send to {addr}: {e}")))?;
            return Ok(Outcome::Delivered { status: None });
        }
        let line = message(n, &self.hostname, now, None);
        let frame = format!("{} {line}", line.len());
        match self.connect(addr).await? {
            Conn::Tcp(mut s) => write_frame(&mut s, &frame, &shown, addr).await,
            Conn::Tls(mut s) => write_frame(&mut *s, &frame, &shown, addr).await,
        }
    }

    async fn connect(&self, addr: SocketAddr) -> Result<Conn, Outcome> {
        let shown = self.target.shown();
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| Outcome::retry(format!("{shown}: cannot connect to {addr}: {e}")))?;
        let Some(cfg) = &self.tls else { return Ok(Conn::Tcp(tcp)) };
        let name = tls::server_name(&self.target.host).map_err(Outcome::failed)?;
        let s = tokio_rustls::TlsConnector::from(cfg.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| crate::http::tls_failure(&shown, addr, &e))?;
        Ok(Conn::Tls(Box::new(s)))
    }

    async fn check(&self) -> Result<Outcome, Outcome> {
        let addr = egress::resolve(&self.target.host, self.target.port, self.settings).await?;
        if self.target.proto != Proto::Udp {
            match self.connect(addr).await? {
                Conn::Tcp(mut s) => {
                    let _ = s.shutdown().await;
                }
                Conn::Tls(mut s) => {
                    let _ = s.shutdown().await;
                }
            }
        }
        Ok(Outcome::Delivered { status: None })
    }

    fn timed_out(&self) -> Outcome {
        Outcome::retry(format!("{}: timed out after {} ms", self.target.shown(), self.timeout.as_millis()))
    }
}

enum Conn {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

async fn write_frame<S: AsyncWrite + Unpin>(
    s: &mut S,
    frame: &str,
    shown: &str,
    addr: SocketAddr,
) -> Result<Outcome, Outcome> {
    let broken = |e: std::io::Error| Outcome::retry(format!("{shown}: sending to {addr} failed: {e}"));
    s.write_all(frame.as_bytes()).await.map_err(broken)?;
    s.flush().await.map_err(broken)?;
    // A clean close (TLS close_notify, then FIN) tells the receiver the record is complete.
    s.shutdown().await.map_err(broken)?;
    Ok(Outcome::Delivered { status: None })
}

impl Connector for Syslog {
    fn kind(&self) -> Kind {
        Kind::Syslog
    }

    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Outcome> {
        Box::pin(crate::notification::within(self.timeout, self.deliver(n), || self.timed_out()))
    }

    fn health<'a>(&'a self) -> BoxFuture<'a, Outcome> {
        Box::pin(crate::notification::within(self.timeout, self.check(), || self.timed_out()))
    }
}

/// CEF severity (0-10) for an incident severity.
fn cef_severity(s: &str) -> u8 {
    match s {
        "critical" => 10,
        "high" => 8,
        "medium" => 5,
        "low" => 3,
        _ => 1,
    }
}

/// Syslog severity (RFC 5424) for an incident severity.
fn syslog_severity(s: &str) -> u8 {
    match s {
        "critical" => 2,
        "high" => 3,
        "medium" => 4,
        "low" => 5,
        _ => 6,
    }
}

/// CEF header fields: `\` and `|` escaped; line breaks cannot appear in a header.
pub(crate) fn escape_header(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            '\r' | '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// CEF extension values: `\` and `=` escaped, line breaks as `\n`.
pub(crate) fn escape_ext(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.push_str("\\n");
            }
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// An incident time (ms number or RFC 3339 text) as ms since the epoch.
fn time_ms(incident: &serde_json::Value, key: &str) -> Option<i64> {
    match incident.get(key)? {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => s.parse::<jiff::Timestamp>().ok().map(|t| t.as_millisecond()),
        _ => None,
    }
}

/// The syslog message (without framing). `max` limits the whole message in bytes (UDP),
/// shortening `msg`, then the title, to fit.
pub(crate) fn message(n: &Notification, hostname: &str, now: jiff::Timestamp, max: Option<usize>) -> String {
    let pri = FACILITY * 8 + syslog_severity(&n.severity);
    let rule = if n.rule.is_empty() { "manual" } else { n.rule.as_str() };
    let head = format!(
        "<{pri}>1 {now:.3} {hostname} vigil - - - CEF:0|vigil|vigil|{}|{}|",
        escape_header(VERSION),
        escape_header(rule)
    );
    let mut title = escape_header(&n.title);
    let mut ext = format!(
        "|{}|externalId={} cs1Label=org cs1={} cs2Label=status cs2={}",
        cef_severity(&n.severity),
        escape_ext(&n.delivery_id),
        escape_ext(&n.org),
        escape_ext(&field(&n.incident, &["status"])),
    );
    let count = field(&n.incident, &["hit_count", "count"]);
    if !count.is_empty() {
        ext.push_str(&format!(" cnt={}", escape_ext(&count)));
    }
    if let Some(ms) = time_ms(&n.incident, "first_seen") {
        ext.push_str(&format!(" start={ms}"));
    }
    if let Some(ms) = time_ms(&n.incident, "last_seen") {
        ext.push_str(&format!(" end={ms}"));
    }
    ext.push_str(&format!(
        " rt={} cs3Label=event cs3={} cs4Label=incident cs4={}",
        n.at_ms,
        escape_ext(&n.event),
        escape_ext(&field(&n.incident, &["id"]))
    ));
    let body: String = n.body.chars().take(MSG_CHARS).collect();
    let mut msg = escape_ext(&body);
    if let Some(max) = max {
        let fixed = head.len() + ext.len() + " msg=".len();
        if fixed + title.len() + msg.len() > max {
            // Title first keeps at most 256 bytes when room is short; msg gets the rest.
            if fixed + title.len() > max.saturating_sub(64) {
                title = trim_escaped(&title, 256);
            }
            let room = max.saturating_sub(fixed + title.len());
            msg = trim_escaped(&msg, room);
        }
    }
    format!("{head}{title}{ext} msg={msg}")
}

/// Cuts escaped text to `max` bytes without leaving half an escape (a lone trailing `\`).
fn trim_escaped(s: &str, max: usize) -> String {
    let cut = cut_str(s, max);
    let trailing = cut.chars().rev().take_while(|c| *c == '\\').count();
    let cut = if trailing % 2 == 1 { &cut[..cut.len() - 1] } else { cut };
    cut.to_owned()
}

/// The machine's host name for the syslog HOSTNAME field, or "vigil".
pub(crate) fn hostname() -> String {
    let read = std::fs::File::open("/proc/sys/kernel/hostname").and_then(|f| read_limited(f, 256));
    let name = match read {
        Ok(buf) => String::from_utf8_lossy(&buf).trim().to_owned(),
        Err(_) => String::new(),
    };
    // RFC 5424 HOSTNAME: 1-255 printable ASCII characters, no spaces.
    if name.is_empty() || name.len() > 255 || !name.bytes().all(|b| (33..=126).contains(&b)) {
        "vigil".to_owned()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note() -> Notification {
        Notification {
            delivery_id: "d-1".into(),
            event: "created".into(),
            title: "Pipe | and back\\slash".into(),
            body: "line one\nkey=value \\ end".into(),
            org: "Acme".into(),
            severity: "high".into(),
            rule: "ssh|brute".into(),
            incident: serde_json::json!({"id": 5, "status": "open", "hit_count": 3,
                "first_seen": "2026-01-02T03:04:05Z", "last_seen": 1767323045000_i64}),
            at_ms: 1767323045000,
        }
    }

    #[test]
    fn cef_line() {
        let now: jiff::Timestamp = "2026-01-02T03:04:05.123Z".parse().unwrap();
        let m = message(&note(), "host1", now, None);
        let expected_head = format!(
            "<163>1 2026-01-02T03:04:05.123Z host1 vigil - - - CEF:0|vigil|vigil|{VERSION}|ssh\\|brute|Pipe \\| and back\\\\slash|8|externalId=d-1 "
        );
        assert!(m.starts_with(&expected_head), "{m}");
        assert!(
            m.contains("cs1Label=org cs1=Acme cs2Label=status cs2=open cnt=3 start=1767323045000 end=1767323045000"),
            "{m}"
        );
        assert!(m.ends_with("msg=line one\\nkey\\=value \\\\ end"), "{m}");
        assert!(!m.contains('\n'));
    }

    #[test]
    fn udp_limit_truncates_msg() {
        let mut n = note();
        n.body = "\\".repeat(5000);
        n.title = "t".repeat(5000);
        let now = jiff::Timestamp::now();
        let m = message(&n, "h", now, Some(1500));
        assert!(m.len() <= 1500, "{}", m.len());
        let msg = m.rsplit_once(" msg=").unwrap().1;
        assert_eq!(msg.len() % 2, 0, "no half escape");
    }

    #[test]
    fn targets() {
        let t = Target::parse(Some("tls://siem.example.com:6514")).unwrap();
        assert_eq!((t.proto, t.host.as_str(), t.port), (Proto::Tls, "siem.example.com", 6514));
        let t = Target::parse(Some("udp://[::1]:514")).unwrap();
        assert_eq!((t.proto, t.host.as_str()), (Proto::Udp, "[::1]"));
        for bad in [
            None,
            Some("siem:514"),
            Some("tcp://siem"),
            Some("http://siem:80"),
            Some("tcp://siem:514/x"),
            Some("tcp://:514"),
        ] {
            let err = Target::parse(bad).unwrap_err();
            assert!(matches!(err, ConnectorError::Invalid { field: "target", .. }), "{bad:?}: {err}");
        }
    }

    #[test]
    fn hostname_is_sane() {
        let h = hostname();
        assert!(!h.is_empty() && !h.contains(' '));
    }
}
