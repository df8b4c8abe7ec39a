//! The HTTP client shared by the webhook, Slack and Teams connectors: one POST per
//! attempt over a fresh HTTP/1.1 connection. Built on hyper's connection-level client
//! rather than a pooled one so that the TCP connection goes to exactly the address the
//! egress guard approved (a client that resolves again could be pointed elsewhere by
//! a changing DNS answer), and so one timeout covers connect, TLS, request and response.
//! Redirects are never followed: a 3xx could send us past the egress guard.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_TYPE, HOST, HeaderName, HeaderValue, RETRY_AFTER, USER_AGENT};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::{Config, ConnectorError, Notification, Outcome, Settings, VERSION, config::mask_url, egress, tls};

/// How much of a response we read: receivers answer with a short status text.
const MAX_RESPONSE: usize = 64 * 1024;
/// How much of a response body goes into an error text.
const EXCERPT_CHARS: usize = 200;
/// Longest wait a target may ask for with Retry-After.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// A parsed endpoint URL (from [`crate::Secrets::url`]).
#[derive(Clone, Debug)]
pub(crate) struct Endpoint {
    pub https: bool,
    /// As in the URL: IPv6 literals keep their brackets.
    pub host: String,
    pub port: u16,
    /// The request target: path and query.
    pub path: String,
    /// The Host header value.
    pub authority: String,
    /// Safe to show (see [`crate::Secrets::masked_url`]).
    pub masked: String,
}

impl Endpoint {
    /// Parses and checks an endpoint URL. Errors name the field "url" and never echo
    /// the URL (its path is often the credential).
    pub fn parse(url: Option<&str>) -> Result<Endpoint, ConnectorError> {
        let raw = url
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .ok_or_else(|| ConnectorError::invalid("url", "is required"))?;
        let u =
            url::Url::parse(raw).map_err(|e| ConnectorError::invalid("url", format!("is not a valid URL ({e})")))?;
        let https = match u.scheme() {
            "https" => true,
            "http" => false,
            other => {
                return Err(ConnectorError::invalid("url", format!("scheme {other:?} is not supported; use https://")));
            }
        };
        let host =
            u.host_str().filter(|h| !h.is_empty()).ok_or_else(|| ConnectorError::invalid("url", "has no host"))?;
        if !u.username().is_empty() || u.password().is_some() {
            return Err(ConnectorError::invalid(
                "url",
                "must not contain a user or password; send credentials in headers (or use the signing secret)",
            ));
        }
        let port = u.port_or_known_default().unwrap_or(if https { 443 } else { 80 });
        let mut path = u.path().to_owned();
        if let Some(q) = u.query() {
            path.push('?');
            path.push_str(q);
        }
        let authority = match u.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_owned(),
        };
        Ok(Endpoint { https, host: host.to_owned(), port, path, authority, masked: mask_url(raw) })
    }
}

/// A connector that posts a JSON document built from the notification to
/// one URL (Slack, Teams): the types differ only in the document.
pub(crate) struct JsonPost {
    pub kind: crate::Kind,
    pub client: Client,
    pub payload: fn(&Notification) -> serde_json::Value,
}

impl crate::Connector for JsonPost {
    fn kind(&self) -> crate::Kind {
        self.kind
    }

    fn send<'a>(&'a self, n: &'a Notification) -> crate::BoxFuture<'a, Outcome> {
        Box::pin(async move {
            match serde_json::to_vec(&(self.payload)(n)) {
                Ok(body) => self.client.post_json(n, Bytes::from(body), &[]).await,
                Err(e) => Outcome::failed(format!("cannot encode the notification: {e}")),
            }
        })
    }

    fn health<'a>(&'a self) -> crate::BoxFuture<'a, Outcome> {
        Box::pin(self.client.health())
    }
}

/// One endpoint with its TLS configuration, timeout and egress settings.
pub(crate) struct Client {
    endpoint: Endpoint,
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
    settings: Settings,
}

impl Client {
    pub fn new(
        url: Option<&str>,
        config: &Config,
        settings: Settings,
        timeout: Duration,
    ) -> Result<Client, ConnectorError> {
        let endpoint = Endpoint::parse(url)?;
        if !endpoint.https && !settings.allow_private_targets {
            return Err(ConnectorError::invalid(
                "url",
                "http:// is only allowed when [connectors] allow_private_targets = true; use https://",
            ));
        }
        let tls = if endpoint.https { Some(tls::client_config(config, &[b"http/1.1"])?) } else { None };
        Ok(Client { endpoint, tls, timeout, settings })
    }

    /// POSTs `body` (JSON) with the standard vigil headers plus `extra`.
    pub async fn post_json(&self, n: &Notification, body: Bytes, extra: &[(HeaderName, HeaderValue)]) -> Outcome {
        let attempt = async {
            let (addr, stream) = self.connect().await?;
            match stream {
                Stream::Plain(s) => self.request(addr, s, n, body, extra).await,
                Stream::Tls(s) => self.request(addr, *s, n, body, extra).await,
            }
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok(outcome) | Err(outcome)) => outcome,
            Err(_) => self.timed_out(),
        }
    }

    /// Resolve, egress check, connect, TLS handshake; no request is sent.
    pub async fn health(&self) -> Outcome {
        match tokio::time::timeout(self.timeout, self.connect()).await {
            Ok(Ok(_)) => Outcome::Delivered { status: None },
            Ok(Err(outcome)) => outcome,
            Err(_) => self.timed_out(),
        }
    }

    fn timed_out(&self) -> Outcome {
        Outcome::retry(format!("{}: timed out after {} ms", self.endpoint.masked, self.timeout.as_millis()))
    }

    async fn connect(&self) -> Result<(SocketAddr, Stream), Outcome> {
        let ep = &self.endpoint;
        let addr = egress::resolve(&ep.host, ep.port, self.settings).await?;
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| Outcome::retry(format!("{}: cannot connect to {addr}: {e}", ep.masked)))?;
        // Small request/response exchange: don't let Nagle delay it.
        let _ = tcp.set_nodelay(true);
        let Some(cfg) = &self.tls else { return Ok((addr, Stream::Plain(tcp))) };
        let name = tls::server_name(&ep.host).map_err(Outcome::failed)?;
        let tls = tokio_rustls::TlsConnector::from(cfg.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| tls_failure(&ep.masked, addr, &e))?;
        Ok((addr, Stream::Tls(Box::new(tls))))
    }

    async fn request<S>(
        &self,
        addr: SocketAddr,
        io: S,
        n: &Notification,
        body: Bytes,
        extra: &[(HeaderName, HeaderValue)],
    ) -> Result<Outcome, Outcome>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let masked = &self.endpoint.masked;
        let broken = |e: hyper::Error| Outcome::retry(format!("{masked}: HTTP exchange with {addr} failed: {e}"));
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(io)).await.map_err(broken)?;
        // The connection task drives the socket; aborted when this attempt ends (or
        // times out), so no task outlives its attempt.
        let driver = AbortOnDrop(tokio::spawn(async move {
            let _ = conn.await;
        }));
        let mut req = Request::builder().method(Method::POST).uri(self.endpoint.path.as_str());
        if let Some(h) = req.headers_mut() {
            h.insert(HOST, header_value(&self.endpoint.authority)?);
            h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            h.insert(USER_AGENT, header_value(&format!("vigil/{VERSION}"))?);
            h.insert(HeaderName::from_static("x-vigil-delivery"), header_value(&n.delivery_id)?);
            h.insert(HeaderName::from_static("x-vigil-event"), header_value(&n.event)?);
            for (k, v) in extra {
                h.insert(k.clone(), v.clone());
            }
        }
        let req =
            req.body(Full::new(body)).map_err(|e| Outcome::failed(format!("{masked}: cannot build request: {e}")))?;
        let mut resp = sender.send_request(req).await.map_err(broken)?;
        let status = resp.status();
        let retry_after = resp.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
        let mut got = Vec::new();
        // Read only what an error excerpt needs; a 2xx body is not used at all.
        while got.len() < MAX_RESPONSE && !status.is_success() {
            match resp.body_mut().frame().await {
                Some(Ok(frame)) => {
                    if let Some(d) = frame.data_ref() {
                        got.extend_from_slice(&d[..d.len().min(MAX_RESPONSE - got.len())]);
                    }
                }
                Some(Err(_)) | None => break,
            }
        }
        drop(driver);
        Ok(classify(status, retry_after, &got, masked))
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn header_value(s: &str) -> Result<HeaderValue, Outcome> {
    HeaderValue::from_str(s).map_err(|_| Outcome::failed(format!("{s:?} cannot be sent in an HTTP header")))
}

/// TLS failures: a certificate that does not verify is a configuration problem (wrong
/// CA file, wrong host) and will not fix itself between retries; anything else is
/// treated like a connection error.
pub(crate) fn tls_failure(masked: &str, addr: SocketAddr, e: &std::io::Error) -> Outcome {
    let msg = format!("{masked}: TLS handshake with {addr} failed: {e}");
    match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(_)) => Outcome::failed(msg),
        _ => Outcome::retry(msg),
    }
}

/// Maps a response to an outcome: 2xx delivered; 408, 425, 429, 5xx retry; the rest
/// (including 3xx, as redirects are not followed) failed.
pub(crate) fn classify(status: StatusCode, retry_after: Option<Duration>, body: &[u8], masked: &str) -> Outcome {
    let code = status.as_u16();
    if status.is_success() {
        return Outcome::Delivered { status: Some(code) };
    }
    let mut error = format!("HTTP {code} from {masked}");
    if status.is_redirection() {
        error.push_str(" (redirects are not followed)");
    }
    let excerpt = excerpt(body);
    if !excerpt.is_empty() {
        error.push_str(": ");
        error.push_str(&excerpt);
    }
    if matches!(code, 408 | 425 | 429) || status.is_server_error() {
        Outcome::Retry { status: Some(code), error, after: retry_after }
    } else {
        Outcome::Failed { status: Some(code), error }
    }
}

/// At most 200 characters of a response body, on one line.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out = String::new();
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
        if out.chars().count() >= EXCERPT_CHARS {
            break;
        }
    }
    out.chars().filter(|c| !c.is_control()).take(EXCERPT_CHARS).collect()
}

/// `Retry-After`: delay-seconds or an HTTP-date; capped at one hour.
pub(crate) fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    let wait = if let Ok(secs) = v.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = jiff::fmt::rfc2822::DateTimeParser::new().parse_timestamp(v).ok()?;
        let secs = (at.as_millisecond() - jiff::Timestamp::now().as_millisecond()).max(0);
        Duration::from_millis(u64::try_from(secs).unwrap_or(0))
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 120 "), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("99999"), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"), Some(Duration::ZERO));
        let soon = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(90);
        let text = jiff::fmt::rfc2822::DateTimePrinter::new().timestamp_to_rfc9110_string(&soon).unwrap();
        let got = parse_retry_after(&text).unwrap();
        assert!(got > Duration::from_secs(80) && got <= Duration::from_secs(90), "{got:?}");
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn classification() {
        let c = |s: u16| classify(StatusCode::from_u16(s).unwrap(), None, b"", "https://x").as_str();
        assert_eq!(c(200), "delivered");
        assert_eq!(c(204), "delivered");
        for s in [408, 425, 429, 500, 502, 503] {
            assert_eq!(c(s), "retry", "{s}");
        }
        for s in [301, 302, 400, 401, 403, 404, 410, 422] {
            assert_eq!(c(s), "failed", "{s}");
        }
        let long = "oops ".repeat(100);
        let o = classify(StatusCode::BAD_REQUEST, None, long.as_bytes(), "https://x");
        let e = o.error().unwrap();
        assert!(e.starts_with("HTTP 400 from https://x: oops oops"), "{e}");
        assert!(e.len() < 240, "{e}");
    }

    #[test]
    fn endpoint_parsing() {
        let e = Endpoint::parse(Some("https://hooks.example.com:8443/a/b?x=1")).unwrap();
        assert_eq!((e.host.as_str(), e.port, e.path.as_str()), ("hooks.example.com", 8443, "/a/b?x=1"));
        assert_eq!(e.authority, "hooks.example.com:8443");
        assert_eq!(e.masked, "https://hooks.example.com:8443/…");
        let e = Endpoint::parse(Some("http://[::1]/h")).unwrap();
        assert_eq!((e.host.as_str(), e.port, e.https), ("[::1]", 80, false));
        for bad in [None, Some(""), Some("ftp://x/y"), Some("https://u:p@x/y"), Some("nope")] {
            let err = Endpoint::parse(bad).unwrap_err();
            assert!(matches!(err, ConnectorError::Invalid { field: "url", .. }), "{bad:?}: {err}");
        }
        let err = Endpoint::parse(Some("https://u:s3cret@x/tok3n")).unwrap_err().to_string();
        assert!(!err.contains("s3cret") && !err.contains("tok3n"), "{err}");
    }
}
