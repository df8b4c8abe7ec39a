//! The generic webhook: the notification as JSON, optionally signed with HMAC-SHA256 so
//! the receiver can check it came from this SIEM (`X-Vigil-Signature: sha256=<hex>`
//! over the exact body bytes, GitHub-style).

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use ring::hmac;

use crate::http::Client;
use crate::{BoxFuture, Config, Connector, ConnectorError, Kind, Notification, Outcome, Secrets, Settings};

const MAX_HEADERS: usize = 32;
const MAX_HEADER_VALUE: usize = 8 * 1024;

/// A webhook connector.
pub(crate) struct Webhook {
    client: Client,
    headers: Vec<(HeaderName, HeaderValue)>,
    key: Option<hmac::Key>,
}

impl Webhook {
    pub fn new(
        config: &Config,
        secrets: &Secrets,
        settings: Settings,
        timeout: Duration,
    ) -> Result<Webhook, ConnectorError> {
        let client = Client::new(secrets.url.as_deref(), config, settings, timeout)?;
        let headers = check_headers(&config.headers)?;
        let key = secrets.secret.as_deref().map(|s| hmac::Key::new(hmac::HMAC_SHA256, s.as_bytes()));
        Ok(Webhook { client, headers, key })
    }
}

impl Connector for Webhook {
    fn kind(&self) -> Kind {
        Kind::Webhook
    }

    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let body = match payload(n) {
                Ok(b) => b,
                Err(e) => return Outcome::failed(format!("cannot encode the notification: {e}")),
            };
            let mut headers = self.headers.clone();
            if let Some(key) = &self.key {
                let sig = format!("sha256={}", hex(hmac::sign(key, &body).as_ref()));
                if let Ok(v) = HeaderValue::from_str(&sig) {
                    headers.push((HeaderName::from_static("x-vigil-signature"), v));
                }
            }
            self.client.post_json(n, body, &headers).await
        })
    }

    fn health<'a>(&'a self) -> BoxFuture<'a, Outcome> {
        Box::pin(self.client.health())
    }
}

/// The request body.
pub(crate) fn payload(n: &Notification) -> Result<Bytes, serde_json::Error> {
    let sent_at = format!("{:.3}", jiff::Timestamp::now());
    serde_json::to_vec(&serde_json::json!({
        "delivery_id": n.delivery_id,
        "event": n.event,
        "title": n.title,
        "body": n.body,
        "org": n.org,
        "severity": n.severity,
        "rule": n.rule,
        "incident": n.incident,
        "sent_at": sent_at,
    }))
    .map(Bytes::from)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks configured headers and converts them. Names are HTTP tokens; values are visible
/// ASCII without CR/LF (no header injection); headers that would break framing, change
/// the target or forge vigil's own headers are refused.
pub(crate) fn check_headers(
    headers: &BTreeMap<String, String>,
) -> Result<Vec<(HeaderName, HeaderValue)>, ConnectorError> {
    if headers.len() > MAX_HEADERS {
        return Err(ConnectorError::invalid("headers", format!("at most {MAX_HEADERS} headers are allowed")));
    }
    let tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    headers
        .iter()
        .map(|(name, value)| {
            if name.is_empty() || name.len() > 256 || !name.chars().all(tchar) {
                return Err(ConnectorError::invalid("headers", format!("{name:?} is not a valid header name")));
            }
            let lower = name.to_ascii_lowercase();
            if matches!(lower.as_str(), "content-length" | "host" | "transfer-encoding" | "connection")
                || lower.starts_with("x-vigil-")
            {
                return Err(ConnectorError::invalid(
                    "headers",
                    format!("{name} is set by vigil and cannot be configured"),
                ));
            }
            if value.contains(['\r', '\n', '\0']) {
                return Err(ConnectorError::invalid("headers", format!("the value of {name} contains a line break")));
            }
            if value.len() > MAX_HEADER_VALUE {
                return Err(ConnectorError::invalid("headers", format!("the value of {name} is too long")));
            }
            if value.chars().any(|c| !(c == '\t' || (' '..='~').contains(&c))) {
                return Err(ConnectorError::invalid("headers", format!("the value of {name} must be printable ASCII")));
            }
            let v = HeaderValue::from_str(value).map_err(|_| {
                ConnectorError::invalid("headers", format!("the value of {name} must be printable ASCII"))
            })?;
            let n = HeaderName::from_bytes(lower.as_bytes())
                .map_err(|_| ConnectorError::invalid("headers", format!("{name:?} is not a valid header name")))?;
            Ok((n, v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_rules() {
        let h = |k: &str, v: &str| BTreeMap::from([(k.to_owned(), v.to_owned())]);
        assert!(check_headers(&h("Authorization", "Bearer abc")).is_ok());
        assert!(check_headers(&h("X-Custom_1", "a b\tc")).is_ok());
        for (k, v) in [
            ("Bad Name", "x"),
            ("", "x"),
            ("X-Ok", "a\r\nX-Injected: 1"),
            ("X-Ok", "a\nb"),
            ("Content-Length", "1"),
            ("host", "evil"),
            ("Transfer-Encoding", "chunked"),
            ("X-Vigil-Signature", "sha256=00"),
            ("X-Ok", "é"),
        ] {
            let err = check_headers(&h(k, v)).unwrap_err();
            assert!(matches!(err, ConnectorError::Invalid { field: "headers", .. }), "{k:?}: {err}");
        }
    }
}
